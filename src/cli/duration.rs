//! Human durations for flags (`500ms`, `10s`, `2m`, `1h30m`, `1.5s`), in the
//! syntax of Go's `time.ParseDuration` that the original's flags used, and
//! the matching short rendering for output.

use std::time::Duration;

/// Parses a duration; used as a clap `value_parser`. Zero is refused: a
/// timeout of nothing would fail every request.
pub fn parse(input: &str) -> Result<Duration, String> {
    let s = input.trim();
    if s.is_empty() {
        return Err("empty duration (try 10s, 500ms or 2m)".into());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("'{input}' has no unit (try {input}s or {input}ms)"))?;
        let (num, tail) = rest.split_at(num_len);
        let value: f64 = num
            .parse()
            .map_err(|_| format!("'{input}' is not a duration (try 10s, 500ms or 2m)"))?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => {
                return Err(format!(
                    "unknown unit '{unit}' in '{input}' (use ns, us, ms, s, m or h)"
                ))
            }
        };
        total += value * scale;
        rest = next;
    }
    if !(total.is_finite() && total < 1e9) {
        return Err(format!("'{input}' is too long a duration"));
    }
    let d = Duration::from_secs_f64(total);
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
