//! DETACH: remove a worker. An active worker's batches in flight are
//! waited for (unless the manager runs with `--force-detach`); the answer
//! then comes when the last one is answered.

use std::net::SocketAddr;

use log::info;

use crate::manager::handler::{refused, Cause, Manager};
use crate::manager::workers::{Event, WorkerState};
use crate::net::{ConnId, Io};
use crate::proto::{ErrorCode, Message};

impl Manager {
    pub(super) fn detach(
        &mut self,
        io: &mut Io<'_>,
        waiting: (ConnId, u32),
        addr: String,
        socks: &[SocketAddr],
    ) -> Option<Message> {
        let Some(w) = self.workers.find(socks) else {
            return Some(refused(
                ErrorCode::NOT_FOUND,
                format!("no worker {addr} is attached"),
            ));
        };
        let (busy, state) = self.workers.get(w).map(|wk| (wk.busy() > 0, wk.state()))?;
        if state == WorkerState::Detaching {
            return Some(refused(
                ErrorCode::CONFLICT,
                format!("worker {addr} is already being detached"),
            ));
        }
        let force = self.settings.force_detach;
        let event = Event::DetachAsked { busy, force };
        let cause = Cause {
            code: ErrorCode::CONFLICT,
            why: "detached",
        };
        self.worker_event(io, w, event, cause);
        match self.workers.get_mut(w) {
            Some(wk) if wk.is(WorkerState::Detaching) => {
                wk.waiting_reply = Some(waiting);
                info!("worker {addr}: detaching once its batches in flight are done");
                None // answered when they are (see Event::Drained)
            }
            _ => Some(Message::Detached),
        }
    }
}
