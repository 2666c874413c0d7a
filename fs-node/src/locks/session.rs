//! [`SessionTable`]: open sessions, the locks tied to each, and the ephemeral index (which key
//! belongs to which session). The store knows nothing of ephemerals; this index is the only
//! record of them, kept exact through every put, delete and rename.

use protocol::batch::{descendant_bounds, rebase};
use protocol::key;
use protocol::message::data::Op;
use protocol::{SenderId, Zxid};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// One open session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The client that opened it; only it may use or close it.
    pub client: SenderId,
    pub ttl_ms: u32,
    /// The zxid of the open record: names this incarnation of the session id.
    pub opened: Zxid,
    /// Ephemeral keys owned by the session.
    pub ephemerals: BTreeSet<String>,
    /// Locks tied to the session.
    pub locks: BTreeSet<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionTable {
    sessions: BTreeMap<u64, Session>,
    /// Ephemeral key → owning session.
    owners: BTreeMap<String, u64>,
}

impl SessionTable {
    pub fn get(&self, session: u64) -> Option<&Session> {
        self.sessions.get(&session)
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&u64, &Session)> {
        self.sessions.iter()
    }

    /// The session owning the ephemeral `key`, if it is ephemeral.
    pub fn owner(&self, key: &str) -> Option<u64> {
        self.owners.get(key).copied()
    }

    pub fn open(&mut self, session: u64, client: SenderId, ttl_ms: u32, opened: Zxid) {
        let entry =
            Session { client, ttl_ms, opened, ephemerals: BTreeSet::new(), locks: BTreeSet::new() };
        let previous = self.sessions.insert(session, entry);
        debug_assert!(previous.is_none(), "open of an existing session");
    }

    /// Removes the session and its ephemeral index entries; the caller deletes the keys and
    /// releases the locks it returns.
    pub fn remove(&mut self, session: u64) -> Option<Session> {
        let removed = self.sessions.remove(&session)?;
        for k in &removed.ephemerals {
            self.owners.remove(k);
        }
        Some(removed)
    }

    pub fn add_lock(&mut self, session: u64, lock: &str) {
        if let Some(s) = self.sessions.get_mut(&session) {
            s.locks.insert(lock.to_string());
        }
    }

    pub fn remove_lock(&mut self, session: u64, lock: &str) {
        if let Some(s) = self.sessions.get_mut(&session) {
            s.locks.remove(lock);
        }
    }

    /// Follows one applied data op (in batch order) so that the index matches the store.
    pub fn follow(&mut self, op: &Op) {
        match op {
            Op::Put { key, ephemeral, .. } => {
                self.unown(key);
                if let Some(session) = ephemeral {
                    self.own(key.clone(), *session);
                }
            }
            Op::Delete { key, .. } => {
                self.unown(key);
                for k in self.owned_within(key) {
                    self.unown(&k);
                }
            }
            Op::Rename { from, to } => {
                let mut moved = self.owned_within(from);
                if self.owners.contains_key(from) {
                    moved.push(from.clone());
                }
                for k in moved {
                    if let Some(session) = self.unown(&k) {
                        self.own(rebase(&k, from, to), session);
                    }
                }
            }
            Op::Mkdir { .. } | Op::Lock(_) | Op::Session(_) => {}
        }
    }

    fn owned_within(&self, dir: &str) -> Vec<String> {
        self.owners.range(descendant_bounds(dir)).map(|(k, _)| k.clone()).collect()
    }

    fn own(&mut self, key: String, session: u64) {
        if let Some(s) = self.sessions.get_mut(&session) {
            s.ephemerals.insert(key.clone());
            self.owners.insert(key, session);
        }
    }

    fn unown(&mut self, key: &str) -> Option<u64> {
        debug_assert!(key::validate(key, usize::MAX).is_ok());
        let session = self.owners.remove(key)?;
        if let Some(s) = self.sessions.get_mut(&session) {
            s.ephemerals.remove(key);
        }
        Some(session)
    }
}
