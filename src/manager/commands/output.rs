//! OUTPUT_REQUEST: a chunk of an ended job's output, as the manager keeps
//! it (see `manager::outputs`), for `redmap run` and `redmap jobs output`.

use crate::manager::handler::{refused, Manager};
use crate::manager::outputs::{Form, Lookup};
use crate::proto::msg::{OutputChunk, OutputForm, OutputRequest};
use crate::proto::{frame_budget, ErrorCode, Message};

impl Manager {
    pub(super) fn output(&self, req: OutputRequest) -> Message {
        let id = req.job;
        if self.jobs.get(id).is_some() {
            return refused(
                ErrorCode::BUSY,
                format!("job {id} has not ended yet; its output is kept once it ends"),
            );
        }
        if self.jobs.ended(id).is_none() {
            return refused(ErrorCode::NOT_FOUND, format!("no job with id {id}"));
        }
        let form = match req.form {
            OutputForm::Binary => Form::Binary,
            OutputForm::Text => Form::Text,
        };
        let bytes = match self.outputs.get(id, form) {
            Lookup::Found(bytes) => bytes,
            Lookup::Gone(why) => return refused(ErrorCode::NOT_FOUND, why),
        };
        // Within the client's ask and this manager's frames (the client's
        // own max size is what it asks for).
        let most = match req.max {
            0 => usize::MAX,
            n => n as usize,
        }
        .min(frame_budget(self.settings.max_size, usize::MAX));
        let total = bytes.len();
        let start = usize::try_from(req.offset).unwrap_or(usize::MAX).min(total);
        let end = start + most.min(total - start);
        Message::Output(OutputChunk {
            total: total as u64,
            offset: start as u64,
            chunk: bytes[start..end].to_vec(),
        })
    }
}
