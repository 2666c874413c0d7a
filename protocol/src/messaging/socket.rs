//! The tokio driver around the IO-free [`Core`]: sockets, timers and the async API.
//!
//! Two sockets per endpoint. The *unicast* socket (bound to `unicast_bind`) sends everything —
//! multicast data, control, requests, replies — and receives what is addressed to this
//! endpoint, so the source address of any datagram from us is our unicast address and replies,
//! NAKs and stability reports go straight back to it. The *group* socket (bound to the group
//! address and port with `SO_REUSEADDR`+`SO_REUSEPORT`, so several endpoints share a host)
//! only receives multicast. Without multicast (`peers` set) there is no group socket and
//! every group datagram is sent to each peer instead.
//!
//! Tasks: one receive task per socket (drains up to [`RECV_BATCH_MAX`] datagrams per wake-up
//! under one lock) and one transmit task that ticks the core's timers every `tick_ms` and puts
//! its datagrams on the wire. The core sits behind a `std` mutex: every critical section is
//! short and never awaits.

use super::core::{Core, CoreConfig, CoreStats};
use super::fault::{Coin, FaultConfig};
use super::{seal_unreliable, seal_unreliable_encoded, Delivery, Dest, SendError, Transmit};
use crate::error::ProtocolError;
use crate::header::{flags, ClusterAuth, KeyClass, Sealers};
use crate::limits::DATAGRAM_BYTES_MAX;
use crate::message::Message;
use crate::stats::{DropCounters, DropReason, DropSnapshot};
use crate::{Incarnation, SenderId};
use bytes::Bytes;
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::{BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::{oneshot, watch, Notify};
use tokio::task::JoinHandle;

/// Most datagrams a receive task handles per wake-up (one lock, fewer wake-ups). Each slot
/// is a 64 KiB buffer, so this also sets the task's memory (2 MiB).
pub const RECV_BATCH_MAX: usize = 32;
/// Most datagrams the transmit task takes from the core per lock.
pub const SEND_BATCH_MAX: usize = 64;
/// A request's wait grows by doubling after each timeout, up to this many times the first.
pub const REQUEST_BACKOFF_FACTOR_MAX: u32 = 8;
/// Most requests in flight per endpoint.
pub const REQUESTS_IN_FLIGHT_MAX: usize = 65_536;
/// Most sender addresses remembered (for NAKs, reports and retransmissions).
pub const ADDRESSES_MAX: usize = 65_536;
/// How often the transmit task compares the members it hears with the last ones it logged
/// (the `member_joined` / `member_left` log events).
pub const MEMBERSHIP_CHECK_MS: u64 = 250;
/// A reliable multicast that waited at least this long for credit or buffer room is logged
/// (`multicast_blocked`): everything its caller sends after it waited as long. So is a wait of
/// queued datagrams for credit (`credit_stalled`), which holds back the stream without
/// blocking the caller until the backlog is full.
pub const MULTICAST_BLOCKED_LOG_MS: u64 = 50;

/// Errors of the messaging layer's async API.
#[derive(Debug, thiserror::Error)]
pub enum MessagingError {
    #[error("socket error: {0} (check the interface, group address and port)")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("message of {len} bytes is over the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("no reply after {attempts} attempts: the peer may be down or unreachable")]
    Timeout { attempts: u32 },
    #[error("too many requests in flight ({0}); wait for some to finish")]
    TooManyRequests(usize),
    #[error("the endpoint is shut down")]
    Shutdown,
}

/// Everything an endpoint needs. Build with [`EndpointConfig::new`] and adjust fields.
#[derive(Clone, Debug)]
pub struct EndpointConfig {
    /// This endpoint's sender id (FS nodes: their node id; clients: a random id).
    pub id: SenderId,
    /// Bump on every start (e.g. from a persisted counter or the start time), so receivers can
    /// tell a restart from a replay. Never repeated for one id under one key: it names the
    /// AEAD subkey (see `header::fresh_incarnation` and WIRE.md §1.3).
    pub incarnation: Incarnation,
    pub auth: ClusterAuth,
    /// The multicast group and port.
    pub group: SocketAddrV4,
    /// The interface to join the group on and to send multicast from (0.0.0.0: the default).
    pub interface: Ipv4Addr,
    pub ttl: u32,
    /// Whether our multicast is looped back to listeners on this host (needed for several
    /// nodes on one host).
    pub loopback: bool,
    /// Where the unicast socket binds (port 0: any).
    pub unicast_bind: SocketAddr,
    /// Ids whose credit counts (FS nodes). See [`CoreConfig::members`].
    pub members: Vec<SenderId>,
    /// Unicast fallback: if set, no multicast socket is opened and every group datagram goes
    /// to each of these addresses instead (include every endpoint's unicast address; our own
    /// is skipped by id on receipt).
    pub peers: Option<Vec<SocketAddr>>,
    /// Windows, buffers and timers of the core.
    pub core: CoreConfig,
    /// How often the core's timers run.
    pub tick_ms: u64,
    /// Kernel socket buffer sizes asked for (the kernel may cap them).
    pub socket_buffer_bytes: usize,
    /// Deterministic fault injection (tests).
    pub fault: FaultConfig,
}

impl EndpointConfig {
    /// Defaults from DESIGN.md: group 239.255.77.1:7700, TTL 1, loopback on.
    pub fn new(id: SenderId, incarnation: Incarnation, auth: ClusterAuth) -> EndpointConfig {
        EndpointConfig {
            id,
            incarnation,
            auth,
            group: SocketAddrV4::new(Ipv4Addr::new(239, 255, 77, 1), 7700),
            interface: Ipv4Addr::UNSPECIFIED,
            ttl: 1,
            loopback: true,
            unicast_bind: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            members: Vec::new(),
            peers: None,
            core: CoreConfig::with_members(Vec::new()),
            tick_ms: 2,
            socket_buffer_bytes: 8 * 1024 * 1024,
            fault: FaultConfig::none(),
        }
    }
}

/// Counters of an endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointStats {
    pub core: CoreStats,
    pub datagrams_received: u64,
    pub datagrams_sent: u64,
    pub fault_dropped_receive: u64,
    pub fault_dropped_send: u64,
    pub send_errors: u64,
    /// Datagrams for a sender whose address we never learned.
    pub unknown_destination: u64,
    pub replies_unmatched: u64,
    pub request_retries: u64,
    /// Datagrams refused on receipt (bad tag, wrong cluster or version, malformed, ...), one
    /// counter per [`crate::stats::DropReason`].
    pub dropped: DropSnapshot,
}

/// What [`Endpoint::recv`] returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    Message(Received),
    /// Part of `sender`'s reliable stream is lost for good (see [`Delivery::Gap`]). A cache
    /// must flush what that stream kept fresh.
    Gap {
        sender: SenderId,
        incarnation: Incarnation,
        first_missing: u64,
        resumed_at: Option<u64>,
    },
}

/// One received message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub sender: SenderId,
    /// Where it came from (the sender's unicast address), if known.
    pub source: Option<SocketAddr>,
    /// From the sender's reliable stream (in order, exactly once) or best-effort.
    pub reliable: bool,
    pub message: Message,
    /// Set when this is a unicast request: answer with [`RequestHandle::reply`].
    pub request: Option<RequestHandle>,
}

/// How to answer a request: its id and where it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHandle {
    pub request_id: u64,
    pub to: SocketAddr,
    /// The key class the request came under; the reply goes under the same.
    pub class: KeyClass,
}

impl RequestHandle {
    /// Sends `reply` to the requester (best-effort: the requester retries on loss, so the
    /// application should remember recent answers if re-executing is not harmless).
    pub async fn reply(&self, endpoint: &Endpoint, reply: Message) -> Result<(), MessagingError> {
        endpoint.reply(self, reply).await
    }
}

struct State {
    core: Core,
    addresses: HashMap<SenderId, SocketAddr>,
    requests: HashMap<u64, oneshot::Sender<Message>>,
    receive_coin: Coin,
    send_coin: Coin,
    stats: EndpointStats,
    /// Members counted live at the last membership check (see [`membership_changes`]).
    heard_members: BTreeSet<SenderId>,
    next_membership_check_ms: u64,
    /// Since when reliable datagrams have waited for credit (none: not stalled).
    credit_stalled_since_ms: Option<u64>,
    /// The core's `over_held_cap` count already added to [`Shared::drops`].
    receiver_full_exported: u64,
}

/// Adds the datagrams the core's held-bytes cap refused or shed since the last call to the
/// drop counters ([`DropReason::ReceiverFull`]), so that metrics show them.
fn export_receiver_full(shared: &Shared, state: &mut State) {
    let total = state.core.receivers().stats().over_held_cap;
    if total > state.receiver_full_exported {
        shared.drops.record_many(DropReason::ReceiverFull, total - state.receiver_full_exported);
        state.receiver_full_exported = total;
    }
}

struct Shared {
    id: SenderId,
    sealers: Sealers,
    group: SocketAddr,
    peers: Option<Vec<SocketAddr>>,
    tick_ms: u64,
    start: Instant,
    state: Mutex<State>,
    unicast: UdpSocket,
    group_socket: Option<UdpSocket>,
    /// Something to transmit.
    transmit_wake: Notify,
    /// Something to deliver.
    deliver_wake: Notify,
    /// The sender made progress (credit arrived, backlog sent): blocked `multicast` retries.
    progress_wake: Notify,
    next_request_id: AtomicU64,
    shutdown: watch::Sender<bool>,
    /// Refused datagrams by reason; atomics, so metrics read them without the core's lock.
    drops: DropCounters,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug in the core; propagate it.
        self.state.lock().expect("messaging core mutex poisoned")
    }
}

/// Aborts the tasks when the last [`Endpoint`] handle goes.
struct Tasks(Mutex<Vec<JoinHandle<()>>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in self.0.lock().map(|mut t| std::mem::take(&mut *t)).unwrap_or_default() {
            task.abort();
        }
    }
}

/// A messaging endpoint: cheap to clone, all clones share one core and one pair of sockets.
#[derive(Clone)]
pub struct Endpoint {
    shared: Arc<Shared>,
    tasks: Arc<Tasks>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint").field("id", &self.shared.id).finish_non_exhaustive()
    }
}

fn group_socket(config: &EndpointConfig) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    // Best effort: the kernel caps this at net.core.rmem_max.
    let _ = socket.set_recv_buffer_size(config.socket_buffer_bytes);
    // Bound to the group address, so that unicast to the same port is not received here.
    socket.bind(&SocketAddr::V4(config.group).into())?;
    socket.join_multicast_v4(config.group.ip(), &config.interface)?;
    socket.set_multicast_loop_v4(config.loopback)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

fn unicast_socket(config: &EndpointConfig) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    let _ = socket.set_recv_buffer_size(config.socket_buffer_bytes);
    let _ = socket.set_send_buffer_size(config.socket_buffer_bytes);
    socket.bind(&config.unicast_bind.into())?;
    if config.peers.is_none() {
        if !config.interface.is_unspecified() {
            socket.set_multicast_if_v4(&config.interface)?;
        }
        socket.set_multicast_ttl_v4(config.ttl)?;
        socket.set_multicast_loop_v4(config.loopback)?;
    }
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

impl Endpoint {
    /// Opens the sockets and starts the tasks. Must run inside a tokio runtime.
    pub async fn bind(config: EndpointConfig) -> Result<Endpoint, MessagingError> {
        let unicast = unicast_socket(&config)?;
        let group_socket = match config.peers {
            Some(_) => None,
            None => Some(group_socket(&config)?),
        };
        let start = Instant::now();
        let mut core_config = config.core.clone();
        core_config.members = config.members.clone();
        let core = Core::new(config.id, config.incarnation, config.auth.clone(), core_config, 0);
        let state = State {
            core,
            addresses: HashMap::new(),
            requests: HashMap::new(),
            receive_coin: Coin::new(config.fault.seed, config.fault.drop_receive_ppm),
            send_coin: Coin::new(config.fault.seed ^ 0x5EED_5EED, config.fault.drop_send_ppm),
            stats: EndpointStats::default(),
            heard_members: BTreeSet::new(),
            next_membership_check_ms: 0,
            credit_stalled_since_ms: None,
            receiver_full_exported: 0,
        };
        let (shutdown, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            id: config.id,
            sealers: config.auth.sealers(config.id, config.incarnation),
            group: SocketAddr::V4(config.group),
            peers: config.peers.clone(),
            tick_ms: config.tick_ms.max(1),
            start,
            state: Mutex::new(state),
            unicast,
            group_socket,
            transmit_wake: Notify::new(),
            deliver_wake: Notify::new(),
            progress_wake: Notify::new(),
            // A random start, so that a restarted requester's ids do not meet fragments of its
            // previous life still held by a peer (partial replies are keyed by request id).
            next_request_id: AtomicU64::new(u64::from(rand::random::<u32>()) << 20 | 1),
            shutdown,
            drops: DropCounters::new(),
        });
        let mut tasks = vec![
            tokio::spawn(receive_task(shared.clone(), false)),
            tokio::spawn(transmit_task(shared.clone())),
        ];
        if shared.group_socket.is_some() {
            tasks.push(tokio::spawn(receive_task(shared.clone(), true)));
        }
        Ok(Endpoint { shared, tasks: Arc::new(Tasks(Mutex::new(tasks))) })
    }

    pub fn id(&self) -> SenderId {
        self.shared.id
    }

    /// The unicast address peers reach this endpoint at (requests, the fallback peer list).
    pub fn local_addr(&self) -> Result<SocketAddr, MessagingError> {
        Ok(self.shared.unicast.local_addr()?)
    }

    fn is_shut_down(&self) -> bool {
        *self.shared.shutdown.borrow()
    }

    /// Sends `message` on this endpoint's reliable stream: delivered exactly once and in order
    /// to every receiver (or reported as a gap). Waits while the members grant no credit; it
    /// never drops.
    pub async fn multicast(&self, message: Message) -> Result<(), MessagingError> {
        if self.is_shut_down() {
            return Err(MessagingError::Shutdown);
        }
        let payload = message.encode_payload()?;
        let kind = message.kind() as u8;
        if self.try_multicast_encoded(kind, &payload)? {
            return Ok(());
        }
        // Blocked (no credit or no buffer room): a long wait stalls everything this endpoint's
        // owner sends after it, so it is logged (this is how the follower-kill stalls showed).
        let blocked = Instant::now();
        let sent = |endpoint: &Endpoint| {
            let waited_ms = blocked.elapsed().as_millis() as u64;
            if waited_ms >= MULTICAST_BLOCKED_LOG_MS {
                let (live, credit_limit) = {
                    let state = endpoint.shared.lock();
                    let now = endpoint.shared.now_ms();
                    (state.core.sender().live_members(now), state.core.sender().credit_limit(now))
                };
                tracing::info!(
                    event = "multicast_blocked",
                    node = endpoint.shared.id,
                    waited_ms,
                    ?live,
                    credit_limit,
                    "a reliable multicast waited {waited_ms} ms for credit or buffer room"
                );
            }
        };
        loop {
            let progress = self.shared.progress_wake.notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            // Re-check after registering, so credit that raced in is not slept through.
            if self.try_multicast_encoded(kind, &payload)? {
                sent(self);
                return Ok(());
            }
            if self.is_shut_down() {
                return Err(MessagingError::Shutdown);
            }
            // Make sure what is queued goes out (it frees room once it is stable).
            self.shared.transmit_wake.notify_one();
            // Subscribing only on the slow path keeps the fast path free of it.
            let mut shutdown = self.shared.shutdown.subscribe();
            tokio::select! {
                _ = progress => {}
                _ = shutdown.wait_for(|s| *s) => return Err(MessagingError::Shutdown),
            }
        }
    }

    /// One attempt at queueing an encoded message: Ok(false) means no credit or room yet.
    fn try_multicast_encoded(&self, kind: u8, payload: &[u8]) -> Result<bool, MessagingError> {
        let now = self.shared.now_ms();
        let result = self.shared.lock().core.try_send_encoded(kind, payload, now);
        match result {
            Ok(()) => {
                self.shared.transmit_wake.notify_one();
                Ok(true)
            }
            Err(SendError::WouldBlock) => Ok(false),
            Err(SendError::TooLarge { len, max }) => Err(MessagingError::TooLarge { len, max }),
            Err(SendError::Encode(e)) => Err(e.into()),
        }
    }

    /// Sends `message` best-effort (no sequence, no repair) to the group, e.g. FSLive.
    pub async fn send_unreliable(&self, message: &Message) -> Result<(), MessagingError> {
        let sealer = self.shared.sealers.for_kind(message.kind() as u8);
        for datagram in seal_unreliable(sealer, 0, 0, message)? {
            send_to_dest(&self.shared, Dest::Group, &datagram).await;
        }
        Ok(())
    }

    /// Sends `message` best-effort to one address (not a request: no reply is awaited).
    pub async fn send_unreliable_to(
        &self,
        to: SocketAddr,
        message: &Message,
    ) -> Result<(), MessagingError> {
        let sealer = self.shared.sealers.for_kind(message.kind() as u8);
        for datagram in seal_unreliable(sealer, 0, 0, message)? {
            send_datagram(&self.shared, to, &datagram).await;
        }
        Ok(())
    }

    /// Unicast request/reply: sends `message` to `to` and waits for the reply carrying the same
    /// request id. After each `timeout` without a reply it sends again, up to `retries` more
    /// times, doubling the wait each time (at most [`REQUEST_BACKOFF_FACTOR_MAX`] × `timeout`).
    /// The same request id is reused on retries, so the peer may see a request twice; each
    /// retry is sealed anew (fresh nonce counters), so the peer's replay guard takes it.
    pub async fn request(
        &self,
        to: SocketAddr,
        message: Message,
        timeout: Duration,
        retries: u32,
    ) -> Result<Message, MessagingError> {
        if self.is_shut_down() {
            return Err(MessagingError::Shutdown);
        }
        let request_id = self.shared.next_request_id.fetch_add(1, Ordering::Relaxed);
        let sealer = self.shared.sealers.for_kind(message.kind() as u8);
        let kind = message.kind() as u8;
        let payload = message.encode_payload()?;
        let mut datagrams = seal_unreliable_encoded(sealer, request_id, 0, kind, &payload)?;
        let (reply_tx, mut reply_rx) = oneshot::channel();
        {
            let mut state = self.shared.lock();
            if state.requests.len() >= REQUESTS_IN_FLIGHT_MAX {
                return Err(MessagingError::TooManyRequests(REQUESTS_IN_FLIGHT_MAX));
            }
            state.requests.insert(request_id, reply_tx);
        }
        // Unregisters the request however this future ends (reply, timeout, cancellation).
        struct Forget<'a>(&'a Shared, u64);
        impl Drop for Forget<'_> {
            fn drop(&mut self) {
                self.0.lock().requests.remove(&self.1);
            }
        }
        let _forget = Forget(&self.shared, request_id);
        let mut wait = timeout;
        for attempt in 0..=retries {
            if attempt > 0 {
                self.shared.lock().stats.request_retries += 1;
                datagrams = seal_unreliable_encoded(sealer, request_id, 0, kind, &payload)?;
            }
            send_all(&self.shared, to, &datagrams).await;
            match tokio::time::timeout(wait, &mut reply_rx).await {
                Ok(Ok(reply)) => return Ok(reply),
                Ok(Err(_)) => return Err(MessagingError::Shutdown),
                Err(_) => wait = (wait * 2).min(timeout * REQUEST_BACKOFF_FACTOR_MAX),
            }
        }
        Err(MessagingError::Timeout { attempts: retries + 1 })
    }

    /// Answers a request (see [`RequestHandle::reply`]).
    pub async fn reply(
        &self,
        request: &RequestHandle,
        reply: Message,
    ) -> Result<(), MessagingError> {
        let sealer = self.shared.sealers.get(request.class).ok_or_else(|| {
            MessagingError::Protocol(ProtocolError::WrongClass {
                class: request.class.name(),
                sender: self.shared.id,
                detail: "no key of the request's class to reply under".into(),
            })
        })?;
        let datagrams = seal_unreliable(sealer, request.request_id, flags::REPLY, &reply)?;
        send_all(&self.shared, request.to, &datagrams).await;
        Ok(())
    }

    /// The next message or gap. Reliable messages come in order per sender; taking one grants
    /// its sender credit, so a slow caller slows the senders down.
    pub async fn recv(&self) -> Result<Incoming, MessagingError> {
        loop {
            // Fast path first: no wake-up registration while deliveries are waiting.
            if let Some(incoming) = self.try_recv() {
                return Ok(incoming);
            }
            let ready = self.shared.deliver_wake.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            // Re-check after registering, so a delivery that raced in is not slept through.
            if let Some(incoming) = self.try_recv() {
                return Ok(incoming);
            }
            if self.is_shut_down() {
                return Err(MessagingError::Shutdown);
            }
            let mut shutdown = self.shared.shutdown.subscribe();
            tokio::select! {
                _ = ready => {}
                _ = shutdown.wait_for(|s| *s) => return Err(MessagingError::Shutdown),
            }
        }
    }

    /// The next message or gap if one is waiting (see [`Endpoint::recv`]).
    pub fn try_recv(&self) -> Option<Incoming> {
        let mut state = self.shared.lock();
        let next = state.core.pop_any()?;
        let more = state.core.has_deliveries();
        let incoming = to_incoming(&state, next);
        drop(state);
        if more {
            // Another receiver may be waiting too.
            self.shared.deliver_wake.notify_one();
        }
        Some(incoming)
    }

    pub fn stats(&self) -> EndpointStats {
        let state = self.shared.lock();
        EndpointStats { core: state.core.stats(), dropped: self.dropped(), ..state.stats }
    }

    /// Datagrams refused on receipt so far, by reason (no lock taken).
    pub fn dropped(&self) -> DropSnapshot {
        self.shared.drops.snapshot()
    }

    /// Reliable sends accepted but not yet stable at every live member (0: all caught up).
    pub fn unstable_datagrams(&self) -> u64 {
        let now = self.shared.now_ms();
        let state = self.shared.lock();
        let unstable = |sender: &super::sender::SenderCore| {
            let open_batch = u64::from(sender.has_open_batch());
            sender.next_seq() - sender.stable_below(now).min(sender.next_seq()) + open_batch
        };
        unstable(state.core.sender()) + state.core.client_stream().map_or(0, unstable)
    }

    /// Waits until everything multicast so far is sent and delivered at every live member
    /// (stable), or `max_wait` passes. True when stable. Call before [`Endpoint::shutdown`] for
    /// a graceful stop. With no live member, "stable" means "sent".
    pub async fn flush(&self, max_wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + max_wait;
        loop {
            let progress = self.shared.progress_wake.notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            if self.unstable_datagrams() == 0 {
                return true;
            }
            self.shared.transmit_wake.notify_one();
            // The transmit task notifies progress at least every tick.
            if tokio::time::timeout_at(deadline, progress).await.is_err() {
                return self.unstable_datagrams() == 0;
            }
        }
    }

    /// Stops the tasks; pending `recv`, `multicast` and `request` calls return
    /// [`MessagingError::Shutdown`]. What is still unsent is abandoned (see
    /// [`Endpoint::flush`]).
    pub async fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
        let tasks = std::mem::take(&mut *self.tasks.0.lock().expect("tasks mutex"));
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
        // Wake requests waiting for replies.
        self.shared.lock().requests.clear();
    }
}

fn to_incoming(state: &State, next: Result<Delivery, super::core::Unreliable>) -> Incoming {
    match next {
        Ok(Delivery::Message { sender, message, .. }) => Incoming::Message(Received {
            sender,
            source: state.addresses.get(&sender).copied(),
            reliable: true,
            message,
            request: None,
        }),
        Ok(Delivery::Gap { sender, incarnation, first_missing, resumed_at }) => {
            Incoming::Gap { sender, incarnation, first_missing, resumed_at }
        }
        Err(u) => {
            let source = state.addresses.get(&u.sender).copied();
            Incoming::Message(Received {
                sender: u.sender,
                source,
                reliable: false,
                request: match (u.request_id, source) {
                    (0, _) | (_, None) => None,
                    (request_id, Some(to)) => {
                        Some(RequestHandle { request_id, to, class: u.class })
                    }
                },
                message: u.message,
            })
        }
    }
}

async fn send_datagram(shared: &Shared, to: SocketAddr, datagram: &[u8]) {
    {
        let mut state = shared.lock();
        if state.send_coin.drop_this() {
            state.stats.fault_dropped_send += 1;
            return;
        }
        state.stats.datagrams_sent += 1;
    }
    if let Err(e) = shared.unicast.send_to(datagram, to).await {
        tracing::debug!(%to, error = %e, "datagram not sent");
        shared.lock().stats.send_errors += 1;
    }
}

/// Sends the fragments of one request or reply, yielding now and then so that a receiver in
/// the same process gets to drain its socket during a long burst.
async fn send_all(shared: &Shared, to: SocketAddr, datagrams: &[Bytes]) {
    for (i, datagram) in datagrams.iter().enumerate() {
        if i > 0 && i % 16 == 0 {
            tokio::task::yield_now().await;
        }
        send_datagram(shared, to, datagram).await;
    }
}

async fn send_to_dest(shared: &Shared, dest: Dest, datagram: &[u8]) {
    match dest {
        Dest::Group => match &shared.peers {
            Some(peers) => {
                for peer in peers {
                    send_datagram(shared, *peer, datagram).await;
                }
            }
            None => send_datagram(shared, shared.group, datagram).await,
        },
        Dest::Sender(id) => {
            let to = shared.lock().addresses.get(&id).copied();
            match to {
                Some(to) => send_datagram(shared, to, datagram).await,
                None => shared.lock().stats.unknown_destination += 1,
            }
        }
    }
}

async fn transmit_task(shared: Arc<Shared>) {
    let mut ticker = tokio::time::interval(Duration::from_millis(shared.tick_ms));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch: Vec<Transmit> = Vec::with_capacity(SEND_BATCH_MAX);
    loop {
        let mut ticked = tokio::select! {
            _ = ticker.tick() => true,
            _ = shared.transmit_wake.notified() => false,
        };
        loop {
            let mut membership = Vec::new();
            let stalled;
            {
                let now = shared.now_ms();
                let mut state = shared.lock();
                if ticked {
                    // Timers once per tick, not once per batch of datagrams.
                    state.core.tick(now);
                    // A tick can shed held datagrams too (a gap lets a reassembly go on).
                    export_receiver_full(&shared, &mut state);
                    membership = membership_changes(&mut state, now);
                    ticked = false;
                }
                while batch.len() < SEND_BATCH_MAX {
                    match state.core.poll_transmit(now) {
                        Some(t) => batch.push(t),
                        None => break,
                    }
                }
                stalled = credit_stall_ended(&mut state, now);
            }
            log_membership(shared.id, &membership);
            if let Some((stalled_ms, live)) = stalled {
                // Queued multicast waited for a member's credit: everything this endpoint
                // multicast meanwhile (proposals, commits, heartbeats) was held back.
                tracing::info!(
                    event = "credit_stalled",
                    node = shared.id,
                    stalled_ms,
                    ?live,
                    "reliable multicast waited {stalled_ms} ms for credit"
                );
            }
            // Credit may have arrived or a member timed out (tick), or the backlog shrank.
            shared.progress_wake.notify_waiters();
            if batch.is_empty() {
                break;
            }
            for t in batch.drain(..) {
                send_to_dest(&shared, t.dest, &t.datagram).await;
            }
        }
    }
}

/// Tracks whether queued reliable datagrams wait for credit; when such a wait of at least
/// [`MULTICAST_BLOCKED_LOG_MS`] ends, returns its length and the members live at its end.
fn credit_stall_ended(state: &mut State, now_ms: u64) -> Option<(u64, Vec<SenderId>)> {
    let sender = state.core.sender();
    if !sender.has_credit(now_ms) {
        state.credit_stalled_since_ms.get_or_insert(now_ms);
        return None;
    }
    let since = state.credit_stalled_since_ms.take()?;
    let stalled_ms = now_ms - since;
    (stalled_ms >= MULTICAST_BLOCKED_LOG_MS).then(|| (stalled_ms, sender.live_members(now_ms)))
}

/// Members that started or stopped counting as live since the last check, at most every
/// [`MEMBERSHIP_CHECK_MS`]: `(member, true)` joined, `(member, false)` went silent. Live is
/// the sender's view (a stability report within the member timeout: the members whose credit
/// and acknowledgements this endpoint waits for), restricted to members actually heard from
/// (an address learned from an authenticated datagram), so that a member that never started
/// is not reported as joined for the first timeout after our start.
fn membership_changes(state: &mut State, now_ms: u64) -> Vec<(SenderId, bool)> {
    if now_ms < state.next_membership_check_ms {
        return Vec::new();
    }
    state.next_membership_check_ms = now_ms + MEMBERSHIP_CHECK_MS;
    let live: BTreeSet<SenderId> = state
        .core
        .sender()
        .live_members(now_ms)
        .into_iter()
        .filter(|m| state.addresses.contains_key(m))
        .collect();
    let mut changes: Vec<(SenderId, bool)> =
        live.difference(&state.heard_members).map(|m| (*m, true)).collect();
    changes.extend(state.heard_members.difference(&live).map(|m| (*m, false)));
    state.heard_members = live;
    changes
}

/// One log line per membership change (stable `event` names; README "Logs").
fn log_membership(me: SenderId, changes: &[(SenderId, bool)]) {
    for &(member, joined) in changes {
        if joined {
            tracing::info!(event = "member_joined", node = me, member, "member {member} is heard");
        } else {
            tracing::warn!(
                event = "member_left",
                node = me,
                member,
                "member {member} went silent (no report within the member timeout)"
            );
        }
    }
}

async fn receive_task(shared: Arc<Shared>, group: bool) {
    let socket =
        if group { shared.group_socket.as_ref().expect("group socket") } else { &shared.unicast };
    // One buffer per datagram of a batch, allocated once.
    let mut buffers: Vec<Vec<u8>> =
        (0..RECV_BATCH_MAX).map(|_| vec![0u8; DATAGRAM_BYTES_MAX + 1]).collect();
    let mut received: Vec<(usize, SocketAddr)> = Vec::with_capacity(RECV_BATCH_MAX);
    loop {
        if socket.readable().await.is_err() {
            return;
        }
        received.clear();
        for buffer in buffers.iter_mut() {
            match socket.try_recv_from(buffer) {
                Ok((n, from)) => received.push((n, from)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // ICMP errors from unreachable peers surface here on Linux; not fatal.
                    tracing::debug!(error = %e, "receive error");
                    break;
                }
            }
        }
        if received.is_empty() {
            continue;
        }
        let (deliver, progress) = {
            let now = shared.now_ms();
            let mut state = shared.lock();
            let before = state.core.sender().credit_limit(now);
            for (i, &(n, from)) in received.iter().enumerate() {
                state.stats.datagrams_received += 1;
                if state.receive_coin.drop_this() {
                    state.stats.fault_dropped_receive += 1;
                    continue;
                }
                let header = match state.core.on_datagram(&buffers[i][..n], now) {
                    Ok(Some(header)) => header,
                    Ok(None) => continue,
                    Err(e) => {
                        let reason = shared.drops.record(&e);
                        tracing::trace!(%from, reason = reason.name(), error = %e, "datagram dropped");
                        continue;
                    }
                };
                if header.sender != shared.id {
                    if state.addresses.len() >= ADDRESSES_MAX
                        && !state.addresses.contains_key(&header.sender)
                    {
                        // Rare (client churn): forget all; every live peer is relearned
                        // from its next datagram (members report every few hundred ms).
                        state.addresses.clear();
                    }
                    state.addresses.insert(header.sender, from);
                }
            }
            export_receiver_full(&shared, &mut state);
            while let Some(reply) = state.core.pop_reply() {
                match state.requests.remove(&reply.request_id) {
                    Some(tx) => {
                        let _ = tx.send(reply.message);
                    }
                    None => state.stats.replies_unmatched += 1,
                }
            }
            let progress = state.core.sender().credit_limit(now) != before;
            (state.core.has_deliveries(), progress)
        };
        if deliver {
            shared.deliver_wake.notify_one();
        }
        // NAKs may want retransmissions, data may want reports: let the transmit task look.
        shared.transmit_wake.notify_one();
        if progress {
            shared.progress_wake.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datagram::{encode_datagram, Envelope};
    use crate::message::live::Freeze;
    use crate::Zxid;

    /// Bound on waiting for a datagram sent on loopback to be received and counted.
    const RECEIVE_WAIT: Duration = Duration::from_secs(5);

    fn auth() -> ClusterAuth {
        ClusterAuth::new(0x5151, b"drop counter test key")
    }

    fn datagram(auth: &ClusterAuth) -> Vec<u8> {
        let message = Message::Freeze(Freeze { node: 9, frozen: true, applied: Zxid::ZERO });
        let envelope = Envelope { sender: 99, incarnation: 1, seq: 0, flags: 0 };
        let mut out = Vec::new();
        encode_datagram(auth, envelope, &message, &mut out).expect("encodes");
        out
    }

    async fn wait_for(endpoint: &Endpoint, reason: DropReason, count: u64) -> DropSnapshot {
        let deadline = tokio::time::Instant::now() + RECEIVE_WAIT;
        while endpoint.dropped().get(reason) < count && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        endpoint.dropped()
    }

    /// Claim: a datagram under another key counts as `bad_mac`, one of another cluster as
    /// `wrong_cluster`, noise as `bad_magic` — each in exactly its own counter, visible through
    /// `Endpoint::dropped` and `Endpoint::stats` — while an authentic one counts as no drop.
    #[tokio::test]
    async fn refused_datagrams_are_counted_by_reason() {
        let mut config = EndpointConfig::new(1, 1, auth());
        config.unicast_bind = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        config.peers = Some(Vec::new());
        let endpoint = Endpoint::bind(config).await.expect("bind");
        let to = endpoint.local_addr().expect("addr");
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind sender");
        let send = |bytes: &[u8]| socket.send_to(bytes, to).expect("send");

        send(&datagram(&ClusterAuth::new(0x5151, b"another key")));
        let after_mac = wait_for(&endpoint, DropReason::BadMac, 1).await;
        assert_eq!(after_mac.bad_mac, 1, "{after_mac:?}");
        assert_eq!(after_mac.total(), 1, "only bad_mac moved: {after_mac:?}");

        send(&datagram(&ClusterAuth::new(0x7777, b"drop counter test key")));
        let after_cluster = wait_for(&endpoint, DropReason::WrongCluster, 1).await;
        assert_eq!(after_cluster.wrong_cluster, 1, "{after_cluster:?}");
        assert_eq!(after_cluster.total(), 2, "{after_cluster:?}");

        send(b"definitely not a shoal datagram, but long enough for a header");
        let after_noise = wait_for(&endpoint, DropReason::BadMagic, 1).await;
        assert_eq!(after_noise.bad_magic, 1, "{after_noise:?}");

        // An authentic datagram is delivered, and counts as no drop.
        send(&datagram(&auth()));
        let received = tokio::time::timeout(RECEIVE_WAIT, endpoint.recv()).await;
        assert!(matches!(received, Ok(Ok(Incoming::Message(_)))), "{received:?}");
        let stats = endpoint.stats();
        assert_eq!(stats.dropped, endpoint.dropped());
        assert_eq!(stats.dropped.total(), 3, "{:?}", stats.dropped);
        endpoint.shutdown().await;
    }

    /// Claim: authentic reliable datagrams that the receiver's held-bytes cap refuses (here
    /// out of order, from sender ids a peer made up) are counted as `receiver_full`, so they
    /// reach `shoal_dropped_datagrams_total`.
    #[tokio::test]
    async fn datagrams_over_the_held_cap_are_counted_as_receiver_full() {
        let mut config = EndpointConfig::new(1, 1, auth());
        config.unicast_bind = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        config.peers = Some(Vec::new());
        config.core.receiver.held_bytes_max = 16 * 1024;
        let endpoint = Endpoint::bind(config).await.expect("bind");
        let to = endpoint.local_addr().expect("addr");
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind sender");
        // 8 claimed ids × 3 datagrams of 1 KiB, all after a head that never comes: 24 KiB
        // offered (plus overhead) against a 16 KiB cap.
        for sender in 100..108u64 {
            for seq in 2..5u64 {
                let sealer = auth().sealer(KeyClass::Client, sender, 1).expect("client key");
                let kind = crate::message::MessageKind::Freeze as u8;
                let header = sealer.header(kind, crate::header::flags::RELIABLE, seq, (0, 1), 1024);
                let mut out = Vec::new();
                crate::header::seal(&sealer, &header, &[0; 1024], &mut out).expect("seals");
                socket.send_to(&out, to).expect("send");
            }
        }
        let dropped = wait_for(&endpoint, DropReason::ReceiverFull, 1).await;
        assert!(dropped.receiver_full > 0, "{dropped:?}");
        assert_eq!(dropped.total(), dropped.receiver_full, "nothing else refused: {dropped:?}");
        let stats = endpoint.stats();
        assert!(stats.core.receiver.over_held_cap >= dropped.receiver_full, "{stats:?}");
        endpoint.shutdown().await;
    }
}
