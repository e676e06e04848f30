//! Job arguments (issue 12), as a user meets them: the words after `--`
//! reach the job's constructor in every process that builds it, so a job
//! gives the same answer embedded and on a cluster, and a constructor that
//! refuses them says so before anything runs.

use crate::util::{self, repo, run_job, stderr, stdout, TempDir};

fn job(dir: &std::path::Path) -> String {
    let path = dir.join("mult.rs");
    std::fs::copy(repo().join("tests/jobs/mult.rs"), &path).unwrap();
    path.display().to_string()
}

#[test]
fn an_argument_gives_the_same_result_embedded_and_on_a_cluster() {
    let dir = TempDir::new("args");
    let job = job(dir.path());
    let out = run_job(&dir, &[&job, "--", "10"], &[]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("result: 550"), "{}", stdout(&out));

    // Two workers, each building the job from the batches' arguments, and
    // a manager building it from RUN_JOB's.
    let cluster = util::Cluster::start(2, &[], &[]);
    for by in ["10", "3"] {
        let out = util::run(cluster.cli(&["run", &job, "--", by]));
        assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
        let want = 55 * by.parse::<u64>().unwrap();
        assert!(
            stdout(&out).contains(&format!("result: {want}")),
            "-- {by}: {}",
            stdout(&out)
        );
    }
}

#[test]
fn a_constructor_that_refuses_its_arguments_stops_the_run_before_it_starts() {
    let dir = TempDir::new("args-bad");
    let job = job(dir.path());
    for args in [&["--", "ten"][..], &[][..], &["--", "1", "2"][..]] {
        let mut all = vec![job.as_str()];
        all.extend_from_slice(args);
        let out = run_job(&dir, &all, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stdout(&out));
        let err = stderr(&out);
        assert!(err.contains("the job refused its arguments"), "{err}");
        assert!(
            err.contains("not a number: ten") || err.contains("usage: mult.rs -- FACTOR"),
            "{err}"
        );
        assert!(
            !stdout(&out).contains("processed"),
            "it ran: {}",
            stdout(&out)
        );
    }
    // On a cluster too: refused in the client, so the manager never sees it.
    let cluster = util::Cluster::start(1, &[], &[]);
    let out = util::run(cluster.cli(&["run", &job, "--", "ten"]));
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("not a number: ten"),
        "{}",
        stderr(&out)
    );
    let list = util::run(cluster.cli(&["jobs", "list"]));
    assert!(!stdout(&list).contains("mult"), "{}", stdout(&list));
}

#[test]
fn a_job_exported_without_a_constructor_refuses_arguments() {
    let dir = TempDir::new("args-v1");
    let sum = dir.join("sum.rs");
    std::fs::copy(repo().join("tests/jobs/sum_v1.rs"), &sum).unwrap();
    let out = run_job(&dir, &[&sum.display().to_string(), "--", "x"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("this job takes no arguments"), "{err}");
    assert!(err.contains("export_job!(Type, constructor)"), "{err}");
}

/// A manager (or worker) whose constructor fails where the client's did
/// not: the job fails with the manager's reason, and nothing of it runs.
#[test]
fn a_constructor_that_fails_on_the_manager_fails_the_job_with_why() {
    let cluster = util::Cluster::start(1, &[], &[]);
    let path = cluster.dir.join("here.rs");
    std::fs::copy(repo().join("tests/jobs/needs_file.rs"), &path).unwrap();
    // The file exists where the client runs (its own directory), not in
    // the manager's directory: the argument is a relative path.
    let client_dir = TempDir::new("args-client");
    std::fs::write(client_dir.join("marker"), "x").unwrap();
    let out = util::run(
        cluster
            .cli(&["run", &path.display().to_string(), "--", "marker"])
            .current_dir(client_dir.path()),
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out) + &stderr(&out);
    assert!(
        text.contains("the job's constructor failed on the manager: no file marker"),
        "{text}"
    );
}
