//! `shoal dev` as a real process, and the `shoal` CLI against it: data written survives a stop
//! and a start of the whole dev cluster.

// `shoal dev` as a child process, shared with python_client.rs.
mod dev;

use dev::Dev;
use shoal_tests::cluster::binary;
use std::path::Path;
use std::process::{Command, Output};

fn shoal(cwd: &Path, args: &[&str]) -> Output {
    Command::new(binary("shoal")).args(args).current_dir(cwd).output().expect("run shoal")
}

/// Claim: `shoal dev` brings up a cluster that `shoal put`/`get` reach with no flags from the
/// same directory; it stops cleanly (exit 0) on SIGTERM, and started again over the same
/// directory it still holds the data.
#[test]
fn dev_cluster_keeps_data_across_restarts() {
    let cwd = tempfile::tempdir().expect("temp dir");
    let dev = Dev::start(cwd.path(), &[]);
    let up = dev.wait_up();
    assert!(up.contains("master node"), "{up}");

    let put = shoal(cwd.path(), &["put", "/hello", "world"]);
    assert_eq!(put.status.code(), Some(0), "{}", String::from_utf8_lossy(&put.stderr));
    let get = shoal(cwd.path(), &["get", "/hello"]);
    assert_eq!(get.status.code(), Some(0), "{}", String::from_utf8_lossy(&get.stderr));
    assert_eq!(get.stdout, b"world");
    assert_eq!(dev.stop(), Some(0), "shoal dev exits 0 after SIGTERM");
    assert!(cwd.path().join("shoal-dev/cluster.key").exists());
    // The nodes' member key: owner-only, and named by nothing a client reads.
    let member_key = cwd.path().join("shoal-dev/member.key");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&member_key).expect("shoal dev writes a member key").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "member.key mode {mode:o}");
    let cluster_file = std::fs::read_to_string(cwd.path().join("shoal-dev/cluster.toml")).unwrap();
    assert!(
        !cluster_file.contains("member.key") && !cluster_file.contains("member_key"),
        "the cluster file names the member key: {cluster_file}"
    );

    let dev = Dev::start(cwd.path(), &[]);
    dev.wait_up();
    let get = shoal(cwd.path(), &["get", "/hello"]);
    assert_eq!(get.status.code(), Some(0), "{}", String::from_utf8_lossy(&get.stderr));
    assert_eq!(get.stdout, b"world", "the value survived the restart");
    let missing = shoal(cwd.path(), &["get", "/absent"]);
    assert_eq!(missing.status.code(), Some(1), "a missing key exits 1");
    // A refused write names the key once (the node sends the key alone for one-key errors,
    // which the client words; a whole sentence there was worded twice).
    let orphan = shoal(cwd.path(), &["put", "/no/such", "x"]);
    let err = String::from_utf8_lossy(&orphan.stderr);
    assert_eq!(
        err.trim(),
        "shoal: parent directory /no does not exist; create it with mkdir first",
        "{err}"
    );
    assert_eq!(dev.stop(), Some(0));
}

/// Claim: the README's backup and restore commands work end to end against a real cluster:
/// `shoal backup --to-node 2` and `--to-dir` end with the donor's `done:` line (exit 0), both
/// leave a backup that verifies (with the tables), and `shoal-fs restore` installs one into an
/// empty data directory and refuses a non-empty one.
#[test]
fn backup_to_node_and_directory_then_restore_through_the_cli() {
    use fs_node::storage::{backup, RealFs};
    let cwd = tempfile::tempdir().expect("temp dir");
    let dev = Dev::start(cwd.path(), &[]);
    dev.wait_up();
    let put = shoal(cwd.path(), &["put", "/backedup", "value"]);
    assert_eq!(put.status.code(), Some(0), "{}", String::from_utf8_lossy(&put.stderr));

    let to_node = shoal(cwd.path(), &["backup", "--to-node", "2", "--timeout", "120"]);
    let said = String::from_utf8_lossy(&to_node.stdout).to_string()
        + &String::from_utf8_lossy(&to_node.stderr);
    assert_eq!(to_node.status.code(), Some(0), "{said}");
    assert!(said.contains("done: backup to node 2"), "{said}");
    let backups: Vec<_> = std::fs::read_dir(cwd.path().join("shoal-dev/node2/backups"))
        .expect("node 2 keeps pushed backups under backups/")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    let manifest = backup::verify(&RealFs, &backups[0]).expect("the pushed backup verifies");
    assert!(manifest.files.iter().any(|f| f.name == "tables"), "a backup holds the tables");

    let dir = cwd.path().join("dir-backup");
    let dir_arg = dir.display().to_string();
    let to_dir = shoal(cwd.path(), &["backup", "--to-dir", &dir_arg, "--timeout", "120"]);
    let said = String::from_utf8_lossy(&to_dir.stdout).to_string()
        + &String::from_utf8_lossy(&to_dir.stderr);
    assert_eq!(to_dir.status.code(), Some(0), "{said}");
    backup::verify(&RealFs, &dir).expect("the directory backup verifies");
    assert_eq!(dev.stop(), Some(0));

    let restore = |into: &Path| {
        Command::new(binary("shoal-fs"))
            .args(["restore", "--from", &dir_arg, "--data-dir"])
            .arg(into)
            .output()
            .expect("run shoal-fs restore")
    };
    let fresh = cwd.path().join("restored");
    let restored = restore(&fresh);
    assert_eq!(restored.status.code(), Some(0), "{}", String::from_utf8_lossy(&restored.stderr));
    let again = restore(&fresh);
    assert_ne!(again.status.code(), Some(0), "a restore into a non-empty directory is refused");
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("not empty"), "the refusal says why: {err}");
}
