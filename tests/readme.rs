//! The README's commands cannot drift from the code (issue 10, E: its
//! fuzzing command failed verbatim on a fresh clone). Every line of its
//! ```` ```sh ```` blocks is checked as far as it can be without a network
//! or a long-running server: each `redmap` command parses with clap, the
//! test command is the one CI runs, the fuzz command names what `fuzz/`
//! holds, and `fuzz/Cargo.lock` follows the crate. The job section's trait
//! is src/job/mod.rs's.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::util::{redmap, repo, stderr, stdout};

const README: &str = include_str!("../README.md");

/// Commands in the blocks that need no check of their own (plain tools).
const PLAIN_TOOLS: &[&str] = &["cat", "echo", "nc", "head", "base64", "chmod"];

/// The lines of every ```` ```LANG ```` block, one list per block.
fn blocks(lang: &str) -> Vec<Vec<&'static str>> {
    let fence = format!("```{lang}");
    let mut out = Vec::new();
    let mut lines = README.lines();
    while let Some(line) = lines.next() {
        if line.trim_end() != fence {
            continue;
        }
        out.push(
            lines
                .by_ref()
                .take_while(|l| !l.starts_with("```"))
                .collect(),
        );
    }
    out
}

/// One simple command of a shell line: its words, without leading
/// `VAR=value` assignments. The README's lines use no quotes, so words are
/// split on whitespace; a quote would need a real parser, hence the assert.
fn commands(line: &str) -> Vec<Vec<&str>> {
    assert!(
        !line.contains(['\'', '"', '`', '$']),
        "the README's sh line {line:?} needs a shell parser this test lacks"
    );
    line.split("&&")
        .flat_map(|part| part.split(['|', ';']))
        .map(|cmd| {
            cmd.split_whitespace()
                .skip_while(|w| w.contains('=') && !w.starts_with('-'))
                .take_while(|w| !w.starts_with('>'))
                .collect::<Vec<_>>()
        })
        .filter(|words| !words.is_empty())
        .collect()
}

fn sh_lines() -> Vec<&'static str> {
    let lines: Vec<_> = blocks("sh").into_iter().flatten().collect();
    assert!(lines.len() > 10, "found the README's sh blocks: {lines:?}");
    lines
}

/// `redmap ARGS… --help`: clap parses every argument before it reaches
/// `--help` (an unknown subcommand or flag, or a bad value, is an error),
/// then prints the help of the subcommand the arguments led to.
fn check_redmap(all: &[&str]) {
    // Words after `--` are the job's arguments, not redmap's.
    let args = match all.iter().position(|a| *a == "--") {
        Some(at) => &all[..at],
        None => all,
    };
    let mut cmd = redmap();
    // Nothing from this test's environment may stand in for an argument.
    for var in ["REDMAP_MANAGER", "REDMAP_SECRET", "REDMAP_SECRET_FILE"] {
        cmd.env_remove(var);
    }
    let out = cmd.args(args).arg("--help").output().expect("run redmap");
    let line = format!("redmap {}", all.join(" "));
    assert!(
        out.status.success(),
        "`{line}` does not parse:\n{}",
        stderr(&out)
    );
    let help = stdout(&out);
    let usage = help
        .lines()
        .find_map(|l| l.strip_prefix("Usage: redmap "))
        .unwrap_or_else(|| panic!("`{line} --help` printed no usage:\n{help}"));
    // A leaf: `redmap manager` alone would print the help of a group.
    assert!(
        !usage.contains("<COMMAND>"),
        "`{line}` names no command:\n{help}"
    );
    for word in usage
        .split_whitespace()
        .take_while(|w| !w.starts_with(['[', '<']))
    {
        assert!(args.contains(&word), "`{line}` led to `{usage}`");
    }
    for flag in args.iter().filter(|a| a.starts_with('-')) {
        let flag = flag.split('=').next().unwrap_or(flag);
        let listed = help
            .split(|c: char| c.is_whitespace() || c == ',')
            .any(|w| w == flag);
        assert!(listed, "`{line}`: {flag} is not in its --help:\n{help}");
    }
    // A file the command names (the tutorial's job) is in the repository,
    // which is where the README runs its commands.
    for path in args.iter().filter(|a| a.ends_with(".rs")) {
        assert!(repo().join(path).is_file(), "`{line}`: no file {path}");
    }
}

/// `[[bin]]` names of fuzz/Cargo.toml: the fuzz targets.
fn fuzz_targets() -> Vec<String> {
    let manifest = std::fs::read_to_string(repo().join("fuzz/Cargo.toml")).unwrap();
    manifest
        .split("[[bin]]")
        .skip(1)
        .filter_map(|bin| {
            let name = bin.lines().find_map(|l| l.strip_prefix("name = "))?;
            Some(name.trim().trim_matches('"').to_owned())
        })
        .collect()
}

/// Whether `path` is a directory a fresh clone has: one here that git does
/// not ignore (a corpus left by an earlier fuzz run does not count).
fn in_a_fresh_clone(path: &Path) -> bool {
    let ignore = std::fs::read_to_string(repo().join(".gitignore")).unwrap();
    let rel = path.strip_prefix(repo()).unwrap_or(path);
    let ignored = ignore
        .lines()
        .filter_map(|l| l.strip_prefix('/'))
        .any(|pattern| rel.starts_with(pattern));
    path.is_dir() && !ignored
}

/// `cargo fuzz run TARGET DIR… -- OPTIONS` in `cwd`, where `made` are the
/// directories the line created before it: each corpus directory must exist
/// by then, as libFuzzer refuses a missing one.
fn check_cargo_fuzz(words: &[&str], cwd: &Path, made: &BTreeSet<PathBuf>) {
    assert!(
        cwd.join("Cargo.toml").is_file() && cwd.ends_with("fuzz"),
        "cargo fuzz runs in fuzz/"
    );
    assert_eq!(&words[..3], ["cargo", "fuzz", "run"], "{words:?}");
    let target = words[3];
    assert!(
        fuzz_targets().iter().any(|t| t == target),
        "no fuzz target {target}"
    );
    let dirs = words[4..].iter().take_while(|w| **w != "--");
    for dir in dirs {
        let path = cwd.join(dir);
        assert!(
            in_a_fresh_clone(&path) || made.contains(&path),
            "{dir} does not exist on a fresh clone and the line does not create it"
        );
        if dir.starts_with("seeds/") {
            let seeds = std::fs::read_dir(&path).unwrap().count();
            assert!(seeds > 0, "{dir} is empty");
        }
    }
}

#[test]
fn every_command_in_the_readme_parses_or_is_checked() {
    let mut redmap_lines = 0;
    let mut fuzz_runs = 0;
    for line in sh_lines() {
        // Each line starts in the repository; `cd` and `mkdir -p` carry
        // over to the rest of the line only.
        let mut cwd = repo();
        let mut made = BTreeSet::new();
        for words in commands(line) {
            match words[0] {
                "redmap" => {
                    check_redmap(&words[1..]);
                    redmap_lines += 1;
                }
                "cd" => {
                    cwd = cwd.join(words[1]);
                    assert!(cwd.is_dir(), "{line}: no directory {}", words[1]);
                }
                "mkdir" => {
                    assert_eq!(
                        words[1], "-p",
                        "{line}: mkdir without -p fails when run twice"
                    );
                    made.extend(words[2..].iter().map(|d| cwd.join(d)));
                }
                "cargo" if words[1] == "fuzz" => {
                    check_cargo_fuzz(&words, &cwd, &made);
                    fuzz_runs += 1;
                }
                // The test command: checked against CI below.
                "cargo" if words[1] == "test" => {}
                // `cargo install --path .` builds this crate's binary;
                // `cargo install cargo-fuzz` needs the network.
                "cargo" if words[1] == "install" => {
                    assert!(
                        words[2..] == ["--path", "."] || words[2..] == ["cargo-fuzz"],
                        "{line}"
                    );
                }
                tool if PLAIN_TOOLS.contains(&tool) => {}
                other => panic!("the README runs `{other}` ({line}): add a check for it here"),
            }
        }
    }
    assert!(redmap_lines >= 10, "{redmap_lines} redmap commands checked");
    assert_eq!(fuzz_runs, 1, "the fuzz command is checked");
}

#[test]
fn the_readme_test_command_is_the_one_ci_runs() {
    let readme: Vec<&str> = sh_lines()
        .into_iter()
        .filter(|l| l.starts_with("cargo test"))
        .collect();
    assert_eq!(readme, ["cargo test --locked"]);
    let ci = std::fs::read_to_string(repo().join(".ci/run")).unwrap();
    let ci_tests: Vec<&str> = ci
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("cargo test"))
        .collect();
    assert_eq!(ci_tests, readme, ".ci/run runs the README's test command");
}

/// `name` → dependency names of the package `name` in a Cargo.lock.
fn locked_deps(lock: &str, name: &str) -> (String, BTreeSet<String>) {
    let header = format!("name = \"{name}\"\n");
    let package = lock
        .split("[[package]]")
        .find(|p| p.trim_start().starts_with(&header))
        .unwrap_or_else(|| panic!("no {name} in the lock file"));
    let version = package
        .lines()
        .find_map(|l| l.strip_prefix("version = "))
        .unwrap_or_default()
        .trim_matches('"')
        .to_owned();
    let deps = package
        .split_once("dependencies = [")
        .map_or("", |(_, rest)| rest.split(']').next().unwrap_or(""))
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').strip_prefix('"'))
        .filter_map(|l| l.split(['"', ' ']).next())
        .map(str::to_owned)
        .collect();
    (version, deps)
}

/// Keys of a `[section]` of a Cargo.toml.
fn toml_keys(manifest: &str, section: &str) -> BTreeSet<String> {
    let header = format!("[{section}]");
    manifest
        .lines()
        .skip_while(|l| l.trim() != header)
        .skip(1)
        .take_while(|l| !l.starts_with('['))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim().to_owned()))
        .filter(|k| !k.is_empty() && !k.starts_with('#'))
        .collect()
}

/// fuzz/ is its own workspace with its own lock, which nothing rebuilds
/// when the crate's dependencies change: it had kept tiny_http and lacked
/// httparse and libc. Checked without the network: the lock's `redmap`
/// has the crate's version and exactly its non-dev dependencies.
#[test]
fn the_fuzz_lock_file_follows_the_crates_dependencies() {
    let root = repo();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let main = std::fs::read_to_string(root.join("Cargo.lock")).unwrap();
    let fuzz = std::fs::read_to_string(root.join("fuzz/Cargo.lock")).unwrap();
    let (version, mut want) = locked_deps(&main, "redmap");
    for dev in toml_keys(&manifest, "dev-dependencies") {
        want.remove(&dev);
    }
    assert_eq!(
        want,
        toml_keys(&manifest, "dependencies"),
        "the main lock has the manifest's dependencies"
    );
    let (fuzz_version, fuzz_deps) = locked_deps(&fuzz, "redmap");
    assert_eq!(fuzz_version, version);
    assert_eq!(
        fuzz_deps, want,
        "fuzz/Cargo.lock is stale: run `cargo update -w` in fuzz/"
    );
}

/// The lines of the README's `pub trait NAME` block, from that line to
/// its closing brace, trimmed, blank lines left out.
fn shown_trait(name: &str) -> Vec<&'static str> {
    let start = format!("pub trait {name}");
    blocks("rust")
        .into_iter()
        .flatten()
        .skip_while(|l| !l.starts_with(&start))
        .take_while(|l| *l != "}")
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("//"))
        .collect()
}

/// Each line of the README's `NAME` trait is a line of `source` (so the
/// signatures are copied, not paraphrased; a `//` line stands for a
/// default method's body), and it shows its five methods.
fn assert_trait_is_real(name: &str, source: &str, file: &str) {
    let real: BTreeSet<&str> = source.lines().map(str::trim).collect();
    let shown = shown_trait(name);
    let fns = shown.iter().filter(|l| l.starts_with("fn ")).count();
    assert_eq!(fns, 5, "load, map, reduce, done and count: {shown:?}");
    for line in shown {
        assert!(real.contains(line), "not in {file}: {line}");
    }
}

/// The trait in the README's job section is the one in src/job/mod.rs.
#[test]
fn the_readme_shows_the_job_traits_real_signatures() {
    assert_trait_is_real("Job", include_str!("../src/job/mod.rs"), "src/job/mod.rs");
}

/// The same for the keyed job's trait and src/job/keyed.rs.
#[test]
fn the_readme_shows_the_keyed_job_traits_real_signatures() {
    let source = include_str!("../src/job/keyed.rs");
    assert_trait_is_real("KeyedJob", source, "src/job/keyed.rs");
}
