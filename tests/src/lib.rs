//! Shared helpers for Shoal's multi-node tests: process harness, fault injection, history
//! checkers.
