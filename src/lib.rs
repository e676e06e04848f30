//! redmap: distributed map-reduce jobs for Rust.
//!
//! A job (load, map, reduce, done) is compiled into a shared library and run
//! either in-process or by a manager that spreads its map work over workers.
//!
//! Layout, one owner per module:
//! - [`proto`]: the wire protocol: header, opcodes, error codes, incremental
//!   decoder, typed messages and the netcat text session;
//! - [`net`]: the mio reactor servers run on, and the blocking CLI client;
//! - [`worker`]: the worker server;
//! - [`cli`]: the `redmap` command line (parsing, dispatch, output).

pub mod cli;
pub mod net;
pub mod proto;
pub mod worker;

/// This build's version, as reported by `info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
