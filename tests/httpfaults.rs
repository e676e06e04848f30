//! A hostile client on an `--http` port: a header line that never ends,
//! thousands of headers, a request trickled in byte by byte, a crowd of
//! connections that send nothing. Each is cut off within fixed bounds
//! (16 KiB of head, 10 s per request, 32 connections), before any password
//! is checked, and the server's memory stays where it was; a real scrape
//! works again afterwards.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use crate::util::{eventually, redmap, spawn_server, Server, TempDir};

const MIB: usize = 1 << 20;

/// The password of the secret-file variants, and `ops:` + it in base64.
const SECRET: &str = "http-secret";
const BASIC_AUTH: &str = "Basic b3BzOmh0dHAtc2VjcmV0";

/// A server started with `--http 127.0.0.1:0`, its HTTP address, and the
/// directory holding its secret file (if any).
struct Http {
    server: Server,
    addr: SocketAddr,
    password: bool,
    _dir: TempDir,
}

/// `redmap manager|worker start 127.0.0.1:0 --http 127.0.0.1:0`, with
/// `--secret-file` when `secret`.
fn start(kind: &str, secret: bool) -> Http {
    let dir = TempDir::new("httpfaults");
    let mut cmd = redmap();
    cmd.args([kind, "start", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .current_dir(dir.path());
    if secret {
        let file = dir.write("secret", &format!("{SECRET}\n"));
        cmd.arg("--secret-file").arg(file);
    }
    let server = spawn_server(cmd);
    // "redmap monitor on http://ADDR/" or "redmap worker metrics on http://ADDR/metrics".
    let line = server.next_line().expect("the HTTP address");
    let addr = line
        .split_once("http://")
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected line {line:?}"));
    Http {
        server,
        addr,
        password: secret,
        _dir: dir,
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Everything the server sends until it closes (a reset ends it too),
/// waiting at most the socket's read timeout between bytes.
fn reply(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `GET /metrics` (with the password if the server has one): the status.
fn scrape(http: &Http) -> u16 {
    let mut s = connect(http.addr);
    let auth = if http.password {
        format!("Authorization: {BASIC_AUTH}\r\n")
    } else {
        String::new()
    };
    if write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n{auth}\r\n").is_err() {
        return 0;
    }
    status(&reply(&mut s))
}

fn status(reply: &str) -> u16 {
    reply
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Sends one `GET /metrics` whose header line never ends, 1 MiB of `A` at
/// a time, up to 64 MiB or until the server stops taking it. Returns the
/// whole MiBs it took and what it answered.
fn flood(addr: SocketAddr) -> (usize, String) {
    let mut s = connect(addr);
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Filler: ")
        .expect("send the request line");
    let chunk = vec![b'A'; MIB];
    let mut sent = 0;
    while sent < 64 && s.write_all(&chunk).is_ok() {
        sent += 1;
    }
    (sent, reply(&mut s))
}

/// The flood story for one server: cut off after a few MiB at most (what
/// the two kernels' socket buffers hold), answered 431 if anything, the
/// process's peak memory unmoved, and /metrics served afterwards.
fn endless_header_is_cut_off(kind: &str, secret: bool) {
    let http = start(kind, secret);
    assert_eq!(scrape(&http), 200, "{kind} before the flood");
    let before = http.server.hwm_kib();
    let (sent, answer) = flood(http.addr);
    let grown = http.server.hwm_kib().saturating_sub(before);
    assert!(
        grown < 16 * 1024,
        "the {kind}'s (secret: {secret}) peak memory grew by {grown} KiB"
    );
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431 "),
        "the {kind} answered {answer:?}"
    );
    assert!(sent < 16, "the {kind} took {sent} MiB of one header line");
    assert_eq!(scrape(&http), 200, "{kind} after the flood");
    if secret {
        let mut s = connect(http.addr);
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(status(&reply(&mut s)), 401, "the password was not asked");
    }
}

#[test]
fn an_endless_http_header_is_cut_off_before_it_grows_the_manager() {
    endless_header_is_cut_off("manager", false);
    endless_header_is_cut_off("manager", true);
}

#[test]
fn an_endless_http_header_is_cut_off_before_it_grows_the_worker() {
    endless_header_is_cut_off("worker", false);
    endless_header_is_cut_off("worker", true);
}

#[test]
fn ten_thousand_http_headers_are_refused_as_too_large() {
    let http = start("manager", true);
    let mut request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..10_000 {
        request.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
    }
    request.extend_from_slice(format!("Authorization: {BASIC_AUTH}\r\n\r\n").as_bytes());
    let mut s = connect(http.addr);
    s.write_all(&request).expect("send the request");
    let answer = reply(&mut s);
    assert_eq!(status(&answer), 431, "{answer:?}");
    assert!(answer.contains("\r\nConnection: close\r\n"), "{answer:?}");
    assert_eq!(scrape(&http), 200);
}

#[test]
fn an_http_request_trickled_in_is_answered_408_at_its_deadline() {
    let http = start("worker", false);
    let mut s = connect(http.addr);
    // One byte every 200 ms: never idle long, but never done either. A
    // deadline per read would wait forever; the one per request is 10 s.
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let trickle = b"GET /metrics HTTP/1.1\r\nX-Slow: "
        .iter()
        .chain([b'a'; 40].iter());
    let start = Instant::now();
    let mut first = Vec::new();
    let mut buf = [0u8; 4096];
    for byte in trickle {
        if s.write_all(&[*byte]).is_err() {
            break;
        }
        match s.read(&mut buf) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Ok(n) => {
                first.extend_from_slice(&buf[..n]); // the server answered or closed
                break;
            }
            Err(_) => break,
        }
    }
    let waited = start.elapsed();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let answer = String::from_utf8_lossy(&first).into_owned() + &reply(&mut s);
    assert_eq!(status(&answer), 408, "after {waited:?}: {answer:?}");
    assert!(
        waited > Duration::from_secs(8) && waited < Duration::from_secs(13),
        "answered after {waited:?}, not at the 10 s deadline"
    );
    assert_eq!(scrape(&http), 200);
}

#[test]
fn idle_http_connections_beyond_the_cap_are_refused_and_the_deadline_frees_the_rest() {
    let http = start("manager", false);
    let threads = http.server.threads();
    let started = Instant::now();
    // Twice the cap, sending nothing. The accepting thread takes them in
    // order: the first 32 hold every place, the next 32 are turned away.
    let idle: Vec<TcpStream> = (0..64).map(|_| connect(http.addr)).collect();
    assert!(
        eventually(Duration::from_secs(5), || http.server.threads()
            >= threads + 32),
        "the first 32 connections were not taken"
    );
    thread::sleep(Duration::from_millis(200));
    assert!(
        http.server.threads() <= threads + 32,
        "{} threads for 64 idle connections (from {threads})",
        http.server.threads()
    );
    assert_eq!(scrape(&http), 503, "a scrape past the cap");
    for (i, mut s) in idle.into_iter().enumerate() {
        let answer = reply(&mut s);
        if i < 32 {
            // Closed at the deadline, without an answer: nothing was asked.
            assert_eq!(answer, "", "idle connection {i}");
        } else {
            assert_eq!(status(&answer), 503, "connection {i}: {answer:?}");
        }
    }
    let freed = started.elapsed();
    assert!(
        freed < Duration::from_secs(13),
        "the idle connections were closed after {freed:?}"
    );
    assert!(
        eventually(Duration::from_secs(3), || scrape(&http) == 200),
        "no scrape served once the idle connections were gone"
    );
}
