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
use crate::job::batch::{FailedIn, Folded, TaskFailed, ValueLimit};
use crate::proto::msg::JobArgs;

/// The SHA-256 of a plugin's bytes: its identity everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PluginHash(pub [u8; 32]);

impl PluginHash {
    pub fn of(bytes: &[u8]) -> PluginHash {
        PluginHash(Sha256::digest(bytes).into())
    }

    /// Reads the 64 hex digits [`fmt::Display`] writes.
    pub fn parse(hex: &str) -> Option<PluginHash> {
        if hex.len() != 64 || !hex.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(PluginHash(out))
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
                write!(
                    f,
                    "{}: `{}` returned a null table",
                    path.display(),
                    abi::ENTRY_SYMBOL
                )
            }
            LoadError::AbiVersion { path, found } => write!(
                f,
                "{} was built for job ABI version {found}, but this redmap loads versions {} to {} \
                 (not {}); \
                 {}",
                path.display(),
                abi::MIN_ABI_VERSION,
                abi::ABI_VERSION,
                abi::WITHDRAWN_ABI_VERSION,
                if *found > abi::ABI_VERSION {
                    "it is newer than this redmap: upgrade redmap, or build the job with this one"
                } else if *found == abi::WITHDRAWN_ABI_VERSION {
                    "version 2 was the layout of keyed jobs on development builds, before job \
                     arguments, and no release loads it: rebuild the job against this redmap"
                } else {
                    "rebuild the job against this redmap"
                }
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

/// The host's side of a folded batch's failures.
impl crate::job::batch::Failure for CallError {
    fn new(panicked: bool, message: String) -> CallError {
        CallError { panicked, message }
    }
    fn panicked(&self) -> bool {
        self.panicked
    }
    fn message(&self) -> &str {
        &self.message
    }
}

/// What kind of job a library holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// The byte-level `Job` (every version-1 library).
    Bytes,
    /// A `KeyedJob`: mapped by batches, reduced by key.
    Keyed,
}

/// The keyed entries of a version-3 keyed library, all present.
struct KeyedEntries {
    map_batch: abi::MapBatchFn,
    reducer_new: abi::ReducerNewFn,
    reducer_add: abi::ReducerAddFn,
    reducer_finish: abi::ReducerFinishFn,
    reducer_free: abi::ReducerFreeFn,
    format: abi::FormatFn,
}

/// How a library's jobs are built and called.
enum Table {
    /// Version 1: the job is built once, with no arguments, by the library.
    V1 {
        load_open: LoadOpenFn,
        done: DoneFn,
        count: Option<CountFn>,
        map: MapFn,
        reduce: ReduceFn,
    },
    /// Version 3: each instance is built from its job's arguments.
    V3 {
        new: abi::NewFn,
        drop: abi::DropFn,
        load_open: abi::InstLoadOpenFn,
        count: Option<abi::InstCountFn>,
        done: abi::InstDoneFn,
        /// Present for a byte-level job.
        bytes: Option<(abi::InstMapFn, abi::InstReduceFn)>,
        /// Present for a keyed job.
        keyed: Option<KeyedEntries>,
        /// A byte-level job's batch call, if it has one.
        fold: Option<abi::FoldBatchFn>,
    },
}

/// The checked, non-null entry points of one job library.
struct Entries {
    load_next: LoadNextFn,
    /// Many items per call (version 3, optional).
    load_batch: Option<abi::LoadBatchFn>,
    load_close: LoadCloseFn,
    free: FreeFn,
    table: Table,
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
            library.get::<unsafe extern "C" fn() -> *const abi::JobEntryV1>(
                abi::ENTRY_SYMBOL.as_bytes(),
            )
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
        // reference to a shorter table would be undefined behaviour
        // (the compiler may read any of its bytes). Unaligned reads, as a
        // C compiler need not align a hand-made table of two `uint32_t`s
        // for pointers.
        // SAFETY: `abi_version` is the first field in every version, so it is
        // readable whatever the rest of the table looks like; `addr_of!`
        // makes no reference.
        let version = unsafe { std::ptr::addr_of!((*table).abi_version).read_unaligned() };
        if !(abi::MIN_ABI_VERSION..=abi::ABI_VERSION).contains(&version)
            || version == abi::WITHDRAWN_ABI_VERSION
        {
            return Err(LoadError::AbiVersion {
                path,
                found: version,
            });
        }
        // SAFETY: every version we speak has `struct_size` second, right
        // after `abi_version`; as above, no reference is made.
        let size = unsafe { std::ptr::addr_of!((*table).struct_size).read_unaligned() };
        if (size as usize) < abi::V1_ENTRY_SIZE {
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
        // least the v1 layout, which every version we speak starts with.
        let v1: &abi::JobEntryV1 = unsafe { &*table };
        fn need<T>(f: Option<T>, path: &Path, what: &'static str) -> Result<T, LoadError> {
            f.ok_or_else(|| LoadError::Incomplete {
                path: path.to_owned(),
                what,
            })
        }
        // Fields are appended, version by version, and a table has those
        // its `struct_size` covers: a version-3 table as short as version
        // 1's (a C job that fills in the v1 struct) is a byte-level job.
        // Version 3's optional batch calls were appended last: a table that
        // ends before them (or before the second) simply lacks them.
        let size = size as usize;
        let v3_min = std::mem::offset_of!(JobEntry, fold_batch);
        if version >= 3 && size > abi::V1_ENTRY_SIZE && size < v3_min {
            // Neither version 1's table nor version 3's: a C job that mixed
            // the two structs. Reading it as either could misread `kind`.
            return Err(LoadError::Incomplete {
                path,
                what: "struct_size: between version 1's and version 3's",
            });
        }
        let v3 = table as *const JobEntry;
        /// Field `$f` of the version-3 table, read through the raw pointer
        /// (no reference to a table that may be shorter than `JobEntry`).
        macro_rules! field {
            ($f:ident) => {
                // SAFETY: the caller checked that `struct_size` covers the
                // field; the table is aligned (checked above); `addr_of!`
                // makes no reference.
                unsafe { std::ptr::addr_of!((*v3).$f).read() }
            };
        }
        let covers = |offset: usize, len: usize| size >= offset + len;
        let ptr = std::mem::size_of::<usize>();
        let (table, load_batch) = if version >= 3 && size >= v3_min {
            let (bytes, keyed) = match field!(kind) {
                abi::KIND_BYTES => (
                    Some((
                        need(field!(map_v3), &path, "map_v3")?,
                        need(field!(reduce_v3), &path, "reduce_v3")?,
                    )),
                    None,
                ),
                abi::KIND_KEYED => (
                    None,
                    Some(KeyedEntries {
                        map_batch: need(field!(map_batch), &path, "map_batch")?,
                        reducer_new: need(field!(reducer_new), &path, "reducer_new")?,
                        reducer_add: need(field!(reducer_add), &path, "reducer_add")?,
                        reducer_finish: need(field!(reducer_finish), &path, "reducer_finish")?,
                        reducer_free: need(field!(reducer_free), &path, "reducer_free")?,
                        format: need(field!(format), &path, "format")?,
                    }),
                ),
                _ => {
                    return Err(LoadError::Incomplete {
                        path,
                        what: "kind: neither a byte-level nor a keyed job",
                    })
                }
            };
            let fold = match covers(std::mem::offset_of!(JobEntry, fold_batch), ptr) {
                true if bytes.is_some() => field!(fold_batch),
                _ => None,
            };
            let load_batch = match covers(std::mem::offset_of!(JobEntry, load_batch), ptr) {
                true => field!(load_batch),
                false => None,
            };
            let table = Table::V3 {
                new: need(field!(instance_new), &path, "instance_new")?,
                drop: need(field!(instance_drop), &path, "instance_drop")?,
                load_open: need(field!(load_open_v3), &path, "load_open_v3")?,
                count: field!(count_v3),
                done: need(field!(done_v3), &path, "done_v3")?,
                fold,
                bytes,
                keyed,
            };
            (table, load_batch)
        } else {
            let table = Table::V1 {
                load_open: need(v1.load_open, &path, "load_open")?,
                map: need(v1.map, &path, "map")?,
                reduce: need(v1.reduce, &path, "reduce")?,
                done: need(v1.done, &path, "done")?,
                count: v1.count,
            };
            (table, None)
        };
        let entries = Entries {
            load_batch,
            load_next: need(v1.load_next, &path, "load_next")?,
            load_close: need(v1.load_close, &path, "load_close")?,
            free: need(v1.free, &path, "free")?,
            table,
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

    /// What kind of job this library holds.
    pub fn kind(&self) -> JobKind {
        match &self.entries.table {
            Table::V3 { keyed: Some(_), .. } => JobKind::Keyed,
            _ => JobKind::Bytes,
        }
    }

    /// Builds the job from its arguments (the job's constructor runs
    /// here): what every other call goes through. A version-1 library has
    /// one job, built with no arguments; given some, it is refused.
    pub fn instance(self: &Arc<Self>, args: &JobArgs) -> Result<Arc<Instance>, CallError> {
        let handle = match &self.entries.table {
            Table::V1 { .. } if args.is_empty() => std::ptr::null_mut(),
            Table::V1 { .. } => {
                return Err(CallError {
                    panicked: false,
                    message: "this job takes no arguments: it is exported with \
                              `export_job!(JOB)` (job ABI version 1); export it with \
                              `export_job!(Type, constructor)` to take them"
                        .into(),
                })
            }
            Table::V3 { new, .. } => {
                let list = args.encoded();
                let mut handle: *mut c_void = std::ptr::null_mut();
                let mut err = Buf::EMPTY;
                // SAFETY: the list is valid for the call; both out-pointers
                // are ours to fill.
                let status = unsafe { new(list.as_ptr(), list.len(), &mut handle, &mut err) };
                self.outcome(status, err)?;
                if handle.is_null() {
                    return Err(CallError {
                        panicked: false,
                        message: "the job's `new` succeeded but gave no instance".into(),
                    });
                }
                handle
            }
        };
        Ok(Arc::new(Instance {
            plugin: Arc::clone(self),
            handle,
            args: args.clone(),
        }))
    }
}

/// One job built from its arguments in this process (or, for a version-1
/// library, its one job): what a run calls. Dropped, it frees the
/// instance in the library.
pub struct Instance {
    plugin: Arc<Plugin>,
    /// Null for a version-1 library.
    handle: *mut c_void,
    args: JobArgs,
}

// SAFETY: the ABI requires an instance's entries to be callable from any
// thread at once (a job is `Sync`), except `load_*` and a reducer's, which
// the host calls from one thread at a time; the handle is freed once, in
// `drop`, when no call can be running (every caller holds an `Arc`).
unsafe impl Send for Instance {}
unsafe impl Sync for Instance {}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Table::V3 { drop, .. } = &self.plugin.entries.table {
            // SAFETY: the handle `new` made, freed once, with no call running.
            unsafe { drop(self.handle) };
        }
    }
}

impl Instance {
    /// The arguments the job was built with.
    pub fn args(&self) -> &JobArgs {
        &self.args
    }

    pub fn kind(&self) -> JobKind {
        self.plugin.kind()
    }

    fn not_bytes() -> CallError {
        CallError {
            panicked: false,
            message: "a keyed job is mapped and reduced by batches".into(),
        }
    }

    pub fn map(&self, task: &[u8]) -> Result<Vec<u8>, CallError> {
        let p = &self.plugin;
        let mut out = Buf::EMPTY;
        let (ptr, len) = (task.as_ptr(), task.len());
        // SAFETY: pointers are valid for the call; `out` is ours to fill;
        // the handle is live while `self` is.
        let status = unsafe {
            match &p.entries.table {
                Table::V1 { map, .. } => map(ptr, len, &mut out),
                Table::V3 {
                    bytes: Some((map, _)),
                    ..
                } => map(self.handle, ptr, len, &mut out),
                Table::V3 { .. } => return Err(Instance::not_bytes()),
            }
        };
        p.outcome(status, out)
    }

    pub fn reduce(&self, acc: &[u8], current: &[u8]) -> Result<Vec<u8>, CallError> {
        let p = &self.plugin;
        let mut out = Buf::EMPTY;
        let (a, al, c, cl) = (acc.as_ptr(), acc.len(), current.as_ptr(), current.len());
        // SAFETY: as for `map`.
        let status = unsafe {
            match &p.entries.table {
                Table::V1 { reduce, .. } => reduce(a, al, c, cl, &mut out),
                Table::V3 {
                    bytes: Some((_, reduce)),
                    ..
                } => reduce(self.handle, a, al, c, cl, &mut out),
                Table::V3 { .. } => return Err(Instance::not_bytes()),
            }
        };
        p.outcome(status, out)
    }

    /// Maps and folds a batch of a byte-level job in one call into the
    /// library (`tasks` in the wire form of a task list), if the library
    /// has the batch call (job ABI version 3); `None` for one that has
    /// not, which the host maps task by task. A call that fails as a whole
    /// fails every task of the batch with its error.
    pub fn fold_batch(&self, tasks: &[u8], limit: &ValueLimit) -> Option<Folded<CallError>> {
        let Table::V3 {
            fold: Some(fold), ..
        } = &self.plugin.entries.table
        else {
            return None;
        };
        let p = &self.plugin;
        let mut out = Buf::EMPTY;
        let whose = limit.whose.as_bytes();
        // SAFETY: the buffers are valid for the call, `out` is ours to
        // fill, and the instance is live while `self` is.
        let status = unsafe {
            fold(
                self.handle,
                tasks.as_ptr(),
                tasks.len(),
                limit.bytes,
                whose.as_ptr(),
                whose.len(),
                &mut out,
            )
        };
        let folded = match status {
            abi::STATUS_OK => p.lend(out, Folded::decode).map_err(|why| CallError {
                panicked: false,
                message: format!("the job's folded batch does not decode: {why}"),
            }),
            _ => Err(p.failure(status, out)),
        };
        Some(folded.unwrap_or_else(|error| {
            let n = tasks
                .first_chunk::<4>()
                .map_or(0, |n| u32::from_be_bytes(*n));
            Folded {
                value: None,
                processed: 0,
                failures: (0..n)
                    .map(|index| TaskFailed {
                        index,
                        stage: FailedIn::Map,
                        error: error.clone(),
                    })
                    .collect(),
            }
        }))
    }

    /// `done`: a byte-level job's final accumulator, or a keyed job's
    /// output (one run of pairs, sorted by key).
    pub fn done(&self, result: &[u8]) -> Result<(), CallError> {
        let p = &self.plugin;
        let mut err = Buf::EMPTY;
        let (ptr, len) = (result.as_ptr(), result.len());
        // SAFETY: as for `map`.
        let status = unsafe {
            match &p.entries.table {
                Table::V1 { done, .. } => done(ptr, len, &mut err),
                Table::V3 { done, .. } => done(self.handle, ptr, len, &mut err),
            }
        };
        p.outcome(status, err).map(drop)
    }

    fn keyed(&self) -> Result<&KeyedEntries, CallError> {
        match &self.plugin.entries.table {
            Table::V3 {
                keyed: Some(keyed), ..
            } => Ok(keyed),
            _ => Err(CallError {
                panicked: false,
                message: "not a keyed job".into(),
            }),
        }
    }

    /// Maps a batch of a keyed job and combines it (one call for the whole
    /// batch): `tasks` is the batch's task list in its wire form.
    pub fn map_batch(&self, tasks: &[u8]) -> Result<KeyedBatch, CallError> {
        let entries = self.keyed()?;
        let mut out = Buf::EMPTY;
        // SAFETY: as for `map`.
        let status =
            unsafe { (entries.map_batch)(self.handle, tasks.as_ptr(), tasks.len(), &mut out) };
        if status != abi::STATUS_OK {
            return Err(self.plugin.failure(status, out));
        }
        self.plugin
            .lend(out, KeyedBatch::decode)
            .map_err(|why| CallError {
                panicked: false,
                message: format!("the job's mapped batch does not decode: {why}"),
            })
    }

    /// A reducer of a keyed job, to combine runs of pairs into its output.
    pub fn reducer(&self) -> Result<KeyedReducer<'_>, CallError> {
        let entries = self.keyed()?;
        // SAFETY: the live instance; a null result is the job's panic.
        let handle = unsafe { (entries.reducer_new)(self.handle) };
        if handle.is_null() {
            return Err(CallError {
                panicked: true,
                message: "panic: the job's reducer could not be made".into(),
            });
        }
        Ok(KeyedReducer {
            instance: self,
            handle,
        })
    }

    /// The text form of the whole pairs at the front of `run` (one
    /// `key<TAB>value` line each), and how many of its bytes they took: a
    /// pair cut by the end of `run` waits for the next piece.
    pub fn format(&self, run: &[u8]) -> Result<(Vec<u8>, usize), CallError> {
        let entries = self.keyed()?;
        let mut out = Buf::EMPTY;
        let mut used = 0usize;
        // SAFETY: as for `map`, with `used` ours to fill.
        let status =
            unsafe { (entries.format)(self.handle, run.as_ptr(), run.len(), &mut used, &mut out) };
        let text = self.plugin.outcome(status, out)?;
        if used > run.len() {
            return Err(CallError {
                panicked: false,
                message: format!("the job's format used {used} of {} bytes", run.len()),
            });
        }
        Ok((text, used))
    }

    /// The job's estimate of its number of tasks, if it gives one.
    pub fn count(&self) -> Option<u64> {
        let mut n = 0u64;
        // SAFETY: `n` is valid for the call; the handle is live.
        let status = unsafe {
            match &self.plugin.entries.table {
                Table::V1 { count, .. } => (*count)?(&mut n),
                Table::V3 { count, .. } => (*count)?(self.handle, &mut n),
            }
        };
        (status == abi::STATUS_OK).then_some(n)
    }

    /// Starts the job's `load`: an iterator over its tasks.
    pub fn tasks(self: &Arc<Self>) -> Result<TaskIter, CallError> {
        let mut handle: *mut c_void = std::ptr::null_mut();
        let mut err = Buf::EMPTY;
        // SAFETY: both out-pointers are valid for the call; the instance
        // is live.
        let status = unsafe {
            match &self.plugin.entries.table {
                Table::V1 { load_open, .. } => load_open(&mut handle, &mut err),
                Table::V3 { load_open, .. } => load_open(self.handle, &mut handle, &mut err),
            }
        };
        self.plugin.outcome(status, err)?;
        Ok(TaskIter {
            instance: Arc::clone(self),
            handle,
            finished: false,
            buffered: Vec::new(),
            at: 0,
        })
    }
}

impl fmt::Debug for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Instance({:?} {:?})", self.plugin, self.args)
    }
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Plugin({} {})", self.hash.short(), self.path.display())
    }
}

/// A keyed job's mapped batch (see protocol.md, "Keyed jobs").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyedBatch {
    /// Tasks mapped without error.
    pub processed: u32,
    /// Pairs `map` emitted, before combining.
    pub emitted: u64,
    /// Distinct keys in `pairs`.
    pub keys: u64,
    /// The batch's failed tasks: index in the batch, whether it panicked,
    /// and why.
    pub failures: Vec<(u32, bool, String)>,
    /// One run of pairs, sorted by key.
    pub pairs: Vec<u8>,
}

impl KeyedBatch {
    /// Reads the job's encoding of a mapped batch, checking every length.
    fn decode(bytes: &[u8]) -> Result<KeyedBatch, &'static str> {
        fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], &'static str> {
            if b.len() < n {
                return Err("it is cut short");
            }
            let (head, rest) = b.split_at(n);
            *b = rest;
            Ok(head)
        }
        let mut b = bytes;
        let u32_of = |s: &[u8]| u32::from_be_bytes([s[0], s[1], s[2], s[3]]);
        let u64_of =
            |s: &[u8]| u64::from_be_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]);
        let processed = u32_of(take(&mut b, 4)?);
        let emitted = u64_of(take(&mut b, 8)?);
        let keys = u64_of(take(&mut b, 8)?);
        let n = u32_of(take(&mut b, 4)?) as usize;
        // Each failure takes 9 bytes at least: a count past that is a lie.
        if n > b.len() / 9 {
            return Err("its failure count is larger than its bytes");
        }
        let mut failures = Vec::with_capacity(n);
        for _ in 0..n {
            let index = u32_of(take(&mut b, 4)?);
            let panicked = take(&mut b, 1)?[0] & 1 != 0;
            let len = u32_of(take(&mut b, 4)?) as usize;
            let message = String::from_utf8_lossy(take(&mut b, len)?).into_owned();
            failures.push((index, panicked, message));
        }
        Ok(KeyedBatch {
            processed,
            emitted,
            keys,
            failures,
            pairs: b.to_vec(),
        })
    }
}

/// A keyed job's reducer in the job library: runs of pairs go in, the
/// output comes out once. Freed in the library when dropped unfinished.
pub struct KeyedReducer<'a> {
    instance: &'a Instance,
    handle: *mut c_void,
}

impl KeyedReducer<'_> {
    /// Combines one run of pairs; a run that does not decode is refused
    /// whole.
    pub fn add(&mut self, run: &[u8]) -> Result<(), CallError> {
        let entries = self.instance.keyed()?;
        let mut err = Buf::EMPTY;
        // SAFETY: the handle is live (not finished: `finish` takes self),
        // and the buffers are valid for the call.
        let status =
            unsafe { (entries.reducer_add)(self.handle, run.as_ptr(), run.len(), &mut err) };
        self.instance.plugin.outcome(status, err).map(drop)
    }

    /// The output: one run of pairs, one per key, sorted by key.
    pub fn finish(mut self) -> Result<Vec<u8>, CallError> {
        let entries = self.instance.keyed()?;
        let handle = std::mem::replace(&mut self.handle, std::ptr::null_mut());
        let mut out = Buf::EMPTY;
        // SAFETY: the live handle, consumed by this call (the library frees
        // it); it is nulled above so `drop` does not free it again.
        let status = unsafe { (entries.reducer_finish)(handle, &mut out) };
        self.instance.plugin.outcome(status, out)
    }
}

impl Drop for KeyedReducer<'_> {
    fn drop(&mut self) {
        if let (false, Ok(entries)) = (self.handle.is_null(), self.instance.keyed()) {
            // SAFETY: a live handle, not finished, freed once.
            unsafe { (entries.reducer_free)(self.handle) };
        }
    }
}

/// A job's tasks, pulled one at a time from its `load`. An `Err` item is a
/// load error; the iterator goes on after it, except after a panic.
pub struct TaskIter {
    instance: Arc<Instance>,
    handle: *mut c_void,
    finished: bool,
    /// Items `load_batch` gave and not read yet, from `at` on (a library
    /// with that entry: one call and one copy per many items).
    buffered: Vec<u8>,
    at: usize,
}

/// Items asked of `load_batch` per call, and the task bytes that end one
/// call early.
const LOAD_BATCH_TASKS: u32 = 1024;
const LOAD_BATCH_BYTES: usize = 1 << 20;

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
        if let Some(load_batch) = self.instance.plugin.entries.load_batch {
            return self.next_buffered(load_batch, f);
        }
        let mut out = Buf::EMPTY;
        // SAFETY: the handle came from `load_open` and is not closed yet.
        let plugin = &self.instance.plugin;
        let status = unsafe { (plugin.entries.load_next)(self.handle, &mut out) };
        if status == abi::STATUS_OK {
            return Some(Ok(plugin.lend(out, f)));
        }
        if status == abi::STATUS_END {
            plugin.take(out);
            self.finished = true;
            return None;
        }
        let error = plugin.failure(status, out);
        if error.panicked {
            // The iterator's state is unknown after a panic: stop here.
            self.finished = true;
        }
        Some(Err(error))
    }
}

impl TaskIter {
    /// [`TaskIter::next_with`] through `load_batch`: items are read from
    /// a buffer filled by one call for many of them.
    fn next_buffered<R>(
        &mut self,
        load_batch: abi::LoadBatchFn,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Option<Result<R, CallError>> {
        use crate::job::__private::{ITEM_END, ITEM_ERROR, ITEM_PANIC, ITEM_TASK};
        if self.at >= self.buffered.len() {
            let mut out = Buf::EMPTY;
            // SAFETY: the handle came from `load_open` and is not closed
            // yet; `out` is ours to fill.
            let status =
                unsafe { load_batch(self.handle, LOAD_BATCH_TASKS, LOAD_BATCH_BYTES, &mut out) };
            let plugin = &self.instance.plugin;
            if status != abi::STATUS_OK {
                self.finished = true;
                return Some(Err(plugin.failure(status, out)));
            }
            self.buffered.clear();
            self.at = 0;
            plugin.lend(out, |items| self.buffered.extend_from_slice(items));
            if self.buffered.is_empty() {
                // Each call must make progress (at least one item).
                self.finished = true;
                return Some(Err(CallError {
                    panicked: false,
                    message: "the job's load_batch gave no item; loading stops".into(),
                }));
            }
        }
        let rest = &self.buffered[self.at..];
        let item = rest.split_first().and_then(|(kind, rest)| {
            let (len, rest) = rest.split_first_chunk::<4>()?;
            let bytes = rest.get(..u32::from_be_bytes(*len) as usize)?;
            Some((*kind, bytes))
        });
        let Some((kind, bytes)) = item else {
            self.finished = true;
            return Some(Err(CallError {
                panicked: false,
                message: "the job's load_batch gave an item cut short".into(),
            }));
        };
        self.at += 5 + bytes.len();
        let message = || String::from_utf8_lossy(bytes).into_owned();
        match kind {
            ITEM_TASK => Some(Ok(f(bytes))),
            ITEM_ERROR => Some(Err(CallError {
                panicked: false,
                message: message(),
            })),
            ITEM_PANIC => {
                self.finished = true;
                Some(Err(CallError {
                    panicked: true,
                    message: message(),
                }))
            }
            ITEM_END => {
                self.finished = true;
                None
            }
            other => {
                self.finished = true;
                Some(Err(CallError {
                    panicked: false,
                    message: format!("the job's load_batch gave an item of unknown kind {other}"),
                }))
            }
        }
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
        unsafe { (self.instance.plugin.entries.load_close)(self.handle) };
    }
}

#[cfg(test)]
mod tests {
    use super::KeyedBatch;
    use crate::job::keyed::{Mapped, TaskFailure};

    #[test]
    fn a_mapped_batch_reads_back_as_the_job_wrote_it() {
        let mapped = Mapped {
            pairs: vec![b'a', 0, 1, 0, 0, 0, 0, 0, 0, 0, 2],
            keys: 1,
            emitted: 2,
            processed: 3,
            failures: vec![TaskFailure {
                index: 1,
                panicked: true,
                message: "boom".into(),
            }],
        };
        let read = KeyedBatch::decode(&mapped.encode()).unwrap();
        assert_eq!(
            read,
            KeyedBatch {
                processed: 3,
                emitted: 2,
                keys: 1,
                failures: vec![(1, true, "boom".into())],
                pairs: mapped.pairs.clone(),
            }
        );
    }

    #[test]
    fn a_mapped_batch_that_lies_about_its_lengths_is_refused() {
        let mut bytes = Mapped::default().encode();
        assert!(KeyedBatch::decode(&bytes[..10]).is_err(), "cut short");
        // A failure count far past the bytes that follow.
        bytes[20..24].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(KeyedBatch::decode(&bytes).is_err());
        // A message longer than what is left.
        let mut one = Mapped {
            failures: vec![TaskFailure {
                index: 0,
                panicked: false,
                message: "x".into(),
            }],
            ..Mapped::default()
        }
        .encode();
        one[29..33].copy_from_slice(&100u32.to_be_bytes());
        assert!(KeyedBatch::decode(&one).is_err());
    }
}
