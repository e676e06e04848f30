//! Mapping a batch and folding its values into one partial accumulator
//! (what a worker does with each batch, and the embedded run too), and the
//! map threads that do it off the caller's thread.

use std::io;
use std::ops::ControlFlow;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use super::errors::thousands;
use super::JobCode;
use crate::plugin::CallError;

/// Where a task failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailedIn {
    /// Its map returned an error or panicked.
    Map,
    /// Its value could not be folded into the batch's accumulator.
    Reduce,
    /// Its value, alone, is larger than a result may be: no retry helps.
    TooLarge,
    /// Not run: the batch's result had reached its size limit. The task
    /// goes out again in another batch, with no attempt counted.
    Deferred,
}

/// One failed task of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFailed {
    /// Index of the task within the batch, from 0.
    pub index: u32,
    pub stage: FailedIn,
    pub error: CallError,
}

impl TaskFailed {
    /// The error as a summary words it after the task's label: the job's
    /// message, after `reduce: ` when the value would not fold.
    pub fn into_message(self) -> String {
        match self.stage {
            FailedIn::Map | FailedIn::TooLarge | FailedIn::Deferred => self.error.message,
            FailedIn::Reduce => format!("reduce: {}", self.error.message),
        }
    }
}

/// A batch, mapped and folded.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Folded {
    /// The batch's partial accumulator; `None` if no task succeeded.
    pub value: Option<Vec<u8>>,
    /// Tasks mapped and folded into `value`.
    pub processed: u32,
    /// The other tasks, by increasing index.
    pub failures: Vec<TaskFailed>,
}

/// The most a batch's partial accumulator may weigh, in bytes, and what
/// that limit is, for the error that names it.
#[derive(Debug, Clone)]
pub struct ValueLimit {
    /// The limit, in bytes (`usize::MAX`: none).
    pub bytes: usize,
    /// Says whose limit it is, e.g. "the manager's --max-size of 1,000,000".
    pub whose: String,
}

impl ValueLimit {
    /// No limit (the embedded run keeps its values in memory).
    pub fn none() -> ValueLimit {
        ValueLimit {
            bytes: usize::MAX,
            whose: String::new(),
        }
    }

    fn too_large(&self, what: &str, len: usize) -> CallError {
        CallError {
            message: format!(
                "{what} is {} bytes, over {} ({} bytes for a batch's value)",
                thousands(len as u64),
                self.whose,
                thousands(self.bytes as u64)
            ),
            panicked: false,
        }
    }
}

/// Maps every task and folds the values with reduce, starting from the
/// empty accumulator, in the tasks' order. A failed task is recorded and
/// skipped; the rest go on.
///
/// The accumulator stays within `limit`: a value over it on its own fails
/// its task for good ([`FailedIn::TooLarge`]); once folding a value would
/// take the accumulator over it, that task and the rest of the batch are
/// [`FailedIn::Deferred`], to go out again in a batch of their own.
pub fn map_batch<'a, J: JobCode + ?Sized>(
    job: &J,
    tasks: impl Iterator<Item = &'a [u8]>,
    limit: &ValueLimit,
) -> Folded {
    let mut folded = Folded::default();
    let mut deferring = false;
    for (index, task) in tasks.enumerate() {
        let index = index as u32;
        let fail = |stage, error| TaskFailed {
            index,
            stage,
            error,
        };
        if deferring {
            folded
                .failures
                .push(fail(FailedIn::Deferred, CallError::deferred()));
            continue;
        }
        let value = match job.map(task) {
            Ok(v) if v.len() > limit.bytes => {
                let error = limit.too_large("map value", v.len());
                folded.failures.push(fail(FailedIn::TooLarge, error));
                continue;
            }
            Ok(v) => v,
            Err(error) => {
                folded.failures.push(fail(FailedIn::Map, error));
                continue;
            }
        };
        match job.reduce(folded.value.as_deref().unwrap_or(&[]), &value) {
            Ok(acc) if acc.len() > limit.bytes && folded.value.is_none() => {
                let error = limit.too_large("the folded value", acc.len());
                folded.failures.push(fail(FailedIn::TooLarge, error));
            }
            Ok(acc) if acc.len() > limit.bytes => {
                deferring = true;
                folded
                    .failures
                    .push(fail(FailedIn::Deferred, CallError::deferred()));
            }
            Ok(acc) => {
                folded.value = Some(acc);
                folded.processed += 1;
            }
            Err(error) => folded.failures.push(fail(FailedIn::Reduce, error)),
        }
    }
    folded
}

/// Starts `threads` (at least 1) map threads, named `{name}-{i}`, that take
/// work from `queue` one item at a time and hand it to `work`. The lock on
/// the queue is held only to take an item, never while working. A thread
/// ends when the queue is closed and empty, or when `work` returns
/// `Break` (its output has nowhere to go).
///
/// Errors: the system refused a thread (those already started end when the
/// queue closes).
pub fn spawn_map_threads<W, F>(
    threads: usize,
    name: &str,
    queue: Receiver<W>,
    work: F,
) -> io::Result<Vec<JoinHandle<()>>>
where
    W: Send + 'static,
    F: Fn(W) -> ControlFlow<()> + Send + Sync + 'static,
{
    let queue = Arc::new(Mutex::new(queue));
    let work = Arc::new(work);
    (0..threads.max(1))
        .map(|i| {
            let (queue, work) = (Arc::clone(&queue), Arc::clone(&work));
            thread::Builder::new()
                .name(format!("{name}-{i}"))
                .stack_size(super::JOB_THREAD_STACK)
                .spawn(move || loop {
                    let next = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    let Ok(item) = next else {
                        return;
                    };
                    if work(item).is_break() {
                        return;
                    }
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::tests::Sums;
    use super::*;
    use std::sync::mpsc;

    fn tasks<'a>(list: &'a [&'static str]) -> impl Iterator<Item = &'static [u8]> + 'a {
        list.iter().map(|t| t.as_bytes())
    }

    #[test]
    fn a_batch_folds_into_one_value_and_failures_keep_their_index() {
        let folded = map_batch(
            &Sums,
            tasks(&["1", "x", "2", "bad-reduce", "3"]),
            &ValueLimit::none(),
        );
        assert_eq!(folded.value.as_deref(), Some(&b"6"[..]));
        assert_eq!(folded.processed, 3);
        let failed: Vec<_> = folded
            .failures
            .iter()
            .map(|f| (f.index, f.stage, f.clone().into_message()))
            .collect();
        assert_eq!(
            failed,
            [
                (1, FailedIn::Map, "not a number: x".to_owned()),
                (3, FailedIn::Reduce, "reduce: will not fold".to_owned()),
            ]
        );
    }

    #[test]
    fn a_batch_with_no_success_has_no_value() {
        let folded = map_batch(&Sums, tasks(&["x", "y"]), &ValueLimit::none());
        assert_eq!((folded.value, folded.processed), (None, 0));
        assert_eq!(folded.failures.len(), 2);
        assert_eq!(
            map_batch(&Sums, tasks(&[]), &ValueLimit::none()),
            Folded::default()
        );
    }

    #[test]
    fn over_its_limit_a_value_fails_alone_and_an_accumulator_defers_the_rest() {
        let limit = ValueLimit {
            bytes: 2,
            whose: "the test's limit".into(),
        };
        // 100 alone is 3 bytes: too large. 40 + 50 = 90 fits; + 20 would
        // be 110: deferred, with every task after it.
        let folded = map_batch(&Sums, tasks(&["40", "100", "50", "20", "1"]), &limit);
        assert_eq!(
            (folded.value.as_deref(), folded.processed),
            (Some(&b"90"[..]), 2)
        );
        let stages: Vec<_> = folded.failures.iter().map(|f| (f.index, f.stage)).collect();
        assert_eq!(
            stages,
            [
                (1, FailedIn::TooLarge),
                (3, FailedIn::Deferred),
                (4, FailedIn::Deferred)
            ]
        );
        assert_eq!(
            folded.failures[0].clone().into_message(),
            "map value is 3 bytes, over the test's limit (2 bytes for a batch's value)"
        );
    }

    #[test]
    fn map_threads_share_one_queue_and_stop_when_it_closes() {
        let (tx, rx) = mpsc::channel::<u32>();
        let (out_tx, out_rx) = mpsc::channel();
        let threads = spawn_map_threads(3, "test-map", rx, move |n| {
            let name = thread::current().name().unwrap_or_default().to_owned();
            match out_tx.send((n * 2, name)) {
                Ok(()) => ControlFlow::Continue(()),
                Err(_) => ControlFlow::Break(()),
            }
        })
        .unwrap();
        for n in 0..100 {
            tx.send(n).unwrap();
        }
        drop(tx);
        for t in threads {
            t.join().unwrap();
        }
        let mut got: Vec<(u32, String)> = out_rx.iter().collect();
        assert!(got.iter().all(|(_, name)| name.starts_with("test-map-")));
        got.sort();
        let doubled: Vec<u32> = got.into_iter().map(|(n, _)| n).collect();
        assert_eq!(doubled, (0..100).map(|n| n * 2).collect::<Vec<_>>());
    }
}
