//! A job's arguments: the words after `--` on `redmap run`'s command line,
//! which travel with the job (`RUN_JOB`, `MAP_BATCH`) to every process that
//! builds it, and reach the job's constructor byte for byte.
//!
//! ```text
//! args:  u32 n, then n × bytes (u32 length, then the argument's bytes)
//! ```
//!
//! The same layout as a task list, and the one the job ABI's `new` takes.
//! At most [`MAX_ARGS`] arguments and [`MAX_ARGS_BYTES`] bytes in all,
//! checked before anything is allocated.

use std::fmt;
use std::sync::Arc;

use super::wire::{put_bytes, put_u32, Cursor};
use crate::proto::error::ProtoError;

/// Most arguments one job takes.
pub const MAX_ARGS: usize = 1024;
/// Most bytes a job's encoded argument list takes (64 KiB): arguments say
/// where the data is, they are not the data.
pub const MAX_ARGS_BYTES: usize = 64 * 1024;

/// A job's arguments in their wire form, cheap to clone (one buffer shared
/// by every batch that carries them). Empty: no arguments.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct JobArgs {
    /// The encoded list, or empty for no arguments (which encodes as
    /// `00 00 00 00`).
    bytes: Arc<[u8]>,
}

/// Why a list of arguments cannot travel with a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgsError {
    TooMany(usize),
    TooLong(usize),
}

impl fmt::Display for ArgsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgsError::TooMany(n) => {
                write!(f, "a job takes at most {MAX_ARGS} arguments, not {n}")
            }
            ArgsError::TooLong(n) => write!(
                f,
                "a job's arguments take at most {MAX_ARGS_BYTES} bytes encoded, not {n}: \
                 pass a file's path instead of its contents"
            ),
        }
    }
}

impl std::error::Error for ArgsError {}

impl JobArgs {
    /// The arguments `args`, checked against the limits.
    pub fn new<S: AsRef<[u8]>>(args: &[S]) -> Result<JobArgs, ArgsError> {
        if args.len() > MAX_ARGS {
            return Err(ArgsError::TooMany(args.len()));
        }
        let size = 4 + args.iter().map(|a| 4 + a.as_ref().len()).sum::<usize>();
        if size > MAX_ARGS_BYTES {
            return Err(ArgsError::TooLong(size));
        }
        if args.is_empty() {
            return Ok(JobArgs::default());
        }
        let mut bytes = Vec::with_capacity(size);
        put_u32(&mut bytes, args.len() as u32);
        for arg in args {
            put_bytes(&mut bytes, arg.as_ref());
        }
        Ok(JobArgs {
            bytes: bytes.into(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The encoded list (`u32 n`, then n `bytes`), as the job ABI's `new`
    /// takes it.
    pub fn encoded(&self) -> &[u8] {
        if self.bytes.is_empty() {
            &[0; 4]
        } else {
            &self.bytes
        }
    }

    /// Each argument's bytes.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let mut c = Cursor::new(0, self.encoded());
        let n = c.u32("args").unwrap_or(0);
        // Lengths were checked when the list was built or decoded.
        (0..n).map_while(move |_| c.bytes("argument").ok())
    }

    /// Appends the list in its wire form.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.encoded());
    }

    /// Reads a list from the front of `c`, checking the limits before it
    /// allocates.
    pub fn decode(c: &mut Cursor<'_>) -> Result<JobArgs, ProtoError> {
        let start = c.rest();
        let n = c.count(4, "argument count")?;
        if n > MAX_ARGS {
            return Err(c.malformed("argument count"));
        }
        for _ in 0..n {
            c.bytes("argument")?;
        }
        let used = start.len() - c.rest().len();
        if used > MAX_ARGS_BYTES {
            return Err(c.malformed("arguments"));
        }
        if n == 0 {
            return Ok(JobArgs::default());
        }
        Ok(JobArgs {
            bytes: start[..used].into(),
        })
    }
}

impl fmt::Debug for JobArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(String::from_utf8_lossy))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_round_trip_byte_for_byte() {
        let args = JobArgs::new(&["corpus.txt", "--top", "", "é\t\n"]).unwrap();
        let mut wire = Vec::new();
        args.encode(&mut wire);
        let back = JobArgs::decode(&mut Cursor::new(0x10, &wire)).unwrap();
        assert_eq!(back, args);
        let words: Vec<&[u8]> = back.iter().collect();
        assert_eq!(
            words,
            [&b"corpus.txt"[..], b"--top", b"", "é\t\n".as_bytes()]
        );
    }

    #[test]
    fn no_arguments_encode_as_a_zero_count() {
        let none = JobArgs::new::<&str>(&[]).unwrap();
        assert!(none.is_empty());
        assert_eq!(none.encoded(), [0, 0, 0, 0]);
        let back = JobArgs::decode(&mut Cursor::new(0x10, &[0, 0, 0, 0])).unwrap();
        assert_eq!(back, none);
    }

    #[test]
    fn limits_are_checked_before_anything_is_kept() {
        let many = vec!["x"; MAX_ARGS + 1];
        assert_eq!(JobArgs::new(&many), Err(ArgsError::TooMany(MAX_ARGS + 1)));
        let long = ["y".repeat(MAX_ARGS_BYTES)];
        assert!(matches!(JobArgs::new(&long), Err(ArgsError::TooLong(_))));
        // A count that lies about what follows is refused by its length.
        let lie = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, b'a'];
        assert!(JobArgs::decode(&mut Cursor::new(0x10, &lie)).is_err());
        // More arguments than a job takes, each empty (so the count fits
        // the bytes): refused by the count.
        let mut many = (MAX_ARGS as u32 + 1).to_be_bytes().to_vec();
        many.extend(std::iter::repeat_n(0u8, 4 * (MAX_ARGS + 1)));
        assert!(JobArgs::decode(&mut Cursor::new(0x10, &many)).is_err());
        let mut most = (MAX_ARGS as u32).to_be_bytes().to_vec();
        most.extend(std::iter::repeat_n(0u8, 4 * MAX_ARGS));
        assert_eq!(
            JobArgs::decode(&mut Cursor::new(0x10, &most))
                .unwrap()
                .iter()
                .count(),
            MAX_ARGS
        );
        // A list over the byte limit sent by a peer.
        let mut big = vec![0, 0, 0, 1];
        put_bytes(&mut big, &vec![b'z'; MAX_ARGS_BYTES]);
        assert!(JobArgs::decode(&mut Cursor::new(0x10, &big)).is_err());
    }
}
