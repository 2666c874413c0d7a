//! Fuzz-style properties of the decoder: arbitrary bytes, authentic datagrams with garbage or
//! mutated payloads, and mutated valid datagrams never panic, are refused or decoded, and every
//! refusal falls in one [`DropReason`] counter.
//!
//! Size: each of the four generated tests runs `SHOAL_FUZZ_CASES` inputs (default 5 000, so
//! 20 000 in all; `PROPTEST_CASES` also works), seeded by `PROPTEST_RNG_SEED` (default fixed).
//! Every test prints how many inputs it fed and how they were classified (`-- --nocapture`
//! shows it). Long run, 2 million inputs:
//! `SHOAL_FUZZ_CASES=500000 cargo test --release -p protocol --test wire_fuzz -- --nocapture`.

mod wire_support;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use protocol::datagram::{decode_datagram, encode_datagram, Envelope};
use protocol::error::ProtocolError;
use protocol::header::{
    self, flags, ClusterAuth, KeyClass, HEADER_BYTES, MAGIC, TAG_BYTES, VERSION,
};
use protocol::message::{Message, MessageKind};
use protocol::stats::{DropCounters, DropReason};
use std::cell::Cell;
use wire_support::message;

const CASES_DEFAULT: u32 = 5_000;

fn fuzz_config() -> Config {
    let mut config = wire_support::config(CASES_DEFAULT);
    if let Some(cases) = std::env::var("SHOAL_FUZZ_CASES").ok().and_then(|v| v.parse().ok()) {
        config.cases = cases;
    }
    config
}

fn auth() -> ClusterAuth {
    ClusterAuth::new(0x0051_4EA1, b"fuzz test key")
}

/// Decodes `datagram`, counting a refusal; on success checks that the message re-encodes to
/// something that decodes to itself (decoding never yields a value we cannot send).
fn feed(counters: &DropCounters, datagram: &[u8]) -> Result<Message, ProtocolError> {
    match decode_datagram(&auth(), datagram) {
        Ok((header, message)) => {
            assert_eq!(header.kind, message.kind() as u8);
            let again = message.encode_payload().expect("a decoded message re-encodes");
            assert_eq!(Message::decode_payload(header.kind, &again).as_ref(), Ok(&message));
            Ok(message)
        }
        Err(e) => {
            counters.record(&e);
            Err(e)
        }
    }
}

fn report(test: &str, inputs: u64, decoded: u64, counters: &DropCounters) {
    let snapshot = counters.snapshot();
    assert_eq!(decoded + snapshot.total(), inputs, "every input decoded or counted once");
    let reasons: Vec<String> =
        snapshot.iter().filter(|(_, n)| *n > 0).map(|(r, n)| format!("{}={n}", r.name())).collect();
    eprintln!(
        "{test}: {inputs} inputs survived, {decoded} decoded, dropped: {}",
        reasons.join(" ")
    );
}

fn seal_raw(kind: u8, flag_bits: u16, payload: &[u8]) -> Vec<u8> {
    let sealer = auth().sealer(KeyClass::Client, 2, 1).expect("the client key");
    let header = sealer.header(kind, flag_bits, 7, (0, 1), payload.len());
    let mut out = Vec::new();
    header::seal(&sealer, &header, payload, &mut out).unwrap();
    out
}

/// Arbitrary bytes are all refused (no one can forge the tag) and counted. A third are left
/// raw, a third get a good magic and version, a third a plausible header (known flags, our
/// cluster, one fragment, the right length) so that they reach the tag check.
#[test]
fn arbitrary_bytes_are_refused_and_counted() {
    let counters = DropCounters::new();
    let inputs = Cell::new(0u64);
    let strategy = (0u8..3, vec(any::<u8>(), 0..600));
    TestRunner::new(fuzz_config())
        .run(&strategy, |(shape, mut bytes)| {
            if shape >= 1 && bytes.len() >= 5 {
                bytes[0..4].copy_from_slice(&MAGIC.to_be_bytes());
                bytes[4] = VERSION;
            }
            if shape == 2 && bytes.len() >= HEADER_BYTES + TAG_BYTES {
                let payload_len = (bytes.len() - HEADER_BYTES - TAG_BYTES) as u32;
                let flag_bits = u16::from(bytes[6]) & flags::KNOWN;
                bytes[6..8].copy_from_slice(&flag_bits.to_be_bytes());
                bytes[8..12].copy_from_slice(&auth().cluster_id.to_be_bytes());
                bytes[12..16].copy_from_slice(&[KeyClass::Client as u8, 0, 0, 0]);
                bytes[48..52].copy_from_slice(&[0, 0, 0, 1]);
                bytes[52..56].copy_from_slice(&payload_len.to_be_bytes());
            }
            inputs.set(inputs.get() + 1);
            prop_assert!(feed(&counters, &bytes).is_err(), "random bytes were accepted");
            Ok(())
        })
        .unwrap();
    report("arbitrary_bytes", inputs.get(), 0, &counters);
    for reason in [DropReason::BadMagic, DropReason::Truncated, DropReason::BadMac] {
        assert!(counters.get(reason) > 0, "no input reached {}", reason.name());
    }
}

/// Authentic datagrams (right key) of any kind byte (mostly known ones) carrying arbitrary
/// payloads: a peer with a bug, or a holder of the key. The decoder never panics; it decodes or refuses with a payload
/// reason, never a header one.
#[test]
fn authentic_garbage_payloads_decode_or_are_refused() {
    let counters = DropCounters::new();
    let (inputs, decoded) = (Cell::new(0u64), Cell::new(0u64));
    let known = proptest::sample::select(MessageKind::ALL).prop_map(|k| k as u8);
    let strategy = (prop_oneof![9 => known, 1 => any::<u8>()], vec(any::<u8>(), 0..256));
    TestRunner::new(fuzz_config())
        .run(&strategy, |(kind, payload)| {
            inputs.set(inputs.get() + 1);
            match feed(&counters, &seal_raw(kind, flags::RELIABLE, &payload)) {
                Ok(_) => decoded.set(decoded.get() + 1),
                Err(e) => prop_assert!(
                    matches!(
                        DropReason::of(&e),
                        DropReason::UnknownKind | DropReason::Malformed | DropReason::TooLarge
                    ),
                    "authentic datagram refused for a header reason: {e}"
                ),
            }
            Ok(())
        })
        .unwrap();
    report("authentic_garbage", inputs.get(), decoded.get(), &counters);
    assert!(counters.get(DropReason::UnknownKind) > 0 && counters.get(DropReason::Malformed) > 0);
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip { at: usize, bit: u8 },
    Set { at: usize, byte: u8 },
    Truncate { to: usize },
    Insert { at: usize, byte: u8 },
    Remove { at: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    // Positions are taken modulo the length at application time.
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set { at, byte }),
        any::<usize>().prop_map(|to| Mutation::Truncate { to }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert { at, byte }),
        any::<usize>().prop_map(|at| Mutation::Remove { at }),
    ]
}

fn apply(bytes: &mut Vec<u8>, mutations: &[Mutation]) {
    for m in mutations {
        let len = bytes.len().max(1);
        match *m {
            Mutation::Flip { at, bit } if !bytes.is_empty() => bytes[at % len] ^= 1 << bit,
            Mutation::Set { at, byte } if !bytes.is_empty() => bytes[at % len] = byte,
            Mutation::Truncate { to } => bytes.truncate(to % len),
            Mutation::Insert { at, byte } => bytes.insert(at % (bytes.len() + 1), byte),
            Mutation::Remove { at } if !bytes.is_empty() => {
                bytes.remove(at % len);
            }
            _ => {}
        }
    }
}

/// A valid datagram with any mutation is refused unless the mutation changed nothing (the tag
/// covers every byte), and the refusal is counted under a reason.
#[test]
fn mutated_datagrams_are_refused() {
    let counters = DropCounters::new();
    let (inputs, decoded) = (Cell::new(0u64), Cell::new(0u64));
    let strategy = (message(), vec(mutation(), 1..4));
    TestRunner::new(fuzz_config())
        .run(&strategy, |(message, mutations)| {
            let envelope = Envelope { sender: 5, incarnation: 3, seq: 11, flags: flags::RELIABLE };
            let mut datagram = Vec::new();
            encode_datagram(&auth(), envelope, &message, &mut datagram)?;
            let original = datagram.clone();
            apply(&mut datagram, &mutations);
            inputs.set(inputs.get() + 1);
            let result = feed(&counters, &datagram);
            if datagram == original {
                prop_assert_eq!(result, Ok(message));
                decoded.set(decoded.get() + 1);
            } else {
                prop_assert!(result.is_err(), "mutated datagram accepted: {:?}", mutations);
            }
            Ok(())
        })
        .unwrap();
    report("mutated_datagrams", inputs.get(), decoded.get(), &counters);
    assert!(counters.get(DropReason::BadMac) > 0 && counters.get(DropReason::Truncated) > 0);
}

/// Valid payloads with mutations, sealed under the right key, so the mutation reaches the
/// payload decoder: it decodes something else or refuses as malformed or over a limit.
#[test]
fn authentic_mutated_payloads_decode_or_are_refused() {
    let counters = DropCounters::new();
    let (inputs, decoded) = (Cell::new(0u64), Cell::new(0u64));
    let strategy = (message(), vec(mutation(), 1..4));
    TestRunner::new(fuzz_config())
        .run(&strategy, |(message, mutations)| {
            let mut payload = message.encode_payload()?;
            apply(&mut payload, &mutations);
            inputs.set(inputs.get() + 1);
            match feed(&counters, &seal_raw(message.kind() as u8, 0, &payload)) {
                Ok(_) => decoded.set(decoded.get() + 1),
                Err(e) => prop_assert!(
                    matches!(DropReason::of(&e), DropReason::Malformed | DropReason::TooLarge),
                    "mutated payload refused for a header reason: {e}"
                ),
            }
            Ok(())
        })
        .unwrap();
    report("authentic_mutated_payloads", inputs.get(), decoded.get(), &counters);
    assert!(decoded.get() > 0 && counters.get(DropReason::Malformed) > 0);
}

/// The header checks classify each kind of bad datagram under its own reason: wrong version,
/// wrong cluster, wrong key, bad magic, truncated, oversized.
#[test]
fn each_bad_header_has_its_reason() {
    let counters = DropCounters::new();
    let good = seal_raw(65, flags::RELIABLE, &[1, 2, 3, 4]);

    let mut wrong_version = good.clone();
    wrong_version[4] = VERSION + 1;
    assert_eq!(
        counters.record(&decode_datagram(&auth(), &wrong_version).unwrap_err()),
        DropReason::WrongVersion
    );

    let other_cluster = ClusterAuth::new(auth().cluster_id + 1, b"fuzz test key");
    assert_eq!(
        counters.record(&decode_datagram(&other_cluster, &good).unwrap_err()),
        DropReason::WrongCluster
    );

    let other_key = ClusterAuth::new(auth().cluster_id, b"another key");
    assert_eq!(
        counters.record(&decode_datagram(&other_key, &good).unwrap_err()),
        DropReason::BadMac
    );

    let mut bad_magic = good.clone();
    bad_magic[0] = b'X';
    assert_eq!(
        counters.record(&decode_datagram(&auth(), &bad_magic).unwrap_err()),
        DropReason::BadMagic
    );

    assert_eq!(
        counters.record(&decode_datagram(&auth(), &good[..good.len() - 1]).unwrap_err()),
        DropReason::Truncated
    );
    assert_eq!(
        counters.record(&decode_datagram(&auth(), &good[..HEADER_BYTES - 1]).unwrap_err()),
        DropReason::Truncated
    );

    let mut oversized = good.clone();
    oversized[52..56].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(
        counters.record(&decode_datagram(&auth(), &oversized).unwrap_err()),
        DropReason::TooLarge
    );

    let huge = vec![0u8; protocol::limits::DATAGRAM_BYTES_MAX + 1];
    assert_eq!(
        counters.record(&decode_datagram(&auth(), &huge).unwrap_err()),
        DropReason::TooLarge
    );

    assert_eq!(
        counters.record(&decode_datagram(&auth(), &seal_raw(200, 0, &[])).unwrap_err()),
        DropReason::UnknownKind
    );
    // A member datagram reaches a client, which holds no member key: set aside unopened.
    let nodes = auth().with_member_key(b"member key of this fuzz test", [2]);
    let member = nodes.sealer(KeyClass::Member, 2, 1).expect("the member key");
    let mut sealed = Vec::new();
    header::seal(&member, &member.header(65, 0, 7, (0, 1), 4), &[1, 2, 3, 4], &mut sealed).unwrap();
    assert_eq!(
        counters.record(&decode_datagram(&auth(), &sealed).unwrap_err()),
        DropReason::WrongClass
    );
    // ... and one sealed under the member key but with the client class byte is a forgery.
    let mut relabelled = sealed.clone();
    relabelled[12] = KeyClass::Client as u8;
    assert_eq!(
        counters.record(&decode_datagram(&nodes, &relabelled).unwrap_err()),
        DropReason::BadMac
    );
    assert_eq!(counters.snapshot().total(), 11);
}
