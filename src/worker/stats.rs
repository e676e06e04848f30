//! The worker's counters, as reported by `INFO` and the `info` text command.

use std::time::Instant;

use crate::proto::msg::{Info, Role};
use crate::proto::PROTOCOL_VERSION;

#[derive(Debug)]
pub struct Stats {
    pub started: Instant,
    /// The address the worker listens on, as bound.
    pub address: String,
    pub active_jobs: u32,
    pub installed_jobs: u32,
    pub tasks_processed: u64,
    /// This worker's --max-size.
    pub max_size: u32,
}

impl Stats {
    pub fn new(address: String, max_size: u32) -> Stats {
        Stats {
            started: Instant::now(),
            address,
            active_jobs: 0,
            installed_jobs: 0,
            tasks_processed: 0,
            max_size,
        }
    }

    /// The worker's INFO, with `manager`, the one that holds it ("" none),
    /// and its executors' limit, how many run and how many died.
    pub fn info(
        &self,
        manager: &str,
        (memory_limit, executors, executor_deaths): (u64, u32, u64),
    ) -> Info {
        Info {
            version: crate::VERSION.to_owned(),
            address: self.address.clone(),
            protocol: PROTOCOL_VERSION,
            active_jobs: self.active_jobs,
            installed_jobs: self.installed_jobs,
            uptime_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            tasks_processed: self.tasks_processed,
            role: Role::Worker,
            server_id: crate::net::server_id(),
            max_size: self.max_size,
            manager: manager.to_owned(),
            memory_limit,
            executors,
            executor_deaths,
        }
    }
}
