//! [`LeaseKeeper`]: the master's in-memory lease clock for locks and sessions. IO-free and
//! clock-free: the caller passes `now_ms` from a monotonic clock.
//!
//! Only the master has one. It learns grants, releases, opens and ends from the
//! [`LeaseEvent`]s of applied entries ([`LeaseKeeper::observe`]), extends deadlines on renewal
//! ([`LeaseKeeper::renew`], never a log record), and on [`LeaseKeeper::tick`] returns the
//! expiry commands to propose. A new master builds it with [`LeaseKeeper::takeover`], which
//! starts every existing lease at `now + TTL`: leases granted by the old master are honoured
//! for one full TTL from the takeover, whatever the old master's clock said.

use super::{LockTable, SessionTable};
use crate::command::Command;
use protocol::message::data::{ErrorCode, Load, WireError};
use protocol::message::lock::{LockGrant, LockReply, LockRequest, LockRequestOp};
use protocol::{SenderId, Zxid};
use std::collections::{BTreeMap, BTreeSet};

/// Default lock lease (the design's 5 s).
pub const LOCK_TTL_MS_DEFAULT: u32 = 5_000;

/// Most lock names one renewal may list.
pub const RENEW_LOCKS_MAX: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    /// How long a lock lives without renewal.
    pub lock_ttl_ms: u32,
}

impl Default for LeaseConfig {
    fn default() -> LeaseConfig {
        LeaseConfig { lock_ttl_ms: LOCK_TTL_MS_DEFAULT }
    }
}

/// A change to the leases, reported by the state machine for each applied entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseEvent {
    LockGranted { lock: String, holder: SenderId, auth: i32, session: u64, token: Zxid },
    LockReleased { lock: String, holder: SenderId, token: Zxid },
    SessionOpened { session: u64, client: SenderId, ttl_ms: u32, opened: Zxid },
    SessionEnded { session: u64, opened: Zxid },
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct LockLease {
    auth: i32,
    token: Zxid,
    deadline_ms: u64,
    /// An expiry was proposed: renewals are refused from then on.
    expiring: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct SessionLease {
    client: SenderId,
    ttl_ms: u32,
    opened: Zxid,
    deadline_ms: u64,
    expiring: bool,
}

/// Names one lease in the deadline index. Sessions order before locks at equal deadlines.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum LeaseId {
    Session(u64),
    Lock(String, SenderId),
}

/// The master's lease deadlines. Deadlines are master-local state, never replicated.
///
/// Cost: `tick` is O(due · log n) through a deadline index; `renew` O(k · log n) for k locks.
#[derive(Clone, Debug)]
pub struct LeaseKeeper {
    config: LeaseConfig,
    locks: BTreeMap<(String, SenderId), LockLease>,
    sessions: BTreeMap<u64, SessionLease>,
    /// (deadline, lease) for every lease not yet reported expired.
    due: BTreeSet<(u64, LeaseId)>,
}

impl LeaseKeeper {
    /// A keeper with no leases (a cluster's very first master, before any entry).
    pub fn new(config: LeaseConfig) -> LeaseKeeper {
        LeaseKeeper {
            config,
            locks: BTreeMap::new(),
            sessions: BTreeMap::new(),
            due: BTreeSet::new(),
        }
    }

    /// A new master's keeper: every lock and session in the applied tables gets a full TTL
    /// from `now_ms`. Call it once the new master has applied everything committed before its
    /// takeover.
    pub fn takeover(
        config: LeaseConfig,
        locks: &LockTable,
        sessions: &SessionTable,
        now_ms: u64,
    ) -> LeaseKeeper {
        let mut keeper = LeaseKeeper::new(config);
        for (name, lock) in locks.iter() {
            for (holder, h) in &lock.holders {
                keeper.put_lock(name.clone(), *holder, lock.auth, h.token, now_ms);
            }
        }
        for (id, s) in sessions.iter() {
            keeper.put_session(*id, s.client, s.ttl_ms, s.opened, now_ms);
        }
        keeper
    }

    pub fn config(&self) -> LeaseConfig {
        self.config
    }

    /// Number of (lock, holder) leases and of session leases tracked.
    pub fn counts(&self) -> (usize, usize) {
        (self.locks.len(), self.sessions.len())
    }

    fn lock_deadline_ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_add(u64::from(self.config.lock_ttl_ms))
    }

    fn put_lock(&mut self, lock: String, holder: SenderId, auth: i32, token: Zxid, now_ms: u64) {
        let deadline_ms = self.lock_deadline_ms(now_ms);
        let key = (lock, holder);
        if let Some(old) = self.locks.get(&key) {
            self.due.remove(&(old.deadline_ms, LeaseId::Lock(key.0.clone(), holder)));
        }
        self.due.insert((deadline_ms, LeaseId::Lock(key.0.clone(), holder)));
        self.locks.insert(key, LockLease { auth, token, deadline_ms, expiring: false });
    }

    fn put_session(
        &mut self,
        session: u64,
        client: SenderId,
        ttl_ms: u32,
        opened: Zxid,
        now_ms: u64,
    ) {
        let deadline_ms = now_ms.saturating_add(u64::from(ttl_ms));
        if let Some(old) = self.sessions.get(&session) {
            self.due.remove(&(old.deadline_ms, LeaseId::Session(session)));
        }
        self.due.insert((deadline_ms, LeaseId::Session(session)));
        let lease = SessionLease { client, ttl_ms, opened, deadline_ms, expiring: false };
        self.sessions.insert(session, lease);
    }

    /// Follows the leases of one applied entry; new leases run from `now_ms`.
    pub fn observe(&mut self, events: &[LeaseEvent], now_ms: u64) {
        for event in events {
            match event {
                LeaseEvent::LockGranted { lock, holder, auth, token, .. } => {
                    self.put_lock(lock.clone(), *holder, *auth, *token, now_ms);
                }
                LeaseEvent::LockReleased { lock, holder, token } => {
                    let key = (lock.clone(), *holder);
                    if let Some(l) = self.locks.get(&key).filter(|l| l.token == *token) {
                        self.due.remove(&(l.deadline_ms, LeaseId::Lock(lock.clone(), *holder)));
                        self.locks.remove(&key);
                    }
                }
                LeaseEvent::SessionOpened { session, client, ttl_ms, opened } => {
                    self.put_session(*session, *client, *ttl_ms, *opened, now_ms);
                }
                LeaseEvent::SessionEnded { session, opened } => {
                    if let Some(s) = self.sessions.get(session).filter(|s| s.opened == *opened) {
                        self.due.remove(&(s.deadline_ms, LeaseId::Session(*session)));
                        self.sessions.remove(session);
                    }
                }
            }
        }
    }

    /// Renews `session` (0: none) and every listed `(lock, auth)` held by `client`, all or
    /// nothing: if any is not held with that auth, or is already being expired, nothing is
    /// renewed and the error names it. Returns the shortest lease now granted, in ms. A
    /// renewal never shortens a lease.
    pub fn renew(
        &mut self,
        now_ms: u64,
        client: SenderId,
        session: u64,
        locks: &[(String, i32)],
    ) -> Result<u32, WireError> {
        if locks.len() > RENEW_LOCKS_MAX {
            return Err(WireError {
                code: ErrorCode::TooLarge,
                message: format!("renewal lists {} locks, over {RENEW_LOCKS_MAX}", locks.len()),
            });
        }
        let mut lease_ms = u32::MAX;
        if session != 0 {
            let s =
                self.sessions.get(&session).filter(|s| !s.expiring).ok_or_else(|| WireError {
                    code: ErrorCode::SessionExpired,
                    message: format!("session {session:#x} has expired or was never opened"),
                })?;
            if s.client != client {
                return Err(WireError {
                    code: ErrorCode::BadAuth,
                    message: format!("session {session:#x} belongs to another client"),
                });
            }
            lease_ms = s.ttl_ms;
        }
        for (name, auth) in locks {
            match self.locks.get(&(name.clone(), client)) {
                Some(l) if l.expiring => {
                    return Err(WireError {
                        code: ErrorCode::LockNotHeld,
                        message: format!("lock {name} has expired"),
                    });
                }
                Some(l) if l.auth != *auth => {
                    return Err(WireError {
                        code: ErrorCode::BadAuth,
                        message: format!("wrong auth word for lock {name}"),
                    });
                }
                Some(_) => lease_ms = lease_ms.min(self.config.lock_ttl_ms),
                None => {
                    return Err(WireError {
                        code: ErrorCode::LockNotHeld,
                        message: format!("lock {name} is not held by this client"),
                    });
                }
            }
        }
        // Everything checked: extend.
        if let Some(s) = self.sessions.get_mut(&session) {
            let deadline_ms = now_ms.saturating_add(u64::from(s.ttl_ms)).max(s.deadline_ms);
            self.due.remove(&(s.deadline_ms, LeaseId::Session(session)));
            self.due.insert((deadline_ms, LeaseId::Session(session)));
            s.deadline_ms = deadline_ms;
        }
        let lock_deadline_ms = self.lock_deadline_ms(now_ms);
        for (name, _) in locks {
            if let Some(l) = self.locks.get_mut(&(name.clone(), client)) {
                let deadline_ms = l.deadline_ms.max(lock_deadline_ms);
                self.due.remove(&(l.deadline_ms, LeaseId::Lock(name.clone(), client)));
                self.due.insert((deadline_ms, LeaseId::Lock(name.clone(), client)));
                l.deadline_ms = deadline_ms;
            }
        }
        if lease_ms == u32::MAX {
            lease_ms = self.config.lock_ttl_ms;
        }
        Ok(lease_ms)
    }

    /// Answers a Lock message if it is a renewal (`None` otherwise: those go through the log
    /// as [`Command::from_lock_request`] says).
    pub fn answer_renewal(
        &mut self,
        now_ms: u64,
        request: &LockRequest,
        load: Load,
    ) -> Option<LockReply> {
        let LockRequestOp::Renew { session, locks } = &request.op else { return None };
        let result = self
            .renew(now_ms, request.request.client, *session, locks)
            .map(|lease_ms| LockGrant::Renewed { lease_ms });
        Some(LockReply { request: request.request, load, result })
    }

    /// The expiry commands due at `now_ms` (a deadline at or before `now_ms` has passed), in
    /// deadline order (ties: sessions by id, then locks by name and holder). Each lease is
    /// reported once; it is then refused renewal until the applied expiry removes it.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Command> {
        let mut commands = Vec::new();
        while let Some((deadline_ms, _)) = self.due.first() {
            if *deadline_ms > now_ms {
                break;
            }
            let Some((_, id)) = self.due.pop_first() else { break };
            match id {
                LeaseId::Session(session) => {
                    if let Some(s) = self.sessions.get_mut(&session) {
                        s.expiring = true;
                        commands.push(Command::ExpireSession { session, opened: s.opened });
                    }
                }
                LeaseId::Lock(lock, holder) => {
                    if let Some(l) = self.locks.get_mut(&(lock.clone(), holder)) {
                        l.expiring = true;
                        commands.push(Command::ExpireLock { lock, holder, token: l.token });
                    }
                }
            }
        }
        commands
    }

    /// The earliest deadline not yet reported: when `tick` next has work.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.due.first().map(|(deadline_ms, _)| *deadline_ms)
    }
}
