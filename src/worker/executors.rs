//! The worker's executors: one per installed job library that has run
//! code here. The one that checked the library when it was installed is
//! taken by its first batch or reduce; each is closed when its library is
//! uninstalled (see [`crate::exec`]).

use std::collections::HashMap;
use std::sync::Arc;

use crate::exec::Executor;
use crate::exec::Runs;
use crate::plugin::{Library, PluginHash};

pub struct Executors {
    by_hash: HashMap<PluginHash, Arc<Executor>>,
    /// How each runs: a lane per map and reduce thread (each may call it
    /// at once), the worker's `--memory-limit`, started again when it dies.
    runs: Runs,
}

impl Executors {
    pub fn new(runs: Runs) -> Executors {
        Executors {
            by_hash: HashMap::new(),
            runs,
        }
    }

    /// The executor of `library`: the one that checked it, or a new one
    /// (whose process starts on its first call).
    pub fn get(&mut self, library: &Library) -> Arc<Executor> {
        let runs = self.runs;
        let executor = self.by_hash.entry(library.hash()).or_insert_with(|| {
            let executor = library
                .take_spare()
                .unwrap_or_else(|| Executor::new(library.spec(runs)));
            Arc::new(executor)
        });
        Arc::clone(executor)
    }

    /// Closes the executor of `hash` (`None`: every one): its process
    /// exits once its lanes close (a call still running on it fails).
    pub fn close(&mut self, hash: Option<PluginHash>) {
        let gone: Vec<PluginHash> = self
            .by_hash
            .keys()
            .filter(|h| hash.is_none_or(|hash| hash == **h))
            .copied()
            .collect();
        for h in gone {
            if let Some(executor) = self.by_hash.remove(&h) {
                executor.close();
            }
        }
    }

    pub fn memory_limit(&self) -> u64 {
        self.runs.memory_limit
    }
}
