//! Field faults: what users and hostile peers hit first (issue 10). Each
//! test is one story from the field, told against real processes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use redmap::net::{Client, ClientError, Timeouts};
use redmap::proto::msg::{JobSummary, JobsPage, JobsQuery, RunJob};
use redmap::proto::{ErrorCode, Message};

use crate::util::{self, eventually, start_manager, start_worker, Server, TempDir, WAIT};

/// tests/jobs/sized.c built with `defines` (`-DNAME=VALUE`), in `dir`.
pub fn sized_job(dir: &TempDir, out: &str, defines: &[&str]) -> PathBuf {
    let lib = dir.join(out);
    let status = util::redmap_cc()
        .args(defines)
        .arg("-o")
        .arg(&lib)
        .arg(util::repo().join("tests/jobs/sized.c"))
        .status()
        .expect("run cc");
    assert!(status.success(), "cc failed on sized.c {defines:?}");
    lib
}

pub fn client(addr: &str) -> Client {
    Client::connect(
        addr,
        Timeouts::new(Duration::from_secs(10), Duration::from_secs(10)),
        200 << 20,
    )
    .expect("connect to the manager")
}

/// Installs `library` on the manager and starts it `n` times; the job ids.
fn submit(addr: &str, library: &[u8], n: usize) -> Vec<u64> {
    let mut c = client(addr);
    match c.request(&util::install_whole(library)) {
        Ok(Message::InstallReply(r)) => assert!(r.complete),
        other => panic!("install: {other:?}"),
    }
    let hash = redmap::plugin::PluginHash::of(library).0;
    (0..n)
        .map(|i| {
            let run = RunJob {
                hash,
                name: format!("job-{i}"),
                args: Default::default(),
                options: Default::default(),
            };
            match c.request(&Message::RunJob(run)) {
                Ok(Message::JobAccepted(id)) => id,
                other => panic!("run: {other:?}"),
            }
        })
        .collect()
}

fn list(addr: &str, query: JobsQuery) -> (JobsPage, usize) {
    let mut c = client(addr);
    match c.request(&Message::JobsListRequest(query)) {
        Ok(Message::JobsList(page)) => {
            let mut bytes = Vec::new();
            Message::JobsList(page.clone()).encode_payload(&mut bytes);
            (page, bytes.len())
        }
        other => panic!("jobs list: {other:?}"),
    }
}

fn http_address(manager: &Server) -> SocketAddr {
    let line = manager.next_line().expect("the monitor's address");
    line.trim()
        .trim_start_matches("redmap monitor on http://")
        .trim_end_matches('/')
        .parse()
        .unwrap_or_else(|_| panic!("unexpected line {line:?}"))
}

/// A2: 450 jobs whose 10 tasks each fail with a 65,000-byte message. The
/// manager kept them all with their errors in full: after 120 jobs it was
/// at 388 MB, /api/status at 78 MB, and `jobs list` timed out at ~240.
#[test]
fn ended_jobs_with_huge_errors_keep_the_manager_small_and_its_lists_short() {
    let dir = TempDir::new("kept-errors");
    let lib = sized_job(&dir, "errs.so", &["-DFAIL_LEN=65000"]);
    let library = std::fs::read(lib).unwrap();
    let manager = start_manager(
        &[
            "--http",
            "127.0.0.1:0",
            "--max-retries",
            "0",
            "--max-jobs",
            "4",
        ],
        &[],
        dir.path(),
    );
    let http = http_address(&manager);
    let worker = start_worker(&[]);
    let addr = manager.addr_arg();
    let attach =
        util::run(util::redmap().args(["manager", "attach", "-m", &addr, &worker.addr_arg()]));
    assert!(attach.status.success(), "{}", util::stderr(&attach));
    let hwm_before = manager.hwm_kib();

    let ids = submit(&addr, &library, 450);
    let last = *ids.last().unwrap();
    assert!(
        eventually(Duration::from_secs(60), || util::job_summary(&addr, last)
            .is_some_and(|j| j.status.is_over())),
        "the last job did not end"
    );

    // Each kept error is cut to 1 KiB and says so.
    let newest = util::job_summary(&addr, last).unwrap();
    assert_eq!(newest.failed, 10);
    assert_eq!(newest.errors.len(), 10);
    for e in &newest.errors {
        assert!(e.len() <= 1024, "a kept error of {} bytes", e.len());
        assert!(
            e.ends_with("[cut, 65000 bytes in all]") || e.contains("bytes in all]"),
            "{e:.80}"
        );
    }

    // The list comes newest first, a bounded page at a time.
    let (page, bytes) = list(&addr, JobsQuery::default());
    assert_eq!(page.jobs.len(), 100);
    assert!(page.jobs.windows(2).all(|w| w[0].id > w[1].id));
    assert_eq!(page.jobs[0].id, last);
    assert!(page.more > 0);
    assert!(bytes < 2 << 20, "a JOBS_LIST of {bytes} bytes");

    // Paging back reaches the oldest kept job; what is kept is bounded in
    // bytes (4 MiB of summaries), so the first jobs are forgotten.
    let mut kept: Vec<JobSummary> = Vec::new();
    let mut query = JobsQuery {
        limit: 1000,
        before: 0,
    };
    loop {
        let (page, bytes) = list(&addr, query);
        assert!(bytes <= (1 << 20) + 16 * 1024, "a page of {bytes} bytes");
        query.before = page.jobs.last().map_or(0, |j| j.id);
        kept.extend(page.jobs);
        if page.more == 0 {
            break;
        }
    }
    let kept_bytes: usize = kept.iter().map(JobSummary::encoded_len).sum();
    assert!(
        kept_bytes <= 4 << 20,
        "{kept_bytes} bytes of summaries kept"
    );
    assert!(kept.len() < ids.len(), "all {} jobs kept", kept.len());
    assert!(
        util::job_summary(&addr, ids[0]).is_none(),
        "the first job is still kept"
    );

    // The monitor shows live jobs and the newest ended ones only.
    let (code, status) = util::http_get(http, "/api/status", None);
    assert_eq!(code, 200);
    assert!(
        status.len() < 512 * 1024,
        "/api/status is {} bytes",
        status.len()
    );

    // The CLI lists them all when asked, quickly.
    let out = util::run(util::redmap().args(["jobs", "list", &addr, "--all"]));
    assert!(out.status.success(), "{}", util::stderr(&out));
    assert_eq!(util::stdout(&out).lines().count(), kept.len() + 1);

    let grown = manager.hwm_kib().saturating_sub(hwm_before);
    assert!(grown < 64 * 1024, "the manager grew by {grown} KiB");

    // An idle manager stays idle, however many jobs it keeps.
    let cpu = manager.cpu_ticks();
    std::thread::sleep(Duration::from_secs(2));
    let used = manager.cpu_ticks() - cpu;
    assert!(used < 40, "an idle manager used {used} ticks in 2 s");
    let _ = WAIT;
}

/// Runs `library` as one job on `cluster`'s manager and waits for its end.
fn run_once(addr: &str, library: &[u8]) -> JobSummary {
    let id = submit(addr, library, 1)[0];
    let mut summary = None;
    assert!(
        eventually(WAIT, || {
            summary = util::job_summary(addr, id).filter(|j| j.status.is_over());
            summary.is_some()
        }),
        "job {id} did not end"
    );
    summary.unwrap()
}

fn attach(manager: &Server, workers: &[&Server]) {
    let mut cmd = util::redmap();
    cmd.args(["manager", "attach", "-m", &manager.addr_arg()]);
    cmd.args(workers.iter().map(|w| w.addr_arg()));
    let out = util::run(cmd);
    assert!(out.status.success(), "attach: {}", util::stderr(&out));
}

/// B5: a manager at --max-size 1,000,000 and a task whose map value is
/// 2 MB. The summary said "its worker died while running it, 5 times", the
/// worker was marked lost and its other batches resent. Now the task fails
/// once, naming the size and the limit, and no worker is blamed.
#[test]
fn a_value_over_the_managers_max_size_fails_its_task_once_and_blames_no_worker() {
    let dir = TempDir::new("big-value");
    let lib = sized_job(
        &dir,
        "big.so",
        &[
            "-DTASKS=2000",
            "-DBIG_TASK=7",
            "-DBIG_LEN=2000029",
            "-DFAIL_TASK=9",
        ],
    );
    let library = std::fs::read(lib).unwrap();
    let manager = start_manager(&["--max-size", "1000000"], &[], dir.path());
    let (w1, w2) = (start_worker(&[]), start_worker(&[]));
    attach(&manager, &[&w1, &w2]);
    let addr = manager.addr_arg();

    let summary = run_once(&addr, &library);
    assert_eq!(summary.failed, 2, "{summary:?}");
    assert_eq!(summary.processed, 1998, "{summary:?}");
    assert_eq!(
        summary.retried, 4,
        "only task 9's map error is retried: {summary:?}"
    );
    let big = summary
        .errors
        .iter()
        .find(|e| e.starts_with(r#"task 7 ("7"): "#))
        .unwrap_or_else(|| panic!("{:?}", summary.errors));
    assert!(
        big.contains("map value is 2,000,029 bytes, over the manager's --max-size of 1,000,000"),
        "{big}"
    );
    assert!(
        summary
            .errors
            .iter()
            .any(|e| e.starts_with(r#"task 9 ("9"): I don't like 9"#)),
        "{:?}",
        summary.errors
    );
    assert_eq!(std::fs::read_to_string(dir.join("result")).unwrap(), "1998");
    // No worker was lost or suspected: both stayed active throughout.
    let stats = util::manager_stats(&addr).unwrap();
    assert_eq!((stats.workers_active, stats.workers_failing), (2, 0));
    assert_eq!(stats.duplicates, 0);
}

/// B5's sibling: values that fit one by one but not folded together. The
/// batch's value is cut where it would pass the limit and the rest of the
/// batch goes out again: nothing fails, nothing is counted twice.
#[test]
fn values_that_only_together_pass_the_managers_max_size_are_split_over_batches() {
    let dir = TempDir::new("many-values");
    // Every value is 20 kB and a value folding n of them n times that: at
    // most 7 fit in one batch's result (149,936 bytes of the manager's
    // 200,000), while batches grow to 20 tasks (640 over 8 slots, 4 each):
    // the worker defers the tail of most batches.
    let lib = sized_job(&dir, "wide.so", &["-DTASKS=640", "-DWIDE=20000"]);
    let library = std::fs::read(lib).unwrap();
    let manager = start_manager(&["--max-size", "200000"], &[], dir.path());
    let w1 = start_worker(&[]);
    attach(&manager, &[&w1]);
    let summary = run_once(&manager.addr_arg(), &library);
    assert_eq!((summary.processed, summary.failed), (640, 0), "{summary:?}");
    assert_eq!(summary.retried, 0, "a deferred task is no failed attempt");
    let result = std::fs::read_to_string(dir.join("result")).unwrap();
    assert_eq!(result.trim(), "640");
    let stats = util::manager_stats(&manager.addr_arg()).unwrap();
    assert_eq!((stats.workers_failing, stats.duplicates), (0, 0));
}

/// `redmap manager attach -m MANAGER ADDR EXTRA…`.
fn attach_cmd(manager: &Server, target: &str, extra: &[&str]) -> std::process::Output {
    util::run(
        util::redmap()
            .args(["manager", "attach", "-m", &manager.addr_arg(), target])
            .args(extra),
    )
}

fn worker_info(worker: &Server) -> redmap::proto::msg::Info {
    let mut c = client(&worker.addr_arg());
    match c.request(&Message::InfoRequest) {
        Ok(Message::Info(info)) => info,
        other => panic!("info: {other:?}"),
    }
}

/// B7: attaching the manager's own address "succeeded" and its next job
/// logged 1,411 refusals in 4 s; an --http port hung 10 s and blamed the
/// manager; one worker could serve two managers at once.
#[test]
fn attach_takes_only_a_free_worker_and_says_what_it_found_instead() {
    let dir = TempDir::new("attach-checks");
    let manager = start_manager(&["--http", "127.0.0.1:0"], &[], dir.path());
    let http = http_address(&manager);
    let other = start_manager(&[], &[], dir.path());
    let worker = start_worker(&[]);

    let out = attach_cmd(&manager, &manager.addr_arg(), &[]);
    assert!(!out.status.success());
    assert!(
        util::stderr(&out).contains("is a redmap manager, not a worker"),
        "{}",
        util::stderr(&out)
    );

    let started = std::time::Instant::now();
    let out = attach_cmd(&manager, &http.to_string(), &[]);
    assert!(!out.status.success());
    assert!(
        util::stderr(&out).contains("not a redmap server"),
        "{}",
        util::stderr(&out)
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    let out = attach_cmd(&manager, "127.0.0.1:99999", &[]);
    assert!(!out.status.success());
    assert!(
        util::stderr(&out).contains("not a port number"),
        "{}",
        util::stderr(&out)
    );

    // One manager per worker: a second one is told whose it is...
    let out = attach_cmd(&manager, &worker.addr_arg(), &[]);
    assert!(out.status.success(), "{}", util::stderr(&out));
    assert_eq!(worker_info(&worker).manager, manager.addr_arg());
    let out = attach_cmd(&other, &worker.addr_arg(), &[]);
    assert!(!out.status.success());
    let err = util::stderr(&out);
    assert!(
        err.contains(&manager.addr_arg()) && err.contains("--force"),
        "{err}"
    );
    // ...and takes it only when told to.
    let out = attach_cmd(&other, &worker.addr_arg(), &["--force"]);
    assert!(out.status.success(), "{}", util::stderr(&out));
    assert_eq!(worker_info(&worker).manager, other.addr_arg());
    // The first manager sees it lost, with the reason, and does not spin
    // on refusals; the new one runs jobs on it.
    assert!(
        eventually(WAIT, || util::manager_stats(&manager.addr_arg())
            .is_some_and(|s| s.workers_failing == 1 && s.workers_active == 0)),
        "the old manager still counts the worker as its own"
    );
    let cpu = manager.cpu_ticks();
    std::thread::sleep(Duration::from_secs(1));
    assert!(manager.cpu_ticks() - cpu < 20, "the old manager spins");
    let job = std::fs::read(sized_job(&dir, "job.so", &[])).unwrap();
    let summary = run_once(&other.addr_arg(), &job);
    assert_eq!(summary.processed, 10, "{summary:?}");

    // The codes a client branches on: not a worker is WRONG_PEER (not
    // retriable), a bad address MALFORMED_PAYLOAD.
    let mut c = client(&manager.addr_arg());
    for (target, code) in [
        (http.to_string(), ErrorCode::WRONG_PEER),
        (manager.addr_arg(), ErrorCode::WRONG_PEER),
        ("127.0.0.1:99999".to_owned(), ErrorCode::MALFORMED_PAYLOAD),
        ("no-port".to_owned(), ErrorCode::MALFORMED_PAYLOAD),
    ] {
        let attach = Message::Attach(redmap::proto::msg::AttachWorker {
            addr: target.clone(),
            force: false,
            join: false,
        });
        match c.request(&attach) {
            Err(ClientError::Remote(e)) => assert_eq!(e.code, code, "{target}: {e}"),
            other => panic!("{target}: {other:?}"),
        }
    }
}

/// B7: a manager restarted at its address (killed, say) gets its worker
/// back at once, without --force and without waiting for the grace period.
#[test]
fn a_manager_restarted_at_its_address_gets_its_worker_back() {
    let dir = TempDir::new("restarted");
    let port = util::free_low_port();
    let address = format!("127.0.0.1:{port}");
    let start = || {
        let mut cmd = util::redmap();
        cmd.args(["manager", "start", &address])
            .current_dir(dir.path());
        util::spawn_server(cmd)
    };
    let mut manager = start();
    let worker = start_worker(&[]);
    attach(&manager, &[&worker]);
    manager.child.kill().unwrap();
    let _ = manager.child.wait();
    let manager = start();
    attach(&manager, &[&worker]);
    assert_eq!(worker_info(&worker).manager, address);
    let job = std::fs::read(sized_job(&dir, "job.so", &[])).unwrap();
    assert_eq!(run_once(&address, &job).processed, 10);
}

/// B7: one worker process reached as 127.0.0.1:P and [::1]:P is one worker.
#[test]
fn one_worker_reached_by_two_addresses_is_attached_once() {
    let dir = TempDir::new("twin");
    let manager = start_manager(&[], &[], dir.path());
    let worker = util::spawn_server({
        let mut cmd = util::redmap();
        cmd.args(["worker", "start", "[::]:0", "--insecure"]);
        cmd
    });
    if std::net::TcpStream::connect(("::1", worker.addr.port())).is_err() {
        eprintln!("SKIPPED: no IPv6 loopback here");
        return;
    }
    let port = worker.addr.port();
    let out = attach_cmd(&manager, &format!("127.0.0.1:{port}"), &[]);
    assert!(out.status.success(), "{}", util::stderr(&out));
    let out = attach_cmd(&manager, &format!("[::1]:{port}"), &[]);
    assert!(!out.status.success());
    let err = util::stderr(&out);
    assert!(err.contains("the same process"), "{err}");
    let stats = util::manager_stats(&manager.addr_arg()).unwrap();
    assert_eq!(stats.workers_active, 1);
}

/// B6: a worker at --max-size 4096 made the manager reconnect about once a
/// second for ever while `redmap run` showed `0/10 … waiting for workers`.
#[test]
fn a_worker_with_a_small_max_size_gets_chunks_and_batches_that_fit() {
    let dir = TempDir::new("small-worker");
    // Task 2000's payload alone (8,000 bytes) is more than the worker takes.
    let lib = sized_job(
        &dir,
        "many.so",
        &[
            "-DTASKS=3000",
            "-DBIG_INPUT_TASK=2000",
            "-DBIG_INPUT_LEN=8000",
        ],
    );
    let library = std::fs::read(lib).unwrap();
    assert!(library.len() > 4096, "the library must not fit one frame");
    let manager = start_manager(&[], &[], dir.path());
    let worker = start_worker(&["--max-size", "4096"]);
    attach(&manager, &[&worker]);
    let summary = run_once(&manager.addr_arg(), &library);
    assert_eq!(
        (summary.processed, summary.failed),
        (2999, 1),
        "{summary:?}"
    );
    assert_eq!(std::fs::read_to_string(dir.join("result")).unwrap(), "2999");
    let error = summary.errors.join("\n");
    assert!(
        error.contains("task 2000 (")
            && error.contains("the task is 8,000 bytes, over worker")
            && error.contains("--max-size of 4,096"),
        "{error}"
    );
    assert_eq!(summary.retried, 0);
    assert_eq!(worker_info(&worker).max_size, 4096);
}

/// B6: a worker that refuses a job's library leaves the reason in the job,
/// and a job no attached worker can take fails instead of waiting for ever.
#[test]
fn a_job_whose_library_every_worker_refuses_fails_with_the_reason() {
    let dir = TempDir::new("refused");
    // The job needs libdep.so, which only the manager's environment finds.
    let dep_dir = dir.join("dep");
    std::fs::create_dir_all(&dep_dir).unwrap();
    let dep_src = dir.write("dep.c", "int dep_value(void) { return 1; }\n");
    let status = util::redmap_cc()
        .arg("-o")
        .arg(dep_dir.join("libdep.so"))
        .arg(&dep_src)
        .status()
        .unwrap();
    assert!(status.success());
    let lib = sized_job(
        &dir,
        "needs-dep.so",
        &[
            "-Wl,--no-as-needed",
            "-L",
            dep_dir.to_str().unwrap(),
            "-ldep",
        ],
    );
    let library = std::fs::read(lib).unwrap();
    let manager = start_manager(
        &[],
        &[("LD_LIBRARY_PATH", dep_dir.to_str().unwrap())],
        dir.path(),
    );
    let worker = start_worker(&[]);
    attach(&manager, &[&worker]);
    let summary = run_once(&manager.addr_arg(), &library);
    assert_eq!(
        summary.status,
        redmap::proto::msg::JobStatus::Failed,
        "{summary:?}"
    );
    let errors = summary.errors.join("\n");
    assert!(errors.contains("refused the job's library"), "{errors}");
    assert!(errors.contains("libdep.so"), "{errors}");
    assert!(
        errors.contains("no attached worker can take the job"),
        "{errors}"
    );
}

/// A3: a killed manager left its library on every worker for ever. After
/// the grace period the worker uninstalls it and is free again.
#[test]
fn a_killed_managers_libraries_leave_its_worker_after_the_grace_period() {
    let dir = TempDir::new("orphaned");
    let lib = sized_job(&dir, "slow.so", &["-DTASKS=100000", "-DSLOW_MS=20"]);
    let library = std::fs::read(lib).unwrap();
    let mut manager = start_manager(&[], &[], dir.path());
    let worker = start_worker(&["--manager-grace", "3s"]);
    attach(&manager, &[&worker]);
    let worker_dir = std::env::temp_dir().join(format!("redmap-worker-{}", worker.pid()));
    let libraries = |d: &std::path::Path| {
        std::fs::read_dir(d).map_or(0, |e| {
            e.flatten()
                .filter(|f| f.path().extension().is_some())
                .count()
        })
    };
    submit(&manager.addr_arg(), &library, 1);
    assert!(
        eventually(WAIT, || worker_info(&worker).installed_jobs == 1),
        "the library never reached the worker"
    );
    assert_eq!(libraries(&worker_dir), 1);
    manager.child.kill().unwrap();
    let _ = manager.child.wait();
    // Within the grace period it still belongs to the dead manager...
    let other = start_manager(&[], &[], dir.path());
    let out = attach_cmd(&other, &worker.addr_arg(), &[]);
    assert!(!out.status.success(), "taken within the grace period");
    assert_eq!(libraries(&worker_dir), 1);
    // ...and then it is free, with nothing left behind.
    assert!(
        eventually(WAIT, || worker_info(&worker).installed_jobs == 0),
        "the library stayed"
    );
    assert_eq!(libraries(&worker_dir), 0);
    assert_eq!(worker_info(&worker).manager, "");
    let out = attach_cmd(&other, &worker.addr_arg(), &[]);
    assert!(out.status.success(), "{}", util::stderr(&out));
}

/// A3: 40 jobs, each a distinct library: the manager's copies and the
/// workers' are removed as each job ends; nothing piles up on disk.
#[test]
fn libraries_of_ended_jobs_do_not_pile_up_on_disk() {
    let dir = TempDir::new("distinct");
    let base = std::fs::read(sized_job(&dir, "base.so", &[])).unwrap();
    let manager = start_manager(&[], &[], dir.path());
    let worker = start_worker(&[]);
    attach(&manager, &[&worker]);
    let addr = manager.addr_arg();
    let (manager_before, worker_before) = (manager.hwm_kib(), worker.hwm_kib());
    for i in 0..40u32 {
        let mut library = base.clone();
        library.extend_from_slice(&i.to_be_bytes());
        let summary = run_once(&addr, &library);
        assert_eq!(summary.processed, 10);
    }
    let count = |label: &str, pid: u32| {
        let d = std::env::temp_dir().join(format!("redmap-{label}-{pid}"));
        std::fs::read_dir(d).map_or(0, |e| e.flatten().count())
    };
    assert!(
        eventually(WAIT, || count("worker", worker.pid()) == 0),
        "libraries stayed on the worker"
    );
    assert_eq!(
        count("manager", manager.pid()),
        0,
        "libraries stayed on the manager"
    );
    assert_eq!(worker_info(&worker).installed_jobs, 0);
    // What stays is each library's mapping (libraries are never unloaded:
    // code of theirs may still run), a few hundred KiB each, not its bytes
    // kept in memory or its file.
    for (who, before, after) in [
        ("manager", manager_before, manager.hwm_kib()),
        ("worker", worker_before, worker.hwm_kib()),
    ] {
        let per_job = after.saturating_sub(before) / 40;
        assert!(per_job < 1024, "the {who} grew by {per_job} KiB per job");
    }
}

/// E: a newcomer's reduce failed every task with `cannot parse integer from
/// empty string`, and each predictable failure was retried 4 times on a
/// fresh worker. A value reduce cannot fold fails once; a map error is
/// still retried.
#[test]
fn a_value_that_reduce_cannot_fold_fails_once_without_retries() {
    let dir = TempDir::new("bad-value");
    let lib = sized_job(&dir, "bad.so", &["-DTASKS=50", "-DBAD_VALUE_TASK=5"]);
    let library = std::fs::read(lib).unwrap();
    let manager = start_manager(&[], &[], dir.path());
    let worker = start_worker(&[]);
    attach(&manager, &[&worker]);
    let summary = run_once(&manager.addr_arg(), &library);
    assert_eq!((summary.processed, summary.failed), (49, 1), "{summary:?}");
    assert_eq!(summary.retried, 0, "{summary:?}");
    assert!(
        summary
            .errors
            .iter()
            .any(|e| e.starts_with(r#"task 5 ("5"): reduce: value is not a number"#)),
        "{:?}",
        summary.errors
    );
}

/// Sockets of process `pid` connected to or from `port` whose keepalive
/// timer runs (`/proc/net/tcp`'s timer field 2), and all of them.
fn keepalive_sockets(pid: u32, port: u16) -> (usize, usize) {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    l.strip_prefix("socket:[")?
                        .strip_suffix(']')
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    let (mut with, mut all) = (0, 0);
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 10 {
                continue;
            }
            let local_port = cols[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if cols[3] != "01" || local_port != Some(port) || !inodes.contains(&cols[9].to_owned())
            {
                continue;
            }
            all += 1;
            if cols[5].starts_with("02:") {
                with += 1;
            }
        }
    }
    (with, all)
}

/// A4: without a secret, 1,030 connections that sent nothing filled
/// --max-clients and locked everyone out for as long as they stayed. Now a
/// connection that has not sent a complete request is cut after the read
/// timeout, at most 64 such are kept (the oldest go first), and server
/// sockets have TCP keepalive.
#[test]
fn connections_that_never_send_a_request_cannot_lock_out_a_manager() {
    let dir = TempDir::new("idle-flood");
    let manager = start_manager(
        &["--max-clients", "100", "--read-timeout", "2s"],
        &[],
        dir.path(),
    );
    let addr = manager.addr;
    let idle: Vec<std::net::TcpStream> = (0..150)
        .filter_map(|_| std::net::TcpStream::connect(addr).ok())
        .collect();
    assert_eq!(idle.len(), 150);
    // A real client gets in at once.
    let started = std::time::Instant::now();
    let stats = util::manager_stats(&manager.addr_arg());
    assert!(stats.is_some(), "the manager locked out a real client");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The idle ones are cut within the read timeout.
    let mut open = idle;
    assert!(
        eventually(Duration::from_secs(10), || {
            open.retain_mut(|s| !util::is_closed(s));
            open.is_empty()
        }),
        "{} idle connections still open",
        open.len()
    );
    // A client that has spoken may stay idle, with keepalive on its socket.
    let mut c = client(&manager.addr_arg());
    assert!(matches!(c.request(&Message::Ping), Ok(Message::Pong)));
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        matches!(c.request(&Message::Ping), Ok(Message::Pong)),
        "an idle client was cut"
    );
    let (with, all) = keepalive_sockets(manager.pid(), addr.port());
    assert!(
        all >= 1 && with == all,
        "{with} of {all} server sockets have keepalive"
    );
}

/// A4's sibling on a worker, at the scale of the report: 1,030 silent
/// connections against the default --max-clients of 1024.
#[test]
fn a_thousand_silent_connections_cannot_lock_out_a_worker() {
    let worker = start_worker(&["--read-timeout", "2s"]);
    let idle: Vec<std::net::TcpStream> = (0..1030)
        .filter_map(|_| std::net::TcpStream::connect(worker.addr).ok())
        .collect();
    assert_eq!(idle.len(), 1030);
    let started = std::time::Instant::now();
    let info = worker_info(&worker);
    assert_eq!(info.role, redmap::proto::msg::Role::Worker);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The worker lets go of them: its descriptors fall back to a few dozen.
    assert!(
        eventually(Duration::from_secs(10), || worker.open_fds() < 40),
        "{} descriptors still open",
        worker.open_fds()
    );
    drop(idle);
}

/// C8: a job whose tasks failed, even all of them, ended as `finished` in
/// green, its empty result indistinguishable from a real one.
#[test]
fn a_job_with_failed_tasks_ends_in_a_state_that_says_so_everywhere() {
    let dir = TempDir::new("states");
    let some = std::fs::read(sized_job(&dir, "some.so", &["-DTASKS=20", "-DFAIL_TASK=3"])).unwrap();
    let all = std::fs::read(sized_job(&dir, "all.so", &["-DFAIL_LEN=100"])).unwrap();
    let clean = std::fs::read(sized_job(&dir, "clean.so", &[])).unwrap();
    let manager = start_manager(
        &["--http", "127.0.0.1:0", "--max-retries", "1"],
        &[],
        dir.path(),
    );
    let http = http_address(&manager);
    let worker = start_worker(&[]);
    attach(&manager, &[&worker]);
    let addr = manager.addr_arg();
    use redmap::proto::msg::JobStatus;
    assert_eq!(run_once(&addr, &clean).status, JobStatus::Finished);
    let partial = run_once(&addr, &some);
    assert_eq!(
        partial.status,
        JobStatus::FinishedWithFailures,
        "{partial:?}"
    );
    let nothing = run_once(&addr, &all);
    assert_eq!(nothing.status, JobStatus::Failed, "{nothing:?}");

    let out = util::run(util::redmap().args(["jobs", "list", &addr]));
    let table = util::stdout(&out);
    assert!(table.contains("finished with failures"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&nothing.id.to_string()) && l.contains("failed")),
        "{table}"
    );
    let out =
        util::run(util::redmap().args(["jobs", "stats", "-m", &addr, &partial.id.to_string()]));
    assert!(
        util::stdout(&out).contains("finished with failures"),
        "{}",
        util::stdout(&out)
    );

    // The monitor's data: the state and the errors, for the page to show.
    // (It is published at most every 250 ms and on each 1 s tick.)
    let mut status = String::new();
    assert!(
        eventually(Duration::from_secs(5), || {
            status = util::http_get(http, "/api/status", None).1;
            status.contains(r#""status":"finished with failures""#)
        }),
        "{status:.400}"
    );
    assert!(status.contains("I don't like 3"), "{status:.400}");
    let page = util::http_get(http, "/", None).1;
    assert!(
        page.contains("state-finished-with-failures"),
        "the page styles the state"
    );

    // The embedded run says the same.
    let lib = dir.join("some.so");
    let out = util::run(
        util::redmap()
            .args(["run"])
            .arg(&lib)
            .current_dir(dir.path()),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        util::stdout(&out).contains("finished with failures"),
        "{}",
        util::stdout(&out)
    );
}

/// A worker that answers every batch with a BATCH_RESULT whose payload
/// does not decode (a broken or hostile implementation). Before, the
/// manager answered it MALFORMED_PAYLOAD and its batch waited for ever.
fn garbling_worker() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let garbled = std::sync::Arc::new(AtomicUsize::new(0));
    let count = std::sync::Arc::clone(&garbled);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            let count = std::sync::Arc::clone(&count);
            std::thread::spawn(move || {
                while let Some(frame) = util::read_frame(&mut s) {
                    let id = frame.request_id;
                    let reply = match Message::decode(&frame) {
                        Ok(Message::Claim(_)) => util::frame_bytes(
                            id,
                            &Message::Claimed(redmap::proto::msg::Claimed {
                                worker_id: 0xbad,
                                max_size: 0,
                            }),
                        ),
                        Ok(Message::Ping) => util::frame_bytes(id, &Message::Pong),
                        Ok(Message::Install(i)) => util::frame_bytes(
                            id,
                            &Message::InstallReply(redmap::proto::msg::InstallReply {
                                complete: true,
                                next_offset: i.total,
                            }),
                        ),
                        Ok(Message::MapBatch(_)) => {
                            count.fetch_add(1, Ordering::SeqCst);
                            let payload = [1u8, 2, 3];
                            let mut header = [0u8; redmap::proto::HEADER_LEN];
                            redmap::proto::Header {
                                opcode: redmap::proto::Opcode::BatchResult.as_u8(),
                                request_id: id,
                                length: payload.len() as u32,
                                crc: crc32fast::hash(&payload),
                            }
                            .write(&mut header);
                            [&header[..], &payload].concat()
                        }
                        _ => continue,
                    };
                    if std::io::Write::write_all(&mut s, &reply).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, garbled)
}

/// A worker whose replies do not decode costs its connection, and its
/// batches go to the others: the job ends exact instead of hanging.
#[test]
fn a_worker_that_sends_malformed_results_is_dropped_and_its_batches_go_elsewhere() {
    let dir = TempDir::new("garbled");
    let lib = std::fs::read(sized_job(&dir, "job.so", &["-DTASKS=500"])).unwrap();
    // (Without backup copies, which would hide a batch left waiting.)
    let manager = start_manager(&["--no-backup-tasks"], &[], dir.path());
    let good = start_worker(&[]);
    let (bad, garbled) = garbling_worker();
    let out = attach_cmd(&manager, &bad.to_string(), &[]);
    assert!(out.status.success(), "{}", util::stderr(&out));
    attach(&manager, &[&good]);
    let summary = run_once(&manager.addr_arg(), &lib);
    assert_eq!((summary.processed, summary.failed), (500, 0), "{summary:?}");
    assert_eq!(std::fs::read_to_string(dir.join("result")).unwrap(), "500");
    assert!(
        garbled.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "the bad worker got no batch"
    );
}

/// The same two limits when the workers fold whole batches in one call
/// into the job (a version-3 byte-level job, tests/jobs/wide.rs): a value
/// over the manager's --max-size fails its task once, naming the limit,
/// and values that only together pass it are deferred, not failed.
#[test]
fn the_jobs_own_batch_call_keeps_the_managers_value_limits() {
    let cluster = util::Cluster::start(1, &["--max-size", "200000"], &[]);
    let job = util::repo()
        .join("tests/jobs/wide.rs")
        .display()
        .to_string();
    let out = util::run(cluster.cli(&["run", &job, "--", "640", "20000", "7", "300000"]));
    assert_eq!(out.status.code(), Some(1), "{}", util::stderr(&out));
    let text = util::stdout(&out);
    assert!(
        text.contains("640 tasks, 639 processed, 1 failed, 0 retried"),
        "{text}"
    );
    assert!(
        text.contains(
            r#"task 7 ("7"): map value is 300,000 bytes, over the manager's --max-size of 200,000"#
        ),
        "{text}"
    );
    assert_eq!(cluster.result(), "639");
}
