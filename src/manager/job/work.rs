//! A job's queue of work to send, and what workers' answers do to it:
//! retries first, then the batch the loader staged; a batch's answer
//! applied (counted, folded, its failed tasks queued again or failed); a
//! lost copy requeued as the ledger decided.

use std::time::Duration;

use super::Job;
use crate::manager::ledger::{InFlight, Requeue};
use crate::manager::sched;
use crate::manager::workers::WorkerId;
use crate::pipeline::task_label;
use crate::proto::msg::{BatchResult, TaskList};

/// Tasks waiting to be sent to a worker.
#[derive(Debug, PartialEq)]
pub struct Pending {
    /// The batch's id once it has one: a batch sent again (after a lost or
    /// silent worker) keeps its id, so whichever copy answers first is
    /// applied and any later answer is recognised as a duplicate.
    pub batch: Option<u64>,
    pub tasks: TaskList,
    pub first_index: u64,
    /// How many times these tasks failed already.
    pub attempt: u32,
    /// Try another worker than this one first (the one it failed on).
    pub avoid: Option<WorkerId>,
    /// Suspected of killing its worker: sent only to a worker with nothing
    /// else in flight.
    pub suspect: bool,
}

impl Pending {
    pub fn new(tasks: TaskList, first_index: u64) -> Pending {
        Pending {
            batch: None,
            tasks,
            first_index,
            attempt: 0,
            avoid: None,
            suspect: false,
        }
    }
}

impl Job {
    /// The next tasks to send to worker `w`: retries first (by
    /// [`sched::pick_retry`]), then new tasks.
    pub fn next_pending_for(
        &mut self,
        w: WorkerId,
        elsewhere: bool,
        idle: bool,
    ) -> Option<Pending> {
        if let Some(i) = sched::pick_retry(&self.retry, w, elsewhere, idle) {
            return self.retry.remove(i);
        }
        let staged = self.staged.take();
        self.pump_loader();
        staged.or_else(|| self.staged.take())
    }

    /// Puts tasks taken for a worker back at the head of the queue (they
    /// could not be sent, or wait for another worker).
    pub fn put_back(&mut self, p: Pending) {
        self.retry.push_front(p);
    }

    /// Carries out what the ledger decided for a batch whose copy was lost.
    pub fn requeue(&mut self, what: Requeue) {
        match what {
            Requeue::Nothing => {}
            Requeue::Front(p) => self.retry.push_front(p),
            Requeue::Retry(p) => {
                self.retried += 1;
                self.retry.push_back(p);
            }
            Requeue::Suspects(singles) => self.retry.extend(singles),
            Requeue::Failed(why) => {
                self.failed += 1;
                self.record_error(why);
            }
        }
    }

    /// Cuts `p` in two halves, queued at the head (a batch too big for the
    /// worker it is for).
    pub fn split(&mut self, mut p: Pending) {
        p.batch = None;
        let n = p.tasks.len();
        let (head, tail) = p.tasks.split_at(n / 2);
        self.retry.push_front(Pending {
            batch: None,
            tasks: tail,
            first_index: p.first_index + (n / 2) as u64,
            attempt: p.attempt,
            avoid: p.avoid,
            suspect: p.suspect,
        });
        self.retry.push_front(Pending { tasks: head, ..p });
    }

    /// Fails one task for good with `why` (e.g. it is larger than any worker
    /// takes): labelled by its number and first bytes.
    pub fn fail_task(&mut self, index: u64, task: &[u8], why: &str) {
        self.failed += 1;
        self.record_error(format!("{}: {why}", task_label(index + 1, task)));
    }

    /// True once every task is loaded and handed out: the tail of the job,
    /// when backup copies of slow batches pay off.
    pub fn in_tail(&self) -> bool {
        self.loader_done && self.staged.is_none() && self.retry.is_empty()
    }

    pub fn has_work(&self) -> bool {
        !self.retry.is_empty() || self.staged.is_some()
    }

    /// Notes where a shuffled batch's pairs stay, with its tasks that
    /// succeeded (to map again if that worker is lost). A worker that
    /// answers without a map output (one too old to keep them) or with
    /// one that does not fit the job's partitions costs the batch's
    /// tasks: they count as failed.
    fn keep_map_output(&mut self, f: &InFlight, r: &BatchResult, w: WorkerId) {
        let failed: std::collections::HashSet<u32> = r.failures.iter().map(|x| x.index).collect();
        let mut ok = TaskList::new();
        for (i, task) in f.tasks.iter().enumerate() {
            if !failed.contains(&(i as u32)) {
                ok.push(task);
            }
        }
        let kept = match (&r.map_output, &mut self.task_log, &mut self.shuffle) {
            (Some(out), Some(log), Some(shuffle)) => log
                .append(&ok)
                .map_err(|e| format!("the task log: {e}"))
                .and_then(|at| shuffle.map_output(w, out.clone(), at, f.first_index)),
            (None, _, _) if r.processed == 0 => Ok(()),
            _ => Err("the worker kept no map output (is it older than this manager?)".into()),
        };
        if let Err(why) = kept {
            let n = u64::from(r.processed);
            crate::manager::invariant::decrement(&mut self.processed, n, "processed tasks");
            self.failed += n;
            self.record_error(format!("map output of {n} tasks lost: {why}"));
        }
    }

    /// Applies the first answer `r` to batch `f`, from worker `w`, `rtt`
    /// after it was sent: counts, folds its value, and queues its failed
    /// tasks again (attempts under `max_retries`, not fatal) or fails them.
    /// Deferred tasks (not run: the batch's value was full) go out again as
    /// one batch with no attempt counted.
    pub fn apply_result(
        &mut self,
        f: InFlight,
        r: BatchResult,
        (w, rtt, backup): (WorkerId, Duration, bool),
        max_retries: u32,
    ) {
        if backup {
            self.backups_won += 1;
        }
        let n = f.tasks.len() as u64;
        self.secs_per_task = sched::pace(self.secs_per_task, rtt.as_secs_f64() / n.max(1) as f64);
        // Deferred tasks were not run: the busy time is the others'.
        let deferred_n = r.failures.iter().filter(|x| x.deferred).count();
        let ran = f.tasks.len().saturating_sub(deferred_n);
        self.sizer
            .observe(ran.max(1), Duration::from_micros(r.busy_us));
        self.processed += u64::from(r.processed);
        if self.shuffle.is_some() {
            self.keep_map_output(&f, &r, w);
        } else if let Some(value) = r.value {
            self.fold(value, u64::from(r.processed));
        }
        if r.failures.is_empty() {
            return;
        }
        let tasks: Vec<&[u8]> = f.tasks.iter().collect();
        let mut deferred: Option<Pending> = None;
        // A worker names each failed task once; a repeat (a confused or
        // hostile peer) must not make a task run or count twice.
        let mut seen = vec![false; tasks.len()];
        for failure in r.failures {
            let index = f.first_index + u64::from(failure.index);
            let Some(task) = tasks.get(failure.index as usize) else {
                continue;
            };
            if std::mem::replace(&mut seen[failure.index as usize], true) {
                continue;
            }
            if failure.deferred {
                let rest = deferred.get_or_insert_with(|| Pending {
                    attempt: f.attempt,
                    ..Pending::new(TaskList::new(), index)
                });
                rest.tasks.push(task);
            } else if f.attempt < max_retries && !failure.fatal {
                self.retried += 1;
                let mut list = TaskList::new();
                list.push(task);
                self.retry.push_back(Pending {
                    batch: None,
                    tasks: list,
                    first_index: index,
                    attempt: f.attempt + 1,
                    avoid: Some(w),
                    suspect: false,
                });
            } else {
                self.fail_task(index, task, &failure.message);
            }
        }
        if let Some(rest) = deferred {
            self.retry.push_front(rest);
        }
    }
}
