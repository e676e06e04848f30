//! Typed messages: one enum over every opcode, with encode and decode
//! dispatch. Each message family's payload layout lives in its own file.
//!
//! Compatibility rule: a decoder ignores bytes after the last field it knows,
//! so a later minor revision may append fields to a payload without a new
//! opcode. Fields are never removed, reordered or resized.

pub mod error_reply;
pub mod info;
pub mod wire;

pub use error_reply::ErrorReply;
pub use info::Info;

use super::decoder::Frame;
use super::error::ProtoError;
use super::opcode::Opcode;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// `PING` (0x01), empty payload.
    Ping,
    /// `INFO_REQUEST` (0x02), empty payload.
    InfoRequest,
    /// `PONG` (0x81), empty payload.
    Pong,
    /// `INFO` (0x82).
    Info(Info),
    /// `ERROR` (0xFF).
    Error(ErrorReply),
}

impl Message {
    pub fn opcode(&self) -> Opcode {
        match self {
            Message::Ping => Opcode::Ping,
            Message::InfoRequest => Opcode::InfoRequest,
            Message::Pong => Opcode::Pong,
            Message::Info(_) => Opcode::Info,
            Message::Error(_) => Opcode::Error,
        }
    }

    /// The error reply for `err`.
    pub fn error(err: &ProtoError) -> Message {
        Message::Error(ErrorReply::from(err))
    }

    /// Decodes the payload of a checked frame by its opcode.
    pub fn decode(frame: &Frame) -> Result<Message, ProtoError> {
        Message::decode_payload(Opcode::try_from(frame.opcode)?, &frame.payload)
    }

    pub fn decode_payload(opcode: Opcode, payload: &[u8]) -> Result<Message, ProtoError> {
        Ok(match opcode {
            Opcode::Ping => Message::Ping,
            Opcode::InfoRequest => Message::InfoRequest,
            Opcode::Pong => Message::Pong,
            Opcode::Info => Message::Info(Info::decode(payload)?),
            Opcode::Error => Message::Error(ErrorReply::decode(payload)?),
        })
    }

    /// Appends this message's payload (not the header) to `out`.
    pub fn encode_payload(&self, out: &mut Vec<u8>) {
        match self {
            Message::Ping | Message::InfoRequest | Message::Pong => {}
            Message::Info(info) => info.encode(out),
            Message::Error(err) => err.encode(out),
        }
    }
}
