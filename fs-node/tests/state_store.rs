//! The `StateStore` conformance suite run on `MemStore` (the disk store runs the same suite), and
//! on a store that relies on the trait's default `visit_within`.

use fs_node::state::conformance::{check_random, check_rules};
use fs_node::state::{EntryKind, MemStore, StateStore};
use protocol::message::data::{DirEntry, Op, Versioned, WireError};
use protocol::Zxid;
use std::convert::Infallible;

/// MemStore follows every rule of the `StateStore` trait, one scenario per rule.
#[test]
fn mem_store_follows_every_store_rule() {
    check_rules(&mut MemStore::new).unwrap();
}

/// MemStore agrees with the naive namespace model on seeded random batches (the seed of a
/// failure is in its message).
#[test]
fn mem_store_matches_the_model_on_seeded_random_batches() {
    for seed in 0..64 {
        check_random(&mut MemStore::new, seed, 200).unwrap();
    }
}

/// A store that implements only what the trait requires (no `visit_within`, no `check`).
struct Minimal(MemStore);

impl StateStore for Minimal {
    type Error = Infallible;
    fn stat(&self, key: &str) -> Option<(EntryKind, Zxid)> {
        self.0.stat(key)
    }
    fn get(&self, key: &str) -> Result<Option<Versioned>, Infallible> {
        self.0.get(key)
    }
    fn list(&self, dir: &str, limit: usize) -> Result<Vec<DirEntry>, WireError> {
        self.0.list(dir, limit)
    }
    fn apply(&mut self, zxid: Zxid, ops: &[Op]) -> Result<(), Infallible> {
        self.0.apply(zxid, ops)
    }
}

/// The trait's default `visit_within` (a walk with `list`) and default `check` give a store
/// that passes the whole suite.
#[test]
fn trait_defaults_pass_the_suite() {
    let mut make = || Minimal(MemStore::new());
    check_rules(&mut make).unwrap();
    for seed in 0..16 {
        check_random(&mut make, seed, 200).unwrap();
    }
}
