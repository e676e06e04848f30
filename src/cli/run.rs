//! `redmap run PATH`: build the job and run it, here in this process.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::{duration, quiet_broken_pipe, CliError};
use crate::local::{self, Options, Report};
use crate::plugin::{self, Plugin, Toolchain};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The job: a single .rs file, a directory holding a cargo crate of type
    /// cdylib, or an already built .so/.dylib.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,

    /// A name for the job in reports (default: the job's file name).
    #[arg(short, long)]
    pub name: Option<String>,

    /// Map threads (default: the number of cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// The rustc used for single-file jobs (default: `rustc` from PATH).
    #[arg(long, value_name = "PATH")]
    pub rustc: Option<PathBuf>,

    /// The cargo used for crate jobs (default: `cargo` from PATH).
    #[arg(long, value_name = "PATH")]
    pub cargo: Option<PathBuf>,
}

/// Results longer than this are not printed in the summary.
const SHOWN_RESULT_MAX: usize = 200;

/// The result as text, if it is short, printable UTF-8.
fn printable(result: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(result).ok()?;
    let ok = text.len() <= SHOWN_RESULT_MAX
        && text
            .chars()
            .all(|c| !c.is_control() || c == '\n' || c == '\t');
    ok.then(|| text.trim_end())
}

fn summary<W: Write>(out: &mut W, name: &str, r: &Report) -> io::Result<()> {
    writeln!(
        out,
        "{name}: {} tasks, {} processed, {} failed in {} ({:.0} tasks/s, {} threads)",
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
    match printable(&r.result) {
        Some(text) if !text.is_empty() => writeln!(out, "result: {text}")?,
        Some(_) => {}
        None => writeln!(out, "result: {} bytes", r.result.len())?,
    }
    if r.errors.total > 0 {
        writeln!(out, "errors ({} in all):", r.errors.total)?;
        for e in &r.errors.kept {
            writeln!(out, "  {e}")?;
        }
        let hidden = r.errors.total - r.errors.kept.len() as u64;
        if hidden > 0 {
            writeln!(out, "  … and {hidden} more")?;
        }
    }
    Ok(())
}

pub fn run(args: RunArgs) -> Result<ExitCode, CliError> {
    let tools = Toolchain::new(args.rustc.clone(), args.cargo.clone());
    let built = plugin::build(&args.path, &tools).map_err(|e| CliError::new(e.to_string()))?;
    let plugin = Plugin::open(&built.library).map_err(|e| CliError::new(e.to_string()))?;
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
    let report = local::run(&plugin, opts);
    quiet_broken_pipe(summary(&mut io::stdout().lock(), &name, &report))?;
    Ok(if report.clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_text_results_are_shown() {
        assert_eq!(printable(b"65"), Some("65"));
        assert_eq!(printable(b"a\tb\n"), Some("a\tb"));
        assert_eq!(printable(&[0xFF, 0x00]), None);
        assert_eq!(printable(&[b'x'; 300]), None);
        assert_eq!(printable(b"\x1b[31m"), None);
    }
}
