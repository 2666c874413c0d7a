//! The storage engine's errors. Operating errors (full disk, permissions, corruption) tell the
//! operator what to do; a refused batch ([`StoreError`]) tells the client what was wrong.

use protocol::batch::{OpError, ShapeError};
use protocol::message::data::{ErrorCode, WireError};
use protocol::Zxid;
use std::io;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Why a batch of ops cannot apply to the current state (a rule of `protocol::batch`), or a
/// read names something that is not there. Nothing was changed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The batch breaks a shape rule (keys, value sizes, op count).
    #[error(transparent)]
    Shape(#[from] ShapeError),
    /// An op of the batch breaks a namespace rule.
    #[error(transparent)]
    Namespace(#[from] OpError),
    #[error("{key}: not found")]
    NotFound { key: String },
    #[error("{key}: a parent is a file, not a directory")]
    NotADirectory { key: String },
    #[error("{key}: is a directory")]
    IsADirectory { key: String },
}

impl StoreError {
    /// The code a client sees on the wire.
    pub fn code(&self) -> ErrorCode {
        match self {
            StoreError::Shape(e) => e.code(),
            StoreError::Namespace(e) => e.error.code(),
            StoreError::NotFound { .. } => ErrorCode::NotFound,
            StoreError::NotADirectory { .. } => ErrorCode::NotADirectory,
            StoreError::IsADirectory { .. } => ErrorCode::IsADirectory,
        }
    }

    /// The wire form, by cache-server's convention (`cache_server::error::key_from_wire`): for
    /// the errors about one key the message is that key alone (the parent for
    /// `NotADirectory`), so that a client names it without parsing prose.
    pub fn to_wire(&self) -> WireError {
        let parent = |key: &str| protocol::key::parent(key).unwrap_or(key).to_string();
        let message = match self {
            StoreError::Shape(e) => return e.to_wire(),
            StoreError::Namespace(e) => return e.to_wire(),
            StoreError::NotFound { key } | StoreError::IsADirectory { key } => key.clone(),
            StoreError::NotADirectory { key } => parent(key),
        };
        WireError { code: self.code(), message }
    }
}

#[derive(Debug, Error)]
pub enum StorageError {
    #[error(transparent)]
    Rejected(#[from] StoreError),
    #[error(
        "disk full while {op} {path}: free space on that disk; the store stays readable and \
         nothing was half-written"
    )]
    DiskFull { op: &'static str, path: PathBuf },
    #[error(
        "permission denied while {op} {path}: the node's user must be able to read and write \
         its data directory"
    )]
    PermissionDenied { op: &'static str, path: PathBuf },
    #[error("I/O error while {op} {path}: {source}; check the disk (dmesg, SMART)")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "corrupt record in {file} at byte offset {offset}: {detail}. This is damage before the \
         tail, not a torn write: stop this node, then either restore the data directory from a \
         backup (shoal-fs restore) or wipe it and let the node resync from a peer"
    )]
    Corrupt { file: PathBuf, offset: u64, detail: String },
    #[error(
        "an earlier fsync failed ({detail}); the kernel may have dropped the data, so this \
         process refuses further writes: restart the node (it recovers from what is durable)"
    )]
    Poisoned { detail: String },
    #[error("append out of order: zxid {zxid} is not above the last logged zxid {last}")]
    OutOfOrder { zxid: Zxid, last: Zxid },
    #[error(
        "cannot truncate after {requested}: entries up to {commit} are committed (a divergent \
         tail is always uncommitted; this is a replication bug)"
    )]
    TruncateCommitted { requested: Zxid, commit: Zxid },
    #[error(
        "log entries after {requested} are no longer retained (the log starts after {start}); \
         send the data files instead"
    )]
    Compacted { requested: Zxid, start: Zxid },
    #[error("{0}")]
    State(String),
    #[error("backup at {dir} does not match its manifest: {problems:?}")]
    BackupMismatch { dir: PathBuf, problems: Vec<String> },
    #[error("storage engine is shut down")]
    Closed,
}

impl StorageError {
    /// Classifies an I/O error so that full disks and permissions get their own message.
    pub fn io(op: &'static str, path: &Path, source: io::Error) -> StorageError {
        let path = path.to_path_buf();
        if source.raw_os_error() == Some(libc::ENOSPC)
            || source.raw_os_error() == Some(libc::EDQUOT)
        {
            return StorageError::DiskFull { op, path };
        }
        if source.kind() == io::ErrorKind::PermissionDenied {
            return StorageError::PermissionDenied { op, path };
        }
        StorageError::Io { op, path, source }
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;
