//! The key-value store: data segment files of TLV records, an in-memory index, hint files,
//! merge compaction, freeze, checkpoint. See `fs-node/STORAGE.md` for the format and its crash
//! analysis.
//!
//! Ops are applied as whole batches at one zxid: the batch's net effect is encoded into one
//! buffer ending with a `BatchEnd` record and written with one positional write; the index
//! changes only after that write succeeded. Nothing here calls `fsync` on the write path: the
//! data log already holds every applied entry durably, so data files are synced at checkpoints
//! and when a segment is sealed.
//!
//! A batch is checked by the rules of `protocol::batch` (shape, then namespace) in
//! [`DiskStore::check`] and [`DiskStore::apply`]; the plan of a batch (`Plan`) only lays out what
//! to write where. Lock and Session ops are ignored: the state machine's lock and session
//! tables own them.
//! Call [`DiskStore::apply`] for every committed entry anyway, so that `applied_zxid` advances.

use crate::storage::error::{Result, StorageError, StoreError};
use crate::storage::vfs::{VFile, Vfs};
use bytes::Bytes;
use protocol::batch::{self, EntryKind};
use protocol::key;
use protocol::limits::{KEY_BYTES_DEFAULT, VALUE_BYTES_DEFAULT};
use protocol::message::data::{DirEntry, Op, RangeEntry, Versioned};
use protocol::range;
use protocol::tlv::{self, RecordType};
use protocol::Zxid;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Default size at which the active data segment is sealed.
pub const DATA_SEGMENT_BYTES_DEFAULT: u64 = 128 * 1024 * 1024;
/// Offsets in the index are u32: a segment never grows past this, whatever the configuration.
pub const DATA_SEGMENT_BYTES_HARD_MAX: u64 = 2 * 1024 * 1024 * 1024;
/// Largest encoded batch (a rename of a big subtree copies its values); one batch never spans
/// two segments, and must fit in u32 offsets above a full segment.
pub const BATCH_BYTES_MAX: usize = 1024 * 1024 * 1024;
/// Compaction runs when dead bytes are at least this share of the sealed bytes...
pub const COMPACTION_DEAD_RATIO_DEFAULT: f64 = 0.5;
/// ... and at least this many.
pub const COMPACTION_DEAD_BYTES_MIN_DEFAULT: u64 = 16 * 1024 * 1024;
/// Sealed segments kept before the small ones are merged. Every node snapshot (and freeze)
/// seals the active segment however small it is, and dead bytes alone never trigger a merge
/// of live data, so without this bound the file count grows with every snapshot; a transfer
/// offer lists every file in one datagram (about 1 500 files), so it must stay well below
/// that: 64 segments are 129 files with the hints and the active segment.
pub const SEALED_SEGMENTS_MAX_DEFAULT: usize = 64;

const DATA_SUFFIX: &str = ".data";
const HINT_SUFFIX: &str = ".hint";
const TMP_SUFFIX: &str = ".tmp";
const CHECKPOINT_NAME: &str = "CHECKPOINT";

#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub segment_bytes_max: u64,
    pub key_bytes_max: usize,
    pub value_bytes_max: usize,
    pub compaction_dead_ratio: f64,
    pub compaction_dead_bytes_min: u64,
    /// More sealed segments than this trigger a merge of the small ones (see
    /// [`SEALED_SEGMENTS_MAX_DEFAULT`]). A segment is small below half of `segment_bytes_max`,
    /// so merged outputs hold at least two of them and the merge shrinks the count.
    pub sealed_segments_max: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            segment_bytes_max: DATA_SEGMENT_BYTES_DEFAULT,
            key_bytes_max: KEY_BYTES_DEFAULT,
            value_bytes_max: VALUE_BYTES_DEFAULT,
            compaction_dead_ratio: COMPACTION_DEAD_RATIO_DEFAULT,
            compaction_dead_bytes_min: COMPACTION_DEAD_BYTES_MIN_DEFAULT,
            sealed_segments_max: SEALED_SEGMENTS_MAX_DEFAULT,
        }
    }
}

/// Which sealed segments a merge takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merge {
    /// Every sealed segment: reclaims dead bytes, drops tombstones.
    All,
    /// Only the small sealed segments (under half of `segment_bytes_max`): bounds the file
    /// count. Tombstones of deleted keys are kept, since older records of those keys may sit
    /// in segments this merge leaves alone.
    Small,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    /// Only while loading: a tombstone that outranks older records of its key.
    Deleted,
}

/// Where a key's latest record lives. 24 bytes: memory grows with keys, not values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Loc {
    zxid: Zxid,
    seg: u32,
    offset: u32,
    len: u32,
    kind: Kind,
}

#[derive(Debug)]
struct DataSegment {
    path: PathBuf,
    file: Arc<dyn VFile>,
    len: u64,
    /// Bytes of records no longer pointed at by the index.
    dead_bytes: u64,
    sealed: bool,
}

/// One hint entry: an index entry of a sealed segment.
#[derive(Clone, Debug)]
struct HintRec {
    key: Box<str>,
    loc: Loc,
}

#[derive(Clone, Debug, Default)]
struct Footer {
    watermark: Zxid,
    group: Vec<u32>,
    replaces: Vec<u32>,
}

#[derive(Debug)]
struct StoreState {
    index: BTreeMap<Box<str>, Loc>,
    segments: BTreeMap<u32, DataSegment>,
    active: u32,
    /// Records of the active segment, for its hint file when it is sealed.
    active_hints: Vec<HintRec>,
    /// Highest BatchEnd of the active segment.
    active_watermark: Zxid,
    next_id: u32,
    applied: Zxid,
    checkpoint: Zxid,
    frozen: Option<Frozen>,
}

#[derive(Clone, Debug)]
struct Frozen {
    zxid: Zxid,
    /// The sealed segments as of the freeze: what a backup or transfer copies.
    segments: Vec<u32>,
}

/// What start-up found and repaired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreRecovery {
    /// A torn tail was cut off: (file, offset where it was cut, bytes dropped).
    pub torn_tail: Option<(PathBuf, u64, u64)>,
    /// Segments loaded from their hint files / scanned record by record.
    pub segments_from_hints: usize,
    pub segments_scanned: usize,
    /// An interrupted compaction was finished (true) or undone (false).
    pub compaction_rolled: Option<bool>,
    pub keys: usize,
    pub applied: Zxid,
}

/// What [`DiskStore::apply`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The batch changed the store at this zxid.
    Done,
    /// The zxid was already applied (replay after a crash): nothing changed.
    AlreadyApplied,
}

/// Files the frozen store consists of, for a backup or a transfer.
#[derive(Clone, Debug)]
pub struct FrozenFiles {
    pub zxid: Zxid,
    pub files: Vec<PathBuf>,
}

/// The key-value store. Share it behind an `Arc`: reads take a shared lock only to look up the
/// index and then `pread` without it; apply, freeze and checkpoint take it exclusively.
#[derive(Debug)]
pub struct DiskStore {
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
    config: StoreConfig,
    inner: RwLock<StoreState>,
    /// One compaction at a time.
    compacting: Mutex<()>,
    /// Set when publishing a merge failed half-way: no more merges until restart.
    merge_disabled: Mutex<Option<String>>,
}

fn data_name(id: u32) -> String {
    format!("{id:010}{DATA_SUFFIX}")
}
fn hint_name(id: u32) -> String {
    format!("{id:010}{HINT_SUFFIX}")
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StorageError + 'a {
    move |e| StorageError::io(op, path, e)
}

fn corrupt(path: &Path, offset: u64, detail: impl ToString) -> StorageError {
    let detail = detail.to_string();
    tracing::error!(event = "checksum_failure", file = %path.display(), offset, "data files: {detail}");
    StorageError::Corrupt { file: path.to_path_buf(), offset, detail }
}

fn read_all(file: &dyn VFile, path: &Path) -> Result<Vec<u8>> {
    let len = file.len().map_err(io("sizing", path))?;
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, 0).map_err(io("reading", path))?;
    Ok(buf)
}

/// Splits a data record's value into its key and (for puts) the value bytes.
fn parse_data(kind: RecordType, value: &[u8]) -> Option<(&str, &[u8])> {
    match kind {
        RecordType::DataPut => {
            let key_len = u32::from_le_bytes(value.get(..4)?.try_into().ok()?) as usize;
            let key = std::str::from_utf8(value.get(4..4 + key_len)?).ok()?;
            Some((key, &value[4 + key_len..]))
        }
        RecordType::DataMkdir | RecordType::DataDelete => {
            Some((std::str::from_utf8(value).ok()?, &[][..]))
        }
        _ => None,
    }
}

fn encode_hint(recs: &[HintRec], footer: &Footer) -> Vec<u8> {
    let mut out = Vec::with_capacity(recs.len() * 48);
    for r in recs {
        let kind = match r.loc.kind {
            Kind::File => 0u8,
            Kind::Dir => 1,
            Kind::Deleted => 2,
        };
        tlv::encode_parts(
            RecordType::Hint,
            r.loc.zxid,
            &[&[kind], &r.loc.offset.to_le_bytes(), &r.loc.len.to_le_bytes(), r.key.as_bytes()],
            &mut out,
        )
        .expect("hint fits");
    }
    let mut value = Vec::new();
    value.extend_from_slice(&(footer.group.len() as u32).to_le_bytes());
    for id in &footer.group {
        value.extend_from_slice(&id.to_le_bytes());
    }
    value.extend_from_slice(&(footer.replaces.len() as u32).to_le_bytes());
    for id in &footer.replaces {
        value.extend_from_slice(&id.to_le_bytes());
    }
    tlv::encode_into(RecordType::HintFooter, footer.watermark, &value, &mut out).expect("fits");
    out
}

/// Walks a hint file, handing every entry to `visit`; returns its footer, or `None` if the file
/// is incomplete or damaged (the segment is then scanned instead). Entries are handed over as
/// they are read, so a caller that must not act on a damaged file walks it once with a no-op
/// visitor first.
fn visit_hint(buf: &[u8], seg: u32, mut visit: impl FnMut(&str, Loc)) -> Option<Footer> {
    let mut off = 0;
    while off < buf.len() {
        let (rec, used) = tlv::decode(&buf[off..]).ok()?;
        off += used;
        match rec.kind {
            RecordType::Hint => {
                let v = rec.value;
                let kind = match *v.first()? {
                    0 => Kind::File,
                    1 => Kind::Dir,
                    2 => Kind::Deleted,
                    _ => return None,
                };
                let offset = u32::from_le_bytes(v.get(1..5)?.try_into().ok()?);
                let len = u32::from_le_bytes(v.get(5..9)?.try_into().ok()?);
                let key = std::str::from_utf8(v.get(9..)?).ok()?;
                visit(key, Loc { zxid: rec.zxid, seg, offset, len, kind });
            }
            RecordType::HintFooter if off == buf.len() => {
                let v = rec.value;
                let mut pos = 0;
                let mut ids = || -> Option<Vec<u32>> {
                    let n = u32::from_le_bytes(v.get(pos..pos + 4)?.try_into().ok()?) as usize;
                    pos += 4;
                    let mut out = Vec::with_capacity(n.min(4096));
                    for _ in 0..n {
                        out.push(u32::from_le_bytes(v.get(pos..pos + 4)?.try_into().ok()?));
                        pos += 4;
                    }
                    Some(out)
                };
                let group = ids()?;
                let replaces = ids()?;
                return Some(Footer { watermark: rec.zxid, group, replaces });
            }
            _ => return None,
        }
    }
    None
}

/// A whole hint file as entries and footer.
fn decode_hint(buf: &[u8], seg: u32) -> Option<(Vec<HintRec>, Footer)> {
    let mut recs = Vec::new();
    let footer = visit_hint(buf, seg, |key, loc| recs.push(HintRec { key: key.into(), loc }))?;
    Some((recs, footer))
}

/// Builds the index from every record of every segment: for each key the record with the
/// highest zxid wins, wherever it is (start-up's rule), and tombstones are dropped at the end.
/// Sorting once and bulk-building the tree is several times faster than inserting keys one by
/// one into a growing tree.
fn build_index(mut records: Vec<(Box<str>, Loc)>) -> BTreeMap<Box<str>, Loc> {
    records.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.zxid.cmp(&a.1.zxid)));
    records.dedup_by(|later, kept| later.0 == kept.0);
    records.retain(|(_, loc)| loc.kind != Kind::Deleted);
    records.into_iter().collect()
}

/// Result of scanning a data segment record by record.
struct Scan {
    recs: Vec<HintRec>,
    watermark: Zxid,
    /// End of the last whole batch.
    good_len: u64,
    /// Where and why the scan stopped early.
    damage: Option<(u64, String)>,
}

fn scan_segment(buf: &[u8], seg: u32) -> Scan {
    let mut scan = Scan { recs: Vec::new(), watermark: Zxid::ZERO, good_len: 0, damage: None };
    let mut pending: Vec<HintRec> = Vec::new();
    let mut off = 0usize;
    while off < buf.len() {
        let (rec, used) = match tlv::decode(&buf[off..]) {
            Ok(x) => x,
            Err(e) => {
                scan.damage = Some((off as u64, e.to_string()));
                return scan;
            }
        };
        let kind = match rec.kind {
            RecordType::DataPut => Kind::File,
            RecordType::DataMkdir => Kind::Dir,
            RecordType::DataDelete => Kind::Deleted,
            RecordType::BatchEnd => {
                scan.recs.append(&mut pending);
                scan.watermark = scan.watermark.max(rec.zxid);
                off += used;
                scan.good_len = off as u64;
                continue;
            }
            other => {
                scan.damage = Some((off as u64, format!("unexpected {other:?} record")));
                return scan;
            }
        };
        let Some((key, _)) = parse_data(rec.kind, rec.value) else {
            scan.damage = Some((off as u64, "malformed data record".into()));
            return scan;
        };
        pending.push(HintRec {
            key: key.into(),
            loc: Loc { zxid: rec.zxid, seg, offset: off as u32, len: used as u32, kind },
        });
        off += used;
    }
    if !pending.is_empty() {
        // Records of a batch whose BatchEnd never made it: a torn tail.
        let first = pending[0].loc.offset as u64;
        scan.damage = Some((first, "batch without its end record".into()));
    }
    scan
}

/// Writes `bytes` to `path` durably and atomically (tmp file, fsync, rename, fsync dir).
fn write_file_atomic(vfs: &dyn Vfs, dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    let path = dir.join(name);
    let file = vfs.open(&tmp, true).map_err(io("creating", &tmp))?;
    file.set_len(0).map_err(io("writing", &tmp))?;
    file.write_all_at(bytes, 0).map_err(io("writing", &tmp))?;
    file.sync_data().map_err(io("syncing", &tmp))?;
    vfs.rename(&tmp, &path).map_err(io("renaming", &tmp))?;
    vfs.sync_dir(dir).map_err(io("syncing", dir))?;
    Ok(())
}

/// The data and hint file ids in `dir`; leftover temporary files are removed.
fn list_store_files(vfs: &dyn Vfs, dir: &Path) -> Result<(Vec<u32>, HashSet<u32>)> {
    let names = vfs.list(dir).map_err(io("listing", dir))?;
    for name in names.iter().filter(|n| n.ends_with(TMP_SUFFIX)) {
        let path = dir.join(name);
        vfs.remove(&path).map_err(io("removing", &path))?;
    }
    let ids = |suffix: &str| -> HashSet<u32> {
        names.iter().filter_map(|n| n.strip_suffix(suffix)?.parse::<u32>().ok()).collect()
    };
    let mut data_ids: Vec<u32> = ids(DATA_SUFFIX).into_iter().collect();
    data_ids.sort();
    Ok((data_ids, ids(HINT_SUFFIX)))
}

/// The footers of the hint files that are whole. A damaged hint file is found here, before any
/// of its entries is used; its segment is scanned instead.
fn whole_hints(
    vfs: &dyn Vfs,
    dir: &Path,
    data_ids: &[u32],
    hint_ids: &HashSet<u32>,
) -> Result<HashMap<u32, Footer>> {
    let mut hints = HashMap::new();
    for &id in data_ids.iter().filter(|id| hint_ids.contains(id)) {
        let path = dir.join(hint_name(id));
        let file = vfs.open(&path, false).map_err(io("opening", &path))?;
        if let Some(footer) = visit_hint(&read_all(file.as_ref(), &path)?, id, |_, _| {}) {
            hints.insert(id, footer);
        }
    }
    Ok(hints)
}

/// Finishes or undoes a compaction that a crash interrupted: a group whose every output has
/// its hint replaces its inputs; otherwise the partial outputs go. Removed ids leave
/// `data_ids` and `hints`.
fn settle_compactions(
    vfs: &dyn Vfs,
    dir: &Path,
    data_ids: &mut Vec<u32>,
    hints: &mut HashMap<u32, Footer>,
    recovery: &mut StoreRecovery,
) -> Result<()> {
    let mut remove: HashSet<u32> = HashSet::new();
    let mut groups: Vec<(Vec<u32>, Vec<u32>)> = hints
        .values()
        .filter(|f| !f.group.is_empty())
        .map(|f| (f.group.clone(), f.replaces.clone()))
        .collect();
    groups.sort();
    groups.dedup();
    for (group, replaces) in groups {
        if !replaces.iter().any(|id| data_ids.contains(id)) {
            continue;
        }
        let complete = group.iter().all(|id| hints.contains_key(id));
        let gone = if complete { &replaces } else { &group };
        remove.extend(gone.iter().copied());
        recovery.compaction_rolled = Some(complete);
    }
    for id in &remove {
        for name in [data_name(*id), hint_name(*id)] {
            let path = dir.join(name);
            if vfs.exists(&path) {
                vfs.remove(&path).map_err(io("removing", &path))?;
            }
        }
        hints.remove(id);
    }
    if !remove.is_empty() {
        vfs.sync_dir(dir).map_err(io("syncing", dir))?;
    }
    data_ids.retain(|id| !remove.contains(id));
    Ok(())
}

/// A segment read record by record, and the bytes of a torn tail cut off.
struct Recovered {
    scan: Scan,
    torn: Option<u64>,
}

/// Scans segment `id` without a hint. `torn_from`: for the active segment, the length that
/// was synced; damage at or past it is a torn tail, cut off. Damage below it, or in a sealed
/// segment, is corruption. A sealed segment gets its missing hint file written again.
fn recover_scanned(
    vfs: &dyn Vfs,
    dir: &Path,
    id: u32,
    path: &Path,
    file: &dyn VFile,
    torn_from: Option<u64>,
) -> Result<Recovered> {
    let buf = read_all(file, path)?;
    let scan = scan_segment(&buf, id);
    let mut torn = None;
    if let Some((offset, detail)) = &scan.damage {
        if torn_from.is_none_or(|from| *offset < from) {
            return Err(corrupt(path, *offset, detail));
        }
        tracing::warn!(event = "torn_tail", file = %path.display(),
            offset = scan.good_len, "data files: torn tail cut off ({detail})");
        file.set_len(scan.good_len).map_err(io("truncating", path))?;
        file.sync_data().map_err(io("syncing", path))?;
        torn = Some(buf.len() as u64 - scan.good_len);
    }
    if torn_from.is_none() {
        let footer = Footer { watermark: scan.watermark, ..Footer::default() };
        write_file_atomic(vfs, dir, &hint_name(id), &encode_hint(&scan.recs, &footer))?;
    }
    Ok(Recovered { scan, torn })
}

/// Dead bytes: everything in a segment not pointed at by the index.
/// What [`DiskStore::apply`] leaves true, asserted after each batch (a broken invariant stops
/// the process: going on would write a data file that recovery reads differently):
/// - the checkpoint is not past the applied zxid, and the active segment ends on this batch;
/// - the batch lies inside the active segment, which is not sealed;
/// - no segment the batch touched counts more dead bytes than it holds (a record counted dead
///   twice would make compaction drop live data).
fn check_applied(inner: &StoreState, touched: &[u32], base: u64, batch_len: usize) {
    assert!(
        inner.checkpoint <= inner.applied && inner.active_watermark == inner.applied,
        "store bookkeeping: checkpoint {} applied {} active watermark {}",
        inner.checkpoint,
        inner.applied,
        inner.active_watermark
    );
    let active = &inner.segments[&inner.active];
    assert!(
        !active.sealed && base + batch_len as u64 <= active.len,
        "batch at {base}+{batch_len} outside the active segment {} ({} bytes, sealed {})",
        inner.active,
        active.len,
        active.sealed
    );
    for id in touched {
        if let Some(seg) = inner.segments.get(id) {
            assert!(
                seg.dead_bytes <= seg.len,
                "segment {id} counts {} dead bytes of {}",
                seg.dead_bytes,
                seg.len
            );
        }
    }
}

fn count_dead_bytes(index: &BTreeMap<Box<str>, Loc>, segments: &mut BTreeMap<u32, DataSegment>) {
    let mut live_by_seg: HashMap<u32, u64> = HashMap::new();
    for loc in index.values() {
        *live_by_seg.entry(loc.seg).or_default() += loc.len as u64;
    }
    for (id, seg) in segments.iter_mut() {
        seg.dead_bytes = seg.len.saturating_sub(*live_by_seg.get(id).unwrap_or(&0));
    }
}

/// A view of the state as it evolves through a batch: the index under a plan of changes.
#[derive(Clone, Debug)]
enum Planned {
    File(PlannedValue),
    Dir,
    Gone,
}

#[derive(Clone, Debug)]
enum PlannedValue {
    Inline(Bytes),
    Stored(Loc),
}

struct Plan<'a> {
    index: &'a BTreeMap<Box<str>, Loc>,
    changes: BTreeMap<String, Planned>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum NodeKind {
    File,
    Dir,
}

impl Plan<'_> {
    fn state(&self, key: &str) -> Option<(NodeKind, Option<PlannedValue>)> {
        if key == key::ROOT {
            return Some((NodeKind::Dir, None));
        }
        match self.changes.get(key) {
            Some(Planned::File(v)) => Some((NodeKind::File, Some(v.clone()))),
            Some(Planned::Dir) => Some((NodeKind::Dir, None)),
            Some(Planned::Gone) => None,
            None => match self.index.get(key) {
                Some(loc) if loc.kind == Kind::File => {
                    Some((NodeKind::File, Some(PlannedValue::Stored(*loc))))
                }
                Some(loc) if loc.kind == Kind::Dir => Some((NodeKind::Dir, None)),
                _ => None,
            },
        }
    }

    /// Every existing key strictly below `dir`, in order.
    fn subtree(&self, dir: &str) -> Vec<String> {
        let prefix = format!("{dir}/");
        let upper = format!("{dir}0");
        let mut keys: Vec<String> = self
            .index
            .range::<str, _>((Bound::Included(prefix.as_str()), Bound::Excluded(upper.as_str())))
            .map(|(k, _)| k.to_string())
            .collect();
        keys.extend(
            self.changes
                .range::<str, _>((
                    Bound::Included(prefix.as_str()),
                    Bound::Excluded(upper.as_str()),
                ))
                .map(|(k, _)| k.clone()),
        );
        keys.sort();
        keys.dedup();
        keys.retain(|k| self.state(k).is_some());
        keys
    }

    /// Adds the changes of `op`, which the namespace rules (`protocol::batch`) accepted on the
    /// state the plan holds so far: this lays out what to write, it checks no rule.
    fn add(&mut self, op: &Op) {
        match op {
            Op::Put { key: k, value, .. } => {
                self.changes.insert(k.clone(), Planned::File(PlannedValue::Inline(value.clone())));
            }
            Op::Mkdir { key: k } => {
                self.changes.insert(k.clone(), Planned::Dir);
            }
            Op::Delete { key: k, .. } => {
                for child in self.subtree(k) {
                    self.changes.insert(child, Planned::Gone);
                }
                self.changes.insert(k.clone(), Planned::Gone);
            }
            Op::Rename { from, to } => {
                let Some((kind, value)) = self.state(from) else {
                    panic!("{CHECKED}: a rename's source {from} exists");
                };
                let mut moves: Vec<(String, Planned)> = Vec::new();
                match kind {
                    NodeKind::File => moves.push((
                        to.clone(),
                        Planned::File(value.expect("the plan gives a file its value")),
                    )),
                    NodeKind::Dir => {
                        moves.push((to.clone(), Planned::Dir));
                        for child in self.subtree(from) {
                            let planned = match self.state(&child) {
                                Some((NodeKind::File, Some(v))) => Planned::File(v),
                                _ => Planned::Dir,
                            };
                            moves.push((batch::rebase(&child, from, to), planned));
                        }
                    }
                }
                for child in self.subtree(from) {
                    self.changes.insert(child, Planned::Gone);
                }
                self.changes.insert(from.clone(), Planned::Gone);
                for (k, planned) in moves {
                    self.changes.insert(k, planned);
                }
            }
            Op::Lock(_) | Op::Session(_) => {}
        }
    }
}

/// What a broken assumption of [`Plan::add`] says: the rules were checked before the plan.
const CHECKED: &str = "the namespace rules of protocol::batch were checked before planning";

/// The index as the namespace rules (`protocol::batch`) read it.
struct IndexView<'a>(&'a BTreeMap<Box<str>, Loc>);

impl batch::Namespace for IndexView<'_> {
    fn kind(&self, k: &str) -> Option<EntryKind> {
        if k == key::ROOT {
            return Some(EntryKind::Dir);
        }
        match self.0.get(k)?.kind {
            Kind::File => Some(EntryKind::Value),
            Kind::Dir => Some(EntryKind::Dir),
            Kind::Deleted => None,
        }
    }

    /// One range scan of the index, in key order; no IO.
    fn visit_within(&self, dir: &str, visit: &mut dyn FnMut(&str, EntryKind) -> bool) {
        let prefix = format!("{dir}/");
        let upper = format!("{dir}0");
        let range: Box<dyn Iterator<Item = (&Box<str>, &Loc)>> = if dir == key::ROOT {
            Box::new(self.0.iter())
        } else {
            Box::new(self.0.range::<str, _>((
                Bound::Included(prefix.as_str()),
                Bound::Excluded(upper.as_str()),
            )))
        };
        for (k, loc) in range {
            let kind = if loc.kind == Kind::Dir { EntryKind::Dir } else { EntryKind::Value };
            if !visit(k, kind) {
                return;
            }
        }
    }
}

impl DiskStore {
    /// Opens (or creates) the store in `dir`, recovering from any crash: interrupted
    /// compactions are finished or undone, a torn tail of the active segment is cut off and
    /// reported, damage anywhere else stops with [`StorageError::Corrupt`].
    pub fn open(
        vfs: Arc<dyn Vfs>,
        dir: &Path,
        config: StoreConfig,
    ) -> Result<(DiskStore, StoreRecovery)> {
        let config = StoreConfig {
            segment_bytes_max: config.segment_bytes_max.min(DATA_SEGMENT_BYTES_HARD_MAX),
            ..config
        };
        vfs.create_dir_all(dir).map_err(io("creating", dir))?;
        let mut recovery = StoreRecovery::default();
        let (mut data_ids, hint_ids) = list_store_files(vfs.as_ref(), dir)?;
        let (cp_zxid, cp_seg, cp_len) = read_checkpoint(vfs.as_ref(), dir)?;
        let mut hints = whole_hints(vfs.as_ref(), dir, &data_ids, &hint_ids)?;
        settle_compactions(vfs.as_ref(), dir, &mut data_ids, &mut hints, &mut recovery)?;

        let hintless: Vec<u32> =
            data_ids.iter().copied().filter(|id| !hints.contains_key(id)).collect();
        let active_id = hintless.last().copied();
        let mut records: Vec<(Box<str>, Loc)> = Vec::new();
        let mut segments = BTreeMap::new();
        let mut applied = cp_zxid;
        let mut active_hints = Vec::new();
        let mut active_watermark = Zxid::ZERO;
        for &id in &data_ids {
            let path = dir.join(data_name(id));
            let file = vfs.open(&path, false).map_err(io("opening", &path))?;
            if let Some(footer) = hints.remove(&id) {
                recovery.segments_from_hints += 1;
                let hint_path = dir.join(hint_name(id));
                let hint_file = vfs.open(&hint_path, false).map_err(io("opening", &hint_path))?;
                let buf = read_all(hint_file.as_ref(), &hint_path)?;
                visit_hint(&buf, id, |key, loc| records.push((key.into(), loc)))
                    .ok_or_else(|| corrupt(&hint_path, 0, "hint file changed during start-up"))?;
                let len = file.len().map_err(io("sizing", &path))?;
                applied = applied.max(footer.watermark);
                segments.insert(id, DataSegment { path, file, len, dead_bytes: 0, sealed: true });
                continue;
            }
            recovery.segments_scanned += 1;
            let is_active = Some(id) == active_id;
            // Bytes of the active segment past the checkpoint's synced length were never
            // synced: damage there is a torn tail (the data log still holds those batches).
            let durable_len = if id == cp_seg { cp_len } else { 0 };
            let torn_from = is_active.then_some(durable_len);
            let scan = recover_scanned(vfs.as_ref(), dir, id, &path, file.as_ref(), torn_from)?;
            if let Some(torn) = scan.torn {
                recovery.torn_tail = Some((path.clone(), scan.scan.good_len, torn));
            }
            let Scan { recs, watermark, good_len, .. } = scan.scan;
            applied = applied.max(watermark);
            if is_active {
                active_hints = recs.clone();
                active_watermark = watermark;
            }
            records.extend(recs.into_iter().map(|r| (r.key, r.loc)));
            let seg = DataSegment { path, file, len: good_len, dead_bytes: 0, sealed: !is_active };
            segments.insert(id, seg);
        }
        let index = build_index(records);
        count_dead_bytes(&index, &mut segments);
        let next_id = data_ids.last().map(|i| i + 1).unwrap_or(1);
        let inner = StoreState {
            index,
            segments,
            active: active_id.unwrap_or(0),
            active_hints,
            active_watermark,
            next_id,
            applied,
            checkpoint: cp_zxid,
            frozen: None,
        };
        recovery.keys = inner.index.len();
        recovery.applied = inner.applied;
        let store = DiskStore {
            vfs,
            dir: dir.to_path_buf(),
            config,
            inner: RwLock::new(inner),
            compacting: Mutex::new(()),
            merge_disabled: Mutex::new(None),
        };
        if active_id.is_none() {
            let mut inner = store.write();
            store.start_active(&mut inner)?;
        }
        Ok((store, recovery))
    }

    fn read(&self) -> RwLockReadGuard<'_, StoreState> {
        self.inner.read().expect("store lock poisoned by a panic")
    }
    fn write(&self) -> RwLockWriteGuard<'_, StoreState> {
        self.inner.write().expect("store lock poisoned by a panic")
    }

    fn start_active(&self, inner: &mut StoreState) -> Result<()> {
        let id = inner.next_id;
        inner.next_id += 1;
        let path = self.dir.join(data_name(id));
        let file = self.vfs.open(&path, true).map_err(io("creating", &path))?;
        self.vfs.sync_dir(&self.dir).map_err(io("syncing", &self.dir))?;
        inner.segments.insert(id, DataSegment { path, file, len: 0, dead_bytes: 0, sealed: false });
        inner.active = id;
        inner.active_hints.clear();
        inner.active_watermark = Zxid::ZERO;
        Ok(())
    }

    /// Seals the active segment (fsync, then its hint file) and starts a new one.
    fn seal_active(&self, inner: &mut StoreState) -> Result<()> {
        let id = inner.active;
        let seg = inner.segments.get(&id).expect("active segment");
        seg.file.sync_data().map_err(io("syncing", &seg.path))?;
        let footer =
            Footer { watermark: inner.active_watermark.max(inner.applied), ..Footer::default() };
        write_file_atomic(
            self.vfs.as_ref(),
            &self.dir,
            &hint_name(id),
            &encode_hint(&inner.active_hints, &footer),
        )?;
        inner.segments.get_mut(&id).expect("active segment").sealed = true;
        self.start_active(inner)
    }

    /// Validates a batch against the current state as it would evolve through the batch, by
    /// the rules of `protocol::batch` (shape, then namespace), without changing anything.
    pub fn check(&self, ops: &[Op]) -> Result<(), StoreError> {
        let inner = self.read();
        self.plan(&inner, ops).map(|_| ())
    }

    /// Checks `ops` by the rules of a batch (`protocol::batch`: shape, then namespace, with
    /// this store's limits), then lays out their changes.
    fn plan<'a>(&self, inner: &'a StoreState, ops: &[Op]) -> Result<Plan<'a>, StoreError> {
        let limits = batch::Limits {
            key_bytes_max: self.config.key_bytes_max,
            value_bytes_max: self.config.value_bytes_max,
        };
        batch::check_ops(ops, &limits)?;
        batch::check_namespace(&IndexView(&inner.index), ops, limits.key_bytes_max)?;
        let mut plan = Plan { index: &inner.index, changes: BTreeMap::new() };
        for op in ops {
            plan.add(op);
        }
        Ok(plan)
    }

    /// Applies `ops` atomically as one batch at `zxid`: either all of them or, if any is
    /// invalid (see [`DiskStore::check`]), none. A zxid at or below `applied_zxid` is a replay and
    /// changes nothing.
    pub fn apply(&self, zxid: Zxid, ops: &[Op]) -> Result<Applied> {
        let mut inner = self.write();
        if zxid <= inner.applied {
            return Ok(Applied::AlreadyApplied);
        }
        let changes = self.plan(&inner, ops)?.changes;
        // Encode the batch's net effect, one record per key, then its end.
        let mut buf = Vec::new();
        let mut placed: Vec<(String, Kind, usize, usize)> = Vec::with_capacity(changes.len());
        for (k, planned) in &changes {
            let start = buf.len();
            let kind = match planned {
                Planned::File(value) => {
                    let stored;
                    let bytes: &[u8] = match value {
                        PlannedValue::Inline(b) => b,
                        PlannedValue::Stored(loc) => {
                            stored = self.read_value(&inner, loc)?;
                            &stored
                        }
                    };
                    tlv::encode_parts(
                        RecordType::DataPut,
                        zxid,
                        &[&(k.len() as u32).to_le_bytes(), k.as_bytes(), bytes],
                        &mut buf,
                    )?;
                    Kind::File
                }
                Planned::Dir => {
                    tlv::encode_into(RecordType::DataMkdir, zxid, k.as_bytes(), &mut buf)?;
                    Kind::Dir
                }
                Planned::Gone => {
                    if !inner.index.contains_key(k.as_str()) {
                        continue;
                    }
                    tlv::encode_into(RecordType::DataDelete, zxid, k.as_bytes(), &mut buf)?;
                    Kind::Deleted
                }
            };
            placed.push((k.clone(), kind, start, buf.len() - start));
        }
        tlv::encode_into(RecordType::BatchEnd, zxid, &[], &mut buf)?;
        if buf.len() > BATCH_BYTES_MAX {
            return Err(StorageError::State(format!(
                "batch at {zxid} encodes to {} bytes, over the limit of {BATCH_BYTES_MAX}",
                buf.len()
            )));
        }
        let active_len = inner.segments[&inner.active].len;
        if active_len > 0 && active_len + buf.len() as u64 > self.config.segment_bytes_max {
            // While frozen this is fine too: the frozen set is fixed already, and sealing only
            // adds segments after it.
            self.seal_active(&mut inner)?;
        }
        let active = inner.active;
        let seg = inner.segments.get_mut(&active).expect("active segment");
        let base = seg.len;
        if let Err(e) = seg.file.write_all_at(&buf, base) {
            // Leave the file ending on a whole batch; the index was not touched.
            let _ = seg.file.set_len(base);
            return Err(StorageError::io("writing", &seg.path, e));
        }
        seg.len += buf.len() as u64;
        let mut touched = Vec::with_capacity(placed.len() + 1);
        touched.push(active);
        for (k, kind, start, len) in placed {
            let loc = Loc {
                zxid,
                seg: active,
                offset: (base as usize + start) as u32,
                len: len as u32,
                kind,
            };
            inner.active_hints.push(HintRec { key: k.as_str().into(), loc });
            let old = if kind == Kind::Deleted {
                inner.index.remove(k.as_str())
            } else {
                inner.index.insert(k.into_boxed_str(), loc)
            };
            if let Some(old) = old {
                if let Some(s) = inner.segments.get_mut(&old.seg) {
                    s.dead_bytes += old.len as u64;
                    touched.push(old.seg);
                }
            }
            if kind == Kind::Deleted {
                inner.segments.get_mut(&active).expect("active").dead_bytes += len as u64;
            }
        }
        inner.applied = zxid;
        inner.active_watermark = zxid;
        check_applied(&inner, &touched, base, buf.len());
        Ok(Applied::Done)
    }

    fn read_record(&self, file: &dyn VFile, path: &Path, loc: &Loc) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; loc.len as usize];
        file.read_exact_at(&mut buf, loc.offset as u64).map_err(io("reading", path))?;
        Ok(buf)
    }

    fn read_value(&self, inner: &StoreState, loc: &Loc) -> Result<Bytes> {
        let seg = inner.segments.get(&loc.seg).expect("index points at a live segment");
        let buf = self.read_record(seg.file.as_ref(), &seg.path, loc)?;
        extract_value(&buf, &seg.path, loc)
    }

    /// The value of `key` and the zxid that wrote it; `None` if there is no such file.
    pub fn get(&self, k: &str) -> Result<Option<Versioned>> {
        let (loc, file, path) = {
            let inner = self.read();
            match inner.index.get(k) {
                Some(loc) if loc.kind == Kind::File => {
                    let seg = &inner.segments[&loc.seg];
                    (*loc, seg.file.clone(), seg.path.clone())
                }
                _ => return Ok(None),
            }
        };
        // Read without the lock: a compaction may retire the segment meanwhile, but this
        // handle keeps its bytes readable.
        let buf = self.read_record(file.as_ref(), &path, &loc)?;
        let value = extract_value(&buf, &path, &loc)?;
        Ok(Some(Versioned { zxid: loc.zxid, value }))
    }

    /// Whether `key` exists (file or directory).
    pub fn exists(&self, k: &str) -> bool {
        k == key::ROOT || self.read().index.contains_key(k)
    }

    pub fn is_dir(&self, k: &str) -> bool {
        k == key::ROOT || self.read().index.get(k).is_some_and(|l| l.kind == Kind::Dir)
    }

    /// The zxid of the last write to `key`, whether it is a directory, and its value's length
    /// (0 for a directory), from the index alone; `None` when absent. The root is a directory
    /// at zxid 0.
    pub fn stat_meta(&self, k: &str) -> Option<(Zxid, bool, u64)> {
        if k == key::ROOT {
            return Some((Zxid::ZERO, true, 0));
        }
        let inner = self.read();
        let loc = inner.index.get(k)?;
        match loc.kind {
            Kind::Dir => Some((loc.zxid, true, 0)),
            Kind::File => Some((loc.zxid, false, value_len(k, loc) as u64)),
            Kind::Deleted => None,
        }
    }

    /// One page of a range read (the rules are `protocol::range`'s): the values below `dir`,
    /// recursively, in key order from `from` on, with the key the next page starts at. The
    /// page is chosen from the index alone (value sizes included) under one read of it, then
    /// the values are read; the caller keeps entries from applying meanwhile (the node holds
    /// its applied lock), so the page is of one state. `NotFound` / `NotADirectory` for a
    /// `dir` that is absent or a value.
    pub fn range(
        &self,
        dir: &str,
        from: Option<&str>,
        limit: u32,
        bytes_max: u32,
    ) -> Result<(Vec<RangeEntry>, Option<String>)> {
        let mut picked = Vec::new();
        let mut next = None;
        {
            let inner = self.read();
            if dir != key::ROOT {
                match inner.index.get(dir) {
                    Some(l) if l.kind == Kind::Dir => {}
                    Some(l) if l.kind == Kind::File => {
                        Err(StoreError::NotADirectory { key: dir.to_string() })?
                    }
                    _ => Err(StoreError::NotFound { key: dir.to_string() })?,
                }
            }
            let prefix = range::prefix(dir);
            let start = range::start(dir, from);
            let mut budget = range::Budget::new(limit, bytes_max);
            let scan = inner.index.range::<str, _>((Bound::Included(start.as_str()), Bound::Unbounded));
            for (k, loc) in scan.take_while(|(k, _)| k.starts_with(&prefix)) {
                if loc.kind != Kind::File {
                    continue;
                }
                if !budget.take(k, value_len(k, loc)) {
                    next = Some(k.to_string());
                    break;
                }
                let seg = &inner.segments[&loc.seg];
                picked.push((k.to_string(), *loc, seg.file.clone(), seg.path.clone()));
            }
        }
        // Read without the index lock, as `get` does: a retired segment's handle keeps its bytes.
        let mut entries = Vec::with_capacity(picked.len());
        for (key, loc, file, path) in picked {
            let buf = self.read_record(file.as_ref(), &path, &loc)?;
            let value = extract_value(&buf, &path, &loc)?;
            entries.push(RangeEntry { key, zxid: loc.zxid, value });
        }
        Ok((entries, next))
    }

    /// The zxid of the last write to `key` (file or directory).
    pub fn zxid_of(&self, k: &str) -> Option<Zxid> {
        self.read().index.get(k).map(|l| l.zxid)
    }

    /// The direct children of a directory, in name order. Costs one index seek per child,
    /// however large the subtrees below them.
    pub fn list(&self, dir: &str) -> Result<Vec<DirEntry>, StoreError> {
        let inner = self.read();
        if dir != key::ROOT {
            match inner.index.get(dir) {
                None => return Err(StoreError::NotFound { key: dir.to_string() }),
                Some(l) if l.kind != Kind::Dir => {
                    return Err(StoreError::NotADirectory { key: dir.to_string() })
                }
                _ => {}
            }
        }
        let prefix = if dir == key::ROOT { "/".to_string() } else { format!("{dir}/") };
        let mut out = Vec::new();
        let mut cursor: String = prefix.clone();
        let mut inclusive = true;
        loop {
            let bound = if inclusive {
                Bound::Included(cursor.as_str())
            } else {
                Bound::Excluded(cursor.as_str())
            };
            let Some((k, loc)) = inner.index.range::<str, _>((bound, Bound::Unbounded)).next()
            else {
                break;
            };
            if !k.starts_with(&prefix) {
                break;
            }
            let rest = &k[prefix.len()..];
            match rest.find('/') {
                None => {
                    out.push(DirEntry {
                        name: rest.to_string(),
                        is_dir: loc.kind == Kind::Dir,
                        zxid: loc.zxid,
                    });
                    cursor = k.to_string();
                    inclusive = false;
                }
                Some(i) => {
                    // Inside a child's subtree: jump past it ('0' follows '/').
                    cursor = format!("{prefix}{}0", &rest[..i]);
                    inclusive = true;
                }
            }
        }
        Ok(out)
    }

    pub fn applied_zxid(&self) -> Zxid {
        self.read().applied
    }

    /// The zxid up to which the data files are durable (the last checkpoint).
    pub fn checkpoint_zxid(&self) -> Zxid {
        self.read().checkpoint
    }

    /// Visits every key strictly below `dir` with whether it is a directory, in key order,
    /// until `visit` returns `false`. One range scan of the index; no IO.
    pub fn visit_within(&self, dir: &str, visit: &mut dyn FnMut(&str, bool) -> bool) {
        let inner = self.read();
        batch::Namespace::visit_within(&IndexView(&inner.index), dir, &mut |k, kind| {
            visit(k, kind == EntryKind::Dir)
        });
    }

    /// Whether `key` is a directory, and the zxid that last wrote it; `None` if absent. The
    /// root is a directory at zxid zero.
    pub fn stat(&self, k: &str) -> Option<(bool, Zxid)> {
        if k == key::ROOT {
            return Some((true, Zxid::ZERO));
        }
        self.read().index.get(k).map(|l| (l.kind == Kind::Dir, l.zxid))
    }

    /// Which segment and offset hold `key`'s record (diagnostics and tests).
    pub fn locate(&self, k: &str) -> Option<(u32, u32)> {
        self.read().index.get(k).map(|l| (l.seg, l.offset))
    }

    pub fn key_count(&self) -> usize {
        self.read().index.len()
    }

    /// Makes the data files durable up to the applied zxid and records it; returns that zxid.
    /// Log segments wholly at or below it may then go.
    pub fn checkpoint(&self) -> Result<Zxid> {
        let inner = self.write();
        let seg = &inner.segments[&inner.active];
        seg.file.sync_data().map_err(io("syncing", &seg.path))?;
        let mut value = Vec::new();
        value.extend_from_slice(&inner.active.to_le_bytes());
        value.extend_from_slice(&seg.len.to_le_bytes());
        value.push(tlv::FORMAT_VERSION);
        let record = tlv::encode(RecordType::Checkpoint, inner.applied, &value)?;
        write_file_atomic(self.vfs.as_ref(), &self.dir, CHECKPOINT_NAME, &record)?;
        let applied = inner.applied;
        drop(inner);
        self.write().checkpoint = applied;
        Ok(applied)
    }

    /// Freezes the data files: the active segment is sealed, and the sealed set as of now
    /// (immutable, hinted, synced) is what backups and transfers copy. Compaction stops until
    /// [`DiskStore::unfreeze`]; writes go on into segments created after the freeze. Returns the
    /// zxid the frozen files hold.
    pub fn freeze(&self) -> Result<FrozenFiles> {
        let mut inner = self.write();
        if inner.frozen.is_none() {
            if inner.segments[&inner.active].len > 0 {
                self.seal_active(&mut inner)?;
            }
            let segments: Vec<u32> =
                inner.segments.iter().filter(|(_, s)| s.sealed).map(|(id, _)| *id).collect();
            inner.frozen = Some(Frozen { zxid: inner.applied, segments });
        }
        Ok(self.frozen_files(&inner).expect("frozen"))
    }

    fn frozen_files(&self, inner: &StoreState) -> Option<FrozenFiles> {
        let frozen = inner.frozen.as_ref()?;
        let mut files = Vec::new();
        for id in &frozen.segments {
            files.push(self.dir.join(data_name(*id)));
            files.push(self.dir.join(hint_name(*id)));
        }
        Some(FrozenFiles { zxid: frozen.zxid, files })
    }

    /// Ends a freeze. The frozen period's writes already sit in segments after the frozen set,
    /// so folding them in is only letting compaction merge them again.
    pub fn unfreeze(&self) {
        self.write().frozen = None;
    }

    pub fn is_frozen(&self) -> bool {
        self.read().frozen.is_some()
    }

    /// Bytes in sealed segments (what a merge works on).
    pub fn sealed_bytes(&self) -> u64 {
        self.read().segments.values().filter(|s| s.sealed).map(|s| s.len).sum()
    }

    /// Sealed segments (each is a data file and a hint file on disk).
    pub fn sealed_segment_count(&self) -> usize {
        self.read().segments.values().filter(|s| s.sealed).count()
    }

    /// Data and hint files on disk: two per sealed segment, and the active segment.
    pub fn file_count(&self) -> usize {
        2 * self.sealed_segment_count() + 1
    }

    /// Whether a sealed segment of `len` bytes is small enough for [`Merge::Small`].
    fn is_small(&self, len: u64) -> bool {
        len < self.config.segment_bytes_max / 2
    }

    /// Which merge is due, if any: [`Merge::All`] when dead bytes justify it (see
    /// [`StoreConfig`]), else [`Merge::Small`] when there are more than `sealed_segments_max`
    /// sealed segments and at least two of them are small. `None` while frozen.
    pub fn compaction_plan(&self) -> Option<Merge> {
        let inner = self.read();
        if inner.frozen.is_some() {
            return None;
        }
        let (mut dead, mut total, mut sealed, mut small) = (0u64, 0u64, 0usize, 0usize);
        for s in inner.segments.values().filter(|s| s.sealed) {
            dead += s.dead_bytes;
            total += s.len;
            sealed += 1;
            small += usize::from(self.is_small(s.len));
        }
        if dead >= self.config.compaction_dead_bytes_min
            && dead as f64 >= total as f64 * self.config.compaction_dead_ratio
        {
            Some(Merge::All)
        } else if sealed > self.config.sealed_segments_max && small >= 2 {
            Some(Merge::Small)
        } else {
            None
        }
    }

    /// Whether a merge is due (see [`DiskStore::compaction_plan`]).
    pub fn compaction_due(&self) -> bool {
        self.compaction_plan().is_some()
    }

    /// Merges every sealed segment into new ones holding only live records, without blocking
    /// writes (they continue in the active segment). Returns the bytes reclaimed, or `None` if
    /// the store is frozen or there was nothing to merge.
    pub fn compact(&self) -> Result<Option<u64>> {
        self.merge(Merge::All)
    }

    /// Merges the sealed segments `which` selects; [`Merge::Small`] needs at least two small
    /// segments. Returns the bytes reclaimed, or `None` if the store is frozen or there was
    /// nothing to merge.
    pub fn merge(&self, which: Merge) -> Result<Option<u64>> {
        let _one = self.compacting.lock().expect("compaction lock");
        if let Some(why) = self.merge_disabled.lock().expect("merge flag").clone() {
            return Err(StorageError::State(format!(
                "merges are off until restart ({why}); the store is otherwise fine"
            )));
        }
        let mut unpublished = Vec::new();
        let result = self.compact_locked(which, &mut unpublished);
        if result.is_err() {
            // Best effort: start-up deletes whatever is left.
            for path in unpublished {
                let _ = self.vfs.remove(&path);
            }
        }
        result
    }

    /// The merge itself, as its steps; `unpublished` collects the `.tmp` files it creates
    /// until they are renamed into place.
    fn compact_locked(&self, which: Merge, unpublished: &mut Vec<PathBuf>) -> Result<Option<u64>> {
        let Some(inputs) = self.merge_inputs(which) else { return Ok(None) };
        let input_ids: Vec<u32> = inputs.iter().map(|i| i.id).collect();
        let input_bytes: u64 = inputs.iter().map(|i| i.len).sum();
        let copied = self.copy_live_records(which, &inputs, unpublished)?;
        self.write_output_hints(&copied, &input_ids, unpublished)?;
        let mut inner = self.write();
        if inner.frozen.is_some() {
            // A freeze began meanwhile: its set includes the inputs, so they must stay.
            drop(inner);
            self.discard_outputs(&copied.outputs)?;
            return Ok(None);
        }
        // The outputs leave out records that later writes made dead. Those writes must be
        // durable before the inputs can go, or a crash could lose the overwrite (its unsynced
        // tail) after the merge already dropped what it overwrote. Sealed segments are synced
        // already; sync the active one.
        {
            let seg = &inner.segments[&inner.active];
            seg.file.sync_data().map_err(io("syncing", &seg.path))?;
        }
        self.publish_outputs(&copied.outputs)?;
        unpublished.clear();
        let output_bytes: u64 = copied.outputs.iter().map(|o| o.len).sum();
        adopt_outputs(&mut inner, &self.dir, copied, &input_ids);
        drop(inner);
        self.retire_inputs(&input_ids)?;
        Ok(Some(input_bytes.saturating_sub(output_bytes)))
    }

    /// The sealed segments a merge of kind `which` takes, or `None` when the store is frozen
    /// or there are too few to merge (one for a full merge, two small ones for a partial).
    fn merge_inputs(&self, which: Merge) -> Option<Vec<MergeInput>> {
        let inner = self.read();
        if inner.frozen.is_some() {
            return None;
        }
        let inputs: Vec<MergeInput> = inner
            .segments
            .iter()
            .filter(|(_, s)| s.sealed && (which == Merge::All || self.is_small(s.len)))
            .map(|(id, s)| MergeInput {
                id: *id,
                file: s.file.clone(),
                path: s.path.clone(),
                len: s.len,
            })
            .collect();
        let inputs_min = if which == Merge::All { 1 } else { 2 };
        (inputs.len() >= inputs_min).then_some(inputs)
    }

    /// The `.tmp` path of segment `id`'s data file.
    fn merge_tmp(&self, id: u32) -> PathBuf {
        self.dir.join(format!("{}{TMP_SUFFIX}", data_name(id)))
    }

    /// Takes the next segment id and creates its `.tmp` data file, recorded as unpublished.
    fn open_merge_output(&self, unpublished: &mut Vec<PathBuf>) -> Result<MergeOutput> {
        let id = {
            let mut inner = self.write();
            inner.next_id += 1;
            inner.next_id - 1
        };
        let tmp = self.merge_tmp(id);
        let file = self.vfs.open(&tmp, true).map_err(io("creating", &tmp))?;
        unpublished.push(tmp);
        Ok(MergeOutput { id, file, len: 0, recs: Vec::new() })
    }

    /// Copies every live record of `inputs` into new `.tmp` segments of at most
    /// `segment_bytes_max` each; always at least one (possibly empty) output, because its
    /// hint footer is what tells a restart to finish deleting the inputs.
    fn copy_live_records(
        &self,
        which: Merge,
        inputs: &[MergeInput],
        unpublished: &mut Vec<PathBuf>,
    ) -> Result<Copied> {
        let mut copied = Copied { outputs: Vec::new(), moved: Vec::new(), watermark: Zxid::ZERO };
        for input in inputs {
            let hint_path = self.dir.join(hint_name(input.id));
            let hint_file = self.vfs.open(&hint_path, false).map_err(io("opening", &hint_path))?;
            let (recs, footer) = decode_hint(&read_all(hint_file.as_ref(), &hint_path)?, input.id)
                .ok_or_else(|| {
                    corrupt(&hint_path, 0, "hint file of a sealed segment is damaged")
                })?;
            copied.watermark = copied.watermark.max(footer.watermark);
            for r in self.live_records(which, recs) {
                let bytes = self.read_record(input.file.as_ref(), &input.path, &r.loc)?;
                tlv::decode(&bytes).map_err(|e| corrupt(&input.path, r.loc.offset as u64, e))?;
                let need_new = match copied.outputs.last() {
                    None => true,
                    Some(o) => {
                        o.len > 0 && o.len + bytes.len() as u64 > self.config.segment_bytes_max
                    }
                };
                if need_new {
                    copied.outputs.push(self.open_merge_output(unpublished)?);
                }
                let out = copied.outputs.last_mut().expect("output");
                let tmp = self.merge_tmp(out.id);
                out.file.write_all_at(&bytes, out.len).map_err(io("writing", &tmp))?;
                let new_loc = Loc { seg: out.id, offset: out.len as u32, ..r.loc };
                out.len += bytes.len() as u64;
                out.recs.push(HintRec { key: r.key.clone(), loc: new_loc });
                copied.moved.push((r.key, r.loc, new_loc));
            }
        }
        if copied.outputs.is_empty() {
            // Nothing is live: still write one (empty) output. Deleting only some of the
            // inputs could bring back a value whose tombstone was in a deleted one.
            copied.outputs.push(self.open_merge_output(unpublished)?);
        }
        Ok(copied)
    }

    /// The records of one input's hint file that the merge must keep.
    fn live_records(&self, which: Merge, recs: Vec<HintRec>) -> Vec<HintRec> {
        let inner = self.read();
        recs.into_iter()
            .filter(|r| {
                inner.index.get(&r.key) == Some(&r.loc)
                    // A partial merge keeps the tombstones of deleted keys: an older record of
                    // the key may sit in a segment it does not take, and would come back at
                    // start-up without them. (Copied tombstones count as dead bytes; a full
                    // merge drops them.)
                    || (which == Merge::Small
                        && r.loc.kind == Kind::Deleted
                        && !inner.index.contains_key(&r.key))
            })
            .collect()
    }

    /// Syncs each output and writes its `.tmp` hint file, whose footer names the whole group
    /// and the inputs it replaces.
    fn write_output_hints(
        &self,
        copied: &Copied,
        input_ids: &[u32],
        unpublished: &mut Vec<PathBuf>,
    ) -> Result<()> {
        let group: Vec<u32> = copied.outputs.iter().map(|o| o.id).collect();
        for out in &copied.outputs {
            let tmp = self.merge_tmp(out.id);
            out.file.sync_data().map_err(io("syncing", &tmp))?;
            let footer = Footer {
                watermark: copied.watermark,
                group: group.clone(),
                replaces: input_ids.to_vec(),
            };
            let hint_tmp = self.dir.join(format!("{}{TMP_SUFFIX}", hint_name(out.id)));
            let hf = self.vfs.open(&hint_tmp, true).map_err(io("creating", &hint_tmp))?;
            unpublished.push(hint_tmp.clone());
            hf.write_all_at(&encode_hint(&out.recs, &footer), 0)
                .map_err(io("writing", &hint_tmp))?;
            hf.sync_data().map_err(io("syncing", &hint_tmp))?;
        }
        Ok(())
    }

    /// Removes the `.tmp` files of a merge that will not be published.
    fn discard_outputs(&self, outputs: &[MergeOutput]) -> Result<()> {
        for out in outputs {
            for name in [data_name(out.id), hint_name(out.id)] {
                let tmp = self.dir.join(format!("{name}{TMP_SUFFIX}"));
                self.vfs.remove(&tmp).map_err(io("removing", &tmp))?;
            }
        }
        Ok(())
    }

    /// Renames every output into place and syncs the directory. A crash before the inputs
    /// are retired is finished at start-up from the outputs' footers.
    fn publish_outputs(&self, outputs: &[MergeOutput]) -> Result<()> {
        for out in outputs {
            for name in [data_name(out.id), hint_name(out.id)] {
                let tmp = self.dir.join(format!("{name}{TMP_SUFFIX}"));
                if let Err(e) = self.vfs.rename(&tmp, &self.dir.join(&name)) {
                    // Some outputs may now sit beside their inputs. Start-up sorts that out
                    // (finish or undo by the footers), but only if no later merge drops the
                    // tombstones those outputs may predate: no more merges in this process.
                    *self.merge_disabled.lock().expect("merge flag") =
                        Some(format!("publishing a merge failed: {e}"));
                    return Err(StorageError::io("renaming", &tmp, e));
                }
            }
        }
        self.vfs.sync_dir(&self.dir).map_err(io("syncing", &self.dir))
    }

    /// Deletes the inputs' files once their replacements are published.
    fn retire_inputs(&self, input_ids: &[u32]) -> Result<()> {
        for id in input_ids {
            for name in [data_name(*id), hint_name(*id)] {
                let path = self.dir.join(name);
                self.vfs.remove(&path).map_err(io("removing", &path))?;
            }
        }
        self.vfs.sync_dir(&self.dir).map_err(io("syncing", &self.dir))
    }

    /// Every key with its kind and zxid, in order (tests and the reference model compare this).
    pub fn dump(&self) -> Result<Vec<(String, Option<Versioned>)>> {
        let keys: Vec<(String, Kind)> =
            self.read().index.iter().map(|(k, l)| (k.to_string(), l.kind)).collect();
        let mut out = Vec::with_capacity(keys.len());
        for (k, kind) in keys {
            match kind {
                Kind::File => {
                    let v = self.get(&k)?;
                    out.push((k, v));
                }
                _ => out.push((k, None)),
            }
        }
        Ok(out)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn vfs(&self) -> &Arc<dyn Vfs> {
        &self.vfs
    }
}

/// The length of the value a put record at `loc` holds for key `k`: the record less the TLV
/// overhead, the key's u32 length and the key.
fn value_len(k: &str, loc: &Loc) -> usize {
    (loc.len as usize).saturating_sub(tlv::OVERHEAD_BYTES + 4 + k.len())
}

fn extract_value(buf: &[u8], path: &Path, loc: &Loc) -> Result<Bytes> {
    let (rec, _) = tlv::decode(buf).map_err(|e| corrupt(path, loc.offset as u64, e))?;
    if rec.zxid != loc.zxid || rec.kind != RecordType::DataPut {
        return Err(corrupt(path, loc.offset as u64, "record does not match the index"));
    }
    let (_, value) = parse_data(rec.kind, rec.value)
        .ok_or_else(|| corrupt(path, loc.offset as u64, "malformed put"))?;
    Ok(Bytes::copy_from_slice(value))
}

fn read_checkpoint(vfs: &dyn Vfs, dir: &Path) -> Result<(Zxid, u32, u64)> {
    let path = dir.join(CHECKPOINT_NAME);
    if !vfs.exists(&path) {
        return Ok((Zxid::ZERO, 0, 0));
    }
    let file = vfs.open(&path, false).map_err(io("opening", &path))?;
    let buf = read_all(file.as_ref(), &path)?;
    let (rec, _) = tlv::decode(&buf).map_err(|e| corrupt(&path, 0, e))?;
    if rec.kind != RecordType::Checkpoint || rec.value.len() != 13 {
        return Err(corrupt(&path, 0, "not a checkpoint record"));
    }
    if rec.value[12] > tlv::FORMAT_VERSION {
        return Err(StorageError::State(format!(
            "{} was written in on-disk format {}; this build reads up to {}: run a newer shoal-fs",
            path.display(),
            rec.value[12],
            tlv::FORMAT_VERSION
        )));
    }
    let seg = u32::from_le_bytes(rec.value[..4].try_into().expect("4"));
    let len = u64::from_le_bytes(rec.value[4..12].try_into().expect("8"));
    Ok((rec.zxid, seg, len))
}

/// One sealed segment a merge takes.
struct MergeInput {
    id: u32,
    file: Arc<dyn VFile>,
    path: PathBuf,
    len: u64,
}

/// One segment a merge writes, as `.tmp` files until published.
struct MergeOutput {
    id: u32,
    file: Arc<dyn VFile>,
    len: u64,
    recs: Vec<HintRec>,
}

/// What a merge copied: its outputs, each moved record (key, old place, new place), and the
/// highest watermark of the inputs.
struct Copied {
    outputs: Vec<MergeOutput>,
    moved: Vec<(Box<str>, Loc, Loc)>,
    watermark: Zxid,
}

/// Makes published merge outputs the store's segments: the index follows each record that
/// was not overwritten or deleted while the merge copied it (a copy that was is dead bytes),
/// and the inputs leave the segment table.
fn adopt_outputs(inner: &mut StoreState, dir: &Path, copied: Copied, input_ids: &[u32]) {
    for out in &copied.outputs {
        let segment = DataSegment {
            path: dir.join(data_name(out.id)),
            file: out.file.clone(),
            len: out.len,
            dead_bytes: 0,
            sealed: true,
        };
        inner.segments.insert(out.id, segment);
    }
    for (k, old, new) in copied.moved {
        match inner.index.get_mut(&k) {
            Some(loc) if *loc == old => *loc = new,
            _ => {
                if let Some(s) = inner.segments.get_mut(&new.seg) {
                    s.dead_bytes += new.len as u64;
                }
            }
        }
    }
    for id in input_ids {
        inner.segments.remove(id);
    }
}

/// A background thread that merges whatever [`DiskStore::compaction_plan`] says is due, checking every
/// `check_every`. Writes never wait for it. Dropping the handle stops the thread (after the
/// merge in progress, if any).
#[derive(Debug)]
pub struct Compactor {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Compactor {
    pub fn spawn(store: Arc<DiskStore>, check_every: std::time::Duration) -> Compactor {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("shoal-compactor".into())
            .spawn(move || loop {
                match stopped.recv_timeout(check_every) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
                if let Some(which) = store.compaction_plan() {
                    match store.merge(which) {
                        Ok(Some(bytes)) => tracing::info!(bytes, "compaction reclaimed space"),
                        Ok(None) => {}
                        // The store stays consistent (inputs are kept); try again later.
                        Err(e) => tracing::error!("compaction failed: {e}"),
                    }
                }
            })
            .expect("spawning the compactor thread");
        Compactor { stop: Some(stop), thread: Some(thread) }
    }
}

impl Drop for Compactor {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::vfs::SimFs;
    use bytes::Bytes;
    use protocol::message::data::ErrorCode;

    fn put(key: &str) -> Op {
        Op::Put {
            key: key.into(),
            value: Bytes::from_static(b"value"),
            create_only: false,
            ephemeral: None,
        }
    }

    /// The apply path checks its bookkeeping and stops rather than go on: a segment whose dead
    /// bytes were counted twice (compaction would then drop live records) trips the check at
    /// the next removal instead of being written on.
    #[test]
    #[should_panic(expected = "dead bytes of")]
    fn a_batch_that_leaves_dead_bytes_over_the_segment_stops_the_process() {
        let fs: Arc<dyn Vfs> = Arc::new(SimFs::new());
        let (store, _) =
            DiskStore::open(fs, Path::new("/node/data"), StoreConfig::default()).expect("open");
        store.apply(Zxid::new(1, 1), &[put("/a")]).expect("apply");
        {
            let mut inner = store.write();
            let active = inner.active;
            let seg = inner.segments.get_mut(&active).expect("active");
            seg.dead_bytes = seg.len;
        }
        let _ = store.apply(Zxid::new(1, 2), &[Op::Delete { key: "/a".into(), recursive: false }]);
    }

    fn keys(entries: &[RangeEntry]) -> Vec<&str> {
        entries.iter().map(|e| e.key.as_str()).collect()
    }

    /// A range read pages through every value below a directory at any depth, in key order,
    /// cut by count and by bytes, the values read from the segments; a key written between
    /// two pages shows in the later page when it falls in its part of the range, and not in
    /// the earlier one (each page is the state it was read at); a compaction between pages
    /// moves nothing. Refusals as for a list.
    #[test]
    fn range_pages_through_a_subtree() {
        let fs: Arc<dyn Vfs> = Arc::new(SimFs::new());
        let (store, _) =
            DiskStore::open(fs, Path::new("/node/data"), StoreConfig::default()).expect("open");
        let mkdir = |k: &str| Op::Mkdir { key: k.into() };
        let ops = [mkdir("/r"), put("/r/a"), mkdir("/r/d"), put("/r/d/x"), put("/r/m"), put("/s")];
        store.apply(Zxid::new(1, 1), &ops).expect("apply");

        let (first, next) = store.range("/r", None, 2, u32::MAX).expect("page 1");
        assert_eq!(keys(&first), ["/r/a", "/r/d/x"], "values only, recursive, in key order");
        assert_eq!(first[1].value, Bytes::from_static(b"value"));
        assert_eq!(first[1].zxid, Zxid::new(1, 1));
        assert_eq!(next.as_deref(), Some("/r/m"));

        // Between the pages: one key in the first page's part, one in the second's.
        store.apply(Zxid::new(1, 2), &[put("/r/b"), put("/r/n")]).expect("apply");
        store.compact().expect("compact");
        let (second, next) = store.range("/r", next.as_deref(), 2, u32::MAX).expect("page 2");
        assert_eq!(keys(&second), ["/r/m", "/r/n"], "the later page shows the later state");
        assert_eq!(second[1].zxid, Zxid::new(1, 2));
        assert_eq!(next, None, "the range ends here");
        let (all, _) = store.range("/r", None, 100, u32::MAX).expect("all");
        assert_eq!(keys(&all), ["/r/a", "/r/b", "/r/d/x", "/r/m", "/r/n"]);

        // Bytes: a budget below one value still gives one value per page.
        let (one, next) = store.range("/r", Some("/r/c"), 100, 1).expect("tight");
        assert_eq!((keys(&one), next.as_deref()), (vec!["/r/d/x"], Some("/r/m")));
        let (root, _) = store.range("/", None, 100, u32::MAX).expect("root");
        assert_eq!(root.len(), 6, "the root's range is every value");

        for (dir, code) in [("/none", ErrorCode::NotFound), ("/s", ErrorCode::NotADirectory)] {
            match store.range(dir, None, 1, 1) {
                Err(StorageError::Rejected(e)) => assert_eq!(e.code(), code, "{dir}"),
                other => panic!("{dir}: {other:?}"),
            }
        }
    }
}
