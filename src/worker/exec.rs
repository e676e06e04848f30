//! The worker's map thread pool. Batches arrive from the reactor through a
//! channel; each map thread has its batch mapped and folded by the job
//! library's executor process ([`crate::exec`]) and hands the result back
//! through a channel and the reactor's waker. No job code runs in the
//! worker's process: an executor that dies is the batch's outcome
//! (`EXECUTOR_DIED`), not the worker's.

use std::ops::ControlFlow;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::Instant;

use log::warn;
use mio::Waker;

use crate::exec::{ExecError, Executor};
use crate::net::ConnId;
use crate::pipeline::{cap_error, thousands, FailedIn, ValueLimit};
use crate::plugin::loader::JobKind;
use crate::plugin::CallError;
use crate::proto::msg::{BatchResult, MapBatch, ShuffleSpec, TaskFailure, TaskList};

use super::shuffle::ShuffleFiles;

pub struct Work {
    pub conn: ConnId,
    pub request_id: u32,
    /// The executor of the batch's job library.
    pub executor: Arc<Executor>,
    /// The library's kind, as its check said.
    pub kind: JobKind,
    pub batch: MapBatch,
}

pub struct Done {
    pub conn: ConnId,
    pub request_id: u32,
    pub hash: [u8; 32],
    /// The batch's result, or how its executor died while running it.
    pub result: Result<BatchResult, String>,
}

pub struct Pool {
    work: Sender<Work>,
    pub done: Receiver<Done>,
}

/// Takes an executor's death out of a call's outcome: it is the batch's
/// outcome as a whole (not answered with a result: see [`Done::result`]);
/// what is left is the job's answer, a failed call or an unbuilt job.
fn survived<T>(r: Result<T, ExecError>) -> Result<Result<T, ExecError>, String> {
    match r {
        Err(ExecError::Died(why)) => Err(why),
        r => Ok(r),
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
fn run_keyed_batch(work: &Work) -> Result<BatchResult, String> {
    // The job's own time, as the executor measured it (batch sizing's
    // measure: without the trips to the executor and back).
    let mut busy_us = 0u64;
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
        let result = survived(work.executor.map_batch(&work.batch.args, bytes))?;
        let result = result.map(|(mapped, busy)| {
            busy_us = busy_us.saturating_add(busy);
            mapped
        });
        match result {
            Err(ExecError::Unbuilt(why)) => return Ok(unbuilt(work, why)),
            Err(e) => {
                let e = e.into_call();
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
    Ok(BatchResult {
        busy_us,
        batch_id: work.batch.batch_id,
        processed,
        value,
        failures,
        map_output: None,
    })
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
    spec: ShuffleSpec,
    files: &ShuffleFiles,
) -> Result<BatchResult, String> {
    let mut busy_us = 0u64;
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
    let mapped = work
        .executor
        .map_batch(&work.batch.args, work.batch.tasks.as_bytes());
    let (processed, failures, map_output) = match survived(mapped)? {
        Err(ExecError::Unbuilt(why)) => return Ok(unbuilt(work, why)),
        Err(e) => {
            let e = e.into_call();
            (0, all_fail(e.panicked, e.message), None)
        }
        Ok((mapped, busy)) => {
            // The job's time, and this worker's to cut and keep its pairs.
            let kept = Instant::now();
            let dir = std::env::temp_dir();
            let out = files.keep_map_output(spec, &mapped.pairs, &dir);
            let keeping = u64::try_from(kept.elapsed().as_micros()).unwrap_or(u64::MAX);
            busy_us = busy.saturating_add(keeping);
            match out {
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
    Ok(BatchResult {
        busy_us,
        batch_id: work.batch.batch_id,
        processed,
        value: None,
        failures,
        map_output,
    })
}

/// Runs one batch in its library's executor: `Err` with how the executor
/// died if it did.
fn run_batch(work: &Work, files: &ShuffleFiles) -> Result<BatchResult, String> {
    match (work.kind, work.batch.shuffle) {
        (JobKind::Keyed, Some(spec)) => return run_shuffled_batch(work, spec, files),
        (JobKind::Keyed, None) => return run_keyed_batch(work),
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
    let folded = work
        .executor
        .fold_batch(&work.batch.args, &work.batch.tasks, &limit);
    let (folded, busy_us) = match survived(folded)? {
        Ok(timed) => timed,
        Err(ExecError::Unbuilt(why)) => return Ok(unbuilt(work, why)),
        Err(e) => {
            let e = e.into_call();
            let failed = crate::pipeline::Folded {
                value: None,
                processed: 0,
                failures: (0..work.batch.tasks.len() as u32)
                    .map(|index| crate::pipeline::TaskFailed {
                        index,
                        stage: FailedIn::Map,
                        error: e.clone(),
                    })
                    .collect(),
            };
            (failed, 0)
        }
    };
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
    Ok(BatchResult {
        busy_us,
        batch_id: work.batch.batch_id,
        processed: folded.processed,
        value: folded.value,
        failures,
        map_output: None,
    })
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
        let (work_tx, work_rx) = mpsc::channel::<Work>();
        let (done_tx, done_rx) = mpsc::channel::<Done>();
        let map = move |work: Work| {
            let result = run_batch(&work, &files);
            let done = Done {
                conn: work.conn,
                request_id: work.request_id,
                hash: work.batch.hash,
                result,
            };
            hand_back(&done_tx, &waker, done)
        };
        crate::pipeline::spawn_map_threads(threads, "map", work_rx, map).expect("spawn map thread");
        Pool {
            work: work_tx,
            done: done_rx,
        }
    }

    pub fn submit(&self, work: Work) {
        // The threads live as long as the pool; a send cannot fail.
        let _ = self.work.send(work);
    }
}
