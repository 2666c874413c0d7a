//! The key/value store as the state machine sees it: the [`KvStore`] trait, its errors, and
//! [`check_batch`], the one implementation of the namespace rules that every store shares.
//!
//! # Rules a store implements ([`conformance`](super::conformance) checks them; every store
//! runs it: `fs-node/tests/state_store.rs` for [`MemStore`](super::MemStore))
//! - The root `/` always exists and is a directory. Directories are explicit (`Mkdir`).
//! - `Put` needs its parent to be an existing directory; it refuses a directory key, and with
//!   `create_only` an existing key.
//! - `Mkdir` needs its parent to be a directory and refuses an existing key.
//! - `Delete` needs the key to exist; a non-empty directory needs `recursive`.
//! - `Rename` moves a key or a whole subtree: `from` must exist, `to` must not, the parent of
//!   `to` must be a directory, and `to` must not lie inside `from`.
//! - A batch is checked op by op against the state *as the earlier ops of the same batch leave
//!   it* ([`KvStore::check`]), then applied all-or-nothing ([`KvStore::apply`]).
//! - Every entry written, created or moved by a batch carries that batch's zxid.
//! - `Op::Lock` and `Op::Session` are not data: stores ignore them (the lock and session
//!   tables live in the state machine).
//! - Keys are validated (`protocol::key`, size limits) by the state machine before `check`.
//! - [`KvStore::list`] of a missing directory is `NotFound`, of a value `NotADirectory`.

use protocol::key::{self, ROOT};
use protocol::message::data::{DirEntry, ErrorCode, Op, Versioned, WireError};
use protocol::Zxid;
use std::collections::BTreeMap;
use std::ops::Bound;
use thiserror::Error;

/// What a key names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    Value,
    Dir,
}

/// Why one op of a batch cannot apply. Each names the key at fault.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    #[error("{key} does not exist")]
    NotFound { key: String },
    #[error("{key} already exists")]
    AlreadyExists { key: String },
    #[error("parent directory {parent} of {key} does not exist; mkdir it first")]
    ParentMissing { key: String, parent: String },
    #[error("{parent} (parent of {key}) is a value, not a directory")]
    NotADirectory { key: String, parent: String },
    #[error("{key} is a directory; delete it (recursive) or rename it instead")]
    IsADirectory { key: String },
    #[error("directory {key} is not empty; delete it with recursive to remove its subtree")]
    DirectoryNotEmpty { key: String },
    #[error("cannot rename {from} to {to}: the target lies inside the source")]
    RenameIntoItself { from: String, to: String },
}

impl StoreError {
    pub fn code(&self) -> ErrorCode {
        match self {
            StoreError::NotFound { .. } => ErrorCode::NotFound,
            StoreError::AlreadyExists { .. } => ErrorCode::AlreadyExists,
            StoreError::ParentMissing { .. } => ErrorCode::ParentMissing,
            StoreError::NotADirectory { .. } => ErrorCode::NotADirectory,
            StoreError::IsADirectory { .. } => ErrorCode::IsADirectory,
            StoreError::DirectoryNotEmpty { .. } => ErrorCode::DirectoryNotEmpty,
            StoreError::RenameIntoItself { .. } => ErrorCode::BadKey,
        }
    }
}

/// The first op of a batch that cannot apply, with its index in the batch.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("op {index}: {error}")]
pub struct OpError {
    pub index: usize,
    pub error: StoreError,
}

impl OpError {
    /// The wire form, by cache-server's convention (`cache_server::error::key_from_wire`): for
    /// the errors about one key the message is that key alone (the missing parent for
    /// `ParentMissing`, the non-directory for `NotADirectory`), so that a client names it
    /// without parsing prose; other errors carry the whole text.
    pub fn to_wire(&self) -> WireError {
        let message = match &self.error {
            StoreError::NotFound { key }
            | StoreError::AlreadyExists { key }
            | StoreError::IsADirectory { key }
            | StoreError::DirectoryNotEmpty { key } => key.clone(),
            StoreError::ParentMissing { parent, .. } | StoreError::NotADirectory { parent, .. } => {
                parent.clone()
            }
            StoreError::RenameIntoItself { .. } => self.to_string(),
        };
        WireError { code: self.error.code(), message }
    }
}

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
pub trait KvStore {
    /// An IO failure. The state machine treats it as fatal for this node (it stops applying;
    /// the node then repairs from a peer).
    type Error: std::error::Error + Send + Sync + 'static;

    /// Kind and zxid of `key`, from the index. The root is `Some((Dir, Zxid::ZERO))`.
    fn stat(&self, key: &str) -> Option<(EntryKind, Zxid)>;

    /// Visits every key strictly below `dir` (not `dir` itself), in any order, until `visit`
    /// returns `false`. The default walks the tree with [`KvStore::list`]; a store with an
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

    /// Applies a batch that [`KvStore::check`] accepted, atomically, stamping `zxid`.
    fn apply(&mut self, zxid: Zxid, ops: &[Op]) -> Result<(), Self::Error>;

    /// Whether `key` is a directory (the root is).
    fn is_dir(&self, key: &str) -> bool {
        matches!(self.stat(key), Some((EntryKind::Dir, _)))
    }

    /// Checks a batch against the state as it evolves through the batch; the error's code
    /// says which rule refused it and its message names the key.
    fn check(&self, ops: &[Op]) -> Result<(), WireError> {
        check_batch(self, ops).map_err(|e| e.to_wire())
    }
}

/// Checks `ops` in order against `store` plus the changes of the ops before each one, without
/// touching `store`. Cost: the size of the batch plus the subtrees it renames or deletes.
pub fn check_batch<S: KvStore + ?Sized>(store: &S, ops: &[Op]) -> Result<(), OpError> {
    let mut overlay = Overlay { base: store, changes: BTreeMap::new() };
    for (index, op) in ops.iter().enumerate() {
        overlay.step(op).map_err(|error| OpError { index, error })?;
    }
    Ok(())
}

/// The range of keys strictly below `dir` in a map ordered by `String`: every such key starts
/// with `dir/`, and `'0'` is the byte right after `'/'`.
pub fn descendant_bounds(dir: &str) -> (Bound<String>, Bound<String>) {
    if dir == ROOT {
        (Bound::Excluded(ROOT.to_string()), Bound::Unbounded)
    } else {
        (Bound::Included(format!("{dir}/")), Bound::Excluded(format!("{dir}0")))
    }
}

/// `key` moved from under `from` to under `to` (`key` is `from` or lies within it).
pub fn rebase(key: &str, from: &str, to: &str) -> String {
    debug_assert!(key::is_within(key, from));
    format!("{to}{}", &key[from.len()..])
}

/// A store seen through the changes of a batch so far: `Some(kind)` written, `None` removed.
struct Overlay<'a, S: ?Sized> {
    base: &'a S,
    changes: BTreeMap<String, Option<EntryKind>>,
}

impl<S: KvStore + ?Sized> Overlay<'_, S> {
    fn kind(&self, key: &str) -> Option<EntryKind> {
        if key == ROOT {
            return Some(EntryKind::Dir);
        }
        match self.changes.get(key) {
            Some(change) => *change,
            None => self.base.stat(key).map(|(kind, _)| kind),
        }
    }

    /// Every key strictly below `dir`, with its kind, as the batch has left them.
    fn descendants(&self, dir: &str) -> BTreeMap<String, EntryKind> {
        let mut found = BTreeMap::new();
        self.base.visit_within(dir, &mut |k, kind| {
            if !self.changes.contains_key(k) {
                found.insert(k.to_string(), kind);
            }
            true
        });
        for (k, change) in self.changes.range(descendant_bounds(dir)) {
            if let Some(kind) = change {
                found.insert(k.clone(), *kind);
            }
        }
        found
    }

    fn has_descendant(&self, dir: &str) -> bool {
        if self.changes.range(descendant_bounds(dir)).any(|(_, c)| c.is_some()) {
            return true;
        }
        // Stops at the first base key the batch has not removed: at most one more key than
        // the batch has removed below `dir`.
        let mut any = false;
        self.base.visit_within(dir, &mut |k, _| {
            any = !self.changes.contains_key(k);
            !any
        });
        any
    }

    fn parent_is_dir(&self, key: &str) -> Result<(), StoreError> {
        let parent = key::parent(key).unwrap_or(ROOT);
        match self.kind(parent) {
            Some(EntryKind::Dir) => Ok(()),
            Some(EntryKind::Value) => {
                Err(StoreError::NotADirectory { key: key.to_string(), parent: parent.to_string() })
            }
            None => {
                Err(StoreError::ParentMissing { key: key.to_string(), parent: parent.to_string() })
            }
        }
    }

    fn step(&mut self, op: &Op) -> Result<(), StoreError> {
        match op {
            Op::Put { key, create_only, .. } => {
                self.parent_is_dir(key)?;
                match self.kind(key) {
                    Some(EntryKind::Dir) => {
                        return Err(StoreError::IsADirectory { key: key.clone() });
                    }
                    Some(EntryKind::Value) if *create_only => {
                        return Err(StoreError::AlreadyExists { key: key.clone() });
                    }
                    _ => {}
                }
                self.changes.insert(key.clone(), Some(EntryKind::Value));
            }
            Op::Mkdir { key } => {
                self.parent_is_dir(key)?;
                if self.kind(key).is_some() {
                    return Err(StoreError::AlreadyExists { key: key.clone() });
                }
                self.changes.insert(key.clone(), Some(EntryKind::Dir));
            }
            Op::Delete { key, recursive } => {
                match self.kind(key) {
                    None => return Err(StoreError::NotFound { key: key.clone() }),
                    Some(EntryKind::Dir) => {
                        if *recursive {
                            for k in self.descendants(key).into_keys() {
                                self.changes.insert(k, None);
                            }
                        } else if self.has_descendant(key) {
                            return Err(StoreError::DirectoryNotEmpty { key: key.clone() });
                        }
                    }
                    Some(EntryKind::Value) => {}
                }
                self.changes.insert(key.clone(), None);
            }
            Op::Rename { from, to } => {
                if key::is_within(to, from) {
                    return Err(StoreError::RenameIntoItself {
                        from: from.clone(),
                        to: to.clone(),
                    });
                }
                let Some(kind) = self.kind(from) else {
                    return Err(StoreError::NotFound { key: from.clone() });
                };
                if self.kind(to).is_some() {
                    return Err(StoreError::AlreadyExists { key: to.clone() });
                }
                self.parent_is_dir(to)?;
                let moved =
                    if kind == EntryKind::Dir { self.descendants(from) } else { BTreeMap::new() };
                self.changes.insert(from.clone(), None);
                self.changes.insert(to.clone(), Some(kind));
                for (k, kind) in moved {
                    let new_key = rebase(&k, from, to);
                    self.changes.insert(k, None);
                    self.changes.insert(new_key, Some(kind));
                }
            }
            Op::Lock(_) | Op::Session(_) => {}
        }
        Ok(())
    }
}
