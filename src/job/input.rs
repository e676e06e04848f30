//! Input helpers for `load`: text files cut into line-aligned tasks
//! (Hadoop's `TextInputFormat`), in two forms.
//!
//! - [`text_chunks`]: `load` reads the file and yields its lines in chunks
//!   of about N bytes, each chunk whole lines. The text passes through the
//!   process that runs `load` (the manager), so it suits inputs that fit
//!   the network between the manager and the workers.
//! - [`splits`]: `load` yields only [`Split`]s (path, offset, length) of
//!   about N bytes each, and `map` reads its split itself with
//!   [`Split::lines`] from a path every machine shares. The input never
//!   passes through the manager.
//!
//! A split owns every line that *starts* inside it: it skips the partial
//! line at its start (unless it starts the file; the previous split owns
//! that line) and reads past its end to finish its last line, so every line
//! of the file is read by exactly one split, whatever the split size.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use super::codec::{Codec, DecodeError};
use super::keyed::TypedTasks;
use super::Error;

/// The lines of the text file at `path`, in tasks of whole lines of about
/// `chunk_bytes` bytes each (at least one line; a line longer than that is
/// a task alone), each line ended by `\n` (a `\r\n` end becomes `\n`, and
/// a last line without an end gets one). Read lazily:
/// only one chunk is held at a time. A file that cannot be opened yields
/// one error; a read error (or a line that is not UTF-8) ends the tasks
/// with an error naming the file.
pub fn text_chunks(path: impl AsRef<Path>, chunk_bytes: usize) -> TypedTasks<String> {
    let path = path.as_ref().to_owned();
    let shown = path.display().to_string();
    let mut reader = match File::open(&path) {
        Ok(f) => BufReader::with_capacity(1 << 16, f),
        Err(e) => {
            let e = Error::msg(format!("cannot open {shown}: {e}"));
            return Box::new(std::iter::once(Err(e)));
        }
    };
    let mut failed = false;
    let mut pending: Option<Error> = None;
    // The next chunk starts with room for the last one's size.
    let mut room = chunk_bytes.min(1 << 20) + 256;
    Box::new(std::iter::from_fn(move || {
        if let Some(e) = pending.take() {
            return Some(Err(e));
        }
        if failed {
            return None;
        }
        // Lines are read straight into the chunk: no allocation per line.
        let mut chunk = String::with_capacity(room);
        loop {
            let start = chunk.len();
            match reader.read_line(&mut chunk) {
                Ok(0) => return (!chunk.is_empty()).then_some(Ok(chunk)),
                Ok(_) => {
                    if chunk.ends_with("\r\n") {
                        chunk.truncate(chunk.len() - 2);
                        chunk.push('\n');
                    } else if !chunk.ends_with('\n') {
                        chunk.push('\n'); // the last line, unterminated
                    }
                    if chunk.len() >= chunk_bytes {
                        room = room.max(chunk.len());
                        return Some(Ok(chunk));
                    }
                }
                Err(e) => {
                    failed = true;
                    chunk.truncate(start);
                    let e = Error::msg(format!("cannot read {shown}: {e}"));
                    if chunk.is_empty() {
                        return Some(Err(e));
                    }
                    // The whole lines read before the error are a task;
                    // the error comes next.
                    pending = Some(e);
                    return Some(Ok(chunk));
                }
            }
        }
    }))
}

/// A part of a file for one task: the lines that start in `[offset,
/// offset + len)` (see the module's rule).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// The file, by a path every machine that maps it can open.
    pub path: String,
    /// Where the split starts, in bytes from the start of the file.
    pub offset: u64,
    /// How many bytes it covers.
    pub len: u64,
}

impl Codec for Split {
    fn encode(&self, out: &mut Vec<u8>) {
        self.path.encode(out);
        self.offset.encode(out);
        self.len.encode(out);
    }
    fn decode(input: &mut &[u8]) -> Result<Split, DecodeError> {
        Ok(Split {
            path: String::decode(input)?,
            offset: u64::decode(input)?,
            len: u64::decode(input)?,
        })
    }
}

/// The file at `path` cut into splits of `split_bytes` bytes (the last one
/// shorter), for `map` to read with [`Split::lines`]. Only the file's size
/// is read here. An empty file has no split.
pub fn splits(path: impl AsRef<Path>, split_bytes: u64) -> TypedTasks<Split> {
    let path = path.as_ref();
    let size = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) => {
            let e = Error::msg(format!("cannot read {}: {e}", path.display()));
            return Box::new(std::iter::once(Err(e)));
        }
    };
    let step = split_bytes.max(1);
    let shown = path.to_string_lossy().into_owned();
    Box::new((0..size.div_ceil(step)).map(move |i| {
        let offset = i * step;
        Ok(Split {
            path: shown.clone(),
            offset,
            len: step.min(size - offset),
        })
    }))
}

impl Split {
    /// The lines this split owns, without their line ends: a reader that
    /// opens the file, finds the first line starting in the split, and
    /// reads until the line that starts at or past its end.
    pub fn lines(&self) -> io::Result<SplitLines> {
        let mut reader = BufReader::new(File::open(&self.path)?);
        let mut pos = self.offset;
        if self.offset > 0 {
            // The line that starts before the split is the previous one's:
            // step back one byte, so a split starting right after a line
            // end skips nothing, and skip to the next line end.
            reader.seek(SeekFrom::Start(self.offset - 1))?;
            let mut partial = Vec::new();
            pos = self.offset - 1 + reader.read_until(b'\n', &mut partial)? as u64;
        }
        Ok(SplitLines {
            reader,
            pos,
            end: self.offset + self.len,
        })
    }
}

/// The lines of a [`Split`] (see [`Split::lines`]).
pub struct SplitLines {
    reader: BufReader<File>,
    /// Where the next line starts.
    pos: u64,
    /// Lines starting here or later belong to the next split.
    end: u64,
}

impl Iterator for SplitLines {
    type Item = io::Result<String>;

    fn next(&mut self) -> Option<io::Result<String>> {
        if self.pos >= self.end {
            return None;
        }
        let mut line = Vec::new();
        match self.reader.by_ref().read_until(b'\n', &mut line) {
            Ok(0) => None,
            Ok(n) => {
                self.pos += n as u64;
                if line.last() == Some(&b'\n') {
                    line.pop();
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                }
                Some(
                    String::from_utf8(line).map_err(|_| {
                        io::Error::new(io::ErrorKind::InvalidData, "a line is not UTF-8")
                    }),
                )
            }
            Err(e) => Some(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests;
