//! The state machine's claims, one test per claim: conditions, all-or-nothing batches, retries,
//! fencing, sessions and ephemerals, and refusal of bad entries.

mod state_support;

use bytes::Bytes;
use fs_node::state::{
    Command, MemStore, Notice, Outcome, RequestConfig, StateConfig, StateError, StateMachine,
    StateStore, Tables,
};
use protocol::message::data::{Condition, ErrorCode, Op, UpdateNotice};
use protocol::message::replication::Entry;
use protocol::Zxid;
use state_support::*;

fn value(h: &Harness, key: &str) -> Option<(Zxid, Bytes)> {
    h.machine.store().get(key).unwrap().map(|v| (v.zxid, v.value))
}

/// Compare-and-set: a write conditioned on a key's zxid applies only while the key is still at
/// that zxid; `Zxid::ZERO` means "must not exist".
#[test]
fn compare_and_set_applies_only_at_the_expected_zxid() {
    let mut h = Harness::default();
    let absent = || vec![Condition::KeyZxid { key: "/k".into(), zxid: Zxid::ZERO }];
    let z1 = h.write(A, absent(), vec![put("/k", "1")]).expect("absent: create");
    assert_eq!(code(h.write(B, absent(), vec![put("/k", "x")])), ErrorCode::ConditionFailed);
    let at = |z| vec![Condition::KeyZxid { key: "/k".into(), zxid: z }];
    let z2 = h.write(A, at(z1), vec![put("/k", "2")]).expect("at z1: swap");
    let lost = h.write(B, at(z1), vec![put("/k", "lost")]).expect_err("stale CAS refused");
    assert_eq!(lost.code, ErrorCode::ConditionFailed);
    assert!(lost.message.contains(&z2.to_string()), "says where the key is: {}", lost.message);
    assert_eq!(value(&h, "/k"), Some((z2, Bytes::from("2"))));
}

/// Batch atomicity: if any op of a batch fails (here the last, whose parent is missing), none
/// of the batch applies, and the error names the missing parent.
#[test]
fn batch_atomicity_failing_op_leaves_nothing_applied() {
    let mut h = Harness::default();
    h.write(A, vec![], vec![mkdir("/d"), put("/d/old", "o")]).unwrap();
    let before = h.machine.store().clone();
    let batch = vec![put("/d/new", "n"), delete("/d/old", false), mkdir("/e"), put("/nope/x", "x")];
    let refused = h.write(A, vec![], batch).expect_err("last op fails");
    assert_eq!(refused.code, ErrorCode::ParentMissing);
    // By the wire convention for one-key errors, the message is the missing parent alone.
    assert_eq!(refused.message, "/nope");
    assert_eq!(h.machine.store(), &before);
    // A failing condition also leaves the batch unapplied.
    let cond = vec![Condition::KeyZxid { key: "/d/old".into(), zxid: Zxid::new(9, 9) }];
    assert_eq!(code(h.write(A, cond, vec![put("/d/new", "n")])), ErrorCode::ConditionFailed);
    assert_eq!(h.machine.store(), &before);
}

/// Each op of a batch is checked against the state the earlier ops leave: a batch can make a
/// directory and write into it, or delete a key and re-create it.
#[test]
fn batch_ops_see_earlier_ops_of_the_same_batch() {
    let mut h = Harness::default();
    let z = h
        .write(A, vec![], vec![mkdir("/d"), put("/d/a", "1"), rename("/d", "/e"), put("/e/b", "2")])
        .expect("each op valid after the previous");
    assert_eq!(value(&h, "/e/a"), Some((z, Bytes::from("1"))));
    assert_eq!(value(&h, "/e/b"), Some((z, Bytes::from("2"))));
    assert!(!h.machine.store().is_dir("/d"));
    let create_only =
        Op::Put { key: "/e/a".into(), value: Bytes::from("3"), create_only: true, ephemeral: None };
    assert_eq!(code(h.write(A, vec![], vec![create_only.clone()])), ErrorCode::AlreadyExists);
    h.write(A, vec![], vec![delete("/e/a", false), create_only]).expect("deleted first");
}

/// A retried request returns the first result and never applies twice, even when applying it
/// again would now give a different result (success and failure alike).
#[test]
fn retried_request_returns_first_result_and_never_applies_twice() {
    let mut h = Harness::default();
    let request = h.next_request(A);
    let first = h.write_as(request, vec![], vec![put("/k", "1")]).unwrap();
    h.write(B, vec![], vec![put("/k", "2")]).unwrap();
    let r = h.apply(Command::Write { request, conditions: vec![], ops: vec![put("/k", "1")] });
    let reply = r.reply.unwrap();
    assert!(reply.duplicate);
    assert_eq!(reply.outcome, Outcome::Write(Ok(first)));
    assert!(r.notices.is_empty());
    assert_eq!(value(&h, "/k").unwrap().1, Bytes::from("2"), "the retry did not overwrite");
    // A refused request's retry is refused the same way, though it would now succeed.
    let request = h.next_request(A);
    let absent = vec![Condition::KeyZxid { key: "/k".into(), zxid: Zxid::ZERO }];
    let refused = h.write_as(request, absent.clone(), vec![put("/k", "3")]).unwrap_err();
    h.write(B, vec![], vec![delete("/k", false)]).unwrap();
    assert_eq!(h.write_as(request, absent, vec![put("/k", "3")]), Err(refused));
    assert_eq!(value(&h, "/k"), None);
}

/// A retry of a request whose outcome was forgotten (more than K newer results of that client)
/// is answered "too old, outcome unknown" and is not applied again.
#[test]
fn retry_below_the_client_horizon_is_too_old_and_not_reapplied() {
    let config = StateConfig {
        requests: RequestConfig { results_per_client_max: 2, ..RequestConfig::default() },
        ..StateConfig::default()
    };
    let mut h = Harness::new(config);
    let first = h.next_request(A);
    h.write_as(first, vec![], vec![put("/k", "1")]).unwrap();
    h.write(A, vec![], vec![put("/k", "2")]).unwrap();
    h.write(A, vec![], vec![put("/k", "3")]).unwrap();
    let before = h.machine.store().clone();
    let refused = h.write_as(first, vec![], vec![put("/k", "1")]).unwrap_err();
    assert_eq!(refused.code, ErrorCode::RequestTooOld);
    assert_eq!(h.machine.store(), &before);
    h.write(A, vec![], vec![put("/k", "4")]).expect("new requests still apply");
}

/// A client forgotten for idleness (more than `clients_max` clients) keeps a horizon: its old
/// requests are "too old", its new ones apply.
#[test]
fn forgotten_client_retry_is_too_old_new_request_applies() {
    let config = StateConfig {
        requests: RequestConfig { clients_max: 1, ..RequestConfig::default() },
        ..StateConfig::default()
    };
    let mut h = Harness::new(config);
    let old = h.next_request(A);
    h.write_as(old, vec![], vec![put("/a", "1")]).unwrap();
    h.write(B, vec![], vec![put("/b", "1")]).unwrap();
    assert_eq!(h.machine.tables().requests.counts(), (1, 1));
    let before = h.machine.store().clone();
    assert_eq!(code(h.write_as(old, vec![], vec![put("/a", "1")])), ErrorCode::RequestTooOld);
    assert_eq!(h.machine.store(), &before);
    h.write(A, vec![], vec![put("/a", "2")]).expect("a higher seq readmits the client");
}

/// A write naming a stale fencing token (the lock was released and granted again) is refused
/// and changes nothing; the current token's write applies.
#[test]
fn write_with_stale_fencing_token_refused() {
    let mut h = Harness::default();
    let t1 = h.acquire(A, "/l", 11, 0).unwrap();
    let fenced = |t| vec![Condition::LockToken { lock: "/l".into(), token: t }];
    h.write(A, fenced(t1), vec![put("/v", "a")]).expect("current token");
    h.release(A, "/l", 11).unwrap();
    assert_eq!(code(h.write(A, fenced(t1), vec![put("/v", "late")])), ErrorCode::LockNotHeld);
    let t2 = h.acquire(B, "/l", 22, 0).unwrap();
    let before = h.machine.store().clone();
    assert_eq!(code(h.write(A, fenced(t1), vec![put("/v", "late")])), ErrorCode::LockNotHeld);
    assert_eq!(h.machine.store(), &before);
    h.write(B, fenced(t2), vec![put("/v", "b")]).expect("new holder's token");
    assert_eq!(value(&h, "/v").unwrap().1, Bytes::from("b"));
}

/// Session expiry deletes exactly the session's ephemeral keys (wherever renames moved them,
/// not those overwritten as persistent) in one entry, releases its locks, and tells the caches
/// and lock watchers.
#[test]
fn session_expiry_deletes_ephemerals_and_releases_locks() {
    let mut h = Harness::default();
    h.open_session(A, 77, 10_000);
    h.write(
        A,
        vec![],
        vec![mkdir("/d"), put_ephemeral("/e1", "x", 77), put_ephemeral("/d/e2", "y", 77)],
    )
    .unwrap();
    h.write(A, vec![], vec![put_ephemeral("/e3", "z", 77)]).unwrap();
    h.write(B, vec![], vec![put("/e3", "persistent")]).unwrap();
    h.write(A, vec![], vec![rename("/d", "/moved")]).unwrap();
    h.acquire(A, "/l", 5, 77).unwrap();
    h.acquire(A, "/free", 6, 0).unwrap();
    let opened = h.machine.tables().sessions.get(77).unwrap().opened;
    let prev = h.machine.tables().last_notice;
    let r = h.apply(Command::ExpireSession { session: 77, opened });
    let zxid = r.zxid;
    assert_eq!(
        r.notices,
        vec![
            Notice::Update(UpdateNotice {
                zxid,
                prev,
                ops: vec![delete("/e1", false), delete("/moved/e2", false)]
            }),
            Notice::LockChanged(protocol::message::lock::LockChanged {
                zxid,
                lock: "/l".into(),
                holders: vec![],
                shared: false,
            }),
        ]
    );
    let keys: Vec<String> = h.machine.store().dump().into_iter().map(|(k, _, _)| k).collect();
    assert_eq!(keys, vec!["/e3", "/moved"]);
    assert!(h.machine.tables().locks.get("/l").is_none());
    assert!(h.machine.tables().locks.get("/free").is_some(), "locks without the session stay");
    assert!(h.machine.tables().sessions.is_empty());
}

/// An expiry for an earlier incarnation of a session id does nothing to the current one; and
/// closing a session does what expiry does.
#[test]
fn stale_session_expiry_ignored_and_close_cleans_up() {
    let mut h = Harness::default();
    h.open_session(A, 5, 10_000);
    let old = h.machine.tables().sessions.get(5).unwrap().opened;
    let request = h.next_request(A);
    let close = protocol::message::lock::SessionOp::Close { session: 5, client: A };
    assert!(lock_outcome(h.apply(Command::Session { request, op: close.clone() })).is_ok());
    h.open_session(A, 5, 10_000);
    h.write(A, vec![], vec![put_ephemeral("/e", "x", 5)]).unwrap();
    let r = h.apply(Command::ExpireSession { session: 5, opened: old });
    assert!(r.notices.is_empty());
    assert!(value(&h, "/e").is_some());
    let request = h.next_request(B);
    let foreign = protocol::message::lock::SessionOp::Close { session: 5, client: B };
    assert_eq!(
        code(lock_outcome(h.apply(Command::Session { request, op: foreign }))),
        ErrorCode::BadAuth
    );
    let request = h.next_request(A);
    assert!(lock_outcome(h.apply(Command::Session { request, op: close })).is_ok());
    assert_eq!(value(&h, "/e"), None);
}

/// Ephemeral writes need an open session of the writing client.
#[test]
fn ephemeral_put_needs_the_clients_open_session() {
    let mut h = Harness::default();
    assert_eq!(
        code(h.write(A, vec![], vec![put_ephemeral("/e", "x", 1)])),
        ErrorCode::SessionExpired
    );
    h.open_session(B, 1, 5_000);
    assert_eq!(code(h.write(A, vec![], vec![put_ephemeral("/e", "x", 1)])), ErrorCode::BadAuth);
    assert!(h.machine.store().is_empty());
}

/// Bad writes are refused by name and change nothing: bad keys, the root, oversize values,
/// lock grants or session ops inside a write.
#[test]
fn bad_writes_refused_with_reason() {
    let config = StateConfig { value_bytes_max: 4, ..StateConfig::default() };
    let mut h = Harness::new(config);
    assert_eq!(code(h.write(A, vec![], vec![put("rel", "x")])), ErrorCode::BadKey);
    assert_eq!(code(h.write(A, vec![], vec![delete("/", true)])), ErrorCode::BadKey);
    assert_eq!(code(h.write(A, vec![], vec![put("/a/../b", "x")])), ErrorCode::BadKey);
    let big = h.write(A, vec![], vec![put("/big", "12345")]).unwrap_err();
    assert_eq!(big.code, ErrorCode::TooLarge);
    assert!(big.message.contains("/big"), "{}", big.message);
    let grant = Op::Lock(protocol::message::lock::LockOp::Grant {
        lock: "/l".into(),
        auth: 3,
        session: 0,
        holder: A,
        host: "h".into(),
    });
    assert_eq!(code(h.write(A, vec![], vec![grant])), ErrorCode::BadRequest);
    assert_eq!(code(h.write(A, vec![], vec![rename("/a", "/a/b")])), ErrorCode::BadKey);
    assert!(h.machine.store().is_empty() && h.machine.tables().locks.is_empty());
}

/// The Update notice carries exactly the applied data ops with the entry's zxid; a refused
/// write sends no notice.
#[test]
fn update_notice_carries_the_applied_ops() {
    let mut h = Harness::default();
    let ops = vec![mkdir("/d"), put("/d/x", "1")];
    let request = h.next_request(A);
    let r = h.apply(Command::Write { request, conditions: vec![], ops: ops.clone() });
    assert_eq!(
        r.notices,
        vec![Notice::Update(UpdateNotice { zxid: r.zxid, prev: Zxid::ZERO, ops })]
    );
    let request = h.next_request(A);
    let r = h.apply(Command::Write { request, conditions: vec![], ops: vec![mkdir("/d")] });
    assert!(r.notices.is_empty());
}

/// Each Update notice names the previous notice-producing entry as `prev`: entries without a
/// notice (a refused write, a master record) are skipped, and the chain's last link is in the
/// tables, so a machine restored from encoded tables continues it.
#[test]
fn update_notices_chain_over_notice_producing_entries() {
    let mut h = Harness::default();
    let request = h.next_request(A);
    let first = h.apply(Command::Write { request, conditions: vec![], ops: vec![mkdir("/d")] });
    let request = h.next_request(A);
    let refused = h.apply(Command::Write { request, conditions: vec![], ops: vec![mkdir("/d")] });
    assert!(refused.notices.is_empty());
    h.apply(Command::Takeover { epoch: 1, master: 1 });
    assert_eq!(h.machine.tables().last_notice, first.zxid);
    let request = h.next_request(A);
    let second =
        h.apply(Command::Write { request, conditions: vec![], ops: vec![put("/d/x", "1")] });
    let prevs: Vec<(Zxid, Zxid)> = [&first, &second]
        .iter()
        .flat_map(|r| &r.notices)
        .filter_map(|n| match n {
            Notice::Update(u) => Some((u.zxid, u.prev)),
            Notice::LockChanged(_) => None,
        })
        .collect();
    assert_eq!(prevs, vec![(first.zxid, Zxid::ZERO), (second.zxid, first.zxid)]);
    let bytes = h.machine.tables().encode(1 << 20).unwrap();
    let tables = Tables::decode(&bytes, 1 << 20).unwrap();
    assert_eq!(tables.last_notice, second.zxid, "the chain's last link did not survive encoding");
}

/// Entries out of order and entries that do not decode are refused with a fatal error and
/// change nothing.
#[test]
fn out_of_order_and_undecodable_entries_refused() {
    let mut m = StateMachine::new(MemStore::new(), StateConfig::default());
    let good = Command::Takeover { epoch: 1, master: 1 }.encode().unwrap();
    m.apply(&Entry { zxid: Zxid::new(1, 5), data: good.clone().into() }).unwrap();
    let again = m.apply(&Entry { zxid: Zxid::new(1, 5), data: good.into() });
    assert!(matches!(again, Err(StateError::OutOfOrder { .. })));
    let junk =
        m.apply(&Entry { zxid: Zxid::new(1, 6), data: Bytes::from_static(&[1, 0xff, 0xff]) });
    assert!(matches!(junk, Err(StateError::BadEntry { .. })));
    assert_eq!(m.applied(), Zxid::new(1, 5));
    assert_eq!(m.tables().takeover, Some((Zxid::new(1, 5), 1, 1)));
}

/// A session owns at most `ephemerals_per_session_max` ephemeral keys, so that its end's
/// deletes fit one notice; overwriting a key it owns does not count again.
#[test]
fn ephemerals_per_session_are_bounded() {
    let config = StateConfig { ephemerals_per_session_max: 2, ..StateConfig::default() };
    let mut h = Harness::new(config);
    h.open_session(A, 3, 5_000);
    h.write(A, vec![], vec![put_ephemeral("/e1", "x", 3), put_ephemeral("/e2", "x", 3)]).unwrap();
    assert_eq!(code(h.write(A, vec![], vec![put_ephemeral("/e3", "x", 3)])), ErrorCode::TooLarge);
    h.write(A, vec![], vec![put_ephemeral("/e1", "y", 3)]).expect("overwrite of its own key");
    assert_eq!(h.machine.tables().sessions.get(3).unwrap().ephemerals.len(), 2);
}

/// The request table stays within its bounds however many clients write: at most
/// `clients_max` clients and `tombstones_max` tombstones, the oldest forgotten first.
#[test]
fn request_table_stays_within_its_bounds() {
    let config = StateConfig {
        requests: RequestConfig { results_per_client_max: 2, clients_max: 3, tombstones_max: 4 },
        ..StateConfig::default()
    };
    let mut h = Harness::new(config);
    let mut first_requests = Vec::new();
    for i in 0..20u64 {
        let client = protocol::CLIENT_ID_MIN + 100 + i;
        for _ in 0..3 {
            let request = h.next_request(client);
            if request.seq == 1 {
                first_requests.push(request);
            }
            h.write_as(request, vec![], vec![put("/k", "v")]).unwrap();
        }
        let (clients, tombstones) = h.machine.tables().requests.counts();
        assert!(clients <= 3 && tombstones <= 4, "{clients} clients, {tombstones} tombstones");
    }
    // The three most recent clients are remembered; the four before them are tombstoned.
    for (i, request) in first_requests.iter().enumerate() {
        let expected_too_old = (13..20).contains(&i);
        let lookup = h.machine.lookup(*request);
        assert_eq!(
            matches!(lookup, fs_node::state::Lookup::TooOld { .. }),
            expected_too_old,
            "client {i}: {lookup:?}"
        );
    }
}

/// End to end with the master's lease clock: a session that is not renewed expires one TTL
/// after its open, the keeper proposes its expiry, applying it deletes the ephemerals, and the
/// keeper then forgets the session.
#[test]
fn unrenewed_session_expires_through_the_log() {
    use fs_node::locks::{LeaseConfig, LeaseKeeper};
    let mut h = Harness::default();
    let mut keeper = LeaseKeeper::new(LeaseConfig::default());
    let request = h.next_request(A);
    let op = protocol::message::lock::SessionOp::Open { session: 8, client: A, ttl_ms: 3_000 };
    let r = h.apply(Command::Session { request, op });
    keeper.observe(&r.leases, 100);
    let r = {
        let request = h.next_request(A);
        h.apply(Command::Write {
            request,
            conditions: vec![],
            ops: vec![put_ephemeral("/e", "x", 8)],
        })
    };
    keeper.observe(&r.leases, 200);
    assert_eq!(keeper.renew(2_000, A, 8, &[]), Ok(3_000));
    assert!(keeper.tick(4_999).is_empty(), "renewed at 2000: lives to 5000");
    let due = keeper.tick(5_000);
    assert_eq!(due.len(), 1);
    let r = h.apply(due[0].clone());
    keeper.observe(&r.leases, 5_001);
    assert_eq!(value(&h, "/e"), None);
    assert_eq!(keeper.counts(), (0, 0));
    assert_eq!(keeper.renew(5_002, A, 8, &[]).unwrap_err().code, ErrorCode::SessionExpired);
}

/// The write rules of `protocol::batch` hold in the state machine as in the server: the op
/// and condition count, the shape of condition keys and lock names, an empty write, and the
/// length of every key a rename moves (not only `from` and `to`).
#[test]
fn write_rules_match_the_servers() {
    let config = StateConfig { key_bytes_max: 16, ..StateConfig::default() };
    let mut h = Harness::new(config);
    h.write(A, vec![], vec![mkdir("/d"), put("/d/long-name", "x")]).unwrap();
    let before = h.machine.store().clone();
    // "/dddddd/long-name" is 17 bytes: the moved child would break the key limit.
    let moved = h.write(A, vec![], vec![rename("/d", "/dddddd")]).unwrap_err();
    assert_eq!(moved.code, ErrorCode::BadKey, "{}", moved.message);
    assert!(moved.message.contains("/dddddd/long-name"), "{}", moved.message);
    assert_eq!(code(h.write(A, vec![], vec![])), ErrorCode::ConditionFailed);
    let cond = Condition::KeyZxid { key: "/d".into(), zxid: Zxid::ZERO };
    let many = vec![put("/k", "v"); protocol::limits::BATCH_OPS_MAX];
    assert_eq!(code(h.write(A, vec![cond], many)), ErrorCode::TooLarge);
    let bad_key = vec![Condition::KeyZxid { key: "rel".into(), zxid: Zxid::ZERO }];
    assert_eq!(code(h.write(A, bad_key, vec![put("/k", "v")])), ErrorCode::BadKey);
    let bad_lock = vec![Condition::LockHeld { lock: "l".into(), auth: 3 }];
    assert_eq!(code(h.write(A, bad_lock, vec![put("/k", "v")])), ErrorCode::BadKey);
    let release =
        Op::Lock(protocol::message::lock::LockOp::Release { lock: "l".into(), auth: 3, holder: A });
    assert_eq!(code(h.write(A, vec![], vec![release])), ErrorCode::BadKey);
    assert_eq!(h.machine.store(), &before);
}
