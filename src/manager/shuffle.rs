//! One keyed job's shuffle as the manager coordinates it (Dean & Ghemawat
//! 2004, §3.1–3.3): where each batch's map output stays, which worker
//! reduces each partition, and what a lost worker costs.
//!
//! - Each answered batch leaves one map output on the worker that mapped
//!   it: a file with one segment per partition. The manager keeps only its
//!   place and the batch's tasks (in a file of its own, [`TaskLog`], not
//!   in memory), so a lost output can be made again.
//! - Once every task is mapped, each partition is reduced on one worker,
//!   which fetches its segment of every map output straight from the
//!   workers that keep them. The manager relays no pair: its memory grows
//!   with the number of batches and partitions, never with keys or bytes.
//! - A lost worker takes its map outputs with it: their tasks are mapped
//!   again (the paper: "completed map tasks are re-executed on a failure
//!   because their output is stored on the local disk(s) of the failed
//!   machine"), and the partitions it reduced or was reducing go to
//!   another worker. Map outputs are kept until the job ends, so a lost
//!   reducer costs only its partition's reduce.
//!
//! Exactly once: a batch has one map output at a time (a second answer
//! for it is a duplicate, dropped by the ledger before it gets here), and
//! a reduce fetches the outputs listed when it was sent, each once. A
//! partition is done once, by the first reduce that ends well.
//!
//! Pure bookkeeping apart from the task log's file; tested without sockets.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use super::workers::WorkerId;
use crate::proto::msg::shuffle::{
    KeyRange, Part, PartView, ShuffleView, Source, PART_DONE, PART_RUNNING, PART_WAITING,
};

/// Most bytes of sampled keys a `--total-order` job keeps (4 MiB): enough
/// for even ranges, however many map outputs.
pub const MAX_SAMPLE_BYTES: usize = 4 << 20;
use crate::proto::msg::{MapOutput, Reduced, TaskList};

/// The tasks of a job's answered batches, appended to a file so a lost
/// map output can be made again without holding every task in memory
/// (removed with the job).
pub struct TaskLog {
    path: PathBuf,
    file: File,
    len: u64,
}

impl TaskLog {
    /// A new, empty log under the system's temporary directory.
    pub fn create(label: &str) -> io::Result<TaskLog> {
        let dir = std::env::temp_dir();
        for n in 0u32..1000 {
            let path = dir.join(format!("redmap-tasks-{}-{label}-{n}", std::process::id()));
            match File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(file) => return Ok(TaskLog { path, file, len: 0 }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other("no free name for a task log"))
    }

    /// Appends `tasks`; returns where they are.
    pub fn append(&mut self, tasks: &TaskList) -> io::Result<(u64, u64)> {
        let bytes = tasks.as_bytes();
        self.file.write_all_at(bytes, self.len)?;
        let at = (self.len, bytes.len() as u64);
        self.len += bytes.len() as u64;
        Ok(at)
    }

    /// The tasks appended at `at`.
    pub fn read(&self, (offset, len): (u64, u64)) -> io::Result<TaskList> {
        let mut bytes = vec![0; len as usize];
        self.file.read_exact_at(&mut bytes, offset)?;
        TaskList::from_bytes(bytes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
    }
}

impl Drop for TaskLog {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One batch's map output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapOut {
    pub worker: WorkerId,
    pub file: u64,
    /// Each partition's segment length in bytes.
    pub segments: Vec<u64>,
    /// Where its tasks are in the [`TaskLog`], and the first one's index
    /// in the job.
    pub tasks: (u64, u64),
    pub first_index: u64,
}

/// A partition's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartState {
    /// Not placed: waits for every map output, then a worker.
    Waiting,
    /// A `REDUCE` is out to this worker.
    Running { worker: WorkerId },
    /// Reduced: its output stays on this worker.
    Done { worker: WorkerId, reduced: Reduced },
}

/// A partition, with what its reduces cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub state: PartState,
    /// The address of the worker it was last placed on ("" if none).
    pub addr: String,
    /// Reduces of it that failed (the job's code, or its worker crashed).
    pub failures: u32,
    /// Reduces of it run again after a loss (not counting failures).
    pub reruns: u32,
    /// Its reduces that could not read a source.
    pub unreachable: u32,
}

/// Why a partition's reduce did not end well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreduced {
    /// It failed of itself: the job's code, or its worker crashed.
    Failed,
    /// A source could not be read.
    Unreachable,
    /// The worker refused it (busy, shutting down): not counted.
    Refused,
}

/// What the manager does about a lost worker or an unreachable source.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Lost {
    /// Map outputs gone: their tasks are mapped again, (tasks, first index).
    pub remap: Vec<((u64, u64), u64)>,
    /// Partitions that must be reduced again.
    pub rerun: Vec<u32>,
}

/// One job's shuffle (see the module's notes).
pub struct Shuffle {
    /// Range partitions from sampled keys (`--total-order`), not hash.
    total_order: bool,
    /// The map outputs' sampled keys (`--total-order`), at most
    /// [`MAX_SAMPLE_BYTES`]; past it, every other one is dropped.
    samples: Vec<Vec<u8>>,
    sample_bytes: usize,
    /// The R - 1 keys between partitions, fixed when the first partition
    /// is placed (every reduce of the job must cut at the same keys).
    boundaries: Option<Vec<Vec<u8>>>,
    outputs: BTreeMap<u64, MapOut>,
    next_output: u64,
    parts: Vec<Partition>,
    /// Map outputs made again after a loss.
    pub remapped: u64,
}

impl Shuffle {
    /// A shuffle into `partitions` partitions (at least 1), by hash or,
    /// with `total_order`, by sampled key ranges.
    pub fn new(partitions: u32, total_order: bool) -> Shuffle {
        let p = Partition {
            state: PartState::Waiting,
            addr: String::new(),
            failures: 0,
            reruns: 0,
            unreachable: 0,
        };
        Shuffle {
            total_order,
            samples: Vec::new(),
            sample_bytes: 0,
            boundaries: None,
            outputs: BTreeMap::new(),
            next_output: 0,
            parts: vec![p; partitions.max(1) as usize],
            remapped: 0,
        }
    }

    pub fn partitions(&self) -> u32 {
        self.parts.len() as u32
    }

    pub fn total_order(&self) -> bool {
        self.total_order
    }

    /// Partition `p`'s key range (`--total-order`), cut from the samples
    /// at their R-quantiles (TeraSort's partitioner; O'Malley 2008) the
    /// first time a range is asked for, and the same for the job's life.
    pub fn range(&mut self, p: u32) -> Option<KeyRange> {
        if !self.total_order {
            return None;
        }
        let r = self.parts.len();
        let samples = &mut self.samples;
        let cuts = self.boundaries.get_or_insert_with(|| {
            samples.sort_unstable();
            samples.dedup();
            let n = samples.len();
            let cuts = (1..r)
                .filter_map(|i| samples.get(i * n / r).cloned())
                .collect();
            // Fixed now: no sample is needed any more.
            *samples = Vec::new();
            cuts
        });
        let p = p as usize;
        if p > cuts.len() {
            // Fewer distinct samples than partitions: the last ones hold
            // nothing (an empty range, `[x, x)`).
            return Some(KeyRange {
                lo: Some(Vec::new()),
                hi: Some(Vec::new()),
            });
        }
        Some(KeyRange {
            lo: p.checked_sub(1).and_then(|i| cuts.get(i).cloned()),
            hi: cuts.get(p).cloned(),
        })
    }

    pub fn partition(&self, p: u32) -> Option<&Partition> {
        self.parts.get(p as usize)
    }

    pub fn parts(&self) -> &[Partition] {
        &self.parts
    }

    /// Map outputs kept.
    pub fn outputs(&self) -> usize {
        self.outputs.len()
    }

    /// A batch's map output arrived.
    ///
    /// # Errors
    /// Its segments are not one per partition (a confused worker): the
    /// caller treats its tasks as failed.
    pub fn map_output(
        &mut self,
        worker: WorkerId,
        out: MapOutput,
        tasks: (u64, u64),
        first_index: u64,
    ) -> Result<(), String> {
        let want = if self.total_order {
            1
        } else {
            self.parts.len()
        };
        if out.segments.len() != want {
            return Err(format!(
                "the map output has {} segments, not {want}",
                out.segments.len()
            ));
        }
        if self.total_order && self.boundaries.is_none() {
            for key in &out.samples {
                self.sample_bytes += key.len() + 24;
            }
            self.samples.extend(out.samples);
        }
        while self.sample_bytes > MAX_SAMPLE_BYTES && self.boundaries.is_none() {
            // Thin out evenly: every other sample, in arrival order.
            let mut i = 0;
            self.samples.retain(|_| {
                i += 1;
                i % 2 == 0
            });
            self.sample_bytes = self.samples.iter().map(|k| k.len() + 24).sum();
        }
        self.next_output += 1;
        self.outputs.insert(
            self.next_output,
            MapOut {
                worker,
                file: out.file,
                segments: out.segments,
                tasks,
                first_index,
            },
        );
        Ok(())
    }

    /// Partitions waiting for a worker.
    pub fn waiting(&self) -> Vec<u32> {
        (0..self.parts.len() as u32)
            .filter(|&p| self.parts[p as usize].state == PartState::Waiting)
            .collect()
    }

    /// Every partition is reduced.
    pub fn is_done(&self) -> bool {
        self.parts
            .iter()
            .all(|p| matches!(p.state, PartState::Done { .. }))
    }

    /// What partition `p`'s `REDUCE` to worker `to` fetches: every map
    /// output's segment `p`, grouped by the worker that keeps it (named by
    /// `addr`; "" for `to` itself), empty segments left out.
    pub fn sources(&self, p: u32, to: WorkerId, addr: impl Fn(WorkerId) -> String) -> Vec<Source> {
        let mut by_worker: BTreeMap<WorkerId, Vec<(u64, u64)>> = BTreeMap::new();
        let segment = if self.total_order { 0 } else { p as usize };
        for out in self.outputs.values() {
            let len = out.segments[segment];
            if len > 0 {
                by_worker
                    .entry(out.worker)
                    .or_default()
                    .push((out.file, len));
            }
        }
        by_worker
            .into_iter()
            .map(|(w, files)| Source {
                addr: if w == to { String::new() } else { addr(w) },
                files,
            })
            .collect()
    }

    /// A `REDUCE` of partition `p` went to `worker`, at `addr`.
    pub fn placed(&mut self, p: u32, worker: WorkerId, addr: String) {
        if let Some(part) = self.parts.get_mut(p as usize) {
            part.state = PartState::Running { worker };
            part.addr = addr;
        }
    }

    /// What a job's summary shows of it.
    pub fn view(&self) -> ShuffleView {
        let parts: Vec<PartView> = self
            .parts
            .iter()
            .map(|p| {
                let (state, fetched, bytes) = match &p.state {
                    PartState::Waiting => (PART_WAITING, 0, 0),
                    PartState::Running { .. } => (PART_RUNNING, 0, 0),
                    PartState::Done { reduced, .. } => {
                        (PART_DONE, reduced.fetched, reduced.binary_len)
                    }
                };
                PartView {
                    state,
                    worker: if state == PART_WAITING {
                        String::new()
                    } else {
                        p.addr.clone()
                    },
                    fetched,
                    bytes,
                    failures: p.failures,
                }
            })
            .collect();
        ShuffleView {
            partitions: self.partitions(),
            done: parts.iter().filter(|p| p.state == PART_DONE).count() as u32,
            shuffled: parts.iter().map(|p| p.fetched).sum(),
            remapped: self.remapped,
            parts,
        }
    }

    /// Partition `p`'s reduce on `worker` ended well. A partition done
    /// already, or placed elsewhere since, ignores it (a duplicate): false.
    pub fn reduced(&mut self, p: u32, worker: WorkerId, reduced: Reduced) -> bool {
        match self.parts.get_mut(p as usize) {
            Some(part) if part.state == PartState::Running { worker } => {
                part.state = PartState::Done { worker, reduced };
                true
            }
            _ => false,
        }
    }

    /// Partition `p`'s reduce on `worker` did not end well, for `why`: it
    /// waits to be placed again. Returns the partition as it is now, or
    /// `None` if the answer is stale (the partition is done, or placed
    /// elsewhere since): then nothing changed.
    pub fn unreduced(&mut self, p: u32, worker: WorkerId, why: Unreduced) -> Option<&Partition> {
        let part = self.parts.get_mut(p as usize)?;
        if part.state != (PartState::Running { worker }) {
            return None;
        }
        part.state = PartState::Waiting;
        match why {
            Unreduced::Failed => part.failures += 1,
            Unreduced::Unreachable => part.unreachable += 1,
            Unreduced::Refused => {}
        }
        Some(part)
    }

    /// `worker`'s map outputs are gone (it was lost, or a reducer could not
    /// read them); if `reducer_too`, so are the partitions it reduced or
    /// was reducing. Map outputs are made again only while a partition
    /// still needs them.
    pub fn lost(&mut self, worker: WorkerId, reducer_too: bool) -> Lost {
        let mut lost = Lost::default();
        if reducer_too {
            for (p, part) in self.parts.iter_mut().enumerate() {
                let on_it = match &part.state {
                    PartState::Running { worker: w } | PartState::Done { worker: w, .. } => {
                        *w == worker
                    }
                    PartState::Waiting => false,
                };
                if on_it {
                    part.state = PartState::Waiting;
                    part.reruns += 1;
                    lost.rerun.push(p as u32);
                }
            }
        }
        if self.is_done() {
            return lost; // nothing needs the map outputs any more
        }
        let gone: Vec<u64> = self
            .outputs
            .iter()
            .filter(|(_, o)| o.worker == worker)
            .map(|(&k, _)| k)
            .collect();
        for k in gone {
            if let Some(o) = self.outputs.remove(&k) {
                self.remapped += 1;
                lost.remap.push((o.tasks, o.first_index));
            }
        }
        lost
    }

    /// The output's parts in partition order, once every partition is
    /// done (`addr` names each worker).
    pub fn output(&self, addr: impl Fn(WorkerId) -> String) -> Option<Vec<Part>> {
        self.parts
            .iter()
            .map(|p| match &p.state {
                PartState::Done { worker, reduced } => Some(Part {
                    addr: addr(*worker),
                    file: reduced.file,
                    binary_len: reduced.binary_len,
                    text_len: reduced.text_len,
                    text_error: reduced.text_error.clone(),
                    path: reduced.path.clone(),
                }),
                _ => None,
            })
            .collect()
    }

    /// Totals over the partitions done: (bytes fetched, spills, bytes
    /// spilled, output bytes).
    pub fn totals(&self) -> (u64, u64, u64, u64) {
        self.parts.iter().fold((0, 0, 0, 0), |t, p| match &p.state {
            PartState::Done { reduced: r, .. } => (
                t.0 + r.fetched,
                t.1 + r.spills,
                t.2 + r.spilled_bytes,
                t.3 + r.binary_len,
            ),
            _ => t,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::msg::shuffle::ReduceOutcome;

    fn w(n: u32) -> WorkerId {
        WorkerId::for_tests(n)
    }

    fn out(file: u64, segments: &[u64]) -> MapOutput {
        MapOutput {
            file,
            segments: segments.to_vec(),
            samples: Vec::new(),
        }
    }

    #[test]
    fn sampled_ranges_cover_every_key_once_and_stay_fixed() {
        let mut s = Shuffle::new(4, true);
        for (i, chunk) in (0..400u32).collect::<Vec<_>>().chunks(100).enumerate() {
            let mut o = out(i as u64, &[10]);
            o.samples = chunk.iter().map(|k| k.to_be_bytes().to_vec()).collect();
            s.map_output(w(1), o, (0, 1), 0).unwrap();
        }
        let ranges: Vec<KeyRange> = (0..4).map(|p| s.range(p).unwrap()).collect();
        assert!(ranges[0].lo.is_none() && ranges[3].hi.is_none());
        for pair in ranges.windows(2) {
            assert_eq!(pair[0].hi, pair[1].lo, "adjacent");
        }
        assert_eq!(
            ranges[1].lo,
            Some(100u32.to_be_bytes().to_vec()),
            "quantiles"
        );
        for k in 0..500u32 {
            let hits = ranges
                .iter()
                .filter(|r| r.contains(&k.to_be_bytes()))
                .count();
            assert_eq!(hits, 1, "key {k}");
        }
        // More samples later change nothing: the cut is fixed.
        let mut o = out(9, &[10]);
        o.samples = vec![vec![0xff; 4]; 50];
        s.map_output(w(1), o, (0, 1), 0).unwrap();
        assert_eq!(s.range(1).unwrap(), ranges[1]);
        assert!(s.sources(2, w(1), |_| String::new())[0].files.len() == 5);
        assert_eq!(Shuffle::new(2, false).range(0), None);
        // No samples at all (no pairs): everything in the first partition.
        let mut none = Shuffle::new(3, true);
        let all = none.range(0).unwrap();
        assert!(all.contains(b"") && all.contains(b"zzz"));
        assert!(!none.range(1).unwrap().contains(b"a"));
        assert!(!none.range(2).unwrap().contains(b""));
    }

    fn done(file: u64) -> Reduced {
        let mut r = Reduced::failed(0, ReduceOutcome::Done, String::new());
        r.file = file;
        r.fetched = 10;
        r.binary_len = 4;
        r
    }

    #[test]
    fn sources_group_by_worker_and_skip_empty_segments() {
        let mut s = Shuffle::new(2, false);
        s.map_output(w(1), out(7, &[5, 0]), (0, 1), 0).unwrap();
        s.map_output(w(2), out(8, &[3, 9]), (1, 1), 1).unwrap();
        s.map_output(w(1), out(9, &[2, 4]), (2, 1), 2).unwrap();
        let addr = |x: WorkerId| format!("w{x:?}");
        let src = s.sources(0, w(2), addr);
        assert_eq!(src.len(), 2);
        assert_eq!(src[0].files, [(7, 5), (9, 2)]);
        assert_eq!(src[1].addr, "", "its own outputs are local");
        assert_eq!(s.sources(1, w(2), addr)[0].files, [(9, 4)]);
        assert!(s.map_output(w(1), out(1, &[1]), (3, 1), 3).is_err());
    }

    #[test]
    fn a_lost_worker_costs_its_map_outputs_and_its_partitions_until_all_are_done() {
        let mut s = Shuffle::new(2, false);
        s.map_output(w(1), out(1, &[1, 1]), (0, 10), 0).unwrap();
        s.map_output(w(2), out(2, &[1, 1]), (10, 10), 5).unwrap();
        s.placed(0, w(1), String::new());
        s.placed(1, w(2), String::new());
        assert!(s.reduced(0, w(1), done(11)));
        assert!(
            !s.reduced(0, w(1), done(11)),
            "a second answer is a duplicate"
        );
        let lost = s.lost(w(1), true);
        assert_eq!(lost.rerun, [0]);
        assert_eq!(lost.remap, [((0, 10), 0)]);
        assert_eq!(s.waiting(), [0]);
        assert_eq!(s.outputs(), 1);
        // Partition 1's reduce ends well; partition 0 is placed again.
        assert!(s.reduced(1, w(2), done(12)));
        s.map_output(w(2), out(3, &[1, 1]), (20, 10), 0).unwrap();
        s.placed(0, w(2), String::new());
        assert!(s.reduced(0, w(2), done(13)));
        assert!(s.is_done());
        // Once all are done, nothing needs the map outputs.
        assert_eq!(s.lost(w(9), true), Lost::default());
        let parts = s.output(|x| format!("{x:?}")).unwrap();
        assert_eq!(parts.iter().map(|p| p.file).collect::<Vec<_>>(), [13, 12]);
        assert_eq!(s.totals(), (20, 0, 0, 8));
    }

    #[test]
    fn failed_unreachable_and_refused_reduces_are_counted_apart() {
        let mut s = Shuffle::new(1, false);
        s.placed(0, w(1), String::new());
        assert_eq!(s.unreduced(0, w(1), Unreduced::Failed).unwrap().failures, 1);
        s.placed(0, w(2), String::new());
        let part = s.unreduced(0, w(2), Unreduced::Unreachable).unwrap();
        assert_eq!((part.failures, part.unreachable), (1, 1));
        s.placed(0, w(2), String::new());
        let part = s.unreduced(0, w(2), Unreduced::Refused).unwrap();
        assert_eq!((part.failures, part.unreachable), (1, 1));
        // A late answer from a worker it no longer runs on changes nothing.
        assert!(s.unreduced(0, w(1), Unreduced::Failed).is_none());
        assert_eq!(s.waiting(), [0]);
    }

    #[test]
    fn the_task_log_gives_back_what_was_appended() {
        let mut log = TaskLog::create("test").unwrap();
        let mut a = TaskList::new();
        a.push(b"one");
        a.push(b"two");
        let mut b = TaskList::new();
        b.push(b"three");
        let at_a = log.append(&a).unwrap();
        let at_b = log.append(&b).unwrap();
        assert_eq!(log.read(at_b).unwrap(), b);
        assert_eq!(log.read(at_a).unwrap(), a);
        let path = log.path.clone();
        drop(log);
        assert!(!path.exists());
    }
}
