//! Lock and transaction figures, in process: `cache-client` over the in-memory network to one
//! `Server` over `StateBackend` (the real state machine and lease clock, an immediate log with
//! no replication, no fsync and no sockets). They measure the client and server logic only,
//! not the network or the disk. Ignored by default; run with
//! `cargo test --release -p shoal-tests --test locks_bench -- --ignored --nocapture`.

use cache_client::{Client, ClientConfig};
use hdrhistogram::Histogram;
use shoal_tests::state_backend::Harness;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const CLIENTS: u64 = 16;
const SECONDS: u64 = 3;

fn config(h: &Harness, seed: u64) -> ClientConfig {
    h.config(seed)
}

/// Uncontended acquire+release pairs (each client its own lock), 16 clients at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn lock_pairs_16_clients() {
    let h = Harness::new(Duration::from_secs(5));
    let mut tasks = Vec::new();
    let end = Instant::now() + Duration::from_secs(SECONDS);
    for seed in 0..CLIENTS {
        let client: Client<_> = h.client_with(config(&h, seed)).0;
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3).unwrap();
            let name = format!("/bench/lock{seed}");
            while Instant::now() < end {
                let start = Instant::now();
                let guard = client.lock(&name, false).await.unwrap();
                guard.release().await.unwrap();
                hist.record(start.elapsed().as_micros() as u64).unwrap();
            }
            hist
        }));
    }
    let mut all = Histogram::<u64>::new(3).unwrap();
    for t in tasks {
        all.add(t.await.unwrap()).unwrap();
    }
    println!(
        "lock acquire+release, {CLIENTS} clients: {:.0} pairs/s, p50 {} us, p99 {} us",
        all.len() as f64 / SECONDS as f64,
        all.value_at_quantile(0.5),
        all.value_at_quantile(0.99)
    );
}

/// 4-key transactions (read and write each key), 16 clients on disjoint keys, commits/s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn txn_commits_4_keys() {
    let h = Harness::new(Duration::from_secs(5));
    let setup = h.client(1000);
    setup.mkdir("/t").await.unwrap();
    let end = Instant::now() + Duration::from_secs(SECONDS);
    let mut tasks = Vec::new();
    for seed in 0..CLIENTS {
        let client = h.client_with(config(&h, seed)).0;
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3).unwrap();
            let keys: Vec<String> = (0..4).map(|k| format!("/t/c{seed}k{k}")).collect();
            let mut n = 0u64;
            while Instant::now() < end {
                let start = Instant::now();
                let mut b = client.transaction();
                for k in &keys {
                    b = b.write(k.clone());
                }
                let mut txn = b.begin().await.unwrap();
                for k in &keys {
                    let _ = txn.read(k).await.unwrap();
                    txn.write(k, n.to_string()).unwrap();
                }
                txn.commit().await.unwrap();
                hist.record(start.elapsed().as_micros() as u64).unwrap();
                n += 1;
            }
            hist
        }));
    }
    let mut all = Histogram::<u64>::new(3).unwrap();
    for t in tasks {
        all.add(t.await.unwrap()).unwrap();
    }
    println!(
        "4-key transactions, {CLIENTS} clients: {:.0} commits/s, p50 {} us, p99 {} us",
        all.len() as f64 / SECONDS as f64,
        all.value_at_quantile(0.5),
        all.value_at_quantile(0.99)
    );
}

/// Time for a lock held by a client that dies (stops renewing, cut off) to be granted to a
/// waiter: bounded by the TTL from the dead client's last renewal, plus the expiry tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn killed_holder_lock_free_time() {
    let h = Harness::new(Duration::from_secs(5));
    let (dead, transport) = h.client_with(config(&h, 1));
    let waiter = h.client(2);
    let guard = dead.lock("/bench/killed", false).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    transport.cut_switch().store(true, Ordering::SeqCst);
    std::mem::forget(guard);
    drop(dead);
    let killed = Instant::now();
    let g = waiter.lock_wait("/bench/killed", false, Duration::from_secs(30)).await.unwrap();
    println!(
        "lock of a killed holder granted to a waiter after {:?} (TTL 5 s, renewals every 1.5 s)",
        killed.elapsed()
    );
    g.release().await.unwrap();
}
