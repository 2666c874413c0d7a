//! The donor: IO-free (time comes in as `now_ms`, blocks are read through a [`BlockSource`]).
//!
//! One pass of the stream sends every block in file order, paced by a token bucket; repairs
//! asked for by receivers go out before the stream's next block, but at most every other block
//! while the pass runs, so a receiver that cannot keep up slows the others by at most half
//! and finishes through repairs after the pass, when they get the whole rate. The
//! offer is repeated on the group every `heartbeat_interval_ms`, so receivers know the donor is
//! alive even when nothing is left to send. The transfer ends when every receiver is done or
//! has been dropped (silent for `receiver_timeout_ms`, over `repair_factor_max`, or not done
//! by the deadline): the caller then unfreezes, so a dead receiver holds the donor frozen at
//! most `receiver_timeout_ms`, and no receiver can hold it past the deadline.

use super::files::BlockSource;
use super::{block_count, block_len, md5_of, offer_bytes, Progress, ReceiverStatus};
use super::{Result, TransferError, BLOCK_BYTES};
use bytes::Bytes;
use protocol::limits::DATAGRAM_BYTES_MAX;
use protocol::message::transfer::{
    FileOffer, FileTransBlock, FileTransRequest, RequestFile, TransFile,
};
use protocol::message::Message;
use protocol::{NodeId, Zxid};
use std::collections::{BTreeMap, VecDeque};

/// Room left in a datagram for the header and tag when checking that an offer fits.
const OFFER_HEADER_ROOM_BYTES: usize = 256;

#[derive(Clone, Debug)]
pub struct DonorConfig {
    /// Stream pace, repairs included. 32 MiB/s is about a quarter of a 1 Gbit/s link: loss
    /// stays low on a LAN and the donor keeps most of its disk and network for writes.
    pub rate_bytes_per_s: u64,
    /// Most bytes sent back to back after an idle moment (the bucket's depth).
    pub burst_bytes: u64,
    /// How often the offer is repeated on the group (donor liveness for the receivers).
    pub heartbeat_interval_ms: u64,
    /// A receiver not heard from for this long is dropped; with none left the transfer ends.
    pub receiver_timeout_ms: u64,
    /// A receiver is dropped once the blocks it asked for exceed this many times the data
    /// set (it keeps losing: it should start over, not hold the donor frozen forever). A count
    /// of blocks, not of requests: a receiver starved of CPU asks often and for little.
    pub repair_factor_max: u64,
    /// The transfer ends at the latest this many times the stream's nominal duration (data
    /// set ÷ rate) after it starts, or after `deadline_min_ms` if that is longer: receivers
    /// not done by then are dropped. This bounds the freeze whatever the receivers do.
    pub deadline_stream_factor: u64,
    pub deadline_min_ms: u64,
    /// Most blocks waiting for repair; requests beyond are dropped (receivers ask again).
    pub repair_queue_blocks_max: usize,
}

impl Default for DonorConfig {
    fn default() -> Self {
        DonorConfig {
            rate_bytes_per_s: 32 * 1024 * 1024,
            burst_bytes: 256 * 1024,
            heartbeat_interval_ms: 250,
            receiver_timeout_ms: 5_000,
            repair_factor_max: 32,
            deadline_stream_factor: 10,
            deadline_min_ms: 60_000,
            repair_queue_blocks_max: 65_536,
        }
    }
}

/// How a transfer ended. Either way the caller unfreezes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DonorOutcome {
    /// `done` received and checked every file; `dropped` were given up on.
    Completed { done: Vec<NodeId>, dropped: Vec<NodeId> },
    /// No receiver finished.
    Aborted { reason: String },
}

/// Counters, one per reason an input was dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DonorStats {
    pub stream_blocks_sent: u64,
    pub repair_blocks_sent: u64,
    pub bytes_sent: u64,
    pub offers_sent: u64,
    pub requests_received: u64,
    pub dropped_unknown_transfer: u64,
    pub dropped_unknown_receiver: u64,
    pub ranges_out_of_range: u64,
    pub repair_queue_full: u64,
    pub receivers_timed_out: u64,
    pub receivers_gave_up: u64,
    pub receivers_past_deadline: u64,
}

#[derive(Clone, Debug)]
struct Entry {
    last_heard_ms: u64,
    done: bool,
    repair_requests: u32,
    blocks_asked: u64,
}

#[derive(Debug)]
pub struct Donor {
    config: DonorConfig,
    offer: TransFile,
    /// Global index of each file's first block.
    starts: Vec<u64>,
    total_blocks: u64,
    receivers: BTreeMap<NodeId, Entry>,
    dropped: Vec<NodeId>,
    /// Next block of the stream's single pass.
    cursor: u64,
    repair: VecDeque<u64>,
    last_was_repair: bool,
    /// One bit per block: queued for repair (so a block is queued once).
    queued: Vec<u64>,
    /// Tokens in thousandths of a byte, so refills of a few ms stay exact.
    tokens_milli: u64,
    refilled_ms: u64,
    next_heartbeat_ms: u64,
    started_ms: u64,
    deadline_ms: u64,
    outcome: Option<DonorOutcome>,
    stats: DonorStats,
    buf: Vec<u8>,
}

impl Donor {
    /// A transfer of `files` (already frozen and described) with id `transfer` on `group`.
    pub fn new(
        config: DonorConfig,
        transfer: u64,
        donor: NodeId,
        snapshot_zxid: Zxid,
        files: Vec<FileOffer>,
        group: String,
        now_ms: u64,
    ) -> Result<Donor> {
        assert!(config.rate_bytes_per_s > 0, "a transfer rate must be positive");
        let offer =
            TransFile { transfer, donor, snapshot_zxid, files, group, block_bytes: BLOCK_BYTES };
        let message = Message::TransFile(offer.clone());
        let bytes = message.encoded_len().map_err(|e| TransferError::State(e.to_string()))?;
        if bytes + OFFER_HEADER_ROOM_BYTES > DATAGRAM_BYTES_MAX
            || offer.files.len() > protocol::limits::TRANSFER_FILES_MAX
        {
            return Err(TransferError::OfferTooLarge { files: offer.files.len(), bytes });
        }
        let mut starts = Vec::with_capacity(offer.files.len());
        let mut total_blocks = 0u64;
        for f in &offer.files {
            starts.push(total_blocks);
            total_blocks += block_count(f.size, BLOCK_BYTES);
        }
        let stream_ms = offer_bytes(&offer).saturating_mul(1000) / config.rate_bytes_per_s;
        let deadline_ms = now_ms
            + stream_ms.saturating_mul(config.deadline_stream_factor).max(config.deadline_min_ms);
        Ok(Donor {
            deadline_ms,
            starts,
            total_blocks,
            receivers: BTreeMap::new(),
            dropped: Vec::new(),
            cursor: 0,
            repair: VecDeque::new(),
            last_was_repair: false,
            queued: vec![0; total_blocks.div_ceil(64) as usize],
            tokens_milli: config.burst_bytes * 1000,
            refilled_ms: now_ms,
            next_heartbeat_ms: now_ms,
            started_ms: now_ms,
            outcome: None,
            stats: DonorStats::default(),
            buf: vec![0; BLOCK_BYTES as usize],
            offer,
            config,
        })
    }

    pub fn offer(&self) -> &TransFile {
        &self.offer
    }

    pub fn stats(&self) -> DonorStats {
        self.stats
    }

    pub fn outcome(&self) -> Option<&DonorOutcome> {
        self.outcome.as_ref()
    }

    pub fn is_finished(&self) -> bool {
        self.outcome.is_some()
    }

    pub fn total_blocks(&self) -> u64 {
        self.total_blocks
    }

    pub fn receivers(&self) -> Vec<ReceiverStatus> {
        self.receivers
            .iter()
            .map(|(node, e)| ReceiverStatus {
                node: *node,
                done: e.done,
                repair_requests: e.repair_requests,
            })
            .collect()
    }

    /// Stream progress: bytes of the first pass sent, its rate and time left.
    pub fn progress(&self, now_ms: u64) -> Progress {
        let total = offer_bytes(&self.offer);
        let done = if self.cursor >= self.total_blocks {
            total
        } else {
            (self.cursor * u64::from(BLOCK_BYTES)).min(total)
        };
        Progress::compute(self.offer.transfer, done, total, now_ms.saturating_sub(self.started_ms))
    }

    /// A receiver asks to join (its `RequestFile`). Returns the offer to send it, or why not.
    pub fn add_receiver(&mut self, request: &RequestFile, now_ms: u64) -> Result<TransFile> {
        if self.outcome.is_some() {
            return Err(TransferError::State(format!(
                "transfer {} has ended; ask again for a new one",
                self.offer.transfer
            )));
        }
        let needed_bytes = offer_bytes(&self.offer);
        if request.free_bytes < needed_bytes {
            return Err(TransferError::NoSpace { needed_bytes, free_bytes: request.free_bytes });
        }
        let entry = self.receivers.entry(request.receiver).or_insert(Entry {
            last_heard_ms: now_ms,
            done: false,
            repair_requests: 0,
            blocks_asked: 0,
        });
        entry.last_heard_ms = now_ms;
        entry.done = false;
        tracing::info!(
            transfer = self.offer.transfer,
            receiver = request.receiver,
            purpose = ?request.purpose,
            "receiver joined the transfer"
        );
        Ok(self.offer.clone())
    }

    /// A receiver's `FileTransRequest`: repairs, keepalive or done.
    pub fn on_request(&mut self, request: &FileTransRequest, now_ms: u64) {
        if request.transfer != self.offer.transfer {
            self.stats.dropped_unknown_transfer += 1;
            return;
        }
        if self.outcome.is_some() {
            return;
        }
        let Some(entry) = self.receivers.get_mut(&request.receiver) else {
            self.stats.dropped_unknown_receiver += 1;
            return;
        };
        self.stats.requests_received += 1;
        entry.last_heard_ms = now_ms;
        if request.done {
            if !entry.done {
                tracing::info!(
                    transfer = self.offer.transfer,
                    receiver = request.receiver,
                    "receiver has every file"
                );
            }
            entry.done = true;
            self.check_complete();
            return;
        }
        if request.ranges.is_empty() {
            return;
        }
        entry.repair_requests += 1;
        let mut asked = 0u64;
        for &(file, first, count) in request.ranges.iter().take(protocol::limits::NAK_RANGES_MAX) {
            let Some(f) = self.offer.files.get(file as usize) else {
                self.stats.ranges_out_of_range += 1;
                continue;
            };
            let blocks = block_count(f.size, BLOCK_BYTES);
            let in_range = first.checked_add(u64::from(count)).is_some_and(|end| end <= blocks);
            if count == 0 || !in_range {
                self.stats.ranges_out_of_range += 1;
                continue;
            }
            asked += u64::from(count);
            let start = self.starts[file as usize];
            for g in start + first..start + first + u64::from(count) {
                if g >= self.cursor {
                    // The stream's pass has not reached it yet: it will come anyway.
                    break;
                }
                if bit(&self.queued, g) {
                    continue;
                }
                if self.repair.len() >= self.config.repair_queue_blocks_max {
                    self.stats.repair_queue_full += 1;
                    break;
                }
                set_bit(&mut self.queued, g, true);
                self.repair.push_back(g);
            }
        }
        let entry = self.receivers.get_mut(&request.receiver).expect("checked above");
        entry.blocks_asked = entry.blocks_asked.saturating_add(asked);
        let limit = self.config.repair_factor_max.saturating_mul(self.total_blocks.max(1));
        if entry.blocks_asked > limit {
            tracing::warn!(
                transfer = self.offer.transfer,
                receiver = request.receiver,
                blocks_asked = entry.blocks_asked,
                "receiver asked for the data set {} times over; dropping it (it should start over)",
                self.config.repair_factor_max
            );
            self.receivers.remove(&request.receiver);
            self.dropped.push(request.receiver);
            self.stats.receivers_gave_up += 1;
            self.check_complete();
        }
    }

    /// Runs the timers: drops silent receivers, ends the transfer when nobody is left waiting.
    pub fn tick(&mut self, now_ms: u64) {
        if self.outcome.is_some() {
            return;
        }
        let timeout = self.config.receiver_timeout_ms;
        if now_ms >= self.deadline_ms {
            let late: Vec<NodeId> =
                self.receivers.iter().filter(|(_, e)| !e.done).map(|(n, _)| *n).collect();
            for node in late {
                tracing::warn!(
                    transfer = self.offer.transfer,
                    receiver = node,
                    "receiver not done by the transfer's deadline; dropping it"
                );
                self.receivers.remove(&node);
                self.dropped.push(node);
                self.stats.receivers_past_deadline += 1;
            }
        }
        let silent: Vec<NodeId> = self
            .receivers
            .iter()
            .filter(|(_, e)| !e.done && now_ms.saturating_sub(e.last_heard_ms) >= timeout)
            .map(|(n, _)| *n)
            .collect();
        for node in silent {
            tracing::warn!(
                transfer = self.offer.transfer,
                receiver = node,
                timeout_ms = timeout,
                "receiver went silent; dropping it"
            );
            self.receivers.remove(&node);
            self.dropped.push(node);
            self.stats.receivers_timed_out += 1;
        }
        self.check_complete();
    }

    fn check_complete(&mut self) {
        if self.outcome.is_some() || self.receivers.values().any(|e| !e.done) {
            return;
        }
        let done: Vec<NodeId> = self.receivers.keys().copied().collect();
        if done.is_empty() {
            if self.dropped.is_empty() {
                return; // Nobody joined yet.
            }
            self.outcome =
                Some(DonorOutcome::Aborted { reason: TransferError::NoReceivers.to_string() });
        } else {
            self.outcome = Some(DonorOutcome::Completed { done, dropped: self.dropped.clone() });
        }
        tracing::info!(transfer = self.offer.transfer, outcome = ?self.outcome, "transfer ended");
    }

    fn refill(&mut self, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.refilled_ms);
        self.refilled_ms = self.refilled_ms.max(now_ms);
        let cap = self.config.burst_bytes.max(u64::from(BLOCK_BYTES)) * 1000;
        self.tokens_milli =
            (self.tokens_milli + elapsed.saturating_mul(self.config.rate_bytes_per_s)).min(cap);
    }

    fn has_block_work(&self) -> bool {
        // The stream waits for its first receiver.
        !self.receivers.is_empty() && (!self.repair.is_empty() || self.cursor < self.total_blocks)
    }

    /// The next datagram to multicast on the transfer group, if one is due now: the offer
    /// (heartbeat), a repair, or the stream's next block. Call until `None`, then wait until
    /// [`Donor::next_wake_ms`].
    pub fn poll_transmit(
        &mut self,
        now_ms: u64,
        source: &mut dyn BlockSource,
    ) -> Result<Option<Message>> {
        self.tick(now_ms);
        if self.outcome.is_some() {
            return Ok(None);
        }
        if now_ms >= self.next_heartbeat_ms {
            self.next_heartbeat_ms = now_ms + self.config.heartbeat_interval_ms;
            self.stats.offers_sent += 1;
            return Ok(Some(Message::TransFile(self.offer.clone())));
        }
        if !self.has_block_work() {
            return Ok(None);
        }
        self.refill(now_ms);
        if self.tokens_milli < u64::from(BLOCK_BYTES) * 1000 {
            return Ok(None);
        }
        // Repairs first, but while the pass runs they take at most every other block, so a
        // receiver that keeps losing slows the others by at most half.
        let streaming = self.cursor < self.total_blocks;
        let take_repair = !(self.repair.is_empty() || streaming && self.last_was_repair);
        let (global, repair) = if take_repair {
            let g = self.repair.pop_front().expect("repair queued");
            set_bit(&mut self.queued, g, false);
            (g, true)
        } else {
            let g = self.cursor;
            self.cursor += 1;
            (g, false)
        };
        self.last_was_repair = repair;
        let file = self.starts.partition_point(|&s| s <= global) - 1;
        let block = global - self.starts[file];
        let len = block_len(self.offer.files[file].size, BLOCK_BYTES, block);
        source.read_at(file as u32, block * u64::from(BLOCK_BYTES), &mut self.buf[..len])?;
        let data = Bytes::copy_from_slice(&self.buf[..len]);
        self.tokens_milli -= len as u64 * 1000;
        self.stats.bytes_sent += len as u64;
        if repair {
            self.stats.repair_blocks_sent += 1;
        } else {
            self.stats.stream_blocks_sent += 1;
            if self.cursor == self.total_blocks {
                tracing::info!(
                    transfer = self.offer.transfer,
                    progress = %self.progress(now_ms),
                    "stream pass complete; serving repairs"
                );
            }
        }
        Ok(Some(Message::FileTransBlock(FileTransBlock {
            transfer: self.offer.transfer,
            file: file as u32,
            block,
            md5: md5_of(&data),
            data,
        })))
    }

    /// When [`Donor::poll_transmit`] may have something again (or a timer runs).
    pub fn next_wake_ms(&self, now_ms: u64) -> u64 {
        let mut wake = self.next_heartbeat_ms;
        if self.has_block_work() {
            let need = (u64::from(BLOCK_BYTES) * 1000).saturating_sub(self.tokens_milli);
            let since = now_ms.saturating_sub(self.refilled_ms) * self.config.rate_bytes_per_s;
            let short = need.saturating_sub(since);
            wake = wake.min(now_ms + short.div_ceil(self.config.rate_bytes_per_s));
        }
        for e in self.receivers.values().filter(|e| !e.done) {
            wake =
                wake.min(e.last_heard_ms + self.config.receiver_timeout_ms).min(self.deadline_ms);
        }
        wake.max(now_ms)
    }
}

pub(crate) fn bit(bits: &[u64], i: u64) -> bool {
    bits[(i / 64) as usize] & (1 << (i % 64)) != 0
}

pub(crate) fn set_bit(bits: &mut [u64], i: u64, on: bool) {
    let word = &mut bits[(i / 64) as usize];
    if on {
        *word |= 1 << (i % 64);
    } else {
        *word &= !(1 << (i % 64));
    }
}
