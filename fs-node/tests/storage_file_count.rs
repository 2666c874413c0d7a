//! The store's file count stays bounded however many snapshots seal its active segment: small
//! sealed segments are merged once there are more than `sealed_segments_max` of them, and a
//! merge of only some segments never brings a deleted key back.

mod storage_common;

use bytes::Bytes;
use fs_node::storage::{DiskStore, Merge, SimFs, StoreConfig, Vfs};
use protocol::message::data::Op;
use protocol::Zxid;
use std::path::Path;
use std::sync::Arc;
use storage_common::{assert_same, Model, Workload};

const DIR: &str = "/node/data";

fn config(sealed_segments_max: usize) -> StoreConfig {
    StoreConfig {
        segment_bytes_max: 4096,
        // Dead bytes never justify a full merge here: only the file-count bound can merge.
        compaction_dead_bytes_min: u64::MAX,
        sealed_segments_max,
        ..StoreConfig::default()
    }
}

fn open(fs: &SimFs, config: StoreConfig) -> DiskStore {
    let vfs: Arc<dyn Vfs> = Arc::new(fs.clone());
    DiskStore::open(vfs, Path::new(DIR), config).expect("open").0
}

/// Data and hint files actually in the store's directory.
fn files_on_disk(fs: &SimFs) -> usize {
    fs.list(Path::new(DIR))
        .expect("list")
        .iter()
        .filter(|n| n.ends_with(".data") || n.ends_with(".hint"))
        .count()
}

fn put(key: &str, value: &[u8]) -> Op {
    Op::Put {
        key: key.into(),
        value: Bytes::copy_from_slice(value),
        create_only: false,
        ephemeral: None,
    }
}

/// 400 snapshot-like seals (freeze and unfreeze after a few batches each), with the merges
/// `compaction_plan` asks for, keep the sealed segments within the bound plus the one seal
/// since the last check, the files on disk match the count, and the store equals the model,
/// also after a restart. Without the bound the store would end with 400 sealed segments.
#[test]
fn many_seals_with_compaction_keep_the_file_count_bounded() {
    const BOUND: usize = 8;
    let fs = SimFs::new();
    let store = open(&fs, config(BOUND));
    let mut model = Model::default();
    let mut work = Workload::new(11);
    let mut zxid = Zxid::new(1, 0);
    let mut small_merges = 0;
    for seal in 0..400 {
        for _ in 0..3 {
            zxid = zxid.next().expect("zxid");
            let ops = work.valid_batch(&model, zxid);
            model.apply(zxid, &ops).expect("valid");
            store.apply(zxid, &ops).expect("apply");
        }
        store.freeze().expect("freeze");
        assert_eq!(store.compaction_plan(), None, "a merge is planned while frozen");
        store.unfreeze();
        if let Some(which) = store.compaction_plan() {
            assert_eq!(which, Merge::Small, "seal {seal}: dead bytes cannot trigger here");
            assert!(store.merge(which).expect("merge").is_some(), "seal {seal}: nothing merged");
            small_merges += 1;
        }
        assert!(
            store.sealed_segment_count() <= BOUND + 1,
            "seal {seal}: {} sealed segments, bound {BOUND}",
            store.sealed_segment_count()
        );
        assert_eq!(files_on_disk(&fs), store.file_count(), "seal {seal}");
    }
    assert!(small_merges > 10, "only {small_merges} merges of small segments");
    assert_same(&store, &model, "after 400 seals");
    drop(store);
    let store = open(&fs, config(BOUND));
    assert_same(&store, &model, "after 400 seals and a restart");
    assert!(store.sealed_segment_count() <= BOUND + 1);
}

/// A merge of the small segments only keeps the tombstone of a key deleted in one of them:
/// the key's older value sits in a large segment the merge leaves alone, and must not come
/// back at start-up.
#[test]
fn small_merge_keeps_tombstones_of_values_in_large_segments() {
    let fs = SimFs::new();
    let store = open(&fs, config(1));
    let big = vec![7u8; 3000];
    store.apply(Zxid::new(1, 1), &[put("/a", &big)]).expect("put");
    store.freeze().expect("freeze");
    store.unfreeze();
    store
        .apply(Zxid::new(1, 2), &[Op::Delete { key: "/a".into(), recursive: false }])
        .expect("delete");
    store.freeze().expect("freeze");
    store.unfreeze();
    store.apply(Zxid::new(1, 3), &[put("/b", b"small")]).expect("put");
    store.freeze().expect("freeze");
    store.unfreeze();
    assert_eq!(store.sealed_segment_count(), 3);
    assert_eq!(store.compaction_plan(), Some(Merge::Small));
    assert!(store.merge(Merge::Small).expect("merge").is_some());
    assert_eq!(store.sealed_segment_count(), 2, "the two small segments became one");
    assert!(store.get("/a").expect("get").is_none());
    drop(store);
    let store = open(&fs, config(1));
    assert!(store.get("/a").expect("get").is_none(), "a deleted key came back after a restart");
    assert_eq!(&store.get("/b").expect("get").expect("/b").value[..], b"small");
    // A full merge may drop the tombstone now that it takes the old value too.
    assert!(store.compact().expect("compact").is_some());
    drop(store);
    let store = open(&fs, config(1));
    assert!(store.get("/a").expect("get").is_none(), "a deleted key came back after a full merge");
}

/// Fewer than two small segments: nothing to merge, whatever the count.
#[test]
fn small_merge_needs_two_small_segments() {
    let fs = SimFs::new();
    let store = open(&fs, config(0));
    store.apply(Zxid::new(1, 1), &[put("/a", b"x")]).expect("put");
    store.freeze().expect("freeze");
    store.unfreeze();
    assert_eq!(store.compaction_plan(), None);
    assert_eq!(store.merge(Merge::Small).expect("merge"), None);
}
