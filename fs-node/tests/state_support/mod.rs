//! Helpers shared by the `state_*` tests: a machine over `MemStore` fed through the real entry
//! encoding, with zxids and request seqs handed out in order.
#![allow(dead_code)] // each test binary uses a different part

use bytes::Bytes;
use fs_node::state::{ApplyResult, Command, MemStore, Outcome, StateConfig, StateMachine};
use protocol::message::data::{Condition, ErrorCode, Op, RequestId, WireError};
use protocol::message::lock::{LockGrant, LockOp, SessionOp};
use protocol::message::replication::Entry;
use protocol::{SenderId, Zxid};
use std::collections::BTreeMap;

pub const A: SenderId = protocol::CLIENT_ID_MIN + 1;
pub const B: SenderId = protocol::CLIENT_ID_MIN + 2;
pub const C: SenderId = protocol::CLIENT_ID_MIN + 3;

pub struct Harness {
    pub machine: StateMachine<MemStore>,
    pub last: Zxid,
    seqs: BTreeMap<SenderId, u64>,
}

impl Default for Harness {
    fn default() -> Harness {
        Harness::new(StateConfig::default())
    }
}

impl Harness {
    pub fn new(config: StateConfig) -> Harness {
        Harness {
            machine: StateMachine::new(MemStore::new(), config),
            last: Zxid::new(1, 0),
            seqs: BTreeMap::new(),
        }
    }

    /// The next request id of `client`.
    pub fn next_request(&mut self, client: SenderId) -> RequestId {
        let seq = self.seqs.entry(client).or_insert(0);
        *seq += 1;
        RequestId { client, seq: *seq }
    }

    /// Encodes `command` into the next entry and applies it.
    pub fn apply(&mut self, command: Command) -> ApplyResult {
        self.last = self.last.next().expect("counter does not wrap in tests");
        let data = Bytes::from(command.encode().expect("test commands encode"));
        self.machine.apply(&Entry { zxid: self.last, data }).expect("apply succeeds")
    }

    pub fn write_as(
        &mut self,
        request: RequestId,
        conditions: Vec<Condition>,
        ops: Vec<Op>,
    ) -> Result<Zxid, WireError> {
        let result = self.apply(Command::Write { request, conditions, ops });
        match result.reply.expect("a write is answered").outcome {
            Outcome::Write(r) => r,
            other => panic!("write answered with {other:?}"),
        }
    }

    pub fn write(
        &mut self,
        client: SenderId,
        conditions: Vec<Condition>,
        ops: Vec<Op>,
    ) -> Result<Zxid, WireError> {
        let request = self.next_request(client);
        self.write_as(request, conditions, ops)
    }

    pub fn lock_op(&mut self, client: SenderId, op: LockOp) -> Result<LockGrant, WireError> {
        let request = self.next_request(client);
        lock_outcome(self.apply(Command::Lock { request, op }))
    }

    pub fn acquire(
        &mut self,
        client: SenderId,
        lock: &str,
        auth: i32,
        session: u64,
    ) -> Result<Zxid, WireError> {
        let host = format!("host-{:x}", client - protocol::CLIENT_ID_MIN);
        let op = LockOp::Grant { lock: lock.into(), auth, session, holder: client, host };
        self.lock_op(client, op).map(|g| match g {
            LockGrant::Granted { token } => token,
            other => panic!("acquire answered {other:?}"),
        })
    }

    pub fn release(&mut self, client: SenderId, lock: &str, auth: i32) -> Result<(), WireError> {
        self.lock_op(client, LockOp::Release { lock: lock.into(), auth, holder: client })
            .map(|_| ())
    }

    pub fn open_session(&mut self, client: SenderId, session: u64, ttl_ms: u32) {
        let request = self.next_request(client);
        let op = SessionOp::Open { session, client, ttl_ms };
        let outcome = lock_outcome(self.apply(Command::Session { request, op }));
        assert_eq!(outcome, Ok(LockGrant::SessionOpened { lease_ms: ttl_ms }));
    }
}

pub fn lock_outcome(result: ApplyResult) -> Result<LockGrant, WireError> {
    match result.reply.expect("a lock command is answered").outcome {
        Outcome::Lock(r) => r,
        other => panic!("lock command answered with {other:?}"),
    }
}

pub fn code<T: std::fmt::Debug>(r: Result<T, WireError>) -> ErrorCode {
    r.expect_err("expected a refusal").code
}

pub fn put(key: &str, value: &str) -> Op {
    Op::Put {
        key: key.into(),
        value: Bytes::from(value.to_string()),
        create_only: false,
        ephemeral: None,
    }
}

pub fn put_ephemeral(key: &str, value: &str, session: u64) -> Op {
    Op::Put {
        key: key.into(),
        value: Bytes::from(value.to_string()),
        create_only: false,
        ephemeral: Some(session),
    }
}

pub fn mkdir(key: &str) -> Op {
    Op::Mkdir { key: key.into() }
}

pub fn delete(key: &str, recursive: bool) -> Op {
    Op::Delete { key: key.into(), recursive }
}

pub fn rename(from: &str, to: &str) -> Op {
    Op::Rename { from: from.into(), to: to.into() }
}
