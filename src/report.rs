//! Reports for scripts and monitors: the JSON the CLI prints with
//! `--json` (and `/api/status` serves), and the Prometheus text exposition
//! of `/metrics`. One place renders each, so the CLI, the web monitor and
//! the metrics cannot disagree.

use std::fmt::Write as _;

use crate::cli::output::Json;
use crate::proto::msg::{Info, JobSummary, ManagerStats};

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

pub fn job_json(j: &JobSummary) -> Json {
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
