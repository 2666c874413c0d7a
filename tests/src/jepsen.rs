//! A Jepsen-style run of real `shoal-fs` processes on network-namespace hosts: one node per
//! host namespace, multicast across the bridge (each node's interface is its host's address),
//! and in-process clients in the client namespace running a register workload while a seeded
//! nemesis kills, pauses, partitions and drops packets. The history (every operation's call and
//! return time and outcome) is checked with the WGL [`linearizability`] checker.
//!
//! Workload: a handful of keys, each a register holding unique numbers; several concurrent
//! clients, each doing one operation at a time: a linearizable read, a write, or a
//! compare-and-set (a linearizable read, then a batch conditioned on the key's zxid with
//! [`Batch::if_zxid`]). Values are unique, so "the key's zxid is the one read" is the same as
//! "the register holds the value read", which is the checker's compare-and-set.
//!
//! Outcomes: `ok` (the client saw the answer), `fail` (a read that got no answer, or a
//! compare-and-set whose condition failed: nothing was written), `unknown` (a write or
//! compare-and-set without a definite answer: it may or may not have taken effect; the checker
//! lets it take effect at any time after its call, or never).
//!
//! After the schedule every fault is healed, the workload goes on through a quiet period, then
//! every key is read once more (linearizably, retried until it answers); those final reads are
//! part of the checked history, so an acknowledged write that was lost shows as a violation.
//! Each node is also asked directly, at the final reads' zxid, whether it holds the same value
//! (replica convergence).
//!
//! The clients run on one thread that entered the client namespace with `setns`, on a
//! current-thread tokio runtime, so every socket they open lives in that namespace.
//!
//! With [`RegistersOptions::session_reads`], clients also make reads that are not
//! linearizable: cached reads (`Client::read`, the library's default) and reads from any node
//! at the client's floor. They stay out of the linearizability check (they may be stale) and
//! go through the [`session`] checker (read-your-writes, monotonic reads, the floor,
//! integrity) with every write's acknowledged zxid. After the final reads every client's
//! cache must come to hold the final values within [`CACHE_CONVERGE_MS`] (kept fresh by the
//! multicast Update stream).
//!
//! With [`RegistersOptions::overlap`] the schedule draws pairs of faults in force at once
//! ([`Schedule::generate_overlapping`]); a kill or pause that begins while the master is
//! isolated is aimed at the master the majority elected meanwhile ("pause new master"). With
//! [`RegistersOptions::clocks`] chosen nodes run under libfaketime (a clock rate or a
//! wall-clock offset), see [`crate::clock`].

use crate::clock::{self, ClockSkew};
use crate::cluster::get_at;
use crate::jepsen_harness::{drive, enter_namespace, start_cluster, Cluster, Driven};
pub use crate::jepsen_harness::{established_master, Unavailability};
pub use crate::jepsen_harness::{CLUSTER_ID, FSLIVE_INTERVAL_MS, GROUP, NODE_PORT};
pub use crate::jepsen_harness::{MONITOR_INTERVAL_MS, READY_TIMEOUT_MS, REQUEST_TIMEOUT_MS};
use crate::linearizability::{self, Input, Operation, Output, Value, Violation};
use crate::nemesis::{
    Fault, FaultKind, FaultWindow, Nemesis, Scenario, Schedule, ScheduleBounds, ScheduledFault,
};
use crate::netns::{NetnsError, Node};
use crate::report::{self, OpOutcome, Sample, Summary};
use crate::session::{self, ReadMode, SessionCheck, SessionEvent, SessionOp};
use cache_client::net::{ClusterFile, SocketTransport};
use cache_client::{Batch, Client, ClientConfig, ClientError, ReadOptions};
use protocol::message::data::Versioned;
use protocol::Zxid;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Timeouts one client call tolerates before giving up (a write's outcome is then unknown).
pub const ATTEMPTS_MAX: usize = 6;
/// A guard over one whole client call (redirects and no-master pauses included).
pub const OP_TIMEOUT_MS: u64 = 10_000;
/// How long the final read of one key is retried before it counts as unavailable.
pub const FINAL_READ_TIMEOUT_MS: u64 = 30_000;
/// Most history lines quoted around a violation in the report.
pub const EXCERPT_OPS_MAX: usize = 40;
/// How long after the final reads every client's cache gets to hold the final values.
pub const CACHE_CONVERGE_MS: u64 = 10_000;
/// The lease probe's timeout for one node (a dead or paused node costs no more).
pub const PROBE_TIMEOUT_MS: u64 = 200;
/// Pause between two rounds of the lease probe.
pub const PROBE_INTERVAL_MS: u64 = 5;

/// What one seeded run does.
#[derive(Clone, Debug)]
pub struct RegistersOptions {
    pub seed: u64,
    pub hosts: usize,
    pub bounds: ScheduleBounds,
    pub kinds: Vec<FaultKind>,
    pub clients: usize,
    pub keys: usize,
    /// Pause between two operations of one client (bounds the history's size).
    pub think_ms: u64,
    /// Healthy time after the schedule (workload still running) before the final reads.
    pub quiet_ms: u64,
    pub out_dir: PathBuf,
    /// Draw overlapping faults ([`Schedule::generate_overlapping`]).
    pub overlap: bool,
    /// Also make cached and any-node reads, checked by [`session`].
    pub session_reads: bool,
    /// Nodes that run under libfaketime.
    pub clocks: Vec<ClockSkew>,
    /// One more client that sends linearizable reads straight to every node in turn (not
    /// through the client's routing): whatever node answers one claims to hold the master's
    /// lease, so the lease is checked even where the client would have moved on.
    pub lease_probe: bool,
    /// Drawn faults, or an aimed scenario (its schedule replaces the drawn one).
    pub scenario: Scenario,
}

impl RegistersOptions {
    /// A CI-sized run: 3 hosts, about 15 s of process and network faults, 4 clients, 3 keys.
    pub fn new(seed: u64) -> RegistersOptions {
        RegistersOptions {
            seed,
            hosts: 3,
            bounds: ScheduleBounds { run_ms: 15_000, faults_max: 5, ..ScheduleBounds::default() },
            kinds: FaultKind::REGISTERS.to_vec(),
            clients: 4,
            keys: 3,
            think_ms: 10,
            quiet_ms: 3_000,
            out_dir: PathBuf::from("target/jepsen"),
            overlap: false,
            session_reads: true,
            clocks: Vec::new(),
            lease_probe: true,
            scenario: Scenario::Drawn,
        }
    }

    /// The run's schedule (sequential or overlapping).
    pub fn schedule(&self) -> Schedule {
        if let Some(schedule) = self.scenario.schedule(self.seed, self.hosts, &self.bounds) {
            schedule
        } else if self.overlap {
            Schedule::generate_overlapping(self.seed, self.hosts, &self.bounds, &self.kinds)
        } else {
            Schedule::generate(self.seed, self.hosts, &self.bounds, &self.kinds)
        }
    }

    /// The report's file name: workload, seed, hosts, and what is special about the run.
    pub fn name(&self) -> String {
        let mut name = format!("registers-seed{}-n{}", self.seed, self.hosts);
        if self.overlap {
            name.push_str("-overlap");
        }
        if let Some(scenario) = self.scenario.name() {
            name.push_str(&format!("-{scenario}"));
        }
        for c in &self.clocks {
            name.push_str(&format!("-clock-h{}", c.host));
        }
        name
    }
}

impl FaultKind {
    /// The faults of the register runs: kill -9 and restart, SIGSTOP/SIGCONT, partitions,
    /// isolation (of the master, see [`run_registers`]) and packet loss.
    pub const REGISTERS: [FaultKind; 5] = [
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Partition,
        FaultKind::Isolate,
        FaultKind::Loss,
    ];
}

/// How one operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Fail,
    Unknown,
}

/// One operation as the client saw it, with times in µs from the start of the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub op: Operation,
    pub outcome: Outcome,
    /// When the client gave up or saw the answer.
    pub end_us: u64,
    /// The error, when there was one.
    pub error: Option<String>,
}

/// What a run produced.
#[derive(Debug)]
pub struct RegistersOutcome {
    pub schedule: Schedule,
    pub windows: Vec<FaultWindow>,
    pub history: Vec<Recorded>,
    pub ok: usize,
    pub failed: usize,
    pub unknown: usize,
    /// The checker's verdict on the whole history, final reads included.
    pub check: Result<(), Violation>,
    /// Keys whose final read never answered, nodes that disagree at the final zxid.
    pub final_problems: Vec<String>,
    pub unavailability: Vec<Unavailability>,
    pub summary: Summary,
    pub svg: PathBuf,
    pub interrupted: bool,
    /// The verdict on the non-linearizable reads (and every read, against the floor).
    pub session: SessionCheck,
    /// What the session checker was given (reads that answered, every write).
    pub session_history: Vec<SessionOp>,
    /// The longest a client's cache took to hold the final values after the final reads.
    pub cache_converge_ms: Option<u64>,
    /// Which host was master when, as the monitor saw it: (ms from the start, host).
    pub masters: Vec<(u64, usize)>,
}

impl RegistersOutcome {
    pub fn passed(&self) -> bool {
        self.check.is_ok()
            && self.final_problems.is_empty()
            && self.session.passed()
            && !self.interrupted
    }

    /// The operations of the violating key around the point where the checker failed, as
    /// text lines (for a report); empty when there is no violation.
    pub fn excerpt(&self) -> Vec<String> {
        let Err(Violation::NotLinearizable { key, .. }) = &self.check else { return Vec::new() };
        let ops: Vec<&Recorded> = self.history.iter().filter(|r| &r.op.key == key).collect();
        let skip = ops.len().saturating_sub(EXCERPT_OPS_MAX);
        ops.into_iter().skip(skip).map(describe).collect()
    }
}

/// One history line: client, times, input, outcome, output.
pub fn describe(r: &Recorded) -> String {
    let input = match r.op.input {
        Input::Read => "read".to_string(),
        Input::Write(v) => format!("write {v}"),
        Input::Cas { expected, new } => format!("cas {expected:?}->{new}"),
    };
    let output = match (r.outcome, r.op.output) {
        (Outcome::Ok, Some(Output::Read(v))) => format!("ok {v:?}"),
        (Outcome::Ok, Some(Output::Cas(b))) => format!("ok {b}"),
        (Outcome::Ok, _) => "ok".into(),
        (Outcome::Fail, _) => format!("fail {}", r.error.as_deref().unwrap_or("")),
        (Outcome::Unknown, _) => format!("unknown {}", r.error.as_deref().unwrap_or("")),
    };
    format!(
        "c{} {} {:>9.3}..{:>9.3} ms {input:<24} {output}",
        r.op.client,
        r.op.key,
        r.op.call as f64 / 1000.0,
        r.end_us as f64 / 1000.0
    )
}

/// The keys of a run: registers at the root.
pub fn keys(count: usize) -> Vec<String> {
    (0..count).map(|k| format!("/r{k}")).collect()
}

/// The value a register holds, from its bytes (decimal); garbage becomes `Value::MAX`, which
/// no client writes, so the checker flags it.
pub fn parse_value(v: &Versioned) -> Value {
    std::str::from_utf8(&v.value).ok().and_then(|s| s.parse().ok()).unwrap_or(Value::MAX)
}

/// The longest stretch inside each window without an acknowledged write (write or successful
/// compare-and-set), and the time from the window's end to the next one.
pub fn unavailability(history: &[Recorded], windows: &[FaultWindow]) -> Vec<Unavailability> {
    let acked_ms: Vec<u64> = history
        .iter()
        .filter(|r| r.outcome == Outcome::Ok)
        .filter(|r| {
            matches!(
                (r.op.input, r.op.output),
                (Input::Write(_), _) | (Input::Cas { .. }, Some(Output::Cas(true)))
            )
        })
        .map(|r| r.end_us / 1000)
        .collect();
    crate::jepsen_harness::unavailability(&acked_ms, windows)
}

/// What the main thread and the client thread share.
struct Shared {
    /// The host index of the master the monitor saw last (0: none known).
    master: AtomicUsize,
    /// Every change of `master` the monitor saw: (ms from the start, host).
    masters: std::sync::Mutex<Vec<(u64, usize)>>,
    /// Set when the workload should stop and the final reads begin.
    finish: AtomicBool,
    /// Set when the run is interrupted: the client thread returns at once.
    abort: AtomicBool,
}

/// What the client thread returns.
struct ClientResult {
    history: Vec<Recorded>,
    session: Vec<SessionOp>,
    final_problems: Vec<String>,
    cache_converge_ms: Option<u64>,
}

/// Builds the network, starts `shoal-fs` on every host, runs clients in the client namespace
/// under the seeded schedule, heals, waits a quiet period, reads every key, checks the history
/// and writes the report. `stop()` (e.g. set by SIGINT) ends it early; everything is torn down
/// on every path (the nodes when `nodes` drops, the namespaces when `network` drops).
pub fn run_registers(
    options: &RegistersOptions,
    shoal_fs: &Path,
    stop: &dyn Fn() -> bool,
) -> Result<RegistersOutcome, NetnsError> {
    let schedule = options.schedule();
    println!("{schedule}");
    for c in &options.clocks {
        println!("clock: h{} runs with FAKETIME=\"{}\"", c.host, c.faketime());
    }
    if !options.clocks.is_empty() {
        clock::verify(shoal_fs, &options.clocks)?;
    }
    let env_of = |host: usize| match options.clocks.iter().find(|c| c.host == host) {
        Some(c) => c.env(),
        None => Vec::new(),
    };
    let Cluster { network, dir: _dir, client_file, mut nodes } =
        start_cluster(options.hosts, shoal_fs, &env_of, &[])?;

    let shared = Arc::new(Shared {
        master: AtomicUsize::new(0),
        masters: std::sync::Mutex::new(Vec::new()),
        finish: AtomicBool::new(false),
        abort: AtomicBool::new(false),
    });
    let client = {
        let namespace = network.client().namespace.clone();
        let shared = shared.clone();
        let options = options.clone();
        move |ready_tx, start_rx| {
            client_main(&namespace, &client_file, &options, &shared, ready_tx, start_rx)
        }
    };
    let schedule_from = |run_start: Instant| {
        let mut nemesis = Nemesis::new(&network);
        run_schedule(
            &mut nemesis,
            &schedule,
            &mut nodes,
            run_start,
            &shared,
            options.scenario,
            stop,
        )
    };
    let Driven { output: result, windows, interrupted, .. } = drive(
        client,
        &|| shared.abort.store(true, Ordering::SeqCst),
        &|| shared.finish.store(true, Ordering::SeqCst),
        schedule_from,
        options.quiet_ms,
        stop,
    )?;
    drop(nodes);
    drop(network);

    let mut history = result.history;
    history.sort_by_key(|r| r.op.call);
    let ops: Vec<Operation> = history.iter().map(|r| r.op.clone()).collect();
    let check = linearizability::check(&ops);
    let session_check = session::check(&result.session);
    let count = |o: Outcome| history.iter().filter(|r| r.outcome == o).count();
    let (ok, failed, unknown) = (count(Outcome::Ok), count(Outcome::Fail), count(Outcome::Unknown));
    let mut samples: Vec<Sample> = history
        .iter()
        .map(|r| Sample {
            at_ms: r.end_us / 1000,
            op: match r.op.input {
                Input::Read => "read".into(),
                Input::Write(_) => "write".into(),
                Input::Cas { .. } => "cas".into(),
            },
            latency_us: r.end_us.saturating_sub(r.op.call),
            outcome: match r.outcome {
                Outcome::Ok => OpOutcome::Ok,
                Outcome::Fail => OpOutcome::Failed,
                Outcome::Unknown => OpOutcome::Unknown,
            },
        })
        .collect();
    // Non-linearizable reads that answered (the failed ones are not in the session list).
    samples.extend(result.session.iter().filter_map(|s| match s.event {
        SessionEvent::Read { mode: mode @ (ReadMode::Cached | ReadMode::Node), .. } => {
            Some(Sample {
                at_ms: s.end_us / 1000,
                op: if mode == ReadMode::Cached { "cached".into() } else { "node".into() },
                latency_us: s.end_us.saturating_sub(s.call_us),
                outcome: OpOutcome::Ok,
            })
        }
        _ => None,
    }));
    samples.sort_by_key(|s| s.at_ms);
    let passed =
        check.is_ok() && result.final_problems.is_empty() && session_check.passed() && !interrupted;
    let name = options.name();
    let title = format!(
        "shoal-fs registers, {} hosts, seed {}{}: {ok} ok, {failed} fail, {unknown} unknown, {}",
        options.hosts,
        options.seed,
        if options.overlap { " (overlapping)" } else { "" },
        if passed { "PASS" } else { "FAIL" }
    );
    let (svg, summary) = report::write(&options.out_dir, &name, &title, &samples, &windows)?;
    let lines: Vec<String> = history.iter().map(describe).collect();
    std::fs::write(options.out_dir.join(format!("{name}.history")), lines.join("\n") + "\n")?;
    let unavailability = unavailability(&history, &windows);
    let masters = shared.masters.lock().map(|m| m.clone()).unwrap_or_default();
    Ok(RegistersOutcome {
        schedule,
        windows,
        history,
        ok,
        failed,
        unknown,
        check,
        final_problems: result.final_problems,
        unavailability,
        summary,
        svg,
        interrupted,
        session: session_check,
        session_history: result.session,
        cache_converge_ms: result.cache_converge_ms,
        masters,
    })
}

/// The nemesis's schedule, as [`Nemesis::run_schedule`], except that an `Isolate` fault cuts
/// off the host of the current master (when the monitor knows one): the fault that matters
/// most for a master-based protocol; a kill or pause that begins while an isolated master is
/// cut off is aimed at the master elected meanwhile (when there is one), and a process fault
/// on the master's host says so in its label.
fn run_schedule(
    nemesis: &mut Nemesis<'_>,
    schedule: &Schedule,
    nodes: &mut [Node],
    run_start: Instant,
    shared: &Shared,
    scenario: Scenario,
    stop: &dyn Fn() -> bool,
) -> Result<Vec<FaultWindow>, NetnsError> {
    let mut resolve = |scheduled: &ScheduledFault, in_force: &[String]| {
        let master = shared.master.load(Ordering::SeqCst);
        let isolated: Vec<usize> = in_force
            .iter()
            .filter_map(|l| l.strip_prefix("isolate master h").and_then(|h| h.parse().ok()))
            .collect();
        // The host whose notices the clients stopped hearing (notice-loss scenario).
        let muted: Option<usize> = in_force.iter().find_map(|l| {
            l.strip_prefix("drop master h")?.strip_suffix(" -> clients")?.parse().ok()
        });
        let fault = scheduled.fault.clone();
        let label = fault.label();
        if let Some(aimed) = crate::nemesis::aim_scenario(scenario, &fault, master, muted) {
            return aimed;
        }
        match fault {
            Fault::Isolate { .. } if master != 0 => {
                (Fault::Isolate { host: master }, format!("isolate master h{master}"))
            }
            Fault::Kill { .. } | Fault::Pause { .. }
                if master != 0 && !isolated.is_empty() && !isolated.contains(&master) =>
            {
                let (fault, what) = match fault {
                    Fault::Kill { .. } => (Fault::Kill { host: master }, "kill -9"),
                    _ => (Fault::Pause { host: master }, "pause"),
                };
                (fault, format!("{what} h{master} (new master)"))
            }
            // Process faults keep their host; the label says when it was the master's, so
            // the unavailability per fault can be told apart.
            Fault::Kill { host } | Fault::Pause { host } | Fault::WipeRestart { host }
                if host == master =>
            {
                (fault, format!("{label} (master)"))
            }
            _ => (fault, label),
        }
    };
    nemesis.run_schedule_with(schedule, nodes, run_start, stop, &mut resolve)
}

/// Enters `namespace` (this thread only) and runs the clients there on a current-thread
/// runtime: waits for a master, reports ready, runs the workload from the start instant until
/// `finish`, then the final reads.
fn client_main(
    namespace: &str,
    cluster_file: &Path,
    options: &RegistersOptions,
    shared: &Shared,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
    start: tokio::sync::oneshot::Receiver<Instant>,
) -> Result<ClientResult, NetnsError> {
    let fail = |e: String| {
        let _ = ready.send(Err(e.clone()));
        NetnsError::Io(std::io::Error::other(e))
    };
    let runtime = enter_namespace(namespace, &fail)?;
    runtime.block_on(async {
        let (file, _) = ClusterFile::load(cluster_file).map_err(|e| fail(e.to_string()))?;
        let monitor = connect(cluster_file).await.map_err(|e| fail(e.to_string()))?;
        let ready_by = Instant::now() + Duration::from_millis(READY_TIMEOUT_MS);
        loop {
            if shared.abort.load(Ordering::SeqCst) {
                return Err(fail("aborted".into()));
            }
            if established_master(&monitor, &file).await.is_some() {
                break;
            }
            if Instant::now() > ready_by {
                return Err(fail(format!("no master within {READY_TIMEOUT_MS} ms")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut clients = Vec::new();
        for _ in 0..options.clients {
            clients.push(connect(cluster_file).await.map_err(|e| fail(e.to_string()))?);
        }
        let _ = ready.send(Ok(()));
        let Ok(run_start) = start.await else {
            return Err(NetnsError::Io(std::io::Error::other("no start signal")));
        };
        let keys = keys(options.keys);
        let mut workers = Vec::new();
        for (index, client) in clients.iter().enumerate() {
            let worker = Worker {
                index: index as u64,
                client: client.clone(),
                keys: keys.clone(),
                rng: StdRng::seed_from_u64(options.seed ^ ((index as u64 + 1) << 40)),
                run_start,
                think_ms: options.think_ms,
                next_value: 0,
                session_reads: options.session_reads,
                session: Vec::new(),
            };
            workers.push(worker.run(shared));
        }
        let probe = async {
            if !options.lease_probe {
                return (Vec::new(), Vec::new());
            }
            let transport = match ClusterFile::load(cluster_file) {
                Ok((file, auth)) => SocketTransport::connect(&file, auth, None).await.ok(),
                Err(_) => None,
            };
            let Some(transport) = transport else { return (Vec::new(), Vec::new()) };
            let addresses: Vec<String> = file.members.values().cloned().collect();
            let client = options.clients as u64;
            lease_probe(&transport, &addresses, &keys, client, run_start, shared).await
        };
        // The monitor tells the nemesis who the master is, while the workers run.
        let watch_master = async {
            while !shared.finish.load(Ordering::SeqCst) && !shared.abort.load(Ordering::SeqCst) {
                if let Some(master) = established_master(&monitor, &file).await {
                    let before = shared.master.swap(master, Ordering::SeqCst);
                    if before != master {
                        let at_ms = run_start.elapsed().as_millis() as u64;
                        if let Ok(mut masters) = shared.masters.lock() {
                            masters.push((at_ms, master));
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(MONITOR_INTERVAL_MS)).await;
            }
        };
        let (histories, (), probed) = tokio::join!(join_all(workers), watch_master, probe);
        let mut history: Vec<Recorded> = Vec::new();
        let mut session: Vec<SessionOp> = Vec::new();
        for (h, s) in histories.into_iter().chain(std::iter::once(probed)) {
            history.extend(h);
            session.extend(s);
        }
        let mut final_problems = Vec::new();
        let mut cache_converge_ms = None;
        if !shared.abort.load(Ordering::SeqCst) {
            let reads = final_reads(&monitor, cluster_file, &keys, run_start, &mut history);
            final_problems = reads.await;
            if options.session_reads {
                let finals: Vec<(String, Option<Value>)> = history
                    .iter()
                    .filter(|r| r.op.client == u64::MAX)
                    .filter_map(|r| match r.op.output {
                        Some(Output::Read(v)) => Some((r.op.key.clone(), v)),
                        _ => None,
                    })
                    .collect();
                let converge = caches_converge(&clients, &finals, run_start, &mut session);
                match converge.await {
                    Ok(ms) => cache_converge_ms = Some(ms),
                    Err(problems) => final_problems.extend(problems),
                }
            }
        }
        Ok(ClientResult { history, session, final_problems, cache_converge_ms })
    })
}

/// Sends linearizable reads of the keys, in turn, straight to every node (one at a time, each
/// bounded by [`PROBE_TIMEOUT_MS`]) until the workload finishes. A node that answers claims
/// the master's lease: its answer joins the linearizability history as a read of client
/// `client`; refusals (`NotMaster`, no lease) and silence are not recorded.
async fn lease_probe(
    transport: &SocketTransport,
    addresses: &[String],
    keys: &[String],
    client: u64,
    run_start: Instant,
    shared: &Shared,
) -> (Vec<Recorded>, Vec<SessionOp>) {
    use cache_client::Transport;
    use protocol::message::data::{ReadOp, ReadReply, ReadRequest, ReadValue};
    use protocol::message::Message;
    let mut history = Vec::new();
    let mut session = Vec::new();
    let now_us = || run_start.elapsed().as_micros() as u64;
    let mut turn = 0usize;
    while !shared.finish.load(Ordering::SeqCst) && !shared.abort.load(Ordering::SeqCst) {
        let key = &keys[turn % keys.len()];
        let address = &addresses[(turn / keys.len()) % addresses.len()];
        turn += 1;
        let request = ReadRequest {
            floor: Zxid::ZERO,
            linearizable: true,
            op: ReadOp::Get { key: key.clone() },
        };
        let call = now_us();
        let reply = transport
            .request(address, Message::Request(request), Duration::from_millis(PROBE_TIMEOUT_MS))
            .await;
        if let Ok(Message::ReadReply(ReadReply { result: Ok(ReadValue::Value(v)), .. })) = reply {
            let end_us = now_us();
            let value = v.as_ref().map(parse_value);
            let op = Operation {
                client,
                key: key.clone(),
                call,
                ret: Some(end_us),
                input: Input::Read,
                output: Some(Output::Read(value)),
            };
            history.push(Recorded { op, outcome: Outcome::Ok, end_us, error: None });
            // Straight to a node, outside the client's floor: only the integrity part of the
            // session check applies, so each probe is its own session.
            session.push(SessionOp {
                client: u64::MAX - 1 - turn as u64,
                key: key.clone(),
                call_us: call,
                end_us,
                event: SessionEvent::Read {
                    mode: ReadMode::Linearizable,
                    value,
                    zxid: v.as_ref().map_or(0, |v| v.zxid.0),
                },
            });
        }
        tokio::time::sleep(Duration::from_millis(PROBE_INTERVAL_MS)).await;
    }
    (history, session)
}

/// Awaits every future, in order, concurrently.
pub async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if outputs[i].is_some() {
                continue;
            }
            match f.as_mut().poll(cx) {
                std::task::Poll::Ready(out) => outputs[i] = Some(out),
                std::task::Poll::Pending => pending = true,
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(|o| o.expect("every future finished")).collect()
}

/// A client on the cluster of `cluster_file` with short timeouts, so that an operation during
/// a fault ends (as unknown) within a few seconds.
async fn connect(cluster_file: &Path) -> Result<Client<SocketTransport>, ClientError> {
    let (file, auth) = ClusterFile::load(cluster_file)?;
    let transport = SocketTransport::connect(&file, auth, None).await?;
    let config = ClientConfig {
        seeds: file.seeds(),
        request_timeout: Duration::from_millis(REQUEST_TIMEOUT_MS),
        attempts_max: ATTEMPTS_MAX,
        redirects_max: 10,
        client_id: Some(transport.id()),
        ..ClientConfig::default()
    };
    Ok(Client::new(transport, config))
}

/// One client's sequential workload.
struct Worker {
    index: u64,
    client: Client<SocketTransport>,
    keys: Vec<String>,
    rng: StdRng,
    run_start: Instant,
    think_ms: u64,
    next_value: u64,
    /// Whether the mix includes cached and any-node reads.
    session_reads: bool,
    /// What the session checker needs: every read that answered, every write.
    session: Vec<SessionOp>,
}

impl Worker {
    fn now_us(&self) -> u64 {
        self.run_start.elapsed().as_micros() as u64
    }

    /// A value no other write of the run uses: the client's index in the high bits.
    fn unique_value(&mut self) -> Value {
        self.next_value += 1;
        ((self.index + 1) << 40) | self.next_value
    }

    async fn run(mut self, shared: &Shared) -> (Vec<Recorded>, Vec<SessionOp>) {
        let mut history = Vec::new();
        while !shared.finish.load(Ordering::SeqCst) && !shared.abort.load(Ordering::SeqCst) {
            let key = self.keys[self.rng.gen_range(0..self.keys.len())].clone();
            let dice = self.rng.gen_range(0..100);
            if self.session_reads {
                // 25 % linearizable reads, 15 % cached reads, 10 % any-node reads, 30 %
                // writes, 20 % compare-and-set.
                match dice {
                    0..=24 => {
                        self.read(&key, &mut history).await;
                    }
                    25..=39 => self.session_read(&key, ReadMode::Cached).await,
                    40..=49 => self.session_read(&key, ReadMode::Node).await,
                    50..=79 => self.write(&key, &mut history).await,
                    _ => self.cas(&key, &mut history).await,
                }
            } else {
                match dice {
                    0..=39 => {
                        self.read(&key, &mut history).await;
                    }
                    40..=74 => self.write(&key, &mut history).await,
                    _ => self.cas(&key, &mut history).await,
                }
            }
            tokio::time::sleep(Duration::from_millis(self.think_ms)).await;
        }
        (history, self.session)
    }

    /// A read that need not be linearizable: from the cache, or from any node at the floor.
    /// Only answers are recorded (a failed read tells the session checker nothing).
    async fn session_read(&mut self, key: &str, mode: ReadMode) {
        let call_us = self.now_us();
        let options = match mode {
            ReadMode::Cached => ReadOptions::default(),
            ReadMode::Node => ReadOptions { linearizable: false, bypass_cache: true },
            ReadMode::Linearizable => ReadOptions::linearizable(),
        };
        if let Ok(v) = guarded(self.client.read_with(key, options)).await {
            let end_us = self.now_us();
            self.session.push(SessionOp {
                client: self.index,
                key: key.to_string(),
                call_us,
                end_us,
                event: SessionEvent::Read {
                    mode,
                    value: v.as_ref().map(parse_value),
                    zxid: v.as_ref().map_or(0, |v| v.zxid.0),
                },
            });
        }
    }

    fn session_write(&mut self, key: &str, call_us: u64, value: Value, acked: Option<Zxid>) {
        let end_us = self.now_us();
        self.session.push(SessionOp {
            client: self.index,
            key: key.to_string(),
            call_us,
            end_us,
            event: SessionEvent::Write { value, acked: acked.map(|z| z.0) },
        });
    }

    fn record(
        &self,
        key: &str,
        call: u64,
        input: Input,
        result: Result<Output, (Outcome, String)>,
        history: &mut Vec<Recorded>,
    ) {
        let end_us = self.now_us();
        let (ret, output, outcome, error) = match result {
            Ok(output) => (Some(end_us), Some(output), Outcome::Ok, None),
            // A definite failure: nothing happened, and a failed read tells nothing; the
            // checker needs a return time only for operations whose output it must explain.
            Err((Outcome::Fail, e)) => match input {
                Input::Cas { .. } => {
                    (Some(end_us), Some(Output::Cas(false)), Outcome::Fail, Some(e))
                }
                _ => (None, None, Outcome::Fail, Some(e)),
            },
            Err((outcome, e)) => (None, None, outcome, Some(e)),
        };
        let op = Operation { client: self.index, key: key.to_string(), call, ret, input, output };
        history.push(Recorded { op, outcome, end_us, error });
    }

    /// A linearizable read; returns what it saw (`None` when it failed).
    async fn read(&mut self, key: &str, history: &mut Vec<Recorded>) -> Option<Option<Versioned>> {
        let call = self.now_us();
        let result = guarded(self.client.read_with(key, ReadOptions::linearizable())).await;
        match result {
            Ok(v) => {
                let output = Output::Read(v.as_ref().map(parse_value));
                self.record(key, call, Input::Read, Ok(output), history);
                let end_us = self.now_us();
                self.session.push(SessionOp {
                    client: self.index,
                    key: key.to_string(),
                    call_us: call,
                    end_us,
                    event: SessionEvent::Read {
                        mode: ReadMode::Linearizable,
                        value: v.as_ref().map(parse_value),
                        zxid: v.as_ref().map_or(0, |v| v.zxid.0),
                    },
                });
                Some(v)
            }
            Err(e) => {
                self.record(key, call, Input::Read, Err((Outcome::Fail, e)), history);
                None
            }
        }
    }

    async fn write(&mut self, key: &str, history: &mut Vec<Recorded>) {
        let value = self.unique_value();
        let call = self.now_us();
        let result = guarded(self.client.write(key, value.to_string())).await;
        self.session_write(key, call, value, result.as_ref().ok().copied());
        let result = result.map(|_| Output::Write).map_err(|e| (Outcome::Unknown, e));
        self.record(key, call, Input::Write(value), result, history);
    }

    /// Read, then write a new value conditioned on the zxid read.
    async fn cas(&mut self, key: &str, history: &mut Vec<Recorded>) {
        let Some(current) = self.read(key, history).await else { return };
        let expected = current.as_ref().map(parse_value);
        let zxid = current.as_ref().map_or(Zxid::ZERO, |v| v.zxid);
        let new = self.unique_value();
        let batch = Batch::new().if_zxid(key, zxid).write(key, new.to_string());
        let call = self.now_us();
        let result =
            tokio::time::timeout(Duration::from_millis(OP_TIMEOUT_MS), self.client.batch(batch))
                .await;
        let acked = match &result {
            Ok(Ok(z)) => Some(*z),
            _ => None,
        };
        self.session_write(key, call, new, acked);
        let result = match result {
            Ok(Ok(_)) => Ok(Output::Cas(true)),
            Ok(Err(ClientError::ConditionFailed { detail })) => Err((Outcome::Fail, detail)),
            Ok(Err(e)) => Err((Outcome::Unknown, e.to_string())),
            Err(_) => Err((Outcome::Unknown, format!("no answer within {OP_TIMEOUT_MS} ms"))),
        };
        self.record(key, call, Input::Cas { expected, new }, result, history);
    }
}

/// A client call bounded by [`OP_TIMEOUT_MS`]; errors as text.
async fn guarded<T>(
    call: impl std::future::Future<Output = Result<T, ClientError>>,
) -> Result<T, String> {
    match tokio::time::timeout(Duration::from_millis(OP_TIMEOUT_MS), call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {OP_TIMEOUT_MS} ms")),
    }
}

/// After the final reads: every client reads every key from its cache (`Client::read`) until
/// it gets the final value, within [`CACHE_CONVERGE_MS`] of the start of this check; the reads
/// join the session history. Returns the longest time a client took, or what stayed stale.
async fn caches_converge(
    clients: &[Client<SocketTransport>],
    finals: &[(String, Option<Value>)],
    run_start: Instant,
    session: &mut Vec<SessionOp>,
) -> Result<u64, Vec<String>> {
    let start = Instant::now();
    let deadline = start + Duration::from_millis(CACHE_CONVERGE_MS);
    let mut longest_ms = 0;
    let mut problems = Vec::new();
    let now_us = || run_start.elapsed().as_micros() as u64;
    for (index, client) in clients.iter().enumerate() {
        for (key, expected) in finals {
            let mut last = None;
            loop {
                let call_us = now_us();
                if let Ok(v) = guarded(client.read(key)).await {
                    let value = v.as_ref().map(parse_value);
                    session.push(SessionOp {
                        client: index as u64,
                        key: key.clone(),
                        call_us,
                        end_us: now_us(),
                        event: SessionEvent::Read {
                            mode: ReadMode::Cached,
                            value,
                            zxid: v.as_ref().map_or(0, |v| v.zxid.0),
                        },
                    });
                    if value == *expected {
                        longest_ms = longest_ms.max(start.elapsed().as_millis() as u64);
                        break;
                    }
                    last = Some(value);
                }
                if Instant::now() > deadline {
                    problems.push(format!(
                        "client {index}'s cached read of {key} still gave {last:?}, not the final \
                         {expected:?}, {CACHE_CONVERGE_MS} ms after the final reads"
                    ));
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    if problems.is_empty() {
        Ok(longest_ms)
    } else {
        Err(problems)
    }
}

/// Reads every key linearizably (retried until it answers or [`FINAL_READ_TIMEOUT_MS`]),
/// adds the reads to the history, then asks every node directly for the key at the highest
/// zxid read, which must give the same value.
async fn final_reads(
    client: &Client<SocketTransport>,
    cluster_file: &Path,
    keys: &[String],
    run_start: Instant,
    history: &mut Vec<Recorded>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let final_client = u64::MAX;
    let mut seen: Vec<(String, Option<Versioned>)> = Vec::new();
    for key in keys {
        let deadline = Instant::now() + Duration::from_millis(FINAL_READ_TIMEOUT_MS);
        let mut last_error;
        loop {
            let call = run_start.elapsed().as_micros() as u64;
            match guarded(client.read_with(key, ReadOptions::linearizable())).await {
                Ok(v) => {
                    let end_us = run_start.elapsed().as_micros() as u64;
                    let op = Operation {
                        client: final_client,
                        key: key.clone(),
                        call,
                        ret: Some(end_us),
                        input: Input::Read,
                        output: Some(Output::Read(v.as_ref().map(parse_value))),
                    };
                    history.push(Recorded { op, outcome: Outcome::Ok, end_us, error: None });
                    seen.push((key.clone(), v));
                    break;
                }
                Err(e) => last_error = e,
            }
            if Instant::now() > deadline {
                problems.push(format!(
                    "final read of {key} got no answer within {FINAL_READ_TIMEOUT_MS} ms after \
                     healing: {last_error}"
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let floor = seen.iter().filter_map(|(_, v)| v.as_ref().map(|v| v.zxid)).max();
    let floor = floor.unwrap_or(Zxid::ZERO).max(client.floor());
    let transport = match ClusterFile::load(cluster_file) {
        Ok((file, auth)) => SocketTransport::connect(&file, auth, None).await.map(|t| (file, t)),
        Err(e) => Err(e),
    };
    let (file, transport) = match transport {
        Ok(ft) => ft,
        Err(e) => {
            problems.push(format!("cannot open a transport for the replica check: {e}"));
            return problems;
        }
    };
    for (id, address) in &file.members {
        for (key, expected) in &seen {
            match get_at(&transport, address, key, floor).await {
                Ok(v) if v.as_ref().map(parse_value) == expected.as_ref().map(parse_value) => {}
                Ok(v) => problems.push(format!(
                    "node {id} holds {:?} at {key} at zxid {floor:?}, the master {:?}",
                    v.as_ref().map(parse_value),
                    expected.as_ref().map(parse_value)
                )),
                Err(e) => problems.push(format!("node {id} did not answer for {key}: {e}")),
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(client: u64, call: u64, end_us: u64, input: Input, output: Output) -> Recorded {
        Recorded {
            op: Operation {
                client,
                key: "/r0".into(),
                call,
                ret: Some(end_us),
                input,
                output: Some(output),
            },
            outcome: Outcome::Ok,
            end_us,
            error: None,
        }
    }

    /// The gap is the longest stretch inside the window without an acknowledged write; reads
    /// and failed compare-and-sets do not count as writes; recovery is measured from the end.
    #[test]
    fn unavailability_is_the_longest_gap_between_acknowledged_writes_in_a_window() {
        let history = vec![
            recorded(0, 0, 1_000_000, Input::Write(1), Output::Write),
            recorded(0, 0, 1_500_000, Input::Read, Output::Read(Some(1))),
            recorded(0, 0, 1_600_000, Input::Cas { expected: Some(9), new: 2 }, Output::Cas(false)),
            recorded(1, 0, 1_700_000, Input::Cas { expected: Some(1), new: 3 }, Output::Cas(true)),
            recorded(0, 0, 2_900_000, Input::Write(4), Output::Write),
        ];
        let window = FaultWindow { label: "isolate h1".into(), start_ms: 900, end_ms: 2_000 };
        let u = unavailability(&history, std::slice::from_ref(&window));
        assert_eq!(u.len(), 1);
        // Writes inside at 1000 and 1700: the longest stretch is 1700 - 1000.
        assert_eq!(u[0].longest_gap_ms, 700);
        assert_eq!(u[0].recovery_ms, Some(900));
        let empty = FaultWindow { label: "pause h2".into(), start_ms: 3_000, end_ms: 4_000 };
        let u = unavailability(&history, &[empty]);
        assert_eq!(u[0].longest_gap_ms, 1_000);
        assert_eq!(u[0].recovery_ms, None);
    }

    /// Regression (RELIABILITY.md, "Clock faults"): with the master's clock at x0.4 and the
    /// followers' at x2 — far outside `drift_margin_ms` — the isolated old master still
    /// answered the lease probe's linearizable read 2 566 ms into the run with the value a
    /// compare-and-set on the new master had replaced (acknowledged at 2 528 ms). These are
    /// the operations of `shoal-jepsen --workload registers --seed 1 --faults isolate
    /// --run-ms 6000 --faults-max 2 --clock h3=x0.4 --clock h1=x2 --clock h2=x2`; the checker
    /// must reject them.
    #[test]
    fn stale_lease_read_beyond_the_drift_margin_is_caught() {
        let (v1, v2) = (2_199_023_255_605, 3_298_534_883_392);
        let history = [
            recorded(1, 1_997_528, 2_002_013, Input::Write(v1), Output::Write),
            recorded(
                2,
                2_021_391,
                2_528_441,
                Input::Cas { expected: Some(v1), new: v2 },
                Output::Cas(true),
            ),
            recorded(4, 2_566_210, 2_568_482, Input::Read, Output::Read(Some(v1))),
        ];
        let ops: Vec<Operation> = history.iter().map(|r| r.op.clone()).collect();
        assert!(matches!(linearizability::check(&ops), Err(Violation::NotLinearizable { .. })));
        // The same read after the compare-and-set's value is fine.
        let mut fixed = ops.clone();
        fixed[2].output = Some(Output::Read(Some(v2)));
        assert_eq!(linearizability::check(&fixed), Ok(()));
    }

    /// A register holding anything but a decimal number becomes a value no client wrote, so
    /// the checker cannot explain a read of it.
    #[test]
    fn garbage_values_are_unexplainable() {
        let v = |b: &'static [u8]| Versioned { zxid: Zxid::ZERO, value: bytes::Bytes::from(b) };
        assert_eq!(parse_value(&v(b"1099511627777")), 1_099_511_627_777);
        assert_eq!(parse_value(&v(b"x1")), Value::MAX);
        let history = [
            recorded(0, 0, 10, Input::Write(1), Output::Write),
            recorded(1, 20, 30, Input::Read, Output::Read(Some(parse_value(&v(b"?"))))),
        ];
        let ops: Vec<Operation> = history.iter().map(|r| r.op.clone()).collect();
        assert!(linearizability::check(&ops).is_err());
    }

    /// A final read that misses an acknowledged write (the write returned before the read was
    /// called) is a violation, and the excerpt names the key's operations.
    #[test]
    fn a_lost_acknowledged_write_fails_the_check_and_is_excerpted() {
        let history = vec![
            recorded(0, 0, 10, Input::Write(1), Output::Write),
            recorded(1, 20, 30, Input::Write(2), Output::Write),
            recorded(u64::MAX, 40, 50, Input::Read, Output::Read(Some(1))),
        ];
        let ops: Vec<Operation> = history.iter().map(|r| r.op.clone()).collect();
        let check = linearizability::check(&ops);
        assert!(matches!(check, Err(Violation::NotLinearizable { .. })));
        let outcome = RegistersOutcome {
            schedule: Schedule { seed: 0, hosts: 3, faults: Vec::new() },
            windows: Vec::new(),
            history,
            ok: 3,
            failed: 0,
            unknown: 0,
            check,
            final_problems: Vec::new(),
            unavailability: Vec::new(),
            summary: report::summarize(&[], &[]),
            svg: PathBuf::new(),
            interrupted: false,
            session: SessionCheck::default(),
            session_history: Vec::new(),
            cache_converge_ms: None,
            masters: Vec::new(),
        };
        assert!(!outcome.passed());
        let excerpt = outcome.excerpt();
        assert_eq!(excerpt.len(), 3);
        assert!(excerpt[2].contains("read") && excerpt[2].contains("ok Some(1)"), "{excerpt:?}");
    }
}
