//! OUTPUT_REQUEST: a chunk of an ended job's output, as the manager keeps
//! it (see `manager::outputs`), for `redmap run` and `redmap jobs output`.

use crate::manager::handler::{refused, Manager};
use crate::manager::outputs::{Form, Lookup};
use crate::proto::msg::{OutputChunk, OutputForm, OutputRequest, Parts};
use crate::proto::{frame_budget, ErrorCode, Message, ProtoError};

/// Most bytes one `OUTPUT` carries (4 MiB): a read from the output's file
/// on the event loop stays short.
const MAX_OUTPUT_CHUNK: usize = 4 << 20;

impl Manager {
    /// Job `id` has ended, or the refusal to send: `BUSY` for a job still
    /// waiting or running, `NOT_FOUND` for none.
    fn ended_job(&self, id: u64) -> Result<(), ProtoError> {
        if self.jobs.get(id).is_some() {
            return Err(ProtoError::refused(
                ErrorCode::BUSY,
                format!("job {id} has not ended yet; its output is kept once it ends"),
            ));
        }
        if self.jobs.ended(id).is_none() {
            return Err(ProtoError::refused(
                ErrorCode::NOT_FOUND,
                format!("no job with id {id}"),
            ));
        }
        Ok(())
    }

    /// PARTS_REQUEST: where an ended keyed job's partitions are, in
    /// partition order; none for an output the manager keeps itself.
    pub(super) fn parts(&self, id: u64) -> Message {
        if let Err(refusal) = self.ended_job(id) {
            return Message::error(&refusal);
        }
        let parts = self
            .outputs
            .parts(id)
            .map(<[_]>::to_vec)
            .unwrap_or_default();
        if parts.is_empty() {
            if let Lookup::Gone(why) = self.outputs.get(id, Form::Binary) {
                return refused(ErrorCode::NOT_FOUND, why);
            }
        }
        Message::Parts(Parts { parts })
    }

    pub(super) fn output(&self, req: OutputRequest) -> Message {
        let id = req.job;
        if let Err(refusal) = self.ended_job(id) {
            return Message::error(&refusal);
        }
        let form = match req.form {
            OutputForm::Binary => Form::Binary,
            OutputForm::Text => Form::Text,
        };
        let file = match self.outputs.get(id, form) {
            Lookup::Found(file) => file,
            Lookup::Gone(why) => return refused(ErrorCode::NOT_FOUND, why),
        };
        // Within the client's ask, this manager's frames, and a read that
        // keeps the event loop responsive (the client asks again).
        let most = match req.max {
            0 => usize::MAX,
            n => n as usize,
        }
        .min(frame_budget(self.settings.max_size, MAX_OUTPUT_CHUNK));
        let total = file.len();
        let start = req.offset.min(total);
        match file.read_at(start, most) {
            Ok(chunk) => Message::Output(OutputChunk {
                total,
                offset: start,
                chunk,
            }),
            Err(e) => Message::error(&ProtoError::Internal(format!(
                "cannot read job {id}'s output: {e}"
            ))),
        }
    }
}
