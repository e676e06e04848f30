//! A worker's reduce threads: each takes one `REDUCE` at a time, fetches
//! the partition's segment of every map output it names (from this
//! worker's own files, or from the worker that keeps them, over the
//! protocol's `FETCH`), merges and combines them by key with the job's
//! reduce within its share of `--reduce-memory` (spilling past it), and
//! keeps the partition's output in a file for the client to fetch.
//!
//! Like Hadoop's reduce-side fetchers, the fetch is a plain blocking
//! client on the reduce thread: it waits on one socket with nothing else
//! to do, so the socket's own timeouts are its deadlines, and the event
//! loop never blocks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};

use log::info;
use mio::Waker;

use super::shuffle::{ShuffleFiles, MAX_CHUNK};
use crate::exec::Executor;
use crate::net::auth::Secret;
use crate::net::client::{Client, Timeouts};
use crate::net::ConnId;
use crate::pipeline::{cap_error, cluster, ReduceMemory};
use crate::plugin::loader::JobKind;
use crate::plugin::CallError;
use crate::proto::msg::manager::RESULT_PREVIEW;
use crate::proto::msg::shuffle::{KeyRange, ReduceOutcome, Source};
use crate::proto::msg::JobArgs;
use crate::proto::msg::{Fetch, Message, Reduce, Reduced};

/// A `REDUCE` to run, and whom to answer.
pub struct ReduceWork {
    pub conn: ConnId,
    pub request_id: u32,
    /// The executor of the job's library.
    pub executor: Arc<Executor>,
    /// The library's kind, as its check said.
    pub kind: JobKind,
    pub reduce: Reduce,
}

/// A reduce that ended.
pub struct ReduceDone {
    pub conn: ConnId,
    pub request_id: u32,
    pub hash: [u8; 32],
    pub reduced: Reduced,
}

/// How a reduce thread reaches other workers.
#[derive(Clone)]
pub struct Peers {
    pub timeouts: Timeouts,
    pub max_size: u32,
    pub secret: Option<Arc<Secret>>,
}

/// The reduce threads, and the flags that cancel a job's reduces.
pub struct Reducers {
    work: Sender<ReduceWork>,
    pub done: Receiver<ReduceDone>,
    cancels: Cancels,
}

/// Each running reduce's stop flag, by job: cancelling a job sets them.
type Cancels = Arc<Mutex<HashMap<u64, Vec<Arc<AtomicBool>>>>>;

struct Ctx {
    files: ShuffleFiles,
    peers: Peers,
    /// Each reduce's share of `--reduce-memory`.
    budget: usize,
    cancels: Cancels,
}

impl Reducers {
    /// `threads` reduce threads sharing `reduce_memory` bytes: each
    /// reduce holds at most `reduce_memory / threads` of runs.
    pub fn new(
        threads: usize,
        reduce_memory: usize,
        files: ShuffleFiles,
        peers: Peers,
        waker: Arc<Waker>,
    ) -> std::io::Result<Reducers> {
        let threads = threads.max(1);
        let (work_tx, work_rx) = mpsc::channel::<ReduceWork>();
        let (done_tx, done_rx) = mpsc::channel::<ReduceDone>();
        let cancels = Arc::new(Mutex::new(HashMap::new()));
        let ctx = Ctx {
            files,
            peers,
            budget: (reduce_memory / threads).max(1),
            cancels: Arc::clone(&cancels),
        };
        let run = move |work: ReduceWork| {
            let reduced = run_reduce(&work, &ctx);
            let done = ReduceDone {
                conn: work.conn,
                request_id: work.request_id,
                hash: work.reduce.hash,
                reduced,
            };
            super::exec::hand_back(&done_tx, &waker, done)
        };
        crate::pipeline::spawn_map_threads(threads, "reduce", work_rx, run)?;
        Ok(Reducers {
            work: work_tx,
            done: done_rx,
            cancels,
        })
    }

    pub fn submit(&self, work: ReduceWork) {
        // The threads live as long as the pool; a send cannot fail.
        let _ = self.work.send(work);
    }

    /// Stops job `job`'s running reduces: each ends with "cancelled",
    /// its spill files removed, and keeps nothing.
    pub fn cancel(&self, job: u64) {
        let mut c = self.cancels.lock().unwrap_or_else(|p| p.into_inner());
        for flag in c.remove(&job).unwrap_or_default() {
            flag.store(true, Ordering::SeqCst);
        }
    }
}

impl Ctx {
    /// A stop flag for a reduce of job `job`, set if the job is cancelled.
    fn register(&self, job: u64) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(false));
        let mut c = self.cancels.lock().unwrap_or_else(|p| p.into_inner());
        c.entry(job).or_default().push(Arc::clone(&flag));
        flag
    }

    fn unregister(&self, job: u64, flag: &Arc<AtomicBool>) {
        let mut c = self.cancels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(flags) = c.get_mut(&job) {
            flags.retain(|f| !Arc::ptr_eq(f, flag));
            if flags.is_empty() {
                c.remove(&job);
            }
        }
    }
}

/// A keyed job's code in its executor, as the reduce calls it.
struct Remote<'a> {
    executor: &'a Executor,
    args: &'a JobArgs,
}

impl crate::pipeline::KeyedCode for Remote<'_> {
    fn combine(&self, run: &[u8]) -> Result<Vec<u8>, CallError> {
        self.executor
            .combine(self.args, run)
            .map_err(crate::exec::ExecError::into_call)
    }

    fn format(&self, run: &[u8]) -> Result<(Vec<u8>, usize), CallError> {
        self.executor
            .format(self.args, run)
            .map_err(crate::exec::ExecError::into_call)
    }
}

/// Reads the partition's segments, one per map output, in the order the
/// `REDUCE` lists them: as the partials of [`cluster::keyed_output`].
/// Stops (setting `stop`) at the first that cannot be read, or once the
/// job is cancelled.
struct Fetcher<'a> {
    ctx: &'a Ctx,
    sources: &'a [Source],
    job: u64,
    partition: u32,
    /// `--total-order`: the partition's key range.
    range: Option<KeyRange>,
    at: (usize, usize),
    conn: Option<(String, Client)>,
    /// The source that could not be read, and why.
    error: Option<(String, String)>,
    fetched: u64,
    /// Set on a source that cannot be read, or by a cancel.
    stop: &'a AtomicBool,
}

impl Fetcher<'_> {
    /// The partition's pairs in map output `file` at `addr` ("": here),
    /// whose segment is `len` bytes: the whole segment `partition`, or,
    /// with a key range, the range's part of segment 0 (its length is the
    /// first answer's total, at most `len`).
    fn fetch(&mut self, addr: &str, file: u64, len: u64) -> Result<Vec<u8>, String> {
        let (segment, range) = match &self.range {
            Some(r) => (0, Some(r)),
            None => (self.partition, None),
        };
        let mut bytes = Vec::with_capacity(len.min(MAX_CHUNK as u64) as usize);
        let mut total: Option<u64> = None;
        if !addr.is_empty() && self.conn.as_ref().is_none_or(|(a, _)| a != addr) {
            let p = &self.ctx.peers;
            let client = Client::connect_with(addr, p.timeouts, p.max_size, p.secret.as_deref())
                .map_err(|e| e.to_string())?;
            self.conn = Some((addr.to_owned(), client));
        }
        while total.is_none_or(|t| (bytes.len() as u64) < t) {
            let offset = bytes.len() as u64;
            let (whole, chunk) = if addr.is_empty() {
                self.ctx
                    .files
                    .read(self.job, file, segment, offset, 0, range)
                    .map_err(|e| e.to_string())?
            } else {
                let Some((_, client)) = self.conn.as_mut() else {
                    return Err("no connection".into());
                };
                let req = Message::Fetch(Fetch {
                    job: self.job,
                    file,
                    segment,
                    offset,
                    max: crate::proto::frame_budget(client.max_size(), MAX_CHUNK) as u32,
                    range: range.cloned(),
                });
                match client.request(&req) {
                    Ok(Message::Fetched(c)) if c.offset == offset => (c.total, c.chunk),
                    Ok(other) => {
                        self.conn = None;
                        return Err(format!(
                            "map output {file}: expected FETCHED at {offset}, got {}",
                            other.opcode()
                        ));
                    }
                    Err(e) => {
                        self.conn = None;
                        return Err(e.to_string());
                    }
                }
            };
            let expected = *total.get_or_insert(whole);
            let fits = if range.is_some() {
                whole <= len
            } else {
                whole == len
            };
            if whole != expected || !fits || (chunk.is_empty() && offset < whole) {
                self.conn = None;
                return Err(format!(
                    "map output {file}: {whole} bytes at {offset}, for a segment of {len}"
                ));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }
}

impl Iterator for Fetcher<'_> {
    type Item = (Vec<u8>, u64);

    fn next(&mut self) -> Option<(Vec<u8>, u64)> {
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return None;
            }
            let (s, f) = self.at;
            let source = self.sources.get(s)?;
            let Some(&(file, len)) = source.files.get(f) else {
                self.at = (s + 1, 0);
                continue;
            };
            self.at.1 += 1;
            if len == 0 {
                continue;
            }
            match self.fetch(&source.addr, file, len) {
                Ok(bytes) => {
                    // What was read: with a key range, a part of `len`.
                    self.fetched += bytes.len() as u64;
                    return Some((bytes, 0));
                }
                Err(why) => {
                    self.error = Some((source.addr.clone(), why));
                    self.stop.store(true, Ordering::SeqCst);
                    return None;
                }
            }
        }
    }
}

fn run_reduce(work: &ReduceWork, ctx: &Ctx) -> Reduced {
    let stop = ctx.register(work.reduce.job);
    let reduced = reduce_partition(work, ctx, &stop);
    ctx.unregister(work.reduce.job, &stop);
    reduced
}

fn reduce_partition(work: &ReduceWork, ctx: &Ctx, stop: &AtomicBool) -> Reduced {
    let r = &work.reduce;
    let failed = |why: String| Reduced::failed(r.partition, ReduceOutcome::Failed, cap_error(why));
    if work.kind != JobKind::Keyed {
        return failed("only a keyed job's partitions are reduced on workers".into());
    }
    let job = Remote {
        executor: &work.executor,
        args: &r.args,
    };
    let mut fetcher = Fetcher {
        ctx,
        sources: &r.sources,
        job: r.job,
        partition: r.partition,
        range: r.range.clone(),
        at: (0, 0),
        conn: None,
        error: None,
        fetched: 0,
        stop,
    };
    let label = format!("job-{}-partition-{}", r.job, r.partition);
    let memory = ReduceMemory::new(ctx.budget, &label);
    let prefix = format!(
        "redmap-part-{}-job-{}-{}",
        std::process::id(),
        r.job,
        r.partition
    );
    let mut bad: Option<String> = None;
    let report = |_: (Vec<u8>, u64), outcome: Result<(), CallError>| {
        if let Err(e) = outcome {
            bad.get_or_insert(e.message);
        }
    };
    // Where the output goes: kept here (both forms, for the client), or
    // written straight to the part file in the one form asked for.
    let mut part = None;
    let ended = if r.output_dir.is_empty() {
        cluster::keyed_output(&job, &mut fetcher, stop, &memory, report, &prefix)
            .map(|(ended, output)| (ended, output.map(Kept::Here)))
    } else {
        if ctx.files.is_dropped(r.job) {
            return failed("cancelled".into());
        }
        match PartWriter::create(&r.output_dir, r.job, r.partition) {
            Ok(w) => part = Some(w),
            Err(why) => return failed(why),
        }
        let mut preview = Vec::new();
        let text = r.output_form != 0;
        let reduced =
            crate::pipeline::reduce::fold_runs(&job, &mut fetcher, stop, &memory, report, |run| {
                if preview.len() < RESULT_PREVIEW {
                    let n = (RESULT_PREVIEW - preview.len()).min(run.len());
                    preview.extend_from_slice(&run[..n]);
                }
                let w = part
                    .as_mut()
                    .ok_or_else(|| std::io::Error::other("no part file"))?;
                w.binary_len += run.len() as u64;
                if text {
                    let t = cluster::text_of(&job, run).map_err(std::io::Error::other)?;
                    w.write(&t)
                } else {
                    w.write(run)
                }
            });
        reduced.map(|reduced| {
            let ended = crate::pipeline::reduce::Ended {
                result: preview,
                done: reduced.outcome,
                spills: reduced.spills,
            };
            (ended, Ok(Kept::Written))
        })
    };
    let fetched = fetcher.fetched;
    if let Some((addr, why)) = fetcher.error.take() {
        let mut reduced = Reduced::failed(
            r.partition,
            ReduceOutcome::Unreachable,
            cap_error(format!("cannot fetch from {}: {why}", shown(&addr))),
        );
        reduced.unreachable = addr;
        return reduced;
    }
    let Some((ended, output)) = ended else {
        return failed("cancelled".into());
    };
    if let Some(why) = bad {
        return failed(why);
    }
    if let Err(e) = ended.done {
        return failed(e.message);
    }
    let output = match output {
        Ok(o) => o,
        Err(e) => return failed(format!("cannot keep the partition's output: {e}")),
    };
    if stop.load(Ordering::SeqCst) {
        return failed("cancelled".into()); // the output's files go with it
    }
    let (file, path, binary_len, text_len, text_error) = match (output, part) {
        (Kept::Here(output), _) => {
            let binary_len = output.binary.len();
            let (text_len, text_error) = match &output.text {
                Some(Ok(t)) => (t.len(), String::new()),
                Some(Err(why)) => (0, why.clone()),
                None => (0, String::new()),
            };
            let Some(file) = ctx.files.keep_partition(r.job, output) else {
                return failed("cancelled".into()); // dropped meanwhile
            };
            (file, String::new(), binary_len, text_len, text_error)
        }
        (Kept::Written, Some(_)) if ctx.files.is_dropped(r.job) => {
            return failed("cancelled".into()); // its partial file goes
        }
        (Kept::Written, Some(w)) => {
            let (binary_len, written) = (w.binary_len, w.len);
            match w.finish() {
                Ok(path) => (0, path, binary_len, written, String::new()),
                Err(why) => return failed(why),
            }
        }
        (Kept::Written, None) => return failed("no part file".into()),
    };
    if ended.spills.spills > 0 {
        info!(
            "job {} partition {}: spilled {} times ({} bytes)",
            r.job, r.partition, ended.spills.spills, ended.spills.bytes
        );
    }
    Reduced {
        partition: r.partition,
        outcome: ReduceOutcome::Done,
        message: String::new(),
        unreachable: String::new(),
        file,
        binary_len,
        text_len,
        text_error,
        fetched,
        spills: ended.spills.spills,
        spilled_bytes: ended.spills.bytes,
        preview: ended.result,
        path,
    }
}

/// Where a reduce's output went.
enum Kept {
    /// Files here, for the client to fetch.
    Here(cluster::Output),
    /// The part file (`--output-dir`).
    Written,
}

/// A partition's output written to `DIR/part-NNNNN` (Hadoop's name; the
/// directory made if need be) as the reduce makes it: by way of a partial
/// file beside it, renamed once whole, so the directory never holds half
/// a part, and a partition reduced again replaces its part. Dropped
/// unfinished, it removes its partial file.
struct PartWriter {
    path: std::path::PathBuf,
    partial: std::path::PathBuf,
    out: Option<std::io::BufWriter<std::fs::File>>,
    /// Bytes written, and bytes of the pairs they were made from.
    len: u64,
    binary_len: u64,
}

impl PartWriter {
    fn create(dir: &str, job: u64, partition: u32) -> Result<PartWriter, String> {
        let dir = std::path::Path::new(dir);
        let path = dir.join(format!("part-{partition:05}"));
        // Its own name, whoever else writes this part (a second run of
        // the partition here, another worker of the same pid on shared
        // storage), and never an existing file.
        let nonce = crate::net::auth::nonce().map_or(0, |n| {
            u64::from_le_bytes([n[0], n[1], n[2], n[3], n[4], n[5], n[6], n[7]])
        });
        let partial = dir.join(format!(
            ".part-{partition:05}.job-{job}.{}.{nonce:016x}.partial",
            std::process::id()
        ));
        let why = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
        std::fs::create_dir_all(dir).map_err(why)?;
        let file = std::fs::File::options()
            .write(true)
            .create_new(true)
            .open(&partial)
            .map_err(why)?;
        Ok(PartWriter {
            path,
            partial,
            out: Some(std::io::BufWriter::with_capacity(1 << 20, file)),
            len: 0,
            binary_len: 0,
        })
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        match &mut self.out {
            Some(out) => out.write_all(bytes)?,
            None => return Err(std::io::Error::other("the part file is closed")),
        }
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Flushes and names the part; returns its path.
    fn finish(mut self) -> Result<String, String> {
        let why = |e: std::io::Error| format!("cannot write {}: {e}", self.path.display());
        let out = self.out.take().ok_or("the part file is closed")?;
        // Synced before it is named: an error that shared storage reports
        // only then (out of space, quota) fails the reduce instead of
        // leaving a short part.
        out.into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all())
            .and_then(|()| std::fs::rename(&self.partial, &self.path))
            .map_err(|e| {
                let _ = std::fs::remove_file(&self.partial);
                why(e)
            })?;
        Ok(self.path.display().to_string())
    }
}

impl Drop for PartWriter {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

/// A source's address as said in messages ("" is this worker).
fn shown(addr: &str) -> &str {
    if addr.is_empty() {
        "this worker"
    } else {
        addr
    }
}
