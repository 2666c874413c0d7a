//! Sessions across a master failover, on real `shoal-fs` processes: a SIGKILLed master under
//! lock load must not cost any client its session, its locks or its ephemeral entries when
//! the new master is in place within the lease (README "What you can rely on", sessions).

use bytes::Bytes;
use cache_client::net::SocketTransport;
use cache_client::{Batch, Client, ClientError, LockConfig, LockGuard, ReadOptions, SessionState};
use protocol::Zxid;
use shoal_tests::cluster::Cluster;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

const ELECTION_WAIT: Duration = Duration::from_secs(20);
const HOLDERS: usize = 8;
const CONTENDERS: usize = 2;
/// Lock load before the kill: at least one renewal of every holder.
const LOAD_BEFORE_KILL: Duration = Duration::from_millis(2_000);
/// Pause between two acquire rounds of a contender.
const CONTEND_PAUSE: Duration = Duration::from_millis(25);
/// Scheduling slack for the timing claims (a shared, loaded test machine).
const SLACK: Duration = Duration::from_millis(300);

type Timeline = Arc<Mutex<Vec<(Duration, SessionState)>>>;

struct Holder {
    client: Client<SocketTransport>,
    guard: LockGuard<SocketTransport>,
    session: u64,
    lock: String,
    ephemeral: String,
    states: Timeline,
}

fn lock_config(ttl: Duration, renew: Duration) -> LockConfig {
    LockConfig { ttl, renew_interval: renew, host: "failover-test".into() }
}

/// Records every state the session watch shows, with its time since `start`, until `stop`.
fn record_states(client: &Client<SocketTransport>, start: Instant, stop: Instant) -> Timeline {
    let timeline: Timeline = Arc::default();
    let mut rx = client.session_state();
    timeline.lock().unwrap().push((start.elapsed(), *rx.borrow_and_update()));
    let out = Arc::clone(&timeline);
    tokio::spawn(async move {
        while let Ok(Ok(())) = tokio::time::timeout_at(stop, rx.changed()).await {
            let state = *rx.borrow_and_update();
            out.lock().unwrap().push((start.elapsed(), state));
        }
    });
    timeline
}

/// Claim: 8 clients each hold an exclusive lock and an ephemeral entry, renewing; 2 others keep
/// trying to take those locks; the master is SIGKILLed. Once the new master is established
/// (well within the 5 s lease), every holder still has its session (same id, never `Lost`), its
/// lock (counted held, and a write fenced by its original token commits) and its ephemeral
/// entry; no contender was granted a held lock at any time; a session goes `InDanger` only
/// after less than half a lease of validity is left (never sooner than 0.4 TTL − one renewal
/// period after the kill) and is `Healthy` again soon after the new master is established.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_kill_keeps_sessions_locks_and_ephemerals() {
    // The product defaults: a 5 s lease renewed every 1.5 s (TTL / 3.3).
    master_kill_under_lock_load(Duration::from_secs(5), Duration::from_millis(1_500)).await;
}

/// Claim: the same with a 4 s lease renewed every 1.2 s, where a renewal that fails during
/// the failover leaves less than half the lease: sessions may go `InDanger` (the test prints
/// what it saw) and come back to `Healthy` with the new master, never `Lost`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_kill_with_a_short_lease_recovers_from_danger() {
    master_kill_under_lock_load(Duration::from_secs(4), Duration::from_millis(1_200)).await;
}

async fn master_kill_under_lock_load(ttl: Duration, renew: Duration) {
    let ttl_ms = ttl.as_millis().to_string();
    let mut cluster = Cluster::start_with(3, &["--lock-ttl-ms", &ttl_ms]);
    let observer = cluster.client_with(|c| c.locks = lock_config(ttl, renew)).await;
    let Some(master) = cluster.wait_master(&observer, ELECTION_WAIT).await else {
        panic!("no master elected\n{}", cluster.logs())
    };

    let start = Instant::now();
    // Every recorder and contender stops by then, whatever happens.
    let stop_at = start + renew + LOAD_BEFORE_KILL + ELECTION_WAIT + ttl * 3;
    let mut holders = Vec::new();
    for i in 0..HOLDERS {
        let client = cluster.client_with(|c| c.locks = lock_config(ttl, renew)).await;
        let lock = format!("/held-{i}");
        let ephemeral = format!("/eph-{i}");
        let guard = client.lock(&lock, false).await.unwrap_or_else(|e| panic!("{lock}: {e}"));
        client.create_ephemeral(&ephemeral, "mine").await.expect("ephemeral");
        let session = client.ensure_session().await.expect("session");
        let states = record_states(&client, start, stop_at);
        holders.push(Holder { client, guard, session, lock, ephemeral, states });
        // Spread the holders' renewals over the period, so that whenever the kill falls some
        // renewal is sent to the dying master and times out before the new one is known.
        tokio::time::sleep(renew / HOLDERS as u32).await;
    }
    let names: Vec<String> = holders.iter().map(|h| h.lock.clone()).collect();

    let stop = Arc::new(AtomicBool::new(false));
    let stolen: Arc<Mutex<Vec<(String, Zxid, Duration)>>> = Arc::default();
    let mut contenders = Vec::new();
    for _ in 0..CONTENDERS {
        let client = cluster.client_with(|c| c.locks = lock_config(ttl, renew)).await;
        let (names, stop, stolen) = (names.clone(), Arc::clone(&stop), Arc::clone(&stolen));
        contenders.push(tokio::spawn(async move {
            let (mut refused, mut failed) = (0u64, 0u64);
            while !stop.load(Ordering::SeqCst) && Instant::now() < stop_at {
                for name in &names {
                    match client.lock(name, false).await {
                        Ok(guard) => {
                            stolen.lock().unwrap().push((
                                name.clone(),
                                guard.token(),
                                start.elapsed(),
                            ));
                            let _ = guard.release().await;
                        }
                        Err(ClientError::LockHeld { .. }) => refused += 1,
                        Err(_) => failed += 1,
                    }
                }
                tokio::time::sleep(CONTEND_PAUSE).await;
            }
            (refused, failed)
        }));
    }

    tokio::time::sleep(LOAD_BEFORE_KILL).await;
    for h in &holders {
        assert!(h.guard.is_held(), "{} not held before the kill\n{}", h.lock, cluster.logs());
    }
    let killed_at = start.elapsed();
    cluster.kill(master);
    let Some(new_master) = cluster.wait_master(&observer, ELECTION_WAIT).await else {
        panic!("no new master after the kill\n{}", cluster.logs())
    };
    let established_at = start.elapsed();
    // Past one whole lease after the kill (and the new master's takeover): a lease that was
    // not carried over, or not renewed with the new master, has expired by now.
    tokio::time::sleep_until(start + killed_at + ttl * 2).await;
    stop.store(true, Ordering::SeqCst);
    let mut contention = Vec::new();
    for task in contenders {
        contention.push(task.await.expect("contender"));
    }
    let checked_at = start.elapsed();

    eprintln!(
        "killed master {master} at {killed_at:?}; node {new_master} established by \
         {established_at:?} (failover {:?}); checked at {checked_at:?}; contenders \
         (refused, other errors): {contention:?}",
        established_at - killed_at
    );
    for h in &holders {
        eprintln!("{}: {:?}", h.lock, h.states.lock().unwrap());
    }

    let stolen = stolen.lock().unwrap().clone();
    assert!(
        stolen.is_empty(),
        "contenders were granted held locks {} times, first: {:?}\n{}",
        stolen.len(),
        &stolen[..stolen.len().min(5)],
        cluster.logs()
    );
    assert!(
        contention.iter().all(|(refused, _)| *refused > 0),
        "a contender was never refused (did it run?): {contention:?}"
    );
    let earliest_danger = killed_at + ttl.mul_f64(0.4) - renew - SLACK;
    let healthy_by = established_at + renew + SLACK;
    for h in &holders {
        let states = h.states.lock().unwrap().clone();
        assert!(
            states.iter().all(|(_, s)| *s != SessionState::Lost),
            "{}: session lost across the failover: {states:?}\n{}",
            h.lock,
            cluster.logs()
        );
        assert_eq!(
            states.last().map(|s| s.1),
            Some(SessionState::Healthy),
            "{}: {states:?}",
            h.lock
        );
        for (at, state) in &states {
            if *state == SessionState::InDanger {
                assert!(
                    *at >= earliest_danger,
                    "{}: InDanger at {at:?}, before half a lease could be left \
                     ({earliest_danger:?}): {states:?}",
                    h.lock
                );
            }
        }
        if let Some((at, _)) = states.iter().rev().find(|(_, s)| *s == SessionState::InDanger) {
            let healthy = states.iter().find(|(t, s)| t > at && *s == SessionState::Healthy);
            assert!(
                healthy.is_some_and(|(t, _)| *t <= healthy_by),
                "{}: not Healthy by {healthy_by:?} after InDanger at {at:?}: {states:?}",
                h.lock
            );
        }
        assert!(
            h.guard.is_held(),
            "{}: lock not held after the failover\n{}",
            h.lock,
            cluster.logs()
        );
        let session = h.client.ensure_session().await.expect("session after the failover");
        assert_eq!(session, h.session, "{}: a new session was opened", h.lock);
        let fenced = Batch::new()
            .write(format!("{}-fenced", h.lock), Bytes::from_static(b"after failover"))
            .if_token(h.lock.clone(), h.guard.token());
        h.client.batch(fenced).await.unwrap_or_else(|e| {
            panic!(
                "{}: write fenced by token {} refused: {e}\n{}",
                h.lock,
                h.guard.token(),
                cluster.logs()
            )
        });
        let eph = observer
            .read_with(&h.ephemeral, ReadOptions::linearizable())
            .await
            .unwrap_or_else(|e| panic!("reading {}: {e}", h.ephemeral));
        assert_eq!(
            eph.map(|v| v.value),
            Some(Bytes::from_static(b"mine")),
            "{}: ephemeral entry gone after the failover",
            h.ephemeral
        );
    }
    // A held lock is still refused to others after the failover.
    match observer.lock(&holders[0].lock, false).await {
        Err(ClientError::LockHeld { .. }) => {}
        other => panic!("held lock after the failover: {other:?}"),
    }
}
