//! The client-side LRU cache, kept fresh by the multicast Update stream. IO-free: time is
//! passed in.
//!
//! # Why an entry can be trusted
//! Each entry holds what a node answered (the value, or "absent") and `as_of`, the zxid whose
//! state it shows. The cache tracks its `position`: the zxid of the last UpdateNotice it applied,
//! with the proof that it applied every notice between where its chain started and there. The
//! proof is the notice chain: every notice names `prev`, the zxid of the notice-producing entry
//! before it, computed by every replica from the committed log (so a new master continues the
//! old master's chain). A notice is applied only when its `prev` is the position; any other
//! notice above it means one was missed (lost, never sent by a master that crashed, or sent
//! before this receiver first heard the master), and the cache flushes. A reported gap flushes
//! too. An entry is inserted only when `as_of >= position`, so every later change to its key
//! arrives as a chained notice and is applied to it: the entry then shows the key's state at
//! `max(as_of, position)`, its *valid-through* zxid. A lookup with the client's floor F hits
//! only when valid-through >= F, so the cache never answers older than the client's floor.
//!
//! After a flush and at start the position is unknown. Entries inserted then (fills at or
//! above a *fill floor* C learned from the master, [`ClientCache::learn_position`], and the
//! client's own writes) are valid through their own `as_of` only. The first notice N starts
//! the chain only if `N.prev` is at or below the `as_of` of every such entry: then no change
//! committed between an entry's `as_of` and N went by unseen, and the position becomes N.
//! Otherwise the cache flushes and starts its chain at N, empty. So the fill floor is a hint
//! (where fills are likely to be proven), not a promise the cache relies on. Each flush bumps a
//! generation; a fill or write-through prepared under an older generation is refused, so a
//! reply that raced a flush cannot bring back what the flush dropped.

use bytes::Bytes;
use protocol::lru::ByteLru;
use protocol::message::data::{Op, UpdateNotice, Versioned};
use protocol::Zxid;
use std::time::{Duration, Instant};

/// Bookkeeping bytes charged per entry beside key and value.
pub const ENTRY_OVERHEAD_BYTES: usize = 96;

#[derive(Clone, Debug)]
pub struct CacheConfig {
    pub bytes_max: usize,
    pub entries_max: usize,
    /// An entry older than this is a miss, whatever the stream says (the design's maximum age:
    /// a bound on staleness should every other guard fail).
    pub age_max: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            bytes_max: 64 * 1024 * 1024,
            entries_max: 100_000,
            age_max: Duration::from_secs(60),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    /// `None`: the key was absent.
    value: Option<Versioned>,
    as_of: Zxid,
    inserted: Instant,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub expired: u64,
    pub refused_fills: u64,
    pub flushes: u64,
    pub notices: u64,
    /// Notices whose `prev` did not continue the cache's chain (each flushed).
    pub chain_breaks: u64,
}

/// A cache hit: the value (or absence) and the zxid the answer is valid through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hit {
    pub value: Option<Versioned>,
    pub as_of: Zxid,
}

/// What applying a notice did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoticeOutcome {
    Applied,
    /// At or below the highest notice seen: already applied, or from before a flush.
    Duplicate,
    /// Its `prev` is not the position (a notice was missed, whoever sent them), or with the
    /// position unknown it does not prove the entries cached since: the cache flushed, then
    /// started its chain at this notice.
    FlushedForBreak,
}

pub struct ClientCache {
    config: CacheConfig,
    entries: ByteLru<Entry>,
    position: Option<Zxid>,
    /// Fills at or above this are safe while the position is unknown (learned from the master).
    fill_floor: Option<Zxid>,
    /// The highest notice ever applied (not reset by a flush).
    highest_notice: Option<Zxid>,
    /// While the position is unknown: the lowest `as_of` of the entries inserted since the
    /// flush (or start). The first notice must chain from at or below it.
    unproven_min: Option<Zxid>,
    generation: u64,
    stats: CacheStats,
}

fn charge(key: &str, entry: &Entry) -> usize {
    key.len() + entry.value.as_ref().map_or(0, |v| v.value.len()) + ENTRY_OVERHEAD_BYTES
}

impl ClientCache {
    pub fn new(config: CacheConfig) -> ClientCache {
        ClientCache {
            entries: ByteLru::new(config.bytes_max, config.entries_max, charge),
            config,
            position: None,
            fill_floor: None,
            highest_notice: None,
            unproven_min: None,
            generation: 0,
            stats: CacheStats::default(),
        }
    }

    pub fn position(&self) -> Option<Zxid> {
        self.position
    }

    /// Whether a fill can be accepted at all (a position or a fill floor is known).
    pub fn can_fill(&self) -> bool {
        self.position.is_some() || self.fill_floor.is_some()
    }

    /// Bumped by every flush; pass it back to [`Self::fill`] and [`Self::apply_own`].
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.entries.bytes()
    }

    /// The cached answer for `key` if it is valid through at least `floor` and younger than
    /// the maximum age.
    pub fn lookup(&mut self, key: &str, floor: Zxid, now: Instant) -> Option<Hit> {
        let position = self.position.unwrap_or(Zxid::ZERO);
        let Some(entry) = self.entries.get(key) else {
            self.stats.misses += 1;
            return None;
        };
        if now.saturating_duration_since(entry.inserted) > self.config.age_max {
            self.stats.expired += 1;
            self.stats.misses += 1;
            self.entries.remove(key);
            return None;
        }
        let valid_through = entry.as_of.max(position);
        if valid_through < floor {
            self.stats.misses += 1;
            return None;
        }
        self.stats.hits += 1;
        Some(Hit { value: entry.value.clone(), as_of: entry.as_of })
    }

    /// Offers a node's answer for `key` at `as_of`, read while the cache was at `generation`.
    /// Refused (false) when the position is unknown or past `as_of`, after a flush, or when the
    /// entry alone exceeds the byte bound.
    pub fn fill(
        &mut self,
        key: &str,
        value: Option<Versioned>,
        as_of: Zxid,
        generation: u64,
        now: Instant,
    ) -> bool {
        let fresh = match (self.position, self.fill_floor) {
            (Some(position), _) => as_of >= position,
            (None, Some(floor)) => as_of >= floor,
            (None, None) => false,
        };
        if generation != self.generation || !fresh {
            self.stats.refused_fills += 1;
            return false;
        }
        self.insert(key, Entry { value, as_of, inserted: now })
    }

    /// Sets the fill floor learned from the master after a flush or at start (its linearizable
    /// zxid: entries committed above it will normally still arrive as notices). Only ever
    /// raises it; ignored when a flush happened since the master was asked (`generation`).
    /// Fills it admits are proven, or flushed, by the first notice (see the module docs).
    pub fn learn_position(&mut self, zxid: Zxid, generation: u64) {
        if generation == self.generation {
            self.fill_floor = Some(self.fill_floor.map_or(zxid, |f| f.max(zxid)));
        }
    }

    fn insert(&mut self, key: &str, entry: Entry) -> bool {
        if self.position.is_none() {
            self.unproven_min = Some(self.unproven_min.map_or(entry.as_of, |m| m.min(entry.as_of)));
        }
        let evicted = self.entries.insert(key, entry);
        self.stats.evictions += evicted.unwrap_or(0);
        evicted.is_some()
    }

    /// Applies the ops of entry `zxid` to the cached keys. With `create`, puts and deletes also
    /// make entries for keys not cached (the client's own writes); without, only cached keys
    /// change (notices must not fill the cache with everyone's writes).
    fn apply_ops(&mut self, ops: &[Op], zxid: Zxid, create: bool, now: Instant) {
        // A new entry must not predate the position: notices between its zxid and the position
        // have already gone by and would never reach it (the same rule as for fills).
        let create = create && self.position.is_none_or(|p| zxid >= p);
        for op in ops {
            match op {
                Op::Put { key, value, .. } => {
                    let stale = self.entries.peek(key).map(|e| e.as_of < zxid);
                    if stale == Some(true) || (stale.is_none() && create) {
                        let value = Some(Versioned { zxid, value: Bytes::clone(value) });
                        self.insert(key, Entry { value, as_of: zxid, inserted: now });
                    }
                }
                Op::Delete { key, .. } => {
                    self.entries.remove_within(key);
                    if create {
                        self.insert(key, Entry { value: None, as_of: zxid, inserted: now });
                    }
                }
                // A cached "absent" for a new directory would be wrong (a read of it is an
                // IsADirectory error, which is not cached).
                Op::Mkdir { key } => {
                    self.entries.remove(key);
                }
                Op::Rename { from, to } => {
                    self.entries.remove_within(from);
                    self.entries.remove_within(to);
                }
                Op::Lock(_) | Op::Session(_) => {}
            }
        }
    }

    /// Applies one committed entry from the Update stream.
    pub fn apply_notice(&mut self, notice: &UpdateNotice, now: Instant) -> NoticeOutcome {
        // The high-water mark survives flushes: an old notice replayed after a gap must not
        // become the position (notices between it and the gap are lost).
        if self.highest_notice.is_some_and(|h| notice.zxid <= h) {
            return NoticeOutcome::Duplicate;
        }
        let chained = match self.position {
            Some(position) => notice.prev == position,
            // Nothing committed between an unproven entry's `as_of` and this notice changed
            // data, so every entry shows its key as of this notice once its ops are applied.
            None => self.unproven_min.is_none_or(|lowest| notice.prev <= lowest),
        };
        let mut outcome = NoticeOutcome::Applied;
        if !chained {
            self.flush();
            self.stats.chain_breaks += 1;
            outcome = NoticeOutcome::FlushedForBreak;
        }
        self.stats.notices += 1;
        self.apply_ops(&notice.ops, notice.zxid, false, now);
        self.position = Some(notice.zxid);
        self.highest_notice = Some(notice.zxid);
        self.unproven_min = None;
        outcome
    }

    /// Applies this client's own acknowledged write at `zxid` (read-your-writes without a round
    /// trip), unless a flush happened since the write was sent (`generation`).
    pub fn apply_own(&mut self, ops: &[Op], zxid: Zxid, generation: u64, now: Instant) {
        if generation == self.generation {
            self.apply_ops(ops, zxid, true, now);
        }
    }

    /// Drops every entry; the position becomes unknown.
    pub fn flush(&mut self) {
        self.entries.clear();
        self.position = None;
        self.fill_floor = None;
        self.unproven_min = None;
        self.generation += 1;
        self.stats.flushes += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn z(c: u32) -> Zxid {
        Zxid::new(1, c)
    }

    fn v(c: u32, s: &str) -> Option<Versioned> {
        Some(Versioned { zxid: z(c), value: Bytes::from(s.to_string()) })
    }

    fn put(key: &str, s: &str) -> Op {
        Op::Put {
            key: key.into(),
            value: Bytes::from(s.to_string()),
            create_only: false,
            ephemeral: None,
        }
    }

    fn cache() -> ClientCache {
        ClientCache::new(CacheConfig::default())
    }

    /// The notice for entry 1:`c`, chained after 1:`prev`.
    fn n(c: u32, prev: u32, ops: Vec<Op>) -> UpdateNotice {
        UpdateNotice { zxid: z(c), prev: z(prev), ops }
    }

    /// Issue 15.1: the old master's notice for 1:10 is lost (or never sent) and the new master
    /// announces 1:11, whose `prev` is 1:10. The position must not move past 1:10 with /k still
    /// showing its value from before 1:10: the broken chain flushes.
    #[test]
    fn a_notice_that_does_not_chain_from_the_position_flushes() {
        let now = Instant::now();
        let mut c = cache();
        c.apply_notice(&n(9, 8, vec![]), now);
        assert!(c.fill("/k", v(5, "a"), z(9), 0, now));
        // 1:10 (put /k "b") is lost; 1:11 touches another key.
        c.apply_notice(&n(11, 10, vec![put("/j", "x")]), now);
        let hit = c.lookup("/k", z(11), now);
        assert!(
            hit.as_ref().is_none_or(|h| h.value == v(10, "b")),
            "served /k = {hit:?} for floor 1:11, but 1:10 changed it"
        );
        // The late 1:10 is a duplicate: the chain restarted at 1:11.
        assert_eq!(c.apply_notice(&n(10, 9, vec![put("/k", "b")]), now), NoticeOutcome::Duplicate);
        assert_eq!(c.position(), Some(z(11)));
    }

    /// Issue 15.3: the client learned the fill floor 1:5 and filled /k at 1:5, but its receiver
    /// first heard the master after losing 1:6 (no gap is reported for what came before it
    /// joined). The first notice, 1:7, chains from 1:6 > the floor: flush, not trust.
    #[test]
    fn the_first_notice_after_a_learned_floor_must_chain_from_at_or_below_the_fills() {
        let now = Instant::now();
        let mut c = cache();
        c.learn_position(z(5), 0);
        assert!(c.fill("/k", v(2, "a"), z(5), 0, now));
        c.apply_notice(&n(7, 6, vec![put("/j", "x")]), now);
        let hit = c.lookup("/k", z(7), now);
        assert!(hit.is_none(), "served /k = {hit:?} for floor 1:7, but 1:6 may have changed it");
        // A first notice that chains from at or below every fill proves them.
        let mut c = cache();
        c.learn_position(z(5), 0);
        assert!(c.fill("/k", v(2, "a"), z(5), 0, now));
        assert_eq!(c.apply_notice(&n(7, 4, vec![put("/j", "x")]), now), NoticeOutcome::Applied);
        assert_eq!(c.lookup("/k", z(7), now).map(|h| h.value), Some(v(2, "a")));
        assert_eq!(c.stats().flushes, 0);
    }

    /// A notice of a new epoch that chains from the position is continuous: no flush (the
    /// chain, not the epoch, decides).
    #[test]
    fn a_new_epoch_that_continues_the_chain_keeps_the_cache() {
        let now = Instant::now();
        let mut c = cache();
        c.apply_notice(&n(9, 8, vec![]), now);
        assert!(c.fill("/k", v(5, "a"), z(9), 0, now));
        let next = UpdateNotice { zxid: Zxid::new(2, 1), prev: z(9), ops: vec![] };
        assert_eq!(c.apply_notice(&next, now), NoticeOutcome::Applied);
        assert_eq!(c.lookup("/k", Zxid::new(2, 1), now).map(|h| h.value), Some(v(5, "a")));
    }

    /// Fills are refused while the position is unknown, and from snapshots older than it.
    #[test]
    fn fills_need_a_known_position_at_or_below_the_snapshot() {
        let now = Instant::now();
        let mut c = cache();
        assert!(!c.fill("/k", v(1, "a"), z(3), 0, now));
        c.learn_position(z(3), 0);
        assert!(!c.fill("/k", v(1, "a"), z(2), 0, now), "snapshot below position accepted");
        assert!(c.fill("/k", v(1, "a"), z(3), 0, now));
        assert_eq!(c.lookup("/k", z(3), now).unwrap().value, v(1, "a"));
    }

    /// A notice updates a cached key in place, and a floor above valid-through is a miss.
    #[test]
    fn notices_keep_entries_fresh_and_floor_is_respected() {
        let now = Instant::now();
        let mut c = cache();
        c.learn_position(z(1), 0);
        assert!(c.fill("/k", v(1, "a"), z(1), 0, now));
        assert!(c.lookup("/k", z(2), now).is_none(), "entry valid through 1 served floor 2");
        assert_eq!(c.apply_notice(&n(2, 1, vec![put("/k", "b")]), now), NoticeOutcome::Applied);
        assert_eq!(c.lookup("/k", z(2), now).unwrap().value, v(2, "b"));
        // A notice for another key moves the position, so /k stays valid through 3.
        c.apply_notice(&n(3, 2, vec![put("/j", "x")]), now);
        assert!(c.lookup("/k", z(3), now).is_some());
        assert!(c.lookup("/j", z(0), now).is_none(), "a notice filled an uncached key");
        assert_eq!(c.apply_notice(&n(3, 2, vec![]), now), NoticeOutcome::Duplicate);
    }

    /// A notice replayed after a flush is still a duplicate: it cannot become the position.
    #[test]
    fn replay_after_flush_is_not_a_position() {
        let now = Instant::now();
        let mut c = cache();
        c.apply_notice(&n(5, 4, vec![]), now);
        c.flush();
        let out = c.apply_notice(&n(4, 3, vec![]), now);
        assert_eq!(out, NoticeOutcome::Duplicate);
        assert_eq!(c.position(), None);
        c.apply_notice(&n(9, 8, vec![]), now);
        assert_eq!(c.position(), Some(z(9)));
    }

    /// A flush empties the cache, forgets the position, and refuses fills prepared before it.
    #[test]
    fn flush_refuses_older_generations() {
        let now = Instant::now();
        let mut c = cache();
        c.learn_position(z(1), 0);
        assert!(c.fill("/k", v(1, "a"), z(1), 0, now));
        c.flush();
        assert!(c.is_empty());
        assert_eq!(c.position(), None);
        c.learn_position(z(5), 0);
        assert!(!c.can_fill(), "a fill floor from before the flush accepted");
        c.learn_position(z(5), 1);
        assert!(!c.fill("/k", v(1, "a"), z(5), 0, now));
        assert!(c.fill("/k", v(1, "a"), z(5), 1, now));
        assert!(c.lookup("/k", z(6), now).is_none(), "a fill floor counted as a position");
        c.apply_own(&[put("/k", "b")], z(6), 0, now);
        assert_eq!(
            c.lookup("/k", z(5), now).unwrap().value,
            v(1, "a"),
            "stale write-through applied"
        );
    }

    /// Entries expire after the maximum age; a notice that breaks the chain flushes.
    #[test]
    fn max_age_and_epoch_change() {
        let t0 = Instant::now();
        let mut c = ClientCache::new(CacheConfig {
            age_max: Duration::from_secs(10),
            ..CacheConfig::default()
        });
        c.learn_position(z(1), 0);
        assert!(c.fill("/k", v(1, "a"), z(1), 0, t0));
        assert!(c.lookup("/k", z(1), t0 + Duration::from_secs(10)).is_some());
        assert!(c.lookup("/k", z(1), t0 + Duration::from_secs(11)).is_none());
        assert!(c.fill("/k", v(1, "a"), z(1), 0, t0));
        // The first notice chains from above the fill: the fill may be stale.
        let out =
            c.apply_notice(&UpdateNotice { zxid: Zxid::new(2, 1), prev: z(7), ops: vec![] }, t0);
        assert_eq!(out, NoticeOutcome::FlushedForBreak);
        assert!(c.is_empty());
        assert_eq!(c.position(), Some(Zxid::new(2, 1)));
    }

    /// The byte bound holds; the least recently used entry goes first; own deletes are cached
    /// as absent.
    #[test]
    fn bounded_by_bytes_and_own_writes() {
        let now = Instant::now();
        let per = 2 + 10 + ENTRY_OVERHEAD_BYTES;
        let mut c = ClientCache::new(CacheConfig { bytes_max: 2 * per, ..CacheConfig::default() });
        c.learn_position(z(1), 0);
        let ten = Some(Versioned { zxid: z(1), value: Bytes::from(vec![0u8; 10]) });
        assert!(c.fill("/a", ten.clone(), z(1), 0, now));
        assert!(c.fill("/b", ten.clone(), z(1), 0, now));
        c.lookup("/a", z(0), now);
        assert!(c.fill("/c", ten, z(1), 0, now));
        assert!(c.bytes() <= 2 * per);
        assert!(c.lookup("/b", z(0), now).is_none());
        c.apply_own(&[Op::Delete { key: "/a".into(), recursive: false }], z(2), 0, now);
        assert_eq!(c.lookup("/a", z(2), now).unwrap().value, None);
    }
}

#[cfg(test)]
mod model_tests {
    //! The cache against a model of the committed history: whatever the interleaving of
    //! notices, fills from nodes at any applied zxid, own writes, gaps, notices lost without a
    //! gap (a master change, a notice never sent, a receiver that joined late) and probes, a
    //! hit for floor F shows exactly the key's committed state at its valid-through zxid,
    //! which is at least F.

    use super::*;
    use proptest::prelude::*;

    const KEYS: [&str; 3] = ["/a", "/b", "/c"];
    /// A history entry on this key index changes no data (a lock or session op): no notice.
    const NO_DATA: usize = KEYS.len();

    #[derive(Clone, Debug)]
    enum Step {
        /// Deliver the next notice.
        Deliver,
        /// Lose the next `n` notices and report a gap.
        Gap(usize),
        /// Lose the next `n` notices silently: no gap is ever reported (the old master's last
        /// notices, or those sent before the receiver first heard the master).
        Lose(usize),
        /// A node at applied `at` (a fraction of the history) answers a read of a key.
        Fill(usize, u8),
        /// A read of a key with a floor (a fraction of the history).
        Lookup(usize, u8),
        /// The master's linearizable zxid arrives (the whole history is committed).
        Probe,
        /// The master's answer is the zxid before the next undelivered notice: true when sent,
        /// unless notices are then lost silently (the late-join race).
        ProbeNext,
        /// The client sends its own write: it will commit as an entry whose notice has not
        /// been delivered yet (so every later notice is still to come), chosen by a fraction.
        OwnSend(u8),
        /// The oldest own write sent is acknowledged (a gap may have happened in between).
        OwnAck,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => Just(Step::Deliver),
            1 => (1usize..4).prop_map(Step::Gap),
            1 => (1usize..4).prop_map(Step::Lose),
            3 => (0usize..3, any::<u8>()).prop_map(|(k, at)| Step::Fill(k, at)),
            4 => (0usize..3, any::<u8>()).prop_map(|(k, f)| Step::Lookup(k, f)),
            1 => Just(Step::Probe),
            1 => Just(Step::ProbeNext),
            2 => any::<u8>().prop_map(Step::OwnSend),
            2 => Just(Step::OwnAck),
        ]
    }

    /// One op per entry: Some(v) puts value v, None deletes; key `NO_DATA` changes no data.
    fn history() -> impl Strategy<Value = Vec<(usize, Option<u8>)>> {
        proptest::collection::vec((0usize..=NO_DATA, proptest::option::of(any::<u8>())), 1..40)
    }

    /// The state of `key` after entries 1..=upto: (value, zxid of the write that made it).
    fn state(history: &[(usize, Option<u8>)], key: usize, upto: usize) -> Option<(u8, Zxid)> {
        let mut out = None;
        for (i, (k, v)) in history.iter().enumerate().take(upto) {
            if *k == key {
                out = v.map(|v| (v, Zxid::new(1, i as u32 + 1)));
            }
        }
        out
    }

    /// The notice of entry `i` (0-based; its zxid is 1:i+1), chained after the previous entry
    /// that has one; `None` for an entry that changes no data.
    fn notice(history: &[(usize, Option<u8>)], i: usize) -> Option<UpdateNotice> {
        let (k, v) = history[i];
        if k == NO_DATA {
            return None;
        }
        let op = match v {
            Some(v) => Op::Put {
                key: KEYS[k].into(),
                value: Bytes::from(vec![v]),
                create_only: false,
                ephemeral: None,
            },
            None => Op::Delete { key: KEYS[k].into(), recursive: false },
        };
        let prev = (0..i)
            .rev()
            .find(|&j| history[j].0 != NO_DATA)
            .map_or(Zxid::ZERO, |j| Zxid::new(1, j as u32 + 1));
        Some(UpdateNotice { zxid: Zxid::new(1, i as u32 + 1), prev, ops: vec![op] })
    }

    proptest! {
        #[test]
        fn hits_show_the_committed_state_at_valid_through(
            history in history(),
            steps in proptest::collection::vec(step(), 1..120),
        ) {
            let now = Instant::now();
            let n = history.len();
            let mut cache = ClientCache::new(CacheConfig::default());
            // The client subscribed before any commit: fills at or above zero are safe.
            cache.learn_position(Zxid::new(1, 0), 0);
            // Index of the next entry whose notice is still to come.
            let mut next = 0usize;
            let mut sent = std::collections::VecDeque::new();
            for step in steps {
                match step {
                    Step::Deliver => {
                        while next < n {
                            next += 1;
                            if let Some(notice) = notice(&history, next - 1) {
                                cache.apply_notice(&notice, now);
                                break;
                            }
                        }
                    }
                    Step::Gap(lost) => {
                        next = (next + lost).min(n);
                        cache.flush();
                    }
                    Step::Lose(lost) => next = (next + lost).min(n),
                    Step::Fill(k, at) => {
                        let applied = at as usize * n / 255;
                        let value = state(&history, k, applied)
                            .map(|(v, z)| Versioned { zxid: z, value: Bytes::from(vec![v]) });
                        let g = cache.generation();
                        cache.fill(KEYS[k], value, Zxid::new(1, applied as u32), g, now);
                    }
                    Step::OwnSend(o) => {
                        let i = next + o as usize * (n - next) / 256;
                        if i < n && history[i].0 != NO_DATA {
                            sent.push_back((i, cache.generation()));
                        }
                    }
                    Step::OwnAck => {
                        if let Some((i, g)) = sent.pop_front() {
                            let own = notice(&history, i).expect("own writes change data");
                            cache.apply_own(&own.ops, own.zxid, g, now);
                        }
                    }
                    Step::Probe => {
                        let g = cache.generation();
                        cache.learn_position(Zxid::new(1, n as u32), g);
                    }
                    Step::ProbeNext => {
                        let g = cache.generation();
                        cache.learn_position(Zxid::new(1, next as u32), g);
                    }
                    Step::Lookup(k, f) => {
                        let floor = Zxid::new(1, (f as usize * n / 255) as u32);
                        let position = cache.position().unwrap_or(Zxid::ZERO);
                        if let Some(hit) = cache.lookup(KEYS[k], floor, now) {
                            let through = hit.as_of.max(position);
                            prop_assert!(through >= floor);
                            let expected = state(&history, k, through.counter() as usize);
                            let got = hit.value.map(|v| (v.value[0], v.zxid));
                            prop_assert_eq!(got, expected, "key {} through {}", KEYS[k], through);
                        }
                    }
                }
            }
        }
    }
}
