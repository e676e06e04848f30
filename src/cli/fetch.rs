//! Fetching an ended job's output from its manager (`OUTPUT_REQUEST`), in
//! chunks that fit both sides' frames, and writing it where the user asked:
//! `redmap run --output` and `redmap jobs output`.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use clap::ValueEnum;

use super::{remote_err, CliError, ErrorKind};
use crate::net::{Client, ClientError};
use crate::proto::msg::{OutputForm, OutputRequest};
use crate::proto::{frame_budget, ErrorCode, Message};

/// How an output is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Format {
    /// One `key<TAB>value` line per key, in the text form of the job's
    /// types (protocol.md, "Keyed jobs"); a byte-level job's result as it
    /// is.
    #[default]
    Text,
    /// The job's own bytes: a keyed job's output run (pairs in the Codec
    /// encoding, sorted by key), a byte-level job's final accumulator.
    Binary,
}

impl Format {
    pub fn form(self) -> OutputForm {
        match self {
            Format::Text => OutputForm::Text,
            Format::Binary => OutputForm::Binary,
        }
    }
}

/// Why an output could not be fetched.
pub enum FetchError {
    /// The manager keeps none for the job (why), or the job is running.
    Unavailable(String),
    Cli(CliError),
}

impl From<FetchError> for CliError {
    fn from(e: FetchError) -> CliError {
        match e {
            FetchError::Unavailable(why) => CliError {
                kind: ErrorKind::Remote,
                ..CliError::new(why)
            },
            FetchError::Cli(e) => e,
        }
    }
}

/// Fetches job `job`'s output in `form`, chunk by chunk, handing each to
/// `sink` in order; returns its size in bytes.
pub fn fetch(
    client: &mut Client,
    addr: &str,
    job: u64,
    form: OutputForm,
    mut sink: impl FnMut(&[u8]) -> io::Result<()>,
) -> Result<u64, FetchError> {
    // Each reply must fit this client's own max size.
    let max = frame_budget(client.max_size(), u32::MAX as usize) as u32;
    let mut offset = 0u64;
    loop {
        let req = OutputRequest {
            job,
            form,
            offset,
            max,
        };
        let chunk = match client.request(&Message::OutputRequest(req)) {
            Ok(Message::Output(chunk)) => chunk,
            Ok(other) => {
                return Err(FetchError::Cli(CliError::new(format!(
                    "unexpected reply {} to OUTPUT_REQUEST",
                    other.opcode()
                ))))
            }
            Err(ClientError::Remote(e))
                if e.code == ErrorCode::NOT_FOUND || e.code == ErrorCode::BUSY =>
            {
                return Err(FetchError::Unavailable(e.message));
            }
            Err(e) => return Err(FetchError::Cli(remote_err(addr, e))),
        };
        if chunk.offset != offset || (chunk.chunk.is_empty() && offset < chunk.total) {
            return Err(FetchError::Cli(CliError::new(format!(
                "the manager sent job {job}'s output from offset {} (of {}) for {offset}",
                chunk.offset, chunk.total
            ))));
        }
        sink(&chunk.chunk).map_err(|e| FetchError::Cli(CliError::from(e)))?;
        offset += chunk.chunk.len() as u64;
        if offset >= chunk.total {
            return Ok(chunk.total);
        }
    }
}

/// Fetches job `job`'s output in `format` into the file `path` (standard
/// output for `-`), written as it arrives.
pub fn fetch_to(
    client: &mut Client,
    addr: &str,
    job: u64,
    format: Format,
    path: &Path,
) -> Result<u64, FetchError> {
    let cli = |e: io::Error, what: &str| {
        FetchError::Cli(CliError {
            kind: ErrorKind::Io,
            ..CliError::new(format!("cannot {what} {}: {e}", path.display()))
        })
    };
    let mut out: BufWriter<Box<dyn Write>> = if path == Path::new("-") {
        BufWriter::new(Box::new(io::stdout().lock()))
    } else {
        BufWriter::new(Box::new(File::create(path).map_err(|e| cli(e, "create"))?))
    };
    let total = fetch(client, addr, job, format.form(), |bytes| {
        out.write_all(bytes)
    })?;
    out.flush().map_err(|e| cli(e, "write"))?;
    Ok(total)
}
