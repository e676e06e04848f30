//! Runs: the form in which a keyed job's `(key, value)` pairs travel and
//! rest everywhere (a mapped batch, what a reducer takes and gives, a
//! job's output). Each pair is framed, as Hadoop's IFile frames them:
//!
//! ```text
//! varint key length, key bytes, varint value length, value bytes
//! ```
//!
//! where a varint is LEB128 (7 bits a byte, low first, the high bit set on
//! every byte but the last; at most 10 bytes), and the key and the value
//! are their [`Codec`](super::Codec) encodings. A run is sorted by key
//! bytes, each key at most once, unless said otherwise.
//!
//! The frames let code that does not know the job's types (the host)
//! find, compare, split by partition and merge pairs by their key bytes,
//! which sort as the keys do; only combining the values of one key needs
//! the job.

/// Why a run could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunError {
    /// The bytes end inside a pair: the rest may come in the next piece.
    Cut,
    /// A length is not a varint of at most 10 bytes, or too large for this
    /// machine: the bytes are not a run.
    Malformed,
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RunError::Cut => "the run ends inside a pair",
            RunError::Malformed => "a pair's length is malformed",
        })
    }
}

impl std::error::Error for RunError {}

/// Appends `n` as a varint.
pub fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Reads a varint from the front of `input`, and moves `input` past it.
pub fn take_varint(input: &mut &[u8]) -> Result<u64, RunError> {
    let mut n = 0u64;
    for (i, byte) in input.iter().enumerate().take(10) {
        let bits = u64::from(byte & 0x7f);
        if i == 9 && bits > 1 {
            return Err(RunError::Malformed); // past 64 bits
        }
        n |= bits << (7 * i);
        if byte & 0x80 == 0 {
            *input = &input[i + 1..];
            return Ok(n);
        }
    }
    if input.len() >= 10 {
        Err(RunError::Malformed)
    } else {
        Err(RunError::Cut)
    }
}

/// Appends one framed pair.
pub fn push_pair(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    put_varint(out, key.len() as u64);
    out.extend_from_slice(key);
    put_varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

/// Reads one framed pair from the front of `input` and moves `input` past
/// it; `input` is left as it was on an error.
pub fn take_pair<'a>(input: &mut &'a [u8]) -> Result<(&'a [u8], &'a [u8]), RunError> {
    let mut rest = *input;
    let field = |rest: &mut &'a [u8]| -> Result<&'a [u8], RunError> {
        let len = usize::try_from(take_varint(rest)?).map_err(|_| RunError::Malformed)?;
        if rest.len() < len {
            return Err(RunError::Cut);
        }
        let (bytes, after) = rest.split_at(len);
        *rest = after;
        Ok(bytes)
    };
    let key = field(&mut rest)?;
    let value = field(&mut rest)?;
    *input = rest;
    Ok((key, value))
}

/// The pairs of a run, in order, as `(key bytes, value bytes)`; an error
/// (the run cut short, or not a run) ends them.
pub fn pairs(mut run: &[u8]) -> impl Iterator<Item = Result<(&[u8], &[u8]), RunError>> {
    std::iter::from_fn(move || {
        if run.is_empty() {
            return None;
        }
        let pair = take_pair(&mut run);
        if pair.is_err() {
            run = &[]; // nothing after a bad pair can be trusted
        }
        Some(pair)
    })
}

/// Compares two encoded keys as byte strings — the order of runs — eight
/// bytes at a time, inline: keys are short, and a call into the C
/// library's `memcmp` per comparison was a quarter of a many-keys job's
/// CPU (`perf`, issue 13). The same order as `a.cmp(b)`.
#[inline]
pub fn compare_keys(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let word = |c: &[u8]| <[u8; 8]>::try_from(c).map_or(0, u64::from_be_bytes);
    let mut chunks = a.chunks_exact(8).zip(b.chunks_exact(8));
    let mut i = 0;
    for (x, y) in chunks.by_ref() {
        let (x, y) = (word(x), word(y));
        if x != y {
            return x.cmp(&y);
        }
        i += 8;
    }
    for (x, y) in a[i..].iter().zip(&b[i..]) {
        if x != y {
            return x.cmp(y);
        }
    }
    a.len().cmp(&b.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_a_cut_one_says_so() {
        for n in [0, 1, 127, 128, 300, 1 << 35, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, n);
            let mut input = &out[..];
            assert_eq!(take_varint(&mut input), Ok(n));
            assert!(input.is_empty());
            if out.len() > 1 {
                assert_eq!(take_varint(&mut &out[..out.len() - 1]), Err(RunError::Cut));
            }
        }
        // Eleven continuation bytes, or a tenth byte past 64 bits.
        assert_eq!(take_varint(&mut &[0xff; 11][..]), Err(RunError::Malformed));
        let mut big = vec![0xff; 9];
        big.push(0x02);
        assert_eq!(take_varint(&mut &big[..]), Err(RunError::Malformed));
    }

    #[test]
    fn pairs_read_back_and_a_run_cut_anywhere_is_cut_not_wrong() {
        let mut run = Vec::new();
        push_pair(&mut run, b"apple", &[0, 3]);
        push_pair(&mut run, b"", b"");
        push_pair(&mut run, &[7; 300], b"v");
        let read: Vec<_> = pairs(&run).collect::<Result<_, _>>().unwrap();
        assert_eq!(
            read,
            [
                (&b"apple"[..], &[0u8, 3][..]),
                (b"", b""),
                (&[7; 300][..], b"v")
            ]
        );
        // Cut anywhere, a run reads as its whole pairs, then `Cut` (or
        // nothing, when the cut falls between pairs).
        for cut in 0..run.len() {
            let mut input = &run[..cut];
            while !input.is_empty() {
                if let Err(e) = take_pair(&mut input) {
                    assert_eq!(e, RunError::Cut, "cut at {cut}");
                    break;
                }
            }
        }
    }
}
