//! Watches that resume (issue 18.1), through real `shoal-fs` clusters: a watcher that was away
//! resumes from the last zxid it saw and gets every event after it once, in zxid order, from
//! the nodes' history window, then live; past the window it gets the compacted answer. Library
//! and CLI.

use bytes::Bytes;
use cache_client::net::SocketTransport;
use cache_client::{Client, Kinds, ReadOptions, Target, Transport, WatchEvent};
use protocol::message::data::{
    ChangeEvent, ChangeKind, ErrorCode, ReadOp, ReadRequest, ReadValue, Scope,
};
use protocol::message::Message;
use protocol::Zxid;
use shoal_tests::cluster::{binary, Cluster};
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;

const ELECTION_WAIT: Duration = Duration::from_secs(20);
/// Longest a test waits for one expected event.
const EVENT_WAIT: Duration = Duration::from_secs(15);
/// The `shoal` exit code of a compacted history (`shoal_cli::exit::COMPACTED`).
const EXIT_COMPACTED: i32 = 10;

async fn started(cluster: &Cluster) -> Client<SocketTransport> {
    let client = cluster.client().await;
    if cluster.wait_master(&client, ELECTION_WAIT).await.is_none() {
        panic!("no master elected\n{}", cluster.logs());
    }
    client
}

/// The next `n` events, each within [`EVENT_WAIT`].
async fn take(
    events: &mut UnboundedReceiver<WatchEvent>,
    n: usize,
    cluster: &Cluster,
) -> Vec<WatchEvent> {
    let mut out = Vec::new();
    while out.len() < n {
        match tokio::time::timeout(EVENT_WAIT, events.recv()).await {
            Ok(Some(event)) => out.push(event),
            _ => panic!("{} of {n} events came: {out:?}\n{}", out.len(), cluster.logs()),
        }
    }
    out
}

fn changed(key: &str, zxid: Zxid) -> WatchEvent {
    WatchEvent::Changed { key: key.into(), zxid }
}

/// Every event of a history read of `scope` after `after` from the node at `address`, in
/// pages of `bytes_max`; also the number of pages.
async fn history_at(
    transport: &SocketTransport,
    address: &str,
    scope: &Scope,
    after: Zxid,
    floor: Zxid,
    bytes_max: u32,
) -> (Vec<ChangeEvent>, usize) {
    let mut events = Vec::new();
    let mut after = after;
    for pages in 1..=10_000 {
        let op = ReadOp::History { scope: scope.clone(), after, values: true, bytes_max };
        let request = Message::Request(ReadRequest { floor, linearizable: false, op });
        let reply = transport.request(address, request, Duration::from_secs(2)).await;
        let Ok(Message::ReadReply(reply)) = reply else { panic!("history read: {reply:?}") };
        let Ok(ReadValue::History(page)) = reply.result else {
            panic!("history read: {:?}", reply.result)
        };
        events.extend(page.events);
        after = page.through;
        if page.complete {
            return (events, pages);
        }
    }
    panic!("history never completed");
}

/// The watch event a history event stands for.
fn as_watch_event(event: &ChangeEvent) -> WatchEvent {
    let (key, zxid) = (event.key.clone(), event.zxid);
    match event.kind {
        ChangeKind::Created => WatchEvent::Created { key, zxid },
        ChangeKind::Changed => WatchEvent::Changed { key, zxid },
        ChangeKind::Removed => WatchEvent::Removed { key, zxid },
    }
}

/// Claim: a node's history read gives, for a prefix and for a path below a directory that is
/// renamed and deleted, exactly the events the live stream gave a watcher (creates, changes,
/// directory renames and recursive deletes included), with values, in pages bounded in bytes
/// whose concatenation is the whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_reads_equal_what_the_live_stream_said() {
    let cluster = Cluster::start(3);
    let client = started(&cluster).await;
    let writer = cluster.client().await;
    let start = writer.mkdir("/app").await.expect("mkdir");
    let (_, mut live) =
        client.watch_channel_from(Target::Prefix("/app".into()), Kinds::DATA, start).unwrap();
    let (_, mut below) =
        client.watch_channel_from(Target::Path("/app/d/x".into()), Kinds::DATA, start).unwrap();
    writer.mkdir("/app/d").await.unwrap();
    writer.create("/app/d/x", Bytes::from_static(b"one"), None).await.unwrap();
    for i in 0..20 {
        writer.write("/app/d/x", Bytes::from(format!("value {i}"))).await.unwrap();
    }
    writer.rename("/app/d", "/app/e").await.unwrap();
    writer.rename("/app/e", "/app/d").await.unwrap();
    writer.write("/elsewhere", Bytes::from_static(b"not in scope")).await.unwrap();
    let last = writer.remove("/app/d", true).await.unwrap();
    let live = take(&mut live, 1 + 1 + 20 + 4 + 1, &cluster).await;
    let below = take(&mut below, 1 + 20 + 2 + 1, &cluster).await;
    assert_eq!(live.last().map(WatchEvent::zxid), Some(last));

    let transport = cluster.transport().await;
    for id in cluster.ids() {
        let address = cluster.address(id);
        let scope = Scope::Prefix("/app".into());
        let (whole, pages) = history_at(&transport, &address, &scope, start, last, 1 << 20).await;
        assert_eq!(pages, 1);
        let (paged, pages) = history_at(&transport, &address, &scope, start, last, 100).await;
        assert!(pages > 5, "{pages} pages of at most 100 bytes");
        assert_eq!(paged, whole, "node {id}: pages are not the whole");
        assert_eq!(whole.iter().map(as_watch_event).collect::<Vec<_>>(), live, "node {id}");
        let value =
            whole.iter().find(|e| e.kind == ChangeKind::Changed).and_then(|e| e.value.clone());
        assert_eq!(value, Some(Bytes::from_static(b"value 0")));
        let path = Scope::Path("/app/d/x".into());
        let (events, _) = history_at(&transport, &address, &path, start, last, 1 << 20).await;
        assert_eq!(events.iter().map(as_watch_event).collect::<Vec<_>>(), below, "node {id}");
    }
}

/// Claim: a watcher that stops (its client dropped, as a process restart) and starts again
/// `from` the last zxid it saw gets every change committed meanwhile once, in zxid order,
/// then the live ones. Before issue 18.1 there was no way to resume: a new watch saw only
/// what came after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_watcher_resumes_from_the_last_zxid_it_saw() {
    let cluster = Cluster::start(3);
    let writer = started(&cluster).await;
    writer.mkdir("/app").await.unwrap();
    let watcher = cluster.client().await;
    watcher.exists("/app").await.unwrap();
    let (_, mut events) =
        watcher.watch_channel(Target::Prefix("/app".into()), Kinds::DATA).unwrap();
    let mut expected = Vec::new();
    for i in 0..5 {
        let zxid = writer.write("/app/k", Bytes::from(format!("{i}"))).await.unwrap();
        expected.push(changed("/app/k", zxid));
    }
    let seen = take(&mut events, 5, &cluster).await;
    assert_eq!(seen, expected);
    let resume = seen.last().unwrap().zxid();
    drop(events);
    drop(watcher);

    let mut missed = Vec::new();
    for i in 0..30 {
        let key = format!("/app/m{}", i % 3);
        let zxid = writer.write(&key, Bytes::from(format!("{i}"))).await.unwrap();
        missed.push(changed(&key, zxid));
    }
    let watcher = cluster.client().await;
    let (_, mut events) =
        watcher.watch_channel_from(Target::Prefix("/app".into()), Kinds::DATA, resume).unwrap();
    assert_eq!(take(&mut events, missed.len(), &cluster).await, missed);
    let zxid = writer.write("/app/after", Bytes::from_static(b"live")).await.unwrap();
    assert_eq!(take(&mut events, 1, &cluster).await, vec![changed("/app/after", zxid)]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(events.try_recv().is_err(), "an event came twice");
    assert!(watcher.stats().history_pages >= 1, "the resume did not read history");
}

/// Claim: across a SIGKILL of the master while writes go on, a watcher gets every committed
/// change once, in zxid order: what it received (live, and from history where the stream
/// broke) equals a history read of the whole range from a surviving node, and contains every
/// acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_gets_every_event_once_across_a_master_failover() {
    let mut cluster = Cluster::start(3);
    let writer = started(&cluster).await;
    let start = writer.mkdir("/f").await.unwrap();
    let watcher = cluster.client().await;
    let (_, mut events) =
        watcher.watch_channel_from(Target::Prefix("/f".into()), Kinds::DATA, start).unwrap();
    let master = cluster.wait_master(&writer, ELECTION_WAIT).await.expect("master");
    let mut acked = Vec::new();
    let mut i = 0u32;
    let mut killed = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while acked.len() < 60 && tokio::time::Instant::now() < deadline {
        if acked.len() == 20 && !killed {
            cluster.kill(master);
            killed = true;
        }
        i += 1;
        let key = format!("/f/{}", i % 7);
        if let Ok(zxid) = writer.write(&key, Bytes::from(format!("{i}"))).await {
            acked.push((key, zxid));
        }
    }
    assert_eq!(acked.len(), 60, "writes did not resume after the kill\n{}", cluster.logs());
    let last = acked.last().unwrap().1;
    assert!(last.epoch() > start.epoch(), "no new master took over");

    // Every event up to the last acknowledged write, as a surviving node's history has it.
    let survivor = cluster.ids().into_iter().find(|id| *id != master).unwrap();
    let transport = cluster.transport().await;
    let scope = Scope::Prefix("/f".into());
    let address = cluster.address(survivor);
    let (truth, _) = history_at(&transport, &address, &scope, start, last, 1 << 20).await;
    let truth: Vec<WatchEvent> = truth.iter().map(as_watch_event).collect();
    let got = take(&mut events, truth.len(), &cluster).await;
    assert_eq!(got, truth, "the watcher's events differ from the committed history");
    for (key, zxid) in &acked {
        assert!(got.contains(&changed(key, *zxid)), "acknowledged {key} at {zxid} not watched");
    }
    assert!(got.windows(2).all(|w| w[0].zxid() < w[1].zxid()), "events out of order");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(events.try_recv().is_err(), "an extra event: {:?}", events.try_recv());

    // A watcher that last saw a zxid of the dead master's epoch resumes, after the failover,
    // from the new master's cluster: every event after it, across the epoch change, once.
    let resume = acked[9].1;
    assert_eq!(resume.epoch(), start.epoch());
    let late = cluster.client().await;
    let (_, mut resumed) =
        late.watch_channel_from(Target::Prefix("/f".into()), Kinds::DATA, resume).unwrap();
    let after: Vec<WatchEvent> = truth.iter().filter(|e| e.zxid() > resume).cloned().collect();
    assert!(after.iter().any(|e| e.zxid().epoch() > resume.epoch()));
    assert_eq!(take(&mut resumed, after.len(), &cluster).await, after);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(resumed.try_recv().is_err(), "an extra event after the resume");
}

/// Claim: a watch resumed from below the nodes' history window (here 5 notices) gets the
/// compacted answer naming the oldest zxid it can resume from, then the events after that;
/// `shoal watch --from` prints the sentence and exits 10, and from the named zxid it works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_history_gives_the_compacted_answer() {
    let cluster = Cluster::start_with(3, &["--history-entries", "5"]);
    let writer = started(&cluster).await;
    let start = writer.mkdir("/c").await.unwrap();
    let mut zxids = Vec::new();
    for i in 0..12 {
        zxids.push(writer.write("/c/k", Bytes::from(format!("{i}"))).await.unwrap());
    }
    let watcher = cluster.client().await;
    // A linearizable read puts the watcher's floor at the last write, so every node that
    // answers its history reads holds all 12 (a lagging follower's window would start lower).
    watcher.read_with("/c/k", ReadOptions::linearizable()).await.unwrap();
    let (_, mut events) =
        watcher.watch_channel_from(Target::Prefix("/c".into()), Kinds::DATA, start).unwrap();
    let first = take(&mut events, 1, &cluster).await.remove(0);
    let WatchEvent::Compacted { after, oldest } = first else { panic!("got {first:?}") };
    assert_eq!(after, start);
    assert_eq!(oldest, zxids[6], "5 notices kept: 7..=11 (the oldest one may resume from is 6)");
    let rest = take(&mut events, 5, &cluster).await;
    assert_eq!(rest, zxids[7..].iter().map(|z| changed("/c/k", *z)).collect::<Vec<_>>());

    let shoal = |from: Zxid, count: &str| {
        Command::new(binary("shoal"))
            .arg("--cluster")
            .arg(&cluster.cluster_file)
            .args(["watch", "--prefix", "/c", "--from", &from.to_string(), "--count", count])
            .env_remove("SHOAL_CLUSTER")
            .stdin(Stdio::null())
            .output()
            .expect("run shoal")
    };
    let out = tokio::task::block_in_place(|| shoal(start, "1"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(EXIT_COMPACTED), "{stderr}");
    assert!(stderr.contains(&format!("compacted: re-read from zxid {oldest}")), "{stderr}");
    let out = tokio::task::block_in_place(|| shoal(oldest, "5"));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<String> =
        String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect();
    let wanted: Vec<String> = zxids[7..].iter().map(|z| format!("changed /c/k {z}")).collect();
    assert_eq!(lines, wanted);
}

/// Claim: `shoal watch` prints each event with its zxid; a watcher process that ends and is
/// started again with `--from` the last zxid it printed prints every change made while it
/// was away, once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_watcher_resumes_with_from() {
    let cluster = Cluster::start(3);
    let writer = started(&cluster).await;
    writer.mkdir("/app").await.unwrap();
    let spawn = |extra: &[&str]| {
        Command::new(binary("shoal"))
            .arg("--cluster")
            .arg(&cluster.cluster_file)
            .args(["watch", "--prefix", "/app"])
            .args(extra)
            .env_remove("SHOAL_CLUSTER")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run shoal")
    };
    let first = spawn(&["--count", "2"]);
    // The watcher starts from what a node has applied when it reads; wait until it is
    // registered by writing until it has printed two events.
    let mut written = Vec::new();
    let output = {
        let mut child = first;
        let deadline = std::time::Instant::now() + EVENT_WAIT;
        loop {
            let zxid = writer.write("/app/a", Bytes::from_static(b"x")).await.unwrap();
            written.push(zxid);
            if child.try_wait().unwrap().is_some() || std::time::Instant::now() > deadline {
                break child.wait_with_output().unwrap();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let printed: Vec<String> =
        String::from_utf8_lossy(&output.stdout).lines().map(String::from).collect();
    assert_eq!(printed.len(), 2, "{printed:?}");
    let last: Zxid = printed[1].rsplit(' ').next().unwrap().parse().expect("a zxid ends the line");
    let mut expected: Vec<String> =
        written.iter().filter(|z| **z > last).map(|z| format!("changed /app/a {z}")).collect();
    for i in 0..4 {
        let zxid = writer.write(&format!("/app/b{i}"), Bytes::from_static(b"y")).await.unwrap();
        expected.push(format!("changed /app/b{i} {zxid}"));
    }
    let count = expected.len().to_string();
    let second = spawn(&["--from", &last.to_string(), "--count", &count]);
    let output = tokio::task::block_in_place(|| second.wait_with_output().unwrap());
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let printed: Vec<String> =
        String::from_utf8_lossy(&output.stdout).lines().map(String::from).collect();
    assert_eq!(printed, expected);
}

/// Claim: a node that restarted holds history only from its latest snapshot on (the window
/// is in memory), and says so with the compacted answer; a watcher resuming from below that
/// still gets every event once, in order, from the nodes that hold them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_has_a_shorter_window_and_watchers_resume_past_it() {
    let mut cluster = Cluster::start_with(3, &["--snapshot-entries", "5"]);
    let writer = started(&cluster).await;
    let start = writer.mkdir("/r").await.unwrap();
    let mut expected = Vec::new();
    for i in 0..20 {
        let key = format!("/r/{}", i % 4);
        let zxid = writer.write(&key, Bytes::from(format!("{i}"))).await.unwrap();
        expected.push(changed(&key, zxid));
    }
    let last = expected.last().unwrap().zxid();
    let master = cluster.wait_master(&writer, ELECTION_WAIT).await.expect("master");
    let follower = cluster.ids().into_iter().find(|id| *id != master).unwrap();
    cluster.kill(follower);
    cluster.spawn(follower);
    let address = cluster.address(follower);
    let deadline = tokio::time::Instant::now() + ELECTION_WAIT;
    loop {
        let status = writer.status_of(&address).await;
        if status.as_ref().is_ok_and(|s| s.applied >= last) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{status:?}\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let transport = cluster.transport().await;
    let op = ReadOp::History {
        scope: Scope::Prefix("/r".into()),
        after: start,
        values: false,
        bytes_max: 1 << 20,
    };
    let request = Message::Request(ReadRequest { floor: last, linearizable: false, op });
    let reply = transport.request(&address, request, Duration::from_secs(2)).await;
    let Ok(Message::ReadReply(reply)) = reply else { panic!("history read: {reply:?}") };
    let Err(error) = reply.result else { panic!("the restarted node kept its window") };
    let ErrorCode::Compacted { oldest } = error.code else { panic!("{error:?}") };
    assert!(oldest > start && oldest <= last, "oldest {oldest}");
    assert!(error.message.starts_with(&format!("compacted: re-read from zxid {oldest}")));

    let watcher = cluster.client().await;
    let (_, mut events) =
        watcher.watch_channel_from(Target::Prefix("/r".into()), Kinds::DATA, start).unwrap();
    assert_eq!(take(&mut events, expected.len(), &cluster).await, expected);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(events.try_recv().is_err(), "an extra event");
}
