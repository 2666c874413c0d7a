//! Range reads (issue 18.3) through a real three-node `shoal-fs` cluster: the library (async
//! and blocking, pages of one node's disk store) and `shoal get --prefix` as a process.

use bytes::Bytes;
use cache_client::net::ClusterFile;
use cache_client::{BlockingClient, ClientConfig};
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

/// Claim: a range read gives every value below a directory at any depth, in key order, in
/// pages whose `next` goes on where the last stopped; a key written between two pages shows
/// in the later page's part; the multi-page read is one state with its zxid; the blocking
/// client reads the same; `shoal get --prefix` prints the lines and the zxid, pages up to
/// `--limit`, and refuses bad input with the documented codes. Before issue 18.3 there was no
/// such read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_reads_through_a_cluster() {
    let cluster = Cluster::start(3);
    let client = cluster.client().await;
    if cluster.wait_master(&client, ELECTION_WAIT).await.is_none() {
        panic!("no master elected\n{}", cluster.logs());
    }
    client.mkdir("/r").await.unwrap();
    client.mkdir("/r/d").await.unwrap();
    for key in ["/r/a", "/r/c", "/r/d/x", "/r/e"] {
        client.write(key, Bytes::from(format!("v{key}"))).await.unwrap();
    }
    let page = client.range_page("/r", None, 2).await.unwrap();
    let keys = |entries: &[protocol::message::data::RangeEntry]| {
        entries.iter().map(|e| e.key.clone()).collect::<Vec<_>>()
    };
    assert_eq!(keys(&page.entries), ["/r/a", "/r/c"]);
    assert_eq!(page.next.as_deref(), Some("/r/d/x"));
    // Between the pages: /r/b in the first page's part, /r/f in the second's.
    client.write("/r/b", Bytes::from_static(b"late")).await.unwrap();
    let f = client.write("/r/f", Bytes::from_static(b"late")).await.unwrap();
    let second = client.range_page("/r", page.next.as_deref(), 10).await.unwrap();
    assert_eq!(keys(&second.entries), ["/r/d/x", "/r/e", "/r/f"]);
    assert!(second.zxid >= f && second.next.is_none());

    let all = client.range_with("/r", None, None, 2).await.unwrap();
    assert_eq!(keys(&all.entries), ["/r/a", "/r/b", "/r/c", "/r/d/x", "/r/e", "/r/f"]);
    assert_eq!(all.snapshot, Some(all.zxid), "{all:?}");
    assert!(client.range("/r/none", None, None).await.is_err());

    let (file, _) = ClusterFile::load(&cluster.cluster_file).expect("cluster file");
    let transport = cluster.transport().await;
    let config = ClientConfig {
        seeds: file.seeds(),
        request_timeout: Duration::from_millis(500),
        client_id: Some(transport.id()),
        ..ClientConfig::default()
    };
    let floor = client.floor();
    let blocking = tokio::task::spawn_blocking(move || {
        let blocking = BlockingClient::new(transport, config).expect("blocking client");
        blocking.read_with("/r/f", cache_client::ReadOptions::linearizable()).unwrap();
        assert!(blocking.floor() >= floor);
        blocking.range("/r", Some("/r/d"), Some(2))
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(keys(&blocking.entries), ["/r/d/x", "/r/e"]);
    assert_eq!(blocking.next.as_deref(), Some("/r/f"));

    let run = |args: &'static [&'static str]| tokio::task::block_in_place(|| shoal(&cluster, args));
    // Followers may trail the last write by a little: the CLI reads at floor zero.
    let mut out = run(&["get", "--prefix", "/r"]);
    for _ in 0..50 {
        if text(&out.stdout).lines().count() == 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        out = run(&["get", "--prefix", "/r"]);
    }
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "/r/a\tv/r/a\n/r/b\tlate\n/r/c\tv/r/c\n/r/d/x\tv/r/d/x\n/r/e\tv/r/e\n/r/f\tlate\n"
    );
    assert!(text(&out.stderr).starts_with("zxid "), "{}", text(&out.stderr));
    let out = run(&["get", "--prefix", "/r", "--limit", "2", "--from", "/r/c", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(json["entries"][0]["key"], "/r/c");
    assert_eq!(json["entries"][1]["value"], "v/r/d/x");
    assert_eq!(json["next"], "/r/e");
    assert_eq!(json["snapshot"], true);
    assert_eq!(run(&["get", "--prefix", "r"]).status.code(), Some(3));
    assert_eq!(run(&["get", "--prefix", "/r", "--from", "/x"]).status.code(), Some(3));
    assert_eq!(run(&["get", "--prefix", "/r", "--limit", "0"]).status.code(), Some(2));
    assert_eq!(run(&["get", "--prefix", "/none"]).status.code(), Some(1));
}
