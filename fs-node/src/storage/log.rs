//! The data log: append-only segment files of TLV records holding replication entries, with
//! group commit.
//!
//! Appends are written to the active segment at once (page cache) and become durable in groups:
//! one sync thread calls `fdatasync` for everything written since its last call, then wakes
//! every waiter whose entry is now covered. Callers learn durability three ways: block in
//! [`DataLog::wait_durable`], await [`DataLog::wait_durable_async`], or watch
//! [`DataLog::subscribe_durable`] (what the replication driver uses to send Accepts).
//!
//! In [`SyncMode::Manual`] (for a deterministic simulator) no thread runs: the host calls
//! [`DataLog::sync`], which does exactly one round of that thread's work.
//!
//! After each completed sync the next write into the same segment starts with a *sync marker*
//! (a CommitMark record whose value is the synced length of that segment): at start-up, damage
//! at or above the highest marker's length is a torn tail of bytes never acknowledged, damage
//! below it is corruption of synced bytes, reported in [`LogRecovery::lost_synced`] (or refused,
//! by default). The argument is in `fs-node/STORAGE.md` ("What counts as durable").
//!
//! The log stores entries opaquely; it knows zxids, not what the bytes mean.

use crate::storage::error::{Result, StorageError};
use crate::storage::vfs::{VFile, Vfs};
use protocol::message::replication::Entry;
use protocol::tlv::{self, RecordType};
use protocol::{ProtocolError, Zxid};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use tokio::sync::watch;

/// Default size at which the active segment is sealed and a new one started.
pub const LOG_SEGMENT_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;
/// Default number of entries at or below the checkpoint that retention keeps for followers.
pub const LOG_RETENTION_ENTRIES_DEFAULT: u64 = 100_000;
/// Most entries one `read_range` returns.
pub const READ_RANGE_ENTRIES_MAX: usize = protocol::limits::RECORDS_PER_MESSAGE_MAX;

const SEGMENT_SUFFIX: &str = ".log";
/// Second byte of a SegmentStart value: the segment's writer puts a sync marker after every
/// completed sync (segments written before markers existed have a one-byte value).
const SEGMENT_FLAG_SYNC_MARKERS: u8 = 1;
/// Bytes of a sync marker record (a CommitMark carrying a u64 synced length).
pub const SYNC_MARKER_BYTES: u64 = (tlv::OVERHEAD_BYTES + 8) as u64;
/// Bytes of the SegmentStart record that opens every segment.
pub const SEGMENT_HEADER_BYTES: u64 = (tlv::OVERHEAD_BYTES + 2) as u64;

#[derive(Clone, Debug)]
pub struct LogConfig {
    pub segment_bytes_max: u64,
    pub retention_entries: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes_max: LOG_SEGMENT_BYTES_DEFAULT,
            retention_entries: LOG_RETENTION_ENTRIES_DEFAULT,
        }
    }
}

/// Who runs the group commit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncMode {
    /// A background thread syncs whatever was written, as soon as it can (the default).
    #[default]
    Thread,
    /// No thread: the host calls [`DataLog::sync`] for each round (a deterministic simulator).
    /// `wait_durable` runs the rounds it needs itself; dropping the log syncs nothing (a
    /// `kill -9`: what was written stays in the "page cache").
    Manual,
}

/// What `open` does with damage in the last segment that it cannot show to be a torn tail
/// (see [`LostSynced`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DamagePolicy {
    /// Refuse to open: [`StorageError::Corrupt`] with the file and offset (the default, and
    /// what every earlier version did).
    #[default]
    Refuse,
    /// Cut the log at the damage, so that it stays a prefix of what was appended, and report
    /// it in [`LogRecovery::lost_synced`]: the node must then not vote, promise or count
    /// toward a quorum until it holds the committed history again.
    CutAndReport,
}

/// How to open a log; `Default` is what [`DataLog::open`] uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub sync: SyncMode,
    pub uncertain_damage: DamagePolicy,
}

/// Damage in the last segment whose bytes may have been synced (acknowledged), cut off under
/// [`DamagePolicy::CutAndReport`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostSynced {
    pub file: PathBuf,
    /// Where the damage starts, and where the segment was cut.
    pub offset: u64,
    /// Bytes dropped from there to the end of the file.
    pub dropped: u64,
    /// `Some(x)`: a sync marker proves bytes below `x` were synced, so this is corruption of
    /// durable data (bad media, a bug, tampering). `None`: a segment written before sync
    /// markers existed, with well-formed records after the damage: it may be a torn tail or
    /// corruption, the log cannot tell.
    pub synced_through: Option<u64>,
}

/// What the log has made durable, as broadcast to subscribers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Durable {
    /// Every entry up to this zxid is on disk.
    pub zxid: Zxid,
    /// An fsync failed: nothing more will become durable in this process.
    pub failed: bool,
}

/// What start-up found and repaired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogRecovery {
    /// A torn tail was cut off: (file, offset where it was cut, bytes dropped). Only bytes
    /// written after the last completed sync are ever cut as a torn tail.
    pub torn_tail: Option<(PathBuf, u64, u64)>,
    /// Damage that may have taken synced (acknowledged) entries was cut off (only under
    /// [`DamagePolicy::CutAndReport`]; the default refuses to open instead). When set, this
    /// node may have lost entries or a hard state it acknowledged: it must not vote, promise or
    /// count toward a quorum until it has caught up with the committed history again.
    pub lost_synced: Option<LostSynced>,
    pub segments: usize,
    pub entries: usize,
}

#[derive(Debug)]
struct LogSegment {
    seq: u64,
    path: PathBuf,
    file: Arc<dyn VFile>,
    /// The last zxid before this segment (from its SegmentStart record).
    prev: Zxid,
    /// Every entry's zxid and record offset, in order.
    entries: Vec<(Zxid, u64)>,
    len: u64,
}

impl LogSegment {
    fn last_zxid(&self) -> Zxid {
        self.entries.last().map(|e| e.0).unwrap_or(self.prev)
    }
}

#[derive(Debug)]
struct LogState {
    segments: Vec<LogSegment>,
    written: Zxid,
    durable: Zxid,
    commit: Zxid,
    /// Counts appends; the sync thread syncs up to a generation.
    written_gen: u64,
    synced_gen: u64,
    poisoned: Option<String>,
    shutdown: bool,
    /// The latest HardState record's value.
    hard_state: Option<bytes::Bytes>,
    /// Bytes of the active segment that a completed sync of this process made durable.
    synced_len: u64,
    /// The synced length the last sync marker in the active segment records (0: none known):
    /// when `synced_len` is above it, the next write into the segment starts with a marker.
    marked_len: u64,
}

#[derive(Debug)]
struct LogShared {
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
    config: LogConfig,
    inner: Mutex<LogState>,
    /// The sync thread waits here for new writes.
    work: Condvar,
    /// Waiters for durability wait here.
    durable_changed: Condvar,
    durable_tx: watch::Sender<Durable>,
    /// No sync thread: the host runs the rounds ([`SyncMode::Manual`]).
    manual: bool,
}

/// The data log. Cheap to share behind an `Arc`; every method takes `&self`.
#[derive(Debug)]
pub struct DataLog {
    shared: Arc<LogShared>,
    sync_thread: Option<JoinHandle<()>>,
}

fn segment_name(seq: u64) -> String {
    format!("{seq:020}{SEGMENT_SUFFIX}")
}

fn read_whole(file: &dyn VFile, path: &Path) -> Result<Vec<u8>> {
    let len = file.len().map_err(|e| StorageError::io("sizing", path, e))?;
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, 0).map_err(|e| StorageError::io("reading", path, e))?;
    Ok(buf)
}

/// The synced length a sync marker records, if `rec` is one (a plain commit mark has an empty
/// value).
fn marker_len(rec: &tlv::Record<'_>) -> Option<u64> {
    if rec.kind != RecordType::CommitMark {
        return None;
    }
    Some(u64::from_le_bytes(rec.value.try_into().ok()?))
}

/// What the bytes after a damaged record say, searched byte by byte.
#[derive(Debug, Default)]
struct AfterDamage {
    /// A well-formed entry, commit mark or hard state at or above the last zxid before the
    /// damage starts there.
    valid_record: bool,
    /// The highest synced length of a well-formed sync marker there (markers only ever record
    /// a length at or below their own offset, so others are ignored).
    marked_len: u64,
}

fn search_after_damage(buf: &[u8], from: usize, after: Zxid) -> AfterDamage {
    let kinds = [RecordType::LogEntry, RecordType::CommitMark, RecordType::HardState];
    let mut found = AfterDamage::default();
    for off in from..buf.len() {
        if let Ok((rec, _)) = tlv::decode(&buf[off..]) {
            found.valid_record |= kinds.contains(&rec.kind) && rec.zxid >= after;
            if let Some(len) = marker_len(&rec).filter(|&len| len <= off as u64) {
                found.marked_len = found.marked_len.max(len);
            }
        }
    }
    found
}

/// The segment files in `dir`, by sequence number.
fn segment_names(vfs: &dyn Vfs, dir: &Path) -> Result<Vec<(u64, String)>> {
    let mut names: Vec<(u64, String)> = vfs
        .list(dir)
        .map_err(|e| StorageError::io("listing", dir, e))?
        .into_iter()
        .filter_map(|n| {
            let seq = n.strip_suffix(SEGMENT_SUFFIX)?.parse::<u64>().ok()?;
            Some((seq, n))
        })
        .collect();
    names.sort();
    Ok(names)
}

/// One segment as read back: its well-formed records up to the first damage, if any.
struct SegmentScan {
    seg: LogSegment,
    buf: Vec<u8>,
    /// Where the well-formed records end.
    off: usize,
    /// The last entry's zxid (or the segment's floor).
    last: Zxid,
    /// Why the records end before the file does.
    damage: Option<String>,
    commit: Zxid,
    hard_state: Option<bytes::Bytes>,
    /// Whether this segment's writer wrote sync markers, and the highest one seen.
    writes_markers: bool,
    marked: u64,
}

/// Reads the segment at `path` record by record from its start; `floor` is the last zxid of
/// the segment before it.
fn scan_segment(vfs: &dyn Vfs, path: PathBuf, seq: u64, floor: Zxid) -> Result<SegmentScan> {
    let file = vfs.open(&path, false).map_err(|e| StorageError::io("opening", &path, e))?;
    let buf = read_whole(file.as_ref(), &path)?;
    let seg = LogSegment { seq, path, file, prev: floor, entries: vec![], len: 0 };
    let mut scan = SegmentScan {
        seg,
        buf,
        off: 0,
        last: floor,
        damage: None,
        commit: Zxid::ZERO,
        hard_state: None,
        writes_markers: false,
        marked: 0,
    };
    while scan.off < scan.buf.len() {
        let (rec, used) = match tlv::decode(&scan.buf[scan.off..]) {
            Ok(decoded) => decoded,
            Err(e) => {
                scan.damage = Some(e.to_string());
                break;
            }
        };
        let off = scan.off;
        match rec.kind {
            RecordType::SegmentStart if off == 0 => {
                let version = rec.value.first().copied().unwrap_or(0);
                if version > tlv::FORMAT_VERSION {
                    return Err(StorageError::State(format!(
                        "{} was written in on-disk format {version}; this build reads up to \
                         {}: run a newer shoal-fs",
                        scan.seg.path.display(),
                        tlv::FORMAT_VERSION
                    )));
                }
                scan.seg.prev = rec.zxid;
                scan.last = rec.zxid;
                scan.writes_markers =
                    rec.value.get(1).is_some_and(|f| f & SEGMENT_FLAG_SYNC_MARKERS != 0);
            }
            RecordType::LogEntry if off > 0 && rec.zxid > scan.last => {
                scan.seg.entries.push((rec.zxid, off as u64));
                scan.last = rec.zxid;
            }
            RecordType::CommitMark if off > 0 => {
                scan.commit = scan.commit.max(rec.zxid);
                if let Some(len) = marker_len(&rec) {
                    // A marker in the chain of records from the start is ours.
                    scan.writes_markers = true;
                    scan.marked = scan.marked.max(len);
                }
            }
            RecordType::HardState if off > 0 => {
                scan.hard_state = Some(bytes::Bytes::copy_from_slice(rec.value))
            }
            other => {
                scan.damage = Some(format!(
                    "unexpected {other:?} record with zxid {} (after {})",
                    rec.zxid, scan.last
                ));
                break;
            }
        }
        scan.off += used;
    }
    Ok(scan)
}

/// Repairs what a scan found: damage in the last segment is cut off, as a torn tail when no
/// acknowledged byte can be in it, else reported as [`LostSynced`] (or refused, by
/// `options`); damage in any other segment is corruption. A segment whose header never
/// reached the disk gets one.
fn recover_segment(
    scan: SegmentScan,
    is_last: bool,
    options: &LogOptions,
    recovery: &mut LogRecovery,
) -> Result<LogSegment> {
    let SegmentScan { mut seg, buf, off, last, damage, writes_markers, marked, .. } = scan;
    let path = seg.path.clone();
    if let Some(detail) = damage {
        if !is_last {
            return Err(corrupt(&path, off as u64, detail));
        }
        let after = search_after_damage(&buf, off + 1, last);
        let synced = marked.max(after.marked_len);
        let (cut, dropped) = (off as u64, (buf.len() - off) as u64);
        // Damage below a synced length is not a torn write; nor, in a segment without
        // markers, is damage followed by well-formed records known to be one.
        let lost_synced = if synced > cut {
            Some(Some(synced))
        } else if after.valid_record && !writes_markers {
            Some(None)
        } else {
            None
        };
        match lost_synced {
            Some(synced_through) => {
                if options.uncertain_damage == DamagePolicy::Refuse {
                    let why = match synced_through {
                        Some(x) => format!("{detail}; bytes below {x} were synced"),
                        None => format!("{detail}; well-formed records follow it"),
                    };
                    return Err(corrupt(&path, cut, why));
                }
                tracing::error!(event = "log_lost_synced", file = %path.display(),
                    offset = cut, dropped, ?synced_through,
                    "data log: damage that may hold acknowledged entries cut off \
                     ({detail}); this node must catch up before it votes again");
                recovery.lost_synced =
                    Some(LostSynced { file: path.clone(), offset: cut, dropped, synced_through });
            }
            None => {
                tracing::warn!(event = "torn_tail", file = %path.display(), offset = off,
                    dropped, "data log: torn tail cut off ({detail})");
                recovery.torn_tail = Some((path.clone(), cut, dropped));
            }
        }
        seg.file.set_len(cut).map_err(|e| StorageError::io("truncating", &path, e))?;
        seg.file.sync_data().map_err(|e| StorageError::io("syncing", &path, e))?;
    }
    seg.len = off as u64;
    if seg.len == 0 {
        // A segment whose header never reached the disk (crash while rolling).
        let header = segment_header(seg.prev);
        seg.file.write_all_at(&header, 0).map_err(|e| StorageError::io("writing", &path, e))?;
        seg.file.sync_data().map_err(|e| StorageError::io("syncing", &path, e))?;
        seg.len = header.len() as u64;
    }
    Ok(seg)
}

/// Earlier segments were synced when they were sealed; the last one may hold bytes that a
/// killed process left in the page cache. Makes them (and the names) durable before the log
/// counts them durable, or a power loss could take what this process acknowledges. Returns
/// the synced length of the last segment.
fn sync_tail(vfs: &dyn Vfs, dir: &Path, segments: &[LogSegment]) -> Result<u64> {
    let tail = segments.last().expect("one segment");
    tail.file.sync_data().map_err(|e| StorageError::io("syncing", &tail.path, e))?;
    vfs.sync_dir(dir).map_err(|e| StorageError::io("syncing", dir, e))?;
    Ok(tail.len)
}

impl DataLog {
    /// Opens (or creates) the log in `dir`, recovering from a crash: a torn tail of the last
    /// segment is cut off and reported; damage anywhere else stops with [`StorageError::Corrupt`].
    /// The last segment and the directory are synced before the log counts anything durable:
    /// bytes that a killed process left in the page cache become durable here, by this process.
    /// A sync thread runs (see [`DataLog::open_with`]).
    pub fn open(
        vfs: Arc<dyn Vfs>,
        dir: &Path,
        config: LogConfig,
    ) -> Result<(DataLog, LogRecovery)> {
        DataLog::open_with(vfs, dir, config, LogOptions::default())
    }

    /// [`DataLog::open`] with a choice of who syncs ([`SyncMode`]) and of what to do with
    /// damage in the last segment that is not provably a torn tail ([`DamagePolicy`]).
    pub fn open_with(
        vfs: Arc<dyn Vfs>,
        dir: &Path,
        config: LogConfig,
        options: LogOptions,
    ) -> Result<(DataLog, LogRecovery)> {
        vfs.create_dir_all(dir).map_err(|e| StorageError::io("creating", dir, e))?;
        let names = segment_names(vfs.as_ref(), dir)?;
        let mut recovery = LogRecovery::default();
        let mut segments: Vec<LogSegment> = Vec::new();
        let (mut commit, mut hard_state) = (Zxid::ZERO, None);
        let count = names.len();
        for (i, (seq, name)) in names.into_iter().enumerate() {
            let floor = segments.last().map(LogSegment::last_zxid).unwrap_or(Zxid::ZERO);
            let scan = scan_segment(vfs.as_ref(), dir.join(&name), seq, floor)?;
            commit = commit.max(scan.commit);
            if scan.hard_state.is_some() {
                hard_state = scan.hard_state.clone();
            }
            let seg = recover_segment(scan, i + 1 == count, &options, &mut recovery)?;
            recovery.entries += seg.entries.len();
            segments.push(seg);
        }
        if segments.is_empty() {
            segments.push(create_segment(vfs.as_ref(), dir, 1, Zxid::ZERO)?);
        }
        recovery.segments = segments.len();
        let synced_len = sync_tail(vfs.as_ref(), dir, &segments)?;
        let written = segments.last().map(LogSegment::last_zxid).unwrap_or(Zxid::ZERO);
        let inner = LogState {
            segments,
            written,
            durable: written,
            commit: commit.min(written),
            written_gen: 0,
            synced_gen: 0,
            poisoned: None,
            shutdown: false,
            hard_state,
            synced_len,
            // The header needs no marker (it is synced when the segment is created); anything
            // after it was synced just now, and the first write records that.
            marked_len: synced_len.min(SEGMENT_HEADER_BYTES),
        };
        let log = DataLog::start(vfs, dir, config, options.sync, inner)?;
        Ok((log, recovery))
    }

    /// The log over its recovered state, with its sync thread when `sync` asks for one.
    fn start(
        vfs: Arc<dyn Vfs>,
        dir: &Path,
        config: LogConfig,
        sync: SyncMode,
        inner: LogState,
    ) -> Result<DataLog> {
        let (durable_tx, _) = watch::channel(Durable { zxid: inner.durable, failed: false });
        let shared = Arc::new(LogShared {
            vfs,
            dir: dir.to_path_buf(),
            config,
            inner: Mutex::new(inner),
            work: Condvar::new(),
            durable_changed: Condvar::new(),
            durable_tx,
            manual: sync == SyncMode::Manual,
        });
        let sync_thread = match sync {
            SyncMode::Manual => None,
            SyncMode::Thread => {
                let thread_shared = shared.clone();
                let thread = std::thread::Builder::new()
                    .name("shoal-log-sync".into())
                    .spawn(move || sync_loop(&thread_shared))
                    .map_err(|e| StorageError::io("starting the sync thread for", dir, e))?;
                Some(thread)
            }
        };
        Ok(DataLog { shared, sync_thread })
    }

    fn lock(&self) -> MutexGuard<'_, LogState> {
        self.shared.inner.lock().expect("data log lock poisoned by a panic")
    }

    /// Appends entries (uncommitted proposals) in zxid order. They are written at once and
    /// become durable with the next group sync; returns the last zxid written.
    pub fn append(&self, entries: &[Entry]) -> Result<Zxid> {
        let mut inner = self.lock();
        if let Some(detail) = &inner.poisoned {
            return Err(StorageError::Poisoned { detail: detail.clone() });
        }
        let mut last = inner.written;
        for entry in entries {
            if entry.zxid <= last {
                return Err(StorageError::OutOfOrder { zxid: entry.zxid, last });
            }
            last = entry.zxid;
        }
        if entries.is_empty() {
            return Ok(inner.written);
        }
        let active_len = inner.segments.last().expect("one segment").len;
        let estimate: usize = entries.iter().map(|e| tlv::encoded_len(e.data.len())).sum();
        let marker = if inner.synced_len > inner.marked_len { SYNC_MARKER_BYTES } else { 0 };
        if active_len + marker + estimate as u64 > self.shared.config.segment_bytes_max
            && !inner.segments.last().expect("one segment").entries.is_empty()
        {
            self.roll(&mut inner)?;
        }
        let mut offsets = Vec::with_capacity(entries.len());
        self.write_batch(&mut inner, |buf, base| {
            for entry in entries {
                offsets.push((entry.zxid, base + buf.len() as u64));
                tlv::encode_into(RecordType::LogEntry, entry.zxid, &entry.data, buf)
                    .map_err(|e| StorageError::State(format!("entry {}: {e}", entry.zxid)))?;
            }
            Ok(())
        })?;
        inner.segments.last_mut().expect("one segment").entries.extend(offsets);
        inner.written = last;
        Ok(last)
    }

    /// Writes one batch of records at the end of the active segment (written, not synced),
    /// starting with a sync marker if a sync completed since the last one. `fill` encodes the
    /// records into the buffer; the offset it gets is the segment offset of the buffer's
    /// start. A failed write is undone (the file ends on a record boundary again) and changes
    /// nothing else.
    fn write_batch(
        &self,
        inner: &mut LogState,
        fill: impl FnOnce(&mut Vec<u8>, u64) -> Result<()>,
    ) -> Result<()> {
        let mut buf = Vec::new();
        let marks = inner.synced_len > inner.marked_len;
        if marks {
            let len = inner.synced_len.to_le_bytes();
            tlv::encode_into(RecordType::CommitMark, inner.commit, &len, &mut buf)?;
        }
        let seg = inner.segments.last_mut().expect("one segment");
        let base = seg.len;
        fill(&mut buf, base)?;
        if let Err(e) = seg.file.write_all_at(&buf, base) {
            let _ = seg.file.set_len(base);
            return Err(StorageError::io("appending to", &seg.path, e));
        }
        seg.len += buf.len() as u64;
        if marks {
            inner.marked_len = inner.synced_len;
        }
        inner.written_gen += 1;
        self.shared.work.notify_one();
        Ok(())
    }

    /// Syncs the active segment now, holding the lock (a hard state change, a truncation):
    /// everything written becomes durable. A failure poisons the log.
    fn sync_active(&self, inner: &mut LogState) -> Result<()> {
        let seg = inner.segments.last().expect("one segment");
        let (file, path, len) = (seg.file.clone(), seg.path.clone(), seg.len);
        if let Err(e) = file.sync_data() {
            return Err(self.poison(inner, "syncing", &path, e));
        }
        inner.synced_len = len;
        inner.synced_gen = inner.written_gen;
        inner.durable = inner.written;
        self.publish(inner);
        Ok(())
    }

    /// One round of group commit, as the sync thread does it: `fdatasync` of everything
    /// written so far, then the durable zxid advances and subscribers and waiters learn it. In
    /// [`SyncMode::Manual`] this is how anything becomes durable (besides the operations that
    /// sync on their own: hard state changes, truncations, rolls, reset). A failed sync
    /// poisons the log, as in the thread. Returns what is durable now.
    pub fn sync(&self) -> Result<Durable> {
        sync_round(&self.shared);
        let inner = self.lock();
        if let Some(detail) = &inner.poisoned {
            return Err(StorageError::Poisoned { detail: detail.clone() });
        }
        Ok(Durable { zxid: inner.durable, failed: false })
    }

    /// Seals the active segment (synced, so only the last segment can ever have a torn tail)
    /// and starts the next one.
    fn roll(&self, inner: &mut LogState) -> Result<()> {
        let old = inner.segments.last().expect("one segment");
        let (file, path) = (old.file.clone(), old.path.clone());
        let (seq, prev) = (old.seq + 1, old.last_zxid());
        file.sync_data().map_err(|e| self.poison(inner, "syncing", &path, e))?;
        let seg = create_segment(self.shared.vfs.as_ref(), &self.shared.dir, seq, prev)?;
        inner.synced_len = seg.len;
        inner.marked_len = seg.len;
        inner.segments.push(seg);
        inner.synced_gen = inner.written_gen;
        inner.durable = inner.written;
        self.publish(inner);
        // After the bookkeeping above: the rewritten record is new work for the sync thread.
        self.rewrite_hard_state(inner)
    }

    fn poison(
        &self,
        inner: &mut LogState,
        op: &'static str,
        path: &Path,
        e: std::io::Error,
    ) -> StorageError {
        let detail = format!("{op} {}: {e}", path.display());
        inner.poisoned = Some(detail.clone());
        self.shared.durable_changed.notify_all();
        self.shared.durable_tx.send_replace(Durable { zxid: inner.durable, failed: true });
        StorageError::Poisoned { detail }
    }

    fn publish(&self, inner: &LogState) {
        check_invariants(inner);
        self.shared.durable_changed.notify_all();
        self.shared
            .durable_tx
            .send_replace(Durable { zxid: inner.durable, failed: inner.poisoned.is_some() });
    }

    /// Writes the current hard state (if any) into the active segment, unsynced: used when a
    /// segment is started or cut, so that the newest segment always carries it.
    fn rewrite_hard_state(&self, inner: &mut LogState) -> Result<()> {
        let Some(hard) = inner.hard_state.clone() else { return Ok(()) };
        let written = inner.written;
        self.write_batch(inner, |buf, _| {
            tlv::encode_into(RecordType::HardState, written, &hard, buf)?;
            Ok(())
        })
    }

    /// Stores the replication engine's epoch state (opaque bytes), durably before returning
    /// (it changes once per election; one fsync is cheap there). Everything appended before it
    /// is durable too.
    pub fn set_hard_state(&self, value: &[u8]) -> Result<()> {
        let mut inner = self.lock();
        if let Some(detail) = &inner.poisoned {
            return Err(StorageError::Poisoned { detail: detail.clone() });
        }
        let written = inner.written;
        self.write_batch(&mut inner, |buf, _| {
            tlv::encode_into(RecordType::HardState, written, value, buf)?;
            Ok(())
        })?;
        self.sync_active(&mut inner)?;
        inner.hard_state = Some(bytes::Bytes::copy_from_slice(value));
        Ok(())
    }

    /// The last hard state stored, if any.
    pub fn hard_state(&self) -> Option<bytes::Bytes> {
        self.lock().hard_state.clone()
    }

    /// Whether an entry with exactly this zxid is retained.
    pub fn has_entry(&self, zxid: Zxid) -> bool {
        let inner = self.lock();
        inner.segments.iter().any(|s| s.entries.binary_search_by(|e| e.0.cmp(&zxid)).is_ok())
    }

    /// The largest retained entry zxid at or below `zxid`, if any.
    pub fn floor_entry(&self, zxid: Zxid) -> Option<Zxid> {
        let inner = self.lock();
        inner.segments.iter().rev().find_map(|s| {
            let i = s.entries.partition_point(|e| e.0 <= zxid);
            (i > 0).then(|| s.entries[i - 1].0)
        })
    }

    /// Records that everything up to `zxid` is committed. The mark rides along with the next
    /// group sync; losing it in a crash only means the commit point is learnt again.
    pub fn mark_commit(&self, zxid: Zxid) -> Result<()> {
        let mut inner = self.lock();
        if let Some(detail) = &inner.poisoned {
            return Err(StorageError::Poisoned { detail: detail.clone() });
        }
        if zxid <= inner.commit {
            return Ok(());
        }
        let zxid = zxid.min(inner.written);
        self.write_batch(&mut inner, |buf, _| {
            tlv::encode_into(RecordType::CommitMark, zxid, &[], buf)?;
            Ok(())
        })?;
        inner.commit = zxid;
        Ok(())
    }

    /// Blocks until every entry up to `zxid` is durable. In [`SyncMode::Manual`] it runs the
    /// sync rounds itself, and fails at once if `zxid` was never written (no one else could
    /// write it while it waits).
    pub fn wait_durable(&self, zxid: Zxid) -> Result<()> {
        let mut inner = self.lock();
        loop {
            if inner.durable >= zxid {
                return Ok(());
            }
            if let Some(detail) = &inner.poisoned {
                return Err(StorageError::Poisoned { detail: detail.clone() });
            }
            if inner.shutdown {
                return Err(StorageError::Closed);
            }
            if self.shared.manual {
                if inner.written_gen == inner.synced_gen {
                    return Err(StorageError::State(format!(
                        "waiting for {zxid} to be durable, but the log ends at {}",
                        inner.written
                    )));
                }
                drop(inner);
                sync_round(&self.shared);
                inner = self.lock();
                continue;
            }
            inner = self.shared.durable_changed.wait(inner).expect("data log lock");
        }
    }

    /// Awaits durability of every entry up to `zxid` without blocking a tokio worker.
    pub async fn wait_durable_async(&self, zxid: Zxid) -> Result<()> {
        let mut rx = self.subscribe_durable();
        let seen =
            rx.wait_for(|d| d.zxid >= zxid || d.failed).await.map_err(|_| StorageError::Closed)?;
        if seen.zxid >= zxid {
            return Ok(());
        }
        let detail = self.lock().poisoned.clone().unwrap_or_default();
        Err(StorageError::Poisoned { detail })
    }

    /// Appends and waits until the entries are durable (one caller's view of group commit).
    pub fn append_durable(&self, entries: &[Entry]) -> Result<Zxid> {
        let last = self.append(entries)?;
        self.wait_durable(last)?;
        Ok(last)
    }

    /// A watch of the durable zxid: the replication driver sends an Accept when it moves.
    pub fn subscribe_durable(&self) -> watch::Receiver<Durable> {
        self.shared.durable_tx.subscribe()
    }

    pub fn durable_zxid(&self) -> Zxid {
        self.lock().durable
    }

    /// The last zxid appended (durable or not).
    pub fn last_zxid(&self) -> Zxid {
        self.lock().written
    }

    /// The first retained entry, if any.
    pub fn first_zxid(&self) -> Option<Zxid> {
        let inner = self.lock();
        inner.segments.iter().find_map(|s| s.entries.first().map(|e| e.0))
    }

    /// The zxid just before the first retained entry: `read_range` can start from here.
    pub fn start_zxid(&self) -> Zxid {
        self.lock().segments[0].prev
    }

    /// The highest commit mark written or found at start-up.
    pub fn commit_zxid(&self) -> Zxid {
        self.lock().commit
    }

    /// Drops every entry above `zxid` (a divergent, uncommitted tail), durably, before
    /// returning. Refuses to drop a committed entry.
    pub fn truncate_after(&self, zxid: Zxid) -> Result<()> {
        let mut inner = self.lock();
        if zxid < inner.commit {
            return Err(StorageError::TruncateCommitted { requested: zxid, commit: inner.commit });
        }
        if zxid >= inner.written {
            return Ok(());
        }
        // Whole segments first, newest first, so a crash part-way leaves a prefix of the log.
        let popped =
            inner.segments.len() > 1 && inner.segments.last().expect("segment").prev >= zxid;
        while inner.segments.len() > 1 && inner.segments.last().expect("segment").prev >= zxid {
            let seg = inner.segments.pop().expect("segment");
            self.shared
                .vfs
                .remove(&seg.path)
                .map_err(|e| StorageError::io("removing", &seg.path, e))?;
        }
        self.shared
            .vfs
            .sync_dir(&self.shared.dir)
            .map_err(|e| StorageError::io("syncing", &self.shared.dir, e))?;
        if popped {
            // A sealed segment is active again: synced whole at its seal, markers unknown.
            inner.synced_len = inner.segments.last().expect("segment").len;
            inner.marked_len = 0;
        }
        let seg = inner.segments.last_mut().expect("segment");
        let cut = seg.entries.partition_point(|e| e.0 <= zxid);
        if cut < seg.entries.len() {
            let offset = seg.entries[cut].1;
            seg.entries.truncate(cut);
            seg.file.set_len(offset).map_err(|e| StorageError::io("truncating", &seg.path, e))?;
            seg.len = offset;
            // The cut is durable before anything is written over the cut bytes, so that no
            // sync marker of the cut tail survives a crash beside new, unsynced bytes.
            let (file, path) = (seg.file.clone(), seg.path.clone());
            if let Err(e) = file.sync_data() {
                return Err(self.poison(&mut inner, "syncing", &path, e));
            }
            inner.synced_len = offset;
            inner.marked_len = inner.marked_len.min(offset);
        }
        inner.written = inner.segments.last().expect("segment").last_zxid();
        // What was cut is no longer durable here, even if a step below fails.
        inner.durable = inner.durable.min(inner.written);
        self.rewrite_hard_state(&mut inner)?;
        if inner.commit > Zxid::ZERO {
            // The cut may have taken the latest commit mark with it: write it again.
            let commit = inner.commit;
            self.write_batch(&mut inner, |buf, _| {
                tlv::encode_into(RecordType::CommitMark, commit, &[], buf)?;
                Ok(())
            })?;
        }
        inner.written_gen += 1;
        // The file holding the last entry is synced here, and earlier segments at their roll.
        self.sync_active(&mut inner)
    }

    /// Entries after `from_exclusive`, at most `max_entries` (and [`READ_RANGE_ENTRIES_MAX`]),
    /// for a follower's catch-up. `Compacted` if retention already dropped some of them.
    pub fn read_range(&self, from_exclusive: Zxid, max_entries: usize) -> Result<Vec<Entry>> {
        self.read_range_bytes(from_exclusive, max_entries, usize::MAX)
    }

    /// Like [`DataLog::read_range`], also stopping before the entries' data passes about
    /// `max_bytes` (at least one entry is returned when there is one).
    pub fn read_range_bytes(
        &self,
        from_exclusive: Zxid,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<Entry>> {
        let max_entries = max_entries.min(READ_RANGE_ENTRIES_MAX);
        let mut wanted: Vec<(Arc<dyn VFile>, PathBuf, Zxid, u64)> = Vec::new();
        {
            let inner = self.lock();
            let start = inner.segments[0].prev;
            if from_exclusive < start {
                return Err(StorageError::Compacted { requested: from_exclusive, start });
            }
            for seg in &inner.segments {
                if wanted.len() >= max_entries {
                    break;
                }
                let first = seg.entries.partition_point(|e| e.0 <= from_exclusive);
                for &(zxid, off) in seg.entries[first..].iter().take(max_entries - wanted.len()) {
                    wanted.push((seg.file.clone(), seg.path.clone(), zxid, off));
                }
            }
        }
        let mut out = Vec::with_capacity(wanted.len());
        let mut bytes_total = 0usize;
        for (file, path, zxid, off) in wanted {
            let mut header = [0u8; tlv::HEADER_BYTES];
            file.read_exact_at(&mut header, off)
                .map_err(|e| StorageError::io("reading", &path, e))?;
            let total = tlv::record_len(&header).map_err(|e| corrupt(&path, off, e))?;
            let mut buf = vec![0u8; total];
            file.read_exact_at(&mut buf, off).map_err(|e| StorageError::io("reading", &path, e))?;
            let (rec, _) = tlv::decode(&buf).map_err(|e| corrupt(&path, off, e))?;
            if rec.kind != RecordType::LogEntry || rec.zxid != zxid {
                return Err(corrupt(&path, off, "record changed under the index"));
            }
            if !out.is_empty() && bytes_total + rec.value.len() > max_bytes {
                break;
            }
            bytes_total += rec.value.len();
            let data = bytes::Bytes::copy_from_slice(rec.value);
            out.push(Entry { zxid, data });
        }
        Ok(out)
    }

    /// Log retention after a checkpoint: removes sealed segments wholly at or below
    /// `checkpoint`, keeping at least the configured retention window of entries at or below it.
    /// Returns how many segments went.
    pub fn release_through(&self, checkpoint: Zxid) -> Result<usize> {
        self.release_through_bounded(checkpoint, u64::MAX)
    }

    /// [`DataLog::release_through`], except that the retention window also ends once it holds
    /// `keep_bytes_max` bytes of records at or below `checkpoint`: with big entries, a window
    /// counted in entries alone could keep a huge log.
    pub fn release_through_bounded(&self, checkpoint: Zxid, keep_bytes_max: u64) -> Result<usize> {
        let mut inner = self.lock();
        let keep_entries = self.shared.config.retention_entries;
        // Entries (and their bytes) at or below the checkpoint, counted from the newest
        // segment backwards.
        let mut removable = 0;
        let mut kept_below: u64 = 0;
        let mut kept_bytes: u64 = 0;
        let n = inner.segments.len();
        for i in (0..n.saturating_sub(1)).rev() {
            let seg = &inner.segments[i];
            let later = &inner.segments[i + 1];
            let below_in_later =
                later.entries.iter().take_while(|e| e.0 <= checkpoint).count() as u64;
            kept_below += below_in_later;
            // The first record above the checkpoint starts where the bytes below it end.
            kept_bytes +=
                later.entries.iter().find(|e| e.0 > checkpoint).map(|e| e.1).unwrap_or(later.len);
            let window_full = kept_below >= keep_entries || kept_bytes >= keep_bytes_max;
            if seg.last_zxid() <= checkpoint && window_full {
                removable = i + 1;
                break;
            }
        }
        if removable > 0 && inner.written_gen != inner.synced_gen {
            // The active segment may hold the only new copy of the hard state (rewritten at
            // the roll): it must be durable before the segment with the old copy goes.
            self.sync_active(&mut inner)?;
        }
        let gone: Vec<LogSegment> = inner.segments.drain(..removable).collect();
        for seg in &gone {
            self.shared
                .vfs
                .remove(&seg.path)
                .map_err(|e| StorageError::io("removing", &seg.path, e))?;
        }
        if !gone.is_empty() {
            self.shared
                .vfs
                .sync_dir(&self.shared.dir)
                .map_err(|e| StorageError::io("syncing", &self.shared.dir, e))?;
        }
        Ok(gone.len())
    }

    /// Discards the whole log and starts empty after `prev` (after installing data files from
    /// a peer or a backup, whose state is at `prev`).
    pub fn reset(&self, prev: Zxid) -> Result<()> {
        let mut inner = self.lock();
        let next_seq = inner.segments.last().map(|s| s.seq + 1).unwrap_or(1);
        let fresh = create_segment(self.shared.vfs.as_ref(), &self.shared.dir, next_seq, prev)?;
        for seg in inner.segments.drain(..) {
            self.shared
                .vfs
                .remove(&seg.path)
                .map_err(|e| StorageError::io("removing", &seg.path, e))?;
        }
        self.shared
            .vfs
            .sync_dir(&self.shared.dir)
            .map_err(|e| StorageError::io("syncing", &self.shared.dir, e))?;
        inner.synced_len = fresh.len;
        inner.marked_len = fresh.len;
        inner.segments.push(fresh);
        inner.written = prev;
        inner.durable = inner.durable.min(prev);
        inner.commit = prev;
        self.rewrite_hard_state(&mut inner)?;
        inner.written_gen += 1;
        self.sync_active(&mut inner)
    }

    /// Paths of the log's segment files, oldest first.
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        self.lock().segments.iter().map(|s| s.path.clone()).collect()
    }
}

fn corrupt(path: &Path, offset: u64, e: impl ToString) -> StorageError {
    let detail = e.to_string();
    tracing::error!(event = "checksum_failure", file = %path.display(), offset, "data log: {detail}");
    StorageError::Corrupt { file: path.to_path_buf(), offset, detail }
}

/// The SegmentStart record: format version, and the flag saying this writer puts sync
/// markers (older readers look at the version byte only).
fn segment_header(prev: Zxid) -> Vec<u8> {
    let value = [tlv::FORMAT_VERSION, SEGMENT_FLAG_SYNC_MARKERS];
    tlv::encode(RecordType::SegmentStart, prev, &value).expect("small record")
}

fn create_segment(vfs: &dyn Vfs, dir: &Path, seq: u64, prev: Zxid) -> Result<LogSegment> {
    let path = dir.join(segment_name(seq));
    let file = vfs.open(&path, true).map_err(|e| StorageError::io("creating", &path, e))?;
    let header = segment_header(prev);
    file.set_len(0).map_err(|e| StorageError::io("creating", &path, e))?;
    file.write_all_at(&header, 0).map_err(|e| StorageError::io("writing", &path, e))?;
    file.sync_data().map_err(|e| StorageError::io("syncing", &path, e))?;
    vfs.sync_dir(dir).map_err(|e| StorageError::io("syncing", dir, e))?;
    Ok(LogSegment { seq, path, file, prev, entries: Vec::new(), len: header.len() as u64 })
}

/// The group-commit thread: one `fdatasync` covers every append made before it started.
fn sync_loop(shared: &LogShared) {
    loop {
        {
            let mut inner = shared.inner.lock().expect("data log lock");
            while inner.written_gen == inner.synced_gen && !inner.shutdown {
                inner = shared.work.wait(inner).expect("data log lock");
            }
            if inner.written_gen == inner.synced_gen || inner.poisoned.is_some() {
                return;
            }
        }
        if !sync_round(shared) {
            return;
        }
    }
}

/// What the log's bookkeeping promises whenever it tells anyone what is durable: nothing
/// counts as durable or committed that was not written, and no sync covered bytes the active
/// segment does not hold. A broken one is a bug in the log (or a caller that truncated
/// committed entries) and stops the process rather than let a wrong durable zxid be
/// acknowledged.
fn check_invariants(inner: &LogState) {
    assert!(
        inner.durable <= inner.written,
        "data log: durable {} beyond written {}",
        inner.durable,
        inner.written
    );
    assert!(
        inner.commit <= inner.written,
        "data log: commit mark {} beyond written {} (committed entries truncated?)",
        inner.commit,
        inner.written
    );
    let active = inner.segments.last().expect("one segment");
    assert!(
        inner.synced_len <= active.len,
        "data log: synced {} bytes of a {}-byte active segment",
        inner.synced_len,
        active.len
    );
}

/// One group commit: syncs the active segment as written now, then advances the durable zxid
/// (and synced length) to what was written before the sync started, and wakes everyone.
/// Returns false once the log is poisoned.
fn sync_round(shared: &LogShared) -> bool {
    let (file, path, target_gen, target_zxid, target_len) = {
        let inner = shared.inner.lock().expect("data log lock");
        if inner.poisoned.is_some() {
            return false;
        }
        if inner.written_gen == inner.synced_gen {
            return true;
        }
        let seg = inner.segments.last().expect("one segment");
        (seg.file.clone(), seg.path.clone(), inner.written_gen, inner.written, seg.len)
    };
    let result = file.sync_data();
    let mut inner = shared.inner.lock().expect("data log lock");
    match result {
        Ok(()) => {
            // A roll, truncation or reset since the snapshot synced on its own and raised
            // `synced_gen`: then this round's snapshot (maybe of another file) is stale.
            if target_gen > inner.synced_gen {
                inner.synced_gen = target_gen;
                inner.durable = inner.durable.max(target_zxid.min(inner.written));
                inner.synced_len = inner.synced_len.max(target_len);
            }
        }
        Err(e) => {
            let detail = format!("syncing {}: {e}", path.display());
            tracing::error!(event = "fsync_failed", "data log: {detail}");
            inner.poisoned = Some(detail);
        }
    }
    check_invariants(&inner);
    shared.durable_changed.notify_all();
    shared
        .durable_tx
        .send_replace(Durable { zxid: inner.durable, failed: inner.poisoned.is_some() });
    inner.poisoned.is_none()
}

impl Drop for DataLog {
    fn drop(&mut self) {
        {
            let mut inner = self.lock();
            inner.shutdown = true;
            self.shared.work.notify_all();
            self.shared.durable_changed.notify_all();
        }
        if let Some(thread) = self.sync_thread.take() {
            let _ = thread.join();
        }
    }
}

impl From<ProtocolError> for StorageError {
    fn from(e: ProtocolError) -> Self {
        StorageError::State(e.to_string())
    }
}
