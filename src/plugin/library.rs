//! A job library as a server keeps it: stored and checked, but never
//! loaded into the server's own process. Whether it loads, and what kind
//! of job it holds, an executor process says ([`probe`]).

use std::path::{Path, PathBuf};

use super::loader::{JobKind, PluginHash};
use crate::exec::{Executor, Spec};

/// A stored job library: where it is, its hash, its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Library {
    hash: PluginHash,
    path: PathBuf,
    kind: JobKind,
}

impl Library {
    pub fn hash(&self) -> PluginHash {
        self.hash
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn kind(&self) -> JobKind {
        self.kind
    }

    /// The executor spec that runs this library's code on `lanes` lanes
    /// under `memory_limit` bytes (0: none).
    pub fn spec(&self, lanes: usize, memory_limit: u64) -> Spec {
        Spec {
            library: self.path.clone(),
            hash: self.hash,
            lanes,
            memory_limit,
        }
    }
}

/// Loads the library at `path` (whose bytes hash to `hash`) in a
/// short-lived executor process: its kind, or why it does not load (the
/// loader's error: not a library, a missing symbol, an ABI version this
/// build does not speak), or how the executor died loading it (a library
/// whose initialisers crash).
pub fn probe(path: &Path, hash: PluginHash) -> Result<Library, String> {
    let executor = Executor::new(Spec {
        library: path.to_owned(),
        hash,
        lanes: 1,
        memory_limit: 0,
    });
    let kind = executor.kind().map_err(|e| e.to_string())?;
    executor.close();
    Ok(Library {
        hash,
        path: path.to_owned(),
        kind,
    })
}
