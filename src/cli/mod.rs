//! The `redmap` command line: argument definitions, dispatch, and the one
//! place where errors become exit codes.
//!
//! Exit codes: 0 success; 1 the command ran but something it checked failed
//! (an unreachable worker); 2 an error (bad arguments, cannot bind, …).
//!
//! - [`duration`]: human durations (`500ms`, `2m`) for the timeout flags;
//! - [`output`]: aligned tables and `--json`;
//! - [`follow`]: following a job: polling, the progress line, the summary;
//! - [`run`](mod@run): `redmap run PATH`, embedded or on a manager;
//! - [`manager`]: `redmap manager start|attach|detach|stats`;
//! - [`jobs`]: `redmap jobs list|stats|cancel|watch`;
//! - [`worker`]: `redmap worker start|status|info`.

pub mod cluster;
pub mod duration;
pub mod fetch;
pub mod follow;
pub mod jobs;
pub mod manager;
pub mod output;
pub mod run;
pub mod size;
pub mod worker;

use std::fmt;
use std::io;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use std::net::SocketAddr;
use std::sync::Arc;

use crate::net::auth::Secret;
use crate::net::{Client, ClientError, Config, Timeouts};
use crate::proto::effective_max_size;
use crate::proto::Message;

/// Distributed map-reduce jobs for Rust.
#[derive(Debug, Parser)]
#[command(name = "redmap", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Show logs: -v info, -vv debug, -vvv trace (RUST_LOG, when set,
    /// decides instead). Without it, commands print only their output and
    /// warnings; servers also log at info.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

impl Cli {
    /// The log filter when `RUST_LOG` is not set: `warn` for the commands
    /// a person runs (they print what they are for, not how), `info` for
    /// the servers (their log is what an operator reads), more with `-v`.
    pub fn log_filter(&self) -> &'static str {
        let server = matches!(
            self.command,
            Command::Manager(manager::ManagerCommand::Start(_))
                | Command::Worker(worker::WorkerCommand::Start(_))
                | Command::Executor(_)
        );
        match (self.verbose, server) {
            (0, false) => "warn",
            (0, true) | (1, _) => "info",
            (2, _) => "debug",
            _ => "trace",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Compile a job (a .rs file, a cargo crate directory or a .so) and run it.
    Run(run::RunArgs),
    /// Start and inspect worker servers.
    #[command(subcommand)]
    Worker(worker::WorkerCommand),
    /// Start a manager, attach and detach workers, show its stats.
    #[command(subcommand)]
    Manager(manager::ManagerCommand),
    /// List a manager's jobs and show their stats.
    #[command(subcommand)]
    Jobs(jobs::JobsCommand),
    /// Start a manager and workers on this machine in one command.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// An executor process: started by a server to run a job library's
    /// code, never by hand (see the `exec` module).
    #[command(hide = true)]
    Executor(ExecutorArgs),
    /// Print a shell completion script: `redmap completions bash > /etc/bash_completion.d/redmap`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// What a server starts its executor with (see `exec::child::Start`).
#[derive(Debug, Args)]
pub struct ExecutorArgs {
    /// The job library.
    library: std::path::PathBuf,
    /// Its SHA-256, in hex, as the server checked it.
    #[arg(long)]
    hash: String,
    /// The lanes' inherited file descriptors, comma-separated.
    #[arg(long)]
    lanes: String,
    /// RLIMIT_DATA in bytes (0: none).
    #[arg(long, default_value_t = 0)]
    memory_limit: u64,
}

impl ExecutorArgs {
    fn run(self) -> ExitCode {
        let hash = crate::plugin::PluginHash::parse(&self.hash);
        let lanes: Result<Vec<i32>, _> = self.lanes.split(',').map(str::parse).collect();
        let (Some(hash), Ok(lanes)) = (hash, lanes) else {
            eprintln!("redmap executor: started by a server, not by hand");
            return ExitCode::from(2);
        };
        ExitCode::from(crate::exec::child::run(crate::exec::child::Start {
            library: self.library,
            hash,
            lanes,
            memory_limit: self.memory_limit,
        }))
    }
}

/// The environment variable naming the manager when no command line does.
pub const MANAGER_ENV: &str = "REDMAP_MANAGER";

/// The manager's address when neither the command line nor
/// `$REDMAP_MANAGER` names one.
pub const DEFAULT_MANAGER: &str = "127.0.0.1:9899";

/// The `-m/--manager` flag of every command that talks to a manager. Many
/// also take the address as their first positional (the original's form,
/// `redmap jobs list ADDR`); [`ManagerArg::resolve`] settles the two, then
/// `$REDMAP_MANAGER`, then the default.
#[derive(Debug, Clone, Args)]
pub struct ManagerArg {
    /// The manager's address (default: $REDMAP_MANAGER, else 127.0.0.1:9899).
    #[arg(short, long, value_name = "ADDR")]
    pub manager: Option<String>,
}

impl ManagerArg {
    /// The manager named by `positional`, else `-m`, else the environment,
    /// else the default. Naming two different managers on one command line
    /// is an error rather than a guess.
    pub fn resolve(&self, positional: Option<&str>) -> Result<Manager, CliError> {
        let addr = match (positional, self.manager.as_deref()) {
            (Some(p), Some(m)) if p != m => {
                return Err(
                    CliError::new(format!("two managers given: {p} and -m/--manager {m}"))
                        .with_hint("name the manager once, by position or with -m/--manager"),
                )
            }
            (Some(addr), _) | (None, Some(addr)) => addr.to_owned(),
            (None, None) => manager_from_env().unwrap_or_else(|| DEFAULT_MANAGER.to_owned()),
        };
        Ok(Manager { addr })
    }
}

/// `$REDMAP_MANAGER`, unless unset or empty.
pub fn manager_from_env() -> Option<String> {
    std::env::var(MANAGER_ENV)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// The manager a command talks to, once named.
#[derive(Debug, Clone)]
pub struct Manager {
    pub addr: String,
}

impl Manager {
    /// Connects (and authenticates, with a secret) to the manager.
    pub fn connect(&self, net: &NetArgs) -> Result<Client, CliError> {
        let secret = net.secret()?;
        Client::connect_with(
            &self.addr,
            net.timeouts(),
            net.max_size(),
            secret.as_deref(),
        )
        .map_err(|e| remote_err(&self.addr, e))
    }
}

/// A client error, worded for someone talking to a manager at `addr`.
pub fn remote_err(addr: &str, e: ClientError) -> CliError {
    match e {
        ClientError::Connect { .. } => CliError {
            message: format!("cannot reach the manager: {e}"),
            ..CliError::from_error(ErrorKind::Remote, e)
        }
        .with_hint(format!(
                "is `redmap manager start {addr}` running? (-m/--manager or REDMAP_MANAGER picks another)"
            )),
        ClientError::Remote(ref r) if r.code == crate::proto::ErrorCode::AUTH_FAILED => {
            let hint = client_hint(&e).unwrap_or_default();
            CliError::new(format!("{addr}: {}", r.message))
                .kind(ErrorKind::Remote)
                .with_hint(hint)
        }
        ClientError::Remote(r) => CliError::new(r.message).kind(ErrorKind::Remote),
        other => CliError {
            message: format!("{addr}: {other}"),
            ..CliError::from_error(ErrorKind::Remote, other)
        },
    }
}

/// The hint for a client error that has one whatever the server: a
/// refused secret (else `worker info` printed the refusal alone).
pub fn client_hint(e: &ClientError) -> Option<&'static str> {
    match e {
        ClientError::Remote(r) if r.code == crate::proto::ErrorCode::AUTH_FAILED => Some(
            "give every command and server the same secret (--secret-file PATH or REDMAP_SECRET)",
        ),
        _ => None,
    }
}

/// Timeouts and frame limit shared by every command that talks to a server.
#[derive(Debug, Clone, Args)]
pub struct NetArgs {
    /// How long to wait for a reply (or, on a server, for the rest of a
    /// partly received message), e.g. 500ms, 10s, 2m.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration::parse)]
    pub read_timeout: Duration,

    /// How long a write may make no progress before the connection is dropped.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration::parse)]
    pub write_timeout: Duration,

    /// Largest accepted message payload in bytes; 0 means the default, 200 MiB.
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    pub max_size: u32,

    /// File holding the cluster's shared secret (default: the REDMAP_SECRET
    /// environment variable). With a secret, every connection authenticates.
    #[arg(long, value_name = "PATH")]
    pub secret_file: Option<std::path::PathBuf>,
}

/// Flags of the commands that start a server.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Listen on a non-loopback address without a secret (anyone who can
    /// reach the port can run code on the cluster).
    #[arg(long)]
    pub insecure: bool,

    /// Most client connections at once; more are closed on arrival.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub max_clients: usize,

    /// Also serve HTTP on this address: /metrics (Prometheus) and
    /// /api/status, plus the live monitor page at / on a manager.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
}

impl ServeArgs {
    /// The `--http` address, under the same protected-mode rule as the
    /// binary port: not beyond this machine without a secret.
    pub fn http_addr(&self, net: &NetArgs) -> Result<Option<SocketAddr>, CliError> {
        let Some(typed) = &self.http else {
            return Ok(None);
        };
        let addr = crate::net::addr::listen_addr(typed)
            .map_err(|e| CliError::from_error(ErrorKind::Usage, e))?;
        if net.secret()?.is_none() && !addr.ip().is_loopback() && !self.insecure {
            return Err(CliError::new(format!(
                "refusing to serve HTTP on {typed} ({addr}, reachable from other machines) without a secret"
            ))
            .with_hint(format!(
                "set a secret (--secret-file PATH or REDMAP_SECRET; the page then asks for it as the password), \
                 or use --http 127.0.0.1:{}, or pass --insecure",
                addr.port()
            )));
        }
        Ok(Some(addr))
    }
}

impl NetArgs {
    pub fn timeouts(&self) -> Timeouts {
        Timeouts::new(self.read_timeout, self.write_timeout)
    }

    pub fn max_size(&self) -> u32 {
        effective_max_size(self.max_size)
    }

    /// The secret from --secret-file or REDMAP_SECRET, if any.
    pub fn secret(&self) -> Result<Option<Arc<Secret>>, CliError> {
        Secret::load(self.secret_file.as_deref())
            .map(|s| s.map(Arc::new))
            .map_err(CliError::new)
    }

    /// The server configuration for listening on `addr`, refusing (after
    /// Redis's protected mode) to expose a server without a secret.
    pub fn reactor_config(
        &self,
        addr: SocketAddr,
        serve: &ServeArgs,
        typed: &str,
    ) -> Result<Config, CliError> {
        let secret = self.secret()?;
        if secret.is_none() && !addr.ip().is_loopback() && !serve.insecure {
            let port = addr.port();
            return Err(CliError::new(format!(
                "refusing to listen on {typed} ({addr}, reachable from other machines) without a secret: \
                 anyone who can connect could run code on this cluster"
            ))
            .with_hint(format!(
                "set a secret on every machine (--secret-file PATH or REDMAP_SECRET), or listen on \
                 127.0.0.1:{port} for this machine only, or pass --insecure on a trusted network"
            )));
        }
        if serve.max_clients == 0 {
            return Err(CliError::new("--max-clients must be at least 1"));
        }
        let mut config = Config::new(self.read_timeout, self.write_timeout, self.max_size());
        config.secret = secret;
        config.max_clients = serve.max_clients;
        Ok(config)
    }
}

/// What kind of failure ended a command: it decides the exit status, in
/// [`ErrorKind::exit_code`] alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad arguments or configuration (a flag out of range, two managers).
    Usage,
    /// A server could not be reached or refused the request.
    Remote,
    /// The job did not compile or load.
    Job,
    /// The system refused (cannot bind, cannot read a file).
    Io,
    /// Standard output was closed (`redmap … | head`): not a failure.
    BrokenPipe,
}

impl ErrorKind {
    /// The exit status for this kind (README: 2 for an error; a closed
    /// pipe is a quiet success).
    pub fn exit_code(self) -> ExitCode {
        match self {
            ErrorKind::Usage | ErrorKind::Remote | ErrorKind::Job | ErrorKind::Io => {
                ExitCode::from(2)
            }
            ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        }
    }
}

/// An error that ends a command: its kind, its message, the error that
/// caused it (kept typed, for the chain printed at the end) and an
/// optional hint for the user.
#[derive(Debug)]
pub struct CliError {
    pub kind: ErrorKind,
    pub message: String,
    pub hint: Option<String>,
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl CliError {
    /// An error of kind [`ErrorKind::Usage`] with this message.
    pub fn new(message: impl Into<String>) -> CliError {
        CliError {
            kind: ErrorKind::Usage,
            message: message.into(),
            hint: None,
            source: None,
        }
    }

    /// An error of `kind` from a typed error: its text is the message, and
    /// the error itself is kept as the cause.
    pub fn from_error(
        kind: ErrorKind,
        e: impl std::error::Error + Send + Sync + 'static,
    ) -> CliError {
        CliError {
            kind,
            message: e.to_string(),
            hint: None,
            source: Some(Box::new(e)),
        }
    }

    /// The same error, of another kind.
    pub fn kind(mut self, kind: ErrorKind) -> CliError {
        self.kind = kind;
        self
    }

    /// The same error, with a hint for the user.
    pub fn with_hint(mut self, hint: impl Into<String>) -> CliError {
        self.hint = Some(hint.into());
        self
    }

    /// Prints the error, each cause its message does not already say, and
    /// the hint, on standard error; returns the exit status of its kind.
    /// The one place where a command's error becomes output and a status.
    pub fn report(&self) -> ExitCode {
        if self.kind == ErrorKind::BrokenPipe {
            return self.kind.exit_code();
        }
        eprintln!("redmap: error: {}", self.message);
        // The source's own text is the message (from_error); its causes
        // follow, unless a message already quotes them.
        let mut shown = self.message.clone();
        let mut cause = self.source.as_deref().and_then(|e| e.source());
        while let Some(e) = cause {
            let text = e.to_string();
            if !shown.contains(&text) {
                eprintln!("caused by: {text}");
                shown.push_str(&text);
            }
            cause = e.source();
        }
        if let Some(hint) = &self.hint {
            eprintln!("hint: {hint}");
        }
        self.kind.exit_code()
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<io::Error> for CliError {
    fn from(e: io::Error) -> CliError {
        let kind = if e.kind() == io::ErrorKind::BrokenPipe {
            ErrorKind::BrokenPipe
        } else {
            ErrorKind::Io
        };
        CliError::from_error(kind, e)
    }
}

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Worker(cmd) => worker::run(cmd),
        Command::Manager(cmd) => manager::run(cmd),
        Command::Jobs(cmd) => jobs::run(cmd),
        Command::Cluster(cmd) => cluster::run(cmd),
        Command::Executor(args) => return args.run(),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            use std::io::Write;
            // Into a buffer first: the generator panics on a closed pipe.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "redmap", &mut script);
            quiet_broken_pipe(io::stdout().lock().write_all(&script)).map(|()| ExitCode::SUCCESS)
        }
    };
    result.unwrap_or_else(|e| e.report())
}

/// The error for a server that could not start on `addr`.
pub fn serve_error(addr: SocketAddr, e: io::Error) -> CliError {
    let in_use = e.kind() == io::ErrorKind::AddrInUse;
    let err = CliError {
        message: format!("cannot serve on {addr}: {e}"),
        ..CliError::from_error(ErrorKind::Io, e)
    };
    if in_use {
        err.with_hint("another process listens on that port; pick another or stop it")
    } else {
        err
    }
}

/// Sends `msg` to the manager at `addr` and takes the reply apart with
/// `expect`, which returns `None` for a reply of the wrong kind.
pub fn call<T>(
    client: &mut Client,
    addr: &str,
    msg: &Message,
    expect: impl FnOnce(Message) -> Option<T>,
) -> Result<T, CliError> {
    match client.request(msg) {
        Ok(reply) => {
            let opcode = reply.opcode();
            expect(reply)
                .ok_or_else(|| CliError::new(format!("unexpected reply {opcode} from {addr}")))
        }
        Err(e) => Err(remote_err(addr, e)),
    }
}

/// Output errors: a closed pipe (`redmap … | head`) is not a failure.
pub fn quiet_broken_pipe(result: io::Result<()>) -> Result<(), CliError> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(CliError::from),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }
}
