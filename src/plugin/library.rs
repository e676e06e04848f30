//! A job library as a server keeps it: stored and checked, but never
//! loaded into the server's own process. Whether it loads, and what kind
//! of job it holds, an executor process says ([`probe`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::loader::{JobKind, PluginHash};
use crate::exec::{Executor, Runs, Spec};

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

    pub fn kind(&self) -> JobKind {
        self.kind
    }

    /// The executor that checked the library (or one a finished job
    /// handed on), still running, for the first caller that needs one.
    pub fn take_spare(&self) -> Option<Executor> {
        let spare = self.spare.lock().ok()?.take()?;
        SPARES.fetch_sub(1, Ordering::SeqCst);
        spare.is_running().then_some(spare)
    }

    /// Keeps `executor` as the spare, if there is none and it runs: a job
    /// that ended hands its executor to the next job of the library.
    pub fn put_spare(&self, executor: Executor) {
        if !executor.is_running() {
            return;
        }
        if let Ok(mut spare) = self.spare.lock() {
            if spare.is_none() && reserve_spare() {
                *spare = Some(executor);
            }
        }
    }

    /// The executor spec that runs this library's code so.
    pub fn spec(&self, runs: Runs) -> Spec {
        Spec {
            library: self.path.clone(),
            hash: self.hash,
            runs,
        }
    }
}

/// Loads the library at `path` (whose bytes hash to `hash`) in an
/// executor process run as the server runs them (`runs`): its kind, or why it does not load (the loader's error: not a
/// library, a missing symbol, an ABI version this build does not speak),
/// or how the executor died loading it (a library whose initialisers
/// crash). The executor stays, as the library's spare.
pub fn probe(path: &Path, hash: PluginHash, runs: Runs) -> Result<Library, String> {
    let executor = Executor::new(Spec {
        library: path.to_owned(),
        hash,
        runs,
    });
    let kind = executor.kind().map_err(|e| e.to_string())?;
    let spare = match reserve_spare() {
        true => Some(executor),
        false => None, // closed when dropped here
    };
    Ok(Library {
        hash,
        path: path.to_owned(),
        kind,
        spare: Mutex::new(spare),
    })
}

/// Most spare executors a server keeps, all libraries together: a
/// manager keeps a library for minutes after its jobs, and its spare
/// must not make each distinct library a process for that long.
const MAX_SPARES: usize = 2;

/// Spares kept now.
static SPARES: AtomicUsize = AtomicUsize::new(0);

/// Counts one more spare, if there is room.
fn reserve_spare() -> bool {
    SPARES
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            (n < MAX_SPARES).then_some(n + 1)
        })
        .is_ok()
}

impl Drop for Library {
    fn drop(&mut self) {
        if self.spare.get_mut().is_ok_and(|s| s.is_some()) {
            SPARES.fetch_sub(1, Ordering::SeqCst);
        }
    }
}
