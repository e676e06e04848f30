//! The original's word count, written against the byte-level `Job`: counts
//! words in a text file and writes the most frequent ones. (The keyed
//! word count in examples/wordcount.rs is the model to copy; this one
//! keeps the hand-encoded contract exercised, by the tests and benches.)
//!
//! Arguments: `FILE [LINES [TOP]]`. Each task is a chunk of LINES lines of
//! FILE (default 1000). A word is a run of letters and digits, lowercased.
//! `done` writes the TOP (default 10) most frequent words to the file
//! `result`, one `COUNT WORD` line each, most frequent first, ties in
//! alphabetical order.
//!
//!     redmap run tests/jobs/wordcount_bytes.rs -- book.txt

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};

use redmap::job::{Error, Job, Tasks};

struct WordCount {
    file: String,
    lines_per_task: usize,
    top: usize,
}

type Counts = BTreeMap<String, u64>;

/// Counts travel as `word\tcount\n` lines, sorted by word.
fn encode(counts: &Counts) -> Vec<u8> {
    let mut out = String::new();
    for (word, n) in counts {
        out.push_str(word);
        out.push('\t');
        out.push_str(&n.to_string());
        out.push('\n');
    }
    out.into_bytes()
}

fn decode(bytes: &[u8]) -> Result<Counts, Error> {
    let mut counts = Counts::new();
    for line in std::str::from_utf8(bytes)?.lines() {
        let (word, n) = line
            .split_once('\t')
            .ok_or_else(|| Error::msg(format!("bad count line {line:?}")))?;
        *counts.entry(word.to_owned()).or_default() += n.parse::<u64>()?;
    }
    Ok(counts)
}

/// Yields chunks of lines, read lazily from the file.
struct Chunks {
    lines: std::io::Lines<BufReader<File>>,
    per_task: usize,
}

impl Iterator for Chunks {
    type Item = Result<Vec<u8>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut chunk = String::new();
        for _ in 0..self.per_task {
            match self.lines.next() {
                Some(Ok(line)) => {
                    chunk.push_str(&line);
                    chunk.push('\n');
                }
                Some(Err(e)) => return Some(Err(e.into())),
                None => break,
            }
        }
        (!chunk.is_empty()).then(|| Ok(chunk.into_bytes()))
    }
}

impl Job for WordCount {
    fn load(&self) -> Tasks {
        let path = &self.file;
        let opened = File::open(path).map_err(|e| Error::msg(format!("cannot open {path}: {e}")));
        match opened {
            Ok(file) => Box::new(Chunks {
                lines: BufReader::new(file).lines(),
                per_task: self.lines_per_task,
            }),
            Err(e) => Box::new(std::iter::once(Err(e))),
        }
    }

    fn map(&self, task: &[u8]) -> Result<Vec<u8>, Error> {
        let mut counts = Counts::new();
        let text = std::str::from_utf8(task)?;
        for word in text.split(|c: char| !c.is_alphanumeric()) {
            if !word.is_empty() {
                *counts.entry(word.to_lowercase()).or_default() += 1;
            }
        }
        Ok(encode(&counts))
    }

    fn reduce(&self, acc: &[u8], current: &[u8]) -> Result<Vec<u8>, Error> {
        let mut counts = decode(acc)?;
        for (word, n) in decode(current)? {
            *counts.entry(word).or_default() += n;
        }
        Ok(encode(&counts))
    }

    fn done(&self, result: &[u8]) -> Result<(), Error> {
        let mut ranked: Vec<(String, u64)> = decode(result)?.into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut out = String::new();
        for (word, n) in ranked.into_iter().take(self.top) {
            out.push_str(&format!("{n} {word}\n"));
        }
        std::fs::write("result", out)?;
        Ok(())
    }
}

impl WordCount {
    fn new(args: &[String]) -> Result<WordCount, Error> {
        let number = |arg: Option<&String>, default: usize| match arg {
            None => Ok(default),
            Some(n) => n
                .parse()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| Error::msg(format!("not a positive number: {n}"))),
        };
        match args {
            [file, rest @ ..] if rest.len() <= 2 => Ok(WordCount {
                file: file.clone(),
                lines_per_task: number(rest.first(), 1000)?,
                top: number(rest.get(1), 10)?,
            }),
            _ => Err(Error::msg("usage: wordcount_bytes.rs -- FILE [LINES [TOP]]")),
        }
    }
}

redmap::export_job!(WordCount, WordCount::new);
