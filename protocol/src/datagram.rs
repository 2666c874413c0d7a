//! Whole datagrams for messages that fit in one: encode a [`Message`] and seal it, or open a
//! datagram and decode its message, in one call.
//!
//! This is the path of everything unfragmented (unicast request/reply, FSLive, votes,
//! heartbeats, tests). The messaging layer fragments large messages itself with
//! [`header::seal`] / [`header::open`] and decodes the reassembled payload with
//! [`Message::decode_payload`]; both paths produce the same bytes for a one-fragment message.

use crate::error::ProtocolError;
use crate::header::{self, ClusterAuth, Header};
use crate::limits::FRAGMENT_PAYLOAD_BYTES_MAX;
use crate::message::Message;
use crate::{Incarnation, SenderId};

/// Who sends, and where in its stream: the header fields a caller chooses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub sender: SenderId,
    pub incarnation: Incarnation,
    /// Reliable-stream sequence number (with [`header::flags::RELIABLE`]) or request id.
    pub seq: u64,
    /// [`header::flags`]; unknown bits are refused.
    pub flags: u16,
}

/// Encodes `message` and seals it as one datagram (fragment 0 of 1) into `out`.
///
/// Refuses a message whose payload exceeds one fragment ([`FRAGMENT_PAYLOAD_BYTES_MAX`]):
/// such a message must go through the messaging layer, which fragments it. The key class is
/// the one `auth` sends `message`'s kind under ([`ClusterAuth::class_for_kind`]). Returns the
/// header that was written (with the counter [`header::seal`] chose).
pub fn encode_datagram(
    auth: &ClusterAuth,
    envelope: Envelope,
    message: &Message,
    out: &mut Vec<u8>,
) -> Result<Header, ProtocolError> {
    if envelope.flags & !header::flags::KNOWN != 0 {
        return Err(ProtocolError::Malformed {
            what: "envelope",
            detail: format!("unknown flags {:#06x}", envelope.flags),
        });
    }
    let payload = message.encode_payload()?;
    if payload.len() > FRAGMENT_PAYLOAD_BYTES_MAX {
        return Err(ProtocolError::TooLarge {
            what: "single-datagram message (use the messaging layer to fragment)",
            len: payload.len(),
            max: FRAGMENT_PAYLOAD_BYTES_MAX,
        });
    }
    let kind = message.kind() as u8;
    let sealer = auth
        .sealer(auth.class_for_kind(kind), envelope.sender, envelope.incarnation)
        .expect("class_for_kind picks a held key");
    let header = sealer.header(kind, envelope.flags, envelope.seq, (0, 1), payload.len());
    let counter = header::seal(&sealer, &header, &payload, out)?;
    Ok(Header { counter, ..header })
}

/// Opens a one-fragment datagram and decodes its message.
///
/// Every failure is an operating error for the caller to drop and count (see
/// [`crate::stats::DropCounters::record`]): truncated, bad magic, wrong version, wrong cluster,
/// bad tag, unknown kind, malformed payload, over a limit. A fragment of a larger message is
/// refused as malformed: it belongs to the messaging layer's reassembly.
pub fn decode_datagram(
    auth: &ClusterAuth,
    datagram: &[u8],
) -> Result<(Header, Message), ProtocolError> {
    let (header, payload) = header::open(auth, datagram)?;
    if header.frag_count != 1 {
        return Err(ProtocolError::Malformed {
            what: "datagram",
            detail: format!(
                "fragment {} of {}: reassemble in the messaging layer first",
                header.frag_index, header.frag_count
            ),
        });
    }
    let message = Message::decode_payload(header.kind, &payload)?;
    Ok((header, message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::flags;
    use crate::message::layer::Stability;
    use crate::message::replication::Entry;
    use crate::message::replication::Proposal;
    use crate::Zxid;

    fn auth() -> ClusterAuth {
        ClusterAuth::new(7, b"test key")
    }

    fn envelope() -> Envelope {
        Envelope { sender: 3, incarnation: 2, seq: 41, flags: flags::RELIABLE }
    }

    /// A message sealed with `encode_datagram` opens to the same message and a header that
    /// says who sent it, with which kind and sequence number.
    #[test]
    fn single_datagram_round_trip() {
        let message = Message::Stability(Stability {
            target: 9,
            incarnation: 1,
            delivered_below: 100,
            credit_until: 164,
        });
        let mut out = Vec::new();
        let written = encode_datagram(&auth(), envelope(), &message, &mut out).unwrap();
        let (header, decoded) = decode_datagram(&auth(), &out).unwrap();
        assert_eq!(header, written);
        assert_eq!(decoded, message);
        assert_eq!((header.sender, header.incarnation, header.seq), (3, 2, 41));
        assert_eq!(header.kind, 65);
        assert_eq!((header.frag_index, header.frag_count), (0, 1));
    }

    /// A message bigger than one fragment is refused with the limit named, not truncated.
    #[test]
    fn oversized_message_refused_with_limit() {
        let message = Message::Proposal(Proposal {
            from: 1,
            epoch: 1,
            prev: Zxid::ZERO,
            entries: vec![Entry {
                zxid: Zxid::new(1, 1),
                data: vec![0u8; FRAGMENT_PAYLOAD_BYTES_MAX].into(),
            }],
            commit: Zxid::ZERO,
        });
        let err = encode_datagram(&auth(), envelope(), &message, &mut Vec::new()).unwrap_err();
        assert!(
            matches!(err, ProtocolError::TooLarge { max: FRAGMENT_PAYLOAD_BYTES_MAX, len, .. }
                if len > FRAGMENT_PAYLOAD_BYTES_MAX),
            "{err:?}"
        );
    }

    /// Unknown flag bits are refused at encode, so a node never emits what peers would drop.
    #[test]
    fn unknown_flags_refused_at_encode() {
        let message = Message::Stability(Stability {
            target: 1,
            incarnation: 1,
            delivered_below: 0,
            credit_until: 0,
        });
        let env = Envelope { flags: 1 << 9, ..envelope() };
        assert!(matches!(
            encode_datagram(&auth(), env, &message, &mut Vec::new()),
            Err(ProtocolError::Malformed { what: "envelope", .. })
        ));
    }

    /// A fragment of a larger message is not decodable on its own, even when authentic.
    #[test]
    fn fragment_refused_by_single_datagram_decode() {
        let sealer = auth().sealer(header::KeyClass::Client, 3, 2).expect("client key");
        let header = sealer.header(65, flags::RELIABLE, 1, (0, 2), 3);
        let mut out = Vec::new();
        header::seal(&sealer, &header, b"abc", &mut out).unwrap();
        assert!(matches!(
            decode_datagram(&auth(), &out),
            Err(ProtocolError::Malformed { what: "datagram", .. })
        ));
    }
}
