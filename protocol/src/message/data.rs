//! Request (reads), Update (writes, and the committed-change notices multicast to caches) and
//! Rename, plus the operation and error types they carry.

use crate::message::lock::{LockOp, SessionOp};
use crate::{NodeId, SenderId, Zxid};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Identifies one client write for retry de-duplication: (client id, per-client seq).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RequestId {
    pub client: SenderId,
    pub seq: u64,
}

/// A node's load as it reports it in FSLive and in every reply.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Load {
    /// CPU use, 0..=1000.
    pub cpu_permille: u16,
    /// Memory use, 0..=1000.
    pub mem_permille: u16,
    /// Requests being served right now.
    pub inflight: u32,
}

/// A read (Request message, client → one FS, unicast).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadRequest {
    /// The highest zxid this client has seen; the node answers only once applied past it.
    pub floor: Zxid,
    /// Answer only from the master inside its lease (or through the log).
    pub linearizable: bool,
    pub op: ReadOp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadOp {
    Get {
        key: String,
    },
    Exists {
        key: String,
    },
    IsDir {
        key: String,
    },
    List {
        dir: String,
    },
    /// Node status for `shoal status`.
    Status,
    /// The change events under `scope` of the entries above `after` that this node has applied
    /// and still holds in its history window, oldest first, in pages of about `bytes_max`
    /// bytes (capped by [`crate::limits::HISTORY_PAGE_BYTES_MAX`]); with `values`, created and
    /// changed events carry the value written. Part of wire version 3. Below the window:
    /// [`ErrorCode::Compacted`].
    History {
        scope: Scope,
        after: Zxid,
        values: bool,
        bytes_max: u32,
    },
    /// The metadata of `key` ([`KeyStat`]), `None` when nothing is there: `shoal stat`, and
    /// `shoal exists` in one read. Part of wire version 3.
    Stat {
        key: String,
    },
    /// The values below directory `dir`, recursively (every value at any depth; directories
    /// themselves are not listed), in key byte order from `from` on (inclusive; `None`: from
    /// the start), in one page of at most `limit` entries (at least 1, capped by
    /// [`crate::limits::RANGE_ENTRIES_MAX`]) and about `bytes_max` bytes (capped by
    /// [`crate::limits::RANGE_PAGE_BYTES_MAX`]; a page always holds one entry), all of one
    /// state of the node: the answer is a [`RangePage`]. Part of wire version 3 (see
    /// [`crate::range`]).
    Range {
        dir: String,
        from: Option<String>,
        limit: u32,
        bytes_max: u32,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadReply {
    /// What the node had applied when it answered.
    pub applied: Zxid,
    pub load: Load,
    pub result: Result<ReadValue, WireError>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadValue {
    /// `None`: the key does not exist (a normal result, not an error).
    Value(Option<Versioned>),
    Bool(bool),
    List(
        #[serde(
            deserialize_with = "crate::codec::bounded::vec::<_, _, { crate::limits::LIST_ENTRIES_MAX }>"
        )]
        Vec<DirEntry>,
    ),
    Status(NodeStatus),
    /// The answer to [`ReadOp::History`].
    History(HistoryPage),
    /// The answer to [`ReadOp::Stat`].
    Stat(Option<KeyStat>),
    /// The answer to [`ReadOp::Range`].
    Range(RangePage),
}

/// One page of a range read: values of one state of the node, the state after `zxid`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangePage {
    /// The values in key byte order.
    #[serde(
        deserialize_with = "crate::codec::bounded::vec::<_, _, { crate::limits::RANGE_ENTRIES_MAX }>"
    )]
    pub entries: Vec<RangeEntry>,
    /// The zxid of the state the page shows: every entry up to it applied, none after.
    pub zxid: Zxid,
    /// Where the next page starts (its `from`), `None` when the range ends in this page.
    pub next: Option<String>,
}

/// One value of a range read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeEntry {
    pub key: String,
    /// The zxid of the last write to the key (what `Condition::KeyZxid` compares with).
    pub zxid: Zxid,
    pub value: Bytes,
}

/// What [`ReadOp::Stat`] tells about a key (the root `/` is a directory with zxid 0).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyStat {
    /// The zxid of the last write to the key: a put, a mkdir, or the rename that brought it
    /// (the zxid `--if-zxid` compares with).
    pub zxid: Zxid,
    pub is_dir: bool,
    /// The value's length in bytes (0 for a directory).
    pub size: u64,
    /// The session that owns the key when it is ephemeral (deleted when that session ends).
    pub ephemeral: Option<u64>,
}

/// A value with the zxid of the write that made it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned {
    pub zxid: Zxid,
    pub value: Bytes,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    /// The last path component.
    pub name: String,
    pub is_dir: bool,
    pub zxid: Zxid,
}

/// What `shoal status` shows for one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: NodeId,
    pub role: Role,
    pub epoch: u32,
    pub applied: Zxid,
    pub committed: Zxid,
    pub frozen: bool,
    pub load: Load,
    pub master: Option<NodeId>,
    pub transfer: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Looking,
    Follower,
    Master,
}

/// One change to the replicated state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Create or overwrite a value. With `create_only` it fails if the key exists; with
    /// `ephemeral` it is deleted when that session expires.
    Put {
        key: String,
        value: Bytes,
        create_only: bool,
        ephemeral: Option<u64>,
    },
    Mkdir {
        key: String,
    },
    /// Delete a key, or a directory (with `recursive`, its subtree; without, it must be empty).
    Delete {
        key: String,
        recursive: bool,
    },
    /// Rename a key or a directory subtree atomically.
    Rename {
        from: String,
        to: String,
    },
    Lock(LockOp),
    Session(SessionOp),
}

/// A precondition checked by the master at commit time, atomically with the ops.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Condition {
    /// The key's current zxid equals this (`Zxid::ZERO`: the key must not exist). Gives
    /// compare-and-set.
    KeyZxid { key: String, zxid: Zxid },
    /// The lock is still held with this fencing token.
    LockToken { lock: String, token: Zxid },
    /// The lock is still held with this auth word (transactions).
    LockHeld { lock: String, auth: i32 },
}

/// A write (Update message, client → master): the ops commit as one log entry, atomically,
/// only if every condition holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateRequest {
    pub request: RequestId,
    #[serde(
        deserialize_with = "crate::codec::bounded::vec::<_, _, { crate::limits::BATCH_OPS_MAX }>"
    )]
    pub conditions: Vec<Condition>,
    #[serde(
        deserialize_with = "crate::codec::bounded::vec::<_, _, { crate::limits::BATCH_OPS_MAX }>"
    )]
    pub ops: Vec<Op>,
}

/// Rename message (client → master). Kept separate as the design lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenameRequest {
    pub request: RequestId,
    pub from: String,
    pub to: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteReply {
    pub request: RequestId,
    pub load: Load,
    /// On success, the zxid of the committed entry.
    pub result: Result<Zxid, WireError>,
}

/// Master → cache group: one committed entry (this is also the Update notification that keeps
/// caches fresh and drives watches). Sent on the reliable stream, so gaps are detected.
///
/// The notices form one chain over the committed log, whoever sends them: `prev` is the zxid
/// of the notice-producing entry before this one (`Zxid::ZERO` for the first). Every replica
/// computes it from replicated state, so a new master continues the old master's chain, and a
/// receiver whose last applied notice is not `prev` knows it missed one, whatever the
/// reliable stream of the sender said.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateNotice {
    pub zxid: Zxid,
    /// The zxid of the previous notice in the chain.
    pub prev: Zxid,
    #[serde(
        deserialize_with = "crate::codec::bounded::vec::<_, _, { crate::limits::BATCH_OPS_MAX }>"
    )]
    pub ops: Vec<Op>,
}

/// An error that crosses the wire: a code a program can match on, and text for a person.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    pub code: ErrorCode,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    NotFound,
    AlreadyExists,
    ParentMissing,
    NotADirectory,
    IsADirectory,
    DirectoryNotEmpty,
    BadKey,
    TooLarge,
    ConditionFailed,
    /// This node is not the master; `master` says who is, if known.
    NotMaster {
        master: Option<NodeId>,
    },
    LockHeld,
    BadAuth,
    LockNotHeld,
    SessionExpired,
    Frozen,
    /// Not applied up to the request's floor in time.
    Behind,
    Unavailable,
    Internal,
    /// A retried request whose result the master no longer remembers (its seq is at or below
    /// the client's forgotten horizon): it may or may not have been applied, and was not
    /// applied again. The client must read to find out.
    RequestTooOld,
    /// A request that is well-formed on the wire but not allowed (e.g. a lock grant inside a
    /// write batch, a lease length out of range).
    BadRequest,
    /// [`ReadOp::History`] asked for events after a zxid below this node's history window:
    /// they are gone. `oldest` is the lowest zxid a history read can start after here; re-read
    /// the state, then watch from a zxid at or above it.
    Compacted {
        oldest: Zxid,
    },
}

/// What a history read (and a watch) covers: one key, or a directory and everything below it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scope {
    Path(String),
    Prefix(String),
}

impl Scope {
    /// The key or directory named.
    pub fn path(&self) -> &str {
        match self {
            Scope::Path(p) | Scope::Prefix(p) => p,
        }
    }

    /// Whether an event about `key` is in scope.
    pub fn matches(&self, key: &str) -> bool {
        match self {
            Scope::Path(p) => p == key,
            Scope::Prefix(dir) => crate::key::is_within(key, dir),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChangeKind {
    Created,
    Changed,
    Removed,
}

/// One change to one key, as a watch reports it (see [`crate::history::events_of`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeEvent {
    pub zxid: Zxid,
    pub kind: ChangeKind,
    pub key: String,
    /// The value written, for created and changed keys when asked for (`None` for a directory,
    /// a rename's target, a removal, or when not asked).
    pub value: Option<Bytes>,
}

/// One page of a history read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryPage {
    /// The events of every entry in (`after`, `through`], in zxid order.
    #[serde(
        deserialize_with = "crate::codec::bounded::vec::<_, _, { crate::limits::HISTORY_EVENTS_MAX }>"
    )]
    pub events: Vec<ChangeEvent>,
    /// Every notice-producing entry up to here was looked at: the next page starts after it.
    pub through: Zxid,
    /// `through` is the last entry this node had applied when it answered.
    pub complete: bool,
}
