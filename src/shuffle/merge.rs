//! Merging sorted runs (src/job/run.rs) by key bytes, as the reduce side
//! of MapReduce merges its sorted map outputs (Dean & Ghemawat 2004, §3.1;
//! Hadoop's `Merger`): a k-way merge over a heap of the runs' next keys.
//! Pairs of equal keys come out next to each other, in run order; the job
//! combines them afterwards.

use std::cmp::Ordering;
use std::collections::binary_heap::{BinaryHeap, PeekMut};
use std::io::{self, BufRead, Read};

use crate::job::run::{compare_keys, take_pair, take_varint, RunError};

/// A source of framed pairs, in key order: a run in memory, or one read
/// back from a spill file.
pub trait PairSource {
    /// The next pair, `None` at the end. The slices live until the next
    /// call.
    fn next_pair(&mut self) -> io::Result<Option<(&[u8], &[u8])>>;
}

/// A run in memory.
pub struct Slice<'a>(pub &'a [u8]);

impl PairSource for Slice<'_> {
    fn next_pair(&mut self) -> io::Result<Option<(&[u8], &[u8])>> {
        if self.0.is_empty() {
            return Ok(None);
        }
        take_pair(&mut self.0).map(Some).map_err(invalid)
    }
}

fn invalid(e: RunError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// A run read from a file, one pair at a time, through a buffer (so a
/// spill file is never in memory whole).
pub struct Reader<R> {
    input: R,
    key: Vec<u8>,
    value: Vec<u8>,
}

impl<R: BufRead> Reader<R> {
    pub fn new(input: R) -> Reader<R> {
        Reader {
            input,
            key: Vec::new(),
            value: Vec::new(),
        }
    }

    /// A varint from the stream; `None` at a clean end (only before a
    /// pair's first byte).
    fn varint(&mut self, at_start: bool) -> io::Result<Option<u64>> {
        let mut bytes = [0u8; 10];
        for i in 0..10 {
            let mut one = [0u8; 1];
            match self.input.read(&mut one)? {
                0 if i == 0 && at_start => return Ok(None),
                0 => return Err(invalid(RunError::Cut)),
                _ => {}
            }
            bytes[i] = one[0];
            if one[0] & 0x80 == 0 {
                return take_varint(&mut &bytes[..=i]).map(Some).map_err(invalid);
            }
        }
        Err(invalid(RunError::Malformed))
    }
}

/// Reads exactly `len` bytes of `input` into `buf` (emptied first): what
/// the input holds, not what a length claims, so a corrupt length cannot
/// make this allocate more than the input's bytes.
fn fill(input: &mut impl BufRead, buf: &mut Vec<u8>, len: u64) -> io::Result<()> {
    buf.clear();
    if input.take(len).read_to_end(buf)? as u64 != len {
        return Err(invalid(RunError::Cut));
    }
    Ok(())
}

impl<R: BufRead> PairSource for Reader<R> {
    fn next_pair(&mut self) -> io::Result<Option<(&[u8], &[u8])>> {
        let Some(key_len) = self.varint(true)? else {
            return Ok(None);
        };
        fill(&mut self.input, &mut self.key, key_len)?;
        let value_len = self.varint(false)?.ok_or_else(|| invalid(RunError::Cut))?;
        fill(&mut self.input, &mut self.value, value_len)?;
        Ok(Some((&self.key, &self.value)))
    }
}

/// A source's next key in a merge's heap, with the source's number: the
/// smallest key first, and of equal keys the first source's.
struct Head<K>(K, usize);

impl<K: AsRef<[u8]>> Ord for Head<K> {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: `BinaryHeap` pops its greatest.
        compare_keys(other.0.as_ref(), self.0.as_ref()).then(other.1.cmp(&self.1))
    }
}

impl<K: AsRef<[u8]>> PartialOrd for Head<K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<K: AsRef<[u8]>> PartialEq for Head<K> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl<K: AsRef<[u8]>> Eq for Head<K> {}

fn unsorted() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "a run is not sorted by key")
}

/// Merges `sources` (each sorted by key bytes) and hands every pair to
/// `out`, in key order; pairs of equal keys in the order of their sources.
pub fn merge<S: PairSource>(
    mut sources: Vec<S>,
    mut out: impl FnMut(&[u8], &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    // The heap holds each source's next key (a copy: a source's slices
    // live only until its next call) with the source's index.
    let mut heap = BinaryHeap::new();
    let mut values: Vec<Vec<u8>> = vec![Vec::new(); sources.len()];
    for (i, source) in sources.iter_mut().enumerate() {
        if let Some((key, value)) = source.next_pair()? {
            values[i] = value.to_vec();
            heap.push(Head(key.to_vec(), i));
        }
    }
    // The top is replaced in place by its source's next pair (one sift
    // down, no allocation), or popped when its source is done.
    while let Some(mut top) = heap.peek_mut() {
        let i = top.1;
        out(&top.0, &values[i])?;
        match sources[i].next_pair()? {
            Some((next, value)) => {
                if compare_keys(next, &top.0).is_lt() {
                    return Err(unsorted());
                }
                top.0.clear();
                top.0.extend_from_slice(next);
                values[i].clear();
                values[i].extend_from_slice(value);
            }
            None => {
                PeekMut::pop(top);
            }
        }
    }
    Ok(())
}

/// [`merge`] for runs all in memory: the heap holds slices of the runs
/// themselves, so no pair is copied on its way through.
pub fn merge_slices(
    runs: &[&[u8]],
    mut out: impl FnMut(&[u8], &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let mut rests: Vec<&[u8]> = runs.to_vec();
    let mut values: Vec<&[u8]> = vec![&[]; runs.len()];
    let mut heap = BinaryHeap::with_capacity(runs.len());
    for (i, rest) in rests.iter_mut().enumerate() {
        if !rest.is_empty() {
            let (key, value) = take_pair(rest).map_err(invalid)?;
            values[i] = value;
            heap.push(Head(key, i));
        }
    }
    while let Some(mut top) = heap.peek_mut() {
        let Head(key, i) = *top;
        out(key, values[i])?;
        if rests[i].is_empty() {
            PeekMut::pop(top);
            continue;
        }
        let (next, value) = take_pair(&mut rests[i]).map_err(invalid)?;
        if compare_keys(next, key).is_lt() {
            return Err(unsorted());
        }
        values[i] = value;
        *top = Head(next, i);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::run::{push_pair, put_varint};

    #[test]
    fn keys_compare_as_byte_strings_do() {
        // Keys of 0 to 20 bytes over a small alphabet: many equal
        // prefixes, prefixes of each other, and every length around 8.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let keys: Vec<Vec<u8>> = (0..600)
            .map(|_| {
                let n = (next() % 21) as usize;
                (0..n)
                    .map(|_| [0u8, 1, 0x7f, 0xff][(next() % 4) as usize])
                    .collect()
            })
            .collect();
        for a in &keys {
            for b in &keys {
                assert_eq!(compare_keys(a, b), a.cmp(b), "{a:?} {b:?}");
            }
        }
    }

    fn run(pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, v) in pairs {
            push_pair(&mut out, k.as_bytes(), v.as_bytes());
        }
        out
    }

    fn merged<S: PairSource>(sources: Vec<S>) -> Vec<(String, String)> {
        let mut got = Vec::new();
        merge(sources, |k, v| {
            got.push((
                String::from_utf8(k.to_vec()).unwrap(),
                String::from_utf8(v.to_vec()).unwrap(),
            ));
            Ok(())
        })
        .unwrap();
        got
    }

    #[test]
    fn runs_merge_in_key_order_with_equal_keys_next_to_each_other() {
        let a = run(&[("a", "1"), ("c", "3"), ("e", "5")]);
        let b = run(&[("b", "2"), ("c", "30"), ("f", "6")]);
        let c = run(&[]);
        let got = merged(vec![Slice(&a), Slice(&b), Slice(&c)]);
        let keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "b", "c", "c", "e", "f"]);
        assert_eq!(got[2].1, "3", "equal keys in source order");
        assert_eq!(got[3].1, "30");
    }

    #[test]
    fn a_file_reader_reads_what_a_slice_reads_and_refuses_a_cut_file() {
        let a = run(&[("apple", "x"), ("fig", &"y".repeat(300))]);
        let from_file = merged(vec![Reader::new(io::BufReader::new(&a[..]))]);
        assert_eq!(from_file, merged(vec![Slice(&a)]));
        let cut = &a[..a.len() - 1];
        let err = merge(vec![Reader::new(io::BufReader::new(cut))], |_, _| Ok(())).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        // A length that lies about the file's size allocates nothing of it.
        let mut liar = Vec::new();
        put_varint(&mut liar, u64::MAX >> 1);
        let err = merge(vec![Reader::new(io::BufReader::new(&liar[..]))], |_, _| {
            Ok(())
        });
        assert!(err.is_err());
    }

    #[test]
    fn merging_slices_gives_what_merging_sources_gives() {
        let a = run(&[("a", "1"), ("c", "3"), ("e", "5")]);
        let b = run(&[("b", "2"), ("c", "30"), ("f", "6")]);
        let mut got = Vec::new();
        merge_slices(&[&a, &b, &[]], |k, v| {
            got.push((
                String::from_utf8(k.to_vec()).unwrap(),
                String::from_utf8(v.to_vec()).unwrap(),
            ));
            Ok(())
        })
        .unwrap();
        assert_eq!(got, merged(vec![Slice(&a), Slice(&b)]));
        let bad = run(&[("b", "1"), ("a", "2")]);
        assert!(merge_slices(&[&bad], |_, _| Ok(())).is_err());
    }

    #[test]
    fn an_unsorted_run_is_refused() {
        let bad = run(&[("b", "1"), ("a", "2")]);
        assert!(merge(vec![Slice(&bad)], |_, _| Ok(())).is_err());
    }
}
