//! The exit codes of `shoal`, one table for every subcommand, and the code of a failed
//! command ([`code_of`]). A leaf: the subcommands and [`crate::cli`] use it, it uses none of
//! them.
//!
//! | code | meaning |
//! | --- | --- |
//! | 0 | done |
//! | 1 | not found (`get` of a missing key, `rm`/`mv`/`ls` of something absent) |
//! | 2 | usage error (bad flags; clap's own code) |
//! | 3 | refused input: bad key, too large, parent missing, exists, not/is a directory, not empty, condition failed, any other rule the server refuses (e.g. renaming a directory into itself) |
//! | 4 | cluster unreachable or not serving now: no live node, timeout, no master, no transport, a node frozen for a transfer or behind |
//! | 5 | any other error: an internal server error, a write whose outcome is unknown, a protocol bug |
//! | 6 | lock: held by another (`lock` without `--wait`), not free within `--wait`, lost (expired, session lost) or refused auth word |
//! | 7 | backup: the donor refused to start it |
//! | 8 | backup: started, then failed |
//! | 9 | backup: no result within `--timeout` (it may still be running) |
//! | 10 | watch: history compacted past the zxid asked for (`--from`, or a catch-up after a gap): re-read, then resume from the zxid named |
//!
//! Every wire error code maps to one client error ([`ClientError::from_wire`]) and so to one
//! code here and one sentence; the test below checks each.
//!
//! `shoal dev` exits 1 on any failure to start or keep its cluster (see [`crate::dev`]).

use cache_client::ClientError;

pub const OK: i32 = 0;
pub const NOT_FOUND: i32 = 1;
pub const USAGE: i32 = 2;
pub const REFUSED: i32 = 3;
pub const UNREACHABLE: i32 = 4;
pub const FAILED: i32 = 5;
pub const LOCK: i32 = 6;
pub const BACKUP_REFUSED: i32 = 7;
pub const BACKUP_FAILED: i32 = 8;
pub const BACKUP_TIMEOUT: i32 = 9;
pub const COMPACTED: i32 = 10;

/// The exit code for a command that failed with `error`.
pub fn code_of(error: &ClientError) -> i32 {
    match error {
        ClientError::NotFound { .. } => NOT_FOUND,
        ClientError::BadKey(_)
        | ClientError::TooLarge { .. }
        | ClientError::ParentMissing { .. }
        | ClientError::AlreadyExists { .. }
        | ClientError::NotADirectory { .. }
        | ClientError::IsADirectory { .. }
        | ClientError::DirectoryNotEmpty { .. }
        | ClientError::ConditionFailed { .. }
        | ClientError::Refused { .. }
        | ClientError::Undeclared { .. } => REFUSED,
        ClientError::LockHeld { .. }
        | ClientError::WaitTimeout { .. }
        | ClientError::LockLost { .. }
        | ClientError::BadAuth { .. }
        | ClientError::SessionLost { .. } => LOCK,
        ClientError::NotMaster { .. }
        | ClientError::Unavailable { .. }
        | ClientError::Timeout { .. }
        | ClientError::NotServing { .. }
        | ClientError::Transport(_) => UNREACHABLE,
        ClientError::Compacted { .. } => COMPACTED,
        ClientError::Server { .. }
        | ClientError::OutcomeUnknown { .. }
        | ClientError::UnexpectedReply(_) => FAILED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::message::data::{ErrorCode, WireError};

    /// Every wire code, listed by an exhaustive match so that a new code fails to compile
    /// here until it has a row.
    fn expected(code: &ErrorCode) -> i32 {
        match code {
            ErrorCode::NotFound => NOT_FOUND,
            ErrorCode::AlreadyExists
            | ErrorCode::ParentMissing
            | ErrorCode::NotADirectory
            | ErrorCode::IsADirectory
            | ErrorCode::DirectoryNotEmpty
            | ErrorCode::BadKey
            | ErrorCode::TooLarge
            | ErrorCode::ConditionFailed
            | ErrorCode::BadRequest => REFUSED,
            ErrorCode::NotMaster { .. }
            | ErrorCode::Frozen
            | ErrorCode::Behind
            | ErrorCode::Unavailable => UNREACHABLE,
            ErrorCode::LockHeld
            | ErrorCode::BadAuth
            | ErrorCode::LockNotHeld
            | ErrorCode::SessionExpired => LOCK,
            ErrorCode::Internal | ErrorCode::RequestTooOld => FAILED,
            ErrorCode::Compacted { .. } => COMPACTED,
        }
    }

    const ALL: [ErrorCode; 22] = [
        ErrorCode::NotFound,
        ErrorCode::AlreadyExists,
        ErrorCode::ParentMissing,
        ErrorCode::NotADirectory,
        ErrorCode::IsADirectory,
        ErrorCode::DirectoryNotEmpty,
        ErrorCode::BadKey,
        ErrorCode::TooLarge,
        ErrorCode::ConditionFailed,
        ErrorCode::NotMaster { master: None },
        ErrorCode::NotMaster { master: Some(2) },
        ErrorCode::LockHeld,
        ErrorCode::BadAuth,
        ErrorCode::LockNotHeld,
        ErrorCode::SessionExpired,
        ErrorCode::Frozen,
        ErrorCode::Behind,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
        ErrorCode::RequestTooOld,
        ErrorCode::BadRequest,
        ErrorCode::Compacted { oldest: protocol::Zxid((3 << 32) | 17) },
    ];

    /// Each wire code gives its documented exit code and a sentence that carries the server's
    /// words and no Rust debug form of the code.
    #[test]
    fn every_wire_code_has_one_exit_code_and_a_plain_sentence() {
        let mut seen = 0;
        for code in ALL {
            let message = "/app/x".to_string();
            let error = ClientError::from_wire(WireError { code, message });
            assert_eq!(code_of(&error), expected(&code), "{code:?} -> {error:?}");
            let sentence = error.to_string();
            let debug = format!("{code:?}");
            assert!(
                !sentence.contains(&debug),
                "{code:?}: the sentence {sentence:?} shows the code"
            );
            assert!(!sentence.starts_with("server error"), "{code:?}: {sentence:?}");
            if !matches!(code, ErrorCode::NotMaster { .. }) {
                assert!(sentence.contains("/app/x"), "{code:?}: {sentence:?} drops the detail");
            }
            seen += 1;
        }
        assert_eq!(seen, 22, "every wire code is checked");
    }
}
