//! The executor process (`redmap executor`, started by a server, never by
//! hand): loads one job library, says hello on lane 0, then serves each
//! lane on a thread of its own until the lane closes. It exits once every
//! lane is closed or its parent is gone, so it never outlives its server.

use std::collections::HashMap;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::wire::{self, Frame};
use crate::pipeline::{BatchLimits, Loaded, Loader, ValueLimit};
use crate::plugin::loader::JobKind;
use crate::plugin::{CallError, Instance, Plugin, PluginHash, TaskIter};
use crate::proto::msg::wire::Cursor;
use crate::proto::msg::{JobArgs, TaskList};

/// What the server tells its executor on the command line.
#[derive(Debug, Clone)]
pub struct Start {
    /// The job library (checked by the server against its hash).
    pub library: std::path::PathBuf,
    pub hash: PluginHash,
    /// The lanes' file descriptors, inherited from the server.
    pub lanes: Vec<RawFd>,
    /// `RLIMIT_DATA` for the whole process, in bytes; 0: none.
    pub memory_limit: u64,
}

/// Most bytes of tasks one `LOAD` answers with.
const LOAD_ROUND: usize = 4 << 20;

/// Most job instances an executor keeps built at once (one per distinct
/// argument list of its library; one per running job is the usual need).
const MAX_INSTANCES: usize = 64;

/// The jobs built in this executor, by arguments: a constructor runs once
/// per argument list while it succeeds, not once per batch; its error is
/// not kept (the next call tries again: a file may have appeared).
struct Instances {
    plugin: Arc<Plugin>,
    built: Mutex<HashMap<JobArgs, Arc<Instance>>>,
}

impl Instances {
    fn get(&self, args: &JobArgs) -> Result<Arc<Instance>, CallError> {
        if let Some(job) = self.lock().get(args) {
            return Ok(Arc::clone(job));
        }
        // Built outside the lock: a slow constructor holds up no other call.
        let job = self.plugin.instance(args)?;
        let mut table = self.lock();
        if let Some(first) = table.get(args) {
            return Ok(Arc::clone(first)); // built meanwhile; ours is dropped
        }
        if table.len() >= MAX_INSTANCES {
            if let Some(old) = table.keys().next().cloned() {
                table.remove(&old);
            }
        }
        table.insert(args.clone(), Arc::clone(&job));
        Ok(job)
    }

    /// Builds the job anew, in place of the one kept: a new job's
    /// constructor runs for it, as it would in a process of its own.
    fn rebuild(&self, args: &JobArgs) -> Result<(), CallError> {
        let job = self.plugin.instance(args)?;
        // One job at a time uses a manager's executor: the others' go.
        let mut table = self.lock();
        table.clear();
        table.insert(args.clone(), job);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobArgs, Arc<Instance>>> {
        self.built.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Runs the executor; returns the process's exit code.
pub fn run(start: Start) -> u8 {
    // A terminal's Ctrl-C, or a service manager's SIGTERM to the whole
    // group, is for the server: it finishes the batches it holds, which
    // need this process. The executor ends with its server (lanes closed,
    // or the parent gone), not by these signals.
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: setting a signal's disposition to "ignore" runs no code
        // of ours in a handler.
        unsafe { libc::signal(signal, libc::SIG_IGN) };
    }
    if start.memory_limit > 0 {
        // The lanes' stacks (reserved whole, used as job code recurses)
        // come on top of what the job may allocate.
        let stacks = (start.lanes.len() * crate::pipeline::JOB_THREAD_STACK) as u64;
        if let Err(e) = limit_memory(start.memory_limit.saturating_add(stacks)) {
            log::warn!("executor: cannot set its memory limit: {e}");
        }
    }
    let lanes: Vec<UnixStream> = start
        .lanes
        .iter()
        // SAFETY: the server passed these descriptors for this process
        // alone, each one end of a socket pair; nothing else owns them.
        .map(|&fd| unsafe { UnixStream::from_raw_fd(fd) })
        .collect();
    for lane in &lanes {
        // Job code that starts processes must not hand them our lanes.
        set_cloexec(lane);
    }
    // The hello goes on a second handle of lane 0, written once every
    // lane's thread runs: an executor that says hello serves every lane.
    let Some(mut hello) = lanes.first().and_then(|l| l.try_clone().ok()) else {
        return 2;
    };
    let refuse = |hello: &mut UnixStream, message: String| {
        let e = CallError {
            panicked: false,
            message,
        };
        let _ = wire::write_frame(hello, wire::FAILED, &wire::error_head(&e), &[]);
        1
    };
    let plugin = match open(&start.library, start.hash) {
        Ok(plugin) => plugin,
        Err(why) => return refuse(&mut hello, why),
    };
    let kind = u8::from(plugin.kind() == JobKind::Keyed);
    let instances = Arc::new(Instances {
        plugin,
        built: Mutex::new(HashMap::new()),
    });
    let (ended_tx, ended_rx) = mpsc::channel::<()>();
    let count = lanes.len();
    for (i, lane) in lanes.into_iter().enumerate() {
        let (instances, ended) = (Arc::clone(&instances), ended_tx.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("lane-{i}"))
            .stack_size(crate::pipeline::JOB_THREAD_STACK)
            .spawn(move || {
                serve(lane, &instances);
                let _ = ended.send(());
            });
        if let Err(e) = spawned {
            return refuse(
                &mut hello,
                format!("the executor cannot start its threads: {e}"),
            );
        }
    }
    if wire::write_frame(&mut hello, wire::OK, &[kind], &[]).is_err() {
        return 1;
    }
    drop(hello);
    drop(ended_tx);
    // The server closes every lane when it is done with this library; a
    // server killed outright closes them too, but a lane busy in a long
    // call would not notice: the parent's pid is the second watch.
    let parent = std::os::unix::process::parent_id();
    let mut left = count;
    while left > 0 {
        match ended_rx.recv_timeout(Duration::from_secs(1)) {
            Ok(()) => left -= 1,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if std::os::unix::process::parent_id() != parent {
                    break;
                }
            }
        }
    }
    // No destructor of job code runs on the way out: a job's own
    // clean-up has no business holding up an executor no one needs.
    std::process::exit(0)
}

fn open(library: &Path, hash: PluginHash) -> Result<Arc<Plugin>, String> {
    Plugin::open_hashed(library, hash).map_err(|e| e.to_string())
}

/// What a lane keeps between its calls: the job's `load` it is pulling,
/// and the accumulator it is folding (a manager's job calls them on one
/// lane each, from one thread).
#[derive(Default)]
struct Lane {
    /// The [`JOBS`] count this state belongs to: a later job starts over.
    job: u64,
    load: Option<(JobArgs, Loader<TaskIter>)>,
    acc: Option<(JobArgs, Vec<u8>)>,
}

/// Jobs started in this executor (`BUILD`s): a manager hands an executor
/// from a job that ended to the next job of its library, whose lanes'
/// state (a `load` pulled, an accumulator) must not carry over.
static JOBS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Answers the requests of one lane, one at a time, until it closes.
fn serve(mut lane: UnixStream, instances: &Instances) {
    let mut state = Lane::default();
    while let Ok(frame) = wire::read_frame(&mut lane) {
        let started = std::time::Instant::now();
        let written = match handle(frame, instances, &mut state) {
            Ok((head, body)) => {
                // The call's own time first: what the server's batch
                // sizing measures, without the trip here and back.
                let busy = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                let mut timed = Vec::with_capacity(8 + head.len());
                timed.extend_from_slice(&busy.to_be_bytes());
                timed.extend_from_slice(&head);
                wire::write_frame(&mut lane, wire::OK, &timed, &body)
            }
            Err(Refusal::Call(e)) => {
                wire::write_frame(&mut lane, wire::FAILED, &wire::error_head(&e), &[])
            }
            Err(Refusal::Unbuilt(e)) => {
                wire::write_frame(&mut lane, wire::UNBUILT, &wire::error_head(&e), &[])
            }
        };
        if written.is_err() {
            return;
        }
    }
}

enum Refusal {
    Call(CallError),
    Unbuilt(CallError),
}

fn malformed(what: &str) -> Refusal {
    Refusal::Call(CallError {
        panicked: false,
        message: format!("the executor cannot read its request: {what}"),
    })
}

/// A request's field that does not decode.
impl From<crate::proto::ProtoError> for Refusal {
    fn from(e: crate::proto::ProtoError) -> Refusal {
        malformed(&e.to_string())
    }
}

/// One request's reply: head and body.
fn handle(
    frame: Frame,
    instances: &Instances,
    lane: &mut Lane,
) -> Result<(Vec<u8>, Vec<u8>), Refusal> {
    let mut c = Cursor::new(0, &frame.head);
    let args = JobArgs::decode(&mut c)?;
    if frame.tag == wire::BUILD {
        instances.rebuild(&args).map_err(Refusal::Unbuilt)?;
        JOBS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        return Ok((Vec::new(), Vec::new()));
    }
    let jobs = JOBS.load(std::sync::atomic::Ordering::SeqCst);
    if lane.job != jobs {
        *lane = Lane {
            job: jobs,
            ..Lane::default()
        };
    }
    let job = instances.get(&args).map_err(Refusal::Unbuilt)?;
    match frame.tag {
        wire::FOLD => {
            let bytes = c.u64("limit")?;
            let whose = c.str("whose")?;
            let limit = ValueLimit {
                bytes: usize::try_from(bytes).unwrap_or(usize::MAX),
                whose,
            };
            let tasks = TaskList::from_bytes(frame.body)?;
            let folded = crate::pipeline::map_batch(&*job, &tasks, &limit);
            Ok((Vec::new(), folded.encode()))
        }
        wire::MAP_KEYED => {
            let b = job.map_batch(&frame.body).map_err(Refusal::Call)?;
            let head = wire::keyed_head(b.processed, b.emitted, b.keys, &b.failures);
            Ok((head, b.pairs))
        }
        wire::COMBINE => {
            let mut reducer = job.reducer().map_err(Refusal::Call)?;
            reducer.add(&frame.body).map_err(Refusal::Call)?;
            Ok((Vec::new(), reducer.finish().map_err(Refusal::Call)?))
        }
        wire::FORMAT => {
            let (text, used) = job.format(&frame.body).map_err(Refusal::Call)?;
            Ok(((used as u64).to_be_bytes().to_vec(), text))
        }
        wire::COUNT => {
            let mut head = vec![0; 9];
            if let Some(n) = job.count() {
                head[0] = 1;
                head[1..].copy_from_slice(&n.to_be_bytes());
            }
            Ok((head, Vec::new()))
        }
        wire::LOAD => {
            let tasks = c.u32("tasks")? as usize;
            let bytes = c.u32("bytes")? as usize;
            let most = c.u32("items")?.max(1) as usize;
            let limits = BatchLimits { tasks, bytes };
            if lane.load.as_ref().is_none_or(|(a, _)| *a != args) {
                lane.load = Some((args.clone(), Loader::new(job.tasks(), limits)));
            }
            let Some((_, loader)) = lane.load.as_mut() else {
                return Err(malformed("no load"));
            };
            loader.set_limits(limits);
            let (mut items, mut size) = (Vec::new(), 0usize);
            while items.len() < most && size < LOAD_ROUND {
                let loaded = loader.next();
                let end = loaded.is_none();
                if let Some(Loaded::Batch(b)) = &loaded {
                    size += b.tasks.byte_len();
                }
                items.push(loaded);
                if end {
                    // Exhausted: a next `LOAD` starts the job's `load` again.
                    lane.load = None;
                    break;
                }
            }
            Ok(wire::loaded_reply(items))
        }
        wire::ACC_ADD => {
            let mut acc = match lane.acc.take() {
                Some((a, acc)) if a == args => acc,
                _ => Vec::new(),
            };
            let mut partials = Cursor::new(0, &frame.body);
            let mut outcomes = Vec::new();
            while !partials.rest().is_empty() {
                let partial = partials.bytes("partial")?;
                outcomes.push(job.reduce(&acc, partial).map(|next| acc = next));
            }
            lane.acc = Some((args, acc));
            Ok((wire::outcomes_head(&outcomes), Vec::new()))
        }
        wire::ACC_DONE => {
            let acc = match lane.acc.take() {
                Some((a, acc)) if a == args => acc,
                _ => Vec::new(),
            };
            let head = match job.done(&acc) {
                Ok(()) => vec![0],
                Err(e) => {
                    let mut head = vec![1];
                    head.extend_from_slice(&wire::error_head(&e));
                    head
                }
            };
            Ok((head, acc))
        }
        other => Err(malformed(&format!("unknown request {other}"))),
    }
}

/// Caps the process's data (heap, anonymous writable mappings, thread
/// stacks) at `bytes`: past it an allocation fails, and a Rust job then
/// aborts with "memory allocation of N bytes failed", which the server
/// reads as "out of memory". `RLIMIT_DATA` counts what is allocated, not
/// address space merely reserved (glibc's arenas), unlike `RLIMIT_AS`.
fn limit_memory(bytes: u64) -> std::io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: bytes as libc::rlim_t,
        rlim_max: bytes as libc::rlim_t,
    };
    // SAFETY: a plain system call on a struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_DATA, &limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn set_cloexec(lane: &UnixStream) {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on a descriptor this process owns.
    unsafe { libc::fcntl(lane.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
}
