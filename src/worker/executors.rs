//! The worker's executors: one per installed job library that has run
//! code here, started on its first batch or reduce and closed when the
//! library is uninstalled (see [`crate::exec`]).

use std::collections::HashMap;
use std::sync::Arc;

use crate::exec::Executor;
use crate::plugin::{Library, PluginHash};

pub struct Executors {
    by_hash: HashMap<PluginHash, Arc<Executor>>,
    /// Lanes of each executor: the worker's map and reduce threads, each
    /// of which may call it at once.
    lanes: usize,
    /// Each executor's `--memory-limit`, in bytes.
    memory_limit: u64,
}

impl Executors {
    pub fn new(lanes: usize, memory_limit: u64) -> Executors {
        Executors {
            by_hash: HashMap::new(),
            lanes,
            memory_limit,
        }
    }

    /// The executor of `plugin` (its process starts on its first call).
    pub fn get(&mut self, library: &Library) -> Arc<Executor> {
        let (lanes, memory_limit) = (self.lanes, self.memory_limit);
        let executor = self.by_hash.entry(library.hash()).or_insert_with(|| {
            // The executor that checked the library, already running.
            let executor = library
                .take_spare()
                .unwrap_or_else(|| Executor::new(library.spec(lanes, memory_limit)));
            Arc::new(executor)
        });
        Arc::clone(executor)
    }

    /// Closes the executor of `hash` (`None`: every one): its process
    /// exits once the calls running on it end.
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

    /// Executor processes running now.
    pub fn running(&self) -> usize {
        self.by_hash.values().filter(|e| e.pid().is_some()).count()
    }

    pub fn memory_limit(&self) -> u64 {
        self.memory_limit
    }
}
