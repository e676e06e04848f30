//! Mapping a batch and folding it into one partial accumulator: what a
//! worker does with each batch, and what the embedded run does too.

use super::loader::{CallError, Plugin};

/// Longest error message kept or sent for a task, in bytes; longer ones
/// are cut and marked (a task may fail with a whole stack trace or its
/// input quoted, and a batch of them must still fit one reply).
pub const MAX_ERROR_BYTES: usize = 1024;

/// `message` cut to at most [`MAX_ERROR_BYTES`] bytes on a character
/// boundary, ending in a mark that gives its whole length when cut.
pub fn cap_error(message: String) -> String {
    if message.len() <= MAX_ERROR_BYTES {
        return message;
    }
    let mark = format!(" … [cut, {} bytes in all]", message.len());
    let mut end = MAX_ERROR_BYTES - mark.len();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let mut cut = message;
    cut.truncate(end);
    cut.push_str(&mark);
    cut
}

/// How errors name a task: its number as the user counts it (the n-th
/// task `load` yielded, from 1, load errors included) and a short preview
/// of its payload, escaped, e.g. `task 7 ("7")` or `task 2 ("\xff\x00…")`.
pub fn task_label(number: u64, payload: &[u8]) -> String {
    const PREVIEW: usize = 24;
    let shown = &payload[..payload.len().min(PREVIEW)];
    let more = if payload.len() > PREVIEW { "…" } else { "" };
    format!("task {number} (\"{}{more}\")", shown.escape_ascii())
}

/// Where a task failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailedIn {
    Map,
    /// Its value could not be folded into the batch's accumulator.
    Reduce,
    /// Its value, alone, is larger than a result may be: no retry helps.
    TooLarge,
    /// Not run: the batch's result had reached its size limit. The task
    /// goes out again in another batch, with no attempt counted.
    Deferred,
}

#[derive(Debug)]
pub struct TaskFailed {
    /// Index of the task within the batch.
    pub index: u32,
    pub stage: FailedIn,
    pub error: CallError,
}

#[derive(Debug, Default)]
pub struct Folded {
    /// The batch's partial accumulator; `None` if no task succeeded.
    pub value: Option<Vec<u8>>,
    pub processed: u32,
    pub failures: Vec<TaskFailed>,
}

/// The most a batch's partial accumulator may weigh, in bytes, and what
/// that limit is, for the error that names it.
#[derive(Debug, Clone)]
pub struct ValueLimit {
    pub bytes: usize,
    /// Says whose limit it is, e.g. "the manager's --max-size of 1,000,000".
    pub whose: String,
}

impl ValueLimit {
    /// No limit (the embedded run keeps its values in memory).
    pub fn none() -> ValueLimit {
        ValueLimit {
            bytes: usize::MAX,
            whose: String::new(),
        }
    }

    fn too_large(&self, what: &str, len: usize) -> CallError {
        CallError {
            message: format!(
                "{what} is {} bytes, over {} ({} bytes for a batch's value)",
                thousands(len as u64),
                self.whose,
                thousands(self.bytes as u64)
            ),
            panicked: false,
        }
    }
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Maps every task and folds the values with reduce, starting from the
/// empty accumulator. A failed task is recorded and skipped.
///
/// The accumulator stays within `limit`: a value over it on its own fails
/// its task for good ([`FailedIn::TooLarge`]); once folding a value would
/// take the accumulator over it, that task and the rest of the batch are
/// [`FailedIn::Deferred`], to go out again in a batch of their own.
pub fn fold_batch<'a>(
    plugin: &Plugin,
    tasks: impl Iterator<Item = &'a [u8]>,
    limit: &ValueLimit,
) -> Folded {
    let mut folded = Folded::default();
    let mut deferring = false;
    for (index, task) in tasks.enumerate() {
        let index = index as u32;
        let fail = |stage, error| TaskFailed {
            index,
            stage,
            error,
        };
        if deferring {
            folded
                .failures
                .push(fail(FailedIn::Deferred, CallError::deferred()));
            continue;
        }
        let value = match plugin.map(task) {
            Ok(v) if v.len() > limit.bytes => {
                let error = limit.too_large("map value", v.len());
                folded.failures.push(fail(FailedIn::TooLarge, error));
                continue;
            }
            Ok(v) => v,
            Err(error) => {
                folded.failures.push(fail(FailedIn::Map, error));
                continue;
            }
        };
        match plugin.reduce(folded.value.as_deref().unwrap_or(&[]), &value) {
            Ok(acc) if acc.len() > limit.bytes && folded.value.is_none() => {
                let error = limit.too_large("the folded value", acc.len());
                folded.failures.push(fail(FailedIn::TooLarge, error));
            }
            Ok(acc) if acc.len() > limit.bytes => {
                deferring = true;
                folded
                    .failures
                    .push(fail(FailedIn::Deferred, CallError::deferred()));
            }
            Ok(acc) => {
                folded.value = Some(acc);
                folded.processed += 1;
            }
            Err(error) => folded.failures.push(fail(FailedIn::Reduce, error)),
        }
    }
    folded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_errors_are_cut_on_a_char_boundary_and_marked() {
        assert_eq!(cap_error("short".into()), "short");
        let long = format!("task 3: {}", "é".repeat(40_000));
        let cut = cap_error(long.clone());
        assert!(cut.len() <= MAX_ERROR_BYTES, "{} bytes", cut.len());
        assert!(cut.starts_with("task 3: é"));
        assert!(cut.ends_with(&format!("[cut, {} bytes in all]", long.len())));
        let exact = "x".repeat(MAX_ERROR_BYTES);
        assert_eq!(cap_error(exact.clone()), exact);
    }

    #[test]
    fn tasks_are_labelled_from_one_with_an_escaped_preview() {
        assert_eq!(task_label(7, b"7"), "task 7 (\"7\")");
        assert_eq!(task_label(1, b"\xff\n\"q"), "task 1 (\"\\xff\\n\\\"q\")");
        let long = task_label(3, &[b'a'; 100]);
        assert_eq!(long, format!("task 3 (\"{}…\")", "a".repeat(24)));
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(2_000_029), "2,000,029");
    }
}
