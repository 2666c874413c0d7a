//! The receiver: IO-free (time comes in as `now_ms`, files go through a [`BlockSink`]).
//!
//! It accepts an offer only if it fits the free disk and names only plain file names; keeps a
//! bitmap of stored blocks; stores a block only if its MD5 matches; asks for missing blocks
//! below the highest block seen (at most every `repair_interval_ms`, a block again only after
//! `repair_retry_ms`), and for everything missing once the stream has ended (its last block
//! arrived) or stalled (`stall_ms` without a block). A file whose blocks are all in is read back
//! and checked against its whole-file MD5; a mismatch refetches the file, at most
//! `file_fetches_max` times. When every file matched, the sink installs them all at once and the
//! receiver reports `done`. A donor silent for `donor_timeout_ms` aborts the transfer: the
//! staging is discarded and the caller starts over with another donor.

use super::donor::{bit, set_bit};
use super::files::BlockSink;
use super::BLOCK_BYTES;
use super::{block_count, block_len, md5_of, offer_bytes, Progress, Result, TransferError};
use protocol::limits::{NAK_RANGES_MAX, NAME_BYTES_MAX};
use protocol::message::transfer::{FileTransBlock, FileTransRequest, TransFile};
use protocol::NodeId;
use std::collections::HashSet;

#[derive(Clone, Debug)]
pub struct ReceiverConfig {
    /// Least time between two repair requests.
    pub repair_interval_ms: u64,
    /// A block asked for is not asked for again before this, or before twice the measured
    /// repair round trip if that is longer (a receiver with a backlog of datagrams to process
    /// would otherwise ask again for repairs already on their way, and feed its own backlog).
    pub repair_retry_ms: u64,
    /// No block for this long: the stream is over or stalled; ask for everything missing.
    pub stall_ms: u64,
    /// A keepalive goes to the donor at least this often.
    pub status_interval_ms: u64,
    /// The donor is given up after this long without a block or an offer. Must exceed the
    /// donor's heartbeat interval by a wide margin.
    pub donor_timeout_ms: u64,
    /// Most blocks asked for in one request (keeps the donor's repair queue short).
    pub repair_blocks_per_request_max: u64,
    /// Full fetches of one file before its whole-file MD5 mismatch is final.
    pub file_fetches_max: u32,
    /// After install, `done` is repeated on each offer heard, for at most this long, so that
    /// the donor gets it despite loss.
    pub done_linger_ms: u64,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig {
            repair_interval_ms: 20,
            repair_retry_ms: 50,
            stall_ms: 200,
            status_interval_ms: 500,
            donor_timeout_ms: 3_000,
            repair_blocks_per_request_max: 4096,
            file_fetches_max: 3,
            done_linger_ms: 1_000,
        }
    }
}

/// How a receiver ended.
#[derive(Debug)]
pub enum ReceiverOutcome {
    /// Every file matched its MD5 and is installed.
    Installed,
    /// Nothing is installed; the staging is discarded. Start over with another donor.
    Failed(TransferError),
}

/// Why an incoming block was not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockVerdict {
    Stored,
    Duplicate,
    UnknownTransfer,
    FileOutOfRange,
    BlockOutOfRange,
    WrongSize,
    BadMd5,
    /// The transfer is over (installed or failed).
    Ignored,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReceiverStats {
    pub blocks_stored: u64,
    pub blocks_duplicate: u64,
    pub dropped_unknown_transfer: u64,
    pub dropped_file_out_of_range: u64,
    pub dropped_block_out_of_range: u64,
    pub dropped_wrong_size: u64,
    pub dropped_bad_md5: u64,
    pub file_md5_mismatches: u64,
    pub repair_requests_sent: u64,
    pub blocks_requested: u64,
}

#[derive(Debug)]
pub struct Receiver {
    config: ReceiverConfig,
    me: NodeId,
    offer: TransFile,
    starts: Vec<u64>,
    total_blocks: u64,
    have: Vec<u64>,
    have_count: u64,
    file_missing: Vec<u64>,
    file_verified: Vec<bool>,
    file_fetches: Vec<u32>,
    /// Per block: when it was last asked for, in ms since `started_ms`, plus one (0: never).
    asked_at: Vec<u32>,
    started_ms: u64,
    last_donor_ms: u64,
    last_block_ms: u64,
    /// One past the highest block seen.
    frontier: u64,
    last_request_ms: Option<u64>,
    last_sent_ms: u64,
    /// Smoothed round trip of a repair (request to block), ms.
    repair_rtt_ms: u64,
    outcome: Option<ReceiverOutcome>,
    installed_ms: Option<u64>,
    done_pending: bool,
    stats: ReceiverStats,
}

/// A file name a receiver accepts: one plain path component.
fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_BYTES_MAX
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
}

impl Receiver {
    /// Checks `offer` and prepares the sink. Refuses (with the reason) an offer that does not
    /// fit `free_bytes`, uses another block size, or names an unsafe or duplicate file.
    pub fn accept(
        config: ReceiverConfig,
        me: NodeId,
        offer: &TransFile,
        free_bytes: u64,
        sink: &mut dyn BlockSink,
        now_ms: u64,
    ) -> Result<Receiver> {
        if offer.block_bytes != BLOCK_BYTES {
            return Err(TransferError::BadOffer(format!(
                "block size {} bytes, this build uses {BLOCK_BYTES}",
                offer.block_bytes
            )));
        }
        let mut names = HashSet::new();
        for f in &offer.files {
            if !safe_name(&f.name) {
                return Err(TransferError::BadOffer(format!("unsafe file name {:?}", f.name)));
            }
            if !names.insert(f.name.as_str()) {
                return Err(TransferError::BadOffer(format!("file {} offered twice", f.name)));
            }
        }
        let needed_bytes = offer_bytes(offer);
        if needed_bytes > free_bytes {
            tracing::warn!(transfer = offer.transfer, needed_bytes, free_bytes, "offer refused");
            return Err(TransferError::NoSpace { needed_bytes, free_bytes });
        }
        let mut starts = Vec::with_capacity(offer.files.len());
        let mut total_blocks = 0u64;
        let mut file_missing = Vec::with_capacity(offer.files.len());
        for f in &offer.files {
            starts.push(total_blocks);
            let blocks = block_count(f.size, BLOCK_BYTES);
            file_missing.push(blocks);
            total_blocks += blocks;
        }
        sink.begin(offer)?;
        let mut receiver = Receiver {
            config,
            me,
            starts,
            total_blocks,
            have: vec![0; total_blocks.div_ceil(64) as usize],
            have_count: 0,
            file_verified: vec![false; offer.files.len()],
            file_fetches: vec![1; offer.files.len()],
            file_missing,
            asked_at: vec![0; total_blocks as usize],
            started_ms: now_ms,
            last_donor_ms: now_ms,
            last_block_ms: now_ms,
            frontier: 0,
            last_request_ms: None,
            last_sent_ms: now_ms,
            repair_rtt_ms: 0,
            outcome: None,
            installed_ms: None,
            done_pending: false,
            stats: ReceiverStats::default(),
            offer: offer.clone(),
        };
        // Empty files are complete already.
        for file in 0..offer.files.len() {
            if receiver.file_missing[file] == 0 {
                receiver.file_complete(file, sink);
            }
        }
        receiver.maybe_install(sink, now_ms);
        Ok(receiver)
    }

    pub fn offer(&self) -> &TransFile {
        &self.offer
    }

    pub fn stats(&self) -> ReceiverStats {
        self.stats
    }

    pub fn outcome(&self) -> Option<&ReceiverOutcome> {
        self.outcome.as_ref()
    }

    /// Takes the outcome out (the receiver then counts as running; for drivers that are done).
    pub fn take_outcome(&mut self) -> Option<ReceiverOutcome> {
        self.outcome.take()
    }

    /// When the files were installed (the `now_ms` of that moment).
    pub fn installed_at_ms(&self) -> Option<u64> {
        self.installed_ms
    }

    pub fn is_installed(&self) -> bool {
        matches!(self.outcome, Some(ReceiverOutcome::Installed))
    }

    /// Over, and nothing more to tell the donor: failed, or installed and `done` lingered.
    pub fn is_finished(&self, now_ms: u64) -> bool {
        match (&self.outcome, self.installed_ms) {
            (Some(ReceiverOutcome::Failed(_)), _) => true,
            (Some(ReceiverOutcome::Installed), Some(at)) => {
                now_ms.saturating_sub(at) >= self.config.done_linger_ms
            }
            _ => false,
        }
    }

    pub fn progress(&self, now_ms: u64) -> Progress {
        let total = offer_bytes(&self.offer);
        let done = if self.is_installed() {
            total
        } else {
            (self.have_count * u64::from(BLOCK_BYTES)).min(total)
        };
        Progress::compute(self.offer.transfer, done, total, now_ms.saturating_sub(self.started_ms))
    }

    fn fail(&mut self, error: TransferError, sink: &mut dyn BlockSink) {
        tracing::warn!(transfer = self.offer.transfer, error = %error, "transfer failed; staging discarded");
        sink.discard();
        self.outcome = Some(ReceiverOutcome::Failed(error));
    }

    /// An offer heard on the group: the donor is alive (and, once installed, wants `done`).
    pub fn on_offer(&mut self, offer: &TransFile, now_ms: u64) {
        if offer.transfer != self.offer.transfer {
            self.stats.dropped_unknown_transfer += 1;
            return;
        }
        self.last_donor_ms = now_ms;
        if self.is_installed() {
            self.done_pending = true;
        }
    }

    /// A block from the group. Stores it only if it belongs here and its MD5 matches.
    pub fn on_block(
        &mut self,
        block: &FileTransBlock,
        sink: &mut dyn BlockSink,
        now_ms: u64,
    ) -> BlockVerdict {
        let verdict = self.check_block(block);
        match verdict {
            BlockVerdict::UnknownTransfer => self.stats.dropped_unknown_transfer += 1,
            BlockVerdict::FileOutOfRange => self.stats.dropped_file_out_of_range += 1,
            BlockVerdict::BlockOutOfRange => self.stats.dropped_block_out_of_range += 1,
            BlockVerdict::WrongSize => self.stats.dropped_wrong_size += 1,
            BlockVerdict::BadMd5 => self.stats.dropped_bad_md5 += 1,
            BlockVerdict::Duplicate => self.stats.blocks_duplicate += 1,
            BlockVerdict::Stored | BlockVerdict::Ignored => {}
        }
        if !matches!(verdict, BlockVerdict::UnknownTransfer) {
            self.last_donor_ms = now_ms;
        }
        if matches!(verdict, BlockVerdict::Duplicate | BlockVerdict::BadMd5) {
            self.last_block_ms = now_ms;
        }
        if verdict != BlockVerdict::Stored {
            return verdict;
        }
        self.last_block_ms = now_ms;
        let file = block.file as usize;
        let global = self.starts[file] + block.block;
        self.frontier = self.frontier.max(global + 1);
        if let Err(e) = sink.write_at(block.file, block.block * u64::from(BLOCK_BYTES), &block.data)
        {
            self.fail(e, sink);
            return BlockVerdict::Ignored;
        }
        let asked = self.asked_at[global as usize];
        if asked != 0 {
            let sample = self.stamp(now_ms).saturating_sub(asked);
            self.repair_rtt_ms = (7 * self.repair_rtt_ms + u64::from(sample)) / 8;
        }
        set_bit(&mut self.have, global, true);
        self.have_count += 1;
        self.stats.blocks_stored += 1;
        self.file_missing[file] -= 1;
        if self.file_missing[file] == 0 {
            self.file_complete(file, sink);
            self.maybe_install(sink, now_ms);
        }
        BlockVerdict::Stored
    }

    fn check_block(&self, block: &FileTransBlock) -> BlockVerdict {
        if block.transfer != self.offer.transfer {
            return BlockVerdict::UnknownTransfer;
        }
        if self.outcome.is_some() {
            return BlockVerdict::Ignored;
        }
        let Some(f) = self.offer.files.get(block.file as usize) else {
            return BlockVerdict::FileOutOfRange;
        };
        if block.block >= block_count(f.size, BLOCK_BYTES) {
            return BlockVerdict::BlockOutOfRange;
        }
        if block.data.len() != block_len(f.size, BLOCK_BYTES, block.block) {
            return BlockVerdict::WrongSize;
        }
        if md5_of(&block.data) != block.md5 {
            return BlockVerdict::BadMd5;
        }
        if bit(&self.have, self.starts[block.file as usize] + block.block) {
            return BlockVerdict::Duplicate;
        }
        BlockVerdict::Stored
    }

    /// Every block of `file` is staged: check the whole file as stored.
    fn file_complete(&mut self, file: usize, sink: &mut dyn BlockSink) {
        let offered = &self.offer.files[file];
        let md5 = match sink.staged_md5(file as u32) {
            Ok(m) => m,
            Err(e) => return self.fail(e, sink),
        };
        if md5 == offered.md5 {
            self.file_verified[file] = true;
            return;
        }
        self.stats.file_md5_mismatches += 1;
        if self.file_fetches[file] >= self.config.file_fetches_max {
            let error = TransferError::FileMismatch {
                name: offered.name.clone(),
                attempts: self.file_fetches[file],
            };
            return self.fail(error, sink);
        }
        tracing::warn!(
            event = "checksum_failure",
            transfer = self.offer.transfer,
            file = %offered.name,
            "whole-file MD5 mismatch; fetching the file again"
        );
        self.file_fetches[file] += 1;
        let blocks = block_count(offered.size, BLOCK_BYTES);
        let start = self.starts[file];
        for g in start..start + blocks {
            set_bit(&mut self.have, g, false);
            self.asked_at[g as usize] = 0;
        }
        self.have_count -= blocks;
        self.file_missing[file] = blocks;
        // Ask for it at once.
        self.frontier = self.frontier.max(start + blocks);
    }

    fn maybe_install(&mut self, sink: &mut dyn BlockSink, now_ms: u64) {
        if self.outcome.is_some() || !self.file_verified.iter().all(|v| *v) {
            return;
        }
        match sink.install() {
            Ok(()) => {
                tracing::info!(
                    transfer = self.offer.transfer,
                    progress = %self.progress(now_ms),
                    "every file matched its MD5; installed"
                );
                self.outcome = Some(ReceiverOutcome::Installed);
                self.installed_ms = Some(now_ms);
                self.done_pending = true;
            }
            Err(e) => self.fail(e, sink),
        }
    }

    fn request(&self, ranges: Vec<(u32, u64, u32)>, done: bool) -> FileTransRequest {
        FileTransRequest { transfer: self.offer.transfer, receiver: self.me, ranges, done }
    }

    /// Runs the timers; returns a request for the donor if one is due (repairs, keepalive or
    /// `done`). Call every few ms and after each input.
    pub fn poll(&mut self, now_ms: u64, sink: &mut dyn BlockSink) -> Option<FileTransRequest> {
        match self.outcome {
            Some(ReceiverOutcome::Failed(_)) => return None,
            Some(ReceiverOutcome::Installed) => {
                if self.done_pending && !self.is_finished(now_ms) {
                    self.done_pending = false;
                    return Some(self.request(Vec::new(), true));
                }
                return None;
            }
            None => {}
        }
        let silent_ms = now_ms.saturating_sub(self.last_donor_ms);
        if silent_ms >= self.config.donor_timeout_ms {
            self.fail(TransferError::DonorSilent { silent_ms }, sink);
            return None;
        }
        let repair_due = self
            .last_request_ms
            .is_none_or(|at| now_ms.saturating_sub(at) >= self.config.repair_interval_ms);
        if repair_due {
            let stalled = now_ms.saturating_sub(self.last_block_ms) >= self.config.stall_ms;
            let over = self.frontier >= self.total_blocks || stalled;
            let limit = if over { self.total_blocks } else { self.frontier };
            let ranges = self.missing_ranges(limit, now_ms);
            if !ranges.is_empty() {
                self.last_request_ms = Some(now_ms);
                self.last_sent_ms = now_ms;
                self.stats.repair_requests_sent += 1;
                return Some(self.request(ranges, false));
            }
        }
        if now_ms.saturating_sub(self.last_sent_ms) >= self.config.status_interval_ms {
            self.last_sent_ms = now_ms;
            return Some(self.request(Vec::new(), false));
        }
        None
    }

    fn stamp(&self, now_ms: u64) -> u32 {
        (now_ms.saturating_sub(self.started_ms) + 1).min(u64::from(u32::MAX)) as u32
    }

    /// The current wait before a block is asked for again.
    pub fn repair_retry_ms(&self) -> u64 {
        (2 * self.repair_rtt_ms)
            .max(self.config.repair_retry_ms)
            .min(self.config.donor_timeout_ms / 2)
    }

    /// Missing blocks below `limit` not asked for within `repair_retry_ms`, as ranges per file,
    /// at most [`NAK_RANGES_MAX`] ranges and `repair_blocks_per_request_max` blocks. Marks them
    /// asked.
    fn missing_ranges(&mut self, limit: u64, now_ms: u64) -> Vec<(u32, u64, u32)> {
        let stamp = self.stamp(now_ms);
        let retry = self.repair_retry_ms();
        let mut ranges: Vec<(u32, u64, u32)> = Vec::new();
        let mut blocks = 0u64;
        let mut g = 0u64;
        while g < limit {
            let word = self.have[(g / 64) as usize];
            if g.is_multiple_of(64) && word == u64::MAX {
                g += 64;
                continue;
            }
            let askable = !bit(&self.have, g) && {
                let at = self.asked_at[g as usize];
                at == 0 || u64::from(stamp - at) >= retry
            };
            if askable {
                let file = self.starts.partition_point(|&s| s <= g) - 1;
                let block = g - self.starts[file];
                match ranges.last_mut() {
                    Some((f, first, count))
                        if *f == file as u32 && *first + u64::from(*count) == block =>
                    {
                        *count += 1
                    }
                    _ => {
                        if ranges.len() == NAK_RANGES_MAX {
                            break;
                        }
                        ranges.push((file as u32, block, 1));
                    }
                }
                self.asked_at[g as usize] = stamp;
                blocks += 1;
                if blocks >= self.config.repair_blocks_per_request_max {
                    break;
                }
            }
            g += 1;
        }
        self.stats.blocks_requested += blocks;
        ranges
    }
}
