//! RUN_JOB: a job from a library installed on the manager. It waits for a
//! turn (at most `--max-jobs` run at once), then runs on the workers.

use log::info;

use crate::manager::handler::{refused, Manager};
use crate::manager::job::Job;
use crate::manager::jobs::MAX_WAITING_JOBS;
use crate::plugin::PluginHash;
use crate::proto::msg::shuffle::MAX_PARTITIONS;
use crate::proto::msg::RunJob;
use crate::proto::{ErrorCode, Message, ProtoError};

/// Longest job name accepted.
const MAX_JOB_NAME: usize = 128;

impl Manager {
    pub(super) fn run_job(&mut self, run: RunJob) -> Message {
        // Names come from the network: they are shown in tables and logs,
        // so they are short and printable (they never name a file).
        if run.name.chars().count() > MAX_JOB_NAME || run.name.chars().any(|c| c.is_control()) {
            return Message::error(&ProtoError::Malformed {
                opcode: crate::proto::Opcode::RunJob.as_u8(),
                what: "job name: at most 128 printable characters",
            });
        }
        if run.options.reducers > MAX_PARTITIONS {
            return Message::error(&ProtoError::Malformed {
                opcode: crate::proto::Opcode::RunJob.as_u8(),
                what: "reducers: at most 4096",
            });
        }
        let dir = &run.options.output_dir;
        if !dir.is_empty() && !std::path::Path::new(dir).is_absolute() {
            return refused(
                ErrorCode::CONFLICT,
                format!("output dir {dir:?} is not absolute: the workers would each read it their own way"),
            );
        }
        if self.jobs.waiting().len() >= MAX_WAITING_JOBS {
            return refused(
                ErrorCode::BUSY,
                format!("{MAX_WAITING_JOBS} jobs are waiting for a turn already; try again later"),
            );
        }
        let hash = PluginHash(run.hash);
        let Some(plugin) = self.store.get(&hash) else {
            return refused(
                ErrorCode::PLUGIN_MISSING,
                format!(
                    "job library {} is not installed on the manager",
                    hash.short()
                ),
            );
        };
        // The store's copy, shared: no read on the event loop, and one copy
        // for every job of the library.
        let Some(library) = self.store.bytes(&hash) else {
            return Message::error(&ProtoError::Internal(format!(
                "job library {} has no bytes kept on the manager",
                hash.short()
            )));
        };
        if !dir.is_empty() && plugin.kind() != crate::plugin::loader::JobKind::Keyed {
            return refused(
                ErrorCode::CONFLICT,
                "an output dir is for keyed jobs, whose output is in partitions".into(),
            );
        }
        let id = self.jobs.next_id();
        let name = if run.name.is_empty() {
            id.to_string()
        } else {
            run.name
        };
        info!("job {id} ({name}): accepted, library {}", hash.short());
        self.jobs
            .insert(Job::new(id, name, plugin, run.args, library, run.options));
        Message::JobAccepted(id)
    }
}
