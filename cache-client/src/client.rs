//! The async [`Client`]: the data API after the original lock-service design, with the cache,
//! routing and watches behind it.
//!
//! # Guarantees
//! - **Read-your-writes and monotonic reads.** The client keeps a floor zxid: the highest zxid
//!   it has written or seen (a reply's applied zxid, a cache hit's as-of zxid). Every read
//!   carries it, a node answers only once it has applied that much, and the cache answers only
//!   with entries valid through it (see [`crate::cache`]). Routing prefers nodes known to be at
//!   the floor; a node that is not answers `Behind` and the client tries another.
//! - **Linearizable reads** ([`ReadOptions::linearizable`]) skip the cache and go to the master,
//!   which answers inside its lease.
//! - **Writes** go to the master (from FSLive, or a `NotMaster` redirect). One write keeps one
//!   [`RequestId`] across every retry, so a retry after a timeout cannot apply twice.
//! - **Bad input** (keys outside the namespace rules, oversize values or batches) is refused
//!   before anything is sent.
//!
//! # The event pump
//! Group events (FSLive, Freeze, UpdateNotice, LockChanged, Gap) are applied by a background
//! task and also at the start of every call, under the state lock, in arrival order; so any
//! notice the transport delivered before a call is in the cache before the call looks at it.
//! Watch callbacks run with no lock held, one at a time and in zxid order (deliveries are
//! queued under the state lock and drained by one thread at a time): they may call the client's
//! synchronous methods, but should hand slow work to a channel rather than block the pump.

use crate::cache::{ClientCache, NoticeOutcome};
use crate::error::ClientError;
use crate::routing::Router;
use crate::transport::{GroupEvent, Transport, TransportError};
use crate::watch::{
    Callback, CatchUp, Delivery, Kinds, Target, WatchEvent, WatchId, WatchRegistry,
};
use crate::ClientConfig;
use bytes::Bytes;
use protocol::batch::{self, Limits, ShapeError};
use protocol::key;
use protocol::range;
use protocol::message::data::{
    Condition, DirEntry, ErrorCode, KeyStat, Load, Op, RangeEntry, RangePage, ReadOp, ReadRequest,
    ReadValue, RenameRequest, RequestId, Scope, UpdateRequest, Versioned, WireError,
};
use protocol::message::lock::{LockGrant, LockOp, LockRequest, LockRequestOp};
use protocol::message::Message;
use protocol::{NodeId, SenderId, Zxid, CLIENT_ID_MIN};
use rand::Rng;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Pause before trying again when no node knows a master (an election is under way).
pub const NO_MASTER_BACKOFF: Duration = Duration::from_millis(200);

/// How often a write or linearizable read waiting on the master checks whether a master of a
/// later epoch was announced meanwhile (see `Inner::request_unless_master_moves`).
pub const MASTER_CHANGE_POLL: Duration = Duration::from_millis(10);

/// Least time between two position probes to the master (see `learn_position`).
pub const POSITION_PROBE_BACKOFF: Duration = Duration::from_secs(1);

/// Bytes asked for per history page when a watch catches up (the node caps it).
pub const HISTORY_PAGE_BYTES: u32 = 256 * 1024;

/// Failed history reads in a row (every node timed out, none known) before a catching-up
/// watch gives up with `Missed` and goes live at the stream's position.
pub const CATCH_UP_FAILURES_MAX: u32 = 20;

/// Pause after a failed history read (an election or a partition may be under way).
pub const CATCH_UP_BACKOFF: Duration = Duration::from_millis(250);

/// Compacted answers in a row before a watch is told: another node may hold more history (a
/// node that restarted keeps only what it replayed). Each answer steers the next read away
/// from the nodes that gave one, and the watch is told the least `oldest` of them.
pub const COMPACTED_ANSWERS_MAX: u32 = 3;

/// Bytes asked for per page of a range read (the node caps it at
/// `protocol::limits::RANGE_PAGE_BYTES_MAX`).
pub const RANGE_PAGE_BYTES: u32 = 1024 * 1024;

/// Times [`Client::range`] reads a range again from a page that changed before it could show
/// one state, before it gives the pages as they are (`RangeRead::snapshot` `None`).
pub const RANGE_REREADS_MAX: u32 = 3;

/// What [`Client::range`] read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeRead {
    /// The values, in key byte order.
    pub entries: Vec<RangeEntry>,
    /// The zxid of the one state every entry is of (the range's values then are exactly these);
    /// `None` when no one state could be shown (see [`Client::range`]).
    pub snapshot: Option<Zxid>,
    /// The zxid of the last page's state (the latest state any entry is of).
    pub zxid: Zxid,
    /// Where the range goes on when `limit` stopped it (`None`: it is complete).
    pub next: Option<String>,
}

/// One page of a multi-page range read, with the key it started at.
struct ReadPage {
    start: String,
    zxid: Zxid,
    entries: Vec<RangeEntry>,
    next: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// Answer through the master inside its lease; skips the cache.
    pub linearizable: bool,
    /// Do not answer from (or fill) the client cache.
    pub bypass_cache: bool,
}

impl ReadOptions {
    pub fn linearizable() -> ReadOptions {
        ReadOptions { linearizable: true, bypass_cache: true }
    }
}

/// Several writes that commit as one entry, atomically, only if every condition holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    ops: Vec<Op>,
    conditions: Vec<Condition>,
}

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }

    pub fn write(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Batch {
        let op =
            Op::Put { key: key.into(), value: value.into(), create_only: false, ephemeral: None };
        self.ops.push(op);
        self
    }

    pub fn create(
        mut self,
        key: impl Into<String>,
        value: impl Into<Bytes>,
        ephemeral: Option<u64>,
    ) -> Batch {
        self.ops.push(Op::Put {
            key: key.into(),
            value: value.into(),
            create_only: true,
            ephemeral,
        });
        self
    }

    pub fn mkdir(mut self, key: impl Into<String>) -> Batch {
        self.ops.push(Op::Mkdir { key: key.into() });
        self
    }

    pub fn remove(mut self, key: impl Into<String>, recursive: bool) -> Batch {
        self.ops.push(Op::Delete { key: key.into(), recursive });
        self
    }

    pub fn rename(mut self, from: impl Into<String>, to: impl Into<String>) -> Batch {
        self.ops.push(Op::Rename { from: from.into(), to: to.into() });
        self
    }

    /// Commit only if `key` is still at `zxid` (`Zxid::ZERO`: only if it does not exist).
    pub fn if_zxid(mut self, key: impl Into<String>, zxid: Zxid) -> Batch {
        self.conditions.push(Condition::KeyZxid { key: key.into(), zxid });
        self
    }

    /// Commit only if `lock` is still held with the fencing `token` (see
    /// [`crate::locks::LockGuard::token`]): a holder whose lock expired cannot write.
    pub fn if_token(mut self, lock: impl Into<String>, token: Zxid) -> Batch {
        self.conditions.push(Condition::LockToken { lock: lock.into(), token });
        self
    }

    /// Commit only if this client still holds `lock` with `auth` (transactions).
    pub(crate) fn if_held(mut self, lock: impl Into<String>, auth: i32) -> Batch {
        self.conditions.push(Condition::LockHeld { lock: lock.into(), auth });
        self
    }

    /// Releases `lock` (held by `holder`, this client) in the same entry (transactions).
    pub(crate) fn release(mut self, lock: impl Into<String>, auth: i32, holder: SenderId) -> Batch {
        self.ops.push(Op::Lock(LockOp::Release { lock: lock.into(), auth, holder }));
        self
    }

    pub(crate) fn push(&mut self, op: Op) {
        self.ops.push(op);
    }

    pub fn conditions(&self) -> &[Condition] {
        &self.conditions
    }

    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Counters for tests, status and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    pub reads_sent: u64,
    pub writes_sent: u64,
    pub timeouts: u64,
    pub redirects: u64,
    pub behind: u64,
    pub gaps: u64,
    /// Notices that broke the chain (the cache flushed; watches caught up from history).
    pub chain_breaks: u64,
    /// History pages read for watches catching up.
    pub history_pages: u64,
}

struct State {
    cache: ClientCache,
    router: Router,
    watches: WatchRegistry,
    floor: Zxid,
    /// Not before this instant is the master probed again for a cache position.
    next_probe: Option<Instant>,
    group: mpsc::Receiver<GroupEvent>,
    stats: ClientStats,
}

pub(crate) struct Inner<T> {
    transport: T,
    pub(crate) config: ClientConfig,
    pub(crate) id: SenderId,
    /// Request seqs of writes and lock commands, within the master's window.
    requests: crate::window::RequestWindow,
    /// Locks and the session this client holds (see [`crate::locks`]).
    pub(crate) locks: crate::leases::Registry,
    state: Mutex<State>,
    /// Watch deliveries in zxid order, appended under the state lock.
    outbox: Mutex<VecDeque<Delivery>>,
    /// Set while one thread runs callbacks from the outbox; the others leave their deliveries
    /// to it, so callbacks run one at a time, in order, with no lock held.
    delivering: AtomicBool,
    /// Set while the catch-up task reads history for watches (see [`run_catch_up`]).
    catching_up: AtomicBool,
    /// The runtime the client was started in: the catch-up task runs there, also when a watch
    /// is registered from a thread outside it (the blocking client).
    runtime: tokio::runtime::Handle,
    me: Weak<Inner<T>>,
}

/// Aborts the event pump when the last clone of the client goes.
struct PumpGuard(tokio::task::JoinHandle<()>);

impl Drop for PumpGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The Shoal client. Cheap to clone; clones share cache, floor and watches.
pub struct Client<T: Transport> {
    pub(crate) inner: Arc<Inner<T>>,
    _pump: Arc<PumpGuard>,
}

impl<T: Transport> Clone for Client<T> {
    fn clone(&self) -> Self {
        Client { inner: Arc::clone(&self.inner), _pump: Arc::clone(&self._pump) }
    }
}

use crate::clock::now;

impl<T: Transport> Client<T> {
    /// Starts a client on `transport`. Must be called inside a tokio runtime (it spawns the
    /// event pump).
    pub fn new(transport: T, config: ClientConfig) -> Client<T> {
        let seed = config.rng_seed.unwrap_or_else(rand::random);
        let mut rng = <rand::rngs::SmallRng as rand::SeedableRng>::seed_from_u64(seed);
        let id = config.client_id.unwrap_or_else(|| rng.gen_range(CLIENT_ID_MIN..=u64::MAX));
        assert!(id >= CLIENT_ID_MIN, "client ids start at CLIENT_ID_MIN");
        assert!(config.attempts_max >= 1, "attempts_max must allow one attempt");
        let mut router = Router::new(config.routing.clone(), rng.gen());
        let t = now();
        for seed in &config.seeds {
            router.add_seed(seed, t);
        }
        let group = transport.subscribe();
        let state = State {
            cache: ClientCache::new(config.cache.clone()),
            router,
            watches: WatchRegistry::new(),
            floor: Zxid::ZERO,
            next_probe: None,
            group,
            stats: ClientStats::default(),
        };
        let inner = Arc::new_cyclic(|me| Inner {
            catching_up: AtomicBool::new(false),
            runtime: tokio::runtime::Handle::current(),
            me: me.clone(),
            transport,
            config,
            id,
            requests: crate::window::RequestWindow::new(crate::window::REQUEST_WINDOW),
            locks: crate::leases::Registry::new(),
            state: Mutex::new(state),
            outbox: Mutex::new(VecDeque::new()),
            delivering: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&inner);
        let pump = tokio::spawn(run_pump(weak));
        Client { inner, _pump: Arc::new(PumpGuard(pump)) }
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// This client's id on the wire (at or above `CLIENT_ID_MIN`).
    pub fn id(&self) -> SenderId {
        self.inner.id
    }

    /// The highest zxid this client has written or seen.
    pub fn floor(&self) -> Zxid {
        self.inner.lock().floor
    }

    pub fn stats(&self) -> ClientStats {
        self.inner.lock().stats
    }

    pub fn cache_stats(&self) -> crate::cache::CacheStats {
        self.inner.lock().cache.stats()
    }

    /// The nodes the client currently counts as live, by address.
    pub fn live_nodes(&self) -> Vec<String> {
        let st = self.inner.lock();
        st.router.live(now()).map(|n| n.address.clone()).collect()
    }

    /// What the client knows of every node it has heard of (FSLive, seeds), for `shoal status`.
    pub fn node_views(&self) -> Vec<crate::routing::NodeView> {
        self.inner.lock().router.nodes().to_vec()
    }

    /// Applies every group event delivered so far (also done before every call).
    pub fn pump(&self) {
        self.inner.pump_now();
    }

    // ---- reads ----

    /// The value at `key`, or `Ok(None)` when nothing is there.
    pub async fn read(&self, key: &str) -> Result<Option<Versioned>, ClientError> {
        self.read_with(key, ReadOptions::default()).await
    }

    pub async fn read_with(
        &self,
        key: &str,
        options: ReadOptions,
    ) -> Result<Option<Versioned>, ClientError> {
        key::validate(key, self.inner.config.key_bytes_max)?;
        self.inner.pump_now();
        let use_cache = !options.linearizable && !options.bypass_cache;
        if use_cache {
            let mut st = self.inner.lock();
            let floor = st.floor;
            if let Some(hit) = st.cache.lookup(key, floor, now()) {
                st.floor = st.floor.max(hit.as_of);
                return Ok(hit.value);
            }
        }
        if use_cache {
            self.learn_position().await;
        }
        let generation = self.inner.lock().cache.generation();
        let op = ReadOp::Get { key: key.to_string() };
        let (value, applied) = self.send_read(op, options.linearizable).await?;
        let ReadValue::Value(value) = value else {
            return Err(ClientError::UnexpectedReply(format!("{value:?} for a get")));
        };
        let mut st = self.inner.lock();
        st.floor = st.floor.max(applied);
        if use_cache {
            st.cache.fill(key, value.clone(), applied, generation, now());
        }
        Ok(value)
    }

    /// Whether a value or directory is at `key`.
    pub async fn exists(&self, key: &str) -> Result<bool, ClientError> {
        key::validate(key, self.inner.config.key_bytes_max)?;
        self.inner.pump_now();
        {
            let mut st = self.inner.lock();
            let floor = st.floor;
            // A cached value answers; a cached absence does not (a directory is not cached).
            if let Some(hit) = st.cache.lookup(key, floor, now()) {
                if hit.value.is_some() {
                    st.floor = st.floor.max(hit.as_of);
                    return Ok(true);
                }
            }
        }
        let read = self.send_read(ReadOp::Exists { key: key.to_string() }, false).await?;
        expect_bool(self.seen(read))
    }

    pub async fn is_dir(&self, key: &str) -> Result<bool, ClientError> {
        key::validate(key, self.inner.config.key_bytes_max)?;
        self.inner.pump_now();
        let read = self.send_read(ReadOp::IsDir { key: key.to_string() }, false).await?;
        expect_bool(self.seen(read))
    }

    /// The metadata of `key` (see [`KeyStat`]): the zxid of its last write, whether it is a
    /// directory, its value's size and its ephemeral owner; `None` when nothing is there. One
    /// read of one node, at or above this client's floor (never from the client cache, which
    /// holds no owners).
    pub async fn stat(&self, key: &str) -> Result<Option<KeyStat>, ClientError> {
        key::validate(key, self.inner.config.key_bytes_max)?;
        self.inner.pump_now();
        let read = self.send_read(ReadOp::Stat { key: key.to_string() }, false).await?;
        match self.seen(read) {
            ReadValue::Stat(stat) => Ok(stat),
            other => Err(ClientError::UnexpectedReply(format!("{other:?} for a stat"))),
        }
    }

    /// The direct children of directory `dir`, sorted by name.
    pub async fn list(&self, dir: &str) -> Result<Vec<DirEntry>, ClientError> {
        key::validate(dir, self.inner.config.key_bytes_max)?;
        self.inner.pump_now();
        let read = self.send_read(ReadOp::List { dir: dir.to_string() }, false).await?;
        match self.seen(read) {
            ReadValue::List(entries) => Ok(entries),
            other => Err(ClientError::UnexpectedReply(format!("{other:?} for a list"))),
        }
    }

    /// One page of a range read (see [`protocol::range`]): the values below directory `dir`,
    /// recursively, in key byte order from `from` on (inclusive), at most `limit` of them
    /// and about [`RANGE_PAGE_BYTES`] bytes, all of one state (`RangePage::zxid`), with the key
    /// the next page starts at. One read of one node, at or above this client's floor; never
    /// from the client cache.
    pub async fn range_page(
        &self,
        dir: &str,
        from: Option<&str>,
        limit: u32,
    ) -> Result<RangePage, ClientError> {
        self.range_page_at(dir, from, limit, Zxid::ZERO).await
    }

    async fn range_page_at(
        &self,
        dir: &str,
        from: Option<&str>,
        limit: u32,
        floor: Zxid,
    ) -> Result<RangePage, ClientError> {
        range::validate(dir, from, limit, self.inner.config.key_bytes_max).map_err(|e| match e {
            range::RangeError::BadKey(e) => ClientError::BadKey(e),
            other => ClientError::Refused { code: ErrorCode::BadRequest, detail: other.to_string() },
        })?;
        self.inner.pump_now();
        let op = ReadOp::Range {
            dir: dir.to_string(),
            from: from.map(str::to_string),
            limit,
            bytes_max: RANGE_PAGE_BYTES,
        };
        let read = self.inner.send_read(op, false, floor, &[], &mut None).await?;
        match self.seen(read) {
            ReadValue::Range(page) => Ok(page),
            other => Err(ClientError::UnexpectedReply(format!("{other:?} for a range"))),
        }
    }

    /// Every value below directory `dir` (recursively, in key byte order, from `from` on),
    /// at most `limit` of them (`None`: all), read page by page (see [`Client::range_page`]).
    ///
    /// Each page is one state of a node; a later page is of the same state or a later one.
    /// When the pages were not all of one state, the history window tells whether anything
    /// in an earlier page's part of the range changed before the last page's zxid; if not, the
    /// whole result is the state at that zxid, and if so the range is read again from the
    /// first page that changed (at most [`RANGE_REREADS_MAX`] times). [`RangeRead::snapshot`]
    /// is the zxid of the one state the result shows, or `None` when no such state could be
    /// shown (the range kept changing, or the history no longer reached back): then each page
    /// is one state and the pages' states only move forward.
    pub async fn range(
        &self,
        dir: &str,
        from: Option<&str>,
        limit: Option<usize>,
    ) -> Result<RangeRead, ClientError> {
        self.range_with(dir, from, limit, protocol::limits::RANGE_ENTRIES_MAX as u32).await
    }

    /// [`Client::range`] in pages of at most `page_values` values (and
    /// [`RANGE_PAGE_BYTES`] bytes) each.
    pub async fn range_with(
        &self,
        dir: &str,
        from: Option<&str>,
        limit: Option<usize>,
        page_values: u32,
    ) -> Result<RangeRead, ClientError> {
        let limit = limit.unwrap_or(usize::MAX);
        let first = range::start(dir, from);
        let mut pages: Vec<ReadPage> = Vec::new();
        let mut rereads = 0;
        let mut restart_floor = Zxid::ZERO;
        loop {
            // Read from where the kept pages end, up to the limit.
            let mut count: usize = pages.iter().map(|p| p.entries.len()).sum();
            let mut at = pages.last().map_or(Some(first.clone()), |p| p.next.clone());
            let mut floor = pages.last().map_or(restart_floor, |p| p.zxid.max(restart_floor));
            while let (Some(start), true) = (at.clone(), count < limit) {
                let want = (limit - count).min(page_values.max(1) as usize) as u32;
                let from = (start != range::prefix(dir)).then_some(start.as_str());
                let page = self.range_page_at(dir, from, want, floor).await?;
                count += page.entries.len();
                floor = page.zxid;
                at = page.next.clone();
                pages.push(ReadPage { start, zxid: page.zxid, entries: page.entries, next: page.next });
            }
            let last = pages.last().map_or(Zxid::ZERO, |p| p.zxid);
            let changed = if pages.iter().all(|p| p.zxid == last) {
                Ok(None)
            } else {
                self.first_changed_page(dir, &pages, last).await
            };
            let snapshot = match changed {
                Ok(None) => Some(last),
                Ok(Some(i)) if rereads < RANGE_REREADS_MAX => {
                    rereads += 1;
                    pages.truncate(i);
                    // Read again at or above the latest state seen.
                    restart_floor = last;
                    continue;
                }
                Ok(Some(_)) | Err(ClientError::Compacted { .. }) => None,
                Err(e) => return Err(e),
            };
            let next = pages.last().and_then(|p| p.next.clone());
            let entries = pages.into_iter().flat_map(|p| p.entries).collect();
            return Ok(RangeRead { entries, snapshot, zxid: last, next });
        }
    }

    /// The first of `pages` (all read at or below `last`) that some change in the history
    /// after its own zxid and up to `last` touched: `None` when none was, and the pages then
    /// show exactly the state at `last`.
    async fn first_changed_page(
        &self,
        dir: &str,
        pages: &[ReadPage],
        last: Zxid,
    ) -> Result<Option<usize>, ClientError> {
        let mut after = pages.iter().map(|p| p.zxid).min().unwrap_or(last);
        let mut first: Option<usize> = None;
        while after < last {
            let op = ReadOp::History {
                scope: Scope::Prefix(dir.to_string()),
                after,
                values: false,
                bytes_max: HISTORY_PAGE_BYTES,
            };
            let read = self.inner.send_read(op, false, last, &[], &mut None).await?;
            let ReadValue::History(page) = self.seen(read) else {
                return Err(ClientError::UnexpectedReply("not a history page".into()));
            };
            for event in page.events.iter().filter(|e| e.zxid <= last) {
                // A key, or a directory and its subtree: within [key, key + "0").
                let end = format!("{}0", event.key);
                let touched = pages.iter().position(|p| {
                    p.zxid < event.zxid
                        && p.next.as_deref().is_none_or(|next| event.key.as_str() < next)
                        && end.as_str() > p.start.as_str()
                });
                if let Some(i) = touched {
                    first = Some(first.map_or(i, |f| f.min(i)));
                }
            }
            if page.through <= after {
                break;
            }
            after = page.through;
        }
        Ok(first)
    }

    /// Raises the floor to the state a read has shown (monotonic reads).
    fn seen(&self, (value, applied): (ReadValue, Zxid)) -> ReadValue {
        let mut st = self.inner.lock();
        st.floor = st.floor.max(applied);
        value
    }

    /// A node's status (for `shoal status`), from the node at `address`.
    pub async fn status_of(
        &self,
        address: &str,
    ) -> Result<protocol::message::data::NodeStatus, ClientError> {
        let request = ReadRequest { floor: Zxid::ZERO, linearizable: false, op: ReadOp::Status };
        let timeout = self.inner.config.request_timeout;
        let reply = self.inner.transport.request(address, Message::Request(request), timeout).await;
        match reply {
            Ok(Message::ReadReply(r)) => match r.result {
                Ok(ReadValue::Status(s)) => Ok(s),
                Ok(other) => Err(ClientError::UnexpectedReply(format!("{other:?}"))),
                Err(e) => Err(ClientError::from_wire(e)),
            },
            Ok(other) => Err(ClientError::UnexpectedReply(format!("{:?}", other.kind()))),
            Err(TransportError::Timeout(_)) => Err(ClientError::Timeout { attempts: 1 }),
            Err(e) => Err(ClientError::Transport(e.to_string())),
        }
    }

    /// Asks the node at `address` to start a backup to `target` (for `shoal backup`): `Ok(Ok(()))`
    /// when it answered that the backup started, `Ok(Err(refusal))` with the node's reason
    /// when it refused. Progress is then read from its status (`NodeStatus::transfer`).
    pub async fn start_backup(
        &self,
        address: &str,
        target: protocol::message::transfer::BackupTarget,
    ) -> Result<Result<(), protocol::message::data::WireError>, ClientError> {
        let request = Message::Backup(protocol::message::transfer::Backup { target });
        let timeout = self.inner.config.request_timeout;
        match self.inner.transport.request(address, request, timeout).await {
            Ok(Message::ReadReply(r)) => match r.result {
                Ok(ReadValue::Bool(true)) => Ok(Ok(())),
                Ok(other) => Err(ClientError::UnexpectedReply(format!("{other:?}"))),
                Err(refusal) => Ok(Err(refusal)),
            },
            Ok(other) => Err(ClientError::UnexpectedReply(format!("{:?}", other.kind()))),
            Err(TransportError::Timeout(_)) => Err(ClientError::Timeout { attempts: 1 }),
            Err(e) => Err(ClientError::Transport(e.to_string())),
        }
    }

    /// After a flush (or at start) the cache accepts no fill until a notice arrives or it knows
    /// a fill floor; ask the master, once, for its linearizable zxid (every entry above it
    /// commits later, so its notice should still come; the first notice's `prev` proves it or
    /// the cache flushes). Skipped when no master is known or one was asked less than
    /// [`POSITION_PROBE_BACKOFF`] ago: failure only delays caching.
    async fn learn_position(&self) {
        let (generation, master) = {
            let mut st = self.inner.lock();
            let t = now();
            if st.cache.can_fill() || st.next_probe.is_some_and(|at| t < at) {
                return;
            }
            let Some(master) = st.router.master_address(t) else { return };
            st.next_probe = Some(t + POSITION_PROBE_BACKOFF);
            (st.cache.generation(), master)
        };
        let request = ReadRequest { floor: Zxid::ZERO, linearizable: true, op: ReadOp::Status };
        let timeout = self.inner.config.request_timeout;
        let reply = self.inner.transport.request(&master, Message::Request(request), timeout).await;
        if let Ok(Message::ReadReply(reply)) = reply {
            let mut st = self.inner.lock();
            st.router.on_reply(&master, reply.load, reply.applied, now());
            if reply.result.is_ok() {
                st.cache.learn_position(reply.applied, generation);
            }
        }
    }

    async fn send_read(
        &self,
        op: ReadOp,
        linearizable: bool,
    ) -> Result<(ReadValue, Zxid), ClientError> {
        self.inner.send_read(op, linearizable, Zxid::ZERO, &[], &mut None).await
    }

    // ---- writes ----

    /// Creates `key` with `value`; fails with `AlreadyExists` if it is there. With a session
    /// id, the key is ephemeral: removed when that session expires.
    pub async fn create(
        &self,
        key: &str,
        value: impl Into<Bytes>,
        ephemeral: Option<u64>,
    ) -> Result<Zxid, ClientError> {
        self.batch(Batch::new().create(key, value, ephemeral)).await
    }

    /// Writes `value` at `key`, creating or overwriting it.
    pub async fn write(&self, key: &str, value: impl Into<Bytes>) -> Result<Zxid, ClientError> {
        self.batch(Batch::new().write(key, value)).await
    }

    /// Creates directory `key` (its parent must exist).
    pub async fn mkdir(&self, key: &str) -> Result<Zxid, ClientError> {
        self.batch(Batch::new().mkdir(key)).await
    }

    /// Removes `key`; a directory must be empty unless `recursive`.
    pub async fn remove(&self, key: &str, recursive: bool) -> Result<Zxid, ClientError> {
        self.batch(Batch::new().remove(key, recursive)).await
    }

    /// Renames a key or a directory subtree atomically (sent as the Rename message).
    pub async fn rename(&self, from: &str, to: &str) -> Result<Zxid, ClientError> {
        let ops = vec![Op::Rename { from: from.to_string(), to: to.to_string() }];
        self.validate_ops(&ops, &[])?;
        let (from, to) = (from.to_string(), to.to_string());
        self.submit(ops, move |request| {
            Message::Rename(RenameRequest { request, from: from.clone(), to: to.clone() })
        })
        .await
    }

    /// Commits `batch` as one entry, atomically.
    pub async fn batch(&self, batch: Batch) -> Result<Zxid, ClientError> {
        self.validate_ops(&batch.ops, &batch.conditions)?;
        let Batch { ops, conditions } = batch;
        let sent_ops = ops.clone();
        self.submit(ops, move |request| {
            Message::Update(UpdateRequest {
                request,
                conditions: conditions.clone(),
                ops: sent_ops.clone(),
            })
        })
        .await
    }

    /// The write rules of `protocol::batch`, checked here so that a bad batch is refused before
    /// anything is sent, with the error the server would give.
    fn validate_ops(&self, ops: &[Op], conditions: &[Condition]) -> Result<(), ClientError> {
        let config = &self.inner.config;
        let limits =
            Limits { key_bytes_max: config.key_bytes_max, value_bytes_max: config.value_bytes_max };
        let single = ops.len() == 1 && conditions.is_empty();
        batch::check_write(ops, conditions, &limits, Some(self.inner.id))
            .map_err(shape_error)
            .map_err(|e| if single { e.for_single_op() } else { e })
    }

    /// Sends one write to the master with one request id, following redirects and retrying
    /// on timeout, at most `attempts_max` timeouts and `redirects_max` rounds without a master.
    async fn submit(
        &self,
        ops: Vec<Op>,
        message: impl Fn(RequestId) -> Message,
    ) -> Result<Zxid, ClientError> {
        self.inner.pump_now();
        let generation = self.inner.lock().cache.generation();
        let (request, _slot) = self.inner.next_request().await;
        let attempts = self.inner.config.attempts_max;
        let timeout = self.inner.config.request_timeout;
        let single = ops.len() == 1;
        let zxid = self
            .inner
            .to_master(request, message, take_write, |z| *z, attempts, timeout)
            .await
            .map_err(|e| if single { e.for_single_op() } else { e })?;
        let mut st = self.inner.lock();
        st.floor = st.floor.max(zxid);
        st.cache.apply_own(&ops, zxid, generation, now());
        Ok(zxid)
    }

    /// Sends one Lock message to the master (see [`Inner::lock_call`]).
    pub(crate) async fn lock_call(&self, op: LockRequestOp) -> Result<LockGrant, ClientError> {
        let timeout = self.inner.config.request_timeout;
        self.inner.lock_call(op, self.inner.config.attempts_max, timeout).await
    }

    /// Raises the floor to `zxid` (a lock grant's token: reads under the lock see every write
    /// committed before the grant).
    pub(crate) fn raise_floor(&self, zxid: Zxid) {
        let mut st = self.inner.lock();
        st.floor = st.floor.max(zxid);
    }

    // ---- watches ----

    /// Calls `callback` for each event of `kinds` on `target`, in zxid order, each once. See
    /// [`crate::watch`] for what each kind means and how a watch catches up from history.
    ///
    /// Only changes above this client's floor at registration are reported: what it has
    /// already seen is not news. A client that has not read or written yet (floor zero) is told
    /// of the changes from the next notice of the stream on; read the path first to start from
    /// a known point (the `shoal watch` command does), or use [`Self::watch_from`].
    pub fn watch(
        &self,
        target: Target,
        kinds: Kinds,
        callback: impl Fn(&WatchEvent) + Send + Sync + 'static,
    ) -> Result<WatchId, ClientError> {
        let floor = self.inner.lock().floor;
        let from = (floor > Zxid::ZERO).then_some(floor);
        self.register(target, kinds, from, Arc::new(callback))
    }

    /// Like [`Self::watch`], with the events of every entry above `from`: a watcher that was
    /// away resumes from the last zxid it saw, and gets every event after it once, in order,
    /// from the nodes' history window, then live. When history no longer reaches back to
    /// `from` the watch gets [`WatchEvent::Compacted`] naming the oldest zxid it holds, then
    /// the events after that.
    pub fn watch_from(
        &self,
        target: Target,
        kinds: Kinds,
        from: Zxid,
        callback: impl Fn(&WatchEvent) + Send + Sync + 'static,
    ) -> Result<WatchId, ClientError> {
        self.register(target, kinds, Some(from), Arc::new(callback))
    }

    fn register(
        &self,
        target: Target,
        kinds: Kinds,
        from: Option<Zxid>,
        callback: Callback,
    ) -> Result<WatchId, ClientError> {
        key::validate(target.path(), self.inner.config.key_bytes_max)?;
        self.inner.pump_now();
        let mut st = self.inner.lock();
        let id = match from {
            Some(from) => st.watches.register_after(target, kinds, from, callback),
            None => st.watches.register(target, kinds, callback),
        };
        let id = id.ok_or(ClientError::TooLarge {
            what: "watch count",
            len: crate::watch::WATCHES_MAX + 1,
            max: crate::watch::WATCHES_MAX,
        })?;
        // Starts the catch-up when the watch begins behind the stream.
        self.inner.deliver(st, Vec::new());
        Ok(id)
    }

    /// Like [`Self::watch`], delivering into a channel instead of a callback.
    pub fn watch_channel(
        &self,
        target: Target,
        kinds: Kinds,
    ) -> Result<(WatchId, mpsc::UnboundedReceiver<WatchEvent>), ClientError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = self.watch(target, kinds, move |event| {
            let _ = tx.send(event.clone());
        })?;
        Ok((id, rx))
    }

    /// Like [`Self::watch_from`], delivering into a channel instead of a callback.
    pub fn watch_channel_from(
        &self,
        target: Target,
        kinds: Kinds,
        from: Zxid,
    ) -> Result<(WatchId, mpsc::UnboundedReceiver<WatchEvent>), ClientError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = self.watch_from(target, kinds, from, move |event| {
            let _ = tx.send(event.clone());
        })?;
        Ok((id, rx))
    }

    /// Whether some watch is catching up from history (for tests and status).
    pub fn watches_catching_up(&self) -> bool {
        self.inner.lock().watches.wants_catch_up()
    }

    /// Removes a watch; false when it was not registered.
    pub fn unwatch(&self, id: WatchId) -> bool {
        self.inner.lock().watches.clear(id)
    }
}

/// One request in flight to `address`, counted for routing until it ends or is cancelled.
pub(crate) struct Inflight<'a, T: Transport> {
    inner: &'a Inner<T>,
    address: &'a str,
}

impl<T: Transport> Drop for Inflight<'_, T> {
    fn drop(&mut self) {
        self.inner.lock().router.finish(self.address);
    }
}

/// Which nodes a request may go to (see [`Inner::pick_target`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Route {
    Write,
    LinearizableRead,
    Read,
}

/// The outcome of [`Inner::pick_target`].
enum NextSend {
    /// Send to `address`, with the client's `floor`, believing in the master of epoch
    /// `believed`.
    Send { address: String, floor: Zxid, believed: u32 },
    /// Every node was tried and none is the master: an election may be under way.
    WaitForMaster,
    /// No live node is known at all.
    NoNode,
}

/// Rounds of a request that found no master (or saw the master move), bounded by
/// `redirects_max`.
struct Redirects {
    count: usize,
    max: usize,
}

impl Redirects {
    fn new(max: usize) -> Redirects {
        Redirects { count: 0, max }
    }

    /// Every node was asked and none is the master: an election may be under way. Counts
    /// the round, forgets who was asked and pauses before the next one.
    async fn new_round(
        &mut self,
        tried: &mut Vec<String>,
        master: Option<NodeId>,
    ) -> Result<(), ClientError> {
        self.count(master)?;
        tried.clear();
        tokio::time::sleep(NO_MASTER_BACKOFF).await;
        Ok(())
    }

    /// Counts one round; past the bound, `NotMaster` naming the last master heard of.
    fn count(&mut self, master: Option<NodeId>) -> Result<(), ClientError> {
        self.count += 1;
        if self.count > self.max {
            return Err(ClientError::NotMaster { master });
        }
        Ok(())
    }
}

fn expect_bool(value: ReadValue) -> Result<bool, ClientError> {
    match value {
        ReadValue::Bool(b) => Ok(b),
        other => Err(ClientError::UnexpectedReply(format!("{other:?} for a bool"))),
    }
}

/// A reply unpacked: its request id, the node's load, and the result; or the message itself
/// when it is not the kind expected.
type Unpacked<R> = Result<(RequestId, Load, Result<R, WireError>), Message>;

fn take_write(message: Message) -> Unpacked<Zxid> {
    match message {
        Message::WriteReply(r) => Ok((r.request, r.load, r.result)),
        other => Err(other),
    }
}

fn take_lock(message: Message) -> Unpacked<LockGrant> {
    match message {
        Message::LockReply(r) => Ok((r.request, r.load, r.result)),
        other => Err(other),
    }
}

impl<T: Transport> Inner<T> {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("client state poisoned")
    }

    /// Sends a read to a node chosen by the router (the master for linearizable reads), trying
    /// others on timeout or `Behind`, at most `attempts_max` sends. Callers raise the floor
    /// with the returned applied zxid (the state they have now seen). The request's floor is
    /// at least `floor_min`. Nodes in `avoid` are asked only when no other one can be (a
    /// catching-up watch avoids the nodes whose history window was too short);
    /// `answered` is set to the node whose answer is returned.
    async fn send_read(
        &self,
        op: ReadOp,
        linearizable: bool,
        floor_min: Zxid,
        avoid: &[String],
        answered: &mut Option<String>,
    ) -> Result<(ReadValue, Zxid), ClientError> {
        let config = &self.config;
        let mut tried: Vec<String> = avoid.to_vec();
        // Sends that timed out or found the node behind count as attempts; for a linearizable
        // read, rounds that find no master count against `redirects_max` instead, as for
        // writes (`to_master`), so that an election is waited out rather than every attempt
        // burnt in a few milliseconds of redirects.
        let mut attempts = 0;
        let mut redirects = Redirects::new(config.redirects_max);
        let route = if linearizable { Route::LinearizableRead } else { Route::Read };
        while attempts < config.attempts_max {
            let (address, floor, believed) = match self.pick_target(route, &tried, floor_min) {
                NextSend::Send { address, floor, believed } => (address, floor, believed),
                NextSend::WaitForMaster => {
                    redirects.new_round(&mut tried, None).await?;
                    continue;
                }
                NextSend::NoNode => {
                    return Err(ClientError::Unavailable {
                        detail: "no live, unfrozen node heard from within the validity".into(),
                    })
                }
            };
            let request = Message::Request(ReadRequest { floor, linearizable, op: op.clone() });
            let timeout = config.request_timeout;
            let reply = if linearizable {
                // Only the master answers: when another one is announced meanwhile, ask it
                // now rather than wait out the timeout (see `to_master`).
                match self.attempt(&address, believed, request, timeout).await {
                    Some(reply) => reply,
                    None => {
                        redirects.count(None)?;
                        continue;
                    }
                }
            } else {
                let _inflight = Inflight { inner: self, address: &address };
                self.transport.request(&address, request, timeout).await
            };
            let mut st = self.lock();
            let reply = match reply {
                Ok(Message::ReadReply(reply)) => reply,
                Ok(other) => {
                    return Err(ClientError::UnexpectedReply(format!("{:?}", other.kind())))
                }
                Err(TransportError::Timeout(_)) | Err(TransportError::Unreachable(_)) => {
                    st.stats.timeouts += 1;
                    attempts += 1;
                    tried.push(address);
                    continue;
                }
                Err(TransportError::Closed) => {
                    return Err(ClientError::Transport("transport closed".into()))
                }
            };
            st.router.on_reply(&address, reply.load, reply.applied, now());
            *answered = Some(address.clone());
            match reply.result {
                Ok(value) => return Ok((value, reply.applied)),
                Err(e) if e.code == ErrorCode::Behind => {
                    st.stats.behind += 1;
                    attempts += 1;
                    tried.push(address);
                }
                Err(e) if linearizable && matches!(e.code, ErrorCode::NotMaster { .. }) => {
                    // Followed within this round (each node once); only a round that finds no
                    // master counts against `redirects_max`.
                    let ErrorCode::NotMaster { master } = e.code else { unreachable!() };
                    st.router.on_redirect(master);
                    st.stats.redirects += 1;
                    tried.push(address);
                }
                Err(e) => return Err(ClientError::from_wire(e)),
            }
        }
        Err(ClientError::Timeout { attempts: config.attempts_max })
    }

    /// The next request id, once the seqs in flight leave room for it (see
    /// [`crate::window`]); the request is in flight until the slot drops.
    pub(crate) async fn next_request(&self) -> (RequestId, crate::window::Slot<'_>) {
        let slot = self.requests.open().await;
        (RequestId { client: self.id, seq: slot.seq() }, slot)
    }

    /// Sends one Lock message to the master with one request id (retries keep it, so a
    /// grant is never applied twice), at most `attempts` timeouts of `timeout` each.
    pub(crate) async fn lock_call(
        &self,
        op: LockRequestOp,
        attempts: usize,
        timeout: Duration,
    ) -> Result<LockGrant, ClientError> {
        self.pump_now();
        let (request, _slot) = self.next_request().await;
        let message = move |request| Message::Lock(LockRequest { request, op: op.clone() });
        let applied = |grant: &LockGrant| match grant {
            LockGrant::Granted { token } => *token,
            _ => Zxid::ZERO,
        };
        self.to_master(request, message, take_lock, applied, attempts, timeout).await
    }

    /// Sends `request` to the master, following `NotMaster` redirects and retrying on timeout
    /// (at most `attempts` timeouts and `redirects_max` rounds without a master); `take`
    /// unpacks the reply kind expected, `applied_of` says how far a success shows the master
    /// has applied.
    async fn to_master<R>(
        &self,
        request: RequestId,
        message: impl Fn(RequestId) -> Message,
        take: fn(Message) -> Unpacked<R>,
        applied_of: impl Fn(&R) -> Zxid,
        attempts: usize,
        timeout: Duration,
    ) -> Result<R, ClientError> {
        let mut timeouts = 0;
        let mut redirects = Redirects::new(self.config.redirects_max);
        let mut tried: Vec<String> = Vec::new();
        let mut last_master = None;
        loop {
            let (address, believed) = match self.pick_target(Route::Write, &tried, Zxid::ZERO) {
                NextSend::Send { address, believed, .. } => (address, believed),
                NextSend::WaitForMaster => {
                    redirects.new_round(&mut tried, last_master).await?;
                    continue;
                }
                NextSend::NoNode => {
                    return Err(ClientError::Unavailable {
                        detail: "no live node heard from within the validity".into(),
                    })
                }
            };
            let Some(reply) = self.attempt(&address, believed, message(request), timeout).await
            else {
                // A master of a later epoch was announced while this attempt waited (the one
                // asked died or lost its place): go there now, with the same request id,
                // rather than wait out the timeout on a node that cannot answer.
                let master = {
                    let mut st = self.lock();
                    st.stats.redirects += 1;
                    st.router.master()
                };
                redirects.count(master)?;
                continue;
            };
            let mut st = self.lock();
            let (load, result) = match reply.map(take) {
                Ok(Ok((id, load, result))) if id == request => (load, result),
                Ok(Ok(_)) => {
                    return Err(ClientError::UnexpectedReply("another request's reply".into()))
                }
                Ok(Err(other)) => {
                    return Err(ClientError::UnexpectedReply(format!("{:?}", other.kind())))
                }
                Err(TransportError::Closed) => {
                    return Err(ClientError::Transport("transport closed".into()))
                }
                Err(_) => {
                    // Only the master can take the write, so the retry goes to whoever is the
                    // master now (often the same node, merely slow); the request id makes it
                    // safe if the first attempt did commit.
                    st.stats.timeouts += 1;
                    timeouts += 1;
                    if timeouts >= attempts {
                        return Err(ClientError::Timeout { attempts: timeouts });
                    }
                    continue;
                }
            };
            // An acknowledged write is applied on the master: it is at least that far.
            let applied = result.as_ref().map_or(Zxid::ZERO, &applied_of);
            st.router.on_reply(&address, load, applied, now());
            match result {
                Ok(value) => return Ok(value),
                Err(e) => match e.code {
                    ErrorCode::NotMaster { master } => {
                        // Followed within this round (each node once); only a round that finds
                        // no master counts against `redirects_max` (see `WaitForMaster`).
                        st.stats.redirects += 1;
                        last_master = master.or(last_master);
                        st.router.on_redirect(master);
                        tried.push(address);
                    }
                    _ => return Err(ClientError::from_wire(e)),
                },
            }
        }
    }

    /// Where the next attempt of a request goes: the master (or, not knowing it, any node
    /// not yet `tried`) for writes and linearizable reads; a node that has applied the floor
    /// (the client's, raised to `floor_min`) for other reads. Counts the send and marks it in
    /// flight with the router.
    fn pick_target(&self, route: Route, tried: &[String], floor_min: Zxid) -> NextSend {
        let mut st = self.lock();
        let t = now();
        let floor = st.floor.max(floor_min);
        let believed = st.router.master_epoch();
        let address = match route {
            Route::Write | Route::LinearizableRead => st
                .router
                .master_address(t)
                .filter(|a| !tried.iter().any(|b| b == a))
                .or_else(|| st.router.pick_any(tried, t)),
            Route::Read => {
                st.router.pick_read(floor, tried, t).or_else(|| st.router.pick_read(floor, &[], t))
            }
        };
        match address {
            Some(address) => {
                st.router.begin(&address);
                match route {
                    Route::Write => st.stats.writes_sent += 1,
                    Route::LinearizableRead | Route::Read => st.stats.reads_sent += 1,
                }
                NextSend::Send { address, floor, believed }
            }
            None if route != Route::Read && !tried.is_empty() => NextSend::WaitForMaster,
            None => NextSend::NoNode,
        }
    }

    /// One attempt at the master: [`Inner::request_unless_master_moves`], with the request
    /// counted in flight at `address` while it waits.
    async fn attempt(
        &self,
        address: &str,
        believed: u32,
        message: Message,
        timeout: Duration,
    ) -> Option<Result<Message, TransportError>> {
        let _inflight = Inflight { inner: self, address };
        self.request_unless_master_moves(address, believed, message, timeout).await
    }

    /// Sends `message` to `address` and waits for the reply (or the timeout), unless the
    /// router hears of a master of a later epoch than `believed` (the epoch it knew its master
    /// by when the attempt was sent) at another address: then `None`, at once. Only a new
    /// epoch counts — an FSLive of a master elected meanwhile, or of a follower of one — so
    /// redirect hints that name different nodes during an election do not cut waits short.
    async fn request_unless_master_moves(
        &self,
        address: &str,
        believed: u32,
        message: Message,
        timeout: Duration,
    ) -> Option<Result<Message, TransportError>> {
        let reply = self.transport.request(address, message, timeout);
        tokio::pin!(reply);
        loop {
            tokio::select! {
                r = &mut reply => return Some(r),
                _ = tokio::time::sleep(MASTER_CHANGE_POLL) => {
                    self.pump_now();
                    let st = self.lock();
                    let moved = st.router.master_epoch() > believed
                        && st.router.master_address(now()).is_some_and(|a| a != address);
                    if moved {
                        return None;
                    }
                }
            }
        }
    }

    /// Applies every event already queued.
    fn pump_now(&self) {
        let mut st = self.lock();
        let mut deliveries = Vec::new();
        while let Ok(event) = st.group.try_recv() {
            st.apply(event, &mut deliveries);
        }
        self.deliver(st, deliveries);
    }

    /// The background pump's poll: applies what is queued, registers for more.
    fn poll_group(&self, cx: &mut Context<'_>) -> Poll<bool> {
        let mut st = self.lock();
        let mut deliveries = Vec::new();
        let mut progressed = false;
        let open = loop {
            match st.group.poll_recv(cx) {
                Poll::Ready(Some(event)) => {
                    st.apply(event, &mut deliveries);
                    progressed = true;
                }
                Poll::Ready(None) => break false,
                Poll::Pending => break true,
            }
        };
        self.deliver(st, deliveries);
        match (open, progressed) {
            (false, _) => Poll::Ready(false),
            (true, true) => Poll::Ready(true),
            (true, false) => Poll::Pending,
        }
    }

    /// Queues `deliveries` (still under the state lock, so in zxid order), releases the lock,
    /// and runs queued callbacks unless another thread already is.
    fn deliver(&self, state: MutexGuard<'_, State>, deliveries: Vec<Delivery>) {
        if !deliveries.is_empty() {
            self.outbox.lock().expect("outbox poisoned").extend(deliveries);
        }
        let catch_up = state.watches.wants_catch_up();
        drop(state);
        if catch_up && !self.catching_up.swap(true, Ordering::AcqRel) {
            self.runtime.spawn(run_catch_up(self.me.clone()));
        }
        loop {
            if self.delivering.swap(true, Ordering::AcqRel) {
                return;
            }
            loop {
                let next = self.outbox.lock().expect("outbox poisoned").pop_front();
                let Some((callback, event)) = next else { break };
                callback(&event);
            }
            self.delivering.store(false, Ordering::Release);
            // A delivery queued after our last look, by a thread that saw us busy, is ours.
            if self.outbox.lock().expect("outbox poisoned").is_empty() {
                return;
            }
        }
    }
}

impl State {
    fn apply(&mut self, event: GroupEvent, deliveries: &mut Vec<Delivery>) {
        let t = now();
        match event {
            GroupEvent::Message(Message::FsLive(live)) => self.router.on_fs_live(&live, t),
            GroupEvent::Message(Message::Freeze(freeze)) => self.router.on_freeze(&freeze),
            GroupEvent::Message(Message::UpdateNotice(notice)) => {
                // The cache and the watches each follow the notice chain: a break flushes the
                // cache, and makes the watches concerned catch up from history.
                if self.cache.apply_notice(&notice, t) == NoticeOutcome::FlushedForBreak {
                    self.stats.chain_breaks += 1;
                }
                deliveries.extend(self.watches.on_notice(&notice));
            }
            GroupEvent::Message(Message::LockChanged(change)) => {
                deliveries.extend(self.watches.on_lock_changed(&change));
            }
            GroupEvent::Message(_) => {}
            GroupEvent::Gap { .. } => {
                self.stats.gaps += 1;
                self.cache.flush();
                deliveries.extend(self.watches.on_gap());
            }
        }
    }
}

/// A shape refusal as the client's typed errors say it (as the server's would arrive).
fn shape_error(e: ShapeError) -> ClientError {
    match e {
        ShapeError::Empty => ClientError::ConditionFailed { detail: e.to_string() },
        ShapeError::TooManyOps { len, max } => {
            ClientError::TooLarge { what: "batch (ops)", len, max }
        }
        ShapeError::BadKey { error, .. } | ShapeError::BadConditionKey { error, .. } => {
            ClientError::BadKey(error)
        }
        ShapeError::ValueTooLarge { len, max, .. } => {
            ClientError::TooLarge { what: "value", len, max }
        }
        ShapeError::NotInWrite { .. } | ShapeError::ForeignRelease { .. } => {
            ClientError::from_wire(e.to_wire())
        }
    }
}

/// What one history read for a catching-up watch came to.
enum PageOutcome {
    Page(protocol::message::data::HistoryPage),
    Compacted(Zxid),
    Failed,
}

/// Reads history for catching-up watches, one page at a time, until none is left (see
/// [`crate::watch`]). One task at a time per client (`Inner::catching_up`); it holds the client
/// only while a read is in flight, so dropping the client ends it.
async fn run_catch_up<T: Transport>(me: Weak<Inner<T>>) {
    let mut failures = 0u32;
    let mut compacted = 0u32;
    let mut last: Option<CatchUp> = None;
    // Nodes that answered the current job `Compacted`.
    let mut short: Vec<String> = Vec::new();
    let mut least_oldest: Option<Zxid> = None;
    loop {
        let Some(inner) = me.upgrade() else { return };
        let job = inner.lock().watches.next_catch_up();
        let Some(job) = job else {
            inner.catching_up.store(false, Ordering::Release);
            // A watch that began catching up after our look, from a thread that saw this task
            // running, is ours.
            let more = inner.lock().watches.wants_catch_up();
            if more && !inner.catching_up.swap(true, Ordering::AcqRel) {
                continue;
            }
            return;
        };
        if last.as_ref() != Some(&job) {
            (failures, compacted) = (0, 0);
            short.clear();
            least_oldest = None;
        }
        last = Some(job.clone());
        let op = ReadOp::History {
            scope: job.scope.clone(),
            after: job.after,
            values: false,
            bytes_max: HISTORY_PAGE_BYTES,
        };
        let mut answered = None;
        let read = inner.send_read(op, false, job.floor, &short, &mut answered).await;
        let outcome = match read {
            Ok((ReadValue::History(page), _)) => PageOutcome::Page(page),
            Err(ClientError::Compacted { oldest, .. }) => {
                // Ask another node next: this one's window may only be shorter (it restarted).
                short.extend(answered.filter(|a| !short.contains(a)));
                PageOutcome::Compacted(oldest)
            }
            Ok(_) | Err(_) => PageOutcome::Failed,
        };
        // Applied under the state lock; `true` when the read made no progress and the task
        // should pause before the next one (the guard must be gone before it awaits).
        let pause = {
            let mut st = inner.lock();
            let failed = |st: &mut MutexGuard<'_, State>, failures: &mut u32| {
                *failures += 1;
                if *failures >= CATCH_UP_FAILURES_MAX {
                    (st.watches.on_history_failed(&job), false)
                } else {
                    (Vec::new(), true)
                }
            };
            let (deliveries, pause) = match outcome {
                PageOutcome::Page(page) => {
                    st.stats.history_pages += 1;
                    let deliveries = st.watches.on_history_page(&job, page);
                    // A complete page short of the stream's position (the node answered from a
                    // window restarted below it) is no progress.
                    let stuck = st.watches.is_catching_up(job.id)
                        && st.watches.seen(job.id) == Some(job.after);
                    if stuck {
                        failed(&mut st, &mut failures)
                    } else {
                        (deliveries, false)
                    }
                }
                PageOutcome::Compacted(oldest) => {
                    compacted += 1;
                    // The node with the most history sets where the watch resumes.
                    let oldest = least_oldest.map_or(oldest, |l| l.min(oldest));
                    least_oldest = Some(oldest);
                    if compacted < COMPACTED_ANSWERS_MAX {
                        (Vec::new(), false)
                    } else {
                        (st.watches.on_history_compacted(&job, oldest), false)
                    }
                }
                PageOutcome::Failed => failed(&mut st, &mut failures),
            };
            inner.deliver(st, deliveries);
            pause
        };
        drop(inner);
        if pause {
            tokio::time::sleep(CATCH_UP_BACKOFF).await;
        }
    }
}

async fn run_pump<T: Transport>(inner: Weak<Inner<T>>) {
    loop {
        let open = poll_fn(|cx| match inner.upgrade() {
            Some(inner) => inner.poll_group(cx),
            None => Poll::Ready(false),
        })
        .await;
        if !open {
            return;
        }
        // Let callers run between bursts.
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{MemNetwork, MemTransport};
    use protocol::limits::BATCH_OPS_MAX;
    use protocol::message::lock::SessionOp;

    fn put(key: &str, value: &str) -> Op {
        Op::Put {
            key: key.into(),
            value: Bytes::from(value.to_string()),
            create_only: false,
            ephemeral: None,
        }
    }

    /// A client whose seed node answers nothing: any write that got sent would time out.
    fn client() -> Client<MemTransport> {
        let network = MemNetwork::new();
        let config = ClientConfig {
            seeds: vec!["n1".into()],
            key_bytes_max: 16,
            value_bytes_max: 4,
            rng_seed: Some(3),
            ..ClientConfig::default()
        };
        Client::new(network.transport(), config)
    }

    fn batch(ops: Vec<Op>, conditions: Vec<Condition>) -> Batch {
        Batch { ops, conditions }
    }

    /// The write rules (`protocol::batch`) refuse a bad batch in the client, before anything is
    /// sent, with the error the server would give for the same batch.
    #[tokio::test(start_paused = true)]
    async fn bad_batches_are_refused_before_sending() {
        let client = client();
        let me = client.id();
        let refused = |b: Batch| {
            let client = client.clone();
            async move { client.batch(b).await.expect_err("refused") }
        };
        assert!(matches!(
            refused(batch(vec![], vec![])).await,
            ClientError::ConditionFailed { .. }
        ));
        let many = vec![put("/k", "v"); BATCH_OPS_MAX];
        let cond = vec![Condition::KeyZxid { key: "/k".into(), zxid: Zxid::ZERO }];
        assert!(matches!(
            refused(batch(many, cond)).await,
            ClientError::TooLarge { what: "batch (ops)", len, .. } if len == BATCH_OPS_MAX + 1
        ));
        assert!(matches!(
            refused(batch(vec![put("rel", "v")], vec![])).await,
            ClientError::BadKey(_)
        ));
        assert_eq!(
            refused(batch(vec![put("/k", "12345")], vec![])).await,
            ClientError::TooLarge { what: "value", len: 5, max: 4 }
        );
        let rename = Op::Rename { from: "/a".into(), to: "/".into() };
        assert!(matches!(refused(batch(vec![rename], vec![])).await, ClientError::BadKey(_)));
        let bad_cond = vec![Condition::KeyZxid { key: "/a//b".into(), zxid: Zxid::ZERO }];
        assert!(matches!(
            refused(batch(vec![put("/k", "v")], bad_cond)).await,
            ClientError::BadKey(_)
        ));
        let bad_lock = vec![Condition::LockHeld { lock: "l".into(), auth: 3 }];
        assert!(matches!(
            refused(batch(vec![put("/k", "v")], bad_lock)).await,
            ClientError::BadKey(_)
        ));
        let grant = Op::Lock(LockOp::Grant {
            lock: "/l".into(),
            auth: 3,
            session: 0,
            holder: me,
            host: "h".into(),
        });
        assert!(matches!(
            refused(batch(vec![grant], vec![])).await,
            ClientError::Refused { code: ErrorCode::BadRequest, .. }
        ));
        let open = Op::Session(SessionOp::Open { session: 1, client: me, ttl_ms: 1_000 });
        assert!(matches!(
            refused(batch(vec![open], vec![])).await,
            ClientError::Refused { code: ErrorCode::BadRequest, .. }
        ));
        let foreign = Op::Lock(LockOp::Release { lock: "/l".into(), auth: 3, holder: me + 1 });
        assert!(matches!(refused(batch(vec![foreign], vec![])).await, ClientError::BadAuth { .. }));
        let bad_name = Op::Lock(LockOp::Release { lock: "l".into(), auth: 3, holder: me });
        assert!(matches!(refused(batch(vec![bad_name], vec![])).await, ClientError::BadKey(_)));
        assert_eq!(client.stats().writes_sent, 0, "a refused batch was sent");
    }
}
