//! The reactor's promises, checked against a real worker process: limits
//! before allocation, error frames, read and write deadlines, and survival
//! of connection churn. Plus the waker path, in-process.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use redmap::net::{Client, ConnId, Handler, Io, Reactor, Timeouts};
use redmap::proto::{ErrorCode, Header, Message, Opcode, HEADER_LEN};

use crate::util::{self, connect, is_closed, ping, read_message, send, start_worker};

fn header(opcode: u8, request_id: u32, length: u32, crc: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    Header {
        opcode,
        request_id,
        length,
        crc,
    }
    .write(&mut h);
    h
}

fn expect_error(s: &mut std::net::TcpStream, id: u32, code: ErrorCode) -> String {
    let (got, msg) = read_message(s);
    assert_eq!(got, id);
    match msg {
        Message::Error(e) => {
            assert_eq!(e.code, code, "{e}");
            e.message
        }
        other => panic!("expected ERROR {code}, got {other:?}"),
    }
}

#[test]
fn an_oversize_declared_length_gets_an_error_frame_and_a_close_without_growing_memory() {
    let worker = start_worker(&[]);
    assert!(ping(worker.addr));
    let before = worker.rss_kib();
    for _ in 0..5 {
        let mut s = connect(worker.addr);
        s.write_all(&header(Opcode::Ping.as_u8(), 77, u32::MAX, 0))
            .unwrap();
        // Keep streaming "payload" as a real oversize sender would; the
        // worker must discard it, not buffer it. It may reset us meanwhile.
        let _ = s.write_all(&vec![0u8; 4 * 1024 * 1024]);
        let message = expect_error(&mut s, 77, ErrorCode::FRAME_TOO_LARGE);
        assert!(message.contains("209715200"), "names the limit: {message}");
        assert!(is_closed(&mut s), "the worker closes after the error");
    }
    let after = worker.rss_kib();
    assert!(
        after < before + 16 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    assert!(ping(worker.addr));
}

#[test]
fn a_large_declared_length_within_the_limit_costs_only_what_arrives() {
    let worker = start_worker(&["--max-size", "150000000", "--read-timeout", "1s"]);
    assert!(ping(worker.addr));
    let before = worker.rss_kib();
    let mut held = Vec::new();
    for _ in 0..8 {
        let mut s = connect(worker.addr);
        s.write_all(&header(Opcode::Ping.as_u8(), 1, 140_000_000, 0))
            .unwrap();
        held.push(s);
    }
    thread::sleep(Duration::from_millis(300));
    let after = worker.rss_kib();
    assert!(
        after < before + 16 * 1024,
        "8 declarations of 140 MB grew RSS from {before} KiB to {after} KiB"
    );
    // And they are cut off after the read timeout, since nothing more arrives.
    for s in &mut held {
        assert!(is_closed(s));
    }
}

#[test]
fn a_crc_mismatch_gets_an_error_frame_and_the_connection_goes_on() {
    let worker = start_worker(&[]);
    let mut s = connect(worker.addr);
    // (Not an ERROR frame: a damaged ERROR is dropped, never answered.)
    let mut frame = util::frame_bytes(12, &Message::Uninstall([7; 32]));
    let last = frame.len() - 1;
    frame[last] ^= 0x20;
    s.write_all(&frame).unwrap();
    let message = expect_error(&mut s, 12, ErrorCode::CRC_MISMATCH);
    assert!(message.contains("CRC32"), "{message}");
    send(&mut s, 13, &Message::Ping);
    assert_eq!(read_message(&mut s), (13, Message::Pong));
}

#[test]
fn an_error_frame_is_never_answered_whole_damaged_or_malformed() {
    let worker = start_worker(&[]);
    let dir = util::TempDir::new("error-frames");
    let manager = util::start_manager(&[], &[], dir.path());
    for server in [&worker, &manager] {
        let mut s = connect(server.addr);
        let error = |code| {
            Message::Error(redmap::proto::msg::ErrorReply {
                code,
                message: "from a confused peer".into(),
            })
        };
        let mut bytes = util::frame_bytes(5, &error(ErrorCode::INTERNAL));
        bytes.extend(util::frame_bytes(0, &error(ErrorCode::NOT_FOUND)));
        let mut damaged = util::frame_bytes(6, &error(ErrorCode::BUSY));
        let last = damaged.len() - 1;
        damaged[last] ^= 0x20;
        bytes.extend(damaged);
        // A payload too short for its code: MALFORMED_PAYLOAD for any other opcode.
        bytes.extend(header(Opcode::Error.as_u8(), 7, 1, crc32fast::hash(&[0])));
        bytes.push(0);
        bytes.extend(util::frame_bytes(8, &Message::Ping));
        s.write_all(&bytes).unwrap();
        // The first frame back answers the PING: nothing answered the errors.
        assert_eq!(read_message(&mut s), (8, Message::Pong));
    }
}

#[test]
fn request_id_0_is_echoed_like_any_other() {
    let worker = start_worker(&[]);
    let mut s = connect(worker.addr);
    send(&mut s, 0, &Message::Ping);
    assert_eq!(read_message(&mut s), (0, Message::Pong));
}

#[test]
fn an_unknown_opcode_gets_an_error_frame_and_the_connection_goes_on() {
    let worker = start_worker(&[]);
    let mut s = connect(worker.addr);
    s.write_all(&header(0x6E, 21, 0, 0)).unwrap();
    let message = expect_error(&mut s, 21, ErrorCode::UNKNOWN_OPCODE);
    assert!(message.contains("0x6E"), "{message}");
    send(&mut s, 22, &Message::Ping);
    assert_eq!(read_message(&mut s), (22, Message::Pong));
}

#[test]
fn a_wrong_version_gets_an_error_frame_and_a_close() {
    let worker = start_worker(&[]);
    let mut s = connect(worker.addr);
    let mut h = header(Opcode::Ping.as_u8(), 3, 0, 0);
    h[2] = 9;
    s.write_all(&h).unwrap();
    expect_error(&mut s, 0, ErrorCode::UNSUPPORTED_VERSION);
    assert!(is_closed(&mut s));
}

#[test]
fn a_half_header_then_silence_is_cut_off_while_others_are_served() {
    let worker = start_worker(&["--read-timeout", "1s"]);
    let mut stalled = connect(worker.addr);
    stalled
        .write_all(&header(Opcode::Ping.as_u8(), 1, 0, 0)[..7])
        .unwrap();
    let started = Instant::now();

    // Meanwhile another client keeps being answered on one connection.
    let mut healthy = connect(worker.addr);
    let mut answered = 0;
    while started.elapsed() < Duration::from_millis(1500) {
        send(&mut healthy, answered, &Message::Ping);
        assert_eq!(read_message(&mut healthy), (answered, Message::Pong));
        answered += 1;
        thread::sleep(Duration::from_millis(50));
    }
    assert!(answered >= 10);

    assert!(
        is_closed(&mut stalled),
        "the stalled client was not cut off"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "cut off too early, after {waited:?}"
    );
    // The healthy connection, idle for a moment longer than the timeout, stays.
    thread::sleep(Duration::from_millis(1200));
    send(&mut healthy, 999, &Message::Ping);
    assert_eq!(read_message(&mut healthy), (999, Message::Pong));
}

#[test]
fn a_peer_that_never_reads_its_replies_is_closed_after_the_write_timeout() {
    let worker = start_worker(&["--write-timeout", "1s"]);
    let addr = worker.addr;
    let requests: Vec<u8> = (0..400_000u32)
        .flat_map(|id| util::frame_bytes(id, &Message::InfoRequest))
        .collect();
    let mut s = connect(addr);
    s.set_write_timeout(Some(Duration::from_secs(15))).unwrap();
    // The worker stops reading once its queue for us is full; then it makes
    // no write progress, and must close us after the write timeout. Our
    // write then fails, or finishes if the kernel buffers took it all.
    let started = Instant::now();
    let write_result = s.write_all(&requests);
    let mut closed = write_result.is_err();
    if !closed {
        // Still not reading: wait past the write timeout, then check.
        thread::sleep(Duration::from_secs(3));
        closed = is_closed(&mut s);
    }
    assert!(closed, "the worker kept a peer that never reads");
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(ping(addr), "the worker still answers others");
}

#[test]
fn five_hundred_connections_opened_and_dropped_leave_the_worker_answering() {
    let worker = start_worker(&[]);
    assert!(ping(worker.addr));
    let fds_before = worker.open_fds();
    let mut conns = Vec::new();
    for i in 0..500 {
        let mut s = connect(worker.addr);
        match i % 3 {
            0 => {}
            1 => s.write_all(b"pi").unwrap(),
            _ => s.write_all(&[0xA5, 0x4D, 1]).unwrap(),
        }
        conns.push(s);
    }
    drop(conns);
    assert!(ping(worker.addr));
    // Every dropped connection is released (bounded wait).
    let deadline = Instant::now() + util::WAIT;
    while worker.open_fds() > fds_before + 2 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    assert!(
        worker.open_fds() <= fds_before + 2,
        "{} fds open, {} before",
        worker.open_fds(),
        fds_before
    );
}

/// A handler that hands each ping to another thread, which replies through
/// the waker: the path map threads will use.
struct Offloading {
    jobs: mpsc::Sender<(ConnId, u32)>,
    done: mpsc::Receiver<(ConnId, u32)>,
}

impl Handler for Offloading {
    fn on_message(&mut self, _io: &mut Io<'_>, conn: ConnId, request_id: u32, _msg: Message) {
        self.jobs.send((conn, request_id)).unwrap();
    }

    fn on_text(&mut self, _io: &mut Io<'_>, _conn: ConnId, _line: &str) -> String {
        String::new()
    }

    fn on_wake(&mut self, io: &mut Io<'_>) {
        while let Ok((conn, id)) = self.done.try_recv() {
            io.send(conn, id, &Message::Pong);
        }
    }
}

#[test]
fn replies_from_other_threads_arrive_through_the_waker() {
    let config = redmap::net::Config::new(Duration::from_secs(5), Duration::from_secs(5), 1 << 20);
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut reactor = Reactor::bind(addr, config).unwrap();
    let addr = reactor.local_addr();
    let waker = reactor.waker();
    let (jobs_tx, jobs_rx) = mpsc::channel::<(ConnId, u32)>();
    let (done_tx, done_rx) = mpsc::channel();
    thread::spawn(move || {
        for job in jobs_rx {
            thread::sleep(Duration::from_millis(5)); // "work"
            if done_tx.send(job).is_err() {
                break;
            }
            waker.wake().unwrap();
        }
    });
    thread::spawn(move || {
        let mut handler = Offloading {
            jobs: jobs_tx,
            done: done_rx,
        };
        let _ = reactor.run(&mut handler);
    });
    let mut client = Client::connect(
        &addr.to_string(),
        Timeouts::new(Duration::from_secs(5), Duration::from_secs(5)),
        1 << 20,
    )
    .unwrap();
    for _ in 0..20 {
        client.ping().unwrap();
    }
    // Raw bytes too, several in flight at once.
    let mut s = connect(addr);
    for id in 100..110 {
        send(&mut s, id, &Message::Ping);
    }
    for id in 100..110 {
        assert_eq!(read_message(&mut s), (id, Message::Pong));
    }
    let mut rest = Vec::new();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty());
}
