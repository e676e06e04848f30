// A keyed job whose constructor needs its argument to name a file that
// exists where the job is built: it shows where each process looks.
use redmap::job::{Emit, Error, KeyedJob, TypedTasks};

struct NeedsFile;

impl NeedsFile {
    fn new(args: &[String]) -> Result<NeedsFile, Error> {
        match args {
            [path] if std::path::Path::new(path).exists() => Ok(NeedsFile),
            [path] => Err(Error::msg(format!("no file {path}"))),
            _ => Err(Error::msg("usage: needs_file.rs -- PATH")),
        }
    }
}

impl KeyedJob for NeedsFile {
    type Task = u64;
    type Key = ();
    type Value = u64;
    fn load(&self) -> TypedTasks<u64> {
        Box::new((1..=10u64).map(Ok))
    }
    fn map(&self, n: u64, out: &mut Emit<'_, Self>) -> Result<(), Error> {
        out.emit((), n);
        Ok(())
    }
    fn reduce(&self, acc: &mut u64, more: u64) {
        *acc += more;
    }
}

redmap::export_keyed_job!(NeedsFile, NeedsFile::new);
