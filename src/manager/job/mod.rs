//! One job on the manager: its lifecycle, its counters, its queue of work
//! to send, and the two threads that run the job's own code on the
//! manager's side.
//!
//! A job's status changes only through its own methods ([`Job::start`],
//! [`Job::cancel`], [`Job::fail`], [`Job::end`]); its counters only through
//! what happened to its batches ([`Job::apply_result`], [`Job::requeue`]).
//!
//! The loader thread pulls `load()` and cuts the tasks into batches, sent
//! through a bounded channel: it blocks when the channel is full, so tasks
//! are loaded only as fast as workers take them and the manager's memory
//! does not grow with the job. It cuts each batch at the size the
//! [`BatchSizer`] last set from the workers' answers.
//!
//! The reducer thread folds the workers' partial results with `reduce` in
//! arrival order, then calls `done`. Both report back to the event loop
//! through channels and the waker; neither ever runs on it. Both are parts
//! of the one pipeline ([`crate::pipeline::cluster`]).

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use mio::Waker;

use super::invariant::decrement;
use super::sizing::{spread_cap, BatchSizer};
use crate::exec::{ExecError, Executor};
use crate::pipeline::{cap_error, cluster, BatchLimits, ErrorLog};
use crate::plugin::loader::JobKind;
use crate::plugin::{Library, PluginHash};
use crate::proto::msg::shuffle::MAX_PARTITIONS;
use crate::proto::msg::{JobArgs, JobStatus, JobSummary, RunOptions, ShuffleSpec};

use super::shuffle::{Shuffle, TaskLog};

/// A job's thread is done with its executor: the last one hands it to the
/// library's next job (it still runs, with the library loaded).
fn hand_on(executor: Arc<Executor>, library: &Library) {
    if let Some(executor) = Arc::into_inner(executor) {
        library.put_spare(executor);
    }
}

/// Batches the loader may run ahead of dispatch.
const LOAD_AHEAD: usize = 4;
/// Errors a job keeps with their messages: its first 5 and its latest 5,
/// by the pipeline's one rule ([`ErrorLog`]). Fewer than the embedded run
/// keeps, since a summary is kept for each of the last
/// [`KEPT_ENDED_JOBS`](super::jobs::KEPT_ENDED_JOBS) jobs and travels in
/// every `jobs list`.
pub const KEPT_ERRORS: usize = 10;

pub use crate::pipeline::cluster::{LoaderMsg, ReducerMsg};
pub use work::Pending;

mod work;

pub struct Job {
    id: u64,
    name: String,
    hash: PluginHash,
    plugin: Arc<Library>,
    /// The job's arguments: built with them here, and sent with every
    /// batch for the workers to build it with.
    args: JobArgs,
    library: Arc<Vec<u8>>,
    status: JobStatus,
    started: Option<Instant>,
    ended: Option<Instant>,
    estimate: Option<u64>,
    loaded: u64,
    processed: u64,
    failed: u64,
    retried: u64,
    load_errors: u64,
    reduce_errors: u64,
    errors: ErrorLog<String>,
    result_len: u64,
    result_preview: Vec<u8>,
    /// Failed tasks to try again, before new ones.
    retry: VecDeque<Pending>,
    /// One batch taken from the loader, waiting for a worker.
    staged: Option<Pending>,
    /// Backup copies sent for stragglers, and how many answered first.
    backups: u64,
    backups_won: u64,
    /// Late answers for batches already applied, dropped.
    duplicates: u64,
    /// What its reduce spilled to disk past `--reduce-memory`.
    spills: crate::shuffle::SpillStats,
    /// Seconds per task from sending a batch to its answer, a moving
    /// average: what a straggler is measured against.
    secs_per_task: f64,
    /// Sets the size of the next batches from the workers' map times.
    sizer: BatchSizer,
    /// Set on cancel: the reducer then skips `done`.
    cancelled: Arc<AtomicBool>,
    loader: Option<Receiver<LoaderMsg>>,
    loader_done: bool,
    partials: Option<Sender<(Vec<u8>, u64)>>,
    /// Partials handed to the reducer and not folded yet.
    partials_outstanding: u64,
    /// Their sizes, in the order the reducer takes them (it folds in
    /// order), and their sum: what they hold of the manager's memory.
    partial_sizes: VecDeque<usize>,
    partial_bytes: usize,
    /// How its shuffle is cut and where its output goes.
    options: RunOptions,
    /// A keyed job's shuffle: its partitions are reduced on workers.
    shuffle: Option<Shuffle>,
    /// Its answered batches' tasks, to map again after a loss.
    task_log: Option<TaskLog>,
}

impl Job {
    pub fn new(
        id: u64,
        name: String,
        plugin: Arc<Library>,
        args: JobArgs,
        library: Arc<Vec<u8>>,
        options: RunOptions,
    ) -> Job {
        Job {
            id,
            name,
            hash: plugin.hash(),
            plugin,
            args,
            library,
            status: JobStatus::Waiting,
            started: None,
            ended: None,
            estimate: None,
            loaded: 0,
            processed: 0,
            failed: 0,
            retried: 0,
            load_errors: 0,
            reduce_errors: 0,
            errors: ErrorLog::new(KEPT_ERRORS),
            result_len: 0,
            result_preview: Vec::new(),
            retry: VecDeque::new(),
            staged: None,
            backups: 0,
            backups_won: 0,
            duplicates: 0,
            spills: Default::default(),
            secs_per_task: 0.0,
            sizer: BatchSizer::new(),
            cancelled: Arc::new(AtomicBool::new(false)),
            loader: None,
            loader_done: false,
            partials: None,
            partials_outstanding: 0,
            partial_sizes: VecDeque::new(),
            partial_bytes: 0,
            options,
            shuffle: None,
            task_log: None,
        }
    }

    /// How its shuffle is cut and where its output goes.
    pub fn options(&self) -> &RunOptions {
        &self.options
    }

    /// Its shuffle, for a keyed job that has started.
    pub fn shuffle(&self) -> Option<&Shuffle> {
        self.shuffle.as_ref()
    }

    /// What its batches carry to be kept on the workers, for a shuffled
    /// job.
    pub fn shuffle_spec(&self) -> Option<ShuffleSpec> {
        self.shuffle.as_ref().map(|s| ShuffleSpec {
            job: self.id,
            partitions: s.partitions(),
            total_order: s.total_order(),
        })
    }

    pub fn shuffle_mut(&mut self) -> Option<&mut Shuffle> {
        self.shuffle.as_mut()
    }

    /// Every task is loaded and answered (`in_flight`: its batches in the
    /// ledger): a shuffled job's partitions may be reduced.
    pub fn maps_complete(&self, in_flight: usize) -> bool {
        self.status == JobStatus::Running
            && self.loader_done
            && self.staged.is_none()
            && self.retry.is_empty()
            && in_flight == 0
    }

    /// Map outputs were lost: their tasks (from the task log) are mapped
    /// again, as new batches, no attempt counted. A log that cannot be
    /// read fails the job.
    pub fn remap(&mut self, lost: &[((u64, u64), u64)]) {
        for &(at, first_index) in lost {
            let read = match &self.task_log {
                Some(log) => log.read(at),
                None => Err(io::Error::other("no task log")),
            };
            match read {
                Ok(tasks) => {
                    // Counted again when they are mapped again.
                    let n = tasks.len() as u64;
                    decrement(&mut self.processed, n, "processed tasks");
                    self.retry.push_back(Pending::new(tasks, first_index));
                }
                Err(e) => {
                    self.fail(format!("cannot map lost outputs again: the task log: {e}"));
                    return;
                }
            }
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// The job's arguments, as its batches carry them.
    pub fn args(&self) -> &JobArgs {
        &self.args
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn hash(&self) -> PluginHash {
        self.hash
    }

    pub fn library(&self) -> &Arc<Vec<u8>> {
        &self.library
    }

    pub fn status(&self) -> JobStatus {
        self.status
    }

    pub fn is_running(&self) -> bool {
        self.status == JobStatus::Running
    }

    pub fn failed(&self) -> u64 {
        self.failed
    }

    pub fn retried(&self) -> u64 {
        self.retried
    }

    pub fn secs_per_task(&self) -> f64 {
        self.secs_per_task
    }

    /// Partials handed to the reducer and not folded yet.
    pub fn partials_outstanding(&self) -> u64 {
        self.partials_outstanding
    }

    /// Bytes of those partials.
    pub fn partial_bytes(&self) -> usize {
        self.partial_bytes
    }

    /// The reducer took the oldest partial (folded or refused).
    fn partial_taken(&mut self) {
        decrement(&mut self.partials_outstanding, 1, "partials outstanding");
        if let Some(size) = self.partial_sizes.pop_front() {
            self.partial_bytes -= size;
        }
    }

    /// Keeps `message` among the job's errors (see [`KEPT_ERRORS`]).
    pub fn record_error(&mut self, message: String) {
        self.errors.push(cap_error(message));
    }

    /// Starts the loader and reducer threads. `spread` is the number of
    /// batches the cluster can work on at once, used to size batches so a
    /// small job still reaches every worker.
    ///
    /// # Errors
    /// A thread could not be started (the system's thread limit): the job
    /// is then failed, with why, and nothing of it runs. A job that is not
    /// waiting is refused (and left as it is).
    pub fn start(
        &mut self,
        spread: usize,
        (max_batch_bytes, max_batch_tasks): (usize, usize),
        reducer_tx: Sender<ReducerMsg>,
        waker: Arc<Waker>,
        (workers, memory_limit): (usize, u64),
    ) -> io::Result<()> {
        if self.status != JobStatus::Waiting {
            // A second loader would load every task again.
            return Err(io::Error::other(format!(
                "job {} is {}, not waiting",
                self.id,
                self.status.name()
            )));
        }
        self.status = JobStatus::Running;
        self.started = Some(Instant::now());
        // A keyed job's reduce runs on the workers: no pair comes here.
        let shuffled = self.plugin.kind() == JobKind::Keyed;
        if shuffled {
            let partitions = match self.options.reducers {
                0 => u32::try_from(workers)
                    .unwrap_or(u32::MAX)
                    .clamp(1, MAX_PARTITIONS),
                n => n,
            };
            match TaskLog::create(&format!("job-{}", self.id)) {
                Ok(log) => self.task_log = Some(log),
                Err(e) => {
                    self.fail(format!("cannot keep the job's tasks for its shuffle: {e}"));
                    return Err(e);
                }
            }
            self.shuffle = Some(Shuffle::new(partitions, self.options.total_order));
        }
        let (load_tx, load_rx) = mpsc::sync_channel(LOAD_AHEAD);
        let (partial_tx, partial_rx) = mpsc::channel();
        // The job's code runs in an executor process of its own: a crash
        // there fails this job, never the manager.
        // The first job of a library takes the executor that checked it,
        // already running; the others start their own.
        let spec = self.plugin.spec(cluster::job_runs(memory_limit));
        let executor = Arc::new(
            self.plugin
                .take_spare()
                .unwrap_or_else(|| Executor::new(spec)),
        );
        let loader_executor = Arc::clone(&executor);
        let (library, loader_library) = (Arc::clone(&self.plugin), Arc::clone(&self.plugin));
        let (args, id) = (self.args.clone(), self.id);
        let loader_args = args.clone();
        let cancelled = Arc::clone(&self.cancelled);
        let reducer_waker = Arc::clone(&waker);
        // The reducer builds the job first (its constructor is job code:
        // never on the event loop) and then lets the loader start; a
        // constructor that fails fails the job, and the loader, never
        // told to start, ends.
        let (job_tx, job_rx) = mpsc::channel::<()>();
        // The reducer first: if the loader cannot start, dropping
        // `partials` ends it at once, with no `done` (cancelled is set).
        let spawned = thread::Builder::new()
            .name(format!("reduce-{}", self.id))
            .spawn(move || {
                // Built, then reduced (a byte-level job); the executor
                // goes on to the library's next job if it still runs.
                let run = || {
                    let unbuilt = match executor.build(&args) {
                        Ok(()) => None,
                        Err(ExecError::Died(how)) => Some(ReducerMsg::Crashed {
                            job: id,
                            message: format!("the constructor of job {id} crashed: {how}"),
                        }),
                        Err(ExecError::Unbuilt(e) | ExecError::Call(e)) => {
                            Some(ReducerMsg::Unbuilt {
                                job: id,
                                message: e.message,
                            })
                        }
                    };
                    if let Some(msg) = unbuilt {
                        let _ = reducer_tx.send(msg);
                        let _ = reducer_waker.wake();
                        return;
                    }
                    let _ = job_tx.send(());
                    if shuffled {
                        // Its reduce runs on the workers: this thread only
                        // built the job.
                        drop(partial_rx);
                        return;
                    }
                    cluster::reducer(
                        &executor,
                        (id, &args),
                        partial_rx,
                        &reducer_tx,
                        &reducer_waker,
                        &cancelled,
                    )
                };
                run();
                hand_on(executor, &library);
            });
        if let Err(e) = spawned {
            self.fail(format!("cannot start the job's reducer thread: {e}"));
            return Err(e);
        }
        if !shuffled {
            self.partials = Some(partial_tx);
        }
        let target = self.sizer.shared();
        // The batches' size is the manager's: the sizer's target, capped to
        // spread the job's estimate and to fit every worker's frames.
        let limits = move |estimate| BatchLimits {
            tasks: target
                .load(Ordering::Relaxed)
                .min(spread_cap(estimate, spread))
                .min(max_batch_tasks.max(1)),
            bytes: max_batch_bytes,
        };
        let spawned = thread::Builder::new()
            .name(format!("load-{}", self.id))
            .spawn(move || {
                if job_rx.recv().is_ok() {
                    let job = (id, &loader_args);
                    cluster::loader(&loader_executor, job, &load_tx, &waker, limits);
                }
                hand_on(loader_executor, &loader_library);
            });
        if let Err(e) = spawned {
            self.fail(format!("cannot start the job's loader thread: {e}"));
            return Err(e);
        }
        self.loader = Some(load_rx);
        Ok(())
    }

    /// Reads what the loader sent, until a batch is staged or nothing is left.
    pub fn pump_loader(&mut self) {
        while self.staged.is_none() && !self.loader_done {
            let Some(rx) = &self.loader else {
                return;
            };
            match rx.try_recv() {
                Ok(LoaderMsg::Estimate(n)) => self.estimate = n,
                Ok(LoaderMsg::Batch { tasks, first_index }) => {
                    self.loaded += tasks.len() as u64;
                    self.staged = Some(Pending::new(tasks, first_index));
                }
                Ok(LoaderMsg::Error(e)) => {
                    self.load_errors += 1;
                    self.record_error(format!("load: {e}"));
                }
                Ok(LoaderMsg::Crashed(why)) => {
                    self.loader_done = true;
                    self.loader = None;
                    self.fail(why);
                }
                Ok(LoaderMsg::End) | Err(TryRecvError::Disconnected) => {
                    self.loader_done = true;
                    self.loader = None;
                }
                Err(TryRecvError::Empty) => return,
            }
        }
    }

    /// Stops the job: no more loading, no `done`.
    pub fn cancel(&mut self) {
        self.status = JobStatus::Cancelled;
        self.ended = Some(Instant::now());
        self.cancelled.store(true, Ordering::SeqCst);
        self.loader = None; // the loader's next send fails and it stops
        self.loader_done = true;
        self.staged = None;
        self.retry.clear();
        self.partials = None; // the reducer drains and exits
    }

    /// Ends the job as failed for `why` (no worker can run it): like a
    /// cancel, no more loading and no `done`, but its status says failed.
    pub fn fail(&mut self, why: String) {
        self.cancel();
        self.status = JobStatus::Failed;
        self.record_error(why);
    }

    /// `done` ran (or failed with `error`): the job ends, its status from
    /// what happened to its tasks.
    pub fn end(&mut self, result_len: u64, preview: Vec<u8>, error: Option<String>) {
        self.result_len = result_len;
        self.result_preview = preview;
        self.ended = Some(Instant::now());
        if let Some(e) = &error {
            self.record_error(format!("done: {e}"));
        }
        let errors = self.load_errors + self.reduce_errors;
        self.status = JobStatus::at_end(error.is_some(), self.processed, self.failed, errors);
    }

    /// Its reduce ended, having spilled so.
    pub fn spilled(&mut self, spills: crate::shuffle::SpillStats) {
        self.spills = spills;
    }

    /// A backup copy of one of its batches was sent.
    pub fn backup_sent(&mut self) {
        self.backups += 1;
    }

    /// A late answer for an already answered batch was dropped.
    pub fn duplicate(&mut self) {
        self.duplicates += 1;
    }

    /// Hands a batch's partial result to the reducer thread.
    fn fold(&mut self, value: Vec<u8>, tasks: u64) {
        if let Some(tx) = &self.partials {
            let size = value.len();
            if tx.send((value, tasks)).is_ok() {
                self.partials_outstanding += 1;
                self.partial_sizes.push_back(size);
                self.partial_bytes += size;
            }
        }
    }

    /// The reducer folded a partial.
    pub fn folded(&mut self) {
        self.partial_taken();
    }

    /// The reducer could not fold a partial of `tasks` tasks: they count
    /// as failed, not processed.
    pub fn fold_failed(&mut self, tasks: u64, message: &str) {
        self.partial_taken();
        self.reduce_errors += 1;
        decrement(&mut self.processed, tasks, "processed tasks");
        self.failed += tasks;
        self.record_error(format!("reduce: {message}"));
    }

    /// When every task is loaded and answered (`in_flight`: its batches in
    /// the ledger), closes the reducer's input so it finishes and calls
    /// `done`. Returns true the moment it does.
    pub fn finish_if_complete(&mut self, in_flight: usize) -> bool {
        let complete = self.status == JobStatus::Running
            && self.loader_done
            && self.staged.is_none()
            && self.retry.is_empty()
            && in_flight == 0;
        complete && self.partials.take().is_some()
    }

    /// The job's summary; `running` and `waiting` come from the manager,
    /// which knows the batches in flight and the workers.
    pub fn summary(&self, running: u64, waiting: bool) -> JobSummary {
        let elapsed = match (self.started, self.ended) {
            (Some(s), Some(e)) => e.duration_since(s),
            (Some(s), None) => s.elapsed(),
            _ => Default::default(),
        };
        JobSummary {
            id: self.id,
            name: self.name.clone(),
            status: self.status,
            estimate: self.estimate,
            loaded: self.loaded,
            processed: self.processed,
            failed: self.failed,
            retried: self.retried,
            running,
            elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            load_errors: self.load_errors,
            reduce_errors: self.reduce_errors,
            result_len: self.result_len,
            result_preview: self.result_preview.clone(),
            errors: self.errors.kept.iter().cloned().collect(),
            backups: self.backups,
            backups_won: self.backups_won,
            duplicates: self.duplicates,
            waiting_for_workers: waiting,
            spills: self.spills.spills,
            spilled_bytes: self.spills.bytes,
            shuffle: Box::new(self.shuffle.as_ref().map(Shuffle::view).unwrap_or_default()),
        }
    }
}
