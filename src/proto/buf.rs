//! The read buffer a connection fills from its socket.
//!
//! Bytes live in `data[start..end]`; `data[end..]` is zeroed spare room that
//! reads fill directly, so a read costs no allocation and no memset once the
//! buffer has reached its working size. Consumed bytes are dropped by moving
//! `start`; the remainder is moved to the front only when room runs out.
//!
//! The buffer grows only as bytes actually arrive, never because a header
//! *declared* a length: a peer that announces 200 MiB and sends nothing costs
//! nothing.

use std::io::{self, Read};

/// Initial (and resting) capacity: large enough that a batch of small frames
/// arrives in one read, small enough to keep thousands of idle connections cheap.
const INITIAL: usize = 64 * 1024;

/// Below this much spare room, make room before reading again.
const MIN_READ: usize = 16 * 1024;

/// After a large frame, a buffer bigger than this shrinks back once empty.
const SHRINK_ABOVE: usize = 1024 * 1024;

#[derive(Debug, Default)]
pub struct ReadBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReadBuf {
    pub fn new() -> ReadBuf {
        ReadBuf::default()
    }

    /// The bytes received and not yet consumed.
    pub fn bytes(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Drops the first `n` unconsumed bytes.
    pub fn consume(&mut self, n: usize) {
        assert!(n <= self.len(), "consume past the end of the buffer");
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.data.len() > SHRINK_ABOVE {
                self.data = Vec::new();
            }
        }
    }

    /// Drops every unconsumed byte, keeping the allocation for reuse.
    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Appends bytes (tests and in-memory use; sockets use [`ReadBuf::read_from`]).
    pub fn extend(&mut self, bytes: &[u8]) {
        self.make_room(bytes.len());
        self.data[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
    }

    /// One `read` call into the spare room. Returns what `read` returned:
    /// `Ok(0)` is end of stream.
    pub fn read_from<R: Read>(&mut self, reader: &mut R) -> io::Result<usize> {
        self.make_room(MIN_READ);
        let n = reader.read(&mut self.data[self.end..])?;
        self.end += n;
        Ok(n)
    }

    /// Ensures at least `want` bytes of spare room after `end`.
    fn make_room(&mut self, want: usize) {
        if self.data.len() - self.end >= want {
            return;
        }
        if self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let needed = self.end + want;
        if self.data.len() < needed {
            let new_len = needed.max(INITIAL).max(self.data.len().saturating_mul(2));
            self.data.resize(new_len, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumes_and_compacts() {
        let mut buf = ReadBuf::new();
        buf.extend(b"hello world");
        buf.consume(6);
        assert_eq!(buf.bytes(), b"world");
        buf.extend(&[b'!'; INITIAL]);
        assert_eq!(&buf.bytes()[..6], b"world!");
        assert_eq!(buf.len(), 5 + INITIAL);
        buf.consume(buf.len());
        assert!(buf.is_empty());
    }

    #[test]
    fn reads_from_a_reader_in_pieces() {
        let mut src: &[u8] = &[7u8; 100_000];
        let mut buf = ReadBuf::new();
        while buf.read_from(&mut src).unwrap() > 0 {}
        assert_eq!(buf.len(), 100_000);
    }
}
