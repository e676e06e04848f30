//! The shuffle of a keyed job: map outputs kept on the workers that made
//! them, reduce partitions run on workers that fetch those outputs from
//! each other, and partition outputs fetched by the client from the
//! workers. The manager only says who holds what (Dean & Ghemawat 2004,
//! §3.1: "the master … forwards [the map outputs' locations] to reduce
//! workers"); no shuffled byte passes through it.
//!
//! ```text
//! MAP_BATCH, appended after args (args then always present):
//!   u64  job id       the manager's job, which the outputs belong to
//!   u32  partitions   R: the batch's pairs are split into R segments
//! BATCH_RESULT, appended after the busy time:
//!   u64  file         the map output's id on this worker
//!   u32  R, then R × u64  each partition's segment length in bytes
//! FETCH (0x18), any authenticated peer → worker; answered by FETCHED (0x98):
//!   u64 job, u64 file, u32 segment, u64 offset, u32 max (0: as many as fit)
//! REDUCE (0x19), manager → worker; answered by REDUCED (0x99):
//!   hash[32], u64 job, u32 partition, args,
//!   u32 n sources, n × (str worker address ("" = the receiver itself),
//!                       u32 m, m × (u64 file, u64 segment length))
//! REDUCED:
//!   u32 partition, u8 outcome (0 done, 1 a source unreachable, 2 failed),
//!   str message, str unreachable address, u64 file, u64 binary length,
//!   u64 text length, str text error, u64 bytes fetched, u64 spills,
//!   u64 bytes spilled, bytes preview
//! DROP_SHUFFLE (0x1A), manager → worker; answered by DROPPED (0x9A, empty):
//!   u64 job, u8 what (bit 0: map outputs, bit 1: partition outputs)
//! PARTS_REQUEST (0x1B), client → manager; answered by PARTS (0x9B):
//!   u64 job
//! PARTS:
//!   u32 n, n × (str worker address, u64 file, u64 binary length,
//!               u64 text length, str text error)
//! ```

use super::args::JobArgs;
use super::wire::{put_bytes, put_str, put_u32, put_u64, Cursor};
use crate::proto::error::ProtoError;
use crate::proto::opcode::Opcode;

/// Most reduce partitions a job may have: each map output is cut into
/// this many segments, and a reducer fetches one from every map output.
pub const MAX_PARTITIONS: u32 = 4096;

/// Segment 0 of a partition output: its pairs, framed, sorted by key.
pub const BINARY_SEGMENT: u32 = 0;
/// Segment 1 of a partition output: its text form.
pub const TEXT_SEGMENT: u32 = 1;

/// What a `MAP_BATCH` of a shuffled job adds: keep the output here, cut
/// into `partitions` segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShuffleSpec {
    pub job: u64,
    pub partitions: u32,
    /// Keep the batch's pairs as one sorted segment, with samples of its
    /// keys, to be cut by key ranges at reduce time (`--total-order`;
    /// appended `u8` 1, absent: 0, cut by hash now).
    pub total_order: bool,
}

impl ShuffleSpec {
    pub fn decode(c: &mut Cursor<'_>) -> Result<ShuffleSpec, ProtoError> {
        let job = c.u64("shuffle job")?;
        let partitions = c.u32("partitions")?;
        if partitions == 0 || partitions > MAX_PARTITIONS {
            return Err(c.malformed("partitions: 1 to 4096"));
        }
        let total_order = !c.rest().is_empty() && c.u8("total order")? != 0;
        Ok(ShuffleSpec {
            job,
            partitions,
            total_order,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.job);
        put_u32(out, self.partitions);
        if self.total_order {
            out.push(1);
        }
    }
}

/// Most sampled keys one map output carries (evenly spaced in its sorted
/// pairs): what the manager's range partitioner is cut from.
pub const MAX_SAMPLES: usize = 64;
/// Most bytes of one sampled key; a longer key is sampled cut (a cut key
/// still orders correctly as a boundary).
pub const MAX_SAMPLE_KEY: usize = 256;

/// A key range `[lo, hi)` of a sorted map output (`--total-order`); a
/// missing bound is open.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyRange {
    pub lo: Option<Vec<u8>>,
    pub hi: Option<Vec<u8>>,
}

impl KeyRange {
    /// Whether `key` is in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.lo.as_deref().is_none_or(|lo| key >= lo)
            && self.hi.as_deref().is_none_or(|hi| key < hi)
    }

    fn decode(c: &mut Cursor<'_>) -> Result<KeyRange, ProtoError> {
        let flags = c.u8("range flags")?;
        let lo = (flags & 1 != 0).then(|| c.bytes("range low")).transpose()?;
        let hi = (flags & 2 != 0)
            .then(|| c.bytes("range high"))
            .transpose()?;
        Ok(KeyRange {
            lo: lo.map(<[u8]>::to_vec),
            hi: hi.map(<[u8]>::to_vec),
        })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.push(u8::from(self.lo.is_some()) | (u8::from(self.hi.is_some()) << 1));
        if let Some(lo) = &self.lo {
            put_bytes(out, lo);
        }
        if let Some(hi) = &self.hi {
            put_bytes(out, hi);
        }
    }
}

/// Where a batch's map output stays: a file on the worker that mapped it,
/// and the length of each partition's segment in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapOutput {
    pub file: u64,
    pub segments: Vec<u64>,
    /// A sorted output's sampled keys, in order (`--total-order` only;
    /// appended `u32 n, n × bytes`, absent: none).
    pub samples: Vec<Vec<u8>>,
}

impl MapOutput {
    pub fn decode(c: &mut Cursor<'_>) -> Result<MapOutput, ProtoError> {
        let file = c.u64("map output")?;
        let n = c.count(8, "segment count")?;
        let segments = (0..n)
            .map(|_| c.u64("segment length"))
            .collect::<Result<_, _>>()?;
        let mut samples = Vec::new();
        if !c.rest().is_empty() {
            let n = c.count(4, "sample count")?;
            if n > MAX_SAMPLES {
                return Err(c.malformed("samples: at most 64"));
            }
            for _ in 0..n {
                samples.push(c.bytes("sample")?.to_vec());
            }
        }
        Ok(MapOutput {
            file,
            segments,
            samples,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.file);
        put_u32(out, self.segments.len() as u32);
        for s in &self.segments {
            put_u64(out, *s);
        }
        if !self.samples.is_empty() {
            put_u32(out, self.samples.len() as u32);
            for k in &self.samples {
                put_bytes(out, k);
            }
        }
    }
}

/// `FETCH`: a chunk of one segment of a file a worker keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    /// The job the file belongs to: a file of another job is not found.
    pub job: u64,
    pub file: u64,
    pub segment: u32,
    pub offset: u64,
    /// Most bytes the chunk may hold; 0: as many as fit a frame.
    pub max: u32,
    /// Of a sorted map output, only the pairs in this key range (then the
    /// segment, offset and total are the range's; appended, absent: the
    /// whole segment).
    pub range: Option<KeyRange>,
}

impl Fetch {
    pub fn decode(payload: &[u8]) -> Result<Fetch, ProtoError> {
        let mut c = Cursor::new(Opcode::Fetch.as_u8(), payload);
        Ok(Fetch {
            job: c.u64("job")?,
            file: c.u64("file")?,
            segment: c.u32("segment")?,
            offset: c.u64("offset")?,
            max: c.u32("max")?,
            range: if c.rest().is_empty() {
                None
            } else {
                Some(KeyRange::decode(&mut c)?)
            },
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.job);
        put_u64(out, self.file);
        put_u32(out, self.segment);
        put_u64(out, self.offset);
        put_u32(out, self.max);
        if let Some(r) = &self.range {
            r.encode(out);
        }
    }
}

/// The map outputs one worker holds for a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The worker's address as the manager reaches it; empty: the worker
    /// that receives the `REDUCE` itself.
    pub addr: String,
    /// (file, length of the partition's segment in it).
    pub files: Vec<(u64, u64)>,
}

/// `REDUCE`: reduce partition `partition` of job `job` from `sources`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reduce {
    pub hash: [u8; 32],
    pub job: u64,
    pub partition: u32,
    pub args: JobArgs,
    pub sources: Vec<Source>,
    /// `--total-order`: the partition's key range, fetched from segment 0
    /// of each sorted map output (`None`: segment `partition`).
    pub range: Option<KeyRange>,
    /// `--output-dir`: write the partition to `DIR/part-NNNNN` (empty:
    /// keep it here for the client).
    pub output_dir: String,
    /// The form of that file: 0 binary, 1 text.
    pub output_form: u8,
}

impl Reduce {
    pub fn decode(payload: &[u8]) -> Result<Reduce, ProtoError> {
        let mut c = Cursor::new(Opcode::Reduce.as_u8(), payload);
        let hash = c.hash("hash")?;
        let job = c.u64("job")?;
        let partition = c.u32("partition")?;
        let args = JobArgs::decode(&mut c)?;
        let n = c.count(8, "source count")?;
        let mut sources = Vec::with_capacity(n);
        for _ in 0..n {
            let addr = c.str("source address")?;
            let m = c.count(16, "file count")?;
            let mut files = Vec::with_capacity(m);
            for _ in 0..m {
                files.push((c.u64("file")?, c.u64("segment length")?));
            }
            sources.push(Source { addr, files });
        }
        let range = match c.u8("mode")? {
            0 => None,
            1 => Some(KeyRange::decode(&mut c)?),
            _ => return Err(c.malformed("mode: 0 (hash) or 1 (range)")),
        };
        Ok(Reduce {
            hash,
            job,
            partition,
            args,
            sources,
            range,
            output_dir: c.str("output dir")?,
            output_form: c.u8("output form")?,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.hash);
        put_u64(out, self.job);
        put_u32(out, self.partition);
        self.args.encode(out);
        put_u32(out, self.sources.len() as u32);
        for s in &self.sources {
            put_str(out, &s.addr);
            put_u32(out, s.files.len() as u32);
            for (file, len) in &s.files {
                put_u64(out, *file);
                put_u64(out, *len);
            }
        }
        match &self.range {
            None => out.push(0),
            Some(r) => {
                out.push(1);
                r.encode(out);
            }
        }
        put_str(out, &self.output_dir);
        out.push(self.output_form);
    }
}

/// How a `REDUCE` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOutcome {
    Done = 0,
    /// A source could not be read: its map outputs must be made again.
    Unreachable = 1,
    /// The job's code or this worker failed (see the message).
    Failed = 2,
}

/// `REDUCED`: a partition's reduce ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reduced {
    pub partition: u32,
    pub outcome: ReduceOutcome,
    pub message: String,
    /// The source that could not be read (for [`ReduceOutcome::Unreachable`]).
    pub unreachable: String,
    /// The partition output's file on this worker: segment
    /// [`BINARY_SEGMENT`] and [`TEXT_SEGMENT`].
    pub file: u64,
    pub binary_len: u64,
    pub text_len: u64,
    /// Why the text form could not be made (empty: it was).
    pub text_error: String,
    pub fetched: u64,
    pub spills: u64,
    pub spilled_bytes: u64,
    /// The output's first bytes.
    pub preview: Vec<u8>,
    /// `--output-dir`: the part file it wrote (empty: kept here).
    pub path: String,
}

impl Reduced {
    /// A reduce that ended without an output.
    pub fn failed(partition: u32, outcome: ReduceOutcome, message: String) -> Reduced {
        Reduced {
            partition,
            outcome,
            message,
            unreachable: String::new(),
            file: 0,
            binary_len: 0,
            text_len: 0,
            text_error: String::new(),
            fetched: 0,
            spills: 0,
            spilled_bytes: 0,
            preview: Vec::new(),
            path: String::new(),
        }
    }

    pub fn decode(payload: &[u8]) -> Result<Reduced, ProtoError> {
        let mut c = Cursor::new(Opcode::Reduced.as_u8(), payload);
        let partition = c.u32("partition")?;
        let outcome = match c.u8("outcome")? {
            0 => ReduceOutcome::Done,
            1 => ReduceOutcome::Unreachable,
            2 => ReduceOutcome::Failed,
            _ => return Err(c.malformed("outcome: 0, 1 or 2")),
        };
        Ok(Reduced {
            partition,
            outcome,
            message: c.str("message")?,
            unreachable: c.str("unreachable")?,
            file: c.u64("file")?,
            binary_len: c.u64("binary length")?,
            text_len: c.u64("text length")?,
            text_error: c.str("text error")?,
            fetched: c.u64("fetched")?,
            spills: c.u64("spills")?,
            spilled_bytes: c.u64("spilled bytes")?,
            preview: c.bytes("preview")?.to_vec(),
            path: c.str("path")?,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        put_u32(out, self.partition);
        out.push(self.outcome as u8);
        put_str(out, &self.message);
        put_str(out, &self.unreachable);
        put_u64(out, self.file);
        put_u64(out, self.binary_len);
        put_u64(out, self.text_len);
        put_str(out, &self.text_error);
        put_u64(out, self.fetched);
        put_u64(out, self.spills);
        put_u64(out, self.spilled_bytes);
        put_bytes(out, &self.preview);
        put_str(out, &self.path);
    }
}

/// `DROP_SHUFFLE`'s bits: what of a job's files a worker removes.
pub const DROP_MAP_OUTPUTS: u8 = 1;
pub const DROP_PARTITION_OUTPUTS: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropShuffle {
    pub job: u64,
    pub what: u8,
}

impl DropShuffle {
    pub fn decode(payload: &[u8]) -> Result<DropShuffle, ProtoError> {
        let mut c = Cursor::new(Opcode::DropShuffle.as_u8(), payload);
        Ok(DropShuffle {
            job: c.u64("job")?,
            what: c.u8("what")?,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.job);
        out.push(self.what);
    }
}

/// One partition of an ended job's output, where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub addr: String,
    pub file: u64,
    pub binary_len: u64,
    pub text_len: u64,
    pub text_error: String,
    /// `--output-dir`: the part file its reducer wrote (then there is
    /// nothing to fetch).
    pub path: String,
}

/// `PARTS`: an ended job's partitions, in partition order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Parts {
    pub parts: Vec<Part>,
}

impl Parts {
    pub fn decode(payload: &[u8]) -> Result<Parts, ProtoError> {
        let mut c = Cursor::new(Opcode::Parts.as_u8(), payload);
        let n = c.count(30, "part count")?;
        let mut parts = Vec::with_capacity(n);
        for _ in 0..n {
            parts.push(Part {
                addr: c.str("address")?,
                file: c.u64("file")?,
                binary_len: c.u64("binary length")?,
                text_len: c.u64("text length")?,
                text_error: c.str("text error")?,
                path: c.str("path")?,
            });
        }
        Ok(Parts { parts })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        put_u32(out, self.parts.len() as u32);
        for p in &self.parts {
            put_str(out, &p.addr);
            put_u64(out, p.file);
            put_u64(out, p.binary_len);
            put_u64(out, p.text_len);
            put_str(out, &p.text_error);
            put_str(out, &p.path);
        }
    }
}

/// A partition's state in a job's summary.
pub const PART_WAITING: u8 = 0;
pub const PART_RUNNING: u8 = 1;
pub const PART_DONE: u8 = 2;

/// One partition in a job's summary (`JOB_STATS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartView {
    /// [`PART_WAITING`], [`PART_RUNNING`] or [`PART_DONE`].
    pub state: u8,
    /// The worker reducing it or holding its output ("" while waiting).
    pub worker: String,
    /// Bytes fetched for it (once done).
    pub fetched: u64,
    /// Bytes of its output (once done).
    pub bytes: u64,
    /// Its reduces that failed.
    pub failures: u32,
}

impl PartView {
    /// Its state in words: `waiting`, `reducing` or `done`.
    pub fn state_name(&self) -> &'static str {
        match self.state {
            PART_DONE => "done",
            PART_RUNNING => "reducing",
            _ => "waiting",
        }
    }
}

/// A keyed job's shuffle in its summary (appended to `JOB_STATS` and
/// `JOBS_LIST` in 0.4; a job without one has 0 partitions).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShuffleView {
    pub partitions: u32,
    pub done: u32,
    /// Bytes the done partitions fetched from map outputs.
    pub shuffled: u64,
    /// Map outputs made again after their worker was lost.
    pub remapped: u64,
    /// Each partition (`JOB_STATS` only; empty in `JOBS_LIST`).
    pub parts: Vec<PartView>,
}

impl ShuffleView {
    pub fn read_counts(&mut self, c: &mut Cursor<'_>) -> Result<(), ProtoError> {
        self.partitions = c.u32("partitions")?;
        self.done = c.u32("partitions done")?;
        self.shuffled = c.u64("shuffled")?;
        self.remapped = c.u64("remapped")?;
        Ok(())
    }

    pub fn write_counts(&self, out: &mut Vec<u8>) {
        put_u32(out, self.partitions);
        put_u32(out, self.done);
        put_u64(out, self.shuffled);
        put_u64(out, self.remapped);
    }

    pub fn read_parts(&mut self, c: &mut Cursor<'_>) -> Result<(), ProtoError> {
        let n = c.count(19, "partition count")?;
        self.parts = (0..n)
            .map(|_| {
                Ok(PartView {
                    state: c.u8("partition state")?,
                    worker: c.str("partition worker")?,
                    fetched: c.u64("partition fetched")?,
                    bytes: c.u64("partition bytes")?,
                    failures: c.u32("partition failures")?,
                })
            })
            .collect::<Result<_, ProtoError>>()?;
        Ok(())
    }

    pub fn write_parts(&self, out: &mut Vec<u8>) {
        put_u32(out, self.parts.len() as u32);
        for p in &self.parts {
            out.push(p.state);
            put_str(out, &p.worker);
            put_u64(out, p.fetched);
            put_u64(out, p.bytes);
            put_u32(out, p.failures);
        }
    }
}

/// The partition of a key: CRC-32 of its bytes, modulo `partitions`. Every
/// worker computes the same partition for a key, whatever its platform.
pub fn partition_of(key: &[u8], partitions: u32) -> u32 {
    crc32fast::hash(key) % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reduce_and_its_answer_travel_whole() {
        let r = Reduce {
            hash: [7; 32],
            job: 3,
            partition: 1,
            args: JobArgs::new(&["x"]).unwrap(),
            sources: vec![
                Source {
                    addr: String::new(),
                    files: vec![(1, 10), (2, 0)],
                },
                Source {
                    addr: "10.0.0.2:7001".into(),
                    files: vec![(9, 99)],
                },
            ],
            range: Some(KeyRange {
                lo: None,
                hi: Some(b"m".to_vec()),
            }),
            output_dir: "/shared/out".into(),
            output_form: 1,
        };
        let mut out = Vec::new();
        r.encode(&mut out);
        assert_eq!(Reduce::decode(&out).unwrap(), r);
        let mut d = Reduced::failed(4, ReduceOutcome::Unreachable, "gone".into());
        d.unreachable = "10.0.0.2:7001".into();
        let mut out = Vec::new();
        d.encode(&mut out);
        assert_eq!(Reduced::decode(&out).unwrap(), d);
    }

    #[test]
    fn a_lying_source_count_is_malformed_before_allocating() {
        let mut out = Vec::new();
        out.extend_from_slice(&[0; 32]);
        put_u64(&mut out, 1);
        put_u32(&mut out, 0);
        JobArgs::default().encode(&mut out);
        put_u32(&mut out, u32::MAX);
        assert!(Reduce::decode(&out).is_err());
    }

    #[test]
    fn partitions_spread_keys_and_agree() {
        let mut seen = [0u32; 7];
        for i in 0..7000u32 {
            seen[partition_of(&i.to_le_bytes(), 7) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 700), "{seen:?}");
        assert_eq!(partition_of(b"the", 1), 0);
        assert_eq!(partition_of(b"the", 3), partition_of(b"the", 3));
    }
}
