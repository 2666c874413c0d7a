//! The replicated state machine: the deterministic layer between the replication engine (which
//! hands over committed entries in zxid order) and the store.
//!
//! # Layout
//! - [`command`] (re-exported from [`crate::command`], its home, since the lock keeper proposes
//!   commands too): [`Command`], what an entry's `data` carries, and its encoding.
//! - [`machine`]: [`StateMachine`], `apply(entry) -> ApplyResult`: conditions, all-or-nothing
//!   batches, the reply and the notices to multicast.
//! - [`requests`]: [`RequestTable`], (client, seq) → first outcome, so retries never apply twice.
//! - [`state_store`]: the [`StateStore`] trait the store implements, its errors, and the shared batch
//!   checker.
//! - [`mem_store`]: [`MemStore`], a complete in-memory store for tests and simulations.
//! - [`conformance`]: the suite every [`StateStore`] must pass (rule scenarios, and seeded random
//!   batches against a naive model).
//!
//! The lock and session tables live in [`crate::locks`]; they are part of the applied state.
//!
//! # Rules
//! - Determinism: `apply` reads only the state and the entry (no clock, no randomness, ordered
//!   maps only). Time enters only through master records (`ExpireLock`, `ExpireSession`) that
//!   the master's [`LeaseKeeper`](crate::locks::LeaseKeeper) proposes.
//! - A write applies all of its ops or none: validation, conditions and the batch check all
//!   pass before anything changes. Conditions are checked against the state before the entry.
//! - Every client command is answered exactly once per request id: a retry returns the first
//!   outcome (see [`requests`] for the bounds and the `RequestTooOld` rule).
//! - A session's ephemeral keys are known only to the session table; the store is not told.
//! - Outcomes that depend on configuration (size limits, table bounds) use [`StateConfig`],
//!   which must be the same on every replica.
//! - The tables ([`Tables`]) and the store must be saved at the same zxid: replaying entries
//!   onto a store that is ahead of the tables would evaluate conditions on the wrong state.

pub use crate::command;
pub mod conformance;
pub mod machine;
pub mod mem_store;
pub mod requests;
pub mod state_store;

pub use command::Command;
pub use machine::{ApplyResult, Notice, Reply, StateConfig, StateError, StateMachine, Tables};
pub use mem_store::MemStore;
pub use requests::{Lookup, Outcome, RequestConfig, RequestTable};
pub use state_store::{EntryKind, NamespaceError, OpError, StateStore};
