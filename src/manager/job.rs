//! One job on the manager: its lifecycle, its counters, and the two threads
//! that run the job's own code on the manager's side.
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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use mio::Waker;

use super::sizing::{spread_cap, BatchSizer};
use crate::pipeline::{cap_error, cluster, BatchLimits, ErrorLog};
use crate::plugin::{Plugin, PluginHash};
use crate::proto::msg::{JobStatus, JobSummary, TaskList};

pub use crate::pipeline::cluster::{LoaderMsg, ReducerMsg};

/// Batches the loader may run ahead of dispatch.
const LOAD_AHEAD: usize = 4;
/// Errors a job keeps with their messages: its first 5 and its latest 5,
/// by the pipeline's one rule ([`ErrorLog`]). Fewer than the embedded run
/// keeps, since a summary is kept for each of the last
/// [`KEPT_ENDED_JOBS`] jobs and travels in every `jobs list`.
pub const KEPT_ERRORS: usize = 10;
/// Ended jobs whose summaries the manager keeps; older ones are forgotten.
pub const KEPT_ENDED_JOBS: usize = 1000;
/// Wire bytes of ended jobs' summaries the manager keeps, in all: with
/// [`crate::plugin::fold::MAX_ERROR_BYTES`] a summary is at most about 11 KiB, so this keeps
/// at least a few hundred jobs and bounds the manager whatever jobs say.
pub const KEPT_ENDED_BYTES: usize = 4 * 1024 * 1024;

/// Tasks waiting to be sent to a worker.
pub struct Pending {
    /// The batch's id once it has one: a batch sent again (after a lost or
    /// silent worker) keeps its id, so whichever copy answers first is
    /// applied and any later answer is recognised as a duplicate.
    pub batch: Option<u64>,
    pub tasks: TaskList,
    pub first_index: u64,
    /// How many times these tasks failed already.
    pub attempt: u32,
    /// Try another worker than this one first (the one it failed on).
    pub avoid: Option<usize>,
    /// Suspected of killing its worker: sent only to a worker with nothing
    /// else in flight.
    pub suspect: bool,
}

impl Pending {
    pub fn new(tasks: TaskList, first_index: u64) -> Pending {
        Pending {
            batch: None,
            tasks,
            first_index,
            attempt: 0,
            avoid: None,
            suspect: false,
        }
    }
}

pub struct Job {
    pub id: u64,
    pub name: String,
    pub hash: PluginHash,
    pub plugin: Arc<Plugin>,
    pub library: Arc<Vec<u8>>,
    pub status: JobStatus,
    pub started: Option<Instant>,
    pub ended: Option<Instant>,
    pub estimate: Option<u64>,
    pub loaded: u64,
    pub processed: u64,
    pub failed: u64,
    pub retried: u64,
    pub load_errors: u64,
    pub reduce_errors: u64,
    pub errors: ErrorLog<String>,
    pub result_len: u64,
    pub result_preview: Vec<u8>,
    /// Failed tasks to try again, before new ones.
    pub retry: VecDeque<Pending>,
    /// One batch taken from the loader, waiting for a worker.
    pub staged: Option<Pending>,
    /// Batches sent and not answered yet (the manager's ledger holds them).
    pub in_flight_batches: usize,
    /// Backup copies sent for stragglers, and how many answered first.
    pub backups: u64,
    pub backups_won: u64,
    /// Late answers for batches already applied, dropped.
    pub duplicates: u64,
    /// Seconds per task from sending a batch to its answer, a moving
    /// average: what a straggler is measured against.
    pub secs_per_task: f64,
    /// Sets the size of the next batches from the workers' map times.
    pub sizer: BatchSizer,
    /// Set on cancel: the reducer then skips `done`.
    pub cancelled: Arc<AtomicBool>,
    loader: Option<Receiver<LoaderMsg>>,
    loader_done: bool,
    partials: Option<Sender<(Vec<u8>, u64)>>,
    pub partials_outstanding: usize,
}

impl Job {
    pub fn new(id: u64, name: String, plugin: Arc<Plugin>, library: Arc<Vec<u8>>) -> Job {
        Job {
            id,
            name,
            hash: plugin.hash(),
            plugin,
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
            in_flight_batches: 0,
            backups: 0,
            backups_won: 0,
            duplicates: 0,
            secs_per_task: 0.0,
            sizer: BatchSizer::new(),
            cancelled: Arc::new(AtomicBool::new(false)),
            loader: None,
            loader_done: false,
            partials: None,
            partials_outstanding: 0,
        }
    }

    pub fn record_error(&mut self, message: String) {
        self.errors.push(cap_error(message));
    }

    /// Starts the loader and reducer threads. `spread` is the number of
    /// batches the cluster can work on at once, used to size batches so a
    /// small job still reaches every worker.
    pub fn start(
        &mut self,
        spread: usize,
        (max_batch_bytes, max_batch_tasks): (usize, usize),
        reducer_tx: Sender<ReducerMsg>,
        waker: Arc<Waker>,
    ) {
        self.status = JobStatus::Running;
        self.started = Some(Instant::now());
        let (load_tx, load_rx) = mpsc::sync_channel(LOAD_AHEAD);
        self.loader = Some(load_rx);
        let (plugin, w) = (Arc::clone(&self.plugin), Arc::clone(&waker));
        let target = self.sizer.shared();
        let limits = move |estimate| BatchLimits {
            tasks: target
                .load(Ordering::Relaxed)
                .min(spread_cap(estimate, spread))
                .min(max_batch_tasks.max(1)),
            bytes: max_batch_bytes,
        };
        thread::Builder::new()
            .name(format!("load-{}", self.id))
            .spawn(move || cluster::loader(&plugin, &load_tx, &w, limits))
            .expect("spawn loader thread");
        let (partial_tx, partial_rx) = mpsc::channel();
        self.partials = Some(partial_tx);
        let (plugin, id) = (Arc::clone(&self.plugin), self.id);
        let cancelled = Arc::clone(&self.cancelled);
        thread::Builder::new()
            .name(format!("reduce-{}", self.id))
            .spawn(move || {
                cluster::reducer(&plugin, id, partial_rx, &reducer_tx, &waker, &cancelled)
            })
            .expect("spawn reducer thread");
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
                Ok(LoaderMsg::End) | Err(TryRecvError::Disconnected) => {
                    self.loader_done = true;
                    self.loader = None;
                }
                Err(TryRecvError::Empty) => return,
            }
        }
    }

    /// The next tasks to send to worker `w`: retries first, then new
    /// tasks. With `elsewhere` (another worker could take them), a retry is
    /// not sent back to the worker it failed on; suspects go only to an
    /// `idle` worker.
    pub fn next_pending_for(&mut self, w: usize, elsewhere: bool, idle: bool) -> Option<Pending> {
        let pick = self
            .retry
            .iter()
            .position(|p| (!elsewhere || p.avoid != Some(w)) && (idle || !p.suspect));
        if let Some(i) = pick {
            return self.retry.remove(i);
        }
        let staged = self.staged.take();
        self.pump_loader();
        staged.or_else(|| self.staged.take())
    }

    /// True once every task is loaded and handed out: the tail of the job,
    /// when backup copies of slow batches pay off.
    pub fn in_tail(&self) -> bool {
        self.loader_done && self.staged.is_none() && self.retry.is_empty()
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

    pub fn has_work(&self) -> bool {
        !self.retry.is_empty() || self.staged.is_some()
    }

    /// Hands a batch's partial result to the reducer thread.
    pub fn fold(&mut self, value: Vec<u8>, tasks: u64) {
        if let Some(tx) = &self.partials {
            if tx.send((value, tasks)).is_ok() {
                self.partials_outstanding += 1;
            }
        }
    }

    /// When every task is loaded and answered, closes the reducer's input
    /// so it finishes and calls `done`. Returns true the moment it does.
    pub fn finish_if_complete(&mut self) -> bool {
        let complete = self.status == JobStatus::Running
            && self.loader_done
            && self.staged.is_none()
            && self.retry.is_empty()
            && self.in_flight_batches == 0;
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
        }
    }
}
