//! Client locks, sessions and transactions against the product's lock rules, in one process:
//! `cache-client` over the in-memory network to a `cache-server` `Server` over `StateBackend`
//! (the real `StateMachine` and `LeaseKeeper`, an immediate single-node log). Paused time,
//! seeded clients.
//!
//! Not here (they need the real cluster; the integration harness runs them): contention while
//! the master process is killed or partitioned, and the time for a killed client's lock to
//! free over real sockets. The takeover test below covers the lease rule a new master keeps.

use bytes::Bytes;
use cache_client::{Batch, ClientError, SessionState};
use shoal_tests::state_backend::Harness;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

const TTL: Duration = Duration::from_secs(5);

/// Mutual exclusion: 8 clients contend for one lock; every critical-section entry finds no
/// one else inside, its fencing token is strictly above every earlier entry's, and a write
/// fenced by the token commits.
#[tokio::test(start_paused = true)]
async fn mutual_exclusion_and_growing_tokens() {
    let h = Harness::new(TTL);
    let inside = Arc::new(AtomicU32::new(0));
    let tokens = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for seed in 0..8u64 {
        let client = h.client(100 + seed);
        let (inside, tokens) = (Arc::clone(&inside), Arc::clone(&tokens));
        tasks.push(tokio::spawn(async move {
            for round in 0..5u64 {
                let guard = client.lock_wait("/mutex", false, Duration::from_secs(120)).await?;
                assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders at once");
                {
                    let mut tokens = tokens.lock().unwrap();
                    if let Some(last) = tokens.last() {
                        assert!(guard.token() > *last, "token {} after {last}", guard.token());
                    }
                    tokens.push(guard.token());
                }
                let value = format!("{seed}:{round}");
                client
                    .batch(Batch::new().write("/fenced", value).if_token("/mutex", guard.token()))
                    .await?;
                tokio::time::sleep(Duration::from_millis(10 + seed)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
                guard.release().await?;
            }
            Ok::<(), ClientError>(())
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(tokens.lock().unwrap().len(), 40);
    assert!(h.holders("/mutex").is_empty());
}

/// Shared holders coexist; an exclusive request on a shared lock is refused naming the holders
/// (not queued); a release with a wrong auth word, and a bad lock name, are refused and change
/// nothing.
#[tokio::test(start_paused = true)]
async fn shared_exclusive_and_bad_input() {
    let h = Harness::new(TTL);
    let (a, b, c) = (h.client(1), h.client(2), h.client(3));
    let ga = a.lock("/shared", true).await.unwrap();
    let gb = b.lock("/shared", true).await.unwrap();
    assert_eq!(h.holders("/shared").len(), 2);
    match c.lock("/shared", false).await {
        Err(ClientError::LockHeld { detail }) => {
            assert!(detail.contains("host1") && detail.contains("host2"), "{detail}")
        }
        other => panic!("exclusive on a shared lock gave {other:?}"),
    }
    let entries = h.backend().entries();
    let gx = c.lock("/excl", false).await.unwrap();
    let before = h.backend().entries();
    assert!(before > entries);
    match c.unlock_with_auth("/excl", 1).await {
        Err(ClientError::BadAuth { .. }) => {}
        other => panic!("a wrong auth word gave {other:?}"),
    }
    match a.unlock_with_auth("/excl", 7).await {
        Err(ClientError::LockLost { .. }) => {}
        other => panic!("another client's release gave {other:?}"),
    }
    assert_eq!(h.holders("/excl"), vec![c.id()], "a refused release changed the lock");
    assert!(matches!(c.lock("no-slash", false).await, Err(ClientError::BadKey(_))));
    gx.release().await.unwrap();
    ga.release().await.unwrap();
    gb.release().await.unwrap();
    assert!(h.holders("/shared").is_empty() && h.holders("/excl").is_empty());
}

/// `lock_wait` wakes on the LockChanged of a release, this client's waiters in arrival order,
/// and gives up with `WaitTimeout` after its bound.
#[tokio::test(start_paused = true)]
async fn lock_wait_order_and_timeout() {
    let h = Harness::new(TTL);
    let (holder, waiter) = (h.client(1), h.client(2));
    let guard = holder.lock("/q", false).await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..3 {
        let (waiter, order) = (waiter.clone(), Arc::clone(&order));
        tasks.push(tokio::spawn(async move {
            let g = waiter.lock_wait("/q", false, Duration::from_secs(30)).await.unwrap();
            order.lock().unwrap().push(i);
            tokio::time::sleep(Duration::from_millis(5)).await;
            g.release().await.unwrap();
        }));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let released_at = Instant::now();
    guard.release().await.unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2]);
    assert!(released_at.elapsed() < Duration::from_secs(1), "waiters were not woken promptly");
    let _g = holder.lock("/q", false).await.unwrap();
    let start = Instant::now();
    match waiter.lock_wait("/q", false, Duration::from_secs(2)).await {
        Err(ClientError::WaitTimeout { .. }) => {}
        other => panic!("a wait on a held lock gave {other:?}"),
    }
    let waited = start.elapsed();
    assert!(waited >= Duration::from_secs(2) && waited < Duration::from_secs(3), "{waited:?}");
}

/// A client cut off from the master loses its lock and ephemeral entry within TTL plus a
/// bounded slack; its session state goes InDanger, then Lost; the lock frees for others.
#[tokio::test(start_paused = true)]
async fn session_loss_releases_locks_and_ephemerals() {
    let h = Harness::new(TTL);
    let (client, transport) = h.client_with(h.config(9));
    let other = h.client(10);
    let guard = client.lock("/session-lock", false).await.unwrap();
    client.create_ephemeral("/eph", "x").await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(guard.is_held(), "renewals keep the lock");
    let mut state = client.session_state();
    let cut_at = Instant::now();
    transport.cut_switch().store(true, Ordering::SeqCst);
    state.wait_for(|s| *s == SessionState::InDanger).await.unwrap();
    let danger_at = cut_at.elapsed();
    state.wait_for(|s| *s == SessionState::Lost).await.unwrap();
    let lost_at = cut_at.elapsed();
    assert!(danger_at < lost_at && lost_at <= TTL, "danger {danger_at:?}, lost {lost_at:?}");
    assert!(!guard.is_held());
    // The master's own expiry: within TTL (from the last renewal it got) plus one tick.
    let slack = Duration::from_millis(200);
    tokio::time::sleep_until(cut_at + TTL + slack).await;
    assert!(h.holders("/session-lock").is_empty(), "lock outlived its session");
    assert_eq!(other.read("/eph").await.unwrap(), None, "ephemeral outlived its session");
    other.lock("/session-lock", false).await.unwrap();
}

/// The session rule across a failover: the master unreachable for less than the lease (here
/// 3 s of a 5 s lease, with a new master's takeover in the middle) costs nothing. The state
/// goes `InDanger` while renewals fail, back to `Healthy` when one reaches the new master, and
/// never `Lost`; the same session, lock (fenced write with the old token) and ephemeral entry
/// are kept and the lock is refused to others throughout.
#[tokio::test(start_paused = true)]
async fn an_outage_shorter_than_the_lease_keeps_the_session() {
    let h = Harness::new(TTL);
    let (client, transport) = h.client_with(h.config(11));
    let other = h.client(12);
    let guard = client.lock("/kept", false).await.unwrap();
    client.create_ephemeral("/kept-eph", "x").await.unwrap();
    let session = client.ensure_session().await.unwrap();
    let mut state = client.session_state();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    let mut watch = client.session_state();
    tokio::spawn(async move {
        while watch.changed().await.is_ok() {
            record.lock().unwrap().push(*watch.borrow_and_update());
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    transport.cut_switch().store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    h.backend().takeover();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    transport.cut_switch().store(false, Ordering::SeqCst);
    tokio::time::timeout(TTL, state.wait_for(|s| *s == SessionState::Healthy))
        .await
        .expect("Healthy again")
        .unwrap();
    tokio::time::sleep(TTL).await;
    assert_eq!(*seen.lock().unwrap(), vec![SessionState::InDanger, SessionState::Healthy]);
    assert!(guard.is_held(), "lock lost across the outage");
    assert_eq!(client.ensure_session().await.unwrap(), session, "a new session was opened");
    assert_eq!(h.holders("/kept"), vec![client.id()]);
    client
        .batch(Batch::new().write("/kept-fenced", "y").if_token("/kept", guard.token()))
        .await
        .unwrap();
    assert!(other.read("/kept-eph").await.unwrap().is_some(), "ephemeral lost");
    assert!(matches!(other.lock("/kept", false).await, Err(ClientError::LockHeld { .. })));
}

/// Lost is final and comes when the validity runs out: a renewal whose answer arrives after
/// the client's validity ended (sent at the last moment, slow return path) does not bring the
/// locks back. The client said `is_held() == false` at the end of the validity, so the
/// application may have stopped or handed off the protected work; a lock that is then "held"
/// again with the same token would contradict what it was told. (Before: the late answer set
/// the state back to `Healthy` and `is_held()` to true.)
#[tokio::test(start_paused = true)]
async fn a_renewal_answered_after_the_validity_ran_out_does_not_bring_the_lock_back() {
    let h = Harness::new(TTL);
    let (client, transport) = h.client_with(h.config(13));
    let guard = client.lock("/late", false).await.unwrap();
    let mut state = client.session_state();
    tokio::time::sleep(Duration::from_secs(2)).await;
    transport.cut_switch().store(true, Ordering::SeqCst);
    // Open the path again, slowly (400 ms back, inside the 500 ms request timeout), once less
    // than that is left: the renewer's next round goes out at the end of the validity.
    // Every wait is bounded in simulated time: with paused time and a renewer that never
    // stops, an unbounded wait for a state that never comes would spin for ever.
    let step = Duration::from_millis(5);
    let bound = Instant::now() + TTL;
    while client.lease_left().expect("session") >= Duration::from_millis(400) {
        assert!(Instant::now() < bound, "the validity did not run down while cut off");
        tokio::time::sleep(step).await;
    }
    transport.reply_delay_ms().store(400, Ordering::SeqCst);
    transport.cut_switch().store(false, Ordering::SeqCst);
    while guard.is_held() {
        assert!(Instant::now() < bound, "the lock stayed held past its validity");
        tokio::time::sleep(step).await;
    }
    let ran_out = Instant::now();
    tokio::time::timeout(Duration::from_secs(2), state.wait_for(|s| *s == SessionState::Lost))
        .await
        .expect("not Lost within 2 s of the validity running out")
        .unwrap();
    assert!(ran_out.elapsed() <= step, "Lost {:?} after the validity ran out", ran_out.elapsed());
    let until = ran_out + Duration::from_secs(2);
    while Instant::now() < until {
        assert!(!guard.is_held(), "the lock came back after it ran out");
        assert_eq!(*state.borrow(), SessionState::Lost, "the state left Lost");
        tokio::time::sleep(step).await;
    }
}

/// A new master honours every lease for one full TTL from its takeover, whatever was left of
/// it under the old master; then the lease expires through the log.
#[tokio::test(start_paused = true)]
async fn takeover_honours_leases_for_one_ttl() {
    let h = Harness::new(TTL);
    let (client, transport) = h.client_with(h.config(4));
    client.lock("/lease", false).await.map(std::mem::forget).unwrap();
    transport.cut_switch().store(true, Ordering::SeqCst);
    let cut_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    h.backend().takeover();
    let takeover_at = Instant::now();
    tokio::time::sleep_until(cut_at + TTL + Duration::from_secs(1)).await;
    assert_eq!(h.holders("/lease"), vec![client.id()], "old deadline applied after takeover");
    tokio::time::sleep_until(takeover_at + TTL - Duration::from_millis(100)).await;
    assert_eq!(h.holders("/lease"), vec![client.id()], "lease cut short after takeover");
    tokio::time::sleep_until(takeover_at + TTL + Duration::from_millis(200)).await;
    assert!(h.holders("/lease").is_empty(), "lease not expired one TTL after takeover");
}

async fn total(client: &cache_client::Client<cache_client::transport::MemTransport>) -> i64 {
    let mut txn = client.transaction();
    for i in 0..ACCOUNTS {
        txn = txn.read(format!("/bank/a{i}"));
    }
    let txn = txn.begin().await.unwrap();
    let mut sum = 0;
    for i in 0..ACCOUNTS {
        let v = txn.read(&format!("/bank/a{i}")).await.unwrap().unwrap();
        sum += std::str::from_utf8(&v).unwrap().parse::<i64>().unwrap();
    }
    txn.cancel().await.unwrap();
    sum
}

const ACCOUNTS: usize = 5;

/// Bank: concurrent transfers in transactions from several clients, some cancelled and some
/// dropped mid-way; audits under shared locks and at the end always see the same total (no
/// transfer is ever half applied).
#[tokio::test(start_paused = true)]
async fn bank_transfers_keep_the_total() {
    let h = Harness::new(TTL);
    let setup = h.client(50);
    setup.mkdir("/bank").await.unwrap();
    for i in 0..ACCOUNTS {
        setup.write(&format!("/bank/a{i}"), "100").await.unwrap();
    }
    let mut tasks = Vec::new();
    for seed in 0..4u64 {
        let client = h.client(60 + seed);
        tasks.push(tokio::spawn(async move {
            let mut committed = 0;
            for round in 0..12u64 {
                let x = ((seed * 7 + round * 3) % ACCOUNTS as u64) as usize;
                let y = (x + 1 + (round as usize % (ACCOUNTS - 1))) % ACCOUNTS;
                let (from, to) = (format!("/bank/a{x}"), format!("/bank/a{y}"));
                let mut txn = client
                    .transaction()
                    .write(from.clone())
                    .write(to.clone())
                    .wait(Duration::from_secs(60))
                    .begin()
                    .await
                    .unwrap();
                let parse = |v: Option<Bytes>| -> i64 {
                    std::str::from_utf8(&v.unwrap()).unwrap().parse().unwrap()
                };
                let a = parse(txn.read(&from).await.unwrap());
                let b = parse(txn.read(&to).await.unwrap());
                let amount = (round as i64 % 7) + 1;
                txn.write(&from, (a - amount).to_string()).unwrap();
                assert!(matches!(
                    txn.write("/bank/undeclared", "1"),
                    Err(ClientError::Undeclared { .. })
                ));
                match round % 6 {
                    4 => txn.cancel().await.unwrap(),
                    5 => drop(txn), // mid-way: one of two writes buffered
                    _ => {
                        txn.write(&to, (b + amount).to_string()).unwrap();
                        txn.commit().await.unwrap();
                        committed += 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(round % 3)).await;
            }
            committed
        }));
    }
    let auditor = h.client(70);
    for _ in 0..5 {
        assert_eq!(total(&auditor).await, 100 * ACCOUNTS as i64);
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let mut committed = 0;
    for t in tasks {
        committed += t.await.unwrap();
    }
    assert_eq!(committed, 4 * 8);
    assert_eq!(total(&auditor).await, 100 * ACCOUNTS as i64);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!((0..ACCOUNTS).all(|i| h.holders(&format!("/bank/a{i}")).is_empty()), "locks leaked");
}

/// Committing after the locks expired is refused and changes nothing, both a transaction
/// (caught by the client before sending) and a write fenced by an expired token (refused by the
/// master).
#[tokio::test(start_paused = true)]
async fn commit_after_expiry_is_refused() {
    let h = Harness::new(TTL);
    let mut config = h.config(5);
    config.locks.renew_interval = Duration::from_secs(3600); // this client never renews
    let (client, _) = h.client_with(config);
    client.write("/k", "before").await.unwrap();
    let mut txn = client.transaction().write("/k").begin().await.unwrap();
    txn.write("/k", "after").unwrap();
    let guard = client.lock("/fence", false).await.unwrap();
    let token = guard.token();
    tokio::time::sleep(TTL + Duration::from_secs(1)).await;
    assert!(h.holders("/k").is_empty() && h.holders("/fence").is_empty(), "leases expired");
    assert!(matches!(txn.commit().await, Err(ClientError::LockLost { .. })));
    let fenced = client.batch(Batch::new().write("/k", "fenced").if_token("/fence", token)).await;
    assert!(matches!(fenced, Err(ClientError::LockLost { .. })), "{fenced:?}");
    let reader = h.client(6);
    assert_eq!(reader.read("/k").await.unwrap().unwrap().value, Bytes::from("before"));
}

/// A transaction whose locks the master expired while the client still counted on them (a
/// client configured with a longer lease than the master's) is refused by the master as one
/// entry: nothing changes, and the key's lock is free afterwards.
#[tokio::test(start_paused = true)]
async fn commit_refused_by_the_master_changes_nothing() {
    let h = Harness::new(TTL);
    let mut config = h.config(7);
    config.locks.ttl = Duration::from_secs(60); // the session lives 60 s, the locks 5 s
    config.locks.renew_interval = Duration::from_secs(3600);
    let (client, _) = h.client_with(config);
    client.write("/m", "before").await.unwrap();
    client.write("/n", "before").await.unwrap();
    let mut txn = client.transaction().write("/m").write("/n").begin().await.unwrap();
    txn.write("/m", "after").unwrap();
    txn.write("/n", "after").unwrap();
    tokio::time::sleep(TTL + Duration::from_secs(1)).await;
    let entries = h.backend().entries();
    let refused = txn.commit().await;
    assert!(matches!(refused, Err(ClientError::LockLost { .. })), "{refused:?}");
    assert!(h.backend().entries() > entries, "the commit did not reach the master");
    let reader = h.client(8);
    for key in ["/m", "/n"] {
        assert_eq!(reader.read(key).await.unwrap().unwrap().value, Bytes::from("before"));
        assert!(h.holders(key).is_empty());
    }
}

/// Fencing under a fault: a holder cut off (a long pause) past its lease loses the lock to a
/// waiter with a larger token; when it comes back it no longer counts on the lock, and its
/// write fenced by the old token is refused, leaving the new holder's write in place.
#[tokio::test(start_paused = true)]
async fn fencing_refuses_a_paused_holder() {
    let h = Harness::new(TTL);
    let (paused, transport) = h.client_with(h.config(11));
    let waiter = h.client(12);
    let old = paused.lock("/fence-lock", false).await.unwrap();
    transport.cut_switch().store(true, Ordering::SeqCst);
    let new = waiter.lock_wait("/fence-lock", false, Duration::from_secs(30)).await.unwrap();
    assert!(new.token() > old.token(), "tokens did not grow across holders");
    waiter
        .batch(Batch::new().write("/guarded", "new").if_token("/fence-lock", new.token()))
        .await
        .unwrap();
    transport.cut_switch().store(false, Ordering::SeqCst);
    assert!(!old.is_held(), "the paused holder still counts on an expired lock");
    let stale = paused
        .batch(Batch::new().write("/guarded", "old").if_token("/fence-lock", old.token()))
        .await;
    assert!(matches!(stale, Err(ClientError::LockLost { .. })), "{stale:?}");
    assert_eq!(waiter.read("/guarded").await.unwrap().unwrap().value, Bytes::from("new"));
    assert_eq!(h.holders("/fence-lock"), vec![waiter.id()]);
}

/// Mutual exclusion under faults (seeded): 6 clients contend for one lock; now and then a
/// holder is cut off inside its critical section for up to 8 s (past the 5 s lease), then
/// comes back and tries its fenced write. Every grant has a fresh token, and the fenced writes
/// the master accepted, in commit order, carry tokens that never go backwards: a holder whose
/// lease ran out never overwrote a later holder's work.
#[tokio::test(start_paused = true)]
async fn fenced_writes_never_go_backwards_under_pauses() {
    use rand::{Rng, SeedableRng};
    let h = Harness::new(TTL);
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let grants = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for seed in 0..6u64 {
        let (client, transport) = h.client_with(h.config(200 + seed));
        let (accepted, grants) = (Arc::clone(&accepted), Arc::clone(&grants));
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
            let cut = transport.cut_switch();
            for _ in 0..6 {
                let guard = client.lock_wait("/chaos", false, Duration::from_secs(600)).await?;
                grants.lock().unwrap().push(guard.token());
                if rng.gen_ratio(1, 4) {
                    cut.store(true, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(rng.gen_range(1000..8000))).await;
                    cut.store(false, Ordering::SeqCst);
                } else {
                    tokio::time::sleep(Duration::from_millis(rng.gen_range(1..50))).await;
                }
                let write = Batch::new()
                    .write("/chaos-data", guard.token().to_string())
                    .if_token("/chaos", guard.token());
                match client.batch(write).await {
                    Ok(zxid) => accepted.lock().unwrap().push((zxid, guard.token())),
                    Err(ClientError::LockLost { .. }) => {}
                    Err(e) => return Err(e),
                }
                let _ = guard.release().await;
            }
            Ok::<(), ClientError>(())
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let mut grants = grants.lock().unwrap().clone();
    let count = grants.len();
    grants.sort();
    grants.dedup();
    assert_eq!(grants.len(), count, "two grants shared a token");
    let mut accepted = accepted.lock().unwrap().clone();
    accepted.sort();
    assert!(accepted.windows(2).all(|w| w[0].1 <= w[1].1), "fenced writes went backwards");
    assert!(accepted.len() < count, "no pause outlived its lease: the faults did not bite");
}

/// Shared holds are counted per client: two transactions of one client reading the same key
/// share one master holder; the first commit does not release it under the second, so a
/// writer from another client waits for both.
#[tokio::test(start_paused = true)]
async fn shared_read_locks_are_counted_per_client() {
    let h = Harness::new(TTL);
    let (reader, writer) = (h.client(30), h.client(31));
    reader.write("/r", "1").await.unwrap();
    let first = reader.transaction().read("/r").begin().await.unwrap();
    let second = reader.transaction().read("/r").begin().await.unwrap();
    assert_eq!(h.holders("/r"), vec![reader.id()]);
    assert_eq!(first.read("/r").await.unwrap().unwrap(), Bytes::from("1"));
    first.commit().await.unwrap();
    assert_eq!(h.holders("/r"), vec![reader.id()], "one commit released the other's read lock");
    match writer.lock("/r", false).await {
        Err(ClientError::LockHeld { .. }) => {}
        other => panic!("a write lock under a live read lock gave {other:?}"),
    }
    second.commit().await.unwrap();
    assert!(h.holders("/r").is_empty());
    let mut txn = writer.transaction().write("/r").begin().await.unwrap();
    txn.write("/r", "2").unwrap();
    txn.commit().await.unwrap();
    assert_eq!(reader.read("/r").await.unwrap().unwrap().value, Bytes::from("2"));
}

/// Closing the session deletes its ephemeral entries and releases its locks in one entry; the
/// next use opens a new session.
#[tokio::test(start_paused = true)]
async fn close_session_ends_ephemerals_and_locks() {
    let h = Harness::new(TTL);
    let client = h.client(40);
    let guard = client.lock("/closing", false).await.unwrap();
    client.create_ephemeral("/eph-close", "x").await.unwrap();
    let first = client.ensure_session().await.unwrap();
    client.close_session().await.unwrap();
    assert!(!guard.is_held());
    assert!(h.holders("/closing").is_empty());
    assert_eq!(client.read("/eph-close").await.unwrap(), None);
    let second = client.ensure_session().await.unwrap();
    assert_ne!(first, second);
    assert_eq!(*client.session_state().borrow(), SessionState::Healthy);
}

/// Fairness among one client's waiters: a waiter arriving just as the lock frees does not
/// overtake the one already waiting (it queues behind it in arrival order).
#[tokio::test(start_paused = true)]
async fn a_late_waiter_does_not_overtake() {
    let h = Harness::new(TTL);
    let (holder, waiter) = (h.client(20), h.client(21));
    let guard = holder.lock("/fair", false).await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let early = {
        let (waiter, order) = (waiter.clone(), Arc::clone(&order));
        tokio::spawn(async move {
            let g = waiter.lock_wait("/fair", false, Duration::from_secs(30)).await.unwrap();
            order.lock().unwrap().push("early");
            tokio::time::sleep(Duration::from_millis(5)).await;
            g.release().await.unwrap();
        })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    // Released and asked for again with no yield in between: the early waiter has not run yet.
    guard.release().await.unwrap();
    let late = waiter.lock_wait("/fair", false, Duration::from_secs(30)).await.unwrap();
    order.lock().unwrap().push("late");
    early.await.unwrap();
    assert_eq!(*order.lock().unwrap(), vec!["early", "late"]);
    late.release().await.unwrap();
}

/// A write whose reply is lost is retried with its request id; meanwhile the same client's
/// other writes go on. The master remembers 32 outcomes per client: had 32 later writes
/// completed meanwhile, the retry would be answered "request too old" though it never
/// applied. The client keeps its seqs in flight within that window, so every write commits.
/// Failed before the window: the retry got RequestTooOld.
#[tokio::test(start_paused = true)]
async fn a_retried_write_outlives_many_later_writes() {
    let h = Harness::new(TTL);
    let client = Arc::new(h.client(900));
    h.network.drop_replies(shoal_tests::state_backend::ADDRESS, 1);
    let first = {
        let client = client.clone();
        tokio::spawn(async move { client.write("/first", "1").await })
    };
    tokio::task::yield_now().await;
    let mut later = Vec::new();
    for i in 0..64 {
        let client = client.clone();
        later.push(tokio::spawn(async move { client.write(&format!("/w{i}"), "x").await }));
    }
    for task in later {
        task.await.unwrap().expect("a later write");
    }
    first.await.unwrap().expect("the retried first write commits");
}
