//! The rules of a batch of ops, in one place: its *shape* (op count, keys, value sizes, which
//! ops a write may carry, the keys and lock names of its conditions) and its *namespace* rules
//! (what each op needs of the tree as the earlier ops of the batch leave it). Every layer that
//! checks a batch calls these functions; none keeps a copy of a rule.
//!
//! | Who | Calls | When |
//! |---|---|---|
//! | client (`cache-client` `Client::batch`, `rename`) | [`check_write`] with its own id | before sending: an early error, nothing is sent |
//! | server (`cache-server` `validate::validate_request`) | [`check_write`] | before the backend orders anything |
//! | state machine (`fs-node` `state::machine`) | [`check_write`], then the store's `check` ([`check_namespace`]) | on apply, the decision that counts |
//! | disk store (`fs-node` `storage::store`) | [`check_ops`] and [`check_namespace`] | in its own `check` and `apply`; its `Plan` only lays out the bytes |
//! | test backend (`cache-server` `mem`) | `validate_request` and [`check_namespace`] | before applying to its tree |
//!
//! # Shape rules
//! - A write has at least one op ([`ShapeError::Empty`], code `ConditionFailed`); a log entry's
//!   data ops may be none ([`check_ops`]: a lock-only entry).
//! - Ops and conditions together are at most [`BATCH_OPS_MAX`] (`TooLarge`).
//! - Every key a data op writes, removes or renames is a mutable key
//!   ([`key::validate_mutable`]: not the root) within the key limit (`BadKey`).
//! - A `Put` value is at most the value limit (`TooLarge`).
//! - A write carries no lock grant and no session op: those go in a Lock message
//!   ([`ShapeError::NotInWrite`], `BadRequest`). It may release locks (a transaction's
//!   commit), each named by a mutable key of at most [`NAME_BYTES_MAX`] bytes (`BadKey`), and
//!   only its own writer's ([`ShapeError::ForeignRelease`], `BadAuth`; checked where the writer
//!   is known: the client and the state machine).
//! - A `KeyZxid` condition names a key (the root allowed); a lock condition names a lock as
//!   above (`BadKey`).
//! - The shape of the whole batch is checked before its namespace: a bad key is named even if
//!   an earlier op also fails against the tree.
//!
//! # Namespace rules ([`check_namespace`])
//! - The root `/` always exists and is a directory. Directories are explicit (`Mkdir`).
//! - `Put` needs its parent to be an existing directory; it refuses a directory key, and with
//!   `create_only` an existing key.
//! - `Mkdir` needs its parent to be a directory and refuses an existing key.
//! - `Delete` needs the key to exist; a non-empty directory needs `recursive`.
//! - `Rename` moves a key or a whole subtree: `to` must not be `from` or lie inside it (checked
//!   first, whether or not `from` exists), `from` must exist, `to` must not, the parent of `to`
//!   must be a directory, and every key it moves must stay within the key limit.
//! - Each op is checked against the state as the earlier ops of the same batch leave it.
//! - Lock and session ops are not data: the namespace ignores them.
//!
//! # What each layer did before this module, and how the differences were resolved
//! - Empty write: client and server refused (`ConditionFailed`, with two wordings); the state
//!   machine accepted it and spent a zxid. Now refused everywhere, with the server's wording.
//! - Count: client and server counted ops plus conditions; the disk store counted ops; the
//!   state machine only had the decoder's bound of [`BATCH_OPS_MAX`] per list. Now ops plus
//!   conditions for a write, ops for a log entry's data.
//! - Lock and session ops in a write: the client refused all but its own releases with
//!   `BadAuth`; the server let them through; the state machine refused grants and session ops
//!   (`BadRequest`) and others' releases (`BadAuth`); the test backend answered `Unavailable`.
//!   Now `BadRequest` and `BadAuth` everywhere, before anything is ordered.
//! - Lock names (releases and lock conditions) were checked by the client only; the state
//!   machine answered `LockNotHeld` for a malformed name and the test backend `Unavailable`.
//!   Now `BadKey` everywhere.
//! - `KeyZxid` keys were checked by the client and the server; the state machine took a
//!   malformed key for an absent one. Now `BadKey` everywhere.
//! - Keys a rename moves below `from`: only the disk store checked them, so over the node's
//!   disk store a rename pushing a child past the key limit passed the check and then failed
//!   the store's apply, a fatal store error; the in-memory stores accepted it. Now a namespace
//!   rule (`BadKey`) everywhere.
//! - Rename into itself with a missing source: `BadKey` in the fs-node stores, `NotFound` in
//!   the test backend. Now `BadKey` first everywhere.
//! - Shape before namespace: the disk store checked op by op (a namespace fault of op 0 hid a
//!   bad key of op 1); everyone else checked shape first. Now shape first everywhere.
//! - Messages: the wire messages of the server's refusals stay as they were (its typed
//!   errors); the state machine's and the disk store's come from the [`ShapeError`] and
//!   [`NamespaceError`] texts here (the disk store's used to differ in wording).

use crate::key::{self, KeyError, ROOT};
use crate::limits::{BATCH_OPS_MAX, KEY_BYTES_DEFAULT, NAME_BYTES_MAX, VALUE_BYTES_DEFAULT};
use crate::message::data::{Condition, ErrorCode, Op, WireError};
use crate::message::lock::LockOp;
use crate::SenderId;
use std::collections::BTreeMap;
use std::ops::Bound;
use thiserror::Error;

/// The size limits a batch is checked against (a node's or a client's configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub key_bytes_max: usize,
    pub value_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { key_bytes_max: KEY_BYTES_DEFAULT, value_bytes_max: VALUE_BYTES_DEFAULT }
    }
}

/// Why a batch breaks a shape rule. Each names the op or condition at fault by its index.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ShapeError {
    #[error("a write needs at least one op")]
    Empty,
    #[error("batch has {len} ops and conditions, over the limit of {max}")]
    TooManyOps { len: usize, max: usize },
    #[error("op {index}: {error}")]
    BadKey { index: usize, error: KeyError },
    #[error("condition {index}: {error}")]
    BadConditionKey { index: usize, error: KeyError },
    #[error("op {index}: value of {key} is {len} bytes, over the limit of {max}")]
    ValueTooLarge { index: usize, key: String, len: usize, max: usize },
    #[error("op {index}: lock grants and session changes go in a Lock message, not in a write")]
    NotInWrite { index: usize },
    #[error("op {index}: a write can only release its own client's locks")]
    ForeignRelease { index: usize },
}

impl ShapeError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ShapeError::Empty => ErrorCode::ConditionFailed,
            ShapeError::TooManyOps { .. } | ShapeError::ValueTooLarge { .. } => ErrorCode::TooLarge,
            ShapeError::BadKey { .. } | ShapeError::BadConditionKey { .. } => ErrorCode::BadKey,
            ShapeError::NotInWrite { .. } => ErrorCode::BadRequest,
            ShapeError::ForeignRelease { .. } => ErrorCode::BadAuth,
        }
    }

    pub fn to_wire(&self) -> WireError {
        WireError { code: self.code(), message: self.to_string() }
    }
}

/// Checks a client write: [`check_ops`], plus the rules only a write has (at least one op,
/// conditions counted with the ops, no lock grants or session ops, lock names, condition keys).
/// `writer` is the client sending it, where known: then a release of another client's lock is
/// refused too.
pub fn check_write(
    ops: &[Op],
    conditions: &[Condition],
    limits: &Limits,
    writer: Option<SenderId>,
) -> Result<(), ShapeError> {
    if ops.is_empty() {
        return Err(ShapeError::Empty);
    }
    let len = ops.len() + conditions.len();
    if len > BATCH_OPS_MAX {
        return Err(ShapeError::TooManyOps { len, max: BATCH_OPS_MAX });
    }
    check_ops(ops, limits)?;
    for (index, op) in ops.iter().enumerate() {
        match op {
            Op::Lock(LockOp::Release { lock, holder, .. }) => {
                if writer.is_some_and(|w| w != *holder) {
                    return Err(ShapeError::ForeignRelease { index });
                }
                key::validate_mutable(lock, NAME_BYTES_MAX)
                    .map_err(|error| ShapeError::BadKey { index, error })?;
            }
            Op::Lock(LockOp::Grant { .. }) | Op::Session(_) => {
                return Err(ShapeError::NotInWrite { index });
            }
            _ => {}
        }
    }
    for (index, condition) in conditions.iter().enumerate() {
        match condition {
            Condition::KeyZxid { key, .. } => key::validate(key, limits.key_bytes_max),
            Condition::LockToken { lock, .. } | Condition::LockHeld { lock, .. } => {
                key::validate_mutable(lock, NAME_BYTES_MAX)
            }
        }
        .map_err(|error| ShapeError::BadConditionKey { index, error })?;
    }
    Ok(())
}

/// Checks the data ops of a batch (a write or a log entry): at most [`BATCH_OPS_MAX`] ops,
/// mutable keys within the key limit, values within the value limit. Lock and session ops
/// are not data and pass.
pub fn check_ops(ops: &[Op], limits: &Limits) -> Result<(), ShapeError> {
    if ops.len() > BATCH_OPS_MAX {
        return Err(ShapeError::TooManyOps { len: ops.len(), max: BATCH_OPS_MAX });
    }
    let key_ok = |index, key: &str| {
        key::validate_mutable(key, limits.key_bytes_max)
            .map_err(|error| ShapeError::BadKey { index, error })
    };
    for (index, op) in ops.iter().enumerate() {
        match op {
            Op::Put { key, value, .. } => {
                key_ok(index, key)?;
                if value.len() > limits.value_bytes_max {
                    return Err(ShapeError::ValueTooLarge {
                        index,
                        key: key.clone(),
                        len: value.len(),
                        max: limits.value_bytes_max,
                    });
                }
            }
            Op::Mkdir { key } | Op::Delete { key, .. } => key_ok(index, key)?,
            Op::Rename { from, to } => {
                key_ok(index, from)?;
                key_ok(index, to)?;
            }
            Op::Lock(_) | Op::Session(_) => {}
        }
    }
    Ok(())
}

/// What a key names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    Value,
    Dir,
}

/// Why one op of a batch breaks a namespace rule. Each names the key at fault.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum NamespaceError {
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
    #[error("cannot rename {from} to {to}: a key it moves breaks the key rules: {error}")]
    MovedKeyInvalid { from: String, to: String, error: KeyError },
}

impl NamespaceError {
    pub fn code(&self) -> ErrorCode {
        match self {
            NamespaceError::NotFound { .. } => ErrorCode::NotFound,
            NamespaceError::AlreadyExists { .. } => ErrorCode::AlreadyExists,
            NamespaceError::ParentMissing { .. } => ErrorCode::ParentMissing,
            NamespaceError::NotADirectory { .. } => ErrorCode::NotADirectory,
            NamespaceError::IsADirectory { .. } => ErrorCode::IsADirectory,
            NamespaceError::DirectoryNotEmpty { .. } => ErrorCode::DirectoryNotEmpty,
            NamespaceError::RenameIntoItself { .. } | NamespaceError::MovedKeyInvalid { .. } => {
                ErrorCode::BadKey
            }
        }
    }
}

/// The first op of a batch that breaks a namespace rule, with its index in the batch.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("op {index}: {error}")]
pub struct OpError {
    pub index: usize,
    pub error: NamespaceError,
}

impl OpError {
    /// The wire form, by cache-server's convention (`cache_server::error::key_from_wire`): for
    /// the errors about one key the message is that key alone (the missing parent for
    /// `ParentMissing`, the non-directory for `NotADirectory`), so that a client names it
    /// without parsing prose; other errors carry the whole text.
    pub fn to_wire(&self) -> WireError {
        let message = match &self.error {
            NamespaceError::NotFound { key }
            | NamespaceError::AlreadyExists { key }
            | NamespaceError::IsADirectory { key }
            | NamespaceError::DirectoryNotEmpty { key } => key.clone(),
            NamespaceError::ParentMissing { parent, .. }
            | NamespaceError::NotADirectory { parent, .. } => parent.clone(),
            NamespaceError::RenameIntoItself { .. } | NamespaceError::MovedKeyInvalid { .. } => {
                self.to_string()
            }
        };
        WireError { code: self.error.code(), message }
    }
}

/// A tree the namespace rules read: what each key is, and the keys below a directory.
pub trait Namespace {
    /// What `key` names; the root is always a directory.
    fn kind(&self, key: &str) -> Option<EntryKind>;

    /// Visits every key strictly below `dir` (not `dir` itself), in any order, until `visit`
    /// returns `false`.
    fn visit_within(&self, dir: &str, visit: &mut dyn FnMut(&str, EntryKind) -> bool);
}

/// Checks `ops` in order against `tree` plus the changes of the ops before each one, without
/// touching `tree`. Cost: the size of the batch plus the subtrees it renames or deletes.
/// `key_bytes_max` bounds the keys a rename moves.
pub fn check_namespace<N: Namespace + ?Sized>(
    tree: &N,
    ops: &[Op],
    key_bytes_max: usize,
) -> Result<(), OpError> {
    let mut overlay = Overlay { base: tree, changes: BTreeMap::new(), key_bytes_max };
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

/// A tree seen through the changes of a batch so far: `Some(kind)` written, `None` removed.
struct Overlay<'a, N: ?Sized> {
    base: &'a N,
    changes: BTreeMap<String, Option<EntryKind>>,
    key_bytes_max: usize,
}

impl<N: Namespace + ?Sized> Overlay<'_, N> {
    fn kind(&self, key: &str) -> Option<EntryKind> {
        if key == ROOT {
            return Some(EntryKind::Dir);
        }
        match self.changes.get(key) {
            Some(change) => *change,
            None => self.base.kind(key),
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

    fn parent_is_dir(&self, key: &str) -> Result<(), NamespaceError> {
        let parent = key::parent(key).unwrap_or(ROOT);
        let (key, parent) = (key.to_string(), parent.to_string());
        match self.kind(&parent) {
            Some(EntryKind::Dir) => Ok(()),
            Some(EntryKind::Value) => Err(NamespaceError::NotADirectory { key, parent }),
            None => Err(NamespaceError::ParentMissing { key, parent }),
        }
    }

    fn step(&mut self, op: &Op) -> Result<(), NamespaceError> {
        match op {
            Op::Put { key, create_only, .. } => {
                self.parent_is_dir(key)?;
                match self.kind(key) {
                    Some(EntryKind::Dir) => {
                        return Err(NamespaceError::IsADirectory { key: key.clone() });
                    }
                    Some(EntryKind::Value) if *create_only => {
                        return Err(NamespaceError::AlreadyExists { key: key.clone() });
                    }
                    _ => {}
                }
                self.changes.insert(key.clone(), Some(EntryKind::Value));
            }
            Op::Mkdir { key } => {
                self.parent_is_dir(key)?;
                if self.kind(key).is_some() {
                    return Err(NamespaceError::AlreadyExists { key: key.clone() });
                }
                self.changes.insert(key.clone(), Some(EntryKind::Dir));
            }
            Op::Delete { key, recursive } => {
                match self.kind(key) {
                    None => return Err(NamespaceError::NotFound { key: key.clone() }),
                    Some(EntryKind::Dir) => {
                        if *recursive {
                            for k in self.descendants(key).into_keys() {
                                self.changes.insert(k, None);
                            }
                        } else if self.has_descendant(key) {
                            return Err(NamespaceError::DirectoryNotEmpty { key: key.clone() });
                        }
                    }
                    Some(EntryKind::Value) => {}
                }
                self.changes.insert(key.clone(), None);
            }
            Op::Rename { from, to } => self.rename(from, to)?,
            Op::Lock(_) | Op::Session(_) => {}
        }
        Ok(())
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<(), NamespaceError> {
        let (from_key, to_key) = (from.to_string(), to.to_string());
        if key::is_within(to, from) {
            return Err(NamespaceError::RenameIntoItself { from: from_key, to: to_key });
        }
        let Some(kind) = self.kind(from) else {
            return Err(NamespaceError::NotFound { key: from_key });
        };
        if self.kind(to).is_some() {
            return Err(NamespaceError::AlreadyExists { key: to_key });
        }
        self.parent_is_dir(to)?;
        let moved = if kind == EntryKind::Dir { self.descendants(from) } else { BTreeMap::new() };
        let mut placed = Vec::with_capacity(moved.len());
        for (k, kind) in moved {
            let new_key = rebase(&k, from, to);
            if let Err(error) = key::validate_mutable(&new_key, self.key_bytes_max) {
                return Err(NamespaceError::MovedKeyInvalid { from: from_key, to: to_key, error });
            }
            placed.push((k, new_key, kind));
        }
        self.changes.insert(from_key, None);
        self.changes.insert(to_key, Some(kind));
        for (k, new_key, kind) in placed {
            self.changes.insert(k, None);
            self.changes.insert(new_key, Some(kind));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn put(key: &str, len: usize) -> Op {
        Op::Put {
            key: key.into(),
            value: Bytes::from(vec![b'x'; len]),
            create_only: false,
            ephemeral: None,
        }
    }

    const LIMITS: Limits = Limits { key_bytes_max: 16, value_bytes_max: 4 };

    /// Each shape rule refuses by name, with its code, and a good write passes.
    #[test]
    fn shape_rules() {
        let code = |ops: &[Op], conds: &[Condition], writer| {
            check_write(ops, conds, &LIMITS, writer).map_err(|e| e.code())
        };
        assert_eq!(code(&[put("/k", 4)], &[], None), Ok(()));
        assert_eq!(code(&[], &[], None), Err(ErrorCode::ConditionFailed));
        assert_eq!(check_ops(&[], &LIMITS), Ok(()), "an entry may carry no data op");
        let full = vec![put("/k", 1); BATCH_OPS_MAX];
        assert_eq!(code(&full, &[], None), Ok(()));
        let cond = [Condition::KeyZxid { key: "/".into(), zxid: crate::Zxid::ZERO }];
        assert_eq!(code(&full, &cond, None), Err(ErrorCode::TooLarge));
        assert_eq!(code(&[put("/k", 5)], &[], None), Err(ErrorCode::TooLarge));
        assert_eq!(code(&[put("/seventeen-bytes!", 1)], &[], None), Err(ErrorCode::BadKey));
        let root = Op::Delete { key: "/".into(), recursive: true };
        assert_eq!(code(&[root], &[], None), Err(ErrorCode::BadKey));
        let grant = Op::Lock(LockOp::Grant {
            lock: "/l".into(),
            auth: 3,
            session: 0,
            holder: 9,
            host: "h".into(),
        });
        assert_eq!(code(&[grant], &[], None), Err(ErrorCode::BadRequest));
        let release =
            |lock: &str| Op::Lock(LockOp::Release { lock: lock.into(), auth: 3, holder: 9 });
        assert_eq!(code(&[release("/l")], &[], Some(9)), Ok(()));
        assert_eq!(code(&[release("/l")], &[], None), Ok(()));
        assert_eq!(code(&[release("/l")], &[], Some(8)), Err(ErrorCode::BadAuth));
        assert_eq!(code(&[release("l")], &[], Some(9)), Err(ErrorCode::BadKey));
        let long_lock = format!("/{}", "l".repeat(NAME_BYTES_MAX));
        let held = [Condition::LockHeld { lock: long_lock, auth: 3 }];
        assert_eq!(code(&[put("/k", 1)], &held, None), Err(ErrorCode::BadKey));
        let rel = [Condition::KeyZxid { key: "rel".into(), zxid: crate::Zxid::ZERO }];
        let err = check_write(&[put("/k", 1)], &rel, &LIMITS, None).unwrap_err();
        assert!(err.to_string().starts_with("condition 0: "), "{err}");
    }

    struct Tree(BTreeMap<String, EntryKind>);

    impl Namespace for Tree {
        fn kind(&self, key: &str) -> Option<EntryKind> {
            if key == ROOT {
                return Some(EntryKind::Dir);
            }
            self.0.get(key).copied()
        }

        fn visit_within(&self, dir: &str, visit: &mut dyn FnMut(&str, EntryKind) -> bool) {
            for (k, kind) in self.0.range(descendant_bounds(dir)) {
                if !visit(k, *kind) {
                    return;
                }
            }
        }
    }

    /// A rename into itself is refused as such before the source is looked up, and a rename
    /// may not move a key past the key limit (the message names the key).
    #[test]
    fn rename_rules() {
        let tree = Tree(BTreeMap::from([
            ("/d".to_string(), EntryKind::Dir),
            ("/d/long-name".to_string(), EntryKind::Value),
        ]));
        let rename = |from: &str, to: &str| Op::Rename { from: from.into(), to: to.into() };
        let err = check_namespace(&tree, &[rename("/nope", "/nope/x")], 16).unwrap_err();
        assert!(matches!(err.error, NamespaceError::RenameIntoItself { .. }));
        let err = check_namespace(&tree, &[rename("/d", "/dddddd")], 16).unwrap_err();
        assert_eq!(err.to_wire().code, ErrorCode::BadKey);
        assert!(err.to_wire().message.contains("/dddddd/long-name"), "{err}");
        assert_eq!(check_namespace(&tree, &[rename("/d", "/dddddd")], 17), Ok(()));
        let err = check_namespace(&tree, &[put("/x", 1), put("/d/long-name/y", 1)], 64);
        assert_eq!(
            err.unwrap_err().to_wire(),
            WireError { code: ErrorCode::NotADirectory, message: "/d/long-name".into() }
        );
    }
}
