//! Following a job: polling the manager until the job is over, the
//! progress line shown meanwhile (also by an embedded `redmap run`), and
//! the summary printed at the end. `redmap run` and `redmap jobs watch`
//! both follow jobs through here.

use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{
    ProgressBar, ProgressDrawTarget, ProgressFinish, ProgressState, ProgressStyle, TermLike,
};

use super::output::{json_line, write_errors};
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
    Over(Box<JobSummary>),
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
            return Ok(Waited::Over(Box::new(job)));
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
    finish_on(json, job, false)
}

/// [`finish`], with the summary on standard error when `to_stderr` (when
/// standard output carries the job's output).
pub(super) fn finish_on(
    json: bool,
    job: &JobSummary,
    to_stderr: bool,
) -> Result<ExitCode, CliError> {
    let mut out: Box<dyn Write> = match to_stderr {
        true => Box::new(io::stderr().lock()),
        false => Box::new(io::stdout().lock()),
    };
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
    write_errors(out, &j.errors)
}

/// Columns of the terminal standard error writes to: the kernel's window
/// size (so a resized window is followed), else `$COLUMNS`, else 80.
pub fn terminal_width() -> usize {
    window_size()
        .map(|(cols, _)| cols)
        .or_else(|| {
            std::env::var("COLUMNS")
                .ok()
                .and_then(|c| c.trim().parse().ok())
        })
        .filter(|&c| c > 0)
        .unwrap_or(80)
}

/// The window's (columns, rows), from the kernel; rows may be 0 (unset).
#[cfg(unix)]
fn window_size() -> Option<(usize, usize)> {
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
    (rc == 0 && size.ws_col > 0).then_some((usize::from(size.ws_col), usize::from(size.ws_row)))
}

#[cfg(not(unix))]
fn window_size() -> Option<(usize, usize)> {
    None
}

/// Standard error as the terminal indicatif draws on: one column narrower
/// than the window (some terminals wrap on the last column, and a wrapped
/// line scrolls instead of being redrawn), and each frame written at once
/// on `flush`, so nothing else on standard error lands mid-line.
#[derive(Debug, Default)]
struct Stderr {
    frame: Mutex<String>,
}

impl Stderr {
    fn push(&self, text: &str) -> io::Result<()> {
        self.frame
            .lock()
            .map_err(|_| io::Error::other("progress line poisoned"))?
            .push_str(text);
        Ok(())
    }

    fn escape(&self, n: usize, code: char) -> io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        self.push(&format!("\x1b[{n}{code}"))
    }
}

impl TermLike for Stderr {
    fn width(&self) -> u16 {
        let cols = terminal_width().saturating_sub(1).max(1);
        u16::try_from(cols).unwrap_or(u16::MAX)
    }

    fn height(&self) -> u16 {
        // A window whose rows are unset still has the line's one.
        let rows = window_size().map_or(0, |(_, rows)| rows);
        u16::try_from(rows).unwrap_or(u16::MAX).max(24)
    }

    fn move_cursor_up(&self, n: usize) -> io::Result<()> {
        self.escape(n, 'A')
    }

    fn move_cursor_down(&self, n: usize) -> io::Result<()> {
        self.escape(n, 'B')
    }

    fn move_cursor_right(&self, n: usize) -> io::Result<()> {
        self.escape(n, 'C')
    }

    fn move_cursor_left(&self, n: usize) -> io::Result<()> {
        self.escape(n, 'D')
    }

    fn write_line(&self, s: &str) -> io::Result<()> {
        self.push(s)?;
        self.push("\n")
    }

    fn write_str(&self, s: &str) -> io::Result<()> {
        self.push(s)
    }

    fn clear_line(&self) -> io::Result<()> {
        // Back to the start, then erase it: a shorter line leaves nothing.
        self.push("\r\x1b[2K")
    }

    fn flush(&self) -> io::Result<()> {
        let frame = std::mem::take(
            &mut *self
                .frame
                .lock()
                .map_err(|_| io::Error::other("progress line poisoned"))?,
        );
        let mut err = io::stderr().lock();
        err.write_all(frame.as_bytes())?;
        err.flush()
    }
}

/// Width of the progress bar, in cells between its brackets.
const BAR: u64 = 20;

/// The progress line of a job, at most `width` characters: the bar, then
/// what [`progress`] says (done/total, percent, rate, ETA), the time so far
/// and the status. What does not fit goes, least useful first (the bar,
/// then the elapsed time), and the rest is cut at `width`.
pub fn progress_line(j: &JobSummary, width: usize) -> String {
    let p = progress(j);
    let candidates = candidates(j, p.rate, p.eta);
    candidates[fitting(&candidates, width)]
        .chars()
        .take(width)
        .collect()
}

/// The progress line at each of its widths, longest first, with this rate
/// and ETA (shown while the job runs).
fn candidates(j: &JobSummary, rate: Option<f64>, eta: Option<Duration>) -> [String; 5] {
    let p = progress(j);
    let bar = p.percent.map(|pct| {
        let filled = ((pct / 100.0 * BAR as f64) as u64).min(BAR) as usize;
        format!(
            "[{}{}] ",
            "#".repeat(filled),
            ".".repeat(BAR as usize - filled)
        )
    });
    let status = status_text(j);
    let rate = rate
        .map(|r| format!("  {r:.0} tasks/s"))
        .unwrap_or_default();
    let eta = eta
        .map(|e| format!("  ETA {}", eta_text(e)))
        .unwrap_or_default();
    let elapsed = duration::render(Duration::from_millis(j.elapsed_ms));
    let bar = bar.unwrap_or_default();
    [
        format!("{bar}{p} tasks{rate}{eta}  {elapsed}  {status}"),
        format!("{p} tasks{rate}{eta}  {elapsed}  {status}"),
        format!("{p} tasks{rate}{eta}  {status}"),
        format!("{p} tasks{eta}  {status}"),
        format!("{p}{eta}  {status}"),
    ]
}

/// The index of the longest candidate that fits `width`, else the last.
fn fitting(candidates: &[String], width: usize) -> usize {
    candidates
        .iter()
        .position(|c| c.chars().count() <= width)
        .unwrap_or(candidates.len() - 1)
}

/// What the job is doing. Waiting, the newest error says why if it can (a
/// worker that refused the job's library, say); the line is cut to the
/// width anyway.
fn status_text(j: &JobSummary) -> String {
    let sh = &j.shuffle;
    let reducing = j.status == crate::proto::msg::JobStatus::Running
        && sh.partitions > 0
        && sh
            .parts
            .iter()
            .any(|p| p.state != crate::proto::msg::shuffle::PART_WAITING);
    match (j.waiting_for_workers, j.errors.last()) {
        (true, Some(e)) => format!("waiting for workers ({e})"),
        (true, None) => "waiting for workers".to_owned(),
        // Every task is mapped: the partitions are being reduced.
        (false, _) if reducing => {
            format!("reducing, {}/{} partitions done", sh.done, sh.partitions)
        }
        (false, _) => j.status.name().to_owned(),
    }
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

/// The progress line on standard error. On a terminal it is an indicatif
/// bar, redrawn in place at the terminal's width, with indicatif's rate
/// and ETA (smoothed over the recent updates); the counts and the percent
/// are [`progress`]'s, as everywhere. Elsewhere, optionally, a plain line
/// when the job's state changes and once a minute.
pub struct LiveLine {
    tty: bool,
    plain: bool,
    last_plain: Instant,
    /// What the last plain line said of the job's state.
    last_state: Option<String>,
    /// The bar, once drawn on a terminal, and the shape its style has
    /// (none before its first frame).
    bar: Option<(ProgressBar, Option<Shape>)>,
}

/// Which parts of the line a bar's style shows: the index of the fitting
/// [`candidates`] (what is left out on a narrow terminal), whether the
/// total is known (the bar itself) and whether the job runs (a rate and an
/// ETA).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shape {
    fit: usize,
    total: bool,
    running: bool,
}

impl Shape {
    /// The indicatif style of this shape; `{count}`, `{speed}`, `{eta}`
    /// and `{took}` are ours (below), `{wide_msg}` the status, cut to the
    /// terminal's width.
    fn style(self) -> ProgressStyle {
        let bar = if self.total && self.fit == 0 {
            "[{bar:20}] "
        } else {
            ""
        };
        let (speed, eta) = if self.running {
            ("{speed}", "{eta}")
        } else {
            ("", "")
        };
        let template = match self.fit {
            0 | 1 => format!("{bar}{{count}} tasks{speed}  {{took}}  {{wide_msg}}"),
            2 => format!("{{count}} tasks{speed}  {{wide_msg}}"),
            3 => format!("{{count}} tasks{eta}  {{wide_msg}}"),
            _ => format!("{{count}}{eta}  {{wide_msg}}"),
        };
        ProgressStyle::with_template(&template)
            // Our own template: it parses; were it not to, a plain one.
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("#.")
            .with_key("count", |s: &ProgressState, w: &mut dyn fmt::Write| {
                let _ = match s.len() {
                    Some(0) => write!(w, "{}/0 (100%)", s.pos()),
                    Some(len) => write!(
                        w,
                        "{}/{len} ({}%)",
                        s.pos(),
                        (u128::from(s.pos()) * 100 / u128::from(len)).min(100)
                    ),
                    None => write!(w, "{}/?", s.pos()),
                };
            })
            .with_key("speed", |s: &ProgressState, w: &mut dyn fmt::Write| {
                let (rate, eta) = rate_and_eta(s.per_sec(), s.eta(), s.pos(), s.len(), s.elapsed());
                if let Some(rate) = rate {
                    let _ = write!(w, "  {rate:.0} tasks/s");
                }
                if let Some(eta) = eta {
                    let _ = write!(w, "  ETA {}", eta_text(eta));
                }
            })
            .with_key("eta", |s: &ProgressState, w: &mut dyn fmt::Write| {
                let (_, eta) = rate_and_eta(s.per_sec(), s.eta(), s.pos(), s.len(), s.elapsed());
                if let Some(eta) = eta {
                    let _ = write!(w, "  ETA {}", eta_text(eta));
                }
            })
            .with_key("took", |s: &ProgressState, w: &mut dyn fmt::Write| {
                let _ = write!(w, "{}", duration::render(s.elapsed()));
            })
    }
}

/// The rate and ETA a bar shows: indicatif's, smoothed over the recent
/// updates, or until it has seen two updates, the average over the job's
/// life so far (what [`progress`] gives), so the first frame has them too.
fn rate_and_eta(
    per_sec: f64,
    eta: Duration,
    pos: u64,
    len: Option<u64>,
    elapsed: Duration,
) -> (Option<f64>, Option<Duration>) {
    let (rate, eta) = if per_sec > 0.0 {
        (per_sec, Some(eta))
    } else {
        let rate = pos as f64 / elapsed.as_secs_f64().max(0.001);
        let left = len.map_or(0, |l| l.saturating_sub(pos));
        (rate, Duration::try_from_secs_f64(left as f64 / rate).ok())
    };
    if !(rate.is_finite() && rate > 0.0) {
        return (None, None);
    }
    (Some(rate), eta.filter(|_| len.is_some()))
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
            bar: None,
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
            self.show_bar(j);
        } else if self.plain {
            // Why a job waits is part of its state; a running job's newest
            // error is not (a job whose tasks fail would print at every
            // poll).
            let why = j.errors.last().filter(|_| j.waiting_for_workers);
            let state = format!("{:?} {} {why:?}", j.status, j.waiting_for_workers);
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

    /// Updates the terminal's bar, making it on the first call.
    fn show_bar(&mut self, j: &JobSummary) {
        let p = progress(j);
        let running = p.rate.is_some();
        let (bar, drawn) = self.bar.get_or_insert_with(|| {
            // Made hidden and moved to where the job is, then the rate
            // estimate starts afresh: a job followed when half done does
            // not look as if it had done half its tasks this instant.
            let bar = ProgressBar::with_draw_target(p.total, ProgressDrawTarget::hidden())
                .with_elapsed(Duration::from_millis(j.elapsed_ms))
                // Interrupted, the line stays as it was (not at 100%).
                .with_finish(ProgressFinish::Abandon);
            bar.set_position(p.done);
            bar.reset_eta();
            (bar, None)
        });
        // What fits is sized with the rate and ETA the bar will show.
        let (rate, eta) = rate_and_eta(bar.per_sec(), bar.eta(), p.done, p.total, bar.elapsed());
        let shape = Shape {
            // One width short: some terminals wrap on the last column.
            fit: fitting(
                &candidates(j, rate.filter(|_| running), eta.filter(|_| running)),
                terminal_width().saturating_sub(1),
            ),
            total: p.total.is_some(),
            running,
        };
        match p.total {
            Some(total) => bar.set_length(total),
            None => bar.unset_length(),
        }
        bar.set_message(status_text(j));
        if *drawn != Some(shape) {
            bar.set_style(shape.style());
            if drawn.is_none() {
                bar.set_draw_target(ProgressDrawTarget::term_like_with_hz(
                    Box::<Stderr>::default(),
                    20,
                ));
            }
            *drawn = Some(shape);
        }
        bar.set_position(p.done);
    }

    /// Redraws the line above the cursor, leaving the cursor (and what was
    /// typed after a prompt on its line) where it is. `note` follows the
    /// progress, e.g. to say the job ended. Drawn by hand: a bar is drawn
    /// where the cursor is, and here the cursor belongs to the prompt.
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

    /// Erases the line (before the summary, which says it all).
    pub fn clear(&mut self) {
        if let Some((bar, _)) = self.bar.take() {
            bar.finish_and_clear();
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
    fn a_job_whose_partitions_are_reducing_says_so() {
        use crate::proto::msg::shuffle::{PartView, ShuffleView, PART_DONE, PART_RUNNING};
        let mut j = running(Some(10), 10);
        let part = |state| PartView {
            state,
            worker: "w:1".into(),
            fetched: 0,
            bytes: 0,
            failures: 0,
        };
        *j.shuffle = ShuffleView {
            partitions: 2,
            done: 1,
            shuffled: 0,
            remapped: 0,
            parts: vec![part(PART_DONE), part(PART_RUNNING)],
        };
        assert_eq!(status_text(&j), "reducing, 1/2 partitions done");
        j.shuffle.parts.clear();
        assert_eq!(status_text(&j), "running");
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
