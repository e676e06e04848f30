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
//! ```

use super::wire::{put_str, put_u32, put_u64, Cursor};
use crate::proto::error::ProtoError;
use crate::proto::opcode::Opcode;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub version: String,
    pub address: String,
    pub protocol: u8,
    pub active_jobs: u32,
    pub installed_jobs: u32,
    pub uptime_ms: u64,
    pub tasks_processed: u64,
}

impl Info {
    pub fn decode(payload: &[u8]) -> Result<Info, ProtoError> {
        let mut c = Cursor::new(Opcode::Info.as_u8(), payload);
        Ok(Info {
            version: c.str("version")?,
            address: c.str("address")?,
            protocol: c.u8("protocol")?,
            active_jobs: c.u32("active jobs")?,
            installed_jobs: c.u32("installed jobs")?,
            uptime_ms: c.u64("uptime ms")?,
            tasks_processed: c.u64("tasks processed")?,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        put_str(out, &self.version);
        put_str(out, &self.address);
        out.push(self.protocol);
        put_u32(out, self.active_jobs);
        put_u32(out, self.installed_jobs);
        put_u64(out, self.uptime_ms);
        put_u64(out, self.tasks_processed);
    }
}
