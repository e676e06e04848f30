//! `redmap run PATH`: build the job and run it, here in this process.

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use super::fetch::{self, FetchError, Format};
use super::follow::{finish_on, job_stats, printable, wait, LiveLine, Waited, POLL};
use super::jobs::{cancel_job, CancelOutcome};
use super::output::json_line;
use super::{
    duration, manager_from_env, quiet_broken_pipe, remote_err, CliError, ErrorKind, Manager,
    NetArgs,
};
use crate::local::{self, Options, Report};
use crate::net::{Client, ClientError};
use crate::plugin::loader::JobKind;
use crate::plugin::{self, Instance, Plugin, PluginHash, Toolchain};
use crate::proto::msg::{Install, JobArgs, OutputForm, RunJob, RunOptions};
use crate::proto::{ErrorCode, Message};
use crate::report::JobJson;

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("destination").args(["output", "output_dir"])))]
pub struct RunArgs {
    /// The job: a single .rs file, a directory holding a cargo crate of type
    /// cdylib, or an already built .so/.dylib.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,

    /// Run the job on this manager instead of in this process (default:
    /// $REDMAP_MANAGER if set; without either, the job runs here).
    #[arg(short, long, value_name = "ADDR")]
    pub manager: Option<String>,

    /// A name for the job in reports (default: the job's file name here,
    /// its id on a manager).
    #[arg(short, long)]
    pub name: Option<String>,

    /// On a manager: return once the job is submitted, without waiting,
    /// and print the job's id (with --json, the job as JSON).
    #[arg(long)]
    pub detach: bool,

    /// Print the summary as JSON (for scripts and benchmarks).
    #[arg(long)]
    pub json: bool,

    /// On a manager: on Ctrl-C, cancel the job without asking (for
    /// scripts). Without it, Ctrl-C asks on a terminal, and otherwise
    /// leaves the job running.
    #[arg(long)]
    pub cancel_on_interrupt: bool,

    #[command(flatten)]
    pub net: NetArgs,

    /// Map threads (default: the number of cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// The rustc used for single-file jobs (default: `rustc` from PATH).
    #[arg(long, value_name = "PATH")]
    pub rustc: Option<PathBuf>,

    /// The cargo used for crate jobs (default: `cargo` from PATH).
    #[arg(long, value_name = "PATH")]
    pub cargo: Option<PathBuf>,

    /// Write the job's output to this file (`-`: standard output) instead
    /// of handing it to a keyed job's `done`; for a byte-level job, its
    /// final accumulator, besides its `done` (which runs on the manager).
    #[arg(short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,

    /// The form --output writes: text (one `key<TAB>value` line per key)
    /// or binary (the job's own encoding).
    #[arg(long, value_enum, default_value_t = Format::Text, requires = "destination")]
    pub format: Format,

    /// On a cluster: the keyed job's reduce partitions, each reduced on
    /// one worker (default: one per worker when the job starts; at most
    /// 4096).
    #[arg(long, value_name = "R", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub reducers: Option<u32>,

    /// A keyed job: each reducer writes its partition to DIR/part-NNNNN
    /// itself (DIR on storage every worker shares, for an output bigger
    /// than this machine's disk), in --format; `redmap run` lists the
    /// parts. A relative DIR is made absolute here. Embedded: one part.
    #[arg(long, value_name = "DIR", conflicts_with = "output")]
    pub output_dir: Option<PathBuf>,

    /// On a cluster: cut a keyed job's keys into partitions by ranges
    /// sampled from the map outputs (TeraSort's method) instead of by
    /// hash, so the partitions in order, and `--output`, are sorted by
    /// key. (Embedded, the output is one sorted partition anyway.)
    #[arg(long)]
    pub total_order: bool,

    /// Embedded: bytes of a keyed job's pairs the reduce holds in memory
    /// before it spills to the system's temporary directory (e.g. 64M).
    #[arg(long, value_name = "SIZE", default_value = "256M", value_parser = super::size::parse)]
    pub reduce_memory: usize,

    /// The job's arguments, after `--`: given as they are to the job's
    /// constructor in every process that builds the job (here, the
    /// manager, every worker).
    #[arg(last = true, value_name = "JOB_ARGS")]
    pub job_args: Vec<std::ffi::OsString>,
}

impl RunArgs {
    /// Whether the summary goes to standard error: standard output is the
    /// job's when it is a keyed job (what its `done` prints) or the output
    /// goes there (`--output -`).
    fn summary_to_stderr(&self, kind: JobKind) -> bool {
        kind == JobKind::Keyed || self.output.as_deref() == Some(std::path::Path::new("-"))
    }

    /// The job's arguments, checked: UTF-8, and within the limits.
    fn job_args(&self) -> Result<JobArgs, CliError> {
        let words = self
            .job_args
            .iter()
            .enumerate()
            .map(|(i, a)| {
                a.to_str().map(str::to_owned).ok_or_else(|| {
                    CliError::new(format!(
                        "the job's argument {} ({}) is not UTF-8",
                        i + 1,
                        a.to_string_lossy()
                    ))
                })
            })
            .collect::<Result<Vec<String>, CliError>>()?;
        JobArgs::new(&words).map_err(|e| CliError::new(e.to_string()))
    }
}

/// Builds the job from its arguments here, so a constructor that refuses
/// them is shown before anything runs (here or on a manager).
fn build_job(library: &std::path::Path, args: &JobArgs) -> Result<Arc<Instance>, CliError> {
    let plugin = Plugin::open(library).map_err(|e| CliError::from_error(ErrorKind::Job, e))?;
    plugin.instance(args).map_err(|e| CliError {
        kind: ErrorKind::Job,
        ..CliError::new(format!("the job refused its arguments: {}", e.message)).with_hint(
            "the words after `--` are the job's; redmap's own flags (-m, -o, …) go before `--`",
        )
    })
}

/// The embedded run's summary with the keys of a cluster job's JSON (and
/// `elapsed_us` and `threads`, which only it has).
#[derive(Serialize)]
struct ReportJson<'a> {
    name: &'a str,
    status: &'static str,
    loaded: u64,
    processed: u64,
    failed: u64,
    elapsed_ms: u64,
    elapsed_us: u64,
    #[serde(serialize_with = "crate::report::number")]
    tasks_per_sec: f64,
    load_errors: u64,
    reduce_errors: u64,
    threads: usize,
    result_len: usize,
    result: Option<&'a str>,
    errors: Vec<String>,
    spills: u64,
    spilled_bytes: u64,
}

impl<'a> ReportJson<'a> {
    fn new(name: &'a str, r: &'a Report) -> ReportJson<'a> {
        ReportJson {
            name,
            status: r.status().name(),
            loaded: r.tasks,
            processed: r.processed,
            failed: r.failed,
            elapsed_ms: u64::try_from(r.elapsed.as_millis()).unwrap_or(u64::MAX),
            elapsed_us: u64::try_from(r.elapsed.as_micros()).unwrap_or(u64::MAX),
            tasks_per_sec: r.tasks_per_sec(),
            load_errors: r.load_errors,
            reduce_errors: r.reduce_errors,
            threads: r.threads,
            result_len: r.result.len(),
            result: printable(&r.result),
            errors: r.errors.kept.iter().map(ToString::to_string).collect(),
            spills: r.spills.spills,
            spilled_bytes: r.spills.bytes,
        }
    }
}

fn summary<W: Write>(out: &mut W, name: &str, r: &Report) -> io::Result<()> {
    writeln!(
        out,
        "{name}: {} — {} tasks, {} processed, {} failed in {} ({:.0} tasks/s, {} threads)",
        r.status().name(),
        r.tasks,
        r.processed,
        r.failed,
        duration::render(r.elapsed),
        r.tasks_per_sec(),
        r.threads
    )?;
    if r.load_errors > 0 {
        writeln!(out, "load errors: {}", r.load_errors)?;
    }
    if r.reduce_errors > 0 {
        writeln!(out, "reduce errors: {}", r.reduce_errors)?;
    }
    if r.spills.spills > 0 {
        writeln!(
            out,
            "reduce spills: {} ({} bytes written past --reduce-memory)",
            r.spills.spills, r.spills.bytes
        )?;
    }
    match printable(&r.result) {
        Some(text) if !text.is_empty() => writeln!(out, "result: {text}")?,
        Some(_) => {}
        None => writeln!(out, "result: {} bytes", r.result.len())?,
    }
    if r.errors.total > 0 {
        writeln!(out, "errors ({} in all):", r.errors.total)?;
        // The first ones, then what was dropped between, then the latest.
        let first = r.errors.first_kept();
        for (i, e) in r.errors.kept.iter().enumerate() {
            if i == first {
                writeln!(out, "  … {} more …", r.errors.dropped())?;
            }
            writeln!(out, "  {e}")?;
        }
    }
    Ok(())
}

pub fn run(args: RunArgs) -> Result<ExitCode, CliError> {
    // The manager, if any: -m, else $REDMAP_MANAGER; no default, since
    // without a manager the job runs here.
    let manager = args.manager.clone().or_else(manager_from_env);
    if args.detach && args.output.is_some() {
        return Err(
            CliError::new("--output waits for the job's end, which --detach does not")
                .with_hint("fetch a detached job's output with `redmap jobs output ID -o PATH`"),
        );
    }
    if manager.is_none() && (args.detach || args.cancel_on_interrupt) {
        return Err(
            CliError::new("--detach and --cancel-on-interrupt are for a job on a manager")
                .with_hint("name the manager with -m/--manager ADDR or REDMAP_MANAGER"),
        );
    }
    let job_args = args.job_args()?;
    let tools = Toolchain::new(args.rustc.clone(), args.cargo.clone());
    let built =
        plugin::build(&args.path, &tools).map_err(|e| CliError::from_error(ErrorKind::Job, e))?;
    let job = build_job(&built.library, &job_args)?;
    if args.output_dir.is_some() && job.kind() != JobKind::Keyed {
        return Err(
            CliError::new("--output-dir is for keyed jobs, whose output is in partitions")
                .with_hint("write a byte-level job's result with --output PATH"),
        );
    }
    if let Some(addr) = manager {
        return run_remote(&args, &job, &built.library, Manager { addr });
    }
    let name = args.name.clone().unwrap_or_else(|| {
        args.path
            .file_stem()
            .map_or_else(|| "job".into(), |s| s.to_string_lossy().into_owned())
    });
    let mut opts = Options::default();
    if let Some(threads) = args.threads {
        if threads == 0 {
            return Err(CliError::new("--threads must be at least 1"));
        }
        opts.threads = threads;
    }
    opts.reduce_memory = args.reduce_memory;
    // A keyed job's output goes to --output instead of its `done`.
    let destination = args.output.clone().or_else(|| {
        // Embedded, the output is one partition: its part file.
        args.output_dir.as_ref().map(|dir| dir.join("part-00000"))
    });
    if let Some(dir) = &args.output_dir {
        output_dir(dir)?;
        std::fs::create_dir_all(dir).map_err(|e| CliError {
            kind: ErrorKind::Io,
            ..CliError::new(format!("cannot make {}: {e}", dir.display()))
        })?;
    }
    opts.call_done = !(destination.is_some() && job.kind() == JobKind::Keyed);
    let report = run_here(&job, opts, &name);
    match &destination {
        // A keyed job's reduce that failed left no output to write.
        Some(_) if job.kind() == JobKind::Keyed && report.done_failed => {
            eprintln!("redmap: no output: the reduce failed (see the errors)");
        }
        Some(path) => {
            write_output(&job, &report.result, args.format, path)?;
            if args.output_dir.is_some() {
                // As a cluster run lists its parts.
                eprintln!("wrote 1 part file: {}", path.display());
            }
        }
        None => {}
    }
    let mut out: Box<dyn Write> = match args.summary_to_stderr(job.kind()) {
        true => Box::new(io::stderr().lock()),
        false => Box::new(io::stdout().lock()),
    };
    let written = if args.json {
        json_line(&mut out, &ReportJson::new(&name, &report))
    } else {
        summary(&mut out, &name, &report)
    };
    quiet_broken_pipe(written)?;
    Ok(if report.clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Runs the job in this process, with the progress line of a cluster job
/// on a terminal (a long job would otherwise print nothing until its end).
fn run_here(plugin: &Arc<Instance>, opts: Options, name: &str) -> Report {
    let counts = std::sync::Arc::new(local::Counts::default());
    let mut line = LiveLine::terminal_only();
    if !line.is_tty() {
        return local::run_counted(plugin, opts, &counts);
    }
    let over = std::sync::Arc::new(AtomicBool::new(false));
    let drawer = {
        let (plugin, counts, over) = (
            std::sync::Arc::clone(plugin),
            std::sync::Arc::clone(&counts),
            std::sync::Arc::clone(&over),
        );
        let name = name.to_owned();
        std::thread::spawn(move || {
            let started = Instant::now();
            // The estimate, as a manager asks for it.
            let estimate = plugin.count();
            // Short jobs end before the first frame and show no line at all.
            let mut next = started + POLL;
            while !over.load(Ordering::SeqCst) {
                if Instant::now() >= next {
                    line.show(&counts.summary(&name, estimate, started.elapsed()));
                    next += POLL;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            line.clear();
        })
    };
    let report = local::run_counted(plugin, opts, &counts);
    over.store(true, Ordering::SeqCst);
    let _ = drawer.join();
    report
}

/// Sends the library to the manager in chunks (nothing if it has it).
fn install(
    client: &mut Client,
    library: &[u8],
    chunk: usize,
    addr: &str,
) -> Result<PluginHash, CliError> {
    let hash = PluginHash::of(library);
    let mut offset = 0usize;
    loop {
        let end = (offset + chunk).min(library.len());
        let msg = Message::Install(Install {
            hash: hash.0,
            total: library.len() as u64,
            offset: offset as u64,
            chunk: library[offset..end].to_vec(),
        });
        match client.request(&msg) {
            Ok(Message::InstallReply(r)) if r.complete => return Ok(hash),
            Ok(Message::InstallReply(r)) if (r.next_offset as usize) < library.len() => {
                offset = r.next_offset as usize;
            }
            Ok(other) => {
                return Err(CliError::new(format!(
                    "unexpected reply {} while sending the job",
                    other.opcode()
                )))
            }
            Err(e) => return Err(remote_err(addr, e)),
        }
    }
}

/// The INSTALL chunk size for a receiver whose INFO gave `theirs` as its
/// max size: within both limits, less 1 KiB for the fields around the
/// chunk, and at most 1 MiB (protocol.md's recommendation).
fn chunk_size(ours: u32, theirs: u32) -> usize {
    let theirs = crate::proto::effective_max_size(theirs);
    crate::proto::frame_budget(ours.min(theirs), 1024 * 1024)
}

fn run_remote(
    args: &RunArgs,
    job: &Arc<Instance>,
    library: &std::path::Path,
    target: Manager,
) -> Result<ExitCode, CliError> {
    let bytes = std::fs::read(library).map_err(|e| CliError {
        message: format!("cannot read {}: {e}", library.display()),
        ..CliError::from(e)
    })?;
    let mut client = target.connect(&args.net)?;
    // Chunks must fit the manager's --max-size, which may be below ours:
    // its INFO says (0 from a server before that field: the default).
    let info = client.info().map_err(|e| remote_err(&target.addr, e))?;
    let chunk = chunk_size(args.net.max_size(), info.max_size);
    let run = RunJob {
        hash: PluginHash::of(&bytes).0,
        name: args.name.clone().unwrap_or_default(),
        args: job.args().clone(),
        options: RunOptions {
            reducers: args.reducers.unwrap_or(0),
            total_order: args.total_order,
            output_dir: match &args.output_dir {
                Some(dir) => output_dir(dir)?,
                None => String::new(),
            },
            output_form: match (&args.output_dir, args.format) {
                (Some(_), Format::Text) => 1,
                _ => 0,
            },
        },
    };
    // The manager removes a library once no job needs it: one that a job
    // ending just now took away between our install and our RUN_JOB is
    // installed again.
    let mut attempts = 0;
    let id = loop {
        attempts += 1;
        install(&mut client, &bytes, chunk, &target.addr)?;
        match client.request(&Message::RunJob(run.clone())) {
            Ok(Message::JobAccepted(id)) => break id,
            Err(ClientError::Remote(e)) if e.code == ErrorCode::PLUGIN_MISSING && attempts < 3 => {
                continue
            }
            Ok(other) => {
                return Err(CliError::new(format!(
                    "unexpected reply {} to RUN_JOB",
                    other.opcode()
                )))
            }
            Err(e) => return Err(remote_err(&target.addr, e)),
        }
    };
    if args.detach {
        if args.json {
            // The job as `redmap jobs stats --json` shows it: id, name, …
            let job = job_stats(&mut client, id, &target.addr)?;
            quiet_broken_pipe(json_line(&mut io::stdout().lock(), &JobJson::new(&job)))?;
        } else {
            println!("{id}");
            eprintln!(
                "job {id} submitted to {}; follow it with `redmap jobs watch -m {} {id}`",
                target.addr, target.addr
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let interrupted = crate::signals::watch(|| {})
        .map_err(|e| CliError::new(format!("cannot watch for Ctrl-C: {e}")))?;
    match wait(&mut client, id, &target.addr, &interrupted)? {
        Waited::Over(summary) => conclude(args, &mut client, &target.addr, job, &summary),
        Waited::Interrupted => after_interrupt(args, &mut client, job, id, &target.addr),
    }
}

/// An ended cluster job: its output to the user, then its summary (on
/// standard error when the output went to standard output) and exit status.
fn conclude(
    args: &RunArgs,
    client: &mut Client,
    addr: &str,
    job: &Instance,
    summary: &crate::proto::msg::JobSummary,
) -> Result<ExitCode, CliError> {
    let delivered = deliver(args, client, addr, job, summary)?;
    let code = finish_on(args.json, summary, args.summary_to_stderr(job.kind()))?;
    Ok(if delivered { code } else { ExitCode::from(1) })
}

/// `--output-dir`'s directory as the workers get it: absolute (they read
/// it, relative to nothing of theirs), UTF-8, and new or empty (Hadoop
/// refuses an existing output directory: parts of an earlier run would
/// mix in).
fn output_dir(dir: &std::path::Path) -> Result<String, CliError> {
    let usage = |why: String| CliError {
        kind: ErrorKind::Usage,
        ..CliError::new(why)
    };
    let abs = std::path::absolute(dir)
        .map_err(|e| usage(format!("--output-dir {}: {e}", dir.display())))?;
    let Some(text) = abs.to_str() else {
        return Err(usage(format!("--output-dir {}: not UTF-8", dir.display())));
    };
    let empty = match std::fs::read_dir(&abs) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) => e.kind() == io::ErrorKind::NotFound,
    };
    if !empty {
        return Err(CliError::new(format!(
            "--output-dir {}: not empty (its parts would mix with an earlier run's)",
            dir.display()
        ))
        .with_hint("give a new directory, or empty this one"));
    }
    Ok(text.to_owned())
}

/// Writes an embedded run's output to `path` (`-`: standard output): a
/// keyed job's run in `format`, a byte-level job's result as it is.
fn write_output(
    job: &Instance,
    result: &[u8],
    format: Format,
    path: &std::path::Path,
) -> Result<(), CliError> {
    let text;
    let bytes = match (job.kind(), format) {
        (JobKind::Keyed, Format::Text) => {
            text = crate::pipeline::cluster::text_of(job, result)
                .map_err(|e| CliError::new(format!("the job's output: {e}")))?;
            &text[..]
        }
        _ => result,
    };
    fetch::write_to(path, bytes).map_err(|e| CliError {
        kind: ErrorKind::Io,
        ..CliError::new(format!("cannot write {}: {e}", path.display()))
    })
}

/// Hands an ended cluster job's output to the user: to `--output`, or to a
/// keyed job's `done`, here; a byte-level job's `done` ran on the manager.
/// False when the output could not be had or `done` failed (said on
/// standard error).
fn deliver(
    args: &RunArgs,
    client: &mut Client,
    addr: &str,
    job: &Instance,
    summary: &crate::proto::msg::JobSummary,
) -> Result<bool, CliError> {
    use crate::proto::msg::JobStatus;
    let keyed = job.kind() == JobKind::Keyed;
    let ended_early = matches!(summary.status, JobStatus::Failed | JobStatus::Cancelled);
    if let Some(dir) = &args.output_dir {
        return match fetch::parts(client, addr, summary.id) {
            Ok(parts) => {
                eprintln!(
                    "wrote {} part files to {} (on the workers' storage):",
                    parts.len(),
                    dir.display()
                );
                for p in &parts {
                    let bytes = match args.format {
                        Format::Binary => p.binary_len,
                        Format::Text => p.text_len,
                    };
                    eprintln!("  {} ({bytes} bytes, by worker {})", p.path, p.addr);
                }
                Ok(true)
            }
            Err(FetchError::Unavailable(why)) => {
                eprintln!("redmap: no output: {why}");
                Ok(false)
            }
            Err(FetchError::Cli(e)) => Err(e),
        };
    }
    if let Some(path) = &args.output {
        // The binary form, made text here by the job this run built: the
        // manager's text form is for clients without the job.
        let text_of = (keyed && args.format == Format::Text).then_some(job);
        return match fetch::fetch_to(
            client,
            &args.net,
            addr,
            summary.id,
            OutputForm::Binary,
            path,
            text_of,
        ) {
            Ok(_) => Ok(true),
            Err(FetchError::Unavailable(why)) => {
                eprintln!("redmap: no output: {why}");
                Ok(false)
            }
            Err(FetchError::Cli(e)) => Err(e),
        };
    }
    if !keyed || ended_early {
        return Ok(true);
    }
    // One run per partition, each sorted by key: merged into one, so
    // `done` gets the output sorted by key, as on one machine.
    let mut parts: Vec<Vec<u8>> = Vec::new();
    let collect = |p: usize, b: &[u8]| {
        if parts.len() <= p {
            parts.resize_with(p + 1, Vec::new);
        }
        parts[p].extend_from_slice(b);
        Ok(())
    };
    match fetch::fetch(
        client,
        &args.net,
        addr,
        summary.id,
        OutputForm::Binary,
        collect,
    ) {
        Ok(_) => {}
        Err(FetchError::Unavailable(why)) => {
            eprintln!("redmap: no output for done: {why}");
            return Ok(false);
        }
        Err(FetchError::Cli(e)) => return Err(e),
    }
    let output = match parts.len() {
        0 | 1 => parts.pop().unwrap_or_default(),
        _ => {
            let runs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            let mut merged = Vec::with_capacity(runs.iter().map(|r| r.len()).sum());
            crate::shuffle::merge::merge_slices(&runs, |key, value| {
                crate::job::run::push_pair(&mut merged, key, value);
                Ok(())
            })
            .map_err(|e| CliError::new(format!("job {}'s output: {e}", summary.id)))?;
            merged
        }
    };
    match job.done(&output) {
        Ok(()) => Ok(true),
        Err(e) => {
            eprintln!("redmap: done: {}", e.message);
            Ok(false)
        }
    }
}

/// After Ctrl-C: cancel the job (at once with --cancel-on-interrupt, else
/// if the user says so on a terminal) or leave it running (exit 130). A job
/// that ended meanwhile (while the prompt was open, or before the cancel
/// reached the manager) is not an error: it gets its summary and its own
/// exit status, as if the run had not been interrupted.
fn after_interrupt(
    args: &RunArgs,
    client: &mut Client,
    job: &Instance,
    id: u64,
    addr: &str,
) -> Result<ExitCode, CliError> {
    let cancel = args.cancel_on_interrupt || ask_cancel(client, id, addr);
    if cancel {
        match cancel_job(client, id, addr)? {
            CancelOutcome::Cancelled => {
                eprintln!("job {id} cancelled");
                return Ok(ExitCode::from(130));
            }
            CancelOutcome::AlreadyOver(_) => {}
        }
    }
    let summary = job_stats(client, id, addr)?;
    if summary.status.is_over() {
        return conclude(args, client, addr, job, &summary);
    }
    eprintln!("job {id} left running; follow it with `redmap jobs watch -m {addr} {id}`");
    Ok(ExitCode::from(130))
}

/// On a terminal, asks whether to cancel the job; elsewhere, does not.
/// While the prompt is open the job goes on, so its progress line stays
/// alive on the line above the prompt, and says when the job has ended.
fn ask_cancel(client: &mut Client, id: u64, addr: &str) -> bool {
    if !io::stdin().is_terminal() {
        return false;
    }
    eprint!("\ninterrupted: cancel job {id} on the manager? [y/N] (N leaves it running) ");
    let (tx, answers) = mpsc::channel();
    // The read cannot be interrupted; this thread ends with the process.
    std::thread::spawn(move || {
        let mut answer = String::new();
        let yes =
            io::stdin().read_line(&mut answer).is_ok() && answer.trim().eq_ignore_ascii_case("y");
        let _ = tx.send(yes);
    });
    let mut line = LiveLine::new();
    let mut over = false;
    loop {
        match answers.recv_timeout(POLL) {
            Ok(yes) => return yes,
            Err(mpsc::RecvTimeoutError::Disconnected) => return false,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if over {
            continue;
        }
        // A failed look only freezes the line; the answer still decides.
        if let Ok(job) = job_stats(client, id, addr) {
            over = job.status.is_over();
            let note = if over { "  (ended: press Enter)" } else { "" };
            line.show_above(&job, note);
        }
    }
}
