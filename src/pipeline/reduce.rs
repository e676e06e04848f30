//! Folding the batches' partial accumulators into the job's result, in
//! arrival order, then handing the result on (to `done`): the manager's reducer
//! thread and the embedded run's fold thread.
//!
//! Reduce is associative by contract, so the order partials arrive in does
//! not change the result; a partial that will not fold is reported and left
//! out, and the rest go on.

use std::sync::atomic::{AtomicBool, Ordering};

use super::JobCode;
use crate::job::run::compare_keys;
use crate::plugin::CallError;
use crate::shuffle::{Combine, ReduceError, SpillStats, SpillingReducer};

/// A batch's result as it reaches the reducer.
pub trait Partial {
    /// Its partial accumulator; `None` when none of its tasks succeeded
    /// (then nothing is folded, and it is reported as folded).
    fn value(&self) -> Option<&[u8]>;
}

/// The manager's partials: a batch's value and its number of tasks.
impl Partial for (Vec<u8>, u64) {
    fn value(&self) -> Option<&[u8]> {
        Some(&self.0)
    }
}

/// How the fold ended, when it was not cancelled.
#[derive(Debug, PartialEq, Eq)]
pub struct Ended {
    /// The job's result: every partial that folded, folded.
    pub result: Vec<u8>,
    /// What `done(result)` returned.
    pub done: Result<(), CallError>,
    /// What a keyed job's reduce spilled to disk (none for a byte-level
    /// job's fold).
    pub spills: SpillStats,
}

/// Folds `partials` into the empty accumulator as they arrive, calling
/// `folded` after each one with what its reduce returned (on `Err`, the
/// accumulator is as it was), then calls `finish` with the result (the
/// job's `done`, or whatever stands for it where `done` runs elsewhere).
///
/// Returns `None`, without calling `finish`, once `cancelled` is set; it
/// is read before each partial and before `finish`.
pub fn fold_partials<J, P>(
    job: &J,
    partials: impl IntoIterator<Item = P>,
    cancelled: &AtomicBool,
    mut folded: impl FnMut(P, Result<(), CallError>),
    finish: impl FnOnce(&[u8]) -> Result<(), CallError>,
) -> Option<Ended>
where
    J: JobCode + ?Sized,
    P: Partial,
{
    let mut acc = Vec::new();
    for partial in partials {
        if cancelled.load(Ordering::SeqCst) {
            return None;
        }
        let outcome = match partial.value() {
            None => Ok(()),
            Some(value) => job.reduce(&acc, value).map(|next| acc = next),
        };
        folded(partial, outcome);
    }
    if cancelled.load(Ordering::SeqCst) {
        return None;
    }
    let done = finish(&acc);
    Some(Ended {
        result: acc,
        done,
        spills: SpillStats::default(),
    })
}

/// Where a keyed job's reduce may hold runs, and how many bytes of them,
/// before it spills to disk (see [`crate::shuffle::spill`]).
#[derive(Debug, Clone)]
pub struct ReduceMemory {
    /// Bytes of runs held in memory at most.
    pub budget: usize,
    /// The directory spill directories are made in.
    pub spill_dir: std::path::PathBuf,
    /// Names this reduce's spill directory (the job).
    pub label: String,
}

impl ReduceMemory {
    /// The default budget: 256 MiB (`--reduce-memory`), spilling under the
    /// system's temporary directory.
    pub const DEFAULT_BUDGET: usize = 256 << 20;

    pub fn new(budget: usize, label: &str) -> ReduceMemory {
        ReduceMemory {
            budget,
            spill_dir: std::env::temp_dir(),
            label: label.to_owned(),
        }
    }
}

/// The job's `reduce`, as a [`Combine`]: each chunk of merged pairs goes
/// through one of its reducers.
impl<J: super::KeyedCode + ?Sized> Combine for &J {
    fn combine(&mut self, run: &[u8]) -> Result<Vec<u8>, CallError> {
        super::KeyedCode::combine(*self, run)
    }
}

/// How a keyed job's reduce ended, when it was not cancelled.
#[derive(Debug)]
pub struct Reduced {
    /// `Err` when the reduce failed: the job's `reduce` failed or panicked,
    /// or a spill file could not be written (the output is then partial).
    pub outcome: Result<(), CallError>,
    pub spills: SpillStats,
}

/// [`fold_partials`] for a keyed job: each partial's value is a run of
/// pairs; the runs are merged by key and the values of a key combined by
/// the job, within `memory` (past it, spilling to disk); at the end the
/// output goes to `output` in pieces (each a sorted run of whole pairs, in
/// key order), so it is never held whole here. A run that is not framed
/// as a run is reported to `folded` and left out; a reduce that fails
/// fails every partial after it and the result.
///
/// Returns `None` once `cancelled` is set (read before each partial and
/// before the output).
pub fn fold_runs<P: Partial, J: super::KeyedCode + ?Sized>(
    plugin: &J,
    partials: impl IntoIterator<Item = P>,
    cancelled: &AtomicBool,
    memory: &ReduceMemory,
    mut folded: impl FnMut(P, Result<(), CallError>),
    output: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> Option<Reduced> {
    let mut reducer = SpillingReducer::new(plugin, memory.budget, &memory.spill_dir, &memory.label);
    let mut broken: Option<CallError> = None;
    for partial in partials {
        if cancelled.load(Ordering::SeqCst) {
            return None; // the reducer's spill files go with it
        }
        let outcome = match (partial.value(), &broken) {
            (_, Some(e)) => Err(e.clone()),
            (None, None) => Ok(()),
            (Some(run), None) => match check_run(run) {
                Err(why) => Err(CallError {
                    panicked: false,
                    message: format!("the batch's pairs {why}"),
                }),
                Ok(()) => reducer.add(run.to_vec()).map_err(|e| {
                    let e = reduce_failed(e);
                    broken = Some(e.clone());
                    e
                }),
            },
        };
        folded(partial, outcome);
    }
    if cancelled.load(Ordering::SeqCst) {
        return None;
    }
    let spills = reducer.stats();
    if let Some(e) = broken {
        return Some(Reduced {
            outcome: Err(e),
            spills,
        });
    }
    if spills.spills > 0 {
        log::info!(
            "{}: the reduce spilled {} times ({} bytes) past its {} bytes of memory",
            memory.label,
            spills.spills,
            spills.bytes,
            memory.budget
        );
    }
    let outcome = match reducer.finish_to(cancelled, output) {
        Err(ReduceError::Cancelled) => return None,
        outcome => outcome.map_err(reduce_failed),
    };
    Some(Reduced { outcome, spills })
}

/// Checks that `run` is a run: framed pairs, sorted by key, each key once
/// (a run that is not would be merged wrong, and fail the whole reduce
/// later instead of its one batch now).
fn check_run(run: &[u8]) -> Result<(), String> {
    let mut last: Option<&[u8]> = None;
    for pair in crate::job::run::pairs(run) {
        let (key, _) = pair.map_err(|e| format!("do not decode: {e}"))?;
        if last.is_some_and(|last| compare_keys(last, key).is_ge()) {
            return Err("are not sorted by key, each key once".into());
        }
        last = Some(key);
    }
    Ok(())
}

/// A reduce's failure as the job's error.
fn reduce_failed(e: ReduceError) -> CallError {
    match e {
        ReduceError::Job(e) => CallError {
            message: format!("the reduce failed: {}", e.message),
            ..e
        },
        ReduceError::Io(e) => CallError {
            panicked: false,
            message: format!("the reduce failed: {e}"),
        },
        ReduceError::Cancelled => CallError {
            panicked: false,
            message: "the reduce was cancelled".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::Sums;
    use super::*;

    fn partial(v: &str) -> (Vec<u8>, u64) {
        (v.as_bytes().to_vec(), 1)
    }

    #[test]
    fn partials_fold_in_order_and_a_bad_one_is_left_out() {
        let mut seen = Vec::new();
        let ended = fold_partials(
            &Sums,
            [partial("5"), partial("bad"), partial("7")],
            &AtomicBool::new(false),
            |p, outcome| seen.push((p.0, outcome.map_err(|e| e.message))),
            |r| Sums.done(r),
        );
        assert_eq!(
            seen,
            [
                (b"5".to_vec(), Ok(())),
                (b"bad".to_vec(), Err("will not fold".to_owned())),
                (b"7".to_vec(), Ok(())),
            ]
        );
        assert_eq!(
            ended,
            Some(Ended {
                result: b"12".to_vec(),
                done: Ok(()),
                spills: SpillStats::default(),
            })
        );
    }

    #[test]
    fn done_gets_the_empty_result_and_its_error_is_returned() {
        let ended = fold_partials(
            &Sums,
            Vec::<(Vec<u8>, u64)>::new(),
            &AtomicBool::new(false),
            |_, _| {},
            |r| Sums.done(r),
        );
        let ended = ended.expect("not cancelled");
        assert!(ended.result.is_empty());
        assert_eq!(ended.done.unwrap_err().message, "nothing to do");
    }

    #[test]
    fn a_cancelled_fold_stops_and_skips_done() {
        let cancelled = AtomicBool::new(false);
        let mut folded = 0;
        let partials = (0..5).map(|i| {
            if i == 2 {
                cancelled.store(true, Ordering::SeqCst);
            }
            partial("1")
        });
        assert_eq!(
            fold_partials(
                &Sums,
                partials,
                &cancelled,
                |_, _| folded += 1,
                |r| { Sums.done(r) }
            ),
            None
        );
        assert_eq!(folded, 2);
    }
}
