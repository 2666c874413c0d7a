//! A least-recently-used map from keys to values, bounded by bytes and by entry count: the
//! upkeep the client cache (`cache_client::cache`) and the server's value cache
//! (`cache_server::cache`) share. What they store, and when an entry may be inserted, stays
//! with each of them; this module only keeps the byte count exact and the bounds held.

use crate::key;
use lru::LruCache;

/// The bytes one entry is charged: its key, its value and the owner's bookkeeping overhead.
pub type Charge<V> = fn(&str, &V) -> usize;

/// An LRU map bounded by `bytes_max` (the sum of every entry's [`Charge`]) and `entries_max`.
/// After every call both bounds hold; the least recently used entries go first.
pub struct ByteLru<V> {
    entries: LruCache<String, V>,
    bytes: usize,
    bytes_max: usize,
    entries_max: usize,
    charge: Charge<V>,
}

impl<V> ByteLru<V> {
    pub fn new(bytes_max: usize, entries_max: usize, charge: Charge<V>) -> ByteLru<V> {
        // Unbounded by count in the `lru` crate's sense: both bounds are enforced here.
        ByteLru { entries: LruCache::unbounded(), bytes: 0, bytes_max, entries_max, charge }
    }

    /// Inserts or replaces `key` as the most recently used entry, then evicts least recently
    /// used entries until both bounds hold; returns how many were evicted. An entry that alone
    /// exceeds the byte bound (or any entry when `entries_max` is 0) is not stored, and an
    /// older entry for its key is dropped (it would be stale): `None`.
    pub fn insert(&mut self, key: &str, value: V) -> Option<u64> {
        let cost = (self.charge)(key, &value);
        if cost > self.bytes_max || self.entries_max == 0 {
            self.remove(key);
            return None;
        }
        if let Some(old) = self.entries.put(key.to_string(), value) {
            self.bytes -= (self.charge)(key, &old);
        }
        self.bytes += cost;
        let mut evicted = 0;
        while self.bytes > self.bytes_max || self.entries.len() > self.entries_max {
            let (k, v) = self.entries.pop_lru().expect("over a bound implies non-empty");
            self.bytes -= (self.charge)(&k, &v);
            evicted += 1;
        }
        Some(evicted)
    }

    /// The entry for `key`, made the most recently used.
    pub fn get(&mut self, key: &str) -> Option<&V> {
        self.entries.get(key)
    }

    /// The entry for `key`, its recency unchanged.
    pub fn peek(&self, key: &str) -> Option<&V> {
        self.entries.peek(key)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains(key)
    }

    pub fn remove(&mut self, key: &str) -> Option<V> {
        let old = self.entries.pop(key)?;
        self.bytes -= (self.charge)(key, &old);
        Some(old)
    }

    /// Removes `dir` and every key below it (see [`key::is_within`]).
    pub fn remove_within(&mut self, dir: &str) {
        let doomed: Vec<String> = self
            .entries
            .iter()
            .map(|(k, _)| k)
            .filter(|k| key::is_within(k, dir))
            .cloned()
            .collect();
        for k in doomed {
            self.remove(&k);
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The sum of every entry's charge.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn charge(key: &str, value: &Bytes) -> usize {
        key.len() + value.len() + 10
    }

    fn b(len: usize) -> Bytes {
        Bytes::from(vec![0u8; len])
    }

    fn recount(lru: &ByteLru<Bytes>) -> usize {
        lru.entries.iter().map(|(k, v)| charge(k, v)).sum()
    }

    /// The byte bound holds after every insert, least recently used first, and the byte count
    /// is exactly the sum of the entries' charges through replaces and removals.
    #[test]
    fn bytes_bound_holds_and_the_count_stays_exact() {
        let per = charge("/a", &b(100));
        let mut lru = ByteLru::new(3 * per, 100, charge);
        for k in ["/a", "/b", "/c"] {
            assert_eq!(lru.insert(k, b(100)), Some(0));
        }
        lru.get("/a");
        assert_eq!(lru.insert("/d", b(100)), Some(1));
        assert!(lru.peek("/b").is_none(), "/b was least recently used");
        assert!(lru.contains("/a") && lru.contains("/c") && lru.contains("/d"));
        assert_eq!(lru.insert("/c", b(10)), Some(0), "a smaller replace evicts nothing");
        assert_eq!(lru.bytes(), recount(&lru));
        assert_eq!(lru.remove("/c").map(|v| v.len()), Some(10));
        assert_eq!(lru.bytes(), recount(&lru));
        assert!(lru.bytes() <= 3 * per);
    }

    /// An entry over the byte bound on its own is not stored and drops the key's older entry;
    /// the entry bound holds too, and `entries_max` 0 stores nothing.
    #[test]
    fn oversize_entries_are_refused_and_the_count_bound_holds() {
        let mut lru = ByteLru::new(1000, 2, charge);
        assert_eq!(lru.insert("/k", b(10)), Some(0));
        assert_eq!(lru.insert("/k", b(5000)), None);
        assert!(!lru.contains("/k"), "the stale smaller value must go too");
        assert_eq!(lru.bytes(), 0);
        for k in ["/x", "/y", "/z"] {
            lru.insert(k, b(0));
        }
        assert_eq!(lru.len(), 2);
        let mut none = ByteLru::new(1000, 0, charge);
        assert_eq!(none.insert("/k", b(0)), None);
        assert!(none.is_empty());
    }

    /// `remove_within` takes a directory and everything below it, and nothing else.
    #[test]
    fn remove_within_takes_a_subtree() {
        let mut lru = ByteLru::new(10_000, 100, charge);
        for k in ["/d", "/d/a", "/d/a/b", "/dx", "/e"] {
            lru.insert(k, b(0));
        }
        lru.remove_within("/d");
        let mut left: Vec<&String> = lru.entries.iter().map(|(k, _)| k).collect();
        left.sort();
        assert_eq!(left, ["/dx", "/e"]);
        assert_eq!(lru.bytes(), recount(&lru));
        lru.clear();
        assert_eq!((lru.len(), lru.bytes()), (0, 0));
    }
}
