//! [`MemLog`]: an in-memory [`LogReader`] that applies [`PersistOp`]s. The reference
//! implementation of the log rules, used by the unit tests and the simulator.

use super::types::{HardState, LogReader, PersistOp};
use protocol::message::replication::Entry;
use protocol::Zxid;

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct MemLog {
    base: Zxid,
    entries: Vec<Entry>,
    pub hard: HardState,
}

impl MemLog {
    pub fn new() -> MemLog {
        MemLog::default()
    }

    /// Applies one persist op, asserting the log rules.
    pub fn apply(&mut self, op: &PersistOp) {
        match op {
            PersistOp::Append(entries) => {
                for e in entries {
                    assert!(e.zxid > self.last(), "append {} after {}", e.zxid, self.last());
                    self.entries.push(e.clone());
                }
            }
            PersistOp::TruncateAfter(z) => {
                assert!(*z >= self.base, "truncate below base");
                self.entries.retain(|e| e.zxid <= *z);
            }
            PersistOp::HardState(h) => self.hard = *h,
        }
    }

    /// Drops the whole log and starts it after `base` (data files installed up to it).
    pub fn reset_to(&mut self, base: Zxid) {
        self.entries.clear();
        self.base = base;
    }

    /// Forgets entries at or below `upto` (a checkpoint: data files cover them).
    pub fn compact(&mut self, upto: Zxid) {
        if upto > self.base {
            self.entries.retain(|e| e.zxid > upto);
            self.base = upto;
        }
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    fn position(&self, zxid: Zxid) -> Result<usize, usize> {
        self.entries.binary_search_by(|e| e.zxid.cmp(&zxid))
    }
}

impl LogReader for MemLog {
    fn base(&self) -> Zxid {
        self.base
    }

    fn last(&self) -> Zxid {
        self.entries.last().map(|e| e.zxid).unwrap_or(self.base)
    }

    fn contains(&self, zxid: Zxid) -> bool {
        zxid <= self.base || self.position(zxid).is_ok()
    }

    fn floor(&self, zxid: Zxid) -> Zxid {
        if zxid <= self.base {
            return zxid;
        }
        match self.position(zxid) {
            Ok(_) => zxid,
            Err(0) => self.base,
            Err(i) => self.entries[i - 1].zxid,
        }
    }

    fn entries_after(&self, zxid: Zxid, max_entries: usize, max_bytes: usize) -> Vec<Entry> {
        assert!(zxid >= self.base, "entries after {zxid} below base {}", self.base);
        let start = match self.position(zxid) {
            Ok(i) => i + 1,
            Err(i) => i,
        };
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for e in self.entries[start..].iter().take(max_entries) {
            if !out.is_empty() && bytes + e.data.len() > max_bytes {
                break;
            }
            bytes += e.data.len();
            out.push(e.clone());
        }
        out
    }
}
