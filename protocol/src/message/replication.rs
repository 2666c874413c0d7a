//! Replication messages between FS nodes: election votes, heartbeats carrying the master
//! lease, the prepare phase of a new master, proposals, accepts and commits.

use crate::{NodeId, Zxid};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// One log entry: its zxid and the opaque command it carries (the engine does not look inside).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub zxid: Zxid,
    pub data: Bytes,
}

/// FastLeaderElection vote: (epoch, last zxid, id) compared in that order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    pub from: NodeId,
    /// The election round of the sender (logical clock).
    pub round: u64,
    pub candidate: NodeId,
    pub candidate_epoch: u32,
    pub candidate_zxid: Zxid,
    /// Whether the sender is still looking, or already follows/leads `candidate`.
    pub settled: bool,
}

/// Master → followers: I am master of `epoch`; the lease runs `lease_ms` from the send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub from: NodeId,
    pub epoch: u32,
    pub commit: Zxid,
    pub lease_ms: u32,
}

/// New master → follower: report your last zxid (start of the prepare phase).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepare {
    pub from: NodeId,
    pub epoch: u32,
}

/// Follower → new master.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrepareOk {
    pub from: NodeId,
    pub epoch: u32,
    pub last_zxid: Zxid,
    pub accepted_epoch: u32,
}

/// Master → follower during catch-up: drop everything after `truncate_to` (if set), then append
/// `entries`; `snapshot` asks the follower to fetch data files (behind retention).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sync {
    pub from: NodeId,
    pub epoch: u32,
    pub truncate_to: Option<Zxid>,
    #[serde(
        deserialize_with = "crate::codec::bounded::vec::<_, _, { crate::limits::RECORDS_PER_MESSAGE_MAX }>"
    )]
    pub entries: Vec<Entry>,
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

/// Follower → master: I have everything up to `durable` on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accept {
    pub from: NodeId,
    pub epoch: u32,
    pub durable: Zxid,
}

/// Master → followers: everything up to `commit` is committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    pub from: NodeId,
    pub epoch: u32,
    pub commit: Zxid,
}
