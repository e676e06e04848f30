//! Shared test plumbing: start the real `redmap` binary on 127.0.0.1 with a
//! free port, talk to it over real sockets, and never wait without a bound.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use redmap::proto::{encode_frame, Decoder, Frame, Message, ReadBuf};

/// Upper bound for anything a test waits on.
pub const WAIT: Duration = Duration::from_secs(20);

pub fn redmap() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_redmap"));
    cmd.env_remove("RUST_LOG");
    cmd
}

/// `GET path` over HTTP/1.0 with an optional basic-auth password; returns
/// (status code, body). Bounded by a 10 s read timeout.
pub fn http_get(addr: SocketAddr, path: &str, password: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the HTTP port");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = password.map_or(String::new(), |p| {
        format!("Authorization: Basic {}\r\n", base64(&format!("ops:{p}")))
    });
    write!(s, "GET {path} HTTP/1.0\r\nHost: redmap\r\n{auth}\r\n").unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let raw = String::from_utf8_lossy(&raw);
    let code = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    (code, body)
}

/// Standard base64, for basic-auth headers.
pub fn base64(text: &str) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in text.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A server process, killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// Lines the server printed after the first (e.g. its HTTP address).
    pub lines: Option<mpsc::Receiver<String>>,
}

impl Server {
    /// The next line the server prints, waiting at most [`WAIT`].
    pub fn next_line(&self) -> Option<String> {
        self.lines.as_ref()?.recv_timeout(WAIT).ok()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the server process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.proc_status("VmRSS:")
    }

    /// The most resident memory the server process ever had (its high
    /// water mark), in KiB: a peak between two samples still shows.
    pub fn hwm_kib(&self) -> u64 {
        self.proc_status("VmHWM:")
    }

    /// Threads of the server process.
    pub fn threads(&self) -> u64 {
        self.proc_status("Threads:")
    }

    /// A number from /proc/PID/status (`field` with its colon; kB dropped).
    fn proc_status(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} line"))
    }

    /// CPU time the server process has used (user + system), in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).expect("read /proc stat");
        // Fields after the command name (which may hold spaces): utime and
        // stime are the 12th and 13th.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<u64> = rest
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        fields[11] + fields[12]
    }

    /// Open file descriptors of the server process.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("read /proc fd")
            .count()
    }

    pub fn addr_arg(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Copies the repository's job `from` (a path in the repository) into
/// `dir` as `name`; returns the copy's path, for `redmap run`.
pub fn copy_job(dir: &std::path::Path, from: &str, name: &str) -> String {
    let path = dir.join(name);
    std::fs::copy(repo().join(from), &path).unwrap();
    path.display().to_string()
}

/// Starts `redmap worker start 127.0.0.1:0 EXTRA…` and waits (bounded) for
/// the line that gives the bound address.
pub fn start_worker(extra: &[&str]) -> Server {
    let mut cmd = redmap();
    cmd.args(["worker", "start", "127.0.0.1:0"]).args(extra);
    spawn_server(cmd)
}

pub fn spawn_server(mut cmd: Command) -> Server {
    cmd.stdout(Stdio::piped()).stdin(Stdio::null());
    if std::env::var_os("REDMAP_TEST_LOG").is_some() {
        cmd.stderr(Stdio::inherit());
    } else {
        cmd.stderr(Stdio::null());
    }
    let mut child = cmd.spawn().expect("spawn redmap");
    let stdout = child.stdout.take().expect("stdout");
    // Keep reading (and so keep the pipe open) for the server's whole life.
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let line = match rx.recv_timeout(WAIT) {
        Ok(line) => line,
        Err(_) => {
            let _ = child.kill();
            panic!("server did not report its address within {WAIT:?}");
        }
    };
    let addr = line
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| {
            let _ = child.kill();
            panic!("unexpected first line from server: {line:?}")
        });
    Server {
        child,
        addr,
        lines: Some(rx),
    }
}

/// Runs a CLI command to completion, killing it if it outlives [`WAIT`].
pub fn run<C: std::borrow::BorrowMut<Command>>(mut cmd: C) -> Output {
    let cmd = cmd.borrow_mut();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Both pipes are drained while the command runs: one that writes more
    // than a pipe holds would otherwise wait for ever.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let out = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let err = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Output {
                status,
                stdout: out.join().unwrap_or_default(),
                stderr: err.join().unwrap_or_default(),
            };
        }
        if start.elapsed() > WAIT {
            let _ = child.kill();
            panic!("command {cmd:?} did not finish within {WAIT:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A raw client connection with bounded blocking reads.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

pub fn frame_bytes(request_id: u32, msg: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(&mut out, request_id, msg);
    out
}

pub fn send(stream: &mut TcpStream, request_id: u32, msg: &Message) {
    stream
        .write_all(&frame_bytes(request_id, msg))
        .expect("send");
}

/// Reads one frame (bounded by the socket's read timeout). `None` on EOF.
pub fn read_frame(stream: &mut TcpStream) -> Option<Frame> {
    let mut dec = Decoder::new(redmap::proto::DEFAULT_MAX_SIZE);
    let mut buf = ReadBuf::new();
    // Read byte-exact so no bytes of a following frame are swallowed.
    let mut header = [0u8; redmap::proto::HEADER_LEN];
    if read_exact_or_eof(stream, &mut header)? {
        buf.extend(&header);
    }
    let len = u32::from_be_bytes(header[8..12].try_into().unwrap()) as usize;
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).expect("payload");
    buf.extend(&payload);
    Some(
        dec.decode(&mut buf)
            .expect("valid frame")
            .expect("whole frame"),
    )
}

/// `Some(true)` when filled, `None` on a clean EOF before any byte.
fn read_exact_or_eof(stream: &mut TcpStream, out: &mut [u8]) -> Option<bool> {
    let mut got = 0;
    while got < out.len() {
        match stream.read(&mut out[got..]) {
            Ok(0) if got == 0 => return None,
            Ok(0) => panic!("EOF in the middle of a frame header"),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && got == 0 => return None,
            Err(e) => panic!("read failed: {e}"),
        }
    }
    Some(true)
}

/// Reads one frame and decodes its message.
pub fn read_message(stream: &mut TcpStream) -> (u32, Message) {
    let frame = read_frame(stream).expect("a reply, not EOF");
    (
        frame.request_id,
        Message::decode(&frame).expect("decodable"),
    )
}

/// True once the peer has closed: a read returns EOF or a reset.
pub fn is_closed(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1024];
    loop {
        match stream.read(&mut byte) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// Sends a text line and returns everything the server wrote before closing.
pub fn text_session(addr: SocketAddr, line: &str) -> String {
    let mut s = connect(addr);
    s.write_all(line.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read until close");
    out
}

/// One ping over a fresh connection.
pub fn ping(addr: SocketAddr) -> bool {
    let mut s = connect(addr);
    send(&mut s, 9, &Message::Ping);
    matches!(read_message(&mut s), (9, Message::Pong))
}

/// A small deterministic PRNG (xorshift64*), so failures reproduce.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A fresh directory under the system temp dir, removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "redmap-test-{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }

    pub fn write(&self, name: &str, contents: &str) -> std::path::PathBuf {
        let path = self.join(name);
        std::fs::write(&path, contents).expect("write temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The repository's own directory (for examples/ and src/plugin/).
pub fn repo() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `redmap run ARGS…` in `dir`, with the build cache inside `dir`.
pub fn run_job(dir: &TempDir, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = redmap();
    cmd.arg("run")
        .args(args)
        .current_dir(dir.path())
        .env("REDMAP_CACHE_DIR", dir.join("cache"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(&mut cmd)
}

/// A whole job library as one INSTALL chunk.
pub fn install_whole(library: &[u8]) -> Message {
    Message::Install(redmap::proto::msg::Install {
        hash: redmap::plugin::PluginHash::of(library).0,
        total: library.len() as u64,
        offset: 0,
        chunk: library.to_vec(),
    })
}

/// The tutorial job in C (examples/sum.c), built in `dir`: its bytes.
pub fn sum_c_library(dir: &TempDir) -> Vec<u8> {
    let lib = cc_shared(dir, &repo().join("examples/sum.c"), "sum_c.so");
    std::fs::read(lib).expect("read the built library")
}

/// `cc` set up to build a job library against redmap_job.h.
pub fn redmap_cc() -> Command {
    let mut cc = Command::new("cc");
    cc.args(["-shared", "-fPIC", "-O2", "-I"])
        .arg(repo().join("src/plugin"));
    cc
}

/// Compiles C source into a shared library with `cc -shared -fPIC`.
pub fn cc_shared(dir: &TempDir, source: &std::path::Path, out: &str) -> std::path::PathBuf {
    let lib = dir.join(out);
    let status = redmap_cc()
        .arg("-o")
        .arg(&lib)
        .arg(source)
        .status()
        .expect("run cc");
    assert!(status.success(), "cc failed on {}", source.display());
    lib
}

/// Starts `redmap manager start 127.0.0.1:0 EXTRA…` in `dir` (where the
/// jobs' `done` writes), with `env` set for the jobs' `load`.
pub fn start_manager(extra: &[&str], env: &[(&str, &str)], dir: &std::path::Path) -> Server {
    let mut cmd = redmap();
    cmd.args(["manager", "start", "127.0.0.1:0"])
        .args(extra)
        .current_dir(dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    spawn_server(cmd)
}

/// A manager with `workers` workers attached, as in the tutorial.
pub struct Cluster {
    pub dir: TempDir,
    pub manager: Server,
    pub workers: Vec<Server>,
}

impl Cluster {
    pub fn start(workers: usize, manager_args: &[&str], env: &[(&str, &str)]) -> Cluster {
        Cluster::start_with(workers, manager_args, &[], env)
    }

    /// [`Cluster::start`] with `worker_args` for each worker; `env` is
    /// set for the workers too.
    pub fn start_with(
        workers: usize,
        manager_args: &[&str],
        worker_args: &[&str],
        env: &[(&str, &str)],
    ) -> Cluster {
        let dir = TempDir::new("cluster");
        let manager = start_manager(manager_args, env, dir.path());
        let workers: Vec<Server> = (0..workers)
            .map(|_| {
                let mut cmd = redmap();
                cmd.args(["worker", "start", "127.0.0.1:0"])
                    .args(worker_args);
                for (k, v) in env {
                    cmd.env(k, v);
                }
                spawn_server(cmd)
            })
            .collect();
        let cluster = Cluster {
            dir,
            manager,
            workers,
        };
        if !cluster.workers.is_empty() {
            let mut cmd = cluster.cli(&["manager", "attach"]);
            cmd.args(cluster.workers.iter().map(Server::addr_arg));
            let out = run(cmd);
            assert!(out.status.success(), "attach failed: {}", stderr(&out));
        }
        cluster
    }

    /// A `redmap` command aimed at this cluster's manager (`REDMAP_MANAGER`),
    /// run in its directory with its build cache.
    pub fn cli(&self, args: &[&str]) -> Command {
        let mut cmd = redmap();
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("REDMAP_MANAGER", self.manager.addr_arg())
            .env("REDMAP_CACHE_DIR", self.dir.join("cache"));
        cmd
    }

    pub fn result(&self) -> String {
        std::fs::read_to_string(self.dir.join("result")).expect("the job wrote `result`")
    }
}

/// A free port below Linux's ephemeral range (32768 and up), for a worker
/// that a test restarts on the same address: no server bound to port 0 by
/// a parallel test can take it while it is down.
pub fn free_low_port() -> u16 {
    static TAKEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let mut rng = Rng((nanos ^ u64::from(std::process::id()) << 32) | 1);
    loop {
        let port = 20_000 + rng.below(12_000) as u16;
        let mut taken = TAKEN.lock().unwrap();
        if taken.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            taken.push(port);
            return port;
        }
    }
}

/// Socket inodes owned by process `pid`.
fn socket_inodes(pid: u32) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|target| {
            let t = target.to_string_lossy().into_owned();
            t.strip_prefix("socket:[")
                .and_then(|r| r.strip_suffix(']'))
                .map(str::to_owned)
        })
        .collect()
}

/// Established TCP connections of process `pid` to `port` on this machine.
///
/// Counts distinct sockets: /proc/net/tcp is read in several chunks, and
/// when other connections come and go between two chunks (the flood tests
/// run alongside) the kernel can list a line twice.
pub fn connections_to(pid: u32, port: u16) -> usize {
    let inodes = socket_inodes(pid);
    let mut seen = std::collections::HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 10 || cols[3] != "01" || !inodes.iter().any(|i| i == cols[9]) {
                continue;
            }
            let remote_port = cols[2]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if remote_port == Some(port) {
                seen.insert(cols[9].to_owned());
            }
        }
    }
    seen.len()
}

/// Starts a worker on a given address (to restart one where it was).
/// Retries the bind briefly, as the old socket may still be closing.
pub fn start_worker_at(addr: &str, env: &[(&str, &str)]) -> Server {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut cmd = redmap();
        cmd.args(["worker", "start", addr]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::piped())
            .stdin(Stdio::null())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().expect("spawn redmap");
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
        if let Some(bound) = line.trim().rsplit(' ').next().and_then(|a| a.parse().ok()) {
            return Server {
                child,
                addr: bound,
                lines: None,
            };
        }
        let _ = child.wait();
        assert!(
            Instant::now() < deadline,
            "cannot restart a worker on {addr}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Sends a signal (`STOP`, `CONT`, `TERM`, …) to a process.
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// Polls until `f` is true, for at most `limit`.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// A job's summary from the manager at `addr`.
pub fn job_summary(addr: &str, id: u64) -> Option<redmap::proto::msg::JobSummary> {
    let mut client = redmap::net::Client::connect(
        addr,
        redmap::net::Timeouts::new(Duration::from_secs(5), Duration::from_secs(5)),
        1 << 20,
    )
    .ok()?;
    match client.request(&Message::JobStatsRequest(id)) {
        Ok(Message::JobStats(j)) => Some(j),
        _ => None,
    }
}

/// The manager's counters.
pub fn manager_stats(addr: &str) -> Option<redmap::proto::msg::ManagerStats> {
    let mut client = redmap::net::Client::connect(
        addr,
        redmap::net::Timeouts::new(Duration::from_secs(5), Duration::from_secs(5)),
        1 << 20,
    )
    .ok()?;
    match client.request(&Message::ManagerStatsRequest) {
        Ok(Message::ManagerStats(s)) => Some(s),
        _ => None,
    }
}
