//! A worker, as its users meet it: binary ping and info, and the netcat
//! text session.

use std::process::Command;

use redmap::proto::{ErrorCode, Message, Opcode, PROTOCOL_VERSION};

use crate::util::{self, connect, read_message, send, start_worker, text_session};

#[test]
fn a_worker_answers_ping_and_info_on_one_connection() {
    let worker = start_worker(&[]);
    let mut s = connect(worker.addr);
    send(&mut s, 1, &Message::Ping);
    assert_eq!(read_message(&mut s), (1, Message::Pong));
    send(&mut s, 2, &Message::InfoRequest);
    let (id, msg) = read_message(&mut s);
    assert_eq!(id, 2);
    let Message::Info(info) = msg else {
        panic!("expected INFO, got {msg:?}")
    };
    assert_eq!(info.version, redmap::VERSION);
    assert_eq!(info.address, worker.addr.to_string());
    assert_eq!(info.protocol, PROTOCOL_VERSION);
    assert_eq!(info.tasks_processed, 0);
}

#[test]
fn pipelined_requests_are_answered_in_order_with_their_ids() {
    let worker = start_worker(&[]);
    let mut s = connect(worker.addr);
    let mut bytes = Vec::new();
    for id in 1..=1000u32 {
        let msg = if id % 2 == 0 {
            Message::Ping
        } else {
            Message::InfoRequest
        };
        bytes.extend(util::frame_bytes(id, &msg));
    }
    std::io::Write::write_all(&mut s, &bytes).unwrap();
    for id in 1..=1000u32 {
        let (got, msg) = read_message(&mut s);
        assert_eq!(got, id);
        let want = if id % 2 == 0 {
            Opcode::Pong
        } else {
            Opcode::Info
        };
        assert_eq!(msg.opcode(), want);
    }
}

#[test]
fn a_reply_sent_to_a_worker_is_refused_but_the_connection_stays() {
    let worker = start_worker(&[]);
    let mut s = connect(worker.addr);
    send(&mut s, 4, &Message::Pong);
    let (id, msg) = read_message(&mut s);
    assert_eq!(id, 4);
    let Message::Error(e) = msg else {
        panic!("expected ERROR, got {msg:?}")
    };
    assert_eq!(e.code, ErrorCode::UNEXPECTED_MESSAGE);
    send(&mut s, 5, &Message::Ping);
    assert_eq!(read_message(&mut s), (5, Message::Pong));
}

#[test]
fn text_session_answers_ping_info_and_lists_commands_for_unknown_ones() {
    let worker = start_worker(&[]);
    assert_eq!(text_session(worker.addr, "ping\n"), "pong\n");
    assert_eq!(text_session(worker.addr, "PING\r\n"), "pong\n");
    let info = text_session(worker.addr, "info\n");
    assert!(
        info.contains(&format!("address: {}\n", worker.addr)),
        "{info}"
    );
    assert!(
        info.contains(&format!("version: {}\n", redmap::VERSION)),
        "{info}"
    );
    assert!(info.contains("tasks_processed: 0\n"), "{info}");
    assert_eq!(
        text_session(worker.addr, "stats\n"),
        "error: unknown command 'stats'; known commands: ping, info\n"
    );
    let long = format!("{}\n", "x".repeat(5000));
    assert!(text_session(worker.addr, &long).starts_with("error: line longer than"));
}

#[test]
fn echo_ping_into_netcat_prints_pong() {
    if Command::new("nc").arg("-h").output().is_err() {
        eprintln!("SKIPPED echo_ping_into_netcat_prints_pong: no `nc` on this machine (apt-get install netcat-openbsd)");
        return;
    }
    let worker = start_worker(&[]);
    let port = worker.addr.port();
    // The README's line, verbatim but for the port.
    let out = util::run(
        Command::new("sh")
            .arg("-c")
            .arg(format!("echo ping | nc 127.0.0.1 {port}")),
    );
    assert_eq!(util::stdout(&out), "pong\n");
    assert!(out.status.success());
}

#[test]
fn a_connection_that_piles_up_batches_is_told_busy_and_the_rest_still_run() {
    use redmap::proto::msg::{MapBatch, TaskList};
    let library = util::sum_c_library(&util::TempDir::new("busy"));
    let hash = redmap::plugin::PluginHash::of(&library).0;
    let worker = start_worker(&[]);
    let mut s = connect(worker.addr);
    send(&mut s, 1, &util::install_whole(&library));
    assert!(matches!(read_message(&mut s), (1, Message::InstallReply(r)) if r.complete));

    // Twenty batches in one write: the worker reads them before any is done.
    let total = 20u32;
    let mut bytes = Vec::new();
    for id in 0..total {
        let mut tasks = TaskList::new();
        tasks.push(b"1");
        let batch = MapBatch {
            hash,
            batch_id: u64::from(id),
            tasks,
            reply_limit: 0,
            args: Default::default(),
            shuffle: None,
        };
        bytes.extend(util::frame_bytes(100 + id, &Message::MapBatch(batch)));
    }
    std::io::Write::write_all(&mut s, &bytes).unwrap();
    let (mut done, mut busy) = (0, 0);
    for _ in 0..total {
        match read_message(&mut s) {
            (_, Message::BatchResult(r)) => {
                assert_eq!(r.processed, 1);
                done += 1;
            }
            (_, Message::Error(e)) if e.code == ErrorCode::BUSY => busy += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(done, redmap::worker::handler::MAX_BATCHES_PER_CONN);
    assert_eq!(busy, total as usize - done);
    // The connection goes on, and takes batches again once those are done.
    let mut tasks = TaskList::new();
    tasks.push(b"1");
    let batch = MapBatch {
        hash,
        batch_id: 99,
        tasks,
        reply_limit: 0,
        args: Default::default(),
        shuffle: None,
    };
    send(&mut s, 7, &Message::MapBatch(batch));
    assert!(matches!(read_message(&mut s), (7, Message::BatchResult(_))));
}

#[test]
fn a_worker_keeps_answering_while_a_slow_library_loads() {
    // The tutorial job in C, with an initialiser that takes three seconds:
    // loading runs it, and that must not happen on the event loop.
    let dir = util::TempDir::new("slow-init");
    let source = dir.write(
        "slow_init.c",
        &format!(
            "#include <unistd.h>\n#include \"{}\"\n\
             __attribute__((constructor)) static void slow(void) {{ sleep(3); }}\n",
            util::repo().join("examples/sum.c").display()
        ),
    );
    let library = std::fs::read(util::cc_shared(&dir, &source, "slow_init.so")).unwrap();
    let worker = start_worker(&[]);
    let mut installing = connect(worker.addr);
    send(&mut installing, 1, &util::install_whole(&library));
    // Give the worker the chunk before asking anything else.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut other = connect(worker.addr);
    send(&mut other, 2, &Message::Ping);
    assert_eq!(read_message(&mut other), (2, Message::Pong));
    // The install is still loading: its reply has not come yet.
    installing.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let pending = std::io::Read::read(&mut installing, &mut byte);
    assert!(
        matches!(&pending, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the install answered before the ping: {pending:?}"
    );
    installing.set_nonblocking(false).unwrap();
    assert!(matches!(
        read_message(&mut installing),
        (1, Message::InstallReply(r)) if r.complete
    ));
}

#[test]
fn a_worker_clears_the_plugin_directories_that_killed_workers_left() {
    let tmp = util::TempDir::new("orphans");
    let dead = tmp.join("redmap-worker-999999999");
    let alive = tmp.join("redmap-worker-1"); // init: always running
    for dir in [&dead, &alive] {
        std::fs::create_dir(dir).unwrap();
        std::fs::write(dir.join("job.so"), b"left behind").unwrap();
    }
    let mut cmd = util::redmap();
    cmd.args(["worker", "start", "127.0.0.1:0"])
        .env("TMPDIR", tmp.path());
    let worker = util::spawn_server(cmd);
    assert!(!dead.exists(), "the dead worker's directory is still there");
    assert!(alive.exists(), "a running process's directory was removed");
    let own = format!("redmap-worker-{}", worker.pid());
    assert!(tmp.join(&own).is_dir());
}

#[test]
fn an_uninstall_during_the_load_wins_unless_the_library_is_installed_again() {
    let library = util::sum_c_library(&util::TempDir::new("uninstall-race"));
    let hash = redmap::plugin::PluginHash::of(&library).0;
    let install = |id| util::frame_bytes(id, &util::install_whole(&library));
    let uninstall = |id| util::frame_bytes(id, &Message::Uninstall(hash));
    let worker = start_worker(&[]);
    let files = || {
        std::fs::read_dir(std::env::temp_dir().join(format!("redmap-worker-{}", worker.pid())))
            .map_or(0, |d| d.count())
    };
    let mut s = connect(worker.addr);
    // In one write, so the worker reads the uninstall while the library loads.
    let mut bytes = install(1);
    bytes.extend(uninstall(2));
    std::io::Write::write_all(&mut s, &bytes).unwrap();
    assert_eq!(read_message(&mut s), (2, Message::Uninstalled));
    match read_message(&mut s) {
        (1, Message::Error(e)) => {
            assert_eq!(e.code, ErrorCode::PLUGIN_REJECTED);
            assert!(e.message.contains("uninstalled while"), "{e}");
        }
        other => panic!("expected the install to be refused, got {other:?}"),
    }
    assert_eq!(files(), 0, "the uninstalled library was left on disk");

    // Installed, uninstalled and installed again while it loads: installed.
    let mut bytes = install(3);
    bytes.extend(uninstall(4));
    bytes.extend(install(5));
    std::io::Write::write_all(&mut s, &bytes).unwrap();
    let mut replies: Vec<(u32, Message)> = (0..3).map(|_| read_message(&mut s)).collect();
    replies.sort_by_key(|(id, _)| *id);
    assert!(
        matches!(&replies[0], (3, Message::InstallReply(r)) if r.complete),
        "{replies:?}"
    );
    assert_eq!(replies[1], (4, Message::Uninstalled));
    assert!(
        matches!(&replies[2], (5, Message::InstallReply(r)) if r.complete),
        "{replies:?}"
    );
    assert_eq!(files(), 1);
}

/// One INSTALL chunk of `total` bytes' library `hash`, at `offset`.
fn chunk(hash: [u8; 32], total: u64, offset: u64, bytes: &[u8]) -> Message {
    Message::Install(redmap::proto::msg::Install {
        hash,
        total,
        offset,
        chunk: bytes.to_vec(),
    })
}

/// The reply to one request: `Ok((complete, next offset))` or the error code.
fn install_step(
    s: &mut std::net::TcpStream,
    id: u32,
    msg: &Message,
) -> Result<(bool, u64), ErrorCode> {
    send(s, id, msg);
    match read_message(s) {
        (got, Message::InstallReply(r)) if got == id => Ok((r.complete, r.next_offset)),
        (got, Message::Error(e)) if got == id => Err(e.code),
        other => panic!("request {id}: unexpected {other:?}"),
    }
}

#[test]
fn install_edge_cases_are_answered_as_protocol_md_says() {
    let worker = start_worker(&[]);
    let mut s = connect(worker.addr);
    let body = [0x5au8; 100];
    let hash = redmap::plugin::PluginHash::of(&body).0;
    // A first chunk not at offset 0: resume at 0, nothing kept.
    assert_eq!(
        install_step(&mut s, 1, &chunk(hash, 100, 40, &body[40..])),
        Ok((false, 0))
    );
    // In order from 0.
    assert_eq!(
        install_step(&mut s, 2, &chunk(hash, 100, 0, &body[..40])),
        Ok((false, 40))
    );
    // Out of order (a gap, or a chunk again): dropped, resume where it stands.
    assert_eq!(
        install_step(&mut s, 3, &chunk(hash, 100, 60, &body[60..])),
        Ok((false, 40))
    );
    assert_eq!(
        install_step(&mut s, 4, &chunk(hash, 100, 0, &body[..10])),
        Ok((false, 10)),
        "offset 0 starts afresh"
    );
    assert_eq!(
        install_step(&mut s, 5, &chunk(hash, 100, 10, &body[10..40])),
        Ok((false, 40))
    );
    // A total that changes between chunks: refused, and the upload is gone.
    assert_eq!(
        install_step(&mut s, 6, &chunk(hash, 120, 40, &body[40..])),
        Err(ErrorCode::PLUGIN_REJECTED)
    );
    assert_eq!(
        install_step(&mut s, 7, &chunk(hash, 100, 40, &body[40..])),
        Ok((false, 0))
    );
    // More bytes than the total: refused, and the upload is gone.
    assert_eq!(
        install_step(&mut s, 8, &chunk(hash, 10, 0, &body[..20])),
        Err(ErrorCode::PLUGIN_REJECTED)
    );
    assert_eq!(
        install_step(&mut s, 9, &chunk(hash, 10, 10, &body[..0])),
        Ok((false, 0))
    );
    // Complete but not a library: refused once checked.
    assert_eq!(
        install_step(&mut s, 10, &chunk(hash, 100, 0, &body)),
        Err(ErrorCode::PLUGIN_REJECTED)
    );

    // A chunk of a library installed already, at any offset: complete,
    // with its own total as the next offset.
    let library = util::sum_c_library(&util::TempDir::new("install-edges"));
    let real = redmap::plugin::PluginHash::of(&library).0;
    let len = library.len() as u64;
    assert_eq!(
        install_step(&mut s, 11, &util::install_whole(&library)),
        Ok((true, len))
    );
    assert_eq!(
        install_step(&mut s, 12, &chunk(real, len, 4096, &library[4096..])),
        Ok((true, len))
    );
    assert_eq!(
        install_step(&mut s, 13, &chunk(real, len, 0, &[])),
        Ok((true, len))
    );
}

/// Sends `text` as a whole text session, ends the input, and returns
/// everything the server wrote before it closed.
fn text_then_eof(addr: std::net::SocketAddr, text: &str) -> String {
    use std::io::{Read, Write};
    let mut s = connect(addr);
    s.write_all(text.as_bytes()).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read until close");
    out
}

#[test]
fn a_text_command_ended_by_end_of_input_is_answered() {
    let worker = start_worker(&[]);
    // `printf ping | nc`: no newline.
    assert_eq!(text_then_eof(worker.addr, "ping"), "pong\n");
    assert_eq!(text_then_eof(worker.addr, " PING\r"), "pong\n");
    // Blank lines before a command are skipped; only the first command is answered.
    assert_eq!(text_then_eof(worker.addr, "\n \r\nping\ninfo\n"), "pong\n");
    // Nothing but blanks: no answer, and the connection is closed.
    assert_eq!(text_then_eof(worker.addr, "\n\n  "), "");
}

#[test]
fn blank_lines_are_not_a_request_and_buy_no_stay() {
    use std::io::{Read, Write};
    let worker = start_worker(&["--read-timeout", "1s"]);
    let mut s = connect(worker.addr);
    s.write_all(b"\n\r\n").unwrap();
    let start = std::time::Instant::now();
    let mut out = Vec::new();
    // Closed, with no answer, at the read timeout like a silent connection.
    match s.read_to_end(&mut out) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("still open after {:?}: {e}", start.elapsed()),
    }
    assert!(out.is_empty(), "{out:?}");
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
}

/// Issue 11: the worker caps the batches it holds from all connections
/// together, not only per connection: past MAX_BATCHES_HELD, a batch on a
/// fresh connection is told BUSY at once, and the connection stays.
#[test]
fn batches_past_the_workers_total_cap_are_busy_whatever_the_connection() {
    use redmap::proto::msg::{MapBatch, TaskList};
    use redmap::worker::handler::{MAX_BATCHES_HELD, MAX_BATCHES_PER_CONN};
    let dir = util::TempDir::new("held");
    // One map thread, 5 s a task: nothing the test sends ends during it.
    let lib = crate::field::sized_job(&dir, "slow.so", &["-DSLOW_MS=5000"]);
    let library = std::fs::read(lib).unwrap();
    let hash = redmap::plugin::PluginHash::of(&library).0;
    let worker = start_worker(&["--threads", "1"]);
    let batch = |id: u32| {
        let mut tasks = TaskList::new();
        tasks.push(b"1");
        Message::MapBatch(MapBatch {
            hash,
            batch_id: u64::from(id),
            tasks,
            reply_limit: 0,
            args: Default::default(),
            shuffle: None,
        })
    };
    // Each connection sends as many batches as it may, then a PING: its
    // PONG says the worker has read (and counted) every batch before it.
    let mut conns = Vec::new();
    for c in 0..MAX_BATCHES_HELD / MAX_BATCHES_PER_CONN {
        let mut s = connect(worker.addr);
        if c == 0 {
            send(&mut s, 1, &util::install_whole(&library));
            assert!(matches!(read_message(&mut s), (1, Message::InstallReply(r)) if r.complete));
        }
        let mut bytes = Vec::new();
        for i in 0..MAX_BATCHES_PER_CONN as u32 {
            bytes.extend(util::frame_bytes(100 + i, &batch(i)));
        }
        bytes.extend(util::frame_bytes(2, &Message::Ping));
        std::io::Write::write_all(&mut s, &bytes).unwrap();
        assert_eq!(read_message(&mut s), (2, Message::Pong), "connection {c}");
        conns.push(s);
    }
    let mut s = connect(worker.addr);
    send(&mut s, 3, &batch(1000));
    match read_message(&mut s) {
        (3, Message::Error(e)) => {
            assert_eq!(e.code, ErrorCode::BUSY, "{e:?}");
            assert!(e.message.contains("already holds 64 batches"), "{e:?}");
        }
        other => panic!("expected BUSY, got {other:?}"),
    }
    send(&mut s, 4, &Message::Ping);
    assert_eq!(read_message(&mut s), (4, Message::Pong));
}
