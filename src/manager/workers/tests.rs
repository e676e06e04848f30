//! A worker's transitions, each as a story, and the registry's ids.

use super::*;

fn at(now: Instant) -> WorkerState {
    WorkerState::Failing {
        retry_at: now,
        backoff: FIRST_BACKOFF,
    }
}

#[test]
fn a_worker_is_attached_by_its_first_answer_and_back_by_a_later_one() {
    let now = Instant::now();
    let s = WorkerState::Connecting;
    assert_eq!(
        step(s, Event::Answered, now),
        (WorkerState::Active, Intent::Attached)
    );
    assert_eq!(
        step(at(now), Event::Answered, now),
        (WorkerState::Active, Intent::Serve)
    );
    let d = WorkerState::Detaching;
    assert_eq!(step(d, Event::Answered, now), (d, Intent::Serve));
}

#[test]
fn a_failing_worker_hands_its_batches_over_and_a_lost_one_its_libraries_too() {
    let now = Instant::now();
    let first = WorkerState::Failing {
        retry_at: now + FIRST_BACKOFF,
        backoff: FIRST_BACKOFF,
    };
    assert_eq!(
        step(WorkerState::Active, Event::Failed, now),
        (first, Intent::FailOver)
    );
    let (s, i) = step(WorkerState::Active, Event::Disconnected, now);
    assert_eq!((s, i), (first, Intent::Lost));
    assert_eq!(step(s, Event::Failed, now), (s, Intent::Nothing));
    assert_eq!(step(s, Event::Disconnected, now), (s, Intent::Nothing));
    let a = WorkerState::Active;
    assert_eq!(step(a, Event::Answered, now), (a, Intent::Serve));
    assert_eq!(step(a, Event::Tick, now), (a, Intent::Nothing));
}

#[test]
fn an_attach_that_fails_is_abandoned() {
    let now = Instant::now();
    for e in [Event::Failed, Event::Disconnected] {
        assert_eq!(
            step(WorkerState::Connecting, e, now).1,
            Intent::AbandonAttach
        );
    }
}

#[test]
fn a_detach_waits_only_for_an_active_workers_own_batches() {
    let now = Instant::now();
    let ask = |busy, force| Event::DetachAsked { busy, force };
    let a = WorkerState::Active;
    assert_eq!(
        step(a, ask(true, false), now),
        (WorkerState::Detaching, Intent::ParkDetach)
    );
    assert_eq!(step(a, ask(true, true), now).1, Intent::Remove);
    assert_eq!(step(a, ask(false, false), now).1, Intent::Remove);
    assert_eq!(step(at(now), ask(true, false), now).1, Intent::Remove);
    let d = WorkerState::Detaching;
    assert_eq!(step(d, ask(true, false), now).1, Intent::AlreadyDetaching);
    assert_eq!(step(d, Event::Drained, now).1, Intent::Remove);
    assert_eq!(step(d, Event::Failed, now).1, Intent::Remove);
    assert_eq!(step(d, Event::Disconnected, now).1, Intent::Remove);
    assert_eq!(step(a, Event::Drained, now).1, Intent::Nothing);
    // A worker still being attached goes at once (its ATTACH is refused).
    let c = WorkerState::Connecting;
    assert_eq!(step(c, ask(false, false), now).1, Intent::Remove);
}

#[test]
fn reconnects_back_off_exponentially_up_to_the_cap() {
    let start = Instant::now();
    let mut s = at(start);
    let mut now = start;
    let mut pauses = Vec::new();
    for _ in 0..8 {
        let (next, intent) = step(s, Event::Tick, now);
        assert_eq!(intent, Intent::Reconnect);
        let WorkerState::Failing { retry_at, backoff } = next else {
            panic!("still failing")
        };
        // Not before its time.
        assert_eq!(step(next, Event::Tick, now).1, Intent::Nothing);
        pauses.push(backoff);
        now = retry_at;
        s = next;
    }
    let ms: Vec<u128> = pauses.iter().map(|d| d.as_millis()).collect();
    assert_eq!(ms, [500, 1000, 2000, 4000, 8000, 10000, 10000, 10000]);
}

#[test]
fn a_detached_workers_id_does_not_find_the_worker_in_its_slot() {
    let mut workers = Workers::default();
    let sock: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let a = workers.add(Worker::new("a".into(), sock));
    workers.remove(a, true);
    let b = workers.add(Worker::new("b".into(), sock));
    assert!(workers.get(a).is_none());
    assert_eq!(workers.get(b).map(|w| w.addr.as_str()), Some("b"));
    assert_eq!(workers.terminated(), 1);
    assert_eq!(workers.ids(), vec![b]);
}
