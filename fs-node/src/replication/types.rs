//! The engine's inputs and outputs: configuration, the durable epoch state, persist commands,
//! the [`Ready`] batch of outputs, the [`LogReader`] the host provides, and errors.

use bytes::Bytes;
use protocol::message::replication::Entry;
use protocol::message::Message;
use protocol::{NodeId, Zxid};
use thiserror::Error;

/// Cluster sizes the design allows (static membership).
pub const CLUSTER_SIZES: [usize; 3] = [3, 5, 7];

/// Heartbeats whose acks are still tracked for the lease; older acks are ignored.
pub const LEASE_HEARTBEATS_TRACKED_MAX: usize = 16;

/// Engine configuration. Times are in milliseconds of the host's monotonic clock.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EngineConfig {
    pub id: NodeId,
    /// Every member's id, including `id`; 3, 5 or 7 distinct ids.
    pub members: Vec<NodeId>,
    /// The master sends a heartbeat this often; looking nodes resend their vote this often.
    pub heartbeat_interval_ms: u64,
    /// A follower that hears nothing from its master this long starts an election; a master
    /// that hears from no quorum this long steps down; an election round that settles on no one
    /// this long starts a new round.
    pub election_timeout_ms: u64,
    /// How long a follower promises, on its own clock, not to back another master after the
    /// last heartbeat it received. Must be below `election_timeout_ms`.
    pub lease_ms: u64,
    /// Subtracted from the master's lease for clock-rate drift between nodes.
    pub drift_margin_ms: u64,
    /// A proposal carries at most this many entries ...
    pub batch_entries_max: usize,
    /// ... and at most this many data bytes (one entry may exceed it alone).
    pub batch_bytes_max: usize,
    /// Proposed but uncommitted entries at most; `propose` answers `Busy` beyond it.
    pub inflight_entries_max: u32,
    /// Entries per catch-up chunk or retransmission.
    pub sync_entries_max: usize,
    /// Committed entries handed out per [`Ready`]; the rest follow in the next ones.
    pub apply_entries_max: usize,
}

impl EngineConfig {
    /// A configuration with the defaults used by `shoal-fs` and the simulator.
    pub fn new(id: NodeId, members: Vec<NodeId>) -> EngineConfig {
        EngineConfig {
            id,
            members,
            heartbeat_interval_ms: 50,
            election_timeout_ms: 500,
            lease_ms: 300,
            drift_margin_ms: 30,
            batch_entries_max: 256,
            batch_bytes_max: 1 << 20,
            inflight_entries_max: 8192,
            sync_entries_max: 512,
            apply_entries_max: 1024,
        }
    }

    pub fn validate(&self) -> Result<(), EngineConfigError> {
        let mut sorted = self.members.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != self.members.len() || !CLUSTER_SIZES.contains(&sorted.len()) {
            return Err(EngineConfigError::Membership(self.members.clone()));
        }
        if !sorted.contains(&self.id) {
            return Err(EngineConfigError::NotAMember(self.id));
        }
        if self.heartbeat_interval_ms == 0 || self.lease_ms >= self.election_timeout_ms {
            return Err(EngineConfigError::Timeouts);
        }
        // The lease (less the margin) must outlast a heartbeat interval, or it never holds.
        if self.drift_margin_ms + self.heartbeat_interval_ms >= self.lease_ms {
            return Err(EngineConfigError::Drift);
        }
        if self.batch_entries_max == 0
            || self.sync_entries_max == 0
            || self.apply_entries_max == 0
            || self.inflight_entries_max == 0
        {
            return Err(EngineConfigError::ZeroLimit);
        }
        Ok(())
    }

    /// n/2 + 1.
    pub fn quorum(&self) -> usize {
        self.members.len() / 2 + 1
    }
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum EngineConfigError {
    #[error("membership {0:?} must be 3, 5 or 7 distinct node ids")]
    Membership(Vec<NodeId>),
    #[error("node id {0} is not in the member list")]
    NotAMember(NodeId),
    #[error("timeouts: heartbeat interval must be > 0 and lease_ms below election_timeout_ms")]
    Timeouts,
    #[error("drift_margin_ms plus heartbeat_interval_ms must be below lease_ms")]
    Drift,
    #[error("batch, sync, apply and in-flight limits must be above zero")]
    ZeroLimit,
}

/// The epoch state that must survive a crash (Zab's acceptedEpoch and currentEpoch).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HardState {
    /// The highest epoch this node promised (Prepare answered) ...
    pub accepted_epoch: u32,
    /// ... and to whom (0: nobody), so that a repeated Prepare of the same master is answered
    /// again and no other master gets the same epoch.
    pub promised_to: NodeId,
    /// The epoch whose master's history this node last adopted in full.
    pub current_epoch: u32,
}

/// What the host recovered from disk at start-up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RestartState {
    pub hard: HardState,
    /// The zxid up to which the host's state machine has applied entries (its data files).
    pub applied: Zxid,
}

/// Whether the host can vouch for what it recovered ([`Engine::start`](super::Engine::start)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Durability {
    /// The epoch state and the log were found and recovered in full.
    #[default]
    Durable,
    /// The host found no durable replication state (no epoch state: a brand-new or wiped
    /// data directory), or knows it may have lost some (e.g. a log it could not fully
    /// recover). The node starts as a *non-voter* and becomes a voter only once repaired (see
    /// the module docs, "Lost durable state"). A brand-new node and a wiped one look alike,
    /// so every node of a new cluster starts `Lost`.
    Lost,
}

/// One write the host makes durable, in order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PersistOp {
    /// Append these entries (zxids above the log's last) to the log.
    Append(Vec<Entry>),
    /// Drop every entry above this zxid (an uncommitted divergent tail).
    TruncateAfter(Zxid),
    /// Replace the stored epoch state.
    HardState(HardState),
}

/// Where a message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum To {
    Node(NodeId),
    /// Every other member (multicast).
    Peers,
}

/// The engine's role as the host sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EngineRole {
    /// Electing; no master known.
    Looking,
    /// Following `master` (which may still be bringing this node up to date).
    Following { master: NodeId },
    /// Master; `established` once a quorum holds its history and it takes writes.
    Leading { epoch: u32, established: bool },
}

/// Everything the engine asks of its host after some inputs. The host must:
/// 1. apply `persist` to its log in order (the next input's [`LogReader`] must show them),
///    then make them durable;
/// 2. send `send_now` at once;
/// 3. once `persist` of this and every earlier Ready is durable, send `send_after_persist` and
///    call [`Engine::persisted`](super::Engine::persisted) with `persist_seq`;
/// 4. apply `commits` to its state machine in order (they are already durable locally);
/// 5. if `fetch_snapshot` is set, fetch the data files from that node up to that zxid, reset
///    its log to start there, and call
///    [`Engine::snapshot_installed`](super::Engine::snapshot_installed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ready {
    pub persist: Vec<PersistOp>,
    /// Set whenever `persist` or `send_after_persist` is non-empty.
    pub persist_seq: Option<u64>,
    pub send_now: Vec<(To, Message)>,
    pub send_after_persist: Vec<(To, Message)>,
    pub commits: Vec<Entry>,
    /// Set when the role changed since the previous Ready. A master that stops leading fails
    /// its pending proposals as "outcome unknown": they may still commit under the next master.
    pub role: Option<EngineRole>,
    pub fetch_snapshot: Option<(NodeId, Zxid)>,
}

impl Ready {
    pub fn is_empty(&self) -> bool {
        self.persist.is_empty()
            && self.send_now.is_empty()
            && self.send_after_persist.is_empty()
            && self.commits.is_empty()
            && self.role.is_none()
            && self.fetch_snapshot.is_none()
    }
}

/// Read access to the host's log, which lives on disk. Rules an implementation must keep:
/// - it shows every [`PersistOp`] of every Ready handed out before the current call
///   (written, not necessarily durable);
/// - zxids strictly increase, with no entry at or below `base()`;
/// - `base()` is the zxid the data files cover: everything at or below it is committed and
///   may be gone from the log.
pub trait LogReader {
    fn base(&self) -> Zxid;
    /// The last entry's zxid, or `base()` when the log holds none.
    fn last(&self) -> Zxid;
    /// Whether the history here includes `zxid`: at or below `base()`, or an entry with it.
    fn contains(&self, zxid: Zxid) -> bool;
    /// The largest zxid at or below `zxid` that `contains` answers true for (`zxid` itself
    /// when it is at or below `base()`).
    fn floor(&self, zxid: Zxid) -> Zxid;
    /// Up to `max_entries` entries (and about `max_bytes`, at least one) strictly after
    /// `zxid`, which must be at or above `base()`.
    fn entries_after(&self, zxid: Zxid, max_entries: usize, max_bytes: usize) -> Vec<Entry>;
}

/// Why a proposal was not taken.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProposeError {
    /// Send the write to `master` (None: an election is under way; retry later).
    #[error("not the master; the master is {master:?}")]
    NotMaster { master: Option<NodeId> },
    /// Too many uncommitted entries in flight; retry after some commit.
    #[error("too many proposals in flight; retry shortly")]
    Busy,
}

/// A proposal's data, kept by the master until it goes out in a batch.
pub(crate) fn entry(zxid: Zxid, data: Bytes) -> Entry {
    Entry { zxid, data }
}
