//! Lock message (client ↔ master; master → group on change) and the lock and session ops that
//! go through the log.

use crate::message::data::{Load, RequestId, WireError};
use crate::{SenderId, Zxid};
use serde::{Deserialize, Serialize};

/// Auth word of shared holders.
pub const AUTH_SHARED: i32 = 1;

/// A lock request (client → master). Renewals of all a client's locks and its session travel in
/// one message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRequest {
    pub request: RequestId,
    pub op: LockRequestOp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockRequestOp {
    Acquire {
        lock: String,
        auth: i32,
        session: u64,
        host: String,
    },
    Release {
        lock: String,
        auth: i32,
    },
    /// Renew the session and every listed (lock, auth).
    Renew {
        session: u64,
        #[serde(
            deserialize_with = "crate::codec::bounded::vec::<_, _, { crate::limits::BATCH_OPS_MAX }>"
        )]
        locks: Vec<(String, i32)>,
    },
    OpenSession {
        session: u64,
        ttl_ms: u32,
    },
    CloseSession {
        session: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockReply {
    pub request: RequestId,
    pub load: Load,
    pub result: Result<LockGrant, WireError>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockGrant {
    /// Granted; the fencing token is the zxid of the grant.
    Granted {
        token: Zxid,
    },
    Released,
    Renewed {
        lease_ms: u32,
    },
    SessionOpened {
        lease_ms: u32,
    },
    SessionClosed,
}

/// Replicated lock changes a client asks for (through the log). Renewals are not here: they
/// touch only the master's in-memory lease clock. Expiries are master records of their own
/// (`fs-node` `state::Command::ExpireLock`).
///
/// A holder is identified by its client id (`holder`): one client holds a lock at most once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockOp {
    /// Take `lock` with `auth` ([`AUTH_SHARED`] for shared, 2..=i32::MAX exclusive), tied to
    /// `session` (0: no session; the lock then lives by its own lease only).
    Grant { lock: String, auth: i32, session: u64, holder: SenderId, host: String },
    /// Give `lock` up; refused unless `holder` holds it with `auth`.
    Release { lock: String, auth: i32, holder: SenderId },
}

/// Replicated session changes a client asks for (through the log). Expiry is a master record
/// (`fs-node` `state::Command::ExpireSession`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionOp {
    /// Open `session` (an id the client drew at random) owned by `client`.
    Open { session: u64, client: SenderId, ttl_ms: u32 },
    /// Close `session`: its ephemeral entries are deleted and its locks released. Only its
    /// owning `client` may close it.
    Close { session: u64, client: SenderId },
}

/// Master → group when a lock changes hands (drives LockChanged watches and waiters).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockChanged {
    pub zxid: Zxid,
    pub lock: String,
    /// Holder hosts after the change; empty when free.
    #[serde(
        deserialize_with = "crate::codec::bounded::vec::<_, _, { crate::limits::LOCK_HOLDERS_MAX }>"
    )]
    pub holders: Vec<String>,
    pub shared: bool,
}
