//! The only file access of a transfer, behind three small traits, each with a real and an
//! in-memory implementation:
//! - [`BlockSource`]: the donor reads block bytes of its frozen files.
//! - [`BlockSink`]: the receiver stages blocks, reads a staged file back for its whole-file
//!   MD5, installs everything at once, or discards it.
//! - [`Freezer`]: the node's freeze (snapshot file list and zxid) and unfreeze (fold-in).
//!
//! # Crash safety of [`FsSink`]
//! Everything is staged in a sibling directory `<dest>.partial-<transfer>`. Install happens
//! only after every whole-file MD5 matched: each file was `fsync`ed when it was read back for
//! its MD5, then the staging directory is `fsync`ed, renamed to `<dest>` in one `rename(2)`, and
//! the parent directory is `fsync`ed. A crash before the rename leaves only a `.partial-*`
//! directory, which [`FsSink::clean_stale`] removes at start-up; after it, `<dest>` is complete.
//! So a receiver never has a half-installed data set.

use super::{Result, TransferError};
use md5::{Digest, Md5};
use protocol::message::transfer::{FileOffer, TransFile};
use protocol::Zxid;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// Read buffer for hashing whole files.
const HASH_CHUNK_BYTES: usize = 1024 * 1024;

/// Where the donor reads its blocks. `file` indexes the offer's file list.
pub trait BlockSource: Send {
    /// Fills `buf` with the bytes of `file` at `offset`. The frozen files do not change, so
    /// the same call always returns the same bytes (or an error).
    fn read_at(&mut self, file: u32, offset: u64, buf: &mut [u8]) -> Result<()>;
}

/// Where the receiver stages blocks. Rules every implementation keeps:
/// - nothing is visible at the destination before [`BlockSink::install`] returns `Ok`;
/// - `install` is all or nothing, and durable on return;
/// - [`BlockSink::discard`] removes every staged byte and may be called in any state.
pub trait BlockSink: Send {
    /// Prepares empty staging files for the offer.
    fn begin(&mut self, offer: &TransFile) -> Result<()>;
    /// Writes one verified block into its staging file.
    fn write_at(&mut self, file: u32, offset: u64, data: &[u8]) -> Result<()>;
    /// Makes the staged file durable and returns the MD5 of what is actually stored.
    fn staged_md5(&mut self, file: u32) -> Result<[u8; 16]>;
    /// Moves every staged file into place at once.
    fn install(&mut self) -> Result<()>;
    fn discard(&mut self);
}

/// The frozen data set a donor sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrozenSet {
    /// The files hold exactly every change up to this zxid.
    pub zxid: Zxid,
    pub files: Vec<PathBuf>,
}

/// The node's freeze. `fs-node` maps it onto `DiskStore::freeze` / `DiskStore::unfreeze` and the
/// Freeze announcements.
pub trait Freezer: Send {
    /// Freezes (if not yet) and returns the frozen file set.
    fn freeze(&mut self) -> Result<FrozenSet>;
    /// Ends the freeze; the node folds in what its data log gathered meanwhile.
    fn unfreeze(&mut self);
    /// The offer's file list (names, sizes, whole-file MD5s, in `set`'s order) if the node
    /// knows it already, e.g. from a snapshot manifest, so the donor need not read every file
    /// once more before it starts; `None` makes the donor hash the files. Receivers check every
    /// file against it, so a wrong list fails the transfer, never installs wrong bytes.
    fn describe(&mut self, _set: &FrozenSet) -> Result<Option<Vec<FileOffer>>> {
        Ok(None)
    }
}

/// Unfreezes exactly once, when dropped at the latest (a panic or a cancelled task too).
pub struct FreezeGuard<F: Freezer> {
    freezer: Option<F>,
}

impl<F: Freezer> FreezeGuard<F> {
    pub fn freeze(mut freezer: F) -> Result<(FreezeGuard<F>, FrozenSet)> {
        let set = freezer.freeze()?;
        Ok((FreezeGuard { freezer: Some(freezer) }, set))
    }

    /// The freezer's own description of `set`, if it has one (see [`Freezer::describe`]).
    pub fn describe(&mut self, set: &FrozenSet) -> Result<Option<Vec<FileOffer>>> {
        self.freezer.as_mut().expect("frozen").describe(set)
    }

    pub fn unfreeze(mut self) -> F {
        let mut freezer = self.freezer.take().expect("unfrozen once");
        freezer.unfreeze();
        freezer
    }
}

impl<F: Freezer> Drop for FreezeGuard<F> {
    fn drop(&mut self) {
        if let Some(mut freezer) = self.freezer.take() {
            freezer.unfreeze();
        }
    }
}

/// A freezer for tests: returns a fixed set and counts calls.
#[derive(Clone, Debug)]
pub struct MemFreezer {
    pub set: FrozenSet,
    pub freezes: Arc<AtomicU32>,
    pub unfreezes: Arc<AtomicU32>,
}

impl MemFreezer {
    pub fn new(set: FrozenSet) -> MemFreezer {
        MemFreezer { set, freezes: Arc::default(), unfreezes: Arc::default() }
    }
    pub fn is_frozen(&self) -> bool {
        self.freezes.load(Ordering::SeqCst) > self.unfreezes.load(Ordering::SeqCst)
    }
}

impl Freezer for MemFreezer {
    fn freeze(&mut self) -> Result<FrozenSet> {
        self.freezes.fetch_add(1, Ordering::SeqCst);
        Ok(self.set.clone())
    }
    fn unfreeze(&mut self) {
        self.unfreezes.fetch_add(1, Ordering::SeqCst);
    }
}

/// In-memory files, for tests and benchmarks.
#[derive(Clone, Debug, Default)]
pub struct MemSource {
    pub files: Vec<(String, Vec<u8>)>,
}

impl MemSource {
    pub fn new(files: Vec<(String, Vec<u8>)>) -> MemSource {
        MemSource { files }
    }

    /// The offer's file list: names, sizes and whole-file MD5s.
    pub fn describe(&self) -> Vec<FileOffer> {
        self.files
            .iter()
            .map(|(name, data)| FileOffer {
                name: name.clone(),
                size: data.len() as u64,
                md5: super::md5_of(data),
            })
            .collect()
    }
}

impl BlockSource for MemSource {
    fn read_at(&mut self, file: u32, offset: u64, buf: &mut [u8]) -> Result<()> {
        let (name, data) = self
            .files
            .get(file as usize)
            .ok_or_else(|| TransferError::State(format!("no file {file} in the source")))?;
        let start = offset as usize;
        let slice = data.get(start..start + buf.len()).ok_or_else(|| {
            TransferError::State(format!(
                "{name}: read of {} at {offset} is past the end",
                buf.len()
            ))
        })?;
        buf.copy_from_slice(slice);
        Ok(())
    }
}

/// Staging and installed files in memory. `installed` is set only by a successful install.
#[derive(Clone, Debug, Default)]
pub struct MemSink {
    names: Vec<String>,
    pub staged: Vec<Vec<u8>>,
    pub installed: Option<Vec<(String, Vec<u8>)>>,
    pub discards: u32,
    /// Test hook: the next write lands with this byte flipped (a disk that corrupts).
    pub corrupt_next_write: bool,
}

impl BlockSink for MemSink {
    fn begin(&mut self, offer: &TransFile) -> Result<()> {
        self.names = offer.files.iter().map(|f| f.name.clone()).collect();
        self.staged = offer.files.iter().map(|f| vec![0u8; f.size as usize]).collect();
        Ok(())
    }

    fn write_at(&mut self, file: u32, offset: u64, data: &[u8]) -> Result<()> {
        let staged = self
            .staged
            .get_mut(file as usize)
            .ok_or_else(|| TransferError::State(format!("no staged file {file}")))?;
        let start = offset as usize;
        staged[start..start + data.len()].copy_from_slice(data);
        if std::mem::take(&mut self.corrupt_next_write) {
            staged[start] ^= 0xFF;
        }
        Ok(())
    }

    fn staged_md5(&mut self, file: u32) -> Result<[u8; 16]> {
        Ok(super::md5_of(&self.staged[file as usize]))
    }

    fn install(&mut self) -> Result<()> {
        self.installed =
            Some(self.names.iter().cloned().zip(std::mem::take(&mut self.staged)).collect());
        Ok(())
    }

    fn discard(&mut self) {
        self.staged.clear();
        self.discards += 1;
    }
}

/// The donor's frozen files on disk.
#[derive(Debug)]
pub struct FsSource {
    paths: Vec<PathBuf>,
    files: Vec<File>,
}

impl FsSource {
    pub fn open(paths: &[PathBuf]) -> Result<FsSource> {
        let files = paths
            .iter()
            .map(|p| File::open(p).map_err(|e| TransferError::io("opening", p, e)))
            .collect::<Result<Vec<_>>>()?;
        Ok(FsSource { paths: paths.to_vec(), files })
    }

    /// Names (the file names, without directories), sizes and whole-file MD5s: one full read
    /// of every file. (`fs_node::storage::backup` computes the same for its manifest.)
    pub fn describe(&self) -> Result<Vec<FileOffer>> {
        self.paths
            .iter()
            .zip(&self.files)
            .map(|(path, file)| {
                let name = path
                    .file_name()
                    .ok_or_else(|| {
                        TransferError::State(format!("{} has no file name", path.display()))
                    })?
                    .to_string_lossy()
                    .into_owned();
                let (size, md5) = hash_file(file, path)?;
                Ok(FileOffer { name, size, md5 })
            })
            .collect()
    }
}

impl BlockSource for FsSource {
    fn read_at(&mut self, file: u32, offset: u64, buf: &mut [u8]) -> Result<()> {
        let f = self
            .files
            .get(file as usize)
            .ok_or_else(|| TransferError::State(format!("no file {file} in the source")))?;
        f.read_exact_at(buf, offset)
            .map_err(|e| TransferError::io("reading", &self.paths[file as usize], e))
    }
}

fn hash_file(file: &File, path: &Path) -> Result<(u64, [u8; 16])> {
    let len = file.metadata().map_err(|e| TransferError::io("sizing", path, e))?.len();
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; HASH_CHUNK_BYTES];
    let mut off = 0u64;
    while off < len {
        let n = ((len - off) as usize).min(HASH_CHUNK_BYTES);
        file.read_exact_at(&mut buf[..n], off)
            .map_err(|e| TransferError::io("reading", path, e))?;
        md5.update(&buf[..n]);
        off += n as u64;
    }
    Ok((len, md5.finalize().into()))
}

/// Stages into `<dest>.partial-<transfer>` and renames it to `dest` on install (see the
/// module doc). `dest` must not exist yet.
#[derive(Debug)]
pub struct FsSink {
    dest: PathBuf,
    staging: Option<PathBuf>,
    files: Vec<(PathBuf, File)>,
}

/// The marker in a staging directory's name.
const PARTIAL_MARKER: &str = ".partial-";

impl FsSink {
    pub fn new(dest: impl Into<PathBuf>) -> FsSink {
        FsSink { dest: dest.into(), staging: None, files: Vec::new() }
    }

    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Removes staging directories a crash left in `parent`. Call at start-up.
    pub fn clean_stale(parent: &Path) -> Result<usize> {
        let mut removed = 0;
        let entries = match std::fs::read_dir(parent) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(TransferError::io("listing", parent, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| TransferError::io("listing", parent, e))?;
            if entry.file_name().to_string_lossy().contains(PARTIAL_MARKER) {
                std::fs::remove_dir_all(entry.path())
                    .map_err(|e| TransferError::io("removing", entry.path(), e))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Free bytes on the file system that will hold `dest`.
    pub fn free_bytes(&self) -> Result<u64> {
        let parent = self.parent();
        free_bytes(&parent)
    }

    fn parent(&self) -> PathBuf {
        match self.dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }
}

/// Free bytes for an unprivileged user on the file system holding `path`.
pub fn free_bytes(path: &Path) -> Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| TransferError::State(format!("{} contains a NUL byte", path.display())))?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `stat` a valid out-pointer.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut stat) };
    if rc != 0 {
        return Err(TransferError::io(
            "checking free space of",
            path,
            std::io::Error::last_os_error(),
        ));
    }
    Ok(stat.f_bavail as u64 * stat.f_frsize as u64)
}

fn sync_dir(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(|e| TransferError::io("syncing directory", path, e))
}

impl BlockSink for FsSink {
    fn begin(&mut self, offer: &TransFile) -> Result<()> {
        if self.dest.exists() {
            return Err(TransferError::State(format!(
                "{} already exists; move it aside before receiving into it",
                self.dest.display()
            )));
        }
        let base = self.dest.file_name().map(|n| n.to_string_lossy().into_owned());
        let base = base.ok_or_else(|| {
            TransferError::State(format!("{} has no directory name", self.dest.display()))
        })?;
        let staging = self.parent().join(format!("{base}{PARTIAL_MARKER}{}", offer.transfer));
        if staging.exists() {
            std::fs::remove_dir_all(&staging)
                .map_err(|e| TransferError::io("removing", &staging, e))?;
        }
        std::fs::create_dir_all(&staging)
            .map_err(|e| TransferError::io("creating", &staging, e))?;
        self.staging = Some(staging.clone());
        self.files.clear();
        for f in &offer.files {
            let path = staging.join(&f.name);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| TransferError::io("creating", &path, e))?;
            file.set_len(f.size).map_err(|e| TransferError::io("sizing", &path, e))?;
            self.files.push((path, file));
        }
        Ok(())
    }

    fn write_at(&mut self, file: u32, offset: u64, data: &[u8]) -> Result<()> {
        let (path, f) = self
            .files
            .get(file as usize)
            .ok_or_else(|| TransferError::State(format!("no staged file {file}")))?;
        f.write_all_at(data, offset).map_err(|e| TransferError::io("writing", path, e))
    }

    fn staged_md5(&mut self, file: u32) -> Result<[u8; 16]> {
        let (path, f) = self
            .files
            .get(file as usize)
            .ok_or_else(|| TransferError::State(format!("no staged file {file}")))?;
        f.sync_data().map_err(|e| TransferError::io("syncing", path, e))?;
        Ok(hash_file(f, path)?.1)
    }

    fn install(&mut self) -> Result<()> {
        let staging = self
            .staging
            .clone()
            .ok_or_else(|| TransferError::State("install before begin".to_string()))?;
        for (path, f) in &self.files {
            f.sync_all().map_err(|e| TransferError::io("syncing", path, e))?;
        }
        sync_dir(&staging)?;
        std::fs::rename(&staging, &self.dest)
            .map_err(|e| TransferError::io("installing", &self.dest, e))?;
        sync_dir(&self.parent())?;
        self.staging = None;
        self.files.clear();
        Ok(())
    }

    fn discard(&mut self) {
        self.files.clear();
        if let Some(staging) = self.staging.take() {
            if let Err(e) = std::fs::remove_dir_all(&staging) {
                tracing::warn!(path = %staging.display(), error = %e, "staging not removed");
            }
        }
    }
}
