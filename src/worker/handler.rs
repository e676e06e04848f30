//! What the worker does with each message: the mapping from a request to
//! its reply. Runs on the reactor thread, so nothing here may block: map
//! batches go to the thread pool and their results come back in `on_wake`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info};

use super::claim::Claims;
use super::exec::{Pool, Work};
use super::reduce::{ReduceWork, Reducers};
use super::shuffle::ShuffleFiles;
use super::stats::Stats;
use crate::http::{Published, Shared};
use crate::net::{ConnId, Handler, Io};
use crate::plugin::store::{install_reply, PluginStore};
use crate::plugin::PluginHash;
use crate::proto::msg::shuffle::{DROP_MAP_OUTPUTS, DROP_PARTITION_OUTPUTS};
use crate::proto::msg::{Claim, Claimed, OutputChunk};
use crate::proto::text::{render_info, TextCommand};
use crate::proto::{ErrorCode, Message, ProtoError};
use crate::report::{self, Metrics};

/// Most batches one connection may have queued or running here. A manager
/// keeps two in flight per connection; the cap stops any peer from queueing
/// without end (each batch may be up to --max-size).
pub const MAX_BATCHES_PER_CONN: usize = 16;

/// Most batches this worker holds (queued or running) from all connections
/// together: beyond it a `MAP_BATCH` is answered `BUSY`, as past
/// [`MAX_BATCHES_PER_CONN`]. Without it, the per-connection cap alone lets
/// `--max-clients` connections queue 16 batches of up to `--max-size` each
/// (1,024 × 16 × 200 MiB). A manager with default settings keeps 8 here (4
/// connections × 2 in flight); 64 is the per-connection cap times those 4
/// connections, so only a manager with over 32 connections to one worker
/// meets it, and it queues the batch again (protocol.md).
pub const MAX_BATCHES_HELD: usize = 64;

pub struct WorkerHandler {
    pub stats: Stats,
    /// The manager this worker belongs to.
    pub claims: Claims,
    /// Installs wait for their outcome by (connection, request id).
    pub store: PluginStore<(ConnId, u32)>,
    pub pool: Pool,
    /// Set while a manager holds a connection here (read by `--join`).
    pub managed: Arc<AtomicBool>,
    /// Where job code runs: an executor process per library.
    pub executors: super::executors::Executors,
    /// Batches queued or running, per job library.
    pub active: HashMap<[u8; 32], usize>,
    /// Batches queued or running, per connection.
    pub held: HashMap<ConnId, usize>,
    /// Set by SIGTERM/SIGINT.
    pub stop: Arc<AtomicBool>,
    /// Shutting down: no new batches; exit once those held are answered.
    pub draining: bool,
    /// Everything is answered and sent: the loop may end.
    pub finished: bool,
    /// While draining, when to look again for the last bytes to leave.
    pub recheck_at: Option<Instant>,
    /// Where the `--http` thread reads its pages, if there is one.
    pub published: Option<Shared>,
    pub next_publish: Instant,
    /// Map outputs and partition outputs kept for the manager's shuffles.
    pub files: ShuffleFiles,
    /// The reduce threads.
    pub reducers: Reducers,
    /// Reduces queued or running.
    pub reduces: usize,
}

/// Most reduces a worker holds (queued or running); past it a `REDUCE` is
/// answered `BUSY`. A manager sends a worker at most one per partition it
/// places there.
pub const MAX_REDUCES_HELD: usize = 256;

impl WorkerHandler {
    /// Renders `/api/status` and `/metrics` for the HTTP thread.
    fn publish(&self, io: &mut Io<'_>) {
        let Some(shared) = &self.published else {
            return;
        };
        let info = self.info();
        let status = report::info_json(&info.address, &info).render();
        let mut m = Metrics::default();
        m.counter(
            "redmap_tasks_processed_total",
            "Tasks mapped by this worker.",
            info.tasks_processed,
        );
        m.server(io);
        m.gauge(
            "redmap_active_jobs",
            "Jobs with batches queued or running here.",
            f64::from(info.active_jobs),
        );
        m.gauge(
            "redmap_installed_jobs",
            "Job libraries installed here.",
            f64::from(info.installed_jobs),
        );
        m.gauge(
            "redmap_batches_in_flight",
            "Batches queued or running here.",
            self.active.values().sum::<usize>() as f64,
        );
        let fresh = Published {
            status_json: status,
            metrics: m.finish(),
        };
        if let Ok(mut p) = shared.lock() {
            *p = fresh;
        };
    }

    /// A manager claims this worker on `conn` (see `claim.rs`).
    fn claim(&mut self, io: &mut Io<'_>, conn: ConnId, claim: Claim) -> Message {
        let before = self.claims.manager().to_owned();
        let granted = match self.claims.claim(conn, &claim) {
            Ok(granted) => granted,
            Err(why) => return Message::error(&ProtoError::refused(ErrorCode::WRONG_PEER, why)),
        };
        if let Some(conns) = granted.displaced {
            // Taken by force: the old holder's connections are closed (it
            // sees the worker lost, and its CLAIM again is refused) and its
            // libraries go.
            info!(
                "taken by the manager at {} from the one at {before}",
                claim.manager
            );
            for c in conns {
                io.close(c);
            }
            self.store.remove_all();
            self.executors.close(None);
            self.files.drop_all();
        } else if before != claim.manager {
            info!("claimed by the manager at {}", claim.manager);
        }
        Message::Claimed(Claimed {
            worker_id: crate::net::server_id(),
            max_size: self.stats.max_size,
        })
    }

    /// What INFO says of this worker: its counters and its manager.
    fn info(&self) -> crate::proto::msg::Info {
        let (running, deaths) = crate::exec::host::counts();
        let executors = (
            self.executors.memory_limit(),
            u32::try_from(running).unwrap_or(u32::MAX),
            deaths,
        );
        self.stats.info(self.claims.manager(), executors)
    }

    fn refresh_counts(&mut self, io: &mut Io<'_>) {
        self.managed
            .store(self.claims.connected(), Ordering::SeqCst);
        self.stats.installed_jobs = self.store.len() as u32;
        self.stats.active_jobs = self.active.len() as u32;
        if self.stop.load(Ordering::SeqCst) && !self.draining {
            let held: usize = self.active.values().sum();
            info!("shutting down: no new batches; finishing the {held} held");
            self.draining = true;
        }
        self.finished = self.draining && self.active.is_empty() && io.pending_output() == 0;
        if self.draining {
            self.recheck_at = Some(io.now() + Duration::from_millis(20));
        }
    }

    fn reply(
        &mut self,
        io: &mut Io<'_>,
        conn: ConnId,
        request_id: u32,
        msg: Message,
    ) -> Option<Message> {
        match msg {
            Message::Ping => Some(Message::Pong),
            Message::InfoRequest => Some(Message::Info(self.info())),
            Message::Claim(claim) => Some(self.claim(io, conn, claim)),
            // Work comes from the manager that holds this worker only.
            Message::Install(_)
            | Message::Uninstall(_)
            | Message::MapBatch(_)
            | Message::Reduce(_)
            | Message::DropShuffle(_)
                if !self.claims.may_work(conn) =>
            {
                Some(Message::error(&ProtoError::refused(
                    ErrorCode::WRONG_PEER,
                    self.claims.refusal(),
                )))
            }
            Message::Install(chunk) => match self.store.receive((conn, request_id), chunk) {
                Ok(Some(reply)) => Some(Message::InstallReply(reply)),
                Ok(None) => None, // answered once loaded, in on_wake
                Err(e) => Some(Message::error(&e)),
            },
            Message::Uninstall(hash) => {
                self.store.remove(&PluginHash(hash));
                self.executors.close(Some(PluginHash(hash)));
                Some(Message::Uninstalled)
            }
            Message::MapBatch(_) if self.draining => Some(Message::error(&ProtoError::refused(
                ErrorCode::SHUTTING_DOWN,
                "this worker is shutting down",
            ))),
            Message::MapBatch(_)
                if self.held.get(&conn).copied().unwrap_or(0) >= MAX_BATCHES_PER_CONN =>
            {
                Some(Message::error(&ProtoError::refused(
                    ErrorCode::BUSY,
                    format!("{MAX_BATCHES_PER_CONN} batches from this connection are already here"),
                )))
            }
            Message::MapBatch(_) if self.held.values().sum::<usize>() >= MAX_BATCHES_HELD => {
                Some(Message::error(&ProtoError::refused(
                    ErrorCode::BUSY,
                    format!("this worker already holds {MAX_BATCHES_HELD} batches, its most"),
                )))
            }
            Message::MapBatch(batch) => match self.store.get(&PluginHash(batch.hash)) {
                Some(plugin) => {
                    *self.active.entry(batch.hash).or_default() += 1;
                    *self.held.entry(conn).or_default() += 1;
                    let executor = self.executors.get(&plugin);
                    self.pool.submit(Work {
                        conn,
                        request_id,
                        executor,
                        kind: plugin.kind(),
                        batch,
                    });
                    None
                }
                None => Some(Message::error(&ProtoError::refused(
                    ErrorCode::PLUGIN_MISSING,
                    format!(
                        "job library {} is not installed here",
                        PluginHash(batch.hash).short()
                    ),
                ))),
            },
            // Any authenticated peer may read the shuffle's files: the
            // job's reducers (other workers) and its client.
            Message::Fetch(f) => Some(
                match self
                    .files
                    .read(f.job, f.file, f.segment, f.offset, f.max, f.range.as_ref())
                {
                    Ok((total, chunk)) => {
                        let offset = f.offset.min(total);
                        Message::Fetched(OutputChunk {
                            total,
                            offset,
                            chunk,
                        })
                    }
                    Err(e) => Message::error(&e),
                },
            ),
            Message::DropShuffle(d) => {
                if d.what & DROP_PARTITION_OUTPUTS != 0 {
                    self.reducers.cancel(d.job);
                }
                let n = self.files.drop_job(
                    d.job,
                    d.what & DROP_MAP_OUTPUTS != 0,
                    d.what & DROP_PARTITION_OUTPUTS != 0,
                );
                debug!("job {}: dropped {n} shuffle files", d.job);
                Some(Message::Dropped)
            }
            Message::Reduce(_) if self.draining => Some(Message::error(&ProtoError::refused(
                ErrorCode::SHUTTING_DOWN,
                "this worker is shutting down",
            ))),
            Message::Reduce(_) if self.reduces >= MAX_REDUCES_HELD => {
                Some(Message::error(&ProtoError::refused(
                    ErrorCode::BUSY,
                    format!("this worker already holds {MAX_REDUCES_HELD} reduces, its most"),
                )))
            }
            Message::Reduce(reduce) => match self.store.get(&PluginHash(reduce.hash)) {
                Some(plugin) => {
                    *self.active.entry(reduce.hash).or_default() += 1;
                    self.reduces += 1;
                    let executor = self.executors.get(&plugin);
                    self.reducers.submit(ReduceWork {
                        conn,
                        request_id,
                        executor,
                        kind: plugin.kind(),
                        reduce,
                    });
                    None
                }
                None => Some(Message::error(&ProtoError::refused(
                    ErrorCode::PLUGIN_MISSING,
                    format!(
                        "job library {} is not installed here",
                        PluginHash(reduce.hash).short()
                    ),
                ))),
            },
            other => {
                debug!(
                    "{conn}: request {request_id}: unexpected {}",
                    other.opcode()
                );
                Some(Message::error(&ProtoError::Unexpected {
                    opcode: other.opcode().as_u8(),
                }))
            }
        }
    }
}

impl Handler for WorkerHandler {
    fn on_message(&mut self, io: &mut Io<'_>, conn: ConnId, request_id: u32, msg: Message) {
        if let Some(reply) = self.reply(io, conn, request_id, msg) {
            io.send(conn, request_id, &reply);
        }
        self.refresh_counts(io);
    }

    fn on_wake(&mut self, io: &mut Io<'_>) {
        for ((conn, request_id), outcome) in self.store.finished() {
            io.send(conn, request_id, &install_reply(outcome));
        }
        while let Ok(done) = self.pool.done.try_recv() {
            release(&mut self.active, &done.hash);
            release(&mut self.held, &done.conn);
            let reply = match done.result {
                Ok(result) => {
                    self.stats.tasks_processed += u64::from(result.processed);
                    Message::BatchResult(result)
                }
                Err(death) => Message::error(&ProtoError::refused(ErrorCode::EXECUTOR_DIED, death)),
            };
            // The connection may be gone: the manager then sends the batch
            // elsewhere, and this result is dropped.
            io.send(done.conn, done.request_id, &reply);
        }
        while let Ok(done) = self.reducers.done.try_recv() {
            release(&mut self.active, &done.hash);
            self.reduces = self.reduces.saturating_sub(1);
            io.send(done.conn, done.request_id, &Message::Reduced(done.reduced));
        }
        self.refresh_counts(io);
    }

    fn on_close(&mut self, io: &mut Io<'_>, conn: ConnId, _reason: &crate::net::CloseReason) {
        self.claims.closed(conn, io.now());
        self.managed
            .store(self.claims.connected(), Ordering::SeqCst);
    }

    fn next_timer(&self) -> Option<Instant> {
        let publish = self.published.as_ref().map(|_| self.next_publish);
        [
            self.recheck_at,
            publish,
            self.claims.deadline(),
            self.store.next_upload_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn on_timer(&mut self, io: &mut Io<'_>, now: Instant) {
        if let Some(manager) = self.claims.expire(now) {
            let removed = self.store.remove_all();
            self.executors.close(None);
            self.files.drop_all();
            info!(
                "the manager at {manager} has been gone for the grace period; \
                 uninstalled its {removed} job libraries"
            );
        }
        // Each upload dropped is logged by the store.
        self.store.expire_uploads(now);
        self.refresh_counts(io);
        if self.published.is_some() && self.next_publish <= now {
            self.next_publish = now + Duration::from_secs(1);
            self.publish(io);
        }
    }

    fn should_stop(&self) -> bool {
        self.finished
    }

    fn on_text(&mut self, io: &mut Io<'_>, _conn: ConnId, line: &str) -> String {
        if io.requires_auth() {
            return crate::proto::text::unauthenticated(line);
        }
        const KNOWN: &[TextCommand] = &[TextCommand::Ping, TextCommand::Info];
        match TextCommand::parse(line, KNOWN) {
            Ok(TextCommand::Ping) => "pong\n".to_owned(),
            Ok(TextCommand::Info) => render_info(&self.info()),
            Ok(_) => TextCommand::unknown(line, KNOWN),
            Err(reply) => reply,
        }
    }
}

/// One fewer of `key`; a count that reaches zero is removed.
fn release<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = counts.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            counts.remove(key);
        }
    }
}
