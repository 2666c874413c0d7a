//! The supervisor test: a real child process (this test binary, re-executed) writes through the
//! data log and the store, with checkpoints, log retention, background compaction and
//! freeze/unfreeze cycles, and is killed with SIGKILL at random moments. After each kill the
//! supervisor recovers the directory and checks that every acknowledged write is there and that
//! the store, before replay, equals the reference model at exactly its applied zxid (nothing
//! half-applied). The next child continues on the same directory.

mod storage_common;

use fs_node::storage::{DataLog, DiskStore, LogConfig, RealFs, StorageError, StoreConfig, Vfs};
use protocol::message::data::Op;
use protocol::Zxid;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc};
use storage_common::{assert_same, entry, ops_of, Model, Workload};

const CHILD_DIR_ENV: &str = "SHOAL_STORAGE_KILL_CHILD_DIR";
/// Kills per run; each child acknowledges between these many writes before it is killed.
const KILLS: usize = 15;
const ACKS_BEFORE_KILL_MIN: usize = 20;
const ACKS_BEFORE_KILL_MAX: usize = 300;
/// A child never runs past this many writes (it would only do so if the supervisor hung).
const CHILD_WRITES_MAX: u32 = 100_000;

fn log_config() -> LogConfig {
    LogConfig { segment_bytes_max: 32 * 1024, retention_entries: 50 }
}

fn store_config() -> StoreConfig {
    StoreConfig {
        segment_bytes_max: 16 * 1024,
        compaction_dead_bytes_min: 4096,
        ..StoreConfig::default()
    }
}

/// The batch at a zxid is a function of the zxid alone, so that the supervisor can rebuild
/// the history whatever the child managed to log.
fn batch_for(zxid: Zxid) -> Vec<Op> {
    Workload::new(zxid.0 ^ 0x5EED).batch()
}

fn open(dir: &Path) -> (DataLog, DiskStore) {
    let vfs: Arc<dyn Vfs> = Arc::new(RealFs);
    let (log, _) = DataLog::open(vfs.clone(), &dir.join("log"), log_config()).expect("open log");
    let (store, _) = DiskStore::open(vfs, &dir.join("data"), store_config()).expect("open store");
    (log, store)
}

/// Single node: every durable entry is committed, so replay up to the log's end.
fn replay(log: &DataLog, store: &DiskStore) {
    fs_node::storage::replay_committed(log, store, log.last_zxid(), |e| Ok(ops_of(e)))
        .expect("replay");
}

/// The child: recover, then write until killed. Not a test on its own.
#[test]
#[ignore = "child process of the SIGKILL supervisor test; runs only when re-executed by it"]
fn storage_kill_child() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else { return };
    let (log, store) = open(Path::new(&dir));
    replay(&log, &store);
    let log = Arc::new(log);
    let store = Arc::new(store);
    // Background compaction, woken every 40 writes; it never blocks the writer.
    let (tick, ticks) = mpsc::channel::<()>();
    let compactor = store.clone();
    std::thread::spawn(move || {
        while ticks.recv().is_ok() {
            if compactor.compact().is_ok_and(|r| r.is_some()) {
                println!("COMPACTED");
            }
        }
    });
    let mut stdout = std::io::stdout();
    let mut zxid = log.last_zxid();
    for n in 1..=CHILD_WRITES_MAX {
        zxid = zxid.next().expect("zxid");
        let ops = batch_for(zxid);
        log.append(&[entry(zxid, &ops)]).expect("append");
        log.wait_durable(zxid).expect("durable");
        writeln!(stdout, "ACK {}", zxid.0).expect("stdout");
        stdout.flush().expect("flush");
        log.mark_commit(zxid).expect("commit");
        match store.apply(zxid, &ops) {
            Ok(_) | Err(StorageError::Rejected(_)) => {}
            Err(e) => panic!("apply: {e}"),
        }
        if n % 40 == 0 {
            let _ = tick.send(());
        }
        if n % 70 == 0 {
            let cp = store.checkpoint().expect("checkpoint");
            log.release_through(cp).expect("retention");
        }
        if n % 90 == 0 {
            store.freeze().expect("freeze");
            println!("FROZEN");
        }
        if n % 90 == 45 {
            store.unfreeze();
        }
    }
}

/// Every acknowledged write survives SIGKILL at random moments during writes, group commits,
/// checkpoints, compaction and freeze/fold-in, and the store never holds a half-applied batch.
#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    let mut rng = SmallRng::seed_from_u64(0x5161_4B11);
    let mut model = Model::default();
    let mut model_zxid = Zxid::ZERO;
    let advance = |model: &mut Model, model_zxid: &mut Zxid, to: Zxid| {
        assert!(to >= *model_zxid, "history went backwards: {to} < {model_zxid}");
        while *model_zxid < to {
            *model_zxid = model_zxid.next().expect("zxid");
            let _ = model.apply(*model_zxid, &batch_for(*model_zxid));
        }
    };
    let (mut compactions, mut freezes) = (0, 0);
    for round in 0..KILLS {
        let acks_wanted = rng.gen_range(ACKS_BEFORE_KILL_MIN..=ACKS_BEFORE_KILL_MAX);
        let mut child = Command::new(&exe)
            .args([
                "storage_kill_child",
                "--exact",
                "--include-ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let mut acked = Zxid::ZERO;
        let mut acks = 0;
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("child output");
            if let Some(z) = line.strip_prefix("ACK ") {
                acked = Zxid(z.parse().expect("zxid"));
                acks += 1;
                if acks == acks_wanted {
                    child.kill().expect("SIGKILL");
                    break;
                }
            } else if line == "COMPACTED" {
                compactions += 1;
            } else if line == "FROZEN" {
                freezes += 1;
            }
        }
        let status = child.wait().expect("wait");
        assert_eq!(acks, acks_wanted, "round {round}: child exited early ({status:?})");

        let (log, store) = open(dir.path());
        assert!(
            log.last_zxid() >= acked,
            "round {round}: acknowledged {acked} lost (log ends at {})",
            log.last_zxid()
        );
        let applied = store.applied_zxid();
        advance(&mut model, &mut model_zxid, applied);
        assert_same(&store, &model, &format!("round {round}: before replay, at {applied}"));
        replay(&log, &store);
        advance(&mut model, &mut model_zxid, log.last_zxid());
        assert_same(
            &store,
            &model,
            &format!("round {round}: after replay, at {}", log.last_zxid()),
        );
    }
    assert!(compactions > 0 && freezes > 0, "compactions {compactions}, freezes {freezes}");
}
