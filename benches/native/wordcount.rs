//! The limit a keyed word count is measured against: a plain Rust word
//! count of one file with 2 threads and std's HashMap, its output sorted
//! and written like the keyed job's (`word<TAB>count` lines to `result`).
//! Built by benches/keyed.py with `rustc -O`; not part of the crate.
//!
//!     wordcount FILE

use std::collections::HashMap;
use std::fmt::Write as _;
use std::thread;

fn count(text: &str) -> HashMap<&str, u64> {
    let mut counts = HashMap::new();
    for word in text.split_whitespace() {
        *counts.entry(word).or_insert(0) += 1;
    }
    counts
}

fn main() {
    let path = std::env::args().nth(1).expect("usage: wordcount FILE");
    let text = std::fs::read_to_string(&path).expect("read the file");
    // Two halves, the cut moved to a line end.
    let mid = text[text.len() / 2..]
        .find('\n')
        .map_or(text.len(), |i| text.len() / 2 + i + 1);
    let (a, b) = text.split_at(mid);
    let (mut total, other) = thread::scope(|s| {
        let h = s.spawn(|| count(b));
        (count(a), h.join().expect("the second thread"))
    });
    for (word, n) in other {
        *total.entry(word).or_insert(0) += n;
    }
    let mut words: Vec<(&str, u64)> = total.into_iter().collect();
    words.sort_unstable();
    let mut out = String::new();
    for (word, n) in words {
        let _ = writeln!(out, "{word}\t{n}");
    }
    std::fs::write("result", out).expect("write result");
}
