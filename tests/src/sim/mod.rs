//! A deterministic simulator of a cluster of replication engines, driven by one seed.
//!
//! N [`Engine`]s run against an in-memory network that loses, duplicates, delays (and so
//! reorders) messages and cuts partitions; nodes crash (volatile state and unflushed writes
//! lost, the durable log kept) and restart, and a crash may also wipe the node's disk (log,
//! epoch state and data files gone: it restarts [`Durability::Lost`], as every node of the
//! brand-new cluster starts); a node's disk makes writes durable after a delay;
//! clients issue reads, writes and compare-and-sets on a few keys and record a history. The
//! state machine here is the simulator's own (a map of registers), not the product's.
//!
//! A run has a safety phase with faults, then a liveness phase without them that must
//! converge. While it runs it checks, at every step: one master per epoch; every node applies
//! one and the same sequence of committed entries (so committed entries are never lost nor
//! reordered), and after the healed phase every node holds the whole committed order. A disk
//! is wiped only while every other node holds durable state and no earlier wipe is still
//! unrepaired: a lost majority of disks loses data by any protocol. Afterwards the caller checks the history for linearizability.
//!
//! # Layout
//! - [`SimConfig`], [`run`], [`SimReport`]: the whole public surface.
//! - `World`: event queue (time, seq) → event; nodes; clients; the global committed order.

use bytes::Bytes;
use fs_node::replication::{
    Durability, Engine, EngineConfig, EngineRole, LogReader, MemLog, PersistOp, ProposeError,
    RestartState, To,
};
use protocol::message::replication::Entry;
use protocol::message::Message;
use protocol::{NodeId, Zxid};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::linearizability::{Input, Operation, Output, Value};

/// Engine tick period.
pub const TICK_MS: u64 = 10;
/// A client gives up on an attempt after this long and records the outcome as unknown.
pub const CLIENT_TIMEOUT_MS: u64 = 1_000;
/// A client follows at most this many redirects for one operation.
pub const CLIENT_REDIRECTS_MAX: u32 = 20;
/// Bound on the events of one run (a runaway run is a failure, not a hang).
pub const EVENTS_MAX: u64 = 20_000_000;
/// Node clocks run fast or slow by up to this much (2%: 6 ms over a 300 ms lease, inside the
/// 30 ms drift margin).
pub const CLOCK_PPM_MAX: i64 = 20_000;
/// Committed entries kept in the log behind a compaction point.
pub const RETENTION_ENTRIES: usize = 16;

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub nodes: usize,
    pub clients: usize,
    pub keys: usize,
    /// Safety phase (faults on), then liveness phase (faults off, everyone restarted).
    pub fault_ms: u64,
    pub heal_ms: u64,
    pub loss: f64,
    pub duplicate: f64,
    pub delay_ms_max: u64,
    pub disk_ms_max: u64,
    /// Mean time between crashes, partitions and compactions in the safety phase (0: none).
    pub crash_every_ms: u64,
    pub partition_every_ms: u64,
    pub compact_every_ms: u64,
    /// Crash only the established master (for failover measurement).
    pub crash_master_only: bool,
    /// Chance that a crash also wipes the node's disk (when no other node lacks state).
    pub wipe_chance: f64,
}

impl SimConfig {
    /// The faulty profile the tests run.
    pub fn faulty(seed: u64, nodes: usize) -> SimConfig {
        SimConfig {
            seed,
            nodes,
            clients: 4,
            keys: 3,
            fault_ms: 6_000,
            heal_ms: 4_000,
            loss: 0.05,
            duplicate: 0.02,
            delay_ms_max: 15,
            disk_ms_max: 5,
            crash_every_ms: 1_200,
            partition_every_ms: 1_000,
            compact_every_ms: 700,
            crash_master_only: false,
            wipe_chance: 0.3,
        }
    }

    /// No loss and no partitions; only the master crashes: failover time in isolation.
    pub fn failover(seed: u64, nodes: usize) -> SimConfig {
        SimConfig {
            loss: 0.0,
            duplicate: 0.0,
            partition_every_ms: 0,
            compact_every_ms: 0,
            crash_every_ms: 1_500,
            crash_master_only: true,
            wipe_chance: 0.0,
            ..SimConfig::faulty(seed, nodes)
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct SimReport {
    pub history: Vec<Operation>,
    /// Simulated ms from a master's crash until the next master is established.
    pub failovers_ms: Vec<u64>,
    pub committed_entries: usize,
    pub ops_ok: usize,
    pub ops_unknown: usize,
    pub crashes: usize,
    /// Crashes that also wiped the disk.
    pub wipes: usize,
    pub snapshots_installed: usize,
    /// Reads the master answered inside its lease (the rest went through the log).
    pub lease_reads: usize,
}

/// The simulator's state-machine command (entry data).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
enum Cmd {
    Write { key: String, value: Value },
    Cas { key: String, expected: Option<Value>, new: Value },
    Read { key: String },
}

#[derive(Clone, Debug, Default)]
struct StateMachine {
    values: BTreeMap<String, Value>,
    applied: Zxid,
    /// How many entries of the global committed order this node has applied.
    index: usize,
}

impl StateMachine {
    fn apply(&mut self, cmd: &Cmd) -> Output {
        match cmd {
            Cmd::Write { key, value } => {
                self.values.insert(key.clone(), *value);
                Output::Write
            }
            Cmd::Cas { key, expected, new } => {
                if self.values.get(key).copied() == *expected {
                    self.values.insert(key.clone(), *new);
                    Output::Cas(true)
                } else {
                    Output::Cas(false)
                }
            }
            Cmd::Read { key } => Output::Read(self.values.get(key).copied()),
        }
    }
}

#[derive(Debug)]
struct DiskWrite {
    seq: u64,
    ops: Vec<PersistOp>,
    after: Vec<(To, Message)>,
}

struct SimNode {
    id: NodeId,
    incarnation: u64,
    engine: Option<Engine>,
    /// Written (what the engine's LogReader sees) and durable copies of the log.
    view: MemLog,
    durable: MemLog,
    disk: VecDeque<DiskWrite>,
    flush_scheduled: bool,
    /// Whether an epoch state was ever made durable since the disk was last empty (the host's
    /// "epoch.state exists"); without it the node restarts `Durability::Lost`.
    has_state: bool,
    sm: StateMachine,
    /// The durable state-machine snapshot at the log's base (data files).
    snapshot: StateMachine,
    /// Proposals of client operations: zxid → (client, op id, attempt).
    pending: BTreeMap<Zxid, (usize, u64, u64)>,
}

#[derive(Clone, Debug)]
enum Reply {
    Done(Output),
    Redirect(Option<NodeId>),
    Unknown,
}

#[derive(Clone, Debug)]
struct ClientOp {
    id: u64,
    key: String,
    input: Input,
    call: u64,
    redirects: u32,
    attempt: u64,
}

struct Client {
    target: NodeId,
    op: Option<ClientOp>,
    next_value: Value,
    next_op: u64,
}

#[derive(Clone, Debug)]
enum Event {
    Tick(NodeId, u64),
    Deliver(NodeId, Message),
    Flush(NodeId, u64),
    ClientNext(usize),
    ClientSend(usize, NodeId, u64, u64),
    ClientReply(usize, u64, u64, Reply),
    ClientTimeout(usize, u64, u64),
    Crash,
    Restart(NodeId),
    Partition,
    Heal,
    Compact,
    EndFaults,
}

struct World {
    cfg: SimConfig,
    rng: SmallRng,
    now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Event>,
    nodes: Vec<SimNode>,
    clients: Vec<Client>,
    blocked: BTreeSet<(NodeId, NodeId)>,
    /// Per node: clock offset (ms) and rate error (parts per million).
    clocks: Vec<(u64, i64)>,
    faults: bool,
    committed: Vec<Entry>,
    leaders: BTreeMap<u32, NodeId>,
    master_crash_at: Option<u64>,
    /// A wiped node that is not a voter with durable state again yet.
    unrepaired: Option<NodeId>,
    report: SimReport,
}

fn engine_config(id: NodeId, n: usize) -> EngineConfig {
    EngineConfig::new(id, (1..=n as NodeId).collect())
}

/// Runs one seeded simulation; `Err` describes the first broken invariant.
pub fn run(cfg: SimConfig) -> Result<SimReport, String> {
    let mut w = World::new(cfg);
    w.run()?;
    Ok(w.report)
}

impl World {
    fn new(cfg: SimConfig) -> World {
        let mut rng = SmallRng::seed_from_u64(cfg.seed);
        let clocks = (0..cfg.nodes)
            .map(|_| (rng.gen_range(0..100_000), rng.gen_range(-CLOCK_PPM_MAX..=CLOCK_PPM_MAX)))
            .collect();
        let nodes = (1..=cfg.nodes as NodeId)
            .map(|id| SimNode {
                id,
                incarnation: 0,
                engine: None,
                view: MemLog::new(),
                durable: MemLog::new(),
                disk: VecDeque::new(),
                flush_scheduled: false,
                has_state: false,
                sm: StateMachine::default(),
                snapshot: StateMachine::default(),
                pending: BTreeMap::new(),
            })
            .collect();
        let clients = (0..cfg.clients)
            .map(|c| Client {
                target: 1,
                op: None,
                next_value: (c as u64 + 1) * 1_000_000,
                next_op: 0,
            })
            .collect();
        World {
            cfg,
            rng,
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            nodes,
            clients,
            blocked: BTreeSet::new(),
            clocks,
            faults: true,
            committed: Vec::new(),
            leaders: BTreeMap::new(),
            master_crash_at: None,
            unrepaired: None,
            report: SimReport::default(),
        }
    }

    fn at(&mut self, delay: u64, event: Event) {
        self.seq += 1;
        self.queue.insert((self.now + delay, self.seq), event);
    }

    /// Node `id`'s clock: its own offset and rate (the engine only ever compares times of
    /// one node, but leases must hold across rates that differ by up to `CLOCK_PPM_MAX`).
    fn local_ms(&self, id: NodeId) -> u64 {
        let (offset, ppm) = self.clocks[id as usize - 1];
        let scaled = (self.now as i128 * (1_000_000 + ppm as i128)) / 1_000_000;
        offset + scaled as u64
    }

    fn node(&mut self, id: NodeId) -> &mut SimNode {
        &mut self.nodes[id as usize - 1]
    }

    fn mean_delay(&mut self, mean_ms: u64) -> u64 {
        self.rng.gen_range(mean_ms / 2..=mean_ms * 3 / 2).max(1)
    }

    fn run(&mut self) -> Result<(), String> {
        for id in 1..=self.cfg.nodes as NodeId {
            self.restart(id);
        }
        for c in 0..self.cfg.clients {
            let d = self.rng.gen_range(0..100);
            self.at(d, Event::ClientNext(c));
        }
        if self.cfg.crash_every_ms > 0 {
            let d = self.mean_delay(self.cfg.crash_every_ms);
            self.at(d, Event::Crash);
        }
        if self.cfg.partition_every_ms > 0 {
            let d = self.mean_delay(self.cfg.partition_every_ms);
            self.at(d, Event::Partition);
        }
        if self.cfg.compact_every_ms > 0 {
            let d = self.mean_delay(self.cfg.compact_every_ms);
            self.at(d, Event::Compact);
        }
        self.at(self.cfg.fault_ms, Event::EndFaults);
        let end = self.cfg.fault_ms + self.cfg.heal_ms;
        let mut events = 0u64;
        while let Some(((t, s), ev)) = self.queue.pop_first() {
            if t > end {
                self.queue.insert((t, s), ev);
                break;
            }
            events += 1;
            if events > EVENTS_MAX {
                return Err(format!("more than {EVENTS_MAX} events"));
            }
            self.now = t;
            self.handle(ev)?;
        }
        self.check_converged()
    }

    fn handle(&mut self, ev: Event) -> Result<(), String> {
        match ev {
            Event::Tick(id, inc) => {
                let now = self.local_ms(id);
                let n = self.node(id);
                if n.incarnation != inc {
                    return Ok(());
                }
                if let Some(e) = n.engine.as_mut() {
                    e.tick(now, &n.view);
                    self.at(TICK_MS, Event::Tick(id, inc));
                    self.process(id)?;
                }
            }
            Event::Deliver(id, msg) => {
                let now = self.local_ms(id);
                if std::env::var("SHOAL_SIM_TRACE").is_ok() {
                    eprintln!("{now} -> {id}: {msg:?}");
                }
                let n = self.node(id);
                if let Some(e) = n.engine.as_mut() {
                    e.step(now, msg, &n.view);
                    self.process(id)?;
                }
            }
            Event::Flush(id, inc) => self.flush(id, inc)?,
            Event::ClientNext(c) => self.client_next(c),
            Event::ClientSend(c, node, op, attempt) => self.serve(c, node, op, attempt)?,
            Event::ClientReply(c, op, attempt, reply) => self.client_reply(c, op, attempt, reply),
            Event::ClientTimeout(c, op, attempt) => {
                let current = self.clients[c].op.as_ref().map(|o| (o.id, o.attempt));
                if current == Some((op, attempt)) {
                    self.finish(c, None);
                    let n = self.rng.gen_range(1..=self.cfg.nodes as NodeId);
                    self.clients[c].target = n;
                }
            }
            Event::Crash => {
                if self.faults {
                    self.crash_some();
                    let d = self.mean_delay(self.cfg.crash_every_ms);
                    self.at(d, Event::Crash);
                }
            }
            Event::Restart(id) => {
                if self.node(id).engine.is_none() {
                    self.restart(id);
                }
            }
            Event::Partition => {
                if self.faults {
                    self.partition();
                    let d = self.rng.gen_range(200..2_000);
                    self.at(d, Event::Heal);
                    let d = self.mean_delay(self.cfg.partition_every_ms);
                    self.at(d, Event::Partition);
                }
            }
            Event::Heal => self.blocked.clear(),
            Event::Compact => {
                if self.faults {
                    self.compact_some();
                    let d = self.mean_delay(self.cfg.compact_every_ms);
                    self.at(d, Event::Compact);
                }
            }
            Event::EndFaults => {
                self.faults = false;
                self.blocked.clear();
                for id in 1..=self.cfg.nodes as NodeId {
                    if self.node(id).engine.is_none() {
                        self.restart(id);
                    }
                }
            }
        }
        Ok(())
    }

    // ---- Nodes -------------------------------------------------------------------------

    fn restart(&mut self, id: NodeId) {
        let now = self.local_ms(id);
        let n = self.node(id);
        n.incarnation += 1;
        n.view = n.durable.clone();
        n.disk.clear();
        n.flush_scheduled = false;
        n.sm = n.snapshot.clone();
        n.pending.clear();
        let restart = RestartState { hard: n.durable.hard, applied: n.sm.applied };
        let durability = if n.has_state { Durability::Durable } else { Durability::Lost };
        let cfg = engine_config(id, self.cfg.nodes);
        let n = self.node(id);
        n.engine =
            Some(Engine::start(cfg, restart, durability, &n.view, now).expect("valid config"));
        let inc = n.incarnation;
        self.at(TICK_MS, Event::Tick(id, inc));
        // A fresh engine only has a vote to send; errors surface on later steps.
        let _ = self.process(id);
    }

    fn crash_some(&mut self) {
        let up: Vec<NodeId> =
            self.nodes.iter().filter(|n| n.engine.is_some()).map(|n| n.id).collect();
        let candidates: Vec<NodeId> = if self.cfg.crash_master_only {
            up.iter().copied().filter(|id| self.is_established_master(*id)).collect()
        } else {
            up
        };
        if candidates.is_empty() {
            return;
        }
        let id = candidates[self.rng.gen_range(0..candidates.len())];
        if self.is_established_master(id) && self.master_crash_at.is_none() {
            self.master_crash_at = Some(self.now);
        }
        self.report.crashes += 1;
        let others_hold_state = self.nodes.iter().all(|n| n.id == id || n.has_state);
        let wipe = self.cfg.wipe_chance > 0.0
            && others_hold_state
            && self.unrepaired.is_none_or(|u| u == id)
            && self.rng.gen_bool(self.cfg.wipe_chance);
        // Clients waiting on it time out: their outcome is unknown.
        let n = self.node(id);
        n.engine = None;
        n.incarnation += 1;
        if wipe {
            n.durable = MemLog::new();
            n.snapshot = StateMachine::default();
            n.has_state = false;
            self.unrepaired = Some(id);
            self.report.wipes += 1;
        }
        let d = self.rng.gen_range(100..1_500);
        self.at(d, Event::Restart(id));
    }

    fn is_established_master(&self, id: NodeId) -> bool {
        matches!(
            self.nodes[id as usize - 1].engine.as_ref().map(|e| e.role()),
            Some(EngineRole::Leading { established: true, .. })
        )
    }

    /// Half the time the master is cut off alone (the case leases and step-down exist for),
    /// otherwise the nodes split at random.
    fn partition(&mut self) {
        let n = self.cfg.nodes as NodeId;
        let master = (1..=n).find(|id| self.is_established_master(*id));
        let side: Vec<bool> = match master {
            Some(m) if self.rng.gen_bool(0.5) => (1..=n).map(|id| id == m).collect(),
            _ => (0..n).map(|_| self.rng.gen_bool(0.5)).collect(),
        };
        self.blocked.clear();
        for a in 1..=n {
            for b in 1..=n {
                if side[a as usize - 1] != side[b as usize - 1] {
                    self.blocked.insert((a, b));
                }
            }
        }
    }

    /// A checkpoint on one node: the state machine is saved at a committed point and the log
    /// before it dropped, keeping `RETENTION_ENTRIES`.
    fn compact_some(&mut self) {
        let id = self.rng.gen_range(1..=self.cfg.nodes as NodeId);
        let committed = &self.committed;
        let n = &mut self.nodes[id as usize - 1];
        if n.engine.is_none() || n.sm.index <= RETENTION_ENTRIES {
            return;
        }
        let upto_index = n.sm.index - RETENTION_ENTRIES;
        let upto = committed[upto_index - 1].zxid;
        if upto <= n.durable.base() {
            return;
        }
        n.snapshot = replay(&committed[..upto_index]);
        n.view.compact(upto);
        n.durable.compact(upto);
    }

    fn send(&mut self, from: NodeId, to: To, msg: Message) {
        let targets: Vec<NodeId> = match to {
            To::Node(id) => vec![id],
            To::Peers => (1..=self.cfg.nodes as NodeId).filter(|id| *id != from).collect(),
        };
        for t in targets {
            if self.blocked.contains(&(from, t)) {
                continue;
            }
            if self.faults && self.rng.gen_bool(self.cfg.loss) {
                continue;
            }
            let d = self.rng.gen_range(1..=self.cfg.delay_ms_max);
            self.at(d, Event::Deliver(t, msg.clone()));
            if self.faults && self.rng.gen_bool(self.cfg.duplicate) {
                let d = self.rng.gen_range(1..=self.cfg.delay_ms_max);
                self.at(d, Event::Deliver(t, msg.clone()));
            }
        }
    }

    fn flush(&mut self, id: NodeId, inc: u64) -> Result<(), String> {
        let n = self.node(id);
        if n.incarnation != inc {
            return Ok(());
        }
        n.flush_scheduled = false;
        let Some(w) = n.disk.pop_front() else {
            return Ok(());
        };
        for op in &w.ops {
            n.durable.apply(op);
            n.has_state |= matches!(op, PersistOp::HardState(_));
        }
        if let Some(e) = n.engine.as_mut() {
            e.persisted(w.seq);
        }
        let more = !n.disk.is_empty();
        for (to, msg) in w.after {
            self.send(id, to, msg);
        }
        if more {
            self.schedule_flush(id);
        }
        self.process(id)
    }

    fn schedule_flush(&mut self, id: NodeId) {
        let d = self.rng.gen_range(1..=self.cfg.disk_ms_max);
        let n = self.node(id);
        if !n.flush_scheduled {
            n.flush_scheduled = true;
            let inc = n.incarnation;
            self.at(d, Event::Flush(id, inc));
        }
    }

    /// Drains the engine's outputs and carries them out.
    fn process(&mut self, id: NodeId) -> Result<(), String> {
        let n = self.node(id);
        if n.has_state
            && n.engine.as_ref().is_some_and(|e| e.is_voter())
            && self.unrepaired == Some(id)
        {
            self.unrepaired = None;
        }
        for _ in 0..64 {
            let n = self.node(id);
            let Some(engine) = n.engine.as_mut() else {
                return Ok(());
            };
            let r = engine.ready(&n.view);
            if r.is_empty() {
                return Ok(());
            }
            for op in &r.persist {
                n.view.apply(op);
            }
            if let Some(seq) = r.persist_seq {
                n.disk.push_back(DiskWrite { seq, ops: r.persist, after: r.send_after_persist });
                self.schedule_flush(id);
            }
            for (to, msg) in r.send_now {
                self.send(id, to, msg);
            }
            for e in r.commits {
                self.apply(id, e)?;
            }
            if let Some(role) = r.role {
                self.on_role(id, role)?;
            }
            if let Some((donor, base)) = r.fetch_snapshot {
                self.install_snapshot(id, donor, base)?;
            }
        }
        Ok(())
    }

    fn on_role(&mut self, id: NodeId, role: EngineRole) -> Result<(), String> {
        // Several candidates may pick the same epoch; only one can gather a quorum of
        // promises for it and become its master.
        if let EngineRole::Leading { epoch, established: true } = role {
            if let Some(other) = self.leaders.insert(epoch, id) {
                if other != id {
                    return Err(format!("epoch {epoch} has two masters: {other} and {id}"));
                }
            }
            if let Some(at) = self.master_crash_at.take() {
                self.report.failovers_ms.push(self.now - at);
            }
        }
        if !matches!(role, EngineRole::Leading { established: true, .. }) {
            let pending = std::mem::take(&mut self.node(id).pending);
            for (c, op, attempt) in pending.into_values() {
                self.reply(c, op, attempt, Reply::Unknown);
            }
        }
        Ok(())
    }

    /// Applies one committed entry, checking it against the global committed order.
    fn apply(&mut self, id: NodeId, e: Entry) -> Result<(), String> {
        let committed_len = self.committed.len();
        let n = &mut self.nodes[id as usize - 1];
        if e.zxid <= n.sm.applied {
            return Err(format!("node {id} applied {} after {}", e.zxid, n.sm.applied));
        }
        if n.sm.index < committed_len {
            let expected = &self.committed[n.sm.index];
            if *expected != e {
                return Err(format!(
                    "node {id} applied {} at position {}, where {} was committed",
                    e.zxid, n.sm.index, expected.zxid
                ));
            }
        } else {
            self.committed.push(e.clone());
        }
        let n = &mut self.nodes[id as usize - 1];
        n.sm.index += 1;
        n.sm.applied = e.zxid;
        let output = if e.data.is_empty() {
            None
        } else {
            let cmd: Cmd = serde_json::from_slice(&e.data).map_err(|err| err.to_string())?;
            Some(n.sm.apply(&cmd))
        };
        if let (Some(out), Some((c, op, attempt))) = (output, n.pending.remove(&e.zxid)) {
            self.reply(c, op, attempt, Reply::Done(out));
        }
        Ok(())
    }

    /// The simulator's stand-in for file transfer: a bulk copy of the committed state up to
    /// `base` (the donor's data files).
    fn install_snapshot(&mut self, id: NodeId, _donor: NodeId, base: Zxid) -> Result<(), String> {
        let Some(k) = self.committed.iter().position(|e| e.zxid == base) else {
            return Err(format!("snapshot at {base}, which is not committed"));
        };
        let state = replay(&self.committed[..=k]);
        // Finish the writes under way first, so that nothing lands on the new base.
        while !self.node(id).disk.is_empty() {
            let inc = self.node(id).incarnation;
            self.node(id).flush_scheduled = false;
            self.flush(id, inc)?;
        }
        let n = self.node(id);
        if base < n.sm.applied {
            return Err(format!("snapshot {base} below applied {}", n.sm.applied));
        }
        n.sm = state.clone();
        n.snapshot = state;
        n.view.reset_to(base);
        n.durable.reset_to(base);
        if let Some(e) = n.engine.as_mut() {
            e.snapshot_installed(base);
        }
        self.report.snapshots_installed += 1;
        self.process(id)
    }

    fn check_converged(&mut self) -> Result<(), String> {
        let masters: Vec<NodeId> =
            (1..=self.cfg.nodes as NodeId).filter(|id| self.is_established_master(*id)).collect();
        if masters.len() != 1 {
            return Err(format!(
                "no single master after the healed phase: {masters:?}\n{}",
                self.dump()
            ));
        }
        let master = masters[0];
        let m = &self.nodes[master as usize - 1];
        let target = m.engine.as_ref().map(|e| e.commit()).unwrap_or_default();
        if let Some(last) = self.committed.last() {
            if last.zxid > target {
                return Err(format!(
                    "committed entry {} lost: master {master} commits only {target}\n{}",
                    last.zxid,
                    self.dump()
                ));
            }
        }
        for n in &self.nodes {
            let applied = n.sm.applied;
            if applied != target {
                return Err(format!(
                    "node {} applied {applied}, master {master} committed {target}\n{}",
                    n.id,
                    self.dump()
                ));
            }
        }
        self.report.committed_entries = self.committed.len();
        Ok(())
    }

    /// Every node's engine state, for failure messages.
    fn dump(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            out.push_str(&format!(
                "  node {}: sm applied {} base {} view last {} durable last {} engine {:?}\n",
                n.id,
                n.sm.applied,
                n.durable.base(),
                n.view.last(),
                n.durable.last(),
                n.engine.as_ref().map(|e| (
                    e.role(),
                    e.hard_state(),
                    e.last(),
                    e.durable(),
                    e.commit(),
                    e.applied()
                ))
            ));
        }
        out
    }

    // ---- Clients -----------------------------------------------------------------------

    fn client_next(&mut self, c: usize) {
        // Stop issuing in the last part of the healed phase so that the cluster can settle.
        if self.now + 2_000 > self.cfg.fault_ms + self.cfg.heal_ms {
            return;
        }
        let key = format!("k{}", self.rng.gen_range(0..self.cfg.keys));
        // Now and then try any node, as a client routing reads by load would: so that some
        // clients reach a new master while others still talk to a deposed one.
        if self.rng.gen_bool(0.3) {
            self.clients[c].target = self.rng.gen_range(1..=self.cfg.nodes as NodeId);
        }
        let client = &mut self.clients[c];
        client.next_value += 1;
        client.next_op += 1;
        let value = client.next_value;
        let roll = self.rng.gen_range(0..10);
        let input = if roll < 4 {
            Input::Read
        } else if roll < 8 {
            Input::Write(value)
        } else {
            let expected = if self.rng.gen_bool(0.3) {
                None
            } else {
                Some(self.rng.gen_range(0..self.cfg.clients as u64 + 1) * 1_000_000 + 1)
                    .map(|base| base + self.rng.gen_range(0..20))
            };
            Input::Cas { expected, new: value }
        };
        let client = &mut self.clients[c];
        client.op = Some(ClientOp {
            id: client.next_op,
            key,
            input,
            call: self.now,
            redirects: 0,
            attempt: 0,
        });
        self.client_send(c);
    }

    fn client_send(&mut self, c: usize) {
        let target = self.clients[c].target;
        let Some(op) = self.clients[c].op.as_mut() else {
            return;
        };
        op.attempt += 1;
        let (id, attempt) = (op.id, op.attempt);
        let d = self.rng.gen_range(1..=self.cfg.delay_ms_max);
        self.at(d, Event::ClientSend(c, target, id, attempt));
        self.at(CLIENT_TIMEOUT_MS, Event::ClientTimeout(c, id, attempt));
    }

    fn reply(&mut self, c: usize, op: u64, attempt: u64, reply: Reply) {
        let d = self.rng.gen_range(1..=self.cfg.delay_ms_max);
        self.at(d, Event::ClientReply(c, op, attempt, reply));
    }

    /// A node serves a client request.
    fn serve(&mut self, c: usize, id: NodeId, op_id: u64, attempt: u64) -> Result<(), String> {
        let Some(op) = self.clients[c].op.clone() else {
            return Ok(());
        };
        if op.id != op_id || op.attempt != attempt {
            return Ok(());
        }
        let now = self.local_ms(id);
        let n = self.node(id);
        let Some(engine) = n.engine.as_mut() else {
            return Ok(()); // down: the client times out
        };
        if op.input == Input::Read && engine.lease_read_ok(now) {
            self.report.lease_reads += 1;
            let n = self.node(id);
            let v = n.sm.values.get(&op.key).copied();
            self.reply(c, op_id, attempt, Reply::Done(Output::Read(v)));
            return Ok(());
        }
        let cmd = match op.input {
            Input::Read => Cmd::Read { key: op.key },
            Input::Write(value) => Cmd::Write { key: op.key, value },
            Input::Cas { expected, new } => Cmd::Cas { key: op.key, expected, new },
        };
        let data = Bytes::from(serde_json::to_vec(&cmd).map_err(|e| e.to_string())?);
        match engine.propose(data) {
            Ok(zxid) => {
                n.pending.insert(zxid, (c, op_id, attempt));
                self.process(id)?;
            }
            Err(ProposeError::NotMaster { master }) => {
                self.reply(c, op_id, attempt, Reply::Redirect(master))
            }
            Err(ProposeError::Busy) => self.reply(c, op_id, attempt, Reply::Redirect(Some(id))),
        }
        Ok(())
    }

    fn client_reply(&mut self, c: usize, op_id: u64, attempt: u64, reply: Reply) {
        let Some(op) = self.clients[c].op.as_mut() else {
            return;
        };
        if op.id != op_id || op.attempt != attempt {
            return;
        }
        match reply {
            Reply::Done(out) => self.finish(c, Some(out)),
            Reply::Unknown => self.finish(c, None),
            Reply::Redirect(master) => {
                op.redirects += 1;
                if op.redirects > CLIENT_REDIRECTS_MAX {
                    // Never proposed anywhere: it did not happen; not part of the history.
                    self.clients[c].op = None;
                    let d = self.rng.gen_range(1..50);
                    self.at(d, Event::ClientNext(c));
                    return;
                }
                let target = match master {
                    Some(m) => m,
                    None => self.rng.gen_range(1..=self.cfg.nodes as NodeId),
                };
                self.clients[c].target = target;
                // Back off a little while an election runs, then try again.
                let backoff = if master.is_some() { 1 } else { 50 };
                self.clients[c].op.as_mut().expect("op").attempt += 1;
                let (id, attempt) = {
                    let op = self.clients[c].op.as_ref().expect("op");
                    (op.id, op.attempt)
                };
                self.at(backoff, Event::ClientSend(c, target, id, attempt));
                self.at(backoff + CLIENT_TIMEOUT_MS, Event::ClientTimeout(c, id, attempt));
            }
        }
    }

    /// Records the client's operation with its outcome (None: unknown) and schedules the next.
    fn finish(&mut self, c: usize, output: Option<Output>) {
        let Some(op) = self.clients[c].op.take() else {
            return;
        };
        if output.is_some() {
            self.report.ops_ok += 1;
        } else {
            self.report.ops_unknown += 1;
        }
        self.report.history.push(Operation {
            client: c as u64,
            key: op.key,
            call: op.call,
            ret: output.map(|_| self.now),
            input: op.input,
            output,
        });
        let d = self.rng.gen_range(0..30);
        self.at(d, Event::ClientNext(c));
    }
}

/// The register state after applying `entries` in order.
fn replay(entries: &[Entry]) -> StateMachine {
    let mut sm = StateMachine::default();
    for e in entries {
        if !e.data.is_empty() {
            let cmd: Cmd = serde_json::from_slice(&e.data).expect("simulator command");
            sm.apply(&cmd);
        }
        sm.applied = e.zxid;
        sm.index += 1;
    }
    sm
}
