//! Mapping a batch of a byte-level job and folding its values into one
//! partial accumulator: the one algorithm for it, run by the job library
//! itself (ABI version 3's `fold_batch`, one call into the library per
//! batch) and by the host for a version-1 library (one `map` and one
//! `reduce` call per task).
//!
//! It is dependency-free like the rest of the job API, and generic over
//! how a call fails, so each side keeps its own error type.
//!
//! The encoded form `fold_batch` returns, all integers big-endian:
//!
//! ```text
//! u32 processed, u8 has value, [u32 length, value bytes if has value],
//! u32 n, n × (u32 index, u8 stage, u8 panicked, u32 length, UTF-8 message)
//! ```
//!
//! where stage is 0 map, 1 reduce, 2 too large, 3 deferred.

/// Where a task failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailedIn {
    /// Its map returned an error or panicked.
    Map,
    /// Its value could not be folded into the batch's accumulator.
    Reduce,
    /// Its value, alone, is larger than a result may be: no retry helps.
    TooLarge,
    /// Not run: the batch's result had reached its size limit. The task
    /// goes out again in another batch, with no attempt counted.
    Deferred,
}

impl FailedIn {
    fn code(self) -> u8 {
        match self {
            FailedIn::Map => 0,
            FailedIn::Reduce => 1,
            FailedIn::TooLarge => 2,
            FailedIn::Deferred => 3,
        }
    }

    fn of(code: u8) -> Option<FailedIn> {
        Some(match code {
            0 => FailedIn::Map,
            1 => FailedIn::Reduce,
            2 => FailedIn::TooLarge,
            3 => FailedIn::Deferred,
            _ => return None,
        })
    }
}

/// A call that failed: its message, and whether it was a panic.
pub trait Failure: Sized {
    fn new(panicked: bool, message: String) -> Self;
    fn panicked(&self) -> bool;
    fn message(&self) -> &str;
}

/// One failed task of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFailed<E> {
    /// Index of the task within the batch, from 0.
    pub index: u32,
    pub stage: FailedIn,
    pub error: E,
}

/// A batch, mapped and folded.
#[derive(Debug, PartialEq, Eq)]
pub struct Folded<E> {
    /// The batch's partial accumulator; `None` if no task succeeded.
    pub value: Option<Vec<u8>>,
    /// Tasks mapped and folded into `value`.
    pub processed: u32,
    /// The other tasks, by increasing index.
    pub failures: Vec<TaskFailed<E>>,
}

impl<E> Default for Folded<E> {
    fn default() -> Self {
        Folded {
            value: None,
            processed: 0,
            failures: Vec::new(),
        }
    }
}

/// The most a batch's partial accumulator may weigh, in bytes, and what
/// that limit is, for the error that names it.
#[derive(Debug, Clone)]
pub struct ValueLimit {
    /// The limit, in bytes (`usize::MAX`: none).
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

    fn too_large<E: Failure>(&self, what: &str, len: usize) -> E {
        E::new(
            false,
            format!(
                "{what} is {} bytes, over {} ({} bytes for a batch's value)",
                thousands(len as u64),
                self.whose,
                thousands(self.bytes as u64)
            ),
        )
    }
}

/// `n` with a comma every three digits: 1,234,567.
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

/// Maps every task and folds the values with `reduce`, starting from the
/// empty accumulator, in the tasks' order. A failed task is recorded and
/// skipped; the rest go on.
///
/// The accumulator stays within `limit`: a value over it on its own fails
/// its task for good ([`FailedIn::TooLarge`]); once folding a value would
/// take the accumulator over it, that task and the rest of the batch are
/// [`FailedIn::Deferred`], to go out again in a batch of their own.
pub fn fold_batch<'a, E: Failure>(
    tasks: impl Iterator<Item = &'a [u8]>,
    mut map: impl FnMut(&[u8]) -> Result<Vec<u8>, E>,
    mut reduce: impl FnMut(&[u8], &[u8]) -> Result<Vec<u8>, E>,
    limit: &ValueLimit,
) -> Folded<E> {
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
            let none = E::new(false, String::new());
            folded.failures.push(fail(FailedIn::Deferred, none));
            continue;
        }
        let value = match map(task) {
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
        match reduce(folded.value.as_deref().unwrap_or(&[]), &value) {
            Ok(acc) if acc.len() > limit.bytes && folded.value.is_none() => {
                let error = limit.too_large("the folded value", acc.len());
                folded.failures.push(fail(FailedIn::TooLarge, error));
            }
            Ok(acc) if acc.len() > limit.bytes => {
                deferring = true;
                let none = E::new(false, String::new());
                folded.failures.push(fail(FailedIn::Deferred, none));
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

impl<E: Failure> Folded<E> {
    /// The encoded form (see the module's notes).
    pub fn encode(&self) -> Vec<u8> {
        let value_len = self.value.as_ref().map_or(0, Vec::len);
        let mut out = Vec::with_capacity(13 + value_len);
        out.extend_from_slice(&self.processed.to_be_bytes());
        match &self.value {
            Some(v) => {
                out.push(1);
                out.extend_from_slice(&(v.len() as u32).to_be_bytes());
                out.extend_from_slice(v);
            }
            None => out.push(0),
        }
        out.extend_from_slice(&(self.failures.len() as u32).to_be_bytes());
        for f in &self.failures {
            out.extend_from_slice(&f.index.to_be_bytes());
            out.push(f.stage.code());
            out.push(u8::from(f.error.panicked()));
            let message = f.error.message().as_bytes();
            out.extend_from_slice(&(message.len() as u32).to_be_bytes());
            out.extend_from_slice(message);
        }
        out
    }

    /// Reads the encoded form, checking every length and count against
    /// the bytes there are.
    pub fn decode(bytes: &[u8]) -> Result<Folded<E>, &'static str> {
        let mut b = bytes;
        let mut take = |n: usize| -> Result<&[u8], &'static str> {
            if b.len() < n {
                return Err("it is cut short");
            }
            let (head, rest) = b.split_at(n);
            b = rest;
            Ok(head)
        };
        let u32_of = |s: &[u8]| u32::from_be_bytes([s[0], s[1], s[2], s[3]]);
        let processed = u32_of(take(4)?);
        let value = match take(1)?[0] {
            0 => None,
            1 => {
                let len = u32_of(take(4)?) as usize;
                Some(take(len)?.to_vec())
            }
            _ => return Err("its value flag is neither 0 nor 1"),
        };
        let n = u32_of(take(4)?) as usize;
        let mut failures = Vec::new();
        for _ in 0..n {
            let index = u32_of(take(4)?);
            let stage = FailedIn::of(take(1)?[0]).ok_or("a failure's stage is unknown")?;
            let panicked = take(1)?[0] != 0;
            let len = u32_of(take(4)?) as usize;
            let message = String::from_utf8_lossy(take(len)?).into_owned();
            failures.push(TaskFailed {
                index,
                stage,
                error: E::new(panicked, message),
            });
        }
        Ok(Folded {
            value,
            processed,
            failures,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Eq)]
    struct Oops(bool, String);

    impl Failure for Oops {
        fn new(panicked: bool, message: String) -> Oops {
            Oops(panicked, message)
        }
        fn panicked(&self) -> bool {
            self.0
        }
        fn message(&self) -> &str {
            &self.1
        }
    }

    /// Tasks are decimal numbers; `x` fails map, `p` panics in it.
    fn sums(tasks: &[&str], limit: usize) -> Folded<Oops> {
        let limit = ValueLimit {
            bytes: limit,
            whose: "the limit".into(),
        };
        fold_batch(
            tasks.iter().map(|t| t.as_bytes()),
            |t| match t {
                b"x" => Err(Oops(false, "bad task".into())),
                b"p" => Err(Oops(true, "panic: boom".into())),
                t => Ok(t.to_vec()),
            },
            |acc, v| {
                let n = |b: &[u8]| std::str::from_utf8(b).unwrap().parse::<u64>().unwrap_or(0);
                Ok((n(acc) + n(v)).to_string().into_bytes())
            },
            &limit,
        )
    }

    #[test]
    fn a_batch_folds_what_maps_and_records_the_rest_and_reads_back() {
        let folded = sums(&["1", "x", "20", "p", "300"], usize::MAX);
        assert_eq!(folded.value.as_deref(), Some(&b"321"[..]));
        assert_eq!(folded.processed, 3);
        let stages: Vec<_> = folded.failures.iter().map(|f| (f.index, f.stage)).collect();
        assert_eq!(stages, [(1, FailedIn::Map), (3, FailedIn::Map)]);
        assert_eq!(Folded::<Oops>::decode(&folded.encode()).unwrap(), folded);
    }

    #[test]
    fn a_value_over_the_limit_fails_and_a_full_batch_defers_its_rest() {
        // "12345" alone is over 4 bytes: too large. Then the sum passes 4
        // bytes at the task "9999": it and the rest are deferred.
        let folded = sums(&["12345", "1", "9999", "2"], 4);
        assert_eq!(folded.value.as_deref(), Some(&b"1"[..]));
        let stages: Vec<_> = folded.failures.iter().map(|f| (f.index, f.stage)).collect();
        assert_eq!(
            stages,
            [
                (0, FailedIn::TooLarge),
                (2, FailedIn::Deferred),
                (3, FailedIn::Deferred)
            ]
        );
        assert_eq!(
            folded.failures[0].error.1,
            "map value is 5 bytes, over the limit (4 bytes for a batch's value)"
        );
        let none = Folded::<Oops>::default();
        assert_eq!(Folded::<Oops>::decode(&none.encode()).unwrap(), none);
    }

    #[test]
    fn an_encoding_that_lies_is_refused() {
        let bytes = sums(&["1", "x"], usize::MAX).encode();
        for cut in 0..bytes.len() {
            assert!(
                Folded::<Oops>::decode(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut huge = bytes.clone();
        huge[5..9].copy_from_slice(&u32::MAX.to_be_bytes()); // value length
        assert!(Folded::<Oops>::decode(&huge).is_err());
    }
}
