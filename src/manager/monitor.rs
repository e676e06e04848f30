//! What the manager shows of itself: its counters and rates, the answers to
//! INFO and MANAGER_STATS, job summaries, the `--http` pages (`/api/status`
//! and `/metrics`, rendered here and served by the HTTP thread), and the
//! text session.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::handler::Manager;
use super::job::Job;
use super::workers::{Install, WorkerState, Workers};
use crate::http::{Published, Shared};
use crate::net::{ConnId, Io};
use crate::proto::msg::{self, JobStatus, JobSummary, JobsQuery, ManagerStats};
use crate::proto::text::TextCommand;
use crate::proto::PROTOCOL_VERSION;
use crate::report::{self, Metrics, RttHistogram, WorkerView};

/// Ended jobs the monitor's page and `/api/status` show, newest first: what
/// a page renders each tick must not grow with the jobs kept.
const MONITOR_ENDED_JOBS: usize = 20;

/// Most often the monitor's data is rendered again.
const PUBLISH_EVERY: Duration = Duration::from_millis(250);

/// Ticks of throughput history the monitor's sparkline shows (5 minutes).
const HISTORY_TICKS: usize = 300;

/// How far back the tasks/s figure looks.
const RATE_WINDOW: Duration = Duration::from_secs(5);

/// The manager's own counters, rates and publishing state.
#[derive(Default)]
pub struct Monitor {
    pub duplicates: u64,
    pub backups: u64,
    pub backups_won: u64,
    pub tasks_processed: u64,
    /// Bytes received and sent on all connections, as of the last event.
    pub traffic: (u64, u64),
    pub rtt: RttHistogram,
    /// (time, tasks processed) at each tick within RATE_WINDOW.
    rate: VecDeque<(Instant, u64)>,
    /// Tasks per second at each tick, for the monitor's sparkline.
    history: VecDeque<f64>,
    /// Where the `--http` thread reads its pages, if there is one.
    published: Option<Shared>,
    last_published: Option<Instant>,
    /// Something happened since the last rendering, too soon after it to
    /// render again: the pages are rendered once PUBLISH_EVERY has passed.
    stale: bool,
}

impl Monitor {
    /// Samples the rates at the tick: each worker's, and the manager's.
    pub fn sample(&mut self, now: Instant, workers: &mut Workers) {
        for (_, wk) in workers.iter_mut() {
            let done = wk.processed.saturating_sub(wk.processed_at_tick);
            wk.tasks_per_sec = done as f64 / super::handler::TICK.as_secs_f64();
            wk.processed_at_tick = wk.processed;
        }
        self.rate.push_back((now, self.tasks_processed));
        while self
            .rate
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW)
        {
            self.rate.pop_front();
        }
        let rate = self.tasks_per_sec_milli() as f64 / 1000.0;
        self.history.push_back(rate);
        if self.history.len() > HISTORY_TICKS {
            self.history.pop_front();
        }
    }

    /// Tasks per second over the rate window, in thousandths.
    fn tasks_per_sec_milli(&self) -> u64 {
        let (Some(first), Some(last)) = (self.rate.front(), self.rate.back()) else {
            return 0;
        };
        let secs = last.0.duration_since(first.0).as_secs_f64();
        if secs > 0.0 {
            (last.1.saturating_sub(first.1) as f64 / secs * 1000.0) as u64
        } else {
            0
        }
    }

    /// Pages are served and were last rendered PUBLISH_EVERY ago or more.
    /// After an event at `now`: whether to render the pages now (they are
    /// served and were last rendered PUBLISH_EVERY ago or more). If not,
    /// they are marked stale, for [`Monitor::stale_until`].
    pub fn publish_due(&mut self, now: Instant) -> bool {
        if self.published.is_none() {
            return false;
        }
        let due = self
            .last_published
            .is_none_or(|t| now.duration_since(t) >= PUBLISH_EVERY);
        self.stale = !due;
        due
    }

    /// When stale pages may be rendered again: a job that ends just after
    /// a rendering shows on the pages PUBLISH_EVERY later, not at the next
    /// tick.
    pub fn stale_until(&self) -> Option<Instant> {
        self.last_published
            .filter(|_| self.stale)
            .map(|t| t + PUBLISH_EVERY)
    }
}

impl Manager {
    /// Serves pages from `shared` from now on (`--http`).
    pub fn publish_to(&mut self, shared: Shared) {
        self.monitor.published = Some(shared);
        self.next_tick = Instant::now(); // publish at once, not in a second
    }

    /// A job's summary, with what only the manager knows: tasks on
    /// workers, and whether the job is stuck for want of a worker.
    pub(super) fn summary(&self, job: &Job) -> JobSummary {
        let running = self.ledger.running_tasks(job.id());
        // Waiting: no active worker that has not refused its library.
        let hash = job.hash();
        let any_able = self.workers.active().any(|(_, w)| !w.refused(&hash));
        job.summary(running, job.is_running() && !any_able)
    }

    pub(super) fn stats(&self) -> ManagerStats {
        let m = &self.monitor;
        let mut s = ManagerStats {
            address: self.address.clone(),
            workers_terminated: self.workers.terminated(),
            tasks_processed: m.tasks_processed,
            bytes_in: m.traffic.0,
            bytes_out: m.traffic.1,
            uptime_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            duplicates: m.duplicates,
            backups: m.backups,
            backups_won: m.backups_won,
            tasks_per_sec_milli: m.tasks_per_sec_milli(),
            ..ManagerStats::default()
        };
        for w in self.workers.values() {
            match w.state() {
                WorkerState::Active | WorkerState::Detaching => s.workers_active += 1,
                WorkerState::Failing { .. } => s.workers_failing += 1,
                WorkerState::Connecting => {}
            }
            s.workers_total += 1;
        }
        s.workers_total += self.workers.terminated();
        for job in self.jobs.live() {
            match job.status() {
                JobStatus::Waiting => s.jobs_waiting += 1,
                _ => s.jobs_running += 1,
            }
        }
        let ended = |status: JobStatus| self.jobs.ended_with(status);
        s.jobs_completed = ended(JobStatus::Finished) + ended(JobStatus::FinishedWithFailures);
        s.jobs_failed = ended(JobStatus::Failed);
        s.jobs_cancelled = ended(JobStatus::Cancelled);
        s
    }

    pub(super) fn info(&self) -> msg::Info {
        // Each running job's executor, and the spare of a library.
        let (executors, executor_deaths) = crate::exec::host::counts();
        msg::Info {
            version: crate::VERSION.to_owned(),
            address: self.address.clone(),
            protocol: PROTOCOL_VERSION,
            active_jobs: self.jobs.running().len() as u32,
            installed_jobs: self.store.len() as u32,
            uptime_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            tasks_processed: self.monitor.tasks_processed,
            role: msg::Role::Manager,
            server_id: crate::net::server_id(),
            max_size: self.settings.max_size,
            manager: String::new(),
            memory_limit: self.settings.memory_limit,
            executors: u32::try_from(executors).unwrap_or(u32::MAX),
            executor_deaths,
        }
    }

    /// The workers as the monitor shows them.
    fn worker_views(&self) -> Vec<WorkerView> {
        self.workers
            .values()
            .map(|w| WorkerView {
                address: w.addr.clone(),
                state: w.state().name(),
                connections: w.conns.len(),
                in_flight: w.in_flight(),
                installed_jobs: w
                    .installed
                    .values()
                    .filter(|i| **i == Install::Done)
                    .count(),
                tasks_processed: w.processed,
                tasks_per_sec: w.tasks_per_sec,
                last_error: w.last_error.clone(),
            })
            .collect()
    }

    /// Renders `/api/status` and `/metrics` for the HTTP thread.
    pub(super) fn publish(&mut self, io: &mut Io<'_>) {
        let Some(shared) = self.monitor.published.clone() else {
            return;
        };
        self.monitor.last_published = Some(io.now());
        self.monitor.stale = false;
        let stats = self.stats();
        let workers = self.worker_views();
        // Live jobs and the newest ended ones: the page's cost per tick does
        // not grow with the ended jobs kept.
        let mut jobs: Vec<JobSummary> = self.jobs.live().map(|j| self.summary(j)).collect();
        jobs.extend(self.jobs.newest_ended(MONITOR_ENDED_JOBS).cloned());
        let history = self.monitor.history.iter().copied();
        let status = report::status_body(&stats, &workers, &jobs, history);
        let fresh = Published {
            status_json: status,
            metrics: self.metrics(io, &stats),
        };
        if let Ok(mut p) = shared.lock() {
            *p = fresh;
        };
    }

    /// The `/metrics` page: the common server metrics, then the manager's.
    fn metrics(&self, io: &mut Io<'_>, stats: &ManagerStats) -> String {
        let mut m = Metrics::default();
        let (failed, retried) = self.jobs.totals();
        m.counter(
            "redmap_tasks_processed_total",
            "Tasks mapped and folded into results.",
            stats.tasks_processed,
        );
        m.counter(
            "redmap_tasks_failed_total",
            "Tasks that failed for good.",
            failed,
        );
        m.counter("redmap_tasks_retried_total", "Task retries.", retried);
        m.server(io);
        m.counter(
            "redmap_duplicates_dropped_total",
            "Late batch results dropped by the exactly-once rule.",
            stats.duplicates,
        );
        m.counter(
            "redmap_backup_tasks_total",
            "Backup copies sent for straggling batches.",
            stats.backups,
        );
        m.labelled(
            "redmap_workers",
            "gauge",
            "Workers by state.",
            "state",
            &[
                ("active".into(), f64::from(stats.workers_active)),
                ("failing".into(), f64::from(stats.workers_failing)),
                ("terminated".into(), f64::from(stats.workers_terminated)),
            ],
        );
        let ended = |s: JobStatus| f64::from(self.jobs.ended_with(s));
        m.labelled(
            "redmap_jobs",
            "gauge",
            "Jobs by state.",
            "state",
            &[
                ("waiting".into(), f64::from(stats.jobs_waiting)),
                ("running".into(), f64::from(stats.jobs_running)),
                ("finished".into(), ended(JobStatus::Finished)),
                (
                    "finished_with_failures".into(),
                    ended(JobStatus::FinishedWithFailures),
                ),
                ("failed".into(), f64::from(stats.jobs_failed)),
                ("cancelled".into(), f64::from(stats.jobs_cancelled)),
            ],
        );
        m.gauge(
            "redmap_batches_in_flight",
            "Batches sent to workers and not answered.",
            self.ledger.len() as f64,
        );
        let rtt = &self.monitor.rtt;
        let counts = if rtt.counts.is_empty() {
            vec![0; report::RTT_BOUNDS.len() + 1]
        } else {
            rtt.counts.clone()
        };
        m.histogram(
            "redmap_batch_rtt_seconds",
            "Round trip of a batch to a worker and back.",
            report::RTT_BOUNDS,
            &counts,
            rtt.sum,
        );
        m.finish()
    }

    // ---- text session ----

    /// Answers one line of a text session (`nc host port`).
    pub(super) fn text(&mut self, io: &mut Io<'_>, _conn: ConnId, line: &str) -> String {
        if io.requires_auth() {
            return crate::proto::text::unauthenticated(line);
        }
        const KNOWN: &[TextCommand] = &[TextCommand::Ping, TextCommand::Stats, TextCommand::Jobs];
        match TextCommand::parse(line, KNOWN) {
            Ok(TextCommand::Ping) => "pong\n".to_owned(),
            Ok(TextCommand::Stats) => crate::proto::text::render_stats(&self.stats()),
            Ok(TextCommand::Jobs) => self.text_jobs(),
            Ok(_) => TextCommand::unknown(line, KNOWN),
            Err(reply) => reply,
        }
    }

    fn text_jobs(&self) -> String {
        let mut out = String::new();
        let page = self.jobs_page(JobsQuery::default());
        for job in page.jobs.iter().rev() {
            // The progress every other view shows (report::progress).
            let progress = report::progress(job);
            let _ = writeln!(
                out,
                "{}\t{}\t{}\t{progress}",
                job.id,
                job.name,
                job.status.name(),
            );
        }
        if out.is_empty() {
            out.push_str("no jobs\n");
        }
        out
    }
}
