//! The manager's view of one worker: its state, its fixed pool of at most
//! `--max-connections` connections (opened lazily, reused for the whole
//! attachment), and which job libraries it has.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::net::ConnId;
use crate::plugin::PluginHash;

/// Batches in flight on one connection at a time (pipelined by request id).
pub const PIPELINE_DEPTH: usize = 2;

/// First and longest pause between reconnection attempts.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(250);
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

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

#[derive(Debug)]
pub struct Worker {
    /// The address as the user gave it.
    pub addr: String,
    pub sock: SocketAddr,
    pub state: WorkerState,
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

    pub fn conn_index(&self, id: ConnId) -> Option<usize> {
        self.conns.iter().position(|c| c.id == id)
    }
}
