//! Job libraries: sending each running job's library to the workers that
//! lack it, in chunks that fit each worker's `--max-size`; taking it off
//! workers once no running job needs it; and removing the manager's own
//! copies nothing uses any more.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::handler::Manager;
use super::ledger::Request;
use super::sizing::MAX_BATCH_BYTES;
use super::workers::{Install, WorkerId};
use crate::net::Io;
use crate::plugin::PluginHash;
use crate::proto::msg::{self, InstallReply};
use crate::proto::{ErrorCode, Message};

/// How long a library installed on the manager but used by no job is kept
/// (a CLI installs, then sends RUN_JOB at once; one that never does leaves
/// the library behind).
const UNUSED_LIBRARY_TTL: Duration = Duration::from_secs(600);

/// Libraries on the manager that no job uses, since when.
#[derive(Default)]
pub struct Installs {
    unused_since: HashMap<PluginHash, Instant>,
}

impl Manager {
    /// Starts sending every running job's library that worker `w` lacks.
    pub(super) fn ensure_installs(&mut self, io: &mut Io<'_>, w: WorkerId) {
        let Some(worker) = self.workers.get(w).filter(|wk| wk.is_active()) else {
            return;
        };
        let mut needed: Vec<PluginHash> = self
            .jobs
            .live()
            .filter(|j| j.is_running() && !worker.installed.contains_key(&j.hash()))
            .map(|j| j.hash())
            .collect();
        let mut seen = HashSet::new();
        needed.retain(|h| seen.insert(*h));
        for hash in needed {
            self.send_chunk(io, w, hash, 0);
        }
    }

    /// Sends worker `w` the chunk of library `hash` from `offset`; the
    /// library's bytes are a running job's.
    fn send_chunk(&mut self, io: &mut Io<'_>, w: WorkerId, hash: PluginHash, offset: u64) {
        let library = self
            .jobs
            .live()
            .find(|j| j.hash() == hash && j.is_running())
            .map(|j| std::sync::Arc::clone(j.library()));
        let Some(library) = library else {
            // No running job needs it any more.
            if let Some(wk) = self.workers.get_mut(w) {
                wk.installed.remove(&hash);
            }
            return;
        };
        let Some(conn) = self.some_conn(io, w) else {
            return;
        };
        // Chunks fit the worker's own --max-size, whatever the manager's.
        let budget = self
            .workers
            .get(w)
            .map_or(1, |wk| wk.frame_budget(MAX_BATCH_BYTES));
        let start = usize::try_from(offset).map_or(library.len(), |o| o.min(library.len()));
        let end = (start + budget.min(self.chunk_size())).min(library.len());
        let chunk = msg::Install {
            hash: hash.0,
            total: library.len() as u64,
            offset: start as u64,
            chunk: library[start..end].to_vec(),
        };
        if let Some(wk) = self.workers.get_mut(w) {
            wk.installed.insert(hash, Install::Sending);
        }
        self.request(
            io,
            conn,
            &Message::Install(chunk),
            Request::Install { hash },
        );
    }

    /// A worker took a chunk: the next one goes, or it has the library.
    pub(super) fn install_progress(
        &mut self,
        io: &mut Io<'_>,
        w: WorkerId,
        hash: PluginHash,
        r: InstallReply,
    ) {
        if r.complete {
            if let Some(wk) = self.workers.get_mut(w) {
                debug!("worker {}: has job library {}", wk.addr, hash.short());
                wk.installed.insert(hash, Install::Done);
            }
            return;
        }
        self.send_chunk(io, w, hash, r.next_offset);
    }

    /// A worker refused a library. Only a rejection is final; a worker
    /// failing for a reason of its own (INTERNAL: a full disk) may take it
    /// later. The jobs' own summaries say why their work does not go there.
    pub(super) fn install_refused(
        &mut self,
        io: &mut Io<'_>,
        w: WorkerId,
        hash: PluginHash,
        e: &msg::ErrorReply,
    ) {
        let Some(wk) = self.workers.get_mut(w) else {
            return;
        };
        warn!("worker {}: cannot install {}: {e}", wk.addr, hash.short());
        wk.installed.insert(hash, Install::Failed);
        wk.last_error = Some(e.to_string());
        let why = format!(
            "worker {} refused the job's library: {}",
            wk.addr, e.message
        );
        for job in self.jobs.live_mut().filter(|j| j.hash() == hash) {
            job.record_error(why.clone());
        }
        if e.code == ErrorCode::PLUGIN_REJECTED {
            self.fail_jobs_no_worker_takes(io);
        }
    }

    /// Fails every running job whose library every attached worker refused:
    /// waiting would be for ever, and its errors say why.
    ///
    /// Every attached worker counts: one that is failing (lost for now) has
    /// not refused, and may take the job when it is back.
    fn fail_jobs_no_worker_takes(&mut self, io: &mut Io<'_>) {
        let attached: Vec<&super::workers::Worker> = self
            .workers
            .values()
            .filter(|w| !w.is(super::workers::WorkerState::Connecting))
            .collect();
        if attached.is_empty() {
            return; // it waits for workers, as the progress line says
        }
        let refused: Vec<u64> = self
            .jobs
            .live()
            .filter(|j| j.is_running())
            .filter(|j| attached.iter().all(|w| w.refused(&j.hash())))
            .map(|j| j.id())
            .collect();
        for id in refused {
            let Some(job) = self.jobs.get_mut(id) else {
                continue;
            };
            warn!("job {id} ({}): no attached worker can take it", job.name());
            job.fail("no attached worker can take the job (see the errors above)".into());
            self.job_ended(io, id);
        }
    }

    /// Uninstalls a job library from every worker once no running job uses it.
    pub(super) fn uninstall_unused(&mut self, io: &mut Io<'_>, hash: PluginHash) {
        let still_used = self.jobs.live().any(|j| j.hash() == hash && j.is_running());
        if still_used {
            return;
        }
        for w in self.workers.ids() {
            let has = self
                .workers
                .get_mut(w)
                .is_some_and(|wk| wk.installed.remove(&hash).is_some());
            if has {
                if let Some(conn) = self.some_conn(io, w) {
                    self.request(io, conn, &Message::Uninstall(hash.0), Request::Uninstall);
                }
            }
        }
        // The manager's own copy goes too once no job, waiting or running,
        // needs it (a CLI that runs it again installs it again).
        if !self.jobs.live().any(|j| j.hash() == hash) && self.store.remove(&hash) {
            debug!("job library {}: removed from the manager", hash.short());
        }
    }

    /// Removes the libraries installed on the manager that no job has used
    /// for UNUSED_LIBRARY_TTL (installed, then never run).
    pub(super) fn remove_unused_libraries(&mut self, now: Instant) {
        let in_use: HashSet<PluginHash> = self.jobs.live().map(|j| j.hash()).collect();
        let installed: Vec<PluginHash> = self.store.hashes().copied().collect();
        let unused = &mut self.installs.unused_since;
        unused.retain(|h, _| installed.contains(h) && !in_use.contains(h));
        for hash in installed.into_iter().filter(|h| !in_use.contains(h)) {
            let since = *unused.entry(hash).or_insert(now);
            if now.duration_since(since) >= UNUSED_LIBRARY_TTL {
                info!(
                    "job library {}: unused for {UNUSED_LIBRARY_TTL:?}; removed",
                    hash.short()
                );
                self.store.remove(&hash);
                unused.remove(&hash);
            }
        }
    }
}
