//! [`RequestTable`]: the client request table, (client id, seq) → first result. It is part of
//! the applied state, so every replica has the same one and a new master answers retries of
//! requests the old master applied.
//!
//! # Rules
//! - A request whose (client, seq) is remembered is not applied again: the entry returns the
//!   remembered outcome (success or failure alike).
//! - Per client, the last `results_per_client_max` outcomes (by seq) are kept. Forgetting a
//!   seq raises the client's *horizon*: every seq at or below a forgotten one is answered
//!   `RequestTooOld` ("outcome unknown, not applied again"), whether or not it ever applied.
//!   A client keeps at most that many writes in flight, so a live retry is never past it.
//! - At most `clients_max` clients are remembered. Recording a request of a new client when
//!   full forgets the client idle longest (oldest zxid of last request; ties by id), keeping
//!   only its horizon as a tombstone. A tombstoned client's seqs at or below its horizon are
//!   answered `RequestTooOld`; a higher seq readmits it.
//! - At most `tombstones_max` tombstones are kept; the oldest goes first. Only a client whose
//!   tombstone is itself gone could see a retry applied twice: that needs `clients_max +
//!   tombstones_max` other clients to be active between its request and its retry. Clients
//!   bound their retry time (seconds), which makes this unreachable with the defaults.
//! - All choices depend only on the applied entries, so every replica evicts the same.
//! - A client process draws a fresh random client id at start and numbers its requests from
//!   1; it never reuses an id with a restarted seq (that would be answered from the old
//!   outcomes).

use protocol::message::data::{RequestId, WireError};
use protocol::message::lock::LockGrant;
use protocol::{SenderId, Zxid};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Default: outcomes remembered per client (also the most writes a client keeps in flight).
pub const RESULTS_PER_CLIENT_MAX_DEFAULT: usize = 32;
/// Default: clients remembered. With the per-client bound, at most 512 Ki outcomes (an
/// outcome is about 100 bytes with its map entry, more for an error's text): tens of MiB.
pub const CLIENTS_MAX_DEFAULT: usize = 16_384;
/// Default: tombstones of forgotten clients (about 64 bytes each with both indexes).
pub const TOMBSTONES_MAX_DEFAULT: usize = 1 << 18;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestConfig {
    pub results_per_client_max: usize,
    pub clients_max: usize,
    pub tombstones_max: usize,
}

impl Default for RequestConfig {
    fn default() -> RequestConfig {
        RequestConfig {
            results_per_client_max: RESULTS_PER_CLIENT_MAX_DEFAULT,
            clients_max: CLIENTS_MAX_DEFAULT,
            tombstones_max: TOMBSTONES_MAX_DEFAULT,
        }
    }
}

/// The outcome of a client command, as the master sends it back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// A write (Update, Rename): the zxid of the entry that committed it.
    Write(Result<Zxid, WireError>),
    /// A lock or session command (LockReply).
    Lock(Result<LockGrant, WireError>),
}

/// What the table says about a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Not seen: apply it.
    New,
    /// Seen: answer with its first outcome.
    Duplicate(Outcome),
    /// At or below the client's horizon: its outcome is forgotten.
    TooOld { horizon: u64 },
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct ClientRecord {
    results: BTreeMap<u64, Outcome>,
    /// Highest forgotten seq (0: none forgotten; seqs start at 1).
    horizon: u64,
    last_zxid: Zxid,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Tombstone {
    horizon: u64,
    forgotten_at: Zxid,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestTable {
    clients: BTreeMap<SenderId, ClientRecord>,
    /// (last request zxid, client): idle order.
    idle: BTreeSet<(Zxid, SenderId)>,
    tombstones: BTreeMap<SenderId, Tombstone>,
    /// (forgotten at, client): tombstone age order.
    tombstone_age: BTreeSet<(Zxid, SenderId)>,
}

impl RequestTable {
    pub fn lookup(&self, id: RequestId) -> Lookup {
        if let Some(record) = self.clients.get(&id.client) {
            if let Some(outcome) = record.results.get(&id.seq) {
                return Lookup::Duplicate(outcome.clone());
            }
            if id.seq <= record.horizon {
                return Lookup::TooOld { horizon: record.horizon };
            }
            return Lookup::New;
        }
        match self.tombstones.get(&id.client) {
            Some(t) if id.seq <= t.horizon => Lookup::TooOld { horizon: t.horizon },
            _ => Lookup::New,
        }
    }

    /// Remembers the outcome of a request that [`RequestTable::lookup`] called new, applied in
    /// the entry `zxid`.
    pub fn record(&mut self, id: RequestId, zxid: Zxid, outcome: Outcome, config: &RequestConfig) {
        debug_assert_eq!(self.lookup(id), Lookup::New);
        let record = match self.clients.get_mut(&id.client) {
            Some(record) => {
                self.idle.remove(&(record.last_zxid, id.client));
                record
            }
            None => {
                let horizon = match self.tombstones.remove(&id.client) {
                    Some(t) => {
                        self.tombstone_age.remove(&(t.forgotten_at, id.client));
                        t.horizon
                    }
                    None => 0,
                };
                let fresh = ClientRecord { horizon, ..ClientRecord::default() };
                self.clients.entry(id.client).or_insert(fresh)
            }
        };
        record.results.insert(id.seq, outcome);
        record.last_zxid = zxid;
        while record.results.len() > config.results_per_client_max.max(1) {
            if let Some((seq, _)) = record.results.pop_first() {
                record.horizon = record.horizon.max(seq);
            }
        }
        self.idle.insert((zxid, id.client));
        while self.clients.len() > config.clients_max.max(1) {
            let Some((_, oldest)) = self.idle.pop_first() else { break };
            self.forget_client(oldest, zxid, config);
        }
    }

    fn forget_client(&mut self, client: SenderId, zxid: Zxid, config: &RequestConfig) {
        let Some(record) = self.clients.remove(&client) else { return };
        let highest = record.results.keys().next_back().copied().unwrap_or(0);
        let horizon = record.horizon.max(highest);
        self.tombstones.insert(client, Tombstone { horizon, forgotten_at: zxid });
        self.tombstone_age.insert((zxid, client));
        while self.tombstones.len() > config.tombstones_max {
            let Some((_, oldest)) = self.tombstone_age.pop_first() else { break };
            self.tombstones.remove(&oldest);
        }
    }

    /// Number of remembered clients and of tombstones.
    pub fn counts(&self) -> (usize, usize) {
        (self.clients.len(), self.tombstones.len())
    }
}
