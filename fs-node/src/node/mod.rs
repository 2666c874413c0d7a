//! The node runtime: one tokio process composing the messaging [`Endpoint`], the data log and
//! key-value store, the replication [`Engine`], the [`StateMachine`], the master's
//! [`LeaseKeeper`] and the cache-server [`Server`] (through [`NodeBackend`]).
//!
//! # Tasks
//! - **core** (one task, owns the engine, the log view, the state machine and the lease
//!   keeper): ticks the engine every [`TICK_MS`], steps it with received replication
//!   messages, proposes client commands, and carries out every [`Ready`]: persist ops go to the
//!   data log (appends become durable by the log's group commit; truncations and the epoch
//!   state file are synced in place), `send_now` goes out at once, `send_after_persist` once
//!   the log's durable zxid covers the Ready, commits are applied to the state machine in
//!   order, replies go to the waiting request, and on the master the notices (UpdateNotice,
//!   LockChanged) are multicast to the group, where caches listen.
//! - **receive**: takes everything the endpoint delivers; unicast requests are answered on
//!   their own task ([`Server::handle`] for Request/Update/Rename, this module for Lock),
//!   replication messages from members go to the core (a replication message that came as a
//!   request — an oversize one, see below — is also acknowledged with a small reply).
//! - **outbound**: sends in order — group messages on the reliable multicast stream, messages
//!   to one node best-effort by unicast to its configured address (the engine repairs losses),
//!   FSLive best-effort to the group. A message to one node too big for one datagram goes as
//!   a fragmented unicast request instead (see Limits).
//! - the cache-server announcer (FSLive/Freeze) and load sampler; the store's background
//!   compactor (a thread).
//! - transfers ([`transfer`]): a donor per running transfer, a receiver per fetch or pushed
//!   backup, each on its own endpoint bound to the transfer's group; snapshot hashing and
//!   backup copies run on blocking threads.
//!
//! # Durability and restart
//! The data log is the durable truth. Every `snapshot_entries` applied entries (or
//! `snapshot_log_bytes`), the core takes a **snapshot** ([`snapshot`]): an immutable directory
//! `snapshots/<zxid>/` of hard links to the store's sealed files, the lock, session and request
//! tables at the same zxid, and a manifest; then log retention drops segments below it
//! (keeping `log_retention_entries`). At start the store directory is rebuilt from the newest
//! snapshot (hard links again; with no snapshot it starts empty), the tables are loaded from
//! it, and the engine replays the log after the snapshot's zxid. The live store is never
//! trusted across a restart: after a crash it may hold unsynced batches above its checkpoint,
//! and tables saved at another zxid would then be evaluated against the wrong store.
//!
//! A node whose position is below the master's log start (wiped, new, or far behind) is told
//! by the engine to fetch a snapshot ([`transfer`]): it receives one from a peer into
//! `incoming/`, verifies it, moves it to `snapshots/`, resets its log to its zxid and restarts
//! in-process ([`run`] loops; the endpoint, metrics and transfer state survive), answering
//! reads with `Behind` meanwhile. Donors send a pinned snapshot while announcing Freeze.
//!
//! # Limits
//! Messages to one node normally go as single unicast datagrams, so catch-up chunks are bounded
//! by [`UNICAST_BATCH_BYTES_MAX`]. A chunk always holds at least one entry, so a single entry
//! bigger than one datagram (a value over ~60 KB; values go up to 16 MiB) makes a chunk that
//! does not fit: such a message is sent with [`Endpoint::request`], which fragments it and
//! retries until the receiver acknowledges it (a [`ReadReply`] carrying `ReadValue::Bool(true)`
//! and the receiver's applied zxid; the requester only checks that a reply came). At most
//! [`LARGE_UNICAST_IN_FLIGHT_MAX`] such sends run at once, each on its own task so the
//! outbound order of everything else is not held up; beyond that one is dropped, which is
//! safe because the engine re-sends catch-up chunks on its own timers. The proposal path
//! (multicast, fragmented by the reliable stream) is not limited.

pub mod backend;
pub mod disk;
pub mod snapshot;
pub mod transfer;

pub use backend::NodeBackend;

use crate::config::Config;
use crate::locks::{LeaseConfig, LeaseKeeper};
use crate::replication::{
    Config as EngineConfig, ConfigError as EngineConfigError, Engine, LogReader, PersistOp,
    ProposeError, Ready, RestartState, Role, To,
};
use crate::state::{Command, Outcome, StateConfig, StateError, StateMachine};
use crate::storage::{DataLog, KvStore as StorageKv, LogConfig, RealFs, StorageError, StoreConfig};
use bytes::Bytes;
use cache_server::{Server, ServerConfig, ServerError};
use disk::{DiskKv, LogView};
use protocol::message::data::{
    ErrorCode, ReadOp, ReadReply, ReadValue, Role as WireRole, UpdateNotice, WireError,
};
use protocol::message::lock::{LockGrant, LockReply, LockRequestOp};
use protocol::message::Message;
use protocol::messaging::{Endpoint, EndpointConfig, Incoming, MessagingError, RequestHandle};
use protocol::{NodeId, ProtocolError, SenderId, Zxid};
use snapshot::SnapshotDir;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

/// How often the core ticks the engine and the lease keeper.
pub const TICK_MS: u64 = 10;
/// Most Ready rounds handled in one go before the core looks at its inputs again.
pub const READY_ROUNDS_MAX: usize = 64;
/// Data bytes of one catch-up chunk or proposal: below one unicast datagram (65 000 bytes), so
/// chunks of ordinary entries stay on the cheap single-datagram path. Kept at this size rather
/// than raised: it also bounds proposal batches, and a chunk holding one bigger entry is sent
/// reliably anyway (see the module's Limits).
pub const UNICAST_BATCH_BYTES_MAX: usize = 48 * 1024;
/// Oversize messages to one node (see the module's Limits) being sent at once.
pub const LARGE_UNICAST_IN_FLIGHT_MAX: usize = 4;
/// First wait for the acknowledgement of an oversize message to one node; doubles per retry.
/// A 16 MiB chunk is ~260 datagrams, a few ms on a LAN; the retries re-send the lost
/// fragments (the receiver keeps what it already has).
pub const LARGE_UNICAST_TIMEOUT: Duration = Duration::from_millis(250);
/// Retries of an oversize message to one node before giving up (the engine re-sends later).
pub const LARGE_UNICAST_RETRIES: u32 = 4;
/// How long shutdown waits for written log entries to become durable.
pub const SHUTDOWN_SYNC_WAIT: Duration = Duration::from_secs(5);
/// How often the announcer checks whether FSLive or Freeze is due.
pub const ANNOUNCE_TICK: Duration = Duration::from_millis(200);
/// How often the background compactor checks whether a merge is due.
pub const COMPACTION_CHECK: Duration = Duration::from_secs(10);
/// How often the load gauge is sampled.
pub const LOAD_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests;

#[derive(Debug, Error)]
pub enum NodeError {
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("messaging: {0}")]
    Messaging(#[from] MessagingError),
    #[error("replication configuration: {0}")]
    Engine(#[from] EngineConfigError),
    #[error("state machine stopped: {0}")]
    State(#[from] StateError),
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Other(String),
}

/// What a proposal's proposer waits for.
pub(crate) enum Waiter {
    Write(oneshot::Sender<Result<Zxid, ServerError>>),
    Lock(oneshot::Sender<Result<LockGrant, WireError>>),
    /// An empty entry ordering a linearizable read.
    Barrier(oneshot::Sender<Result<Zxid, ServerError>>),
}

impl Waiter {
    fn fail(self, master: Option<NodeId>, unknown: bool) {
        let detail = if unknown {
            "the master changed before this command committed; its outcome is unknown (a \
             retry with the same request id applies it at most once)"
        } else {
            "this node is not the master"
        };
        match self {
            Waiter::Write(tx) | Waiter::Barrier(tx) => {
                let e = if unknown {
                    ServerError::Unavailable(detail.into())
                } else {
                    ServerError::NotMaster { master }
                };
                let _ = tx.send(Err(e));
            }
            Waiter::Lock(tx) => {
                let code =
                    if unknown { ErrorCode::Unavailable } else { ErrorCode::NotMaster { master } };
                let _ = tx.send(Err(WireError { code, message: detail.into() }));
            }
        }
    }
}

/// Commands from request tasks to the core.
pub(crate) enum Cmd {
    Propose {
        data: Bytes,
        waiter: Waiter,
    },
    Linearizable(oneshot::Sender<Result<Zxid, ServerError>>),
    Renew {
        client: SenderId,
        session: u64,
        locks: Vec<(String, i32)>,
        reply: oneshot::Sender<Result<u32, WireError>>,
    },
    /// A snapshot to send or copy: a fresh one, or the pinned one while a transfer runs.
    Snapshot(oneshot::Sender<Result<(SnapshotDir, transfer::PinGuard), String>>),
    /// A fetched snapshot is in `snapshots/`: reset the log to it and restart.
    Installed(Zxid),
    /// Restart in-process (a fetch gave up; a fresh engine asks again).
    Restart,
}

/// How one run of the node ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exit {
    Shutdown,
    Restart,
}

/// What the outbound task sends.
enum Out {
    Group(Message),
    GroupUnreliable(Message),
    Node(NodeId, Message),
}

/// Role, epoch and master as the backend reports them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StatusView {
    pub role: WireRole,
    pub epoch: u32,
    pub master: Option<NodeId>,
    pub committed: Zxid,
    /// Held locks and open sessions in the applied state (for metrics).
    pub locks: u64,
    pub sessions: u64,
}

/// State shared by the core (writer) and the request tasks (readers).
pub(crate) struct Shared {
    pub node: NodeId,
    pub store: Arc<StorageKv>,
    /// The applied zxid. The core holds it for writing while it applies an entry, a read holds
    /// it for reading while it reads the store: a read sees exactly the state at this zxid.
    pub applied: RwLock<Zxid>,
    pub applied_tx: watch::Sender<Zxid>,
    pub status: Mutex<StatusView>,
    pub cmds: mpsc::UnboundedSender<Cmd>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The commit point the log recorded before this start. Until the rebuilt store reaches
    /// it, this node answers reads with `Behind` (the client asks another node), so that a
    /// restart never shows a client with no floor an older state than before the restart.
    pub recovered_commit: Zxid,
    /// The node's main endpoint (transfers ask and answer on it).
    pub endpoint: Endpoint,
    pub transfers: Arc<transfer::Transfers>,
}

impl Shared {
    /// Whether the rebuilt store is still below the commit point recorded before this start,
    /// or the node is fetching its data files from a peer.
    pub fn recovering(&self) -> bool {
        *self.applied.read().expect("applied lock poisoned") < self.recovered_commit
            || self.transfers.fetching()
    }
}

fn wire_role(role: Role) -> (WireRole, Option<NodeId>) {
    match role {
        Role::Looking => (WireRole::Looking, None),
        Role::Following { master } => (WireRole::Follower, Some(master)),
        Role::Leading { established: true, .. } => (WireRole::Master, None),
        Role::Leading { established: false, .. } => (WireRole::Looking, None),
    }
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> NodeError + 'a {
    move |source| NodeError::Io { what, path: path.to_path_buf(), source }
}

/// Reads, bumps and durably stores the start counter: the messaging incarnation, so that
/// receivers tell this start from a replay of the previous one. It is at least the wall clock
/// in seconds: a node whose data directory was wiped (and so lost the counter) must still
/// start above every incarnation its peers saw, or they would drop its datagrams as stale.
fn next_incarnation(dir: &Path) -> Result<u32, NodeError> {
    let path = dir.join("incarnation");
    let old =
        std::fs::read_to_string(&path).ok().and_then(|t| t.trim().parse::<u32>().ok()).unwrap_or(0);
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs().min(u64::from(u32::MAX)) as u32)
        .unwrap_or(0);
    let next = old.wrapping_add(1).max(now_s).max(1);
    let tmp = dir.join("incarnation.tmp");
    std::fs::write(&tmp, format!("{next}\n")).map_err(io_err("writing", &tmp))?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io_err("syncing", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(io_err("renaming", &path))?;
    Ok(next)
}

/// Runs one FS node until `shutdown` resolves (or a fatal error), then drains: written log
/// entries are made durable and the endpoint closed. After installing data files fetched from
/// a peer the node restarts in-process (see the module's Durability and restart); the
/// endpoint, the metrics listener and the transfer state are kept across such restarts.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), NodeError> {
    if config.is_single_node() {
        return Err(NodeError::Other(
            "a single-member cluster is not supported by this build; list 3, 5 or 7 members".into(),
        ));
    }
    let dir = config.data_dir.clone();
    std::fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
    let incarnation = next_incarnation(&dir)?;
    let members: Vec<NodeId> = config.members.keys().copied().collect();
    let mut endpoint_config =
        EndpointConfig::new(config.node_id as SenderId, incarnation, config.cluster_auth());
    endpoint_config.group = config.multicast_group;
    endpoint_config.interface = config.multicast_interface;
    endpoint_config.ttl = config.multicast_ttl;
    endpoint_config.loopback = config.multicast_loopback;
    endpoint_config.unicast_bind = config.own_addr();
    endpoint_config.members = members.iter().map(|m| *m as SenderId).collect();
    if !config.multicast {
        let mut peers: Vec<SocketAddr> = config.members.values().copied().collect();
        peers.extend(config.unicast_peers.iter().copied());
        endpoint_config.peers = Some(peers);
    }
    let transfers = Arc::new(transfer::Transfers::new(
        config.node_id,
        dir.clone(),
        config.members.clone(),
        endpoint_config.clone(),
        config.transfer_rate_bytes_per_s,
    ));
    let endpoint = Endpoint::bind(endpoint_config).await?;
    let metrics = Arc::new(crate::metrics::Metrics::new());
    // The metrics listener outlives restarts; it renders whichever run is current.
    let current: CurrentRun = Arc::default();
    let metrics_task = match config.metrics_addr {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| NodeError::Other(format!("metrics address {addr}: {e}")))?;
            let (current, endpoint) = (current.clone(), endpoint.clone());
            Some(tokio::spawn(crate::metrics::serve(listener, move || {
                let run = current.lock().expect("current run poisoned").clone();
                match run {
                    Some((shared, server)) => {
                        crate::metrics::render_node(&shared, &server, &endpoint)
                    }
                    None => String::new(),
                }
            })))
        }
        None => None,
    };
    tokio::pin!(shutdown);
    let result = loop {
        let ctx = RunContext {
            endpoint: endpoint.clone(),
            metrics: metrics.clone(),
            transfers: transfers.clone(),
            current: current.clone(),
        };
        match run_once(&config, ctx, &mut shutdown).await {
            Ok(Exit::Restart) => {
                tracing::info!("restarting in-process");
                continue;
            }
            Ok(Exit::Shutdown) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    if let Some(task) = metrics_task {
        task.abort();
    }
    endpoint.shutdown().await;
    result
}

/// What one run borrows from the process.
struct RunContext {
    endpoint: Endpoint,
    metrics: Arc<crate::metrics::Metrics>,
    transfers: Arc<transfer::Transfers>,
    current: CurrentRun,
}

/// The run the metrics listener renders (none between two runs).
type CurrentRun = Arc<Mutex<Option<(Arc<Shared>, Arc<Server<NodeBackend>>)>>>;

/// Opens the store from the newest snapshot (or empty without one) and gives the tables and
/// the zxid the engine restarts from. Resets the log when the snapshot is beyond it (data
/// files fetched from a peer).
pub(crate) fn open_state(
    dir: &Path,
    log: &Arc<DataLog>,
    store_config: StoreConfig,
) -> Result<(StorageKv, crate::state::Tables, Zxid), NodeError> {
    let vfs: Arc<dyn crate::storage::Vfs> = Arc::new(RealFs);
    let store_dir = dir.join("store");
    let other = NodeError::Other;
    let snapshots = snapshot::list(dir, true).map_err(other)?;
    let Some(snap) = snapshots.last().cloned() else {
        if store_dir.exists() {
            std::fs::remove_dir_all(&store_dir).map_err(io_err("emptying", &store_dir))?;
        }
        let (store, _) = StorageKv::open(vfs, &store_dir, store_config)?;
        return Ok((store, crate::state::Tables::default(), Zxid::ZERO));
    };
    let tables = snapshot::check(&snap).map_err(|e| {
        NodeError::Other(format!(
            "snapshot {}: {e}; move it aside to start from the one before it, or wipe the data \
             directory to fetch everything from a peer",
            snap.path.display()
        ))
    })?;
    let z = snap.zxid;
    let base = log.start_zxid();
    let contained = z <= base || log.has_entry(z);
    if z > log.last_zxid() || !contained {
        tracing::info!(snapshot = %z, log_last = %log.last_zxid(), "resetting the data log to the snapshot");
        log.reset(z)?;
    } else if z < base {
        return Err(NodeError::Other(format!(
            "snapshot {z} is older than the data log's start {base}; wipe the data directory \
             to fetch everything from a peer"
        )));
    }
    snapshot::install_store(&snap, &store_dir).map_err(other)?;
    let (store, _) = StorageKv::open(vfs, &store_dir, store_config)?;
    match store.applied_zxid() {
        a if a > z => {
            return Err(NodeError::Other(format!(
                "snapshot {z} holds store data up to {a}: it is damaged; move it aside"
            )))
        }
        a if a < z => {
            // The last entries before the snapshot touched no data (locks, sessions).
            store.apply(z, &[])?;
        }
        _ => {}
    }
    // Older snapshots are not needed any more.
    snapshot::prune(dir, z, &[]).map_err(NodeError::Other)?;
    let _ = std::fs::remove_dir_all(dir.join(transfer::INCOMING_DIR));
    tracing::info!(snapshot = %z, keys = store.key_count(), "store rebuilt from the snapshot");
    Ok((store, tables, z))
}

async fn run_once(
    config: &Config,
    ctx: RunContext,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> Result<Exit, NodeError> {
    let dir = config.data_dir.clone();
    let vfs: Arc<dyn crate::storage::Vfs> = Arc::new(RealFs);
    let log_config = LogConfig {
        segment_bytes_max: config.log_segment_bytes,
        retention_entries: config.log_retention_entries,
    };
    let (log, recovery) = DataLog::open(vfs.clone(), &dir.join("log"), log_config)?;
    if recovery.torn_tail.is_some() {
        tracing::warn!(?recovery, "data log recovered a torn tail");
    }
    let log = Arc::new(log);
    let store_config = StoreConfig {
        key_bytes_max: config.key_bytes_max,
        value_bytes_max: config.value_bytes_max,
        ..StoreConfig::default()
    };
    ctx.transfers.restarted();
    let (store, tables, restart_applied) = open_state(&dir, &log, store_config)?;
    let view = LogView::open(log.clone())?;
    let store = Arc::new(store);
    // Merges reclaim overwritten values; the snapshot's hard links keep the inputs it holds.
    let compactor = crate::storage::Compactor::spawn(store.clone(), COMPACTION_CHECK);
    let hard = disk::read_hard_state(&dir).map_err(NodeError::Other)?;
    let last_snapshot = snapshot::latest(&dir).map_err(NodeError::Other)?;
    if let Some(snap) = &last_snapshot {
        ctx.metrics.snapshot_zxid.store(snap.zxid.0, std::sync::atomic::Ordering::Relaxed);
    }

    let members: Vec<NodeId> = config.members.keys().copied().collect();
    let mut engine_config = EngineConfig::new(config.node_id, members.clone());
    engine_config.heartbeat_interval_ms = config.heartbeat_interval_ms;
    engine_config.election_timeout_ms = config.election_timeout_ms;
    engine_config.lease_ms = config.lease_ms;
    engine_config.drift_margin_ms = config.drift_margin_ms;
    engine_config.batch_bytes_max = UNICAST_BATCH_BYTES_MAX;
    engine_config.sync_entries_max = 256;
    let start = Instant::now();
    let engine =
        Engine::new(engine_config, RestartState { hard, applied: restart_applied }, &view, 0)?;
    tracing::info!(
        node = config.node_id,
        log_base = %view.base(),
        log_last = %view.last(),
        snapshot = %restart_applied,
        ?hard,
        "node starting"
    );
    let endpoint = ctx.endpoint.clone();

    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (applied_tx, _) = watch::channel(restart_applied);
    let shared = Arc::new(Shared {
        node: config.node_id,
        store: store.clone(),
        applied: RwLock::new(restart_applied),
        applied_tx,
        status: Mutex::new(StatusView {
            role: WireRole::Looking,
            epoch: hard.current_epoch,
            master: None,
            committed: restart_applied,
            locks: tables.locks.len() as u64,
            sessions: tables.sessions.len() as u64,
        }),
        cmds: cmd_tx,
        recovered_commit: log.commit_zxid(),
        metrics: ctx.metrics.clone(),
        endpoint: endpoint.clone(),
        transfers: ctx.transfers.clone(),
    });
    let server_config = ServerConfig {
        fs_live_interval: Duration::from_millis(config.fslive_interval_ms),
        key_bytes_max: config.key_bytes_max,
        value_bytes_max: config.value_bytes_max,
        ..ServerConfig::new(config.own_addr().to_string())
    };
    let server = Arc::new(Server::new(NodeBackend::new(shared.clone()), server_config));
    // The cache starts at the snapshot's zxid.
    server.flush_cache();
    *ctx.current.lock().expect("current run poisoned") = Some((shared.clone(), server.clone()));

    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let (repl_tx, repl_rx) = mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(outbound(endpoint.clone(), config.members.clone(), out_rx)));
    tasks.push(tokio::spawn(receive(
        endpoint.clone(),
        server.clone(),
        shared.clone(),
        repl_tx,
        members.clone(),
    )));
    let announce_tx = out_tx.clone();
    tasks.push(tokio::spawn(cache_server::server::run_announcer(
        server.clone(),
        ANNOUNCE_TICK,
        move |m| {
            let out = match m {
                Message::FsLive(_) => Out::GroupUnreliable(m),
                other => Out::Group(other),
            };
            let _ = announce_tx.send(out);
        },
    )));
    tasks.push(tokio::spawn(cache_server::load::run_sampler(
        server.gauge().clone(),
        LOAD_SAMPLE_INTERVAL,
    )));

    let (snap_done_tx, snap_done_rx) = mpsc::unbounded_channel();
    let mut core = Core {
        data_dir: dir.clone(),
        engine,
        log: view,
        sm: StateMachine::restore(
            DiskKv(store.clone()),
            tables,
            StateConfig {
                key_bytes_max: config.key_bytes_max,
                value_bytes_max: config.value_bytes_max,
                ..StateConfig::default()
            },
        ),
        shared: shared.clone(),
        server: server.clone(),
        out: out_tx,
        pending: HashMap::new(),
        persists: VecDeque::new(),
        keeper: None,
        takeover: None,
        lease_config: LeaseConfig { lock_ttl_ms: config.lock_ttl_ms as u32 },
        start,
        marked_commit: log.commit_zxid(),
        snaps: Snapshots {
            every_entries: config.snapshot_entries,
            every_bytes: config.snapshot_log_bytes,
            retention_bytes: config.log_retention_bytes,
            entries_since: 0,
            bytes_since: 0,
            last: last_snapshot,
            running: false,
            waiters: Vec::new(),
            done_tx: snap_done_tx,
        },
    };
    let result = core.run(repl_rx, cmd_rx, snap_done_rx, shutdown).await;
    // Drain: whatever was written becomes durable before the run ends.
    let last = log.last_zxid();
    match tokio::time::timeout(SHUTDOWN_SYNC_WAIT, log.wait_durable_async(last)).await {
        Ok(Ok(())) => tracing::info!(%last, "log synced"),
        Ok(Err(e)) => tracing::error!("final log sync failed: {e}"),
        Err(_) => tracing::error!("final log sync did not finish within {SHUTDOWN_SYNC_WAIT:?}"),
    }
    for task in &tasks {
        task.abort();
    }
    for task in tasks {
        let _ = task.await;
    }
    *ctx.current.lock().expect("current run poisoned") = None;
    // Stopping the compactor waits for a merge in progress: not on a runtime thread.
    let _ = tokio::task::spawn_blocking(move || drop(compactor)).await;
    result
}

/// (persist_seq, the log zxid whose durability covers it, what to send once it is durable).
type PendingPersist = (u64, Zxid, Vec<(To, Message)>);

struct Core {
    data_dir: PathBuf,
    engine: Engine,
    log: LogView,
    sm: StateMachine<DiskKv>,
    shared: Arc<Shared>,
    server: Arc<Server<NodeBackend>>,
    out: mpsc::UnboundedSender<Out>,
    pending: HashMap<Zxid, Waiter>,
    /// Readys whose persist is not yet durable: (persist_seq, log zxid that covers it, what to
    /// send once it is).
    persists: VecDeque<PendingPersist>,
    keeper: Option<LeaseKeeper>,
    /// The zxid of this master's Takeover record; the lease keeper starts when it applies.
    takeover: Option<Zxid>,
    lease_config: LeaseConfig,
    start: Instant,
    /// The last commit mark written to the log.
    marked_commit: Zxid,
    snaps: Snapshots,
}

/// The core's snapshot schedule (see the module's Durability and restart).
struct Snapshots {
    every_entries: u64,
    every_bytes: u64,
    /// The log kept below a snapshot ends at this many bytes (`log_retention_bytes`) or
    /// `log_retention_entries` entries, whichever comes first.
    retention_bytes: u64,
    /// Applied since the last snapshot.
    entries_since: u64,
    bytes_since: u64,
    last: Option<SnapshotDir>,
    /// A snapshot is being finished off the core.
    running: bool,
    /// Transfers waiting for the running snapshot.
    waiters: Vec<oneshot::Sender<Result<(SnapshotDir, transfer::PinGuard), String>>>,
    done_tx: mpsc::UnboundedSender<Result<SnapshotDir, String>>,
}

impl Core {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    async fn run(
        &mut self,
        mut repl_rx: mpsc::UnboundedReceiver<Message>,
        mut cmd_rx: mpsc::UnboundedReceiver<Cmd>,
        mut snap_done_rx: mpsc::UnboundedReceiver<Result<SnapshotDir, String>>,
        shutdown: &mut (impl Future<Output = ()> + Unpin),
    ) -> Result<Exit, NodeError> {
        let mut ticker = tokio::time::interval(Duration::from_millis(TICK_MS));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut durable_rx = self.log.log().subscribe_durable();
        loop {
            tokio::select! {
                _ = &mut *shutdown => {
                    tracing::info!("shutting down");
                    self.fail_pending(true);
                    return Ok(Exit::Shutdown);
                }
                Some(done) = snap_done_rx.recv() => self.snapshot_done(done)?,
                _ = ticker.tick() => {
                    let now = self.now_ms();
                    self.engine.tick(now, &self.log);
                    self.tick_leases(now);
                }
                Some(message) = repl_rx.recv() => {
                    let now = self.now_ms();
                    self.engine.step(now, message, &self.log);
                    // The engine's next input must see this one's persists in the log, so
                    // every message is followed by its Ready.
                    for _ in 0..256 {
                        self.drain()?;
                        let Ok(message) = repl_rx.try_recv() else { break };
                        self.engine.step(now, message, &self.log);
                    }
                }
                Some(cmd) = cmd_rx.recv() => {
                    if let Some(exit) = self.command(cmd)? {
                        self.fail_pending(true);
                        return Ok(exit);
                    }
                    for _ in 0..1024 {
                        let Ok(cmd) = cmd_rx.try_recv() else { break };
                        if let Some(exit) = self.command(cmd)? {
                            self.fail_pending(true);
                            return Ok(exit);
                        }
                    }
                }
                changed = durable_rx.changed() => {
                    self.shared.metrics.log_fsyncs.inc();
                    if changed.is_err() || durable_rx.borrow().failed {
                        return Err(NodeError::Other(
                            "the data log can no longer sync (fsync failed); restart the node"
                                .into(),
                        ));
                    }
                }
            }
            self.drain()?;
            self.maybe_snapshot();
        }
    }

    /// Takes a snapshot when one is due and no transfer holds one.
    fn maybe_snapshot(&mut self) {
        let s = &self.snaps;
        let due = s.entries_since >= s.every_entries || s.bytes_since >= s.every_bytes;
        if !due || s.running || self.shared.transfers.busy() || self.shared.transfers.fetching() {
            return;
        }
        if let Err(e) = self.begin_snapshot() {
            tracing::error!("snapshot failed: {e}");
            // Try again after another interval rather than at every loop.
            self.snaps.entries_since = 0;
            self.snaps.bytes_since = 0;
        }
    }

    /// The consistent part of a snapshot, on the core (store and tables at one zxid): the
    /// store is frozen (its active segment sealed), its files hard-linked with the tables into
    /// a `.tmp` directory, and unfrozen; hashing, the manifest and the rename run off the core.
    fn begin_snapshot(&mut self) -> Result<(), String> {
        let zxid = *self.shared.applied.read().expect("applied lock poisoned");
        let pending = snapshot::take(&self.data_dir, &self.shared.store, self.sm.tables(), zxid)?;
        self.snaps.running = true;
        self.snaps.entries_since = 0;
        self.snaps.bytes_since = 0;
        let previous = self.snaps.last.clone();
        let done_tx = self.snaps.done_tx.clone();
        tracing::info!(%zxid, files = pending.names.len(), "snapshot started");
        tokio::task::spawn_blocking(move || {
            let _ = done_tx.send(pending.finish(previous.as_ref()));
        });
        Ok(())
    }

    /// A snapshot finished off the core: log retention, older snapshots go, waiters answered.
    fn snapshot_done(&mut self, done: Result<SnapshotDir, String>) -> Result<(), NodeError> {
        self.snaps.running = false;
        match &done {
            Ok(snap) => {
                self.shared.metrics.snapshots.inc();
                self.shared
                    .metrics
                    .snapshot_zxid
                    .store(snap.zxid.0, std::sync::atomic::Ordering::Relaxed);
                self.snaps.last = Some(snap.clone());
                let pinned = self.shared.transfers.pinned();
                let released = if pinned.is_empty() {
                    self.log.release_through(snap.zxid, self.snaps.retention_bytes)?
                } else {
                    0
                };
                let pruned = snapshot::prune(&self.data_dir, snap.zxid, &pinned)
                    .map_err(NodeError::Other)?;
                tracing::info!(zxid = %snap.zxid, log_segments_released = released,
                    snapshots_removed = pruned, log_base = %self.log.log().start_zxid(),
                    "snapshot done");
            }
            Err(e) => {
                tracing::error!("snapshot failed: {e}");
                // Remove the unfinished `.tmp` directory now rather than at the next start.
                if let Err(e) = snapshot::list(&self.data_dir, true) {
                    tracing::warn!("cleaning up after the failed snapshot: {e}");
                }
            }
        }
        for waiter in self.snaps.waiters.drain(..) {
            let pinned = done.clone().map(|s| {
                let pin = transfer::PinGuard::new(&self.shared.transfers, s.zxid);
                (s, pin)
            });
            let _ = waiter.send(pinned);
        }
        Ok(())
    }

    /// A transfer asks for a snapshot: the pinned one while a transfer runs, the latest if
    /// nothing was applied since, else a fresh one.
    fn snapshot_for(
        &mut self,
        reply: oneshot::Sender<Result<(SnapshotDir, transfer::PinGuard), String>>,
    ) {
        let applied = *self.shared.applied.read().expect("applied lock poisoned");
        let pinned = self.shared.transfers.pinned();
        if let Some(last) = &self.snaps.last {
            if last.zxid == applied || pinned.contains(&last.zxid) {
                let pin = transfer::PinGuard::new(&self.shared.transfers, last.zxid);
                let _ = reply.send(Ok((last.clone(), pin)));
                return;
            }
        }
        if !self.snaps.running {
            if let Err(e) = self.begin_snapshot() {
                let _ = reply.send(Err(e));
                return;
            }
        }
        self.snaps.waiters.push(reply);
    }

    fn send(&self, to: To, message: Message) {
        let out = match to {
            To::Peers => Out::Group(message),
            To::Node(id) => Out::Node(id, message),
        };
        let _ = self.out.send(out);
    }

    fn drain(&mut self) -> Result<(), NodeError> {
        let result = self.drain_ready();
        // Record the commit point in the log (it rides with the next group sync): a restart
        // then knows how far the rebuilt store must get before it serves reads.
        let commit = self.engine.commit().min(self.engine.applied());
        if commit > self.marked_commit {
            self.log.log().mark_commit(commit)?;
            self.marked_commit = commit;
        }
        result
    }

    fn drain_ready(&mut self) -> Result<(), NodeError> {
        for _ in 0..READY_ROUNDS_MAX {
            self.check_persisted();
            let ready: Ready = self.engine.ready(&self.log);
            if ready.is_empty() {
                return Ok(());
            }
            for op in ready.persist {
                match op {
                    PersistOp::Append(entries) => self.log.append(&entries)?,
                    PersistOp::TruncateAfter(zxid) => self.log.truncate_after(zxid)?,
                    PersistOp::HardState(hard) => disk::write_hard_state(&self.data_dir, hard)
                        .map_err(io_err("writing the epoch state in", &self.data_dir))?,
                }
            }
            for (to, message) in ready.send_now {
                self.send(to, message);
            }
            if let Some(seq) = ready.persist_seq {
                let covers = self.log.log().last_zxid();
                self.persists.push_back((seq, covers, ready.send_after_persist));
            }
            if !ready.commits.is_empty() {
                self.shared.metrics.commit_batch.record(ready.commits.len() as u64);
            }
            for entry in ready.commits {
                self.apply(entry)?;
            }
            if let Some(role) = ready.role {
                self.on_role(role);
            }
            if let Some((donor, base)) = ready.fetch_snapshot {
                let applied = self.engine.applied();
                tracing::info!(donor, %base, %applied, "behind the master's log: fetching data files");
                transfer::start_fetch(&self.shared, donor, base, applied);
            }
        }
        Ok(())
    }

    fn check_persisted(&mut self) {
        let durable = self.log.log().durable_zxid();
        while self.persists.front().is_some_and(|p| p.1 <= durable) {
            let (seq, _, after) = self.persists.pop_front().expect("front exists");
            self.engine.persisted(seq);
            for (to, message) in after {
                self.send(to, message);
            }
        }
    }

    fn update_status(&self) {
        let (role, master) = wire_role(self.engine.role());
        let mut status = self.shared.status.lock().expect("status poisoned");
        status.role = role;
        status.master = if role == WireRole::Master { Some(self.shared.node) } else { master };
        status.epoch = self.engine.hard_state().current_epoch;
        status.committed = self.engine.commit();
    }

    fn on_role(&mut self, role: Role) {
        let was_master =
            self.shared.status.lock().expect("status poisoned").role == WireRole::Master;
        crate::events::role_changed(
            self.shared.node,
            was_master,
            role,
            self.engine.hard_state().current_epoch,
        );
        self.shared.metrics.role_changes.inc();
        self.update_status();
        match role {
            Role::Leading { epoch, established: true } => {
                self.shared.metrics.elections.inc();
                let command = Command::Takeover { epoch, master: self.shared.node };
                match command.encode().map(Bytes::from).map(|d| self.engine.propose(d)) {
                    Ok(Ok(zxid)) => self.takeover = Some(zxid),
                    other => tracing::warn!("could not propose the takeover record: {other:?}"),
                }
            }
            _ => {
                self.keeper = None;
                self.takeover = None;
                self.fail_pending(true);
            }
        }
    }

    fn fail_pending(&mut self, unknown: bool) {
        let master = self.engine.master();
        for (_, waiter) in self.pending.drain() {
            waiter.fail(master, unknown);
        }
    }

    fn is_master(&self) -> bool {
        matches!(self.engine.role(), Role::Leading { established: true, .. })
    }

    fn apply(&mut self, entry: protocol::message::replication::Entry) -> Result<(), NodeError> {
        let zxid = entry.zxid;
        self.snaps.entries_since += 1;
        self.snaps.bytes_since += entry.data.len() as u64;
        let now = self.now_ms();
        let result = {
            let mut applied = self.shared.applied.write().expect("applied lock poisoned");
            let result = if entry.data.is_empty() { None } else { Some(self.sm.apply(&entry)?) };
            let mut followed = false;
            for notice in result.iter().flat_map(|r| &r.notices) {
                if let crate::state::Notice::Update(update) = notice {
                    self.server.on_applied(update);
                    followed = true;
                }
            }
            if !followed {
                // Keeps the server cache's position at the applied zxid, so it keeps serving.
                self.server.on_applied(&UpdateNotice { zxid, ops: Vec::new() });
            }
            *applied = zxid;
            result
        };
        self.shared.applied_tx.send_replace(zxid);
        {
            let mut status = self.shared.status.lock().expect("status poisoned");
            status.committed = self.engine.commit();
            // A follower learns the new epoch after its role changed: keep status current.
            status.epoch = self.engine.hard_state().current_epoch;
            let tables = self.sm.tables();
            status.locks = tables.locks.len() as u64;
            status.sessions = tables.sessions.len() as u64;
        }
        let Some(result) = result else {
            if let Some(waiter) = self.pending.remove(&zxid) {
                match waiter {
                    Waiter::Barrier(tx) | Waiter::Write(tx) => {
                        let _ = tx.send(Ok(zxid));
                    }
                    Waiter::Lock(_) => {}
                }
            }
            return Ok(());
        };
        let master = self.is_master();
        if master {
            for notice in result.notices {
                let _ = self.out.send(Out::Group(notice.into_message()));
            }
        }
        if let Some(keeper) = self.keeper.as_mut() {
            keeper.observe(&result.leases, now);
        }
        if master && self.takeover == Some(zxid) {
            let tables = self.sm.tables();
            self.keeper = Some(LeaseKeeper::takeover(
                self.lease_config,
                &tables.locks,
                &tables.sessions,
                now,
            ));
            tracing::info!(%zxid, "master takeover applied; lock and session leases start");
        }
        if let Some(waiter) = self.pending.remove(&zxid) {
            match (waiter, result.reply.map(|r| r.outcome)) {
                (Waiter::Write(tx), Some(Outcome::Write(r))) => {
                    let _ = tx.send(r.map_err(server_error));
                }
                (Waiter::Lock(tx), Some(Outcome::Lock(r))) => {
                    let _ = tx.send(r);
                }
                (waiter, other) => {
                    tracing::error!(%zxid, ?other, "entry outcome does not match its proposer");
                    waiter.fail(self.engine.master(), true);
                }
            }
        }
        Ok(())
    }

    fn propose(&mut self, data: Bytes, waiter: Option<Waiter>) {
        match self.engine.propose(data) {
            Ok(zxid) => {
                if let Some(w) = waiter {
                    self.pending.insert(zxid, w);
                }
            }
            Err(ProposeError::NotMaster { master }) => {
                if let Some(w) = waiter {
                    w.fail(master, false);
                }
            }
            Err(ProposeError::Busy) => {
                if let Some(w) = waiter {
                    w.fail(Some(self.shared.node), true);
                }
            }
        }
    }

    fn command(&mut self, cmd: Cmd) -> Result<Option<Exit>, NodeError> {
        let now = self.now_ms();
        match cmd {
            Cmd::Snapshot(reply) => self.snapshot_for(reply),
            Cmd::Installed(zxid) => {
                tracing::info!(%zxid, "data files installed: resetting the log and restarting");
                self.log.log().reset(zxid)?;
                return Ok(Some(Exit::Restart));
            }
            Cmd::Restart => return Ok(Some(Exit::Restart)),
            Cmd::Propose { data, waiter } => self.propose(data, Some(waiter)),
            Cmd::Linearizable(tx) => {
                if self.engine.lease_read_ok(now) {
                    let _ = tx.send(Ok(self.engine.commit()));
                } else if self.is_master() {
                    self.propose(Bytes::new(), Some(Waiter::Barrier(tx)));
                } else {
                    let _ = tx.send(Err(ServerError::NotMaster { master: self.engine.master() }));
                }
            }
            Cmd::Renew { client, session, locks, reply } => {
                let result = match self.keeper.as_mut() {
                    Some(keeper) => keeper.renew(now, client, session, &locks),
                    None => Err(WireError {
                        code: if self.is_master() {
                            ErrorCode::Unavailable
                        } else {
                            ErrorCode::NotMaster { master: self.engine.master() }
                        },
                        message: "renewals go to the established master".into(),
                    }),
                };
                let _ = reply.send(result);
            }
        }
        Ok(None)
    }

    fn tick_leases(&mut self, now: u64) {
        let Some(keeper) = self.keeper.as_mut() else { return };
        for command in keeper.tick(now) {
            match command.encode() {
                Ok(data) => self.propose(Bytes::from(data), None),
                Err(e) => tracing::error!("cannot encode lease expiry {command:?}: {e}"),
            }
        }
    }
}

/// A state-machine refusal as the server's error (the wire code and message unchanged).
pub(crate) fn server_error(e: WireError) -> ServerError {
    match e.code {
        ErrorCode::NotMaster { master } => ServerError::NotMaster { master },
        _ => ServerError::Refused(e),
    }
}

async fn outbound(
    endpoint: Endpoint,
    members: BTreeMap<NodeId, SocketAddr>,
    mut rx: mpsc::UnboundedReceiver<Out>,
) {
    let large_permits = Arc::new(Semaphore::new(LARGE_UNICAST_IN_FLIGHT_MAX));
    while let Some(out) = rx.recv().await {
        let result = match out {
            Out::Group(message) => endpoint.multicast(message).await,
            Out::GroupUnreliable(message) => endpoint.send_unreliable(&message).await,
            Out::Node(id, message) => match members.get(&id) {
                Some(addr) => match endpoint.send_unreliable_to(*addr, &message).await {
                    // Does not fit one datagram (only requests and replies are fragmented):
                    // send it reliably as a request instead (see the module's Limits).
                    Err(MessagingError::Protocol(ProtocolError::TooLarge { len, .. })) => {
                        send_large(&endpoint, &large_permits, id, *addr, message, len);
                        Ok(())
                    }
                    other => other,
                },
                None => Ok(()),
            },
        };
        match result {
            Ok(()) => {}
            Err(MessagingError::Shutdown) => return,
            Err(e) => tracing::warn!("send failed: {e}"),
        }
    }
}

/// Sends an oversize message to node `id` as a fragmented unicast request on its own task,
/// unless [`LARGE_UNICAST_IN_FLIGHT_MAX`] are already under way (then it is dropped: the
/// engine re-sends). The reply is only an acknowledgement; its content is not used.
fn send_large(
    endpoint: &Endpoint,
    permits: &Arc<Semaphore>,
    id: NodeId,
    addr: SocketAddr,
    message: Message,
    len: usize,
) {
    let Ok(permit) = permits.clone().try_acquire_owned() else {
        tracing::debug!(to = id, len, "oversize message dropped: too many in flight");
        return;
    };
    let endpoint = endpoint.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let sent =
            endpoint.request(addr, message, LARGE_UNICAST_TIMEOUT, LARGE_UNICAST_RETRIES).await;
        if let Err(e) = sent {
            tracing::debug!(to = id, len, "oversize message not acknowledged: {e}");
        }
    });
}

fn is_replication(message: &Message) -> bool {
    matches!(
        message,
        Message::Vote(_)
            | Message::Prepare(_)
            | Message::PrepareOk(_)
            | Message::Sync(_)
            | Message::Proposal(_)
            | Message::Accept(_)
            | Message::Heartbeat(_)
            | Message::Commit(_)
    )
}

async fn receive(
    endpoint: Endpoint,
    server: Arc<Server<NodeBackend>>,
    shared: Arc<Shared>,
    repl_tx: mpsc::UnboundedSender<Message>,
    members: Vec<NodeId>,
) {
    loop {
        let received = match endpoint.recv().await {
            Ok(Incoming::Message(r)) => r,
            Ok(Incoming::Gap { sender, .. }) => {
                tracing::debug!(sender, "gap in a sender's stream (the engine repairs)");
                continue;
            }
            Err(_) => return,
        };
        let from_member = received.sender != shared.node as SenderId
            && members.iter().any(|m| *m as SenderId == received.sender);
        let replication = from_member && is_replication(&received.message);
        if let Some(handle) = received.request {
            if replication {
                // An oversize message from a member's engine (see the module's Limits): hand
                // it to the core like any other and acknowledge it so the sender stops
                // retrying. A retried request may arrive twice; the engine ignores repeats.
                let _ = repl_tx.send(received.message);
                let applied = *shared.applied.read().expect("applied lock poisoned");
                let ack = Message::ReadReply(ReadReply {
                    applied,
                    load: server.gauge().load(),
                    result: Ok(ReadValue::Bool(true)),
                });
                let endpoint = endpoint.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle.reply(&endpoint, ack).await {
                        tracing::debug!("acknowledgement not sent: {e}");
                    }
                });
                continue;
            }
            let (endpoint, server, shared) = (endpoint.clone(), server.clone(), shared.clone());
            tokio::spawn(answer(endpoint, server, shared, handle, received.message));
            continue;
        }
        if replication {
            let _ = repl_tx.send(received.message);
        }
    }
}

async fn answer(
    endpoint: Endpoint,
    server: Arc<Server<NodeBackend>>,
    shared: Arc<Shared>,
    handle: RequestHandle,
    message: Message,
) {
    let reply = match message {
        Message::Lock(lock) => {
            shared.metrics.op(crate::metrics::OpKind::Lock);
            let request = lock.request;
            let result = lock_command(&shared, lock).await;
            Some(Message::LockReply(LockReply { request, load: server.gauge().load(), result }))
        }
        Message::RequestFile(request) => Some(transfer::on_request_file(&shared, request).await),
        Message::Backup(backup) => Some(transfer::on_backup(&shared, backup).await),
        Message::TransFile(offer) => Some(transfer::on_offer(&shared, offer).await),
        Message::Request(r) if !matches!(r.op, ReadOp::Status) && shared.recovering() => {
            let applied = *shared.applied.read().expect("applied lock poisoned");
            let message = if shared.transfers.fetching() {
                format!(
                    "node {} is fetching its data files from a peer; try another node",
                    shared.node
                )
            } else {
                format!(
                    "node {} is rebuilding its state from its log ({applied} of {}); try \
                     another node",
                    shared.node, shared.recovered_commit
                )
            };
            let result = Err(WireError { code: ErrorCode::Behind, message });
            Some(Message::ReadReply(ReadReply { applied, load: server.gauge().load(), result }))
        }
        other => server.handle(other).await,
    };
    if let Some(reply) = reply {
        if let Err(e) = handle.reply(&endpoint, reply).await {
            tracing::debug!("reply not sent: {e}");
        }
    }
}

async fn lock_command(
    shared: &Shared,
    lock: protocol::message::lock::LockRequest,
) -> Result<LockGrant, WireError> {
    let closed = || WireError { code: ErrorCode::Unavailable, message: "node stopping".into() };
    if let LockRequestOp::Renew { session, locks } = lock.op {
        let (tx, rx) = oneshot::channel();
        let cmd = Cmd::Renew { client: lock.request.client, session, locks, reply: tx };
        shared.cmds.send(cmd).map_err(|_| closed())?;
        let lease_ms = rx.await.map_err(|_| closed())??;
        return Ok(LockGrant::Renewed { lease_ms });
    }
    let Some(command) = Command::from_lock_request(lock) else {
        return Err(WireError {
            code: ErrorCode::BadRequest,
            message: "not a lock command".into(),
        });
    };
    let data = command
        .encode()
        .map_err(|e| WireError { code: ErrorCode::TooLarge, message: e.to_string() })?;
    let (tx, rx) = oneshot::channel();
    shared
        .cmds
        .send(Cmd::Propose { data: Bytes::from(data), waiter: Waiter::Lock(tx) })
        .map_err(|_| closed())?;
    rx.await.map_err(|_| closed())?
}
