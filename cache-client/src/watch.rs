//! Watches: callbacks registered per path or per prefix (a directory and everything below it),
//! driven by the Update stream and LockChanged, and caught up from the nodes' history window
//! when the stream cannot be trusted. IO-free: [`WatchRegistry`] turns each notice and each
//! history page into the events to deliver; the client invokes the callbacks and fetches the
//! pages ([`WatchRegistry::next_catch_up`]).
//!
//! # Event kinds
//! The data events are [`protocol::history::events_of`], the one definition that a node's
//! history reads share, so an event is the same live and from history:
//! - `Created`: a key made by `create` (a create-only put) or `mkdir`, or the target of a rename;
//!   for a watch strictly below a renamed directory's target, its own path.
//! - `Changed`: a value written by a plain put (the stream does not say whether the key existed
//!   before, so an overwrite and a first plain write both count as changes).
//! - `Removed`: a key deleted, or the source of a rename; for a watch (path, or prefix) strictly
//!   below a deleted or renamed directory, its own path.
//! - `LockChanged`: a lock changed hands; the lock name is matched like a path.
//! - `Compacted`: the watch had to catch up from history, and the nodes no longer hold the
//!   events after `after` up to `oldest`: re-read what the watch covers; the watch carries on
//!   with the events after `oldest`.
//! - `Missed`: events may have been lost and history could not replace them: lock changes lost
//!   in a gap of the stream (they are not in history), or no node answered the history reads.
//!
//! # Every event once, in zxid order
//! Each watch keeps `seen`, the zxid up to which it has accounted for every entry. The registry
//! follows the notice chain of the stream (`UpdateNotice::prev`): a notice whose `prev` is the
//! last one followed continues it; a notice at or below it is a replay and is skipped; any other
//! notice (or a reported gap, or a watch registered behind the stream) means entries went by
//! unseen, and the watches concerned switch to *catching up*: they take no live events while
//! the client reads history pages after their `seen` (each page covers every entry up to its
//! `through`), and go live again once a complete page reaches the stream's position. Live events
//! at or below `seen` are skipped; so nothing is delivered twice and, since the stream after
//! that position is chained, nothing is skipped. A watch started `from` a zxid begins there.

use protocol::history::events_of;
use protocol::key;
use protocol::message::data::{ChangeEvent, ChangeKind, HistoryPage, Scope, UpdateNotice};
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

    pub fn path(&self) -> &str {
        match self {
            Target::Path(p) | Target::Prefix(p) => p,
        }
    }

    /// The same target as the wire names it in a history read.
    pub fn scope(&self) -> Scope {
        match self {
            Target::Path(p) => Scope::Path(p.clone()),
            Target::Prefix(p) => Scope::Prefix(p.clone()),
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
    /// Events after `after` may have been lost, and history could not replace them (see the
    /// module docs).
    Missed {
        after: Zxid,
    },
    /// History was compacted: the events after `after` up to `oldest` are gone. Re-read what
    /// the watch covers; the watch goes on with the events after `oldest`.
    Compacted {
        after: Zxid,
        oldest: Zxid,
    },
}

impl WatchEvent {
    pub fn kind(&self) -> Option<EventKind> {
        match self {
            WatchEvent::Created { .. } => Some(EventKind::Created),
            WatchEvent::Removed { .. } => Some(EventKind::Removed),
            WatchEvent::Changed { .. } => Some(EventKind::Changed),
            WatchEvent::LockChanged { .. } => Some(EventKind::LockChanged),
            WatchEvent::Missed { .. } | WatchEvent::Compacted { .. } => None,
        }
    }

    pub fn zxid(&self) -> Zxid {
        match self {
            WatchEvent::Created { zxid, .. }
            | WatchEvent::Removed { zxid, .. }
            | WatchEvent::Changed { zxid, .. }
            | WatchEvent::LockChanged { zxid, .. } => *zxid,
            WatchEvent::Missed { after } => *after,
            WatchEvent::Compacted { oldest, .. } => *oldest,
        }
    }
}

/// A callback invoked for each event of its watch, in zxid order.
pub type Callback = Arc<dyn Fn(&WatchEvent) + Send + Sync>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WatchId(pub u64);

struct Watch {
    target: Target,
    kinds: Kinds,
    callback: Callback,
    /// Every entry up to here is accounted for: events at or below it are not delivered.
    seen: Zxid,
    /// Taking no live events until history brings `seen` up to the stream's position.
    catching_up: bool,
    /// Where the watch started: lock changes above it are news (they are not in history).
    from: Zxid,
    /// `seen` is a real position. A watch registered "from now" before the first notice is
    /// not: the first notice anchors it at the entry before it.
    anchored: bool,
}

/// One history read the client should make for a catching-up watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatchUp {
    pub id: WatchId,
    pub scope: Scope,
    /// Read the events after this zxid (the watch's `seen`).
    pub after: Zxid,
    /// Ask a node that has applied at least this (the stream's position).
    pub floor: Zxid,
}

/// Watches, and the position of the Update stream they follow.
#[derive(Default)]
pub struct WatchRegistry {
    watches: BTreeMap<WatchId, Watch>,
    next_id: u64,
    /// The last notice of the stream followed without a break (`None`: at start, or after a
    /// reported gap until the next notice).
    chain: Option<Zxid>,
    /// The highest zxid of a live event (lock changes older than it are dropped).
    last_zxid: Zxid,
    dropped_out_of_order: u64,
    replays_skipped: u64,
    catch_ups_started: u64,
}

/// An event and the callback it goes to.
pub type Delivery = (Callback, WatchEvent);

impl WatchRegistry {
    pub fn new() -> WatchRegistry {
        WatchRegistry::default()
    }

    /// Registers a watch for every matching event from now on: from the stream's position, or,
    /// before the first notice, from the entry before it. `None` when [`WATCHES_MAX`] are
    /// already registered.
    pub fn register(
        &mut self,
        target: Target,
        kinds: Kinds,
        callback: Callback,
    ) -> Option<WatchId> {
        let seen = self.chain.unwrap_or(Zxid::ZERO);
        self.insert(Watch {
            target,
            kinds,
            callback,
            seen,
            catching_up: false,
            anchored: self.chain.is_some(),
            from: seen,
        })
    }

    /// Registers a watch that receives the events of every entry above `after`: from history
    /// for the entries the stream has passed (or may have: before the first notice, history
    /// is asked at once), live after that.
    pub fn register_after(
        &mut self,
        target: Target,
        kinds: Kinds,
        after: Zxid,
        callback: Callback,
    ) -> Option<WatchId> {
        let catching_up = self.chain.is_none_or(|c| after < c);
        self.insert(Watch {
            target,
            kinds,
            callback,
            seen: after,
            catching_up,
            anchored: true,
            from: after,
        })
    }

    fn insert(&mut self, watch: Watch) -> Option<WatchId> {
        if self.watches.len() >= WATCHES_MAX {
            return None;
        }
        self.next_id += 1;
        let id = WatchId(self.next_id);
        self.catch_ups_started += u64::from(watch.catching_up);
        self.watches.insert(id, watch);
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

    /// The highest zxid of a live event.
    pub fn last_zxid(&self) -> Zxid {
        self.last_zxid
    }

    /// The stream position followed (see the module docs).
    pub fn chain(&self) -> Option<Zxid> {
        self.chain
    }

    /// Lock changes dropped for arriving after a later entry.
    pub fn dropped_out_of_order(&self) -> u64 {
        self.dropped_out_of_order
    }

    /// Notices at or below the stream position (replays), skipped.
    pub fn replays_skipped(&self) -> u64 {
        self.replays_skipped
    }

    /// How many times a watch switched to catching up from history.
    pub fn catch_ups_started(&self) -> u64 {
        self.catch_ups_started
    }

    /// The zxid up to which watch `id` has accounted for every entry.
    pub fn seen(&self, id: WatchId) -> Option<Zxid> {
        self.watches.get(&id).map(|w| w.seen)
    }

    /// Whether watch `id` is catching up from history.
    pub fn is_catching_up(&self, id: WatchId) -> bool {
        self.watches.get(&id).is_some_and(|w| w.catching_up)
    }

    fn start_catch_up(watch: &mut Watch, count: &mut u64) {
        if !watch.catching_up {
            watch.catching_up = true;
            *count += 1;
        }
    }

    /// The deliveries for one notice of the stream (replays are skipped here).
    pub fn on_notice(&mut self, notice: &UpdateNotice) -> Vec<Delivery> {
        if self.chain.is_some_and(|c| notice.zxid <= c) {
            self.replays_skipped += 1;
            return Vec::new();
        }
        for watch in self.watches.values_mut() {
            if !watch.anchored {
                watch.seen = watch.seen.max(notice.prev);
                watch.from = watch.seen;
                watch.anchored = true;
            }
            // With the chain broken (or not yet started), entries between the watch's position
            // and this notice went by unseen.
            if self.chain != Some(notice.prev) && watch.seen < notice.prev {
                Self::start_catch_up(watch, &mut self.catch_ups_started);
            }
        }
        self.chain = Some(notice.zxid);
        self.last_zxid = self.last_zxid.max(notice.zxid);
        let mut out = Vec::new();
        for watch in self.watches.values_mut() {
            if watch.catching_up || watch.seen >= notice.zxid {
                continue;
            }
            let scope = watch.target.scope();
            for event in events_of(&scope, notice.zxid, &notice.ops, false) {
                if watch.kinds.contains(kind_of(event.kind)) {
                    out.push((Arc::clone(&watch.callback), data_event(event)));
                }
            }
            watch.seen = notice.zxid;
        }
        out
    }

    /// The stream reported a gap it could not repair: data watches catch up from history (the
    /// next notice may chain, or not: history tells); lock watches learn they may have missed
    /// lock changes, which history does not hold.
    pub fn on_gap(&mut self) -> Vec<Delivery> {
        let mut out = Vec::new();
        for watch in self.watches.values_mut() {
            if watch.kinds.contains(EventKind::LockChanged) {
                let event = WatchEvent::Missed { after: self.last_zxid };
                out.push((Arc::clone(&watch.callback), event));
            }
            if watch.anchored && watch.kinds.0 & Kinds::DATA.0 != 0 {
                Self::start_catch_up(watch, &mut self.catch_ups_started);
            }
        }
        out
    }

    /// The next history read to make, if a watch is catching up (the lowest watch id first).
    pub fn next_catch_up(&self) -> Option<CatchUp> {
        let (id, watch) = self.watches.iter().find(|(_, w)| w.catching_up)?;
        let floor = self.chain.unwrap_or(Zxid::ZERO);
        Some(CatchUp { id: *id, scope: watch.target.scope(), after: watch.seen, floor })
    }

    /// Whether some watch is catching up.
    pub fn wants_catch_up(&self) -> bool {
        self.watches.values().any(|w| w.catching_up)
    }

    /// The watch of `job`, if it is still waiting for exactly that read.
    fn job_watch(&mut self, job: &CatchUp) -> Option<&mut Watch> {
        self.watches.get_mut(&job.id).filter(|w| w.catching_up && w.seen == job.after)
    }

    /// A page answered `job`: its events go to the watch, which goes live once a complete
    /// page reaches the stream position.
    pub fn on_history_page(&mut self, job: &CatchUp, page: HistoryPage) -> Vec<Delivery> {
        let chain = self.chain;
        let Some(watch) = self.job_watch(job) else { return Vec::new() };
        let mut out = Vec::new();
        for event in page.events {
            if event.zxid > watch.seen && watch.kinds.contains(kind_of(event.kind)) {
                out.push((Arc::clone(&watch.callback), data_event(event)));
            }
        }
        watch.seen = watch.seen.max(page.through);
        if page.complete && chain.is_none_or(|c| c <= watch.seen) {
            watch.catching_up = false;
        }
        out
    }

    /// History no longer holds the events after `job.after`: the watch is told, and carries on
    /// from `oldest`.
    pub fn on_history_compacted(&mut self, job: &CatchUp, oldest: Zxid) -> Vec<Delivery> {
        let Some(watch) = self.job_watch(job) else { return Vec::new() };
        let event = WatchEvent::Compacted { after: watch.seen, oldest };
        watch.seen = watch.seen.max(oldest);
        vec![(Arc::clone(&watch.callback), event)]
    }

    /// No node answered the history reads for `job`: the watch gets `Missed` and goes live at
    /// the stream position.
    pub fn on_history_failed(&mut self, job: &CatchUp) -> Vec<Delivery> {
        let chain = self.chain;
        let Some(watch) = self.job_watch(job) else { return Vec::new() };
        let event = WatchEvent::Missed { after: watch.seen };
        if let Some(c) = chain {
            watch.seen = watch.seen.max(c);
        }
        watch.catching_up = false;
        vec![(Arc::clone(&watch.callback), event)]
    }

    pub fn on_lock_changed(&mut self, change: &LockChanged) -> Vec<Delivery> {
        if self.watches.is_empty() {
            return Vec::new();
        }
        if change.zxid < self.last_zxid {
            self.dropped_out_of_order += 1;
            return Vec::new();
        }
        self.last_zxid = change.zxid;
        let mut out = Vec::new();
        let event = WatchEvent::LockChanged {
            lock: change.lock.clone(),
            zxid: change.zxid,
            holders: change.holders.clone(),
        };
        for watch in self.watches.values() {
            if watch.kinds.contains(EventKind::LockChanged)
                && watch.target.matches(&change.lock)
                && change.zxid > watch.from
            {
                out.push((Arc::clone(&watch.callback), event.clone()));
            }
        }
        out
    }

    /// The path a watch was registered for (for diagnostics).
    pub fn target_of(&self, id: WatchId) -> Option<&str> {
        self.watches.get(&id).map(|w| w.target.path())
    }
}

fn kind_of(kind: ChangeKind) -> EventKind {
    match kind {
        ChangeKind::Created => EventKind::Created,
        ChangeKind::Changed => EventKind::Changed,
        ChangeKind::Removed => EventKind::Removed,
    }
}

fn data_event(event: ChangeEvent) -> WatchEvent {
    let ChangeEvent { zxid, kind, key, .. } = event;
    match kind {
        ChangeKind::Created => WatchEvent::Created { key, zxid },
        ChangeKind::Changed => WatchEvent::Changed { key, zxid },
        ChangeKind::Removed => WatchEvent::Removed { key, zxid },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use protocol::message::data::Op;
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

    fn z(c: u32) -> Zxid {
        Zxid::new(1, c)
    }

    fn notice(c: u32, ops: Vec<Op>) -> UpdateNotice {
        UpdateNotice { zxid: z(c), prev: z(c.saturating_sub(1)), ops }
    }

    fn put(key: &str, create_only: bool) -> Op {
        Op::Put { key: key.into(), value: Bytes::new(), create_only, ephemeral: None }
    }

    fn changed(key: &str, c: u32) -> WatchEvent {
        WatchEvent::Changed { key: key.into(), zxid: z(c) }
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
        assert_eq!(
            *path_seen.lock().unwrap(),
            vec![
                WatchEvent::Created { key: "/a/x".into(), zxid: z(1) },
                changed("/a/x", 2),
                WatchEvent::Removed { key: "/a/x".into(), zxid: z(3) },
            ]
        );
        assert_eq!(
            *dir_seen.lock().unwrap(),
            vec![WatchEvent::Created { key: "/a/x".into(), zxid: z(1) }]
        );
        assert!(!reg.wants_catch_up(), "a chained stream needs no history");
    }

    /// A replayed notice is skipped; a cleared watch gets nothing; a reported gap makes data
    /// watches catch up from history, and lock watches learn they may have missed changes.
    #[test]
    fn replays_clear_and_gaps() {
        let mut reg = WatchRegistry::new();
        let (cb, seen) = recorder();
        let (cb_data, data_seen) = recorder();
        let id = reg.register(Target::Prefix("/".into()), Kinds::ALL, cb).unwrap();
        let data = reg.register(Target::Prefix("/".into()), Kinds::DATA, cb_data).unwrap();
        deliver(reg.on_notice(&notice(5, vec![put("/k", false)])));
        deliver(reg.on_notice(&notice(4, vec![put("/k", false)])));
        assert_eq!(reg.replays_skipped(), 1);
        deliver(reg.on_gap());
        assert_eq!(seen.lock().unwrap().last(), Some(&WatchEvent::Missed { after: z(5) }));
        assert_eq!(data_seen.lock().unwrap().len(), 1, "a data watch got Missed");
        assert!(reg.is_catching_up(data));
        assert!(reg.clear(id));
        deliver(reg.on_notice(&notice(6, vec![put("/k", false)])));
        assert_eq!(seen.lock().unwrap().len(), 2);
        assert_eq!(data_seen.lock().unwrap().len(), 1, "a catching-up watch took a live event");
    }

    /// A watch registered after zxid Z is not told of entries at or below Z (a replay of the
    /// update stream's history is not news), and is told of every entry above it.
    #[test]
    fn watch_reports_only_entries_after_its_registration_point() {
        let mut reg = WatchRegistry::new();
        // The stream is already at 1:2: a watch from 1:5 is ahead of it and needs no history.
        deliver(reg.on_notice(&notice(2, vec![])));
        let (cb, seen) = recorder();
        reg.register_after(Target::Prefix("/a".into()), Kinds::ALL, z(5), cb).unwrap();
        assert!(!reg.wants_catch_up());
        for c in [3, 4, 5, 6, 7] {
            deliver(reg.on_notice(&notice(c, vec![put("/a/x", false)])));
        }
        let zxids: Vec<Zxid> = seen.lock().unwrap().iter().map(|e| e.zxid()).collect();
        assert_eq!(zxids, vec![z(6), z(7)]);
    }

    /// Issue 18.1: a notice lost between 1:2 and 1:4 used to cost the watch its events (the
    /// client flushed and said `Missed`). The watch now catches up from history: it takes no
    /// live event until a complete page reaches the stream's position, and then every event
    /// once, in zxid order, live events at or below the page's end skipped.
    #[test]
    fn a_broken_chain_is_repaired_from_history_once_and_in_order() {
        let mut reg = WatchRegistry::new();
        let (cb, seen) = recorder();
        let id = reg.register(Target::Path("/k".into()), Kinds::DATA, cb).unwrap();
        deliver(reg.on_notice(&notice(1, vec![put("/k", false)])));
        deliver(reg.on_notice(&notice(2, vec![put("/k", false)])));
        // 1:3 is lost; 1:4 arrives with prev 1:3.
        deliver(reg.on_notice(&notice(4, vec![put("/k", false)])));
        assert!(reg.is_catching_up(id));
        deliver(reg.on_notice(&notice(5, vec![put("/k", false)])));
        let job = reg.next_catch_up().unwrap();
        assert_eq!((job.after, job.floor), (z(2), z(5)));
        // The first page stops at 1:3; the second reaches 1:6 (beyond the stream).
        let event = |c| ChangeEvent {
            zxid: z(c),
            kind: ChangeKind::Changed,
            key: "/k".into(),
            value: None,
        };
        let page = HistoryPage { events: vec![event(3)], through: z(3), complete: false };
        deliver(reg.on_history_page(&job, page.clone()));
        assert!(reg.on_history_page(&job, page).is_empty(), "a stale job was applied twice");
        let job = reg.next_catch_up().unwrap();
        assert_eq!(job.after, z(3));
        let page = HistoryPage {
            events: vec![event(4), event(5), event(6)],
            through: z(6),
            complete: true,
        };
        deliver(reg.on_history_page(&job, page));
        assert!(!reg.is_catching_up(id));
        deliver(reg.on_notice(&notice(6, vec![put("/k", false)])));
        deliver(reg.on_notice(&notice(7, vec![put("/k", false)])));
        let got: Vec<WatchEvent> = seen.lock().unwrap().clone();
        assert_eq!(got, (1..=7).map(|c| changed("/k", c)).collect::<Vec<_>>());
    }

    /// A complete page short of the stream's position does not end the catch-up; a compacted
    /// history tells the watch the oldest zxid it can resume from, and the watch carries on
    /// after it; history that cannot be read ends in `Missed` at the stream's position.
    #[test]
    fn compacted_and_failed_catch_ups() {
        let mut reg = WatchRegistry::new();
        deliver(reg.on_notice(&notice(9, vec![])));
        let (cb, seen) = recorder();
        let id = reg.register_after(Target::Prefix("/".into()), Kinds::ALL, z(1), cb).unwrap();
        let job = reg.next_catch_up().unwrap();
        deliver(reg.on_history_compacted(&job, z(4)));
        assert_eq!(seen.lock().unwrap()[0], WatchEvent::Compacted { after: z(1), oldest: z(4) });
        let job = reg.next_catch_up().unwrap();
        assert_eq!(job.after, z(4));
        let short = HistoryPage { events: vec![], through: z(8), complete: true };
        deliver(reg.on_history_page(&job, short));
        assert!(reg.is_catching_up(id), "went live short of the stream");
        let job = reg.next_catch_up().unwrap();
        deliver(reg.on_history_failed(&job));
        assert_eq!(seen.lock().unwrap()[1], WatchEvent::Missed { after: z(8) });
        assert!(!reg.is_catching_up(id));
        assert_eq!(reg.seen(id), Some(z(9)));
    }

    /// A watch "from now" registered before any notice is anchored by the first one: it needs
    /// no history for what came before it; one from a zxid reads history at once.
    #[test]
    fn watches_before_the_first_notice() {
        let mut reg = WatchRegistry::new();
        let (cb, seen) = recorder();
        let now = reg.register(Target::Path("/k".into()), Kinds::DATA, cb).unwrap();
        let (cb, _) = recorder();
        let from = reg.register_after(Target::Path("/k".into()), Kinds::DATA, z(1), cb).unwrap();
        assert!(!reg.is_catching_up(now));
        assert!(reg.is_catching_up(from));
        deliver(reg.on_notice(&UpdateNotice {
            zxid: z(8),
            prev: z(7),
            ops: vec![put("/k", false)],
        }));
        assert!(!reg.is_catching_up(now));
        assert_eq!(*seen.lock().unwrap(), vec![changed("/k", 8)]);
    }
}
