//! Which manager a worker belongs to (`CLAIM`), and when it stops
//! belonging to it.
//!
//! A worker serves one manager at a time, as in the original. A manager
//! claims the worker on every connection it opens; the claim lasts while
//! any of those connections is open and for a grace period after the last
//! one closes (a manager that restarts or loses its link for a moment gets
//! its worker back, its libraries still there). When the grace period ends
//! with no connection back, the worker lets the manager go and uninstalls
//! every library it had: a killed manager must not leave its libraries on
//! every worker for ever.
//!
//! Pure bookkeeping with a clock passed in, so it is tested without sockets.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::net::ConnId;
use crate::proto::msg::Claim;

/// How long a worker waits for a manager whose connections all closed
/// before it uninstalls its libraries (`--manager-grace`).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Holder {
    manager: String,
    id: u64,
    conns: HashSet<ConnId>,
    /// When its last connection closed (None while it has one).
    orphaned_at: Option<Instant>,
}

/// What a granted claim changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Granted {
    /// Another manager held the worker: its connections, which the worker
    /// now closes, and its libraries, which it uninstalls.
    pub displaced: Option<Vec<ConnId>>,
}

/// The worker's claim: none, or one manager with its connections.
#[derive(Debug)]
pub struct Claims {
    holder: Option<Holder>,
    grace: Duration,
}

impl Claims {
    pub fn new(grace: Duration) -> Claims {
        Claims {
            holder: None,
            grace,
        }
    }

    /// Applies a `CLAIM` received on `conn`. The same manager (by id) may
    /// claim any number of connections; another one is refused while the
    /// claim holds, with a message naming the holder, unless it forces. A
    /// manager restarted at the holder's address (a new id) gets the worker
    /// back once the old process's connections are all gone: it is the
    /// same manager to the operator, within the grace period too.
    pub fn claim(&mut self, conn: ConnId, claim: &Claim) -> Result<Granted, String> {
        let mut granted = Granted::default();
        match &mut self.holder {
            Some(h) if h.id == claim.manager_id => {
                h.conns.insert(conn);
                h.orphaned_at = None;
                h.manager.clone_from(&claim.manager);
                return Ok(granted);
            }
            Some(h) if h.conns.is_empty() && h.manager == claim.manager => {}
            Some(h) if !claim.force => {
                let holds = if h.conns.is_empty() {
                    format!(
                        "whose connections closed; it is free {:?} after that (--manager-grace)",
                        self.grace
                    )
                } else {
                    format!("which holds {} connections to it", h.conns.len())
                };
                return Err(format!(
                    "this worker belongs to the manager at {}, {holds} (one manager per \
                     worker; `redmap manager attach --force` takes it)",
                    h.manager
                ));
            }
            Some(h) => granted.displaced = Some(h.conns.drain().collect()),
            None => {}
        }
        self.holder = Some(Holder {
            manager: claim.manager.clone(),
            id: claim.manager_id,
            conns: HashSet::from([conn]),
            orphaned_at: None,
        });
        Ok(granted)
    }

    /// Whether a manager holds this worker through a connection now.
    pub fn connected(&self) -> bool {
        self.holder.as_ref().is_some_and(|h| !h.conns.is_empty())
    }

    /// A connection closed: if it was the holder's last, the grace period
    /// starts.
    pub fn closed(&mut self, conn: ConnId, now: Instant) {
        if let Some(h) = &mut self.holder {
            if h.conns.remove(&conn) && h.conns.is_empty() {
                h.orphaned_at = Some(now);
            }
        }
    }

    /// Whether `conn` may install libraries and send work: when nobody
    /// holds the worker (an older manager that sends no CLAIM), or when
    /// the holder claimed this connection.
    pub fn may_work(&self, conn: ConnId) -> bool {
        self.holder.as_ref().is_none_or(|h| h.conns.contains(&conn))
    }

    /// Why `conn` may not work, for the refusal.
    pub fn refusal(&self) -> String {
        match &self.holder {
            Some(h) => format!("this worker belongs to the manager at {}", h.manager),
            None => String::new(),
        }
    }

    /// The holder's address ("" for none), as INFO reports it.
    pub fn manager(&self) -> &str {
        self.holder.as_ref().map_or("", |h| h.manager.as_str())
    }

    /// When the grace period of an orphaned claim ends.
    pub fn deadline(&self) -> Option<Instant> {
        let h = self.holder.as_ref()?;
        Some(h.orphaned_at? + self.grace)
    }

    /// Ends an orphaned claim whose grace period is over: returns the
    /// manager let go, whose libraries the worker now uninstalls.
    pub fn expire(&mut self, now: Instant) -> Option<String> {
        if self.deadline().is_some_and(|d| d <= now) {
            return self.holder.take().map(|h| h.manager);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(id: u64, force: bool) -> Claim {
        Claim {
            manager: format!("10.0.0.{id}:9899"),
            manager_id: id,
            force,
        }
    }

    fn conn(n: usize) -> ConnId {
        ConnId {
            index: n,
            generation: 1,
        }
    }

    #[test]
    fn one_manager_at_a_time_unless_forced() {
        let mut c = Claims::new(Duration::from_secs(60));
        assert!(c.may_work(conn(1)), "unclaimed: an older manager may work");
        c.claim(conn(1), &claim(1, false)).unwrap();
        c.claim(conn(2), &claim(1, false)).unwrap();
        assert!(c.may_work(conn(2)));
        let refused = c.claim(conn(3), &claim(2, false)).unwrap_err();
        assert!(refused.contains("10.0.0.1:9899"), "{refused}");
        assert!(!c.may_work(conn(3)));
        let granted = c.claim(conn(3), &claim(2, true)).unwrap();
        let mut displaced = granted.displaced.unwrap();
        displaced.sort_by_key(|c| c.index);
        assert_eq!(
            displaced,
            vec![conn(1), conn(2)],
            "the old holder's, to close"
        );
        assert_eq!(c.manager(), "10.0.0.2:9899");
        assert!(
            !c.may_work(conn(1)),
            "the old holder's connections may not work"
        );
    }

    #[test]
    fn an_orphaned_claim_ends_after_the_grace_period_unless_its_manager_returns() {
        let t0 = Instant::now();
        let grace = Duration::from_secs(60);
        let mut c = Claims::new(grace);
        c.claim(conn(1), &claim(1, false)).unwrap();
        c.claim(conn(2), &claim(1, false)).unwrap();
        c.closed(conn(1), t0);
        assert_eq!(c.deadline(), None, "one connection is still open");
        c.closed(conn(2), t0);
        assert_eq!(c.deadline(), Some(t0 + grace));
        // Another manager is still refused during the grace period.
        assert!(c.claim(conn(3), &claim(2, false)).is_err());
        // Its manager comes back in time: nothing expires.
        c.claim(conn(4), &claim(1, false)).unwrap();
        assert_eq!(c.expire(t0 + grace * 2), None);
        c.closed(conn(4), t0 + grace);
        assert_eq!(c.expire(t0 + grace), None);
        assert_eq!(c.expire(t0 + grace * 2).as_deref(), Some("10.0.0.1:9899"));
        assert_eq!(c.manager(), "");
        c.claim(conn(5), &claim(2, false)).unwrap();
    }

    #[test]
    fn a_manager_restarted_at_the_same_address_gets_its_worker_back() {
        let mut c = Claims::new(Duration::from_secs(60));
        c.claim(conn(1), &claim(1, false)).unwrap();
        let restarted = Claim {
            manager_id: 99,
            ..claim(1, false)
        };
        // Not while the old process still holds a connection...
        assert!(c.claim(conn(2), &restarted).is_err());
        // ...but once it is gone, within the grace period.
        c.closed(conn(1), Instant::now());
        let granted = c.claim(conn(3), &restarted).unwrap();
        assert_eq!(granted.displaced, None);
        assert!(c.may_work(conn(3)));
    }
}
