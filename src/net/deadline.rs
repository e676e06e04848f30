//! The reactor's deadlines: a min-heap of (instant, connection id).
//!
//! Entries are never removed early. Each connection remembers the one
//! instant it has scheduled here; an entry that no longer matches (the
//! connection closed, its slot was reused, or its deadline moved) is stale
//! and skipped when popped. Re-arming on progress therefore costs nothing
//! until the old entry comes due, when the connection reschedules itself.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use super::slots::ConnId;

#[derive(Default)]
pub struct Deadlines {
    heap: BinaryHeap<Reverse<(Instant, ConnId)>>,
}

impl Deadlines {
    pub fn new() -> Deadlines {
        Deadlines::default()
    }

    pub fn push(&mut self, at: Instant, id: ConnId) {
        self.heap.push(Reverse((at, id)));
    }

    /// The earliest entry's instant (possibly stale).
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Pops one entry due at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, ConnId)> {
        if self.next()? <= now {
            self.heap.pop().map(|Reverse(entry)| entry)
        } else {
            None
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

/// The `poll` timeout that wakes at `deadline`: rounded *up* to the next
/// millisecond, since epoll counts in milliseconds and waking a hair early
/// would spin the loop until the deadline really passes.
pub fn poll_timeout(now: Instant, deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|at| {
        let left = at.saturating_duration_since(now);
        let ms = left.as_nanos().div_ceil(1_000_000);
        Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(index: usize) -> ConnId {
        ConnId {
            index,
            generation: 0,
        }
    }

    #[test]
    fn pops_in_time_order_and_only_when_due() {
        let t0 = Instant::now();
        let mut d = Deadlines::new();
        d.push(t0 + Duration::from_secs(2), id(2));
        d.push(t0 + Duration::from_secs(1), id(1));
        assert_eq!(d.pop_due(t0), None);
        let now = t0 + Duration::from_secs(3);
        assert_eq!(d.pop_due(now).unwrap().1, id(1));
        assert_eq!(d.pop_due(now).unwrap().1, id(2));
        assert!(d.is_empty());
    }

    #[test]
    fn poll_timeout_rounds_up() {
        let t0 = Instant::now();
        let t = poll_timeout(t0, Some(t0 + Duration::from_micros(1500)));
        assert_eq!(t, Some(Duration::from_millis(2)));
        assert_eq!(poll_timeout(t0, None), None);
        assert_eq!(
            poll_timeout(t0 + Duration::from_secs(1), Some(t0)),
            Some(Duration::ZERO)
        );
    }
}
