//! The job API: what a redmap job implements, and the macro that exports it
//! from a shared library.
//!
//! This module is dependency-free on purpose: `redmap run job.rs` compiles
//! it on its own with plain `rustc` (no cargo, no network) as a small crate
//! named `redmap`, so a single-file job writes the same `use` lines as a cargo
//! crate that depends on `redmap` with `default-features = false`.
//!
//! ```ignore
//! use redmap::job::{Error, Job, Tasks};
//!
//! struct Sum;
//!
//! impl Job for Sum {
//!     fn load(&self) -> Tasks {
//!         Box::new((1..=10u64).map(|n| Ok(n.to_string().into_bytes())))
//!     }
//!     fn map(&self, task: &[u8]) -> Result<Vec<u8>, Error> {
//!         let n: u64 = std::str::from_utf8(task)?.parse()?;
//!         Ok((n + 1).to_string().into_bytes())
//!     }
//!     fn reduce(&self, acc: &[u8], current: &[u8]) -> Result<Vec<u8>, Error> {
//!         let a: u64 = if acc.is_empty() { 0 } else { std::str::from_utf8(acc)?.parse()? };
//!         let c: u64 = std::str::from_utf8(current)?.parse()?;
//!         Ok((a + c).to_string().into_bytes())
//!     }
//!     fn done(&self, result: &[u8]) -> Result<(), Error> {
//!         std::fs::write("result", result)?;
//!         Ok(())
//!     }
//! }
//!
//! redmap::export_job!(Sum);
//! ```
//!
//! The boundary between redmap and a job is a versioned C ABI ([`abi`]), so
//! a job built by another compiler, or written in C, loads the same way.
//! Every call into the job runs under `catch_unwind`: a panic becomes an
//! error carrying the panic message, never an abort of the host.

// Every unsafe operation in the shims below sits in its own `unsafe {}`
// block with the reason it is sound, even inside an `unsafe fn`.
#![deny(unsafe_op_in_unsafe_fn)]

use std::fmt;

pub mod batch;
pub mod codec;
pub mod input;
pub mod keyed;
pub mod run;

pub use codec::{Codec, DecodeError};
pub use keyed::{Emit, KeyedJob, TypedTasks};

/// The tasks a job's `load` yields, pulled lazily one at a time: a job of
/// millions of tasks is never held in memory at once. An `Err` item is
/// recorded as a load error and does not stop the job.
pub type Tasks = Box<dyn Iterator<Item = Result<Vec<u8>, Error>> + Send>;

/// A job: load, map, reduce, done, and an optional count.
///
/// `map` and `reduce` are called from many threads at once (and on many
/// machines), so a job is `Sync` and keeps no per-call state in `self`.
pub trait Job: Send + Sync + 'static {
    /// Yields the payload of every task. Runs on the manager's machine.
    fn load(&self) -> Tasks;

    /// Maps one task's payload to a value. Runs on workers.
    fn map(&self, task: &[u8]) -> Result<Vec<u8>, Error>;

    /// Folds `current` into `acc` and returns the new accumulator. `acc`
    /// starts empty. `current` may itself be a partial accumulator: redmap
    /// folds each batch of mapped values on the worker and then merges those
    /// partials, so `reduce` must be associative. Results arrive in no
    /// particular order, so it should be commutative too.
    fn reduce(&self, acc: &[u8], current: &[u8]) -> Result<Vec<u8>, Error>;

    /// Receives the final accumulator, once, on the manager's machine.
    fn done(&self, result: &[u8]) -> Result<(), Error>;

    /// An estimate of the number of tasks, for progress reports.
    fn count(&self) -> Option<u64> {
        None
    }
}

/// A job's error: a message for the user. Any `std::error::Error` converts
/// into it with `?`; for text, use [`Error::msg`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
}

impl Error {
    pub fn msg(message: impl fmt::Display) -> Error {
        Error {
            message: message.to_string(),
        }
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

// `Error` deliberately does not implement `std::error::Error`: this blanket
// conversion would then overlap with `From<T> for T`.
impl<E: std::error::Error> From<E> for Error {
    fn from(err: E) -> Error {
        Error::msg(err)
    }
}

/// The C ABI between redmap and a job library. protocol.md ("Writing a job
/// in C") documents it for other languages; `redmap_job.h` is the same
/// thing as a C header.
pub mod abi {
    use std::ffi::c_void;

    /// The version of [`JobEntry`] this build exports and understands.
    /// Version 3 appends `kind`, instances built from the job's arguments,
    /// and the keyed entries to version 1's table.
    pub const ABI_VERSION: u32 = 3;
    /// A version no host loads: the layout of keyed jobs before job
    /// arguments, on development builds only (never released).
    pub const WITHDRAWN_ABI_VERSION: u32 = 2;
    /// Oldest entry version a host of this build can load.
    pub const MIN_ABI_VERSION: u32 = 1;

    /// The one symbol a job library exports: `const JobEntry *redmap_job_entry(void)`.
    pub const ENTRY_SYMBOL: &str = "redmap_job_entry";

    /// The call succeeded; an output buffer, if any, holds the value.
    pub const STATUS_OK: i32 = 0;
    /// The call failed; the output buffer holds a UTF-8 error message.
    pub const STATUS_ERROR: i32 = 1;
    /// `load_next`: no more tasks. `count`: no estimate.
    pub const STATUS_END: i32 = 2;
    /// The job panicked; the output buffer holds the panic message. After a
    /// panic in `load_next` the host stops loading.
    pub const STATUS_PANIC: i32 = 3;

    /// A byte buffer allocated by the job library, returned to the host, and
    /// released with the library's own `free` entry. `ptr` may be null
    /// when `len` is 0.
    #[repr(C)]
    #[derive(Debug)]
    pub struct Buf {
        pub ptr: *mut u8,
        pub len: usize,
    }

    impl Buf {
        pub const EMPTY: Buf = Buf {
            ptr: std::ptr::null_mut(),
            len: 0,
        };
    }

    pub type LoadOpenFn = unsafe extern "C" fn(iter: *mut *mut c_void, err: *mut Buf) -> i32;
    pub type LoadNextFn = unsafe extern "C" fn(iter: *mut c_void, out: *mut Buf) -> i32;
    pub type LoadCloseFn = unsafe extern "C" fn(iter: *mut c_void);
    pub type MapFn = unsafe extern "C" fn(task: *const u8, len: usize, out: *mut Buf) -> i32;
    pub type ReduceFn = unsafe extern "C" fn(
        acc: *const u8,
        acc_len: usize,
        cur: *const u8,
        cur_len: usize,
        out: *mut Buf,
    ) -> i32;
    pub type DoneFn = unsafe extern "C" fn(result: *const u8, len: usize, err: *mut Buf) -> i32;
    pub type CountFn = unsafe extern "C" fn(out: *mut u64) -> i32;
    pub type FreeFn = unsafe extern "C" fn(buf: Buf);
    // Version 3: every entry below takes the job instance `new` made.

    /// Builds a job instance from its arguments: `args` is an argument list
    /// (`u32` count, then each argument as `u32` length and bytes,
    /// big-endian), the words after `--` on `redmap run`'s command line.
    /// On success `inst` gets the instance (opaque; freed with `drop`); on
    /// failure `err` gets why, for the user.
    pub type NewFn = unsafe extern "C" fn(
        args: *const u8,
        len: usize,
        inst: *mut *mut c_void,
        err: *mut Buf,
    ) -> i32;
    /// Frees an instance `new` made, once no call on it is running.
    pub type DropFn = unsafe extern "C" fn(inst: *mut c_void);
    pub type InstLoadOpenFn =
        unsafe extern "C" fn(inst: *mut c_void, iter: *mut *mut c_void, err: *mut Buf) -> i32;
    pub type InstCountFn = unsafe extern "C" fn(inst: *mut c_void, out: *mut u64) -> i32;
    pub type InstMapFn =
        unsafe extern "C" fn(inst: *mut c_void, task: *const u8, len: usize, out: *mut Buf) -> i32;
    pub type InstReduceFn = unsafe extern "C" fn(
        inst: *mut c_void,
        acc: *const u8,
        acc_len: usize,
        cur: *const u8,
        cur_len: usize,
        out: *mut Buf,
    ) -> i32;
    pub type InstDoneFn = unsafe extern "C" fn(
        inst: *mut c_void,
        result: *const u8,
        len: usize,
        err: *mut Buf,
    ) -> i32;
    /// Maps a batch: `tasks` is a task list as `MAP_BATCH` carries it (`u32`
    /// count, then each task as `u32` length and bytes, big-endian); `out`
    /// gets the mapped batch (see protocol.md, "Keyed jobs").
    pub type MapBatchFn =
        unsafe extern "C" fn(inst: *mut c_void, tasks: *const u8, len: usize, out: *mut Buf) -> i32;
    /// Maps a batch of a byte-level job and folds its values (one call for
    /// the whole batch): `tasks` as for [`MapBatchFn`]; the accumulator may
    /// weigh at most `limit` bytes, and `whose` (UTF-8) says whose limit
    /// it is, for the errors that name it. `out` gets the folded batch in
    /// the form [`crate::job::batch`] documents.
    pub type FoldBatchFn = unsafe extern "C" fn(
        inst: *mut c_void,
        tasks: *const u8,
        len: usize,
        limit: usize,
        whose: *const u8,
        whose_len: usize,
        out: *mut Buf,
    ) -> i32;
    /// Up to `max_tasks` items of `load` (fewer once `max_bytes` of tasks are
    /// there), in one buffer: each item a `u8` kind (0 a task, 1 a load
    /// error, 2 a panic, after which loading stops, 3 the end), a `u32`
    /// big-endian length and the task or message. A buffer with no end
    /// item means: call again.
    pub type LoadBatchFn = unsafe extern "C" fn(
        iter: *mut c_void,
        max_tasks: u32,
        max_bytes: usize,
        out: *mut Buf,
    ) -> i32;
    /// A new reducer of the instance's job: an opaque handle, or null if
    /// the job panicked. The instance outlives its reducers.
    pub type ReducerNewFn = unsafe extern "C" fn(inst: *mut c_void) -> *mut c_void;
    /// Combines a run of pairs into the reducer; `err` gets why it failed.
    pub type ReducerAddFn = unsafe extern "C" fn(
        reducer: *mut c_void,
        run: *const u8,
        len: usize,
        err: *mut Buf,
    ) -> i32;
    /// The reducer's output, one run of pairs sorted by key, in `out`. The
    /// reducer is consumed (freed), whatever the status.
    pub type ReducerFinishFn = unsafe extern "C" fn(reducer: *mut c_void, out: *mut Buf) -> i32;
    /// Frees a reducer that is not finished.
    pub type ReducerFreeFn = unsafe extern "C" fn(reducer: *mut c_void);
    /// Writes the text form of the whole pairs at the front of a run (one
    /// `key<TAB>value` line each, see protocol.md) to `out`, and the number
    /// of the run's bytes those pairs took to `used`: a host streams an
    /// output through it in pieces cut anywhere, and hands the unused tail
    /// back with the next piece.
    pub type FormatFn = unsafe extern "C" fn(
        inst: *mut c_void,
        run: *const u8,
        len: usize,
        used: *mut usize,
        out: *mut Buf,
    ) -> i32;

    /// `JobEntry::kind` of a byte-level job (`Job`; every version-1 table).
    pub const KIND_BYTES: u32 = 0;
    /// `JobEntry::kind` of a keyed job (`KeyedJob`).
    pub const KIND_KEYED: u32 = 1;

    /// A version-1 table: [`JobEntry`]'s fields up to `free`, which every
    /// later version starts with (a host reads a table through this until
    /// its version and size say more is there).
    #[repr(C)]
    pub struct JobEntryV1 {
        pub abi_version: u32,
        pub struct_size: u32,
        pub load_open: Option<LoadOpenFn>,
        pub load_next: Option<LoadNextFn>,
        pub load_close: Option<LoadCloseFn>,
        pub map: Option<MapFn>,
        pub reduce: Option<ReduceFn>,
        pub done: Option<DoneFn>,
        pub count: Option<CountFn>,
        pub free: Option<FreeFn>,
    }

    /// The size of a version-1 table.
    pub const V1_ENTRY_SIZE: usize = std::mem::size_of::<JobEntryV1>();

    // Version 3 appends to version 1's fields, and moves none of them.
    const _: () = assert!(std::mem::offset_of!(JobEntry, kind) == V1_ENTRY_SIZE);

    /// The table of entry points. Append-only: a later version adds fields
    /// at the end and raises `abi_version`; `struct_size` lets a host see
    /// which fields exist. A null `count` means "no estimate"; the batch
    /// calls `fold_batch` and `load_batch` are optional (null, or beyond
    /// `struct_size`), and so are the entries of the other kind of job;
    /// every other entry is required.
    #[repr(C)]
    pub struct JobEntry {
        /// Version 1's fields, in their places.
        pub v1: JobEntryV1,
        // Version 3. A version-3 host calls none of version 1's fields but
        // `load_next`, `load_close` and `free`; the others may be null.
        /// [`KIND_BYTES`] or [`KIND_KEYED`].
        pub kind: u32,
        /// Zero (reserved for flags).
        pub flags: u32,
        /// Builds an instance from the job's arguments (required).
        pub instance_new: Option<NewFn>,
        /// Frees an instance (required).
        pub instance_drop: Option<DropFn>,
        /// `load` (required).
        pub load_open_v3: Option<InstLoadOpenFn>,
        /// `count`; null: no estimate.
        pub count_v3: Option<InstCountFn>,
        /// A byte-level job's `map` and `reduce` (required for one; null for
        /// a keyed job).
        pub map_v3: Option<InstMapFn>,
        pub reduce_v3: Option<InstReduceFn>,
        /// `done`: a byte-level job's final accumulator, or a keyed job's
        /// output, one run of pairs sorted by key (required).
        pub done_v3: Option<InstDoneFn>,
        /// A keyed job's batch call and reducer (required for one; null for a
        /// byte-level job).
        pub map_batch: Option<MapBatchFn>,
        pub reducer_new: Option<ReducerNewFn>,
        pub reducer_add: Option<ReducerAddFn>,
        pub reducer_finish: Option<ReducerFinishFn>,
        pub reducer_free: Option<ReducerFreeFn>,
        /// A keyed job's text form of its pairs (required for one; null for
        /// a byte-level job, whose output is its accumulator's bytes).
        pub format: Option<FormatFn>,
        /// A byte-level job's batch call (optional: null, and the host maps
        /// and folds with `map_v3` and `reduce_v3`, a call each per task).
        pub fold_batch: Option<FoldBatchFn>,
        /// Many items of `load` per call (optional: null, and the host calls
        /// `load_next` per item).
        pub load_batch: Option<LoadBatchFn>,
    }
}

/// The plugin side of the ABI, used by [`export_job!`](crate::export_job). Not for direct use.
#[doc(hidden)]
pub mod __private {
    use super::abi::{self, Buf};
    use super::{Error, Job, Tasks};
    use std::any::Any;
    use std::ffi::c_void;
    use std::panic::{catch_unwind, AssertUnwindSafe};

    /// Implemented by the type `export_job!` generates: gives the one job instance.
    pub trait Provider {
        fn job() -> &'static dyn Job;
    }

    fn into_buf(bytes: Vec<u8>) -> Buf {
        let boxed: Box<[u8]> = bytes.into_boxed_slice();
        let len = boxed.len();
        Buf {
            ptr: Box::into_raw(boxed) as *mut u8,
            len,
        }
    }

    pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
        let text = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(non-string panic payload)");
        match PANICKED_AT.with(|at| at.take()) {
            Some(at) => format!("panic: {text} (at {at})"),
            None => format!("panic: {text}"),
        }
    }

    std::thread_local! {
        /// Set while the host's call runs job code under `guard`.
        static GUARDED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
        /// Where the last guarded panic happened, for its error.
        static PANICKED_AT: std::cell::Cell<Option<String>> = const { std::cell::Cell::new(None) };
    }

    /// A panic under `guard` becomes the task's error, which says where it
    /// happened: printing it too (with a backtrace when RUST_BACKTRACE is
    /// set) would fill the server's log with every retried panic. So this
    /// library's panic hook (a cdylib has its own std, so the host's hook is
    /// untouched) records the place and stays quiet there, and prints as
    /// usual for panics elsewhere, such as on threads the job started.
    fn quiet_guarded_panics() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            let default = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                if GUARDED.with(|g| g.get()) {
                    let at = info
                        .location()
                        .map(|l| format!("{}:{}", l.file(), l.line()));
                    PANICKED_AT.with(|p| p.set(at));
                } else {
                    default(info);
                }
            }));
        });
    }

    /// Runs `f` under catch_unwind, quietly (see `quiet_guarded_panics`):
    /// its value, or its error or panic as `(panicked, message)`.
    pub(crate) fn catch<T>(f: impl FnOnce() -> Result<T, Error>) -> Result<T, (bool, String)> {
        quiet_guarded_panics();
        let was = GUARDED.with(|g| g.replace(true));
        let outcome = catch_unwind(AssertUnwindSafe(f));
        GUARDED.with(|g| g.set(was));
        match outcome {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err((false, e.message)),
            Err(p) => Err((true, panic_message(&*p))),
        }
    }

    /// [`catch`] for a call made inside another `catch` or `guard`, which
    /// has set the quiet hook up and marked the thread: only the
    /// catch_unwind, for calls made per task (a batch call's map and
    /// reduce).
    fn catch_nested<T>(f: impl FnOnce() -> Result<T, Error>) -> Result<T, (bool, String)> {
        debug_assert!(GUARDED.with(|g| g.get()), "catch_nested outside a guard");
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err((false, e.message)),
            Err(p) => Err((true, panic_message(&*p))),
        }
    }

    /// Runs `f` under catch_unwind and writes its value or error to `out`.
    ///
    /// # Safety
    /// `out` is null or valid for a write of one `Buf` (the ABI's rule for
    /// every out-pointer the host passes).
    pub(crate) unsafe fn guard(out: *mut Buf, f: impl FnOnce() -> Result<Vec<u8>, Error>) -> i32 {
        let (status, bytes) = match catch(f) {
            Ok(v) => (abi::STATUS_OK, v),
            Err((false, message)) => (abi::STATUS_ERROR, message.into_bytes()),
            Err((true, message)) => (abi::STATUS_PANIC, message.into_bytes()),
        };
        if !out.is_null() {
            // SAFETY: not null, so valid for a write of one `Buf` (see above);
            // the host's `Buf::EMPTY` there owns nothing, so nothing leaks.
            unsafe { *out = into_buf(bytes) };
        }
        status
    }

    /// The `len` bytes at `ptr`; empty for a null pointer or a zero length.
    ///
    /// # Safety
    /// Unless null, `ptr` points to `len` initialised bytes that stay
    /// unchanged for `'a` (the ABI: the host's buffers live for the call).
    pub(crate) unsafe fn slice<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
        if ptr.is_null() || len == 0 {
            &[]
        } else {
            // SAFETY: not null and not empty, so valid as the caller promised.
            unsafe { std::slice::from_raw_parts(ptr, len) }
        }
    }

    unsafe extern "C" fn load_open<P: Provider>(iter: *mut *mut c_void, err: *mut Buf) -> i32 {
        // SAFETY: the host's pointers, as `open_tasks` needs them (the ABI).
        unsafe { open_tasks(iter, err, || Ok(P::job().load())) }
    }

    /// `load_open`: runs `load` under the guard, and on success writes the
    /// iterator that `load_next` and `load_close` take to `iter`.
    ///
    /// # Safety
    /// `iter` and `err` are null or valid for a write (the ABI).
    pub(crate) unsafe fn open_tasks(
        iter: *mut *mut c_void,
        err: *mut Buf,
        load: impl FnOnce() -> Result<Tasks, Error>,
    ) -> i32 {
        let mut tasks: Option<Tasks> = None;
        // SAFETY: `err` is null or valid for a write (see above).
        let status = unsafe {
            guard(err, || {
                tasks = Some(load()?);
                Ok(Vec::new())
            })
        };
        if status == abi::STATUS_OK && !iter.is_null() {
            // SAFETY: not null, and the ABI makes `iter` valid for a write;
            // the box is freed by `load_close`, once.
            unsafe { *iter = Box::into_raw(Box::new(tasks)) as *mut c_void };
        }
        status
    }

    /// Reads an argument list (`u32` count, then each argument as `u32`
    /// length and bytes) into the strings a constructor takes.
    pub(crate) fn parse_args(bytes: &[u8]) -> Result<Vec<String>, Error> {
        let list = super::keyed::task_list(bytes)
            .map_err(|e| Error::msg(format!("the job's arguments do not decode: {e}")))?;
        list.into_iter()
            .enumerate()
            .map(|(i, arg)| {
                String::from_utf8(arg.to_vec())
                    .map_err(|_| Error::msg(format!("argument {} is not UTF-8", i + 1)))
            })
            .collect()
    }

    /// `new`: parses the arguments and builds an instance with `ctor`, under
    /// the guard; on success writes the boxed instance to `inst`.
    ///
    /// # Safety
    /// `args` points to `len` readable bytes (or is null), and `inst` and
    /// `err` are null or valid for a write (the ABI).
    pub(crate) unsafe fn new_instance<J>(
        args: *const u8,
        len: usize,
        inst: *mut *mut c_void,
        err: *mut Buf,
        ctor: impl FnOnce(&[String]) -> Result<J, Error>,
    ) -> i32 {
        let mut made = None;
        // SAFETY: as the caller promised.
        let status = unsafe {
            let args = slice(args, len);
            guard(err, || {
                made = Some(ctor(&parse_args(args)?)?);
                Ok(Vec::new())
            })
        };
        if let (abi::STATUS_OK, Some(job), false) = (status, made, inst.is_null()) {
            // SAFETY: not null, so valid for a write; the box is freed by
            // `drop_instance`, once.
            unsafe { *inst = Box::into_raw(Box::new(job)) as *mut c_void };
        }
        status
    }

    /// `drop`: frees an instance `new_instance::<J>` made.
    pub(crate) unsafe extern "C" fn drop_instance<J>(inst: *mut c_void) {
        if !inst.is_null() {
            // SAFETY: the box `new_instance::<J>` made; the host drops it
            // once, when no call on it runs, and uses it no more.
            let job = unsafe { Box::from_raw(inst as *mut J) };
            // A panic in the job's destructor must not cross the boundary.
            let _ = catch_unwind(AssertUnwindSafe(move || drop(job)));
        }
    }

    /// The instance behind a handle, or the error of a null one.
    ///
    /// # Safety
    /// A non-null `inst` is an instance `new_instance::<J>` made, not yet
    /// dropped (the ABI: the host drops it after its last call).
    pub(crate) unsafe fn instance<'a, J>(inst: *mut c_void) -> Result<&'a J, Error> {
        // SAFETY: as the caller promised.
        unsafe { (inst as *const J).as_ref() }.ok_or_else(|| Error::msg("no job instance"))
    }

    pub(crate) unsafe extern "C" fn load_next(iter: *mut c_void, out: *mut Buf) -> i32 {
        if iter.is_null() {
            return abi::STATUS_END;
        }
        // SAFETY: a non-null `iter` is the box `load_open` made, not closed
        // yet, and the host calls `load_*` from one thread at a time.
        let tasks = unsafe { &mut *(iter as *mut Option<Tasks>) };
        let mut end = false;
        // SAFETY: the host passes `out` null or valid for a write (the ABI).
        let status = unsafe {
            guard(out, || match tasks.as_mut().and_then(Iterator::next) {
                Some(item) => item,
                None => {
                    end = true;
                    Ok(Vec::new())
                }
            })
        };
        if end {
            abi::STATUS_END
        } else {
            status
        }
    }

    /// Item kinds of [`abi::LoadBatchFn`]'s buffer.
    pub(crate) const ITEM_TASK: u8 = 0;
    pub(crate) const ITEM_ERROR: u8 = 1;
    pub(crate) const ITEM_PANIC: u8 = 2;
    pub(crate) const ITEM_END: u8 = 3;

    pub(crate) unsafe extern "C" fn load_batch(
        iter: *mut c_void,
        max_tasks: u32,
        max_bytes: usize,
        out: *mut Buf,
    ) -> i32 {
        let mut items = Vec::new();
        let mut push = |kind: u8, bytes: &[u8]| {
            items.push(kind);
            items.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            items.extend_from_slice(bytes);
        };
        if iter.is_null() {
            push(ITEM_END, &[]);
        } else {
            // SAFETY: a non-null `iter` is the box `load_open` made, not
            // closed yet, and the host calls `load_*` from one thread at a
            // time.
            let tasks = unsafe { &mut *(iter as *mut Option<Tasks>) };
            // Every item counts, load errors too (a `load` that yields only
            // errors must not fill one buffer forever), and there is always
            // at least one, so every call makes progress.
            let (mut n, mut bytes) = (0u32, 0usize);
            // One guard for the call (the quiet hook and the thread's mark),
            // and a catch_unwind per item, so a panic ends loading with the
            // items before it kept.
            let _ = catch(|| {
                while n == 0 || (n < max_tasks && bytes < max_bytes) {
                    n += 1;
                    match catch_nested(|| Ok(tasks.as_mut().and_then(Iterator::next))) {
                        Ok(Some(Ok(task))) => {
                            push(ITEM_TASK, &task);
                            bytes += task.len();
                        }
                        Ok(Some(Err(e))) => {
                            push(ITEM_ERROR, e.message.as_bytes());
                            bytes += e.message.len();
                        }
                        Ok(None) => {
                            push(ITEM_END, &[]);
                            break;
                        }
                        Err((_, message)) => {
                            push(ITEM_PANIC, message.as_bytes());
                            break;
                        }
                    }
                }
                Ok(())
            });
        }
        if !out.is_null() {
            // SAFETY: not null, so valid for a write (the ABI).
            unsafe { *out = into_buf(items) };
        }
        abi::STATUS_OK
    }

    pub(crate) unsafe extern "C" fn load_close(iter: *mut c_void) {
        if !iter.is_null() {
            // SAFETY: `iter` is the box `load_open` made; the host closes it
            // once and uses it no more.
            let tasks = unsafe { Box::from_raw(iter as *mut Option<Tasks>) };
            // A panic in the iterator's destructor must not cross the boundary.
            let _ = catch_unwind(AssertUnwindSafe(move || drop(tasks)));
        }
    }

    unsafe extern "C" fn map<P: Provider>(task: *const u8, len: usize, out: *mut Buf) -> i32 {
        // SAFETY: the host passes `len` readable bytes at `task` for the
        // call, and `out` null or valid for a write (the ABI).
        unsafe {
            let task = slice(task, len);
            guard(out, || P::job().map(task))
        }
    }

    unsafe extern "C" fn reduce<P: Provider>(
        acc: *const u8,
        acc_len: usize,
        cur: *const u8,
        cur_len: usize,
        out: *mut Buf,
    ) -> i32 {
        // SAFETY: as for `map`, with two input buffers.
        unsafe {
            let (acc, cur) = (slice(acc, acc_len), slice(cur, cur_len));
            guard(out, || P::job().reduce(acc, cur))
        }
    }

    unsafe extern "C" fn done<P: Provider>(result: *const u8, len: usize, err: *mut Buf) -> i32 {
        // SAFETY: as for `map`.
        unsafe {
            let result = slice(result, len);
            guard(err, || P::job().done(result).map(|()| Vec::new()))
        }
    }

    unsafe extern "C" fn count<P: Provider>(out: *mut u64) -> i32 {
        // SAFETY: the host passes `out` null or valid for a write (the ABI).
        unsafe { write_count(out, || P::job().count()) }
    }

    /// Runs a job's `count` under catch_unwind and writes its estimate.
    ///
    /// # Safety
    /// `out` is null or valid for a write of one `u64`.
    pub(crate) unsafe fn write_count(out: *mut u64, count: impl FnOnce() -> Option<u64>) -> i32 {
        match catch_unwind(AssertUnwindSafe(count)) {
            Ok(Some(n)) => {
                if !out.is_null() {
                    // SAFETY: not null, so valid for a write (see above).
                    unsafe { *out = n };
                }
                abi::STATUS_OK
            }
            Ok(None) => abi::STATUS_END,
            Err(_) => abi::STATUS_PANIC,
        }
    }

    pub(crate) unsafe extern "C" fn free(buf: Buf) {
        if !buf.ptr.is_null() {
            let slice = std::ptr::slice_from_raw_parts_mut(buf.ptr, buf.len);
            // SAFETY: every non-null `Buf` this library hands out comes from
            // `into_buf` (a boxed slice of exactly `len` bytes), and the host
            // frees each once.
            drop(unsafe { Box::from_raw(slice) });
        }
    }

    /// The constructor of a job built with `Default`: it takes no arguments.
    pub fn no_args<J: Default>(args: &[String]) -> Result<J, Error> {
        match args {
            [] => Ok(J::default()),
            _ => Err(Error::msg(format!(
                "this job takes no arguments, but was given {}: {}",
                args.len(),
                args.join(" ")
            ))),
        }
    }

    /// Implemented by the type `export_job!(Type, constructor)` and
    /// `export_keyed_job!` generate: builds a job instance from its
    /// arguments.
    pub trait Build {
        type Job: Send + Sync + 'static;
        fn new(args: &[String]) -> Result<Self::Job, Error>;
    }

    /// `instance_new` of the job `P` builds.
    pub(crate) unsafe extern "C" fn new_entry<P: Build>(
        args: *const u8,
        len: usize,
        inst: *mut *mut c_void,
        err: *mut Buf,
    ) -> i32 {
        // SAFETY: the host's pointers (the ABI).
        unsafe { new_instance(args, len, inst, err, P::new) }
    }

    unsafe extern "C" fn load_open_v3<J: Job>(
        inst: *mut c_void,
        iter: *mut *mut c_void,
        err: *mut Buf,
    ) -> i32 {
        // SAFETY: the host passes a live instance and its pointers (the ABI).
        unsafe { open_tasks(iter, err, || Ok(instance::<J>(inst)?.load())) }
    }

    unsafe extern "C" fn count_v3<J: Job>(inst: *mut c_void, out: *mut u64) -> i32 {
        // SAFETY: as for `load_open_v3`.
        unsafe {
            match instance::<J>(inst) {
                Ok(job) => write_count(out, || job.count()),
                Err(_) => abi::STATUS_END,
            }
        }
    }

    unsafe extern "C" fn map_v3<J: Job>(
        inst: *mut c_void,
        task: *const u8,
        len: usize,
        out: *mut Buf,
    ) -> i32 {
        // SAFETY: as for `load_open_v3`, with `len` readable bytes at `task`.
        unsafe {
            let task = slice(task, len);
            guard(out, || instance::<J>(inst)?.map(task))
        }
    }

    unsafe extern "C" fn reduce_v3<J: Job>(
        inst: *mut c_void,
        acc: *const u8,
        acc_len: usize,
        cur: *const u8,
        cur_len: usize,
        out: *mut Buf,
    ) -> i32 {
        // SAFETY: as for `map_v3`, with two input buffers.
        unsafe {
            let (acc, cur) = (slice(acc, acc_len), slice(cur, cur_len));
            guard(out, || instance::<J>(inst)?.reduce(acc, cur))
        }
    }

    unsafe extern "C" fn done_v3<J: Job>(
        inst: *mut c_void,
        result: *const u8,
        len: usize,
        err: *mut Buf,
    ) -> i32 {
        // SAFETY: as for `map_v3`.
        unsafe {
            let result = slice(result, len);
            guard(err, || {
                instance::<J>(inst)?.done(result)?;
                Ok(Vec::new())
            })
        }
    }

    /// A call's failure inside a folded batch.
    struct Fail(bool, String);

    impl super::batch::Failure for Fail {
        fn new(panicked: bool, message: String) -> Fail {
            Fail(panicked, message)
        }
        fn panicked(&self) -> bool {
            self.0
        }
        fn message(&self) -> &str {
            &self.1
        }
    }

    unsafe extern "C" fn fold_batch_v3<J: Job>(
        inst: *mut c_void,
        tasks: *const u8,
        len: usize,
        limit: usize,
        whose: *const u8,
        whose_len: usize,
        out: *mut Buf,
    ) -> i32 {
        // SAFETY: the host passes a live instance, `len` readable bytes at
        // `tasks` and `whose_len` at `whose` for the call, and `out` null or
        // valid for a write (the ABI).
        unsafe {
            let (tasks, whose) = (slice(tasks, len), slice(whose, whose_len));
            guard(out, || {
                let job = instance::<J>(inst)?;
                let tasks = super::keyed::task_list(tasks)?;
                // The encoded form's lengths are `u32`: no value passes that.
                let limit = match limit > u32::MAX as usize {
                    true => super::batch::ValueLimit {
                        bytes: u32::MAX as usize,
                        whose: "the 4 GiB a batch call's value may hold".into(),
                    },
                    false => super::batch::ValueLimit {
                        bytes: limit,
                        whose: String::from_utf8_lossy(whose).into_owned(),
                    },
                };
                // Each call under its own guard: a panic fails its task.
                let call = |r: Result<Vec<u8>, (bool, String)>| r.map_err(|(p, m)| Fail(p, m));
                let folded = super::batch::fold_batch(
                    tasks.into_iter(),
                    |task| call(catch_nested(|| job.map(task))),
                    |acc, value| call(catch_nested(|| job.reduce(acc, value))),
                    &limit,
                );
                Ok(folded.encode())
            })
        }
    }

    /// Version 1's fields of a version-3 table: a version-3 host calls only
    /// the three that take no instance.
    pub const fn v1_of_v3() -> abi::JobEntryV1 {
        abi::JobEntryV1 {
            abi_version: abi::ABI_VERSION,
            struct_size: std::mem::size_of::<abi::JobEntry>() as u32,
            load_open: None,
            load_next: Some(load_next),
            load_close: Some(load_close),
            map: None,
            reduce: None,
            done: None,
            count: None,
            free: Some(free),
        }
    }

    /// The version-3 entry table of a byte-level job built from its
    /// arguments by `P`.
    pub const fn entry_v3<P: Build>() -> abi::JobEntry
    where
        P::Job: Job,
    {
        abi::JobEntry {
            v1: v1_of_v3(),
            kind: abi::KIND_BYTES,
            flags: 0,
            instance_new: Some(new_entry::<P>),
            instance_drop: Some(drop_instance::<P::Job>),
            load_open_v3: Some(load_open_v3::<P::Job>),
            count_v3: Some(count_v3::<P::Job>),
            map_v3: Some(map_v3::<P::Job>),
            reduce_v3: Some(reduce_v3::<P::Job>),
            done_v3: Some(done_v3::<P::Job>),
            map_batch: None,
            reducer_new: None,
            reducer_add: None,
            reducer_finish: None,
            reducer_free: None,
            format: None,
            fold_batch: Some(fold_batch_v3::<P::Job>),
            load_batch: Some(load_batch),
        }
    }

    /// The entry table for the job `P` provides: a version-1 table. A
    /// byte-level job uses nothing of version 3, and says so, so a host
    /// that speaks only version 1 loads it too.
    pub const fn entry<P: Provider>() -> abi::JobEntryV1 {
        abi::JobEntryV1 {
            abi_version: 1,
            struct_size: abi::V1_ENTRY_SIZE as u32,
            load_open: Some(load_open::<P>),
            load_next: Some(load_next),
            load_close: Some(load_close),
            map: Some(map::<P>),
            reduce: Some(reduce::<P>),
            done: Some(done::<P>),
            count: Some(count::<P>),
            free: Some(free),
        }
    }
}

/// Exports a job from a `cdylib`, in one of two forms:
///
/// - `redmap::export_job!(MyJob);` where the argument is an expression
///   that builds the job (called once, on first use). The library has a
///   version-1 table, so every redmap since the first loads it; the job
///   takes no arguments.
/// - `redmap::export_job!(MyJob, MyJob::new);` where the second argument
///   is a constructor, `fn(&[String]) -> Result<MyJob, Error>` (a function
///   or a closure that captures nothing), called with the job's arguments
///   (the words after `--` on `redmap run`'s command line) in every process
///   that builds the job. An error is shown to the user before the job
///   runs. Needs a redmap that loads job ABI version 3.
#[macro_export]
macro_rules! export_job {
    ($job:expr) => {
        #[doc(hidden)]
        pub struct __RedmapJobProvider;

        impl $crate::job::__private::Provider for __RedmapJobProvider {
            fn job() -> &'static dyn $crate::job::Job {
                static JOB: ::std::sync::OnceLock<::std::boxed::Box<dyn $crate::job::Job>> =
                    ::std::sync::OnceLock::new();
                &**JOB.get_or_init(|| ::std::boxed::Box::new($job))
            }
        }

        #[doc(hidden)]
        static __REDMAP_JOB_ENTRY: $crate::job::abi::JobEntryV1 =
            $crate::job::__private::entry::<__RedmapJobProvider>();

        /// The job library's entry point (see redmap's protocol.md).
        #[unsafe(no_mangle)]
        pub extern "C" fn redmap_job_entry() -> *const $crate::job::abi::JobEntryV1 {
            &__REDMAP_JOB_ENTRY
        }
    };
    ($ty:ty, $new:expr) => {
        $crate::__redmap_export_v3!($ty, $new, $crate::job::__private::entry_v3);
    };
}

/// Exports a keyed job from a `cdylib`, in one of two forms:
///
/// - `redmap::export_keyed_job!(MyJob);` for a type that implements
///   [`KeyedJob`] and `Default`: the job takes no arguments.
/// - `redmap::export_keyed_job!(MyJob, MyJob::new);` where the second
///   argument is a constructor, `fn(&[String]) -> Result<MyJob, Error>` (a
///   function or a closure that captures nothing), called with the job's
///   arguments (the words after `--` on `redmap run`'s command line) in
///   every process that builds the job. An error is shown to the user
///   before the job runs.
#[macro_export]
macro_rules! export_keyed_job {
    ($ty:ty) => {
        $crate::export_keyed_job!($ty, $crate::job::__private::no_args::<$ty>);
    };
    ($ty:ty, $new:expr) => {
        $crate::__redmap_export_v3!($ty, $new, $crate::job::keyed::ffi::entry);
    };
}

/// What both export macros' constructor forms expand to: the provider of
/// `$ty` built by `$new`, and the version-3 table `$entry` makes of it.
/// Not for direct use.
#[doc(hidden)]
#[macro_export]
macro_rules! __redmap_export_v3 {
    ($ty:ty, $new:expr, $($entry:ident)::+) => {
        #[doc(hidden)]
        struct __RedmapJobProvider;

        impl $crate::job::__private::Build for __RedmapJobProvider {
            type Job = $ty;
            fn new(
                args: &[::std::string::String],
            ) -> ::std::result::Result<$ty, $crate::job::Error> {
                let new: fn(
                    &[::std::string::String],
                ) -> ::std::result::Result<$ty, $crate::job::Error> = $new;
                new(args)
            }
        }

        #[doc(hidden)]
        static __REDMAP_JOB_ENTRY: $crate::job::abi::JobEntry =
            $($entry)::+::<__RedmapJobProvider>();

        /// The job library's entry point (see redmap's protocol.md).
        #[unsafe(no_mangle)]
        pub extern "C" fn redmap_job_entry() -> *const $crate::job::abi::JobEntry {
            &__REDMAP_JOB_ENTRY
        }
    };
}
