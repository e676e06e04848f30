//! Human durations for flags (`500ms`, `10s`, `2m`, `1h30m`, `1.5s`), in the
//! syntax of Go's `time.ParseDuration` that the original's flags used, and
//! the matching short rendering for output. The input is checked against
//! Go's grammar and units here, then humantime parses it; the messages are
//! ours.

use std::time::Duration;

use humantime::DurationError;

/// The longest duration a flag takes (about 31 years): beyond it a
/// deadline's arithmetic is no longer worth trusting.
const LONGEST: Duration = Duration::from_secs(1_000_000_000);

/// Go's units, the only ones a flag takes: humantime knows more (`d`, `w`,
/// `M` for months, `y`, spelled-out names), and `--read-timeout 1M` must
/// not mean a month.
const UNITS: &[&str] = &["ns", "us", "µs", "ms", "s", "m", "h"];

/// `input` in the form humantime reads, checked against Go's grammar
/// first: numbers (`1`, `1.5`, `.5`) each followed by one of [`UNITS`].
fn go_form(input: &str) -> Result<String, String> {
    let not_a_duration = || format!("'{input}' is not a duration (try 10s, 500ms or 2m)");
    let mut rest = input.trim();
    if rest.is_empty() {
        return Err("empty duration (try 10s, 500ms or 2m)".to_owned());
    }
    let mut out = String::new();
    while !rest.is_empty() {
        let digits = |c: char| c.is_ascii_digit() || c == '.';
        let num_len = rest.find(|c: char| !digits(c)).unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(not_a_duration());
        }
        let unit_len = tail.find(digits).unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        if unit.is_empty() {
            return Err(format!("'{input}' has no unit (try {input}s or {input}ms)"));
        }
        if !UNITS.contains(&unit) {
            return Err(format!(
                "unknown unit '{unit}' in '{input}' (use ns, us, ms, s, m or h)"
            ));
        }
        // Go takes `.5s` and `5.s`; humantime wants digits on both sides.
        let num = num.strip_suffix('.').unwrap_or(num);
        if num.starts_with('.') {
            out.push('0');
        }
        out.push_str(num);
        out.push_str(if unit == "µs" { "us" } else { unit });
        rest = next;
    }
    Ok(out)
}

/// Parses a duration; used as a clap `value_parser`. Zero is refused: a
/// timeout of nothing would fail every request.
pub fn parse(input: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(&go_form(input)?).map_err(|e| match e {
        DurationError::NumberOverflow => {
            format!("'{input}' is too long a duration, or finer than a nanosecond")
        }
        _ => format!("'{input}' is not a duration (try 10s, 500ms or 2m)"),
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
        assert_eq!(parse("250µs"), Ok(Duration::from_micros(250)));
        assert_eq!(parse(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("1.s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse("1h0.5m"), Ok(Duration::from_secs(3630)));
    }

    #[test]
    fn takes_only_gos_units() {
        for input in ["1d", "1w", "1M", "1y", "1min", "1h 30m", "2sec"] {
            let e = parse(input).unwrap_err();
            assert!(e.contains("unknown unit"), "{input}: {e}");
        }
        assert!(parse("1..5s").unwrap_err().contains("not a duration"));
        assert!(parse("s").unwrap_err().contains("not a duration"));
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
