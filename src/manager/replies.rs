//! Answers from workers: each is matched to the request it answers in the
//! ledger, then applied — a claim taken or refused, an install's progress,
//! a batch's result (the first answer wins; a later one is a duplicate) or
//! its refusal.

use log::{debug, warn};

use super::handler::{Cause, Manager};
use super::invariant::decrement;
use super::ledger::{Loss, Outstanding, Request};
use super::workers::{Event, WorkerId, WorkerState};
use crate::net::{ConnId, Io};
use crate::proto::msg::{self, BatchResult};
use crate::proto::{ErrorCode, Message};

/// Which copy of which batch an answer is for.
struct AnsweredCopy {
    worker: WorkerId,
    batch: u64,
    job: u64,
    backup: bool,
    sent: std::time::Instant,
}

impl Manager {
    fn connecting(&self, w: WorkerId) -> bool {
        self.workers
            .get(w)
            .is_some_and(|wk| wk.is(WorkerState::Connecting))
    }

    /// Worker `w` answered request `request_id` on `conn` with `msg`.
    pub(super) fn worker_reply(
        &mut self,
        io: &mut Io<'_>,
        conn: ConnId,
        w: WorkerId,
        request_id: u32,
        msg: Message,
    ) {
        let Some(Outstanding {
            what,
            sent,
            expired,
        }) = self.ledger.take(conn, request_id)
        else {
            debug!("{conn}: reply to unknown request {request_id} dropped");
            return;
        };
        if matches!(what, Request::Batch { .. }) {
            self.release_slot(conn, w, expired);
        }
        match (what, msg) {
            (Request::Ping, Message::Pong) => {
                self.worker_event(io, w, Event::Answered, Cause::ANSWERED)
            }
            (Request::Claim, Message::Claimed(c)) => self.claimed(io, w, c),
            (Request::Claim, Message::Error(e)) if e.code == ErrorCode::UNKNOWN_OPCODE => {
                // A worker from before CLAIM: it takes work from anyone.
                self.worker_event(io, w, Event::Answered, Cause::ANSWERED)
            }
            (Request::Claim, Message::Error(e)) => self.claim_refused(io, w, &e),
            (Request::Install { hash }, Message::InstallReply(r)) => {
                self.install_progress(io, w, hash, r)
            }
            (Request::Batch { batch, job, backup }, Message::BatchResult(r)) => {
                let copy = AnsweredCopy {
                    worker: w,
                    batch,
                    job,
                    backup,
                    sent,
                };
                self.batch_done(copy, r)
            }
            (Request::Batch { batch, .. }, Message::Error(e)) => {
                self.batch_refused(io, (conn, request_id), w, batch, &e)
            }
            (Request::Install { .. }, Message::Error(e)) if e.code == ErrorCode::WRONG_PEER => {
                self.claim_lost(io, w, &e.message)
            }
            (Request::Install { hash }, Message::Error(e)) => self.install_refused(io, w, hash, &e),
            (Request::Uninstall | Request::DropShuffle, _) => {}
            (
                Request::Reduce { job, partition },
                msg @ (Message::Reduced(_) | Message::Error(_)),
            ) => self.reduce_answered(io, w, job, partition, msg),
            (_, Message::Error(e)) if e.code == ErrorCode::AUTH_FAILED => {
                // The worker wants a secret this manager does not have (or another one).
                let cause = Cause {
                    code: ErrorCode::AUTH_FAILED,
                    why: &e.message,
                };
                self.worker_event(io, w, Event::Failed, cause);
            }
            (what, other) => self.confused(io, (conn, request_id), w, what, &other),
        }
    }

    /// A reply that makes no sense for its request: the request is
    /// settled as answered (a confused peer is not a crash: nothing on it
    /// is suspect) and the connection is forgotten at once.
    fn confused(
        &mut self,
        io: &mut Io<'_>,
        (conn, request_id): (ConnId, u32),
        w: WorkerId,
        what: Request,
        other: &Message,
    ) {
        let why = format!("unexpected reply {} from the worker", other.opcode());
        warn!("{conn}: {why}; closing");
        if self.connecting(w) {
            let cause = Cause {
                code: ErrorCode::WRONG_PEER,
                why: &why,
            };
            self.worker_event(io, w, Event::Failed, cause);
            return;
        }
        match what {
            Request::Batch { batch, .. } => {
                self.drop_copy(batch, (conn, request_id), Loss::Departed)
            }
            Request::Install { hash } => {
                if let Some(wk) = self.workers.get_mut(w) {
                    wk.installed.remove(&hash);
                }
            }
            Request::Reduce { job, partition } => self.reduce_lost(job, partition, w),
            Request::Ping | Request::Claim | Request::Uninstall | Request::DropShuffle => {}
        }
        self.forget_conn(conn, false);
        io.close(conn);
    }

    /// A worker took this manager's claim: it says who it is and what it
    /// takes. The same process attached under another address is refused.
    fn claimed(&mut self, io: &mut Io<'_>, w: WorkerId, c: msg::Claimed) {
        if let Some(twin) = self.workers.twin(w, c.worker_id) {
            if self.connecting(w) {
                let why = format!("it is worker {twin}, attached already (the same process)");
                let cause = Cause {
                    code: ErrorCode::CONFLICT,
                    why: &why,
                };
                self.worker_event(io, w, Event::Failed, cause);
                return;
            }
        }
        let Some(worker) = self.workers.get_mut(w) else {
            return;
        };
        worker.worker_id = c.worker_id;
        // 0: a worker that does not say takes the default.
        worker.max_size = match c.max_size {
            0 => crate::proto::DEFAULT_MAX_SIZE,
            n => n.max(crate::net::conn::HANDSHAKE_MAX_SIZE),
        };
        worker.force_claim = false;
        self.worker_event(io, w, Event::Answered, Cause::ANSWERED);
    }

    /// A worker refused this manager's claim (it belongs to another one),
    /// or what answered is no worker at all (a manager).
    fn claim_refused(&mut self, io: &mut Io<'_>, w: WorkerId, e: &msg::ErrorReply) {
        if self.connecting(w) {
            let code = match e.code {
                ErrorCode::AUTH_FAILED => ErrorCode::AUTH_FAILED,
                _ => ErrorCode::WRONG_PEER,
            };
            let cause = Cause {
                code,
                why: &e.message,
            };
            self.worker_event(io, w, Event::Failed, cause);
            return;
        }
        self.claim_lost(io, w, &e.message);
    }

    /// The worker no longer takes this manager's work (another manager took
    /// it, or it wants another secret): it is failing, and every connection
    /// to it is closed, since one that still answers pings would make it
    /// look active. Reconnecting (with backoff) claims it again, and says
    /// why in its last error while that is refused.
    pub(super) fn claim_lost(&mut self, io: &mut Io<'_>, w: WorkerId, why: &str) {
        let cause = Cause {
            code: ErrorCode::WRONG_PEER,
            why,
        };
        self.worker_event(io, w, Event::Failed, cause);
        let Some(wk) = self.workers.get_mut(w) else {
            return;
        };
        wk.last_error = Some(why.to_owned());
        let conns: Vec<ConnId> = wk.conns.iter().map(|c| c.id).collect();
        for conn in conns {
            self.forget_conn(conn, false);
            io.close(conn);
        }
        // Another manager holds it now: its shuffle files are gone.
        self.shuffle_worker_lost(w);
    }

    /// Frees the connection slot an answered batch used (`stuck`: it was
    /// past the task timeout).
    fn release_slot(&mut self, conn: ConnId, w: WorkerId, stuck: bool) {
        if let Some(c) = self.workers.get_mut(w).and_then(|wk| wk.conn_mut(conn)) {
            decrement(&mut c.in_flight, 1, "a connection's batches in flight");
            if stuck {
                decrement(&mut c.stuck, 1, "a connection's batches past the timeout");
            }
        }
    }

    /// A batch's result: the first answer is applied to its job; a later
    /// one (another copy's) is counted as a duplicate and dropped.
    fn batch_done(&mut self, copy: AnsweredCopy, r: BatchResult) {
        let Some(f) = self.ledger.remove(copy.batch) else {
            // Already answered by another copy: applying it would count it
            // twice. (For a cancelled job, it is simply late.)
            let counted = match self.jobs.get_mut(copy.job) {
                Some(job) => {
                    job.duplicate();
                    true
                }
                None => self.jobs.ended_duplicate(copy.job),
            };
            if counted {
                self.monitor.duplicates += 1;
            }
            return;
        };
        let Some(job) = self.jobs.get_mut(f.job) else {
            return;
        };
        if !job.is_running() {
            return; // cancelled meanwhile
        }
        if copy.backup {
            self.monitor.backups_won += 1;
        }
        let rtt = copy.sent.elapsed();
        self.monitor.rtt.observe(rtt.as_secs_f64());
        self.monitor.tasks_processed += u64::from(r.processed);
        if let Some(wk) = self.workers.get_mut(copy.worker) {
            wk.processed += u64::from(r.processed);
        }
        let max_retries = self.settings.max_retries;
        job.apply_result(f, r, (copy.worker, rtt, copy.backup), max_retries);
    }

    /// A worker refused a batch (it lost the job's library, or it is
    /// shutting down): not the tasks' fault, so they go elsewhere as they are.
    fn batch_refused(
        &mut self,
        io: &mut Io<'_>,
        copy: (ConnId, u32),
        w: WorkerId,
        batch: u64,
        e: &msg::ErrorReply,
    ) {
        let hash = self
            .ledger
            .batch(batch)
            .and_then(|f| self.jobs.get(f.job))
            .map(|j| j.hash());
        if e.code == ErrorCode::EXECUTOR_DIED {
            // The job's code killed its executor, not its worker: the
            // worker stays as it is; the tasks are suspects, as in a crash.
            debug!("batch {batch}: {}", e.message);
            self.drop_copy(batch, copy, Loss::ExecutorDied(e.message.clone()));
            return;
        }
        if let (Some(hash), Some(wk)) = (hash, self.workers.get_mut(w)) {
            if e.code == ErrorCode::PLUGIN_MISSING {
                wk.installed.remove(&hash);
            } else {
                warn!("worker {}: refused a batch: {e}", wk.addr);
                wk.last_error = Some(e.to_string());
            }
        }
        if e.code == ErrorCode::SHUTTING_DOWN {
            let cause = Cause {
                code: ErrorCode::SHUTTING_DOWN,
                why: "it is shutting down",
            };
            self.worker_event(io, w, Event::Failed, cause);
        }
        self.drop_copy(batch, copy, Loss::Departed);
        if e.code == ErrorCode::WRONG_PEER {
            self.claim_lost(io, w, &e.message);
        }
    }
}
