//! The datagram header and its authentication tag.
//!
//! Every datagram is `header (HEADER_BYTES) | payload (payload_len) | tag (TAG_BYTES)`, all
//! integers big-endian. The tag is HMAC-SHA256 under the cluster key over header and payload,
//! truncated to 16 bytes. Layout and version rule: `protocol/WIRE.md`.

use crate::error::ProtocolError;
use crate::limits::{DATAGRAM_BYTES_MAX, FRAGMENTS_PER_MESSAGE_MAX, FRAGMENT_PAYLOAD_BYTES_MAX};
use crate::SenderId;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// "SHOL".
pub const MAGIC: u32 = 0x5348_4F4C;
/// The one wire version this build speaks. A node refuses any other (see WIRE.md).
/// Version 2: `UpdateNotice.prev` (the notice chain).
pub const VERSION: u8 = 2;
pub const HEADER_BYTES: usize = 40;
pub const TAG_BYTES: usize = 16;

/// Header flags.
pub mod flags {
    /// Carried by the reliable per-sender stream: `seq` is the stream's sequence number and
    /// delivery is FIFO. Without it the datagram is best-effort (unicast request/reply, FSLive,
    /// control) and `seq` carries the request id instead (see [`super::Header::seq`]).
    pub const RELIABLE: u16 = 1 << 0;
    /// A retransmission (for counters; receivers treat it like the original).
    pub const RETRANSMIT: u16 = 1 << 1;
    /// A reply to a unicast request; its `seq` is the id of the request it answers.
    pub const REPLY: u16 = 1 << 2;
    /// All flags this version defines; others must be zero.
    pub const KNOWN: u16 = RELIABLE | RETRANSMIT | REPLY;
}

/// The fixed header of every datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub version: u8,
    /// [`crate::message::MessageKind`] as a byte.
    pub kind: u8,
    pub flags: u16,
    pub cluster_id: u32,
    pub sender: SenderId,
    /// Bumped on every start of the sender, so receivers can tell a restart from a replay.
    pub incarnation: u32,
    /// With [`flags::RELIABLE`]: the per-sender, per-incarnation sequence number of the
    /// reliable stream (one per datagram). Without it (unicast request/reply, best-effort
    /// multicast): the request id, chosen by the requester and echoed in the reply, which
    /// carries [`flags::REPLY`]; 0 when the datagram is neither a request nor a reply.
    pub seq: u64,
    /// This datagram's place in its message: `frag_index < frag_count`, `frag_count >= 1`,
    /// `frag_count <= FRAGMENTS_PER_MESSAGE_MAX`. An unfragmented message is fragment 0 of 1.
    pub frag_index: u16,
    pub frag_count: u16,
    /// Payload bytes in this datagram, at most [`FRAGMENT_PAYLOAD_BYTES_MAX`].
    pub payload_len: u32,
}

type HmacSha256 = Hmac<Sha256>;

/// Shortest cluster key accepted at start-up: 128 bits. A shorter key makes the tag guessable.
pub const CLUSTER_KEY_BYTES_MIN: usize = 16;

/// The key held by a cluster key file: its bytes, minus trailing ASCII whitespace (so a key
/// written by `echo` or an editor's final newline is the same key). Every program that reads a
/// key file (`shoal-fs`, `cache-client`) must use this, so that they agree byte for byte.
pub fn cluster_key_from_file_contents(contents: &[u8]) -> &[u8] {
    let end = contents.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(0, |i| i + 1);
    &contents[..end]
}

/// The cluster key and id, everything needed to seal and open datagrams.
#[derive(Clone)]
pub struct ClusterAuth {
    pub cluster_id: u32,
    mac: HmacSha256,
}

impl std::fmt::Debug for ClusterAuth {
    // Never print the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterAuth").field("cluster_id", &self.cluster_id).finish_non_exhaustive()
    }
}

impl ClusterAuth {
    pub fn new(cluster_id: u32, key: &[u8]) -> ClusterAuth {
        let mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
        ClusterAuth { cluster_id, mac }
    }

    fn tag(&self, bytes: &[u8]) -> [u8; TAG_BYTES] {
        let mut mac = self.mac.clone();
        mac.update(bytes);
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_BYTES];
        tag.copy_from_slice(&full[..TAG_BYTES]);
        tag
    }
}

impl Header {
    pub fn encode(&self, out: &mut [u8; HEADER_BYTES]) {
        out[0..4].copy_from_slice(&MAGIC.to_be_bytes());
        out[4] = self.version;
        out[5] = self.kind;
        out[6..8].copy_from_slice(&self.flags.to_be_bytes());
        out[8..12].copy_from_slice(&self.cluster_id.to_be_bytes());
        out[12..20].copy_from_slice(&self.sender.to_be_bytes());
        out[20..24].copy_from_slice(&self.incarnation.to_be_bytes());
        out[24..32].copy_from_slice(&self.seq.to_be_bytes());
        out[32..34].copy_from_slice(&self.frag_index.to_be_bytes());
        out[34..36].copy_from_slice(&self.frag_count.to_be_bytes());
        out[36..40].copy_from_slice(&self.payload_len.to_be_bytes());
    }

    /// Parses the header's fields without checking the tag. Cheap checks only.
    pub fn decode(bytes: &[u8]) -> Result<Header, ProtocolError> {
        if bytes.len() < HEADER_BYTES {
            return Err(ProtocolError::Incomplete { needed: HEADER_BYTES - bytes.len() });
        }
        let u16_at = |i: usize| u16::from_be_bytes([bytes[i], bytes[i + 1]]);
        let u32_at = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
        let u64_at = |i: usize| u64::from_be_bytes(bytes[i..i + 8].try_into().unwrap());
        let magic = u32_at(0);
        if magic != MAGIC {
            return Err(ProtocolError::BadMagic { found: magic });
        }
        let header = Header {
            version: bytes[4],
            kind: bytes[5],
            flags: u16_at(6),
            cluster_id: u32_at(8),
            sender: u64_at(12),
            incarnation: u32_at(20),
            seq: u64_at(24),
            frag_index: u16_at(32),
            frag_count: u16_at(34),
            payload_len: u32_at(36),
        };
        if header.version != VERSION {
            return Err(ProtocolError::UnsupportedVersion {
                found: header.version,
                supported: VERSION,
            });
        }
        if header.flags & !flags::KNOWN != 0 {
            return Err(ProtocolError::Malformed {
                what: "header",
                detail: format!("unknown flags {:#06x}", header.flags),
            });
        }
        if header.frag_count == 0
            || header.frag_index >= header.frag_count
            || header.frag_count as usize > FRAGMENTS_PER_MESSAGE_MAX
        {
            return Err(ProtocolError::Malformed {
                what: "header",
                detail: format!("fragment {} of {}", header.frag_index, header.frag_count),
            });
        }
        if header.payload_len as usize > FRAGMENT_PAYLOAD_BYTES_MAX {
            return Err(ProtocolError::TooLarge {
                what: "datagram payload",
                len: header.payload_len as usize,
                max: FRAGMENT_PAYLOAD_BYTES_MAX,
            });
        }
        Ok(header)
    }
}

/// Builds a whole datagram into `out` (cleared first): header, payload, tag.
///
/// Refuses a payload over [`FRAGMENT_PAYLOAD_BYTES_MAX`]. A header whose `payload_len` or
/// `cluster_id` disagrees with `payload` or `auth` is a bug in the caller and panics.
pub fn seal(
    auth: &ClusterAuth,
    header: &Header,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), ProtocolError> {
    if payload.len() > FRAGMENT_PAYLOAD_BYTES_MAX {
        return Err(ProtocolError::TooLarge {
            what: "datagram payload",
            len: payload.len(),
            max: FRAGMENT_PAYLOAD_BYTES_MAX,
        });
    }
    let total = HEADER_BYTES + payload.len() + TAG_BYTES;
    assert!(total <= DATAGRAM_BYTES_MAX, "limits: a full fragment must fit a datagram");
    assert_eq!(header.payload_len as usize, payload.len(), "header.payload_len is wrong");
    assert_eq!(header.cluster_id, auth.cluster_id, "header.cluster_id is not ours");
    let mut head = [0u8; HEADER_BYTES];
    header.encode(&mut head);
    out.clear();
    out.reserve(total);
    out.extend_from_slice(&head);
    out.extend_from_slice(payload);
    let tag = auth.tag(out);
    out.extend_from_slice(&tag);
    Ok(())
}

/// Checks a whole datagram (lengths, cluster, tag) and returns its header and payload.
/// The tag is compared in constant time. Cheap checks come first, so that junk costs no HMAC.
/// A datagram shorter than its header says is `Incomplete` (truncated); a longer one is
/// `Malformed`.
pub fn open<'a>(
    auth: &ClusterAuth,
    datagram: &'a [u8],
) -> Result<(Header, &'a [u8]), ProtocolError> {
    if datagram.len() > DATAGRAM_BYTES_MAX {
        return Err(ProtocolError::TooLarge {
            what: "datagram",
            len: datagram.len(),
            max: DATAGRAM_BYTES_MAX,
        });
    }
    let header = Header::decode(datagram)?;
    let expected = HEADER_BYTES + header.payload_len as usize + TAG_BYTES;
    if datagram.len() < expected {
        return Err(ProtocolError::Incomplete { needed: expected - datagram.len() });
    }
    if datagram.len() != expected {
        return Err(ProtocolError::Malformed {
            what: "datagram",
            detail: format!("length {} but header says {}", datagram.len(), expected),
        });
    }
    if header.cluster_id != auth.cluster_id {
        return Err(ProtocolError::WrongCluster {
            found: header.cluster_id,
            expected: auth.cluster_id,
        });
    }
    let (body, tag) = datagram.split_at(expected - TAG_BYTES);
    let mut mac = auth.mac.clone();
    mac.update(body);
    mac.verify_truncated_left(tag).map_err(|_| ProtocolError::BadMac)?;
    Ok((header, &body[HEADER_BYTES..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(len: usize) -> Header {
        Header {
            version: VERSION,
            kind: 3,
            flags: flags::RELIABLE,
            cluster_id: 0xC0FFEE,
            sender: 2,
            incarnation: 5,
            seq: 99,
            frag_index: 0,
            frag_count: 1,
            payload_len: len as u32,
        }
    }

    /// A key file's trailing newline or spaces are not part of the key; inner bytes are.
    #[test]
    fn key_file_contents_trim_trailing_whitespace_only() {
        assert_eq!(cluster_key_from_file_contents(b"abc def\n\r\n "), b"abc def");
        assert_eq!(cluster_key_from_file_contents(b" \tkey"), b" \tkey");
        assert_eq!(cluster_key_from_file_contents(b"\n\n"), b"");
    }

    /// A sealed datagram opens to the same header and payload under the same key, and is
    /// refused under another key or with any byte flipped.
    #[test]
    fn seal_open_round_trip_and_tamper() {
        let auth = ClusterAuth::new(0xC0FFEE, b"secret");
        let mut dgram = Vec::new();
        seal(&auth, &header(5), b"hello", &mut dgram).unwrap();
        let (h, p) = open(&auth, &dgram).unwrap();
        assert_eq!(h, header(5));
        assert_eq!(p, b"hello");
        let other = ClusterAuth::new(0xC0FFEE, b"other");
        assert_eq!(open(&other, &dgram).unwrap_err(), ProtocolError::BadMac);
        for i in 0..dgram.len() {
            let mut bad = dgram.clone();
            bad[i] ^= 0x01;
            assert!(open(&auth, &bad).is_err(), "flipped byte {i} accepted");
        }
    }
}
