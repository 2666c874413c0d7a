//! The exit codes of `shoal`, one table for every subcommand, and the code of a failed
//! command ([`code_of`]). A leaf: the subcommands and [`crate::cli`] use it, it uses none of
//! them.
//!
//! | code | meaning |
//! | --- | --- |
//! | 0 | done |
//! | 1 | not found (`get` of a missing key, `rm`/`mv`/`ls` of something absent) |
//! | 2 | usage error (bad flags; clap's own code) |
//! | 3 | refused input: bad key, too large, parent missing, exists, not/is a directory, not empty, condition failed |
//! | 4 | cluster unreachable: no live node, timeout, no master, or no transport |
//! | 5 | any other error |
//! | 6 | lock: held by another (`lock` without `--wait`), not free within `--wait`, lost (expired, session lost) or refused auth word |
//! | 7 | backup: the donor refused to start it |
//! | 8 | backup: started, then failed |
//! | 9 | backup: no result within `--timeout` (it may still be running) |
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
        | ClientError::Undeclared { .. } => REFUSED,
        ClientError::LockHeld { .. }
        | ClientError::WaitTimeout { .. }
        | ClientError::LockLost { .. }
        | ClientError::BadAuth { .. }
        | ClientError::SessionLost { .. } => LOCK,
        ClientError::NotMaster { .. }
        | ClientError::Unavailable { .. }
        | ClientError::Timeout { .. }
        | ClientError::Transport(_) => UNREACHABLE,
        ClientError::Server { .. } | ClientError::UnexpectedReply(_) => FAILED,
    }
}
