//! Counters whose correctness rests on invariants kept elsewhere (a slot
//! freed once per batch sent, a partial folded once per partial handed
//! over): a break must be seen, never wrap. A release build would wrap a
//! `usize` below zero into a slot that is never free again, and a job that
//! hangs without a word.

use std::fmt::Display;
use std::ops::Sub;

use log::error;

/// Subtracts `n` from `counter`, which `what` names. Below zero is a
/// broken invariant: logged as an error, and the counter stops at zero.
pub fn decrement<T>(counter: &mut T, n: T, what: &str)
where
    T: Copy + Default + PartialOrd + Sub<Output = T> + Display,
{
    if *counter >= n {
        *counter = *counter - n;
    } else {
        error!("invariant broken: {what} would go below zero ({counter} - {n})");
        *counter = T::default();
    }
}

#[cfg(test)]
mod tests {
    use super::decrement;

    #[test]
    fn a_counter_goes_down_to_zero_and_no_further() {
        let mut n: usize = 2;
        decrement(&mut n, 1, "slots");
        assert_eq!(n, 1);
        decrement(&mut n, 1, "slots");
        assert_eq!(n, 0);
        decrement(&mut n, 1, "slots");
        assert_eq!(n, 0, "stopped at zero, not wrapped");
        let mut big: u64 = 10;
        decrement(&mut big, 11, "tasks");
        assert_eq!(big, 0);
    }
}
