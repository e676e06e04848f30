//! Mapping and folding a batch, and error wording, now owned by
//! [`crate::pipeline`]; kept at this path for their callers.

pub use crate::pipeline::{
    cap_error, map_batch as fold_batch, task_label, thousands, FailedIn, ValueLimit,
    MAX_ERROR_BYTES,
};
