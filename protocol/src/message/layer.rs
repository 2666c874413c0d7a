//! The messaging layer's own messages: negative acks and stability/credit reports.

use crate::SenderId;
use serde::{Deserialize, Serialize};

/// Receiver → sender: these sequence numbers (inclusive ranges) of your incarnation are missing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nak {
    pub target: SenderId,
    pub incarnation: u32,
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
    pub incarnation: u32,
    pub delivered_below: u64,
    pub credit_until: u64,
}
