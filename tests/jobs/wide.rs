// The batch call's limits on a cluster (issue 12): a byte-level job of
// version 3 (`export_job!(Type, constructor)`, so workers fold batches in
// one call into the job) whose every value is WIDE bytes, and a value
// folding n of them n times that: reduce concatenates. Task BIG (if given)
// maps to a value of BIG_LEN bytes. `done` writes how many values folded.
//
// Arguments: TASKS WIDE [BIG BIG_LEN].
use redmap::job::{Error, Job, Tasks};

struct Wide {
    tasks: u64,
    wide: usize,
    big: Option<(u64, usize)>,
}

impl Wide {
    fn new(args: &[String]) -> Result<Wide, Error> {
        let n = |s: &String| s.parse::<u64>().map_err(|_| Error::msg(format!("not a number: {s}")));
        match args {
            [tasks, wide] => Ok(Wide { tasks: n(tasks)?, wide: n(wide)? as usize, big: None }),
            [tasks, wide, big, len] => Ok(Wide {
                tasks: n(tasks)?,
                wide: n(wide)? as usize,
                big: Some((n(big)?, n(len)? as usize)),
            }),
            _ => Err(Error::msg("usage: wide.rs -- TASKS WIDE [BIG BIG_LEN]")),
        }
    }
}

impl Job for Wide {
    fn load(&self) -> Tasks {
        Box::new((1..=self.tasks).map(|n| Ok(n.to_string().into_bytes())))
    }
    fn map(&self, task: &[u8]) -> Result<Vec<u8>, Error> {
        let n: u64 = std::str::from_utf8(task)?.parse()?;
        match self.big {
            Some((big, len)) if big == n => Ok(vec![b'b'; len]),
            _ => Ok(vec![b'w'; self.wide]),
        }
    }
    fn reduce(&self, acc: &[u8], cur: &[u8]) -> Result<Vec<u8>, Error> {
        Ok([acc, cur].concat())
    }
    fn done(&self, result: &[u8]) -> Result<(), Error> {
        std::fs::write("result", (result.len() / self.wide).to_string())?;
        Ok(())
    }
    fn count(&self) -> Option<u64> {
        Some(self.tasks)
    }
}

redmap::export_job!(Wide, Wide::new);
