//! Round-trip properties of the wire format: every message kind decodes to what was encoded,
//! alone and inside a sealed datagram, and a sealed datagram opens to its header and payload.
//!
//! Sizes: `PROPTEST_CASES` (default 512 per kind) and `PROPTEST_RNG_SEED` (default fixed).

mod wire_support;

use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use protocol::datagram::{decode_datagram, encode_datagram, Envelope};
use protocol::header::{
    self, flags, ClusterAuth, Header, KeyClass, HEADER_BYTES, TAG_BYTES, VERSION,
};
use protocol::limits::{FRAGMENTS_PER_MESSAGE_MAX, FRAGMENT_PAYLOAD_BYTES_MAX};
use protocol::message::{Message, MessageKind};
use wire_support::{config, message_of_kind};

const CASES_PER_KIND: u32 = 512;

fn auth() -> ClusterAuth {
    ClusterAuth::new(0x00C0_FFEE, b"round-trip test key")
}

/// A node's keys: the client key and the member key.
fn node_auth() -> ClusterAuth {
    auth().with_member_key(b"round-trip member key", [1, 2, 3])
}

/// Every message of every kind (each kind run on its own, so none is left out by chance)
/// encodes to a payload that decodes to the same message under its own kind byte, whose size
/// `Message::encoded_len` predicts exactly, and survives a seal/open as one datagram with the header intact.
#[test]
fn every_kind_round_trips() {
    for &kind in MessageKind::ALL {
        let mut runner = TestRunner::new(config(CASES_PER_KIND));
        let result = runner.run(
            &(message_of_kind(kind), any::<u64>(), any::<u64>(), any::<u64>(), 0u16..8),
            |(message, sender, incarnation, seq, flag_bits)| {
                prop_assert_eq!(message.kind(), kind);
                let payload = message.encode_payload()?;
                prop_assert_eq!(payload.len(), message.encoded_len()?);
                let decoded = Message::decode_payload(kind as u8, &payload)?;
                prop_assert_eq!(&decoded, &message);

                let envelope = Envelope { sender, incarnation, seq, flags: flag_bits };
                let mut datagram = Vec::new();
                let written = encode_datagram(&auth(), envelope, &message, &mut datagram)?;
                prop_assert_eq!(datagram.len(), HEADER_BYTES + payload.len() + TAG_BYTES);
                if payload.len() >= 8 {
                    prop_assert_ne!(
                        &datagram[HEADER_BYTES..HEADER_BYTES + payload.len()],
                        &payload[..],
                        "the payload travels in clear"
                    );
                }
                let (header, opened) = decode_datagram(&auth(), &datagram)?;
                prop_assert_eq!(header, written);
                prop_assert_eq!(header.kind, kind as u8);
                prop_assert_eq!(
                    (header.sender, header.incarnation, header.seq),
                    (sender, incarnation, seq)
                );
                prop_assert_eq!(header.flags, flag_bits);
                prop_assert_eq!(opened, message);
                Ok(())
            },
        );
        if let Err(e) = result {
            panic!("{kind:?}: {e}");
        }
    }
}

fn any_header(payload_len: usize) -> impl Strategy<Value = Header> {
    (
        any::<u8>(),
        0u16..=flags::KNOWN,
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        1u16..=FRAGMENTS_PER_MESSAGE_MAX as u16,
        any::<bool>(),
    )
        .prop_flat_map(
            move |(kind, flag_bits, sender, incarnation, seq, frag_count, member)| {
                (0..frag_count).prop_map(move |frag_index| Header {
                    version: VERSION,
                    kind,
                    flags: flag_bits,
                    cluster_id: auth().cluster_id,
                    class: if member { KeyClass::Member } else { KeyClass::Client },
                    counter: 0,
                    sender,
                    incarnation,
                    seq,
                    frag_index,
                    frag_count,
                    payload_len: payload_len as u32,
                })
            },
        )
}

proptest! {
    #![proptest_config(config(2048))]

    /// Any header with any payload up to a full fragment seals into a datagram of exactly
    /// header + payload + tag bytes, which opens to the same header and payload.
    #[test]
    fn seal_open_round_trip(
        (header, payload) in (0usize..=2048)
            .prop_flat_map(|len| (any_header(len), proptest::collection::vec(any::<u8>(), len)))
    ) {
        let auth = node_auth();
        let sealer = auth.sealer(header.class, header.sender, header.incarnation).unwrap();
        let mut datagram = Vec::new();
        let counter = header::seal(&sealer, &header, &payload, &mut datagram)?;
        prop_assert_eq!(datagram.len(), HEADER_BYTES + payload.len() + TAG_BYTES);
        let (opened, body) = header::open(&auth, &datagram)?;
        prop_assert_eq!(opened, Header { counter, ..header });
        prop_assert_eq!(body, &payload[..]);
    }
}

/// A full fragment, the largest payload a datagram carries, seals and opens.
#[test]
fn full_fragment_round_trips() {
    let payload = vec![0xA5; FRAGMENT_PAYLOAD_BYTES_MAX];
    let auth = node_auth();
    let sealer = auth.sealer(KeyClass::Member, 1, 1).unwrap();
    let header = sealer.header(15, flags::RELIABLE, 1, (3, 9), payload.len());
    let mut datagram = Vec::new();
    let counter = header::seal(&sealer, &header, &payload, &mut datagram).unwrap();
    let (opened, body) = header::open(&auth, &datagram).unwrap();
    assert_eq!(opened, Header { counter, ..header });
    assert_eq!(body, &payload[..]);
}

/// The example datagram printed in `protocol/WIRE.md` §1.4 is exactly what the code emits, so
/// the document's layout (header offsets, big-endian header, varint payload, truncated tag)
/// cannot drift from the code unnoticed.
#[test]
fn wire_md_example_datagram() {
    use protocol::message::layer::Stability;
    let auth = ClusterAuth::new(7, b"example key");
    let message = Message::Stability(Stability {
        target: 9,
        incarnation: 1,
        delivered_below: 100,
        credit_until: 164,
    });
    let payload = message.encode_payload().unwrap();
    let sealer = auth.sealer(KeyClass::Client, 3, 2).unwrap();
    let header = sealer.header(65, flags::RELIABLE, 41, (0, 1), payload.len());
    let mut datagram = Vec::new();
    header::seal_with_counter(&sealer, &header, &payload, &mut datagram, 5).unwrap();
    let expected: [u8; 76] = [
        0x53, 0x48, 0x4f, 0x4c, 0x03, 0x41, 0x00, 0x01, 0x00, 0x00, 0x00, 0x07, 0x01, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x29, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x04, 0xa0, 0xdf, 0x50, 0xfa,
        0x50, 0x8b, 0xf4, 0xca, 0x6d, 0x37, 0xf4, 0x0b, 0xf6, 0xee, 0xa5, 0xd8, 0xa4, 0xa1, 0xfc,
        0x47,
    ];
    assert_eq!(datagram, expected);
}

/// The varint, zigzag, option and enum rules of WIRE.md §2 hold on a hand-built payload.
#[test]
fn wire_md_encoding_rules() {
    use protocol::message::data::{Condition, Op, RequestId, UpdateRequest};
    let update = Message::Update(UpdateRequest {
        request: RequestId { client: 300, seq: 70_000 },
        conditions: vec![Condition::LockHeld { lock: "l".into(), auth: -2 }],
        ops: vec![Op::Put {
            key: "/a".into(),
            value: vec![7].into(),
            create_only: true,
            ephemeral: None,
        }],
    });
    let payload = update.encode_payload().unwrap();
    #[rustfmt::skip]
    let expected = [
        0xFB, 0x2C, 0x01,             // client 300: u16 varint form, little-endian
        0xFC, 0x70, 0x11, 0x01, 0x00, // seq 70 000: u32 varint form
        0x01,                         // 1 condition
        0x02,                         // Condition::LockHeld (variant 2)
        0x01, b'l',                   // lock "l"
        0x03,                         // auth -2, zigzag = 3
        0x01,                         // 1 op
        0x00,                         // Op::Put (variant 0)
        0x02, b'/', b'a',             // key "/a"
        0x01, 0x07,                   // value [7]
        0x01,                         // create_only true
        0x00,                         // ephemeral None
    ];
    assert_eq!(payload, expected);
}

/// The generator behind these properties reaches what it must: every kind yields varied
/// messages, nested ops of every variant, conditions of every variant, and both arms of a
/// reply's Result. (A generator that always produced the same value would make every
/// round-trip property above vacuous.)
#[test]
fn generator_reaches_every_shape() {
    use protocol::message::data::{Condition, Op};
    use std::collections::HashSet;
    use std::mem::discriminant;
    use wire_support::random::random_message;
    for &kind in MessageKind::ALL {
        let payloads: HashSet<Vec<u8>> =
            (0..64).map(|seed| random_message(kind, seed).encode_payload().unwrap()).collect();
        assert!(payloads.len() > 1, "{kind:?}: one payload for 64 seeds");
    }
    let (mut ops, mut conditions, mut results) = (HashSet::new(), HashSet::new(), HashSet::new());
    for seed in 0..2000 {
        if let Message::Update(u) = random_message(MessageKind::Update, seed) {
            ops.extend(u.ops.iter().map(discriminant::<Op>));
            conditions.extend(u.conditions.iter().map(discriminant::<Condition>));
        }
        if let Message::WriteReply(r) = random_message(MessageKind::WriteReply, seed) {
            results.insert(r.result.is_ok());
        }
    }
    assert!(ops.len() >= 6, "Op variants reached: {}", ops.len());
    assert!(conditions.len() >= 3, "Condition variants reached: {}", conditions.len());
    assert_eq!(results.len(), 2, "both Ok and Err replies");
}

/// The history read of WIRE.md §3.2 (a watch resuming from a zxid), its page and its
/// compacted answer, byte by byte as the document prints them.
#[test]
fn wire_md_history_read() {
    use protocol::message::data::{
        ChangeEvent, ChangeKind, ErrorCode, HistoryPage, Load, ReadOp, ReadReply, ReadRequest,
        ReadValue, Scope, WireError,
    };
    use protocol::Zxid;
    let request = Message::Request(ReadRequest {
        floor: Zxid::new(1, 9),
        linearizable: false,
        op: ReadOp::History {
            scope: Scope::Prefix("/a".into()),
            after: Zxid::new(1, 3),
            values: true,
            bytes_max: 262_144,
        },
    });
    #[rustfmt::skip]
    let expected = [
        0xFD, 0x09, 0, 0, 0, 0x01, 0, 0, 0, // floor 1:9 (2^32 + 9): u64 varint form
        0x00,                               // linearizable false
        0x05,                               // ReadOp::History (variant 5)
        0x01, 0x02, b'/', b'a',             // scope Scope::Prefix("/a")
        0xFD, 0x03, 0, 0, 0, 0x01, 0, 0, 0, // after 1:3
        0x01,                               // values true
        0xFC, 0x00, 0x00, 0x04, 0x00,       // bytes_max 262 144: u32 varint form
    ];
    assert_eq!(request.encode_payload().unwrap(), expected);

    let load = Load { cpu_permille: 0, mem_permille: 0, inflight: 0 };
    let page = Message::ReadReply(ReadReply {
        applied: Zxid::new(1, 9),
        load,
        result: Ok(ReadValue::History(HistoryPage {
            events: vec![ChangeEvent {
                zxid: Zxid::new(1, 4),
                kind: ChangeKind::Changed,
                key: "/a/x".into(),
                value: Some(vec![7].into()),
            }],
            through: Zxid::new(1, 9),
            complete: true,
        })),
    });
    #[rustfmt::skip]
    let expected = [
        0xFD, 0x09, 0, 0, 0, 0x01, 0, 0, 0, // applied 1:9
        0x00, 0x00, 0x00,                   // load
        0x00,                               // Ok
        0x04,                               // ReadValue::History (variant 4)
        0x01,                               // 1 event
        0xFD, 0x04, 0, 0, 0, 0x01, 0, 0, 0, //   zxid 1:4
        0x01,                               //   ChangeKind::Changed
        0x04, b'/', b'a', b'/', b'x',       //   key "/a/x"
        0x01, 0x01, 0x07,                   //   value Some([7])
        0xFD, 0x09, 0, 0, 0, 0x01, 0, 0, 0, // through 1:9
        0x01,                               // complete true
    ];
    assert_eq!(page.encode_payload().unwrap(), expected);

    let compacted = Message::ReadReply(ReadReply {
        applied: Zxid::new(1, 9),
        load,
        result: Err(WireError {
            code: ErrorCode::Compacted { oldest: Zxid::new(1, 6) },
            message: "c".into(),
        }),
    });
    #[rustfmt::skip]
    let expected = [
        0xFD, 0x09, 0, 0, 0, 0x01, 0, 0, 0, // applied 1:9
        0x00, 0x00, 0x00,                   // load
        0x01,                               // Err
        0x14,                               // ErrorCode::Compacted (variant 20)
        0xFD, 0x06, 0, 0, 0, 0x01, 0, 0, 0, //   oldest 1:6
        0x01, b'c',                         // message "c"
    ];
    assert_eq!(compacted.encode_payload().unwrap(), expected);
}

/// The stat read of WIRE.md §3.2 and its answer, byte by byte as the document prints them.
#[test]
fn wire_md_stat_read() {
    use protocol::message::data::{KeyStat, Load, ReadOp, ReadReply, ReadRequest, ReadValue};
    use protocol::Zxid;
    let request = Message::Request(ReadRequest {
        floor: Zxid::ZERO,
        linearizable: false,
        op: ReadOp::Stat { key: "/a".into() },
    });
    #[rustfmt::skip]
    let expected = [
        0x00,                   // floor 0
        0x00,                   // linearizable false
        0x06,                   // ReadOp::Stat (variant 6)
        0x02, b'/', b'a',       // key "/a"
    ];
    assert_eq!(request.encode_payload().unwrap(), expected);
    let reply = Message::ReadReply(ReadReply {
        applied: Zxid::new(1, 9),
        load: Load { cpu_permille: 0, mem_permille: 0, inflight: 0 },
        result: Ok(ReadValue::Stat(Some(KeyStat {
            zxid: Zxid::new(1, 4),
            is_dir: false,
            size: 300,
            ephemeral: Some(7),
        }))),
    });
    #[rustfmt::skip]
    let expected = [
        0xFD, 0x09, 0, 0, 0, 0x01, 0, 0, 0, // applied 1:9
        0x00, 0x00, 0x00,                   // load
        0x00,                               // Ok
        0x05,                               // ReadValue::Stat (variant 5)
        0x01,                               // Some
        0xFD, 0x04, 0, 0, 0, 0x01, 0, 0, 0, //   zxid 1:4
        0x00,                               //   is_dir false
        0xFB, 0x2C, 0x01,                   //   size 300: u16 varint form
        0x01, 0x07,                         //   ephemeral Some(session 7)
    ];
    assert_eq!(reply.encode_payload().unwrap(), expected);
}

/// The bytes of a range read and its page as protocol/WIRE.md shows them (ReadOp 7,
/// ReadValue 6, RangePage, RangeEntry); they decode back to the same messages.
#[test]
fn wire_md_range_read() {
    use bytes::Bytes;
    use protocol::message::data::{
        Load, RangeEntry, RangePage, ReadOp, ReadReply, ReadRequest, ReadValue,
    };
    use protocol::Zxid;
    let request = Message::Request(ReadRequest {
        floor: Zxid::ZERO,
        linearizable: false,
        op: ReadOp::Range {
            dir: "/a".into(),
            from: Some("/a/k".into()),
            limit: 2,
            bytes_max: 65_536,
        },
    });
    #[rustfmt::skip]
    let expected = [
        0x00,                               // floor 0
        0x00,                               // linearizable false
        0x07,                               // ReadOp::Range (variant 7)
        0x02, b'/', b'a',                   // dir "/a"
        0x01, 0x04, b'/', b'a', b'/', b'k', // from Some("/a/k")
        0x02,                               // limit 2
        0xFC, 0x00, 0x00, 0x01, 0x00,       // bytes_max 65536: u32 varint form
    ];
    let payload = request.encode_payload().unwrap();
    assert_eq!(payload, expected);
    assert_eq!(Message::decode_payload(MessageKind::Request as u8, &payload).unwrap(), request);
    let reply = Message::ReadReply(ReadReply {
        applied: Zxid::new(1, 9),
        load: Load { cpu_permille: 0, mem_permille: 0, inflight: 0 },
        result: Ok(ReadValue::Range(RangePage {
            entries: vec![RangeEntry {
                key: "/a/k".into(),
                zxid: Zxid::new(1, 4),
                value: Bytes::from_static(&[7]),
            }],
            zxid: Zxid::new(1, 9),
            next: Some("/a/m".into()),
        })),
    });
    #[rustfmt::skip]
    let expected = [
        0xFD, 0x09, 0, 0, 0, 0x01, 0, 0, 0, // applied 1:9
        0x00, 0x00, 0x00,                   // load
        0x00,                               // Ok
        0x06,                               // ReadValue::Range (variant 6)
        0x01,                               // 1 entry:
        0x04, b'/', b'a', b'/', b'k',       //   key "/a/k"
        0xFD, 0x04, 0, 0, 0, 0x01, 0, 0, 0, //   zxid 1:4
        0x01, 0x07,                         //   value [7]
        0xFD, 0x09, 0, 0, 0, 0x01, 0, 0, 0, // zxid 1:9 (the state of the page)
        0x01, 0x04, b'/', b'a', b'/', b'm', // next Some("/a/m")
    ];
    let payload = reply.encode_payload().unwrap();
    assert_eq!(payload, expected);
    assert_eq!(Message::decode_payload(MessageKind::ReadReply as u8, &payload).unwrap(), reply);
}
