//! What a committed entry means to a watch: [`events_of`] turns the data ops of one entry into
//! the change events a [`Scope`] sees. It is the one definition of watch events: the client's
//! watches apply it to the live Update stream, and a node applies it to its history window to
//! answer [`crate::message::data::ReadOp::History`], so that an event delivered live and the
//! same event read from history are equal.
//!
//! # The events of each op
//! - `Put` with `create_only`, `Mkdir`: `Created` of the key; a plain `Put`: `Changed` (the entry
//!   does not say whether the key existed before).
//! - `Delete`: `Removed` of the key. A watch strictly below the deleted directory (a path, or a
//!   prefix's directory) gets `Removed` of its own path: its subject went with the subtree.
//! - `Rename`: the deletion of `from` (as above), then the creation of `to`: `Created` of `to`,
//!   and for a watch strictly below `to`, `Created` of its own path (it arrived with the subtree).
//! - `Lock`, `Session`: none (lock changes have their own stream, `LockChanged`).

use crate::message::data::{ChangeEvent, ChangeKind, Op, Scope};
use crate::Zxid;
use bytes::Bytes;

/// The change events `scope` sees in the ops of the entry `zxid`, in op order. With `values`,
/// created and changed values carry the value written.
pub fn events_of(scope: &Scope, zxid: Zxid, ops: &[Op], values: bool) -> Vec<ChangeEvent> {
    let mut out = Vec::new();
    let event = |kind: ChangeKind, key: &str, value: Option<&Bytes>| ChangeEvent {
        zxid,
        kind,
        key: key.to_string(),
        value: if values { value.cloned() } else { None },
    };
    let tree = |kind: ChangeKind, dir: &str, out: &mut Vec<ChangeEvent>| {
        let own = scope.path();
        if scope.matches(dir) {
            out.push(event(kind, dir, None));
        } else if own != dir && crate::key::is_within(own, dir) {
            out.push(event(kind, own, None));
        }
    };
    for op in ops {
        match op {
            Op::Put { key, value, create_only, .. } => {
                if scope.matches(key) {
                    let kind = if *create_only { ChangeKind::Created } else { ChangeKind::Changed };
                    out.push(event(kind, key, Some(value)));
                }
            }
            Op::Mkdir { key } => {
                if scope.matches(key) {
                    out.push(event(ChangeKind::Created, key, None));
                }
            }
            Op::Delete { key, .. } => tree(ChangeKind::Removed, key, &mut out),
            Op::Rename { from, to } => {
                tree(ChangeKind::Removed, from, &mut out);
                tree(ChangeKind::Created, to, &mut out);
            }
            Op::Lock(_) | Op::Session(_) => {}
        }
    }
    out
}

/// Bytes an event is charged in a history page (its key, its value and a fixed overhead).
pub fn event_bytes(event: &ChangeEvent) -> usize {
    EVENT_OVERHEAD_BYTES + event.key.len() + event.value.as_ref().map_or(0, |v| v.len())
}

/// The fixed part of [`event_bytes`]: a zxid, a kind and the length prefixes.
pub const EVENT_OVERHEAD_BYTES: usize = 32;

/// The sentence of a compacted history read: what is gone and where to resume.
pub fn compacted_sentence(after: Zxid, oldest: Zxid) -> String {
    format!(
        "compacted: re-read from zxid {oldest} (the events after {after} up to {oldest} are no \
         longer in the history window; read the state again and resume from {oldest})"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn z(c: u32) -> Zxid {
        Zxid::new(1, c)
    }

    fn put(key: &str, create_only: bool) -> Op {
        Op::Put { key: key.into(), value: Bytes::from_static(b"v"), create_only, ephemeral: None }
    }

    fn ev(kind: ChangeKind, key: &str) -> ChangeEvent {
        ChangeEvent { zxid: z(1), kind, key: key.into(), value: None }
    }

    /// Puts, mkdirs, deletes and renames give the documented events to path and prefix scopes,
    /// a scope below a deleted or renamed directory included; values only when asked.
    #[test]
    fn events_of_each_op_for_paths_and_prefixes() {
        let ops = vec![
            put("/a/x", true),
            put("/a/x", false),
            Op::Mkdir { key: "/a/d".into() },
            Op::Rename { from: "/a".into(), to: "/b".into() },
            Op::Delete { key: "/b".into(), recursive: true },
            put("/c", false),
        ];
        use ChangeKind::*;
        let path = events_of(&Scope::Path("/a/x".into()), z(1), &ops, false);
        assert_eq!(
            path,
            vec![ev(Created, "/a/x"), ev(Changed, "/a/x"), ev(Removed, "/a/x")],
            "a path below a renamed directory is removed; nothing else touches it"
        );
        let prefix = events_of(&Scope::Prefix("/a".into()), z(1), &ops, false);
        assert_eq!(
            prefix,
            vec![ev(Created, "/a/x"), ev(Changed, "/a/x"), ev(Created, "/a/d"), ev(Removed, "/a")]
        );
        let below = events_of(&Scope::Prefix("/b/d".into()), z(1), &ops, false);
        assert_eq!(below, vec![ev(Created, "/b/d"), ev(Removed, "/b/d")]);
        let root = events_of(&Scope::Prefix("/".into()), z(1), &ops, true);
        assert_eq!(root.len(), 7);
        assert_eq!(root[0].value, Some(Bytes::from_static(b"v")));
        assert_eq!(root[2].value, None, "a directory has no value");
    }
}
