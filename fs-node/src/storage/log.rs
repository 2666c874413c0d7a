//! The data log: append-only segment files of TLV records holding replication entries, with
//! group commit.
//!
//! Appends are written to the active segment at once (page cache) and become durable in groups:
//! one sync thread calls `fdatasync` for everything written since its last call, then wakes
//! every waiter whose entry is now covered. Callers learn durability three ways: block in
//! [`DataLog::wait_durable`], await [`DataLog::wait_durable_async`], or watch
//! [`DataLog::subscribe_durable`] (what the replication driver uses to send Accepts).
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
    /// A torn tail was cut off: (file, offset where it was cut, bytes dropped).
    pub torn_tail: Option<(PathBuf, u64, u64)>,
    pub segments: usize,
    pub entries: usize,
}

#[derive(Debug)]
struct Segment {
    seq: u64,
    path: PathBuf,
    file: Arc<dyn VFile>,
    /// The last zxid before this segment (from its SegmentStart record).
    prev: Zxid,
    /// Every entry's zxid and record offset, in order.
    entries: Vec<(Zxid, u64)>,
    len: u64,
}

impl Segment {
    fn last_zxid(&self) -> Zxid {
        self.entries.last().map(|e| e.0).unwrap_or(self.prev)
    }
}

#[derive(Debug)]
struct Inner {
    segments: Vec<Segment>,
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
}

#[derive(Debug)]
struct Shared {
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
    config: LogConfig,
    inner: Mutex<Inner>,
    /// The sync thread waits here for new writes.
    work: Condvar,
    /// Waiters for durability wait here.
    durable_changed: Condvar,
    durable_tx: watch::Sender<Durable>,
}

/// The data log. Cheap to share behind an `Arc`; every method takes `&self`.
#[derive(Debug)]
pub struct DataLog {
    shared: Arc<Shared>,
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

/// Whether any well-formed record of the given kinds, above `after`, starts somewhere in
/// `buf[from..]`. Used to tell a torn tail (nothing valid after the damage) from corruption
/// in the middle (valid records follow the damage).
pub(crate) fn valid_record_after(
    buf: &[u8],
    from: usize,
    kinds: &[RecordType],
    after: Zxid,
) -> bool {
    (from..buf.len()).any(|off| match tlv::decode(&buf[off..]) {
        Ok((rec, _)) => kinds.contains(&rec.kind) && rec.zxid >= after,
        Err(_) => false,
    })
}

impl DataLog {
    /// Opens (or creates) the log in `dir`, recovering from a crash: a torn tail of the last
    /// segment is cut off and reported; damage anywhere else stops with [`StorageError::Corrupt`].
    pub fn open(
        vfs: Arc<dyn Vfs>,
        dir: &Path,
        config: LogConfig,
    ) -> Result<(DataLog, LogRecovery)> {
        vfs.create_dir_all(dir).map_err(|e| StorageError::io("creating", dir, e))?;
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
        let mut recovery = LogRecovery::default();
        let mut segments = Vec::new();
        let mut commit = Zxid::ZERO;
        let mut hard_state = None;
        let count = names.len();
        for (i, (seq, name)) in names.into_iter().enumerate() {
            let path = dir.join(&name);
            let is_last = i + 1 == count;
            let file = vfs.open(&path, false).map_err(|e| StorageError::io("opening", &path, e))?;
            let buf = read_whole(file.as_ref(), &path)?;
            let floor = segments.last().map(Segment::last_zxid).unwrap_or(Zxid::ZERO);
            let mut seg =
                Segment { seq, path: path.clone(), file, prev: floor, entries: vec![], len: 0 };
            let mut off = 0usize;
            let mut damage: Option<String> = None;
            let mut last = floor;
            while off < buf.len() {
                match tlv::decode(&buf[off..]) {
                    Ok((rec, used)) => {
                        match rec.kind {
                            RecordType::SegmentStart if off == 0 => {
                                let version = rec.value.first().copied().unwrap_or(0);
                                if version > tlv::FORMAT_VERSION {
                                    return Err(StorageError::State(format!(
                                        "{} was written in on-disk format {version}; this build \
                                         reads up to {}: run a newer shoal-fs",
                                        path.display(),
                                        tlv::FORMAT_VERSION
                                    )));
                                }
                                seg.prev = rec.zxid;
                                last = rec.zxid;
                            }
                            RecordType::LogEntry if off > 0 && rec.zxid > last => {
                                seg.entries.push((rec.zxid, off as u64));
                                last = rec.zxid;
                            }
                            RecordType::CommitMark if off > 0 => commit = commit.max(rec.zxid),
                            RecordType::HardState if off > 0 => {
                                hard_state = Some(bytes::Bytes::copy_from_slice(rec.value))
                            }
                            other => {
                                damage = Some(format!(
                                    "unexpected {other:?} record with zxid {} (after {last})",
                                    rec.zxid
                                ));
                                break;
                            }
                        }
                        off += used;
                    }
                    Err(e) => {
                        damage = Some(e.to_string());
                        break;
                    }
                }
            }
            if let Some(detail) = damage {
                let kinds = [RecordType::LogEntry, RecordType::CommitMark, RecordType::HardState];
                let torn = is_last && !valid_record_after(&buf, off + 1, &kinds, last);
                if !torn {
                    return Err(corrupt(&path, off as u64, detail));
                }
                tracing::warn!(event = "torn_tail", file = %path.display(), offset = off,
                    dropped = buf.len() - off, "data log: torn tail cut off ({detail})");
                seg.file
                    .set_len(off as u64)
                    .map_err(|e| StorageError::io("truncating", &path, e))?;
                seg.file.sync_data().map_err(|e| StorageError::io("syncing", &path, e))?;
                recovery.torn_tail = Some((path.clone(), off as u64, (buf.len() - off) as u64));
            }
            seg.len = off as u64;
            if seg.len == 0 {
                // A segment whose header never reached the disk (crash while rolling).
                let mut header = Vec::new();
                tlv::encode_into(
                    RecordType::SegmentStart,
                    seg.prev,
                    &[tlv::FORMAT_VERSION],
                    &mut header,
                )
                .expect("empty record");
                seg.file
                    .write_all_at(&header, 0)
                    .map_err(|e| StorageError::io("writing", &path, e))?;
                seg.file.sync_data().map_err(|e| StorageError::io("syncing", &path, e))?;
                seg.len = header.len() as u64;
            }
            recovery.entries += seg.entries.len();
            segments.push(seg);
        }
        let shared_vfs = vfs.clone();
        if segments.is_empty() {
            segments.push(create_segment(shared_vfs.as_ref(), dir, 1, Zxid::ZERO)?);
        }
        recovery.segments = segments.len();
        let written = segments.last().map(Segment::last_zxid).unwrap_or(Zxid::ZERO);
        let inner = Inner {
            segments,
            written,
            durable: written,
            commit: commit.min(written),
            written_gen: 0,
            synced_gen: 0,
            poisoned: None,
            shutdown: false,
            hard_state,
        };
        let (durable_tx, _) = watch::channel(Durable { zxid: written, failed: false });
        let shared = Arc::new(Shared {
            vfs,
            dir: dir.to_path_buf(),
            config,
            inner: Mutex::new(inner),
            work: Condvar::new(),
            durable_changed: Condvar::new(),
            durable_tx,
        });
        let thread_shared = shared.clone();
        let sync_thread = std::thread::Builder::new()
            .name("shoal-log-sync".into())
            .spawn(move || sync_loop(&thread_shared))
            .map_err(|e| StorageError::io("starting the sync thread for", dir, e))?;
        Ok((DataLog { shared, sync_thread: Some(sync_thread) }, recovery))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
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
        let mut buf = Vec::new();
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
        if active_len + estimate as u64 > self.shared.config.segment_bytes_max
            && !inner.segments.last().expect("one segment").entries.is_empty()
        {
            self.roll(&mut inner)?;
        }
        let seg = inner.segments.last_mut().expect("one segment");
        let base = seg.len;
        let mut offsets = Vec::with_capacity(entries.len());
        for entry in entries {
            offsets.push((entry.zxid, base + buf.len() as u64));
            tlv::encode_into(RecordType::LogEntry, entry.zxid, &entry.data, &mut buf)
                .map_err(|e| StorageError::State(format!("entry {}: {e}", entry.zxid)))?;
        }
        if let Err(e) = seg.file.write_all_at(&buf, base) {
            // Undo a partial write so the file ends on a record boundary; the index is untouched.
            let _ = seg.file.set_len(base);
            return Err(StorageError::io("appending to", &seg.path, e));
        }
        seg.len += buf.len() as u64;
        seg.entries.extend(offsets);
        inner.written = last;
        inner.written_gen += 1;
        self.shared.work.notify_one();
        Ok(last)
    }

    /// Seals the active segment (synced, so only the last segment can ever have a torn tail)
    /// and starts the next one.
    fn roll(&self, inner: &mut Inner) -> Result<()> {
        let old = inner.segments.last().expect("one segment");
        let (file, path) = (old.file.clone(), old.path.clone());
        let (seq, prev) = (old.seq + 1, old.last_zxid());
        file.sync_data().map_err(|e| self.poison(inner, "syncing", &path, e))?;
        let seg = create_segment(self.shared.vfs.as_ref(), &self.shared.dir, seq, prev)?;
        inner.segments.push(seg);
        inner.synced_gen = inner.written_gen;
        inner.durable = inner.written;
        self.publish(inner);
        // After the bookkeeping above: the rewritten record is new work for the sync thread.
        self.rewrite_hard_state(inner)
    }

    fn poison(
        &self,
        inner: &mut Inner,
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

    fn publish(&self, inner: &Inner) {
        self.shared.durable_changed.notify_all();
        self.shared
            .durable_tx
            .send_replace(Durable { zxid: inner.durable, failed: inner.poisoned.is_some() });
    }

    /// Writes the current hard state (if any) into the active segment, unsynced: used when a
    /// segment is started or cut, so that the newest segment always carries it.
    fn rewrite_hard_state(&self, inner: &mut Inner) -> Result<()> {
        let Some(hard) = inner.hard_state.clone() else { return Ok(()) };
        let written = inner.written;
        let seg = inner.segments.last_mut().expect("one segment");
        let buf = tlv::encode(RecordType::HardState, written, &hard)?;
        seg.file
            .write_all_at(&buf, seg.len)
            .map_err(|e| StorageError::io("writing", &seg.path, e))?;
        seg.len += buf.len() as u64;
        inner.written_gen += 1;
        self.shared.work.notify_one();
        Ok(())
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
        let seg = inner.segments.last_mut().expect("one segment");
        let buf = tlv::encode(RecordType::HardState, written, value)?;
        if let Err(e) = seg.file.write_all_at(&buf, seg.len) {
            let _ = seg.file.set_len(seg.len);
            return Err(StorageError::io("appending to", &seg.path, e));
        }
        seg.len += buf.len() as u64;
        let (file, path) = (seg.file.clone(), seg.path.clone());
        if let Err(e) = file.sync_data() {
            return Err(self.poison(&mut inner, "syncing", &path, e));
        }
        inner.hard_state = Some(bytes::Bytes::copy_from_slice(value));
        inner.written_gen += 1;
        inner.synced_gen = inner.written_gen;
        inner.durable = inner.written;
        self.publish(&inner);
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
        let buf = tlv::encode(RecordType::CommitMark, zxid, &[]).expect("empty record");
        let seg = inner.segments.last_mut().expect("one segment");
        if let Err(e) = seg.file.write_all_at(&buf, seg.len) {
            let _ = seg.file.set_len(seg.len);
            return Err(StorageError::io("appending to", &seg.path, e));
        }
        seg.len += buf.len() as u64;
        inner.commit = zxid;
        inner.written_gen += 1;
        self.shared.work.notify_one();
        Ok(())
    }

    /// Blocks until every entry up to `zxid` is durable.
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
        let seg = inner.segments.last_mut().expect("segment");
        let cut = seg.entries.partition_point(|e| e.0 <= zxid);
        if cut < seg.entries.len() {
            let offset = seg.entries[cut].1;
            seg.entries.truncate(cut);
            seg.file.set_len(offset).map_err(|e| StorageError::io("truncating", &seg.path, e))?;
            seg.len = offset;
        }
        self.rewrite_hard_state(&mut inner)?;
        if inner.commit > Zxid::ZERO {
            // The cut may have taken the latest commit mark with it: write it again.
            let commit = inner.commit;
            let seg = inner.segments.last_mut().expect("segment");
            let mark = tlv::encode(RecordType::CommitMark, commit, &[]).expect("empty record");
            seg.file
                .write_all_at(&mark, seg.len)
                .map_err(|e| StorageError::io("writing", &seg.path, e))?;
            seg.len += mark.len() as u64;
        }
        let seg = inner.segments.last().expect("segment");
        let path = seg.path.clone();
        let file = seg.file.clone();
        if let Err(e) = file.sync_data() {
            return Err(self.poison(&mut inner, "syncing", &path, e));
        }
        let last = inner.segments.last().expect("segment").last_zxid();
        inner.written = last;
        // The file holding the last entry was just synced, and earlier segments at their roll.
        inner.durable = last;
        inner.written_gen += 1;
        inner.synced_gen = inner.written_gen;
        self.publish(&inner);
        Ok(())
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
        let gone: Vec<Segment> = inner.segments.drain(..removable).collect();
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
        inner.segments.push(fresh);
        self.rewrite_hard_state(&mut inner)?;
        if let Err(e) = inner.segments.last().expect("segment").file.sync_data() {
            let path = inner.segments.last().expect("segment").path.clone();
            return Err(self.poison(&mut inner, "syncing", &path, e));
        }
        inner.written = prev;
        inner.durable = prev;
        inner.commit = prev;
        inner.written_gen += 1;
        inner.synced_gen = inner.written_gen;
        self.publish(&inner);
        Ok(())
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

fn create_segment(vfs: &dyn Vfs, dir: &Path, seq: u64, prev: Zxid) -> Result<Segment> {
    let path = dir.join(segment_name(seq));
    let file = vfs.open(&path, true).map_err(|e| StorageError::io("creating", &path, e))?;
    let header =
        tlv::encode(RecordType::SegmentStart, prev, &[tlv::FORMAT_VERSION]).expect("small record");
    file.set_len(0).map_err(|e| StorageError::io("creating", &path, e))?;
    file.write_all_at(&header, 0).map_err(|e| StorageError::io("writing", &path, e))?;
    file.sync_data().map_err(|e| StorageError::io("syncing", &path, e))?;
    vfs.sync_dir(dir).map_err(|e| StorageError::io("syncing", dir, e))?;
    Ok(Segment { seq, path, file, prev, entries: Vec::new(), len: header.len() as u64 })
}

/// The group-commit thread: one `fdatasync` covers every append made before it started.
fn sync_loop(shared: &Shared) {
    loop {
        let (file, path, target_gen, target_zxid) = {
            let mut inner = shared.inner.lock().expect("data log lock");
            while inner.written_gen == inner.synced_gen && !inner.shutdown {
                inner = shared.work.wait(inner).expect("data log lock");
            }
            if inner.written_gen == inner.synced_gen || inner.poisoned.is_some() {
                return;
            }
            let seg = inner.segments.last().expect("one segment");
            (seg.file.clone(), seg.path.clone(), inner.written_gen, inner.written)
        };
        let result = file.sync_data();
        let mut inner = shared.inner.lock().expect("data log lock");
        match result {
            Ok(()) => {
                if target_gen > inner.synced_gen {
                    inner.synced_gen = target_gen;
                    // A truncation since the snapshot may have lowered `written`.
                    inner.durable = inner.durable.max(target_zxid.min(inner.written));
                }
            }
            Err(e) => {
                let detail = format!("syncing {}: {e}", path.display());
                tracing::error!(event = "fsync_failed", "data log: {detail}");
                inner.poisoned = Some(detail);
            }
        }
        shared.durable_changed.notify_all();
        shared
            .durable_tx
            .send_replace(Durable { zxid: inner.durable, failed: inner.poisoned.is_some() });
        if inner.poisoned.is_some() {
            return;
        }
    }
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
