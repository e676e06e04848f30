//! A benchmark job of many distinct keys (issue 13): PAIRS pairs whose keys
//! are 8-byte ids drawn from a seeded generator among KEYS, counted. Tasks
//! are ranges of 100,000 pairs, so the data is made by the mappers, not
//! read. `benches/manykeys.py` runs it against
//! `benches/native/manykeys.rs`, which draws the same ids.
//!
//!     redmap run -o counts.bin --format binary benches/jobs/manykeys.rs -- PAIRS KEYS

use redmap::job::{Emit, Error, KeyedJob, TypedTasks};

const PER_TASK: u64 = 100_000;

struct ManyKeys {
    pairs: u64,
    keys: u64,
}

/// The id of pair `i`: SplitMix64 of `i`, within `keys`. The native
/// program uses the same function.
fn id(i: u64, keys: u64) -> u64 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) % keys
}

impl KeyedJob for ManyKeys {
    /// The first pair of a task.
    type Task = u64;
    type Key = u64;
    type Value = u64;

    fn load(&self) -> TypedTasks<u64> {
        let pairs = self.pairs;
        Box::new((0..pairs.div_ceil(PER_TASK)).map(|t| Ok(t * PER_TASK)))
    }

    fn map(&self, first: u64, out: &mut Emit<'_, Self>) -> Result<(), Error> {
        for i in first..(first + PER_TASK).min(self.pairs) {
            out.emit(id(i, self.keys), 1);
        }
        Ok(())
    }

    fn reduce(&self, count: &mut u64, more: u64) {
        *count += more;
    }

    fn count(&self) -> Option<u64> {
        Some(self.pairs.div_ceil(PER_TASK))
    }
}

redmap::export_keyed_job!(ManyKeys, |args| {
    let n = |s: &String| s.parse::<u64>().map_err(|_| Error::msg(format!("not a count: {s}")));
    match args {
        [pairs, keys] if n(keys)? > 0 => Ok(ManyKeys { pairs: n(pairs)?, keys: n(keys)? }),
        _ => Err(Error::msg("usage: manykeys.rs -- PAIRS KEYS (KEYS > 0)")),
    }
});
