//! TLV records: the data log's framing (type, length, value, zxid, CRC32C).
//!
//! Owned by the storage work; see `protocol/WIRE.md` and `fs-node/STORAGE.md`.
