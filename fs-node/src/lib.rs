//! The Shoal file-server node.
//!
//! # Layout
//! - [`storage`]: the data log, data files and index, freeze, checkpoint, backup, recovery.
//! - [`replication`]: the IO-free replication engine (election, prepare, proposals, lease).
//! - [`state`]: the replicated state machine applied from committed entries: commands,
//!   conditions, the client request table, and the lock and session tables ([`locks`]).
//! - [`node`]: the runtime composing all of the above with the messaging endpoint and the
//!   cache server (what `shoal-fs` runs).
//! - [`events`]: the stable `event` names of the node's log lines (role changes decided here).
//! - [`metrics`]: counters, gauges and histograms served as Prometheus text on `metrics_addr`.
//! - [`config`]: `shoal-fs` configuration (TOML, flags, environment) and its validation.

pub mod config;
pub mod events;
pub mod locks;
pub mod metrics;
pub mod node;
pub mod replication;
pub mod state;
pub mod storage;
