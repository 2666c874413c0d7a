//! `shoal dev`: a local cluster of `shoal-fs` child processes on loopback multicast, for trying
//! Shoal out and for tests.
//!
//! It keeps everything in one directory (default `./shoal-dev/`), kept across restarts: the
//! cluster key (`cluster.key`, generated once), the cluster file (`cluster.toml`, reused while
//! the node count is unchanged, so the nodes keep their ports), and each node's data directory
//! and log (`node<N>/`, `node<N>.log`). Data commands run from the same directory find
//! `shoal-dev/cluster.toml` without flags.
//!
//! The `shoal-fs` binary is looked for next to the running `shoal` executable (cargo builds
//! both into `target/<profile>/`). Children get SIGKILL if `shoal dev` itself dies (Linux
//! parent-death signal), and SIGTERM (then SIGKILL after [`STOP_WAIT`]) on Ctrl-C.

use cache_client::net::{ClusterFile, SocketTransport};
use cache_client::{Client, ClientConfig};
use clap::Parser;
use protocol::message::data::Role;
use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long `shoal dev` waits for a master (and every node to catch up) after starting.
pub const MASTER_WAIT: Duration = Duration::from_secs(30);
/// How long each node gets to drain after SIGTERM before SIGKILL.
pub const STOP_WAIT: Duration = Duration::from_secs(10);
/// The cluster id `shoal dev` clusters use.
pub const DEV_CLUSTER_ID: u32 = 7;
/// FSLive interval of dev nodes: clients learn the cluster within a second.
pub const DEV_FSLIVE_INTERVAL_MS: u64 = 1_000;
/// The line printed once the cluster is up (tests wait for it).
pub const READY_LINE: &str = "cluster up:";

#[derive(Debug, Parser)]
#[command(name = "shoal dev", about = "Run a local Shoal cluster of shoal-fs processes")]
pub struct DevArgs {
    /// Number of nodes: 3, 5 or 7.
    #[arg(long, default_value_t = 3, value_parser = node_count)]
    pub nodes: usize,
    /// Where the key, cluster file, node data and logs live (kept across restarts).
    #[arg(long, default_value = "shoal-dev")]
    pub dir: PathBuf,
}

fn node_count(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n @ (3 | 5 | 7)) => Ok(n),
        _ => Err(format!("{s:?}: a cluster has 3, 5 or 7 nodes")),
    }
}

fn fail(message: String) -> i32 {
    eprintln!("shoal dev: {message}");
    1
}

/// Runs the cluster until Ctrl-C / SIGTERM; returns the exit code.
pub fn run(args: DevArgs) -> i32 {
    let binary = match shoal_fs_binary() {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    let mut cluster = match DevCluster::start(binary, &args.dir, args.nodes) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    let code = runtime.block_on(supervise(&mut cluster, &args));
    cluster.stop_all();
    println!("shoal dev: stopped; data kept in {}", args.dir.display());
    code
}

async fn supervise(cluster: &mut DevCluster, args: &DevArgs) -> i32 {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        return fail("cannot install signal handlers".into());
    };
    let master = tokio::select! {
        m = cluster.wait_master(MASTER_WAIT) => m,
        _ = term.recv() => return 0,
        _ = int.recv() => return 0,
    };
    match master {
        Ok(master) => {
            let flag = if args.dir == Path::new("shoal-dev") {
                String::new()
            } else {
                format!("--cluster {} ", cluster.cluster_path.display())
            };
            println!(
                "{READY_LINE} master node {master} of {}; try: shoal {flag}put /hello world \
                 (Ctrl-C stops the cluster; logs in {})",
                args.nodes,
                args.dir.display()
            );
        }
        Err(e) => return fail(e),
    }
    let mut check = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = term.recv() => return 0,
            _ = int.recv() => return 0,
            _ = check.tick() => {
                for id in cluster.exited() {
                    eprintln!(
                        "shoal dev: node {id} exited; see {}",
                        args.dir.join(format!("node{id}.log")).display()
                    );
                }
            }
        }
    }
}

/// A local cluster of `shoal-fs` children (what `shoal dev` runs; benchmarks drive it too).
/// Every child is stopped when it is dropped.
pub struct DevCluster {
    pub dir: PathBuf,
    pub file: ClusterFile,
    pub cluster_path: PathBuf,
    binary: PathBuf,
    /// Extra `shoal-fs` flags given to every node (e.g. timeouts for a benchmark).
    pub extra_args: Vec<String>,
    children: BTreeMap<u8, Child>,
}

impl DevCluster {
    /// Prepares `dir` (key and cluster file, reused when present) and starts `nodes` nodes.
    pub fn start(binary: PathBuf, dir: &Path, nodes: usize) -> Result<DevCluster, String> {
        DevCluster::start_with(binary, dir, nodes, Vec::new())
    }

    /// [`DevCluster::start`] with extra `shoal-fs` flags for every node.
    pub fn start_with(
        binary: PathBuf,
        dir: &Path,
        nodes: usize,
        extra_args: Vec<String>,
    ) -> Result<DevCluster, String> {
        let (file, cluster_path) = prepare(dir, nodes)?;
        let mut cluster = DevCluster {
            dir: dir.to_path_buf(),
            file,
            cluster_path,
            binary,
            extra_args,
            children: BTreeMap::new(),
        };
        for id in 1..=nodes as u8 {
            cluster.spawn(id)?;
        }
        Ok(cluster)
    }

    /// Starts node `id` (again).
    pub fn spawn(&mut self, id: u8) -> Result<(), String> {
        let child = spawn_node(&self.binary, &self.dir, &self.file, id, &self.extra_args)?;
        self.children.insert(id, child);
        Ok(())
    }

    /// SIGKILL node `id` and reap it.
    pub fn kill(&mut self, id: u8) {
        if let Some(mut child) = self.children.remove(&id) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Ids of nodes that exited by themselves since the last call (they are forgotten).
    pub fn exited(&mut self) -> Vec<u8> {
        let mut gone = Vec::new();
        for (id, child) in self.children.iter_mut() {
            if matches!(child.try_wait(), Ok(Some(_))) {
                gone.push(*id);
            }
        }
        for id in &gone {
            self.children.remove(id);
        }
        gone
    }

    /// A client of this cluster with the given request timeout.
    pub async fn client(
        &self,
        request_timeout: Duration,
    ) -> Result<Client<SocketTransport>, String> {
        let (file, auth) = ClusterFile::load(&self.cluster_path).map_err(|e| e.to_string())?;
        let transport =
            SocketTransport::connect(&file, auth, None).await.map_err(|e| e.to_string())?;
        let config = ClientConfig {
            seeds: file.seeds(),
            request_timeout,
            client_id: Some(transport.id()),
            ..ClientConfig::default()
        };
        Ok(Client::new(transport, config))
    }

    /// Waits until a master is elected and every running node has applied what the master had
    /// committed when asked (so a first read anywhere sees the previous run's data).
    pub async fn wait_master(&self, wait: Duration) -> Result<u8, String> {
        let client = self.client(Duration::from_millis(300)).await?;
        let running: Vec<String> =
            self.children.keys().map(|id| self.file.members[&id.to_string()].clone()).collect();
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            let mut statuses = Vec::new();
            for address in &running {
                if let Ok(status) = client.status_of(address).await {
                    statuses.push(status);
                }
            }
            if let Some(master) = statuses.iter().find(|s| s.role == Role::Master) {
                let caught_up = statuses.iter().filter(|s| s.applied >= master.committed).count();
                if caught_up == running.len() {
                    return Ok(master.node);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(format!("no master elected within {wait:?}; see the node logs"))
    }

    /// SIGTERM to every node, then waits (SIGKILL after [`STOP_WAIT`]).
    pub fn stop_all(&mut self) {
        stop_all(&mut self.children);
    }
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// `shoal-fs` next to the running executable. Under `cargo run` (which sets `CARGO`) it is
/// built first (same profile; a no-op when fresh), so `cargo run --release --bin shoal -- dev`
/// works from a clean checkout.
pub fn shoal_fs_binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot locate shoal itself: {e}"))?;
    let path = exe.with_file_name("shoal-fs");
    if let Ok(cargo) = std::env::var("CARGO") {
        let release = exe.parent().and_then(|p| p.file_name()).is_some_and(|n| n == "release");
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "fs-node", "--bin", "shoal-fs"]);
        if release {
            cmd.arg("--release");
        }
        eprintln!("shoal dev: building shoal-fs ({})", if release { "release" } else { "debug" });
        match cmd.status() {
            Ok(status) if status.success() => {}
            Ok(status) => eprintln!("shoal dev: building shoal-fs failed ({status})"),
            Err(e) => eprintln!("shoal dev: cannot run cargo to build shoal-fs: {e}"),
        }
    }
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing; build it with `cargo build --release --bin shoal-fs` (or without \
             --release for a debug shoal)",
            path.display()
        ))
    }
}

fn free_port() -> Result<u16, String> {
    let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    Ok(socket.local_addr().map_err(|e| e.to_string())?.port())
}

/// The nodes' member key, in the dev directory.
const MEMBER_KEY_FILE: &str = "member.key";

/// Creates `path` with mode 0600 and writes `bytes` to it.
fn write_owner_only(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Creates the directory, the key (once) and the cluster file (reused when it fits).
fn prepare(dir: &Path, nodes: usize) -> Result<(ClusterFile, PathBuf), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let key_path = dir.join("cluster.key");
    if !key_path.exists() {
        let key: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
        std::fs::write(&key_path, format!("{key}\n"))
            .map_err(|e| format!("writing {}: {e}", key_path.display()))?;
    }
    // The nodes' member key: apart from the cluster key, readable by its owner only, and
    // named by no file a client reads (README "Security").
    let member_key_path = dir.join(MEMBER_KEY_FILE);
    if !member_key_path.exists() {
        let key: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
        write_owner_only(&member_key_path, format!("{key}\n").as_bytes())
            .map_err(|e| format!("writing {}: {e}", member_key_path.display()))?;
    }
    let cluster_path = dir.join("cluster.toml");
    if cluster_path.exists() {
        let (file, _) = ClusterFile::load(&cluster_path).map_err(|e| e.to_string())?;
        if file.members.len() == nodes {
            return Ok((file, cluster_path));
        }
    }
    let mut members = BTreeMap::new();
    for id in 1..=nodes {
        members.insert(id.to_string(), format!("127.0.0.1:{}", free_port()?));
    }
    let group = format!(
        "239.255.{}.{}:{}",
        rand::random::<u8>(),
        rand::random::<u8>().max(1),
        free_port()?
    );
    let file = ClusterFile {
        cluster_id: DEV_CLUSTER_ID,
        key_file: Some("cluster.key".into()),
        key: None,
        group,
        interface: "127.0.0.1".into(),
        loopback: true,
        members,
    };
    file.save(&cluster_path).map_err(|e| format!("writing {}: {e}", cluster_path.display()))?;
    Ok((file, cluster_path))
}

fn spawn_node(
    binary: &Path,
    dir: &Path,
    file: &ClusterFile,
    id: u8,
    extra_args: &[String],
) -> Result<Child, String> {
    let members: Vec<String> = file.members.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let key_file = dir.join(file.key_file.as_ref().expect("dev cluster files name a key file"));
    let log_path = dir.join(format!("node{id}.log"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("opening {}: {e}", log_path.display()))?;
    let mut cmd = Command::new(binary);
    cmd.arg("--node-id")
        .arg(id.to_string())
        .arg("--member")
        .arg(members.join(","))
        .arg("--data-dir")
        .arg(dir.join(format!("node{id}")))
        .arg("--cluster-id")
        .arg(file.cluster_id.to_string())
        .arg("--cluster-key-file")
        .arg(key_file)
        .arg("--member-key-file")
        .arg(dir.join(MEMBER_KEY_FILE))
        .arg("--multicast-group")
        .arg(&file.group)
        .arg("--multicast-interface")
        .arg(&file.interface)
        .arg("--fslive-interval-ms")
        .arg(DEV_FSLIVE_INTERVAL_MS.to_string())
        .args(extra_args)
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag of the calling (child) process and is
    // async-signal-safe; nothing else runs between fork and exec here.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn().map_err(|e| format!("starting {}: {e}", binary.display()))
}

/// SIGTERM to every child, then waits (SIGKILL after [`STOP_WAIT`]).
fn stop_all(children: &mut BTreeMap<u8, Child>) {
    for child in children.values() {
        // SAFETY: kill(2) on a child pid we own; no memory effects.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + STOP_WAIT;
    for (id, child) in children.iter_mut() {
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    eprintln!("shoal dev: node {id} did not stop in time; killing it");
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
    children.clear();
}
