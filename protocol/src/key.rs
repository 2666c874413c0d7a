//! The key namespace, shared by every crate so that a key is valid or not in one place.
//!
//! A key is an absolute `/`-separated path: it starts with `/`, has no empty component (so no
//! `//` and no trailing `/`), no `.` or `..` component, no NUL or other control character, and
//! is at most the key limit in bytes. `/` alone is the root directory, which always exists.
//! Directories are explicit (`mkdir`): writing `/a/b` needs the directory `/a`.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KeyError {
    #[error("key is empty; keys are absolute paths such as /app/config")]
    Empty,
    #[error("key {0:?} must start with '/'")]
    NotAbsolute(String),
    #[error("key {key:?} is {len} bytes, over the limit of {max}")]
    TooLong { key: String, len: usize, max: usize },
    #[error("key {0:?} has an empty component ('//' or a trailing '/')")]
    EmptyComponent(String),
    #[error("key {0:?} has a '.' or '..' component")]
    DotComponent(String),
    #[error("key {0:?} contains a control character")]
    ControlCharacter(String),
    #[error("the root '/' cannot be written, removed or renamed")]
    Root,
}

pub const ROOT: &str = "/";

/// Checks `key` against the namespace rules and `max_bytes`. The root `/` is valid.
pub fn validate(key: &str, max_bytes: usize) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.len() > max_bytes {
        let shown: String = key.chars().take(64).collect();
        return Err(KeyError::TooLong { key: shown + "...", len: key.len(), max: max_bytes });
    }
    if !key.starts_with('/') {
        return Err(KeyError::NotAbsolute(key.to_string()));
    }
    if key == ROOT {
        return Ok(());
    }
    for component in key[1..].split('/') {
        if component.is_empty() {
            return Err(KeyError::EmptyComponent(key.to_string()));
        }
        if component == "." || component == ".." {
            return Err(KeyError::DotComponent(key.to_string()));
        }
    }
    if key.chars().any(char::is_control) {
        return Err(KeyError::ControlCharacter(key.to_string()));
    }
    Ok(())
}

/// Like [`validate`], and refuses the root: for keys that are written, removed or renamed.
pub fn validate_mutable(key: &str, max_bytes: usize) -> Result<(), KeyError> {
    validate(key, max_bytes)?;
    if key == ROOT {
        return Err(KeyError::Root);
    }
    Ok(())
}

/// The parent directory of a valid key; `None` for the root.
pub fn parent(key: &str) -> Option<&str> {
    if key == ROOT {
        return None;
    }
    match key.rfind('/') {
        Some(0) => Some(ROOT),
        Some(i) => Some(&key[..i]),
        None => None,
    }
}

/// The last component of a valid key (`""` for the root).
pub fn name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or("")
}

/// Whether `key` is `dir` itself or lies below it.
pub fn is_within(key: &str, dir: &str) -> bool {
    if dir == ROOT {
        return true;
    }
    key == dir || (key.starts_with(dir) && key.as_bytes().get(dir.len()) == Some(&b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The namespace rules accept ordinary paths and refuse each kind of bad key by name.
    #[test]
    fn namespace_rules() {
        assert!(validate("/", 10).is_ok());
        assert!(validate("/a/b-c_d.txt", 64).is_ok());
        assert_eq!(validate("", 64), Err(KeyError::Empty));
        assert!(matches!(validate("a", 64), Err(KeyError::NotAbsolute(_))));
        assert!(matches!(validate("/a//b", 64), Err(KeyError::EmptyComponent(_))));
        assert!(matches!(validate("/a/", 64), Err(KeyError::EmptyComponent(_))));
        assert!(matches!(validate("/a/../b", 64), Err(KeyError::DotComponent(_))));
        assert!(matches!(validate("/a\0", 64), Err(KeyError::ControlCharacter(_))));
        assert!(matches!(validate("/abcdef", 4), Err(KeyError::TooLong { len: 7, max: 4, .. })));
        assert_eq!(validate_mutable("/", 64), Err(KeyError::Root));
    }

    /// parent/name/is_within agree with the path structure.
    #[test]
    fn path_helpers() {
        assert_eq!(parent("/a"), Some("/"));
        assert_eq!(parent("/a/b"), Some("/a"));
        assert_eq!(parent("/"), None);
        assert_eq!(name("/a/b"), "b");
        assert!(is_within("/a/b", "/a"));
        assert!(is_within("/a", "/a"));
        assert!(!is_within("/ab", "/a"));
        assert!(is_within("/x", "/"));
    }
}
