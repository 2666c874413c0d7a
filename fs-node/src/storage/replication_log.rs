//! The data log as the replication engine's log: [`LogReader`] for its reads, and
//! [`DataLog::persist`] for the [`PersistOp`]s of each `Ready`.
//!
//! Durability contract for the host: after `persist(ops)` returns, every op is written in
//! order (visible to `LogReader`); appended entries become durable with the group commit
//! (`wait_durable` / `subscribe_durable` on the returned zxid); a hard state change is durable
//! on return, and so is everything appended before it.

use crate::replication::{HardState, LogReader, PersistOp};
use crate::storage::error::{Result, StorageError};
use crate::storage::log::DataLog;
use protocol::message::replication::Entry;
use protocol::Zxid;

/// The hard state's encoding inside the log's HardState record: accepted epoch u32, promised
/// to u8, current epoch u32, little-endian.
fn encode_hard_state(h: &HardState) -> [u8; 9] {
    let mut out = [0u8; 9];
    out[..4].copy_from_slice(&h.accepted_epoch.to_le_bytes());
    out[4] = h.promised_to;
    out[5..].copy_from_slice(&h.current_epoch.to_le_bytes());
    out
}

fn decode_hard_state(b: &[u8]) -> Option<HardState> {
    if b.len() != 9 {
        return None;
    }
    Some(HardState {
        accepted_epoch: u32::from_le_bytes(b[..4].try_into().ok()?),
        promised_to: b[4],
        current_epoch: u32::from_le_bytes(b[5..].try_into().ok()?),
    })
}

impl DataLog {
    /// Applies one Ready's persist ops in order; returns the last zxid written (wait for it to
    /// be durable before sending the Ready's `send_after_persist`).
    pub fn persist(&self, ops: &[PersistOp]) -> Result<Zxid> {
        for op in ops {
            match op {
                PersistOp::Append(entries) => {
                    self.append(entries)?;
                }
                PersistOp::TruncateAfter(zxid) => self.truncate_after(*zxid)?,
                PersistOp::HardState(h) => self.set_hard_state(&encode_hard_state(h))?,
            }
        }
        Ok(self.last_zxid())
    }

    /// The replication engine's hard state as recovered (default if never stored).
    pub fn replication_hard_state(&self) -> Result<HardState> {
        match self.hard_state() {
            None => Ok(HardState::default()),
            Some(bytes) => decode_hard_state(&bytes).ok_or_else(|| {
                StorageError::State(
                    "the log's hard state record has an unknown layout; this build cannot read \
                     it"
                    .into(),
                )
            }),
        }
    }
}

impl LogReader for DataLog {
    fn base(&self) -> Zxid {
        self.start_zxid()
    }

    fn last(&self) -> Zxid {
        self.last_zxid()
    }

    fn contains(&self, zxid: Zxid) -> bool {
        zxid <= self.start_zxid() || self.has_entry(zxid)
    }

    fn floor(&self, zxid: Zxid) -> Zxid {
        let base = self.start_zxid();
        if zxid <= base {
            return zxid;
        }
        self.floor_entry(zxid).map_or(base, |z| z.max(base))
    }

    /// An IO or checksum failure reading our own log is fatal here (the trait has no error
    /// path): the node stops with the storage error's message and recovers at restart.
    fn entries_after(&self, zxid: Zxid, max_entries: usize, max_bytes: usize) -> Vec<Entry> {
        match self.read_range_bytes(zxid, max_entries, max_bytes) {
            Ok(entries) => entries,
            Err(e) => panic!("reading the data log after {zxid} failed: {e}"),
        }
    }
}
