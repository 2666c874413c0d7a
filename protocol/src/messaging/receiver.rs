//! The receiving half of the IO-free core: one window per sender.
//!
//! Per (sender, incarnation): datagrams are delivered strictly in sequence order (FIFO per
//! sender), out-of-order ones wait in a bounded window, duplicates are dropped, gaps are NAKed
//! on a timer for a bounded number of rounds, fragments are reassembled and batches unpacked.
//! A gap that cannot be repaired (the sender no longer has the data, or the NAK rounds ran out)
//! becomes an explicit [`Delivery::Gap`]: the client cache flushes on it.
//!
//! NAK rounds only count while the sender is heard. A round counts toward `nak_rounds_max`
//! only if some datagram of that sender (data, retransmission, `SenderStatus`, or any other
//! authenticated datagram, see [`ReceiverSet::heard_from`]) arrived since the previous round.
//! During a partition the receiver keeps NAKing at the retry interval (so the first NAK after
//! the heal asks for the repair) but spends nothing, so a partition longer than
//! `nak_rounds_max × nak_retry_ms` does not turn a hole the sender still holds into a gap.
//! What the sender no longer holds still ends in a gap at once: its answer to a NAK (or its
//! periodic status) carries `retained_from`. A sender that restarts is met as a new
//! incarnation, which reports the old one's undelivered rest as a gap. A sender that never
//! comes back is presumed gone after `sender_gone_ms` of silence: from then on every round
//! counts again, so its hole becomes a gap after at most `sender_gone_ms` plus
//! `nak_rounds_max` rounds, the datagrams held behind it are delivered and freed, and the NAKs
//! stop. Memory never grows meanwhile: the out-of-order window holds at most
//! `window_datagrams` per sender whatever happens.
//!
//! Memory is also bounded across senders: everything held for reordering (each datagram
//! charged its payload plus [`HELD_DATAGRAM_OVERHEAD_BYTES`]) and reassembly (the message's
//! announced size, reserved by its first fragment, so that a started reassembly never waits
//! for room and two can never wait on each other; the buffer itself grows with what arrived)
//! counts against `held_bytes_max`. At the cap an out-of-order datagram is not held; a
//! message's first fragment, arriving in order, sheds held out-of-order datagrams to make room
//! for its reservation and is refused only if that is not enough. A reassembly whose sender is
//! silent for `sender_gone_ms` is given up (a gap, `reassemblies_abandoned`): a sender that
//! crashed mid-message leaves no hole to end it otherwise. Refusals and sheds are counted
//! (`over_held_cap`); what was refused is missing and NAKed like a lost datagram.
//!
//! Credit counts what the *application* has taken ([`ReceiverSet::consumed`]), not what the
//! window holds, so that a slow application slows the senders instead of losing data.

use super::{Delivery, Dest, Transmit, FIRST_SEQ, KIND_BATCH};
use crate::header::{Header, Sealer};
use crate::limits::{FRAGMENT_PAYLOAD_BYTES_MAX, MESSAGE_BYTES_MAX, NAK_RANGES_MAX};
use crate::message::layer::{Nak, SenderStatus, Stability};
use crate::message::Message;
use crate::{Incarnation, SenderId};
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap, VecDeque};

/// Tombstones kept per `senders_max` slot before they are all forgotten.
const TOMBSTONES_PER_SENDER_SLOT: usize = 4;

/// Default of [`ReceiverConfig::held_bytes_max`]: bytes held for reordering and reassembly
/// across all senders. Two senders' worst case at once (a full window of maximum-size
/// fragments, 1024 × 60 KiB = 60 MiB, plus the largest message being reassembled, 65 MiB), and
/// some thirty full windows of ordinary 8 KiB batches; the same as the best-effort
/// reassembly bound ([`super::core::PARTIAL_BYTES_MAX`]).
pub const HELD_BYTES_MAX: usize = 256 * 1024 * 1024;

/// What one datagram held out of order costs beyond its payload (map node, `Bytes` handle),
/// charged against [`ReceiverConfig::held_bytes_max`] so that empty datagrams are not free.
pub const HELD_DATAGRAM_OVERHEAD_BYTES: usize = 128;

/// Bounds and timers of the receiving side.
#[derive(Clone, Debug)]
pub struct ReceiverConfig {
    /// Datagrams a sender may have in flight beyond what the application consumed; also the
    /// bound of the out-of-order window (so memory is at most this many datagrams per sender).
    pub window_datagrams: u64,
    /// Wait this long after noticing a hole before the first NAK (reordering is not loss).
    pub nak_delay_ms: u64,
    /// Repeat an unanswered NAK after this long.
    pub nak_retry_ms: u64,
    /// After this many NAK rounds without progress the hole is declared irreparable. Only a
    /// round during which the sender was heard counts (see the module docs).
    pub nak_rounds_max: u32,
    /// Whether this endpoint reports stability/credit (true for members: FS nodes).
    pub report_stability: bool,
    /// Report at most this often while the consumed position moves …
    pub report_interval_ms: u64,
    /// … and at least this often anyway (so the sender keeps counting us as live).
    pub report_keepalive_ms: u64,
    /// A receiver meeting a sender whose stream is younger than this many datagrams starts at
    /// the stream's first sequence (so a receiver present from the start misses nothing even if
    /// the first datagrams were lost); otherwise it starts at the first message it sees.
    pub join_backfill_datagrams: u64,
    /// Most senders tracked at once; when full, the one heard from least recently is
    /// forgotten, but its position is remembered (a tombstone), so if it speaks again it
    /// resumes where it was instead of being delivered twice.
    pub senders_max: usize,
    /// Stop reporting to a sender not heard from for this long (it is gone; its status
    /// keepalive would otherwise reach us every second).
    pub sender_silent_ms: u64,
    /// A sender not heard from for this long is presumed gone for good: NAK rounds count again
    /// even though it is silent, so its open hole ends in a gap within `nak_rounds_max` more
    /// rounds. Longer than any partition we mean to ride out without a gap.
    pub sender_gone_ms: u64,
    /// Most bytes held for reordering and reassembly across all senders together (payloads
    /// plus [`HELD_DATAGRAM_OVERHEAD_BYTES`] per datagram held out of order, plus the announced
    /// size of each message being reassembled, reserved by its first fragment). At least the
    /// largest message a sender sends, or that message can never be reassembled. Without it a peer claiming many sender ids could make
    /// a receiver hold `senders_max × window_datagrams` datagrams.
    pub held_bytes_max: usize,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig {
            window_datagrams: 1024,
            nak_delay_ms: 5,
            nak_retry_ms: 30,
            nak_rounds_max: 40,
            report_stability: true,
            report_interval_ms: 5,
            report_keepalive_ms: 250,
            join_backfill_datagrams: 1024,
            senders_max: 4096,
            sender_silent_ms: 5000,
            sender_gone_ms: 10_000,
            held_bytes_max: HELD_BYTES_MAX,
        }
    }
}

/// Counters of the receiving side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReceiverStats {
    pub datagrams_received: u64,
    pub messages_delivered: u64,
    pub duplicates: u64,
    /// Datagrams of an older incarnation than the one we follow.
    pub stale_incarnation: u64,
    /// Datagrams beyond the window (the sender outran our credit; NAK repairs them later).
    pub beyond_window: u64,
    pub naks_sent: u64,
    /// NAK rounds not counted toward `nak_rounds_max` because the sender was silent.
    pub nak_rounds_unheard: u64,
    pub gaps: u64,
    /// Authenticated datagrams that still made no sense (bad fragment order, undecodable).
    pub malformed: u64,
    /// Senders forgotten to make room for a new one (`senders_max` reached).
    pub senders_evicted: u64,
    /// Datagrams refused (or held ones shed) because the held bytes of all senders together
    /// reached `held_bytes_max`; the sender's retransmission repairs them later.
    pub over_held_cap: u64,
    /// Messages half reassembled when their sender fell silent for `sender_gone_ms`: given
    /// up (reported as a gap) so that their reservation does not hold the cap for ever.
    pub reassemblies_abandoned: u64,
}

#[derive(Debug)]
struct Pending {
    kind: u8,
    frag_index: u16,
    frag_count: u16,
    payload: Bytes,
}

impl Pending {
    /// What holding it costs against [`ReceiverConfig::held_bytes_max`].
    fn cost(&self) -> usize {
        self.payload.len() + HELD_DATAGRAM_OVERHEAD_BYTES
    }
}

#[derive(Debug)]
struct Reassembly {
    kind: u8,
    next_index: u16,
    count: u16,
    /// Bytes charged against the cap from the first fragment on ([`announced_bytes`]); the
    /// buffer never grows past it.
    reserved: usize,
    bytes: Vec<u8>,
}

#[derive(Debug)]
struct Stream {
    incarnation: Incarnation,
    /// Every sequence below this was delivered (or skipped by a reported gap).
    next_deliver: u64,
    /// Exclusive upper bound of the sequences known to exist.
    known_below: u64,
    /// The application has taken everything below this (credit is granted from here).
    consumed_below: u64,
    pending: BTreeMap<u64, Pending>,
    reassembly: Option<Reassembly>,
    /// After a join or a gap, fragments are dropped until the next message start.
    skip_to_message_start: bool,
    /// Oldest sequence the sender says it can retransmit.
    retained_from: u64,
    nak_due_ms: Option<u64>,
    nak_rounds: u32,
    /// Some datagram of the sender arrived since the last NAK round (or since the stream
    /// began): the next round counts toward `nak_rounds_max`.
    heard_since_round: bool,
    last_report_ms: Option<u64>,
    reported_below: u64,
    last_heard_ms: u64,
    /// Nothing delivered yet: moving past data the sender no longer has is then just a late
    /// join, not a gap (there is nothing the application could have kept fresh).
    fresh: bool,
}

impl Stream {
    fn new(incarnation: Incarnation, first_seen: u64, backfill: u64, now_ms: u64) -> Stream {
        let start = if first_seen <= FIRST_SEQ + backfill { FIRST_SEQ } else { first_seen };
        Stream {
            incarnation,
            next_deliver: start,
            known_below: start,
            consumed_below: start,
            pending: BTreeMap::new(),
            reassembly: None,
            skip_to_message_start: true,
            retained_from: 0,
            nak_due_ms: None,
            nak_rounds: 0,
            heard_since_round: true,
            last_report_ms: None,
            reported_below: 0,
            last_heard_ms: now_ms,
            fresh: true,
        }
    }

    /// The window's bookkeeping, asserted after each change to the stream (a broken
    /// invariant stops the process: delivering on from a corrupt window would break FIFO or
    /// lose data without a gap):
    /// - `consumed_below <= next_deliver <= known_below`: the application took only what was
    ///   delivered, and nothing is delivered that was not seen;
    /// - every datagram held out of order lies in `(next_deliver, consumed_below + window)`
    ///   and below `known_below`: the head of the line is never held (it is delivered at
    ///   once), and the window bounds what is held;
    /// - a reassembly never holds more than it reserved.
    fn check_invariants(&self, sender: SenderId, window: u64) {
        assert!(
            self.consumed_below <= self.next_deliver && self.next_deliver <= self.known_below,
            "receive window of sender {sender} out of order: consumed_below {} next_deliver {} \
             known_below {}",
            self.consumed_below,
            self.next_deliver,
            self.known_below
        );
        if let (Some(&first), Some(&last)) =
            (self.pending.keys().next(), self.pending.keys().next_back())
        {
            assert!(
                first > self.next_deliver
                    && last < self.consumed_below + window
                    && last < self.known_below,
                "sender {sender}: held datagrams {first}..={last} outside the window \
                 (next_deliver {}, consumed_below {}, window {window}, known_below {})",
                self.next_deliver,
                self.consumed_below,
                self.known_below
            );
        }
        if let Some(r) = &self.reassembly {
            assert!(
                r.bytes.len() <= r.reserved && r.next_index < r.count,
                "sender {sender}: reassembly of {} bytes, fragment {} of {}, reserved {}",
                r.bytes.len(),
                r.next_index,
                r.count,
                r.reserved
            );
        }
    }

    /// What this stream holds against [`ReceiverConfig::held_bytes_max`].
    fn held(&self) -> usize {
        let pending: usize = self.pending.values().map(Pending::cost).sum();
        pending + self.reassembly.as_ref().map_or(0, |r| r.reserved)
    }

    fn has_missing(&self) -> bool {
        // Every sequence in [next_deliver, known_below) is either pending or missing.
        (self.known_below - self.next_deliver) as usize > self.pending.len()
    }

    /// Whether the head of the line is missing and within the window: only then is a NAK
    /// useful. A head beyond the window waits for the application to consume (no NAK round is
    /// spent on it, so a stalled application does not turn into a gap by itself).
    fn head_nakable(&self, window: u64) -> bool {
        self.has_missing() && self.next_deliver < self.consumed_below + window
    }

    /// Missing ranges within the window, at most [`NAK_RANGES_MAX`].
    fn missing_ranges(&self, window: u64) -> Vec<(u64, u64)> {
        let limit = self.known_below.min(self.consumed_below + window);
        let mut ranges = Vec::new();
        let mut cursor = self.next_deliver;
        for &seq in self.pending.keys() {
            if ranges.len() >= NAK_RANGES_MAX || cursor >= limit {
                return ranges;
            }
            if seq > cursor {
                ranges.push((cursor, (seq - 1).min(limit - 1)));
            }
            cursor = seq + 1;
        }
        if cursor < limit && ranges.len() < NAK_RANGES_MAX {
            ranges.push((cursor, limit - 1));
        }
        ranges
    }
}

/// What a message of `count` fragments may need: reserved against the cap by its first
/// fragment.
fn announced_bytes(count: u16) -> usize {
    (count as usize * FRAGMENT_PAYLOAD_BYTES_MAX).min(MESSAGE_BYTES_MAX)
}

/// The capacity a reassembly needs to take `add` more bytes: it doubles (so copying stays
/// linear in the message) up to its reservation, so that the memory really allocated grows
/// with what arrived rather than with what a first fragment (any key holder can write one)
/// announces.
fn grown_capacity(r: &Reassembly, add: usize) -> usize {
    let need = r.bytes.len() + add;
    if need <= r.bytes.capacity() {
        return r.bytes.capacity();
    }
    (r.bytes.capacity() * 2).min(r.reserved).max(need)
}

/// The receiving half of one endpoint: all senders' windows.
#[derive(Debug)]
pub struct ReceiverSet {
    /// Seals this receiver's NAKs and stability reports (the class of the streams it takes).
    sealer: Sealer,
    config: ReceiverConfig,
    streams: HashMap<SenderId, Stream>,
    /// (incarnation, next sequence to deliver) of evicted streams.
    tombstones: HashMap<SenderId, (Incarnation, u64)>,
    deliveries: VecDeque<Delivery>,
    control: VecDeque<Transmit>,
    stats: ReceiverStats,
    /// Bytes held for reordering and reassembly by all streams (see [`Stream::held`]), at most
    /// `config.held_bytes_max`.
    held_bytes: usize,
}

impl ReceiverSet {
    pub fn new(sealer: Sealer, config: ReceiverConfig) -> ReceiverSet {
        assert!(config.window_datagrams > 0 && config.nak_rounds_max > 0 && config.senders_max > 0);
        ReceiverSet {
            sealer,
            config,
            streams: HashMap::new(),
            tombstones: HashMap::new(),
            deliveries: VecDeque::new(),
            control: VecDeque::new(),
            stats: ReceiverStats::default(),
            held_bytes: 0,
        }
    }

    pub fn stats(&self) -> ReceiverStats {
        self.stats
    }

    /// The next delivery for the application, in order per sender.
    pub fn pop_delivery(&mut self) -> Option<Delivery> {
        self.deliveries.pop_front()
    }

    pub fn has_deliveries(&self) -> bool {
        !self.deliveries.is_empty()
    }

    /// Control datagrams (NAKs, stability reports) to put on the wire.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.control.pop_front()
    }

    /// Tells the window that the application has taken everything of `sender`'s incarnation
    /// below `seq_below` (carried by [`Delivery::Message`]); credit is granted from here.
    pub fn consumed(&mut self, sender: SenderId, incarnation: Incarnation, seq_below: u64) {
        self.mark_consumed(sender, incarnation, seq_below);
        self.check_invariants(sender);
    }

    /// [`ReceiverSet::consumed`] without the check: also called in the middle of a delivery,
    /// where the window is not yet whole.
    fn mark_consumed(&mut self, sender: SenderId, incarnation: Incarnation, seq_below: u64) {
        if let Some(s) = self.streams.get_mut(&sender) {
            if s.incarnation == incarnation {
                s.consumed_below = s.consumed_below.max(seq_below);
            }
        }
    }

    /// Notes that an authenticated datagram of `sender` arrived (any kind: the core calls this
    /// for best-effort datagrams, too). It proves the sender can be heard, so the next NAK
    /// round for its stream counts (see the module docs). Creates no stream.
    pub fn heard_from(&mut self, sender: SenderId, now_ms: u64) {
        if let Some(s) = self.streams.get_mut(&sender) {
            s.last_heard_ms = s.last_heard_ms.max(now_ms);
            s.heard_since_round = true;
        }
    }

    /// Datagrams held in the out-of-order windows of all senders (at most `window_datagrams`
    /// per sender).
    pub fn held_datagrams(&self) -> usize {
        self.streams.values().map(|s| s.pending.len()).sum()
    }

    /// Bytes held for reordering and reassembly across all senders, counted as
    /// [`ReceiverConfig::held_bytes_max`] counts them.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// [`ReceiverSet::held_bytes`] recounted from the streams: tests check the running count.
    #[cfg(test)]
    pub(crate) fn held_bytes_recounted(&self) -> usize {
        self.streams.values().map(Stream::held).sum()
    }

    /// Frees held datagrams until `need` more bytes fit under `held_bytes_max`: the highest
    /// sequence of the stream holding the most datagrams goes first (the furthest from
    /// delivery; NAK repairs it later). False if that is not enough (reassemblies hold the rest).
    fn make_room(&mut self, need: usize) -> bool {
        while self.held_bytes + need > self.config.held_bytes_max {
            // Ties go to the highest id, so the choice does not depend on the map's order.
            let Some((_, stream)) = self
                .streams
                .iter_mut()
                .filter(|(_, s)| !s.pending.is_empty())
                .max_by_key(|(id, s)| (s.pending.len(), **id))
            else {
                return false;
            };
            let (_, shed) = stream.pending.pop_last().expect("not empty");
            self.held_bytes -= shed.cost();
            self.stats.over_held_cap += 1;
        }
        true
    }

    /// Where delivery of `sender` stands: (incarnation, next sequence to deliver).
    pub fn position(&self, sender: SenderId) -> Option<(Incarnation, u64)> {
        self.streams.get(&sender).map(|s| (s.incarnation, s.next_deliver))
    }

    /// Asserts the window of `sender` (see [`Stream::check_invariants`]) and the bounds across
    /// senders: held bytes under the cap, at most `senders_max` streams.
    fn check_invariants(&self, sender: SenderId) {
        if let Some(stream) = self.streams.get(&sender) {
            stream.check_invariants(sender, self.config.window_datagrams);
        }
        assert!(
            self.held_bytes <= self.config.held_bytes_max,
            "receiver holds {} bytes, over held_bytes_max {}",
            self.held_bytes,
            self.config.held_bytes_max
        );
        assert!(self.streams.len() <= self.config.senders_max);
    }

    /// Finds or creates the stream for (sender, incarnation). None: the datagram is stale or
    /// refused. A newer incarnation replaces the old stream; undelivered data of the old one is
    /// reported as a gap (the sender restarted, it will never be repaired).
    fn stream_for(
        &mut self,
        sender: SenderId,
        incarnation: Incarnation,
        first_seen: u64,
        now_ms: u64,
    ) -> Option<&mut Stream> {
        let backfill = self.config.join_backfill_datagrams;
        match self.streams.get(&sender).map(|s| s.incarnation) {
            Some(current) if incarnation < current => {
                self.stats.stale_incarnation += 1;
                return None;
            }
            Some(current) if incarnation > current => {
                let old = self.streams.remove(&sender).expect("present");
                self.held_bytes -= old.held();
                let undelivered = old.known_below > old.next_deliver || old.reassembly.is_some();
                if undelivered && !old.fresh {
                    self.stats.gaps += 1;
                    self.deliveries.push_back(Delivery::Gap {
                        sender,
                        incarnation: old.incarnation,
                        first_missing: old.next_deliver,
                        resumed_at: None,
                    });
                }
                self.streams.insert(sender, Stream::new(incarnation, first_seen, backfill, now_ms));
            }
            Some(_) => {}
            None => {
                // Look up the newcomer's tombstone before evicting (which may add one).
                let tombstone = self.tombstones.remove(&sender);
                if self.streams.len() >= self.config.senders_max {
                    let oldest = self
                        .streams
                        .iter()
                        .min_by_key(|(_, s)| s.last_heard_ms)
                        .map(|(id, _)| *id)
                        .expect("senders_max > 0");
                    let old = self.streams.remove(&oldest).expect("just found");
                    self.held_bytes -= old.held();
                    if self.tombstones.len() >= TOMBSTONES_PER_SENDER_SLOT * self.config.senders_max
                    {
                        // Bounded memory; a sender whose tombstone goes is met as a new one.
                        self.tombstones.clear();
                    }
                    self.tombstones.insert(oldest, (old.incarnation, old.next_deliver));
                    self.stats.senders_evicted += 1;
                }
                let mut stream = Stream::new(incarnation, first_seen, backfill, now_ms);
                match tombstone {
                    Some((inc, next)) if inc == incarnation => {
                        // We knew this stream: resume where we were (NAK repair or a gap).
                        stream.next_deliver = next;
                        stream.known_below = next.max(first_seen);
                        stream.consumed_below = next;
                        stream.fresh = false;
                    }
                    Some((inc, next)) if inc > incarnation => {
                        self.tombstones.insert(sender, (inc, next));
                        self.stats.stale_incarnation += 1;
                        return None;
                    }
                    _ => {}
                }
                self.streams.insert(sender, stream);
            }
        }
        let stream = self.streams.get_mut(&sender)?;
        stream.last_heard_ms = stream.last_heard_ms.max(now_ms);
        stream.heard_since_round = true;
        Some(stream)
    }

    /// A datagram of a reliable stream (already authenticated).
    pub fn on_data(&mut self, header: &Header, payload: &[u8], now_ms: u64) {
        self.take_data(header, payload, now_ms);
        self.check_invariants(header.sender);
    }

    fn take_data(&mut self, header: &Header, payload: &[u8], now_ms: u64) {
        self.stats.datagrams_received += 1;
        let message_start = header.seq.saturating_sub(header.frag_index as u64);
        let window = self.config.window_datagrams;
        let nak_delay_ms = self.config.nak_delay_ms;
        let Some(stream) =
            self.stream_for(header.sender, header.incarnation, message_start, now_ms)
        else {
            return;
        };
        let seq = header.seq;
        if seq < stream.next_deliver || stream.pending.contains_key(&seq) {
            self.stats.duplicates += 1;
            return;
        }
        if seq >= stream.consumed_below + window {
            self.stats.beyond_window += 1;
            return;
        }
        stream.known_below = stream.known_below.max(seq + 1);
        let sender = header.sender;
        if seq == stream.next_deliver {
            let incarnation = header.incarnation;
            // Refused only if it starts a message whose reservation does not fit under the cap;
            // then it is a hole like any lost datagram, and `drain_pending` schedules its NAK.
            self.deliver_in_order(
                sender,
                incarnation,
                seq,
                header.kind,
                header.frag_index,
                header.frag_count,
                payload,
            );
            self.drain_pending(sender, now_ms);
            return;
        }
        if stream.nak_due_ms.is_none() {
            stream.nak_due_ms = Some(now_ms + nak_delay_ms);
        }
        let held = Pending {
            kind: header.kind,
            frag_index: header.frag_index,
            frag_count: header.frag_count,
            payload: Bytes::copy_from_slice(payload),
        };
        let cost = held.cost();
        if self.held_bytes + cost > self.config.held_bytes_max {
            // Out of order and over the global cap: not held. It is missing like a lost
            // datagram, so the NAK (scheduled above) has the sender retransmit it later.
            self.stats.over_held_cap += 1;
            return;
        }
        self.held_bytes += cost;
        let stream = self.streams.get_mut(&sender).expect("found above");
        stream.pending.insert(seq, held);
    }

    /// A sender's status: learn the tail (so a lost last datagram is NAKed) and what is gone.
    pub fn on_status(&mut self, sender: SenderId, status: &SenderStatus, now_ms: u64) {
        let nak_delay_ms = self.config.nak_delay_ms;
        let Some(stream) = self.stream_for(sender, status.incarnation, status.sent_below, now_ms)
        else {
            return;
        };
        stream.retained_from = stream.retained_from.max(status.retained_from);
        if status.sent_below > stream.known_below {
            stream.known_below = status.sent_below;
            if stream.nak_due_ms.is_none() {
                stream.nak_due_ms = Some(now_ms + nak_delay_ms);
            }
        }
        self.skip_lost(sender, now_ms);
        self.check_invariants(sender);
    }

    /// Moves past holes the sender can no longer fill (below its `retained_from`). Each pass
    /// skips one hole and delivers what follows it, so the loop is bounded by the window.
    fn skip_lost(&mut self, sender: SenderId, now_ms: u64) {
        for _ in 0..=self.config.window_datagrams {
            let Some(stream) = self.streams.get_mut(&sender) else { return };
            if stream.next_deliver >= stream.retained_from
                || stream.pending.contains_key(&stream.next_deliver)
                || stream.next_deliver >= stream.known_below
            {
                return;
            }
            let first_missing = stream.next_deliver;
            let resume = stream
                .pending
                .keys()
                .next()
                .copied()
                .unwrap_or(stream.known_below)
                .min(stream.retained_from.max(first_missing + 1));
            self.declare_gap(sender, first_missing, resume);
            self.drain_pending(sender, now_ms);
        }
    }

    fn declare_gap(&mut self, sender: SenderId, first_missing: u64, resume: u64) {
        let stream = self.streams.get_mut(&sender).expect("caller checked");
        debug_assert!(resume > stream.next_deliver);
        stream.next_deliver = resume;
        stream.consumed_below = stream.consumed_below.max(resume);
        stream.known_below = stream.known_below.max(resume);
        if let Some(old) = stream.reassembly.take() {
            self.held_bytes -= old.reserved;
        }
        stream.skip_to_message_start = true;
        stream.nak_rounds = 0;
        stream.nak_due_ms = None;
        if stream.fresh {
            return;
        }
        self.stats.gaps += 1;
        self.deliveries.push_back(Delivery::Gap {
            sender,
            incarnation: stream.incarnation,
            first_missing,
            resumed_at: Some(resume),
        });
    }

    fn drain_pending(&mut self, sender: SenderId, now_ms: u64) {
        loop {
            let stream = self.streams.get_mut(&sender).expect("drained stream exists");
            let next = stream.next_deliver;
            let Some(p) = stream.pending.remove(&next) else { break };
            self.held_bytes -= p.cost();
            let incarnation = stream.incarnation;
            if !self.deliver_in_order(
                sender,
                incarnation,
                next,
                p.kind,
                p.frag_index,
                p.frag_count,
                &p.payload,
            ) {
                // Refused for the cap: `next` is missing again and will be NAKed.
                break;
            }
        }
        let stream = self.streams.get_mut(&sender).expect("drained stream exists");
        if stream.has_missing() {
            // Progress resets the NAK rounds: only a hole that makes no progress is abandoned.
            if stream.nak_due_ms.is_none() {
                stream.nak_due_ms = Some(now_ms + self.config.nak_delay_ms);
            }
        } else {
            stream.nak_due_ms = None;
            stream.nak_rounds = 0;
        }
    }

    /// Takes the next datagram of `sender`'s stream. False if it was refused because it starts
    /// a reassembly whose reservation does not fit under `held_bytes_max` even after shedding
    /// every datagram held out of order (nothing changed then: the datagram is missing again
    /// and NAK repair brings it back once a reassembly finished; if the cap stays full that
    /// long, the NAK rounds run out and it ends in a gap like any other loss).
    #[allow(clippy::too_many_arguments)]
    fn deliver_in_order(
        &mut self,
        sender: SenderId,
        incarnation: Incarnation,
        seq: u64,
        kind: u8,
        frag_index: u16,
        frag_count: u16,
        payload: &[u8],
    ) -> bool {
        let stream = self.streams.get_mut(&sender).expect("stream exists");
        debug_assert_eq!(seq, stream.next_deliver);
        // A message's first fragment reserves the message's whole announced size: once started,
        // a reassembly never needs more, so two of them can never wait on each other.
        let starts = frag_count > 1 && frag_index == 0;
        let old = if starts { stream.reassembly.as_ref().map_or(0, |r| r.reserved) } else { 0 };
        let need = if starts { announced_bytes(frag_count).saturating_sub(old) } else { 0 };
        if need > 0 && !self.make_room(need) {
            self.stats.over_held_cap += 1;
            return false;
        }
        let stream = self.streams.get_mut(&sender).expect("stream exists");
        stream.next_deliver = seq + 1;
        // Progress restarts the NAK round count: only a hole that makes no progress is
        // abandoned.
        stream.nak_rounds = 0;
        let seq_below = seq + 1;
        if stream.skip_to_message_start {
            if frag_index != 0 {
                stream.consumed_below = stream.consumed_below.max(seq_below);
                return true;
            }
            stream.skip_to_message_start = false;
        }
        if frag_count == 1 {
            if let Some(old) = stream.reassembly.take() {
                self.held_bytes -= old.reserved;
                self.stats.malformed += 1;
            }
            if kind == KIND_BATCH {
                self.unpack_batch(sender, incarnation, seq_below, payload);
            } else {
                self.decode_and_deliver(sender, incarnation, seq_below, kind, payload);
            }
            return true;
        }
        if frag_index == 0 {
            if let Some(old) = stream.reassembly.take() {
                self.held_bytes -= old.reserved;
                self.stats.malformed += 1;
            }
            let reserved = announced_bytes(frag_count);
            self.held_bytes += reserved;
            stream.reassembly = Some(Reassembly {
                kind,
                next_index: 0,
                count: frag_count,
                reserved,
                bytes: Vec::new(),
            });
        }
        let in_place = matches!(&stream.reassembly,
            Some(r) if r.next_index == frag_index && r.count == frag_count && r.kind == kind);
        if !in_place
            || stream.reassembly.as_ref().unwrap().bytes.len() + payload.len() > MESSAGE_BYTES_MAX
        {
            if let Some(old) = stream.reassembly.take() {
                self.held_bytes -= old.reserved;
            }
            stream.skip_to_message_start = true;
            stream.consumed_below = stream.consumed_below.max(seq_below);
            self.stats.malformed += 1;
            return true;
        }
        let r = stream.reassembly.as_mut().unwrap();
        let target = grown_capacity(r, payload.len());
        r.bytes.reserve_exact(target - r.bytes.len());
        r.bytes.extend_from_slice(payload);
        r.next_index += 1;
        if r.next_index < r.count {
            stream.consumed_below = stream.consumed_below.max(seq_below);
            return true;
        }
        let r = stream.reassembly.take().unwrap();
        self.held_bytes -= r.reserved;
        self.decode_and_deliver(sender, incarnation, seq_below, r.kind, &r.bytes);
        true
    }

    fn unpack_batch(
        &mut self,
        sender: SenderId,
        incarnation: Incarnation,
        seq_below: u64,
        batch: &[u8],
    ) {
        let mut rest = batch;
        let mut messages = Vec::new();
        while !rest.is_empty() {
            if rest.len() < 5 {
                self.stats.malformed += 1;
                break;
            }
            let kind = rest[0];
            let len = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
            if rest.len() < 5 + len {
                self.stats.malformed += 1;
                break;
            }
            match Message::decode_payload(kind, &rest[5..5 + len]) {
                Ok(m) => messages.push(m),
                Err(_) => self.stats.malformed += 1,
            }
            rest = &rest[5 + len..];
        }
        let count = messages.len();
        for (i, message) in messages.into_iter().enumerate() {
            // Only the batch's last message releases its sequence for credit.
            let below = if i + 1 == count { seq_below } else { seq_below - 1 };
            self.push_message(sender, incarnation, below, message);
        }
        if count == 0 {
            self.mark_consumed(sender, incarnation, seq_below);
        }
    }

    fn decode_and_deliver(
        &mut self,
        sender: SenderId,
        incarnation: Incarnation,
        seq_below: u64,
        kind: u8,
        payload: &[u8],
    ) {
        match Message::decode_payload(kind, payload) {
            Ok(m) => self.push_message(sender, incarnation, seq_below, m),
            Err(_) => {
                self.stats.malformed += 1;
                self.mark_consumed(sender, incarnation, seq_below);
            }
        }
    }

    fn push_message(
        &mut self,
        sender: SenderId,
        incarnation: Incarnation,
        seq_below: u64,
        m: Message,
    ) {
        if let Some(stream) = self.streams.get_mut(&sender) {
            stream.fresh = false;
        }
        self.stats.messages_delivered += 1;
        self.deliveries.push_back(Delivery::Message { sender, incarnation, seq_below, message: m });
    }

    /// Timers: NAK rounds, irreparable holes, stability reports.
    pub fn tick(&mut self, now_ms: u64) {
        let senders: Vec<SenderId> = self.streams.keys().copied().collect();
        for sender in senders {
            self.tick_stream(sender, now_ms);
            self.check_invariants(sender);
        }
    }

    fn tick_stream(&mut self, sender: SenderId, now_ms: u64) {
        let config = self.config.clone();
        let stream = self.streams.get_mut(&sender).expect("listed");
        if stream.reassembly.is_some()
            && now_ms.saturating_sub(stream.last_heard_ms) > config.sender_gone_ms
        {
            // The sender is presumed gone in the middle of a message (it may have crashed
            // before sending the rest, so no hole says so): free the reservation rather than
            // hold it against the cap for ever. The message is lost; say so.
            let r = stream.reassembly.take().expect("checked");
            self.held_bytes -= r.reserved;
            self.stats.reassemblies_abandoned += 1;
            stream.skip_to_message_start = true;
            if !stream.fresh {
                self.stats.gaps += 1;
                self.deliveries.push_back(Delivery::Gap {
                    sender,
                    incarnation: stream.incarnation,
                    first_missing: stream.next_deliver - r.next_index as u64,
                    resumed_at: Some(stream.next_deliver),
                });
            }
        }
        let stream = self.streams.get_mut(&sender).expect("listed");
        if let Some(due) = stream.nak_due_ms {
            if !stream.has_missing() {
                stream.nak_due_ms = None;
            } else if now_ms >= due && stream.head_nakable(config.window_datagrams) {
                // A round spent while the sender is silent (a partition) would turn a hole it
                // still holds into a gap: only rounds with the sender heard count, unless it
                // has been silent so long that it is presumed gone.
                let gone = now_ms.saturating_sub(stream.last_heard_ms) > config.sender_gone_ms;
                let counts = stream.heard_since_round || gone;
                stream.heard_since_round = false;
                if counts && stream.nak_rounds >= config.nak_rounds_max {
                    // The head of the line never came: give up on it, say so, and resume at
                    // the next datagram we hold (or the end of what is known).
                    let first_missing = stream.next_deliver;
                    let resume =
                        stream.pending.keys().next().copied().unwrap_or(stream.known_below);
                    self.declare_gap(sender, first_missing, resume);
                    self.drain_pending(sender, now_ms);
                } else {
                    if counts {
                        stream.nak_rounds += 1;
                    } else {
                        self.stats.nak_rounds_unheard += 1;
                    }
                    stream.nak_due_ms = Some(now_ms + config.nak_retry_ms);
                    let nak = Nak {
                        target: sender,
                        incarnation: stream.incarnation,
                        ranges: stream.missing_ranges(config.window_datagrams),
                    };
                    self.stats.naks_sent += 1;
                    let datagram = super::seal_control(&self.sealer, &Message::Nak(nak));
                    self.control.push_back(Transmit { dest: Dest::Sender(sender), datagram });
                }
            }
        }
        let stream = self.streams.get_mut(&sender).expect("listed");
        if !config.report_stability
            || now_ms.saturating_sub(stream.last_heard_ms) > config.sender_silent_ms
        {
            return;
        }
        let since = stream.last_report_ms.map(|t| now_ms.saturating_sub(t));
        let moved = stream.consumed_below != stream.reported_below;
        let due = match since {
            None => true,
            Some(s) => (moved && s >= config.report_interval_ms) || s >= config.report_keepalive_ms,
        };
        if due {
            stream.last_report_ms = Some(now_ms);
            stream.reported_below = stream.consumed_below;
            let report = Stability {
                target: sender,
                incarnation: stream.incarnation,
                delivered_below: stream.consumed_below,
                credit_until: stream.consumed_below + config.window_datagrams,
            };
            let datagram = super::seal_control(&self.sealer, &Message::Stability(report));
            self.control.push_back(Transmit { dest: Dest::Sender(sender), datagram });
        }
    }
}
