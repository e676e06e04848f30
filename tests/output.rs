//! A job's output comes back to the user (issue 12): a keyed job's `done`
//! runs in `redmap run`'s process, `--output` writes the output where the
//! user is, and `redmap jobs output` fetches a detached job's, however
//! much larger than a frame it is.

use std::fmt::Write as _;
use std::os::unix::fs::FileTypeExt;

use crate::util::{self, repo, run_job, stderr, stdout, TempDir};

/// Nothing left of a fetch's partial files in `dir`.
fn assert_no_partial_file(dir: &std::path::Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name();
        assert!(
            !name.to_string_lossy().ends_with(".partial"),
            "{name:?} is left"
        );
    }
}

fn keys_job(dir: &std::path::Path) -> String {
    util::copy_job(dir, "tests/jobs/keys.rs", "keys.rs")
}

/// What `keys.rs -- n` outputs in text: `key<TAB>1` per key, in order.
fn keys_text(n: u64) -> String {
    let mut text = String::new();
    for key in 0..n {
        let _ = writeln!(text, "{key}\t1");
    }
    text
}

#[test]
fn a_keyed_jobs_done_runs_in_the_client_not_on_the_manager() {
    let cluster = util::Cluster::start(2, &[], &[]);
    let job = keys_job(cluster.dir.path());
    let here = TempDir::new("client");
    let out = util::run(
        cluster
            .cli(&["run", &job, "--", "2500"])
            .current_dir(here.path()),
    );
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    // The default `done` printed the output here: standard output is the
    // job's, and the summary is on standard error.
    let printed = stdout(&out);
    assert!(printed == keys_text(2500), "{printed}");
    assert!(
        stderr(&out).contains("3 processed, 0 failed"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn output_writes_the_whole_output_in_text_or_binary_also_past_max_size() {
    // Frames of at most 64 KiB; the output's text is about 300 KiB.
    let cluster = util::Cluster::start(1, &["--max-size", "65536"], &[]);
    let job = keys_job(cluster.dir.path());
    let here = TempDir::new("client-out");
    let n = "30000";
    let out = util::run(
        cluster
            .cli(&[
                "run",
                &job,
                "--max-size",
                "65536",
                "--output",
                "out.txt",
                "--",
                n,
            ])
            .current_dir(here.path()),
    );
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let text = std::fs::read_to_string(here.join("out.txt")).expect("--output wrote out.txt");
    assert!(text.len() > 65536 * 2, "{} bytes", text.len());
    assert!(text == keys_text(30000), "the text output differs");
    assert_no_partial_file(here.path());

    // A device is written in place, as a shell's `>` would.
    let out = util::run(
        cluster
            .cli(&["run", &job, "--output", "/dev/null", "--", "3000"])
            .current_dir(here.path()),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(std::fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());

    // To standard output, with the summary on standard error.
    let out = util::run(
        cluster
            .cli(&[
                "run",
                &job,
                "--max-size",
                "65536",
                "--output",
                "-",
                "--",
                "3000",
            ])
            .current_dir(here.path()),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out) == keys_text(3000),
        "stdout holds more than the output"
    );
    assert!(stderr(&out).contains("3 processed"), "{}", stderr(&out));
    // `done` did not run: nothing printed but the summary.
    assert!(!stdout(&out).contains("29999\t1"), "{}", stdout(&out));

    let out = util::run(
        cluster
            .cli(&["run", &job, "-o", "out.bin", "--format", "binary", "--", n])
            .current_dir(here.path()),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let binary = std::fs::read(here.join("out.bin")).unwrap();
    // Each pair framed (protocol.md, "Keyed jobs"): length 8, the u64 key
    // big-endian, length 8, the u64 value.
    assert_eq!(binary.len(), 30000 * 18);
    let eighth = [&[8u8][..], &7u64.to_be_bytes(), &[8], &1u64.to_be_bytes()].concat();
    assert_eq!(&binary[18 * 7..18 * 8], eighth);
}

#[test]
fn jobs_output_fetches_a_detached_jobs_output_and_says_why_when_there_is_none() {
    let cluster = util::Cluster::start(1, &[], &[]);
    let job = keys_job(cluster.dir.path());
    let out = util::run(cluster.cli(&["run", "--detach", &job, "--", "5000"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).trim().to_owned();
    let manager = cluster.manager.addr_arg();
    util::eventually(util::WAIT, || {
        util::job_summary(&manager, id.parse().unwrap()).is_some_and(|j| j.status.is_over())
    });
    let out = util::run(cluster.cli(&["jobs", "output", &id, "-o", "fetched.txt"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let fetched = std::fs::read_to_string(cluster.dir.join("fetched.txt")).unwrap();
    assert!(fetched == keys_text(5000), "the fetched output differs");
    // To standard output by default.
    let out = util::run(cluster.cli(&["jobs", "output", &id]));
    assert!(stdout(&out) == keys_text(5000));

    let out = util::run(cluster.cli(&["jobs", "output", "999"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no job with id 999"),
        "{}",
        stderr(&out)
    );
    let out = util::run(cluster.cli(&["run", "--detach", "--output", "x", &job, "--", "1"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("redmap jobs output"),
        "{}",
        stderr(&out)
    );
}

/// The original contract is unchanged: `done` runs on the manager (the
/// tutorial's `result`), and `--output` also fetches the accumulator.
#[test]
fn a_byte_level_jobs_done_stays_on_the_manager_and_output_fetches_its_result() {
    let cluster = util::Cluster::start(1, &[], &[]);
    let here = TempDir::new("client-sum");
    let sum = repo().join("examples/sum.rs").display().to_string();
    let out = util::run(
        cluster
            .cli(&["run", &sum, "--output", "acc"])
            .current_dir(here.path()),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(cluster.result(), "65");
    assert!(!here.join("result").exists(), "done ran in the client");
    assert_eq!(std::fs::read_to_string(here.join("acc")).unwrap(), "65");
}

#[test]
fn an_embedded_keyed_run_writes_its_output_instead_of_calling_done() {
    let dir = TempDir::new("embedded-out");
    let job = keys_job(dir.path());
    let out = run_job(&dir, &[&job, "-o", "out.txt", "--", "1500"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(std::fs::read_to_string(dir.join("out.txt")).unwrap() == keys_text(1500));
    assert!(
        !stdout(&out).contains("1499\t1"),
        "done ran: {}",
        stdout(&out)
    );
    // Without --output, done prints it.
    let out = run_job(&dir, &[&job, "--", "1500"], &[]);
    assert!(stdout(&out) == keys_text(1500));
}
