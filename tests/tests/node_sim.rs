//! The whole-node simulation ([`shoal_tests::nodesim`]) over a bounded number of seeds: the
//! product's node core on simulated disks under power loss, kill -9, stalls, disk wipes,
//! network faults and clock rates. `SHOAL_SIM_SEEDS=N` runs N seeds per case instead of the
//! CI default (`shoal-sim --seeds N` does the same from the command line).

use shoal_tests::nodesim::{self, Faults, NodeSimConfig, NodeSimReport};

/// Seeds per case in CI (a seed takes tens of ms in a release build).
const CI_SEEDS: u64 = 500;

fn seeds() -> u64 {
    std::env::var("SHOAL_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(CI_SEEDS)
}

/// Runs `seeds()` seeds from `first`; fails naming every failing seed and its replay command.
fn run_seeds(first: u64, nodes: usize, faults: Faults) -> Vec<NodeSimReport> {
    let mut failures = Vec::new();
    let mut reports = Vec::new();
    for seed in first..first + seeds() {
        let cfg = NodeSimConfig::new(seed, nodes, faults);
        match nodesim::run(cfg.clone()) {
            Ok(r) => reports.push(r),
            Err(e) => failures.push(format!("seed {seed}: {e}\n  replay: {}", cfg.replay())),
        }
    }
    assert!(failures.is_empty(), "{} failed:\n{}", failures.len(), failures.join("\n"));
    reports
}

/// The faults were injected and the clients did work: a run that checks nothing passes
/// nothing.
fn assert_exercised(reports: &[NodeSimReport], faults: Faults) {
    let sum = |f: fn(&NodeSimReport) -> usize| reports.iter().map(f).sum::<usize>();
    assert!(sum(|r| r.ops_ok) > reports.len() * 100, "too few operations answered");
    if faults.power {
        assert!(sum(|r| r.power_losses) > 0 && sum(|r| r.kills) > 0, "no crash injected");
    }
    if faults.stall {
        assert!(sum(|r| r.stalls) > 0, "no stall injected");
    }
    if faults.wipe {
        assert!(sum(|r| r.wipes) > 0, "no wipe injected");
    }
    if faults.net {
        assert!(sum(|r| r.partitions) > 0, "no partition injected");
    }
}

#[test]
fn three_nodes_under_every_fault() {
    let faults = Faults::all();
    let reports = run_seeds(1, 3, faults);
    assert_exercised(&reports, faults);
}

#[test]
fn five_nodes_under_every_fault() {
    let faults = Faults::all();
    let reports = run_seeds(100_001, 5, faults);
    assert_exercised(&reports, faults);
}

/// Seeds that failed with `--faults wipe` before a wiped node stopped voting (issue 14
/// point 3; commit "node: the data log opens with cut-and-report ..."): acknowledged writes
/// lost (not linearizable), two masters in epoch 1, a follower told to truncate below what it
/// applied, a cluster that did not converge. They pin the fix as long as the simulation draws
/// its randomness as it does now; `three_nodes_under_every_fault` covers the rest.
#[test]
fn wiped_node_regression_seeds() {
    let faults = Faults { wipe: true, ..Faults::default() };
    let mut failures = Vec::new();
    for seed in [7, 21, 91, 119, 189, 210, 223, 227, 287, 288] {
        let cfg = NodeSimConfig::new(seed, 3, faults);
        if let Err(e) = nodesim::run(cfg.clone()) {
            failures.push(format!("seed {seed}: {e}\n  replay: {}", cfg.replay()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
