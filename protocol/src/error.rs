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
    #[error("authentication tag does not verify: wrong key or tampered datagram")]
    BadMac,
    /// Authentic or not, a datagram of a key class (or from a sender id, or of a kind) that
    /// this endpoint does not take under that class: e.g. member traffic under the client key.
    #[error("{class} key datagram from sender {sender} refused: {detail}")]
    WrongClass { class: &'static str, sender: u64, detail: String },
    /// A datagram already received, below the replay window, or of an older incarnation.
    #[error(
        "replay from sender {sender} (incarnation {incarnation}, counter {counter}): {detail}"
    )]
    Replay { sender: u64, incarnation: u64, counter: u64, detail: String },
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
