//! The Shoal file-server node.
//!
//! # Layout
//! - [`storage`]: the data log, data files and index, freeze, checkpoint, backup, recovery.
//! - [`replication`]: the IO-free replication engine (election, prepare, proposals, lease).
//! - [`command`]: [`command::Command`], what a log entry's `data` carries (client writes,
//!   lock and session commands, lease expiries, master records) and its encoding: the
//!   vocabulary the state machine applies and the lock keeper and node core propose.
//! - [`state`]: the replicated state machine applied from committed entries: conditions, the
//!   client request table, and the lock and session tables ([`locks`]).
//! - [`node`]: the node core composing all of the above without IO of its own
//!   (`node::core`), the tokio shell that gives it a clock, a disk and the messaging endpoint
//!   (what `shoal-fs` runs), the one door every message comes in by (`node::door`), and
//!   [`node::ManualNode`], the same core driven by hand (what `shoal-sim` runs).
//! - [`events`]: the stable `event` names of the node's log lines (role changes decided here).
//! - [`metrics`]: counters, gauges and histograms served as Prometheus text on `metrics_addr`.
//! - [`config`]: `shoal-fs` configuration (TOML, flags, environment) and its validation.

pub mod command;
pub mod config;
pub mod events;
pub mod locks;
pub mod metrics;
pub mod node;
pub mod replication;
pub mod state;
pub mod storage;
