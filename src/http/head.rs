//! Reading one HTTP request head within fixed bounds, before anything else
//! looks at it: at most [`MAX_HEAD`] bytes into a buffer allocated once,
//! at most [`MAX_HEADERS`] header lines, and nothing after the deadline.
//! Parsing is httparse's; this module only decides when to call it and
//! when to give up. The body, if any, is never read.

use std::io::{self, ErrorKind, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Most bytes a request line and its headers may take, blank line included.
/// Far above what a browser, curl or Prometheus sends (well under 2 KiB),
/// and small enough that [`super::MAX_CONNECTIONS`] buffers cost 512 KiB.
pub const MAX_HEAD: usize = 16 * 1024;

/// Most header lines a request may carry (hyper's default limit). The
/// parser needs a fixed array of slots; more lines are refused as too
/// large, like more bytes.
pub const MAX_HEADERS: usize = 100;

/// What the routes need from a request head, copied out of the buffer
/// (so at most [`MAX_HEAD`] bytes in all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub method: String,
    /// The request target as sent, query string included.
    pub target: String,
    /// The `Authorization` header's value, if present and valid UTF-8.
    pub authorization: Option<String>,
}

/// Why no [`Head`] came out of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The head did not fit in [`MAX_HEAD`] bytes or [`MAX_HEADERS`] lines
    /// (answered 431).
    TooLarge,
    /// Not HTTP, or the client closed its side mid-head (answered 400).
    Malformed,
    /// Some bytes came, but not a whole head before the deadline
    /// (answered 408).
    TooSlow,
    /// Nothing came before the deadline, or the client left first, or the
    /// socket failed: nobody to answer, so the connection is just closed.
    /// (An unused speculative connection from a browser ends this way.)
    Silent,
}

/// A byte source whose blocking reads can be bounded in time: a TCP
/// stream, or a scripted one in tests.
pub trait TimedRead: Read {
    /// Makes the next reads fail with `WouldBlock` or `TimedOut` after
    /// `timeout` (never zero) without data.
    fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()>;
}

impl TimedRead for TcpStream {
    fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        TcpStream::set_read_timeout(self, Some(timeout))
    }
}

/// Reads one request head from `conn` into `buf` (whose length,
/// at most [`MAX_HEAD`], is the limit), giving up at `deadline`.
///
/// Each read waits at most the time left, so a client trickling one byte
/// at a time still gets cut off at `deadline`. Bytes after the head (a
/// body, a pipelined request) may land in `buf` and are ignored.
///
/// # Errors
/// A [`Refusal`] saying how to answer, if at all.
pub fn read_head<C: TimedRead>(
    conn: &mut C,
    buf: &mut [u8],
    deadline: Instant,
) -> Result<Head, Refusal> {
    let limit = buf.len().min(MAX_HEAD);
    let buf = &mut buf[..limit];
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            return Err(judge_full(buf));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(too_slow(filled));
        }
        conn.set_read_timeout(left).map_err(|_| Refusal::Silent)?;
        let n = match conn.read(&mut buf[filled..]) {
            Ok(0) if filled == 0 => return Err(Refusal::Silent),
            Ok(0) => return Err(Refusal::Malformed),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(too_slow(filled))
            }
            Err(_) => return Err(Refusal::Silent),
        };
        let from = filled;
        filled += n;
        // The first read is parsed at once too: what is not HTTP at all
        // (a redmap frame sent to this port, say) is refused without
        // waiting for a blank line that never comes.
        if from == 0 || may_end_head(&buf[..filled], from) {
            if let Some(done) = parse(&buf[..filled]) {
                return done;
            }
        }
    }
}

fn too_slow(filled: usize) -> Refusal {
    if filled == 0 {
        Refusal::Silent
    } else {
        Refusal::TooSlow
    }
}

/// Whether the bytes from `from` on (plus the two before, which a line end
/// may straddle) hold a line end followed by an empty line. Only then can
/// the head be complete, so the parser runs once per blank line instead of
/// once per read: a client trickling bytes cannot make the server re-parse
/// a growing buffer thousands of times.
fn may_end_head(buf: &[u8], from: usize) -> bool {
    let recent = &buf[from.saturating_sub(2)..];
    recent.windows(2).any(|w| w == b"\n\n") || recent.windows(3).any(|w| w == b"\n\r\n")
}

/// The head in `buf` if complete, a refusal if it can never be one, `None`
/// to read on (httparse skips empty lines before the request line, so a
/// blank line is not always the end).
fn parse(buf: &[u8]) -> Option<Result<Head, Refusal>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return None,
        Err(httparse::Error::TooManyHeaders) => return Some(Err(Refusal::TooLarge)),
        Err(_) => return Some(Err(Refusal::Malformed)),
    }
    let (Some(method), Some(target)) = (request.method, request.path) else {
        return Some(Err(Refusal::Malformed));
    };
    let authorization = request
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("Authorization"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .map(str::to_owned);
    Some(Ok(Head {
        method: method.to_owned(),
        target: target.to_owned(),
        authorization,
    }))
}

/// The refusal for a buffer filled without a complete head: too large,
/// unless what arrived is not HTTP at all.
fn judge_full(buf: &[u8]) -> Refusal {
    match parse(buf) {
        Some(Err(Refusal::Malformed)) => Refusal::Malformed,
        // Partial or too many headers. (Complete cannot happen: the read
        // that completed it would have returned it.)
        _ => Refusal::TooLarge,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// Hands out scripted reads: `Some(bytes)` as one read, `None` as a
    /// read that times out. After the script, end of stream.
    struct Script {
        reads: VecDeque<Option<Vec<u8>>>,
        taken: usize,
    }

    impl Script {
        fn new(reads: Vec<Option<Vec<u8>>>) -> Script {
            Script {
                reads: reads.into(),
                taken: 0,
            }
        }

        fn of(bytes: &[u8]) -> Script {
            Script::new(vec![Some(bytes.to_vec())])
        }
    }

    impl Read for Script {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            match self.reads.front_mut() {
                None => Ok(0),
                Some(None) => {
                    self.reads.pop_front();
                    Err(ErrorKind::WouldBlock.into())
                }
                Some(Some(bytes)) => {
                    let n = bytes.len().min(out.len());
                    out[..n].copy_from_slice(&bytes[..n]);
                    bytes.drain(..n);
                    if bytes.is_empty() {
                        self.reads.pop_front();
                    }
                    self.taken += n;
                    Ok(n)
                }
            }
        }
    }

    impl TimedRead for Script {
        fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()> {
            assert!(!timeout.is_zero(), "a zero timeout means none to std");
            Ok(())
        }
    }

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    fn read(script: &mut Script) -> Result<Head, Refusal> {
        read_head(script, &mut [0; MAX_HEAD], later())
    }

    #[test]
    fn reads_a_head_and_keeps_method_target_and_authorization() {
        let mut s = Script::of(
            b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nauthorization: Basic eDp5\r\n\r\nbody",
        );
        let head = read(&mut s).unwrap();
        assert_eq!(head.method, "GET");
        assert_eq!(head.target, "/metrics?x=1");
        assert_eq!(head.authorization.as_deref(), Some("Basic eDp5"));
    }

    #[test]
    fn a_head_trickled_byte_by_byte_or_with_bare_newlines_is_read() {
        let bytes = b"\r\nGET / HTTP/1.0\r\nHost: a\r\n\r\n";
        let mut s = Script::new(bytes.iter().map(|b| Some(vec![*b])).collect());
        assert_eq!(read(&mut s).unwrap().target, "/");
        let mut s = Script::of(b"GET /api/status HTTP/1.0\nHost: a\n\n");
        assert_eq!(read(&mut s).unwrap().target, "/api/status");
    }

    #[test]
    fn an_endless_header_line_is_too_large_after_reading_only_the_limit() {
        let mut flood = b"GET /metrics HTTP/1.1\r\nX-Filler: ".to_vec();
        flood.resize(4 * MAX_HEAD, b'A');
        let mut s = Script::of(&flood);
        assert_eq!(read(&mut s), Err(Refusal::TooLarge));
        assert_eq!(s.taken, MAX_HEAD, "read past the limit");
    }

    #[test]
    fn a_head_of_exactly_the_limit_is_read_and_one_byte_more_is_not() {
        let head = |len: usize| {
            let mut h = b"GET / HTTP/1.1\r\nX: ".to_vec();
            h.resize(len - 4, b'a');
            h.extend_from_slice(b"\r\n\r\n");
            h
        };
        assert!(read(&mut Script::of(&head(MAX_HEAD))).is_ok());
        assert_eq!(
            read(&mut Script::of(&head(MAX_HEAD + 1))),
            Err(Refusal::TooLarge)
        );
    }

    #[test]
    fn too_many_header_lines_are_too_large() {
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        for _ in 0..=MAX_HEADERS {
            head.extend_from_slice(b"X: y\r\n");
        }
        head.extend_from_slice(b"\r\n");
        assert!(head.len() < MAX_HEAD);
        assert_eq!(read(&mut Script::of(&head)), Err(Refusal::TooLarge));
        // 10,000 of them overflow the buffer first: the same answer.
        let many = b"X: y\r\n".repeat(10_000);
        let mut s = Script::of(&[b"GET / HTTP/1.1\r\n".as_slice(), &many].concat());
        assert_eq!(read(&mut s), Err(Refusal::TooLarge));
    }

    #[test]
    fn garbage_and_half_requests_are_malformed() {
        assert_eq!(
            read(&mut Script::of(b"\x16\x03\x01 hello\r\n\r\n")),
            Err(Refusal::Malformed)
        );
        assert_eq!(
            read(&mut Script::of(&[0xff; MAX_HEAD + 10])),
            Err(Refusal::Malformed)
        );
        // The client closed its side before the blank line.
        assert_eq!(
            read(&mut Script::of(b"GET / HTTP/1.1\r\n")),
            Err(Refusal::Malformed)
        );
    }

    #[test]
    fn silence_is_closed_quietly_and_a_partial_head_is_too_slow() {
        assert_eq!(read(&mut Script::new(vec![None])), Err(Refusal::Silent));
        assert_eq!(read(&mut Script::new(vec![])), Err(Refusal::Silent));
        let mut s = Script::new(vec![Some(b"GET /metr".to_vec()), None]);
        assert_eq!(read(&mut s), Err(Refusal::TooSlow));
    }

    #[test]
    fn a_passed_deadline_stops_reading() {
        let mut s = Script::of(b"GET / HTTP/1.1\r\n\r\n");
        let past = Instant::now() - Duration::from_millis(1);
        assert_eq!(
            read_head(&mut s, &mut [0; MAX_HEAD], past),
            Err(Refusal::Silent)
        );
        assert_eq!(s.taken, 0);
    }

    #[test]
    fn the_blank_line_scan_sees_line_ends_split_across_reads() {
        let buf = b"GET / HTTP/1.1\r\nA: b\r\n\r\n";
        for from in 0..buf.len() {
            assert!(may_end_head(buf, from), "missed from {from}");
        }
        assert!(!may_end_head(b"GET / HTTP/1.1\r\nA: b\r\n", 0));
    }
}
