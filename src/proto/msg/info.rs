//! `INFO_REQUEST` (0x02) and its reply `INFO` (0x82): what a server is and
//! what it has done.
//!
//! ```text
//! INFO_REQUEST payload: empty
//! INFO payload:
//!   str  version          redmap version of the server, e.g. "0.1.0"
//!   str  address          the address the server listens on
//!   u8   protocol         protocol version it speaks
//!   u32  active jobs      jobs with work in progress
//!   u32  installed jobs   job plugins installed
//!   u64  uptime ms        milliseconds since the server started
//!   u64  tasks processed  tasks mapped since start
//!   (appended in 0.2; absent from older servers)
//!   u8   role             1 worker, 2 manager (0 unknown)
//!   u64  server id        random, fixed for the process's life
//!   u32  max size         the largest payload the server accepts
//!   str  manager          a worker: the manager that claimed it ("" none)
//!   (appended in 0.3; absent from older servers)
//!   u64  memory limit     bytes each of its executor processes may allocate
//!   u32  executors        executor processes running now
//!   u64  executor deaths  executors that died running job code
//! ```

use super::wire::{put_str, put_u32, put_u64, Cursor};
use crate::proto::error::ProtoError;
use crate::proto::opcode::Opcode;

/// What kind of server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// An older server, which does not say.
    #[default]
    Unknown = 0,
    Worker = 1,
    Manager = 2,
}

impl Role {
    fn from_u8(b: u8) -> Role {
        match b {
            1 => Role::Worker,
            2 => Role::Manager,
            _ => Role::Unknown,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Unknown => "unknown",
            Role::Worker => "worker",
            Role::Manager => "manager",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub version: String,
    pub address: String,
    pub protocol: u8,
    pub active_jobs: u32,
    pub installed_jobs: u32,
    pub uptime_ms: u64,
    pub tasks_processed: u64,
    pub role: Role,
    /// Random at start, the same on every address the process listens
    /// on: how a manager tells one worker reached two ways (0: not given).
    pub server_id: u64,
    /// The largest payload this server accepts (its `--max-size`); 0 when
    /// not given (an older server: assume the default).
    pub max_size: u32,
    /// A worker's manager, as that manager calls itself ("" for none).
    pub manager: String,
    /// Bytes each of the server's executor processes may allocate (its
    /// `--memory-limit`); 0: not given (an older server).
    pub memory_limit: u64,
    /// Executor processes running now.
    pub executors: u32,
    /// Executor processes that died running job code since the start.
    pub executor_deaths: u64,
}

impl Info {
    pub fn decode(payload: &[u8]) -> Result<Info, ProtoError> {
        let mut c = Cursor::new(Opcode::Info.as_u8(), payload);
        let mut info = Info {
            version: c.str("version")?,
            address: c.str("address")?,
            protocol: c.u8("protocol")?,
            active_jobs: c.u32("active jobs")?,
            installed_jobs: c.u32("installed jobs")?,
            uptime_ms: c.u64("uptime ms")?,
            tasks_processed: c.u64("tasks processed")?,
            role: Role::Unknown,
            server_id: 0,
            max_size: 0,
            manager: String::new(),
            memory_limit: 0,
            executors: 0,
            executor_deaths: 0,
        };
        if !c.rest().is_empty() {
            info.role = Role::from_u8(c.u8("role")?);
            info.server_id = c.u64("server id")?;
            info.max_size = c.u32("max size")?;
            info.manager = c.str("manager")?;
        }
        if !c.rest().is_empty() {
            info.memory_limit = c.u64("memory limit")?;
            info.executors = c.u32("executors")?;
            info.executor_deaths = c.u64("executor deaths")?;
        }
        Ok(info)
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        put_str(out, &self.version);
        put_str(out, &self.address);
        out.push(self.protocol);
        put_u32(out, self.active_jobs);
        put_u32(out, self.installed_jobs);
        put_u64(out, self.uptime_ms);
        put_u64(out, self.tasks_processed);
        out.push(self.role as u8);
        put_u64(out, self.server_id);
        put_u32(out, self.max_size);
        put_str(out, &self.manager);
        put_u64(out, self.memory_limit);
        put_u32(out, self.executors);
        put_u64(out, self.executor_deaths);
    }
}
