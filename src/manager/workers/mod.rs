//! The manager's workers: one record per attached worker, named by a
//! generational [`WorkerId`] (a table slot is reused after a detach, and an
//! id kept by a batch or a queue never finds the worker that took its slot),
//! and the one transition function of a worker's state, [`step`].
//!
//! A worker's state changes only through [`step`]: an [`Event`] in, the next
//! state and an [`Intent`] out, in one `match`, like `net/auth.rs`. The
//! manager carries the intent out (answers a CLI, sends batches elsewhere,
//! reconnects); this module does no I/O.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::net::slots::{SlotId, Slots};
use crate::net::ConnId;
use crate::plugin::PluginHash;

/// Batches in flight on one connection at a time (pipelined by request id).
pub const PIPELINE_DEPTH: usize = 2;

/// First and longest pause between reconnection attempts.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(250);
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Names one attached worker for as long as it is attached, and no other
/// after it (see `net::slots`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkerId {
    index: usize,
    generation: u64,
}

impl WorkerId {
    /// A worker id made up for tests of pure bookkeeping.
    #[cfg(test)]
    pub fn for_tests(index: u32) -> WorkerId {
        WorkerId {
            index: index as usize,
            generation: 1,
        }
    }
}

impl SlotId for WorkerId {
    fn from_parts(index: usize, generation: u64) -> WorkerId {
        WorkerId { index, generation }
    }
    fn index(self) -> usize {
        self.index
    }
    fn generation(self) -> u64 {
        self.generation
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "worker {}.{}", self.index, self.generation)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// Being attached: waiting for its first answer.
    Connecting,
    /// Taking work.
    Active,
    /// Lost; trying again at `retry_at`.
    Failing {
        retry_at: Instant,
        backoff: Duration,
    },
    /// Being detached: no new work, waiting for its batches in flight.
    Detaching,
}

impl WorkerState {
    pub fn name(self) -> &'static str {
        match self {
            WorkerState::Connecting => "connecting",
            WorkerState::Active => "active",
            WorkerState::Failing { .. } => "failing",
            WorkerState::Detaching => "detaching",
        }
    }
}

/// What happened to a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// It answered a ping or took this manager's claim: alive, and ours.
    Answered,
    /// It is failing: silent past the read timeout, shutting down, claimed
    /// by another manager, or refusing the claim.
    Failed,
    /// Its last connection closed.
    Disconnected,
    /// A DETACH for it. `busy`: it holds batches that are still its to
    /// answer; `force`: the manager runs with `--force-detach`.
    DetachAsked { busy: bool, force: bool },
    /// It holds no batch any more.
    Drained,
    /// The manager's tick, for a worker with no connection left.
    Tick,
}

/// What the manager must do after a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    Nothing,
    /// First answer: answer the ATTACH that waits, send it its libraries.
    Attached,
    /// Alive (again, or still): send it the libraries it lacks.
    Serve,
    /// Failing: its batches go to the others; its connections stay open
    /// (a late answer is used, or counted as a duplicate).
    FailOver,
    /// Lost with its connections: it may come back empty, so its libraries
    /// are forgotten (its batches went back when the connections closed).
    Lost,
    /// Detaching: the DETACH waits for its batches.
    ParkDetach,
    /// A DETACH for a worker already detaching: refused.
    AlreadyDetaching,
    /// Remove it now (its batches go back whole) and answer the CLI that
    /// waits on it: DETACHED for a detach, an error for an attach.
    Remove,
    /// It never became a worker of ours: remove it, and refuse the ATTACH.
    AbandonAttach,
    /// Open a connection and ping it.
    Reconnect,
}

/// The one transition function of a worker's state: `event` in `state` at
/// `now`, the next state and what to do. (A state after `Remove` or
/// `AbandonAttach` is never looked at: the record goes.)
pub fn step(state: WorkerState, event: Event, now: Instant) -> (WorkerState, Intent) {
    use Event as E;
    use WorkerState as S;
    let failing = S::Failing {
        retry_at: now + FIRST_BACKOFF,
        backoff: FIRST_BACKOFF,
    };
    match (state, event) {
        (S::Connecting, E::Answered) => (S::Active, Intent::Attached),
        // A pong only says the worker is alive: one being detached stays so.
        (S::Failing { .. }, E::Answered) => (S::Active, Intent::Serve),
        (S::Active | S::Detaching, E::Answered) => (state, Intent::Serve),

        (S::Connecting, E::Failed | E::Disconnected) => (state, Intent::AbandonAttach),
        (S::Active, E::Failed) => (failing, Intent::FailOver),
        (S::Active, E::Disconnected) => (failing, Intent::Lost),
        // Its batches go to the others either way: it is detached now.
        (S::Detaching, E::Failed | E::Disconnected) => (state, Intent::Remove),
        (S::Failing { .. }, E::Failed | E::Disconnected) => (state, Intent::Nothing),

        (S::Detaching, E::DetachAsked { .. }) => (state, Intent::AlreadyDetaching),
        // Only an active worker's batches are worth waiting for: a failing
        // one has handed its batches to the others already, and may never
        // answer again.
        (
            S::Active,
            E::DetachAsked {
                busy: true,
                force: false,
            },
        ) => (S::Detaching, Intent::ParkDetach),
        (_, E::DetachAsked { .. }) => (state, Intent::Remove),

        (S::Detaching, E::Drained) => (state, Intent::Remove),
        (_, E::Drained) => (state, Intent::Nothing),

        // Reconnect with capped exponential backoff.
        (S::Failing { retry_at, backoff }, E::Tick) if retry_at <= now => {
            let next = (backoff * 2).min(MAX_BACKOFF);
            let state = S::Failing {
                retry_at: now + next,
                backoff: next,
            };
            (state, Intent::Reconnect)
        }
        (_, E::Tick) => (state, Intent::Nothing),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Install {
    /// Chunks are being sent.
    Sending,
    Done,
    /// The worker refused it; not retried until the worker comes back.
    Failed,
}

#[derive(Debug)]
pub struct WorkerConn {
    pub id: ConnId,
    /// Batches sent on it and not answered.
    pub in_flight: usize,
    /// Of those, the ones past --task-timeout: sent elsewhere, but still
    /// on the worker (a thread may be stuck in one), so their slots stay
    /// taken until they are answered.
    pub stuck: usize,
}

/// One attached worker: its state, its fixed pool of at most
/// `--max-connections` connections (opened lazily, reused for the whole
/// attachment), and which job libraries it has.
#[derive(Debug)]
pub struct Worker {
    /// The address as the user gave it.
    pub addr: String,
    pub sock: SocketAddr,
    state: WorkerState,
    pub conns: Vec<WorkerConn>,
    pub installed: HashMap<PluginHash, Install>,
    /// The CLI request waiting for this worker to be attached or detached.
    pub waiting_reply: Option<(ConnId, u32)>,
    pub last_error: Option<String>,
    /// Tasks this worker mapped, and the count at the last tick (for its rate).
    pub processed: u64,
    pub processed_at_tick: u64,
    pub tasks_per_sec: f64,
    /// The id the worker process reported in CLAIMED (0 until then, or
    /// for an older worker): one process reached by two addresses is one
    /// worker.
    pub worker_id: u64,
    /// The largest payload it accepts (its --max-size), from CLAIMED.
    pub max_size: u32,
    /// Take it from another manager (`attach --force`), on the first claim.
    pub force_claim: bool,
}

impl Worker {
    pub fn new(addr: String, sock: SocketAddr) -> Worker {
        Worker {
            addr,
            sock,
            state: WorkerState::Connecting,
            conns: Vec::new(),
            installed: HashMap::new(),
            waiting_reply: None,
            last_error: None,
            processed: 0,
            processed_at_tick: 0,
            tasks_per_sec: 0.0,
            worker_id: 0,
            max_size: crate::proto::DEFAULT_MAX_SIZE,
            force_claim: false,
        }
    }

    pub fn state(&self) -> WorkerState {
        self.state
    }

    pub fn is(&self, state: WorkerState) -> bool {
        self.state == state
    }

    pub fn is_active(&self) -> bool {
        self.state == WorkerState::Active
    }

    /// Applies `event` (see [`step`]) and returns what to do.
    pub fn step(&mut self, event: Event, now: Instant) -> Intent {
        let (next, intent) = step(self.state, event, now);
        self.state = next;
        intent
    }

    /// The largest chunk of a library or batch of tasks this worker takes
    /// in one frame: its max size less room for the fields around it, and
    /// at most `cap`.
    pub fn frame_budget(&self, cap: usize) -> usize {
        crate::proto::frame_budget(self.max_size, cap)
    }

    pub fn in_flight(&self) -> usize {
        self.conns.iter().map(|c| c.in_flight).sum()
    }

    /// Batches in flight that are still its to answer (not past the task
    /// timeout): with none, the worker counts as idle.
    pub fn busy(&self) -> usize {
        self.conns
            .iter()
            .map(|c| c.in_flight.saturating_sub(c.stuck))
            .sum()
    }

    /// The least busy connection with room for another batch.
    pub fn free_conn(&self) -> Option<usize> {
        self.conns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.in_flight < PIPELINE_DEPTH)
            .min_by_key(|(_, c)| c.in_flight)
            .map(|(i, _)| i)
    }

    pub fn has_capacity(&self, max_connections: usize) -> bool {
        self.free_conn().is_some() || self.conns.len() < max_connections
    }

    pub fn conn_mut(&mut self, id: ConnId) -> Option<&mut WorkerConn> {
        self.conns.iter_mut().find(|c| c.id == id)
    }

    /// Has the library installed and loaded.
    pub fn has(&self, hash: &PluginHash) -> bool {
        self.installed.get(hash) == Some(&Install::Done)
    }

    /// Refused the library (a later job with it cannot run here).
    pub fn refused(&self, hash: &PluginHash) -> bool {
        self.installed.get(hash) == Some(&Install::Failed)
    }
}

/// Every attached worker, and which worker each pooled connection is to.
#[derive(Default)]
pub struct Workers {
    table: Slots<Worker, WorkerId>,
    by_conn: HashMap<ConnId, WorkerId>,
    /// Workers detached since the start.
    terminated: u32,
}

impl Workers {
    pub fn get(&self, w: WorkerId) -> Option<&Worker> {
        self.table.get(w)
    }

    pub fn get_mut(&mut self, w: WorkerId) -> Option<&mut Worker> {
        self.table.get_mut(w)
    }

    pub fn iter(&self) -> impl Iterator<Item = (WorkerId, &Worker)> {
        self.table.iter()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (WorkerId, &mut Worker)> {
        self.table.iter_mut()
    }

    pub fn values(&self) -> impl Iterator<Item = &Worker> {
        self.table.values()
    }

    /// The ids of the workers attached now (to loop over while changing them).
    pub fn ids(&self) -> Vec<WorkerId> {
        self.table.ids()
    }

    pub fn add(&mut self, worker: Worker) -> WorkerId {
        self.table.insert(worker)
    }

    /// Takes worker `w` out, with its connections' entries. `detached`: it
    /// was attached and is detached now (counted), rather than never
    /// attached.
    pub fn remove(&mut self, w: WorkerId, detached: bool) -> Option<Worker> {
        let worker = self.table.remove(w)?;
        for c in &worker.conns {
            self.by_conn.remove(&c.id);
        }
        if detached {
            self.terminated += 1;
        }
        Some(worker)
    }

    pub fn terminated(&self) -> u32 {
        self.terminated
    }

    /// The worker reached at one of `socks`.
    pub fn find(&self, socks: &[SocketAddr]) -> Option<WorkerId> {
        self.iter()
            .find(|(_, w)| socks.contains(&w.sock))
            .map(|(id, _)| id)
    }

    /// The address of another worker that is the same process as `w` (by
    /// the id it reported), if any.
    /// The worker attached as `addr` (as it was given), if any.
    pub fn by_addr(&self, addr: &str) -> Option<WorkerId> {
        self.iter()
            .find(|(_, wk)| wk.addr == addr)
            .map(|(id, _)| id)
    }

    pub fn twin(&self, w: WorkerId, worker_id: u64) -> Option<String> {
        if worker_id == 0 {
            return None;
        }
        self.iter()
            .find(|(id, wk)| *id != w && wk.worker_id == worker_id)
            .map(|(_, wk)| wk.addr.clone())
    }

    /// The worker `conn` belongs to.
    pub fn of_conn(&self, conn: ConnId) -> Option<WorkerId> {
        self.by_conn.get(&conn).copied()
    }

    /// Adds `conn` to worker `w`'s pool.
    pub fn add_conn(&mut self, w: WorkerId, conn: ConnId) -> Option<&mut Worker> {
        let worker = self.table.get_mut(w)?;
        worker.conns.push(WorkerConn {
            id: conn,
            in_flight: 0,
            stuck: 0,
        });
        self.by_conn.insert(conn, w);
        Some(worker)
    }

    /// Takes `conn` out of its worker's pool; returns the worker.
    pub fn remove_conn(&mut self, conn: ConnId) -> Option<WorkerId> {
        let w = self.by_conn.remove(&conn)?;
        if let Some(wk) = self.table.get_mut(w) {
            wk.conns.retain(|c| c.id != conn);
        }
        Some(w)
    }

    pub fn active(&self) -> impl Iterator<Item = (WorkerId, &Worker)> {
        self.iter().filter(|(_, w)| w.is_active())
    }

    pub fn active_count(&self) -> usize {
        self.active().count()
    }
}

#[cfg(test)]
mod tests;
