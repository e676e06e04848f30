//! Keyed jobs (issue 12), as a user meets them: a word count written as a
//! `KeyedJob` gives exactly what a plain count gives.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::util::{self, repo, run_job, stderr, stdout, Rng, TempDir};

/// A seeded corpus of `lines` lines over a vocabulary of ~300 words (some
/// with non-ASCII letters), with empty lines and runs of spaces.
pub fn corpus(seed: u64, lines: usize) -> String {
    let mut rng = Rng(seed);
    let vocabulary: Vec<String> = (0..300)
        .map(|i| match i % 10 {
            0 => format!("wörd{i}"),
            1 => format!("Word{i}"),
            _ => format!("w{}", i * 7919 % 1000),
        })
        .collect();
    let mut text = String::new();
    for _ in 0..lines {
        let n = rng.below(12);
        for j in 0..n {
            if j > 0 {
                text.push_str(if rng.below(5) == 0 { "   " } else { " " });
            }
            text.push_str(&vocabulary[rng.below(vocabulary.len())]);
        }
        text.push('\n');
    }
    text
}

/// What the job must write: one `word<TAB>count` line per word, in the
/// words' order.
pub fn plain_count(text: &str) -> String {
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    for word in text.split_whitespace() {
        *counts.entry(word).or_default() += 1;
    }
    let mut out = String::new();
    for (word, n) in counts {
        let _ = writeln!(out, "{word}\t{n}");
    }
    out
}

fn job(dir: &TempDir) -> String {
    util::copy_job(dir.path(), "tests/jobs/keyed_wordcount.rs", "wc.rs")
}

#[test]
fn a_keyed_word_count_run_embedded_equals_a_plain_count() {
    let dir = TempDir::new("keyed-wc");
    let text = corpus(42, 20_000);
    std::fs::write(dir.join("corpus.txt"), &text).unwrap();
    let job = job(&dir);
    for threads in ["1", "2", "3"] {
        let _ = std::fs::remove_file(dir.join("result"));
        let out = run_job(&dir, &[&job, "--threads", threads, "--", "corpus.txt"], &[]);
        assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
        let result = std::fs::read_to_string(dir.join("result")).expect("done wrote result");
        assert!(
            result == plain_count(&text),
            "{threads} threads: the counts differ"
        );
        // A keyed job's summary is on standard error.
        let summary = stderr(&out);
        assert!(summary.contains("0 failed"), "{summary}");
    }
}

#[test]
fn a_keyed_word_count_on_a_cluster_equals_a_plain_count() {
    for workers in [1, 2] {
        let cluster = util::Cluster::start(workers, &[], &[]);
        // `load` runs on the manager, `done` here: the corpus by a path
        // both see, `result` in the client's directory.
        let text = corpus(7 + workers as u64, 20_000);
        let corpus = cluster.dir.join("corpus.txt");
        std::fs::write(&corpus, &text).unwrap();
        let job = job(&cluster.dir);
        let out = util::run(cluster.cli(&["run", &job, "--", &corpus.display().to_string()]));
        assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
        assert!(
            cluster.result() == plain_count(&text),
            "{workers} workers: the counts differ"
        );
    }
}

/// `kill -9` of a worker while a keyed job runs, at seeded moments: the
/// runs it held are mapped again elsewhere, and no pair counts twice.
#[test]
fn killing_a_worker_mid_job_leaves_a_keyed_count_exact() {
    let cluster = util::Cluster::start(1, &[], &[]);
    let text = corpus(99, 400_000);
    let corpus = cluster.dir.join("corpus.txt").display().to_string();
    std::fs::write(&corpus, &text).unwrap();
    let expected = plain_count(&text);
    let job = job(&cluster.dir);
    let manager = cluster.manager.addr_arg();
    let victim_addr = format!("127.0.0.1:{}", util::free_low_port());
    let mut rng = Rng(0x6b_6579_6564);
    for round in 1..=3u64 {
        let victim = util::start_worker_at(&victim_addr, &[]);
        let out = util::run(cluster.cli(&["manager", "attach", &victim_addr]));
        assert!(out.status.success(), "{}", stderr(&out));
        let child = cluster
            .cli(&["run", "-m", &manager, &job, "--", &corpus])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn redmap run");
        // Somewhere in the first half of the job's ~3,700 tasks.
        let moment = 1 + rng.below(1800) as u64;
        util::eventually(util::WAIT, || {
            util::job_summary(&manager, round)
                .is_some_and(|j| j.processed >= moment || j.status.is_over())
        });
        let mut victim = victim;
        let _ = victim.child.kill();
        let _ = victim.child.wait();
        let out = child.wait_with_output().expect("redmap run");
        assert!(out.status.success(), "round {round}: {}", stderr(&out));
        assert!(
            cluster.result() == expected,
            "round {round}: the counts differ"
        );
        let out = util::run(cluster.cli(&["manager", "detach", &victim_addr]));
        assert!(out.status.success(), "{}", stderr(&out));
    }
}

/// A keyed job with `TASKS` tasks, each emitting `KEYS` distinct keys of
/// its own (`task * KEYS + i`, value 1); `reduce` panics once a sum passes
/// `PANIC_AT`. `done` writes `<keys> <sum of values>` to `result`.
fn many_keys_job(dir: &TempDir, tasks: u64, keys: u64, panic_at: u64) -> String {
    let source = format!(
        r#"
use redmap::job::{{Emit, Error, KeyedJob, TypedTasks}};

#[derive(Default)]
struct ManyKeys;

impl KeyedJob for ManyKeys {{
    type Task = u64;
    type Key = u64;
    type Value = u64;
    fn load(&self) -> TypedTasks<u64> {{
        Box::new((0..{tasks}u64).map(Ok))
    }}
    fn map(&self, task: u64, out: &mut Emit<'_, Self>) -> Result<(), Error> {{
        for i in 0..{keys}u64 {{
            out.emit(task * {keys} + i, 1);
            out.emit(u64::MAX, 1);
        }}
        Ok(())
    }}
    fn reduce(&self, acc: &mut u64, more: u64) {{
        *acc += more;
        assert!(*acc <= {panic_at}, "a sum passed {panic_at}");
    }}
    fn done(&self, output: Vec<(u64, u64)>) -> Result<(), Error> {{
        let sum: u64 = output.iter().map(|(_, v)| v).sum();
        std::fs::write("result", format!("{{}} {{}}", output.len(), sum))?;
        Ok(())
    }}
    fn count(&self) -> Option<u64> {{
        Some({tasks})
    }}
}}

redmap::export_keyed_job!(ManyKeys);
"#
    );
    let path = dir.join("many.rs");
    std::fs::write(&path, source).unwrap();
    path.display().to_string()
}

/// Batches whose combined pairs pass the manager's --max-size are cut on
/// the worker (their tail deferred, no attempt counted): with retries off,
/// not one task fails, and the output is exact.
#[test]
fn a_batch_with_too_many_keys_for_a_frame_is_cut_not_failed() {
    let cluster = util::Cluster::start(1, &["--max-size", "65536", "--max-retries", "0"], &[]);
    let job = many_keys_job(&cluster.dir, 600, 100, u64::MAX);
    let out = util::run(cluster.cli(&["run", &job]));
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let summary = stderr(&out);
    assert!(
        summary.contains("600 processed, 0 failed, 0 retried"),
        "{summary}"
    );
    // 60,000 keys of their own, and u64::MAX counted once per pair.
    assert_eq!(cluster.result(), "60001 120000");
}

/// A `reduce` that panics while the output is combined: the reducer is
/// poisoned, so the job fails with why instead of writing an output that
/// counts a failed batch in part.
#[test]
fn a_reduce_that_panics_across_batches_fails_the_job_with_why() {
    let dir = TempDir::new("poisoned");
    // u64::MAX is emitted by every task: its sum passes 50 only when
    // batches are combined (a batch here holds at most 32 tasks' pairs).
    let job = many_keys_job(&dir, 200, 1, 50);
    let out = run_job(&dir, &[&job, "--threads", "2"], &[]);
    assert!(!out.status.success(), "{}", stdout(&out));
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(text.contains("a sum passed 50"), "{text}");
    assert!(
        !dir.join("result").exists(),
        "no output from a poisoned reducer"
    );
    // Nor is any part of it written by --output.
    let out = run_job(&dir, &[&job, "--threads", "2", "-o", "out.txt"], &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no output: the reduce failed"),
        "{}",
        stderr(&out)
    );
    assert!(
        !dir.join("out.txt").exists(),
        "a failed reduce's output was written"
    );
}

/// Issue 13: a reduce past its memory spills sorted runs to disk and
/// merges them at the end: the same output as one that fits, on a manager
/// (`--reduce-memory`) and embedded, and its spill files are gone after
/// the job, and after a cancel.
#[test]
fn a_reduce_that_spills_gives_the_same_output_and_leaves_no_file() {
    let job = repo().join("tests/jobs/keys.rs").display().to_string();
    let dir = TempDir::new("spill");
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let tmp_env = [("TMPDIR", tmp.to_str().unwrap())];
    // Spill directories are named so (servers keep other things there).
    let spill_files = || {
        std::fs::read_dir(&tmp)
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().starts_with("redmap-spill-")
            })
            .count()
    };

    // Embedded: 60,000 keys (about 1 MiB of pairs) through 64 KiB.
    let whole = run_job(&dir, &[&job, "--", "60000"], &tmp_env);
    let spilled = run_job(
        &dir,
        &[&job, "--reduce-memory", "64K", "--", "60000"],
        &tmp_env,
    );
    assert!(spilled.status.success(), "{}", stderr(&spilled));
    assert_eq!(stdout(&spilled).lines().count(), 60_000);
    assert!(stdout(&spilled) == stdout(&whole), "the outputs differ");
    assert!(
        stderr(&spilled).contains("reduce spills: "),
        "{}",
        stderr(&spilled)
    );
    assert_eq!(spill_files(), 0, "spill files left");

    // On workers with 64 KiB for their reduces (the manager holds no pair).
    let cluster = util::Cluster::start_with(2, &[], &["--reduce-memory", "64K"], &tmp_env);
    let out = util::run(cluster.cli(&["run", &job, "--", "60000"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out) == stdout(&whole),
        "the cluster's output differs"
    );
    assert_eq!(spill_files(), 0, "spill files left on the workers");
    // The job says so: in `jobs stats` and its JSON.
    let stats = util::run(cluster.cli(&["jobs", "stats", "1"]));
    assert!(
        stdout(&stats).contains("reduce spills: "),
        "{}",
        stdout(&stats)
    );
    let json = util::run(cluster.cli(&["jobs", "stats", "--json", "1"]));
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(json["spills"].as_u64().unwrap() > 0, "{json}");
    assert!(json["spilled_bytes"].as_u64().unwrap() > 0, "{json}");

    // Cancelled half-way, once it has spilled: its spill files go with it.
    let manager = cluster.manager.addr_arg();
    let big = util::run(cluster.cli(&["run", "--detach", &job, "--", "3000000"]));
    let id: u64 = stdout(&big).trim().parse().unwrap();
    assert!(
        util::eventually(util::WAIT, || spill_files() > 0),
        "the workers' reduces never spilled"
    );
    assert!(util::job_summary(&manager, id).is_some_and(|j| !j.status.is_over()));
    let out = util::run(cluster.cli(&["jobs", "cancel", &id.to_string()]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        util::eventually(util::WAIT, || spill_files() == 0),
        "spill files left after a cancel"
    );
    // Nor any of its output files.
    let outputs = || {
        std::fs::read_dir(&tmp)
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().contains(&format!("-job-{id}-"))
            })
            .count()
    };
    assert!(
        util::eventually(util::WAIT, || outputs() == 0),
        "output files of the cancelled job left"
    );
}
