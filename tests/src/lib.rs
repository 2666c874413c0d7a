//! Shared helpers for Shoal's multi-node tests: process harness, fault injection, history
//! checkers.
//!
//! - [`linearizability`]: a WGL/porcupine-style checker of per-key register histories.

pub mod linearizability;
