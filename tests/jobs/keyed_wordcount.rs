// A keyed word count (issue 12): the lines of the file named by its one
// argument, counted by word; `done` writes one `word<TAB>count` line per
// word, in the keys' order, to `result` in the directory where it runs
// (`redmap run`'s).
use redmap::job::input::text_chunks;
use redmap::job::{Emit, Error, KeyedJob, TypedTasks};
use std::fmt::Write;

struct WordCount {
    corpus: String,
}

impl KeyedJob for WordCount {
    type Task = String;
    type Key = String;
    type Value = u64;
    fn load(&self) -> TypedTasks<String> {
        text_chunks(&self.corpus, 4096)
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
    fn done(&self, output: Vec<(String, u64)>) -> Result<(), Error> {
        let mut text = String::new();
        for (word, n) in output {
            let _ = writeln!(text, "{word}\t{n}");
        }
        std::fs::write("result", text)?;
        Ok(())
    }
}

redmap::export_keyed_job!(WordCount, |args| match args {
    [corpus] => Ok(WordCount {
        corpus: corpus.clone(),
    }),
    _ => Err(Error::msg("usage: keyed_wordcount.rs -- CORPUS")),
});
