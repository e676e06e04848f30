//! A blocking client for the CLI: one connection, one request at a time.
//!
//! Servers never use socket timeouts (their reactor owns deadlines), but a
//! command-line client waiting on one socket has nothing better to do than
//! block, so here the connect, read and write timeouts are the socket's own.

use std::fmt;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::proto::msg::{ErrorReply, Info};
use crate::proto::{encode_frame, Decoder, ErrorCode, Message, ProtoError, ReadBuf};

use super::auth::{self, Secret};

use super::addr::{dial_addrs, AddrError};

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
    pub write: Duration,
}

impl Timeouts {
    /// The CLI's flags give read and write timeouts; connecting gets the
    /// write timeout, as sending the SYN is the first write.
    pub fn new(read: Duration, write: Duration) -> Timeouts {
        Timeouts {
            connect: write,
            read,
            write,
        }
    }
}

#[derive(Debug)]
pub enum ClientError {
    Addr(AddrError),
    Connect {
        addr: String,
        source: io::Error,
    },
    /// No reply within the read timeout (or the write did not complete).
    Timeout {
        what: &'static str,
        after: Duration,
    },
    Io(io::Error),
    /// The server closed the connection before replying.
    Closed,
    /// The server's bytes were not valid protocol.
    Proto(ProtoError),
    /// The server answered with an error frame.
    Remote(ErrorReply),
    /// The server answered with a message that is not a reply to the request.
    Unexpected {
        expected: &'static str,
        got: String,
    },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Addr(e) => write!(f, "{e}"),
            ClientError::Connect { addr, source } => {
                write!(f, "cannot connect to {addr}: {source}")
            }
            ClientError::Timeout { what, after } => {
                write!(f, "timed out after {after:?} waiting to {what}")
            }
            ClientError::Io(e) => write!(f, "connection error: {e}"),
            ClientError::Closed => write!(f, "the server closed the connection"),
            ClientError::Proto(e) => write!(f, "protocol error from server: {e}"),
            ClientError::Remote(e) => write!(f, "server error {e}"),
            ClientError::Unexpected { expected, got } => {
                write!(f, "expected {expected} from server, got {got}")
            }
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Addr(e) => Some(e),
            ClientError::Connect { source, .. } => Some(source),
            ClientError::Io(e) => Some(e),
            ClientError::Proto(e) => Some(e),
            _ => None,
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

pub struct Client {
    stream: TcpStream,
    peer: SocketAddr,
    buf: ReadBuf,
    decoder: Decoder,
    timeouts: Timeouts,
    next_id: u32,
    out: Vec<u8>,
}

impl Client {
    /// This end's address (the interface that reaches the server).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.local_addr()
    }

    /// Connects to `addr` and, with a secret, authenticates (see
    /// `net::auth`): the server must prove it knows the secret too.
    pub fn connect_with(
        addr: &str,
        timeouts: Timeouts,
        max_size: u32,
        secret: Option<&Secret>,
    ) -> Result<Client, ClientError> {
        let mut client = Client::connect(addr, timeouts, max_size)?;
        if let Some(secret) = secret {
            client.authenticate(secret)?;
        }
        Ok(client)
    }

    fn authenticate(&mut self, secret: &Secret) -> Result<(), ClientError> {
        let client_nonce = auth::nonce().map_err(ClientError::Io)?;
        let challenge = match self.request(&Message::Hello(client_nonce))? {
            Message::Challenge(c) => c,
            other => {
                return Err(ClientError::Unexpected {
                    expected: "CHALLENGE",
                    got: other.opcode().to_string(),
                })
            }
        };
        let proof = secret.client_proof(&client_nonce, &challenge.nonce);
        if !secret.verify_server(&client_nonce, &challenge.nonce, &challenge.proof) {
            // Still answer, so the server can log the failed attempt; the
            // proof reveals nothing about the secret.
            let _ = self.request(&Message::Auth(proof));
            return Err(ClientError::Remote(ErrorReply {
                code: ErrorCode::AUTH_FAILED,
                message: "authentication failed: the server has a different secret".into(),
            }));
        }
        match self.request(&Message::Auth(proof))? {
            Message::AuthOk => Ok(()),
            other => Err(ClientError::Unexpected {
                expected: "AUTH_OK",
                got: other.opcode().to_string(),
            }),
        }
    }

    /// Connects to `addr` (`HOST:PORT` or `:PORT`), trying each resolved
    /// address in turn within the connect timeout, without authenticating.
    pub fn connect(addr: &str, timeouts: Timeouts, max_size: u32) -> Result<Client, ClientError> {
        let addrs = dial_addrs(addr).map_err(ClientError::Addr)?;
        let mut last = None;
        for sock in addrs {
            match TcpStream::connect_timeout(&sock, timeouts.connect) {
                Ok(stream) => {
                    stream.set_nodelay(true).map_err(ClientError::Io)?;
                    stream
                        .set_write_timeout(Some(timeouts.write))
                        .map_err(ClientError::Io)?;
                    return Ok(Client {
                        stream,
                        peer: sock,
                        buf: ReadBuf::new(),
                        decoder: Decoder::new(max_size),
                        timeouts,
                        next_id: 1,
                        out: Vec::new(),
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(ClientError::Connect {
            addr: addr.to_owned(),
            source: last.unwrap_or_else(|| io::ErrorKind::NotFound.into()),
        })
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Sends `msg` and waits for the reply with the same request id. An
    /// error frame becomes [`ClientError::Remote`].
    /// The largest frame payload this client takes, in bytes.
    pub fn max_size(&self) -> u32 {
        self.decoder.max_size()
    }

    pub fn request(&mut self, msg: &Message) -> Result<Message, ClientError> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.out.clear();
        encode_frame(&mut self.out, id, msg);
        self.stream.write_all(&self.out).map_err(|e| {
            if is_timeout(&e) {
                ClientError::Timeout {
                    what: "send the request",
                    after: self.timeouts.write,
                }
            } else {
                ClientError::Io(e)
            }
        })?;
        let deadline = Instant::now() + self.timeouts.read;
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(frame)) => {
                    let reply = Message::decode(&frame).map_err(ClientError::Proto)?;
                    if frame.request_id != id && frame.request_id != 0 {
                        // A reply to an earlier request that timed out: skip it.
                        continue;
                    }
                    return match reply {
                        Message::Error(e) => Err(ClientError::Remote(e)),
                        other => Ok(other),
                    };
                }
                Ok(None) => {}
                Err(e) => return Err(ClientError::Proto(e.error)),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ClientError::Timeout {
                    what: "receive the reply",
                    after: self.timeouts.read,
                });
            }
            self.stream
                .set_read_timeout(Some(left))
                .map_err(ClientError::Io)?;
            match self.buf.read_from(&mut self.stream) {
                Ok(0) => return Err(ClientError::Closed),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => {
                    return Err(ClientError::Timeout {
                        what: "receive the reply",
                        after: self.timeouts.read,
                    })
                }
                Err(e) => return Err(ClientError::Io(e)),
            }
        }
    }

    /// Health check; returns the round-trip time.
    pub fn ping(&mut self) -> Result<Duration, ClientError> {
        let start = Instant::now();
        match self.request(&Message::Ping)? {
            Message::Pong => Ok(start.elapsed()),
            other => Err(ClientError::Unexpected {
                expected: "PONG",
                got: other.opcode().to_string(),
            }),
        }
    }

    pub fn info(&mut self) -> Result<Info, ClientError> {
        match self.request(&Message::InfoRequest)? {
            Message::Info(info) => Ok(info),
            other => Err(ClientError::Unexpected {
                expected: "INFO",
                got: other.opcode().to_string(),
            }),
        }
    }
}
