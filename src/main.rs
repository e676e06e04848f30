//! The `redmap` binary: parse the command line, set up logging, run.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Servers log at info by default; RUST_LOG overrides (e.g. RUST_LOG=debug).
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    redmap::cli::run(redmap::cli::Cli::parse())
}
