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

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread;

use log::info;

use super::loader::{Plugin, PluginHash};
use crate::proto::msg::{Install, InstallReply};
use crate::proto::{ErrorCode, Message, ProtoError};

/// Largest job library accepted.
pub const MAX_PLUGIN_SIZE: u64 = 1024 * 1024 * 1024;

struct Upload {
    total: u64,
    bytes: Vec<u8>,
}

/// A complete upload being checked and loaded, and who waits for it.
struct Loading<W> {
    total: u64,
    waiters: Vec<W>,
    /// Uninstalled meanwhile: the outcome is discarded.
    uninstalled: bool,
}

/// An install's outcome: the library loaded, and its bytes.
type Loaded = (PluginHash, Result<(Arc<Plugin>, Arc<Vec<u8>>), ProtoError>);

/// Job libraries by hash. `W` names whoever waits for an install to finish
/// (a connection and request id, for a server).
pub struct PluginStore<W> {
    dir: PathBuf,
    installed: HashMap<PluginHash, Arc<Plugin>>,
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
    pub fn new(label: &str, notify: impl Fn() + Send + 'static) -> io::Result<PluginStore<W>> {
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
                    let outcome =
                        install(&install_dir, hash, &bytes).map(|plugin| (plugin, Arc::new(bytes)));
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

    pub fn get(&self, hash: &PluginHash) -> Option<Arc<Plugin>> {
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
        if chunk.offset == 0 {
            self.uploads.insert(
                hash,
                Upload {
                    total: chunk.total,
                    bytes: Vec::new(),
                },
            );
        }
        let Some(upload) = self.uploads.get_mut(&hash) else {
            return Ok(Some(InstallReply {
                complete: false,
                next_offset: 0,
            }));
        };
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

/// Whether a process with this id runs (signal 0 checks without sending).
fn process_exists(pid: u32) -> bool {
    extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    let Ok(pid) = i32::try_from(pid) else {
        return true; // no process has such an id: not a name we made
    };
    if pid <= 0 {
        return true; // not a single process: leave it alone
    }
    // SAFETY: signal 0 only checks that the process exists.
    if unsafe { kill(pid, 0) } == 0 {
        return true;
    }
    // EPERM: it exists, as another user's. Only ESRCH means gone.
    const ESRCH: i32 = 3;
    std::io::Error::last_os_error().raw_os_error() != Some(ESRCH)
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

/// Checks, writes and loads a complete library (on the installer thread).
fn install(dir: &Path, hash: PluginHash, bytes: &[u8]) -> Result<Arc<Plugin>, ProtoError> {
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
    let plugin = Plugin::open_hashed(&path, hash).map_err(|e| {
        let _ = fs::remove_file(&path);
        rejected(e.to_string())
    })?;
    info!(
        "installed job library {} ({} bytes)",
        hash.short(),
        bytes.len()
    );
    Ok(plugin)
}

impl<W> Drop for PluginStore<W> {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}
