//! Watches: callbacks registered per path or per prefix (a directory and everything below it),
//! driven by the Update stream and LockChanged. IO-free: [`WatchRegistry`] turns each notice into
//! the events to deliver, in zxid order; the client invokes the callbacks.
//!
//! # Event kinds
//! - `Created`: a key made by `create` (a create-only put) or `mkdir`, or the target of a rename.
//! - `Changed`: a value written by a plain put (the stream does not say whether the key existed
//!   before, so an overwrite and a first plain write both count as changes).
//! - `Removed`: a key deleted, or the source of a rename; for a watched path below a deleted or
//!   renamed directory, that path too.
//! - `LockChanged`: a lock changed hands; the lock name is matched like a path.
//! - `Missed`: the client flushed after a gap in the stream, so events may have been lost; every
//!   watch gets it once, whatever its kinds.
//!
//! Each committed entry is delivered once (a replayed notice is skipped) and events never go
//! backwards in zxid (an entry older than one already delivered is dropped and counted).

use protocol::key;
use protocol::message::data::{Op, UpdateNotice};
use protocol::message::lock::LockChanged;
use protocol::Zxid;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Most watches one client may hold.
pub const WATCHES_MAX: usize = 65_536;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    Created,
    Removed,
    Changed,
    LockChanged,
}

/// A set of event kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kinds(u8);

impl Kinds {
    pub const ALL: Kinds = Kinds(0b1111);
    pub const DATA: Kinds = Kinds(0b0111);

    pub fn of(kinds: &[EventKind]) -> Kinds {
        Kinds(kinds.iter().fold(0, |bits, k| bits | Kinds::bit(*k)))
    }

    fn bit(kind: EventKind) -> u8 {
        match kind {
            EventKind::Created => 1,
            EventKind::Removed => 2,
            EventKind::Changed => 4,
            EventKind::LockChanged => 8,
        }
    }

    pub fn contains(self, kind: EventKind) -> bool {
        self.0 & Kinds::bit(kind) != 0
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Exactly this key (or lock name).
    Path(String),
    /// This directory and everything below it.
    Prefix(String),
}

impl Target {
    pub fn matches(&self, key: &str) -> bool {
        match self {
            Target::Path(p) => p == key,
            Target::Prefix(dir) => key::is_within(key, dir),
        }
    }

    fn path(&self) -> &str {
        match self {
            Target::Path(p) | Target::Prefix(p) => p,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    Created {
        key: String,
        zxid: Zxid,
    },
    Removed {
        key: String,
        zxid: Zxid,
    },
    Changed {
        key: String,
        zxid: Zxid,
    },
    LockChanged {
        lock: String,
        zxid: Zxid,
        holders: Vec<String>,
    },
    /// Events after `after` may have been lost (the cache was flushed).
    Missed {
        after: Zxid,
    },
}

impl WatchEvent {
    pub fn kind(&self) -> Option<EventKind> {
        match self {
            WatchEvent::Created { .. } => Some(EventKind::Created),
            WatchEvent::Removed { .. } => Some(EventKind::Removed),
            WatchEvent::Changed { .. } => Some(EventKind::Changed),
            WatchEvent::LockChanged { .. } => Some(EventKind::LockChanged),
            WatchEvent::Missed { .. } => None,
        }
    }

    pub fn zxid(&self) -> Zxid {
        match self {
            WatchEvent::Created { zxid, .. }
            | WatchEvent::Removed { zxid, .. }
            | WatchEvent::Changed { zxid, .. }
            | WatchEvent::LockChanged { zxid, .. } => *zxid,
            WatchEvent::Missed { after } => *after,
        }
    }

    fn key(&self) -> &str {
        match self {
            WatchEvent::Created { key, .. }
            | WatchEvent::Removed { key, .. }
            | WatchEvent::Changed { key, .. } => key,
            WatchEvent::LockChanged { lock, .. } => lock,
            WatchEvent::Missed { .. } => "",
        }
    }
}

pub type Callback = Arc<dyn Fn(&WatchEvent) + Send + Sync>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WatchId(pub u64);

struct Watch {
    target: Target,
    kinds: Kinds,
    callback: Callback,
    /// Only events above this zxid reach the watch: what the client had already seen when the
    /// watch was registered is not news. (A new client's update stream may start with a replay
    /// of entries committed before the watch existed.)
    after: Zxid,
}

/// Watches and the zxid of the last event delivered.
#[derive(Default)]
pub struct WatchRegistry {
    watches: BTreeMap<WatchId, Watch>,
    next_id: u64,
    last_zxid: Zxid,
    dropped_out_of_order: u64,
}

/// An event and the callback it goes to.
pub type Delivery = (Callback, WatchEvent);

impl WatchRegistry {
    pub fn new() -> WatchRegistry {
        WatchRegistry::default()
    }

    /// Registers a watch for every matching event; `None` when [`WATCHES_MAX`] are already
    /// registered.
    pub fn register(
        &mut self,
        target: Target,
        kinds: Kinds,
        callback: Callback,
    ) -> Option<WatchId> {
        self.register_after(target, kinds, Zxid::ZERO, callback)
    }

    /// Registers a watch that receives only events of entries above `after`.
    pub fn register_after(
        &mut self,
        target: Target,
        kinds: Kinds,
        after: Zxid,
        callback: Callback,
    ) -> Option<WatchId> {
        if self.watches.len() >= WATCHES_MAX {
            return None;
        }
        self.next_id += 1;
        let id = WatchId(self.next_id);
        self.watches.insert(id, Watch { target, kinds, callback, after });
        Some(id)
    }

    /// Removes a watch; false when it was not registered.
    pub fn clear(&mut self, id: WatchId) -> bool {
        self.watches.remove(&id).is_some()
    }

    pub fn len(&self) -> usize {
        self.watches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.watches.is_empty()
    }

    pub fn last_zxid(&self) -> Zxid {
        self.last_zxid
    }

    pub fn dropped_out_of_order(&self) -> u64 {
        self.dropped_out_of_order
    }

    /// Accepts an entry at `zxid` only if it does not go backwards.
    fn in_order(&mut self, zxid: Zxid) -> bool {
        if zxid < self.last_zxid {
            self.dropped_out_of_order += 1;
            return false;
        }
        self.last_zxid = zxid;
        true
    }

    /// The deliveries for one committed entry. The caller skips replayed notices (the cache's
    /// duplicate check) before calling this.
    pub fn on_notice(&mut self, notice: &UpdateNotice) -> Vec<Delivery> {
        if self.watches.is_empty() || !self.in_order(notice.zxid) {
            return Vec::new();
        }
        let zxid = notice.zxid;
        let mut out = Vec::new();
        for op in &notice.ops {
            match op {
                Op::Put { key, create_only: true, .. } | Op::Mkdir { key } => {
                    self.route(WatchEvent::Created { key: key.clone(), zxid }, &mut out);
                }
                Op::Put { key, .. } => {
                    self.route(WatchEvent::Changed { key: key.clone(), zxid }, &mut out)
                }
                Op::Delete { key, .. } => {
                    self.route(WatchEvent::Removed { key: key.clone(), zxid }, &mut out);
                    self.below(key, |k| WatchEvent::Removed { key: k, zxid }, &mut out);
                }
                Op::Rename { from, to } => {
                    self.route(WatchEvent::Removed { key: from.clone(), zxid }, &mut out);
                    self.below(from, |k| WatchEvent::Removed { key: k, zxid }, &mut out);
                    self.route(WatchEvent::Created { key: to.clone(), zxid }, &mut out);
                    self.below(to, |k| WatchEvent::Created { key: k, zxid }, &mut out);
                }
                Op::Lock(_) | Op::Session(_) => {}
            }
        }
        out
    }

    /// For path watches strictly below `dir` (whose subtree went away or arrived): the event
    /// for that path. Prefix watches get only the event for `dir` itself, which covers them.
    fn below(&self, dir: &str, make: impl Fn(String) -> WatchEvent, out: &mut Vec<Delivery>) {
        for watch in self.watches.values() {
            if let Target::Path(p) = &watch.target {
                let event = make(p.clone());
                let kind = event.kind().expect("data events have a kind");
                if p != dir
                    && key::is_within(p, dir)
                    && watch.kinds.contains(kind)
                    && event.zxid() > watch.after
                {
                    out.push((Arc::clone(&watch.callback), event));
                }
            }
        }
    }

    pub fn on_lock_changed(&mut self, change: &LockChanged) -> Vec<Delivery> {
        if self.watches.is_empty() || !self.in_order(change.zxid) {
            return Vec::new();
        }
        let mut out = Vec::new();
        let event = WatchEvent::LockChanged {
            lock: change.lock.clone(),
            zxid: change.zxid,
            holders: change.holders.clone(),
        };
        self.route(event, &mut out);
        out
    }

    fn route(&self, event: WatchEvent, out: &mut Vec<Delivery>) {
        let kind = event.kind().expect("data and lock events have a kind");
        for watch in self.watches.values() {
            if watch.kinds.contains(kind)
                && watch.target.matches(event.key())
                && event.zxid() > watch.after
            {
                out.push((Arc::clone(&watch.callback), event.clone()));
            }
        }
    }

    /// After a flush: every watch learns that events may have been missed.
    pub fn on_flush(&mut self) -> Vec<Delivery> {
        let event = WatchEvent::Missed { after: self.last_zxid };
        self.watches.values().map(|w| (Arc::clone(&w.callback), event.clone())).collect()
    }

    /// The path a watch was registered for (for diagnostics).
    pub fn target_of(&self, id: WatchId) -> Option<&str> {
        self.watches.get(&id).map(|w| w.target.path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::sync::Mutex;

    fn recorder() -> (Callback, Arc<Mutex<Vec<WatchEvent>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = Arc::clone(&seen);
        (Arc::new(move |e: &WatchEvent| s.lock().unwrap().push(e.clone())), seen)
    }

    fn deliver(ds: Vec<Delivery>) {
        for (cb, e) in ds {
            cb(&e);
        }
    }

    fn notice(c: u32, ops: Vec<Op>) -> UpdateNotice {
        UpdateNotice { zxid: Zxid::new(1, c), prev: Zxid::new(1, c.saturating_sub(1)), ops }
    }

    fn put(key: &str, create_only: bool) -> Op {
        Op::Put { key: key.into(), value: Bytes::new(), create_only, ephemeral: None }
    }

    /// Path and prefix watches get the kinds they asked for; a rename of a parent directory
    /// reaches a path watch below it.
    #[test]
    fn kinds_paths_and_prefixes() {
        let mut reg = WatchRegistry::new();
        let (cb_path, path_seen) = recorder();
        let (cb_dir, dir_seen) = recorder();
        reg.register(Target::Path("/a/x".into()), Kinds::DATA, cb_path).unwrap();
        reg.register(Target::Prefix("/a".into()), Kinds::of(&[EventKind::Created]), cb_dir)
            .unwrap();
        deliver(reg.on_notice(&notice(1, vec![put("/a/x", true)])));
        deliver(reg.on_notice(&notice(2, vec![put("/a/x", false), put("/b", false)])));
        deliver(reg.on_notice(&notice(3, vec![Op::Rename { from: "/a".into(), to: "/c".into() }])));
        let z = |c| Zxid::new(1, c);
        assert_eq!(
            *path_seen.lock().unwrap(),
            vec![
                WatchEvent::Created { key: "/a/x".into(), zxid: z(1) },
                WatchEvent::Changed { key: "/a/x".into(), zxid: z(2) },
                WatchEvent::Removed { key: "/a/x".into(), zxid: z(3) },
            ]
        );
        assert_eq!(
            *dir_seen.lock().unwrap(),
            vec![WatchEvent::Created { key: "/a/x".into(), zxid: z(1) }]
        );
    }

    /// An entry older than one delivered is dropped; a cleared watch gets nothing; a flush
    /// reaches every watch with Missed.
    #[test]
    fn order_clear_and_missed() {
        let mut reg = WatchRegistry::new();
        let (cb, seen) = recorder();
        let id = reg.register(Target::Prefix("/".into()), Kinds::ALL, cb).unwrap();
        deliver(reg.on_notice(&notice(5, vec![put("/k", false)])));
        deliver(reg.on_notice(&notice(4, vec![put("/k", false)])));
        assert_eq!(reg.dropped_out_of_order(), 1);
        deliver(reg.on_flush());
        assert_eq!(
            seen.lock().unwrap().last(),
            Some(&WatchEvent::Missed { after: Zxid::new(1, 5) })
        );
        assert!(reg.clear(id));
        deliver(reg.on_notice(&notice(6, vec![put("/k", false)])));
        assert_eq!(seen.lock().unwrap().len(), 2);
    }

    /// A watch registered after zxid Z is not told of entries at or below Z (a replay of the
    /// update stream's history is not news), and is told of every entry above it.
    #[test]
    fn watch_reports_only_entries_after_its_registration_point() {
        let mut reg = WatchRegistry::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let cb: Callback = Arc::new(move |e: &WatchEvent| sink.lock().unwrap().push(e.zxid()));
        reg.register_after(Target::Prefix("/a".into()), Kinds::ALL, Zxid::new(1, 5), cb).unwrap();
        for counter in [3, 5, 6, 7] {
            let notice = UpdateNotice {
                zxid: Zxid::new(1, counter),
                prev: Zxid::ZERO,
                ops: vec![Op::Put {
                    key: "/a/x".into(),
                    value: Bytes::from_static(b"v"),
                    create_only: false,
                    ephemeral: None,
                }],
            };
            for (callback, event) in reg.on_notice(&notice) {
                callback(&event);
            }
        }
        assert_eq!(*seen.lock().unwrap(), vec![Zxid::new(1, 6), Zxid::new(1, 7)]);
    }
}
