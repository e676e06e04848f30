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
//! - [`BUILD`]: args: the job built (its constructor run). Reply: empty.
//! - [`COUNT`]: args: the job's `count`. Reply head: u8 known, u64 count.
//! - [`LOAD`]: args, u32 most tasks, u32 most bytes: the next batch (of
//!   those limits) or load error of the job's `load`, cut by the lane's
//!   own [`crate::pipeline::Loader`] (started by its first `LOAD`). Reply
//!   head: u8 0 batch / 1 error / 2 end, u64 the batch's first index,
//!   bytes the error; body: the batch's task list, as it travels in
//!   `MAP_BATCH`.
//! - [`ACC_ADD`]: args / a batch's partial accumulator: folded with the
//!   job's `reduce` into the lane's accumulator (which starts empty, and
//!   is left as it was when the reduce fails). Reply: empty.
//! - [`ACC_DONE`]: args: `done` on the lane's accumulator, which is then
//!   emptied. Reply head: u8 done failed, then as [`FAILED`]'s head if it
//!   did; body: the accumulator (the job's result).
//!
//! Replies: [`OK`] as above; [`FAILED`] (head: u8 panicked, bytes
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
    let mut head = vec![0; head_len as usize];
    r.read_exact(&mut head)?;
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

/// A [`LOAD`] reply's head and body: `None` once `load` is exhausted.
pub fn loaded_reply(loaded: Option<Loaded>) -> (Vec<u8>, Vec<u8>) {
    let mut head = Vec::with_capacity(16);
    match loaded {
        Some(Loaded::Batch(b)) => {
            head.push(0);
            put_u64(&mut head, b.first_index);
            put_bytes(&mut head, &[]);
            (head, b.tasks.into_bytes())
        }
        Some(Loaded::Error(e)) => {
            head.push(1);
            put_u64(&mut head, 0);
            put_bytes(&mut head, e.as_bytes());
            (head, Vec::new())
        }
        None => {
            head.push(2);
            put_u64(&mut head, 0);
            put_bytes(&mut head, &[]);
            (head, Vec::new())
        }
    }
}

/// Reads a [`LOAD`] reply (its body becomes the batch's task list,
/// checked, without a copy).
pub fn read_loaded(head: &[u8], body: Vec<u8>) -> Result<Option<Loaded>, String> {
    let bad = |e: crate::proto::ProtoError| format!("the executor's load: {e}");
    let mut h = Cursor::new(0, head);
    let what = h.u8("what").map_err(bad)?;
    let first_index = h.u64("first index").map_err(bad)?;
    let error = String::from_utf8_lossy(h.bytes("error").map_err(bad)?).into_owned();
    Ok(match what {
        0 => Some(Loaded::Batch(Batch {
            tasks: TaskList::from_bytes(body).map_err(bad)?,
            first_index,
        })),
        1 => Some(Loaded::Error(error)),
        _ => None,
    })
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
                body: b"the body".to_vec()
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
        for loaded in [Some(batch), Some(Loaded::Error("task 3: no".into())), None] {
            let (head, body) = loaded_reply(loaded.clone());
            assert_eq!(read_loaded(&head, body).unwrap(), loaded);
        }
        let (head, _) = loaded_reply(Some(Loaded::Batch(Batch {
            tasks: TaskList::new(),
            first_index: 0,
        })));
        assert!(
            read_loaded(&head, vec![0, 0, 0, 9]).is_err(),
            "a list cut short"
        );
    }
}
