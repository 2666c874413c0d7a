//! Freeze during heavy writes, and backup of a running store followed by restore and verify,
//! on the real file system.

mod storage_common;

use fs_node::storage::backup::{self, MANIFEST_NAME};
use fs_node::storage::{DiskStore, RealFs, StorageError, StoreConfig, Vfs};
use md5::{Digest, Md5};
use protocol::Zxid;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;
use storage_common::{assert_same, Model, Workload};

fn config() -> StoreConfig {
    StoreConfig {
        segment_bytes_max: 16 * 1024,
        compaction_dead_bytes_min: 4096,
        ..StoreConfig::default()
    }
}

fn open(dir: &Path) -> DiskStore {
    let vfs: Arc<dyn Vfs> = Arc::new(RealFs);
    DiskStore::open(vfs, dir, config()).expect("open").0
}

fn md5_of(path: &Path) -> Vec<u8> {
    Md5::digest(std::fs::read(path).expect("read")).to_vec()
}

/// Runs `batches` random batches against `store` on a thread, reporting each applied zxid on
/// `tx`; returns the model after every zxid.
fn writer(
    store: Arc<DiskStore>,
    seed: u64,
    batches: u32,
    tx: mpsc::Sender<Zxid>,
) -> std::thread::JoinHandle<BTreeMap<Zxid, Model>> {
    std::thread::spawn(move || {
        let mut work = Workload::new(seed);
        let mut model = Model::default();
        let mut models = BTreeMap::from([(Zxid::ZERO, model.clone())]);
        for n in 1..=batches {
            let zxid = Zxid::new(1, n);
            let ops = work.valid_batch(&model, zxid);
            model.apply(zxid, &ops).expect("valid");
            store.apply(zxid, &ops).expect("apply");
            models.insert(zxid, model.clone());
            let _ = tx.send(zxid);
        }
        models
    })
}

/// While frozen under a stream of writes, the frozen files do not change by a byte, reads see
/// every write, and compaction declines; after unfreezing, compaction runs and the store (also
/// after a restart) equals the model.
#[test]
fn freeze_during_heavy_writes_keeps_frozen_files_unchanged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(open(dir.path()));
    let (tx, rx) = mpsc::channel();
    let handle = writer(store.clone(), 11, 3000, tx);
    // Let some segments fill, then freeze in the middle of the stream.
    for _ in 0..800 {
        rx.recv().expect("writer alive");
    }
    let frozen = store.freeze().expect("freeze");
    assert!(frozen.zxid >= Zxid::new(1, 800));
    let sums: Vec<Vec<u8>> = frozen.files.iter().map(|p| md5_of(p)).collect();
    assert!(!frozen.files.is_empty());
    for _ in 0..1500 {
        rx.recv().expect("writer alive");
        assert_eq!(store.compact().expect("compact"), None, "compaction ran while frozen");
    }
    let models = handle.join().expect("writer");
    let again: Vec<Vec<u8>> = frozen.files.iter().map(|p| md5_of(p)).collect();
    assert_eq!(sums, again, "a frozen file changed");
    let last = *models.keys().last().expect("zxid");
    assert_same(&store, &models[&last], "frozen, after every write");
    store.unfreeze();
    assert!(store.compact().expect("compact").is_some());
    assert_same(&store, &models[&last], "after unfreeze and compaction");
    drop(store);
    let store = open(dir.path());
    assert_same(&store, &models[&last], "after restart");
}

/// A backup taken while writes continue holds exactly the state at its manifest's zxid:
/// restoring it gives a store equal to the model at that zxid; the store is unfrozen after;
/// verify passes, and catches a changed byte or a missing file by name.
#[test]
fn backup_while_writing_then_restore_equals_the_model_at_its_zxid() {
    let data = tempfile::tempdir().expect("tempdir");
    let backups = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(open(data.path()));
    let (tx, rx) = mpsc::channel();
    let handle = writer(store.clone(), 12, 2500, tx);
    for _ in 0..1000 {
        rx.recv().expect("writer alive");
    }
    let dest = backups.path().join("b1");
    let manifest = backup::backup(&store, &dest).expect("backup");
    assert!(!store.is_frozen());
    let models = handle.join().expect("writer");
    let zxid = Zxid(manifest.zxid);
    assert!(zxid >= Zxid::new(1, 1000));
    assert!(manifest.files.iter().all(|f| f.md5.len() == 32 && f.size > 0));

    let vfs = RealFs;
    backup::verify(&vfs, &dest).expect("verify");
    let restored = backups.path().join("restored");
    assert_eq!(backup::restore(&vfs, &dest, &restored).expect("restore"), zxid);
    let copy = open(&restored);
    assert_eq!(copy.applied_zxid(), zxid);
    assert_same(&copy, &models[&zxid], "restored backup");

    // Restoring over existing data is refused.
    assert!(backup::restore(&vfs, &dest, &restored).is_err());
    // A second backup into the same directory is refused.
    assert!(backup::backup(&store, &dest).is_err());

    // Tampering is caught and named.
    let victim = dest.join(&manifest.files[0].name);
    let mut bytes = std::fs::read(&victim).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&victim, &bytes).expect("write");
    std::fs::remove_file(dest.join(&manifest.files[1].name)).expect("remove");
    match backup::verify(&vfs, &dest) {
        Err(StorageError::BackupMismatch { problems, .. }) => {
            assert_eq!(problems.len(), 2, "{problems:?}");
            assert!(problems[0].contains(&manifest.files[0].name), "{problems:?}");
            assert!(problems[1].contains(&manifest.files[1].name), "{problems:?}");
        }
        other => panic!("expected BackupMismatch, got {other:?}"),
    }
    assert!(dest.join(MANIFEST_NAME).exists());
}
