//! End-to-end benchmark of a three-node cluster on loopback: write throughput and latency at
//! several concurrencies, then failover time after SIGKILL of the master.
//!
//! ```text
//! cargo build --release -p fs-node --bin shoal-fs
//! cargo run --release -p cache-client --example bench_cluster -- [--secs 5] [--trials 20]
//! ```
//! Three `shoal-fs` (release, fdatasync on) run as child processes with their data under the
//! system temporary directory (removed at the end). Writes are `Client::write` of 256-byte
//! values to 1024 keys per writer, through the socket transport; latency is from the call to
//! the acknowledgement (committed on a majority, applied on the master).

use bytes::Bytes;
use cache_client::dev::DevCluster;
use hdrhistogram::Histogram;
use protocol::message::data::Role;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const VALUE_BYTES: usize = 256;
const CONCURRENCY: [usize; 3] = [1, 64, 256];
const WARMUP: Duration = Duration::from_secs(1);
/// Writers share at most this many clients (each a socket endpoint).
const CLIENTS_MAX: usize = 8;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn shoal_fs() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile = exe.parent().and_then(|p| p.parent()).expect("target/<profile>/examples");
    let path = profile.join("shoal-fs");
    assert!(
        path.exists(),
        "{} missing: cargo build --release -p fs-node --bin shoal-fs",
        path.display()
    );
    path
}

#[tokio::main]
async fn main() {
    let secs = arg("--secs", 5);
    let skip_throughput = std::env::args().any(|a| a == "--failover-only");
    let trials = arg("--trials", 20);
    let dir = std::env::temp_dir().join(format!("shoal-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // Optional engine timing for every node, e.g. `--election-timeout-ms 150 --lease-ms 100`.
    let mut extra = Vec::new();
    for flag in
        ["--election-timeout-ms", "--lease-ms", "--heartbeat-interval-ms", "--drift-margin-ms"]
    {
        if let Some(v) = std::env::args().skip_while(|a| a != flag).nth(1) {
            extra.push(flag.to_string());
            extra.push(v);
        }
    }
    let mut cluster =
        DevCluster::start_with(shoal_fs(), &dir, 3, extra).expect("start the cluster");
    let master = cluster.wait_master(Duration::from_secs(30)).await.expect("a master");
    println!("cluster up, master {master}; data in {}", dir.display());

    println!("| writers | writes/s | p50 ms | p99 ms | max ms | errors |");
    println!("|---|---|---|---|---|---|");
    for c in CONCURRENCY {
        if !skip_throughput {
            throughput(&cluster, c, Duration::from_secs(secs)).await;
        }
    }

    if trials > 0 {
        failover(&mut cluster, trials).await;
    }
    cluster.stop_all();
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
}

async fn throughput(cluster: &DevCluster, writers: usize, run: Duration) {
    let mut clients = Vec::new();
    for _ in 0..writers.min(CLIENTS_MAX) {
        clients.push(cluster.client(Duration::from_secs(2)).await.expect("client"));
    }
    let value = Bytes::from(vec![b'x'; VALUE_BYTES]);
    let start = Instant::now();
    let measure_from = start + WARMUP;
    let end = measure_from + run;
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new(3).expect("histogram")));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..writers {
        let client = clients[w % clients.len()].clone();
        let (hist, errors, value) = (hist.clone(), errors.clone(), value.clone());
        tasks.push(tokio::spawn(async move {
            let mut local = Histogram::<u64>::new(3).expect("histogram");
            let mut i = 0u64;
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                i += 1;
                let key = format!("/c{writers}-w{w}-k{}", i % 1024);
                let ok = client.write(&key, value.clone()).await.is_ok();
                if t0 >= measure_from && Instant::now() <= end {
                    if ok {
                        local.record(t0.elapsed().as_micros() as u64).expect("record");
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            hist.lock().unwrap().add(&local).expect("merge");
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let h = hist.lock().unwrap();
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "| {writers} | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
        h.len() as f64 / run.as_secs_f64(),
        ms(0.5),
        ms(0.99),
        h.max() as f64 / 1000.0,
        errors.load(Ordering::Relaxed)
    );
}

async fn failover(cluster: &mut DevCluster, trials: u64) {
    let mut to_master = Vec::new();
    let mut to_write = Vec::new();
    for trial in 0..trials {
        let master = cluster.wait_master(Duration::from_secs(30)).await.expect("a master");
        let writer = cluster.client(Duration::from_millis(100)).await.expect("client");
        let prober = cluster.client(Duration::from_millis(50)).await.expect("client");
        let survivors: Vec<String> = cluster
            .file
            .members
            .iter()
            .filter(|(id, _)| **id != master.to_string())
            .map(|(_, a)| a.clone())
            .collect();
        // Warm the writer up on the current master.
        writer.write("/failover", Bytes::from_static(b"before")).await.expect("warm-up write");
        let stop = Arc::new(AtomicBool::new(false));
        let killed_at = Instant::now();
        cluster.kill(master);
        let w = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let v = Bytes::from(format!("after {n}"));
                    if writer.write("/failover", v).await.is_ok() {
                        return Some(killed_at.elapsed());
                    }
                }
                None
            })
        };
        let p = {
            let stop = stop.clone();
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    for a in &survivors {
                        if let Ok(s) = prober.status_of(a).await {
                            if s.role == Role::Master {
                                return Some(killed_at.elapsed());
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                None
            })
        };
        let first_write = tokio::time::timeout(Duration::from_secs(20), w).await;
        stop.store(true, Ordering::Relaxed);
        let elected = p.await.ok().flatten();
        let first_write = first_write.ok().and_then(|r| r.ok()).flatten();
        match (elected, first_write) {
            (Some(e), Some(f)) => {
                println!(
                    "trial {trial}: killed {master}; new master after {:.0} ms, first write \
                     acknowledged after {:.0} ms",
                    e.as_secs_f64() * 1000.0,
                    f.as_secs_f64() * 1000.0
                );
                to_master.push(e);
                to_write.push(f);
            }
            other => println!("trial {trial}: no failover within 20 s ({other:?})"),
        }
        cluster.spawn(master).expect("restart the killed node");
    }
    let stats = |v: &mut Vec<Duration>| {
        v.sort();
        if v.is_empty() {
            return "n/a".to_string();
        }
        format!(
            "median {:.0} ms, max {:.0} ms, min {:.0} ms over {} trials",
            v[v.len() / 2].as_secs_f64() * 1000.0,
            v[v.len() - 1].as_secs_f64() * 1000.0,
            v[0].as_secs_f64() * 1000.0,
            v.len()
        )
    };
    println!("SIGKILL -> new established master: {}", stats(&mut to_master));
    println!("SIGKILL -> first acknowledged write: {}", stats(&mut to_write));
}
