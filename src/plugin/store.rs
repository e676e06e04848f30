//! Job libraries received over the wire (`INSTALL`), on a manager or a worker.
//!
//! Chunks are appended as they arrive (never reserved from the announced
//! total). The whole is then checked against the announced SHA-256, written
//! with owner-only permissions into a directory private to this process,
//! and loaded, on the store's installer thread: hashing a large library and
//! loading it (which runs its initialisers, user code) must not stall the
//! event loop. The last chunk's reply waits for that outcome; whoever sends
//! chunks of the same library meanwhile waits for it too. The directory is
//! removed when the store is dropped.
//!
//! Uploads under way are bounded: at most [`MAX_UPLOADS`] at once, whose
//! announced sizes add up to at most [`MAX_UPLOAD_BYTES`] (a new one past
//! either is refused with `BUSY`), and one that gets no chunk for
//! [`UPLOAD_IDLE`] is dropped by [`PluginStore::expire_uploads`], which the
//! server calls from its timer. So a sender that stops half-way (a `redmap
//! run` interrupted during its install) costs memory for a minute, not for
//! the life of the server.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use log::info;

use super::library::{probe, Library};
use super::loader::PluginHash;
use crate::exec::Runs;
use crate::proto::msg::{Install, InstallReply};
use crate::proto::{ErrorCode, Message, ProtoError};

/// Largest job library accepted.
pub const MAX_PLUGIN_SIZE: u64 = 1024 * 1024 * 1024;

/// Most uploads (libraries whose chunks are arriving, not yet complete) a
/// store takes at once. A client installs one library per `redmap run`
/// and a manager one per job on each worker, so 16 is far above need.
pub const MAX_UPLOADS: usize = 16;

/// Most bytes the uploads under way may announce in total (the sum of
/// their `total`s): two libraries of the largest size.
pub const MAX_UPLOAD_BYTES: u64 = 2 * MAX_PLUGIN_SIZE;

/// Bytes of job libraries a store that keeps bytes (a manager's) holds in
/// memory at most, uploads under way included: a client that installs
/// libraries and never runs them cannot pin more (an unused one goes after
/// the manager's TTL).
pub const MAX_KEPT_BYTES: u64 = 2 * MAX_PLUGIN_SIZE;

/// An upload that receives no chunk for this long is dropped (by
/// [`PluginStore::expire_uploads`]); its sender, if it comes back, is told
/// to start again from offset 0.
pub const UPLOAD_IDLE: Duration = Duration::from_secs(60);

struct Upload {
    total: u64,
    bytes: Vec<u8>,
    /// When its last chunk arrived.
    touched: Instant,
}

/// A complete upload being checked and loaded, and who waits for it.
struct Loading<W> {
    total: u64,
    waiters: Vec<W>,
    /// Uninstalled meanwhile: the outcome is discarded.
    uninstalled: bool,
}

/// An install's outcome: the library loaded, and its bytes.
type Loaded = (PluginHash, Result<(Arc<Library>, Arc<Vec<u8>>), ProtoError>);

/// Job libraries by hash. `W` names whoever waits for an install to finish
/// (a connection and request id, for a server).
pub struct PluginStore<W> {
    dir: PathBuf,
    installed: HashMap<PluginHash, Arc<Library>>,
    /// The bytes of each installed library, when kept (a manager sends
    /// them on to its workers); one copy per library, shared by its jobs.
    bytes: Option<HashMap<PluginHash, Arc<Vec<u8>>>>,
    uploads: HashMap<PluginHash, Upload>,
    loading: HashMap<PluginHash, Loading<W>>,
    to_installer: Sender<(PluginHash, Vec<u8>)>,
    from_installer: Receiver<Loaded>,
}

fn rejected(message: String) -> ProtoError {
    ProtoError::refused(ErrorCode::PLUGIN_REJECTED, message)
}

impl<W> PluginStore<W> {
    /// Creates `$TMPDIR/redmap-LABEL-PID`, readable by this user only, and
    /// the installer thread, which calls `notify` when an install is done
    /// (then [`PluginStore::finished`] has its outcome).
    ///
    /// `executors` (lanes, memory limit) is how the server runs a
    /// library's code: each library is checked by loading it in such an
    /// executor, which stays as the library's spare.
    pub fn new(
        label: &str,
        executors: Runs,
        notify: impl Fn() + Send + 'static,
    ) -> io::Result<PluginStore<W>> {
        let dir = std::env::temp_dir().join(format!("redmap-{label}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::DirBuilder::new().mode(0o700).create(&dir)?;
        remove_orphans(&dir, label);
        let (to_installer, work) = mpsc::channel::<(PluginHash, Vec<u8>)>();
        let (done, from_installer) = mpsc::channel();
        let install_dir = dir.clone();
        thread::Builder::new()
            .name("installer".into())
            .spawn(move || {
                for (hash, bytes) in work {
                    let outcome = install(&install_dir, hash, &bytes, executors)
                        .map(|plugin| (plugin, Arc::new(bytes)));
                    if done.send((hash, outcome)).is_err() {
                        return;
                    }
                    notify();
                }
            })?;
        Ok(PluginStore {
            dir,
            installed: HashMap::new(),
            bytes: None,
            uploads: HashMap::new(),
            loading: HashMap::new(),
            to_installer,
            from_installer,
        })
    }

    pub fn get(&self, hash: &PluginHash) -> Option<Arc<Library>> {
        self.installed.get(hash).cloned()
    }

    /// Keeps each installed library's bytes in memory, for
    /// [`PluginStore::bytes`] (a manager sends them on to its workers).
    pub fn keep_bytes(mut self) -> PluginStore<W> {
        self.bytes = Some(HashMap::new());
        self
    }

    /// The bytes of installed library `hash`, if the store keeps them: one
    /// copy, shared by every holder.
    pub fn bytes(&self, hash: &PluginHash) -> Option<Arc<Vec<u8>>> {
        self.bytes.as_ref()?.get(hash).cloned()
    }

    /// The hashes of the libraries installed.
    pub fn hashes(&self) -> impl Iterator<Item = &PluginHash> {
        self.installed.keys()
    }

    pub fn len(&self) -> usize {
        self.installed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.installed.is_empty()
    }

    /// Takes one chunk and says where the sender stands. `None`: the
    /// library is complete and being loaded; `waiter` gets its reply from
    /// [`PluginStore::finished`].
    ///
    /// Errors: `PLUGIN_REJECTED` for a library over [`MAX_PLUGIN_SIZE`] or
    /// chunks that contradict their upload; `BUSY` for a first chunk (offset
    /// 0) while [`MAX_UPLOADS`] other uploads are under way or when its size
    /// would take their total past [`MAX_UPLOAD_BYTES`] (nothing is stored:
    /// send it again later); `INTERNAL` if the installer thread is gone.
    pub fn receive(
        &mut self,
        waiter: W,
        chunk: Install,
    ) -> Result<Option<InstallReply>, ProtoError> {
        let hash = PluginHash(chunk.hash);
        if self.installed.contains_key(&hash) {
            self.uploads.remove(&hash);
            return Ok(Some(InstallReply {
                complete: true,
                next_offset: chunk.total,
            }));
        }
        if let Some(loading) = self.loading.get_mut(&hash) {
            // Installed again after an uninstall during the load: the same
            // bytes (same hash) are wanted after all.
            loading.uninstalled = false;
            loading.waiters.push(waiter);
            return Ok(None);
        }
        if chunk.total > MAX_PLUGIN_SIZE {
            return Err(rejected(format!(
                "library of {} bytes exceeds the limit of {MAX_PLUGIN_SIZE} bytes",
                chunk.total
            )));
        }
        let now = Instant::now();
        if chunk.offset == 0 {
            // A restart replaces the upload of the same hash: it does not
            // count against the limits twice.
            self.uploads.remove(&hash);
            self.admit(chunk.total)?;
            self.uploads.insert(
                hash,
                Upload {
                    total: chunk.total,
                    bytes: Vec::new(),
                    touched: now,
                },
            );
        }
        let Some(upload) = self.uploads.get_mut(&hash) else {
            return Ok(Some(InstallReply {
                complete: false,
                next_offset: 0,
            }));
        };
        upload.touched = now;
        let have = upload.bytes.len() as u64;
        if upload.total != chunk.total {
            // One hash, one size: a sender that says otherwise is broken,
            // and telling it to resume would only repeat the mismatch.
            let was = upload.total;
            self.uploads.remove(&hash);
            return Err(rejected(format!(
                "the library's total size changed between chunks, from {was} to {} bytes; \
                 send it again from offset 0",
                chunk.total
            )));
        }
        if chunk.offset != have {
            // Out of order: tell the sender where to resume.
            return Ok(Some(InstallReply {
                complete: false,
                next_offset: have,
            }));
        }
        if have + chunk.chunk.len() as u64 > upload.total {
            self.uploads.remove(&hash);
            return Err(rejected("chunks exceed the announced size".into()));
        }
        upload.bytes.extend_from_slice(&chunk.chunk);
        if (upload.bytes.len() as u64) < upload.total {
            return Ok(Some(InstallReply {
                complete: false,
                next_offset: upload.bytes.len() as u64,
            }));
        }
        let Some(upload) = self.uploads.remove(&hash) else {
            return Err(ProtoError::Internal("upload vanished".into()));
        };
        if self.to_installer.send((hash, upload.bytes)).is_err() {
            return Err(ProtoError::Internal("the installer thread is gone".into()));
        }
        self.loading.insert(
            hash,
            Loading {
                total: upload.total,
                waiters: vec![waiter],
                uninstalled: false,
            },
        );
        Ok(None)
    }

    /// Whether a new upload announcing `total` bytes fits beside those
    /// under way (receiving chunks, or complete and waiting to be checked
    /// and loaded), and (when the store keeps bytes) beside the libraries
    /// kept in memory; `BUSY` if not.
    fn admit(&self, total: u64) -> Result<(), ProtoError> {
        // Complete uploads waiting for the installer still hold their bytes.
        let under_way = self.uploads.len() + self.loading.len();
        let announced: u64 = self.uploads.values().map(|u| u.total).sum::<u64>()
            + self.loading.values().map(|l| l.total).sum::<u64>();
        if under_way >= MAX_UPLOADS {
            return Err(ProtoError::refused(
                ErrorCode::BUSY,
                format!(
                    "{under_way} library uploads are under way here, the most taken at once; \
                     send it again later"
                ),
            ));
        }
        let kept = self
            .bytes
            .as_ref()
            .map(|b| b.values().map(|v| v.len() as u64).sum::<u64>());
        if let Some(kept) = kept.filter(|k| k + announced + total > MAX_KEPT_BYTES) {
            return Err(ProtoError::refused(
                ErrorCode::BUSY,
                format!(
                    "job libraries of {} bytes are held here, and {total} more would pass \
                     the limit of {MAX_KEPT_BYTES} bytes; send it again once jobs have ended",
                    kept + announced
                ),
            ));
        }
        if announced + total > MAX_UPLOAD_BYTES {
            return Err(ProtoError::refused(
                ErrorCode::BUSY,
                format!(
                    "library uploads of {announced} bytes are under way here, and {total} more \
                     would pass the limit of {MAX_UPLOAD_BYTES} bytes; send it again later"
                ),
            ));
        }
        Ok(())
    }

    /// Drops the uploads that have received no chunk for [`UPLOAD_IDLE`]
    /// as of `now` (their senders stopped half-way), and returns how many
    /// it dropped. A server calls it from its timer, at
    /// [`PluginStore::next_upload_deadline`] or at any time: it is cheap
    /// (one pass over at most [`MAX_UPLOADS`] entries) and drops nothing
    /// early. A sender that comes back is answered `complete = 0, next
    /// offset = 0` and starts again.
    pub fn expire_uploads(&mut self, now: Instant) -> usize {
        let before = self.uploads.len();
        self.uploads.retain(|hash, upload| {
            let idle = now.saturating_duration_since(upload.touched);
            let keep = idle < UPLOAD_IDLE;
            if !keep {
                info!(
                    "dropped the upload of job library {} after {} s without a chunk \
                     ({} of {} bytes received)",
                    hash.short(),
                    idle.as_secs(),
                    upload.bytes.len(),
                    upload.total
                );
            }
            keep
        });
        before - self.uploads.len()
    }

    /// When [`PluginStore::expire_uploads`] next has an upload to drop
    /// (the earliest last chunk plus [`UPLOAD_IDLE`]), or `None` with no
    /// upload under way: for a server's next timer.
    pub fn next_upload_deadline(&self) -> Option<Instant> {
        self.uploads.values().map(|u| u.touched + UPLOAD_IDLE).min()
    }

    /// Installs that ended since the last call: each waiter with its reply.
    pub fn finished(&mut self) -> Vec<(W, Result<InstallReply, ProtoError>)> {
        let mut replies = Vec::new();
        while let Ok((hash, outcome)) = self.from_installer.try_recv() {
            let Some(loading) = self.loading.remove(&hash) else {
                continue;
            };
            let outcome = match outcome {
                Ok(_) if loading.uninstalled => {
                    let _ = fs::remove_file(self.path_of(&hash));
                    Err(rejected(format!(
                        "job library {} was uninstalled while it was being loaded",
                        hash.short()
                    )))
                }
                Ok((plugin, bytes)) => {
                    self.installed.insert(hash, plugin);
                    if let Some(kept) = &mut self.bytes {
                        kept.insert(hash, bytes);
                    }
                    Ok(InstallReply {
                        complete: true,
                        next_offset: loading.total,
                    })
                }
                Err(e) => Err(e),
            };
            for waiter in loading.waiters {
                replies.push((waiter, outcome.clone()));
            }
        }
        replies
    }

    fn path_of(&self, hash: &PluginHash) -> PathBuf {
        library_path(&self.dir, hash)
    }

    /// Forgets every library and deletes their files; returns how many.
    pub fn remove_all(&mut self) -> usize {
        let hashes: Vec<PluginHash> = self
            .installed
            .keys()
            .chain(self.loading.keys())
            .chain(self.uploads.keys())
            .copied()
            .collect();
        let installed = self.installed.len();
        for hash in hashes {
            self.remove(&hash);
        }
        installed
    }

    /// Forgets a library and deletes its file. The code stays mapped, as
    /// libraries are never unloaded, but a new install writes it afresh.
    pub fn remove(&mut self, hash: &PluginHash) -> bool {
        self.uploads.remove(hash);
        if let Some(loading) = self.loading.get_mut(hash) {
            loading.uninstalled = true;
        }
        if let Some(kept) = &mut self.bytes {
            kept.remove(hash);
        }
        let removed = self.installed.remove(hash).is_some();
        if removed {
            let _ = fs::remove_file(self.path_of(hash));
        }
        removed
    }
}

/// Removes the directories that servers of this user left behind when they
/// were killed (they remove their own on a clean exit): `redmap-LABEL-PID`
/// next to `ours`, owned by the same user, for a PID that no longer runs.
fn remove_orphans(ours: &Path, label: &str) {
    use std::os::unix::fs::MetadataExt;
    let (Some(tmp), Ok(meta)) = (ours.parent(), fs::metadata(ours)) else {
        return;
    };
    let Ok(entries) = fs::read_dir(tmp) else {
        return;
    };
    let uid = meta.uid();
    let prefix = format!("redmap-{label}-");
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let mine = fs::symlink_metadata(entry.path()).is_ok_and(|m| m.is_dir() && m.uid() == uid);
        if mine && !process_exists(pid) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// What a server keeps under the temporary directory while it runs, by
/// name: `redmap-KIND-PID-…` (map and partition outputs, spills, outputs,
/// task logs). A server killed with SIGKILL cannot remove its own.
const TEMPORARY_KINDS: &[&str] = &["map", "part", "spill", "output", "tasks"];

/// Removes the files (and spill directories) in `dir` that servers of this
/// user left when they were killed: named as [`TEMPORARY_KINDS`] say, for a
/// PID that no longer runs. Returns how many went.
pub fn remove_orphan_files(dir: &Path) -> usize {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: getuid cannot fail and has no preconditions.
    let uid = unsafe { libc::getuid() };
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| {
            let rest = n.strip_prefix("redmap-")?;
            let (kind, rest) = rest.split_once('-')?;
            let (pid, _) = rest.split_once('-')?;
            let all_digits = !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit());
            (TEMPORARY_KINDS.contains(&kind) && all_digits).then(|| pid.parse::<u32>().ok())?
        }) else {
            continue;
        };
        let Ok(meta) = fs::symlink_metadata(entry.path()) else {
            continue;
        };
        if meta.uid() != uid || process_exists(pid) || meta.file_type().is_symlink() {
            continue;
        }
        let gone = if meta.is_dir() {
            fs::remove_dir_all(entry.path())
        } else {
            fs::remove_file(entry.path())
        };
        removed += usize::from(gone.is_ok());
    }
    removed
}

/// Whether a process with this id runs (signal 0 checks without sending).
fn process_exists(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return true; // no process has such an id: not a name we made
    };
    if pid <= 0 {
        return true; // not a single process: leave it alone
    }
    // SAFETY: kill with signal 0 sends nothing; it only checks that the
    // process exists and may be signalled.
    if unsafe { libc::kill(pid, 0) } == 0 {
        return true;
    }
    // EPERM: it exists, as another user's. Only ESRCH means gone.
    std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// The reply to an install's last chunk, once the library is loaded.
pub fn install_reply(outcome: Result<InstallReply, ProtoError>) -> Message {
    match outcome {
        Ok(reply) => Message::InstallReply(reply),
        Err(e) => Message::error(&e),
    }
}

fn library_path(dir: &Path, hash: &PluginHash) -> PathBuf {
    dir.join(format!("{hash}.{}", std::env::consts::DLL_EXTENSION))
}

/// Checks, writes and probes a complete library (on the installer
/// thread): it is loaded in an executor process, never in this one.
fn install(
    dir: &Path,
    hash: PluginHash,
    bytes: &[u8],
    executors: Runs,
) -> Result<Arc<Library>, ProtoError> {
    let actual = PluginHash::of(bytes);
    if actual != hash {
        return Err(rejected(format!(
            "library hash mismatch: announced {}, received {}",
            hash.short(),
            actual.short()
        )));
    }
    let path = library_path(dir, &hash);
    let written = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| f.write_all(bytes));
    written.map_err(|e| {
        let _ = fs::remove_file(&path);
        ProtoError::Internal(format!("cannot store the library: {e}"))
    })?;
    let library = probe(&path, hash, executors).map_err(|why| {
        let _ = fs::remove_file(&path);
        rejected(why)
    })?;
    info!(
        "installed job library {} ({} bytes)",
        hash.short(),
        bytes.len()
    );
    Ok(Arc::new(library))
}

impl<W> Drop for PluginStore<W> {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_that_killed_servers_left_go_and_a_live_ones_stay() {
        let dir = std::env::temp_dir().join(format!("redmap-orphans-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        // No process has this id (above the usual pid_max of 4,194,304).
        let dead = 4_194_999u32;
        let live = std::process::id();
        for name in [
            format!("redmap-map-{dead}-job-1-0.bin"),
            format!("redmap-part-{dead}-job-1-2-0.txt"),
            format!("redmap-tasks-{dead}-job-1-0"),
            format!("redmap-map-{live}-job-1-0.bin"),
            format!("redmap-notes-{dead}-x"),
        ] {
            fs::write(dir.join(name), b"x").unwrap();
        }
        fs::create_dir_all(dir.join(format!("redmap-spill-{dead}-job-1-0"))).unwrap();
        assert_eq!(remove_orphan_files(&dir), 4);
        let mut left: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                format!("redmap-map-{live}-job-1-0.bin"),
                format!("redmap-notes-{dead}-x")
            ]
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    fn store(label: &str) -> PluginStore<u32> {
        let runs = Runs {
            lanes: 1,
            memory_limit: 0,
            restart: true,
        };
        PluginStore::new(&format!("test-{label}"), runs, || {}).expect("a store")
    }

    /// A chunk of the library named `n` (its hash is `[n; 32]`).
    fn chunk(n: u8, total: u64, offset: u64, bytes: &[u8]) -> Install {
        Install {
            hash: [n; 32],
            total,
            offset,
            chunk: bytes.to_vec(),
        }
    }

    fn busy(outcome: Result<Option<InstallReply>, ProtoError>) -> String {
        match outcome {
            Err(e) if e.code() == ErrorCode::BUSY => e.to_string(),
            other => panic!("expected BUSY, got {other:?}"),
        }
    }

    fn wants(outcome: Result<Option<InstallReply>, ProtoError>, next_offset: u64) {
        let reply = outcome.expect("accepted").expect("a reply now");
        assert_eq!((reply.complete, reply.next_offset), (false, next_offset));
    }

    #[test]
    fn uploads_past_the_count_cap_are_busy_and_the_rest_go_on() {
        let mut store = store("upload-count");
        for n in 0..MAX_UPLOADS as u8 {
            wants(store.receive(0, chunk(n, 10, 0, b"a")), 1);
        }
        let refused = busy(store.receive(0, chunk(200, 10, 0, b"a")));
        assert!(refused.contains("16 library uploads"), "{refused}");
        assert_eq!(store.uploads.len(), MAX_UPLOADS, "nothing stored");
        // Those under way go on, and a restart does not count twice.
        wants(store.receive(0, chunk(0, 10, 1, b"b")), 2);
        wants(store.receive(0, chunk(1, 10, 0, b"a")), 1);
        // Once one is dropped, there is room again.
        store.remove(&PluginHash([2; 32]));
        wants(store.receive(0, chunk(200, 10, 0, b"a")), 1);
    }

    #[test]
    fn uploads_past_the_byte_cap_are_busy() {
        let mut store = store("upload-bytes");
        // Sizes are announced, not reserved: these cost a byte each.
        wants(store.receive(0, chunk(1, MAX_PLUGIN_SIZE, 0, b"a")), 1);
        wants(store.receive(0, chunk(2, MAX_PLUGIN_SIZE, 0, b"a")), 1);
        let refused = busy(store.receive(0, chunk(3, 1, 0, b"a")));
        assert!(refused.contains("limit of 2147483648 bytes"), "{refused}");
        // Restarting one of them with the same size fits in its own room.
        wants(store.receive(0, chunk(2, MAX_PLUGIN_SIZE, 0, b"a")), 1);
    }

    #[test]
    fn a_manager_store_counts_the_libraries_it_keeps_against_its_memory_cap() {
        let mut manager = store("kept-bytes").keep_bytes();
        let big = Arc::new(vec![0u8; 1 << 20]);
        let held = MAX_KEPT_BYTES / (1 << 20) - 1;
        for n in 0..held {
            let mut hash = [0u8; 32];
            hash[..8].copy_from_slice(&n.to_le_bytes());
            // Shared bytes count by length; what matters is the sum.
            if let Some(kept) = &mut manager.bytes {
                kept.insert(PluginHash(hash), Arc::clone(&big));
            }
        }
        wants(manager.receive(0, chunk(1, 1 << 20, 0, b"a")), 1);
        let refused = busy(manager.receive(0, chunk(2, 1, 0, b"a")));
        assert!(refused.contains("job libraries of"), "{refused}");
        // A worker's store keeps no bytes, and has no such limit.
        let mut worker = store("kept-none");
        assert!(worker.bytes(&PluginHash([1; 32])).is_none());
        wants(worker.receive(0, chunk(1, 1 << 20, 0, b"a")), 1);
    }

    #[test]
    fn a_complete_upload_waiting_for_the_installer_still_counts() {
        let mut store = store("upload-loading");
        for n in 0..MAX_UPLOADS as u8 - 1 {
            wants(store.receive(0, chunk(n, 10, 0, b"a")), 1);
        }
        // Complete: it leaves the uploads for the installer's queue, where
        // its bytes still are until its outcome is taken.
        let queued = store.receive(0, chunk(100, 1, 0, b"a"));
        assert!(matches!(queued, Ok(None)), "{queued:?}");
        let refused = busy(store.receive(0, chunk(200, 10, 0, b"a")));
        assert!(refused.contains("16 library uploads"), "{refused}");
    }

    #[test]
    fn an_idle_upload_is_dropped_and_its_sender_starts_again() {
        let mut store = store("upload-idle");
        assert_eq!(store.next_upload_deadline(), None);
        let before = Instant::now();
        wants(store.receive(0, chunk(1, 10, 0, b"abc")), 3);
        let deadline = store.next_upload_deadline().expect("a deadline");
        assert!(deadline >= before + UPLOAD_IDLE);
        assert!(deadline <= Instant::now() + UPLOAD_IDLE);
        // Not yet idle long enough: kept.
        assert_eq!(store.expire_uploads(Instant::now()), 0);
        // A chunk moves the deadline on.
        std::thread::sleep(Duration::from_millis(5));
        wants(store.receive(0, chunk(1, 10, 3, b"de")), 5);
        assert!(store.next_upload_deadline().unwrap() > deadline);
        // Idle for UPLOAD_IDLE: dropped, and the sender is told to restart.
        assert_eq!(store.expire_uploads(Instant::now() + UPLOAD_IDLE), 1);
        assert_eq!(store.next_upload_deadline(), None);
        assert!(store.uploads.is_empty());
        wants(store.receive(0, chunk(1, 10, 5, b"fg")), 0);
        assert!(store.uploads.is_empty(), "a chunk not at 0 starts nothing");
    }
}
