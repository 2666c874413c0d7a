//! The whole-node simulation ([`shoal_tests::nodesim`]) over a bounded number of seeds: the
//! product's node core on simulated disks under power loss, kill -9, stalls, disk wipes,
//! network faults and clock rates, with register, lock and cache clients. `SHOAL_SIM_SEEDS=N`
//! runs N seeds per case instead of the CI default (`shoal-sim --seeds N` does the same from
//! the command line).
//!
//! Every case runs with the lock and cache checks on; a failing seed's line names the
//! command that replays it.

use shoal_tests::nodesim::{self, Checks, Faults, NodeSimConfig, NodeSimReport};

/// Seeds per case in CI (a seed takes about 30 ms on 3 nodes, 40 ms on 5, in a release
/// build: 1000 seeds of each took 28 s and 37 s on one core).
const CI_SEEDS: u64 = 500;

fn seeds() -> u64 {
    std::env::var("SHOAL_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(CI_SEEDS)
}

/// Runs `seeds()` seeds from `first`; fails naming every failing seed and its replay command.
fn run_seeds(first: u64, nodes: usize, faults: Faults) -> Vec<NodeSimReport> {
    let mut failures = Vec::new();
    let mut reports = Vec::new();
    for seed in first..first + seeds() {
        let mut cfg = NodeSimConfig::new(seed, nodes, faults);
        cfg.checks = Checks { locks: true, cache: true };
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
        assert!(sum(|r| r.notices_lost) > 0, "no notice lost");
    }
    assert!(sum(|r| r.locks_acquired) > reports.len() * 5, "too few locks acquired");
    assert!(sum(|r| r.renewals) > reports.len() * 10, "too few renewals");
    assert!(sum(|r| r.sessions_lost) > 0, "no session lost: the leases were never tested");
    assert!(sum(|r| r.cache_hits) > reports.len() * 100, "too few cache hits checked");
    assert!(sum(|r| r.gaps) > 0, "no gap reported to a cache");
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
        // The runs of before the lock and cache clients existed.
        let cfg = NodeSimConfig::new(seed, 3, faults).registers_only();
        if let Err(e) = nodesim::run(cfg.clone()) {
            failures.push(format!("seed {seed}: {e}\n  replay: {}", cfg.replay()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A seed whose cache clients read a value older than their floor when the client cache
/// ignores the notice chain (issue 15 point 1: `ClientCache::apply_notice` applying every
/// notice whatever its `prev`): "seed 8 FAILED: 3 stale cache hits; the first: cache client 0
/// read /c0 from its cache at 4684 ms: the write at 2:13 (as of 2:13), but the key was
/// overwritten at 2:33, at or below the client's floor 3:23" (5 nodes). It pins the chain
/// check as long as the simulation draws its randomness as it does now.
#[test]
fn stale_cache_hit_seeds_of_issue_15_point_1() {
    let (seed, nodes) = (8, 5);
    let cfg = NodeSimConfig::new(seed, nodes, Faults::all());
    match nodesim::run(cfg.clone()) {
        Ok(r) => assert!(r.cache_hits > 100, "seed {seed}: {} cache hits", r.cache_hits),
        Err(e) => panic!("seed {seed}: {e}\n  replay: {}", cfg.replay()),
    }
}
