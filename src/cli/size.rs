//! Sizes on the command line: `65536`, `64K`, `256M`, `1G` (powers of
//! 1024; `KiB`, `MiB`, `GiB` and lower case accepted too).

/// Parses a size in bytes.
pub fn parse(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: usize = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size: give bytes, or a number with K, M or G"))?;
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (K, M or G)")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::parse;
    use crate::pipeline::size_text as show;

    #[test]
    fn a_size_shows_as_it_is_read() {
        assert_eq!(show(200 << 20), "200M");
        assert_eq!(show(1 << 30), "1G");
        assert_eq!(show(1536 << 10), "1536K");
        assert_eq!(show(1000), "1000");
        for n in [200u64 << 20, 1 << 30, 1536 << 10, 1000] {
            assert_eq!(parse(&show(n)), Ok(n as usize));
        }
    }

    #[test]
    fn sizes_read_as_powers_of_1024() {
        assert_eq!(parse("65536"), Ok(65536));
        assert_eq!(parse("64K"), Ok(65536));
        assert_eq!(parse("256M"), Ok(256 << 20));
        assert_eq!(parse("1GiB"), Ok(1 << 30));
        assert_eq!(parse("2g"), Ok(2 << 30));
        assert!(parse("").is_err());
        assert!(parse("M").is_err());
        assert!(parse("12T").is_err());
        assert!(parse("-1").is_err());
        assert!(parse("99999999999999999999G").is_err());
    }
}
