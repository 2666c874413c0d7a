//! The storage engine of an FS node.
//!
//! # Layout
//! - [`log`]: the data log: append-only TLV segments of replication entries, group commit,
//!   commit marks, truncation of a divergent tail, catch-up reads, retention.
//! - [`store`]: the key-value store: data segments, in-memory index, hint files, batch apply
//!   and validation, freeze, checkpoint, merge compaction.
//! - [`backup`]: consistent backups of a frozen store with an MD5 manifest; restore; verify.
//! - [`vfs`]: the file layer, real or simulated (written vs durable bytes, for crash tests).
//! - [`error`]: [`StorageError`] (operating errors) and [`StoreError`] (a refused batch).
//!
//! The format and its crash analysis are in `fs-node/STORAGE.md`.

pub mod backup;
pub mod error;
pub mod log;
pub mod store;
pub mod vfs;

pub use error::{StorageError, StoreError};
pub use log::{DataLog, Durable, LogConfig, LogRecovery};
pub use store::{Applied, FrozenFiles, KvStore, StoreConfig, StoreRecovery};
pub use vfs::{CrashMode, RealFs, SimFs, Vfs};
