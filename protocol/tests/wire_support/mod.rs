//! Shared by the wire tests: proptest strategies for every message, and a seeded, sized test
//! configuration.
//!
//! Strategies stay within the named limits (small vectors, short strings) but cover every
//! variant, arbitrary unicode strings, arbitrary bytes and nested ops. [`message_of_kind`]
//! matches exhaustively on [`MessageKind`], so a new kind does not compile until it has a
//! strategy here.

#![allow(dead_code)]

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use protocol::message::data::*;
use protocol::message::layer::*;
use protocol::message::live::*;
use protocol::message::lock::*;
use protocol::message::replication::*;
use protocol::message::transfer::*;
use protocol::message::{Message, MessageKind};
use protocol::Zxid;

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

pub fn text() -> impl Strategy<Value = String> {
    "(?s).{0,24}"
}

pub fn bytes() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..96).prop_map(Bytes::from)
}

pub fn zxid() -> impl Strategy<Value = Zxid> {
    any::<u64>().prop_map(Zxid)
}

fn load() -> impl Strategy<Value = Load> {
    (any::<u16>(), any::<u16>(), any::<u32>()).prop_map(|(cpu_permille, mem_permille, inflight)| {
        Load { cpu_permille, mem_permille, inflight }
    })
}

fn request_id() -> impl Strategy<Value = RequestId> {
    (any::<u64>(), any::<u64>()).prop_map(|(client, seq)| RequestId { client, seq })
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Looking), Just(Role::Follower), Just(Role::Master)]
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    use ErrorCode::*;
    prop_oneof![
        Just(NotFound),
        Just(AlreadyExists),
        Just(ParentMissing),
        Just(NotADirectory),
        Just(IsADirectory),
        Just(DirectoryNotEmpty),
        Just(BadKey),
        Just(TooLarge),
        Just(ConditionFailed),
        any::<Option<u8>>().prop_map(|master| NotMaster { master }),
        Just(LockHeld),
        Just(BadAuth),
        Just(LockNotHeld),
        Just(SessionExpired),
        Just(Frozen),
        Just(Behind),
        Just(Unavailable),
        Just(Internal),
    ]
}

fn wire_error() -> impl Strategy<Value = WireError> {
    (error_code(), text()).prop_map(|(code, message)| WireError { code, message })
}

fn read_op() -> impl Strategy<Value = ReadOp> {
    prop_oneof![
        text().prop_map(|key| ReadOp::Get { key }),
        text().prop_map(|key| ReadOp::Exists { key }),
        text().prop_map(|key| ReadOp::IsDir { key }),
        text().prop_map(|dir| ReadOp::List { dir }),
        Just(ReadOp::Status),
    ]
}

fn node_status() -> impl Strategy<Value = NodeStatus> {
    (
        any::<u8>(),
        role(),
        any::<u32>(),
        zxid(),
        zxid(),
        any::<bool>(),
        load(),
        any::<Option<u8>>(),
        proptest::option::of(text()),
    )
        .prop_map(|(node, role, epoch, applied, committed, frozen, load, master, transfer)| {
            NodeStatus { node, role, epoch, applied, committed, frozen, load, master, transfer }
        })
}

fn read_value() -> impl Strategy<Value = ReadValue> {
    let versioned = (zxid(), bytes()).prop_map(|(zxid, value)| Versioned { zxid, value });
    let entry = (text(), any::<bool>(), zxid()).prop_map(|(name, is_dir, zxid)| DirEntry {
        name,
        is_dir,
        zxid,
    });
    prop_oneof![
        proptest::option::of(versioned).prop_map(ReadValue::Value),
        any::<bool>().prop_map(ReadValue::Bool),
        vec(entry, 0..8).prop_map(ReadValue::List),
        node_status().prop_map(ReadValue::Status),
    ]
}

fn lock_op() -> impl Strategy<Value = LockOp> {
    prop_oneof![
        (text(), any::<i32>(), any::<u64>(), any::<u64>(), text()).prop_map(
            |(lock, auth, session, holder, host)| LockOp::Grant {
                lock,
                auth,
                session,
                holder,
                host
            }
        ),
        (text(), any::<i32>(), any::<u64>()).prop_map(|(lock, auth, session)| LockOp::Release {
            lock,
            auth,
            session
        }),
        (text(), any::<i32>(), any::<u64>()).prop_map(|(lock, auth, session)| LockOp::Expire {
            lock,
            auth,
            session
        }),
    ]
}

fn session_op() -> impl Strategy<Value = SessionOp> {
    prop_oneof![
        (any::<u64>(), any::<u64>(), any::<u32>())
            .prop_map(|(session, client, ttl_ms)| SessionOp::Open { session, client, ttl_ms }),
        any::<u64>().prop_map(|session| SessionOp::Close { session }),
        any::<u64>().prop_map(|session| SessionOp::Expire { session }),
    ]
}

pub fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (text(), bytes(), any::<bool>(), any::<Option<u64>>()).prop_map(
            |(key, value, create_only, ephemeral)| Op::Put { key, value, create_only, ephemeral }
        ),
        text().prop_map(|key| Op::Mkdir { key }),
        (text(), any::<bool>()).prop_map(|(key, recursive)| Op::Delete { key, recursive }),
        (text(), text()).prop_map(|(from, to)| Op::Rename { from, to }),
        lock_op().prop_map(Op::Lock),
        session_op().prop_map(Op::Session),
    ]
}

fn condition() -> impl Strategy<Value = Condition> {
    prop_oneof![
        (text(), zxid()).prop_map(|(key, zxid)| Condition::KeyZxid { key, zxid }),
        (text(), zxid()).prop_map(|(lock, token)| Condition::LockToken { lock, token }),
        (text(), any::<i32>()).prop_map(|(lock, auth)| Condition::LockHeld { lock, auth }),
    ]
}

fn lock_request_op() -> impl Strategy<Value = LockRequestOp> {
    prop_oneof![
        (text(), any::<i32>(), any::<u64>(), text()).prop_map(|(lock, auth, session, host)| {
            LockRequestOp::Acquire { lock, auth, session, host }
        }),
        (text(), any::<i32>()).prop_map(|(lock, auth)| LockRequestOp::Release { lock, auth }),
        (any::<u64>(), vec((text(), any::<i32>()), 0..6))
            .prop_map(|(session, locks)| LockRequestOp::Renew { session, locks }),
        (any::<u64>(), any::<u32>())
            .prop_map(|(session, ttl_ms)| LockRequestOp::OpenSession { session, ttl_ms }),
        any::<u64>().prop_map(|session| LockRequestOp::CloseSession { session }),
    ]
}

fn lock_grant() -> impl Strategy<Value = LockGrant> {
    prop_oneof![
        zxid().prop_map(|token| LockGrant::Granted { token }),
        Just(LockGrant::Released),
        any::<u32>().prop_map(|lease_ms| LockGrant::Renewed { lease_ms }),
        any::<u32>().prop_map(|lease_ms| LockGrant::SessionOpened { lease_ms }),
        Just(LockGrant::SessionClosed),
    ]
}

fn entry() -> impl Strategy<Value = Entry> {
    (zxid(), bytes()).prop_map(|(zxid, data)| Entry { zxid, data })
}

fn md5() -> impl Strategy<Value = [u8; 16]> {
    any::<[u8; 16]>()
}

fn transfer_purpose() -> impl Strategy<Value = TransferPurpose> {
    prop_oneof![
        Just(TransferPurpose::Join),
        Just(TransferPurpose::CatchUp),
        Just(TransferPurpose::Backup)
    ]
}

/// Any message of the given kind.
pub fn message_of_kind(kind: MessageKind) -> BoxedStrategy<Message> {
    match kind {
        MessageKind::Request => (zxid(), any::<bool>(), read_op())
            .prop_map(|(floor, linearizable, op)| {
                Message::Request(ReadRequest { floor, linearizable, op })
            })
            .boxed(),
        MessageKind::ReadReply => {
            (zxid(), load(), prop_oneof![read_value().prop_map(Ok), wire_error().prop_map(Err)])
                .prop_map(|(applied, load, result)| {
                    Message::ReadReply(ReadReply { applied, load, result })
                })
                .boxed()
        }
        MessageKind::Update => (request_id(), vec(condition(), 0..4), vec(op(), 0..6))
            .prop_map(|(request, conditions, ops)| {
                Message::Update(UpdateRequest { request, conditions, ops })
            })
            .boxed(),
        MessageKind::WriteReply => {
            (request_id(), load(), prop_oneof![zxid().prop_map(Ok), wire_error().prop_map(Err)])
                .prop_map(|(request, load, result)| {
                    Message::WriteReply(WriteReply { request, load, result })
                })
                .boxed()
        }
        MessageKind::UpdateNotice => (zxid(), vec(op(), 0..6))
            .prop_map(|(zxid, ops)| Message::UpdateNotice(UpdateNotice { zxid, ops }))
            .boxed(),
        MessageKind::Rename => (request_id(), text(), text())
            .prop_map(|(request, from, to)| Message::Rename(RenameRequest { request, from, to }))
            .boxed(),
        MessageKind::Lock => (request_id(), lock_request_op())
            .prop_map(|(request, op)| Message::Lock(LockRequest { request, op }))
            .boxed(),
        MessageKind::LockReply => (
            request_id(),
            load(),
            prop_oneof![lock_grant().prop_map(Ok), wire_error().prop_map(Err)],
        )
            .prop_map(|(request, load, result)| {
                Message::LockReply(LockReply { request, load, result })
            })
            .boxed(),
        MessageKind::LockChanged => (zxid(), text(), vec(text(), 0..5), any::<bool>())
            .prop_map(|(zxid, lock, holders, shared)| {
                Message::LockChanged(LockChanged { zxid, lock, holders, shared })
            })
            .boxed(),
        MessageKind::Freeze => (any::<u8>(), any::<bool>(), zxid())
            .prop_map(|(node, frozen, applied)| Message::Freeze(Freeze { node, frozen, applied }))
            .boxed(),
        MessageKind::FsLive => (
            any::<u8>(),
            role(),
            any::<u32>(),
            zxid(),
            any::<bool>(),
            load(),
            text(),
            any::<Option<u8>>(),
        )
            .prop_map(|(node, role, epoch, applied, frozen, load, address, master)| {
                Message::FsLive(FsLive {
                    node,
                    role,
                    epoch,
                    applied,
                    frozen,
                    load,
                    address,
                    master,
                })
            })
            .boxed(),
        MessageKind::RequestFile => (any::<u8>(), zxid(), transfer_purpose(), any::<u64>())
            .prop_map(|(receiver, applied, purpose, free_bytes)| {
                Message::RequestFile(RequestFile { receiver, applied, purpose, free_bytes })
            })
            .boxed(),
        MessageKind::TransFile => {
            let offer = (text(), any::<u64>(), md5()).prop_map(|(name, size, md5)| FileOffer {
                name,
                size,
                md5,
            });
            (any::<u64>(), any::<u8>(), zxid(), vec(offer, 0..5), text(), any::<u32>())
                .prop_map(|(transfer, donor, snapshot_zxid, files, group, block_bytes)| {
                    Message::TransFile(TransFile {
                        transfer,
                        donor,
                        snapshot_zxid,
                        files,
                        group,
                        block_bytes,
                    })
                })
                .boxed()
        }
        MessageKind::FileTransRequest => (
            any::<u64>(),
            any::<u8>(),
            vec((any::<u32>(), any::<u64>(), any::<u32>()), 0..8),
            any::<bool>(),
        )
            .prop_map(|(transfer, receiver, ranges, done)| {
                Message::FileTransRequest(FileTransRequest { transfer, receiver, ranges, done })
            })
            .boxed(),
        MessageKind::FileTransBlock => (any::<u64>(), any::<u32>(), any::<u64>(), md5(), bytes())
            .prop_map(|(transfer, file, block, md5, data)| {
                Message::FileTransBlock(FileTransBlock { transfer, file, block, md5, data })
            })
            .boxed(),
        MessageKind::Backup => prop_oneof![
            text().prop_map(BackupTarget::Directory),
            any::<u8>().prop_map(BackupTarget::Node)
        ]
        .prop_map(|target| Message::Backup(Backup { target }))
        .boxed(),
        MessageKind::Vote => {
            (any::<u8>(), any::<u64>(), any::<u8>(), any::<u32>(), zxid(), any::<bool>())
                .prop_map(|(from, round, candidate, candidate_epoch, candidate_zxid, settled)| {
                    Message::Vote(Vote {
                        from,
                        round,
                        candidate,
                        candidate_epoch,
                        candidate_zxid,
                        settled,
                    })
                })
                .boxed()
        }
        MessageKind::Heartbeat => (any::<u8>(), any::<u32>(), zxid(), any::<u32>())
            .prop_map(|(from, epoch, commit, lease_ms)| {
                Message::Heartbeat(Heartbeat { from, epoch, commit, lease_ms })
            })
            .boxed(),
        MessageKind::Prepare => (any::<u8>(), any::<u32>())
            .prop_map(|(from, epoch)| Message::Prepare(Prepare { from, epoch }))
            .boxed(),
        MessageKind::PrepareOk => (any::<u8>(), any::<u32>(), zxid(), any::<u32>())
            .prop_map(|(from, epoch, last_zxid, accepted_epoch)| {
                Message::PrepareOk(PrepareOk { from, epoch, last_zxid, accepted_epoch })
            })
            .boxed(),
        MessageKind::Sync => (
            any::<u8>(),
            any::<u32>(),
            proptest::option::of(zxid()),
            vec(entry(), 0..6),
            proptest::option::of(zxid()),
            zxid(),
        )
            .prop_map(|(from, epoch, truncate_to, entries, snapshot, commit)| {
                Message::Sync(Sync { from, epoch, truncate_to, entries, snapshot, commit })
            })
            .boxed(),
        MessageKind::Proposal => (any::<u8>(), any::<u32>(), zxid(), vec(entry(), 0..6), zxid())
            .prop_map(|(from, epoch, prev, entries, commit)| {
                Message::Proposal(Proposal { from, epoch, prev, entries, commit })
            })
            .boxed(),
        MessageKind::Accept => (any::<u8>(), any::<u32>(), zxid())
            .prop_map(|(from, epoch, durable)| Message::Accept(Accept { from, epoch, durable }))
            .boxed(),
        MessageKind::Commit => (any::<u8>(), any::<u32>(), zxid())
            .prop_map(|(from, epoch, commit)| Message::Commit(Commit { from, epoch, commit }))
            .boxed(),
        MessageKind::Nak => (any::<u64>(), any::<u32>(), vec((any::<u64>(), any::<u64>()), 0..8))
            .prop_map(|(target, incarnation, ranges)| {
                Message::Nak(Nak { target, incarnation, ranges })
            })
            .boxed(),
        MessageKind::Stability => (any::<u64>(), any::<u32>(), any::<u64>(), any::<u64>())
            .prop_map(|(target, incarnation, delivered_below, credit_until)| {
                Message::Stability(Stability { target, incarnation, delivered_below, credit_until })
            })
            .boxed(),
    }
}

/// Any message of any kind.
pub fn message() -> impl Strategy<Value = Message> {
    proptest::sample::select(MessageKind::ALL).prop_flat_map(message_of_kind)
}
