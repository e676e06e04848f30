//! The reduce side of keyed jobs, by key bytes: merging sorted runs
//! ([`merge`]) and reducing within a memory budget, spilling to disk
//! ([`spill`]). Runs are framed (src/job/run.rs), so none of this needs
//! the job's types; only combining the values of one key calls the job.

pub mod merge;
pub mod spill;

pub use spill::{Combine, ReduceError, SpillStats, SpillingReducer};
