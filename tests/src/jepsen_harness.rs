//! The plumbing shared by the lock and bank runs ([`crate::jepsen_locks`],
//! [`crate::jepsen_bank`]): a network of host namespaces, one `shoal-fs` per host, a client
//! thread in the client namespace running a [`Workload`] on a current-thread runtime, a monitor
//! that tells the nemesis who the master is, and the seeded schedule (an `Isolate` fault cuts
//! off the current master; a process fault on the master says so in its label).
//!
//! The register run ([`crate::jepsen`]) uses the same pieces ([`start_cluster`], adding
//! libfaketime to chosen nodes; [`enter_namespace`]; [`drive`]) but keeps its own client
//! thread body and schedule: its monitor records every change of master, and with overlapping
//! faults a kill or pause is aimed at the master elected while the old one is isolated (this
//! module's schedule instead replaces some faults by client cuts and labels a partition that
//! holds the master).

use crate::cluster::node_args;
use crate::nemesis::ScheduleBounds;
use crate::nemesis::{wait_until, Fault, FaultKind, FaultWindow, Nemesis, Scenario, Schedule};
use crate::netns::{NetnsError, Network, Node, NodeSpec};
use crate::report::Summary;
use cache_client::net::{ClusterFile, SocketTransport};
use cache_client::{Client, ClientConfig, ClientError, LockConfig};
use protocol::message::data::Role;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The unicast port every node listens on (each host has its own address).
pub const NODE_PORT: u16 = 7400;
/// The cluster's multicast group (each network is its own set of namespaces, so a fixed group
/// never meets another run's).
pub const GROUP: &str = "239.77.77.1:7401";
/// The cluster id of these runs.
pub const CLUSTER_ID: u32 = 7777;
/// FSLive interval of the nodes (fast, so clients learn a new master quickly).
pub const FSLIVE_INTERVAL_MS: u64 = 500;
/// Longest the cluster gets to elect a master a majority follows before the run starts.
pub const READY_TIMEOUT_MS: u64 = 30_000;
/// One unicast request's timeout in the clients.
pub const REQUEST_TIMEOUT_MS: u64 = 500;
/// How often the monitor asks every node who the master is.
pub const MONITOR_INTERVAL_MS: u64 = 250;

/// The longest time without an acknowledged write inside one fault window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unavailability {
    pub window: FaultWindow,
    pub longest_gap_ms: u64,
    /// From the end of the window to the first acknowledged write after it.
    pub recovery_ms: Option<u64>,
}

/// The node id of a master that a majority of the nodes that answered follow.
pub async fn established_master(
    client: &Client<SocketTransport>,
    file: &ClusterFile,
) -> Option<usize> {
    let mut statuses = Vec::new();
    for address in file.members.values() {
        if let Ok(s) = client.status_of(address).await {
            statuses.push(s);
        }
    }
    let master = statuses.iter().find(|s| s.role == Role::Master)?;
    let following =
        statuses.iter().filter(|s| s.node == master.node || s.master == Some(master.node)).count();
    (following > file.members.len() / 2).then_some(master.node as usize)
}

/// The lock lease of the nodes in lock and bank runs: short, so that faults of 1–4 s really
/// expire leases (the safety argument does not depend on the TTL; 5 s would mostly hide it).
pub const LOCK_TTL_MS: u64 = 2_000;
/// The clients' renewal period for that lease (TTL / 3.3, as the library's default ratio).
pub const RENEW_INTERVAL_MS: u64 = 600;
/// Timeouts one client call tolerates before giving up.
pub const ATTEMPTS_MAX: usize = 4;
/// A guard over one whole client call (redirects and no-master pauses included).
pub const OP_LIMIT_MS: u64 = 10_000;
/// How long a final read is retried after healing before it counts as unavailable.
pub const FINAL_READ_LIMIT_MS: u64 = 30_000;
/// How long, after healing, a lock may stay unavailable: a lease orphaned by a fault (a grant
/// whose answer was lost, a holder cut off) lapses within a TTL of the last master's takeover;
/// the rest is slack for an election and retries.
pub const FINAL_LOCK_WAIT_MS: u64 = 3 * LOCK_TTL_MS + 5_000;

/// What one seeded run does, apart from the workload.
#[derive(Clone, Debug)]
pub struct HarnessOptions {
    pub seed: u64,
    pub hosts: usize,
    pub bounds: ScheduleBounds,
    pub kinds: Vec<FaultKind>,
    /// Healthy time after the schedule (workload still running) before the final phase.
    pub quiet_ms: u64,
    /// Extra `shoal-fs` flags (e.g. the lock TTL).
    pub node_args: Vec<String>,
    /// Percentage of drawn faults replaced by a **client cut** over the same window: the client
    /// namespace and every host drop each other's packets, so that holders keep believing in
    /// leases the master lets lapse (the case fencing exists for). Drawn from the seed.
    pub client_cut_percent: u32,
    /// Drawn faults, or an aimed scenario (its schedule replaces the drawn one; no client cuts).
    pub scenario: Scenario,
}

/// What the client thread and the main thread share.
pub struct Shared {
    /// The host index of the master the monitor saw last (0: none known).
    master: AtomicUsize,
    finish: AtomicBool,
    abort: AtomicBool,
}

/// What a workload sees while it runs.
pub struct Ctx {
    pub cluster_file: PathBuf,
    pub run_start: Instant,
    pub seed: u64,
    shared: Arc<Shared>,
}

impl Ctx {
    /// µs since the run started.
    pub fn now_us(&self) -> u64 {
        self.run_start.elapsed().as_micros() as u64
    }

    /// True until the quiet period ends (or the run is interrupted).
    pub fn running(&self) -> bool {
        !self.shared.finish.load(Ordering::SeqCst) && !self.aborted()
    }

    /// The run was interrupted: skip the final phase.
    pub fn aborted(&self) -> bool {
        self.shared.abort.load(Ordering::SeqCst)
    }
}

/// A workload: `prepare` runs once a master is established and before the clock starts
/// (connect clients, write initial state); `run` runs the operations until
/// [`Ctx::running`] turns false, then its final phase (after healing), and returns what the
/// checker needs.
#[allow(async_fn_in_trait)] // run on one current-thread runtime: no Send needed
pub trait Workload: Send + 'static {
    type Output: Send + 'static;
    async fn prepare(&mut self, cluster_file: &Path) -> Result<(), String>;
    async fn run(self, ctx: &Ctx) -> Self::Output;
}

/// What the harness hands back besides the workload's output.
#[derive(Debug)]
pub struct Ran<R> {
    pub schedule: Schedule,
    pub windows: Vec<FaultWindow>,
    pub output: R,
    pub interrupted: bool,
}

/// A client on the cluster of `cluster_file` with short timeouts and the run's lock lease.
pub async fn connect(cluster_file: &Path) -> Result<Client<SocketTransport>, ClientError> {
    connect_with(cluster_file, Duration::from_millis(RENEW_INTERVAL_MS)).await
}

/// [`connect`] with another renewal period (a huge one makes a client that never renews: a
/// holder that stalls past its lease).
pub async fn connect_with(
    cluster_file: &Path,
    renew_interval: Duration,
) -> Result<Client<SocketTransport>, ClientError> {
    let (file, auth) = ClusterFile::load(cluster_file)?;
    let transport = SocketTransport::connect(&file, auth, None).await?;
    let locks = LockConfig {
        ttl: Duration::from_millis(LOCK_TTL_MS),
        renew_interval,
        host: "jepsen".into(),
    };
    let config = ClientConfig {
        seeds: file.seeds(),
        request_timeout: Duration::from_millis(REQUEST_TIMEOUT_MS),
        attempts_max: ATTEMPTS_MAX,
        redirects_max: 10,
        client_id: Some(transport.id()),
        locks,
        ..ClientConfig::default()
    };
    Ok(Client::new(transport, config))
}

/// A network of `hosts` host namespaces with one `shoal-fs` running on each, and the cluster
/// file of the clients (the client namespace's address as the multicast interface).
pub struct Cluster {
    pub network: Network,
    /// Holds the cluster key, both cluster files and every node's data directory.
    pub dir: tempfile::TempDir,
    pub client_file: PathBuf,
    pub nodes: Vec<Node>,
}

/// Builds the network and starts `shoal-fs` on every host: `env RUST_LOG=… <env_of(host)>
/// shoal-fs <node args> <extra_args>` (`env_of` adds variables such as libfaketime's). Drop
/// `nodes` before `network`: the nodes are killed, then the namespaces removed.
pub fn start_cluster(
    hosts: usize,
    shoal_fs: &Path,
    env_of: &dyn Fn(usize) -> Vec<String>,
    extra_args: &[String],
) -> Result<Cluster, NetnsError> {
    let network = Network::create(hosts)?;
    let dir = tempfile::tempdir()?;
    let key: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
    std::fs::write(dir.path().join("cluster.key"), &key)?;
    crate::cluster::write_member_key(dir.path());
    let members = network
        .hosts()
        .iter()
        .map(|h| (h.index.to_string(), format!("{}:{NODE_PORT}", h.address)))
        .collect();
    let mut file = ClusterFile {
        cluster_id: CLUSTER_ID,
        key_file: Some("cluster.key".into()),
        key: None,
        group: GROUP.into(),
        interface: network.client().address.to_string(),
        loopback: false,
        members,
    };
    // The clients' file: the client namespace's address as the multicast interface.
    let client_file = dir.path().join("cluster.toml");
    file.save(&client_file)?;
    let log_filter = std::env::var("SHOAL_TEST_LOG").unwrap_or_else(|_| "error".into());
    let mut nodes: Vec<Node> = Vec::new();
    for host in network.hosts() {
        file.interface = host.address.to_string();
        let data_dir = dir.path().join(format!("node{}", host.index));
        std::fs::create_dir_all(&data_dir)?;
        let id = host.index as protocol::NodeId;
        // `env` execs shoal-fs, so the pid the harness signals is the node's own.
        let mut args = vec![format!("RUST_LOG={log_filter}")];
        args.extend(env_of(host.index));
        args.push(shoal_fs.display().to_string());
        args.extend(node_args(&file, dir.path(), id, &data_dir, FSLIVE_INTERVAL_MS));
        args.extend(extra_args.iter().cloned());
        let spec = NodeSpec { program: "env".into(), args, data_dir: Some(data_dir) };
        nodes.push(Node::new(host.clone(), spec));
    }
    for node in nodes.iter_mut() {
        node.start()?;
    }
    Ok(Cluster { network, dir, client_file, nodes })
}

/// Builds the network, starts `shoal-fs` on every host, runs `workload` in the client
/// namespace under the seeded schedule, heals, waits the quiet period, lets the workload
/// finish. Everything is torn down on every path (nodes when `nodes` drops, namespaces when
/// `network` drops).
pub fn run<W: Workload>(
    options: &HarnessOptions,
    shoal_fs: &Path,
    stop: &dyn Fn() -> bool,
    workload: W,
) -> Result<Ran<W::Output>, NetnsError> {
    let created = Instant::now();
    let schedule =
        options.scenario.schedule(options.seed, options.hosts, &options.bounds).unwrap_or_else(
            || Schedule::generate(options.seed, options.hosts, &options.bounds, &options.kinds),
        );
    println!("{schedule}");
    let cut_percent =
        if options.scenario.aims_at_master() { 0 } else { options.client_cut_percent };
    let cuts = client_cuts(options.seed, schedule.faults.len(), cut_percent);
    for (i, _) in cuts.iter().enumerate().filter(|(_, cut)| **cut) {
        println!("  fault {} replaced by: cut clients off every host", i + 1);
    }
    let Cluster { network, dir: _dir, client_file, mut nodes } =
        start_cluster(options.hosts, shoal_fs, &|_| Vec::new(), &options.node_args)?;

    let shared = Arc::new(Shared {
        master: AtomicUsize::new(0),
        finish: AtomicBool::new(false),
        abort: AtomicBool::new(false),
    });
    let client = {
        let namespace = network.client().namespace.clone();
        let shared = shared.clone();
        let seed = options.seed;
        move |ready_tx, start_rx| {
            client_main(&namespace, client_file, seed, shared, workload, ready_tx, start_rx)
        }
    };
    let schedule_from = |run_start: Instant| {
        let mut nemesis = Nemesis::new(&network);
        run_schedule(
            &mut nemesis,
            &schedule,
            Aims { cuts: &cuts, scenario: options.scenario },
            &mut nodes,
            run_start,
            &shared,
            stop,
        )
    };
    let Driven { output, windows, interrupted, run_start, finished } = drive(
        client,
        &|| shared.abort.store(true, Ordering::SeqCst),
        &|| shared.finish.store(true, Ordering::SeqCst),
        schedule_from,
        options.quiet_ms,
        stop,
    )?;
    let ready_ms = run_start.duration_since(created).as_millis();
    let final_ms = finished.elapsed().as_millis();
    drop(nodes);
    drop(network);
    println!(
        "phases: ready after {ready_ms} ms, faults and quiet period {} ms, final phase {final_ms} \
         ms, total {} ms",
        finished.duration_since(run_start).as_millis(),
        created.elapsed().as_millis()
    );
    Ok(Ran { schedule, windows, output, interrupted })
}

/// What [`drive`] hands back.
pub struct Driven<T> {
    /// What the client thread returned.
    pub output: T,
    pub windows: Vec<FaultWindow>,
    pub interrupted: bool,
    /// When the clock started (the client thread had reported ready).
    pub run_start: Instant,
    /// When the client thread was told to finish (the quiet period was over).
    pub finished: Instant,
}

/// The main thread's part of a run once the nodes are up: spawns `client` (the client
/// thread: it reports ready, or why not, then awaits the start instant), starts the clock,
/// runs `schedule` from it, waits `quiet_ms`, calls `finish` and joins the client thread.
/// `abort` sets the flag that makes the client thread return at once: on an error (then it
/// is joined before this returns) and on an interrupt by `stop`.
pub fn drive<T: Send + 'static>(
    client: impl FnOnce(
            std::sync::mpsc::Sender<Result<(), String>>,
            tokio::sync::oneshot::Receiver<Instant>,
        ) -> Result<T, NetnsError>
        + Send
        + 'static,
    abort: &dyn Fn(),
    finish: &dyn Fn(),
    schedule: impl FnOnce(Instant) -> Result<Vec<FaultWindow>, NetnsError>,
    quiet_ms: u64,
    stop: &dyn Fn() -> bool,
) -> Result<Driven<T>, NetnsError> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let (start_tx, start_rx) = tokio::sync::oneshot::channel::<Instant>();
    let client_thread = std::thread::spawn(move || client(ready_tx, start_rx));
    let ready = ready_rx
        .recv()
        .unwrap_or_else(|_| Err("client thread ended before the cluster was ready".into()));
    if let Err(e) = ready {
        abort();
        let _ = client_thread.join();
        return Err(NetnsError::Io(std::io::Error::other(format!("cluster not ready: {e}"))));
    }
    let run_start = Instant::now();
    let _ = start_tx.send(run_start);
    let windows = match schedule(run_start) {
        Ok(w) => w,
        Err(e) => {
            abort();
            let _ = client_thread.join();
            return Err(e);
        }
    };
    let quiet_end = Instant::now() + Duration::from_millis(quiet_ms);
    let interrupted = !wait_until(quiet_end, stop);
    if interrupted {
        abort();
    }
    finish();
    let finished = Instant::now();
    let output = client_thread.join().unwrap_or_else(|_| {
        Err(NetnsError::Io(std::io::Error::other("the client thread panicked")))
    })?;
    Ok(Driven { output, windows, interrupted, run_start, finished })
}

/// Which of `faults` drawn faults become client cuts (see
/// [`HarnessOptions::client_cut_percent`]): the same for the same seed.
pub fn client_cuts(seed: u64, faults: usize, percent: u32) -> Vec<bool> {
    let mut rng = StdRng::seed_from_u64(seed ^ CLIENT_CUT_SEED);
    (0..faults).map(|_| rng.gen_range(0..100) < percent).collect()
}

/// Mixed into the seed for the client-cut draw, so it does not repeat the schedule's draws.
const CLIENT_CUT_SEED: u64 = 0xC11E_C075;

/// Cuts the client namespace (index 0) off from every host, both ways.
fn cut_clients(nemesis: &mut Nemesis<'_>, hosts: usize) -> Result<(), NetnsError> {
    let all: Vec<usize> = (1..=hosts).collect();
    nemesis.drop_from(0, &all)?;
    for h in all {
        nemesis.drop_from(h, &[0])?;
    }
    Ok(())
}

/// What the runner does to the drawn faults: which it replaces by client cuts, and the
/// scenario that aims them.
#[derive(Clone, Copy)]
struct Aims<'a> {
    cuts: &'a [bool],
    scenario: Scenario,
}

/// Cuts the client namespace off from every host but `except`, both ways.
fn cut_clients_except(
    nemesis: &mut Nemesis<'_>,
    hosts: usize,
    except: usize,
) -> Result<(), NetnsError> {
    let others: Vec<usize> = (1..=hosts).filter(|h| *h != except).collect();
    nemesis.drop_from(0, &others)?;
    for h in others {
        nemesis.drop_from(h, &[0])?;
    }
    Ok(())
}

/// How long a stalled master, resumed, is the only node the clients reach
/// ([`Scenario::MasterStalls`]): time to answer the renewals queued at it.
pub const STALLED_MASTER_ALONE_MS: u64 = 300;

/// The schedule, with `Isolate` aimed at the current master, process faults on the master
/// labelled so (the same rule as the register runs), and the faults `cuts` marks replaced by a
/// client cut over the same window.
fn run_schedule(
    nemesis: &mut Nemesis<'_>,
    schedule: &Schedule,
    aims: Aims<'_>,
    nodes: &mut [Node],
    run_start: Instant,
    shared: &Shared,
    stop: &dyn Fn() -> bool,
) -> Result<Vec<FaultWindow>, NetnsError> {
    let Aims { cuts, scenario } = aims;
    let mut windows = Vec::new();
    let since = |t: Instant| t.duration_since(run_start).as_millis() as u64;
    for (i, scheduled) in schedule.faults.iter().enumerate() {
        if !wait_until(run_start + Duration::from_millis(scheduled.at_ms), stop) {
            break;
        }
        if cuts.get(i).copied().unwrap_or(false) {
            let start_ms = since(Instant::now());
            cut_clients(nemesis, nodes.len())?;
            let end_at = run_start + Duration::from_millis(scheduled.at_ms + scheduled.duration_ms);
            let stopped = !wait_until(end_at, stop);
            nemesis.heal_network()?;
            let label = "cut clients".to_string();
            windows.push(FaultWindow { label, start_ms, end_ms: since(Instant::now()) });
            if stopped {
                break;
            }
            continue;
        }
        let mut fault = scheduled.fault.clone();
        let mut label = fault.label();
        let master = shared.master.load(Ordering::SeqCst);
        let aimed = crate::nemesis::aim_scenario(scenario, &fault, master, None);
        if let Some((aimed, aimed_label)) = aimed {
            fault = aimed;
            label = aimed_label;
        } else {
            match fault {
                Fault::Isolate { .. } if master != 0 => {
                    fault = Fault::Isolate { host: master };
                    label = format!("isolate master h{master}");
                }
                Fault::Kill { host } | Fault::Pause { host } | Fault::WipeRestart { host }
                    if host == master =>
                {
                    label = format!("{label} (master)");
                }
                // A minority partition that holds the master is an isolated master in effect.
                Fault::Partition { ref minority } if minority.contains(&master) => {
                    label = format!("{label} (master in minority)");
                }
                _ => {}
            }
        }
        // The stall scenario: while the master is stopped the clients reach only it, so
        // their renewals queue up there; when it runs again it meets them before anything
        // else, and only then are the clients let through to the new master.
        let stalled = match fault {
            Fault::Pause { host } if scenario == Scenario::MasterStalls => Some(host),
            _ => None,
        };
        let start_ms = since(Instant::now());
        nemesis.begin(&fault, nodes)?;
        if let Some(host) = stalled {
            cut_clients_except(nemesis, nodes.len(), host)?;
            label = format!("{label}, clients reach only it");
        }
        let end_at = run_start + Duration::from_millis(scheduled.at_ms + scheduled.duration_ms);
        let stopped = !wait_until(end_at, stop);
        nemesis.end(&fault, nodes)?;
        if stalled.is_some() {
            std::thread::sleep(Duration::from_millis(STALLED_MASTER_ALONE_MS));
            nemesis.heal_network()?;
        }
        windows.push(FaultWindow { label, start_ms, end_ms: since(Instant::now()) });
        if stopped {
            break;
        }
    }
    nemesis.heal_all(nodes)?;
    Ok(windows)
}

/// Enters `namespace` (this thread only) and builds the current-thread runtime the clients
/// run on; `fail` reports a failed `setns` or runtime to the main thread (an unreadable
/// namespace file just ends the thread, which the main thread notices as well).
pub fn enter_namespace(
    namespace: &str,
    fail: &dyn Fn(String) -> NetnsError,
) -> Result<tokio::runtime::Runtime, NetnsError> {
    let ns = std::fs::File::open(format!("/run/netns/{namespace}"))?;
    use std::os::fd::AsRawFd;
    // SAFETY: setns on a valid namespace fd changes only this thread's network namespace; this
    // thread is the clients' own and every socket they open is opened from it.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(fail(format!("setns: {}", std::io::Error::last_os_error())));
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(format!("runtime: {e}")))
}

/// Enters `namespace` (this thread only), waits for a master, prepares the workload, reports
/// ready, and runs it from the start instant with the master monitor beside it.
fn client_main<W: Workload>(
    namespace: &str,
    cluster_file: PathBuf,
    seed: u64,
    shared: Arc<Shared>,
    mut workload: W,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
    start: tokio::sync::oneshot::Receiver<Instant>,
) -> Result<W::Output, NetnsError> {
    let fail = |e: String| {
        let _ = ready.send(Err(e.clone()));
        NetnsError::Io(std::io::Error::other(e))
    };
    let runtime = enter_namespace(namespace, &fail)?;
    runtime.block_on(async {
        let (file, _) = ClusterFile::load(&cluster_file).map_err(|e| fail(e.to_string()))?;
        let monitor = connect(&cluster_file).await.map_err(|e| fail(e.to_string()))?;
        let ready_by = Instant::now() + Duration::from_millis(READY_TIMEOUT_MS);
        loop {
            if shared.abort.load(Ordering::SeqCst) {
                return Err(fail("aborted".into()));
            }
            if let Some(master) = established_master(&monitor, &file).await {
                shared.master.store(master, Ordering::SeqCst);
                break;
            }
            if Instant::now() > ready_by {
                return Err(fail(format!("no master within {READY_TIMEOUT_MS} ms")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        workload.prepare(&cluster_file).await.map_err(fail)?;
        let _ = ready.send(Ok(()));
        let Ok(run_start) = start.await else {
            return Err(NetnsError::Io(std::io::Error::other("no start signal")));
        };
        let ctx = Ctx { cluster_file: cluster_file.clone(), run_start, seed, shared };
        let watch_master = async {
            while ctx.running() {
                if let Some(master) = established_master(&monitor, &file).await {
                    ctx.shared.master.store(master, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(MONITOR_INTERVAL_MS)).await;
            }
        };
        let (output, ()) = tokio::join!(workload.run(&ctx), watch_master);
        Ok(output)
    })
}

/// A client call bounded by `limit_ms`; errors as [`ClientError`] or "no answer".
pub async fn bounded<T>(
    limit_ms: u64,
    call: impl std::future::Future<Output = Result<T, ClientError>>,
) -> Result<Result<T, ClientError>, String> {
    tokio::time::timeout(Duration::from_millis(limit_ms), call)
        .await
        .map_err(|_| format!("no answer within {limit_ms} ms"))
}

/// Per fault window: the longest stretch inside it without a successful operation of the
/// kind the caller counts (`acked_ms`: their completion times, ms from the start), and the
/// time from the window's end to the next one.
pub fn unavailability(acked_ms: &[u64], windows: &[FaultWindow]) -> Vec<Unavailability> {
    let mut acked_ms = acked_ms.to_vec();
    acked_ms.sort_unstable();
    windows
        .iter()
        .map(|w| {
            let mut previous = w.start_ms;
            let mut longest = 0;
            for &t in acked_ms.iter().filter(|t| (w.start_ms..=w.end_ms).contains(*t)) {
                longest = longest.max(t - previous);
                previous = t;
            }
            longest = longest.max(w.end_ms - previous);
            let recovery_ms = acked_ms.iter().find(|t| **t >= w.end_ms).map(|t| t - w.end_ms);
            Unavailability { window: w.clone(), longest_gap_ms: longest, recovery_ms }
        })
        .collect()
}

/// Reads `key` linearizably, retried every 200 ms until it answers or `limit_ms` passes.
pub async fn final_read(
    client: &Client<SocketTransport>,
    key: &str,
    limit_ms: u64,
) -> Result<Option<protocol::message::data::Versioned>, String> {
    let deadline = Instant::now() + Duration::from_millis(limit_ms);
    loop {
        let read = client.read_with(key, cache_client::ReadOptions::linearizable());
        let error = match bounded(OP_LIMIT_MS, read).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => e.to_string(),
            Err(e) => e,
        };
        if Instant::now() > deadline {
            return Err(format!("no answer within {limit_ms} ms after healing: {error}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Asks every node directly for each of `keys` at `floor`; each must hold what `expected`
/// says (replica convergence). Returns the disagreements.
pub async fn replica_check(
    cluster_file: &Path,
    floor: protocol::Zxid,
    expected: &[(String, Option<bytes::Bytes>)],
) -> Vec<String> {
    let mut problems = Vec::new();
    let transport = match ClusterFile::load(cluster_file) {
        Ok((file, auth)) => SocketTransport::connect(&file, auth, None).await.map(|t| (file, t)),
        Err(e) => Err(e),
    };
    let (file, transport) = match transport {
        Ok(ft) => ft,
        Err(e) => return vec![format!("cannot open a transport for the replica check: {e}")],
    };
    for (id, address) in &file.members {
        for (key, want) in expected {
            match crate::cluster::get_at(&transport, address, key, floor).await {
                Ok(v) if v.as_ref().map(|v| &v.value) == want.as_ref() => {}
                Ok(v) => problems.push(format!(
                    "node {id} holds {:?} at {key} at zxid {floor}, the master {:?}",
                    v.map(|v| v.value),
                    want
                )),
                Err(e) => problems.push(format!("node {id} did not answer for {key}: {e}")),
            }
        }
    }
    problems
}

/// What a lock or bank run produced: the harness's record, the workload's log `L` and final
/// state `F`, and the checker's anomalies `A`.
#[derive(Debug)]
pub struct Checked<L, F, A> {
    pub schedule: Schedule,
    pub windows: Vec<FaultWindow>,
    pub log: L,
    /// The final state, read after healing.
    pub finals: F,
    pub anomalies: Vec<A>,
    /// Final reads that never answered, replicas that disagree.
    pub final_problems: Vec<String>,
    /// Per fault window, the longest stretch without an acknowledged operation.
    pub unavailability: Vec<Unavailability>,
    pub summary: Summary,
    pub svg: PathBuf,
    pub interrupted: bool,
}

impl<L, F, A> Checked<L, F, A> {
    pub fn passed(&self) -> bool {
        self.anomalies.is_empty() && self.final_problems.is_empty() && !self.interrupted
    }
}

/// Writes `<out_dir>/<name>.history`: `lines` in order of their time (µs), then `finals`.
pub fn write_history(
    out_dir: &Path,
    name: &str,
    mut lines: Vec<(u64, String)>,
    finals: impl IntoIterator<Item = String>,
) -> std::io::Result<()> {
    lines.sort();
    let mut text: Vec<String> = lines.into_iter().map(|(_, l)| l).collect();
    text.extend(finals);
    std::fs::write(out_dir.join(format!("{name}.history")), text.join("\n") + "\n")
}

/// An unsigned number from the environment variable `name`; unset or not a number: `None`.
pub fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// The seeds a netns integration test runs: 1..=N when `SHOAL_SOAK_SEEDS=N` (a soak), else
/// `ci`.
pub fn soak_seeds(ci: &[u64]) -> Vec<u64> {
    match env_u64("SHOAL_SOAK_SEEDS") {
        Some(n) => (1..=n.max(1)).collect(),
        None => ci.to_vec(),
    }
}

/// The schedule length a soak asks for with `SHOAL_SOAK_RUN_MS` (`None`: the default).
pub fn soak_run_ms() -> Option<u64> {
    env_u64("SHOAL_SOAK_RUN_MS")
}

/// Whether the netns test `test` has to skip (not root, no `ip` or `nft`); prints why when so.
pub fn skipped(test: &str) -> bool {
    match crate::netns::skip_reason() {
        Some(reason) => {
            eprintln!("{test}: SKIPPED: {reason}");
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Client cuts are drawn from the seed: the same seed gives the same cuts, 0 % none and
    /// 100 % every fault, and other seeds differ somewhere.
    #[test]
    fn client_cuts_are_reproducible_from_the_seed() {
        assert_eq!(client_cuts(7, 20, 30), client_cuts(7, 20, 30));
        assert!(client_cuts(7, 20, 0).iter().all(|c| !c));
        assert!(client_cuts(7, 20, 100).iter().all(|c| *c));
        assert!((1..20).any(|seed| client_cuts(seed, 20, 30) != client_cuts(7, 20, 30)));
    }

    /// The gap is the longest stretch inside the window without a success (from the window's
    /// start, between successes, to its end); recovery runs from the end to the next success.
    #[test]
    fn unavailability_is_the_longest_gap_inside_each_window() {
        let window = FaultWindow { label: "cut clients".into(), start_ms: 1_000, end_ms: 4_000 };
        let u = unavailability(&[500, 1_200, 3_700, 2_000, 4_300], std::slice::from_ref(&window));
        assert_eq!(u[0].longest_gap_ms, 1_700);
        assert_eq!(u[0].recovery_ms, Some(300));
        let u = unavailability(&[], std::slice::from_ref(&window));
        assert_eq!((u[0].longest_gap_ms, u[0].recovery_ms), (3_000, None));
    }
}
