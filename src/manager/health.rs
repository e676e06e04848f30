//! The manager's tick, once a second: each check is a function of its own.
//!
//! - [`Manager::expire_requests`]: a worker that leaves a ping or claim
//!   unanswered past the read timeout is failing;
//! - [`Manager::expire_batches`]: a batch past `--task-timeout` is given up
//!   like a failed attempt;
//! - [`Manager::ping_workers`]: one ping in flight on every connection;
//! - [`Manager::reconnect_workers`]: lost workers are tried again, with
//!   backoff;
//! - libraries nothing uses, and uploads stopped half-way, are removed
//!   (`installs.rs`, the store), and the monitor
//!   samples the rates and publishes (`monitor.rs`).

use std::time::Instant;

use log::warn;

use super::handler::{Cause, Manager, TICK};
use super::ledger::{Loss, Request};
use super::workers::{Event, WorkerId};
use crate::net::{ConnId, Io};
use crate::proto::{ErrorCode, Message};

impl Manager {
    /// Everything due at the tick.
    pub(super) fn tick(&mut self, io: &mut Io<'_>, now: Instant) {
        self.next_tick = now + TICK;
        self.monitor.sample(now, &mut self.workers);
        self.expire_requests(io, now);
        self.expire_batches(now);
        self.ping_workers(io);
        self.remove_unused_libraries(now);
        // Uploads stopped half-way (each dropped is logged by the store).
        self.store.expire_uploads(now);
        self.outputs.expire(now);
        self.expire_parts(io);
        self.publish(io);
        self.reconnect_workers(io);
    }

    /// A request unanswered for the read timeout means its worker is
    /// failing; its batches go to the others. A batch is exempt: its tasks
    /// may rightly take longer than that, and the pings, which a live
    /// worker answers at once on every connection, tell a busy worker from
    /// a silent one. So is an install, whose last chunk is answered once
    /// the library is loaded (its initialisers run: user code, of any
    /// length).
    fn expire_requests(&mut self, io: &mut Io<'_>, now: Instant) {
        for conn in self.ledger.overdue(now, self.settings.read_timeout) {
            let Some(w) = self.workers.of_conn(conn) else {
                continue;
            };
            let connecting = self
                .workers
                .get(w)
                .is_some_and(|wk| wk.is(super::workers::WorkerState::Connecting));
            let why = if connecting {
                "it did not answer within the read timeout"
            } else {
                "no answer within the read timeout"
            };
            let cause = Cause {
                code: ErrorCode::UNREACHABLE,
                why,
            };
            self.worker_event(io, w, Event::Failed, cause);
        }
    }

    /// A batch past --task-timeout: its copy is given up like a failed
    /// attempt (its worker may be stuck in a task that never ends). A late
    /// answer still counts if the batch is not done elsewhere by then.
    fn expire_batches(&mut self, now: Instant) {
        let Some(limit) = self.settings.task_timeout else {
            return;
        };
        for (conn, id, batch) in self.ledger.late_batches(now, limit) {
            // Its slot stays taken (the worker still holds the batch, and
            // never gets more than it can queue), but the worker no longer
            // counts it as work of its own: see Worker::busy.
            let w = self.workers.of_conn(conn);
            if let Some(c) = w
                .and_then(|w| self.workers.get_mut(w))
                .and_then(|wk| wk.conn_mut(conn))
            {
                c.stuck += 1;
            }
            warn!("batch {batch}: no answer within the task timeout; it goes elsewhere");
            self.drop_copy(batch, (conn, id), Loss::TimedOut);
        }
    }

    /// Health checks: one ping in flight on every worker connection, so a
    /// connection that went silent is noticed even while the others still
    /// answer.
    fn ping_workers(&mut self, io: &mut Io<'_>) {
        let pinged = self.ledger.pinged();
        let due: Vec<ConnId> = self
            .workers
            .values()
            .filter(|wk| !wk.is(super::workers::WorkerState::Connecting))
            .flat_map(|wk| wk.conns.iter().map(|c| c.id))
            .filter(|conn| !pinged.contains(conn))
            .collect();
        for conn in due {
            self.request(io, conn, &Message::Ping, Request::Ping);
        }
    }

    /// Reconnects to lost workers (those with no connection left), each
    /// when its backoff is over (see `workers::step`).
    fn reconnect_workers(&mut self, io: &mut Io<'_>) {
        let lost: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, wk)| wk.conns.is_empty())
            .map(|(id, _)| id)
            .collect();
        for w in lost {
            let cause = Cause {
                code: ErrorCode::UNREACHABLE,
                why: "reconnecting",
            };
            self.worker_event(io, w, Event::Tick, cause);
        }
    }
}
