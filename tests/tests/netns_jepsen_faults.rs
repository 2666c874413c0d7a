//! Issue 9, grown: the register workload on **five** network-namespace hosts under an
//! **overlapping** fault schedule (pairs of faults in force at once: a kill during an
//! isolation, loss during a partition, two nodes down together, a pause of the master elected
//! while the old one is cut off), with cached and any-node reads checked for read-your-writes,
//! monotonic reads and the floor, and — when libfaketime is installed — one node's clock 5 %
//! fast and another's wall clock 5 minutes behind (both within the lease's drift margin, so
//! nothing may break). The whole history must be linearizable, every session promise kept,
//! every final read answered, every replica and every client cache converged.
//!
//! A lease probe sends linearizable reads straight to every node, so a stale lease read shows
//! even where clients would have moved to the new master.
//!
//! CI runs one seed (at most 15 s of faults, a 3 s quiet period, start-up and checks: about
//! 18 s). Soaks: `SHOAL_SOAK_SEEDS=N` runs seeds 1..=N, `SHOAL_SOAK_NODES=3|5` picks the host
//! count, `SHOAL_SOAK_RUN_MS` lengthens each schedule.
//!
//! Needs root, `ip` and `nft`; without them the test prints why and passes as skipped. Without
//! libfaketime the clock faults are skipped with a message and the rest runs.

use shoal_tests::clock::{self, ClockSkew};
use shoal_tests::cluster::binary;
use shoal_tests::jepsen::{run_registers, RegistersOptions};
use shoal_tests::jepsen_harness::{env_u64, skipped, soak_run_ms, soak_seeds};
use shoal_tests::tables::{run_stats, table};
use std::path::Path;

/// The seed CI runs.
const CI_SEED: u64 = 1;

#[test]
fn five_hosts_with_overlapping_faults_and_skewed_clocks_keep_every_promise() {
    if skipped("netns_jepsen_faults") {
        return;
    }
    let clocks = match clock::skip_reason() {
        Some(reason) => {
            eprintln!("netns_jepsen_faults: clock faults SKIPPED: {reason}");
            Vec::new()
        }
        None => vec![
            ClockSkew { host: 5, rate: 1.05, offset_s: 0 },
            ClockSkew { host: 2, rate: 1.0, offset_s: -300 },
        ],
    };
    let shoal_fs = binary("shoal-fs");
    let hosts = env_u64("SHOAL_SOAK_NODES").unwrap_or(5) as usize;
    let mut failed = Vec::new();
    let mut stats = Vec::new();
    for seed in soak_seeds(&[CI_SEED]) {
        let mut options = RegistersOptions::new(seed);
        options.hosts = hosts;
        options.overlap = true;
        options.clients = 5;
        options.keys = 4;
        options.clocks = clocks.iter().filter(|c| c.host <= hosts).cloned().collect();
        options.out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("jepsen");
        if let Some(ms) = soak_run_ms() {
            options.bounds.run_ms = ms;
        }
        let outcome = run_registers(&options, &shoal_fs, &|| false).expect("harness");
        println!("{}", outcome.summary);
        println!(
            "seed {seed}: {} ok, {} fail, {} unknown; check {:?}; session {:?} {:?}; final {:?}; \
             caches converged after {:?} ms; masters {:?}; picture {}",
            outcome.ok,
            outcome.failed,
            outcome.unknown,
            outcome.check.as_ref().err().map(ToString::to_string),
            outcome.session.reads,
            outcome.session.violations.iter().map(ToString::to_string).collect::<Vec<_>>(),
            outcome.final_problems,
            outcome.cache_converge_ms,
            outcome.masters,
            outcome.svg.display()
        );
        // A run without overlapping faults or without answers would prove nothing.
        assert!(outcome.schedule.overlaps(), "seed {seed}: the schedule has no overlap");
        assert!(!outcome.windows.is_empty(), "seed {seed}: no fault was applied");
        assert!(outcome.ok > 100, "seed {seed}: only {} operations succeeded", outcome.ok);
        assert!(
            outcome.session.reads_checked() > 100,
            "seed {seed}: only {} session reads",
            outcome.session.reads_checked()
        );
        stats.push(run_stats(&options.name(), hosts, &outcome));
        if !outcome.passed() {
            for line in outcome.excerpt() {
                println!("  {line}");
            }
            failed.push((
                seed,
                outcome.check.err(),
                outcome.session.violations,
                outcome.final_problems,
            ));
        }
    }
    println!("{}", table(&stats));
    assert!(
        failed.is_empty(),
        "failing seeds (rerun: shoal-jepsen --workload registers --nodes {hosts} --overlap \
         --seed N): {failed:#?}"
    );
}
