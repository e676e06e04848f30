//! Worker addresses named in ATTACH and DETACH, resolved off the event
//! loop: a name service may take seconds, and the loop never waits.

use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;

use crate::manager::handler::{refused, Manager};
use crate::manager::invariant::decrement;
use crate::net::addr::{dial_addrs, needs_lookup, AddrError};
use crate::net::{ConnId, Io};
use crate::proto::{ErrorCode, Message};

/// Name lookups for attach and detach running at once; more are BUSY.
const MAX_LOOKUPS: usize = 16;

/// A worker address being resolved, for the CLI request that named it.
pub struct Lookup {
    conn: ConnId,
    request_id: u32,
    addr: String,
    detach: bool,
    force: bool,
    result: Result<Vec<SocketAddr>, AddrError>,
}

/// The lookups under way and the channel their results come back on.
pub struct Lookups {
    tx: Sender<Lookup>,
    rx: Receiver<Lookup>,
    running: usize,
}

impl Default for Lookups {
    fn default() -> Lookups {
        let (tx, rx) = mpsc::channel();
        Lookups { tx, rx, running: 0 }
    }
}

/// An address that can never be valid is the request's fault (not
/// retriable); a name that could not be looked up may resolve later.
fn addr_error_code(e: &AddrError) -> ErrorCode {
    if e.lookup_failed {
        ErrorCode::UNREACHABLE
    } else {
        ErrorCode::MALFORMED_PAYLOAD
    }
}

impl Manager {
    /// Resolves a worker address for ATTACH or DETACH, then carries the
    /// request out. A name is looked up on a thread of its own, so a slow
    /// name service never stalls the loop; the request is answered when
    /// the lookup is back (see `lookups_done`).
    pub(in crate::manager) fn resolve(
        &mut self,
        io: &mut Io<'_>,
        (conn, request_id): (ConnId, u32),
        (addr, force): (String, bool),
        detach: bool,
    ) -> Option<Message> {
        // The request, with its result filled in where the name is looked
        // up (here, or on a thread of its own).
        let mut lookup = Lookup {
            conn,
            request_id,
            addr,
            detach,
            force,
            result: Ok(Vec::new()),
        };
        if !needs_lookup(&lookup.addr) {
            lookup.result = dial_addrs(&lookup.addr);
            return self.resolved(io, lookup);
        }
        if self.lookups.running >= MAX_LOOKUPS {
            return Some(refused(
                ErrorCode::BUSY,
                format!("{MAX_LOOKUPS} worker addresses are being looked up already"),
            ));
        }
        let (tx, waker) = (self.lookups.tx.clone(), Arc::clone(&self.waker));
        let spawned = std::thread::Builder::new()
            .name("lookup".into())
            .spawn(move || {
                lookup.result = dial_addrs(&lookup.addr);
                if tx.send(lookup).is_ok() {
                    let _ = waker.wake();
                }
            });
        match spawned {
            Ok(_) => {
                self.lookups.running += 1;
                None
            }
            Err(e) => Some(refused(
                ErrorCode::INTERNAL,
                format!("cannot start a name lookup: {e}"),
            )),
        }
    }

    /// Answers the ATTACH and DETACH requests whose lookups are back.
    pub(in crate::manager) fn lookups_done(&mut self, io: &mut Io<'_>) {
        while let Ok(l) = self.lookups.rx.try_recv() {
            decrement(&mut self.lookups.running, 1, "name lookups running");
            let (conn, request_id) = (l.conn, l.request_id);
            if let Some(reply) = self.resolved(io, l) {
                io.send(conn, request_id, &reply);
            }
        }
    }

    fn resolved(&mut self, io: &mut Io<'_>, l: Lookup) -> Option<Message> {
        let (conn, request_id, addr) = (l.conn, l.request_id, l.addr);
        match l.result {
            Err(e) => Some(refused(addr_error_code(&e), e.to_string())),
            Ok(socks) if l.detach => self.detach(io, (conn, request_id), addr, &socks),
            Ok(socks) => self.attach(io, (conn, request_id), (addr, l.force), &socks),
        }
    }
}
