//! [`ManualNode`]: the node core with every outside thing in the caller's hands: time (a
//! clock value with every call), the disk (a [`Vfs`]; the data log's group commit runs when
//! the caller says), the network (the caller delivers messages and takes the outbox). The
//! deterministic simulator (`shoal-sim`) runs the same core (`node::core::Core`) as `shoal-fs` through it; its
//! data log runs in [`SyncMode::Manual`]: nothing becomes durable but by [`ManualNode::sync`].
//!
//! What a manual node does not do: snapshots (the hard links they are made of are the
//! operating system's) and file transfer (it needs an endpoint). A configuration for it sets
//! `snapshot_entries` and `snapshot_log_bytes` beyond reach; a node told to fetch data files
//! counts the request ([`ManualNode::fetches`]) and carries on from the log.

use super::core::{Cmd, Core, Effect, Out, Waiter};
use super::shared::Shared;
use super::start::{self, Opened, Parts};
use super::transfer::Transfers;
use super::NodeError;
use crate::config::Config;
use crate::state::Command;
use crate::storage::{DataLog, SyncMode, Vfs};
use bytes::Bytes;
use cache_server::ServerError;
use protocol::message::data::{Role, UpdateRequest, Versioned, WireError};
use protocol::message::lock::{LockGrant, LockRequest};
use protocol::message::Message;
use protocol::messaging::EndpointConfig;
use protocol::{NodeId, SenderId, Zxid};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Where a message of the outbox goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dest {
    /// Every member (and, for notices, every client): the group's reliable multicast stream
    /// in `shoal-fs`.
    Group,
    /// The group, best effort.
    GroupUnreliable,
    /// One member.
    Node(NodeId),
}

/// Role, epoch and master as the node reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ManualStatus {
    pub role: Role,
    pub epoch: u32,
    pub master: Option<NodeId>,
    pub applied: Zxid,
    pub committed: Zxid,
    /// Until when (this node's clock) its master lease holds, while it leads.
    pub lease_until_ms: Option<u64>,
    /// Whether it votes and counts toward quorums (a node that lost its durable state does
    /// not, until repaired).
    pub voter: bool,
    /// Until when (this node's clock) it promises no candidate but its master anything (the
    /// follower side of the master's lease).
    pub promised_until_ms: u64,
}

/// Every key of a store, in order, with its value (none for a directory).
pub type Dump = Vec<(String, Option<Versioned>)>;

/// The node core driven by hand (see the module docs).
pub struct ManualNode {
    core: Core,
    shared: Arc<Shared>,
    log: Arc<DataLog>,
    /// Commands from request tasks: none run here, but the channel must stay open.
    _cmds: mpsc::Receiver<Cmd>,
    fetches: u64,
}

impl ManualNode {
    /// Opens `config.data_dir` on `vfs` as a restart would (log recovery, the store rebuilt,
    /// the log replayed) at `now_ms` on the node's clock.
    pub fn open(config: &Config, vfs: Arc<dyn Vfs>, now_ms: u64) -> Result<ManualNode, NodeError> {
        let base = EndpointConfig::new(config.node_id as SenderId, 1, config.cluster_auth());
        let transfers = Arc::new(Transfers::new(
            config.node_id,
            config.data_dir.clone(),
            config.members.clone(),
            base,
            config.transfer_rate_bytes_per_s,
        ));
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let parts = Parts { vfs, metrics, transfers, now_ms, sync: SyncMode::Manual };
        let Opened { core, shared, cmds, log, .. } = start::open(config, parts)?;
        let mut node = ManualNode { core, shared, log, _cmds: cmds, fetches: 0 };
        node.core.drain()?;
        Ok(node)
    }

    /// Time moves on.
    pub fn tick(&mut self, now_ms: u64) -> Result<(), NodeError> {
        self.core.tick(now_ms)?;
        self.after()
    }

    /// A replication message from member `from` (others are dropped, as the door drops them).
    pub fn step(&mut self, now_ms: u64, from: NodeId, message: Message) -> Result<(), NodeError> {
        if from == self.shared.node {
            return Ok(());
        }
        self.core.step(now_ms, message)?;
        self.after()
    }

    /// A batch of replication messages as the shell hands them to the core: `clock` is read
    /// for each (see `Core::step_batch`), so a test can make time pass while the batch runs.
    pub fn step_batch(
        &mut self,
        clock: &mut dyn FnMut() -> u64,
        messages: Vec<(NodeId, Message)>,
    ) -> Result<(), NodeError> {
        let me = self.shared.node;
        let messages = messages.into_iter().filter(|(from, _)| *from != me).map(|(_, m)| m);
        self.core.step_batch(clock, messages)?;
        self.after()
    }

    /// The data log's group commit: everything written so far becomes durable now.
    pub fn sync(&mut self, now_ms: u64) -> Result<(), NodeError> {
        let durable = self.log.sync()?;
        self.core.now_ms = now_ms;
        self.core.durable_changed(durable.failed)?;
        self.after()
    }

    /// Proposes a write; the answer comes once it commits (or the node knows it will not).
    pub fn write(
        &mut self,
        now_ms: u64,
        request: UpdateRequest,
    ) -> Result<oneshot::Receiver<Result<Zxid, ServerError>>, NodeError> {
        let (tx, rx) = oneshot::channel();
        match Command::from_update(request).encode() {
            Ok(data) => self.command(
                now_ms,
                Cmd::Propose { data: Bytes::from(data), waiter: Waiter::Write(tx) },
            )?,
            Err(e) => {
                let _ = tx.send(Err(super::backend::encode_error(e)));
            }
        }
        Ok(rx)
    }

    /// A zxid at or above every acknowledged write (the master inside its lease, or through
    /// the log); `NotMaster` elsewhere.
    pub fn linearizable(
        &mut self,
        now_ms: u64,
    ) -> Result<oneshot::Receiver<Result<Zxid, ServerError>>, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.command(now_ms, Cmd::Linearizable(tx))?;
        Ok(rx)
    }

    /// A lock command, as a client's Lock message reaches the core.
    pub fn lock(
        &mut self,
        now_ms: u64,
        request: LockRequest,
    ) -> Result<oneshot::Receiver<Result<LockGrant, WireError>>, NodeError> {
        let (cmd, rx) = super::backend::lock_cmd(request);
        if let Some(cmd) = cmd {
            self.command(now_ms, cmd)?;
        }
        Ok(rx)
    }

    fn command(&mut self, now_ms: u64, cmd: Cmd) -> Result<(), NodeError> {
        if self.core.command(now_ms, cmd)?.is_some() {
            return Err(NodeError::Other("a manual node cannot restart itself".into()));
        }
        self.after()
    }

    fn after(&mut self) -> Result<(), NodeError> {
        self.core.drain()?;
        for effect in self.core.take_effects() {
            match effect {
                Effect::FinishSnapshot { .. } => {
                    return Err(NodeError::Other(
                        "a manual node takes no snapshots; configure snapshot_entries and \
                         snapshot_log_bytes beyond reach"
                            .into(),
                    ))
                }
                Effect::Fetch { .. } => self.fetches += 1,
            }
        }
        Ok(())
    }

    /// The messages to send, in order.
    pub fn take_outbox(&mut self) -> Vec<(Dest, Message)> {
        self.core
            .take_outbox()
            .into_iter()
            .map(|out| match out {
                Out::Group(m) => (Dest::Group, m),
                Out::GroupUnreliable(m) => (Dest::GroupUnreliable, m),
                Out::Node(id, m) => (Dest::Node(id), m),
            })
            .collect()
    }

    /// A value and the applied zxid it was read at (a read served by this node).
    pub fn get(&self, key: &str) -> Result<(Option<Versioned>, Zxid), NodeError> {
        let applied = self.shared.applied.read().expect("applied lock poisoned");
        Ok((self.shared.store.get(key)?, *applied))
    }

    /// Every key and value of the applied state, and its zxid.
    pub fn dump(&self) -> Result<(Dump, Zxid), NodeError> {
        let applied = self.shared.applied.read().expect("applied lock poisoned");
        Ok((self.shared.store.dump()?, *applied))
    }

    pub fn status(&self) -> ManualStatus {
        let status = *self.shared.status.lock().expect("status poisoned");
        ManualStatus {
            role: status.role,
            epoch: status.epoch,
            master: status.master,
            applied: *self.shared.applied.read().expect("applied lock poisoned"),
            committed: status.committed,
            lease_until_ms: self.core.engine.lease_until_ms(),
            voter: self.core.engine.is_voter(),
            promised_until_ms: self.core.engine.promise().1,
        }
    }

    /// How many times the engine asked for data files (a manual node cannot fetch them).
    pub fn fetches(&self) -> u64 {
        self.fetches
    }

    /// The last zxid in the data log (written, durable or not) and the durable one.
    pub fn log_position(&self) -> (Zxid, Zxid) {
        (self.log.last_zxid(), self.log.durable_zxid())
    }
}
