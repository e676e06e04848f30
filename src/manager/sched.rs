//! Scheduling rules: which job's work a worker gets next, which queued
//! batch, whether a batch fits the worker, and which batches get a backup
//! copy on which worker. Pure functions of what the manager knows,
//! returning decisions; the manager carries them out (see `dispatch.rs`).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::job::Pending;
use super::workers::{WorkerId, PIPELINE_DEPTH};

/// Batch slots a cluster of `active` workers (at least one is assumed, so
/// a job started before any attach is still cut to spread) with
/// `max_connections` pooled connections each has: what a new job's batches
/// are sized to fill.
pub fn spread(active: usize, max_connections: usize) -> usize {
    active.max(1) * max_connections * PIPELINE_DEPTH
}

/// Most tasks in one batch under a manager `--max-size` of `max_size`
/// bytes: every task of a batch may fail, and each failure costs a worker
/// 7 bytes of its reply even once the messages' share (a quarter of the
/// manager's --max-size) is spent; so many tasks that their failures alone
/// fit that share.
pub fn batch_tasks(max_size: u32) -> usize {
    (max_size as usize / 4 / 8).max(1)
}

/// The job a worker with room gets work from: the first of `running`, in
/// turn from `round_robin`, that `eligible` says has work for it. Returns
/// the job and the next round-robin position, so jobs take turns.
pub fn pick_job(
    running: &[u64],
    round_robin: usize,
    eligible: impl Fn(u64) -> bool,
) -> Option<(u64, usize)> {
    let n = running.len();
    (0..n)
        .map(|k| (k, running[(round_robin + k) % n]))
        .find(|(_, id)| eligible(*id))
        .map(|(k, id)| (id, (round_robin + k + 1) % n))
}

/// Which queued retry worker `w` takes: the first one that did not fail on
/// `w` (when `elsewhere`, another active worker could take it), and that is
/// not a suspect unless `w` is `idle` (a suspect task runs alone).
pub fn pick_retry(
    retry: &VecDeque<Pending>,
    w: WorkerId,
    elsewhere: bool,
    idle: bool,
) -> Option<usize> {
    retry
        .iter()
        .position(|p| (!elsewhere || p.avoid != Some(w)) && (idle || !p.suspect))
}

/// What to do with a batch of `len` bytes for a worker that takes
/// `budget` bytes in a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// It fits: send it.
    Send,
    /// Another active worker takes it: leave it for that one.
    Elsewhere,
    /// A copy of it is out already: wait for that answer.
    WaitForCopy,
    /// Cut it in two halves, both queued.
    Split,
    /// A single task larger than every worker takes: it fails.
    TooBig,
}

/// Batches are cut to fit every worker attached when the job started; one
/// attached since may take less. A batch that fits another active worker
/// waits for it; else it is halved (once any copy out is answered), and a
/// task that alone is larger than every worker takes fails.
pub fn fit(len: usize, budget: usize, fits_elsewhere: bool, copy_out: bool, tasks: usize) -> Fit {
    if len <= budget {
        Fit::Send
    } else if fits_elsewhere {
        Fit::Elsewhere
    } else if copy_out {
        Fit::WaitForCopy
    } else if tasks > 1 {
        Fit::Split
    } else {
        Fit::TooBig
    }
}

/// The job's pace, seconds per task from sending a batch to its answer, as
/// a moving average weighting the newest answer by a fifth.
pub fn pace(previous: f64, newest: f64) -> f64 {
    if previous == 0.0 {
        newest
    } else {
        0.8 * previous + 0.2 * newest
    }
}

/// A batch of `tasks` tasks first sent at `first_sent` is a straggler at
/// `now` when it has run four times longer than the job's pace predicts
/// (and at least 50 ms): near a job's end, it gets a backup copy (the
/// MapReduce paper's backup tasks, Dean & Ghemawat 2004, §3.6).
pub fn is_straggler(now: Instant, first_sent: Instant, tasks: usize, secs_per_task: f64) -> bool {
    if secs_per_task == 0.0 {
        return false; // no pace known yet
    }
    let expected = secs_per_task * tasks as f64;
    let limit = Duration::from_secs_f64((4.0 * expected).max(0.05));
    now.duration_since(first_sent) > limit
}

/// Where a straggler's backup copy goes: the first of `idle` (active
/// workers with nothing of their own in flight, room on a connection, no
/// suspect task and the job's library) that is not its `holder`.
pub fn backup_target(
    holder: Option<WorkerId>,
    mut idle: impl Iterator<Item = WorkerId>,
) -> Option<WorkerId> {
    idle.find(|w| Some(*w) != holder)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::slots::SlotId;
    use crate::proto::msg::TaskList;

    fn w(i: usize) -> WorkerId {
        WorkerId::from_parts(i, 0)
    }

    #[test]
    fn jobs_take_turns_and_a_job_without_work_is_skipped() {
        let running = [10, 20, 30];
        assert_eq!(pick_job(&running, 0, |_| true), Some((10, 1)));
        assert_eq!(pick_job(&running, 1, |_| true), Some((20, 2)));
        assert_eq!(pick_job(&running, 2, |_| true), Some((30, 0)));
        assert_eq!(pick_job(&running, 0, |id| id == 30), Some((30, 0)));
        assert_eq!(pick_job(&running, 0, |_| false), None);
        assert_eq!(pick_job(&[], 0, |_| true), None);
    }

    #[test]
    fn a_retry_avoids_the_worker_it_failed_on_and_a_suspect_waits_for_an_idle_one() {
        let p = |avoid: Option<usize>, suspect| Pending {
            avoid: avoid.map(w),
            suspect,
            ..Pending::new(TaskList::new(), 0)
        };
        let retry: VecDeque<Pending> = [p(Some(1), false), p(None, true), p(None, false)].into();
        assert_eq!(pick_retry(&retry, w(1), true, false), Some(2));
        assert_eq!(
            pick_retry(&retry, w(1), false, false),
            Some(0),
            "no one else"
        );
        assert_eq!(pick_retry(&retry, w(1), true, true), Some(1));
        assert_eq!(pick_retry(&retry, w(2), true, false), Some(0));
    }

    #[test]
    fn a_batch_too_big_for_its_worker_waits_splits_or_fails() {
        assert_eq!(fit(100, 100, true, true, 5), Fit::Send);
        assert_eq!(fit(101, 100, true, false, 5), Fit::Elsewhere);
        // A worker that takes it is better than waiting for a copy.
        assert_eq!(fit(101, 100, true, true, 5), Fit::Elsewhere);
        assert_eq!(fit(101, 100, false, true, 5), Fit::WaitForCopy);
        assert_eq!(fit(101, 100, false, false, 5), Fit::Split);
        assert_eq!(fit(101, 100, false, false, 1), Fit::TooBig);
    }

    #[test]
    fn a_batch_is_a_straggler_at_four_times_its_expected_time() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        assert!(!is_straggler(at(10_000), t0, 10, 0.0), "no pace yet");
        // 10 tasks at 10 ms: 100 ms expected, a straggler after 400 ms.
        assert!(!is_straggler(at(400), t0, 10, 0.01));
        assert!(is_straggler(at(401), t0, 10, 0.01));
        // Never before 50 ms.
        assert!(!is_straggler(at(50), t0, 1, 0.000_001));
        assert!(is_straggler(at(51), t0, 1, 0.000_001));
    }

    #[test]
    fn a_backup_never_goes_to_the_worker_holding_the_batch() {
        assert_eq!(
            backup_target(Some(w(0)), [w(0), w(1)].into_iter()),
            Some(w(1))
        );
        assert_eq!(backup_target(Some(w(0)), [w(0)].into_iter()), None);
        assert_eq!(backup_target(None, [w(3)].into_iter()), Some(w(3)));
    }

    #[test]
    fn batches_spread_over_every_slot_and_their_failures_fit_a_reply() {
        assert_eq!(spread(0, 4), 8);
        assert_eq!(spread(3, 4), 24);
        assert_eq!(batch_tasks(64 * 1024 * 1024), 2 * 1024 * 1024);
        assert_eq!(batch_tasks(1), 1);
        assert_eq!(pace(0.0, 2.0), 2.0);
        assert!((pace(1.0, 2.0) - 1.2).abs() < 1e-9);
    }
}
