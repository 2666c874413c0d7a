//! The key/value store as the state machine sees it: the [`StateStore`] trait. The rules a
//! batch must keep are `protocol::batch`'s (its module docs list them); [`check_batch`] applies
//! the namespace rules to any store through its index.
//!
//! # Rules a store implements ([`conformance`](super::conformance) checks them; every store
//! runs it: `fs-node/tests/state_store.rs` for [`MemStore`](super::MemStore))
//! - The namespace rules of `protocol::batch` ([`StateStore::check`] applies them by default).
//! - A batch is applied all-or-nothing ([`StateStore::apply`]).
//! - Every entry written, created or moved by a batch carries that batch's zxid.
//! - `Op::Lock` and `Op::Session` are not data: stores ignore them (the lock and session
//!   tables live in the state machine).
//! - The shape of a write (`protocol::batch::check_write`) is checked by the state machine
//!   before `check`.
//! - [`StateStore::list`] of a missing directory is `NotFound`, of a value `NotADirectory`.

use protocol::batch::{self, Namespace};
pub use protocol::batch::{descendant_bounds, rebase, EntryKind, NamespaceError, OpError};
use protocol::key::ROOT;
use protocol::message::data::{DirEntry, Op, Versioned, WireError};
use protocol::Zxid;

/// The store the state machine applies committed batches to.
///
/// Correctness rules (beyond the namespace rules in the module docs):
/// - `stat`, `visit_within`, `list` and `check` read the in-memory index only: they cannot fail
///   and do no IO.
/// - `apply` is atomic: after a crash either the whole batch is visible or none of it. It is
///   only called with a batch that `check` accepted on the same state, and with zxids that
///   grow. Applying a batch whose zxid is at or below what the store already holds must be
///   harmless (recovery replays).
/// - The store keeps no lock, session or ephemeral state; the state machine owns those.
///
/// Errors that reach a client are [`WireError`]s, so that a store with its own error enum
/// (such as the disk store) implements `check` and `list` by mapping its errors with their
/// codes; [`check_batch`] gives any store with an ordered index the rules for free.
pub trait StateStore {
    /// An IO failure. The state machine treats it as fatal for this node (it stops applying;
    /// the node then repairs from a peer).
    type Error: std::error::Error + Send + Sync + 'static;

    /// Kind and zxid of `key`, from the index. The root is `Some((Dir, Zxid::ZERO))`.
    fn stat(&self, key: &str) -> Option<(EntryKind, Zxid)>;

    /// Visits every key strictly below `dir` (not `dir` itself), in any order, until `visit`
    /// returns `false`. The default walks the tree with [`StateStore::list`]; a store with an
    /// ordered index should override it with a range scan.
    fn visit_within(&self, dir: &str, visit: &mut dyn FnMut(&str, EntryKind) -> bool) {
        let mut pending = vec![dir.to_string()];
        while let Some(parent) = pending.pop() {
            let Ok(children) = self.list(&parent, usize::MAX) else { continue };
            for child in children {
                let key = if parent == ROOT {
                    format!("/{}", child.name)
                } else {
                    format!("{parent}/{}", child.name)
                };
                let kind = if child.is_dir { EntryKind::Dir } else { EntryKind::Value };
                if !visit(&key, kind) {
                    return;
                }
                if child.is_dir {
                    pending.push(key);
                }
            }
        }
    }

    /// The value of `key`; `None` if absent or a directory.
    fn get(&self, key: &str) -> Result<Option<Versioned>, Self::Error>;

    /// The direct children of `dir`, in name order, at most `limit` of them. A missing `dir`
    /// is `NotFound`, a value `NotADirectory`.
    fn list(&self, dir: &str, limit: usize) -> Result<Vec<DirEntry>, WireError>;

    /// Applies a batch that [`StateStore::check`] accepted, atomically, stamping `zxid`.
    fn apply(&mut self, zxid: Zxid, ops: &[Op]) -> Result<(), Self::Error>;

    /// Whether `key` is a directory (the root is).
    fn is_dir(&self, key: &str) -> bool {
        matches!(self.stat(key), Some((EntryKind::Dir, _)))
    }

    /// Checks a batch against the namespace rules as the state evolves through the batch
    /// (`key_bytes_max` bounds the keys a rename moves); the error's code says which rule
    /// refused it and its message names the key.
    fn check(&self, ops: &[Op], key_bytes_max: usize) -> Result<(), WireError> {
        check_batch(self, ops, key_bytes_max).map_err(|e| e.to_wire())
    }
}

/// Checks `ops` against the namespace rules of `protocol::batch` on `store` plus the changes of
/// the ops before each one, without touching `store`. Cost: the size of the batch plus the
/// subtrees it renames or deletes.
pub fn check_batch<S: StateStore + ?Sized>(
    store: &S,
    ops: &[Op],
    key_bytes_max: usize,
) -> Result<(), OpError> {
    batch::check_namespace(&Index(store), ops, key_bytes_max)
}

/// A store's index as the namespace rules read it.
struct Index<'a, S: ?Sized>(&'a S);

impl<S: StateStore + ?Sized> Namespace for Index<'_, S> {
    fn kind(&self, key: &str) -> Option<EntryKind> {
        self.0.stat(key).map(|(kind, _)| kind)
    }

    fn visit_within(&self, dir: &str, visit: &mut dyn FnMut(&str, EntryKind) -> bool) {
        self.0.visit_within(dir, visit)
    }
}
