//! The server-side LRU of hot values, in front of the data files. IO-free.
//!
//! It is kept exact, not merely fresh-ish: it follows the entries the node applies (through
//! [`ValueCache::on_applied`], in zxid order) and remembers the zxid of the last one, its
//! `position`. A value read from the backend may be inserted only if the read's snapshot zxid
//! equals `position`: otherwise an entry applied between the read and the insert could have
//! changed the key and the cache would keep the older value. A lookup is answered only when
//! `position` equals what the backend has applied (the caller checks), so a cached value is
//! exactly what a backend read would return at that zxid.
//!
//! Bounded by bytes (key plus value) and by entry count; an entry larger than the byte bound is
//! not cached.

use bytes::Bytes;
use protocol::lru::ByteLru;
use protocol::message::data::{Op, UpdateNotice, Versioned};
use protocol::Zxid;

/// Bookkeeping bytes charged per entry beside key and value (map slot, zxid, lengths).
pub const ENTRY_OVERHEAD_BYTES: usize = 64;

/// Hit, miss and eviction counters for status and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub refused_fills: u64,
}

pub struct ValueCache {
    entries: ByteLru<Versioned>,
    position: Zxid,
    stats: CacheStats,
}

fn charge(key: &str, value: &Versioned) -> usize {
    key.len() + value.value.len() + ENTRY_OVERHEAD_BYTES
}

impl ValueCache {
    /// `position` is the backend's applied zxid when the cache starts following it.
    pub fn new(bytes_max: usize, entries_max: usize, position: Zxid) -> ValueCache {
        ValueCache {
            entries: ByteLru::new(bytes_max, entries_max, charge),
            position,
            stats: CacheStats::default(),
        }
    }

    pub fn position(&self) -> Zxid {
        self.position
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

    /// The cached value of `key`, if any (refreshing its recency).
    pub fn get(&mut self, key: &str) -> Option<Versioned> {
        match self.entries.get(key) {
            Some(v) => {
                self.stats.hits += 1;
                Some(v.clone())
            }
            None => {
                self.stats.misses += 1;
                None
            }
        }
    }

    /// Offers a value read from the backend at snapshot `applied`. Refused (returns false) when
    /// the cache has moved past that snapshot, or the value alone exceeds the byte bound.
    pub fn fill(&mut self, key: &str, value: Versioned, applied: Zxid) -> bool {
        if applied != self.position {
            self.stats.refused_fills += 1;
            return false;
        }
        self.insert(key, value)
    }

    fn insert(&mut self, key: &str, value: Versioned) -> bool {
        let evicted = self.entries.insert(key, value);
        self.stats.evictions += evicted.unwrap_or(0);
        evicted.is_some()
    }

    /// Follows one applied entry: puts update hot keys in place (only keys already cached, so a
    /// write burst does not evict the read set), deletes and renames drop what they touch.
    /// Entries must come in zxid order; one at or below the position is ignored.
    pub fn on_applied(&mut self, notice: &UpdateNotice) {
        if notice.zxid <= self.position {
            return;
        }
        for op in &notice.ops {
            match op {
                Op::Put { key, value, .. } => {
                    if self.entries.contains(key) {
                        let v = Versioned { zxid: notice.zxid, value: Bytes::clone(value) };
                        self.insert(key, v);
                    }
                }
                Op::Delete { key, .. } => self.entries.remove_within(key),
                Op::Rename { from, to } => {
                    self.entries.remove_within(from);
                    self.entries.remove_within(to);
                }
                Op::Mkdir { .. } | Op::Lock(_) | Op::Session(_) => {}
            }
        }
        self.position = notice.zxid;
    }

    /// Drops everything and restarts at `position` (after a file-transfer install or any jump
    /// of the backend's state that did not come through [`Self::on_applied`]).
    pub fn flush(&mut self, position: Zxid) {
        self.entries.clear();
        self.position = position;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(zxid: u32, len: usize) -> Versioned {
        Versioned { zxid: Zxid::new(1, zxid), value: Bytes::from(vec![7u8; len]) }
    }

    /// The byte bound holds after every insert, evicting least recently used entries first.
    #[test]
    fn bounded_by_bytes_lru_first() {
        let mut cache = ValueCache::new(3 * (100 + 2 + ENTRY_OVERHEAD_BYTES), 100, Zxid::new(1, 0));
        for k in ["/a", "/b", "/c"] {
            assert!(cache.fill(k, v(0, 100), Zxid::new(1, 0)));
        }
        cache.get("/a");
        assert!(cache.fill("/d", v(0, 100), Zxid::new(1, 0)));
        assert!(cache.bytes() <= 3 * (100 + 2 + ENTRY_OVERHEAD_BYTES));
        assert!(cache.get("/b").is_none(), "/b was least recently used");
        assert!(cache.get("/a").is_some());
        assert!(!cache.fill("/huge", v(0, 10_000), Zxid::new(1, 0)), "oversize value cached");
    }

    /// A fill from a snapshot older than the cache's position is refused, so a value an applied
    /// entry has replaced cannot be re-inserted by a slow reader.
    #[test]
    fn stale_fill_refused_and_puts_update_in_place() {
        let mut cache = ValueCache::new(1 << 20, 100, Zxid::new(1, 0));
        assert!(cache.fill("/k", v(0, 1), Zxid::new(1, 0)));
        let put = Op::Put {
            key: "/k".into(),
            value: Bytes::from("new"),
            create_only: false,
            ephemeral: None,
        };
        cache.on_applied(&UpdateNotice { zxid: Zxid::new(1, 1), prev: Zxid::ZERO, ops: vec![put] });
        assert_eq!(cache.get("/k").unwrap().value, Bytes::from("new"));
        assert!(!cache.fill("/k", v(0, 1), Zxid::new(1, 0)), "stale fill accepted");
        assert_eq!(cache.get("/k").unwrap().zxid, Zxid::new(1, 1));
        let rename = Op::Rename { from: "/k".into(), to: "/j".into() };
        cache.on_applied(&UpdateNotice {
            zxid: Zxid::new(1, 2),
            prev: Zxid::new(1, 1),
            ops: vec![rename],
        });
        assert!(cache.get("/k").is_none());
    }
}
