//! [`MemStore`]: a complete in-memory [`StateStore`] over a `BTreeMap`, for tests and the
//! deterministic simulations of other modules. It follows every rule of the trait; its batches
//! are atomic because `apply` is only called on a checked batch and cannot fail.

use super::state_store::{descendant_bounds, rebase, EntryKind, StateStore};
use protocol::key::{self, ROOT};
use protocol::message::data::{DirEntry, ErrorCode, Op, Versioned, WireError};
use protocol::Zxid;
use std::collections::BTreeMap;
use std::convert::Infallible;

#[derive(Clone, Debug, PartialEq, Eq)]
enum MemEntry {
    Dir { zxid: Zxid },
    Value(Versioned),
}

impl MemEntry {
    fn kind(&self) -> EntryKind {
        match self {
            MemEntry::Dir { .. } => EntryKind::Dir,
            MemEntry::Value(_) => EntryKind::Value,
        }
    }

    fn zxid(&self) -> Zxid {
        match self {
            MemEntry::Dir { zxid } => *zxid,
            MemEntry::Value(v) => v.zxid,
        }
    }
}

/// In-memory store: key → directory or value. The root is implicit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemStore {
    entries: BTreeMap<String, MemEntry>,
    /// The zxid of the last batch applied; batches at or below it are replays and ignored.
    applied: Zxid,
}

impl MemStore {
    pub fn new() -> MemStore {
        MemStore::default()
    }

    /// Number of keys (directories and values), the root not counted.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The zxid of the last applied batch.
    pub fn applied(&self) -> Zxid {
        self.applied
    }

    /// Every key with its kind and zxid, in key order (for tests and comparisons).
    pub fn dump(&self) -> Vec<(String, EntryKind, Zxid)> {
        self.entries.iter().map(|(k, e)| (k.clone(), e.kind(), e.zxid())).collect()
    }

    fn remove_subtree(&mut self, dir: &str) -> Vec<(String, MemEntry)> {
        let keys: Vec<String> =
            self.entries.range(descendant_bounds(dir)).map(|(k, _)| k.clone()).collect();
        keys.into_iter().filter_map(|k| self.entries.remove(&k).map(|e| (k, e))).collect()
    }
}

impl StateStore for MemStore {
    type Error = Infallible;

    fn stat(&self, key: &str) -> Option<(EntryKind, Zxid)> {
        if key == ROOT {
            return Some((EntryKind::Dir, Zxid::ZERO));
        }
        self.entries.get(key).map(|e| (e.kind(), e.zxid()))
    }

    fn visit_within(&self, dir: &str, visit: &mut dyn FnMut(&str, EntryKind) -> bool) {
        for (k, e) in self.entries.range(descendant_bounds(dir)) {
            if !visit(k, e.kind()) {
                break;
            }
        }
    }

    fn get(&self, key: &str) -> Result<Option<Versioned>, Infallible> {
        Ok(match self.entries.get(key) {
            Some(MemEntry::Value(v)) => Some(v.clone()),
            _ => None,
        })
    }

    fn list(&self, dir: &str, limit: usize) -> Result<Vec<DirEntry>, WireError> {
        match self.stat(dir) {
            None => {
                let message = format!("{dir} does not exist");
                return Err(WireError { code: ErrorCode::NotFound, message });
            }
            Some((EntryKind::Value, _)) => {
                let message = format!("{dir} is a value, not a directory");
                return Err(WireError { code: ErrorCode::NotADirectory, message });
            }
            Some((EntryKind::Dir, _)) => {}
        }
        let mut out = Vec::new();
        for (k, e) in self.entries.range(descendant_bounds(dir)) {
            if out.len() >= limit {
                break;
            }
            // Direct children only: their parent is `dir`.
            if key::parent(k) == Some(dir) {
                out.push(DirEntry {
                    name: key::name(k).to_string(),
                    is_dir: e.kind() == EntryKind::Dir,
                    zxid: e.zxid(),
                });
            }
        }
        Ok(out)
    }

    fn apply(&mut self, zxid: Zxid, ops: &[Op]) -> Result<(), Infallible> {
        if zxid <= self.applied {
            return Ok(());
        }
        debug_assert_eq!(
            self.check(ops, usize::MAX),
            Ok(()),
            "apply called with a batch check refuses"
        );
        for op in ops {
            match op {
                Op::Put { key, value, .. } => {
                    let v = Versioned { zxid, value: value.clone() };
                    self.entries.insert(key.clone(), MemEntry::Value(v));
                }
                Op::Mkdir { key } => {
                    self.entries.insert(key.clone(), MemEntry::Dir { zxid });
                }
                Op::Delete { key, .. } => {
                    self.remove_subtree(key);
                    self.entries.remove(key);
                }
                Op::Rename { from, to } => {
                    let moved = self.remove_subtree(from);
                    if let Some(top) = self.entries.remove(from) {
                        self.entries.insert(to.clone(), restamp(top, zxid));
                    }
                    for (k, e) in moved {
                        self.entries.insert(rebase(&k, from, to), restamp(e, zxid));
                    }
                }
                Op::Lock(_) | Op::Session(_) => {}
            }
        }
        self.applied = zxid;
        Ok(())
    }
}

/// A moved entry is a new key: it carries the zxid of the rename.
fn restamp(entry: MemEntry, zxid: Zxid) -> MemEntry {
    match entry {
        MemEntry::Dir { .. } => MemEntry::Dir { zxid },
        MemEntry::Value(v) => MemEntry::Value(Versioned { zxid, value: v.value }),
    }
}
