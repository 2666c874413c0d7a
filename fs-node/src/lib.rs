//! The Shoal file-server node.
//!
//! # Layout
//! - [`storage`]: the data log, data files and index, freeze, checkpoint, backup, recovery.
//! - [`replication`]: the IO-free replication engine (election, prepare, proposals, lease).
//! - [`locks`]: the lock and session tables, applied from the log.

pub mod locks;
pub mod replication;
pub mod storage;
