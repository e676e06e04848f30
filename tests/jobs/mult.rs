// Parameters (issue 12): tasks 1 to 10, each multiplied by the job's one
// argument, summed. A job built from its arguments in every process: the
// same answer embedded and on a cluster (550 for `-- 10`).
use redmap::job::{Error, Job, Tasks};

struct Mult {
    by: u64,
}

impl Mult {
    fn new(args: &[String]) -> Result<Mult, Error> {
        match args {
            [by] => Ok(Mult {
                by: by
                    .parse()
                    .map_err(|_| Error::msg(format!("not a number: {by}")))?,
            }),
            _ => Err(Error::msg("usage: mult.rs -- FACTOR")),
        }
    }
}

fn number(bytes: &[u8]) -> Result<u64, Error> {
    if bytes.is_empty() {
        return Ok(0);
    }
    Ok(std::str::from_utf8(bytes)?.parse()?)
}

impl Job for Mult {
    fn load(&self) -> Tasks {
        Box::new((1..=10u64).map(|n| Ok(n.to_string().into_bytes())))
    }
    fn map(&self, task: &[u8]) -> Result<Vec<u8>, Error> {
        Ok((number(task)? * self.by).to_string().into_bytes())
    }
    fn reduce(&self, acc: &[u8], cur: &[u8]) -> Result<Vec<u8>, Error> {
        Ok((number(acc)? + number(cur)?).to_string().into_bytes())
    }
    fn done(&self, _result: &[u8]) -> Result<(), Error> {
        Ok(())
    }
    fn count(&self) -> Option<u64> {
        Some(10)
    }
}

redmap::export_job!(Mult, Mult::new);
