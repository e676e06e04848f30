//! The manager's side of the pipeline: its loader and reducer threads, one
//! of each per running job. They run the job's own code off the event
//! loop and report to it through channels and its waker.
//!
//! The loader sends through a bounded channel: it blocks when the channel
//! is full, so tasks are loaded only as fast as workers take them and the
//! manager's memory does not grow with the job.

use std::ops::ControlFlow;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{Receiver, Sender, SyncSender};
use std::sync::Arc;

use mio::Waker;

use super::batch::BatchLimits;
use super::load::{load, Loaded};
use super::reduce::fold_partials;
use crate::plugin::loader::JobKind;
use crate::plugin::{CallError, Instance};
use crate::proto::msg::manager::RESULT_PREVIEW;
use crate::proto::msg::TaskList;

/// What the loader thread tells the event loop.
pub enum LoaderMsg {
    /// The job's estimate of its tasks (`count`), sent first.
    Estimate(Option<u64>),
    /// A batch; `first_index` as in [`super::Batch`].
    Batch { tasks: TaskList, first_index: u64 },
    /// A load error, worded as in [`Loaded::Error`].
    Error(String),
    /// `load` is exhausted. Not sent when loading stopped because the
    /// event loop dropped its receiver.
    End,
}

/// A job's output, as its reducer thread made it, for the manager to keep
/// for the job's client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// The bytes as the job made them: a byte-level job's final
    /// accumulator, or a keyed job's output run (pairs in the `Codec`
    /// encoding, sorted by key).
    pub binary: Vec<u8>,
    /// The text form, one `key<TAB>value` line per key, for a keyed job,
    /// or why the job's `format` could not make it (a byte-level job's
    /// text is its binary: `None`).
    pub text: Option<Result<Vec<u8>, String>>,
}

/// What the reducer thread tells the event loop.
pub enum ReducerMsg {
    /// The job's constructor failed here: the job fails, and nothing of
    /// it runs.
    Unbuilt { job: u64, message: String },
    /// A partial of `tasks` tasks was folded into the result.
    Folded { job: u64, tasks: u64 },
    /// A partial could not be folded; its tasks are lost.
    Failed {
        job: u64,
        tasks: u64,
        message: String,
    },
    /// `done` ran.
    Done {
        job: u64,
        /// The result's length in bytes.
        result_len: u64,
        /// Its first [`RESULT_PREVIEW`] bytes.
        preview: Vec<u8>,
        error: Option<String>,
        /// The whole output, for the client.
        output: Output,
        /// What the reduce spilled to disk.
        spills: crate::shuffle::SpillStats,
    },
}

fn send_and_wake(tx: &SyncSender<LoaderMsg>, waker: &Waker, msg: LoaderMsg) -> ControlFlow<()> {
    let sent = tx.send(msg);
    let _ = waker.wake();
    match sent {
        Ok(()) => ControlFlow::Continue(()),
        Err(_) => ControlFlow::Break(()), // the job was dropped
    }
}

/// The loader thread's body: sends the estimate, then the batches and
/// load errors, then `End`. `limits` gives the limits of the next batch
/// from the job's estimate; it is asked again after each batch.
pub fn loader(
    plugin: &Arc<Instance>,
    tx: &SyncSender<LoaderMsg>,
    waker: &Waker,
    limits: impl Fn(Option<u64>) -> BatchLimits,
) {
    let estimate = plugin.count();
    if send_and_wake(tx, waker, LoaderMsg::Estimate(estimate)).is_break() {
        return;
    }
    let msg = |loaded| match loaded {
        Loaded::Batch(b) => LoaderMsg::Batch {
            tasks: b.tasks,
            first_index: b.first_index,
        },
        Loaded::Error(e) => LoaderMsg::Error(e),
    };
    let flow = load(
        plugin.tasks(),
        || limits(estimate),
        |loaded| send_and_wake(tx, waker, msg(loaded)),
    );
    if flow.is_continue() {
        let _ = send_and_wake(tx, waker, LoaderMsg::End);
    }
}

/// The text form of a keyed job's whole output run.
pub fn text_of(job: &Instance, run: &[u8]) -> Result<Vec<u8>, CallError> {
    let (text, used) = job.format(run)?;
    if used != run.len() {
        return Err(CallError {
            panicked: false,
            message: format!(
                "the output's text form: {} of its {} bytes do not decode as pairs",
                run.len() - used,
                run.len()
            ),
        });
    }
    Ok(text)
}

/// The reducer thread's body: folds the partials of job `job` as they
/// arrive, reporting each, then calls `done` and reports it; stops early,
/// without `done`, once `cancelled` is set.
pub fn reducer(
    plugin: &Instance,
    job: u64,
    partials: Receiver<(Vec<u8>, u64)>,
    tx: &Sender<ReducerMsg>,
    waker: &Waker,
    cancelled: &AtomicBool,
    memory: &super::ReduceMemory,
) {
    let report = |(_, tasks): (Vec<u8>, u64), outcome: Result<(), CallError>| {
        let msg = match outcome {
            Ok(()) => ReducerMsg::Folded { job, tasks },
            Err(e) => ReducerMsg::Failed {
                job,
                tasks,
                message: e.message,
            },
        };
        let _ = tx.send(msg);
        let _ = waker.wake();
    };
    // A keyed job's partials are runs of pairs, reduced by key; its `done`
    // runs in the client, with the output it fetches, so here the output
    // gets its text form instead.
    let mut text = None;
    let ended = match plugin.kind() {
        JobKind::Bytes => fold_partials(plugin, partials, cancelled, report, |r| plugin.done(r)),
        JobKind::Keyed => super::fold_runs(plugin, partials, cancelled, memory, report, |run| {
            // A text form that fails costs that form only, not the job.
            text = Some(text_of(plugin, run).map_err(|e| e.message));
            Ok(())
        }),
    };
    let Some(ended) = ended else {
        return;
    };
    let acc = ended.result;
    let _ = tx.send(ReducerMsg::Done {
        job,
        result_len: acc.len() as u64,
        preview: acc[..acc.len().min(RESULT_PREVIEW)].to_vec(),
        error: ended.done.err().map(|e| e.message),
        output: Output { binary: acc, text },
        spills: ended.spills,
    });
    let _ = waker.wake();
}
