//! Shared by the wire tests: proptest strategies for every message, and a seeded, sized test
//! configuration.
//!
//! Messages are invented by [`random::RandomDeserializer`] through
//! `Message::deserialize_kind`, so the strategies name no field: a field or variant added to a
//! payload is covered without touching this file, and a new kind through `MessageKind::ALL`.
//! Strings are arbitrary unicode, byte strings arbitrary bytes, ops nested as the types nest.

#![allow(dead_code)]

pub mod random;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use protocol::message::{Message, MessageKind};

/// The seed used unless `PROPTEST_RNG_SEED` says otherwise, so a run is reproducible.
pub const SEED_DEFAULT: u64 = 0x5348_4F4C;

/// A proptest configuration: `cases` unless `PROPTEST_CASES` overrides it, a fixed seed unless
/// `PROPTEST_RNG_SEED` overrides it, and no regression files written into the source tree.
pub fn config(cases: u32) -> Config {
    let mut config = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    if matches!(config.rng_seed, RngSeed::Random) {
        config.rng_seed = RngSeed::Fixed(SEED_DEFAULT);
    }
    config.failure_persistence = None;
    config
}

/// Any message of the given kind (shrinking is by seed only: a failure prints the message).
pub fn message_of_kind(kind: MessageKind) -> impl Strategy<Value = Message> {
    any::<u64>().prop_map(move |seed| random::random_message(kind, seed))
}

/// Any message of any kind.
pub fn message() -> impl Strategy<Value = Message> {
    (proptest::sample::select(MessageKind::ALL), any::<u64>())
        .prop_map(|(kind, seed)| random::random_message(kind, seed))
}
