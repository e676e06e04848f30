//! Every line of a file is read exactly once, however it is cut.

use super::*;

/// A file of its own under the system's temporary directory, removed
/// when dropped.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(name: &str, contents: &[u8]) -> TempFile {
        let path = std::env::temp_dir().join(format!("redmap-input-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Lines of varied lengths (some empty, one long), with `\r\n` here and
/// there and no end on the last one.
fn sample() -> (Vec<u8>, Vec<String>) {
    let mut lines = Vec::new();
    let mut text = Vec::new();
    for i in 0..200u32 {
        let line = match i % 7 {
            0 => String::new(),
            3 => "x".repeat(150),
            _ => format!("line {i} {}", "ab".repeat((i % 13) as usize)),
        };
        text.extend_from_slice(line.as_bytes());
        if i != 199 {
            text.extend_from_slice(if i % 5 == 0 { b"\r\n" } else { b"\n" });
        }
        lines.push(line);
    }
    (text, lines)
}

#[test]
fn text_chunks_hold_whole_lines_and_all_of_them() {
    let (text, lines) = sample();
    let file = TempFile::new("chunks", &text);
    for size in [1, 10, 100, 1000, 1 << 20] {
        let chunks: Vec<String> = text_chunks(&file.0, size).map(Result::unwrap).collect();
        assert!(chunks.iter().all(|c| c.ends_with('\n')), "whole lines");
        if size > 1 {
            // Each chunk stops at the first line that takes it to `size`.
            for c in &chunks[..chunks.len() - 1] {
                let without_last = c[..c.len() - 1].rfind('\n').map_or(0, |i| i + 1);
                assert!(without_last < size, "a chunk ran past its size");
            }
        }
        let read: Vec<String> = chunks.concat().lines().map(str::to_owned).collect();
        assert_eq!(read, lines, "chunks of {size}");
    }
}

#[test]
fn splits_read_every_line_once_whatever_their_size() {
    let (text, lines) = sample();
    let file = TempFile::new("splits", &text);
    for size in [1, 2, 3, 7, 64, 151, 152, 1000, 100_000] {
        let splits: Vec<Split> = splits(&file.0, size).map(Result::unwrap).collect();
        let covered: u64 = splits.iter().map(|s| s.len).sum();
        assert_eq!(covered, text.len() as u64);
        let read: Vec<String> = splits
            .iter()
            .flat_map(|s| s.lines().unwrap().map(Result::unwrap).collect::<Vec<_>>())
            .collect();
        assert_eq!(read, lines, "splits of {size}");
    }
}

#[test]
fn a_split_travels_as_a_task() {
    let split = Split {
        path: "/data/corpus.txt".into(),
        offset: 64 << 20,
        len: 64 << 20,
    };
    let bytes = crate::job::codec::to_bytes(&split);
    assert_eq!(crate::job::codec::from_bytes::<Split>(&bytes), Ok(split));
}

#[test]
fn a_missing_file_is_one_error_naming_it() {
    let missing = std::env::temp_dir().join("redmap-input-no-such-file");
    let errors: Vec<String> = text_chunks(&missing, 10)
        .map(|r| r.unwrap_err().message().to_owned())
        .collect();
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].contains("redmap-input-no-such-file"),
        "{errors:?}"
    );
    assert_eq!(splits(&missing, 10).count(), 1);
    let empty = TempFile::new("empty", b"");
    assert_eq!(splits(&empty.0, 10).count(), 0);
    assert_eq!(text_chunks(&empty.0, 10).count(), 0);
}
