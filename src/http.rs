//! The HTTP side of a server (`--http ADDR`): `/` (the manager's live
//! page), `/api/status` (JSON) and `/metrics` (Prometheus text). It runs on
//! its own threads and serves what the event loop last published (about
//! once a second), so a slow scraper never touches the binary protocol's
//! loop. With a secret, every request needs HTTP basic auth with the secret
//! as password (any user name).
//!
//! Whoever can reach the port may be hostile, and the password is only
//! checked once a request's head is in, so the limits come first: at most
//! [`MAX_CONNECTIONS`] connections at once (more are answered 503), a head
//! of at most [`MAX_HEAD`] bytes and [`MAX_HEADERS`] lines (431), a head
//! that arrives within [`REQUEST_DEADLINE`] of the connection (408), and a
//! response taken within [`RESPONSE_DEADLINE`]. One request per
//! connection, answered with `Connection: close`; bodies are never read.
//! `http/head.rs` reads the head within those bounds; this file owns the
//! connections, the password and the routes.

mod head;

use std::borrow::Cow;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, warn};

use crate::net::auth::Secret;

use head::{Head, Refusal};
pub use head::{MAX_HEAD, MAX_HEADERS};

/// Most HTTP connections served at once; one more is answered 503 and
/// closed by the accepting thread. Each costs a thread and a [`MAX_HEAD`]
/// buffer, and the deadlines free every slot within about 21 s, so a flood
/// of idle connections delays a scrape but cannot lock it out for good.
pub const MAX_CONNECTIONS: usize = 32;

/// How long a request's line and headers may take to arrive, counted from
/// the connection's accept.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

/// How long the client may take to receive the whole response.
pub const RESPONSE_DEADLINE: Duration = Duration::from_secs(10);

/// After answering, how long and how much of what the client still sends
/// is read and dropped before closing (see [`linger`]).
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 256 * 1024;

/// Pause after a failed accept other than a vanished client (say, out of
/// file descriptors), so the accepting thread does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What the event loop publishes for the HTTP thread.
#[derive(Debug, Default, Clone)]
pub struct Published {
    /// The body of `/api/status` (JSON).
    pub status_json: String,
    /// The body of `/metrics` (Prometheus text format 0.0.4).
    pub metrics: String,
}

/// The latest [`Published`], replaced by the event loop, read (cloned) by
/// the HTTP threads.
pub type Shared = Arc<Mutex<Published>>;

/// The manager's page: self-contained HTML, CSS and JS.
pub const MONITOR_PAGE: &str = include_str!("monitor.html");

const TEXT: &str = "text/plain; charset=utf-8";

/// What the HTTP threads share: the snapshot and how to serve it.
struct Site {
    shared: Shared,
    secret: Option<Arc<Secret>>,
    page: Option<&'static str>,
}

/// Binds `addr` and serves on new threads (one accepting, one per
/// connection, at most [`MAX_CONNECTIONS`]); returns the bound address.
/// `page`, if any, is served at `/`.
///
/// # Errors
/// The address cannot be bound, or the accepting thread cannot start.
pub fn serve(
    addr: SocketAddr,
    shared: Shared,
    secret: Option<Arc<Secret>>,
    page: Option<&'static str>,
) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot serve HTTP on {addr}: {e}")))?;
    let bound = listener.local_addr()?;
    let site = Arc::new(Site {
        shared,
        secret,
        page,
    });
    thread::Builder::new()
        .name("http".into())
        .spawn(move || accept_loop(&listener, &site))?;
    Ok(bound)
}

/// One of the [`MAX_CONNECTIONS`] places, given back when dropped.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(open: &Arc<AtomicUsize>) -> Option<Slot> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < MAX_CONNECTIONS).then_some(n + 1)
        })
        .ok()
        .map(|_| Slot(Arc::clone(open)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn accept_loop(listener: &TcpListener, site: &Arc<Site>) {
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::Interrupted | ErrorKind::ConnectionAborted
                ) =>
            {
                continue
            }
            Err(e) => {
                warn!("http: accept failed: {e}");
                thread::sleep(ACCEPT_BACKOFF);
                continue;
            }
        };
        let accepted = Instant::now();
        let Some(slot) = Slot::take(&open) else {
            refuse_busy(stream);
            continue;
        };
        let site = Arc::clone(site);
        let spawned = thread::Builder::new()
            .name("http-conn".into())
            .spawn(move || {
                let _slot = slot;
                serve_connection(stream, &site, accepted);
            });
        // On failure the closure, stream and slot included, is dropped.
        if let Err(e) = spawned {
            warn!("http: cannot start a connection thread: {e}");
        }
    }
}

/// Answers 503 without blocking the accepting thread: one non-blocking
/// write (a fresh socket's buffer takes it), then close.
fn refuse_busy(mut stream: TcpStream) {
    debug!("http: {MAX_CONNECTIONS} connections open, refusing one");
    let response = Response::text(503, "too many connections\n").with("Retry-After", "1");
    if stream.set_nonblocking(true).is_ok() {
        let _ = stream.write(&response.encode(false));
    }
}

/// Reads one request within the limits, answers it, and closes.
fn serve_connection(mut stream: TcpStream, site: &Site, accepted: Instant) {
    let peer = stream.peer_addr().ok();
    // The one buffer this connection reads into, whatever it is sent.
    let mut buf = vec![0u8; MAX_HEAD];
    let (response, head_only) =
        match head::read_head(&mut stream, &mut buf, accepted + REQUEST_DEADLINE) {
            Ok(head) => (site.route(&head), head.method == "HEAD"),
            Err(refusal) => {
                debug!("http {peer:?}: {refusal:?}");
                match refusal {
                    Refusal::TooLarge => (Response::text(431, "request header too large\n"), false),
                    Refusal::TooSlow => (Response::text(408, "request too slow\n"), false),
                    Refusal::Malformed => (Response::text(400, "bad request\n"), false),
                    Refusal::Silent => return,
                }
            }
        };
    let bytes = response.encode(head_only);
    if let Err(e) = write_by(&mut stream, &bytes, Instant::now() + RESPONSE_DEADLINE) {
        debug!("http {peer:?}: response not delivered: {e}");
        return;
    }
    linger(&mut stream, &mut buf);
}

/// Writes all of `bytes`, each write waiting at most the time left before
/// `deadline`, so a client that stops reading is dropped at the deadline.
fn write_by(stream: &mut TcpStream, mut bytes: &[u8], deadline: Instant) -> io::Result<()> {
    while !bytes.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ErrorKind::TimedOut.into());
        }
        stream.set_write_timeout(Some(left))?;
        match stream.write(bytes) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Ends the response (the client reads it to the end), then reads and
/// drops what the client still sends, for at most [`LINGER`] and
/// [`LINGER_BYTES`]. Closing a socket with unread bytes resets the
/// connection, and a reset can destroy the answer before the client reads
/// it: a request refused 431 while its client is still sending the rest
/// would then see only "connection reset".
fn linger(stream: &mut TcpStream, buf: &mut [u8]) {
    if stream.shutdown(Shutdown::Write).is_err() {
        return;
    }
    let deadline = Instant::now() + LINGER;
    let mut drained = 0;
    while drained < LINGER_BYTES {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(buf) {
            Ok(0) => return,
            Ok(n) => drained += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

impl Site {
    /// The response to a request whose head is within the limits.
    fn route(&self, head: &Head) -> Response {
        if let Some(secret) = &self.secret {
            if !authorized(head.authorization.as_deref(), secret) {
                debug!("http: {} without the password", head.target);
                return Response::text(401, "authentication required\n")
                    .with("WWW-Authenticate", "Basic realm=\"redmap\"");
            }
        }
        if head.method != "GET" && head.method != "HEAD" {
            return Response::text(405, "only GET and HEAD\n").with("Allow", "GET, HEAD");
        }
        let snapshot = |pick: fn(&Published) -> &String| -> String {
            // A poisoned lock (a publisher panicked) serves empty data
            // rather than taking the HTTP side down too.
            self.shared
                .lock()
                .map(|p| pick(&p).clone())
                .unwrap_or_default()
        };
        let path = head.target.split('?').next().unwrap_or("/");
        match (path, self.page) {
            ("/", Some(html)) => Response::new(200, "text/html; charset=utf-8", html),
            ("/api/status", _) => {
                Response::new(200, "application/json", snapshot(|p| &p.status_json))
            }
            ("/metrics", _) => {
                Response::new(200, "text/plain; version=0.0.4", snapshot(|p| &p.metrics))
            }
            _ => Response::text(404, "not found\n"),
        }
    }
}

/// Whether an `Authorization` header value is basic auth with the secret
/// as password (any user name).
fn authorized(authorization: Option<&str>, secret: &Secret) -> bool {
    authorization
        .and_then(|value| value.strip_prefix("Basic "))
        .and_then(|b64| base64_decode(b64.trim()))
        .and_then(|raw| {
            let colon = raw.iter().position(|b| *b == b':')?;
            Some(secret.matches(&raw[colon + 1..]))
        })
        .unwrap_or(false)
}

/// Decodes standard base64 (for the Authorization header only, so at most
/// [`MAX_HEAD`] bytes of input); `None` on a byte outside the alphabet.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// One answer, always the last on its connection.
#[derive(Debug)]
struct Response {
    status: u16,
    content_type: &'static str,
    /// One more header line (`WWW-Authenticate`, `Allow`, `Retry-After`).
    extra: Option<(&'static str, &'static str)>,
    body: Cow<'static, str>,
}

impl Response {
    fn new(status: u16, content_type: &'static str, body: impl Into<Cow<'static, str>>) -> Self {
        Response {
            status,
            content_type,
            extra: None,
            body: body.into(),
        }
    }

    fn text(status: u16, body: &'static str) -> Self {
        Response::new(status, TEXT, body)
    }

    fn with(mut self, name: &'static str, value: &'static str) -> Self {
        self.extra = Some((name, value));
        self
    }

    /// The bytes on the wire; without the body for a HEAD request.
    fn encode(&self, head_only: bool) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        if let Some((name, value)) = self.extra {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("\r\n");
        if !head_only {
            out.push_str(&self.body);
        }
        out.into_bytes()
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_basic_auth_base64() {
        assert_eq!(base64_decode("dXNlcjpzM2NyZXQ=").unwrap(), b"user:s3cret");
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        assert!(base64_decode("a*b").is_none());
    }

    fn secret() -> Secret {
        Secret::new(b"s3cret".to_vec()).unwrap()
    }

    #[test]
    fn basic_auth_takes_the_secret_as_password_under_any_user() {
        let s = secret();
        assert!(authorized(Some("Basic dXNlcjpzM2NyZXQ="), &s)); // user:s3cret
        assert!(authorized(Some("Basic OnMzY3JldA=="), &s)); // :s3cret
        assert!(!authorized(Some("Basic dXNlcjp3cm9uZw=="), &s)); // user:wrong
        assert!(!authorized(Some("Basic czNjcmV0"), &s)); // s3cret, no colon
        assert!(!authorized(Some("Bearer s3cret"), &s));
        assert!(!authorized(Some("Basic ***"), &s));
        assert!(!authorized(None, &s));
    }

    fn site(secret: Option<Secret>, page: Option<&'static str>) -> Site {
        let shared = Shared::default();
        *shared.lock().unwrap() = Published {
            status_json: "{\"ok\":1}".into(),
            metrics: "redmap_up 1\n".into(),
        };
        Site {
            shared,
            secret: secret.map(Arc::new),
            page,
        }
    }

    fn get(target: &str, authorization: Option<&str>) -> Head {
        Head {
            method: "GET".into(),
            target: target.into(),
            authorization: authorization.map(str::to_owned),
        }
    }

    #[test]
    fn routes_serve_the_snapshot_the_page_and_404() {
        let s = site(None, Some("<html>"));
        let r = s.route(&get("/metrics?x=1", None));
        assert_eq!(
            (r.status, r.content_type),
            (200, "text/plain; version=0.0.4")
        );
        assert_eq!(r.body, "redmap_up 1\n");
        let r = s.route(&get("/api/status", None));
        assert_eq!((r.status, r.content_type), (200, "application/json"));
        assert_eq!(r.body, "{\"ok\":1}");
        assert_eq!(s.route(&get("/", None)).body, "<html>");
        assert_eq!(s.route(&get("/nope", None)).status, 404);
        // A worker has no page.
        assert_eq!(site(None, None).route(&get("/", None)).status, 404);
    }

    #[test]
    fn with_a_secret_every_route_needs_it_first() {
        let s = site(Some(secret()), Some("<html>"));
        for target in ["/", "/metrics", "/api/status", "/nope"] {
            let r = s.route(&get(target, None));
            assert_eq!(r.status, 401, "{target}");
            assert_eq!(
                r.extra,
                Some(("WWW-Authenticate", "Basic realm=\"redmap\""))
            );
        }
        let r = s.route(&get("/metrics", Some("Basic eDpzM2NyZXQ="))); // x:s3cret
        assert_eq!(r.status, 200);
    }

    #[test]
    fn only_get_and_head_are_served_and_head_has_no_body() {
        let s = site(None, None);
        let mut post = get("/metrics", None);
        post.method = "POST".into();
        let r = s.route(&post);
        assert_eq!((r.status, r.extra), (405, Some(("Allow", "GET, HEAD"))));
        let r = s.route(&get("/metrics", None));
        let full = String::from_utf8(r.encode(false)).unwrap();
        let head = String::from_utf8(r.encode(true)).unwrap();
        assert!(full.starts_with("HTTP/1.1 200 OK\r\n"), "{full}");
        assert!(full.contains("\r\nContent-Length: 12\r\nConnection: close\r\n\r\n"));
        assert!(full.ends_with("\r\n\r\nredmap_up 1\n"), "{full}");
        assert_eq!(head, full.trim_end_matches("redmap_up 1\n"));
    }

    #[test]
    fn refusals_name_their_status() {
        let r = Response::text(431, "x\n").encode(false);
        assert!(r.starts_with(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        let r = Response::text(503, "x\n")
            .with("Retry-After", "1")
            .encode(false);
        assert!(String::from_utf8(r)
            .unwrap()
            .contains("\r\nRetry-After: 1\r\n\r\nx\n"));
    }
}
