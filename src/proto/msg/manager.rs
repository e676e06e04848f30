//! The control API of a manager, used by the CLI.
//!
//! ```text
//! RUN_JOB (0x10):            hash[32] (library installed with INSTALL), str name
//! JOB_ACCEPTED (0x90):       u64 job id
//! JOB_STATS_REQUEST (0x11):  u64 job id
//! JOB_STATS (0x91):          a job summary (below)
//! JOBS_LIST_REQUEST (0x12):  empty, or u32 limit, u64 before (see JobsQuery)
//! JOBS_LIST (0x92):          u32 n, then n job summaries (newest first),
//!                            u64 more (kept jobs older than the last listed)
//! ATTACH (0x13):             str worker address, u8 force (appended in 0.2)
//! ATTACHED (0x93):           empty
//! DETACH (0x14):             str worker address
//! DETACHED (0x94):           empty
//! MANAGER_STATS_REQUEST (0x15): empty
//! MANAGER_STATS (0x95):      see ManagerStats
//! ```
//!
//! A job summary: u64 id, str name, u8 status (0 waiting, 1 running,
//! 2 finished, 3 failed, 4 cancelled, 5 finished with failures), u8 has-estimate, u64 estimate,
//! u64 loaded, u64 processed, u64 failed, u64 retried, u64 running,
//! u64 elapsed ms, u64 load errors, u64 reduce errors, u64 result length,
//! bytes result preview (at most 256 bytes), u32 n, then n str errors,
//! u64 backups, u64 backups won, u64 duplicates, u8 waiting for workers.

use super::args::JobArgs;
use super::shuffle::ShuffleView;
use super::wire::{put_bytes, put_str, put_u32, put_u64, Cursor};
use crate::proto::error::ProtoError;
use crate::proto::opcode::Opcode;

/// Longest result preview a summary carries.
pub const RESULT_PREVIEW: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunJob {
    pub hash: [u8; 32],
    pub name: String,
    /// The job's arguments (appended; absent: none).
    pub args: JobArgs,
    /// How a keyed job is shuffled and where its output goes (appended
    /// after the arguments; see [`RunOptions`]).
    pub options: RunOptions,
}

/// `RUN_JOB`'s fields after the arguments, for keyed jobs, each appended
/// in 0.4: `u32 reducers`, `u8 total order`, `str output dir`, `u8 output
/// form`. A sender writes them up to the last one that is not its
/// default (and the arguments before them), so a plain job's message is
/// as it was.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunOptions {
    /// Reduce partitions (0: one per worker when the job starts).
    pub reducers: u32,
    /// `--total-order`: a sampled range partitioner, so the partitions in
    /// order are the output sorted.
    pub total_order: bool,
    /// `--output-dir`: each reducer writes its partition to
    /// `DIR/part-NNNNN` itself (empty: the output stays on the workers).
    pub output_dir: String,
    /// The form those part files are written in: 0 binary, 1 text.
    pub output_form: u8,
}

impl RunOptions {
    /// Nothing to send: the defaults (the form matters only with a
    /// directory).
    fn is_default(&self) -> bool {
        self.reducers == 0 && !self.total_order && self.output_dir.is_empty()
    }

    fn decode(c: &mut Cursor<'_>) -> Result<RunOptions, ProtoError> {
        let mut o = RunOptions::default();
        if c.rest().is_empty() {
            return Ok(o);
        }
        o.reducers = c.u32("reducers")?;
        if c.rest().is_empty() {
            return Ok(o);
        }
        o.total_order = c.u8("total order")? != 0;
        if c.rest().is_empty() {
            return Ok(o);
        }
        o.output_dir = c.str("output dir")?;
        o.output_form = c.u8("output form")?;
        Ok(o)
    }

    fn encode(&self, out: &mut Vec<u8>) {
        put_u32(out, self.reducers);
        if self.total_order || !self.output_dir.is_empty() {
            out.push(u8::from(self.total_order));
        }
        if !self.output_dir.is_empty() {
            put_str(out, &self.output_dir);
            out.push(self.output_form);
        }
    }
}

impl RunJob {
    pub fn decode(payload: &[u8]) -> Result<RunJob, ProtoError> {
        let mut c = Cursor::new(Opcode::RunJob.as_u8(), payload);
        let hash = c.hash("hash")?;
        let name = c.str("name")?;
        let args = if c.rest().is_empty() {
            JobArgs::default()
        } else {
            JobArgs::decode(&mut c)?
        };
        let options = RunOptions::decode(&mut c)?;
        Ok(RunJob {
            hash,
            name,
            args,
            options,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.hash);
        put_str(out, &self.name);
        // No arguments travel as none: the message as it was before them
        // (unless a field after them follows).
        if !self.args.is_empty() || !self.options.is_default() {
            self.args.encode(out);
        }
        if !self.options.is_default() {
            self.options.encode(out);
        }
    }
}

/// Jobs a `JOBS_LIST` carries when the request names no limit.
pub const DEFAULT_LIST_LIMIT: u32 = 100;
/// Most jobs one `JOBS_LIST` carries, whatever the request asks.
pub const MAX_LIST_LIMIT: u32 = 1000;
/// Most payload bytes of summaries one `JOBS_LIST` carries: a reply stays
/// far below any sensible `--max-size` (a summary is at most about 11 KiB:
/// 128-character name, 256-byte preview, 10 errors of at most 1 KiB each).
pub const MAX_LIST_BYTES: usize = 1024 * 1024;

/// `JOBS_LIST_REQUEST`: which page of the kept jobs, newest first.
///
/// The payload is empty (the original form: the newest
/// [`DEFAULT_LIST_LIMIT`] jobs) or `u32 limit, u64 before`: at most `limit`
/// jobs (0 = the default; capped at [`MAX_LIST_LIMIT`]) whose id is below
/// `before` (0 = no bound). To page back, send the last listed id as
/// `before`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JobsQuery {
    pub limit: u32,
    pub before: u64,
}

impl JobsQuery {
    pub fn decode(payload: &[u8]) -> Result<JobsQuery, ProtoError> {
        if payload.is_empty() {
            return Ok(JobsQuery::default());
        }
        let mut c = Cursor::new(Opcode::JobsListRequest.as_u8(), payload);
        Ok(JobsQuery {
            limit: c.u32("limit")?,
            before: c.u64("before")?,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        put_u32(out, self.limit);
        put_u64(out, self.before);
    }

    /// The number of jobs to list: the default for 0, at most the maximum.
    pub fn effective_limit(&self) -> usize {
        match self.limit {
            0 => DEFAULT_LIST_LIMIT as usize,
            n => n.min(MAX_LIST_LIMIT) as usize,
        }
    }
}

/// `JOBS_LIST`: one page of job summaries, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JobsPage {
    pub jobs: Vec<JobSummary>,
    /// Kept jobs older than the last one listed that this page left out
    /// (by the limit or the byte cap); 0 when the list is complete.
    pub more: u64,
}

impl JobsPage {
    pub fn decode(payload: &[u8]) -> Result<JobsPage, ProtoError> {
        let mut c = Cursor::new(Opcode::JobsList.as_u8(), payload);
        let n = c.count(80, "job count")?;
        let mut jobs = (0..n)
            .map(|_| JobSummary::read(&mut c))
            .collect::<Result<Vec<_>, _>>()?;
        // Appended in 0.2; a reply from an older manager lists everything.
        let more = if c.rest().is_empty() {
            0
        } else {
            c.u64("more")?
        };
        // Appended in 0.3: each summary's spills, in the same order.
        if !c.rest().is_empty() {
            for j in &mut jobs {
                j.read_spills(&mut c)?;
            }
        }
        // Appended in 0.4: each summary's shuffle counts, in order.
        if !c.rest().is_empty() {
            for j in &mut jobs {
                j.shuffle.read_counts(&mut c)?;
            }
        }
        Ok(JobsPage { jobs, more })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        put_u32(out, self.jobs.len() as u32);
        for j in &self.jobs {
            j.write(out);
        }
        put_u64(out, self.more);
        for j in &self.jobs {
            j.write_spills(out);
        }
        for j in &self.jobs {
            j.shuffle.write_counts(out);
        }
    }
}

/// `ATTACH`: a worker to attach, whether to take it from another
/// manager that holds it (`manager attach --force`), and whether the
/// worker asks for itself (`worker start --join`; appended, optional).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachWorker {
    pub addr: String,
    pub force: bool,
    pub join: bool,
}

impl AttachWorker {
    pub fn decode(payload: &[u8]) -> Result<AttachWorker, ProtoError> {
        let mut c = Cursor::new(Opcode::Attach.as_u8(), payload);
        let addr = c.str("address")?;
        let force = !c.rest().is_empty() && c.u8("force")? != 0;
        let join = !c.rest().is_empty() && c.u8("join")? != 0;
        Ok(AttachWorker { addr, force, join })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        put_str(out, &self.addr);
        out.push(u8::from(self.force));
        if self.join {
            out.push(1);
        }
    }
}

/// Decodes a payload that is one u64 (a job id).
pub fn decode_id(opcode: Opcode, payload: &[u8]) -> Result<u64, ProtoError> {
    Cursor::new(opcode.as_u8(), payload).u64("job id")
}

/// Decodes a payload that is one str (a worker address).
pub fn decode_addr(opcode: Opcode, payload: &[u8]) -> Result<String, ProtoError> {
    Cursor::new(opcode.as_u8(), payload).str("address")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JobStatus {
    #[default]
    Waiting = 0,
    Running = 1,
    Finished = 2,
    Failed = 3,
    Cancelled = 4,
    /// `done` ran, but some tasks failed or `load` or `reduce` reported
    /// errors: the result is of the tasks that succeeded only.
    FinishedWithFailures = 5,
}

impl JobStatus {
    pub fn name(self) -> &'static str {
        match self {
            JobStatus::Waiting => "waiting",
            JobStatus::Running => "running",
            JobStatus::Finished => "finished",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
            JobStatus::FinishedWithFailures => "finished with failures",
        }
    }

    pub fn is_over(self) -> bool {
        matches!(
            self,
            JobStatus::Finished
                | JobStatus::Failed
                | JobStatus::Cancelled
                | JobStatus::FinishedWithFailures
        )
    }

    /// How a job that ran to its end ended, the one rule for the manager
    /// and the embedded run:
    /// - `Failed`: `done` failed, or the job had work and none of it
    ///   succeeded (every task failed, or `load` yielded only errors): its
    ///   result is empty for want of any success, not because it is;
    /// - `FinishedWithFailures`: `done` ran on a result that leaves out
    ///   failed tasks, or with load or reduce errors;
    /// - `Finished`: every task loaded, mapped and folded; `done` succeeded.
    ///
    /// (A job is also `Failed` when no attached worker can take its
    /// library; the manager decides that on its own.)
    pub fn at_end(done_failed: bool, processed: u64, failed: u64, errors: u64) -> JobStatus {
        if done_failed || (processed == 0 && failed + errors > 0) {
            JobStatus::Failed
        } else if failed + errors > 0 {
            JobStatus::FinishedWithFailures
        } else {
            JobStatus::Finished
        }
    }

    fn from_u8(b: u8) -> Result<JobStatus, ProtoError> {
        Ok(match b {
            0 => JobStatus::Waiting,
            1 => JobStatus::Running,
            2 => JobStatus::Finished,
            3 => JobStatus::Failed,
            4 => JobStatus::Cancelled,
            5 => JobStatus::FinishedWithFailures,
            _ => {
                return Err(ProtoError::Malformed {
                    opcode: Opcode::JobStats.as_u8(),
                    what: "status",
                })
            }
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JobSummary {
    pub id: u64,
    pub name: String,
    pub status: JobStatus,
    pub estimate: Option<u64>,
    pub loaded: u64,
    pub processed: u64,
    pub failed: u64,
    pub retried: u64,
    pub running: u64,
    pub elapsed_ms: u64,
    pub load_errors: u64,
    pub reduce_errors: u64,
    pub result_len: u64,
    pub result_preview: Vec<u8>,
    pub errors: Vec<String>,
    /// Appended in 0.1: backup copies sent for stragglers, and won.
    pub backups: u64,
    pub backups_won: u64,
    /// Late answers for batches already applied, dropped.
    pub duplicates: u64,
    /// The job has work but no worker to run it.
    pub waiting_for_workers: bool,
    /// Appended in 0.3: times a keyed job's reduce spilled to disk past
    /// its memory, and the bytes it wrote (absent: 0).
    pub spills: u64,
    pub spilled_bytes: u64,
    /// Appended in 0.4: a keyed job's shuffle (none: 0 partitions).
    /// Boxed: most summaries are of byte-level jobs, and a message is as
    /// large as its largest variant.
    pub shuffle: Box<ShuffleView>,
}

impl JobSummary {
    fn read(c: &mut Cursor<'_>) -> Result<JobSummary, ProtoError> {
        let id = c.u64("id")?;
        let name = c.str("name")?;
        let status = JobStatus::from_u8(c.u8("status")?)?;
        let has_estimate = c.u8("has estimate")? != 0;
        let estimate = c.u64("estimate")?;
        let mut s = JobSummary {
            id,
            name,
            status,
            estimate: has_estimate.then_some(estimate),
            loaded: c.u64("loaded")?,
            processed: c.u64("processed")?,
            failed: c.u64("failed")?,
            retried: c.u64("retried")?,
            running: c.u64("running")?,
            elapsed_ms: c.u64("elapsed ms")?,
            load_errors: c.u64("load errors")?,
            reduce_errors: c.u64("reduce errors")?,
            result_len: c.u64("result length")?,
            result_preview: {
                let preview = c.bytes("result preview")?;
                if preview.len() > RESULT_PREVIEW {
                    return Err(ProtoError::Malformed {
                        opcode: Opcode::JobStats.as_u8(),
                        what: "result preview longer than 256 bytes",
                    });
                }
                preview.to_vec()
            },
            errors: Vec::new(),
            backups: 0,
            backups_won: 0,
            duplicates: 0,
            waiting_for_workers: false,
            spills: 0,
            spilled_bytes: 0,
            shuffle: Box::default(),
        };
        let n = c.count(2, "error count")?;
        for _ in 0..n {
            s.errors.push(c.str("error")?);
        }
        s.backups = c.u64("backups")?;
        s.backups_won = c.u64("backups won")?;
        s.duplicates = c.u64("duplicates")?;
        s.waiting_for_workers = c.u8("waiting for workers")? != 0;
        Ok(s)
    }

    fn write(&self, out: &mut Vec<u8>) {
        put_u64(out, self.id);
        put_str(out, &self.name);
        out.push(self.status as u8);
        out.push(u8::from(self.estimate.is_some()));
        put_u64(out, self.estimate.unwrap_or(0));
        for v in [
            self.loaded,
            self.processed,
            self.failed,
            self.retried,
            self.running,
            self.elapsed_ms,
            self.load_errors,
            self.reduce_errors,
            self.result_len,
        ] {
            put_u64(out, v);
        }
        put_bytes(
            out,
            &self.result_preview[..self.result_preview.len().min(RESULT_PREVIEW)],
        );
        put_u32(out, self.errors.len() as u32);
        for e in &self.errors {
            put_str(out, e);
        }
        put_u64(out, self.backups);
        put_u64(out, self.backups_won);
        put_u64(out, self.duplicates);
        out.push(u8::from(self.waiting_for_workers));
    }

    /// The fields appended after a summary's others (0.3): in `JOB_STATS`
    /// at its end; in `JOBS_LIST` after `more`, one pair per summary, so a
    /// decoder that knows only the summaries still finds `more`.
    fn read_spills(&mut self, c: &mut Cursor<'_>) -> Result<(), ProtoError> {
        self.spills = c.u64("spills")?;
        self.spilled_bytes = c.u64("spilled bytes")?;
        Ok(())
    }

    fn write_spills(&self, out: &mut Vec<u8>) {
        put_u64(out, self.spills);
        put_u64(out, self.spilled_bytes);
    }

    pub fn decode(payload: &[u8]) -> Result<JobSummary, ProtoError> {
        let mut c = Cursor::new(Opcode::JobStats.as_u8(), payload);
        let mut s = JobSummary::read(&mut c)?;
        if !c.rest().is_empty() {
            s.read_spills(&mut c)?;
        }
        if !c.rest().is_empty() {
            s.shuffle.read_counts(&mut c)?;
            s.shuffle.read_parts(&mut c)?;
        }
        Ok(s)
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        self.write(out);
        self.write_spills(out);
        self.shuffle.write_counts(out);
        self.shuffle.write_parts(out);
    }

    /// Bytes this summary takes on the wire: what keeping it costs.
    pub fn encoded_len(&self) -> usize {
        // Fixed fields: id, status, estimate, 9 counters, backups (2),
        // duplicates, waiting, spills (2), and the length prefixes.
        const FIXED: usize = 8 + 1 + 1 + 8 + 9 * 8 + 3 * 8 + 1 + 2 * 8 + 2 + 4 + 4 + 24 + 4;
        FIXED
            + self
                .shuffle
                .parts
                .iter()
                .map(|p| 23 + p.worker.len())
                .sum::<usize>()
            + self.name.len()
            + self.result_preview.len().min(RESULT_PREVIEW)
            + self.errors.iter().map(|e| 2 + e.len()).sum::<usize>()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ManagerStats {
    pub address: String,
    pub workers_active: u32,
    pub workers_failing: u32,
    pub workers_terminated: u32,
    pub workers_total: u32,
    pub jobs_waiting: u32,
    pub jobs_running: u32,
    pub jobs_failed: u32,
    pub jobs_completed: u32,
    pub jobs_cancelled: u32,
    /// Tasks per second over the last few seconds, times 1000.
    pub tasks_per_sec_milli: u64,
    pub tasks_processed: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub uptime_ms: u64,
    /// Late answers dropped by the exactly-once rule, since the start.
    pub duplicates: u64,
    pub backups: u64,
    pub backups_won: u64,
}

impl ManagerStats {
    pub fn decode(payload: &[u8]) -> Result<ManagerStats, ProtoError> {
        let mut c = Cursor::new(Opcode::ManagerStats.as_u8(), payload);
        Ok(ManagerStats {
            address: c.str("address")?,
            workers_active: c.u32("workers active")?,
            workers_failing: c.u32("workers failing")?,
            workers_terminated: c.u32("workers terminated")?,
            workers_total: c.u32("workers total")?,
            jobs_waiting: c.u32("jobs waiting")?,
            jobs_running: c.u32("jobs running")?,
            jobs_failed: c.u32("jobs failed")?,
            jobs_completed: c.u32("jobs completed")?,
            jobs_cancelled: c.u32("jobs cancelled")?,
            tasks_per_sec_milli: c.u64("tasks per second")?,
            tasks_processed: c.u64("tasks processed")?,
            bytes_in: c.u64("bytes in")?,
            bytes_out: c.u64("bytes out")?,
            uptime_ms: c.u64("uptime ms")?,
            duplicates: c.u64("duplicates")?,
            backups: c.u64("backups")?,
            backups_won: c.u64("backups won")?,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        put_str(out, &self.address);
        for v in [
            self.workers_active,
            self.workers_failing,
            self.workers_terminated,
            self.workers_total,
            self.jobs_waiting,
            self.jobs_running,
            self.jobs_failed,
            self.jobs_completed,
            self.jobs_cancelled,
        ] {
            put_u32(out, v);
        }
        for v in [
            self.tasks_per_sec_milli,
            self.tasks_processed,
            self.bytes_in,
            self.bytes_out,
            self.uptime_ms,
            self.duplicates,
            self.backups,
            self.backups_won,
        ] {
            put_u64(out, v);
        }
    }
}
