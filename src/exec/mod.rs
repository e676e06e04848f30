//! Executors: job code runs in child processes, never in a server.
//!
//! A server (worker or manager) starts one executor process per job
//! library it runs code of (`redmap executor`, the same binary): the one
//! that checks the library at install goes on to run it
//! ([`crate::plugin::Library::take_spare`]). The
//! executor loads the library, builds the job for each argument list it is
//! called with, and answers calls on its lanes: socket pairs made when it
//! starts, one per thread of the server that may call it at once (a
//! worker's map and reduce threads), each served by a thread of its own,
//! so calls run in parallel as they did in the server.
//!
//! What this buys, like Hadoop's child JVM per task and Dask's nanny:
//! - a job that aborts, exits, segfaults or runs out of memory kills its
//!   executor, not the server: the calls in flight fail with how it died
//!   ([`host::Death`]), and the next call starts a new one (after a pause
//!   that grows while it keeps dying quickly);
//! - `--memory-limit` is the executor's `RLIMIT_DATA`: an allocation past
//!   it fails, and the call fails with "out of memory";
//! - a library no longer needed goes with its executor
//!   ([`host::Executor::close`]): a server's memory and mappings do not
//!   grow with the number of distinct jobs it has run.
//!
//! The cost is one copy of each call's bytes through a Unix socket each
//! way ([`wire`]); the figures are in the README.

pub mod child;
pub mod host;
pub mod wire;

pub use host::{Death, ExecError, Executor, Runs, Spec};
