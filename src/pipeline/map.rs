//! Mapping a batch and folding its values into one partial accumulator
//! (what a worker does with each batch, and the embedded run too), and the
//! map threads that do it off the caller's thread.

use std::io;
use std::ops::ControlFlow;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use super::JobCode;
use crate::plugin::CallError;
use crate::proto::msg::TaskList;

pub use crate::job::batch::{FailedIn, ValueLimit};

/// One failed task of a batch.
pub type TaskFailed = crate::job::batch::TaskFailed<CallError>;

/// A batch, mapped and folded.
pub type Folded = crate::job::batch::Folded<CallError>;

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

/// Maps every task of `tasks` and folds the values with reduce, starting
/// from the empty accumulator, in the tasks' order, within `limit` (see
/// [`crate::job::batch::fold_batch`], the one algorithm for it): in one
/// call into the job when it has a batch call (job ABI version 3), else a
/// `map` and a `reduce` call per task.
pub fn map_batch<J: JobCode + ?Sized>(job: &J, tasks: &TaskList, limit: &ValueLimit) -> Folded {
    if let Some(folded) = job.fold_batch(tasks.as_bytes(), limit) {
        return folded;
    }
    crate::job::batch::fold_batch(
        tasks.iter(),
        |task| job.map(task),
        |acc, value| job.reduce(acc, value),
        limit,
    )
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

    fn tasks(list: &[&str]) -> TaskList {
        let mut tasks = TaskList::new();
        for t in list {
            tasks.push(t.as_bytes());
        }
        tasks
    }

    #[test]
    fn a_batch_folds_into_one_value_and_failures_keep_their_index() {
        let folded = map_batch(
            &Sums,
            &tasks(&["1", "x", "2", "bad-reduce", "3"]),
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
        let folded = map_batch(&Sums, &tasks(&["x", "y"]), &ValueLimit::none());
        assert_eq!((folded.value, folded.processed), (None, 0));
        assert_eq!(folded.failures.len(), 2);
        assert_eq!(
            map_batch(&Sums, &tasks(&[]), &ValueLimit::none()),
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
        let folded = map_batch(&Sums, &tasks(&["40", "100", "50", "20", "1"]), &limit);
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
