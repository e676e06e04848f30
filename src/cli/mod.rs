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

pub mod duration;
pub mod follow;
pub mod jobs;
pub mod manager;
pub mod output;
pub mod run;
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
    /// Print a shell completion script: `redmap completions bash > /etc/bash_completion.d/redmap`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
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
        ClientError::Connect { .. } => CliError::new(format!("cannot reach the manager: {e}"))
            .with_hint(format!(
                "is `redmap manager start {addr}` running? (-m/--manager or REDMAP_MANAGER picks another)"
            )),
        ClientError::Remote(r) if r.code == crate::proto::ErrorCode::AUTH_FAILED => {
            CliError::new(format!("{addr}: {}", r.message)).with_hint(
                "give every command and server the same secret (--secret-file PATH or REDMAP_SECRET)",
            )
        }
        ClientError::Remote(r) => CliError::new(r.message),
        other => CliError::new(format!("{addr}: {other}")),
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
        let addr =
            crate::net::addr::listen_addr(typed).map_err(|e| CliError::new(e.to_string()))?;
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

/// An error that ends a command, with an optional hint for the user.
#[derive(Debug)]
pub struct CliError {
    pub message: String,
    pub hint: Option<String>,
}

impl CliError {
    pub fn new(message: impl Into<String>) -> CliError {
        CliError {
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> CliError {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<io::Error> for CliError {
    fn from(e: io::Error) -> CliError {
        CliError::new(e.to_string())
    }
}

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Worker(cmd) => worker::run(cmd),
        Command::Manager(cmd) => manager::run(cmd),
        Command::Jobs(cmd) => jobs::run(cmd),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            use std::io::Write;
            // Into a buffer first: the generator panics on a closed pipe.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "redmap", &mut script);
            quiet_broken_pipe(io::stdout().lock().write_all(&script)).map(|()| ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("redmap: error: {e}");
            if let Some(hint) = &e.hint {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(2)
        }
    }
}

/// The error for a server that could not start on `addr`.
pub fn serve_error(addr: SocketAddr, e: io::Error) -> CliError {
    let err = CliError::new(format!("cannot serve on {addr}: {e}"));
    if e.kind() == io::ErrorKind::AddrInUse {
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
