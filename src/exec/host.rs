//! A server's handle on the executor of one job library: starts it,
//! lends its lanes to the threads that call it, notices when it dies and
//! why, and starts it again (after a pause that grows while it keeps
//! dying) on the next call.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use log::{info, warn};

use super::wire::{self, Frame};
use crate::pipeline::{BatchLimits, Folded, Loaded, ValueLimit};
use crate::plugin::loader::{JobKind, KeyedBatch};
use crate::plugin::{CallError, PluginHash};
use crate::proto::msg::{JobArgs, TaskList};

/// What an executor is started with: its library, and how it runs.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The job library, as the server stored it.
    pub library: PathBuf,
    pub hash: PluginHash,
    pub runs: Runs,
}

/// How a server runs a library's code, whatever the library.
#[derive(Debug, Clone, Copy)]
pub struct Runs {
    /// Lanes: how many calls may run at once (one per calling thread).
    pub lanes: usize,
    /// `RLIMIT_DATA` of the executor process, in bytes; 0: none.
    pub memory_limit: u64,
    /// Start a new process after one died. A manager's job executor does
    /// not: its lanes hold state (the `load` pulled, the accumulator)
    /// that a new process would not have, so its death is the job's.
    pub restart: bool,
}

/// Executor processes running in this process now, and those that died
/// running job code since it started (for `INFO`).
static RUNNING: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static DEATHS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Executor processes running now (spares included), and deaths so far.
pub fn counts() -> (u64, u64) {
    use std::sync::atomic::Ordering::Relaxed;
    (RUNNING.load(Relaxed), DEATHS.load(Relaxed))
}

/// How long a new executor may take to load its library and say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the death of an executor waits for its last words (the rest
/// of its standard error) before it is judged.
const LAST_WORDS: Duration = Duration::from_millis(500);

/// How an executor process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Death {
    /// `Some` when it exited with a code; `None` when killed by a signal.
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// It ran out of memory under its limit (as its last words said).
    pub out_of_memory: bool,
    /// Its `--memory-limit`, in bytes (0: none), for the message.
    pub memory_limit: u64,
}

impl fmt::Display for Death {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = match (self.signal, self.code) {
            (Some(s), _) => format!("killed by signal {s}{}", signal_name(s)),
            (None, Some(c)) => format!("exit status {c}"),
            (None, None) => "ended".to_owned(),
        };
        if self.out_of_memory {
            let limit = match self.memory_limit {
                0 => String::new(),
                n => format!(" of {}", crate::pipeline::size_text(n)),
            };
            return write!(
                f,
                "out of memory: the job passed its executor's --memory-limit{limit} ({how})"
            );
        }
        write!(f, "the job's code crashed its executor process ({how})")
    }
}

fn signal_name(s: i32) -> &'static str {
    match s {
        libc::SIGABRT => ", SIGABRT",
        libc::SIGSEGV => ", SIGSEGV",
        libc::SIGBUS => ", SIGBUS",
        libc::SIGILL => ", SIGILL",
        libc::SIGFPE => ", SIGFPE",
        libc::SIGKILL => ", SIGKILL",
        libc::SIGTERM => ", SIGTERM",
        _ => "",
    }
}

/// Why a call into the executor did not give the job's answer.
#[derive(Debug, Clone)]
pub enum ExecError {
    /// The job's call failed (an error or a caught panic).
    Call(CallError),
    /// The job's constructor failed.
    Unbuilt(CallError),
    /// The executor died during the call (or would not start).
    Died(String),
}

impl fmt::Display for ExecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExecError::Call(e) | ExecError::Unbuilt(e) => write!(f, "{e}"),
            ExecError::Died(why) => f.write_str(why),
        }
    }
}

/// A reply that does not decode: a failed call, with why.
fn garbled(message: String) -> ExecError {
    ExecError::Call(CallError {
        panicked: false,
        message,
    })
}

impl ExecError {
    /// The error as a failed call's, for callers that do not tell them
    /// apart (a reduce fails alike whichever way).
    pub fn into_call(self) -> CallError {
        match self {
            ExecError::Call(e) => e,
            ExecError::Unbuilt(e) => CallError {
                message: format!("the job's constructor failed: {}", e.message),
                ..e
            },
            ExecError::Died(message) => CallError {
                panicked: false,
                message,
            },
        }
    }
}

/// Why a call fails once its executor is closed.
const UNINSTALLED: &str = "the job's library is no longer needed on this server";

/// The last bytes an executor wrote to standard error (its last words).
const TAIL: usize = 4096;

/// One executor process and its idle lanes.
struct Proc {
    child: Child,
    started: Instant,
    /// Each lane, by index: `None` while lent out.
    idle: Vec<Option<UnixStream>>,
    tail: Arc<Mutex<VecDeque<u8>>>,
    /// Closed when the relay of its standard error ends.
    relayed: std::sync::mpsc::Receiver<()>,
    kind: JobKind,
}

#[derive(Default)]
struct State {
    proc: Option<Proc>,
    /// Which process `proc` is: a lane lent out belongs to one.
    generation: u64,
    /// A thread is starting a process (without the lock held).
    starting: bool,
    /// Deaths in a row of processes that lived less than [`STEADY`].
    deaths: u32,
    /// The last process that died: its generation and how it died.
    last_death: Option<(u64, String)>,
    /// Set once the library is no longer needed: no new process starts.
    closed: bool,
}

/// A process that lived this long was not crash-looping: its death does
/// not lengthen the pause before the next start.
const STEADY: Duration = Duration::from_secs(30);

/// The pause before starting again after `deaths` quick deaths in a row:
/// 0, then 100 ms doubling up to 3.2 s.
fn backoff(deaths: u32) -> Duration {
    match deaths {
        0 => Duration::ZERO,
        n => Duration::from_millis(100u64 << (n - 1).min(5)),
    }
}

/// A job library's executor, shared by the threads that call it. No
/// method holds its lock while a process starts or is waited for, so the
/// event loop may call [`Executor::close`] at any time.
pub struct Executor {
    spec: Spec,
    state: Mutex<State>,
    changed: Condvar,
}

/// A lane lent to one call.
struct Lent {
    lane: UnixStream,
    index: usize,
    generation: u64,
}

impl Executor {
    pub fn new(spec: Spec) -> Executor {
        Executor {
            spec,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'a>(&self, state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed.wait(state).unwrap_or_else(|p| p.into_inner())
    }

    /// What kind of job the library holds (starting the executor if
    /// needed: the library is loaded there, never here).
    pub fn kind(&self) -> Result<JobKind, ExecError> {
        let lent = self.lend(None)?;
        let state = self.lock();
        let kind = match (&state.proc, state.generation == lent.generation) {
            (Some(p), true) => p.kind,
            _ => JobKind::Bytes,
        };
        drop(state);
        self.give_back(lent);
        Ok(kind)
    }

    /// Lends a lane (lane `pin`, or any), starting a process if none
    /// runs (one thread starts it, after the back-off pause; the others
    /// wait for it).
    fn lend(&self, pin: Option<usize>) -> Result<Lent, ExecError> {
        let mut state = self.lock();
        loop {
            if state.closed {
                return Err(ExecError::Died(UNINSTALLED.into()));
            }
            let exited = state
                .proc
                .as_mut()
                .is_some_and(|p| p.child.try_wait().ok().flatten().is_some());
            if exited {
                // Died between calls: buried now, blaming no call.
                let generation = state.generation;
                drop(state);
                self.buried(generation);
                state = self.lock();
                continue;
            }
            if let Some(p) = state.proc.as_mut() {
                let index = match pin {
                    Some(i) => (i < p.idle.len()).then_some(i),
                    None => p.idle.iter().position(Option::is_some),
                };
                if let Some(lane) = index.and_then(|i| p.idle[i].take()) {
                    let (index, generation) = (index.unwrap_or(0), state.generation);
                    return Ok(Lent {
                        lane,
                        index,
                        generation,
                    });
                }
                if pin.is_some_and(|i| i >= p.idle.len()) {
                    return Err(ExecError::Died(format!("no lane {pin:?}")));
                }
                state = self.wait(state); // the lane is out
                continue;
            }
            if state.starting {
                state = self.wait(state);
                continue;
            }
            if !self.spec.runs.restart && state.generation > 0 {
                let why = state.last_death.as_ref().map(|(_, w)| w.clone());
                return Err(ExecError::Died(why.unwrap_or_else(|| {
                    "the job's code crashed its executor process".into()
                })));
            }
            state.starting = true;
            let pause = backoff(state.deaths);
            drop(state);
            std::thread::sleep(pause);
            let started = spawn(&self.spec);
            state = self.lock();
            state.starting = false;
            self.changed.notify_all();
            match started {
                Ok(proc) if state.closed => retire(proc, self.spec.hash),
                Ok(proc) => {
                    state.generation += 1;
                    state.proc = Some(proc);
                }
                Err(why) => {
                    state.deaths += 1;
                    return Err(ExecError::Died(why));
                }
            }
        }
    }

    fn give_back(&self, lent: Lent) {
        let mut state = self.lock();
        if state.generation == lent.generation {
            if let Some(slot) = state.proc.as_mut().and_then(|p| p.idle.get_mut(lent.index)) {
                *slot = Some(lent.lane);
            }
        }
        drop(state);
        self.changed.notify_all();
    }

    /// The process of `generation` is dead (it broke a lane, or exited):
    /// it is reaped (or, if it lingers, killed) and how it died returned;
    /// the next call starts another. Callers of a process another thread
    /// is burying wait for its word.
    fn buried(&self, generation: u64) -> String {
        let mut state = self.lock();
        let mut proc = loop {
            match &state.last_death {
                Some((g, why)) if *g == generation => return why.clone(),
                _ => {}
            }
            if state.closed && state.proc.is_none() {
                return UNINSTALLED.into();
            }
            if state.generation == generation && state.proc.is_some() {
                if let Some(proc) = state.proc.take() {
                    break proc;
                }
            }
            if state.generation != generation {
                // Long gone (a new one runs since).
                return "the job's code crashed its executor process".into();
            }
            state = self.wait(state);
        };
        drop(state);
        let status = reap(&mut proc.child);
        RUNNING.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        DEATHS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Its last words first: the relay ends at the end of its output.
        let _ = proc.relayed.recv_timeout(LAST_WORDS);
        let tail: Vec<u8> = match proc.tail.lock() {
            Ok(t) => t.iter().copied().collect(),
            Err(_) => Vec::new(),
        };
        let death = Death {
            code: status.as_ref().and_then(ExitStatus::code),
            signal: status.as_ref().and_then(ExitStatusExt::signal),
            out_of_memory: contains(&tail, b"memory allocation of"),
            memory_limit: self.spec.runs.memory_limit,
        };
        warn!(
            "executor of job library {} (pid {}): {death}",
            self.spec.hash.short(),
            proc.child.id()
        );
        let why = death.to_string();
        let mut state = self.lock();
        state.deaths = match proc.started.elapsed() < STEADY {
            true => state.deaths + 1,
            false => 1,
        };
        state.last_death = Some((generation, why.clone()));
        drop(state);
        self.changed.notify_all();
        why
    }

    /// Sends one request and reads its reply on a lent lane.
    fn call(&self, tag: u8, head: &[u8], body: &[u8]) -> Result<Frame, ExecError> {
        self.call_on(None, tag, head, body)
    }

    /// [`Executor::call`] on lane `pin` (or any): calls that keep state in
    /// their lane (a `load`, an accumulator) are pinned to one.
    fn call_on(
        &self,
        pin: Option<usize>,
        tag: u8,
        head: &[u8],
        body: &[u8],
    ) -> Result<Frame, ExecError> {
        let mut lent = self.lend(pin)?;
        let exchanged = wire::write_frame(&mut lent.lane, tag, head, body)
            .and_then(|()| wire::read_frame(&mut lent.lane));
        match exchanged {
            Ok(mut frame) => {
                self.give_back(lent);
                match frame.tag {
                    wire::OK => {
                        let busy = frame
                            .head
                            .first_chunk::<8>()
                            .map_or(0, |b| u64::from_be_bytes(*b));
                        frame.head.drain(..frame.head.len().min(8));
                        frame.busy_us = busy;
                        Ok(frame)
                    }
                    wire::UNBUILT => Err(ExecError::Unbuilt(wire::read_error(&frame.head))),
                    _ => Err(ExecError::Call(wire::read_error(&frame.head))),
                }
            }
            Err(_) => {
                drop(lent.lane);
                Err(ExecError::Died(self.buried(lent.generation)))
            }
        }
    }

    /// A byte-level batch mapped and folded (see [`crate::pipeline::map_batch`]).
    /// With it, the microseconds the job took for it.
    pub fn fold_batch(
        &self,
        args: &JobArgs,
        tasks: &TaskList,
        limit: &ValueLimit,
    ) -> Result<(Folded, u64), ExecError> {
        let head = wire::fold_head(args, limit.bytes as u64, &limit.whose);
        let frame = self.call(wire::FOLD, &head, tasks.as_bytes())?;
        let busy = frame.busy_us;
        Folded::decode(&frame.body)
            .map(|f| (f, busy))
            .map_err(|why| {
                garbled(format!(
                    "the executor's folded batch does not decode: {why}"
                ))
            })
    }

    /// A keyed batch mapped and combined (the job's `map_batch`), and the
    /// microseconds the job took for it.
    pub fn map_batch(&self, args: &JobArgs, tasks: &[u8]) -> Result<(KeyedBatch, u64), ExecError> {
        let head = wire::head_with_args(args, |_| {});
        let frame = self.call(wire::MAP_KEYED, &head, tasks)?;
        let (processed, emitted, keys, failures) =
            wire::read_keyed_head(&frame.head).map_err(garbled)?;
        let batch = KeyedBatch {
            processed,
            emitted,
            keys,
            failures,
            pairs: frame.body,
        };
        Ok((batch, frame.busy_us))
    }

    /// A run of pairs through one of the job's reducers.
    pub fn combine(&self, args: &JobArgs, run: &[u8]) -> Result<Vec<u8>, ExecError> {
        let head = wire::head_with_args(args, |_| {});
        Ok(self.call(wire::COMBINE, &head, run)?.body)
    }

    /// A run's text form, and how many of its bytes were used.
    pub fn format(&self, args: &JobArgs, run: &[u8]) -> Result<(Vec<u8>, usize), ExecError> {
        let head = wire::head_with_args(args, |_| {});
        let frame = self.call(wire::FORMAT, &head, run)?;
        let used = frame
            .head
            .first_chunk::<8>()
            .map_or(0, |b| u64::from_be_bytes(*b));
        Ok((frame.body, usize::try_from(used).unwrap_or(usize::MAX)))
    }

    /// Builds the job (runs its constructor), to learn early that it fails.
    pub fn build(&self, args: &JobArgs) -> Result<(), ExecError> {
        self.call(wire::BUILD, &wire::head_with_args(args, |_| {}), &[])
            .map(drop)
    }

    /// The job's `count`: its estimate of its tasks.
    pub fn count(&self, args: &JobArgs) -> Result<Option<u64>, ExecError> {
        let frame = self.call(wire::COUNT, &wire::head_with_args(args, |_| {}), &[])?;
        Ok(match frame.head.split_first() {
            Some((1, n)) => n.first_chunk::<8>().map(|n| u64::from_be_bytes(*n)),
            _ => None,
        })
    }

    /// The next batches (of `limits`) and load errors of the job's
    /// `load`, at most `most` of them; `None`, the last, once it is
    /// exhausted. The `load` is lane `lane`'s, started by its first call.
    pub fn load(
        &self,
        lane: usize,
        args: &JobArgs,
        limits: BatchLimits,
        most: u32,
    ) -> Result<Vec<Option<Loaded>>, ExecError> {
        let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let head = wire::head_with_args(args, |h| {
            h.extend_from_slice(&clamp(limits.tasks).to_be_bytes());
            h.extend_from_slice(&clamp(limits.bytes).to_be_bytes());
            h.extend_from_slice(&most.to_be_bytes());
        });
        let frame = self.call_on(Some(lane), wire::LOAD, &head, &[])?;
        wire::read_loaded(&frame.head, frame.body).map_err(garbled)
    }

    /// Folds partial accumulators, in order, into lane `lane`'s
    /// accumulator with the job's `reduce` (a partial whose reduce fails
    /// leaves it as it was): each one's outcome.
    pub fn acc_add(
        &self,
        lane: usize,
        args: &JobArgs,
        partials: &[&[u8]],
    ) -> Result<Vec<Result<(), CallError>>, ExecError> {
        let head = wire::head_with_args(args, |_| {});
        let size = partials.iter().map(|p| 4 + p.len()).sum();
        let mut body = Vec::with_capacity(size);
        for p in partials {
            crate::proto::msg::wire::put_bytes(&mut body, p);
        }
        let frame = self.call_on(Some(lane), wire::ACC_ADD, &head, &body)?;
        wire::read_outcomes(&frame.head).map_err(garbled)
    }

    /// Calls `done` on the executor's accumulator and returns it (the
    /// job's result) with `done`'s outcome.
    pub fn acc_done(
        &self,
        lane: usize,
        args: &JobArgs,
    ) -> Result<(Vec<u8>, Result<(), CallError>), ExecError> {
        let head = wire::head_with_args(args, |_| {});
        let frame = self.call_on(Some(lane), wire::ACC_DONE, &head, &[])?;
        let done = match frame.head.split_first() {
            Some((0, _)) | None => Ok(()),
            Some((_, error)) => Err(wire::read_error(error)),
        };
        Ok((frame.body, done))
    }

    /// The library is no longer needed: the process gets its lanes closed
    /// (it exits once its running calls end) and none starts again.
    pub fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        // A call still running learns, if its process goes, that it was
        // closed (and is not left waiting for a burial).
        let generation = state.generation;
        state.last_death = Some((generation, UNINSTALLED.into()));
        let proc = state.proc.take();
        drop(state);
        self.changed.notify_all();
        if let Some(proc) = proc {
            retire(proc, self.spec.hash);
        }
    }

    /// Whether a process runs and the executor is not closed: one a
    /// finished job may hand to the next.
    pub fn is_running(&self) -> bool {
        let mut state = self.lock();
        // A process that died unseen (no call since) does not count.
        let alive = state
            .proc
            .as_mut()
            .is_some_and(|p| matches!(p.child.try_wait(), Ok(None)));
        !state.closed && alive
    }

    /// The running process's id, if any (for its `Debug` form).
    fn pid(&self) -> Option<u32> {
        self.lock().proc.as_ref().map(|p| p.child.id())
    }
}

impl fmt::Debug for Executor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Executor")
            .field("library", &self.spec.hash.short())
            .field("pid", &self.pid())
            .finish()
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.close();
    }
}

/// Closes a process's idle lanes and reaps it off the caller's thread (a
/// call may still be running on it; it exits once that call's lane closes).
fn retire(mut proc: Proc, hash: PluginHash) {
    proc.idle.clear();
    let _ = std::thread::Builder::new()
        .name("reap".into())
        .spawn(move || {
            let status = reap(&mut proc.child);
            RUNNING.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            info!(
                "executor of job library {} ended ({status:?})",
                hash.short()
            );
        });
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Waits for a dying process (its lanes are closed) for up to 10 s, then
/// kills it; `None` if it cannot be waited for.
fn reap(child: &mut Child) -> Option<ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => return None,
        }
    }
    let _ = child.kill();
    child.wait().ok()
}

/// Bytes a lane's socket buffers (each way).
const LANE_BUFFER: usize = 4 << 20;

/// Starts an executor and reads its hello.
fn spawn(spec: &Spec) -> Result<Proc, String> {
    let cannot = |e: io::Error| format!("cannot start an executor: {e}");
    let lanes = spec.runs.lanes.max(1);
    let mut ours = Vec::with_capacity(lanes);
    let mut theirs = Vec::with_capacity(lanes);
    for _ in 0..lanes {
        let (a, b) = UnixStream::pair().map_err(cannot)?;
        // A batch (about 1 MiB) goes in one write instead of stalling the
        // writer at each 208 KiB of the default buffer.
        for end in [&a, &b] {
            let _ = socket2::SockRef::from(end).set_send_buffer_size(LANE_BUFFER);
        }
        ours.push(a);
        theirs.push(b);
    }
    let fds: Vec<i32> = theirs.iter().map(AsRawFd::as_raw_fd).collect();
    let list = fds.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0("redmap")
        .arg("executor")
        .arg(&spec.library)
        .arg("--hash")
        .arg(spec.hash.to_string())
        .arg("--lanes")
        .arg(list)
        .arg("--memory-limit")
        .arg(spec.runs.memory_limit.to_string())
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    let child_fds = fds.clone();
    // SAFETY: between fork and exec only async-signal-safe calls are
    // made (fcntl), on descriptors this process owns: the lanes' other
    // ends lose close-on-exec in the child alone, so only it gets them.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &child_fds {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(cannot)?;
    drop(theirs);
    let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL)));
    let (relay_done, relayed) = std::sync::mpsc::channel::<()>();
    if let Some(stderr) = child.stderr.take() {
        let tail = Arc::clone(&tail);
        let _ = std::thread::Builder::new()
            .name("executor-stderr".into())
            .spawn(move || {
                relay(stderr, &tail);
                drop(relay_done);
            });
    }
    // A library whose initialisers never return must not hold the
    // installer (or a map thread) for ever.
    let hello = ours
        .first_mut()
        .ok_or_else(|| "no lane".to_owned())
        .and_then(|lane| {
            let _ = lane.set_read_timeout(Some(HELLO_TIMEOUT));
            let hello = wire::read_frame(lane).map_err(|e| e.to_string());
            let _ = lane.set_read_timeout(None);
            hello
        });
    match hello {
        Ok(frame) if frame.tag == wire::OK => {
            let kind = match frame.head.first() {
                Some(1) => JobKind::Keyed,
                _ => JobKind::Bytes,
            };
            RUNNING.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(Proc {
                child,
                started: Instant::now(),
                idle: ours.into_iter().map(Some).collect(),
                tail,
                relayed,
                kind,
            })
        }
        Ok(frame) => {
            let _ = reap(&mut child);
            Err(wire::read_error(&frame.head).message)
        }
        Err(e) => {
            drop(ours);
            let _ = child.kill(); // a hello that never came
            let status = reap(&mut child);
            Err(format!("the executor died as it started ({e}; {status:?})"))
        }
    }
}

/// Copies an executor's standard error to the server's, keeping its last
/// [`TAIL`] bytes.
fn relay(stderr: std::process::ChildStderr, tail: &Mutex<VecDeque<u8>>) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
        let _ = io::stderr().lock().write_all(&line);
        if let Ok(mut t) = tail.lock() {
            t.extend(line.iter().copied());
            let over = t.len().saturating_sub(TAIL);
            t.drain(..over);
        }
        line.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_grows_with_quick_deaths_and_stops_growing() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(6), Duration::from_millis(3200));
        assert_eq!(backoff(60), Duration::from_millis(3200));
    }

    #[test]
    fn a_death_says_how_and_names_memory() {
        let d = Death {
            code: None,
            signal: Some(libc::SIGABRT),
            out_of_memory: false,
            memory_limit: 0,
        };
        assert_eq!(
            d.to_string(),
            "the job's code crashed its executor process (killed by signal 6, SIGABRT)"
        );
        let oom = Death {
            out_of_memory: true,
            memory_limit: 200 << 20,
            ..d
        };
        assert!(oom.to_string().starts_with("out of memory"), "{oom}");
        let exit = Death {
            code: Some(3),
            signal: None,
            out_of_memory: false,
            memory_limit: 0,
        };
        assert!(exit.to_string().contains("exit status 3"), "{exit}");
    }
}
