//! A job's output, fetched from the manager in chunks: `OUTPUT_REQUEST`
//! (0x17) from a client, answered by `OUTPUT` (0x97).
//!
//! ```text
//! OUTPUT_REQUEST payload:
//!   u64  job id
//!   u8   form: 0 binary (the job's bytes), 1 text (key<TAB>value lines)
//!   u64  offset: where the chunk starts
//!   u32  most bytes the chunk may hold (0: as many as fit a frame)
//! OUTPUT payload:
//!   u64    the output's total size in bytes, in this form
//!   u64    offset of this chunk (the request's, capped at the total)
//!   bytes  the chunk
//! ```
//!
//! A client asks for offset 0, then for each next offset, until it has
//! `total` bytes: the output may be larger than any one frame.

use super::wire::{put_bytes, put_u32, put_u64, Cursor};
use crate::proto::error::ProtoError;
use crate::proto::opcode::Opcode;

/// `OUTPUT_REQUEST`'s form byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputForm {
    /// The job's bytes: a byte-level job's final accumulator, a keyed
    /// job's output run.
    Binary = 0,
    /// One `key<TAB>value` line per key (a byte-level job's bytes as they
    /// are).
    Text = 1,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputRequest {
    pub job: u64,
    pub form: OutputForm,
    pub offset: u64,
    /// Most bytes the chunk may hold; 0: as many as fit a frame.
    pub max: u32,
}

impl OutputRequest {
    pub fn decode(payload: &[u8]) -> Result<OutputRequest, ProtoError> {
        let mut c = Cursor::new(Opcode::OutputRequest.as_u8(), payload);
        let job = c.u64("job id")?;
        let form = match c.u8("form")? {
            0 => OutputForm::Binary,
            1 => OutputForm::Text,
            _ => return Err(c.malformed("form: 0 (binary) or 1 (text)")),
        };
        Ok(OutputRequest {
            job,
            form,
            offset: c.u64("offset")?,
            max: c.u32("max")?,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.job);
        out.push(self.form as u8);
        put_u64(out, self.offset);
        put_u32(out, self.max);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputChunk {
    /// The output's whole size in the form asked for.
    pub total: u64,
    pub offset: u64,
    pub chunk: Vec<u8>,
}

impl OutputChunk {
    pub fn decode(payload: &[u8]) -> Result<OutputChunk, ProtoError> {
        OutputChunk::decode_as(Opcode::Output, payload)
    }

    /// Decodes the layout as the payload of `opcode` (`OUTPUT`, or
    /// `FETCHED`, which shares it).
    pub fn decode_as(opcode: Opcode, payload: &[u8]) -> Result<OutputChunk, ProtoError> {
        let mut c = Cursor::new(opcode.as_u8(), payload);
        let total = c.u64("total")?;
        let offset = c.u64("offset")?;
        let chunk = c.bytes("chunk")?.to_vec();
        if offset.saturating_add(chunk.len() as u64) > total {
            return Err(c.malformed("chunk: past the total"));
        }
        Ok(OutputChunk {
            total,
            offset,
            chunk,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.total);
        put_u64(out, self.offset);
        put_bytes(out, &self.chunk);
    }
}
