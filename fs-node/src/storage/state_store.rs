//! The disk store as the state machine's [`crate::state::KvStore`]: the state machine applies
//! committed batches to it exactly as to `MemStore`, and the conformance suite
//! (`state::conformance`) runs on it in `fs-node/tests/storage_conformance.rs`.

use crate::state::{EntryKind, KvStore as StateStore};
use crate::storage::error::StorageError;
use crate::storage::store::KvStore;
use protocol::message::data::{DirEntry, Op, Versioned, WireError};
use protocol::Zxid;

fn kind(is_dir: bool) -> EntryKind {
    if is_dir {
        EntryKind::Dir
    } else {
        EntryKind::Value
    }
}

impl StateStore for KvStore {
    type Error = StorageError;

    fn stat(&self, key: &str) -> Option<(EntryKind, Zxid)> {
        KvStore::stat(self, key).map(|(is_dir, zxid)| (kind(is_dir), zxid))
    }

    fn visit_within(&self, dir: &str, visit: &mut dyn FnMut(&str, EntryKind) -> bool) {
        KvStore::visit_within(self, dir, &mut |k, is_dir| visit(k, kind(is_dir)))
    }

    fn get(&self, key: &str) -> Result<Option<Versioned>, StorageError> {
        KvStore::get(self, key)
    }

    fn list(&self, dir: &str, limit: usize) -> Result<Vec<DirEntry>, WireError> {
        let mut entries = KvStore::list(self, dir).map_err(|e| e.to_wire())?;
        entries.truncate(limit);
        Ok(entries)
    }

    /// A refused batch is an error here (the state machine only applies checked batches, so it
    /// would be a bug); replays of applied zxids are no-ops.
    fn apply(&mut self, zxid: Zxid, ops: &[Op]) -> Result<(), StorageError> {
        KvStore::apply(self, zxid, ops).map(|_| ())
    }

    fn check(&self, ops: &[Op]) -> Result<(), WireError> {
        KvStore::check(self, ops).map_err(|e| e.to_wire())
    }
}
