//! `shoal-sim`: the deterministic simulation of whole nodes ([`shoal_tests::nodesim`]) over
//! many seeds. Prints one line per failing seed with the command that replays it, and ends
//! with `N passed, M failed`; exits non-zero when any failed.
//!
//! ```text
//! cargo run --release -p shoal-tests --bin shoal-sim -- --seeds 1000 [--seed S] [--nodes 3|5] [--faults power,stall,wipe,net,clock|all] [--checks locks,cache|all|none]
//! ```
//!
//! `--checks` says which of the lock and cache checks fail a run; their violations are
//! counted and printed either way.

use clap::Parser;
use shoal_tests::nodesim::{self, Checks, Faults, NodeSimConfig};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(about = "Deterministic simulation of Shoal nodes (the product's node core) under faults")]
struct Args {
    /// First seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How many seeds from --seed.
    #[arg(long, default_value_t = 1)]
    seeds: u64,
    /// Nodes in the cluster: 3 or 5.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Faults to inject: power, stall, wipe, net, clock (comma-separated), all, or none.
    #[arg(long, default_value = "all")]
    faults: String,
    /// Checks that fail a run beside the always-on ones: locks, cache (comma-separated), all
    /// or none.
    #[arg(long, default_value = "all")]
    checks: String,
    /// Print each run's figures.
    #[arg(long)]
    verbose: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.nodes != 3 && args.nodes != 5 {
        eprintln!("shoal-sim: --nodes must be 3 or 5, not {}", args.nodes);
        return ExitCode::from(2);
    }
    let faults = match Faults::parse(&args.faults) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("shoal-sim: --faults: {e}");
            return ExitCode::from(2);
        }
    };
    let checks = match Checks::parse(&args.checks) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shoal-sim: --checks: {e}");
            return ExitCode::from(2);
        }
    };
    // A broken invariant panics in the node's code; the run reports it as that seed's
    // failure, so the default hook's backtrace would only repeat it.
    std::panic::set_hook(Box::new(|_| {}));
    let (mut passed, mut failed) = (0u64, 0u64);
    let mut totals = [0usize; 7];
    // Locks acquired, renewals, sessions lost, lock violations, cache hits, stale hits,
    // fills, notices delivered, notices lost, gaps, notices never sent.
    let mut more = [0usize; 11];
    for seed in args.seed..args.seed + args.seeds {
        let mut cfg = NodeSimConfig::new(seed, args.nodes, faults);
        cfg.checks = checks;
        match nodesim::run(cfg.clone()) {
            Ok(r) => {
                passed += 1;
                for (t, v) in more.iter_mut().zip([
                    r.locks_acquired,
                    r.renewals,
                    r.sessions_lost,
                    r.lock_violations,
                    r.cache_hits,
                    r.stale_hits,
                    r.cache_fills,
                    r.notices_delivered,
                    r.notices_lost,
                    r.gaps,
                    r.notices_unsent,
                ]) {
                    *t += v;
                }
                for first in [&r.first_lock_violation, &r.first_stale_hit].into_iter().flatten() {
                    println!("seed {seed} (check off): {first}\n  replay: {}", cfg.replay());
                }
                for (t, v) in totals.iter_mut().zip([
                    r.ops_ok + r.ops_unknown,
                    r.ops_unknown,
                    r.power_losses,
                    r.kills,
                    r.stalls,
                    r.wipes,
                    r.partitions,
                ]) {
                    *t += v;
                }
                if args.verbose {
                    println!(
                        "seed {seed}: ok, {} ops ({} unknown), committed {}, {} power losses, {} kills, {} stalls, {} wipes, {} partitions",
                        r.ops_ok + r.ops_unknown, r.ops_unknown, r.committed, r.power_losses,
                        r.kills, r.stalls, r.wipes, r.partitions
                    );
                }
            }
            Err(e) => {
                failed += 1;
                println!("seed {seed} FAILED: {e}\n  replay: {}", cfg.replay());
            }
        }
    }
    println!(
        "passed runs injected {} power losses, {} kills, {} stalls, {} wipes, {} partitions; \
         {} operations checked ({} unknown)",
        totals[2], totals[3], totals[4], totals[5], totals[6], totals[0], totals[1]
    );
    println!(
        "passed runs: {} locks acquired, {} renewals, {} sessions lost, {} lock violations; \
         {} cache hits checked, {} stale, {} fills, {} notices delivered ({} lost on first \
         send, {} never sent), {} gaps",
        more[0],
        more[1],
        more[2],
        more[3],
        more[4],
        more[5],
        more[6],
        more[7],
        more[8],
        more[10],
        more[9]
    );
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
