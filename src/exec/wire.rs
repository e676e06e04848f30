//! The frames a server and its executor exchange over one lane (a Unix
//! stream socket pair): a private link between two processes of the same
//! binary, so it has no version and is not in protocol.md.
//!
//! A frame is `u8 tag, u32 head length, u32 body length, head, body`
//! (lengths big-endian). The head holds the small fields (the job's
//! arguments, counts, failures); the body the one big byte string of the
//! call (a batch's tasks, a run of pairs, a mapped batch's pairs), read
//! straight into its own buffer: no copy besides the socket's.
//!
//! Requests (host → executor), by tag, `head` / `body`:
//! - [`FOLD`]: args, u64 value limit, str whose limit / the task list:
//!   a byte-level batch mapped and folded. Reply head: empty; body: the
//!   encoded [`crate::job::batch::Folded`].
//! - [`MAP_KEYED`]: args / the task list: a keyed batch mapped and
//!   combined. Reply head: u32 processed, u64 emitted, u64 keys, u32 n,
//!   n × (u32 index, u8 panicked, bytes message); body: the pairs.
//! - [`COMBINE`]: args / a run of pairs: the job's reducer over it.
//!   Reply body: the combined run.
//! - [`FORMAT`]: args / a run of pairs: its text form. Reply head: u64
//!   bytes of the run used; body: the text.
//! - [`BUILD`]: args: a new job: built afresh (its constructor run), and
//!   every lane's state (a `load`, an accumulator) dropped. Reply: empty.
//! - [`COUNT`]: args: the job's `count`. Reply head: u8 known, u64 count.
//! - [`LOAD`]: args, u32 most tasks, u32 most bytes, u32 most items: the
//!   next batches (of those limits) and load errors of the job's `load`,
//!   cut by the lane's own [`crate::pipeline::Loader`] (started by its
//!   first `LOAD`), up to most items or 4 MiB of tasks. Reply head: u32 n,
//!   n × (u8 0 batch / 1 error / 2 end, u64 the batch's first index, bytes
//!   the error, u32 the batch's bytes); body: the batches' task lists, as
//!   they travel in `MAP_BATCH`, one after the other.
//! - [`ACC_ADD`]: args / n × bytes, batches' partial accumulators: each
//!   folded in turn with the job's `reduce` into the lane's accumulator
//!   (which starts empty, and is left as it was by a reduce that fails).
//!   Reply head: u32 n, n × (u8 failed, then as [`FAILED`]'s head if it
//!   did). One call for every partial waiting: the manager's reducer makes
//!   one trip here per round, not one per batch.
//! - [`ACC_DONE`]: args: `done` on the lane's accumulator, which is then
//!   emptied. Reply head: u8 done failed, then as [`FAILED`]'s head if it
//!   did; body: the accumulator (the job's result).
//!
//! Replies: [`OK`], its head starting with a u64: the microseconds the
//! call took in the executor (what batch sizing measures, without the
//! trip there and back), then as above; [`FAILED`] (head: u8 panicked, bytes
//! message): the call failed; [`UNBUILT`] (the same): the job's
//! constructor failed. The executor's first frame on lane 0 is its hello:
//! [`OK`] with head `u8 kind` (0 byte-level, 1 keyed), or [`FAILED`] with
//! why the library does not load.

use std::io::{self, Read, Write};

use crate::pipeline::{Batch, Loaded};
use crate::plugin::CallError;
use crate::proto::msg::wire::Cursor;
use crate::proto::msg::wire::{put_bytes, put_str, put_u32, put_u64};
use crate::proto::msg::{JobArgs, TaskList};

pub const FOLD: u8 = 1;
pub const MAP_KEYED: u8 = 2;
pub const COMBINE: u8 = 3;
pub const FORMAT: u8 = 4;
pub const BUILD: u8 = 5;
pub const COUNT: u8 = 6;
pub const LOAD: u8 = 7;
pub const ACC_ADD: u8 = 8;
pub const ACC_DONE: u8 = 9;

pub const OK: u8 = 0x80;
pub const FAILED: u8 = 0x81;
pub const UNBUILT: u8 = 0x82;

/// Most bytes of a head: failures' messages are capped well below it.
pub const MAX_HEAD: u32 = 64 << 20;

/// A body's buffer is reserved up to this much at once, then grows only
/// as bytes arrive: a length that lies costs no allocation.
const BODY_RESERVE: usize = 16 << 20;

/// One frame.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Frame {
    pub tag: u8,
    pub head: Vec<u8>,
    pub body: Vec<u8>,
    /// An `OK` reply's time in the executor, taken off its head by the
    /// host (0 elsewhere).
    pub busy_us: u64,
}

/// Writes one frame whose body is `body` (not copied into a buffer).
pub fn write_frame(w: &mut impl Write, tag: u8, head: &[u8], body: &[u8]) -> io::Result<()> {
    let too_long = |what| io::Error::new(io::ErrorKind::InvalidInput, what);
    let head_len = u32::try_from(head.len()).map_err(|_| too_long("head over 4 GiB"))?;
    let body_len = u32::try_from(body.len()).map_err(|_| too_long("body over 4 GiB"))?;
    let mut start = Vec::with_capacity(9 + head.len());
    start.push(tag);
    put_u32(&mut start, head_len);
    put_u32(&mut start, body_len);
    start.extend_from_slice(head);
    w.write_all(&start)?;
    w.write_all(body)?;
    w.flush()
}

/// Reads one frame; `UnexpectedEof` when the other side is gone. A head
/// over [`MAX_HEAD`] is refused before anything is allocated for it.
pub fn read_frame<R: Read>(r: &mut R) -> io::Result<Frame> {
    let mut start = [0u8; 9];
    r.read_exact(&mut start)?;
    let head_len = u32::from_be_bytes([start[1], start[2], start[3], start[4]]);
    let body_len = u32::from_be_bytes([start[5], start[6], start[7], start[8]]);
    if head_len > MAX_HEAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame's head of {head_len} bytes"),
        ));
    }
    let mut head = Vec::with_capacity((head_len as usize).min(BODY_RESERVE));
    r.take(u64::from(head_len)).read_to_end(&mut head)?;
    if head.len() != head_len as usize {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    // Read into spare capacity: no zeroing pass over a large body.
    let mut body = Vec::with_capacity((body_len as usize).min(BODY_RESERVE));
    r.take(u64::from(body_len)).read_to_end(&mut body)?;
    if body.len() != body_len as usize {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Frame {
        tag: start[0],
        head,
        body,
        busy_us: 0,
    })
}

/// A request's head: the job's arguments, then `more`.
pub fn head_with_args(args: &JobArgs, more: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut head = Vec::with_capacity(args.encoded().len() + 64);
    args.encode(&mut head);
    more(&mut head);
    head
}

/// The head of a [`FOLD`]: the value limit and whose limit it is.
pub fn fold_head(args: &JobArgs, limit: u64, whose: &str) -> Vec<u8> {
    head_with_args(args, |h| {
        put_u64(h, limit);
        put_str(h, whose);
    })
}

/// A failed call's head.
pub fn error_head(e: &CallError) -> Vec<u8> {
    let mut head = Vec::with_capacity(5 + e.message.len());
    head.push(u8::from(e.panicked));
    put_bytes(&mut head, e.message.as_bytes());
    head
}

/// Reads a failed call's head.
pub fn read_error(head: &[u8]) -> CallError {
    let mut c = Cursor::new(0, head);
    let panicked = c.u8("panicked").unwrap_or(0) != 0;
    let message = c
        .bytes("message")
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .unwrap_or_else(|_| "the executor's error does not decode".into());
    CallError { panicked, message }
}

/// A keyed batch's reply head (see the module's notes).
pub fn keyed_head(
    processed: u32,
    emitted: u64,
    keys: u64,
    failures: &[(u32, bool, String)],
) -> Vec<u8> {
    let mut head = Vec::with_capacity(24 + failures.len() * 16);
    put_u32(&mut head, processed);
    put_u64(&mut head, emitted);
    put_u64(&mut head, keys);
    put_u32(&mut head, failures.len() as u32);
    for (index, panicked, message) in failures {
        put_u32(&mut head, *index);
        head.push(u8::from(*panicked));
        put_bytes(&mut head, message.as_bytes());
    }
    head
}

/// What a keyed batch's reply head says: processed, emitted, keys and the
/// failures.
pub type KeyedHead = (u32, u64, u64, Vec<(u32, bool, String)>);

/// Reads a keyed batch's reply head.
pub fn read_keyed_head(head: &[u8]) -> Result<KeyedHead, String> {
    let bad = |e: crate::proto::ProtoError| format!("the executor's mapped batch: {e}");
    let mut c = Cursor::new(0, head);
    let processed = c.u32("processed").map_err(bad)?;
    let emitted = c.u64("emitted").map_err(bad)?;
    let keys = c.u64("keys").map_err(bad)?;
    let n = c.count(9, "failures").map_err(bad)?;
    let mut failures = Vec::with_capacity(n);
    for _ in 0..n {
        let index = c.u32("index").map_err(bad)?;
        let panicked = c.u8("panicked").map_err(bad)? != 0;
        let message = String::from_utf8_lossy(c.bytes("message").map_err(bad)?).into_owned();
        failures.push((index, panicked, message));
    }
    Ok((processed, emitted, keys, failures))
}

/// An [`ACC_ADD`] reply's head: each partial's outcome.
pub fn outcomes_head(outcomes: &[Result<(), CallError>]) -> Vec<u8> {
    let mut head = Vec::with_capacity(4 + outcomes.len());
    put_u32(&mut head, outcomes.len() as u32);
    for outcome in outcomes {
        match outcome {
            Ok(()) => head.push(0),
            Err(e) => {
                head.push(1);
                head.extend_from_slice(&error_head(e));
            }
        }
    }
    head
}

/// Reads an [`ACC_ADD`] reply's head.
pub fn read_outcomes(head: &[u8]) -> Result<Vec<Result<(), CallError>>, String> {
    let bad = |e: crate::proto::ProtoError| format!("the executor's reduce: {e}");
    let mut c = Cursor::new(0, head);
    let n = c.count(1, "outcomes").map_err(bad)?;
    let mut outcomes = Vec::with_capacity(n);
    for _ in 0..n {
        outcomes.push(match c.u8("failed").map_err(bad)? {
            0 => Ok(()),
            _ => {
                let panicked = c.u8("panicked").map_err(bad)? != 0;
                let message = String::from_utf8_lossy(c.bytes("message").map_err(bad)?);
                Err(CallError {
                    panicked,
                    message: message.into_owned(),
                })
            }
        });
    }
    Ok(outcomes)
}

/// A [`LOAD`] reply's head and body: its items in order (`None`: `load`
/// is exhausted, the last item).
pub fn loaded_reply(items: Vec<Option<Loaded>>) -> (Vec<u8>, Vec<u8>) {
    let mut head = Vec::with_capacity(4 + 32 * items.len());
    put_u32(&mut head, items.len() as u32);
    let mut body = Vec::new();
    for item in items {
        let (what, first_index, error, tasks) = match item {
            Some(Loaded::Batch(b)) => (0, b.first_index, String::new(), b.tasks.into_bytes()),
            Some(Loaded::Error(e)) => (1, 0, e, Vec::new()),
            None => (2, 0, String::new(), Vec::new()),
        };
        head.push(what);
        put_u64(&mut head, first_index);
        put_bytes(&mut head, error.as_bytes());
        put_u32(&mut head, tasks.len() as u32);
        if body.is_empty() {
            body = tasks; // the usual single batch: no copy
        } else {
            body.extend_from_slice(&tasks);
        }
    }
    (head, body)
}

/// Reads a [`LOAD`] reply: its items, each batch's task list checked.
pub fn read_loaded(head: &[u8], mut body: Vec<u8>) -> Result<Vec<Option<Loaded>>, String> {
    let bad = |e: crate::proto::ProtoError| format!("the executor's load: {e}");
    let mut h = Cursor::new(0, head);
    let n = h.count(17, "items").map_err(bad)?;
    let mut items = Vec::with_capacity(n);
    let mut at = 0usize;
    for i in 0..n {
        let what = h.u8("what").map_err(bad)?;
        let first_index = h.u64("first index").map_err(bad)?;
        let error = String::from_utf8_lossy(h.bytes("error").map_err(bad)?).into_owned();
        let len = h.u32("tasks length").map_err(bad)? as usize;
        let end = at
            .checked_add(len)
            .filter(|&e| e <= body.len())
            .ok_or_else(|| "the executor's load: a batch past the body".to_owned())?;
        items.push(match what {
            0 => {
                // The last batch takes the body itself, the others a copy.
                let tasks = if i + 1 == n && at == 0 && end == body.len() {
                    std::mem::take(&mut body)
                } else {
                    body[at..end].to_vec()
                };
                Some(Loaded::Batch(Batch {
                    tasks: TaskList::from_bytes(tasks).map_err(bad)?,
                    first_index,
                }))
            }
            1 => Some(Loaded::Error(error)),
            _ => None,
        });
        at = end;
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_round_trips_and_a_huge_head_is_refused_unread() {
        let mut buf = Vec::new();
        write_frame(&mut buf, FOLD, b"head", b"the body").unwrap();
        let frame = read_frame(&mut &buf[..]).unwrap();
        assert_eq!(
            frame,
            Frame {
                tag: FOLD,
                head: b"head".to_vec(),
                body: b"the body".to_vec(),
                busy_us: 0,
            }
        );
        let mut lie = vec![OK];
        lie.extend_from_slice(&(MAX_HEAD + 1).to_be_bytes());
        lie.extend_from_slice(&0u32.to_be_bytes());
        let e = read_frame(&mut &lie[..]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        // Cut short: the other side is gone.
        let e = read_frame(&mut &buf[..buf.len() - 1]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn heads_round_trip() {
        let e = CallError {
            panicked: true,
            message: "boom".into(),
        };
        assert_eq!(read_error(&error_head(&e)), e);
        let failures = vec![(3, false, "bad".to_owned()), (9, true, String::new())];
        let head = keyed_head(7, 100, 40, &failures);
        assert_eq!(read_keyed_head(&head).unwrap(), (7, 100, 40, failures));
        assert!(read_keyed_head(&head[..head.len() - 1]).is_err());
        let mut tasks = TaskList::new();
        tasks.push(b"task");
        tasks.push(b"");
        let batch = Loaded::Batch(Batch {
            tasks,
            first_index: 7,
        });
        let error = Some(Loaded::Error("task 3: no".into()));
        for items in [
            vec![Some(batch.clone())],
            vec![Some(batch.clone()), error.clone(), Some(batch), None],
            vec![error, None],
        ] {
            let (head, body) = loaded_reply(items.clone());
            assert_eq!(read_loaded(&head, body).unwrap(), items);
        }
        let outcomes = vec![Ok(()), Err(e.clone()), Ok(())];
        assert_eq!(read_outcomes(&outcomes_head(&outcomes)).unwrap(), outcomes);
        let (head, _) = loaded_reply(vec![Some(Loaded::Batch(Batch {
            tasks: TaskList::new(),
            first_index: 0,
        }))]);
        assert!(
            read_loaded(&head, vec![0, 0, 0, 9]).is_err(),
            "a list cut short"
        );
    }
}
