//! Range reads through the library on the in-memory cluster (real `cache_server::Server` over
//! `MemBackend`): paging, the one state a multi-page read shows, and what it says when it
//! cannot show one. Writes land between two pages deterministically: the node's handler makes
//! them just before it answers a chosen page.

mod common;

use bytes::Bytes;
use cache_client::transport::Handler;
use cache_client::ClientError;
use cache_server::mem::MemBackend;
use cache_server::{Backend, Server};
use common::{address, Cluster};
use protocol::message::data::{Op, ReadOp, ReadRequest, RequestId, UpdateRequest};
use protocol::message::Message;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Writes `key = value` on the master's backend directly (another client's write; each
/// handler is its own client, so that its seqs are not taken for retries of another's).
async fn write(server: &Server<MemBackend>, client: u64, seq: u64, key: &str, value: &str) {
    let request = UpdateRequest {
        request: RequestId { client, seq },
        conditions: vec![],
        ops: vec![Op::Put {
            key: key.into(),
            value: Bytes::from(value.to_string()),
            create_only: false,
            ephemeral: None,
        }],
    };
    server.backend().submit(request).await.expect("write");
}

/// Node 1's handler, which before answering a range page that starts at one of `before`
/// (`from` equal to it) makes the write paired with it, each at most `times` times.
fn writing_between_pages(
    server: Arc<Server<MemBackend>>,
    before: Vec<(&'static str, &'static str)>,
    times: u64,
) -> (Handler, Arc<Mutex<Vec<String>>>) {
    static CLIENTS: AtomicU64 = AtomicU64::new(1 << 40);
    let client = CLIENTS.fetch_add(1, Ordering::SeqCst);
    let seq = Arc::new(AtomicU64::new(0));
    let pages = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&pages);
    let handler: Handler = Arc::new(move |message: Message| {
        let server = Arc::clone(&server);
        let seq = Arc::clone(&seq);
        let before = before.clone();
        let pages = Arc::clone(&pages);
        Box::pin(async move {
            if let Message::Request(ReadRequest { op: ReadOp::Range { from, .. }, .. }) = &message {
                let from = from.clone().unwrap_or_default();
                pages.lock().unwrap().push(from.clone());
                for (at, key) in &before {
                    if from == *at && seq.load(Ordering::SeqCst) < times * before.len() as u64 {
                        let n = seq.fetch_add(1, Ordering::SeqCst) + 1;
                        write(&server, client, n, key, &format!("w{n}")).await;
                    }
                }
            }
            server.handle(message).await
        })
    });
    (handler, seen)
}

async fn setup(cluster: &Cluster, client: &cache_client::Client<impl cache_client::Transport>) {
    client.mkdir("/r").await.unwrap();
    client.mkdir("/r/d").await.unwrap();
    for key in ["/r/a", "/r/b", "/r/d/c", "/r/e"] {
        client.write(key, Bytes::from(format!("v{key}"))).await.unwrap();
    }
    client.write("/s", Bytes::from_static(b"outside")).await.unwrap();
    let _ = cluster;
}

fn keys(read: &cache_client::client::RangeRead) -> Vec<&str> {
    read.entries.iter().map(|e| e.key.as_str()).collect()
}

/// One page and many: every value below the directory at any depth, in key order, from a
/// key, up to a limit with where to go on; each page one state. Bad arguments are refused
/// before anything is sent, a missing directory is `NotFound`.
#[tokio::test(start_paused = true)]
async fn range_pages_and_refusals() {
    let cluster = Cluster::new(1);
    let client = cluster.client(41);
    setup(&cluster, &client).await;
    let page = client.range_page("/r", None, 2).await.unwrap();
    let got: Vec<&str> = page.entries.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(got, ["/r/a", "/r/b"]);
    assert_eq!(page.next.as_deref(), Some("/r/d/c"));
    assert_eq!(page.entries[0].value, "v/r/a");
    assert!(client.floor() >= page.zxid, "a page raises the floor to its state");

    let all = client.range_with("/r", None, None, 2).await.unwrap();
    assert_eq!(keys(&all), ["/r/a", "/r/b", "/r/d/c", "/r/e"]);
    assert_eq!(all.snapshot, Some(all.zxid), "no write between the pages: one state");
    assert_eq!(all.next, None);
    let some = client.range_with("/r", Some("/r/b"), Some(2), 1).await.unwrap();
    assert_eq!(keys(&some), ["/r/b", "/r/d/c"]);
    assert_eq!(some.next.as_deref(), Some("/r/e"), "the limit stopped it before /r/e");
    let root = client.range("/", None, None).await.unwrap();
    assert_eq!(root.entries.len(), 5);

    let refused = |e: &ClientError| matches!(e, ClientError::BadKey(_) | ClientError::Refused { .. });
    for (dir, from, limit) in
        [("r", None, 1), ("/r", Some("/s"), 1), ("/r", Some("/r"), 1), ("/r", None, 0)]
    {
        let e = client.range_page(dir, from, limit).await.unwrap_err();
        assert!(refused(&e), "{dir} {from:?} {limit}: {e:?}");
    }
    assert!(matches!(client.range("/none", None, None).await, Err(ClientError::NotFound { .. })));
    assert!(matches!(client.range("/s", None, None).await, Err(ClientError::NotADirectory { .. })));
}

/// A key written between two pages in the part of the range an earlier page read makes that
/// earlier page stale: the read goes again from that page, at or above the new state, and
/// shows one state with the new value. A key written in the later page's part changes nothing
/// already read: the pages together are the later state without a re-read. Before the history
/// check the first case returned the old value of /r/a with the new state's zxid.
#[tokio::test(start_paused = true)]
async fn a_write_between_pages_is_seen_at_one_state() {
    let cluster = Cluster::new(1);
    let client = cluster.client(42);
    setup(&cluster, &client).await;

    // A write to /r/a (page 1's part) just before page 2 is answered.
    let (handler, pages) =
        writing_between_pages(Arc::clone(cluster.server(1)), vec![("/r/d/c", "/r/a")], 1);
    cluster.network.add_node(address(1), handler);
    let read = client.range_with("/r", None, None, 2).await.unwrap();
    assert_eq!(read.snapshot, Some(read.zxid));
    assert_eq!(read.entries[0].value, "w1", "the state shown has the write between the pages");
    assert_eq!(read.entries[0].zxid, read.zxid);
    assert_eq!(keys(&read), ["/r/a", "/r/b", "/r/d/c", "/r/e"]);
    assert_eq!(*pages.lock().unwrap(), ["", "/r/d/c", "", "/r/d/c"], "read again from page 1");

    // A write to /r/e (page 2's part) before page 2: no re-read.
    let (handler, pages) =
        writing_between_pages(Arc::clone(cluster.server(1)), vec![("/r/d/c", "/r/e")], 1);
    cluster.network.add_node(address(1), handler);
    let read = client.range_with("/r", None, None, 2).await.unwrap();
    assert_eq!(read.snapshot, Some(read.zxid));
    assert_eq!(read.entries[3].value, "w1");
    assert_eq!(*pages.lock().unwrap(), ["", "/r/d/c"], "nothing read was stale");
}

/// A range that changes before every page cannot be shown at one state: after the re-reads
/// allowed the read gives its pages with `snapshot` None (each page one state, later pages
/// later states), and says where its last state is.
#[tokio::test(start_paused = true)]
async fn a_range_that_keeps_changing_says_so() {
    let cluster = Cluster::new(1);
    let client = cluster.client(43);
    setup(&cluster, &client).await;
    let (handler, pages) =
        writing_between_pages(Arc::clone(cluster.server(1)), vec![("/r/d/c", "/r/a")], 100);
    cluster.network.add_node(address(1), handler);
    let read = client.range_with("/r", None, None, 2).await.unwrap();
    assert_eq!(read.snapshot, None);
    assert_eq!(keys(&read), ["/r/a", "/r/b", "/r/d/c", "/r/e"]);
    let rounds = 1 + cache_client::client::RANGE_REREADS_MAX as usize;
    assert_eq!(pages.lock().unwrap().len(), 2 * rounds);
    assert!(read.entries[0].zxid < read.zxid, "the first page is of an earlier state");
}
