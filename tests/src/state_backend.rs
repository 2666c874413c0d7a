//! [`StateBackend`]: a `cache_server::Backend` over the product's own state machine
//! (`fs_node::state::StateMachine<MemStore>`) and the master's lease clock
//! (`fs_node::locks::LeaseKeeper`), with an immediate single-node "log": each submitted command
//! gets the next zxid and is applied at once. It lets client lock, session and transaction tests
//! run against the real lock rules in one process, with tokio's (pausable) clock.
//!
//! What it is not: replication. There is no quorum, no durability and no network; a "master
//! kill" is simulated by [`StateBackend::takeover`] (a new epoch and a new `LeaseKeeper` built
//! from the applied tables, as a new master does). Figures measured over it measure the client
//! and server logic only.
//!
//! # The log
//! - Renewals are answered by [`LeaseKeeper::answer_renewal`] and are not entries.
//! - Expiries: [`LeaseKeeper::tick`] runs before every call and from the [`Harness`]'s ticker
//!   task; each expiry it returns is applied as an entry.
//! - A retried request is answered from the request table without a new entry.
//! - An entry that changed nothing (a refusal, an expiry of a lease already gone) is applied
//!   (the request table remembers the refusal) but the *reported* applied zxid stays at the
//!   last entry that changed something: the state it shows is exactly the same, and the
//!   backend conformance suite's rule "a refused write does not move applied" holds.

use cache_client::locks::LockConfig;
use cache_client::transport::{MemNetwork, MemTransport};
use cache_client::{Client, ClientConfig};
use cache_server::backend::{Backend, BackendStatus, Snapshot};
use cache_server::error::ServerError;
use cache_server::{Server, ServerConfig};
use fs_node::locks::{LeaseConfig, LeaseKeeper};
use fs_node::state::state_store::check_batch;
use fs_node::state::{
    ApplyResult, Command, EntryKind, Lookup, MemStore, Notice, Outcome, StateConfig, StateMachine,
    StateStore,
};
use protocol::key;
use protocol::limits::LIST_ENTRIES_MAX;
use protocol::message::data::{
    DirEntry, ErrorCode, KeyStat, Load, Op, RangeEntry, RangePage, Role, UpdateNotice,
    UpdateRequest, Versioned, WireError,
};
use protocol::message::lock::{LockGrant, LockRequest, LockRequestOp};
use protocol::message::Message;
use protocol::{NodeId, Zxid};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Called with every notice of every applied entry, in zxid order, under the backend's lock.
pub type NoticeHook = Arc<dyn Fn(&Notice) + Send + Sync>;

/// How often the ticker task looks for expired leases.
pub const TICK_INTERVAL: Duration = Duration::from_millis(50);

struct Inner {
    machine: StateMachine<MemStore>,
    keeper: LeaseKeeper,
    epoch: u32,
    /// The zxid the last entry got (reported or not).
    last: Zxid,
    hook: Option<NoticeHook>,
    /// Entries applied, master records included (for tests).
    entries: u64,
}

/// See the module docs.
pub struct StateBackend {
    node: NodeId,
    origin: Instant,
    inner: Mutex<Inner>,
    /// The reported applied zxid (the last entry that changed something).
    applied_tx: watch::Sender<Zxid>,
}

fn refused(error: WireError) -> ServerError {
    ServerError::Refused(error)
}

impl StateBackend {
    /// A fresh master of epoch 1 with lock leases of `lease.lock_ttl_ms`.
    pub fn new(node: NodeId, lease: LeaseConfig) -> StateBackend {
        let start = Zxid::new(1, 0);
        StateBackend {
            node,
            origin: Instant::now(),
            inner: Mutex::new(Inner {
                machine: StateMachine::new(MemStore::new(), StateConfig::default()),
                keeper: LeaseKeeper::new(lease),
                epoch: 1,
                last: start,
                hook: None,
                entries: 0,
            }),
            applied_tx: watch::channel(start).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("StateBackend poisoned")
    }

    /// Milliseconds on tokio's clock since the backend was made (paused time moves it).
    pub fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    pub fn set_hook(&self, hook: NoticeHook) {
        self.lock().hook = Some(hook);
    }

    /// Entries applied so far (client commands and master records).
    pub fn entries(&self) -> u64 {
        self.lock().entries
    }

    /// Runs `read` on the applied tables and store (tests inspect locks and sessions).
    pub fn inspect<R>(&self, read: impl FnOnce(&StateMachine<MemStore>) -> R) -> R {
        read(&self.lock().machine)
    }

    /// A new master takes over (the old one "died"): a new epoch, a `Takeover` record, and a
    /// `LeaseKeeper` built from the applied tables, so every lease runs a full TTL from now
    /// whatever the old master's deadlines were.
    pub fn takeover(&self) {
        let now_ms = self.now_ms();
        let mut inner = self.lock();
        let config = inner.keeper.config();
        let tables = inner.machine.tables();
        inner.keeper = LeaseKeeper::takeover(config, &tables.locks, &tables.sessions, now_ms);
        inner.epoch += 1;
        inner.last = Zxid::new(inner.epoch, 0);
        let command = Command::Takeover { epoch: inner.epoch, master: self.node };
        self.apply(&mut inner, command, now_ms).expect("a takeover record applies");
    }

    /// Applies the expiries due now.
    pub fn expire_due(&self) {
        let now_ms = self.now_ms();
        let mut inner = self.lock();
        self.expire_locked(&mut inner, now_ms);
    }

    fn expire_locked(&self, inner: &mut Inner, now_ms: u64) {
        for command in inner.keeper.tick(now_ms) {
            self.apply(inner, command, now_ms).expect("an expiry record applies");
        }
    }

    /// Applies `command` as the next entry: notices to the hook, lease events to the keeper.
    fn apply(
        &self,
        inner: &mut Inner,
        command: Command,
        now_ms: u64,
    ) -> Result<ApplyResult, ServerError> {
        let zxid = inner.last.next().ok_or_else(|| {
            ServerError::Unavailable("zxid counter exhausted; a new epoch is needed".into())
        })?;
        let result = inner
            .machine
            .apply_command(zxid, command)
            .map_err(|e| ServerError::Internal(e.to_string()))?;
        inner.last = zxid;
        inner.entries += 1;
        inner.keeper.observe(&result.leases, now_ms);
        let refusal = matches!(
            &result.reply,
            Some(r) if matches!(&r.outcome, Outcome::Write(Err(_)) | Outcome::Lock(Err(_)))
        );
        let changed = !result.notices.is_empty()
            || !result.leases.is_empty()
            || (result.reply.is_some() && !refusal)
            || matches!(inner.machine.tables().takeover, Some((z, _, _)) if z == zxid);
        if let Some(hook) = &inner.hook {
            for notice in &result.notices {
                hook(notice);
            }
        }
        if changed {
            self.applied_tx.send_replace(zxid);
        }
        Ok(result)
    }

    fn snapshot<T>(
        &self,
        read: impl FnOnce(&MemStore) -> Result<T, ServerError>,
    ) -> Result<Snapshot<T>, ServerError> {
        let inner = self.lock();
        let applied = *self.applied_tx.borrow();
        Ok(Snapshot { value: read(inner.machine.store())?, applied })
    }

    fn submit_now(&self, request: UpdateRequest) -> Result<Zxid, ServerError> {
        let now_ms = self.now_ms();
        let mut inner = self.lock();
        self.expire_locked(&mut inner, now_ms);
        match inner.machine.lookup(request.request) {
            Lookup::Duplicate(Outcome::Write(result)) => return result.map_err(refused),
            Lookup::Duplicate(Outcome::Lock(_)) => {
                return Err(refused(WireError {
                    code: ErrorCode::BadRequest,
                    message: "this request id was used by a lock request".into(),
                }))
            }
            Lookup::TooOld { .. } | Lookup::New => {}
        }
        let ops: Vec<Op> = request.ops.clone();
        let result = self.apply(&mut inner, Command::from_update(request), now_ms)?;
        match result.reply.map(|r| r.outcome) {
            Some(Outcome::Write(Ok(zxid))) => Ok(zxid),
            Some(Outcome::Write(Err(error))) => {
                if error.code == ErrorCode::ConditionFailed {
                    return Err(ServerError::ConditionFailed { detail: error.message });
                }
                // Nothing changed: the store's own check names the op's fault, typed.
                let key_bytes_max = inner.machine.config().key_bytes_max;
                match check_batch(inner.machine.store(), &ops, key_bytes_max) {
                    Err(op_error) if op_error.error.code() == error.code => {
                        Err(ServerError::from(op_error))
                    }
                    _ => Err(refused(error)),
                }
            }
            other => Err(ServerError::Internal(format!("a write was answered with {other:?}"))),
        }
    }

    fn lock_now(&self, request: LockRequest) -> Result<LockGrant, ServerError> {
        let now_ms = self.now_ms();
        let mut inner = self.lock();
        self.expire_locked(&mut inner, now_ms);
        if let LockRequestOp::Renew { .. } = request.op {
            let reply = inner
                .keeper
                .answer_renewal(now_ms, &request, Load::default())
                .expect("a Renew is a renewal");
            return reply.result.map_err(refused);
        }
        match inner.machine.lookup(request.request) {
            Lookup::Duplicate(Outcome::Lock(result)) => return result.map_err(refused),
            Lookup::Duplicate(Outcome::Write(_)) => {
                return Err(refused(WireError {
                    code: ErrorCode::BadRequest,
                    message: "this request id was used by a write".into(),
                }))
            }
            Lookup::TooOld { .. } | Lookup::New => {}
        }
        let command = Command::from_lock_request(request).expect("not a renewal");
        let result = self.apply(&mut inner, command, now_ms)?;
        match result.reply.map(|r| r.outcome) {
            Some(Outcome::Lock(result)) => result.map_err(refused),
            other => Err(ServerError::Internal(format!("a lock was answered with {other:?}"))),
        }
    }
}

/// Notices as the cache group sees them: the hook for a harness that multicasts them.
pub fn update_of(notice: &Notice) -> Option<&UpdateNotice> {
    match notice {
        Notice::Update(update) => Some(update),
        Notice::LockChanged(_) => None,
    }
}

impl Backend for StateBackend {
    fn status(&self) -> BackendStatus {
        let inner = self.lock();
        let applied = *self.applied_tx.borrow();
        BackendStatus {
            node: self.node,
            role: Role::Master,
            epoch: inner.epoch,
            master: Some(self.node),
            applied,
            committed: applied,
            frozen: false,
            transfer: None,
        }
    }

    fn applied(&self) -> Zxid {
        *self.applied_tx.borrow()
    }

    async fn get(&self, key: &str) -> Result<Snapshot<Option<Versioned>>, ServerError> {
        self.snapshot(|store| match store.stat(key) {
            Some((EntryKind::Dir, _)) => Err(ServerError::IsADirectory { key: key.to_string() }),
            _ if key == key::ROOT => Err(ServerError::IsADirectory { key: key.to_string() }),
            _ => match store.get(key) {
                Ok(value) => Ok(value),
                Err(never) => match never {},
            },
        })
    }

    async fn exists(&self, key: &str) -> Result<Snapshot<bool>, ServerError> {
        self.snapshot(|store| Ok(store.stat(key).is_some()))
    }

    async fn is_dir(&self, key: &str) -> Result<Snapshot<bool>, ServerError> {
        self.snapshot(|store| Ok(matches!(store.stat(key), Some((EntryKind::Dir, _)))))
    }

    async fn stat(&self, key: &str) -> Result<Snapshot<Option<KeyStat>>, ServerError> {
        let inner = self.lock();
        let applied = *self.applied_tx.borrow();
        let store = inner.machine.store();
        let value = if key == key::ROOT {
            Some(KeyStat { zxid: Zxid::ZERO, is_dir: true, size: 0, ephemeral: None })
        } else {
            store.stat(key).map(|(kind, zxid)| {
                let is_dir = kind == EntryKind::Dir;
                let size = match store.get(key) {
                    Ok(value) => value.map_or(0, |v| v.value.len() as u64),
                    Err(never) => match never {},
                };
                let ephemeral = inner.machine.tables().sessions.owner(key);
                KeyStat { zxid, is_dir, size, ephemeral }
            })
        };
        Ok(Snapshot { value, applied })
    }

    async fn list(&self, dir: &str, limit: usize) -> Result<Snapshot<Vec<DirEntry>>, ServerError> {
        self.snapshot(|store| match store.stat(dir) {
            None => Err(ServerError::NotFound { key: dir.to_string() }),
            Some((EntryKind::Value, _)) => Err(ServerError::NotADirectory { key: dir.to_string() }),
            Some((EntryKind::Dir, _)) => {
                store.list(dir, limit.min(LIST_ENTRIES_MAX)).map_err(refused)
            }
        })
    }

    /// Through the store trait alone (its key walk, then one get per value), under the lock.
    async fn range(
        &self,
        dir: &str,
        from: Option<&str>,
        limit: u32,
        bytes_max: u32,
    ) -> Result<Snapshot<RangePage>, ServerError> {
        let snap = self.snapshot(|store| {
            match store.stat(dir) {
                None => return Err(ServerError::NotFound { key: dir.to_string() }),
                Some((EntryKind::Value, _)) => {
                    return Err(ServerError::NotADirectory { key: dir.to_string() })
                }
                Some((EntryKind::Dir, _)) => {}
            }
            let start = protocol::range::start(dir, from);
            let mut keys = Vec::new();
            store.visit_within(dir, &mut |key, kind| {
                if kind == EntryKind::Value && key >= start.as_str() {
                    keys.push(key.to_string());
                }
                true
            });
            keys.sort();
            let mut budget = protocol::range::Budget::new(limit, bytes_max);
            let mut page = RangePage { entries: Vec::new(), zxid: Zxid::ZERO, next: None };
            for key in keys {
                let value = match store.get(&key) {
                    Ok(value) => value.expect("a visited value is there"),
                    Err(never) => match never {},
                };
                if !budget.take(&key, value.value.len()) {
                    page.next = Some(key);
                    break;
                }
                page.entries.push(RangeEntry { key, zxid: value.zxid, value: value.value });
            }
            Ok(page)
        })?;
        let value = RangePage { zxid: snap.applied, ..snap.value };
        Ok(Snapshot { value, applied: snap.applied })
    }

    async fn wait_applied(&self, zxid: Zxid, timeout: Duration) -> Result<Zxid, ServerError> {
        cache_server::backend::wait_applied_on(&self.applied_tx, zxid, timeout).await
    }

    async fn submit(&self, request: UpdateRequest) -> Result<Zxid, ServerError> {
        self.submit_now(request)
    }

    async fn linearizable_zxid(&self) -> Result<Zxid, ServerError> {
        // Every acknowledged write was applied before its reply: applied covers them.
        Ok(*self.applied_tx.borrow())
    }

    async fn lock(&self, request: LockRequest) -> Result<LockGrant, ServerError> {
        self.lock_now(request)
    }
}

/// One `Server` over a [`StateBackend`] on a `MemNetwork` (address [`ADDRESS`]), its notices
/// multicast to the clients, an expiry ticker running: the in-process lock cluster of the
/// client lock, session and transaction tests.
pub struct Harness {
    pub network: MemNetwork,
    pub server: Arc<Server<StateBackend>>,
    pub lock_ttl: Duration,
    ticker: tokio::task::JoinHandle<()>,
}

/// The one node's address on the harness network.
pub const ADDRESS: &str = "n1";

impl Drop for Harness {
    fn drop(&mut self) {
        self.ticker.abort();
    }
}

impl Harness {
    /// Must run inside a tokio runtime (it spawns the ticker).
    pub fn new(lock_ttl: Duration) -> Harness {
        let lease = LeaseConfig { lock_ttl_ms: lock_ttl.as_millis() as u32 };
        let server = Arc::new(Server::new(StateBackend::new(1, lease), ServerConfig::new(ADDRESS)));
        let network = MemNetwork::new();
        let weak = Arc::downgrade(&server);
        let group = network.clone();
        server.backend().set_hook(Arc::new(move |notice: &Notice| {
            if let (Some(update), Some(server)) = (update_of(notice), weak.upgrade()) {
                server.on_applied(update);
            }
            group.multicast(notice.clone().into_message());
        }));
        let handler_server = Arc::clone(&server);
        network.add_node(
            ADDRESS,
            Arc::new(move |message| {
                let server = Arc::clone(&handler_server);
                Box::pin(async move { server.handle(message).await })
            }),
        );
        let weak = Arc::downgrade(&server);
        let ticker = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(TICK_INTERVAL);
            loop {
                ticker.tick().await;
                let Some(server) = weak.upgrade() else { return };
                server.backend().expire_due();
            }
        });
        Harness { network, server, lock_ttl, ticker }
    }

    pub fn backend(&self) -> &StateBackend {
        self.server.backend()
    }

    /// A client config for this cluster: the lock TTL matches the master's, renewals at
    /// TTL / 3.3, seeded.
    pub fn config(&self, seed: u64) -> ClientConfig {
        let locks = LockConfig {
            ttl: self.lock_ttl,
            renew_interval: self.lock_ttl * 10 / 33,
            host: format!("host{seed}"),
        };
        ClientConfig {
            rng_seed: Some(seed),
            request_timeout: Duration::from_millis(500),
            locks,
            ..ClientConfig::default()
        }
    }

    pub fn client(&self, seed: u64) -> Client<MemTransport> {
        self.client_with(self.config(seed)).0
    }

    /// A client and its transport (whose `cut_switch` partitions it).
    pub fn client_with(&self, config: ClientConfig) -> (Client<MemTransport>, MemTransport) {
        let transport = self.network.transport();
        let client = Client::new(transport.clone(), config);
        self.network.multicast(Message::FsLive(self.server.fs_live()));
        (client, transport)
    }

    /// Holders of `lock` on the master (client ids), empty when free.
    pub fn holders(&self, lock: &str) -> Vec<u64> {
        self.backend().inspect(|m| {
            m.tables()
                .locks
                .get(lock)
                .map(|l| l.holders.keys().copied().collect())
                .unwrap_or_default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The state backend keeps every rule of the cache-server backend conformance suite.
    #[tokio::test]
    async fn passes_the_backend_conformance_suite() {
        let backend = StateBackend::new(1, LeaseConfig::default());
        cache_server::conformance::run_all(&backend).await.unwrap();
    }

    /// ... and the lock path of it, with the product's lock rules.
    #[tokio::test]
    async fn passes_the_lock_conformance_suite() {
        let backend = StateBackend::new(1, LeaseConfig::default());
        cache_server::conformance::run_locks(&backend).await.unwrap();
    }
}
