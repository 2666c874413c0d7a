//! [`HistoryWindow`]: the Update notices this node applied most recently, kept so that a watch
//! that was away (a restart of the watcher, a partition, a gap in the stream) can resume from
//! the last zxid it saw instead of starting over. IO-free.
//!
//! # Why notices, not the data log
//! The data log's retained entries are commands; what a command did (a write refused by its
//! conditions changes nothing, a session expiry deletes the keys the session owned then) depends
//! on the state it was applied to, which is gone for entries below the checkpoint. The notices
//! are what the entries did, computed once by the state machine on every replica, and they are
//! exactly what the live stream carried: events read from here equal the live ones by
//! construction ([`protocol::history::events_of`] on both sides).
//!
//! # The window
//! The notices form a chain (`prev` is the zxid of the notice before), and the window holds a
//! contiguous piece of it: every notice in (`base`, `last`]. A notice that does not continue
//! the chain (after a file-transfer install) restarts the window at it. The oldest notices go
//! first once the window holds more than `entries_max` notices or `bytes_max` bytes of ops;
//! `base` then rises to the last one dropped. A read after a zxid below `base` is
//! `Compacted { oldest: base }`. The window lives in memory: after a restart it starts at the
//! snapshot the node replays from (the notices of the replayed entries are recorded again).

use protocol::history::{event_bytes, events_of};
use protocol::limits::{HISTORY_EVENTS_MAX, HISTORY_PAGE_BYTES_MAX};
use protocol::message::data::{HistoryPage, Op, Scope, UpdateNotice};
use protocol::Zxid;
use std::collections::VecDeque;

/// Default: most notices a node keeps for history reads.
pub const HISTORY_ENTRIES_DEFAULT: usize = 100_000;
/// Default: most bytes of notices (keys and values) a node keeps for history reads.
pub const HISTORY_BYTES_DEFAULT: usize = 64 * 1024 * 1024;
/// Bookkeeping bytes charged per notice beside its keys and values.
pub const NOTICE_OVERHEAD_BYTES: usize = 64;

/// The bytes a notice is charged in the window.
pub fn notice_bytes(notice: &UpdateNotice) -> usize {
    let op_bytes = |op: &Op| match op {
        Op::Put { key, value, .. } => key.len() + value.len(),
        Op::Mkdir { key } | Op::Delete { key, .. } => key.len(),
        Op::Rename { from, to } => from.len() + to.len(),
        Op::Lock(_) | Op::Session(_) => 0,
    };
    NOTICE_OVERHEAD_BYTES + notice.ops.iter().map(op_bytes).sum::<usize>()
}

/// Why a history read has no page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HistoryError {
    /// The read starts below the window: `oldest` is the lowest zxid one may start after.
    Compacted { oldest: Zxid },
}

#[derive(Debug)]
pub struct HistoryWindow {
    notices: VecDeque<UpdateNotice>,
    bytes: usize,
    entries_max: usize,
    bytes_max: usize,
    /// Every notice above this is in the window (or not applied yet).
    base: Zxid,
    /// The last notice recorded (`base` while none is).
    last: Zxid,
}

impl HistoryWindow {
    /// An empty window whose chain starts after `base` (the last notice of the state the node
    /// starts from). `entries_max` 0 keeps nothing: every read below the last notice is
    /// compacted.
    pub fn new(base: Zxid, entries_max: usize, bytes_max: usize) -> HistoryWindow {
        HistoryWindow {
            notices: VecDeque::new(),
            bytes: 0,
            entries_max,
            bytes_max,
            base,
            last: base,
        }
    }

    /// The lowest zxid a read can start after.
    pub fn base(&self) -> Zxid {
        self.base
    }

    /// The last notice recorded.
    pub fn last(&self) -> Zxid {
        self.last
    }

    pub fn len(&self) -> usize {
        self.notices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.notices.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Forgets everything; the chain restarts after `base` (the node's state jumped).
    pub fn reset(&mut self, base: Zxid) {
        self.notices.clear();
        self.bytes = 0;
        self.base = base;
        self.last = base;
    }

    /// Records the next notice the node applied. A notice at or below the last one is ignored
    /// (a replay); one whose `prev` is not the last restarts the window at it.
    pub fn record(&mut self, notice: &UpdateNotice) {
        if notice.zxid <= self.last {
            return;
        }
        if notice.prev != self.last {
            self.reset(notice.prev);
        }
        self.bytes += notice_bytes(notice);
        self.notices.push_back(notice.clone());
        self.last = notice.zxid;
        while self.notices.len() > self.entries_max || self.bytes > self.bytes_max {
            let Some(old) = self.notices.pop_front() else { break };
            self.bytes -= notice_bytes(&old);
            self.base = old.zxid;
        }
    }

    /// The events under `scope` of the notices above `after`, from the oldest, stopping at a
    /// notice boundary once about `bytes_max` bytes (at most [`HISTORY_PAGE_BYTES_MAX`]) or
    /// [`HISTORY_EVENTS_MAX`] events are collected; at least one notice is looked at when
    /// there is one.
    pub fn page(
        &self,
        scope: &Scope,
        after: Zxid,
        values: bool,
        bytes_max: usize,
    ) -> Result<HistoryPage, HistoryError> {
        if after < self.base {
            return Err(HistoryError::Compacted { oldest: self.base });
        }
        let bytes_max = bytes_max.clamp(1, HISTORY_PAGE_BYTES_MAX);
        let start = self.notices.partition_point(|n| n.zxid <= after);
        let mut events = Vec::new();
        let mut bytes = 0;
        let mut through = after.max(self.last);
        let mut complete = true;
        for (looked, notice) in self.notices.iter().skip(start).enumerate() {
            let found = events_of(scope, notice.zxid, &notice.ops, values);
            let found_bytes: usize = found.iter().map(event_bytes).sum();
            let full =
                bytes + found_bytes > bytes_max || events.len() + found.len() > HISTORY_EVENTS_MAX;
            if looked > 0 && full {
                through = self.notices[start + looked - 1].zxid;
                complete = false;
                break;
            }
            bytes += found_bytes;
            events.extend(found);
        }
        Ok(HistoryPage { events, through, complete })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use protocol::message::data::{ChangeEvent, ChangeKind};

    fn z(c: u32) -> Zxid {
        Zxid::new(1, c)
    }

    fn notice(c: u32, prev: u32, key: &str) -> UpdateNotice {
        UpdateNotice {
            zxid: z(c),
            prev: z(prev),
            ops: vec![Op::Put {
                key: key.into(),
                value: Bytes::from(vec![b'v'; 100]),
                create_only: false,
                ephemeral: None,
            }],
        }
    }

    /// A window over notices 2, 4, 6 (chained) answers reads after any zxid at or above its
    /// base with the events in scope; a notice that breaks the chain restarts it.
    #[test]
    fn pages_cover_every_notice_above_the_start_and_a_break_restarts_the_window() {
        let mut w = HistoryWindow::new(z(0), 10, 1 << 20);
        w.record(&notice(2, 0, "/a/x"));
        w.record(&notice(4, 2, "/b"));
        w.record(&notice(6, 4, "/a/y"));
        w.record(&notice(4, 2, "/b")); // a replay: ignored
        let scope = Scope::Prefix("/a".into());
        let page = w.page(&scope, z(0), false, 1 << 20).unwrap();
        let keys: Vec<(Zxid, &str)> = page.events.iter().map(|e| (e.zxid, &e.key[..])).collect();
        assert_eq!(keys, vec![(z(2), "/a/x"), (z(6), "/a/y")]);
        assert_eq!((page.through, page.complete), (z(6), true));
        let page = w.page(&scope, z(3), false, 1 << 20).unwrap();
        assert_eq!(page.events.len(), 1);
        let page = w.page(&scope, z(9), false, 1 << 20).unwrap();
        assert!(page.events.is_empty());
        assert_eq!((page.through, page.complete), (z(9), true));
        w.record(&notice(20, 15, "/a/z"));
        assert_eq!(w.base(), z(15));
        assert_eq!(
            w.page(&scope, z(6), false, 1 << 20),
            Err(HistoryError::Compacted { oldest: z(15) })
        );
    }

    /// Past its entry or byte bound the window drops its oldest notices and reads below them
    /// are compacted, naming the oldest zxid one can resume from.
    #[test]
    fn the_window_is_bounded_in_entries_and_bytes() {
        let mut w = HistoryWindow::new(z(0), 3, 1 << 20);
        for c in 1..=5 {
            w.record(&notice(c, c - 1, "/k"));
        }
        assert_eq!((w.len(), w.base()), (3, z(2)));
        let scope = Scope::Path("/k".into());
        assert_eq!(
            w.page(&scope, z(1), false, 1 << 20),
            Err(HistoryError::Compacted { oldest: z(2) })
        );
        assert_eq!(w.page(&scope, z(2), false, 1 << 20).unwrap().events.len(), 3);
        let one = notice_bytes(&notice(1, 0, "/k"));
        let mut w = HistoryWindow::new(z(0), 100, 2 * one);
        for c in 1..=5 {
            w.record(&notice(c, c - 1, "/k"));
        }
        assert_eq!((w.len(), w.base(), w.bytes()), (2, z(3), 2 * one));
    }

    /// Pages stop at a notice boundary once the byte bound is reached, always hold at least
    /// one notice, and chained pages give every event once, in order, with values when asked.
    #[test]
    fn paging_by_bytes_gives_every_event_once() {
        let mut w = HistoryWindow::new(z(0), 100, 1 << 20);
        for c in 1..=10 {
            w.record(&notice(c, c - 1, "/k"));
        }
        let scope = Scope::Path("/k".into());
        let mut after = z(0);
        let mut seen: Vec<ChangeEvent> = Vec::new();
        let mut pages = 0;
        loop {
            let page = w.page(&scope, after, true, 300).unwrap();
            pages += 1;
            assert!(!page.events.is_empty() || page.complete);
            assert!(page.events.len() <= 2, "a page went past its byte bound");
            seen.extend(page.events);
            after = page.through;
            if page.complete {
                break;
            }
            assert!(pages < 20);
        }
        assert_eq!(pages, 5);
        let zxids: Vec<Zxid> = seen.iter().map(|e| e.zxid).collect();
        assert_eq!(zxids, (1..=10).map(z).collect::<Vec<_>>());
        assert!(seen.iter().all(|e| e.kind == ChangeKind::Changed && e.value.is_some()));
        // A bound smaller than one notice still makes progress.
        let page = w.page(&scope, z(0), false, 1).unwrap();
        assert_eq!((page.events.len(), page.through, page.complete), (1, z(1), false));
    }
}
