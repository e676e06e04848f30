//! The files a worker keeps for its manager's shuffles: each map output
//! (a batch's pairs, cut into one segment per reduce partition, as the
//! MapReduce paper's map workers keep theirs on local disk), and each
//! partition output its reduces made (the partition's pairs, and their
//! text form). Served in chunks by `FETCH` to reducers and clients, and
//! removed by `DROP_SHUFFLE`, when the manager lets go of the worker, or
//! when the worker stops.
//!
//! The bytes live in files under the system's temporary directory, never
//! in memory: what a worker holds for its reducers is bounded by its disk,
//! not its RAM (the issue's "map outputs waiting to be fetched are bounded
//! the same way").

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::job::run::{pairs, push_pair, take_pair};
use crate::pipeline::cluster::{Output, OutputFile, OutputWriter};
use crate::proto::msg::shuffle::{
    partition_of, KeyRange, BINARY_SEGMENT, MAX_SAMPLES, MAX_SAMPLE_KEY, TEXT_SEGMENT,
};
use crate::proto::msg::{MapOutput, ShuffleSpec};
use crate::proto::{ErrorCode, ProtoError};

/// Most bytes one `FETCHED` chunk holds (4 MiB), whatever the request
/// asks: a chunk is read on the event loop.
pub const MAX_CHUNK: usize = 4 << 20;

enum Kept {
    /// A map output: one file, a segment per partition (offset, length);
    /// a sorted one (`--total-order`) has one segment and an index of
    /// its keys, every [`INDEX_STRIDE`] bytes (key, offset).
    Map {
        file: OutputFile,
        segments: Vec<(u64, u64)>,
        index: KeyIndex,
    },
    /// A partition output: its binary and text forms.
    Partition(Output),
}

struct Entry {
    job: u64,
    kept: Kept,
}

struct Table {
    next: u64,
    files: HashMap<u64, Entry>,
    /// Jobs whose files were dropped, most recent last: a reduce or map
    /// that ends after the drop keeps nothing.
    dropped: VecDeque<u64>,
}

/// Bytes between two entries of a sorted map output's key index: a key
/// range is found by a binary search of the index and a scan of at most
/// this much (and one pair).
pub const INDEX_STRIDE: u64 = 64 << 10;

/// A sorted map output's index: (key, offset of its pair).
type KeyIndex = Vec<(Vec<u8>, u64)>;

/// Jobs remembered as dropped.
const MAX_DROPPED: usize = 4096;

/// The worker's shuffle files, shared by its map and reduce threads and
/// its event loop. Cheap to clone.
#[derive(Clone)]
pub struct ShuffleFiles {
    table: Arc<Mutex<Table>>,
}

impl Default for ShuffleFiles {
    /// Ids start at a random point, so a restarted worker's files never
    /// answer for an earlier process's.
    fn default() -> ShuffleFiles {
        let seed = crate::net::auth::nonce().map_or(1, |n| {
            u64::from_le_bytes(n[..8].try_into().unwrap_or([1; 8])) >> 16
        });
        ShuffleFiles {
            table: Arc::new(Mutex::new(Table {
                next: seed,
                files: HashMap::new(),
                dropped: VecDeque::new(),
            })),
        }
    }
}

impl ShuffleFiles {
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `kept` for job `job`; `None` (and the files go) if the job
    /// was dropped meanwhile.
    fn keep(&self, job: u64, kept: Kept) -> Option<u64> {
        let mut t = self.lock();
        if t.dropped.contains(&job) {
            return None;
        }
        t.next += 1;
        let id = t.next;
        t.files.insert(id, Entry { job, kept });
        Some(id)
    }

    /// Cuts `run` (a batch's pairs: framed, sorted by key) into
    /// `spec.partitions` segments by [`partition_of`] each key, and keeps
    /// them in one file for the job. Each segment stays sorted. With
    /// `spec.total_order`, keeps it whole instead, indexed, and answers
    /// with samples of its keys (see [`MAX_SAMPLES`]).
    ///
    /// # Errors
    /// The run does not decode as pairs, or the file cannot be written.
    pub fn keep_map_output(
        &self,
        spec: ShuffleSpec,
        run: &[u8],
        dir: &Path,
    ) -> Result<MapOutput, String> {
        let job = spec.job;
        let (parts, index, samples) = if spec.total_order {
            let (index, samples) = index_and_samples(run)?;
            (vec![Cow::Borrowed(run)], index, samples)
        } else {
            let mut parts = vec![Vec::new(); spec.partitions.max(1) as usize];
            for pair in pairs(run) {
                let (key, value) =
                    pair.map_err(|e| format!("the batch's pairs do not decode: {e}"))?;
                let p = partition_of(key, spec.partitions) as usize;
                push_pair(&mut parts[p], key, value);
            }
            let parts = parts.into_iter().map(Cow::Owned).collect();
            (parts, Vec::new(), Vec::new())
        };
        let prefix = format!("redmap-map-{}-job-{job}", std::process::id());
        let mut w = OutputWriter::create(dir, &prefix, "bin")
            .map_err(|e| format!("cannot keep the map output: {e}"))?;
        let mut segments = Vec::with_capacity(parts.len());
        let mut offset = 0u64;
        for p in &parts {
            w.write(p)
                .map_err(|e| format!("cannot keep the map output: {e}"))?;
            segments.push((offset, p.len() as u64));
            offset += p.len() as u64;
        }
        let file = w
            .finish()
            .map_err(|e| format!("cannot keep the map output: {e}"))?;
        let lengths = segments.iter().map(|s| s.1).collect();
        let kept = Kept::Map {
            file,
            segments,
            index,
        };
        let id = self
            .keep(job, kept)
            .ok_or_else(|| format!("job {job}'s shuffle was dropped here"))?;
        Ok(MapOutput {
            file: id,
            segments: lengths,
            samples,
        })
    }

    /// Keeps a partition output of job `job`; returns its id, or `None`
    /// (and the files go) if the job's shuffle was dropped here.
    pub fn keep_partition(&self, job: u64, output: Output) -> Option<u64> {
        self.keep(job, Kept::Partition(output))
    }

    /// Up to `max` bytes (0: [`MAX_CHUNK`]) of segment `segment` of file
    /// `id`, from `offset`: (the segment's length, the bytes). With
    /// `range`, of the pairs of a sorted map output's segment 0 whose keys
    /// are in it: offset and length are the range's.
    ///
    /// # Errors
    /// `NOT_FOUND` for a file or segment this worker does not keep, or a
    /// text form that could not be made; `INTERNAL` for a read error.
    pub fn read(
        &self,
        job: u64,
        id: u64,
        segment: u32,
        offset: u64,
        max: u32,
        range: Option<&KeyRange>,
    ) -> Result<(u64, Vec<u8>), ProtoError> {
        let max = match max {
            0 => MAX_CHUNK,
            n => (n as usize).min(MAX_CHUNK),
        };
        let t = self.lock();
        let missing = |why: String| ProtoError::refused(ErrorCode::NOT_FOUND, why);
        let entry = t
            .files
            .get(&id)
            .filter(|e| e.job == job)
            .ok_or_else(|| missing(format!("no shuffle file {id} of job {job} here")))?;
        let internal = |e: std::io::Error| {
            ProtoError::refused(
                ErrorCode::INTERNAL,
                format!("reading shuffle file {id}: {e}"),
            )
        };
        let (file, start, len) = match (&entry.kept, segment) {
            (
                Kept::Map {
                    file,
                    segments,
                    index,
                },
                s,
            ) => {
                let (start, len) = *segments
                    .get(s as usize)
                    .ok_or_else(|| missing(format!("map output {id} has no segment {s}")))?;
                match range {
                    None => (file, start, len),
                    Some(_) if segments.len() != 1 || index.is_empty() && len > 0 => {
                        return Err(missing(format!("map output {id} is not sorted whole")))
                    }
                    Some(r) => {
                        let at = |bound: &Option<Vec<u8>>, open: u64| match bound {
                            Some(b) => locate(file, index, len, b),
                            None => Ok(open),
                        };
                        let lo = at(&r.lo, 0).map_err(internal)?;
                        let hi = at(&r.hi, len).map_err(internal)?.max(lo);
                        (file, lo, hi - lo)
                    }
                }
            }
            (Kept::Partition(out), BINARY_SEGMENT) => (&out.binary, 0, out.binary.len()),
            (Kept::Partition(out), TEXT_SEGMENT) => match &out.text {
                Some(Ok(text)) => (text, 0, text.len()),
                Some(Err(why)) => return Err(missing(format!("no text form: {why}"))),
                None => return Err(missing("no text form".into())),
            },
            (Kept::Partition(_), s) => {
                return Err(missing(format!("a partition output has no segment {s}")))
            }
        };
        let offset = offset.min(len);
        let n = (len - offset).min(max as u64) as usize;
        let bytes = file.read_at(start + offset, n).map_err(internal)?;
        Ok((len, bytes))
    }

    /// Whether job `job`'s shuffle was dropped here (it was cancelled or
    /// has ended): nothing more of it is kept or written.
    pub fn is_dropped(&self, job: u64) -> bool {
        self.lock().dropped.contains(&job)
    }

    /// Removes job `job`'s map outputs and/or partition outputs (the
    /// `DROP_SHUFFLE` bits); returns how many files went. Once its
    /// partition outputs are dropped, the job keeps nothing more here.
    pub fn drop_job(&self, job: u64, maps: bool, partitions: bool) -> usize {
        let mut t = self.lock();
        if partitions && !t.dropped.contains(&job) {
            t.dropped.push_back(job);
            if t.dropped.len() > MAX_DROPPED {
                t.dropped.pop_front();
            }
        }
        let before = t.files.len();
        t.files.retain(|_, e| {
            e.job != job
                || match e.kept {
                    Kept::Map { .. } => !maps,
                    Kept::Partition(_) => !partitions,
                }
        });
        before - t.files.len()
    }

    /// Removes every file (the manager let go of this worker, or it
    /// stops). The next manager's job ids start afresh: none is dropped.
    pub fn drop_all(&self) -> usize {
        let mut t = self.lock();
        let n = t.files.len();
        t.files.clear();
        t.dropped.clear();
        n
    }

    /// How many files are kept, and their bytes.
    pub fn usage(&self) -> (usize, u64) {
        let t = self.lock();
        let bytes = t
            .files
            .values()
            .map(|e| match &e.kept {
                Kept::Map { file, .. } => file.len(),
                Kept::Partition(o) => {
                    o.binary.len()
                        + o.text
                            .as_ref()
                            .map_or(0, |t| t.as_ref().map_or(0, |f| f.len()))
                }
            })
            .sum();
        (t.files.len(), bytes)
    }
}

/// A sorted run's key index (a key every [`INDEX_STRIDE`] bytes, with
/// its offset) and up to [`MAX_SAMPLES`] keys evenly spaced among its
/// pairs (each cut at [`MAX_SAMPLE_KEY`] bytes).
fn index_and_samples(run: &[u8]) -> Result<(KeyIndex, Vec<Vec<u8>>), String> {
    let bad = |e: crate::job::run::RunError| format!("the batch's pairs do not decode: {e}");
    let n = pairs(run).count();
    let every = n.div_ceil(MAX_SAMPLES).max(1);
    let (mut index, mut samples) = (Vec::new(), Vec::new());
    let mut rest = run;
    let mut next_index = 0u64;
    let mut i = 0usize;
    while !rest.is_empty() {
        let offset = (run.len() - rest.len()) as u64;
        let (key, _) = take_pair(&mut rest).map_err(bad)?;
        if offset >= next_index {
            index.push((key.to_vec(), offset));
            next_index = offset + INDEX_STRIDE;
        }
        if i % every == every / 2 {
            samples.push(key[..key.len().min(MAX_SAMPLE_KEY)].to_vec());
        }
        i += 1;
    }
    Ok((index, samples))
}

/// The offset of the first pair of a sorted segment `[0, len)` of `file`
/// whose key is at least `bound`, found with its `index`.
fn locate(
    file: &OutputFile,
    index: &[(Vec<u8>, u64)],
    len: u64,
    bound: &[u8],
) -> std::io::Result<u64> {
    let i = index.partition_point(|(k, _)| k.as_slice() < bound);
    let from = if i == 0 { 0 } else { index[i - 1].1 };
    // The entry at `i` has a key at least `bound`: the answer is before it.
    let to = index.get(i).map_or(len, |(_, at)| *at);
    let bytes = file.read_at(from, (to - from) as usize)?;
    let mut rest = bytes.as_slice();
    while !rest.is_empty() {
        let at = from + (bytes.len() - rest.len()) as u64;
        let (key, _) = take_pair(&mut rest)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
        if key >= bound {
            return Ok(at);
        }
    }
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_of(keys: &[&str]) -> Vec<u8> {
        let mut run = Vec::new();
        for k in keys {
            push_pair(&mut run, k.as_bytes(), b"1");
        }
        run
    }

    #[test]
    fn a_map_output_is_cut_by_partition_and_read_back_in_chunks() {
        let files = ShuffleFiles::default();
        let dir = std::env::temp_dir();
        let keys = ["a", "b", "c", "d", "e", "f", "g"];
        let spec = ShuffleSpec {
            job: 9,
            partitions: 3,
            total_order: false,
        };
        let out = files.keep_map_output(spec, &run_of(&keys), &dir).unwrap();
        assert_eq!(out.segments.len(), 3);
        let mut seen = Vec::new();
        for (s, &len) in out.segments.iter().enumerate() {
            let mut bytes = Vec::new();
            while (bytes.len() as u64) < len {
                let (total, chunk) = files
                    .read(9, out.file, s as u32, bytes.len() as u64, 3, None)
                    .unwrap();
                assert_eq!(total, len);
                bytes.extend_from_slice(&chunk);
            }
            for pair in pairs(&bytes) {
                let (k, _) = pair.unwrap();
                assert_eq!(partition_of(k, 3), s as u32);
                seen.push(String::from_utf8(k.to_vec()).unwrap());
            }
        }
        seen.sort();
        assert_eq!(seen, keys);
        assert!(files.read(9, out.file, 3, 0, 0, None).is_err());
        assert!(
            files.read(8, out.file, 0, 0, 0, None).is_err(),
            "another job's"
        );
        assert_eq!(files.drop_job(9, true, false), 1);
        assert!(files.read(9, out.file, 0, 0, 0, None).is_err());
        // Once dropped whole, the job keeps nothing more here.
        assert_eq!(files.drop_job(9, false, true), 0);
        assert!(files.keep_map_output(spec, &run_of(&keys), &dir).is_err());
    }

    #[test]
    fn a_sorted_map_output_is_read_by_key_range_across_its_index() {
        let files = ShuffleFiles::default();
        let dir = std::env::temp_dir();
        // 20,000 keys of ~16 bytes: several index strides.
        let keys: Vec<String> = (0..20_000).map(|i| format!("key-{i:08}")).collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let spec = ShuffleSpec {
            job: 4,
            partitions: 3,
            total_order: true,
        };
        let out = files.keep_map_output(spec, &run_of(&refs), &dir).unwrap();
        assert_eq!(out.segments.len(), 1);
        assert!(out.samples.len() <= MAX_SAMPLES && out.samples.len() > 30);
        assert!(
            out.samples.windows(2).all(|w| w[0] < w[1]),
            "samples in order"
        );
        let read_range = |lo: Option<&str>, hi: Option<&str>| {
            let range = KeyRange {
                lo: lo.map(|k| k.as_bytes().to_vec()),
                hi: hi.map(|k| k.as_bytes().to_vec()),
            };
            let mut bytes = Vec::new();
            loop {
                let at = bytes.len() as u64;
                let (total, chunk) = files.read(4, out.file, 0, at, 5000, Some(&range)).unwrap();
                bytes.extend_from_slice(&chunk);
                if bytes.len() as u64 >= total {
                    break;
                }
            }
            pairs(&bytes)
                .map(|p| String::from_utf8(p.unwrap().0.to_vec()).unwrap())
                .collect::<Vec<_>>()
        };
        let got = read_range(Some("key-00012345"), Some("key-00015000"));
        assert_eq!(got, keys[12_345..15_000]);
        // Bounds between keys, and open ends.
        assert_eq!(read_range(None, Some("key-00000002x")), keys[..3]);
        assert_eq!(read_range(Some("key-00019998x"), None), keys[19_999..]);
        assert!(read_range(Some("z"), None).is_empty());
        let (a, b, c) = (
            read_range(None, Some("key-00007000")),
            read_range(Some("key-00007000"), Some("key-00013000")),
            read_range(Some("key-00013000"), None),
        );
        assert_eq!([a, b, c].concat(), keys, "adjacent ranges cover it once");
    }
}
