//! The file layer under the storage engine: positional reads and writes, `fdatasync`, directory
//! operations. [`RealFs`] is the operating system; [`SimFs`] keeps, for every file, what was
//! written apart from what is durable (the durable bytes and the list of writes since the last
//! `sync_data`), and can "crash" (drop, tear or scramble every write not yet synced, forget
//! directory changes not yet synced: see [`CrashMode`]), lose a whole tree ([`SimFs::wipe`]) or
//! hand out a copy-on-write image of what is durable ([`SimFs::durable_image`]), so that tests
//! and the node simulator can check what recovery sees.

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
    /// Out-of-order writeback: each write (and truncation) made since the file's last
    /// `sync_data` survives or is lost independently of the others, drawn from the seed, so a
    /// later write may survive while an earlier one is lost; a surviving write may itself be
    /// torn into pieces of which only some reached the disk (anywhere, the middle of a record
    /// included); a lost write that extended the file may leave its length behind, reading as
    /// zeros. Surviving writes land in the order they were made.
    ScrambleUnsynced { seed: u64 },
}

/// One change to a file since its last `sync_data`.
#[derive(Debug, Clone)]
enum Unsynced {
    Write { offset: u64, bytes: Vec<u8> },
    SetLen(u64),
}

impl Unsynced {
    fn apply_to(&self, data: &mut Vec<u8>) {
        match self {
            Unsynced::Write { offset, bytes } => write_into(data, *offset as usize, bytes),
            Unsynced::SetLen(len) => data.resize(*len as usize, 0),
        }
    }
}

fn write_into(data: &mut Vec<u8>, start: usize, bytes: &[u8]) {
    let end = start + bytes.len();
    if data.len() < end {
        data.resize(end, 0);
    }
    data[start..end].copy_from_slice(bytes);
}

/// splitmix64: a seeded, dependency-free sequence of draws.
#[derive(Debug)]
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A draw in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Debug, Default)]
struct Inode {
    /// What readers see now (shared copy-on-write with `durable` after a crash or an image).
    data: Arc<Vec<u8>>,
    /// What survives a crash: the contents as of the last `sync_data`.
    durable: Arc<Vec<u8>>,
    /// Every write and truncation since the last `sync_data`, in order: `durable` with these
    /// applied is `data`.
    unsynced: Vec<Unsynced>,
}

impl Inode {
    /// A file whose bytes are all durable.
    fn durable(bytes: Arc<Vec<u8>>) -> Inode {
        Inode { data: bytes.clone(), durable: bytes, unsynced: Vec::new() }
    }

    /// The bytes a power loss leaves of this file.
    fn after_crash(&self, mode: CrashMode, rng: &mut SplitMix) -> Arc<Vec<u8>> {
        match mode {
            CrashMode::LoseUnsynced => self.durable.clone(),
            CrashMode::TearUnsynced { .. } => {
                let (data, durable) = (&self.data, &self.durable);
                if data.len() <= durable.len() || !data.starts_with(durable) {
                    return durable.clone();
                }
                let extra = data.len() - durable.len();
                let keep = rng.below(extra as u64 + 1) as usize;
                Arc::new(data[..durable.len() + keep].to_vec())
            }
            CrashMode::ScrambleUnsynced { .. } => {
                if self.unsynced.is_empty() {
                    return self.durable.clone();
                }
                let mut out = self.durable.as_ref().clone();
                for change in &self.unsynced {
                    match change {
                        Unsynced::SetLen(_) => {
                            if rng.below(2) == 0 {
                                change.apply_to(&mut out);
                            }
                        }
                        Unsynced::Write { offset, bytes } => {
                            let start = *offset as usize;
                            match rng.below(4) {
                                // Lost; maybe its new length reached the disk (zeros).
                                0 => {
                                    if rng.below(3) == 0 && out.len() < start + bytes.len() {
                                        out.resize(start + bytes.len(), 0);
                                    }
                                }
                                1 => write_into(&mut out, start, bytes),
                                // Torn: cut into pieces, each of which survives or not.
                                _ => {
                                    let mut cuts: Vec<usize> = (0..1 + rng.below(3))
                                        .map(|_| rng.below(bytes.len() as u64 + 1) as usize)
                                        .chain([0, bytes.len()])
                                        .collect();
                                    cuts.sort_unstable();
                                    cuts.dedup();
                                    for piece in cuts.windows(2) {
                                        if rng.below(2) == 0 {
                                            let (a, b) = (piece[0], piece[1]);
                                            write_into(&mut out, start + a, &bytes[a..b]);
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                Arc::new(out)
            }
        }
    }
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
        write_into(Arc::make_mut(&mut inode.data), offset as usize, buf);
        inode.unsynced.push(Unsynced::Write { offset, bytes: buf.to_vec() });
        Ok(())
    }
    fn sync_data(&self) -> io::Result<()> {
        self.state.lock().expect("sim state").tick()?;
        let mut inode = self.inode.lock().expect("sim inode");
        let inode = &mut *inode;
        if !inode.unsynced.is_empty() {
            // Only what changed since the last sync is copied (in place when not shared).
            let durable = Arc::make_mut(&mut inode.durable);
            for change in inode.unsynced.drain(..) {
                change.apply_to(durable);
            }
        }
        debug_assert_eq!(inode.durable.len(), inode.data.len());
        Ok(())
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.inode.lock().expect("sim inode").data.len() as u64)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.state.lock().expect("sim state").tick()?;
        let mut inode = self.inode.lock().expect("sim inode");
        Arc::make_mut(&mut inode.data).resize(len as usize, 0);
        inode.unsynced.push(Unsynced::SetLen(len));
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

    /// Simulates a power loss of the whole machine: names and bytes revert to what was durable
    /// (see [`CrashMode`]), and the fail point and full disk are cleared. Handles opened before
    /// the crash point to orphaned files afterwards.
    pub fn crash(&self, mode: CrashMode) {
        self.crash_where(mode, |_| true);
        let mut state = self.state.lock().expect("sim state");
        state.disk_full = false;
        state.ops_left = None;
    }

    /// A power loss of the disk holding `dir` only (one node of several sharing this file
    /// system): the files under `dir` revert as in [`SimFs::crash`]; the others, the fail
    /// point and the full-disk flag are untouched.
    pub fn crash_under(&self, dir: &Path, mode: CrashMode) {
        self.crash_where(mode, |p| p.starts_with(dir));
    }

    fn crash_where(&self, mode: CrashMode, affected: impl Fn(&Path) -> bool) {
        let mut state = self.state.lock().expect("sim state");
        let mut rng = match mode {
            CrashMode::LoseUnsynced => SplitMix(0),
            CrashMode::TearUnsynced { seed } | CrashMode::ScrambleUnsynced { seed } => {
                SplitMix(seed)
            }
        };
        // Sorted, so that the draws do not depend on hash order.
        let mut survivors: Vec<(PathBuf, Arc<Mutex<Inode>>)> = state
            .durable_names
            .iter()
            .filter(|(p, _)| affected(p))
            .map(|(p, i)| (p.clone(), i.clone()))
            .collect();
        survivors.sort_by(|a, b| a.0.cmp(&b.0));
        state.names.retain(|p, _| !affected(p));
        state.durable_names.retain(|p, _| !affected(p));
        for (path, inode) in survivors {
            let bytes = inode.lock().expect("sim inode").after_crash(mode, &mut rng);
            let fresh = Arc::new(Mutex::new(Inode::durable(bytes)));
            state.names.insert(path.clone(), fresh.clone());
            state.durable_names.insert(path, fresh);
        }
    }

    /// Loses the whole tree under `dir` (`dir` included), durably: a lost or replaced disk.
    /// Handles opened before point to orphaned files afterwards.
    pub fn wipe(&self, dir: &Path) {
        let mut state = self.state.lock().expect("sim state");
        state.names.retain(|p, _| !p.starts_with(dir));
        state.durable_names.retain(|p, _| !p.starts_with(dir));
        state.dirs.retain(|d| !d.starts_with(dir));
    }

    /// A new, independent file system holding what a power loss losing every unsynced byte
    /// would leave of the tree under `dir` (its durable names, each with its durable bytes),
    /// and nothing else. Cheap: the bytes are shared copy-on-write, not copied, until one side
    /// writes to a file.
    pub fn durable_image(&self, dir: &Path) -> SimFs {
        let state = self.state.lock().expect("sim state");
        let mut image = SimState::default();
        for (path, inode) in state.durable_names.iter().filter(|(p, _)| p.starts_with(dir)) {
            let bytes = inode.lock().expect("sim inode").durable.clone();
            let fresh = Arc::new(Mutex::new(Inode::durable(bytes)));
            image.names.insert(path.clone(), fresh.clone());
            image.durable_names.insert(path.clone(), fresh);
        }
        for d in state.dirs.iter().filter(|d| d.starts_with(dir)) {
            image.dirs.extend(d.ancestors().map(Path::to_path_buf));
        }
        SimFs { state: Arc::new(Mutex::new(image)) }
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
        let data = inode.lock().expect("sim inode").data.as_ref().clone();
        Ok(data)
    }

    /// How many bytes of a file are durable (as of its last `sync_data`): what a crash in
    /// [`CrashMode::LoseUnsynced`] leaves, if its name is durable.
    pub fn durable_len(&self, path: &Path) -> io::Result<u64> {
        let state = self.state.lock().expect("sim state");
        let inode = state.names.get(path).ok_or_else(|| not_found(path))?;
        let len = inode.lock().expect("sim inode").durable.len() as u64;
        Ok(len)
    }

    /// Replaces a file's bytes, durably (a test's idea of a disk that changed under us).
    pub fn write_file_durably(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let state = self.state.lock().expect("sim state");
        let inode = state.names.get(path).ok_or_else(|| not_found(path))?;
        let mut inode = inode.lock().expect("sim inode");
        *inode = Inode::durable(Arc::new(bytes.to_vec()));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fs_with_dir() -> (SimFs, PathBuf) {
        let fs = SimFs::new();
        let dir = PathBuf::from("/n/d");
        fs.create_dir_all(&dir).unwrap();
        (fs, dir)
    }

    /// A durable file with `synced` bytes, then `writes` unsynced writes of 8 bytes each at
    /// the end, each filled with its index + 1.
    fn file_with_unsynced(fs: &SimFs, path: &Path, synced: &[u8], writes: u8) -> Arc<dyn VFile> {
        let f = fs.open(path, true).unwrap();
        fs.sync_dir(path.parent().unwrap()).unwrap();
        f.write_all_at(synced, 0).unwrap();
        f.sync_data().unwrap();
        for i in 0..writes {
            f.write_all_at(&[i + 1; 8], synced.len() as u64 + 8 * i as u64).unwrap();
        }
        f
    }

    #[test]
    fn sync_data_makes_exactly_the_written_bytes_durable() {
        let (fs, dir) = fs_with_dir();
        let path = dir.join("f");
        let f = file_with_unsynced(&fs, &path, b"head", 3);
        f.write_all_at(b"XY", 1).unwrap();
        f.set_len(20).unwrap();
        assert_eq!(fs.durable_len(&path).unwrap(), 4);
        f.sync_data().unwrap();
        let now = fs.read_file(&path).unwrap();
        assert_eq!(&now[..4], b"hXYd");
        assert_eq!(now.len(), 20);
        for mode in [
            CrashMode::LoseUnsynced,
            CrashMode::TearUnsynced { seed: 3 },
            CrashMode::ScrambleUnsynced { seed: 3 },
        ] {
            let image = fs.durable_image(&dir);
            image.crash(mode);
            assert_eq!(image.read_file(&path).unwrap(), now, "{mode:?}");
        }
    }

    /// Over many seeds the scrambled crash produces every kind of outcome: a later write kept
    /// while an earlier one is lost, a write torn in its middle, and every byte kept is one
    /// that was written there (or a zero of a lost extension); the synced bytes never change.
    #[test]
    fn scrambled_crash_keeps_any_subset_of_unsynced_writes_in_any_order() {
        let (mut later_without_earlier, mut torn_inside, mut all_lost) = (0, 0, 0);
        for seed in 0..300 {
            let (fs, dir) = fs_with_dir();
            let path = dir.join("f");
            file_with_unsynced(&fs, &path, b"synced!!", 4);
            fs.crash(CrashMode::ScrambleUnsynced { seed });
            let got = fs.read_file(&path).unwrap();
            assert_eq!(&got[..8], b"synced!!", "seed {seed}");
            assert!(got.len() <= 8 + 32, "seed {seed}");
            let mut kept = [false; 4];
            for (i, chunk) in got[8..].chunks(8).enumerate() {
                let w = i as u8 + 1;
                assert!(chunk.iter().all(|&b| b == w || b == 0), "seed {seed}: {chunk:?}");
                let whole = chunk.len() == 8 && chunk.iter().all(|&b| b == w);
                if !whole && chunk.contains(&w) {
                    torn_inside += 1;
                }
                kept[i] = chunk.contains(&w);
            }
            if (1..4).any(|i| kept[i] && !kept[i - 1]) {
                later_without_earlier += 1;
            }
            all_lost += u32::from(got.len() == 8);
        }
        assert!(later_without_earlier > 30, "{later_without_earlier}");
        assert!(torn_inside > 30, "{torn_inside}");
        assert!(all_lost > 0, "{all_lost}");
    }

    #[test]
    fn scrambled_crash_is_deterministic_per_seed() {
        let run = |seed| {
            let (fs, dir) = fs_with_dir();
            let path = dir.join("f");
            file_with_unsynced(&fs, &path, b"s", 6);
            fs.crash(CrashMode::ScrambleUnsynced { seed });
            fs.read_file(&path).unwrap()
        };
        assert_eq!(run(42), run(42));
        assert!((0..20).any(|s| run(s) != run(42)));
    }

    #[test]
    fn unsynced_truncation_may_be_lost_or_kept() {
        let (mut kept, mut lost) = (0, 0);
        for seed in 0..100 {
            let (fs, dir) = fs_with_dir();
            let path = dir.join("f");
            let f = file_with_unsynced(&fs, &path, b"0123456789", 0);
            f.set_len(4).unwrap();
            fs.crash(CrashMode::ScrambleUnsynced { seed });
            match fs.read_file(&path).unwrap().as_slice() {
                b"0123" => kept += 1,
                b"0123456789" => lost += 1,
                other => panic!("seed {seed}: {other:?}"),
            }
        }
        assert!(kept > 10 && lost > 10, "{kept} {lost}");
    }

    /// Creations, renames and removals not followed by a directory sync are lost in every
    /// mode, whatever the file's own syncs; synced ones survive.
    #[test]
    fn directory_changes_need_a_directory_sync() {
        for mode in [
            CrashMode::LoseUnsynced,
            CrashMode::TearUnsynced { seed: 1 },
            CrashMode::ScrambleUnsynced { seed: 1 },
        ] {
            let (fs, dir) = fs_with_dir();
            let (kept, gone, moved, removed) =
                (dir.join("kept"), dir.join("new"), dir.join("moved"), dir.join("removed"));
            for p in [&kept, &removed] {
                let f = fs.open(p, true).unwrap();
                f.write_all_at(b"x", 0).unwrap();
                f.sync_data().unwrap();
            }
            fs.sync_dir(&dir).unwrap();
            let f = fs.open(&gone, true).unwrap();
            f.write_all_at(b"y", 0).unwrap();
            f.sync_data().unwrap();
            fs.rename(&kept, &moved).unwrap();
            fs.remove(&removed).unwrap();
            fs.crash(mode);
            assert_eq!(fs.list(&dir).unwrap(), vec!["kept", "removed"], "{mode:?}");
            assert_eq!(fs.read_file(&kept).unwrap(), b"x");

            fs.open(&gone, true).unwrap();
            fs.rename(&kept, &moved).unwrap();
            fs.sync_dir(&dir).unwrap();
            fs.crash(mode);
            assert_eq!(fs.list(&dir).unwrap(), vec!["moved", "new", "removed"], "{mode:?}");
        }
    }

    #[test]
    fn wipe_loses_a_tree_and_nothing_else() {
        let fs = SimFs::new();
        for d in ["/a/x", "/a/x/sub", "/b"] {
            fs.create_dir_all(Path::new(d)).unwrap();
        }
        for p in ["/a/x/f", "/a/x/sub/g", "/b/h"] {
            let f = fs.open(Path::new(p), true).unwrap();
            f.write_all_at(b"1", 0).unwrap();
            f.sync_data().unwrap();
            fs.sync_dir(Path::new(p).parent().unwrap()).unwrap();
        }
        fs.wipe(Path::new("/a/x"));
        assert!(!fs.exists(Path::new("/a/x")) && !fs.exists(Path::new("/a/x/f")));
        assert!(fs.exists(Path::new("/a")));
        fs.crash(CrashMode::LoseUnsynced);
        assert!(!fs.exists(Path::new("/a/x/sub/g")));
        assert_eq!(fs.read_file(Path::new("/b/h")).unwrap(), b"1");
        fs.create_dir_all(Path::new("/a/x")).unwrap();
        assert!(fs.list(Path::new("/a/x")).unwrap().is_empty());
    }

    /// The image holds the durable state under one directory only, and the two file systems
    /// are independent afterwards.
    #[test]
    fn durable_image_is_a_copy_of_what_is_durable() {
        let fs = SimFs::new();
        for d in ["/n1", "/n2"] {
            fs.create_dir_all(Path::new(d)).unwrap();
        }
        let f = file_with_unsynced(&fs, Path::new("/n1/f"), b"durable", 2);
        file_with_unsynced(&fs, Path::new("/n2/g"), b"other", 0);
        let image = fs.durable_image(Path::new("/n1"));
        assert_eq!(image.read_file(Path::new("/n1/f")).unwrap(), b"durable");
        assert!(!image.exists(Path::new("/n2/g")));
        f.write_all_at(b"D", 0).unwrap();
        f.sync_data().unwrap();
        assert_eq!(image.read_file(Path::new("/n1/f")).unwrap(), b"durable");
        let g = image.open(Path::new("/n1/f"), false).unwrap();
        g.write_all_at(b"!", 0).unwrap();
        assert_eq!(&fs.read_file(Path::new("/n1/f")).unwrap()[..7], b"Durable");
    }

    #[test]
    fn crash_under_a_directory_leaves_the_others_alone() {
        let fs = SimFs::new();
        for d in ["/n1", "/n2"] {
            fs.create_dir_all(Path::new(d)).unwrap();
        }
        file_with_unsynced(&fs, Path::new("/n1/f"), b"a", 1);
        file_with_unsynced(&fs, Path::new("/n2/f"), b"b", 1);
        fs.crash_under(Path::new("/n1"), CrashMode::LoseUnsynced);
        assert_eq!(fs.read_file(Path::new("/n1/f")).unwrap(), b"a");
        assert_eq!(fs.read_file(Path::new("/n2/f")).unwrap().len(), 9);
    }
}
