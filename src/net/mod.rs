//! Networking: the mio reactor that servers run on, and the blocking client
//! the CLI uses.
//!
//! - [`addr`]: `HOST:PORT` and `:PORT` parsing, in one place;
//! - [`slots`]: the token → connection table with generations;
//! - [`deadline`]: the deadline heap and the poll timeout;
//! - [`conn`]: one connection's buffers, phase and deadlines;
//! - [`reactor`]: the event loop and the [`Handler`] trait servers implement;
//! - [`client`]: a blocking request/reply client with timeouts.

pub mod addr;
pub mod auth;
pub mod client;
pub mod conn;
pub mod deadline;
pub mod reactor;
pub mod slots;

pub use client::{Client, ClientError, Timeouts};
pub use reactor::{CloseReason, Config, Handler, Io, Reactor};
pub use slots::ConnId;
