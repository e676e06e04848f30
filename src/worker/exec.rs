//! The worker's map thread pool. Batches arrive from the reactor through a
//! channel; each of the pipeline's map threads maps and folds whole batches
//! ([`pipeline::map_batch`]), and hands the result back through a channel
//! and the reactor's waker. User code never runs on the event loop.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use log::warn;
use mio::Waker;

use crate::net::ConnId;
use crate::pipeline::{self, cap_error, thousands, FailedIn, ValueLimit};
use crate::plugin::loader::JobKind;
use crate::plugin::{CallError, Instance, Plugin, PluginHash};
use crate::proto::msg::{BatchResult, JobArgs, MapBatch, ShuffleSpec, TaskFailure, TaskList};

use super::shuffle::ShuffleFiles;

pub struct Work {
    pub conn: ConnId,
    pub request_id: u32,
    pub plugin: Arc<Plugin>,
    pub batch: MapBatch,
}

pub struct Done {
    pub conn: ConnId,
    pub request_id: u32,
    pub hash: [u8; 32],
    pub result: BatchResult,
}

/// What the map threads are handed.
enum Task {
    Batch(Work),
    /// Job instances no longer needed: their destructors are job code, so
    /// they are dropped here, never on the event loop.
    Release(Vec<Arc<Instance>>),
}

pub struct Pool {
    work: Sender<Task>,
    pub done: Receiver<Done>,
    instances: Arc<Instances>,
}

impl Pool {
    /// The jobs built on this worker (shared with its reduce threads).
    pub fn instances(&self) -> Arc<Instances> {
        Arc::clone(&self.instances)
    }
}

/// Most job instances a worker keeps built at once: one per running job
/// is the usual need. Past it, one is dropped (batches running on it keep
/// it until they end) and built again if needed.
const MAX_INSTANCES: usize = 64;

/// The jobs built on this worker, by library and arguments: a job's
/// constructor runs on a map thread (never the event loop), once per
/// library and arguments while it succeeds, not once per batch. Two jobs
/// of one library with the same arguments share their instance (a job
/// keeps no per-call state: it is `Sync`). A constructor's error is not
/// kept: the next batch tries again (a file may have appeared).
#[derive(Default)]
pub struct Instances {
    built: Mutex<HashMap<(PluginHash, JobArgs), Arc<Instance>>>,
}

impl Instances {
    /// The job, built if needed; with an instance no longer kept (evicted,
    /// or built twice at once), for the caller to release off the lock.
    pub fn get(
        &self,
        plugin: &Arc<Plugin>,
        args: &JobArgs,
    ) -> (Result<Arc<Instance>, CallError>, Option<Arc<Instance>>) {
        let key = (plugin.hash(), args.clone());
        if let Some(job) = self.lock().get(&key) {
            return (Ok(Arc::clone(job)), None);
        }
        // Built outside the lock: a slow constructor holds up no other job.
        let job = match plugin.instance(args) {
            Ok(job) => job,
            Err(e) => return (Err(e), None),
        };
        let mut table = self.lock();
        if let Some(first) = table.get(&key).map(Arc::clone) {
            // Another thread built it meanwhile: its instance is kept, and
            // this one is dropped once the lock is released.
            drop(table);
            return (Ok(first), Some(job));
        }
        let mut evicted = None;
        if table.len() >= MAX_INSTANCES {
            if let Some(old) = table.keys().next().cloned() {
                evicted = table.remove(&old);
            }
        }
        table.insert(key, Arc::clone(&job));
        (Ok(job), evicted)
    }

    /// Takes out the jobs built from the library `hash` (`None`: from
    /// every library), for the caller to release.
    fn forget(&self, hash: Option<PluginHash>) -> Vec<Arc<Instance>> {
        let mut table = self.lock();
        let gone: Vec<(PluginHash, JobArgs)> = table
            .keys()
            .filter(|(h, _)| hash.is_none_or(|hash| hash == *h))
            .cloned()
            .collect();
        gone.iter().filter_map(|k| table.remove(k)).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(PluginHash, JobArgs), Arc<Instance>>> {
        self.built.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Bytes of a `BATCH_RESULT` besides its value and failures.
const RESULT_OVERHEAD: usize = 64;

/// How a batch's reply is shared out within the manager's limit: failures
/// (at most [`crate::pipeline::MAX_ERROR_BYTES`] of message each) get a quarter of it, up
/// to 1 MiB; the value gets the rest. So the reply always fits, and a value
/// over the rest fails its task with a message naming the limit instead of
/// costing the worker its connection.
fn budgets(reply_limit: usize) -> (usize, usize) {
    let failures = (reply_limit / 4).min(1 << 20);
    let value = reply_limit.saturating_sub(failures + RESULT_OVERHEAD);
    (value, failures)
}

/// A failure's message, cut to size, taken from `budget`: each failure
/// costs 7 bytes besides its message, and once the budget is spent,
/// messages are dropped, never the failures.
fn within(budget: &mut usize, message: String) -> String {
    let mut message = cap_error(message);
    if message.len() + 7 > *budget {
        message = String::new();
    }
    *budget = budget.saturating_sub(message.len() + 7);
    message
}

/// A keyed job's batch: mapped and combined in one call into the job. Its
/// value is the batch's run of pairs. A run over the reply's value budget
/// (too many distinct keys for one frame) is cut: the batch's first half is
/// mapped again alone, and so on, until a prefix's run fits; the tasks
/// after it are deferred (not run, no attempt counted), so the manager
/// sends them again as a batch of their own. A single task whose run alone
/// is over the budget fails for good: it would on any worker.
fn run_keyed_batch(work: &Work, job: &Instance, started: Instant) -> BatchResult {
    let reply_limit = work.batch.reply_limit();
    let (value_budget, mut failure_budget) = budgets(reply_limit);
    let tasks = work.batch.tasks.len();
    let mut failure = |index: u32, panicked: bool, fatal: bool, message: String| TaskFailure {
        index,
        panicked,
        fatal,
        deferred: false,
        message: within(&mut failure_budget, message),
    };
    let mut prefix = tasks;
    let mut list = None;
    let (processed, value, mut failures) = loop {
        let bytes = list
            .as_ref()
            .map_or(work.batch.tasks.as_bytes(), |l: &TaskList| l.as_bytes());
        match job.map_batch(bytes) {
            Err(e) => {
                // The call itself failed: every task of the prefix with it.
                let all = (0..prefix as u32)
                    .map(|i| failure(i, e.panicked, false, e.message.clone()))
                    .collect();
                break (0, None, all);
            }
            Ok(mapped) if mapped.pairs.len() > value_budget && prefix > 1 => {
                prefix /= 2;
                list = Some(work.batch.tasks.split_at(prefix).0);
            }
            Ok(mapped) if mapped.pairs.len() > value_budget => {
                let why = format!(
                    "its pairs are {} bytes, over the manager's --max-size of {}",
                    thousands(mapped.pairs.len() as u64),
                    thousands(reply_limit as u64)
                );
                break (0, None, vec![failure(0, false, true, why)]);
            }
            Ok(mapped) => {
                let failed = mapped
                    .failures
                    .into_iter()
                    .map(|(i, panicked, message)| failure(i, panicked, false, message))
                    .collect();
                break (mapped.processed, Some(mapped.pairs), failed);
            }
        }
    };
    failures.extend((prefix as u32..tasks as u32).map(|index| TaskFailure {
        index,
        panicked: false,
        fatal: false,
        deferred: true,
        message: String::new(),
    }));
    BatchResult {
        busy_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        batch_id: work.batch.batch_id,
        processed,
        value,
        failures,
        map_output: None,
    }
}

/// A batch whose job could not be built here: every task fails with the
/// constructor's error, as a failed attempt (another worker, where a file
/// the arguments name may be, can take it; the retry rules apply).
fn unbuilt(work: &Work, why: CallError) -> BatchResult {
    let (_, mut budget) = budgets(work.batch.reply_limit());
    let message = format!("the job's constructor failed on this worker: {why}");
    BatchResult {
        busy_us: 0,
        batch_id: work.batch.batch_id,
        processed: 0,
        value: None,
        failures: (0..work.batch.tasks.len() as u32)
            .map(|index| TaskFailure {
                index,
                panicked: why.panicked,
                fatal: false,
                deferred: false,
                message: within(&mut budget, message.clone()),
            })
            .collect(),
        map_output: None,
    }
}

/// A batch of a job whose reduce runs on the workers: its pairs are kept
/// here, cut into the job's partitions ([`ShuffleFiles`]), and the
/// answer says where (no value: no reply limit to fit). A call or a file
/// that fails fails every task of the batch as an attempt.
fn run_shuffled_batch(
    work: &Work,
    job: &Instance,
    spec: ShuffleSpec,
    files: &ShuffleFiles,
    started: Instant,
) -> BatchResult {
    let (_, mut failure_budget) = budgets(work.batch.reply_limit());
    let tasks = work.batch.tasks.len() as u32;
    let mut all_fail = |panicked: bool, message: String| -> Vec<TaskFailure> {
        (0..tasks)
            .map(|index| TaskFailure {
                index,
                panicked,
                fatal: false,
                deferred: false,
                message: within(&mut failure_budget, message.clone()),
            })
            .collect()
    };
    let (processed, failures, map_output) = match job.map_batch(work.batch.tasks.as_bytes()) {
        Err(e) => (0, all_fail(e.panicked, e.message), None),
        Ok(mapped) => {
            let dir = std::env::temp_dir();
            match files.keep_map_output(spec, &mapped.pairs, &dir) {
                Ok(out) => {
                    let failed = mapped
                        .failures
                        .into_iter()
                        .map(|(index, panicked, message)| TaskFailure {
                            index,
                            panicked,
                            fatal: false,
                            deferred: false,
                            message: within(&mut failure_budget, message),
                        })
                        .collect();
                    (mapped.processed, failed, Some(out))
                }
                Err(why) => (0, all_fail(false, why), None),
            }
        }
    };
    BatchResult {
        busy_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        batch_id: work.batch.batch_id,
        processed,
        value: None,
        failures,
        map_output,
    }
}

fn run_batch(work: &Work, instances: &Instances, files: &ShuffleFiles) -> BatchResult {
    let started = Instant::now();
    let (built, evicted) = instances.get(&work.plugin, &work.batch.args);
    drop(evicted);
    let job = match built {
        Ok(job) => job,
        Err(why) => return unbuilt(work, why),
    };
    match (job.kind(), work.batch.shuffle) {
        (JobKind::Keyed, Some(spec)) => {
            return run_shuffled_batch(work, &job, spec, files, started)
        }
        (JobKind::Keyed, None) => return run_keyed_batch(work, &job, started),
        (JobKind::Bytes, _) => {}
    }
    let reply_limit = work.batch.reply_limit();
    let (value_budget, mut failure_budget) = budgets(reply_limit);
    let limit = ValueLimit {
        bytes: value_budget,
        whose: format!(
            "the manager's --max-size of {}",
            thousands(reply_limit as u64)
        ),
    };
    let folded = pipeline::map_batch(&*job, &work.batch.tasks, &limit);
    let busy_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let failures = folded
        .failures
        .into_iter()
        .map(|f| {
            let (index, panicked, stage) = (f.index, f.error.panicked, f.stage);
            let message = within(&mut failure_budget, f.into_message());
            TaskFailure {
                index,
                panicked,
                // A value that reduce cannot fold fails the same way on any
                // worker: only a map error is worth another attempt.
                fatal: matches!(stage, FailedIn::TooLarge | FailedIn::Reduce),
                deferred: stage == FailedIn::Deferred,
                message,
            }
        })
        .collect();
    BatchResult {
        busy_us,
        batch_id: work.batch.batch_id,
        processed: folded.processed,
        value: folded.value,
        failures,
        map_output: None,
    }
}

/// Hands a thread's answer to the event loop: sends it and wakes the
/// loop. `Break` once the loop is gone (the thread then ends).
pub(super) fn hand_back<T>(tx: &Sender<T>, waker: &Waker, done: T) -> ControlFlow<()> {
    if tx.send(done).is_err() {
        return ControlFlow::Break(());
    }
    if let Err(e) = waker.wake() {
        warn!("cannot wake the event loop: {e}");
    }
    ControlFlow::Continue(())
}

impl Pool {
    pub fn new(threads: usize, waker: Arc<Waker>, files: ShuffleFiles) -> Pool {
        let (work_tx, work_rx) = mpsc::channel::<Task>();
        let (done_tx, done_rx) = mpsc::channel::<Done>();
        let instances = Arc::new(Instances::default());
        let built = Arc::clone(&instances);
        let map = move |task: Task| {
            let work = match task {
                Task::Batch(work) => work,
                Task::Release(jobs) => {
                    drop(jobs);
                    return ControlFlow::Continue(());
                }
            };
            let result = run_batch(&work, &built, &files);
            let done = Done {
                conn: work.conn,
                request_id: work.request_id,
                hash: work.batch.hash,
                result,
            };
            hand_back(&done_tx, &waker, done)
        };
        pipeline::spawn_map_threads(threads, "map", work_rx, map).expect("spawn map thread");
        Pool {
            work: work_tx,
            done: done_rx,
            instances,
        }
    }

    /// Drops the jobs built from the library `hash` (`None`: from every
    /// library), once it is uninstalled.
    pub fn forget(&self, hash: Option<PluginHash>) {
        let gone = self.instances.forget(hash);
        if !gone.is_empty() {
            let _ = self.work.send(Task::Release(gone));
        }
    }

    pub fn submit(&self, work: Work) {
        // The threads live as long as the pool; a send cannot fail.
        let _ = self.work.send(Task::Batch(work));
    }
}
