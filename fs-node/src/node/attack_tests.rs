//! Forgery and replay at a node (issue 16, first slice): a process that holds only what a
//! client holds (the cluster file's key) forges member traffic at a node's one door
//! ([`super::door::receive`], on a real endpoint on loopback; the core does not run, the test
//! reads what the door would hand it). Every forgery must be refused by the endpoint and
//! counted, and nothing may reach the core; a captured genuine datagram sent again must be
//! refused too.

use super::bounds_tests::{client_endpoint, config, fixture, start_door};
use bytes::Bytes;
use protocol::message::replication::{Commit, Entry, Proposal, Sync, Vote};
use protocol::message::transfer::FileTransBlock;
use protocol::message::Message;
use protocol::messaging::{Endpoint, EndpointConfig, Incoming};
use protocol::{SenderId, Zxid};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// A client's own id (clients draw theirs at or above `CLIENT_ID_MIN`).
const CLIENT_ID: SenderId = (1 << 32) + 77;

/// An endpoint of the attacker: `id` is whatever it claims, `auth` the client credential; it
/// sends straight to the node (unicast fallback with the node as its only peer).
async fn attacker(dir: &Path, id: SenderId, node: SocketAddr) -> Endpoint {
    client_endpoint(dir, id, vec![node]).await
}

/// A genuine member (node 3), holding what the nodes' configuration gives them.
async fn member(dir: &Path, node: SocketAddr) -> Endpoint {
    let config = config(dir);
    let mut c = EndpointConfig::new(3, 1, config.cluster_auth());
    c.unicast_bind = "127.0.0.1:0".parse().expect("address");
    c.members = vec![1, 2, 3];
    c.peers = Some(vec![node]);
    Endpoint::bind(c).await.expect("bind the member")
}

/// Member messages claiming to come from node 2, each a takeover step: a vote for node 2, a
/// proposal and a catch-up chunk that would write `/owned` into the log, a commit.
fn forgeries() -> Vec<Message> {
    let entry = Entry { zxid: Zxid::new(9, 1), data: Bytes::from_static(b"put /owned") };
    vec![
        Message::Vote(Vote {
            from: 2,
            round: 99,
            candidate: 2,
            candidate_epoch: 9,
            candidate_zxid: Zxid::new(9, 1),
            settled: true,
            accepted_epoch: 9,
            promised_to: 2,
            fresh: false,
        }),
        Message::Proposal(Proposal {
            from: 2,
            epoch: 9,
            prev: Zxid::default(),
            entries: vec![entry.clone()],
            commit: Zxid::new(9, 1),
        }),
        Message::Commit(Commit { from: 2, epoch: 9, commit: Zxid::new(9, 1) }),
        Message::Sync(Sync {
            from: 2,
            epoch: 9,
            prev: Zxid::default(),
            entries: vec![entry],
            done: true,
            snapshot: None,
            commit: Zxid::new(9, 1),
        }),
    ]
}

/// Every datagram the endpoint refused or set aside unopened so far.
fn refused(endpoint: &Endpoint) -> u64 {
    endpoint.dropped().total()
}

/// Waits (at most 5 s) until `endpoint` has refused `count` more datagrams than `before`,
/// failing at once if anything reaches `queue` meanwhile.
async fn await_refusals(
    endpoint: &Endpoint,
    before: u64,
    count: u64,
    queue: &mut tokio::sync::mpsc::Receiver<Message>,
    what: &str,
) {
    let started = Instant::now();
    loop {
        if let Ok(message) = queue.try_recv() {
            panic!("{what}: a forged {:?} reached the core", message.kind());
        }
        let now = refused(endpoint);
        if now >= before + count {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{what}: only {} of {count} forged datagrams were refused and counted",
            now - before
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A client credential forges a Vote, a Proposal, a Commit and a Sync chunk, each as member
/// node 2 and with the client's own id, best-effort and on a reliable stream: the node's
/// endpoint refuses and counts every one, and none reaches the core. A genuine member's
/// commit sent afterwards does, and is the only thing that does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_credential_forges_no_member_message() {
    let f = fixture().await;
    let dir = f._dir.path();
    let (receive, mut repl_rx) = start_door(&f.node, &f.opened);
    for id in [2, CLIENT_ID] {
        let forger = attacker(dir, id, f.node_addr).await;
        for message in forgeries() {
            let what = format!("{:?} as sender {id}, best-effort", message.kind());
            let before = refused(&f.node);
            forger.send_unreliable_to(f.node_addr, &message).await.expect("send");
            await_refusals(&f.node, before, 1, &mut repl_rx, &what).await;
            let what = format!("{:?} as sender {id}, reliable", message.kind());
            let before = refused(&f.node);
            forger.multicast(message).await.expect("multicast");
            await_refusals(&f.node, before, 1, &mut repl_rx, &what).await;
        }
        forger.shutdown().await;
    }
    let genuine = member(dir, f.node_addr).await;
    let commit = Message::Commit(Commit { from: 3, epoch: 1, commit: Zxid::new(1, 1) });
    genuine.send_unreliable_to(f.node_addr, &commit).await.expect("send");
    let first = tokio::time::timeout(Duration::from_secs(5), repl_rx.recv())
        .await
        .expect("the genuine member's commit reaches the core")
        .expect("queue open");
    assert_eq!(first, commit, "the first message the core would take is not the member's");
    assert!(repl_rx.try_recv().is_err(), "more than the genuine commit reached the core");
    receive.abort();
    genuine.shutdown().await;
    f.node.shutdown().await;
}

/// A transfer block forged with the client credential (as member 2 and with the client's own
/// id) at a node's transfer endpoint is refused and counted; a genuine member's block is the
/// only one delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_credential_forges_no_transfer_block() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path());
    let mut base = EndpointConfig::new(1, 1, config.cluster_auth());
    base.unicast_bind = "127.0.0.1:0".parse().expect("address");
    base.members = vec![1, 2, 3];
    let group = "239.255.77.9:7799".parse().expect("group");
    let mut transfer = cache_server::transfer::net::transfer_endpoint_config(&base, group);
    transfer.peers = Some(Vec::new());
    let receiving = Endpoint::bind(transfer).await.expect("bind the transfer endpoint");
    let addr = receiving.local_addr().expect("address");
    let block = |data: &'static [u8]| {
        Message::FileTransBlock(FileTransBlock {
            transfer: 5,
            file: 0,
            block: 0,
            md5: cache_server::transfer::md5_of(data),
            data: Bytes::from_static(data),
        })
    };
    for id in [2, CLIENT_ID] {
        let forger = attacker(dir.path(), id, addr).await;
        let before = refused(&receiving);
        forger.send_unreliable_to(addr, &block(b"forged")).await.expect("send");
        let started = Instant::now();
        while refused(&receiving) == before {
            if let Some(Incoming::Message(m)) = receiving.try_recv() {
                panic!("a forged block as sender {id} was delivered (as from {})", m.sender);
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the forged block as {id} was not refused"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        forger.shutdown().await;
    }
    let genuine = member(dir.path(), addr).await;
    genuine.send_unreliable_to(addr, &block(b"genuine")).await.expect("send");
    let got = tokio::time::timeout(Duration::from_secs(5), receiving.recv())
        .await
        .expect("the genuine block arrives")
        .expect("endpoint open");
    match got {
        Incoming::Message(m) => {
            assert_eq!(m.sender, 3);
            assert_eq!(m.message, block(b"genuine"));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(receiving.try_recv().is_none(), "more than the genuine block was delivered");
    genuine.shutdown().await;
    receiving.shutdown().await;
}

/// A genuine member's datagram, captured on the way and sent to the node twice: the first
/// copy reaches the core, the second is refused as a replay and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_member_datagram_is_refused() {
    let f = fixture().await;
    let dir = f._dir.path();
    let (receive, mut repl_rx) = start_door(&f.node, &f.opened);
    let tap = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind the tap");
    let genuine = member(dir, f.node_addr).await;
    let commit = Message::Commit(Commit { from: 3, epoch: 1, commit: Zxid::new(1, 1) });
    genuine.send_unreliable_to(tap.local_addr().expect("tap"), &commit).await.expect("send");
    let mut captured = vec![0u8; 65_536];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), tap.recv_from(&mut captured))
        .await
        .expect("the member's datagram is captured")
        .expect("receive");
    captured.truncate(n);
    tap.send_to(&captured, f.node_addr).await.expect("first copy");
    let first = tokio::time::timeout(Duration::from_secs(5), repl_rx.recv())
        .await
        .expect("the first copy reaches the core")
        .expect("queue open");
    assert_eq!(first, commit);
    let before = refused(&f.node);
    tap.send_to(&captured, f.node_addr).await.expect("replay");
    await_refusals(&f.node, before, 1, &mut repl_rx, "replayed commit").await;
    receive.abort();
    genuine.shutdown().await;
    f.node.shutdown().await;
}
