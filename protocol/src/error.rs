//! The protocol crate's errors. Decoding errors are operating errors (bad packets happen):
//! callers drop and count them, they never panic.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// Not enough bytes yet: a normal result for stream readers, distinct from malformed.
    #[error("incomplete: need {needed} more bytes")]
    Incomplete { needed: usize },
    #[error("bad magic {found:#010x}: not a Shoal datagram")]
    BadMagic { found: u32 },
    #[error("wire version {found} not spoken here (this node speaks {supported})")]
    UnsupportedVersion { found: u8, supported: u8 },
    #[error("datagram for cluster {found:#x}, this node is in cluster {expected:#x}")]
    WrongCluster { found: u32, expected: u32 },
    #[error("authentication tag does not match: wrong cluster key or tampered datagram")]
    BadMac,
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    #[error("{what} is {len} bytes, over the limit of {max}")]
    TooLarge { what: &'static str, len: usize, max: usize },
    /// A sequence claims more elements than its named limit (checked before allocating).
    #[error("{count} elements of {what}, over the limit of {max}")]
    TooMany { what: &'static str, count: usize, max: usize },
    #[error("malformed {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadChecksum { stored: u32, computed: u32 },
}
