//! Error wording used by the manager, now owned by [`crate::pipeline`]
//! (which also maps and folds batches); kept at this path for its callers.

pub use crate::pipeline::{cap_error, task_label, thousands, MAX_ERROR_BYTES};
