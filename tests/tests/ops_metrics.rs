//! The node's Prometheus endpoint on a real cluster: scraped over HTTP, parsed, and seen to
//! move after writes.

use bytes::Bytes;
use shoal_tests::cluster::{binary, free_port, terminate, Cluster, CLUSTER_ID};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const ELECTION_WAIT: Duration = Duration::from_secs(20);
const IO_WAIT: Duration = Duration::from_secs(5);

/// A node this test started itself (with a metrics address); SIGTERM on drop.
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        terminate(&mut self.0, Duration::from_secs(10));
    }
}

/// Starts node `id` of `cluster` with `--metrics-addr` on a free loopback port, its log in
/// `log_name` under the cluster directory; returns the process (stopped on drop) and the
/// metrics address.
fn start_with_metrics(cluster: &Cluster, id: u8, log_name: &str) -> (Node, SocketAddr) {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let log = std::fs::File::create(cluster.dir.path().join(log_name)).expect("log");
    let node = Node(
        Command::new(binary("shoal-fs"))
            .args(cluster.node_args(id))
            .arg("--metrics-addr")
            .arg(addr.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start node {id}: {e}")),
    );
    (node, addr)
}

/// A well-formed datagram (a Freeze from a made-up sender) sealed for cluster
/// `cluster_id` under `key`.
fn forged(cluster_id: u32, key: &[u8]) -> Vec<u8> {
    use protocol::datagram::{encode_datagram, Envelope};
    let auth = protocol::header::ClusterAuth::new(cluster_id, key);
    // A kind a node takes from a client (under the client key), so that the tag is what
    // refuses it: a Freeze from a client id would be refused earlier, as `wrong_class`.
    let message = protocol::message::Message::Nak(protocol::message::layer::Nak {
        target: 1,
        incarnation: 1,
        ranges: vec![(1, 1)],
    });
    let envelope =
        Envelope { sender: protocol::CLIENT_ID_MIN + 99, incarnation: 1, seq: 0, flags: 0 };
    let mut out = Vec::new();
    encode_datagram(&auth, envelope, &message, &mut out).expect("encodes");
    out
}

/// One HTTP/1.1 request; returns (status line, body).
fn http(addr: SocketAddr, request: &str) -> (String, String) {
    let mut s = TcpStream::connect_timeout(&addr, IO_WAIT).expect("connect to metrics");
    s.set_read_timeout(Some(IO_WAIT)).expect("timeout");
    s.write_all(request.as_bytes()).expect("send");
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("read reply");
    let (head, body) = reply.split_once("\r\n\r\n").expect("a head and a body");
    (head.lines().next().unwrap_or("").to_string(), body.to_string())
}

/// Parses the text format: sample name with labels → value; checks every sample has a TYPE.
fn parse(body: &str) -> BTreeMap<String, f64> {
    let mut typed = Vec::new();
    let mut samples = BTreeMap::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().expect("name").to_string();
            let kind = parts.next().expect("type");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            typed.push(name);
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (name, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {line:?}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let family = name.split('{').next().unwrap_or(name);
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| family.strip_suffix(s).filter(|b| typed.iter().any(|t| t == b)))
            .unwrap_or(family);
        assert!(typed.iter().any(|t| t == base), "sample {name} has no TYPE line");
        assert!(samples.insert(name.to_string(), value).is_none(), "duplicate sample {name}");
    }
    samples
}

fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    let (status, body) = http(addr, "GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    parse(&body)
}

/// Claim: a node started with `--metrics-addr` serves `GET /metrics` in the Prometheus text
/// format with the documented families (ops by kind, write latency and commit batch
/// histograms, fsyncs, role, zxids, locks, cache and messaging counters); after writes through
/// that node's cluster the applied zxid, the commit batch count and the fsync count move, and
/// on the master the write counter and latency histogram count every write it took; a datagram
/// under a wrong key and one of another cluster move exactly `shoal_dropped_datagrams_total`
/// for `bad_mac` and `wrong_cluster` by one. Other paths are 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_serves_prometheus_text_that_moves_with_writes() {
    let mut cluster = Cluster::start(3);
    // Node 1 again, this time with a metrics address.
    // Stopped and reaped (its exit code does not matter: it may not have set up its handlers).
    cluster.stop(1);
    let (_node, addr) = start_with_metrics(&cluster, 1, "node1-metrics.log");
    let client = cluster.client().await;
    assert!(cluster.wait_master(&client, ELECTION_WAIT).await.is_some(), "{}", cluster.logs());
    // Node 1 must have joined (it answers status) before its counters mean anything.
    let mut joined = false;
    for _ in 0..100 {
        if client.status_of(&cluster.address(1)).await.is_ok_and(|s| s.master.is_some()) {
            joined = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(joined, "node 1 never followed a master\n{}", cluster.logs());

    let before = scrape(addr);
    for name in [
        "shoal_ops_total{kind=\"write\"}",
        "shoal_ops_total{kind=\"get\"}",
        "shoal_ops_total{kind=\"lock\"}",
        "shoal_write_latency_seconds_count",
        "shoal_write_latency_seconds_bucket{le=\"+Inf\"}",
        "shoal_commit_batch_entries_count",
        "shoal_log_fsyncs_total",
        "shoal_elections_total",
        "shoal_role{role=\"master\"}",
        "shoal_role{role=\"follower\"}",
        "shoal_epoch",
        "shoal_applied_zxid",
        "shoal_committed_zxid",
        "shoal_locks",
        "shoal_sessions",
        "shoal_transfer_in_progress",
        "shoal_cache_hits_total",
        "shoal_cache_misses_total",
        "shoal_messaging_retransmits_total",
        "shoal_messaging_naks_sent_total",
        "shoal_messaging_naks_received_total",
        "shoal_messaging_dropped_total{reason=\"rejected\"}",
    ] {
        assert!(before.contains_key(name), "{name} missing from {before:?}");
    }
    let roles: f64 = ["looking", "follower", "master"]
        .iter()
        .map(|r| before[&format!("shoal_role{{role=\"{r}\"}}")])
        .sum();
    assert_eq!(roles, 1.0, "exactly one role is current");

    const WRITES: u64 = 20;
    for i in 0..WRITES {
        client.write(&format!("/m{i}"), Bytes::from_static(b"v")).await.expect("write");
    }
    // Node 1 applies the writes (bounded wait on its applied zxid).
    let mut after = scrape(addr);
    for _ in 0..50 {
        if after["shoal_applied_zxid"] >= before["shoal_applied_zxid"] + WRITES as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = scrape(addr);
    }
    assert!(
        after["shoal_applied_zxid"] >= before["shoal_applied_zxid"] + WRITES as f64,
        "applied zxid did not move: {} -> {}",
        before["shoal_applied_zxid"],
        after["shoal_applied_zxid"]
    );
    assert!(after["shoal_committed_zxid"] >= after["shoal_applied_zxid"]);
    assert!(after["shoal_commit_batch_entries_count"] > before["shoal_commit_batch_entries_count"]);
    assert!(
        after["shoal_commit_batch_entries_sum"]
            >= before["shoal_commit_batch_entries_sum"] + WRITES as f64
    );
    assert!(after["shoal_log_fsyncs_total"] > before["shoal_log_fsyncs_total"]);
    if after["shoal_role{role=\"master\"}"] == 1.0 {
        // Writes go to the master, which times each one.
        let took =
            after["shoal_ops_total{kind=\"write\"}"] - before["shoal_ops_total{kind=\"write\"}"];
        assert!(took >= WRITES as f64, "master counted {took} writes");
        let timed = after["shoal_write_latency_seconds_count"]
            - before["shoal_write_latency_seconds_count"];
        assert!(timed >= WRITES as f64);
    }

    // Forged datagrams to node 1's unicast port: each lands in exactly its reason's counter.
    let bad_mac = "shoal_dropped_datagrams_total{reason=\"bad_mac\"}";
    let wrong_cluster = "shoal_dropped_datagrams_total{reason=\"wrong_cluster\"}";
    let before_drops = scrape(addr);
    for name in [bad_mac, wrong_cluster] {
        assert!(before_drops.contains_key(name), "{name} missing");
    }
    let node1: SocketAddr = cluster.address(1).parse().expect("node address");
    let key = std::fs::read(cluster.dir.path().join("cluster.key")).expect("key");
    let key = protocol::header::cluster_key_from_file_contents(&key).to_vec();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.send_to(&forged(CLUSTER_ID, b"not the cluster key"), node1).expect("send");
    socket.send_to(&forged(CLUSTER_ID + 1, &key), node1).expect("send");
    let mut drops = scrape(addr);
    for _ in 0..50 {
        if drops[bad_mac] > before_drops[bad_mac]
            && drops[wrong_cluster] > before_drops[wrong_cluster]
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        drops = scrape(addr);
    }
    assert_eq!(drops[bad_mac], before_drops[bad_mac] + 1.0, "one datagram under a wrong key");
    assert_eq!(drops[wrong_cluster], before_drops[wrong_cluster] + 1.0, "one of another cluster");

    let (status, _) = http(addr, "GET / HTTP/1.1\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, _) = http(addr, "POST /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
}

/// `GET /health` and `GET /ready` on a real node. Alone (its two peers stopped) it is alive but
/// not ready: 503, "looking for a master". Once a peer is back and a master is elected it is
/// ready (200), as a follower or as the master. A probe can tell the two states apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness_probes_follow_the_node_state() {
    let mut cluster = Cluster::start(3);
    // A first election makes every node's state durable, so that each votes after a restart
    // (a node without complete durable state neither votes nor counts toward a quorum).
    let client = cluster.client().await;
    assert!(cluster.wait_master(&client, ELECTION_WAIT).await.is_some(), "{}", cluster.logs());
    drop(client);
    for id in [1, 2, 3] {
        cluster.stop(id);
    }
    let (_node, addr) = start_with_metrics(&cluster, 1, "node1-probes.log");
    // Alive as soon as it listens; bounded wait for the listener.
    let mut health = None;
    for _ in 0..100 {
        if TcpStream::connect_timeout(&addr, IO_WAIT).is_ok() {
            health = Some(http(addr, "GET /health HTTP/1.1\r\n\r\n"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = health.expect("metrics listener never came up");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    assert_eq!(body, "ok\n");
    // Alone it can never win an election: not ready, for several seconds in a row.
    for _ in 0..10 {
        let (status, body) = http(addr, "GET /ready HTTP/1.1\r\n\r\n");
        assert_eq!(status, "HTTP/1.1 503 Service Unavailable", "{body}");
        assert!(body.starts_with("not ready: "), "{body}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (_, body) = http(addr, "GET /ready HTTP/1.1\r\n\r\n");
    assert!(body.contains("looking for a master") || body.contains("starting"), "{body}");

    cluster.spawn(2);
    let mut ready = None;
    for _ in 0..200 {
        let (status, body) = http(addr, "GET /ready HTTP/1.1\r\n\r\n");
        if status == "HTTP/1.1 200 OK" {
            ready = Some(body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let body = ready.unwrap_or_else(|| panic!("never ready with a quorum\n{}", cluster.logs()));
    assert!(body.starts_with("ready: master") || body.starts_with("ready: follower"), "{body}");
    let (status, _) = http(addr, "POST /ready HTTP/1.1\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
}

/// The sample names and `label="value"` pairs a node's `GET /metrics` body holds (the name
/// before any `{`, with `_bucket`, `_sum`, `_count` as they are written).
fn names_and_labels(body: &str) -> (BTreeSet<String>, BTreeSet<(String, String)>) {
    let mut names = BTreeSet::new();
    let mut labels = BTreeSet::new();
    for line in body.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let sample = line.rsplit_once(' ').map_or(line, |(s, _)| s);
        let (name, rest) = sample.split_once('{').unwrap_or((sample, ""));
        names.insert(name.to_string());
        for pair in rest.trim_end_matches('}').split(',').filter(|p| !p.is_empty()) {
            labels.insert((name.to_string(), pair.to_string()));
        }
    }
    (names, labels)
}

/// Every `shoal_…` metric name in a PromQL expression, with the `label="value"` matchers
/// written right after it (Prometheus' own `instance` and `job` labels left out).
fn metrics_in(expr: &str) -> Vec<(String, Vec<String>)> {
    let bytes = expr.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while let Some(at) = expr[i..].find("shoal_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let preceded =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut matchers = Vec::new();
        if end < bytes.len() && bytes[end] == b'{' {
            let close = expr[end..].find('}').map(|c| end + c).expect("a closed selector");
            for m in expr[end + 1..close].split(',') {
                let m = m.trim();
                if !m.starts_with("instance") && !m.starts_with("job") && !m.is_empty() {
                    assert!(m.contains("=\"") && !m.contains("=~"), "matcher {m:?} in {expr}");
                    matchers.push(m.to_string());
                }
            }
        }
        if !preceded {
            found.push((expr[start..end].to_string(), matchers));
        }
        i = end;
    }
    found
}

/// Claim: the Grafana dashboard shipped in `docs/grafana/shoal.json` is JSON of the
/// dashboard model (a title, a uid, the `datasource` and `instance` variables, panels with
/// unique ids whose queries use the `datasource` variable), and every metric name its PromQL
/// expressions use — and every label value they match on — is one a real node started with
/// `--metrics-addr` serves (the list comes from that node's `GET /metrics`, not from a copy).
#[test]
fn grafana_dashboard_uses_only_metrics_the_node_serves() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/grafana/shoal.json");
    let text = std::fs::read_to_string(path).expect("docs/grafana/shoal.json");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert_eq!(dash["title"], "Shoal");
    assert!(dash["uid"].as_str().is_some_and(|u| !u.is_empty()));
    let vars: Vec<&str> = dash["templating"]["list"]
        .as_array()
        .expect("templating variables")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(vars, ["datasource", "instance"]);

    let mut cluster = Cluster::start(3);
    cluster.stop(1);
    let (_node, addr) = start_with_metrics(&cluster, 1, "node1-dashboard.log");
    // The node serves metrics from its start on: wait (bounded) for its listener.
    let mut body = None;
    for _ in 0..100 {
        if TcpStream::connect_timeout(&addr, IO_WAIT).is_ok() {
            body = Some(http(addr, "GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n"));
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, body) = body.unwrap_or_else(|| panic!("no metrics listener\n{}", cluster.logs()));
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    let (names, labels) = names_and_labels(&body);
    assert!(names.len() > 30, "{names:?}");

    let mut ids = BTreeSet::new();
    let mut used = BTreeSet::new();
    let panels = dash["panels"].as_array().expect("panels");
    for panel in panels {
        let id = panel["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "panel id {id} twice");
        let title = panel["title"].as_str().expect("panel title");
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has no query");
        for target in targets {
            let expr = target["expr"].as_str().expect("expr");
            let metrics = metrics_in(expr);
            assert!(!metrics.is_empty(), "{title}: {expr} names no shoal metric");
            for (name, matchers) in metrics {
                assert!(names.contains(&name), "{title}: {name} is not served; {names:?}");
                for m in matchers {
                    assert!(
                        labels.contains(&(name.clone(), m.clone())),
                        "{title}: no {name}{{{m}}} is served"
                    );
                }
                used.insert(name);
            }
        }
    }
    // Enough of the node's families are on the dashboard to be worth shipping.
    for must in [
        "shoal_commit_batch_entries_sum",
        "shoal_write_latency_seconds_bucket",
        "shoal_role",
        "shoal_elections_total",
        "shoal_dropped_datagrams_total",
        "shoal_cache_hits_total",
        "shoal_transfer_bytes_sent_total",
    ] {
        assert!(used.contains(must), "the dashboard has no panel of {must}");
    }
}
