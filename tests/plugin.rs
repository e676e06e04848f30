//! Jobs as plugins, the way a user meets them: `redmap run` on a .rs file, a
//! cargo crate, a C library; jobs that fail in every stage; libraries that
//! are not jobs; and the build cache.

use std::path::Path;

use crate::util::{cc_shared, repo, run_job, stderr, stdout, TempDir};

fn example(name: &str) -> String {
    repo().join("examples").join(name).display().to_string()
}

fn result_file(dir: &TempDir) -> String {
    std::fs::read_to_string(dir.join("result")).expect("the job wrote `result`")
}

#[test]
fn the_tutorial_job_leaves_65_in_result() {
    let dir = TempDir::new("sum");
    // A newcomer copies examples/sum.rs anywhere and runs it.
    std::fs::copy(example("sum.rs"), dir.join("sum.rs")).unwrap();
    let out = run_job(&dir, &["sum.rs"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(result_file(&dir), "65");
    let text = stdout(&out);
    assert!(text.contains("10 tasks, 10 processed, 0 failed"), "{text}");
    assert!(text.contains("result: 65"), "{text}");
}

#[test]
fn the_c_tutorial_job_gives_the_same_65() {
    let dir = TempDir::new("sum-c");
    let lib = cc_shared(&dir, &repo().join("examples/sum.c"), "sum_c.so");
    let out = run_job(&dir, &[lib.to_str().unwrap(), "--threads", "3"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(result_file(&dir), "65");
}

#[test]
fn wordcount_finds_the_exact_top_words() {
    let dir = TempDir::new("wordcount");
    // A fixture with known counts: word k appears 10 * k times, plus noise
    // in case and punctuation that must not split or merge words.
    let mut text = String::new();
    let words = ["ant", "bee", "cat", "dog", "eel", "fox"];
    for round in 0..60 {
        for (k, w) in words.iter().enumerate() {
            if round < 10 * (k + 1) {
                text.push_str(if round % 2 == 0 { w } else { &w[..] });
                text.push_str(if round % 3 == 0 { ", " } else { " " });
            }
        }
        if round % 7 == 0 {
            text.push_str("Ant! ");
        }
        text.push('\n');
    }
    let file = dir.write("text.txt", &text);
    let job = repo().join("tests/jobs/wordcount_bytes.rs");
    let out = run_job(
        &dir,
        &[
            job.to_str().unwrap(),
            "--",
            file.to_str().unwrap(),
            "7",
            "3",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("9 tasks"), "{}", stdout(&out));
    assert_eq!(result_file(&dir), "60 fox\n50 eel\n40 dog\n");
}

#[test]
fn a_cargo_crate_job_is_built_with_cargo_and_run() {
    let dir = TempDir::new("crate");
    let krate = dir.join("sumcrate");
    std::fs::create_dir_all(krate.join("src")).unwrap();
    std::fs::write(
        krate.join("Cargo.toml"),
        format!(
            "[package]\nname = \"sumcrate\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
             [lib]\ncrate-type = [\"cdylib\"]\npath = \"src/lib.rs\"\n\n\
             [dependencies]\nredmap = {{ path = {:?}, default-features = false }}\n\n\
             [workspace]\n",
            repo().display().to_string()
        ),
    )
    .unwrap();
    std::fs::copy(example("sum.rs"), krate.join("src/lib.rs")).unwrap();
    let target = dir.join("target");
    let out = run_job(
        &dir,
        &["sumcrate"],
        &[("CARGO_TARGET_DIR", target.to_str().unwrap())],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(result_file(&dir), "65");
}

/// A job whose every stage can be made to fail, by environment variables.
const FAULTY: &str = r#"
use redmap::job::{Error, Job, Tasks};

struct Faulty;

fn num(b: &[u8]) -> Result<u64, Error> {
    if b.is_empty() { return Ok(0); }
    Ok(std::str::from_utf8(b)?.parse()?)
}

fn set(key: &str) -> bool { std::env::var_os(key).is_some() }

impl Job for Faulty {
    fn load(&self) -> Tasks {
        let load_error = set("FAULTY_LOAD");
        let load_panic = set("FAULTY_LOAD_PANIC");
        Box::new((1..=20u64).flat_map(move |n| {
            if load_panic && n == 15 {
                panic!("the disk caught fire at 15");
            }
            let mut items = vec![Ok(n.to_string().into_bytes())];
            if load_error && n == 10 {
                items.push(Err(Error::msg("disk hiccup at line 10")));
            }
            items
        }))
    }
    fn map(&self, task: &[u8]) -> Result<Vec<u8>, Error> {
        let n = num(task)?;
        if set("FAULTY_MAP_PANIC") && n == 7 {
            panic!("task seven is cursed");
        }
        Ok(n.to_string().into_bytes())
    }
    fn reduce(&self, acc: &[u8], cur: &[u8]) -> Result<Vec<u8>, Error> {
        if set("FAULTY_REDUCE") && num(cur)? == 13 {
            return Err(Error::msg("thirteen does not add up"));
        }
        Ok((num(acc)? + num(cur)?).to_string().into_bytes())
    }
    fn done(&self, result: &[u8]) -> Result<(), Error> {
        std::fs::write("result", result)?;
        Ok(())
    }
}

redmap::export_job!(Faulty);
"#;

/// Runs FAULTY embedded, exported both ways: with a version-1 table (the
/// host maps and folds task by task, and pulls tasks one by one) and with
/// a version-3 one (the job's own batch calls: `fold_batch`,
/// `load_batch`). Both must fail, count and word alike.
fn faulty(env: &[(&str, &str)]) -> Vec<(std::process::Output, String)> {
    [
        "redmap::export_job!(Faulty);",
        "redmap::export_job!(Faulty, |_| Ok(Faulty));",
    ]
    .iter()
    .map(|export| {
        let dir = TempDir::new("faulty");
        let source = FAULTY.replace("redmap::export_job!(Faulty);", export);
        let src = dir.write("faulty.rs", &source);
        let out = run_job(&dir, &[src.to_str().unwrap()], env);
        let result = std::fs::read_to_string(dir.join("result")).unwrap_or_default();
        (out, result)
    })
    .collect()
}

#[test]
fn a_panicking_map_fails_one_task_and_the_rest_are_counted() {
    for (out, result) in faulty(&[("FAULTY_MAP_PANIC", "1")]) {
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let text = stdout(&out);
        assert!(text.contains("20 tasks, 19 processed, 1 failed"), "{text}");
        assert!(
            text.contains(r#"task 7 ("7"): panic: task seven is cursed (at "#),
            "{text}"
        );
        // The error says where; the panic is not printed on top of it.
        assert!(!stderr(&out).contains("panicked at"), "{}", stderr(&out));
        assert_eq!(result, (210 - 7).to_string(), "done got the rest");
    }
}

#[test]
fn a_failing_reduce_is_reported_and_the_rest_are_counted() {
    for (out, result) in faulty(&[("FAULTY_REDUCE", "1")]) {
        assert_eq!(out.status.code(), Some(1));
        let text = stdout(&out);
        assert!(text.contains("20 tasks, 19 processed, 1 failed"), "{text}");
        // Named like a cluster run names it: the task whose value would not fold.
        assert!(
            text.contains(r#"task 13 ("13"): reduce: thirteen does not add up"#),
            "{text}"
        );
        assert_eq!(result, (210 - 13).to_string());
    }
}

/// A panic in `load` is recorded and ends loading; the tasks loaded
/// before it still run (also when the job hands out many per call).
#[test]
fn a_panic_in_load_ends_loading_and_the_tasks_before_it_run() {
    for (out, result) in faulty(&[("FAULTY_LOAD_PANIC", "1")]) {
        assert_eq!(out.status.code(), Some(1));
        let text = stdout(&out);
        assert!(text.contains("14 tasks, 14 processed, 0 failed"), "{text}");
        assert!(text.contains("load errors: 1"), "{text}");
        assert!(text.contains("panic: the disk caught fire at 15"), "{text}");
        assert_eq!(result, (1..=14).sum::<u64>().to_string());
    }
}

#[test]
fn a_load_error_mid_stream_is_reported_and_loading_goes_on() {
    for (out, result) in faulty(&[("FAULTY_LOAD", "1")]) {
        assert_eq!(out.status.code(), Some(1));
        let text = stdout(&out);
        assert!(text.contains("20 tasks, 20 processed, 0 failed"), "{text}");
        assert!(text.contains("load errors: 1"), "{text}");
        // The error is the 11th item load yielded: tasks are numbered as the
        // user counts them, errors included.
        assert!(
            text.contains("load: task 11: disk hiccup at line 10"),
            "{text}"
        );
        assert_eq!(result, "210");
    }
}

#[test]
fn compile_errors_are_shown_verbatim() {
    let dir = TempDir::new("broken");
    let src = dir.write("broken.rs", "fn main( {}\n");
    let out = run_job(&dir, &[src.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("error"), "rustc's own message: {err}");
    assert!(err.contains("broken.rs"), "{err}");
    assert!(err.contains("compiling") && err.contains("failed"), "{err}");
}

fn load_error(dir: &TempDir, lib: &Path) -> String {
    let out = run_job(dir, &[lib.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    stderr(&out)
}

#[test]
fn a_text_file_is_refused_as_not_a_library() {
    let dir = TempDir::new("notlib");
    let lib = dir.write("job.so", "this is not an ELF file\n");
    let err = load_error(&dir, &lib);
    assert!(err.contains("is not a loadable shared library"), "{err}");
}

#[test]
fn a_library_without_the_entry_symbol_is_refused() {
    let dir = TempDir::new("nosym");
    let src = dir.write("plain.c", "int answer(void) { return 42; }\n");
    let lib = cc_shared(&dir, &src, "plain.so");
    let err = load_error(&dir, &lib);
    assert!(
        err.contains("does not export the symbol `redmap_job_entry`"),
        "{err}"
    );
}

#[test]
fn a_library_of_the_withdrawn_version_2_layout_is_refused_with_why() {
    // A keyed job built by a development build before job arguments: a
    // 128-byte table that says version 2.
    let dir = TempDir::new("abi2");
    let src = dir.write(
        "old.c",
        "#include <stdint.h>\n\
         static const struct { uint32_t version, size; void *e[14]; } ENTRY = { 2, 128, {0} };\n\
         const void *redmap_job_entry(void) { return &ENTRY; }\n",
    );
    let lib = cc_shared(&dir, &src, "old.so");
    let err = load_error(&dir, &lib);
    assert!(err.contains("job ABI version 2"), "{err}");
    assert!(err.contains("(not 2)"), "{err}");
    assert!(
        err.contains("no release loads it: rebuild the job"),
        "{err}"
    );
}

#[test]
fn a_library_with_a_wrong_abi_version_is_refused() {
    let dir = TempDir::new("abi");
    let src = dir.write(
        "future.c",
        "#include <stdint.h>\n\
         static const struct { uint32_t version, size; } ENTRY = { 99, 8 };\n\
         const void *redmap_job_entry(void) { return &ENTRY; }\n",
    );
    let lib = cc_shared(&dir, &src, "future.so");
    let err = load_error(&dir, &lib);
    assert!(err.contains("job ABI version 99"), "{err}");
    assert!(err.contains("loads versions 1 to 3"), "{err}");
    assert!(
        err.contains("newer than this redmap: upgrade redmap"),
        "{err}"
    );
}

/// Issue 11: a table shorter than version 1 is refused from its first two
/// fields alone. tests/jobs/short_table.c puts its 8 bytes just before an
/// unreadable page, so a loader that read (or referenced) a whole table
/// before checking `struct_size` would crash instead.
#[test]
fn a_library_with_a_short_table_is_refused_without_reading_past_it() {
    let dir = TempDir::new("short");
    let lib = cc_shared(&dir, &repo().join("tests/jobs/short_table.c"), "short.so");
    let err = load_error(&dir, &lib);
    assert!(
        err.contains("struct_size: the table is shorter than version 1"),
        "{err}"
    );
}

#[test]
fn a_missing_path_or_unknown_kind_is_a_clear_error() {
    let dir = TempDir::new("kinds");
    let out = run_job(&dir, &["nope.rs"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("nope.rs does not exist"));
    let txt = dir.write("job.txt", "hello");
    let out = run_job(&dir, &[txt.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("expected a .rs file"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn running_an_unchanged_job_again_does_not_recompile() {
    let dir = TempDir::new("cache");
    std::fs::copy(example("sum.rs"), dir.join("sum.rs")).unwrap();
    // The build cache speaks at info level, shown with -v.
    let first = run_job(&dir, &["-v", "sum.rs"], &[]);
    assert!(first.status.success());
    assert!(
        stderr(&first).contains("compiling sum.rs"),
        "{}",
        stderr(&first)
    );
    let second = run_job(&dir, &["-v", "sum.rs"], &[]);
    assert!(second.status.success());
    let log = stderr(&second);
    assert!(log.contains("unchanged, using the cached build"), "{log}");
    assert!(!log.contains("compiling"), "{log}");
    // A change to the source is a new build.
    let mut src = std::fs::read_to_string(dir.join("sum.rs")).unwrap();
    src.push_str("\n// edited\n");
    std::fs::write(dir.join("sum.rs"), src).unwrap();
    let third = run_job(&dir, &["-v", "sum.rs"], &[]);
    assert!(stderr(&third).contains("compiling sum.rs"));
}

/// Issue 12: the job ABI is at version 3, and a library built for version 1
/// (its table says 1, and is version 1's size) runs as it did.
#[test]
fn a_c_job_built_for_abi_version_1_still_runs() {
    let dir = TempDir::new("abi-v1");
    let source = std::fs::read_to_string(repo().join("examples/sum.c")).unwrap();
    assert!(
        source.contains("REDMAP_ABI_VERSION_1,"),
        "sum.c names its version"
    );
    let v1 = dir.write("sum_v1.c", &source.replace("REDMAP_ABI_VERSION_1,", "1,"));
    let lib = cc_shared(&dir, &v1, "sum_v1.so");
    let out = run_job(&dir, &[lib.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(result_file(&dir), "65");
}

/// Issue 12: the C header's version-3 table has the host's layout (the
/// source's static asserts), and a table sized between version 1's and
/// version 3's is refused rather than read as either.
#[test]
fn the_c_headers_version_3_table_is_the_hosts_and_a_half_table_is_refused() {
    let dir = TempDir::new("v3-layout");
    let lib = cc_shared(&dir, &repo().join("tests/jobs/v3_layout.c"), "half.so");
    let err = load_error(&dir, &lib);
    assert!(err.contains("between version 1's and version 3's"), "{err}");
}

/// Issue 12: a C job against the header's version-3 table takes its
/// arguments through `instance_new`, embedded and on a cluster, and its
/// refusal is shown before anything runs.
#[test]
fn a_c_job_of_abi_version_3_takes_its_arguments() {
    let dir = TempDir::new("c-v3");
    let lib = cc_shared(&dir, &repo().join("tests/jobs/scaled.c"), "scaled.so");
    let lib = lib.to_str().unwrap();
    let out = run_job(&dir, &[lib, "--", "7"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(result_file(&dir), "385");
    let out = run_job(&dir, &[lib], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("usage: scaled.so -- FACTOR"),
        "{}",
        stderr(&out)
    );
    let cluster = crate::util::Cluster::start(2, &[], &[]);
    let out = crate::util::run(cluster.cli(&["run", lib, "--", "3"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(cluster.result(), "165");
}
