//! The sending half of the IO-free core: one reliable stream per (sender, incarnation).
//!
//! A message becomes one or more datagrams, each with its own sequence number: small messages
//! are packed several to a datagram (a *batch*, see [`super::KIND_BATCH`]), large ones are cut
//! into fragments of at most [`FRAGMENT_PAYLOAD_BYTES_MAX`]. Every sealed datagram stays in a
//! bounded retransmit buffer (unsealed: header fields and payload) until it is both stable (every live member has delivered it) and
//! its room is needed; NAKs are answered from that buffer. Transmission is gated by credit: a
//! datagram goes out only below the smallest `credit_until` reported by the members heard
//! within `credit_silence_ms` (a member silent longer still counts toward stability until
//! `member_timeout_ms`).

use super::{Dest, SendError, Transmit, FIRST_SEQ, KIND_BATCH};
use crate::header::{flags, seal, Sealer, HEADER_BYTES, TAG_BYTES};
use crate::limits::{
    FRAGMENTS_PER_MESSAGE_MAX, FRAGMENT_PAYLOAD_BYTES_MAX, MESSAGE_BYTES_MAX, NAK_RANGES_MAX,
};
use crate::message::layer::{Nak, SenderStatus, Stability};
use crate::message::Message;
use crate::{Incarnation, SenderId};
use bytes::Bytes;
use std::collections::VecDeque;

/// Most status answers waiting to be sent; NAKs beyond it get no status answer now (the
/// periodic status and the receiver's next NAK round cover them).
const STATUS_QUEUE_MAX: usize = 1024;

/// Bounds and timers of the sending side.
#[derive(Clone, Debug)]
pub struct SenderConfig {
    /// Most datagrams kept for retransmission.
    pub buffer_datagrams_max: usize,
    /// Most bytes kept for retransmission (a single message larger than this still passes,
    /// alone, so that the 16 MiB value limit never deadlocks the sender).
    pub buffer_bytes_max: usize,
    /// Credit a member is presumed to grant before its first report (its receive window).
    pub initial_credit_datagrams: u64,
    /// A member silent for longer than this stops counting toward credit and stability, so a
    /// dead node cannot block the cluster; it counts again from its next report.
    pub member_timeout_ms: u64,
    /// A member silent for longer than this stops limiting *transmission* (credit) while it
    /// still counts toward stability until `member_timeout_ms`. A killed member's last credit
    /// runs out after one window of datagrams (half a second at a busy master); without this
    /// the sender then waited, blocked, for the rest of the member timeout. Ignoring the
    /// credit of a silent member costs no bound: its receiver drops what lies beyond its
    /// window (and repairs it by NAK if it was only slow), and the retransmit buffer still
    /// keeps everything it lacks. Several report keepalives long, so a live member — even one
    /// whose application consumes nothing — is never ignored.
    pub credit_silence_ms: u64,
    /// Small messages are packed into one datagram up to this many payload bytes.
    pub batch_bytes_max: usize,
    /// How often the sender announces its [`SenderStatus`] while anything is unstable.
    pub status_interval_ms: u64,
    /// How often it announces it anyway (late joiners and non-member receivers learn the tail).
    pub status_keepalive_ms: u64,
    /// Most datagrams accepted but not yet transmitted (waiting for the driver or for credit).
    /// Beyond it `try_send` blocks, so a sender out of credit feels it promptly instead of
    /// filling the whole retransmit buffer. A message larger than this still goes, alone.
    pub backlog_datagrams_max: u64,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            buffer_datagrams_max: 8192,
            buffer_bytes_max: 64 * 1024 * 1024,
            initial_credit_datagrams: 1024,
            member_timeout_ms: 3000,
            credit_silence_ms: 750,
            batch_bytes_max: 8 * 1024,
            status_interval_ms: 20,
            status_keepalive_ms: 1000,
            backlog_datagrams_max: 256,
        }
    }
}

/// What the sender knows of one member (a receiver whose credit counts).
#[derive(Clone, Debug)]
struct Member {
    id: SenderId,
    delivered_below: u64,
    credit_until: u64,
    last_heard_ms: u64,
}

/// Counters of the sending side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SenderStats {
    pub messages_sent: u64,
    pub datagrams_sent: u64,
    pub retransmits: u64,
    pub naks_received: u64,
    /// NAKed sequences no longer in the buffer (answered with a status so the receiver gives up).
    pub naks_unserviceable: u64,
    /// `try_send` calls refused for lack of credit or buffer room.
    pub would_block: u64,
}

/// A datagram of the stream as kept for (re)transmission: sealed anew, with a fresh nonce
/// counter, each time it goes out.
#[derive(Clone, Debug)]
struct Kept {
    kind: u8,
    frag_index: u16,
    frag_count: u16,
    payload: Bytes,
}

impl Kept {
    /// What it is charged against `buffer_bytes_max`: its sealed size.
    fn bytes(&self) -> usize {
        HEADER_BYTES + self.payload.len() + TAG_BYTES
    }
}

/// The sending half of one endpoint.
#[derive(Debug)]
pub struct SenderCore {
    id: SenderId,
    incarnation: Incarnation,
    sealer: Sealer,
    config: SenderConfig,
    /// Next sequence to assign.
    next_seq: u64,
    /// Datagrams below this have been transmitted at least once; `[sent_below, next_seq)` wait
    /// for credit.
    sent_below: u64,
    /// Datagrams `[buffer_low, next_seq)`, unsealed.
    buffer: VecDeque<Kept>,
    buffer_low: u64,
    buffer_bytes: usize,
    /// The batch being filled: `kind u8 | len u32 BE | payload` repeated; no sequence yet.
    open_batch: Vec<u8>,
    members: Vec<Member>,
    retransmit_queue: VecDeque<(u64, SenderId)>,
    status_queue: VecDeque<Dest>,
    last_status_ms: Option<u64>,
    last_status_sent_below: u64,
    stats: SenderStats,
    scratch: Vec<u8>,
}

impl SenderCore {
    /// `members` are the ids whose credit counts (this sender's own id is ignored if listed).
    /// The stream is sealed by `sealer` (its class, sender id and incarnation).
    pub fn new(
        sealer: Sealer,
        members: &[SenderId],
        config: SenderConfig,
        now_ms: u64,
    ) -> SenderCore {
        assert!(config.buffer_datagrams_max > 0 && config.initial_credit_datagrams > 0);
        let (id, incarnation) = (sealer.sender, sealer.incarnation);
        assert!(config.batch_bytes_max <= FRAGMENT_PAYLOAD_BYTES_MAX);
        let mut ids: Vec<SenderId> = members.iter().copied().filter(|m| *m != id).collect();
        ids.sort_unstable();
        ids.dedup();
        let members = ids
            .into_iter()
            .map(|m| Member {
                id: m,
                delivered_below: FIRST_SEQ,
                credit_until: FIRST_SEQ + config.initial_credit_datagrams,
                last_heard_ms: now_ms,
            })
            .collect();
        SenderCore {
            id,
            incarnation,
            sealer,
            config,
            next_seq: FIRST_SEQ,
            sent_below: FIRST_SEQ,
            buffer: VecDeque::new(),
            buffer_low: FIRST_SEQ,
            buffer_bytes: 0,
            open_batch: Vec::new(),
            members,
            retransmit_queue: VecDeque::new(),
            status_queue: VecDeque::new(),
            last_status_ms: None,
            last_status_sent_below: FIRST_SEQ,
            stats: SenderStats::default(),
            scratch: Vec::new(),
        }
    }

    pub fn stats(&self) -> SenderStats {
        self.stats
    }

    pub fn incarnation(&self) -> Incarnation {
        self.incarnation
    }

    /// Next sequence number to be assigned.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Datagrams below this have gone out at least once.
    pub fn sent_below(&self) -> u64 {
        self.sent_below
    }

    /// Whether small messages wait in a batch that has no sequence number yet.
    pub fn has_open_batch(&self) -> bool {
        !self.open_batch.is_empty()
    }

    /// Oldest sequence still retransmittable.
    pub fn retained_from(&self) -> u64 {
        self.buffer_low
    }

    fn is_live(&self, m: &Member, now_ms: u64) -> bool {
        now_ms.saturating_sub(m.last_heard_ms) <= self.config.member_timeout_ms
    }

    /// Members currently counting toward credit (heard from within the timeout).
    pub fn live_members(&self, now_ms: u64) -> Vec<SenderId> {
        self.members.iter().filter(|m| self.is_live(m, now_ms)).map(|m| m.id).collect()
    }

    /// Transmission is allowed below this sequence (no member heard within the credit silence:
    /// unlimited).
    pub fn credit_limit(&self, now_ms: u64) -> u64 {
        let silence_ms = self.config.credit_silence_ms.min(self.config.member_timeout_ms);
        self.members
            .iter()
            .filter(|m| now_ms.saturating_sub(m.last_heard_ms) <= silence_ms)
            .map(|m| m.credit_until)
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Every live member has delivered everything below this.
    pub fn stable_below(&self, now_ms: u64) -> u64 {
        self.members
            .iter()
            .filter(|m| self.is_live(m, now_ms))
            .map(|m| m.delivered_below)
            .min()
            .unwrap_or(self.sent_below)
            .min(self.sent_below)
    }

    /// Makes room for `datagrams` new datagrams of `bytes` in total by evicting stable ones from
    /// the front; false if unstable data is in the way. Eviction is lazy on purpose: stable data
    /// is kept while there is room, so that non-member receivers (clients) can still repair.
    fn make_room(&mut self, datagrams: usize, bytes: usize, now_ms: u64) -> bool {
        let stable = self.stable_below(now_ms);
        let fits = |s: &SenderCore| {
            s.buffer.is_empty()
                || (s.buffer.len() + datagrams <= s.config.buffer_datagrams_max
                    && s.buffer_bytes + bytes <= s.config.buffer_bytes_max)
        };
        while !fits(self) && self.buffer_low < stable {
            let old = self.buffer.pop_front().expect("buffer_low < stable <= next_seq");
            self.buffer_bytes -= old.bytes();
            self.buffer_low += 1;
        }
        fits(self)
    }

    /// Whether datagrams wait for the driver or for credit.
    fn backlogged(&self) -> bool {
        self.sent_below < self.next_seq
    }

    /// Whether `datagrams` more may join the backlog (always, when it is empty).
    fn backlog_admits(&self, datagrams: u64) -> bool {
        let backlog = self.next_seq - self.sent_below;
        backlog == 0 || backlog + datagrams <= self.config.backlog_datagrams_max
    }

    /// Queues one message on the reliable stream. `Err(WouldBlock)` means: no credit or no
    /// buffer room right now; call again after the next stability report (the async driver
    /// waits, it never drops).
    pub fn try_send(&mut self, message: &Message, now_ms: u64) -> Result<(), SendError> {
        let payload = message.encode_payload()?;
        self.try_send_encoded(message.kind() as u8, &payload, now_ms)
    }

    /// [`Self::try_send`] for an already encoded payload.
    pub fn try_send_encoded(
        &mut self,
        kind: u8,
        payload: &[u8],
        now_ms: u64,
    ) -> Result<(), SendError> {
        if payload.len() > MESSAGE_BYTES_MAX {
            return Err(SendError::TooLarge { len: payload.len(), max: MESSAGE_BYTES_MAX });
        }
        let entry_bytes = 5 + payload.len();
        if entry_bytes <= self.config.batch_bytes_max {
            if self.open_batch.len() + entry_bytes > self.config.batch_bytes_max {
                // The open batch is full: it must take a sequence number first.
                if !self.backlog_admits(1) || !self.close_batch(now_ms) {
                    self.stats.would_block += 1;
                    return Err(SendError::WouldBlock);
                }
            }
            self.open_batch.push(kind);
            self.open_batch.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            self.open_batch.extend_from_slice(payload);
            self.stats.messages_sent += 1;
            self.check_invariants();
            return Ok(());
        }
        // A large message: its fragments join the backlog together (so a blocked sender holds
        // a bounded backlog), after the open batch, which must keep its place in the order.
        let fragments = payload.len().div_ceil(FRAGMENT_PAYLOAD_BYTES_MAX).max(1);
        let batch_datagrams = u64::from(!self.open_batch.is_empty());
        let room = self.backlog_admits(fragments as u64 + batch_datagrams)
            && self.close_batch(now_ms)
            && self.make_room(
                fragments,
                payload.len() + fragments * (HEADER_BYTES + TAG_BYTES),
                now_ms,
            );
        if !room {
            self.stats.would_block += 1;
            return Err(SendError::WouldBlock);
        }
        for (index, chunk) in payload.chunks(FRAGMENT_PAYLOAD_BYTES_MAX).enumerate() {
            self.push_datagram(kind, index as u16, fragments as u16, chunk);
        }
        self.stats.messages_sent += 1;
        self.check_invariants();
        Ok(())
    }

    /// Gives the open batch a sequence number (into the buffer). False if there is no room.
    fn close_batch(&mut self, now_ms: u64) -> bool {
        if self.open_batch.is_empty() {
            return true;
        }
        let len = self.open_batch.len();
        if !self.make_room(1, len + HEADER_BYTES + TAG_BYTES, now_ms) {
            return false;
        }
        let batch = std::mem::take(&mut self.open_batch);
        self.push_datagram(KIND_BATCH, 0, 1, &batch);
        // Reuse the allocation for the next batch.
        self.open_batch = batch;
        self.open_batch.clear();
        true
    }

    fn push_datagram(&mut self, kind: u8, frag_index: u16, frag_count: u16, payload: &[u8]) {
        let kept = Kept { kind, frag_index, frag_count, payload: Bytes::copy_from_slice(payload) };
        self.buffer_bytes += kept.bytes();
        self.buffer.push_back(kept);
        self.next_seq += 1;
    }

    /// Seals datagram `seq` of the buffer, with a fresh counter.
    fn sealed(&mut self, seq: u64) -> Bytes {
        let kept = &self.buffer[(seq - self.buffer_low) as usize];
        let header = self.sealer.header(
            kept.kind,
            flags::RELIABLE,
            seq,
            (kept.frag_index, kept.frag_count),
            kept.payload.len(),
        );
        seal(&self.sealer, &header, &kept.payload, &mut self.scratch)
            .expect("fragments and batches are sized below the datagram limit");
        Bytes::copy_from_slice(&self.scratch)
    }

    /// A stability/credit report from a receiver. Reports from non-members are ignored (their
    /// credit does not count); reports for another incarnation are stale.
    pub fn on_stability(&mut self, from: SenderId, report: &Stability, now_ms: u64) {
        if report.target != self.id || report.incarnation != self.incarnation {
            return;
        }
        let next_seq = self.next_seq;
        if let Some(m) = self.members.iter_mut().find(|m| m.id == from) {
            // Reports may arrive out of order: only move forward. A receiver cannot have
            // delivered what was never sent.
            m.delivered_below = m.delivered_below.max(report.delivered_below.min(next_seq));
            m.credit_until = m.credit_until.max(report.credit_until);
            m.last_heard_ms = m.last_heard_ms.max(now_ms);
            assert!(m.delivered_below <= next_seq, "member {} delivered unsent data", m.id);
        }
    }

    /// A negative ack: queue what we still have for retransmission to the NAKer, and answer
    /// with our status every time. The status tells it what is gone, and it is a small answer
    /// that proves the NAKer is heard even when every retransmission to it is lost: only a NAK
    /// round during which the receiver hears us counts toward its give-up limit (see
    /// `receiver`), so this keeps a lossy link from looking like a partition.
    pub fn on_nak(&mut self, from: SenderId, nak: &Nak, now_ms: u64) {
        let _ = now_ms;
        if nak.target != self.id {
            return;
        }
        self.stats.naks_received += 1;
        if nak.incarnation != self.incarnation {
            // It speaks of an incarnation we no longer have: our status tells it to move on.
            self.queue_status(Dest::Sender(from));
            return;
        }
        let mut gone = false;
        for &(first, last) in nak.ranges.iter().take(NAK_RANGES_MAX) {
            if first < self.buffer_low {
                gone = true;
            }
            let start = first.max(self.buffer_low);
            let end = last.saturating_add(1).min(self.sent_below);
            for seq in start..end {
                // Bounded: one queue entry per retained datagram at most on average.
                if self.retransmit_queue.len() >= self.config.buffer_datagrams_max {
                    break;
                }
                self.retransmit_queue.push_back((seq, from));
            }
        }
        if gone {
            self.stats.naks_unserviceable += 1;
        }
        self.queue_status(Dest::Sender(from));
    }

    /// Timers: schedules the periodic status announcement.
    pub fn tick(&mut self, now_ms: u64) {
        let since = self.last_status_ms.map(|t| now_ms.saturating_sub(t));
        let unstable = self.stable_below(now_ms) < self.sent_below
            || self.last_status_sent_below != self.sent_below;
        let due = match since {
            None => self.sent_below > FIRST_SEQ,
            Some(s) => {
                (unstable && s >= self.config.status_interval_ms)
                    || s >= self.config.status_keepalive_ms
            }
        };
        if due {
            self.last_status_ms = Some(now_ms);
            self.last_status_sent_below = self.sent_below;
            self.queue_status(Dest::Group);
        }
    }

    fn queue_status(&mut self, dest: Dest) {
        if self.status_queue.len() < STATUS_QUEUE_MAX && !self.status_queue.contains(&dest) {
            self.status_queue.push_back(dest);
        }
    }

    fn status(&self) -> Message {
        Message::SenderStatus(SenderStatus {
            incarnation: self.incarnation,
            retained_from: self.buffer_low,
            sent_below: self.sent_below,
        })
    }

    /// The next datagram to put on the wire, if any: retransmissions first, then status, then
    /// new data as credit allows, then the open batch.
    pub fn poll_transmit(&mut self, now_ms: u64) -> Option<Transmit> {
        while let Some((seq, to)) = self.retransmit_queue.pop_front() {
            if seq >= self.buffer_low && seq < self.sent_below {
                self.stats.retransmits += 1;
                let datagram = self.sealed(seq);
                return Some(Transmit { dest: Dest::Sender(to), datagram });
            }
        }
        if let Some(dest) = self.status_queue.pop_front() {
            let datagram = super::seal_control(&self.sealer, &self.status());
            return Some(Transmit { dest, datagram });
        }
        if !self.backlogged() && !self.open_batch.is_empty() {
            // Nothing else waits: the batch goes now rather than waiting to fill (no Nagle
            // delay). It fills by itself while the driver is busy sending.
            self.close_batch(now_ms);
        }
        if self.backlogged() && self.sent_below < self.credit_limit(now_ms) {
            let datagram = self.sealed(self.sent_below);
            self.sent_below += 1;
            self.stats.datagrams_sent += 1;
            self.check_invariants();
            return Some(Transmit { dest: Dest::Group, datagram });
        }
        None
    }

    /// The window's bookkeeping, asserted after each change (a broken invariant stops the
    /// process: sending on from a corrupt window would hand receivers wrong sequences).
    /// - `buffer_low <= sent_below <= next_seq`, and the buffer holds exactly
    ///   `[buffer_low, next_seq)`;
    /// - the buffer exceeds `buffer_datagrams_max` only by one message admitted into an empty
    ///   buffer, and the backlog exceeds `backlog_datagrams_max` only by one message (plus the
    ///   open batch) admitted into an empty backlog;
    /// - the retransmission and status queues stay within their bounds.
    fn check_invariants(&self) {
        assert!(
            self.buffer_low <= self.sent_below && self.sent_below <= self.next_seq,
            "sender window out of order: buffer_low {} sent_below {} next_seq {}",
            self.buffer_low,
            self.sent_below,
            self.next_seq
        );
        assert_eq!(
            self.buffer.len() as u64,
            self.next_seq - self.buffer_low,
            "the sender's buffer does not hold exactly [buffer_low, next_seq)"
        );
        let one_message = FRAGMENTS_PER_MESSAGE_MAX + 1;
        assert!(
            self.buffer.len() <= self.config.buffer_datagrams_max.max(one_message),
            "sender buffer holds {} datagrams, over its bound {}",
            self.buffer.len(),
            self.config.buffer_datagrams_max
        );
        assert!(
            self.next_seq - self.sent_below
                <= self.config.backlog_datagrams_max.max(one_message as u64),
            "sender backlog {} over its bound {}",
            self.next_seq - self.sent_below,
            self.config.backlog_datagrams_max
        );
        assert!(self.retransmit_queue.len() <= self.config.buffer_datagrams_max);
        assert!(self.status_queue.len() <= STATUS_QUEUE_MAX);
    }

    /// Whether a `try_send` of a small message would currently succeed without blocking, i.e.
    /// nothing waits for credit.
    pub fn has_credit(&self, now_ms: u64) -> bool {
        !self.backlogged() || self.sent_below < self.credit_limit(now_ms)
    }
}
