//! `redmap jobs list|stats|cancel|watch`.

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::output::{json_line, table, write_errors};
use super::{call, duration, quiet_broken_pipe, remote_err, CliError, ManagerArg, NetArgs};
use crate::net::ClientError;
use crate::proto::msg::manager::MAX_LIST_LIMIT;
use crate::proto::msg::{JobSummary, JobsQuery};
use crate::proto::{ErrorCode, Message};
use crate::report::{progress, throughput, JobJson};

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List a manager's jobs: id, name, status, progress.
    List(ListArgs),
    /// Show one job's counters and its errors (its first and latest ones).
    Stats(StatsArgs),
    /// Cancel a job: stop its tasks, drop its work in flight, uninstall it from the workers.
    Cancel(CancelArgs),
    /// Follow a job with the progress bar of `redmap run`, then print its summary.
    Watch(CancelArgs),
    /// Fetch an ended job's output, kept for 10 minutes after the job ends:
    /// a keyed job's partitions, in partition order, from the workers that
    /// reduced them; a byte-level job's result from the manager.
    Output(OutputArgs),
}

/// `[ADDR] ID [-o PATH] [--format text|binary]`.
#[derive(Debug, Args)]
#[command(allow_missing_positional = true)]
pub struct OutputArgs {
    #[command(flatten)]
    pub job: CancelArgs,

    /// Write the output to this file (default: standard output).
    #[arg(short, long, value_name = "PATH", default_value = "-")]
    pub output: std::path::PathBuf,

    /// text (one `key<TAB>value` line per key) or binary (the job's own
    /// encoding).
    #[arg(long, value_enum, default_value_t = super::fetch::Format::Text)]
    pub format: super::fetch::Format,
}

/// `[ADDR] ID`: the manager may come first, as in `jobs list ADDR`.
#[derive(Debug, Args)]
#[command(allow_missing_positional = true)]
pub struct CancelArgs {
    #[command(flatten)]
    pub manager: ManagerArg,

    /// The manager's address (or -m/--manager, or $REDMAP_MANAGER).
    #[arg(value_name = "ADDR")]
    pub addr: Option<String>,

    /// The job's id (see `redmap jobs list`).
    #[arg(value_name = "ID")]
    pub id: u64,

    #[command(flatten)]
    pub net: NetArgs,
}

#[derive(Debug, Args)]
pub struct ListArgs {
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

    /// List at most this many jobs, newest first.
    #[arg(long, default_value_t = 100, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: u32,

    /// List every job the manager keeps (page by page).
    #[arg(long, conflicts_with = "limit")]
    pub all: bool,
}

/// `[ADDR] ID`, as for `jobs cancel`.
#[derive(Debug, Args)]
#[command(allow_missing_positional = true)]
pub struct StatsArgs {
    #[command(flatten)]
    pub manager: ManagerArg,

    /// The manager's address (or -m/--manager, or $REDMAP_MANAGER).
    #[arg(value_name = "ADDR")]
    pub addr: Option<String>,

    /// The job's id (see `redmap jobs list`).
    #[arg(value_name = "ID")]
    pub id: u64,

    #[command(flatten)]
    pub net: NetArgs,

    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: JobsCommand) -> Result<ExitCode, CliError> {
    match cmd {
        JobsCommand::List(args) => list(args),
        JobsCommand::Stats(args) => stats(args),
        JobsCommand::Cancel(args) => cancel(args),
        JobsCommand::Watch(args) => watch(args),
        JobsCommand::Output(args) => output(args),
    }
}

/// Partitions `jobs stats` lists one per line; more are counted.
const MAX_PARTITIONS_SHOWN: usize = 32;

/// Fetches an ended job's output into a file or standard output.
fn output(args: OutputArgs) -> Result<ExitCode, CliError> {
    let manager = args.job.manager.resolve(args.job.addr.as_deref())?;
    let mut client = manager.connect(&args.job.net)?;
    let total = super::fetch::fetch_to(
        &mut client,
        &args.job.net,
        &manager.addr,
        args.job.id,
        args.format.form(),
        &args.output,
        None,
    )?;
    if args.output != std::path::Path::new("-") {
        eprintln!(
            "wrote job {}'s output ({total} bytes) to {}",
            args.job.id,
            args.output.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Follows job `args.id` until it is over; Ctrl-C stops watching only.
fn watch(args: CancelArgs) -> Result<ExitCode, CliError> {
    use super::follow::{finish, wait, Waited};
    let manager = args.manager.resolve(args.addr.as_deref())?;
    let mut client = manager.connect(&args.net)?;
    let interrupted = crate::signals::watch(|| {})
        .map_err(|e| CliError::new(format!("cannot watch for Ctrl-C: {e}")))?;
    match wait(&mut client, args.id, &manager.addr, &interrupted)? {
        Waited::Interrupted => Ok(ExitCode::from(130)),
        Waited::Over(job) => finish(false, &job),
    }
}

/// What came of asking the manager to cancel a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    Cancelled,
    /// The job had ended already (the manager's message): the cancel lost
    /// a race with the job's end, which is not a failure of the job.
    AlreadyOver(String),
}

/// Asks the manager to cancel job `id`.
pub fn cancel_job(
    client: &mut crate::net::Client,
    id: u64,
    addr: &str,
) -> Result<CancelOutcome, CliError> {
    cancel_outcome(client.request(&Message::CancelJob(id))).map_err(|e| remote_err(addr, e))
}

/// The outcome of the manager's reply to CANCEL_JOB: CONFLICT means the
/// job is over already.
pub fn cancel_outcome(reply: Result<Message, ClientError>) -> Result<CancelOutcome, ClientError> {
    match reply {
        Ok(Message::Cancelled) => Ok(CancelOutcome::Cancelled),
        Ok(other) => Err(ClientError::Unexpected {
            expected: "CANCELLED",
            got: other.opcode().to_string(),
        }),
        Err(ClientError::Remote(r)) if r.code == ErrorCode::CONFLICT => {
            Ok(CancelOutcome::AlreadyOver(r.message))
        }
        Err(e) => Err(e),
    }
}

fn cancel(args: CancelArgs) -> Result<ExitCode, CliError> {
    let manager = args.manager.resolve(args.addr.as_deref())?;
    let mut client = manager.connect(&args.net)?;
    match cancel_job(&mut client, args.id, &manager.addr)? {
        CancelOutcome::Cancelled => println!("cancelled job {}", args.id),
        // Nothing was cancelled: say so, as before.
        CancelOutcome::AlreadyOver(message) => return Err(CliError::new(message)),
    }
    Ok(ExitCode::SUCCESS)
}

fn list(args: ListArgs) -> Result<ExitCode, CliError> {
    let manager = args.manager.resolve(args.addr.as_deref())?;
    let mut client = manager.connect(&args.net)?;
    // Newest first, a page at a time: a reply never approaches --max-size
    // however many jobs the manager keeps.
    let mut jobs = Vec::new();
    let mut query = JobsQuery {
        limit: if args.all { MAX_LIST_LIMIT } else { args.limit },
        before: 0,
    };
    let more = loop {
        let page = call(
            &mut client,
            &manager.addr,
            &Message::JobsListRequest(query),
            |m| match m {
                Message::JobsList(page) => Some(page),
                _ => None,
            },
        )?;
        let last = page.jobs.last().map(|j| j.id);
        jobs.extend(page.jobs);
        let wanted = args.all || (jobs.len() as u64) < u64::from(args.limit);
        match last {
            Some(id) if page.more > 0 && wanted => query.before = id,
            _ => break page.more,
        }
        if !args.all {
            query.limit = args.limit - jobs.len() as u32;
        }
    };
    let mut out = io::stdout().lock();
    let written = if args.json {
        json_line(&mut out, &jobs.iter().map(JobJson::new).collect::<Vec<_>>())
    } else {
        let rows: Vec<Vec<String>> = jobs
            .iter()
            .map(|j| {
                vec![
                    j.id.to_string(),
                    j.name.clone(),
                    j.status.name().to_owned(),
                    progress(j).to_string(),
                ]
            })
            .collect();
        table(&mut out, &["ID", "NAME", "STATUS", "PROGRESS"], &rows)
    };
    if more > 0 && !args.json {
        eprintln!("({more} older jobs not listed: --limit N or --all)");
    }
    quiet_broken_pipe(written)?;
    Ok(ExitCode::SUCCESS)
}

/// The `key: value` rendering of one job, used by `jobs stats`.
pub fn render_stats<W: Write>(out: &mut W, j: &JobSummary) -> io::Result<()> {
    let estimate = j
        .estimate
        .map_or_else(|| "unknown".to_owned(), |n| n.to_string());
    writeln!(out, "id: {}", j.id)?;
    writeln!(out, "name: {}", j.name)?;
    writeln!(out, "status: {}", j.status.name())?;
    writeln!(out, "total estimate: {estimate}")?;
    writeln!(out, "loaded: {}", j.loaded)?;
    writeln!(out, "processed: {}", j.processed)?;
    writeln!(out, "failed: {}", j.failed)?;
    writeln!(out, "retried: {}", j.retried)?;
    writeln!(out, "running: {}", j.running)?;
    writeln!(out, "progress: {}", progress(j))?;
    writeln!(out, "load errors: {}", j.load_errors)?;
    writeln!(out, "reduce errors: {}", j.reduce_errors)?;
    writeln!(out, "backups: {} sent, {} won", j.backups, j.backups_won)?;
    writeln!(out, "duplicates dropped: {}", j.duplicates)?;
    if j.spills > 0 {
        writeln!(
            out,
            "reduce spills: {} ({} bytes written past --reduce-memory)",
            j.spills, j.spilled_bytes
        )?;
    }
    let sh = &j.shuffle;
    if sh.partitions > 0 {
        writeln!(
            out,
            "shuffle: {} partitions, {} done, {} bytes shuffled, {} map outputs made again",
            sh.partitions, sh.done, sh.shuffled, sh.remapped
        )?;
        for (p, part) in sh.parts.iter().enumerate().take(MAX_PARTITIONS_SHOWN) {
            let state = part.state_name();
            let on = if part.worker.is_empty() {
                String::new()
            } else {
                format!(" on {}", part.worker)
            };
            let failed = if part.failures > 0 {
                format!(", {} failed reduces", part.failures)
            } else {
                String::new()
            };
            writeln!(
                out,
                "  partition {p}: {state}{on} ({} bytes fetched, {} bytes out{failed})",
                part.fetched, part.bytes
            )?;
        }
        if sh.parts.len() > MAX_PARTITIONS_SHOWN {
            writeln!(
                out,
                "  … {} more (all in --json)",
                sh.parts.len() - MAX_PARTITIONS_SHOWN
            )?;
        }
    }
    if j.waiting_for_workers {
        writeln!(out, "waiting for workers: no worker is active")?;
    }
    writeln!(
        out,
        "duration: {}",
        duration::render(Duration::from_millis(j.elapsed_ms))
    )?;
    writeln!(out, "throughput: {:.0} tasks/s", throughput(j))?;
    if let Some(eta) = progress(j).eta {
        writeln!(out, "eta: {}", duration::render(eta))?;
    }
    write_errors(out, &j.errors)
}

fn stats(args: StatsArgs) -> Result<ExitCode, CliError> {
    let manager = args.manager.resolve(args.addr.as_deref())?;
    let mut client = manager.connect(&args.net)?;
    let job = call(
        &mut client,
        &manager.addr,
        &Message::JobStatsRequest(args.id),
        |m| match m {
            Message::JobStats(v) => Some(v),
            _ => None,
        },
    )?;
    let mut out = io::stdout().lock();
    let written = if args.json {
        json_line(&mut out, &JobJson::new(&job))
    } else {
        render_stats(&mut out, &job)
    };
    quiet_broken_pipe(written)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::msg::ErrorReply;

    #[test]
    fn a_cancel_that_lost_the_race_with_the_end_is_no_error() {
        assert_eq!(
            cancel_outcome(Ok(Message::Cancelled)).unwrap(),
            CancelOutcome::Cancelled
        );
        let conflict = ClientError::Remote(ErrorReply {
            code: ErrorCode::CONFLICT,
            message: "job 5 is already finished".into(),
        });
        assert_eq!(
            cancel_outcome(Err(conflict)).unwrap(),
            CancelOutcome::AlreadyOver("job 5 is already finished".into())
        );
        // Anything else is still an error.
        let missing = ClientError::Remote(ErrorReply {
            code: ErrorCode::NOT_FOUND,
            message: "no job with id 5".into(),
        });
        assert!(cancel_outcome(Err(missing)).is_err());
        assert!(cancel_outcome(Ok(Message::Pong)).is_err());
    }
}
