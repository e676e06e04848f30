//! The plugin side of the ABI for keyed jobs, used by
//! [`export_keyed_job!`](crate::export_keyed_job): version 2's table with
//! `kind` = keyed. Not for direct use.
//!
//! Every entry runs the job under the same guard as a byte-level job's (a
//! panic becomes an error with its message), and every buffer it returns
//! is freed with the library's own `free`.

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::{map_batch, task_list, KeyedJob, Reducer};
use crate::job::__private::{free, guard, load_close, load_next, slice, write_count};
use crate::job::abi::{self, Buf, JobEntry, JobEntryV1};
use crate::job::codec::to_bytes;
use crate::job::{Error, Tasks};

/// A reducer behind its handle. A panic in the job's `reduce` while a run
/// is combined leaves some of that run's pairs in the table: the reducer is
/// then poisoned, and refuses every later call with why, so a job never
/// reports an output that counts a failed run in part.
struct Handle<J: KeyedJob> {
    reducer: Reducer<J>,
    poisoned: Option<String>,
}

/// Implemented by the type `export_keyed_job!` generates: gives the one job
/// instance.
pub trait KeyedProvider {
    type Job: KeyedJob;
    fn job() -> &'static Self::Job;
}

/// A keyed job's `load`, as the byte-level `Tasks` the shared `load_next`
/// reads: each task in its [`Codec`](crate::job::Codec) encoding.
unsafe extern "C" fn load_open<P: KeyedProvider>(iter: *mut *mut c_void, err: *mut Buf) -> i32 {
    let mut tasks: Option<Tasks> = None;
    // SAFETY: the host passes `err` null or valid for a write (the ABI).
    let status = unsafe {
        guard(err, || {
            let typed = P::job().load();
            tasks = Some(Box::new(typed.map(|r| r.map(|t| to_bytes(&t)))));
            Ok(Vec::new())
        })
    };
    if status == abi::STATUS_OK && !iter.is_null() {
        // SAFETY: not null, and the ABI makes `iter` valid for a write; the
        // box is the one `load_next` and `load_close` expect, freed once.
        unsafe { *iter = Box::into_raw(Box::new(tasks)) as *mut c_void };
    }
    status
}

const BY_BATCH: &str = "a keyed job is mapped and reduced by batches (job ABI 2)";

/// The version-1 `map`, `reduce` and `done` slots of a keyed job: a host
/// that calls them does not know keyed jobs.
unsafe extern "C" fn per_task(_: *const u8, _: usize, out: *mut Buf) -> i32 {
    // SAFETY: the host passes `out` null or valid for a write (the ABI).
    unsafe { guard(out, || Err(Error::msg(BY_BATCH))) }
}

unsafe extern "C" fn per_pair(
    _: *const u8,
    _: usize,
    _: *const u8,
    _: usize,
    out: *mut Buf,
) -> i32 {
    // SAFETY: as for `per_task`.
    unsafe { guard(out, || Err(Error::msg(BY_BATCH))) }
}

unsafe extern "C" fn count<P: KeyedProvider>(out: *mut u64) -> i32 {
    // SAFETY: the host passes `out` null or valid for a write (the ABI).
    unsafe { write_count(out, || P::job().count()) }
}

unsafe extern "C" fn map_batch_entry<P: KeyedProvider>(
    tasks: *const u8,
    len: usize,
    out: *mut Buf,
) -> i32 {
    // SAFETY: the host passes `len` readable bytes at `tasks` for the call,
    // and `out` null or valid for a write (the ABI).
    unsafe {
        let bytes = slice(tasks, len);
        guard(out, || {
            let tasks = task_list(bytes)?;
            Ok(map_batch(P::job(), tasks).encode())
        })
    }
}

unsafe extern "C" fn reducer_new<P: KeyedProvider>() -> *mut c_void {
    match catch_unwind(Reducer::<P::Job>::default) {
        Ok(reducer) => {
            let handle = Handle {
                reducer,
                poisoned: None,
            };
            Box::into_raw(Box::new(handle)) as *mut c_void
        }
        Err(_) => std::ptr::null_mut(),
    }
}

/// Why a poisoned reducer refuses a call.
fn poisoned(why: &str) -> Error {
    Error::msg(format!(
        "the reducer is unusable: a reduce panicked while a run was combined ({why})"
    ))
}

unsafe extern "C" fn reducer_add<P: KeyedProvider>(
    reducer: *mut c_void,
    run: *const u8,
    len: usize,
    err: *mut Buf,
) -> i32 {
    if reducer.is_null() {
        // SAFETY: the host passes `err` null or valid for a write.
        return unsafe { guard(err, || Err(Error::msg("no reducer"))) };
    }
    // SAFETY: a non-null `reducer` is the box `reducer_new` made, not yet
    // finished or freed, used by one thread at a time (the ABI); `run` and
    // `err` as for `map_batch`.
    unsafe {
        let h = &mut *(reducer as *mut Handle<P::Job>);
        let run = slice(run, len);
        let mut message = Buf::EMPTY;
        let status = guard(&mut message, || {
            if let Some(why) = &h.poisoned {
                return Err(poisoned(why));
            }
            h.reducer.add(P::job(), run)?;
            Ok(Vec::new())
        });
        if status == abi::STATUS_PANIC {
            let why = String::from_utf8_lossy(slice(message.ptr, message.len)).into_owned();
            h.poisoned = Some(why);
        }
        if err.is_null() {
            free(message);
        } else {
            *err = message;
        }
        status
    }
}

unsafe extern "C" fn reducer_finish<P: KeyedProvider>(reducer: *mut c_void, out: *mut Buf) -> i32 {
    if reducer.is_null() {
        // SAFETY: the host passes `out` null or valid for a write.
        return unsafe { guard(out, || Err(Error::msg("no reducer"))) };
    }
    // SAFETY: `reducer` is the box `reducer_new` made; finishing consumes
    // it, and the host uses it no more.
    let h = unsafe { Box::from_raw(reducer as *mut Handle<P::Job>) };
    // SAFETY: the host passes `out` null or valid for a write.
    unsafe {
        guard(out, move || match &h.poisoned {
            Some(why) => Err(poisoned(why)),
            None => Ok(h.reducer.finish()),
        })
    }
}

unsafe extern "C" fn reducer_free<P: KeyedProvider>(reducer: *mut c_void) {
    if !reducer.is_null() {
        // SAFETY: the box `reducer_new` made, freed once, then unused.
        let r = unsafe { Box::from_raw(reducer as *mut Handle<P::Job>) };
        // A panic in a key's or value's destructor must not cross the boundary.
        let _ = catch_unwind(AssertUnwindSafe(move || drop(r)));
    }
}

unsafe extern "C" fn done_output<P: KeyedProvider>(
    run: *const u8,
    len: usize,
    err: *mut Buf,
) -> i32 {
    // SAFETY: as for `map_batch`.
    unsafe {
        let run = slice(run, len);
        guard(err, || {
            let output = super::decode_pairs(run).collect::<Result<Vec<_>, _>>()?;
            P::job().done(output).map(|()| Vec::new())
        })
    }
}

/// The entry table for the keyed job `P` provides.
pub const fn entry<P: KeyedProvider>() -> JobEntry {
    JobEntry {
        v1: JobEntryV1 {
            abi_version: abi::ABI_VERSION,
            struct_size: std::mem::size_of::<JobEntry>() as u32,
            load_open: Some(load_open::<P>),
            load_next: Some(load_next),
            load_close: Some(load_close),
            map: Some(per_task),
            reduce: Some(per_pair),
            done: Some(per_task),
            count: Some(count::<P>),
            free: Some(free),
        },
        kind: abi::KIND_KEYED,
        flags: 0,
        map_batch: Some(map_batch_entry::<P>),
        reducer_new: Some(reducer_new::<P>),
        reducer_add: Some(reducer_add::<P>),
        reducer_finish: Some(reducer_finish::<P>),
        reducer_free: Some(reducer_free::<P>),
        done_output: Some(done_output::<P>),
    }
}
