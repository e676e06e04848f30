//! One connection as the reactor sees it: its phase, its read buffer and
//! decoder, its write queue and its deadlines.
//!
//! The connection does no policy of its own. It reads and writes when told,
//! hands out whole inputs (frames or text lines) one at a time, and reports
//! the deadlines its phase calls for; the reactor decides what to do with each.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::Instant;

use mio::net::TcpStream;

use crate::proto::text::{self, LineError};
use crate::proto::{encode_frame, Decoder, Frame, FrameError, Message, ReadBuf, MAGIC};

/// Above this many unsent bytes the reactor stops reading from the
/// connection: a peer that does not read its replies cannot make us buffer
/// without end.
pub const WRITE_HIGH_WATER: usize = 8 * 1024 * 1024;

/// Largest payload accepted before the handshake is over. Handshake
/// messages are at most 64 bytes; an error frame with its message fits too.
pub const HANDSHAKE_MAX_SIZE: u32 = 1024;

/// Where the connection is in its life. Each variant holds what is valid in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Nothing received yet: the first byte decides between binary and text.
    Sniff,
    /// Framed binary protocol.
    Binary,
    /// A netcat text session: one command line, one reply, then close.
    Text,
    /// Closing. Input is discarded; pending output is flushed, then the
    /// write side is shut so the peer sees EOF after our last byte, and the
    /// connection is dropped on the peer's EOF or at `until`, whichever is
    /// first. Closing without this pause would make the kernel answer unread
    /// input with a reset, which can destroy the reply we just sent.
    Linger { until: Instant, shut: bool },
}

/// Where a connection is in the authentication handshake (see `net::auth`).
#[derive(Debug, Clone)]
pub enum AuthState {
    /// The server has no secret: frames go straight to the handler.
    Open,
    /// Server side: waiting for HELLO until `deadline`.
    AwaitHello { deadline: Instant },
    /// Server side: CHALLENGE sent, waiting for AUTH until `deadline`.
    AwaitAuth {
        client_nonce: [u8; 32],
        server_nonce: [u8; 32],
        deadline: Instant,
    },
    /// Client side: HELLO sent. Frames the handler sends meanwhile wait in
    /// `held`, and follow AUTH as soon as the server has proved itself.
    AwaitChallenge {
        client_nonce: [u8; 32],
        held: Vec<u8>,
    },
    /// Client side: AUTH sent, AUTH_OK not seen yet.
    AwaitOk,
    /// Authenticated.
    Done,
}

impl AuthState {
    /// The instant by which the handshake must be over, if one is pending.
    pub fn deadline(&self) -> Option<Instant> {
        match self {
            AuthState::AwaitHello { deadline } | AuthState::AwaitAuth { deadline, .. } => {
                Some(*deadline)
            }
            _ => None,
        }
    }

    /// Either side of a handshake that is not over.
    pub fn is_handshaking(&self) -> bool {
        matches!(
            self,
            AuthState::AwaitHello { .. }
                | AuthState::AwaitAuth { .. }
                | AuthState::AwaitChallenge { .. }
                | AuthState::AwaitOk
        )
    }

    /// A server-side connection not yet authenticated.
    pub fn is_pending_server(&self) -> bool {
        matches!(
            self,
            AuthState::AwaitHello { .. } | AuthState::AwaitAuth { .. }
        )
    }
}

/// One complete input, or the reason there is none.
#[derive(Debug)]
pub enum Input {
    Frame(Frame),
    Line(String),
    /// A frame was refused; if the error is fatal, framing is lost.
    Refused(FrameError),
    LineTooLong,
    /// On a connection we opened, the peer's first bytes are not a frame:
    /// it is no redmap server (an HTTP port, say). Their escaped preview.
    Foreign(String),
    /// Nothing complete yet.
    None,
}

/// What one read attempt found.
#[derive(Debug, Default)]
pub struct ReadOutcome {
    pub bytes: usize,
    pub eof: bool,
    pub blocked: bool,
}

pub struct Conn {
    stream: TcpStream,
    pub peer: SocketAddr,
    pub phase: Phase,
    inbuf: ReadBuf,
    decoder: Decoder,
    /// The frame limit once authenticated (`--max-size`).
    max_size: u32,
    out: Vec<u8>,
    out_pos: usize,
    /// Set while a partial input is buffered: a peer that stalls mid-frame
    /// is cut off at this instant. Idle connections have none.
    pub read_deadline: Option<Instant>,
    /// Set while output is pending: no write progress by then closes.
    pub write_deadline: Option<Instant>,
    /// The instant this connection has pushed into the reactor's deadline heap.
    pub scheduled: Option<Instant>,
    /// Readiness left unused (read budget spent or paused by backpressure).
    pub read_pending: bool,
    /// The peer shut its write side.
    pub peer_eof: bool,
    /// Output was queued since the last flush.
    pub dirty: bool,
    /// An outgoing connection whose TCP handshake has not completed.
    pub connecting: bool,
    /// We dialed it (manager → worker), rather than accepted it: the peer
    /// must be a redmap server, so what is not a frame is `Input::Foreign`.
    pub outgoing: bool,
    pub auth: AuthState,
    /// An accepted connection that has sent no complete request yet must
    /// send one by then: one that sends nothing holds a --max-clients slot
    /// for nothing.
    pub first_input_by: Option<Instant>,
}

impl Conn {
    pub fn new(stream: TcpStream, peer: SocketAddr, max_size: u32) -> Conn {
        Conn {
            stream,
            peer,
            phase: Phase::Sniff,
            inbuf: ReadBuf::new(),
            decoder: Decoder::new(max_size),
            max_size,
            out: Vec::new(),
            out_pos: 0,
            read_deadline: None,
            write_deadline: None,
            scheduled: None,
            read_pending: true,
            peer_eof: false,
            dirty: false,
            connecting: false,
            outgoing: false,
            auth: AuthState::Open,
            first_input_by: None,
        }
    }

    /// Whether the connection has yet to send its first complete request,
    /// or finish its handshake: what a flood of idle connections holds.
    pub fn is_fresh(&self) -> bool {
        self.first_input_by.is_some() || self.auth.is_pending_server()
    }

    /// An outgoing connection: it speaks the binary protocol, and is
    /// usable once the handshake completes.
    pub fn outgoing(stream: TcpStream, peer: SocketAddr, max_size: u32) -> Conn {
        // It sniffs its peer's first byte like any connection, but what is
        // not a frame makes it `Input::Foreign`, never a text session.
        let mut conn = Conn::new(stream, peer, max_size);
        conn.read_pending = false;
        conn.connecting = true;
        conn.outgoing = true;
        conn
    }

    /// For a connection still connecting: `Ok(true)` once connected,
    /// `Ok(false)` while in progress, `Err` if the connect failed.
    pub fn check_connected(&mut self) -> io::Result<bool> {
        if !self.connecting {
            return Ok(true);
        }
        if let Some(e) = self.stream.take_error()? {
            return Err(e);
        }
        match self.stream.peer_addr() {
            Ok(_) => {
                self.connecting = false;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub fn stream_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    pub fn buffered_in(&self) -> usize {
        self.inbuf.len()
    }

    pub fn pending_out(&self) -> usize {
        self.out.len() - self.out_pos
    }

    pub fn is_lingering(&self) -> bool {
        matches!(self.phase, Phase::Linger { .. })
    }

    /// Queues one frame; returns false (and queues nothing) while closing.
    /// While our own handshake is pending, the frame waits until it is done.
    pub fn queue_frame(&mut self, request_id: u32, msg: &Message) -> bool {
        if self.is_lingering() {
            return false;
        }
        match &mut self.auth {
            AuthState::AwaitChallenge { held, .. } => encode_frame(held, request_id, msg),
            _ => encode_frame(&mut self.out, request_id, msg),
        }
        self.dirty = true;
        true
    }

    /// Queues a handshake frame ahead of anything held.
    pub fn queue_handshake(&mut self, request_id: u32, msg: &Message) {
        encode_frame(&mut self.out, request_id, msg);
        self.dirty = true;
    }

    /// The handshake is through on our side: release what was held.
    pub fn release_held(&mut self) {
        if let AuthState::AwaitChallenge { held, .. } = &mut self.auth {
            let held = std::mem::take(held);
            self.out.extend_from_slice(&held);
        }
        self.dirty = true;
    }

    /// Queues raw text (text sessions).
    pub fn queue_text(&mut self, text: &str) {
        self.out.extend_from_slice(text.as_bytes());
        self.dirty = true;
    }

    /// Starts closing (see [`Phase::Linger`]); a no-op if already closing.
    pub fn linger(&mut self, until: Instant) {
        if !self.is_lingering() {
            self.phase = Phase::Linger { until, shut: false };
            self.read_deadline = None;
        }
        // The reactor drives dirty connections: that sends what is queued,
        // shuts the write side and arms the linger deadline.
        self.dirty = true;
    }

    /// One read. While lingering the bytes are discarded into a scratch
    /// buffer, so a peer still streaming an oversized frame costs no memory.
    pub fn read_once(&mut self) -> io::Result<ReadOutcome> {
        let result = if self.is_lingering() {
            let mut scratch = [0u8; 8192];
            self.stream.read(&mut scratch)
        } else {
            self.inbuf.read_from(&mut self.stream)
        };
        match result {
            Ok(0) => {
                self.peer_eof = true;
                Ok(ReadOutcome {
                    eof: true,
                    ..ReadOutcome::default()
                })
            }
            Ok(bytes) => Ok(ReadOutcome {
                bytes,
                ..ReadOutcome::default()
            }),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(ReadOutcome {
                blocked: true,
                ..ReadOutcome::default()
            }),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(ReadOutcome::default()),
            Err(e) => Err(e),
        }
    }

    /// The next complete input from the read buffer.
    pub fn next_input(&mut self) -> Input {
        if self.phase == Phase::Sniff {
            match self.inbuf.bytes().first() {
                None => return Input::None,
                Some(&b) if b == MAGIC[0] => self.phase = Phase::Binary,
                // Text sessions are for people who connect to us; a server
                // we dialed that answers in text is not a redmap server.
                Some(_) if self.outgoing => {
                    let bytes = self.inbuf.bytes();
                    let line = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
                    let shown = &line[..line.len().min(40)];
                    return Input::Foreign(shown.escape_ascii().to_string());
                }
                Some(_) => self.phase = Phase::Text,
            }
        }
        // Until the handshake is over, only its small frames are expected:
        // a peer without the secret must not make us buffer --max-size.
        self.decoder.set_max_size(if self.auth.is_handshaking() {
            HANDSHAKE_MAX_SIZE.min(self.max_size)
        } else {
            self.max_size
        });
        match self.phase {
            Phase::Binary => match self.decoder.decode(&mut self.inbuf) {
                Ok(Some(frame)) => Input::Frame(frame),
                Ok(None) => Input::None,
                Err(e) => Input::Refused(e),
            },
            Phase::Text => match text::take_line(&mut self.inbuf, self.peer_eof) {
                Ok(Some(line)) => Input::Line(line),
                Ok(None) => Input::None,
                Err(LineError::TooLong) => Input::LineTooLong,
            },
            Phase::Sniff | Phase::Linger { .. } => Input::None,
        }
    }

    /// Writes queued output until done or the socket is full. Returns the
    /// number of bytes written.
    pub fn flush(&mut self) -> io::Result<usize> {
        self.dirty = false;
        let mut written = 0;
        while self.out_pos < self.out.len() {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out_pos += n;
                    written += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
            if self.out.capacity() > WRITE_HIGH_WATER {
                self.out = Vec::new();
            }
        } else if self.out_pos > 1024 * 1024 && self.out_pos * 2 > self.out.len() {
            // Drop the sent prefix once it dominates the buffer, so a
            // long-lived busy connection does not keep growing it.
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
        Ok(written)
    }

    /// Shuts the write side once everything queued is sent (lingering only).
    /// Returns true when the connection can be dropped now.
    pub fn finish_linger(&mut self) -> bool {
        if let Phase::Linger { until, shut } = self.phase {
            if self.pending_out() > 0 {
                return false;
            }
            if !shut {
                // An error here means the peer is gone already; either way
                // there is nothing left to send.
                let _ = self.stream.shutdown(Shutdown::Write);
                self.phase = Phase::Linger { until, shut: true };
            }
            return self.peer_eof;
        }
        false
    }

    /// The earliest deadline this connection is subject to now.
    pub fn earliest_deadline(&self) -> Option<Instant> {
        let linger = match self.phase {
            Phase::Linger { until, .. } => Some(until),
            _ => None,
        };
        [
            self.read_deadline,
            self.write_deadline,
            linger,
            self.auth.deadline(),
            self.first_input_by,
        ]
        .into_iter()
        .flatten()
        .min()
    }
}
