//! Range reads ([`ReadOp::Range`](crate::message::data::ReadOp::Range)): the rules every backend
//! follows, so that the in-memory backends and the node's disk store cut pages the same way.
//!
//! # What a range is
//! - Every **value** strictly below the directory `dir`, at any depth (recursive, as etcd's
//!   prefix get); directories are not listed (they have no value).
//! - In key byte order (`/a/b/x` before `/a/b0`: `/` sorts before `0`), starting at `from`
//!   (inclusive; a key that need not exist) or at the first key below `dir`.
//! - A page ends after `limit` values or once about `bytes_max` bytes are collected (each value
//!   costs [`entry_bytes`]), and always holds at least one value; its `next` is the key the
//!   following page starts at, or `None` when the range is done.
//! - `dir` must be a directory (the root included): `NotFound` when absent, `NotADirectory`
//!   for a value, as for a list.

use crate::key::{self, KeyError, ROOT};
use crate::limits::{RANGE_ENTRIES_MAX, RANGE_PAGE_BYTES_MAX};

/// The fixed part of [`entry_bytes`]: a zxid and the length prefixes.
pub const ENTRY_OVERHEAD_BYTES: usize = 16;

/// Bytes a value is charged in a page's budget: its key, its value and a fixed overhead.
pub fn entry_bytes(key: &str, value_len: usize) -> usize {
    ENTRY_OVERHEAD_BYTES + key.len() + value_len
}

/// Why a range read's arguments are refused (before anything is read).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error(transparent)]
    BadKey(#[from] KeyError),
    #[error("a range read needs a limit of at least 1 value per page")]
    ZeroLimit,
    #[error("the range start {from:?} is not below the directory {dir:?}")]
    FromOutside { dir: String, from: String },
}

/// Checks a range read's arguments: `dir` and `from` are valid keys, `from` lies strictly
/// below `dir`, and `limit` is at least 1.
pub fn validate(
    dir: &str,
    from: Option<&str>,
    limit: u32,
    key_bytes_max: usize,
) -> Result<(), RangeError> {
    key::validate(dir, key_bytes_max)?;
    if let Some(from) = from {
        key::validate(from, key_bytes_max)?;
        if from == dir || !key::is_within(from, dir) {
            return Err(RangeError::FromOutside { dir: dir.to_string(), from: from.to_string() });
        }
    }
    if limit == 0 {
        return Err(RangeError::ZeroLimit);
    }
    Ok(())
}

/// What every key below `dir` begins with (`/` for the root, `dir/` otherwise).
pub fn prefix(dir: &str) -> String {
    if dir == ROOT {
        ROOT.to_string()
    } else {
        format!("{dir}/")
    }
}

/// The first key a page looks at: `from`, or the first key below `dir`.
pub fn start(dir: &str, from: Option<&str>) -> String {
    from.map_or_else(|| prefix(dir), str::to_string)
}

/// How much one page may still take: at most `limit` values (capped by [`RANGE_ENTRIES_MAX`])
/// and about `bytes_max` bytes (capped by [`RANGE_PAGE_BYTES_MAX`]); the first value always
/// fits.
#[derive(Clone, Debug)]
pub struct Budget {
    limit: usize,
    bytes_max: usize,
    count: usize,
    bytes: usize,
}

impl Budget {
    pub fn new(limit: u32, bytes_max: u32) -> Budget {
        Budget {
            limit: (limit as usize).clamp(1, RANGE_ENTRIES_MAX),
            bytes_max: (bytes_max as usize).min(RANGE_PAGE_BYTES_MAX),
            count: 0,
            bytes: 0,
        }
    }

    /// Takes the value at `key` of `value_len` bytes when the page has room for it (counting
    /// it); `false` when the page ends before it (`key` is then the next page's start).
    pub fn take(&mut self, key: &str, value_len: usize) -> bool {
        let cost = entry_bytes(key, value_len);
        if self.count > 0 && (self.count >= self.limit || self.bytes + cost > self.bytes_max) {
            return false;
        }
        self.count += 1;
        self.bytes += cost;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bad arguments are refused by name; `from` must lie strictly below `dir`.
    #[test]
    fn arguments() {
        assert!(validate("/a", None, 1, 100).is_ok());
        assert!(validate("/", Some("/x"), 5, 100).is_ok());
        assert!(validate("/a", Some("/a/b/c"), 5, 100).is_ok());
        assert!(matches!(validate("a", None, 1, 100), Err(RangeError::BadKey(_))));
        assert!(matches!(validate("/a", Some("b"), 1, 100), Err(RangeError::BadKey(_))));
        assert_eq!(validate("/a", None, 0, 100), Err(RangeError::ZeroLimit));
        for outside in ["/a", "/ab", "/b"] {
            assert!(
                matches!(validate("/a", Some(outside), 1, 100), Err(RangeError::FromOutside { .. })),
                "{outside}"
            );
        }
        assert_eq!(start("/", None), "/");
        assert_eq!(start("/a", None), "/a/");
        assert_eq!(start("/a", Some("/a/k")), "/a/k");
    }

    /// A page stops at the count or the byte budget, and always takes its first value.
    #[test]
    fn budget() {
        let mut b = Budget::new(2, u32::MAX);
        assert!(b.take("/a", 1) && b.take("/b", 1) && !b.take("/c", 1));
        let mut b = Budget::new(10, 0);
        assert!(b.take("/big", 1 << 20), "the first value always fits");
        assert!(!b.take("/x", 0));
        let one = entry_bytes("/k", 10) as u32;
        let mut b = Budget::new(10, 2 * one);
        assert!(b.take("/k", 10) && b.take("/k", 10) && !b.take("/k", 10));
        let mut b = Budget::new(u32::MAX, u32::MAX);
        for _ in 0..RANGE_ENTRIES_MAX {
            assert!(b.take("/", 0));
        }
        assert!(!b.take("/", 0), "capped at RANGE_ENTRIES_MAX");
    }
}
