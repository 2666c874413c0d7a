//! The `KvStore` conformance suite run on `MemStore` (the disk store runs the same suite).

use fs_node::state::conformance::{check_random, check_rules};
use fs_node::state::MemStore;

/// MemStore follows every rule of the `KvStore` trait, one scenario per rule.
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
