//! A deterministic simulation of whole nodes: the product's own node core
//! ([`fs_node::node::ManualNode`]: engine, data log, storage engine, state machine, lock and
//! session keepers) for 3 or 5 nodes, each on its own simulated disk ([`SimFs`]), with
//! simulated time and network, all from one seed.
//!
//! Unlike [`crate::sim`], which runs the replication engine against a host written for the
//! simulator, this runs the code `shoal-fs` runs: the data log's real records on a disk that
//! keeps written bytes apart from synced ones, the group commit when the simulation says,
//! the store rebuilt and the log replayed at every restart.
//!
//! # Faults ([`Faults`])
//! - `power`: a node crashes and its disk keeps only what was synced, plus an arbitrary
//!   seeded part of the rest, out of order and torn ([`CrashMode::ScrambleUnsynced`]); or (half of the crashes) it crashes with the
//!   page cache kept (kill -9). It restarts after a while.
//! - `stall`: a node gets no CPU for up to [`STALL_MS_MAX`] while time runs: its messages,
//!   ticks and syncs wait, then it handles what queued with the clock it reads then.
//! - `wipe`: a node's data directory is lost (a lost disk); it restarts empty.
//! - `net`: loss, duplication, delays (so reordering) and partitions.
//! - `clock`: node clocks run fast or slow by up to [`CLOCK_PPM_MAX`] (inside the drift
//!   margin of the lease).
//!
//! # Clients
//! - Register clients ([`NodeSimConfig::clients`]) write and read keys `/k*` linearizably;
//!   their history is checked.
//! - Lock clients ([`NodeSimConfig::lock_clients`], [`actors`]) open a session, acquire,
//!   renew and release the locks `/locks/*` through the node core's lock path
//!   ([`ManualNode::lock`]) the way `cache_client::locks` does: a lock counts as valid for its
//!   client until the send time of its last successful session open or renewal plus the lease
//!   less the drift margin ([`LEASE_DRIFT_MARGIN_PERCENT`]); a refused renewal loses every lock.
//! - Cache clients ([`NodeSimConfig::cache_clients`], [`actors`]) each keep a
//!   [`cache_client::cache::ClientCache`] fed by the master's UpdateNotices on the group
//!   stream, modelled as `protocol::messaging` delivers it to a client: per sender incarnation,
//!   in order and once, holes NAKed and repaired while the sender runs, and the undelivered
//!   rest of an incarnation reported as a gap (the cache flushes) when the restarted sender is
//!   met. Reads try the cache first (with the client's floor), then a node (fill); writes go
//!   to the master (write-through); after a flush the client asks the master for a fill floor,
//!   as `cache_client::Client` does.
//!
//! # Checks
//! After every input: at most one established master per epoch. After the run (a safety
//! phase with faults, then a liveness phase without): the cluster has a master and every node
//! has applied the same zxid; every replica's applied state is identical; the clients' history
//! of writes and linearizable reads, ended by a final read of every key, is linearizable (so
//! no acknowledged write is lost). With [`Checks`]:
//! - `locks`: at no simulated instant do two lock clients count on the same lock, and the
//!   fencing tokens of a lock's successive holders strictly increase;
//! - `cache`: every cache hit shows the key's committed value at some zxid at or above the
//!   client's floor (the committed history is what the masters announced; at the end it must
//!   replay to the final state).
//!
//! Either check's violations are counted in the report ([`NodeSimReport::lock_violations`],
//! [`NodeSimReport::stale_hits`]) even when it is off; only a check that is on fails the run.

mod actors;

use crate::linearizability::{self, Input, Operation, Output, Value};
use actors::{CacheClient, LockClient};
use bytes::Bytes;
pub use cache_client::locks::LEASE_DRIFT_MARGIN_PERCENT;
use cache_server::ServerError;
use fs_node::config::{Config, RawConfig};
use fs_node::node::{is_replication, Dest, ManualNode};
use fs_node::storage::{CrashMode, SimFs, Vfs};
use protocol::message::data::{
    Op, RequestId, Role, UpdateNotice, UpdateRequest, Versioned, WireError,
};
use protocol::message::lock::LockGrant;
use protocol::message::Message;
use protocol::{NodeId, Zxid};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::oneshot;

/// The node core's tick.
pub const TICK_MS: u64 = fs_node::node::TICK_MS;
/// A client gives up on an attempt after this long and records the outcome as unknown.
pub const CLIENT_TIMEOUT_MS: u64 = 1_500;
/// Redirects a client follows for one operation.
pub const CLIENT_REDIRECTS_MAX: u32 = 10;
/// Clock rates differ by up to this (2 %: 6 ms over the 300 ms lease, inside its 30 ms
/// drift margin).
pub const CLOCK_PPM_MAX: i64 = 20_000;
/// Longest stall of a node's process.
pub const STALL_MS_MAX: u64 = 3_000;
/// The end of the liveness phase without new client operations, for the cluster to settle.
pub const QUIET_MS: u64 = 1_000;
/// Most events of one run (a runaway run is a failure, not a hang).
pub const EVENTS_MAX: u64 = 5_000_000;

/// Which checks fail a run (the workloads run and the violations are counted either way).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checks {
    pub locks: bool,
    /// Cache hits against the committed history at the client's floor (on in CI since issue
    /// 15 point 1, the notice chain, was fixed).
    pub cache: bool,
}

impl Default for Checks {
    fn default() -> Checks {
        Checks { locks: true, cache: true }
    }
}

impl Checks {
    /// `locks,cache` in any combination, or `all`, or `none`.
    pub fn parse(text: &str) -> Result<Checks, String> {
        let mut c = Checks { locks: false, cache: false };
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word {
                "all" => c = Checks::default(),
                "none" => {}
                "locks" => c.locks = true,
                "cache" => c.cache = true,
                other => {
                    return Err(format!("unknown check {other:?}; use locks, cache, all or none"))
                }
            }
        }
        Ok(c)
    }

    pub fn spell(&self) -> String {
        match (self.locks, self.cache) {
            (true, true) => "all".into(),
            (true, false) => "locks".into(),
            (false, true) => "cache".into(),
            (false, false) => "none".into(),
        }
    }
}

/// Which faults a run injects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    pub power: bool,
    pub stall: bool,
    pub wipe: bool,
    pub net: bool,
    pub clock: bool,
}

impl Faults {
    pub fn all() -> Faults {
        Faults { power: true, stall: true, wipe: true, net: true, clock: true }
    }

    /// `power,stall,wipe,net,clock` in any combination, or `all`, or `none`.
    pub fn parse(text: &str) -> Result<Faults, String> {
        let mut f = Faults::default();
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word {
                "all" => f = Faults::all(),
                "none" => {}
                "power" => f.power = true,
                "stall" => f.stall = true,
                "wipe" => f.wipe = true,
                "net" => f.net = true,
                "clock" => f.clock = true,
                other => {
                    return Err(format!(
                        "unknown fault {other:?}; use power, stall, wipe, net, clock, all or none"
                    ))
                }
            }
        }
        Ok(f)
    }

    /// The flag's spelling, for replay commands.
    pub fn spell(&self) -> String {
        let mut words = Vec::new();
        for (on, name) in [
            (self.power, "power"),
            (self.stall, "stall"),
            (self.wipe, "wipe"),
            (self.net, "net"),
            (self.clock, "clock"),
        ] {
            if on {
                words.push(name);
            }
        }
        if words.is_empty() {
            "none".into()
        } else {
            words.join(",")
        }
    }
}

#[derive(Clone, Debug)]
pub struct NodeSimConfig {
    pub seed: u64,
    pub nodes: usize,
    pub clients: usize,
    pub keys: usize,
    pub faults: Faults,
    /// Safety phase (faults on), then liveness phase (faults off, every node up).
    pub fault_ms: u64,
    pub heal_ms: u64,
    /// Mean time between faults of the safety phase.
    pub fault_every_ms: u64,
    /// Clients that take, renew and release locks (0: none; their randomness is drawn apart,
    /// so a run without lock or cache clients is the run it was before they existed).
    pub lock_clients: usize,
    /// Clients with a cache fed by notices.
    pub cache_clients: usize,
    pub checks: Checks,
}

impl NodeSimConfig {
    pub fn new(seed: u64, nodes: usize, faults: Faults) -> NodeSimConfig {
        NodeSimConfig {
            seed,
            nodes,
            clients: 3,
            keys: 3,
            faults,
            fault_ms: 4_000,
            heal_ms: 4_000,
            fault_every_ms: 700,
            lock_clients: 3,
            cache_clients: 3,
            checks: Checks::default(),
        }
    }

    /// Without lock and cache clients: the runs (and regression seeds) of before they existed.
    pub fn registers_only(mut self) -> NodeSimConfig {
        self.lock_clients = 0;
        self.cache_clients = 0;
        self
    }

    /// The command that replays this run.
    pub fn replay(&self) -> String {
        format!(
            "cargo run --release -p shoal-tests --bin shoal-sim -- --seed {} --nodes {} --faults {} --checks {}",
            self.seed,
            self.nodes,
            self.faults.spell(),
            self.checks.spell()
        )
    }
}

/// What one run did (the safety figures count what was injected).
#[derive(Clone, Debug, Default)]
pub struct NodeSimReport {
    pub ops_ok: usize,
    pub ops_unknown: usize,
    pub power_losses: usize,
    pub kills: usize,
    pub stalls: usize,
    pub wipes: usize,
    pub partitions: usize,
    pub committed: Zxid,
    pub history: Vec<Operation>,
    /// Lock grants received by lock clients.
    pub locks_acquired: usize,
    /// Renewals answered with a new lease.
    pub renewals: usize,
    /// Sessions a lock client lost (a refused renewal, or its validity ran out).
    pub sessions_lost: usize,
    /// Two clients counting on one lock at once, or a token not above its predecessor's.
    pub lock_violations: usize,
    /// Cache hits checked against the committed history.
    pub cache_hits: usize,
    /// Hits older than the client's floor.
    pub stale_hits: usize,
    /// Fills the caches accepted.
    pub cache_fills: usize,
    /// Notices delivered to caches, and gaps reported to them.
    pub notices_delivered: usize,
    pub gaps: usize,
    /// Notices lost on their first transmission to a client.
    pub notices_lost: usize,
    /// Notices still in a crashing node's send queue (never sent).
    pub notices_unsent: usize,
    /// The first violation of each check, described.
    pub first_lock_violation: Option<String>,
    pub first_stale_hit: Option<String>,
}

#[derive(Debug)]
enum Event {
    Tick(NodeId),
    Sync(NodeId),
    Deliver {
        to: NodeId,
        from: NodeId,
        message: Message,
    },
    ClientNext(usize),
    ClientArrive {
        client: usize,
        node: NodeId,
        attempt: u64,
    },
    ClientReply {
        client: usize,
        attempt: u64,
        reply: Reply,
    },
    ClientTimeout {
        client: usize,
        attempt: u64,
    },
    Fault,
    Restart(NodeId),
    Resume(NodeId),
    Heal,
    EndFaults,
    /// Clients stop starting operations, so the cluster can settle before the checks.
    Quiet,
    /// A lock client's next step.
    LockNext(usize),
    LockArrive {
        client: usize,
        node: NodeId,
        attempt: u64,
    },
    LockReply {
        client: usize,
        attempt: u64,
        result: Result<LockGrant, WireError>,
    },
    LockTimeout {
        client: usize,
        attempt: u64,
    },
    CacheNext(usize),
    CacheArrive {
        client: usize,
        node: NodeId,
        attempt: u64,
    },
    CacheReply {
        client: usize,
        attempt: u64,
        reply: actors::CacheAnswer,
    },
    CacheTimeout {
        client: usize,
        attempt: u64,
    },
    /// One datagram of node `from`'s group stream reaches cache client `client`.
    Datagram {
        client: usize,
        from: NodeId,
        incarnation: u64,
        seq: u64,
        sent: u64,
        notice: Option<UpdateNotice>,
    },
    /// A NAK round of cache client `client` for `from`'s stream.
    Nak {
        client: usize,
        from: NodeId,
        incarnation: u64,
    },
}

#[derive(Clone, Debug)]
enum Reply {
    Done(Output),
    Redirect(Option<NodeId>),
    Unknown,
}

/// A request waiting at a node for the core's answer.
enum Waiting {
    Write(oneshot::Receiver<Result<Zxid, ServerError>>),
    /// A linearizable read: first the zxid to reach, then the value read once applied (for a
    /// cache client's position probe, the applied zxid then).
    Barrier(oneshot::Receiver<Result<Zxid, ServerError>>),
    Read(Zxid),
    Lock(oneshot::Receiver<Result<LockGrant, WireError>>),
}

/// What a node finished for an asker.
enum Finished {
    Write(Result<Zxid, ServerError>),
    Read(Option<Versioned>),
    Position(Zxid),
    Lock(Result<LockGrant, WireError>),
}

/// Who waits for a node's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Asker {
    Register(usize),
    Lock(usize),
    Cache(usize),
}

/// Most datagrams of its group stream a node keeps for repair (the messaging layer's
/// retransmit buffer); a NAK for an older one is answered with a gap.
pub const RETAINED_DATAGRAMS_MAX: usize = 8_192;

struct NodeHost {
    id: NodeId,
    fs: SimFs,
    node: Option<ManualNode>,
    stalled: bool,
    /// What arrived while stalled, handled in order when the node runs again.
    deferred: VecDeque<Event>,
    sync_scheduled: bool,
    waiting: Vec<(Asker, u64, Waiting)>,
    /// The run (messaging incarnation) of the node, and its group stream: the next sequence
    /// and what it keeps for repair (`None` for datagrams that carry no notice).
    incarnation: u64,
    stream_seq: u64,
    retained: VecDeque<(u64, Option<UpdateNotice>)>,
    /// The incarnation that crashed last and when: its datagrams sent within
    /// [`actors::SEND_QUEUE_MS`] before were still in its send queue and reach no one.
    crashed_at: Option<(u64, u64)>,
}

#[derive(Clone, Debug)]
struct ClientOp {
    key: String,
    input: Input,
    call: u64,
    request: RequestId,
    redirects: u32,
}

struct Client {
    target: NodeId,
    op: Option<ClientOp>,
    attempt: u64,
    next_value: Value,
    next_seq: u64,
    done: bool,
}

struct World {
    cfg: NodeSimConfig,
    rng: SmallRng,
    now: u64,
    seq: u64,
    events: u64,
    queue: BTreeMap<(u64, u64), Event>,
    nodes: Vec<NodeHost>,
    configs: Vec<Config>,
    clients: Vec<Client>,
    blocked: BTreeSet<(NodeId, NodeId)>,
    /// Lock and cache clients cut off from nodes by a partition.
    cut: BTreeSet<(Asker, NodeId)>,
    clocks: Vec<(u64, i64)>,
    faulting: bool,
    masters: BTreeMap<u32, NodeId>,
    history: Vec<Operation>,
    report: NodeSimReport,
    /// The lock and cache clients' randomness, apart from `rng` (see
    /// [`NodeSimConfig::lock_clients`]).
    arng: SmallRng,
    lockers: Vec<LockClient>,
    cachers: Vec<CacheClient>,
    /// Every (lock, client, token) belief interval of the lock clients.
    beliefs: Vec<actors::Belief>,
    /// The committed history as the masters announced it: each notice's ops by zxid.
    announced: BTreeMap<Zxid, Vec<Op>>,
    /// The cache clients' acknowledged writes: (zxid, ops). Each must be in `announced` at its
    /// zxid with its ops, which ties the announced history to the committed one.
    acked_cache_writes: Vec<(Zxid, Vec<Op>)>,
    /// The caches' clock (they take an `Instant`): this plus the simulated time.
    epoch_instant: std::time::Instant,
}

/// The configuration of node `id` of `n`, its data directory under `/sim`.
fn node_config(id: NodeId, n: usize, key_file: &Path) -> Result<Config, String> {
    let mut members = BTreeMap::new();
    for m in 1..=n {
        members.insert(m.to_string(), format!("127.0.0.1:{}", 20_000 + m));
    }
    let raw = RawConfig {
        node_id: Some(i64::from(id)),
        members: Some(members),
        data_dir: Some(PathBuf::from(format!("/sim/node{id}"))),
        cluster_key_file: Some(key_file.to_path_buf()),
        member_key_file: Some(key_file.with_extension("member-key")),
        cluster_id: Some(7),
        lock_ttl_ms: Some(actors::LOCK_TTL_MS),
        // Snapshots are hard links of the operating system's file system: not simulated.
        snapshot_entries: Some(u64::MAX),
        snapshot_log_bytes: Some(u64::MAX),
        ..RawConfig::default()
    };
    Config::from_raw(raw).map_err(|e| format!("node {id} configuration: {e}"))
}

/// The cluster key file every run reads (the simulation sends nothing over a network), and
/// the member key file beside it. Runs of several threads and processes share them, so each
/// is written whole under a unique name and renamed into place: a run never reads a file
/// half written (an empty member key refused the start of a node before).
fn key_file() -> Result<PathBuf, String> {
    let path = std::env::temp_dir().join("shoal-sim-cluster.key");
    let member = path.with_extension("member-key");
    for (file, byte) in [(&path, 7u8), (&member, 8u8)] {
        if std::fs::read(file).is_ok_and(|b| b == [byte; 32]) {
            continue;
        }
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = file.with_extension(format!("tmp.{}.{n}", std::process::id()));
        fs_node::config::write_owner_only_file(&tmp, &[byte; 32])
            .and_then(|()| std::fs::rename(&tmp, file))
            .map_err(|e| format!("{}: {e}", file.display()))?;
    }
    Ok(path)
}

/// Runs one seeded simulation; `Err` describes the first broken check (a panic of the node's
/// code, such as a broken invariant, is one).
pub fn run(cfg: NodeSimConfig) -> Result<NodeSimReport, String> {
    std::panic::catch_unwind(|| run_inner(cfg)).unwrap_or_else(|panic| {
        let text = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic".into());
        Err(format!("the node's code panicked: {text}"))
    })
}

fn run_inner(cfg: NodeSimConfig) -> Result<NodeSimReport, String> {
    let key = key_file()?;
    let configs = (1..=cfg.nodes as NodeId)
        .map(|id| node_config(id, cfg.nodes, &key))
        .collect::<Result<Vec<_>, _>>()?;
    let mut w = World::new(cfg, configs);
    w.run()?;
    w.report.history = w.history.clone();
    Ok(w.report)
}

fn value_of(bytes: &Bytes) -> Result<Value, String> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| format!("a value the simulation never wrote: {bytes:?}"))
}

impl World {
    fn new(cfg: NodeSimConfig, configs: Vec<Config>) -> World {
        let mut rng = SmallRng::seed_from_u64(cfg.seed);
        let clocks = (0..cfg.nodes)
            .map(|_| {
                let ppm = if cfg.faults.clock {
                    rng.gen_range(-CLOCK_PPM_MAX..=CLOCK_PPM_MAX)
                } else {
                    0
                };
                (rng.gen_range(0..100_000), ppm)
            })
            .collect();
        let nodes = (1..=cfg.nodes as NodeId)
            .map(|id| NodeHost {
                id,
                fs: SimFs::new(),
                node: None,
                stalled: false,
                deferred: VecDeque::new(),
                sync_scheduled: false,
                waiting: Vec::new(),
                incarnation: 0,
                stream_seq: 0,
                retained: VecDeque::new(),
                crashed_at: None,
            })
            .collect();
        let mut arng = SmallRng::seed_from_u64(cfg.seed ^ 0x5eed_10c4_cac4_e000);
        let lockers = (0..cfg.lock_clients).map(|c| LockClient::new(c, &mut arng)).collect();
        let cachers = (0..cfg.cache_clients).map(CacheClient::new).collect();
        let clients = (0..cfg.clients)
            .map(|c| Client {
                target: 1 + (c % cfg.nodes) as NodeId,
                op: None,
                attempt: 0,
                next_value: (c as u64 + 1) * 1_000_000,
                next_seq: 1,
                done: false,
            })
            .collect();
        World {
            cfg,
            rng,
            now: 0,
            seq: 0,
            events: 0,
            queue: BTreeMap::new(),
            nodes,
            configs,
            clients,
            blocked: BTreeSet::new(),
            cut: BTreeSet::new(),
            clocks,
            faulting: true,
            masters: BTreeMap::new(),
            history: Vec::new(),
            report: NodeSimReport::default(),
            arng,
            lockers,
            cachers,
            beliefs: Vec::new(),
            announced: BTreeMap::new(),
            acked_cache_writes: Vec::new(),
            epoch_instant: std::time::Instant::now(),
        }
    }

    fn at(&mut self, delay: u64, event: Event) {
        self.seq += 1;
        self.queue.insert((self.now + delay, self.seq), event);
    }

    /// Node `id`'s clock: its offset and rate.
    fn local_ms(&self, id: NodeId) -> u64 {
        let (offset, ppm) = self.clocks[id as usize - 1];
        offset + ((self.now as i128 * (1_000_000 + ppm as i128)) / 1_000_000) as u64
    }

    fn host(&mut self, id: NodeId) -> &mut NodeHost {
        &mut self.nodes[id as usize - 1]
    }

    fn net_delay(&mut self) -> u64 {
        if self.faulting && self.cfg.faults.net {
            self.rng.gen_range(1..=20)
        } else {
            self.rng.gen_range(1..=3)
        }
    }

    fn lost(&mut self) -> bool {
        self.faulting && self.cfg.faults.net && self.rng.gen_bool(0.05)
    }

    fn run(&mut self) -> Result<(), String> {
        for id in 1..=self.cfg.nodes as NodeId {
            self.start(id)?;
        }
        for c in 0..self.cfg.clients {
            let d = self.rng.gen_range(0..50);
            self.at(d, Event::ClientNext(c));
        }
        for c in 0..self.cfg.lock_clients {
            let d = self.arng.gen_range(0..100);
            self.at(d, Event::LockNext(c));
        }
        for c in 0..self.cfg.cache_clients {
            let d = self.arng.gen_range(0..100);
            self.at(d, Event::CacheNext(c));
        }
        if self.cfg.faults != Faults::default() {
            let d =
                self.rng.gen_range(self.cfg.fault_every_ms / 2..=self.cfg.fault_every_ms * 3 / 2);
            self.at(d, Event::Fault);
        }
        self.at(self.cfg.fault_ms, Event::EndFaults);
        self.at(self.cfg.fault_ms + self.cfg.heal_ms.saturating_sub(QUIET_MS), Event::Quiet);
        let end = self.cfg.fault_ms + self.cfg.heal_ms;
        while let Some((&(t, s), _)) = self.queue.iter().next() {
            if t > end {
                break;
            }
            let event = self.queue.remove(&(t, s)).expect("first event");
            self.now = t;
            self.events += 1;
            if self.events > EVENTS_MAX {
                return Err(format!("more than {EVENTS_MAX} events: a runaway run"));
            }
            self.handle(event)?;
        }
        self.finish()
    }

    /// Starts (or restarts) node `id` from its disk.
    fn start(&mut self, id: NodeId) -> Result<(), String> {
        let now = self.local_ms(id);
        let vfs: Arc<dyn Vfs> = Arc::new(self.host(id).fs.clone());
        let node = ManualNode::open(&self.configs[id as usize - 1], vfs, now)
            .map_err(|e| format!("node {id} does not start: {e}"))?;
        let host = self.host(id);
        host.node = Some(node);
        host.stalled = false;
        host.deferred.clear();
        host.sync_scheduled = false;
        host.waiting.clear();
        host.incarnation += 1;
        host.stream_seq = 0;
        host.retained.clear();
        let d = self.rng.gen_range(0..TICK_MS);
        self.at(d, Event::Tick(id));
        self.after(id)
    }

    fn handle(&mut self, event: Event) -> Result<(), String> {
        // A stalled node's inputs wait for it.
        let target = match &event {
            Event::Tick(id) | Event::Sync(id) => Some(*id),
            Event::Deliver { to, .. } => Some(*to),
            Event::ClientArrive { node, .. }
            | Event::LockArrive { node, .. }
            | Event::CacheArrive { node, .. } => Some(*node),
            _ => None,
        };
        if let Some(id) = target {
            let host = self.host(id);
            if host.node.is_none() {
                if matches!(event, Event::Sync(_)) {
                    host.sync_scheduled = false;
                }
                return Ok(());
            }
            if host.stalled {
                // Timers do not fire in a stalled process; the next tick after it runs again
                // sees the time that passed.
                if matches!(event, Event::Tick(_)) {
                    self.at(TICK_MS, event);
                } else {
                    host.deferred.push_back(event);
                }
                return Ok(());
            }
        }
        match event {
            Event::Tick(id) => {
                let now = self.local_ms(id);
                self.node_call(id, |n| n.tick(now))?;
                self.at(TICK_MS, Event::Tick(id));
            }
            Event::Sync(id) => {
                self.host(id).sync_scheduled = false;
                let now = self.local_ms(id);
                self.node_call(id, |n| n.sync(now))?;
            }
            Event::Deliver { to, from, message } => {
                let now = self.local_ms(to);
                self.node_call(to, |n| n.step(now, from, message))?;
            }
            Event::ClientArrive { client, node, attempt } => self.arrive(client, node, attempt)?,
            Event::ClientNext(c) => self.client_next(c),
            Event::ClientReply { client, attempt, reply } => {
                self.client_reply(client, attempt, reply)
            }
            Event::ClientTimeout { client, attempt } => {
                if self.clients[client].attempt == attempt && self.clients[client].op.is_some() {
                    self.end_op(client, None);
                }
            }
            Event::Fault => self.fault()?,
            Event::Restart(id) => {
                if self.host(id).node.is_none() {
                    self.start(id)?;
                }
            }
            Event::Resume(id) => self.resume(id)?,
            Event::Heal => {
                self.blocked.clear();
                self.cut.clear();
            }
            Event::EndFaults => self.end_faults()?,
            Event::Quiet => {
                self.clients.iter_mut().for_each(|c| c.done = true);
                self.lockers.iter_mut().for_each(|c| c.done = true);
                self.cachers.iter_mut().for_each(|c| c.done = true);
            }
            Event::LockNext(c) => self.lock_next(c),
            Event::LockArrive { client, node, attempt } => {
                self.lock_arrive(client, node, attempt)?
            }
            Event::LockReply { client, attempt, result } => {
                self.lock_reply(client, attempt, Some(result))
            }
            Event::LockTimeout { client, attempt } => self.lock_reply(client, attempt, None),
            Event::CacheNext(c) => self.cache_next(c),
            Event::CacheArrive { client, node, attempt } => {
                self.cache_arrive(client, node, attempt)?
            }
            Event::CacheReply { client, attempt, reply } => {
                self.cache_reply(client, attempt, Some(reply))
            }
            Event::CacheTimeout { client, attempt } => self.cache_reply(client, attempt, None),
            Event::Datagram { client, from, incarnation, seq, sent, notice } => {
                self.datagram(client, from, incarnation, seq, sent, notice)
            }
            Event::Nak { client, from, incarnation } => self.nak(client, from, incarnation),
        }
        Ok(())
    }

    fn node_call(
        &mut self,
        id: NodeId,
        call: impl FnOnce(&mut ManualNode) -> Result<(), fs_node::node::NodeError>,
    ) -> Result<(), String> {
        let node = self.host(id).node.as_mut().expect("node is up");
        call(node).map_err(|e| format!("node {id} stopped: {e}"))?;
        self.after(id)
    }

    /// After an input to node `id`: send its outbox, schedule its group commit, answer the
    /// requests it finished, check the one-master rule.
    fn after(&mut self, id: NodeId) -> Result<(), String> {
        let host = &mut self.nodes[id as usize - 1];
        let Some(node) = host.node.as_mut() else { return Ok(()) };
        let outbox = node.take_outbox();
        let (last, durable) = node.log_position();
        let status = node.status();
        let need_sync = last > durable && !host.sync_scheduled;
        if need_sync {
            host.sync_scheduled = true;
        }
        if need_sync {
            let d = self.rng.gen_range(1..=3);
            self.at(d, Event::Sync(id));
        }
        if status.role == Role::Master {
            match self.masters.get(&status.epoch) {
                Some(m) if *m != id => {
                    return Err(format!(
                        "two masters in epoch {}: node {m} and node {id} (at {} ms)",
                        status.epoch, self.now
                    ))
                }
                _ => {
                    self.masters.insert(status.epoch, id);
                }
            }
        }
        for (dest, message) in outbox {
            if dest == Dest::Group {
                self.group_stream(id, &message)?;
            }
            match dest {
                Dest::Node(to) => self.send(id, to, message.clone()),
                Dest::Group | Dest::GroupUnreliable => {
                    for to in 1..=self.cfg.nodes as NodeId {
                        if to != id && is_replication(&message) {
                            self.send(id, to, message.clone());
                        }
                    }
                }
            }
        }
        self.poll_waiting(id)
    }

    fn send(&mut self, from: NodeId, to: NodeId, message: Message) {
        if self.blocked.contains(&(from, to)) || self.lost() {
            return;
        }
        let d = self.net_delay();
        if self.faulting && self.cfg.faults.net && self.rng.gen_bool(0.02) {
            let d2 = self.net_delay();
            self.at(d2, Event::Deliver { to, from, message: message.clone() });
        }
        self.at(d, Event::Deliver { to, from, message });
    }

    /// Answers what node `id` finished.
    fn poll_waiting(&mut self, id: NodeId) -> Result<(), String> {
        let host = &mut self.nodes[id as usize - 1];
        let Some(node) = host.node.as_mut() else { return Ok(()) };
        let applied = node.status().applied;
        let mut done: Vec<(Asker, u64, Finished)> = Vec::new();
        let mut keep = Vec::new();
        for (asker, attempt, waiting) in host.waiting.drain(..) {
            match waiting {
                Waiting::Write(mut rx) => match rx.try_recv() {
                    Ok(r) => done.push((asker, attempt, Finished::Write(r))),
                    Err(oneshot::error::TryRecvError::Empty) => {
                        keep.push((asker, attempt, Waiting::Write(rx)))
                    }
                    Err(oneshot::error::TryRecvError::Closed) => {}
                },
                Waiting::Barrier(mut rx) => match rx.try_recv() {
                    Ok(Ok(z)) => keep.push((asker, attempt, Waiting::Read(z))),
                    Ok(Err(e)) => done.push((asker, attempt, Finished::Write(Err(e)))),
                    Err(oneshot::error::TryRecvError::Empty) => {
                        keep.push((asker, attempt, Waiting::Barrier(rx)))
                    }
                    Err(oneshot::error::TryRecvError::Closed) => {}
                },
                Waiting::Lock(mut rx) => match rx.try_recv() {
                    Ok(r) => done.push((asker, attempt, Finished::Lock(r))),
                    Err(oneshot::error::TryRecvError::Empty) => {
                        keep.push((asker, attempt, Waiting::Lock(rx)))
                    }
                    Err(oneshot::error::TryRecvError::Closed) => {}
                },
                Waiting::Read(z) => keep.push((asker, attempt, Waiting::Read(z))),
            }
        }
        // Reads whose zxid is applied are served now.
        let mut still = Vec::new();
        for (asker, attempt, waiting) in keep {
            match waiting {
                Waiting::Read(z) if z <= applied => match asker {
                    Asker::Register(client) => {
                        let key = self.clients[client].op.as_ref().map(|o| o.key.clone());
                        let Some(key) = key else { continue };
                        let node = self.nodes[id as usize - 1].node.as_ref().expect("up");
                        let (value, _) =
                            node.get(&key).map_err(|e| format!("node {id} read {key}: {e}"))?;
                        done.push((asker, attempt, Finished::Read(value)));
                    }
                    _ => done.push((asker, attempt, Finished::Position(applied))),
                },
                other => still.push((asker, attempt, other)),
            }
        }
        self.nodes[id as usize - 1].waiting = still;
        for (asker, attempt, finished) in done {
            match asker {
                Asker::Register(client) => {
                    let reply = match finished {
                        Finished::Write(r) => answer(r.map(|_| Output::Write)),
                        Finished::Read(value) => Reply::Done(Output::Read(
                            value.map(|v| value_of(&v.value)).transpose()?,
                        )),
                        Finished::Lock(_) | Finished::Position(_) => continue,
                    };
                    if self.lost() {
                        continue;
                    }
                    let d = self.net_delay();
                    self.at(d, Event::ClientReply { client, attempt, reply });
                }
                Asker::Lock(client) => {
                    let Finished::Lock(result) = finished else { continue };
                    if let Some(d) = self.client_delay(asker, id) {
                        self.at(d, Event::LockReply { client, attempt, result });
                    }
                }
                Asker::Cache(client) => {
                    let reply = match finished {
                        Finished::Write(r) => actors::CacheAnswer::Wrote(r),
                        Finished::Position(z) => actors::CacheAnswer::Position(z),
                        Finished::Read(_) | Finished::Lock(_) => continue,
                    };
                    if let Some(d) = self.client_delay(asker, id) {
                        self.at(d, Event::CacheReply { client, attempt, reply });
                    }
                }
            }
        }
        Ok(())
    }

    fn client_next(&mut self, c: usize) {
        if self.clients[c].done || self.clients[c].op.is_some() {
            return;
        }
        let key = format!("/k{}", self.rng.gen_range(0..self.cfg.keys));
        let input = if self.rng.gen_bool(0.5) {
            let client = &mut self.clients[c];
            client.next_value += 1;
            Input::Write(client.next_value)
        } else {
            Input::Read
        };
        self.begin_op(c, key, input);
    }

    fn begin_op(&mut self, c: usize, key: String, input: Input) {
        let client = &mut self.clients[c];
        let request = RequestId { client: 1_000 + c as u64, seq: client.next_seq };
        client.next_seq += 1;
        client.op = Some(ClientOp { key, input, call: self.now, request, redirects: 0 });
        let target = client.target;
        self.send_op(c, target);
    }

    fn send_op(&mut self, c: usize, node: NodeId) {
        let client = &mut self.clients[c];
        client.attempt += 1;
        client.target = node;
        let attempt = client.attempt;
        self.at(CLIENT_TIMEOUT_MS, Event::ClientTimeout { client: c, attempt });
        if self.lost() {
            return;
        }
        let d = self.net_delay();
        self.at(d, Event::ClientArrive { client: c, node, attempt });
    }

    fn arrive(&mut self, c: usize, id: NodeId, attempt: u64) -> Result<(), String> {
        let Some(op) = self.clients[c].op.clone() else { return Ok(()) };
        let now = self.local_ms(id);
        let node = self.host(id).node.as_mut().expect("node is up");
        let waiting = match op.input {
            Input::Write(v) => {
                let request = UpdateRequest {
                    request: op.request,
                    conditions: Vec::new(),
                    ops: vec![Op::Put {
                        key: op.key.clone(),
                        value: Bytes::from(v.to_string()),
                        create_only: false,
                        ephemeral: None,
                    }],
                };
                Waiting::Write(node.write(now, request).map_err(|e| format!("node {id}: {e}"))?)
            }
            Input::Read => {
                Waiting::Barrier(node.linearizable(now).map_err(|e| format!("node {id}: {e}"))?)
            }
            Input::Cas { .. } => unreachable!("the simulation issues no compare-and-set"),
        };
        self.host(id).waiting.push((Asker::Register(c), attempt, waiting));
        self.after(id)
    }

    fn client_reply(&mut self, c: usize, attempt: u64, reply: Reply) {
        if self.clients[c].attempt != attempt || self.clients[c].op.is_none() {
            return;
        }
        match reply {
            Reply::Done(output) => self.end_op(c, Some(output)),
            Reply::Unknown => self.end_op(c, None),
            Reply::Redirect(master) => {
                let op = self.clients[c].op.as_mut().expect("op");
                op.redirects += 1;
                if op.redirects > CLIENT_REDIRECTS_MAX {
                    self.end_op(c, None);
                    return;
                }
                let n = self.cfg.nodes as NodeId;
                let next = master.unwrap_or_else(|| self.rng.gen_range(1..=n));
                // Without a master to name, wait a little for the election.
                let pause = if master.is_some() { 0 } else { 50 };
                let client = &mut self.clients[c];
                client.target = next;
                client.attempt += 1;
                let attempt = client.attempt;
                self.at(pause + CLIENT_TIMEOUT_MS, Event::ClientTimeout { client: c, attempt });
                let d = self.net_delay();
                self.at(pause + d, Event::ClientArrive { client: c, node: next, attempt });
            }
        }
    }

    fn end_op(&mut self, c: usize, output: Option<Output>) {
        let op = self.clients[c].op.take().expect("an operation in flight");
        self.clients[c].attempt += 1;
        let ret = output.map(|_| self.now);
        if output.is_some() {
            self.report.ops_ok += 1;
        } else {
            self.report.ops_unknown += 1;
            // The next attempt may go elsewhere.
            let n = self.cfg.nodes as NodeId;
            self.clients[c].target = self.rng.gen_range(1..=n);
        }
        self.history.push(Operation {
            client: c as u64,
            key: op.key,
            call: op.call,
            ret,
            input: op.input,
            output,
        });
        let think = self.rng.gen_range(0..20);
        self.at(think, Event::ClientNext(c));
    }

    fn fault(&mut self) -> Result<(), String> {
        if !self.faulting {
            return Ok(());
        }
        let f = self.cfg.faults;
        let mut kinds = Vec::new();
        if f.power {
            kinds.extend(["power", "kill"]);
        }
        if f.stall {
            kinds.push("stall");
        }
        if f.wipe {
            kinds.push("wipe");
        }
        if f.net {
            kinds.push("partition");
        }
        if !kinds.is_empty() {
            let kind = kinds[self.rng.gen_range(0..kinds.len())];
            let n = self.cfg.nodes as NodeId;
            let id = self.rng.gen_range(1..=n);
            // At most a minority down or stalled at once.
            let out = self.nodes.iter().filter(|h| h.node.is_none() || h.stalled).count();
            let up = self.host(id).node.is_some() && !self.host(id).stalled;
            let room = out < (self.cfg.nodes - 1) / 2;
            // A wipe loses a copy of the history: only while every other node holds one (is
            // up and a voter), or a majority could lose it, which no protocol survives.
            let others_hold = self
                .nodes
                .iter()
                .all(|h| h.id == id || h.node.as_ref().is_some_and(|n| n.status().voter));
            match kind {
                "wipe" if up && room && others_hold => self.crash(id, kind),
                "power" | "kill" if up && room => self.crash(id, kind),
                "stall" if up && room => {
                    self.report.stalls += 1;
                    self.host(id).stalled = true;
                    let d = self.rng.gen_range(100..=STALL_MS_MAX);
                    self.at(d, Event::Resume(id));
                }
                "partition" => {
                    self.report.partitions += 1;
                    self.blocked.clear();
                    let side: Vec<NodeId> = (1..=n).filter(|_| self.rng.gen_bool(0.4)).collect();
                    for a in 1..=n {
                        for b in 1..=n {
                            if side.contains(&a) != side.contains(&b) {
                                self.blocked.insert((a, b));
                            }
                        }
                    }
                    // The lock and cache clients take sides too.
                    self.cut.clear();
                    let askers: Vec<Asker> = (0..self.lockers.len())
                        .map(Asker::Lock)
                        .chain((0..self.cachers.len()).map(Asker::Cache))
                        .collect();
                    for who in askers {
                        let on_side = self.arng.gen_bool(0.4);
                        for node in 1..=n {
                            if side.contains(&node) != on_side {
                                self.cut.insert((who, node));
                            }
                        }
                    }
                    let d = self.rng.gen_range(200..1_500);
                    self.at(d, Event::Heal);
                }
                _ => {}
            }
        }
        let e = self.cfg.fault_every_ms;
        let d = self.rng.gen_range(e / 2..=e * 3 / 2);
        self.at(d, Event::Fault);
        Ok(())
    }

    fn crash(&mut self, id: NodeId, kind: &str) {
        let seed = self.rng.gen();
        let now = self.now;
        let host = self.host(id);
        host.crashed_at = Some((host.incarnation, now));
        host.node = None;
        host.waiting.clear();
        host.deferred.clear();
        match kind {
            "power" => {
                host.fs.crash(CrashMode::ScrambleUnsynced { seed });
                self.report.power_losses += 1;
            }
            "wipe" => {
                host.fs.crash(CrashMode::LoseUnsynced);
                host.fs = SimFs::new();
                self.report.wipes += 1;
            }
            _ => self.report.kills += 1,
        }
        let d = self.rng.gen_range(100..1_500);
        self.at(d, Event::Restart(id));
    }

    fn resume(&mut self, id: NodeId) -> Result<(), String> {
        let host = self.host(id);
        if host.node.is_none() || !host.stalled {
            return Ok(());
        }
        host.stalled = false;
        let deferred: Vec<Event> = host.deferred.drain(..).collect();
        for event in deferred {
            self.handle(event)?;
        }
        Ok(())
    }

    fn end_faults(&mut self) -> Result<(), String> {
        self.faulting = false;
        self.blocked.clear();
        self.cut.clear();
        for id in 1..=self.cfg.nodes as NodeId {
            if self.host(id).node.is_none() {
                self.start(id)?;
            } else {
                self.resume(id)?;
            }
        }
        Ok(())
    }

    /// The liveness phase is over: clients stop; the cluster must have converged.
    fn finish(&mut self) -> Result<(), String> {
        for c in 0..self.clients.len() {
            if self.clients[c].op.is_some() {
                self.end_op(c, None);
            }
        }
        let statuses: Vec<_> = self
            .nodes
            .iter()
            .map(|h| h.node.as_ref().map(|n| n.status()).ok_or(h.id))
            .collect::<Result<_, _>>()
            .map_err(|id| format!("node {id} is down at the end"))?;
        let master = statuses.iter().find(|s| s.role == Role::Master);
        let Some(master) = master else {
            return Err(format!(
                "no master after {} ms without faults: {statuses:?}",
                self.cfg.heal_ms
            ));
        };
        if let Some(s) = statuses.iter().find(|s| s.applied != master.applied) {
            return Err(format!(
                "the cluster did not converge: applied {} and {} ({statuses:?})",
                s.applied, master.applied
            ));
        }
        self.report.committed = master.applied;
        let dumps: Vec<_> = self
            .nodes
            .iter()
            .map(|h| h.node.as_ref().expect("up").dump().map(|(d, _)| d))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("dump: {e}"))?;
        for (i, d) in dumps.iter().enumerate().skip(1) {
            if *d != dumps[0] {
                return Err(format!(
                    "replicas differ: node 1 {:?}, node {} {d:?}",
                    dumps[0],
                    i + 1
                ));
            }
        }
        // The final state, read as one last linearizable read of every key.
        let now = self.now + 1;
        for k in 0..self.cfg.keys {
            let key = format!("/k{k}");
            let value = dumps[0]
                .iter()
                .find(|(name, _)| *name == key)
                .and_then(|(_, v)| v.as_ref())
                .map(|v| value_of(&v.value))
                .transpose()?;
            self.history.push(Operation {
                client: u64::MAX,
                key,
                call: now,
                ret: Some(now + 1),
                input: Input::Read,
                output: Some(Output::Read(value)),
            });
        }
        linearizability::check(&self.history).map_err(|v| format!("history: {v:?}"))?;
        self.check_announced(&dumps[0])?;
        self.check_locks()?;
        if self.cfg.checks.cache {
            if let Some(stale) = &self.report.first_stale_hit {
                return Err(format!(
                    "{} stale cache hits; the first: {stale}",
                    self.report.stale_hits
                ));
            }
        }
        Ok(())
    }

    /// The caches' clock.
    fn instant(&self) -> std::time::Instant {
        self.epoch_instant + std::time::Duration::from_millis(self.now)
    }

    /// The delay of a message between a lock or cache client and a node, or `None` when it
    /// is lost or they are on different sides of a partition (the lock and cache clients'
    /// randomness).
    fn client_delay(&mut self, who: Asker, node: NodeId) -> Option<u64> {
        if self.cut.contains(&(who, node)) {
            return None;
        }
        let faulty = self.faulting && self.cfg.faults.net;
        if faulty && self.arng.gen_bool(0.05) {
            return None;
        }
        Some(if faulty { self.arng.gen_range(1..=20) } else { self.arng.gen_range(1..=3) })
    }
}

fn answer(result: Result<Output, ServerError>) -> Reply {
    match result {
        Ok(output) => Reply::Done(output),
        Err(ServerError::NotMaster { master }) => Reply::Redirect(master),
        Err(_) => Reply::Unknown,
    }
}

/// A few nodes driven in lock step for direct tests of one rule: messages arrive 1 ms after
/// they are sent, logs sync every ms, every node ticks every [`TICK_MS`]; `isolate` cuts a
/// node off. No randomness: what a test sees is what every run sees.
pub struct ManualCluster {
    pub nodes: Vec<Option<ManualNode>>,
    pub disks: Vec<SimFs>,
    configs: Vec<Config>,
    /// Each node's clock, in ms.
    pub clocks: Vec<u64>,
    in_flight: Vec<(NodeId, NodeId, Message)>,
    isolated: BTreeSet<NodeId>,
}

impl ManualCluster {
    pub fn new(n: usize) -> Result<ManualCluster, String> {
        let key = key_file()?;
        let configs =
            (1..=n as NodeId).map(|id| node_config(id, n, &key)).collect::<Result<Vec<_>, _>>()?;
        let mut c = ManualCluster {
            nodes: (0..n).map(|_| None).collect(),
            disks: (0..n).map(|_| SimFs::new()).collect(),
            configs,
            clocks: vec![0; n],
            in_flight: Vec::new(),
            isolated: BTreeSet::new(),
        };
        for id in 1..=n as NodeId {
            c.start(id)?;
        }
        Ok(c)
    }

    /// (Re)opens node `id` from its disk.
    pub fn start(&mut self, id: NodeId) -> Result<(), String> {
        let i = id as usize - 1;
        let vfs: Arc<dyn Vfs> = Arc::new(self.disks[i].clone());
        let node = ManualNode::open(&self.configs[i], vfs, self.clocks[i])
            .map_err(|e| format!("node {id}: {e}"))?;
        self.nodes[i] = Some(node);
        Ok(())
    }

    pub fn node(&mut self, id: NodeId) -> &mut ManualNode {
        self.nodes[id as usize - 1].as_mut().expect("node is up")
    }

    pub fn isolate(&mut self, id: NodeId) {
        self.isolated.insert(id);
    }

    pub fn heal(&mut self) {
        self.isolated.clear();
    }

    /// Takes the messages in flight to node `to` (from, message), in the order sent: what
    /// queued for a node run with `skip` (a stalled one).
    pub fn take_queued(&mut self, to: NodeId) -> Vec<(NodeId, Message)> {
        let (mine, rest): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.in_flight).into_iter().partition(|m| m.1 == to);
        self.in_flight = rest;
        mine.into_iter().map(|(from, _, message)| (from, message)).collect()
    }

    /// The established master, if any.
    pub fn master(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .flatten()
            .map(|n| n.status())
            .find(|s| s.role == Role::Master)
            .and_then(|s| s.master)
    }

    /// Runs `ms` milliseconds; `skip` gets no CPU meanwhile (a stalled process: its clock
    /// still runs, and what is sent to it waits).
    pub fn run_ms(&mut self, ms: u64, skip: Option<NodeId>) -> Result<(), String> {
        for _ in 0..ms {
            for c in self.clocks.iter_mut() {
                *c += 1;
            }
            let arriving = std::mem::take(&mut self.in_flight);
            for (from, to, message) in arriving {
                if Some(to) == skip {
                    self.in_flight.push((from, to, message));
                    continue;
                }
                let now = self.clocks[to as usize - 1];
                if let Some(node) = self.nodes[to as usize - 1].as_mut() {
                    node.step(now, from, message).map_err(|e| format!("node {to}: {e}"))?;
                }
            }
            for id in 1..=self.nodes.len() as NodeId {
                if Some(id) == skip {
                    continue;
                }
                let now = self.clocks[id as usize - 1];
                let Some(node) = self.nodes[id as usize - 1].as_mut() else { continue };
                if now.is_multiple_of(TICK_MS) {
                    node.tick(now).map_err(|e| format!("node {id}: {e}"))?;
                }
                node.sync(now).map_err(|e| format!("node {id}: {e}"))?;
                for (dest, message) in node.take_outbox() {
                    let targets: Vec<NodeId> = match dest {
                        Dest::Node(to) => vec![to],
                        Dest::Group | Dest::GroupUnreliable => {
                            (1..=self.clocks.len() as NodeId).filter(|t| *t != id).collect()
                        }
                    };
                    for to in targets {
                        let cut = self.isolated.contains(&id) || self.isolated.contains(&to);
                        if !cut && is_replication(&message) {
                            self.in_flight.push((id, to, message.clone()));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Runs until a master is established and has applied its takeover record (so that
    /// its lease keeper runs), at most `ms_max`.
    pub fn elect(&mut self, ms_max: u64) -> Result<NodeId, String> {
        for _ in 0..ms_max / 10 {
            self.run_ms(10, None)?;
            if let Some(m) = self.master() {
                let s = self.node(m).status();
                if s.applied >= Zxid::new(s.epoch, 1) {
                    return Ok(m);
                }
            }
        }
        Err(format!("no master within {ms_max} ms"))
    }
}
