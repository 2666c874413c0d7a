//! One test per protocol rule; each asserts the exact outputs the rule demands.

use super::*;
use bytes::Bytes;
use protocol::message::replication::{
    Accept, Entry, Heartbeat, Prepare, PrepareOk, Proposal, Sync, Vote,
};
use protocol::message::Message;
use protocol::{NodeId, Zxid};
use std::collections::BTreeMap;

const LEASE_MS: u64 = 300;

fn config(id: NodeId) -> EngineConfig {
    EngineConfig::new(id, vec![1, 2, 3])
}

fn z(epoch: u32, counter: u32) -> Zxid {
    Zxid::new(epoch, counter)
}

fn entry(zxid: Zxid, data: &str) -> Entry {
    Entry { zxid, data: Bytes::copy_from_slice(data.as_bytes()) }
}

/// One engine with its in-memory log.
struct Node {
    engine: Engine,
    log: MemLog,
}

impl Node {
    fn new(id: NodeId, log: MemLog, applied: Zxid, now_ms: u64) -> Node {
        let restart = RestartState { hard: log.hard, applied };
        let engine = Engine::new(config(id), restart, &log, now_ms).expect("valid config");
        Node { engine, log }
    }

    /// A node whose host found no durable state (or knows it lost some).
    fn lost(id: NodeId, log: MemLog, now_ms: u64) -> Node {
        let restart = RestartState { hard: log.hard, applied: Zxid::ZERO };
        let engine = Engine::start(config(id), restart, Durability::Lost, &log, now_ms)
            .expect("valid config");
        Node { engine, log }
    }

    fn fresh(id: NodeId) -> Node {
        Node::new(id, MemLog::new(), Zxid::ZERO, 0)
    }

    /// Takes the Ready and applies its persist ops to the log (not yet declared durable).
    fn ready(&mut self) -> Ready {
        let r = self.engine.ready(&self.log);
        for op in &r.persist {
            self.log.apply(op);
        }
        r
    }

    /// Takes the Ready, applies it, and declares it durable at once.
    fn ready_durable(&mut self) -> Ready {
        let r = self.ready();
        if let Some(seq) = r.persist_seq {
            self.engine.persisted(seq);
        }
        r
    }

    fn step(&mut self, now_ms: u64, msg: Message) {
        self.engine.step(now_ms, msg, &self.log);
    }

    fn tick(&mut self, now_ms: u64) {
        self.engine.tick(now_ms, &self.log);
    }
}

fn log_with(entries: &[Entry], current_epoch: u32, accepted_epoch: u32) -> MemLog {
    let mut log = MemLog::new();
    log.apply(&PersistOp::Append(entries.to_vec()));
    log.hard = HardState { accepted_epoch, promised_to: 0, current_epoch };
    log
}

/// Instant, lossless delivery among a few engines: the harness for multi-step rules.
struct Cluster {
    nodes: BTreeMap<NodeId, Node>,
    now_ms: u64,
}

impl Cluster {
    fn new(nodes: Vec<Node>) -> Cluster {
        Cluster { nodes: nodes.into_iter().map(|n| (n.engine.id(), n)).collect(), now_ms: 0 }
    }

    fn fresh() -> Cluster {
        Cluster::new(vec![Node::fresh(1), Node::fresh(2), Node::fresh(3)])
    }

    /// Delivers everything until no node has output; bounded.
    fn deliver(&mut self) {
        for _ in 0..1000 {
            let mut msgs = Vec::new();
            for (id, n) in self.nodes.iter_mut() {
                let r = n.ready_durable();
                for (to, m) in r.send_now.into_iter().chain(r.send_after_persist) {
                    msgs.push((*id, to, m));
                }
            }
            if msgs.is_empty() {
                return;
            }
            for (from, to, m) in msgs {
                let targets: Vec<NodeId> = match to {
                    To::Node(id) => vec![id],
                    To::Peers => self.nodes.keys().copied().filter(|id| *id != from).collect(),
                };
                for t in targets {
                    if let Some(n) = self.nodes.get_mut(&t) {
                        n.step(self.now_ms, m.clone());
                    }
                }
            }
        }
        panic!("cluster did not go quiet");
    }

    fn advance(&mut self, ms: u64) {
        let end = self.now_ms + ms;
        while self.now_ms < end {
            self.now_ms += 10;
            for n in self.nodes.values_mut() {
                n.tick(self.now_ms);
            }
            self.deliver();
        }
    }

    fn master(&self) -> Option<NodeId> {
        self.nodes.values().find_map(|n| match n.engine.role() {
            EngineRole::Leading { established: true, .. } => Some(n.engine.id()),
            _ => None,
        })
    }

    fn elect(&mut self) -> NodeId {
        for _ in 0..300 {
            if let Some(m) = self.master() {
                return m;
            }
            self.advance(10);
        }
        panic!("no master elected");
    }

    fn node(&mut self, id: NodeId) -> &mut Node {
        self.nodes.get_mut(&id).expect("node exists")
    }
}

fn vote(from: NodeId, round: u64, candidate: NodeId, epoch: u32, zxid: Zxid) -> Message {
    Message::Vote(Vote {
        from,
        round,
        candidate,
        candidate_epoch: epoch,
        candidate_zxid: zxid,
        settled: false,
        accepted_epoch: epoch,
        promised_to: 0,
        fresh: false,
    })
}

/// Votes compare by epoch first, then last zxid, then id: a looking node adopts a vote better
/// in that order and rebroadcasts it, and ignores a worse one.
#[test]
fn vote_order_is_epoch_then_zxid_then_id() {
    let log = log_with(&[entry(z(1, 5), "a")], 1, 1);
    let mut n = Node::new(2, log, Zxid::ZERO, 0);
    let start = n.ready();
    assert_eq!(
        start.send_now,
        vec![(
            To::Peers,
            Message::Vote(Vote {
                from: 2,
                round: 1,
                candidate: 2,
                candidate_epoch: 1,
                candidate_zxid: z(1, 5),
                settled: false,
                accepted_epoch: 1,
                promised_to: 0,
                fresh: false,
            })
        )]
    );
    // Higher zxid but lower epoch loses.
    n.step(1, vote(1, 1, 1, 0, z(0, 99)));
    assert!(n.ready().send_now.is_empty());
    // Same epoch and zxid, lower id loses.
    n.step(1, vote(1, 1, 1, 1, z(1, 5)));
    assert!(n.ready().send_now.is_empty());
    // Same epoch, higher zxid wins: adopted and rebroadcast; with 2 of 3 agreeing, follow 3.
    n.step(1, vote(3, 1, 3, 1, z(1, 6)));
    let r = n.ready();
    assert_eq!(
        r.send_now,
        vec![(
            To::Peers,
            Message::Vote(Vote {
                from: 2,
                round: 1,
                candidate: 3,
                candidate_epoch: 1,
                candidate_zxid: z(1, 6),
                settled: false,
                accepted_epoch: 1,
                promised_to: 0,
                fresh: false,
            })
        )]
    );
    assert_eq!(r.role, Some(EngineRole::Following { master: 3 }));
}

/// A node that gathers n/2+1 votes for itself leads with an epoch above every epoch it has
/// heard of, promises it to itself durably, and sends Prepare only after that persist.
#[test]
fn quorum_of_votes_makes_master_with_epoch_above_all_seen() {
    let mut n = Node::new(3, log_with(&[], 0, 0), Zxid::ZERO, 0);
    n.ready();
    let v = Vote {
        from: 1,
        round: 1,
        candidate: 3,
        candidate_epoch: 0,
        candidate_zxid: Zxid::ZERO,
        settled: false,
        accepted_epoch: 7,
        promised_to: 0,
        fresh: false,
    };
    // Still inside the restart no-promise window: it may not promise itself yet.
    n.step(10, Message::Vote(v));
    assert_eq!(n.engine.role(), EngineRole::Looking);
    n.tick(LEASE_MS);
    let r = n.ready();
    assert_eq!(n.engine.role(), EngineRole::Leading { epoch: 8, established: false });
    assert_eq!(
        r.persist,
        vec![PersistOp::HardState(HardState {
            accepted_epoch: 8,
            promised_to: 3,
            current_epoch: 0
        })]
    );
    assert_eq!(
        r.send_after_persist,
        vec![(To::Peers, Message::Prepare(Prepare { from: 3, epoch: 8 }))]
    );
    assert!(r.persist_seq.is_some());
}

/// A node promises a new epoch durably before its PrepareOk leaves, and reports its
/// (current epoch, last zxid).
#[test]
fn prepare_is_promised_durably_before_prepare_ok() {
    let log = log_with(&[entry(z(1, 1), "a"), entry(z(1, 2), "b")], 1, 1);
    let mut n = Node::new(2, log, Zxid::ZERO, 0);
    n.ready();
    n.step(LEASE_MS, Message::Prepare(Prepare { from: 3, epoch: 2 }));
    let r = n.ready();
    assert_eq!(
        r.persist,
        vec![PersistOp::HardState(HardState {
            accepted_epoch: 2,
            promised_to: 3,
            current_epoch: 1
        })]
    );
    assert!(r.send_now.is_empty());
    assert_eq!(
        r.send_after_persist,
        vec![(
            To::Node(3),
            Message::PrepareOk(PrepareOk {
                from: 2,
                epoch: 2,
                current_epoch: 1,
                last_zxid: z(1, 2)
            })
        )]
    );
    assert_eq!(n.engine.role(), EngineRole::Following { master: 3 });
}

/// One master per epoch: a node refuses a Prepare for an epoch it already promised to someone
/// else, or a lower one, and answers with its vote (carrying its accepted epoch) instead.
#[test]
fn prepare_for_promised_or_older_epoch_is_refused() {
    let mut log = log_with(&[], 0, 0);
    log.hard = HardState { accepted_epoch: 5, promised_to: 3, current_epoch: 4 };
    let mut n = Node::new(2, log, Zxid::ZERO, 0);
    n.ready();
    for epoch in [4, 5] {
        n.step(LEASE_MS, Message::Prepare(Prepare { from: 1, epoch }));
        let r = n.ready();
        assert!(r.persist.is_empty() && r.send_after_persist.is_empty());
        match &r.send_now[..] {
            [(To::Node(1), Message::Vote(v))] => assert_eq!(v.accepted_epoch, 5),
            other => panic!("expected a vote back, got {other:?}"),
        }
    }
    // The same master repeating its Prepare gets the PrepareOk again, with no new promise.
    n.step(LEASE_MS, Message::Prepare(Prepare { from: 3, epoch: 5 }));
    let r = n.ready();
    assert!(r.persist.is_empty());
    assert_eq!(r.send_after_persist.len(), 1);
}

/// A follower that received a heartbeat promises no other master until the lease has passed
/// on its own clock; the same master may still be promised.
#[test]
fn lease_blocks_promise_to_another_master_until_it_expires() {
    let mut c = Cluster::fresh();
    let m = c.elect();
    let f = if m == 1 { 2 } else { 1 };
    let other = 6 - m - f;
    let epoch = c.node(f).engine.hard_state().accepted_epoch;
    let now = c.now_ms;
    c.node(f).step(
        now,
        Message::Heartbeat(Heartbeat {
            from: m,
            epoch,
            commit: Zxid::ZERO,
            lease_ms: LEASE_MS as u32,
            seq: 999,
        }),
    );
    c.node(f).ready();
    let prepare = Message::Prepare(Prepare { from: other, epoch: epoch + 1 });
    c.node(f).step(now + LEASE_MS - 1, prepare.clone());
    let r = c.node(f).ready();
    assert!(r.persist.is_empty(), "promised inside the lease: {r:?}");
    c.node(f).step(now + LEASE_MS, prepare);
    let r = c.node(f).ready();
    assert_eq!(
        r.persist,
        vec![PersistOp::HardState(HardState {
            accepted_epoch: epoch + 1,
            promised_to: other,
            current_epoch: epoch
        })]
    );
}

/// A restarted node forgot whose lease it held, so it promises no one for one lease.
#[test]
fn restarted_node_promises_no_one_for_one_lease() {
    let mut n = Node::new(2, log_with(&[], 1, 1), Zxid::ZERO, 1000);
    n.ready();
    n.step(1000 + LEASE_MS - 1, Message::Prepare(Prepare { from: 3, epoch: 2 }));
    assert!(n.ready().persist.is_empty());
    n.step(1000 + LEASE_MS, Message::Prepare(Prepare { from: 3, epoch: 2 }));
    assert_eq!(n.ready().persist.len(), 1);
}

fn leader_in_discovery(log: MemLog) -> Node {
    let mut n = Node::new(3, log, Zxid::ZERO, 0);
    n.ready();
    let hs = n.engine.hard_state();
    n.step(LEASE_MS, vote(1, 1, 3, hs.current_epoch, n.engine.last()));
    n.tick(LEASE_MS);
    let r = n.ready_durable();
    assert!(matches!(n.engine.role(), EngineRole::Leading { .. }), "{r:?}");
    n
}

/// A master whose promising quorum includes a node with a newer history gives way rather than
/// risk dropping committed entries it lacks.
#[test]
fn master_gives_way_to_a_promiser_with_newer_history() {
    let mut n = leader_in_discovery(log_with(&[entry(z(1, 1), "a")], 1, 1));
    let epoch = n.engine.hard_state().accepted_epoch;
    n.step(
        LEASE_MS,
        Message::PrepareOk(PrepareOk { from: 1, epoch, current_epoch: 1, last_zxid: z(1, 2) }),
    );
    let r = n.ready();
    assert_eq!(n.engine.role(), EngineRole::Looking);
    assert!(r.persist.is_empty(), "no epoch adopted: {r:?}");
}

/// Catch-up sends a follower exactly what it misses after its position, and the epoch
/// adoption is persisted before the master counts itself.
#[test]
fn sync_sends_the_entries_after_the_follower_position() {
    let entries = [entry(z(1, 1), "a"), entry(z(1, 2), "b"), entry(z(1, 3), "c")];
    let mut n = leader_in_discovery(log_with(&entries, 1, 1));
    let epoch = n.engine.hard_state().accepted_epoch;
    n.step(
        LEASE_MS,
        Message::PrepareOk(PrepareOk { from: 1, epoch, current_epoch: 1, last_zxid: z(1, 1) }),
    );
    let r = n.ready();
    assert_eq!(
        r.persist,
        vec![PersistOp::HardState(HardState {
            accepted_epoch: epoch,
            promised_to: 3,
            current_epoch: epoch
        })]
    );
    assert_eq!(
        r.send_now,
        vec![(
            To::Node(1),
            Message::Sync(Sync {
                from: 3,
                epoch,
                prev: z(1, 1),
                entries: entries[1..].to_vec(),
                done: true,
                snapshot: None,
                commit: Zxid::ZERO,
            })
        )]
    );
}

fn promised_follower(entries: &[Entry], current_epoch: u32, master_epoch: u32) -> Node {
    let mut n = Node::new(2, log_with(entries, current_epoch, current_epoch), Zxid::ZERO, 0);
    n.ready();
    n.step(LEASE_MS, Message::Prepare(Prepare { from: 3, epoch: master_epoch }));
    n.ready_durable();
    n
}

/// A follower keeps what it shares with the master, truncates its divergent uncommitted tail
/// from the first difference, appends the rest, adopts the epoch after the entries, and acks
/// only after all of it is durable.
#[test]
fn sync_truncates_a_divergent_tail_and_acks_after_persist() {
    let mine = [entry(z(1, 1), "a"), entry(z(2, 1), "x"), entry(z(2, 2), "y")];
    let mut n = promised_follower(&mine, 2, 4);
    n.step(
        LEASE_MS,
        Message::Sync(Sync {
            from: 3,
            epoch: 4,
            prev: z(1, 1),
            entries: vec![entry(z(3, 1), "c")],
            done: true,
            snapshot: None,
            commit: z(3, 1),
        }),
    );
    let r = n.ready();
    assert_eq!(
        r.persist,
        vec![
            PersistOp::TruncateAfter(z(1, 1)),
            PersistOp::Append(vec![entry(z(3, 1), "c")]),
            PersistOp::HardState(HardState { accepted_epoch: 4, promised_to: 3, current_epoch: 4 }),
        ]
    );
    assert!(r.send_now.is_empty());
    assert_eq!(
        r.send_after_persist,
        vec![(
            To::Node(3),
            Message::Accept(Accept { from: 2, epoch: 4, durable: z(3, 1), heartbeat: 0 })
        )]
    );
    assert_eq!(n.log.entries(), &[entry(z(1, 1), "a"), entry(z(3, 1), "c")]);
    // Only what is committed and durable locally is handed out: (1,1) was on disk already ...
    assert_eq!(r.commits, vec![entry(z(1, 1), "a")]);
    n.engine.persisted(r.persist_seq.expect("seq"));
    // ... (3,1) once its append is durable.
    assert_eq!(n.ready().commits, vec![entry(z(3, 1), "c")]);
}

/// The last chunk also drops anything the follower has past the master's history.
#[test]
fn sync_done_drops_a_tail_past_the_master_history() {
    let mine = [entry(z(1, 1), "a"), entry(z(1, 2), "b")];
    let mut n = promised_follower(&mine, 1, 2);
    n.step(
        LEASE_MS,
        Message::Sync(Sync {
            from: 3,
            epoch: 2,
            prev: z(1, 1),
            entries: vec![],
            done: true,
            snapshot: None,
            commit: Zxid::ZERO,
        }),
    );
    let r = n.ready();
    assert_eq!(r.persist[0], PersistOp::TruncateAfter(z(1, 1)));
}

/// A reordered, stale `done` chunk does not drop entries the follower already took from the
/// same master (found by the simulator: it dropped an entry already acked as durable).
#[test]
fn stale_done_chunk_keeps_the_master_epoch_entries() {
    let mine = [entry(z(1, 1), "a"), entry(z(4, 1), "b"), entry(z(4, 2), "c")];
    let mut n = promised_follower(&mine, 3, 4);
    // It took the master's up-to-date chunk first ...
    n.step(
        LEASE_MS,
        Message::Sync(Sync {
            from: 3,
            epoch: 4,
            prev: z(4, 2),
            entries: vec![],
            done: true,
            snapshot: None,
            commit: Zxid::ZERO,
        }),
    );
    n.ready_durable();
    assert_eq!(n.engine.hard_state().current_epoch, 4);
    // ... then an older one arrives late.
    n.step(
        LEASE_MS,
        Message::Sync(Sync {
            from: 3,
            epoch: 4,
            prev: z(1, 1),
            entries: vec![entry(z(4, 1), "b")],
            done: true,
            snapshot: None,
            commit: Zxid::ZERO,
        }),
    );
    let r = n.ready();
    assert!(r.persist.is_empty(), "changed the log: {:?}", r.persist);
    assert_eq!(n.engine.last(), z(4, 2));
}

/// A follower that lacks the chunk's `prev` answers with the largest zxid below it that it
/// holds, and changes nothing; the master then continues from there.
#[test]
fn sync_walks_back_when_the_follower_lacks_prev() {
    let mine = [entry(z(1, 1), "a"), entry(z(2, 1), "x")];
    let mut n = promised_follower(&mine, 2, 4);
    n.step(
        LEASE_MS,
        Message::Sync(Sync {
            from: 3,
            epoch: 4,
            prev: z(3, 1),
            entries: vec![entry(z(3, 2), "c")],
            done: true,
            snapshot: None,
            commit: Zxid::ZERO,
        }),
    );
    let r = n.ready();
    assert!(r.persist.is_empty());
    assert_eq!(
        r.send_now,
        vec![(
            To::Node(3),
            Message::PrepareOk(PrepareOk {
                from: 2,
                epoch: 4,
                current_epoch: 2,
                last_zxid: z(2, 1)
            })
        )]
    );

    // Master side: a reported position not in its history makes it start below it.
    let master_entries = [entry(z(1, 1), "a"), entry(z(1, 2), "b"), entry(z(3, 1), "c")];
    let mut m = leader_in_discovery(log_with(&master_entries, 3, 3));
    let epoch = m.engine.hard_state().accepted_epoch;
    m.step(
        LEASE_MS,
        Message::PrepareOk(PrepareOk { from: 2, epoch, current_epoch: 2, last_zxid: z(2, 1) }),
    );
    match &m.ready().send_now[..] {
        [(To::Node(2), Message::Sync(s))] => {
            assert_eq!(s.prev, z(1, 2));
            assert_eq!(s.entries, vec![entry(z(3, 1), "c")]);
        }
        other => panic!("expected a sync, got {other:?}"),
    }
}

/// A follower behind the master's log retention is told to fetch the data files, and reports
/// the new position once they are installed.
#[test]
fn follower_behind_retention_fetches_data_files() {
    let mut log = log_with(&[entry(z(1, 1), "a"), entry(z(1, 2), "b"), entry(z(1, 3), "c")], 1, 1);
    log.compact(z(1, 2));
    let mut m = leader_in_discovery(log);
    let epoch = m.engine.hard_state().accepted_epoch;
    m.step(
        LEASE_MS,
        Message::PrepareOk(PrepareOk { from: 1, epoch, current_epoch: 0, last_zxid: Zxid::ZERO }),
    );
    let sync = match m.ready().send_now.pop() {
        Some((To::Node(1), Message::Sync(s))) => s,
        other => panic!("expected a sync, got {other:?}"),
    };
    assert_eq!(sync.snapshot, Some(z(1, 2)));

    let mut f = promised_follower(&[], 0, epoch);
    f.step(LEASE_MS, Message::Sync(sync));
    let r = f.ready();
    assert_eq!(r.fetch_snapshot, Some((3, z(1, 2))));
    assert!(r.persist.is_empty());
    f.log.reset_to(z(1, 2));
    f.engine.snapshot_installed(z(1, 2));
    let r = f.ready();
    assert_eq!(
        r.send_now,
        vec![(
            To::Node(3),
            Message::PrepareOk(PrepareOk { from: 2, epoch, current_epoch: 0, last_zxid: z(1, 2) })
        )]
    );
}

/// A new master takes no write before a quorum holds its history durably; then the history
/// commits and writes are taken.
#[test]
fn new_master_takes_writes_only_once_a_quorum_synced() {
    let mut n = leader_in_discovery(log_with(&[entry(z(1, 1), "a")], 1, 1));
    let epoch = n.engine.hard_state().accepted_epoch;
    assert_eq!(
        n.engine.propose(Bytes::from_static(b"w")),
        Err(ProposeError::NotMaster { master: None })
    );
    n.step(
        LEASE_MS,
        Message::PrepareOk(PrepareOk { from: 1, epoch, current_epoch: 1, last_zxid: z(1, 1) }),
    );
    n.ready_durable();
    assert!(n.engine.propose(Bytes::from_static(b"w")).is_err());
    n.step(LEASE_MS, Message::Accept(Accept { from: 1, epoch, durable: z(1, 1), heartbeat: 0 }));
    let r = n.ready_durable();
    assert_eq!(n.engine.role(), EngineRole::Leading { epoch, established: true });
    assert_eq!(r.commits, vec![entry(z(1, 1), "a")]);
    assert_eq!(n.engine.propose(Bytes::from_static(b"w")), Ok(z(epoch, 1)));
}

/// A follower answers a write with the master's address.
#[test]
fn follower_redirects_writes_to_the_master() {
    let mut c = Cluster::fresh();
    let m = c.elect();
    let f = if m == 1 { 2 } else { 1 };
    assert_eq!(
        c.node(f).engine.propose(Bytes::from_static(b"w")),
        Err(ProposeError::NotMaster { master: Some(m) })
    );
}

/// Operations proposed together go out as one proposal (batching), and the next batch goes
/// out before the first commits (pipelining).
#[test]
fn proposals_are_batched_and_pipelined() {
    let mut c = Cluster::fresh();
    let m = c.elect();
    let base = c.node(m).engine.last();
    let epoch = c.node(m).engine.hard_state().current_epoch;
    let master = c.node(m);
    for i in 0..3 {
        master.engine.propose(Bytes::from(format!("op{i}"))).expect("taken");
    }
    let r = master.ready();
    let proposals: Vec<&Proposal> = r
        .send_now
        .iter()
        .filter_map(|(_, msg)| match msg {
            Message::Proposal(p) => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(proposals.len(), 1);
    assert_eq!(proposals[0].prev, base);
    assert_eq!(proposals[0].entries.len(), 3);
    assert_eq!(r.persist, vec![PersistOp::Append(proposals[0].entries.clone())]);
    master.engine.propose(Bytes::from_static(b"op3")).expect("taken");
    let r2 = master.ready();
    match &r2.send_now[..] {
        [(To::Peers, Message::Proposal(p))] => {
            assert_eq!(p.prev, z(epoch, 3));
            assert_eq!(p.entries, vec![entry(z(epoch, 4), "op3")]);
        }
        other => panic!("expected the second proposal, got {other:?}"),
    }
    assert!(master.engine.commit() < z(epoch, 1), "nothing committed yet");
}

/// An entry commits only once a quorum holds it durably: the master's own unflushed write and
/// an ack of something lower do not count.
#[test]
fn commit_needs_a_quorum_of_durable_acks_in_the_epoch() {
    let mut c = Cluster::fresh();
    let m = c.elect();
    let f = if m == 1 { 2 } else { 1 };
    let epoch = c.node(m).engine.hard_state().current_epoch;
    let now = c.now_ms;
    let master = c.node(m);
    let zx = master.engine.propose(Bytes::from_static(b"w")).expect("taken");
    let r = master.ready(); // written, not durable
    assert!(master.engine.commit() < zx);
    master.step(
        now,
        Message::Accept(Accept { from: f, epoch: epoch - 1, durable: zx, heartbeat: 0 }),
    );
    assert!(master.engine.commit() < zx, "an older epoch's ack counted");
    master.step(0, Message::Accept(Accept { from: f, epoch, durable: zx, heartbeat: 0 }));
    // One durable ack of zx out of the two needed: the master's own write is not durable yet.
    assert!(master.engine.commit() < zx, "committed without a durable quorum");
    master.engine.persisted(r.persist_seq.expect("seq"));
    assert_eq!(master.engine.commit(), zx);
    assert_eq!(master.ready().commits, vec![entry(zx, "w")]);
}

/// The master answers linearizable reads locally only inside its lease minus the drift
/// margin, counted from the send time of a heartbeat a quorum acked.
#[test]
fn lease_reads_only_inside_lease_minus_drift() {
    let mut c = Cluster::fresh();
    let m = c.elect();
    c.advance(100);
    let now = c.now_ms;
    assert!(c.node(m).engine.lease_read_ok(now));
    let until = c.node(m).engine.lease_until_ms().expect("leading");
    assert!(until <= now + LEASE_MS - 30, "lease {until} too long at {now}");
    // Cut the master off: its lease runs out and reads go through the log.
    let mut lone = c.nodes.remove(&m).expect("master");
    lone.tick(until - 1);
    lone.ready();
    assert!(lone.engine.lease_read_ok(until - 1));
    assert!(!lone.engine.lease_read_ok(until));
}

/// A master that hears from no quorum for an election timeout steps down.
#[test]
fn master_steps_down_without_quorum_contact() {
    let mut c = Cluster::fresh();
    let m = c.elect();
    let mut lone = c.nodes.remove(&m).expect("master");
    let start = c.now_ms;
    let mut t = start;
    while t < start + 2000 && matches!(lone.engine.role(), EngineRole::Leading { .. }) {
        t += 10;
        lone.tick(t);
        lone.ready_durable();
    }
    assert_eq!(lone.engine.role(), EngineRole::Looking);
    assert!(t <= start + 500 + 20, "stepped down only at {t}");
}

/// A follower ignores a proposal with a gap and acks only contiguous, durable entries.
#[test]
fn follower_ignores_a_proposal_after_a_gap() {
    let mut c = Cluster::fresh();
    let m = c.elect();
    let f = if m == 1 { 2 } else { 1 };
    let epoch = c.node(f).engine.hard_state().current_epoch;
    let last = c.node(f).engine.last();
    let now = c.now_ms;
    c.node(f).step(
        now,
        Message::Proposal(Proposal {
            from: m,
            epoch,
            prev: z(epoch, 5),
            entries: vec![entry(z(epoch, 6), "late")],
            commit: Zxid::ZERO,
        }),
    );
    let r = c.node(f).ready();
    assert!(r.persist.is_empty() && r.send_after_persist.is_empty());
    assert_eq!(c.node(f).engine.last(), last);
}

/// A fresh 3-node cluster elects the node with the best vote (all equal: the highest id) and
/// every node applies the same entries in the same order.
#[test]
fn cluster_elects_and_applies_the_same_sequence() {
    let mut c = Cluster::fresh();
    let m = c.elect();
    assert_eq!(m, 3);
    for i in 0..5 {
        c.node(m).engine.propose(Bytes::from(format!("w{i}"))).expect("taken");
        c.deliver();
    }
    let mut applied: BTreeMap<NodeId, Vec<Entry>> = BTreeMap::new();
    c.advance(200);
    for (id, n) in c.nodes.iter_mut() {
        applied.insert(*id, n.log.entries().to_vec());
        assert_eq!(n.engine.applied(), n.engine.commit());
    }
    let first = applied.values().next().expect("nodes").clone();
    assert_eq!(first.len(), 5);
    assert!(applied.values().all(|a| *a == first));
}

/// A master steps down when a looking peer promised the master's own epoch to a rival
/// candidate: that peer can never accept this master's Prepare, and only a higher epoch can
/// win it back (found by the simulator: the peer stayed out of the cluster for good).
#[test]
fn master_steps_down_for_a_peer_promised_to_a_rival_in_its_epoch() {
    let mut c = Cluster::fresh();
    let m = c.elect();
    let f = if m == 1 { 2 } else { 1 };
    let rival = 6 - m - f;
    let epoch = c.node(m).engine.hard_state().current_epoch;
    let now = c.now_ms;
    let mut v = Vote {
        from: f,
        round: 99,
        candidate: f,
        candidate_epoch: epoch - 1,
        candidate_zxid: Zxid::ZERO,
        settled: false,
        accepted_epoch: epoch,
        promised_to: m,
        fresh: false,
    };
    // Promised to this master: it is brought back with a Prepare, no step-down.
    c.node(m).step(now, Message::Vote(v));
    let r = c.node(m).ready();
    assert!(matches!(c.node(m).engine.role(), EngineRole::Leading { .. }));
    assert!(r
        .send_now
        .iter()
        .chain(&r.send_after_persist)
        .any(|(to, msg)| *to == To::Node(f) && matches!(msg, Message::Prepare(_))));
    // Promised to the rival: step down.
    v.promised_to = rival;
    c.node(m).step(now, Message::Vote(v));
    c.node(m).ready();
    assert_eq!(c.node(m).engine.role(), EngineRole::Looking);
}

/// Configuration is refused unless membership is 3, 5 or 7 distinct ids including this node,
/// and the lease fits between a heartbeat and an election timeout.
#[test]
fn config_requires_static_membership_and_consistent_timeouts() {
    assert_eq!(config(1).validate(), Ok(()));
    assert_eq!(EngineConfig::new(1, vec![1, 2, 3, 4, 5]).validate(), Ok(()));
    assert_eq!(
        EngineConfig::new(1, vec![1, 2]).validate(),
        Err(EngineConfigError::Membership(vec![1, 2]))
    );
    assert_eq!(
        EngineConfig::new(1, vec![1, 2, 2]).validate(),
        Err(EngineConfigError::Membership(vec![1, 2, 2]))
    );
    assert_eq!(
        EngineConfig::new(9, vec![1, 2, 3]).validate(),
        Err(EngineConfigError::NotAMember(9))
    );
    let mut c = config(1);
    c.lease_ms = c.election_timeout_ms;
    assert_eq!(c.validate(), Err(EngineConfigError::Timeouts));
    let mut c = config(1);
    c.drift_margin_ms = c.lease_ms - c.heartbeat_interval_ms;
    assert_eq!(c.validate(), Err(EngineConfigError::Drift));
    let mut c = config(1);
    c.batch_entries_max = 0;
    assert_eq!(c.validate(), Err(EngineConfigError::ZeroLimit));
}

/// When the commit point advances, the master multicasts it (the Commit doubles as the Update
/// notification caches listen to) and hands the entry to its own state machine.
#[test]
fn commit_is_multicast_to_all_followers() {
    let mut c = Cluster::fresh();
    let m = c.elect();
    let f = if m == 1 { 2 } else { 1 };
    let epoch = c.node(m).engine.hard_state().current_epoch;
    let master = c.node(m);
    let zx = master.engine.propose(Bytes::from_static(b"w")).expect("taken");
    master.ready_durable();
    master.step(0, Message::Accept(Accept { from: f, epoch, durable: zx, heartbeat: 0 }));
    let r = master.ready();
    assert_eq!(
        r.send_now,
        vec![(
            To::Peers,
            Message::Commit(protocol::message::replication::Commit { from: m, epoch, commit: zx })
        )]
    );
    assert_eq!(r.commits, vec![entry(zx, "w")]);
}

/// A new master counts its own history toward the establishing quorum only once its epoch
/// adoption is durable: a follower's ack alone does not establish it.
#[test]
fn master_counts_itself_only_after_its_epoch_adoption_is_durable() {
    let mut n = leader_in_discovery(log_with(&[entry(z(1, 1), "a")], 1, 1));
    let epoch = n.engine.hard_state().accepted_epoch;
    n.step(
        LEASE_MS,
        Message::PrepareOk(PrepareOk { from: 1, epoch, current_epoch: 1, last_zxid: z(1, 1) }),
    );
    let r = n.ready(); // adoption written, not durable
    n.step(LEASE_MS, Message::Accept(Accept { from: 1, epoch, durable: z(1, 1), heartbeat: 0 }));
    n.ready();
    assert_eq!(n.engine.role(), EngineRole::Leading { epoch, established: false });
    n.engine.persisted(r.persist_seq.expect("seq"));
    assert_eq!(n.engine.role(), EngineRole::Leading { epoch, established: true });
}

fn fresh_vote(from: NodeId, round: u64, candidate: NodeId, settled: bool) -> Vote {
    Vote {
        from,
        round,
        candidate,
        candidate_epoch: 0,
        candidate_zxid: Zxid::ZERO,
        settled,
        accepted_epoch: 0,
        promised_to: 0,
        fresh: true,
    }
}

/// A node that lost its durable state votes for itself only, saying it is fresh; it adopts
/// no one's vote, settles on no one, and answers a Prepare with its vote instead of a
/// promise. A looking voter does not count its vote toward a quorum.
#[test]
fn fresh_node_does_not_vote_until_repaired() {
    let mut n = Node::lost(2, MemLog::new(), 0);
    let r = n.ready();
    assert_eq!(r.send_now, vec![(To::Peers, Message::Vote(fresh_vote(2, 1, 2, false)))]);
    n.step(LEASE_MS, vote(3, 1, 3, 1, z(1, 1)));
    n.step(LEASE_MS, vote(1, 1, 3, 1, z(1, 1)));
    let r = n.ready();
    assert!(r.send_now.is_empty() && r.persist.is_empty(), "{r:?}");
    assert_eq!(n.engine.role(), EngineRole::Looking);
    n.step(LEASE_MS, Message::Prepare(Prepare { from: 3, epoch: 2 }));
    let r = n.ready();
    assert!(r.persist.is_empty() && r.send_after_persist.is_empty(), "promised: {r:?}");
    assert_eq!(r.send_now, vec![(To::Node(3), Message::Vote(fresh_vote(2, 1, 3, true)))]);
    assert_eq!(n.engine.hard_state(), HardState::default());
    assert!(!n.engine.is_voter());

    // A looking voter with the fresh node's "vote" for it has no quorum, and answers.
    let mut v = Node::new(3, log_with(&[], 0, 0), Zxid::ZERO, 0);
    v.ready();
    v.step(LEASE_MS, Message::Vote(Vote { candidate: 3, ..fresh_vote(1, 1, 1, false) }));
    v.tick(LEASE_MS);
    let r = v.ready();
    assert_eq!(v.engine.role(), EngineRole::Looking);
    assert!(r.persist.is_empty(), "led on a fresh vote: {r:?}");
    assert!(r
        .send_now
        .iter()
        .any(|(to, m)| *to == To::Node(1) && matches!(m, Message::Vote(v) if v.from == 3)));
}

/// A fresh node following a master takes its history but adopts no epoch and sends no
/// Accept (after a catch-up, a proposal or a heartbeat): nothing it holds counts toward a
/// commit or a lease.
#[test]
fn fresh_node_accepts_do_not_count_toward_commit() {
    let mut n = Node::lost(2, MemLog::new(), 0);
    n.ready();
    n.step(LEASE_MS, Message::Prepare(Prepare { from: 3, epoch: 4 }));
    n.ready_durable();
    n.step(
        LEASE_MS,
        Message::Sync(Sync {
            from: 3,
            epoch: 4,
            prev: Zxid::ZERO,
            entries: vec![entry(z(4, 1), "a")],
            done: true,
            snapshot: None,
            commit: z(4, 1),
        }),
    );
    let r = n.ready_durable();
    assert_eq!(r.persist, vec![PersistOp::Append(vec![entry(z(4, 1), "a")])]);
    assert!(r.send_after_persist.is_empty(), "acked: {r:?}");
    n.step(
        LEASE_MS,
        Message::Proposal(Proposal {
            from: 3,
            epoch: 4,
            prev: z(4, 1),
            entries: vec![entry(z(4, 2), "b")],
            commit: z(4, 1),
        }),
    );
    let r = n.ready_durable();
    assert_eq!(r.persist, vec![PersistOp::Append(vec![entry(z(4, 2), "b")])]);
    assert!(r.send_after_persist.is_empty(), "acked: {r:?}");
    n.step(
        LEASE_MS,
        Message::Heartbeat(Heartbeat {
            from: 3,
            epoch: 4,
            commit: z(4, 2),
            lease_ms: LEASE_MS as u32,
            seq: 1,
        }),
    );
    let r = n.ready_durable();
    assert!(
        !r.send_now
            .iter()
            .chain(&r.send_after_persist)
            .any(|(_, m)| matches!(m, Message::Accept(_))),
        "acked: {r:?}"
    );
    assert_eq!(n.engine.hard_state(), HardState::default());
    assert!(!n.engine.is_voter());
}

/// The lead's case: A and B commit x; B loses its disk; C lags without x. B and C are a
/// majority, but B must not help C win (C's history would truncate x everywhere). Once A is
/// back, the cluster elects a master holding x and repairs B.
#[test]
fn lost_disk_node_cannot_help_a_lagging_node_win() {
    let x = entry(z(2, 1), "x");
    let a = log_with(&[entry(z(1, 1), "a"), x.clone()], 2, 2);
    let c_log = log_with(&[entry(z(1, 1), "a")], 1, 1);
    let mut c =
        Cluster::new(vec![Node::lost(2, MemLog::new(), 0), Node::new(3, c_log, Zxid::ZERO, 0)]);
    c.advance(3000);
    assert_eq!(c.master(), None);
    assert!(c.nodes.values().all(|n| !matches!(n.engine.role(), EngineRole::Leading { .. })));
    assert_eq!(c.node(3).log.entries(), &[entry(z(1, 1), "a")]);
    assert!(!c.node(2).engine.is_voter());

    c.nodes.insert(1, Node::new(1, a, Zxid::ZERO, c.now_ms));
    let m = c.elect();
    c.advance(500);
    for (id, n) in &c.nodes {
        assert!(n.log.contains(x.zxid), "node {id} (master {m}) lost x");
    }
    assert!(c.node(2).engine.is_voter(), "B not repaired");
}

/// A brand-new cluster: every member fresh and empty. The first election needs every member:
/// two fresh nodes of three elect no one (the third may hold commits they lost); with all
/// three, all become voters and elect.
#[test]
fn new_cluster_bootstraps_when_every_member_is_fresh() {
    let mut c =
        Cluster::new(vec![Node::lost(1, MemLog::new(), 0), Node::lost(2, MemLog::new(), 0)]);
    c.advance(3000);
    assert_eq!(c.master(), None);
    assert!(c.nodes.values().all(|n| !n.engine.is_voter()));

    let mut c = Cluster::new(vec![
        Node::lost(1, MemLog::new(), 0),
        Node::lost(2, MemLog::new(), 0),
        Node::lost(3, MemLog::new(), 0),
    ]);
    assert_eq!(c.elect(), 3);
    for n in c.nodes.values() {
        assert!(n.engine.is_voter());
        assert_ne!(n.engine.hard_state(), HardState::default());
    }
}

/// A fresh node becomes a voter once its catch-up from the master (`done` chunk) is durable
/// and it heard every member's accepted epoch, none above the master's: it then persists the
/// master's epoch (after the entries) and only then acks.
#[test]
fn fresh_node_becomes_voter_after_sync_done() {
    let mut n = Node::lost(2, MemLog::new(), 0);
    n.ready();
    n.step(LEASE_MS, Message::Prepare(Prepare { from: 3, epoch: 4 }));
    n.ready_durable();
    let mut v1 = vote(1, 1, 3, 3, z(3, 1));
    if let Message::Vote(v) = &mut v1 {
        v.settled = true;
        v.accepted_epoch = 4;
    }
    n.step(LEASE_MS, v1);
    n.step(
        LEASE_MS,
        Message::Sync(Sync {
            from: 3,
            epoch: 4,
            prev: Zxid::ZERO,
            entries: vec![entry(z(3, 1), "a")],
            done: true,
            snapshot: None,
            commit: z(3, 1),
        }),
    );
    let r = n.ready();
    assert_eq!(r.persist, vec![PersistOp::Append(vec![entry(z(3, 1), "a")])]);
    assert!(!n.engine.is_voter(), "voter before its history is durable and 3 was heard");
    n.engine.persisted(r.persist_seq.expect("seq"));
    assert!(!n.engine.is_voter(), "voter before hearing node 3's accepted epoch");
    let mut v3 = vote(3, 1, 3, 3, z(3, 1));
    if let Message::Vote(v) = &mut v3 {
        v.settled = true;
        v.accepted_epoch = 4;
        v.promised_to = 3;
    }
    n.step(LEASE_MS, v3);
    let r = n.ready();
    assert!(n.engine.is_voter());
    assert_eq!(
        r.persist,
        vec![PersistOp::HardState(HardState {
            accepted_epoch: 4,
            promised_to: 3,
            current_epoch: 4
        })]
    );
    assert_eq!(
        r.send_after_persist,
        vec![(
            To::Node(3),
            Message::Accept(Accept { from: 2, epoch: 4, durable: z(3, 1), heartbeat: 0 })
        )]
    );
}

/// A fresh node may have promised, before its loss, an epoch it forgot. It learns every
/// member's accepted epoch and is not repaired by a master whose epoch is below one of
/// them: that master's history may lack entries committed in the higher epoch with its help.
#[test]
fn fresh_node_is_not_repaired_below_an_epoch_some_member_promised() {
    let mut n = Node::lost(2, MemLog::new(), 0);
    n.ready();
    n.step(LEASE_MS, Message::Prepare(Prepare { from: 3, epoch: 4 }));
    n.ready_durable();
    let mut v1 = vote(1, 1, 1, 3, z(3, 1));
    if let Message::Vote(v) = &mut v1 {
        v.settled = true;
        v.accepted_epoch = 5;
        v.promised_to = 1;
    }
    n.step(LEASE_MS, v1);
    let mut v3 = vote(3, 1, 3, 3, z(3, 1));
    if let Message::Vote(v) = &mut v3 {
        v.settled = true;
        v.accepted_epoch = 4;
    }
    n.step(LEASE_MS, v3);
    n.step(
        LEASE_MS,
        Message::Sync(Sync {
            from: 3,
            epoch: 4,
            prev: Zxid::ZERO,
            entries: vec![entry(z(3, 1), "a")],
            done: true,
            snapshot: None,
            commit: z(3, 1),
        }),
    );
    let r = n.ready_durable();
    let r2 = n.ready_durable();
    assert!(!n.engine.is_voter());
    assert!(r.send_after_persist.is_empty() && r2.persist.is_empty(), "{r:?} {r2:?}");
    assert_eq!(n.engine.hard_state(), HardState::default());
}

/// Bootstrap counts a member that already became a voter but never promised anything (found
/// by the simulator: one node bootstrapped, the others restarted before they did, and the
/// cluster waited forever for all-fresh votes).
#[test]
fn bootstrap_counts_members_that_never_promised() {
    let mut n = Node::lost(2, MemLog::new(), 0);
    n.ready();
    n.step(10, vote(1, 3, 1, 0, Zxid::ZERO));
    assert!(!n.engine.is_voter());
    n.step(10, Message::Vote(fresh_vote(3, 1, 3, false)));
    let r = n.ready();
    assert!(n.engine.is_voter());
    assert_eq!(r.persist, vec![PersistOp::HardState(HardState::default())]);
}
