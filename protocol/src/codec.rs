//! The payload codec. This module alone knows that payloads are bincode 1.3.3; swapping the
//! format means changing this file and bumping `header::VERSION`.
//!
//! Options: little-endian, varint integers, trailing bytes rejected (layout: `WIRE.md`).
//!
//! # How allocation stays bounded
//! A decoder must not let a hostile length prefix make it allocate. Three guards:
//! - the whole payload is checked against the caller's named limit before anything else;
//! - payloads are decoded from a slice, and bincode's slice reader checks every string or
//!   byte-string length prefix against the bytes that remain *before* it copies them, so a
//!   prefix claiming more than the payload holds fails without allocating. (bincode 1.3.3
//!   ignores `with_limit` when it reads from a slice, so a byte limit would add nothing;
//!   `protocol/tests/wire_alloc.rs` pins this behaviour with a counting allocator.)
//! - every `Vec` field of a message is decoded through [`bounded::vec`], which checks the
//!   element count against its named limit (e.g. [`crate::limits::BATCH_OPS_MAX`]) before
//!   reserving anything, and reserves at most [`PREALLOC_BYTES_MAX`] up front.

use crate::error::ProtocolError;
use bincode::Options;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Most bytes a decoder reserves for a sequence before its elements have actually been read.
/// Beyond this a `Vec` grows as elements arrive, so its size is paid for by input bytes.
pub const PREALLOC_BYTES_MAX: usize = 16 * 1024;

fn encode_options() -> impl Options {
    bincode::DefaultOptions::new().reject_trailing_bytes()
}

fn decode_options() -> impl Options {
    bincode::DefaultOptions::new().reject_trailing_bytes()
}

/// Encodes `value`, refusing an encoding over `limit_bytes` (the error gives the real size).
pub fn encode<T: Serialize>(value: &T, limit_bytes: usize) -> Result<Vec<u8>, ProtocolError> {
    let len = encode_options().serialized_size(value).map_err(|e| encode_error(*e))?;
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if len > limit_bytes {
        return Err(ProtocolError::TooLarge { what: "payload", len, max: limit_bytes });
    }
    let mut out = Vec::with_capacity(len);
    encode_options().serialize_into(&mut out, value).map_err(|e| encode_error(*e))?;
    debug_assert_eq!(out.len(), len, "serialized_size and serialize disagree");
    Ok(out)
}

/// The exact encoded size of `value`, without encoding it.
pub fn encoded_len<T: Serialize>(value: &T) -> Result<usize, ProtocolError> {
    let len = encode_options().serialized_size(value).map_err(|e| encode_error(*e))?;
    Ok(usize::try_from(len).unwrap_or(usize::MAX))
}

/// Decodes a `T` from exactly `bytes`. `bytes` must be at most `limit_bytes`; nothing inside
/// may claim more than `bytes` holds, and no sequence more than its named limit.
pub fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    what: &'static str,
    limit_bytes: usize,
) -> Result<T, ProtocolError> {
    if bytes.len() > limit_bytes {
        return Err(ProtocolError::TooLarge { what, len: bytes.len(), max: limit_bytes });
    }
    bounded::clear_violation();
    let result = decode_options().deserialize(bytes);
    // Take the violation whatever the outcome, so that none leaks into the next decode.
    let violation = bounded::take_violation();
    result.map_err(|e| match violation {
        Some(v) => ProtocolError::TooMany { what: v.what, count: v.count, max: v.max },
        None => decode_error(what, bytes.len(), *e),
    })
}

fn encode_error(e: bincode::ErrorKind) -> ProtocolError {
    // We encode with no byte limit, so a size error cannot happen here; what remains are
    // values serde cannot express in bincode (not produced by our types).
    ProtocolError::Malformed { what: "payload (encode)", detail: e.to_string() }
}

fn decode_error(what: &'static str, payload_bytes: usize, e: bincode::ErrorKind) -> ProtocolError {
    match e {
        // The slice ran out: a field or a length prefix claims more than the payload holds
        // (truncated, or a lie). The slice reader checked before copying: nothing allocated.
        bincode::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            ProtocolError::Malformed {
                what,
                detail: format!("runs past the end of its {payload_bytes}-byte payload"),
            }
        }
        other => ProtocolError::Malformed { what, detail: other.to_string() },
    }
}

/// `deserialize_with` helpers that check a count against a named limit before allocating.
/// They change nothing in the encoding: a bounded `Vec` has the same bytes as a plain one.
pub mod bounded {
    use serde::de::{Deserialize, Deserializer, Error, SeqAccess, Visitor};
    use std::cell::Cell;
    use std::fmt;
    use std::marker::PhantomData;

    #[derive(Clone, Copy, Debug)]
    pub(super) struct Violation {
        pub what: &'static str,
        pub count: usize,
        pub max: usize,
    }

    thread_local! {
        // serde errors are strings; this carries the numbers of a limit violation out of the
        // deserializer so the caller gets a typed `TooMany`. Decoding is synchronous, so the
        // thread-local cannot be seen by another decode.
        static VIOLATION: Cell<Option<Violation>> = const { Cell::new(None) };
    }

    pub(super) fn clear_violation() {
        VIOLATION.with(|v| v.set(None));
    }

    pub(super) fn take_violation() -> Option<Violation> {
        VIOLATION.with(|v| v.take())
    }

    /// Decodes a `Vec<T>` of at most `MAX` elements, refusing a larger count before reserving
    /// any memory. Use as `#[serde(deserialize_with = "crate::codec::bounded::vec::<_, _, {
    /// crate::limits::X }>")]`.
    pub fn vec<'de, D, T, const MAX: usize>(deserializer: D) -> Result<Vec<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        deserializer.deserialize_seq(BoundedVecVisitor::<T, MAX>(PhantomData))
    }

    struct BoundedVecVisitor<T, const MAX: usize>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>, const MAX: usize> Visitor<'de> for BoundedVecVisitor<T, MAX> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "a sequence of at most {MAX} elements")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let claimed = seq.size_hint().unwrap_or(0);
            if claimed > MAX {
                let what = std::any::type_name::<T>();
                VIOLATION.with(|v| v.set(Some(Violation { what, count: claimed, max: MAX })));
                return Err(A::Error::custom(format_args!(
                    "sequence of {claimed} elements, over the limit of {MAX}"
                )));
            }
            let reserve = claimed.min(super::PREALLOC_BYTES_MAX / std::mem::size_of::<T>().max(1));
            let mut out = Vec::with_capacity(reserve);
            // Bounded by `claimed <= MAX`; bincode also ends the sequence at `claimed`.
            while out.len() < MAX {
                match seq.next_element()? {
                    Some(element) => out.push(element),
                    None => return Ok(out),
                }
            }
            // Exactly MAX read: a self-describing format could still have more.
            match seq.next_element::<T>()? {
                None => Ok(out),
                Some(_) => {
                    let what = std::any::type_name::<T>();
                    VIOLATION.with(|v| v.set(Some(Violation { what, count: MAX + 1, max: MAX })));
                    Err(A::Error::custom(format_args!("sequence over the limit of {MAX}")))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{MESSAGE_BYTES_MAX, NAK_RANGES_MAX};
    use crate::message::layer::Nak;
    use crate::message::transfer::{Backup, BackupTarget};

    /// bincode varint of a u64 that needs the 8-byte form: marker 253 then little-endian.
    fn varint_u64(v: u64) -> Vec<u8> {
        let mut out = vec![253];
        out.extend_from_slice(&v.to_le_bytes());
        out
    }

    /// A sequence claiming 2^60 elements is refused as over its named count limit, with the
    /// true count and limit in the error.
    #[test]
    fn huge_sequence_count_refused_with_named_limit() {
        let mut payload = vec![5, 1]; // target 5, incarnation 1
        payload.extend(varint_u64(1 << 60));
        let err = decode::<Nak>(&payload, "Nak", MESSAGE_BYTES_MAX).unwrap_err();
        assert!(
            matches!(err, ProtocolError::TooMany { count, max: NAK_RANGES_MAX, .. }
                if count == 1 << 60),
            "{err:?}"
        );
    }

    /// A count within its limit but beyond what the payload holds fails as malformed once
    /// the bytes run out (nothing past the bytes is trusted).
    #[test]
    fn count_beyond_payload_is_malformed() {
        let payload = [5, 1, 200, 1, 2]; // 200 ranges claimed, under NAK_RANGES_MAX
        let err = decode::<Nak>(&payload, "Nak", MESSAGE_BYTES_MAX).unwrap_err();
        assert!(matches!(err, ProtocolError::Malformed { what: "Nak", .. }), "{err:?}");
    }

    /// A string prefix claiming 2^60 bytes is refused before allocation, and the error says
    /// what happened instead of a nonsense size.
    #[test]
    fn huge_string_prefix_refused_truthfully() {
        let mut payload = vec![0]; // BackupTarget::Directory
        payload.extend(varint_u64(1 << 60));
        let err = decode::<Backup>(&payload, "Backup", MESSAGE_BYTES_MAX).unwrap_err();
        match err {
            ProtocolError::Malformed { what: "Backup", detail } => {
                assert!(detail.contains("past the end of its 10-byte payload"), "{detail}")
            }
            other => panic!("{other:?}"),
        }
    }

    /// The payload itself is checked against the caller's limit first, with true figures.
    #[test]
    fn payload_over_limit_refused_with_sizes() {
        let value = Backup { target: BackupTarget::Directory("x".repeat(100)) };
        let bytes = encode(&value, 1000).unwrap();
        assert_eq!(
            decode::<Backup>(&bytes, "Backup", 50).unwrap_err(),
            ProtocolError::TooLarge { what: "Backup", len: bytes.len(), max: 50 }
        );
        assert_eq!(
            encode(&value, 50).unwrap_err(),
            ProtocolError::TooLarge { what: "payload", len: bytes.len(), max: 50 }
        );
        assert_eq!(encoded_len(&value).unwrap(), bytes.len());
    }

    /// Trailing bytes after a complete value are refused: one payload, one meaning.
    #[test]
    fn trailing_bytes_refused() {
        let value = Nak { target: 1, incarnation: 2, ranges: vec![(3, 4)] };
        let mut bytes = encode(&value, 1000).unwrap();
        assert_eq!(decode::<Nak>(&bytes, "Nak", 1000).unwrap(), value);
        bytes.push(0);
        assert!(matches!(decode::<Nak>(&bytes, "Nak", 1000), Err(ProtocolError::Malformed { .. })));
    }

    /// A limit violation in one decode does not leak into the classification of the next.
    #[test]
    fn violation_does_not_leak_between_decodes() {
        let mut huge = vec![5, 1];
        huge.extend(varint_u64(1 << 40));
        assert!(matches!(decode::<Nak>(&huge, "Nak", 1000), Err(ProtocolError::TooMany { .. })));
        assert!(matches!(decode::<Nak>(&[5], "Nak", 1000), Err(ProtocolError::Malformed { .. })));
    }
}
