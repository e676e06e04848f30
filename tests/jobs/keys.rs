// A keyed job of N distinct keys (its one argument): tasks of 1000 keys
// each, every key counted once. Its `done` is the default one, which
// prints `key<TAB>count` lines where `redmap run` runs.
use redmap::job::{Emit, Error, KeyedJob, TypedTasks};

struct Keys {
    n: u64,
}

impl KeyedJob for Keys {
    type Task = u64;
    type Key = u64;
    type Value = u64;
    fn load(&self) -> TypedTasks<u64> {
        Box::new((0..self.n.div_ceil(1000)).map(Ok))
    }
    fn map(&self, task: u64, out: &mut Emit<'_, Self>) -> Result<(), Error> {
        for key in task * 1000..((task + 1) * 1000).min(self.n) {
            out.emit(key, 1);
        }
        Ok(())
    }
    fn reduce(&self, acc: &mut u64, more: u64) {
        *acc += more;
    }
}

redmap::export_keyed_job!(Keys, |args| match args {
    [n] => Ok(Keys {
        n: n.parse().map_err(|_| Error::msg(format!("not a number: {n}")))?,
    }),
    _ => Err(Error::msg("usage: keys.rs -- N")),
});
