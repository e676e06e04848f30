//! Carrying out the shuffle's decisions (`shuffle.rs`): placing each
//! partition's reduce on a worker once a keyed job's maps are done, the
//! answers to those reduces, what a lost worker costs a shuffle, and the
//! end of a shuffled job (its output's parts kept, its map outputs
//! removed from the workers).

use log::{debug, info, warn};

use super::handler::Manager;
use super::ledger::Request;
use super::shuffle::Lost;
use super::workers::WorkerId;
use crate::net::Io;
use crate::proto::msg::shuffle::{ReduceOutcome, DROP_MAP_OUTPUTS, DROP_PARTITION_OUTPUTS};
use crate::proto::msg::{DropShuffle, Reduce, Reduced};
use crate::proto::{ErrorCode, Message};

impl Manager {
    fn addr_of(&self, w: WorkerId) -> String {
        self.workers
            .get(w)
            .map_or_else(String::new, |wk| wk.addr.clone())
    }

    /// Places the waiting partitions of every shuffled job whose maps are
    /// all done, each on the active worker with the job's library that
    /// runs the fewest reduces (ties: in worker order).
    pub(super) fn place_reduces(&mut self, io: &mut Io<'_>) {
        for id in self.jobs.running() {
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
            for p in shuffle.waiting() {
                let mut load: Vec<(usize, WorkerId)> = self
                    .workers
                    .active()
                    .filter(|(_, wk)| wk.has(&hash))
                    .map(|(w, _)| (self.reduces_on(w), w))
                    .collect();
                load.sort();
                let Some(&(_, w)) = load.first() else {
                    return; // no worker has the library yet
                };
                let Some(conn) = self.some_conn(io, w) else {
                    continue;
                };
                let Some(shuffle) = self.jobs.get(id).and_then(|j| j.shuffle()) else {
                    continue;
                };
                let sources = shuffle.sources(p, w, |x| self.addr_of(x));
                let msg = Message::Reduce(Reduce {
                    hash: hash.0,
                    job: id,
                    partition: p,
                    args: args.clone(),
                    sources,
                });
                let what = Request::Reduce {
                    job: id,
                    partition: p,
                };
                if self.request(io, conn, &msg, what).is_none() {
                    continue;
                }
                debug!("job {id}: partition {p} goes to worker {}", self.addr_of(w));
                if let Some(s) = self.jobs.get_mut(id).and_then(|j| j.shuffle_mut()) {
                    s.placed(p, w);
                }
            }
        }
    }

    /// Reduces running on worker `w`, over every job.
    fn reduces_on(&self, w: WorkerId) -> usize {
        self.jobs
            .live()
            .filter_map(|j| j.shuffle())
            .flat_map(|s| s.parts())
            .filter(|p| p.state == super::shuffle::PartState::Running { worker: w })
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
        let unreachable = match &msg {
            Message::Reduced(r) if r.outcome == ReduceOutcome::Unreachable => {
                // A worker no longer attached had its outputs remapped when
                // it went.
                if r.unreachable.is_empty() {
                    Some(w)
                } else {
                    self.workers.by_addr(&r.unreachable)
                }
            }
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
                warn!("job {id}: partition {p}: {}", r.message);
                shuffle.unreduced(p, w, false);
                // Its map outputs there are as good as lost.
                if let Some(source) = unreachable {
                    let lost = shuffle.lost(source, false);
                    job.remap(&lost.remap);
                }
            }
            Message::Reduced(r) => self.reduce_failed(id, p, w, &r, max_retries),
            Message::Error(e) => {
                // Refused (not installed, busy, shutting down): not the
                // partition's fault; it is placed again.
                debug!("job {id}: partition {p} refused: {e}");
                shuffle.unreduced(p, w, false);
                if e.code == ErrorCode::PLUGIN_MISSING {
                    let hash = job.hash();
                    if let Some(wk) = self.workers.get_mut(w) {
                        wk.installed.remove(&hash);
                    }
                }
            }
            other => {
                warn!(
                    "job {id}: partition {p}: unexpected reply {}",
                    other.opcode()
                );
                shuffle.unreduced(p, w, true);
            }
        }
        self.finish_shuffle(io, id);
    }

    /// A reduce failed of itself: placed again under the retry rules, the
    /// job failed past them.
    fn reduce_failed(&mut self, id: u64, p: u32, w: WorkerId, r: &Reduced, max_retries: u32) {
        let Some(job) = self.jobs.get_mut(id) else {
            return;
        };
        let failures = job.shuffle_mut().map_or(0, |s| s.unreduced(p, w, true));
        warn!(
            "job {id}: partition {p} failed ({failures} times): {}",
            r.message
        );
        if failures > max_retries {
            job.fail(format!("partition {p}'s reduce failed: {}", r.message));
        }
    }

    /// Partition `p`'s `REDUCE` to `w` was lost with its connection: it is
    /// placed again (counted: the reduce may have crashed its worker).
    pub(super) fn reduce_lost(&mut self, id: u64, p: u32, w: WorkerId) {
        let max_retries = self.settings.max_retries;
        let why = Reduced::failed(
            p,
            ReduceOutcome::Failed,
            "its worker's connection was lost".into(),
        );
        if self.jobs.get(id).is_some_and(|j| j.is_running()) {
            self.reduce_failed(id, p, w, &why, max_retries);
        }
    }

    /// Worker `w` is lost: in every running shuffle, its map outputs are
    /// mapped again and its partitions reduced again.
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
                super::shuffle::PartState::Done { reduced, .. } if !reduced.preview.is_empty() => {
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
        let msg = Message::DropShuffle(DropShuffle { job: id, what });
        for w in self.workers.ids() {
            if let Some(conn) = self
                .workers
                .get(w)
                .and_then(|wk| wk.conns.first())
                .map(|c| c.id)
            {
                self.request(io, conn, &msg, Request::DropShuffle);
            }
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
