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
use crate::state::Command;
use protocol::message::data::{ErrorCode, WireError};
use protocol::{SenderId, Zxid};
use std::collections::BTreeMap;

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

/// The master's lease deadlines. Deadlines are master-local state, never replicated.
#[derive(Clone, Debug)]
pub struct LeaseKeeper {
    config: LeaseConfig,
    locks: BTreeMap<(String, SenderId), LockLease>,
    sessions: BTreeMap<u64, SessionLease>,
}

impl LeaseKeeper {
    /// A keeper with no leases (a cluster's very first master, before any entry).
    pub fn new(config: LeaseConfig) -> LeaseKeeper {
        LeaseKeeper { config, locks: BTreeMap::new(), sessions: BTreeMap::new() }
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
        let lock_deadline_ms = now_ms.saturating_add(u64::from(config.lock_ttl_ms));
        for (name, lock) in locks.iter() {
            for (holder, h) in &lock.holders {
                let lease = LockLease {
                    auth: lock.auth,
                    token: h.token,
                    deadline_ms: lock_deadline_ms,
                    expiring: false,
                };
                keeper.locks.insert((name.clone(), *holder), lease);
            }
        }
        for (id, s) in sessions.iter() {
            let lease = SessionLease {
                client: s.client,
                ttl_ms: s.ttl_ms,
                opened: s.opened,
                deadline_ms: now_ms.saturating_add(u64::from(s.ttl_ms)),
                expiring: false,
            };
            keeper.sessions.insert(*id, lease);
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

    /// Follows the leases of one applied entry; new leases run from `now_ms`.
    pub fn observe(&mut self, events: &[LeaseEvent], now_ms: u64) {
        for event in events {
            match event {
                LeaseEvent::LockGranted { lock, holder, auth, token, .. } => {
                    let lease = LockLease {
                        auth: *auth,
                        token: *token,
                        deadline_ms: now_ms.saturating_add(u64::from(self.config.lock_ttl_ms)),
                        expiring: false,
                    };
                    self.locks.insert((lock.clone(), *holder), lease);
                }
                LeaseEvent::LockReleased { lock, holder, token } => {
                    let key = (lock.clone(), *holder);
                    if self.locks.get(&key).is_some_and(|l| l.token == *token) {
                        self.locks.remove(&key);
                    }
                }
                LeaseEvent::SessionOpened { session, client, ttl_ms, opened } => {
                    let lease = SessionLease {
                        client: *client,
                        ttl_ms: *ttl_ms,
                        opened: *opened,
                        deadline_ms: now_ms.saturating_add(u64::from(*ttl_ms)),
                        expiring: false,
                    };
                    self.sessions.insert(*session, lease);
                }
                LeaseEvent::SessionEnded { session, opened } => {
                    if self.sessions.get(session).is_some_and(|s| s.opened == *opened) {
                        self.sessions.remove(session);
                    }
                }
            }
        }
    }

    /// Renews `session` (0: none) and every listed `(lock, auth)` held by `client`, all or
    /// nothing: if any is not held with that auth, or is already being expired, nothing is
    /// renewed and the error names it. Returns the shortest lease now granted, in ms.
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
            s.deadline_ms = now_ms.saturating_add(u64::from(s.ttl_ms));
        }
        let lock_deadline_ms = now_ms.saturating_add(u64::from(self.config.lock_ttl_ms));
        for (name, _) in locks {
            if let Some(l) = self.locks.get_mut(&(name.clone(), client)) {
                l.deadline_ms = l.deadline_ms.max(lock_deadline_ms);
            }
        }
        if lease_ms == u32::MAX {
            lease_ms = self.config.lock_ttl_ms;
        }
        Ok(lease_ms)
    }

    /// The expiry commands due at `now_ms` (a deadline at or before `now_ms` has passed), in a
    /// fixed order: sessions by id, then locks by (name, holder). Each lease is reported once;
    /// it is then refused renewal until the applied expiry removes it.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Command> {
        let mut due = Vec::new();
        for (id, s) in self.sessions.iter_mut() {
            if !s.expiring && s.deadline_ms <= now_ms {
                s.expiring = true;
                due.push(Command::ExpireSession { session: *id, opened: s.opened });
            }
        }
        for ((name, holder), l) in self.locks.iter_mut() {
            if !l.expiring && l.deadline_ms <= now_ms {
                l.expiring = true;
                due.push(Command::ExpireLock {
                    lock: name.clone(),
                    holder: *holder,
                    token: l.token,
                });
            }
        }
        due
    }

    /// The earliest deadline not yet reported: when `tick` next has work.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        let sessions = self.sessions.values().filter(|s| !s.expiring).map(|s| s.deadline_ms);
        let locks = self.locks.values().filter(|l| !l.expiring).map(|l| l.deadline_ms);
        sessions.chain(locks).min()
    }
}
