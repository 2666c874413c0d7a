//! The storage engine of an FS node.
//!
//! # Layout
//! - [`log`]: the data log: append-only TLV segments of replication entries, group commit,
//!   commit marks, truncation of a divergent tail, catch-up reads, retention.
//! - [`disk_store`]: the key-value store ([`DiskStore`]): data segments, in-memory index, hint files, batch apply
//!   and validation, freeze, checkpoint, merge compaction.
//! - [`backup`]: consistent backups of a frozen store with an MD5 manifest; restore; verify.
//! - [`vfs`]: the file layer, real or simulated (written vs durable bytes; loss, tearing and
//!   out-of-order writeback of unsynced writes, lost disks; for crash tests and the simulator).
//! - [`error`]: [`StorageError`] (operating errors) and [`StoreError`] (a refused batch).
//! - `replication_log` (impls only): [`DataLog`] as the replication engine's
//!   [`LogReader`](crate::replication::LogReader), and `DataLog::persist` for `PersistOp`s.
//! - `state_store` (impls only): [`DiskStore`] as the state machine's
//!   [`state::StateStore`](crate::state::StateStore).
//!
//! The format and its crash analysis are in `fs-node/STORAGE.md`.

pub mod backup;
pub mod disk_store;
pub mod error;
pub mod log;
mod replication_log;
mod state_store;
pub mod vfs;

pub use disk_store::{
    Applied, Compactor, DiskStore, FrozenFiles, Merge, StoreConfig, StoreRecovery,
};
pub use error::{StorageError, StoreError};
pub use log::{
    DamagePolicy, DataLog, Durable, LogConfig, LogOptions, LogRecovery, LostSynced, SyncMode,
};
pub use vfs::{CrashMode, RealFs, SimFs, Vfs};

use protocol::message::data::Op;
use protocol::message::replication::Entry;
use protocol::Zxid;

/// Applies the entries the store has not applied yet, up to `upto` (normally
/// `log.commit_zxid()`), decoding each with `ops_of` (the state machine's command format).
/// Call it after opening both at start-up. A batch the store refuses is skipped with a warning:
/// it was refused the first time too (the state machine checks before committing). Returns how
/// many entries were applied.
pub fn replay_committed(
    log: &DataLog,
    store: &DiskStore,
    upto: Zxid,
    mut ops_of: impl FnMut(&Entry) -> Result<Vec<Op>, StorageError>,
) -> Result<usize, StorageError> {
    let mut from = store.applied_zxid();
    let mut applied = 0;
    while from < upto {
        let entries = log.read_range(from, log::READ_RANGE_ENTRIES_MAX)?;
        if entries.is_empty() {
            break;
        }
        for entry in entries.iter().take_while(|e| e.zxid <= upto) {
            match store.apply(entry.zxid, &ops_of(entry)?) {
                Ok(_) => applied += 1,
                Err(StorageError::Rejected(e)) => {
                    tracing::warn!(zxid = %entry.zxid, "replay: batch refused again: {e}")
                }
                Err(e) => return Err(e),
            }
            from = entry.zxid;
        }
        if entries.last().is_some_and(|e| e.zxid > upto) {
            break;
        }
    }
    Ok(applied)
}

/// A checkpoint: makes the data files durable up to the applied zxid, then lets log retention
/// drop segments at or below it (keeping the retention window). Returns the checkpoint zxid and
/// how many log segments went.
pub fn checkpoint(log: &DataLog, store: &DiskStore) -> Result<(Zxid, usize), StorageError> {
    let zxid = store.checkpoint()?;
    let released = log.release_through(zxid)?;
    Ok((zxid, released))
}
