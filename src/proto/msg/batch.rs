//! Map work: `MAP_BATCH` (0x05) from the manager to a worker, and its reply
//! `BATCH_RESULT` (0x85). A batch is many tasks of one job; the worker maps
//! each and folds the batch's values with the job's reduce into one partial
//! accumulator, so one value comes back per batch, not per task.
//!
//! ```text
//! MAP_BATCH payload:
//!   hash[32]  SHA-256 of the job's library (installed beforehand)
//!   u64       batch id, echoed in the result
//!   u32       n, the number of tasks
//!   n times:  bytes task
//!   u32       reply limit: the largest BATCH_RESULT payload the sender
//!             takes (its --max-size); appended in 0.2, absent or 0 means
//!             the default max size
//!   args      the job's arguments (see `args.rs`); appended in 0.3,
//!             absent means none
//!   shuffle   u64 job, u32 partitions (see `shuffle.rs`); appended in
//!             0.4, absent: answer with the value
//! BATCH_RESULT payload:
//!   u64       batch id
//!   u32       tasks mapped and folded into the value
//!   u8        1 if a value follows, 0 if no task succeeded
//!   bytes     the partial accumulator (present only if the flag is 1)
//!   u32       m, the number of failed tasks
//!   m times:  u32 index of the task in the batch, u8 flags, str error
//!             flags: bit 0 it panicked; bit 1 final (do not retry: the same
//!             task cannot succeed, e.g. its value is over the reply limit);
//!             bit 2 deferred (not run: send it again, no attempt counted)
//!   u64       microseconds the worker's thread spent on the batch
//!   map output  u64 file, u32 R, R × u64 segment lengths (shuffled
//!             batches only; see `shuffle.rs`)
//! ```

use super::args::JobArgs;
use super::shuffle::{MapOutput, ShuffleSpec};
use super::wire::{put_bytes, put_str, put_u32, put_u64, Cursor};
use crate::proto::error::ProtoError;
use crate::proto::opcode::Opcode;

/// A batch's tasks exactly as they travel: `u32 n`, then n `bytes`. Built
/// by appending tasks as they are loaded, so the manager never holds a task
/// in two forms, and read in place by the worker without a copy per task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskList {
    bytes: Vec<u8>,
    len: u32,
}

impl Default for TaskList {
    fn default() -> Self {
        TaskList::new()
    }
}

impl TaskList {
    pub fn new() -> TaskList {
        TaskList {
            bytes: vec![0; 4],
            len: 0,
        }
    }

    /// An empty list with room for `bytes` encoded bytes (see
    /// [`TaskList::byte_len`]) before it grows.
    pub fn with_capacity(bytes: usize) -> TaskList {
        let mut list = Vec::with_capacity(bytes.max(4));
        list.extend_from_slice(&[0; 4]);
        TaskList {
            bytes: list,
            len: 0,
        }
    }

    pub fn push(&mut self, task: &[u8]) {
        put_bytes(&mut self.bytes, task);
        self.len += 1;
        self.bytes[..4].copy_from_slice(&self.len.to_be_bytes());
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Encoded size in bytes.
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    /// The list in its wire form (`u32 n`, then n `bytes`), as a keyed
    /// job's `map_batch` takes it.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The list's wire form, owned (as [`TaskList::from_bytes`] takes it).
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// The first `at` tasks and the rest, as two lists.
    pub fn split_at(&self, at: usize) -> (TaskList, TaskList) {
        let (mut head, mut tail) = (TaskList::new(), TaskList::new());
        for (i, task) in self.iter().enumerate() {
            if i < at {
                head.push(task);
            } else {
                tail.push(task);
            }
        }
        (head, tail)
    }

    pub fn iter(&self) -> TaskIter<'_> {
        TaskIter {
            cursor: Cursor::new(Opcode::MapBatch.as_u8(), &self.bytes[4..]),
            left: self.len,
        }
    }

    /// Reads a task list from the front of `c`, checking every length.
    /// A list from its encoded bytes, checked (as [`TaskList::as_bytes`]
    /// gave them).
    ///
    /// # Errors
    /// The bytes are not exactly one encoded list.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<TaskList, ProtoError> {
        let mut c = Cursor::new(Opcode::MapBatch.as_u8(), &bytes);
        let list = TaskList::decode(&mut c)?;
        if !c.rest().is_empty() {
            return Err(c.malformed("bytes after the task list"));
        }
        Ok(list)
    }

    fn decode(c: &mut Cursor<'_>) -> Result<TaskList, ProtoError> {
        let start = c.rest();
        let n = c.count(4, "task count")?;
        for _ in 0..n {
            c.bytes("task")?;
        }
        let used = start.len() - c.rest().len();
        Ok(TaskList {
            bytes: start[..used].to_vec(),
            len: n as u32,
        })
    }
}

pub struct TaskIter<'a> {
    cursor: Cursor<'a>,
    left: u32,
}

impl<'a> Iterator for TaskIter<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // Lengths were checked when the list was built or decoded.
        self.cursor.bytes("task").ok()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapBatch {
    pub hash: [u8; 32],
    pub batch_id: u64,
    pub tasks: TaskList,
    /// The largest `BATCH_RESULT` payload the sender accepts, in bytes
    /// (its `--max-size`); 0 when not given: the default max size.
    pub reply_limit: u32,
    /// The job's arguments, for the worker to build the job with (appended;
    /// absent: none).
    pub args: JobArgs,
    /// A keyed job whose reduce runs on the workers: the worker keeps the
    /// batch's pairs, cut into partitions, instead of answering with them
    /// (appended after the arguments; absent: answer with the value).
    pub shuffle: Option<ShuffleSpec>,
}

impl MapBatch {
    /// The reply limit in bytes, the default max size when not given.
    pub fn reply_limit(&self) -> usize {
        match self.reply_limit {
            0 => crate::proto::DEFAULT_MAX_SIZE as usize,
            n => n as usize,
        }
    }
}

impl MapBatch {
    pub fn decode(payload: &[u8]) -> Result<MapBatch, ProtoError> {
        let mut c = Cursor::new(Opcode::MapBatch.as_u8(), payload);
        let hash = c.hash("hash")?;
        let batch_id = c.u64("batch id")?;
        let tasks = TaskList::decode(&mut c)?;
        let reply_limit = if c.rest().is_empty() {
            0
        } else {
            c.u32("reply limit")?
        };
        let args = if c.rest().is_empty() {
            JobArgs::default()
        } else {
            JobArgs::decode(&mut c)?
        };
        let shuffle = if c.rest().is_empty() {
            None
        } else {
            Some(ShuffleSpec::decode(&mut c)?)
        };
        Ok(MapBatch {
            hash,
            batch_id,
            tasks,
            reply_limit,
            args,
            shuffle,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.hash);
        put_u64(out, self.batch_id);
        out.extend_from_slice(&self.tasks.bytes);
        put_u32(out, self.reply_limit);
        // No arguments travel as none: the message as it was before them
        // (unless a field after them follows).
        if !self.args.is_empty() || self.shuffle.is_some() {
            self.args.encode(out);
        }
        if let Some(spec) = &self.shuffle {
            spec.encode(out);
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFailure {
    /// Index of the task within its batch.
    pub index: u32,
    pub panicked: bool,
    /// Retrying cannot help (flag bit 1): the task fails for good at once.
    pub fatal: bool,
    /// The task was not run (flag bit 2): send it again, as it is, without
    /// counting an attempt. A worker defers the rest of a batch whose
    /// result would grow past the reply limit.
    pub deferred: bool,
    pub message: String,
}

const PANICKED: u8 = 1;
const FATAL: u8 = 2;
const DEFERRED: u8 = 4;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchResult {
    pub batch_id: u64,
    pub processed: u32,
    pub value: Option<Vec<u8>>,
    pub failures: Vec<TaskFailure>,
    /// Microseconds the worker's map thread spent mapping and folding the
    /// batch (not counting its wait in the queue): how the manager sizes
    /// batches.
    pub busy_us: u64,
    /// Where a shuffled batch's pairs stay (appended; absent for a batch
    /// answered with its value).
    pub map_output: Option<MapOutput>,
}

impl BatchResult {
    pub fn decode(payload: &[u8]) -> Result<BatchResult, ProtoError> {
        let mut c = Cursor::new(Opcode::BatchResult.as_u8(), payload);
        let batch_id = c.u64("batch id")?;
        let processed = c.u32("processed")?;
        let value = match c.u8("value flag")? {
            0 => None,
            _ => Some(c.bytes("value")?.to_vec()),
        };
        let n = c.count(7, "failure count")?;
        let mut failures = Vec::with_capacity(n);
        for _ in 0..n {
            let index = c.u32("failure index")?;
            let flags = c.u8("failure flags")?;
            failures.push(TaskFailure {
                index,
                panicked: flags & PANICKED != 0,
                fatal: flags & FATAL != 0,
                deferred: flags & DEFERRED != 0,
                message: c.str("failure message")?,
            });
        }
        Ok(BatchResult {
            batch_id,
            processed,
            value,
            failures,
            busy_us: c.u64("busy time")?,
            map_output: if c.rest().is_empty() {
                None
            } else {
                Some(MapOutput::decode(&mut c)?)
            },
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.batch_id);
        put_u32(out, self.processed);
        match &self.value {
            Some(v) => {
                out.push(1);
                put_bytes(out, v);
            }
            None => out.push(0),
        }
        put_u32(out, self.failures.len() as u32);
        for f in &self.failures {
            put_u32(out, f.index);
            let flags = [
                (f.panicked, PANICKED),
                (f.fatal, FATAL),
                (f.deferred, DEFERRED),
            ]
            .iter()
            .filter(|(on, _)| *on)
            .fold(0, |acc, (_, bit)| acc | bit);
            out.push(flags);
            put_str(out, &f.message);
        }
        put_u64(out, self.busy_us);
        if let Some(m) = &self.map_output {
            m.encode(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_lists_iterate_what_was_pushed() {
        let mut list = TaskList::new();
        for t in [&b"1"[..], b"", b"three"] {
            list.push(t);
        }
        assert_eq!(list.len(), 3);
        let got: Vec<&[u8]> = list.iter().collect();
        assert_eq!(got, vec![&b"1"[..], b"", b"three"]);
    }

    #[test]
    fn a_lying_task_count_is_malformed() {
        let mut payload = vec![0u8; 40];
        payload.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(MapBatch::decode(&payload).is_err());
    }
}
