//! CANCEL_JOB: stop a waiting or running job. No more loading, its work in
//! flight dropped (answers still on their way are dropped on arrival), its
//! library uninstalled where no other job needs it, and no `done`.

use log::info;

use crate::manager::handler::Manager;
use crate::net::Io;
use crate::proto::{ErrorCode, ProtoError};

impl Manager {
    pub(in crate::manager) fn cancel_job(
        &mut self,
        io: &mut Io<'_>,
        id: u64,
    ) -> Result<(), ProtoError> {
        let Some(job) = self.jobs.get_mut(id) else {
            return Err(match self.jobs.ended(id) {
                Some(ended) => ProtoError::refused(
                    ErrorCode::CONFLICT,
                    format!("job {id} is already {}", ended.status.name()),
                ),
                None => ProtoError::refused(ErrorCode::NOT_FOUND, format!("no job with id {id}")),
            });
        };
        job.cancel();
        info!("job {id} ({}): cancelled", job.name());
        self.job_ended(io, id);
        Ok(())
    }
}
