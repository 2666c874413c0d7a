//! The reliable, flow-controlled multicast messaging layer.
//!
//! # Layout
//! - [`core`]: the IO-free core ([`Core`]): no socket, no clock (times are `now_ms` values the
//!   caller passes in). It seals and opens datagrams, and combines
//! - [`sender`]: sequence numbers, batching of small messages, fragmentation of large ones, the
//!   bounded retransmit buffer freed by stability reports, NAK answers, credit gating; and
//! - [`receiver`]: per-sender windows with FIFO delivery, duplicate suppression, reassembly,
//!   gap detection with NAK rounds, incarnations, late joins, stability/credit reports.
//! - [`fault`]: the deterministic fault hook (seeded datagram drops) the tests use.
//! - [`socket`]: the tokio driver, [`Endpoint`]: multicast and unicast sockets (socket2),
//!   reliable multicast, best-effort sends, unicast request/reply with retries, receive.
//!
//! # Guarantees
//! For every sender, the messages it multicasts with [`Endpoint::multicast`] are delivered to
//! each receiver exactly once and in the order sent, or a [`Incoming::Gap`] says that some were
//! lost for good (the sender no longer held them, or NAK repair gave up, or it restarted with
//! undelivered data). NAK repair gives up only after `nak_rounds_max` rounds *during which the
//! sender was heard* (a sender answers every NAK with its status): a partition does not use up
//! the rounds, so a hole the sender still holds is repaired after the heal, however long the
//! partition. A sender silent for `sender_gone_ms` (10 s) is presumed gone, and its hole then
//! becomes a gap within `nak_rounds_max` rounds; the window stays bounded meanwhile. Credit is granted by the configured `members` only; other receivers
//! (clients) are repaired best-effort from the retransmit buffer. A sender out of credit waits.
//! A member silent for `credit_silence_ms` stops counting toward credit (a dead member stalls
//! senders at most that long), and one silent for `member_timeout_ms` toward stability too.
//!
//! A receiver's memory for the reliable streams is bounded whatever its peers do (anyone with
//! the cluster key can claim any sender id): at most `senders_max` sender states (the one heard
//! least recently is evicted, its position kept as a tombstone; `senders_evicted` counts them),
//! and at most `held_bytes_max` bytes held for reordering and reassembly across all senders
//! together (a fragmented message reserves its announced size with its first fragment). Past
//! that cap a datagram that arrives out of order is not held, and the in-order first fragment
//! of a message first sheds held out-of-order datagrams (the highest sequences of the sender
//! holding most) to make room for its reservation; each is counted as
//! [`crate::stats::DropReason::ReceiverFull`] and is missing like a lost datagram, so NAK
//! repair brings it back once there is room. A datagram that completes a message by itself is
//! never refused, nor is a later fragment of a message whose reassembly started. Only if
//! reassemblies hold the whole cap is a first fragment refused; a cap that stays full for the
//! NAK rounds ends in a [`Incoming::Gap`], as any loss would. So `held_bytes_max` must be at
//! least the largest message a sender sends (`limits::MESSAGE_BYTES_MAX` for any). A message
//! half reassembled when its sender falls silent for `sender_gone_ms` is given up (a gap) so
//! that a sender that crashed mid-message does not hold its reservation for ever.
//!
//! A receiver meeting a sender for the first time starts at the first datagram it sees (from
//! the start of the message in progress, whose earlier fragments it repairs if the sender still
//! has them, else from the next message start), or, when the sender's stream is younger than
//! `join_backfill_datagrams`, from the stream's first sequence — so endpoints started together
//! miss nothing even if the very first datagrams are lost. Moving past data the sender no
//! longer has before anything was delivered is a late join, not a gap.
//!
//! # API at a glance (all in [`socket`])
//! - [`Endpoint::bind`]`(`[`EndpointConfig`]`)`: opens the sockets and starts the tasks.
//! - [`Endpoint::multicast`]`(Message)`: reliable, FIFO per sender; waits for credit.
//! - [`Endpoint::send_unreliable`] / [`Endpoint::send_unreliable_to`]: best-effort (FSLive).
//! - [`Endpoint::request`]`(addr, Message, timeout, retries)`: unicast request/reply with a
//!   request id, retries with doubling back-off; [`RequestHandle::reply`] answers one.
//!   Requests and replies of any size up to the message limit (a 16 MiB value) are
//!   fragmented; the receiver keeps fragments across retries, so a retry fills the holes.
//!   There is no flow control on this path: a multi-megabyte reply is a burst.
//! - [`Endpoint::recv`] / [`Endpoint::try_recv`]: the next [`Incoming`] (a [`Received`]
//!   message or a gap). Taking a reliable message grants its sender credit.
//! - [`Endpoint::flush`] (wait until what we multicast is stable), [`Endpoint::shutdown`].
//! - [`Endpoint::stats`] (every drop is counted there), [`Endpoint::local_addr`].
//!
//! # Defaults and why
//! | what | default | why |
//! | --- | --- | --- |
//! | receive window / initial credit | 1024 datagrams | about what a 4 MiB socket buffer holds of 4–8 KiB datagrams; more only adds kernel drops and repairs |
//! | retransmit buffer | 8192 datagrams, 64 MiB | several windows, so clients can still repair after members moved on |
//! | batch | 8 KiB | below jumbo-frame size; tens of 100-byte messages per datagram and syscall |
//! | send backlog | 256 datagrams | the application feels a lack of credit promptly |
//! | NAK delay / retry / rounds | 5 ms / 30 ms / 40 | reordering on a LAN is sub-millisecond; 40 rounds of 30 ms ride out 1 s of trouble, and 20 % loss fails a round with p ≈ 0.36, so 40 in a row ≈ 1e-18; a round only counts if the sender was heard since the previous one, so silence (a partition) spends none |
//! | sender presumed gone | 10 s of silence | longer than any partition we mean to ride out without a gap (the harness's are ≤ 4 s) and than the member timeout; a dead sender's hole holds later messages back at most this long plus 1.2 s |
//! | stability report | every 5 ms while moving, 250 ms keepalive, at once after a quarter window | credit flows before the sender runs dry; the keepalive proves a member alive well within the credit silence |
//! | credit silence | 750 ms (three keepalives) | a dead node blocks senders at most this long: its last credit runs out after one window (half a second at a busy master), then its silence lifts the limit |
//! | member timeout | 3 s | a dead node holds the retransmit buffer (stability) this long, so a slow one can still repair |
//! | tick | 2 ms | the granularity of the timers above |
//! | senders tracked by a receiver | 4096 (`senders_max`) | every node and client of a large cluster; a sender state without held data is a few hundred bytes |
//! | bytes held for reordering and reassembly, all senders | 256 MiB (`held_bytes_max`, [`receiver::HELD_BYTES_MAX`]), each datagram held out of order charged its payload + 128 bytes, a fragmented message its announced size | without it, 4096 senders × a 1024-datagram window of 60 KiB fragments is 240 GiB; 256 MiB is the worst case of two senders at once (a window of maximum fragments, 60 MiB, plus the largest message reassembling, 65 MiB) and some thirty full windows of ordinary 8 KiB batches; the same as the best-effort reassembly bound (`core::PARTIAL_BYTES_MAX`) |
//!
//! Retransmissions are the original sealed bytes (no `RETRANSMIT` flag, so a repair costs no
//! new HMAC). Own multicast looped back to us is recognised from the header before the HMAC.
//!
//! # Wire use of the header
//! Reliable datagrams carry `flags::RELIABLE`, `seq` (one per datagram, from
//! [`FIRST_SEQ`] in every incarnation) and `frag_index`/`frag_count`. Their `kind` is the
//! message kind, or [`KIND_BATCH`] for a datagram that packs several small messages as
//! `kind u8 | length u32 BE | payload` repeated. Best-effort datagrams (requests, replies,
//! FSLive, NAK, Stability, SenderStatus) have no `RELIABLE` flag; there `seq` is the request id
//! (0: not a request) and `flags::REPLY` marks a reply; a fragmented request or reply carries
//! `frag_index`/`frag_count` under its request id (id 0 is never fragmented).
//!
//! # Example
//! ```no_run
//! use protocol::header::ClusterAuth;
//! use protocol::message::{live::Freeze, Message};
//! use protocol::messaging::{Endpoint, EndpointConfig, Incoming};
//! use protocol::Zxid;
//! # async fn run() -> Result<(), protocol::messaging::MessagingError> {
//! let auth = ClusterAuth::new(7, b"cluster key");
//! let mut config = EndpointConfig::new(1, 1, auth);
//! config.members = vec![1, 2, 3];
//! let endpoint = Endpoint::bind(config).await?;
//! endpoint
//!     .multicast(Message::Freeze(Freeze { node: 1, frozen: true, applied: Zxid::default() }))
//!     .await?;
//! match endpoint.recv().await? {
//!     Incoming::Message(received) => {
//!         if let Some(request) = received.request {
//!             request.reply(&endpoint, received.message.clone()).await?;
//!         }
//!     }
//!     Incoming::Gap { sender, .. } => println!("lost part of {sender}'s stream"),
//! }
//! endpoint.shutdown().await;
//! # Ok(())
//! # }
//! ```

pub mod core;
#[cfg(test)]
mod core_tests;
pub mod fault;
pub mod receiver;
pub mod sender;
pub mod socket;

pub use self::core::{Core, CoreConfig, CoreStats};
pub use fault::FaultConfig;
pub use receiver::{ReceiverConfig, ReceiverStats};
pub use sender::{SenderConfig, SenderStats};
pub use socket::{
    Endpoint, EndpointConfig, EndpointStats, Incoming, MessagingError, Received, RequestHandle,
};

use crate::error::ProtocolError;
use crate::header::{seal, Sealer};
use crate::limits::FRAGMENT_PAYLOAD_BYTES_MAX;
use crate::message::Message;
use crate::{Incarnation, SenderId};
use bytes::Bytes;

/// The first sequence number of every incarnation's reliable stream.
pub const FIRST_SEQ: u64 = 1;

/// The `kind` byte of a reliable datagram packing several small messages. 0 is not a
/// [`crate::message::MessageKind`], so a peer that does not know batches refuses it cleanly.
pub const KIND_BATCH: u8 = 0;

/// Where a datagram goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dest {
    /// The multicast group (or every peer of the unicast fallback list).
    Group,
    /// One endpoint, by sender id: the driver sends to the address it last heard it from.
    Sender(SenderId),
}

/// A sealed datagram and where to send it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub dest: Dest,
    pub datagram: Bytes,
}

/// What the core hands to the application, in order per sender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// A message of `sender`'s reliable stream. `seq_below` is the sequence after the datagram
    /// that completed it; taking it with [`Core::pop_delivery`] grants credit up to there.
    Message { sender: SenderId, incarnation: Incarnation, seq_below: u64, message: Message },
    /// Part of `sender`'s stream is lost for good, from `first_missing`; delivery resumed at
    /// `resumed_at` (None: the sender restarted, its old incarnation is abandoned).
    Gap { sender: SenderId, incarnation: Incarnation, first_missing: u64, resumed_at: Option<u64> },
}

/// Why a reliable send did not happen.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// No credit or no retransmit-buffer room now; retry after the next stability report.
    #[error("would block: no credit from the members or no retransmit buffer room")]
    WouldBlock,
    #[error("message of {len} bytes is over the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error(transparent)]
    Encode(#[from] ProtocolError),
}

/// Seals a best-effort control datagram (no `RELIABLE` flag, `seq` 0).
pub(crate) fn seal_control(sealer: &Sealer, message: &Message) -> Bytes {
    let mut datagrams = seal_unreliable(sealer, 0, 0, message).expect("control is small");
    debug_assert_eq!(datagrams.len(), 1);
    datagrams.pop().expect("one datagram")
}

/// Seals a best-effort message: `seq` is the request id (0: none), `flags` 0 or REPLY.
///
/// A request or reply larger than one datagram is cut into fragments sharing its request id
/// (`frag_index`/`frag_count` as on the reliable stream); the receiver reassembles them and
/// keeps what it has across retries of the same request, so a retry only has to fill in the
/// fragments that were lost. Other best-effort messages (request id 0) must fit one datagram.
/// Every call seals anew (fresh counters): a retry is never the same bytes twice.
pub(crate) fn seal_unreliable(
    sealer: &Sealer,
    seq: u64,
    flags: u16,
    message: &Message,
) -> Result<Vec<Bytes>, ProtocolError> {
    let payload = message.encode_payload()?;
    seal_unreliable_encoded(sealer, seq, flags, message.kind() as u8, &payload)
}

/// [`seal_unreliable`] of an encoded payload.
pub(crate) fn seal_unreliable_encoded(
    sealer: &Sealer,
    seq: u64,
    flags: u16,
    kind: u8,
    payload: &[u8],
) -> Result<Vec<Bytes>, ProtocolError> {
    let fragments = payload.len().div_ceil(FRAGMENT_PAYLOAD_BYTES_MAX).max(1);
    if fragments > 1 && seq == 0 {
        return Err(ProtocolError::TooLarge {
            what: "best-effort message (only requests and replies are fragmented)",
            len: payload.len(),
            max: FRAGMENT_PAYLOAD_BYTES_MAX,
        });
    }
    let mut datagrams = Vec::with_capacity(fragments);
    let chunks: Vec<&[u8]> = if payload.is_empty() {
        vec![payload]
    } else {
        payload.chunks(FRAGMENT_PAYLOAD_BYTES_MAX).collect()
    };
    for (index, chunk) in chunks.into_iter().enumerate() {
        let header = sealer.header(kind, flags, seq, (index as u16, fragments as u16), chunk.len());
        let mut out = Vec::new();
        seal(sealer, &header, chunk, &mut out)?;
        datagrams.push(Bytes::from(out));
    }
    Ok(datagrams)
}
