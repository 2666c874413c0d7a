//! [`Server`]: answers Request, Update, Rename and Lock for one node, with the server LRU in
//! front of the backend and the node's load in every reply. Lock messages go to
//! [`Backend::lock`]: the lock rules are the backend's (the master's state machine and lease
//! clock), never the server's.
//!
//! # Writes on a follower: redirect, not forward
//! A follower answers a write with `NotMaster { master }` and the client resends it to the
//! master (it also learns the master from FSLive, so this happens about once per master
//! change). Forwarding would put a second unicast hop, a second timeout and a second retry path
//! inside every follower, and the master's request table already makes the client's resend safe.
//! The server therefore needs no connection to the master at all.
//!
//! # Reads
//! A read waits (up to [`ServerConfig::floor_wait`]) until the node has applied the request's
//! floor, else answers `Behind` so the client tries another node. A linearizable read first
//! asks the backend for the master's linearizable zxid (`NotMaster` on a follower) and waits for
//! that. Every reply carries the zxid whose state it shows and the node's current load.

use crate::backend::Backend;
use crate::cache::{CacheStats, ValueCache};
use crate::error::ServerError;
use crate::history::{HistoryError, HistoryWindow};
use crate::live::{LiveAnnouncer, FS_LIVE_INTERVAL_DEFAULT};
use crate::load::LoadGauge;
use crate::validate::validate_request;
use protocol::key;
use protocol::limits::{KEY_BYTES_DEFAULT, LIST_ENTRIES_MAX, VALUE_BYTES_DEFAULT};
use protocol::message::data::{
    NodeStatus, Op, ReadOp, ReadReply, ReadRequest, ReadValue, RenameRequest, UpdateNotice,
    UpdateRequest, WriteReply,
};
use protocol::message::live::FsLive;
use protocol::message::lock::{LockReply, LockRequest};
use protocol::message::Message;
use protocol::Zxid;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Where clients reach this node, "ip:port" (announced in FSLive).
    pub address: String,
    /// How long a read waits for the node to reach the request's floor before `Behind`. Keep it
    /// below the clients' request timeout (2 s by default), so that a lagging node answers
    /// `Behind` before the client gives up on it and the client's next try is informed.
    pub floor_wait: Duration,
    pub cache_bytes_max: usize,
    pub cache_entries_max: usize,
    pub fs_live_interval: Duration,
    pub key_bytes_max: usize,
    pub value_bytes_max: usize,
    /// Most notices kept for history reads (see [`crate::history`]).
    pub history_entries_max: usize,
    /// Most bytes of notices kept for history reads.
    pub history_bytes_max: usize,
}

impl ServerConfig {
    pub fn new(address: impl Into<String>) -> ServerConfig {
        ServerConfig {
            address: address.into(),
            floor_wait: Duration::from_secs(1),
            cache_bytes_max: 64 * 1024 * 1024,
            cache_entries_max: 100_000,
            fs_live_interval: FS_LIVE_INTERVAL_DEFAULT,
            key_bytes_max: KEY_BYTES_DEFAULT,
            value_bytes_max: VALUE_BYTES_DEFAULT,
            history_entries_max: crate::history::HISTORY_ENTRIES_DEFAULT,
            history_bytes_max: crate::history::HISTORY_BYTES_DEFAULT,
        }
    }
}

pub struct Server<B> {
    backend: B,
    config: ServerConfig,
    cache: Mutex<ValueCache>,
    gauge: Arc<LoadGauge>,
    announcer: Mutex<LiveAnnouncer>,
    history: Mutex<HistoryWindow>,
}

impl<B: Backend> Server<B> {
    pub fn new(backend: B, config: ServerConfig) -> Server<B> {
        let cache =
            ValueCache::new(config.cache_bytes_max, config.cache_entries_max, backend.applied());
        let announcer = LiveAnnouncer::new(config.fs_live_interval, config.address.clone());
        // Until the owner says where the notice chain of its state stands
        // ([`Server::reset_history`]), nothing below the backend's applied zxid is claimed.
        let history = HistoryWindow::new(
            backend.applied(),
            config.history_entries_max,
            config.history_bytes_max,
        );
        Server {
            history: Mutex::new(history),
            backend,
            config,
            cache: Mutex::new(cache),
            gauge: LoadGauge::new(),
            announcer: Mutex::new(announcer),
        }
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The load gauge: give it to [`crate::load::run_sampler`], or set it in tests.
    pub fn gauge(&self) -> &Arc<LoadGauge> {
        &self.gauge
    }

    pub fn cache_stats(&self) -> CacheStats {
        self.lock_cache().stats()
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, ValueCache> {
        self.cache.lock().expect("server cache poisoned")
    }

    /// Must be called with every entry the backend applies, in zxid order, before the backend's
    /// applied zxid moves past it (the cache serves only while it has seen all of them).
    pub fn on_applied(&self, notice: &UpdateNotice) {
        self.lock_cache().on_applied(notice);
    }

    /// Records a notice an applied entry produced, in zxid order, before the backend's applied
    /// zxid moves past it: the history window that answers [`ReadOp::History`].
    pub fn on_notice(&self, notice: &UpdateNotice) {
        self.lock_history().record(notice);
    }

    /// Empties the history window; the chain of notices restarts after `last_notice` (the last
    /// notice of the state the node starts from, or installed).
    pub fn reset_history(&self, last_notice: Zxid) {
        self.lock_history().reset(last_notice);
    }

    /// The history window's (base, last notice, notices held, bytes held), for tests and
    /// status.
    pub fn history_stats(&self) -> (Zxid, Zxid, usize, usize) {
        let h = self.lock_history();
        (h.base(), h.last(), h.len(), h.bytes())
    }

    fn lock_history(&self) -> std::sync::MutexGuard<'_, HistoryWindow> {
        self.history.lock().expect("history window poisoned")
    }

    /// Empties the server cache; call after the backend's state jumped (file-transfer install).
    pub fn flush_cache(&self) {
        let applied = self.backend.applied();
        self.lock_cache().flush(applied);
    }

    /// This node's FSLive now.
    pub fn fs_live(&self) -> FsLive {
        crate::live::fs_live(&self.backend.status(), self.gauge.load(), &self.config.address)
    }

    /// What to announce at `now` (FSLive when due or changed, Freeze when the flag flipped).
    /// The node's timer calls this every second or so and multicasts the result.
    pub fn announcements(&self, now: Instant) -> Vec<Message> {
        let status = self.backend.status();
        self.announcer.lock().expect("announcer poisoned").tick(now, &status, self.gauge.load())
    }

    /// Answers one message; `None` for kinds this server does not answer.
    pub async fn handle(&self, message: Message) -> Option<Message> {
        match message {
            Message::Request(request) => Some(Message::ReadReply(self.read(request).await)),
            Message::Update(request) => Some(Message::WriteReply(self.write(request).await)),
            Message::Rename(RenameRequest { request, from, to }) => {
                let update = UpdateRequest {
                    request,
                    conditions: vec![],
                    ops: vec![Op::Rename { from, to }],
                };
                Some(Message::WriteReply(self.write(update).await))
            }
            Message::Lock(request) => Some(Message::LockReply(self.lock(request).await)),
            _ => None,
        }
    }

    pub async fn read(&self, request: ReadRequest) -> ReadReply {
        let _inflight = self.gauge.begin();
        let (applied, result) = match self.read_inner(&request).await {
            Ok((value, applied)) => (applied, Ok(value)),
            Err(e) => (self.backend.applied(), Err(e.to_wire())),
        };
        ReadReply { applied, load: self.gauge.load(), result }
    }

    async fn read_inner(&self, request: &ReadRequest) -> Result<(ReadValue, Zxid), ServerError> {
        let max = self.config.key_bytes_max;
        match &request.op {
            ReadOp::Get { key }
            | ReadOp::Exists { key }
            | ReadOp::IsDir { key }
            | ReadOp::Stat { key } => key::validate(key, max)?,
            ReadOp::List { dir } => key::validate(dir, max)?,
            ReadOp::History { scope, .. } => key::validate(scope.path(), max)?,
            ReadOp::Range { dir, from, limit, .. } => {
                protocol::range::validate(dir, from.as_deref(), *limit, max).map_err(range_error)?
            }
            ReadOp::Status => {}
        }
        let mut floor = request.floor;
        if request.linearizable {
            floor = floor.max(self.backend.linearizable_zxid().await?);
        }
        if self.backend.applied() < floor {
            self.backend.wait_applied(floor, self.config.floor_wait).await?;
        }
        match &request.op {
            ReadOp::Get { key } => {
                if let Some((value, applied)) = self.cached(key) {
                    return Ok((ReadValue::Value(Some(value)), applied));
                }
                let snap = self.backend.get(key).await?;
                if let Some(value) = &snap.value {
                    self.lock_cache().fill(key, value.clone(), snap.applied);
                }
                Ok((ReadValue::Value(snap.value), snap.applied))
            }
            ReadOp::Exists { key } => {
                let snap = self.backend.exists(key).await?;
                Ok((ReadValue::Bool(snap.value), snap.applied))
            }
            ReadOp::IsDir { key } => {
                let snap = self.backend.is_dir(key).await?;
                Ok((ReadValue::Bool(snap.value), snap.applied))
            }
            ReadOp::Stat { key } => {
                let snap = self.backend.stat(key).await?;
                Ok((ReadValue::Stat(snap.value), snap.applied))
            }
            ReadOp::List { dir } => {
                let snap = self.backend.list(dir, LIST_ENTRIES_MAX).await?;
                Ok((ReadValue::List(snap.value), snap.applied))
            }
            ReadOp::History { scope, after, values, bytes_max } => {
                // The applied zxid is read first: every notice up to it is in the window (they
                // are recorded before applied moves), so the page shows at least that much.
                let applied = self.backend.applied();
                let page = self
                    .lock_history()
                    .page(scope, *after, *values, *bytes_max as usize)
                    .map_err(|HistoryError::Compacted { oldest }| ServerError::Compacted {
                        after: *after,
                        oldest,
                    })?;
                Ok((ReadValue::History(page), applied))
            }
            ReadOp::Range { dir, from, limit, bytes_max } => {
                let snap = self.backend.range(dir, from.as_deref(), *limit, *bytes_max).await?;
                debug_assert_eq!(snap.value.zxid, snap.applied, "a range page is of its snapshot");
                Ok((ReadValue::Range(snap.value), snap.applied))
            }
            ReadOp::Status => {
                let s = self.backend.status();
                let status = NodeStatus {
                    node: s.node,
                    role: s.role,
                    epoch: s.epoch,
                    applied: s.applied,
                    committed: s.committed,
                    frozen: s.frozen,
                    load: self.gauge.load(),
                    master: s.master,
                    transfer: s.transfer,
                };
                Ok((ReadValue::Status(status), s.applied))
            }
        }
    }

    /// A cached value, only while the cache has followed every entry the backend applied.
    fn cached(&self, key: &str) -> Option<(protocol::message::data::Versioned, Zxid)> {
        let applied = self.backend.applied();
        let mut cache = self.lock_cache();
        if cache.position() != applied {
            return None;
        }
        cache.get(key).map(|v| (v, applied))
    }

    pub async fn write(&self, request: UpdateRequest) -> WriteReply {
        let _inflight = self.gauge.begin();
        let id = request.request;
        let result = match validate_request(
            &request,
            self.config.key_bytes_max,
            self.config.value_bytes_max,
        ) {
            Ok(()) => self.backend.submit(request).await,
            Err(e) => Err(e),
        };
        WriteReply { request: id, load: self.gauge.load(), result: result.map_err(|e| e.to_wire()) }
    }
}

impl<B: Backend> Server<B> {
    /// Answers a Lock message through the backend (the lock rules are the backend's: the
    /// master's state machine and lease clock). The reply carries the node's load.
    pub async fn lock(&self, request: LockRequest) -> LockReply {
        let _inflight = self.gauge.begin();
        let id = request.request;
        let result = self.backend.lock(request).await.map_err(|e| e.to_wire());
        LockReply { request: id, load: self.gauge.load(), result }
    }
}

/// A refused range read: a bad key keeps its code, other arguments are `BadRequest`.
fn range_error(e: protocol::range::RangeError) -> ServerError {
    match e {
        protocol::range::RangeError::BadKey(e) => ServerError::BadKey(e),
        other => ServerError::Refused(protocol::message::data::WireError {
            code: protocol::message::data::ErrorCode::BadRequest,
            message: other.to_string(),
        }),
    }
}

/// How often [`run_announcer`] checks whether an announcement is due (a frozen flag or role
/// change goes out within this).
pub const ANNOUNCE_TICK_DEFAULT: Duration = Duration::from_secs(1);

/// Checks every `tick` what to announce and hands each FSLive / Freeze to `send` (the node's
/// multicast). Runs until its task is aborted.
pub async fn run_announcer<B: Backend>(
    server: Arc<Server<B>>,
    tick: Duration,
    mut send: impl FnMut(Message) + Send,
) {
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        for message in server.announcements(tokio::time::Instant::now().into_std()) {
            if let Message::Freeze(f) = &message {
                // The one place every freeze and unfreeze shows, whoever caused it.
                let event = if f.frozen { "freeze" } else { "unfreeze" };
                tracing::info!(event, node = f.node, applied = %f.applied, "node {} {event}s", f.node);
            }
            send(message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::{serve, MemBackend};
    use bytes::Bytes;
    use protocol::message::data::{ErrorCode, RequestId, Versioned};

    fn put(key: &str, value: &str, seq: u64) -> Message {
        Message::Update(UpdateRequest {
            request: RequestId { client: 1 << 40, seq },
            conditions: vec![],
            ops: vec![Op::Put {
                key: key.into(),
                value: Bytes::from(value.to_string()),
                create_only: false,
                ephemeral: None,
            }],
        })
    }

    fn get(key: &str, floor: Zxid) -> Message {
        Message::Request(ReadRequest {
            floor,
            linearizable: false,
            op: ReadOp::Get { key: key.into() },
        })
    }

    async fn read_value(server: &Server<MemBackend>, key: &str) -> Option<Versioned> {
        match server.handle(get(key, Zxid::ZERO)).await {
            Some(Message::ReadReply(ReadReply { result: Ok(ReadValue::Value(v)), .. })) => v,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// A second read of a hot key is served from the server cache, and a committed overwrite is
    /// seen by the next read (the cache follows applied entries).
    #[tokio::test]
    async fn hot_values_cached_and_kept_exact() {
        let server = serve(MemBackend::master(1, 1), ServerConfig::new("n1"));
        server.handle(put("/k", "one", 1)).await.unwrap();
        assert_eq!(read_value(&server, "/k").await.unwrap().value, Bytes::from("one"));
        assert_eq!(read_value(&server, "/k").await.unwrap().value, Bytes::from("one"));
        assert_eq!(server.cache_stats().hits, 1);
        server.handle(put("/k", "two", 2)).await.unwrap();
        assert_eq!(read_value(&server, "/k").await.unwrap().value, Bytes::from("two"));
        assert_eq!(server.cache_stats().hits, 2, "the overwrite was applied in place");
    }

    /// A follower redirects writes to its master and answers `Behind` for a floor it has not
    /// reached within the wait; both replies carry the node's load.
    #[tokio::test(start_paused = true)]
    async fn follower_redirects_and_reports_behind() {
        let server = serve(MemBackend::follower(2, 1, 1), ServerConfig::new("n2"));
        server.gauge().set(300, 400);
        let Some(Message::WriteReply(reply)) = server.handle(put("/k", "v", 1)).await else {
            panic!()
        };
        assert_eq!(reply.result.unwrap_err().code, ErrorCode::NotMaster { master: Some(1) });
        assert_eq!(reply.load.cpu_permille, 300);
        let Some(Message::ReadReply(reply)) = server.handle(get("/k", Zxid::new(1, 9))).await
        else {
            panic!()
        };
        assert_eq!(reply.result.unwrap_err().code, ErrorCode::Behind);
        assert_eq!(reply.load.mem_permille, 400);
    }

    /// The announcer sends FSLive at start and every interval, and a Freeze plus FSLive within
    /// one tick of the node freezing (paused time).
    #[tokio::test(start_paused = true)]
    async fn announcer_timer() {
        let server = serve(MemBackend::follower(2, 1, 1), ServerConfig::new("n2"));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&sent);
        let task =
            tokio::spawn(run_announcer(Arc::clone(&server), Duration::from_secs(1), move |m| {
                sink.lock().unwrap().push(m.kind())
            }));
        tokio::time::sleep(Duration::from_millis(65_500)).await;
        use protocol::message::MessageKind;
        assert_eq!(*sent.lock().unwrap(), vec![MessageKind::FsLive; 3], "t = 0, 30, 60 s");
        server.backend().set_frozen(true);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(sent.lock().unwrap()[3..], [MessageKind::Freeze, MessageKind::FsLive]);
        task.abort();
    }

    /// A linearizable read is refused by a follower (NotMaster names the master) and answered by
    /// the master; Status reports the node's place and load.
    #[tokio::test]
    async fn linearizable_reads_and_status() {
        let master = serve(MemBackend::master(1, 1), ServerConfig::new("n1"));
        let follower = serve(MemBackend::follower(2, 1, 1), ServerConfig::new("n2"));
        master.handle(put("/k", "v", 1)).await.unwrap();
        let lin = |op| Message::Request(ReadRequest { floor: Zxid::ZERO, linearizable: true, op });
        let get_k = || ReadOp::Get { key: "/k".into() };
        let Some(Message::ReadReply(reply)) = follower.handle(lin(get_k())).await else { panic!() };
        assert_eq!(reply.result.unwrap_err().code, ErrorCode::NotMaster { master: Some(1) });
        let Some(Message::ReadReply(reply)) = master.handle(lin(get_k())).await else { panic!() };
        assert!(matches!(reply.result, Ok(ReadValue::Value(Some(_)))));
        assert_eq!(reply.applied, Zxid::new(1, 1));
        master.gauge().set(250, 500);
        let Some(Message::ReadReply(reply)) = master.handle(lin(ReadOp::Status)).await else {
            panic!()
        };
        let Ok(ReadValue::Status(status)) = reply.result else { panic!() };
        assert_eq!(
            (status.node, status.role, status.master),
            (1, protocol::message::data::Role::Master, Some(1))
        );
        assert_eq!(status.load.cpu_permille, 250);
    }

    /// Bad keys and oversize values are refused with typed errors before anything is written.
    #[tokio::test]
    async fn bad_input_refused() {
        let config = ServerConfig { value_bytes_max: 4, ..ServerConfig::new("n1") };
        let server = serve(MemBackend::master(1, 1), config);
        let Some(Message::WriteReply(reply)) = server.handle(put("/k", "12345", 1)).await else {
            panic!()
        };
        assert_eq!(reply.result.unwrap_err().code, ErrorCode::TooLarge);
        let Some(Message::WriteReply(reply)) = server.handle(put("k", "1", 2)).await else {
            panic!()
        };
        assert_eq!(reply.result.unwrap_err().code, ErrorCode::BadKey);
        assert_eq!(server.backend().applied(), Zxid::new(1, 0));
    }
}
