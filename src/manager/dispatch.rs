//! Carrying out the scheduling rules of `sched.rs`: starting waiting jobs,
//! handing batches to workers with room (jobs take turns), and backup
//! copies of stragglers near a job's end.

use std::sync::Arc;

use log::{debug, info, warn};

use super::handler::Manager;
use super::job::Pending;
use super::ledger::{Copy, Request};
use super::sched::{self, Fit};
use super::sizing::MAX_BATCH_BYTES;
use super::workers::WorkerId;
use crate::net::{ConnId, Io};
use crate::pipeline::thousands;
use crate::proto::msg::MapBatch;
use crate::proto::Message;

/// Partial results a job may have queued for its reducer before dispatch
/// of that job pauses: a slow reduce must not let results pile up.
const MAX_PARTIALS_QUEUED: u64 = 64;
/// …and at most this many bytes of them (16 MiB): the manager's memory for
/// results waiting to be reduced stays bounded however big each is.
const MAX_PARTIAL_BYTES: usize = 16 << 20;

impl Manager {
    /// The largest library chunk or batch the manager sends in one frame.
    pub(super) fn chunk_size(&self) -> usize {
        crate::proto::frame_budget(self.settings.max_size, MAX_BATCH_BYTES)
    }

    /// Starts waiting jobs while fewer than `--max-jobs` run.
    pub(super) fn start_waiting_jobs(&mut self, io: &mut Io<'_>) {
        let mut running = self.jobs.running().len();
        // Jobs that could not start end after the loop: ending one starts
        // waiting jobs itself, which must not overlap this pass.
        let mut failed = Vec::new();
        for id in self.jobs.waiting() {
            if running >= self.settings.max_jobs {
                break;
            }
            let spread = sched::spread(self.workers.active_count(), self.settings.max_connections);
            // Batches fit every attached worker's --max-size, with the
            // job's arguments that travel in each.
            let args_len = self.jobs.get(id).map_or(0, |j| j.args().encoded().len());
            let batch_bytes = self
                .workers
                .values()
                .map(|wk| wk.frame_budget(MAX_BATCH_BYTES))
                .fold(self.chunk_size(), usize::min)
                .saturating_sub(args_len)
                .max(1);
            let batch_tasks = sched::batch_tasks(self.settings.max_size);
            let (tx, waker) = (self.reducer_tx.clone(), Arc::clone(&self.waker));
            let Some(job) = self.jobs.get_mut(id) else {
                continue;
            };
            info!("job {id} ({}): started", job.name());
            let workers = self.workers.active_count();
            // Its executor's limit: the manager's --memory-limit.
            let sizes = (workers, self.settings.memory_limit);
            match job.start(spread, (batch_bytes, batch_tasks), tx, waker, sizes) {
                Ok(()) => running += 1,
                Err(e) => {
                    // Failed by `start`, with why; nothing of it runs.
                    warn!("job {id}: cannot start: {e}");
                    failed.push(id);
                }
            }
        }
        for w in self.workers.ids() {
            self.ensure_installs(io, w);
        }
        for id in failed {
            self.job_ended(io, id);
        }
    }

    /// Hands batches to every worker with room, taking jobs in turn.
    pub(super) fn dispatch(&mut self, io: &mut Io<'_>) {
        let running = self.jobs.running();
        if running.is_empty() {
            return;
        }
        let mut crashed = Vec::new();
        for id in &running {
            if let Some(job) = self.jobs.get_mut(*id) {
                job.pump_loader();
                if !job.is_running() {
                    crashed.push(*id); // its load crashed its executor
                }
            }
        }
        for id in crashed {
            self.job_ended(io, id);
        }
        let max_conns = self.settings.max_connections;
        let more_than_one = self.workers.active_count() > 1;
        loop {
            let mut sent = false;
            for w in self.workers.ids() {
                let Some(worker) = self.workers.get(w) else {
                    continue;
                };
                if !worker.is_active() || !worker.has_capacity(max_conns) {
                    continue;
                }
                if self.ledger.holds_suspect(w) {
                    continue; // a suspect task runs alone
                }
                let jobs = &self.jobs;
                let chosen = sched::pick_job(&running, self.round_robin, |id| {
                    jobs.get(id).is_some_and(|j| {
                        j.has_work()
                            && j.partials_outstanding() < MAX_PARTIALS_QUEUED
                            && j.partial_bytes() < MAX_PARTIAL_BYTES
                            && worker.has(&j.hash())
                    })
                });
                let Some((job_id, next)) = chosen else {
                    continue;
                };
                self.round_robin = next;
                // This worker is active: another one means more than one.
                if self.send_batch(io, w, job_id, more_than_one) {
                    sent = true;
                }
            }
            if !sent {
                break;
            }
        }
        self.send_backups(io);
    }

    /// A free connection to `w` (the least busy with room, or a new one).
    fn free_conn(&mut self, io: &mut Io<'_>, w: WorkerId) -> Option<ConnId> {
        let worker = self.workers.get(w)?;
        match worker.free_conn() {
            Some(i) => Some(worker.conns[i].id),
            None => self.open_conn(io, w),
        }
    }

    /// The next batch of `job_id` that fits worker `w`, taken off the job's
    /// queue; batches too big for `w` wait, are split or fail (see
    /// [`sched::fit`]).
    fn next_batch_for(&mut self, w: WorkerId, job_id: u64, elsewhere: bool) -> Option<Pending> {
        let worker = self.workers.get(w)?;
        let idle = worker.busy() == 0;
        let budget = worker.frame_budget(usize::MAX);
        let (addr, max_size) = (worker.addr.clone(), worker.max_size);
        loop {
            let job = self.jobs.get_mut(job_id)?;
            let p = job.next_pending_for(w, elsewhere, idle)?;
            // A batch sent again may have been answered meanwhile by its
            // first copy: then there is nothing left to do for it.
            if p.batch.is_some_and(|id| !self.ledger.is_open(id)) {
                continue;
            }
            // The job's arguments travel in every batch.
            let len = p.tasks.byte_len() + job.args().encoded().len();
            let fits_elsewhere = self
                .workers
                .active()
                .any(|(o, wk)| o != w && len <= wk.frame_budget(usize::MAX));
            let copy_out = p.batch.is_some_and(|id| self.ledger.has_copy(id));
            match sched::fit(len, budget, fits_elsewhere, copy_out, p.tasks.len()) {
                Fit::Send => return Some(p),
                Fit::Elsewhere => {
                    job.put_back(Pending {
                        avoid: Some(w),
                        ..p
                    });
                    return None;
                }
                Fit::WaitForCopy => {
                    job.put_back(p);
                    return None;
                }
                Fit::Split | Fit::TooBig => {
                    // Sent before to a worker that took it, with no copy
                    // out now: it leaves the ledger and is cut (a late
                    // answer of the old copy is then a duplicate).
                    if let Some(id) = p.batch {
                        self.ledger.remove(id);
                    }
                    let job = self.jobs.get_mut(job_id)?;
                    if p.tasks.len() > 1 {
                        job.split(p);
                    } else {
                        let task = p.tasks.iter().next().unwrap_or_default();
                        let why = format!(
                            "the task is {} bytes, over worker {addr}'s --max-size of {}",
                            thousands(task.len() as u64),
                            thousands(u64::from(max_size))
                        );
                        job.fail_task(p.first_index, task, &why);
                    }
                }
            }
        }
    }

    /// Sends worker `w` a batch of `job_id`; true if one went.
    fn send_batch(&mut self, io: &mut Io<'_>, w: WorkerId, job_id: u64, elsewhere: bool) -> bool {
        let Some(conn) = self.free_conn(io, w) else {
            return false;
        };
        let Some(pending) = self.next_batch_for(w, job_id, elsewhere) else {
            return false;
        };
        let Some((hash, args, shuffle)) = self
            .jobs
            .get(job_id)
            .map(|j| (j.hash(), j.args().clone(), j.shuffle_spec()))
        else {
            return false;
        };
        let batch = match pending.batch {
            Some(id) => id,
            None => self.ledger.new_batch(),
        };
        let msg = Message::MapBatch(MapBatch {
            hash: hash.0,
            batch_id: batch,
            tasks: pending.tasks,
            reply_limit: self.settings.max_size,
            args,
            shuffle,
        });
        let what = Request::Batch {
            batch,
            job: job_id,
            backup: false,
        };
        let sent = self.request(io, conn, &msg, what);
        let Message::MapBatch(MapBatch { tasks, .. }) = msg else {
            unreachable!("built as MAP_BATCH above")
        };
        let pending = Pending { tasks, ..pending };
        let Some(request) = sent else {
            if let Some(job) = self.jobs.get_mut(job_id) {
                job.put_back(pending);
            }
            return false;
        };
        if let Some(c) = self.workers.get_mut(w).and_then(|wk| wk.conn_mut(conn)) {
            c.in_flight += 1;
        }
        let copy = Copy {
            conn,
            request,
            worker: w,
        };
        self.ledger.add_copy(batch, job_id, pending, copy, io.now());
        true
    }

    /// Near a job's end, a batch far slower than the job's typical pace
    /// gets a backup copy on an idle worker (the MapReduce paper's backup
    /// tasks); whichever copy answers first wins.
    fn send_backups(&mut self, io: &mut Io<'_>) {
        if !self.settings.backup_tasks {
            return;
        }
        let now = io.now();
        let jobs = &self.jobs;
        let stragglers: Vec<(u64, u64)> = self
            .ledger
            .backup_candidates()
            .filter(|(_, f)| {
                jobs.get(f.job).is_some_and(|job| {
                    job.in_tail()
                        && sched::is_straggler(
                            now,
                            f.first_sent,
                            f.tasks.len(),
                            job.secs_per_task(),
                        )
                })
            })
            .map(|(id, f)| (id, f.job))
            .collect();
        let max_conns = self.settings.max_connections;
        for (batch, job_id) in stragglers {
            let Some((hash, args, shuffle)) = self
                .jobs
                .get(job_id)
                .map(|j| (j.hash(), j.args().clone(), j.shuffle_spec()))
            else {
                continue;
            };
            let holder = self
                .ledger
                .batch(batch)
                .and_then(|f| f.copies.first())
                .map(|c| c.worker);
            let ledger = &self.ledger;
            let idle = self.workers.active().filter(|(id, wk)| {
                wk.busy() == 0
                    && !ledger.holds_suspect(*id)
                    && wk.has_capacity(max_conns)
                    && wk.has(&hash)
            });
            let Some(w) = sched::backup_target(holder, idle.map(|(id, _)| id)) else {
                continue;
            };
            let Some(conn) = self.some_conn(io, w) else {
                continue;
            };
            let Some(tasks) = self.ledger.batch(batch).map(|f| f.tasks.clone()) else {
                continue;
            };
            let msg = Message::MapBatch(MapBatch {
                hash: hash.0,
                batch_id: batch,
                tasks,
                reply_limit: self.settings.max_size,
                args,
                shuffle,
            });
            let what = Request::Batch {
                batch,
                job: job_id,
                backup: true,
            };
            let Some(request) = self.request(io, conn, &msg, what) else {
                continue;
            };
            if let Some(c) = self.workers.get_mut(w).and_then(|wk| wk.conn_mut(conn)) {
                c.in_flight += 1;
            }
            self.ledger.add_backup(
                batch,
                Copy {
                    conn,
                    request,
                    worker: w,
                },
            );
            if let Some(job) = self.jobs.get_mut(job_id) {
                job.backup_sent();
            }
            self.monitor.backups += 1;
            debug!("batch {batch}: backup copy sent to worker {w}");
        }
    }
}
