//! The authentication handshake's messages (see `net::auth` for the proofs).
//!
//! ```text
//! HELLO (0x06):      nonce[32]             client's fresh nonce
//! CHALLENGE (0x86):  nonce[32] proof[32]   server's fresh nonce, server proof
//! AUTH (0x07):       proof[32]             client proof
//! AUTH_OK (0x87):    empty
//! ```

use super::wire::Cursor;
use crate::proto::error::ProtoError;
use crate::proto::opcode::Opcode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Challenge {
    pub nonce: [u8; 32],
    pub proof: [u8; 32],
}

impl Challenge {
    pub fn decode(payload: &[u8]) -> Result<Challenge, ProtoError> {
        let mut c = Cursor::new(Opcode::Challenge.as_u8(), payload);
        Ok(Challenge {
            nonce: c.hash("server nonce")?,
            proof: c.hash("server proof")?,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.proof);
    }
}

/// Decodes a payload that is one 32-byte field (HELLO's nonce, AUTH's proof).
pub fn decode_32(opcode: Opcode, payload: &[u8]) -> Result<[u8; 32], ProtoError> {
    Cursor::new(opcode.as_u8(), payload).hash("32-byte field")
}
