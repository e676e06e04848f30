//! Protocol errors and their stable wire codes.
//!
//! [`ProtoError`] is what the codec and the servers produce; [`ErrorCode`] is
//! the number that travels in an `ERROR` frame. The table in [`ErrorCode::ALL`]
//! is the single source of those numbers: codes are never renumbered or reused,
//! and protocol.md lists every one (a test checks it).

use std::fmt;

/// A stable numeric error code carried by `ERROR` frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub u16);

/// One row of the error table: what the code means and what a client may do.
#[derive(Debug, Clone, Copy)]
pub struct ErrorInfo {
    pub code: ErrorCode,
    pub name: &'static str,
    /// The same request may succeed if sent again (later, or elsewhere).
    pub retriable: bool,
    /// The sender of this error closes the connection right after it.
    pub closes: bool,
    pub description: &'static str,
}

impl ErrorCode {
    pub const BAD_MAGIC: ErrorCode = ErrorCode(1);
    pub const UNSUPPORTED_VERSION: ErrorCode = ErrorCode(2);
    pub const FRAME_TOO_LARGE: ErrorCode = ErrorCode(3);
    pub const CRC_MISMATCH: ErrorCode = ErrorCode(4);
    pub const UNKNOWN_OPCODE: ErrorCode = ErrorCode(5);
    pub const MALFORMED_PAYLOAD: ErrorCode = ErrorCode(6);
    pub const UNEXPECTED_MESSAGE: ErrorCode = ErrorCode(7);
    pub const INTERNAL: ErrorCode = ErrorCode(8);
    pub const NOT_FOUND: ErrorCode = ErrorCode(9);
    pub const CONFLICT: ErrorCode = ErrorCode(10);
    pub const UNREACHABLE: ErrorCode = ErrorCode(11);
    pub const PLUGIN_REJECTED: ErrorCode = ErrorCode(12);
    pub const PLUGIN_MISSING: ErrorCode = ErrorCode(13);
    pub const SHUTTING_DOWN: ErrorCode = ErrorCode(14);
    pub const AUTH_FAILED: ErrorCode = ErrorCode(15);
    pub const BUSY: ErrorCode = ErrorCode(16);
    pub const WRONG_PEER: ErrorCode = ErrorCode(17);
    pub const EXECUTOR_DIED: ErrorCode = ErrorCode(18);

    /// Every defined code with its meaning, in numeric order.
    pub const ALL: &'static [ErrorInfo] = &[
        ErrorInfo {
            code: ErrorCode::BAD_MAGIC,
            name: "BAD_MAGIC",
            retriable: false,
            closes: true,
            description: "the frame does not start with the magic bytes A5 4D",
        },
        ErrorInfo {
            code: ErrorCode::UNSUPPORTED_VERSION,
            name: "UNSUPPORTED_VERSION",
            retriable: false,
            closes: true,
            description: "the header's version byte is not one the receiver speaks",
        },
        ErrorInfo {
            code: ErrorCode::FRAME_TOO_LARGE,
            name: "FRAME_TOO_LARGE",
            retriable: false,
            closes: true,
            description: "the declared payload length exceeds the receiver's max size",
        },
        ErrorInfo {
            code: ErrorCode::CRC_MISMATCH,
            name: "CRC_MISMATCH",
            retriable: true,
            closes: false,
            description: "the payload's CRC32 does not match the header",
        },
        ErrorInfo {
            code: ErrorCode::UNKNOWN_OPCODE,
            name: "UNKNOWN_OPCODE",
            retriable: false,
            closes: false,
            description: "the opcode byte names no message the receiver knows",
        },
        ErrorInfo {
            code: ErrorCode::MALFORMED_PAYLOAD,
            name: "MALFORMED_PAYLOAD",
            retriable: false,
            closes: false,
            description: "the payload does not follow its opcode's layout",
        },
        ErrorInfo {
            code: ErrorCode::UNEXPECTED_MESSAGE,
            name: "UNEXPECTED_MESSAGE",
            retriable: false,
            closes: false,
            description: "a valid message the receiver does not accept on this link",
        },
        ErrorInfo {
            code: ErrorCode::INTERNAL,
            name: "INTERNAL",
            retriable: true,
            closes: false,
            description: "the receiver failed for a reason of its own",
        },
        ErrorInfo {
            code: ErrorCode::NOT_FOUND,
            name: "NOT_FOUND",
            retriable: false,
            closes: false,
            description: "the job or worker named by the request does not exist",
        },
        ErrorInfo {
            code: ErrorCode::CONFLICT,
            name: "CONFLICT",
            retriable: false,
            closes: false,
            description: "the request contradicts the current state (e.g. already attached)",
        },
        ErrorInfo {
            code: ErrorCode::UNREACHABLE,
            name: "UNREACHABLE",
            retriable: true,
            closes: false,
            description: "a worker the request needs could not be reached",
        },
        ErrorInfo {
            code: ErrorCode::PLUGIN_REJECTED,
            name: "PLUGIN_REJECTED",
            retriable: false,
            closes: false,
            description: "a job library failed its hash check or could not be loaded",
        },
        ErrorInfo {
            code: ErrorCode::PLUGIN_MISSING,
            name: "PLUGIN_MISSING",
            retriable: true,
            closes: false,
            description: "the request names a job library that is not installed; install it first",
        },
        ErrorInfo {
            code: ErrorCode::SHUTTING_DOWN,
            name: "SHUTTING_DOWN",
            retriable: true,
            closes: false,
            description: "the server is shutting down and takes no new work; send it elsewhere",
        },
        ErrorInfo {
            code: ErrorCode::AUTH_FAILED,
            name: "AUTH_FAILED",
            retriable: false,
            closes: true,
            description: "authentication failed: a wrong or missing secret, or no handshake",
        },
        ErrorInfo {
            code: ErrorCode::BUSY,
            name: "BUSY",
            retriable: true,
            closes: false,
            description: "the connection, or the server as a whole, already has as many requests of this kind waiting as the server takes; send it later or elsewhere",
        },
        ErrorInfo {
            code: ErrorCode::WRONG_PEER,
            name: "WRONG_PEER",
            retriable: false,
            closes: false,
            description: "the address reached is not what the request needs: a manager, an HTTP port or another program given as a worker, or a worker that belongs to another manager",
        },
        ErrorInfo {
            code: ErrorCode::EXECUTOR_DIED,
            name: "EXECUTOR_DIED",
            retriable: true,
            closes: false,
            description: "the job's code killed the process that ran it (an abort, an exit, a crash, out of memory) while it ran this request; the server lives, and the message says how the process died",
        },
    ];

    /// The table row for this code, if it is one this build knows.
    pub fn info(self) -> Option<&'static ErrorInfo> {
        ErrorCode::ALL.iter().find(|row| row.code == self)
    }

    /// The code's name, or `UNKNOWN` for a code from a newer peer.
    pub fn name(self) -> &'static str {
        self.info().map_or("UNKNOWN", |row| row.name)
    }

    /// Whether the sender closes the connection after this error. Unknown
    /// codes are assumed to close, which is the safe reading.
    pub fn closes(self) -> bool {
        self.info().is_none_or(|row| row.closes)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.0)
    }
}

/// Everything that can be wrong with bytes received from a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtoError {
    BadMagic {
        found: [u8; 2],
    },
    UnsupportedVersion {
        found: u8,
    },
    FrameTooLarge {
        len: u32,
        max: u32,
    },
    CrcMismatch {
        expected: u32,
        actual: u32,
    },
    UnknownOpcode(u8),
    /// The payload does not follow the layout of `opcode`; `what` names the field.
    Malformed {
        opcode: u8,
        what: &'static str,
    },
    /// A well-formed message that this side does not accept here.
    Unexpected {
        opcode: u8,
    },
    Internal(String),
    /// A well-formed request refused by the application (no such job,
    /// already attached, …), with the code that says why.
    Refused {
        code: ErrorCode,
        message: String,
    },
}

impl ProtoError {
    /// The stable code this error travels as.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProtoError::BadMagic { .. } => ErrorCode::BAD_MAGIC,
            ProtoError::UnsupportedVersion { .. } => ErrorCode::UNSUPPORTED_VERSION,
            ProtoError::FrameTooLarge { .. } => ErrorCode::FRAME_TOO_LARGE,
            ProtoError::CrcMismatch { .. } => ErrorCode::CRC_MISMATCH,
            ProtoError::UnknownOpcode(_) => ErrorCode::UNKNOWN_OPCODE,
            ProtoError::Malformed { .. } => ErrorCode::MALFORMED_PAYLOAD,
            ProtoError::Unexpected { .. } => ErrorCode::UNEXPECTED_MESSAGE,
            ProtoError::Internal(_) => ErrorCode::INTERNAL,
            ProtoError::Refused { code, .. } => *code,
        }
    }

    /// Whether the connection cannot go on after this error (framing is lost
    /// or the peer is not speaking our protocol).
    pub fn is_fatal(&self) -> bool {
        self.code().closes()
    }
}

impl ProtoError {
    pub fn refused(code: ErrorCode, message: impl Into<String>) -> ProtoError {
        ProtoError::Refused {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtoError::BadMagic { found } => write!(
                f,
                "bad magic {:02X} {:02X} (expected A5 4D)",
                found[0], found[1]
            ),
            ProtoError::UnsupportedVersion { found } => write!(
                f,
                "unsupported protocol version {found} (this side speaks {})",
                super::PROTOCOL_VERSION
            ),
            ProtoError::FrameTooLarge { len, max } => write!(
                f,
                "frame of {len} bytes exceeds the max size of {max} bytes (--max-size)"
            ),
            ProtoError::CrcMismatch { expected, actual } => write!(
                f,
                "payload CRC32 mismatch: header says {expected:08X}, payload has {actual:08X}"
            ),
            ProtoError::UnknownOpcode(op) => write!(f, "unknown opcode 0x{op:02X}"),
            ProtoError::Malformed { opcode, what } => {
                write!(f, "malformed payload for opcode 0x{opcode:02X}: {what}")
            }
            ProtoError::Unexpected { opcode } => {
                write!(f, "message with opcode 0x{opcode:02X} is not accepted here")
            }
            ProtoError::Internal(msg) => write!(f, "internal error: {msg}"),
            ProtoError::Refused { message, .. } => f.write_str(message),
        }
    }
}

impl std::error::Error for ProtoError {}

/// A decoding failure together with the request id of the frame it concerns,
/// so the error reply can be matched by the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    pub request_id: u32,
    /// The header's opcode, when a header could be parsed: a receiver must
    /// not answer an ERROR frame, even a damaged one.
    pub opcode: Option<u8>,
    pub error: ProtoError,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request {}: {}", self.request_id, self.error)
    }
}

impl std::error::Error for FrameError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_ordered() {
        for pair in ErrorCode::ALL.windows(2) {
            assert!(pair[0].code.0 < pair[1].code.0, "{:?}", pair[1].name);
        }
    }

    #[test]
    fn framing_errors_close_and_frame_errors_do_not() {
        assert!(ProtoError::FrameTooLarge { len: 2, max: 1 }.is_fatal());
        assert!(ProtoError::BadMagic { found: [0, 0] }.is_fatal());
        assert!(!ProtoError::CrcMismatch {
            expected: 1,
            actual: 2
        }
        .is_fatal());
        assert!(!ProtoError::UnknownOpcode(9).is_fatal());
        assert!(ErrorCode(9999).closes());
    }
}
