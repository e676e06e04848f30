//! A whole frame: the checked unit the decoder yields, and writing one.
//!
//! This file sits between the header (bytes 0–15) and the messages (the
//! payload): it imports both, and neither imports it, so the modules of
//! `proto` form a chain with no cycle: `decoder` → `frame` → `header`,
//! `msg`. That is why `Message::decode`, which takes a [`Frame`], lives
//! here rather than in `msg`: `msg` deals in payloads only
//! ([`Message::decode_payload`], [`Message::encode_payload`]).

use super::error::ProtoError;
use super::header::Header;
use super::msg::Message;
use super::opcode::Opcode;
use super::HEADER_LEN;

/// One complete frame whose CRC has been checked; the opcode is still a raw
/// byte, since an unknown opcode is the message layer's error to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Header byte 3, not yet checked against the known opcodes.
    pub opcode: u8,
    /// Header bytes 4–7: chosen by the requester, echoed in the reply.
    pub request_id: u32,
    /// The payload bytes (the header's `length` of them).
    pub payload: Vec<u8>,
}

impl Message {
    /// Decodes the payload of a checked frame by its opcode.
    ///
    /// Errors: [`ProtoError::UnknownOpcode`] for an opcode this build does
    /// not know, or the payload's own decoding error (for example
    /// [`ProtoError::Malformed`]).
    pub fn decode(frame: &Frame) -> Result<Message, ProtoError> {
        Message::decode_payload(Opcode::try_from(frame.opcode)?, &frame.payload)
    }
}

/// Appends one whole frame carrying `msg` to `out`.
///
/// The payload is encoded in place after a placeholder header, which is then
/// filled in with the length and CRC: no intermediate buffer, so a batch of
/// frames costs one growing `Vec` and nothing else.
pub fn encode_frame(out: &mut Vec<u8>, request_id: u32, msg: &Message) {
    let start = out.len();
    out.resize(start + HEADER_LEN, 0);
    msg.encode_payload(out);
    let payload = &out[start + HEADER_LEN..];
    let header = Header {
        opcode: msg.opcode().as_u8(),
        request_id,
        length: u32::try_from(payload.len()).expect("payload over 4 GiB"),
        crc: crc32fast::hash(payload),
    };
    header.write(&mut out[start..start + HEADER_LEN]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_carries_its_header_then_its_payload() {
        let mut out = vec![0xEE];
        encode_frame(&mut out, 7, &Message::JobAccepted(3));
        assert_eq!(out[0], 0xEE, "appended, not overwritten");
        let header = Header::parse(&out[1..]).unwrap();
        assert_eq!(header.request_id, 7);
        assert_eq!(header.length, 8);
        assert_eq!(header.crc, crc32fast::hash(&out[1 + HEADER_LEN..]));
        let frame = Frame {
            opcode: header.opcode,
            request_id: header.request_id,
            payload: out[1 + HEADER_LEN..].to_vec(),
        };
        assert_eq!(Message::decode(&frame).unwrap(), Message::JobAccepted(3));
    }
}
