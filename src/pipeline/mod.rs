//! The one pipeline every run goes through: load → batch → map → fold →
//! done. The embedded run ([`crate::local`]), the worker's map threads
//! ([`crate::worker::exec`]) and the manager's loader and reducer threads
//! are arrangements of these parts over channels, threads and sockets; the
//! parts themselves, and the rules they keep, exist once:
//!
//! - [`batch`]: cutting tasks into batches (at N tasks or B bytes, and at
//!   each load error, so tasks keep the numbers the user counts);
//! - [`load`]: pulling the job's `load` through a batcher;
//! - [`map`]: mapping one batch and folding its values into one partial
//!   accumulator within a size limit, and the map threads that do it;
//! - [`reduce`]: folding the partials into the result, then `done`;
//! - [`errors`]: keeping a run's errors (the first ones and the latest
//!   ones, with a count of the rest) and wording them;
//! - [`cluster`]: the manager's loader and reducer threads, which report
//!   to its event loop.
//!
//! The parts call the job through [`JobCode`], which [`Plugin`] implements
//! with direct calls (no dynamic dispatch on the hot path), so their rules
//! are unit-tested with a job written in plain Rust.

pub mod batch;
pub mod cluster;
pub mod errors;
pub mod load;
pub mod map;
pub mod reduce;

/// Stack size of every thread that runs job code (map, reduce, `load`,
/// `done`), in bytes: a program's main thread's usual 8 MiB, so a job's
/// recursion depth does not depend on which process or thread runs it
/// (Rust's spawned threads default to 2 MiB). Address space only until used.
pub const JOB_THREAD_STACK: usize = 8 << 20;

pub use batch::{spread_cap, Batch, BatchLimits, Batcher, MAX_BATCH_TASKS};
pub use errors::{cap_error, size_text, task_label, thousands, ErrorLog, MAX_ERROR_BYTES};
pub use load::{load, Loaded, Loader, TaskSource};
pub use map::{map_batch, spawn_map_threads, FailedIn, Folded, TaskFailed, ValueLimit};
pub use reduce::{fold_partials, fold_runs, Ended, Partial, ReduceMemory, Reduced};

use crate::plugin::{CallError, Instance};

/// The job's own code, as the pipeline calls it. Each call may fail (an
/// error or a caught panic, as a [`CallError`]); none may unwind.
pub trait JobCode {
    /// The job's `map` of one task.
    fn map(&self, task: &[u8]) -> Result<Vec<u8>, CallError>;
    /// The job's `reduce`: `current` folded into `acc` (either may be a
    /// partial accumulator; `acc` is empty at first).
    fn reduce(&self, acc: &[u8], current: &[u8]) -> Result<Vec<u8>, CallError>;
    /// The job's `done`, with the result.
    fn done(&self, result: &[u8]) -> Result<(), CallError>;
    /// The job's own batch call: a whole batch (a task list's wire form)
    /// mapped and folded in one call, if the job has one.
    fn fold_batch(&self, _tasks: &[u8], _limit: &ValueLimit) -> Option<Folded> {
        None
    }
}

impl JobCode for Instance {
    fn map(&self, task: &[u8]) -> Result<Vec<u8>, CallError> {
        Instance::map(self, task)
    }

    fn reduce(&self, acc: &[u8], current: &[u8]) -> Result<Vec<u8>, CallError> {
        Instance::reduce(self, acc, current)
    }

    fn done(&self, result: &[u8]) -> Result<(), CallError> {
        Instance::done(self, result)
    }

    fn fold_batch(&self, tasks: &[u8], limit: &ValueLimit) -> Option<Folded> {
        Instance::fold_batch(self, tasks, limit)
    }
}

/// A keyed job's code as the reduce side calls it: in this process (an
/// [`Instance`], the embedded run and the client) or in an executor
/// (a worker's reduce, `worker::reduce`).
pub trait KeyedCode {
    /// A run of pairs through one of the job's reducers: the run with
    /// each key's values combined.
    fn combine(&self, run: &[u8]) -> Result<Vec<u8>, CallError>;
    /// The run's text form, and how many of its bytes were used.
    fn format(&self, run: &[u8]) -> Result<(Vec<u8>, usize), CallError>;
}

impl KeyedCode for Instance {
    fn combine(&self, run: &[u8]) -> Result<Vec<u8>, CallError> {
        let mut reducer = self.reducer()?;
        reducer.add(run)?;
        reducer.finish()
    }

    fn format(&self, run: &[u8]) -> Result<(Vec<u8>, usize), CallError> {
        Instance::format(self, run)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A job for the parts' tests: tasks are decimal numbers, map keeps
    /// them, reduce sums them; `x…` fails map, a value `bad` fails reduce
    /// (the task `bad-reduce` maps to it), and `done` fails on nothing.
    pub struct Sums;

    fn error(message: impl Into<String>) -> CallError {
        CallError {
            panicked: false,
            message: message.into(),
        }
    }

    fn number(b: &[u8]) -> Result<u64, CallError> {
        let text = std::str::from_utf8(b).map_err(|_| error("not text"))?;
        if text.is_empty() {
            return Ok(0);
        }
        text.parse()
            .map_err(|_| error(format!("not a number: {text}")))
    }

    impl JobCode for Sums {
        fn map(&self, task: &[u8]) -> Result<Vec<u8>, CallError> {
            if task == b"bad-reduce" {
                return Ok(b"bad".to_vec());
            }
            Ok(number(task)?.to_string().into_bytes())
        }

        fn reduce(&self, acc: &[u8], current: &[u8]) -> Result<Vec<u8>, CallError> {
            if current == b"bad" {
                return Err(error("will not fold"));
            }
            Ok((number(acc)? + number(current)?).to_string().into_bytes())
        }

        fn done(&self, result: &[u8]) -> Result<(), CallError> {
            if result.is_empty() {
                return Err(error("nothing to do"));
            }
            Ok(())
        }
    }
}
