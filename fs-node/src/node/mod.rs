//! The node: a core without IO of its own composing the data log and key-value store, the
//! replication [`Engine`](crate::replication::Engine), the
//! [`StateMachine`](crate::state::StateMachine) and the master's
//! [`LeaseKeeper`](crate::locks::LeaseKeeper); the tokio shell around it with the messaging
//! [`Endpoint`] and the cache-server [`Server`] (through
//! [`NodeBackend`]); and [`ManualNode`], the same core driven by hand.
//!
//! # Layout
//! | file | what it holds |
//! |---|---|
//! | `mod.rs` | this shell: [`run`] (the process: endpoint, metrics listener, in-process restarts), the limits |
//! | `core` | the node core without IO: engine, data log, store, state machine, lease keeper, snapshot schedule; time, disk and network come from outside |
//! | `start` | opening a data directory on a [`Vfs`](crate::storage::Vfs) into a core |
//! | `shell` | one run on tokio: the core loop (a clock reading per input), outbound, announcer, sampler, compactor |
//! | `door` | the one door every message comes in by, with the table of which handler takes each message |
//! | `shared` | what the core publishes to request tasks |
//! | `scrape` | what the metrics address serves: the registry plus role, zxids, tables, cache and endpoint figures at scrape time |
//! | [`backend`] | the cache server's view of the node: reads, writes, locks |
//! | [`disk`] | the log as the engine reads it; the store as the state machine's store |
//! | [`snapshot`], [`transfer`] | snapshots, file transfer and backups |
//!
//! # Tasks
//! - **core** (one task, owns the `core::Core`): ticks it every [`TICK_MS`], steps it with
//!   received replication messages and commands, and carries out what it asks (see
//!   `core` for the order of effects and `shell` for the tasks around it).
//! - **receive** (`door`): requests are answered on their own task, replication messages
//!   from members go to the core.
//! - **outbound**, the announcer (FSLive/Freeze), the load sampler, the compactor (`shell`).
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
//! retries until the receiver acknowledges it (a `ReadReply` carrying `ReadValue::Bool(true)`
//! and the receiver's applied zxid; the requester only checks that a reply came). At most
//! [`LARGE_UNICAST_IN_FLIGHT_MAX`] such sends run at once, each on its own task so the
//! outbound order of everything else is not held up; beyond that one is dropped, which is
//! safe because the engine re-sends catch-up chunks on its own timers. The proposal path
//! (multicast, fragmented by the reliable stream) is not limited.
//!
//! # Queues and their bounds
//! Every queue between the endpoint and the core is bounded, so that a slow core slows its
//! senders instead of filling the node's memory (issue 15 point 8).
//!
//! | queue | bound | when full | why this size |
//! |---|---|---|---|
//! | replication messages, receive → core | [`REPLICATION_QUEUE_MAX`] = 256 | the receive task waits and takes nothing more from the endpoint: the members' credit (granted as messages are taken) runs out, so they wait | one round of the core's batch (`MESSAGES_PER_ROUND_MAX`); ~48 KiB each, ~12 MiB |
//! | commands, request tasks → core | [`COMMAND_QUEUE_MAX`] = 1024 | the request task waits | one round of commands (`COMMANDS_PER_ROUND_MAX`); the senders are bounded below |
//! | client requests being answered (one task each) | [`REQUESTS_IN_FLIGHT_MAX`] = 1024 and [`REQUEST_BYTES_IN_FLIGHT_MAX`] = 128 MiB | a client request is answered `Unavailable` ("node N is busy …") at once; a transfer message is dropped (its requester retries); both counted in `shoal_requests_refused_busy_total` | far above what one node serves at once (a client's own window is 32 writes); bytes: the largest write (64 MiB value) fits beside ordinary traffic |
//! | outbound, core → sender task (a multicast waits there for credit) | [`OUTBOUND_QUEUE_MAX`] = 1024 | the core never waits (a core waiting on its outbound, which waits on a peer's credit, which waits on that peer's core, could wait in a circle): it takes no new command while less than [`OUTBOUND_HEADROOM`] is free, and past the bound the message is dropped and counted in `shoal_outbound_dropped_total`, as the network might lose it (the engine repairs: a lost proposal is re-sent from the follower's last ack); the announcer's FSLive/Freeze likewise (the next tick announces again) | ~50 MiB of ordinary proposal batches (a catch-up chunk holding one entry bigger than a datagram is as big as that entry, in either queue) |
//! | snapshot results, blocking thread → core | one (unbounded type) | — | at most one snapshot runs at a time |
//!
//! Below these, the endpoint bounds what it holds itself (see
//! [`protocol::messaging`]: the credit window per sender, `held_bytes_max`, and at most
//! 65 536 best-effort messages, requests among them, waiting to be taken). Replies are not
//! weighed: a read of a large value holds its reply while it is sent.

pub mod backend;
mod core;
pub mod disk;
mod door;
pub mod manual;
mod scrape;
mod shared;
mod shell;
pub mod snapshot;
mod start;
pub mod transfer;

pub use backend::NodeBackend;
pub use door::is_replication;
pub use manual::{Dest, ManualNode, ManualStatus};
pub(crate) use shared::Shared;

use crate::config::Config;
use crate::replication::EngineConfigError;
use crate::state::StateError;
use crate::storage::StorageError;
use cache_server::Server;
use protocol::messaging::{Endpoint, EndpointConfig, MessagingError};
use protocol::{NodeId, SenderId};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;

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
/// Replication messages received from members and waiting for the core: one round of
/// `shell::MESSAGES_PER_ROUND_MAX`; each at most one proposal batch (~48 KiB) as a rule, so
/// about 12 MiB. While it is full the receive task waits, and the members' credit stops.
pub const REPLICATION_QUEUE_MAX: usize = 256;
/// Commands from request tasks waiting for the core: one round of
/// `shell::COMMANDS_PER_ROUND_MAX`. Senders wait for room (they are request tasks, themselves
/// bounded by [`REQUESTS_IN_FLIGHT_MAX`]).
pub const COMMAND_QUEUE_MAX: usize = 1024;
/// Client requests being answered at once (one task each); past it a request is answered
/// `Unavailable` at once. Also the most commands request tasks can have queued for the core.
pub const REQUESTS_IN_FLIGHT_MAX: usize = 1024;
/// Bytes of request messages being answered at once (their encoded length): 128 MiB, room for
/// the largest write (a 64 MiB value) beside ordinary traffic, or thousands of ordinary ones;
/// past it `Unavailable` as above.
pub const REQUEST_BYTES_IN_FLIGHT_MAX: usize = 2 * protocol::limits::VALUE_BYTES_HARD_MAX;
/// Messages the core has handed to the outbound task and that wait for it (a reliable
/// multicast waits there for the members' credit). The core never waits for room (a core
/// waiting on its outbound, which waits on a peer's credit, which waits on that peer's core,
/// could wait in a circle): past the bound a message is dropped and counted in
/// `shoal_outbound_dropped_total`, as a lost datagram would be (the engine repairs losses).
pub const OUTBOUND_QUEUE_MAX: usize = 1024;
/// The core takes no new command while less room than this is left in the outbound queue, so
/// that new work waits (and pushes back on its clients) before anything has to be dropped.
pub const OUTBOUND_HEADROOM: usize = OUTBOUND_QUEUE_MAX / 2;

#[cfg(test)]
mod attack_tests;
#[cfg(test)]
mod bounds_tests;
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

pub(crate) fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> NodeError + 'a {
    move |source| NodeError::Io { what, path: path.to_path_buf(), source }
}

/// Picks and durably stores this start's messaging incarnation, above the one stored by the
/// previous start: receivers tell a start from a replay of the previous one by it, and it
/// selects the subkey this start seals with, so two starts must never share one (a repeated
/// subkey with the process's nonce counter starting again at 1 would repeat AES-GCM nonces).
/// It is stored before any datagram is sealed. A node whose data directory was wiped (and so
/// lost the stored one) still starts above every incarnation its peers saw, because
/// [`protocol::header::fresh_incarnation`] leads with the wall clock in milliseconds.
fn next_incarnation(dir: &Path) -> Result<protocol::Incarnation, NodeError> {
    let path = dir.join("incarnation");
    let old = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| t.trim().parse::<protocol::Incarnation>().ok())
        .unwrap_or(0);
    let next = protocol::header::fresh_incarnation(old);
    let tmp = dir.join("incarnation.tmp");
    std::fs::write(&tmp, format!("{next}\n")).map_err(io_err("writing", &tmp))?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io_err("syncing", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(io_err("renaming", &path))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("syncing", dir))?;
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
    transfers.set_endpoint(endpoint.clone());
    let metrics = Arc::new(crate::metrics::Metrics::new());
    // The metrics listener outlives restarts; it renders whichever run is current.
    let current: CurrentRun = Arc::default();
    let metrics_task = match config.metrics_addr {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| NodeError::Other(format!("metrics address {addr}: {e}")))?;
            let (current, endpoint) = (current.clone(), endpoint.clone());
            let current_ready = current.clone();
            Some(tokio::spawn(crate::metrics::serve(
                listener,
                move || {
                    let run = current.lock().expect("current run poisoned").clone();
                    match run {
                        Some((shared, server)) => scrape::render_node(&shared, &server, &endpoint),
                        None => String::new(),
                    }
                },
                move || {
                    let run = current_ready.lock().expect("current run poisoned").clone();
                    match run {
                        Some((shared, server)) => scrape::ready_node(&shared, &server),
                        None => Err("starting or restarting".into()),
                    }
                },
            )))
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
        match shell::run_once(&config, ctx, &mut shutdown).await {
            Ok(core::Exit::Restart) => {
                tracing::info!("restarting in-process");
                continue;
            }
            Ok(core::Exit::Shutdown) => break Ok(()),
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
