//! redmap: distributed map-reduce jobs for Rust.
//!
//! A job (load, map, reduce, done) is compiled into a shared library and run
//! either in-process or by a manager that spreads its map work over workers.
//!
//! Layout, one owner per module:
//! - [`job`]: the dependency-free job API and the export macro (the only
//!   module built with `default-features = false`, for job crates);
//! - [`proto`]: the wire protocol: header, opcodes, error codes, incremental
//!   decoder, typed messages and the netcat text session;
//! - [`net`]: the mio reactor servers run on, and the blocking CLI client;
//! - [`plugin`]: compiling jobs, and loading job libraries through the C ABI;
//! - [`pipeline`]: load → batch → map → fold → done, and the keeping of
//!   errors: the parts every kind of run is made of;
//! - [`exec`]: executor processes, where servers run job code;
//! - [`local`]: running a job inside one process (the embedded mode);
//! - [`manager`]: the manager server;
//! - [`worker`]: the worker server;
//! - [`http`]: the `--http` side: live page, /api/status, /metrics;
//! - [`report`]: JSON and Prometheus renderings shared by CLI and HTTP;
//! - [`signals`]: SIGTERM/SIGINT as a flag, for graceful shutdown;
//! - [`cli`]: the `redmap` command line (parsing, dispatch, output).

pub mod job;

#[cfg(feature = "runtime")]
pub mod exec;
#[cfg(feature = "runtime")]
pub mod http;

#[cfg(feature = "runtime")]
pub mod cli;
#[cfg(feature = "runtime")]
pub mod local;
#[cfg(feature = "runtime")]
pub mod manager;
#[cfg(feature = "runtime")]
pub mod net;
#[cfg(feature = "runtime")]
pub mod pipeline;
#[cfg(feature = "runtime")]
pub mod plugin;
#[cfg(feature = "runtime")]
pub mod proto;
#[cfg(feature = "runtime")]
pub mod report;
#[cfg(feature = "runtime")]
pub mod shuffle;
#[cfg(feature = "runtime")]
pub mod signals;
#[cfg(feature = "runtime")]
pub mod worker;

/// This build's version, as reported by `info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
