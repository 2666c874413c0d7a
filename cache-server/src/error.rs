//! The crate's one error enum: what a [`crate::Backend`] or the server can refuse, each variant
//! mapping to one wire [`ErrorCode`] so that a client can match on it.

use protocol::batch::{NamespaceError, OpError, ShapeError};
use protocol::key::KeyError;
use protocol::message::data::{ErrorCode, WireError};
use protocol::{NodeId, Zxid};
use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ServerError {
    #[error("{key} does not exist")]
    NotFound { key: String },
    #[error("{key} already exists")]
    AlreadyExists { key: String },
    /// Directories are explicit: writing `/a/b` needs `mkdir /a` first.
    #[error("parent directory {parent} of {key} does not exist; create it with mkdir first")]
    ParentMissing { key: String, parent: String },
    #[error("{key} is not a directory")]
    NotADirectory { key: String },
    #[error("{key} is a directory")]
    IsADirectory { key: String },
    #[error("directory {key} is not empty; remove it recursively or empty it first")]
    DirectoryNotEmpty { key: String },
    #[error(transparent)]
    BadKey(#[from] KeyError),
    #[error("{what} is {len} bytes, over the limit of {max}")]
    TooLarge { what: &'static str, len: usize, max: usize },
    #[error("cannot rename {from} to {to}: {why}")]
    InvalidRename { from: String, to: String, why: &'static str },
    #[error("condition failed: {detail}")]
    ConditionFailed { detail: String },
    #[error("this node is not the master (master: {master:?}); send writes to the master")]
    NotMaster { master: Option<NodeId> },
    #[error("this node is frozen")]
    Frozen,
    /// The node did not apply up to the request's floor within the wait.
    #[error("node has applied {applied}, behind the requested floor {floor}; try another node")]
    Behind { floor: Zxid, applied: Zxid },
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// A refusal decided by the replicated state machine (lock, session, request-table and
    /// store rules), passed through with its wire code and message unchanged.
    #[error("{}", .0.message)]
    Refused(WireError),
    /// A history read after a zxid below this node's history window.
    #[error("{}", protocol::history::compacted_sentence(*after, *oldest))]
    Compacted { after: Zxid, oldest: Zxid },
}

impl ServerError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ServerError::NotFound { .. } => ErrorCode::NotFound,
            ServerError::AlreadyExists { .. } => ErrorCode::AlreadyExists,
            ServerError::ParentMissing { .. } => ErrorCode::ParentMissing,
            ServerError::NotADirectory { .. } => ErrorCode::NotADirectory,
            ServerError::IsADirectory { .. } => ErrorCode::IsADirectory,
            ServerError::DirectoryNotEmpty { .. } => ErrorCode::DirectoryNotEmpty,
            ServerError::BadKey(_) | ServerError::InvalidRename { .. } => ErrorCode::BadKey,
            ServerError::TooLarge { .. } => ErrorCode::TooLarge,
            ServerError::ConditionFailed { .. } => ErrorCode::ConditionFailed,
            ServerError::NotMaster { master } => ErrorCode::NotMaster { master: *master },
            ServerError::Frozen => ErrorCode::Frozen,
            ServerError::Behind { .. } => ErrorCode::Behind,
            ServerError::Unavailable(_) => ErrorCode::Unavailable,
            ServerError::Internal(_) => ErrorCode::Internal,
            ServerError::Refused(e) => e.code,
            ServerError::Compacted { oldest, .. } => ErrorCode::Compacted { oldest: *oldest },
        }
    }

    /// The wire form: the code for programs, the message for people. For the errors about one
    /// key (not found, exists, parent missing, not/is a directory, not empty) the message is that
    /// key alone (the missing parent for `ParentMissing`), so that a client can name it without
    /// parsing prose; see [`key_from_wire`].
    pub fn to_wire(&self) -> WireError {
        let message = match self {
            ServerError::ParentMissing { parent: key, .. }
            | ServerError::NotFound { key }
            | ServerError::AlreadyExists { key }
            | ServerError::NotADirectory { key }
            | ServerError::IsADirectory { key }
            | ServerError::DirectoryNotEmpty { key } => key.clone(),
            ServerError::Refused(e) => e.message.clone(),
            other => other.to_string(),
        };
        WireError { code: self.code(), message }
    }
}

/// A shape refusal as the server has always reported it: the typed errors keep their wire
/// messages (`TooLarge` says `value` or `batch (ops)`, a bad key is the key error alone); the
/// lock rules pass their code and text through.
impl From<ShapeError> for ServerError {
    fn from(e: ShapeError) -> ServerError {
        match e {
            ShapeError::Empty => ServerError::ConditionFailed { detail: e.to_string() },
            ShapeError::TooManyOps { len, max } => {
                ServerError::TooLarge { what: "batch (ops)", len, max }
            }
            ShapeError::BadKey { error, .. } | ShapeError::BadConditionKey { error, .. } => {
                ServerError::BadKey(error)
            }
            ShapeError::ValueTooLarge { len, max, .. } => {
                ServerError::TooLarge { what: "value", len, max }
            }
            ShapeError::NotInWrite { .. } | ShapeError::ForeignRelease { .. } => {
                ServerError::Refused(e.to_wire())
            }
        }
    }
}

/// A namespace refusal as the typed error of the key it names.
impl From<OpError> for ServerError {
    fn from(e: OpError) -> ServerError {
        let wire = e.to_wire();
        match e.error {
            NamespaceError::NotFound { key } => ServerError::NotFound { key },
            NamespaceError::AlreadyExists { key } => ServerError::AlreadyExists { key },
            NamespaceError::ParentMissing { key, parent } => {
                ServerError::ParentMissing { key, parent }
            }
            NamespaceError::NotADirectory { parent, .. } => {
                ServerError::NotADirectory { key: parent }
            }
            NamespaceError::IsADirectory { key } => ServerError::IsADirectory { key },
            NamespaceError::DirectoryNotEmpty { key } => ServerError::DirectoryNotEmpty { key },
            NamespaceError::RenameIntoItself { from, to } => {
                ServerError::InvalidRename { from, to, why: "the target lies inside the source" }
            }
            NamespaceError::MovedKeyInvalid { .. } => ServerError::Refused(wire),
        }
    }
}

impl From<ServerError> for WireError {
    fn from(e: ServerError) -> WireError {
        e.to_wire()
    }
}

/// The key a one-key wire error names (the missing parent for `ParentMissing`).
pub fn key_from_wire(e: &WireError) -> Option<&str> {
    matches!(
        e.code,
        ErrorCode::NotFound
            | ErrorCode::AlreadyExists
            | ErrorCode::ParentMissing
            | ErrorCode::NotADirectory
            | ErrorCode::IsADirectory
            | ErrorCode::DirectoryNotEmpty
    )
    .then_some(e.message.as_str())
}
