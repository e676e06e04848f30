//! Mapping a batch and folding it into one partial accumulator: what a
//! worker does with each batch, and what the embedded run does too.

use super::loader::{CallError, Plugin};

/// Where a task failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailedIn {
    Map,
    /// Its value could not be folded into the batch's accumulator.
    Reduce,
}

#[derive(Debug)]
pub struct TaskFailed {
    /// Index of the task within the batch.
    pub index: u32,
    pub stage: FailedIn,
    pub error: CallError,
}

#[derive(Debug, Default)]
pub struct Folded {
    /// The batch's partial accumulator; `None` if no task succeeded.
    pub value: Option<Vec<u8>>,
    pub processed: u32,
    pub failures: Vec<TaskFailed>,
}

/// Maps every task and folds the values with reduce, starting from the
/// empty accumulator. A failed task is recorded and skipped.
pub fn fold_batch<'a>(plugin: &Plugin, tasks: impl Iterator<Item = &'a [u8]>) -> Folded {
    let mut folded = Folded::default();
    for (index, task) in tasks.enumerate() {
        let index = index as u32;
        let value = match plugin.map(task) {
            Ok(v) => v,
            Err(error) => {
                folded.failures.push(TaskFailed {
                    index,
                    stage: FailedIn::Map,
                    error,
                });
                continue;
            }
        };
        match plugin.reduce(folded.value.as_deref().unwrap_or(&[]), &value) {
            Ok(acc) => {
                folded.value = Some(acc);
                folded.processed += 1;
            }
            Err(error) => folded.failures.push(TaskFailed {
                index,
                stage: FailedIn::Reduce,
                error,
            }),
        }
    }
    folded
}
