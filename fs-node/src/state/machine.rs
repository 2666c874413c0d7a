//! [`StateMachine`]: applies committed entries, in zxid order, to the store and the tables.
//!
//! `apply` is a pure function of (state, entry): no clock, no randomness, no iteration over
//! hash order. Every replica that applies the same entries from the same state reaches the
//! same state and computes the same [`ApplyResult`]; only the master sends the reply and the
//! notices.
//!
//! A client command runs in this order, and the first refusal stops it with nothing changed:
//! 1. the request table (a remembered request returns its first outcome; a forgotten one
//!    `RequestTooOld`);
//! 2. validation: the shape rules of `protocol::batch::check_write` (op count, keys and lock
//!    names, sizes, ops allowed in a write), then sessions named exist and belong to the
//!    client;
//! 3. conditions (`KeyZxid`, `LockToken`, `LockHeld`), all against the state before the entry;
//! 4. the store's batch check (the namespace rules of `protocol::batch`: each op against the
//!    state the earlier ops leave);
//! 5. apply: store batch, ephemeral index, lock releases; then the outcome is remembered.

use super::command::Command;
use super::requests::{Lookup, Outcome, RequestConfig, RequestTable};
use super::state_store::StateStore;
use crate::locks::{Grant, LeaseEvent, LockTable, SessionTable};
use protocol::batch;
use protocol::limits::{BATCH_OPS_MAX, KEY_BYTES_DEFAULT, VALUE_BYTES_DEFAULT};
use protocol::message::data::{
    Condition, ErrorCode, Load, Op, RequestId, UpdateNotice, WireError, WriteReply,
};
use protocol::message::lock::{LockChanged, LockGrant, LockOp, LockReply, SessionOp};
use protocol::message::replication::Entry;
use protocol::message::Message;
use protocol::{NodeId, ProtocolError, SenderId, Zxid};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use thiserror::Error;

/// Shortest session lease a client may ask for.
pub const SESSION_TTL_MS_MIN: u32 = 1_000;
/// Longest session lease a client may ask for.
pub const SESSION_TTL_MS_MAX: u32 = 600_000;
/// Default: most locks held at once.
pub const LOCKS_MAX_DEFAULT: usize = 1 << 20;
/// Default: most sessions open at once.
pub const SESSIONS_MAX_DEFAULT: usize = 1 << 20;
/// Default: most ephemeral keys one session owns. One batch's worth, so that the deletes of a
/// session's end fit one Update notice like any other batch.
pub const EPHEMERALS_PER_SESSION_MAX_DEFAULT: usize = BATCH_OPS_MAX;

/// Limits of the replicated state. Every replica must use the same values (they decide
/// outcomes), so they come from the cluster configuration, not per node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateConfig {
    pub key_bytes_max: usize,
    pub value_bytes_max: usize,
    pub locks_max: usize,
    pub sessions_max: usize,
    pub ephemerals_per_session_max: usize,
    pub requests: RequestConfig,
}

impl Default for StateConfig {
    fn default() -> StateConfig {
        StateConfig {
            key_bytes_max: KEY_BYTES_DEFAULT,
            value_bytes_max: VALUE_BYTES_DEFAULT,
            locks_max: LOCKS_MAX_DEFAULT,
            sessions_max: SESSIONS_MAX_DEFAULT,
            ephemerals_per_session_max: EPHEMERALS_PER_SESSION_MAX_DEFAULT,
            requests: RequestConfig::default(),
        }
    }
}

/// The replicated tables beside the store. Serializable so that a checkpoint can save them
/// with the store at the same zxid.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tables {
    /// The last applied entry.
    pub applied: Zxid,
    /// The last takeover record: (its zxid, epoch, master).
    pub takeover: Option<(Zxid, u32, NodeId)>,
    pub locks: LockTable,
    pub sessions: SessionTable,
    pub requests: RequestTable,
    /// The zxid of the last entry that produced an [`UpdateNotice`] (`Zxid::ZERO`: none yet):
    /// the next notice's `prev`.
    ///
    /// Why this is kept here rather than chaining notices over every log entry: most entries
    /// (lock grants and releases, sessions, takeovers, refused writes) change no data, and a
    /// chain over entries would need a notice for each of them on every client's stream. So
    /// the chain is over notice-producing entries only, and its last link is replicated state:
    /// every replica computes it in [`StateMachine::apply`] from the entries alone, it is saved
    /// in every checkpoint and snapshot with the rest of the tables (so it survives restarts
    /// and travels with a file transfer), and replaying the log after a snapshot recomputes it.
    pub last_notice: Zxid,
}

/// Version byte in front of encoded [`Tables`]. Version 2 added `last_notice`.
pub const TABLES_VERSION: u8 = 2;

/// [`Tables`] as version 1 wrote them (before `last_notice`).
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct TablesV1 {
    applied: Zxid,
    takeover: Option<(Zxid, u32, NodeId)>,
    locks: LockTable,
    sessions: SessionTable,
    requests: RequestTable,
}

impl Tables {
    /// Encodes the tables for a checkpoint (saved with the store at the same zxid).
    pub fn encode(&self, limit_bytes: usize) -> Result<Vec<u8>, ProtocolError> {
        let payload = protocol::codec::encode(self, limit_bytes.saturating_sub(1))?;
        let mut out = Vec::with_capacity(payload.len() + 1);
        out.push(TABLES_VERSION);
        out.extend_from_slice(&payload);
        Ok(out)
    }

    /// Decodes tables saved by [`Tables::encode`], allocating at most about `limit_bytes`.
    pub fn decode(bytes: &[u8], limit_bytes: usize) -> Result<Tables, ProtocolError> {
        match bytes.split_first() {
            Some((&TABLES_VERSION, payload)) => {
                protocol::codec::decode(payload, "tables", limit_bytes.saturating_sub(1))
            }
            Some((1, payload)) => {
                let v1: TablesV1 =
                    protocol::codec::decode(payload, "tables", limit_bytes.saturating_sub(1))?;
                // The last notice is not known: `applied` is a safe stand-in. If the entry at
                // `applied` produced a notice it is exactly right; if not, no receiver holds
                // it as its position, so the next notice's `prev` breaks every receiver's
                // chain and caches flush (a spurious flush, never a missed change).
                Ok(Tables {
                    applied: v1.applied,
                    takeover: v1.takeover,
                    locks: v1.locks,
                    sessions: v1.sessions,
                    requests: v1.requests,
                    last_notice: v1.applied,
                })
            }
            Some((&version, _)) => Err(ProtocolError::Malformed {
                what: "tables",
                detail: format!("version {version}, this node reads {TABLES_VERSION}"),
            }),
            None => Err(ProtocolError::Incomplete { needed: 1 }),
        }
    }
}

/// What the master multicasts after an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// Data changed (cache group): the applied data ops, session-expiry deletes included.
    Update(UpdateNotice),
    /// A lock changed hands.
    LockChanged(LockChanged),
}

/// The answer to the client whose command the entry carried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub request: RequestId,
    pub outcome: Outcome,
    /// The request was already applied by an earlier entry; this is its first outcome.
    pub duplicate: bool,
}

impl Reply {
    /// The reply message the master sends the client (WriteReply or LockReply).
    pub fn into_message(self, load: Load) -> Message {
        match self.outcome {
            Outcome::Write(result) => {
                Message::WriteReply(WriteReply { request: self.request, load, result })
            }
            Outcome::Lock(result) => {
                Message::LockReply(LockReply { request: self.request, load, result })
            }
        }
    }
}

impl Notice {
    /// The message the master multicasts for this notice.
    pub fn into_message(self) -> Message {
        match self {
            Notice::Update(update) => Message::UpdateNotice(update),
            Notice::LockChanged(changed) => Message::LockChanged(changed),
        }
    }
}

/// Everything one applied entry produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyResult {
    pub zxid: Zxid,
    /// `None` for master records.
    pub reply: Option<Reply>,
    pub notices: Vec<Notice>,
    /// For the master's `LeaseKeeper::observe`; followers ignore them.
    pub leases: Vec<LeaseEvent>,
}

/// Why an entry could not be applied. Each is fatal for this node's state machine (the same
/// entry fails the same way on every replica, or the store is broken here): stop and repair.
#[derive(Debug, Error)]
pub enum StateError {
    #[error("entry {zxid} is at or below the applied zxid {applied}; entries must come in order")]
    OutOfOrder { zxid: Zxid, applied: Zxid },
    #[error("entry {zxid} does not decode ({source}); is this node older than the master?")]
    BadEntry { zxid: Zxid, source: ProtocolError },
    #[error("the store failed applying entry {zxid}: {source}")]
    Store { zxid: Zxid, source: Box<dyn std::error::Error + Send + Sync> },
    #[error("invariant broken applying entry {zxid}: {detail}")]
    Invariant { zxid: Zxid, detail: String },
}

/// The replicated state machine over a [`StateStore`].
#[derive(Debug)]
pub struct StateMachine<S: StateStore> {
    store: S,
    tables: Tables,
    config: StateConfig,
}

fn wire(code: ErrorCode, message: impl Into<String>) -> WireError {
    WireError { code, message: message.into() }
}

/// Effects of one entry, gathered while applying.
#[derive(Default)]
struct Effects {
    notices: Vec<Notice>,
    leases: Vec<LeaseEvent>,
}

impl<S: StateStore> StateMachine<S> {
    /// A machine over `store` with empty tables (a new cluster).
    pub fn new(store: S, config: StateConfig) -> StateMachine<S> {
        StateMachine::restore(store, Tables::default(), config)
    }

    /// A machine over `store` with tables saved at the same zxid as the store.
    pub fn restore(store: S, tables: Tables, config: StateConfig) -> StateMachine<S> {
        StateMachine { store, tables, config }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    pub fn config(&self) -> &StateConfig {
        &self.config
    }

    pub fn applied(&self) -> Zxid {
        self.tables.applied
    }

    /// The remembered outcome of `request`, if any: the master may answer a retry from it
    /// without proposing.
    pub fn lookup(&self, request: RequestId) -> Lookup {
        self.tables.requests.lookup(request)
    }

    /// Applies one committed entry. Entries must come in zxid order.
    pub fn apply(&mut self, entry: &Entry) -> Result<ApplyResult, StateError> {
        let command = Command::decode(&entry.data)
            .map_err(|source| StateError::BadEntry { zxid: entry.zxid, source })?;
        self.apply_command(entry.zxid, command)
    }

    /// Applies a decoded command as the entry `zxid`.
    pub fn apply_command(
        &mut self,
        zxid: Zxid,
        command: Command,
    ) -> Result<ApplyResult, StateError> {
        if zxid <= self.tables.applied {
            return Err(StateError::OutOfOrder { zxid, applied: self.tables.applied });
        }
        let mut effects = Effects::default();
        let reply = match command.request() {
            Some(request) => Some(self.apply_client(zxid, request, command, &mut effects)?),
            None => {
                self.apply_master(zxid, command, &mut effects)?;
                None
            }
        };
        let mut updates = 0;
        for notice in &mut effects.notices {
            if let Notice::Update(update) = notice {
                update.prev = self.tables.last_notice;
                self.tables.last_notice = zxid;
                updates += 1;
            }
        }
        if updates > 1 {
            // Two notices with one zxid would break the chain for every receiver.
            return Err(StateError::Invariant {
                zxid,
                detail: format!("the entry produced {updates} update notices; at most one"),
            });
        }
        self.tables.applied = zxid;
        Ok(ApplyResult { zxid, reply, notices: effects.notices, leases: effects.leases })
    }

    fn apply_client(
        &mut self,
        zxid: Zxid,
        request: RequestId,
        command: Command,
        effects: &mut Effects,
    ) -> Result<Reply, StateError> {
        let lock_like = !matches!(command, Command::Write { .. });
        match self.tables.requests.lookup(request) {
            Lookup::Duplicate(outcome) => {
                return Ok(Reply { request, outcome, duplicate: true });
            }
            Lookup::TooOld { horizon } => {
                let error = wire(
                    ErrorCode::RequestTooOld,
                    format!(
                        "request {} of client {:#x} is at or below seq {horizon}, whose outcomes \
                         are no longer remembered: it was not applied again; read to learn \
                         whether it had been",
                        request.seq, request.client
                    ),
                );
                let outcome =
                    if lock_like { Outcome::Lock(Err(error)) } else { Outcome::Write(Err(error)) };
                return Ok(Reply { request, outcome, duplicate: false });
            }
            Lookup::New => {}
        }
        let outcome = match command {
            Command::Write { conditions, ops, .. } => {
                Outcome::Write(self.write(zxid, request.client, &conditions, &ops, effects)?)
            }
            Command::Lock { op, .. } => Outcome::Lock(self.lock(zxid, request.client, op, effects)),
            Command::Session { op, .. } => {
                Outcome::Lock(self.session(zxid, request.client, op, effects)?)
            }
            _ => unreachable!("master records carry no request"),
        };
        self.tables.requests.record(request, zxid, outcome.clone(), &self.config.requests);
        Ok(Reply { request, outcome, duplicate: false })
    }

    fn apply_master(
        &mut self,
        zxid: Zxid,
        command: Command,
        effects: &mut Effects,
    ) -> Result<(), StateError> {
        match command {
            Command::ExpireLock { lock, holder, token } => {
                // Only the grant the master timed out: a later grant keeps its lock.
                let current = self.tables.locks.get(&lock).and_then(|l| l.holders.get(&holder));
                if current.is_some_and(|h| h.token == token) {
                    self.release_lock(zxid, &lock, holder, effects);
                }
            }
            Command::ExpireSession { session, opened } => {
                let current = self.tables.sessions.get(session);
                if current.is_some_and(|s| s.opened == opened) {
                    self.end_session(zxid, session, effects)?;
                }
            }
            Command::Takeover { epoch, master } => {
                self.tables.takeover = Some((zxid, epoch, master));
            }
            Command::Write { .. } | Command::Lock { .. } | Command::Session { .. } => {
                unreachable!("client commands carry a request")
            }
        }
        Ok(())
    }

    /// A client write. `Err` only for a fatal store failure; a refusal is `Ok(Err(..))`.
    fn write(
        &mut self,
        zxid: Zxid,
        client: SenderId,
        conditions: &[Condition],
        ops: &[Op],
        effects: &mut Effects,
    ) -> Result<Result<Zxid, WireError>, StateError> {
        let releases = match self.validate_write(client, conditions, ops) {
            Ok(releases) => releases,
            Err(refused) => return Ok(Err(refused)),
        };
        if let Err(refused) = self.store.check(ops, self.config.key_bytes_max) {
            return Ok(Err(refused));
        }
        let has_data = ops.iter().any(|op| !matches!(op, Op::Lock(_) | Op::Session(_)));
        if has_data {
            self.store
                .apply(zxid, ops)
                .map_err(|e| StateError::Store { zxid, source: Box::new(e) })?;
            for op in ops {
                self.tables.sessions.follow(op);
            }
            let data: Vec<Op> = ops
                .iter()
                .filter(|op| !matches!(op, Op::Lock(_) | Op::Session(_)))
                .cloned()
                .collect();
            effects.notices.push(Notice::Update(UpdateNotice {
                zxid,
                prev: Zxid::ZERO, // set by `apply_command`
                ops: data,
            }));
        }
        for lock in releases {
            self.release_lock(zxid, &lock, client, effects);
        }
        Ok(Ok(zxid))
    }

    /// Steps 2 and 3 for a write; returns the locks the batch releases.
    fn validate_write(
        &self,
        client: SenderId,
        conditions: &[Condition],
        ops: &[Op],
    ) -> Result<Vec<String>, WireError> {
        let limits = batch::Limits {
            key_bytes_max: self.config.key_bytes_max,
            value_bytes_max: self.config.value_bytes_max,
        };
        batch::check_write(ops, conditions, &limits, Some(client)).map_err(|e| e.to_wire())?;
        let mut releases = BTreeSet::new();
        let mut ephemerals: BTreeMap<u64, usize> = BTreeMap::new();
        for (index, op) in ops.iter().enumerate() {
            match op {
                Op::Put { key, ephemeral: Some(session), .. } => {
                    self.check_session(*session, client)?;
                    // Counts each put of a key the session does not own yet as new (a key put
                    // twice in one batch counts twice: a conservative bound).
                    let count = ephemerals.entry(*session).or_insert_with(|| {
                        self.tables.sessions.get(*session).map_or(0, |s| s.ephemerals.len())
                    });
                    if self.tables.sessions.owner(key) != Some(*session) {
                        *count += 1;
                    }
                    if *count > self.config.ephemerals_per_session_max {
                        return Err(wire(
                            ErrorCode::TooLarge,
                            format!(
                                "op {index}: session {session:#x} would own more than {} \
                                 ephemeral keys",
                                self.config.ephemerals_per_session_max
                            ),
                        ));
                    }
                }
                Op::Lock(LockOp::Release { lock, auth, .. }) => {
                    self.tables.locks.check_held(lock, *auth, client)?;
                    if !releases.insert(lock.clone()) {
                        return Err(wire(
                            ErrorCode::LockNotHeld,
                            format!("op {index}: lock {lock} is released twice in one batch"),
                        ));
                    }
                }
                _ => {}
            }
        }
        for condition in conditions {
            self.check_condition(client, condition)?;
        }
        Ok(releases.into_iter().collect())
    }

    fn check_condition(&self, client: SenderId, condition: &Condition) -> Result<(), WireError> {
        match condition {
            Condition::KeyZxid { key, zxid } => {
                let current = self.store.stat(key).map(|(_, z)| z).unwrap_or(Zxid::ZERO);
                if current != *zxid {
                    let shown = if current == Zxid::ZERO {
                        "absent".to_string()
                    } else {
                        current.to_string()
                    };
                    let wanted =
                        if *zxid == Zxid::ZERO { "absent".to_string() } else { zxid.to_string() };
                    return Err(wire(
                        ErrorCode::ConditionFailed,
                        format!("{key} is {shown}, the write expected {wanted}"),
                    ));
                }
            }
            Condition::LockToken { lock, token } => {
                if !self.tables.locks.holds_token(lock, *token) {
                    return Err(wire(
                        ErrorCode::LockNotHeld,
                        format!("lock {lock} is no longer held with fencing token {token}"),
                    ));
                }
            }
            Condition::LockHeld { lock, auth } => {
                self.tables.locks.check_held(lock, *auth, client)?;
            }
        }
        Ok(())
    }

    /// The session exists and belongs to `client`.
    fn check_session(&self, session: u64, client: SenderId) -> Result<(), WireError> {
        match self.tables.sessions.get(session) {
            None => Err(wire(
                ErrorCode::SessionExpired,
                format!("session {session:#x} has expired or was never opened"),
            )),
            Some(s) if s.client != client => Err(wire(
                ErrorCode::BadAuth,
                format!("session {session:#x} belongs to another client"),
            )),
            Some(_) => Ok(()),
        }
    }

    fn lock(
        &mut self,
        zxid: Zxid,
        client: SenderId,
        op: LockOp,
        effects: &mut Effects,
    ) -> Result<LockGrant, WireError> {
        match op {
            LockOp::Grant { lock, auth, session, holder, host } => {
                if holder != client {
                    return Err(wire(
                        ErrorCode::BadAuth,
                        "a client can only take locks for itself",
                    ));
                }
                if session != 0 {
                    self.check_session(session, client)?;
                }
                let grant = self.tables.locks.grant(
                    zxid,
                    &lock,
                    auth,
                    session,
                    holder,
                    &host,
                    self.config.locks_max,
                )?;
                if let Grant::New(token) = grant {
                    if session != 0 {
                        self.tables.sessions.add_lock(session, &lock);
                    }
                    effects
                        .notices
                        .push(Notice::LockChanged(self.tables.locks.changed(zxid, &lock)));
                    effects.leases.push(LeaseEvent::LockGranted {
                        lock,
                        holder,
                        auth,
                        session,
                        token,
                    });
                }
                Ok(LockGrant::Granted { token: grant.token() })
            }
            LockOp::Release { lock, auth, holder } => {
                if holder != client {
                    return Err(wire(
                        ErrorCode::BadAuth,
                        "a client can only release its own locks",
                    ));
                }
                crate::locks::table::validate_request(&lock, auth)?;
                self.tables.locks.check_held(&lock, auth, holder)?;
                self.release_lock(zxid, &lock, holder, effects);
                Ok(LockGrant::Released)
            }
        }
    }

    /// Removes `holder` from `lock` (already checked), with its notice and lease event.
    fn release_lock(&mut self, zxid: Zxid, lock: &str, holder: SenderId, effects: &mut Effects) {
        let Some(released) = self.tables.locks.release(lock, holder) else { return };
        if released.session != 0 {
            self.tables.sessions.remove_lock(released.session, lock);
        }
        effects.notices.push(Notice::LockChanged(self.tables.locks.changed(zxid, lock)));
        effects.leases.push(LeaseEvent::LockReleased {
            lock: lock.to_string(),
            holder,
            token: released.token,
        });
    }

    fn session(
        &mut self,
        zxid: Zxid,
        client: SenderId,
        op: SessionOp,
        effects: &mut Effects,
    ) -> Result<Result<LockGrant, WireError>, StateError> {
        match op {
            SessionOp::Open { session, client: owner, ttl_ms } => {
                if owner != client || session == 0 {
                    return Ok(Err(wire(
                        ErrorCode::BadRequest,
                        "a session is opened by its own client, with a non-zero id",
                    )));
                }
                if !(SESSION_TTL_MS_MIN..=SESSION_TTL_MS_MAX).contains(&ttl_ms) {
                    return Ok(Err(wire(
                        ErrorCode::BadRequest,
                        format!(
                            "session lease {ttl_ms} ms is outside \
                             {SESSION_TTL_MS_MIN}..={SESSION_TTL_MS_MAX} ms"
                        ),
                    )));
                }
                if self.tables.sessions.get(session).is_some() {
                    return Ok(Err(wire(
                        ErrorCode::AlreadyExists,
                        format!("session {session:#x} is already open; draw another id"),
                    )));
                }
                if self.tables.sessions.len() >= self.config.sessions_max {
                    return Ok(Err(wire(
                        ErrorCode::Unavailable,
                        format!("{} sessions are open, the most allowed", self.config.sessions_max),
                    )));
                }
                self.tables.sessions.open(session, client, ttl_ms, zxid);
                effects.leases.push(LeaseEvent::SessionOpened {
                    session,
                    client,
                    ttl_ms,
                    opened: zxid,
                });
                Ok(Ok(LockGrant::SessionOpened { lease_ms: ttl_ms }))
            }
            SessionOp::Close { session, client: owner } => {
                if owner != client {
                    return Ok(Err(wire(
                        ErrorCode::BadAuth,
                        "a client can only close its own sessions",
                    )));
                }
                if let Err(e) = self.check_session(session, client) {
                    return Ok(Err(e));
                }
                self.end_session(zxid, session, effects)?;
                Ok(Ok(LockGrant::SessionClosed))
            }
        }
    }

    /// Ends a session (close or expiry): deletes its ephemerals, releases its locks.
    fn end_session(
        &mut self,
        zxid: Zxid,
        session: u64,
        effects: &mut Effects,
    ) -> Result<(), StateError> {
        let Some(ended) = self.tables.sessions.remove(session) else { return Ok(()) };
        let deletes: Vec<Op> = ended
            .ephemerals
            .iter()
            .map(|key| Op::Delete { key: key.clone(), recursive: false })
            .collect();
        if !deletes.is_empty() {
            if let Err(e) = self.store.check(&deletes, self.config.key_bytes_max) {
                return Err(StateError::Invariant {
                    zxid,
                    detail: format!("ephemeral index out of step with the store: {}", e.message),
                });
            }
            self.store
                .apply(zxid, &deletes)
                .map_err(|e| StateError::Store { zxid, source: Box::new(e) })?;
            effects.notices.push(Notice::Update(UpdateNotice {
                zxid,
                prev: Zxid::ZERO, // set by `apply_command`
                ops: deletes,
            }));
        }
        for lock in &ended.locks {
            let holder = self
                .tables
                .locks
                .get(lock)
                .and_then(|l| l.holders.iter().find(|(_, h)| h.session == session))
                .map(|(id, _)| *id);
            if let Some(holder) = holder {
                self.release_lock(zxid, lock, holder, effects);
            }
        }
        effects.leases.push(LeaseEvent::SessionEnded { session, opened: ended.opened });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tables written by version 1 (no `last_notice`) still decode, with `applied` standing in
    /// for the last notice; an unknown version is refused, naming it.
    #[test]
    fn version_1_tables_decode_with_applied_as_the_last_notice() {
        let applied = Zxid::new(3, 17);
        let v1 = TablesV1 {
            applied,
            takeover: Some((Zxid::new(3, 1), 3, 2)),
            locks: LockTable::default(),
            sessions: SessionTable::default(),
            requests: RequestTable::default(),
        };
        let mut bytes = vec![1u8];
        bytes.extend(protocol::codec::encode(&v1, 1 << 20).unwrap());
        let tables = Tables::decode(&bytes, 1 << 20).unwrap();
        assert_eq!((tables.applied, tables.last_notice), (applied, applied));
        assert_eq!(tables.takeover, v1.takeover);
        let current = Tables { last_notice: Zxid::new(3, 9), ..tables };
        let back = Tables::decode(&current.encode(1 << 20).unwrap(), 1 << 20).unwrap();
        assert_eq!(back, current);
        bytes[0] = 9;
        let error = Tables::decode(&bytes, 1 << 20).unwrap_err().to_string();
        assert!(error.contains("version 9"), "{error}");
    }
}
