//! The fixed 16-byte frame header (a whole frame is `frame.rs`'s).
//!
//! ```text
//! offset  size  field
//!      0     2  magic        A5 4D
//!      2     1  version      1
//!      3     1  opcode
//!      4     4  request id   chosen by the requester, echoed in the reply
//!      8     4  length       payload bytes that follow the header
//!     12     4  crc32        CRC-32 (IEEE) of the payload bytes
//! ```

use byteorder::{BigEndian, ByteOrder};

use super::error::ProtoError;
use super::{HEADER_LEN, MAGIC, PROTOCOL_VERSION};

/// A parsed header whose magic and version have been checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub opcode: u8,
    pub request_id: u32,
    pub length: u32,
    pub crc: u32,
}

impl Header {
    /// Parses the first [`HEADER_LEN`] bytes of `bytes`. The caller guarantees
    /// there are at least that many. Magic and version are checked here, the
    /// length limit and the opcode are left to the caller.
    pub fn parse(bytes: &[u8]) -> Result<Header, ProtoError> {
        debug_assert!(bytes.len() >= HEADER_LEN);
        if bytes[0..2] != MAGIC {
            return Err(ProtoError::BadMagic {
                found: [bytes[0], bytes[1]],
            });
        }
        if bytes[2] != PROTOCOL_VERSION {
            return Err(ProtoError::UnsupportedVersion { found: bytes[2] });
        }
        Ok(Header {
            opcode: bytes[3],
            request_id: BigEndian::read_u32(&bytes[4..8]),
            length: BigEndian::read_u32(&bytes[8..12]),
            crc: BigEndian::read_u32(&bytes[12..16]),
        })
    }

    /// Writes the header into the first [`HEADER_LEN`] bytes of `out`.
    pub fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&MAGIC);
        out[2] = PROTOCOL_VERSION;
        out[3] = self.opcode;
        BigEndian::write_u32(&mut out[4..8], self.request_id);
        BigEndian::write_u32(&mut out[8..12], self.length);
        BigEndian::write_u32(&mut out[12..16], self.crc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let h = Header {
            opcode: 0x82,
            request_id: 0xDEAD_BEEF,
            length: 7,
            crc: 0x0102_0304,
        };
        let mut bytes = [0u8; HEADER_LEN];
        h.write(&mut bytes);
        assert_eq!(&bytes[..4], &[0xA5, 0x4D, 1, 0x82]);
        assert_eq!(Header::parse(&bytes).unwrap(), h);
    }

    #[test]
    fn wrong_version_is_refused() {
        let mut bytes = [0u8; HEADER_LEN];
        Header {
            opcode: 1,
            request_id: 0,
            length: 0,
            crc: 0,
        }
        .write(&mut bytes);
        bytes[2] = 9;
        assert_eq!(
            Header::parse(&bytes),
            Err(ProtoError::UnsupportedVersion { found: 9 })
        );
    }
}
