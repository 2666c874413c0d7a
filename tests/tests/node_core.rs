//! Rules of the node core, each on a few [`ManualCluster`] nodes (the product's core on
//! simulated disks, in lock step): deterministic, no sleeps.

use protocol::message::data::RequestId;
use protocol::message::lock::{LockGrant, LockRequest, LockRequestOp};
use protocol::message::Message;
use protocol::NodeId;
use shoal_tests::nodesim::ManualCluster;

const CLIENT: u64 = 77;

fn lock_call(
    c: &mut ManualCluster,
    node: NodeId,
    seq: u64,
    op: LockRequestOp,
) -> Result<LockGrant, String> {
    let now = c.clocks[node as usize - 1];
    let request = LockRequest { request: RequestId { client: CLIENT, seq }, op };
    let mut rx = c.node(node).lock(now, request).map_err(|e| e.to_string())?;
    for _ in 0..200 {
        if let Ok(answer) = rx.try_recv() {
            return answer.map_err(|e| format!("{:?}: {}", e.code, e.message));
        }
        c.run_ms(1, None)?;
    }
    Err("no answer within 200 ms".into())
}

/// A master cut off from its followers keeps its role until it steps down (an election
/// timeout without a quorum) but its lease ends sooner; a renewal it grants after that could
/// outlive the lock: the new master may already have expired it and granted it to another
/// client. Renewals are answered only inside the lease. Failed on the code before this rule:
/// the isolated master renewed at 400 ms (lease 300 ms, step-down at 500 ms).
#[test]
fn a_master_outside_its_lease_renews_nothing() {
    let mut c = ManualCluster::new(3).expect("cluster");
    let m = c.elect(5_000).expect("a master");
    let session = 0x5e55;
    let opened = lock_call(&mut c, m, 1, LockRequestOp::OpenSession { session, ttl_ms: 5_000 });
    assert!(matches!(opened, Ok(LockGrant::SessionOpened { .. })), "{opened:?}");
    let lock = "/locks/a".to_string();
    let acquire = LockRequestOp::Acquire { lock: lock.clone(), auth: 9, session, host: "h".into() };
    let granted = lock_call(&mut c, m, 2, acquire);
    assert!(matches!(granted, Ok(LockGrant::Granted { .. })), "{granted:?}");
    let renew = || LockRequestOp::Renew { session, locks: vec![(lock.clone(), 9)] };
    // A heartbeat round acknowledged by a quorum starts the new master's lease.
    c.run_ms(100, None).expect("run");
    assert!(c.node(m).status().lease_until_ms > Some(c.clocks[m as usize - 1]));
    let renewed = lock_call(&mut c, m, 3, renew());
    assert!(matches!(renewed, Ok(LockGrant::Renewed { .. })), "{renewed:?}");

    c.isolate(m);
    // Past the lease (300 ms) but before the step-down (500 ms without a quorum).
    c.run_ms(400, None).expect("run");
    assert_eq!(c.master(), Some(m), "still master by role: the case this rule is about");
    let late = lock_call(&mut c, m, 4, renew());
    assert!(late.is_err(), "a renewal outside the master's lease was granted: {late:?}");
}

/// Issue 14 point 5: the core's host handles a batch of replication messages (up to
/// `MESSAGES_PER_ROUND_MAX`, the shell's `Core::step_batch`) and must read its clock for each.
/// A follower whose first message of a batch took long (a slow fsync: here 150 ms without
/// CPU, while the master's heartbeats queued) must date the heartbeats by when it handles
/// them: its promise not to vote for another candidate must cover the lease the master
/// counts on. With one reading per batch the promise ends 150 ms early: the follower could
/// help elect a new master while the old one still serves lease reads. Failed with the clock
/// read once per batch (the shell's loop before this commit): "follower 1 promised its master
/// until 811 ms, but the master's lease runs until 920 ms".
#[test]
fn a_heartbeat_handled_late_in_a_batch_is_dated_when_it_is_handled() {
    let mut c = ManualCluster::new(3).expect("cluster");
    let m = c.elect(5_000).expect("a master");
    c.run_ms(200, None).expect("run");
    let f = (1..=3).find(|id| *id != m).expect("a follower");
    let i = f as usize - 1;
    // The batch starts with the first message to arrive once the follower stalls.
    let first_arrival = c.clocks[i] + 1;
    c.run_ms(150, Some(f)).expect("run");
    let batch = c.take_queued(f);
    let heartbeats = batch.iter().filter(|(_, msg)| matches!(msg, Message::Heartbeat(_))).count();
    assert!(heartbeats >= 2, "the batch holds {heartbeats} heartbeats");
    // The first message is handled as it arrives and keeps the core busy until now; the
    // others arrived meanwhile and are handled now.
    let now = c.clocks[i];
    let mut readings = 0;
    let mut clock = || {
        readings += 1;
        if readings == 1 {
            first_arrival
        } else {
            now
        }
    };
    c.node(f).step_batch(&mut clock, batch).expect("step the batch");
    let promised = c.node(f).status().promised_until_ms;
    let lease = c.node(m).status().lease_until_ms.expect("the master leads");
    assert!(lease > now, "the master's lease ({lease} ms) has run out at {now} ms");
    assert!(
        promised >= lease,
        "follower {f} promised its master until {promised} ms, but the master's lease runs \
         until {lease} ms"
    );
}
