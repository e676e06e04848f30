//! The ledger's rules, each as a story of one batch.

use super::*;
use crate::net::slots::SlotId;

fn conn(i: usize) -> ConnId {
    ConnId {
        index: i,
        generation: 0,
    }
}

fn worker(i: usize) -> WorkerId {
    WorkerId::from_parts(i, 0)
}

fn tasks(n: usize) -> TaskList {
    let mut list = TaskList::new();
    for i in 0..n {
        list.push(format!("t{i}").as_bytes());
    }
    list
}

/// A ledger with one batch of `n` tasks (id 1, job 7) sent to worker 0
/// on connection 0 as request 1.
fn one_batch(n: usize, suspect: bool) -> (Ledger, u64) {
    let mut l = Ledger::new();
    let batch = l.new_batch();
    let p = Pending {
        suspect,
        ..Pending::new(tasks(n), 0)
    };
    let copy = Copy {
        conn: conn(0),
        request: 1,
        worker: worker(0),
    };
    l.add_copy(batch, 7, p, copy, Instant::now());
    (l, batch)
}

fn resend(l: &mut Ledger, batch: u64, p: Pending, request: u32, w: usize) {
    let copy = Copy {
        conn: conn(w),
        request,
        worker: worker(w),
    };
    l.add_copy(batch, 7, p, copy, Instant::now());
}

#[test]
fn the_first_answer_wins_and_a_later_one_is_a_duplicate() {
    let (mut l, batch) = one_batch(3, false);
    l.add_backup(
        batch,
        Copy {
            conn: conn(1),
            request: 9,
            worker: worker(1),
        },
    );
    assert_eq!((l.in_flight(7), l.running_tasks(7)), (1, 3));
    assert!(l.remove(batch).is_some());
    assert!(l.remove(batch).is_none(), "a second answer is a duplicate");
    assert_eq!((l.in_flight(7), l.running_tasks(7)), (0, 0));
}

#[test]
fn a_departed_workers_batch_goes_back_whole_however_often_with_no_attempt_counted() {
    let (mut l, batch) = one_batch(3, false);
    // Departures are never the tasks' doing: the same batch lost three
    // times this way is never split, and never counts an attempt.
    for n in 0..3 {
        let (c, request) = (n, n as u32 + 1);
        let Requeue::Front(p) = l.lose_copy(batch, (conn(c), request), Loss::Departed, 3) else {
            panic!("requeued whole")
        };
        assert_eq!((p.batch, p.tasks.len(), p.attempt), (Some(batch), 3, 0));
        assert_eq!(p.avoid, Some(worker(c)));
        assert!(l.is_open(batch), "it keeps its id and entry");
        assert_eq!((l.in_flight(7), l.running_tasks(7)), (1, 0));
        resend(&mut l, batch, p, request + 1, c + 1);
        assert_eq!(l.running_tasks(7), 3);
    }
}

#[test]
fn a_batch_lost_twice_to_crashes_is_split_into_suspects() {
    let (mut l, batch) = one_batch(3, false);
    let Requeue::Front(p) = l.lose_copy(batch, (conn(0), 1), Loss::Crashed, 3) else {
        panic!("the first crash requeues it whole")
    };
    resend(&mut l, batch, p, 2, 1);
    let Requeue::Suspects(singles) = l.lose_copy(batch, (conn(1), 2), Loss::Crashed, 3) else {
        panic!("the second crash splits it")
    };
    let firsts: Vec<u64> = singles.iter().map(|p| p.first_index).collect();
    assert_eq!(firsts, [0, 1, 2]);
    assert!(singles.iter().all(|p| p.suspect && p.tasks.len() == 1));
    assert!(!l.is_open(batch));
    assert_eq!((l.in_flight(7), l.running_tasks(7)), (0, 0));
}

#[test]
fn a_suspect_runs_alone_and_fails_after_max_retries() {
    let (mut l, batch) = one_batch(1, true);
    assert!(l.holds_suspect(worker(0)));
    let Requeue::Retry(p) = l.lose_copy(batch, (conn(0), 1), Loss::Crashed, 1) else {
        panic!("a suspect's first loss is one attempt")
    };
    assert_eq!(p.attempt, 1);
    assert!(!l.holds_suspect(worker(0)));
    resend(&mut l, batch, p, 2, 1);
    assert!(l.holds_suspect(worker(1)));
    let Requeue::Failed(why) = l.lose_copy(batch, (conn(1), 2), Loss::TimedOut, 1) else {
        panic!("over --max-retries it fails")
    };
    assert!(
        why.contains("no answer within the task timeout, 2 times"),
        "{why}"
    );
    assert!(!l.holds_suspect(worker(1)));
    assert_eq!(l.in_flight(7), 0);
}

#[test]
fn losing_one_of_two_copies_leaves_the_other_to_answer() {
    let (mut l, batch) = one_batch(2, false);
    l.add_backup(
        batch,
        Copy {
            conn: conn(1),
            request: 5,
            worker: worker(1),
        },
    );
    assert_eq!(
        l.lose_copy(batch, (conn(0), 1), Loss::Crashed, 3),
        Requeue::Nothing
    );
    assert!(l.has_copy(batch));
    assert_eq!(l.copies_on(worker(1)), vec![(batch, conn(1), 5)]);
    // A copy that is not in the ledger changes nothing.
    assert_eq!(
        l.lose_copy(batch, (conn(0), 1), Loss::Crashed, 3),
        Requeue::Nothing
    );
}

#[test]
fn a_cancelled_jobs_batches_leave_the_ledger_and_its_counts() {
    let (mut l, batch) = one_batch(1, true);
    assert_eq!(l.running_tasks(7), 1);
    l.drop_job(7);
    assert!(!l.is_open(batch));
    assert_eq!((l.in_flight(7), l.running_tasks(7)), (0, 0));
    assert!(!l.holds_suspect(worker(0)));
}

#[test]
fn only_pings_and_claims_expire_at_the_read_timeout() {
    let mut l = Ledger::new();
    let t0 = Instant::now();
    l.sent(conn(0), 1, Request::Ping, t0);
    l.sent(conn(3), 4, Request::Claim, t0);
    l.sent(
        conn(1),
        2,
        Request::Install {
            hash: PluginHash([0; 32]),
        },
        t0,
    );
    let batch = Request::Batch {
        batch: 1,
        job: 7,
        backup: false,
    };
    l.sent(conn(2), 3, batch, t0);
    let later = t0 + Duration::from_secs(10);
    let mut overdue = l.overdue(later, Duration::from_secs(5));
    overdue.sort();
    assert_eq!(overdue, vec![conn(0), conn(3)]);
    assert!(l.overdue(later, Duration::from_secs(5)).is_empty(), "once");
    assert_eq!(
        l.late_batches(later, Duration::from_secs(5)),
        vec![(conn(2), 3, 1)]
    );
    assert_eq!(l.take_conn(conn(2)), vec![(3, batch)]);
    assert!(l.take(conn(2), 3).is_none());
}
