//! The whole-node simulation ([`shoal_tests::nodesim`]) over a bounded number of seeds: the
//! product's node core on simulated disks under power loss, kill -9, stalls, disk wipes,
//! network faults and clock rates, with register, lock and cache clients. `SHOAL_SIM_SEEDS=N`
//! runs N seeds per case instead of the CI default (`shoal-sim --seeds N` does the same from
//! the command line).
//!
//! The cache check is off in the CI cases until issue 15 point 1 is fixed (a new master's
//! notices of old-epoch entries move a cache past a notice it lost): seed 271 on 3 nodes finds
//! it ([`stale_cache_hit_seeds_of_issue_15_point_1`]). The stale hits are still counted.

use shoal_tests::nodesim::{self, Checks, Faults, NodeSimConfig, NodeSimReport};

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
        let mut cfg = NodeSimConfig::new(seed, nodes, faults);
        cfg.checks = Checks { locks: true, cache: false };
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

/// Seeds whose cache clients read a value older than their floor (issue 15 point 1): the old
/// master's notices were cut off from the client, and a new master's notice of an old-epoch
/// entry moved the cache's position past them (seed 271: `/c1` overwritten at 2:14 was served
/// with floor 2:25 after node 1, master of epoch 3, announced 2:25). Fails until that fix;
/// then drop the `ignore` and turn the cache check on in the cases above.
#[test]
#[ignore = "issue 15 point 1 is not fixed yet"]
fn stale_cache_hit_seeds_of_issue_15_point_1() {
    let mut failures = Vec::new();
    for seed in [271] {
        let cfg = NodeSimConfig::new(seed, 3, Faults::all());
        if let Err(e) = nodesim::run(cfg.clone()) {
            failures.push(format!("seed {seed}: {e}\n  replay: {}", cfg.replay()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
