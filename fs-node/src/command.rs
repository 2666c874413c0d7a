//! [`Command`]: what one replicated log entry carries in its `data`, and its encoding.
//!
//! The encoding is one version byte ([`COMMAND_VERSION`]) followed by the `protocol::codec`
//! payload, so that a node refuses an entry written by a format it does not speak instead of
//! misreading it. Decoding checks the byte limit before allocating and the batch limits after.

use protocol::codec;
use protocol::limits::{BATCH_OPS_MAX, MESSAGE_BYTES_MAX};
use protocol::message::data::{Condition, Op, RenameRequest, RequestId, UpdateRequest};
use protocol::message::lock::{LockOp, LockRequest, LockRequestOp, SessionOp};
use protocol::{NodeId, ProtocolError, SenderId, Zxid};
use serde::{Deserialize, Serialize};

/// Version byte in front of every encoded command.
pub const COMMAND_VERSION: u8 = 1;

/// Largest encoded command: one message's worth (a value at the hard ceiling plus keys).
pub const COMMAND_BYTES_MAX: usize = MESSAGE_BYTES_MAX;

/// One entry of the replicated log, applied by [`StateMachine`](crate::state::StateMachine).
///
/// Client commands carry the client's [`RequestId`] (retries are answered from the request
/// table); master records do not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A client write (Update or Rename message): `ops` apply as one atomic batch only if every
    /// condition holds. `ops` may release locks (`Op::Lock(LockOp::Release)`, a transaction
    /// commit that lets go of its locks); other lock or session ops are refused in a batch.
    Write { request: RequestId, conditions: Vec<Condition>, ops: Vec<Op> },
    /// A client lock grant or release.
    Lock { request: RequestId, op: LockOp },
    /// A client session open or close.
    Session { request: RequestId, op: SessionOp },
    /// Master record: the lease of `holder` on `lock` ran out. Applies only if that holder
    /// still holds the lock with the grant `token` (a later grant is not touched).
    ExpireLock { lock: String, holder: SenderId, token: Zxid },
    /// Master record: the session lease ran out. Applies only to the incarnation of the session
    /// opened at `opened`; deletes its ephemeral entries and releases its locks.
    ExpireSession { session: u64, opened: Zxid },
    /// Master record, the first entry of a new master's epoch: from here on the new master
    /// honours every lease for one full TTL (see `locks::LeaseKeeper::takeover`).
    Takeover { epoch: u32, master: NodeId },
}

impl Command {
    /// The Update message as a command.
    pub fn from_update(update: UpdateRequest) -> Command {
        Command::Write { request: update.request, conditions: update.conditions, ops: update.ops }
    }

    /// The Rename message as a one-op write.
    pub fn from_rename(rename: RenameRequest) -> Command {
        Command::Write {
            request: rename.request,
            conditions: Vec::new(),
            ops: vec![Op::Rename { from: rename.from, to: rename.to }],
        }
    }

    /// The Lock message as a command. `None` for `Renew`: renewals are not log records, the
    /// master answers them from its `LeaseKeeper`.
    pub fn from_lock_request(lock: LockRequest) -> Option<Command> {
        let request = lock.request;
        let client = request.client;
        Some(match lock.op {
            LockRequestOp::Acquire { lock, auth, session, host } => Command::Lock {
                request,
                op: LockOp::Grant { lock, auth, session, holder: client, host },
            },
            LockRequestOp::Release { lock, auth } => {
                Command::Lock { request, op: LockOp::Release { lock, auth, holder: client } }
            }
            LockRequestOp::OpenSession { session, ttl_ms } => {
                Command::Session { request, op: SessionOp::Open { session, client, ttl_ms } }
            }
            LockRequestOp::CloseSession { session } => {
                Command::Session { request, op: SessionOp::Close { session, client } }
            }
            LockRequestOp::Renew { .. } => return None,
        })
    }

    /// The client request this command answers, if any.
    pub fn request(&self) -> Option<RequestId> {
        match self {
            Command::Write { request, .. }
            | Command::Lock { request, .. }
            | Command::Session { request, .. } => Some(*request),
            _ => None,
        }
    }

    /// Encodes for an entry's `data`.
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        self.check_limits()?;
        let payload = codec::encode(self, COMMAND_BYTES_MAX - 1)?;
        let mut out = Vec::with_capacity(payload.len() + 1);
        out.push(COMMAND_VERSION);
        out.extend_from_slice(&payload);
        Ok(out)
    }

    /// Decodes an entry's `data`, refusing an unknown version and anything over the limits.
    pub fn decode(bytes: &[u8]) -> Result<Command, ProtocolError> {
        let (&version, payload) = bytes.split_first().ok_or(ProtocolError::Malformed {
            what: "command",
            detail: "empty entry".to_string(),
        })?;
        if version != COMMAND_VERSION {
            return Err(ProtocolError::Malformed {
                what: "command",
                detail: format!("version {version}, this node speaks {COMMAND_VERSION}"),
            });
        }
        let command: Command = codec::decode(payload, "command", COMMAND_BYTES_MAX - 1)?;
        command.check_limits()?;
        Ok(command)
    }

    fn check_limits(&self) -> Result<(), ProtocolError> {
        if let Command::Write { conditions, ops, .. } = self {
            for (what, len) in [("write ops", ops.len()), ("write conditions", conditions.len())] {
                if len > BATCH_OPS_MAX {
                    return Err(ProtocolError::TooLarge { what, len, max: BATCH_OPS_MAX });
                }
            }
        }
        Ok(())
    }
}
