//! TeraSort on redmap (issue 13's sort benchmark): sorts a file of
//! 100-byte records (gensort's ASCII format, made by
//! `benches/gensort.py`) by the record itself. Tasks are 4 MiB ranges of
//! the file, read by the mappers; each record is a key (without its
//! CR LF), counted, so a record met twice comes out once with 2.
//!
//!     redmap run --total-order --output-dir DIR benches/jobs/terasort.rs -- FILE
//!
//! With `--total-order` the part files, in name order, are the records
//! sorted; each line is `record<TAB>count`.

use std::os::unix::fs::FileExt;

use redmap::job::{Emit, Error, KeyedJob, TypedTasks};

const RECORD: u64 = 100;
const PER_TASK: u64 = 40_960 * RECORD;

struct TeraSort {
    path: String,
    len: u64,
}

impl KeyedJob for TeraSort {
    /// A range of the file: (offset, length), whole records.
    type Task = (u64, u64);
    type Key = String;
    type Value = u64;

    fn load(&self) -> TypedTasks<(u64, u64)> {
        let len = self.len;
        Box::new(
            (0..len.div_ceil(PER_TASK))
                .map(move |t| Ok((t * PER_TASK, PER_TASK.min(len - t * PER_TASK)))),
        )
    }

    fn map(&self, (offset, len): (u64, u64), out: &mut Emit<'_, Self>) -> Result<(), Error> {
        let file = std::fs::File::open(&self.path)?;
        let mut bytes = vec![0; len as usize];
        file.read_exact_at(&mut bytes, offset)?;
        for record in bytes.chunks(RECORD as usize) {
            let line = record.strip_suffix(b"\r\n").unwrap_or(record);
            let key = std::str::from_utf8(line).map_err(|_| Error::msg("a record is not ASCII"))?;
            out.emit(key.to_owned(), 1);
        }
        Ok(())
    }

    fn reduce(&self, count: &mut u64, more: u64) {
        *count += more;
    }

    fn count(&self) -> Option<u64> {
        Some(self.len.div_ceil(PER_TASK))
    }
}

redmap::export_keyed_job!(TeraSort, |args| match args {
    [path] => {
        let len = std::fs::metadata(path)
            .map_err(|e| Error::msg(format!("{path}: {e}")))?
            .len();
        if len % RECORD != 0 {
            return Err(Error::msg(format!("{path}: not whole 100-byte records")));
        }
        Ok(TeraSort {
            path: path.clone(),
            len,
        })
    }
    _ => Err(Error::msg("usage: terasort.rs -- FILE")),
});
