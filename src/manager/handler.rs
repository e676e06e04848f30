//! The manager's event-loop side: its control API for the CLI, its
//! conversations with workers, and the scheduler that hands batches to
//! workers. Everything here runs on the reactor thread and never blocks:
//! job code runs on each job's loader and reducer threads (see `job.rs`).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::Waker;

use super::job::{Job, Pending, ReducerMsg, KEPT_ENDED_BYTES, KEPT_ENDED_JOBS};
use super::pool::{Install, Worker, WorkerConn, WorkerState, FIRST_BACKOFF, MAX_BACKOFF};
use super::sizing::MAX_BATCH_BYTES;
use crate::cli::output::Json;
use crate::http::{Published, Shared};
use crate::net::addr::{dial_addrs, needs_lookup, AddrError};
use crate::net::{CloseReason, ConnId, Handler, Io};
use crate::plugin::fold::{task_label, thousands};
use crate::plugin::store::{install_reply, PluginStore};
use crate::plugin::PluginHash;
use crate::proto::msg::manager::MAX_LIST_BYTES;
use crate::proto::msg::{
    self, BatchResult, InstallReply, JobStatus, JobSummary, JobsPage, JobsQuery, ManagerStats,
    MapBatch, RunJob, TaskList,
};
use crate::proto::text::TextCommand;
use crate::proto::{ErrorCode, Message, ProtoError, PROTOCOL_VERSION};
use crate::report::{self, Metrics, RttHistogram, WorkerView};

/// How long a library installed on the manager but used by no job is kept
/// (a CLI installs, then sends RUN_JOB at once; one that never does leaves
/// the library behind).
const UNUSED_LIBRARY_TTL: Duration = Duration::from_secs(600);

/// Ended jobs the monitor's page and `/api/status` show, newest first: what
/// a page renders each tick must not grow with the jobs kept.
const MONITOR_ENDED_JOBS: usize = 20;

/// Partial results a job may have queued for its reducer before dispatch
/// of that job pauses: a slow reduce must not let results pile up.
const MAX_PARTIALS_QUEUED: usize = 64;

/// Most often the monitor's data is rendered again.
const PUBLISH_EVERY: Duration = Duration::from_millis(250);

/// Ticks of throughput history the monitor's sparkline shows (5 minutes).
const HISTORY_TICKS: usize = 300;

/// Longest job name accepted.
const MAX_JOB_NAME: usize = 128;

/// How often the manager samples its rate and retries lost workers.
const TICK: Duration = Duration::from_secs(1);

/// Name lookups for attach and detach running at once; more are BUSY.
const MAX_LOOKUPS: usize = 16;

/// How far back the tasks/s figure looks.
const RATE_WINDOW: Duration = Duration::from_secs(5);

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
}

/// Why a copy of a batch is given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loss {
    /// Its worker went away, or was taken away: not the tasks' doing.
    Departed,
    /// Its worker's connection broke while it ran: maybe the tasks' doing.
    Crashed,
    /// No answer within --task-timeout: maybe a task that never ends.
    TimedOut,
}

/// A request the manager sent to a worker, by (connection, request id).
enum Request {
    Ping {
        worker: usize,
    },
    /// The first request on every connection to a worker.
    Claim {
        worker: usize,
    },
    Install {
        worker: usize,
        hash: PluginHash,
    },
    Batch {
        batch: u64,
        job: u64,
        backup: bool,
    },
    Uninstall,
}

/// A worker address resolved off the event loop (a name service may take
/// seconds), for the CLI request that named it.
struct Lookup {
    conn: ConnId,
    request_id: u32,
    addr: String,
    detach: bool,
    force: bool,
    result: Result<Vec<SocketAddr>, AddrError>,
}

struct Outstanding {
    what: Request,
    sent: Instant,
    /// Its deadline passed and the worker was marked failing; an answer
    /// is still welcome (and counted as a duplicate if the work was redone).
    expired: bool,
}

/// One copy of a batch, sent to one worker: the request that carries it.
struct Copy {
    conn: ConnId,
    request: u32,
    worker: usize,
}

/// Which copy of which batch an answer is for.
struct AnsweredCopy {
    worker: usize,
    batch: u64,
    job: u64,
    backup: bool,
    sent: Instant,
}

/// The exactly-once ledger's entry for a batch: sent, not yet answered.
/// The first answer from any copy is applied and removes the entry; a
/// later answer finds no entry and is dropped as a duplicate.
struct InFlight {
    job: u64,
    tasks: TaskList,
    first_index: u64,
    attempt: u32,
    /// Copies lost with their worker's connection.
    losses: u32,
    /// A task suspected of killing its worker: it runs alone on one.
    suspect: bool,
    copies: Vec<Copy>,
    first_sent: Instant,
    has_backup: bool,
}

pub struct Manager {
    settings: Settings,
    address: String,
    started: Instant,
    waker: Arc<Waker>,
    store: PluginStore<(ConnId, u32)>,
    workers: Vec<Option<Worker>>,
    terminated: u32,
    worker_conns: HashMap<ConnId, usize>,
    outstanding: HashMap<(ConnId, u32), Outstanding>,
    read_timeout: Duration,
    backups: u64,
    backups_won: u64,
    next_request: u32,
    /// Jobs waiting or running.
    jobs: BTreeMap<u64, Job>,
    /// Summaries of ended jobs (their `Job`, with its library, is gone),
    /// at most KEPT_ENDED_JOBS of them and KEPT_ENDED_BYTES in all.
    ended: BTreeMap<u64, JobSummary>,
    ended_bytes: usize,
    /// Kept ended jobs by status (indexed by the status's wire value).
    ended_by_status: [u32; 8],
    /// Failed and retried tasks of every ended job since the start, kept or
    /// forgotten: the metrics' counters never go down.
    ended_failed: u64,
    ended_retried: u64,
    /// Libraries on the manager that no job uses, since when.
    unused_since: HashMap<PluginHash, Instant>,
    next_job: u64,
    in_flight: HashMap<u64, InFlight>,
    next_batch: u64,
    reducer_tx: Sender<ReducerMsg>,
    reducer_rx: Receiver<ReducerMsg>,
    lookup_tx: Sender<Lookup>,
    lookup_rx: Receiver<Lookup>,
    lookups: usize,
    round_robin: usize,
    duplicates: u64,
    tasks_processed: u64,
    rate: VecDeque<(Instant, u64)>,
    next_tick: Instant,
    traffic: (u64, u64),
    /// Set by SIGTERM/SIGINT.
    stop: Arc<AtomicBool>,
    /// Where the `--http` thread reads its pages, if there is one.
    published: Option<Shared>,
    last_published: Instant,
    /// Tasks per second at each tick, for the monitor's sparkline.
    history: VecDeque<f64>,
    rtt: RttHistogram,
    shutting_down: bool,
    /// Shut down and everything sent: the loop may end.
    finished: bool,
}

fn refused(code: ErrorCode, message: String) -> Message {
    Message::error(&ProtoError::refused(code, message))
}

/// An address that can never be valid is the request's fault (not
/// retriable); a name that could not be looked up may resolve later.
fn addr_error_code(e: &AddrError) -> ErrorCode {
    if e.lookup_failed {
        ErrorCode::UNREACHABLE
    } else {
        ErrorCode::MALFORMED_PAYLOAD
    }
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
        let (lookup_tx, lookup_rx) = mpsc::channel();
        let now = Instant::now();
        Manager {
            settings,
            address,
            started: now,
            waker,
            store,
            workers: Vec::new(),
            terminated: 0,
            worker_conns: HashMap::new(),
            outstanding: HashMap::new(),
            read_timeout: settings.read_timeout,
            backups: 0,
            backups_won: 0,
            next_request: 1,
            jobs: BTreeMap::new(),
            ended: BTreeMap::new(),
            ended_bytes: 0,
            ended_by_status: [0; 8],
            ended_failed: 0,
            ended_retried: 0,
            unused_since: HashMap::new(),
            next_job: 1,
            in_flight: HashMap::new(),
            next_batch: 1,
            reducer_tx,
            reducer_rx,
            lookup_tx,
            lookup_rx,
            lookups: 0,
            round_robin: 0,
            duplicates: 0,
            tasks_processed: 0,
            rate: VecDeque::new(),
            next_tick: now + TICK,
            traffic: (0, 0),
            stop,
            published: None,
            last_published: now,
            history: VecDeque::new(),
            rtt: RttHistogram::default(),
            shutting_down: false,
            finished: false,
        }
    }

    fn worker(&mut self, w: usize) -> Option<&mut Worker> {
        self.workers.get_mut(w).and_then(Option::as_mut)
    }

    fn request_id(&mut self) -> u32 {
        let id = self.next_request;
        self.next_request = self.next_request.wrapping_add(1).max(1);
        id
    }

    /// Sends a request to a worker and remembers what it was for.
    /// Sends a request to a worker; its request id if it could be queued.
    fn request(
        &mut self,
        io: &mut Io<'_>,
        conn: ConnId,
        msg: &Message,
        what: Request,
    ) -> Option<u32> {
        let id = self.request_id();
        if !io.send(conn, id, msg) {
            return None;
        }
        self.outstanding.insert(
            (conn, id),
            Outstanding {
                what,
                sent: io.now(),
                expired: false,
            },
        );
        Some(id)
    }

    /// Opens one more pooled connection to worker `w`.
    fn open_conn(&mut self, io: &mut Io<'_>, w: usize) -> Option<ConnId> {
        let sock = self.worker(w)?.sock;
        match io.connect(sock) {
            Ok(id) => {
                self.worker_conns.insert(id, w);
                let worker = self.worker(w)?;
                worker.conns.push(WorkerConn {
                    id,
                    in_flight: 0,
                    stuck: 0,
                });
                debug!(
                    "worker {}: opened {id} ({} of its pool)",
                    worker.addr,
                    worker.conns.len()
                );
                // Every connection starts by claiming the worker: it works
                // for one manager at a time, and says who it is and what
                // it takes.
                let force = worker.force_claim;
                let claim = Message::Claim(msg::Claim {
                    manager: self.address.clone(),
                    manager_id: crate::net::server_id(),
                    force,
                });
                self.request(io, id, &claim, Request::Claim { worker: w });
                Some(id)
            }
            Err(e) => {
                warn!("worker {}: cannot connect: {e}", sock);
                None
            }
        }
    }

    /// Any connection to `w`, opening one if it has none.
    fn some_conn(&mut self, io: &mut Io<'_>, w: usize) -> Option<ConnId> {
        let existing = self.worker(w)?.conns.first().map(|c| c.id);
        existing.or_else(|| self.open_conn(io, w))
    }

    fn find_worker(&self, socks: &[SocketAddr]) -> Option<usize> {
        self.workers
            .iter()
            .position(|w| w.as_ref().is_some_and(|w| socks.contains(&w.sock)))
    }

    // ---- the control API ----

    /// Resolves a worker address for ATTACH or DETACH, then carries the
    /// request out. A name is looked up on a thread of its own, so a slow
    /// name service never stalls the loop; the request is answered when
    /// the lookup is back (see `lookups_done`).
    fn resolve(
        &mut self,
        io: &mut Io<'_>,
        conn: ConnId,
        request_id: u32,
        (addr, force): (String, bool),
        detach: bool,
    ) -> Option<Message> {
        // The request, with its result filled in where the name is looked
        // up (here, or on a thread of its own).
        let mut lookup = Lookup {
            conn,
            request_id,
            addr,
            detach,
            force,
            result: Ok(Vec::new()),
        };
        if !needs_lookup(&lookup.addr) {
            lookup.result = dial_addrs(&lookup.addr);
            return self.resolved(io, lookup);
        }
        if self.lookups >= MAX_LOOKUPS {
            return Some(refused(
                ErrorCode::BUSY,
                format!("{MAX_LOOKUPS} worker addresses are being looked up already"),
            ));
        }
        let (tx, waker) = (self.lookup_tx.clone(), Arc::clone(&self.waker));
        let spawned = std::thread::Builder::new()
            .name("lookup".into())
            .spawn(move || {
                lookup.result = dial_addrs(&lookup.addr);
                if tx.send(lookup).is_ok() {
                    let _ = waker.wake();
                }
            });
        match spawned {
            Ok(_) => {
                self.lookups += 1;
                None
            }
            Err(e) => Some(refused(
                ErrorCode::INTERNAL,
                format!("cannot start a name lookup: {e}"),
            )),
        }
    }

    /// Answers the ATTACH and DETACH requests whose lookups are back.
    fn lookups_done(&mut self, io: &mut Io<'_>) {
        while let Ok(l) = self.lookup_rx.try_recv() {
            self.lookups -= 1;
            let (conn, request_id) = (l.conn, l.request_id);
            if let Some(reply) = self.resolved(io, l) {
                io.send(conn, request_id, &reply);
            }
        }
    }

    fn resolved(&mut self, io: &mut Io<'_>, l: Lookup) -> Option<Message> {
        let (conn, request_id, addr) = (l.conn, l.request_id, l.addr);
        match l.result {
            Err(e) => Some(refused(addr_error_code(&e), e.to_string())),
            Ok(socks) if l.detach => self.detach(io, conn, request_id, addr, &socks),
            Ok(socks) => self.attach(io, conn, request_id, (addr, l.force), &socks),
        }
    }

    fn attach(
        &mut self,
        io: &mut Io<'_>,
        conn: ConnId,
        request_id: u32,
        (addr, force): (String, bool),
        socks: &[SocketAddr],
    ) -> Option<Message> {
        if let Some(w) = self.find_worker(socks) {
            let state = self.worker(w).map_or("attached", |w| w.state.name());
            return Some(refused(
                ErrorCode::CONFLICT,
                format!("worker {addr} is already attached ({state})"),
            ));
        }
        // A name may resolve to ::1 and 127.0.0.1 both; workers started on
        // `:PORT` listen on IPv4 only, so an IPv4 address is tried first.
        let Some(&sock) = socks.iter().find(|s| s.is_ipv4()).or(socks.first()) else {
            return Some(refused(
                ErrorCode::UNREACHABLE,
                format!("{addr} resolves to no address"),
            ));
        };
        let w = self.workers.len();
        let mut worker = Worker::new(addr.clone(), sock);
        worker.force_claim = force;
        self.workers.push(Some(worker));
        let Some(_) = self.open_conn(io, w) else {
            self.workers[w] = None;
            return Some(refused(
                ErrorCode::UNREACHABLE,
                format!("cannot connect to {addr}"),
            ));
        };
        if let Some(worker) = self.worker(w) {
            worker.waiting_reply = Some((conn, request_id));
        }
        None // answered when the worker answers its CLAIM
    }

    fn detach(
        &mut self,
        io: &mut Io<'_>,
        conn: ConnId,
        request_id: u32,
        addr: String,
        socks: &[SocketAddr],
    ) -> Option<Message> {
        let Some(w) = self.find_worker(socks) else {
            return Some(refused(
                ErrorCode::NOT_FOUND,
                format!("no worker {addr} is attached"),
            ));
        };
        if self
            .worker(w)
            .is_some_and(|wk| wk.state == WorkerState::Detaching)
        {
            return Some(refused(
                ErrorCode::CONFLICT,
                format!("worker {addr} is already being detached"),
            ));
        }
        // Only an active worker's batches are worth waiting for: a failing
        // one has handed its batches to the others already, and may never
        // answer again.
        let busy = self
            .worker(w)
            .is_some_and(|wk| wk.state == WorkerState::Active && wk.busy() > 0);
        if busy && !self.settings.force_detach {
            if let Some(worker) = self.worker(w) {
                info!(
                    "worker {}: detaching once its batches in flight are done",
                    worker.addr
                );
                worker.state = WorkerState::Detaching;
                worker.waiting_reply = Some((conn, request_id));
            }
            return None;
        }
        self.remove_worker(io, w);
        Some(Message::Detached)
    }

    /// Detaches worker `w` now: its batches in flight go back to the queue,
    /// as they are (leaving is not the tasks' fault).
    fn remove_worker(&mut self, io: &mut Io<'_>, w: usize) {
        let Some(worker) = self.workers.get_mut(w).and_then(Option::take) else {
            return;
        };
        info!("worker {}: detached", worker.addr);
        self.terminated += 1;
        for c in &worker.conns {
            self.worker_conns.remove(&c.id);
            self.lose_conn(c.id, false);
            io.close(c.id);
        }
        if worker.state == WorkerState::Connecting {
            // The attach still waiting for its first answer gets one.
            if let Some((c, id)) = worker.waiting_reply {
                let why = format!("worker {} was detached before it answered", worker.addr);
                io.send(c, id, &refused(ErrorCode::CONFLICT, why));
            }
        }
    }

    /// Takes worker connection `conn` out of its worker's pool, with what
    /// was under way on it (see `lose_conn`); returns the worker's index.
    fn forget_conn(&mut self, conn: ConnId, broke: bool) -> Option<usize> {
        let w = self.worker_conns.remove(&conn)?;
        // Libraries whose install was under way on it must be sent again.
        let installing: Vec<PluginHash> = self
            .outstanding
            .iter()
            .filter(|((c, _), _)| *c == conn)
            .filter_map(|(_, o)| match &o.what {
                Request::Install { hash, .. } => Some(*hash),
                _ => None,
            })
            .collect();
        self.lose_conn(conn, broke);
        if let Some(worker) = self.worker(w) {
            for hash in installing {
                worker.installed.remove(&hash);
            }
            worker.conns.retain(|c| c.id != conn);
        }
        Some(w)
    }

    /// `conn` is gone: forgets the requests sent on it, and puts every
    /// batch whose only copy was on it back in its job's queue. `broke`:
    /// the connection broke (its worker may have died of a batch), rather
    /// than being closed by the manager.
    fn lose_conn(&mut self, conn: ConnId, broke: bool) {
        let why = if broke { Loss::Crashed } else { Loss::Departed };
        let lost: Vec<(u32, Outstanding)> = self
            .outstanding
            .keys()
            .filter(|(c, _)| *c == conn)
            .copied()
            .collect::<Vec<_>>()
            .into_iter()
            .filter_map(|key| self.outstanding.remove(&key).map(|o| (key.1, o)))
            .collect();
        for (request, o) in lost {
            if let Request::Batch { batch, .. } = o.what {
                // Lost with its worker: if the worker died of the batch
                // itself, sending it again as is would kill the next one.
                self.drop_copy(batch, conn, request, why);
            }
        }
    }

    /// Removes the copy of `batch` on `conn`. If no copy is left, the batch
    /// goes back to its job's queue. A departed worker's batch goes whole.
    /// One lost to a crash or a timeout goes whole the first time; after a
    /// second loss, it is split into single "suspect" tasks, each sent to a
    /// worker with nothing else to do, whose losses count as failed
    /// attempts. So a task that kills its worker, or never ends, is failed
    /// after --max-retries instead of taking the cluster down one worker at
    /// a time, and no innocent task is blamed with it.
    fn drop_copy(&mut self, batch: u64, conn: ConnId, request: u32, why: Loss) {
        let max_retries = self.settings.max_retries;
        let Some(entry) = self.in_flight.get_mut(&batch) else {
            return;
        };
        let this = |c: &Copy| c.conn == conn && c.request == request;
        let Some(worker) = entry.copies.iter().find(|c| this(c)).map(|c| c.worker) else {
            return;
        };
        entry.copies.retain(|c| !this(c));
        if !entry.copies.is_empty() {
            return;
        }
        let Some(job) = self.jobs.get_mut(&entry.job) else {
            return;
        };
        let requeue_whole = |entry: &InFlight, attempt: u32| Pending {
            batch: Some(batch),
            tasks: entry.tasks.clone(),
            first_index: entry.first_index,
            attempt,
            avoid: Some(worker),
            suspect: entry.suspect,
        };
        if why == Loss::Departed {
            job.retry.push_front(requeue_whole(entry, entry.attempt));
            return;
        }
        debug!(
            "batch {batch}: copy lost ({why:?}, suspect={}, losses={}, attempt={}, {} tasks)",
            entry.suspect,
            entry.losses,
            entry.attempt,
            entry.tasks.len()
        );
        if entry.suspect {
            // A suspect runs alone on its worker: its loss is its own doing.
            let attempt = entry.attempt + 1;
            if attempt <= max_retries {
                // The ledger entry is what a resend reuses: count it there.
                entry.attempt = attempt;
                job.retried += 1;
                job.retry.push_back(requeue_whole(entry, attempt));
                return;
            }
            let label = task_label(
                entry.first_index + 1,
                entry.tasks.iter().next().unwrap_or_default(),
            );
            self.in_flight.remove(&batch);
            job.in_flight_batches -= 1;
            job.failed += 1;
            job.record_error(match why {
                Loss::TimedOut => {
                    format!("{label}: no answer within the task timeout, {attempt} times")
                }
                _ => format!("{label}: its worker died while running it, {attempt} times"),
            });
            return;
        }
        entry.losses += 1;
        if entry.losses < 2 {
            job.retry.push_front(requeue_whole(entry, entry.attempt));
            return;
        }
        // Lost twice: some task in it may be killing its workers. Its
        // tasks go one by one, each alone on a worker, so a crash points
        // at the task that caused it.
        let Some(entry) = self.in_flight.remove(&batch) else {
            return;
        };
        job.in_flight_batches -= 1;
        for (i, task) in entry.tasks.iter().enumerate() {
            let mut one = TaskList::new();
            one.push(task);
            job.retry.push_back(Pending {
                batch: None,
                tasks: one,
                first_index: entry.first_index + i as u64,
                attempt: entry.attempt,
                avoid: Some(worker),
                suspect: true,
            });
        }
    }

    fn run_job(&mut self, run: RunJob) -> Message {
        // Names come from the network: they are shown in tables and logs,
        // so they are short and printable (they never name a file).
        if run.name.chars().count() > MAX_JOB_NAME || run.name.chars().any(|c| c.is_control()) {
            return Message::error(&ProtoError::Malformed {
                opcode: crate::proto::Opcode::RunJob.as_u8(),
                what: "job name: at most 128 printable characters",
            });
        }
        let hash = PluginHash(run.hash);
        let Some(plugin) = self.store.get(&hash) else {
            return refused(
                ErrorCode::PLUGIN_MISSING,
                format!(
                    "job library {} is not installed on the manager",
                    hash.short()
                ),
            );
        };
        let library = match std::fs::read(plugin.path()) {
            Ok(bytes) => Arc::new(bytes),
            Err(e) => {
                return Message::error(&ProtoError::Internal(format!(
                    "cannot read the job library: {e}"
                )))
            }
        };
        let id = self.next_job;
        self.next_job += 1;
        let name = if run.name.is_empty() {
            id.to_string()
        } else {
            run.name
        };
        info!("job {id} ({name}): accepted, library {}", hash.short());
        self.jobs.insert(id, Job::new(id, name, plugin, library));
        Message::JobAccepted(id)
    }

    /// A job's summary, with what only the manager knows: tasks on
    /// workers, and whether the job is stuck for want of a worker.
    fn summary(&self, job: &Job) -> JobSummary {
        let running = self
            .in_flight
            .values()
            .filter(|f| f.job == job.id && !f.copies.is_empty())
            .map(|f| f.tasks.len() as u64)
            .sum();
        // Waiting: no active worker that has not refused its library.
        let any_able = self.workers.iter().flatten().any(|w| {
            w.state == WorkerState::Active && w.installed.get(&job.hash) != Some(&Install::Failed)
        });
        let waiting = job.status == JobStatus::Running && !any_able;
        job.summary(running, waiting)
    }

    fn stats(&self) -> ManagerStats {
        let mut s = ManagerStats {
            address: self.address.clone(),
            workers_terminated: self.terminated,
            tasks_processed: self.tasks_processed,
            bytes_in: self.traffic.0,
            bytes_out: self.traffic.1,
            uptime_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            duplicates: self.duplicates,
            backups: self.backups,
            backups_won: self.backups_won,
            ..ManagerStats::default()
        };
        for w in self.workers.iter().flatten() {
            match w.state {
                WorkerState::Active | WorkerState::Detaching => s.workers_active += 1,
                WorkerState::Failing { .. } => s.workers_failing += 1,
                WorkerState::Connecting => {}
            }
            s.workers_total += 1;
        }
        s.workers_total += self.terminated;
        for job in self.jobs.values() {
            match job.status {
                JobStatus::Waiting => s.jobs_waiting += 1,
                _ => s.jobs_running += 1,
            }
        }
        let ended = |status: JobStatus| self.ended_by_status[status as usize];
        s.jobs_completed = ended(JobStatus::Finished) + ended(JobStatus::FinishedWithFailures);
        s.jobs_failed = ended(JobStatus::Failed);
        s.jobs_cancelled = ended(JobStatus::Cancelled);
        if let (Some(first), Some(last)) = (self.rate.front(), self.rate.back()) {
            let secs = last.0.duration_since(first.0).as_secs_f64();
            if secs > 0.0 {
                s.tasks_per_sec_milli = ((last.1 - first.1) as f64 / secs * 1000.0) as u64;
            }
        }
        s
    }

    fn info(&self) -> msg::Info {
        msg::Info {
            version: crate::VERSION.to_owned(),
            address: self.address.clone(),
            protocol: PROTOCOL_VERSION,
            active_jobs: self.running_jobs().len() as u32,
            installed_jobs: self.store.len() as u32,
            uptime_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            tasks_processed: self.tasks_processed,
            role: msg::Role::Manager,
            server_id: crate::net::server_id(),
            max_size: self.settings.max_size,
            manager: String::new(),
        }
    }

    fn control(
        &mut self,
        io: &mut Io<'_>,
        conn: ConnId,
        request_id: u32,
        msg: Message,
    ) -> Option<Message> {
        Some(match msg {
            Message::Ping => Message::Pong,
            Message::InfoRequest => Message::Info(self.info()),
            Message::Install(chunk) => match self.store.receive((conn, request_id), chunk) {
                Ok(Some(reply)) => Message::InstallReply(reply),
                Ok(None) => return None, // answered once loaded, in settle
                Err(e) => Message::error(&e),
            },
            Message::RunJob(_) if self.shutting_down => refused(
                ErrorCode::SHUTTING_DOWN,
                "the manager is shutting down and takes no new jobs".into(),
            ),
            Message::RunJob(run) => self.run_job(run),
            Message::CancelJob(id) => match self.cancel_job(io, id) {
                Ok(()) => Message::Cancelled,
                Err(e) => Message::error(&e),
            },
            Message::JobStatsRequest(id) => match (self.jobs.get(&id), self.ended.get(&id)) {
                (Some(job), _) => Message::JobStats(self.summary(job)),
                (None, Some(summary)) => Message::JobStats(summary.clone()),
                (None, None) => refused(ErrorCode::NOT_FOUND, format!("no job with id {id}")),
            },
            Message::JobsListRequest(query) => Message::JobsList(self.jobs_page(query)),
            Message::Attach(a) => {
                return self.resolve(io, conn, request_id, (a.addr, a.force), false)
            }
            Message::Detach(addr) => {
                return self.resolve(io, conn, request_id, (addr, false), true)
            }
            Message::Claim(_) => refused(
                ErrorCode::WRONG_PEER,
                format!("{} is a redmap manager, not a worker", self.address),
            ),
            Message::ManagerStatsRequest => Message::ManagerStats(self.stats()),
            other => Message::error(&ProtoError::Unexpected {
                opcode: other.opcode().as_u8(),
            }),
        })
    }

    // ---- worker replies ----

    fn worker_reply(
        &mut self,
        io: &mut Io<'_>,
        conn: ConnId,
        w: usize,
        request_id: u32,
        msg: Message,
    ) {
        let Some(Outstanding {
            what,
            sent,
            expired,
        }) = self.outstanding.remove(&(conn, request_id))
        else {
            debug!("{conn}: reply to unknown request {request_id} dropped");
            return;
        };
        if matches!(what, Request::Batch { .. }) {
            self.release_slot(conn, w, expired);
        }
        match (what, msg) {
            (Request::Ping { worker }, Message::Pong) => self.worker_up(io, worker),
            (Request::Claim { worker }, Message::Claimed(c)) => self.claimed(io, worker, c),
            (Request::Claim { worker }, Message::Error(e))
                if e.code == ErrorCode::UNKNOWN_OPCODE =>
            {
                // A worker from before CLAIM: it takes work from anyone.
                self.worker_up(io, worker)
            }
            (Request::Claim { worker }, Message::Error(e)) => self.claim_refused(io, worker, &e),
            (Request::Install { worker, hash }, Message::InstallReply(r)) => {
                self.install_progress(io, conn, worker, hash, r)
            }
            (Request::Batch { batch, job, backup }, Message::BatchResult(r)) => {
                let copy = AnsweredCopy {
                    worker: w,
                    batch,
                    job,
                    backup,
                    sent,
                };
                self.batch_done(io, copy, r)
            }
            (Request::Batch { batch, .. }, Message::Error(e)) => {
                self.batch_refused(io, (conn, request_id), w, batch, &e)
            }
            (Request::Install { worker, .. }, Message::Error(e))
                if e.code == ErrorCode::WRONG_PEER =>
            {
                self.claim_lost(io, worker, &e.message)
            }
            (Request::Install { worker, hash }, Message::Error(e)) => {
                let Some(wk) = self.worker(worker) else {
                    return;
                };
                warn!("worker {}: cannot install {}: {e}", wk.addr, hash.short());
                wk.installed.insert(hash, Install::Failed);
                wk.last_error = Some(e.to_string());
                // The job's own summary says why its work does not go there.
                let why = format!(
                    "worker {} refused the job's library: {}",
                    wk.addr, e.message
                );
                for job in self.jobs.values_mut().filter(|j| j.hash == hash) {
                    job.record_error(why.clone());
                }
                // Only a rejection is final; a worker failing for a reason
                // of its own (INTERNAL: a full disk) may take it later.
                if e.code == ErrorCode::PLUGIN_REJECTED {
                    self.fail_jobs_no_worker_takes(io);
                }
            }
            (Request::Uninstall, _) => {}
            (_, Message::Error(e)) if e.code == ErrorCode::AUTH_FAILED => {
                // The worker wants a secret this manager does not have (or another one).
                let connecting = self
                    .worker(w)
                    .is_some_and(|wk| wk.state == WorkerState::Connecting);
                if connecting {
                    self.abandon_attach(io, w, ErrorCode::AUTH_FAILED, &e.message);
                } else {
                    self.fail_worker(io, w, &e.message);
                }
            }
            (what, other) => {
                let why = format!("unexpected reply {} from the worker", other.opcode());
                warn!("{conn}: {why}; closing");
                if self
                    .worker(w)
                    .is_some_and(|wk| wk.state == WorkerState::Connecting)
                {
                    self.abandon_attach(io, w, ErrorCode::WRONG_PEER, &why);
                    return;
                }
                // The request is answered, if wrongly: what it carried is
                // settled here, as the connection is forgotten at once (a
                // confused peer is not a crash: nothing on it is suspect).
                match what {
                    Request::Batch { batch, .. } => {
                        self.drop_copy(batch, conn, request_id, Loss::Departed)
                    }
                    Request::Install { worker, hash } => {
                        if let Some(wk) = self.worker(worker) {
                            wk.installed.remove(&hash);
                        }
                    }
                    Request::Ping { .. } | Request::Claim { .. } | Request::Uninstall => {}
                }
                self.forget_conn(conn, false);
                io.close(conn);
            }
        }
    }

    /// A worker took this manager's claim: it says who it is and what it
    /// takes. The same process attached under another address is refused.
    fn claimed(&mut self, io: &mut Io<'_>, w: usize, c: msg::Claimed) {
        let twin = self.workers.iter().enumerate().find_map(|(i, wk)| {
            let wk = wk.as_ref()?;
            (i != w && wk.worker_id == c.worker_id && c.worker_id != 0).then(|| wk.addr.clone())
        });
        let Some(worker) = self.worker(w) else {
            return;
        };
        if let Some(twin) = twin {
            if worker.state == WorkerState::Connecting {
                let why = format!("it is worker {twin}, attached already (the same process)");
                self.abandon_attach(io, w, ErrorCode::CONFLICT, &why);
                return;
            }
        }
        worker.worker_id = c.worker_id;
        // 0: a worker that does not say takes the default.
        worker.max_size = match c.max_size {
            0 => crate::proto::DEFAULT_MAX_SIZE,
            n => n.max(crate::net::conn::HANDSHAKE_MAX_SIZE),
        };
        worker.force_claim = false;
        self.worker_up(io, w);
    }

    /// A worker refused this manager's claim (it belongs to another one),
    /// or what answered is no worker at all (a manager).
    fn claim_refused(&mut self, io: &mut Io<'_>, w: usize, e: &msg::ErrorReply) {
        let connecting = self
            .worker(w)
            .is_some_and(|wk| wk.state == WorkerState::Connecting);
        if connecting {
            let code = match e.code {
                ErrorCode::AUTH_FAILED => ErrorCode::AUTH_FAILED,
                _ => ErrorCode::WRONG_PEER,
            };
            self.abandon_attach(io, w, code, &e.message);
            return;
        }
        self.claim_lost(io, w, &e.message);
    }

    /// The worker no longer takes this manager's work (another manager took
    /// it, or it wants another secret): it is failing, and every connection
    /// to it is closed, since one that still answers pings would make it
    /// look active. Reconnecting (with backoff) claims it again, and says
    /// why in its last error while that is refused.
    fn claim_lost(&mut self, io: &mut Io<'_>, w: usize, why: &str) {
        self.fail_worker(io, w, why);
        let Some(wk) = self.worker(w) else {
            return;
        };
        wk.last_error = Some(why.to_owned());
        let conns: Vec<ConnId> = wk.conns.iter().map(|c| c.id).collect();
        for conn in conns {
            self.forget_conn(conn, false);
            io.close(conn);
        }
    }

    fn worker_up(&mut self, io: &mut Io<'_>, w: usize) {
        let Some(worker) = self.worker(w) else {
            return;
        };
        // A pong only says the worker is alive: a worker being detached
        // stays so, and its parked DETACH keeps waiting.
        match worker.state {
            WorkerState::Connecting => {
                info!("worker {}: attached", worker.addr);
                worker.state = WorkerState::Active;
                worker.last_error = None;
                if let Some((c, id)) = worker.waiting_reply.take() {
                    io.send(c, id, &Message::Attached);
                }
            }
            WorkerState::Failing { .. } => {
                info!("worker {}: back", worker.addr);
                worker.state = WorkerState::Active;
                worker.last_error = None;
            }
            WorkerState::Active | WorkerState::Detaching => {}
        }
        self.ensure_installs(io, w);
    }

    /// Starts sending every running job's library that worker `w` lacks.
    fn ensure_installs(&mut self, io: &mut Io<'_>, w: usize) {
        let needed: Vec<(PluginHash, Arc<Vec<u8>>)> = self
            .jobs
            .values()
            .filter(|j| j.status == JobStatus::Running)
            .filter(|j| {
                self.workers[w].as_ref().is_some_and(|wk| {
                    wk.state == WorkerState::Active && !wk.installed.contains_key(&j.hash)
                })
            })
            .map(|j| (j.hash, Arc::clone(&j.library)))
            .collect();
        for (hash, library) in needed {
            self.send_chunk(io, w, hash, &library, 0);
        }
    }

    fn chunk_size(&self) -> usize {
        crate::proto::frame_budget(self.settings.max_size, MAX_BATCH_BYTES)
    }

    fn send_chunk(
        &mut self,
        io: &mut Io<'_>,
        w: usize,
        hash: PluginHash,
        library: &[u8],
        offset: u64,
    ) {
        let Some(conn) = self.some_conn(io, w) else {
            return;
        };
        // Chunks fit the worker's own --max-size, whatever the manager's.
        let budget = self
            .worker(w)
            .map_or(1, |wk| wk.frame_budget(MAX_BATCH_BYTES));
        let start = (offset as usize).min(library.len());
        let end = (start + budget.min(self.chunk_size())).min(library.len());
        let chunk = msg::Install {
            hash: hash.0,
            total: library.len() as u64,
            offset: start as u64,
            chunk: library[start..end].to_vec(),
        };
        if let Some(wk) = self.worker(w) {
            wk.installed.insert(hash, Install::Sending);
        }
        self.request(
            io,
            conn,
            &Message::Install(chunk),
            Request::Install { worker: w, hash },
        );
    }

    fn install_progress(
        &mut self,
        io: &mut Io<'_>,
        _conn: ConnId,
        w: usize,
        hash: PluginHash,
        r: InstallReply,
    ) {
        if r.complete {
            if let Some(wk) = self.worker(w) {
                debug!("worker {}: has job library {}", wk.addr, hash.short());
                wk.installed.insert(hash, Install::Done);
            }
            return;
        }
        let library = self
            .jobs
            .values()
            .find(|j| j.hash == hash && j.status == JobStatus::Running)
            .map(|j| Arc::clone(&j.library));
        match library {
            Some(lib) => self.send_chunk(io, w, hash, &lib, r.next_offset),
            None => {
                if let Some(wk) = self.worker(w) {
                    wk.installed.remove(&hash);
                }
            }
        }
    }

    /// Frees the connection slot an answered batch used (`stuck`: it was
    /// past the task timeout).
    fn release_slot(&mut self, conn: ConnId, w: usize, stuck: bool) {
        if let Some(wk) = self.worker(w) {
            if let Some(i) = wk.conn_index(conn) {
                let c = &mut wk.conns[i];
                c.in_flight = c.in_flight.saturating_sub(1);
                if stuck {
                    c.stuck = c.stuck.saturating_sub(1);
                }
            }
        }
    }

    fn batch_done(&mut self, _io: &mut Io<'_>, copy: AnsweredCopy, r: BatchResult) {
        let AnsweredCopy {
            worker: w,
            batch,
            job: job_id,
            backup,
            sent,
        } = copy;
        let Some(f) = self.in_flight.remove(&batch) else {
            // Already answered by another copy: applying it would count it
            // twice. (For a cancelled job, it is simply late.)
            if let Some(job) = self.jobs.get_mut(&job_id) {
                job.duplicates += 1;
                self.duplicates += 1;
            } else if let Some(ended) = self.ended.get_mut(&job_id) {
                if ended.status != JobStatus::Cancelled {
                    ended.duplicates += 1;
                    self.duplicates += 1;
                }
            }
            return;
        };
        let max_retries = self.settings.max_retries;
        let Some(job) = self.jobs.get_mut(&f.job) else {
            return;
        };
        if job.status != JobStatus::Running {
            return; // cancelled meanwhile
        }
        if backup {
            job.backups_won += 1;
            self.backups_won += 1;
        }
        self.rtt.observe(sent.elapsed().as_secs_f64());
        if let Some(wk) = self.workers.get_mut(w).and_then(Option::as_mut) {
            wk.processed += u64::from(r.processed);
        }
        let n = f.tasks.len() as u64;
        let per_task = sent.elapsed().as_secs_f64() / n.max(1) as f64;
        job.secs_per_task = if job.secs_per_task == 0.0 {
            per_task
        } else {
            0.8 * job.secs_per_task + 0.2 * per_task
        };
        // Deferred tasks were not run: the busy time is the others'.
        let deferred_n = r.failures.iter().filter(|x| x.deferred).count();
        let ran = f.tasks.len().saturating_sub(deferred_n);
        job.sizer
            .observe(ran.max(1), Duration::from_micros(r.busy_us));
        job.in_flight_batches -= 1;
        job.processed += u64::from(r.processed);
        self.tasks_processed += u64::from(r.processed);
        if let Some(value) = r.value {
            job.fold(value, u64::from(r.processed));
        }
        if !r.failures.is_empty() {
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
                    // Not run: the batch's value was full. The rest of the
                    // batch (deferred tasks are its tail) goes out again as
                    // one batch, with no attempt counted.
                    let rest = deferred.get_or_insert_with(|| Pending {
                        attempt: f.attempt,
                        ..Pending::new(TaskList::new(), index)
                    });
                    rest.tasks.push(task);
                } else if f.attempt < max_retries && !failure.fatal {
                    job.retried += 1;
                    let mut list = TaskList::new();
                    list.push(task);
                    job.retry.push_back(Pending {
                        batch: None,
                        tasks: list,
                        first_index: index,
                        attempt: f.attempt + 1,
                        avoid: Some(w),
                        suspect: false,
                    });
                } else {
                    job.failed += 1;
                    let label = task_label(index + 1, task);
                    job.record_error(format!("{label}: {}", failure.message));
                }
            }
            if let Some(rest) = deferred {
                job.retry.push_front(rest);
            }
        }
    }

    /// A worker refused a batch (it lost the job's library, or it is
    /// shutting down): not the tasks' fault, so they go elsewhere as they are.
    fn batch_refused(
        &mut self,
        io: &mut Io<'_>,
        (conn, request): (ConnId, u32),
        w: usize,
        batch: u64,
        e: &msg::ErrorReply,
    ) {
        let hash = self
            .in_flight
            .get(&batch)
            .and_then(|f| self.jobs.get(&f.job))
            .map(|j| j.hash);
        if let (Some(hash), Some(wk)) = (hash, self.workers.get_mut(w).and_then(Option::as_mut)) {
            if e.code == ErrorCode::PLUGIN_MISSING {
                wk.installed.remove(&hash);
            } else {
                warn!("worker {}: refused a batch: {e}", wk.addr);
                wk.last_error = Some(e.to_string());
            }
        }
        if e.code == ErrorCode::SHUTTING_DOWN {
            self.fail_worker(io, w, "it is shutting down");
        }
        self.drop_copy(batch, conn, request, Loss::Departed);
        if e.code == ErrorCode::WRONG_PEER {
            self.claim_lost(io, w, &e.message);
        }
    }

    fn maybe_finish_detach(&mut self, io: &mut Io<'_>, w: usize) {
        let done = self
            .worker(w)
            .is_some_and(|wk| wk.state == WorkerState::Detaching && wk.busy() == 0);
        if done {
            self.finish_detach(io, w);
        }
    }

    /// Removes detaching worker `w` and answers the DETACH that waits.
    fn finish_detach(&mut self, io: &mut Io<'_>, w: usize) {
        let reply = self.worker(w).and_then(|wk| wk.waiting_reply.take());
        self.remove_worker(io, w);
        if let Some((c, id)) = reply {
            io.send(c, id, &Message::Detached);
        }
    }

    // ---- scheduling ----

    fn running_jobs(&self) -> Vec<u64> {
        self.jobs
            .values()
            .filter(|j| j.status == JobStatus::Running)
            .map(|j| j.id)
            .collect()
    }

    /// Batch slots the cluster has, to size a new job's batches.
    fn spread(&self) -> usize {
        let active = self
            .workers
            .iter()
            .flatten()
            .filter(|w| w.state == WorkerState::Active)
            .count();
        active.max(1) * self.settings.max_connections * super::pool::PIPELINE_DEPTH
    }

    fn start_waiting_jobs(&mut self, io: &mut Io<'_>) {
        let mut running = self.running_jobs().len();
        let waiting: Vec<u64> = self
            .jobs
            .values()
            .filter(|j| j.status == JobStatus::Waiting)
            .map(|j| j.id)
            .collect();
        for id in waiting {
            if running >= self.settings.max_jobs {
                break;
            }
            let spread = self.spread();
            // Batches fit every attached worker's --max-size.
            let batch_bytes = self
                .workers
                .iter()
                .flatten()
                .map(|wk| wk.frame_budget(MAX_BATCH_BYTES))
                .fold(self.chunk_size(), usize::min);
            // Every task of a batch may fail, and each failure costs a
            // worker 7 bytes of its reply even once the messages' share (a
            // quarter of the manager's --max-size) is spent: so many tasks
            // that their failures alone fit that share.
            let batch_tasks = (self.settings.max_size as usize / 4 / 8).max(1);
            if let Some(job) = self.jobs.get_mut(&id) {
                info!("job {id} ({}): started", job.name);
                job.start(
                    spread,
                    (batch_bytes, batch_tasks),
                    self.reducer_tx.clone(),
                    Arc::clone(&self.waker),
                );
                running += 1;
            }
        }
        for w in 0..self.workers.len() {
            self.ensure_installs(io, w);
        }
    }

    /// Hands batches to every worker with room, taking jobs in turn.
    fn dispatch(&mut self, io: &mut Io<'_>) {
        let running = self.running_jobs();
        if running.is_empty() {
            return;
        }
        for id in &running {
            if let Some(job) = self.jobs.get_mut(id) {
                job.pump_loader();
            }
        }
        let max_conns = self.settings.max_connections;
        loop {
            let mut sent = false;
            for w in 0..self.workers.len() {
                let Some(worker) = self.workers[w].as_ref() else {
                    continue;
                };
                if worker.state != WorkerState::Active || !worker.has_capacity(max_conns) {
                    continue;
                }
                if self.holds_suspect(w) {
                    continue; // a suspect task runs alone
                }
                let elsewhere = self.workers.iter().enumerate().any(|(o, wk)| {
                    o != w
                        && wk
                            .as_ref()
                            .is_some_and(|wk| wk.state == WorkerState::Active)
                });
                let n = running.len();
                let chosen = (0..n)
                    .map(|k| (k, running[(self.round_robin + k) % n]))
                    .find(|(_, id)| {
                        self.jobs.get(id).is_some_and(|j| {
                            j.has_work()
                                && j.partials_outstanding < MAX_PARTIALS_QUEUED
                                && worker.installed.get(&j.hash) == Some(&Install::Done)
                        })
                    });
                let Some((k, job_id)) = chosen else {
                    continue;
                };
                self.round_robin = (self.round_robin + k + 1) % n;
                if self.send_batch(io, w, job_id, elsewhere) {
                    sent = true;
                }
            }
            if !sent {
                break;
            }
        }
        self.send_backups(io);
    }

    fn send_batch(&mut self, io: &mut Io<'_>, w: usize, job_id: u64, elsewhere: bool) -> bool {
        let idle = self.worker(w).is_some_and(|wk| wk.busy() == 0);
        let free = self.worker(w).and_then(|wk| wk.free_conn());
        let conn_index = match free {
            Some(i) => i,
            None => {
                if self.open_conn(io, w).is_none() {
                    return false;
                }
                match self.worker(w) {
                    Some(wk) => wk.conns.len() - 1,
                    None => return false,
                }
            }
        };
        let Some(conn) = self.worker(w).map(|wk| wk.conns[conn_index].id) else {
            return false;
        };
        let pending = loop {
            let Some(job) = self.jobs.get_mut(&job_id) else {
                return false;
            };
            let Some(p) = job.next_pending_for(w, elsewhere, idle) else {
                return false;
            };
            // A batch sent again may have been answered meanwhile by its
            // first copy: then there is nothing left to do for it.
            if p.batch.is_some_and(|id| !self.in_flight.contains_key(&id)) {
                continue;
            }
            // A batch must fit the worker's --max-size (batches are cut to
            // fit every worker attached when the job started; one attached
            // since may take less). One that fits another active worker
            // waits for it; else it is halved, and a task that alone is
            // larger than every worker takes fails.
            let Some(wk) = self.workers.get(w).and_then(Option::as_ref) else {
                return false;
            };
            let len = p.tasks.byte_len();
            if len <= wk.frame_budget(usize::MAX) {
                break p;
            }
            let fits_elsewhere = self
                .workers
                .iter()
                .flatten()
                .any(|o| o.state == WorkerState::Active && len <= o.frame_budget(usize::MAX));
            if fits_elsewhere {
                job.retry.push_front(Pending {
                    avoid: Some(w),
                    ..p
                });
                return false;
            }
            let mut p = p;
            if let Some(id) = p.batch {
                // Sent before to a worker that took it. While a copy is out,
                // it waits for that; with none, it leaves the ledger and is
                // cut (a late answer of the old copy is then a duplicate).
                if self
                    .in_flight
                    .get(&id)
                    .is_some_and(|f| !f.copies.is_empty())
                {
                    job.retry.push_front(p);
                    return false;
                }
                if self.in_flight.remove(&id).is_some() {
                    job.in_flight_batches -= 1;
                }
                p.batch = None;
            }
            match p.tasks.len() {
                n if n > 1 => {
                    let (head, tail) = p.tasks.split_at(n / 2);
                    let tail_first = p.first_index + (n / 2) as u64;
                    job.retry.push_front(Pending {
                        batch: None,
                        tasks: tail,
                        first_index: tail_first,
                        attempt: p.attempt,
                        avoid: p.avoid,
                        suspect: p.suspect,
                    });
                    job.retry.push_front(Pending { tasks: head, ..p });
                }
                _ => {
                    let task = p.tasks.iter().next().unwrap_or_default();
                    job.failed += 1;
                    job.record_error(format!(
                        "{}: the task is {} bytes, over worker {}'s --max-size of {}",
                        task_label(p.first_index + 1, task),
                        thousands(task.len() as u64),
                        wk.addr,
                        thousands(u64::from(wk.max_size))
                    ));
                }
            }
        };
        let Some(hash) = self.jobs.get(&job_id).map(|j| j.hash) else {
            return false;
        };
        let batch = pending.batch.unwrap_or_else(|| {
            let id = self.next_batch;
            self.next_batch += 1;
            id
        });
        let msg = Message::MapBatch(MapBatch {
            hash: hash.0,
            batch_id: batch,
            tasks: pending.tasks,
            reply_limit: self.settings.max_size,
        });
        let sent = self.request(
            io,
            conn,
            &msg,
            Request::Batch {
                batch,
                job: job_id,
                backup: false,
            },
        );
        let Message::MapBatch(MapBatch { tasks, .. }) = msg else {
            unreachable!("built as MAP_BATCH above")
        };
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return false;
        };
        let Some(request) = sent else {
            job.retry.push_front(Pending { tasks, ..pending });
            return false;
        };
        if let Some(wk) = self.worker(w) {
            wk.conns[conn_index].in_flight += 1;
        }
        let copy = Copy {
            conn,
            request,
            worker: w,
        };
        match self.in_flight.get_mut(&batch) {
            Some(entry) => entry.copies.push(copy),
            None => {
                if let Some(job) = self.jobs.get_mut(&job_id) {
                    job.in_flight_batches += 1;
                }
                self.in_flight.insert(
                    batch,
                    InFlight {
                        job: job_id,
                        tasks,
                        first_index: pending.first_index,
                        attempt: pending.attempt,
                        losses: 0,
                        suspect: pending.suspect,
                        copies: vec![copy],
                        first_sent: io.now(),
                        has_backup: false,
                    },
                );
            }
        }
        true
    }

    fn holds_suspect(&self, w: usize) -> bool {
        self.in_flight
            .values()
            .any(|f| f.suspect && f.copies.iter().any(|c| c.worker == w))
    }

    /// Near a job's end, a batch far slower than the job's typical pace
    /// gets a backup copy on an idle worker (the MapReduce paper's backup
    /// tasks); whichever copy answers first wins.
    fn send_backups(&mut self, io: &mut Io<'_>) {
        if !self.settings.backup_tasks {
            return;
        }
        let now = io.now();
        let stragglers: Vec<(u64, u64)> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.copies.len() == 1 && !f.has_backup && !f.suspect)
            .filter_map(|(id, f)| {
                let job = self.jobs.get(&f.job)?;
                if !job.in_tail() || job.secs_per_task == 0.0 {
                    return None;
                }
                let expected = job.secs_per_task * f.tasks.len() as f64;
                let limit = Duration::from_secs_f64((4.0 * expected).max(0.05));
                (now.duration_since(f.first_sent) > limit).then_some((*id, f.job))
            })
            .collect();
        for (batch, job_id) in stragglers {
            let Some(hash) = self.jobs.get(&job_id).map(|j| j.hash) else {
                continue;
            };
            let holder = self
                .in_flight
                .get(&batch)
                .and_then(|f| f.copies.first())
                .map(|c| c.worker);
            let max_conns = self.settings.max_connections;
            let target = (0..self.workers.len()).find(|&w| {
                Some(w) != holder
                    && self.workers[w].as_ref().is_some_and(|wk| {
                        wk.state == WorkerState::Active
                            && wk.busy() == 0
                            && !self.holds_suspect(w)
                            && wk.has_capacity(max_conns)
                            && wk.installed.get(&hash) == Some(&Install::Done)
                    })
            });
            let Some(w) = target else {
                continue;
            };
            let Some(conn) = self.some_conn(io, w) else {
                continue;
            };
            let Some(tasks) = self.in_flight.get(&batch).map(|f| f.tasks.clone()) else {
                continue;
            };
            let msg = Message::MapBatch(MapBatch {
                hash: hash.0,
                batch_id: batch,
                tasks,
                reply_limit: self.settings.max_size,
            });
            let sent = self.request(
                io,
                conn,
                &msg,
                Request::Batch {
                    batch,
                    job: job_id,
                    backup: true,
                },
            );
            if let Some(request) = sent {
                if let Some(wk) = self.worker(w) {
                    if let Some(i) = wk.conn_index(conn) {
                        wk.conns[i].in_flight += 1;
                    }
                }
                if let Some(f) = self.in_flight.get_mut(&batch) {
                    f.has_backup = true;
                    f.copies.push(Copy {
                        conn,
                        request,
                        worker: w,
                    });
                }
                if let Some(job) = self.jobs.get_mut(&job_id) {
                    job.backups += 1;
                }
                self.backups += 1;
                debug!("batch {batch}: backup copy sent to worker {w}");
            }
        }
    }

    /// Gives up attaching worker `w`, telling the CLI that asked.
    fn abandon_attach(&mut self, io: &mut Io<'_>, w: usize, code: ErrorCode, why: &str) {
        let Some(worker) = self.workers.get_mut(w).and_then(Option::take) else {
            return;
        };
        let msg = if code == ErrorCode::UNREACHABLE {
            format!("cannot reach worker {}: {why}", worker.addr)
        } else {
            format!("cannot attach {}: {why}", worker.addr)
        };
        warn!("{msg}");
        for c in &worker.conns {
            self.worker_conns.remove(&c.id);
            self.outstanding.retain(|(conn, _), _| *conn != c.id);
            io.close(c.id);
        }
        if let Some((c, id)) = worker.waiting_reply {
            io.send(c, id, &refused(code, msg));
        }
    }

    /// Marks worker `w` failing (silent, or shutting down): nothing new is
    /// sent to it and its batches go to the others. Its connections stay
    /// open, so if it answers after all, it is used again, and its late
    /// answers are recognised as duplicates.
    fn fail_worker(&mut self, io: &mut Io<'_>, w: usize, why: &str) {
        let now = io.now();
        let Some(wk) = self.worker(w) else {
            return;
        };
        if !matches!(wk.state, WorkerState::Active | WorkerState::Detaching) {
            return;
        }
        warn!(
            "worker {}: failing ({why}); its batches go to the others",
            wk.addr
        );
        wk.last_error = Some(why.to_owned());
        if wk.state == WorkerState::Detaching {
            // Its batches go to the others either way: it is detached now.
            self.finish_detach(io, w);
            return;
        }
        wk.state = WorkerState::Failing {
            retry_at: now + FIRST_BACKOFF,
            backoff: FIRST_BACKOFF,
        };
        let copies: Vec<(u64, ConnId, u32)> = self
            .in_flight
            .iter()
            .flat_map(|(id, f)| {
                f.copies
                    .iter()
                    .filter(|c| c.worker == w)
                    .map(|c| (*id, c.conn, c.request))
            })
            .collect();
        for (batch, conn, request) in copies {
            self.drop_copy(batch, conn, request, Loss::Departed);
        }
    }

    fn reducer_events(&mut self, io: &mut Io<'_>) {
        while let Ok(msg) = self.reducer_rx.try_recv() {
            match msg {
                ReducerMsg::Folded { job, .. } => {
                    if let Some(j) = self.jobs.get_mut(&job) {
                        j.partials_outstanding -= 1;
                    }
                }
                ReducerMsg::Failed {
                    job,
                    tasks,
                    message,
                } => {
                    if let Some(j) = self.jobs.get_mut(&job) {
                        j.partials_outstanding -= 1;
                        j.reduce_errors += 1;
                        j.processed -= tasks;
                        j.failed += tasks;
                        j.record_error(format!("reduce: {message}"));
                    }
                }
                ReducerMsg::Done {
                    job,
                    result_len,
                    preview,
                    error,
                } => self.job_over(io, job, result_len, preview, error),
            }
        }
    }

    fn job_over(
        &mut self,
        io: &mut Io<'_>,
        id: u64,
        result_len: u64,
        preview: Vec<u8>,
        error: Option<String>,
    ) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        job.result_len = result_len;
        job.result_preview = preview;
        job.ended = Some(Instant::now());
        if let Some(e) = &error {
            job.record_error(format!("done: {e}"));
        }
        let errors = job.load_errors + job.reduce_errors;
        job.status = JobStatus::at_end(error.is_some(), job.processed, job.failed, errors);
        info!(
            "job {id} ({}): {} — {} processed, {} failed, {} retried",
            job.name,
            job.status.name(),
            job.processed,
            job.failed,
            job.retried
        );
        let hash = job.hash;
        self.keep_ended(id);
        self.uninstall_unused(io, hash);
        self.start_waiting_jobs(io);
    }

    /// Turns an ended job into its summary: the job (its library, its
    /// threads' channels) is dropped. The manager keeps the summaries of at
    /// most KEPT_ENDED_JOBS ended jobs and KEPT_ENDED_BYTES in all, the
    /// oldest forgotten first, so a manager that runs jobs for months does
    /// not grow with each one, whatever its jobs' errors say.
    fn keep_ended(&mut self, id: u64) {
        let Some(job) = self.jobs.remove(&id) else {
            return;
        };
        let summary = job.summary(0, false);
        self.ended_failed += summary.failed;
        self.ended_retried += summary.retried;
        self.ended_bytes += summary.encoded_len();
        self.ended_by_status[summary.status as usize] += 1;
        self.ended.insert(id, summary);
        while self.ended.len() > KEPT_ENDED_JOBS || self.ended_bytes > KEPT_ENDED_BYTES {
            let Some((_, old)) = self.ended.pop_first() else {
                break;
            };
            self.ended_bytes -= old.encoded_len();
            self.ended_by_status[old.status as usize] -= 1;
        }
    }

    /// The summaries of jobs, newest first, `query`'s page of them: at most
    /// its limit, and at most MAX_LIST_BYTES of summaries (at least one).
    fn jobs_page(&self, query: JobsQuery) -> JobsPage {
        let bound = match query.before {
            0 => u64::MAX,
            b => b,
        };
        let mut live = self.jobs.range(..bound).rev().peekable();
        let mut ended = self.ended.range(..bound).rev().peekable();
        let total = self.jobs.range(..bound).count() + self.ended.range(..bound).count();
        let (limit, mut bytes) = (query.effective_limit(), 0);
        let mut page = JobsPage::default();
        while page.jobs.len() < limit {
            let newer_live = match (live.peek(), ended.peek()) {
                (Some((a, _)), Some((b, _))) => a > b,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let summary = if newer_live {
                live.next().map(|(_, job)| self.summary(job))
            } else {
                ended.next().map(|(_, s)| s.clone())
            };
            let Some(summary) = summary else { break };
            bytes += summary.encoded_len();
            if bytes > MAX_LIST_BYTES && !page.jobs.is_empty() {
                break;
            }
            page.jobs.push(summary);
        }
        page.more = (total - page.jobs.len()) as u64;
        page
    }

    /// Serves pages from `shared` from now on (`--http`).
    pub fn publish_to(&mut self, shared: Shared) {
        self.published = Some(shared);
        self.next_tick = Instant::now(); // publish at once, not in a second
    }

    /// Renders `/api/status` and `/metrics` for the HTTP thread.
    fn publish(&mut self, io: &mut Io<'_>) {
        let Some(shared) = self.published.clone() else {
            return;
        };
        self.last_published = io.now();
        let stats = self.stats();
        let workers: Vec<WorkerView> = self
            .workers
            .iter()
            .flatten()
            .map(|w| WorkerView {
                address: w.addr.clone(),
                state: w.state.name(),
                connections: w.conns.len(),
                in_flight: w.in_flight(),
                installed_jobs: w
                    .installed
                    .values()
                    .filter(|i| **i == Install::Done)
                    .count(),
                tasks_processed: w.processed,
                tasks_per_sec: w.tasks_per_sec,
                last_error: w.last_error.clone(),
            })
            .collect();
        // Live jobs and the newest ended ones: the page's cost per tick does
        // not grow with the ended jobs kept.
        let mut jobs: Vec<JobSummary> = self.jobs.values().map(|j| self.summary(j)).collect();
        jobs.extend(self.ended.values().rev().take(MONITOR_ENDED_JOBS).cloned());
        let status = Json::Object(vec![
            ("manager", report::stats_json(&stats)),
            (
                "workers",
                Json::Array(workers.iter().map(report::worker_json).collect()),
            ),
            (
                "jobs",
                Json::Array(jobs.iter().map(report::job_json).collect()),
            ),
            (
                "throughput",
                Json::Array(self.history.iter().map(|r| Json::Float(*r)).collect()),
            ),
        ]);
        let mut m = Metrics::default();
        let live = |f: fn(&Job) -> u64| self.jobs.values().map(f).sum::<u64>();
        m.counter(
            "redmap_tasks_processed_total",
            "Tasks mapped and folded into results.",
            stats.tasks_processed,
        );
        m.counter(
            "redmap_tasks_failed_total",
            "Tasks that failed for good.",
            self.ended_failed + live(|j| j.failed),
        );
        m.counter(
            "redmap_tasks_retried_total",
            "Task retries.",
            self.ended_retried + live(|j| j.retried),
        );
        m.counter(
            "redmap_bytes_in_total",
            "Bytes received on all connections.",
            stats.bytes_in,
        );
        m.counter(
            "redmap_bytes_out_total",
            "Bytes sent on all connections.",
            stats.bytes_out,
        );
        m.counter(
            "redmap_auth_failures_total",
            "Failed authentication handshakes.",
            io.auth_failures(),
        );
        m.counter(
            "redmap_duplicates_dropped_total",
            "Late batch results dropped by the exactly-once rule.",
            stats.duplicates,
        );
        m.counter(
            "redmap_backup_tasks_total",
            "Backup copies sent for straggling batches.",
            stats.backups,
        );
        m.frames_by_opcode(&io.frames_in());
        m.labelled(
            "redmap_workers",
            "gauge",
            "Workers by state.",
            "state",
            &[
                ("active".into(), f64::from(stats.workers_active)),
                ("failing".into(), f64::from(stats.workers_failing)),
                ("terminated".into(), f64::from(stats.workers_terminated)),
            ],
        );
        m.labelled(
            "redmap_jobs",
            "gauge",
            "Jobs by state.",
            "state",
            &[
                ("waiting".into(), f64::from(stats.jobs_waiting)),
                ("running".into(), f64::from(stats.jobs_running)),
                (
                    "finished".into(),
                    f64::from(self.ended_by_status[JobStatus::Finished as usize]),
                ),
                (
                    "finished_with_failures".into(),
                    f64::from(self.ended_by_status[JobStatus::FinishedWithFailures as usize]),
                ),
                ("failed".into(), f64::from(stats.jobs_failed)),
                ("cancelled".into(), f64::from(stats.jobs_cancelled)),
            ],
        );
        m.gauge(
            "redmap_batches_in_flight",
            "Batches sent to workers and not answered.",
            self.in_flight.len() as f64,
        );
        let counts = if self.rtt.counts.is_empty() {
            vec![0; report::RTT_BOUNDS.len() + 1]
        } else {
            self.rtt.counts.clone()
        };
        m.histogram(
            "redmap_batch_rtt_seconds",
            "Round trip of a batch to a worker and back.",
            report::RTT_BOUNDS,
            &counts,
            self.rtt.sum,
        );
        let fresh = Published {
            status_json: status.render(),
            metrics: m.finish(),
        };
        if let Ok(mut p) = shared.lock() {
            *p = fresh;
        };
    }

    /// Fails every running job whose library every active worker refused:
    /// waiting would be for ever, and its errors say why.
    ///
    /// Every attached worker counts: one that is failing (lost for now) has
    /// not refused, and may take the job when it is back.
    fn fail_jobs_no_worker_takes(&mut self, io: &mut Io<'_>) {
        let active: Vec<&Worker> = self
            .workers
            .iter()
            .flatten()
            .filter(|w| w.state != WorkerState::Connecting)
            .collect();
        if active.is_empty() {
            return; // it waits for workers, as the progress line says
        }
        let refused: Vec<u64> = self
            .jobs
            .values()
            .filter(|j| j.status == JobStatus::Running)
            .filter(|j| {
                active
                    .iter()
                    .all(|w| w.installed.get(&j.hash) == Some(&Install::Failed))
            })
            .map(|j| j.id)
            .collect();
        for id in refused {
            let Some(job) = self.jobs.get_mut(&id) else {
                continue;
            };
            warn!("job {id} ({}): no attached worker can take it", job.name);
            job.fail("no attached worker can take the job (see the errors above)".into());
            job.in_flight_batches = 0;
            let hash = job.hash;
            self.in_flight.retain(|_, f| f.job != id);
            self.keep_ended(id);
            self.uninstall_unused(io, hash);
            self.start_waiting_jobs(io);
        }
    }

    /// Uninstalls a job library from every worker once no running job uses it.
    fn uninstall_unused(&mut self, io: &mut Io<'_>, hash: PluginHash) {
        let still_used = self
            .jobs
            .values()
            .any(|j| j.hash == hash && j.status == JobStatus::Running);
        if still_used {
            return;
        }
        for w in 0..self.workers.len() {
            let has = self
                .worker(w)
                .is_some_and(|wk| wk.installed.remove(&hash).is_some());
            if has {
                if let Some(conn) = self.some_conn(io, w) {
                    self.request(io, conn, &Message::Uninstall(hash.0), Request::Uninstall);
                }
            }
        }
        // The manager's own copy goes too once no job, waiting or running,
        // needs it (a CLI that runs it again installs it again).
        if !self.jobs.values().any(|j| j.hash == hash) && self.store.remove(&hash) {
            debug!("job library {}: removed from the manager", hash.short());
        }
    }

    /// Removes the libraries installed on the manager that no job has used
    /// for UNUSED_LIBRARY_TTL (installed, then never run).
    fn remove_unused_libraries(&mut self, now: Instant) {
        let in_use: HashSet<PluginHash> = self.jobs.values().map(|j| j.hash).collect();
        let installed: Vec<PluginHash> = self.store.hashes().copied().collect();
        self.unused_since
            .retain(|h, _| installed.contains(h) && !in_use.contains(h));
        for hash in installed.into_iter().filter(|h| !in_use.contains(h)) {
            let since = *self.unused_since.entry(hash).or_insert(now);
            if now.duration_since(since) >= UNUSED_LIBRARY_TTL {
                info!(
                    "job library {}: unused for {UNUSED_LIBRARY_TTL:?}; removed",
                    hash.short()
                );
                self.store.remove(&hash);
                self.unused_since.remove(&hash);
            }
        }
    }

    /// Cancels a waiting or running job: no more loading, its work in
    /// flight dropped, its library uninstalled, no `done`.
    fn cancel_job(&mut self, io: &mut Io<'_>, id: u64) -> Result<(), ProtoError> {
        let Some(job) = self.jobs.get_mut(&id) else {
            return Err(match self.ended.get(&id) {
                Some(ended) => ProtoError::refused(
                    ErrorCode::CONFLICT,
                    format!("job {id} is already {}", ended.status.name()),
                ),
                None => ProtoError::refused(ErrorCode::NOT_FOUND, format!("no job with id {id}")),
            });
        };
        job.cancel();
        job.in_flight_batches = 0;
        let hash = job.hash;
        info!("job {id} ({}): cancelled", job.name);
        // Answers still on their way are released and dropped on arrival.
        self.in_flight.retain(|_, f| f.job != id);
        self.keep_ended(id);
        self.uninstall_unused(io, hash);
        self.start_waiting_jobs(io);
        Ok(())
    }

    /// On SIGTERM/SIGINT: take no new jobs, cancel the running ones, and
    /// end once everything queued for the network is sent.
    fn check_shutdown(&mut self, io: &mut Io<'_>) {
        if self.stop.load(Ordering::SeqCst) && !self.shutting_down {
            self.shutting_down = true;
            let live: Vec<u64> = self
                .jobs
                .values()
                .filter(|j| !j.status.is_over())
                .map(|j| j.id)
                .collect();
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
        self.traffic = io.traffic();
        // Between ticks too, so the monitor follows attaches and job ends.
        if self.published.is_some() && io.now().duration_since(self.last_published) >= PUBLISH_EVERY
        {
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
        for w in 0..self.workers.len() {
            self.maybe_finish_detach(io, w);
        }
        self.dispatch(io);
        for job in self.jobs.values_mut() {
            if job.finish_if_complete() {
                debug!(
                    "job {}: all tasks answered; reducing the last results",
                    job.id
                );
            }
        }
    }

    // ---- text session ----

    fn text_stats(&self) -> String {
        crate::proto::text::render_stats(&self.stats())
    }

    fn text_jobs(&self) -> String {
        let mut out = String::new();
        let page = self.jobs_page(JobsQuery::default());
        for job in page.jobs.iter().rev() {
            // The progress every other view shows (report::progress).
            let progress = crate::report::progress(job);
            let _ = writeln!(
                out,
                "{}\t{}\t{}\t{progress}",
                job.id,
                job.name,
                job.status.name(),
            );
        }
        if out.is_empty() {
            out.push_str("no jobs\n");
        }
        out
    }
}

impl Handler for Manager {
    fn on_message(&mut self, io: &mut Io<'_>, conn: ConnId, request_id: u32, msg: Message) {
        if let Some(&w) = self.worker_conns.get(&conn) {
            self.worker_reply(io, conn, w, request_id, msg);
        } else if let Some(reply) = self.control(io, conn, request_id, msg) {
            io.send(conn, request_id, &reply);
            self.start_waiting_jobs(io);
        }
        self.settle(io);
    }

    fn on_text(&mut self, _io: &mut Io<'_>, _conn: ConnId, line: &str) -> String {
        const KNOWN: &[TextCommand] = &[TextCommand::Ping, TextCommand::Stats, TextCommand::Jobs];
        match TextCommand::parse(line, KNOWN) {
            Ok(TextCommand::Ping) => "pong\n".to_owned(),
            Ok(TextCommand::Stats) => self.text_stats(),
            Ok(TextCommand::Jobs) => self.text_jobs(),
            Ok(_) => TextCommand::unknown(line, KNOWN),
            Err(reply) => reply,
        }
    }

    fn on_close(&mut self, io: &mut Io<'_>, conn: ConnId, reason: &CloseReason) {
        // A peer that speaks no sense is at fault, not the tasks it held:
        // those go elsewhere as they are, not as suspects.
        let confused = matches!(reason, CloseReason::NotRedmap(_) | CloseReason::BadReply(_));
        let Some(w) = self.forget_conn(conn, !confused) else {
            return;
        };
        let now = io.now();
        let Some(worker) = self.worker(w) else {
            return;
        };
        worker.last_error = Some(reason.to_string());
        if worker.conns.is_empty() {
            match worker.state {
                WorkerState::Connecting => {
                    let reply = worker.waiting_reply.take();
                    // Something that answers, but not with frames, is no
                    // worker: retrying the address cannot help.
                    let (code, msg) = match reason {
                        CloseReason::NotRedmap(_) | CloseReason::BadReply(_) => (
                            ErrorCode::WRONG_PEER,
                            format!("cannot attach {}: {reason}", worker.addr),
                        ),
                        _ => (
                            ErrorCode::UNREACHABLE,
                            format!("cannot reach worker {}: {reason}", worker.addr),
                        ),
                    };
                    warn!("{msg}");
                    self.workers[w] = None;
                    if let Some((c, id)) = reply {
                        io.send(c, id, &refused(code, msg));
                    }
                }
                WorkerState::Active => {
                    warn!(
                        "worker {}: lost ({reason}); its batches go to the others",
                        worker.addr
                    );
                    // It may come back empty: libraries are sent again.
                    worker.installed.clear();
                    worker.state = WorkerState::Failing {
                        retry_at: now + FIRST_BACKOFF,
                        backoff: FIRST_BACKOFF,
                    };
                }
                WorkerState::Failing { .. } => {}
                WorkerState::Detaching => self.finish_detach(io, w),
            }
        }
        self.settle(io);
    }

    fn on_wake(&mut self, io: &mut Io<'_>) {
        self.settle(io);
    }

    fn next_timer(&self) -> Option<Instant> {
        Some(self.next_tick)
    }

    fn should_stop(&self) -> bool {
        self.finished
    }

    fn on_timer(&mut self, io: &mut Io<'_>, now: Instant) {
        self.next_tick = now + TICK;
        for wk in self.workers.iter_mut().flatten() {
            wk.tasks_per_sec = (wk.processed - wk.processed_at_tick) as f64 / TICK.as_secs_f64();
            wk.processed_at_tick = wk.processed;
        }
        self.rate.push_back((now, self.tasks_processed));
        while self
            .rate
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW)
        {
            self.rate.pop_front();
        }
        // A request unanswered for the read timeout means its worker is
        // failing; its batches go to the others. A batch is exempt: its
        // tasks may rightly take longer than that, and the pings below,
        // which a live worker answers at once on every connection, tell a
        // busy worker from a silent one. So is an install, whose last
        // chunk is answered once the library is loaded (its initialisers
        // run: user code, of any length).
        let read_timeout = self.read_timeout;
        let overdue: Vec<(ConnId, u32)> = self
            .outstanding
            .iter()
            .filter(|(_, o)| !matches!(o.what, Request::Batch { .. } | Request::Install { .. }))
            .filter(|(_, o)| !o.expired && now.duration_since(o.sent) > read_timeout)
            .map(|(key, _)| *key)
            .collect();
        for key in overdue {
            if let Some(o) = self.outstanding.get_mut(&key) {
                o.expired = true;
            }
            let Some(&w) = self.worker_conns.get(&key.0) else {
                continue;
            };
            if self
                .worker(w)
                .is_some_and(|wk| wk.state == WorkerState::Connecting)
            {
                let why = "it did not answer within the read timeout";
                self.abandon_attach(io, w, ErrorCode::UNREACHABLE, why);
            } else {
                self.fail_worker(io, w, "no answer within the read timeout");
            }
        }
        // A batch past --task-timeout: its copy is given up like a failed
        // attempt (its worker may be stuck in a task that never ends). A
        // late answer still counts if the batch is not done elsewhere by
        // then.
        if let Some(limit) = self.settings.task_timeout {
            let late: Vec<(ConnId, u32, u64)> = self
                .outstanding
                .iter()
                .filter_map(|(&(conn, id), o)| match o.what {
                    Request::Batch { batch, .. }
                        if !o.expired && now.duration_since(o.sent) > limit =>
                    {
                        Some((conn, id, batch))
                    }
                    _ => None,
                })
                .collect();
            for (conn, id, batch) in late {
                if let Some(o) = self.outstanding.get_mut(&(conn, id)) {
                    o.expired = true;
                }
                // Its slot stays taken (the worker still holds the batch,
                // and never gets more than it can queue), but the worker
                // no longer counts it as work of its own: see Worker::busy.
                if let Some(&w) = self.worker_conns.get(&conn) {
                    if let Some(wk) = self.worker(w) {
                        if let Some(i) = wk.conn_index(conn) {
                            wk.conns[i].stuck += 1;
                        }
                    }
                }
                warn!("batch {batch}: no answer within the task timeout; it goes elsewhere");
                self.drop_copy(batch, conn, id, Loss::TimedOut);
            }
        }
        // Health checks: one ping in flight on every worker connection, so
        // a connection that went silent is noticed even while the others
        // still answer.
        let pinged: HashSet<ConnId> = self
            .outstanding
            .iter()
            .filter(|(_, o)| matches!(o.what, Request::Ping { .. }))
            .map(|((conn, _), _)| *conn)
            .collect();
        let due: Vec<(usize, ConnId)> = self
            .workers
            .iter()
            .enumerate()
            .filter_map(|(w, wk)| Some((w, wk.as_ref()?)))
            .filter(|(_, wk)| wk.state != WorkerState::Connecting)
            .flat_map(|(w, wk)| wk.conns.iter().map(move |c| (w, c.id)))
            .filter(|(_, conn)| !pinged.contains(conn))
            .collect();
        for (w, conn) in due {
            self.request(io, conn, &Message::Ping, Request::Ping { worker: w });
        }
        self.remove_unused_libraries(now);
        let rate = self.stats().tasks_per_sec_milli as f64 / 1000.0;
        self.history.push_back(rate);
        if self.history.len() > HISTORY_TICKS {
            self.history.pop_front();
        }
        self.publish(io);
        // Reconnect to lost workers, with capped exponential backoff.
        for w in 0..self.workers.len() {
            let due = match self.worker(w) {
                Some(wk) if wk.conns.is_empty() => match wk.state {
                    WorkerState::Failing { retry_at, backoff } if retry_at <= now => backoff,
                    _ => continue,
                },
                _ => continue,
            };
            let next = (due * 2).min(MAX_BACKOFF);
            if let Some(wk) = self.worker(w) {
                debug!("worker {}: reconnecting", wk.addr);
                wk.state = WorkerState::Failing {
                    retry_at: now + next,
                    backoff: next,
                };
            }
            if let Some(conn) = self.open_conn(io, w) {
                self.request(io, conn, &Message::Ping, Request::Ping { worker: w });
            }
        }
        self.settle(io);
    }
}
