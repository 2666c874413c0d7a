//! [`Shared`]: what the core publishes and the request tasks read (the applied zxid, the
//! status, the store), and the channel on which they send the core commands. It holds no
//! socket: the node's endpoint lives in the shell ([`super::shell`]) and in
//! [`Transfers`](super::transfer::Transfers).

use super::core::Cmd;
use super::transfer;
use crate::replication::EngineRole;
use crate::storage::DiskStore;
use protocol::message::data::Role;
use protocol::{NodeId, Zxid};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::{mpsc, watch};

/// Role, epoch and master as the backend reports them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StatusView {
    pub role: Role,
    pub epoch: u32,
    pub master: Option<NodeId>,
    pub committed: Zxid,
    /// Held locks and open sessions in the applied state (for metrics).
    pub locks: u64,
    pub sessions: u64,
}

/// State shared by the core (writer) and the request tasks (readers).
pub(crate) struct Shared {
    pub node: NodeId,
    pub store: Arc<DiskStore>,
    /// The applied zxid. The core holds it for writing while it applies an entry, a read holds
    /// it for reading while it reads the store: a read sees exactly the state at this zxid.
    pub applied: RwLock<Zxid>,
    pub applied_tx: watch::Sender<Zxid>,
    pub status: Mutex<StatusView>,
    /// Bounded by [`super::COMMAND_QUEUE_MAX`]: senders wait for room.
    pub cmds: mpsc::Sender<Cmd>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The commit point the log recorded before this start. Until the rebuilt store reaches
    /// it, this node answers reads with `Behind` (the client asks another node), so that a
    /// restart never shows a client with no floor an older state than before the restart.
    pub recovered_commit: Zxid,
    pub transfers: Arc<transfer::Transfers>,
}

impl Shared {
    /// Whether the rebuilt store is still below the commit point recorded before this start,
    /// or the node is fetching its data files from a peer.
    pub fn recovering(&self) -> bool {
        *self.applied.read().expect("applied lock poisoned") < self.recovered_commit
            || self.transfers.fetching()
    }
}

pub(crate) fn wire_role(role: EngineRole) -> (Role, Option<NodeId>) {
    match role {
        EngineRole::Looking => (Role::Looking, None),
        EngineRole::Following { master } => (Role::Follower, Some(master)),
        EngineRole::Leading { established: true, .. } => (Role::Master, None),
        EngineRole::Leading { established: false, .. } => (Role::Looking, None),
    }
}
