//! A cluster with a secret: the tutorial works for those who have it, and
//! nobody else gets in, by a wrong secret, no handshake, or a replay.
//! Plus protected mode and floods.

use std::io::Write;
use std::net::TcpStream;
use std::thread;

use redmap::proto::msg::RunJob;
use redmap::proto::{ErrorCode, Message};

use crate::util::{
    self, connect, read_message, redmap, repo, send, spawn_server, stderr, stdout, Cluster, Rng,
    Server, TempDir,
};

const SECRET: &str = "tutorial-secret";

fn example(name: &str) -> String {
    repo().join("examples").join(name).display().to_string()
}

/// A manager and two workers that all have the secret.
fn secured() -> (TempDir, Server, Vec<Server>) {
    let dir = TempDir::new("secured");
    let mut m = redmap();
    m.args(["manager", "start", "127.0.0.1:0"])
        .env("REDMAP_SECRET", SECRET)
        .current_dir(dir.path());
    let manager = spawn_server(m);
    let workers = (0..2)
        .map(|_| {
            let mut w = redmap();
            w.args(["worker", "start", "127.0.0.1:0"])
                .env("REDMAP_SECRET", SECRET);
            spawn_server(w)
        })
        .collect();
    (dir, manager, workers)
}

fn cli(dir: &TempDir, secret: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut cmd = redmap();
    cmd.args(args)
        .current_dir(dir.path())
        .env("REDMAP_CACHE_DIR", dir.join("cache"));
    match secret {
        Some(s) => cmd.env("REDMAP_SECRET", s),
        None => cmd.env_remove("REDMAP_SECRET"),
    };
    util::run(cmd)
}

#[test]
fn with_the_secret_on_all_sides_the_tutorial_passes() {
    let (dir, manager, workers) = secured();
    let m = manager.addr_arg();
    let out = cli(
        &dir,
        Some(SECRET),
        &[
            "manager",
            "attach",
            "-m",
            &m,
            &workers[0].addr_arg(),
            &workers[1].addr_arg(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cli(
        &dir,
        Some(SECRET),
        &[
            "run",
            "--manager",
            &m,
            "--name",
            "test-job",
            &example("sum.rs"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(dir.join("result")).unwrap(), "65");
    // The same secret from a file works as well as from the environment.
    let file = dir.write("secret", &format!("{SECRET}\n"));
    let out = cli(
        &dir,
        None,
        &[
            "manager",
            "stats",
            "--secret-file",
            file.to_str().unwrap(),
            &m,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("2/0/0/2"), "{}", stdout(&out));
}

#[test]
fn a_wrong_or_missing_secret_is_refused_with_a_clear_message() {
    let (dir, manager, workers) = secured();
    let m = manager.addr_arg();
    for secret in [Some("wrong-secret"), None] {
        for args in [
            vec![
                "manager",
                "attach",
                "-m",
                m.as_str(),
                workers[0].addr.to_string().leak(),
            ],
            vec!["run", "-m", m.as_str(), example("sum.rs").leak()],
            vec!["manager", "stats", m.as_str()],
        ] {
            let out = cli(&dir, secret, &args);
            assert_ne!(out.status.code(), Some(0), "{args:?} with {secret:?}");
            let err = stderr(&out);
            assert!(err.contains("authentication failed"), "{args:?}: {err}");
        }
    }
    assert!(!dir.join("result").exists());
    // A manager without the secret cannot use the workers either.
    let open = {
        let mut cmd = redmap();
        cmd.args(["manager", "start", "127.0.0.1:0"])
            .env_remove("REDMAP_SECRET");
        spawn_server(cmd)
    };
    let out = cli(
        &dir,
        None,
        &[
            "manager",
            "attach",
            "-m",
            &open.addr_arg(),
            &workers[0].addr_arg(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("authentication failed"),
        "{}",
        stderr(&out)
    );
}

/// The manager's private plugin directory (see `PluginStore`).
fn plugin_dir(server: &Server, kind: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("redmap-{kind}-{}", server.pid()))
}

#[test]
fn a_client_that_skips_the_handshake_is_refused_and_nothing_is_written() {
    let (_dir, manager, workers) = secured();
    for (server, kind) in [(&manager, "manager"), (&workers[0], "worker")] {
        let mut s = connect(server.addr);
        send(&mut s, 1, &util::install_whole(b"\x7fELF not really"));
        send(
            &mut s,
            2,
            &Message::RunJob(RunJob {
                hash: [0; 32],
                name: "x".into(),
                args: Default::default(),
                options: Default::default(),
            }),
        );
        let (id, msg) = read_message(&mut s);
        assert_eq!(id, 1);
        match msg {
            Message::Error(e) => {
                assert_eq!(e.code, ErrorCode::AUTH_FAILED);
                assert!(e.message.contains("authentication failed"), "{e}");
            }
            other => panic!("{kind}: expected AUTH_FAILED, got {other:?}"),
        }
        assert!(util::is_closed(&mut s), "{kind} kept the connection");
        let files = std::fs::read_dir(plugin_dir(server, kind)).map_or(0, |d| d.count());
        assert_eq!(files, 0, "{kind} wrote a plugin file");
    }
}

#[test]
fn a_stranger_cannot_make_a_server_buffer_a_huge_first_frame() {
    let (_dir, manager, workers) = secured();
    for server in [&manager, &workers[0]] {
        let before = server.rss_kib();
        // A HELLO header that announces 100 MiB, then the bytes to back it.
        let mut header = util::frame_bytes(1, &Message::Hello([0; 32]));
        header.truncate(redmap::proto::HEADER_LEN);
        header[8..12].copy_from_slice(&(100u32 << 20).to_be_bytes());
        let mut s = connect(server.addr);
        s.write_all(&header).unwrap();
        match read_message(&mut s) {
            (1, Message::Error(e)) => assert_eq!(e.code, ErrorCode::AUTH_FAILED, "{e}"),
            other => panic!("expected AUTH_FAILED, got {other:?}"),
        }
        // Whatever follows is not kept: the server is closing.
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..100 {
            if s.write_all(&chunk).is_err() {
                break;
            }
        }
        assert!(util::is_closed(&mut s));
        let after = server.rss_kib();
        assert!(
            after < before + 16 * 1024,
            "RSS grew from {before} KiB to {after} KiB"
        );
        let pong = util::text_session(server.addr, "ping\n");
        assert_eq!(pong, "pong\n", "the server stopped answering");
    }
}

#[test]
fn a_replayed_handshake_is_refused() {
    let (_dir, manager, _workers) = secured();
    let secret = redmap::net::auth::Secret::new(SECRET.as_bytes().to_vec()).unwrap();
    // A genuine handshake, recorded byte for byte.
    let client_nonce = [9u8; 32];
    let mut s = connect(manager.addr);
    send(&mut s, 1, &Message::Hello(client_nonce));
    let Message::Challenge(c) = read_message(&mut s).1 else {
        panic!("expected CHALLENGE")
    };
    assert!(secret.verify_server(&client_nonce, &c.nonce, &c.proof));
    let auth = util::frame_bytes(
        2,
        &Message::Auth(secret.client_proof(&client_nonce, &c.nonce)),
    );
    s.write_all(&auth).unwrap();
    assert_eq!(read_message(&mut s), (2, Message::AuthOk));
    send(&mut s, 3, &Message::Ping);
    assert_eq!(read_message(&mut s), (3, Message::Pong));
    // The same bytes again on a new connection: the server's nonce is new.
    let mut r = connect(manager.addr);
    send(&mut r, 1, &Message::Hello(client_nonce));
    let Message::Challenge(c2) = read_message(&mut r).1 else {
        panic!("expected CHALLENGE")
    };
    assert_ne!(c2.nonce, c.nonce, "the server reused a nonce");
    r.write_all(&auth).unwrap();
    match read_message(&mut r).1 {
        Message::Error(e) => assert_eq!(e.code, ErrorCode::AUTH_FAILED),
        other => panic!("replay accepted: {other:?}"),
    }
    assert!(util::is_closed(&mut r));
}

#[test]
fn text_sessions_on_a_secured_server_answer_ping_only() {
    let (_dir, manager, workers) = secured();
    assert_eq!(util::text_session(manager.addr, "ping\n"), "pong\n");
    let stats = util::text_session(manager.addr, "stats\n");
    assert!(
        stats.starts_with("error: this server requires authentication"),
        "{stats}"
    );
    let info = util::text_session(workers[0].addr, "info\n");
    assert!(!info.contains("address"), "{info}");
}

#[test]
fn a_server_on_a_public_address_needs_a_secret_or_insecure() {
    let dir = TempDir::new("protected");
    for kind in ["worker", "manager"] {
        let out = cli(&dir, None, &[kind, "start", ":0"]);
        assert_eq!(out.status.code(), Some(2), "{kind}");
        let err = stderr(&out);
        assert!(err.contains("refusing to listen on :0"), "{err}");
        assert!(
            err.contains("127.0.0.1:0") && err.contains("--insecure"),
            "{err}"
        );
    }
    let mut cmd = redmap();
    cmd.args(["worker", "start", ":0", "--insecure"])
        .env_remove("REDMAP_SECRET");
    let insecure = spawn_server(cmd);
    assert!(insecure.addr.ip().is_unspecified());
    let mut cmd = redmap();
    cmd.args(["worker", "start", ":0"])
        .env("REDMAP_SECRET", SECRET);
    let secured = spawn_server(cmd);
    assert!(secured.addr.ip().is_unspecified());
}

#[test]
fn garbage_and_slowloris_floods_do_not_stop_a_job_or_grow_a_worker() {
    let cluster = Cluster::start(2, &[], &[]);
    let target = cluster.workers[0].addr;
    let before = cluster.workers[0].rss_kib();
    let flood = thread::spawn(move || {
        let mut rng = Rng(77);
        // 50 slowloris connections: half a header, then a byte now and then.
        let mut slow: Vec<TcpStream> = (0..50)
            .filter_map(|_| TcpStream::connect(target).ok())
            .collect();
        for s in &mut slow {
            let _ = s.write_all(&[0xA5, 0x4D, 1]);
        }
        // 2,000 connections of garbage.
        for i in 0..2000 {
            if let Ok(mut s) = TcpStream::connect(target) {
                let n = rng.below(512);
                let mut bytes = rng.bytes(n);
                if i % 3 == 0 {
                    bytes.splice(0..0, [0xA5, 0x4D, 1]);
                }
                let _ = s.write_all(&bytes);
            }
            if i % 100 == 0 {
                for s in &mut slow {
                    let _ = s.write_all(&[0]);
                }
            }
        }
        slow
    });
    let out = util::run(cluster.cli(&[
        "run",
        "-m",
        &cluster.manager.addr_arg(),
        &example("sum.rs"),
        "--",
        "1000000",
    ]));
    let slow = flood.join().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(cluster.result(), "500001500000");
    let after = cluster.workers[0].rss_kib();
    assert!(
        after < before + 64 * 1024,
        "worker RSS grew from {before} KiB to {after} KiB"
    );
    drop(slow);
    // And it still answers.
    assert!(util::ping(target));
}

#[test]
fn job_names_from_the_network_are_validated() {
    let cluster = Cluster::start(0, &[], &[]);
    let mut s = connect(cluster.manager.addr);
    for name in ["\u{1b}[31mred".to_owned(), "x".repeat(129)] {
        send(
            &mut s,
            4,
            &Message::RunJob(RunJob {
                hash: [0; 32],
                name,
                args: Default::default(),
                options: Default::default(),
            }),
        );
        match read_message(&mut s) {
            (4, Message::Error(e)) => assert_eq!(e.code, ErrorCode::MALFORMED_PAYLOAD, "{e}"),
            other => panic!("expected MALFORMED_PAYLOAD, got {other:?}"),
        }
    }
}

#[test]
fn a_secret_file_and_the_environment_follow_one_rule() {
    let dir = TempDir::new("secret-rule");
    // Written on Windows, say: the line end is not part of the secret.
    let file = dir.write("secret", "s3cret\r\n");
    let mut cmd = redmap();
    cmd.args(["manager", "start", "127.0.0.1:0", "--secret-file"])
        .arg(&file)
        .env_remove("REDMAP_SECRET");
    let manager = spawn_server(cmd);
    let m = manager.addr_arg();
    // `export REDMAP_SECRET="$(cat file)"` drops the line end and
    // `REDMAP_SECRET=$'s3cret\n'` keeps it: both are the same secret.
    for env in ["s3cret", "s3cret\n", "s3cret\r\n"] {
        let out = cli(&dir, Some(env), &["manager", "stats", &m]);
        assert!(out.status.success(), "{env:?}: {}", stderr(&out));
    }
    // Set but empty (after the line ends go) is a mistake, not "no secret".
    for env in ["", "\n", "\r\n"] {
        let out = cli(&dir, Some(env), &["manager", "stats", &m]);
        assert!(!out.status.success(), "{env:?} was taken");
        let err = stderr(&out);
        assert!(
            err.contains("REDMAP_SECRET is set, but the secret is empty"),
            "{env:?}: {err}"
        );
    }
    let empty = dir.write("empty", "\r\n");
    let out = cli(
        &dir,
        None,
        &[
            "manager",
            "stats",
            "--secret-file",
            empty.to_str().unwrap(),
            &m,
        ],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("the secret is empty"),
        "{}",
        stderr(&out)
    );
}

/// The handshake done by hand on `s`, with request ids 1 and 2.
fn handshake(s: &mut TcpStream, secret: &str) {
    let secret = redmap::net::auth::Secret::new(secret.as_bytes().to_vec()).unwrap();
    let client_nonce = [3u8; 32];
    send(s, 1, &Message::Hello(client_nonce));
    let Message::Challenge(c) = read_message(s).1 else {
        panic!("expected CHALLENGE")
    };
    send(
        s,
        2,
        &Message::Auth(secret.client_proof(&client_nonce, &c.nonce)),
    );
    assert_eq!(read_message(s), (2, Message::AuthOk));
}

#[test]
fn a_second_hello_after_the_handshake_is_unexpected_and_the_connection_goes_on() {
    let (_dir, manager, workers) = secured();
    for server in [&manager, &workers[0]] {
        let mut s = connect(server.addr);
        handshake(&mut s, SECRET);
        for (id, msg) in [
            (3, Message::Hello([4u8; 32])),
            (4, Message::Auth([5u8; 32])),
        ] {
            send(&mut s, id, &msg);
            match read_message(&mut s) {
                (got, Message::Error(e)) if got == id => {
                    assert_eq!(e.code, ErrorCode::UNEXPECTED_MESSAGE, "{e}")
                }
                other => panic!("expected UNEXPECTED_MESSAGE for {id}, got {other:?}"),
            }
        }
        send(&mut s, 5, &Message::Ping);
        assert_eq!(read_message(&mut s), (5, Message::Pong));
    }
}

#[test]
fn a_connection_that_never_sends_hello_is_closed_without_a_frame() {
    let mut cmd = redmap();
    cmd.args(["worker", "start", "127.0.0.1:0", "--read-timeout", "2s"])
        .env("REDMAP_SECRET", SECRET);
    let secured = spawn_server(cmd);
    let mut silent = connect(secured.addr);
    let start = std::time::Instant::now();
    // Closed at min(read timeout, 5 s), with nothing sent: the peer said
    // nothing, so there is no request to answer.
    let mut byte = [0u8; 1];
    match std::io::Read::read(&mut silent, &mut byte) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("expected a close without a frame, got {other:?}"),
    }
    let waited = start.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(1500)
            && waited < std::time::Duration::from_secs(5),
        "closed after {waited:?}"
    );
}

#[test]
fn worker_status_without_the_secret_says_how_to_get_in() {
    let (dir, _manager, workers) = secured();
    let out = cli(&dir, None, &["worker", "status", &workers[0].addr_arg()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        util::stdout(&out).contains("unreachable"),
        "{}",
        util::stdout(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains("hint: give every command and server the same secret"),
        "{err}"
    );
}
