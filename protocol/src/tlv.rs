//! TLV records: the data log's framing (type, length, value, zxid, CRC32C).
//!
//! Owned by the storage work; see `protocol/WIRE.md` and `fs-node/STORAGE.md`.
//!
//! One record, little-endian:
//!
//! ```text
//! offset  size  field
//! 0       1     type        (RecordType)
//! 1       4     length      value bytes, at most RECORD_VALUE_BYTES_MAX
//! 5       8     zxid
//! 13      len   value
//! 13+len  4     crc32c      over bytes [0, 13+len): type, length, zxid and value
//! ```
//!
//! Decoding checks, in this order: enough bytes for a header (else `Incomplete`), the length
//! against [`RECORD_VALUE_BYTES_MAX`] (else `TooLarge`, before anything is allocated), enough
//! bytes for the whole record (else `Incomplete`), the checksum (else `BadChecksum`), and last
//! the type byte (else `Malformed`). The checksum comes before the type so that random garbage
//! reads as a checksum failure, which is what a torn write looks like.

use crate::error::ProtocolError;
use crate::limits::MESSAGE_BYTES_MAX;
use crate::Zxid;

/// The on-disk format version (framing and record type table), written in every log
/// segment's `SegmentStart` and in the data files' `Checkpoint`. A reader refuses a higher one.
/// Independent of the wire version: a wire version bump does not rewrite disks.
pub const FORMAT_VERSION: u8 = 1;

/// Bytes before the value: type, length, zxid.
pub const HEADER_BYTES: usize = 13;
/// Bytes after the value: the CRC32C.
pub const TRAILER_BYTES: usize = 4;
/// Framing bytes around a value.
pub const OVERHEAD_BYTES: usize = HEADER_BYTES + TRAILER_BYTES;
/// Largest value one record may carry: a whole message (a replication entry carrying a batch of
/// ops at the hard value ceiling fits).
pub const RECORD_VALUE_BYTES_MAX: usize = MESSAGE_BYTES_MAX;

macro_rules! record_types {
    ($($(#[$doc:meta])* $variant:ident = $byte:literal,)*) => {
        /// What a record holds. The numbering is part of the on-disk format: never reuse a byte.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum RecordType {
            $($(#[$doc])* $variant = $byte,)*
        }

        impl RecordType {
            pub fn from_byte(b: u8) -> Option<RecordType> {
                match b {
                    $($byte => Some(RecordType::$variant),)*
                    _ => None,
                }
            }

            pub const ALL: &'static [RecordType] = &[$(RecordType::$variant,)*];
        }
    };
}

record_types! {
    // Data log (fs-node/src/storage/log.rs).
    /// A replication log entry (`message::replication::Entry`): zxid, opaque command bytes.
    LogEntry = 1,
    /// Everything up to this record's zxid is committed. Empty value.
    CommitMark = 2,
    /// First record of every log segment; its zxid is the last zxid before the segment, so a
    /// reader knows whether the retained log starts where a follower needs it. Value: the
    /// format version byte.
    SegmentStart = 3,
    /// The replication engine's durable epoch state (opaque to the log); the last one wins.
    /// Rewritten at the start of every new segment so that retention never drops it.
    HardState = 4,

    // Data files (fs-node/src/storage/data.rs).
    /// A file value: value = key length (u32 LE), key, value bytes.
    DataPut = 16,
    /// A directory: value = key.
    DataMkdir = 17,
    /// A tombstone: value = key.
    DataDelete = 18,
    /// Every record of the batch applied at this zxid precedes this one; the batch is whole.
    /// Empty value. Also written by compaction as the applied watermark of its output.
    BatchEnd = 19,

    // Hint files (fs-node/src/storage/hint.rs).
    /// One index entry of a sealed data segment: value = kind u8, offset u32, length u32, key.
    Hint = 24,
    /// Last record of a valid hint file; zxid = the applied watermark the segment covers;
    /// value = count u32 and ids u32 of the compaction group this segment belongs to, then
    /// count u32 and ids u32 of the segments that group replaces (both empty for a segment the
    /// writer sealed), so that an interrupted merge is rolled forward or back at start-up.
    HintFooter = 25,
    /// The data files' checkpoint: zxid = applied zxid made durable; value = active segment id
    /// u32, its synced length u64, and the format version byte. Damage below that length is corruption, above it a torn
    /// tail.
    Checkpoint = 26,

    // Reserved for the state machine's tables, saved beside the data files at checkpoints.
    /// A snapshot of the lock table (encoding owned by `fs-node::locks`).
    LockTable = 32,
    /// A snapshot of the session table (encoding owned by `fs-node::state`).
    SessionTable = 33,
    /// A snapshot of the client request table (retry de-duplication).
    RequestTable = 34,

    // Client side.
    /// One buffered write of a transaction in the client's local TLV log.
    TxnWrite = 40,
}

/// One decoded record, borrowing its value from the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub kind: RecordType,
    pub zxid: Zxid,
    pub value: &'a [u8],
}

/// The encoded size of a record whose value is `value_bytes` long.
pub fn encoded_len(value_bytes: usize) -> usize {
    OVERHEAD_BYTES + value_bytes
}

/// Appends one record whose value is the concatenation of `parts` to `out`.
pub fn encode_parts(
    kind: RecordType,
    zxid: Zxid,
    parts: &[&[u8]],
    out: &mut Vec<u8>,
) -> Result<(), ProtocolError> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len > RECORD_VALUE_BYTES_MAX {
        return Err(ProtocolError::TooLarge {
            what: "tlv record value",
            len,
            max: RECORD_VALUE_BYTES_MAX,
        });
    }
    let start = out.len();
    out.reserve(encoded_len(len));
    out.push(kind as u8);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&zxid.0.to_le_bytes());
    for part in parts {
        out.extend_from_slice(part);
    }
    let crc = crc32c::crc32c(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Appends one record to `out`.
pub fn encode_into(
    kind: RecordType,
    zxid: Zxid,
    value: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), ProtocolError> {
    encode_parts(kind, zxid, &[value], out)
}

/// One record as a fresh buffer.
pub fn encode(kind: RecordType, zxid: Zxid, value: &[u8]) -> Result<Vec<u8>, ProtocolError> {
    let mut out = Vec::new();
    encode_into(kind, zxid, value, &mut out)?;
    Ok(out)
}

/// From a header alone: the whole record's size in bytes. `Incomplete` if `buf` is shorter
/// than a header; `TooLarge` if the length field is over the limit. Lets a reader size its
/// read before it allocates.
pub fn record_len(buf: &[u8]) -> Result<usize, ProtocolError> {
    if buf.len() < HEADER_BYTES {
        return Err(ProtocolError::Incomplete { needed: HEADER_BYTES - buf.len() });
    }
    let len = u32::from_le_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len > RECORD_VALUE_BYTES_MAX {
        return Err(ProtocolError::TooLarge {
            what: "tlv record value",
            len,
            max: RECORD_VALUE_BYTES_MAX,
        });
    }
    Ok(encoded_len(len))
}

/// Decodes the record at the start of `buf`; returns it and its size in bytes.
pub fn decode(buf: &[u8]) -> Result<(Record<'_>, usize), ProtocolError> {
    let total = record_len(buf)?;
    if buf.len() < total {
        return Err(ProtocolError::Incomplete { needed: total - buf.len() });
    }
    let body = &buf[..total - TRAILER_BYTES];
    let stored = u32::from_le_bytes(buf[total - 4..total].try_into().expect("4 bytes"));
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Err(ProtocolError::BadChecksum { stored, computed });
    }
    let kind = RecordType::from_byte(buf[0]).ok_or_else(|| ProtocolError::Malformed {
        what: "tlv record",
        detail: format!("unknown record type {}", buf[0]),
    })?;
    let zxid = Zxid(u64::from_le_bytes(buf[5..13].try_into().expect("8 bytes")));
    Ok((Record { kind, zxid, value: &body[HEADER_BYTES..] }, total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_type() -> impl Strategy<Value = RecordType> {
        proptest::sample::select(RecordType::ALL.to_vec())
    }

    proptest! {
        /// Any record decodes back to exactly what was encoded, and consumes exactly its bytes.
        #[test]
        fn round_trip(kind in any_type(), zxid in any::<u64>(),
                      value in proptest::collection::vec(any::<u8>(), 0..2048),
                      trailing in proptest::collection::vec(any::<u8>(), 0..32)) {
            let mut buf = encode(kind, Zxid(zxid), &value).unwrap();
            let len = buf.len();
            prop_assert_eq!(len, encoded_len(value.len()));
            buf.extend_from_slice(&trailing);
            let (rec, used) = decode(&buf).unwrap();
            prop_assert_eq!(used, len);
            prop_assert_eq!(rec.kind, kind);
            prop_assert_eq!(rec.zxid, Zxid(zxid));
            prop_assert_eq!(rec.value, &value[..]);
        }

        /// Every strict prefix of a record is "need more bytes", never malformed.
        #[test]
        fn prefixes_are_incomplete(value in proptest::collection::vec(any::<u8>(), 0..256),
                                   cut in any::<prop::sample::Index>()) {
            let buf = encode(RecordType::LogEntry, Zxid(7), &value).unwrap();
            let cut = cut.index(buf.len());
            let is_incomplete = matches!(decode(&buf[..cut]), Err(ProtocolError::Incomplete { .. }));
            prop_assert!(is_incomplete);
        }

        /// Flipping any one bit of a record is detected (never decoded as a different record).
        #[test]
        fn bit_flips_are_detected(value in proptest::collection::vec(any::<u8>(), 0..256),
                                  bit in any::<prop::sample::Index>()) {
            let mut buf = encode(RecordType::DataPut, Zxid(9), &value).unwrap();
            let bit = bit.index(buf.len() * 8);
            buf[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode(&buf).is_err());
        }
    }

    /// A length over the limit is refused from the header alone, before any allocation.
    #[test]
    fn oversize_length_is_refused_from_the_header() {
        let mut header = vec![RecordType::LogEntry as u8];
        header.extend_from_slice(&((RECORD_VALUE_BYTES_MAX + 1) as u32).to_le_bytes());
        header.extend_from_slice(&0u64.to_le_bytes());
        assert!(matches!(decode(&header), Err(ProtocolError::TooLarge { .. })));
    }

    /// An unknown type byte with a valid checksum is malformed, not a checksum failure.
    #[test]
    fn unknown_type_is_malformed() {
        let mut buf = encode(RecordType::LogEntry, Zxid(1), b"x").unwrap();
        buf[0] = 200;
        let body_len = buf.len() - TRAILER_BYTES;
        let crc = crc32c::crc32c(&buf[..body_len]);
        buf[body_len..].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(decode(&buf), Err(ProtocolError::Malformed { .. })));
    }

    /// The record type bytes are distinct (they are part of the on-disk format).
    #[test]
    fn record_type_bytes_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for t in RecordType::ALL {
            assert!(seen.insert(*t as u8));
            assert_eq!(RecordType::from_byte(*t as u8), Some(*t));
        }
    }
}
