//! `shoal bench`: load generation against a running cluster, and the failover measurement
//! against a dev cluster it starts itself.
//!
//! # Workloads
//! - `put`: `Client::write` of `--value-bytes` bytes to one of `--keys` keys under `/bench/`.
//! - `get`: `Client::read` of those keys (written once before the clock starts). Reads go
//!   through the client's LRU, kept fresh by the update stream, so repeated reads of a hot key
//!   are mostly cache hits: this measures what an application sees. `--no-cache` sends every
//!   read to a node (the router's choice), `--linearizable` through the master.
//! - `mixed`: [`MIXED_READ_PERCENT`]% reads, the rest writes, over the same keys.
//! - `lock`: uncontended acquire+release pairs: worker `w` takes and releases its own
//!   exclusive lock `/bench/lock-<w>` (so workers never wait for each other on the master);
//!   one latency sample per pair, from the acquire call to the release's answer.
//! - `txn`: transactions of [`TXN_KEYS`] keys, each written (`--value-bytes`), the keys drawn
//!   from the `--keys` keys under `/bench/`: begin (locks in key order) + writes + commit is
//!   one sample. With many keys (the default 1024) transactions rarely share a key; with few
//!   (`--keys 8`) they contend and wait for each other's locks. A commit is an op; a
//!   transaction refused for its locks (`LockHeld`, `WaitTimeout`, `LockLost`) is counted in
//!   `refused`, any other failure in `errors`. Neither is recorded as a latency.
//! - `failover`: starts a three-node dev cluster of `shoal-fs` (next to `shoal`) in a
//!   temporary directory, and `--trials` times SIGKILLs the master and measures the time to a
//!   new established master and to the first acknowledged write.
//! - `lock-failover`: starts a dev cluster the same way and `--trials` times runs a child
//!   `shoal lock /bench/failover-lock --hold 600`, SIGKILLs it 0, 0.5 or 1 s (by trial,
//!   [`LOCK_FAILOVER_PHASE`]) after it printed its token, and measures the time from the kill to the grant of the same lock to a waiter (`lock_wait`)
//!   in this process: the killed holder's lease must lapse (about the 5 s TTL, minus the time
//!   since its last renewal, plus the master's expiry check).
//!
//! `--clients` workers run at once, sharing at most [`ENDPOINTS_MAX`] socket endpoints. Each
//! operation's latency, from the call to its answer, goes into an HDR histogram (microseconds,
//! 3 significant digits); failed operations are counted as errors and not recorded. A progress
//! line goes to stderr each second (rewritten in place on a terminal).
//!
//! # `--json`
//! ```json
//! {"workload": "put", "clients": 16, "duration_s": 2.0, "value_bytes": 256, "keys": 1024,
//!  "reads": "cached", "ops": 12345, "errors": 0, "refused": 0, "throughput_ops_per_s": 6172.5,
//!  "latency_us": {"p50": 2100.2, "p99": 5400.1, "p999": 9100.5, "max": 12000.0, "mean": 2300.5}}
//! ```
//! Field names are stable. `failover` prints
//! `{"workload": "failover", "trials": N, "completed": M, "to_master_ms": [..], "to_write_ms": [..]}`;
//! `lock-failover` prints
//! `{"workload": "lock-failover", "trials": N, "completed": M, "kill_to_grant_ms": [..]}`.

use crate::connect::Connection;
use crate::{dev, exit, plot};
use bytes::Bytes;
use cache_client::net::SocketTransport;
use cache_client::Client;
use cache_client::ClientError;
use cache_client::Transport;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Share of reads in the `mixed` workload.
pub const MIXED_READ_PERCENT: u64 = 90;
/// Workers share at most this many clients (each one socket endpoint).
pub const ENDPOINTS_MAX: usize = 8;
/// Most workers one run starts.
pub const CLIENTS_MAX: usize = 4096;
/// Most keys one run uses.
pub const KEYS_MAX: u64 = 1_000_000;
/// Longest run.
pub const DURATION_MAX: Duration = Duration::from_secs(3600);
/// How often the progress line is updated.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// The directory the benchmark keys live in.
pub const BENCH_DIR: &str = "/bench";
/// How long failover waits for each trial's new master and first write.
pub const FAILOVER_WAIT: Duration = Duration::from_secs(20);
/// Keys written by each `txn` transaction (fewer only if `--keys` is smaller).
pub const TXN_KEYS: u64 = 4;
/// How long a `txn` transaction waits for each contended lock before it counts as refused.
pub const TXN_LOCK_WAIT: Duration = Duration::from_secs(2);
/// The lock `lock-failover` has a child hold and a waiter take after the kill.
pub const FAILOVER_LOCK: &str = "/bench/failover-lock";
/// How long the `lock-failover` child would hold the lock if it were not killed (seconds).
pub const FAILOVER_HOLD_S: u64 = 600;
/// Trial `i` of `lock-failover` kills the holder `(i % 3) × this` after its grant, so the kill
/// lands at different points of the holder's renewal cycle (1.5 s): right after the grant
/// (the last lease extension) the wait is a whole TTL, later it is shorter.
pub const LOCK_FAILOVER_PHASE: Duration = Duration::from_millis(500);
/// How long `lock-failover` waits for the child's token line, and the waiter for its grant.
pub const LOCK_FAILOVER_WAIT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    Put,
    Get,
    Mixed,
    Lock,
    Txn,
    Failover,
    LockFailover,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::Get => "get",
            Workload::Mixed => "mixed",
            Workload::Lock => "lock",
            Workload::Txn => "txn",
            Workload::Failover => "failover",
            Workload::LockFailover => "lock-failover",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Args)]
pub struct BenchArgs {
    /// put, get, mixed, lock, txn; failover or lock-failover (start their own dev cluster).
    #[arg(value_enum)]
    pub workload: Workload,
    /// Concurrent workers.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=CLIENTS_MAX as u64))]
    pub clients: u64,
    /// How long to measure: "10", "10s", "1500ms", "2m".
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Bytes per written value.
    #[arg(long, default_value_t = 256)]
    pub value_bytes: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=KEYS_MAX))]
    pub keys: u64,
    /// failover / lock-failover only: how many SIGKILLs (of the master / of the lock holder).
    #[arg(long, default_value_t = 5)]
    pub trials: u64,
    /// Reads skip the client cache (each goes to a node the router picks).
    #[arg(long)]
    pub no_cache: bool,
    /// Reads are linearizable (answered through the master; skips the cache).
    #[arg(long)]
    pub linearizable: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// put, get, mixed, lock, txn: also draw the latency histogram into this file (SVG or
    /// PNG by its extension).
    #[arg(long, value_name = "FILE", value_parser = crate::plot::parse_plot_path)]
    pub plot: Option<std::path::PathBuf>,
}

/// Parses "10", "10s", "1500ms", "2m" (bounded by [`DURATION_MAX`], above zero).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u64 = digits.parse().map_err(|_| format!("{text:?}: expected e.g. 10s or 1500ms"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        _ => return Err(format!("{text:?}: unit must be ms, s or m")),
    };
    if d.is_zero() || d > DURATION_MAX {
        return Err(format!("{text:?}: must be above zero and at most {DURATION_MAX:?}"));
    }
    Ok(d)
}

/// Latency quantiles in microseconds (recorded in nanoseconds: a cache hit takes well under
/// one microsecond).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

/// What one run measured (the `--json` object).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BenchReport {
    pub workload: Workload,
    pub clients: u64,
    pub duration_s: f64,
    pub value_bytes: usize,
    pub keys: u64,
    /// How reads were made: "cached", "no_cache" or "linearizable".
    pub reads: &'static str,
    pub ops: u64,
    pub errors: u64,
    /// `txn` only: transactions refused for their locks (held, wait timed out, lost).
    pub refused: u64,
    pub throughput_ops_per_s: f64,
    pub latency_us: Latency,
}

impl BenchReport {
    fn new(
        args: &BenchArgs,
        hist: &Histogram<u64>,
        errors: u64,
        refused: u64,
        elapsed: Duration,
    ) -> BenchReport {
        let secs = elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
        BenchReport {
            workload: args.workload,
            clients: args.clients,
            duration_s: secs,
            value_bytes: args.value_bytes,
            keys: args.keys,
            reads: if args.linearizable {
                "linearizable"
            } else if args.no_cache {
                "no_cache"
            } else {
                "cached"
            },
            ops: hist.len(),
            errors,
            refused,
            throughput_ops_per_s: hist.len() as f64 / secs,
            latency_us: Latency {
                p50: us(hist.value_at_quantile(0.5)),
                p99: us(hist.value_at_quantile(0.99)),
                p999: us(hist.value_at_quantile(0.999)),
                max: us(hist.max()),
                mean: hist.mean() / 1000.0,
            },
        }
    }

    /// The histogram's title: the workload, its settings and its throughput.
    pub fn title(&self) -> String {
        format!(
            "shoal bench {}: {} clients, reads {}, {:.1} s, {:.0} ops/s, {} errors",
            self.workload.name(),
            self.clients,
            self.reads,
            self.duration_s,
            self.throughput_ops_per_s,
            self.errors
        )
    }

    /// The text form: one line of figures.
    pub fn text(&self) -> String {
        let ms = |us: f64| us / 1000.0;
        format!(
            "{} clients={} reads={} {:.1}s: {} ops, {:.0} ops/s, p50 {:.3} ms, p99 {:.3} ms, \
             p99.9 {:.3} ms, max {:.3} ms, {} errors, {} refused",
            self.workload.name(),
            self.clients,
            self.reads,
            self.duration_s,
            self.ops,
            self.throughput_ops_per_s,
            ms(self.latency_us.p50),
            ms(self.latency_us.p99),
            ms(self.latency_us.p999),
            ms(self.latency_us.max),
            self.errors,
            self.refused
        )
    }
}

/// Nanoseconds as microseconds.
fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn key(i: u64) -> String {
    format!("{BENCH_DIR}/k{i}")
}

/// Creates the benchmark directory and, for reads, writes every key once.
async fn prepare<T: Transport>(client: &Client<T>, args: &BenchArgs) -> Result<(), ClientError> {
    match client.mkdir(BENCH_DIR).await {
        Ok(_) | Err(ClientError::AlreadyExists { .. }) => {}
        Err(e) => return Err(e),
    }
    if matches!(args.workload, Workload::Get | Workload::Mixed) {
        let value = Bytes::from(vec![b'v'; args.value_bytes]);
        for i in 0..args.keys {
            client.write(&key(i), value.clone()).await?;
        }
    }
    Ok(())
}

/// Counters the progress line reads while workers run.
#[derive(Default)]
struct Progress {
    ops: AtomicU64,
    errors: AtomicU64,
}

/// What one operation of a worker came to.
enum Outcome {
    Done,
    Refused,
    Failed,
}

/// Whether `e` refuses a transaction for its locks (rather than failing it).
fn is_lock_refusal(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::LockHeld { .. }
            | ClientError::WaitTimeout { .. }
            | ClientError::LockLost { .. }
    )
}

/// One acquire+release pair of `name`.
async fn lock_pair<T: Transport>(client: &Client<T>, name: &str) -> Outcome {
    match client.lock(name, false).await {
        Ok(guard) => match guard.release().await {
            Ok(()) => Outcome::Done,
            Err(_) => Outcome::Failed,
        },
        Err(_) => Outcome::Failed,
    }
}

/// One transaction writing `keys` (begin, writes, commit).
async fn txn_once<T: Transport>(client: &Client<T>, keys: &[String], value: &Bytes) -> Outcome {
    let attempt = async {
        let mut builder = client.transaction().wait(TXN_LOCK_WAIT);
        for k in keys {
            builder = builder.write(k.clone());
        }
        let mut txn = builder.begin().await?;
        for k in keys {
            txn.write(k, value.clone())?;
        }
        txn.commit().await
    };
    match attempt.await {
        Ok(_) => Outcome::Done,
        Err(e) if is_lock_refusal(&e) => Outcome::Refused,
        Err(_) => Outcome::Failed,
    }
}

/// Runs a put/get/mixed/lock/txn workload on `clients` (workers share them round-robin) and
/// returns what it measured. `failover` and `lock-failover` are refused here.
pub async fn measure<T: Transport>(
    clients: &[Client<T>],
    args: &BenchArgs,
    progress: bool,
) -> Result<BenchReport, ClientError> {
    measure_histogram(clients, args, progress).await.map(|(report, _)| report)
}

/// [`measure`], also giving the latency histogram (nanoseconds) the report was made from.
pub async fn measure_histogram<T: Transport>(
    clients: &[Client<T>],
    args: &BenchArgs,
    progress: bool,
) -> Result<(BenchReport, Histogram<u64>), ClientError> {
    if matches!(args.workload, Workload::Failover | Workload::LockFailover) {
        return Err(ClientError::Transport("failover runs against its own dev cluster".into()));
    }
    let Some(first) = clients.first() else {
        return Err(ClientError::Transport("no client to measure with".into()));
    };
    // A bad size is refused once, before any worker starts.
    if args.value_bytes > first.config().value_bytes_max {
        return Err(ClientError::TooLarge {
            what: "value",
            len: args.value_bytes,
            max: first.config().value_bytes_max,
        });
    }
    prepare(first, args).await?;
    let counters = Arc::new(Progress::default());
    let start = Instant::now();
    let end = start + args.duration;
    let read_options = if args.linearizable {
        cache_client::ReadOptions::linearizable()
    } else {
        cache_client::ReadOptions {
            bypass_cache: args.no_cache,
            ..cache_client::ReadOptions::default()
        }
    };
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..args.clients {
        let worker = Worker {
            client: clients[w as usize % clients.len()].clone(),
            lock_name: format!("{BENCH_DIR}/lock-{w}"),
            // A per-worker xorshift: key and op choice need no quality, only spread.
            x: 0x9E37_79B9_7F4A_7C15u64 ^ (w + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9),
            value: Bytes::from(vec![b'x'; args.value_bytes]),
            workload: args.workload,
            keys: args.keys,
            read_options,
        };
        workers.spawn(worker.run(counters.clone(), end));
    }
    let reporter = progress.then(|| tokio::spawn(report_progress(counters.clone(), start, end)));
    let mut hist = Histogram::<u64>::new(3).expect("3 significant digits is valid");
    let (mut errors, mut refused) = (0, 0);
    while let Some(joined) = workers.join_next().await {
        let (h, e, r) =
            joined.map_err(|e| ClientError::Transport(format!("worker failed: {e}")))?;
        let _ = hist.add(&h);
        errors += e;
        refused += r;
    }
    let elapsed = start.elapsed();
    if let Some(r) = reporter {
        r.abort();
        if std::io::stderr().is_terminal() {
            eprintln!();
        }
    }
    Ok((BenchReport::new(args, &hist, errors, refused, elapsed), hist))
}

/// One load generator of [`measure`]: a client issuing the workload's operations back to
/// back until the end of the run.
struct Worker<T: Transport> {
    client: Client<T>,
    lock_name: String,
    /// Its xorshift state.
    x: u64,
    value: Bytes,
    workload: Workload,
    keys: u64,
    read_options: cache_client::ReadOptions,
}

impl<T: Transport> Worker<T> {
    /// Runs until `end`; gives the latencies of operations done, and the counts of errors
    /// and of refusals (a lock held by another worker).
    async fn run(mut self, counters: Arc<Progress>, end: Instant) -> (Histogram<u64>, u64, u64) {
        let mut hist = Histogram::<u64>::new(3).expect("3 significant digits is valid");
        let (mut errors, mut refused) = (0u64, 0u64);
        loop {
            let t0 = Instant::now();
            if t0 >= end {
                break;
            }
            match self.one_op().await {
                Outcome::Done => {
                    let _ = hist.record(t0.elapsed().as_nanos() as u64);
                    counters.ops.fetch_add(1, Ordering::Relaxed);
                }
                Outcome::Refused => refused += 1,
                Outcome::Failed => {
                    errors += 1;
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        (hist, errors, refused)
    }

    fn next(&mut self) -> u64 {
        self.x ^= self.x << 13;
        self.x ^= self.x >> 7;
        self.x ^= self.x << 17;
        self.x
    }

    /// One operation of the workload on a key drawn at random.
    async fn one_op(&mut self) -> Outcome {
        let x = self.next();
        let k = key(x % self.keys);
        match self.workload {
            Workload::Lock => lock_pair(&self.client, &self.lock_name).await,
            Workload::Txn => {
                // TXN_KEYS keys from successive xorshift draws (duplicates collapse).
                let mut ks = vec![k];
                for _ in 1..TXN_KEYS {
                    let x = self.next();
                    ks.push(key(x % self.keys));
                }
                txn_once(&self.client, &ks, &self.value).await
            }
            workload => {
                let read = match workload {
                    Workload::Get => true,
                    Workload::Mixed => (x >> 32) % 100 < MIXED_READ_PERCENT,
                    _ => false,
                };
                let ok = if read {
                    self.client.read_with(&k, self.read_options).await.is_ok()
                } else {
                    self.client.write(&k, self.value.clone()).await.is_ok()
                };
                if ok {
                    Outcome::Done
                } else {
                    Outcome::Failed
                }
            }
        }
    }
}

async fn report_progress(counters: Arc<Progress>, start: Instant, end: Instant) {
    let tty = std::io::stderr().is_terminal();
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + PROGRESS_INTERVAL,
        PROGRESS_INTERVAL,
    );
    let mut last = 0u64;
    while Instant::now() < end {
        tick.tick().await;
        let ops = counters.ops.load(Ordering::Relaxed);
        let line = format!(
            "bench: {:.0}s {} ops ({} ops/s) {} errors",
            start.elapsed().as_secs_f64(),
            ops,
            ops - last,
            counters.errors.load(Ordering::Relaxed)
        );
        last = ops;
        if tty {
            eprint!("\r{line}\x1b[K");
        } else {
            eprintln!("{line}");
        }
    }
}

/// Runs `args` on `clients` and prints the result; returns the exit code.
pub async fn execute<T: Transport>(
    clients: &[Client<T>],
    args: &BenchArgs,
    out: &mut impl Write,
) -> Result<i32, ClientError> {
    let (report, hist) = measure_histogram(clients, args, true).await?;
    let io = |e: std::io::Error| ClientError::Transport(format!("writing output: {e}"));
    if args.json {
        let text = serde_json::to_string(&report)
            .map_err(|e| ClientError::Transport(format!("encoding JSON: {e}")))?;
        writeln!(out, "{text}").map_err(io)?;
    } else {
        writeln!(out, "{}", report.text()).map_err(io)?;
    }
    if let Some(path) = &args.plot {
        let picture = plot::LatencyHistogram { title: report.title(), hist: &hist };
        if let Err(e) = plot::write(path, plot::HISTOGRAM_SIZE, &picture) {
            eprintln!("shoal: bench --plot: {e}");
            return Ok(exit::FAILED);
        }
    }
    Ok(exit::OK)
}

/// Opens up to [`ENDPOINTS_MAX`] clients (one endpoint each) of the cluster `connection`
/// names.
pub async fn connect_clients(
    connection: &Connection,
    workers: u64,
) -> Result<Vec<Client<SocketTransport>>, ClientError> {
    let mut clients = Vec::new();
    for _ in 0..(workers as usize).min(ENDPOINTS_MAX) {
        clients.push(connection.client().await?);
    }
    Ok(clients)
}

/// What the failover measurement found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FailoverReport {
    pub workload: Workload,
    pub trials: u64,
    pub completed: u64,
    pub to_master_ms: Vec<f64>,
    pub to_write_ms: Vec<f64>,
}

impl FailoverReport {
    pub fn text(&self) -> String {
        let stats = |v: &[f64]| {
            let mut v = v.to_vec();
            v.sort_by(f64::total_cmp);
            match (v.first(), v.last()) {
                (Some(min), Some(max)) => format!(
                    "median {:.0} ms, max {max:.0} ms, min {min:.0} ms over {} trials",
                    v[v.len() / 2],
                    v.len()
                ),
                _ => "n/a".into(),
            }
        };
        format!(
            "SIGKILL -> new established master: {}\nSIGKILL -> first acknowledged write: {}\n\
             {} of {} trials completed",
            stats(&self.to_master_ms),
            stats(&self.to_write_ms),
            self.completed,
            self.trials
        )
    }
}

/// `trials` times: SIGKILL the master of `cluster`, time the new established master and the
/// first acknowledged write, restart the killed node.
pub async fn failover(
    cluster: &mut dev::DevCluster,
    trials: u64,
) -> Result<FailoverReport, String> {
    use protocol::message::data::Role;
    let mut report = FailoverReport {
        workload: Workload::Failover,
        trials,
        completed: 0,
        to_master_ms: Vec::new(),
        to_write_ms: Vec::new(),
    };
    for trial in 0..trials {
        let master = cluster.wait_master(dev::MASTER_WAIT).await?;
        let writer = cluster.client(Duration::from_millis(100)).await?;
        let prober = cluster.client(Duration::from_millis(50)).await?;
        let survivors: Vec<String> = cluster
            .file
            .members
            .iter()
            .filter(|(id, _)| **id != master.to_string())
            .map(|(_, a)| a.clone())
            .collect();
        // Warm the writer up on the current master.
        writer
            .write("/failover", Bytes::from_static(b"before"))
            .await
            .map_err(|e| format!("warm-up write: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let killed_at = Instant::now();
        cluster.kill(master);
        let w = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let v = Bytes::from(format!("after {n}"));
                    if writer.write("/failover", v).await.is_ok() {
                        return Some(killed_at.elapsed());
                    }
                }
                None
            })
        };
        let p = {
            let stop = stop.clone();
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    for a in &survivors {
                        if let Ok(s) = prober.status_of(a).await {
                            if s.role == Role::Master {
                                return Some(killed_at.elapsed());
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                None
            })
        };
        let first_write = tokio::time::timeout(FAILOVER_WAIT, w).await;
        stop.store(true, Ordering::Relaxed);
        let elected = p.await.ok().flatten();
        let first_write = first_write.ok().and_then(|r| r.ok()).flatten();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        match (elected, first_write) {
            (Some(e), Some(f)) => {
                eprintln!(
                    "trial {trial}: killed {master}; new master after {:.0} ms, first write \
                     acknowledged after {:.0} ms",
                    ms(e),
                    ms(f)
                );
                report.completed += 1;
                report.to_master_ms.push(ms(e));
                report.to_write_ms.push(ms(f));
            }
            other => eprintln!("trial {trial}: no failover within {FAILOVER_WAIT:?} ({other:?})"),
        }
        cluster.spawn(master)?;
    }
    Ok(report)
}

/// Prints a report of repeated trials (JSON or its text) and returns the exit code: OK only
/// when every trial completed.
fn print_trials<R: Serialize>(
    result: Result<R, String>,
    json: bool,
    what: &str,
    out: &mut impl Write,
    text: impl Fn(&R) -> String,
    complete: impl Fn(&R) -> bool,
) -> i32 {
    match result {
        Ok(report) => {
            let shown = if json {
                serde_json::to_string(&report).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
            } else {
                text(&report)
            };
            let _ = writeln!(out, "{shown}");
            if complete(&report) {
                exit::OK
            } else {
                exit::FAILED
            }
        }
        Err(e) => {
            eprintln!("shoal: bench {what}: {e}");
            exit::FAILED
        }
    }
}

/// `shoal bench failover`: a dev cluster in a temporary directory, measured, then removed.
pub async fn run_failover(args: &BenchArgs, out: &mut impl Write) -> i32 {
    let binary = match dev::shoal_fs_binary() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("shoal: {e}");
            return exit::FAILED;
        }
    };
    let dir = std::env::temp_dir().join(format!("shoal-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let result = match dev::DevCluster::start(binary, &dir, 3) {
        Ok(mut cluster) => {
            let r = failover(&mut cluster, args.trials).await;
            cluster.stop_all();
            r
        }
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_dir_all(&dir);
    print_trials(result, args.json, "failover", out, FailoverReport::text, |r| {
        r.completed == r.trials
    })
}

/// What the lock-failover measurement found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LockFailoverReport {
    pub workload: Workload,
    pub trials: u64,
    pub completed: u64,
    /// Per completed trial: from the SIGKILL of the holder to the waiter's grant.
    pub kill_to_grant_ms: Vec<f64>,
}

impl LockFailoverReport {
    pub fn text(&self) -> String {
        let mut v = self.kill_to_grant_ms.clone();
        v.sort_by(f64::total_cmp);
        let stats = match (v.first(), v.last()) {
            (Some(min), Some(max)) => format!(
                "median {:.0} ms, max {max:.0} ms, min {min:.0} ms over {} trials",
                v[v.len() / 2],
                v.len()
            ),
            _ => "n/a".into(),
        };
        format!(
            "SIGKILL of the holder -> lock granted to a waiter: {stats}\n{} of {} trials completed",
            self.completed, self.trials
        )
    }
}

/// One lock-failover trial: a child `shoal lock` takes [`FAILOVER_LOCK`], is SIGKILLed once
/// it printed its token, and `waiter` waits for the lock. Returns the time from the kill to
/// the grant.
async fn lock_failover_trial(
    shoal: &std::path::Path,
    cluster_path: &std::path::Path,
    waiter: &Client<SocketTransport>,
    hold: Duration,
) -> Result<Duration, String> {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(shoal)
        .arg("--cluster")
        .arg(cluster_path)
        .args(["lock", FAILOVER_LOCK, "--wait", "30", "--hold"])
        .arg(FAILOVER_HOLD_S.to_string())
        .env_remove("SHOAL_CLUSTER")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", shoal.display()))?;
    let stdout = child.stdout.take().ok_or("the holder has no stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(LOCK_FAILOVER_WAIT, lines.next_line())
        .await
        .map_err(|_| format!("the holder printed no token within {LOCK_FAILOVER_WAIT:?}"))?
        .map_err(|e| format!("reading the holder's output: {e}"))?
        .ok_or("the holder exited without taking the lock")?;
    if !line.starts_with("token ") {
        return Err(format!("the holder printed {line:?}, not a token"));
    }
    // Held now: the waiter is refused (proves the child really holds it).
    match waiter.lock(FAILOVER_LOCK, false).await {
        Err(ClientError::LockHeld { .. }) => {}
        Ok(_) => return Err("the lock was free while the child held it".into()),
        Err(e) => return Err(format!("probe of the held lock: {e}")),
    }
    tokio::time::sleep(hold).await;
    child.start_kill().map_err(|e| format!("SIGKILL of the holder: {e}"))?;
    let killed_at = Instant::now();
    let _ = child.wait().await;
    let guard = waiter
        .lock_wait(FAILOVER_LOCK, false, LOCK_FAILOVER_WAIT)
        .await
        .map_err(|e| format!("the waiter was not granted the lock: {e}"))?;
    let granted = killed_at.elapsed();
    guard.release().await.map_err(|e| format!("release by the waiter: {e}"))?;
    Ok(granted)
}

/// `trials` lock-failover trials on `cluster` (see the module docs).
pub async fn lock_failover(
    cluster: &dev::DevCluster,
    shoal: &std::path::Path,
    trials: u64,
) -> Result<LockFailoverReport, String> {
    cluster.wait_master(dev::MASTER_WAIT).await?;
    let waiter = cluster.client(Duration::from_millis(500)).await?;
    // The waiter's session is open before the clock starts.
    waiter.ensure_session().await.map_err(|e| format!("waiter session: {e}"))?;
    match waiter.mkdir(BENCH_DIR).await {
        Ok(_) | Err(ClientError::AlreadyExists { .. }) => {}
        Err(e) => return Err(format!("mkdir {BENCH_DIR}: {e}")),
    }
    let mut report = LockFailoverReport {
        workload: Workload::LockFailover,
        trials,
        completed: 0,
        kill_to_grant_ms: Vec::new(),
    };
    for trial in 0..trials {
        let hold = LOCK_FAILOVER_PHASE * (trial % 3) as u32;
        match lock_failover_trial(shoal, &cluster.cluster_path, &waiter, hold).await {
            Ok(d) => {
                let ms = d.as_secs_f64() * 1000.0;
                eprintln!(
                    "trial {trial}: killed the holder {} ms after its grant; lock granted to the \
                     waiter after {ms:.0} ms",
                    hold.as_millis()
                );
                report.completed += 1;
                report.kill_to_grant_ms.push(ms);
            }
            Err(e) => eprintln!("trial {trial}: {e}"),
        }
    }
    Ok(report)
}

/// `shoal bench lock-failover`: a dev cluster in a temporary directory, measured, then removed.
pub async fn run_lock_failover(args: &BenchArgs, out: &mut impl Write) -> i32 {
    let (binary, shoal) = match (dev::shoal_fs_binary(), std::env::current_exe()) {
        (Ok(b), Ok(s)) => (b, s),
        (Err(e), _) => {
            eprintln!("shoal: {e}");
            return exit::FAILED;
        }
        (_, Err(e)) => {
            eprintln!("shoal: cannot locate shoal itself: {e}");
            return exit::FAILED;
        }
    };
    let dir = std::env::temp_dir().join(format!("shoal-bench-lock-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let result = match dev::DevCluster::start(binary, &dir, 3) {
        Ok(mut cluster) => {
            let r = lock_failover(&cluster, &shoal, args.trials).await;
            cluster.stop_all();
            r
        }
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_dir_all(&dir);
    print_trials(result, args.json, "lock-failover", out, LockFailoverReport::text, |r| {
        r.completed == r.trials
    })
}

/// What `shoal bench` runs from the command line: connects its own endpoints (or starts a dev
/// cluster for failover). Returns the exit code.
pub async fn run_cli(connection: &Connection, args: &BenchArgs) -> i32 {
    let mut stdout = std::io::stdout().lock();
    if args.plot.is_some() && matches!(args.workload, Workload::Failover | Workload::LockFailover) {
        eprintln!("shoal: bench --plot draws the latencies of put, get, mixed, lock and txn only");
        return exit::USAGE;
    }
    if args.workload == Workload::Failover {
        return run_failover(args, &mut stdout).await;
    }
    if args.workload == Workload::LockFailover {
        return run_lock_failover(args, &mut stdout).await;
    }
    let result = match connect_clients(connection, args.clients).await {
        Ok(clients) => execute(&clients, args, &mut stdout).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("shoal: {e}");
            exit::code_of(&e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_and_without_units_and_refuse_nonsense() {
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("2h").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("100m").is_err(), "above DURATION_MAX");
    }

    #[test]
    fn report_quantiles_come_from_the_histogram() {
        let mut h = Histogram::<u64>::new(3).unwrap();
        for v in 1..=1000u64 {
            h.record(v * 1000).unwrap();
        }
        let args = BenchArgs {
            workload: Workload::Put,
            clients: 4,
            duration: Duration::from_secs(2),
            value_bytes: 10,
            keys: 5,
            trials: 0,
            no_cache: false,
            linearizable: false,
            json: true,
            plot: None,
        };
        let r = BenchReport::new(&args, &h, 3, 1, Duration::from_secs(2));
        assert_eq!(r.ops, 1000);
        assert_eq!(r.errors, 3);
        assert_eq!(r.refused, 1);
        assert_eq!(r.throughput_ops_per_s, 500.0);
        // Recorded in ns with 3 significant digits: quantiles are exact to 0.1 %.
        assert!((r.latency_us.p50 - 500.0).abs() <= 0.5, "{:?}", r.latency_us);
        assert!((r.latency_us.p99 - 990.0).abs() <= 1.0, "{:?}", r.latency_us);
        assert!((r.latency_us.max - 1000.0).abs() <= 1.0, "{:?}", r.latency_us);
        assert_eq!(r.reads, "cached");
        let json: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(json["workload"], "put");
        assert!(json["latency_us"]["p999"].as_f64().is_some_and(|p| (p - 999.0).abs() <= 1.0));
    }
}
