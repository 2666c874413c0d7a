//! The simulation's lock clients and cache clients (see the parent module's Clients and
//! Checks). Their randomness is `World::arng`, apart from the register clients' and the
//! faults', so that runs without them are the runs of before they existed.

use super::Waiting;
use super::{Asker, Event, World, CLIENT_REDIRECTS_MAX, CLIENT_TIMEOUT_MS};
use super::{LEASE_DRIFT_MARGIN_PERCENT, RETAINED_DATAGRAMS_MAX};
use bytes::Bytes;
use cache_client::cache::{CacheConfig, ClientCache, Hit};
use cache_server::ServerError;
use protocol::message::data::WireError;
use protocol::message::data::{ErrorCode, Op, RequestId, UpdateNotice, UpdateRequest, Versioned};
use protocol::message::lock::{LockGrant, LockRequest, LockRequestOp};
use protocol::message::Message;
use protocol::{NodeId, Zxid};
use rand::rngs::SmallRng;
use rand::Rng;
use std::collections::BTreeMap;

/// The lock TTL of the simulated nodes and the lock clients' session TTL (the smallest
/// session TTL a master accepts, so that leases run out within a run).
pub const LOCK_TTL_MS: u64 = 1_000;
/// A lock client renews its session and locks this often (TTL / 3.3, as the library's
/// default ratio).
pub const RENEW_INTERVAL_MS: u64 = 300;
/// The locks the lock clients compete for.
pub const LOCK_NAMES: [&str; 2] = ["/locks/a", "/locks/b"];
/// A lock client holds a lock for up to this long before it releases it.
pub const LOCK_HOLD_MS_MAX: u64 = 1_500;
/// The keys the cache clients read and write (apart from the register clients' `/k*`).
pub const CACHE_KEYS: usize = 3;
/// Share of cache client operations that are writes.
pub const CACHE_WRITE_SHARE: f64 = 0.3;
/// Nodes a cache client's read tries when they answer `Behind`.
pub const CACHE_READ_TRIES_MAX: u32 = 3;
/// After a flush, the cache asks the master for a fill floor at most this often (the
/// client's `POSITION_PROBE_BACKOFF`).
pub const POSITION_PROBE_BACKOFF_MS: u64 = 1_000;
/// The messaging layer's receiver: first NAK after a hole is seen, then every retry interval;
/// a hole becomes a gap after this many rounds during which the sender was heard, or once
/// the sender was silent for `SENDER_GONE_MS`.
pub const NAK_DELAY_MS: u64 = 5;
pub const NAK_RETRY_MS: u64 = 30;
pub const NAK_ROUNDS_MAX: u32 = 40;
pub const SENDER_GONE_MS: u64 = 10_000;
/// A multicast waits this long in the sender's queue (credit, batching) before it is on the
/// wire: a crash loses what the node multicast in the last `SEND_QUEUE_MS`, and a receiver
/// that heard nothing after it cannot know (a notice never sent, issue 15 point 1).
pub const SEND_QUEUE_MS: u64 = 5;
/// Missing datagrams one NAK names.
pub const NAK_RANGE_MAX: u64 = 64;

/// Until when a lease of `lease_ms` granted to a request sent at `sent` is valid for the
/// client (the library's `locks::valid_until`).
pub fn valid_until(sent: u64, lease_ms: u32) -> u64 {
    let margin = u64::from(lease_ms) * u64::from(LEASE_DRIFT_MARGIN_PERCENT) / 100;
    sent + u64::from(lease_ms) - margin
}

/// A time a lock client counted on a lock: from `start` until `end` (simulated ms).
#[derive(Clone, Debug)]
pub struct Belief {
    pub lock: String,
    pub client: usize,
    pub token: Zxid,
    pub start: u64,
    /// `u64::MAX` while it lasts.
    pub end: u64,
}

#[derive(Clone, Debug)]
struct Held {
    name: String,
    auth: i32,
    token: Zxid,
}

#[derive(Clone, Debug)]
struct LockCall {
    op: LockRequestOp,
    request: RequestId,
    /// When the first attempt was sent (validity counts from there).
    sent: u64,
    deadline: u64,
    redirects: u32,
    generation: u64,
}

pub struct LockClient {
    id: u64,
    session: Option<u64>,
    valid_until: Option<u64>,
    /// Bumped when everything is lost (a renewal answered after that is ignored).
    generation: u64,
    held: Option<Held>,
    call: Option<LockCall>,
    attempt: u64,
    next_seq: u64,
    renew_due: u64,
    release_at: u64,
    target: NodeId,
    /// The index in `World::beliefs` of the belief that lasts.
    belief: Option<usize>,
    wake_at: Option<u64>,
    pub done: bool,
}

impl LockClient {
    pub fn new(c: usize, rng: &mut SmallRng) -> LockClient {
        LockClient {
            id: 2_000 + c as u64,
            session: None,
            valid_until: None,
            generation: 0,
            held: None,
            call: None,
            attempt: 0,
            next_seq: 1,
            renew_due: 0,
            release_at: 0,
            target: rng.gen_range(1..=3),
            belief: None,
            wake_at: None,
            done: false,
        }
    }
}

/// A cache client's operation in flight.
#[derive(Clone, Debug)]
enum CacheOp {
    /// The master's linearizable zxid, to learn a fill floor (then the read of `key`).
    Probe {
        key: String,
        generation: u64,
    },
    Read {
        key: String,
        generation: u64,
        tries: u32,
    },
    Write {
        ops: Vec<Op>,
        request: RequestId,
        generation: u64,
        redirects: u32,
    },
}

/// A node's answer to a cache client.
#[derive(Debug)]
pub enum CacheAnswer {
    Wrote(Result<Zxid, ServerError>),
    Position(Zxid),
    Value(Option<Versioned>, Zxid),
    Behind,
}

/// A cache client's receiving end of one sender's group stream (one incarnation).
struct Stream {
    incarnation: u64,
    next: u64,
    known_below: u64,
    pending: BTreeMap<u64, Option<UpdateNotice>>,
    delivered_any: bool,
    nak_pending: bool,
    /// NAK rounds without progress during which the sender was heard.
    rounds: u32,
    last_heard: u64,
}

impl Stream {
    fn new(incarnation: u64, now: u64) -> Stream {
        Stream {
            incarnation,
            next: 1,
            known_below: 1,
            pending: BTreeMap::new(),
            delivered_any: false,
            nak_pending: false,
            rounds: 0,
            last_heard: now,
        }
    }
}

pub struct CacheClient {
    id: u64,
    cache: ClientCache,
    floor: Zxid,
    streams: BTreeMap<NodeId, Stream>,
    op: Option<CacheOp>,
    attempt: u64,
    target: NodeId,
    next_seq: u64,
    next_value: u64,
    master: Option<NodeId>,
    next_probe: u64,
    pub done: bool,
}

impl CacheClient {
    pub fn new(c: usize) -> CacheClient {
        CacheClient {
            id: 3_000 + c as u64,
            cache: ClientCache::new(CacheConfig::default()),
            floor: Zxid::ZERO,
            streams: BTreeMap::new(),
            op: None,
            attempt: 0,
            target: 1,
            next_seq: 1,
            next_value: 0,
            master: None,
            next_probe: 0,
            done: false,
        }
    }
}

/// `SHOAL_SIM_TRACE=1` prints what the cache clients see (for replaying one seed).
fn tracing() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("SHOAL_SIM_TRACE").is_some())
}

macro_rules! trace {
    ($($arg:tt)*) => {
        if tracing() {
            eprintln!($($arg)*);
        }
    };
}

fn cache_key(k: usize) -> String {
    format!("/c{k}")
}

impl World {
    // ---- lock clients ----

    fn lock_wake(&mut self, c: usize, delay: u64) {
        let at = self.now + delay;
        let client = &mut self.lockers[c];
        if client.wake_at.is_some_and(|w| w <= at) {
            return;
        }
        client.wake_at = Some(at);
        self.at(delay, Event::LockNext(c));
    }

    /// Closes the belief of client `c` if its validity ran out.
    fn lock_settle(&mut self, c: usize) {
        let now = self.now;
        let client = &mut self.lockers[c];
        if let Some(i) = client.belief {
            let until = client.valid_until.unwrap_or(0);
            if now >= until {
                self.beliefs[i].end = until.max(self.beliefs[i].start);
                client.belief = None;
            }
        }
    }

    fn lock_close_belief(&mut self, c: usize) {
        let now = self.now;
        if let Some(i) = self.lockers[c].belief.take() {
            self.beliefs[i].end = now;
        }
    }

    /// Opens a belief for the lock client `c` holds, if it counts on it now.
    fn lock_open_belief(&mut self, c: usize) {
        let now = self.now;
        let client = &mut self.lockers[c];
        let valid = client.valid_until.is_some_and(|u| now < u);
        let Some(held) = client.held.as_ref().filter(|_| valid && client.belief.is_none()) else {
            return;
        };
        client.belief = Some(self.beliefs.len());
        self.beliefs.push(Belief {
            lock: held.name.clone(),
            client: c,
            token: held.token,
            start: now,
            end: u64::MAX,
        });
    }

    /// Everything is lost: the session and every lock (the library's `forget_all(true)`).
    fn lock_forget_all(&mut self, c: usize) {
        self.lock_close_belief(c);
        let client = &mut self.lockers[c];
        client.held = None;
        client.session = None;
        client.valid_until = None;
        client.generation += 1;
        self.report.sessions_lost += 1;
    }

    pub(super) fn lock_next(&mut self, c: usize) {
        if self.lockers[c].wake_at == Some(self.now) {
            self.lockers[c].wake_at = None;
        }
        self.lock_settle(c);
        let now = self.now;
        let client = &self.lockers[c];
        if client.call.is_some() {
            return;
        }
        let Some(session) = client.session else {
            if client.done {
                return;
            }
            let session = self.arng.gen_range(1..=u64::MAX);
            let ttl_ms = LOCK_TTL_MS as u32;
            self.lock_begin(c, LockRequestOp::OpenSession { session, ttl_ms });
            return;
        };
        if client.renew_due <= now {
            let locks = client.held.iter().map(|h| (h.name.clone(), h.auth)).collect();
            self.lock_begin(c, LockRequestOp::Renew { session, locks });
            return;
        }
        match &client.held {
            Some(h) if client.release_at <= now || client.done => {
                // The library forgets the lock before it sends the release.
                let op = LockRequestOp::Release { lock: h.name.clone(), auth: h.auth };
                self.lock_close_belief(c);
                self.lockers[c].held = None;
                self.lock_begin(c, op);
            }
            Some(_) => {
                let wake = client.renew_due.min(client.release_at) - now;
                self.lock_wake(c, wake);
            }
            None if client.done => {
                let wake = client.renew_due - now;
                self.lock_wake(c, wake);
            }
            None => {
                let lock = LOCK_NAMES[self.arng.gen_range(0..LOCK_NAMES.len())].to_string();
                let auth = self.arng.gen_range(2..=i32::MAX);
                let host = format!("sim-{c}");
                self.lock_begin(c, LockRequestOp::Acquire { lock, auth, session, host });
            }
        }
    }

    fn lock_begin(&mut self, c: usize, op: LockRequestOp) {
        let now = self.now;
        let client = &mut self.lockers[c];
        let request = RequestId { client: client.id, seq: client.next_seq };
        client.next_seq += 1;
        // A renewal makes one attempt bounded by the renewal period, as the library's does.
        let budget = if matches!(op, LockRequestOp::Renew { .. }) {
            RENEW_INTERVAL_MS
        } else {
            CLIENT_TIMEOUT_MS
        };
        let generation = client.generation;
        client.call = Some(LockCall {
            op,
            request,
            sent: now,
            deadline: now + budget,
            redirects: 0,
            generation,
        });
        let target = client.target;
        self.lock_send(c, target, 0);
    }

    fn lock_send(&mut self, c: usize, node: NodeId, pause: u64) {
        let now = self.now;
        let client = &mut self.lockers[c];
        client.attempt += 1;
        client.target = node;
        let attempt = client.attempt;
        let deadline = client.call.as_ref().map_or(now, |call| call.deadline);
        self.at(deadline.saturating_sub(now).max(pause), Event::LockTimeout { client: c, attempt });
        if let Some(d) = self.client_delay(Asker::Lock(c), node) {
            self.at(pause + d, Event::LockArrive { client: c, node, attempt });
        }
    }

    pub(super) fn lock_arrive(&mut self, c: usize, id: NodeId, attempt: u64) -> Result<(), String> {
        let client = &self.lockers[c];
        if client.attempt != attempt {
            return Ok(());
        }
        let Some(call) = client.call.as_ref() else { return Ok(()) };
        let request = LockRequest { request: call.request, op: call.op.clone() };
        let now = self.local_ms(id);
        let node = self.host(id).node.as_mut().expect("node is up");
        let rx = node.lock(now, request).map_err(|e| format!("node {id}: {e}"))?;
        self.host(id).waiting.push((Asker::Lock(c), attempt, Waiting::Lock(rx)));
        self.after(id)
    }

    /// An answer (`None`: the call's time ran out) to lock client `c`'s call.
    pub(super) fn lock_reply(
        &mut self,
        c: usize,
        attempt: u64,
        result: Option<Result<LockGrant, WireError>>,
    ) {
        if self.lockers[c].attempt != attempt || self.lockers[c].call.is_none() {
            return;
        }
        self.lock_settle(c);
        let now = self.now;
        if let Some(Err(WireError { code: ErrorCode::NotMaster { master }, .. })) = &result {
            let call = self.lockers[c].call.as_mut().expect("a call");
            call.redirects += 1;
            if call.redirects <= CLIENT_REDIRECTS_MAX && now < call.deadline {
                let n = self.cfg.nodes as NodeId;
                let next = master.unwrap_or_else(|| self.arng.gen_range(1..=n));
                // Without a master to name, wait a little for the election.
                let pause = if master.is_some() { 0 } else { 50 };
                self.lock_send(c, next, pause);
                return;
            }
        }
        let call = self.lockers[c].call.take().expect("a call");
        self.lockers[c].attempt += 1;
        if result.is_none() {
            // No answer: the next call may go elsewhere.
            let n = self.cfg.nodes as NodeId;
            self.lockers[c].target = self.arng.gen_range(1..=n);
        }
        let mut think = self.arng.gen_range(0..50);
        match (&call.op, result) {
            (
                LockRequestOp::OpenSession { session, ttl_ms },
                Some(Ok(LockGrant::SessionOpened { lease_ms })),
            ) => {
                let client = &mut self.lockers[c];
                client.session = Some(*session);
                client.valid_until = Some(valid_until(call.sent, lease_ms.min(*ttl_ms)));
                client.renew_due = now + RENEW_INTERVAL_MS;
            }
            (LockRequestOp::Acquire { lock, auth, .. }, Some(Ok(LockGrant::Granted { token }))) => {
                let hold = self.arng.gen_range(50..=LOCK_HOLD_MS_MAX);
                let client = &mut self.lockers[c];
                if client.generation == call.generation {
                    client.held = Some(Held { name: lock.clone(), auth: *auth, token });
                    client.release_at = now + hold;
                    self.report.locks_acquired += 1;
                    self.lock_open_belief(c);
                }
            }
            (LockRequestOp::Renew { .. }, Some(Ok(LockGrant::Renewed { lease_ms }))) => {
                let client = &mut self.lockers[c];
                if client.generation == call.generation {
                    client.valid_until = Some(valid_until(call.sent, lease_ms));
                    client.renew_due = now + RENEW_INTERVAL_MS;
                    self.report.renewals += 1;
                    self.lock_open_belief(c);
                }
            }
            (LockRequestOp::Renew { .. }, result) => {
                let refused = matches!(
                    &result,
                    Some(Err(WireError {
                        code: ErrorCode::SessionExpired
                            | ErrorCode::LockNotHeld
                            | ErrorCode::BadAuth,
                        ..
                    }))
                );
                let client = &self.lockers[c];
                if client.generation == call.generation {
                    let left = client.valid_until.map_or(0, |u| u.saturating_sub(now));
                    if refused || left == 0 {
                        self.lock_forget_all(c);
                    } else {
                        // Try again sooner, but never past the end of the validity.
                        self.lockers[c].renew_due = now + (RENEW_INTERVAL_MS / 3).min(left);
                    }
                }
                think = 0;
            }
            // A refused or unanswered open, acquire or release: the next step tries again.
            _ => {}
        }
        self.lock_wake(c, think);
    }

    /// At most one client counts on a lock at any instant, and the fencing tokens of a lock's
    /// successive holders strictly increase.
    pub(super) fn check_locks(&mut self) -> Result<(), String> {
        for c in 0..self.lockers.len() {
            self.lock_settle(c);
            let end = self.now;
            if let Some(i) = self.lockers[c].belief.take() {
                let until = self.lockers[c].valid_until.unwrap_or(end).min(end);
                self.beliefs[i].end = until.max(self.beliefs[i].start);
            }
        }
        let mut by_lock: BTreeMap<&str, Vec<&super::actors::Belief>> = BTreeMap::new();
        for b in self.beliefs.iter().filter(|b| b.end > b.start) {
            by_lock.entry(&b.lock).or_default().push(b);
        }
        let mut violations = Vec::new();
        for (lock, mut beliefs) in by_lock {
            beliefs.sort_by_key(|b| (b.start, b.token));
            for (j, b) in beliefs.iter().enumerate() {
                for a in &beliefs[..j] {
                    if (a.client, a.token) == (b.client, b.token) {
                        continue;
                    }
                    if b.start < a.end {
                        violations.push(format!(
                            "lock {lock}: client {} counted on it (token {}) from {} until {} \
                             ms, client {} (token {}) from {} ms",
                            a.client, a.token, a.start, a.end, b.client, b.token, b.start
                        ));
                    } else if b.token <= a.token {
                        violations.push(format!(
                            "lock {lock}: token {} of client {} (from {} ms) is not above token \
                             {} of its predecessor, client {} (until {} ms)",
                            b.token, b.client, b.start, a.token, a.client, a.end
                        ));
                    }
                }
            }
        }
        self.report.lock_violations = violations.len();
        self.report.first_lock_violation = violations.first().cloned();
        if self.cfg.checks.locks && !violations.is_empty() {
            return Err(format!(
                "{} lock violations; the first: {}",
                violations.len(),
                violations[0]
            ));
        }
        Ok(())
    }

    // ---- cache clients ----

    fn cache_after(&mut self, c: usize) {
        let think = self.arng.gen_range(0..20);
        self.at(think, Event::CacheNext(c));
    }

    pub(super) fn cache_next(&mut self, c: usize) {
        let client = &self.cachers[c];
        if client.done || client.op.is_some() {
            return;
        }
        let key = cache_key(self.arng.gen_range(0..CACHE_KEYS));
        if self.arng.gen_bool(CACHE_WRITE_SHARE) {
            let client = &mut self.cachers[c];
            client.next_value += 1;
            let value = format!("{}-{}", client.id, client.next_value);
            let ops = vec![Op::Put {
                key,
                value: Bytes::from(value),
                create_only: false,
                ephemeral: None,
            }];
            let request = RequestId { client: client.id, seq: client.next_seq };
            client.next_seq += 1;
            let generation = client.cache.generation();
            client.op = Some(CacheOp::Write { ops, request, generation, redirects: 0 });
            let n = self.cfg.nodes as NodeId;
            let target = self.cachers[c].master.unwrap_or_else(|| self.arng.gen_range(1..=n));
            self.cache_send(c, target, 0);
            return;
        }
        let t = self.instant();
        let client = &mut self.cachers[c];
        let floor = client.floor;
        if let Some(hit) = client.cache.lookup(&key, floor, t) {
            client.floor = client.floor.max(hit.as_of);
            trace!(
                "{} c{c} hit {key} {:?} floor {floor}",
                self.now,
                hit.value.as_ref().map(|v| v.zxid)
            );
            self.check_hit(c, &key, floor, &hit);
            self.cache_after(c);
            return;
        }
        let probe = !client.cache.can_fill() && self.now >= client.next_probe;
        match client.master.filter(|_| probe) {
            Some(master) => {
                client.next_probe = self.now + POSITION_PROBE_BACKOFF_MS;
                let generation = client.cache.generation();
                client.op = Some(CacheOp::Probe { key, generation });
                self.cache_send(c, master, 0);
            }
            None => self.cache_read(c, key, 0),
        }
    }

    fn cache_read(&mut self, c: usize, key: String, tries: u32) {
        let client = &mut self.cachers[c];
        let generation = client.cache.generation();
        client.op = Some(CacheOp::Read { key, generation, tries });
        let n = self.cfg.nodes as NodeId;
        let node = self.arng.gen_range(1..=n);
        self.cache_send(c, node, 0);
    }

    fn cache_send(&mut self, c: usize, node: NodeId, pause: u64) {
        let client = &mut self.cachers[c];
        client.attempt += 1;
        client.target = node;
        let attempt = client.attempt;
        self.at(pause + CLIENT_TIMEOUT_MS, Event::CacheTimeout { client: c, attempt });
        if let Some(d) = self.client_delay(Asker::Cache(c), node) {
            self.at(pause + d, Event::CacheArrive { client: c, node, attempt });
        }
    }

    pub(super) fn cache_arrive(
        &mut self,
        c: usize,
        id: NodeId,
        attempt: u64,
    ) -> Result<(), String> {
        let client = &self.cachers[c];
        if client.attempt != attempt {
            return Ok(());
        }
        let Some(op) = client.op.clone() else { return Ok(()) };
        let floor = client.floor;
        let now = self.local_ms(id);
        let node = self.host(id).node.as_mut().expect("node is up");
        let waiting = match op {
            CacheOp::Write { ops, request, .. } => {
                let update = UpdateRequest { request, conditions: Vec::new(), ops };
                Waiting::Write(node.write(now, update).map_err(|e| format!("node {id}: {e}"))?)
            }
            CacheOp::Probe { .. } => {
                Waiting::Barrier(node.linearizable(now).map_err(|e| format!("node {id}: {e}"))?)
            }
            CacheOp::Read { key, .. } => {
                let (value, applied) =
                    node.get(&key).map_err(|e| format!("node {id} read {key}: {e}"))?;
                let reply = if applied < floor {
                    CacheAnswer::Behind
                } else {
                    CacheAnswer::Value(value, applied)
                };
                if let Some(d) = self.client_delay(Asker::Cache(c), id) {
                    self.at(d, Event::CacheReply { client: c, attempt, reply });
                }
                return Ok(());
            }
        };
        self.host(id).waiting.push((Asker::Cache(c), attempt, waiting));
        self.after(id)
    }

    /// An answer (`None`: the attempt timed out) to cache client `c`.
    pub(super) fn cache_reply(&mut self, c: usize, attempt: u64, answer: Option<CacheAnswer>) {
        if self.cachers[c].attempt != attempt || self.cachers[c].op.is_none() {
            return;
        }
        let t = self.instant();
        let client = &mut self.cachers[c];
        let op = client.op.take().expect("an op");
        client.attempt += 1;
        match (op, answer) {
            (CacheOp::Write { ops, generation, .. }, Some(CacheAnswer::Wrote(Ok(zxid)))) => {
                client.master = Some(client.target);
                client.floor = client.floor.max(zxid);
                trace!("{} c{c} own write at {zxid} via {}", self.now, client.target);
                client.cache.apply_own(&ops, zxid, generation, t);
                self.acked_cache_writes.push((zxid, ops));
            }
            (
                CacheOp::Write { ops, request, generation, redirects },
                Some(CacheAnswer::Wrote(Err(ServerError::NotMaster { master }))),
            ) if redirects < CLIENT_REDIRECTS_MAX => {
                client.master = master;
                client.op =
                    Some(CacheOp::Write { ops, request, generation, redirects: redirects + 1 });
                let n = self.cfg.nodes as NodeId;
                let next = master.unwrap_or_else(|| self.arng.gen_range(1..=n));
                let pause = if master.is_some() { 0 } else { 50 };
                self.cache_send(c, next, pause);
                return;
            }
            (CacheOp::Write { .. }, _) => {
                // Unknown outcome: the client gives up (it would retry with the same id).
                client.master = None;
            }
            (CacheOp::Probe { key, generation }, answer) => {
                match answer {
                    Some(CacheAnswer::Position(zxid)) => {
                        client.cache.learn_position(zxid, generation)
                    }
                    Some(CacheAnswer::Wrote(Err(ServerError::NotMaster { master }))) => {
                        client.master = master;
                    }
                    _ => {}
                }
                // Failure only delays caching: the read goes on.
                self.cache_read(c, key, 0);
                return;
            }
            (CacheOp::Read { key, generation, .. }, Some(CacheAnswer::Value(value, applied))) => {
                client.floor = client.floor.max(applied);
                trace!(
                    "{} c{c} fill {key} {:?} at {applied}",
                    self.now,
                    value.as_ref().map(|v| v.zxid)
                );
                if client.cache.fill(&key, value, applied, generation, t) {
                    self.report.cache_fills += 1;
                }
            }
            (CacheOp::Read { key, tries, .. }, Some(CacheAnswer::Behind))
                if tries + 1 < CACHE_READ_TRIES_MAX =>
            {
                self.cache_read(c, key, tries + 1);
                return;
            }
            (CacheOp::Read { .. }, _) => {}
        }
        self.cache_after(c);
    }

    /// A cache hit of client `c` for `key` with floor `floor` must show the key's committed
    /// value at some zxid at or above the floor: the write it shows is in the announced
    /// history, and no later write to the key is at or below the floor.
    fn check_hit(&mut self, c: usize, key: &str, floor: Zxid, hit: &Hit) {
        self.report.cache_hits += 1;
        let writes: Vec<(Zxid, &Bytes)> = self
            .announced
            .iter()
            .flat_map(|(z, ops)| ops.iter().map(move |op| (*z, op)))
            .filter_map(|(z, op)| match op {
                Op::Put { key: k, value, .. } if k == key => Some((z, value)),
                _ => None,
            })
            .collect();
        let shown = hit.value.as_ref().map(|v| v.zxid);
        let problem = match &hit.value {
            Some(v) => match writes.iter().find(|(z, _)| *z == v.zxid) {
                None => Some(format!("a value no master announced (written at {})", v.zxid)),
                Some((_, value)) if **value != v.value => {
                    Some(format!("a value other than the one committed at {}", v.zxid))
                }
                _ => None,
            },
            None => None,
        };
        let next = writes.iter().find(|(z, _)| shown.is_none_or(|s| *z > s));
        let problem = problem.or_else(|| match next {
            Some((z, _)) if *z <= floor => Some(format!(
                "the key was overwritten at {z}, at or below the client's floor {floor}"
            )),
            _ => None,
        });
        if let Some(problem) = problem {
            self.report.stale_hits += 1;
            if self.report.first_stale_hit.is_none() {
                let shown = shown.map_or("absent".to_string(), |z| format!("the write at {z}"));
                self.report.first_stale_hit = Some(format!(
                    "cache client {c} read {key} from its cache at {} ms: {shown} (as of {}), but \
                     {problem}",
                    self.now, hit.as_of
                ));
            }
        }
    }

    /// The announced history (what the hits are checked against) is the committed one: every
    /// write a cache client saw acknowledged is in it at its zxid with its ops, and it replays
    /// to the final state of the cache clients' keys.
    pub(super) fn check_announced(
        &self,
        dump: &[(String, Option<Versioned>)],
    ) -> Result<(), String> {
        if self.cachers.is_empty() {
            return Ok(());
        }
        for (zxid, ops) in &self.acked_cache_writes {
            match self.announced.get(zxid) {
                Some(announced) if announced == ops => {}
                announced => {
                    return Err(format!(
                        "a cache write acknowledged at {zxid} ({ops:?}) was announced as \
                         {announced:?}"
                    ))
                }
            }
        }
        for k in 0..CACHE_KEYS {
            let key = cache_key(k);
            let replayed = self
                .announced
                .iter()
                .flat_map(|(z, ops)| ops.iter().map(move |op| (*z, op)))
                .filter_map(|(z, op)| match op {
                    Op::Put { key: k, value, .. } if *k == key => Some((z, value.clone())),
                    _ => None,
                })
                .last();
            let fin = dump
                .iter()
                .find(|(name, _)| *name == key)
                .and_then(|(_, v)| v.as_ref())
                .map(|v| (v.zxid, v.value.clone()));
            if replayed != fin {
                return Err(format!(
                    "the announced history of {key} ends at {replayed:?}, the final state is \
                     {fin:?}: a committed write went unannounced"
                ));
            }
        }
        Ok(())
    }

    // ---- the group stream to the cache clients ----

    /// Node `id` multicasts `message` on its reliable group stream: every cache client gets
    /// it (a datagram that carries no notice still tells a receiver how far the stream goes).
    pub(super) fn group_stream(&mut self, id: NodeId, message: &Message) -> Result<(), String> {
        if self.cachers.is_empty() {
            return Ok(());
        }
        let notice = match message {
            Message::UpdateNotice(n) => Some(n.clone()),
            _ => None,
        };
        if let Some(n) = &notice {
            match self.announced.get(&n.zxid) {
                Some(ops) if *ops != n.ops => {
                    return Err(format!(
                        "two notices of {} with different ops: {ops:?} and {:?}",
                        n.zxid, n.ops
                    ))
                }
                Some(_) => {}
                None => {
                    self.announced.insert(n.zxid, n.ops.clone());
                }
            }
        }
        let host = self.host(id);
        host.stream_seq += 1;
        let seq = host.stream_seq;
        let incarnation = host.incarnation;
        host.retained.push_back((seq, notice.clone()));
        if host.retained.len() > RETAINED_DATAGRAMS_MAX {
            host.retained.pop_front();
        }
        for c in 0..self.cachers.len() {
            self.transmit(c, id, incarnation, seq, notice.clone());
        }
        Ok(())
    }

    fn transmit(
        &mut self,
        client: usize,
        from: NodeId,
        incarnation: u64,
        seq: u64,
        notice: Option<UpdateNotice>,
    ) {
        let Some(d) = self.client_delay(Asker::Cache(client), from) else {
            if notice.is_some() {
                self.report.notices_lost += 1;
            }
            return;
        };
        let sent = self.now;
        if self.faulting && self.cfg.faults.net && self.arng.gen_bool(0.02) {
            let d2 = self.arng.gen_range(1..=20);
            let notice = notice.clone();
            self.at(d2, Event::Datagram { client, from, incarnation, seq, sent, notice });
        }
        self.at(d, Event::Datagram { client, from, incarnation, seq, sent, notice });
    }

    pub(super) fn datagram(
        &mut self,
        c: usize,
        from: NodeId,
        incarnation: u64,
        seq: u64,
        sent: u64,
        notice: Option<UpdateNotice>,
    ) {
        let now = self.now;
        let t = self.instant();
        let crashed = self.nodes[from as usize - 1].crashed_at;
        if crashed.is_some_and(|(i, at)| i == incarnation && sent + SEND_QUEUE_MS > at) {
            if notice.is_some() {
                self.report.notices_unsent += 1;
            }
            return;
        }
        let client = &mut self.cachers[c];
        let stream = client.streams.entry(from).or_insert_with(|| Stream::new(incarnation, now));
        if incarnation < stream.incarnation {
            return;
        }
        if incarnation > stream.incarnation {
            // The sender restarted: what its old incarnation did not deliver is lost for good.
            let undelivered = stream.known_below > stream.next;
            let fresh = !stream.delivered_any;
            *stream = Stream::new(incarnation, now);
            if undelivered && !fresh {
                trace!("{now} c{c} gap: {from} restarted as {incarnation}");
                client.cache.flush();
                self.report.gaps += 1;
            }
        }
        let stream = client.streams.get_mut(&from).expect("stream");
        stream.last_heard = now;
        if seq < stream.next || stream.pending.contains_key(&seq) {
            return;
        }
        stream.pending.insert(seq, notice);
        stream.known_below = stream.known_below.max(seq + 1);
        let mut delivered = 0;
        while let Some(next) = stream.pending.remove(&stream.next) {
            stream.next += 1;
            stream.delivered_any = true;
            stream.rounds = 0;
            if let Some(n) = next {
                let out = client.cache.apply_notice(&n, t);
                trace!(
                    "{now} c{c} notice {} from {from}/{incarnation} seq {}: {out:?} -> position {}",
                    n.zxid,
                    stream.next - 1,
                    client.cache.position().map_or("unknown".into(), |p| p.to_string())
                );
                delivered += 1;
            }
        }
        self.report.notices_delivered += delivered;
        if stream.known_below > stream.next && !stream.nak_pending {
            stream.nak_pending = true;
            self.at(NAK_DELAY_MS, Event::Nak { client: c, from, incarnation });
        }
    }

    /// A NAK round: the sender repairs what it still holds if it runs the same incarnation
    /// and gets the NAK; a hole becomes a gap (the cache flushes) after `NAK_ROUNDS_MAX`
    /// rounds during which the sender was heard, or after `SENDER_GONE_MS` of silence.
    pub(super) fn nak(&mut self, c: usize, from: NodeId, incarnation: u64) {
        let now = self.now;
        let Some(stream) = self.cachers[c].streams.get_mut(&from) else { return };
        if stream.incarnation != incarnation {
            return;
        }
        stream.nak_pending = false;
        if stream.known_below <= stream.next {
            return;
        }
        let missing: Vec<u64> = (stream.next..stream.known_below)
            .filter(|s| !stream.pending.contains_key(s))
            .take(NAK_RANGE_MAX as usize)
            .collect();
        let host = &self.nodes[from as usize - 1];
        // A running sender is heard (it announces itself every few ms in shoal-fs); a stalled
        // or crashed one is not.
        let heard =
            host.node.is_some() && !host.stalled && !self.cut.contains(&(Asker::Cache(c), from));
        let same = heard && host.incarnation == incarnation;
        if heard {
            stream.rounds += 1;
        }
        let gone = now.saturating_sub(stream.last_heard) >= SENDER_GONE_MS && !heard;
        if stream.rounds > NAK_ROUNDS_MAX || gone {
            // The hole is declared lost: deliver what waits behind it.
            let client = &mut self.cachers[c];
            let t = self.epoch_instant + std::time::Duration::from_millis(now);
            trace!("{now} c{c} gap: {from}/{incarnation} hole declared lost");
            client.cache.flush();
            self.report.gaps += 1;
            let stream = client.streams.get_mut(&from).expect("stream");
            stream.next = stream.pending.keys().next().copied().unwrap_or(stream.known_below);
            stream.rounds = 0;
            while let Some(next) = stream.pending.remove(&stream.next) {
                stream.next += 1;
                if let Some(n) = next {
                    client.cache.apply_notice(&n, t);
                    self.report.notices_delivered += 1;
                }
            }
            if stream.known_below > stream.next {
                stream.nak_pending = true;
                self.at(NAK_RETRY_MS, Event::Nak { client: c, from, incarnation });
            }
            return;
        }
        stream.nak_pending = true;
        self.at(NAK_RETRY_MS, Event::Nak { client: c, from, incarnation });
        if !same || self.client_delay(Asker::Cache(c), from).is_none() {
            return;
        }
        let retained: Vec<(u64, Option<UpdateNotice>)> = {
            let host = &self.nodes[from as usize - 1];
            let first = host.retained.front().map_or(u64::MAX, |(s, _)| *s);
            missing
                .iter()
                .filter(|s| **s >= first)
                .filter_map(|s| host.retained.get((s - first) as usize).cloned())
                .collect()
        };
        for (seq, notice) in retained {
            self.transmit(c, from, incarnation, seq, notice);
        }
    }
}

#[cfg(test)]
mod tests {
    //! The lock and cache checks fail on what they are meant to catch (synthetic histories:
    //! the simulation's runs are meant to pass them).

    use super::super::{key_file, node_config, Faults, NodeSimConfig, World};
    use super::*;

    fn world() -> World {
        let cfg = NodeSimConfig::new(1, 3, Faults::default());
        let key = key_file().expect("key file");
        let configs = (1..=3).map(|id| node_config(id, 3, &key).expect("config")).collect();
        World::new(cfg, configs)
    }

    fn belief(client: usize, token: u32, start: u64, end: u64) -> Belief {
        Belief { lock: "/locks/a".into(), client, token: Zxid::new(1, token), start, end }
    }

    #[test]
    fn overlapping_holders_fail_the_lock_check() {
        let mut w = world();
        w.beliefs = vec![belief(0, 5, 100, 900), belief(1, 9, 899, 1_200)];
        let e = w.check_locks().expect_err("two holders at 899 ms passed");
        assert!(e.contains("client 0 counted on it (token 1:5) from 100 until 900"), "{e}");
        assert_eq!(w.report.lock_violations, 1);
    }

    #[test]
    fn a_token_not_above_its_predecessor_fails_the_lock_check() {
        let mut w = world();
        w.beliefs = vec![belief(0, 9, 100, 900), belief(1, 5, 900, 1_200)];
        let e = w.check_locks().expect_err("a smaller token for the next holder passed");
        assert!(e.contains("token 1:5 of client 1"), "{e}");
        // Successive holders with growing tokens, and one holder's resumed belief, pass.
        w.beliefs = vec![belief(0, 5, 100, 900), belief(0, 5, 950, 990), belief(1, 9, 990, 1_200)];
        w.check_locks().expect("a valid succession");
    }

    fn put(key: &str, value: &str) -> Op {
        Op::Put {
            key: key.into(),
            value: Bytes::from(value.to_string()),
            create_only: false,
            ephemeral: None,
        }
    }

    fn hit(zxid: u32, value: &str) -> Hit {
        let value =
            Some(Versioned { zxid: Zxid::new(1, zxid), value: Bytes::from(value.to_string()) });
        Hit { value, as_of: Zxid::new(1, zxid) }
    }

    #[test]
    fn a_hit_older_than_the_floor_fails_the_cache_check() {
        let mut w = world();
        w.announced.insert(Zxid::new(1, 3), vec![put("/c0", "a")]);
        w.announced.insert(Zxid::new(1, 7), vec![put("/c0", "b")]);
        // Valid: the value at 1:3 holds through 1:6.
        w.check_hit(0, "/c0", Zxid::new(1, 6), &hit(3, "a"));
        assert_eq!(w.report.stale_hits, 0);
        // Stale: overwritten at 1:7, the floor is 1:7.
        w.check_hit(0, "/c0", Zxid::new(1, 7), &hit(3, "a"));
        // A value no master announced, and an absence after the first write.
        w.check_hit(0, "/c0", Zxid::new(1, 1), &hit(4, "a"));
        w.check_hit(0, "/c0", Zxid::new(1, 3), &Hit { value: None, as_of: Zxid::new(1, 3) });
        assert_eq!(w.report.stale_hits, 3);
        let first = w.report.first_stale_hit.expect("described");
        assert!(
            first.contains("overwritten at 1:7, at or below the client's floor 1:7"),
            "{first}"
        );
    }

    #[test]
    fn an_acknowledged_write_missing_from_the_announced_history_fails_the_check() {
        let mut w = world();
        assert!(!w.cachers.is_empty(), "the check runs only with cache clients");
        let value =
            |v: &str| Versioned { zxid: Zxid::new(1, 3), value: Bytes::from(v.to_string()) };
        let dump: Vec<(String, Option<Versioned>)> =
            (0..CACHE_KEYS).map(|k| (cache_key(k), (k == 0).then(|| value("a")))).collect();
        w.acked_cache_writes = vec![(Zxid::new(1, 3), vec![put("/c0", "a")])];
        let e = w.check_announced(&dump).expect_err("an unannounced acknowledged write passed");
        assert!(e.contains("acknowledged at 1:3"), "{e}");
        w.announced.insert(Zxid::new(1, 3), vec![put("/c0", "b")]);
        w.check_announced(&dump).expect_err("a write announced with other ops passed");
        w.announced.insert(Zxid::new(1, 3), vec![put("/c0", "a")]);
        w.check_announced(&dump).expect("the acknowledged write is announced");
    }
}
