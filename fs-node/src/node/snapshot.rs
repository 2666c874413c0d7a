//! Durable snapshots of a node: immutable directories `<data>/snapshots/<zxid>/` holding the
//! store's sealed data and hint files (hard links), the state machine's [`Tables`] at the same
//! zxid, and a `MANIFEST.json` in the backup format ([`storage::backup`](crate::storage::backup)),
//! so that a snapshot directory is also a valid backup (`verify` and `restore` accept it) and
//! is exactly what a file transfer sends.
//!
//! # Why a directory and not the live store
//! After a crash the live store may hold batches above its last checkpoint (unsynced writes
//! that happened to survive). Loading tables saved at an older zxid beside such a store would
//! evaluate conditions against a newer store than the tables. A snapshot directory is sealed
//! files only, all at exactly one zxid, and never changes, so start-up rebuilds `store/` from
//! it (hard links again) and replays the log after it.
//!
//! # Crash safety
//! A snapshot is built in `<zxid>.tmp/`: hard links (the linked files are sealed, so synced and
//! immutable), the `tables` file (CRC-framed, synced), the manifest (synced), then the
//! directory is synced, renamed to `<zxid>/` and the parent synced. A `.tmp` directory is an
//! unfinished snapshot and is deleted at start-up; a directory without a manifest is ignored.
//! Older snapshots are deleted only after a newer one is complete.

use crate::state::Tables;
use crate::storage::backup::{Manifest, ManifestFile, MANIFEST_FORMAT, MANIFEST_NAME};
use crate::storage::DiskStore;
use md5::{Digest, Md5};
use protocol::Zxid;
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Directory of the snapshots under the data directory.
pub const SNAPSHOTS_DIR: &str = "snapshots";
/// The state machine's tables inside a snapshot.
pub const TABLES_FILE: &str = "tables";
/// Suffix of a snapshot being built.
pub const TMP_SUFFIX: &str = ".tmp";
/// Magic in front of the tables file ("Shoal TaBles").
const TABLES_MAGIC: &[u8; 4] = b"SHTB";
/// Largest tables file read back (locks, sessions and remembered requests of a big cluster).
pub const TABLES_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Read buffer for hashing.
const HASH_CHUNK_BYTES: usize = 1024 * 1024;

/// A complete snapshot on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotDir {
    pub zxid: Zxid,
    pub path: PathBuf,
}

impl SnapshotDir {
    /// Every file of the snapshot, the manifest last (what a transfer sends).
    pub fn files(&self) -> Result<Vec<PathBuf>, String> {
        let manifest = read_manifest(&self.path)?;
        let mut files: Vec<PathBuf> =
            manifest.files.iter().map(|f| self.path.join(&f.name)).collect();
        files.push(self.path.join(MANIFEST_NAME));
        Ok(files)
    }
}

/// The name of the directory of a snapshot at `zxid` (zero-padded so names sort by zxid).
pub fn dir_name(zxid: Zxid) -> String {
    format!("{:020}", zxid.0)
}

fn io(what: &str, path: &Path, e: std::io::Error) -> String {
    format!("{what} {}: {e}", path.display())
}

/// Syncs a directory (creations, renames and removals in it become durable).
pub fn sync_dir(path: &Path) -> Result<(), String> {
    File::open(path).and_then(|d| d.sync_all()).map_err(|e| io("syncing", path, e))
}

/// Encodes tables with a magic, length and CRC32C (the manifest's MD5 covers the file too, but
/// the CRC lets start-up check the tables without hashing the whole snapshot).
pub fn encode_tables(tables: &Tables) -> Result<Vec<u8>, String> {
    let payload =
        tables.encode(TABLES_BYTES_MAX).map_err(|e| format!("encoding the tables: {e}"))?;
    let mut out = Vec::with_capacity(payload.len() + 16);
    out.extend_from_slice(TABLES_MAGIC);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Decodes what [`encode_tables`] wrote; names what is wrong otherwise.
pub fn decode_tables(bytes: &[u8]) -> Result<Tables, String> {
    if bytes.len() < 16 || &bytes[..4] != TABLES_MAGIC {
        return Err("the tables file has no valid header".into());
    }
    let len = u64::from_le_bytes(bytes[4..12].try_into().expect("8 bytes")) as usize;
    let crc = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes"));
    let payload = &bytes[16..];
    if payload.len() != len {
        return Err(format!(
            "the tables file holds {} bytes, its header says {len}",
            payload.len()
        ));
    }
    if crc32c::crc32c(payload) != crc {
        return Err("the tables file fails its CRC".into());
    }
    Tables::decode(payload, TABLES_BYTES_MAX).map_err(|e| format!("decoding the tables: {e}"))
}

/// Reads and checks the tables of the snapshot in `dir`.
pub fn read_tables(dir: &Path) -> Result<Tables, String> {
    let path = dir.join(TABLES_FILE);
    let mut bytes = Vec::new();
    File::open(&path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| io("reading", &path, e))?;
    decode_tables(&bytes)
}

/// Reads the manifest of the snapshot or backup in `dir`.
pub fn read_manifest(dir: &Path) -> Result<Manifest, String> {
    let path = dir.join(MANIFEST_NAME);
    let bytes = std::fs::read(&path).map_err(|e| io("reading", &path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{} is unreadable: {e}", path.display()))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut f = File::create(path).map_err(|e| io("creating", path, e))?;
    f.write_all(bytes).map_err(|e| io("writing", path, e))?;
    f.sync_all().map_err(|e| io("syncing", path, e))
}

fn md5_hex(path: &Path) -> Result<(u64, String), String> {
    let mut f = File::open(path).map_err(|e| io("opening", path, e))?;
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; HASH_CHUNK_BYTES];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| io("reading", path, e))?;
        if n == 0 {
            break;
        }
        md5.update(&buf[..n]);
        len += n as u64;
    }
    Ok((len, md5.finalize().iter().map(|b| format!("{b:02x}")).collect()))
}

/// The part of a snapshot taken on the core task: consistent, fast (hard links and one small
/// file), no hashing. [`Pending::finish`] completes it off the core.
#[derive(Debug)]
pub struct Pending {
    pub zxid: Zxid,
    pub tmp: PathBuf,
    /// Names of the linked store files.
    pub names: Vec<String>,
}

/// The consistent part of a snapshot at `zxid`, the store's and the tables' applied zxid
/// (call it where nothing applies meanwhile: the node's core): the store is marked at `zxid`
/// if the last entries touched no data, frozen (its active segment sealed), its sealed files
/// hard-linked with the tables into `snapshots/<zxid>.tmp/`, and unfrozen. Finish it with
/// [`Pending::finish`] off the core.
pub fn take(
    data_dir: &Path,
    store: &DiskStore,
    tables: &Tables,
    zxid: Zxid,
) -> Result<Pending, String> {
    if store.applied_zxid() < zxid {
        // The entries since the store's last batch touched no data: mark the zxid.
        store.apply(zxid, &[]).map_err(|e| e.to_string())?;
    }
    let frozen = store.freeze().map_err(|e| e.to_string())?;
    let begun = if frozen.zxid != zxid {
        Err(format!("the store froze at {} instead of {zxid}", frozen.zxid))
    } else {
        let mut tables = tables.clone();
        // Entries without a command (read barriers) do not reach the tables.
        tables.applied = zxid;
        begin(data_dir, zxid, &frozen.files, &tables)
    };
    store.unfreeze();
    begun
}

/// Starts a snapshot at `zxid` of the frozen store `files` and `tables` under `data_dir`:
/// creates `snapshots/<zxid>.tmp/`, hard-links every file into it and writes the tables.
pub fn begin(
    data_dir: &Path,
    zxid: Zxid,
    files: &[PathBuf],
    tables: &Tables,
) -> Result<Pending, String> {
    let root = data_dir.join(SNAPSHOTS_DIR);
    std::fs::create_dir_all(&root).map_err(|e| io("creating", &root, e))?;
    let tmp = root.join(format!("{}{TMP_SUFFIX}", dir_name(zxid)));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| io("removing", &tmp, e))?;
    }
    std::fs::create_dir(&tmp).map_err(|e| io("creating", &tmp, e))?;
    let mut names = Vec::with_capacity(files.len());
    for file in files {
        let name = file
            .file_name()
            .ok_or_else(|| format!("{} has no file name", file.display()))?
            .to_string_lossy()
            .into_owned();
        let link = tmp.join(&name);
        std::fs::hard_link(file, &link).map_err(|e| io("hard-linking", &link, e))?;
        names.push(name);
    }
    write_synced(&tmp.join(TABLES_FILE), &encode_tables(tables)?)?;
    Ok(Pending { zxid, tmp, names })
}

impl Pending {
    /// Hashes the files (reusing the MD5 of a file `previous` shares by inode, so a snapshot
    /// costs what changed since the last one), writes the manifest, syncs and renames the
    /// directory into place. Blocking: run it off the core task.
    pub fn finish(self, previous: Option<&SnapshotDir>) -> Result<SnapshotDir, String> {
        let mut known: HashMap<(u64, u64, u64), String> = HashMap::new();
        if let Some(prev) = previous {
            if let Ok(manifest) = read_manifest(&prev.path) {
                for f in manifest.files {
                    if let Ok(meta) = std::fs::metadata(prev.path.join(&f.name)) {
                        known.insert((meta.dev(), meta.ino(), meta.len()), f.md5);
                    }
                }
            }
        }
        let mut files = Vec::with_capacity(self.names.len() + 1);
        for name in self.names.iter().map(String::as_str).chain([TABLES_FILE]) {
            let path = self.tmp.join(name);
            let meta = std::fs::metadata(&path).map_err(|e| io("reading", &path, e))?;
            let cached = (name != TABLES_FILE)
                .then(|| known.get(&(meta.dev(), meta.ino(), meta.len())).cloned())
                .flatten();
            let (size, md5) = match cached {
                Some(md5) => (meta.len(), md5),
                None => md5_hex(&path)?,
            };
            files.push(ManifestFile { name: name.to_string(), size, md5 });
        }
        let manifest = Manifest { format: MANIFEST_FORMAT, zxid: self.zxid.0, files };
        let json = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| format!("encoding the manifest: {e}"))?;
        write_synced(&self.tmp.join(MANIFEST_NAME), &json)?;
        sync_dir(&self.tmp)?;
        let root = self.tmp.parent().expect("snapshot root").to_path_buf();
        let path = root.join(dir_name(self.zxid));
        if path.exists() {
            // The same zxid again (nothing applied since): keep the one already complete.
            std::fs::remove_dir_all(&self.tmp).map_err(|e| io("removing", &self.tmp, e))?;
        } else {
            std::fs::rename(&self.tmp, &path).map_err(|e| io("renaming", &self.tmp, e))?;
        }
        sync_dir(&root)?;
        Ok(SnapshotDir { zxid: self.zxid, path })
    }
}

/// Lists the complete snapshots under `data_dir`, oldest first, removing unfinished `.tmp`
/// ones when `clean` (start-up).
pub fn list(data_dir: &Path, clean: bool) -> Result<Vec<SnapshotDir>, String> {
    let root = data_dir.join(SNAPSHOTS_DIR);
    let entries = match std::fs::read_dir(&root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("listing", &root, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io("listing", &root, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.ends_with(TMP_SUFFIX) {
            if clean {
                tracing::warn!(dir = %path.display(), "removing an unfinished snapshot");
                std::fs::remove_dir_all(&path).map_err(|e| io("removing", &path, e))?;
            }
            continue;
        }
        let Ok(zxid) = name.parse::<u64>() else { continue };
        if !path.join(MANIFEST_NAME).exists() {
            tracing::warn!(dir = %path.display(), "ignoring a snapshot without a manifest");
            continue;
        }
        out.push(SnapshotDir { zxid: Zxid(zxid), path });
    }
    out.sort_by_key(|s| s.zxid);
    Ok(out)
}

/// The newest complete snapshot.
pub fn latest(data_dir: &Path) -> Result<Option<SnapshotDir>, String> {
    Ok(list(data_dir, false)?.pop())
}

/// Deletes every snapshot except `keep` and those in `pinned` (being sent).
pub fn prune(data_dir: &Path, keep: Zxid, pinned: &[Zxid]) -> Result<usize, String> {
    let mut removed = 0;
    for snap in list(data_dir, false)? {
        if snap.zxid != keep && !pinned.contains(&snap.zxid) {
            std::fs::remove_dir_all(&snap.path).map_err(|e| io("removing", &snap.path, e))?;
            removed += 1;
        }
    }
    if removed > 0 {
        sync_dir(&data_dir.join(SNAPSHOTS_DIR))?;
    }
    Ok(removed)
}

/// Checks what start-up relies on without hashing: every file the manifest names is there with
/// its size, and the tables decode. Returns the tables.
pub fn check(snap: &SnapshotDir) -> Result<Tables, String> {
    let manifest = read_manifest(&snap.path)?;
    if manifest.zxid != snap.zxid.0 {
        return Err(format!(
            "{}: the manifest says zxid {}, the directory name {}",
            snap.path.display(),
            Zxid(manifest.zxid),
            snap.zxid
        ));
    }
    for f in &manifest.files {
        let path = snap.path.join(&f.name);
        let len = std::fs::metadata(&path).map_err(|e| io("reading", &path, e))?.len();
        if len != f.size {
            return Err(format!("{}: {len} bytes, the manifest says {}", path.display(), f.size));
        }
    }
    read_tables(&snap.path)
}

/// Recreates `store_dir` from the snapshot: emptied, then every store file hard-linked in.
pub fn install_store(snap: &SnapshotDir, store_dir: &Path) -> Result<(), String> {
    if store_dir.exists() {
        std::fs::remove_dir_all(store_dir).map_err(|e| io("emptying", store_dir, e))?;
    }
    std::fs::create_dir_all(store_dir).map_err(|e| io("creating", store_dir, e))?;
    let manifest = read_manifest(&snap.path)?;
    for f in manifest.files.iter().filter(|f| f.name != TABLES_FILE) {
        let to = store_dir.join(&f.name);
        std::fs::hard_link(snap.path.join(&f.name), &to).map_err(|e| io("hard-linking", &to, e))?;
    }
    sync_dir(store_dir)
}

/// Copies the snapshot or backup in `from` (verified first against its manifest) into `to`
/// (which must not exist), the manifest last, every file synced. Works across file systems.
/// Returns the manifest.
pub fn copy_verified(from: &Path, to: &Path) -> Result<Manifest, String> {
    let manifest =
        crate::storage::backup::verify(&crate::storage::RealFs, from).map_err(|e| e.to_string())?;
    if !manifest.files.iter().any(|f| f.name == TABLES_FILE) {
        return Err(format!(
            "{} holds no `{TABLES_FILE}` file: it is a store-only backup, without the lock, \
             session and request tables a node needs; make the backup with `Backup` to a \
             directory or to a node instead",
            from.display()
        ));
    }
    for f in &manifest.files {
        if f.name.is_empty() || f.name.contains('/') || f.name == "." || f.name == ".." {
            return Err(format!(
                "{}: the manifest names an unsafe file {:?}",
                from.display(),
                f.name
            ));
        }
    }
    if std::fs::read_dir(to).is_ok_and(|mut d| d.next().is_some()) {
        return Err(format!("{} is not empty; choose an empty or new directory", to.display()));
    }
    std::fs::create_dir_all(to).map_err(|e| io("creating", to, e))?;
    for f in &manifest.files {
        let (src, dst) = (from.join(&f.name), to.join(&f.name));
        std::fs::copy(&src, &dst).map_err(|e| io("copying", &src, e))?;
        File::open(&dst).and_then(|f| f.sync_all()).map_err(|e| io("syncing", &dst, e))?;
    }
    let (src, dst) = (from.join(MANIFEST_NAME), to.join(MANIFEST_NAME));
    std::fs::copy(&src, &dst).map_err(|e| io("copying", &src, e))?;
    File::open(&dst).and_then(|f| f.sync_all()).map_err(|e| io("syncing", &dst, e))?;
    sync_dir(to)?;
    Ok(manifest)
}

/// Offline restore (`shoal-fs restore`): verifies the backup in `from` and installs it as the
/// only snapshot of the empty data directory `data_dir`, so that the node starts from it and
/// catches up from its peers. Returns the snapshot's zxid.
pub fn restore(from: &Path, data_dir: &Path) -> Result<Zxid, String> {
    if let Ok(mut entries) = std::fs::read_dir(data_dir) {
        if entries.next().is_some() {
            return Err(format!(
                "{} is not empty: restore only into an empty data directory (move the old one \
                 aside first)",
                data_dir.display()
            ));
        }
    }
    let root = data_dir.join(SNAPSHOTS_DIR);
    std::fs::create_dir_all(&root).map_err(|e| io("creating", &root, e))?;
    let tmp = root.join(format!("restore{TMP_SUFFIX}"));
    let manifest = copy_verified(from, &tmp)?;
    let zxid = Zxid(manifest.zxid);
    let snap = SnapshotDir { zxid, path: tmp.clone() };
    check(&snap)?;
    let path = root.join(dir_name(zxid));
    std::fs::rename(&tmp, &path).map_err(|e| io("renaming", &tmp, e))?;
    sync_dir(&root)?;
    sync_dir(data_dir)?;
    Ok(zxid)
}
