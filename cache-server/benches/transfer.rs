//! File-transfer rate on loopback multicast, printed as a table for BENCHMARKS.md.
//!
//! Run: `cargo bench -p cache-server --bench transfer` (`-- --quick` for 16 MiB instead of 64).
//!
//! Scenario: one donor and one or two receivers in this process, each on its own `Endpoint`
//! bound to the transfer group on 127.0.0.1, driven by `transfer::net` exactly as a node drives
//! them; the data set is in memory on both sides (`MemSource`, `MemSink`) so the figure is the
//! protocol's, not the disk's. Rows: the default pace (32 MiB/s) and a pace of 512 MiB/s (in
//! practice: as fast as the process goes), to one and to two receivers, each with no loss and
//! with 10 % of what each receiver gets dropped by the seeded fault hook. Time runs from the
//! first receiver joining to every receiver having installed every file (every block and
//! whole-file MD5 checked). A last row is the ceiling: MD5 of the same data set on one core
//! (best of 3), since every byte is hashed at least twice per receiver (block, whole file) and
//! once by the donor (block).

use cache_server::transfer::net::{run_receiver, spawn_donor_with, transfer_endpoint_config};
use cache_server::transfer::{md5_of, Donor, DonorConfig, MemSink, MemSource, ReceiverConfig};
use protocol::header::ClusterAuth;
use protocol::message::transfer::{RequestFile, TransferPurpose};
use protocol::messaging::{Endpoint, EndpointConfig, FaultConfig};
use protocol::{SenderId, Zxid};
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

const MIB: u64 = 1024 * 1024;

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct we pass; RUSAGE_SELF is always valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage failed");
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(usage.ru_utime) + t(usage.ru_stime)
}

fn config(group: SocketAddrV4, id: SenderId, drop_percent: u32) -> EndpointConfig {
    let base = EndpointConfig::new(id, 1, ClusterAuth::new(0xBE7F, b"bench key"));
    let mut c = transfer_endpoint_config(&base, group);
    c.interface = Ipv4Addr::LOCALHOST;
    c.unicast_bind = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    c.fault = FaultConfig::drop_receive_percent(id * 7919, drop_percent);
    c
}

struct Row {
    wall: Duration,
    cpu_s: f64,
    repair_blocks: u64,
    stream_blocks: u64,
    fault_drops: u64,
    repair_requests: u64,
}

async fn run(source: &MemSource, rate: u64, loss: u32, receivers: u8, port: u16) -> Row {
    let group = SocketAddrV4::new(Ipv4Addr::new(239, 254, 200, 9), port);
    let donor_config = DonorConfig { rate_bytes_per_s: rate, ..DonorConfig::default() };
    let donor = Donor::new(donor_config, 1, 1, Zxid(1), source.describe(), group.to_string(), 0)
        .expect("offer fits");
    let donor_endpoint = Endpoint::bind(config(group, 1, 0)).await.expect("bind");
    let mut endpoints = Vec::new();
    for id in 2..2 + u64::from(receivers) {
        endpoints.push(Endpoint::bind(config(group, id, loss)).await.expect("bind"));
    }
    let cpu = cpu_seconds();
    let (handle, task) = spawn_donor_with(donor, donor_endpoint, Box::new(source.clone()));
    let mut running = Vec::new();
    for (i, endpoint) in endpoints.into_iter().enumerate() {
        let id = 2 + i as u8;
        let request = RequestFile {
            receiver: id,
            applied: Zxid(0),
            purpose: TransferPurpose::Join,
            free_bytes: u64::MAX,
        };
        let offer = handle.add_receiver(&request).expect("joins");
        running.push(tokio::spawn(async move {
            let mut sink = MemSink::default();
            let run = run_receiver(
                ReceiverConfig::default(),
                id,
                &offer,
                u64::MAX,
                &mut sink,
                &endpoint,
                None,
            )
            .await
            .expect("installs");
            let drops = endpoint.stats().fault_dropped_receive;
            endpoint.shutdown().await;
            (run, sink, drops)
        }));
    }
    let (mut fault_drops, mut repair_requests) = (0, 0);
    let mut wall = Duration::ZERO;
    for r in running {
        let (run, sink, drops) = r.await.expect("receiver");
        wall = wall.max(run.installed_after);
        assert_eq!(sink.installed.as_ref(), Some(&source.files), "installed what was sent");
        fault_drops += drops;
        repair_requests += run.stats.repair_requests_sent;
    }
    task.await.expect("donor").expect("donor ends");
    let stats = handle.stats();
    Row {
        wall,
        cpu_s: cpu_seconds() - cpu,
        repair_blocks: stats.repair_blocks_sent,
        stream_blocks: stats.stream_blocks_sent,
        fault_drops,
        repair_requests,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let total_mib = if quick { 16 } else { 64 };
    let mut rng = SmallRng::seed_from_u64(1);
    let files: Vec<(String, Vec<u8>)> = (0..4)
        .map(|i| {
            let mut data = vec![0u8; (total_mib * MIB / 4) as usize];
            rng.fill_bytes(&mut data);
            (format!("{i:010}.data"), data)
        })
        .collect();
    let source = MemSource::new(files);
    let total = total_mib * MIB;
    println!("{total_mib} MiB in 4 files, loopback multicast");
    println!("| pace | receivers | loss | time to all installed | MiB/s (data set / time) | stream blocks | repair blocks | repair requests | fault drops | CPU s | CPU util |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut port = 47_311;
    for rate in [32 * MIB, 512 * MIB] {
        for receivers in [1u8, 2] {
            for loss in [0u32, 10] {
                port += 1;
                let row = run(&source, rate, loss, receivers, port).await;
                let secs = row.wall.as_secs_f64();
                println!(
                    "| {} MiB/s | {receivers} | {loss} % | {:.2} s | {:.1} | {} | {} | {} | {} | {:.2} | {:.0} % |",
                    rate / MIB,
                    secs,
                    total as f64 / MIB as f64 / secs,
                    row.stream_blocks,
                    row.repair_blocks,
                    row.repair_requests,
                    row.fault_drops,
                    row.cpu_s,
                    row.cpu_s / secs * 100.0
                );
            }
        }
    }
    // The ceiling: MD5 alone over the same bytes on one core (this thread), best of 3.
    let mut best = f64::INFINITY;
    let mut digests = Vec::new();
    for _ in 0..3 {
        let started = std::time::Instant::now();
        digests = source.files.iter().map(|(_, data)| md5_of(data)).collect::<Vec<_>>();
        best = best.min(started.elapsed().as_secs_f64());
    }
    assert_eq!(digests.len(), source.files.len());
    println!(
        "| MD5 only (one core) | - | - | {best:.2} s | {:.1} | - | - | - | - | {best:.2} | 100 % |",
        total as f64 / MIB as f64 / best
    );
}
