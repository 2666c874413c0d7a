//! The client's record of its session and held locks: what [`crate::locks`] grants and the
//! renewal task keeps valid. State only, no IO; the client holds one [`Registry`].

use crate::clock::now;
use protocol::Zxid;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use tokio::sync::watch;

/// How this client's leases stand, as a watch channel ([`Client::session_state`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionState {
    /// Renewed within the last half TTL (or nothing held yet).
    Healthy,
    /// Renewals are failing and less than half a TTL of validity is left (for instance during
    /// a master failover). The session and locks are still this client's; the renewer keeps
    /// trying and the state returns to `Healthy` when a renewal is answered. Hold back side
    /// effects that rely on the lock without a fencing check.
    InDanger,
    /// The leases are gone (refused renewal or validity ran out): every lock this client held
    /// must be treated as lost, and its ephemeral entries are (or soon will be) deleted. The
    /// next lock or ephemeral use opens a new session.
    Lost,
}

#[derive(Clone, Debug)]
pub(crate) struct Held {
    pub(crate) auth: i32,
    pub(crate) token: Zxid,
    /// Local holders of a shared lock (1 for exclusive).
    pub(crate) refs: u32,
}

#[derive(Default)]
pub(crate) struct Leases {
    pub(crate) held: BTreeMap<String, Held>,
    pub(crate) session: Option<u64>,
    /// Until when the client may count on its leases (the last renewal's send time + lease).
    pub(crate) valid_until: Option<Instant>,
    /// Bumped whenever everything is lost, so guards of earlier grants know.
    pub(crate) generation: u64,
    pub(crate) renewer: Option<tokio::task::JoinHandle<()>>,
}

/// Per lock name: the FIFO queue of this client's waiters and the gate of its acquire/release.
#[derive(Default)]
pub(crate) struct Slot {
    pub(crate) queue: tokio::sync::Mutex<()>,
    pub(crate) op: tokio::sync::Mutex<()>,
}

/// The locks and session of one client (inside the client's shared state).
pub(crate) struct Registry {
    pub(crate) leases: Mutex<Leases>,
    pub(crate) state_tx: watch::Sender<SessionState>,
    /// Shared by acquires, releases and commits; exclusive for a renewal.
    pub(crate) gate: tokio::sync::RwLock<()>,
    /// Serializes session opens.
    pub(crate) opening: tokio::sync::Mutex<()>,
    pub(crate) slots: Mutex<HashMap<String, Arc<Slot>>>,
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(task) = self.leases.get_mut().ok().and_then(|l| l.renewer.take()) {
            task.abort();
        }
    }
}

impl Registry {
    pub(crate) fn new() -> Registry {
        Registry {
            leases: Mutex::new(Leases::default()),
            state_tx: watch::channel(SessionState::Healthy).0,
            gate: tokio::sync::RwLock::new(()),
            opening: tokio::sync::Mutex::new(()),
            slots: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn leases(&self) -> MutexGuard<'_, Leases> {
        self.leases.lock().expect("lock registry poisoned")
    }

    pub(crate) fn slot(&self, name: &str) -> Arc<Slot> {
        let mut slots = self.slots.lock().expect("lock slots poisoned");
        // Forget idle slots so the map stays bounded by the names in use.
        if slots.len() > 1024 {
            slots.retain(|_, s| Arc::strong_count(s) > 1);
        }
        Arc::clone(slots.entry(name.to_string()).or_default())
    }

    pub(crate) fn session(&self) -> Option<u64> {
        self.leases().session
    }

    /// Records an opened session valid until `valid_until`.
    pub(crate) fn session_opened(&self, session: u64, valid_until: Instant) {
        let mut leases = self.leases();
        leases.session = Some(session);
        leases.valid_until = Some(valid_until);
        drop(leases);
        self.state_tx.send_replace(SessionState::Healthy);
    }

    /// Forgets the session and every lock (closed, or lost when `lost`).
    pub(crate) fn forget_all(&self, lost: bool) {
        let mut leases = self.leases();
        leases.held.clear();
        leases.session = None;
        leases.valid_until = None;
        leases.generation += 1;
        drop(leases);
        if lost {
            self.state_tx.send_replace(SessionState::Lost);
        }
    }

    /// Whether this client still counts on `name` with `token` (granted in `generation`).
    pub(crate) fn holds(&self, name: &str, token: Zxid, generation: u64) -> bool {
        let leases = self.leases();
        leases.generation == generation
            && leases.held.get(name).is_some_and(|h| h.token == token)
            && leases.valid_until.is_some_and(|until| now() < until)
    }

    /// Takes one local reference of `name` for release: `Some(auth)` when the lock is to be
    /// released on the master now (the last local holder), `None` when it is not held with
    /// `token` any more or other local holders remain.
    pub(crate) fn unref(&self, name: &str, token: Zxid) -> Option<i32> {
        let mut leases = self.leases();
        let held = leases.held.get_mut(name).filter(|h| h.token == token)?;
        if held.refs > 1 {
            held.refs -= 1;
            return None;
        }
        let auth = held.auth;
        leases.held.remove(name);
        Some(auth)
    }
}
