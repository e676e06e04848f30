//! The `redmap` commands as a user runs them: output and exit codes.

use std::net::TcpListener;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use redmap::proto::msg::{ErrorReply, InstallReply, JobStatus, JobSummary};
use redmap::proto::{ErrorCode, Message};

use crate::util::{self, eventually, redmap, start_worker, stderr, stdout};

/// An address where nothing listens (bound, then released).
fn dead_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    drop(l);
    addr
}

#[test]
fn worker_status_reports_each_address_and_fails_if_any_is_down() {
    let worker = start_worker(&[]);
    let up = worker.addr_arg();
    let out = util::run(redmap().args(["worker", "status", &up]));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with(&up) && text.contains("reachable"),
        "{text}"
    );

    let down = dead_addr();
    let out = util::run(redmap().args(["worker", "status", &up, &down]));
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].contains(" reachable"), "{text}");
    assert!(lines[1].starts_with(&down) && lines[1].contains("unreachable"));
    assert!(lines[1].contains("refused"), "says why: {text}");
}

#[test]
fn worker_status_accepts_the_colon_port_form() {
    let worker = start_worker(&[]);
    let short = format!(":{}", worker.addr.port());
    let out = util::run(redmap().args(["worker", "status", &short]));
    assert!(out.status.success(), "{}", stdout(&out));
}

#[test]
fn worker_status_json_is_one_object_per_address() {
    let worker = start_worker(&[]);
    let down = dead_addr();
    let out = util::run(redmap().args(["worker", "status", "--json", &worker.addr_arg(), &down]));
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.starts_with("[{\"address\":"), "{text}");
    assert_eq!(text.matches("\"reachable\":true").count(), 1, "{text}");
    assert_eq!(text.matches("\"reachable\":false").count(), 1, "{text}");
}

#[test]
fn worker_info_prints_a_table_and_json() {
    let a = start_worker(&[]);
    let b = start_worker(&[]);
    let out = util::run(redmap().args(["worker", "info", &a.addr_arg(), &b.addr_arg()]));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("ADDRESS") && lines[0].contains("TASKS PROCESSED"));
    assert!(lines[1].starts_with(&a.addr_arg()));
    assert!(lines[2].starts_with(&b.addr_arg()));
    assert!(lines[1].contains(redmap::VERSION));

    let out = util::run(redmap().args(["worker", "info", "--json", &a.addr_arg()]));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("\"address\":\"{}\"", a.addr)),
        "{text}"
    );
    assert!(text.contains("\"tasks_processed\":0"), "{text}");
    // Its executors' memory limit: by default half of this machine's memory.
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("MemTotal");
    let half = kib * 1024 / 2;
    assert!(text.contains(&format!("\"memory_limit\":{half}")), "{text}");
    assert!(
        text.contains("\"executors\":0,\"executor_deaths\":0"),
        "{text}"
    );
    assert!(
        lines[0].contains("MEMORY LIMIT") && lines[0].contains("EXECUTORS"),
        "{}",
        lines[0]
    );

    let out = util::run(redmap().args(["worker", "info", &a.addr_arg(), &dead_addr()]));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot connect"), "{}", stderr(&out));
}

#[test]
fn a_silent_server_makes_status_time_out_with_the_read_timeout() {
    // A listener that accepts (the kernel does) but never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let started = std::time::Instant::now();
    let out = util::run(redmap().args(["worker", "status", "--read-timeout", "300ms", &addr]));
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("timed out"), "{}", stdout(&out));
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn bad_flags_and_addresses_are_clear_errors() {
    let out = util::run(redmap().args(["worker", "status", "--read-timeout", "10", "127.0.0.1:1"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no unit"), "{}", stderr(&out));

    let out = util::run(redmap().args(["worker", "start", "9876"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("missing ':PORT'"), "{}", stderr(&out));

    let out = util::run(redmap().args(["worker", "status"]));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn starting_on_a_busy_port_fails_with_a_hint() {
    let worker = start_worker(&[]);
    let out = util::run(redmap().args(["worker", "start", &worker.addr_arg()]));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("cannot serve on") && err.contains("hint:"),
        "{err}"
    );
}

#[test]
fn completions_are_generated_for_each_shell() {
    for (shell, marker) in [
        ("bash", "_redmap()"),
        ("zsh", "#compdef redmap"),
        ("fish", "complete -c redmap"),
    ] {
        let out = util::run(redmap().args(["completions", shell]));
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        assert!(script.contains(marker), "{shell}");
        for sub in ["manager", "worker", "jobs", "run"] {
            assert!(script.contains(sub), "{shell} lacks {sub}");
        }
    }
}

fn example(name: &str) -> String {
    util::repo()
        .join("examples")
        .join(name)
        .display()
        .to_string()
}

/// The terminal's output, split at each redraw of the line: the frames.
fn frames(screen: &str) -> Vec<&str> {
    screen.split("\r\x1b[2K").skip(1).collect()
}

#[test]
fn an_embedded_run_shows_a_progress_line_that_fits_a_terminal() {
    // `script` (util-linux) runs the command on a pseudo-terminal of 60 columns.
    if util::run(std::process::Command::new("script").arg("--version"))
        .status
        .code()
        != Some(0)
    {
        eprintln!("SKIPPED: no `script` (util-linux) for a pseudo-terminal");
        return;
    }
    let dir = util::TempDir::new("pty");
    let command = format!(
        "stty cols 60; {} run {} -- 3000000",
        env!("CARGO_BIN_EXE_redmap"),
        example("sum.rs")
    );
    let out = util::run(
        std::process::Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .current_dir(dir.path())
            .env("REDMAP_CACHE_DIR", dir.join("cache"))
            .env_remove("RUST_LOG"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let screen = stdout(&out);
    let shown = frames(&screen);
    assert!(
        shown.iter().any(|f| f.contains("/3000000 (")),
        "no progress line on the terminal: {screen:?}"
    );
    for frame in &shown[..shown.len() - 1] {
        assert!(
            frame.chars().count() < 60,
            "wider than the terminal: {frame:?}"
        );
        assert!(frame.contains("ETA") || frame.contains("100%"), "{frame:?}");
    }
    assert!(screen.contains("result: 4500004500000"), "{screen:?}");

    // Without a terminal: the summary alone.
    let out = util::run_job(&dir, &[&example("sum.rs"), "--", "3000000"], &[]);
    assert!(out.status.success());
    assert!(!stderr(&out).contains("tasks"), "{}", stderr(&out));
}

/// A job's summary as a manager would send it.
fn summary(status: JobStatus, processed: u64, failed: u64) -> JobSummary {
    JobSummary {
        id: 5,
        name: "race".into(),
        status,
        estimate: Some(10),
        loaded: 10,
        processed,
        failed,
        retried: 0,
        running: 0,
        elapsed_ms: 1500,
        load_errors: 0,
        reduce_errors: 0,
        result_len: 2,
        result_preview: b"60".to_vec(),
        errors: vec!["map of task 3: boom".into()],
        backups: 0,
        backups_won: 0,
        duplicates: 0,
        waiting_for_workers: false,
        spills: 2,
        spilled_bytes: 4096,
        shuffle: Default::default(),
    }
}

#[test]
fn ctrl_c_as_the_job_ends_prints_the_summary_and_the_jobs_status() {
    // A stand-in manager: the job runs until `redmap run` asks to cancel
    // it, and by then it has finished (one task failed): the Ctrl-C lost
    // the race with the job's end.
    let dir = util::TempDir::new("race");
    let lib = util::cc_shared(&dir, &util::repo().join("examples/sum.c"), "sum.so");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let polls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&polls);
    let manager = thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(util::WAIT)).unwrap();
        let mut over = false;
        while let Some(frame) = util::read_frame(&mut conn) {
            let reply = match Message::decode(&frame).expect("a request") {
                // `redmap run` sizes its chunks from the manager's INFO.
                Message::InfoRequest => Message::Info(redmap::proto::msg::Info {
                    version: redmap::VERSION.into(),
                    address: "stand-in".into(),
                    protocol: redmap::proto::PROTOCOL_VERSION,
                    active_jobs: 0,
                    installed_jobs: 0,
                    uptime_ms: 0,
                    tasks_processed: 0,
                    role: redmap::proto::msg::Role::Manager,
                    server_id: 1,
                    max_size: 0,
                    manager: String::new(),
                    memory_limit: 0,
                    executors: 0,
                    executor_deaths: 0,
                }),
                Message::Install(i) => Message::InstallReply(InstallReply {
                    complete: true,
                    next_offset: i.total,
                }),
                Message::RunJob(_) => Message::JobAccepted(5),
                Message::JobStatsRequest(5) if over => {
                    Message::JobStats(summary(JobStatus::Finished, 9, 1))
                }
                Message::JobStatsRequest(5) => {
                    seen.fetch_add(1, Ordering::SeqCst);
                    Message::JobStats(summary(JobStatus::Running, 4, 1))
                }
                Message::CancelJob(5) => {
                    over = true;
                    Message::Error(ErrorReply {
                        code: ErrorCode::CONFLICT,
                        message: "job 5 is already finished".into(),
                    })
                }
                other => panic!("unexpected request {other:?}"),
            };
            util::send(&mut conn, frame.request_id, &reply);
        }
    });
    let child = redmap()
        .args(["run", "-m", &addr, "--cancel-on-interrupt"])
        .arg(&lib)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        eventually(util::WAIT, || polls.load(Ordering::SeqCst) >= 3),
        "redmap run did not follow the job"
    );
    util::signal(child.id(), "INT");
    let out = child.wait_with_output().unwrap();
    manager.join().unwrap();
    let (text, err) = (stdout(&out), stderr(&out));
    assert_eq!(
        out.status.code(),
        Some(1),
        "the job's status: {text}\n{err}"
    );
    assert!(
        text.contains("race: finished") && text.contains("9 processed, 1 failed"),
        "the summary: {text}\n{err}"
    );
    assert!(!err.contains("error"), "{err}");
}

/// Lines that look like log records: `[2026-… INFO  module] …`.
fn log_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.starts_with('[') && (l.contains(" INFO ") || l.contains(" DEBUG ")))
        .collect()
}

#[test]
fn redmap_run_prints_only_the_result_summary_without_log_lines() {
    let dir = util::TempDir::new("quiet");
    let job = example("sum.rs");
    // The second run finds its build in the cache, which was logged at INFO.
    for _ in 0..2 {
        let out = util::run_job(&dir, &[&job], &[]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(stderr(&out), "", "nothing but the summary");
        let text = stdout(&out);
        assert!(
            text.starts_with("sum: finished — 10 tasks") && text.ends_with("result: 65\n"),
            "{text}"
        );
    }
    // -v (anywhere on the line) shows the logs again.
    for args in [vec!["-v", &job], vec![&job, "--verbose"]] {
        let out = util::run_job(&dir, &args, &[]);
        assert!(out.status.success(), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(
            log_lines(&err).iter().any(|l| l.contains("cached build")),
            "{err}"
        );
    }
    let out = util::run(
        redmap()
            .args(["-vv", "run", &job])
            .current_dir(dir.path())
            .env("REDMAP_CACHE_DIR", dir.join("cache")),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !log_lines(&stderr(&out)).is_empty(),
        "-vv: {}",
        stderr(&out)
    );
}

#[test]
fn a_server_prints_its_listening_line_once() {
    for kind in ["worker", "manager"] {
        let mut cmd = redmap();
        cmd.args([kind, "start", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut lines =
            std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
        let first = lines.next().expect("a line").unwrap();
        assert!(
            first.starts_with(&format!("redmap {kind} listening on 127.0.0.1:")),
            "{first}"
        );
        let second = lines.next().expect("the HTTP address").unwrap();
        assert!(second.contains("http://127.0.0.1:"), "{second}");
        util::signal(child.id(), "TERM");
        let out = child.wait_with_output().unwrap();
        let err = stderr(&out);
        let everything = format!("{first}\n{second}\n{}{err}", stdout(&out));
        assert_eq!(
            everything.matches("listening").count(),
            1,
            "{kind}: {everything}"
        );
        assert_eq!(
            everything.matches("http://").count(),
            1,
            "{kind}: {everything}"
        );
        // Servers still log at info: e.g. that they stopped.
        assert!(err.contains(" INFO "), "{kind}: {err}");
    }
}

#[test]
fn run_json_detach_prints_json() {
    let cluster = util::Cluster::start(1, &[], &[]);
    let out = util::run(cluster.cli(&[
        "run",
        "-m",
        &cluster.manager.addr_arg(),
        "--name",
        "detached",
        "--detach",
        "--json",
        &example("sum.rs"),
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with(r#"{"id":1,"name":"detached","status":""#) && text.ends_with("}\n"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 1, "{text}");
    assert_eq!(stderr(&out), "", "nothing for a person on stderr");
    // Without --json: the id alone on stdout.
    let out = util::run(cluster.cli(&[
        "run",
        "-m",
        &cluster.manager.addr_arg(),
        "--detach",
        &example("sum.rs"),
    ]));
    assert_eq!(stdout(&out), "2\n");
}

#[test]
fn every_manager_command_takes_the_manager_by_flag_env_or_position() {
    let cluster = util::Cluster::start(1, &[], &[]);
    let addr = cluster.manager.addr_arg();
    let out = util::run(cluster.cli(&["run", "-m", &addr, &example("sum.rs")]));
    assert!(out.status.success(), "{}", stderr(&out));
    let dead = dead_addr();
    // Each form, with $REDMAP_MANAGER unset, or naming a dead manager to
    // show that the command line wins.
    let check = |args: &[&str], env: Option<&str>, expect: &str| {
        let mut cmd = redmap();
        cmd.args(args);
        match env {
            Some(v) => cmd.env("REDMAP_MANAGER", v),
            None => cmd.env_remove("REDMAP_MANAGER"),
        };
        let out = util::run(cmd);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).contains(expect), "{args:?}: {}", stdout(&out));
    };
    let row = "finished  10/10 (100%)";
    check(&["jobs", "list", &addr], None, row);
    check(&["jobs", "list", &addr], Some(&dead), row);
    check(&["jobs", "list", "-m", &addr], None, row);
    check(&["jobs", "list", "--manager", &addr], Some(&dead), row);
    check(&["jobs", "list"], Some(&addr), row);
    let status = "status: finished";
    check(&["jobs", "stats", &addr, "1"], None, status);
    check(&["jobs", "stats", &addr, "1"], Some(&dead), status);
    check(&["jobs", "stats", "-m", &addr, "1"], None, status);
    check(&["jobs", "stats", "1", "-m", &addr], Some(&dead), status);
    check(&["jobs", "stats", "1"], Some(&addr), status);
    let summary = "finished — 10 tasks";
    check(&["jobs", "watch", &addr, "1"], None, summary);
    check(&["jobs", "watch", "-m", &addr, "1"], None, summary);
    check(&["jobs", "watch", "1"], Some(&addr), summary);
    let stats = format!("{addr}  1/0/0/1");
    check(&["manager", "stats", &addr], None, &stats);
    check(&["manager", "stats", &addr], Some(&dead), &stats);
    check(&["manager", "stats", "-m", &addr], None, &stats);
    check(&["manager", "stats"], Some(&addr), &stats);
    // `redmap run` finds the manager in the environment too.
    let mut cmd = cluster.cli(&["run", "--detach", &example("sum.rs")]);
    let out = util::run(&mut cmd);
    assert_eq!(stdout(&out), "2\n", "{}", stderr(&out));

    // Two different managers: a clear error, not a guess.
    for args in [
        vec!["jobs", "list", &addr, "-m", &dead],
        vec!["jobs", "stats", &addr, "1", "-m", &dead],
        vec!["manager", "stats", "-m", &dead, &addr],
    ] {
        let out = util::run(redmap().args(&args));
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            stderr(&out).contains("two managers given"),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn run_sends_a_library_in_chunks_that_fit_the_managers_max_size() {
    // The C tutorial job is about 16 KB; this manager takes 8 KiB frames,
    // while `redmap run` itself takes the default 200 MiB.
    let dir = util::TempDir::new("small-manager");
    let lib = util::cc_shared(&dir, &util::repo().join("examples/sum.c"), "sum.so");
    assert!(std::fs::metadata(&lib).unwrap().len() > 8192);
    let manager = util::start_manager(&["--max-size", "8192"], &[], dir.path());
    let out = util::run_job(
        &dir,
        &["-m", &manager.addr_arg(), "--detach", lib.to_str().unwrap()],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "1\n");
}

/// Without a terminal, the progress line is written when the job's state
/// changes and once a minute. A job whose tasks all fail changes its newest
/// error at every poll: that used to write a line each time (27 lines for a
/// 3 s job); a failing task is not a change of state.
#[test]
fn failing_tasks_do_not_flood_a_log_with_progress_lines() {
    let cluster = util::Cluster::start(1, &["--max-retries", "0"], &[]);
    let lib = crate::field::sized_job(
        &cluster.dir,
        "failing.so",
        &["-DTASKS=150", "-DSLOW_MS=20", "-DFAIL_LEN=30"],
    );
    let out = util::run(cluster.cli(&["run", lib.to_str().unwrap()]));
    let err = stderr(&out);
    let summary = stdout(&out);
    assert!(summary.contains("150 failed"), "{summary}\n{err}");
    let lines = err.lines().filter(|l| l.contains("/150 (")).count();
    assert!(lines <= 1, "{lines} progress lines:\n{err}");
}
