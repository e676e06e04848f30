//! The `redmap` binary: parse the command line, set up logging, run.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = redmap::cli::Cli::parse();
    // Quiet commands, logging servers, -v for more; RUST_LOG overrides
    // (e.g. RUST_LOG=debug).
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(cli.log_filter()))
        .format_timestamp_millis()
        .init();
    redmap::cli::run(cli)
}
