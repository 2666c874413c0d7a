//! The disk store as the state machine's [`crate::state::StateStore`]: the state machine applies
//! committed batches to it exactly as to `MemStore` (and checks them with the same namespace
//! rules, `protocol::batch`, with the state machine's key limit), and the conformance suite
//! (`state::conformance`) runs on it in `fs-node/tests/storage_conformance.rs`.

use crate::state::{EntryKind, StateStore};
use crate::storage::disk_store::DiskStore;
use crate::storage::error::StorageError;
use protocol::message::data::{DirEntry, Op, Versioned, WireError};
use protocol::Zxid;
use std::sync::Arc;

fn kind(is_dir: bool) -> EntryKind {
    if is_dir {
        EntryKind::Dir
    } else {
        EntryKind::Value
    }
}

impl StateStore for DiskStore {
    type Error = StorageError;

    fn stat(&self, key: &str) -> Option<(EntryKind, Zxid)> {
        DiskStore::stat(self, key).map(|(is_dir, zxid)| (kind(is_dir), zxid))
    }

    fn visit_within(&self, dir: &str, visit: &mut dyn FnMut(&str, EntryKind) -> bool) {
        DiskStore::visit_within(self, dir, &mut |k, is_dir| visit(k, kind(is_dir)))
    }

    fn get(&self, key: &str) -> Result<Option<Versioned>, StorageError> {
        DiskStore::get(self, key)
    }

    fn list(&self, dir: &str, limit: usize) -> Result<Vec<DirEntry>, WireError> {
        let mut entries = DiskStore::list(self, dir).map_err(|e| e.to_wire())?;
        entries.truncate(limit);
        Ok(entries)
    }

    /// A refused batch is an error here (the state machine only applies checked batches, so it
    /// would be a bug); replays of applied zxids are no-ops.
    fn apply(&mut self, zxid: Zxid, ops: &[Op]) -> Result<(), StorageError> {
        DiskStore::apply(self, zxid, ops).map(|_| ())
    }
}

/// The store shared by the node core (which applies) and its request tasks (which read): the
/// same adapter, through the `Arc` (the disk store applies through `&self`).
impl StateStore for Arc<DiskStore> {
    type Error = StorageError;

    fn stat(&self, key: &str) -> Option<(EntryKind, Zxid)> {
        StateStore::stat(self.as_ref(), key)
    }

    fn visit_within(&self, dir: &str, visit: &mut dyn FnMut(&str, EntryKind) -> bool) {
        StateStore::visit_within(self.as_ref(), dir, visit)
    }

    fn get(&self, key: &str) -> Result<Option<Versioned>, StorageError> {
        StateStore::get(self.as_ref(), key)
    }

    fn list(&self, dir: &str, limit: usize) -> Result<Vec<DirEntry>, WireError> {
        StateStore::list(self.as_ref(), dir, limit)
    }

    fn apply(&mut self, zxid: Zxid, ops: &[Op]) -> Result<(), StorageError> {
        DiskStore::apply(self, zxid, ops).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Command, Outcome, StateConfig, StateMachine};
    use crate::storage::{SimFs, StoreConfig, Vfs};
    use bytes::Bytes;
    use protocol::message::data::{ErrorCode, RequestId};
    use std::path::Path;
    use std::sync::Arc;

    fn put(key: &str) -> Op {
        Op::Put {
            key: key.into(),
            value: Bytes::from_static(b"x"),
            create_only: false,
            ephemeral: None,
        }
    }

    fn open(key_bytes_max: usize) -> DiskStore {
        let vfs: Arc<dyn Vfs> = Arc::new(SimFs::new());
        let config = StoreConfig { key_bytes_max, ..StoreConfig::default() };
        DiskStore::open(vfs, Path::new("/node/data"), config).expect("open").0
    }

    fn write<S: StateStore>(
        machine: &mut StateMachine<S>,
        n: u32,
        ops: Vec<Op>,
    ) -> Result<Zxid, WireError> {
        let request = RequestId { client: protocol::CLIENT_ID_MIN, seq: n as u64 };
        let command = Command::Write { request, conditions: vec![], ops };
        let result = machine.apply_command(Zxid::new(1, n), command).expect("not a store failure");
        match result.reply.expect("a write is answered").outcome {
            Outcome::Write(r) => r,
            other => panic!("write answered with {other:?}"),
        }
    }

    /// Over the disk store (both owned and shared as the node shares it, `Arc<DiskStore>`), a
    /// rename that would move a key past the key limit is a refusal the client sees (`BadKey`,
    /// naming the key), not a store failure that stops the node.
    #[test]
    fn rename_past_the_key_limit_is_refused_not_fatal() {
        fn check<S: StateStore>(store: S, exists: impl Fn(&S) -> bool) {
            let config = StateConfig { key_bytes_max: 16, ..StateConfig::default() };
            let mut machine = StateMachine::new(store, config);
            write(&mut machine, 1, vec![Op::Mkdir { key: "/d".into() }, put("/d/long-name")])
                .unwrap();
            let rename = Op::Rename { from: "/d".into(), to: "/dddddd".into() };
            let refused = write(&mut machine, 2, vec![rename]).unwrap_err();
            assert_eq!(refused.code, ErrorCode::BadKey, "{}", refused.message);
            assert!(refused.message.contains("/dddddd/long-name"), "{}", refused.message);
            assert!(exists(machine.store()));
        }
        check(open(16), |s| s.exists("/d/long-name"));
        check(Arc::new(open(16)), |s| s.exists("/d/long-name"));
    }

    /// The disk store checks a batch's shape (keys, values, op count) before its namespace, as
    /// the write rules say: a bad key later in a batch is named even when an earlier op also
    /// fails against the namespace.
    #[test]
    fn shape_is_checked_before_namespace() {
        let store = open(64);
        let ops = vec![Op::Delete { key: "/missing".into(), recursive: false }, put("rel")];
        assert_eq!(store.check(&ops).map_err(|e| e.code()), Err(ErrorCode::BadKey));
    }
}
