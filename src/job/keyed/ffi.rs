//! The plugin side of the ABI for keyed jobs, used by
//! [`export_keyed_job!`](crate::export_keyed_job): version 3's table with
//! `kind` = keyed. Not for direct use.
//!
//! Every entry runs the job under the same guard as a byte-level job's (a
//! panic becomes an error with its message), and every buffer it returns
//! is freed with the library's own `free`.

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::{format_pairs, map_batch, task_list, KeyedJob, Reducer};
use crate::job::__private::{
    drop_instance, free, guard, instance, load_batch, new_entry, open_tasks, slice, v1_of_v3,
    write_count, Build,
};
use crate::job::abi::{self, Buf, JobEntry};
use crate::job::codec::to_bytes;
use crate::job::{Error, Tasks};

/// A reducer behind its handle, with the instance whose `reduce` it calls
/// (the host keeps the instance alive while it has reducers). A panic in
/// the job's `reduce` while a run is combined leaves some of that run's
/// pairs in the table: the reducer is then poisoned, and refuses every
/// later call with why, so a job never reports an output that counts a
/// failed run in part.
struct Handle<J: KeyedJob> {
    job: *const J,
    reducer: Reducer<J>,
    poisoned: Option<String>,
}

/// A keyed job's `load`, as the byte-level `Tasks` the shared `load_next`
/// reads: each task in its [`Codec`](crate::job::Codec) encoding.
unsafe extern "C" fn load_open<J: KeyedJob>(
    inst: *mut c_void,
    iter: *mut *mut c_void,
    err: *mut Buf,
) -> i32 {
    // SAFETY: the host passes a live instance and its pointers (the ABI).
    unsafe {
        open_tasks(iter, err, || {
            let typed = instance::<J>(inst)?.load();
            Ok(Box::new(typed.map(|r| r.map(|t| to_bytes(&t)))) as Tasks)
        })
    }
}

unsafe extern "C" fn count<J: KeyedJob>(inst: *mut c_void, out: *mut u64) -> i32 {
    // SAFETY: as for `load_open`.
    unsafe {
        match instance::<J>(inst) {
            Ok(job) => write_count(out, || job.count()),
            Err(_) => abi::STATUS_END,
        }
    }
}

unsafe extern "C" fn map_batch_entry<J: KeyedJob>(
    inst: *mut c_void,
    tasks: *const u8,
    len: usize,
    out: *mut Buf,
) -> i32 {
    // SAFETY: the host passes a live instance, `len` readable bytes at
    // `tasks` for the call, and `out` null or valid for a write (the ABI).
    unsafe {
        let bytes = slice(tasks, len);
        guard(out, || {
            let job = instance::<J>(inst)?;
            let tasks = task_list(bytes)?;
            Ok(map_batch(job, tasks).encode())
        })
    }
}

unsafe extern "C" fn reducer_new<J: KeyedJob>(inst: *mut c_void) -> *mut c_void {
    if inst.is_null() {
        return std::ptr::null_mut();
    }
    match catch_unwind(Reducer::<J>::default) {
        Ok(reducer) => {
            let handle = Handle {
                job: inst as *const J,
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

unsafe extern "C" fn reducer_add<J: KeyedJob>(
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
    // finished or freed, used by one thread at a time, and its instance is
    // alive (the ABI); `run` and `err` as for `map_batch`.
    unsafe {
        let h = &mut *(reducer as *mut Handle<J>);
        let job = &*h.job;
        let run = slice(run, len);
        let mut message = Buf::EMPTY;
        let status = guard(&mut message, || {
            if let Some(why) = &h.poisoned {
                return Err(poisoned(why));
            }
            h.reducer.add(job, run)?;
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

unsafe extern "C" fn reducer_finish<J: KeyedJob>(reducer: *mut c_void, out: *mut Buf) -> i32 {
    if reducer.is_null() {
        // SAFETY: the host passes `out` null or valid for a write.
        return unsafe { guard(out, || Err(Error::msg("no reducer"))) };
    }
    // SAFETY: `reducer` is the box `reducer_new` made; finishing consumes
    // it, and the host uses it no more.
    let h = unsafe { Box::from_raw(reducer as *mut Handle<J>) };
    // SAFETY: the host passes `out` null or valid for a write.
    unsafe {
        guard(out, move || match &h.poisoned {
            Some(why) => Err(poisoned(why)),
            None => Ok(h.reducer.finish()),
        })
    }
}

unsafe extern "C" fn reducer_free<J: KeyedJob>(reducer: *mut c_void) {
    if !reducer.is_null() {
        // SAFETY: the box `reducer_new` made, freed once, then unused.
        let r = unsafe { Box::from_raw(reducer as *mut Handle<J>) };
        // A panic in a key's or value's destructor must not cross the boundary.
        let _ = catch_unwind(AssertUnwindSafe(move || drop(r)));
    }
}

unsafe extern "C" fn done<J: KeyedJob>(
    inst: *mut c_void,
    run: *const u8,
    len: usize,
    err: *mut Buf,
) -> i32 {
    // SAFETY: as for `map_batch`.
    unsafe {
        let run = slice(run, len);
        guard(err, || {
            let job = instance::<J>(inst)?;
            let output = super::decode_pairs(run).collect::<Result<Vec<_>, _>>()?;
            job.done(output).map(|()| Vec::new())
        })
    }
}

unsafe extern "C" fn format<J: KeyedJob>(
    inst: *mut c_void,
    run: *const u8,
    len: usize,
    used: *mut usize,
    out: *mut Buf,
) -> i32 {
    let mut took = 0;
    // SAFETY: as for `map_batch`.
    let status = unsafe {
        let run = slice(run, len);
        guard(out, || {
            instance::<J>(inst)?;
            let (text, n) = format_pairs::<J::Key, J::Value>(run)?;
            took = n;
            Ok(text.into_bytes())
        })
    };
    if !used.is_null() {
        // SAFETY: not null, so valid for a write (the ABI).
        unsafe { *used = took };
    }
    status
}

/// The entry table for the keyed job `P` builds.
pub const fn entry<P: Build>() -> JobEntry
where
    P::Job: KeyedJob,
{
    JobEntry {
        v1: v1_of_v3(),
        kind: abi::KIND_KEYED,
        flags: 0,
        instance_new: Some(new_entry::<P>),
        instance_drop: Some(drop_instance::<P::Job>),
        load_open_v3: Some(load_open::<P::Job>),
        count_v3: Some(count::<P::Job>),
        map_v3: None,
        reduce_v3: None,
        done_v3: Some(done::<P::Job>),
        map_batch: Some(map_batch_entry::<P::Job>),
        reducer_new: Some(reducer_new::<P::Job>),
        reducer_add: Some(reducer_add::<P::Job>),
        reducer_finish: Some(reducer_finish::<P::Job>),
        reducer_free: Some(reducer_free::<P::Job>),
        format: Some(format::<P::Job>),
        fold_batch: None,
        load_batch: Some(load_batch),
    }
}
