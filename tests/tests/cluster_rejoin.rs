//! Real `shoal-fs` processes with snapshots and log retention: a wiped node rejoins a loaded
//! cluster by file transfer, and backups (to another node, to a directory) restore into a
//! node that then serves identical data.
//!
//! The nodes take a snapshot every few hundred entries and keep little log behind it, so that
//! a node with nothing (wiped) is below every peer's log start and can only come back through a
//! transfer of a peer's snapshot.

use bytes::Bytes;
use cache_client::net::SocketTransport;
use cache_client::Transport;
use fs_node::storage::{backup, RealFs};
use protocol::message::data::{DirEntry, ReadOp, ReadReply, ReadRequest, ReadValue};
use protocol::message::transfer::{Backup, BackupTarget};
use protocol::message::Message;
use protocol::{NodeId, Zxid};
use shoal_tests::cluster::{binary, get_at, Cluster};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ELECTION_WAIT: Duration = Duration::from_secs(20);
/// Snapshot often, keep a short log behind it, in small segments (so retention has whole
/// segments to drop): the point is to make file transfer the only way back.
const NODE_FLAGS: [&str; 6] =
    ["--snapshot-entries", "300", "--log-segment-bytes", "65536", "--log-retention-entries", "100"];
const WRITERS: usize = 4;
const VALUE_BYTES: usize = 512;
/// Writes acknowledged before node 3 goes, and while it is away.
const WRITES_BEFORE_STOP: usize = 900;
const WRITES_WHILE_AWAY: usize = 600;
/// Bound of every wait below (the whole test stays well under a minute).
const WAIT: Duration = Duration::from_secs(30);

type Acked = Arc<Mutex<Vec<(String, Bytes, Zxid)>>>;

/// A three-node cluster with [`NODE_FLAGS`] and a transfer pace of 256 KiB/s, slow enough that
/// a transfer of [`write_padded`]'s megabyte lasts seconds (time to kill one side of it), and a
/// client once a master is elected.
async fn slow_transfer_cluster() -> (Cluster, cache_client::Client<SocketTransport>) {
    let mut flags: Vec<&str> = NODE_FLAGS.to_vec();
    flags.extend(["--transfer-rate-bytes-per-s", "262144"]);
    let cluster = Cluster::start_with(3, &flags);
    let client = cluster.client().await;
    let Some(_) = cluster.wait_master(&client, ELECTION_WAIT).await else {
        panic!("no master elected\n{}", cluster.logs())
    };
    (cluster, client)
}

/// Writes `count` keys `<prefix><i>` of about 2 KiB each, one after another; returns them
/// with their zxids.
async fn write_padded(
    client: &cache_client::Client<SocketTransport>,
    prefix: &str,
    count: usize,
) -> Vec<(String, Bytes, Zxid)> {
    let pad = "p".repeat(2048);
    let mut acked = Vec::with_capacity(count);
    for i in 0..count {
        let key = format!("{prefix}{i}");
        let value = Bytes::from(format!("{key}:{pad}"));
        let zxid = client.write(&key, value.clone()).await.expect("write");
        acked.push((key, value, zxid));
    }
    acked
}

/// Writers that run until `stop`, recording every acknowledged write.
async fn start_writers(
    cluster: &Cluster,
    acked: Acked,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let client = cluster.client().await;
        let (acked, stop) = (acked.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let key = format!("/w{w}-{i}");
                let value = Bytes::from(format!("{key}:{}", "v".repeat(VALUE_BYTES)));
                if let Ok(zxid) = client.write(&key, value.clone()).await {
                    acked.lock().unwrap().push((key, value, zxid));
                }
            }
        }));
    }
    tasks
}

/// Writes `key`, retrying through an election (bounded by [`WAIT`]).
async fn write_retrying(
    client: &cache_client::Client<SocketTransport>,
    key: &str,
    value: Bytes,
    cluster: &Cluster,
) -> Zxid {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match client.write(key, value.clone()).await {
            Ok(zxid) => return zxid,
            Err(e) if tokio::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("write of {key} failed: {e}\n{}", cluster.logs()),
        }
    }
}

async fn wait_acked(acked: &Acked, at_least: usize, cluster: &Cluster) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while acked.lock().unwrap().len() < at_least {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} writes acknowledged\n{}",
            acked.lock().unwrap().len(),
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Lists `dir` on the node at `address` only, once it has applied `floor`.
async fn list_at(
    transport: &SocketTransport,
    address: &str,
    dir: &str,
    floor: Zxid,
) -> Result<Vec<DirEntry>, String> {
    let request = ReadRequest { floor, linearizable: false, op: ReadOp::List { dir: dir.into() } };
    let reply = transport
        .request(address, Message::Request(request), Duration::from_secs(2))
        .await
        .map_err(|e| e.to_string())?;
    match reply {
        Message::ReadReply(ReadReply { result: Ok(ReadValue::List(v)), .. }) => Ok(v),
        other => Err(format!("{other:?}")),
    }
}

/// Waits until node `id` answers a listing at `floor`, then checks that every node lists the
/// same root and holds every acknowledged write with its value.
async fn assert_identical(cluster: &Cluster, acked: &[(String, Bytes, Zxid)], floor: Zxid) {
    let transport = cluster.transport().await;
    let mut listings = Vec::new();
    for id in cluster.ids() {
        let deadline = tokio::time::Instant::now() + WAIT;
        let listing = loop {
            match list_at(&transport, &cluster.address(id), "/", floor).await {
                Ok(l) => break l,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("node {id} cannot list at {floor}: {e}\n{}", cluster.logs()),
            }
        };
        listings.push((id, listing));
    }
    let (first, reference) = &listings[0];
    for (id, listing) in &listings[1..] {
        assert_eq!(
            listing.len(),
            reference.len(),
            "node {id} lists {} keys, node {first} {}",
            listing.len(),
            reference.len()
        );
        assert!(listing == reference, "node {id} and node {first} list different entries");
    }
    for id in cluster.ids() {
        for (key, value, zxid) in acked {
            let got = get_at(&transport, &cluster.address(id), key, floor)
                .await
                .unwrap_or_else(|e| panic!("node {id} cannot read {key}: {e}"));
            let got = got.unwrap_or_else(|| panic!("node {id} lost acknowledged {key} ({zxid})"));
            assert_eq!(&got.value, value, "node {id} holds another value for {key}");
            assert_eq!(got.zxid, *zxid, "node {id} holds {key} at another zxid");
        }
    }
}

/// Whether some snapshot on node `id` released log segments.
fn released_log(cluster: &Cluster, id: NodeId) -> bool {
    cluster.node_log(id).lines().any(|l| {
        l.contains("snapshot done")
            && l.contains("log_segments_released=")
            && !l.contains("log_segments_released=0")
    })
}

/// Claim: a node whose data directory is wiped while the cluster keeps writing comes back by
/// file transfer of a peer's snapshot (the peers' logs no longer reach back to zero), catches
/// up from the log after it, and ends with exactly the data of the other nodes; no
/// acknowledged write is lost, before, during or after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_node_rejoins_by_file_transfer_under_load() {
    let mut cluster = Cluster::start_with(3, &NODE_FLAGS);
    let client = cluster.client().await;
    let Some(_) = cluster.wait_master(&client, ELECTION_WAIT).await else {
        panic!("no master elected\n{}", cluster.logs())
    };
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers = start_writers(&cluster, acked.clone(), stop.clone()).await;

    wait_acked(&acked, WRITES_BEFORE_STOP, &cluster).await;
    cluster.stop(3);
    std::fs::remove_dir_all(cluster.data_dir(3)).expect("wipe node 3");
    let away_from = acked.lock().unwrap().len();
    wait_acked(&acked, away_from + WRITES_WHILE_AWAY, &cluster).await;
    assert!(
        released_log(&cluster, 1) || released_log(&cluster, 2),
        "no peer released its log below a snapshot\n{}",
        cluster.logs()
    );
    cluster.spawn(3);

    // Node 3 fetches a snapshot while the load goes on.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cluster.node_log(3).contains("fetched the data files") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node 3 did not fetch the data files\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after_join = acked.lock().unwrap().len();
    wait_acked(&acked, after_join + 200, &cluster).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }

    let log3 = cluster.node_log(3);
    assert!(log3.contains("receiver: transfer installed"), "no transfer on node 3\n{log3}");
    assert!(log3.contains("store rebuilt from the snapshot"), "node 3 did not restart\n{log3}");
    let acked = acked.lock().unwrap().clone();
    let floor = acked.iter().map(|a| a.2).max().expect("writes");
    assert_identical(&cluster, &acked, floor).await;
}

/// Sends `Backup` to node `donor` and waits for its status to say how it ended.
async fn backup_via(cluster: &Cluster, donor: NodeId, target: BackupTarget) -> String {
    let transport = cluster.transport().await;
    let reply = transport
        .request(
            &cluster.address(donor),
            Message::Backup(Backup { target: target.clone() }),
            Duration::from_secs(5),
        )
        .await
        .expect("backup answered");
    match reply {
        Message::ReadReply(ReadReply { result: Ok(ReadValue::Bool(true)), .. }) => {}
        other => panic!("backup {target:?} refused: {other:?}"),
    }
    transfer_end(cluster, donor).await
}

/// Polls node `id`'s status until its transfer column says how the transfer ended.
async fn transfer_end(cluster: &Cluster, id: NodeId) -> String {
    let client = cluster.client().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = client.status_of(&cluster.address(id)).await.expect("status");
        if let Some(t) =
            status.transfer.filter(|t| t.starts_with("done:") || t.starts_with("failed:"))
        {
            return t;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the transfer on node {id} did not end\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn only_entry(dir: &Path) -> PathBuf {
    let entries: Vec<PathBuf> =
        std::fs::read_dir(dir).expect("list").map(|e| e.expect("entry").path()).collect();
    assert_eq!(entries.len(), 1, "expected one backup in {}: {entries:?}", dir.display());
    entries[0].clone()
}

/// Claim: `Backup` to another node and to a directory both produce a backup that `verify`
/// accepts; `shoal-fs restore` installs one into an empty data directory, and a node started
/// on it rejoins the cluster and serves every acknowledged write, including those made after
/// the backup. A restore into a non-empty directory is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_to_node_and_directory_restore_into_a_node() {
    let mut cluster = Cluster::start_with(3, &NODE_FLAGS);
    let client = cluster.client().await;
    let Some(_) = cluster.wait_master(&client, ELECTION_WAIT).await else {
        panic!("no master elected\n{}", cluster.logs())
    };
    let mut acked = Vec::new();
    for i in 0..400 {
        let key = format!("/b{i}");
        let value = Bytes::from(format!("{key}:{}", "b".repeat(VALUE_BYTES)));
        let zxid = client.write(&key, value.clone()).await.expect("write");
        acked.push((key, value, zxid));
    }

    let ended = backup_via(&cluster, 1, BackupTarget::Node(2)).await;
    assert!(ended.starts_with("done: backup to node 2"), "donor status: {ended}");
    let received = only_entry(&cluster.data_dir(2).join("backups"));
    let manifest = backup::verify(&RealFs, &received).expect("the pushed backup verifies");
    assert!(manifest.zxid >= acked.last().unwrap().2 .0, "backup older than the writes before it");
    assert!(manifest.files.iter().any(|f| f.name == "tables"), "backup without the tables");
    let ended = transfer_end(&cluster, 2).await;
    assert!(ended.starts_with("done: backup from node 1"), "receiver status: {ended}");

    let dir_backup = cluster.dir.path().join("dir-backup");
    let ended =
        backup_via(&cluster, 1, BackupTarget::Directory(dir_backup.display().to_string())).await;
    assert!(ended.starts_with("done: backup to"), "donor status: {ended}");
    backup::verify(&RealFs, &dir_backup).expect("the directory backup verifies");

    // Restore node 3 from the pushed backup; a non-empty directory is refused first.
    cluster.stop(3);
    let restore = |from: &Path, to: &Path| {
        std::process::Command::new(binary("shoal-fs"))
            .args(["restore", "--from"])
            .arg(from)
            .arg("--data-dir")
            .arg(to)
            .output()
            .expect("run shoal-fs restore")
    };
    let refused = restore(&received, &cluster.data_dir(3));
    assert!(!refused.status.success(), "restore into a used data directory must be refused");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not empty"));
    std::fs::remove_dir_all(cluster.data_dir(3)).expect("wipe node 3");
    let restored = restore(&received, &cluster.data_dir(3));
    assert!(
        restored.status.success(),
        "restore failed: {}",
        String::from_utf8_lossy(&restored.stderr)
    );

    for i in 0..100 {
        let key = format!("/after{i}");
        let value = Bytes::from(format!("{key}:{}", "a".repeat(VALUE_BYTES)));
        let zxid = client.write(&key, value.clone()).await.expect("write");
        acked.push((key, value, zxid));
    }
    cluster.spawn(3);
    let floor = acked.last().unwrap().2;
    assert_identical(&cluster, &acked, floor).await;
    let log3 = cluster.node_log(3);
    assert!(log3.contains("store rebuilt from the snapshot"), "node 3 ignored the restore\n{log3}");

    // The directory backup restores a node just as well (node 2 this time).
    cluster.stop(2);
    std::fs::remove_dir_all(cluster.data_dir(2)).expect("wipe node 2");
    let restored = restore(&dir_backup, &cluster.data_dir(2));
    assert!(
        restored.status.success(),
        "restore failed: {}",
        String::from_utf8_lossy(&restored.stderr)
    );
    for i in 0..50 {
        let key = format!("/later{i}");
        let value = Bytes::from(format!("{key}:{}", "l".repeat(VALUE_BYTES)));
        let zxid = write_retrying(&client, &key, value.clone(), &cluster).await;
        acked.push((key, value, zxid));
    }
    cluster.spawn(2);
    let floor = acked.last().unwrap().2;
    assert_identical(&cluster, &acked, floor).await;
    let log2 = cluster.node_log(2);
    assert!(log2.contains("store rebuilt from the snapshot"), "node 2 ignored the restore\n{log2}");
}

/// Claim: a backup asked of a follower that is behind holds every write acknowledged before
/// the Backup was sent: the follower first learns the master's linearizable zxid and applies
/// that far. Before, it snapshotted whatever it had applied (seen first in CI as
/// "backup older than the writes before it").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_on_a_lagging_follower_holds_every_acknowledged_write() {
    // Long enough timeouts that a paused follower does not start an election when resumed.
    let flags: Vec<&str> = NODE_FLAGS
        .iter()
        .copied()
        .chain(["--election-timeout-ms", "4000", "--lease-ms", "2000"])
        .collect();
    let cluster = Cluster::start_with(3, &flags);
    let client = cluster.client().await;
    let Some(master) = cluster.wait_master(&client, ELECTION_WAIT).await else {
        panic!("no master elected\n{}", cluster.logs())
    };
    let follower = cluster.ids().into_iter().find(|&id| id != master).expect("a follower");

    cluster.pause(follower);
    let mut last = Zxid::ZERO;
    for i in 0..200 {
        let key = format!("/lag{i}");
        let value = Bytes::from(format!("{key}:{}", "l".repeat(VALUE_BYTES)));
        last = client.write(&key, value).await.expect("write");
    }
    // The Backup waits in the stalled follower's socket behind the replication it missed.
    let dir = cluster.dir.path().join("lagging-backup");
    let transport = cluster.transport().await;
    let backup =
        Message::Backup(Backup { target: BackupTarget::Directory(dir.display().to_string()) });
    let address = cluster.address(follower);
    let asked =
        tokio::spawn(
            async move { transport.request(&address, backup, Duration::from_secs(10)).await },
        );
    tokio::time::sleep(Duration::from_millis(200)).await;
    cluster.resume(follower);
    match asked.await.expect("backup task") {
        Ok(Message::ReadReply(ReadReply { result: Ok(ReadValue::Bool(true)), .. })) => {}
        other => panic!("backup refused: {other:?}\n{}", cluster.logs()),
    }
    let ended = transfer_end(&cluster, follower).await;
    assert!(ended.starts_with("done: backup to"), "donor status: {ended}");
    let manifest = backup::verify(&RealFs, &dir).expect("the backup verifies");
    assert!(
        manifest.zxid >= last.0,
        "the backup on node {follower} is at {}, older than the write acknowledged at {last}",
        Zxid(manifest.zxid)
    );
}

/// Claim: a donor killed in the middle of a transfer leaves the receiver with nothing half
/// installed; the receiver starts over with another member as donor and ends with the same
/// data as the others, while writes go on and none acknowledged is lost (the killed donor,
/// restarted, holds the same data too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn donor_killed_mid_transfer_receiver_starts_over_with_another() {
    // A slow pace makes the transfer last long enough to kill its donor part-way.
    let (mut cluster, client) = slow_transfer_cluster().await;
    // About 1 MB of values, so the transfer takes a few seconds at that pace.
    let mut acked = write_padded(&client, "/d", 500).await;
    cluster.stop(3);
    std::fs::remove_dir_all(cluster.data_dir(3)).expect("wipe node 3");
    acked.extend(write_padded(&client, "/e", 50).await);
    cluster.spawn(3);

    // Find the donor of the first transfer once blocks flow, and kill it.
    let deadline = tokio::time::Instant::now() + WAIT;
    let donor: NodeId = loop {
        let log = cluster.node_log(3);
        let started = log.lines().find(|l| l.contains("receiver: transfer started"));
        let flowing = client
            .status_of(&cluster.address(3))
            .await
            .ok()
            .and_then(|s| s.transfer)
            .is_some_and(|t| t.starts_with("transfer "));
        if let (Some(line), true) = (started, flowing) {
            let id = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("donor="))
                .and_then(|d| d.parse().ok())
                .expect("donor in the log line");
            break id;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no transfer started on node 3\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    cluster.kill(donor);

    // The receiver gives that donor up and fetches from the other member.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(45);
    while !cluster.node_log(3).contains("fetched the data files") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node 3 never completed a fetch\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log3 = cluster.node_log(3);
    assert!(
        log3.contains("fetching the data files failed"),
        "the first fetch did not fail\n{log3}"
    );
    let survivor = cluster.ids().into_iter().find(|i| *i != donor && *i != 3).unwrap();
    assert!(
        log3.lines()
            .any(|l| l.contains("fetched the data files")
                && l.contains(&format!("donor={survivor}"))),
        "node 3 did not finish with node {survivor}\n{log3}"
    );
    // Writes go on with the survivor and node 3; then the killed donor comes back.
    let client = cluster.client().await;
    let big = "d".repeat(2048);
    for i in 0..50 {
        let key = format!("/f{i}");
        let value = Bytes::from(format!("{key}:{big}"));
        let zxid = write_retrying(&client, &key, value.clone(), &cluster).await;
        acked.push((key, value, zxid));
    }
    cluster.spawn(donor);
    let floor = acked.iter().map(|a| a.2).max().expect("writes");
    assert_identical(&cluster, &acked, floor).await;
}

/// Figure for BENCHMARKS.md ("File transfer"): time for a wiped node to rejoin a cluster that
/// holds `SHOAL_REJOIN_MB` MiB (default 256) of values while a small write load runs. Run with
/// `SHOAL_REJOIN_MB=1024 cargo test --release -p shoal-tests --test cluster_rejoin -- --ignored
/// --nocapture rejoin_time`. Prints the figures; asserts only that the data is identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: minutes and gigabytes; run by hand"]
async fn rejoin_time() {
    let mib: usize =
        std::env::var("SHOAL_REJOIN_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    let flags = [
        "--snapshot-entries",
        "1000000",
        "--snapshot-log-bytes",
        "67108864",
        "--log-segment-bytes",
        "8388608",
        "--log-retention-entries",
        "64",
        "--transfer-rate-bytes-per-s",
        "536870912",
    ];
    let mut cluster = Cluster::start_with(3, &flags);
    let client = cluster.client().await;
    let Some(_) = cluster.wait_master(&client, ELECTION_WAIT).await else {
        panic!("no master elected\n{}", cluster.logs())
    };
    // Fill: 1 MiB values from 4 writers.
    let filled = std::time::Instant::now();
    let mut fill = Vec::new();
    for w in 0..4 {
        let client = cluster.client().await;
        fill.push(tokio::spawn(async move {
            let value = Bytes::from(vec![b'a' + w as u8; 1 << 20]);
            let mut i = w;
            while i < mib {
                let key = format!("/big{i}");
                loop {
                    if client.write(&key, value.clone()).await.is_ok() {
                        break;
                    }
                }
                i += 4;
            }
        }));
    }
    for f in fill {
        f.await.expect("fill");
    }
    let fill_s = filled.elapsed().as_secs_f64();
    println!("filled {mib} MiB in {fill_s:.1} s ({:.1} MiB/s)", mib as f64 / fill_s);

    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers = start_writers(&cluster, acked.clone(), stop.clone()).await;
    wait_acked(&acked, 200, &cluster).await;
    cluster.stop(3);
    std::fs::remove_dir_all(cluster.data_dir(3)).expect("wipe node 3");
    let away = acked.lock().unwrap().len();
    wait_acked(&acked, away + 200, &cluster).await;

    let spawned = std::time::Instant::now();
    cluster.spawn(3);
    let transport = cluster.transport().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    let mut fetched_s = None;
    let caught_up_s = loop {
        if fetched_s.is_none() && cluster.node_log(3).contains("fetched the data files") {
            fetched_s = Some(spawned.elapsed().as_secs_f64());
        }
        let (key, _, zxid) = acked.lock().unwrap().last().cloned().expect("writes");
        if fetched_s.is_some()
            && get_at(&transport, &cluster.address(3), &key, zxid).await.is_ok_and(|v| v.is_some())
        {
            break spawned.elapsed().as_secs_f64();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node 3 did not rejoin\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let writes_during = acked.lock().unwrap().len() - away;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    let log3 = cluster.node_log(3);
    let line = log3.lines().find(|l| l.contains("receiver: transfer started")).unwrap_or("");
    let bytes: u64 = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("bytes="))
        .and_then(|b| b.parse().ok())
        .unwrap_or(0);
    let fetched_s = fetched_s.expect("fetched");
    println!(
        "rejoin: data set {:.0} MiB; fetched and verified after {fetched_s:.1} s ({:.1} MiB/s); \
         serving the latest write after {caught_up_s:.1} s; {writes_during} writes acknowledged \
         meanwhile",
        bytes as f64 / (1 << 20) as f64,
        bytes as f64 / (1 << 20) as f64 / fetched_s,
    );
    let acked = acked.lock().unwrap().clone();
    let floor = acked.iter().map(|a| a.2).max().expect("writes");
    assert_identical(&cluster, &acked, floor).await;
}

/// Claim: a receiver killed in the middle of a transfer leaves its donor to give up within a
/// bounded time (its status says `failed:`, it is no longer frozen, and it takes snapshots and
/// releases log again); the receiver, restarted, fetches again and ends identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_killed_mid_transfer_donor_unfreezes() {
    let (mut cluster, client) = slow_transfer_cluster().await;
    let mut acked = write_padded(&client, "/r", 500).await;
    cluster.stop(3);
    std::fs::remove_dir_all(cluster.data_dir(3)).expect("wipe node 3");
    cluster.spawn(3);
    let deadline = tokio::time::Instant::now() + WAIT;
    let donor: NodeId = loop {
        if let Some(line) =
            cluster.node_log(3).lines().find(|l| l.contains("receiver: transfer started"))
        {
            break line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("donor="))
                .and_then(|d| d.parse().ok())
                .expect("donor in the log line");
        }
        assert!(tokio::time::Instant::now() < deadline, "no transfer\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let frozen = client.status_of(&cluster.address(donor)).await.expect("status").frozen;
    assert!(frozen, "the donor does not announce its freeze");
    cluster.kill(3);

    let ended = transfer_end(&cluster, donor).await;
    assert!(ended.starts_with("failed:"), "donor status after the receiver died: {ended}");
    let status = client.status_of(&cluster.address(donor)).await.expect("status");
    assert!(!status.frozen, "the donor stayed frozen");
    let snapshots_before = cluster.node_log(donor).matches("snapshot done").count();
    for i in 0..400 {
        let key = format!("/s{i}");
        let value = Bytes::from(format!("{key}:v"));
        let zxid = write_retrying(&client, &key, value.clone(), &cluster).await;
        acked.push((key, value, zxid));
    }
    assert!(
        cluster.node_log(donor).matches("snapshot done").count() > snapshots_before,
        "the donor took no snapshot after the transfer ended\n{}",
        cluster.node_log(donor)
    );
    cluster.spawn(3);
    let floor = acked.iter().map(|a| a.2).max().expect("writes");
    assert_identical(&cluster, &acked, floor).await;
}

/// Claim: a node stopped (not wiped) while the others move past their log retention comes
/// back by file transfer too (catch-up, not join): it replaces its own older snapshot and log
/// with the fetched snapshot, and ends identical with every acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_node_behind_retention_catches_up_by_transfer() {
    let mut cluster = Cluster::start_with(3, &NODE_FLAGS);
    let client = cluster.client().await;
    let Some(_) = cluster.wait_master(&client, ELECTION_WAIT).await else {
        panic!("no master elected\n{}", cluster.logs())
    };
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers = start_writers(&cluster, acked.clone(), stop.clone()).await;
    wait_acked(&acked, 400, &cluster).await;
    cluster.stop(3);
    assert!(
        cluster.data_dir(3).join("snapshots").read_dir().is_ok_and(|mut d| d.next().is_some()),
        "node 3 took no snapshot of its own before it stopped\n{}",
        cluster.node_log(3)
    );
    let away_from = acked.lock().unwrap().len();
    wait_acked(&acked, away_from + 900, &cluster).await;
    cluster.spawn(3);
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cluster.node_log(3).contains("fetched the data files") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node 3 did not catch up by transfer\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = acked.lock().unwrap().len();
    wait_acked(&acked, after + 100, &cluster).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    let donors = format!("{}{}", cluster.node_log(1), cluster.node_log(2));
    assert!(donors.contains("purpose=CatchUp"), "the transfer was not a catch-up\n{donors}");
    let acked = acked.lock().unwrap().clone();
    let floor = acked.iter().map(|a| a.2).max().expect("writes");
    assert_identical(&cluster, &acked, floor).await;
}
