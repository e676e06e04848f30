//! A manager and workers, as a user runs them: the original's tutorial, a
//! million tasks with bounded connections and flat memory, an exact
//! wordcount, and the mistakes users make.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::util::{self, connections_to, repo, stderr, stdout, text_session, Cluster, Rng};

fn example(name: &str) -> String {
    repo().join("examples").join(name).display().to_string()
}

#[test]
fn the_tutorial_runs_a_job_on_two_workers_and_leaves_65() {
    let cluster = Cluster::start(2, &[], &[]);
    let manager = cluster.manager.addr_arg();
    let out = util::run(cluster.cli(&[
        "run",
        "--manager",
        &manager,
        "--name",
        "test-job",
        &example("sum.rs"),
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(cluster.result(), "65");
    let summary = stdout(&out);
    assert!(summary.contains("test-job: finished"), "{summary}");
    assert!(summary.contains("10 processed, 0 failed"), "{summary}");
    assert!(summary.contains("result: 65"), "{summary}");

    let list = stdout(&util::run(cluster.cli(&["jobs", "list", &manager])));
    let row = list.lines().nth(1).unwrap_or_default();
    assert!(row.starts_with("1 ") && row.contains("test-job"), "{list}");
    assert!(
        row.contains("finished") && row.contains("10/10 (100%)"),
        "{list}"
    );

    let stats = stdout(&util::run(
        cluster.cli(&["manager", "stats", "--json", &manager]),
    ));
    assert!(stats.contains("\"completed\":1"), "{stats}");
    assert!(stats.contains("\"active\":2"), "{stats}");
    assert!(stats.contains("\"tasks_processed\":10"), "{stats}");

    let job = stdout(&util::run(cluster.cli(&["jobs", "stats", "1"])));
    assert!(job.contains("status: finished"), "{job}");
    assert!(job.contains("processed: 10\n"), "{job}");

    // The workers did the mapping, and the libraries were uninstalled after.
    let info = stdout(&util::run(cluster.cli(&[
        "worker",
        "info",
        "--json",
        &cluster.workers[0].addr_arg(),
        &cluster.workers[1].addr_arg(),
    ])));
    let processed: u64 = info
        .split("\"tasks_processed\":")
        .skip(1)
        .map(|s| {
            s.split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert_eq!(processed, 10, "{info}");
}

#[test]
fn the_manager_text_session_answers_ping_stats_and_jobs() {
    let cluster = Cluster::start(1, &[], &[]);
    let addr = cluster.manager.addr;
    assert_eq!(text_session(addr, "ping\n"), "pong\n");
    assert_eq!(text_session(addr, "jobs\n"), "no jobs\n");
    let out = util::run(cluster.cli(&[
        "run",
        "-m",
        &addr.to_string(),
        "-n",
        "tiny",
        &example("sum.rs"),
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        text_session(addr, "jobs\n"),
        "1\ttiny\tfinished\t10/10 (100%)\n"
    );
    let stats = text_session(addr, "stats\n");
    assert!(stats.contains("workers_active: 1\n"), "{stats}");
    assert!(stats.contains("jobs_completed: 1\n"), "{stats}");
    assert!(text_session(addr, "info\n").contains("known commands: ping, stats, jobs"));
}

#[test]
fn a_million_tasks_finish_exactly_with_bounded_connections_and_flat_memory() {
    let cluster = Cluster::start(2, &["--max-connections", "3"], &[]);
    let manager = cluster.manager.addr_arg();
    let ports: Vec<u16> = cluster.workers.iter().map(|w| w.addr.port()).collect();
    let mut job = cluster.cli(&["run", "-m", &manager, &example("sum.rs"), "--", "1000000"]);
    let child = job
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    // Sample connections and memory while the job runs.
    let started = Instant::now();
    let mut max_conns = vec![0usize; ports.len()];
    let mut early_rss = None;
    let mut client = redmap::net::Client::connect(
        &manager,
        redmap::net::Timeouts::new(Duration::from_secs(5), Duration::from_secs(5)),
        1 << 20,
    )
    .unwrap();
    loop {
        for (i, port) in ports.iter().enumerate() {
            max_conns[i] = max_conns[i].max(connections_to(cluster.manager.pid(), *port));
        }
        if early_rss.is_none() {
            if let Ok(redmap::proto::Message::JobStats(j)) =
                client.request(&redmap::proto::Message::JobStatsRequest(1))
            {
                if j.processed >= 10_000 {
                    early_rss = Some(cluster.manager.rss_kib());
                }
            }
        }
        let done = std::fs::metadata(cluster.dir.join("result")).is_ok();
        if done || started.elapsed() > Duration::from_secs(120) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(cluster.result(), "500001500000");
    for (i, n) in max_conns.iter().enumerate() {
        assert!(*n >= 1, "no connection to worker {i} was ever seen");
        assert!(
            *n <= 3,
            "{n} connections to worker {i}, more than --max-connections 3"
        );
    }
    let end_rss = cluster.manager.rss_kib();
    if let Some(early) = early_rss {
        assert!(
            end_rss <= early + 8 * 1024,
            "manager RSS grew from {early} KiB (10,000 tasks) to {end_rss} KiB"
        );
    }
}

/// Each task sleeps 1.2 s, and the job gives no count: nothing tells the
/// manager beforehand that its tasks are slow.
const LONG_TASKS: &str = r#"
use redmap::job::{Error, Job, Tasks};
struct Long;
fn num(b: &[u8]) -> Result<u64, Error> {
    if b.is_empty() { return Ok(0); }
    Ok(std::str::from_utf8(b)?.parse()?)
}
impl Job for Long {
    fn load(&self) -> Tasks { Box::new((1..=12u64).map(|n| Ok(n.to_string().into_bytes()))) }
    fn map(&self, t: &[u8]) -> Result<Vec<u8>, Error> {
        std::thread::sleep(std::time::Duration::from_millis(1200));
        Ok(t.to_vec())
    }
    fn reduce(&self, a: &[u8], c: &[u8]) -> Result<Vec<u8>, Error> {
        Ok((num(a)? + num(c)?).to_string().into_bytes())
    }
    fn done(&self, r: &[u8]) -> Result<(), Error> { std::fs::write("result", r)?; Ok(()) }
}
redmap::export_job!(Long);
"#;

#[test]
fn tasks_longer_than_the_read_timeout_are_not_mistaken_for_a_dead_worker() {
    let dir = util::TempDir::new("long");
    let src = dir.write("long.rs", LONG_TASKS);
    let cluster = Cluster::start(2, &["--read-timeout", "1s"], &[]);
    let manager = cluster.manager.addr_arg();
    let out = util::run(cluster.cli(&["run", "-m", &manager, src.to_str().unwrap()]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(cluster.result(), "78");

    // No batch was taken away from a busy worker: nothing was redone, so
    // no answer came twice.
    let job = util::job_summary(&manager, 1).expect("job stats");
    assert_eq!(
        (job.failed, job.retried, job.duplicates),
        (0, 0, 0),
        "{job:?}"
    );
    // Small batches spread the slow tasks over both workers.
    for worker in &cluster.workers {
        let info = redmap::net::Client::connect(
            &worker.addr_arg(),
            redmap::net::Timeouts::new(Duration::from_secs(5), Duration::from_secs(5)),
            1 << 20,
        )
        .and_then(|mut c| c.info())
        .expect("worker info");
        assert!(
            info.tasks_processed > 0,
            "{} did no task",
            worker.addr_arg()
        );
    }
}

#[test]
fn wordcount_over_megabytes_matches_a_direct_count() {
    let dir = util::TempDir::new("wc-text");
    let mut rng = Rng(42);
    let vocabulary: Vec<String> = (0..400).map(|i| format!("w{}x{}", i, i * 7 % 13)).collect();
    let mut text = String::new();
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    while text.len() < 3 * 1024 * 1024 {
        let n = 1 + rng.below(12);
        for _ in 0..n {
            // Skewed, so counts differ: low indices are far more frequent.
            let spread = rng.below(400) + 1;
            let k = rng.below(spread);
            let w = &vocabulary[k];
            text.push_str(w);
            text.push(' ');
            *expected.entry(w.clone()).or_default() += 1;
        }
        text.push('\n');
    }
    let file = dir.write("big.txt", &text);
    let cluster = Cluster::start(2, &[], &[]);
    let out = util::run(
        cluster.cli(&[
            "run",
            "-m",
            &cluster.manager.addr_arg(),
            &repo()
                .join("tests/jobs/wordcount_bytes.rs")
                .display()
                .to_string(),
            "--",
            file.to_str().unwrap(),
            "2000",
            "1000",
        ]),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let mut got: BTreeMap<String, u64> = BTreeMap::new();
    for line in cluster.result().lines() {
        let (n, w) = line.split_once(' ').unwrap();
        got.insert(w.to_owned(), n.parse().unwrap());
    }
    assert_eq!(got, expected);
}

#[test]
fn user_mistakes_get_clear_messages_and_the_manager_keeps_working() {
    let cluster = Cluster::start(1, &[], &[]);
    let worker = cluster.workers[0].addr_arg();

    let out = util::run(cluster.cli(&["manager", "attach", &worker]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("already attached"),
        "{}",
        stderr(&out)
    );
    // By name too (the manager looks names up off its event loop).
    let by_name = worker.replace("127.0.0.1", "localhost");
    let out = util::run(cluster.cli(&["manager", "attach", &by_name]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("already attached"),
        "{}",
        stderr(&out)
    );

    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let out = util::run(cluster.cli(&["manager", "attach", &dead]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot reach worker"),
        "{}",
        stderr(&out)
    );

    let out = util::run(cluster.cli(&["manager", "detach", &dead]));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no worker"), "{}", stderr(&out));

    let out = util::run(cluster.cli(&["jobs", "stats", "999"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no job with id 999"),
        "{}",
        stderr(&out)
    );

    let out = util::run(cluster.cli(&["jobs", "stats", "-m", &dead, "1"]));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("cannot reach the manager") && err.contains("hint:"),
        "{err}"
    );

    // Still working: a job runs to the end.
    let out =
        util::run(cluster.cli(&["run", "-m", &cluster.manager.addr_arg(), &example("sum.rs")]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(cluster.result(), "65");

    // And a detach of the real worker works.
    let out = util::run(cluster.cli(&["manager", "detach", &worker]));
    assert!(out.status.success(), "{}", stderr(&out));
    let stats = stdout(&util::run(cluster.cli(&[
        "manager",
        "stats",
        "--json",
        &cluster.manager.addr_arg(),
    ])));
    assert!(stats.contains("\"terminated\":1"), "{stats}");
}

#[test]
fn detach_waits_for_work_in_flight_and_the_other_worker_finishes_the_job() {
    let cluster = Cluster::start(2, &[], &[]);
    let manager = cluster.manager.addr_arg();
    let job = cluster
        .cli(&["run", "-m", &manager, &example("sum.rs"), "--", "2000000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Detach while the job is under way.
    let mut client = redmap::net::Client::connect(
        &manager,
        redmap::net::Timeouts::new(Duration::from_secs(5), Duration::from_secs(5)),
        1 << 20,
    )
    .unwrap();
    let started = Instant::now();
    let mut processed_at_detach = 0;
    while started.elapsed() < util::WAIT {
        if let Ok(redmap::proto::Message::JobStats(j)) =
            client.request(&redmap::proto::Message::JobStatsRequest(1))
        {
            if j.processed > 0 {
                processed_at_detach = j.processed;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(processed_at_detach > 0, "the job never started");
    let out = util::run(cluster.cli(&["manager", "detach", &cluster.workers[0].addr_arg()]));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = job.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(cluster.result(), "2000003000000");
    assert!(
        processed_at_detach < 2_000_000,
        "the job was over before the detach"
    );
    // Detached means let go: the manager holds no connection to it.
    let port = cluster.workers[0].addr.port();
    let started = Instant::now();
    while connections_to(cluster.manager.pid(), port) > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the manager still holds {} connections to the detached worker",
            connections_to(cluster.manager.pid(), port)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn jobs_watch_follows_a_job_to_its_summary() {
    let cluster = Cluster::start(2, &[], &[]);
    let manager = cluster.manager.addr_arg();
    let out = util::run(cluster.cli(&[
        "run",
        "-m",
        &manager,
        "--detach",
        &example("sum.rs"),
        "--",
        "2000000",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).trim().to_owned();
    assert_eq!(id, "1");
    let out = util::run(cluster.cli(&["jobs", "watch", &id]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("finished — 2000000 tasks"),
        "{}",
        stdout(&out)
    );
    assert_eq!(cluster.result(), "2000003000000");
}

/// `redmap cluster start --workers 2`: a manager and two workers in one
/// command, attached; a job runs on them; Ctrl-C (SIGINT) stops them all
/// and the command exits 0.
#[test]
fn cluster_start_runs_a_manager_and_workers_until_ctrl_c() {
    use std::io::BufRead;
    let dir = util::TempDir::new("cluster-start");
    let manager = format!("127.0.0.1:{}", util::free_low_port());
    let mut child = util::redmap()
        .args(["cluster", "start", &manager, "--workers", "2"])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn redmap cluster start");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    while !lines
        .iter()
        .any(|l: &String| l.starts_with("run a job with"))
    {
        lines.push(
            rx.recv_timeout(util::WAIT)
                .expect("what cluster start started"),
        );
    }
    assert_eq!(lines[0], format!("manager {manager}"));
    let workers: Vec<String> = lines[1]
        .strip_prefix("workers ")
        .expect("the workers' line")
        .split(' ')
        .map(str::to_owned)
        .collect();
    assert_eq!(workers.len(), 2);
    // The workers are attached: a job runs on them.
    let sum = dir.join("sum.rs");
    std::fs::copy(util::repo().join("examples/sum.rs"), &sum).unwrap();
    let out = util::run(
        util::redmap()
            .args(["run", "-m", &manager, sum.to_str().unwrap(), "--", "10"])
            .current_dir(dir.path())
            .env("REDMAP_CACHE_DIR", dir.join("cache")),
    );
    assert!(out.status.success(), "{}", util::stderr(&out));
    let stats = util::run(util::redmap().args(["manager", "stats", &manager, "--json"]));
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(stats["workers"]["active"], 2, "{stats}");
    // Ctrl-C: everything it started stops, and so does it.
    util::signal(child.id(), "INT");
    let deadline = std::time::Instant::now() + util::WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "cluster start did not stop"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    for addr in std::iter::once(&manager).chain(&workers) {
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "{addr} still listens after Ctrl-C"
        );
    }
}

/// A manager started on `addr` in `dir`, retrying the bind briefly (the
/// address of one just killed may still be closing).
fn manager_at(addr: &str, dir: &std::path::Path) -> util::Server {
    let deadline = Instant::now() + util::WAIT;
    loop {
        let mut cmd = util::redmap();
        cmd.args(["manager", "start", addr]).current_dir(dir);
        let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            util::spawn_server(cmd)
        }));
        match started {
            Ok(server) => return server,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => std::panic::resume_unwind(e),
        }
    }
}

/// `worker start --join`: a worker started before its manager attaches
/// itself once the manager appears, and again after the manager is killed
/// and started anew; a worker restarted elsewhere joins as well. Each time
/// the next job runs, with no `manager attach` by hand.
#[test]
fn workers_that_join_find_their_manager_and_find_it_again_after_a_restart() {
    let dir = util::TempDir::new("join");
    let addr = format!("127.0.0.1:{}", util::free_low_port());
    let workers = || util::manager_stats(&addr).map_or(0, |s| s.workers_active);
    let run_sum = |tasks: &str| {
        let mut cmd = util::redmap();
        cmd.args(["run", "-m", &addr, &example("sum.rs"), "--", tasks])
            .current_dir(dir.path())
            .env("REDMAP_CACHE_DIR", dir.join("cache"));
        let out = util::run(cmd);
        assert!(out.status.success(), "{}", stderr(&out));
    };
    let early = util::start_worker(&["--join", &addr]);
    std::thread::sleep(Duration::from_millis(1500)); // it tries, and fails
    let mut manager = manager_at(&addr, dir.path());
    assert!(
        util::eventually(util::WAIT, || workers() == 1),
        "the worker did not join"
    );
    run_sum("10");
    assert_eq!(std::fs::read_to_string(dir.join("result")).unwrap(), "65");

    // kill -9 of the manager, and a new one on its address.
    manager.child.kill().unwrap();
    manager.child.wait().unwrap();
    let _manager = manager_at(&addr, dir.path());
    assert!(
        util::eventually(util::WAIT, || workers() == 1),
        "the worker did not rejoin"
    );
    run_sum("20");
    assert_eq!(std::fs::read_to_string(dir.join("result")).unwrap(), "230");

    // Detached by the operator, it does not come back by itself, until
    // the operator attaches it again.
    let manager_cmd = |args: &[&str]| {
        let mut cmd = util::redmap();
        cmd.args(["manager"])
            .args(args)
            .args(["-m", &addr, &early.addr_arg()]);
        let out = util::run(cmd);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    };
    manager_cmd(&["detach"]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(workers(), 0, "a detached worker came back by itself");
    manager_cmd(&["attach"]);
    assert!(util::eventually(util::WAIT, || workers() == 1));

    // The worker killed and started again (on another port): it joins.
    let total = util::manager_stats(&addr).map_or(0, |s| s.workers_total);
    drop(early);
    let _late = util::start_worker(&["--join", &addr]);
    assert!(
        util::eventually(util::WAIT, || util::manager_stats(&addr)
            .is_some_and(|s| s.workers_active == 1 && s.workers_total == total + 1)),
        "the restarted worker did not join"
    );
    run_sum("30");
    assert_eq!(std::fs::read_to_string(dir.join("result")).unwrap(), "495");
}
