//! Lock and session rules, one test per claim, and the master's lease clock (`LeaseKeeper`).

mod state_support;

use fs_node::locks::{LeaseConfig, LeaseEvent, LeaseKeeper};
use fs_node::state::{Command, Notice};
use protocol::message::data::{Condition, ErrorCode, Op};
use protocol::message::lock::{LockChanged, LockOp, AUTH_SHARED};
use state_support::*;

const TTL_MS: u32 = 5_000;

fn lock_notices(result: &fs_node::state::ApplyResult) -> Vec<LockChanged> {
    result
        .notices
        .iter()
        .filter_map(|n| match n {
            Notice::LockChanged(c) => Some(c.clone()),
            Notice::Update(_) => None,
        })
        .collect()
}

/// Mutual exclusion: while one client holds a lock exclusively, a second exclusive acquirer is
/// refused (not queued) and told who holds it; the holder keeps the lock.
#[test]
fn mutual_exclusion_second_exclusive_acquirer_refused_with_holder() {
    let mut h = Harness::default();
    let token = h.acquire(A, "/locks/job", 7_001, 0).expect("free lock is granted");
    let refused = h.acquire(B, "/locks/job", 9_002, 0).expect_err("second exclusive refused");
    assert_eq!(refused.code, ErrorCode::LockHeld);
    assert!(refused.message.contains("host-1"), "names the holder: {}", refused.message);
    let lock = h.machine.tables().locks.get("/locks/job").expect("still held");
    assert_eq!(lock.holders.len(), 1);
    assert_eq!(lock.holders[&A].token, token);
}

/// Shared holders (auth 1) coexist; an exclusive acquirer is refused while any shared holder
/// remains, and granted once the last one leaves.
#[test]
fn shared_holders_coexist_exclusive_refused_while_shared_held() {
    let mut h = Harness::default();
    h.acquire(A, "/l", AUTH_SHARED, 0).unwrap();
    h.acquire(B, "/l", AUTH_SHARED, 0).unwrap();
    assert_eq!(h.machine.tables().locks.get("/l").unwrap().holders.len(), 2);
    let refused = h.acquire(C, "/l", 555, 0).expect_err("exclusive refused while shared held");
    assert_eq!(refused.code, ErrorCode::LockHeld);
    assert!(refused.message.contains("shared"), "{}", refused.message);
    h.release(A, "/l", AUTH_SHARED).unwrap();
    assert_eq!(code(h.acquire(C, "/l", 555, 0)), ErrorCode::LockHeld);
    h.release(B, "/l", AUTH_SHARED).unwrap();
    h.acquire(C, "/l", 555, 0).expect("free again: exclusive granted");
    // And a shared acquirer is refused while the exclusive holder has it.
    assert_eq!(code(h.acquire(A, "/l", AUTH_SHARED, 0)), ErrorCode::LockHeld);
}

/// A release with the wrong auth word, or by a client that does not hold the lock, is refused
/// and changes nothing.
#[test]
fn wrong_auth_release_refused_and_nothing_changes() {
    let mut h = Harness::default();
    h.acquire(A, "/l", 4_242, 0).unwrap();
    let before = h.machine.tables().locks.clone();
    assert_eq!(code(h.release(A, "/l", 4_243)), ErrorCode::BadAuth);
    assert_eq!(code(h.release(B, "/l", 4_242)), ErrorCode::LockNotHeld);
    assert_eq!(code(h.release(A, "/other", 4_242)), ErrorCode::LockNotHeld);
    assert_eq!(h.machine.tables().locks, before);
    h.release(A, "/l", 4_242).expect("the right auth releases");
    assert!(h.machine.tables().locks.is_empty());
}

/// A renewal with the wrong auth word is refused and moves no deadline: the lease still expires
/// when it would have.
#[test]
fn wrong_auth_renew_refused_and_nothing_changes() {
    let mut h = Harness::default();
    let mut keeper = LeaseKeeper::new(LeaseConfig { lock_ttl_ms: TTL_MS });
    let token = h.acquire(A, "/l", 4_242, 0).unwrap();
    let granted =
        LeaseEvent::LockGranted { lock: "/l".into(), holder: A, auth: 4_242, session: 0, token };
    keeper.observe(&[granted], 0);
    let refused = keeper.renew(4_000, A, 0, &[("/l".into(), 4_243)]).expect_err("wrong auth");
    assert_eq!(refused.code, ErrorCode::BadAuth);
    let refused = keeper.renew(4_000, B, 0, &[("/l".into(), 4_242)]).expect_err("not holder");
    assert_eq!(refused.code, ErrorCode::LockNotHeld);
    assert_eq!(keeper.next_deadline_ms(), Some(u64::from(TTL_MS)));
    let due = keeper.tick(u64::from(TTL_MS));
    assert_eq!(due, vec![Command::ExpireLock { lock: "/l".into(), holder: A, token }]);
}

/// Fencing tokens strictly grow per lock across grant, release, grant (and shared grants).
#[test]
fn tokens_strictly_grow_per_lock_across_grant_release_grant() {
    let mut h = Harness::default();
    let mut tokens = Vec::new();
    for round in 0..5 {
        let client = if round % 2 == 0 { A } else { B };
        tokens.push(h.acquire(client, "/l", 100 + round, 0).unwrap());
        h.write(C, vec![], vec![put(&format!("/k{round}"), "x")]).unwrap();
        h.release(client, "/l", 100 + round).unwrap();
    }
    tokens.push(h.acquire(A, "/l", AUTH_SHARED, 0).unwrap());
    tokens.push(h.acquire(B, "/l", AUTH_SHARED, 0).unwrap());
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "tokens: {tokens:?}");
}

/// Acquiring a lock one already holds with the same auth word returns the existing token and
/// changes nothing (no notice), so a client's retry after a lost reply is harmless.
#[test]
fn reacquire_with_same_auth_returns_existing_token() {
    let mut h = Harness::default();
    let first = h.acquire(A, "/l", 77, 0).unwrap();
    h.write(B, vec![], vec![put("/x", "1")]).unwrap();
    let request = h.next_request(A);
    let op = LockOp::Grant { lock: "/l".into(), auth: 77, session: 0, holder: A, host: "h".into() };
    let result = h.apply(Command::Lock { request, op });
    assert!(result.notices.is_empty());
    assert!(result.leases.is_empty());
    assert_eq!(
        lock_outcome(result),
        Ok(protocol::message::lock::LockGrant::Granted { token: first })
    );
}

/// Bad lock requests are refused by name: auth words below 1, lock names that break the key
/// rules, locks tied to a session that is not open or not the client's.
#[test]
fn bad_lock_requests_refused() {
    let mut h = Harness::default();
    assert_eq!(code(h.acquire(A, "/l", 0, 0)), ErrorCode::BadAuth);
    assert_eq!(code(h.acquire(A, "/l", -5, 0)), ErrorCode::BadAuth);
    assert_eq!(code(h.acquire(A, "no-slash", 5, 0)), ErrorCode::BadKey);
    assert_eq!(code(h.acquire(A, "/", 5, 0)), ErrorCode::BadKey);
    assert_eq!(code(h.acquire(A, "/l", 5, 0xdead)), ErrorCode::SessionExpired);
    h.open_session(B, 0xbeef, 10_000);
    assert_eq!(code(h.acquire(A, "/l", 5, 0xbeef)), ErrorCode::BadAuth);
    assert!(h.machine.tables().locks.is_empty());
}

/// LockChanged notices list the holder hosts after each change, say whether the lock is
/// shared, and are empty when the lock becomes free.
#[test]
fn lock_changed_notices_follow_the_holders() {
    let mut h = Harness::default();
    let grant = |client, auth| {
        let host = format!("host-{:x}", client - protocol::CLIENT_ID_MIN);
        LockOp::Grant { lock: "/l".into(), auth, session: 0, holder: client, host }
    };
    let r = {
        let request = h.next_request(A);
        h.apply(Command::Lock { request, op: grant(A, AUTH_SHARED) })
    };
    let z1 = r.zxid;
    assert_eq!(
        lock_notices(&r),
        vec![LockChanged {
            zxid: z1,
            lock: "/l".into(),
            holders: vec!["host-1".into()],
            shared: true
        }]
    );
    let r = {
        let request = h.next_request(B);
        h.apply(Command::Lock { request, op: grant(B, AUTH_SHARED) })
    };
    assert_eq!(lock_notices(&r)[0].holders, vec!["host-1".to_string(), "host-2".to_string()]);
    let r = {
        let request = h.next_request(A);
        h.apply(Command::Lock {
            request,
            op: LockOp::Release { lock: "/l".into(), auth: AUTH_SHARED, holder: A },
        })
    };
    assert_eq!(lock_notices(&r)[0].holders, vec!["host-2".to_string()]);
    let r = {
        let request = h.next_request(B);
        h.apply(Command::Lock {
            request,
            op: LockOp::Release { lock: "/l".into(), auth: AUTH_SHARED, holder: B },
        })
    };
    let n = &lock_notices(&r)[0];
    assert!(n.holders.is_empty() && !n.shared);
    // A refused acquire sends no notice.
    h.acquire(A, "/l", 9, 0).unwrap();
    let request = h.next_request(B);
    let r = h.apply(Command::Lock { request, op: grant(B, 10) });
    assert!(lock_notices(&r).is_empty());
}

/// A lock expiry applies only to the grant it was decided for: after release and re-grant to
/// the same client, the old expiry (with the old token) leaves the new grant alone.
#[test]
fn stale_lock_expiry_does_not_touch_a_later_grant() {
    let mut h = Harness::default();
    let old = h.acquire(A, "/l", 5, 0).unwrap();
    h.release(A, "/l", 5).unwrap();
    let new = h.acquire(A, "/l", 5, 0).unwrap();
    let r = h.apply(Command::ExpireLock { lock: "/l".into(), holder: A, token: old });
    assert!(r.notices.is_empty() && r.reply.is_none());
    assert_eq!(h.machine.tables().locks.get("/l").unwrap().holders[&A].token, new);
    let r = h.apply(Command::ExpireLock { lock: "/l".into(), holder: A, token: new });
    assert_eq!(lock_notices(&r).len(), 1);
    assert!(h.machine.tables().locks.is_empty());
}

/// Without renewal a lock's lease runs out after the TTL and the keeper proposes its expiry
/// exactly once; a renewal before the deadline moves it one TTL past the renewal.
#[test]
fn lock_lease_expires_after_ttl_unless_renewed() {
    let mut h = Harness::default();
    let mut keeper = LeaseKeeper::new(LeaseConfig { lock_ttl_ms: TTL_MS });
    let r = {
        let request = h.next_request(A);
        let op =
            LockOp::Grant { lock: "/l".into(), auth: 3, session: 0, holder: A, host: "h".into() };
        h.apply(Command::Lock { request, op })
    };
    keeper.observe(&r.leases, 1_000);
    assert!(keeper.tick(5_999).is_empty());
    assert_eq!(keeper.renew(5_000, A, 0, &[("/l".into(), 3)]), Ok(TTL_MS));
    assert!(keeper.tick(9_999).is_empty(), "renewed at 5000: lives to 10000");
    let due = keeper.tick(10_000);
    assert_eq!(due.len(), 1);
    assert!(keeper.tick(20_000).is_empty(), "reported once");
    // Once expiry is proposed, a late renewal is refused.
    assert_eq!(
        keeper.renew(10_001, A, 0, &[("/l".into(), 3)]).unwrap_err().code,
        ErrorCode::LockNotHeld
    );
    // Applying the expiry frees the lock and the keeper forgets it.
    let r = h.apply(due.into_iter().next().unwrap());
    keeper.observe(&r.leases, 10_002);
    assert!(h.machine.tables().locks.is_empty());
    assert_eq!(keeper.counts(), (0, 0));
}

/// A new master honours every existing lease (lock and session) for one full TTL from its
/// takeover, however old the grant: nothing expires before takeover + TTL, everything
/// unrenewed expires at it.
#[test]
fn takeover_honours_leases_for_one_ttl() {
    let mut h = Harness::default();
    h.open_session(A, 0x5e55, 8_000);
    let token = h.acquire(A, "/l", 42, 0x5e55).unwrap();
    h.acquire(B, "/m", AUTH_SHARED, 0).unwrap();
    h.apply(Command::Takeover { epoch: 2, master: 3 });
    let takeover_ms = 1_000_000;
    let tables = h.machine.tables();
    let mut keeper = LeaseKeeper::takeover(
        LeaseConfig { lock_ttl_ms: TTL_MS },
        &tables.locks,
        &tables.sessions,
        takeover_ms,
    );
    assert_eq!(keeper.counts(), (2, 1));
    assert!(keeper.tick(takeover_ms + u64::from(TTL_MS) - 1).is_empty());
    let due = keeper.tick(takeover_ms + u64::from(TTL_MS));
    assert_eq!(
        due,
        vec![
            Command::ExpireLock { lock: "/l".into(), holder: A, token },
            Command::ExpireLock {
                lock: "/m".into(),
                holder: B,
                token: h.machine.tables().locks.get("/m").unwrap().holders[&B].token
            },
        ]
    );
    assert!(keeper.tick(takeover_ms + 7_999).is_empty(), "the session has its own 8 s TTL");
    let opened = h.machine.tables().sessions.get(0x5e55).unwrap().opened;
    assert_eq!(
        keeper.tick(takeover_ms + 8_000),
        vec![Command::ExpireSession { session: 0x5e55, opened }]
    );
}

/// A renewal covers the session and the listed locks all or nothing, and only for the client
/// that owns them; session renewal extends the session by its own TTL.
#[test]
fn renewal_is_all_or_nothing() {
    let mut h = Harness::default();
    let mut keeper = LeaseKeeper::new(LeaseConfig { lock_ttl_ms: TTL_MS });
    let request = h.next_request(A);
    let op = protocol::message::lock::SessionOp::Open { session: 9, client: A, ttl_ms: 20_000 };
    let r = h.apply(Command::Session { request, op });
    keeper.observe(&r.leases, 0);
    let request = h.next_request(A);
    let op = LockOp::Grant { lock: "/l".into(), auth: 3, session: 9, holder: A, host: "h".into() };
    let r = h.apply(Command::Lock { request, op });
    keeper.observe(&r.leases, 0);
    // One bad lock in the list: nothing renewed, the lock still expires at 5000.
    let bad = keeper.renew(4_000, A, 9, &[("/l".into(), 3), ("/nope".into(), 3)]);
    assert_eq!(bad.unwrap_err().code, ErrorCode::LockNotHeld);
    assert_eq!(keeper.next_deadline_ms(), Some(5_000));
    assert_eq!(keeper.renew(4_000, B, 9, &[]).unwrap_err().code, ErrorCode::BadAuth);
    assert_eq!(keeper.renew(4_000, A, 9, &[("/l".into(), 3)]), Ok(TTL_MS));
    assert_eq!(keeper.next_deadline_ms(), Some(9_000));
    assert_eq!(keeper.renew(4_000, A, 9, &[]), Ok(20_000), "session only");
}

/// `LockHeld` lets a transaction commit only while its client holds the lock with that auth
/// word; a commit can release its locks in the same entry.
#[test]
fn transaction_commit_needs_lock_held_and_can_release_it() {
    let mut h = Harness::default();
    h.acquire(A, "/tx", 31_337, 0).unwrap();
    let held = |auth| vec![Condition::LockHeld { lock: "/tx".into(), auth }];
    assert_eq!(code(h.write(A, held(31_338), vec![put("/v", "1")])), ErrorCode::BadAuth);
    assert_eq!(code(h.write(B, held(31_337), vec![put("/v", "1")])), ErrorCode::LockNotHeld);
    let release = Op::Lock(LockOp::Release { lock: "/tx".into(), auth: 31_337, holder: A });
    let request = h.next_request(A);
    let r = h.apply(Command::Write {
        request,
        conditions: held(31_337),
        ops: vec![put("/v", "1"), release],
    });
    assert_eq!(lock_notices(&r).len(), 1);
    assert!(h.machine.tables().locks.is_empty());
    assert!(h.machine.store().dump().iter().any(|(k, _, _)| k == "/v"));
    let zxid = r.zxid;
    assert_eq!(r.reply.unwrap().outcome, fs_node::state::Outcome::Write(Ok(zxid)));
}

/// Simulated master change, time stepped by 100 ms: a holder that renews every 1.5 s never
/// loses its lock, even across a 2 s gap with no master; a holder that stops renewing loses its
/// lock one TTL after its last renewal; a lock granted just before the old master died, never
/// renewed, lives until one full TTL after the new master's takeover.
#[test]
fn renewing_holder_keeps_lock_across_master_change() {
    let mut h = Harness::default();
    let config = LeaseConfig { lock_ttl_ms: TTL_MS };
    let mut keeper = Some(LeaseKeeper::new(config));
    let (master_dies_ms, takeover_ms) = (10_000u64, 12_000u64);
    let mut expired: Vec<(u64, String)> = Vec::new();
    for now_ms in (0..=30_000u64).step_by(100) {
        if now_ms == master_dies_ms {
            keeper = None;
        }
        if now_ms == takeover_ms {
            h.apply(Command::Takeover { epoch: 2, master: 2 });
            let t = h.machine.tables();
            keeper = Some(LeaseKeeper::takeover(config, &t.locks, &t.sessions, now_ms));
        }
        let Some(k) = keeper.as_mut() else { continue };
        let mut grants = Vec::new();
        if now_ms == 0 {
            grants.push((A, "/a"));
            grants.push((B, "/b"));
        }
        if now_ms == 9_000 {
            grants.push((C, "/c"));
        }
        for (client, lock) in grants {
            let request = h.next_request(client);
            let op = LockOp::Grant {
                lock: lock.into(),
                auth: 2,
                session: 0,
                holder: client,
                host: "h".into(),
            };
            let r = h.apply(Command::Lock { request, op });
            k.observe(&r.leases, now_ms);
        }
        if now_ms % 1_500 == 0 && now_ms > 0 {
            assert_eq!(k.renew(now_ms, A, 0, &[("/a".into(), 2)]), Ok(TTL_MS), "at {now_ms}");
            if now_ms <= 3_000 {
                k.renew(now_ms, B, 0, &[("/b".into(), 2)]).unwrap();
            }
        }
        for command in k.tick(now_ms) {
            if let Command::ExpireLock { lock, .. } = &command {
                expired.push((now_ms, lock.clone()));
            }
            let r = h.apply(command);
            k.observe(&r.leases, now_ms);
        }
    }
    assert_eq!(expired, vec![(8_000, "/b".to_string()), (takeover_ms + 5_000, "/c".to_string())]);
    assert!(h.machine.tables().locks.get("/a").is_some_and(|l| l.holders.contains_key(&A)));
}

/// The master answers a Renew message from its lease clock alone (no log entry), and leaves
/// every other Lock message to the log.
#[test]
fn renew_message_answered_without_the_log() {
    use protocol::message::data::{Load, RequestId};
    use protocol::message::lock::{LockGrant, LockRequest, LockRequestOp};
    let mut h = Harness::default();
    let mut keeper = LeaseKeeper::new(LeaseConfig { lock_ttl_ms: TTL_MS });
    let request = h.next_request(A);
    let acquire = LockRequest {
        request,
        op: LockRequestOp::Acquire { lock: "/l".into(), auth: 9, session: 0, host: "h".into() },
    };
    assert!(keeper.answer_renewal(0, &acquire, Load::default()).is_none());
    let command = Command::from_lock_request(acquire).expect("acquire goes through the log");
    let r = h.apply(command);
    keeper.observe(&r.leases, 0);
    let applied = h.machine.applied();
    let renew = LockRequest {
        request: RequestId { client: A, seq: 99 },
        op: LockRequestOp::Renew { session: 0, locks: vec![("/l".into(), 9)] },
    };
    assert!(Command::from_lock_request(renew.clone()).is_none());
    let reply = keeper.answer_renewal(1_000, &renew, Load::default()).unwrap();
    assert_eq!(reply.result, Ok(LockGrant::Renewed { lease_ms: TTL_MS }));
    assert_eq!(keeper.next_deadline_ms(), Some(6_000));
    assert_eq!(h.machine.applied(), applied);
}
