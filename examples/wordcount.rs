//! Word count as a keyed job: `redmap run examples/wordcount.rs -- FILE`
//! prints one `word<TAB>count` line per word, in the words' order, where
//! `redmap run` runs (`--output counts.txt` writes them to a file).
//! `-- FILE --top N` prints the N most frequent instead.
use redmap::job::{input, Emit, Error, KeyedJob, TypedTasks};

struct WordCount {
    file: String,
    top: Option<usize>,
}

impl KeyedJob for WordCount {
    type Task = String;
    type Key = String;
    type Value = u64;

    fn load(&self) -> TypedTasks<String> {
        input::text_chunks(&self.file, 1 << 20) // tasks of about 1 MiB of lines
    }

    fn map(&self, lines: String, out: &mut Emit<'_, Self>) -> Result<(), Error> {
        for word in lines.split_whitespace() {
            out.emit_borrowed(word, 1);
        }
        Ok(())
    }

    fn reduce(&self, count: &mut u64, more: u64) {
        *count += more;
    }

    fn done(&self, mut counts: Vec<(String, u64)>) -> Result<(), Error> {
        if let Some(n) = self.top {
            counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            counts.truncate(n);
        }
        for (word, n) in counts {
            println!("{word}\t{n}");
        }
        Ok(())
    }
}

fn new(args: &[String]) -> Result<WordCount, Error> {
    match args {
        [file] => Ok(WordCount { file: file.clone(), top: None }),
        [file, flag, n] if flag == "--top" => Ok(WordCount {
            file: file.clone(),
            top: Some(n.parse().map_err(|_| Error::msg(format!("--top {n}: not a count")))?),
        }),
        _ => Err(Error::msg("usage: wordcount.rs -- FILE [--top N]")),
    }
}

redmap::export_keyed_job!(WordCount, new);
