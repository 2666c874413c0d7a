//! The `shoal` lock commands (`lock`, `unlock`, `txn`) run through `cli::execute` on the
//! in-process lock cluster (paused time): what they print and the exit codes they map to.

use shoal_cli::cli::{execute, Command};
use shoal_cli::exit::{self, code_of};
use shoal_tests::state_backend::Harness;
use std::time::Duration;

const TTL: Duration = Duration::from_secs(5);

/// `txn` reads, writes and commits as one entry, printing `K=value` per read and the zxid; a
/// malformed `--write` is refused (exit 3) and changes nothing.
#[tokio::test(start_paused = true)]
async fn txn_command_commits_atomically() {
    let h = Harness::new(TTL);
    let client = h.client(1);
    client.write("/a", "1").await.unwrap();
    let txn = Command::Txn {
        reads: vec!["/a".into(), "/missing".into()],
        writes: vec!["/b=2".into(), "/c=3".into()],
        wait: 5,
    };
    let mut out = Vec::new();
    assert_eq!(execute(&client, &txn, &mut out).await.unwrap(), exit::OK);
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(&lines[..2], ["/a=1", "/missing"]);
    let b = client.read("/b").await.unwrap().unwrap();
    let c = client.read("/c").await.unwrap().unwrap();
    assert_eq!(b.zxid, c.zxid, "the two writes did not commit as one entry");
    assert_eq!(lines[2], b.zxid.to_string());
    let bad = Command::Txn { reads: vec![], writes: vec!["/d".into()], wait: 5 };
    let error = execute(&client, &bad, &mut Vec::new()).await.unwrap_err();
    assert_eq!(code_of(&error), exit::REFUSED);
    assert_eq!(client.read("/d").await.unwrap(), None);
}

/// `lock --hold` prints the fencing token, holds the lock for the time asked (others are
/// refused with exit 6), then releases it; `unlock` with a wrong auth word is exit 6 and
/// changes nothing.
#[tokio::test(start_paused = true)]
async fn lock_and_unlock_commands() {
    let h = Harness::new(TTL);
    let (holder, other) = (h.client(1), h.client(2));
    let command =
        Command::Lock { name: "/cli".into(), shared: false, wait: Some(1), hold: Some(8) };
    let task = tokio::spawn(async move {
        let mut out = Vec::new();
        let code = execute(&holder, &command, &mut out).await.unwrap();
        (code, String::from_utf8(out).unwrap())
    });
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(h.holders("/cli").len(), 1, "held past the TTL by renewals");
    let refused = execute(
        &other,
        &Command::Lock { name: "/cli".into(), shared: false, wait: None, hold: Some(0) },
        &mut Vec::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(code_of(&refused), exit::LOCK);
    let unlock = Command::Unlock { name: "/cli".into(), auth: 12345 };
    let refused = execute(&other, &unlock, &mut Vec::new()).await.unwrap_err();
    assert_eq!(code_of(&refused), exit::LOCK);
    assert_eq!(h.holders("/cli").len(), 1, "a refused unlock changed the lock");
    let (code, out) = task.await.unwrap();
    assert_eq!(code, exit::OK);
    assert!(out.starts_with("token "), "{out}");
    assert!(h.holders("/cli").is_empty(), "released after --hold");
}
