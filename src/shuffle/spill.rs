//! A reduce with bounded memory: runs (each sorted by key, each key once)
//! are held in memory up to a budget; past it, the held runs are merged,
//! their equal keys combined by the job, and the result written to a
//! spill file as one sorted run. At the end the spill files and the runs
//! still held are merged and combined the same way into the output. So a
//! reduce whose keys do not fit in memory completes, as Hadoop's reduce
//! side spills and merges (Dean & Ghemawat 2004, §3.1: "if the amount of
//! intermediate data is too large to fit in memory, an external sort is
//! used").
//!
//! Combining goes through the job in chunks of about [`CHUNK_BYTES`] of
//! merged pairs, cut only between keys, so the job's table holds at most
//! a chunk's keys at once.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::merge::{merge, merge_slices, PairSource, Reader, Slice};
use crate::job::run::compare_keys;
use crate::job::run::push_pair;
use crate::plugin::CallError;

/// Bytes of merged pairs handed to the job at once to combine.
pub const CHUNK_BYTES: usize = 1 << 20;

/// Most spill files merged at once: past it, they are merged in passes
/// (groups of this many into one file each), so a reduce never opens more
/// than this many files at once.
pub const MAX_FAN_IN: usize = 64;

/// Combines the values of equal keys: `run` is sorted by key, with equal
/// keys next to each other; the result has each key once, sorted. A
/// job's `reduce`, through its reducer entries.
pub trait Combine {
    fn combine(&mut self, run: &[u8]) -> Result<Vec<u8>, CallError>;
}

/// Why a reduce failed.
#[derive(Debug)]
pub enum ReduceError {
    /// A spill file could not be written or read back.
    Io(io::Error),
    /// The job could not combine a chunk (its error or panic).
    Job(CallError),
    /// The job was cancelled while its output was merged.
    Cancelled,
}

impl std::fmt::Display for ReduceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReduceError::Io(e) => write!(f, "spill: {e}"),
            ReduceError::Job(e) => write!(f, "{e}"),
            ReduceError::Cancelled => f.write_str("cancelled"),
        }
    }
}

impl From<io::Error> for ReduceError {
    fn from(e: io::Error) -> ReduceError {
        ReduceError::Io(e)
    }
}

/// What spilling cost, for reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpillStats {
    /// Spill files written.
    pub spills: u64,
    /// Bytes written to them.
    pub bytes: u64,
}

/// The directory a reduce spills to: made on the first spill, removed
/// with everything in it when the reduce is dropped (finished, failed or
/// cancelled).
struct SpillDir {
    path: PathBuf,
}

impl SpillDir {
    /// A new directory under `parent`, `redmap-spill-{pid}-{label}-{n}`
    /// for the first `n` that names none yet: never one another process
    /// made (a directory sharing `/tmp` across containers may hold one).
    fn create(parent: &Path, label: &str) -> io::Result<SpillDir> {
        let pid = std::process::id();
        for n in 0u32..1000 {
            let path = parent.join(format!("redmap-spill-{pid}-{label}-{n}"));
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(SpillDir { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other("no free name for a spill directory"))
    }
}

impl Drop for SpillDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A reduce within a memory budget (see the module's notes).
pub struct SpillingReducer<C: Combine> {
    combine: C,
    budget: usize,
    /// Where spill directories are made (one per reduce).
    parent: PathBuf,
    /// A name for the spill directory (the job's id).
    label: String,
    held: Vec<Vec<u8>>,
    held_bytes: usize,
    dir: Option<SpillDir>,
    spills: Vec<PathBuf>,
    stats: SpillStats,
    /// [`MAX_FAN_IN`] (smaller in tests).
    fan_in: usize,
}

impl<C: Combine> SpillingReducer<C> {
    /// A reduce that holds at most `budget` bytes of runs, and spills into
    /// a directory of its own under `parent`, named after `label`.
    pub fn new(combine: C, budget: usize, parent: &Path, label: &str) -> SpillingReducer<C> {
        SpillingReducer {
            combine,
            budget,
            parent: parent.to_owned(),
            label: label.to_owned(),
            held: Vec::new(),
            held_bytes: 0,
            dir: None,
            spills: Vec::new(),
            stats: SpillStats::default(),
            fan_in: MAX_FAN_IN,
        }
    }

    pub fn stats(&self) -> SpillStats {
        self.stats
    }

    /// Takes one run (sorted by key, each key once); spills what is held
    /// if the budget is passed.
    pub fn add(&mut self, run: Vec<u8>) -> Result<(), ReduceError> {
        self.held_bytes += run.len();
        self.held.push(run);
        if self.held_bytes > self.budget {
            // Even one run over the budget goes to disk.
            self.spill()?;
        }
        Ok(())
    }

    /// A new spill file (the directory made on the first), named after
    /// the spills so far.
    fn new_spill_file(&mut self) -> Result<(PathBuf, BufWriter<File>), ReduceError> {
        if self.dir.is_none() {
            self.dir = Some(SpillDir::create(&self.parent, &self.label)?);
        }
        let dir = self
            .dir
            .as_ref()
            .map(|d| d.path.as_path())
            .unwrap_or(Path::new("."));
        let path = dir.join(format!("spill-{}", self.stats.spills));
        let file = File::create(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("spill file {}: {e}", path.display())))?;
        Ok((path, BufWriter::new(file)))
    }

    fn spill(&mut self) -> Result<(), ReduceError> {
        let (path, mut file) = self.new_spill_file()?;
        let held = std::mem::take(&mut self.held);
        self.held_bytes = 0;
        let runs: Vec<&[u8]> = held.iter().map(Vec::as_slice).collect();
        let mut written = 0u64;
        combine_merged(
            |pair| merge_slices(&runs, pair),
            &mut self.combine,
            |run| {
                written += run.len() as u64;
                file.write_all(run)
            },
        )?;
        file.flush()?;
        self.spills.push(path);
        self.stats.spills += 1;
        self.stats.bytes += written;
        Ok(())
    }

    /// The output: every run taken, merged and combined, one sorted run.
    pub fn finish(self) -> Result<Vec<u8>, ReduceError> {
        let mut out = Vec::new();
        self.finish_to(&AtomicBool::new(false), |run| {
            out.extend_from_slice(run);
            Ok(())
        })?;
        Ok(out)
    }

    /// [`SpillingReducer::finish`], handing the output to `sink` in pieces
    /// (each a sorted run of whole pairs, in key order) instead of holding
    /// it whole. Stops with [`ReduceError::Cancelled`] once `stop` is set
    /// (read before each piece).
    pub fn finish_to(
        mut self,
        stop: &AtomicBool,
        mut sink: impl FnMut(&[u8]) -> io::Result<()>,
    ) -> Result<(), ReduceError> {
        if self.spills.is_empty() && self.held.len() <= 1 {
            // One run, already combined: nothing to merge.
            let run = self.held.pop().unwrap_or_default();
            if !run.is_empty() {
                sink(&run)?;
            }
            return Ok(());
        }
        // One file is kept for the held runs' place among the sources.
        while self.spills.len() >= self.fan_in.max(2) {
            if stop.load(Ordering::SeqCst) {
                return Err(ReduceError::Cancelled);
            }
            self.merge_pass()?;
        }
        let files = open_spills(&self.spills)?;
        let held = std::mem::take(&mut self.held);
        // Nothing spilled: every run is in memory, merged without copying
        // a pair (`merge_slices`); else with the spill files (`merge`).
        let in_memory: Vec<&[u8]> = held.iter().map(Vec::as_slice).collect();
        let sources: Vec<Source<'_>> = files
            .into_iter()
            .map(Source::File)
            .chain(held.iter().map(|r| Source::Memory(Slice(r))))
            .collect();
        let spilled = !self.spills.is_empty();
        combine_merged(
            |pair| match spilled {
                true => merge(sources, pair),
                false => merge_slices(&in_memory, pair),
            },
            &mut self.combine,
            |run| {
                if stop.load(Ordering::SeqCst) {
                    return Err(io::Error::new(io::ErrorKind::Interrupted, "cancelled"));
                }
                sink(run)
            },
        )
        .map_err(|e| match e {
            ReduceError::Io(e) if e.kind() == io::ErrorKind::Interrupted => ReduceError::Cancelled,
            e => e,
        })
    }
}

impl<C: Combine> SpillingReducer<C> {
    /// Merges the oldest [`MAX_FAN_IN`] spill files into one (removing
    /// them), the pass of a multi-pass merge.
    fn merge_pass(&mut self) -> Result<(), ReduceError> {
        let group: Vec<PathBuf> = self.spills.drain(..self.fan_in.max(2)).collect();
        let readers = open_spills(&group)?;
        let (path, mut file) = self.new_spill_file()?;
        combine_merged(
            |pair| merge(readers, pair),
            &mut self.combine,
            |run| file.write_all(run),
        )?;
        file.flush()?;
        for p in &group {
            let _ = std::fs::remove_file(p);
        }
        self.spills.push(path);
        self.stats.spills += 1;
        Ok(())
    }
}

/// Readers of spill files, one pair at a time.
fn open_spills(paths: &[PathBuf]) -> io::Result<Vec<Reader<BufReader<File>>>> {
    paths
        .iter()
        .map(|p| File::open(p).map(|f| Reader::new(BufReader::new(f))))
        .collect()
}

/// A spill file or a held run, merged together.
enum Source<'a> {
    File(Reader<BufReader<File>>),
    Memory(Slice<'a>),
}

impl PairSource for Source<'_> {
    fn next_pair(&mut self) -> io::Result<Option<(&[u8], &[u8])>> {
        match self {
            Source::File(r) => r.next_pair(),
            Source::Memory(s) => s.next_pair(),
        }
    }
}

/// Merges `sources` and combines equal keys through the job in chunks of
/// about [`CHUNK_BYTES`], cut only where the key changes; each combined
/// chunk (a sorted run, each key once) goes to `sink`, in key order. A
/// chunk whose keys are all different (each source run is combined
/// already) goes as it is, without a call into the job: a sort's reduce,
/// whose keys meet once, never calls it.
fn combine_merged<C: Combine>(
    merge: impl FnOnce(&mut dyn FnMut(&[u8], &[u8]) -> io::Result<()>) -> io::Result<()>,
    combine: &mut C,
    mut sink: impl FnMut(&[u8]) -> io::Result<()>,
) -> Result<(), ReduceError> {
    let mut chunk = Vec::new();
    let mut last_key: Vec<u8> = Vec::new();
    // The chunk holds a key twice (so it needs the job's reduce).
    let mut repeats = false;
    let mut failed = None;
    let mut flush = |chunk: &mut Vec<u8>,
                     repeats: &mut bool,
                     failed: &mut Option<CallError>|
     -> io::Result<()> {
        if chunk.is_empty() || failed.is_some() {
            return Ok(());
        }
        if !std::mem::take(repeats) {
            sink(chunk)?;
        } else {
            match combine.combine(chunk) {
                Ok(run) => sink(&run)?,
                Err(e) => *failed = Some(e),
            }
        }
        chunk.clear();
        Ok(())
    };
    let mut first = true;
    merge(&mut |key, value| {
        let same = !first && compare_keys(key, &last_key).is_eq();
        if chunk.len() >= CHUNK_BYTES && !same {
            flush(&mut chunk, &mut repeats, &mut failed)?;
        }
        if failed.is_none() {
            repeats |= same;
            push_pair(&mut chunk, key, value);
            last_key.clear();
            last_key.extend_from_slice(key);
            first = false;
        }
        Ok(())
    })?;
    flush(&mut chunk, &mut repeats, &mut failed)?;
    match failed {
        Some(e) => Err(ReduceError::Job(e)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::run::pairs;

    /// Keys are any bytes, values 8-byte big-endian counts: the combine sums.
    struct Sum {
        calls: usize,
        fail_on: Option<&'static [u8]>,
    }

    impl Combine for Sum {
        fn combine(&mut self, run: &[u8]) -> Result<Vec<u8>, CallError> {
            self.calls += 1;
            let mut out: Vec<(Vec<u8>, u64)> = Vec::new();
            for pair in pairs(run) {
                let (k, v) = pair.expect("a run");
                if Some(k) == self.fail_on {
                    return Err(CallError {
                        panicked: true,
                        message: "panic: no".into(),
                    });
                }
                let v = u64::from_be_bytes(v.try_into().unwrap());
                match out.last_mut() {
                    Some((last, n)) if last == k => *n += v,
                    _ => out.push((k.to_vec(), v)),
                }
            }
            let mut run = Vec::new();
            for (k, n) in out {
                push_pair(&mut run, &k, &n.to_be_bytes());
            }
            Ok(run)
        }
    }

    fn run_of(keys: impl Iterator<Item = u32>) -> Vec<u8> {
        let mut run = Vec::new();
        let mut keys: Vec<u32> = keys.collect();
        keys.sort_unstable();
        keys.dedup();
        for k in keys {
            push_pair(&mut run, &k.to_be_bytes(), &1u64.to_be_bytes());
        }
        run
    }

    fn counts(run: &[u8]) -> Vec<(u32, u64)> {
        pairs(run)
            .map(|p| {
                let (k, v) = p.unwrap();
                (
                    u32::from_be_bytes(k.try_into().unwrap()),
                    u64::from_be_bytes(v.try_into().unwrap()),
                )
            })
            .collect()
    }

    fn reduce(budget: usize, dir: &Path) -> (Vec<(u32, u64)>, SpillStats) {
        reduce_with(budget, MAX_FAN_IN, dir)
    }

    fn reduce_with(budget: usize, fan_in: usize, dir: &Path) -> (Vec<(u32, u64)>, SpillStats) {
        let sum = Sum {
            calls: 0,
            fail_on: None,
        };
        let mut r = SpillingReducer::new(sum, budget, dir, "t");
        r.fan_in = fan_in;
        // 40 runs of 1,000 keys each, overlapping: key k is in runs
        // k/500-1 and k/500 (so most keys come twice).
        for i in 0..40u32 {
            r.add(run_of(i * 500..i * 500 + 1000)).unwrap();
        }
        let stats = r.stats();
        (counts(&r.finish().unwrap()), stats)
    }

    #[test]
    fn a_reduce_past_its_budget_spills_and_gives_what_one_in_memory_gives() {
        let dir = std::env::temp_dir().join(format!("redmap-spill-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (in_memory, none) = reduce(usize::MAX, &dir);
        assert_eq!(none, SpillStats::default());
        let (spilled, stats) = reduce(50_000, &dir);
        assert!(stats.spills >= 5, "{stats:?}");
        assert_eq!(spilled, in_memory);
        // More spill files than a merge may open (3 here): merged in
        // passes, the same again.
        let (passes, more) = reduce_with(50_000, 3, &dir);
        assert!(more.spills > 3, "{more:?}");
        assert_eq!(passes, in_memory);
        assert_eq!(in_memory.len(), 20_500);
        assert_eq!(in_memory[0], (0, 1));
        assert_eq!(in_memory[700], (700, 2));
        // Its files went with it.
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "spill files left"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_reduce_dropped_unfinished_leaves_no_file_and_a_combine_error_fails_it() {
        let dir = std::env::temp_dir().join(format!("redmap-spill-drop-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sum = Sum {
            calls: 0,
            fail_on: None,
        };
        let mut r = SpillingReducer::new(sum, 10_000, &dir, "cancelled");
        for i in 0..10u32 {
            r.add(run_of(i * 1000..i * 1000 + 1000)).unwrap();
        }
        assert!(r.stats().spills > 0);
        drop(r); // a cancelled job
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "spill files left"
        );

        let key = 5u32.to_be_bytes();
        let fail_on: &'static [u8] = Box::leak(Box::new(key));
        let failing = Sum {
            calls: 0,
            fail_on: Some(fail_on),
        };
        let mut r = SpillingReducer::new(failing, 10_000, &dir, "failing");
        r.add(run_of(0..100)).unwrap();
        r.add(run_of(0..100)).unwrap();
        match r.finish() {
            Err(ReduceError::Job(e)) => assert!(e.panicked),
            other => panic!("{other:?}"),
        }
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
