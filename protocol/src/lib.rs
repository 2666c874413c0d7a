//! Shoal's wire protocol: everything that crosses a socket or lands in the data log as bytes.
//!
//! # Layout
//! - [`zxid`]: the total order of committed changes (epoch in the high 32 bits, counter low).
//! - [`limits`]: every size bound, named, so that nothing is allocated before it is checked.
//! - [`key`]: the key namespace (absolute `/` paths) and its validation.
//! - [`batch`]: the rules of a batch of ops (shape and namespace), the one home every layer
//!   calls: client, server, state machine and stores.
//! - [`history`]: the change events a watch scope sees in an entry's ops, the one definition
//!   the client's live watches and a node's history reads share.
//! - [`range`]: the rules of a range read (its arguments, where a page starts and ends), the
//!   one home every backend calls.
//! - [`header`]: the fixed datagram header, the two key classes (member, client), the
//!   AES-256-GCM sealing and the replay guard.
//! - [`codec`]: the one place that knows payloads are bincode 1.3.3; swap it here alone.
//! - [`message`]: the payload types of every message (the design's eleven, replication, the
//!   messaging layer's own), one file per family, and the [`message::Message`] enum.
//! - [`tlv`]: type-length-value records with zxid and CRC32C, the data log's framing.
//! - [`messaging`]: the reliable, flow-controlled multicast layer: an IO-free core plus the
//!   socket driver, and the unicast request/reply path.
//! - [`datagram`]: encode-and-seal / open-and-decode of a message that fits one datagram.
//! - [`stats`]: counters of dropped input, one per reason.
//! - [`lru`]: the byte- and count-bounded LRU map the client and server caches share.
//! - [`error`]: the crate's one error enum.
//!
//! See `protocol/WIRE.md` for every layout byte by byte.

pub mod batch;
pub mod codec;
pub mod datagram;
pub mod error;
pub mod header;
pub mod history;
pub mod key;
pub mod limits;
pub mod lru;
pub mod message;
pub mod messaging;
pub mod range;
pub mod stats;
pub mod tlv;
pub mod zxid;

pub use error::ProtocolError;
pub use zxid::Zxid;

/// Identifies a sender on the wire. FS nodes use their configured id (1..=7); clients use a
/// random id at or above [`CLIENT_ID_MIN`], so the two ranges never collide.
pub type SenderId = u64;

/// A sender's start counter (header `incarnation`): never repeated for one sender id, so that
/// `(sender, incarnation)` names one subkey and one replay window (WIRE.md §1.3).
pub type Incarnation = u64;

/// FS node id, 1..=7 from configuration.
pub type NodeId = u8;

/// Client ids are drawn at random from `CLIENT_ID_MIN..=u64::MAX`.
pub const CLIENT_ID_MIN: SenderId = 1 << 32;
