//! Carrying out the shuffle's decisions (`shuffle.rs`): placing each
//! partition's reduce on a worker once a keyed job's maps are done, the
//! answers to those reduces, what a lost worker costs a shuffle, and the
//! end of a shuffled job (its output's parts kept, its map outputs
//! removed from the workers).

use log::{debug, info, warn};

use super::handler::{Cause, Manager};
use super::jobs::Jobs;
use super::ledger::Request;
use super::shuffle::{Lost, PartState, Unreduced};
use super::workers::{Event, WorkerId};
use crate::net::Io;
use crate::plugin::PluginHash;
use crate::proto::msg::shuffle::{ReduceOutcome, DROP_MAP_OUTPUTS, DROP_PARTITION_OUTPUTS};
use crate::proto::msg::{DropShuffle, JobStatus, Reduce};
use crate::proto::{ErrorCode, Message};

/// Most reduces the manager has out to one worker at once: a worker runs
/// a reduce per map thread, so a few queue there, and a `--reducers 4096`
/// job does not send 4,096 source lists at once.
pub const MAX_REDUCES_PER_WORKER: usize = 4;

/// Most drops kept for one worker without a connection.
const MAX_PENDING_DROPS: usize = 1024;

/// The encoded size of `msg`'s payload.
fn msg_len(msg: &Message) -> usize {
    let mut out = Vec::new();
    msg.encode_payload(&mut out);
    out.len()
}

fn job_hash(jobs: &Jobs, id: u64) -> PluginHash {
    jobs.get(id).map_or(PluginHash([0; 32]), |j| j.hash())
}

impl Manager {
    fn addr_of(&self, w: WorkerId) -> String {
        self.workers
            .get(w)
            .map_or_else(String::new, |wk| wk.addr.clone())
    }

    /// Places the waiting partitions of every shuffled job whose maps are
    /// all done, each on the active worker with the job's library that
    /// runs the fewest reduces (ties: in worker order), at most
    /// [`MAX_REDUCES_PER_WORKER`] on one worker at once. A `REDUCE` that
    /// would not fit the worker's frames fails the job, with why.
    pub(super) fn place_reduces(&mut self, io: &mut Io<'_>) {
        let mut too_big = Vec::new();
        'jobs: for id in self.jobs.running() {
            let Some(job) = self.jobs.get(id) else {
                continue;
            };
            let Some(shuffle) = job.shuffle() else {
                continue;
            };
            if !job.maps_complete(self.ledger.in_flight(id)) {
                continue;
            }
            let (hash, args) = (job.hash(), job.args().clone());
            let (output_dir, output_form) =
                (job.options().output_dir.clone(), job.options().output_form);
            for p in shuffle.waiting() {
                let mut load: Vec<(usize, WorkerId)> = self
                    .workers
                    .active()
                    .filter(|(_, wk)| wk.has(&hash))
                    .map(|(w, _)| (self.reduces_on(w), w))
                    .filter(|(n, _)| *n < MAX_REDUCES_PER_WORKER)
                    .collect();
                load.sort();
                let Some(&(_, w)) = load.first() else {
                    continue 'jobs; // no room (or no library) yet
                };
                let Some(shuffle) = self.jobs.get_mut(id).and_then(|j| j.shuffle_mut()) else {
                    continue 'jobs;
                };
                let range = shuffle.range(p);
                let Some(shuffle) = self.jobs.get(id).and_then(|j| j.shuffle()) else {
                    continue 'jobs;
                };
                let sources = shuffle.sources(p, w, |x| self.addr_of(x));
                let msg = Message::Reduce(Reduce {
                    hash: hash.0,
                    job: id,
                    partition: p,
                    args: args.clone(),
                    sources,
                    range,
                    output_dir: output_dir.clone(),
                    output_form,
                });
                let budget = self
                    .workers
                    .get(w)
                    .map_or(0, |wk| wk.frame_budget(usize::MAX));
                let len = msg_len(&msg);
                if len > budget {
                    too_big.push((
                        id,
                        format!(
                            "partition {p}'s REDUCE lists {len} bytes of map outputs, over worker \
                             {}'s --max-size: use fewer --reducers or a larger --max-size",
                            self.addr_of(w)
                        ),
                    ));
                    continue 'jobs;
                }
                let Some(conn) = self.some_conn(io, w) else {
                    continue;
                };
                let what = Request::Reduce {
                    job: id,
                    partition: p,
                };
                if self.request(io, conn, &msg, what).is_none() {
                    continue;
                }
                let addr = self.addr_of(w);
                debug!("job {id}: partition {p} goes to worker {addr}");
                if let Some(s) = self.jobs.get_mut(id).and_then(|j| j.shuffle_mut()) {
                    s.placed(p, w, addr);
                }
            }
        }
        for (id, why) in too_big {
            if let Some(job) = self.jobs.get_mut(id) {
                warn!("job {id}: {why}");
                job.fail(why);
            }
        }
    }

    /// Reduces running on worker `w`, over every job.
    fn reduces_on(&self, w: WorkerId) -> usize {
        self.jobs
            .live()
            .filter_map(|j| j.shuffle())
            .flat_map(|s| s.parts())
            .filter(|p| p.state == PartState::Running { worker: w })
            .count()
    }

    /// Worker `w` answered partition `p`'s `REDUCE` of job `id`.
    pub(super) fn reduce_answered(
        &mut self,
        io: &mut Io<'_>,
        w: WorkerId,
        id: u64,
        p: u32,
        msg: Message,
    ) {
        let max_retries = self.settings.max_retries;
        // The worker whose map outputs could not be read; one no longer
        // attached had them mapped again when it went.
        let source = match &msg {
            Message::Reduced(r) if r.outcome == ReduceOutcome::Unreachable => {
                if r.unreachable.is_empty() {
                    Some(w)
                } else {
                    self.workers.by_addr(&r.unreachable)
                }
            }
            _ => None,
        };
        let refused = match &msg {
            Message::Error(e) => Some(e.clone()),
            _ => None,
        };
        let Some(job) = self.jobs.get_mut(id) else {
            return;
        };
        if !job.is_running() {
            return;
        }
        let Some(shuffle) = job.shuffle_mut() else {
            return;
        };
        match msg {
            Message::Reduced(r) if r.outcome == ReduceOutcome::Done => {
                if !shuffle.reduced(p, w, r) {
                    job.duplicate();
                    self.monitor.duplicates += 1;
                }
            }
            Message::Reduced(r) if r.outcome == ReduceOutcome::Unreachable => {
                let Some(part) = shuffle.unreduced(p, w, Unreduced::Unreachable) else {
                    return; // stale: the partition moved on
                };
                warn!("job {id}: partition {p}: {}", r.message);
                if part.unreachable > max_retries + 2 {
                    job.fail(format!("partition {p}: {}", r.message));
                } else if let Some(source) = source {
                    // Its map outputs there are as good as lost.
                    let lost = shuffle.lost(source, false);
                    job.remap(&lost.remap);
                }
            }
            Message::Reduced(r) => {
                let Some(part) = shuffle.unreduced(p, w, Unreduced::Failed) else {
                    return;
                };
                warn!(
                    "job {id}: partition {p}'s reduce failed ({} times): {}",
                    part.failures, r.message
                );
                if part.failures > max_retries {
                    job.fail(format!("partition {p}'s reduce failed: {}", r.message));
                }
            }
            Message::Error(_) => {
                // Refused: not the partition's fault; it is placed again.
                shuffle.unreduced(p, w, Unreduced::Refused);
            }
            other => {
                warn!(
                    "job {id}: partition {p}: unexpected reply {}",
                    other.opcode()
                );
                shuffle.unreduced(p, w, Unreduced::Failed);
            }
        }
        if let Some(e) = refused {
            debug!("job {id}: partition {p} refused: {e}");
            match e.code {
                ErrorCode::PLUGIN_MISSING => {
                    if let Some(wk) = self.workers.get_mut(w) {
                        wk.installed.remove(&job_hash(&self.jobs, id));
                    }
                }
                ErrorCode::SHUTTING_DOWN => {
                    let cause = Cause {
                        code: ErrorCode::SHUTTING_DOWN,
                        why: "it is shutting down",
                    };
                    self.worker_event(io, w, Event::Failed, cause);
                }
                ErrorCode::WRONG_PEER => self.claim_lost(io, w, &e.message),
                _ => {}
            }
        }
        self.finish_shuffle(io, id);
    }

    /// Partition `p`'s `REDUCE` to `w` was lost with its connection: it is
    /// placed again (counted: the reduce may have crashed its worker).
    pub(super) fn reduce_lost(&mut self, id: u64, p: u32, w: WorkerId) {
        let max_retries = self.settings.max_retries;
        let Some(job) = self.jobs.get_mut(id) else {
            return;
        };
        if !job.is_running() {
            return;
        }
        let failures = job
            .shuffle_mut()
            .and_then(|s| s.unreduced(p, w, Unreduced::Failed))
            .map(|part| part.failures);
        if failures.is_some_and(|n| n > max_retries) {
            job.fail(format!(
                "partition {p}'s reduce was lost with its worker {} times",
                max_retries + 1
            ));
        }
    }

    /// Worker `w` is lost (or no longer reachable): in every running
    /// shuffle, its map outputs are mapped again and its partitions
    /// reduced again.
    pub(super) fn shuffle_worker_lost(&mut self, w: WorkerId) {
        for id in self.jobs.running() {
            let Some(job) = self.jobs.get_mut(id) else {
                continue;
            };
            let Some(shuffle) = job.shuffle_mut() else {
                continue;
            };
            let lost: Lost = shuffle.lost(w, true);
            if !lost.remap.is_empty() || !lost.rerun.is_empty() {
                info!(
                    "job {id}: a lost worker costs {} map outputs and partitions {:?}",
                    lost.remap.len(),
                    lost.rerun
                );
            }
            job.remap(&lost.remap);
        }
    }

    /// Shuffled jobs failed by their shuffle (a reduce failing past the
    /// retries, a task log that cannot be read) end here: no reducer
    /// thread reports their end.
    pub(super) fn end_failed_shuffles(&mut self, io: &mut Io<'_>) {
        let failed: Vec<u64> = self
            .jobs
            .live()
            .filter(|j| j.shuffle().is_some() && j.status() == JobStatus::Failed)
            .map(|j| j.id())
            .collect();
        for id in failed {
            self.job_ended(io, id);
        }
    }

    /// Ends shuffled job `id` once every partition is reduced: its parts
    /// are kept for the client, its map outputs go from the workers.
    pub(super) fn finish_shuffle(&mut self, io: &mut Io<'_>, id: u64) {
        let Some(job) = self.jobs.get(id) else {
            return;
        };
        if !job.is_running() {
            return;
        }
        let Some(shuffle) = job.shuffle() else {
            return;
        };
        if !shuffle.is_done() {
            return;
        }
        let Some(parts) = shuffle.output(|w| self.addr_of(w)) else {
            return;
        };
        let (_, spills, spilled, output_len) = shuffle.totals();
        let preview = shuffle
            .parts()
            .iter()
            .find_map(|p| match &p.state {
                PartState::Done { reduced, .. } if !reduced.preview.is_empty() => {
                    Some(reduced.preview.clone())
                }
                _ => None,
            })
            .unwrap_or_default();
        self.outputs.keep_parts(id, parts, io.now());
        let Some(job) = self.jobs.get_mut(id) else {
            return;
        };
        job.spilled(crate::shuffle::SpillStats {
            spills,
            bytes: spilled,
        });
        job.end(output_len, preview, None);
        let s = job.summary(0, false);
        info!(
            "job {id} ({}): {} — {} processed, {} failed, {} retried",
            s.name,
            s.status.name(),
            s.processed,
            s.failed,
            s.retried
        );
        self.job_ended(io, id);
    }

    /// Tells every worker to remove job `id`'s shuffle files (`what`: the
    /// `DROP_SHUFFLE` bits). A worker that misses it removes them when
    /// the manager lets go of it.
    pub(super) fn drop_shuffle(&mut self, io: &mut Io<'_>, id: u64, what: u8) {
        let drop = DropShuffle { job: id, what };
        for w in self.workers.ids() {
            match self
                .workers
                .get(w)
                .and_then(|wk| wk.conns.first())
                .map(|c| c.id)
            {
                Some(conn) => {
                    self.request(io, conn, &Message::DropShuffle(drop), Request::DropShuffle);
                }
                // Sent when it is back (see `send_pending_drops`); past
                // the bound, its own claim expiry removes the files.
                None => {
                    let pending = self.pending_drops.entry(w).or_default();
                    if pending.len() < MAX_PENDING_DROPS {
                        pending.push(drop);
                    }
                }
            }
        }
    }

    /// Sends worker `w` the drops it missed while it had no connection.
    pub(super) fn send_pending_drops(&mut self, io: &mut Io<'_>, w: WorkerId) {
        let Some(drops) = self.pending_drops.remove(&w) else {
            return;
        };
        let Some(conn) = self.some_conn(io, w) else {
            self.pending_drops.insert(w, drops);
            return;
        };
        for drop in drops {
            self.request(io, conn, &Message::DropShuffle(drop), Request::DropShuffle);
        }
    }

    /// A job ended: its map outputs go; so do its partition outputs unless
    /// they are kept for its client.
    pub(super) fn shuffle_ended(&mut self, io: &mut Io<'_>, id: u64, kept: bool) {
        let what = if kept {
            DROP_MAP_OUTPUTS
        } else {
            DROP_MAP_OUTPUTS | DROP_PARTITION_OUTPUTS
        };
        self.drop_shuffle(io, id, what);
    }

    /// Outputs kept on workers past their time: the workers remove them.
    pub(super) fn expire_parts(&mut self, io: &mut Io<'_>) {
        for id in self.outputs.expire_parts(io.now()) {
            self.drop_shuffle(io, id, DROP_PARTITION_OUTPUTS);
        }
    }
}
