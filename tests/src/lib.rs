//! Shared helpers for Shoal's multi-node tests: process harness, fault injection, history
//! checkers.
//!
//! - [`cluster`]: a harness running real `shoal-fs` processes on loopback multicast.
//! - [`linearizability`]: a WGL/porcupine-style checker of per-key register histories.
//! - [`sim`]: a seeded deterministic simulator of replication engines with faults.

pub mod cluster;
pub mod linearizability;
pub mod sim;
