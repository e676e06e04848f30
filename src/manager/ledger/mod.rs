//! The exactly-once ledger: every request the manager sent a worker and
//! has no answer for, and every batch with copies out.
//!
//! A batch keeps its id for its whole life, whatever copies of it are sent
//! (again after a lost worker, or as a backup near the job's end). The first
//! answer from any copy is applied and removes its entry ([`Ledger::answer`]);
//! a later answer finds no entry and is a duplicate. A copy given up
//! ([`Ledger::lose_copy`]) puts the batch back in its job's queue once no
//! copy is left, by the rules of [`Loss`]: whole the first time, split into
//! single "suspect" tasks after a second crash or timeout, each run alone on
//! a worker, and failed after `--max-retries` losses. So a task that kills
//! its worker, or never ends, fails on its own instead of taking the cluster
//! down one worker at a time, and no innocent task is blamed with it.
//!
//! Pure bookkeeping: no sockets, no jobs. The counts others need (batches in
//! flight per job, suspects per worker) are indexes kept by the two
//! functions that add and remove entries, never by hand elsewhere.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use log::error;

use super::job::Pending;
use super::workers::WorkerId;
use crate::net::ConnId;
use crate::pipeline::task_label;
use crate::plugin::PluginHash;
use crate::proto::msg::TaskList;

/// Why a copy of a batch is given up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loss {
    /// Its worker went away, or was taken away: not the tasks' doing.
    Departed,
    /// Its worker's connection broke while it ran: maybe the tasks' doing.
    Crashed,
    /// The executor that ran it on its worker died, as the message says
    /// (`EXECUTOR_DIED`): maybe the tasks' doing, like a crash.
    ExecutorDied(String),
    /// No answer within --task-timeout: maybe a task that never ends.
    TimedOut,
}

/// A request the manager sent to a worker, by (connection, request id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Ping,
    /// The first request on every connection to a worker.
    Claim,
    Install {
        hash: PluginHash,
    },
    Batch {
        batch: u64,
        job: u64,
        backup: bool,
    },
    Uninstall,
    /// A partition's reduce (see `manager::reduces`).
    Reduce {
        job: u64,
        partition: u32,
    },
    DropShuffle,
}

#[derive(Debug)]
pub struct Outstanding {
    pub what: Request,
    pub sent: Instant,
    /// Its deadline passed (and the worker was marked failing, or the
    /// batch sent elsewhere); an answer is still welcome, and counted as a
    /// duplicate if the work was redone.
    pub expired: bool,
}

/// One copy of a batch, sent to one worker: the request that carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copy {
    pub conn: ConnId,
    pub request: u32,
    pub worker: WorkerId,
}

/// A batch sent and not yet answered.
#[derive(Debug)]
pub struct InFlight {
    pub job: u64,
    pub tasks: TaskList,
    pub first_index: u64,
    pub attempt: u32,
    /// Copies lost with their worker's connection.
    pub losses: u32,
    /// A task suspected of killing its worker: it runs alone on one.
    pub suspect: bool,
    pub copies: Vec<Copy>,
    pub first_sent: Instant,
    pub has_backup: bool,
}

/// What becomes of a batch whose copy was given up.
#[derive(Debug, PartialEq)]
pub enum Requeue {
    /// Another copy is still out (or the batch is answered): nothing.
    Nothing,
    /// Back to the front of its job's queue as it is, no attempt counted.
    Front(Pending),
    /// A suspect lost again: to the back, one more attempt counted.
    Retry(Pending),
    /// Lost twice: its tasks go one by one, as suspects, to the back.
    Suspects(Vec<Pending>),
    /// A suspect lost more than --max-retries times: failed, with why.
    Failed(String),
}

#[derive(Default)]
pub struct Ledger {
    next_request: u32,
    next_batch: u64,
    outstanding: HashMap<(ConnId, u32), Outstanding>,
    batches: HashMap<u64, InFlight>,
    /// Batches in the ledger, per job.
    per_job: HashMap<u64, usize>,
    /// Tasks of batches with a copy out, per job.
    running: HashMap<u64, u64>,
    /// Copies of suspect batches, per worker.
    suspects_on: HashMap<WorkerId, usize>,
}

/// Subtracts `by` from an index entry, removing it at zero. A missing or
/// smaller entry is a broken invariant: logged, never wrapped.
fn subtract<K, N>(map: &mut HashMap<K, N>, key: K, by: N)
where
    K: std::hash::Hash + Eq + std::fmt::Debug,
    N: std::marker::Copy + Default + PartialOrd + std::ops::Sub<Output = N> + std::fmt::Debug,
{
    if by == N::default() {
        return;
    }
    match map.get_mut(&key) {
        Some(n) if *n > by => *n = *n - by,
        Some(n) if *n == by => {
            map.remove(&key);
        }
        other => error!("ledger: invariant broken: {key:?} has {other:?}, less than {by:?}"),
    }
}

fn decrement<K: std::hash::Hash + Eq + std::fmt::Debug>(map: &mut HashMap<K, usize>, key: K) {
    subtract(map, key, 1);
}

impl Ledger {
    pub fn new() -> Ledger {
        Ledger {
            next_request: 1,
            next_batch: 1,
            ..Ledger::default()
        }
    }

    // ---- requests ----

    /// The id for the next request (never 0, which CLIs use for "none").
    pub fn request_id(&mut self) -> u32 {
        let id = self.next_request;
        self.next_request = self.next_request.wrapping_add(1).max(1);
        id
    }

    /// Remembers request `id` sent on `conn` at `now`.
    pub fn sent(&mut self, conn: ConnId, id: u32, what: Request, now: Instant) {
        let o = Outstanding {
            what,
            sent: now,
            expired: false,
        };
        self.outstanding.insert((conn, id), o);
    }

    /// The request an answer is for, if it is still awaited.
    pub fn take(&mut self, conn: ConnId, id: u32) -> Option<Outstanding> {
        self.outstanding.remove(&(conn, id))
    }

    /// Forgets every request sent on `conn`; returns them by request id.
    pub fn take_conn(&mut self, conn: ConnId) -> Vec<(u32, Request)> {
        let keys: Vec<(ConnId, u32)> = self
            .outstanding
            .keys()
            .filter(|(c, _)| *c == conn)
            .copied()
            .collect();
        keys.into_iter()
            .filter_map(|k| self.outstanding.remove(&k).map(|o| (k.1, o.what)))
            .collect()
    }

    /// Requests other than batches and installs unanswered for longer than
    /// `limit`, now marked expired (each is reported once). A batch's tasks
    /// may rightly take long (see [`Ledger::late_batches`]), and so may an
    /// install, answered once the library's initialisers ran.
    pub fn overdue(&mut self, now: Instant, limit: Duration) -> Vec<ConnId> {
        let mut conns = Vec::new();
        for (&(conn, _), o) in &mut self.outstanding {
            // A reduce, like a batch, may rightly take long.
            let exempt = matches!(
                o.what,
                Request::Batch { .. } | Request::Install { .. } | Request::Reduce { .. }
            );
            if !exempt && !o.expired && now.duration_since(o.sent) > limit {
                o.expired = true;
                conns.push(conn);
            }
        }
        conns
    }

    /// Batch requests unanswered for longer than `limit`, now marked
    /// expired: (connection, request, batch).
    pub fn late_batches(&mut self, now: Instant, limit: Duration) -> Vec<(ConnId, u32, u64)> {
        let mut late = Vec::new();
        for (&(conn, id), o) in &mut self.outstanding {
            if let Request::Batch { batch, .. } = o.what {
                if !o.expired && now.duration_since(o.sent) > limit {
                    o.expired = true;
                    late.push((conn, id, batch));
                }
            }
        }
        late
    }

    /// Connections with a ping awaiting its pong.
    pub fn pinged(&self) -> HashSet<ConnId> {
        self.outstanding
            .iter()
            .filter(|(_, o)| o.what == Request::Ping)
            .map(|((conn, _), _)| *conn)
            .collect()
    }

    /// Libraries whose install was under way on `conn`.
    pub fn installing_on(&self, conn: ConnId) -> Vec<PluginHash> {
        self.outstanding
            .iter()
            .filter(|((c, _), _)| *c == conn)
            .filter_map(|(_, o)| match o.what {
                Request::Install { hash } => Some(hash),
                _ => None,
            })
            .collect()
    }

    // ---- batches ----

    /// A fresh batch id.
    pub fn new_batch(&mut self) -> u64 {
        let id = self.next_batch;
        self.next_batch += 1;
        id
    }

    pub fn batch(&self, batch: u64) -> Option<&InFlight> {
        self.batches.get(&batch)
    }

    /// The batch is still to be answered.
    pub fn is_open(&self, batch: u64) -> bool {
        self.batches.contains_key(&batch)
    }

    /// The batch has a copy out on some worker.
    pub fn has_copy(&self, batch: u64) -> bool {
        self.batches
            .get(&batch)
            .is_some_and(|f| !f.copies.is_empty())
    }

    pub fn len(&self) -> usize {
        self.batches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Records a copy of `pending` (whose batch id is `batch`) sent as
    /// `copy` at `now`; the tasks are kept for a resend. A batch already in
    /// the ledger (sent again after a loss) gets `copy` as its new copy.
    pub fn add_copy(&mut self, batch: u64, job: u64, pending: Pending, copy: Copy, now: Instant) {
        if pending.suspect {
            *self.suspects_on.entry(copy.worker).or_default() += 1;
        }
        if let Some(f) = self.batches.get_mut(&batch) {
            if f.copies.is_empty() {
                *self.running.entry(f.job).or_default() += f.tasks.len() as u64;
            }
            f.copies.push(copy);
            return;
        }
        *self.per_job.entry(job).or_default() += 1;
        *self.running.entry(job).or_default() += pending.tasks.len() as u64;
        let entry = InFlight {
            job,
            tasks: pending.tasks,
            first_index: pending.first_index,
            attempt: pending.attempt,
            losses: 0,
            suspect: pending.suspect,
            copies: vec![copy],
            first_sent: now,
            has_backup: false,
        };
        self.batches.insert(batch, entry);
    }

    /// Records a backup copy of an open batch.
    pub fn add_backup(&mut self, batch: u64, copy: Copy) {
        if let Some(f) = self.batches.get_mut(&batch) {
            f.has_backup = true;
            f.copies.push(copy);
        }
    }

    /// Takes the batch out: it is answered (the first answer wins), cut,
    /// or its job is over. None: already answered (a duplicate).
    pub fn remove(&mut self, batch: u64) -> Option<InFlight> {
        let f = self.batches.remove(&batch)?;
        decrement(&mut self.per_job, f.job);
        if !f.copies.is_empty() {
            subtract(&mut self.running, f.job, f.tasks.len() as u64);
        }
        if f.suspect {
            for c in &f.copies {
                decrement(&mut self.suspects_on, c.worker);
            }
        }
        Some(f)
    }

    /// Forgets every batch of `job` (cancelled or failed): answers still on
    /// their way are dropped on arrival.
    pub fn drop_job(&mut self, job: u64) {
        let ids: Vec<u64> = self
            .batches
            .iter()
            .filter(|(_, f)| f.job == job)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.remove(id);
        }
    }

    /// Batches of `job` not yet answered (derived from the entries).
    pub fn in_flight(&self, job: u64) -> usize {
        self.per_job.get(&job).copied().unwrap_or(0)
    }

    /// Tasks of `job` on workers now (derived from the entries).
    pub fn running_tasks(&self, job: u64) -> u64 {
        self.running.get(&job).copied().unwrap_or(0)
    }

    /// Worker `w` runs a suspect task: it gets nothing else meanwhile.
    pub fn holds_suspect(&self, w: WorkerId) -> bool {
        self.suspects_on.contains_key(&w)
    }

    /// Every copy held by worker `w`: (batch, connection, request).
    pub fn copies_on(&self, w: WorkerId) -> Vec<(u64, ConnId, u32)> {
        self.batches
            .iter()
            .flat_map(|(id, f)| {
                f.copies
                    .iter()
                    .filter(|c| c.worker == w)
                    .map(|c| (*id, c.conn, c.request))
            })
            .collect()
    }

    /// Open batches with one copy out, no backup yet and not suspect: the
    /// candidates for a backup copy.
    pub fn backup_candidates(&self) -> impl Iterator<Item = (u64, &InFlight)> {
        self.batches
            .iter()
            .filter(|(_, f)| f.copies.len() == 1 && !f.has_backup && !f.suspect)
            .map(|(id, f)| (*id, f))
    }

    /// Gives up the copy of `batch` sent as `request` on `conn`, lost for
    /// `why`; says what becomes of the batch (see the module's rules).
    pub fn lose_copy(
        &mut self,
        batch: u64,
        (conn, request): (ConnId, u32),
        why: Loss,
        max_retries: u32,
    ) -> Requeue {
        let Some(entry) = self.batches.get_mut(&batch) else {
            return Requeue::Nothing;
        };
        let this = |c: &Copy| c.conn == conn && c.request == request;
        let Some(worker) = entry.copies.iter().find(|c| this(c)).map(|c| c.worker) else {
            return Requeue::Nothing;
        };
        entry.copies.retain(|c| !this(c));
        if entry.suspect {
            decrement(&mut self.suspects_on, worker);
        }
        if !entry.copies.is_empty() {
            return Requeue::Nothing;
        }
        subtract(&mut self.running, entry.job, entry.tasks.len() as u64);
        let whole = |entry: &InFlight, attempt: u32| Pending {
            batch: Some(batch),
            tasks: entry.tasks.clone(),
            first_index: entry.first_index,
            attempt,
            avoid: Some(worker),
            suspect: entry.suspect,
        };
        if why == Loss::Departed {
            return Requeue::Front(whole(entry, entry.attempt));
        }
        if entry.suspect {
            // A suspect runs alone on its worker: its loss is its own doing.
            let attempt = entry.attempt + 1;
            if attempt <= max_retries {
                // The entry is what a resend reuses: count it there.
                entry.attempt = attempt;
                return Requeue::Retry(whole(entry, attempt));
            }
            let label = task_label(
                entry.first_index + 1,
                entry.tasks.iter().next().unwrap_or_default(),
            );
            self.remove(batch);
            return Requeue::Failed(match why {
                Loss::TimedOut => {
                    format!("{label}: no answer within the task timeout, {attempt} times")
                }
                Loss::ExecutorDied(how) => format!("{label}: {how}, {attempt} times"),
                _ => format!("{label}: its worker died while running it, {attempt} times"),
            });
        }
        entry.losses += 1;
        if entry.losses < 2 {
            return Requeue::Front(whole(entry, entry.attempt));
        }
        // Lost twice: some task in it may be killing its workers. Its tasks
        // go one by one, each alone on a worker, so a crash points at the
        // task that caused it.
        let Some(entry) = self.remove(batch) else {
            return Requeue::Nothing;
        };
        let singles = entry
            .tasks
            .iter()
            .enumerate()
            .map(|(i, task)| {
                let mut one = TaskList::new();
                one.push(task);
                Pending {
                    batch: None,
                    tasks: one,
                    first_index: entry.first_index + i as u64,
                    attempt: entry.attempt,
                    avoid: Some(worker),
                    suspect: true,
                }
            })
            .collect();
        Requeue::Suspects(singles)
    }
}

#[cfg(test)]
mod tests;
