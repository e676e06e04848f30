//! Shipping job libraries: `INSTALL` (0x03) / `INSTALL_REPLY` (0x83) and
//! `UNINSTALL` (0x04) / `UNINSTALLED` (0x84). The CLI installs a job's
//! library on the manager, and the manager on each worker, the same way.
//!
//! A library larger than one frame travels as consecutive chunks, each an
//! `INSTALL` request answered before the next is sent. The receiver checks
//! the whole library against its SHA-256 before using it; if it already has
//! that hash, it answers the first chunk with `complete` and the sender stops.
//!
//! ```text
//! INSTALL payload:
//!   hash[32]  SHA-256 of the whole library
//!   u64       total size in bytes
//!   u64       offset of this chunk
//!   bytes     chunk
//! INSTALL_REPLY payload:
//!   u8        1 = the library is installed (nothing more to send), 0 = send more
//!   u64       the offset the receiver expects next
//! UNINSTALL payload:
//!   hash[32]
//! UNINSTALLED payload: empty
//! ```

use super::wire::{put_bytes, put_u64, Cursor};
use crate::proto::error::ProtoError;
use crate::proto::opcode::Opcode;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Install {
    pub hash: [u8; 32],
    pub total: u64,
    pub offset: u64,
    pub chunk: Vec<u8>,
}

impl Install {
    pub fn decode(payload: &[u8]) -> Result<Install, ProtoError> {
        let mut c = Cursor::new(Opcode::Install.as_u8(), payload);
        Ok(Install {
            hash: c.hash("hash")?,
            total: c.u64("total")?,
            offset: c.u64("offset")?,
            chunk: c.bytes("chunk")?.to_vec(),
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.hash);
        put_u64(out, self.total);
        put_u64(out, self.offset);
        put_bytes(out, &self.chunk);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstallReply {
    pub complete: bool,
    pub next_offset: u64,
}

impl InstallReply {
    pub fn decode(payload: &[u8]) -> Result<InstallReply, ProtoError> {
        let mut c = Cursor::new(Opcode::InstallReply.as_u8(), payload);
        Ok(InstallReply {
            complete: c.u8("complete")? != 0,
            next_offset: c.u64("next offset")?,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(u8::from(self.complete));
        put_u64(out, self.next_offset);
    }
}

/// Decodes a payload that is just a hash (`UNINSTALL`).
pub fn decode_hash(opcode: Opcode, payload: &[u8]) -> Result<[u8; 32], ProtoError> {
    Cursor::new(opcode.as_u8(), payload).hash("hash")
}
