//! A bounded exhaustive model check of election plus log replication: 3 real [`Engine`]s, a
//! network that loses, duplicates and reorders every message, disks that make each persist op
//! durable separately (log ops in order; a HardState once every log op before it is durable;
//! log ops after a HardState may overtake it: the host contract), one crash, and per-node
//! clocks that advance independently. The search is bounded by a state budget and does not
//! exhaust its configuration; the tests print states and depth reached. Not covered: disk
//! wipes (`Durability::Lost`; the simulator covers them), and a negative check of a host that
//! breaks the order (12 000 random walks did not reach that bug: the model is too shallow).
//!
//! Breadth-first over every interleaving of: deliver a message (and drop it, or keep it for a
//! duplicate), drop a message, advance one node's clock by a tick, make one node's next write
//! durable (one op), crash and restart one node (durable log kept), propose on the master. States are
//! deduplicated by a hash of the whole state (engines, logs, disks, network, history
//! variables). Bounds: ticks per node, proposals, crashes, and a state budget, so that it runs
//! in well under a minute; the tests report how far they got.
//!
//! Checked in every reachable state:
//! - one master per epoch (a history variable maps each epoch to its established master);
//! - committed entries are never lost nor reordered: every node hands out the same sequence
//!   (a history variable holds the committed order; a restarted node replays it from start);
//! - an established master's log holds every committed entry.
//!
//! The lease is not checked here: clocks advance independently, with no real time to relate
//! them; the simulator checks lease reads against a linearizability checker.

use super::*;
use bytes::Bytes;
use protocol::message::Message;
use protocol::{NodeId, Zxid};
use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};

const QUANTUM_MS: u64 = 10;
const NODES: NodeId = 3;

fn model_config(id: NodeId) -> EngineConfig {
    EngineConfig {
        id,
        members: vec![1, 2, 3],
        heartbeat_interval_ms: 10,
        election_timeout_ms: 30,
        lease_ms: 20,
        drift_margin_ms: 5,
        batch_entries_max: 4,
        batch_bytes_max: 1024,
        inflight_entries_max: 16,
        sync_entries_max: 4,
        apply_entries_max: 16,
    }
}

/// A message on the wire: kind byte then payload, so that the network is a hashable set.
type Wire = Vec<u8>;

fn encode(msg: &Message) -> Wire {
    let mut v = vec![msg.kind() as u8];
    v.extend(msg.encode_payload().expect("replication messages encode"));
    v
}

fn decode(w: &Wire) -> Message {
    Message::decode_payload(w[0], &w[1..]).expect("encoded by us")
}

/// A Ready's writes under way: its persist seq, its ops (each with "durable yet"), and the
/// messages held until all of it is durable.
type DiskWrite = (u64, Vec<(PersistOp, bool)>, Vec<(To, Wire)>);

#[derive(Clone, Hash)]
struct ModelNode {
    engine: Engine,
    view: MemLog,
    durable: MemLog,
    disk: VecDeque<DiskWrite>,
    clock: u64,
    /// Entries of the committed order this incarnation handed out.
    applied: usize,
}

#[derive(Clone, Hash)]
struct ModelState {
    nodes: Vec<ModelNode>,
    /// (destination, message). A set: duplicates come from delivering without removing.
    net: BTreeSet<(NodeId, Wire)>,
    crashes_left: u8,
    proposals_left: u8,
    masters: BTreeMap<u32, NodeId>,
    committed: Vec<Zxid>,
}

#[derive(Clone, Copy, Debug)]
enum Action {
    Deliver(usize, bool),
    Drop(usize),
    Tick(NodeId),
    /// Make the node's oldest pending log op durable.
    FlushLog(NodeId),
    /// Make the node's oldest pending HardState durable (where the host order allows).
    FlushHard(NodeId),
    Crash(NodeId),
    Propose(NodeId),
}

struct Bounds {
    /// Whether messages may also be lost or duplicated (reordering is always on).
    lossy: bool,
    ticks_per_node: u64,
    depth: usize,
    states: usize,
}

impl ModelState {
    fn fresh(crashes: u8, proposals: u8) -> Result<ModelState, String> {
        let mut s = ModelState {
            nodes: Vec::new(),
            net: BTreeSet::new(),
            crashes_left: crashes,
            proposals_left: proposals,
            masters: BTreeMap::new(),
            committed: Vec::new(),
        };
        for id in 1..=NODES {
            let log = MemLog::new();
            let engine = Engine::new(model_config(id), RestartState::default(), &log, 0)
                .expect("valid config");
            s.nodes.push(ModelNode {
                engine,
                view: log.clone(),
                durable: log,
                disk: VecDeque::new(),
                clock: 0,
                applied: 0,
            });
        }
        for id in 1..=NODES {
            s.process(id)?;
        }
        Ok(s)
    }

    fn fingerprint(&self) -> u64 {
        let mut h = DefaultHasher::new();
        self.hash(&mut h);
        h.finish()
    }

    fn node(&mut self, id: NodeId) -> &mut ModelNode {
        &mut self.nodes[id as usize - 1]
    }

    fn send(&mut self, from: NodeId, to: To, w: Wire) {
        match to {
            To::Node(id) => {
                self.net.insert((id, w));
            }
            To::Peers => {
                for id in (1..=NODES).filter(|id| *id != from) {
                    self.net.insert((id, w.clone()));
                }
            }
        }
    }

    /// Drains one engine's outputs, checking every commit and role change.
    fn process(&mut self, id: NodeId) -> Result<(), String> {
        for _ in 0..16 {
            let n = self.node(id);
            let r = n.engine.ready(&n.view);
            if r.is_empty() {
                return Ok(());
            }
            for op in &r.persist {
                n.view.apply(op);
            }
            if let Some(seq) = r.persist_seq {
                let after = r.send_after_persist.iter().map(|(to, m)| (*to, encode(m))).collect();
                let ops = r.persist.iter().map(|op| (op.clone(), false)).collect();
                n.disk.push_back((seq, ops, after));
            }
            for (to, m) in &r.send_now {
                self.send(id, *to, encode(m));
            }
            for e in &r.commits {
                let n = &mut self.nodes[id as usize - 1];
                let at = n.applied;
                n.applied += 1;
                match self.committed.get(at) {
                    Some(z) if *z != e.zxid => {
                        return Err(format!(
                            "node {id} applied {} at position {at}, where {z} was committed",
                            e.zxid
                        ))
                    }
                    Some(_) => {}
                    None => self.committed.push(e.zxid),
                }
            }
            if let Some(EngineRole::Leading { epoch, established: true }) = r.role {
                if let Some(other) = self.masters.insert(epoch, id) {
                    if other != id {
                        return Err(format!("epoch {epoch} has two masters: {other} and {id}"));
                    }
                }
            }
        }
        Err(format!("node {id} kept producing output"))
    }

    fn check(&self) -> Result<(), String> {
        for n in &self.nodes {
            if let EngineRole::Leading { established: true, .. } = n.engine.role() {
                for z in &self.committed {
                    if !n.view.contains(*z) {
                        return Err(format!("master {} lacks committed {z}", n.engine.id()));
                    }
                }
            }
        }
        Ok(())
    }

    fn actions(&self, bounds: &Bounds) -> Vec<Action> {
        let mut out = Vec::new();
        for i in 0..self.net.len() {
            out.push(Action::Deliver(i, false));
            if bounds.lossy {
                out.push(Action::Deliver(i, true));
                out.push(Action::Drop(i));
            }
        }
        for n in &self.nodes {
            let id = n.engine.id();
            // The host contract: log ops become durable in order; a HardState only once
            // every log op before it is; log ops after it may overtake it.
            let mut pending = n.disk.iter().flat_map(|w| w.1.iter()).filter(|(_, done)| !done);
            let is_hard = |op: &PersistOp| matches!(op, PersistOp::HardState(_));
            if pending.clone().any(|(op, _)| !is_hard(op)) {
                out.push(Action::FlushLog(id));
            }
            if pending.next().is_some_and(|(op, _)| is_hard(op)) {
                out.push(Action::FlushHard(id));
            }
            if n.clock < bounds.ticks_per_node * QUANTUM_MS {
                out.push(Action::Tick(id));
            }
            if self.crashes_left > 0 {
                out.push(Action::Crash(id));
            }
            if self.proposals_left > 0
                && n.engine.role()
                    == (EngineRole::Leading {
                        epoch: n.engine.hard_state().current_epoch,
                        established: true,
                    })
            {
                out.push(Action::Propose(id));
            }
        }
        out
    }

    fn apply(&self, action: Action) -> Result<ModelState, String> {
        let mut s = self.clone();
        match action {
            Action::Deliver(i, keep) => {
                let (to, w) = s.net.iter().nth(i).cloned().expect("index in range");
                if !keep {
                    s.net.remove(&(to, w.clone()));
                }
                let n = s.node(to);
                n.engine.step(n.clock, decode(&w), &n.view);
                s.process(to)?;
            }
            Action::Drop(i) => {
                let item = s.net.iter().nth(i).cloned().expect("index in range");
                s.net.remove(&item);
            }
            Action::Tick(id) => {
                let n = s.node(id);
                n.clock += QUANTUM_MS;
                n.engine.tick(n.clock, &n.view);
                s.process(id)?;
            }
            Action::FlushLog(id) | Action::FlushHard(id) => {
                let hard = matches!(action, Action::FlushHard(_));
                let n = s.node(id);
                let (op, done) = n
                    .disk
                    .iter_mut()
                    .flat_map(|w| w.1.iter_mut())
                    .find(|(op, done)| !*done && matches!(op, PersistOp::HardState(_)) == hard)
                    .expect("a pending op of that kind");
                *done = true;
                n.durable.apply(op);
                let mut sends = Vec::new();
                while n.disk.front().is_some_and(|w| w.1.iter().all(|(_, done)| *done)) {
                    let (seq, _, after) = n.disk.pop_front().expect("front");
                    n.engine.persisted(seq);
                    sends.extend(after);
                }
                for (to, w) in sends {
                    s.send(id, to, w);
                }
                s.process(id)?;
            }
            Action::Crash(id) => {
                s.crashes_left -= 1;
                let n = s.node(id);
                n.view = n.durable.clone();
                n.disk.clear();
                n.applied = 0;
                let restart = RestartState { hard: n.durable.hard, applied: Zxid::ZERO };
                n.engine =
                    Engine::new(model_config(id), restart, &n.view, n.clock).expect("valid config");
                s.process(id)?;
            }
            Action::Propose(id) => {
                s.proposals_left -= 1;
                let data = Bytes::from(vec![s.proposals_left]);
                s.node(id)
                    .engine
                    .propose(data)
                    .map_err(|e| format!("propose on the master: {e}"))?;
                s.process(id)?;
            }
        }
        s.check()?;
        Ok(s)
    }

    /// Drives the model along one fixed, fault-free schedule until a master is established
    /// (flush, else deliver the first message, else tick everyone): a deep starting point.
    fn settle(mut self) -> Result<ModelState, String> {
        for _ in 0..2_000 {
            if self
                .nodes
                .iter()
                .any(|n| matches!(n.engine.role(), EngineRole::Leading { established: true, .. }))
                && self.net.is_empty()
                && self.nodes.iter().all(|n| n.disk.is_empty())
            {
                return Ok(self);
            }
            let action = if let Some(n) = self.nodes.iter().find(|n| !n.disk.is_empty()) {
                let first_hard = n
                    .disk
                    .iter()
                    .flat_map(|w| w.1.iter())
                    .find(|(_, done)| !done)
                    .is_some_and(|(op, _)| matches!(op, PersistOp::HardState(_)));
                if first_hard {
                    Action::FlushHard(n.engine.id())
                } else {
                    Action::FlushLog(n.engine.id())
                }
            } else if !self.net.is_empty() {
                Action::Deliver(0, false)
            } else {
                let id = self.nodes.iter().min_by_key(|n| n.clock).expect("nodes").engine.id();
                Action::Tick(id)
            };
            self = self.apply(action)?;
        }
        Err("no master after the fixed schedule".to_string())
    }
}

/// What a bounded search covered.
#[derive(Debug)]
struct Coverage {
    states: usize,
    depth: usize,
    exhausted: bool,
}

/// Breadth-first over every action sequence from `start` within `bounds`; the first broken
/// invariant fails with the action path that reaches it.
fn explore(start: ModelState, bounds: &Bounds) -> Result<Coverage, String> {
    let mut seen: HashSet<u64> = HashSet::new();
    seen.insert(start.fingerprint());
    let mut queue: VecDeque<(ModelState, Vec<Action>)> = VecDeque::new();
    queue.push_back((start, Vec::new()));
    let mut depth = 0;
    while let Some((state, path)) = queue.pop_front() {
        depth = depth.max(path.len());
        if path.len() >= bounds.depth {
            continue;
        }
        for action in state.actions(bounds) {
            let next = state
                .apply(action)
                .map_err(|e| format!("{e}\n  after {:?}", [&path[..], &[action]].concat()))?;
            if seen.insert(next.fingerprint()) {
                if seen.len() >= bounds.states {
                    return Ok(Coverage { states: seen.len(), depth, exhausted: false });
                }
                let mut p = path.clone();
                p.push(action);
                queue.push_back((next, p));
            }
        }
    }
    Ok(Coverage { states: seen.len(), depth, exhausted: true })
}

/// Follows `walks` random paths of up to `steps` actions from `start` (seeded), weighted
/// toward progress, checking every state: the deep complement of the bounded breadth-first
/// search (elections, failovers and catch-ups need tens of steps).
fn random_walks(
    start: &ModelState,
    seed: u64,
    walks: usize,
    steps: usize,
    ticks: u64,
) -> Result<usize, String> {
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    let mut rng = SmallRng::seed_from_u64(seed);
    let bounds = Bounds { lossy: true, ticks_per_node: ticks, depth: steps, states: usize::MAX };
    let mut masters_seen = 0;
    for walk in 0..walks {
        let mut s = start.clone();
        let mut path = Vec::new();
        for _ in 0..steps {
            let actions = s.actions(&bounds);
            if actions.is_empty() {
                break;
            }
            let weight = |a: &Action| match a {
                Action::Deliver(_, false) => 20,
                Action::FlushLog(_) | Action::FlushHard(_) => 20,
                Action::Tick(_) => 6,
                Action::Propose(_) => 6,
                Action::Deliver(_, true) | Action::Drop(_) => 2,
                Action::Crash(_) => 1,
            };
            let total: u32 = actions.iter().map(weight).sum();
            let mut pick = rng.gen_range(0..total);
            let mut chosen = actions[0];
            for a in &actions {
                if pick < weight(a) {
                    chosen = *a;
                    break;
                }
                pick -= weight(a);
            }
            path.push(chosen);
            s = s
                .apply(chosen)
                .map_err(|e| format!("{e}\n  walk {walk} of seed {seed}, after {path:?}"))?;
        }
        masters_seen += s.masters.len();
    }
    Ok(masters_seen)
}

/// State budget per check; debug builds (CI) explore fewer.
fn budget() -> usize {
    if cfg!(debug_assertions) {
        20_000
    } else {
        400_000
    }
}

/// From a fresh cluster: every interleaving of the election under loss, duplication,
/// reordering and one crash keeps one master per epoch.
#[test]
fn model_election_from_fresh_cluster() {
    let start = ModelState::fresh(1, 0).expect("start");
    let bounds = Bounds { lossy: true, ticks_per_node: 4, depth: 40, states: budget() };
    let c = explore(start, &bounds).unwrap_or_else(|e| panic!("invariant broken: {e}"));
    println!(
        "election from fresh: {} states, depth {}, exhausted {}",
        c.states, c.depth, c.exhausted
    );
    assert!(c.states > 1_000, "explored too little: {c:?}");
}

/// From an established master with committed history: every interleaving of proposals,
/// faults, one crash (of any node, the master included) and re-election keeps one master per
/// epoch, the committed order, and every committed entry in the master's log.
#[test]
fn model_replication_and_failover_from_established_master() {
    let mut start = ModelState::fresh(1, 0).and_then(ModelState::settle).expect("settle");
    // Two committed entries before faults start.
    let master = start
        .nodes
        .iter()
        .find(|n| matches!(n.engine.role(), EngineRole::Leading { .. }))
        .expect("a master")
        .engine
        .id();
    for i in 0..2u8 {
        start.node(master).engine.propose(Bytes::from(vec![100 + i])).expect("master takes writes");
        start.process(master).expect("process");
    }
    let start = start.settle().expect("settle after writes");
    assert_eq!(start.committed.len(), 2);
    let mut start = start;
    start.proposals_left = 2;
    let base_clock = start.nodes.iter().map(|n| n.clock).max().unwrap_or(0);
    for lossy in [true, false] {
        let bounds = Bounds {
            lossy,
            ticks_per_node: base_clock / QUANTUM_MS + 5,
            depth: 60,
            states: budget(),
        };
        let c = explore(start.clone(), &bounds).unwrap_or_else(|e| panic!("invariant broken: {e}"));
        println!(
            "replication and failover (lossy {lossy}): {} states, depth {}, exhausted {}",
            c.states, c.depth, c.exhausted
        );
        assert!(c.states > 1_000, "explored too little: {c:?}");
    }
}

/// Deep random walks over the same model from a fresh cluster (two proposals, one crash):
/// elections under faults, replication, failover; every state checked.
#[test]
fn model_random_walks_from_fresh_cluster() {
    let start = ModelState::fresh(1, 3).expect("start");
    // SHOAL_MODEL_WALKS=N runs more (and SHOAL_MODEL_SEED=S another seed).
    let walks = std::env::var("SHOAL_MODEL_WALKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if cfg!(debug_assertions) { 300 } else { 3_000 });
    let seed = std::env::var("SHOAL_MODEL_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let masters = random_walks(&start, seed, walks, 250, 40)
        .unwrap_or_else(|e| panic!("invariant broken: {e}"));
    println!("random walks: {walks} walks, {masters} epochs with an established master");
    assert!(masters > walks / 2, "walks rarely elected anyone: {masters}");
}
