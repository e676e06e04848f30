//! Human durations for flags (`500ms`, `10s`, `2m`, `1h30m`, `1.5s`), in the
//! syntax of Go's `time.ParseDuration` that the original's flags used, and
//! the matching short rendering for output. humantime parses (it also takes
//! spaces and longer unit names: `1h 30min`); the messages are ours.

use std::time::Duration;

use humantime::DurationError;

/// The longest duration a flag takes (about 31 years): beyond it a
/// deadline's arithmetic is no longer worth trusting.
const LONGEST: Duration = Duration::from_secs(1_000_000_000);

/// Parses a duration; used as a clap `value_parser`. Zero is refused: a
/// timeout of nothing would fail every request.
pub fn parse(input: &str) -> Result<Duration, String> {
    let not_a_duration = || format!("'{input}' is not a duration (try 10s, 500ms or 2m)");
    let d = humantime::parse_duration(input.trim()).map_err(|e| match e {
        DurationError::Empty => "empty duration (try 10s, 500ms or 2m)".to_owned(),
        DurationError::UnknownUnit { unit, .. } if unit.is_empty() => {
            format!("'{input}' has no unit (try {input}s or {input}ms)")
        }
        DurationError::UnknownUnit { unit, .. } => {
            format!("unknown unit '{unit}' in '{input}' (use ns, us, ms, s, m or h)")
        }
        DurationError::NumberOverflow => {
            format!("'{input}' is too long a duration, or finer than a nanosecond")
        }
        DurationError::InvalidCharacter(_) | DurationError::NumberExpected(_) => not_a_duration(),
    })?;
    if d >= LONGEST {
        return Err(format!("'{input}' is too long a duration"));
    }
    if d.is_zero() {
        return Err("a timeout must be greater than zero".into());
    }
    Ok(d)
}

/// Renders a duration compactly: `850ms`, `12s`, `3m5s`, `2h0m7s`.
pub fn render(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return if d.as_millis() == 0 {
            format!("{}µs", d.as_micros())
        } else {
            format!("{}ms", d.as_millis())
        };
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else if secs < 10 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_style_durations() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("250us"), Ok(Duration::from_micros(250)));
    }

    #[test]
    fn refuses_what_is_not_a_duration() {
        assert!(parse("10").unwrap_err().contains("no unit"));
        assert!(parse("10x").unwrap_err().contains("unknown unit"));
        assert!(parse("0s").unwrap_err().contains("greater than zero"));
        assert!(parse("").is_err());
        assert!(parse("s").is_err());
        assert!(parse("1..2s").is_err());
    }

    #[test]
    fn renders_compactly() {
        assert_eq!(render(Duration::from_millis(850)), "850ms");
        assert_eq!(render(Duration::from_micros(42)), "42µs");
        assert_eq!(render(Duration::from_millis(2500)), "2.5s");
        assert_eq!(render(Duration::from_secs(185)), "3m5s");
        assert_eq!(render(Duration::from_secs(7207)), "2h0m7s");
    }
}
