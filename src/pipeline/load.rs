//! Pulling the job's `load` and cutting what it yields into batches: the
//! manager's loader thread and the embedded run's calling thread.

use std::ops::ControlFlow;

use super::batch::{Batch, BatchLimits, Batcher};
use crate::plugin::{CallError, TaskIter};

/// Where [`load`] pulls tasks from: the job's `load` ([`TaskIter`]), or a
/// list of items (tests).
pub trait TaskSource {
    /// The next item: a task, lent to `f` (which copies what it keeps), or
    /// a load error; `None` at the end.
    fn next_with<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Option<Result<R, CallError>>;
}

/// Tasks go from the job's buffer straight into the batch: one copy and
/// no allocation of their own.
impl TaskSource for TaskIter {
    fn next_with<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Option<Result<R, CallError>> {
        TaskIter::next_with(self, f)
    }
}

impl TaskSource for std::vec::IntoIter<Result<Vec<u8>, CallError>> {
    fn next_with<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Option<Result<R, CallError>> {
        self.next().map(|item| item.map(|task| f(&task)))
    }
}

/// What [`load`] hands on, in the order `load` yielded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loaded {
    /// A batch of tasks (never empty).
    Batch(Batch),
    /// `load` failed: to start (the message as it is), or on an item
    /// (`task N: ` and the message, N the item's number from 1, errors
    /// included). The errors are counted; loading goes on after an item's.
    Error(String),
}

/// [`load`] pulled one step at a time: each `next` reads the
/// job's items until a batch closes or an error comes, and returns that.
/// An executor keeps one per job it loads, and answers each of the
/// manager's requests for the next batch with it.
pub struct Loader<S> {
    tasks: Option<S>,
    batcher: Batcher,
    ready: std::collections::VecDeque<Loaded>,
}

impl<S: TaskSource> Loader<S> {
    /// Starts loading `tasks` (what `load` returned: a `load` that could
    /// not start is one error, as it is) into batches of `limits`.
    pub fn new(tasks: Result<S, CallError>, limits: BatchLimits) -> Loader<S> {
        let mut ready = std::collections::VecDeque::new();
        let tasks = match tasks {
            Ok(tasks) => Some(tasks),
            Err(e) => {
                ready.push_back(Loaded::Error(e.message));
                None
            }
        };
        Loader {
            tasks,
            batcher: Batcher::new(limits),
            ready,
        }
    }

    /// The limits of the batches not closed yet.
    pub fn set_limits(&mut self, limits: BatchLimits) {
        self.batcher.set_limits(limits);
    }
}

/// The batches and load errors, in the order `load` yielded them; `None`
/// once `load` is exhausted and everything was handed on.
impl<S: TaskSource> Iterator for Loader<S> {
    type Item = Loaded;

    fn next(&mut self) -> Option<Loaded> {
        while self.ready.is_empty() {
            let Some(tasks) = self.tasks.as_mut() else {
                break;
            };
            let batcher = &mut self.batcher;
            match tasks.next_with(|task| batcher.push(task)) {
                Some(Ok(closed)) => self.ready.extend(closed.map(Loaded::Batch)),
                Some(Err(e)) => {
                    let (closed, number) = batcher.error();
                    self.ready.extend(closed.map(Loaded::Batch));
                    self.ready
                        .push_back(Loaded::Error(format!("task {number}: {}", e.message)));
                }
                None => {
                    self.tasks = None;
                    let limits = BatchLimits {
                        tasks: usize::MAX,
                        bytes: usize::MAX,
                    };
                    let last = std::mem::replace(&mut self.batcher, Batcher::new(limits));
                    self.ready.extend(last.finish().map(Loaded::Batch));
                }
            }
        }
        self.ready.pop_front()
    }
}

/// Pulls every item of `tasks` (what `load` returned), cuts the tasks
/// into batches and hands each batch and each error to `sink` as it comes
/// (see [`Loader`]). `limits` is asked for the limits of the first batch
/// and again after each batch (the manager's batch size follows its
/// workers).
///
/// Returns `Break` as soon as `sink` does (nobody wants the rest: loading
/// stops), else `Continue` once `load` is exhausted.
pub fn load<S: TaskSource>(
    tasks: Result<S, CallError>,
    mut limits: impl FnMut() -> BatchLimits,
    mut sink: impl FnMut(Loaded) -> ControlFlow<()>,
) -> ControlFlow<()> {
    let mut loader = Loader::new(tasks, limits());
    while let Some(loaded) = loader.next() {
        let batch = matches!(loaded, Loaded::Batch(_));
        sink(loaded)?;
        if batch {
            loader.set_limits(limits());
        }
    }
    ControlFlow::Continue(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(t: &str) -> Result<Vec<u8>, CallError> {
        Ok(t.as_bytes().to_vec())
    }

    fn err(m: &str) -> Result<Vec<u8>, CallError> {
        Err(CallError {
            panicked: false,
            message: m.into(),
        })
    }

    /// Each batch as (first index, tasks), each error as its message.
    fn run(
        items: Vec<Result<Vec<u8>, CallError>>,
        tasks: usize,
        stop_after: usize,
    ) -> (ControlFlow<()>, Vec<String>) {
        let mut seen = Vec::new();
        let flow = load(
            Ok(items.into_iter()),
            || BatchLimits {
                tasks,
                bytes: usize::MAX,
            },
            |l| {
                seen.push(match l {
                    Loaded::Batch(b) => {
                        let tasks: Vec<_> = b
                            .tasks
                            .iter()
                            .map(|t| t.escape_ascii().to_string())
                            .collect();
                        format!("{}:{}", b.first_index, tasks.join(","))
                    }
                    Loaded::Error(e) => e,
                });
                if seen.len() == stop_after {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
        );
        (flow, seen)
    }

    #[test]
    fn tasks_are_batched_and_errors_numbered_as_the_user_counts_them() {
        let items = vec![ok("a"), ok("b"), ok("c"), err("bad line"), ok("e"), ok("f")];
        let (flow, seen) = run(items, 2, 0);
        assert_eq!(flow, ControlFlow::Continue(()));
        assert_eq!(seen, ["0:a,b", "2:c", "task 4: bad line", "4:e,f"]);
    }

    #[test]
    fn a_sink_that_stops_stops_loading() {
        let items = vec![ok("a"), ok("b"), ok("c")];
        let (flow, seen) = run(items, 1, 2);
        assert_eq!(flow, ControlFlow::Break(()));
        assert_eq!(seen, ["0:a", "1:b"]);
    }

    #[test]
    fn a_load_that_cannot_start_is_one_error() {
        let mut seen = Vec::new();
        let failed: Result<std::vec::IntoIter<_>, _> = Err(CallError {
            panicked: false,
            message: "no such file".into(),
        });
        let limits = || BatchLimits { tasks: 1, bytes: 1 };
        let flow = load(failed, limits, |l| {
            seen.push(l);
            ControlFlow::Continue(())
        });
        assert_eq!(flow, ControlFlow::Continue(()));
        assert_eq!(seen, [Loaded::Error("no such file".into())]);
    }
}
