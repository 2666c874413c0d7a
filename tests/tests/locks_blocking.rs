//! `BlockingClient` locks and transactions, from plain threads with no runtime of their own:
//! two blocking clients over the in-memory network to one `Server` over `StateBackend` (the
//! real state machine and lease clock, see `shoal_tests::state_backend`), hosted on a runtime
//! the test keeps only for the server side. Real time, but nothing waits on a timer: each
//! handoff is driven by a release (a `LockChanged` wakes the waiter).

use bytes::Bytes;
use cache_client::transport::MemTransport;
use cache_client::{Batch, BlockingClient, ClientError};
use protocol::message::data::Condition;
use protocol::message::Message;
use shoal_tests::state_backend::Harness;
use std::time::Duration;

const TTL: Duration = Duration::from_secs(5);
/// A bound on every wait below, shorter than the TTL: only a release, never an expiry, can
/// hand a lock over within it. The handoffs themselves happen at once.
const WAIT: Duration = Duration::from_secs(2);

/// The server side (with its expiry ticker) on its own runtime, and a way to add clients.
struct Cluster {
    harness: Harness,
    _runtime: tokio::runtime::Runtime,
}

impl Cluster {
    fn new() -> Cluster {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let harness = {
            let _entered = runtime.enter();
            Harness::new(TTL)
        };
        Cluster { harness, _runtime: runtime }
    }

    fn client(&self, seed: u64) -> BlockingClient<MemTransport> {
        let h = &self.harness;
        let client = BlockingClient::new(h.network.transport(), h.config(seed)).unwrap();
        h.network.multicast(Message::FsLive(h.server.fs_live()));
        client.client().pump();
        client
    }
}

/// A blocking lock mirrors the async one: an exclusive grant refuses a second holder naming
/// the first, a write fenced by the guard's condition commits, `lock_wait` on another thread
/// gets the lock once the holder releases, with a larger token, and a write fenced by the
/// released token is then refused and changes nothing.
#[test]
fn blocking_lock_excludes_fences_and_hands_over_on_release() {
    let cluster = Cluster::new();
    let (a, b) = (cluster.client(1), cluster.client(2));
    let guard = a.lock("/mutex", false).unwrap();
    assert!(guard.is_held() && !guard.is_shared());
    assert_eq!(guard.name(), "/mutex");
    assert_eq!(a.held_locks(), vec!["/mutex".to_string()]);
    match b.lock("/mutex", false) {
        Err(ClientError::LockHeld { detail }) => assert!(detail.contains("host1"), "{detail}"),
        other => panic!("a second exclusive holder got {other:?}"),
    }
    let first = guard.token();
    let condition = Condition::LockToken { lock: "/mutex".into(), token: first };
    assert_eq!(guard.condition(), condition);
    a.batch(Batch::new().write("/fenced", "a").if_token("/mutex", first)).unwrap();
    std::thread::scope(|scope| {
        let waiter = scope.spawn(|| b.lock_wait("/mutex", false, WAIT));
        // The waiter may not have asked yet; either way the release hands the lock over.
        guard.release().unwrap();
        let second = waiter.join().unwrap().unwrap();
        assert!(second.token() > first, "token {} after {first}", second.token());
        let stale = Batch::new().write("/fenced", "stale").if_token("/mutex", first);
        assert!(matches!(a.batch(stale), Err(ClientError::LockLost { .. })));
        assert_eq!(b.read("/fenced").unwrap().unwrap().value, Bytes::from("a"));
        second.release().unwrap();
    });
    assert!(cluster.harness.holders("/mutex").is_empty());
}

/// Dropping a blocking guard releases the lock, although the dropping thread has no runtime:
/// the release runs on the client's own, and a waiter gets the lock.
#[test]
fn dropped_blocking_guard_releases_its_lock() {
    let cluster = Cluster::new();
    let (a, b) = (cluster.client(3), cluster.client(4));
    let guard = a.lock("/dropped", false).unwrap();
    drop(guard);
    let next = b.lock_wait("/dropped", false, WAIT).unwrap();
    assert_eq!(cluster.harness.holders("/dropped"), vec![b.client().id()]);
    next.release().unwrap();
}

/// A blocking transaction reads under its locks, commits its buffered writes atomically and
/// releases the locks in the same entry; a cancelled one and a dropped one change nothing
/// and release their locks; a write to an undeclared key is refused before anything is sent.
#[test]
fn blocking_transactions_commit_cancel_and_release_on_drop() {
    let cluster = Cluster::new();
    let (a, b) = (cluster.client(5), cluster.client(6));
    a.write("/x", "10").unwrap();
    a.write("/y", "0").unwrap();
    let mut txn = a.transaction().write("/x").write("/y").wait(WAIT).begin().unwrap();
    assert_eq!(txn.tokens().len(), 2);
    assert_eq!(txn.read("/x").unwrap(), Some(Bytes::from("10")));
    txn.write("/x", "7").unwrap();
    txn.write("/y", "3").unwrap();
    assert_eq!(txn.read("/y").unwrap(), Some(Bytes::from("3")), "reads its own buffered write");
    assert!(matches!(txn.write("/z", "1"), Err(ClientError::Undeclared { .. })));
    txn.commit().unwrap();
    assert!(cluster.harness.holders("/x").is_empty() && cluster.harness.holders("/y").is_empty());
    assert_eq!(b.read("/x").unwrap().unwrap().value, Bytes::from("7"));
    assert_eq!(b.read("/y").unwrap().unwrap().value, Bytes::from("3"));

    let mut cancelled = b.transaction().write("/x").begin().unwrap();
    cancelled.write("/x", "999").unwrap();
    cancelled.cancel().unwrap();
    let mut dropped = b.transaction().read("/y").write("/x").begin().unwrap();
    dropped.write("/x", "998").unwrap();
    drop(dropped);
    // The dropped transaction's releases run on b's runtime; a's transaction waits for them.
    let check = a.transaction().read("/x").read("/y").wait(WAIT).begin().unwrap();
    assert_eq!(check.read("/x").unwrap(), Some(Bytes::from("7")));
    check.commit().unwrap();
}
