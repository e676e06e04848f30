//! Job libraries received over the wire (`INSTALL`), on a manager or a worker.
//!
//! Chunks are appended as they arrive (never reserved from the announced
//! total), the whole is checked against the announced SHA-256, written with
//! owner-only permissions into a directory private to this process, and
//! loaded. The directory is removed when the store is dropped.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::Arc;

use log::info;

use super::loader::{Plugin, PluginHash};
use crate::proto::msg::{Install, InstallReply};
use crate::proto::{ErrorCode, ProtoError};

/// Largest job library accepted.
pub const MAX_PLUGIN_SIZE: u64 = 1024 * 1024 * 1024;

struct Upload {
    total: u64,
    bytes: Vec<u8>,
}

pub struct PluginStore {
    dir: PathBuf,
    installed: HashMap<PluginHash, Arc<Plugin>>,
    uploads: HashMap<PluginHash, Upload>,
}

fn rejected(message: String) -> ProtoError {
    ProtoError::refused(ErrorCode::PLUGIN_REJECTED, message)
}

impl PluginStore {
    /// Creates `$TMPDIR/redmap-LABEL-PID`, readable by this user only.
    pub fn new(label: &str) -> io::Result<PluginStore> {
        let dir = std::env::temp_dir().join(format!("redmap-{label}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::DirBuilder::new().mode(0o700).create(&dir)?;
        Ok(PluginStore {
            dir,
            installed: HashMap::new(),
            uploads: HashMap::new(),
        })
    }

    pub fn get(&self, hash: &PluginHash) -> Option<Arc<Plugin>> {
        self.installed.get(hash).cloned()
    }

    pub fn len(&self) -> usize {
        self.installed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.installed.is_empty()
    }

    /// Takes one chunk; says whether the library is complete.
    pub fn receive(&mut self, chunk: Install) -> Result<InstallReply, ProtoError> {
        let hash = PluginHash(chunk.hash);
        if self.installed.contains_key(&hash) {
            self.uploads.remove(&hash);
            return Ok(InstallReply {
                complete: true,
                next_offset: chunk.total,
            });
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
            return Ok(InstallReply {
                complete: false,
                next_offset: 0,
            });
        };
        let have = upload.bytes.len() as u64;
        if chunk.offset != have || upload.total != chunk.total {
            // Out of order: tell the sender where to resume.
            return Ok(InstallReply {
                complete: false,
                next_offset: have,
            });
        }
        if have + chunk.chunk.len() as u64 > upload.total {
            self.uploads.remove(&hash);
            return Err(rejected("chunks exceed the announced size".into()));
        }
        upload.bytes.extend_from_slice(&chunk.chunk);
        if (upload.bytes.len() as u64) < upload.total {
            return Ok(InstallReply {
                complete: false,
                next_offset: upload.bytes.len() as u64,
            });
        }
        let Some(upload) = self.uploads.remove(&hash) else {
            return Err(ProtoError::Internal("upload vanished".into()));
        };
        self.install(hash, &upload.bytes)?;
        Ok(InstallReply {
            complete: true,
            next_offset: upload.total,
        })
    }

    fn install(&mut self, hash: PluginHash, bytes: &[u8]) -> Result<Arc<Plugin>, ProtoError> {
        let actual = PluginHash::of(bytes);
        if actual != hash {
            return Err(rejected(format!(
                "library hash mismatch: announced {}, received {}",
                hash.short(),
                actual.short()
            )));
        }
        let path = self
            .dir
            .join(format!("{hash}.{}", std::env::consts::DLL_EXTENSION));
        let written = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(bytes));
        written.map_err(|e| ProtoError::Internal(format!("cannot store the library: {e}")))?;
        let plugin = Plugin::open(&path).map_err(|e| rejected(e.to_string()))?;
        info!(
            "installed job library {} ({} bytes)",
            hash.short(),
            bytes.len()
        );
        self.installed.insert(hash, Arc::clone(&plugin));
        Ok(plugin)
    }

    /// Forgets a library and deletes its file. The code stays mapped, as
    /// libraries are never unloaded, but a new install writes it afresh.
    pub fn remove(&mut self, hash: &PluginHash) -> bool {
        self.uploads.remove(hash);
        let removed = self.installed.remove(hash).is_some();
        if removed {
            let path = self
                .dir
                .join(format!("{hash}.{}", std::env::consts::DLL_EXTENSION));
            let _ = fs::remove_file(path);
        }
        removed
    }
}

impl Drop for PluginStore {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}
