//! ATTACH: add a worker. Answered once the worker takes this manager's
//! CLAIM (or refuses it, or cannot be reached).

use std::net::SocketAddr;

use crate::manager::handler::{refused, Manager};
use crate::manager::workers::Worker;
use crate::net::{ConnId, Io};
use crate::proto::{ErrorCode, Message};

impl Manager {
    pub(super) fn attach(
        &mut self,
        io: &mut Io<'_>,
        waiting: (ConnId, u32),
        (addr, force): (String, bool),
        socks: &[SocketAddr],
    ) -> Option<Message> {
        if let Some(w) = self.workers.find(socks) {
            let state = self.workers.get(w).map_or("attached", |w| w.state().name());
            return Some(refused(
                ErrorCode::CONFLICT,
                format!("worker {addr} is already attached ({state})"),
            ));
        }
        // A name may resolve to ::1 and 127.0.0.1 both; workers started on
        // `:PORT` listen on IPv4 only, so an IPv4 address is tried first.
        let Some(&sock) = socks.iter().find(|s| s.is_ipv4()).or(socks.first()) else {
            return Some(refused(
                ErrorCode::UNREACHABLE,
                format!("{addr} resolves to no address"),
            ));
        };
        let mut worker = Worker::new(addr.clone(), sock);
        worker.force_claim = force;
        worker.waiting_reply = Some(waiting);
        let w = self.workers.add(worker);
        if self.open_conn(io, w).is_none() {
            self.workers.remove(w, false);
            return Some(refused(
                ErrorCode::UNREACHABLE,
                format!("cannot connect to {addr}"),
            ));
        }
        None // answered when the worker answers its CLAIM
    }
}
