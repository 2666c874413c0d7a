//! Replication messages between FS nodes: election votes, heartbeats carrying the master
//! lease, the prepare phase of a new master (Zab's discovery and synchronization), proposals,
//! accepts and commits. `fs-node::replication` documents the protocol that uses them.

use crate::{NodeId, Zxid};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// One log entry: its zxid and the opaque command it carries (the engine does not look inside).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entry {
    pub zxid: Zxid,
    pub data: Bytes,
}

/// FastLeaderElection notification: the sender's current vote. Votes compare by
/// (candidate_epoch, candidate_zxid, candidate) in that order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    pub from: NodeId,
    /// The election round of the sender (FLE's logical clock).
    pub round: u64,
    pub candidate: NodeId,
    /// The candidate's current epoch (the epoch of the history it last synced to).
    pub candidate_epoch: u32,
    pub candidate_zxid: Zxid,
    /// Whether the sender is still looking, or already follows/leads `candidate`.
    pub settled: bool,
    /// The highest epoch the sender has promised: a new master's epoch goes above it ...
    pub accepted_epoch: u32,
    /// ... and to whom (0: nobody): a master of that epoch that is someone else cannot win
    /// the sender back.
    pub promised_to: NodeId,
    /// The sender lost (or never had) its durable replication state and is not a voter yet:
    /// its vote is not counted, it promises nothing, and its acks do not count toward a
    /// quorum until a master has repaired it (`fs-node::replication` documents the rule). Its
    /// `candidate` is then always itself, so `candidate_epoch`/`candidate_zxid` are its own
    /// history.
    pub fresh: bool,
}

/// Master → synced followers: I am master of `epoch`; the lease runs `lease_ms` from the
/// moment each follower receives this, on its own clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub from: NodeId,
    pub epoch: u32,
    pub commit: Zxid,
    pub lease_ms: u32,
    /// Numbers heartbeats so that the acks (in [`Accept`]) can be matched to the send time.
    pub seq: u64,
}

/// New master → peer (Zab NEWEPOCH): promise `epoch` to me and report your history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepare {
    pub from: NodeId,
    pub epoch: u32,
}

/// Peer → master (Zab ACKEPOCH): I promised `epoch` to you; my history ends at `last_zxid`
/// and was last synced in `current_epoch`. Also sent during catch-up to report the position
/// the master should continue from (after a chunk, or when a chunk does not fit the log).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrepareOk {
    pub from: NodeId,
    pub epoch: u32,
    pub current_epoch: u32,
    pub last_zxid: Zxid,
}

/// Master → follower during catch-up: `entries` follow `prev` in the master's history. The
/// follower keeps what it shares with it, truncates an uncommitted divergent tail and appends
/// the rest. `done`: this chunk ends at the master's last entry; the follower adopts the
/// epoch. `snapshot`: the follower is behind the master's log retention and must first fetch
/// the data files up to that zxid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sync {
    pub from: NodeId,
    pub epoch: u32,
    pub prev: Zxid,
    #[serde(
        deserialize_with = "crate::codec::bounded::vec::<_, _, { crate::limits::RECORDS_PER_MESSAGE_MAX }>"
    )]
    pub entries: Vec<Entry>,
    pub done: bool,
    pub snapshot: Option<Zxid>,
    pub commit: Zxid,
}

/// Master → followers: new entries, in order, many per proposal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub from: NodeId,
    pub epoch: u32,
    /// The zxid just before `entries[0]`, for gap detection.
    pub prev: Zxid,
    #[serde(
        deserialize_with = "crate::codec::bounded::vec::<_, _, { crate::limits::RECORDS_PER_MESSAGE_MAX }>"
    )]
    pub entries: Vec<Entry>,
    pub commit: Zxid,
}

/// Synced follower → master: I have everything up to `durable` on disk, in your epoch.
/// `heartbeat` is the seq of the heartbeat this answers (0: an answer to entries).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accept {
    pub from: NodeId,
    pub epoch: u32,
    pub durable: Zxid,
    pub heartbeat: u64,
}

/// Master → followers (multicast): everything up to `commit` is committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    pub from: NodeId,
    pub epoch: u32,
    pub commit: Zxid,
}
