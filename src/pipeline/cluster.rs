//! The manager's side of the pipeline: its loader and reducer threads, one
//! of each per running job. They have the job's own code run by the job's
//! executor process ([`crate::exec`]; the loader on lane [`LOAD_LANE`],
//! the reducer on [`REDUCE_LANE`]), off the event loop, and report to it
//! through channels and its waker. An executor that dies fails the job
//! (`load of job 7 crashed: …`); the manager goes on.
//!
//! The loader sends through a bounded channel: it blocks when the channel
//! is full, so tasks are loaded only as fast as workers take them and the
//! manager's memory does not grow with the job.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender};

use mio::Waker;

use super::batch::BatchLimits;
use super::load::Loaded;
use super::reduce::Ended;
use crate::exec::{ExecError, Executor};
use crate::plugin::CallError;
use crate::proto::msg::manager::RESULT_PREVIEW;
use crate::proto::msg::{JobArgs, TaskList};

/// The lane of a manager's job executor its loader pulls `load` on.
pub const LOAD_LANE: usize = 0;
/// The lane its reducer folds (and calls `done`) on.
pub const REDUCE_LANE: usize = 1;
/// Lanes of a manager's job executor.
pub const JOB_LANES: usize = 2;

/// How a manager runs a job's code: on [`JOB_LANES`] lanes, within
/// `memory_limit` bytes, never started again (its lanes hold the job's
/// state: its death is the job's).
pub fn job_runs(memory_limit: u64) -> crate::exec::Runs {
    crate::exec::Runs {
        lanes: JOB_LANES,
        memory_limit,
        restart: false,
    }
}

/// Batches the loader asks its executor for at once: as many as the
/// manager's channel from its loader takes ahead.
const LOAD_ROUND_BATCHES: u32 = 4;

/// Most bytes of partials the reducer sends its executor at once.
const REDUCE_ROUND: usize = 16 << 20;

/// What the loader thread tells the event loop.
pub enum LoaderMsg {
    /// The job's estimate of its tasks (`count`), sent first.
    Estimate(Option<u64>),
    /// A batch; `first_index` as in [`super::Batch`].
    Batch { tasks: TaskList, first_index: u64 },
    /// A load error, worded as in [`Loaded::Error`].
    Error(String),
    /// `load` is exhausted. Not sent when loading stopped because the
    /// event loop dropped its receiver.
    End,
    /// The job's executor died while loading: the job fails, with why.
    Crashed(String),
}

/// A file that holds a job's output (or its text form), written once by
/// the job's reducer thread and read in chunks for the job's client; the
/// file is removed when this is dropped. So a manager's memory does not
/// grow with the outputs it keeps.
#[derive(Debug)]
pub struct OutputFile {
    path: PathBuf,
    file: File,
    len: u64,
}

/// Writes an [`OutputFile`]. A writer dropped unfinished (the job failed,
/// was cancelled, or its thread panicked) removes its file.
pub struct OutputWriter {
    path: PathBuf,
    out: Option<BufWriter<File>>,
    len: u64,
}

impl OutputWriter {
    /// A new file in `dir`, named `{prefix}-{n}.{ext}` for the first `n`
    /// that names no file yet (another manager may share the directory).
    pub fn create(dir: &std::path::Path, prefix: &str, ext: &str) -> io::Result<OutputWriter> {
        for n in 0u32.. {
            let path = dir.join(format!("{prefix}-{n}.{ext}"));
            let opened = File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path);
            match opened {
                Ok(file) => {
                    return Ok(OutputWriter {
                        path,
                        out: Some(BufWriter::new(file)),
                        len: 0,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 1000 => continue,
                Err(e) => return Err(e),
            }
        }
        unreachable!("the loop returns")
    }

    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if let Some(out) = &mut self.out {
            out.write_all(bytes)?;
            self.len += bytes.len() as u64;
        }
        Ok(())
    }

    pub fn finish(mut self) -> io::Result<OutputFile> {
        let Some(out) = self.out.take() else {
            return Err(io::Error::other("the output was finished already"));
        };
        let file = out.into_inner().map_err(|e| e.into_error());
        let path = std::mem::take(&mut self.path);
        match file {
            Ok(file) => Ok(OutputFile {
                path,
                file,
                len: self.len,
            }),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }
}

impl Drop for OutputWriter {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl OutputFile {
    /// A new file in `dir` (named as [`OutputWriter::create`] names it)
    /// holding `bytes`.
    pub fn with(
        dir: &std::path::Path,
        prefix: &str,
        ext: &str,
        bytes: &[u8],
    ) -> io::Result<OutputFile> {
        let mut w = OutputWriter::create(dir, prefix, ext)?;
        w.write(bytes)?;
        w.finish()
    }

    /// Its size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Where it is.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Up to `max` bytes from `offset` (fewer at the end).
    pub fn read_at(&self, offset: u64, max: usize) -> io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let n = self.len.saturating_sub(offset).min(max as u64) as usize;
        let mut buf = vec![0; n];
        self.file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A job's output, as its reducer thread made it, for the manager to keep
/// for the job's client.
#[derive(Debug)]
pub struct Output {
    /// The bytes as the job made them: a byte-level job's final
    /// accumulator, or a keyed job's output run (pairs, framed, sorted by
    /// key).
    pub binary: OutputFile,
    /// The text form, one `key<TAB>value` line per key, for a keyed job,
    /// or why the job's `format` could not make it (a byte-level job's
    /// text is its binary: `None`).
    pub text: Option<Result<OutputFile, String>>,
}

/// What the reducer thread tells the event loop.
pub enum ReducerMsg {
    /// The job's constructor failed here: the job fails, and nothing of
    /// it runs.
    Unbuilt { job: u64, message: String },
    /// The job's executor died (its reduce or `done` crashed): the job
    /// fails with `message`.
    Crashed { job: u64, message: String },
    /// A partial of `tasks` tasks was folded into the result.
    Folded { job: u64, tasks: u64 },
    /// A partial could not be folded; its tasks are lost.
    Failed {
        job: u64,
        tasks: u64,
        message: String,
    },
    /// `done` ran.
    Done {
        job: u64,
        /// The result's length in bytes.
        result_len: u64,
        /// Its first [`RESULT_PREVIEW`] bytes.
        preview: Vec<u8>,
        error: Option<String>,
        /// The whole output, for the client (`None`: it could not be kept).
        output: Option<Output>,
        /// Why the output could not be kept, when `done` succeeded.
        unkept: Option<String>,
        /// What the reduce spilled to disk.
        spills: crate::shuffle::SpillStats,
    },
}

fn send_and_wake(tx: &SyncSender<LoaderMsg>, waker: &Waker, msg: LoaderMsg) -> ControlFlow<()> {
    let sent = tx.send(msg);
    let _ = waker.wake();
    match sent {
        Ok(()) => ControlFlow::Continue(()),
        Err(_) => ControlFlow::Break(()), // the job was dropped
    }
}

/// The loader thread's body: sends the estimate, then the batches and
/// load errors, then `End` (or `Crashed`, when the executor died). The
/// executor cuts the batches, [`LOAD_ROUND_BATCHES`] per request (as many
/// as the bounded channel takes ahead); `limits` gives the limits of the
/// next batches from the job's estimate, asked before each request.
pub fn loader(
    executor: &Executor,
    (job, args): (u64, &JobArgs),
    tx: &SyncSender<LoaderMsg>,
    waker: &Waker,
    limits: impl Fn(Option<u64>) -> BatchLimits,
) {
    let crashed = |how: String| LoaderMsg::Crashed(format!("load of job {job} crashed: {how}"));
    let estimate = match executor.count(args) {
        Ok(n) => n,
        Err(ExecError::Died(how)) => {
            let _ = send_and_wake(tx, waker, crashed(how));
            return;
        }
        Err(_) => None,
    };
    if send_and_wake(tx, waker, LoaderMsg::Estimate(estimate)).is_break() {
        return;
    }
    loop {
        let round = executor.load(LOAD_LANE, args, limits(estimate), LOAD_ROUND_BATCHES);
        let msgs = match round {
            Ok(items) => items
                .into_iter()
                .map(|item| match item {
                    Some(Loaded::Batch(b)) => LoaderMsg::Batch {
                        tasks: b.tasks,
                        first_index: b.first_index,
                    },
                    Some(Loaded::Error(e)) => LoaderMsg::Error(e),
                    None => LoaderMsg::End,
                })
                .collect(),
            Err(ExecError::Died(how)) => vec![crashed(how)],
            Err(e) => vec![LoaderMsg::Crashed(format!("load of job {job}: {e}"))],
        };
        for msg in msgs {
            let last = matches!(msg, LoaderMsg::End | LoaderMsg::Crashed(_));
            if send_and_wake(tx, waker, msg).is_break() || last {
                return;
            }
        }
    }
}

/// The text form of a keyed job's whole output run.
pub fn text_of<J: super::KeyedCode + ?Sized>(job: &J, run: &[u8]) -> Result<Vec<u8>, CallError> {
    let (text, used) = job.format(run)?;
    if used != run.len() {
        return Err(CallError {
            panicked: false,
            message: format!(
                "the output's text form: {} of its {} bytes do not decode as pairs",
                run.len() - used,
                run.len()
            ),
        });
    }
    Ok(text)
}

/// A keyed job's reduce, its output written to the files `name` gives
/// as it comes: the binary form, and the text form made by the job's
/// `format` piece by piece (a text form that fails costs that form only).
/// The `Ended` holds the output's first [`RESULT_PREVIEW`] bytes.
/// `None` once `cancelled` is set (see [`super::fold_runs`]).
pub fn keyed_output<J: super::KeyedCode + ?Sized>(
    plugin: &J,
    partials: impl IntoIterator<Item = (Vec<u8>, u64)>,
    cancelled: &AtomicBool,
    memory: &super::ReduceMemory,
    report: impl FnMut((Vec<u8>, u64), Result<(), CallError>),
    prefix: &str,
) -> Option<(Ended, io::Result<Output>)> {
    let dir = memory.spill_dir.as_path();
    let files = OutputWriter::create(dir, prefix, "bin").and_then(|b| {
        let t = OutputWriter::create(dir, prefix, "txt")?;
        Ok((b, t))
    });
    let (mut binary, mut text) = match files {
        Ok(files) => files,
        Err(e) => {
            // Nothing can be kept: the reduce still runs, for its errors.
            let reduced =
                super::fold_runs(plugin, partials, cancelled, memory, report, |_| Ok(()))?;
            let ended = Ended {
                result: Vec::new(),
                done: reduced.outcome,
                spills: reduced.spills,
            };
            return Some((ended, Err(e)));
        }
    };
    let mut preview = Vec::new();
    let mut text_failed: Option<String> = None;
    let reduced = super::fold_runs(plugin, partials, cancelled, memory, report, |run| {
        binary.write(run)?;
        if preview.len() < RESULT_PREVIEW {
            let n = (RESULT_PREVIEW - preview.len()).min(run.len());
            preview.extend_from_slice(&run[..n]);
        }
        if text_failed.is_none() {
            match text_of(plugin, run) {
                Ok(t) => text.write(&t)?,
                Err(e) => text_failed = Some(e.message),
            }
        }
        Ok(())
    })?;
    if let Err(e) = &reduced.outcome {
        // A reduce that failed wrote part of the output at most: none of
        // it is kept (the writers remove their files).
        let ended = Ended {
            result: Vec::new(),
            done: Err(e.clone()),
            spills: reduced.spills,
        };
        return Some((ended, Err(io::Error::other("the reduce failed"))));
    }
    let output = binary.finish().and_then(|binary| {
        let text = match text_failed {
            Some(why) => Err(why),
            None => Ok(text.finish()?),
        };
        Ok(Output {
            binary,
            text: Some(text),
        })
    });
    let ended = Ended {
        result: preview,
        done: reduced.outcome,
        spills: reduced.spills,
    };
    Some((ended, output))
}

/// The reducer thread's body for a byte-level job: folds the partials of
/// job `job` as they arrive, in its executor (on [`REDUCE_LANE`]),
/// reporting each, then has `done` called there and reports it; stops
/// early, without `done`, once `cancelled` is set. An executor that dies
/// fails the job (`ReducerMsg::Crashed`). (A keyed job's partitions are
/// reduced on the workers: `worker::reduce`.)
pub fn reducer(
    executor: &Executor,
    (job, args): (u64, &JobArgs),
    partials: Receiver<(Vec<u8>, u64)>,
    tx: &Sender<ReducerMsg>,
    waker: &Waker,
    cancelled: &AtomicBool,
) {
    let send = |msg| {
        let _ = tx.send(msg);
        let _ = waker.wake();
    };
    let crashed = |stage: &str, how: String| ReducerMsg::Crashed {
        job,
        message: format!("{stage} of job {job} crashed: {how}"),
    };
    // Every partial waiting goes in one trip to the executor (at most
    // REDUCE_ROUND bytes of them).
    while let Ok(first) = partials.recv() {
        let mut round = vec![first];
        let mut size = round[0].0.len();
        while size < REDUCE_ROUND {
            match partials.try_recv() {
                Ok(next) => {
                    size += next.0.len();
                    round.push(next);
                }
                Err(_) => break,
            }
        }
        if cancelled.load(Ordering::SeqCst) {
            return;
        }
        let values: Vec<&[u8]> = round.iter().map(|(v, _)| v.as_slice()).collect();
        let outcomes = match executor.acc_add(REDUCE_LANE, args, &values) {
            Ok(outcomes) if outcomes.len() == round.len() => outcomes,
            Ok(_) => vec![
                Err(CallError {
                    panicked: false,
                    message: "the executor answered for other partials than it was sent".into(),
                });
                round.len()
            ],
            Err(ExecError::Died(how)) => return send(crashed("reduce", how)),
            Err(e) => vec![Err(e.into_call()); round.len()],
        };
        for ((_, tasks), outcome) in round.into_iter().zip(outcomes) {
            send(match outcome {
                Ok(()) => ReducerMsg::Folded { job, tasks },
                Err(e) => ReducerMsg::Failed {
                    job,
                    tasks,
                    message: e.message,
                },
            });
        }
    }
    if cancelled.load(Ordering::SeqCst) {
        return;
    }
    let ended = match executor.acc_done(REDUCE_LANE, args) {
        Ok((result, done)) => Ended {
            result,
            done,
            spills: crate::shuffle::SpillStats::default(),
        },
        Err(ExecError::Died(how)) => return send(crashed("done", how)),
        Err(e) => Ended {
            result: Vec::new(),
            done: Err(e.into_call()),
            spills: crate::shuffle::SpillStats::default(),
        },
    };
    let prefix = format!("redmap-output-{}-job-{job}", std::process::id());
    let output = OutputFile::with(&std::env::temp_dir(), &prefix, "bin", &ended.result)
        .map(|binary| Output { binary, text: None });
    // An output that could not be kept costs the client its output, not
    // the job its status: it is said among the job's errors.
    let (error, output, unkept) = match (ended.done, output) {
        (Ok(()), Ok(output)) => (None, Some(output), None),
        (Err(e), output) => (Some(e.message), output.ok(), None),
        (Ok(()), Err(e)) => (None, None, Some(format!("the output was not kept: {e}"))),
    };
    let preview = ended.result[..ended.result.len().min(RESULT_PREVIEW)].to_vec();
    let _ = tx.send(ReducerMsg::Done {
        job,
        result_len: output.as_ref().map_or(0, |o| o.binary.len()),
        preview,
        error,
        output,
        unkept,
        spills: ended.spills,
    });
    let _ = waker.wake();
}
