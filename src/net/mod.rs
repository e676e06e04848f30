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

/// This process's server id: random, drawn once, the same on every
/// connection (INFO and CLAIMED report it), so a peer can tell one server
/// reached by two addresses from two servers. Never 0 (0 means "not given").
pub fn server_id() -> u64 {
    static ID: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *ID.get_or_init(|| {
        let mut bytes = [0u8; 8];
        // Without the OS's randomness, the clock and the PID still make two
        // processes' ids differ.
        if getrandom::fill(&mut bytes).is_err() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            bytes = (nanos ^ u64::from(std::process::id()) << 40).to_be_bytes();
        }
        u64::from_be_bytes(bytes).max(1)
    })
}
pub use reactor::{CloseReason, Config, Handler, Io, Reactor};
pub use slots::ConnId;
