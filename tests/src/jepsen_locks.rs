//! Issue 6's mutual-exclusion test on real hosts: `shoal-fs` on namespace hosts (see
//! [`crate::jepsen_harness`]), several clients in the client namespace contending for a few
//! named exclusive locks under a seeded nemesis (kill -9 + restart, SIGSTOP, partitions,
//! isolation of the master, packet loss), checked by fencing tokens ([`crate::fencing`]).
//!
//! Each client, one round at a time: `lock_wait` (bounded), then one or two **fenced writes**
//! of the lock's log key `/<lock>-log` (read the log under the lock, append
//! `t<token>:<entry id>;`, write it with `Batch::if_token(lock, token)`), a short hold, a
//! release; after an acknowledged release, now and then a **stale write**: the same fenced
//! write with the released token, which the master must refuse. After a fenced write without a
//! definite answer the round ends at once (a late commit of it must not be followed by another
//! write of the same tenure, which would make it look like a lost entry).
//!
//! One client (or more, `zombies`) plays the holder that stalls: it never renews (its renewal
//! period is an hour), sleeps past the lease after its grant and then makes its fenced write,
//! as a process that was paused by the OS would. Whether the master refuses it depends on
//! whether it already expired the lease (a new master honours leases one TTL from takeover);
//! either way the checker's rules must hold. It stalls only on [`STALL_LOCK`], which the other
//! clients contend for like any other lock.
//!
//! The nodes run with a 2 s lock lease ([`crate::jepsen_harness::LOCK_TTL_MS`]) so that
//! faults of 1–4 s really expire leases and hand locks over.

use crate::fencing::{self, Acquire, Anomaly, Belief, FencedWrite, WriteOutcome};
use crate::jepsen::join_all;
use crate::jepsen_harness::{
    self, bounded, connect, connect_with, final_read, replica_check, write_history, Checked, Ctx,
    HarnessOptions, Workload, FINAL_LOCK_WAIT_MS, FINAL_READ_LIMIT_MS, LOCK_TTL_MS, OP_LIMIT_MS,
};
use crate::nemesis::{FaultKind, Scenario, ScheduleBounds};
use crate::netns::NetnsError;
use crate::report::{self, Sample};
use cache_client::net::SocketTransport;
use cache_client::{Batch, Client, ClientError};
use protocol::Zxid;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long one `lock_wait` waits for a contended lock.
pub const LOCK_WAIT_MS: u64 = 3_000;
/// How long a stalling holder sleeps after its grant: past the lease, with margin.
pub const STALL_MS: u64 = LOCK_TTL_MS + 1_500;
/// How often a holder notes whether its lock is still held while it holds it.
pub const BELIEF_SAMPLE_MS: u64 = 100;
/// A client that never renews in practice.
pub const NEVER_RENEW: Duration = Duration::from_secs(3600);

/// What one seeded lock run does.
#[derive(Clone, Debug)]
pub struct LocksOptions {
    pub seed: u64,
    pub hosts: usize,
    pub bounds: ScheduleBounds,
    pub kinds: Vec<FaultKind>,
    /// Contending clients (each with its own client library instance and session).
    pub clients: usize,
    /// Of which this many stall past their lease after each grant.
    pub zombies: usize,
    /// Named locks contended for, besides [`STALL_LOCK`].
    pub locks: usize,
    /// Longest hold after the fenced writes.
    pub hold_ms_max: u64,
    /// Percentage of acknowledged releases followed by a stale fenced write.
    pub stale_percent: u32,
    pub quiet_ms: u64,
    /// Percentage of drawn faults replaced by cutting the clients off every host.
    pub client_cut_percent: u32,
    pub out_dir: PathBuf,
    /// Drawn faults, or an aimed scenario ([`Scenario::MasterStalls`] for issue 15 point 5).
    pub scenario: Scenario,
}

impl LocksOptions {
    /// A CI-sized run: 3 hosts, up to 5 faults in 15 s, 7 clients (one stalling), 2 locks.
    pub fn new(seed: u64) -> LocksOptions {
        LocksOptions {
            seed,
            hosts: 3,
            bounds: ScheduleBounds { run_ms: 15_000, faults_max: 5, ..ScheduleBounds::default() },
            kinds: FaultKind::REGISTERS.to_vec(),
            clients: 7,
            zombies: 1,
            locks: 2,
            hold_ms_max: 30,
            stale_percent: 30,
            quiet_ms: 3_000,
            client_cut_percent: 30,
            out_dir: PathBuf::from("target/jepsen"),
            scenario: Scenario::Drawn,
        }
    }
}

/// The lock stalling holders take. Every client contends for it too, but stalling holders
/// take no other: a stalled lease then blocks one lock of several, not the whole run (which
/// would blur the unavailability that faults cause).
pub const STALL_LOCK: &str = "/lock-stall";

/// The lock names of a run: `count` locks plus [`STALL_LOCK`].
pub fn lock_names(count: usize) -> Vec<String> {
    (0..count).map(|k| format!("/lock{k}")).chain([STALL_LOCK.to_string()]).collect()
}

/// The log key a lock's holders append to.
pub fn log_key(lock: &str) -> String {
    format!("{lock}-log")
}

/// Counts of what happened, for the summary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LockCounts {
    pub acquired: usize,
    /// `lock_wait` gave up (the lock stayed held by others): nothing granted.
    pub wait_timeouts: usize,
    /// Acquires without a definite answer.
    pub acquire_unknown: usize,
    pub writes_ok: usize,
    pub writes_refused: usize,
    pub writes_unknown: usize,
    pub stale_refused: usize,
    pub stale_accepted: usize,
    /// Fenced writes of stalled holders (after sleeping past the lease): accepted / refused.
    pub lapsed_ok: usize,
    pub lapsed_refused: usize,
    pub releases_ok: usize,
    pub releases_failed: usize,
    /// Times a holder saw its guard held ([`fencing::check_beliefs`] checks each).
    pub beliefs: usize,
}

impl LockCounts {
    fn add(&mut self, o: &LockCounts) {
        self.acquired += o.acquired;
        self.wait_timeouts += o.wait_timeouts;
        self.acquire_unknown += o.acquire_unknown;
        self.writes_ok += o.writes_ok;
        self.writes_refused += o.writes_refused;
        self.writes_unknown += o.writes_unknown;
        self.stale_refused += o.stale_refused;
        self.stale_accepted += o.stale_accepted;
        self.lapsed_ok += o.lapsed_ok;
        self.lapsed_refused += o.lapsed_refused;
        self.releases_ok += o.releases_ok;
        self.releases_failed += o.releases_failed;
        self.beliefs += o.beliefs;
    }
}

impl std::fmt::Display for LockCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "acquired {}, wait timeouts {}, acquire unknown {}; fenced writes ok {}, refused {}, \
             unknown {}; stale writes refused {}, accepted {}; lapsed writes ok {}, refused {}; \
             releases ok {}, failed {}; beliefs checked {}",
            self.acquired,
            self.wait_timeouts,
            self.acquire_unknown,
            self.writes_ok,
            self.writes_refused,
            self.writes_unknown,
            self.stale_refused,
            self.stale_accepted,
            self.lapsed_ok,
            self.lapsed_refused,
            self.releases_ok,
            self.releases_failed,
            self.beliefs
        )
    }
}

/// What one worker (or the whole run) recorded.
#[derive(Debug, Default)]
pub struct LockLog {
    pub acquires: Vec<Acquire>,
    pub writes: Vec<FencedWrite>,
    /// When holders saw their guard held ([`fencing::check_beliefs`]).
    pub beliefs: Vec<Belief>,
    pub samples: Vec<Sample>,
    pub counts: LockCounts,
}

/// What a run produced (`finals`: each lock's log key read after healing; `unavailability`:
/// the longest stretch without an acknowledged grant).
pub type LocksOutcome = Checked<LockLog, BTreeMap<String, Option<String>>, Anomaly>;

struct LocksWorkload {
    options: LocksOptions,
    clients: Vec<Client<SocketTransport>>,
}

struct Output {
    log: LockLog,
    finals: BTreeMap<String, Option<String>>,
    final_problems: Vec<String>,
}

impl Workload for LocksWorkload {
    type Output = Output;

    async fn prepare(&mut self, cluster_file: &Path) -> Result<(), String> {
        for _ in 0..self.options.clients.saturating_sub(self.options.zombies) {
            self.clients.push(connect(cluster_file).await.map_err(|e| e.to_string())?);
        }
        Ok(())
    }

    async fn run(self, ctx: &Ctx) -> Output {
        let locks = lock_names(self.options.locks);
        let mut workers = Vec::new();
        let clients = self.clients.into_iter().map(Some);
        let zombies = (0..self.options.zombies).map(|_| None);
        for (index, client) in clients.chain(zombies).enumerate() {
            let worker = LockWorker {
                index: index as u64,
                client,
                locks: locks.clone(),
                rng: StdRng::seed_from_u64(ctx.seed ^ ((index as u64 + 1) << 40)),
                next_entry: 0,
                hold_ms_max: self.options.hold_ms_max,
                stale_percent: self.options.stale_percent,
                log: LockLog::default(),
            };
            workers.push(worker.run(ctx));
        }
        let mut log = LockLog::default();
        for w in join_all(workers).await {
            log.acquires.extend(w.acquires);
            log.writes.extend(w.writes);
            log.beliefs.extend(w.beliefs);
            log.samples.extend(w.samples);
            log.counts.add(&w.counts);
        }
        let mut finals = BTreeMap::new();
        let mut final_problems = Vec::new();
        if ctx.aborted() {
            return Output { log, finals, final_problems };
        }
        let reader = match connect(&ctx.cluster_file).await {
            Ok(c) => c,
            Err(e) => {
                final_problems.push(format!("cannot connect the final reader: {e}"));
                return Output { log, finals, final_problems };
            }
        };
        let mut expected = Vec::new();
        let mut floor = reader.floor();
        for lock in &locks {
            match final_read(&reader, &log_key(lock), FINAL_READ_LIMIT_MS).await {
                Ok(v) => {
                    if let Some(v) = &v {
                        floor = floor.max(v.zxid);
                    }
                    let text = v.as_ref().map(|v| String::from_utf8_lossy(&v.value).into_owned());
                    finals.insert(lock.clone(), text);
                    expected.push((log_key(lock), v.map(|v| v.value)));
                }
                Err(e) => final_problems.push(format!("final read of {}: {e}", log_key(lock))),
            }
        }
        final_problems.extend(replica_check(&ctx.cluster_file, floor, &expected).await);
        // Liveness after healing: every lock can be taken again (no lease is stuck).
        for lock in &locks {
            let wait = Duration::from_millis(FINAL_LOCK_WAIT_MS);
            match bounded(FINAL_LOCK_WAIT_MS + OP_LIMIT_MS, reader.lock_wait(lock, false, wait))
                .await
            {
                Ok(Ok(guard)) => {
                    let _ = bounded(OP_LIMIT_MS, guard.release()).await;
                }
                Ok(Err(e)) => final_problems.push(format!("{lock} not free after healing: {e}")),
                Err(e) => final_problems.push(format!("{lock} not free after healing: {e}")),
            }
        }
        Output { log, finals, final_problems }
    }
}

/// One contending client.
struct LockWorker {
    index: u64,
    /// `None`: a stalling holder, which opens a fresh never-renewing client each round.
    client: Option<Client<SocketTransport>>,
    locks: Vec<String>,
    rng: StdRng,
    next_entry: u64,
    hold_ms_max: u64,
    stale_percent: u32,
    log: LockLog,
}

/// Why a fenced write is made.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Tenure,
    Stale,
    Lapsed,
}

impl LockWorker {
    fn sample(&mut self, ctx: &Ctx, op: &str, call_us: u64, ok: bool) {
        let end_us = ctx.now_us();
        let latency_us = end_us.saturating_sub(call_us);
        self.log.samples.push(Sample {
            at_ms: end_us / 1000,
            op: op.into(),
            latency_us,
            outcome: ok.into(),
        });
    }

    async fn run(mut self, ctx: &Ctx) -> LockLog {
        while ctx.running() {
            let lock = self.locks[self.rng.gen_range(0..self.locks.len())].clone();
            match self.client.clone() {
                Some(client) => self.round(ctx, &client, &lock).await,
                None => self.stalled_round(ctx, STALL_LOCK).await,
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.log
    }

    /// `lock_wait`, recorded; the guard when granted.
    async fn acquire(
        &mut self,
        ctx: &Ctx,
        client: &Client<SocketTransport>,
        lock: &str,
    ) -> Option<cache_client::LockGuard<SocketTransport>> {
        let call_us = ctx.now_us();
        let wait = Duration::from_millis(LOCK_WAIT_MS);
        let result = bounded(OP_LIMIT_MS, client.lock_wait(lock, false, wait)).await;
        match result {
            Ok(Ok(guard)) => {
                self.sample(ctx, "acquire", call_us, true);
                self.log.counts.acquired += 1;
                self.log.acquires.push(Acquire {
                    client: self.index,
                    lock: lock.to_string(),
                    token: guard.token().0,
                    call_us,
                    end_us: ctx.now_us(),
                });
                Some(guard)
            }
            Ok(Err(ClientError::WaitTimeout { .. } | ClientError::LockHeld { .. })) => {
                self.sample(ctx, "wait timeout", call_us, true);
                self.log.counts.wait_timeouts += 1;
                None
            }
            Ok(Err(_)) | Err(_) => {
                self.sample(ctx, "acquire", call_us, false);
                self.log.counts.acquire_unknown += 1;
                None
            }
        }
    }

    async fn round(&mut self, ctx: &Ctx, client: &Client<SocketTransport>, lock: &str) {
        let Some(guard) = self.acquire(ctx, client, lock).await else { return };
        let token = guard.token();
        let writes = self.rng.gen_range(1..=2);
        for _ in 0..writes {
            let outcome = self.fenced_write(ctx, client, lock, token, Purpose::Tenure).await;
            if !matches!(outcome, Some(WriteOutcome::Ok(_))) {
                break;
            }
        }
        let hold_ms = self.rng.gen_range(0..=self.hold_ms_max);
        self.hold(ctx, &guard, lock, hold_ms).await;
        let call_us = ctx.now_us();
        let released = matches!(bounded(OP_LIMIT_MS, guard.release()).await, Ok(Ok(())));
        self.sample(ctx, "release", call_us, released);
        if released {
            self.log.counts.releases_ok += 1;
        } else {
            self.log.counts.releases_failed += 1;
        }
        if released && self.rng.gen_range(0..100) < self.stale_percent {
            self.fenced_write(ctx, client, lock, token, Purpose::Stale).await;
        }
    }

    /// Holds `guard` for `hold_ms`, noting every [`BELIEF_SAMPLE_MS`] (and at both ends)
    /// whether the library still counts the lock held: each such belief is checked against
    /// the grants acknowledged before it.
    async fn hold(
        &mut self,
        ctx: &Ctx,
        guard: &cache_client::LockGuard<SocketTransport>,
        lock: &str,
        hold_ms: u64,
    ) {
        let end = tokio::time::Instant::now() + Duration::from_millis(hold_ms);
        loop {
            // Sampled to the end even when not held now: a late renewal answer may make the
            // guard count as held again, and that is what must be checked.
            self.note_belief(ctx, guard, lock);
            let now = tokio::time::Instant::now();
            if now >= end {
                return;
            }
            tokio::time::sleep((end - now).min(Duration::from_millis(BELIEF_SAMPLE_MS))).await;
        }
    }

    /// Records a belief if `guard` is held now.
    fn note_belief(
        &mut self,
        ctx: &Ctx,
        guard: &cache_client::LockGuard<SocketTransport>,
        lock: &str,
    ) {
        // The time is taken after the look, so the belief is never dated earlier than it was.
        if guard.is_held() {
            let at_us = ctx.now_us();
            let token = guard.token().0;
            self.log.beliefs.push(Belief { client: self.index, lock: lock.into(), token, at_us });
            self.log.counts.beliefs += 1;
        }
    }

    /// A holder that stops renewing and sleeps past its lease, then writes with its token.
    async fn stalled_round(&mut self, ctx: &Ctx, lock: &str) {
        let client = match connect_with(&ctx.cluster_file, NEVER_RENEW).await {
            Ok(c) => c,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                return;
            }
        };
        let Some(guard) = self.acquire(ctx, &client, lock).await else { return };
        let token = guard.token();
        tokio::time::sleep(Duration::from_millis(STALL_MS)).await;
        self.fenced_write(ctx, &client, lock, token, Purpose::Lapsed).await;
        // The release (on drop) is refused if the lease is gone; harmless either way.
        drop(guard);
    }

    /// Reads the lock's log and writes it back with one more entry, conditioned on `token`.
    /// `None` when the read failed (nothing was written).
    async fn fenced_write(
        &mut self,
        ctx: &Ctx,
        client: &Client<SocketTransport>,
        lock: &str,
        token: Zxid,
        purpose: Purpose,
    ) -> Option<WriteOutcome> {
        let key = log_key(lock);
        let call_us = ctx.now_us();
        let current = match bounded(OP_LIMIT_MS, client.read(&key)).await {
            Ok(Ok(v)) => v,
            _ => {
                self.sample(ctx, "log read", call_us, false);
                return None;
            }
        };
        self.next_entry += 1;
        let entry = format!("c{}n{}", self.index, self.next_entry);
        let old = current.map(|v| String::from_utf8_lossy(&v.value).into_owned());
        let new = format!("{}t{}:{entry};", old.unwrap_or_default(), token.0);
        let batch = Batch::new().if_token(lock, token).write(key, new);
        let call_us = ctx.now_us();
        let outcome = match bounded(OP_LIMIT_MS, client.batch(batch)).await {
            Ok(Ok(zxid)) => WriteOutcome::Ok(zxid.0),
            Ok(Err(ClientError::LockLost { .. } | ClientError::ConditionFailed { .. })) => {
                WriteOutcome::Refused
            }
            Ok(Err(_)) | Err(_) => WriteOutcome::Unknown,
        };
        let counts = &mut self.log.counts;
        let op = match (purpose, outcome) {
            (Purpose::Tenure, WriteOutcome::Ok(_)) => {
                counts.writes_ok += 1;
                "fenced write"
            }
            (Purpose::Tenure, WriteOutcome::Refused) => {
                counts.writes_refused += 1;
                "fenced write"
            }
            (Purpose::Tenure, WriteOutcome::Unknown) => {
                counts.writes_unknown += 1;
                "fenced write"
            }
            (Purpose::Stale, WriteOutcome::Ok(_)) => {
                counts.stale_accepted += 1;
                "stale write"
            }
            (Purpose::Stale, _) => {
                counts.stale_refused += 1;
                "stale write"
            }
            (Purpose::Lapsed, WriteOutcome::Ok(_)) => {
                counts.lapsed_ok += 1;
                "lapsed write"
            }
            (Purpose::Lapsed, _) => {
                counts.lapsed_refused += 1;
                "lapsed write"
            }
        };
        // A refusal is the right answer for stale and lapsed writes: not drawn as a failure.
        let ok = match purpose {
            Purpose::Tenure => outcome != WriteOutcome::Unknown,
            Purpose::Stale => outcome != WriteOutcome::Unknown,
            Purpose::Lapsed => true,
        };
        self.sample(ctx, op, call_us, ok);
        self.log.writes.push(FencedWrite {
            client: self.index,
            lock: lock.to_string(),
            token: token.0,
            entry,
            call_us,
            end_us: ctx.now_us(),
            outcome,
            stale: purpose == Purpose::Stale,
        });
        Some(outcome)
    }
}

/// Runs one seeded lock run, checks it with [`fencing::check`], writes the report
/// (`locks-seed<N>-n<H>.{svg,txt,history}`).
pub fn run_locks(
    options: &LocksOptions,
    shoal_fs: &Path,
    stop: &dyn Fn() -> bool,
) -> Result<LocksOutcome, NetnsError> {
    let harness = HarnessOptions {
        seed: options.seed,
        hosts: options.hosts,
        bounds: options.bounds.clone(),
        kinds: options.kinds.clone(),
        quiet_ms: options.quiet_ms,
        node_args: vec!["--lock-ttl-ms".into(), LOCK_TTL_MS.to_string()],
        client_cut_percent: options.client_cut_percent,
        scenario: options.scenario,
    };
    let workload = LocksWorkload { options: options.clone(), clients: Vec::new() };
    let ran = jepsen_harness::run(&harness, shoal_fs, stop, workload)?;
    let Output { mut log, finals, final_problems } = ran.output;
    log.acquires.sort_by_key(|a| a.call_us);
    log.writes.sort_by_key(|w| w.call_us);
    log.samples.sort_by_key(|s| s.at_ms);
    let mut anomalies = fencing::check(&log.acquires, &log.writes, &finals);
    anomalies.extend(fencing::check_beliefs(&log.acquires, &log.beliefs));
    let passed = anomalies.is_empty() && final_problems.is_empty() && !ran.interrupted;
    let mut name = format!("locks-seed{}-n{}", options.seed, options.hosts);
    if let Some(scenario) = options.scenario.name() {
        name.push_str(&format!("-{scenario}"));
    }
    let title = format!(
        "shoal-fs locks, {} hosts, seed {}: {} grants, {} fenced writes, {}",
        options.hosts,
        options.seed,
        log.counts.acquired,
        log.writes.len(),
        if passed { "PASS" } else { "FAIL" }
    );
    let (svg, summary) =
        report::write(&options.out_dir, &name, &title, &log.samples, &ran.windows)?;
    let lines: Vec<(u64, String)> = log
        .acquires
        .iter()
        .map(|a| {
            let text = format!(
                "c{} {} granted token {} [{:.3}..{:.3} ms]",
                a.client,
                a.lock,
                a.token,
                a.call_us as f64 / 1000.0,
                a.end_us as f64 / 1000.0
            );
            (a.end_us, text)
        })
        .chain(log.writes.iter().map(|w| (w.end_us, fencing::describe(w))))
        .collect();
    let final_lines = finals.iter().map(|(lock, value)| {
        format!("final {}: {}", log_key(lock), value.as_deref().unwrap_or("(absent)"))
    });
    write_history(&options.out_dir, &name, lines, final_lines)?;
    let acked_ms: Vec<u64> = log.acquires.iter().map(|a| a.end_us / 1000).collect();
    let unavailability = jepsen_harness::unavailability(&acked_ms, &ran.windows);
    Ok(LocksOutcome {
        schedule: ran.schedule,
        windows: ran.windows,
        log,
        finals,
        anomalies,
        final_problems,
        unavailability,
        summary,
        svg,
        interrupted: ran.interrupted,
    })
}
