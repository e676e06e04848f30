//! Output for humans and scripts: aligned tables and JSON for `--json`
//! (the progress line is [`super::follow`]'s).
//!
//! JSON is serde_json's, through the views of [`crate::report`] and
//! [`json_line`].

use std::fmt::Write as _;
use std::io::{self, Write};

use serde::Serialize;

/// Prints rows under a header, each column padded to its widest cell.
pub fn table<W: Write>(out: &mut W, header: &[&str], rows: &[Vec<String>]) -> io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i + 1 == widths.len() {
                s.push_str(cell);
            } else {
                let _ = write!(s, "{cell:<w$}  ");
            }
        }
        s.trim_end().to_owned()
    };
    writeln!(out, "{}", line(&mut header.iter().copied()))?;
    for row in rows {
        writeln!(out, "{}", line(&mut row.iter().map(String::as_str)))?;
    }
    Ok(())
}

/// Writes `value` as one line of JSON: what every `--json` prints.
pub fn json_line<W: Write, T: Serialize + ?Sized>(out: &mut W, value: &T) -> io::Result<()> {
    writeln!(out, "{}", crate::report::to_json(value))
}

/// A job summary's errors, as `jobs stats` and `redmap run` print them. A
/// manager keeps a job's first and latest errors
/// ([`KEPT_ERRORS`](crate::manager::job::KEPT_ERRORS) in all); a full list
/// may have dropped some between the two halves, which a `…` line marks.
pub fn write_errors<W: Write>(out: &mut W, errors: &[String]) -> io::Result<()> {
    if errors.is_empty() {
        return Ok(());
    }
    let kept = crate::manager::job::KEPT_ERRORS;
    if errors.len() < kept {
        writeln!(out, "errors:")?;
    } else {
        let first = kept.div_ceil(2);
        writeln!(
            out,
            "errors (the first {first} and the latest {}; any between are not kept):",
            kept - first
        )?;
    }
    for (i, e) in errors.iter().enumerate() {
        if errors.len() >= kept && i == kept.div_ceil(2) {
            writeln!(out, "  …")?;
        }
        writeln!(out, "  {e}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn tables_align_columns() {
        let mut out = Vec::new();
        table(
            &mut out,
            &["A", "LONGER"],
            &[
                vec!["xyz".into(), "1".into()],
                vec!["q".into(), "22".into()],
            ],
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "A    LONGER\nxyz  1\nq    22\n"
        );
    }

    #[test]
    fn a_full_error_list_marks_where_errors_were_dropped() {
        let text = |errors: &[String]| {
            let mut out = Vec::new();
            super::write_errors(&mut out, errors).unwrap();
            String::from_utf8(out).unwrap()
        };
        assert_eq!(text(&[]), "");
        assert_eq!(text(&["a".to_owned()]), "errors:\n  a\n");
        let ten: Vec<String> = (1..=10).map(|n| n.to_string()).collect();
        let full = text(&ten);
        assert!(
            full.starts_with("errors (the first 5 and the latest 5"),
            "{full}"
        );
        assert!(full.contains("  5\n  …\n  6\n"), "{full}");
    }
}
