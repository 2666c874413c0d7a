//! Real `shoal-fs` processes: what a SIGKILL of a *follower* costs lock rounds and 2-key
//! transactions while the master streams a write load (RELIABILITY.md, "Follower faults and
//! credit"). A measurement probe behind `SHOAL_FOLLOWER_KILL_PROBE=1` (about 15 s): it prints
//! every operation slower than `SLOW_MS` with its start relative to the kill (and where a lock
//! round or transaction spent it), the longest operation of each kind before and after, and
//! the nodes' `member_left` / `credit_stalled` / `multicast_blocked` log lines; it asserts only
//! that locks and transactions keep completing after the kill (speed is never asserted).
//! The credit stall needs the master to multicast a window (1024 datagrams) within the 3 s
//! member timeout: on a busy machine the debug build may not, and then shows no stall.
//!
//! `SHOAL_FOLLOWER_KILL_PROBE=1 cargo test -p shoal-tests --test cluster_follower_kill -- --nocapture`

use bytes::Bytes;
use shoal_tests::cluster::Cluster;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ELECTION_WAIT: Duration = Duration::from_secs(20);
/// Load before the kill (the baseline) and after it (past the 3 s member timeout).
const BEFORE_KILL_MS: u64 = 3_000;
const AFTER_KILL_MS: u64 = 6_000;
/// Writers of `VALUE_BYTES` values: the master's reliable stream then carries hundreds of
/// datagrams a second (values over the 8 KiB batch: a datagram per proposal and update), as under the bank and lock loads
/// whose values (receipt lists, lock logs) grow to several KB.
const WRITERS: usize = 8;
const VALUE_BYTES: usize = 9_000;
const SLOW_MS: u128 = 300;

/// (kind, start relative to the kill in ms, duration in ms, ok, where the time went)
type Sample = (&'static str, i128, u128, bool, String);

/// Claim: with a follower killed under load, lock rounds and 2-key transactions keep
/// completing (at least one of each in the second half of the window after the kill); the
/// printed timings are the measurement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_kill_costs_of_locks_and_transactions() {
    if std::env::var("SHOAL_FOLLOWER_KILL_PROBE").is_err() {
        eprintln!("skipped: set SHOAL_FOLLOWER_KILL_PROBE=1 to run this measurement (~15 s)");
        return;
    }
    let mut cluster = Cluster::start(3);
    let client = cluster.client().await;
    let Some(master) = cluster.wait_master(&client, ELECTION_WAIT).await else {
        panic!("no master elected\n{}", cluster.logs())
    };
    let victim = cluster.ids().into_iter().find(|id| *id != master).expect("a follower");

    let start = Instant::now();
    let kill_at = start + Duration::from_millis(BEFORE_KILL_MS);
    let end = kill_at + Duration::from_millis(AFTER_KILL_MS);
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let rel = move |t: Instant| -> i128 {
        if t >= kill_at {
            (t - kill_at).as_millis() as i128
        } else {
            -((kill_at - t).as_millis() as i128)
        }
    };
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (client, samples, stop) = (cluster.client().await, samples.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let value = Bytes::from(vec![b'a' + w as u8; VALUE_BYTES]);
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let ok = client.write(&format!("/load{w}"), value.clone()).await.is_ok();
                let sample = ("write", rel(t), t.elapsed().as_millis(), ok, String::new());
                samples.lock().unwrap().push(sample);
            }
        }));
    }
    {
        let (client, samples, stop) = (cluster.client().await, samples.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let before = client.stats();
                let (ok, granted_ms) = match client.lock("/probe-lock", false).await {
                    Ok(guard) => {
                        let granted_ms = t.elapsed().as_millis();
                        (guard.release().await.is_ok(), granted_ms)
                    }
                    Err(_) => (false, t.elapsed().as_millis()),
                };
                let after = client.stats();
                let detail = format!(
                    "granted after {granted_ms} ms; timeouts {}, redirects {}",
                    after.timeouts - before.timeouts,
                    after.redirects - before.redirects
                );
                let sample = ("lock", rel(t), t.elapsed().as_millis(), ok, detail);
                samples.lock().unwrap().push(sample);
            }
        }));
    }
    {
        let (client, samples, stop) = (cluster.client().await, samples.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let t = Instant::now();
                let before = client.stats();
                let marks = Mutex::new(Vec::new());
                let mark = |what: &'static str| marks.lock().unwrap().push((what, t.elapsed()));
                let ok = async {
                    let mut txn = client
                        .transaction()
                        .write("/acct-a")
                        .write("/acct-b")
                        .wait(Duration::from_secs(2))
                        .begin()
                        .await
                        .ok()?;
                    mark("locked");
                    txn.read("/acct-a").await.ok()?;
                    txn.read("/acct-b").await.ok()?;
                    mark("read");
                    txn.write("/acct-a", format!("a{i}")).ok()?;
                    txn.write("/acct-b", format!("b{i}")).ok()?;
                    let zxid = txn.commit().await.ok();
                    mark("committed");
                    zxid
                }
                .await
                .is_some();
                let after = client.stats();
                let mut detail: Vec<String> = marks
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|(what, at)| format!("{what} at {} ms", at.as_millis()))
                    .collect();
                detail.push(format!(
                    "reads sent {}, timeouts {}, redirects {}, behind {}",
                    after.reads_sent - before.reads_sent,
                    after.timeouts - before.timeouts,
                    after.redirects - before.redirects,
                    after.behind - before.behind
                ));
                let sample = ("txn", rel(t), t.elapsed().as_millis(), ok, detail.join("; "));
                samples.lock().unwrap().push(sample);
            }
        }));
    }
    tokio::time::sleep_until(kill_at.into()).await;
    cluster.kill(victim);
    tokio::time::sleep_until(end.into()).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }

    let samples = samples.lock().unwrap().clone();
    eprintln!("killed follower {victim} (master {master}) at t=0");
    for kind in ["write", "lock", "txn"] {
        let of = |after: bool| samples.iter().filter(move |s| s.0 == kind && (s.1 >= 0) == after);
        let count = |after: bool| of(after).count();
        let failed = |after: bool| of(after).filter(|s| !s.3).count();
        let longest = |after: bool| of(after).map(|s| s.2).max().unwrap_or(0);
        eprintln!(
            "{kind:5}: before kill {} ops ({} failed), longest {} ms; after kill {} ops ({} failed), longest {} ms",
            count(false),
            failed(false),
            longest(false),
            count(true),
            failed(true),
            longest(true)
        );
    }
    for s in samples.iter().filter(|s| s.2 >= SLOW_MS) {
        eprintln!("slow {:5} called at {:+} ms took {} ms (ok: {}) {}", s.0, s.1, s.2, s.3, s.4);
    }
    for id in cluster.ids() {
        let log = cluster.node_log(id);
        let events = ["member_left", "multicast_blocked", "credit_stalled"];
        for line in log.lines().filter(|l| events.iter().any(|e| l.contains(e))) {
            eprintln!("node {id} log: {line}");
        }
    }
    let late = (AFTER_KILL_MS / 2) as i128;
    for kind in ["lock", "txn"] {
        assert!(
            samples.iter().any(|s| s.0 == kind && s.1 >= late && s.3),
            "no {kind} completed in the second half after the kill\n{}",
            cluster.logs()
        );
    }
}
