//! The queues into the core are bounded and a stalled core pushes back on the senders
//! (issue 15 point 8): the receive task ([`super::door::receive`]) on a real endpoint on
//! loopback, with a core that never runs.

use super::door;
use super::start::{self, Opened, Parts};
use super::transfer::Transfers;
use crate::config::{Config, RawConfig};
use crate::storage::{RealFs, SyncMode};
use bytes::Bytes;
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
fn config(dir: &Path) -> Config {
    std::fs::write(dir.join("cluster.key"), "k".repeat(32)).expect("key file");
    let mut members = BTreeMap::new();
    for m in 1..=3 {
        members.insert(m.to_string(), format!("127.0.0.1:{m}"));
    }
    let raw = RawConfig {
        node_id: Some(1),
        members: Some(members),
        data_dir: Some(dir.join("data")),
        cluster_key_file: Some(dir.join("cluster.key")),
        cluster_id: Some(7),
        ..RawConfig::default()
    };
    Config::from_raw(raw).expect("config")
}

struct Fixture {
    opened: Opened,
    node: Endpoint,
    node_addr: SocketAddr,
    _dir: tempfile::TempDir,
}

/// A node's state opened as a run opens it, and its endpoint on loopback; nothing runs the
/// core.
async fn fixture() -> Fixture {
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

/// A member multicasting proposals as fast as credit lets it, to a node whose core does not
/// run: the receive task stops taking messages once the replication queue is full, so the
/// member runs out of credit instead of filling the node's memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_core_stops_a_flooding_member() {
    let f = fixture().await;
    let (repl_tx, repl_rx) = door::replication_channel();
    let receive = tokio::spawn(door::receive(
        f.node.clone(),
        f.opened.server.clone(),
        f.opened.shared.clone(),
        repl_tx,
        vec![1, 2, 3],
    ));
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
    let (repl_tx, _repl_rx) = door::replication_channel();
    let receive = tokio::spawn(door::receive(
        f.node.clone(),
        f.opened.server.clone(),
        f.opened.shared.clone(),
        repl_tx,
        vec![1, 2, 3],
    ));
    let config = config(f._dir.path());
    let client = endpoint(&config, 0x4000, vec![f.node_addr]).await;
    let total = super::REQUESTS_IN_FLIGHT_MAX as u64 + 1000;
    let mut tasks = tokio::task::JoinSet::new();
    for seq in 1..=total {
        let (client, addr) = (client.clone(), f.node_addr);
        tasks.spawn(async move {
            let message = Message::Update(UpdateRequest {
                request: RequestId { client: 0x4000, seq },
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
