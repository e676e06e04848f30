//! Folding the batches' partial accumulators into the job's result, in
//! arrival order, then handing the result on (to `done`): the manager's reducer
//! thread and the embedded run's fold thread.
//!
//! Reduce is associative by contract, so the order partials arrive in does
//! not change the result; a partial that will not fold is reported and left
//! out, and the rest go on.

use std::sync::atomic::{AtomicBool, Ordering};

use super::JobCode;
use crate::plugin::CallError;

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
    Some(Ended { result: acc, done })
}

/// [`fold_partials`] for a keyed job: each partial's value is a run of
/// pairs, combined by key in the job's reducer; at the end the reducer's
/// output (one run, sorted by key) goes to `finish` and is the result. A
/// run the reducer refuses is reported to `folded` and left out.
pub fn fold_runs<P: Partial>(
    plugin: &crate::plugin::Instance,
    partials: impl IntoIterator<Item = P>,
    cancelled: &AtomicBool,
    mut folded: impl FnMut(P, Result<(), CallError>),
    finish: impl FnOnce(&[u8]) -> Result<(), CallError>,
) -> Option<Ended> {
    let mut reducer = match plugin.reducer() {
        Ok(r) => r,
        Err(e) => {
            // No reducer, no output: every partial is refused with why.
            for partial in partials {
                folded(partial, Err(e.clone()));
            }
            return Some(Ended {
                result: Vec::new(),
                done: Err(e),
            });
        }
    };
    for partial in partials {
        if cancelled.load(Ordering::SeqCst) {
            return None;
        }
        let outcome = match partial.value() {
            None => Ok(()),
            Some(run) => reducer.add(run),
        };
        folded(partial, outcome);
    }
    if cancelled.load(Ordering::SeqCst) {
        return None;
    }
    match reducer.finish() {
        Ok(output) => {
            let done = finish(&output);
            Some(Ended {
                result: output,
                done,
            })
        }
        Err(e) => Some(Ended {
            result: Vec::new(),
            done: Err(e),
        }),
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
                done: Ok(())
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
