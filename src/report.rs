//! Reports for scripts and monitors: the JSON the CLI prints with
//! `--json` (and `/api/status` serves), and the Prometheus text exposition
//! of `/metrics`. One place renders each, so the CLI, the web monitor and
//! the metrics cannot disagree. The JSON views are `#[derive(Serialize)]`
//! structs, whose field order is the order of the keys; serde_json writes
//! them. This module serves the servers and the CLI alike, and imports
//! from neither.

use std::fmt::{self, Write as _};
use std::time::Duration;

use serde::{Serialize, Serializer};

use crate::proto::msg::{Info, JobStatus, JobSummary, ManagerStats};

/// A job that finished with every task done and no error of any kind:
/// what exit status 0 of `redmap run` and `redmap jobs watch` means.
pub fn job_clean(j: &JobSummary) -> bool {
    j.status == crate::proto::msg::JobStatus::Finished
        && j.failed == 0
        && j.load_errors == 0
        && j.reduce_errors == 0
}

/// Tasks per second over a job's life so far.
pub fn throughput(j: &JobSummary) -> f64 {
    (j.processed + j.failed) as f64 / (j.elapsed_ms.max(1) as f64 / 1000.0)
}

/// How far a job has come. Defined here once, so `redmap run`, `jobs
/// list|stats|watch`, the JSON, the text session and the monitor page
/// cannot show two numbers for the same job.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Tasks with an outcome: processed or failed (a failed task is as
    /// finished as a processed one; counting only the processed ones left
    /// jobs with failures short of 100%).
    pub done: u64,
    /// What `done` counts towards: the tasks loaded once the job is over
    /// (the estimate may have been wrong), otherwise the estimate, raised
    /// to the tasks loaded so far if it was too low. `None` while unknown.
    pub total: Option<u64>,
    /// `done` of `total` in percent, never above 100.
    pub percent: Option<f64>,
    /// Tasks per second over the job's life, only while it runs: a rate
    /// shown after the end would be stale.
    pub rate: Option<f64>,
    /// Time left at `rate`, while the job runs and its total is known.
    pub eta: Option<Duration>,
}

/// The one definition of a job's progress (see [`Progress`]).
pub fn progress(j: &JobSummary) -> Progress {
    let done = j.processed + j.failed;
    let total = match j.status {
        // Every task loaded has an outcome by then.
        JobStatus::Finished | JobStatus::FinishedWithFailures | JobStatus::Failed => Some(j.loaded),
        JobStatus::Cancelled => Some(j.estimate.map_or(j.loaded, |e| e.max(j.loaded))),
        JobStatus::Waiting | JobStatus::Running => {
            j.estimate.filter(|&e| e > 0).map(|e| e.max(j.loaded))
        }
    };
    let percent = total.map(|t| {
        if t == 0 {
            // Nothing to do: an empty job that ended is complete.
            if j.status.is_over() {
                100.0
            } else {
                0.0
            }
        } else {
            (done as f64 * 100.0 / t as f64).min(100.0)
        }
    });
    let rate = (j.status == JobStatus::Running).then(|| throughput(j));
    let eta = match (rate, total) {
        (Some(r), Some(t)) if r > 0.0 => {
            Some(Duration::from_secs_f64(t.saturating_sub(done) as f64 / r))
        }
        _ => None,
    };
    Progress {
        done,
        total,
        percent,
        rate,
        eta,
    }
}

impl fmt::Display for Progress {
    /// `done/total (pct%)`, or `done/?` while the total is unknown. The
    /// percentage is rounded down, so 100% means every task is done.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.total, self.percent) {
            (Some(t), Some(p)) => write!(f, "{}/{t} ({}%)", self.done, p.floor()),
            _ => write!(f, "{}/?", self.done),
        }
    }
}

/// Writes a float as the JSON has always shown it (Rust's `Display`):
/// `90` for a whole number, `0.5` otherwise, `null` when not finite.
/// Scripts and tests read `"percent":90`, which serde_json alone would
/// write `90.0`.
pub(crate) fn number<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
    // Below 2^53 every whole f64 is an exact i64, written alike.
    if x.is_finite() && x.fract() == 0.0 && x.abs() < 9.0e15 {
        s.serialize_i64(*x as i64)
    } else {
        // serde_json writes a non-finite float as null.
        s.serialize_f64(*x)
    }
}

/// [`number`] for a value that may be absent (`null`).
pub(crate) fn maybe_number<S: Serializer>(x: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match x {
        Some(x) => number(x, s),
        None => s.serialize_none(),
    }
}

/// [`number`] for each value of a sequence.
fn numbers<S: Serializer>(xs: &[f64], s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Number(#[serde(serialize_with = "number")] f64);
    s.collect_seq(xs.iter().map(|&x| Number(x)))
}

/// One line of JSON (no spaces, no newline): what every `--json` prints.
/// Serializing these views cannot fail (every map key is a string); were
/// it to, the line says so as JSON rather than ending the command.
pub fn to_json<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| {
        log::error!("cannot render JSON: {e}");
        "null".to_owned()
    })
}

/// A job as JSON, for `--json`, `/api/status` and the monitor page, in
/// this order of keys. `done`, `total` and `percent` are its [`Progress`].
#[derive(Debug, Serialize)]
pub struct JobJson<'a> {
    id: u64,
    name: &'a str,
    status: &'static str,
    estimate: Option<u64>,
    loaded: u64,
    processed: u64,
    failed: u64,
    retried: u64,
    running: u64,
    elapsed_ms: u64,
    #[serde(serialize_with = "number")]
    tasks_per_sec: f64,
    load_errors: u64,
    reduce_errors: u64,
    result_len: u64,
    /// The result as text when the preview holds all of it, else `null`.
    result: Option<&'a str>,
    errors: &'a [String],
    backups: u64,
    backups_won: u64,
    duplicates: u64,
    waiting_for_workers: bool,
    spills: u64,
    spilled_bytes: u64,
    /// A keyed job's shuffle (`null` for a byte-level job).
    shuffle: Option<ShuffleJson<'a>>,
    done: u64,
    total: Option<u64>,
    #[serde(serialize_with = "maybe_number")]
    percent: Option<f64>,
}

/// A job's shuffle as JSON: its counts, and each partition (where it is,
/// what it fetched and made).
#[derive(Debug, Serialize)]
pub struct ShuffleJson<'a> {
    partitions: u32,
    done: u32,
    shuffled_bytes: u64,
    remapped: u64,
    parts: Vec<PartJson<'a>>,
}

#[derive(Debug, Serialize)]
struct PartJson<'a> {
    partition: usize,
    state: &'static str,
    worker: &'a str,
    fetched_bytes: u64,
    output_bytes: u64,
    failures: u32,
}

impl<'a> ShuffleJson<'a> {
    fn new(s: &'a crate::proto::msg::shuffle::ShuffleView) -> ShuffleJson<'a> {
        ShuffleJson {
            partitions: s.partitions,
            done: s.done,
            shuffled_bytes: s.shuffled,
            remapped: s.remapped,
            parts: s
                .parts
                .iter()
                .enumerate()
                .map(|(partition, p)| PartJson {
                    partition,
                    state: p.state_name(),
                    worker: &p.worker,
                    fetched_bytes: p.fetched,
                    output_bytes: p.bytes,
                    failures: p.failures,
                })
                .collect(),
        }
    }
}

impl<'a> JobJson<'a> {
    /// The view of `j`.
    pub fn new(j: &'a JobSummary) -> JobJson<'a> {
        let p = progress(j);
        let result = std::str::from_utf8(&j.result_preview)
            .ok()
            .filter(|_| j.result_len == j.result_preview.len() as u64);
        JobJson {
            id: j.id,
            name: &j.name,
            status: j.status.name(),
            estimate: j.estimate,
            loaded: j.loaded,
            processed: j.processed,
            failed: j.failed,
            retried: j.retried,
            running: j.running,
            elapsed_ms: j.elapsed_ms,
            tasks_per_sec: throughput(j),
            load_errors: j.load_errors,
            reduce_errors: j.reduce_errors,
            result_len: j.result_len,
            result,
            errors: &j.errors,
            backups: j.backups,
            backups_won: j.backups_won,
            duplicates: j.duplicates,
            waiting_for_workers: j.waiting_for_workers,
            spills: j.spills,
            spilled_bytes: j.spilled_bytes,
            shuffle: (j.shuffle.partitions > 0).then(|| ShuffleJson::new(&j.shuffle)),
            done: p.done,
            total: p.total,
            percent: p.percent,
        }
    }
}

/// A manager's stats as JSON, for `manager stats --json` and the
/// `manager` part of `/api/status`.
#[derive(Debug, Serialize)]
pub struct StatsJson<'a> {
    address: &'a str,
    workers: WorkerCounts,
    jobs: JobCounts,
    #[serde(serialize_with = "number")]
    tasks_per_sec: f64,
    tasks_processed: u64,
    bytes_in: u64,
    bytes_out: u64,
    uptime_ms: u64,
    duplicates: u64,
    backups: u64,
    backups_won: u64,
}

/// The `workers` object of [`StatsJson`].
#[derive(Debug, Serialize)]
struct WorkerCounts {
    active: u32,
    failing: u32,
    terminated: u32,
    total: u32,
}

/// The `jobs` object of [`StatsJson`].
#[derive(Debug, Serialize)]
struct JobCounts {
    waiting: u32,
    running: u32,
    failed: u32,
    completed: u32,
    cancelled: u32,
}

impl<'a> StatsJson<'a> {
    /// The view of `s`.
    pub fn new(s: &'a ManagerStats) -> StatsJson<'a> {
        StatsJson {
            address: &s.address,
            workers: WorkerCounts {
                active: s.workers_active,
                failing: s.workers_failing,
                terminated: s.workers_terminated,
                total: s.workers_total,
            },
            jobs: JobCounts {
                waiting: s.jobs_waiting,
                running: s.jobs_running,
                failed: s.jobs_failed,
                completed: s.jobs_completed,
                cancelled: s.jobs_cancelled,
            },
            tasks_per_sec: s.tasks_per_sec_milli as f64 / 1000.0,
            tasks_processed: s.tasks_processed,
            bytes_in: s.bytes_in,
            bytes_out: s.bytes_out,
            uptime_ms: s.uptime_ms,
            duplicates: s.duplicates,
            backups: s.backups,
            backups_won: s.backups_won,
        }
    }
}

/// One worker as the manager sees it, for `/api/status`; serialized with
/// these keys in this order (`in_flight` as `batches_in_flight`).
#[derive(Debug, Clone, Serialize)]
pub struct WorkerView {
    /// The address it was attached under.
    pub address: String,
    /// Its state's name (`active`, `failing`, …).
    pub state: &'static str,
    /// Connections open to it.
    pub connections: usize,
    /// Batches sent to it and not answered yet.
    #[serde(rename = "batches_in_flight")]
    pub in_flight: usize,
    /// Job libraries installed on it.
    pub installed_jobs: usize,
    /// Tasks it has mapped for this manager.
    pub tasks_processed: u64,
    /// Its recent rate.
    #[serde(serialize_with = "number")]
    pub tasks_per_sec: f64,
    /// Why it last failed, if it did.
    pub last_error: Option<String>,
}

/// The body of a manager's `/api/status`: its stats, its workers, its live
/// and newest ended jobs (each as `jobs list --json` shows it), and the
/// throughput history of the monitor's sparkline, oldest first.
pub fn status_body(
    stats: &ManagerStats,
    workers: &[WorkerView],
    jobs: &[JobSummary],
    history: impl IntoIterator<Item = f64>,
) -> String {
    #[derive(Serialize)]
    struct Body<'a> {
        manager: StatsJson<'a>,
        workers: &'a [WorkerView],
        jobs: Vec<JobJson<'a>>,
        #[serde(serialize_with = "numbers")]
        throughput: Vec<f64>,
    }
    to_json(&Body {
        manager: StatsJson::new(stats),
        workers,
        jobs: jobs.iter().map(JobJson::new).collect(),
        throughput: history.into_iter().collect(),
    })
}

/// A server's info, as `redmap worker info --json` prints it (and a
/// worker's `/api/status` serves it).
#[derive(Debug, Serialize)]
pub struct InfoJson<'a> {
    queried: &'a str,
    /// Always true: an unreachable server has no info.
    reachable: bool,
    version: &'a str,
    address: &'a str,
    protocol: u8,
    active_jobs: u32,
    installed_jobs: u32,
    uptime_ms: u64,
    tasks_processed: u64,
    /// Bytes each executor process may allocate (0: not said).
    memory_limit: u64,
    executors: u32,
    executor_deaths: u64,
}

impl InfoJson<'_> {
    /// As one line of JSON.
    pub fn render(&self) -> String {
        to_json(self)
    }
}

/// The view of `info`, from the server queried at `queried`.
pub fn info_json<'a>(queried: &'a str, info: &'a Info) -> InfoJson<'a> {
    InfoJson {
        queried,
        reachable: true,
        version: &info.version,
        address: &info.address,
        protocol: info.protocol,
        active_jobs: info.active_jobs,
        installed_jobs: info.installed_jobs,
        uptime_ms: info.uptime_ms,
        tasks_processed: info.tasks_processed,
        memory_limit: info.memory_limit,
        executors: info.executors,
        executor_deaths: info.executor_deaths,
    }
}

/// Prometheus text exposition, built metric by metric.
#[derive(Default)]
pub struct Metrics {
    out: String,
}

impl Metrics {
    /// The metrics every server has, manager or worker: bytes in and out,
    /// failed handshakes and frames received by opcode, from the reactor.
    pub fn server(&mut self, io: &crate::net::Io<'_>) {
        let (bytes_in, bytes_out) = io.traffic();
        self.counter(
            "redmap_bytes_in_total",
            "Bytes received on all connections.",
            bytes_in,
        );
        self.counter(
            "redmap_bytes_out_total",
            "Bytes sent on all connections.",
            bytes_out,
        );
        self.counter(
            "redmap_auth_failures_total",
            "Failed authentication handshakes.",
            io.auth_failures(),
        );
        self.frames_by_opcode(&io.frames_in());
    }

    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.head(name, "counter", help);
        let _ = writeln!(self.out, "{name} {value}");
    }

    pub fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.head(name, "gauge", help);
        let _ = writeln!(self.out, "{name} {value}");
    }

    /// One metric with a label, one sample per (label value, value).
    pub fn labelled(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        label: &str,
        samples: &[(String, f64)],
    ) {
        self.head(name, kind, help);
        for (v, x) in samples {
            let _ = writeln!(self.out, "{name}{{{label}=\"{v}\"}} {x}");
        }
    }

    /// `redmap_frames_received_total{opcode="NAME"}` from the reactor's counts.
    pub fn frames_by_opcode(&mut self, frames: &[(u8, u64)]) {
        let samples: Vec<(String, f64)> = frames
            .iter()
            .map(|&(op, n)| {
                let name = crate::proto::Opcode::try_from(op).map_or("UNKNOWN", |o| o.name());
                (name.to_owned(), n as f64)
            })
            .collect();
        self.labelled(
            "redmap_frames_received_total",
            "counter",
            "Frames received, by opcode.",
            "opcode",
            &samples,
        );
    }

    /// A histogram from cumulative bucket counts (upper bounds in seconds).
    pub fn histogram(&mut self, name: &str, help: &str, bounds: &[f64], counts: &[u64], sum: f64) {
        self.head(name, "histogram", help);
        let mut cumulative = 0;
        for (le, n) in bounds.iter().zip(counts) {
            cumulative += n;
            let _ = writeln!(self.out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let total: u64 = counts.iter().sum();
        let _ = writeln!(self.out, "{name}_bucket{{le=\"+Inf\"}} {total}");
        let _ = writeln!(self.out, "{name}_sum {sum}");
        let _ = writeln!(self.out, "{name}_count {total}");
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// Upper bounds of the batch round-trip histogram, in seconds.
pub const RTT_BOUNDS: &[f64] = &[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0];

/// Batch round trips, bucketed for the histogram.
#[derive(Debug, Clone, Default)]
pub struct RttHistogram {
    pub counts: Vec<u64>,
    pub sum: f64,
}

impl RttHistogram {
    pub fn observe(&mut self, secs: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; RTT_BOUNDS.len() + 1];
        }
        let i = RTT_BOUNDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(RTT_BOUNDS.len());
        self.counts[i] += 1;
        self.sum += secs;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(
        status: JobStatus,
        estimate: Option<u64>,
        loaded: u64,
        processed: u64,
        failed: u64,
    ) -> JobSummary {
        JobSummary {
            id: 1,
            name: "j".into(),
            status,
            estimate,
            loaded,
            processed,
            failed,
            elapsed_ms: 2000,
            ..JobSummary::default()
        }
    }

    #[test]
    fn done_counts_processed_and_failed_tasks_alike() {
        // `jobs list` once showed 23/30 (90%): processed over the estimate,
        // but the percentage of processed + failed.
        let p = progress(&job(JobStatus::Running, Some(30), 30, 23, 4));
        assert_eq!(p.done, 27);
        assert_eq!(p.total, Some(30));
        assert_eq!(p.percent, Some(90.0));
        assert_eq!(p.to_string(), "27/30 (90%)");
    }

    #[test]
    fn a_finished_job_with_failures_is_at_100_percent() {
        // Load errors left fewer tasks than the estimate.
        let p = progress(&job(JobStatus::Finished, Some(30), 28, 25, 3));
        assert_eq!(p.percent, Some(100.0));
        assert_eq!(p.to_string(), "28/28 (100%)");
        let p = progress(&job(JobStatus::Failed, None, 10, 0, 10));
        assert_eq!(p.to_string(), "10/10 (100%)");
        let p = progress(&job(JobStatus::Finished, Some(0), 0, 0, 0));
        assert_eq!(p.to_string(), "0/0 (100%)");
    }

    #[test]
    fn progress_never_exceeds_100_percent() {
        // An estimate that was too low: the total follows the tasks loaded.
        let p = progress(&job(JobStatus::Running, Some(10), 40, 35, 0));
        assert_eq!(p.total, Some(40));
        assert!(p.percent.unwrap() <= 100.0);
        // Even counters that disagree cannot go past 100.
        let p = progress(&job(JobStatus::Running, Some(10), 10, 12, 3));
        assert_eq!(p.percent, Some(100.0));
        // Nearly done is not yet 100%.
        let p = progress(&job(JobStatus::Running, Some(1000), 1000, 999, 0));
        assert_eq!(p.to_string(), "999/1000 (99%)");
    }

    #[test]
    fn without_an_estimate_a_running_job_has_no_total() {
        let p = progress(&job(JobStatus::Running, None, 50, 20, 0));
        assert_eq!((p.total, p.percent), (None, None));
        assert_eq!(p.to_string(), "20/?");
        assert_eq!(p.eta, None);
    }

    #[test]
    fn rate_and_eta_only_while_running() {
        // 20 tasks in 2 s: 10 tasks/s, 80 left: 8 s.
        let p = progress(&job(JobStatus::Running, Some(100), 100, 20, 0));
        assert_eq!(p.rate, Some(10.0));
        assert_eq!(p.eta, Some(Duration::from_secs(8)));
        for status in [
            JobStatus::Waiting,
            JobStatus::Finished,
            JobStatus::Failed,
            JobStatus::Cancelled,
        ] {
            let p = progress(&job(status, Some(100), 100, 20, 0));
            assert_eq!((p.rate, p.eta), (None, None), "{status:?}");
        }
    }

    #[test]
    fn a_cancelled_job_shows_how_far_it_got() {
        let p = progress(&job(JobStatus::Cancelled, Some(100), 40, 30, 0));
        assert_eq!(p.to_string(), "30/100 (30%)");
    }

    #[test]
    fn job_json_carries_the_progress() {
        let text = to_json(&JobJson::new(&job(JobStatus::Running, Some(30), 30, 23, 4)));
        assert!(text.contains(r#""processed":23"#), "{text}");
        assert!(
            text.contains(r#""done":27,"total":30,"percent":90"#),
            "{text}"
        );
        let text = to_json(&JobJson::new(&job(JobStatus::Running, None, 3, 1, 0)));
        assert!(
            text.contains(r#""done":1,"total":null,"percent":null"#),
            "{text}"
        );
    }

    #[test]
    fn json_escapes_what_it_is_given() {
        let mut j = job(JobStatus::Running, None, 3, 1, 0);
        j.name = "x\"y\n\u{1}".into();
        j.errors = vec!["a\\b".into()];
        let text = to_json(&JobJson::new(&j));
        assert!(
            text.starts_with(r#"{"id":1,"name":"x\"y\n\u0001","status":"running""#),
            "{text}"
        );
        assert!(text.contains(r#""errors":["a\\b"]"#), "{text}");
    }

    #[test]
    fn status_body_has_the_shape_the_manager_published() {
        // The body /api/status serves: its keys, in order, and its numbers.
        let stats = ManagerStats {
            address: "127.0.0.1:1".into(),
            tasks_per_sec_milli: 2500,
            ..ManagerStats::default()
        };
        let workers = [WorkerView {
            address: "127.0.0.1:2".into(),
            state: "active",
            connections: 1,
            in_flight: 2,
            installed_jobs: 1,
            tasks_processed: 7,
            tasks_per_sec: 3.0,
            last_error: None,
        }];
        let jobs = [job(JobStatus::Running, Some(30), 30, 23, 4)];
        let history = [1.0, 2.5, f64::NAN];
        let body = status_body(&stats, &workers, &jobs, history);
        assert!(
            body.starts_with(r#"{"manager":{"address":"127.0.0.1:1","workers":{"active":0,"#),
            "{body}"
        );
        assert!(body.contains(r#""tasks_per_sec":2.5,"#), "{body}");
        assert!(body.contains(r#""batches_in_flight":2,"installed_jobs":1,"tasks_processed":7,"tasks_per_sec":3,"last_error":null}]"#), "{body}");
        assert!(body.contains(r#"],"jobs":[{"id":1,"#), "{body}");
        assert!(body.ends_with(r#""throughput":[1,2.5,null]}"#), "{body}");
    }
}
