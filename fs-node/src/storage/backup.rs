//! Backups of a running store: freeze, copy the frozen (immutable) segment and hint files into
//! a directory, write a manifest listing every file with its size and MD5, unfreeze. The
//! manifest is written last, so a backup without one is incomplete. Restore verifies first,
//! then copies into an empty data directory; the node then catches up from its peers (or from
//! its log) after the backup's zxid.

use crate::storage::disk_store::DiskStore;
use crate::storage::error::{Result, StorageError};
use crate::storage::vfs::Vfs;
use md5::{Digest, Md5};
use protocol::Zxid;
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const MANIFEST_NAME: &str = "MANIFEST.json";
/// The manifest's format; bump when its meaning changes.
pub const MANIFEST_FORMAT: u32 = 1;
/// Copy buffer.
const COPY_CHUNK_BYTES: usize = 1024 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    pub name: String,
    pub size: u64,
    /// Lower-case hex.
    pub md5: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// The store's state in the backup is exactly every change up to this zxid.
    pub zxid: u64,
    pub files: Vec<ManifestFile>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Copies `from` to `to` (via `vfs`), durably; returns the size and MD5 of what was copied.
fn copy_file(vfs: &dyn Vfs, from: &Path, to: &Path) -> Result<(u64, String)> {
    let src = vfs.open(from, false).map_err(|e| StorageError::io("opening", from, e))?;
    let dst = vfs.open(to, true).map_err(|e| StorageError::io("creating", to, e))?;
    dst.set_len(0).map_err(|e| StorageError::io("writing", to, e))?;
    let len = src.len().map_err(|e| StorageError::io("sizing", from, e))?;
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; COPY_CHUNK_BYTES];
    let mut off = 0u64;
    while off < len {
        let n = ((len - off) as usize).min(COPY_CHUNK_BYTES);
        src.read_exact_at(&mut buf[..n], off).map_err(|e| StorageError::io("reading", from, e))?;
        dst.write_all_at(&buf[..n], off).map_err(|e| StorageError::io("writing", to, e))?;
        md5.update(&buf[..n]);
        off += n as u64;
    }
    dst.sync_data().map_err(|e| StorageError::io("syncing", to, e))?;
    Ok((len, hex(&md5.finalize())))
}

fn file_md5(vfs: &dyn Vfs, path: &Path) -> Result<(u64, String)> {
    let file = vfs.open(path, false).map_err(|e| StorageError::io("opening", path, e))?;
    let len = file.len().map_err(|e| StorageError::io("sizing", path, e))?;
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; COPY_CHUNK_BYTES];
    let mut off = 0u64;
    while off < len {
        let n = ((len - off) as usize).min(COPY_CHUNK_BYTES);
        file.read_exact_at(&mut buf[..n], off).map_err(|e| StorageError::io("reading", path, e))?;
        md5.update(&buf[..n]);
        off += n as u64;
    }
    Ok((len, hex(&md5.finalize())))
}

/// Makes a consistent backup of a running store into `dest` (created if missing; must not
/// already hold a backup). Writes continue meanwhile. Leaves the store frozen only if it was
/// frozen before.
pub fn backup(store: &DiskStore, dest: &Path) -> Result<Manifest> {
    let vfs = store.vfs().clone();
    vfs.create_dir_all(dest).map_err(|e| StorageError::io("creating", dest, e))?;
    if vfs.exists(&dest.join(MANIFEST_NAME)) {
        return Err(StorageError::State(format!(
            "{} already holds a backup; choose an empty directory",
            dest.display()
        )));
    }
    let was_frozen = store.is_frozen();
    let frozen = store.freeze()?;
    let result = (|| {
        let mut files = Vec::new();
        for path in &frozen.files {
            let name = path.file_name().expect("segment file name").to_string_lossy().into_owned();
            let (size, md5) = copy_file(vfs.as_ref(), path, &dest.join(&name))?;
            files.push(ManifestFile { name, size, md5 });
        }
        let manifest = Manifest { format: MANIFEST_FORMAT, zxid: frozen.zxid.0, files };
        let json = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| StorageError::State(format!("encoding the manifest: {e}")))?;
        let path = dest.join(MANIFEST_NAME);
        let file = vfs.open(&path, true).map_err(|e| StorageError::io("creating", &path, e))?;
        file.write_all_at(&json, 0).map_err(|e| StorageError::io("writing", &path, e))?;
        file.sync_data().map_err(|e| StorageError::io("syncing", &path, e))?;
        vfs.sync_dir(dest).map_err(|e| StorageError::io("syncing", dest, e))?;
        Ok(manifest)
    })();
    if !was_frozen {
        store.unfreeze();
    }
    result
}

/// Checks every file of the backup in `dir` against its manifest (size and MD5). Returns the
/// manifest, or [`StorageError::BackupMismatch`] naming every problem.
pub fn verify(vfs: &dyn Vfs, dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST_NAME);
    let file = vfs.open(&path, false).map_err(|e| StorageError::io("opening", &path, e))?;
    let len = file.len().map_err(|e| StorageError::io("sizing", &path, e))?;
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, 0).map_err(|e| StorageError::io("reading", &path, e))?;
    let manifest: Manifest =
        serde_json::from_slice(&buf).map_err(|e| StorageError::BackupMismatch {
            dir: dir.to_path_buf(),
            problems: vec![format!("{MANIFEST_NAME} is unreadable: {e}")],
        })?;
    let mut problems = Vec::new();
    if manifest.format != MANIFEST_FORMAT {
        problems.push(format!(
            "manifest format {} (this build reads {MANIFEST_FORMAT})",
            manifest.format
        ));
    }
    for f in &manifest.files {
        let p = dir.join(&f.name);
        if !vfs.exists(&p) {
            problems.push(format!("{} is missing", f.name));
            continue;
        }
        let (size, md5) = file_md5(vfs, &p)?;
        if size != f.size {
            problems.push(format!("{}: {} bytes, manifest says {}", f.name, size, f.size));
        } else if md5 != f.md5 {
            problems.push(format!("{}: MD5 {}, manifest says {}", f.name, md5, f.md5));
        }
    }
    if !problems.is_empty() {
        return Err(StorageError::BackupMismatch { dir: dir.to_path_buf(), problems });
    }
    Ok(manifest)
}

/// Restores the backup in `backup_dir` into `data_dir` (which must hold no data files),
/// after verifying it. Returns the zxid the restored store is at: open it with
/// [`DiskStore::open`], reset the data log to this zxid and catch up from there.
pub fn restore(vfs: &dyn Vfs, backup_dir: &Path, data_dir: &Path) -> Result<Zxid> {
    let manifest = verify(vfs, backup_dir)?;
    vfs.create_dir_all(data_dir).map_err(|e| StorageError::io("creating", data_dir, e))?;
    let existing = vfs.list(data_dir).map_err(|e| StorageError::io("listing", data_dir, e))?;
    if !existing.is_empty() {
        return Err(StorageError::State(format!(
            "{} is not empty: restore only into an empty data directory (move the old one aside)",
            data_dir.display()
        )));
    }
    for f in &manifest.files {
        let (size, md5) = copy_file(vfs, &backup_dir.join(&f.name), &data_dir.join(&f.name))?;
        if size != f.size || md5 != f.md5 {
            return Err(StorageError::BackupMismatch {
                dir: backup_dir.to_path_buf(),
                problems: vec![format!("{} changed while being restored", f.name)],
            });
        }
    }
    vfs.sync_dir(data_dir).map_err(|e| StorageError::io("syncing", data_dir, e))?;
    Ok(Zxid(manifest.zxid))
}
