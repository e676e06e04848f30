//! The manager's jobs: the live ones (waiting or running) and the summaries
//! of ended ones, with the bounds that keep a manager running for months
//! from growing with each job it ran.

use std::collections::BTreeMap;

use super::invariant::decrement;
use super::job::Job;
use crate::proto::msg::manager::MAX_LIST_BYTES;
use crate::proto::msg::{JobStatus, JobSummary, JobsPage, JobsQuery};

/// Ended jobs whose summaries the manager keeps; older ones are forgotten.
pub const KEPT_ENDED_JOBS: usize = 1000;
/// Wire bytes of ended jobs' summaries the manager keeps, in all: with
/// [`crate::pipeline::MAX_ERROR_BYTES`] a summary is at most about 11
/// KiB, so this keeps at least a few hundred jobs and bounds the manager
/// whatever jobs say.
pub const KEPT_ENDED_BYTES: usize = 4 * 1024 * 1024;
/// Jobs waiting for a turn (over `--max-jobs` running) at most; more are
/// refused with BUSY. Each holds its library's bytes until it runs, and a
/// queue no one can see the end of helps no one.
pub const MAX_WAITING_JOBS: usize = 1000;

#[derive(Default)]
pub struct Jobs {
    next_id: u64,
    live: BTreeMap<u64, Job>,
    ended: BTreeMap<u64, JobSummary>,
    ended_bytes: usize,
    /// Kept ended jobs by status (indexed by the status's wire value).
    ended_by_status: [u32; 8],
    /// Failed and retried tasks of every ended job since the start, kept
    /// or forgotten: the metrics' counters never go down.
    ended_failed: u64,
    ended_retried: u64,
}

impl Jobs {
    pub fn new() -> Jobs {
        Jobs {
            next_id: 1,
            ..Jobs::default()
        }
    }

    /// The id the next job gets.
    pub fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    pub fn insert(&mut self, job: Job) {
        self.live.insert(job.id(), job);
    }

    pub fn get(&self, id: u64) -> Option<&Job> {
        self.live.get(&id)
    }

    pub fn get_mut(&mut self, id: u64) -> Option<&mut Job> {
        self.live.get_mut(&id)
    }

    pub fn ended(&self, id: u64) -> Option<&JobSummary> {
        self.ended.get(&id)
    }

    /// Live jobs, oldest first.
    pub fn live(&self) -> impl Iterator<Item = &Job> {
        self.live.values()
    }

    pub fn live_mut(&mut self) -> impl Iterator<Item = &mut Job> {
        self.live.values_mut()
    }

    /// Ids of the running jobs, oldest first.
    pub fn running(&self) -> Vec<u64> {
        self.live()
            .filter(|j| j.is_running())
            .map(Job::id)
            .collect()
    }

    /// Ids of the jobs waiting for a turn, oldest first.
    pub fn waiting(&self) -> Vec<u64> {
        self.live()
            .filter(|j| j.status() == JobStatus::Waiting)
            .map(Job::id)
            .collect()
    }

    /// Counts a late duplicate answer for an ended job (a cancelled job's
    /// answers are simply late); true if it was counted.
    pub fn ended_duplicate(&mut self, id: u64) -> bool {
        match self.ended.get_mut(&id) {
            Some(s) if s.status != JobStatus::Cancelled => {
                s.duplicates += 1;
                true
            }
            _ => false,
        }
    }

    /// Turns an ended job into its summary: the job (its library, its
    /// threads' channels) is dropped. At most KEPT_ENDED_JOBS summaries and
    /// KEPT_ENDED_BYTES are kept, the oldest forgotten first. Returns the job.
    pub fn keep_ended(&mut self, id: u64) -> Option<Job> {
        let job = self.live.remove(&id)?;
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
            decrement(
                &mut self.ended_bytes,
                old.encoded_len(),
                "kept summary bytes",
            );
            let n = &mut self.ended_by_status[old.status as usize];
            decrement(n, 1, "kept jobs of a status");
        }
        Some(job)
    }

    /// Kept ended jobs with `status`.
    pub fn ended_with(&self, status: JobStatus) -> u32 {
        self.ended_by_status[status as usize]
    }

    /// Failed and retried tasks of every job since the start.
    pub fn totals(&self) -> (u64, u64) {
        let failed = self.live().map(Job::failed).sum::<u64>();
        let retried = self.live().map(Job::retried).sum::<u64>();
        (self.ended_failed + failed, self.ended_retried + retried)
    }

    /// The newest `n` ended jobs' summaries, newest first.
    pub fn newest_ended(&self, n: usize) -> impl Iterator<Item = &JobSummary> {
        self.ended.values().rev().take(n)
    }

    /// The summaries of jobs, newest first, `query`'s page of them: at most
    /// its limit, and at most MAX_LIST_BYTES of summaries (at least one). A
    /// live job's summary is `summary`'s.
    pub fn page(&self, query: JobsQuery, summary: impl Fn(&Job) -> JobSummary) -> JobsPage {
        let bound = match query.before {
            0 => u64::MAX,
            b => b,
        };
        let mut live = self.live.range(..bound).rev().peekable();
        let mut ended = self.ended.range(..bound).rev().peekable();
        let total = self.live.range(..bound).count() + self.ended.range(..bound).count();
        let (limit, mut bytes) = (query.effective_limit(), 0);
        let mut page = JobsPage::default();
        while page.jobs.len() < limit {
            let newer_live = match (live.peek(), ended.peek()) {
                (Some((a, _)), Some((b, _))) => a > b,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let next = if newer_live {
                live.next().map(|(_, job)| summary(job))
            } else {
                ended.next().map(|(_, s)| s.clone())
            };
            let Some(next) = next else { break };
            bytes += next.encoded_len();
            if bytes > MAX_LIST_BYTES && !page.jobs.is_empty() {
                break;
            }
            page.jobs.push(next);
        }
        page.more = (total - page.jobs.len()) as u64;
        page
    }
}
