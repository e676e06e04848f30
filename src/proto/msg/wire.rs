//! Payload primitives shared by every message: fixed-width big-endian
//! integers, `str` (u16 length + UTF-8) and `bytes` (u32 length + raw).
//!
//! [`Cursor`] reads them from a payload and checks every length against the
//! bytes actually left before touching them, so a lying length is a typed
//! error, never a panic or an allocation.

use byteorder::{BigEndian, ByteOrder, WriteBytesExt};

use crate::proto::error::ProtoError;

/// Reads primitives from one payload; `opcode` only labels errors.
pub struct Cursor<'a> {
    bytes: &'a [u8],
    opcode: u8,
}

impl<'a> Cursor<'a> {
    pub fn new(opcode: u8, bytes: &'a [u8]) -> Cursor<'a> {
        Cursor { bytes, opcode }
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ProtoError> {
        if self.bytes.len() < n {
            return Err(ProtoError::Malformed {
                opcode: self.opcode,
                what,
            });
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, ProtoError> {
        Ok(self.take(1, what)?[0])
    }

    pub fn u16(&mut self, what: &'static str) -> Result<u16, ProtoError> {
        Ok(BigEndian::read_u16(self.take(2, what)?))
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, ProtoError> {
        Ok(BigEndian::read_u32(self.take(4, what)?))
    }

    pub fn u64(&mut self, what: &'static str) -> Result<u64, ProtoError> {
        Ok(BigEndian::read_u64(self.take(8, what)?))
    }

    /// A `str`: u16 byte length, then that many bytes of UTF-8.
    pub fn str(&mut self, what: &'static str) -> Result<String, ProtoError> {
        let len = self.u16(what)? as usize;
        let raw = self.take(len, what)?;
        std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| ProtoError::Malformed {
                opcode: self.opcode,
                what,
            })
    }

    /// A fixed 32-byte field (a SHA-256).
    pub fn hash(&mut self, what: &'static str) -> Result<[u8; 32], ProtoError> {
        let raw = self.take(32, what)?;
        let mut h = [0u8; 32];
        h.copy_from_slice(raw);
        Ok(h)
    }

    /// A count of items that each take at least `min_item` bytes, checked
    /// against the bytes left so a lying count cannot make the caller
    /// reserve memory for items that are not there.
    pub fn count(&mut self, min_item: usize, what: &'static str) -> Result<usize, ProtoError> {
        let n = self.u32(what)? as usize;
        if n.saturating_mul(min_item.max(1)) > self.bytes.len() {
            return Err(ProtoError::Malformed {
                opcode: self.opcode,
                what,
            });
        }
        Ok(n)
    }

    /// The error of a malformed `what` in this payload.
    pub fn malformed(&self, what: &'static str) -> ProtoError {
        ProtoError::Malformed {
            opcode: self.opcode,
            what,
        }
    }

    /// The bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.bytes
    }

    /// A `bytes`: u32 byte length, then that many bytes.
    pub fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], ProtoError> {
        let len = self.u32(what)? as usize;
        self.take(len, what)
    }
}

pub fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.write_u16::<BigEndian>(v).expect("Vec write");
}

pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.write_u32::<BigEndian>(v).expect("Vec write");
}

pub fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.write_u64::<BigEndian>(v).expect("Vec write");
}

/// Appends a `str`, cut at 65,535 bytes (on a character boundary) since its
/// length field is a u16. Only human-readable text travels as `str`.
pub fn put_str(out: &mut Vec<u8>, s: &str) {
    let mut end = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.write_u16::<BigEndian>(end as u16).expect("Vec write");
    out.extend_from_slice(&s.as_bytes()[..end]);
}

/// Appends a `bytes`.
pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    let len = u32::try_from(b.len()).expect("bytes field over 4 GiB");
    out.write_u32::<BigEndian>(len).expect("Vec write");
    out.extend_from_slice(b);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn str_round_trips_and_is_cut_on_a_char_boundary() {
        let mut out = Vec::new();
        put_str(&mut out, "héllo");
        assert_eq!(Cursor::new(0, &out).str("s").unwrap(), "héllo");

        let long = "é".repeat(40_000); // 80,000 bytes
        let mut out = Vec::new();
        put_str(&mut out, &long);
        let back = Cursor::new(0, &out).str("s").unwrap();
        assert_eq!(back.len(), 65_534);
    }

    #[test]
    fn lying_lengths_are_errors() {
        let payload = [0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3];
        assert!(Cursor::new(7, &payload).bytes("b").is_err());
        assert!(Cursor::new(7, &[0x00, 0x02, 0xC3]).str("s").is_err());
        assert!(Cursor::new(7, &[0x00, 0x01, 0xFF]).str("s").is_err());
    }
}
