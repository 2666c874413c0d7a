//! The `shoal backup` binary over real UDP against fake donors: three messaging endpoints on
//! loopback that answer the wire contract (status requests; a Backup request answered
//! `Bool(true)` or refused; then progress in `NodeStatus::transfer`). This proves the command's
//! whole path — cluster file, socket transport, the Backup message on the wire, polling,
//! output and exit codes — without the node side of transfers.

use cache_client::net::ClusterFile;
use protocol::header::ClusterAuth;
use protocol::message::data::{
    ErrorCode, Load, NodeStatus, ReadOp, ReadReply, ReadValue, Role, WireError,
};
use protocol::message::transfer::BackupTarget;
use protocol::message::Message;
use protocol::messaging::{Endpoint, EndpointConfig, Incoming};
use protocol::{NodeId, Zxid};
use shoal_tests::cluster::{binary, unique_group};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CLUSTER_ID: u32 = 77;
const KEY: &str = "ops backup test key";
/// Bound on one `shoal backup` run (its own timeout is set lower).
const RUN_WAIT: Duration = Duration::from_secs(60);

/// What the fake donor does with a Backup request.
#[derive(Clone)]
enum Script {
    /// Started; each later status shows the next text (the last one stays).
    Progress(Vec<&'static str>),
    Refuse(&'static str),
}

struct Fake {
    status: NodeStatus,
    script: Script,
    shown: Vec<&'static str>,
    backups: Vec<BackupTarget>,
}

/// A fake node: an endpoint on loopback answering status and Backup requests.
struct FakeNode {
    endpoint: Endpoint,
    state: Arc<Mutex<Fake>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeNode {
    async fn start(node: NodeId, role: Role, cpu_permille: u16, script: Script) -> FakeNode {
        let mut config =
            EndpointConfig::new(node as u64, 1, ClusterAuth::new(CLUSTER_ID, KEY.as_bytes()));
        config.unicast_bind = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        // No group traffic is needed: requests are unicast.
        config.peers = Some(Vec::new());
        let endpoint = Endpoint::bind(config).await.expect("bind fake node");
        let state = Arc::new(Mutex::new(Fake {
            status: NodeStatus {
                node,
                role,
                epoch: 1,
                applied: Zxid::new(1, 3),
                committed: Zxid::new(1, 3),
                frozen: false,
                load: Load { cpu_permille, mem_permille: 0, inflight: 0 },
                master: Some(1),
                transfer: None,
            },
            script,
            shown: Vec::new(),
            backups: Vec::new(),
        }));
        let (e, s) = (endpoint.clone(), state.clone());
        let task = tokio::spawn(async move {
            while let Ok(incoming) = e.recv().await {
                let Incoming::Message(received) = incoming else { continue };
                let Some(handle) = received.request else { continue };
                let reply = answer(&s, received.message);
                if let Some(reply) = reply {
                    let _ = handle.reply(&e, reply).await;
                }
            }
        });
        FakeNode { endpoint, state, task }
    }

    fn address(&self) -> String {
        self.endpoint.local_addr().expect("addr").to_string()
    }

    fn backups(&self) -> Vec<BackupTarget> {
        self.state.lock().unwrap().backups.clone()
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(state: &Mutex<Fake>, message: Message) -> Option<Message> {
    let mut st = state.lock().unwrap();
    let result = match message {
        Message::Request(r) if r.op == ReadOp::Status => {
            if let Some(next) = st.shown.first().copied() {
                if st.shown.len() > 1 {
                    st.shown.remove(0);
                }
                st.status.transfer = Some(next.to_string());
            }
            Ok(ReadValue::Status(st.status.clone()))
        }
        Message::Backup(b) => {
            st.backups.push(b.target);
            match st.script.clone() {
                Script::Progress(texts) => {
                    st.shown = texts;
                    Ok(ReadValue::Bool(true))
                }
                Script::Refuse(reason) => {
                    Err(WireError { code: ErrorCode::Unavailable, message: reason.into() })
                }
            }
        }
        _ => return None,
    };
    Some(Message::ReadReply(ReadReply { applied: st.status.applied, load: st.status.load, result }))
}

/// Writes a cluster file naming the fake nodes; returns its directory (kept alive) and path.
fn cluster_file(nodes: &BTreeMap<NodeId, FakeNode>) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = ClusterFile {
        cluster_id: CLUSTER_ID,
        key_file: None,
        key: Some(KEY.into()),
        group: unique_group(),
        interface: "127.0.0.1".into(),
        loopback: true,
        members: nodes.iter().map(|(id, n)| (id.to_string(), n.address())).collect(),
    };
    let path = dir.path().join("cluster.toml");
    file.save(&path).expect("write cluster file");
    (dir, path)
}

/// Runs the `shoal` binary off the runtime's threads; returns (exit code, stdout, stderr).
async fn shoal(cluster: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    let mut command = std::process::Command::new(binary("shoal"));
    command.arg("--cluster").arg(cluster).arg("--timeout-ms").arg("1000").args(args);
    command.env_remove("SHOAL_CLUSTER");
    let output = tokio::time::timeout(
        RUN_WAIT,
        tokio::task::spawn_blocking(move || command.output().expect("run shoal")),
    )
    .await
    .expect("shoal backup finished in time")
    .expect("join");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (output.status.code(), text(&output.stdout), text(&output.stderr))
}

/// Claim: `shoal backup --to-node 3` sends one Backup over UDP to the least loaded other
/// follower (node 2), follows its progress and prints its `done:` line with exit 0; a
/// refusal from a named donor prints the reason with exit 7; a `failed:` ends with exit 8.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shoal_backup_over_udp_follows_a_fake_donor_to_each_outcome() {
    let done = "done: backup to node 3 4096 bytes in 1 s";
    let mut nodes = BTreeMap::new();
    nodes.insert(
        1,
        FakeNode::start(1, Role::Master, 0, Script::Refuse("a transfer is running")).await,
    );
    nodes.insert(
        2,
        FakeNode::start(2, Role::Follower, 300, Script::Progress(vec!["sending: 50%", done])).await,
    );
    nodes.insert(
        3,
        FakeNode::start(3, Role::Follower, 100, Script::Progress(vec!["failed: disk full"])).await,
    );
    let (_dir, cluster) = cluster_file(&nodes);

    let (code, out, err) = shoal(&cluster, &["backup", "--to-node", "3", "--timeout", "30"]).await;
    assert_eq!(code, Some(0), "stdout {out}\nstderr {err}");
    assert_eq!(out, format!("{done}\n"));
    assert!(err.contains("backup to node 3 started by node 2"), "{err}");
    assert_eq!(nodes[&2].backups(), vec![BackupTarget::Node(3)]);
    assert!(nodes[&3].backups().is_empty(), "the target is never the donor");

    let (code, out, err) =
        shoal(&cluster, &["backup", "--from-node", "1", "--to-dir", "/srv/b"]).await;
    assert_eq!(code, Some(7), "stdout {out}\nstderr {err}");
    assert_eq!(err, "shoal: node 1 refused the backup: a transfer is running\n");
    assert_eq!(nodes[&1].backups(), vec![BackupTarget::Directory("/srv/b".into())]);

    let (code, _, err) = shoal(&cluster, &["backup", "--from-node", "3", "--to-node", "2"]).await;
    assert_eq!(code, Some(8), "{err}");
    assert!(err.ends_with("shoal: backup on node 3 failed: disk full\n"), "{err}");
}
