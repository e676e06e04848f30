//! Field faults: what users and hostile peers hit first (issue 10). Each
//! test is one story from the field, told against real processes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use redmap::net::{Client, Timeouts};
use redmap::proto::msg::{JobSummary, JobsPage, JobsQuery, RunJob};
use redmap::proto::Message;

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

fn client(addr: &str) -> Client {
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
    let mut raw = Vec::new();
    Message::JobsListRequest(query).encode_payload(&mut raw);
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
    // Every value is 300 kB and a value folding n of them n times that: at
    // most two fit in one batch's result.
    let lib = sized_job(&dir, "wide.so", &["-DTASKS=40", "-DWIDE=300000"]);
    let library = std::fs::read(lib).unwrap();
    let manager = start_manager(&["--max-size", "1000000"], &[], dir.path());
    let w1 = start_worker(&[]);
    attach(&manager, &[&w1]);
    let summary = run_once(&manager.addr_arg(), &library);
    assert_eq!((summary.processed, summary.failed), (40, 0), "{summary:?}");
    assert_eq!(
        std::fs::read_to_string(dir.join("result")).unwrap().trim(),
        "40"
    );
}
