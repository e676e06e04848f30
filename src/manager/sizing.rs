//! How many tasks go into one batch.
//!
//! Two limits apply, and the smaller wins:
//!
//! - **Spread**, from the job's estimate: a job of a few hundred tasks is cut
//!   into enough batches that every worker connection gets several.
//! - **Time**, from what workers report: each `BATCH_RESULT` says how long
//!   the worker's thread spent on the batch, so the manager knows the map
//!   time per task and aims at batches of about [`TARGET_BATCH_TIME`].
//!   Tiny tasks then travel thousands to a frame, while a job of one-second
//!   tasks gets batches of one, which spread over every worker thread and
//!   lose little work when a worker dies.
//!
//! Batches start at one task and at most double with each answer (TCP's
//! slow start), so nothing is known to be slow only after a big batch of it
//! has gone out. A slower answer shrinks the target at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use crate::pipeline::{spread_cap, MAX_BATCH_TASKS};

/// Batches are cut at this many bytes of task payload.
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;
/// Map time one batch should take on a worker thread.
pub const TARGET_BATCH_TIME: Duration = Duration::from_millis(50);
/// The first batches' size, before any worker has answered.
const FIRST_BATCH_TASKS: usize = 1;
/// Weight of the newest answer in the moving average of map time per task.
const NEWEST_WEIGHT: f64 = 0.3;

/// The event loop's side: learns from answers and sets the target that the
/// loader thread reads when it cuts the next batch.
#[derive(Debug)]
pub struct BatchSizer {
    target: Arc<AtomicUsize>,
    /// Moving average of map seconds per task; None before the first answer.
    secs_per_task: Option<f64>,
}

impl Default for BatchSizer {
    fn default() -> Self {
        BatchSizer::new()
    }
}

impl BatchSizer {
    pub fn new() -> BatchSizer {
        BatchSizer {
            target: Arc::new(AtomicUsize::new(FIRST_BATCH_TASKS)),
            secs_per_task: None,
        }
    }

    /// The target, shared with the loader thread.
    pub fn shared(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.target)
    }

    pub fn target(&self) -> usize {
        self.target.load(Ordering::Relaxed)
    }

    /// A worker spent `busy` mapping and folding a batch of `tasks` tasks.
    pub fn observe(&mut self, tasks: usize, busy: Duration) {
        if tasks == 0 {
            return;
        }
        let per_task = busy.as_secs_f64() / tasks as f64;
        let avg = match self.secs_per_task {
            None => per_task,
            Some(avg) => (1.0 - NEWEST_WEIGHT) * avg + NEWEST_WEIGHT * per_task,
        };
        self.secs_per_task = Some(avg);
        let ideal = if avg > 0.0 {
            // Saturates for tiny averages; clamped below.
            (TARGET_BATCH_TIME.as_secs_f64() / avg) as usize
        } else {
            MAX_BATCH_TASKS
        };
        let grown = self.target().saturating_mul(2);
        let next = ideal.min(grown).clamp(1, MAX_BATCH_TASKS);
        self.target.store(next, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_tasks_grow_batches_by_doubling_up_to_the_cap() {
        let mut sizer = BatchSizer::new();
        let mut sizes = vec![sizer.target()];
        for _ in 0..20 {
            let n = sizer.target();
            sizer.observe(n, Duration::from_nanos(100 * n as u64));
            sizes.push(sizer.target());
        }
        assert_eq!(&sizes[..5], &[1, 2, 4, 8, 16]);
        assert_eq!(sizer.target(), MAX_BATCH_TASKS);
    }

    #[test]
    fn slow_tasks_keep_batches_at_one() {
        let mut sizer = BatchSizer::new();
        for _ in 0..10 {
            sizer.observe(1, Duration::from_secs(1));
            assert_eq!(sizer.target(), 1);
        }
    }

    #[test]
    fn tasks_turning_slow_shrink_the_batches_at_once() {
        let mut sizer = BatchSizer::new();
        for _ in 0..20 {
            sizer.observe(sizer.target(), Duration::from_micros(1));
        }
        assert_eq!(sizer.target(), MAX_BATCH_TASKS);
        // 8192 tasks that took 8 s: a millisecond each.
        sizer.observe(MAX_BATCH_TASKS, Duration::from_secs(8));
        assert!(sizer.target() < 200, "{}", sizer.target());
    }

    #[test]
    fn batches_aim_at_the_target_time() {
        let mut sizer = BatchSizer::new();
        for _ in 0..30 {
            let n = sizer.target();
            sizer.observe(n, Duration::from_millis(n as u64)); // 1 ms per task
        }
        assert_eq!(sizer.target(), 50);
    }

    #[test]
    fn small_jobs_are_cut_to_spread() {
        assert_eq!(spread_cap(None, 12), MAX_BATCH_TASKS);
        assert_eq!(spread_cap(Some(600), 12), 12);
        assert_eq!(spread_cap(Some(3), 12), 1);
        assert_eq!(spread_cap(Some(u64::MAX), 0), MAX_BATCH_TASKS);
    }
}
