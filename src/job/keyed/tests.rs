//! The job side of keyed jobs: a batch is mapped and combined into one
//! sorted run, runs combine into the output, and failures stay per task.

use super::*;
use crate::job::codec::to_bytes;

/// Word count, with a task that fails on purpose ("boom") after emitting.
struct WordCount;

impl KeyedJob for WordCount {
    type Task = String;
    type Key = String;
    type Value = u64;
    fn load(&self) -> TypedTasks<String> {
        Box::new(std::iter::empty())
    }
    fn map(&self, line: String, out: &mut Emit<'_, Self>) -> Result<(), Error> {
        if line.contains("panic") {
            out.emit("emitted before the panic".into(), 1);
            panic!("a task that panics");
        }
        for (i, word) in line.split_whitespace().enumerate() {
            // Both ways of emitting, which must agree.
            if i % 2 == 0 {
                out.emit(word.to_owned(), 1);
            } else {
                out.emit_borrowed(word, 1);
            }
        }
        if line.contains("boom") {
            return Err(Error::msg("boom"));
        }
        Ok(())
    }
    fn reduce(&self, count: &mut u64, more: u64) {
        *count += more;
    }
    fn done(&self, _output: Vec<(String, u64)>) -> Result<(), Error> {
        Ok(())
    }
}

fn tasks(lines: &[&str]) -> Vec<Vec<u8>> {
    lines.iter().map(|l| to_bytes(&l.to_string())).collect()
}

fn pairs(run: &[u8]) -> Vec<(String, u64)> {
    decode_pairs(run)
        .collect::<Result<_, _>>()
        .expect("a run of pairs")
}

#[test]
fn a_batch_sends_each_distinct_key_once_sorted_by_key() {
    let batch = tasks(&["b a b", "c b", "a"]);
    let mapped = map_batch(&WordCount, batch.iter().map(Vec::as_slice));
    assert_eq!(
        pairs(&mapped.pairs),
        [("a".into(), 2), ("b".into(), 3), ("c".into(), 1)]
    );
    assert_eq!((mapped.keys, mapped.emitted, mapped.processed), (3, 6, 3));
    assert!(mapped.failures.is_empty());
}

#[test]
fn a_failing_task_fails_alone_and_leaves_nothing_behind() {
    let mut batch = tasks(&["a", "a boom", "b"]);
    batch.push(vec![0xFF, 0, 1]); // not UTF-8: not a String
    let mapped = map_batch(&WordCount, batch.iter().map(Vec::as_slice));
    assert_eq!(pairs(&mapped.pairs), [("a".into(), 1), ("b".into(), 1)]);
    assert_eq!(mapped.processed, 2);
    assert_eq!(
        mapped.failures,
        [
            TaskFailure {
                index: 1,
                panicked: false,
                message: "boom".into()
            },
            TaskFailure {
                index: 3,
                panicked: false,
                message: "cannot decode a String: it is not UTF-8".into()
            },
        ]
    );
}

#[test]
fn failures_after_good_tasks_take_back_exactly_their_own_pairs() {
    let batch = tasks(&["x y", "x", "y boom", "x boom", "z", "boom"]);
    let mapped = map_batch(&WordCount, batch.iter().map(Vec::as_slice));
    assert_eq!(
        pairs(&mapped.pairs),
        [("x".into(), 2), ("y".into(), 1), ("z".into(), 1)]
    );
    let failed: Vec<u32> = mapped.failures.iter().map(|f| f.index).collect();
    assert_eq!((mapped.processed, failed), (3, vec![2, 3, 5]));
    assert_eq!(mapped.emitted, 4, "the good tasks' pairs only");
}

#[test]
fn runs_combine_into_one_output_whatever_their_order() {
    let first = map_batch(&WordCount, tasks(&["x y", "y"]).iter().map(Vec::as_slice));
    let second = map_batch(&WordCount, tasks(&["y z", "a"]).iter().map(Vec::as_slice));
    let mut forward = Reducer::default();
    assert_eq!(forward.add(&WordCount, &first.pairs), Ok(2));
    assert_eq!(forward.add(&WordCount, &second.pairs), Ok(3));
    assert_eq!(forward.keys(), 4);
    let mut backward = Reducer::default();
    backward.add(&WordCount, &second.pairs).unwrap();
    backward.add(&WordCount, &first.pairs).unwrap();
    let (a, b) = (forward.finish(), backward.finish());
    assert_eq!(a, b, "the same bytes, whatever the order runs arrive in");
    assert_eq!(
        pairs(&a),
        [
            ("a".into(), 1),
            ("x".into(), 1),
            ("y".into(), 3),
            ("z".into(), 1)
        ]
    );
}

#[test]
fn a_run_that_does_not_decode_is_refused_whole() {
    let good = map_batch(&WordCount, tasks(&["k"]).iter().map(Vec::as_slice));
    let mut run = good.pairs.clone();
    // A whole pair whose value is 2 bytes, not a u64's 8.
    crate::job::run::push_pair(
        &mut run,
        &crate::job::codec::to_bytes(&"x".to_string()),
        &[0, 1],
    );
    let mut reducer = Reducer::default();
    let err = reducer.add(&WordCount, &run).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot decode a u64: the input ends inside it"
    );
    assert_eq!(reducer.keys(), 0, "none of it counted");
    // A run cut inside a pair.
    let cut = &good.pairs[..good.pairs.len() - 1];
    let err = reducer.add(&WordCount, cut).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot decode a run: the input ends inside a pair"
    );
    assert_eq!(reducer.keys(), 0);
}

#[test]
fn a_unit_key_is_a_global_fold() {
    struct Sum;
    impl KeyedJob for Sum {
        type Task = u64;
        type Key = ();
        type Value = u64;
        fn load(&self) -> TypedTasks<u64> {
            Box::new(std::iter::empty())
        }
        fn map(&self, n: u64, out: &mut Emit<'_, Self>) -> Result<(), Error> {
            out.emit((), n);
            Ok(())
        }
        fn reduce(&self, acc: &mut u64, n: u64) {
            *acc += n;
        }
        fn done(&self, _output: Vec<((), u64)>) -> Result<(), Error> {
            Ok(())
        }
    }
    let batch: Vec<Vec<u8>> = (1..=10u64).map(|n| to_bytes(&n)).collect();
    let mapped = map_batch(&Sum, batch.iter().map(Vec::as_slice));
    let total: Vec<((), u64)> = decode_pairs(&mapped.pairs)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(total, [((), 55)]);
}

#[test]
fn the_fast_hasher_spreads_short_keys() {
    use std::collections::HashSet;
    use std::hash::BuildHasher;
    let build = BuildHasherDefault::<FastHasher>::default();
    let hashes: HashSet<u64> = (0..10_000u32)
        .map(|n| build.hash_one(format!("w{n}")))
        .collect();
    assert_eq!(hashes.len(), 10_000, "no collisions among 10,000 words");
}

#[test]
fn a_task_list_is_read_as_map_batch_carries_it() {
    let mut list = 2u32.to_be_bytes().to_vec();
    for task in [&b"ab"[..], b""] {
        list.extend_from_slice(&(task.len() as u32).to_be_bytes());
        list.extend_from_slice(task);
    }
    assert_eq!(task_list(&list), Ok(vec![&b"ab"[..], &b""[..]]));
    assert!(task_list(&list[..list.len() - 1]).is_err());
    assert!(task_list(&[0, 0]).is_err());
}

#[test]
fn a_panicking_task_fails_alone_like_a_failing_one() {
    let batch = tasks(&["a b", "panic", "b", "panic too", "c"]);
    let mapped = map_batch(&WordCount, batch.iter().map(Vec::as_slice));
    assert_eq!(
        pairs(&mapped.pairs),
        [("a".into(), 1), ("b".into(), 2), ("c".into(), 1)]
    );
    assert_eq!(mapped.processed, 3);
    let failed: Vec<(u32, bool)> = mapped
        .failures
        .iter()
        .map(|f| (f.index, f.panicked))
        .collect();
    assert_eq!(failed, [(1, true), (3, true)]);
    assert!(
        mapped.failures[0].message.contains("a task that panics"),
        "{:?}",
        mapped.failures
    );
}
