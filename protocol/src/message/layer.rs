//! The messaging layer's own messages: negative acks, stability/credit reports and the sender's
//! status announcement. All three travel as best-effort datagrams (no `RELIABLE` flag): losing
//! one only delays repair or credit until the next one, and every one is repeated on a timer.

use crate::SenderId;
use serde::{Deserialize, Serialize};

/// Receiver → sender: these sequence numbers (inclusive ranges) of your incarnation are missing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nak {
    pub target: SenderId,
    pub incarnation: u64,
    #[serde(
        deserialize_with = "crate::codec::bounded::vec::<_, _, { crate::limits::NAK_RANGES_MAX }>"
    )]
    pub ranges: Vec<(u64, u64)>,
}

/// Receiver → sender: I have delivered everything of yours below `delivered_below`, and you may
/// send up to `credit_until` (exclusive). Frees the sender's retransmit buffer and grants credit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stability {
    pub target: SenderId,
    pub incarnation: u64,
    pub delivered_below: u64,
    pub credit_until: u64,
}

/// Sender → group (periodically) or → one receiver (in answer to a NAK it cannot fully serve):
/// the state of the sender's reliable stream in this incarnation.
///
/// `sent_below` lets a receiver notice that the tail of the stream was lost (no later datagram
/// would reveal the gap) and lets a late joiner start at the sender's current sequence.
/// `retained_from` is the oldest sequence the sender can still retransmit: anything a receiver
/// misses below it is gone for good, which the receiver reports as a gap instead of NAKing forever.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SenderStatus {
    pub incarnation: u64,
    pub retained_from: u64,
    pub sent_below: u64,
}
