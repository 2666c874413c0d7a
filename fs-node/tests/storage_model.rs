//! Reference-model tests: random batches against the engine and a `BTreeMap` model, with
//! restarts, compactions, freezes and checkpoints mixed in; after each the two must agree.

mod storage_common;

use fs_node::storage::{Applied, DiskStore, Merge, SimFs, StorageError, StoreConfig, Vfs};
use protocol::Zxid;
use rand::Rng;
use std::path::Path;
use std::sync::Arc;
use storage_common::{assert_same, Model, Workload};

fn small_config() -> StoreConfig {
    StoreConfig {
        segment_bytes_max: 8 * 1024,
        compaction_dead_bytes_min: 1024,
        sealed_segments_max: 4,
        ..StoreConfig::default()
    }
}

fn open(vfs: &SimFs) -> DiskStore {
    let vfs: Arc<dyn Vfs> = Arc::new(vfs.clone());
    DiskStore::open(vfs, Path::new("/node/data"), small_config()).expect("open").0
}

/// For random batches, the engine accepts exactly the batches the model accepts (with the same
/// error code), and after every restart, compaction and freeze cycle holds exactly the model's
/// contents, zxids and listings.
#[test]
fn engine_matches_btreemap_model_across_restarts() {
    for seed in 0..6u64 {
        let fs = SimFs::new();
        let mut store = open(&fs);
        let mut model = Model::default();
        let mut work = Workload::new(seed);
        let mut zxid = Zxid::new(1, 0);
        let mut reclaimed_bytes = 0;
        let mut small_merges = 0u32;
        for step in 0..600 {
            zxid = zxid.next().expect("zxid");
            let ops = work.batch();
            let expected = model.apply(zxid, &ops);
            let checked = store.check(&ops).map_err(|e| e.code());
            assert_eq!(checked, expected, "check disagrees at seed {seed} step {step}: {ops:?}");
            match store.apply(zxid, &ops) {
                Ok(Applied::Done) => assert!(expected.is_ok(), "seed {seed} step {step}"),
                Ok(Applied::AlreadyApplied) => panic!("fresh zxid reported as replay"),
                Err(StorageError::Rejected(e)) => {
                    assert_eq!(Err(e.code()), expected, "seed {seed} step {step}")
                }
                Err(e) => panic!("seed {seed} step {step}: {e}"),
            }
            if expected.is_err() {
                // A refused batch changes nothing; the next zxid is used by the next batch.
                zxid = Zxid(zxid.0 - 1);
            }
            match work.rng().gen_range(0..44) {
                0 => {
                    drop(store);
                    store = open(&fs);
                    assert_same(&store, &model, &format!("seed {seed} step {step} after restart"));
                }
                1 => {
                    reclaimed_bytes += store.compact().expect("compact").unwrap_or(0);
                }
                2 => {
                    store.freeze().expect("freeze");
                }
                3 => store.unfreeze(),
                4 => {
                    store.checkpoint().expect("checkpoint");
                }
                // A snapshot's seal, then a merge of only the small segments.
                5 | 6 if !store.is_frozen() => {
                    store.freeze().expect("freeze");
                    store.unfreeze();
                }
                7 => {
                    let merged = store.merge(Merge::Small).expect("merge small segments");
                    small_merges += u32::from(merged.is_some());
                }
                _ => {}
            }
        }
        assert_same(&store, &model, &format!("seed {seed} end"));
        assert!(reclaimed_bytes > 0, "seed {seed}: compaction never reclaimed anything");
        assert!(small_merges > 0, "seed {seed}: no merge of small segments ever ran");
        store.compact().expect("compact");
        drop(store);
        let store = open(&fs);
        assert_same(&store, &model, &format!("seed {seed} end after compaction and restart"));
    }
}

/// Replaying a batch at or below the applied zxid changes nothing (what makes recovery and
/// import idempotent).
#[test]
fn replay_of_applied_zxids_is_a_no_op() {
    let fs = SimFs::new();
    let store = open(&fs);
    let mut model = Model::default();
    let mut work = Workload::new(99);
    let mut history = Vec::new();
    for n in 1..=200u32 {
        let zxid = Zxid::new(1, n);
        let ops = work.valid_batch(&model, zxid);
        model.apply(zxid, &ops).expect("valid");
        assert_eq!(store.apply(zxid, &ops).expect("apply"), Applied::Done);
        history.push((zxid, ops));
    }
    for (zxid, ops) in &history {
        assert_eq!(store.apply(*zxid, ops).expect("replay"), Applied::AlreadyApplied);
    }
    assert_same(&store, &model, "after replaying everything");
    assert_eq!(store.applied_zxid(), Zxid::new(1, 200));
}

/// `list` returns exactly the direct children, skipping over deep subtrees, and names keys
/// that sort between a directory and its children (such as `/d-x` between `/d` and `/d/…`).
#[test]
fn list_returns_direct_children_only() {
    use bytes::Bytes;
    use protocol::message::data::Op;
    let fs = SimFs::new();
    let store = open(&fs);
    let put = |k: &str| Op::Put {
        key: k.into(),
        value: Bytes::from_static(b"v"),
        create_only: false,
        ephemeral: None,
    };
    let mkdir = |k: &str| Op::Mkdir { key: k.into() };
    let ops = vec![
        mkdir("/d"),
        mkdir("/d/sub"),
        put("/d/sub/deep1"),
        put("/d/sub/deep2"),
        put("/d-x"),
        put("/d/sub-file"),
        put("/d/z"),
        mkdir("/e"),
    ];
    store.apply(Zxid::new(1, 1), &ops).expect("apply");
    let names =
        |d: &str| store.list(d).expect("list").into_iter().map(|e| e.name).collect::<Vec<_>>();
    assert_eq!(names("/"), vec!["d", "d-x", "e"]);
    assert_eq!(names("/d"), vec!["sub", "sub-file", "z"]);
    assert_eq!(names("/d/sub"), vec!["deep1", "deep2"]);
    assert!(names("/e").is_empty());
    assert!(store.list("/nope").is_err());
    assert!(store.list("/d-x").is_err());
}

/// The background compactor merges once dead bytes pass the threshold, without the writer
/// calling it, and the store still equals the model; dropping it stops it.
#[test]
fn background_compactor_merges_when_due() {
    use fs_node::storage::Compactor;
    let fs = SimFs::new();
    let store = Arc::new(open(&fs));
    let compactor = Compactor::spawn(store.clone(), std::time::Duration::from_millis(1));
    let mut model = Model::default();
    let value = bytes::Bytes::from(vec![9u8; 500]);
    let put = |n: u32| protocol::message::data::Op::Put {
        key: format!("/k{}", n % 4),
        value: value.clone(),
        create_only: false,
        ephemeral: None,
    };
    // Overwrites of four keys: almost everything sealed becomes dead. Bounded: stop as soon as
    // a merge has shrunk the sealed bytes, or after 100 000 writes (the writer yields now and
    // then so that a busy machine still schedules the compactor).
    let mut merged = false;
    for n in 1..=100_000u32 {
        if n % 64 == 0 {
            std::thread::yield_now();
        }
        let zxid = Zxid::new(1, n);
        model.apply(zxid, &[put(n)]).expect("valid");
        store.apply(zxid, &[put(n)]).expect("apply");
        // 200 writes of 500 bytes fill more than 12 segments of 8 KiB; fewer than 4 sealed
        // segments' worth afterwards means merges ran.
        if n > 200 && store.sealed_bytes() < 4 * 8 * 1024 {
            merged = true;
            break;
        }
    }
    drop(compactor);
    assert!(merged, "the compactor never brought sealed bytes down");
    assert_same(&store, &model, "after background compaction");
}
