//! Network-namespace hosts on one machine: N host namespaces and a client namespace, each with
//! one veth link to a bridge that lives in its own namespace, so nothing of a test network is
//! visible in the root namespace (no interface, no address, no nft rule).
//!
//! ```text
//!   shoal-<pid>-<n>-h1  eth0 198.18.77.1 ──┐
//!   shoal-<pid>-<n>-h2  eth0 198.18.77.2 ──┼── h1 h2 h3 c ── br0   (shoal-<pid>-<n>-br)
//!   shoal-<pid>-<n>-h3  eth0 198.18.77.3 ──┤
//!   shoal-<pid>-<n>-c   eth0 198.18.77.200 ┘
//! ```
//!
//! The subnet is 198.18.0.0/15's 198.18.77.0/24 (RFC 2544, reserved for benchmarking), which no
//! real network routes. Every network has its own namespaces, so parallel tests may all use the
//! same addresses: they never meet. Multicast (224.0.0.0/4) is routed out of `eth0`, the
//! bridge floods it (IGMP snooping off, so no querier is needed), loopback is up.
//!
//! Names carry the creating process id, so [`cleanup_stale`] can remove what a crashed run left
//! behind without touching a run that is still alive. [`Network`] tears itself down on drop
//! (also while a panic unwinds): it kills every process still inside its namespaces, then
//! deletes them (deleting a namespace removes its veth ends and nft tables with it).
//!
//! Requires root, `ip` (iproute2) and `nft` (nftables). [`skip_reason`] says which is missing,
//! so that tests can skip with that message.

use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Every namespace this harness creates starts with this.
pub const NAME_PREFIX: &str = "shoal-";
/// The first three octets of every host address (RFC 2544 benchmarking range).
pub const SUBNET: [u8; 3] = [198, 18, 77];
pub const SUBNET_PREFIX_LEN: u8 = 24;
/// The last octet of the client namespace's address (hosts are 1..=N).
pub const CLIENT_OCTET: u8 = 200;
/// Most hosts a network may have (addresses 1..=HOSTS_MAX stay below the client's).
pub const HOSTS_MAX: usize = 64;
/// The interface name inside every host namespace.
pub const HOST_INTERFACE: &str = "eth0";
/// The bridge's name inside the bridge namespace.
pub const BRIDGE: &str = "br0";
/// How long a process gets after SIGTERM before SIGKILL.
pub const TERMINATE_GRACE_MS: u64 = 3_000;
/// Most output lines kept per node (a runaway process cannot eat the harness's memory).
pub const NODE_LINES_MAX: usize = 2_000_000;

/// Errors of the namespace harness.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error(
        "network-namespace tests need root (effective uid 0) to create namespaces, links and \
         nft rules; run them as root, e.g. through .ci/run"
    )]
    NotRoot,
    #[error(
        "`{0}` is not installed: apt-get install iproute2 nftables (.ci/run does this as root)"
    )]
    MissingTool(&'static str),
    #[error("`{command}` failed ({status}): {stderr}")]
    Command { command: String, status: String, stderr: String },
    #[error("no host {0} in this network")]
    NoSuchHost(usize),
    #[error("a network has 1..={HOSTS_MAX} hosts, not {0}")]
    HostCount(usize),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Why namespace tests cannot run here, or None when they can.
pub fn skip_reason() -> Option<NetnsError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some(NetnsError::NotRoot);
    }
    for tool in ["ip", "nft"] {
        let found = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !found {
            return Some(NetnsError::MissingTool(tool));
        }
    }
    None
}

/// Runs a command to completion; an error carries its stderr.
pub fn run(command: &mut Command) -> Result<Output, NetnsError> {
    let output = command.stdin(Stdio::null()).output()?;
    if !output.status.success() {
        return Err(NetnsError::Command {
            command: format!("{command:?}"),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(output)
}

/// Runs `ip ARGS`.
fn ip(args: &[&str]) -> Result<Output, NetnsError> {
    run(Command::new("ip").args(args))
}

/// Runs `nft -f -` inside `namespace` with `script` on stdin.
pub fn nft_script(namespace: &str, script: &str) -> Result<(), NetnsError> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", namespace, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    child.stdin.take().expect("piped stdin").write_all(script.as_bytes())?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        return Err(NetnsError::Command {
            command: format!("nft -f - in {namespace} <<{script}"),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// The namespaces that exist now.
pub fn list_namespaces() -> Result<Vec<String>, NetnsError> {
    let output = ip(&["netns", "list"])?;
    // Lines look like "name" or "name (id: 3)".
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect())
}

/// The pids of the processes inside `namespace`.
pub fn namespace_pids(namespace: &str) -> Result<Vec<i32>, NetnsError> {
    let output = ip(&["netns", "pids", namespace])?;
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect())
}

/// Kills every process inside `namespace`, then deletes it. Errors are reported, not fatal:
/// teardown goes on with the next namespace.
fn remove_namespace(namespace: &str) -> Result<(), NetnsError> {
    for pid in namespace_pids(namespace).unwrap_or_default() {
        // SAFETY: kill has no memory preconditions; a pid that just exited only gives ESRCH.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
    ip(&["netns", "delete", namespace]).map(|_| ())
}

/// The pid a harness name was created by: `shoal-<pid>-...`.
fn creator_pid(namespace: &str) -> Option<i32> {
    namespace.strip_prefix(NAME_PREFIX)?.split('-').next()?.parse().ok()
}

/// True while `pid` is a live process (a zombie is dead: it only waits to be reaped).
fn process_alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // "pid (comm) S ...": the state follows the last ')' (comm may contain anything).
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z') | Some('X') | None)
}

/// Removes the namespaces (and the processes in them) of earlier runs whose creating process is
/// gone — what a run killed with SIGKILL leaves behind. Namespaces of live runs are left alone.
/// Returns the names removed.
pub fn cleanup_stale() -> Result<Vec<String>, NetnsError> {
    let mut removed = Vec::new();
    for namespace in list_namespaces()? {
        let Some(pid) = creator_pid(&namespace) else { continue };
        if process_alive(pid) {
            continue;
        }
        match remove_namespace(&namespace) {
            Ok(()) => removed.push(namespace),
            Err(e) => eprintln!("cleanup_stale: {e}"),
        }
    }
    Ok(removed)
}

/// Opens a UDP socket inside `namespace`, bound to `addr`, from this process: a helper thread
/// enters the namespace (setns) and binds; the socket stays in that namespace after the thread
/// is gone. For probes and in-process clients.
pub fn bind_udp_in(
    namespace: &str,
    addr: std::net::SocketAddr,
) -> Result<std::net::UdpSocket, NetnsError> {
    let path = format!("/run/netns/{namespace}");
    std::thread::spawn(move || -> Result<std::net::UdpSocket, NetnsError> {
        let file = std::fs::File::open(&path)?;
        use std::os::fd::AsRawFd;
        // SAFETY: setns on a valid namespace fd changes only this (short-lived) thread's
        // network namespace.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(std::net::UdpSocket::bind(addr)?)
    })
    .join()
    .expect("setns thread panicked")
}

/// One host: its namespace, address, and the bridge-side end of its link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    /// 1..=N for hosts, 0 for the client namespace.
    pub index: usize,
    pub namespace: String,
    pub address: Ipv4Addr,
    /// The veth end in the bridge namespace (take it down to cut the host off).
    pub bridge_port: String,
}

impl Host {
    /// `program args...` to run inside this host's namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.namespace]).arg(program);
        command
    }
}

/// Counts networks made by this process, so names are unique within it.
static NETWORKS_MADE: AtomicU32 = AtomicU32::new(0);

/// A set of host namespaces and a client namespace joined by a bridge. Dropping it tears it
/// all down.
#[derive(Debug)]
pub struct Network {
    run_id: String,
    bridge_namespace: String,
    hosts: Vec<Host>,
    client: Host,
    torn_down: bool,
}

impl Network {
    /// Creates `hosts` host namespaces (addresses 198.18.77.1..=N) and a client namespace
    /// (198.18.77.200). Cleans up stale namespaces of crashed runs first. On error, whatever
    /// was made is removed again.
    pub fn create(hosts: usize) -> Result<Network, NetnsError> {
        if hosts == 0 || hosts > HOSTS_MAX {
            return Err(NetnsError::HostCount(hosts));
        }
        if let Some(reason) = skip_reason() {
            return Err(reason);
        }
        let removed = cleanup_stale()?;
        if !removed.is_empty() {
            eprintln!("removed stale namespaces of crashed runs: {removed:?}");
        }
        let run_id = format!(
            "{NAME_PREFIX}{}-{}",
            std::process::id(),
            NETWORKS_MADE.fetch_add(1, Ordering::Relaxed)
        );
        let host = |index: usize, suffix: String, octet: u8| Host {
            index,
            namespace: format!("{run_id}-{suffix}"),
            address: Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], octet),
            bridge_port: suffix,
        };
        let mut network = Network {
            bridge_namespace: format!("{run_id}-br"),
            hosts: (1..=hosts).map(|i| host(i, format!("h{i}"), i as u8)).collect(),
            client: host(0, "c".to_string(), CLIENT_OCTET),
            run_id,
            torn_down: false,
        };
        // On error, `network` drops here and removes what was made.
        network.build()?;
        Ok(network)
    }

    fn build(&mut self) -> Result<(), NetnsError> {
        let bridge = self.bridge_namespace.clone();
        ip(&["netns", "add", &bridge])?;
        ip(&["-n", &bridge, "link", "set", "lo", "up"])?;
        // IGMP snooping off: the bridge floods multicast, so no querier is needed.
        ip(&["-n", &bridge, "link", "add", BRIDGE, "type", "bridge", "mcast_snooping", "0"])?;
        ip(&["-n", &bridge, "link", "set", BRIDGE, "up"])?;
        let all: Vec<Host> =
            self.hosts.iter().chain(std::iter::once(&self.client)).cloned().collect();
        for host in &all {
            let ns = host.namespace.as_str();
            ip(&["netns", "add", ns])?;
            // Both ends are created directly in their namespaces: nothing appears in the root
            // namespace, not even for a moment.
            ip(&[
                "link",
                "add",
                HOST_INTERFACE,
                "netns",
                ns,
                "type",
                "veth",
                "peer",
                "name",
                &host.bridge_port,
                "netns",
                &bridge,
            ])?;
            ip(&["-n", &bridge, "link", "set", &host.bridge_port, "master", BRIDGE])?;
            ip(&["-n", &bridge, "link", "set", &host.bridge_port, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            let cidr = format!("{}/{SUBNET_PREFIX_LEN}", host.address);
            ip(&["-n", ns, "addr", "add", &cidr, "dev", HOST_INTERFACE])?;
            ip(&["-n", ns, "link", "set", HOST_INTERFACE, "up"])?;
            ip(&["-n", ns, "route", "add", "224.0.0.0/4", "dev", HOST_INTERFACE])?;
        }
        Ok(())
    }

    /// The prefix of every namespace of this network (`shoal-<pid>-<n>`).
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    pub fn bridge_namespace(&self) -> &str {
        &self.bridge_namespace
    }

    /// The hosts, index 1..=N at positions 0..N.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Host `index` (1-based, like node ids).
    pub fn host(&self, index: usize) -> Result<&Host, NetnsError> {
        index.checked_sub(1).and_then(|i| self.hosts.get(i)).ok_or(NetnsError::NoSuchHost(index))
    }

    pub fn client(&self) -> &Host {
        &self.client
    }

    /// Host `index`, or the client namespace for index 0.
    pub fn host_or_client(&self, index: usize) -> Result<&Host, NetnsError> {
        if index == 0 {
            Ok(&self.client)
        } else {
            self.host(index)
        }
    }

    /// Every namespace of this network, bridge last.
    pub fn namespaces(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .hosts
            .iter()
            .chain(std::iter::once(&self.client))
            .map(|h| h.namespace.clone())
            .collect();
        names.push(self.bridge_namespace.clone());
        names
    }

    /// Sets the bridge-side end of host `index`'s link (0: the client's) up or down.
    pub fn set_link(&self, index: usize, up: bool) -> Result<(), NetnsError> {
        let host = self.host_or_client(index)?;
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.bridge_namespace, "link", "set", &host.bridge_port, state]).map(|_| ())
    }

    /// Kills every process in the network's namespaces and deletes them. Idempotent; Drop
    /// calls it.
    pub fn teardown(&mut self) -> Result<(), NetnsError> {
        if self.torn_down {
            return Ok(());
        }
        self.torn_down = true;
        let existing = list_namespaces().unwrap_or_default();
        let mut first_error = None;
        for namespace in self.namespaces() {
            if !existing.contains(&namespace) {
                continue;
            }
            if let Err(e) = remove_namespace(&namespace) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("network {} teardown: {e}", self.run_id);
        }
    }
}

/// How to start a node's process; kept so the node can be restarted the same way.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Removed by [`Node::restart`] with `wipe` (a node that lost its disk).
    pub data_dir: Option<PathBuf>,
}

/// One output line of a node: which start it came from (1, 2, ...) and when it was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub start: u64,
    pub text: String,
}

/// A supervised process inside a host namespace: started with `ip netns exec` (which execs, so
/// the pid is the program's own and signals reach it directly). Its stdout lines are collected;
/// stderr goes to the harness's stderr. Every start gets `SHOAL_START=<n>` in its environment
/// (1, 2, ...), which a program can use as its incarnation. Dropping a node kills it.
#[derive(Debug)]
pub struct Node {
    pub host: Host,
    pub spec: NodeSpec,
    child: Option<Child>,
    starts: u64,
    lines: Arc<Mutex<Vec<Line>>>,
    paused: bool,
}

impl Node {
    /// A node on `host` that is not running yet; call [`Node::start`].
    pub fn new(host: Host, spec: NodeSpec) -> Node {
        Node {
            host,
            spec,
            child: None,
            starts: 0,
            lines: Arc::new(Mutex::new(Vec::new())),
            paused: false,
        }
    }

    /// Starts the process (again). An already running process is killed first.
    pub fn start(&mut self) -> Result<u32, NetnsError> {
        self.kill()?;
        self.starts += 1;
        let mut command = self.host.command(&self.spec.program);
        command
            .args(&self.spec.args)
            .env("SHOAL_START", self.starts.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command.spawn()?;
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = self.lines.clone();
        let start = self.starts;
        std::thread::spawn(move || {
            for text in BufReader::new(stdout).lines().map_while(Result::ok) {
                let mut lines = lines.lock().expect("lines mutex");
                if lines.len() < NODE_LINES_MAX {
                    lines.push(Line { start, text });
                }
            }
        });
        let pid = child.id();
        self.child = Some(child);
        self.paused = false;
        Ok(pid)
    }

    /// The running process's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// How many times the process was started.
    pub fn starts(&self) -> u64 {
        self.starts
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// True while the process has not exited (a paused process is running).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// A copy of the output lines so far, of every start.
    pub fn lines(&self) -> Vec<Line> {
        self.lines.lock().expect("lines mutex").clone()
    }

    /// The output lines from position `cursor` on (for readers that keep their place).
    pub fn lines_from(&self, cursor: usize) -> Vec<Line> {
        let lines = self.lines.lock().expect("lines mutex");
        lines.get(cursor..).map(<[Line]>::to_vec).unwrap_or_default()
    }

    /// The shared line buffer (for a monitor that must not hold the node).
    pub fn line_buffer(&self) -> Arc<Mutex<Vec<Line>>> {
        self.lines.clone()
    }

    /// Sends `signal` to the running process; false when it is not running.
    pub fn signal(&mut self, signal: libc::c_int) -> bool {
        let Some(pid) = self.pid() else { return false };
        if !self.is_running() {
            return false;
        }
        // SAFETY: kill has no memory preconditions. The child is not reaped yet (try_wait said
        // so), so the pid is still ours.
        let sent = unsafe { libc::kill(pid as libc::pid_t, signal) } == 0;
        if sent {
            match signal {
                libc::SIGSTOP => self.paused = true,
                libc::SIGCONT => self.paused = false,
                _ => {}
            }
        }
        sent
    }

    /// SIGKILL and reap. Nothing to do when it is not running.
    pub fn kill(&mut self) -> Result<(), NetnsError> {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            child.wait()?;
        }
        self.paused = false;
        Ok(())
    }

    /// SIGSTOP: the process stays, frozen (sockets open, no reply).
    pub fn pause(&mut self) -> bool {
        self.signal(libc::SIGSTOP)
    }

    /// SIGCONT after [`Node::pause`].
    pub fn resume(&mut self) -> bool {
        self.signal(libc::SIGCONT)
    }

    /// SIGTERM (after SIGCONT, so a paused process can act on it), then waits up to `grace`
    /// for it to exit, then SIGKILL. Returns true when it exited on its own.
    pub fn terminate(&mut self, grace: Duration) -> Result<bool, NetnsError> {
        if !self.is_running() {
            self.kill()?;
            return Ok(true);
        }
        self.resume();
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !self.is_running() {
                self.kill()?;
                return Ok(true);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill()?;
        Ok(false)
    }

    /// Kills the process and starts it again; with `wipe`, its data directory is removed first
    /// (the node comes back with an empty disk).
    pub fn restart(&mut self, wipe: bool) -> Result<u32, NetnsError> {
        self.kill()?;
        if wipe {
            if let Some(dir) = &self.spec.data_dir {
                match std::fs::remove_dir_all(dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
                std::fs::create_dir_all(dir)?;
            }
        }
        self.start()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stale detection reads the creator pid from the name and ignores foreign namespaces.
    #[test]
    fn creator_pid_is_parsed_from_harness_names_only() {
        assert_eq!(creator_pid("shoal-1234-0-h1"), Some(1234));
        assert_eq!(creator_pid("shoal-77-12-br"), Some(77));
        assert_eq!(creator_pid("other-1234-0-h1"), None);
        assert_eq!(creator_pid("shoal-x-0-h1"), None);
    }
}
