//! The crate's one error enum. A missing key on a read is not an error (`read` returns
//! `Ok(None)`); everything else a caller may want to match on has its own variant.

use protocol::key::KeyError;
use protocol::message::data::{ErrorCode, WireError};
use protocol::{NodeId, Zxid};
use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// The key breaks the namespace rules; nothing was sent.
    #[error(transparent)]
    BadKey(#[from] KeyError),
    /// A value, batch or key over its limit; nothing was sent.
    #[error("{what} is {len} bytes, over the limit of {max}")]
    TooLarge { what: &'static str, len: usize, max: usize },
    /// Directories are explicit: `parent` must be created with `mkdir` first.
    #[error("parent directory {parent} does not exist; create it with mkdir first")]
    ParentMissing { parent: String },
    /// A remove, rename or list of something that is not there.
    #[error("{key} does not exist")]
    NotFound { key: String },
    #[error("{key} already exists")]
    AlreadyExists { key: String },
    #[error("{key} is not a directory")]
    NotADirectory { key: String },
    #[error("{key} is a directory")]
    IsADirectory { key: String },
    #[error("directory {key} is not empty")]
    DirectoryNotEmpty { key: String },
    /// A condition of a batch (e.g. compare-and-set on a key's zxid) did not hold; nothing
    /// was written.
    #[error("condition failed: {detail}")]
    ConditionFailed { detail: String },
    /// The write could not reach the master after following redirects.
    #[error("no master accepted the write (last known master: {master:?}); an election may be under way, retry later")]
    NotMaster { master: Option<NodeId> },
    /// No live node to send to (no FSLive heard within the validity and no seed left).
    #[error("no live node available: {detail}")]
    Unavailable { detail: String },
    /// Every attempt timed out. For a write the outcome is unknown; retrying the same call is
    /// safe only through the same request id, which this client does within its attempts.
    #[error("request timed out after {attempts} attempts")]
    Timeout { attempts: usize },
    /// The lock is held by another holder (or by this client with another auth word); the
    /// detail names the holders. Nothing was queued: wait with `lock_wait`.
    #[error("lock held: {detail}")]
    LockHeld { detail: String },
    /// `lock_wait` gave up: `lock` did not become free within the wait.
    #[error("lock {lock} did not become free within {waited:?}")]
    WaitTimeout { lock: String, waited: std::time::Duration },
    /// The lock is no longer held by this client (it expired, its session was lost, or it was
    /// released); anything conditioned on it was refused and changed nothing.
    #[error("lock not held: {detail}")]
    LockLost { detail: String },
    /// A release or renewal named the wrong auth word; nothing changed.
    #[error("wrong auth word: {detail}")]
    BadAuth { detail: String },
    /// The session expired (or was never opened): its locks and ephemeral entries are gone.
    #[error("session lost: {detail}")]
    SessionLost { detail: String },
    /// A transaction touched a key it did not declare (or wrote one declared for reading);
    /// nothing was sent.
    #[error("transaction did not declare {key} for {intent}: declare every key before begin")]
    Undeclared { key: String, intent: &'static str },
    /// The server refused the request's input (`BadKey`, `TooLarge`, `BadRequest`: a rule the
    /// client could not check alone, such as renaming a directory into itself); nothing
    /// changed. `detail` is the server's sentence.
    #[error("{detail}")]
    Refused { code: ErrorCode, detail: String },
    /// The node cannot serve the request now (`Frozen` during a file transfer, `Behind` its
    /// floor, `Unavailable`); nothing changed, and a retry later may succeed.
    #[error("the cluster cannot serve this now ({}): {detail}; retry later", code_word(code))]
    NotServing { code: ErrorCode, detail: String },
    /// A write retried so late that the master no longer remembers its result
    /// (`RequestTooOld`): it may or may not have been applied, and was not applied again.
    #[error("the outcome of this write is unknown (its retry came after the master forgot it): {detail}; read the key to find out")]
    OutcomeUnknown { detail: String },
    /// The server failed (`Internal`).
    #[error("internal server error: {message}")]
    Server { code: ErrorCode, message: String },
    /// A history read (a watch resuming from a zxid) reached below the nodes' history window:
    /// the events after the zxid asked for are gone up to `oldest`. Re-read the state, then
    /// watch from `oldest`.
    #[error("{detail}")]
    Compacted { oldest: Zxid, detail: String },
    /// The node answered with a message of the wrong kind: a protocol bug.
    #[error("unexpected reply: {0}")]
    UnexpectedReply(String),
    #[error("transport: {0}")]
    Transport(String),
}

impl ClientError {
    /// Maps a server's error. For the errors about one key the wire message is that key alone
    /// (the missing parent for `ParentMissing`), by cache-server's convention.
    pub fn from_wire(error: WireError) -> ClientError {
        let WireError { code, message } = error;
        match code {
            ErrorCode::NotFound => ClientError::NotFound { key: message },
            ErrorCode::AlreadyExists => ClientError::AlreadyExists { key: message },
            ErrorCode::ParentMissing => ClientError::ParentMissing { parent: message },
            ErrorCode::NotADirectory => ClientError::NotADirectory { key: message },
            ErrorCode::IsADirectory => ClientError::IsADirectory { key: message },
            ErrorCode::DirectoryNotEmpty => ClientError::DirectoryNotEmpty { key: message },
            ErrorCode::ConditionFailed => ClientError::ConditionFailed { detail: message },
            ErrorCode::NotMaster { master } => ClientError::NotMaster { master },
            ErrorCode::LockHeld => ClientError::LockHeld { detail: message },
            ErrorCode::LockNotHeld => ClientError::LockLost { detail: message },
            ErrorCode::BadAuth => ClientError::BadAuth { detail: message },
            ErrorCode::SessionExpired => ClientError::SessionLost { detail: message },
            ErrorCode::BadKey | ErrorCode::TooLarge | ErrorCode::BadRequest => {
                ClientError::Refused { code, detail: message }
            }
            ErrorCode::Frozen | ErrorCode::Behind | ErrorCode::Unavailable => {
                ClientError::NotServing { code, detail: message }
            }
            ErrorCode::RequestTooOld => ClientError::OutcomeUnknown { detail: message },
            ErrorCode::Internal => ClientError::Server { code, message },
            ErrorCode::Compacted { oldest } => ClientError::Compacted { oldest, detail: message },
        }
    }

    /// The error with a single-op write's `op 0: ` prefix taken off its sentence (the index
    /// names the op at fault only when there are several).
    pub(crate) fn for_single_op(self) -> ClientError {
        let strip = |s: String| match s.strip_prefix("op 0: ") {
            Some(rest) => rest.to_string(),
            None => s,
        };
        match self {
            ClientError::Refused { code, detail } => {
                ClientError::Refused { code, detail: strip(detail) }
            }
            ClientError::ConditionFailed { detail } => {
                ClientError::ConditionFailed { detail: strip(detail) }
            }
            other => other,
        }
    }
}

/// A wire code's word in a sentence.
fn code_word(code: &ErrorCode) -> &'static str {
    match code {
        ErrorCode::Frozen => "a node is frozen for a file transfer",
        ErrorCode::Behind => "the node is behind what this client has seen",
        _ => "unavailable",
    }
}
