//! Shared helpers for Shoal's multi-node tests: process harness, fault injection, history
//! checkers.
//!
//! - [`clock`]: clock faults through libfaketime, and a probe that proves they reach `Instant`.
//! - [`cluster`]: a harness running real `shoal-fs` processes on loopback multicast.
//! - [`jepsen`]: real `shoal-fs` nodes on namespace hosts, a register workload under a seeded
//!   nemesis, checked for linearizability.
//! - [`jepsen_harness`]: the plumbing of the lock and bank runs (hosts, nodes, client thread,
//!   master monitor, schedule aimed at the master).
//! - [`jepsen_locks`]: clients contending for named locks under faults, checked by fencing
//!   tokens with [`fencing`]; [`jepsen_bank`]: transfers between accounts in transactions,
//!   checked for a constant total and no half-applied commit.
//! - [`linearizability`]: a WGL/porcupine-style checker of per-key register histories.
//! - [`sim`]: a seeded deterministic simulator of replication engines with faults.
//! - [`netns`]: network-namespace hosts joined by a bridge, and supervised processes on them.
//! - [`nemesis`]: network faults (nft, links) and process faults (signals), seeded schedules.
//! - [`messaging_workload`]: `shoal-echo` processes on those hosts and the checker of what
//!   they delivered.
//! - [`session`]: the checker of non-linearizable reads (cached and from any node): read-your-
//!   writes, monotonic reads, the client's floor, integrity.
//! - [`report`]: a run's summary and an SVG of latency over time with fault windows shaded.
//! - [`tables`]: per-fault tables across runs (unavailability, operations, anomalies).
//! - [`state_backend`]: a one-process `cache_server::Backend` over the real state machine and
//!   lease clock, for client lock, session and transaction tests.

pub mod clock;
pub mod cluster;
pub mod fencing;
pub mod jepsen;
pub mod jepsen_bank;
pub mod jepsen_harness;
pub mod jepsen_locks;
pub mod linearizability;
pub mod messaging_workload;
pub mod nemesis;
pub mod netns;
pub mod nodesim;
pub mod report;
pub mod session;
pub mod sim;
pub mod state_backend;
pub mod tables;
