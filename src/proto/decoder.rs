//! Incremental frame decoding.
//!
//! The decoder is a two-state machine over a [`ReadBuf`]: waiting for a
//! header, then waiting for the payload that header announced. It never
//! consumes a partial frame, so bytes may arrive split at any offset. The
//! declared length is compared with the max size the moment the header is
//! complete, before a single payload byte is buffered: an oversized frame
//! costs the sender its connection and the receiver nothing.

use super::buf::ReadBuf;
use super::error::{FrameError, ProtoError};
use super::frame::Frame;
use super::header::Header;
use super::HEADER_LEN;

#[derive(Debug, Clone, Copy)]
enum State {
    /// Fewer than [`HEADER_LEN`] bytes of the next frame are known.
    Header,
    /// The header is parsed and within limits; waiting for its payload.
    Payload(Header),
}

#[derive(Debug)]
pub struct Decoder {
    max_size: u32,
    state: State,
}

impl Decoder {
    pub fn new(max_size: u32) -> Decoder {
        Decoder {
            max_size,
            state: State::Header,
        }
    }

    pub fn max_size(&self) -> u32 {
        self.max_size
    }

    /// Changes the limit for frames whose header is not read yet.
    pub fn set_max_size(&mut self, max_size: u32) {
        self.max_size = max_size;
    }

    /// Takes the next complete frame out of `buf`.
    ///
    /// - `Ok(None)`: more bytes are needed; nothing was consumed.
    /// - `Ok(Some(frame))`: a frame, consumed from `buf`.
    /// - `Err(e)` with `e.error.is_fatal()`: framing is lost; close the connection.
    /// - `Err(e)` otherwise (CRC mismatch): that frame was consumed and
    ///   dropped; decoding can go on with the next one.
    pub fn decode(&mut self, buf: &mut ReadBuf) -> Result<Option<Frame>, FrameError> {
        loop {
            match self.state {
                State::Header => {
                    if buf.len() < HEADER_LEN {
                        // A bad magic is visible from the first two bytes: say so
                        // at once rather than waiting for a header that may never come.
                        let bytes = buf.bytes();
                        if bytes.len() >= 2 && bytes[0..2] != super::MAGIC {
                            return Err(FrameError {
                                request_id: 0,
                                opcode: None,
                                error: ProtoError::BadMagic {
                                    found: [bytes[0], bytes[1]],
                                },
                            });
                        }
                        return Ok(None);
                    }
                    let bytes = buf.bytes();
                    let header = Header::parse(bytes).map_err(|error| FrameError {
                        request_id: 0,
                        opcode: None,
                        error,
                    })?;
                    if header.length > self.max_size {
                        return Err(FrameError {
                            request_id: header.request_id,
                            opcode: Some(header.opcode),
                            error: ProtoError::FrameTooLarge {
                                len: header.length,
                                max: self.max_size,
                            },
                        });
                    }
                    self.state = State::Payload(header);
                }
                State::Payload(header) => {
                    let total = HEADER_LEN + header.length as usize;
                    if buf.len() < total {
                        return Ok(None);
                    }
                    let payload = &buf.bytes()[HEADER_LEN..total];
                    let actual = crc32fast::hash(payload);
                    let result = if actual == header.crc {
                        Ok(Some(Frame {
                            opcode: header.opcode,
                            request_id: header.request_id,
                            payload: payload.to_vec(),
                        }))
                    } else {
                        Err(FrameError {
                            request_id: header.request_id,
                            opcode: Some(header.opcode),
                            error: ProtoError::CrcMismatch {
                                expected: header.crc,
                                actual,
                            },
                        })
                    };
                    buf.consume(total);
                    self.state = State::Header;
                    return result;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{encode_frame, Message};

    fn ping_bytes(id: u32) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(&mut out, id, &Message::Ping);
        out
    }

    #[test]
    fn waits_for_a_whole_frame() {
        let bytes = ping_bytes(5);
        let mut dec = Decoder::new(1024);
        let mut buf = ReadBuf::new();
        buf.extend(&bytes[..10]);
        assert_eq!(dec.decode(&mut buf).unwrap(), None);
        assert_eq!(buf.len(), 10, "a partial frame is not consumed");
        buf.extend(&bytes[10..]);
        let frame = dec.decode(&mut buf).unwrap().unwrap();
        assert_eq!((frame.opcode, frame.request_id), (0x01, 5));
        assert!(buf.is_empty());
    }

    #[test]
    fn refuses_oversize_from_the_header_alone() {
        let mut header = [0u8; HEADER_LEN];
        Header {
            opcode: 1,
            request_id: 3,
            length: 1025,
            crc: 0,
        }
        .write(&mut header);
        let mut dec = Decoder::new(1024);
        let mut buf = ReadBuf::new();
        buf.extend(&header);
        let err = dec.decode(&mut buf).unwrap_err();
        assert_eq!(
            err.error,
            ProtoError::FrameTooLarge {
                len: 1025,
                max: 1024
            }
        );
        assert_eq!(err.request_id, 3);
        assert!(err.error.is_fatal());
    }

    #[test]
    fn crc_mismatch_drops_one_frame_and_goes_on() {
        let mut bytes = Vec::new();
        encode_frame(
            &mut bytes,
            1,
            &Message::error(&ProtoError::Internal("x".into())),
        );
        let last = bytes.len() - 1;
        bytes[last] ^= 0xFF;
        bytes.extend(ping_bytes(2));
        let mut dec = Decoder::new(1024);
        let mut buf = ReadBuf::new();
        buf.extend(&bytes);
        let err = dec.decode(&mut buf).unwrap_err();
        assert_eq!(err.request_id, 1);
        assert!(!err.error.is_fatal());
        assert_eq!(dec.decode(&mut buf).unwrap().unwrap().request_id, 2);
    }

    #[test]
    fn bad_magic_is_seen_after_two_bytes() {
        let mut dec = Decoder::new(1024);
        let mut buf = ReadBuf::new();
        buf.extend(b"GE");
        let err = dec.decode(&mut buf).unwrap_err();
        assert_eq!(err.error, ProtoError::BadMagic { found: *b"GE" });
    }
}
