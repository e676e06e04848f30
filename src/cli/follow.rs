//! Following a job: polling the manager until the job is over, the
//! progress line shown meanwhile (also by an embedded `redmap run`), and
//! the summary printed at the end. `redmap run` and `redmap jobs watch`
//! both follow jobs through here.

use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::output::json_line;
use super::{call, duration, quiet_broken_pipe, CliError};
use crate::net::Client;
use crate::proto::msg::JobSummary;
use crate::proto::Message;
use crate::report::{progress, throughput, JobJson};

/// Results longer than this are not printed in the summary.
const SHOWN_RESULT_MAX: usize = 200;

/// The result as text, if it is short, printable UTF-8.
pub(super) fn printable(result: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(result).ok()?;
    let ok = text.len() <= SHOWN_RESULT_MAX
        && text
            .chars()
            .all(|c| !c.is_control() || c == '\n' || c == '\t');
    ok.then(|| text.trim_end())
}

/// How often a waiting `redmap run` asks for the job's progress: soon at
/// first, so a short job is not made to look slow, then every 100 ms.
const FIRST_POLL: Duration = Duration::from_millis(2);
pub(super) const POLL: Duration = Duration::from_millis(100);

/// How following a job ended.
pub(super) enum Waited {
    /// The job is over: its last summary.
    Over(JobSummary),
    /// Ctrl-C: the job goes on without us.
    Interrupted,
}

/// One look at job `id`.
pub(super) fn job_stats(client: &mut Client, id: u64, addr: &str) -> Result<JobSummary, CliError> {
    call(client, addr, &Message::JobStatsRequest(id), |m| match m {
        Message::JobStats(v) => Some(v),
        _ => None,
    })
}

/// Polls the job until it is over, showing progress on standard error.
pub(super) fn wait(
    client: &mut Client,
    id: u64,
    addr: &str,
    interrupted: &AtomicBool,
) -> Result<Waited, CliError> {
    let mut line = LiveLine::new();
    let mut pause = FIRST_POLL;
    loop {
        let job = job_stats(client, id, addr)?;
        if job.status.is_over() {
            line.clear();
            return Ok(Waited::Over(job));
        }
        if interrupted.load(Ordering::SeqCst) {
            return Ok(Waited::Interrupted);
        }
        line.show(&job);
        std::thread::sleep(pause);
        pause = (pause * 2).min(POLL);
    }
}

/// Prints an ended job's summary; returns its exit status (0 only for a
/// clean job).
pub(super) fn finish(json: bool, job: &JobSummary) -> Result<ExitCode, CliError> {
    let mut out = io::stdout().lock();
    let written = if json {
        json_line(&mut out, &JobJson::new(job))
    } else {
        remote_summary(&mut out, job)
    };
    quiet_broken_pipe(written)?;
    Ok(if crate::report::job_clean(job) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The summary of a job that ran on a manager.
pub(super) fn remote_summary<W: Write>(out: &mut W, j: &JobSummary) -> io::Result<()> {
    writeln!(
        out,
        "{}: {} — {} tasks, {} processed, {} failed, {} retried in {} ({:.0} tasks/s)",
        j.name,
        j.status.name(),
        j.loaded,
        j.processed,
        j.failed,
        j.retried,
        duration::render(Duration::from_millis(j.elapsed_ms)),
        throughput(j)
    )?;
    if j.load_errors > 0 {
        writeln!(out, "load errors: {}", j.load_errors)?;
    }
    if j.reduce_errors > 0 {
        writeln!(out, "reduce errors: {}", j.reduce_errors)?;
    }
    if j.backups > 0 || j.duplicates > 0 {
        writeln!(
            out,
            "backup copies: {} sent, {} won; duplicate answers dropped: {}",
            j.backups, j.backups_won, j.duplicates
        )?;
    }
    let complete = j.result_len == j.result_preview.len() as u64;
    match printable(&j.result_preview) {
        Some(text) if complete && !text.is_empty() => writeln!(out, "result: {text}")?,
        _ if j.result_len > 0 => writeln!(out, "result: {} bytes", j.result_len)?,
        _ => {}
    }
    if !j.errors.is_empty() {
        writeln!(out, "last errors:")?;
        for e in &j.errors {
            writeln!(out, "  {e}")?;
        }
    }
    Ok(())
}

/// Columns of the terminal standard error writes to: the kernel's window
/// size (so a resized window is followed), else `$COLUMNS`, else 80.
pub fn terminal_width() -> usize {
    window_columns()
        .or_else(|| {
            std::env::var("COLUMNS")
                .ok()
                .and_then(|c| c.trim().parse().ok())
        })
        .filter(|&c| c > 0)
        .unwrap_or(80)
}

#[cfg(unix)]
fn window_columns() -> Option<usize> {
    use std::os::fd::AsRawFd;
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ only writes a `winsize` into the struct we pass,
    // and standard error's descriptor stays open for the call.
    let rc = unsafe { libc::ioctl(io::stderr().as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
    (rc == 0 && size.ws_col > 0).then_some(usize::from(size.ws_col))
}

#[cfg(not(unix))]
fn window_columns() -> Option<usize> {
    None
}

/// Width of the progress bar, in cells between its brackets.
const BAR: u64 = 20;

/// The progress line of a job, at most `width` characters: the bar, then
/// what [`progress`] says (done/total, percent, rate, ETA), the time so far
/// and the status. What does not fit goes, least useful first (the bar,
/// then the elapsed time), and the rest is cut at `width`.
pub fn progress_line(j: &JobSummary, width: usize) -> String {
    let p = progress(j);
    let bar = p.percent.map(|pct| {
        let filled = ((pct / 100.0 * BAR as f64) as u64).min(BAR) as usize;
        format!(
            "[{}{}] ",
            "#".repeat(filled),
            ".".repeat(BAR as usize - filled)
        )
    });
    // Waiting, the newest error says why if it can (a worker that refused
    // the job's library, say); the line is cut to the width anyway.
    let status = match (j.waiting_for_workers, j.errors.last()) {
        (true, Some(e)) => format!("waiting for workers ({e})"),
        (true, None) => "waiting for workers".to_owned(),
        (false, _) => j.status.name().to_owned(),
    };
    let rate = p
        .rate
        .map(|r| format!("  {r:.0} tasks/s"))
        .unwrap_or_default();
    let eta = p
        .eta
        .map(|e| format!("  ETA {}", eta_text(e)))
        .unwrap_or_default();
    let elapsed = duration::render(Duration::from_millis(j.elapsed_ms));
    let bar = bar.unwrap_or_default();
    let candidates = [
        format!("{bar}{p} tasks{rate}{eta}  {elapsed}  {status}"),
        format!("{p} tasks{rate}{eta}  {elapsed}  {status}"),
        format!("{p} tasks{rate}{eta}  {status}"),
        format!("{p} tasks{eta}  {status}"),
        format!("{p}{eta}  {status}"),
    ];
    let last = &candidates[candidates.len() - 1];
    let fits = candidates
        .iter()
        .find(|c| c.chars().count() <= width)
        .unwrap_or(last);
    fits.chars().take(width).collect()
}

/// A time left, to the second (an ETA finer than that only flickers).
fn eta_text(eta: Duration) -> String {
    let secs = eta.as_secs_f64().ceil() as u64;
    if eta < Duration::from_secs(1) {
        "<1s".to_owned()
    } else if secs < 60 {
        format!("{secs}s")
    } else {
        duration::render(Duration::from_secs(secs))
    }
}

/// Without a terminal, a progress line when the job's state changes (it
/// starts, waits for workers, says why), and at least this often: a log
/// that shows the job is alive, not a line every few seconds.
const PLAIN_EVERY: Duration = Duration::from_secs(60);

/// The progress line on standard error: on a terminal, one line redrawn in
/// place (`\r`, then clear to the end of the line, so a shorter line leaves
/// nothing behind, and never wider than the terminal, so it cannot wrap
/// and scroll); elsewhere, optionally, a plain line every few seconds.
pub struct LiveLine {
    tty: bool,
    plain: bool,
    last_plain: Instant,
    /// What the last plain line said of the job's state.
    last_state: Option<String>,
    drawn: bool,
}

impl LiveLine {
    /// A line for a job followed over the network: on a terminal redrawn,
    /// elsewhere logged when its state changes and every minute (a script's
    /// log shows that it waits, and why).
    pub fn new() -> LiveLine {
        LiveLine {
            tty: io::stderr().is_terminal(),
            plain: true,
            last_plain: Instant::now(),
            last_state: None,
            drawn: false,
        }
    }

    /// A line shown only on a terminal (the embedded `redmap run`, whose
    /// output elsewhere is its summary alone).
    pub fn terminal_only() -> LiveLine {
        LiveLine {
            plain: false,
            ..LiveLine::new()
        }
    }

    /// True when standard error is a terminal.
    pub fn is_tty(&self) -> bool {
        self.tty
    }

    /// Shows `j`'s progress.
    pub fn show(&mut self, j: &JobSummary) {
        if self.tty {
            // One width short: some terminals wrap on the last column.
            let line = progress_line(j, terminal_width().saturating_sub(1));
            self.draw(&format!("\r\x1b[2K{line}"));
            self.drawn = true;
        } else if self.plain {
            let state = format!(
                "{:?} {} {:?}",
                j.status,
                j.waiting_for_workers,
                j.errors.last()
            );
            // A job that simply runs says nothing until a minute has
            // passed; one that waits says so, and why, at once.
            let changed = match &self.last_state {
                None => j.waiting_for_workers,
                Some(last) => *last != state,
            };
            if self.last_state.is_none() {
                self.last_state = Some(state.clone());
            }
            if changed || self.last_plain.elapsed() >= PLAIN_EVERY {
                self.draw(&format!("{}\n", progress_line(j, usize::MAX)));
                self.last_plain = Instant::now();
                self.last_state = Some(state);
            }
        }
    }

    /// Redraws the line above the cursor, leaving the cursor (and what was
    /// typed after a prompt on its line) where it is. `note` follows the
    /// progress, e.g. to say the job ended.
    pub fn show_above(&mut self, j: &JobSummary, note: &str) {
        if self.tty {
            let width = terminal_width().saturating_sub(1);
            let line: String = format!("{}{note}", progress_line(j, width))
                .chars()
                .take(width)
                .collect();
            // Save the cursor, go up a line, redraw, restore the cursor.
            self.draw(&format!("\x1b7\x1b[1A\r\x1b[2K{line}\x1b8"));
        }
    }

    /// Leaves the line as it is and moves below it (before a prompt).
    pub fn keep(&mut self) {
        if self.tty && self.drawn {
            self.draw("\n");
            self.drawn = false;
        }
    }

    /// Erases the line (before the summary, which says it all).
    pub fn clear(&mut self) {
        if self.tty && self.drawn {
            self.draw("\r\x1b[2K");
            self.drawn = false;
        }
    }

    fn draw(&self, text: &str) {
        // One write, so nothing else on standard error lands mid-line.
        let mut err = io::stderr().lock();
        let _ = err.write_all(text.as_bytes()).and_then(|()| err.flush());
    }
}

impl Default for LiveLine {
    fn default() -> LiveLine {
        LiveLine::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::msg::JobStatus;

    fn running(estimate: Option<u64>, done: u64) -> JobSummary {
        JobSummary {
            id: 3,
            name: "j".into(),
            status: JobStatus::Running,
            estimate,
            loaded: done,
            processed: done,
            failed: 0,
            elapsed_ms: 4000,
            ..JobSummary::default()
        }
    }

    #[test]
    fn the_progress_line_has_bar_rate_and_eta() {
        let line = progress_line(&running(Some(30_000_000), 7_500_000), 200);
        assert_eq!(
            line,
            "[#####...............] 7500000/30000000 (25%) tasks  1875000 tasks/s  ETA 12s  4.0s  running"
        );
    }

    #[test]
    fn the_progress_line_fits_the_width() {
        let j = running(Some(30_000_000), 7_500_000);
        for width in [0, 10, 40, 60, 79, 80, 120] {
            let line = progress_line(&j, width);
            assert!(line.chars().count() <= width, "{width}: {line:?}");
        }
        // Narrow: the rate goes before the status is cut.
        assert_eq!(
            progress_line(&j, 50),
            "7500000/30000000 (25%) tasks  ETA 12s  running"
        );
        // The bar goes first, the counts stay.
        let line = progress_line(&j, 79);
        assert!(!line.contains('['), "{line}");
        assert!(line.starts_with("7500000/30000000 (25%)"), "{line}");
    }

    #[test]
    fn the_progress_line_without_estimate_has_no_bar_or_eta() {
        let line = progress_line(&running(None, 42), 200);
        assert_eq!(line, "42/? tasks  10 tasks/s  4.0s  running");
    }

    #[test]
    fn only_short_text_results_are_shown() {
        assert_eq!(printable(b"65"), Some("65"));
        assert_eq!(printable(b"a\tb\n"), Some("a\tb"));
        assert_eq!(printable(&[0xFF, 0x00]), None);
        assert_eq!(printable(&[b'x'; 300]), None);
        assert_eq!(printable(b"\x1b[31m"), None);
    }
}
