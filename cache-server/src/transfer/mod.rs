//! File transfer (issue 7): a donor sends its frozen data files to one or more receivers over
//! one multicast stream of 8 KiB blocks, each with its MD5; receivers ask again for what they
//! miss; every whole file is checked before anything is installed.
//!
//! # Layout
//! - [`donor`]: [`Donor`], the IO-free donor: the offer, a paced block stream (token bucket),
//!   repairs served first, receiver tracking, completion, receiver-silence abort, progress.
//! - [`receiver`]: [`Receiver`], the IO-free receiver: offer checks (free disk, safe names),
//!   a bitmap of blocks, per-block MD5, repair requests, whole-file MD5, atomic install,
//!   donor-silence abort.
//! - [`files`]: the only file access: [`BlockSource`] (donor), [`BlockSink`] (receiver),
//!   [`Freezer`] (the node's freeze/unfreeze); real-filesystem and in-memory implementations.
//! - [`net`]: the async drivers over [`protocol::messaging::Endpoint`].
//!
//! # Protocol
//! 1. Receiver → donor: `RequestFile` (unicast request). The donor freezes (the node announces
//!    Freeze), describes the frozen files (name, size, whole-file MD5) and answers `TransFile`
//!    naming the multicast group this transfer uses alone. A second receiver asking while the
//!    transfer runs gets the same offer and joins the same stream.
//! 2. Donor → group: `FileTransBlock`s in file order, paced at `rate_bytes_per_s`; the offer is
//!    repeated every `heartbeat_interval_ms` on the group (liveness; late joiners).
//! 3. Receiver → donor (unicast, best effort): `FileTransRequest` with missing ranges, at most
//!    every `repair_interval_ms`; an empty one every `status_interval_ms` as a keepalive; one
//!    with `done` once every file is installed. The donor serves repairs before the stream.
//! 4. The donor finishes when every receiver it knows is done or dropped (silent for
//!    `receiver_timeout_ms`, asked for more than `repair_factor_max` times the data set, or not
//!    done by the deadline, `deadline_stream_factor` × the nominal stream time): the node
//!    unfreezes and folds in the frozen period's log; each receiver catches up from the
//!    offer's `snapshot_zxid`.
//!
//! # Limits (all named in [`DonorConfig`] / [`ReceiverConfig`] / [`net`])
//! Ranges per request: [`protocol::limits::NAK_RANGES_MAX`]; blocks per request:
//! `repair_blocks_per_request_max`; donor repair queue: `repair_queue_blocks_max`; a transfer
//! endpoint's receive queue: [`net::TRANSFER_QUEUE_DATAGRAMS_MAX`]; the offer must fit one
//! datagram (about 1 500 files with the store's 15-character names), checked by
//! [`Donor::new`].
//!
//! # Why unreliable datagrams and not the reliable stream
//! Blocks are individually checked and individually repaired, so the messaging layer's
//! ordering, retransmit buffer and credit would only buffer the data a second time and let one
//! slow receiver hold back the rest. The donor paces instead, and a receiver that cannot keep
//! up simply asks for its missing blocks afterwards.

pub mod donor;
pub mod files;
pub mod net;
pub mod receiver;

pub use donor::{Donor, DonorConfig, DonorOutcome, DonorStats};
pub use files::{
    BlockSink, BlockSource, Freezer, FrozenSet, FsSink, FsSource, MemFreezer, MemSink, MemSource,
};
pub use receiver::{Receiver, ReceiverConfig, ReceiverOutcome, ReceiverStats};

use md5::{Digest, Md5};
use protocol::message::transfer::TransFile;
use protocol::NodeId;
use std::path::PathBuf;
use thiserror::Error;

/// The block size of every transfer (DESIGN.md: 8 KiB).
pub const BLOCK_BYTES: u32 = protocol::limits::FILE_BLOCK_BYTES as u32;

/// Why a transfer could not start, or stopped. Every message says what the operator can do.
#[derive(Debug, Error)]
pub enum TransferError {
    #[error(
        "the offer needs {needed_bytes} bytes but only {free_bytes} are free; free disk space \
         or choose a receiver with more room"
    )]
    NoSpace { needed_bytes: u64, free_bytes: u64 },
    #[error("the offer is unusable: {0}; the donor runs a different version or is faulty")]
    BadOffer(String),
    #[error("the donor went silent for {silent_ms} ms; start over with another donor")]
    DonorSilent { silent_ms: u64 },
    #[error(
        "file {name} still fails its whole-file MD5 after {attempts} full fetches; the donor's \
         file differs from its offer: start over with another donor"
    )]
    FileMismatch { name: String, attempts: u32 },
    #[error("every receiver went silent or gave up; the transfer is abandoned")]
    NoReceivers,
    #[error("the donor refused to send its files ({code:?}): {message}")]
    Refused { code: protocol::message::data::ErrorCode, message: String },
    #[error("the offer of {files} files does not fit one datagram ({bytes} bytes encoded)")]
    OfferTooLarge { files: usize, bytes: usize },
    #[error("{op} {path}: {source} (check the disk and permissions)")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    State(String),
    #[error("messaging: {0}")]
    Messaging(#[from] protocol::messaging::MessagingError),
}

impl TransferError {
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TransferError::Io { op, path: path.into(), source }
    }
}

pub type Result<T, E = TransferError> = std::result::Result<T, E>;

/// The MD5 of a byte slice.
pub fn md5_of(data: &[u8]) -> [u8; 16] {
    Md5::digest(data).into()
}

/// How many blocks a file of `size` bytes has.
pub fn block_count(size: u64, block_bytes: u32) -> u64 {
    size.div_ceil(u64::from(block_bytes))
}

/// The exact length of block `block` of a file of `size` bytes.
pub fn block_len(size: u64, block_bytes: u32, block: u64) -> usize {
    let start = block * u64::from(block_bytes);
    debug_assert!(start < size, "block {block} is past a file of {size} bytes");
    (size - start).min(u64::from(block_bytes)) as usize
}

/// Total bytes an offer carries.
pub fn offer_bytes(offer: &TransFile) -> u64 {
    offer.files.iter().map(|f| f.size).sum()
}

/// Bytes moved, rate and time left: what `shoal status` and the logs show.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Progress {
    pub transfer: u64,
    pub done_bytes: u64,
    pub total_bytes: u64,
    /// Average since the start, bytes per second.
    pub rate_bytes_per_s: f64,
    /// Estimated time left at that rate (None before any progress).
    pub eta_ms: Option<u64>,
    pub elapsed_ms: u64,
}

impl Progress {
    pub(crate) fn compute(
        transfer: u64,
        done_bytes: u64,
        total_bytes: u64,
        elapsed_ms: u64,
    ) -> Progress {
        let rate_bytes_per_s =
            if elapsed_ms == 0 { 0.0 } else { done_bytes as f64 * 1000.0 / elapsed_ms as f64 };
        let eta_ms = (rate_bytes_per_s > 0.0).then(|| {
            (total_bytes.saturating_sub(done_bytes) as f64 * 1000.0 / rate_bytes_per_s) as u64
        });
        Progress { transfer, done_bytes, total_bytes, rate_bytes_per_s, eta_ms, elapsed_ms }
    }
}

impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        write!(
            f,
            "transfer {}: {:.1}/{:.1} MiB, {:.1} MiB/s",
            self.transfer,
            mib(self.done_bytes),
            mib(self.total_bytes),
            self.rate_bytes_per_s / (1024.0 * 1024.0)
        )?;
        match self.eta_ms {
            Some(ms) => write!(f, ", {:.1} s left", ms as f64 / 1000.0),
            None => write!(f, ", time left unknown"),
        }
    }
}

/// Who a donor is serving, for `shoal status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiverStatus {
    pub node: NodeId,
    pub done: bool,
    pub repair_requests: u32,
}
