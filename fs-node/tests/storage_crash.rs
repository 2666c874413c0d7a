//! Crash tests on the simulated file layer, which keeps written bytes apart from durable ones:
//! a fail point stops the engine at every mutating file operation of a scenario in turn
//! (writes, group commits, seals, checkpoints, retention, freeze, compaction), the "machine"
//! loses or tears every unsynced byte, and recovery must bring back every acknowledged write
//! and nothing half-applied.

mod storage_common;

use fs_node::storage::{
    CrashMode, DataLog, KvStore, LogConfig, LogRecovery, SimFs, StoreConfig, StoreRecovery, Vfs,
};
use protocol::Zxid;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use storage_common::{assert_same, entry, ops_of, Model, Workload};

const LOG_DIR: &str = "/node/log";
const DATA_DIR: &str = "/node/data";

fn log_config() -> LogConfig {
    LogConfig { segment_bytes_max: 4 * 1024, retention_entries: 5 }
}

fn store_config() -> StoreConfig {
    StoreConfig {
        segment_bytes_max: 4 * 1024,
        compaction_dead_bytes_min: 512,
        ..StoreConfig::default()
    }
}

fn open_both(fs: &SimFs) -> (DataLog, KvStore, LogRecovery, StoreRecovery) {
    let vfs: Arc<dyn Vfs> = Arc::new(fs.clone());
    let (log, log_rec) =
        DataLog::open(vfs.clone(), Path::new(LOG_DIR), log_config()).expect("open log");
    let (store, store_rec) =
        KvStore::open(vfs, Path::new(DATA_DIR), store_config()).expect("open store");
    (log, store, log_rec, store_rec)
}

/// Applies every logged entry above the store's applied zxid (all entries are committed in
/// these single-node scenarios).
fn replay(log: &DataLog, store: &KvStore) {
    let mut from = store.applied_zxid();
    loop {
        let entries = log.read_range(from, 100).expect("read_range");
        if entries.is_empty() {
            break;
        }
        for e in entries {
            store.apply(e.zxid, &ops_of(&e)).expect("replay apply");
            from = e.zxid;
        }
    }
}

/// Runs the scenario until the first error (the fail point); returns the highest zxid whose
/// durability was acknowledged, and the model after every zxid.
fn scenario(log: &DataLog, store: &KvStore, seed: u64) -> (Zxid, BTreeMap<Zxid, Model>) {
    let mut work = Workload::new(seed);
    let mut model = Model::default();
    let mut models = BTreeMap::from([(Zxid::ZERO, model.clone())]);
    let mut acked = Zxid::ZERO;
    for step in 1..=90u32 {
        let zxid = Zxid::new(1, step);
        let ops = work.valid_batch(&model, zxid);
        model.apply(zxid, &ops).expect("valid batch");
        models.insert(zxid, model.clone());
        if log.append(&[entry(zxid, &ops)]).is_err() || log.wait_durable(zxid).is_err() {
            break;
        }
        acked = zxid;
        if log.mark_commit(zxid).is_err() || store.apply(zxid, &ops).is_err() {
            break;
        }
        let ok = match step {
            s if s % 20 == 0 => store.checkpoint().and_then(|cp| log.release_through(cp)).is_ok(),
            s if s % 25 == 0 => store.compact().is_ok(),
            45 => store.freeze().is_ok(),
            65 => {
                store.unfreeze();
                store.compact().is_ok()
            }
            _ => true,
        };
        if !ok {
            break;
        }
    }
    (acked, models)
}

fn check_recovery(fs: &SimFs, acked: Zxid, models: &BTreeMap<Zxid, Model>, context: &str) {
    let (log, store, _, _) = open_both(fs);
    let applied = store.applied_zxid();
    assert_same(&store, &models[&applied], &format!("{context}: before replay (half-applied?)"));
    assert!(
        log.last_zxid() >= acked,
        "{context}: acknowledged {acked} lost, log ends at {}",
        log.last_zxid()
    );
    replay(&log, &store);
    assert_eq!(store.applied_zxid(), log.last_zxid(), "{context}");
    assert_same(&store, &models[&log.last_zxid()], &format!("{context}: after replay"));
}

/// A crash at each mutating file operation of a scenario with writes, group commits, segment
/// seals, checkpoints with log retention, a freeze, and compactions recovers every
/// acknowledged write, with the store equal to the model at exactly one zxid.
#[test]
fn crash_at_every_file_operation_recovers_acknowledged_state() {
    // Count the scenario's operations once, without a fail point.
    let total_ops = {
        let fs = SimFs::new();
        let (log, store, _, _) = open_both(&fs);
        fs.fail_after(Some(u64::MAX));
        let (acked, models) = scenario(&log, &store, 7);
        assert_eq!(acked, Zxid::new(1, 90));
        drop((log, store));
        check_recovery(&fs, acked, &models, "no crash");
        // The fail point counts down from u64::MAX: what was used is the scenario's length.
        u64::MAX - ops_left(&fs)
    };
    assert!(total_ops > 500, "scenario too small to mean much: {total_ops} ops");
    let stride = (total_ops / 400).max(1);
    let mut n = 0;
    while n < total_ops {
        for mode in [CrashMode::LoseUnsynced, CrashMode::TearUnsynced { seed: n }] {
            let fs = SimFs::new();
            let (log, store, _, _) = open_both(&fs);
            fs.fail_after(Some(n));
            let (acked, models) = scenario(&log, &store, 7);
            fs.crash(mode);
            drop((log, store));
            check_recovery(&fs, acked, &models, &format!("crash at op {n} ({mode:?})"));
        }
        n += stride;
    }
}

fn ops_left(fs: &SimFs) -> u64 {
    fs.ops_left().expect("armed")
}
