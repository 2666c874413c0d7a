//! Locks on real `shoal-fs` processes: grants with fencing tokens through the log, refusal of
//! a held exclusive lock, LockChanged on the group, renewal by the master's lease keeper, and
//! expiry of an unrenewed lock proposed by the master.

use cache_client::net::SocketTransport;
use cache_client::{GroupEvent, Transport};
use protocol::message::data::{ErrorCode, RequestId, WireError};
use protocol::message::lock::{LockGrant, LockRequest, LockRequestOp};
use protocol::message::Message;
use protocol::Zxid;
use shoal_tests::cluster::Cluster;
use std::time::Duration;
use tokio::sync::mpsc;

const ELECTION_WAIT: Duration = Duration::from_secs(20);
/// The lock lease the nodes run with.
const LOCK_TTL_MS: u64 = 1_000;

async fn lock(
    transport: &SocketTransport,
    master: &str,
    seq: u64,
    op: LockRequestOp,
) -> Result<LockGrant, WireError> {
    let request = RequestId { client: transport.id(), seq };
    let message = Message::Lock(LockRequest { request, op });
    match transport.request(master, message, Duration::from_secs(2)).await {
        Ok(Message::LockReply(reply)) => reply.result,
        other => panic!("unexpected reply {other:?}"),
    }
}

fn acquire(name: &str) -> LockRequestOp {
    LockRequestOp::Acquire { lock: name.into(), auth: 7, session: 0, host: "test-host".into() }
}

/// The next LockChanged for `name` on the group stream, within `wait`.
async fn lock_changed(
    events: &mut mpsc::Receiver<GroupEvent>,
    name: &str,
    wait: Duration,
) -> Option<(Zxid, Vec<String>)> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv()).await.ok()??;
        if let GroupEvent::Message(Message::LockChanged(c)) = event {
            if c.lock == name {
                return Some((c.zxid, c.holders));
            }
        }
    }
}

/// Claim: an exclusive lock is granted once (token = the grant's zxid, announced by
/// LockChanged), refused to another client while held and renewed by its holder; a holder that
/// stops renewing loses it one TTL later (the master proposes the expiry, LockChanged shows it
/// free), after which the other client gets it with a larger token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_grant_refuse_renew_and_expire() {
    let ttl = LOCK_TTL_MS.to_string();
    let cluster = Cluster::start_with(3, &["--lock-ttl-ms", &ttl]);
    let client = cluster.client().await;
    let Some(master) = cluster.wait_master(&client, ELECTION_WAIT).await else {
        panic!("no master elected\n{}", cluster.logs())
    };
    let master = cluster.address(master);
    let (a, b) = (cluster.transport().await, cluster.transport().await);
    let mut events = b.subscribe();

    let granted = lock(&a, &master, 1, acquire("/l")).await;
    let Ok(LockGrant::Granted { token }) = granted else {
        panic!("grant: {granted:?}\n{}", cluster.logs())
    };
    let (zxid, holders) =
        lock_changed(&mut events, "/l", Duration::from_secs(5)).await.expect("LockChanged");
    assert_eq!((zxid, holders), (token, vec!["test-host".to_string()]));

    let refused = lock(&b, &master, 1, acquire("/l")).await.unwrap_err();
    assert_eq!(refused.code, ErrorCode::LockHeld, "{refused:?}");

    // Renew for 2 TTLs: the lock stays held.
    for seq in 2..6 {
        tokio::time::sleep(Duration::from_millis(LOCK_TTL_MS / 2)).await;
        let renew = LockRequestOp::Renew { session: 0, locks: vec![("/l".into(), 7)] };
        let renewed = lock(&a, &master, seq, renew).await;
        assert!(matches!(renewed, Ok(LockGrant::Renewed { .. })), "{renewed:?}");
    }
    let still = lock(&b, &master, 2, acquire("/l")).await.unwrap_err();
    assert_eq!(still.code, ErrorCode::LockHeld, "renewed lock was lost: {still:?}");

    // Stop renewing: the master expires it within about one TTL.
    let (_, holders) = lock_changed(&mut events, "/l", Duration::from_millis(LOCK_TTL_MS * 5))
        .await
        .unwrap_or_else(|| panic!("no expiry LockChanged\n{}", cluster.logs()));
    assert!(holders.is_empty(), "expiry frees the lock: {holders:?}");
    let regrant = lock(&b, &master, 3, acquire("/l")).await;
    let Ok(LockGrant::Granted { token: second }) = regrant else { panic!("{regrant:?}") };
    assert!(second > token, "fencing tokens grow: {second} after {token}");
}
