//! Property tests: the command encoding round-trips and refuses junk; the state machine is
//! deterministic and its tables survive a snapshot; `MemStore` agrees with a naive model.

mod state_support;

use bytes::Bytes;
use fs_node::locks::LeaseEvent;
use fs_node::state::conformance::NamespaceModel;
use fs_node::state::state_store::check_batch;
use fs_node::state::{
    ApplyResult, Command, EntryKind, MemStore, RequestConfig, StateConfig, StateMachine,
    StateStore, Tables,
};
use proptest::prelude::*;
use protocol::limits::KEY_BYTES_DEFAULT;
use protocol::message::data::{Condition, Op, RequestId};
use protocol::message::lock::{LockOp, SessionOp};
use protocol::message::replication::Entry;
use protocol::{SenderId, Zxid};
use state_support::{A, B, C};
use std::collections::BTreeMap;

const KEYS: &[&str] = &["/a", "/b", "/a/x", "/a/y", "/b/x", "/a/x/z", "/c"];
const LOCKS: &[&str] = &["/l1", "/l2"];
const CLIENTS: &[SenderId] = &[A, B, C];

fn key_s() -> impl Strategy<Value = String> {
    prop::sample::select(KEYS).prop_map(String::from)
}

fn lock_s() -> impl Strategy<Value = String> {
    prop::sample::select(LOCKS).prop_map(String::from)
}

fn client_s() -> impl Strategy<Value = SenderId> {
    prop::sample::select(CLIENTS)
}

fn zxid_s() -> impl Strategy<Value = Zxid> {
    prop_oneof![Just(Zxid::ZERO), (0u32..40).prop_map(|c| Zxid::new(1, c))]
}

fn data_op_s() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (key_s(), "[a-z]{0,3}", any::<bool>(), prop::option::weighted(0.2, 1u64..3)).prop_map(
            |(key, v, create_only, ephemeral)| Op::Put {
                key,
                value: Bytes::from(v),
                create_only,
                ephemeral,
            }
        ),
        3 => key_s().prop_map(|key| Op::Mkdir { key }),
        2 => (key_s(), any::<bool>()).prop_map(|(key, recursive)| Op::Delete { key, recursive }),
        2 => (key_s(), key_s()).prop_map(|(from, to)| Op::Rename { from, to }),
    ]
}

fn op_s() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => data_op_s(),
        1 => (lock_s(), 1i32..4, client_s())
            .prop_map(|(lock, auth, holder)| Op::Lock(LockOp::Release { lock, auth, holder })),
    ]
}

fn condition_s() -> impl Strategy<Value = Condition> {
    prop_oneof![
        3 => (key_s(), zxid_s()).prop_map(|(key, zxid)| Condition::KeyZxid { key, zxid }),
        1 => (lock_s(), zxid_s()).prop_map(|(lock, token)| Condition::LockToken { lock, token }),
        1 => (lock_s(), 1i32..4).prop_map(|(lock, auth)| Condition::LockHeld { lock, auth }),
    ]
}

fn request_s() -> impl Strategy<Value = RequestId> {
    (client_s(), 1u64..8).prop_map(|(client, seq)| RequestId { client, seq })
}

fn command_s() -> impl Strategy<Value = Command> {
    prop_oneof![
        6 => (request_s(), prop::collection::vec(condition_s(), 0..2), prop::collection::vec(op_s(), 0..4))
            .prop_map(|(request, conditions, ops)| Command::Write { request, conditions, ops }),
        3 => (request_s(), lock_s(), 0i32..4, 0u64..3).prop_map(|(request, lock, auth, session)| {
            let holder = request.client;
            Command::Lock {
                request,
                op: LockOp::Grant { lock, auth, session, holder, host: format!("h{holder:x}") },
            }
        }),
        2 => (request_s(), lock_s(), 1i32..4).prop_map(|(request, lock, auth)| {
            Command::Lock { request, op: LockOp::Release { lock, auth, holder: request.client } }
        }),
        2 => (request_s(), 0u64..3, prop_oneof![Just(500u32), 1_000u32..2_000]).prop_map(
            |(request, session, ttl_ms)| Command::Session {
                request,
                op: SessionOp::Open { session, client: request.client, ttl_ms },
            }
        ),
        1 => (request_s(), 1u64..3).prop_map(|(request, session)| Command::Session {
            request,
            op: SessionOp::Close { session, client: request.client },
        }),
        1 => (lock_s(), client_s(), zxid_s())
            .prop_map(|(lock, holder, token)| Command::ExpireLock { lock, holder, token }),
        1 => (1u64..3, zxid_s()).prop_map(|(session, opened)| Command::ExpireSession { session, opened }),
        1 => (1u32..5, 1u8..4).prop_map(|(epoch, master)| Command::Takeover { epoch, master }),
    ]
}

/// A step of a random history: a command, or "expire the n-th current lock holder / session"
/// resolved against the state at that point (random tokens would almost never match).
#[derive(Clone, Debug)]
enum Step {
    Run(Command),
    ExpireHolder(usize),
    ExpireSession(usize),
}

fn step_s() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => command_s().prop_map(Step::Run),
        1 => (0usize..4).prop_map(Step::ExpireHolder),
        1 => (0usize..3).prop_map(Step::ExpireSession),
    ]
}

fn resolve(step: &Step, tables: &Tables) -> Option<Command> {
    match step {
        Step::Run(c) => Some(c.clone()),
        Step::ExpireHolder(n) => {
            let holders: Vec<_> = tables
                .locks
                .iter()
                .flat_map(|(name, l)| {
                    l.holders.iter().map(move |(id, h)| (name.clone(), *id, h.token))
                })
                .collect();
            let (lock, holder, token) = holders.get(n % holders.len().max(1))?.clone();
            Some(Command::ExpireLock { lock, holder, token })
        }
        Step::ExpireSession(n) => {
            let sessions: Vec<_> = tables.sessions.iter().map(|(id, s)| (*id, s.opened)).collect();
            let (session, opened) = *sessions.get(n % sessions.len().max(1))?;
            Some(Command::ExpireSession { session, opened })
        }
    }
}

fn small_config() -> StateConfig {
    StateConfig {
        locks_max: 2,
        sessions_max: 2,
        requests: RequestConfig { results_per_client_max: 3, clients_max: 2, tombstones_max: 1 },
        ..StateConfig::default()
    }
}

/// Invariants of the applied state that every history must keep.
fn check_invariants(m: &StateMachine<MemStore>) -> Result<(), TestCaseError> {
    let tables = m.tables();
    for (name, lock) in tables.locks.iter() {
        prop_assert!(!lock.holders.is_empty(), "lock {} kept without holders", name);
        prop_assert!(
            lock.is_shared() || lock.holders.len() == 1,
            "two exclusive holders of {}",
            name
        );
        for (holder, h) in &lock.holders {
            if h.session != 0 {
                let s = tables.sessions.get(h.session);
                prop_assert!(
                    s.is_some_and(|s| s.locks.contains(name.as_str()) && s.client == *holder)
                );
            }
        }
    }
    for (id, s) in tables.sessions.iter() {
        for k in &s.ephemerals {
            prop_assert_eq!(tables.sessions.owner(k), Some(*id));
            prop_assert_eq!(m.store().stat(k).map(|(kind, _)| kind), Some(EntryKind::Value));
        }
        for l in &s.locks {
            let held =
                tables.locks.get(l).is_some_and(|l| l.holders.values().any(|h| h.session == *id));
            prop_assert!(held, "session {} lists lock {} it does not hold", id, l);
        }
    }
    Ok(())
}

fn apply_encoded(m: &mut StateMachine<MemStore>, zxid: Zxid, command: &Command) -> ApplyResult {
    let data = Bytes::from(command.encode().expect("encodes"));
    m.apply(&Entry { zxid, data }).expect("applies")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Every command survives encode → decode unchanged.
    #[test]
    fn command_encoding_round_trips(command in command_s()) {
        let bytes = command.encode().unwrap();
        prop_assert_eq!(Command::decode(&bytes).unwrap(), command);
    }

    /// Decoding arbitrary bytes returns an error or a command, never panics; a wrong version
    /// byte or trailing bytes are refused.
    #[test]
    fn command_decoding_refuses_junk(junk in prop::collection::vec(any::<u8>(), 0..64), command in command_s()) {
        let _ = Command::decode(&junk);
        let mut bytes = command.encode().unwrap();
        bytes.push(0);
        prop_assert!(Command::decode(&bytes).is_err());
        bytes.pop();
        bytes[0] = fs_node::state::command::COMMAND_VERSION + 1;
        prop_assert!(Command::decode(&bytes).is_err());
    }

    /// Determinism: two machines fed the same random history (one through the encoded entry,
    /// one restored midway from a serialized snapshot of the other's tables) compute the same
    /// results and reach the same state; the state keeps its invariants at every step, and
    /// each lock's grant tokens strictly grow.
    #[test]
    fn replicas_agree_on_random_histories(
        steps in prop::collection::vec(step_s(), 1..60),
        snapshot_at in 0usize..60,
    ) {
        let mut a = StateMachine::new(MemStore::new(), small_config());
        let mut b = StateMachine::new(MemStore::new(), small_config());
        let mut zxid = Zxid::new(1, 0);
        let mut last_token: BTreeMap<String, Zxid> = BTreeMap::new();
        for (i, step) in steps.iter().enumerate() {
            if i == snapshot_at {
                let bytes = b.tables().encode(1 << 20).unwrap();
                let tables = Tables::decode(&bytes, 1 << 20).unwrap();
                prop_assert_eq!(&tables, b.tables());
                b = StateMachine::restore(b.store().clone(), tables, small_config());
            }
            let Some(command) = resolve(step, a.tables()) else { continue };
            zxid = zxid.next().unwrap();
            let ra = a.apply_command(zxid, command.clone()).expect("applies");
            let rb = apply_encoded(&mut b, zxid, &command);
            prop_assert_eq!(&ra, &rb);
            for event in &ra.leases {
                if let LeaseEvent::LockGranted { lock, token, .. } = event {
                    let last = last_token.insert(lock.clone(), *token);
                    prop_assert!(last.is_none_or(|t| t < *token), "token did not grow on {}", lock);
                }
            }
            check_invariants(&a)?;
        }
        prop_assert_eq!(a.tables(), b.tables());
        prop_assert_eq!(a.store(), b.store());
    }

    /// `MemStore` agrees with a naive model (clone the map, apply op by op, discard on error)
    /// on which batches are refused (index and code) and on the state after each batch.
    #[test]
    fn mem_store_matches_naive_model(batches in prop::collection::vec(prop::collection::vec(data_op_s(), 1..4), 1..20)) {
        let mut store = MemStore::new();
        let mut model = NamespaceModel::default();
        // Start from a populated tree so that random ops hit every rule, not mostly "missing".
        let seed = vec![
            Op::Mkdir { key: "/a".into() },
            Op::Mkdir { key: "/a/x".into() },
            Op::Mkdir { key: "/b".into() },
            Op::Put { key: "/a/y".into(), value: Bytes::new(), create_only: false, ephemeral: None },
            Op::Put { key: "/a/x/z".into(), value: Bytes::new(), create_only: false, ephemeral: None },
        ];
        let mut refused = 0;
        for (i, ops) in std::iter::once(&seed).chain(batches.iter()).enumerate() {
            let zxid = Zxid::new(1, i as u32 + 1);
            let expected = model.apply(ops, zxid);
            let got = check_batch(&store, ops, KEY_BYTES_DEFAULT).map_err(|e| (e.index, e.error.code()));
            prop_assert_eq!(got.err(), expected.clone().err());
            refused += usize::from(expected.is_err());
            if let Ok(next) = expected {
                store.apply(zxid, ops).unwrap();
                model = next;
            }
            prop_assert_eq!(store.dump(), model.snapshot());
            for dir in ["/", "/a", "/a/x"] {
                let listed = store.list(dir, usize::MAX).ok().map(|l| {
                    l.into_iter().map(|e| (e.name, e.is_dir, e.zxid)).collect::<Vec<_>>()
                });
                prop_assert_eq!(listed, model.list(dir));
            }
        }
        prop_assert!(refused <= batches.len(), "the seed batch applies");
    }
}

/// One input to the lease clock.
#[derive(Clone, Debug)]
enum LeaseInput {
    Event(LeaseEvent),
    Renew { client: SenderId, session: u64, locks: Vec<(String, i32)> },
    Advance(u64),
}

fn lease_input_s() -> impl Strategy<Value = LeaseInput> {
    let token = (1u32..6).prop_map(|c| Zxid::new(1, c));
    prop_oneof![
        3 => (lock_s(), client_s(), 2i32..4, token.clone()).prop_map(|(lock, holder, auth, token)| {
            LeaseInput::Event(LeaseEvent::LockGranted { lock, holder, auth, session: 0, token })
        }),
        1 => (lock_s(), client_s(), token.clone())
            .prop_map(|(lock, holder, token)| LeaseInput::Event(LeaseEvent::LockReleased { lock, holder, token })),
        2 => (1u64..3, client_s(), 1_000u32..4_000, token.clone()).prop_map(|(session, client, ttl_ms, opened)| {
            LeaseInput::Event(LeaseEvent::SessionOpened { session, client, ttl_ms, opened })
        }),
        1 => (1u64..3, token).prop_map(|(session, opened)| LeaseInput::Event(LeaseEvent::SessionEnded { session, opened })),
        3 => (client_s(), 0u64..3, prop::collection::vec((lock_s(), 2i32..4), 0..3))
            .prop_map(|(client, session, locks)| LeaseInput::Renew { client, session, locks }),
        4 => (0u64..3_000).prop_map(LeaseInput::Advance),
    ]
}

/// The lease clock written the naive way: scan everything on every tick.
#[derive(Default)]
struct KeeperModel {
    ttl_ms: u64,
    locks: BTreeMap<(String, SenderId), (i32, Zxid, u64, bool)>,
    sessions: BTreeMap<u64, (SenderId, u32, Zxid, u64, bool)>,
}

impl KeeperModel {
    fn observe(&mut self, event: &LeaseEvent, now: u64) {
        match event {
            LeaseEvent::LockGranted { lock, holder, auth, token, .. } => {
                self.locks
                    .insert((lock.clone(), *holder), (*auth, *token, now + self.ttl_ms, false));
            }
            LeaseEvent::LockReleased { lock, holder, token } => {
                let key = (lock.clone(), *holder);
                if self.locks.get(&key).is_some_and(|l| l.1 == *token) {
                    self.locks.remove(&key);
                }
            }
            LeaseEvent::SessionOpened { session, client, ttl_ms, opened } => {
                self.sessions
                    .insert(*session, (*client, *ttl_ms, *opened, now + u64::from(*ttl_ms), false));
            }
            LeaseEvent::SessionEnded { session, opened } => {
                if self.sessions.get(session).is_some_and(|s| s.2 == *opened) {
                    self.sessions.remove(session);
                }
            }
        }
    }

    fn renew(&mut self, now: u64, client: SenderId, session: u64, locks: &[(String, i32)]) -> bool {
        if session != 0 && !self.sessions.get(&session).is_some_and(|s| !s.4 && s.0 == client) {
            return false;
        }
        let ok = locks.iter().all(|(name, auth)| {
            self.locks.get(&(name.clone(), client)).is_some_and(|l| !l.3 && l.0 == *auth)
        });
        if !ok {
            return false;
        }
        if let Some(s) = self.sessions.get_mut(&session) {
            s.3 = s.3.max(now + u64::from(s.1));
        }
        for (name, _) in locks {
            let l = self.locks.get_mut(&(name.clone(), client)).unwrap();
            l.2 = l.2.max(now + self.ttl_ms);
        }
        true
    }

    fn tick(&mut self, now: u64) -> Vec<Command> {
        let mut due: Vec<(u64, u8, Command)> = Vec::new();
        for (id, s) in self.sessions.iter_mut().filter(|(_, s)| !s.4 && s.3 <= now) {
            s.4 = true;
            due.push((s.3, 0, Command::ExpireSession { session: *id, opened: s.2 }));
        }
        for ((lock, holder), l) in self.locks.iter_mut().filter(|(_, l)| !l.3 && l.2 <= now) {
            l.3 = true;
            due.push((
                l.2,
                1,
                Command::ExpireLock { lock: lock.clone(), holder: *holder, token: l.1 },
            ));
        }
        // Stable sort: within a kind, map order (session id; lock name, holder) is kept.
        due.sort_by_key(|(deadline, kind, _)| (*deadline, *kind));
        due.into_iter().map(|(_, _, c)| c).collect()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The LeaseKeeper's deadline index agrees with a naive scan on every renewal answer, every
    /// tick's expiries (which and in what order) and the next deadline.
    #[test]
    fn lease_keeper_matches_naive_model(inputs in prop::collection::vec(lease_input_s(), 1..80)) {
        let config = fs_node::locks::LeaseConfig { lock_ttl_ms: 2_000 };
        let mut keeper = fs_node::locks::LeaseKeeper::new(config);
        let mut model = KeeperModel { ttl_ms: 2_000, ..KeeperModel::default() };
        let mut now = 0u64;
        for input in &inputs {
            match input {
                LeaseInput::Event(event) => {
                    keeper.observe(std::slice::from_ref(event), now);
                    model.observe(event, now);
                }
                LeaseInput::Renew { client, session, locks } => {
                    let got = keeper.renew(now, *client, *session, locks).is_ok();
                    prop_assert_eq!(got, model.renew(now, *client, *session, locks));
                }
                LeaseInput::Advance(ms) => {
                    now += ms;
                    prop_assert_eq!(keeper.tick(now), model.tick(now));
                }
            }
            let model_next = model
                .sessions
                .values()
                .filter(|s| !s.4)
                .map(|s| s.3)
                .chain(model.locks.values().filter(|l| !l.3).map(|l| l.2))
                .min();
            prop_assert_eq!(keeper.next_deadline_ms(), model_next);
        }
    }
}
