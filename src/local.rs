//! Running a job inside one process (the embedded mode of `redmap run`),
//! through the real plugin boundary and with the same shape as a cluster
//! run: `load` is pulled on the calling thread into batches; map threads map
//! each task and fold the batch with `reduce` into one partial accumulator,
//! as workers will; one thread folds the partials as they arrive; then
//! `done` gets the result. It is also the in-process baseline of the
//! benchmarks: the same pipeline as a cluster run ([`crate::pipeline`]),
//! without the network.
//!
//! Failures do not stop the job (the original's contract): a failed task, a
//! load error or a failed reduce is counted and recorded, and `done` runs
//! with the accumulator of everything that succeeded.

use std::fmt;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::pipeline::{
    self, spread_cap, task_label, Batch, BatchLimits, FailedIn, Loaded, ValueLimit,
};
use crate::plugin::loader::JobKind;
use crate::plugin::{CallError, Instance};
use crate::proto::msg::{JobStatus, JobSummary};

/// At most this many errors are kept with their messages (the first 10 and
/// the latest 10, by the pipeline's rule); the rest are counted.
pub const MAX_KEPT_ERRORS: usize = 20;

/// A run's errors: see [`pipeline::ErrorLog`].
pub type ErrorLog = pipeline::ErrorLog<JobError>;

#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Map threads.
    pub threads: usize,
    /// A batch closes at this many tasks…
    pub batch_tasks: usize,
    /// …or once it holds this many bytes of tasks (payloads and 4 bytes
    /// per task, as [`pipeline::BatchLimits::bytes`] counts them).
    pub batch_bytes: usize,
    /// Call the job's `done` with the result (false: the caller takes the
    /// result from the report, for `--output`).
    pub call_done: bool,
    /// Bytes of a keyed job's runs the reduce holds before it spills to
    /// the system's temporary directory.
    pub reduce_memory: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            threads: thread::available_parallelism().map_or(1, |n| n.get()),
            batch_tasks: 1024,
            batch_bytes: 1024 * 1024,
            call_done: true,
            reduce_memory: pipeline::ReduceMemory::DEFAULT_BUDGET,
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
    /// What a keyed job's reduce spilled to disk past its memory.
    pub spills: crate::shuffle::SpillStats,
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

/// One batch, mapped and folded, on its way to the fold thread.
struct Partial {
    value: Option<Vec<u8>>,
    processed: u64,
    failed: u64,
    errors: ErrorLog,
}

impl pipeline::Partial for Partial {
    fn value(&self) -> Option<&[u8]> {
        self.value.as_deref()
    }
}

/// Maps and combines one batch of a keyed job in one call into the job,
/// and names its failures. If the call itself fails (the job panicked
/// while combining), every task of the batch fails with its error.
fn map_keyed_batch(plugin: &Instance, batch: &Batch) -> Partial {
    let mut errors = ErrorLog::new(MAX_KEPT_ERRORS);
    // Tasks are listed for labels only when some failed.
    let mut tasks: Vec<&[u8]> = Vec::new();
    let mut label = |index: usize| {
        if tasks.is_empty() {
            tasks = batch.tasks.iter().collect();
        }
        let task = tasks.get(index).copied().unwrap_or_default();
        task_label(batch.first_index + index as u64 + 1, task)
    };
    match plugin.map_batch(batch.tasks.as_bytes()) {
        Ok(mapped) => {
            let failed = mapped.failures.len() as u64;
            for (index, _panicked, message) in mapped.failures {
                errors.push(JobError {
                    stage: Stage::Map(label(index as usize)),
                    message,
                });
            }
            Partial {
                value: Some(mapped.pairs),
                processed: u64::from(mapped.processed),
                failed,
                errors,
            }
        }
        Err(e) => {
            for index in 0..batch.tasks.len() {
                errors.push(JobError {
                    stage: Stage::Map(label(index)),
                    message: e.message.clone(),
                });
            }
            Partial {
                value: None,
                processed: 0,
                failed: batch.tasks.len() as u64,
                errors,
            }
        }
    }
}

/// Maps and folds one batch, as a worker does, and names its failures.
fn map_batch(plugin: &Instance, batch: &Batch) -> Partial {
    if plugin.kind() == JobKind::Keyed {
        return map_keyed_batch(plugin, batch);
    }
    // In one process a value goes nowhere over the wire: no size limit.
    let folded = pipeline::map_batch(plugin, &batch.tasks, &ValueLimit::none());
    let failed = folded.failures.len() as u64;
    let mut errors = ErrorLog::new(MAX_KEPT_ERRORS);
    // Failures come by increasing index: one walk over the tasks names them.
    let mut tasks = batch.tasks.iter().enumerate();
    for f in folded.failures {
        let index = f.index as usize;
        let task = tasks.find(|(i, _)| *i == index).map_or(&[][..], |(_, t)| t);
        let label = task_label(batch.first_index + index as u64 + 1, task);
        let stage = match f.stage {
            FailedIn::Map | FailedIn::TooLarge | FailedIn::Deferred => Stage::Map(label),
            FailedIn::Reduce => Stage::Fold(label),
        };
        errors.push(JobError {
            stage,
            message: f.error.message,
        });
    }
    Partial {
        value: folded.value,
        processed: u64::from(folded.processed),
        failed,
        errors,
    }
}

/// What the fold thread counted.
struct Tally {
    processed: u64,
    failed: u64,
    reduce_errors: u64,
    errors: ErrorLog,
}

/// Folds partials as they arrive, then calls `done`.
fn fold_thread(
    plugin: &Instance,
    partials: mpsc::Receiver<Partial>,
    counts: &Counts,
    call_done: bool,
    reduce_memory: usize,
) -> (Tally, Option<pipeline::Ended>) {
    let mut tally = Tally {
        processed: 0,
        failed: 0,
        reduce_errors: 0,
        errors: ErrorLog::new(MAX_KEPT_ERRORS),
    };
    let never = AtomicBool::new(false);
    let fold = |p: Partial, outcome: Result<(), CallError>| {
        tally.failed += p.failed;
        tally.errors.merge(p.errors);
        match outcome {
            Ok(()) => tally.processed += p.processed,
            Err(e) => {
                // The batch's tasks were mapped but cannot be counted in.
                tally.reduce_errors += 1;
                tally.failed += p.processed;
                tally.errors.push(JobError {
                    stage: Stage::Reduce,
                    message: e.message,
                });
            }
        }
        counts.processed.store(tally.processed, Ordering::Relaxed);
        counts.failed.store(tally.failed, Ordering::Relaxed);
    };
    let finish = |result: &[u8]| match call_done {
        true => plugin.done(result),
        false => Ok(()),
    };
    let ended = match plugin.kind() {
        JobKind::Bytes => pipeline::fold_partials(plugin, partials, &never, fold, finish),
        JobKind::Keyed => {
            // The output is the report's result here: held whole.
            let memory = pipeline::ReduceMemory::new(reduce_memory, "embedded");
            let mut output = Vec::new();
            let reduced = pipeline::fold_runs(plugin, partials, &never, &memory, fold, |run| {
                output.extend_from_slice(run);
                Ok(())
            });
            reduced.map(|r| match r.outcome {
                Ok(()) => pipeline::Ended {
                    done: finish(&output),
                    result: output,
                    spills: r.spills,
                },
                // A reduce that failed made part of the output at most:
                // none of it is the job's.
                Err(e) => pipeline::Ended {
                    done: Err(e),
                    result: Vec::new(),
                    spills: r.spills,
                },
            })
        }
    };
    (tally, ended)
}

/// Runs `plugin` to completion in this process.
pub fn run(plugin: &Arc<Instance>, opts: Options) -> Report {
    run_counted(plugin, opts, &Arc::new(Counts::default()))
}

/// [`run`], keeping `counts` up to date as it goes.
pub fn run_counted(plugin: &Arc<Instance>, opts: Options, counts: &Arc<Counts>) -> Report {
    let started = Instant::now();
    let threads = opts.threads.max(1);
    // Bounded: load is pulled only as fast as the map threads drain it.
    let (batch_tx, batch_rx) = mpsc::sync_channel::<Batch>(threads * 2);
    let (partial_tx, partial_rx) = mpsc::sync_channel::<Partial>(threads * 2);
    let mappers = {
        let plugin = Arc::clone(plugin);
        let map = move |batch: Batch| match partial_tx.send(map_batch(&plugin, &batch)) {
            Ok(()) => ControlFlow::Continue(()),
            Err(_) => ControlFlow::Break(()),
        };
        pipeline::spawn_map_threads(threads, "map", batch_rx, map).expect("spawn map thread")
    };
    let folder = {
        let (plugin, counts, call_done) = (Arc::clone(plugin), Arc::clone(counts), opts.call_done);
        let reduce_memory = opts.reduce_memory;
        // `done` runs here, on a stack like the main thread's.
        thread::Builder::new()
            .name("fold".into())
            .stack_size(pipeline::JOB_THREAD_STACK)
            .spawn(move || fold_thread(&plugin, partial_rx, &counts, call_done, reduce_memory))
            .expect("spawn the fold thread")
    };

    // Load on this thread.
    let mut load_log = ErrorLog::new(MAX_KEPT_ERRORS);
    let (mut tasks, mut load_errors) = (0u64, 0u64);
    // A small job is cut so every map thread gets some of it (four
    // batches each or more), as a cluster's is over its connections.
    let limits = BatchLimits {
        tasks: spread_cap(plugin.count(), threads).min(opts.batch_tasks.max(1)),
        bytes: opts.batch_bytes,
    };
    let _ = pipeline::load(
        plugin.tasks(),
        || limits,
        |loaded| match loaded {
            Loaded::Batch(batch) => {
                tasks += batch.tasks.len() as u64;
                counts.loaded.store(tasks, Ordering::Relaxed);
                match batch_tx.send(batch) {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(_) => ControlFlow::Break(()),
                }
            }
            Loaded::Error(message) => {
                load_errors += 1;
                load_log.push(JobError {
                    stage: Stage::Load,
                    message,
                });
                ControlFlow::Continue(())
            }
        },
    );
    drop(batch_tx);
    for m in mappers {
        let _ = m.join();
    }
    let (tally, ended) = folder.join().unwrap_or_else(|_| {
        let tally = Tally {
            processed: 0,
            failed: tasks,
            reduce_errors: 0,
            errors: ErrorLog::new(MAX_KEPT_ERRORS),
        };
        (tally, None)
    });
    let (result, done, spills) = match ended {
        Some(ended) => (ended.result, ended.done, ended.spills),
        None if opts.call_done => (Vec::new(), plugin.done(&[]), Default::default()),
        None => (Vec::new(), Ok(()), Default::default()),
    };
    let mut errors = load_log;
    errors.merge(tally.errors);
    let done_failed = match done {
        Ok(()) => false,
        Err(e) => {
            errors.push(JobError {
                stage: Stage::Done,
                message: e.message,
            });
            true
        }
    };
    Report {
        tasks,
        processed: tally.processed,
        failed: tally.failed,
        load_errors,
        reduce_errors: tally.reduce_errors,
        done_failed,
        errors,
        result,
        spills,
        elapsed: started.elapsed(),
        threads,
    }
}
