//! The worker's counters, as reported by `INFO` and the `info` text command.

use std::time::Instant;

use crate::proto::msg::Info;
use crate::proto::PROTOCOL_VERSION;

#[derive(Debug)]
pub struct Stats {
    pub started: Instant,
    /// The address the worker listens on, as bound.
    pub address: String,
    pub active_jobs: u32,
    pub installed_jobs: u32,
    pub tasks_processed: u64,
}

impl Stats {
    pub fn new(address: String) -> Stats {
        Stats {
            started: Instant::now(),
            address,
            active_jobs: 0,
            installed_jobs: 0,
            tasks_processed: 0,
        }
    }

    pub fn info(&self) -> Info {
        Info {
            version: crate::VERSION.to_owned(),
            address: self.address.clone(),
            protocol: PROTOCOL_VERSION,
            active_jobs: self.active_jobs,
            installed_jobs: self.installed_jobs,
            uptime_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            tasks_processed: self.tasks_processed,
        }
    }
}
