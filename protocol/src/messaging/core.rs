//! The IO-free core of one endpoint: the sending stream, all receiving windows, and the
//! classification of incoming datagrams. The socket driver feeds it bytes and `now_ms` and
//! puts on the wire what [`Core::poll_transmit`] returns; tests drive it the same way with
//! scripted loss, reordering and duplication.

use super::receiver::{ReceiverConfig, ReceiverSet, ReceiverStats};
use super::sender::{SenderConfig, SenderCore, SenderStats};
use super::{Delivery, SendError, Transmit};
use crate::error::ProtocolError;
use crate::header::{flags, ClusterAuth, Header, KeyClass, ReplayGuard, Sealers};
use crate::message::Message;
use crate::{Incarnation, SenderId};
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};

/// Most fragmented requests/replies reassembled at once.
pub const PARTIALS_MAX: usize = 256;
/// Most bytes held by partial requests/replies (the oldest goes first beyond it).
pub const PARTIAL_BYTES_MAX: usize = 256 * 1024 * 1024;
/// A partial request/reply not completed within this long is dropped (its requester has
/// given up or will retry with all fragments anyway).
pub const PARTIAL_AGE_MAX_MS: u64 = 30_000;

/// A fragmented best-effort message being reassembled.
#[derive(Debug)]
struct Partial {
    kind: u8,
    parts: Vec<Option<Bytes>>,
    have: usize,
    bytes: usize,
    started_ms: u64,
}

/// Configuration of the core.
#[derive(Clone, Debug, Default)]
pub struct CoreConfig {
    /// Ids whose stability reports grant credit (the FS nodes). If this endpoint's own id is
    /// among them, it reports stability to every sender it hears.
    pub members: Vec<SenderId>,
    pub sender: SenderConfig,
    pub receiver: ReceiverConfig,
    /// Most best-effort messages waiting for the application; more are dropped and counted
    /// (they are best-effort by definition; requests are retried by their sender).
    pub unreliable_queue_max: usize,
}

impl CoreConfig {
    pub fn with_members(members: Vec<SenderId>) -> CoreConfig {
        CoreConfig { members, unreliable_queue_max: 65_536, ..CoreConfig::default() }
    }
}

/// A best-effort message (request, reply, FSLive, ...) as the core hands it over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unreliable {
    pub sender: SenderId,
    /// The request id (header `seq`); 0 when the datagram is not a request or reply.
    pub request_id: u64,
    /// Whether this is a reply (header `REPLY` flag) to our request `request_id`.
    pub is_reply: bool,
    /// The key class it came under: a reply to it goes under the same.
    pub class: KeyClass,
    pub message: Message,
}

/// Counters of the whole core.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CoreStats {
    pub sender: SenderStats,
    pub receiver: ReceiverStats,
    /// Datagrams refused by `open` (bad tag, wrong cluster, malformed header, wrong key
    /// class, replay) or undecodable.
    pub datagrams_rejected: u64,
    /// Our own multicast, looped back.
    pub own_datagrams: u64,
    /// On a node: client-key datagrams naming a member as sender, set aside unopened. They
    /// are the other nodes' traffic to clients (notices, FSLive, lock changes) that the
    /// group delivers to nodes too, or a client's forgery of a member; a node takes neither.
    pub skipped_for_clients: u64,
    /// On a client: member-key datagrams (the nodes' traffic among themselves on the group),
    /// set aside unopened: a client holds no member key.
    pub skipped_member: u64,
    /// The sending stats of a node's second stream, the one to clients (client key).
    pub client_stream: SenderStats,
    pub unreliable_received: u64,
    pub unreliable_dropped: u64,
}

/// One endpoint's protocol state. See the module docs.
#[derive(Debug)]
pub struct Core {
    id: SenderId,
    auth: ClusterAuth,
    sealers: Sealers,
    /// The endpoint's reliable stream: on a node the member stream (member key, credit from
    /// the members), on a client its only one (client key).
    sender: SenderCore,
    /// On a node, its stream to clients (client key: notices, lock changes, freezes), which
    /// no one grants credit for (clients are repaired best-effort, as ever).
    client_stream: Option<SenderCore>,
    receivers: ReceiverSet,
    guard: ReplayGuard,
    /// Decrypted payload of the datagram being handled.
    scratch: Vec<u8>,
    unreliable: VecDeque<Unreliable>,
    replies: VecDeque<Unreliable>,
    unreliable_queue_max: usize,
    /// Fragmented requests/replies being reassembled, by (sender, request id, is reply).
    partials: HashMap<(SenderId, u64, bool), Partial>,
    partial_bytes: usize,
    stats: CoreStats,
    /// Alternates the two delivery queues so neither starves the other.
    prefer_unreliable: bool,
}

impl Core {
    pub fn new(
        id: SenderId,
        incarnation: Incarnation,
        auth: ClusterAuth,
        mut config: CoreConfig,
        now_ms: u64,
    ) -> Core {
        config.receiver.report_stability = config.members.contains(&id);
        if config.unreliable_queue_max == 0 {
            config.unreliable_queue_max = 65_536;
        }
        let sealers = auth.sealers(id, incarnation);
        let main = sealers.for_receiving().clone();
        let client_stream = sealers
            .member
            .as_ref()
            .map(|_| SenderCore::new(sealers.client.clone(), &[], config.sender.clone(), now_ms));
        Core {
            id,
            sender: SenderCore::new(main, &config.members, config.sender, now_ms),
            client_stream,
            receivers: ReceiverSet::new(sealers.for_receiving().clone(), config.receiver.clone()),
            guard: ReplayGuard::new(auth.clone(), config.receiver.senders_max),
            scratch: Vec::new(),
            sealers,
            auth,
            unreliable: VecDeque::new(),
            replies: VecDeque::new(),
            partials: HashMap::new(),
            partial_bytes: 0,
            unreliable_queue_max: config.unreliable_queue_max,
            stats: CoreStats::default(),
            prefer_unreliable: false,
        }
    }

    pub fn id(&self) -> SenderId {
        self.id
    }

    pub fn auth(&self) -> &ClusterAuth {
        &self.auth
    }

    /// The sealers of this endpoint (one per key class it holds).
    pub fn sealers(&self) -> &Sealers {
        &self.sealers
    }

    /// The endpoint's main reliable stream (see [`Core`]'s fields).
    pub fn sender(&self) -> &SenderCore {
        &self.sender
    }

    /// A node's stream to clients.
    pub fn client_stream(&self) -> Option<&SenderCore> {
        self.client_stream.as_ref()
    }

    /// The stream a message of `kind` goes on ([`ClusterAuth::class_for_kind`]).
    fn stream_for(&mut self, kind: u8) -> &mut SenderCore {
        match (&mut self.client_stream, self.auth.class_for_kind(kind)) {
            (Some(stream), KeyClass::Client) => stream,
            _ => &mut self.sender,
        }
    }

    /// The stream a report under `class` is about.
    fn stream_of_class(&mut self, class: KeyClass) -> Option<&mut SenderCore> {
        if class == self.auth.receive_class() {
            Some(&mut self.sender)
        } else {
            self.client_stream.as_mut()
        }
    }

    pub fn receivers(&self) -> &ReceiverSet {
        &self.receivers
    }

    pub fn stats(&self) -> CoreStats {
        CoreStats {
            sender: self.sender.stats(),
            receiver: self.receivers.stats(),
            client_stream: self.client_stream.as_ref().map(|s| s.stats()).unwrap_or_default(),
            ..self.stats
        }
    }

    /// Queues a message on this endpoint's reliable stream (see [`SenderCore::try_send`]).
    pub fn try_send(&mut self, message: &Message, now_ms: u64) -> Result<(), SendError> {
        self.stream_for(message.kind() as u8).try_send(message, now_ms)
    }

    /// [`Core::try_send`] with the payload already encoded.
    pub fn try_send_encoded(
        &mut self,
        kind: u8,
        payload: &[u8],
        now_ms: u64,
    ) -> Result<(), SendError> {
        self.stream_for(kind).try_send_encoded(kind, payload, now_ms)
    }

    /// Authenticates and dispatches one datagram. Returns its header when it was accepted
    /// (None: our own looped back, or set aside unopened as not for this endpoint).
    /// Errors are operating errors (bad packets happen): the caller counts them and goes on.
    ///
    /// The key-class rules (WIRE.md §1.3), before any cryptography: a node takes member-key
    /// datagrams only from member ids; client-key datagrams naming a member it sets aside when
    /// their kind is one members send to clients (the group brings it the other nodes' traffic
    /// to clients) and refuses otherwise; from anyone else it takes
    /// under the client key only what clients send ([`KeyClass::node_accepts_from_client`]).
    /// A client sets member-key datagrams aside and takes client-key ones.
    pub fn on_datagram(
        &mut self,
        datagram: &[u8],
        now_ms: u64,
    ) -> Result<Option<Header>, ProtocolError> {
        // Our own multicast comes back to our group socket (loopback is on so that several
        // nodes can share a host): recognise it from the cheap header parse and skip the AEAD.
        // A forged header claiming our id is dropped just the same, so this opens no hole.
        if let Ok(h) = Header::decode(datagram) {
            if h.sender == self.id {
                self.stats.own_datagrams += 1;
                return Ok(None);
            }
            if let Some(refusal) = self.class_rule(&h) {
                return match refusal {
                    Ok(()) => Ok(None),
                    Err(e) => {
                        self.stats.datagrams_rejected += 1;
                        Err(e)
                    }
                };
            }
        }
        let mut payload = std::mem::take(&mut self.scratch);
        let result = self.on_opened(datagram, &mut payload, now_ms);
        self.scratch = payload;
        if result.is_err() {
            self.stats.datagrams_rejected += 1;
        }
        result.map(Some)
    }

    /// The key-class rule for a datagram of header `h`: None to open it, Some(Ok) to set it
    /// aside unopened, Some(Err) to refuse it.
    fn class_rule(&mut self, h: &Header) -> Option<Result<(), ProtocolError>> {
        let refuse = |detail: String| {
            Some(Err(ProtocolError::WrongClass { class: h.class.name(), sender: h.sender, detail }))
        };
        if !self.auth.is_member() {
            if h.class == KeyClass::Member {
                self.stats.skipped_member += 1;
                return Some(Ok(()));
            }
            return None;
        }
        match h.class {
            KeyClass::Member if !self.auth.is_member_id(h.sender) => {
                refuse("the member key is taken from member ids only".into())
            }
            KeyClass::Member => None,
            // A member sends under the client key only what clients read (and its client
            // stream's status); a client-key datagram naming a member with any other kind
            // (a vote, a proposal, a transfer block) can only be a client's forgery.
            KeyClass::Client if self.auth.is_member_id(h.sender) => {
                if KeyClass::member_sends_under_client_key(h.kind) {
                    self.stats.skipped_for_clients += 1;
                    Some(Ok(()))
                } else {
                    refuse(format!("a member sends kind {} under the member key", h.kind))
                }
            }
            KeyClass::Client if !KeyClass::node_accepts_from_client(h.kind, h.flags) => {
                refuse(format!(
                    "kind {} {}is not what a client sends",
                    h.kind,
                    if h.flags & flags::RELIABLE != 0 { "on a reliable stream " } else { "" }
                ))
            }
            KeyClass::Client => None,
        }
    }

    /// Opens (tag, replay) and dispatches one datagram that passed the class rule.
    fn on_opened(
        &mut self,
        datagram: &[u8],
        payload: &mut Vec<u8>,
        now_ms: u64,
    ) -> Result<Header, ProtocolError> {
        let header = self.guard.open(datagram, payload)?;
        // Any authenticated datagram proves the sender is heard (its NAK rounds count).
        self.receivers.heard_from(header.sender, now_ms);
        if header.flags & flags::RELIABLE != 0 {
            if header.class != self.auth.receive_class() {
                // Only a client can get here (a node refuses client streams by the class
                // rule): a client takes the nodes' client streams; it holds no member key.
                return Err(ProtocolError::WrongClass {
                    class: header.class.name(),
                    sender: header.sender,
                    detail: "not the class of the streams this endpoint takes".into(),
                });
            }
            self.receivers.on_data(&header, payload, now_ms);
            return Ok(header);
        }
        let message = if header.frag_count > 1 {
            match self.reassemble(&header, payload, now_ms) {
                Some(bytes) => Message::decode_payload(header.kind, &bytes)?,
                None => return Ok(header),
            }
        } else {
            Message::decode_payload(header.kind, payload)?
        };
        match message {
            Message::Nak(nak) => {
                if let Some(stream) = self.stream_of_class(header.class) {
                    stream.on_nak(header.sender, &nak, now_ms);
                }
            }
            Message::Stability(report) => {
                if let Some(stream) = self.stream_of_class(header.class) {
                    stream.on_stability(header.sender, &report, now_ms);
                }
            }
            Message::SenderStatus(status) => {
                if header.class == self.auth.receive_class() {
                    self.receivers.on_status(header.sender, &status, now_ms);
                }
            }
            message => {
                self.stats.unreliable_received += 1;
                let is_reply = header.flags & flags::REPLY != 0;
                // Replies go to their own queue: the driver matches them to waiting requests
                // rather than handing them to the application.
                let queue = if is_reply { &mut self.replies } else { &mut self.unreliable };
                if queue.len() >= self.unreliable_queue_max {
                    self.stats.unreliable_dropped += 1;
                } else {
                    queue.push_back(Unreliable {
                        sender: header.sender,
                        request_id: header.seq,
                        is_reply,
                        class: header.class,
                        message,
                    });
                }
            }
        }
        Ok(header)
    }

    /// Collects one fragment of a fragmented request or reply; returns the whole payload once
    /// every fragment is in. Partial messages survive retries of the same request id (a retry
    /// only fills holes) and are bounded in number, bytes and age.
    fn reassemble(&mut self, header: &Header, payload: &[u8], now_ms: u64) -> Option<Vec<u8>> {
        if header.seq == 0 {
            // Only requests and replies (which have an id) may be fragmented.
            self.stats.datagrams_rejected += 1;
            return None;
        }
        let key = (header.sender, header.seq, header.flags & flags::REPLY != 0);
        let count = header.frag_count as usize;
        let fits = |p: &Partial| p.kind == header.kind && p.parts.len() == count;
        if !self.partials.get(&key).is_some_and(fits) {
            if let Some(old) = self.partials.remove(&key) {
                self.partial_bytes -= old.bytes;
            }
            while self.partials.len() >= PARTIALS_MAX
                || self.partial_bytes + payload.len() > PARTIAL_BYTES_MAX
            {
                let Some(oldest) =
                    self.partials.iter().min_by_key(|(_, p)| p.started_ms).map(|(k, _)| *k)
                else {
                    break;
                };
                let gone = self.partials.remove(&oldest).expect("just found");
                self.partial_bytes -= gone.bytes;
                self.stats.unreliable_dropped += 1;
            }
            let partial = Partial {
                kind: header.kind,
                parts: vec![None; count],
                have: 0,
                bytes: 0,
                started_ms: now_ms,
            };
            self.partials.insert(key, partial);
        }
        let partial = self.partials.get_mut(&key).expect("just ensured");
        let slot = &mut partial.parts[header.frag_index as usize];
        if slot.is_none() {
            *slot = Some(Bytes::copy_from_slice(payload));
            partial.have += 1;
            partial.bytes += payload.len();
            self.partial_bytes += payload.len();
        }
        if partial.have < count {
            return None;
        }
        let partial = self.partials.remove(&key).expect("present");
        self.partial_bytes -= partial.bytes;
        let mut whole = Vec::with_capacity(partial.bytes);
        for part in partial.parts.into_iter().flatten() {
            whole.extend_from_slice(&part);
        }
        Some(whole)
    }

    /// Timers of both halves. Call every few milliseconds.
    pub fn tick(&mut self, now_ms: u64) {
        self.sender.tick(now_ms);
        if let Some(stream) = &mut self.client_stream {
            stream.tick(now_ms);
        }
        self.receivers.tick(now_ms);
        if !self.partials.is_empty() {
            let before = self.partials.len();
            let mut freed = 0;
            self.partials.retain(|_, p| {
                let keep = now_ms.saturating_sub(p.started_ms) <= PARTIAL_AGE_MAX_MS;
                if !keep {
                    freed += p.bytes;
                }
                keep
            });
            self.partial_bytes -= freed;
            self.stats.unreliable_dropped += (before - self.partials.len()) as u64;
        }
    }

    /// The next datagram to send: control (NAKs, reports) first, then the sender's.
    pub fn poll_transmit(&mut self, now_ms: u64) -> Option<Transmit> {
        self.receivers
            .poll_transmit()
            .or_else(|| self.sender.poll_transmit(now_ms))
            .or_else(|| self.client_stream.as_mut().and_then(|s| s.poll_transmit(now_ms)))
    }

    /// The next reliable delivery or gap, in order per sender. Taking it grants its sender
    /// credit (the application has consumed it).
    pub fn pop_delivery(&mut self) -> Option<Delivery> {
        let d = self.receivers.pop_delivery()?;
        if let Delivery::Message { sender, incarnation, seq_below, .. } = &d {
            self.receivers.consumed(*sender, *incarnation, *seq_below);
        }
        Some(d)
    }

    /// The next reply to one of our requests.
    pub fn pop_reply(&mut self) -> Option<Unreliable> {
        self.replies.pop_front()
    }

    /// Whether a delivery of either kind waits for the application.
    pub fn has_deliveries(&self) -> bool {
        !self.unreliable.is_empty() || self.receivers.has_deliveries()
    }

    /// The next best-effort message (requests, FSLive, ...), replies excepted.
    pub fn pop_unreliable(&mut self) -> Option<Unreliable> {
        self.unreliable.pop_front()
    }

    /// Either kind of delivery, alternating so that neither starves.
    pub fn pop_any(&mut self) -> Option<Result<Delivery, Unreliable>> {
        self.prefer_unreliable = !self.prefer_unreliable;
        if self.prefer_unreliable {
            if let Some(u) = self.pop_unreliable() {
                return Some(Err(u));
            }
            self.pop_delivery().map(Ok)
        } else {
            if let Some(d) = self.pop_delivery() {
                return Some(Ok(d));
            }
            self.pop_unreliable().map(Err)
        }
    }
}
