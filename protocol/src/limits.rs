//! Every size bound of the protocol, named. Decoders check a length against one of these
//! before they allocate.

/// Largest UDP payload we send: one datagram, header and tag included. 65 507 is the IPv4
/// maximum; we stay below it with room for the header.
pub const DATAGRAM_BYTES_MAX: usize = 65_000;

/// Payload bytes carried by one datagram (a fragment), about 60 KiB as the design says.
pub const FRAGMENT_PAYLOAD_BYTES_MAX: usize = 60 * 1024;

/// Default key limit (configurable downwards or upwards by the operator, never above
/// [`KEY_BYTES_HARD_MAX`]).
pub const KEY_BYTES_DEFAULT: usize = 4 * 1024;
/// Default value limit.
pub const VALUE_BYTES_DEFAULT: usize = 16 * 1024 * 1024;

/// Hard ceilings the decoder enforces whatever the configuration says.
pub const KEY_BYTES_HARD_MAX: usize = 64 * 1024;
pub const VALUE_BYTES_HARD_MAX: usize = 64 * 1024 * 1024;

/// Largest reassembled message: the hard value ceiling plus room for keys and framing.
pub const MESSAGE_BYTES_MAX: usize = VALUE_BYTES_HARD_MAX + 1024 * 1024;

/// Most fragments one message may have.
pub const FRAGMENTS_PER_MESSAGE_MAX: usize = MESSAGE_BYTES_MAX.div_ceil(FRAGMENT_PAYLOAD_BYTES_MAX);

/// Most operations in one batch or transaction.
pub const BATCH_OPS_MAX: usize = 4096;

/// Most entries returned by one `list`.
pub const LIST_ENTRIES_MAX: usize = 100_000;

/// Most events in one page of a history read (one entry yields at most two per op, so a
/// page always has room for a whole entry).
pub const HISTORY_EVENTS_MAX: usize = 65_536;

/// Most bytes of events (keys and values) one page of a history read collects before it stops
/// at an entry boundary; a page holds at least one entry whatever its size.
pub const HISTORY_PAGE_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Most values in one page of a range read (`ReadOp::Range`).
pub const RANGE_ENTRIES_MAX: usize = 100_000;

/// Most bytes (keys and values, plus [`crate::range::ENTRY_OVERHEAD_BYTES`] each) one page of a
/// range read collects; a page holds at least one value whatever its size.
pub const RANGE_PAGE_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Most records in one replication proposal or catch-up message.
pub const RECORDS_PER_MESSAGE_MAX: usize = 65_536;

/// File transfer block.
pub const FILE_BLOCK_BYTES: usize = 8 * 1024;

/// Most files named in one TransFile offer.
pub const TRANSFER_FILES_MAX: usize = 65_536;

/// Longest lock name, host name or other short string on the wire.
pub const NAME_BYTES_MAX: usize = 1024;

/// Most holders listed for one lock.
pub const LOCK_HOLDERS_MAX: usize = 1024;

/// Most sequence ranges in one negative ack.
pub const NAK_RANGES_MAX: usize = 256;

/// Most members of a cluster.
pub const MEMBERS_MAX: usize = 7;
