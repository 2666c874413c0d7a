//! Shared helpers for Shoal's multi-node tests: process harness, fault injection, history
//! checkers.
//!
//! - [`linearizability`]: a WGL/porcupine-style checker of per-key register histories.
//! - [`sim`]: a seeded deterministic simulator of replication engines with faults.
//! - [`state_backend`]: a one-process `cache_server::Backend` over the real state machine and
//!   lease clock, for client lock, session and transaction tests.

pub mod linearizability;
pub mod sim;
pub mod state_backend;
