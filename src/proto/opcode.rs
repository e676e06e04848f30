//! The opcode byte: which message a frame carries.
//!
//! Requests use `0x01..=0x7F`; the reply to a request carries the request's
//! opcode with the high bit set. `0xFF` is the error reply to any request.
//! Numbers are never reused or renumbered: new messages take new numbers.

use super::error::ProtoError;

/// Every opcode this build knows. Unknown bytes decode to
/// [`ProtoError::UnknownOpcode`], which the receiver answers with an error frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Opcode {
    /// Health check; answered by `Pong`.
    Ping = 0x01,
    /// Ask a server for its info; answered by `Info`.
    InfoRequest = 0x02,
    /// Reply to `Ping`.
    Pong = 0x81,
    /// Reply to `InfoRequest`.
    Info = 0x82,
    /// Error reply to any request (or unsolicited, before a close).
    Error = 0xFF,
}

impl Opcode {
    /// All opcodes, in numeric order; `tests/protocol_doc.rs` checks that
    /// protocol.md documents each one.
    pub const ALL: &'static [Opcode] = &[
        Opcode::Ping,
        Opcode::InfoRequest,
        Opcode::Pong,
        Opcode::Info,
        Opcode::Error,
    ];

    /// The name used in protocol.md and in logs.
    pub fn name(self) -> &'static str {
        match self {
            Opcode::Ping => "PING",
            Opcode::InfoRequest => "INFO_REQUEST",
            Opcode::Pong => "PONG",
            Opcode::Info => "INFO",
            Opcode::Error => "ERROR",
        }
    }

    /// The byte on the wire.
    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

impl TryFrom<u8> for Opcode {
    type Error = ProtoError;

    fn try_from(byte: u8) -> Result<Self, ProtoError> {
        Opcode::ALL
            .iter()
            .copied()
            .find(|op| op.as_u8() == byte)
            .ok_or(ProtoError::UnknownOpcode(byte))
    }
}

impl std::fmt::Display for Opcode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}(0x{:02X})", self.name(), self.as_u8())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_opcode_round_trips_through_its_byte() {
        for &op in Opcode::ALL {
            assert_eq!(Opcode::try_from(op.as_u8()).unwrap(), op);
        }
    }

    #[test]
    fn unknown_bytes_are_typed_errors() {
        assert_eq!(Opcode::try_from(0x42), Err(ProtoError::UnknownOpcode(0x42)));
    }
}
