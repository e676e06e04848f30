//! `CLAIM` (0x08) and its reply `CLAIMED` (0x88): a manager makes a worker
//! its own, on every connection it opens to it.
//!
//! ```text
//! CLAIM payload:
//!   str  manager     the manager's address, as it calls itself
//!   u64  manager id  random, fixed for the manager process's life
//!   u8   force       1: take the worker even from another manager
//! CLAIMED payload:
//!   u64  worker id   random, fixed for the worker process's life
//!   u32  max size    the largest payload the worker accepts
//! ```
//!
//! A worker belongs to one manager at a time (the original's rule). A
//! claim by another manager while the first still holds a connection, or
//! within the worker's grace period after its last one closed, is refused
//! with `WRONG_PEER` naming the first manager, unless forced.

use super::wire::{put_str, put_u32, put_u64, Cursor};
use crate::proto::error::ProtoError;
use crate::proto::opcode::Opcode;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub manager: String,
    pub manager_id: u64,
    pub force: bool,
}

impl Claim {
    pub fn decode(payload: &[u8]) -> Result<Claim, ProtoError> {
        let mut c = Cursor::new(Opcode::Claim.as_u8(), payload);
        Ok(Claim {
            manager: c.str("manager")?,
            manager_id: c.u64("manager id")?,
            force: c.u8("force")? != 0,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        put_str(out, &self.manager);
        put_u64(out, self.manager_id);
        out.push(u8::from(self.force));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claimed {
    pub worker_id: u64,
    pub max_size: u32,
}

impl Claimed {
    pub fn decode(payload: &[u8]) -> Result<Claimed, ProtoError> {
        let mut c = Cursor::new(Opcode::Claimed.as_u8(), payload);
        Ok(Claimed {
            worker_id: c.u64("worker id")?,
            max_size: c.u32("max size")?,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.worker_id);
        put_u32(out, self.max_size);
    }
}
