//! A benchmark job for stragglers: 2,000 tasks that each sleep 2 ms, or
//! twenty times longer (40 ms) on a worker started with SLOW_WORKER set.
//! `benches/e2e.py` runs it with and without backup tasks.

use redmap::job::{Error, Job, Tasks};

struct Straggler;

fn num(b: &[u8]) -> Result<u64, Error> {
    if b.is_empty() {
        return Ok(0);
    }
    Ok(std::str::from_utf8(b)?.parse()?)
}

impl Job for Straggler {
    fn load(&self) -> Tasks {
        Box::new((1..=2000u64).map(|n| Ok(n.to_string().into_bytes())))
    }

    fn map(&self, task: &[u8]) -> Result<Vec<u8>, Error> {
        let ms = if std::env::var_os("SLOW_WORKER").is_some() { 40 } else { 2 };
        std::thread::sleep(std::time::Duration::from_millis(ms));
        Ok(task.to_vec())
    }

    fn reduce(&self, acc: &[u8], current: &[u8]) -> Result<Vec<u8>, Error> {
        Ok((num(acc)? + num(current)?).to_string().into_bytes())
    }

    fn done(&self, result: &[u8]) -> Result<(), Error> {
        std::fs::write("result", result)?;
        Ok(())
    }

    fn count(&self) -> Option<u64> {
        Some(2000)
    }
}

redmap::export_job!(Straggler);
