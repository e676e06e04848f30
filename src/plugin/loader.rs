//! Loading job libraries with libloading, and calling them through the C ABI.
//!
//! A [`Plugin`] owns its `Library` and is never unloaded: the job may have
//! started threads or registered thread-local destructors that point into
//! the library, and `dlclose` under them would crash the process. Plugins
//! are identified by the SHA-256 of the library file, so the same bytes
//! opened twice (under any path) are one plugin, loaded once.
//!
//! Nothing about the library is trusted before it is checked: the entry
//! symbol must exist, its table's ABI version must be in the range this
//! build speaks, and every required entry must be non-null, before any job
//! code is called. (Loading itself runs the library's initialisers: only
//! load libraries you would run.)

use std::collections::HashMap;
use std::ffi::c_void;
use std::fmt;
use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use libloading::Library;
use sha2::{Digest, Sha256};

use crate::job::abi::{
    self, Buf, CountFn, DoneFn, FreeFn, JobEntry, LoadCloseFn, LoadNextFn, LoadOpenFn, MapFn,
    ReduceFn,
};

/// The SHA-256 of a plugin's bytes: its identity everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PluginHash(pub [u8; 32]);

impl PluginHash {
    pub fn of(bytes: &[u8]) -> PluginHash {
        PluginHash(Sha256::digest(bytes).into())
    }

    /// The first 16 hex digits, for names and logs.
    pub fn short(&self) -> String {
        self.to_string()[..16].to_owned()
    }
}

impl fmt::Display for PluginHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

#[derive(Debug)]
pub enum LoadError {
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    NotALibrary {
        path: PathBuf,
        reason: String,
    },
    MissingSymbol {
        path: PathBuf,
        symbol: &'static str,
    },
    NullEntry {
        path: PathBuf,
    },
    AbiVersion {
        path: PathBuf,
        found: u32,
    },
    Incomplete {
        path: PathBuf,
        what: &'static str,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Io { path, source } => write!(f, "cannot read {}: {source}", path.display()),
            LoadError::NotALibrary { path, reason } => write!(
                f,
                "{} is not a loadable shared library: {reason}",
                path.display()
            ),
            LoadError::MissingSymbol { path, symbol } => write!(
                f,
                "{} is not a redmap job: it does not export the symbol `{symbol}` \
                 (a Rust job needs `redmap::export_job!(…)`)",
                path.display()
            ),
            LoadError::NullEntry { path } => {
                write!(f, "{}: `{}` returned a null table", path.display(), abi::ENTRY_SYMBOL)
            }
            LoadError::AbiVersion { path, found } => write!(
                f,
                "{} was built for job ABI version {found}, but this redmap loads versions {} to {}; \
                 rebuild the job against this redmap",
                path.display(),
                abi::MIN_ABI_VERSION,
                abi::ABI_VERSION
            ),
            LoadError::Incomplete { path, what } => {
                write!(f, "{}: the job table lacks `{what}`", path.display())
            }
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A failed call into the job: its error message, or its panic message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    pub panicked: bool,
    pub message: String,
}

impl CallError {
    /// The placeholder of a task that was not run (see `FailedIn::Deferred`).
    pub fn deferred() -> CallError {
        CallError {
            panicked: false,
            message: String::new(),
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CallError {}

/// The checked, non-null entry points of one job library.
struct Entries {
    load_open: LoadOpenFn,
    load_next: LoadNextFn,
    load_close: LoadCloseFn,
    map: MapFn,
    reduce: ReduceFn,
    done: DoneFn,
    count: Option<CountFn>,
    free: FreeFn,
}

pub struct Plugin {
    _library: ManuallyDrop<Library>,
    entries: Entries,
    hash: PluginHash,
    path: PathBuf,
}

// SAFETY: the ABI requires `map`, `reduce` and `free` to be callable from any
// thread at once, and the host calls the `load_*` entries from one thread at
// a time (a `Tasks` is not `Sync`). The table itself is immutable.
unsafe impl Send for Plugin {}
unsafe impl Sync for Plugin {}

fn loaded() -> &'static Mutex<HashMap<PluginHash, Arc<Plugin>>> {
    static LOADED: OnceLock<Mutex<HashMap<PluginHash, Arc<Plugin>>>> = OnceLock::new();
    LOADED.get_or_init(Default::default)
}

impl Plugin {
    /// Opens the job library at `path`, or returns the plugin already
    /// loaded from the same bytes.
    pub fn open(path: &Path) -> Result<Arc<Plugin>, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Io {
            path: path.to_owned(),
            source,
        })?;
        Plugin::open_hashed(path, PluginHash::of(&bytes))
    }

    /// Like [`Plugin::open`], for a file whose hash the caller has just
    /// checked (it wrote the bytes): no second read and hash.
    pub fn open_hashed(path: &Path, hash: PluginHash) -> Result<Arc<Plugin>, LoadError> {
        let mut table = loaded().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(plugin) = table.get(&hash) {
            return Ok(Arc::clone(plugin));
        }
        let plugin = Arc::new(Plugin::load(path, hash)?);
        table.insert(hash, Arc::clone(&plugin));
        Ok(plugin)
    }

    fn load(path: &Path, hash: PluginHash) -> Result<Plugin, LoadError> {
        // An absolute path keeps dlopen from searching the library path.
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        // SAFETY: loading runs the library's initialisers; that is inherent
        // to running a job, which the user asked for.
        let library = unsafe { Library::new(&path) }.map_err(|e| LoadError::NotALibrary {
            path: path.clone(),
            // libloading says only "dlopen failed"; dlerror's text (which
            // names the missing dependency or symbol) is its source.
            reason: match std::error::Error::source(&e) {
                Some(cause) => format!("{e}: {cause}"),
                None => e.to_string(),
            },
        })?;
        // SAFETY: the symbol's type is fixed by the ABI.
        let entry_fn = unsafe {
            library.get::<unsafe extern "C" fn() -> *const JobEntry>(abi::ENTRY_SYMBOL.as_bytes())
        }
        .map_err(|_| LoadError::MissingSymbol {
            path: path.clone(),
            symbol: abi::ENTRY_SYMBOL,
        })?;
        // SAFETY: calling the entry is the first thing the ABI allows.
        let table = unsafe { entry_fn() };
        if table.is_null() {
            return Err(LoadError::NullEntry { path });
        }
        // Until `struct_size` says the whole table is there, only its first
        // two fields may be read, one at a time, through the raw pointer: a
        // `&JobEntry` to a shorter table would be undefined behaviour
        // (the compiler may read any of its bytes). Unaligned reads, as a
        // C compiler need not align a hand-made table of two `uint32_t`s
        // for pointers.
        // SAFETY: `abi_version` is the first field in every version, so it is
        // readable whatever the rest of the table looks like; `addr_of!`
        // makes no reference.
        let version = unsafe { std::ptr::addr_of!((*table).abi_version).read_unaligned() };
        if !(abi::MIN_ABI_VERSION..=abi::ABI_VERSION).contains(&version) {
            return Err(LoadError::AbiVersion {
                path,
                found: version,
            });
        }
        // SAFETY: every version we speak has `struct_size` second, right
        // after `abi_version`; as above, no reference is made.
        let size = unsafe { std::ptr::addr_of!((*table).struct_size).read_unaligned() };
        if (size as usize) < std::mem::size_of::<JobEntry>() {
            return Err(LoadError::Incomplete {
                path,
                what: "struct_size: the table is shorter than version 1",
            });
        }
        if !table.is_aligned() {
            return Err(LoadError::Incomplete {
                path,
                what: "alignment: the table is not aligned for its function pointers",
            });
        }
        // SAFETY: the table is aligned and, by `struct_size`, holds at
        // least the v1 layout, which a version we speak guarantees.
        let table: &JobEntry = unsafe { &*table };
        fn need<T>(f: Option<T>, path: &Path, what: &'static str) -> Result<T, LoadError> {
            f.ok_or_else(|| LoadError::Incomplete {
                path: path.to_owned(),
                what,
            })
        }
        let entries = Entries {
            load_open: need(table.load_open, &path, "load_open")?,
            load_next: need(table.load_next, &path, "load_next")?,
            load_close: need(table.load_close, &path, "load_close")?,
            map: need(table.map, &path, "map")?,
            reduce: need(table.reduce, &path, "reduce")?,
            done: need(table.done, &path, "done")?,
            count: table.count,
            free: need(table.free, &path, "free")?,
        };
        Ok(Plugin {
            _library: ManuallyDrop::new(library),
            entries,
            hash,
            path,
        })
    }

    pub fn hash(&self) -> PluginHash {
        self.hash
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Copies a buffer the library returned and gives it back to the
    /// library's allocator.
    fn take(&self, buf: Buf) -> Vec<u8> {
        self.lend(buf, <[u8]>::to_vec)
    }

    /// Lends the bytes of `buf` to `f`, then frees it (a panic in `f`
    /// leaks it).
    fn lend<R>(&self, buf: Buf, f: impl FnOnce(&[u8]) -> R) -> R {
        let bytes = if buf.ptr.is_null() || buf.len == 0 {
            &[][..]
        } else {
            // SAFETY: the ABI says `ptr` points to `len` bytes owned by the
            // library, valid until they are freed below.
            unsafe { std::slice::from_raw_parts(buf.ptr, buf.len) }
        };
        let out = f(bytes);
        if !buf.ptr.is_null() {
            // SAFETY: the buffer came from this library and is freed once.
            unsafe { (self.entries.free)(buf) };
        }
        out
    }

    fn outcome(&self, status: i32, buf: Buf) -> Result<Vec<u8>, CallError> {
        match status {
            abi::STATUS_OK => Ok(self.take(buf)),
            _ => Err(self.failure(status, buf)),
        }
    }

    /// The error of a call that returned `status`, not `STATUS_OK`, with
    /// its message in `buf`.
    fn failure(&self, status: i32, buf: Buf) -> CallError {
        let message = self.lend(buf, |b| String::from_utf8_lossy(b).into_owned());
        match status {
            abi::STATUS_ERROR => CallError {
                panicked: false,
                message,
            },
            abi::STATUS_PANIC => CallError {
                panicked: true,
                message,
            },
            other => CallError {
                panicked: false,
                message: format!("the job returned an unknown status {other}"),
            },
        }
    }

    pub fn map(&self, task: &[u8]) -> Result<Vec<u8>, CallError> {
        let mut out = Buf::EMPTY;
        // SAFETY: pointers are valid for the call; `out` is ours to fill.
        let status = unsafe { (self.entries.map)(task.as_ptr(), task.len(), &mut out) };
        self.outcome(status, out)
    }

    pub fn reduce(&self, acc: &[u8], current: &[u8]) -> Result<Vec<u8>, CallError> {
        let mut out = Buf::EMPTY;
        // SAFETY: as for `map`.
        let status = unsafe {
            (self.entries.reduce)(
                acc.as_ptr(),
                acc.len(),
                current.as_ptr(),
                current.len(),
                &mut out,
            )
        };
        self.outcome(status, out)
    }

    pub fn done(&self, result: &[u8]) -> Result<(), CallError> {
        let mut err = Buf::EMPTY;
        // SAFETY: as for `map`.
        let status = unsafe { (self.entries.done)(result.as_ptr(), result.len(), &mut err) };
        self.outcome(status, err).map(drop)
    }

    /// The job's estimate of its number of tasks, if it gives one.
    pub fn count(&self) -> Option<u64> {
        let count = self.entries.count?;
        let mut n = 0u64;
        // SAFETY: `n` is valid for the call.
        (unsafe { count(&mut n) } == abi::STATUS_OK).then_some(n)
    }

    /// Starts the job's `load`: an iterator over its tasks.
    pub fn tasks(self: &Arc<Self>) -> Result<TaskIter, CallError> {
        let mut handle: *mut c_void = std::ptr::null_mut();
        let mut err = Buf::EMPTY;
        // SAFETY: both out-pointers are valid for the call.
        let status = unsafe { (self.entries.load_open)(&mut handle, &mut err) };
        self.outcome(status, err)?;
        Ok(TaskIter {
            plugin: Arc::clone(self),
            handle,
            finished: false,
        })
    }
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Plugin({} {})", self.hash.short(), self.path.display())
    }
}

/// A job's tasks, pulled one at a time from its `load`. An `Err` item is a
/// load error; the iterator goes on after it, except after a panic.
pub struct TaskIter {
    plugin: Arc<Plugin>,
    handle: *mut c_void,
    finished: bool,
}

// SAFETY: the handle is only used by whoever owns the iterator, one call at a time.
unsafe impl Send for TaskIter {}

impl TaskIter {
    /// The next item, as [`Iterator::next`] gives it, but a task is lent to
    /// `f` straight from the job's buffer instead of copied into a `Vec` of
    /// its own: one allocation less per task for a caller that copies the
    /// task anyway (into a batch). `None` at the end.
    pub fn next_with<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Option<Result<R, CallError>> {
        if self.finished {
            return None;
        }
        let mut out = Buf::EMPTY;
        // SAFETY: the handle came from `load_open` and is not closed yet.
        let status = unsafe { (self.plugin.entries.load_next)(self.handle, &mut out) };
        if status == abi::STATUS_OK {
            return Some(Ok(self.plugin.lend(out, f)));
        }
        if status == abi::STATUS_END {
            self.plugin.take(out);
            self.finished = true;
            return None;
        }
        let error = self.plugin.failure(status, out);
        if error.panicked {
            // The iterator's state is unknown after a panic: stop here.
            self.finished = true;
        }
        Some(Err(error))
    }
}

impl Iterator for TaskIter {
    type Item = Result<Vec<u8>, CallError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_with(<[u8]>::to_vec)
    }
}

impl Drop for TaskIter {
    fn drop(&mut self) {
        // SAFETY: closes the handle from `load_open`, once.
        unsafe { (self.plugin.entries.load_close)(self.handle) };
    }
}
