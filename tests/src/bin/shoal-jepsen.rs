//! `shoal-jepsen`: seeded fault runs on network-namespace hosts (needs root, `ip`, `nft`).
//!
//! ```text
//! cargo run -p shoal-tests --bin shoal-jepsen -- --seed 7 --nodes 3
//! cargo run -p shoal-tests --bin shoal-jepsen -- --seed 1 --seeds 20 --nodes 5 --faults all --run-ms 60000
//! cargo build -p fs-node --bins && \
//!   cargo run -p shoal-tests --bin shoal-jepsen -- --workload registers --seed 1 --seeds 10
//! target/debug/shoal-jepsen --workload registers --nodes 5 --overlap --seed 1 --seeds 10 --table
//! target/debug/shoal-jepsen --workload registers --clock h3=x1.05 --clock h2=-300s --seed 1
//! ```
//!
//! Workloads: `messaging` (the messaging layer, `shoal-echo` endpoints), `registers` (real
//! `shoal-fs` nodes, register reads/writes/compare-and-set checked for linearizability, see
//! `shoal_tests::jepsen`), `locks` (clients contending for named locks, checked by fencing
//! tokens, see `shoal_tests::jepsen_locks`) and `bank` (transfers in transactions, checked for
//! a constant total and no half-applied commit, see `shoal_tests::jepsen_bank`). Prints the schedule, the checker's verdict and the summary, writes an SVG
//! of latency over time with the fault windows shaded, exits 1 when a run fails. Ctrl-C stops
//! the run and tears the namespaces down.

use clap::{Parser, ValueEnum};
use shoal_tests::clock::ClockSkew;
use shoal_tests::jepsen::{run_registers, RegistersOptions, Unavailability};
use shoal_tests::jepsen_bank::{run_bank, BankOptions};
use shoal_tests::jepsen_locks::{run_locks, LocksOptions};
use shoal_tests::messaging_workload::{run_messaging, RunOptions};
use shoal_tests::nemesis::{FaultKind, Scenario};
use shoal_tests::netns::{cleanup_stale, skip_reason, NetnsError};
use shoal_tests::tables::{run_stats, table, RunStats};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// `shoal-echo` endpoints: delivery, order and gaps of the messaging layer.
    Messaging,
    /// `shoal-fs` nodes: linearizability of register reads, writes and compare-and-set.
    Registers,
    /// `shoal-fs` nodes: mutual exclusion of named locks, judged by fencing tokens.
    Locks,
    /// `shoal-fs` nodes: transfers between accounts in transactions; total and receipts.
    Bank,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Faults {
    /// Partitions, isolation, one-way drops, link down, packet loss.
    Network,
    /// Network faults plus kill -9, SIGSTOP and restarts with a wiped data directory.
    All,
    /// The register runs' set: kill -9, SIGSTOP, partitions, master isolation, packet loss.
    Registers,
    /// Isolation only (of the master, in register runs): for lease and clock experiments.
    Isolate,
    /// kill -9 and SIGSTOP only: for measuring the cost of losing a (master) process.
    Process,
}

/// The aimed scenarios of issue 15 (`--scenario`): they replace the drawn faults.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum ScenarioArg {
    /// Registers: the clients stop hearing the master (its notices are lost) and, during
    /// that, the master is killed while proposals are in flight; cached reads are checked
    /// against each client's floor.
    NoticeLoss,
    /// Locks: the master is paused (SIGSTOP) long enough to be deposed, then resumed; every
    /// holder's belief (`is_held`) is checked against the grants acknowledged before it.
    MasterStalls,
}

impl From<ScenarioArg> for Scenario {
    fn from(s: ScenarioArg) -> Scenario {
        match s {
            ScenarioArg::NoticeLoss => Scenario::NoticeLossThenKill,
            ScenarioArg::MasterStalls => Scenario::MasterStalls,
        }
    }
}

#[derive(Parser, Debug)]
#[command(about = "Seeded fault-injection runs on network-namespace hosts")]
struct Args {
    /// The first seed; a failing run prints the seed that reproduces it.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How many seeds to run, from --seed up.
    #[arg(long, default_value_t = 1, env = "SHOAL_JEPSEN_SEEDS")]
    seeds: u64,
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    #[arg(long, value_enum, default_value_t = Workload::Messaging)]
    workload: Workload,
    /// Default: `network` for messaging, `registers` for registers.
    #[arg(long, value_enum)]
    faults: Option<Faults>,
    /// How long the fault schedule lasts.
    #[arg(long, default_value_t = 12_000)]
    run_ms: u64,
    #[arg(long, default_value_t = 6)]
    faults_max: usize,
    /// Receivers' NAK rounds before giving a hole up (default: the layer's 40 × 30 ms).
    #[arg(long)]
    nak_rounds_max: Option<u32>,
    /// Demand every message exactly once and no gap (sensible with network faults and a NAK
    /// horizon longer than the longest fault).
    #[arg(long)]
    strict: bool,
    #[arg(long, default_value = "target/jepsen")]
    out: PathBuf,
    /// The endpoint binary (default: shoal-echo next to this binary).
    #[arg(long)]
    echo: Option<PathBuf>,
    /// The node binary of the registers workload (default: shoal-fs next to this binary).
    #[arg(long)]
    shoal_fs: Option<PathBuf>,
    /// Concurrent clients (default: 4 registers, 7 locks, 5 bank).
    #[arg(long)]
    clients: Option<usize>,
    /// Registers (keys) of the registers workload.
    #[arg(long, default_value_t = 3)]
    keys: usize,
    /// Registers: draw overlapping faults (pairs in force at once).
    #[arg(long)]
    overlap: bool,
    /// Registers: linearizable reads only (no cached or any-node reads, no session check).
    #[arg(long)]
    no_session_reads: bool,
    /// Registers: run a node under libfaketime, e.g. `h3=x1.05` (5 % fast), `h2=-300s`
    /// (wall clock 5 minutes behind), `h1=-300s,x0.9`; repeatable.
    #[arg(long, value_parser = ClockSkew::parse)]
    clock: Vec<ClockSkew>,
    /// Registers: print the per-fault table of all seeds at the end.
    #[arg(long)]
    table: bool,
    /// Registers: only print each seed's schedule (no network, no root needed).
    #[arg(long)]
    print_schedules: bool,
    /// An aimed scenario instead of drawn faults (`notice-loss` for registers,
    /// `master-stalls` for locks).
    #[arg(long, value_enum)]
    scenario: Option<ScenarioArg>,
    /// Locks: the longest hold after the fenced writes, in ms (default 30; `master-stalls`
    /// holds up to 6 000 so that holdings span the stall).
    #[arg(long)]
    hold_ms_max: Option<u64>,
    /// Named locks of the locks workload.
    #[arg(long, default_value_t = 2)]
    locks: usize,
    /// Accounts of the bank workload (the total is 100 per account).
    #[arg(long, default_value_t = 5)]
    accounts: usize,
}

fn kinds(faults: Faults) -> Vec<FaultKind> {
    match faults {
        Faults::Network => FaultKind::NETWORK.to_vec(),
        Faults::All => FaultKind::ALL.to_vec(),
        Faults::Registers => FaultKind::REGISTERS.to_vec(),
        Faults::Isolate => vec![FaultKind::Isolate],
        Faults::Process => vec![FaultKind::Kill, FaultKind::Pause],
    }
}

/// The binary given by a flag, or `name` beside this executable; exits 2 naming the build
/// command when it is missing.
fn binary(given: &Option<PathBuf>, name: &str, package: &str) -> PathBuf {
    let path = given
        .clone()
        .unwrap_or_else(|| std::env::current_exe().expect("own path").with_file_name(name));
    if !path.exists() {
        eprintln!(
            "shoal-jepsen: {} not found; build it: cargo build -p {package} --bins",
            path.display()
        );
        std::process::exit(2);
    }
    path
}

/// The register run of `seed` as the flags describe it.
fn register_options(args: &Args, seed: u64) -> RegistersOptions {
    let mut options = RegistersOptions::new(seed);
    options.hosts = args.nodes;
    options.bounds.run_ms = args.run_ms;
    options.bounds.faults_max = args.faults_max;
    options.kinds = kinds(args.faults.unwrap_or(Faults::Registers));
    options.clients = args.clients.unwrap_or(options.clients);
    options.keys = args.keys;
    options.out_dir = args.out.clone();
    options.overlap = args.overlap;
    options.session_reads = !args.no_session_reads;
    options.clocks = args.clock.clone();
    options.scenario = args.scenario.map_or(Scenario::Drawn, Scenario::from);
    options
}

/// What one seed's run came to, its lines printed.
enum Verdict {
    /// Stopped by a signal; the partial picture is here.
    Interrupted(PathBuf),
    /// Ran to the end; whether it passed.
    Finished { passed: bool },
}

fn pass_fail(passed: bool) -> &'static str {
    if passed {
        "PASS"
    } else {
        "FAIL"
    }
}

fn stopped() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Runs `run` for each seed of the flags, printing how each seed ended; exits 130 once a
/// signal stopped a run. Returns the failing seeds.
fn each_seed(args: &Args, mut run: impl FnMut(u64) -> Result<Verdict, NetnsError>) -> Vec<u64> {
    let mut failed = Vec::new();
    for seed in args.seed..args.seed + args.seeds.max(1) {
        match run(seed) {
            Ok(Verdict::Interrupted(svg)) => {
                println!("seed {seed}: INTERRUPTED; partial picture: {}", svg.display());
            }
            Ok(Verdict::Finished { passed }) => {
                if !passed {
                    failed.push(seed);
                }
            }
            Err(e) => {
                eprintln!("seed {seed}: harness error: {e}");
                failed.push(seed);
            }
        }
        if stopped() {
            eprintln!("interrupted; namespaces torn down");
            std::process::exit(130);
        }
    }
    failed
}

/// Seeded register runs; returns the failing seeds.
fn registers(args: &Args) -> Vec<u64> {
    let shoal_fs = binary(&args.shoal_fs, "shoal-fs", "fs-node");
    let mut stats: Vec<RunStats> = Vec::new();
    let failed = each_seed(args, |seed| {
        let options = register_options(args, seed);
        let outcome = run_registers(&options, &shoal_fs, &stopped)?;
        if outcome.interrupted {
            return Ok(Verdict::Interrupted(outcome.svg));
        }
        println!("{}", outcome.summary);
        for u in &outcome.unavailability {
            println!(
                "{:<28} longest gap without an acknowledged write {} ms, recovery {:?} ms",
                u.window.label, u.longest_gap_ms, u.recovery_ms
            );
        }
        if let Err(v) = &outcome.check {
            println!("VIOLATION: {v}");
            for line in outcome.excerpt() {
                println!("  {line}");
            }
        }
        for p in &outcome.final_problems {
            println!("FINAL: {p}");
        }
        for v in &outcome.session.violations {
            println!("SESSION: {v}");
        }
        println!("masters (ms, host): {:?}", outcome.masters);
        println!(
            "session reads checked: {:?}; caches held the final values after {:?} ms",
            outcome.session.reads, outcome.cache_converge_ms
        );
        println!(
            "seed {seed}: {} ({} ok, {} fail, {} unknown); picture: {}",
            pass_fail(outcome.passed()),
            outcome.ok,
            outcome.failed,
            outcome.unknown,
            outcome.svg.display()
        );
        stats.push(run_stats(&options.name(), options.hosts, &outcome));
        Ok(Verdict::Finished { passed: outcome.passed() })
    });
    if args.table {
        println!("\n{}", table(&stats));
    }
    failed
}

/// Prints what a lock or bank run found after its summary: the unavailability lines (`what`
/// names the acknowledged operation), the anomalies, the final problems and the verdict line.
fn print_checked<A: std::fmt::Display>(
    seed: u64,
    what: &str,
    unavailability: &[Unavailability],
    anomalies: &[A],
    final_problems: &[String],
    counts: &dyn std::fmt::Display,
    svg: &std::path::Path,
) {
    for u in unavailability {
        println!(
            "{:<28} longest gap without {what} {} ms, recovery {:?} ms",
            u.window.label, u.longest_gap_ms, u.recovery_ms
        );
    }
    for a in anomalies {
        println!("ANOMALY: {a}");
    }
    for p in final_problems {
        println!("FINAL: {p}");
    }
    // The run was not interrupted (that returns before printing), so this is `passed()`.
    let passed = anomalies.is_empty() && final_problems.is_empty();
    println!("seed {seed}: {} ({counts}); picture: {}", pass_fail(passed), svg.display());
}

/// Seeded lock runs; returns the failing seeds.
fn locks(args: &Args) -> Vec<u64> {
    let shoal_fs = binary(&args.shoal_fs, "shoal-fs", "fs-node");
    each_seed(args, |seed| {
        let mut options = LocksOptions::new(seed);
        options.hosts = args.nodes;
        options.bounds.run_ms = args.run_ms;
        options.bounds.faults_max = args.faults_max;
        options.kinds = kinds(args.faults.unwrap_or(Faults::Registers));
        options.clients = args.clients.unwrap_or(options.clients);
        options.locks = args.locks;
        options.out_dir = args.out.clone();
        options.scenario = args.scenario.map_or(Scenario::Drawn, Scenario::from);
        let stall_hold = if options.scenario == Scenario::MasterStalls { 6_000 } else { 30 };
        options.hold_ms_max = args.hold_ms_max.unwrap_or(stall_hold);
        let outcome = run_locks(&options, &shoal_fs, &stopped)?;
        if outcome.interrupted {
            return Ok(Verdict::Interrupted(outcome.svg));
        }
        println!("{}", outcome.summary);
        print_checked(
            seed,
            "a grant",
            &outcome.unavailability,
            &outcome.anomalies,
            &outcome.final_problems,
            &outcome.log.counts,
            &outcome.svg,
        );
        Ok(Verdict::Finished { passed: outcome.passed() })
    })
}

/// Seeded bank runs; returns the failing seeds.
fn bank(args: &Args) -> Vec<u64> {
    let shoal_fs = binary(&args.shoal_fs, "shoal-fs", "fs-node");
    each_seed(args, |seed| {
        let mut options = BankOptions::new(seed);
        options.hosts = args.nodes;
        options.bounds.run_ms = args.run_ms;
        options.bounds.faults_max = args.faults_max;
        options.kinds = kinds(args.faults.unwrap_or(Faults::Registers));
        options.clients = args.clients.unwrap_or(options.clients);
        options.accounts = args.accounts.max(2);
        options.total = 100 * options.accounts as u64;
        options.out_dir = args.out.clone();
        let outcome = run_bank(&options, &shoal_fs, &stopped)?;
        if outcome.interrupted {
            return Ok(Verdict::Interrupted(outcome.svg));
        }
        println!("{}", outcome.summary);
        print_checked(
            seed,
            "a committed transfer",
            &outcome.unavailability,
            &outcome.anomalies,
            &outcome.final_problems,
            &outcome.log.counts,
            &outcome.svg,
        );
        Ok(Verdict::Finished { passed: outcome.passed() })
    })
}

/// Seeded messaging runs; returns the failing seeds.
fn messaging(args: &Args) -> Vec<u64> {
    let echo = binary(&args.echo, "shoal-echo", "shoal-tests");
    each_seed(args, |seed| {
        let mut options = RunOptions::new(seed);
        options.hosts = args.nodes;
        options.bounds.run_ms = args.run_ms;
        options.bounds.faults_max = args.faults_max;
        options.kinds = kinds(args.faults.unwrap_or(Faults::Network));
        options.echo.nak_rounds_max = args.nak_rounds_max;
        options.strict = args.strict;
        options.out_dir = args.out.clone();
        let outcome = run_messaging(&options, &echo, &stopped)?;
        if outcome.interrupted {
            return Ok(Verdict::Interrupted(outcome.svg));
        }
        println!("{}", outcome.summary);
        for v in &outcome.check.violations {
            println!("VIOLATION: {v}");
        }
        println!(
            "seed {seed}: {} ({} deliveries, {} gaps, {} retransmits); picture: {}",
            pass_fail(outcome.passed()),
            outcome.check.deliveries,
            outcome.check.gaps,
            outcome.check.retransmits,
            outcome.svg.display()
        );
        Ok(Verdict::Finished { passed: outcome.passed() })
    })
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe. The run polls the flag and tears down.
    STOP.store(true, Ordering::SeqCst);
}

fn main() {
    let args = Args::parse();
    if args.print_schedules {
        for seed in args.seed..args.seed + args.seeds.max(1) {
            println!("{}", register_options(&args, seed).schedule());
        }
        return;
    }
    if let Some(reason) = skip_reason() {
        eprintln!("shoal-jepsen: {reason}");
        std::process::exit(2);
    }
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    match cleanup_stale() {
        Ok(removed) if !removed.is_empty() => eprintln!("removed stale namespaces: {removed:?}"),
        Ok(_) => {}
        Err(e) => eprintln!("cleanup of stale namespaces failed: {e}"),
    }
    let run = match args.workload {
        Workload::Registers => registers,
        Workload::Locks => locks,
        Workload::Bank => bank,
        Workload::Messaging => messaging,
    };
    let failed = run(&args);
    if !failed.is_empty() {
        println!("failed seeds: {failed:?} (rerun one with --seed N --seeds 1)");
        std::process::exit(1);
    }
}
