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

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::job::run::{pairs, push_pair};
use crate::pipeline::cluster::{Output, OutputFile, OutputWriter};
use crate::proto::msg::shuffle::{partition_of, BINARY_SEGMENT, TEXT_SEGMENT};
use crate::proto::msg::MapOutput;
use crate::proto::{ErrorCode, ProtoError};

/// Most bytes one `FETCHED` chunk holds (4 MiB), whatever the request
/// asks: a chunk is read on the event loop.
pub const MAX_CHUNK: usize = 4 << 20;

enum Kept {
    /// A map output: one file, a segment per partition (offset, length).
    Map {
        file: OutputFile,
        segments: Vec<(u64, u64)>,
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
    /// `partitions` segments by [`partition_of`] each key, and keeps them
    /// in one file for job `job`. Each segment stays sorted.
    ///
    /// # Errors
    /// The run does not decode as pairs, or the file cannot be written.
    pub fn keep_map_output(
        &self,
        job: u64,
        partitions: u32,
        run: &[u8],
        dir: &Path,
    ) -> Result<MapOutput, String> {
        let mut parts = vec![Vec::new(); partitions.max(1) as usize];
        for pair in pairs(run) {
            let (key, value) = pair.map_err(|e| format!("the batch's pairs do not decode: {e}"))?;
            push_pair(
                &mut parts[partition_of(key, partitions) as usize],
                key,
                value,
            );
        }
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
        let id = self
            .keep(job, Kept::Map { file, segments })
            .ok_or_else(|| format!("job {job}'s shuffle was dropped here"))?;
        Ok(MapOutput {
            file: id,
            segments: lengths,
        })
    }

    /// Keeps a partition output of job `job`; returns its id, or `None`
    /// (and the files go) if the job's shuffle was dropped here.
    pub fn keep_partition(&self, job: u64, output: Output) -> Option<u64> {
        self.keep(job, Kept::Partition(output))
    }

    /// Up to `max` bytes (0: [`MAX_CHUNK`]) of segment `segment` of file
    /// `id`, from `offset`: (the segment's length, the bytes).
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
        let (file, start, len) = match (&entry.kept, segment) {
            (Kept::Map { file, segments }, s) => {
                let (start, len) = *segments
                    .get(s as usize)
                    .ok_or_else(|| missing(format!("map output {id} has no segment {s}")))?;
                (file, start, len)
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
        let bytes = file.read_at(start + offset, n).map_err(|e| {
            ProtoError::refused(
                ErrorCode::INTERNAL,
                format!("reading shuffle file {id}: {e}"),
            )
        })?;
        Ok((len, bytes))
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
        let out = files.keep_map_output(9, 3, &run_of(&keys), &dir).unwrap();
        assert_eq!(out.segments.len(), 3);
        let mut seen = Vec::new();
        for (s, &len) in out.segments.iter().enumerate() {
            let mut bytes = Vec::new();
            while (bytes.len() as u64) < len {
                let (total, chunk) = files
                    .read(9, out.file, s as u32, bytes.len() as u64, 3)
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
        assert!(files.read(9, out.file, 3, 0, 0).is_err());
        assert!(files.read(8, out.file, 0, 0, 0).is_err(), "another job's");
        assert_eq!(files.drop_job(9, true, false), 1);
        assert!(files.read(9, out.file, 0, 0, 0).is_err());
        // Once dropped whole, the job keeps nothing more here.
        assert_eq!(files.drop_job(9, false, true), 0);
        assert!(files.keep_map_output(9, 3, &run_of(&keys), &dir).is_err());
    }
}
