//! `stat` (issue 18.5) through a real three-node `shoal-fs` cluster: the library (async and
//! blocking) and `shoal stat [--json]` / `shoal exists` as processes.

use bytes::Bytes;
use cache_client::net::ClusterFile;
use cache_client::{BlockingClient, ClientConfig};
use protocol::message::data::KeyStat;
use protocol::Zxid;
use shoal_tests::cluster::{binary, Cluster};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const ELECTION_WAIT: Duration = Duration::from_secs(20);

fn shoal(cluster: &Cluster, args: &[&str]) -> Output {
    Command::new(binary("shoal"))
        .arg("--cluster")
        .arg(&cluster.cluster_file)
        .args(args)
        .env_remove("SHOAL_CLUSTER")
        .stdin(Stdio::null())
        .output()
        .expect("run shoal")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Claim: `stat` gives the zxid of a key's last change, whether it is a directory, the
/// value's size and its ephemeral owner (the session id; none for a plain key), for values,
/// directories, the root and absent keys; a rename's target is changed at the rename; an
/// ephemeral's owner goes with its session. Before issue 18.5 there was no such read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stat_reports_zxid_kind_size_and_owner() {
    let cluster = Cluster::start(3);
    let client = cluster.client().await;
    if cluster.wait_master(&client, ELECTION_WAIT).await.is_none() {
        panic!("no master elected\n{}", cluster.logs());
    }
    let dir = client.mkdir("/s").await.unwrap();
    let first = client.write("/s/k", Bytes::from_static(b"hello")).await.unwrap();
    let last = client.write("/s/k", Bytes::from_static(b"hello, world")).await.unwrap();
    assert!(last > first);
    let stat = client.stat("/s/k").await.unwrap();
    assert_eq!(stat, Some(KeyStat { zxid: last, is_dir: false, size: 12, ephemeral: None }));
    let stat = client.stat("/s").await.unwrap();
    assert_eq!(stat, Some(KeyStat { zxid: dir, is_dir: true, size: 0, ephemeral: None }));
    let root = client.stat("/").await.unwrap();
    assert_eq!(root, Some(KeyStat { zxid: Zxid::ZERO, is_dir: true, size: 0, ephemeral: None }));
    assert_eq!(client.stat("/s/absent").await.unwrap(), None);
    assert!(client.stat("no-slash").await.is_err(), "a bad key is refused");
    let moved = client.rename("/s/k", "/s/m").await.unwrap();
    assert_eq!(client.stat("/s/m").await.unwrap().map(|s| (s.zxid, s.size)), Some((moved, 12)));

    let owner = cluster.client().await;
    let session = owner.ensure_session().await.unwrap();
    let e = owner.create_ephemeral("/s/e", Bytes::from_static(b"me")).await.unwrap();
    let stat = client.stat("/s/e").await;
    // The reader's floor is below the create: it may be answered by a node that has not
    // applied it yet; a linearizable read first puts its floor past it.
    let stat = match stat.unwrap() {
        Some(stat) => stat,
        None => {
            client.read_with("/s/e", cache_client::ReadOptions::linearizable()).await.unwrap();
            client.stat("/s/e").await.unwrap().expect("the ephemeral is there")
        }
    };
    assert_eq!(stat, KeyStat { zxid: e, is_dir: false, size: 2, ephemeral: Some(session) });
    owner.close_session().await.unwrap();
    client.read_with("/s/m", cache_client::ReadOptions::linearizable()).await.unwrap();
    assert_eq!(client.stat("/s/e").await.unwrap(), None, "the ephemeral outlived its session");

    // The blocking client, from a thread outside the runtime.
    // (The transport's sockets are driven by this test's runtime.)
    let (file, _) = ClusterFile::load(&cluster.cluster_file).expect("cluster file");
    let transport = cluster.transport().await;
    let config = ClientConfig {
        seeds: file.seeds(),
        request_timeout: Duration::from_millis(500),
        client_id: Some(transport.id()),
        ..ClientConfig::default()
    };
    let floor = client.floor();
    let stat = tokio::task::spawn_blocking(move || {
        let blocking = BlockingClient::new(transport, config).expect("blocking client");
        // Past the rename (a node behind it would not have /s/m yet).
        blocking.read_with("/s/m", cache_client::ReadOptions::linearizable()).unwrap();
        assert!(blocking.floor() >= floor);
        blocking.stat("/s/m")
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(stat.map(|s| s.zxid), Some(moved));
}

/// Claim: `shoal stat KEY` prints the key's kind, last-change zxid, size and owner (one JSON
/// object with `--json`), exits 1 for an absent key and 3 for a bad one; `shoal exists`
/// answers `value` / `directory` from the same single read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shoal_stat_prints_the_metadata_as_text_and_json() {
    let cluster = Cluster::start(3);
    let client = cluster.client().await;
    if cluster.wait_master(&client, ELECTION_WAIT).await.is_none() {
        panic!("no master elected\n{}", cluster.logs());
    }
    client.mkdir("/c").await.unwrap();
    let zxid = client.write("/c/k", Bytes::from_static(b"abc")).await.unwrap();
    let run = |args: &'static [&'static str]| tokio::task::block_in_place(|| shoal(&cluster, args));
    // Followers may trail the write by a little: the CLI reads at floor zero.
    let mut out = run(&["stat", "/c/k"]);
    for _ in 0..50 {
        if out.status.code() == Some(0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        out = run(&["stat", "/c/k"]);
    }
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("key: /c/k\ntype: value\nzxid: {zxid}\nsize: 3\nephemeral: none\n")
    );
    let out = run(&["stat", "/c/k", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(
        json,
        serde_json::json!({"key": "/c/k", "is_dir": false, "zxid": zxid.to_string(), "size": 3,
                           "ephemeral_owner": null})
    );
    let out = run(&["stat", "/c", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(json["is_dir"], true);
    let out = run(&["stat", "/c/absent"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("/c/absent does not exist"), "{}", text(&out.stderr));
    let out = run(&["stat", "bad"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let out = run(&["exists", "/c"]);
    assert_eq!((out.status.code(), text(&out.stdout)), (Some(0), "directory\n".to_string()));
    let out = run(&["exists", "/c/k"]);
    assert_eq!((out.status.code(), text(&out.stdout)), (Some(0), "value\n".to_string()));
    let out = run(&["exists", "/c/absent"]);
    assert_eq!(out.status.code(), Some(1));
}
