//! A job library as a server keeps it: stored and checked, but never
//! loaded into the server's own process. Whether it loads, and what kind
//! of job it holds, an executor process says ([`probe`]).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::loader::{JobKind, PluginHash};
use crate::exec::{Executor, Spec};

/// A stored job library: where it is, its hash, its kind, and the
/// executor that checked it, running and ready for the library's first
/// user (so a job's first batch does not wait for a process to start).
#[derive(Debug)]
pub struct Library {
    hash: PluginHash,
    path: PathBuf,
    kind: JobKind,
    spare: Mutex<Option<Executor>>,
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

    /// The executor that checked the library, still running, for the
    /// first caller that needs one (then `None`).
    pub fn take_spare(&self) -> Option<Executor> {
        self.spare.lock().ok()?.take()
    }

    /// Keeps `executor` as the spare, if there is none and it runs: a job
    /// that ended hands its executor to the next job of the library.
    pub fn put_spare(&self, executor: Executor) {
        if !executor.is_running() {
            return;
        }
        if let Ok(mut spare) = self.spare.lock() {
            if spare.is_none() {
                *spare = Some(executor);
            }
        }
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

/// Loads the library at `path` (whose bytes hash to `hash`) in an
/// executor process of `lanes` lanes and `memory_limit` bytes (the
/// server's): its kind, or why it does not load (the loader's error: not a
/// library, a missing symbol, an ABI version this build does not speak),
/// or how the executor died loading it (a library whose initialisers
/// crash). The executor stays, as the library's spare.
pub fn probe(
    path: &Path,
    hash: PluginHash,
    (lanes, memory_limit): (usize, u64),
) -> Result<Library, String> {
    let executor = Executor::new(Spec {
        library: path.to_owned(),
        hash,
        lanes,
        memory_limit,
    });
    let kind = executor.kind().map_err(|e| e.to_string())?;
    Ok(Library {
        hash,
        path: path.to_owned(),
        kind,
        spare: Mutex::new(Some(executor)),
    })
}
