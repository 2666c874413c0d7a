//! The state machine's `DiskStore` conformance suite, run on the disk store (on the simulated
//! file layer, with small segments so that seals happen). Restart equivalence is covered by
//! `storage_model.rs`.

use fs_node::state::conformance::{check_random, check_rules};
use fs_node::storage::{DiskStore, SimFs, StoreConfig, Vfs};
use std::path::Path;
use std::sync::Arc;

fn fresh() -> DiskStore {
    let vfs: Arc<dyn Vfs> = Arc::new(SimFs::new());
    let config = StoreConfig { segment_bytes_max: 4096, ..StoreConfig::default() };
    DiskStore::open(vfs, Path::new("/node/data"), config).expect("open").0
}

/// The disk store follows every rule of the state machine's store trait.
#[test]
fn disk_store_follows_every_store_rule() {
    check_rules(&mut fresh).unwrap();
}

/// The disk store agrees with the state machine's naive model on seeded random batches.
#[test]
fn disk_store_matches_the_state_model_on_seeded_random_batches() {
    for seed in 0..32 {
        check_random(&mut fresh, seed, 200).unwrap();
    }
}
