//! A least-recently-used map from keys to values, bounded by bytes and by entry count: the
//! upkeep the client cache (`cache_client::cache`) and the server's value cache
//! (`cache_server::cache`) share. What they store, and when an entry may be inserted, stays
//! with each of them; this module only keeps the byte count exact and the bounds held.
//!
//! Beside the recency list it keeps the keys in order (one shared allocation per key), so that
//! dropping a directory subtree, which every Delete and Rename notice does, is a range of the
//! index: O(log n + removed), not a scan of the whole cache. Insert, lookup and eviction stay
//! O(1) in the recency list plus O(log n) in the index.

use crate::key;
use lru::LruCache;
use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::Arc;

/// The bytes one entry is charged: its key, its value and the owner's bookkeeping overhead.
pub type Charge<V> = fn(&str, &V) -> usize;

/// An LRU map bounded by `bytes_max` (the sum of every entry's [`Charge`]) and `entries_max`.
/// After every call both bounds hold; the least recently used entries go first.
pub struct ByteLru<V> {
    entries: LruCache<Arc<str>, V>,
    /// The keys of `entries`, in order (the same allocations).
    index: BTreeSet<Arc<str>>,
    bytes: usize,
    bytes_max: usize,
    entries_max: usize,
    charge: Charge<V>,
    /// Keys examined by [`Self::remove_within`], ever (its cost, for tests and stats).
    visited: u64,
}

impl<V> ByteLru<V> {
    pub fn new(bytes_max: usize, entries_max: usize, charge: Charge<V>) -> ByteLru<V> {
        // Unbounded by count in the `lru` crate's sense: both bounds are enforced here.
        ByteLru {
            entries: LruCache::unbounded(),
            index: BTreeSet::new(),
            bytes: 0,
            bytes_max,
            entries_max,
            charge,
            visited: 0,
        }
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
        if let Some(old) = self.entries.get_mut(key) {
            let old = std::mem::replace(old, value);
            self.bytes -= (self.charge)(key, &old);
        } else {
            let shared: Arc<str> = Arc::from(key);
            self.index.insert(Arc::clone(&shared));
            self.entries.put(shared, value);
        }
        self.bytes += cost;
        let mut evicted = 0;
        while self.bytes > self.bytes_max || self.entries.len() > self.entries_max {
            let (k, v) = self.entries.pop_lru().expect("over a bound implies non-empty");
            self.index.remove(&*k);
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
        self.index.remove(key);
        self.bytes -= (self.charge)(key, &old);
        Some(old)
    }

    /// Removes `dir` and every key below it (see [`key::is_within`]): `dir` itself, then the
    /// index range of keys starting `dir/` (they sort before `dir0`, `'0'` being the byte
    /// after `'/'`).
    pub fn remove_within(&mut self, dir: &str) {
        if dir == key::ROOT {
            self.visited += self.entries.len() as u64;
            self.clear();
            return;
        }
        self.visited += 1;
        self.remove(dir);
        let low = format!("{dir}/");
        let high = format!("{dir}0");
        let doomed: Vec<Arc<str>> = self
            .index
            .range::<str, _>((Bound::Included(low.as_str()), Bound::Excluded(high.as_str())))
            .cloned()
            .collect();
        self.visited += doomed.len() as u64;
        for k in doomed {
            debug_assert!(key::is_within(&k, dir));
            self.remove(&k);
        }
    }

    /// Keys examined by [`Self::remove_within`] so far.
    pub fn keys_visited(&self) -> u64 {
        self.visited
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.index.clear();
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
        assert_eq!(lru.index.len(), lru.entries.len(), "the index is out of step");
        assert!(lru.entries.iter().all(|(k, _)| lru.index.contains(k)));
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
        let mut left: Vec<&str> = lru.entries.iter().map(|(k, _)| &**k).collect();
        left.sort();
        assert_eq!(left, ["/dx", "/e"]);
        assert_eq!(lru.bytes(), recount(&lru));
        lru.clear();
        assert_eq!((lru.len(), lru.bytes()), (0, 0));
    }

    /// Issue 15.4: removing a subtree visits the keys it removes (and a bounded few around
    /// them), not every entry; eviction keeps the index in step.
    #[test]
    fn remove_within_visits_the_subtree_not_the_cache() {
        let mut lru = ByteLru::new(usize::MAX, 10_000, charge);
        for i in 0..5_000 {
            lru.insert(&format!("/other/k{i}"), b(0));
        }
        for k in ["/d", "/d/a", "/d/a/b", "/d-x", "/d0", "/dx"] {
            lru.insert(k, b(0));
        }
        lru.remove_within("/d");
        let visited = lru.keys_visited();
        assert!(visited <= 3 + 2, "removing 3 keys visited {visited} of {} keys", 5_006);
        assert!(!lru.contains("/d") && !lru.contains("/d/a") && !lru.contains("/d/a/b"));
        assert!(lru.contains("/d-x") && lru.contains("/d0") && lru.contains("/dx"));
        assert_eq!(lru.len(), 5_003);
        assert_eq!(lru.bytes(), recount(&lru));
        // Evicted keys leave the index: a later subtree removal does not find them.
        let mut small = ByteLru::new(usize::MAX, 2, charge);
        for k in ["/e/1", "/e/2", "/e/3"] {
            small.insert(k, b(0));
        }
        small.remove_within("/e");
        assert!(small.is_empty());
        assert!(small.keys_visited() <= 2 + 1, "visited {}", small.keys_visited());
        small.insert("/e/4", b(0));
        small.remove_within("/");
        assert!(small.is_empty() && small.bytes() == 0);
    }

    proptest::proptest! {
        /// Against a plain filter with `key::is_within`: whatever the keys (names that sort
        /// just before and after `/`, nested directories), `remove_within` removes exactly the
        /// subtree, and the index stays in step through inserts, evictions and removals.
        #[test]
        fn remove_within_matches_is_within(
            keys in proptest::collection::vec("(/[a-]{1,2}[0/]?){1,3}", 1..40),
            dirs in proptest::collection::vec("(/[a-]{1,2}){1,2}", 1..6),
        ) {
            let mut lru = ByteLru::new(usize::MAX, 30, charge);
            for k in &keys {
                lru.insert(k, b(0));
            }
            for dir in &dirs {
                let mut expected: Vec<String> = lru
                    .entries
                    .iter()
                    .map(|(k, _)| k.to_string())
                    .filter(|k| !key::is_within(k, dir))
                    .collect();
                expected.sort();
                lru.remove_within(dir);
                let mut left: Vec<String> = lru.entries.iter().map(|(k, _)| k.to_string()).collect();
                left.sort();
                proptest::prop_assert_eq!(left, expected, "removing {}", dir);
                proptest::prop_assert_eq!(lru.bytes(), recount(&lru));
            }
        }
    }
}
