//! The outputs of ended jobs, kept on the manager for their clients to
//! fetch (`OUTPUT_REQUEST`): `redmap run` fetches its job's as soon as it
//! ends, and `redmap jobs output ID` a detached job's later. Each output
//! is a file (the system's temporary directory; see
//! [`crate::pipeline::cluster::OutputFile`]), so the manager's memory does
//! not grow with them.
//!
//! Bounded in bytes and time, checked before anything is kept: at most
//! [`MAX_KEPT_OUTPUT_BYTES`] in all, the oldest dropped first to make room
//! for a new one, and each for [`OUTPUT_TTL`] after its job ended. An
//! output larger than the whole bound is not kept, and its job says so.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::info;

/// Most bytes of outputs a manager keeps at once (1 GiB, on disk), both
/// forms of every kept output counted.
pub const MAX_KEPT_OUTPUT_BYTES: usize = 1 << 30;

/// How long an output is kept after its job ended (10 minutes).
pub const OUTPUT_TTL: Duration = Duration::from_secs(600);

/// Which form of an output a client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// The bytes as the job made them: a byte-level job's final
    /// accumulator, or a keyed job's output run (pairs in the `Codec`
    /// encoding, sorted by key).
    Binary,
    /// One `key<TAB>value` line per key for a keyed job; the same bytes as
    /// `Binary` for a byte-level job.
    Text,
}

pub use crate::pipeline::cluster::{Output, OutputFile};
use crate::proto::msg::shuffle::Part;

fn output_bytes(output: &Output) -> usize {
    let text = match &output.text {
        Some(Ok(text)) => text.len(),
        _ => 0,
    };
    usize::try_from(output.binary.len() + text).unwrap_or(usize::MAX)
}

struct Kept {
    binary: Arc<OutputFile>,
    /// `None`: the text is the binary (a byte-level job).
    text: Option<Result<Arc<OutputFile>, String>>,
    until: Instant,
    bytes: usize,
}

/// What the store says of one job's output.
#[derive(Debug, Clone)]
pub enum Lookup {
    Found(Arc<OutputFile>),
    /// Not kept, or no longer: why, for the client.
    Gone(String),
}

/// The kept outputs, by job id.
pub struct Outputs {
    /// Most bytes kept at once: [`MAX_KEPT_OUTPUT_BYTES`].
    bound: usize,
    kept: BTreeMap<u64, Kept>,
    /// Jobs whose output was not kept or was dropped, and why (bounded
    /// like the jobs the manager keeps summaries of).
    gone: BTreeMap<u64, String>,
    bytes: usize,
    /// Keyed jobs' outputs kept on the workers that reduced them: where
    /// each partition is, until when. Not counted in the bound: their
    /// bytes are on the workers' disks.
    parts: BTreeMap<u64, (Vec<Part>, Instant)>,
}

/// Most "why it is gone" notes kept.
const MAX_GONE_NOTES: usize = 1000;

impl Default for Outputs {
    fn default() -> Outputs {
        Outputs::with_bound(MAX_KEPT_OUTPUT_BYTES)
    }
}

impl Outputs {
    /// A store that keeps at most `bound` bytes.
    pub fn with_bound(bound: usize) -> Outputs {
        Outputs {
            bound,
            kept: BTreeMap::new(),
            gone: BTreeMap::new(),
            bytes: 0,
            parts: BTreeMap::new(),
        }
    }

    /// Keeps job `job`'s output until `now + OUTPUT_TTL`, dropping the
    /// oldest kept outputs if the bound needs room. Returns why it was not
    /// kept, if it is larger than the whole bound.
    pub fn keep(&mut self, job: u64, output: Output, now: Instant) -> Option<String> {
        let bytes = output_bytes(&output);
        if bytes > self.bound {
            let why = format!(
                "job {job}'s output ({bytes} bytes) was not kept: over the manager's bound of \
                 {} bytes",
                self.bound
            );
            self.note_gone(job, why.clone());
            return Some(why);
        }
        while self.bytes + bytes > self.bound {
            // The one whose job ended first (not the lowest id: a long job
            // with a low id may have just ended).
            let Some((&oldest, _)) = self.kept.iter().min_by_key(|(_, k)| k.until) else {
                break;
            };
            self.drop_kept(
                oldest,
                format!("job {oldest}'s output was dropped to make room for a newer job's"),
            );
        }
        self.bytes += bytes;
        self.kept.insert(
            job,
            Kept {
                binary: Arc::new(output.binary),
                text: output.text.map(|t| t.map(Arc::new)),
                until: now + OUTPUT_TTL,
                bytes,
            },
        );
        None
    }

    /// Job `job`'s output in `form`, if kept.
    pub fn get(&self, job: u64, form: Form) -> Lookup {
        match self.kept.get(&job) {
            Some(k) => match (form, &k.text) {
                (Form::Text, Some(Ok(text))) => Lookup::Found(Arc::clone(text)),
                (Form::Text, Some(Err(why))) => Lookup::Gone(format!(
                    "job {job}'s output has no text form ({why}); fetch it with --format binary"
                )),
                _ => Lookup::Found(Arc::clone(&k.binary)),
            },
            None => Lookup::Gone(self.gone.get(&job).cloned().unwrap_or_else(|| {
                format!("job {job} kept no output (it failed or was cancelled before it had one)")
            })),
        }
    }

    /// Keeps where job `job`'s partitions are, until `now + OUTPUT_TTL`.
    pub fn keep_parts(&mut self, job: u64, parts: Vec<Part>, now: Instant) {
        self.parts.insert(job, (parts, now + OUTPUT_TTL));
    }

    /// Where job `job`'s partitions are, if its output is kept on workers.
    pub fn parts(&self, job: u64) -> Option<&[Part]> {
        self.parts.get(&job).map(|(p, _)| p.as_slice())
    }

    /// Drops the places of partitions kept past their time; returns their
    /// jobs, whose files the workers are told to remove.
    pub fn expire_parts(&mut self, now: Instant) -> Vec<u64> {
        let old: Vec<u64> = self
            .parts
            .iter()
            .filter(|(_, (_, until))| *until <= now)
            .map(|(id, _)| *id)
            .collect();
        for job in &old {
            self.parts.remove(job);
            self.note_gone(
                *job,
                format!(
                    "job {job}'s output was dropped {} minutes after the job ended",
                    OUTPUT_TTL.as_secs() / 60
                ),
            );
        }
        old
    }

    /// Drops the outputs kept past their time.
    pub fn expire(&mut self, now: Instant) {
        let old: Vec<u64> = self
            .kept
            .iter()
            .filter(|(_, k)| k.until <= now)
            .map(|(id, _)| *id)
            .collect();
        for job in old {
            self.drop_kept(
                job,
                format!(
                    "job {job}'s output was dropped {} minutes after the job ended",
                    OUTPUT_TTL.as_secs() / 60
                ),
            );
        }
    }

    /// Bytes kept now.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn drop_kept(&mut self, job: u64, why: String) {
        if let Some(k) = self.kept.remove(&job) {
            self.bytes -= k.bytes;
            info!("{why}");
            self.note_gone(job, why);
        }
    }

    fn note_gone(&mut self, job: u64, why: String) {
        self.gone.insert(job, why);
        while self.gone.len() > MAX_GONE_NOTES {
            self.gone.pop_first();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A file of `n` copies of `byte`, in the test's directory.
    fn file(byte: u8, n: usize) -> OutputFile {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!("redmap-outputs-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let prefix = NEXT.fetch_add(1, Ordering::Relaxed).to_string();
        OutputFile::with(&dir, &prefix, "bin", &vec![byte; n]).unwrap()
    }

    fn output(binary: usize, text: Option<usize>) -> Output {
        Output {
            binary: file(1, binary),
            text: text.map(|n| Ok(file(2, n))),
        }
    }

    /// The bytes of a found output.
    fn found(lookup: Lookup) -> Vec<u8> {
        match lookup {
            Lookup::Found(f) => f.read_at(0, usize::MAX).unwrap(),
            Lookup::Gone(why) => panic!("gone: {why}"),
        }
    }

    #[test]
    fn a_kept_output_is_found_in_both_forms_until_its_time_and_its_files_go() {
        let mut outputs = Outputs::default();
        let now = Instant::now();
        assert_eq!(outputs.keep(7, output(3, Some(5)), now), None);
        assert_eq!(found(outputs.get(7, Form::Binary)), [1; 3]);
        assert_eq!(found(outputs.get(7, Form::Text)), [2; 5]);
        // A byte-level job's text is its binary.
        outputs.keep(8, output(4, None), now);
        assert_eq!(found(outputs.get(8, Form::Text)), [1; 4]);
        assert_eq!(outputs.bytes(), 12);
        outputs.expire(now + OUTPUT_TTL - Duration::from_secs(1));
        assert!(matches!(outputs.get(7, Form::Text), Lookup::Found(_)));
        let path = match outputs.get(7, Form::Binary) {
            Lookup::Found(f) => f.path().to_owned(),
            Lookup::Gone(_) => unreachable!(),
        };
        outputs.expire(now + OUTPUT_TTL);
        assert_eq!(outputs.bytes(), 0);
        assert!(!path.exists(), "an expired output's file is left");
        let Lookup::Gone(why) = outputs.get(7, Form::Text) else {
            panic!("kept past its time");
        };
        assert!(
            why.contains("dropped 10 minutes after the job ended"),
            "{why}"
        );
    }

    #[test]
    fn the_oldest_outputs_make_room_and_one_over_the_bound_is_not_kept() {
        let mut outputs = Outputs::with_bound(100);
        let now = Instant::now();
        let half = 50;
        // Job 1 (a long one) ended after job 2: job 2's output goes first.
        outputs.keep(2, output(half, None), now);
        outputs.keep(1, output(half, None), now + Duration::from_secs(2));
        outputs.keep(3, output(10, None), now + Duration::from_secs(3));
        assert!(outputs.bytes() <= 100);
        let Lookup::Gone(why) = outputs.get(2, Form::Binary) else {
            panic!("job 2's output is still kept");
        };
        assert!(why.contains("to make room"), "{why}");
        assert!(matches!(outputs.get(1, Form::Binary), Lookup::Found(_)));
        assert!(matches!(outputs.get(3, Form::Binary), Lookup::Found(_)));
        // Too big for the whole bound: refused before anything is dropped.
        let why = outputs.keep(4, output(100, Some(1)), now);
        assert!(why.is_some_and(|w| w.contains("not kept")));
        assert!(matches!(outputs.get(1, Form::Binary), Lookup::Found(_)));
        // A keyed output whose text form failed: binary only, and why.
        let text_failed = Output {
            binary: file(1, 4),
            text: Some(Err("a key does not decode".into())),
        };
        outputs.keep(5, text_failed, now);
        assert!(matches!(outputs.get(5, Form::Binary), Lookup::Found(_)));
        let Lookup::Gone(why) = outputs.get(5, Form::Text) else {
            panic!("a text form that failed is served");
        };
        assert!(
            why.contains("no text form (a key does not decode)"),
            "{why}"
        );
        let Lookup::Gone(none) = outputs.get(99, Form::Binary) else {
            panic!("an unknown job has an output");
        };
        assert!(none.contains("kept no output"), "{none}");
    }
}
