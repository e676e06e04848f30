//! Cutting a stream of tasks into batches.
//!
//! A batch closes at [`BatchLimits::tasks`] tasks or once its encoded size
//! reaches [`BatchLimits::bytes`], whichever comes first, and at each load
//! error: every batch then holds tasks that `load` yielded one after the
//! other, so `first_index + i + 1` is task `i`'s number as the user counts
//! it (the n-th item `load` yielded, errors included) and a failure can be
//! named exactly.

use crate::proto::msg::TaskList;

/// Most tasks in one batch.
pub const MAX_BATCH_TASKS: usize = 8192;

/// The largest batch that still spreads a job of `estimate` tasks over
/// `slots` batches in flight (a cluster's connections, or an embedded
/// run's map threads), four or more each; [`MAX_BATCH_TASKS`] when the job
/// gives no estimate.
pub fn spread_cap(estimate: Option<u64>, slots: usize) -> usize {
    estimate.map_or(MAX_BATCH_TASKS, |n| {
        let per_slot = n / (slots.max(1) as u64 * 4);
        usize::try_from(per_slot).map_or(MAX_BATCH_TASKS, |n| n.clamp(1, MAX_BATCH_TASKS))
    })
}

/// When a batch closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// At this many tasks (at least 1 is used).
    pub tasks: usize,
    /// Or once the batch's encoded size ([`TaskList::byte_len`]: payloads
    /// plus 4 bytes per task plus 4) reaches this many bytes. A task is
    /// never split, so one task over it makes a batch of one.
    pub bytes: usize,
}

/// Tasks that `load` yielded one after the other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The tasks, as they travel in a `MAP_BATCH`.
    pub tasks: TaskList,
    /// Items `load` yielded before this batch's first task, errors
    /// included: task `i` of the batch is the user's task number
    /// `first_index + i + 1`.
    pub first_index: u64,
}

/// Builds batches as tasks arrive, one open batch at a time.
///
/// Tasks are copied once, into the open batch's [`TaskList`] (the form in
/// which they travel); a new batch starts with room for as many bytes as
/// the last one took, so a batch grows without reallocating.
#[derive(Debug)]
pub struct Batcher {
    open: TaskList,
    first_index: u64,
    /// Items seen so far, errors included.
    yielded: u64,
    limits: BatchLimits,
}

impl Batcher {
    /// A batcher with no task seen yet, cutting at `limits`.
    pub fn new(limits: BatchLimits) -> Batcher {
        Batcher {
            open: TaskList::new(),
            first_index: 0,
            yielded: 0,
            limits,
        }
    }

    /// Sets the limits from the next task on (a batch already past them
    /// closes with its next task).
    pub fn set_limits(&mut self, limits: BatchLimits) {
        self.limits = limits;
    }

    /// Items seen so far, tasks and errors.
    pub fn yielded(&self) -> u64 {
        self.yielded
    }

    /// Adds the next task; returns the batch it closed, if it closed one.
    pub fn push(&mut self, task: &[u8]) -> Option<Batch> {
        self.yielded += 1;
        self.open.push(task);
        let full =
            self.open.len() >= self.limits.tasks || self.open.byte_len() >= self.limits.bytes;
        full.then(|| self.close())
    }

    /// Counts the next item as a load error: closes the open batch (if it
    /// holds any task) so numbering stays exact. Returns that batch and the
    /// error's own item number, from 1.
    pub fn error(&mut self) -> (Option<Batch>, u64) {
        self.yielded += 1;
        let closed = (!self.open.is_empty()).then(|| self.close());
        self.first_index = self.yielded;
        (closed, self.yielded)
    }

    /// The last batch, if it holds any task.
    pub fn finish(mut self) -> Option<Batch> {
        (!self.open.is_empty()).then(|| self.close())
    }

    fn close(&mut self) -> Batch {
        // A batch closed at its byte limit is past it by up to one task:
        // room for all of it, or the next one reallocates at its last task.
        let room = self
            .open
            .byte_len()
            .min(self.limits.bytes.saturating_mul(2));
        let tasks = std::mem::replace(&mut self.open, TaskList::with_capacity(room));
        let batch = Batch {
            tasks,
            first_index: self.first_index,
        };
        self.first_index = self.yielded;
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(tasks: usize, bytes: usize) -> BatchLimits {
        BatchLimits { tasks, bytes }
    }

    fn shape(b: &Batch) -> (u64, Vec<&[u8]>) {
        (b.first_index, b.tasks.iter().collect())
    }

    #[test]
    fn a_batch_closes_at_its_task_limit() {
        let mut b = Batcher::new(limits(2, usize::MAX));
        assert_eq!(b.push(b"1"), None);
        let first = b.push(b"2").expect("closed at 2 tasks");
        assert_eq!(shape(&first), (0, vec![&b"1"[..], b"2"]));
        assert_eq!(b.push(b"3"), None);
        let last = b.finish().expect("the rest");
        assert_eq!(shape(&last), (2, vec![&b"3"[..]]));
    }

    #[test]
    fn a_batch_closes_at_its_byte_limit_and_a_big_task_goes_alone() {
        // Encoded: 4 + (4 + 3) = 11 bytes after one task, 18 after two.
        let mut b = Batcher::new(limits(100, 18));
        assert_eq!(b.push(b"abc"), None);
        let two = b.push(b"def").expect("18 bytes");
        assert_eq!(two.tasks.byte_len(), 18);
        let big = b.push(&[7; 100]).expect("over the limit alone");
        assert_eq!((big.first_index, big.tasks.len()), (2, 1));
        assert_eq!(b.finish(), None);
    }

    #[test]
    fn a_load_error_closes_the_batch_and_takes_a_number() {
        let mut b = Batcher::new(limits(10, usize::MAX));
        b.push(b"1");
        b.push(b"2");
        let (closed, number) = b.error();
        assert_eq!(number, 3);
        assert_eq!(shape(&closed.unwrap()), (0, vec![&b"1"[..], b"2"]));
        // Errors in a row close nothing.
        assert_eq!(b.error(), (None, 4));
        b.push(b"5");
        assert_eq!(shape(&b.finish().unwrap()), (4, vec![&b"5"[..]]));
    }

    #[test]
    fn new_limits_apply_from_the_next_task() {
        let mut b = Batcher::new(limits(1, usize::MAX));
        assert!(b.push(b"1").is_some());
        b.set_limits(limits(3, usize::MAX));
        assert_eq!(b.push(b"2"), None);
        assert_eq!(b.push(b"3"), None);
        let third = b.push(b"4").unwrap();
        assert_eq!((third.first_index, third.tasks.len()), (1, 3));
        assert_eq!(b.yielded(), 4);
        // A zero task limit still makes batches of one.
        let mut z = Batcher::new(limits(0, usize::MAX));
        assert_eq!(z.push(b"x").map(|b| b.tasks.len()), Some(1));
    }
}
