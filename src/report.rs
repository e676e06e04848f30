//! Reports for scripts and monitors: the JSON the CLI prints with
//! `--json` (and `/api/status` serves), and the Prometheus text exposition
//! of `/metrics`. One place renders each, so the CLI, the web monitor and
//! the metrics cannot disagree.

use std::fmt::{self, Write as _};
use std::time::Duration;

use crate::cli::output::Json;
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

/// A job as JSON, for `--json`, `/api/status` and the monitor page.
/// `done`, `total` and `percent` are its [`Progress`].
pub fn job_json(j: &JobSummary) -> Json {
    let p = progress(j);
    let result = std::str::from_utf8(&j.result_preview)
        .ok()
        .filter(|_| j.result_len == j.result_preview.len() as u64);
    Json::Object(vec![
        ("id", Json::Int(j.id)),
        ("name", Json::str(&j.name)),
        ("status", Json::str(j.status.name())),
        ("estimate", j.estimate.map_or(Json::Null, Json::Int)),
        ("loaded", Json::Int(j.loaded)),
        ("processed", Json::Int(j.processed)),
        ("failed", Json::Int(j.failed)),
        ("retried", Json::Int(j.retried)),
        ("running", Json::Int(j.running)),
        ("elapsed_ms", Json::Int(j.elapsed_ms)),
        ("tasks_per_sec", Json::Float(throughput(j))),
        ("load_errors", Json::Int(j.load_errors)),
        ("reduce_errors", Json::Int(j.reduce_errors)),
        ("result_len", Json::Int(j.result_len)),
        ("result", result.map_or(Json::Null, Json::str)),
        (
            "errors",
            Json::Array(j.errors.iter().map(Json::str).collect()),
        ),
        ("backups", Json::Int(j.backups)),
        ("backups_won", Json::Int(j.backups_won)),
        ("duplicates", Json::Int(j.duplicates)),
        ("waiting_for_workers", Json::Bool(j.waiting_for_workers)),
        ("done", Json::Int(p.done)),
        ("total", p.total.map_or(Json::Null, Json::Int)),
        ("percent", p.percent.map_or(Json::Null, Json::Float)),
    ])
}

pub fn stats_json(s: &ManagerStats) -> Json {
    Json::Object(vec![
        ("address", Json::str(&s.address)),
        (
            "workers",
            Json::Object(vec![
                ("active", Json::Int(s.workers_active.into())),
                ("failing", Json::Int(s.workers_failing.into())),
                ("terminated", Json::Int(s.workers_terminated.into())),
                ("total", Json::Int(s.workers_total.into())),
            ]),
        ),
        (
            "jobs",
            Json::Object(vec![
                ("waiting", Json::Int(s.jobs_waiting.into())),
                ("running", Json::Int(s.jobs_running.into())),
                ("failed", Json::Int(s.jobs_failed.into())),
                ("completed", Json::Int(s.jobs_completed.into())),
                ("cancelled", Json::Int(s.jobs_cancelled.into())),
            ]),
        ),
        (
            "tasks_per_sec",
            Json::Float(s.tasks_per_sec_milli as f64 / 1000.0),
        ),
        ("tasks_processed", Json::Int(s.tasks_processed)),
        ("bytes_in", Json::Int(s.bytes_in)),
        ("bytes_out", Json::Int(s.bytes_out)),
        ("uptime_ms", Json::Int(s.uptime_ms)),
        ("duplicates", Json::Int(s.duplicates)),
        ("backups", Json::Int(s.backups)),
        ("backups_won", Json::Int(s.backups_won)),
    ])
}

/// One worker as the manager sees it, for `/api/status`.
#[derive(Debug, Clone)]
pub struct WorkerView {
    pub address: String,
    pub state: &'static str,
    pub connections: usize,
    pub in_flight: usize,
    pub installed_jobs: usize,
    pub tasks_processed: u64,
    pub tasks_per_sec: f64,
    pub last_error: Option<String>,
}

pub fn worker_json(w: &WorkerView) -> Json {
    Json::Object(vec![
        ("address", Json::str(&w.address)),
        ("state", Json::str(w.state)),
        ("connections", Json::Int(w.connections as u64)),
        ("batches_in_flight", Json::Int(w.in_flight as u64)),
        ("installed_jobs", Json::Int(w.installed_jobs as u64)),
        ("tasks_processed", Json::Int(w.tasks_processed)),
        ("tasks_per_sec", Json::Float(w.tasks_per_sec)),
        (
            "last_error",
            w.last_error.as_deref().map_or(Json::Null, Json::str),
        ),
    ])
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

/// A server's info, as `redmap worker info --json` prints it (and a
/// worker's `/api/status` serves it).
pub fn info_json(queried: &str, info: &Info) -> Json {
    Json::Object(vec![
        ("queried", Json::str(queried)),
        ("reachable", Json::Bool(true)),
        ("version", Json::str(&info.version)),
        ("address", Json::str(&info.address)),
        ("protocol", Json::Int(info.protocol.into())),
        ("active_jobs", Json::Int(info.active_jobs.into())),
        ("installed_jobs", Json::Int(info.installed_jobs.into())),
        ("uptime_ms", Json::Int(info.uptime_ms)),
        ("tasks_processed", Json::Int(info.tasks_processed)),
    ])
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
        let text = job_json(&job(JobStatus::Running, Some(30), 30, 23, 4)).render();
        assert!(text.contains(r#""processed":23"#), "{text}");
        assert!(
            text.contains(r#""done":27,"total":30,"percent":90"#),
            "{text}"
        );
        let text = job_json(&job(JobStatus::Running, None, 3, 1, 0)).render();
        assert!(
            text.contains(r#""done":1,"total":null,"percent":null"#),
            "{text}"
        );
    }
}
