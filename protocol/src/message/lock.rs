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

/// Replicated lock changes (through the log).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockOp {
    Grant { lock: String, auth: i32, session: u64, holder: SenderId, host: String },
    Release { lock: String, auth: i32, session: u64 },
    Expire { lock: String, auth: i32, session: u64 },
}

/// Replicated session changes (through the log).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionOp {
    Open { session: u64, client: SenderId, ttl_ms: u32 },
    Close { session: u64 },
    Expire { session: u64 },
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
