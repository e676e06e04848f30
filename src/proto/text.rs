//! The text session: netcat debugging for humans.
//!
//! A connection whose first byte is not the frame magic is read as text
//! (after ZooKeeper's four-letter words): one command per line, answered in
//! plain lines, after which the server closes the connection, so that
//! `echo ping | nc HOST PORT` prints `pong` and returns.
//!
//! ```text
//! $ echo ping | nc 127.0.0.1 9876
//! pong
//! ```

use std::fmt::Write as _;

use super::buf::ReadBuf;
use super::msg::{Info, ManagerStats};

/// Longest accepted command line; a longer one is answered with an error.
pub const MAX_LINE: usize = 1024;

/// A text command, parsed from one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextCommand {
    Ping,
    Info,
    Stats,
    Jobs,
}

impl TextCommand {
    /// Every command with a one-line description, in the order shown to users.
    pub const ALL: &'static [(TextCommand, &'static str, &'static str)] = &[
        (
            TextCommand::Ping,
            "ping",
            "answers `pong` if the server is alive",
        ),
        (
            TextCommand::Info,
            "info",
            "prints the server's info as `key: value` lines",
        ),
        (
            TextCommand::Stats,
            "stats",
            "prints the manager's counters as `key: value` lines",
        ),
        (
            TextCommand::Jobs,
            "jobs",
            "prints one line per job: id, name, status, progress",
        ),
    ];

    fn name(self) -> &'static str {
        TextCommand::ALL
            .iter()
            .find(|(c, _, _)| *c == self)
            .map_or("?", |(_, n, _)| n)
    }

    /// The one-line answer to a command this server does not know.
    pub fn unknown(line: &str, known: &[TextCommand]) -> String {
        let names: Vec<&str> = known.iter().map(|c| c.name()).collect();
        let shown: String = line.trim().chars().take(64).collect();
        format!(
            "error: unknown command '{shown}'; known commands: {}\n",
            names.join(", ")
        )
    }

    /// Parses one line (without its newline) against the commands this
    /// server knows. Case and surrounding blanks are ignored. An unknown
    /// command yields the one-line error to send back.
    pub fn parse(line: &str, known: &[TextCommand]) -> Result<TextCommand, String> {
        let word = line.trim();
        known
            .iter()
            .copied()
            .find(|c| word.eq_ignore_ascii_case(c.name()))
            .ok_or_else(|| TextCommand::unknown(line, known))
    }
}

/// Why no line could be taken from the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineError {
    /// More than [`MAX_LINE`] bytes without a newline.
    TooLong,
}

/// Takes one `\n`-terminated line out of `buf` (a trailing `\r` is dropped;
/// invalid UTF-8 is replaced). `Ok(None)` until a whole line is there.
/// Once the peer has finished sending (`eof`), what is left without a
/// `\n` is the last line: `printf ping | nc` is answered like `echo ping`.
pub fn take_line(buf: &mut ReadBuf, eof: bool) -> Result<Option<String>, LineError> {
    let bytes = buf.bytes();
    let end = match bytes.iter().position(|&b| b == b'\n') {
        Some(end) if end <= MAX_LINE => end,
        Some(_) => return Err(LineError::TooLong),
        None if bytes.len() > MAX_LINE => return Err(LineError::TooLong),
        None if eof && !bytes.is_empty() => bytes.len(),
        None => return Ok(None),
    };
    let raw = &bytes[..end];
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    let line = String::from_utf8_lossy(raw).into_owned();
    let taken = (end + 1).min(bytes.len()); // the newline, if there is one
    buf.consume(taken);
    Ok(Some(line))
}

/// The answer to a text-session line on a server with a secret: a text
/// session cannot authenticate, so it is shown nothing of the cluster;
/// only `ping` is answered (a liveness probe reveals nothing).
pub fn unauthenticated(line: &str) -> String {
    if line.trim().eq_ignore_ascii_case("ping") {
        "pong\n".to_owned()
    } else {
        "error: this server requires authentication; only ping is answered over text\n".to_owned()
    }
}

/// The text rendering of a server's info: one `key: value` line each.
/// Scripts should expect keys to be added over time.
pub fn render_info(info: &Info) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "version: {}", info.version);
    let _ = writeln!(out, "address: {}", info.address);
    let _ = writeln!(out, "protocol: {}", info.protocol);
    let _ = writeln!(out, "active_jobs: {}", info.active_jobs);
    let _ = writeln!(out, "installed_jobs: {}", info.installed_jobs);
    let _ = writeln!(out, "uptime_secs: {}", info.uptime_ms / 1000);
    let _ = writeln!(out, "tasks_processed: {}", info.tasks_processed);
    let _ = writeln!(out, "memory_limit: {}", info.memory_limit);
    let _ = writeln!(out, "executors: {}", info.executors);
    let _ = writeln!(out, "executor_deaths: {}", info.executor_deaths);
    out
}

/// The text rendering of a manager's counters (`stats`): one `key: value`
/// line each, the keys that protocol.md lists. Scripts should expect keys
/// to be added over time.
pub fn render_stats(s: &ManagerStats) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "address: {}", s.address);
    let _ = writeln!(out, "workers_active: {}", s.workers_active);
    let _ = writeln!(out, "workers_failing: {}", s.workers_failing);
    let _ = writeln!(out, "workers_terminated: {}", s.workers_terminated);
    let _ = writeln!(out, "workers_total: {}", s.workers_total);
    let _ = writeln!(out, "jobs_waiting: {}", s.jobs_waiting);
    let _ = writeln!(out, "jobs_running: {}", s.jobs_running);
    let _ = writeln!(out, "jobs_failed: {}", s.jobs_failed);
    let _ = writeln!(out, "jobs_completed: {}", s.jobs_completed);
    let _ = writeln!(out, "jobs_cancelled: {}", s.jobs_cancelled);
    let _ = writeln!(out, "tasks_processed: {}", s.tasks_processed);
    let _ = writeln!(
        out,
        "tasks_per_sec: {:.0}",
        s.tasks_per_sec_milli as f64 / 1000.0
    );
    let _ = writeln!(out, "bytes_in: {}", s.bytes_in);
    let _ = writeln!(out, "bytes_out: {}", s.bytes_out);
    let _ = writeln!(out, "duplicates_dropped: {}", s.duplicates);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_commands_loosely() {
        let known = [TextCommand::Ping, TextCommand::Info];
        assert_eq!(TextCommand::parse("ping", &known), Ok(TextCommand::Ping));
        assert_eq!(
            TextCommand::parse("  INFO \t", &known),
            Ok(TextCommand::Info)
        );
        let err = TextCommand::parse("stats", &known).unwrap_err();
        assert_eq!(
            err,
            "error: unknown command 'stats'; known commands: ping, info\n"
        );
    }

    #[test]
    fn lines_are_taken_whole() {
        let mut buf = ReadBuf::new();
        buf.extend(b"pi");
        assert_eq!(take_line(&mut buf, false), Ok(None));
        buf.extend(b"ng\r\ninfo\n");
        assert_eq!(take_line(&mut buf, false), Ok(Some("ping".into())));
        assert_eq!(take_line(&mut buf, false), Ok(Some("info".into())));
        assert_eq!(take_line(&mut buf, true), Ok(None), "nothing left");
        buf.extend(b"stats\r");
        assert_eq!(take_line(&mut buf, false), Ok(None));
        assert_eq!(take_line(&mut buf, true), Ok(Some("stats".into())));
        assert!(buf.is_empty());
        buf.extend(&[b'x'; MAX_LINE + 1]);
        assert_eq!(take_line(&mut buf, true), Err(LineError::TooLong));
    }
}
