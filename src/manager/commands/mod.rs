//! The control API: what a CLI (or any client) asks the manager, one
//! command per file, in mini-redis's style. Each file turns its request
//! into changes of the manager's parts and its reply; a command that must
//! wait (an attach, a detach, the last chunk of an install) answers later.

mod attach;
mod cancel;
mod detach;
mod lookup;
mod output;
mod queries;
mod run_job;

pub use lookup::Lookups;

use super::handler::{refused, Manager};
use crate::net::{ConnId, Io};
use crate::proto::{ErrorCode, Message, ProtoError};

/// Most addresses a manager remembers as detached by the operator.
const MAX_DETACHED: usize = 4096;

impl Manager {
    /// Serves one control request; None when the answer comes later.
    pub(super) fn control(
        &mut self,
        io: &mut Io<'_>,
        conn: ConnId,
        request_id: u32,
        msg: Message,
    ) -> Option<Message> {
        Some(match msg {
            Message::Ping => Message::Pong,
            Message::InfoRequest => Message::Info(self.info()),
            Message::Install(chunk) => match self.store.receive((conn, request_id), chunk) {
                Ok(Some(reply)) => Message::InstallReply(reply),
                Ok(None) => return None, // answered once loaded, in settle
                Err(e) => Message::error(&e),
            },
            Message::RunJob(_) if self.shutting_down => refused(
                ErrorCode::SHUTTING_DOWN,
                "the manager is shutting down and takes no new jobs".into(),
            ),
            Message::RunJob(run) => self.run_job(run),
            Message::CancelJob(id) => match self.cancel_job(io, id) {
                Ok(()) => Message::Cancelled,
                Err(e) => Message::error(&e),
            },
            Message::JobStatsRequest(id) => self.job_stats(id),
            Message::OutputRequest(req) => self.output(req),
            Message::PartsRequest(id) => self.parts(id),
            Message::JobsListRequest(query) => Message::JobsList(self.jobs_page(query)),
            Message::Attach(a) if a.join && self.detached.contains(&a.addr) => refused(
                ErrorCode::CONFLICT,
                format!(
                    "worker {} was detached from this manager (`redmap manager detach`); \
                     `redmap manager attach {}` takes it back",
                    a.addr, a.addr
                ),
            ),
            Message::Attach(a) => {
                if !a.join {
                    self.detached.remove(&a.addr);
                }
                return self.resolve(io, (conn, request_id), (a.addr, a.force), false);
            }
            Message::Detach(addr) => {
                if self.detached.len() < MAX_DETACHED {
                    self.detached.insert(addr.clone());
                }
                return self.resolve(io, (conn, request_id), (addr, false), true);
            }
            Message::Claim(_) => refused(
                ErrorCode::WRONG_PEER,
                format!("{} is a redmap manager, not a worker", self.address),
            ),
            Message::ManagerStatsRequest => Message::ManagerStats(self.stats()),
            other => Message::error(&ProtoError::Unexpected {
                opcode: other.opcode().as_u8(),
            }),
        })
    }
}
