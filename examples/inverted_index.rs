//! An inverted index: for every word of the given text files, the sorted
//! list of the files it appears in.
//!
//!     redmap run examples/inverted_index.rs -- a.txt b.txt c.txt
//!
//! prints one `word<TAB>[a.txt, c.txt]` line per word. The files are read
//! where `load` runs (this process, or the manager), so on a cluster give
//! paths the manager can read.
use redmap::job::{input, Emit, Error, KeyedJob, TypedTasks};

struct Index {
    files: Vec<String>,
}

impl KeyedJob for Index {
    /// A chunk of whole lines of one file, with the file's name.
    type Task = (String, String);
    type Key = String;
    /// The files a word is in: sorted, each once.
    type Value = Vec<String>;

    fn load(&self) -> TypedTasks<(String, String)> {
        let files = self.files.clone();
        Box::new(files.into_iter().flat_map(|file| {
            let name = file.clone();
            input::text_chunks(file, 1 << 20).map(move |chunk| Ok((name.clone(), chunk?)))
        }))
    }

    fn map(&self, (file, lines): (String, String), out: &mut Emit<'_, Self>) -> Result<(), Error> {
        for word in lines.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
            out.emit(word.to_lowercase(), vec![file.clone()]);
        }
        Ok(())
    }

    /// Merges two sorted lists of files, keeping each file once.
    fn reduce(&self, files: &mut Vec<String>, more: Vec<String>) {
        files.extend(more);
        files.sort_unstable();
        files.dedup();
    }
}

fn new(args: &[String]) -> Result<Index, Error> {
    if args.is_empty() {
        return Err(Error::msg("usage: inverted_index.rs -- FILE..."));
    }
    Ok(Index { files: args.to_vec() })
}

redmap::export_keyed_job!(Index, new);
