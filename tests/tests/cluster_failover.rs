//! Real `shoal-fs` processes under faults: SIGKILL of the master during a write load, and a
//! killed node's restart.

use bytes::Bytes;
use protocol::Zxid;
use shoal_tests::cluster::{get_at, Cluster};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ELECTION_WAIT: Duration = Duration::from_secs(20);
/// Writers run this long in all; the master is killed part-way.
const LOAD_MS: u64 = 2_000;
const KILL_AFTER_MS: u64 = 700;
const WRITERS: usize = 4;

/// An acknowledged write: key, value, its zxid, whether it was issued after the kill.
type Acked = (String, Bytes, Zxid, bool);

/// Claim: after SIGKILL of the master in the middle of a write load, every write the cluster
/// acknowledged is readable with the value written, writes are acknowledged again by a new
/// master, and the killed node, restarted, rejoins and serves all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_kill_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start(3);
    let client = cluster.client().await;
    let master = cluster.wait_master(&client, ELECTION_WAIT).await;
    let Some(master) = master else { panic!("no master elected\n{}", cluster.logs()) };

    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let killed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let deadline = tokio::time::Instant::now() + Duration::from_millis(LOAD_MS);
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let client = cluster.client().await;
        let (acked, killed) = (acked.clone(), killed.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while tokio::time::Instant::now() < deadline {
                i += 1;
                let key = format!("/w{w}-{i}");
                let value = Bytes::from(format!("value {w} {i}"));
                let after_kill = killed.load(std::sync::atomic::Ordering::SeqCst);
                if let Ok(zxid) = client.write(&key, value.clone()).await {
                    acked.lock().unwrap().push((key, value, zxid, after_kill));
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(KILL_AFTER_MS)).await;
    killed.store(true, std::sync::atomic::Ordering::SeqCst);
    cluster.kill(master);
    for t in tasks {
        t.await.expect("writer task");
    }
    let acked = acked.lock().unwrap().clone();
    let before = acked.iter().filter(|a| !a.3).count();
    assert!(before > 0, "no write acknowledged before the kill\n{}", cluster.logs());

    // Writes resume on a new master (bounded wait; the load may have ended mid-election).
    let mut resumed = acked.iter().filter(|a| a.3).count();
    let resume_deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut n = 0;
    while resumed == 0 && tokio::time::Instant::now() < resume_deadline {
        n += 1;
        if client.write(&format!("/resume-{n}"), Bytes::from_static(b"r")).await.is_ok() {
            resumed += 1;
        }
    }
    assert!(resumed > 0, "no write acknowledged after the master was killed\n{}", cluster.logs());

    // Every acknowledged write is readable (linearizable: through the new master).
    let reader = cluster.client().await;
    let mut top = Zxid::ZERO;
    for (key, value, zxid, _) in &acked {
        let got = reader
            .read_with(key, cache_client::ReadOptions::linearizable())
            .await
            .unwrap_or_else(|e| panic!("reading {key}: {e}\n{}", cluster.logs()));
        let got = got.unwrap_or_else(|| panic!("acknowledged {key} at {zxid} is lost"));
        assert_eq!(&got.value, value, "{key}");
        top = top.max(*zxid);
    }

    // The killed master restarts, rejoins as a follower and serves everything acknowledged.
    cluster.spawn(master);
    let transport = cluster.transport().await;
    let address = cluster.address(master);
    for (key, value, _, _) in &acked {
        let mut got = Err(String::new());
        for _ in 0..20 {
            got = get_at(&transport, &address, key, top).await;
            if got.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let got = got.unwrap_or_else(|e| panic!("restarted node, {key}: {e}\n{}", cluster.logs()));
        assert_eq!(got.map(|v| v.value).as_ref(), Some(value), "restarted node, {key}");
    }
    eprintln!("acknowledged {} writes ({before} before the kill)", acked.len());
}

/// Claim: a follower killed while writes continue catches up on restart: it serves every
/// write made while it was down, and later writes too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_follower_catches_up() {
    let mut cluster = Cluster::start(3);
    let client = cluster.client().await;
    let Some(master) = cluster.wait_master(&client, ELECTION_WAIT).await else {
        panic!("no master elected\n{}", cluster.logs())
    };
    let follower = cluster.ids().into_iter().find(|id| *id != master).expect("a follower");
    for i in 0..50 {
        client.write(&format!("/a{i}"), Bytes::from(format!("a{i}"))).await.expect("write");
    }
    cluster.kill(follower);
    for i in 0..50 {
        client.write(&format!("/b{i}"), Bytes::from(format!("b{i}"))).await.expect("write");
    }
    cluster.spawn(follower);
    let last = client.write("/c", Bytes::from_static(b"c")).await.expect("write after restart");
    let transport = cluster.transport().await;
    let address = cluster.address(follower);
    let keys = (0..50)
        .map(|i| (format!("/a{i}"), format!("a{i}")))
        .chain((0..50).map(|i| (format!("/b{i}"), format!("b{i}"))))
        .chain(std::iter::once(("/c".to_string(), "c".to_string())));
    for (key, value) in keys {
        let mut got = Err(String::new());
        for _ in 0..20 {
            got = get_at(&transport, &address, &key, last).await;
            if got.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let got = got.unwrap_or_else(|e| panic!("{key}: {e}\n{}", cluster.logs()));
        assert_eq!(got.map(|v| v.value), Some(Bytes::from(value)), "{key}");
    }
}
