//! The data log's API as the replication engine uses it: group commit with many concurrent
//! waiters, commit marks, truncation of a divergent tail, catch-up reads, retention, reset.

use bytes::Bytes;
use fs_node::storage::{CrashMode, DataLog, LogConfig, RealFs, SimFs, StorageError, Vfs};
use protocol::message::replication::Entry;
use protocol::Zxid;
use std::path::Path;
use std::sync::{Arc, Mutex};

const LOG_DIR: &str = "/node/log";

fn e(n: u32) -> Entry {
    Entry { zxid: Zxid::new(1, n), data: Bytes::from(format!("entry {n}")) }
}

fn open(fs: &SimFs, config: LogConfig) -> DataLog {
    let vfs: Arc<dyn Vfs> = Arc::new(fs.clone());
    DataLog::open(vfs, Path::new(LOG_DIR), config).expect("open").0
}

fn small() -> LogConfig {
    LogConfig { segment_bytes_max: 256, retention_entries: 5 }
}

/// With 16 threads appending and waiting concurrently, each `wait_durable` returns only once
/// its entry is durable: after a crash that drops every unsynced byte, every acknowledged
/// entry is there, in order.
#[test]
fn every_acknowledged_append_survives_a_crash() {
    let fs = SimFs::new();
    let log = Arc::new(open(&fs, small()));
    let next = Arc::new(Mutex::new(0u32));
    let acked = Arc::new(Mutex::new(Vec::new()));
    std::thread::scope(|s| {
        for _ in 0..16 {
            let (log, next, acked) = (log.clone(), next.clone(), acked.clone());
            s.spawn(move || {
                for _ in 0..50 {
                    let zxid = {
                        let mut n = next.lock().unwrap();
                        *n += 1;
                        log.append(&[e(*n)]).expect("append");
                        Zxid::new(1, *n)
                    };
                    log.wait_durable(zxid).expect("durable");
                    acked.lock().unwrap().push(zxid);
                }
            });
        }
    });
    fs.crash(CrashMode::LoseUnsynced);
    drop(log);
    let log = open(&fs, small());
    let all = log.read_range(Zxid::ZERO, 10_000).expect("read");
    assert_eq!(all, (1..=800).map(e).collect::<Vec<_>>());
    assert_eq!(acked.lock().unwrap().len(), 800);
}

/// The async waiter and the durable watch see the same durability as the blocking waiter, on
/// the real file system (real fdatasync).
#[test]
fn async_waiters_learn_durability() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vfs: Arc<dyn Vfs> = Arc::new(RealFs);
    let log = DataLog::open(vfs, dir.path(), LogConfig::default()).expect("open").0;
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    rt.block_on(async {
        let mut watch = log.subscribe_durable();
        for n in 1..=20 {
            log.append(&[e(n)]).expect("append");
        }
        log.wait_durable_async(Zxid::new(1, 20)).await.expect("durable");
        let seen = *watch.borrow_and_update();
        assert!(seen.zxid >= Zxid::new(1, 20) && !seen.failed, "{seen:?}");
    });
    assert_eq!(log.durable_zxid(), Zxid::new(1, 20));
}

/// Appends must be in zxid order.
#[test]
fn out_of_order_append_is_refused() {
    let fs = SimFs::new();
    let log = open(&fs, small());
    log.append(&[e(5)]).expect("append");
    assert!(matches!(log.append(&[e(5)]), Err(StorageError::OutOfOrder { .. })));
    assert!(matches!(log.append(&[e(3)]), Err(StorageError::OutOfOrder { .. })));
}

/// An uncommitted tail is dropped durably (across segments), a committed entry never is, the
/// commit mark survives a restart, and appends continue from the cut.
#[test]
fn truncate_after_drops_the_uncommitted_tail_only() {
    let fs = SimFs::new();
    let log = open(&fs, small());
    for n in 1..=30 {
        log.append(&[e(n)]).expect("append");
    }
    log.wait_durable(Zxid::new(1, 30)).expect("durable");
    assert!(log.segment_paths().len() > 3);
    log.mark_commit(Zxid::new(1, 10)).expect("commit");
    assert!(matches!(
        log.truncate_after(Zxid::new(1, 9)),
        Err(StorageError::TruncateCommitted { .. })
    ));
    log.truncate_after(Zxid::new(1, 12)).expect("truncate");
    assert_eq!(log.last_zxid(), Zxid::new(1, 12));
    assert_eq!(log.durable_zxid(), Zxid::new(1, 12));
    let divergent = Entry { zxid: Zxid::new(2, 1), data: Bytes::from_static(b"new epoch") };
    log.append_durable(std::slice::from_ref(&divergent)).expect("append after truncate");
    fs.crash(CrashMode::LoseUnsynced);
    drop(log);
    let log = open(&fs, small());
    let mut want: Vec<Entry> = (1..=12).map(e).collect();
    want.push(divergent);
    assert_eq!(log.read_range(Zxid::ZERO, 100).expect("read"), want);
    assert_eq!(log.commit_zxid(), Zxid::new(1, 10));
}

/// `read_range` pages through the log from any retained point; retention after a checkpoint
/// drops whole old segments but keeps the configured window, and a follower asking for
/// dropped entries gets `Compacted` (it needs the data files instead).
#[test]
fn read_range_and_retention() {
    let fs = SimFs::new();
    let log = open(&fs, small());
    for n in 1..=100 {
        log.append(&[e(n)]).expect("append");
    }
    let page = log.read_range(Zxid::new(1, 40), 7).expect("read");
    assert_eq!(page, (41..=47).map(e).collect::<Vec<_>>());
    let removed = log.release_through(Zxid::new(1, 80)).expect("release");
    assert!(removed > 0);
    let first = log.first_zxid().expect("first");
    assert!(first > Zxid::new(1, 1));
    // At least the 5-entry window at or below the checkpoint stays.
    assert!(first <= Zxid::new(1, 76), "first retained {first}");
    assert_eq!(log.start_zxid(), Zxid::new(1, first.counter() - 1));
    assert!(matches!(log.read_range(Zxid::ZERO, 10), Err(StorageError::Compacted { .. })));
    let rest = log.read_range(log.start_zxid(), 1000).expect("read");
    assert_eq!(rest, (first.counter()..=100).map(e).collect::<Vec<_>>());
    // Retention survives a restart: the first segment's start record says where it begins.
    log.wait_durable(Zxid::new(1, 100)).expect("durable");
    drop(log);
    let log = open(&fs, small());
    assert_eq!(log.first_zxid(), Some(first));
    assert!(matches!(log.read_range(Zxid::ZERO, 10), Err(StorageError::Compacted { .. })));
}

/// After installing data files at zxid Z, `reset(Z)` empties the log so that it continues
/// right after Z.
#[test]
fn reset_starts_the_log_after_a_snapshot() {
    let fs = SimFs::new();
    let log = open(&fs, small());
    for n in 1..=10 {
        log.append(&[e(n)]).expect("append");
    }
    log.reset(Zxid::new(3, 7)).expect("reset");
    assert_eq!(log.last_zxid(), Zxid::new(3, 7));
    assert_eq!(log.first_zxid(), None);
    let next = Entry { zxid: Zxid::new(3, 8), data: Bytes::from_static(b"x") };
    log.append_durable(std::slice::from_ref(&next)).expect("append");
    drop(log);
    let log = open(&fs, small());
    assert_eq!(log.read_range(Zxid::new(3, 7), 10).expect("read"), vec![next]);
}

/// Seeded random persist ops (appends, divergent-tail truncations, hard state changes) give
/// the same `LogReader` answers on the data log as on the replication engine's reference
/// `MemLog`, before and after a crash that drops everything unsynced (once waited durable).
#[test]
fn data_log_answers_like_the_reference_memlog() {
    use fs_node::replication::{HardState, LogReader, MemLog, PersistOp};
    use rand::{Rng, SeedableRng};
    for seed in 0..8u64 {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        let fs = SimFs::new();
        let log = open(&fs, small());
        let mut mem = MemLog::new();
        let mut epoch = 1u32;
        let mut counter = 0u32;
        for _ in 0..150 {
            let op = match rng.gen_range(0..10) {
                0 => {
                    // Cut somewhere in the last few entries (never below the start).
                    let last = mem.last();
                    let back = rng.gen_range(0..4u64);
                    PersistOp::TruncateAfter(Zxid(
                        last.0.saturating_sub(back).max(log.start_zxid().0),
                    ))
                }
                1 => {
                    epoch += 1;
                    counter = 0;
                    PersistOp::HardState(HardState {
                        accepted_epoch: epoch,
                        promised_to: rng.gen_range(1..=5),
                        current_epoch: epoch - 1,
                    })
                }
                _ => {
                    let n = rng.gen_range(1..4);
                    let base = mem.last().max(Zxid::new(epoch, counter));
                    let entries: Vec<Entry> = (1..=n)
                        .map(|i| Entry {
                            zxid: Zxid(base.0 + i),
                            data: Bytes::from(vec![i as u8; rng.gen_range(0..40)]),
                        })
                        .collect();
                    counter = entries.last().unwrap().zxid.counter();
                    PersistOp::Append(entries)
                }
            };
            mem.apply(&op);
            log.persist(std::slice::from_ref(&op)).expect("persist");
            let probe = Zxid(mem.last().0.saturating_sub(rng.gen_range(0..6)));
            assert_eq!(log.last(), mem.last(), "seed {seed}");
            assert_eq!(log.contains(probe), mem.contains(probe), "seed {seed} contains {probe}");
            assert_eq!(log.floor(probe), mem.floor(probe), "seed {seed} floor {probe}");
            let max_bytes = rng.gen_range(1..200);
            assert_eq!(
                log.entries_after(probe.max(log.base()), 5, max_bytes),
                mem.entries_after(probe.max(mem.base()), 5, max_bytes),
                "seed {seed} entries_after {probe}"
            );
        }
        log.wait_durable(log.last_zxid()).expect("durable");
        fs.crash(CrashMode::LoseUnsynced);
        drop(log);
        let log = open(&fs, small());
        assert_eq!(log.entries_after(Zxid::ZERO, 10_000, usize::MAX), mem.entries().to_vec());
        assert_eq!(log.replication_hard_state().expect("hard state"), mem.hard, "seed {seed}");
    }
}
