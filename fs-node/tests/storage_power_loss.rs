//! The data log under power loss: what a restarted log reports as durable must survive a power
//! loss (issue 14, point 2), and a tail damaged by out-of-order writeback is a torn tail, not
//! corruption (point 4). The crashes are `SimFs` crashes; the seeded runs drive the log in
//! manual sync mode, so one seed is one exact run.

use bytes::Bytes;
use fs_node::storage::{CrashMode, DataLog, LogConfig, SimFs, Vfs};
use protocol::message::replication::Entry;
use protocol::Zxid;
use std::path::Path;
use std::sync::Arc;

const LOG_DIR: &str = "/node/log";

fn e(n: u32) -> Entry {
    Entry { zxid: Zxid::new(1, n), data: Bytes::from(format!("entry {n}")) }
}

fn vfs(fs: &SimFs) -> Arc<dyn Vfs> {
    Arc::new(fs.clone())
}

fn open(fs: &SimFs) -> DataLog {
    DataLog::open(vfs(fs), Path::new(LOG_DIR), LogConfig::default()).expect("open").0
}

/// A process that wrote entries, a commit mark and a hard state and died before its fdatasync
/// (kill -9: the page cache survives) restarts: what the restarted log reports (durable zxid,
/// hard state, commit point) must survive a power loss that follows, because that process may
/// acknowledge it.
#[test]
fn restarted_log_reports_as_durable_only_what_survives_a_power_loss() {
    let fs = SimFs::new();
    let log = open(&fs);
    log.append_durable(&[e(1)]).expect("append");
    log.set_hard_state(b"epoch 1").expect("hard state");
    // The next write succeeds, the sync after it fails: the process dies between the two.
    fs.fail_after(Some(1));
    log.append(&[e(2), e(3)]).expect("written, not synced");
    let _ = log.wait_durable(Zxid::new(1, 3));
    drop(log);
    fs.fail_after(None);

    let log = open(&fs);
    log.mark_commit(Zxid::new(1, 2)).expect("mark");
    fs.fail_after(Some(1));
    assert!(log.set_hard_state(b"epoch 2").is_err(), "its sync fails");
    drop(log);
    fs.fail_after(None);

    let log = open(&fs);
    let (durable, hard, commit) = (log.durable_zxid(), log.hard_state(), log.commit_zxid());
    assert_eq!(durable, Zxid::new(1, 3), "the restarted log sees the page cache");
    drop(log);
    fs.crash(CrashMode::LoseUnsynced);
    let log = open(&fs);
    assert!(
        log.last_zxid() >= durable,
        "reported durable through {durable} before the power loss, holds only {}",
        log.last_zxid()
    );
    assert_eq!(log.read_range(Zxid::ZERO, 10).expect("read"), vec![e(1), e(2), e(3)]);
    assert_eq!(log.hard_state(), hard, "reported hard state lost");
    assert!(log.commit_zxid() >= commit, "reported commit {commit} lost");
}
