//! `redmap manager start|attach|detach|stats`.

use std::io;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::output::{json_line, table};
use super::{
    call, duration, quiet_broken_pipe, remote_err, serve_error, CliError, ErrorKind, ManagerArg,
    NetArgs, ServeArgs,
};
use crate::manager::Settings;
use crate::net::addr::listen_addr;
use crate::proto::msg::AttachWorker;
use crate::proto::Message;
use crate::report::StatsJson;

#[derive(Debug, Subcommand)]
pub enum ManagerCommand {
    /// Start a manager listening on ADDR (HOST:PORT, or :PORT for every interface).
    Start(StartArgs),
    /// Attach workers to a manager: it sends them map work from then on.
    Attach(WorkersArgs),
    /// Detach workers from a manager (after their work in flight, unless it runs with --force-detach).
    Detach(WorkersArgs),
    /// Show a manager's workers, jobs and throughput.
    Stats(StatsArgs),
}

#[derive(Debug, Args)]
pub struct StartArgs {
    #[command(flatten)]
    pub serve: ServeArgs,

    /// Address to listen on, e.g. 127.0.0.1:9899 or :9899.
    #[arg(value_name = "ADDR")]
    pub addr: String,

    #[command(flatten)]
    pub net: NetArgs,

    /// Detach workers at once, handing their work in flight to the others.
    #[arg(long)]
    pub force_detach: bool,

    /// Most connections to one worker.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub max_connections: usize,

    /// Times a failed task is tried again before it counts as failed.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub max_retries: u32,

    /// Jobs run at once; more wait their turn.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub max_jobs: usize,

    /// Never send backup copies of slow batches near a job's end.
    #[arg(long)]
    pub no_backup_tasks: bool,

    /// Longest a batch may take on a worker before it is tried elsewhere,
    /// like a failed attempt (default: no limit). Batches aim at 50 ms and a
    /// slow task travels alone, so set it above the slowest task: e.g. 10m.
    #[arg(long, value_name = "DURATION", value_parser = super::duration::parse)]
    pub task_timeout: Option<Duration>,

    /// No longer used: a keyed job's partitions are reduced on the
    /// workers, each within its worker's `--reduce-memory`. Accepted (with
    /// a warning) so scripts that give it still start.
    #[arg(long, value_name = "SIZE", value_parser = super::size::parse, hide = true)]
    pub reduce_memory: Option<usize>,

    /// Memory each job's executor process may allocate (a job's `load`,
    /// its byte-level reduce and `done` run in one of their own): past
    /// it, that job fails with "out of memory"; the manager and its other
    /// jobs go on. Default: half of this machine's memory.
    #[arg(long, value_name = "SIZE", value_parser = super::size::parse)]
    pub memory_limit: Option<usize>,
}

#[derive(Debug, Args)]
pub struct WorkersArgs {
    #[command(flatten)]
    pub manager: ManagerArg,

    /// Worker addresses, e.g. 127.0.0.1:9876 127.0.0.1:9877.
    #[arg(value_name = "ADDR", required = true)]
    pub addrs: Vec<String>,

    /// attach: take a worker even if another manager holds it (a worker
    /// belongs to one manager at a time).
    #[arg(long)]
    pub force: bool,

    #[command(flatten)]
    pub net: NetArgs,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    #[command(flatten)]
    pub manager: ManagerArg,

    /// The manager's address (or -m/--manager, or $REDMAP_MANAGER).
    #[arg(value_name = "ADDR")]
    pub addr: Option<String>,

    #[command(flatten)]
    pub net: NetArgs,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: ManagerCommand) -> Result<ExitCode, CliError> {
    match cmd {
        ManagerCommand::Start(args) => start(args),
        ManagerCommand::Attach(args) => attach_or_detach(args, true),
        ManagerCommand::Detach(args) => attach_or_detach(args, false),
        ManagerCommand::Stats(args) => stats(args),
    }
}

fn start(args: StartArgs) -> Result<ExitCode, CliError> {
    if args.max_connections == 0 || args.max_jobs == 0 {
        return Err(CliError::new(
            "--max-connections and --max-jobs must be at least 1",
        ));
    }
    let addr = listen_addr(&args.addr).map_err(|e| CliError::from_error(ErrorKind::Usage, e))?;
    let settings = Settings {
        max_connections: args.max_connections,
        max_retries: args.max_retries,
        max_jobs: args.max_jobs,
        force_detach: args.force_detach,
        max_size: args.net.max_size(),
        read_timeout: args.net.read_timeout,
        backup_tasks: !args.no_backup_tasks,
        task_timeout: args.task_timeout,
        memory_limit: args
            .memory_limit
            .map_or_else(super::worker::default_memory_limit, |n| n as u64),
    };
    if args.reduce_memory.is_some() {
        log::warn!(
            "--reduce-memory on the manager is no longer used: keyed jobs reduce on the \
             workers (give it to `redmap worker start`)"
        );
    }
    crate::manager::run(
        addr,
        args.net.reactor_config(addr, &args.serve, &args.addr)?,
        settings,
        args.serve.http_addr(&args.net)?,
    )
    .map_err(|e| serve_error(addr, e))?;
    Ok(ExitCode::SUCCESS)
}

fn attach_or_detach(args: WorkersArgs, attach: bool) -> Result<ExitCode, CliError> {
    let manager = args.manager.resolve(None)?;
    let mut client = manager.connect(&args.net)?;
    let mut failed = false;
    for addr in &args.addrs {
        let msg = if attach {
            Message::Attach(AttachWorker {
                addr: addr.clone(),
                force: args.force,
                join: false,
            })
        } else {
            Message::Detach(addr.clone())
        };
        match client.request(&msg) {
            Ok(Message::Attached) => println!("attached {addr}"),
            Ok(Message::Detached) => println!("detached {addr}"),
            Ok(other) => {
                failed = true;
                eprintln!("redmap: {addr}: unexpected reply {}", other.opcode());
            }
            Err(e) => {
                failed = true;
                eprintln!("redmap: {addr}: {}", remote_err(&manager.addr, e));
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn stats(args: StatsArgs) -> Result<ExitCode, CliError> {
    let manager = args.manager.resolve(args.addr.as_deref())?;
    let mut client = manager.connect(&args.net)?;
    let s = call(
        &mut client,
        &manager.addr,
        &Message::ManagerStatsRequest,
        |m| match m {
            Message::ManagerStats(v) => Some(v),
            _ => None,
        },
    )?;
    let mut out = io::stdout().lock();
    let written = if args.json {
        json_line(&mut out, &StatsJson::new(&s))
    } else {
        table(
            &mut out,
            &[
                "ADDRESS",
                "WORKERS (ACTIVE/FAILING/TERMINATED/TOTAL)",
                "JOBS (RUNNING/FAILED/COMPLETED)",
                "TASKS/S",
                "BYTES IN",
                "BYTES OUT",
                "UPTIME",
            ],
            &[vec![
                s.address.clone(),
                format!(
                    "{}/{}/{}/{}",
                    s.workers_active, s.workers_failing, s.workers_terminated, s.workers_total
                ),
                format!("{}/{}/{}", s.jobs_running, s.jobs_failed, s.jobs_completed),
                format!("{:.0}", s.tasks_per_sec_milli as f64 / 1000.0),
                s.bytes_in.to_string(),
                s.bytes_out.to_string(),
                duration::render(Duration::from_millis(s.uptime_ms)),
            ]],
        )
    };
    quiet_broken_pipe(written)?;
    Ok(ExitCode::SUCCESS)
}
