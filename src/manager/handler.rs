//! The manager's event-loop side: a small [`Manager`] that routes the
//! reactor's events to the parts that own each concern and carries out
//! what they decide. Everything here runs on the reactor thread and never
//! blocks: job code runs on each job's loader and reducer threads (see
//! `job.rs`), name lookups on threads of their own.
//!
//! - control requests from CLIs: `commands/`, one file per command;
//! - answers from workers: `replies.rs`;
//! - worker records and their one transition function: `workers.rs`;
//! - the exactly-once ledger: `ledger/`; the scheduling rules: `sched.rs`,
//!   carried out by `dispatch.rs`;
//! - job libraries on workers: `installs.rs`; timers: `health.rs`;
//!   metrics, pages and the text session: `monitor.rs`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::Waker;

use super::commands::Lookups;
use super::job::ReducerMsg;
use super::jobs::Jobs;
use super::ledger::{Ledger, Loss, Request};
use super::monitor::Monitor;
use super::outputs::{Output, Outputs};
use super::workers::{Event, Intent, WorkerId, Workers};
use crate::net::{CloseReason, ConnId, Handler, Io};
use crate::plugin::store::{install_reply, PluginStore};
use crate::proto::{msg, ErrorCode, Message, ProtoError};

/// How often the manager samples its rate and retries lost workers.
pub(super) const TICK: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub max_connections: usize,
    pub max_retries: u32,
    pub max_jobs: usize,
    pub force_detach: bool,
    pub max_size: u32,
    /// A worker that leaves a request unanswered this long is failing.
    pub read_timeout: Duration,
    /// Send backup copies of straggling batches near a job's end.
    pub backup_tasks: bool,
    /// A batch unanswered this long counts as a failed attempt.
    pub task_timeout: Option<Duration>,
    /// Each job's executor process may allocate this many bytes (its
    /// `RLIMIT_DATA`; see `crate::exec`).
    pub memory_limit: u64,
}

pub struct Manager {
    pub(super) settings: Settings,
    pub(super) address: String,
    pub(super) started: Instant,
    pub(super) waker: Arc<Waker>,
    pub(super) store: PluginStore<(ConnId, u32)>,
    pub(super) workers: Workers,
    pub(super) ledger: Ledger,
    pub(super) jobs: Jobs,
    /// Ended jobs' outputs, for their clients to fetch.
    pub(super) outputs: Outputs,
    pub(super) monitor: Monitor,
    pub(super) lookups: Lookups,
    pub(super) installs: super::installs::Installs,
    /// `DROP_SHUFFLE`s for workers that had no connection when they were
    /// due, sent when each is back.
    pub(super) pending_drops: std::collections::HashMap<WorkerId, Vec<msg::DropShuffle>>,
    /// Workers the operator detached, by the address given: a worker that
    /// joins by itself (`--join`) is not attached again under it until an
    /// operator's `attach` names it.
    pub(super) detached: std::collections::HashSet<String>,
    pub(super) reducer_tx: Sender<ReducerMsg>,
    reducer_rx: Receiver<ReducerMsg>,
    /// Where dispatch resumes its turn over the running jobs.
    pub(super) round_robin: usize,
    pub(super) next_tick: Instant,
    /// Set by SIGTERM/SIGINT.
    stop: Arc<AtomicBool>,
    pub(super) shutting_down: bool,
    /// Shut down and everything sent: the loop may end.
    finished: bool,
}

/// An error reply refusing a request for `message`.
pub(super) fn refused(code: ErrorCode, message: String) -> Message {
    Message::error(&ProtoError::refused(code, message))
}

/// Why a worker changed state, for the CLI that waits on it and the logs.
pub(super) struct Cause<'a> {
    /// The code a waiting ATTACH is refused with, if the event ends it.
    pub code: ErrorCode,
    pub why: &'a str,
}

impl Cause<'static> {
    /// A worker answered: no attach is refused for it, so its code is
    /// never sent.
    pub const ANSWERED: Cause<'static> = Cause {
        code: ErrorCode::INTERNAL,
        why: "it answered",
    };
}

impl Manager {
    pub fn new(
        settings: Settings,
        address: String,
        waker: Arc<Waker>,
        store: PluginStore<(ConnId, u32)>,
        stop: Arc<AtomicBool>,
    ) -> Manager {
        let (reducer_tx, reducer_rx) = mpsc::channel();
        let now = Instant::now();
        Manager {
            settings,
            address,
            started: now,
            waker,
            store,
            workers: Workers::default(),
            ledger: Ledger::new(),
            jobs: Jobs::new(),
            outputs: Outputs::default(),
            monitor: Monitor::default(),
            lookups: Lookups::default(),
            installs: super::installs::Installs::default(),
            pending_drops: Default::default(),
            detached: Default::default(),
            reducer_tx,
            reducer_rx,
            round_robin: 0,
            next_tick: now + TICK,
            stop,
            shutting_down: false,
            finished: false,
        }
    }

    /// Sends a request to a worker and enters it in the ledger; its
    /// request id if it could be queued.
    pub(super) fn request(
        &mut self,
        io: &mut Io<'_>,
        conn: ConnId,
        msg: &Message,
        what: Request,
    ) -> Option<u32> {
        let id = self.ledger.request_id();
        if !io.send(conn, id, msg) {
            return None;
        }
        self.ledger.sent(conn, id, what, io.now());
        Some(id)
    }

    /// Opens one more pooled connection to worker `w` and claims the
    /// worker on it: it works for one manager at a time, and says who it is
    /// and what it takes.
    pub(super) fn open_conn(&mut self, io: &mut Io<'_>, w: WorkerId) -> Option<ConnId> {
        let sock = self.workers.get(w)?.sock;
        let id = match io.connect(sock) {
            Ok(id) => id,
            Err(e) => {
                warn!("worker {sock}: cannot connect: {e}");
                return None;
            }
        };
        let worker = self.workers.add_conn(w, id)?;
        debug!(
            "worker {}: opened {id} ({} of its pool)",
            worker.addr,
            worker.conns.len()
        );
        let claim = Message::Claim(msg::Claim {
            manager: self.address.clone(),
            manager_id: crate::net::server_id(),
            force: worker.force_claim,
        });
        self.request(io, id, &claim, Request::Claim);
        Some(id)
    }

    /// Any connection to `w`, opening one if it has none.
    pub(super) fn some_conn(&mut self, io: &mut Io<'_>, w: WorkerId) -> Option<ConnId> {
        let existing = self.workers.get(w)?.conns.first().map(|c| c.id);
        existing.or_else(|| self.open_conn(io, w))
    }

    /// Takes connection `conn` out of its worker's pool, with what was
    /// under way on it (see `lose_conn`); returns the worker.
    pub(super) fn forget_conn(&mut self, conn: ConnId, broke: bool) -> Option<WorkerId> {
        // Libraries whose install was under way on it must be sent again.
        let installing = self.ledger.installing_on(conn);
        let w = self.workers.remove_conn(conn)?;
        self.lose_conn(conn, broke, w);
        if let Some(worker) = self.workers.get_mut(w) {
            for hash in installing {
                worker.installed.remove(&hash);
            }
        }
        Some(w)
    }

    /// `conn` is gone: forgets the requests sent on it, and puts every
    /// batch whose only copy was on it back in its job's queue. `broke`:
    /// the connection broke (its worker may have died of a batch), rather
    /// than being closed by the manager.
    fn lose_conn(&mut self, conn: ConnId, broke: bool, w: WorkerId) {
        let why = if broke { Loss::Crashed } else { Loss::Departed };
        for (request, what) in self.ledger.take_conn(conn) {
            match what {
                Request::Batch { batch, .. } => {
                    // Lost with its worker: if the worker died of the batch
                    // itself, sending it again as is would kill the next one.
                    self.drop_copy(batch, (conn, request), why.clone());
                }
                Request::Reduce { job, partition } => self.reduce_lost(job, partition, w),
                _ => {}
            }
        }
    }

    /// Gives up one copy of `batch`; the ledger says what becomes of the
    /// batch, and its job carries that out.
    pub(super) fn drop_copy(&mut self, batch: u64, copy: (ConnId, u32), why: Loss) {
        let job = self.ledger.batch(batch).map(|f| f.job);
        let decision = self
            .ledger
            .lose_copy(batch, copy, why.clone(), self.settings.max_retries);
        if let Some(job) = job.and_then(|id| self.jobs.get_mut(id)) {
            debug!("batch {batch}: copy lost ({why:?}): {decision:?}");
            job.requeue(decision);
        }
    }

    /// Steps worker `w`'s state with `event` and carries out the intent;
    /// `cause` says why, to the CLI that waits on it and in the logs.
    pub(super) fn worker_event(
        &mut self,
        io: &mut Io<'_>,
        w: WorkerId,
        event: Event,
        cause: Cause<'_>,
    ) {
        let now = io.now();
        let Some(worker) = self.workers.get_mut(w) else {
            return;
        };
        let before = worker.state();
        match worker.step(event, now) {
            Intent::Nothing | Intent::ParkDetach | Intent::AlreadyDetaching => {}
            Intent::Attached => {
                info!("worker {}: attached", worker.addr);
                worker.last_error = None;
                if let Some((c, id)) = worker.waiting_reply.take() {
                    io.send(c, id, &Message::Attached);
                }
                self.ensure_installs(io, w);
                self.send_pending_drops(io, w);
            }
            Intent::Serve => {
                if before != worker.state() {
                    info!("worker {}: back", worker.addr);
                    worker.last_error = None;
                }
                self.ensure_installs(io, w);
                self.send_pending_drops(io, w);
            }
            Intent::FailOver => {
                warn!(
                    "worker {}: failing ({}); its batches go to the others",
                    worker.addr, cause.why
                );
                worker.last_error = Some(cause.why.to_owned());
                for (batch, conn, request) in self.ledger.copies_on(w) {
                    self.drop_copy(batch, (conn, request), Loss::Departed);
                }
                // Its shuffle files cannot be counted on either.
                self.shuffle_worker_lost(w);
            }
            Intent::Lost => {
                warn!(
                    "worker {}: lost ({}); its batches go to the others",
                    worker.addr, cause.why
                );
                // It may come back empty: libraries are sent again, and its
                // shuffle files are gone.
                worker.installed.clear();
                self.shuffle_worker_lost(w);
            }
            Intent::Remove => self.remove_worker(io, w),
            Intent::AbandonAttach => self.abandon_attach(io, w, cause),
            Intent::Reconnect => {
                debug!("worker {}: reconnecting", worker.addr);
                if let Some(conn) = self.open_conn(io, w) {
                    self.request(io, conn, &Message::Ping, Request::Ping);
                }
            }
        }
    }

    /// Detaches worker `w` now: its batches in flight go back to the queue,
    /// as they are (leaving is not the tasks' fault), and the CLI that
    /// waits on it is answered.
    fn remove_worker(&mut self, io: &mut Io<'_>, w: WorkerId) {
        self.shuffle_worker_lost(w);
        self.pending_drops.remove(&w);
        let Some(worker) = self.workers.remove(w, true) else {
            return;
        };
        info!("worker {}: detached", worker.addr);
        for c in &worker.conns {
            self.lose_conn(c.id, false, w);
            io.close(c.id);
        }
        if let Some((c, id)) = worker.waiting_reply {
            let reply = if worker.is(super::workers::WorkerState::Connecting) {
                // The attach still waiting for its first answer.
                let why = format!("worker {} was detached before it answered", worker.addr);
                refused(ErrorCode::CONFLICT, why)
            } else {
                Message::Detached
            };
            io.send(c, id, &reply);
        }
    }

    /// Gives up attaching worker `w`, telling the CLI that asked.
    fn abandon_attach(&mut self, io: &mut Io<'_>, w: WorkerId, cause: Cause<'_>) {
        let Some(worker) = self.workers.remove(w, false) else {
            return;
        };
        let msg = if cause.code == ErrorCode::UNREACHABLE {
            format!("cannot reach worker {}: {}", worker.addr, cause.why)
        } else {
            format!("cannot attach {}: {}", worker.addr, cause.why)
        };
        warn!("{msg}");
        for c in &worker.conns {
            self.ledger.take_conn(c.id);
            io.close(c.id);
        }
        if let Some((c, id)) = worker.waiting_reply {
            io.send(c, id, &refused(cause.code, msg));
        }
    }

    fn reducer_events(&mut self, io: &mut Io<'_>) {
        while let Ok(msg) = self.reducer_rx.try_recv() {
            match msg {
                ReducerMsg::Unbuilt { job, message } => {
                    let Some(j) = self.jobs.get_mut(job) else {
                        continue;
                    };
                    warn!(
                        "job {job} ({}): its constructor failed: {message}",
                        j.name()
                    );
                    j.fail(format!(
                        "the job's constructor failed on the manager: {message}"
                    ));
                    self.job_ended(io, job);
                }
                ReducerMsg::Crashed { job, message } => {
                    let Some(j) = self.jobs.get_mut(job) else {
                        continue;
                    };
                    warn!("job {job} ({}): {message}", j.name());
                    j.fail(message);
                    self.job_ended(io, job);
                }
                ReducerMsg::Folded { job, .. } => {
                    if let Some(j) = self.jobs.get_mut(job) {
                        j.folded();
                    }
                }
                ReducerMsg::Failed {
                    job,
                    tasks,
                    message,
                } => {
                    if let Some(j) = self.jobs.get_mut(job) {
                        j.fold_failed(tasks, &message);
                    }
                }
                ReducerMsg::Done {
                    job,
                    result_len,
                    preview,
                    error,
                    output,
                    unkept,
                    spills,
                } => {
                    let Some(j) = self.jobs.get_mut(job) else {
                        continue;
                    };
                    if let Some(Output {
                        text: Some(Err(why)),
                        ..
                    }) = &output
                    {
                        j.record_error(format!("output: no text form: {why}"));
                    }
                    if let Some(why) = unkept {
                        warn!("job {job}: {why}");
                        j.record_error(why);
                    }
                    let kept = output.and_then(|o| self.outputs.keep(job, o, Instant::now()));
                    if let Some(why) = kept {
                        warn!("{why}");
                        j.record_error(why);
                    }
                    j.spilled(spills);
                    j.end(result_len, preview, error);
                    let s = j.summary(0, false);
                    info!(
                        "job {job} ({}): {} — {} processed, {} failed, {} retried",
                        s.name,
                        s.status.name(),
                        s.processed,
                        s.failed,
                        s.retried
                    );
                    self.job_ended(io, job);
                }
            }
        }
    }

    /// A job ended (done ran, cancelled or failed): its batches leave the
    /// ledger, its summary is kept, its library goes where no other job
    /// needs it, and a waiting job may start.
    pub(super) fn job_ended(&mut self, io: &mut Io<'_>, id: u64) {
        self.ledger.drop_job(id);
        if self.jobs.get(id).is_some_and(|j| j.shuffle().is_some()) {
            let kept = self.outputs.parts(id).is_some();
            self.shuffle_ended(io, id, kept);
        }
        let Some(job) = self.jobs.keep_ended(id) else {
            return;
        };
        self.uninstall_unused(io, job.hash());
        self.start_waiting_jobs(io);
    }

    /// On SIGTERM/SIGINT: take no new jobs, cancel the running ones, and
    /// end once everything queued for the network is sent.
    fn check_shutdown(&mut self, io: &mut Io<'_>) {
        if self.stop.load(Ordering::SeqCst) && !self.shutting_down {
            self.shutting_down = true;
            let live: Vec<u64> = self.jobs.live().map(|j| j.id()).collect();
            info!("shutting down: cancelling {} jobs", live.len());
            for id in live {
                let _ = self.cancel_job(io, id);
            }
        }
        if self.shutting_down && io.pending_output() == 0 {
            self.finished = true;
        }
    }

    /// Everything that may have changed after any event.
    fn settle(&mut self, io: &mut Io<'_>) {
        self.monitor.traffic = io.traffic();
        // Between ticks too, so the monitor follows attaches and job ends.
        if self.monitor.publish_due(io.now()) {
            self.publish(io);
        }
        self.check_shutdown(io);
        for ((conn, request_id), outcome) in self.store.finished() {
            io.send(conn, request_id, &install_reply(outcome));
        }
        self.lookups_done(io);
        self.reducer_events(io);
        // Whatever answered a detaching worker's last batch (a result, a
        // duplicate, a refusal), the detach ends here.
        let drained: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, wk)| wk.busy() == 0)
            .map(|(id, _)| id)
            .collect();
        for w in drained {
            let cause = Cause {
                code: ErrorCode::CONFLICT,
                why: "its batches are done",
            };
            self.worker_event(io, w, Event::Drained, cause);
        }
        self.dispatch(io);
        self.place_reduces(io);
        self.end_failed_shuffles(io);
        let ledger = &self.ledger;
        for job in self.jobs.live_mut() {
            if job.finish_if_complete(ledger.in_flight(job.id())) {
                debug!(
                    "job {}: all tasks answered; reducing the last results",
                    job.id()
                );
            }
        }
    }
}

impl Handler for Manager {
    fn on_message(&mut self, io: &mut Io<'_>, conn: ConnId, request_id: u32, msg: Message) {
        if let Some(w) = self.workers.of_conn(conn) {
            self.worker_reply(io, conn, w, request_id, msg);
        } else if let Some(reply) = self.control(io, conn, request_id, msg) {
            io.send(conn, request_id, &reply);
            self.start_waiting_jobs(io);
        }
        self.settle(io);
    }

    fn on_text(&mut self, io: &mut Io<'_>, conn: ConnId, line: &str) -> String {
        self.text(io, conn, line)
    }

    fn on_close(&mut self, io: &mut Io<'_>, conn: ConnId, reason: &CloseReason) {
        // A peer that speaks no sense is at fault, not the tasks it held:
        // those go elsewhere as they are, not as suspects.
        let confused = matches!(reason, CloseReason::NotRedmap(_) | CloseReason::BadReply(_));
        let Some(w) = self.forget_conn(conn, !confused) else {
            return;
        };
        let why = reason.to_string();
        let Some(worker) = self.workers.get_mut(w) else {
            return;
        };
        worker.last_error = Some(why.clone());
        if worker.conns.is_empty() {
            // Whatever its state, its shuffle files are out of reach.
            self.shuffle_worker_lost(w);
            // Something that answers, but not with frames, is no worker:
            // retrying the address cannot help.
            let code = if confused {
                ErrorCode::WRONG_PEER
            } else {
                ErrorCode::UNREACHABLE
            };
            let cause = Cause { code, why: &why };
            self.worker_event(io, w, Event::Disconnected, cause);
        }
        self.settle(io);
    }

    fn on_wake(&mut self, io: &mut Io<'_>) {
        self.settle(io);
    }

    fn next_timer(&self) -> Option<Instant> {
        let stale = self.monitor.stale_until();
        Some(stale.map_or(self.next_tick, |t| t.min(self.next_tick)))
    }

    fn should_stop(&self) -> bool {
        self.finished
    }

    fn on_timer(&mut self, io: &mut Io<'_>, now: Instant) {
        // The timer may be for stale pages only (settle renders them).
        if now >= self.next_tick {
            self.tick(io, now);
        }
        self.settle(io);
    }
}
