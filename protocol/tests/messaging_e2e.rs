//! End-to-end tests of the messaging layer on real sockets: loopback multicast on 127.0.0.1,
//! unicast request/reply, and the unicast fallback. Loss comes from the deterministic fault
//! hook (seeded drops). Every test has a hard time bound. Group and ports are derived from the
//! test's name so that tests running at the same time never share a group.

use bytes::Bytes;
use protocol::header::ClusterAuth;
use protocol::message::transfer::FileTransBlock;
use protocol::message::Message;
use protocol::messaging::{Endpoint, EndpointConfig, FaultConfig, Incoming, MessagingError};
use protocol::SenderId;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

const TEST_BOUND: Duration = Duration::from_secs(90);

fn auth() -> ClusterAuth {
    ClusterAuth::new(0x5407, b"e2e cluster key")
}

/// A stable hash of the test name (FNV-1a), for its group address and ports.
fn name_hash(name: &str) -> u32 {
    name.bytes().fold(0x811C_9DC5u32, |h, b| (h ^ b as u32).wrapping_mul(0x0100_0193))
}

fn group_for(name: &str) -> SocketAddrV4 {
    let h = name_hash(name);
    let ip = Ipv4Addr::new(239, 255, (h >> 8) as u8, (h as u8).max(2));
    SocketAddrV4::new(ip, 20_000 + (h % 20_000) as u16)
}

fn config(name: &str, id: SenderId, members: &[SenderId], drop_percent: u32) -> EndpointConfig {
    let mut c = EndpointConfig::new(id, 1, auth());
    c.group = group_for(name);
    c.interface = Ipv4Addr::LOCALHOST;
    c.unicast_bind = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    c.members = members.to_vec();
    c.fault = FaultConfig::drop_receive_percent(name_hash(name) as u64 * 31 + id, drop_percent);
    c
}

/// Message `i` of `sender` with `len` bytes of recognisable data.
fn msg(sender: SenderId, i: u64, len: usize) -> Message {
    let data: Vec<u8> = (0..len).map(|b| (b as u64).wrapping_mul(31) as u8 ^ i as u8).collect();
    Message::FileTransBlock(FileTransBlock {
        transfer: sender,
        file: len as u32,
        block: i,
        md5: [0; 16],
        data: Bytes::from(data),
    })
}

fn size_of(i: u64) -> usize {
    match i % 50 {
        7 => 300_000, // fragmented: 5 datagrams
        23 => 1_200_000,
        _ if i.is_multiple_of(3) => 2_000,
        _ => 100,
    }
}

/// Receives until `expected` messages from each of `senders`; checks order, exactness and
/// content; then checks that nothing more (no duplicate) arrives for a short while.
async fn collect(
    endpoint: Endpoint,
    senders: Vec<SenderId>,
    expected: u64,
) -> HashMap<SenderId, u64> {
    let mut next: HashMap<SenderId, u64> = senders.iter().map(|s| (*s, 0)).collect();
    while next.values().any(|n| *n < expected) {
        match endpoint.recv().await.expect("endpoint alive") {
            Incoming::Message(r) if r.reliable => {
                let Message::FileTransBlock(b) = &r.message else { panic!("unexpected message") };
                let n = next.get_mut(&r.sender).expect("known sender");
                assert_eq!(
                    b.block,
                    *n,
                    "receiver {} got {}'s #{} out of order",
                    endpoint.id(),
                    r.sender,
                    b.block
                );
                assert_eq!(r.message, msg(r.sender, b.block, b.file as usize), "content differs");
                *n += 1;
            }
            Incoming::Message(_) => {}
            Incoming::Gap { sender, first_missing, .. } => {
                panic!(
                    "receiver {} saw a gap in {sender}'s stream at {first_missing}",
                    endpoint.id()
                )
            }
        }
    }
    // Exactly once: no late duplicate of anything.
    let quiet = tokio::time::timeout(Duration::from_millis(300), async {
        loop {
            if let Incoming::Message(r) = endpoint.recv().await.expect("alive") {
                if r.reliable {
                    return r;
                }
            }
        }
    })
    .await;
    assert!(quiet.is_err(), "extra delivery after the last message: {:?}", quiet.map(|r| r.sender));
    next
}

/// The claim: three endpoints on loopback multicast, 20 % of received datagrams
/// dropped by the seeded fault hook, every sender multicasting concurrently, including
/// fragmented messages of up to 1.2 MB: every message arrives exactly once and in order per
/// sender at every other endpoint, and no gap is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_endpoints_multicast_with_20_percent_loss_deliver_exactly_once_in_order() {
    let name = "three_endpoints_multicast_with_20_percent_loss";
    let per_sender = 150u64;
    tokio::time::timeout(TEST_BOUND, async {
        let ids = [1u64, 2, 3];
        let mut endpoints = Vec::new();
        for id in ids {
            endpoints.push(Endpoint::bind(config(name, id, &ids, 20)).await.expect("bind"));
        }
        let mut receivers = Vec::new();
        for e in &endpoints {
            let others: Vec<SenderId> = ids.iter().copied().filter(|i| *i != e.id()).collect();
            receivers.push(tokio::spawn(collect(e.clone(), others, per_sender)));
        }
        let mut senders = Vec::new();
        for e in &endpoints {
            let e = e.clone();
            senders.push(tokio::spawn(async move {
                for i in 0..per_sender {
                    e.multicast(msg(e.id(), i, size_of(i))).await.expect("multicast");
                }
            }));
        }
        for s in senders {
            s.await.unwrap();
        }
        for e in &endpoints {
            assert!(e.flush(Duration::from_secs(20)).await, "{} never became stable", e.id());
            assert_eq!(e.unstable_datagrams(), 0);
        }
        for r in receivers {
            let counts = r.await.unwrap();
            assert!(counts.values().all(|n| *n == per_sender));
        }
        let stats: Vec<_> = endpoints.iter().map(|e| e.stats()).collect();
        for (e, s) in endpoints.iter().zip(&stats) {
            assert!(s.fault_dropped_receive > 0, "the fault hook did not drop anything");
            assert_eq!(s.core.receiver.gaps, 0);
            assert!(s.core.sender.retransmits > 0 || s.core.receiver.naks_sent > 0);
            e.shutdown().await;
        }
    })
    .await
    .expect("test exceeded its time bound");
}

/// Unicast request/reply over a lossy path (30 % of the server's and client's received
/// datagrams dropped): with bounded retries every request gets the reply to *its* request id,
/// and retries did happen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_reply_survives_drops_with_retries() {
    let name = "request_reply_survives_drops_with_retries";
    tokio::time::timeout(TEST_BOUND, async {
        let server = Endpoint::bind(config(name, 1, &[], 30)).await.unwrap();
        let client = Endpoint::bind(config(name, 1 << 40, &[], 30)).await.unwrap();
        let server_addr = server.local_addr().unwrap();
        let s = server.clone();
        let serving = tokio::spawn(async move {
            loop {
                let Ok(Incoming::Message(r)) = s.recv().await else { return };
                let Some(request) = r.request else { continue };
                let Message::FileTransBlock(mut b) = r.message else { continue };
                b.block += 1_000;
                request.reply(&s, Message::FileTransBlock(b)).await.unwrap();
            }
        });
        // An attempt fails when the request or the reply is dropped: 1 - 0.7² ≈ 0.51. With 25
        // retries a request fails with p ≈ 0.51^26 ≈ 3e-8, so this test does not flake.
        for i in 0..60u64 {
            let reply = client
                .request(server_addr, msg(client.id(), i, 64), Duration::from_millis(20), 25)
                .await
                .expect("a reply within the retries");
            let Message::FileTransBlock(b) = reply else { panic!("wrong reply kind") };
            assert_eq!(b.block, i + 1_000, "a reply to another request");
        }
        assert!(client.stats().request_retries > 0, "30 % loss yet no retry");
        serving.abort();
        server.shutdown().await;
        client.shutdown().await;
    })
    .await
    .expect("test exceeded its time bound");
}

/// A request to an address where nobody answers ends with a timeout error after exactly
/// `retries + 1` attempts, not a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_to_silent_peer_times_out_after_bounded_retries() {
    let name = "request_to_silent_peer_times_out";
    tokio::time::timeout(TEST_BOUND, async {
        let client = Endpoint::bind(config(name, 1 << 41, &[], 0)).await.unwrap();
        // A bound socket that never answers.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = silent.local_addr().unwrap();
        let err = client
            .request(to, msg(1, 0, 10), Duration::from_millis(10), 3)
            .await
            .expect_err("nobody answers");
        assert!(matches!(err, MessagingError::Timeout { attempts: 4 }), "{err}");
        assert_eq!(client.stats().request_retries, 3);
        client.shutdown().await;
    })
    .await
    .expect("test exceeded its time bound");
}

/// Without multicast, the same reliable stream fans out to a configured peer list: three
/// endpoints with a peer list and 10 % loss deliver every message exactly once in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unicast_fallback_fans_out_to_peer_list() {
    let name = "unicast_fallback_fans_out_to_peer_list";
    let per_sender = 100u64;
    tokio::time::timeout(TEST_BOUND, async {
        let ids = [1u64, 2, 3];
        let base = 40_000 + (name_hash(name) % 20_000) as u16;
        let addrs: Vec<SocketAddr> =
            ids.iter().map(|i| SocketAddr::from((Ipv4Addr::LOCALHOST, base + *i as u16))).collect();
        let mut endpoints = Vec::new();
        for (k, id) in ids.iter().enumerate() {
            let mut c = config(name, *id, &ids, 10);
            c.unicast_bind = addrs[k];
            c.peers = Some(addrs.clone());
            endpoints.push(Endpoint::bind(c).await.expect("bind"));
        }
        let mut receivers = Vec::new();
        for e in &endpoints {
            let others: Vec<SenderId> = ids.iter().copied().filter(|i| *i != e.id()).collect();
            receivers.push(tokio::spawn(collect(e.clone(), others, per_sender)));
        }
        for e in &endpoints {
            let e = e.clone();
            tokio::spawn(async move {
                for i in 0..per_sender {
                    e.multicast(msg(e.id(), i, size_of(i) / 4)).await.expect("multicast");
                }
            });
        }
        for r in receivers {
            r.await.unwrap();
        }
        for e in &endpoints {
            e.shutdown().await;
        }
    })
    .await
    .expect("test exceeded its time bound");
}

/// Shutdown is graceful for callers: a pending `recv`, and any later `recv`, `multicast` or
/// `request`, return `Shutdown` instead of hanging or pretending to send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_wakes_pending_calls() {
    let name = "shutdown_wakes_pending_calls";
    tokio::time::timeout(TEST_BOUND, async {
        let e = Endpoint::bind(config(name, 9, &[9], 0)).await.unwrap();
        let waiting = {
            let e = e.clone();
            tokio::spawn(async move { e.recv().await })
        };
        tokio::task::yield_now().await;
        e.shutdown().await;
        let result = waiting.await.unwrap();
        assert!(matches!(result, Err(MessagingError::Shutdown)), "{result:?}");
        assert!(matches!(e.recv().await, Err(MessagingError::Shutdown)));
        assert!(matches!(e.multicast(msg(9, 0, 10)).await, Err(MessagingError::Shutdown)));
        let to = e.local_addr().unwrap();
        let request = e.request(to, msg(9, 1, 10), Duration::from_millis(10), 1).await;
        assert!(matches!(request, Err(MessagingError::Shutdown)));
    })
    .await
    .expect("test exceeded its time bound");
}

/// A receiver that joins a long-running stream over real sockets starts at the sender's
/// current position: it gets the messages sent after it joined, in order, and no gap and none
/// of the history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_joiner_starts_at_current_position() {
    let name = "late_joiner_starts_at_current_position";
    tokio::time::timeout(TEST_BOUND, async {
        let sender = Endpoint::bind(config(name, 1, &[1, 2], 0)).await.unwrap();
        let member = Endpoint::bind(config(name, 2, &[1, 2], 0)).await.unwrap();
        // History longer than the join backfill (one datagram per 9 000-byte message).
        let history = 1_100u64;
        let consumer = tokio::spawn(collect_quietly(member.clone(), 1, history));
        for i in 0..history {
            sender.multicast(msg(1, i, 9_000)).await.unwrap();
        }
        consumer.await.unwrap();
        assert!(sender.flush(Duration::from_secs(20)).await);
        let late = Endpoint::bind(config(name, 3, &[1, 2], 0)).await.unwrap();
        // Let the late joiner hear the sender's status keepalive (sent every second).
        let first = tokio::time::timeout(Duration::from_secs(5), async {
            sender.multicast(msg(1, history, 100)).await.unwrap();
            loop {
                if let Incoming::Message(r) = late.recv().await.unwrap() {
                    return r;
                }
            }
        })
        .await
        .expect("the late joiner heard nothing");
        let Message::FileTransBlock(b) = &first.message else { panic!("unexpected message") };
        assert_eq!(b.block, history, "the late joiner did not start at the current position");
        for i in history + 1..history + 50 {
            sender.multicast(msg(1, i, 100)).await.unwrap();
        }
        for i in history + 1..history + 50 {
            match late.recv().await.unwrap() {
                Incoming::Message(r) => {
                    let Message::FileTransBlock(b) = &r.message else { panic!("unexpected") };
                    assert_eq!(b.block, i);
                }
                gap => panic!("unexpected {gap:?}"),
            }
        }
        for e in [&sender, &member, &late] {
            e.shutdown().await;
        }
    })
    .await
    .expect("test exceeded its time bound");
}

/// Receives `expected` reliable messages from `sender` (any content checks are elsewhere).
async fn collect_quietly(endpoint: Endpoint, sender: SenderId, expected: u64) {
    let mut got = 0;
    while got < expected {
        if let Incoming::Message(r) = endpoint.recv().await.unwrap() {
            if r.reliable && r.sender == sender {
                got += 1;
            }
        }
    }
}

/// A reply of 1.5 MB (25 fragments) crosses a path dropping 5 % of the requester's received
/// datagrams: retries fill in the lost fragments and the reply arrives whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_reply_is_fragmented_and_completed_by_retries() {
    let name = "large_reply_is_fragmented_and_completed_by_retries";
    tokio::time::timeout(TEST_BOUND, async {
        let server = Endpoint::bind(config(name, 1, &[], 0)).await.unwrap();
        let client = Endpoint::bind(config(name, 1 << 42, &[], 5)).await.unwrap();
        let to = server.local_addr().unwrap();
        let s = server.clone();
        let serving = tokio::spawn(async move {
            while let Ok(Incoming::Message(r)) = s.recv().await {
                if let (Some(request), Message::FileTransBlock(b)) = (r.request, &r.message) {
                    let reply = msg(1, b.block, 1_500_000);
                    request.reply(&s, reply).await.unwrap();
                }
            }
        });
        for i in 0..3 {
            let reply = client
                .request(to, msg(client.id(), i, 10), Duration::from_millis(500), 30)
                .await
                .expect("the large reply completes");
            assert_eq!(reply, msg(1, i, 1_500_000));
        }
        serving.abort();
        server.shutdown().await;
        client.shutdown().await;
    })
    .await
    .expect("test exceeded its time bound");
}
