//! Opening a node's state from its data directory: the data log, the store rebuilt from the
//! newest snapshot, the tables, the epoch state, and the [`Core`] composed of them. Used by
//! the shell at every (re)start and by the simulator, each with its own [`Vfs`].

use super::core::{Cmd, Core, Snapshots};
use super::disk::{self, LogView};
use super::shared::{Shared, StatusView};
use super::snapshot;
use super::transfer;
use super::{io_err, NodeBackend, NodeError, UNICAST_BATCH_BYTES_MAX};
use crate::config::Config;
use crate::locks::LeaseConfig;
use crate::replication::{Durability, Engine, EngineConfig, HardState, LogReader, RestartState};
use crate::state::{StateConfig, StateMachine};
use crate::storage::{
    DamagePolicy, DataLog, DiskStore, LogConfig, LogOptions, LogRecovery, StoreConfig, SyncMode,
    Vfs,
};
use cache_server::{Server, ServerConfig};
use protocol::message::data::Role;
use protocol::Zxid;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// What the process lends a run of the core.
pub(crate) struct Parts {
    pub vfs: Arc<dyn Vfs>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub transfers: Arc<transfer::Transfers>,
    /// The host's clock at start.
    pub now_ms: u64,
    /// Who runs the data log's group commit (a thread, or the host by hand).
    pub sync: SyncMode,
}

/// A core ready to run, and what the shell serves beside it.
pub(crate) struct Opened {
    pub core: Core,
    pub shared: Arc<Shared>,
    pub server: Arc<Server<NodeBackend>>,
    /// Commands from the request tasks (the other end is `shared.cmds`).
    pub cmds: mpsc::Receiver<Cmd>,
    pub log: Arc<DataLog>,
    pub store: Arc<DiskStore>,
}

/// Removes every file of a flat directory (the store is rebuilt at every start).
fn empty_dir(vfs: &dyn Vfs, dir: &Path) -> Result<(), NodeError> {
    if !vfs.exists(dir) {
        return Ok(());
    }
    let names = vfs.list(dir).map_err(io_err("listing", dir))?;
    for name in &names {
        let path = dir.join(name);
        vfs.remove(&path).map_err(io_err("emptying", &path))?;
    }
    if !names.is_empty() {
        vfs.sync_dir(dir).map_err(io_err("syncing", dir))?;
    }
    Ok(())
}

/// The epoch state: the log's record, or (a data directory written before the record
/// existed) the old `epoch.state` file; `None` when neither exists.
fn hard_state(dir: &Path, log: &DataLog) -> Result<Option<HardState>, NodeError> {
    if log.hard_state().is_some() {
        return Ok(Some(log.replication_hard_state()?));
    }
    disk::read_hard_state(dir).map_err(NodeError::Other)
}

/// Opens the data log, the store and the tables of `config.data_dir` on `parts.vfs`, and
/// composes the core (see [`super::core`]).
pub(crate) fn open(config: &Config, parts: Parts) -> Result<Opened, NodeError> {
    let dir = config.data_dir.clone();
    let (log, recovery) = open_log(config, &parts)?;
    let store_config = StoreConfig {
        key_bytes_max: config.key_bytes_max,
        value_bytes_max: config.value_bytes_max,
        ..StoreConfig::default()
    };
    parts.transfers.restarted();
    let (store, tables, restart_applied) = open_state(&parts.vfs, &dir, &log, store_config)?;
    let view = LogView::open(log.clone())?;
    let store = Arc::new(store);
    let found = hard_state(&dir, &log)?;
    let durability = durability(found.is_some(), &recovery);
    let hard = found.unwrap_or_default();
    let last_snapshot = snapshot::latest(&dir).map_err(NodeError::Other)?;
    if let Some(snap) = &last_snapshot {
        parts.metrics.snapshot_zxid.store(snap.zxid.0, std::sync::atomic::Ordering::Relaxed);
    }
    let restart = RestartState { hard, applied: restart_applied };
    let engine = Engine::start(engine_config(config), restart, durability, &view, parts.now_ms)?;
    tracing::info!(
        node = config.node_id,
        log_base = %view.base(),
        log_last = %view.last(),
        snapshot = %restart_applied,
        ?hard,
        "node starting"
    );
    let (cmd_tx, cmds) = mpsc::channel(super::COMMAND_QUEUE_MAX);
    let status = StatusView {
        role: Role::Looking,
        epoch: hard.current_epoch,
        master: None,
        committed: restart_applied,
        locks: tables.locks.len() as u64,
        sessions: tables.sessions.len() as u64,
    };
    let (applied_tx, _) = watch::channel(restart_applied);
    let shared = Arc::new(Shared {
        node: config.node_id,
        store: store.clone(),
        applied: RwLock::new(restart_applied),
        applied_tx,
        status: Mutex::new(status),
        cmds: cmd_tx,
        recovered_commit: log.commit_zxid(),
        metrics: parts.metrics.clone(),
        transfers: parts.transfers.clone(),
    });
    let server = new_server(config, &shared);
    // The history window starts at the snapshot's place in the notice chain; the replay of the
    // entries above it records their notices again.
    server.reset_history(tables.last_notice);
    let state_config = StateConfig {
        key_bytes_max: config.key_bytes_max,
        value_bytes_max: config.value_bytes_max,
        ..StateConfig::default()
    };
    let core = Core {
        data_dir: dir,
        engine,
        log: view,
        sm: StateMachine::restore(store.clone(), tables, state_config),
        shared: shared.clone(),
        server: server.clone(),
        outbox: Vec::new(),
        effects: Vec::new(),
        pending: HashMap::new(),
        persists: Default::default(),
        keeper: None,
        takeover: None,
        lease_config: LeaseConfig { lock_ttl_ms: config.lock_ttl_ms as u32 },
        now_ms: parts.now_ms,
        marked_commit: log.commit_zxid(),
        snaps: snapshots(config, last_snapshot),
    };
    Ok(Opened { core, shared, server, cmds, log, store })
}

/// Opens the data log. Damage the log cannot place (below a point it synced, or in an
/// old-format segment) is cut and reported rather than refused: the node then holds less
/// than it may have acknowledged, which the engine is told (see [`durability`]).
fn open_log(config: &Config, parts: &Parts) -> Result<(Arc<DataLog>, LogRecovery), NodeError> {
    let log_config = LogConfig {
        segment_bytes_max: config.log_segment_bytes,
        retention_entries: config.log_retention_entries,
    };
    let options = LogOptions { sync: parts.sync, uncertain_damage: DamagePolicy::CutAndReport };
    let (log, recovery) =
        DataLog::open_with(parts.vfs.clone(), &config.data_dir.join("log"), log_config, options)?;
    if recovery.torn_tail.is_some() {
        tracing::warn!(?recovery, "data log recovered a torn tail");
    }
    if let Some(lost) = &recovery.lost_synced {
        tracing::error!(?lost, "the data log lost bytes it had synced");
    }
    Ok((Arc::new(log), recovery))
}

/// A node that finds no epoch state (a new or wiped data directory) or whose log lost bytes
/// it had synced may have forgotten promises and acknowledged entries: it starts as a
/// non-voter until it holds the committed history again (replication, "Lost durable state").
fn durability(found_hard_state: bool, recovery: &LogRecovery) -> Durability {
    if found_hard_state && recovery.lost_synced.is_none() {
        return Durability::Durable;
    }
    tracing::warn!(
        event = "non_voter",
        lost_log = recovery.lost_synced.is_some(),
        "no complete durable state: this node neither votes nor counts toward a quorum until \
         it has caught up with a master"
    );
    Durability::Lost
}

/// The replication engine's settings from the node's.
fn engine_config(config: &Config) -> EngineConfig {
    let members = config.members.keys().copied().collect();
    let mut engine_config = EngineConfig::new(config.node_id, members);
    engine_config.heartbeat_interval_ms = config.heartbeat_interval_ms;
    engine_config.election_timeout_ms = config.election_timeout_ms;
    engine_config.lease_ms = config.lease_ms;
    engine_config.drift_margin_ms = config.drift_margin_ms;
    engine_config.batch_bytes_max = UNICAST_BATCH_BYTES_MAX;
    engine_config.sync_entries_max = 256;
    engine_config
}

/// The request server in front of the core; its cache starts empty (at the snapshot's zxid).
fn new_server(config: &Config, shared: &Arc<Shared>) -> Arc<Server<NodeBackend>> {
    let server_config = ServerConfig {
        fs_live_interval: Duration::from_millis(config.fslive_interval_ms),
        key_bytes_max: config.key_bytes_max,
        value_bytes_max: config.value_bytes_max,
        history_entries_max: config.history_entries,
        history_bytes_max: config.history_bytes,
        ..ServerConfig::new(config.own_addr().to_string())
    };
    let server = Arc::new(Server::new(NodeBackend::new(shared.clone()), server_config));
    server.flush_cache();
    server
}

/// When the core takes snapshots, starting from the newest one on disk.
fn snapshots(config: &Config, last: Option<snapshot::SnapshotDir>) -> Snapshots {
    Snapshots {
        every_entries: config.snapshot_entries,
        every_bytes: config.snapshot_log_bytes,
        retention_bytes: config.log_retention_bytes,
        entries_since: 0,
        bytes_since: 0,
        last,
        running: false,
        waiters: Vec::new(),
    }
}

/// Opens the store from the newest snapshot (or empty without one) and gives the tables and
/// the zxid the engine restarts from. Resets the log when the snapshot is beyond it (data
/// files fetched from a peer).
pub(crate) fn open_state(
    vfs: &Arc<dyn Vfs>,
    dir: &Path,
    log: &Arc<DataLog>,
    store_config: StoreConfig,
) -> Result<(DiskStore, crate::state::Tables, Zxid), NodeError> {
    let vfs = vfs.clone();
    let store_dir = dir.join("store");
    let other = NodeError::Other;
    let snapshots = snapshot::list(dir, true).map_err(other)?;
    let Some(snap) = snapshots.last().cloned() else {
        empty_dir(vfs.as_ref(), &store_dir)?;
        let (store, _) = DiskStore::open(vfs, &store_dir, store_config)?;
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
    let (store, _) = DiskStore::open(vfs, &store_dir, store_config)?;
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
