//! The worker server: a reactor with the worker's handler on top.
//!
//! - [`handler`]: message → reply;
//! - [`exec`]: the map thread pool;
//! - [`executors`]: the executor process of each job library, where the
//!   map and reduce threads have job code run;
//! - [`stats`]: the counters `info` reports;
//! - [`claim`]: which manager the worker belongs to, and for how long.

pub mod claim;
pub mod exec;
pub mod executors;
pub mod handler;
pub mod join;
pub mod reduce;
pub mod shuffle;
pub mod stats;

use std::io::{self, Write};
use std::net::SocketAddr;

use log::{debug, info};

use crate::net::{Config, Reactor};

use std::collections::HashMap;
use std::sync::Arc;

use crate::plugin::store::PluginStore;
use exec::Pool;
use handler::WorkerHandler;
use stats::Stats;

/// What `worker start` sets besides the address and the network's.
#[derive(Debug, Clone)]
pub struct Options {
    /// Map threads (and as many reduce threads).
    pub threads: usize,
    /// Where to serve `--http`, if anywhere.
    pub http: Option<SocketAddr>,
    /// `--manager-grace`.
    pub manager_grace: std::time::Duration,
    /// `--reduce-memory`, in bytes, shared by the reduce threads.
    pub reduce_memory: usize,
    /// `--memory-limit` of each executor, in bytes.
    pub memory_limit: u64,
    /// `--join`: the manager to ask to attach this worker.
    pub join: Option<String>,
}

/// Binds `addr` and serves until SIGTERM or SIGINT, after which it takes
/// no new batches, answers those it holds, and returns.
///
/// The first line on standard output is `redmap worker listening on ADDR`
/// with the bound address, so a script that asked for port 0 learns the port.
pub fn run(addr: SocketAddr, config: Config, options: Options) -> io::Result<()> {
    let Options {
        threads,
        http,
        manager_grace,
        reduce_memory,
        memory_limit,
        join,
    } = options;
    let summary = config.summary();
    let secret = config.secret.clone();
    let max_size = config.max_size;
    let (config_read, config_write) = (config.read_timeout, config.write_timeout);
    let mut reactor = Reactor::bind(addr, config)?;
    let local = reactor.local_addr();
    // The "listening" line itself goes to standard output, once, below.
    debug!("worker on {local}: {threads} map threads, {summary}");
    let installed = reactor.waker();
    // Each of the map and reduce threads may call an executor at once.
    let lanes = 2 * threads.max(1);
    let runs = crate::exec::Runs {
        lanes,
        memory_limit,
        restart: true,
    };
    let store = PluginStore::new("worker", runs, move || {
        let _ = installed.wake();
    })?;
    // Announced once ready to serve (tests and scripts wait for this line).
    let mut out = io::stdout().lock();
    writeln!(out, "redmap worker listening on {local}")?;
    out.flush()?;
    drop(out);
    let waker = reactor.waker();
    let stop = crate::signals::watch(move || {
        let _ = waker.wake();
    })?;
    // What killed servers left in the temporary directory goes first.
    let orphans = crate::plugin::store::remove_orphan_files(&std::env::temp_dir());
    if orphans > 0 {
        info!("removed {orphans} files that killed servers left in the temporary directory");
    }
    let files = shuffle::ShuffleFiles::default();
    let pool = Pool::new(threads, reactor.waker(), files.clone());
    let peers = reduce::Peers {
        timeouts: crate::net::client::Timeouts::new(config_read, config_write),
        max_size,
        secret: secret.clone(),
    };
    let reducers = reduce::Reducers::new(
        threads,
        reduce_memory,
        files.clone(),
        peers,
        reactor.waker(),
    )?;
    let managed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let Some(manager) = join {
        join::spawn(join::Join {
            manager,
            bound: local,
            timeouts: crate::net::client::Timeouts::new(config_read, config_write),
            max_size,
            secret: secret.clone(),
            held: Arc::clone(&managed),
            stop: Arc::clone(&stopping),
        })?;
    }
    let mut handler = WorkerHandler {
        managed,
        stats: Stats::new(local.to_string(), max_size),
        claims: claim::Claims::new(manager_grace),
        store,
        pool,
        executors: executors::Executors::new(runs),
        files,
        reducers,
        reduces: 0,
        active: HashMap::new(),
        held: HashMap::new(),
        stop,
        draining: false,
        finished: false,
        recheck_at: None,
        published: None,
        next_publish: std::time::Instant::now(),
    };
    if let Some(http) = http {
        let shared = crate::http::Shared::default();
        let bound = crate::http::serve(http, std::sync::Arc::clone(&shared), secret, None)?;
        // Informational: a closed stdout must not stop the server.
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "redmap worker metrics on http://{bound}/metrics")
            .and_then(|()| out.flush());
        handler.published = Some(shared);
    }
    let ran = reactor.run(&mut handler);
    stopping.store(true, std::sync::atomic::Ordering::SeqCst);
    handler.executors.close(None);
    // Its shuffle files go with it (a reduce still running loses its own
    // when its thread ends with the process).
    let dropped = handler.files.drop_all();
    if dropped > 0 {
        info!("removed {dropped} shuffle files");
    }
    ran?;
    info!("worker stopped");
    Ok(())
}
