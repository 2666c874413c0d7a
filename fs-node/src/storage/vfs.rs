//! The file layer under the storage engine: positional reads and writes, `fdatasync`, directory
//! operations. [`RealFs`] is the operating system; [`SimFs`] keeps, for every file, what was
//! written apart from what is durable, and can "crash" (drop or tear every byte not yet synced,
//! forget directory changes not yet synced) so that tests can check what recovery sees.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// An open file. Writes are positional: the engine tracks its own offsets, so one handle can be
/// written by the appender while another thread calls `sync_data` on it.
pub trait VFile: Send + Sync + Debug {
    /// Reads exactly `buf.len()` bytes at `offset` (`UnexpectedEof` if the file is shorter).
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// `fdatasync`: every byte written before this call is durable when it returns.
    fn sync_data(&self) -> io::Result<()>;
    fn len(&self) -> io::Result<u64>;
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    fn set_len(&self, len: u64) -> io::Result<()>;
}

/// Directory operations and opening files.
pub trait Vfs: Send + Sync + Debug {
    /// Opens `path` read-write, creating it (empty) if `create` and it does not exist.
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn VFile>>;
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Names of the files directly in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Atomically replaces `to` with `from`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes creations, removals and renames in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    fn exists(&self, path: &Path) -> bool;
}

/// The operating system's file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

#[derive(Debug)]
struct RealFile(File);

impl VFile for RealFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}

impl Vfs for RealFs {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn VFile>> {
        let file = OpenOptions::new().read(true).write(true).create(create).open(path)?;
        Ok(Arc::new(RealFile(file)))
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        Ok(names)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
}

/// How a [`SimFs::crash`] treats bytes written but not synced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashMode {
    /// Every unsynced byte is lost.
    LoseUnsynced,
    /// A prefix of each file's unsynced bytes survives, its length drawn from the seed: a torn
    /// write.
    TearUnsynced { seed: u64 },
}

#[derive(Debug, Default)]
struct Inode {
    /// What readers see now.
    data: Vec<u8>,
    /// What survives a crash: the contents as of the last `sync_data`.
    durable: Vec<u8>,
}

#[derive(Debug, Default)]
struct SimState {
    /// Names as seen now.
    names: HashMap<PathBuf, Arc<Mutex<Inode>>>,
    /// Names as they survive a crash (as of the last `sync_dir` of their directory).
    durable_names: HashMap<PathBuf, Arc<Mutex<Inode>>>,
    dirs: HashSet<PathBuf>,
    /// Writes fail with ENOSPC while set.
    disk_full: bool,
    /// Mutating operations left before every operation fails as if the process had died there
    /// (a fail point: the test then calls `crash`).
    ops_left: Option<u64>,
}

impl SimState {
    /// Counts one mutating operation against the fail point.
    fn tick(&mut self) -> io::Result<()> {
        match self.ops_left.as_mut() {
            Some(0) => Err(io::Error::other("simulated crash point reached")),
            Some(n) => {
                *n -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }
}

/// An in-memory file system that separates written bytes from durable bytes.
#[derive(Debug, Default, Clone)]
pub struct SimFs {
    state: Arc<Mutex<SimState>>,
}

#[derive(Debug)]
struct SimFile {
    inode: Arc<Mutex<Inode>>,
    state: Arc<Mutex<SimState>>,
}

impl VFile for SimFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let inode = self.inode.lock().expect("sim inode");
        let start = offset as usize;
        let end = start + buf.len();
        if end > inode.data.len() {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past end"));
        }
        buf.copy_from_slice(&inode.data[start..end]);
        Ok(())
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        {
            let mut state = self.state.lock().expect("sim state");
            state.tick()?;
            if state.disk_full {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
        }
        let mut inode = self.inode.lock().expect("sim inode");
        let start = offset as usize;
        let end = start + buf.len();
        if inode.data.len() < end {
            inode.data.resize(end, 0);
        }
        inode.data[start..end].copy_from_slice(buf);
        Ok(())
    }
    fn sync_data(&self) -> io::Result<()> {
        self.state.lock().expect("sim state").tick()?;
        let mut inode = self.inode.lock().expect("sim inode");
        inode.durable = inode.data.clone();
        Ok(())
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.inode.lock().expect("sim inode").data.len() as u64)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.state.lock().expect("sim state").tick()?;
        self.inode.lock().expect("sim inode").data.resize(len as usize, 0);
        Ok(())
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{} not found", path.display()))
}

impl SimFs {
    pub fn new() -> SimFs {
        SimFs::default()
    }

    /// Makes every later write fail with ENOSPC (or stop failing).
    pub fn set_disk_full(&self, full: bool) {
        self.state.lock().expect("sim state").disk_full = full;
    }

    /// Simulates a power loss: names and bytes revert to what was durable (see [`CrashMode`]).
    /// Handles opened before the crash point to orphaned files afterwards.
    pub fn crash(&self, mode: CrashMode) {
        let mut state = self.state.lock().expect("sim state");
        let mut rng = match mode {
            CrashMode::LoseUnsynced => None,
            CrashMode::TearUnsynced { seed } => Some(seed),
        };
        let mut survivors: Vec<(PathBuf, Arc<Mutex<Inode>>)> =
            state.durable_names.iter().map(|(p, i)| (p.clone(), i.clone())).collect();
        survivors.sort_by(|a, b| a.0.cmp(&b.0));
        let mut names = HashMap::new();
        for (path, inode) in survivors {
            let old = inode.lock().expect("sim inode");
            let mut data = old.durable.clone();
            if let Some(seed) = rng.as_mut() {
                if old.data.len() > data.len() && old.data.starts_with(&data) {
                    // splitmix64: a seeded, dependency-free draw of the surviving tail length.
                    *seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
                    let mut z = *seed;
                    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                    z ^= z >> 31;
                    let extra = old.data.len() - data.len();
                    let keep = (z % (extra as u64 + 1)) as usize;
                    data.extend_from_slice(&old.data[old.durable.len()..old.durable.len() + keep]);
                }
            }
            let fresh = Inode { durable: data.clone(), data };
            names.insert(path, Arc::new(Mutex::new(fresh)));
        }
        state.durable_names = names.clone();
        state.names = names;
        state.disk_full = false;
        state.ops_left = None;
    }

    /// After `ops` more mutating operations (writes, syncs, creations, renames, removals,
    /// truncations), every further one fails, as if the process died right there. `None`
    /// disarms. Pair with [`SimFs::crash`].
    pub fn fail_after(&self, ops: Option<u64>) {
        self.state.lock().expect("sim state").ops_left = ops;
    }

    /// Mutating operations left before the fail point (`None` if disarmed).
    pub fn ops_left(&self) -> Option<u64> {
        self.state.lock().expect("sim state").ops_left
    }

    /// Whether the fail point was reached.
    pub fn failed(&self) -> bool {
        self.state.lock().expect("sim state").ops_left == Some(0)
    }

    /// The current bytes of a file (for tests that corrupt or inspect files).
    pub fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        let state = self.state.lock().expect("sim state");
        let inode = state.names.get(path).ok_or_else(|| not_found(path))?;
        let data = inode.lock().expect("sim inode").data.clone();
        Ok(data)
    }

    /// Replaces a file's bytes, durably (a test's idea of a disk that changed under us).
    pub fn write_file_durably(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let state = self.state.lock().expect("sim state");
        let inode = state.names.get(path).ok_or_else(|| not_found(path))?;
        let mut inode = inode.lock().expect("sim inode");
        inode.data = bytes.to_vec();
        inode.durable = bytes.to_vec();
        Ok(())
    }
}

impl Vfs for SimFs {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn VFile>> {
        let mut state = self.state.lock().expect("sim state");
        let inode = match state.names.get(path) {
            Some(inode) => inode.clone(),
            None if create => {
                state.tick()?;
                let parent = path.parent().unwrap_or(Path::new("/"));
                if !state.dirs.contains(parent) {
                    return Err(not_found(parent));
                }
                let inode = Arc::new(Mutex::new(Inode::default()));
                state.names.insert(path.to_path_buf(), inode.clone());
                inode
            }
            None => return Err(not_found(path)),
        };
        Ok(Arc::new(SimFile { inode, state: self.state.clone() }))
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.lock().expect("sim state");
        for ancestor in path.ancestors() {
            state.dirs.insert(ancestor.to_path_buf());
        }
        Ok(())
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = self.state.lock().expect("sim state");
        if !state.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        let mut names: Vec<String> = state
            .names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        names.sort();
        Ok(names)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.lock().expect("sim state");
        state.tick()?;
        state.names.remove(path).map(|_| ()).ok_or_else(|| not_found(path))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.state.lock().expect("sim state");
        state.tick()?;
        let inode = state.names.remove(from).ok_or_else(|| not_found(from))?;
        state.names.insert(to.to_path_buf(), inode);
        Ok(())
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.state.lock().expect("sim state");
        state.tick()?;
        state.durable_names.retain(|p, _| p.parent() != Some(dir));
        let current: Vec<(PathBuf, Arc<Mutex<Inode>>)> = state
            .names
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir))
            .map(|(p, i)| (p.clone(), i.clone()))
            .collect();
        state.durable_names.extend(current);
        Ok(())
    }
    fn exists(&self, path: &Path) -> bool {
        let state = self.state.lock().expect("sim state");
        state.names.contains_key(path) || state.dirs.contains(path)
    }
}
