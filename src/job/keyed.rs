//! Keyed, typed jobs: MapReduce's model (Dean & Ghemawat 2004, §2), with
//! Spark's `reduceByKey` as the combiner.
//!
//! `load` yields typed tasks; `map` takes one and emits any number of
//! `(key, value)` pairs; the values of one key are combined by `reduce`,
//! in place on an accumulator of the value's type, wherever they meet: in
//! a per-batch hash table right after `map` (the paper's combiner, §4.3),
//! then across batches. The job's output is one `(key, value)` per key,
//! sorted by key ([`Codec`]'s order, which is the key type's own). A unit
//! key `()` makes a global fold, so this model covers the byte-level
//! [`Job`](super::Job)'s too.
//!
//! This file holds the model and the code that runs it on the job's side
//! of the plugin boundary, where the types are known: [`map_batch`] maps a
//! batch and combines it into one sorted run of encoded pairs, and
//! [`Reducer`] combines runs. Both work on bytes at the edges, so the host
//! never needs the job's types; `ffi` exports them as ABI version 3's
//! keyed entries (protocol.md, "Keyed jobs").
//!
//! ```ignore
//! use redmap::job::{Emit, Error, KeyedJob, TypedTasks};
//!
//! #[derive(Default)]
//! struct WordCount;
//!
//! impl KeyedJob for WordCount {
//!     type Task = String;
//!     type Key = String;
//!     type Value = u64;
//!     fn load(&self) -> TypedTasks<String> {
//!         Box::new(["a b", "b c"].map(|l| Ok(l.to_string())).into_iter())
//!     }
//!     fn map(&self, line: String, out: &mut Emit<'_, Self>) -> Result<(), Error> {
//!         for word in line.split_whitespace() {
//!             out.emit(word.to_string(), 1);
//!         }
//!         Ok(())
//!     }
//!     fn reduce(&self, count: &mut u64, more: u64) {
//!         *count += more;
//!     }
//!     fn done(&self, output: Vec<(String, u64)>) -> Result<(), Error> {
//!         for (word, n) in output {
//!             println!("{word}\t{n}");
//!         }
//!         Ok(())
//!     }
//! }
//!
//! redmap::export_keyed_job!(WordCount);
//! ```

use std::borrow::Borrow;
use std::collections::hash_map::{Entry, HashMap};
use std::hash::{BuildHasherDefault, Hash, Hasher};

use super::codec::{from_bytes, Codec, DecodeError};
use super::run::{push_pair, take_pair, RunError};
use super::Error;

/// The tasks a keyed job's `load` yields, pulled lazily (an `Err` item is a
/// load error and does not stop the job).
pub type TypedTasks<T> = Box<dyn Iterator<Item = Result<T, Error>> + Send>;

/// A keyed job. `map` and `reduce` are called from many threads at once
/// (and on many machines), so a job is `Sync` and keeps no per-call state
/// in `self`.
pub trait KeyedJob: Sized + Send + Sync + 'static {
    /// What `load` yields and `map` takes.
    type Task: Codec;
    /// What values are grouped by. Sorted by its [`Codec`] encoding.
    type Key: Codec + Hash + Eq;
    /// What `map` emits with each key, and what `reduce` combines.
    type Value: Codec;

    /// Yields every task. Runs where the job is loaded (the manager, or
    /// the embedded run).
    fn load(&self) -> TypedTasks<Self::Task>;

    /// Emits the pairs of one task through `out`. Runs on workers. An
    /// `Err` fails this task alone (its pairs are dropped with it).
    fn map(&self, task: Self::Task, out: &mut Emit<'_, Self>) -> Result<(), Error>;

    /// Combines `value` into `acc`, in place. It must be associative and
    /// commutative: values meet in whatever order and grouping the
    /// batches and machines give them.
    fn reduce(&self, acc: &mut Self::Value, value: Self::Value);

    /// Receives the job's output: one pair per key, sorted by key. Runs
    /// where the user is: in `redmap run`'s process, embedded or on a
    /// cluster (not when `--output` writes the output to a file instead).
    /// The default prints one `key<TAB>value` line per key, in the text
    /// form of [`Codec::text`], to standard output.
    fn done(&self, output: Vec<(Self::Key, Self::Value)>) -> Result<(), Error> {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let mut line = String::new();
        for (key, value) in &output {
            line.clear();
            key.text(&mut line);
            line.push('\t');
            value.text(&mut line);
            line.push('\n');
            out.write_all(line.as_bytes())?;
        }
        out.flush()?;
        Ok(())
    }

    /// How many tasks `load` will yield, if known (for progress, and to
    /// cut a small job into enough batches).
    fn count(&self) -> Option<u64> {
        None
    }
}

/// A fast hasher for the combiner's tables (FxHash's multiply-rotate, as in
/// rustc): keys come from the job's own data, not from the network, so
/// SipHash's defence against chosen collisions buys nothing here and costs
/// a third of a word count.
#[derive(Default, Clone, Copy)]
pub struct FastHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in chunks.by_ref() {
            let word = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            self.add(word);
        }
        let mut tail = [0u8; 8];
        let rest = chunks.remainder();
        tail[..rest.len()].copy_from_slice(rest);
        self.add(u64::from_le_bytes(tail) ^ (rest.len() as u64) << 56);
    }
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

/// The combiner's table: one accumulator per distinct key.
pub type Table<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// Where `map` emits its pairs: straight into the batch's combiner table,
/// so a batch holds (and sends) each distinct key once, and an emit costs
/// no allocation of its own beyond the key and value themselves.
pub struct Emit<'a, J: KeyedJob> {
    job: &'a J,
    table: &'a mut Table<J::Key, J::Value>,
    emitted: u64,
}

impl<J: KeyedJob> Emit<'_, J> {
    /// Emits one pair: combined at once with what this task emitted for
    /// the same key.
    pub fn emit(&mut self, key: J::Key, value: J::Value) {
        self.emitted += 1;
        combine(self.job, self.table, key, value);
    }

    /// Emits one pair by a borrowed key (`&str` for a `String` key): the
    /// key is copied only the first time the batch sees it, so a key that
    /// repeats costs a lookup and no allocation.
    pub fn emit_borrowed<Q>(&mut self, key: &Q, value: J::Value)
    where
        J::Key: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = J::Key> + ?Sized,
    {
        self.emitted += 1;
        match self.table.get_mut(key) {
            Some(acc) => self.job.reduce(acc, value),
            None => {
                self.table.insert(key.to_owned(), value);
            }
        }
    }
}

/// A task of a batch that failed: its index in the batch and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFailure {
    pub index: u32,
    /// It panicked (in `map`, or in a `reduce` its pairs called), rather
    /// than returning an error.
    pub panicked: bool,
    pub message: String,
}

/// What [`map_batch`] made of a batch.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Mapped {
    /// The batch's combined pairs, one per distinct key, sorted by key:
    /// each framed as src/job/run.rs says.
    pub pairs: Vec<u8>,
    /// Distinct keys in `pairs`.
    pub keys: u64,
    /// Pairs `map` emitted, before combining.
    pub emitted: u64,
    /// Tasks mapped without error.
    pub processed: u32,
    /// Tasks that failed (their pairs are not in `pairs`).
    pub failures: Vec<TaskFailure>,
}

impl Mapped {
    /// The form the host reads (big-endian; see protocol.md, "Keyed
    /// jobs"): `u32` processed, `u64` emitted, `u64` keys, `u32` failures,
    /// each as `u32` index, `u8` flags (1: panicked), `u32` length and a
    /// UTF-8 message; then the pairs to the end.
    pub fn encode(&self) -> Vec<u8> {
        let messages: usize = self.failures.iter().map(|f| 9 + f.message.len()).sum();
        let mut out = Vec::with_capacity(24 + messages + self.pairs.len());
        out.extend_from_slice(&self.processed.to_be_bytes());
        out.extend_from_slice(&self.emitted.to_be_bytes());
        out.extend_from_slice(&self.keys.to_be_bytes());
        out.extend_from_slice(&(self.failures.len() as u32).to_be_bytes());
        for f in &self.failures {
            out.extend_from_slice(&f.index.to_be_bytes());
            out.push(u8::from(f.panicked));
            out.extend_from_slice(&(f.message.len() as u32).to_be_bytes());
            out.extend_from_slice(f.message.as_bytes());
        }
        out.extend_from_slice(&self.pairs);
        out
    }
}

/// The tasks of a task list as `MAP_BATCH` carries it: `u32` count, then
/// each task as a `u32` length and its bytes (big-endian).
pub fn task_list(bytes: &[u8]) -> Result<Vec<&[u8]>, DecodeError> {
    let short = || DecodeError::new("task list", "the input ends inside it");
    let (count, mut rest) = bytes.split_first_chunk::<4>().ok_or_else(short)?;
    let n = u32::from_be_bytes(*count) as usize;
    let mut tasks = Vec::with_capacity(n.min(rest.len() / 4));
    for _ in 0..n {
        let (len, after) = rest.split_first_chunk::<4>().ok_or_else(short)?;
        let len = u32::from_be_bytes(*len) as usize;
        if after.len() < len {
            return Err(short());
        }
        tasks.push(&after[..len]);
        rest = &after[len..];
    }
    Ok(tasks)
}

/// Maps a batch of encoded tasks and combines what they emit: the job's
/// side of a batch-level plugin call. `tasks` yields each task's encoding
/// (a [`Codec`] encoding of `J::Task`). A task that does not decode, or
/// whose `map` fails, is a failure of its own: what it emitted before
/// failing is dropped with it, so a retried task never counts twice.
pub fn map_batch<'t, J: KeyedJob>(job: &J, tasks: impl IntoIterator<Item = &'t [u8]>) -> Mapped {
    // Until a task fails, pairs go straight into the batch's table (one
    // hash per pair). A failed task's pairs cannot be taken back out of
    // accumulators, so at the first failure the table is rebuilt from the
    // batch's good tasks (mapped again: map is deterministic, as MapReduce
    // requires for re-execution), and from then on each task's pairs go to
    // a table of their own, merged once the task succeeds.
    let mut table: Table<J::Key, J::Value> = Table::default();
    let mut direct = true;
    // The good tasks so far: index, encoding, pairs emitted.
    let mut good: Vec<(u32, &'t [u8], u64)> = Vec::new();
    let mut mapped = Mapped::default();
    for (index, bytes) in tasks.into_iter().enumerate() {
        let index = u32::try_from(index).unwrap_or(u32::MAX);
        // A task that does not decode touches no table.
        let task = match decode_task::<J>(bytes) {
            Ok(task) => task,
            Err(failure) => {
                mapped.failures.push(TaskFailure { index, ..failure });
                continue;
            }
        };
        let outcome = if direct {
            map_into(job, task, &mut table)
        } else {
            let mut own = Table::default();
            // The merge runs `reduce` too: a panic there is this task's.
            map_into(job, task, &mut own).and_then(|n| {
                guarded(|| {
                    for (key, value) in own {
                        combine(job, &mut table, key, value);
                    }
                })
                .map(|()| n)
            })
        };
        match outcome {
            Ok(emitted) => {
                mapped.emitted += emitted;
                mapped.processed += 1;
                good.push((index, bytes, emitted));
            }
            Err(failure) => {
                // In the shared table (direct), or in a merge cut short by a
                // panic, the task may have left pairs behind.
                if direct || failure.panicked {
                    table = rebuild(job, &mut good, &mut mapped);
                }
                mapped.failures.push(TaskFailure { index, ..failure });
                direct = false;
            }
        }
    }
    mapped.failures.sort_by_key(|f| f.index);
    mapped.keys = table.len() as u64;
    mapped.pairs = sorted_run(table);
    mapped
}

/// Runs `f` (job code) under `catch_unwind`: a panic becomes a failure
/// with its message.
fn guarded<R>(f: impl FnOnce() -> R) -> Result<R, TaskFailure> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|payload| TaskFailure {
        index: 0,
        panicked: true,
        message: super::__private::panic_message(&*payload),
    })
}

/// The task that `bytes` encode, or why not (its index left to the caller).
fn decode_task<J: KeyedJob>(bytes: &[u8]) -> Result<J::Task, TaskFailure> {
    super::codec::from_bytes::<J::Task>(bytes).map_err(|e| TaskFailure {
        index: 0,
        panicked: false,
        message: e.to_string(),
    })
}

/// Maps `task` into `table`; the pairs it emitted, or why it failed (its
/// index left to the caller).
fn map_into<J: KeyedJob>(
    job: &J,
    task: J::Task,
    table: &mut Table<J::Key, J::Value>,
) -> Result<u64, TaskFailure> {
    let mut out = Emit {
        job,
        table,
        emitted: 0,
    };
    match guarded(|| job.map(task, &mut out)) {
        Ok(Ok(())) => Ok(out.emitted),
        Ok(Err(e)) => Err(TaskFailure {
            index: 0,
            panicked: false,
            message: e.message().to_owned(),
        }),
        Err(panic) => Err(panic),
    }
}

/// The table of the `good` tasks, each mapped again into a table of its
/// own and merged on success. A task that fails now (its input changed, a
/// shared file could not be read again) becomes a failure, and its counts
/// are taken back from `mapped`.
fn rebuild<J: KeyedJob>(
    job: &J,
    good: &mut Vec<(u32, &[u8], u64)>,
    mapped: &mut Mapped,
) -> Table<J::Key, J::Value> {
    let mut table = Table::default();
    good.retain(|&(index, bytes, emitted)| {
        let mut own = Table::default();
        let outcome = decode_task::<J>(bytes)
            .and_then(|task| map_into(job, task, &mut own))
            .and_then(|_| {
                guarded(|| {
                    for (key, value) in own {
                        combine(job, &mut table, key, value);
                    }
                })
            });
        match outcome {
            Ok(()) => true,
            Err(failure) => {
                mapped.processed -= 1;
                mapped.emitted -= emitted;
                mapped.failures.push(TaskFailure {
                    index,
                    message: format!(
                        "mapped again (another task of its batch failed): {}",
                        failure.message
                    ),
                    ..failure
                });
                false
            }
        }
    });
    table
}

/// Combines one pair into `table`.
fn combine<J: KeyedJob>(
    job: &J,
    table: &mut Table<J::Key, J::Value>,
    key: J::Key,
    value: J::Value,
) {
    match table.entry(key) {
        Entry::Occupied(mut acc) => job.reduce(acc.get_mut(), value),
        Entry::Vacant(slot) => {
            slot.insert(value);
        }
    }
}

/// Encodes a table as one run (see [`super::run`]) sorted by key bytes.
fn sorted_run<K: Codec, V: Codec>(table: Table<K, V>) -> Vec<u8> {
    // Keys are encoded once into one buffer, sorted as byte slices, and
    // the pairs then written in that order.
    let mut keys = Vec::new();
    let mut entries: Vec<(usize, usize, V)> = Vec::with_capacity(table.len());
    for (key, value) in table {
        let start = keys.len();
        key.encode(&mut keys);
        entries.push((start, keys.len(), value));
    }
    entries.sort_unstable_by(|a, b| super::run::compare_keys(&keys[a.0..a.1], &keys[b.0..b.1]));
    let mut out = Vec::with_capacity(keys.len() + entries.len() * 12);
    let mut value_bytes = Vec::new();
    for (start, end, value) in entries {
        value_bytes.clear();
        value.encode(&mut value_bytes);
        push_pair(&mut out, &keys[start..end], &value_bytes);
    }
    out
}

/// One framed pair's key and value, decoded: each must be exactly one
/// value of its type.
fn decode_pair<K: Codec, V: Codec>(key: &[u8], value: &[u8]) -> Result<(K, V), DecodeError> {
    Ok((from_bytes(key)?, from_bytes(value)?))
}

/// Reads a run of pairs, in order.
pub fn decode_pairs<'a, K: Codec, V: Codec>(
    run: &'a [u8],
) -> impl Iterator<Item = Result<(K, V), DecodeError>> + 'a {
    let mut failed = false;
    super::run::pairs(run).map_while(move |pair| {
        if failed {
            return None;
        }
        let pair = match pair {
            Ok((key, value)) => decode_pair(key, value),
            Err(e) => Err(DecodeError::new("run", run_error(e))),
        };
        failed = pair.is_err(); // nothing after a bad pair can be trusted
        Some(pair)
    })
}

fn run_error(e: RunError) -> &'static str {
    match e {
        RunError::Cut => "the input ends inside a pair",
        RunError::Malformed => "a pair's length is malformed",
    }
}

/// The text form of the whole pairs at the front of `run`: one
/// `key<TAB>value` line each (see [`Codec::text`]), and the number of
/// `run`'s bytes they took. A pair cut short by the end of `run` ends the
/// text there: the caller hands its bytes back with the next piece (and an
/// output whose last piece leaves bytes unused is cut short). A whole
/// pair that does not decode is an error.
pub fn format_pairs<K: Codec, V: Codec>(run: &[u8]) -> Result<(String, usize), DecodeError> {
    let mut text = String::new();
    let mut rest = run;
    while !rest.is_empty() {
        let (key, value) = match take_pair(&mut rest) {
            Ok(pair) => pair,
            Err(RunError::Cut) => break,
            Err(e) => return Err(DecodeError::new("run", run_error(e))),
        };
        let (key, value) = decode_pair::<K, V>(key, value)?;
        key.text(&mut text);
        text.push('\t');
        value.text(&mut text);
        text.push('\n');
    }
    Ok((text, run.len() - rest.len()))
}

/// Combines runs of pairs (each batch's, or other reducers') into one
/// accumulator per key: the job's side of the reduce.
pub struct Reducer<J: KeyedJob> {
    table: Table<J::Key, J::Value>,
}

impl<J: KeyedJob> Default for Reducer<J> {
    fn default() -> Self {
        Reducer {
            table: Table::default(),
        }
    }
}

impl<J: KeyedJob> Reducer<J> {
    /// Combines every pair of `run` into the table; returns how many pairs
    /// it held. A run that does not decode is refused whole, before any of
    /// it is combined, so a bad run never counts in part.
    pub fn add(&mut self, job: &J, run: &[u8]) -> Result<u64, DecodeError> {
        let pairs: Vec<(J::Key, J::Value)> = decode_pairs(run).collect::<Result<_, _>>()?;
        let n = pairs.len() as u64;
        for (key, value) in pairs {
            combine(job, &mut self.table, key, value);
        }
        Ok(n)
    }

    /// Distinct keys so far.
    pub fn keys(&self) -> usize {
        self.table.len()
    }

    /// The output: one pair per key, sorted by key, as one run.
    pub fn finish(self) -> Vec<u8> {
        sorted_run(self.table)
    }
}

#[doc(hidden)]
pub mod ffi;

#[cfg(test)]
mod tests;
