//! [`Engine`]: the replication state machine. See the module docs for the protocol.

use super::types::{
    entry, Durability, EngineConfig, EngineConfigError, EngineRole, HardState, LogReader,
    PersistOp, ProposeError, Ready, RestartState, To, LEASE_HEARTBEATS_TRACKED_MAX,
};
use bytes::Bytes;
use protocol::message::replication::{
    Accept, Commit, Entry, Heartbeat, Prepare, PrepareOk, Proposal, Sync, Vote,
};
use protocol::message::Message;
use protocol::{NodeId, Zxid};
use std::collections::{BTreeMap, VecDeque};

/// A vote's sort key: (epoch, last zxid, id), compared in that order (derive order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct VoteKey {
    epoch: u32,
    zxid: Zxid,
    id: NodeId,
}

#[derive(Clone, Debug, Hash)]
struct Looking {
    vote: VoteKey,
    votes: BTreeMap<NodeId, VoteKey>,
    round_started_ms: u64,
    last_broadcast_ms: u64,
}

#[derive(Clone, Debug, Hash)]
struct Following {
    master: NodeId,
    /// The epoch promised to `master`, once its Prepare arrived.
    epoch: Option<u32>,
    /// This node's log holds the master's history (its `done` chunk was taken).
    synced: bool,
    last_contact_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum PeerPhase {
    /// Waiting for its PrepareOk.
    Prepare,
    /// Catching up by Sync chunks.
    Syncing,
    /// Taking proposals.
    Synced,
}

#[derive(Clone, Debug, Hash)]
struct Progress {
    phase: PeerPhase,
    /// The last position the peer reported (PrepareOk), where a resent catch-up starts.
    reported: Zxid,
    /// The highest durable zxid it acknowledged in this epoch.
    acked: Option<Zxid>,
    last_progress_ms: u64,
    last_heard_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum LeaderPhase {
    /// Collecting promises (PrepareOk) from a quorum.
    Discovering,
    /// A quorum promised; bringing followers to this node's history.
    Syncing,
    /// A quorum holds the history durably: writes are taken.
    Established,
}

#[derive(Clone, Debug, Hash)]
struct Leading {
    epoch: u32,
    phase: LeaderPhase,
    started_ms: u64,
    /// Discovery answers: (current epoch, last zxid) per peer.
    oks: BTreeMap<NodeId, (u32, Zxid)>,
    /// This node's last zxid when a quorum promised: committing it establishes the epoch.
    sync_point: Zxid,
    peers: BTreeMap<NodeId, Progress>,
    heartbeat_seq: u64,
    /// (seq, sent at, acks) of recent heartbeats, for the lease.
    heartbeats: VecDeque<(u64, u64, Vec<NodeId>)>,
    lease_until_ms: u64,
    last_heartbeat_ms: u64,
    /// Proposed entries not yet handed out in a Ready.
    batch: Vec<Entry>,
}

#[derive(Clone, Debug, Hash)]
enum State {
    Looking(Looking),
    Following(Following),
    Leading(Box<Leading>),
}

/// A node that lost (or never had) its durable state, until it is a voter again (module docs,
/// "Lost durable state").
#[derive(Clone, Debug, Default, Hash)]
struct Recovery {
    /// Per peer, from its votes since this start: the highest accepted epoch it reported, and
    /// whether it ever reported no history and no promise at all (epochs 0, zxid 0).
    heard: BTreeMap<NodeId, (u32, bool)>,
    last_vote_ms: u64,
    /// The (master, epoch) whose `done` chunk this node took ...
    synced: Option<(NodeId, u32)>,
    /// ... and the persist seq after which that chunk's writes are durable (None: assigned by
    /// the next Ready).
    synced_seq: Option<u64>,
}

#[derive(Clone, Debug, Hash)]
struct PendingPersist {
    seq: u64,
    /// The log's last zxid once this persist is durable (clamped by later truncations).
    last: Zxid,
    hard: Option<HardState>,
}

/// The IO-free replication engine of one node.
#[derive(Clone, Debug)]
pub struct Engine {
    cfg: EngineConfig,
    /// The newest epoch state (maybe not yet durable) and the durable one.
    hard: HardState,
    durable_hard: HardState,
    /// The log's last zxid (written), the last durable one, the commit point, what was handed
    /// out in `commits`.
    last: Zxid,
    durable: Zxid,
    commit: Zxid,
    applied: Zxid,
    /// The highest epoch heard of anywhere; a new master's epoch goes above it.
    max_seen_epoch: u32,
    round: u64,
    state: State,
    /// The follower side of the lease: no promise to anyone but `lease_holder` before
    /// `lease_until_ms`, and to no one at all before `no_promise_until_ms` (a restarted node
    /// forgot whose lease it held).
    lease_holder: NodeId,
    lease_until_ms: u64,
    no_promise_until_ms: u64,
    now_ms: u64,
    persist_seq: u64,
    pending: VecDeque<PendingPersist>,
    out: Ready,
    role_reported: Option<EngineRole>,
    snapshot_wait: Option<Zxid>,
    /// Set while this node is a non-voter (it started [`Durability::Lost`]).
    lost: Option<Box<Recovery>>,
}

/// Hashes the protocol state (not the configuration nor undrained outputs): for model
/// checking, where two engines in the same state must hash alike.
impl std::hash::Hash for Engine {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.hard.hash(h);
        self.durable_hard.hash(h);
        (self.last, self.durable, self.commit, self.applied).hash(h);
        (self.max_seen_epoch, self.round).hash(h);
        self.state.hash(h);
        (self.lease_holder, self.lease_until_ms, self.no_promise_until_ms).hash(h);
        (self.now_ms, self.persist_seq).hash(h);
        self.pending.hash(h);
        self.role_reported.hash(h);
        self.snapshot_wait.hash(h);
        self.lost.hash(h);
    }
}

impl Engine {
    /// Starts a node from what its disk holds ([`Durability::Durable`]). It begins by looking
    /// for a master, and makes no promise for one lease from `now_ms`: it may have acked a
    /// heartbeat just before a crash.
    pub fn new(
        cfg: EngineConfig,
        restart: RestartState,
        log: &dyn LogReader,
        now_ms: u64,
    ) -> Result<Engine, EngineConfigError> {
        Engine::start(cfg, restart, Durability::Durable, log, now_ms)
    }

    /// Starts a node; with [`Durability::Lost`] as a non-voter, which votes for no one,
    /// promises nothing and acks nothing toward a quorum until repaired (module docs).
    pub fn start(
        cfg: EngineConfig,
        restart: RestartState,
        durability: Durability,
        log: &dyn LogReader,
        now_ms: u64,
    ) -> Result<Engine, EngineConfigError> {
        cfg.validate()?;
        assert!(restart.applied <= log.last(), "applied beyond the log");
        let last = log.last();
        let mut engine = Engine {
            hard: restart.hard,
            durable_hard: restart.hard,
            last,
            durable: last,
            commit: restart.applied,
            applied: restart.applied,
            max_seen_epoch: restart.hard.accepted_epoch.max(restart.hard.current_epoch),
            round: 0,
            state: State::Following(Following {
                master: 0,
                epoch: None,
                synced: false,
                last_contact_ms: now_ms,
            }),
            lease_holder: 0,
            lease_until_ms: 0,
            no_promise_until_ms: now_ms + cfg.lease_ms,
            now_ms,
            persist_seq: 0,
            pending: VecDeque::new(),
            out: Ready::default(),
            role_reported: None,
            snapshot_wait: None,
            lost: match durability {
                Durability::Durable => None,
                Durability::Lost => {
                    Some(Box::new(Recovery { last_vote_ms: now_ms, ..Recovery::default() }))
                }
            },
            cfg,
        };
        engine.enter_looking();
        Ok(engine)
    }

    // ---- Queries -------------------------------------------------------------------------

    pub fn id(&self) -> NodeId {
        self.cfg.id
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    pub fn role(&self) -> EngineRole {
        match &self.state {
            State::Looking(_) => EngineRole::Looking,
            State::Following(f) => EngineRole::Following { master: f.master },
            State::Leading(l) => EngineRole::Leading {
                epoch: l.epoch,
                established: l.phase == LeaderPhase::Established,
            },
        }
    }

    /// The master as this node knows it (itself when leading).
    pub fn master(&self) -> Option<NodeId> {
        match &self.state {
            State::Looking(_) => None,
            State::Following(f) => Some(f.master),
            State::Leading(_) => Some(self.cfg.id),
        }
    }

    /// Whether this node votes, promises and counts toward quorums (false until a node that
    /// started [`Durability::Lost`] is repaired).
    pub fn is_voter(&self) -> bool {
        self.lost.is_none()
    }

    pub fn hard_state(&self) -> HardState {
        self.hard
    }

    pub fn commit(&self) -> Zxid {
        self.commit
    }

    /// The last zxid handed out in `commits`.
    pub fn applied(&self) -> Zxid {
        self.applied
    }

    pub fn last(&self) -> Zxid {
        self.last
    }

    pub fn durable(&self) -> Zxid {
        self.durable
    }

    /// Whether the host may answer a linearizable read from its applied state now: this node
    /// is the established master, inside its lease (which already has the drift margin taken
    /// off), and every committed entry was handed out. Otherwise the host orders the read
    /// through the log: it proposes an empty entry and answers once that entry commits.
    pub fn lease_read_ok(&self, now_ms: u64) -> bool {
        match &self.state {
            State::Leading(l) => {
                l.phase == LeaderPhase::Established
                    && now_ms < l.lease_until_ms
                    && self.applied == self.commit
            }
            _ => false,
        }
    }

    /// Until when (host clock) the master's lease holds, if leading.
    pub fn lease_until_ms(&self) -> Option<u64> {
        match &self.state {
            State::Leading(l) => Some(l.lease_until_ms),
            _ => None,
        }
    }

    /// The follower side of the lease: the master this node promised, and until when (host
    /// clock) it promises no other candidate anything.
    pub fn promise(&self) -> (NodeId, u64) {
        (self.lease_holder, self.lease_until_ms)
    }

    // ---- Inputs --------------------------------------------------------------------------

    /// Proposes one client operation. Returns the zxid it will commit at, if it commits.
    pub fn propose(&mut self, data: Bytes) -> Result<Zxid, ProposeError> {
        let master = self.master();
        let State::Leading(l) = &mut self.state else {
            return Err(ProposeError::NotMaster { master });
        };
        if l.phase != LeaderPhase::Established {
            return Err(ProposeError::NotMaster { master: None });
        }
        let assigned = l.batch.last().map(|e| e.zxid).unwrap_or(self.last);
        let next =
            if assigned.epoch() < l.epoch { Some(Zxid::new(l.epoch, 1)) } else { assigned.next() };
        let Some(zxid) = next else {
            // The counter is exhausted: a new epoch renumbers from 1.
            self.enter_looking();
            return Err(ProposeError::NotMaster { master: None });
        };
        let committed_in_epoch =
            if self.commit.epoch() == l.epoch { self.commit.counter() } else { 0 };
        if zxid.counter() - committed_in_epoch > self.cfg.inflight_entries_max {
            return Err(ProposeError::Busy);
        }
        l.batch.push(entry(zxid, data));
        Ok(zxid)
    }

    /// Time passes: drives election rounds, heartbeats, retransmissions and step-downs.
    pub fn tick(&mut self, now_ms: u64, log: &dyn LogReader) {
        self.now_ms = self.now_ms.max(now_ms);
        let now = self.now_ms;
        let timeout = self.cfg.election_timeout_ms;
        match &mut self.state {
            State::Looking(l) => {
                if now >= l.round_started_ms + timeout {
                    self.enter_looking();
                    return;
                }
                if now >= l.last_broadcast_ms + self.cfg.heartbeat_interval_ms {
                    l.last_broadcast_ms = now;
                    self.broadcast_vote();
                }
                self.try_settle();
            }
            State::Following(f) => {
                if now >= f.last_contact_ms + timeout {
                    self.enter_looking();
                    return;
                }
                // A non-voter keeps asking every member for its accepted epoch (votes answer).
                let heard_all = self.heard_from_all();
                if let Some(rec) = &mut self.lost {
                    if !heard_all && now >= rec.last_vote_ms + self.cfg.heartbeat_interval_ms {
                        rec.last_vote_ms = now;
                        self.broadcast_vote();
                    }
                }
            }
            State::Leading(l) => {
                if l.phase != LeaderPhase::Established && now >= l.started_ms + timeout {
                    self.enter_looking();
                    return;
                }
                if l.phase == LeaderPhase::Established {
                    let mut heard: Vec<u64> = l.peers.values().map(|p| p.last_heard_ms).collect();
                    heard.push(now);
                    heard.sort_unstable_by(|a, b| b.cmp(a));
                    if heard[self.cfg.quorum() - 1] + timeout <= now {
                        self.enter_looking();
                        return;
                    }
                }
                if now >= l.last_heartbeat_ms + self.cfg.heartbeat_interval_ms {
                    l.last_heartbeat_ms = now;
                    self.heartbeat(log);
                }
            }
        }
    }

    /// A message arrived from a peer.
    pub fn step(&mut self, now_ms: u64, msg: Message, log: &dyn LogReader) {
        self.now_ms = self.now_ms.max(now_ms);
        match msg {
            Message::Vote(v) => self.on_vote(v, log),
            Message::Prepare(p) => self.on_prepare(p),
            Message::PrepareOk(ok) => self.on_prepare_ok(ok, log),
            Message::Sync(s) => self.on_sync(s, log),
            Message::Proposal(p) => self.on_proposal(p, log),
            Message::Accept(a) => self.on_accept(a),
            Message::Heartbeat(h) => self.on_heartbeat(h),
            Message::Commit(c) => self.on_commit(c),
            // Not replication traffic: the host routes it elsewhere.
            _ => {}
        }
    }

    /// Every persist of the Ready numbered `seq`, and of all earlier ones, is durable.
    pub fn persisted(&mut self, seq: u64) {
        while let Some(p) = self.pending.front() {
            if p.seq > seq {
                break;
            }
            let p = self.pending.pop_front().expect("front exists");
            self.durable = self.durable.max(p.last).min(self.last);
            if let Some(h) = p.hard {
                self.durable_hard = h;
            }
        }
        if matches!(self.state, State::Leading(_)) {
            self.try_commit();
        }
        self.try_repair();
    }

    /// The host installed data files up to `base` (asked by `fetch_snapshot`) and reset its
    /// log to start after it.
    pub fn snapshot_installed(&mut self, base: Zxid) {
        assert!(base >= self.applied, "snapshot {base} below applied {}", self.applied);
        self.snapshot_wait = None;
        self.last = base;
        self.durable = base;
        self.applied = base;
        self.commit = self.commit.max(base);
        for p in &mut self.pending {
            p.last = base;
        }
        if let State::Following(f) = &self.state {
            if let Some(epoch) = f.epoch {
                let master = f.master;
                self.report_position(master, epoch, base);
            }
        }
    }

    /// Collects the outputs of every input since the previous call (see [`Ready`]).
    pub fn ready(&mut self, log: &dyn LogReader) -> Ready {
        self.flush_batch();
        let immediate = self.out.persist.is_empty() && self.pending.is_empty();
        if let Some(rec) = &mut self.lost {
            if rec.synced.is_some() && rec.synced_seq.is_none() && immediate {
                // The `done` chunk changed nothing, and all earlier writes are durable.
                rec.synced_seq = Some(self.persist_seq);
                self.try_repair();
            }
        }
        let target = self.commit.min(self.durable);
        if self.applied < target && self.applied >= log.base() {
            for e in log.entries_after(self.applied, self.cfg.apply_entries_max, usize::MAX) {
                if e.zxid > target {
                    break;
                }
                self.applied = e.zxid;
                self.out.commits.push(e);
            }
        }
        let role = self.role();
        if self.role_reported != Some(role) {
            self.role_reported = Some(role);
            self.out.role = Some(role);
        }
        if !self.out.persist.is_empty() || !self.out.send_after_persist.is_empty() {
            self.persist_seq += 1;
            let hard = self.out.persist.iter().rev().find_map(|op| match op {
                PersistOp::HardState(h) => Some(*h),
                _ => None,
            });
            self.pending.push_back(PendingPersist { seq: self.persist_seq, last: self.last, hard });
            self.out.persist_seq = Some(self.persist_seq);
        }
        if let Some(rec) = &mut self.lost {
            if rec.synced.is_some() && rec.synced_seq.is_none() {
                rec.synced_seq = Some(self.persist_seq);
            }
        }
        std::mem::take(&mut self.out)
    }

    // ---- Election ------------------------------------------------------------------------

    fn self_key(&self) -> VoteKey {
        VoteKey { epoch: self.hard.current_epoch, zxid: self.last, id: self.cfg.id }
    }

    fn enter_looking(&mut self) {
        self.round += 1;
        let vote = self.self_key();
        let mut votes = BTreeMap::new();
        votes.insert(self.cfg.id, vote);
        self.state = State::Looking(Looking {
            vote,
            votes,
            round_started_ms: self.now_ms,
            last_broadcast_ms: self.now_ms,
        });
        self.broadcast_vote();
    }

    fn vote_message(&self) -> Message {
        let (candidate, settled) = match &self.state {
            // A non-voter votes for itself only: its vote then carries its own history.
            State::Looking(_) if self.lost.is_some() => (self.self_key(), false),
            State::Looking(l) => (l.vote, false),
            _ => (
                VoteKey {
                    epoch: self.hard.current_epoch,
                    zxid: self.last,
                    id: self.master().unwrap_or(self.cfg.id),
                },
                true,
            ),
        };
        Message::Vote(Vote {
            from: self.cfg.id,
            round: self.round,
            candidate: candidate.id,
            candidate_epoch: candidate.epoch,
            candidate_zxid: candidate.zxid,
            settled,
            accepted_epoch: self.hard.accepted_epoch,
            promised_to: self.hard.promised_to,
            fresh: self.lost.is_some(),
        })
    }

    fn broadcast_vote(&mut self) {
        let msg = self.vote_message();
        self.out.send_now.push((To::Peers, msg));
    }

    fn on_vote(&mut self, v: Vote, log: &dyn LogReader) {
        if !self.is_peer(v.from) {
            return;
        }
        self.max_seen_epoch = self.max_seen_epoch.max(v.accepted_epoch).max(v.candidate_epoch);
        if let Some(rec) = &mut self.lost {
            // A non-voter counts no vote; it learns what every member promised.
            // No history and no promise ever (a vote's candidate is at least the sender's own
            // history): nothing can have been committed with this member's help.
            let empty =
                v.accepted_epoch == 0 && v.candidate_epoch == 0 && v.candidate_zxid == Zxid::ZERO;
            let heard = rec.heard.entry(v.from).or_insert((0, false));
            heard.0 = heard.0.max(v.accepted_epoch);
            heard.1 |= empty;
            self.try_repair();
            return;
        }
        if v.fresh {
            self.on_fresh_vote(v, log);
            return;
        }
        let key = VoteKey { epoch: v.candidate_epoch, zxid: v.candidate_zxid, id: v.candidate };
        let self_key = self.self_key();
        match &mut self.state {
            State::Looking(l) => {
                if v.settled {
                    return;
                }
                if v.round > self.round {
                    self.round = v.round;
                    l.votes.clear();
                    l.vote = self_key.max(key);
                    l.votes.insert(self.cfg.id, l.vote);
                    l.round_started_ms = self.now_ms;
                    l.last_broadcast_ms = self.now_ms;
                    self.broadcast_vote();
                } else if v.round < self.round {
                    let msg = self.vote_message();
                    self.out.send_now.push((To::Node(v.from), msg));
                    return;
                } else if key > l.vote {
                    l.vote = key;
                    l.votes.insert(self.cfg.id, key);
                    l.last_broadcast_ms = self.now_ms;
                    self.broadcast_vote();
                }
                if let State::Looking(l) = &mut self.state {
                    l.votes.insert(v.from, key);
                }
                self.try_settle();
            }
            State::Following(_) => {}
            State::Leading(l) => {
                if v.settled {
                    return;
                }
                if v.accepted_epoch > l.epoch
                    || (v.accepted_epoch == l.epoch && v.promised_to != self.cfg.id)
                {
                    // It promised a later epoch, or ours to a rival candidate: only a new,
                    // higher epoch can bring it back.
                    self.enter_looking();
                    return;
                }
                if l.phase != LeaderPhase::Discovering {
                    // A looking peer lost us (restart, timeout): bring it back in.
                    let epoch = l.epoch;
                    if let Some(p) = l.peers.get_mut(&v.from) {
                        p.phase = PeerPhase::Prepare;
                    }
                    self.send_prepare(v.from, epoch);
                }
            }
        }
    }

    /// A voter hears a non-voter: it answers with its own vote (carrying its accepted epoch,
    /// which the non-voter must learn from every member), and a master brings it in: Prepare
    /// while it looks, catch-up from its reported position once it follows.
    fn on_fresh_vote(&mut self, v: Vote, log: &dyn LogReader) {
        let reply = self.vote_message();
        self.out.send_now.push((To::Node(v.from), reply));
        let now = self.now_ms;
        let me = self.cfg.id;
        let State::Leading(l) = &mut self.state else {
            return;
        };
        if l.phase == LeaderPhase::Discovering {
            return;
        }
        let epoch = l.epoch;
        let Some(p) = l.peers.get_mut(&v.from) else {
            return;
        };
        p.last_heard_ms = now;
        if v.settled && v.candidate == me {
            if p.phase == PeerPhase::Prepare {
                p.reported = v.candidate_zxid;
                self.send_sync(v.from, v.candidate_zxid, log);
            }
        } else {
            p.phase = PeerPhase::Prepare;
            self.send_prepare(v.from, epoch);
        }
    }

    fn heard_from_all(&self) -> bool {
        self.lost.as_ref().is_some_and(|rec| self.peers().all(|id| rec.heard.contains_key(&id)))
    }

    /// A non-voter becomes a voter (module docs, "Lost durable state"): by bootstrap, when
    /// it has no history and every other member reported none either; or once it holds a
    /// master's history durably (its `done` chunk) and that master's epoch is at least every
    /// epoch any member reported promising. The new epoch state is persisted before anything
    /// that relies on it (the Accept goes after the persist).
    fn try_repair(&mut self) {
        let Some(rec) = &self.lost else {
            return;
        };
        if !self.peers().all(|id| rec.heard.contains_key(&id)) {
            return;
        }
        let no_history = self.hard == HardState::default() && self.last == Zxid::ZERO;
        if no_history && rec.heard.values().all(|(_, empty)| *empty) {
            self.lost = None;
            self.out.persist.push(PersistOp::HardState(self.hard));
            self.enter_looking();
            return;
        }
        let learned = rec
            .heard
            .values()
            .map(|(epoch, _)| *epoch)
            .max()
            .unwrap_or(0)
            .max(self.hard.accepted_epoch);
        let durable =
            rec.synced_seq.is_some_and(|seq| self.pending.front().is_none_or(|p| p.seq > seq));
        let (master, epoch) = match (&self.state, rec.synced) {
            (State::Following(f), Some((m, e)))
                if f.synced && f.master == m && f.epoch == Some(e) && durable && learned <= e =>
            {
                (m, e)
            }
            _ => return,
        };
        self.lost = None;
        self.max_seen_epoch = self.max_seen_epoch.max(epoch);
        self.hard = HardState { accepted_epoch: epoch, promised_to: master, current_epoch: epoch };
        self.out.persist.push(PersistOp::HardState(self.hard));
        self.accept_after_persist(master, epoch);
    }

    /// Ends the round if a quorum votes like this node: lead, or follow the winner.
    fn try_settle(&mut self) {
        if self.lost.is_some() {
            return;
        }
        let State::Looking(l) = &self.state else {
            return;
        };
        let agreeing = l.votes.values().filter(|k| **k == l.vote).count();
        if agreeing < self.cfg.quorum() {
            return;
        }
        let winner = l.vote.id;
        if winner == self.cfg.id {
            // Our own promise must respect a lease we may still hold for another master.
            if self.can_promise_new(self.cfg.id) {
                self.become_leader();
            }
        } else {
            self.state = State::Following(Following {
                master: winner,
                epoch: None,
                synced: false,
                last_contact_ms: self.now_ms,
            });
        }
    }

    fn can_promise_new(&self, candidate: NodeId) -> bool {
        self.now_ms >= self.no_promise_until_ms
            && (self.now_ms >= self.lease_until_ms || self.lease_holder == candidate)
    }

    fn become_leader(&mut self) {
        let highest =
            self.max_seen_epoch.max(self.hard.accepted_epoch).max(self.hard.current_epoch);
        let Some(epoch) = highest.checked_add(1) else {
            // Epochs are exhausted (4 billion elections): no master can be made safely.
            tracing::error!("replication epochs exhausted; this cluster cannot elect a master");
            return;
        };
        self.max_seen_epoch = epoch;
        self.hard.accepted_epoch = epoch;
        self.hard.promised_to = self.cfg.id;
        self.out.persist.push(PersistOp::HardState(self.hard));
        let now = self.now_ms;
        let peers = self
            .peers()
            .map(|id| {
                (
                    id,
                    Progress {
                        phase: PeerPhase::Prepare,
                        reported: Zxid::ZERO,
                        acked: None,
                        last_progress_ms: now,
                        last_heard_ms: now,
                    },
                )
            })
            .collect();
        self.state = State::Leading(Box::new(Leading {
            epoch,
            phase: LeaderPhase::Discovering,
            started_ms: now,
            oks: BTreeMap::new(),
            sync_point: self.last,
            peers,
            heartbeat_seq: 0,
            heartbeats: VecDeque::new(),
            lease_until_ms: 0,
            last_heartbeat_ms: now,
            batch: Vec::new(),
        }));
        // After the persist: our own promise is durable before anyone counts on it.
        self.out
            .send_after_persist
            .push((To::Peers, Message::Prepare(Prepare { from: self.cfg.id, epoch })));
    }

    // ---- Discovery and synchronization (follower side) -----------------------------------

    fn on_prepare(&mut self, p: Prepare) {
        if !self.is_peer(p.from) {
            return;
        }
        self.max_seen_epoch = self.max_seen_epoch.max(p.epoch);
        if self.lost.is_some() {
            // A non-voter promises nothing: it follows the master to be repaired, and answers
            // with its vote (its own history), from which the master starts its catch-up.
            match &mut self.state {
                State::Following(f) if f.master == p.from && f.epoch == Some(p.epoch) => {
                    f.last_contact_ms = self.now_ms;
                }
                _ => {
                    self.state = State::Following(Following {
                        master: p.from,
                        epoch: Some(p.epoch),
                        synced: false,
                        last_contact_ms: self.now_ms,
                    });
                    if let Some(rec) = &mut self.lost {
                        rec.synced = None;
                        rec.synced_seq = None;
                    }
                }
            }
            let msg = self.vote_message();
            self.out.send_now.push((To::Node(p.from), msg));
            return;
        }
        let repeat = p.epoch == self.hard.accepted_epoch && self.hard.promised_to == p.from;
        let fresh = p.epoch > self.hard.accepted_epoch && self.can_promise_new(p.from);
        if !repeat && !fresh {
            // Tell the candidate what we promised, so that its next try goes above it.
            let msg = self.vote_message();
            self.out.send_now.push((To::Node(p.from), msg));
            return;
        }
        if fresh {
            self.hard.accepted_epoch = p.epoch;
            self.hard.promised_to = p.from;
            self.out.persist.push(PersistOp::HardState(self.hard));
        }
        let synced = self.hard.current_epoch == p.epoch;
        match &mut self.state {
            State::Following(f) if f.master == p.from && f.epoch == Some(p.epoch) => {
                f.last_contact_ms = self.now_ms;
            }
            _ => {
                self.state = State::Following(Following {
                    master: p.from,
                    epoch: Some(p.epoch),
                    synced,
                    last_contact_ms: self.now_ms,
                });
            }
        }
        self.out.send_after_persist.push((
            To::Node(p.from),
            Message::PrepareOk(PrepareOk {
                from: self.cfg.id,
                epoch: p.epoch,
                current_epoch: self.hard.current_epoch,
                last_zxid: self.last,
            }),
        ));
    }

    /// If looking but promised to `from` for `epoch`, follow it again (we timed out, it did
    /// not). Returns the follower state when `from` is our master in `epoch`.
    fn follower_of(&mut self, from: NodeId, epoch: u32) -> Option<&mut Following> {
        if matches!(self.state, State::Looking(_))
            && self.hard.accepted_epoch == epoch
            && self.hard.promised_to == from
        {
            self.state = State::Following(Following {
                master: from,
                epoch: Some(epoch),
                synced: self.hard.current_epoch == epoch,
                last_contact_ms: self.now_ms,
            });
        }
        let now = self.now_ms;
        match &mut self.state {
            State::Following(f) if f.master == from && f.epoch == Some(epoch) => {
                f.last_contact_ms = now;
                Some(f)
            }
            _ => None,
        }
    }

    fn report_position(&mut self, master: NodeId, epoch: u32, position: Zxid) {
        self.out.send_now.push((
            To::Node(master),
            Message::PrepareOk(PrepareOk {
                from: self.cfg.id,
                epoch,
                current_epoch: self.hard.current_epoch,
                last_zxid: position,
            }),
        ));
    }

    fn on_sync(&mut self, s: Sync, log: &dyn LogReader) {
        if self.follower_of(s.from, s.epoch).is_none() {
            return;
        }
        if let Some(base) = s.snapshot {
            if log.contains(base) {
                // A stale request (it answered an old position): our history already reaches
                // the master's base; report where we are instead.
                self.report_position(s.from, s.epoch, self.last);
                return;
            }
            if self.snapshot_wait != Some(base) {
                self.snapshot_wait = Some(base);
                self.out.fetch_snapshot = Some((s.from, base));
            }
            return;
        }
        if self.snapshot_wait.is_some() {
            return;
        }
        match self.append_after(s.epoch, s.prev, &s.entries, s.done, log) {
            Err(hint) => self.report_position(s.from, s.epoch, hint),
            Ok(()) if s.done && self.lost.is_some() => {
                // A non-voter adopts no epoch and acks nothing: it is repaired once this is
                // durable (and it heard every member), see `try_repair`.
                if let State::Following(f) = &mut self.state {
                    f.synced = true;
                }
                self.commit = self.commit.max(s.commit.min(self.last));
                if let Some(rec) = &mut self.lost {
                    if rec.synced != Some((s.from, s.epoch)) {
                        rec.synced = Some((s.from, s.epoch));
                        rec.synced_seq = None;
                    }
                }
            }
            Ok(()) if s.done => {
                if self.hard.current_epoch != s.epoch {
                    self.hard.current_epoch = s.epoch;
                    self.out.persist.push(PersistOp::HardState(self.hard));
                }
                if let State::Following(f) = &mut self.state {
                    f.synced = true;
                }
                self.commit = self.commit.max(s.commit.min(self.last));
                self.accept_after_persist(s.from, s.epoch);
            }
            Ok(()) => self.report_position(s.from, s.epoch, self.last),
        }
    }

    fn on_proposal(&mut self, p: Proposal, log: &dyn LogReader) {
        match self.follower_of(p.from, p.epoch) {
            Some(f) if f.synced => {}
            _ => return,
        }
        // A gap (lost proposal) is repaired by the master's retransmission from our ack.
        if self.append_after(p.epoch, p.prev, &p.entries, false, log).is_ok() {
            self.commit = self.commit.max(p.commit.min(self.last));
            self.accept_after_persist(p.from, p.epoch);
        }
    }

    fn accept_after_persist(&mut self, master: NodeId, epoch: u32) {
        if self.lost.is_some() {
            // A non-voter's acks must not count toward any quorum: it sends none.
            return;
        }
        self.out.send_after_persist.push((
            To::Node(master),
            Message::Accept(Accept { from: self.cfg.id, epoch, durable: self.last, heartbeat: 0 }),
        ));
    }

    /// Makes the log hold `entries` after `prev`: keeps what it shares with them, truncates a
    /// divergent tail from the first difference, appends the rest; with `exact` (the last
    /// catch-up chunk of `epoch`), also drops an older-epoch tail after them. `Err(hint)`: `prev` is not in this history; `hint` is the largest
    /// zxid below it that is.
    ///
    /// Two histories that both hold a zxid agree up to it: within an epoch one master numbers
    /// entries, and a log only ever loses a suffix.
    fn append_after(
        &mut self,
        epoch: u32,
        prev: Zxid,
        entries: &[Entry],
        exact: bool,
        log: &dyn LogReader,
    ) -> Result<(), Zxid> {
        debug_assert_eq!(log.last(), self.last, "host did not apply earlier persists");
        if !log.contains(prev) {
            return Err(log.floor(prev));
        }
        let mut matched = prev;
        let mut i = 0;
        while i < entries.len() && entries[i].zxid <= self.last && log.contains(entries[i].zxid) {
            matched = entries[i].zxid;
            i += 1;
        }
        // With `exact`, what follows the chunk is dropped only if it is from an older epoch:
        // entries of `epoch` come from this master (a reordered, stale `done` chunk must not
        // drop them), and none can follow an older divergent entry (they are appended only
        // after a matching prefix).
        let stale_tail = exact
            && log
                .entries_after(matched, 1, 0)
                .first()
                .is_some_and(|next| next.zxid.epoch() < epoch);
        let divergent_tail = self.last > matched && (i < entries.len() || stale_tail);
        if divergent_tail {
            // Nothing committed can be in it: the master's history holds all committed entries.
            assert!(
                matched >= self.applied,
                "node {} truncating after {matched} below applied {}",
                self.cfg.id,
                self.applied
            );
            self.out.persist.push(PersistOp::TruncateAfter(matched));
            self.last = matched;
            self.durable = self.durable.min(matched);
            for p in &mut self.pending {
                p.last = p.last.min(matched);
            }
        }
        if i < entries.len() {
            let rest = entries[i..].to_vec();
            debug_assert!(rest.windows(2).all(|w| w[0].zxid < w[1].zxid));
            self.last = rest.last().expect("non-empty").zxid;
            self.out.persist.push(PersistOp::Append(rest));
        }
        Ok(())
    }

    fn on_heartbeat(&mut self, h: Heartbeat) {
        let durable_in_epoch = self.durable_hard.current_epoch == h.epoch;
        let Some(f) = self.follower_of(h.from, h.epoch) else {
            return;
        };
        let synced = f.synced;
        self.lease_holder = h.from;
        self.lease_until_ms = self.lease_until_ms.max(self.now_ms + u64::from(h.lease_ms));
        if synced {
            self.commit = self.commit.max(h.commit.min(self.last));
        }
        if synced && durable_in_epoch && self.lost.is_none() {
            self.out.send_now.push((
                To::Node(h.from),
                Message::Accept(Accept {
                    from: self.cfg.id,
                    epoch: h.epoch,
                    durable: self.durable,
                    heartbeat: h.seq,
                }),
            ));
        }
    }

    fn on_commit(&mut self, c: Commit) {
        if let Some(f) = self.follower_of(c.from, c.epoch) {
            if f.synced {
                self.commit = self.commit.max(c.commit.min(self.last));
            }
        }
    }

    // ---- Master side ---------------------------------------------------------------------

    fn send_prepare(&mut self, to: NodeId, epoch: u32) {
        let msg = Message::Prepare(Prepare { from: self.cfg.id, epoch });
        if self.durable_hard.accepted_epoch == epoch {
            self.out.send_now.push((To::Node(to), msg));
        } else {
            self.out.send_after_persist.push((To::Node(to), msg));
        }
    }

    fn on_prepare_ok(&mut self, ok: PrepareOk, log: &dyn LogReader) {
        let now = self.now_ms;
        let State::Leading(l) = &mut self.state else {
            return;
        };
        if ok.epoch != l.epoch {
            return;
        }
        let Some(p) = l.peers.get_mut(&ok.from) else {
            return;
        };
        p.last_heard_ms = now;
        p.reported = ok.last_zxid;
        p.phase = PeerPhase::Syncing;
        if l.phase == LeaderPhase::Discovering {
            l.oks.insert(ok.from, (ok.current_epoch, ok.last_zxid));
            if l.oks.len() + 1 < self.cfg.quorum() {
                return;
            }
            let mine = (self.hard.current_epoch, self.last);
            if l.oks.values().any(|theirs| *theirs > mine) {
                // A promiser has a newer history, which may hold committed entries we lack:
                // give way; the next election sees its better vote.
                self.enter_looking();
                return;
            }
            l.phase = LeaderPhase::Syncing;
            l.sync_point = self.last;
            let targets: Vec<(NodeId, Zxid)> = l.oks.iter().map(|(id, v)| (*id, v.1)).collect();
            self.hard.current_epoch = l.epoch;
            self.out.persist.push(PersistOp::HardState(self.hard));
            for (id, position) in targets {
                self.send_sync(id, position, log);
            }
        } else {
            self.send_sync(ok.from, ok.last_zxid, log);
        }
    }

    /// Sends the next catch-up chunk to `to`, whose history reaches `position`.
    fn send_sync(&mut self, to: NodeId, position: Zxid, log: &dyn LogReader) {
        let State::Leading(l) = &mut self.state else {
            return;
        };
        let prev = if log.contains(position) { position } else { log.floor(position) };
        let (msg, phase) = if prev < log.base() {
            (
                Sync {
                    from: self.cfg.id,
                    epoch: l.epoch,
                    prev: log.base(),
                    entries: Vec::new(),
                    done: false,
                    snapshot: Some(log.base()),
                    commit: self.commit,
                },
                PeerPhase::Syncing,
            )
        } else {
            let entries =
                log.entries_after(prev, self.cfg.sync_entries_max, self.cfg.batch_bytes_max);
            let end = entries.last().map(|e| e.zxid).unwrap_or(prev);
            let done = end == self.last;
            (
                Sync {
                    from: self.cfg.id,
                    epoch: l.epoch,
                    prev,
                    entries,
                    done,
                    snapshot: None,
                    commit: self.commit,
                },
                if done { PeerPhase::Synced } else { PeerPhase::Syncing },
            )
        };
        if let Some(p) = l.peers.get_mut(&to) {
            p.phase = phase;
            p.last_progress_ms = self.now_ms;
        }
        self.out.send_now.push((To::Node(to), Message::Sync(msg)));
    }

    fn on_accept(&mut self, a: Accept) {
        let now = self.now_ms;
        let State::Leading(l) = &mut self.state else {
            return;
        };
        if a.epoch != l.epoch || l.phase == LeaderPhase::Discovering {
            return;
        }
        let Some(p) = l.peers.get_mut(&a.from) else {
            return;
        };
        p.last_heard_ms = now;
        p.phase = PeerPhase::Synced;
        if p.acked.is_none_or(|acked| a.durable > acked) {
            p.acked = Some(a.durable);
            p.last_progress_ms = now;
        }
        if a.heartbeat != 0 {
            let quorum = self.cfg.quorum();
            if let Some((_, sent_ms, acks)) =
                l.heartbeats.iter_mut().find(|(seq, _, _)| *seq == a.heartbeat)
            {
                if !acks.contains(&a.from) {
                    acks.push(a.from);
                }
                if acks.len() + 1 >= quorum {
                    let until = *sent_ms + self.cfg.lease_ms - self.cfg.drift_margin_ms;
                    l.lease_until_ms = l.lease_until_ms.max(until);
                }
            }
        }
        self.try_commit();
    }

    /// Commits the highest zxid a quorum holds durably in this epoch (at least the sync point:
    /// committing it establishes the epoch).
    fn try_commit(&mut self) {
        let State::Leading(l) = &mut self.state else {
            return;
        };
        if l.phase == LeaderPhase::Discovering {
            return;
        }
        let mut acks: Vec<Zxid> = l.peers.values().filter_map(|p| p.acked).collect();
        if self.durable_hard.current_epoch == l.epoch {
            acks.push(self.durable);
        }
        let quorum = self.cfg.quorum();
        if acks.len() < quorum {
            return;
        }
        acks.sort_unstable_by(|a, b| b.cmp(a));
        let held = acks[quorum - 1];
        if held < l.sync_point || (held <= self.commit && l.phase == LeaderPhase::Established) {
            return;
        }
        l.phase = LeaderPhase::Established;
        if held > self.commit {
            self.commit = held;
            let epoch = l.epoch;
            self.out.send_now.push((
                To::Peers,
                Message::Commit(Commit { from: self.cfg.id, epoch, commit: held }),
            ));
        }
    }

    fn heartbeat(&mut self, log: &dyn LogReader) {
        let now = self.now_ms;
        let retransmit_ms = 2 * self.cfg.heartbeat_interval_ms;
        let timeout = self.cfg.election_timeout_ms;
        let State::Leading(l) = &mut self.state else {
            return;
        };
        let epoch = l.epoch;
        if l.phase == LeaderPhase::Discovering {
            let waiting: Vec<NodeId> =
                l.peers.keys().filter(|id| !l.oks.contains_key(id)).copied().collect();
            for id in waiting {
                self.send_prepare(id, epoch);
            }
            return;
        }
        l.heartbeat_seq += 1;
        l.heartbeats.push_back((l.heartbeat_seq, now, Vec::new()));
        if l.heartbeats.len() > LEASE_HEARTBEATS_TRACKED_MAX {
            l.heartbeats.pop_front();
        }
        self.out.send_now.push((
            To::Peers,
            Message::Heartbeat(Heartbeat {
                from: self.cfg.id,
                epoch,
                commit: self.commit,
                lease_ms: u32::try_from(self.cfg.lease_ms).unwrap_or(u32::MAX),
                seq: l.heartbeat_seq,
            }),
        ));
        let mut prepare = Vec::new();
        let mut resync = Vec::new();
        let mut resend = Vec::new();
        for (id, p) in l.peers.iter_mut() {
            match p.phase {
                PeerPhase::Prepare => prepare.push(*id),
                PeerPhase::Syncing if now >= p.last_progress_ms + retransmit_ms => {
                    resync.push((*id, p.reported))
                }
                PeerPhase::Syncing => {}
                PeerPhase::Synced if now >= p.last_heard_ms + timeout => {
                    p.phase = PeerPhase::Prepare;
                    prepare.push(*id);
                }
                PeerPhase::Synced if p.acked.is_none() => {
                    // Its last catch-up chunk may be lost: resend it.
                    if now >= p.last_progress_ms + retransmit_ms {
                        resync.push((*id, p.reported));
                    }
                }
                PeerPhase::Synced => {
                    let from = p.acked.unwrap_or(p.reported);
                    if from < self.last && now >= p.last_progress_ms + retransmit_ms {
                        p.last_progress_ms = now;
                        resend.push((*id, from));
                    }
                }
            }
        }
        for id in prepare {
            self.send_prepare(id, epoch);
        }
        for (id, position) in resync {
            self.send_sync(id, position, log);
        }
        for (id, from) in resend {
            if from < log.base() {
                if let State::Leading(l) = &mut self.state {
                    if let Some(p) = l.peers.get_mut(&id) {
                        p.phase = PeerPhase::Prepare;
                    }
                }
                self.send_prepare(id, epoch);
                continue;
            }
            let entries =
                log.entries_after(from, self.cfg.sync_entries_max, self.cfg.batch_bytes_max);
            self.out.send_now.push((
                To::Node(id),
                Message::Proposal(Proposal {
                    from: self.cfg.id,
                    epoch,
                    prev: from,
                    entries,
                    commit: self.commit,
                }),
            ));
        }
    }

    /// Hands the proposed entries out: persist locally, multicast as proposals of at most
    /// `batch_entries_max` entries / `batch_bytes_max` bytes. Followers persist in parallel.
    fn flush_batch(&mut self) {
        let State::Leading(l) = &mut self.state else {
            return;
        };
        if l.batch.is_empty() {
            return;
        }
        let epoch = l.epoch;
        let batch = std::mem::take(&mut l.batch);
        let mut chunk: Vec<Entry> = Vec::new();
        let mut chunk_bytes = 0usize;
        let mut chunks = Vec::new();
        for e in batch {
            if !chunk.is_empty()
                && (chunk.len() >= self.cfg.batch_entries_max
                    || chunk_bytes + e.data.len() > self.cfg.batch_bytes_max)
            {
                chunks.push(std::mem::take(&mut chunk));
                chunk_bytes = 0;
            }
            chunk_bytes += e.data.len();
            chunk.push(e);
        }
        chunks.push(chunk);
        for chunk in chunks {
            let prev = self.last;
            self.last = chunk.last().expect("non-empty chunk").zxid;
            self.out.persist.push(PersistOp::Append(chunk.clone()));
            self.out.send_now.push((
                To::Peers,
                Message::Proposal(Proposal {
                    from: self.cfg.id,
                    epoch,
                    prev,
                    entries: chunk,
                    commit: self.commit,
                }),
            ));
        }
    }

    // ---- Helpers -------------------------------------------------------------------------

    fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        let me = self.cfg.id;
        self.cfg.members.iter().copied().filter(move |id| *id != me)
    }

    fn is_peer(&self, id: NodeId) -> bool {
        id != self.cfg.id && self.cfg.members.contains(&id)
    }
}
