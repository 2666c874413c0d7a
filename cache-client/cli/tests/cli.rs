//! The `shoal` data commands on the in-memory cluster, their exit codes, flag parsing, and the
//! binary's honest refusal while no socket transport exists.

// The in-memory cluster of the library's own tests (real cache-server Servers on MemBackend).
#[path = "../../tests/common/mod.rs"]
mod common;

use clap::Parser;
use common::Cluster;
use shoal_cli::cli::{execute, Cli, Command};
use shoal_cli::exit;

async fn run(
    client: &cache_client::Client<cache_client::transport::MemTransport>,
    args: &[&str],
) -> (i32, String) {
    let mut argv = vec!["shoal"];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).expect("valid flags");
    let mut out = Vec::new();
    let code = match execute(client, &cli.command, &mut out).await {
        Ok(code) => code,
        Err(e) => exit::code_of(&e),
    };
    (code, String::from_utf8(out).unwrap())
}

/// Each data command does what it says and exits with its documented code.
#[tokio::test(start_paused = true)]
async fn data_commands_and_exit_codes() {
    let cluster = Cluster::new(3);
    let client = cluster.client(30);
    assert_eq!(run(&client, &["mkdir", "/app"]).await.0, exit::OK);
    assert_eq!(run(&client, &["put", "/app/a", "hello"]).await.0, exit::OK);
    let file = std::env::temp_dir().join(format!("shoal-cli-test-{}", std::process::id()));
    std::fs::write(&file, b"from file").unwrap();
    assert_eq!(
        run(&client, &["put", "/app/f", "--file", file.to_str().unwrap()]).await.0,
        exit::OK
    );
    std::fs::remove_file(&file).unwrap();
    assert_eq!(run(&client, &["get", "/app/a"]).await, (exit::OK, "hello".to_string()));
    assert_eq!(run(&client, &["get", "/app/f"]).await, (exit::OK, "from file".to_string()));
    assert_eq!(run(&client, &["mkdir", "/app/sub"]).await.0, exit::OK);
    assert_eq!(run(&client, &["ls", "/app"]).await, (exit::OK, "a\nf\nsub/\n".to_string()));
    assert_eq!(run(&client, &["mv", "/app/a", "/app/b"]).await.0, exit::OK);
    assert_eq!(run(&client, &["get", "/app/a"]).await.0, exit::NOT_FOUND);
    assert_eq!(run(&client, &["rm", "/app"]).await.0, exit::REFUSED, "non-empty dir removed");
    assert_eq!(run(&client, &["put", "/none/x", "1"]).await.0, exit::REFUSED);
    assert_eq!(run(&client, &["get", "no-slash"]).await.0, exit::REFUSED);
    assert_eq!(run(&client, &["rm", "-r", "/app"]).await.0, exit::OK);
    assert_eq!(run(&client, &["rm", "/app"]).await.0, exit::NOT_FOUND);
}

/// Compare-and-set from the CLI, `exists`, `get --linearizable`, raw-byte values, and a
/// server-side refusal (rename into itself) that exits 3 with a plain sentence.
#[tokio::test(start_paused = true)]
async fn conditional_writes_exists_and_refusals() {
    let cluster = Cluster::new(3);
    let client = cluster.client(33);
    let (code, zxid) = run(&client, &["put", "/k", "1", "--if-absent"]).await;
    assert_eq!(code, exit::OK);
    let zxid = zxid.trim().to_string();
    assert_eq!(run(&client, &["put", "/k", "2", "--if-absent"]).await.0, exit::REFUSED);
    assert_eq!(run(&client, &["put", "/k", "2", "--if-zxid", "0:1"]).await.0, exit::REFUSED);
    let (code, newer) = run(&client, &["put", "/k", "2", "--if-zxid", &zxid]).await;
    assert_eq!(code, exit::OK);
    assert_eq!(run(&client, &["get", "/k", "--linearizable"]).await, (exit::OK, "2".into()));
    assert_eq!(run(&client, &["rm", "/k", "--if-zxid", &zxid]).await.0, exit::REFUSED);
    assert_eq!(run(&client, &["exists", "/k"]).await, (exit::OK, "value\n".into()));
    assert_eq!(run(&client, &["rm", "/k", "--if-zxid", newer.trim()]).await.0, exit::OK);
    assert_eq!(run(&client, &["exists", "/k"]).await.0, exit::NOT_FOUND);
    assert_eq!(run(&client, &["mkdir", "/a"]).await.0, exit::OK);
    assert_eq!(run(&client, &["exists", "/a"]).await, (exit::OK, "directory\n".into()));
    assert_eq!(run(&client, &["mv", "/a", "/a/b"]).await.0, exit::REFUSED);
    let err = client.rename("/a", "/a/b").await.unwrap_err();
    assert_eq!(err.to_string(), "cannot rename /a to /a/b: the target lies inside the source");
    // A value that is not UTF-8 is stored as its bytes.
    use std::os::unix::ffi::OsStringExt;
    let raw = std::ffi::OsString::from_vec(vec![0xff, 0xfe]);
    let argv: Vec<std::ffi::OsString> = vec!["shoal".into(), "put".into(), "/raw".into(), raw];
    let cli = Cli::try_parse_from(argv).expect("raw bytes are a valid value");
    let mut out = Vec::new();
    assert_eq!(execute(&client, &cli.command, &mut out).await.unwrap(), exit::OK);
    let got = client.read("/raw").await.unwrap().unwrap();
    assert_eq!(&got.value[..], &[0xff, 0xfe]);
    assert!(Cli::try_parse_from(["shoal", "put", "/k", "1", "--if-zxid", "x"]).is_err());
}

/// `watch --count N` prints N events, one line each, then ends.
#[tokio::test(start_paused = true)]
async fn watch_prints_events() {
    let mut cluster = Cluster::new(3);
    let (writer, watcher) = (cluster.client(31), cluster.client(32));
    let task = tokio::spawn(async move {
        let cli =
            Cli::try_parse_from(["shoal", "watch", "/w", "--prefix", "--count", "2"]).unwrap();
        let mut out = Vec::new();
        let code = execute(&watcher, &cli.command, &mut out).await.unwrap();
        (code, String::from_utf8(out).unwrap())
    });
    tokio::task::yield_now().await;
    let z1 = writer.mkdir("/w").await.unwrap();
    let z2 = writer.write("/w/k", "v").await.unwrap();
    cluster.publish();
    let (code, out) = task.await.unwrap();
    assert_eq!(code, exit::OK);
    assert_eq!(out, format!("created /w {z1}\nchanged /w/k {z2}\n"));
}

/// `put` needs exactly one of a value and --file (a usage error otherwise).
#[test]
fn put_needs_one_source() {
    let none = Cli::try_parse_from(["shoal", "put", "/k"]).unwrap_err();
    assert_eq!(none.exit_code(), exit::USAGE);
    let both = Cli::try_parse_from(["shoal", "put", "/k", "v", "--file", "f"]).unwrap_err();
    assert_eq!(both.exit_code(), exit::USAGE);
    let cli = Cli::try_parse_from(["shoal", "--cluster", "239.1.2.3:7000", "get", "/k"]).unwrap();
    assert_eq!(cli.cluster, "239.1.2.3:7000");
    let get = Command::Get {
        key: "/k".into(),
        linearizable: false,
        prefix: false,
        limit: None,
        from: None,
        json: false,
    };
    assert_eq!(cli.command, get);
}

/// Without a readable cluster file the binary says which file and exits "unreachable"; it does
/// not pretend to have talked to a cluster.
#[test]
fn binary_refuses_without_cluster_file() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["--cluster", "239.255.77.1:7700", "get", "/k"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(exit::UNREACHABLE));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cluster file 239.255.77.1:7700"), "{stderr}");
}

/// `get --prefix`: `key<TAB>value` lines of every value below the directory (recursively, in
/// key order), values escaped onto one line; `--limit` and `--from`; `--json` with the zxid,
/// whether it is one snapshot, and a value that is not UTF-8 in base64. Bad input: a relative
/// directory or a `--from` outside it exits 3 (refused input, as every bad key), `--limit 0`
/// and the range flags without `--prefix` are usage errors (exit 2), a missing directory
/// exits 1.
#[tokio::test(start_paused = true)]
async fn get_prefix_prints_a_range() {
    let cluster = Cluster::new(1);
    let client = cluster.client(34);
    for dir in ["/app", "/app/sub"] {
        assert_eq!(run(&client, &["mkdir", dir]).await.0, exit::OK);
    }
    client.write("/app/a", "one").await.unwrap();
    client.write("/app/b", "two\tlines\nhere\\").await.unwrap();
    client.write("/app/sub/c", vec![0xff, b'x', 0x01]).await.unwrap();
    client.write("/other", "no").await.unwrap();
    let (code, out) = run(&client, &["get", "--prefix", "/app"]).await;
    assert_eq!(code, exit::OK);
    assert_eq!(out, "/app/a\tone\n/app/b\ttwo\\tlines\\nhere\\\\\n/app/sub/c\t\\xffx\\x01\n");
    let (code, out) = run(&client, &["get", "--prefix", "/app", "--limit", "1", "--from", "/app/b"]).await;
    assert_eq!((code, out.as_str()), (exit::OK, "/app/b\ttwo\\tlines\\nhere\\\\\n"));

    let (code, out) = run(&client, &["get", "--prefix", "/app", "--json", "--limit", "2"]).await;
    assert_eq!(code, exit::OK);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["dir"], "/app");
    assert_eq!(json["snapshot"], true);
    assert_eq!(json["next"], "/app/sub/c");
    assert_eq!(json["zxid"], client.floor().to_string());
    assert_eq!(json["entries"][1]["value"], "two\tlines\nhere\\");
    let (_, out) = run(&client, &["get", "--prefix", "/app/sub", "--json"]).await;
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["entries"][0]["value_base64"], "/3gB", "0xff 'x' 0x01 in base64");
    assert!(json["entries"][0].get("value").is_none());
    assert_eq!(json["next"], serde_json::Value::Null);

    assert_eq!(run(&client, &["get", "--prefix", "app"]).await.0, exit::REFUSED);
    assert_eq!(run(&client, &["get", "--prefix", "/app", "--from", "/other"]).await.0, exit::REFUSED);
    assert_eq!(run(&client, &["get", "--prefix", "/none"]).await.0, exit::NOT_FOUND);
    assert_eq!(run(&client, &["get", "--prefix", "/other"]).await.0, exit::REFUSED);
    for bad in [
        vec!["shoal", "get", "--prefix", "/app", "--limit", "0"],
        vec!["shoal", "get", "/app", "--limit", "3"],
        vec!["shoal", "get", "/app", "--from", "/app/a"],
        vec!["shoal", "get", "--prefix", "/app", "--linearizable"],
    ] {
        let e = Cli::try_parse_from(&bad).unwrap_err();
        assert_eq!(e.exit_code(), exit::USAGE, "{bad:?}");
    }
}

/// The escaping of `get --prefix` lines: text as it is, the line breakers and every byte that
/// is not UTF-8 escaped, so that one value is one line.
#[test]
fn range_values_are_escaped_onto_one_line() {
    use shoal_cli::cli::escape_value;
    assert_eq!(escape_value("héllo wörld".as_bytes()), "héllo wörld");
    assert_eq!(escape_value(b"a\tb\nc\rd\\e"), "a\\tb\\nc\\rd\\\\e");
    assert_eq!(escape_value(&[0x00, 0x1b, 0xc3]), "\\x00\\x1b\\xc3");
    assert_eq!(escape_value(b""), "");
}
