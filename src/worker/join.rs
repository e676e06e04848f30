//! `worker start --join MANAGER`: the worker asks its manager to attach
//! it, like `dask worker SCHEDULER`, and asks again whenever it has no
//! connection from a manager (the manager restarted, or this worker did),
//! so the operator never runs `manager attach` by hand.
//!
//! A plain thread with a blocking client: once a second it looks at
//! whether a manager holds a connection to this worker (a flag the event
//! loop keeps); if none does, it sends the manager `ATTACH` with this
//! worker's address. The manager answers once it has claimed the worker
//! (it connects back), or says it already has it (it is reconnecting by
//! itself), or cannot be reached (tried again on the next round).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use log::{info, warn};

use crate::net::auth::Secret;
use crate::net::client::{Client, ClientError, Timeouts};
use crate::proto::msg::AttachWorker;
use crate::proto::{ErrorCode, Message};

/// How often the worker looks whether it is held by a manager.
const ROUND: Duration = Duration::from_secs(1);

/// Most rounds between two asks of a manager that does not take this
/// worker: asking waits 1, 2, 4, 8 rounds, then 8 again.
const MAX_ROUNDS: u32 = 8;

/// What the joiner needs.
pub struct Join {
    /// The manager's address, as given.
    pub manager: String,
    /// The address this worker listens on, as bound.
    pub bound: SocketAddr,
    pub timeouts: Timeouts,
    pub max_size: u32,
    pub secret: Option<Arc<Secret>>,
    /// Set by the event loop while a manager holds a connection here.
    pub held: Arc<AtomicBool>,
    /// Set once the worker stops.
    pub stop: Arc<AtomicBool>,
}

/// The address the manager should reach this worker at: the bound one,
/// or, for a worker listening on every interface, the address of the
/// interface it reaches the manager through, with its port.
pub fn advertised(bound: SocketAddr, toward_manager: Option<SocketAddr>) -> SocketAddr {
    match toward_manager {
        // Only an address of the family the worker listens on reaches it.
        Some(local) if bound.ip().is_unspecified() && local.is_ipv4() == bound.is_ipv4() => {
            SocketAddr::new(local.ip(), bound.port())
        }
        _ => bound,
    }
}

/// Starts the joiner thread.
pub fn spawn(join: Join) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("join".into())
        .spawn(move || run(&join))
        .map(drop)
}

fn run(join: &Join) {
    // What was last said, so a manager that stays away (or keeps this
    // worker without reaching it) is logged once, not every round.
    let mut said = String::new();
    // Rounds to skip: asking again waits longer while asking fails, up
    // to MAX_ROUNDS (the manager reconnects to a worker it has by itself).
    let (mut wait, mut skip) = (0u32, 0u32);
    while !join.stop.load(Ordering::SeqCst) {
        if join.held.load(Ordering::SeqCst) {
            (wait, skip) = (0, 0);
        } else if skip > 0 {
            skip -= 1;
        } else {
            let outcome = attach(join);
            let (text, ok) = match &outcome {
                Ok(how) => (how.clone(), true),
                Err(why) => (
                    format!("cannot join the manager at {}: {why}", join.manager),
                    false,
                ),
            };
            if text != said {
                if ok {
                    info!("{text}");
                } else {
                    warn!("{text}");
                }
                said = text;
            }
            wait = (wait * 2).clamp(1, MAX_ROUNDS);
            skip = wait - 1;
        }
        // The next look comes a round later (an attach in progress sets
        // the flag once the manager's CLAIM arrives).
        std::thread::sleep(ROUND);
    }
}

/// One `ATTACH` of this worker to the manager.
fn attach(join: &Join) -> Result<String, String> {
    let mut client = Client::connect_with(
        &join.manager,
        join.timeouts,
        join.max_size,
        join.secret.as_deref(),
    )
    .map_err(|e| e.to_string())?;
    let addr = advertised(join.bound, client.local_addr().ok()).to_string();
    let msg = Message::Attach(AttachWorker {
        addr: addr.clone(),
        force: false,
        join: true,
    });
    match client.request(&msg) {
        Ok(Message::Attached) => Ok(format!("joined the manager at {} as {addr}", join.manager)),
        Err(ClientError::Remote(e)) if e.code == ErrorCode::CONFLICT => {
            // It has this worker already (reconnecting by itself, or
            // claiming it right now).
            Ok(format!(
                "the manager at {} has this worker: {}",
                join.manager, e.message
            ))
        }
        Ok(other) => Err(format!("unexpected reply {}", other.opcode())),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_on_every_interface_gives_the_one_toward_its_manager() {
        let any: SocketAddr = "0.0.0.0:9876".parse().unwrap();
        let local: SocketAddr = "10.0.0.7:51234".parse().unwrap();
        assert_eq!(advertised(any, Some(local)).to_string(), "10.0.0.7:9876");
        let one: SocketAddr = "127.0.0.1:9876".parse().unwrap();
        assert_eq!(advertised(one, Some(local)), one);
        assert_eq!(advertised(any, None), any);
    }
}
