//! The datagram header, the two key classes, and the AEAD that seals every datagram.
//!
//! Every datagram is `header (HEADER_BYTES) | ciphertext (payload_len) | tag (TAG_BYTES)`, all
//! integers big-endian. The payload is encrypted with AES-256-GCM under a subkey of the key
//! class the header names (HKDF-SHA256 of the class key, per sender and incarnation); the
//! header is the associated data, so it is authenticated but travels in clear. The nonce is
//! the header's `counter`, which one process never repeats. Layout, key classes, nonce and
//! replay rules: `protocol/WIRE.md` §1.
//!
//! - [`ClusterAuth`]: the keys an endpoint holds (the client key always; the member key and
//!   the member ids only on nodes).
//! - [`seal`] with a [`Sealer`] (one per class, sender and incarnation).
//! - [`open`]: stateless (derives the subkey each time; tests, fuzzing, tools).
//! - [`ReplayGuard`]: the receiver's opener: subkeys cached per sender, and the replay
//!   window.

use crate::error::ProtocolError;
use crate::limits::{DATAGRAM_BYTES_MAX, FRAGMENTS_PER_MESSAGE_MAX, FRAGMENT_PAYLOAD_BYTES_MAX};
use crate::message::MessageKind;
use crate::{Incarnation, SenderId};
use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_256_GCM};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// "SHOL".
pub const MAGIC: u32 = 0x5348_4F4C;
/// The one wire version this build speaks. A node refuses any other (see WIRE.md).
/// Version 2: `UpdateNotice.prev` (the notice chain). Version 3: key classes, AES-256-GCM,
/// the nonce counter, 64-bit incarnations.
pub const VERSION: u8 = 3;
pub const HEADER_BYTES: usize = 56;
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

/// Which key sealed a datagram (header byte 12).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyClass {
    /// The client key (the cluster file's): requests from clients, and what nodes send to
    /// clients (replies, the notice stream, FSLive). Every client holds it.
    Client = 1,
    /// The member key, held by the nodes only: everything nodes send each other.
    Member = 2,
}

impl KeyClass {
    pub fn from_byte(b: u8) -> Option<KeyClass> {
        match b {
            1 => Some(KeyClass::Client),
            2 => Some(KeyClass::Member),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KeyClass::Client => "client",
            KeyClass::Member => "member",
        }
    }

    /// The class a node sends a message of `kind` under when it is not a reply (a reply
    /// takes its request's class): what clients read (the notice stream, FSLive, lock
    /// changes, freezes, and the reply kinds) goes under the client key, everything else
    /// (election, replication, catch-up, transfer, the messaging layer's reports) under the
    /// member key.
    pub fn for_node_kind(kind: u8) -> KeyClass {
        match MessageKind::from_byte(kind) {
            Ok(
                MessageKind::ReadReply
                | MessageKind::WriteReply
                | MessageKind::UpdateNotice
                | MessageKind::LockReply
                | MessageKind::LockChanged
                | MessageKind::Freeze
                | MessageKind::FsLive,
            ) => KeyClass::Client,
            _ => KeyClass::Member,
        }
    }

    /// Whether a member ever sends a datagram of `kind` under the client key: the kinds of
    /// [`KeyClass::for_node_kind`]'s client class, and the status of its client stream.
    pub fn member_sends_under_client_key(kind: u8) -> bool {
        KeyClass::for_node_kind(kind) == KeyClass::Client || kind == MessageKind::SenderStatus as u8
    }

    /// Whether a node accepts a datagram of `kind` from a client (under the client key):
    /// requests, updates, renames, lock and session commands, backup, and the messaging
    /// layer's reports about the node's client stream. Never a reliable datagram (a node
    /// takes no client's stream).
    pub fn node_accepts_from_client(kind: u8, flags: u16) -> bool {
        if flags & self::flags::RELIABLE != 0 {
            return false;
        }
        matches!(
            MessageKind::from_byte(kind),
            Ok(MessageKind::Request
                | MessageKind::Update
                | MessageKind::Rename
                | MessageKind::Lock
                | MessageKind::Backup
                | MessageKind::Nak
                | MessageKind::Stability
                | MessageKind::SenderStatus)
        )
    }
}

/// The fixed header of every datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub version: u8,
    /// [`crate::message::MessageKind`] as a byte.
    pub kind: u8,
    pub flags: u16,
    pub cluster_id: u32,
    /// The key class that sealed it.
    pub class: KeyClass,
    pub sender: SenderId,
    /// Bumped on every start of the sender (never repeated for one sender id: see WIRE.md),
    /// so receivers can tell a restart from a replay; with `sender` it selects the subkey.
    pub incarnation: Incarnation,
    /// The AEAD nonce: unique per datagram sealed by this process (see [`next_counter`]).
    /// [`seal`] sets it; the value in a header passed to `seal` is ignored.
    pub counter: u64,
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

/// Shortest key accepted at start-up (client and member keys alike): 128 bits.
pub const CLUSTER_KEY_BYTES_MIN: usize = 16;

/// The key held by a key file: its bytes, minus trailing ASCII whitespace (so a key written by
/// `echo` or an editor's final newline is the same key). Every program that reads a key file
/// (`shoal-fs`, `cache-client`) must use this, so that they agree byte for byte.
pub fn cluster_key_from_file_contents(contents: &[u8]) -> &[u8] {
    let end = contents.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(0, |i| i + 1);
    &contents[..end]
}

/// The next nonce counter of this process. One counter for every datagram any endpoint of
/// the process seals, whatever its key, sender or incarnation: two endpoints that share a
/// sender id and incarnation (a node's main and transfer endpoints) can never seal two
/// datagrams with one nonce, and a retransmission is sealed anew with a fresh one. 64 bits
/// never wrap (at 10^9 datagrams a second, 584 years).
pub fn next_counter() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A fresh incarnation for a start of a sender: the wall clock in milliseconds shifted left
/// 16 bits, plus 16 random bits, and above `floor` (the last one used, when the caller
/// persisted it). Increasing across restarts while the clock moves forward; two starts of one
/// sender id in one millisecond collide only if their 16 random bits do (1 in 65 536), and a
/// persisted floor rules out even that (WIRE.md §1.3).
pub fn fresh_incarnation(floor: Incarnation) -> Incarnation {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let random = u64::from(rand::random::<u16>());
    ((millis << 16) | random).max(floor.saturating_add(1))
}

/// Salt of the subkey derivation (fixed; the version is in it so that a later layout gets
/// other subkeys).
const HKDF_SALT: &[u8] = b"shoal wire v3 subkey";

/// The AES-256-GCM subkey of `(class, cluster, sender, incarnation)` under `key`.
fn subkey(
    key: &[u8],
    class: KeyClass,
    cluster_id: u32,
    sender: SenderId,
    inc: Incarnation,
) -> Cipher {
    let mut info = [0u8; 21];
    info[0] = class as u8;
    info[1..5].copy_from_slice(&cluster_id.to_be_bytes());
    info[5..13].copy_from_slice(&sender.to_be_bytes());
    info[13..21].copy_from_slice(&inc.to_be_bytes());
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(HKDF_SALT), key);
    let mut okm = [0u8; 32];
    hk.expand(&info, &mut okm).expect("32 bytes is a valid HKDF-SHA256 output length");
    Cipher(LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, &okm).expect("32 bytes is an AES-256 key"),
    ))
}

/// An AES-256-GCM subkey. The implementation is `ring`'s (BoringSSL's stitched AES-NI/VAES +
/// CLMUL code), about six times faster on this hardware than a separate AES-CTR and GHASH
/// pass; the bytes on the wire are standard AES-256-GCM either way (the golden datagram test
/// pins them).
struct Cipher(LessSafeKey);

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

/// The keys of an endpoint: the cluster id, the client key, and on nodes the member key and
/// the member ids (the senders whose member-key datagrams are accepted).
#[derive(Clone)]
pub struct ClusterAuth {
    pub cluster_id: u32,
    client: Arc<[u8]>,
    member: Option<Arc<[u8]>>,
    members: Arc<[SenderId]>,
}

impl std::fmt::Debug for ClusterAuth {
    // Never print a key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterAuth")
            .field("cluster_id", &self.cluster_id)
            .field("member_key", &self.member.is_some())
            .field("members", &self.members)
            .finish_non_exhaustive()
    }
}

impl ClusterAuth {
    /// What a client holds: the cluster id and the client key.
    pub fn new(cluster_id: u32, client_key: &[u8]) -> ClusterAuth {
        ClusterAuth { cluster_id, client: client_key.into(), member: None, members: Arc::new([]) }
    }

    /// What a node holds besides: the member key, and the member ids.
    pub fn with_member_key(
        mut self,
        member_key: &[u8],
        members: impl IntoIterator<Item = SenderId>,
    ) -> ClusterAuth {
        let mut ids: Vec<SenderId> = members.into_iter().collect();
        ids.sort_unstable();
        ids.dedup();
        self.member = Some(member_key.into());
        self.members = ids.into();
        self
    }

    /// Whether this endpoint holds the member key (it is a node).
    pub fn is_member(&self) -> bool {
        self.member.is_some()
    }

    /// Whether `id` is one of the member ids (always false without the member key).
    pub fn is_member_id(&self, id: SenderId) -> bool {
        self.member.is_some() && self.members.binary_search(&id).is_ok()
    }

    pub fn member_ids(&self) -> &[SenderId] {
        &self.members
    }

    fn key(&self, class: KeyClass) -> Option<&[u8]> {
        match class {
            KeyClass::Client => Some(&self.client),
            KeyClass::Member => self.member.as_deref(),
        }
    }

    /// The class this endpoint sends a non-reply message of `kind` under: a node by
    /// [`KeyClass::for_node_kind`], a client always under the client key.
    pub fn class_for_kind(&self, kind: u8) -> KeyClass {
        if self.is_member() {
            KeyClass::for_node_kind(kind)
        } else {
            KeyClass::Client
        }
    }

    /// The class of the streams this endpoint receives and reports on: the member streams
    /// on a node, the nodes' client streams on a client.
    pub fn receive_class(&self) -> KeyClass {
        if self.is_member() {
            KeyClass::Member
        } else {
            KeyClass::Client
        }
    }

    /// A sealer for `class` as `sender` in `incarnation`; None without that class's key.
    pub fn sealer(
        &self,
        class: KeyClass,
        sender: SenderId,
        incarnation: Incarnation,
    ) -> Option<Sealer> {
        let key = self.key(class)?;
        Some(Sealer {
            cluster_id: self.cluster_id,
            class,
            sender,
            incarnation,
            cipher: Arc::new(subkey(key, class, self.cluster_id, sender, incarnation)),
        })
    }

    /// The sealers of both classes this endpoint has keys for.
    pub fn sealers(&self, sender: SenderId, incarnation: Incarnation) -> Sealers {
        Sealers {
            client: self.sealer(KeyClass::Client, sender, incarnation).expect("client key"),
            member: self.sealer(KeyClass::Member, sender, incarnation),
            auth: self.clone(),
        }
    }
}

/// Seals as one sender in one incarnation under one class.
#[derive(Clone)]
pub struct Sealer {
    pub cluster_id: u32,
    pub class: KeyClass,
    pub sender: SenderId,
    pub incarnation: Incarnation,
    cipher: Arc<Cipher>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("class", &self.class)
            .field("sender", &self.sender)
            .field("incarnation", &self.incarnation)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// A header for this sealer with the given fields (counter 0: [`seal`] sets it).
    pub fn header(&self, kind: u8, flags: u16, seq: u64, frag: (u16, u16), len: usize) -> Header {
        Header {
            version: VERSION,
            kind,
            flags,
            cluster_id: self.cluster_id,
            class: self.class,
            sender: self.sender,
            incarnation: self.incarnation,
            counter: 0,
            seq,
            frag_index: frag.0,
            frag_count: frag.1,
            payload_len: len as u32,
        }
    }
}

/// An endpoint's sealers: the client one always, the member one on nodes.
#[derive(Clone, Debug)]
pub struct Sealers {
    pub client: Sealer,
    pub member: Option<Sealer>,
    pub auth: ClusterAuth,
}

impl Sealers {
    pub fn get(&self, class: KeyClass) -> Option<&Sealer> {
        match class {
            KeyClass::Client => Some(&self.client),
            KeyClass::Member => self.member.as_ref(),
        }
    }

    /// The sealer of a non-reply message of `kind` ([`ClusterAuth::class_for_kind`]).
    pub fn for_kind(&self, kind: u8) -> &Sealer {
        self.get(self.auth.class_for_kind(kind)).expect("class_for_kind picks a held key")
    }

    /// The sealer of the reports this endpoint sends about the streams it receives.
    pub fn for_receiving(&self) -> &Sealer {
        self.get(self.auth.receive_class()).expect("receive_class picks a held key")
    }
}

impl Header {
    pub fn encode(&self, out: &mut [u8; HEADER_BYTES]) {
        out[0..4].copy_from_slice(&MAGIC.to_be_bytes());
        out[4] = self.version;
        out[5] = self.kind;
        out[6..8].copy_from_slice(&self.flags.to_be_bytes());
        out[8..12].copy_from_slice(&self.cluster_id.to_be_bytes());
        out[12] = self.class as u8;
        out[13..16].fill(0);
        out[16..24].copy_from_slice(&self.sender.to_be_bytes());
        out[24..32].copy_from_slice(&self.incarnation.to_be_bytes());
        out[32..40].copy_from_slice(&self.counter.to_be_bytes());
        out[40..48].copy_from_slice(&self.seq.to_be_bytes());
        out[48..50].copy_from_slice(&self.frag_index.to_be_bytes());
        out[50..52].copy_from_slice(&self.frag_count.to_be_bytes());
        out[52..56].copy_from_slice(&self.payload_len.to_be_bytes());
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
        if bytes[4] != VERSION {
            return Err(ProtocolError::UnsupportedVersion { found: bytes[4], supported: VERSION });
        }
        let class = KeyClass::from_byte(bytes[12]).ok_or_else(|| ProtocolError::Malformed {
            what: "header",
            detail: format!("unknown key class {}", bytes[12]),
        })?;
        if bytes[13..16] != [0, 0, 0] {
            return Err(ProtocolError::Malformed {
                what: "header",
                detail: "reserved bytes 13..16 are not zero".into(),
            });
        }
        let header = Header {
            version: bytes[4],
            kind: bytes[5],
            flags: u16_at(6),
            cluster_id: u32_at(8),
            class,
            sender: u64_at(16),
            incarnation: u64_at(24),
            counter: u64_at(32),
            seq: u64_at(40),
            frag_index: u16_at(48),
            frag_count: u16_at(50),
            payload_len: u32_at(52),
        };
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

/// Builds a whole datagram into `out` (cleared first): header with a fresh counter, the
/// payload encrypted, tag. Returns the counter used.
///
/// Refuses a payload over [`FRAGMENT_PAYLOAD_BYTES_MAX`]. A header whose `payload_len`,
/// `cluster_id`, `class`, `sender` or `incarnation` disagrees with `payload` or `sealer` is a
/// bug in the caller and panics.
pub fn seal(
    sealer: &Sealer,
    header: &Header,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<u64, ProtocolError> {
    let counter = next_counter();
    seal_with_counter(sealer, header, payload, out, counter)?;
    Ok(counter)
}

/// [`seal`] with a counter of the caller's choice: for golden bytes in tests and documents
/// only. Two datagrams sealed with one counter under one sealer reveal the XOR of their
/// payloads and let anyone forge tags; the product seals only through [`seal`].
pub fn seal_with_counter(
    sealer: &Sealer,
    header: &Header,
    payload: &[u8],
    out: &mut Vec<u8>,
    counter: u64,
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
    assert_eq!(header.cluster_id, sealer.cluster_id, "header.cluster_id is not ours");
    assert_eq!(
        (header.class, header.sender, header.incarnation),
        (sealer.class, sealer.sender, sealer.incarnation),
        "the header names another class, sender or incarnation than its sealer"
    );
    let mut head = [0u8; HEADER_BYTES];
    Header { counter, ..*header }.encode(&mut head);
    out.clear();
    out.reserve(total);
    out.extend_from_slice(&head);
    out.extend_from_slice(payload);
    let (aad, body) = out.split_at_mut(HEADER_BYTES);
    let tag = sealer
        .cipher
        .0
        .seal_in_place_separate_tag(nonce(counter), Aad::from(&*aad), body)
        .expect("AES-GCM seals any payload under 64 GiB");
    out.extend_from_slice(tag.as_ref());
    Ok(())
}

/// The checks before any cryptography: length, header fields, cluster. Returns the header.
fn check_frame(cluster_id: u32, datagram: &[u8]) -> Result<Header, ProtocolError> {
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
    if header.cluster_id != cluster_id {
        return Err(ProtocolError::WrongCluster { found: header.cluster_id, expected: cluster_id });
    }
    Ok(header)
}

/// Decrypts `datagram`'s payload into `out` (cleared first) under `cipher`; `BadMac` when the
/// tag does not verify (wrong key, tampering), and then `out` holds nothing.
fn decrypt(
    cipher: &Cipher,
    header: &Header,
    datagram: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), ProtocolError> {
    let (aad, rest) = datagram.split_at(HEADER_BYTES);
    let (body, tag) = rest.split_at(rest.len() - TAG_BYTES);
    out.clear();
    out.extend_from_slice(body);
    let tag = Tag::try_from(tag).expect("split at TAG_BYTES");
    match cipher.0.open_in_place_separate_tag(nonce(header.counter), Aad::from(aad), tag, out, 0..)
    {
        Ok(_) => Ok(()),
        Err(_) => {
            out.clear();
            Err(ProtocolError::BadMac)
        }
    }
}

/// Checks a whole datagram (lengths, cluster, key class held, tag) and returns its header and
/// decrypted payload. Stateless: it derives the subkey every time and keeps no replay state
/// (see [`ReplayGuard`] for the receiver's path). Cheap checks come first, so that junk
/// costs no cryptography. A datagram shorter than its header says is `Incomplete`
/// (truncated); a longer one is `Malformed`; one of a class whose key `auth` lacks is
/// `WrongClass`.
pub fn open(auth: &ClusterAuth, datagram: &[u8]) -> Result<(Header, Vec<u8>), ProtocolError> {
    let header = check_frame(auth.cluster_id, datagram)?;
    let key = auth.key(header.class).ok_or_else(|| ProtocolError::WrongClass {
        class: header.class.name(),
        sender: header.sender,
        detail: "this endpoint holds no key of that class".into(),
    })?;
    let cipher = subkey(key, header.class, auth.cluster_id, header.sender, header.incarnation);
    let mut payload = Vec::new();
    decrypt(&cipher, &header, datagram, &mut payload)?;
    Ok((header, payload))
}

/// Counters a receiver keeps per sender: how far back it remembers.
pub const REPLAY_WINDOW: u64 = 4096;
const WINDOW_WORDS: usize = (REPLAY_WINDOW / 64) as usize;

/// What the receiver remembers of one sender under one class: its newest incarnation, that
/// incarnation's subkey, and which counters of it arrived (a sliding bitmap ending at `top`).
struct PeerState {
    incarnation: Incarnation,
    cipher: Cipher,
    /// The highest counter accepted; `bits` covers `(top - REPLAY_WINDOW, top]`.
    top: u64,
    bits: [u64; WINDOW_WORDS],
    /// For eviction: the guard's clock when last used.
    used: u64,
}

impl PeerState {
    fn new(incarnation: Incarnation, cipher: Cipher) -> PeerState {
        PeerState { incarnation, cipher, top: 0, bits: [0; WINDOW_WORDS], used: 0 }
    }

    fn bit(counter: u64) -> (usize, u64) {
        let i = counter % REPLAY_WINDOW;
        ((i / 64) as usize, 1 << (i % 64))
    }

    /// Whether `counter` is new: above the window's floor and not seen yet.
    fn fresh(&self, counter: u64) -> bool {
        if counter > self.top {
            return true;
        }
        if counter + REPLAY_WINDOW <= self.top {
            return false;
        }
        let (w, b) = PeerState::bit(counter);
        self.bits[w] & b == 0
    }

    /// Records `counter` (which [`Self::fresh`] said was new).
    fn mark(&mut self, counter: u64) {
        if counter > self.top {
            let shift = counter - self.top;
            if shift >= REPLAY_WINDOW {
                self.bits = [0; WINDOW_WORDS];
            } else {
                for c in self.top + 1..counter {
                    let (w, b) = PeerState::bit(c);
                    self.bits[w] &= !b;
                }
            }
            self.top = counter;
        }
        let (w, b) = PeerState::bit(counter);
        self.bits[w] |= b;
    }
}

/// The receiver's opener: the subkeys of the senders it hears, cached, and the replay rule.
///
/// A datagram is refused as a replay (`ProtocolError::Replay`) when its `(sender, incarnation,
/// counter)` was accepted before, when its counter is [`REPLAY_WINDOW`] or more below the
/// highest accepted from that sender's incarnation, or when its incarnation is older than the
/// newest accepted from that sender. State is kept per class: member senders (only member ids
/// are ever admitted, so at most seven, never evicted) apart from client senders (at most
/// `senders_max`, the least recently heard evicted first: a client's datagram captured before
/// its state was evicted would be taken again; see WIRE.md §1.3). State changes only after
/// the tag verified, so forgeries cannot move a window.
pub struct ReplayGuard {
    auth: ClusterAuth,
    members: HashMap<SenderId, PeerState>,
    clients: HashMap<SenderId, PeerState>,
    senders_max: usize,
    clock: u64,
    /// Client states evicted to stay within `senders_max`.
    pub evicted: u64,
}

impl std::fmt::Debug for ReplayGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayGuard")
            .field("members", &self.members.len())
            .field("clients", &self.clients.len())
            .finish_non_exhaustive()
    }
}

impl ReplayGuard {
    pub fn new(auth: ClusterAuth, senders_max: usize) -> ReplayGuard {
        ReplayGuard {
            auth,
            members: HashMap::new(),
            clients: HashMap::new(),
            senders_max: senders_max.max(1),
            clock: 0,
            evicted: 0,
        }
    }

    pub fn auth(&self) -> &ClusterAuth {
        &self.auth
    }

    /// Senders remembered, member and client.
    pub fn senders(&self) -> usize {
        self.members.len() + self.clients.len()
    }

    /// Opens `datagram` (see [`open`] for the checks) into `payload`, and refuses replays.
    pub fn open(
        &mut self,
        datagram: &[u8],
        payload: &mut Vec<u8>,
    ) -> Result<Header, ProtocolError> {
        let header = check_frame(self.auth.cluster_id, datagram)?;
        let Some(key) = self.auth.key(header.class) else {
            return Err(ProtocolError::WrongClass {
                class: header.class.name(),
                sender: header.sender,
                detail: "this endpoint holds no key of that class".into(),
            });
        };
        let replay = |why: &str| ProtocolError::Replay {
            sender: header.sender,
            incarnation: header.incarnation,
            counter: header.counter,
            detail: why.to_string(),
        };
        self.clock += 1;
        let table =
            if header.class == KeyClass::Member { &mut self.members } else { &mut self.clients };
        match table.get_mut(&header.sender) {
            Some(state) if state.incarnation == header.incarnation => {
                if !state.fresh(header.counter) {
                    return Err(replay(if header.counter + REPLAY_WINDOW <= state.top {
                        "below the replay window"
                    } else {
                        "already received"
                    }));
                }
                decrypt(&state.cipher, &header, datagram, payload)?;
                state.mark(header.counter);
                state.used = self.clock;
                return Ok(header);
            }
            Some(state) if state.incarnation > header.incarnation => {
                return Err(replay("an older incarnation than the newest heard"));
            }
            _ => {}
        }
        // A sender (or incarnation) not heard before: derive its subkey, and keep it only if
        // the datagram is authentic.
        let cipher =
            subkey(key, header.class, self.auth.cluster_id, header.sender, header.incarnation);
        decrypt(&cipher, &header, datagram, payload)?;
        let mut state = PeerState::new(header.incarnation, cipher);
        state.mark(header.counter);
        state.used = self.clock;
        if header.class == KeyClass::Client
            && !self.clients.contains_key(&header.sender)
            && self.clients.len() >= self.senders_max
        {
            if let Some(oldest) = self.clients.iter().min_by_key(|(_, s)| s.used).map(|(k, _)| *k) {
                self.clients.remove(&oldest);
                self.evicted += 1;
            }
        }
        let table =
            if header.class == KeyClass::Member { &mut self.members } else { &mut self.clients };
        table.insert(header.sender, state);
        Ok(header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMBER_KEY: &[u8] = b"member key of at least 16 bytes";

    fn node_auth() -> ClusterAuth {
        ClusterAuth::new(0xC0FFEE, b"secret").with_member_key(MEMBER_KEY, [1, 2, 3])
    }

    fn sealed(
        auth: &ClusterAuth,
        class: KeyClass,
        sender: SenderId,
        inc: u64,
        payload: &[u8],
    ) -> Vec<u8> {
        let sealer = auth.sealer(class, sender, inc).expect("key held");
        let header = sealer.header(3, flags::RELIABLE, 99, (0, 1), payload.len());
        let mut out = Vec::new();
        seal(&sealer, &header, payload, &mut out).unwrap();
        out
    }

    /// A key file's trailing newline or spaces are not part of the key; inner bytes are.
    #[test]
    fn key_file_contents_trim_trailing_whitespace_only() {
        assert_eq!(cluster_key_from_file_contents(b"abc def\n\r\n "), b"abc def");
        assert_eq!(cluster_key_from_file_contents(b" \tkey"), b" \tkey");
        assert_eq!(cluster_key_from_file_contents(b"\n\n"), b"");
    }

    /// A sealed datagram opens to the same header and payload under the same keys, carries
    /// no plaintext, and is refused under another key or with any byte flipped.
    #[test]
    fn seal_open_round_trip_and_tamper() {
        let auth = node_auth();
        for class in [KeyClass::Client, KeyClass::Member] {
            let dgram = sealed(&auth, class, 2, 5, b"hello world, hello");
            let (h, p) = open(&auth, &dgram).unwrap();
            assert_eq!((h.class, h.sender, h.incarnation, h.seq), (class, 2, 5, 99));
            assert_eq!(p, b"hello world, hello");
            assert!(
                !dgram.windows(5).any(|w| w == b"hello"),
                "the payload travels in clear under the {class:?} key"
            );
            let other = ClusterAuth::new(0xC0FFEE, b"other").with_member_key(b"other member", [2]);
            assert_eq!(open(&other, &dgram).unwrap_err(), ProtocolError::BadMac);
            for i in 0..dgram.len() {
                let mut bad = dgram.clone();
                bad[i] ^= 0x01;
                assert!(open(&auth, &bad).is_err(), "flipped byte {i} accepted");
            }
        }
    }

    /// A client holds no member key: a member datagram is `WrongClass` to it, and a member
    /// datagram sealed with the client key (a client guessing) does not verify at a node.
    #[test]
    fn a_client_key_opens_no_member_datagram() {
        let client = ClusterAuth::new(0xC0FFEE, b"secret");
        let dgram = sealed(&node_auth(), KeyClass::Member, 2, 5, b"vote");
        assert!(matches!(open(&client, &dgram), Err(ProtocolError::WrongClass { .. })));
        let guess = ClusterAuth::new(0xC0FFEE, b"secret").with_member_key(b"secret", [2]);
        let forged = sealed(&guess, KeyClass::Member, 2, 5, b"vote");
        assert_eq!(open(&node_auth(), &forged).unwrap_err(), ProtocolError::BadMac);
    }

    /// Every datagram gets its own counter; a retransmission sealed again differs.
    #[test]
    fn counters_never_repeat() {
        let auth = node_auth();
        let a = sealed(&auth, KeyClass::Client, 2, 5, b"same");
        let b = sealed(&auth, KeyClass::Client, 2, 5, b"same");
        let (ha, _) = open(&auth, &a).unwrap();
        let (hb, _) = open(&auth, &b).unwrap();
        assert!(hb.counter > ha.counter);
        assert_ne!(a[HEADER_BYTES..], b[HEADER_BYTES..]);
    }

    /// The replay rule: a datagram accepted once is refused again; counters out of order
    /// within the window pass; below the window, or of an older incarnation, refused; a
    /// forgery moves nothing.
    #[test]
    fn replay_guard_refuses_repeats_old_counters_and_old_incarnations() {
        let auth = node_auth();
        let mut guard = ReplayGuard::new(auth.clone(), 16);
        let mut payload = Vec::new();
        let first = sealed(&auth, KeyClass::Member, 2, 5, b"one");
        let second = sealed(&auth, KeyClass::Member, 2, 5, b"two");
        guard.open(&second, &mut payload).unwrap();
        guard.open(&first, &mut payload).unwrap();
        assert_eq!(payload, b"one");
        for again in [&first, &second] {
            assert!(matches!(guard.open(again, &mut payload), Err(ProtocolError::Replay { .. })));
        }
        // Far ahead: the first ones fall below the window.
        let old = sealed(&auth, KeyClass::Member, 2, 5, b"old");
        for _ in 0..REPLAY_WINDOW {
            next_counter();
        }
        guard.open(&sealed(&auth, KeyClass::Member, 2, 5, b"new"), &mut payload).unwrap();
        assert!(matches!(guard.open(&old, &mut payload), Err(ProtocolError::Replay { .. })));
        // A restart: the new incarnation is taken, the old one is refused from then on.
        guard.open(&sealed(&auth, KeyClass::Member, 2, 6, b"restarted"), &mut payload).unwrap();
        let stale = sealed(&auth, KeyClass::Member, 2, 5, b"stale");
        assert!(matches!(guard.open(&stale, &mut payload), Err(ProtocolError::Replay { .. })));
        // A forgery with a huge counter is refused by its tag and moves no window.
        let mut forged = sealed(&auth, KeyClass::Member, 2, 6, b"forged");
        forged[32..40].copy_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(guard.open(&forged, &mut payload).unwrap_err(), ProtocolError::BadMac);
        guard.open(&sealed(&auth, KeyClass::Member, 2, 6, b"after"), &mut payload).unwrap();
    }

    /// Client states are bounded; member states never evicted by client traffic.
    #[test]
    fn replay_guard_is_bounded_per_class() {
        let auth = node_auth();
        let mut guard = ReplayGuard::new(auth.clone(), 4);
        let mut payload = Vec::new();
        guard.open(&sealed(&auth, KeyClass::Member, 2, 1, b"m"), &mut payload).unwrap();
        for id in 0..100u64 {
            let d = sealed(&auth, KeyClass::Client, (1 << 32) + id, 1, b"c");
            guard.open(&d, &mut payload).unwrap();
        }
        assert_eq!(guard.senders(), 5);
        assert_eq!(guard.evicted, 96);
        assert!(guard.members.contains_key(&2));
    }

    /// Fresh incarnations increase and sit above a floor.
    #[test]
    fn fresh_incarnations_increase_above_the_floor() {
        let a = fresh_incarnation(0);
        assert!(a > 1 << 56, "millis << 16 is far above 2^56 today");
        assert_eq!(fresh_incarnation(u64::MAX - 1), u64::MAX);
        assert!(fresh_incarnation(a) > a);
    }
}
