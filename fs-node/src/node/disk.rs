//! The node's disk: a [`LogReader`] over the [`DataLog`] (with an in-memory zxid index and a
//! bounded window of recent entries, so that catch-up and apply rarely read the disk), the
//! and the old epoch-state file (read once, for data directories from before the log kept it).
//! The store is the state machine's store as `Arc<DiskStore>` (`storage::state_store`).

use crate::replication::{HardState, LogReader};
use crate::storage::{DataLog, StorageError};
use protocol::message::replication::Entry;
use protocol::Zxid;
use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;

/// Recent entries kept in memory for apply and catch-up (older ones are read from the log).
pub const RECENT_ENTRIES_MAX: usize = 65_536;
/// ... and at most this many bytes of them.
pub const RECENT_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Name of the epoch-state file in the data directory.
pub const HARD_STATE_FILE: &str = "epoch.state";

/// The data log as the replication engine reads it. Every zxid in the log is indexed in
/// memory (8 bytes each; retention after each snapshot bounds how many there are).
pub struct LogView {
    log: Arc<DataLog>,
    zxids: Vec<Zxid>,
    recent: VecDeque<Entry>,
    recent_bytes: usize,
}

impl LogView {
    /// Indexes what `log` holds (read once at start-up).
    pub fn open(log: Arc<DataLog>) -> Result<LogView, StorageError> {
        let mut zxids = Vec::new();
        let mut after = log.start_zxid();
        loop {
            let chunk = log.read_range(after, 4096)?;
            let Some(last) = chunk.last() else { break };
            after = last.zxid;
            zxids.extend(chunk.iter().map(|e| e.zxid));
        }
        Ok(LogView { log, zxids, recent: VecDeque::new(), recent_bytes: 0 })
    }

    pub fn log(&self) -> &Arc<DataLog> {
        &self.log
    }

    /// Appends (written, not yet durable).
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        self.log.append(entries)?;
        for e in entries {
            self.zxids.push(e.zxid);
            self.recent_bytes += e.data.len();
            self.recent.push_back(e.clone());
        }
        while self.recent.len() > RECENT_ENTRIES_MAX || self.recent_bytes > RECENT_BYTES_MAX {
            let Some(old) = self.recent.pop_front() else { break };
            self.recent_bytes -= old.data.len();
        }
        Ok(())
    }

    /// Log retention after a snapshot at `zxid` (see `DataLog::release_through_bounded`);
    /// forgets the released zxids. Returns how many segments went.
    pub fn release_through(
        &mut self,
        zxid: Zxid,
        keep_bytes_max: u64,
    ) -> Result<usize, StorageError> {
        let released = self.log.release_through_bounded(zxid, keep_bytes_max)?;
        let base = self.log.start_zxid();
        let gone = self.zxids.partition_point(|z| *z <= base);
        self.zxids.drain(..gone);
        Ok(released)
    }

    /// Drops every entry above `zxid`, durably.
    pub fn truncate_after(&mut self, zxid: Zxid) -> Result<(), StorageError> {
        self.log.truncate_after(zxid)?;
        let keep = self.zxids.partition_point(|z| *z <= zxid);
        self.zxids.truncate(keep);
        while self.recent.back().is_some_and(|e| e.zxid > zxid) {
            let e = self.recent.pop_back().expect("back exists");
            self.recent_bytes -= e.data.len();
        }
        Ok(())
    }
}

impl LogReader for LogView {
    fn base(&self) -> Zxid {
        self.log.start_zxid()
    }

    fn last(&self) -> Zxid {
        self.zxids.last().copied().unwrap_or_else(|| self.base())
    }

    fn contains(&self, zxid: Zxid) -> bool {
        zxid <= self.base() || self.zxids.binary_search(&zxid).is_ok()
    }

    fn floor(&self, zxid: Zxid) -> Zxid {
        if zxid <= self.base() {
            return zxid;
        }
        let i = self.zxids.partition_point(|z| *z <= zxid);
        if i == 0 {
            self.base()
        } else {
            self.zxids[i - 1]
        }
    }

    fn entries_after(&self, zxid: Zxid, max_entries: usize, max_bytes: usize) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut push = |e: Entry, out: &mut Vec<Entry>| -> bool {
            if !out.is_empty() && (out.len() >= max_entries || bytes + e.data.len() > max_bytes) {
                return false;
            }
            bytes += e.data.len();
            out.push(e);
            true
        };
        let i = self.zxids.partition_point(|z| *z <= zxid);
        let Some(&next) = self.zxids.get(i) else { return out };
        if self.recent.front().is_some_and(|f| f.zxid <= next) {
            let start = self.recent.partition_point(|e| e.zxid <= zxid);
            for e in self.recent.iter().skip(start) {
                if !push(e.clone(), &mut out) {
                    break;
                }
            }
            return out;
        }
        // Older than the window: read from the log.
        match self.log.read_range(zxid, max_entries.max(1)) {
            Ok(entries) => {
                for e in entries {
                    if !push(e, &mut out) {
                        break;
                    }
                }
            }
            Err(e) => tracing::error!("reading the data log after {zxid}: {e}"),
        }
        out
    }
}

/// Reads the epoch state of a data directory written before the data log kept it; `None`
/// when the file does not exist.
pub fn read_hard_state(dir: &Path) -> Result<Option<HardState>, String> {
    let path = dir.join(HARD_STATE_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
    };
    let nums: Vec<u64> = text.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    match nums.as_slice() {
        [a, p, c] => Ok(Some(HardState {
            accepted_epoch: *a as u32,
            promised_to: *p as u8,
            current_epoch: *c as u32,
        })),
        _ => Err(format!("{} is damaged: {text:?}", path.display())),
    }
}
