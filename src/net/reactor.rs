//! The mio event loop: one thread that owns the listener, every connection
//! and every deadline.
//!
//! Each turn of the loop polls with a timeout that ends at the earliest
//! deadline (a connection's, or the handler's own timer), dispatches the
//! events, lets the handler act on messages from other threads (they arrive
//! through the [`Waker`]), flushes what was queued, and then expires every
//! deadline that has passed, so steady traffic on one socket cannot postpone
//! the expiry of another.
//!
//! What a deadline means depends on the connection's phase (see
//! [`Conn`]): mid-input with no progress for
//! `read_timeout` closes it; output that makes no progress for
//! `write_timeout` closes it; an idle connection has no deadline at all.
//!
//! The [`Handler`] sees typed messages and text lines, never sockets, and must
//! not block: work that takes time goes to other threads, which hand results
//! back through the waker.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::event::Event;
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Registry, Token, Waker};

use super::auth::{self, Secret, Step};
use super::conn::{AuthState, Conn, Input, Phase, WRITE_HIGH_WATER};
use super::deadline::{poll_timeout, Deadlines};
use super::slots::{ConnId, Slots};
use crate::proto::{Message, Opcode, ProtoError};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
/// Connection tokens are slot indices shifted past the fixed tokens.
const FIRST_CONN: usize = 2;

/// Reads per connection per turn; the rest waits for the next turn so one
/// fast sender cannot starve the others or the deadline pass.
const READ_BUDGET: usize = 16;

/// Longest pause when `accept` fails for lack of resources (e.g. EMFILE).
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Longest a closing connection may wait for the peer's EOF.
const MAX_LINGER: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct Config {
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    /// Largest accepted frame payload, in bytes.
    pub max_size: u32,
    /// The cluster's secret: every binary connection must authenticate.
    pub secret: Option<Arc<Secret>>,
    /// Most accepted connections at once; more are closed on arrival.
    pub max_clients: usize,
    /// Most accepted connections still in the handshake, or that have not
    /// sent a complete request yet; over it, the oldest is dropped, so a
    /// flood cannot lock out a real client.
    pub max_unauthenticated: usize,
    /// Longest a handshake may take.
    pub handshake_timeout: Duration,
    /// Longest an accepted connection may take to send its first complete
    /// request (the read timeout): idle connections are for clients that
    /// have spoken, like a manager's pool.
    pub first_request_timeout: Duration,
}

impl Config {
    /// A configuration with the default limits and no secret.
    pub fn new(read_timeout: Duration, write_timeout: Duration, max_size: u32) -> Config {
        Config {
            read_timeout,
            write_timeout,
            max_size,
            secret: None,
            max_clients: 1024,
            max_unauthenticated: 64,
            handshake_timeout: read_timeout.min(Duration::from_secs(5)),
            first_request_timeout: read_timeout,
        }
    }
}

/// Why a connection was closed.
#[derive(Debug)]
pub enum CloseReason {
    /// The peer closed, or the closing handshake completed.
    Closed,
    /// Stalled mid-input for the read timeout.
    ReadTimeout,
    /// No write progress for the write timeout.
    WriteTimeout,
    /// The peer never closed after we finished.
    LingerTimeout,
    /// Accepted, and no complete request within the first-request timeout.
    NoRequest,
    /// A socket error.
    Io(io::Error),
    /// The authentication handshake failed or did not finish in time.
    AuthFailed(String),
    /// A peer we dialed answered with something that is not a frame (what
    /// it sent first, escaped).
    NotRedmap(String),
    /// A peer we dialed sent a frame whose payload does not decode.
    BadReply(String),
}

impl Config {
    /// One line for the server's start-up log; never shows the secret.
    pub fn summary(&self) -> String {
        format!(
            "read timeout {:?}, write timeout {:?}, max size {} bytes, {}",
            self.read_timeout,
            self.write_timeout,
            self.max_size,
            if self.secret.is_some() {
                "secret set"
            } else {
                "no secret"
            }
        )
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::Closed => write!(f, "closed"),
            CloseReason::ReadTimeout => write!(f, "read timeout"),
            CloseReason::WriteTimeout => write!(f, "write timeout"),
            CloseReason::LingerTimeout => write!(f, "peer did not close in time"),
            CloseReason::NoRequest => write!(f, "no request within the read timeout"),
            CloseReason::Io(e) => write!(f, "socket error: {e}"),
            CloseReason::AuthFailed(why) => f.write_str(why),
            CloseReason::NotRedmap(sent) => {
                write!(f, "it is not a redmap server (it answered \"{sent}\")")
            }
            CloseReason::BadReply(why) => write!(f, "it sent a malformed reply: {why}"),
        }
    }
}

/// The server logic on top of the loop. Every method runs on the loop
/// thread and must return quickly.
pub trait Handler {
    /// A decoded request or reply arrived on `conn`.
    fn on_message(&mut self, io: &mut Io<'_>, conn: ConnId, request_id: u32, msg: Message);

    /// A text-session line arrived; the returned text is sent back and the
    /// connection is then closed. Under a secret ([`Io::requires_auth`]),
    /// the handler answers what an unauthenticated peer may see.
    fn on_text(&mut self, io: &mut Io<'_>, conn: ConnId, line: &str) -> String;

    /// `conn` is gone.
    fn on_close(&mut self, _io: &mut Io<'_>, _conn: ConnId, _reason: &CloseReason) {}

    /// Another thread called `wake()` on the reactor's waker.
    fn on_wake(&mut self, _io: &mut Io<'_>) {}

    /// The next instant [`Handler::on_timer`] wants to run.
    fn next_timer(&self) -> Option<Instant> {
        None
    }

    fn on_timer(&mut self, _io: &mut Io<'_>, _now: Instant) {}

    /// Checked every turn; true ends [`Reactor::run`].
    fn should_stop(&self) -> bool {
        false
    }
}

/// What a handler may do to connections while it runs.
pub struct Io<'a> {
    core: &'a mut Core,
    now: Instant,
}

impl Io<'_> {
    /// Queues `msg` as a frame on `conn`. Returns false if the connection is
    /// gone or closing (the message is dropped).
    pub fn send(&mut self, conn: ConnId, request_id: u32, msg: &Message) -> bool {
        let Some(c) = self.core.conns.get_mut(conn) else {
            return false;
        };
        if !c.queue_frame(request_id, msg) {
            return false;
        }
        self.core.dirty.push(conn);
        true
    }

    /// Closes `conn` after its queued output is sent.
    pub fn close(&mut self, conn: ConnId) {
        let until = self.now + self.core.linger_limit();
        if let Some(c) = self.core.conns.get_mut(conn) {
            c.linger(until);
            self.core.dirty.push(conn);
        }
    }

    pub fn peer(&self, conn: ConnId) -> Option<SocketAddr> {
        self.core.conns.get(conn).map(|c| c.peer)
    }

    pub fn now(&self) -> Instant {
        self.now
    }

    /// The server has a secret: binary connections authenticate, and a
    /// text session, which cannot, must be shown nothing of the cluster
    /// (see `proto::text::unauthenticated`).
    pub fn requires_auth(&self) -> bool {
        self.core.config.secret.is_some()
    }

    /// Number of open connections.
    pub fn connections(&self) -> usize {
        self.core.conns.len()
    }

    /// Bytes queued and not yet written, on all connections.
    pub fn pending_output(&self) -> usize {
        self.core
            .conns
            .ids()
            .into_iter()
            .filter_map(|id| self.core.conns.get(id))
            .map(Conn::pending_out)
            .sum()
    }

    /// Frames received since the start, by opcode byte (non-zero only).
    pub fn frames_in(&self) -> Vec<(u8, u64)> {
        (0..=255u8)
            .map(|op| (op, self.core.frames_in[usize::from(op)]))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Failed handshakes since the start.
    pub fn auth_failures(&self) -> u64 {
        self.core.auth_failures
    }

    /// Bytes received and sent on all connections since the start.
    pub fn traffic(&self) -> (u64, u64) {
        (self.core.bytes_in, self.core.bytes_out)
    }

    /// Opens an outgoing connection. It is usable at once: frames sent now
    /// leave when the handshake completes. A connect that fails, or does
    /// not complete within the write timeout, closes it (`on_close`).
    pub fn connect(&mut self, addr: SocketAddr) -> io::Result<ConnId> {
        let stream = mio::net::TcpStream::connect(addr)?;
        if let Err(e) = stream.set_nodelay(true) {
            debug!("{addr}: set_nodelay failed: {e}");
        }
        if let Err(e) = set_keepalive(&stream) {
            debug!("{addr}: keepalive failed: {e}");
        }
        let mut conn = Conn::outgoing(stream, addr, self.core.config.max_size);
        conn.write_deadline = Some(self.now + self.core.config.write_timeout);
        if self.core.config.secret.is_some() {
            let client_nonce = auth::nonce()?;
            conn.auth = AuthState::AwaitChallenge {
                client_nonce,
                held: Vec::new(),
            };
            conn.queue_handshake(1, &Message::Hello(client_nonce));
        }
        let id = self.core.add(conn)?;
        self.core.schedule(id);
        debug!("{id} {addr}: connecting");
        Ok(id)
    }
}

/// Everything the loop owns except the poller and listener, so handler
/// calls can borrow it while an event is being processed.
struct Core {
    conns: Slots<Conn>,
    deadlines: Deadlines,
    config: Config,
    /// Connections with output queued by the handler since the last flush.
    dirty: Vec<ConnId>,
    registry: Registry,
    bytes_in: u64,
    bytes_out: u64,
    /// Accepted connections open now.
    inbound: usize,
    /// Accepted connections in the handshake, oldest first (may hold
    /// connections authenticated or closed since; checked when popped).
    unauthenticated: VecDeque<ConnId>,
    /// Failed handshakes since the start.
    auth_failures: u64,
    /// Frames received, by opcode byte.
    frames_in: Vec<u64>,
}

impl Core {
    /// Takes a connection into the table and registers it with the poller
    /// for both directions (edge-triggered: no re-registration later).
    fn add(&mut self, conn: Conn) -> io::Result<ConnId> {
        let id = self.conns.insert(conn);
        let token = Token(id.index + FIRST_CONN);
        let registered = match self.conns.get_mut(id) {
            Some(c) => self.registry.register(
                c.stream_mut(),
                token,
                Interest::READABLE | Interest::WRITABLE,
            ),
            None => Err(io::ErrorKind::NotFound.into()),
        };
        if let Err(e) = registered {
            self.conns.remove(id);
            return Err(e);
        }
        Ok(id)
    }

    fn linger_limit(&self) -> Duration {
        self.config.read_timeout.min(MAX_LINGER)
    }

    /// Makes sure the deadline heap holds this connection's earliest deadline.
    fn schedule(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        if let Some(at) = c.earliest_deadline() {
            if c.scheduled.is_none_or(|s| at < s) {
                c.scheduled = Some(at);
                self.deadlines.push(at, id);
            }
        }
    }
}

pub struct Reactor {
    poll: Poll,
    listener: TcpListener,
    local_addr: SocketAddr,
    waker: Arc<Waker>,
    core: Core,
    /// Connections with unused read readiness, revisited next turn.
    again: Vec<ConnId>,
    /// While set, accepting is paused until this instant.
    accept_paused_until: Option<Instant>,
    accept_backoff: Duration,
}

impl Reactor {
    /// Binds `addr` and prepares the loop; nothing runs until [`Reactor::run`].
    pub fn bind(addr: SocketAddr, config: Config) -> io::Result<Reactor> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(addr)?;
        let local_addr = listener.local_addr()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let registry = poll.registry().try_clone()?;
        Ok(Reactor {
            poll,
            listener,
            local_addr,
            waker,
            core: Core {
                conns: Slots::new(),
                deadlines: Deadlines::new(),
                config,
                dirty: Vec::new(),
                registry,
                bytes_in: 0,
                bytes_out: 0,
                inbound: 0,
                unauthenticated: VecDeque::new(),
                auth_failures: 0,
                frames_in: vec![0; 256],
            },
            again: Vec::new(),
            accept_paused_until: None,
            accept_backoff: Duration::from_millis(10),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The waker other threads use to make the loop call [`Handler::on_wake`].
    pub fn waker(&self) -> Arc<Waker> {
        Arc::clone(&self.waker)
    }

    /// Runs the loop until the handler says stop.
    pub fn run<H: Handler>(&mut self, handler: &mut H) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        while !handler.should_stop() {
            let now = Instant::now();
            let timeout = if self.again.is_empty() {
                let next = [
                    self.core.deadlines.next(),
                    handler.next_timer(),
                    self.accept_paused_until,
                ]
                .into_iter()
                .flatten()
                .min();
                poll_timeout(now, next)
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    warn!("poll failed: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            let now = Instant::now();
            let mut woken = false;
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(handler, now),
                    WAKER => woken = true,
                    token => self.on_event(event, token, handler, now),
                }
            }
            if self.accept_paused_until.is_some_and(|t| t <= now) {
                self.accept_paused_until = None;
                self.accept(handler, now);
            }
            for id in std::mem::take(&mut self.again) {
                self.drive(id, true, handler, now);
            }
            if woken {
                handler.on_wake(&mut Io {
                    core: &mut self.core,
                    now,
                });
            }
            if handler.next_timer().is_some_and(|t| t <= now) {
                handler.on_timer(
                    &mut Io {
                        core: &mut self.core,
                        now,
                    },
                    now,
                );
            }
            self.flush_dirty(handler, now);
            self.expire(handler, now);
            // What the handler sent from on_close of an expired
            // connection goes now, not at the next event.
            self.flush_dirty(handler, now);
        }
        Ok(())
    }

    fn accept<H: Handler>(&mut self, handler: &mut H, now: Instant) {
        if self.accept_paused_until.is_some() {
            return;
        }
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    self.accept_backoff = Duration::from_millis(10);
                    if self.core.inbound >= self.core.config.max_clients {
                        // Full: closing at once keeps the backlog moving and
                        // costs the flood, not the clients already in.
                        debug!(
                            "{peer}: refused, {} connections open (--max-clients)",
                            self.core.inbound
                        );
                        drop(stream);
                        continue;
                    }
                    // Small frames should leave at once; batching is the
                    // sender's job, not Nagle's.
                    if let Err(e) = stream.set_nodelay(true) {
                        debug!("{peer}: set_nodelay failed: {e}");
                    }
                    if let Err(e) = set_keepalive(&stream) {
                        debug!("{peer}: keepalive failed: {e}");
                    }
                    let mut conn = Conn::new(stream, peer, self.core.config.max_size);
                    conn.first_input_by = Some(now + self.core.config.first_request_timeout);
                    if self.core.config.secret.is_some() {
                        conn.auth = AuthState::AwaitHello {
                            deadline: now + self.core.config.handshake_timeout,
                        };
                    }
                    let id = match self.core.add(conn) {
                        Ok(id) => id,
                        Err(e) => {
                            warn!("{peer}: cannot register: {e}");
                            continue;
                        }
                    };
                    self.core.inbound += 1;
                    debug!("{id} {peer}: accepted");
                    self.core.unauthenticated.push_back(id);
                    self.core.schedule(id);
                    self.evict_unauthenticated(handler, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    // Out of descriptors or memory: keep serving the
                    // connections we have and try again a little later.
                    warn!(
                        "accept failed: {e}; pausing accepts for {:?}",
                        self.accept_backoff
                    );
                    self.accept_paused_until = Some(now + self.accept_backoff);
                    self.accept_backoff = (self.accept_backoff * 2).min(MAX_ACCEPT_BACKOFF);
                    return;
                }
            }
        }
    }

    /// Over the cap of connections in the handshake (or, without a secret,
    /// that have not sent a complete request), the oldest is cut.
    ///
    /// It is closed at once, within the accept loop, so the slot it held
    /// under --max-clients is free for the next connection of the same burst.
    fn evict_unauthenticated<H: Handler>(&mut self, handler: &mut H, now: Instant) {
        let cap = self.core.config.max_unauthenticated;
        let core = &mut self.core;
        core.unauthenticated
            .retain(|id| core.conns.get(*id).is_some_and(Conn::is_fresh));
        while self.core.unauthenticated.len() > cap {
            let Some(id) = self.core.unauthenticated.pop_front() else {
                break;
            };
            // Its request may be in the socket already, unread because the
            // accept loop runs first: read it before judging it silent.
            self.drive(id, true, handler, now);
            let Some(c) = self.core.conns.get(id).filter(|c| c.is_fresh()) else {
                continue;
            };
            let reason = if c.auth.is_pending_server() {
                CloseReason::AuthFailed("dropped: too many connections in the handshake".into())
            } else {
                CloseReason::NoRequest
            };
            debug!(
                "{id} {}: dropped, too many new connections ({reason})",
                c.peer
            );
            self.close(id, reason, handler, now);
        }
    }

    fn on_event<H: Handler>(&mut self, event: &Event, token: Token, handler: &mut H, now: Instant) {
        // Sporadic events for closed (or never opened) tokens happen; ignore them.
        let Some(id) = token
            .0
            .checked_sub(FIRST_CONN)
            .and_then(|index| self.core.conns.id_at(index))
        else {
            return;
        };
        let readable = event.is_readable() || event.is_read_closed() || event.is_error();
        if readable {
            if let Some(c) = self.core.conns.get_mut(id) {
                c.read_pending = true;
            }
        }
        self.drive(id, readable, handler, now);
    }

    /// Does everything a connection is ready for: write, read, handle
    /// complete inputs, write replies, and update its deadlines.
    fn drive<H: Handler>(&mut self, id: ConnId, try_read: bool, handler: &mut H, now: Instant) {
        let linger_until = now + self.core.linger_limit();
        let Some(c) = self.core.conns.get_mut(id) else {
            return;
        };
        match c.check_connected() {
            Ok(true) => {}
            Ok(false) => return self.core.schedule(id),
            Err(e) => return self.close(id, CloseReason::Io(e), handler, now),
        }
        let had_output = c.pending_out() > 0;
        let mut wrote = match c.flush() {
            Ok(n) => n,
            Err(e) => return self.close(id, CloseReason::Io(e), handler, now),
        };
        let mut read_any = false;
        // Inputs left buffered by backpressure go first, once replies drain.
        let mut deferred = self.handle_inputs(id, handler, now);
        if try_read {
            for _ in 0..READ_BUDGET {
                let Some(c) = self.core.conns.get_mut(id) else {
                    return;
                };
                if !c.read_pending || c.peer_eof {
                    break;
                }
                if c.pending_out() > WRITE_HIGH_WATER {
                    break; // backpressure: resume when the peer drains its replies
                }
                let outcome = match c.read_once() {
                    Ok(o) => o,
                    Err(e) => return self.close(id, CloseReason::Io(e), handler, now),
                };
                if outcome.blocked {
                    c.read_pending = false;
                }
                read_any |= outcome.bytes > 0;
                self.core.bytes_in += outcome.bytes as u64;
                deferred = self.handle_inputs(id, handler, now);
                if outcome.blocked || outcome.eof {
                    break;
                }
            }
            if let Some(c) = self.core.conns.get_mut(id) {
                if c.read_pending && !c.peer_eof && c.pending_out() <= WRITE_HIGH_WATER {
                    self.again.push(id);
                }
            }
        }
        let Some(c) = self.core.conns.get_mut(id) else {
            return;
        };
        match c.flush() {
            Ok(n) => wrote += n,
            Err(e) => return self.close(id, CloseReason::Io(e), handler, now),
        }
        self.core.bytes_out += wrote as u64;
        if deferred && c.pending_out() <= WRITE_HIGH_WATER {
            // Drained within this call: no writable event will come to
            // resume the inputs left waiting, so come back next turn.
            self.again.push(id);
        }
        if c.peer_eof && !c.is_lingering() {
            // The peer is done sending. Whatever it sent has been handled;
            // finish sending our replies, then close.
            if c.buffered_in() > 0 {
                debug!(
                    "{id} {}: closed mid-input ({} bytes unread)",
                    c.peer,
                    c.buffered_in()
                );
            }
            c.linger(linger_until);
        }
        if c.finish_linger() {
            return self.close(id, CloseReason::Closed, handler, now);
        }
        // Deadlines: progress re-arms, idleness disarms.
        let (rt, wt) = (
            self.core.config.read_timeout,
            self.core.config.write_timeout,
        );
        if c.is_lingering() || c.buffered_in() == 0 || c.pending_out() > WRITE_HIGH_WATER {
            c.read_deadline = None;
        } else if read_any || c.read_deadline.is_none() {
            c.read_deadline = Some(now + rt);
        }
        if c.pending_out() == 0 {
            c.write_deadline = None;
        } else if wrote > 0 || !had_output || c.write_deadline.is_none() {
            c.write_deadline = Some(now + wt);
        }
        self.core.schedule(id);
    }

    /// Hands every complete input buffered on `id` to the handler. Stops
    /// early, returning true, once the replies waiting to be sent pass
    /// [`WRITE_HIGH_WATER`]: one read can hold thousands of small requests,
    /// and their replies must not pile up faster than the peer reads them.
    fn handle_inputs<H: Handler>(&mut self, id: ConnId, handler: &mut H, now: Instant) -> bool {
        let linger_until = now + self.core.linger_limit();
        loop {
            let Some(c) = self.core.conns.get_mut(id) else {
                return false;
            };
            if c.pending_out() > WRITE_HIGH_WATER {
                return c.buffered_in() > 0;
            }
            let input = c.next_input();
            let peer = c.peer;
            // It has spoken: idle is allowed now. A blank line is not a
            // command, or "\n" would buy a text session an endless stay.
            let blank = matches!(&input, Input::Line(line) if line.trim().is_empty());
            if !matches!(input, Input::None) && !blank {
                c.first_input_by = None;
            }
            if let Input::Frame(frame) = &input {
                self.core.frames_in[usize::from(frame.opcode)] += 1;
            }
            match input {
                Input::None => return false,
                Input::Frame(frame) => match Message::decode(&frame) {
                    Ok(msg) => {
                        let secret = self.core.config.secret.clone();
                        match auth::step(c, secret.as_deref(), frame.request_id, msg) {
                            Step::Consumed => {}
                            Step::Pass(Message::Error(e)) if !c.outgoing => {
                                // An ERROR is never answered, not even as
                                // unexpected: two peers that did so could
                                // bounce errors at each other for ever.
                                debug!("{id} {peer}: unsolicited {e} dropped");
                            }
                            Step::Pass(msg) => handler.on_message(
                                &mut Io {
                                    core: &mut self.core,
                                    now,
                                },
                                id,
                                frame.request_id,
                                msg,
                            ),
                            Step::Failed(why) => {
                                self.core.auth_failures += 1;
                                if c.outgoing {
                                    warn!("{id} {peer}: {why}");
                                    self.close(id, CloseReason::AuthFailed(why), handler, now);
                                    return false;
                                }
                                info!("{id} {peer}: {why}; closing");
                                refuse_stranger(c, frame.request_id, why, linger_until);
                                return false;
                            }
                        }
                    }
                    Err(e) if c.auth.is_pending_server() => {
                        // Nothing but the handshake is read before it is over.
                        self.core.auth_failures += 1;
                        info!("{id} {peer}: {e} before authenticating; closing");
                        refuse_stranger(c, frame.request_id, EXPECTED_HELLO.into(), linger_until);
                        return false;
                    }
                    Err(e) if frame.opcode == Opcode::Error.as_u8() => {
                        debug!("{id} {peer}: undecodable ERROR dropped: {e}");
                    }
                    Err(e) if c.outgoing => {
                        // A reply we cannot read settles nothing; answering
                        // it would leave its request waiting for ever. The
                        // peer is broken: its requests go elsewhere.
                        warn!("{id} {peer}: malformed reply: {e}; closing");
                        self.close(id, CloseReason::BadReply(e.to_string()), handler, now);
                        return false;
                    }
                    Err(e) => {
                        debug!("{id} {peer}: request {}: {e}", frame.request_id);
                        c.queue_frame(frame.request_id, &Message::error(&e));
                    }
                },
                Input::Refused(e) if c.auth.is_pending_server() => {
                    // Most likely a client without the secret sending real
                    // work (too large for a handshake): say what is wrong.
                    self.core.auth_failures += 1;
                    info!("{id} {peer}: {e} before authenticating; closing");
                    refuse_stranger(c, e.request_id, EXPECTED_HELLO.into(), linger_until);
                    return false;
                }
                Input::Refused(e)
                    if !e.error.is_fatal()
                        && !c.auth.is_handshaking()
                        && e.opcode == Some(Opcode::Error.as_u8()) =>
                {
                    // A damaged ERROR is dropped like a whole one: no error
                    // answers an error.
                    debug!("{id} {peer}: damaged ERROR dropped: {e}");
                }
                Input::Refused(e) => {
                    // Before the handshake, any refused frame ends the connection.
                    let fatal = e.error.is_fatal() || c.auth.is_handshaking();
                    info!("{id} {peer}: {e}{}", if fatal { "; closing" } else { "" });
                    c.queue_frame(e.request_id, &Message::error(&e.error));
                    if fatal {
                        c.linger(linger_until);
                        return false;
                    }
                }
                Input::Line(line) if line.trim().is_empty() => {}
                Input::Line(line) => {
                    debug!("{id} {peer}: text command {:?}", line.trim());
                    // What a text session may see is the handler's policy
                    // (see Io::requires_auth).
                    let reply = handler.on_text(
                        &mut Io {
                            core: &mut self.core,
                            now,
                        },
                        id,
                        &line,
                    );
                    if let Some(c) = self.core.conns.get_mut(id) {
                        c.queue_text(&reply);
                        c.linger(linger_until);
                    }
                    return false;
                }
                Input::Foreign(sent) => {
                    info!("{id} {peer}: not a redmap server; closing");
                    self.close(id, CloseReason::NotRedmap(sent), handler, now);
                    return false;
                }
                Input::LineTooLong => {
                    c.queue_text(&format!(
                        "error: line longer than {} bytes\n",
                        crate::proto::text::MAX_LINE
                    ));
                    c.linger(linger_until);
                    return false;
                }
            }
        }
    }

    fn flush_dirty<H: Handler>(&mut self, handler: &mut H, now: Instant) {
        while !self.core.dirty.is_empty() {
            let mut dirty = std::mem::take(&mut self.core.dirty);
            dirty.sort_unstable();
            dirty.dedup();
            for id in dirty {
                if self.core.conns.get(id).is_some_and(|c| c.dirty) {
                    self.drive(id, false, handler, now);
                }
            }
        }
    }

    /// Closes every connection whose deadline has passed.
    fn expire<H: Handler>(&mut self, handler: &mut H, now: Instant) {
        while let Some((at, id)) = self.core.deadlines.pop_due(now) {
            let Some(c) = self.core.conns.get_mut(id) else {
                continue; // closed since: a stale entry
            };
            if c.scheduled != Some(at) {
                continue; // superseded by an earlier entry
            }
            c.scheduled = None;
            match c.earliest_deadline() {
                Some(due) if due <= now => {
                    let reason = match c.phase {
                        _ if c.auth.deadline().is_some_and(|t| t <= now) => {
                            CloseReason::AuthFailed(
                                "no authentication within the handshake timeout".into(),
                            )
                        }
                        Phase::Linger { until, .. } if until <= now => CloseReason::LingerTimeout,
                        _ if c.first_input_by.is_some_and(|t| t <= now) => CloseReason::NoRequest,
                        _ if c.write_deadline.is_some_and(|t| t <= now) => {
                            CloseReason::WriteTimeout
                        }
                        _ => CloseReason::ReadTimeout,
                    };
                    info!(
                        "{id} {}: {reason} ({} bytes of partial input, {} bytes unsent)",
                        c.peer,
                        c.buffered_in(),
                        c.pending_out()
                    );
                    self.close(id, reason, handler, now);
                }
                Some(_) => self.core.schedule(id),
                None => {}
            }
        }
    }

    fn close<H: Handler>(
        &mut self,
        id: ConnId,
        reason: CloseReason,
        handler: &mut H,
        now: Instant,
    ) {
        let Some(mut c) = self.core.conns.remove(id) else {
            return;
        };
        if !c.outgoing {
            // Counted at accept; a break of that pairing must not wrap
            // (a release build would then refuse every client).
            match self.core.inbound.checked_sub(1) {
                Some(n) => self.core.inbound = n,
                None => log::error!("invariant broken: inbound connections below zero"),
            }
        }
        if let Err(e) = self.core.registry.deregister(c.stream_mut()) {
            debug!("{id} {}: deregister: {e}", c.peer);
        }
        debug!("{id} {}: {reason}", c.peer);
        handler.on_close(
            &mut Io {
                core: &mut self.core,
                now,
            },
            id,
            &reason,
        );
    }
}

/// Sends `err` as the error reply to `request_id` on `conn`.
pub fn reply_error(io: &mut Io<'_>, conn: ConnId, request_id: u32, err: &ProtoError) {
    io.send(conn, request_id, &Message::error(err));
}

/// Why a server closes a connection whose first frame is not a handshake.
const EXPECTED_HELLO: &str = "authentication failed: expected HELLO";

/// Answers an unauthenticated peer with one AUTH_FAILED frame and closes.
fn refuse_stranger(c: &mut Conn, request_id: u32, why: String, linger_until: Instant) {
    let err = ProtoError::refused(crate::proto::ErrorCode::AUTH_FAILED, why);
    c.queue_handshake(request_id, &Message::error(&err));
    c.linger(linger_until);
}

/// TCP keepalive on a server's sockets: a peer that vanished without FIN
/// or RST (a powered-off machine, a dropped NAT entry) is found after about
/// two minutes of silence (60 s idle, then 6 probes 10 s apart) instead of
/// holding its connection for ever. Pings find a silent worker sooner; this
/// covers connections nobody pings, such as an idle CLI's.
pub fn set_keepalive(stream: &mio::net::TcpStream) -> io::Result<()> {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10))
        .with_retries(6);
    socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive)
}
