//! Seeded deterministic simulation of 3- and 5-node clusters of replication engines with
//! random partitions, crashes (some wiping the disk), restarts, loss, duplication and reordering; every client history
//! is checked for linearizability per key.
//!
//! CI runs a bounded number of seeds. `SHOAL_SIM_SEEDS=N` runs N seeds per cluster size;
//! `SHOAL_SIM_SEED=S` runs only seed S (what a failure prints).

use shoal_tests::linearizability;
use shoal_tests::sim::{self, SimConfig, SimReport};

/// Seeds per cluster size in CI.
const CI_SEEDS: u64 = 40;

fn seeds() -> Vec<u64> {
    if let Ok(s) = std::env::var("SHOAL_SIM_SEED") {
        return vec![s.parse().expect("SHOAL_SIM_SEED is a number")];
    }
    let n = std::env::var("SHOAL_SIM_SEEDS")
        .ok()
        .map(|s| s.parse().expect("SHOAL_SIM_SEEDS is a number"))
        .unwrap_or(CI_SEEDS);
    (1..=n).collect()
}

fn run_checked(cfg: SimConfig) -> SimReport {
    let seed = cfg.seed;
    let nodes = cfg.nodes;
    let repro =
        format!("SHOAL_SIM_SEED={seed} cargo test -p shoal-tests --release --test replication_sim");
    let report = match sim::run(cfg) {
        Ok(r) => r,
        Err(e) => panic!("seed {seed}, {nodes} nodes: {e}\nreproduce: {repro}"),
    };
    if let Err(v) = linearizability::check(&report.history) {
        panic!("seed {seed}, {nodes} nodes: {v}\nreproduce: {repro}");
    }
    report
}

fn summary(reports: &[SimReport]) -> String {
    let ok: usize = reports.iter().map(|r| r.ops_ok).sum();
    let unknown: usize = reports.iter().map(|r| r.ops_unknown).sum();
    let committed: usize = reports.iter().map(|r| r.committed_entries).sum();
    let crashes: usize = reports.iter().map(|r| r.crashes).sum();
    let wipes: usize = reports.iter().map(|r| r.wipes).sum();
    let snapshots: usize = reports.iter().map(|r| r.snapshots_installed).sum();
    let lease_reads: usize = reports.iter().map(|r| r.lease_reads).sum();
    format!(
        "{} runs: {ok} ops answered ({lease_reads} lease reads), {unknown} unknown, \
         {committed} entries committed, {crashes} crashes ({wipes} wiping the disk), {snapshots} snapshot installs",
        reports.len()
    )
}

/// Under faults, a 3-node cluster keeps one master per epoch, applies one committed order
/// everywhere, converges once healed, and its client history is linearizable.
#[test]
fn three_nodes_stay_linearizable_under_faults() {
    let reports: Vec<SimReport> =
        seeds().into_iter().map(|s| run_checked(SimConfig::faulty(s, 3))).collect();
    println!("3 nodes: {}", summary(&reports));
    assert!(reports.iter().all(|r| r.ops_ok > 0), "no operation ever succeeded");
}

/// The same for 5 nodes.
#[test]
fn five_nodes_stay_linearizable_under_faults() {
    let reports: Vec<SimReport> =
        seeds().into_iter().map(|s| run_checked(SimConfig::faulty(s, 5))).collect();
    println!("5 nodes: {}", summary(&reports));
    assert!(reports.iter().all(|r| r.ops_ok > 0), "no operation ever succeeded");
}

/// Failover in simulated time: from a master's crash to the next established master, with
/// no loss and no partitions. Printed, not asserted beyond "it happens" (speed is measured,
/// not asserted).
#[test]
fn failover_time_after_master_crash() {
    for nodes in [3, 5] {
        let mut samples: Vec<u64> = seeds()
            .into_iter()
            .flat_map(|s| run_checked(SimConfig::failover(s, nodes)).failovers_ms)
            .collect();
        assert!(!samples.is_empty(), "no master crash was measured");
        samples.sort_unstable();
        let pct = |p: usize| samples[(samples.len() - 1) * p / 100];
        println!(
            "failover, {nodes} nodes, {} samples: min {} ms, median {} ms, p90 {} ms, max {} ms",
            samples.len(),
            samples[0],
            pct(50),
            pct(90),
            samples[samples.len() - 1]
        );
    }
}
