//! The node core: the replication [`Engine`], the data log, the store and the
//! [`StateMachine`], the master's [`LeaseKeeper`] and the snapshot schedule, composed without
//! IO of their own.
//!
//! The core holds no socket, task or clock. Its inputs, each with the time on the host's clock
//! (`now_ms`, read by the host for every input):
//! - [`Core::tick`] every [`TICK_MS`](super::TICK_MS);
//! - [`Core::step`] with one replication message from a member;
//! - [`Core::command`] with one [`Cmd`] from a request task (a proposal, a linearizable read,
//!   a lock renewal, a snapshot for a transfer, a restart);
//! - [`Core::durable_changed`] when the data log's group commit moved;
//! - [`Core::snapshot_done`] when a snapshot finished off the core.
//!
//! Its outputs: messages in [`Core::take_outbox`] (the host sends them in order), work for the
//! host in [`Core::take_effects`] (finish a snapshot on a blocking thread, fetch data files
//! from a peer), answers to the [`Waiter`]s of proposals (oneshot channels), and the state the
//! request tasks read in [`Shared`] (the applied zxid under its lock, the status).
//!
//! The file system comes from outside too: the data log and the store are opened on a
//! [`Vfs`](crate::storage::Vfs) ([`super::start`]), so the same core runs on the operating
//! system's disk in `shoal-fs` and on a simulated one in `shoal-sim`.
//!
//! # Order of effects (what the host may rely on)
//! Each input is followed by [`Core::drain`]: the engine's `Ready`s are carried out in order.
//! Appends are written to the log at once and become durable with its group commit; a hard
//! state (epoch promise) is written through the log, which makes it durable together with
//! everything appended before it, so that the engine's order (entries, then the epoch that
//! depends on them) holds on disk. `send_now` goes to the outbox at once, `send_after_persist`
//! once the log's durable zxid covers the Ready. Commits are applied in zxid order; on the
//! master their notices (UpdateNotice, LockChanged) go to the group.

use super::shared::{wire_role, Shared};
use super::snapshot::{self, SnapshotDir};
use super::transfer;
use super::{NodeBackend, NodeError, READY_ROUNDS_MAX};
use crate::locks::{LeaseConfig, LeaseKeeper};
use crate::replication::{Engine, EngineRole, PersistOp, ProposeError, Ready, To};
use crate::state::{Command, Outcome, StateMachine};
use crate::storage::DiskStore;
use bytes::Bytes;
use cache_server::{Server, ServerError};
use protocol::message::data::{ErrorCode, KeyStat, Role, UpdateNotice, WireError};
use protocol::message::lock::LockGrant;
use protocol::message::Message;
use protocol::{NodeId, SenderId, Zxid};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::oneshot;

use super::disk::LogView;

/// What a proposal's proposer waits for.
pub(crate) enum Waiter {
    Write(oneshot::Sender<Result<Zxid, ServerError>>),
    Lock(oneshot::Sender<Result<LockGrant, WireError>>),
    /// An empty entry ordering a linearizable read.
    Barrier(oneshot::Sender<Result<Zxid, ServerError>>),
}

impl Waiter {
    fn fail(self, master: Option<NodeId>, unknown: bool) {
        let detail = if unknown {
            "the master changed before this command committed; its outcome is unknown (a \
             retry with the same request id applies it at most once)"
        } else {
            "this node is not the master"
        };
        match self {
            Waiter::Write(tx) | Waiter::Barrier(tx) => {
                let e = if unknown {
                    ServerError::Unavailable(detail.into())
                } else {
                    ServerError::NotMaster { master }
                };
                let _ = tx.send(Err(e));
            }
            Waiter::Lock(tx) => {
                let code =
                    if unknown { ErrorCode::Unavailable } else { ErrorCode::NotMaster { master } };
                let _ = tx.send(Err(WireError { code, message: detail.into() }));
            }
        }
    }
}

/// Commands from request tasks to the core.
pub(crate) enum Cmd {
    Propose {
        data: Bytes,
        waiter: Waiter,
    },
    Linearizable(oneshot::Sender<Result<Zxid, ServerError>>),
    Renew {
        client: SenderId,
        session: u64,
        locks: Vec<(String, i32)>,
        reply: oneshot::Sender<Result<LockGrant, WireError>>,
    },
    /// A snapshot to send or copy: a fresh one, or the pinned one while a transfer runs.
    Snapshot(oneshot::Sender<Result<(SnapshotDir, transfer::PinGuard), String>>),
    /// A fetched snapshot is in `snapshots/`: reset the log to it and restart.
    Installed(Zxid),
    /// Restart in-process (a fetch gave up; a fresh engine asks again).
    Restart,
    /// The metadata of a key, read between two applied entries (the ephemeral owner is in
    /// the state machine's session table, which only the core holds).
    Stat {
        key: String,
        reply: oneshot::Sender<cache_server::Snapshot<Option<KeyStat>>>,
    },
}

/// How one run of the node ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    Shutdown,
    Restart,
}

/// A message for the host to send, in order.
#[derive(Debug)]
pub(crate) enum Out {
    /// On the group's reliable multicast stream.
    Group(Message),
    /// To the group, best effort (FSLive).
    GroupUnreliable(Message),
    /// To one member, best effort (the engine repairs losses).
    Node(NodeId, Message),
}

/// Work the core hands to its host.
pub(crate) enum Effect {
    /// Finish a snapshot off the core (hashing, manifest, rename), then call
    /// [`Core::snapshot_done`] with the result.
    FinishSnapshot { pending: snapshot::Pending, previous: Option<SnapshotDir> },
    /// This node is behind the master's log: fetch the data files from a peer
    /// ([`transfer::start_fetch`]).
    Fetch { donor: NodeId, base: Zxid, applied: Zxid },
}

/// (persist_seq, the log zxid whose durability covers it, what to send once it is durable).
type AwaitingDurable = (u64, Zxid, Vec<(To, Message)>);

/// The node core (see the module docs).
pub(crate) struct Core {
    pub(super) data_dir: PathBuf,
    pub(super) engine: Engine,
    pub(super) log: LogView,
    pub(super) sm: StateMachine<Arc<DiskStore>>,
    pub(super) shared: Arc<Shared>,
    pub(super) server: Arc<Server<NodeBackend>>,
    /// Messages for the host to send, in order.
    pub(super) outbox: Vec<Out>,
    /// Work for the host.
    pub(super) effects: Vec<Effect>,
    pub(super) pending: HashMap<Zxid, Waiter>,
    /// Readys whose persist is not yet durable: (persist_seq, log zxid that covers it, what to
    /// send once it is).
    pub(super) persists: VecDeque<AwaitingDurable>,
    pub(super) keeper: Option<LeaseKeeper>,
    /// The zxid of this master's Takeover record; the lease keeper starts when it applies.
    pub(super) takeover: Option<Zxid>,
    pub(super) lease_config: LeaseConfig,
    /// The host's clock at the input being handled.
    pub(super) now_ms: u64,
    /// The last commit mark written to the log.
    pub(super) marked_commit: Zxid,
    pub(super) snaps: Snapshots,
}

/// The core's snapshot schedule (see the node's Durability and restart).
pub(crate) struct Snapshots {
    pub every_entries: u64,
    pub every_bytes: u64,
    /// The log kept below a snapshot ends at this many bytes (`log_retention_bytes`) or
    /// `log_retention_entries` entries, whichever comes first.
    pub retention_bytes: u64,
    /// Applied since the last snapshot.
    pub entries_since: u64,
    pub bytes_since: u64,
    pub last: Option<SnapshotDir>,
    /// A snapshot is being finished off the core.
    pub running: bool,
    /// Transfers waiting for the running snapshot.
    pub waiters: Vec<oneshot::Sender<Result<(SnapshotDir, transfer::PinGuard), String>>>,
}

impl Core {
    /// Time moves on: the engine's timers and the lock and session leases.
    pub fn tick(&mut self, now_ms: u64) -> Result<(), NodeError> {
        self.now_ms = now_ms;
        self.engine.tick(now_ms, &self.log);
        self.tick_leases(now_ms);
        self.drain()
    }

    /// One replication message from a member. The engine's next input must see this one's
    /// persists in the log, so every message is followed by its Ready.
    pub fn step(&mut self, now_ms: u64, message: Message) -> Result<(), NodeError> {
        self.now_ms = now_ms;
        self.engine.step(now_ms, message, &self.log);
        self.drain()
    }

    /// A batch of replication messages, the clock read for each: a message handled after the
    /// ones before it (their fsyncs, their applies) must be judged by the time it is handled,
    /// not by a reading taken before them, or a heartbeat handled late gives a promise (and a
    /// last contact) that ends in the past (issue 14 point 5).
    pub fn step_batch(
        &mut self,
        clock: &mut dyn FnMut() -> u64,
        messages: impl Iterator<Item = Message>,
    ) -> Result<(), NodeError> {
        for message in messages {
            self.step(clock(), message)?;
        }
        Ok(())
    }

    /// One command from a request task; `Some` when the run must end (restart).
    pub fn command(&mut self, now_ms: u64, cmd: Cmd) -> Result<Option<Exit>, NodeError> {
        self.now_ms = now_ms;
        match cmd {
            Cmd::Snapshot(reply) => self.snapshot_for(reply),
            Cmd::Installed(zxid) => {
                tracing::info!(%zxid, "data files installed: resetting the log and restarting");
                self.log.log().reset(zxid)?;
                self.fail_pending(true);
                return Ok(Some(Exit::Restart));
            }
            Cmd::Restart => {
                self.fail_pending(true);
                return Ok(Some(Exit::Restart));
            }
            Cmd::Propose { data, waiter } => self.propose(data, Some(waiter)),
            Cmd::Stat { key, reply } => {
                let applied = *self.shared.applied.read().expect("applied lock poisoned");
                let value = self.shared.store.stat_meta(&key).map(|(zxid, is_dir, size)| KeyStat {
                    zxid,
                    is_dir,
                    size,
                    ephemeral: self.sm.tables().sessions.owner(&key),
                });
                let _ = reply.send(cache_server::Snapshot { value, applied });
            }
            Cmd::Linearizable(tx) => {
                if self.engine.lease_read_ok(now_ms) {
                    let _ = tx.send(Ok(self.engine.commit()));
                } else if self.is_master() {
                    self.propose(Bytes::new(), Some(Waiter::Barrier(tx)));
                } else {
                    let _ = tx.send(Err(ServerError::NotMaster { master: self.engine.master() }));
                }
            }
            Cmd::Renew { client, session, locks, reply } => {
                let renewed = self.renew(now_ms, client, session, &locks);
                let _ = reply.send(renewed.map(|lease_ms| LockGrant::Renewed { lease_ms }));
            }
        }
        self.drain()?;
        Ok(None)
    }

    /// The data log's group commit moved (or failed: then the node must stop).
    pub fn durable_changed(&mut self, failed: bool) -> Result<(), NodeError> {
        self.shared.metrics.log_fsyncs.inc();
        if failed {
            return Err(NodeError::Other(
                "the data log can no longer sync (fsync failed); restart the node".into(),
            ));
        }
        self.drain()
    }

    /// The run ends: every waiting proposer learns that its outcome is unknown.
    pub fn shutdown(&mut self) {
        self.fail_pending(true);
    }

    /// Messages to send, in order.
    pub fn take_outbox(&mut self) -> Vec<Out> {
        std::mem::take(&mut self.outbox)
    }

    /// Work for the host, in order.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// Takes a snapshot when one is due and no transfer holds one.
    pub fn maybe_snapshot(&mut self) {
        let s = &self.snaps;
        let due = s.entries_since >= s.every_entries || s.bytes_since >= s.every_bytes;
        if !due || s.running || self.shared.transfers.busy() || self.shared.transfers.fetching() {
            return;
        }
        if let Err(e) = self.begin_snapshot() {
            tracing::error!("snapshot failed: {e}");
            // Try again after another interval rather than at every loop.
            self.snaps.entries_since = 0;
            self.snaps.bytes_since = 0;
        }
    }

    /// The consistent part of a snapshot, on the core (store and tables at one zxid): the
    /// store is frozen (its active segment sealed), its files hard-linked with the tables into
    /// a `.tmp` directory, and unfrozen; hashing, the manifest and the rename run off the core
    /// ([`Effect::FinishSnapshot`]).
    fn begin_snapshot(&mut self) -> Result<(), String> {
        let zxid = *self.shared.applied.read().expect("applied lock poisoned");
        let pending = snapshot::take(&self.data_dir, &self.shared.store, self.sm.tables(), zxid)?;
        self.snaps.running = true;
        self.snaps.entries_since = 0;
        self.snaps.bytes_since = 0;
        tracing::info!(%zxid, files = pending.names.len(), "snapshot started");
        let previous = self.snaps.last.clone();
        self.effects.push(Effect::FinishSnapshot { pending, previous });
        Ok(())
    }
    /// A snapshot finished off the core: log retention, older snapshots go, waiters answered.
    pub fn snapshot_done(&mut self, done: Result<SnapshotDir, String>) -> Result<(), NodeError> {
        self.snaps.running = false;
        match &done {
            Ok(snap) => {
                self.shared.metrics.snapshots.inc();
                self.shared
                    .metrics
                    .snapshot_zxid
                    .store(snap.zxid.0, std::sync::atomic::Ordering::Relaxed);
                self.snaps.last = Some(snap.clone());
                let pinned = self.shared.transfers.pinned();
                let released = if pinned.is_empty() {
                    self.log.release_through(snap.zxid, self.snaps.retention_bytes)?
                } else {
                    0
                };
                let pruned = snapshot::prune(&self.data_dir, snap.zxid, &pinned)
                    .map_err(NodeError::Other)?;
                tracing::info!(zxid = %snap.zxid, log_segments_released = released,
                    snapshots_removed = pruned, log_base = %self.log.log().start_zxid(),
                    "snapshot done");
            }
            Err(e) => {
                tracing::error!("snapshot failed: {e}");
                // Remove the unfinished `.tmp` directory now rather than at the next start.
                if let Err(e) = snapshot::list(&self.data_dir, true) {
                    tracing::warn!("cleaning up after the failed snapshot: {e}");
                }
            }
        }
        for waiter in self.snaps.waiters.drain(..) {
            let pinned = done.clone().map(|s| {
                let pin = transfer::PinGuard::new(&self.shared.transfers, s.zxid);
                (s, pin)
            });
            let _ = waiter.send(pinned);
        }
        Ok(())
    }

    /// A transfer asks for a snapshot: the pinned one while a transfer runs, the latest if
    /// nothing was applied since, else a fresh one.
    fn snapshot_for(
        &mut self,
        reply: oneshot::Sender<Result<(SnapshotDir, transfer::PinGuard), String>>,
    ) {
        let applied = *self.shared.applied.read().expect("applied lock poisoned");
        let pinned = self.shared.transfers.pinned();
        if let Some(last) = &self.snaps.last {
            if last.zxid == applied || pinned.contains(&last.zxid) {
                let pin = transfer::PinGuard::new(&self.shared.transfers, last.zxid);
                let _ = reply.send(Ok((last.clone(), pin)));
                return;
            }
        }
        if !self.snaps.running {
            if let Err(e) = self.begin_snapshot() {
                let _ = reply.send(Err(e));
                return;
            }
        }
        self.snaps.waiters.push(reply);
    }

    fn send(&mut self, to: To, message: Message) {
        let out = match to {
            To::Peers => Out::Group(message),
            To::Node(id) => Out::Node(id, message),
        };
        self.outbox.push(out);
    }

    /// Carries out the engine's Readys (see the module's Order of effects).
    pub fn drain(&mut self) -> Result<(), NodeError> {
        let result = self.drain_ready();
        // Record the commit point in the log (it rides with the next group sync): a restart
        // then knows how far the rebuilt store must get before it serves reads.
        let commit = self.engine.commit().min(self.engine.applied());
        if commit > self.marked_commit {
            self.log.log().mark_commit(commit)?;
            self.marked_commit = commit;
        }
        result
    }

    fn drain_ready(&mut self) -> Result<(), NodeError> {
        for _ in 0..READY_ROUNDS_MAX {
            self.check_persisted();
            let ready: Ready = self.engine.ready(&self.log);
            if ready.is_empty() {
                return Ok(());
            }
            for op in ready.persist {
                match op {
                    PersistOp::Append(entries) => self.log.append(&entries)?,
                    PersistOp::TruncateAfter(zxid) => self.log.truncate_after(zxid)?,
                    PersistOp::HardState(hard) => {
                        // Through the log: durable together with every entry appended before
                        // it, so a power loss never leaves the epoch without its entries.
                        self.log.log().persist(&[PersistOp::HardState(hard)])?;
                    }
                }
            }
            for (to, message) in ready.send_now {
                self.send(to, message);
            }
            if let Some(seq) = ready.persist_seq {
                let covers = self.log.log().last_zxid();
                self.persists.push_back((seq, covers, ready.send_after_persist));
            }
            if !ready.commits.is_empty() {
                self.shared.metrics.commit_batch.record(ready.commits.len() as u64);
            }
            if let Some(last) = ready.commits.last() {
                // The engine hands out only what this node holds durably (its rule, checked
                // at the host once per Ready: commits come in zxid order).
                let durable = self.log.log().durable_zxid();
                assert!(
                    last.zxid <= durable,
                    "applying {} beyond the durable log ({durable})",
                    last.zxid
                );
            }
            for entry in ready.commits {
                self.apply(entry)?;
            }
            if let Some(role) = ready.role {
                self.on_role(role);
            }
            if let Some((donor, base)) = ready.fetch_snapshot {
                let applied = self.engine.applied();
                tracing::info!(donor, %base, %applied, "behind the master's log: fetching data files");
                self.effects.push(Effect::Fetch { donor, base, applied });
            }
        }
        Ok(())
    }

    fn check_persisted(&mut self) {
        let durable = self.log.log().durable_zxid();
        while self.persists.front().is_some_and(|p| p.1 <= durable) {
            let (seq, _, after) = self.persists.pop_front().expect("front exists");
            self.engine.persisted(seq);
            for (to, message) in after {
                self.send(to, message);
            }
        }
    }

    fn update_status(&self) {
        let (role, master) = wire_role(self.engine.role());
        let mut status = self.shared.status.lock().expect("status poisoned");
        status.role = role;
        status.master = if role == Role::Master { Some(self.shared.node) } else { master };
        status.epoch = self.engine.hard_state().current_epoch;
        status.committed = self.engine.commit();
    }

    fn on_role(&mut self, role: EngineRole) {
        let was_master = self.shared.status.lock().expect("status poisoned").role == Role::Master;
        crate::events::role_changed(
            self.shared.node,
            was_master,
            role,
            self.engine.hard_state().current_epoch,
        );
        self.shared.metrics.role_changes.inc();
        self.update_status();
        match role {
            EngineRole::Leading { epoch, established: true } => {
                self.shared.metrics.elections.inc();
                let command = Command::Takeover { epoch, master: self.shared.node };
                match command.encode().map(Bytes::from).map(|d| self.engine.propose(d)) {
                    Ok(Ok(zxid)) => self.takeover = Some(zxid),
                    other => tracing::warn!("could not propose the takeover record: {other:?}"),
                }
            }
            _ => {
                self.keeper = None;
                self.takeover = None;
                self.fail_pending(true);
            }
        }
    }

    fn fail_pending(&mut self, unknown: bool) {
        let master = self.engine.master();
        for (_, waiter) in self.pending.drain() {
            waiter.fail(master, unknown);
        }
    }

    fn is_master(&self) -> bool {
        matches!(self.engine.role(), EngineRole::Leading { established: true, .. })
    }

    fn apply(&mut self, entry: protocol::message::replication::Entry) -> Result<(), NodeError> {
        let zxid = entry.zxid;
        self.snaps.entries_since += 1;
        self.snaps.bytes_since += entry.data.len() as u64;
        let now = self.now_ms;
        let result = {
            let mut applied = self.shared.applied.write().expect("applied lock poisoned");
            // The boundary's invariants: entries apply once, in zxid order (and only once this
            // node holds them durably: checked per Ready in `drain_ready`).
            assert!(zxid > *applied, "applying {zxid} at or below the applied zxid {applied}");
            let result = if entry.data.is_empty() { None } else { Some(self.sm.apply(&entry)?) };
            let mut followed = false;
            for notice in result.iter().flat_map(|r| &r.notices) {
                if let crate::state::Notice::Update(update) = notice {
                    self.server.on_applied(update);
                    self.server.on_notice(update);
                    followed = true;
                }
            }
            if !followed {
                // Keeps the server cache's position at the applied zxid, so it keeps serving.
                // Not a link of the notice chain (never sent); the server cache reads no `prev`.
                let prev = self.sm.tables().last_notice;
                self.server.on_applied(&UpdateNotice { zxid, prev, ops: Vec::new() });
            }
            *applied = zxid;
            result
        };
        self.shared.applied_tx.send_replace(zxid);
        {
            let mut status = self.shared.status.lock().expect("status poisoned");
            status.committed = self.engine.commit();
            // A follower learns the new epoch after its role changed: keep status current.
            status.epoch = self.engine.hard_state().current_epoch;
            let tables = self.sm.tables();
            status.locks = tables.locks.len() as u64;
            status.sessions = tables.sessions.len() as u64;
        }
        let Some(result) = result else {
            if let Some(waiter) = self.pending.remove(&zxid) {
                match waiter {
                    Waiter::Barrier(tx) | Waiter::Write(tx) => {
                        let _ = tx.send(Ok(zxid));
                    }
                    Waiter::Lock(_) => {}
                }
            }
            return Ok(());
        };
        let master = self.is_master();
        if master {
            for notice in result.notices {
                self.outbox.push(Out::Group(notice.into_message()));
            }
        }
        if let Some(keeper) = self.keeper.as_mut() {
            keeper.observe(&result.leases, now);
        }
        if master && self.takeover == Some(zxid) {
            let tables = self.sm.tables();
            self.keeper = Some(LeaseKeeper::takeover(
                self.lease_config,
                &tables.locks,
                &tables.sessions,
                now,
            ));
            tracing::info!(%zxid, "master takeover applied; lock and session leases start");
        }
        if let Some(waiter) = self.pending.remove(&zxid) {
            match (waiter, result.reply.map(|r| r.outcome)) {
                (Waiter::Write(tx), Some(Outcome::Write(r))) => {
                    let _ = tx.send(r.map_err(server_error));
                }
                (Waiter::Lock(tx), Some(Outcome::Lock(r))) => {
                    let _ = tx.send(r);
                }
                (_, other) => {
                    // A waiter is registered at the zxid this master gave its own proposal:
                    // another outcome there means two proposals shared a zxid.
                    panic!("entry {zxid} has outcome {other:?}, not the one its proposer waits for")
                }
            }
        }
        Ok(())
    }

    fn propose(&mut self, data: Bytes, waiter: Option<Waiter>) {
        match self.engine.propose(data) {
            Ok(zxid) => {
                if let Some(w) = waiter {
                    self.pending.insert(zxid, w);
                }
            }
            Err(ProposeError::NotMaster { master }) => {
                if let Some(w) = waiter {
                    w.fail(master, false);
                }
            }
            Err(ProposeError::Busy) => {
                if let Some(w) = waiter {
                    w.fail(Some(self.shared.node), true);
                }
            }
        }
    }

    /// A lock and session renewal, answered by the master's lease keeper, and only inside
    /// the master's lease: past it a successor may be elected (and expire the renewed locks)
    /// while this node still counts itself master until it steps down.
    fn renew(
        &mut self,
        now_ms: u64,
        client: SenderId,
        session: u64,
        locks: &[(String, i32)],
    ) -> Result<u32, WireError> {
        let in_lease = self.engine.lease_until_ms().is_some_and(|until| now_ms < until);
        if self.keeper.is_some() && !in_lease {
            return Err(WireError {
                code: ErrorCode::Unavailable,
                message: format!(
                    "node {} is master outside its lease (no quorum heard from lately); renew \
                     again shortly",
                    self.shared.node
                ),
            });
        }
        match self.keeper.as_mut() {
            Some(keeper) => keeper.renew(now_ms, client, session, locks),
            None => Err(WireError {
                code: if self.is_master() {
                    ErrorCode::Unavailable
                } else {
                    ErrorCode::NotMaster { master: self.engine.master() }
                },
                message: "renewals go to the established master".into(),
            }),
        }
    }

    fn tick_leases(&mut self, now: u64) {
        let Some(keeper) = self.keeper.as_mut() else { return };
        for command in keeper.tick(now) {
            match command.encode() {
                Ok(data) => self.propose(Bytes::from(data), None),
                Err(e) => tracing::error!("cannot encode lease expiry {command:?}: {e}"),
            }
        }
    }
}

/// A state-machine refusal as the server's error (the wire code and message unchanged).
pub(crate) fn server_error(e: WireError) -> ServerError {
    match e.code {
        ErrorCode::NotMaster { master } => ServerError::NotMaster { master },
        _ => ServerError::Refused(e),
    }
}
