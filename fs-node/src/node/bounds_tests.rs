//! The queues into the core are bounded and a stalled core pushes back on the senders
//! (issue 15 point 8): the receive task ([`super::door::receive`]) on a real endpoint on
//! loopback, with a core that never runs.

use super::door;
use super::start::{self, Opened, Parts};
use super::transfer::Transfers;
use crate::config::{Config, RawConfig};
use crate::storage::{RealFs, SyncMode};
use bytes::Bytes;
use protocol::header::{cluster_key_from_file_contents, ClusterAuth};
use protocol::message::data::{ErrorCode, Op, RequestId, UpdateRequest};
use protocol::message::replication::{Entry, Proposal};
use protocol::message::Message;
use protocol::messaging::{Endpoint, EndpointConfig};
use protocol::{SenderId, Zxid};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Node 1 of three; the others' addresses are never used (the test's endpoints are bound on
/// ephemeral ports).
pub(super) fn config(dir: &Path) -> Config {
    std::fs::write(dir.join("cluster.key"), "k".repeat(32)).expect("key file");
    crate::config::write_owner_only_file(&dir.join("member.key"), "m".repeat(32).as_bytes())
        .expect("member key file");
    let mut members = BTreeMap::new();
    for m in 1..=3 {
        members.insert(m.to_string(), format!("127.0.0.1:{m}"));
    }
    let raw = RawConfig {
        node_id: Some(1),
        members: Some(members),
        data_dir: Some(dir.join("data")),
        cluster_key_file: Some(dir.join("cluster.key")),
        member_key_file: Some(dir.join("member.key")),
        cluster_id: Some(7),
        ..RawConfig::default()
    };
    Config::from_raw(raw).expect("config")
}

/// What a client holds: the cluster id and the key of the cluster file (the client key).
fn client_auth(dir: &Path) -> ClusterAuth {
    let bytes = std::fs::read(dir.join("cluster.key")).expect("client key file");
    ClusterAuth::new(7, cluster_key_from_file_contents(&bytes))
}

/// An endpoint holding the client credential and claiming `id`, sending straight to `peers`
/// (unicast fallback).
pub(super) async fn client_endpoint(dir: &Path, id: SenderId, peers: Vec<SocketAddr>) -> Endpoint {
    let mut c = EndpointConfig::new(id, 1, client_auth(dir));
    c.unicast_bind = "127.0.0.1:0".parse().expect("address");
    c.members = vec![1, 2, 3];
    c.peers = Some(peers);
    Endpoint::bind(c).await.expect("bind the client")
}

/// A client's id (clients draw theirs at or above `CLIENT_ID_MIN`).
const FLOODING_CLIENT: SenderId = (1 << 32) + 0x4000;

pub(super) struct Fixture {
    pub(super) opened: Opened,
    pub(super) node: Endpoint,
    pub(super) node_addr: SocketAddr,
    pub(super) _dir: tempfile::TempDir,
}

/// A node's state opened as a run opens it, and its endpoint on loopback; nothing runs the
/// core.
pub(super) async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path());
    std::fs::create_dir_all(&config.data_dir).expect("data dir");
    let transfers = Arc::new(Transfers::new(
        config.node_id,
        config.data_dir.clone(),
        config.members.clone(),
        EndpointConfig::new(1, 1, config.cluster_auth()),
        config.transfer_rate_bytes_per_s,
    ));
    let parts = Parts {
        vfs: Arc::new(RealFs),
        metrics: Arc::new(crate::metrics::Metrics::new()),
        transfers,
        now_ms: 0,
        sync: SyncMode::Thread,
    };
    let opened = start::open(&config, parts).expect("open");
    let node = endpoint(&config, 1, vec![]).await;
    let node_addr = node.local_addr().expect("node address");
    Fixture { opened, node, node_addr, _dir: dir }
}

async fn endpoint(config: &Config, id: SenderId, peers: Vec<SocketAddr>) -> Endpoint {
    let mut c = EndpointConfig::new(id, 1, config.cluster_auth());
    c.unicast_bind = "127.0.0.1:0".parse().expect("address");
    c.members = vec![1, 2, 3];
    c.peers = Some(peers);
    Endpoint::bind(c).await.expect("bind")
}

/// The node's one door, receiving for members 1–3, with the replication queue the core would
/// take from (nothing takes from it unless the test does).
pub(super) fn start_door(
    node: &Endpoint,
    opened: &Opened,
) -> (tokio::task::JoinHandle<()>, tokio::sync::mpsc::Receiver<Message>) {
    let (repl_tx, repl_rx) = door::replication_channel();
    let receive = tokio::spawn(door::receive(
        node.clone(),
        opened.server.clone(),
        opened.shared.clone(),
        repl_tx,
        vec![1, 2, 3],
    ));
    (receive, repl_rx)
}

/// A member multicasting proposals as fast as credit lets it, to a node whose core does not
/// run: the receive task stops taking messages once the replication queue is full, so the
/// member runs out of credit instead of filling the node's memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_core_stops_a_flooding_member() {
    let f = fixture().await;
    let (receive, repl_rx) = start_door(&f.node, &f.opened);
    let config = config(f._dir.path());
    let member = endpoint(&config, 2, vec![f.node_addr]).await;
    // 4 KiB proposals: two per 8 KiB batch datagram, so one window of credit (1024
    // datagrams) is about 2 000 messages.
    let data = Bytes::from(vec![7u8; 4096]);
    let mut sent = 0u32;
    let mut blocked = false;
    let started = Instant::now();
    while sent < 20_000 && started.elapsed() < Duration::from_secs(10) {
        let message = Message::Proposal(Proposal {
            from: 2,
            epoch: 1,
            prev: Zxid::new(1, sent),
            entries: vec![Entry { zxid: Zxid::new(1, sent + 1), data: data.clone() }],
            commit: Zxid::default(),
        });
        match tokio::time::timeout(Duration::from_secs(1), member.multicast(message)).await {
            Ok(result) => result.expect("multicast"),
            Err(_) => {
                blocked = true;
                break;
            }
        }
        sent += 1;
    }
    let queued = repl_rx.len();
    println!("member sent {sent} proposals; {queued} queued for the core; blocked: {blocked}");
    assert!(
        queued <= super::REPLICATION_QUEUE_MAX,
        "the replication queue holds {queued} messages, over its bound of {}",
        super::REPLICATION_QUEUE_MAX
    );
    assert!(blocked, "the member sent all {sent} proposals to a node whose core never ran");
    // What the member got out: the queue plus about one window of credit (1024 datagrams,
    // one or two of these proposals each) held by the node's endpoint, undelivered.
    let most = super::REPLICATION_QUEUE_MAX as u32 + 2 * 1024 + 64;
    assert!(sent <= most, "the member sent {sent} proposals, more than {most}");
    receive.abort();
    member.shutdown().await;
    f.node.shutdown().await;
}

/// Clients flooding a node whose core does not run with writes: requests past the in-flight
/// bound are answered `Unavailable` at once, and the command queue stays within its bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_core_turns_away_requests_past_the_in_flight_bound() {
    let f = fixture().await;
    let (receive, _repl_rx) = start_door(&f.node, &f.opened);
    let client = client_endpoint(f._dir.path(), FLOODING_CLIENT, vec![f.node_addr]).await;
    let total = super::REQUESTS_IN_FLIGHT_MAX as u64 + 1000;
    let mut tasks = tokio::task::JoinSet::new();
    for seq in 1..=total {
        let (client, addr) = (client.clone(), f.node_addr);
        tasks.spawn(async move {
            let message = Message::Update(UpdateRequest {
                request: RequestId { client: FLOODING_CLIENT, seq },
                conditions: vec![],
                ops: vec![Op::Put {
                    key: format!("/k{seq}"),
                    value: Bytes::from_static(b"v"),
                    create_only: false,
                    ephemeral: None,
                }],
            });
            client.request(addr, message, Duration::from_secs(3), 0).await
        });
    }
    let mut busy = 0u64;
    let mut unanswered = 0u64;
    while let Some(joined) = tasks.join_next().await {
        match joined.expect("request task") {
            Ok(Message::WriteReply(reply)) => match reply.result {
                Err(e) if e.code == ErrorCode::Unavailable => busy += 1,
                other => panic!("unexpected answer {other:?}"),
            },
            Ok(other) => panic!("unexpected reply {other:?}"),
            Err(_) => unanswered += 1,
        }
    }
    let queued = f.opened.cmds.len();
    println!(
        "{total} writes: {busy} answered busy, {unanswered} unanswered; {queued} commands queued"
    );
    assert!(
        queued <= super::COMMAND_QUEUE_MAX,
        "the command queue holds {queued} commands, over its bound of {}",
        super::COMMAND_QUEUE_MAX
    );
    assert!(busy >= 1000, "only {busy} of {total} writes past the in-flight bound were refused");
    receive.abort();
    client.shutdown().await;
    f.node.shutdown().await;
}

/// Resident memory of this process in KiB (Linux `/proc/self/status`).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Growth of resident memory a flood may cause: the node's replication queue (256 × ~4 KiB),
/// its requests in flight (1024 small ones), its endpoint's window for the member (1024
/// datagrams of 8 KiB) and queue of requests not yet taken (small ones), the flooding member's
/// own retransmit buffer (at most 64 MiB; it is in this process too), and allocator slack.
const FLOOD_RSS_GROWTH_MAX_KIB: u64 = 160 * 1024;

/// Memory under a flood (issue 15, Proof): a member multicasting proposals and a client
/// sending writes without pause, for `SHOAL_FLOOD_SECS` (default 5) seconds, at a node whose
/// core is slow (it takes one replication message and one command per millisecond and drops
/// them). The process's resident memory must not grow past [`FLOOD_RSS_GROWTH_MAX_KIB`]; the
/// flood stops early (and the test fails) if it does.
///
/// Resident memory is the whole process's, so the flood runs in a process of its own: the
/// test starts this test binary again with only this test selected and [`FLOOD_CHILD_ENV`]
/// set (other tests of the binary running beside it in one process would count too).
#[test]
fn memory_under_a_flood_stays_within_the_bounds() {
    if std::env::var_os(FLOOD_CHILD_ENV).is_some() {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(flood());
        return;
    }
    let exe = std::env::current_exe().expect("the test binary");
    let output = std::process::Command::new(exe)
        .args(["--exact", "node::bounds_tests::memory_under_a_flood_stays_within_the_bounds"])
        .args(["--nocapture", "--test-threads=1"])
        .env(FLOOD_CHILD_ENV, "1")
        .output()
        .expect("start the flood process");
    let out = String::from_utf8_lossy(&output.stdout);
    let err = String::from_utf8_lossy(&output.stderr);
    println!("{out}{err}");
    assert!(output.status.success(), "the flood process failed: {}\n{out}{err}", output.status);
    assert!(out.contains("1 passed"), "the flood test did not run in its process:\n{out}");
}

/// Set in the process that runs the flood itself.
const FLOOD_CHILD_ENV: &str = "SHOAL_FLOOD_CHILD";

async fn flood() {
    let secs: u64 =
        std::env::var("SHOAL_FLOOD_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let f = fixture().await;
    let Fixture { opened, node, node_addr, _dir } = f;
    let (receive, mut repl_rx) = start_door(&node, &opened);
    let Opened { shared, mut cmds, .. } = opened;
    // The slow core.
    let core = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        loop {
            tick.tick().await;
            let _ = repl_rx.try_recv();
            let _ = cmds.try_recv();
        }
    });
    let config = config(_dir.path());
    let member = endpoint(&config, 2, vec![node_addr]).await;
    let client = client_endpoint(_dir.path(), FLOODING_CLIENT, vec![node_addr]).await;
    let deadline = Instant::now() + Duration::from_secs(secs);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let base = rss_kib();

    let member_task = {
        let (member, stop) = (member.clone(), stop.clone());
        tokio::spawn(async move {
            let data = Bytes::from(vec![7u8; 4096]);
            let mut sent = 0u32;
            while Instant::now() < deadline && !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let message = Message::Proposal(Proposal {
                    from: 2,
                    epoch: 1,
                    prev: Zxid::new(1, sent),
                    entries: vec![Entry { zxid: Zxid::new(1, sent + 1), data: data.clone() }],
                    commit: Zxid::default(),
                });
                let send = member.multicast(message);
                if let Ok(result) = tokio::time::timeout(Duration::from_millis(200), send).await {
                    result.expect("multicast");
                    sent += 1;
                }
            }
            sent
        })
    };
    let client_task = {
        let (client, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            let slots = Arc::new(tokio::sync::Semaphore::new(1024));
            let mut seq = 0u64;
            while Instant::now() < deadline && !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(Ok(slot)) =
                    tokio::time::timeout(Duration::from_millis(100), slots.clone().acquire_owned())
                        .await
                else {
                    continue;
                };
                seq += 1;
                let client = client.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    let message = Message::Update(UpdateRequest {
                        request: RequestId { client: FLOODING_CLIENT, seq },
                        conditions: vec![],
                        ops: vec![Op::Put {
                            key: format!("/k{seq}"),
                            value: Bytes::from(vec![b'v'; 100]),
                            create_only: false,
                            ephemeral: None,
                        }],
                    });
                    let _ = client.request(node_addr, message, Duration::from_millis(500), 0).await;
                });
            }
            seq
        })
    };
    let mut peak = base;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(rss_kib());
        if peak - base > FLOOD_RSS_GROWTH_MAX_KIB {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            break;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let proposals = member_task.await.expect("member");
    let writes = client_task.await.expect("client");
    let busy = shared.metrics.requests_refused_busy.get();
    println!(
        "flood for {secs} s: {proposals} proposals, {writes} writes ({busy} answered busy); \
         resident memory {} MiB before, peak {} MiB, growth {} MiB (bound {} MiB)",
        base / 1024,
        peak / 1024,
        (peak - base) / 1024,
        FLOOD_RSS_GROWTH_MAX_KIB / 1024
    );
    assert!(
        peak - base <= FLOOD_RSS_GROWTH_MAX_KIB,
        "resident memory grew by {} MiB under the flood, over the bound of {} MiB",
        (peak - base) / 1024,
        FLOOD_RSS_GROWTH_MAX_KIB / 1024
    );
    core.abort();
    receive.abort();
    member.shutdown().await;
    client.shutdown().await;
    node.shutdown().await;
}
