//! The read-only requests: INFO, JOB_STATS, JOBS_LIST and MANAGER_STATS.
//! Their answers are built by the monitor (`monitor.rs`), which every
//! view of the manager shares.

use crate::manager::handler::{refused, Manager};
use crate::proto::msg::{JobsPage, JobsQuery};
use crate::proto::{ErrorCode, Message};

impl Manager {
    /// One job's summary, live or ended.
    pub(super) fn job_stats(&self, id: u64) -> Message {
        match (self.jobs.get(id), self.jobs.ended(id)) {
            (Some(job), _) => Message::JobStats(self.summary(job)),
            (None, Some(summary)) => Message::JobStats(summary.clone()),
            (None, None) => refused(ErrorCode::NOT_FOUND, format!("no job with id {id}")),
        }
    }

    /// `query`'s page of jobs, newest first.
    pub(in crate::manager) fn jobs_page(&self, query: JobsQuery) -> JobsPage {
        self.jobs.page(query, |job| self.summary(job))
    }
}
