//! Corruption on purpose, with exact expectations of what recovery returns: a torn tail is cut
//! at the last whole record and reported; damage before the tail stops the node with the file
//! and offset; a damaged value is reported on read; a full disk leaves the store readable.

mod storage_common;

use bytes::Bytes;
use fs_node::storage::{DataLog, DiskStore, LogConfig, SimFs, StorageError, StoreConfig, Vfs};
use protocol::message::data::Op;
use protocol::tlv;
use protocol::Zxid;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use storage_common::{assert_same, entry, Model, Workload};

const LOG_DIR: &str = "/node/log";
const DATA_DIR: &str = "/node/data";
/// Every test entry carries this many data bytes, so its record is 17 + 10 bytes.
const ENTRY_DATA_BYTES: usize = 10;
const ENTRY_RECORD_BYTES: u64 = (tlv::OVERHEAD_BYTES + ENTRY_DATA_BYTES) as u64;
/// The SegmentStart record that opens every log segment
/// (its value is the format version byte and a flags byte).
const SEGMENT_HEADER_BYTES: u64 = tlv::OVERHEAD_BYTES as u64 + 2;
/// The sync marker that starts each write into a segment after a completed sync (a commit mark
/// carrying the synced length): `logged` syncs after every entry but the last.
const MARKER_BYTES: u64 = tlv::OVERHEAD_BYTES as u64 + 8;

fn vfs(fs: &SimFs) -> Arc<dyn Vfs> {
    Arc::new(fs.clone())
}

fn open_log(fs: &SimFs, segment_bytes_max: u64) -> Result<DataLog, StorageError> {
    let config = LogConfig { segment_bytes_max, retention_entries: 0 };
    DataLog::open(vfs(fs), Path::new(LOG_DIR), config).map(|(log, _)| log)
}

fn raw_entry(n: u32) -> protocol::message::replication::Entry {
    protocol::message::replication::Entry {
        zxid: Zxid::new(1, n),
        data: Bytes::from(vec![n as u8; ENTRY_DATA_BYTES]),
    }
}

/// Writes entries 1..=n durably and returns the log's segment paths.
fn logged(fs: &SimFs, n: u32, segment_bytes_max: u64) -> Vec<PathBuf> {
    let log = open_log(fs, segment_bytes_max).expect("open");
    for i in 1..=n {
        log.append_durable(&[raw_entry(i)]).expect("append");
    }
    log.segment_paths()
}

fn flip_byte(fs: &SimFs, path: &Path, offset: u64) {
    let mut bytes = fs.read_file(path).expect("read");
    bytes[offset as usize] ^= 0x40;
    fs.write_file_durably(path, &bytes).expect("write");
}

/// A half-written record at the end of the last segment is cut off at its start, reported with
/// the file, the offset and the bytes dropped, and every whole entry before it is kept.
#[test]
fn torn_log_tail_is_cut_and_reported() {
    let fs = SimFs::new();
    let path = logged(&fs, 10, 1 << 20).remove(0);
    let mut bytes = fs.read_file(&path).expect("read");
    let whole = bytes.len() as u64;
    assert_eq!(whole, SEGMENT_HEADER_BYTES + 10 * ENTRY_RECORD_BYTES + 9 * MARKER_BYTES);
    let torn = tlv::encode(tlv::RecordType::LogEntry, Zxid::new(1, 11), &[7; 10]).expect("encode");
    bytes.extend_from_slice(&torn[..20]);
    fs.write_file_durably(&path, &bytes).expect("write");

    let (log, recovery) =
        DataLog::open(vfs(&fs), Path::new(LOG_DIR), LogConfig::default()).expect("open");
    assert_eq!(recovery.torn_tail, Some((path.clone(), whole, 20)));
    assert_eq!(log.last_zxid(), Zxid::new(1, 10));
    let entries = log.read_range(Zxid::ZERO, 100).expect("read");
    assert_eq!(entries, (1..=10).map(raw_entry).collect::<Vec<_>>());
    assert_eq!(fs.read_file(&path).expect("read").len() as u64, whole);
}

/// A tail of zeros (a preallocated or partly flushed page) reads as a torn tail, not damage.
#[test]
fn zero_filled_log_tail_is_a_torn_tail() {
    let fs = SimFs::new();
    let path = logged(&fs, 3, 1 << 20).remove(0);
    let mut bytes = fs.read_file(&path).expect("read");
    let whole = bytes.len() as u64;
    bytes.extend_from_slice(&[0u8; 4096]);
    fs.write_file_durably(&path, &bytes).expect("write");
    let (log, recovery) =
        DataLog::open(vfs(&fs), Path::new(LOG_DIR), LogConfig::default()).expect("open");
    assert_eq!(recovery.torn_tail, Some((path, whole, 4096)));
    assert_eq!(log.last_zxid(), Zxid::new(1, 3));
}

/// A bad checksum in the middle of the last segment, with whole records after it, is damage
/// before the tail: open fails naming the file and the damaged record's offset, and the message
/// tells the operator to restore or resync.
#[test]
fn log_damage_before_the_tail_stops_with_file_and_offset() {
    let fs = SimFs::new();
    let path = logged(&fs, 10, 1 << 20).remove(0);
    let fifth = SEGMENT_HEADER_BYTES + 4 * (ENTRY_RECORD_BYTES + MARKER_BYTES);
    flip_byte(&fs, &path, fifth + tlv::HEADER_BYTES as u64 + 3);
    match open_log(&fs, 1 << 20) {
        Err(e @ StorageError::Corrupt { .. }) => {
            let StorageError::Corrupt { file, offset, .. } = &e else { unreachable!() };
            assert_eq!((file, *offset), (&path, fifth));
            let message = e.to_string();
            assert!(message.contains("restore") && message.contains("resync"), "{message}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

/// Any damage in a sealed (not last) segment is corruption, even at its very end.
#[test]
fn damage_in_a_sealed_log_segment_is_corruption() {
    let fs = SimFs::new();
    // Three entries per segment.
    let paths = logged(&fs, 12, SEGMENT_HEADER_BYTES + 3 * ENTRY_RECORD_BYTES + 2 * MARKER_BYTES);
    assert!(paths.len() >= 3, "{paths:?}");
    let last_record = SEGMENT_HEADER_BYTES + 2 * (ENTRY_RECORD_BYTES + MARKER_BYTES);
    flip_byte(&fs, &paths[0], last_record + ENTRY_RECORD_BYTES - 1);
    match open_log(&fs, 1 << 20) {
        Err(StorageError::Corrupt { file, offset, .. }) => {
            assert_eq!((file, offset), (paths[0].clone(), last_record))
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

fn store_config() -> StoreConfig {
    StoreConfig { segment_bytes_max: 2048, ..StoreConfig::default() }
}

fn open_store(fs: &SimFs) -> Result<DiskStore, StorageError> {
    DiskStore::open(vfs(fs), Path::new(DATA_DIR), store_config()).map(|(s, _)| s)
}

fn put(key: &str, value: &[u8]) -> Op {
    Op::Put {
        key: key.into(),
        value: Bytes::copy_from_slice(value),
        create_only: false,
        ephemeral: None,
    }
}

fn data_path(seg: u32) -> PathBuf {
    Path::new(DATA_DIR).join(format!("{seg:010}.data"))
}

/// A store with /k0../k49 (100-byte values) over several segments, all sealed by a freeze.
fn filled_store(fs: &SimFs) -> DiskStore {
    let store = open_store(fs).expect("open");
    for i in 0..50u32 {
        store
            .apply(Zxid::new(1, i + 1), &[put(&format!("/k{i}"), &[i as u8; 100])])
            .expect("apply");
    }
    store.freeze().expect("freeze");
    store.unfreeze();
    store
}

/// A flipped byte in a value of a sealed segment is found by its checksum when read: the read
/// fails naming the file and the record's offset, other keys stay readable, and start-up (from
/// hint files) does not read values at all.
#[test]
fn damaged_value_is_reported_on_read_with_file_and_offset() {
    let fs = SimFs::new();
    let (seg, offset) = {
        let store = filled_store(&fs);
        store.locate("/k3").expect("k3")
    };
    flip_byte(&fs, &data_path(seg), offset as u64 + tlv::HEADER_BYTES as u64 + 4 + 3 + 50);
    let store = open_store(&fs).expect("open from hints");
    match store.get("/k3") {
        Err(StorageError::Corrupt { file, offset: o, .. }) => {
            assert_eq!((file, o), (data_path(seg), offset as u64))
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(store.get("/k4").expect("read").expect("k4").value, Bytes::from(vec![4u8; 100]));
}

/// Without its hint file, a sealed segment is scanned at start-up; a damaged record in it then
/// stops start-up with the file and offset.
#[test]
fn damaged_sealed_segment_without_hint_stops_startup() {
    let fs = SimFs::new();
    let (seg, offset) = {
        let store = filled_store(&fs);
        store.locate("/k3").expect("k3")
    };
    let hint = Path::new(DATA_DIR).join(format!("{seg:010}.hint"));
    vfs(&fs).remove(&hint).expect("remove hint");
    flip_byte(&fs, &data_path(seg), offset as u64 + tlv::HEADER_BYTES as u64 + 10);
    match open_store(&fs) {
        Err(StorageError::Corrupt { file, offset: o, .. }) => {
            assert_eq!((file, o), (data_path(seg), offset as u64))
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

/// Garbage after the last whole batch of the active segment (never synced) is a torn tail:
/// cut at the batch end and reported; the state is exactly the batches before it.
#[test]
fn torn_tail_of_active_data_segment_is_cut() {
    let fs = SimFs::new();
    let store = open_store(&fs).expect("open");
    store.apply(Zxid::new(1, 1), &[put("/a", b"one")]).expect("apply");
    store.apply(Zxid::new(1, 2), &[put("/b", b"two"), put("/c", b"three")]).expect("apply");
    let (seg, _) = store.locate("/a").expect("a");
    drop(store);
    let path = data_path(seg);
    let mut bytes = fs.read_file(&path).expect("read");
    let whole = bytes.len() as u64;
    // Half of a further batch: a put record without its BatchEnd, then garbage.
    tlv::encode_parts(
        tlv::RecordType::DataPut,
        Zxid::new(1, 3),
        &[&2u32.to_le_bytes(), b"/d", b"x"],
        &mut bytes,
    )
    .expect("encode");
    bytes.extend_from_slice(&[0xAB; 9]);
    fs.write_file_durably(&path, &bytes).expect("write");
    let (store, recovery) =
        DiskStore::open(vfs(&fs), Path::new(DATA_DIR), store_config()).expect("open");
    assert_eq!(recovery.torn_tail, Some((path, whole, bytes.len() as u64 - whole)));
    assert_eq!(store.applied_zxid(), Zxid::new(1, 2));
    assert!(store.get("/d").expect("read").is_none());
    assert_eq!(store.get("/c").expect("read").expect("c").value, Bytes::from_static(b"three"));
}

/// Below the checkpoint's synced length the active segment must be whole: damage there is
/// corruption, not a torn tail, because those batches may be gone from the data log.
#[test]
fn damage_below_the_checkpoint_is_corruption() {
    let fs = SimFs::new();
    let store = open_store(&fs).expect("open");
    store.apply(Zxid::new(1, 1), &[put("/a", b"one")]).expect("apply");
    store.apply(Zxid::new(1, 2), &[put("/b", b"two")]).expect("apply");
    store.checkpoint().expect("checkpoint");
    let (seg, offset) = store.locate("/a").expect("a");
    drop(store);
    flip_byte(&fs, &data_path(seg), offset as u64 + 2);
    match open_store(&fs) {
        Err(StorageError::Corrupt { file, offset: o, .. }) => {
            assert_eq!((file, o), (data_path(seg), offset as u64))
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

/// A full disk fails the write with a DiskFull error that says what to do, changes nothing,
/// keeps every read working, and writes succeed again once space is back.
#[test]
fn disk_full_fails_cleanly_and_leaves_the_store_readable() {
    let fs = SimFs::new();
    let store = open_store(&fs).expect("open");
    let log = open_log(&fs, 1 << 20).expect("open log");
    let mut model = Model::default();
    let mut work = Workload::new(5);
    for n in 1..=40u32 {
        let zxid = Zxid::new(1, n);
        let ops = work.valid_batch(&model, zxid);
        model.apply(zxid, &ops).expect("valid");
        log.append_durable(&[entry(zxid, &ops)]).expect("append");
        store.apply(zxid, &ops).expect("apply");
    }
    fs.set_disk_full(true);
    let zxid = Zxid::new(1, 41);
    let ops = work.valid_batch(&model, zxid);
    match store.apply(zxid, &ops) {
        Err(e @ StorageError::DiskFull { .. }) => {
            assert!(e.to_string().contains("free space"), "{e}")
        }
        other => panic!("expected DiskFull, got {other:?}"),
    }
    assert!(matches!(log.append(&[entry(zxid, &ops)]), Err(StorageError::DiskFull { .. })));
    assert_same(&store, &model, "while the disk is full");
    assert_eq!(store.applied_zxid(), Zxid::new(1, 40));
    assert_eq!(log.read_range(Zxid::ZERO, 100).expect("read").len(), 40);

    fs.set_disk_full(false);
    model.apply(zxid, &ops).expect("valid");
    log.append_durable(&[entry(zxid, &ops)]).expect("append after space is back");
    store.apply(zxid, &ops).expect("apply after space is back");
    drop((store, log));
    let store = open_store(&fs).expect("reopen");
    assert_same(&store, &model, "after reopening");
    assert_eq!(open_log(&fs, 1 << 20).expect("reopen log").last_zxid(), zxid);
}

/// Permission errors are classified as such, with a message naming the fix.
#[test]
fn permission_errors_name_the_fix() {
    let e = StorageError::io(
        "opening",
        Path::new("/var/lib/shoal/data"),
        std::io::Error::from(std::io::ErrorKind::PermissionDenied),
    );
    assert!(matches!(e, StorageError::PermissionDenied { .. }));
    assert!(e.to_string().contains("must be able to read and write"), "{e}");
}

/// A log written by a newer on-disk format is refused with a message saying to upgrade, not
/// misread.
#[test]
fn newer_log_format_is_refused() {
    let fs = SimFs::new();
    let path = logged(&fs, 2, 1 << 20).remove(0);
    let mut bytes = fs.read_file(&path).expect("read");
    let header =
        tlv::encode(tlv::RecordType::SegmentStart, Zxid::ZERO, &[tlv::FORMAT_VERSION + 1]).unwrap();
    bytes.splice(..SEGMENT_HEADER_BYTES as usize, header);
    fs.write_file_durably(&path, &bytes).expect("write");
    match open_log(&fs, 1 << 20) {
        Err(e @ StorageError::State(_)) => assert!(e.to_string().contains("newer"), "{e}"),
        other => panic!("expected a format error, got {other:?}"),
    }
}

/// A merge that hits a full disk fails with DiskFull, removes its unfinished outputs, keeps
/// its inputs and every value; once space is back the next merge works.
#[test]
fn disk_full_during_compaction_keeps_everything() {
    let fs = SimFs::new();
    let store = open_store(&fs).expect("open");
    let mut model = Model::default();
    // Overwrites of a few keys: sealed segments full of dead values.
    for n in 1..=120u32 {
        let zxid = Zxid::new(1, n);
        let ops = [put(&format!("/k{}", n % 5), &[n as u8; 100])];
        model.apply(zxid, &ops).expect("valid");
        store.apply(zxid, &ops).expect("apply");
    }
    let files_before = vfs(&fs).list(Path::new(DATA_DIR)).expect("list");
    fs.set_disk_full(true);
    assert!(matches!(store.compact(), Err(StorageError::DiskFull { .. })));
    fs.set_disk_full(false);
    assert_eq!(vfs(&fs).list(Path::new(DATA_DIR)).expect("list"), files_before);
    assert_same(&store, &model, "after the failed merge");
    assert!(store.compact().expect("merge after space is back").is_some());
    assert_same(&store, &model, "after the merge");
    drop(store);
    assert_same(&open_store(&fs).expect("reopen"), &model, "after reopening");
}
