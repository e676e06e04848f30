//! The manager server: accepts jobs from `redmap run`, spreads their map
//! work over attached workers, folds the results and calls `done`.
//!
//! One owner per concern:
//!
//! - [`handler`]: the [`Manager`](handler::Manager) that routes the
//!   reactor's events to the parts below and carries out what they decide;
//! - `commands/`: the control API, one command per file;
//! - `replies`: answers from workers, matched to their requests;
//! - [`workers`]: worker records (generational ids) and the one transition
//!   function of a worker's state;
//! - [`ledger`]: the exactly-once ledger of requests and batch copies;
//! - [`sched`]: the scheduling rules, pure; `dispatch` carries them out;
//! - `installs`: job libraries on workers; `health`: the tick's checks;
//!   `monitor`: counters, pages, metrics and the text session;
//! - [`jobs`]: live jobs and kept summaries; [`job`]: one job's lifecycle,
//!   and its loader and reducer threads; [`outputs`]: ended jobs' outputs,
//!   kept for their clients;
//! - [`sizing`]: how many tasks go into one batch.

mod commands;
mod dispatch;
pub mod handler;
mod health;
mod installs;
mod invariant;
pub mod job;
pub mod jobs;
pub mod ledger;
mod monitor;
pub mod outputs;
mod reduces;
mod replies;
pub mod sched;
pub mod shuffle;
pub mod sizing;
pub mod workers;

use std::io::{self, Write};
use std::net::SocketAddr;

use log::{debug, info};

use std::sync::Arc;

use crate::http::{Shared, MONITOR_PAGE};
use crate::net::{Config, Reactor};
use crate::plugin::store::PluginStore;

pub use handler::Settings;

/// Binds `addr` and serves until SIGTERM or SIGINT, which cancel the
/// running jobs cleanly. The first line on standard output is
/// `redmap manager listening on ADDR`.
pub fn run(
    addr: SocketAddr,
    config: Config,
    settings: Settings,
    http: Option<SocketAddr>,
) -> io::Result<()> {
    let summary = config.summary();
    let secret = config.secret.clone();
    let mut reactor = Reactor::bind(addr, config)?;
    let local = reactor.local_addr();
    // The "listening" line itself goes to standard output, once, below.
    debug!(
        "manager on {local}: max connections per worker {}, max retries {}, max jobs {}, {summary}",
        settings.max_connections, settings.max_retries, settings.max_jobs
    );
    let orphans = crate::plugin::store::remove_orphan_files(&std::env::temp_dir());
    if orphans > 0 {
        info!("removed {orphans} files that killed servers left in the temporary directory");
    }
    let installed = reactor.waker();
    // The manager keeps each library's bytes to send on to workers: one
    // copy per library, shared by the jobs that run it.
    // A library is checked in an executor made as a job's: the first job
    // that runs it takes it.
    let executors = crate::pipeline::cluster::job_runs(settings.memory_limit);
    let store = PluginStore::new("manager", executors, move || {
        let _ = installed.wake();
    })?
    .keep_bytes();
    // Announced once ready to serve (tests and scripts wait for this line).
    let mut out = io::stdout().lock();
    writeln!(out, "redmap manager listening on {local}")?;
    out.flush()?;
    drop(out);
    let waker = reactor.waker();
    let stop = crate::signals::watch(move || {
        let _ = waker.wake();
    })?;
    let mut manager =
        handler::Manager::new(settings, local.to_string(), reactor.waker(), store, stop);
    if let Some(http) = http {
        let shared = Shared::default();
        let bound = crate::http::serve(http, Arc::clone(&shared), secret, Some(MONITOR_PAGE))?;
        // Informational: a closed stdout must not stop the server.
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "redmap monitor on http://{bound}/").and_then(|()| out.flush());
        manager.publish_to(shared);
    }
    reactor.run(&mut manager)?;
    info!("manager stopped");
    Ok(())
}
