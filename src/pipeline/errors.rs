//! Keeping a job's errors, and wording them.
//!
//! A job may fail a million tasks; no run can keep a million messages. Every
//! part of a run (the embedded run, the manager) keeps them with one rule,
//! [`ErrorLog`]: the first half of its bound and the latest half, with a
//! count of the ones dropped between. The first errors are usually the cause
//! (a bad input, a missing file, a job that cannot work at all); the latest
//! say whether it is still happening and how the job ended (`done`'s error,
//! "no attached worker can take the job"). Keeping only the first would hide
//! the end, keeping only the latest would hide the cause.

use std::collections::VecDeque;

/// Longest error message kept or sent for a task, in bytes; longer ones
/// are cut and marked (a task may fail with a whole stack trace or its
/// input quoted, and a batch of them must still fit one reply).
pub const MAX_ERROR_BYTES: usize = 1024;

/// A bounded record of errors: at most `bound` kept with their messages,
/// the first `bound / 2` (rounded up) ever pushed and the latest
/// `bound / 2`, oldest first; `total` counts every one.
///
/// `E` is what an error is: a `String` on the manager, a structured error
/// in the embedded run. An empty log does not allocate, so a batch's log
/// costs nothing until a task fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorLog<E = String> {
    /// The errors kept, oldest first: the first ones, then the latest ones
    /// (those in between are dropped). Read it; push through [`ErrorLog::push`].
    pub kept: VecDeque<E>,
    /// Errors pushed in all, kept or dropped.
    pub total: u64,
    bound: usize,
}

impl<E> ErrorLog<E> {
    /// An empty log that keeps at most `bound` errors.
    pub fn new(bound: usize) -> ErrorLog<E> {
        ErrorLog {
            kept: VecDeque::new(),
            total: 0,
            bound,
        }
    }

    /// Most errors kept.
    pub fn bound(&self) -> usize {
        self.bound
    }

    /// How many of [`ErrorLog::kept`] are the first errors; the rest are the
    /// latest, and any dropped ones came between the two.
    pub fn first_kept(&self) -> usize {
        if self.dropped() == 0 {
            self.kept.len()
        } else {
            self.bound.div_ceil(2)
        }
    }

    /// Errors pushed but not kept: the ones between the first and the latest.
    pub fn dropped(&self) -> u64 {
        self.total - self.kept.len() as u64
    }

    /// Records `error`. When the log is full, the oldest of the latest
    /// errors makes room; the first ones stay.
    pub fn push(&mut self, error: E) {
        self.total += 1;
        if self.bound == 0 {
            return;
        }
        if self.kept.len() == self.bound {
            let first = self.bound.div_ceil(2);
            if first == self.bound {
                return; // a bound of 1 keeps the first error only
            }
            self.kept.remove(first);
        }
        self.kept.push_back(error);
    }

    /// Appends `later`, a log of errors that came after this one's: the
    /// result is what pushing them all here would have kept (exactly so
    /// when both logs have the same bound).
    pub fn merge(&mut self, later: ErrorLog<E>) {
        let dropped = later.dropped();
        let mut kept = later.kept.into_iter();
        // The first ones, up to the point where `later` dropped some…
        let first = if dropped == 0 {
            kept.len()
        } else {
            later.bound.div_ceil(2)
        };
        for e in kept.by_ref().take(first) {
            self.push(e);
        }
        // …the dropped ones, counted only…
        self.total += dropped;
        // …then the latest ones.
        for e in kept {
            self.push(e);
        }
    }
}

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

/// `1234567` as `1,234,567`.
pub use crate::job::batch::thousands;

/// A size as `--memory-limit` and the other size flags read it: in the
/// largest unit that divides it (`200M`, `1G`, `1536K`), else in bytes.
pub fn size_text(bytes: u64) -> String {
    for (shift, unit) in [(30, "G"), (20, "M"), (10, "K")] {
        if bytes >= 1 << shift && bytes % (1 << shift) == 0 {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_of(bound: usize, errors: std::ops::RangeInclusive<u32>) -> ErrorLog<u32> {
        let mut log = ErrorLog::new(bound);
        for e in errors {
            log.push(e);
        }
        log
    }

    fn kept(log: &ErrorLog<u32>) -> Vec<u32> {
        log.kept.iter().copied().collect()
    }

    #[test]
    fn a_log_within_its_bound_keeps_everything_in_order() {
        let log = log_of(10, 1..=10);
        assert_eq!(kept(&log), (1..=10).collect::<Vec<_>>());
        assert_eq!((log.total, log.dropped()), (10, 0));
        assert!(ErrorLog::<String>::new(10).kept.capacity() == 0);
    }

    #[test]
    fn a_full_log_keeps_the_first_half_and_the_latest_half() {
        let log = log_of(10, 1..=1000);
        assert_eq!(kept(&log), [1, 2, 3, 4, 5, 996, 997, 998, 999, 1000]);
        assert_eq!((log.total, log.dropped()), (1000, 990));
        assert_eq!(log.first_kept(), 5, "the dropped ones come after the fifth");
        assert_eq!(
            log_of(10, 1..=7).first_kept(),
            7,
            "none dropped: all are first"
        );
        // An odd bound keeps one more of the first.
        assert_eq!(kept(&log_of(3, 1..=7)), [1, 2, 7]);
        assert_eq!(kept(&log_of(1, 1..=7)), [1]);
        let none = log_of(0, 1..=7);
        assert_eq!((none.kept.len(), none.total), (0, 7));
    }

    #[test]
    fn merging_keeps_what_one_log_would_have_kept() {
        for (a, b) in [(0, 0), (3, 4), (2, 30), (30, 2), (30, 30), (7, 13)] {
            for bound in [1, 4, 10, 20] {
                let whole = log_of(bound, 1..=a + b);
                let mut merged = log_of(bound, 1..=a);
                let mut later = ErrorLog::new(bound);
                for e in a + 1..=a + b {
                    later.push(e);
                }
                merged.merge(later);
                assert_eq!(merged, whole, "{a} then {b}, bound {bound}");
            }
        }
    }

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
