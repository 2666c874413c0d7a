//! A process harness for real clusters: `shoal-fs` children on loopback multicast, each test
//! with its own group, ports, key and data directory. Every child is killed when the harness is
//! dropped, also when the test panics.
//!
//! Binaries are found in the test executable's profile directory (`target/<profile>/`). The
//! first use in a test process runs `cargo build -p fs-node -p shoal-cli --bins` (same
//! profile, bounded by [`BUILD_TIMEOUT`]; a no-op when they are fresh), so that neither a
//! missing nor a stale binary is ever tested.

use cache_client::net::{ClusterFile, SocketTransport};
use cache_client::Transport;
use cache_client::{Client, ClientConfig};
use protocol::message::data::{
    NodeStatus, ReadOp, ReadReply, ReadRequest, ReadValue, Role, Versioned,
};
use protocol::message::Message;
use protocol::{NodeId, Zxid};
use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longest a missing binary's build may take.
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(900);
/// FSLive interval the test nodes announce with (fast, so clients learn nodes quickly).
pub const FSLIVE_INTERVAL_MS: u64 = 1_000;
/// The cluster id of every test cluster (their keys differ).
pub const CLUSTER_ID: u32 = 4242;

/// Whether this process already ran the build of the binaries.
static BUILD: Mutex<bool> = Mutex::new(false);
static NEXT_GROUP: AtomicU32 = AtomicU32::new(0);

/// `target/<profile>/`, from the running test executable (`target/<profile>/deps/x-hash`).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let deps = exe.parent().expect("deps dir");
    deps.parent().expect("profile dir").to_path_buf()
}

/// The path of workspace binary `name`. The first call in a test process runs
/// `cargo build -p fs-node -p shoal-cli --bins` (a no-op when they are fresh), so that a
/// test never runs a stale binary after `cargo test -p shoal-tests`; if that build cannot run
/// but the binary exists, the existing one is used.
pub fn binary(name: &str) -> PathBuf {
    let path = profile_dir().join(name);
    let mut built = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    if !*built {
        *built = true;
        if let Err(e) = build_binaries() {
            assert!(path.exists(), "{} is missing and building it failed: {e}", path.display());
            eprintln!("warning: could not rebuild the binaries ({e}); using {}", path.display());
        }
    }
    assert!(path.exists(), "{} still missing after the build", path.display());
    path
}

fn build_binaries() -> Result<(), String> {
    let release = profile_dir().file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-q", "-p", "fs-node", "-p", "shoal-cli", "--bins"]);
    if release {
        cmd.arg("--release");
    }
    let mut child = cmd.spawn().map_err(|e| format!("running cargo: {e}"))?;
    let deadline = Instant::now() + BUILD_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return if status.success() { Ok(()) } else { Err(format!("cargo build: {status}")) };
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("cargo build took over {BUILD_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A free UDP port on loopback (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A group address unique to this process and call.
pub fn unique_group() -> String {
    let n = NEXT_GROUP.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    let b = ((pid >> 8) & 0xff) as u8;
    let c = ((pid as u8) ^ (n as u8).wrapping_mul(37)).max(1);
    format!("239.{}.{b}.{c}:{}", 200 + (n % 50), free_port())
}

/// A running cluster of `shoal-fs` processes.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub cluster_file: PathBuf,
    pub file: ClusterFile,
    /// Extra `shoal-fs` flags every node gets.
    pub extra_args: Vec<String>,
    children: BTreeMap<NodeId, Child>,
}

impl Cluster {
    /// Writes the key and cluster file for `n` nodes and starts them all.
    pub fn start(n: usize) -> Cluster {
        Cluster::start_with(n, &[])
    }

    /// [`Cluster::start`] with extra `shoal-fs` flags for every node.
    pub fn start_with(n: usize, extra_args: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let key: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
        std::fs::write(dir.path().join("cluster.key"), &key).expect("write key");
        write_member_key(dir.path());
        let members = (1..=n as NodeId)
            .map(|id| (id.to_string(), format!("127.0.0.1:{}", free_port())))
            .collect();
        let file = ClusterFile {
            cluster_id: CLUSTER_ID,
            key_file: Some("cluster.key".into()),
            key: None,
            group: unique_group(),
            interface: "127.0.0.1".into(),
            loopback: true,
            members,
        };
        let cluster_file = dir.path().join("cluster.toml");
        file.save(&cluster_file).expect("write cluster file");
        let extra_args = extra_args.iter().map(|a| a.to_string()).collect();
        let mut cluster =
            Cluster { dir, cluster_file, file, extra_args, children: BTreeMap::new() };
        for id in 1..=n as NodeId {
            cluster.spawn(id);
        }
        cluster
    }

    pub fn ids(&self) -> Vec<NodeId> {
        (1..=self.file.members.len() as NodeId).collect()
    }

    pub fn address(&self, id: NodeId) -> String {
        self.file.members[&id.to_string()].clone()
    }

    pub fn data_dir(&self, id: NodeId) -> PathBuf {
        self.dir.path().join(format!("node{id}"))
    }

    /// The `shoal-fs` arguments of node `id`.
    pub fn node_args(&self, id: NodeId) -> Vec<String> {
        node_args(&self.file, self.dir.path(), id, &self.data_dir(id), FSLIVE_INTERVAL_MS)
    }

    /// Starts node `id` (again).
    pub fn spawn(&mut self, id: NodeId) {
        let log = std::fs::File::create(self.dir.path().join(format!("node{id}.log")))
            .expect("node log file");
        let child = Command::new(binary("shoal-fs"))
            .args(self.node_args(id))
            .args(&self.extra_args)
            .env("RUST_LOG", std::env::var("SHOAL_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start shoal-fs");
        self.children.insert(id, child);
    }

    /// SIGKILL node `id` and reap it.
    pub fn kill(&mut self, id: NodeId) {
        if let Some(mut child) = self.children.remove(&id) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP node `id`: it stays alive with its sockets open and runs nothing (a stalled
    /// process) until [`Cluster::resume`].
    pub fn pause(&self, id: NodeId) {
        self.signal(id, libc::SIGSTOP);
    }

    /// SIGCONT node `id` after [`Cluster::pause`].
    pub fn resume(&self, id: NodeId) {
        self.signal(id, libc::SIGCONT);
    }

    fn signal(&self, id: NodeId, signal: libc::c_int) {
        let child = self.children.get(&id).unwrap_or_else(|| panic!("node {id} is not running"));
        // SAFETY: kill(2) on a child this harness spawned and has not reaped.
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "signal {signal} to node {id}: {}", std::io::Error::last_os_error());
    }

    /// SIGTERM node `id` and wait (bounded) for it to exit; returns its exit code.
    pub fn stop(&mut self, id: NodeId) -> Option<i32> {
        let mut child = self.children.remove(&id)?;
        terminate(&mut child, Duration::from_secs(10))
    }

    /// The log node `id` wrote to stderr (for failure messages).
    pub fn node_log(&self, id: NodeId) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("node{id}.log"))).unwrap_or_default()
    }

    /// Every node's log tail, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for id in self.ids() {
            let log = self.node_log(id);
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            out.push_str(&format!("--- node {id} ---\n"));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// A client on this cluster (socket transport), with a short request timeout.
    pub async fn client(&self) -> Client<SocketTransport> {
        self.client_with(|_| {}).await
    }

    /// [`Cluster::client`] with its configuration changed by `edit` first (the seeds and
    /// client id are the harness's).
    pub async fn client_with(
        &self,
        edit: impl FnOnce(&mut ClientConfig),
    ) -> Client<SocketTransport> {
        let (file, auth) = ClusterFile::load(&self.cluster_file).expect("cluster file");
        let transport = SocketTransport::connect(&file, auth, None).await.expect("connect");
        let mut config = ClientConfig {
            seeds: file.seeds(),
            request_timeout: Duration::from_millis(500),
            attempts_max: 6,
            redirects_max: 10,
            client_id: Some(transport.id()),
            ..ClientConfig::default()
        };
        edit(&mut config);
        Client::new(transport, config)
    }

    /// A bare transport on this cluster, to ask one node directly.
    pub async fn transport(&self) -> SocketTransport {
        let (file, auth) = ClusterFile::load(&self.cluster_file).expect("cluster file");
        SocketTransport::connect(&file, auth, None).await.expect("connect")
    }

    /// Polls every node's status until one is an established master that a majority follows,
    /// or `timeout` passes (then `None`).
    pub async fn wait_master(
        &self,
        client: &Client<SocketTransport>,
        timeout: Duration,
    ) -> Option<NodeId> {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            let mut statuses: Vec<NodeStatus> = Vec::new();
            for id in self.ids() {
                if let Ok(s) = client.status_of(&self.address(id)).await {
                    statuses.push(s);
                }
            }
            if let Some(master) = statuses.iter().find(|s| s.role == Role::Master) {
                let following = statuses
                    .iter()
                    .filter(|s| s.node == master.node || s.master == Some(master.node))
                    .count();
                if following > self.ids().len() / 2 {
                    return Some(master.node);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}

/// Reads `key` from the node at `address` only, once it has applied `floor` (the node waits
/// up to its floor wait, then answers `Behind`).
pub async fn get_at(
    transport: &SocketTransport,
    address: &str,
    key: &str,
    floor: Zxid,
) -> Result<Option<Versioned>, String> {
    let request = ReadRequest { floor, linearizable: false, op: ReadOp::Get { key: key.into() } };
    let reply = transport
        .request(address, Message::Request(request), Duration::from_secs(2))
        .await
        .map_err(|e| e.to_string())?;
    match reply {
        Message::ReadReply(ReadReply { result: Ok(ReadValue::Value(v)), .. }) => Ok(v),
        other => Err(format!("{other:?}")),
    }
}

/// `shoal-fs` flags for node `id` of the cluster described by `file` (whose key file path is
/// relative to `base`).
pub fn node_args(
    file: &ClusterFile,
    base: &Path,
    id: NodeId,
    data_dir: &Path,
    fslive_interval_ms: u64,
) -> Vec<String> {
    let members: Vec<String> = file.members.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let key_file = base.join(file.key_file.as_ref().expect("key file"));
    vec![
        "--node-id".into(),
        id.to_string(),
        "--member".into(),
        members.join(","),
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--cluster-id".into(),
        file.cluster_id.to_string(),
        "--cluster-key-file".into(),
        key_file.display().to_string(),
        "--member-key-file".into(),
        base.join(MEMBER_KEY_FILE).display().to_string(),
        "--multicast-group".into(),
        file.group.clone(),
        "--multicast-interface".into(),
        file.interface.clone(),
        "--fslive-interval-ms".into(),
        fslive_interval_ms.to_string(),
    ]
}

/// The member key file [`node_args`] names, beside the cluster file: the nodes' key, which no
/// client reads.
pub const MEMBER_KEY_FILE: &str = "member.key";

/// Writes a fresh random member key to `dir`/[`MEMBER_KEY_FILE`], mode 0600.
pub fn write_member_key(dir: &Path) {
    let key: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
    fs_node::config::write_owner_only_file(&dir.join(MEMBER_KEY_FILE), key.as_bytes())
        .expect("write member key");
}

/// SIGTERM, then wait up to `wait` (SIGKILL after it); the exit code if it exited by itself.
pub fn terminate(child: &mut Child, wait: Duration) -> Option<i32> {
    // SAFETY: kill(2) with a pid we own and a valid signal number has no memory effects.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + wait;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, mut child) in std::mem::take(&mut self.children) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
