//! The limit the many-keys job is measured against: the same ids
//! (benches/jobs/manykeys.rs) counted in one std HashMap by one thread,
//! then sorted; prints the number of distinct keys and the sum of the
//! counts. Built by benches/manykeys.py with `rustc -O`.
//!
//!     manykeys PAIRS KEYS

use std::collections::HashMap;

fn id(i: u64, keys: u64) -> u64 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) % keys
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("usage: manykeys PAIRS KEYS"))
        .collect();
    let [pairs, keys] = args[..] else {
        panic!("usage: manykeys PAIRS KEYS");
    };
    let mut counts: HashMap<u64, u64> = HashMap::new();
    for i in 0..pairs {
        *counts.entry(id(i, keys)).or_insert(0) += 1;
    }
    let mut sorted: Vec<(u64, u64)> = counts.into_iter().collect();
    sorted.sort_unstable();
    let total: u64 = sorted.iter().map(|(_, n)| n).sum();
    println!("{} {}", sorted.len(), total);
}
