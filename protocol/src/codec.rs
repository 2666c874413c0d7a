//! The payload codec. This module alone knows that payloads are bincode 1.3.3; swapping the
//! format means changing this file and bumping `header::VERSION`.
//!
//! Options: little-endian, varint integers, a byte limit checked before every allocation
//! (bincode refuses a length prefix that would exceed it), and trailing bytes rejected.

use crate::error::ProtocolError;
use bincode::Options;
use serde::de::DeserializeOwned;
use serde::Serialize;

fn options(limit_bytes: u64) -> impl Options {
    bincode::DefaultOptions::new().with_limit(limit_bytes).reject_trailing_bytes()
}

/// Encodes `value`, refusing an encoding over `limit_bytes`.
pub fn encode<T: Serialize>(value: &T, limit_bytes: usize) -> Result<Vec<u8>, ProtocolError> {
    options(limit_bytes as u64).serialize(value).map_err(|e| map_err("payload", *e))
}

/// Decodes a `T` from exactly `bytes`, allocating at most about `limit_bytes`.
pub fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    what: &'static str,
    limit_bytes: usize,
) -> Result<T, ProtocolError> {
    if bytes.len() > limit_bytes {
        return Err(ProtocolError::TooLarge { what, len: bytes.len(), max: limit_bytes });
    }
    options(limit_bytes as u64).deserialize(bytes).map_err(|e| map_err(what, *e))
}

fn map_err(what: &'static str, e: bincode::ErrorKind) -> ProtocolError {
    match e {
        bincode::ErrorKind::SizeLimit => ProtocolError::TooLarge { what, len: usize::MAX, max: 0 },
        other => ProtocolError::Malformed { what, detail: other.to_string() },
    }
}
