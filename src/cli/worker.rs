//! `redmap worker start|status|info`.

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::output::{json_line, table};
use super::{duration, quiet_broken_pipe, serve_error, CliError, ErrorKind, NetArgs, ServeArgs};
use crate::net::addr::listen_addr;
use crate::net::{Client, ClientError};
use crate::proto::msg::Info;
use crate::report::{info_json, InfoJson};
use serde::Serialize;

#[derive(Debug, Subcommand)]
pub enum WorkerCommand {
    /// Start a worker server listening on ADDR (HOST:PORT, or :PORT for every interface).
    Start(StartArgs),
    /// Check that workers answer: one line per address; exit status 1 if any is unreachable.
    Status(QueryArgs),
    /// Show each worker's version, uptime, jobs and tasks processed, as a table.
    Info(QueryArgs),
}

#[derive(Debug, Args)]
pub struct StartArgs {
    #[command(flatten)]
    pub serve: ServeArgs,

    /// Address to listen on, e.g. 127.0.0.1:9876 or :9876.
    #[arg(value_name = "ADDR")]
    pub addr: String,

    #[command(flatten)]
    pub net: NetArgs,

    /// Map threads (default: the number of cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// How long the worker keeps its manager's claim and job libraries
    /// after the manager's last connection closed; then it uninstalls them
    /// and may be attached to another manager.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = duration::parse)]
    pub manager_grace: Duration,

    /// Bytes of pairs this worker's reduces hold in memory, all together
    /// (each of its reduce threads, one per map thread, gets an equal
    /// share); past it, a reduce spills sorted runs to the system's
    /// temporary directory and merges them at the end (e.g. 64M, 1G).
    #[arg(long, value_name = "SIZE", default_value = "256M", value_parser = super::size::parse)]
    pub reduce_memory: usize,

    /// Memory each executor process may allocate (job code runs in one
    /// executor per job library; see `worker info`): past it, the
    /// allocation fails, the task fails with "out of memory" and the
    /// executor starts again; the worker lives. Default: half of this
    /// machine's memory.
    #[arg(long, value_name = "SIZE", value_parser = super::size::parse)]
    pub memory_limit: Option<usize>,

    /// Join the manager at MANAGER: ask it to attach this worker now, and
    /// again whenever no manager holds a connection to it (after either
    /// restarts), instead of `redmap manager attach` (with the secret, if
    /// any).
    #[arg(long, value_name = "MANAGER")]
    pub join: Option<String>,
}

/// The smallest `--memory-limit`: an executor's threads' stacks and
/// buffers alone take tens of MiB.
const MIN_MEMORY_LIMIT: usize = 64 << 20;

/// The default `--memory-limit`: half of the machine's physical memory
/// (Dask's nanny defaults to the machine's memory over its workers).
pub fn default_memory_limit() -> u64 {
    // SAFETY: sysconf reads constants; no memory is passed.
    let (pages, size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    match (u64::try_from(pages), u64::try_from(size)) {
        (Ok(p), Ok(s)) if p > 0 && s > 0 => p.saturating_mul(s) / 2,
        _ => 4 << 30,
    }
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// Worker addresses, e.g. 127.0.0.1:9876 :9877.
    #[arg(value_name = "ADDR", required = true)]
    pub addrs: Vec<String>,

    #[command(flatten)]
    pub net: NetArgs,

    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: WorkerCommand) -> Result<ExitCode, CliError> {
    match cmd {
        WorkerCommand::Start(args) => start(args),
        WorkerCommand::Status(args) => status(args),
        WorkerCommand::Info(args) => info(args),
    }
}

fn start(args: StartArgs) -> Result<ExitCode, CliError> {
    let addr = listen_addr(&args.addr).map_err(|e| CliError::from_error(ErrorKind::Usage, e))?;
    if args.memory_limit.is_some_and(|n| n < MIN_MEMORY_LIMIT) {
        return Err(CliError::new(format!(
            "--memory-limit must be at least {}: an executor needs that much to start",
            crate::pipeline::size_text(MIN_MEMORY_LIMIT as u64)
        )));
    }
    let threads = match args.threads {
        Some(0) => return Err(CliError::new("--threads must be at least 1")),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let options = crate::worker::Options {
        threads,
        http: args.serve.http_addr(&args.net)?,
        manager_grace: args.manager_grace,
        reduce_memory: args.reduce_memory,
        memory_limit: args
            .memory_limit
            .map_or_else(default_memory_limit, |n| n as u64),
        join: args.join,
    };
    crate::worker::run(
        addr,
        args.net.reactor_config(addr, &args.serve, &args.addr)?,
        options,
    )
    .map_err(|e| serve_error(addr, e))?;
    Ok(ExitCode::SUCCESS)
}

fn connect_and<T>(
    addr: &str,
    net: &NetArgs,
    f: impl FnOnce(&mut Client) -> Result<T, ClientError>,
) -> Result<T, ClientError> {
    // The secret's error stays whole (its hint too) as the cause.
    let secret = net
        .secret()
        .map_err(|e| ClientError::Io(std::io::Error::other(e)))?;
    let mut client = Client::connect_with(addr, net.timeouts(), net.max_size(), secret.as_deref())?;
    f(&mut client)
}

/// One worker's line of `worker status --json`.
#[derive(Serialize)]
struct StatusJson<'a> {
    address: &'a str,
    reachable: bool,
    #[serde(serialize_with = "crate::report::maybe_number")]
    rtt_ms: Option<f64>,
    error: Option<String>,
}

/// One worker's object in `worker info --json`: its info, or why there
/// is none.
#[derive(Serialize)]
#[serde(untagged)]
enum InfoItem<'a> {
    Reached(InfoJson<'a>),
    Unreachable {
        queried: &'a str,
        reachable: bool,
        error: String,
    },
}

fn status(args: QueryArgs) -> Result<ExitCode, CliError> {
    let results: Vec<(String, Result<Duration, ClientError>)> = args
        .addrs
        .iter()
        .map(|a| (a.clone(), connect_and(a, &args.net, Client::ping)))
        .collect();
    let any_down = results.iter().any(|(_, r)| r.is_err());
    let mut out = io::stdout().lock();
    let written = if args.json {
        let items: Vec<StatusJson> = results
            .iter()
            .map(|(addr, r)| StatusJson {
                address: addr,
                reachable: r.is_ok(),
                // Microsecond resolution: no float noise.
                rtt_ms: r
                    .as_ref()
                    .ok()
                    .map(|d| (d.as_secs_f64() * 1e6).round() / 1e3),
                error: r.as_ref().err().map(ToString::to_string),
            })
            .collect();
        json_line(&mut out, &items)
    } else {
        let width = results.iter().map(|(a, _)| a.len()).max().unwrap_or(0);
        results.iter().try_for_each(|(addr, r)| match r {
            Ok(rtt) => writeln!(
                out,
                "{addr:<width$}  reachable    ({:.2} ms)",
                rtt.as_secs_f64() * 1e3
            ),
            Err(e) => writeln!(out, "{addr:<width$}  unreachable  {e}"),
        })
    };
    quiet_broken_pipe(written)?;
    if !args.json {
        // As `worker info` says it: once per kind of failure.
        let mut hints: Vec<&str> = results
            .iter()
            .filter_map(|(_, r)| r.as_ref().err().and_then(super::client_hint))
            .collect();
        hints.dedup();
        for hint in hints {
            eprintln!("hint: {hint}");
        }
    }
    Ok(if any_down {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn info(args: QueryArgs) -> Result<ExitCode, CliError> {
    let results: Vec<(String, Result<Info, ClientError>)> = args
        .addrs
        .iter()
        .map(|a| (a.clone(), connect_and(a, &args.net, Client::info)))
        .collect();
    let mut any_down = false;
    for (addr, r) in &results {
        if let Err(e) = r {
            any_down = true;
            if !args.json {
                eprintln!("redmap: {addr}: {e}");
                if let Some(hint) = super::client_hint(e) {
                    eprintln!("hint: {hint}");
                }
            }
        }
    }
    let mut out = io::stdout().lock();
    let written = if args.json {
        let items: Vec<InfoItem> = results
            .iter()
            .map(|(addr, r)| match r {
                Ok(info) => InfoItem::Reached(info_json(addr, info)),
                Err(e) => InfoItem::Unreachable {
                    queried: addr,
                    reachable: false,
                    error: e.to_string(),
                },
            })
            .collect();
        json_line(&mut out, &items)
    } else {
        let rows: Vec<Vec<String>> = results
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok())
            .map(|i| {
                vec![
                    i.address.clone(),
                    i.version.clone(),
                    i.protocol.to_string(),
                    duration::render(Duration::from_millis(i.uptime_ms)),
                    i.active_jobs.to_string(),
                    i.installed_jobs.to_string(),
                    i.tasks_processed.to_string(),
                    match i.memory_limit {
                        0 => "-".to_owned(),
                        n => crate::pipeline::size_text(n),
                    },
                    format!("{} ({} died)", i.executors, i.executor_deaths),
                ]
            })
            .collect();
        if rows.is_empty() {
            Ok(())
        } else {
            table(
                &mut out,
                &[
                    "ADDRESS",
                    "VERSION",
                    "PROTOCOL",
                    "UPTIME",
                    "ACTIVE JOBS",
                    "INSTALLED JOBS",
                    "TASKS PROCESSED",
                    "MEMORY LIMIT",
                    "EXECUTORS",
                ],
                &rows,
            )
        }
    };
    quiet_broken_pipe(written)?;
    Ok(if any_down {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
