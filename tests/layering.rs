//! The source's shape, checked from its text: rules a compiler does not
//! enforce but readers rely on (issue 11, "Layering").

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::util::repo;

/// The `src/proto` modules (by name: `decoder`, `msg`, …) that `source`
/// imports, from `use crate::proto::X` and `use super::X` lines, or, in a
/// file under `msg/` other than its `mod.rs` (`in_msg`), `use
/// super::super::X`. Test modules are left out: a test may use anything.
fn proto_imports(source: &str, in_msg: bool) -> BTreeSet<String> {
    let body = match source.find("#[cfg(test)]") {
        Some(at) => &source[..at],
        None => source,
    };
    let mut found = BTreeSet::new();
    for line in body.lines().map(str::trim) {
        let Some(path) = line.strip_prefix("use ") else {
            continue;
        };
        let rest = if let Some(rest) = path.strip_prefix("crate::proto::") {
            rest
        } else if in_msg {
            match path.strip_prefix("super::super::") {
                Some(rest) => rest,
                // `use super::wire` inside msg/ is msg's own business.
                None => continue,
            }
        } else if let Some(rest) = path.strip_prefix("super::") {
            rest
        } else {
            continue;
        };
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        // `use super::{HEADER_LEN, MAGIC}`: the parent's constants, no module.
        if !name.is_empty() && name.chars().next().is_some_and(char::is_lowercase) {
            found.insert(name);
        }
    }
    found
}

/// Module name → the proto modules it imports. `msg/` counts as one module.
fn proto_graph() -> BTreeMap<String, BTreeSet<String>> {
    let dir = repo().join("src/proto");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let read = |p: &Path| std::fs::read_to_string(p).expect("read a proto source file");
    for entry in std::fs::read_dir(&dir).expect("src/proto") {
        let path = entry.expect("a directory entry").path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            for inner in std::fs::read_dir(&path).expect("a proto subdirectory") {
                let inner = inner.expect("a directory entry").path();
                graph
                    .entry(name.clone())
                    .or_default()
                    .extend(proto_imports(&read(&inner), !inner.ends_with("mod.rs")));
            }
        } else if name != "mod" {
            graph.insert(name, proto_imports(&read(&path), false));
        }
    }
    for (name, deps) in graph.iter_mut() {
        deps.remove(name);
    }
    graph
}

/// A cycle in `graph`, as the path of module names that closes it.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|start| visit(start, graph, &mut Vec::new(), &mut done))
}

#[test]
fn the_proto_modules_import_each_other_without_a_cycle() {
    let graph = proto_graph();
    // The parser sees the imports at all: the decoder reads headers.
    assert!(
        graph.get("decoder").is_some_and(|d| d.contains("header")),
        "{graph:?}"
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import cycle in src/proto: {}", cycle.join(" → "));
    }
}

/// The `unsafe {}` blocks in `source` (by line number, from 1) that the
/// comment lines right above them do not justify with a `// SAFETY:` line.
fn unjustified_unsafe_blocks(source: &str) -> Vec<usize> {
    let lines: Vec<&str> = source.lines().map(str::trim).collect();
    let mut missing = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.starts_with("//") || !line.contains("unsafe {") {
            continue;
        }
        let justified = lines[..i]
            .iter()
            .rev()
            .take_while(|l| l.starts_with("//"))
            .any(|l| l.starts_with("// SAFETY:"));
        if !justified {
            missing.push(i + 1);
        }
    }
    missing
}

/// Issue 11: the job API's `extern "C"` shims (src/job/, compiled alone
/// into every Rust job) state why each unsafe operation is sound, and the
/// compiler holds them to it inside `unsafe fn`s too.
#[test]
fn every_unsafe_block_of_the_job_api_says_why_it_is_sound() {
    let source = std::fs::read_to_string(repo().join("src/job/mod.rs")).expect("src/job/mod.rs");
    assert!(
        source
            .lines()
            .any(|l| l.trim() == "#![deny(unsafe_op_in_unsafe_fn)]"),
        "src/job/mod.rs must deny unsafe_op_in_unsafe_fn"
    );
    assert!(source.contains("unsafe {"), "the check sees the blocks");
    let missing = unjustified_unsafe_blocks(&source);
    assert!(
        missing.is_empty(),
        "src/job/mod.rs: unsafe blocks without a `// SAFETY:` comment at lines {missing:?}"
    );
}

/// Every `.rs` file under `dir`, recursively.
fn sources(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("a source directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            found.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
    found
}

#[test]
fn no_server_module_imports_from_the_cli() {
    let src = repo().join("src");
    let offenders: Vec<String> = sources(&src)
        .into_iter()
        .filter(|p| !p.starts_with(src.join("cli")) && !p.ends_with("main.rs"))
        .filter(|p| {
            let text = std::fs::read_to_string(p).expect("read a source file");
            text.contains("crate::cli::") || text.contains("crate::cli;")
        })
        .map(|p| p.strip_prefix(&src).unwrap().display().to_string())
        .collect();
    assert!(offenders.is_empty(), "import from cli: {offenders:?}");
}

#[test]
fn following_a_job_is_its_own_module_not_a_cycle_of_run_and_jobs() {
    let read = |f: &str| std::fs::read_to_string(repo().join("src/cli").join(f)).unwrap();
    let (run, jobs) = (read("run.rs"), read("jobs.rs"));
    let imports = |text: &str, module: &str| {
        text.lines().map(str::trim).any(|l| {
            l.starts_with("use ")
                && (l.contains(&format!("super::{module}"))
                    || l.contains(&format!("crate::cli::{module}")))
        })
    };
    assert!(
        !(imports(&run, "jobs") && imports(&jobs, "run")),
        "cli/run.rs and cli/jobs.rs import each other"
    );
}

/// Issue 14: no job code runs in a server. Its modules never name what
/// loads a library or calls into one (`Plugin`, `Instance`, `TaskIter`,
/// outside comments): an executor process does that.
#[test]
fn no_server_module_loads_a_job_library() {
    let src = repo().join("src");
    let servers = [src.join("manager"), src.join("worker")];
    let loading = ["Plugin", "Instance", "TaskIter"];
    let mut files: Vec<std::path::PathBuf> = servers.iter().flat_map(|d| sources(d)).collect();
    files.extend([src.join("plugin/store.rs"), src.join("pipeline/cluster.rs")]);
    assert!(files.len() > 20, "the check sees the servers' modules");
    let names = |line: &str| -> Vec<String> {
        line.split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .map(str::to_owned)
            .collect()
    };
    let offenders: Vec<String> = files
        .into_iter()
        .filter(|p| {
            let text = std::fs::read_to_string(p).expect("read a source file");
            text.lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .any(|l| names(l).iter().any(|n| loading.contains(&n.as_str())))
        })
        .map(|p| p.strip_prefix(&src).unwrap().display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "load job libraries in a server: {offenders:?}"
    );
}
