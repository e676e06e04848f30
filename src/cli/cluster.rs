//! `redmap cluster start`: a manager and N workers on this machine, in
//! one command, for trying things out (as `dask` starts a local cluster).
//! It starts them as child processes of its own (this same binary), attaches
//! the workers, prints what it started, and on Ctrl-C (or SIGTERM) stops
//! them all and waits for them.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};

use super::{remote_err, CliError, NetArgs, DEFAULT_MANAGER};
use crate::net::Client;
use crate::proto::msg::AttachWorker;
use crate::proto::Message;

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Start a manager and N workers on this machine, attached to it; Ctrl-C
    /// stops them all.
    Start(StartArgs),
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// The manager's address (the workers take free ports of 127.0.0.1).
    #[arg(value_name = "ADDR", default_value = DEFAULT_MANAGER)]
    pub addr: String,

    /// How many workers to start (1 to 64).
    #[arg(long, value_name = "N", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub workers: u32,

    #[command(flatten)]
    pub net: NetArgs,
}

pub fn run(cmd: ClusterCommand) -> Result<ExitCode, CliError> {
    match cmd {
        ClusterCommand::Start(args) => start(&args),
    }
}

/// Longest a server may take to say where it listens, and to stop.
const STARTUP: Duration = Duration::from_secs(20);
const SHUTDOWN: Duration = Duration::from_secs(10);

/// A server this command started: what it is, its process, its address.
struct Server {
    what: String,
    child: Child,
}

fn start(args: &StartArgs) -> Result<ExitCode, CliError> {
    let stop = crate::signals::watch(|| {})
        .map_err(|e| CliError::new(format!("cannot watch for Ctrl-C: {e}")))?;
    let mut servers: Vec<Server> = Vec::new();
    let outcome = start_all(args, &mut servers).and_then(|()| {
        // Until Ctrl-C, or until one of them stops by itself.
        while !stop.load(Ordering::SeqCst) {
            for s in &mut servers {
                if let Ok(Some(status)) = s.child.try_wait() {
                    return Err(CliError::new(format!(
                        "the {} stopped ({status}); stopping the others",
                        s.what
                    )));
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    });
    stop_all(&mut servers);
    outcome.map(|()| ExitCode::SUCCESS)
}

/// The flags every server shares with this command.
fn net_flags(net: &NetArgs) -> Vec<String> {
    let mut flags = vec![
        format!("--read-timeout={}ms", net.read_timeout.as_millis()),
        format!("--write-timeout={}ms", net.write_timeout.as_millis()),
        format!("--max-size={}", net.max_size),
    ];
    if let Some(file) = &net.secret_file {
        flags.push(format!("--secret-file={}", file.display()));
    }
    flags
}

/// Starts `redmap ARGS…` and waits (bounded) for its "listening on ADDR"
/// line; returns the address.
fn spawn(what: &str, args: &[String], servers: &mut Vec<Server>) -> Result<String, CliError> {
    let exe = std::env::current_exe()
        .map_err(|e| CliError::new(format!("cannot find this program: {e}")))?;
    // A process group of its own: a terminal's Ctrl-C reaches this command
    // only, which then stops each server once (a server given a second
    // signal exits at once, without finishing its work).
    let mut child = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| CliError::new(format!("cannot start the {what}: {e}")))?;
    let stdout = child.stdout.take();
    servers.push(Server {
        what: what.to_owned(),
        child,
    });
    let Some(stdout) = stdout else {
        return Err(CliError::new(format!("the {what} has no output")));
    };
    // The first line says where it listens; the rest are read (and
    // dropped) on a thread, so a server never blocks on a full pipe.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(first)) = lines.next() {
            let _ = tx.send(first);
        }
        for _ in lines {}
    });
    let line = rx.recv_timeout(STARTUP).map_err(|_| {
        CliError::new(format!(
            "the {what} did not start within {STARTUP:?} (see its errors above)"
        ))
    })?;
    match line.rsplit_once(" on ") {
        Some((_, addr)) if line.contains("listening") => Ok(addr.trim().to_owned()),
        _ => Err(CliError::new(format!("the {what} said {line:?}"))),
    }
}

fn start_all(args: &StartArgs, servers: &mut Vec<Server>) -> Result<(), CliError> {
    let net = net_flags(&args.net);
    let with = |first: &[&str]| -> Vec<String> {
        first
            .iter()
            .map(|s| (*s).to_owned())
            .chain(net.clone())
            .collect()
    };
    let manager = spawn("manager", &with(&["manager", "start", &args.addr]), servers)?;
    let mut workers = Vec::new();
    for i in 1..=args.workers {
        let what = format!("worker {i}");
        workers.push(spawn(
            &what,
            &with(&["worker", "start", "127.0.0.1:0"]),
            servers,
        )?);
    }
    let secret = args.net.secret()?;
    let mut client = Client::connect_with(
        &manager,
        args.net.timeouts(),
        args.net.max_size(),
        secret.as_deref(),
    )
    .map_err(|e| remote_err(&manager, e))?;
    for addr in &workers {
        let msg = Message::Attach(AttachWorker {
            addr: addr.clone(),
            force: false,
            join: false,
        });
        match client.request(&msg) {
            Ok(Message::Attached) => {}
            Ok(other) => {
                return Err(CliError::new(format!(
                    "unexpected reply {} to ATTACH",
                    other.opcode()
                )))
            }
            Err(e) => return Err(remote_err(&manager, e)),
        }
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "manager {manager}")
        .and_then(|()| writeln!(out, "workers {}", workers.join(" ")))
        .and_then(|()| {
            writeln!(
                out,
                "run a job with: redmap run -m {manager} JOB; Ctrl-C stops them all"
            )
        })
        .and_then(|()| out.flush());
    Ok(())
}

/// SIGTERM to every server (each finishes what it holds and exits), then,
/// past [`SHUTDOWN`], SIGKILL to any left; waits for each.
fn stop_all(servers: &mut [Server]) {
    for s in servers.iter() {
        if let Ok(pid) = libc::pid_t::try_from(s.child.id()) {
            // SAFETY: kill sends a signal to our own child, whose pid we
            // hold (not reaped yet, so not reused); no memory is touched.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
    }
    let deadline = Instant::now() + SHUTDOWN;
    for s in servers.iter_mut() {
        loop {
            match s.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    eprintln!("redmap: the {} did not stop; killing it", s.what);
                    let _ = s.child.kill();
                    let _ = s.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}
