//! What the worker does with each message: the mapping from a request to
//! its reply. Runs on the reactor thread, so nothing here may block.

use log::debug;

use crate::net::{ConnId, Handler, Io};
use crate::proto::text::{render_info, TextCommand};
use crate::proto::{Message, ProtoError};

use super::stats::Stats;

pub struct WorkerHandler {
    pub stats: Stats,
}

impl Handler for WorkerHandler {
    fn on_message(&mut self, io: &mut Io<'_>, conn: ConnId, request_id: u32, msg: Message) {
        let reply = match msg {
            Message::Ping => Message::Pong,
            Message::InfoRequest => Message::Info(self.stats.info()),
            other => {
                debug!(
                    "{conn}: request {request_id}: unexpected {}",
                    other.opcode()
                );
                Message::error(&ProtoError::Unexpected {
                    opcode: other.opcode().as_u8(),
                })
            }
        };
        io.send(conn, request_id, &reply);
    }

    fn on_text(&mut self, _io: &mut Io<'_>, _conn: ConnId, line: &str) -> String {
        match TextCommand::parse(line) {
            Ok(TextCommand::Ping) => "pong\n".to_owned(),
            Ok(TextCommand::Info) => render_info(&self.stats.info()),
            Err(reply) => reply,
        }
    }
}
