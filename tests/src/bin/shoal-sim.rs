//! `shoal-sim`: the deterministic simulation of whole nodes ([`shoal_tests::nodesim`]) over
//! many seeds. Prints one line per failing seed with the command that replays it, and ends
//! with `N passed, M failed`; exits non-zero when any failed.
//!
//! ```text
//! cargo run --release -p shoal-tests --bin shoal-sim -- --seeds 1000 [--seed S] [--nodes 3|5] [--faults power,stall,wipe,net,clock|all]
//! ```

use clap::Parser;
use shoal_tests::nodesim::{self, Faults, NodeSimConfig};
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
    // A broken invariant panics in the node's code; the run reports it as that seed's
    // failure, so the default hook's backtrace would only repeat it.
    std::panic::set_hook(Box::new(|_| {}));
    let (mut passed, mut failed) = (0u64, 0u64);
    let mut totals = [0usize; 7];
    for seed in args.seed..args.seed + args.seeds {
        let cfg = NodeSimConfig::new(seed, args.nodes, faults);
        match nodesim::run(cfg.clone()) {
            Ok(r) => {
                passed += 1;
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
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
