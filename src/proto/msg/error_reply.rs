//! `ERROR` (0xFF): the reply to a request that failed, carrying the request's id.
//!
//! ```text
//! ERROR payload:
//!   u16  code     a stable code from the error table (protocol.md, "Error codes")
//!   str  message  one line for humans; never parse it, branch on the code
//! ```

use super::wire::{put_str, put_u16, Cursor};
use crate::proto::error::{ErrorCode, ProtoError};
use crate::proto::opcode::Opcode;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply {
    pub code: ErrorCode,
    pub message: String,
}

impl ErrorReply {
    pub fn decode(payload: &[u8]) -> Result<ErrorReply, ProtoError> {
        let mut c = Cursor::new(Opcode::Error.as_u8(), payload);
        Ok(ErrorReply {
            code: ErrorCode(c.u16("code")?),
            message: c.str("message")?,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        put_u16(out, self.code.0);
        put_str(out, &self.message);
    }
}

impl From<&ProtoError> for ErrorReply {
    fn from(err: &ProtoError) -> ErrorReply {
        ErrorReply {
            code: err.code(),
            message: err.to_string(),
        }
    }
}

impl std::fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.name(), self.message)
    }
}
