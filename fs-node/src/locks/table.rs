//! [`LockTable`]: every held lock, its auth word and its holders, as applied from the log.

use protocol::key;
use protocol::limits::{LOCK_HOLDERS_MAX, NAME_BYTES_MAX};
use protocol::message::data::{ErrorCode, WireError};
use protocol::message::lock::{LockChanged, AUTH_SHARED};
use protocol::{SenderId, Zxid};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One holder of a lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The holder's host name, shown to whoever is refused.
    pub host: String,
    /// The session the lock is tied to (0: none).
    pub session: u64,
    /// The fencing token: the zxid of this holder's grant.
    pub token: Zxid,
}

/// A held lock. A lock with no holder does not exist (it is removed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    /// [`AUTH_SHARED`] for shared holders, otherwise the exclusive holder's auth word.
    pub auth: i32,
    /// Holders by client id; exactly one unless shared.
    pub holders: BTreeMap<SenderId, Holder>,
}

impl Lock {
    pub fn is_shared(&self) -> bool {
        self.auth == AUTH_SHARED
    }

    /// Holder hosts in client-id order.
    pub fn hosts(&self) -> Vec<String> {
        self.holders.values().map(|h| h.host.clone()).collect()
    }
}

/// What a grant did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grant {
    /// A new holder, with the token of this grant.
    New(Zxid),
    /// The client already held the lock with this auth word: its existing token, nothing changed.
    Existing(Zxid),
}

impl Grant {
    pub fn token(self) -> Zxid {
        match self {
            Grant::New(t) | Grant::Existing(t) => t,
        }
    }
}

/// Every held lock by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockTable {
    locks: BTreeMap<String, Lock>,
}

fn wire(code: ErrorCode, message: String) -> WireError {
    WireError { code, message }
}

/// Checks a lock name (the key rules, at most [`NAME_BYTES_MAX`]) and an auth word.
pub fn validate_request(name: &str, auth: i32) -> Result<(), WireError> {
    key::validate_mutable(name, NAME_BYTES_MAX)
        .map_err(|e| wire(ErrorCode::BadKey, format!("lock name: {e}")))?;
    if auth < AUTH_SHARED {
        return Err(wire(
            ErrorCode::BadAuth,
            format!("auth word {auth} is invalid: use 1 (shared) or 2..=i32::MAX (exclusive)"),
        ));
    }
    Ok(())
}

impl LockTable {
    pub fn get(&self, name: &str) -> Option<&Lock> {
        self.locks.get(name)
    }

    pub fn len(&self) -> usize {
        self.locks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.locks.is_empty()
    }

    /// Every held lock in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Lock)> {
        self.locks.iter()
    }

    /// Grants `name` to `holder` at `zxid` under the lock rules: a free lock goes to anyone;
    /// a shared lock (auth 1) takes more shared holders; any other auth word on a held lock is
    /// refused with who holds it (not queued). A client that already holds the lock with the
    /// same auth word gets its existing token back. `locks_max` bounds the number of locks.
    #[allow(clippy::too_many_arguments)] // each is one field of the grant record
    pub fn grant(
        &mut self,
        zxid: Zxid,
        name: &str,
        auth: i32,
        session: u64,
        holder: SenderId,
        host: &str,
        locks_max: usize,
    ) -> Result<Grant, WireError> {
        validate_request(name, auth)?;
        if host.len() > NAME_BYTES_MAX {
            return Err(wire(
                ErrorCode::TooLarge,
                format!("host name is {} bytes, over the limit of {NAME_BYTES_MAX}", host.len()),
            ));
        }
        let new_holder = Holder { host: host.to_string(), session, token: zxid };
        let Some(lock) = self.locks.get_mut(name) else {
            if self.locks.len() >= locks_max {
                return Err(wire(
                    ErrorCode::Unavailable,
                    format!("{locks_max} locks are held, the most this cluster allows"),
                ));
            }
            let holders = BTreeMap::from([(holder, new_holder)]);
            self.locks.insert(name.to_string(), Lock { auth, holders });
            return Ok(Grant::New(zxid));
        };
        if lock.auth == auth {
            if let Some(existing) = lock.holders.get(&holder) {
                return Ok(Grant::Existing(existing.token));
            }
        }
        if lock.auth != auth || !lock.is_shared() {
            return Err(held_error(name, lock));
        }
        if lock.holders.len() >= LOCK_HOLDERS_MAX {
            return Err(wire(
                ErrorCode::TooLarge,
                format!("lock {name} has {LOCK_HOLDERS_MAX} shared holders, the most allowed"),
            ));
        }
        debug_assert!(lock.holders.values().all(|h| h.token < zxid), "tokens only grow");
        lock.holders.insert(holder, new_holder);
        Ok(Grant::New(zxid))
    }

    /// Whether `holder` holds `name` with `auth`; the error says why not.
    pub fn check_held(&self, name: &str, auth: i32, holder: SenderId) -> Result<(), WireError> {
        let Some(lock) = self.locks.get(name) else {
            return Err(wire(ErrorCode::LockNotHeld, format!("lock {name} is not held")));
        };
        if !lock.holders.contains_key(&holder) {
            return Err(wire(
                ErrorCode::LockNotHeld,
                format!("lock {name} is not held by this client (held by {:?})", lock.hosts()),
            ));
        }
        if lock.auth != auth {
            return Err(wire(ErrorCode::BadAuth, format!("wrong auth word for lock {name}")));
        }
        Ok(())
    }

    /// Whether some holder of `name` has the fencing token `token`.
    pub fn holds_token(&self, name: &str, token: Zxid) -> bool {
        self.locks.get(name).is_some_and(|l| l.holders.values().any(|h| h.token == token))
    }

    /// Removes `holder` from `name` (the caller checked it holds it); returns its entry. The
    /// lock disappears with its last holder.
    pub fn release(&mut self, name: &str, holder: SenderId) -> Option<Holder> {
        let lock = self.locks.get_mut(name)?;
        let removed = lock.holders.remove(&holder);
        if lock.holders.is_empty() {
            self.locks.remove(name);
        }
        removed
    }

    /// The notice that `name` changed at `zxid`, as it stands now.
    pub fn changed(&self, zxid: Zxid, name: &str) -> LockChanged {
        let (holders, shared) = match self.locks.get(name) {
            Some(lock) => (lock.hosts(), lock.is_shared()),
            None => (Vec::new(), false),
        };
        LockChanged { zxid, lock: name.to_string(), holders, shared }
    }
}

fn held_error(name: &str, lock: &Lock) -> WireError {
    let how = if lock.is_shared() { "shared" } else { "exclusively" };
    wire(
        ErrorCode::LockHeld,
        format!(
            "lock {name} is held {how} by {}; not queued: wait for its LockChanged and retry",
            lock.hosts().join(", ")
        ),
    )
}
