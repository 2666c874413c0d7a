//! Snapshots and restart on a real disk, without the network: the log, the store, the state
//! machine and [`open_state`] as the node's start-up uses them.

use super::snapshot::{self, SnapshotDir};
use super::start::open_state;
use crate::state::{Command, StateConfig, StateMachine, Tables};
use crate::storage::{DataLog, DiskStore, LogConfig, RealFs, StoreConfig};
use bytes::Bytes;
use protocol::message::data::{Op, RequestId};
use protocol::message::lock::{LockOp, SessionOp};
use protocol::message::replication::Entry;
use protocol::Zxid;
use std::path::Path;
use std::sync::Arc;

const CLIENT: u64 = 0x77 << 40;

/// Every key of a store with its value.
use super::manual::Dump;

/// A node's disk: log and store under `dir`, with a state machine over the store.
struct Disk {
    log: Arc<DataLog>,
    sm: StateMachine<Arc<DiskStore>>,
    next: u32,
    seq: u64,
}

fn real_fs() -> Arc<dyn crate::storage::Vfs> {
    Arc::new(RealFs)
}

fn log_config() -> LogConfig {
    // Small segments and a short retention so that release has whole segments to drop.
    LogConfig { segment_bytes_max: 16 * 1024, retention_entries: 20 }
}

fn open_log(dir: &Path) -> Arc<DataLog> {
    Arc::new(DataLog::open(Arc::new(RealFs), &dir.join("log"), log_config()).expect("log").0)
}

impl Disk {
    fn new(dir: &Path) -> Disk {
        let log = open_log(dir);
        let (store, _) =
            DiskStore::open(Arc::new(RealFs), &dir.join("store"), StoreConfig::default())
                .expect("store");
        let sm = StateMachine::new(Arc::new(store), StateConfig::default());
        Disk { log, sm, next: 1, seq: 0 }
    }

    fn request(&mut self) -> RequestId {
        self.seq += 1;
        RequestId { client: CLIENT, seq: self.seq }
    }

    /// Appends `command` durably and applies it, as a committed entry.
    fn commit(&mut self, command: Command) -> Zxid {
        let zxid = Zxid::new(1, self.next);
        self.next += 1;
        let entry = Entry { zxid, data: Bytes::from(command.encode().expect("encode")) };
        self.log.append_durable(std::slice::from_ref(&entry)).expect("append");
        self.log.mark_commit(zxid).expect("mark");
        self.sm.apply(&entry).expect("apply");
        zxid
    }

    fn put(&mut self, key: &str, value: &str) -> Zxid {
        let request = self.request();
        self.commit(Command::Write {
            request,
            conditions: vec![],
            ops: vec![Op::Put {
                key: key.into(),
                value: Bytes::from(value.to_string()),
                create_only: false,
                ephemeral: None,
            }],
        })
    }

    fn lock(&mut self, name: &str, session: u64) -> Zxid {
        let request = self.request();
        self.commit(Command::Lock {
            request,
            op: LockOp::Grant {
                lock: name.into(),
                auth: 7,
                session,
                holder: CLIENT,
                host: "h".into(),
            },
        })
    }

    fn open_session(&mut self, session: u64) -> Zxid {
        let request = self.request();
        self.commit(Command::Session {
            request,
            op: SessionOp::Open { session, client: CLIENT, ttl_ms: 5_000 },
        })
    }

    /// A complete snapshot at the applied zxid, then log retention, as the core does.
    fn snapshot(&mut self, dir: &Path, previous: Option<&SnapshotDir>) -> SnapshotDir {
        let zxid = self.sm.applied();
        let store = self.sm.store().clone();
        let pending = snapshot::take(dir, &store, self.sm.tables(), zxid).expect("take");
        let snap = pending.finish(previous).expect("finish");
        self.log.release_through(zxid).expect("release");
        snap
    }

    fn state(&self) -> (Dump, Tables) {
        (self.sm.store().dump().expect("dump"), self.sm.tables().clone())
    }
}

/// Starts from `dir` as the node does (store from the newest snapshot, tables from it), then
/// replays the committed log after it. Returns the state and the snapshot zxid started from.
fn restart(dir: &Path) -> (Dump, Tables, Zxid, Arc<DataLog>) {
    let log = open_log(dir);
    let (store, tables, from) =
        open_state(&real_fs(), dir, &log, StoreConfig::default()).expect("open");
    let mut sm = StateMachine::restore(Arc::new(store), tables, StateConfig::default());
    let mut after = from;
    loop {
        let entries = log.read_range(after, 256).expect("read");
        let Some(last) = entries.last() else { break };
        after = last.zxid;
        for e in &entries {
            sm.apply(e).expect("replay");
        }
    }
    (sm.store().dump().expect("dump"), sm.tables().clone(), from, log)
}

/// Claim: a snapshot saves the store and the lock, session and request tables at one zxid;
/// after it the log below it (minus the retention window) is gone; a restart that crashed
/// (no clean shutdown) after further writes starts from the snapshot, replays the rest, and
/// ends in exactly the state before the crash, tables included.
#[test]
fn snapshot_restart_keeps_data_and_tables_and_releases_log() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut disk = Disk::new(dir);
    disk.open_session(42);
    disk.lock("/locks/a", 42);
    for i in 0..300 {
        disk.put(&format!("/k{i}"), &format!("value {i} {}", "x".repeat(100)));
    }
    disk.lock("/locks/b", 0);
    let snap = disk.snapshot(dir, None);
    assert_eq!(snap.zxid, disk.sm.applied());
    assert!(disk.log.start_zxid() > Zxid::ZERO, "retention released no log segment");
    assert!(
        disk.log.read_range(Zxid::ZERO, 1).is_err(),
        "the log still reaches back to its first entry"
    );
    // More writes after the snapshot, some overwriting, then a lock-only tail.
    for i in 0..50 {
        disk.put(&format!("/k{i}"), &format!("second {i}"));
    }
    disk.lock("/locks/c", 42);
    let (data, tables) = disk.state();
    assert_eq!(tables.locks.len(), 3);
    drop(disk); // a crash: nothing is closed cleanly

    let (data2, tables2, from, _) = restart(dir);
    assert_eq!(from, snap.zxid, "did not start from the snapshot");
    assert_eq!(data2, data, "store differs after the restart");
    assert_eq!(tables2, tables, "lock, session or request tables differ after the restart");
}

/// Claim: the snapshot's zxid is the applied zxid even when the last entries touched no data
/// (lock-only), and its tables are exactly the tables at that zxid.
#[test]
fn snapshot_after_lock_only_entries_is_at_the_applied_zxid() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut disk = Disk::new(dir);
    disk.put("/a", "1");
    disk.open_session(9);
    let last = disk.lock("/l", 9);
    let snap = disk.snapshot(dir, None);
    assert_eq!(snap.zxid, last);
    let tables = snapshot::check(&snap).expect("check");
    assert_eq!(&tables, disk.sm.tables());
    let (_, tables2, from, _) = restart(dir);
    assert_eq!(from, last);
    assert_eq!(tables2.locks.len(), 1);
    assert_eq!(tables2.sessions.len(), 1);
}

/// Claim: an unfinished snapshot (`.tmp`, torn) and a directory without a manifest are
/// ignored at start-up (the `.tmp` one is removed); the node starts from the last complete
/// snapshot, and a second snapshot reuses the MD5s of files it shares with the first.
#[test]
fn torn_snapshot_is_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut disk = Disk::new(dir);
    for i in 0..100 {
        disk.put(&format!("/k{i}"), "v");
    }
    let first = disk.snapshot(dir, None);
    for i in 0..100 {
        disk.put(&format!("/m{i}"), "w");
    }
    let second = disk.snapshot(dir, Some(&first));
    let m1 = snapshot::read_manifest(&first.path).unwrap();
    let m2 = snapshot::read_manifest(&second.path).unwrap();
    let shared: Vec<_> = m1.files.iter().filter(|f| f.name != snapshot::TABLES_FILE).collect();
    assert!(shared.iter().all(|f| m2.files.contains(f)), "shared files changed in the manifest");
    crate::storage::backup::verify(&RealFs, &second.path).expect("a snapshot verifies as a backup");
    let (data, tables) = disk.state();
    drop(disk);

    let root = dir.join(snapshot::SNAPSHOTS_DIR);
    let torn =
        root.join(format!("{}{}", snapshot::dir_name(Zxid::new(1, 999)), snapshot::TMP_SUFFIX));
    std::fs::create_dir_all(&torn).unwrap();
    std::fs::write(torn.join(snapshot::TABLES_FILE), b"torn").unwrap();
    let no_manifest = root.join(snapshot::dir_name(Zxid::new(1, 998)));
    std::fs::create_dir_all(&no_manifest).unwrap();

    let (data2, tables2, from, _) = restart(dir);
    assert_eq!(from, second.zxid);
    assert_eq!((data2, tables2), (data, tables));
    assert!(!torn.exists(), "the unfinished snapshot was not removed");
}

/// Claim: a damaged tables file stops start-up with a message naming the snapshot and what to
/// do, instead of starting with wrong lock tables.
#[test]
fn damaged_tables_stop_start_up() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut disk = Disk::new(dir);
    disk.put("/a", "1");
    let snap = disk.snapshot(dir, None);
    drop(disk);
    let path = snap.path.join(snapshot::TABLES_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let log = open_log(dir);
    let err = open_state(&real_fs(), dir, &log, StoreConfig::default()).expect_err("refused");
    let text = err.to_string();
    assert!(text.contains("CRC") && text.contains("move it aside"), "{text}");
}

/// Claim: a snapshot installed from elsewhere beyond the local log (a fetch, a restore) resets
/// the log to the snapshot's zxid, and the node starts from it with the snapshot's state.
#[test]
fn snapshot_beyond_the_log_resets_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let mut disk = Disk::new(&a);
    for i in 0..50 {
        disk.put(&format!("/k{i}"), "v");
    }
    disk.lock("/l", 0);
    let snap = disk.snapshot(&a, None);
    let (data, tables) = disk.state();
    let zxid = snapshot::restore(&snap.path, &b).expect("restore");
    assert_eq!(zxid, snap.zxid);
    assert!(snapshot::restore(&snap.path, &b).is_err(), "restore into a used directory");
    let (data2, tables2, from, log) = restart(&b);
    assert_eq!(from, snap.zxid);
    assert_eq!(log.start_zxid(), snap.zxid, "the log was not reset to the snapshot");
    assert_eq!((data2, tables2), (data, tables));
}

/// Claim: a received snapshot whose file differs from its manifest (a block that slipped
/// through, a bad disk) is refused before anything reaches `snapshots/`, naming the file; an
/// intact one is moved into place under its zxid.
#[test]
fn received_snapshot_is_verified_before_install() {
    let tmp = tempfile::tempdir().unwrap();
    let (donor, receiver) = (tmp.path().join("donor"), tmp.path().join("receiver"));
    let mut disk = Disk::new(&donor);
    for i in 0..50 {
        disk.put(&format!("/k{i}"), "v");
    }
    let snap = disk.snapshot(&donor, None);
    // What a transfer stages: a copy of every file of the snapshot.
    let staged = receiver.join(super::transfer::INCOMING_DIR).join("1-7");
    std::fs::create_dir_all(&staged).unwrap();
    for f in snap.files().unwrap() {
        std::fs::copy(&f, staged.join(f.file_name().unwrap())).unwrap();
    }
    let data = staged.join(snapshot::read_manifest(&snap.path).unwrap().files[0].name.clone());
    let good = std::fs::read(&data).unwrap();
    let mut bad = good.clone();
    bad[0] ^= 1;
    std::fs::write(&data, &bad).unwrap();
    let err = super::transfer::install_received(&staged, &receiver).expect_err("tampered");
    assert!(err.contains("MD5"), "{err}");
    assert!(snapshot::latest(&receiver).unwrap().is_none(), "a bad snapshot was installed");

    std::fs::write(&data, &good).unwrap();
    let installed = super::transfer::install_received(&staged, &receiver).expect("install");
    assert_eq!(installed.zxid, snap.zxid);
    assert_eq!(snapshot::latest(&receiver).unwrap(), Some(installed));
}

/// Claim: every transfer group is the node's group address on a port next to its own, never
/// the node's own port, also at the top of the port range.
#[test]
fn transfer_groups_stay_beside_the_node_group() {
    use std::net::{Ipv4Addr, SocketAddrV4};
    let ip = Ipv4Addr::new(239, 255, 77, 1);
    for port in [7700u16, u16::MAX, u16::MAX - 10] {
        let base = SocketAddrV4::new(ip, port);
        for transfer in [0u64, 1, 63, 64, 1 << 60] {
            let group = super::transfer::transfer_group(base, transfer);
            assert_eq!(group.ip(), &ip);
            assert_ne!(group.port(), port);
            assert!(group.port().abs_diff(port) <= super::transfer::TRANSFER_PORTS as u16);
        }
    }
}

/// Claim: the log kept below a snapshot ends at the byte bound even when the entry window is
/// larger (big entries must not keep a huge log), and without the bound the entry window holds.
#[test]
fn retention_is_bounded_by_bytes_too() {
    let tmp = tempfile::tempdir().unwrap();
    let config = LogConfig { segment_bytes_max: 16 * 1024, retention_entries: 1_000 };
    let log = DataLog::open(Arc::new(RealFs), &tmp.path().join("log"), config).unwrap().0;
    for i in 1..=200u32 {
        let entry = Entry { zxid: Zxid::new(1, i), data: Bytes::from(vec![7u8; 1024]) };
        log.append_durable(&[entry]).unwrap();
    }
    let last = Zxid::new(1, 200);
    assert_eq!(log.release_through_bounded(last, u64::MAX).unwrap(), 0, "entry window ignored");
    assert_eq!(log.start_zxid(), Zxid::ZERO);
    let released = log.release_through_bounded(last, 32 * 1024).unwrap();
    assert!(released > 0, "the byte bound released nothing");
    let kept = log.read_range(log.start_zxid(), 1_000).unwrap().len();
    assert!((32..100).contains(&kept), "kept {kept} entries of 1 KiB for a 32 KiB bound");
}

/// The offer a donor would build for `snap`: from its manifest, as the node's donor does.
fn offer_for(snap: &SnapshotDir) -> Result<cache_server::transfer::Donor, String> {
    let files = snap.files()?;
    let offers = super::transfer::describe_snapshot(snap, &files)?;
    cache_server::transfer::Donor::new(
        cache_server::transfer::DonorConfig::default(),
        1,
        1,
        snap.zxid,
        offers,
        "239.255.77.1:7701".into(),
        0,
    )
    .map_err(|e| e.to_string())
}

/// Claim: 200 snapshots (each seals the store's active segment), with the merges the node's
/// compactor runs when `compaction_plan` asks, keep a snapshot's file count within the store's
/// `sealed_segments_max` (without the merges it would hold 2 files per snapshot, 400), so the
/// transfer offer of the last snapshot still fits one datagram.
#[test]
fn two_hundred_snapshots_still_fit_one_offer() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut disk = Disk::new(dir);
    let mut last: Option<SnapshotDir> = None;
    for i in 0..200 {
        disk.put(&format!("/k{}", i % 37), &format!("value {i}"));
        let snap = disk.snapshot(dir, last.as_ref());
        snapshot::prune(dir, snap.zxid, &[]).unwrap();
        let store = disk.sm.store().clone();
        if let Some(which) = store.compaction_plan() {
            store.merge(which).unwrap();
        }
        last = Some(snap);
    }
    let snap = last.unwrap();
    let files = snap.files().unwrap();
    let bound = 2 * (crate::storage::disk_store::SEALED_SEGMENTS_MAX_DEFAULT + 1) + 2;
    assert!(files.len() <= bound, "{} files in the snapshot, bound {bound}", files.len());
    offer_for(&snap).expect("the offer fits");
    let (dump, ..) = restart(dir);
    assert_eq!(dump, disk.state().0, "the merges changed the data");
}

/// Claim: the offer's list built from the manifest equals what hashing every file gives (the
/// manifest's MD5s describe the linked bytes), and a snapshot file whose size differs from its
/// manifest is refused with a message naming it rather than offered.
#[test]
fn offer_from_manifest_equals_hashing_and_refuses_a_damaged_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut disk = Disk::new(dir);
    let mut previous = None;
    for round in 0..3 {
        for i in 0..40 {
            disk.put(&format!("/r{round}/k{i}"), "some value");
        }
        previous = Some(disk.snapshot(dir, previous.as_ref()));
    }
    let snap = previous.unwrap();
    let files = snap.files().unwrap();
    let from_manifest = super::transfer::describe_snapshot(&snap, &files).unwrap();
    let hashed = cache_server::transfer::FsSource::open(&files).unwrap().describe().unwrap();
    assert_eq!(from_manifest, hashed);
    assert_eq!(from_manifest.len(), files.len());

    let victim = &files[0];
    let mut bytes = std::fs::read(victim).unwrap();
    bytes.push(0);
    std::fs::remove_file(victim).unwrap();
    std::fs::write(victim, &bytes).unwrap();
    let err = super::transfer::describe_snapshot(&snap, &files).expect_err("damaged");
    assert!(err.contains("the snapshot is damaged"), "{err}");
}

/// Claim: a donor refuses an offer that would not fit one datagram with a message saying so
/// (what 1 250 snapshots without merges of small segments would have produced: 2 500 files).
#[test]
fn offer_of_too_many_files_is_refused() {
    use protocol::message::transfer::FileOffer;
    let files: Vec<FileOffer> = (0..2_500u32)
        .map(|i| FileOffer { name: format!("{i:010}.data"), size: 128 << 20, md5: [7; 16] })
        .collect();
    let refused = cache_server::transfer::Donor::new(
        cache_server::transfer::DonorConfig::default(),
        1,
        1,
        Zxid::new(1, 1),
        files,
        "239.255.77.1:7701".into(),
        0,
    );
    let Err(err) = refused else { panic!("an offer of 2 500 files was accepted") };
    assert!(
        matches!(err, cache_server::transfer::TransferError::OfferTooLarge { files: 2_500, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("does not fit one datagram"), "{err}");
}

/// Claim: after a backup is received, the node keeps it and the newest others up to
/// `BACKUPS_KEPT` in all (by zxid, whichever donor), deletes the older ones, and leaves a
/// staging directory and unrelated entries alone; the backup just received stays even if it
/// is the oldest.
#[test]
fn received_backups_keep_the_newest_few() {
    use super::transfer::{prune_backups, BACKUPS_KEPT};
    assert_eq!(BACKUPS_KEPT, 3, "this test's expectations are written for 3");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join(super::transfer::BACKUPS_DIR);
    let name = |donor: u32, zxid: u64| format!("{donor}-{}", snapshot::dir_name(Zxid(zxid)));
    for (donor, zxid) in [(2, 10), (3, 40), (2, 30), (3, 20), (2, 50)] {
        std::fs::create_dir_all(root.join(name(donor, zxid))).unwrap();
        std::fs::write(root.join(name(donor, zxid)).join("f"), b"x").unwrap();
    }
    let partial = root.join(format!("{}.partial-77", name(2, 60)));
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::write(root.join("notes.txt"), b"mine").unwrap();
    let removed = prune_backups(&root.join(name(2, 50)), BACKUPS_KEPT).unwrap();
    let mut left: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    let mut expected = vec![
        name(2, 30),
        name(2, 50),
        name(3, 40),
        partial.file_name().unwrap().to_string_lossy().into_owned(),
        "notes.txt".into(),
    ];
    expected.sort();
    assert_eq!(left, expected);
    assert_eq!(removed.len(), 2);

    // A late backup of an old zxid is kept itself; the two newest others stay.
    std::fs::create_dir_all(root.join(name(3, 5))).unwrap();
    let removed = prune_backups(&root.join(name(3, 5)), BACKUPS_KEPT).unwrap();
    assert_eq!(removed, vec![root.join(name(2, 30))]);
    assert!(root.join(name(3, 5)).exists() && root.join(name(2, 50)).exists());
    assert!(root.join(name(3, 40)).exists());
}
