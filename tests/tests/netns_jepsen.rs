//! The seeded fault runs CI does on three network-namespace hosts (about a minute in all): the
//! messaging workload under random nemesis schedules, each printed with its seed, judged by
//! the checker, with its report written to `target/jepsen/`. `SHOAL_SOAK_SEEDS=N` runs N
//! seeds of each kind instead of the CI set (a longer soak); `SHOAL_SOAK_RUN_MS` lengthens
//! each schedule.
//!
//! Needs root, `ip` and `nft`; without them the tests print why and pass as skipped.

use shoal_tests::jepsen_harness::{skipped, soak_run_ms, soak_seeds};
use shoal_tests::messaging_workload::{run_messaging, RunOptions};
use shoal_tests::nemesis::FaultKind;
use std::path::Path;

const ECHO: &str = env!("CARGO_BIN_EXE_shoal-echo");
/// The seeds CI runs of each kind.
const CI_SEEDS: [u64; 2] = [1, 2];

fn run_seeds(kinds: &[FaultKind], configure: impl Fn(&mut RunOptions)) {
    let mut failed = Vec::new();
    for seed in soak_seeds(&CI_SEEDS) {
        let mut options = RunOptions::new(seed);
        options.kinds = kinds.to_vec();
        options.out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("jepsen");
        if let Some(ms) = soak_run_ms() {
            options.bounds.run_ms = ms;
        }
        configure(&mut options);
        let outcome = run_messaging(&options, Path::new(ECHO), &|| false).expect("harness");
        println!("{}{}", outcome.schedule, outcome.summary);
        println!(
            "seed {seed}: violations {:?}; picture {}",
            outcome.check.violations,
            outcome.svg.display()
        );
        // A run that made no fault would prove nothing about faults.
        assert!(!outcome.windows.is_empty(), "seed {seed}: no fault was applied");
        if !outcome.passed() {
            failed.push((seed, outcome.check.violations));
        }
    }
    assert!(failed.is_empty(), "failing seeds (rerun with shoal-jepsen --seed N): {failed:#?}");
}

/// Network faults (partitions, isolation, one-way drops, link down, up to 30 % loss) with a
/// NAK horizon (400 × 30 ms) longer than any fault: every message arrives at every endpoint
/// exactly once, in order, with no gap, for every seed.
#[test]
fn seeded_network_faults_lose_nothing_when_naks_outlast_the_faults() {
    if skipped("seeded_network_faults_lose_nothing_when_naks_outlast_the_faults") {
        return;
    }
    run_seeds(&FaultKind::NETWORK, |o| {
        o.echo.nak_rounds_max = Some(400);
        o.strict = true;
    });
}

/// Every fault kind, kill -9, SIGSTOP and wiped restarts included, with the layer's defaults:
/// nothing is delivered twice or out of order, every skip follows a reported gap, and after
/// the schedule every endpoint has every other endpoint's latest stream to its end.
#[test]
fn seeded_process_and_network_faults_never_duplicate_or_reorder() {
    if skipped("seeded_process_and_network_faults_never_duplicate_or_reorder") {
        return;
    }
    run_seeds(&FaultKind::ALL, |_| {});
}
