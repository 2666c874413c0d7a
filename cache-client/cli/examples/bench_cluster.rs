//! End-to-end benchmark of a three-node cluster on loopback: write throughput and latency at
//! several concurrencies, then failover time after SIGKILL of the master. The measuring code is
//! `shoal_cli::bench` (what `shoal bench` runs); this example only starts the cluster and
//! prints a table.
//!
//! ```text
//! cargo build --release -p fs-node --bin shoal-fs
//! cargo run --release -p shoal-cli --example bench_cluster -- [--secs 5] [--trials 20]
//! ```
//! Three `shoal-fs` (release, fdatasync on) run as child processes with their data under the
//! system temporary directory (removed at the end). Writes are `Client::write` of 256-byte
//! values to 1024 keys, through the socket transport; latency is from the call to the
//! acknowledgement (committed on a majority, applied on the master).

use shoal_cli::bench::{self, BenchArgs, Workload};
use shoal_cli::dev::DevCluster;
use std::path::PathBuf;
use std::time::Duration;

const CONCURRENCY: [u64; 3] = [1, 64, 256];

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
    let trials = arg("--trials", 20);
    let dir = std::env::temp_dir().join(format!("shoal-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // Optional engine timing for every node, e.g. `--election-timeout-ms 150 --lease-ms 100`;
    // `--failover-only` skips the throughput rows.
    let skip_throughput = std::env::args().any(|a| a == "--failover-only");
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

    println!("| writers | writes/s | p50 ms | p99 ms | p99.9 ms | max ms | errors |");
    println!("|---|---|---|---|---|---|---|");
    for writers in CONCURRENCY {
        if skip_throughput {
            break;
        }
        let mut clients = Vec::new();
        for _ in 0..(writers as usize).min(bench::ENDPOINTS_MAX) {
            clients.push(cluster.client(Duration::from_secs(2)).await.expect("client"));
        }
        let args = BenchArgs {
            workload: Workload::Put,
            clients: writers,
            duration: Duration::from_secs(secs),
            value_bytes: 256,
            keys: 1024,
            trials: 0,
            no_cache: false,
            linearizable: false,
            json: false,
            plot: None,
        };
        let r = bench::measure(&clients, &args, false).await.expect("measure");
        let ms = |us: f64| us / 1000.0;
        println!(
            "| {writers} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
            r.throughput_ops_per_s,
            ms(r.latency_us.p50),
            ms(r.latency_us.p99),
            ms(r.latency_us.p999),
            ms(r.latency_us.max),
            r.errors
        );
    }

    if trials > 0 {
        let report = bench::failover(&mut cluster, trials).await.expect("failover");
        println!("{}", report.text());
    }
    cluster.stop_all();
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
}
