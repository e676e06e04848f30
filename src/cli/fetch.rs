//! Fetching an ended job's output from its manager (`OUTPUT_REQUEST`), in
//! chunks that fit both sides' frames, and writing it where the user asked:
//! `redmap run --output` and `redmap jobs output`.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use clap::ValueEnum;

use super::{remote_err, CliError, ErrorKind, NetArgs};
use crate::net::{Client, ClientError};
use crate::plugin::Instance;
use crate::proto::msg::shuffle::{Part, BINARY_SEGMENT, TEXT_SEGMENT};
use crate::proto::msg::{Fetch, OutputForm, OutputRequest};
use crate::proto::{frame_budget, ErrorCode, Message};

/// How an output is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Format {
    /// One `key<TAB>value` line per key, in the text form of the job's
    /// types (protocol.md, "Keyed jobs"); a byte-level job's result as it
    /// is.
    #[default]
    Text,
    /// The job's own bytes: a keyed job's output runs (pairs in the Codec
    /// encoding, each partition sorted by key, in partition order), a
    /// byte-level job's final accumulator.
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
/// `sink` in order with the number of the partition it is from; returns
/// its size in bytes. A keyed job's output is in partitions on the
/// workers that reduced them: the manager says where (`PARTS`), and each
/// is fetched from its worker, in partition order (each sorted by key).
/// An output the manager keeps is partition 0.
pub fn fetch(
    client: &mut Client,
    net: &NetArgs,
    addr: &str,
    job: u64,
    form: OutputForm,
    mut sink: impl FnMut(usize, &[u8]) -> io::Result<()>,
) -> Result<u64, FetchError> {
    match parts(client, addr, job) {
        Ok(parts) if parts.iter().any(|p| !p.path.is_empty()) => {
            return Err(FetchError::Unavailable(format!(
                "job {job}'s reducers wrote its output to part files (--output-dir): {}",
                parts.first().map_or("", |p| p.path.as_str())
            )))
        }
        Ok(parts) if !parts.is_empty() => return fetch_parts(net, job, form, &parts, sink),
        // None: the manager keeps the output itself.
        Ok(_) => {}
        Err(e) => return Err(e),
    }
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
        sink(0, &chunk.chunk).map_err(|e| FetchError::Cli(CliError::from(e)))?;
        offset += chunk.chunk.len() as u64;
        if offset >= chunk.total {
            return Ok(chunk.total);
        }
    }
}

/// Where job `job`'s partitions are (none: the manager keeps its output).
pub fn parts(client: &mut Client, addr: &str, job: u64) -> Result<Vec<Part>, FetchError> {
    match client.request(&Message::PartsRequest(job)) {
        Ok(Message::Parts(p)) => Ok(p.parts),
        Ok(other) => Err(FetchError::Cli(CliError::new(format!(
            "unexpected reply {} to PARTS_REQUEST",
            other.opcode()
        )))),
        Err(ClientError::Remote(e))
            if e.code == ErrorCode::NOT_FOUND || e.code == ErrorCode::BUSY =>
        {
            Err(FetchError::Unavailable(e.message))
        }
        // A manager from before partitions keeps every output itself.
        Err(ClientError::Remote(e)) if e.code == ErrorCode::UNKNOWN_OPCODE => Ok(Vec::new()),
        Err(e) => Err(FetchError::Cli(remote_err(addr, e))),
    }
}

/// Fetches each of `parts` from the worker that keeps it, in order, into
/// `sink` (see [`fetch`]).
fn fetch_parts(
    net: &NetArgs,
    job: u64,
    form: OutputForm,
    parts: &[Part],
    mut sink: impl FnMut(usize, &[u8]) -> io::Result<()>,
) -> Result<u64, FetchError> {
    let secret = net.secret().map_err(FetchError::Cli)?;
    let mut conn: Option<(String, Client)> = None;
    let mut total = 0u64;
    for (p, part) in parts.iter().enumerate() {
        let (segment, len) = match form {
            OutputForm::Binary => (BINARY_SEGMENT, part.binary_len),
            OutputForm::Text if part.text_error.is_empty() => (TEXT_SEGMENT, part.text_len),
            OutputForm::Text => {
                return Err(FetchError::Unavailable(format!(
                    "job {job}'s output has no text form ({}); fetch it with --format binary",
                    part.text_error
                )))
            }
        };
        if conn.as_ref().is_none_or(|(a, _)| *a != part.addr) {
            let c = Client::connect_with(
                &part.addr,
                net.timeouts(),
                net.max_size(),
                secret.as_deref(),
            )
            .map_err(|e| {
                // A worker, not the manager: say which and what it held.
                FetchError::Unavailable(format!(
                    "cannot reach worker {}, which keeps partition {p} of job {job}'s output \
                     (a lost worker takes its partitions with it): {e}",
                    part.addr
                ))
            })?;
            conn = Some((part.addr.clone(), c));
        }
        let Some((_, client)) = conn.as_mut() else {
            continue;
        };
        let max = frame_budget(client.max_size(), u32::MAX as usize) as u32;
        let mut offset = 0u64;
        while offset < len {
            let req = Fetch {
                job,
                file: part.file,
                segment,
                offset,
                max,
                range: None,
            };
            let chunk = match client.request(&Message::Fetch(req)) {
                Ok(Message::Fetched(chunk)) => chunk,
                Ok(other) => {
                    return Err(FetchError::Cli(CliError::new(format!(
                        "unexpected reply {} to FETCH",
                        other.opcode()
                    ))))
                }
                Err(ClientError::Remote(e)) if e.code == ErrorCode::NOT_FOUND => {
                    return Err(FetchError::Unavailable(format!(
                        "partition {p} of job {job}'s output is gone from worker {}: {}",
                        part.addr, e.message
                    )))
                }
                Err(e) => {
                    return Err(FetchError::Unavailable(format!(
                        "fetching partition {p} of job {job} from worker {}: {e}",
                        part.addr
                    )))
                }
            };
            if chunk.total != len || chunk.offset != offset || chunk.chunk.is_empty() {
                return Err(FetchError::Cli(CliError::new(format!(
                    "worker {} sent partition {p} of job {job} from offset {} (of {}) for \
                     {offset} (of {len})",
                    part.addr, chunk.offset, chunk.total
                ))));
            }
            sink(p, &chunk.chunk).map_err(|e| FetchError::Cli(CliError::from(e)))?;
            offset += chunk.chunk.len() as u64;
        }
        total += len;
    }
    Ok(total)
}

/// Where a fetched output goes: standard output for `-`; a regular file
/// (or a new one) by way of a partial file beside it, created afresh and
/// renamed once the output is whole, so a fetch that fails (no output, a
/// lost connection) never leaves half a file nor empties one that was
/// there; anything else (a device, a pipe, `/dev/stdout`, a symlink to
/// one) written in place, as a shell's `>` would.
struct Sink<'a> {
    path: &'a Path,
    /// The partial file, when the output goes by way of one.
    partial: Option<PathBuf>,
    out: Option<BufWriter<Box<dyn Write>>>,
}

impl<'a> Sink<'a> {
    fn new(path: &'a Path) -> Sink<'a> {
        let regular = match std::fs::symlink_metadata(path) {
            Ok(meta) => meta.file_type().is_file(),
            Err(e) => e.kind() == io::ErrorKind::NotFound,
        };
        let partial = (regular && path != Path::new("-")).then(|| {
            let mut name = path.as_os_str().to_owned();
            name.push(format!(".{}.partial", std::process::id()));
            PathBuf::from(name)
        });
        Sink {
            path,
            partial,
            out: None,
        }
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.out.is_none() {
            let out: Box<dyn Write> = match (&self.partial, self.path == Path::new("-")) {
                (_, true) => Box::new(io::stdout().lock()),
                (Some(partial), false) => {
                    Box::new(File::options().write(true).create_new(true).open(partial)?)
                }
                (None, false) => Box::new(File::options().write(true).open(self.path)?),
            };
            self.out = Some(BufWriter::new(out));
        }
        match &mut self.out {
            Some(out) => out.write_all(bytes),
            None => Ok(()),
        }
    }

    /// Flushes, and gives the file its name; on an error the partial
    /// file goes (by `drop`).
    fn finish(mut self) -> io::Result<()> {
        self.write(&[])?; // an empty output is an empty file
        if let Some(out) = &mut self.out {
            out.flush()?;
        }
        self.out = None;
        if let Some(partial) = self.partial.take() {
            let renamed = std::fs::rename(&partial, self.path);
            if renamed.is_err() {
                let _ = std::fs::remove_file(&partial);
            }
            renamed?;
        }
        Ok(())
    }
}

impl Drop for Sink<'_> {
    fn drop(&mut self) {
        // Not finished: the partial file goes.
        if let (Some(_), Some(partial)) = (self.out.take(), &self.partial) {
            let _ = std::fs::remove_file(partial);
        }
    }
}

/// Writes `bytes` to `path` (`-`: standard output) as a fetched output is
/// written (see [`Sink`]): what an embedded run's `--output` does.
pub fn write_to(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut sink = Sink::new(path);
    sink.write(bytes)?;
    sink.finish()
}

/// Fetches job `job`'s output in `form` into the file `path` (standard
/// output for `-`). With `text_of`, the binary form is fetched and written
/// as text by the job itself (its `format`), piece by piece: what
/// `redmap run` does with the job it built.
pub fn fetch_to(
    client: &mut Client,
    net: &NetArgs,
    addr: &str,
    job: u64,
    form: OutputForm,
    path: &Path,
    text_of: Option<&Instance>,
) -> Result<u64, FetchError> {
    let io_error = |e: io::Error| {
        FetchError::Cli(CliError {
            kind: ErrorKind::Io,
            ..CliError::new(format!("cannot write {}: {e}", path.display()))
        })
    };
    let mut sink = Sink::new(path);
    // Bytes of a pair cut by a chunk's end, for the next chunk.
    let mut carry = Vec::new();
    let total = fetch(client, net, addr, job, form, |_, bytes| match text_of {
        None => sink.write(bytes),
        Some(job) => {
            carry.extend_from_slice(bytes);
            let (text, used) = job.format(&carry).map_err(io::Error::other)?;
            carry.drain(..used);
            sink.write(&text)
        }
    })
    .map_err(|e| match e {
        FetchError::Cli(e) if e.kind == ErrorKind::Io => FetchError::Cli(CliError {
            message: format!("cannot write {}: {}", path.display(), e.message),
            ..e
        }),
        e => e,
    })?;
    if !carry.is_empty() {
        return Err(FetchError::Cli(CliError::new(format!(
            "job {job}'s output ends with {} bytes that are not a whole pair",
            carry.len()
        ))));
    }
    sink.finish().map_err(io_error)?;
    Ok(total)
}
