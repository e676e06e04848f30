//! Running a job inside one process (the embedded mode of `redmap run`),
//! through the real plugin boundary and with the same shape as a cluster
//! run: `load` is pulled on the calling thread into batches; map threads map
//! each task and fold the batch with `reduce` into one partial accumulator,
//! as workers will; one thread folds the partials as they arrive; then
//! `done` gets the result. It is also the in-process baseline of the
//! benchmarks.
//!
//! Failures do not stop the job (the original's contract): a failed task, a
//! load error or a failed reduce is counted and recorded, and `done` runs
//! with the accumulator of everything that succeeded.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::plugin::fold::{fold_batch, task_label, FailedIn, ValueLimit};
use crate::plugin::{CallError, Plugin};
use crate::proto::msg::{JobStatus, JobSummary};

/// At most this many errors are kept with their messages; the rest are counted.
pub const MAX_KEPT_ERRORS: usize = 20;

#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Map threads.
    pub threads: usize,
    /// A batch closes at this many tasks…
    pub batch_tasks: usize,
    /// …or this many bytes of task payload.
    pub batch_bytes: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            threads: thread::available_parallelism().map_or(1, |n| n.get()),
            batch_tasks: 1024,
            batch_bytes: 1024 * 1024,
        }
    }
}

/// Where an error happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    Load,
    /// Mapping a task, named by its label (see `task_label`).
    Map(String),
    /// Folding a task's value into its batch's accumulator, named by its
    /// label like a cluster run names it: the task is known here, and the
    /// message is the one a worker's reduce failure gets.
    Fold(String),
    /// Folding a batch's partial into the result: no one task to name.
    Reduce,
    Done,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError {
    pub stage: Stage,
    pub message: String,
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.stage {
            Stage::Load => write!(f, "load: {}", self.message),
            Stage::Map(label) => write!(f, "{label}: {}", self.message),
            Stage::Fold(label) => write!(f, "{label}: reduce: {}", self.message),
            Stage::Reduce => write!(f, "reduce: {}", self.message),
            Stage::Done => write!(f, "done: {}", self.message),
        }
    }
}

/// Errors with a bound on how many are kept.
#[derive(Debug, Default, Clone)]
pub struct ErrorLog {
    pub kept: Vec<JobError>,
    pub total: u64,
}

impl ErrorLog {
    pub fn push(&mut self, stage: Stage, err: &CallError) {
        self.total += 1;
        if self.kept.len() < MAX_KEPT_ERRORS {
            self.kept.push(JobError {
                stage,
                message: err.message.clone(),
            });
        }
    }

    fn merge(&mut self, other: ErrorLog) {
        self.total += other.total;
        let room = MAX_KEPT_ERRORS.saturating_sub(self.kept.len());
        self.kept.extend(other.kept.into_iter().take(room));
    }
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Report {
    /// Tasks `load` yielded.
    pub tasks: u64,
    /// Tasks mapped and folded into the result.
    pub processed: u64,
    /// Tasks whose map (or whose fold into the batch) failed.
    pub failed: u64,
    pub load_errors: u64,
    pub reduce_errors: u64,
    /// `done` failed (its message is in `errors`).
    pub done_failed: bool,
    pub errors: ErrorLog,
    /// The final accumulator handed to `done`.
    pub result: Vec<u8>,
    pub elapsed: Duration,
    pub threads: usize,
}

impl Report {
    /// True when every task succeeded and nothing else failed.
    pub fn clean(&self) -> bool {
        self.failed == 0 && self.load_errors == 0 && self.reduce_errors == 0 && !self.done_failed
    }

    /// How the run ended, by the rule the manager uses too.
    pub fn status(&self) -> JobStatus {
        let errors = self.load_errors + self.reduce_errors;
        JobStatus::at_end(self.done_failed, self.processed, self.failed, errors)
    }

    pub fn tasks_per_sec(&self) -> f64 {
        self.tasks as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A running job's counters, readable from another thread while it runs
/// (for the progress line). Updated once per batch, not per task.
#[derive(Debug, Default)]
pub struct Counts {
    /// Tasks `load` yielded so far.
    pub loaded: AtomicU64,
    /// Tasks mapped and folded into the result so far.
    pub processed: AtomicU64,
    /// Tasks failed so far.
    pub failed: AtomicU64,
}

impl Counts {
    /// The counters as a running cluster job's summary, so the embedded
    /// run shows the progress line of a cluster run.
    pub fn summary(&self, name: &str, estimate: Option<u64>, elapsed: Duration) -> JobSummary {
        JobSummary {
            id: 0,
            name: name.to_owned(),
            status: JobStatus::Running,
            estimate,
            loaded: self.loaded.load(Ordering::Relaxed),
            processed: self.processed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            ..JobSummary::default()
        }
    }
}

struct Batch {
    first_index: u64,
    tasks: Vec<Vec<u8>>,
}

/// One batch, mapped and folded.
struct Partial {
    value: Option<Vec<u8>>,
    processed: u64,
    failed: u64,
    errors: ErrorLog,
}

/// Maps and folds one batch, as a worker does.
fn map_batch(plugin: &Plugin, batch: &Batch) -> Partial {
    // In one process a value goes nowhere over the wire: no size limit.
    let folded = fold_batch(
        plugin,
        batch.tasks.iter().map(Vec::as_slice),
        &ValueLimit::none(),
    );
    let mut errors = ErrorLog::default();
    for f in &folded.failures {
        let task = batch
            .tasks
            .get(f.index as usize)
            .map_or(&[][..], Vec::as_slice);
        let label = task_label(batch.first_index + u64::from(f.index) + 1, task);
        let stage = match f.stage {
            FailedIn::Map | FailedIn::TooLarge | FailedIn::Deferred => Stage::Map(label),
            FailedIn::Reduce => Stage::Fold(label),
        };
        errors.push(stage, &f.error);
    }
    Partial {
        value: folded.value,
        processed: u64::from(folded.processed),
        failed: folded.failures.len() as u64,
        errors,
    }
}

fn map_thread(
    plugin: Arc<Plugin>,
    batches: Arc<std::sync::Mutex<Receiver<Batch>>>,
    out: SyncSender<Partial>,
) {
    loop {
        // Hold the lock only to take a batch, never while mapping.
        let next = batches.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let Ok(batch) = next else {
            return;
        };
        if out.send(map_batch(&plugin, &batch)).is_err() {
            return;
        }
    }
}

/// Folds partials as they arrive; returns the accumulator and the tallies.
fn fold_thread(
    plugin: Arc<Plugin>,
    partials: Receiver<Partial>,
    counts: Arc<Counts>,
) -> (Vec<u8>, u64, u64, u64, ErrorLog) {
    let mut acc: Vec<u8> = Vec::new();
    let (mut processed, mut failed, mut reduce_errors) = (0, 0, 0);
    let mut errors = ErrorLog::default();
    for p in partials {
        failed += p.failed;
        errors.merge(p.errors);
        if let Some(value) = p.value {
            match plugin.reduce(&acc, &value) {
                Ok(next) => {
                    acc = next;
                    processed += p.processed;
                }
                Err(e) => {
                    // The batch's tasks were mapped but cannot be counted in.
                    reduce_errors += 1;
                    failed += p.processed;
                    errors.push(Stage::Reduce, &e);
                }
            }
        }
        counts.processed.store(processed, Ordering::Relaxed);
        counts.failed.store(failed, Ordering::Relaxed);
    }
    (acc, processed, failed, reduce_errors, errors)
}

/// Runs `plugin` to completion in this process.
pub fn run(plugin: &Arc<Plugin>, opts: Options) -> Report {
    run_counted(plugin, opts, &Arc::new(Counts::default()))
}

/// [`run`], keeping `counts` up to date as it goes.
pub fn run_counted(plugin: &Arc<Plugin>, opts: Options, counts: &Arc<Counts>) -> Report {
    let started = Instant::now();
    let threads = opts.threads.max(1);
    // Bounded: load is pulled only as fast as the map threads drain it.
    let (batch_tx, batch_rx) = mpsc::sync_channel::<Batch>(threads * 2);
    let (partial_tx, partial_rx) = mpsc::sync_channel::<Partial>(threads * 2);
    let batch_rx = Arc::new(std::sync::Mutex::new(batch_rx));
    let mappers: Vec<_> = (0..threads)
        .map(|_| {
            let (plugin, rx, tx) = (
                Arc::clone(plugin),
                Arc::clone(&batch_rx),
                partial_tx.clone(),
            );
            thread::spawn(move || map_thread(plugin, rx, tx))
        })
        .collect();
    drop(partial_tx);
    let folder = {
        let (plugin, counts) = (Arc::clone(plugin), Arc::clone(counts));
        thread::spawn(move || fold_thread(plugin, partial_rx, counts))
    };

    let mut load_log = ErrorLog::default();
    let mut tasks = 0u64;
    let mut load_errors = 0u64;
    match plugin.tasks() {
        Err(e) => {
            load_errors += 1;
            load_log.push(Stage::Load, &e);
        }
        Ok(iter) => {
            let mut batch = Batch {
                first_index: 0,
                tasks: Vec::new(),
            };
            let mut bytes = 0;
            // Items `load` yielded so far, errors included: a batch's
            // first_index + i + 1 is its task's number as the user counts
            // it, so a batch is cut at each load error.
            let mut yielded = 0u64;
            for item in iter {
                yielded += 1;
                let full = match item {
                    Ok(task) => {
                        bytes += task.len();
                        batch.tasks.push(task);
                        tasks += 1;
                        batch.tasks.len() >= opts.batch_tasks || bytes >= opts.batch_bytes
                    }
                    Err(e) => {
                        load_errors += 1;
                        let e = CallError {
                            message: format!("task {yielded}: {}", e.message),
                            ..e
                        };
                        load_log.push(Stage::Load, &e);
                        !batch.tasks.is_empty()
                    }
                };
                if full {
                    let full = std::mem::replace(
                        &mut batch,
                        Batch {
                            first_index: yielded,
                            tasks: Vec::new(),
                        },
                    );
                    bytes = 0;
                    counts.loaded.store(tasks, Ordering::Relaxed);
                    if batch_tx.send(full).is_err() {
                        break;
                    }
                } else if batch.tasks.is_empty() {
                    batch.first_index = yielded;
                }
            }
            counts.loaded.store(tasks, Ordering::Relaxed);
            if !batch.tasks.is_empty() {
                let _ = batch_tx.send(batch);
            }
        }
    }
    drop(batch_tx);
    for m in mappers {
        let _ = m.join();
    }
    let (result, processed, failed, reduce_errors, mut errors) = folder
        .join()
        .unwrap_or_else(|_| (Vec::new(), 0, tasks, 0, ErrorLog::default()));
    load_log.merge(errors);
    errors = load_log;
    let done_failed = match plugin.done(&result) {
        Ok(()) => false,
        Err(e) => {
            errors.push(Stage::Done, &e);
            true
        }
    };
    Report {
        tasks,
        processed,
        failed,
        load_errors,
        reduce_errors,
        done_failed,
        errors,
        result,
        elapsed: started.elapsed(),
        threads,
    }
}
