//! Issue 6 (bank under faults): real `shoal-fs` processes on three network-namespace hosts,
//! five clients in the client namespace moving random amounts between five accounts (total
//! 500) in lock-based transactions, each commit also appending the transfer's receipt to the
//! client's marker key, and auditing every account under shared locks, under a seeded nemesis
//! of kill -9 + restart (master and followers), SIGSTOP/SIGCONT, partitions, isolation of the
//! master and packet loss. Checked (`shoal_tests::jepsen_bank::check`): every confirmed audit
//! and the final state sum to 500, the final balances are exactly what the receipts explain
//! (no half-applied commit), every acknowledged transfer has its receipt and no refused one
//! does, and every replica holds the final values. Reports go to
//! `target/tmp/jepsen/bank-seed<N>-n3.{svg,txt,history}`.
//!
//! `SHOAL_SOAK_SEEDS=N` runs seeds 1..=N instead of the CI seeds; `SHOAL_SOAK_RUN_MS`
//! lengthens each schedule. Needs root, `ip` and `nft`; without them the test prints why and
//! passes as skipped.

use shoal_tests::cluster::binary;
use shoal_tests::jepsen_bank::{run_bank, BankOptions};
use shoal_tests::jepsen_harness::{skipped, soak_run_ms, soak_seeds};
use std::path::Path;

/// The seeds CI runs.
const CI_SEEDS: [u64; 2] = [1, 2];

#[test]
fn bank_total_holds_and_no_transfer_is_half_applied_under_crashes_and_partitions() {
    if skipped("netns_jepsen_bank") {
        return;
    }
    let shoal_fs = binary("shoal-fs");
    let mut failed = Vec::new();
    for seed in soak_seeds(&CI_SEEDS) {
        let mut options = BankOptions::new(seed);
        options.out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("jepsen");
        if let Some(ms) = soak_run_ms() {
            options.bounds.run_ms = ms;
        }
        let outcome = run_bank(&options, &shoal_fs, &|| false).expect("harness");
        println!("{}", outcome.summary);
        for u in &outcome.unavailability {
            println!(
                "{:<28} longest gap without a committed transfer {} ms, recovery {:?} ms",
                u.window.label, u.longest_gap_ms, u.recovery_ms
            );
        }
        let counts = &outcome.log.counts;
        println!(
            "seed {seed}: {counts}; final {:?}; problems {:?}; picture {}",
            outcome.finals.as_ref().map(|f| &f.balances),
            outcome.final_problems,
            outcome.svg.display()
        );
        for a in &outcome.anomalies {
            println!("ANOMALY: {a}");
        }
        // A run without faults, commits or audits would prove nothing.
        assert!(!outcome.windows.is_empty(), "seed {seed}: no fault was applied");
        assert!(
            counts.committed > 20,
            "seed {seed}: only {} transfers committed",
            counts.committed
        );
        assert!(
            counts.audits_confirmed > 5,
            "seed {seed}: only {} audits",
            counts.audits_confirmed
        );
        if !outcome.passed() {
            failed.push((seed, outcome.anomalies, outcome.final_problems));
        }
    }
    assert!(
        failed.is_empty(),
        "failing seeds (rerun: shoal-jepsen --workload bank --seed N): {failed:#?}"
    );
}
