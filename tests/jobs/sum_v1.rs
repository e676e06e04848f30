// A byte-level job exported the original way (`export_job!(EXPR)`, job ABI
// version 1): it takes no arguments.
use redmap::job::{Error, Job, Tasks};

struct Sum;

impl Job for Sum {
    fn load(&self) -> Tasks {
        Box::new((1..=10u64).map(|n| Ok(n.to_string().into_bytes())))
    }
    fn map(&self, task: &[u8]) -> Result<Vec<u8>, Error> {
        Ok(task.to_vec())
    }
    fn reduce(&self, acc: &[u8], cur: &[u8]) -> Result<Vec<u8>, Error> {
        let a: u64 = if acc.is_empty() { 0 } else { std::str::from_utf8(acc)?.parse()? };
        let c: u64 = std::str::from_utf8(cur)?.parse()?;
        Ok((a + c).to_string().into_bytes())
    }
    fn done(&self, _result: &[u8]) -> Result<(), Error> {
        Ok(())
    }
}

redmap::export_job!(Sum);
