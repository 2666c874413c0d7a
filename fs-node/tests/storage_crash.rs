//! Crash tests on the simulated file layer, which keeps written bytes apart from durable ones:
//! a fail point stops the engine at every mutating file operation of a scenario in turn
//! (writes, group commits, seals, checkpoints, retention, freeze, compaction, merges of small
//! segments), the "machine" loses, tears or scrambles (out-of-order writeback) every unsynced
//! byte, and recovery must bring back every acknowledged write and nothing half-applied.

mod storage_common;

use bytes::Bytes;
use fs_node::storage::{
    CrashMode, DataLog, DiskStore, LogConfig, LogRecovery, Merge, SimFs, StoreConfig,
    StoreRecovery, Vfs,
};
use protocol::message::data::Op;
use protocol::message::replication::Entry;
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

fn open_both(fs: &SimFs) -> (DataLog, DiskStore, LogRecovery, StoreRecovery) {
    let vfs: Arc<dyn Vfs> = Arc::new(fs.clone());
    let (log, log_rec) =
        DataLog::open(vfs.clone(), Path::new(LOG_DIR), log_config()).expect("open log");
    let (store, store_rec) =
        DiskStore::open(vfs, Path::new(DATA_DIR), store_config()).expect("open store");
    (log, store, log_rec, store_rec)
}

/// Applies every logged entry above the store's applied zxid (all entries are committed in
/// these single-node scenarios).
fn replay(log: &DataLog, store: &DiskStore) {
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

/// What a scenario run acknowledged before it stopped.
struct Outcome {
    /// The highest zxid whose durability was acknowledged.
    acked: Zxid,
    /// The model after every zxid.
    models: BTreeMap<Zxid, Model>,
    /// A divergent (uncommitted) entry that was logged and whose truncation did not complete:
    /// recovery may still find it, as a follower would, and the master would cut it.
    divergent: Option<Entry>,
    /// The hard state, if `set_hard_state` returned (it is durable on return).
    hard_state: Option<Vec<u8>>,
    /// Merges of small segments that merged something.
    small_merges: u32,
}

const HARD_STATE: &[u8] = b"epoch state";

/// Runs the scenario until the first error (the fail point).
fn scenario(log: &DataLog, store: &DiskStore, seed: u64) -> Outcome {
    let mut work = Workload::new(seed);
    let mut model = Model::default();
    let mut out = Outcome {
        acked: Zxid::ZERO,
        models: BTreeMap::from([(Zxid::ZERO, model.clone())]),
        divergent: None,
        hard_state: None,
        small_merges: 0,
    };
    for step in 1..=90u32 {
        let zxid = Zxid::new(1, step);
        if step % 30 == 10 {
            // A divergent tail: logged durably, then cut; the real entry reuses its zxid.
            let bogus = vec![Op::Put {
                key: "/divergent".into(),
                value: Bytes::from_static(b"must never apply"),
                create_only: false,
                ephemeral: None,
            }];
            let divergent = entry(zxid, &bogus);
            out.divergent = Some(divergent.clone());
            if log.append(&[divergent]).is_err()
                || log.wait_durable(zxid).is_err()
                || log.truncate_after(out.acked).is_err()
            {
                break;
            }
            out.divergent = None;
        }
        let ops = work.valid_batch(&model, zxid);
        model.apply(zxid, &ops).expect("valid batch");
        out.models.insert(zxid, model.clone());
        if log.append(&[entry(zxid, &ops)]).is_err() || log.wait_durable(zxid).is_err() {
            break;
        }
        out.acked = zxid;
        if log.mark_commit(zxid).is_err() || store.apply(zxid, &ops).is_err() {
            break;
        }
        let ok = match step {
            s if s % 20 == 0 => store.checkpoint().and_then(|cp| log.release_through(cp)).is_ok(),
            s if s % 25 == 0 => store.compact().is_ok(),
            // Snapshot-like seals, then a merge of the small segments only (tombstones kept).
            s if s % 7 == 3 && !(45..65).contains(&s) => {
                store.freeze().map(|_| store.unfreeze()).is_ok()
            }
            s if s % 14 == 6 && !(45..65).contains(&s) => match store.merge(Merge::Small) {
                Ok(merged) => {
                    out.small_merges += u32::from(merged.is_some());
                    true
                }
                Err(_) => false,
            },
            33 => {
                let ok = log.set_hard_state(HARD_STATE).is_ok();
                if ok {
                    out.hard_state = Some(HARD_STATE.to_vec());
                }
                ok
            }
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
    out
}

fn check_recovery(fs: &SimFs, out: &Outcome, context: &str) {
    let (log, store, _, _) = open_both(fs);
    let applied = store.applied_zxid();
    assert_same(
        &store,
        &out.models[&applied],
        &format!("{context}: before replay (half-applied?)"),
    );
    assert!(
        log.last_zxid() >= out.acked,
        "{context}: acknowledged {} lost, log ends at {}",
        out.acked,
        log.last_zxid()
    );
    if let Some(h) = &out.hard_state {
        assert_eq!(log.hard_state().as_deref(), Some(&h[..]), "{context}: hard state lost");
    }
    if let Some(d) = &out.divergent {
        // The master would tell this follower to cut its uncommitted tail.
        if log.last_zxid() == d.zxid {
            assert_eq!(log.read_range(Zxid(d.zxid.0 - 1), 1).expect("read"), vec![d.clone()]);
            log.truncate_after(Zxid(d.zxid.0 - 1)).expect("truncate divergent tail");
        }
    }
    replay(&log, &store);
    assert_eq!(store.applied_zxid(), log.last_zxid(), "{context}");
    assert_same(&store, &out.models[&log.last_zxid()], &format!("{context}: after replay"));
}

/// A crash at each mutating file operation of a scenario with writes, group commits, segment
/// seals, checkpoints with log retention, divergent-tail truncations, a hard state change, a
/// freeze, and compactions recovers every acknowledged write, the hard state once stored, no
/// truncated entry, and the store equal to the model at exactly one zxid.
#[test]
fn crash_at_every_file_operation_recovers_acknowledged_state() {
    // Count the scenario's operations once, without a fail point.
    let total_ops = {
        let fs = SimFs::new();
        let (log, store, _, _) = open_both(&fs);
        fs.fail_after(Some(u64::MAX));
        let out = scenario(&log, &store, 7);
        assert_eq!(out.acked, Zxid::new(1, 90));
        assert!(out.hard_state.is_some() && out.divergent.is_none());
        assert!(out.small_merges >= 2, "only {} merges of small segments ran", out.small_merges);
        drop((log, store));
        check_recovery(&fs, &out, "no crash");
        // The fail point counts down from u64::MAX: what was used is the scenario's length.
        u64::MAX - ops_left(&fs)
    };
    assert!(total_ops > 500, "scenario too small to mean much: {total_ops} ops");
    let stride = (total_ops / 400).max(1);
    let mut n = 0;
    while n < total_ops {
        for mode in [
            CrashMode::LoseUnsynced,
            CrashMode::TearUnsynced { seed: n },
            CrashMode::ScrambleUnsynced { seed: n },
        ] {
            let fs = SimFs::new();
            let (log, store, _, _) = open_both(&fs);
            fs.fail_after(Some(n));
            let out = scenario(&log, &store, 7);
            fs.crash(mode);
            drop((log, store));
            check_recovery(&fs, &out, &format!("crash at op {n} ({mode:?})"));
        }
        n += stride;
    }
}

fn ops_left(fs: &SimFs) -> u64 {
    fs.ops_left().expect("armed")
}
