//! `shoal status` and `shoal bench` as real processes against a real three-node cluster, and
//! the CLI's answers to bad input (one clear line, the documented exit code).

use shoal_cli::plot::svg_texts;
use shoal_tests::cluster::{binary, free_port, unique_group, Cluster};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// Bound on election at start (generous: two cores shared with other builds).
const ELECTION_WAIT: Duration = Duration::from_secs(20);
/// Exit codes documented in `shoal_cli::exit`.
const EXIT_OK: i32 = 0;
const EXIT_USAGE: i32 = 2;
const EXIT_UNREACHABLE: i32 = 4;

fn shoal(cluster_file: &Path, args: &[&str]) -> Output {
    Command::new(binary("shoal"))
        .arg("--cluster")
        .arg(cluster_file)
        .arg("--timeout-ms")
        .arg("500")
        .args(args)
        .env_remove("SHOAL_CLUSTER")
        .output()
        .expect("run shoal")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Polls `status --json` (bounded) until every node answers and one is master that the
/// others follow; returns the parsed report.
fn settled_status(cluster: &Cluster) -> serde_json::Value {
    let mut last = String::new();
    for _ in 0..40 {
        let out = shoal(&cluster.cluster_file, &["status", "--json"]);
        last =
            format!("exit {:?}\n{}\n{}", out.status.code(), text(&out.stdout), text(&out.stderr));
        if out.status.code() == Some(EXIT_OK) {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {last}"));
            let master = v["master"].as_u64();
            let following = v["nodes"]
                .as_array()
                .expect("nodes")
                .iter()
                .filter(|n| n["master"].as_u64() == master)
                .count();
            if v["reachable"] == 3 && master.is_some() && following == 3 {
                return v;
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("the cluster never settled; last status: {last}\n{}", cluster.logs());
}

/// Claim: `status --json` lists every member with the documented fields: exactly one master,
/// which every node names; zxids in both forms; the nodes heard on FSLive have a last-seen
/// age. After SIGKILL of one follower, status still exits 0 and shows that node unreachable
/// with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_lists_every_node_and_marks_a_dead_one_unreachable() {
    let mut cluster = Cluster::start(3);
    let client = cluster.client().await;
    let master = cluster.wait_master(&client, ELECTION_WAIT).await;
    assert!(master.is_some(), "no master\n{}", cluster.logs());
    client.write("/status-probe", &b"x"[..]).await.expect("write");

    let v = settled_status(&cluster);
    assert_eq!(v["members"], 3);
    let nodes = v["nodes"].as_array().expect("nodes");
    let ids: Vec<u64> = nodes.iter().map(|n| n["id"].as_u64().expect("id")).collect();
    assert_eq!(ids, vec![1, 2, 3]);
    let masters: Vec<&serde_json::Value> = nodes.iter().filter(|n| n["role"] == "master").collect();
    assert_eq!(masters.len(), 1, "{v}");
    for n in nodes {
        assert_eq!(n["reachable"], true);
        assert!(n["role"] == "master" || n["role"] == "follower", "{n}");
        let applied = n["applied_zxid"].as_u64().expect("applied_zxid");
        assert!(applied > 0, "every node applied the write's entries: {n}");
        let text = n["applied"].as_str().expect("applied text");
        assert_eq!(text, format!("{}:{}", applied >> 32, applied & 0xffff_ffff));
        assert!(n["committed_zxid"].as_u64().is_some());
        assert_eq!(n["frozen"], false);
        assert!(n["load"]["cpu_permille"].as_u64().is_some());
        assert_eq!(n["epoch"], masters[0]["epoch"], "every node is in the master's epoch");
        assert!(n.get("transfer").is_some() && n.get("error").is_some());
    }

    // A follower dies: status still answers (exit 0) and marks it.
    let master = v["master"].as_u64().expect("master") as u8;
    let victim = cluster.ids().into_iter().find(|id| *id != master).expect("a follower");
    cluster.kill(victim);
    let out = shoal(&cluster.cluster_file, &["status", "--json"]);
    assert_eq!(out.status.code(), Some(EXIT_OK), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["reachable"], 2, "{v}");
    let dead = v["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["address"] == cluster.address(victim))
        .expect("the dead node is listed");
    assert_eq!(dead["reachable"], false);
    assert!(dead["role"].is_null());
    assert!(dead["error"].as_str().is_some_and(|e| !e.is_empty()), "{dead}");

    // The table form names it too.
    let out = shoal(&cluster.cluster_file, &["status"]);
    let table = text(&out.stdout);
    assert!(table.contains("unreachable"), "{table}");
    assert!(table.contains("2 of 3 nodes reachable"), "{table}");
}

/// Claim: `bench put`, `bench mixed` and `bench get --no-cache` (all `--json`) run for the asked duration against a real
/// cluster and print one JSON object with the documented fields; the quantiles are ordered
/// and operations were counted. `bench lock` and `bench txn` run real acquire+release pairs
/// and 4-key transactions (ops > 0, no errors on a healthy cluster) and report `refused`
/// separately.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_json_reports_throughput_and_latency_quantiles() {
    let cluster = Cluster::start(3);
    let client = cluster.client().await;
    assert!(cluster.wait_master(&client, ELECTION_WAIT).await.is_some(), "{}", cluster.logs());
    settled_status(&cluster);

    for (workload, reads) in [("put", "cached"), ("mixed", "cached"), ("get", "no_cache")] {
        let mut args = vec![
            "bench",
            workload,
            "--clients",
            "4",
            "--duration",
            "1s",
            "--keys",
            "16",
            "--value-bytes",
            "64",
            "--json",
        ];
        if reads == "no_cache" {
            args.push("--no-cache");
        }
        let out = shoal(&cluster.cluster_file, &args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(EXIT_OK), "{stderr}\n{}", cluster.logs());
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out.stdout)));
        assert_eq!(v["workload"], workload);
        assert_eq!(v["clients"], 4);
        assert_eq!(v["keys"], 16);
        assert_eq!(v["value_bytes"], 64);
        let ops = v["ops"].as_u64().expect("ops");
        assert!(ops > 0, "{v}");
        assert!(v["errors"].as_u64().is_some());
        let secs = v["duration_s"].as_f64().expect("duration_s");
        assert!((1.0..5.0).contains(&secs), "{v}");
        let rate = v["throughput_ops_per_s"].as_f64().expect("throughput");
        assert!((rate - ops as f64 / secs).abs() < 1.0, "{v}");
        let l = &v["latency_us"];
        let q = |name: &str| l[name].as_f64().unwrap_or_else(|| panic!("latency {name}: {v}"));
        assert!(q("p50") <= q("p99") && q("p99") <= q("p999") && q("p999") <= q("max"), "{v}");
        assert!(q("p50") > 0.0);
        assert_eq!(v["reads"], reads);
        // Not a terminal: the progress lines are plain lines on stderr.
        assert!(stderr.lines().all(|l| l.starts_with("bench: ")), "{stderr}");
    }
    let read = client.read("/bench/k0").await.expect("read").expect("bench wrote its keys");
    assert_eq!(read.value.len(), 64);

    for workload in ["lock", "txn"] {
        let args =
            ["bench", workload, "--clients", "4", "--duration", "1s", "--keys", "64", "--json"];
        let out = shoal(&cluster.cluster_file, &args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(EXIT_OK), "{workload}: {stderr}\n{}", cluster.logs());
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out.stdout)));
        assert_eq!(v["workload"], workload);
        assert_eq!(v["clients"], 4);
        let ops = v["ops"].as_u64().expect("ops");
        assert!(ops > 0, "{v}");
        assert_eq!(v["errors"], 0, "a healthy cluster fails no lock or transaction: {v}");
        assert!(v["refused"].as_u64().is_some(), "{v}");
        let l = &v["latency_us"];
        let q = |name: &str| l[name].as_f64().unwrap_or_else(|| panic!("latency {name}: {v}"));
        assert!(q("p50") > 0.0 && q("p50") <= q("p99") && q("p99") <= q("max"), "{v}");
    }
    // The transactions really committed their writes: over 64 keys, some of /bench/k16..k63
    // (which the put runs above never touched) hold a value of the default 256 bytes.
    let mut written = 0;
    for i in 16..64 {
        if let Some(read) = client.read(&format!("/bench/k{i}")).await.expect("read") {
            assert_eq!(read.value.len(), 256, "/bench/k{i}");
            written += 1;
        }
    }
    assert!(written > 0, "no transaction wrote a 256-byte value");
}

/// Claim: `bench put --plot FILE.svg` against a real cluster writes an SVG latency histogram
/// (XML, titled with the workload, axis names, a legend counting exactly the operations the
/// JSON reports, the p50 mark) as well as its usual output; `bench get --plot FILE.png`
/// writes a decodable PNG of 1000×500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_plot_writes_a_latency_histogram_picture() {
    let cluster = Cluster::start(3);
    let client = cluster.client().await;
    assert!(cluster.wait_master(&client, ELECTION_WAIT).await.is_some(), "{}", cluster.logs());
    settled_status(&cluster);
    let dir = tempfile::tempdir().expect("temp dir");
    let svg = dir.path().join("put.svg");
    let common = ["--clients", "2", "--duration", "1s", "--keys", "8", "--json", "--plot"];
    let mut args = vec!["bench", "put"];
    args.extend_from_slice(&common);
    args.push(svg.to_str().expect("utf-8 path"));
    let out = shoal(&cluster.cluster_file, &args);
    assert_eq!(out.status.code(), Some(EXIT_OK), "{}\n{}", text(&out.stderr), cluster.logs());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let ops = v["ops"].as_u64().expect("ops");
    assert!(ops > 0, "{v}");
    let texts = svg_texts(&std::fs::read_to_string(&svg).expect("the SVG was written"));
    for want in [format!("{ops} operations"), "latency (log scale)".into(), "operations".into()] {
        assert!(texts.contains(&want), "no {want:?} in {texts:?}");
    }
    assert!(texts.iter().any(|t| t.starts_with("shoal bench put: 2 clients")), "{texts:?}");
    assert!(texts.iter().any(|t| t.starts_with("p50 ")), "{texts:?}");

    let png_path = dir.path().join("get.png");
    let mut args = vec!["bench", "get"];
    args.extend_from_slice(&common);
    args.push(png_path.to_str().expect("utf-8 path"));
    let out = shoal(&cluster.cluster_file, &args);
    assert_eq!(out.status.code(), Some(EXIT_OK), "{}", text(&out.stderr));
    let bytes = std::fs::read(&png_path).expect("the PNG was written");
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes)).read_info().expect("PNG");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("decodes");
    assert_eq!((info.width, info.height), (1000, 500));
}

/// Claim: bad input gets one clear line on stderr and the documented code: a missing cluster
/// file and a cluster nobody answers are 4 (unreachable), bad arguments are 2 (usage, also a
/// `--plot` that is not .svg/.png or in no directory, and `--plot` on failover), also
/// for `backup` (both or neither destination, a relative directory, a node not a member).
#[test]
fn bad_input_prints_one_line_and_the_documented_exit_code() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("nope.toml");
    for args in [&["status"][..], &["get", "/x"], &["bench", "put", "--duration", "1s"]] {
        let out = shoal(&missing, args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(EXIT_UNREACHABLE), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("shoal: ") && stderr.contains("nope.toml"), "{stderr}");
    }

    // A cluster file whose members are closed ports.
    let unreachable = dir.path().join("cluster.toml");
    std::fs::write(
        &unreachable,
        format!(
            "cluster_id = 9\nkey = \"k\"\ngroup = \"{}\"\ninterface = \"127.0.0.1\"\n\
             [members]\n1 = \"127.0.0.1:{}\"\n2 = \"127.0.0.1:{}\"\n3 = \"127.0.0.1:{}\"\n",
            unique_group(),
            free_port(),
            free_port(),
            free_port()
        ),
    )
    .expect("write cluster file");
    let out = shoal(&unreachable, &["status", "--json"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(EXIT_UNREACHABLE), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON even when down");
    assert_eq!(v["reachable"], 0);
    assert_eq!(v["members"], 3);
    let out = shoal(&unreachable, &["get", "/x"]);
    assert_eq!(out.status.code(), Some(EXIT_UNREACHABLE), "{}", text(&out.stderr));

    // `backup`: flags wrong whatever the cluster are refused before looking for one; a node
    // id the cluster file does not list is a usage error; a silent cluster is unreachable.
    for (file, args, code) in [
        (&missing, &["backup", "--to-node", "2", "--to-dir", "/b"][..], EXIT_USAGE),
        (&missing, &["backup"], EXIT_USAGE),
        (&missing, &["backup", "--to-dir", "relative"], EXIT_USAGE),
        (&unreachable, &["backup", "--to-node", "7"], EXIT_USAGE),
        (&unreachable, &["backup", "--to-node", "2"], EXIT_UNREACHABLE),
    ] {
        let out = shoal(file, args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("shoal: "), "{args:?}: {stderr}");
    }

    for args in [
        &["bench", "put", "--clients", "0"][..],
        &["bench", "put", "--duration", "2h"],
        &["bench", "nosuch"],
        &["bench", "put", "--plot", "latency.jpg"],
        &["bench", "put", "--plot", "/nonexistent-shoal-dir/latency.svg"],
        &["status", "--bogus"],
    ] {
        let out = shoal(&missing, args);
        assert_eq!(out.status.code(), Some(EXIT_USAGE), "{args:?}: {}", text(&out.stderr));
        assert!(text(&out.stderr).starts_with("error: "), "{args:?}");
    }
    // The failover workloads measure no latencies to draw: refused before any cluster starts.
    let out = shoal(&missing, &["bench", "failover", "--plot", "x.svg"]);
    assert_eq!(out.status.code(), Some(EXIT_USAGE), "{}", text(&out.stderr));
    assert!(text(&out.stderr).starts_with("shoal: bench --plot"), "{}", text(&out.stderr));
}

/// Claim: `bench failover --trials 1 --json` starts its own dev cluster, SIGKILLs the master
/// once, and reports the completed trial with a time to a new master and to the first
/// acknowledged write (exit 0); the cluster's temporary directory is gone afterwards.
#[test]
fn bench_failover_measures_one_trial_on_its_own_dev_cluster() {
    binary("shoal-fs");
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(binary("shoal"))
        .args(["bench", "failover", "--trials", "1", "--json"])
        .env("TMPDIR", dir.path())
        .output()
        .expect("run shoal");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(EXIT_OK), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out.stdout)));
    assert_eq!(v["workload"], "failover");
    assert_eq!(v["trials"], 1);
    assert_eq!(v["completed"], 1);
    for field in ["to_master_ms", "to_write_ms"] {
        let times = v[field].as_array().expect(field);
        assert_eq!(times.len(), 1, "{v}");
        assert!(times[0].as_f64().is_some_and(|ms| ms > 0.0 && ms < 20_000.0), "{v}");
    }
    assert!(stderr.contains("trial 0: killed"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).expect("read temp dir").collect();
    assert!(left.is_empty(), "the dev cluster's directory was removed: {left:?}");
}

/// Claim: `bench lock-failover --trials 1 --json` starts its own dev cluster, has a child
/// `shoal lock` take a lock, SIGKILLs it, and reports the time until a waiter is granted that
/// lock (exit 0). A killed holder never releases, so the grant comes only once its lease
/// lapsed: at least TTL (5 s) minus one renewal interval (1.5 s) after the kill.
#[test]
fn bench_lock_failover_grants_the_lock_only_after_the_killed_holders_lease() {
    binary("shoal-fs");
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(binary("shoal"))
        .args(["bench", "lock-failover", "--trials", "1", "--json"])
        .env("TMPDIR", dir.path())
        .env_remove("SHOAL_CLUSTER")
        .output()
        .expect("run shoal");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(EXIT_OK), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out.stdout)));
    assert_eq!(v["workload"], "lock-failover");
    assert_eq!(v["trials"], 1);
    assert_eq!(v["completed"], 1);
    let times = v["kill_to_grant_ms"].as_array().expect("kill_to_grant_ms");
    assert_eq!(times.len(), 1, "{v}");
    let ms = times[0].as_f64().expect("a number");
    assert!((3_000.0..30_000.0).contains(&ms), "granted {ms} ms after the kill: {v}");
    assert!(stderr.contains("trial 0: killed the holder 0 ms after its grant"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).expect("read temp dir").collect();
    assert!(left.is_empty(), "the dev cluster's directory was removed: {left:?}");
}
