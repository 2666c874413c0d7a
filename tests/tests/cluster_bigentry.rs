//! Real `shoal-fs` processes: catch-up of entries bigger than one unicast datagram. Catch-up
//! chunks go to one node by unicast; a chunk holding one entry of hundreds of KB does not fit
//! a datagram and must travel as a fragmented, acknowledged request (fs-node/src/node/mod.rs,
//! "Limits"), else a follower that missed it could never catch up.

use bytes::Bytes;
use protocol::Zxid;
use shoal_tests::cluster::{get_at, Cluster};
use std::time::Duration;

const ELECTION_WAIT: Duration = Duration::from_secs(20);
/// How long the restarted follower gets to serve every value.
const CATCH_UP_WAIT: Duration = Duration::from_secs(30);
/// Sizes of the big values written while the follower is down: all over one datagram.
const BIG_VALUE_BYTES: [usize; 4] = [200_000, 450_000, 700_000, 1_000_000];
/// Small writes made before the kill, by [`FILLER_WRITERS`] clients each: they age the
/// master's multicast stream past the messaging layer's join backfill (1024 datagrams), so the
/// restarted follower joins that stream late and cannot get the big proposals by multicast
/// repair; it must get them by catch-up (`Sync` to it alone), the path under test.
const FILLER_WRITES: usize = 400;
const FILLER_WRITERS: usize = 4;
/// Seed of the value contents (deterministic, distinct per key).
const SEED: u64 = 0x5eed_b16e;

/// `len` pseudo-random bytes from `seed` (a 64-bit LCG), so a wrong or shifted fragment
/// shows as a mismatch.
fn pattern(seed: u64, len: usize) -> Bytes {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (x >> 56) as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

/// Claim: a follower SIGKILLed while values of 200 KB–1 MB (and small ones) are written
/// catches up after its restart and serves every one of them byte-identical from its own
/// state (read from that node only, at the zxid of the last write).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_follower_catches_up_entries_over_one_datagram() {
    let mut cluster = Cluster::start(3);
    let client = cluster.client().await;
    let Some(master) = cluster.wait_master(&client, ELECTION_WAIT).await else {
        panic!("no master elected\n{}", cluster.logs())
    };
    let follower = cluster.ids().into_iter().find(|id| *id != master).expect("a follower");
    let mut fillers = Vec::new();
    for w in 0..FILLER_WRITERS {
        let client = cluster.client().await;
        fillers.push(tokio::spawn(async move {
            for i in 0..FILLER_WRITES {
                let key = format!("/f{w}-{i}");
                client
                    .write(&key, Bytes::from(key.clone()))
                    .await
                    .map_err(|e| format!("{key}: {e}"))?;
            }
            Ok::<(), String>(())
        }));
    }
    for f in fillers {
        f.await
            .expect("filler task")
            .unwrap_or_else(|e| panic!("filler write {e}\n{}", cluster.logs()));
    }
    client.write("/before", Bytes::from_static(b"before")).await.expect("write before");
    cluster.kill(follower);

    let mut written: Vec<(String, Bytes)> = vec![("/before".into(), Bytes::from_static(b"before"))];
    for (i, len) in BIG_VALUE_BYTES.iter().enumerate() {
        let big = (format!("/big{i}"), pattern(SEED + i as u64, *len));
        let small = (format!("/small{i}"), Bytes::from(format!("small {i}")));
        for (key, value) in [big, small] {
            client
                .write(&key, value.clone())
                .await
                .unwrap_or_else(|e| panic!("write {key}: {e}\n{}", cluster.logs()));
            written.push((key, value));
        }
    }
    let last = client.write("/last", Bytes::from_static(b"last")).await.expect("write last");
    written.push(("/last".into(), Bytes::from_static(b"last")));

    cluster.spawn(follower);
    let transport = cluster.transport().await;
    let address = cluster.address(follower);
    let deadline = tokio::time::Instant::now() + CATCH_UP_WAIT;
    for (key, value) in &written {
        // The node answers `Behind` (an error here) until it has applied `last`.
        let got = loop {
            match get_at(&transport, &address, key, last).await {
                Ok(got) => break got,
                Err(e) if tokio::time::Instant::now() >= deadline => panic!(
                    "restarted node {follower} did not serve {key} at {last} within \
                     {CATCH_UP_WAIT:?}: {e}\n{}",
                    cluster.logs()
                ),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        let got = got.unwrap_or_else(|| panic!("restarted node {follower}: {key} not found"));
        // Not assert_eq: a mismatch would print a megabyte.
        assert!(
            got.value == *value,
            "restarted node {follower}: {key} differs ({} bytes, expected {})",
            got.value.len(),
            value.len()
        );
    }
    assert!(last > Zxid::ZERO);
}
