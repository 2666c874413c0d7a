//! Three real `shoal-fs` processes on loopback multicast: they elect a master, a client's
//! write commits and reads back through the library, and a second client's cache learns of an
//! overwrite from the Update stream.

use bytes::Bytes;
use shoal_tests::cluster::Cluster;
use std::time::Duration;

/// Bound on election at start (generous: two cores shared with other builds).
const ELECTION_WAIT: Duration = Duration::from_secs(20);

/// Claim: three nodes elect one master; a write acknowledged by the cluster is read back by
/// the writer and by another client; after an overwrite, the other client's cached copy is
/// replaced by the Update stream (its next read shows the new value, served from its cache).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_commit_and_stream_updates() {
    let cluster = Cluster::start(3);
    let writer = cluster.client().await;
    let master = cluster.wait_master(&writer, ELECTION_WAIT).await;
    assert!(master.is_some(), "no master elected\n{}", cluster.logs());

    let zxid = writer.write("/hello", Bytes::from_static(b"world")).await;
    let zxid = zxid.unwrap_or_else(|e| panic!("write failed: {e}\n{}", cluster.logs()));
    let got = writer.read("/hello").await.expect("read").expect("present");
    assert_eq!(got.value, Bytes::from_static(b"world"));
    assert_eq!(got.zxid, zxid);

    // A new client has no floor, so a follower that has not applied the write yet may answer
    // "absent" (sequential consistency allows it); the write must become visible, bounded.
    let reader = cluster.client().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let seen = loop {
        match reader.read("/hello").await.expect("read") {
            Some(seen) => break seen,
            None if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            None => panic!("the write never became visible to a second client\n{}", cluster.logs()),
        }
    };
    assert_eq!(seen.value, Bytes::from_static(b"world"));

    let second = writer.write("/hello", Bytes::from_static(b"again")).await.expect("overwrite");
    // The reader's cache holds the old value; the UpdateNotice must replace it. Wait (bounded)
    // for the notice to arrive and be applied, then read: the cache answers with the new value.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut fresh = None;
    while tokio::time::Instant::now() < deadline {
        reader.pump();
        let hits_before = reader.cache_stats().hits;
        let v = reader.read("/hello").await.expect("read").expect("present");
        if v.zxid == second && reader.cache_stats().hits > hits_before {
            fresh = Some(v);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fresh = fresh.unwrap_or_else(|| {
        panic!("the reader's cache never served the overwrite\n{}", cluster.logs())
    });
    assert_eq!(fresh.value, Bytes::from_static(b"again"));
}
