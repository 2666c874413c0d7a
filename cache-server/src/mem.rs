//! [`MemBackend`]: a complete single-node [`Backend`] in memory, for tests of the server and of
//! the client library. It keeps the rules of a batch honestly, by calling `protocol::batch`
//! (the one home of the shape and namespace rules: explicit directories, parents must exist,
//! and so on) and adds atomic batches with conditions and retry de-duplication by request id,
//! so that a client test against it exercises the same refusals a real cluster gives.
//!
//! Replication is simulated, not implemented: a *master* orders and applies writes itself and
//! records each committed entry as an [`UpdateNotice`]; a *follower* refuses writes with
//! `NotMaster` and applies the notices a test hands it ([`MemBackend::apply_notice`]), so a test
//! decides how far each follower trails. Locks and sessions are not implemented: lock releases in
//! a write, lock conditions and Lock messages are refused with `Unavailable` (grants and session
//! ops in a write break a shape rule first: `BadRequest`); the lock rules live in `fs-node`
//! alone; `shoal-tests`' `state_backend` runs them in one process for client tests.

use crate::backend::{Backend, BackendStatus, Snapshot};
use crate::error::ServerError;
use crate::server::{Server, ServerConfig};
use crate::validate::validate_request;
use bytes::Bytes;
use protocol::batch::{self, EntryKind};
use protocol::key;
use protocol::range;
use protocol::limits::{KEY_BYTES_DEFAULT, LIST_ENTRIES_MAX, VALUE_BYTES_DEFAULT};
use protocol::message::data::{
    Condition, DirEntry, KeyStat, Op, RangeEntry, RangePage, RequestId, Role, UpdateNotice,
    UpdateRequest, Versioned,
};
use protocol::{NodeId, Zxid};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::watch;

/// Results remembered for retry de-duplication (oldest forgotten first).
pub const DEDUP_ENTRIES_MAX: usize = 100_000;

/// One node of the namespace. The root `/` is implicit and always a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Value { value: Bytes, zxid: Zxid, ephemeral: Option<u64> },
    Dir { zxid: Zxid },
}

impl Entry {
    pub fn zxid(&self) -> Zxid {
        match self {
            Entry::Value { zxid, .. } | Entry::Dir { zxid } => *zxid,
        }
    }

    fn is_dir(&self) -> bool {
        matches!(self, Entry::Dir { .. })
    }
}

/// The namespace as a sorted map of absolute paths; applying ops to it is the state machine.
#[derive(Clone, Debug, Default)]
pub struct Tree {
    entries: BTreeMap<String, Entry>,
}

impl Tree {
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key)
    }

    /// The key's current zxid, `Zxid::ZERO` when absent (the root counts as present at zero).
    fn zxid_of(&self, key: &str) -> Zxid {
        self.entries.get(key).map(Entry::zxid).unwrap_or(Zxid::ZERO)
    }

    fn is_dir(&self, key: &str) -> bool {
        key == key::ROOT || self.entries.get(key).is_some_and(Entry::is_dir)
    }

    fn exists(&self, key: &str) -> bool {
        key == key::ROOT || self.entries.contains_key(key)
    }

    fn stat(&self, key: &str) -> Option<KeyStat> {
        if key == key::ROOT {
            return Some(KeyStat { zxid: Zxid::ZERO, is_dir: true, size: 0, ephemeral: None });
        }
        Some(match self.entries.get(key)? {
            Entry::Value { value, zxid, ephemeral } => KeyStat {
                zxid: *zxid,
                is_dir: false,
                size: value.len() as u64,
                ephemeral: *ephemeral,
            },
            Entry::Dir { zxid } => KeyStat { zxid: *zxid, is_dir: true, size: 0, ephemeral: None },
        })
    }

    /// Keys strictly below `dir`, in order.
    fn below<'a>(&'a self, dir: &'a str) -> impl Iterator<Item = (&'a String, &'a Entry)> + 'a {
        let start = if dir == key::ROOT { "/".to_string() } else { format!("{dir}/") };
        self.entries.range(start.clone()..).take_while(move |(k, _)| k.starts_with(&start))
    }

    pub fn list(&self, dir: &str, limit: usize) -> Result<Vec<DirEntry>, ServerError> {
        if !self.exists(dir) {
            return Err(ServerError::NotFound { key: dir.to_string() });
        }
        if !self.is_dir(dir) {
            return Err(ServerError::NotADirectory { key: dir.to_string() });
        }
        Ok(self
            .below(dir)
            .filter(|(k, _)| key::parent(k) == Some(dir))
            .take(limit)
            .map(|(k, e)| DirEntry {
                name: key::name(k).to_string(),
                is_dir: e.is_dir(),
                zxid: e.zxid(),
            })
            .collect())
    }

    /// One page of a range read (see [`protocol::range`]), at `zxid`.
    pub fn range(
        &self,
        dir: &str,
        from: Option<&str>,
        limit: u32,
        bytes_max: u32,
        zxid: Zxid,
    ) -> Result<RangePage, ServerError> {
        if !self.exists(dir) {
            return Err(ServerError::NotFound { key: dir.to_string() });
        }
        if !self.is_dir(dir) {
            return Err(ServerError::NotADirectory { key: dir.to_string() });
        }
        let prefix = range::prefix(dir);
        let mut budget = range::Budget::new(limit, bytes_max);
        let mut page = RangePage { entries: Vec::new(), zxid, next: None };
        let below = self.entries.range(range::start(dir, from)..);
        for (key, entry) in below.take_while(|(k, _)| k.starts_with(&prefix)) {
            let Entry::Value { value, zxid, .. } = entry else { continue };
            if !budget.take(key, value.len()) {
                page.next = Some(key.clone());
                break;
            }
            page.entries.push(RangeEntry { key: key.clone(), zxid: *zxid, value: value.clone() });
        }
        Ok(page)
    }

    fn check_condition(&self, condition: &Condition) -> Result<(), ServerError> {
        match condition {
            Condition::KeyZxid { key, zxid } => {
                let found = self.zxid_of(key);
                if found == *zxid {
                    Ok(())
                } else {
                    Err(ServerError::ConditionFailed {
                        detail: format!("{key} is at zxid {found}, expected {zxid}"),
                    })
                }
            }
            Condition::LockToken { .. } | Condition::LockHeld { .. } => {
                Err(ServerError::Unavailable("MemBackend does not implement locks".to_string()))
            }
        }
    }

    /// Checks a batch against the namespace rules (`protocol::batch`, the same the fs-node
    /// stores keep) without changing anything. Lock and session ops, which this backend does
    /// not implement, are refused with `Unavailable`.
    pub fn check(&self, ops: &[Op], key_bytes_max: usize) -> Result<(), ServerError> {
        if ops.iter().any(|op| matches!(op, Op::Lock(_) | Op::Session(_))) {
            return Err(ServerError::Unavailable(
                "MemBackend does not implement locks and sessions".to_string(),
            ));
        }
        Ok(batch::check_namespace(self, ops, key_bytes_max)?)
    }

    /// Applies a batch that [`Tree::check`] accepted, at `zxid`.
    pub fn apply(&mut self, ops: &[Op], zxid: Zxid) {
        for op in ops {
            self.apply_one(op, zxid);
        }
    }

    fn apply_one(&mut self, op: &Op, zxid: Zxid) {
        const CHECKED: &str = "Tree::check enforces the namespace rules of protocol::batch";
        match op {
            Op::Put { key, value, ephemeral, .. } => {
                let entry = Entry::Value { value: value.clone(), zxid, ephemeral: *ephemeral };
                self.entries.insert(key.clone(), entry);
            }
            Op::Mkdir { key } => {
                self.entries.insert(key.clone(), Entry::Dir { zxid });
            }
            Op::Delete { key, .. } => {
                let children: Vec<String> = self.below(key).map(|(k, _)| k.clone()).collect();
                for child in children {
                    self.entries.remove(&child);
                }
                self.entries.remove(key).expect(CHECKED);
            }
            Op::Rename { from, to } => {
                let moved: Vec<String> = self.below(from).map(|(k, _)| k.clone()).collect();
                let top = self.entries.remove(from).expect(CHECKED);
                self.entries.insert(to.clone(), restamp(top, zxid));
                for old in moved {
                    let entry = self.entries.remove(&old).expect("listed above");
                    self.entries.insert(batch::rebase(&old, from, to), restamp(entry, zxid));
                }
            }
            Op::Lock(_) | Op::Session(_) => unreachable!("{CHECKED}: no lock or session ops"),
        }
    }
}

impl batch::Namespace for Tree {
    fn kind(&self, key: &str) -> Option<EntryKind> {
        if key == key::ROOT {
            return Some(EntryKind::Dir);
        }
        self.entries.get(key).map(|e| if e.is_dir() { EntryKind::Dir } else { EntryKind::Value })
    }

    fn visit_within(&self, dir: &str, visit: &mut dyn FnMut(&str, EntryKind) -> bool) {
        for (k, e) in self.below(dir) {
            if !visit(k, if e.is_dir() { EntryKind::Dir } else { EntryKind::Value }) {
                return;
            }
        }
    }
}

/// A moved entry carries the rename's zxid: it changed, and caches compare by zxid.
fn restamp(entry: Entry, zxid: Zxid) -> Entry {
    match entry {
        Entry::Value { value, ephemeral, .. } => Entry::Value { value, zxid, ephemeral },
        Entry::Dir { .. } => Entry::Dir { zxid },
    }
}

/// Called with every entry a [`MemBackend`] applies, in zxid order, while the entry is being
/// applied (so a reader never sees the backend ahead of the hook).
pub type AppliedHook = Arc<dyn Fn(&UpdateNotice) + Send + Sync>;

struct State {
    role: Role,
    epoch: u32,
    master: Option<NodeId>,
    frozen: bool,
    tree: Tree,
    applied: Zxid,
    /// Every entry applied here, in order (tests read it to drive followers and clients).
    log: Vec<UpdateNotice>,
    dedup: HashMap<RequestId, Zxid>,
    dedup_order: VecDeque<RequestId>,
    hook: Option<AppliedHook>,
}

/// A single node's state machine in memory. See the module docs.
pub struct MemBackend {
    node: NodeId,
    key_bytes_max: usize,
    value_bytes_max: usize,
    state: Mutex<State>,
    applied_tx: watch::Sender<Zxid>,
}

impl MemBackend {
    /// A master of `epoch`: it orders and applies writes itself.
    pub fn master(node: NodeId, epoch: u32) -> MemBackend {
        MemBackend::new(node, Role::Master, Some(node), epoch)
    }

    /// A follower of `master`: it refuses writes and applies what [`Self::apply_notice`] hands it.
    pub fn follower(node: NodeId, master: NodeId, epoch: u32) -> MemBackend {
        MemBackend::new(node, Role::Follower, Some(master), epoch)
    }

    fn new(node: NodeId, role: Role, master: Option<NodeId>, epoch: u32) -> MemBackend {
        let start = Zxid::new(epoch, 0);
        MemBackend {
            node,
            key_bytes_max: KEY_BYTES_DEFAULT,
            value_bytes_max: VALUE_BYTES_DEFAULT,
            state: Mutex::new(State {
                role,
                epoch,
                master,
                frozen: false,
                tree: Tree::default(),
                applied: start,
                log: Vec::new(),
                dedup: HashMap::new(),
                dedup_order: VecDeque::new(),
                hook: None,
            }),
            applied_tx: watch::channel(start).0,
        }
    }

    /// Sets the key and value limits this node enforces.
    pub fn with_limits(mut self, key_bytes_max: usize, value_bytes_max: usize) -> MemBackend {
        self.key_bytes_max = key_bytes_max;
        self.value_bytes_max = value_bytes_max;
        self
    }

    pub fn node(&self) -> NodeId {
        self.node
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("MemBackend state poisoned")
    }

    pub fn set_hook(&self, hook: AppliedHook) {
        self.lock().hook = Some(hook);
    }

    pub fn set_frozen(&self, frozen: bool) {
        self.lock().frozen = frozen;
    }

    /// Makes this node master (epoch and master id change) or a follower of `master`.
    pub fn set_role(&self, role: Role, master: Option<NodeId>, epoch: u32) {
        let mut state = self.lock();
        state.role = role;
        state.master = master;
        state.epoch = epoch;
        if role == Role::Master && state.applied.epoch() < epoch {
            // A new master's first entry is above everything of the old epoch.
            state.applied = Zxid::new(epoch, 0).max(state.applied);
        }
    }

    /// Entries applied here with a zxid above `after`, in order.
    pub fn log_after(&self, after: Zxid) -> Vec<UpdateNotice> {
        self.lock().log.iter().filter(|n| n.zxid > after).cloned().collect()
    }

    /// A follower applies a committed entry. Entries at or below the applied zxid are ignored
    /// (replay is harmless); an entry the tree refuses means the replicas diverged.
    pub fn apply_notice(&self, notice: &UpdateNotice) -> Result<(), ServerError> {
        let mut state = self.lock();
        if notice.zxid <= state.applied {
            return Ok(());
        }
        state.tree.check(&notice.ops, self.key_bytes_max).map_err(|e| {
            ServerError::Internal(format!("replica diverged at {}: {e}", notice.zxid))
        })?;
        state.tree.apply(&notice.ops, notice.zxid);
        self.finish_apply(&mut state, notice.clone());
        Ok(())
    }

    fn finish_apply(&self, state: &mut State, notice: UpdateNotice) {
        state.applied = notice.zxid;
        if let Some(hook) = &state.hook {
            hook(&notice);
        }
        state.log.push(notice);
        self.applied_tx.send_replace(state.applied);
    }

    fn snapshot<T>(
        &self,
        read: impl FnOnce(&Tree) -> Result<T, ServerError>,
    ) -> Result<Snapshot<T>, ServerError> {
        let state = self.lock();
        Ok(Snapshot { value: read(&state.tree)?, applied: state.applied })
    }

    fn submit_now(&self, request: UpdateRequest) -> Result<Zxid, ServerError> {
        validate_request(&request, self.key_bytes_max, self.value_bytes_max)?;
        let mut state = self.lock();
        if state.role != Role::Master {
            return Err(ServerError::NotMaster { master: state.master });
        }
        if let Some(zxid) = state.dedup.get(&request.request) {
            return Ok(*zxid);
        }
        for condition in &request.conditions {
            state.tree.check_condition(condition)?;
        }
        let zxid = state.applied.next().ok_or_else(|| {
            ServerError::Unavailable("zxid counter exhausted; a new epoch is needed".into())
        })?;
        state.tree.check(&request.ops, self.key_bytes_max)?;
        state.tree.apply(&request.ops, zxid);
        if state.dedup_order.len() >= DEDUP_ENTRIES_MAX {
            if let Some(old) = state.dedup_order.pop_front() {
                state.dedup.remove(&old);
            }
        }
        state.dedup.insert(request.request, zxid);
        state.dedup_order.push_back(request.request);
        let prev = state.log.last().map_or(Zxid::ZERO, |n| n.zxid);
        self.finish_apply(&mut state, UpdateNotice { zxid, prev, ops: request.ops });
        Ok(zxid)
    }
}

/// A [`Server`] over `backend`, with the backend's applied entries wired into the server cache
/// and its history window (every MemBackend entry is a notice; the hook holds the server weakly, so dropping the server ends it).
pub fn serve(backend: MemBackend, config: ServerConfig) -> Arc<Server<MemBackend>> {
    let server = Arc::new(Server::new(backend, config));
    let weak: Weak<Server<MemBackend>> = Arc::downgrade(&server);
    server.backend().set_hook(Arc::new(move |notice| {
        if let Some(server) = weak.upgrade() {
            server.on_applied(notice);
            server.on_notice(notice);
        }
    }));
    server
}

impl Backend for MemBackend {
    fn status(&self) -> BackendStatus {
        let state = self.lock();
        BackendStatus {
            node: self.node,
            role: state.role,
            epoch: state.epoch,
            master: state.master,
            applied: state.applied,
            committed: state.applied,
            frozen: state.frozen,
            transfer: None,
        }
    }

    fn applied(&self) -> Zxid {
        *self.applied_tx.borrow()
    }

    async fn get(&self, key: &str) -> Result<Snapshot<Option<Versioned>>, ServerError> {
        self.snapshot(|tree| match tree.get(key) {
            None if key == key::ROOT => Err(ServerError::IsADirectory { key: key.to_string() }),
            None => Ok(None),
            Some(Entry::Dir { .. }) => Err(ServerError::IsADirectory { key: key.to_string() }),
            Some(Entry::Value { value, zxid, .. }) => {
                Ok(Some(Versioned { zxid: *zxid, value: value.clone() }))
            }
        })
    }

    async fn exists(&self, key: &str) -> Result<Snapshot<bool>, ServerError> {
        self.snapshot(|tree| Ok(tree.exists(key)))
    }

    async fn is_dir(&self, key: &str) -> Result<Snapshot<bool>, ServerError> {
        self.snapshot(|tree| Ok(tree.is_dir(key)))
    }

    async fn stat(&self, key: &str) -> Result<Snapshot<Option<KeyStat>>, ServerError> {
        self.snapshot(|tree| Ok(tree.stat(key)))
    }

    async fn list(&self, dir: &str, limit: usize) -> Result<Snapshot<Vec<DirEntry>>, ServerError> {
        self.snapshot(|tree| tree.list(dir, limit.min(LIST_ENTRIES_MAX)))
    }

    async fn range(
        &self,
        dir: &str,
        from: Option<&str>,
        limit: u32,
        bytes_max: u32,
    ) -> Result<Snapshot<RangePage>, ServerError> {
        let state = self.lock();
        let page = state.tree.range(dir, from, limit, bytes_max, state.applied)?;
        Ok(Snapshot { value: page, applied: state.applied })
    }

    async fn wait_applied(&self, zxid: Zxid, timeout: Duration) -> Result<Zxid, ServerError> {
        crate::backend::wait_applied_on(&self.applied_tx, zxid, timeout).await
    }

    async fn submit(&self, request: UpdateRequest) -> Result<Zxid, ServerError> {
        self.submit_now(request)
    }

    async fn linearizable_zxid(&self) -> Result<Zxid, ServerError> {
        let state = self.lock();
        if state.role == Role::Master {
            // Every acknowledged write is applied here before its reply: applied covers them.
            Ok(state.applied)
        } else {
            Err(ServerError::NotMaster { master: state.master })
        }
    }

    /// Locks are refused: the lock rules are `fs-node`'s alone and are not duplicated here.
    async fn lock(
        &self,
        _request: protocol::message::lock::LockRequest,
    ) -> Result<protocol::message::lock::LockGrant, ServerError> {
        Err(ServerError::Unavailable("MemBackend has no lock table".to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str) -> Op {
        Op::Put {
            key: key.into(),
            value: Bytes::from(value.to_string()),
            create_only: false,
            ephemeral: None,
        }
    }

    fn request(seq: u64, ops: Vec<Op>) -> UpdateRequest {
        UpdateRequest { request: RequestId { client: 1 << 40, seq }, conditions: vec![], ops }
    }

    /// Writes need their parent directory, named in the refusal; a refused batch changes nothing.
    #[tokio::test]
    async fn parents_are_explicit_and_batches_atomic() {
        let backend = MemBackend::master(1, 1);
        let err = backend.submit(request(1, vec![put("/a/b", "x")])).await.unwrap_err();
        assert_eq!(err, ServerError::ParentMissing { key: "/a/b".into(), parent: "/a".into() });
        let err = backend
            .submit(request(2, vec![Op::Mkdir { key: "/a".into() }, put("/b/c", "x")]))
            .await
            .unwrap_err();
        assert!(matches!(err, ServerError::ParentMissing { .. }));
        assert!(!backend.exists("/a").await.unwrap().value, "refused batch left /a behind");
        assert_eq!(backend.applied(), Zxid::new(1, 0));
        let z = backend
            .submit(request(3, vec![Op::Mkdir { key: "/a".into() }, put("/a/b", "x")]))
            .await
            .unwrap();
        assert_eq!(z, Zxid::new(1, 1));
        let got = backend.get("/a/b").await.unwrap();
        assert_eq!(got.value.unwrap().value, Bytes::from("x"));
        assert_eq!(got.applied, z);
    }

    /// A retry with the same request id returns the first result and applies nothing new.
    #[tokio::test]
    async fn retries_are_deduplicated() {
        let backend = MemBackend::master(1, 1);
        let first = backend.submit(request(7, vec![Op::Mkdir { key: "/d".into() }])).await.unwrap();
        let again = backend.submit(request(7, vec![Op::Mkdir { key: "/d".into() }])).await.unwrap();
        assert_eq!(first, again);
        assert_eq!(backend.log_after(Zxid::ZERO).len(), 1);
    }

    /// Rename moves a subtree atomically and restamps it; delete refuses non-empty directories.
    #[tokio::test]
    async fn rename_and_delete_subtrees() {
        let backend = MemBackend::master(1, 1);
        backend
            .submit(request(
                1,
                vec![Op::Mkdir { key: "/a".into() }, put("/a/x", "1"), put("/ab", "2")],
            ))
            .await
            .unwrap();
        let z = backend
            .submit(request(2, vec![Op::Rename { from: "/a".into(), to: "/b".into() }]))
            .await
            .unwrap();
        assert!(backend.get("/a/x").await.unwrap().value.is_none());
        assert_eq!(backend.get("/b/x").await.unwrap().value.unwrap().zxid, z);
        assert!(
            backend.get("/ab").await.unwrap().value.is_some(),
            "sibling with a common prefix moved"
        );
        let names: Vec<String> =
            backend.list("/", 10).await.unwrap().value.into_iter().map(|e| e.name).collect();
        assert_eq!(names, vec!["ab", "b"]);
        let err = backend
            .submit(request(3, vec![Op::Delete { key: "/b".into(), recursive: false }]))
            .await
            .unwrap_err();
        assert!(matches!(err, ServerError::DirectoryNotEmpty { .. }));
        backend
            .submit(request(4, vec![Op::Delete { key: "/b".into(), recursive: true }]))
            .await
            .unwrap();
        assert!(!backend.exists("/b/x").await.unwrap().value);
    }

    /// A follower applies the master's entries in order, ignores replays, and refuses writes.
    #[tokio::test]
    async fn follower_applies_notices() {
        let master = MemBackend::master(1, 1);
        let follower = MemBackend::follower(2, 1, 1);
        master.submit(request(1, vec![Op::Mkdir { key: "/a".into() }])).await.unwrap();
        for notice in master.log_after(Zxid::ZERO) {
            follower.apply_notice(&notice).unwrap();
            follower.apply_notice(&notice).unwrap();
        }
        assert_eq!(follower.applied(), master.applied());
        let err =
            follower.submit(request(2, vec![Op::Mkdir { key: "/b".into() }])).await.unwrap_err();
        assert_eq!(err, ServerError::NotMaster { master: Some(1) });
    }

    /// MemBackend keeps every rule of the backend conformance suite.
    #[tokio::test]
    async fn passes_the_conformance_suite() {
        crate::conformance::run_all(&MemBackend::master(1, 1)).await.unwrap();
    }

    /// A Lock message to a MemBackend server is answered with a clear `Unavailable`, not
    /// silence (the client learns why instead of timing out).
    #[tokio::test]
    async fn lock_messages_are_refused_clearly() {
        use protocol::message::lock::{LockRequest, LockRequestOp};
        use protocol::message::Message;
        let server = serve(MemBackend::master(1, 1), ServerConfig::new("n1"));
        let request = LockRequest {
            request: RequestId { client: 1 << 40, seq: 1 },
            op: LockRequestOp::Acquire { lock: "/l".into(), auth: 7, session: 0, host: "h".into() },
        };
        let Some(Message::LockReply(reply)) = server.handle(Message::Lock(request)).await else {
            panic!("no LockReply")
        };
        let error = reply.result.unwrap_err();
        assert_eq!(error.code, protocol::message::data::ErrorCode::Unavailable);
        assert!(error.message.contains("no lock table"), "{}", error.message);
    }

    /// The write rules of `protocol::batch`, as every store keeps them: a rename into itself is
    /// refused as such whether or not the source exists, a rename may not move a key past the
    /// key limit, lock grants and session ops are not writes, and a lock name in a condition is
    /// checked like any lock name. Each refusal changes nothing.
    #[tokio::test]
    async fn write_rules_are_protocols() {
        use protocol::message::data::ErrorCode;
        use protocol::message::lock::LockOp;
        let backend = MemBackend::master(1, 1).with_limits(16, 64);
        backend
            .submit(request(1, vec![Op::Mkdir { key: "/d".into() }, put("/d/long-name", "x")]))
            .await
            .unwrap();
        let applied = backend.applied();
        let rename = |from: &str, to: &str| Op::Rename { from: from.into(), to: to.into() };
        let into_itself = backend.submit(request(2, vec![rename("/nope", "/nope/x")])).await;
        assert_eq!(into_itself.unwrap_err().code(), ErrorCode::BadKey);
        let moved = backend.submit(request(3, vec![rename("/d", "/dddddd")])).await.unwrap_err();
        assert_eq!(moved.code(), ErrorCode::BadKey, "{moved}");
        let grant = Op::Lock(LockOp::Grant {
            lock: "/l".into(),
            auth: 3,
            session: 0,
            holder: 1 << 40,
            host: "h".into(),
        });
        let grant = backend.submit(request(4, vec![grant])).await.unwrap_err();
        assert_eq!(grant.code(), ErrorCode::BadRequest, "{grant}");
        let mut bad_lock = request(5, vec![put("/k", "v")]);
        bad_lock.conditions = vec![Condition::LockHeld { lock: "l".into(), auth: 3 }];
        assert_eq!(backend.submit(bad_lock).await.unwrap_err().code(), ErrorCode::BadKey);
        assert_eq!(backend.applied(), applied);
        assert!(backend.exists("/d/long-name").await.unwrap().value);
    }

    /// Compare-and-set: a KeyZxid condition that no longer holds refuses the write.
    #[tokio::test]
    async fn key_zxid_condition() {
        let backend = MemBackend::master(1, 1);
        let z = backend.submit(request(1, vec![put("/k", "1")])).await.unwrap();
        let mut cas = request(2, vec![put("/k", "2")]);
        cas.conditions.push(Condition::KeyZxid { key: "/k".into(), zxid: Zxid::ZERO });
        assert!(matches!(backend.submit(cas).await, Err(ServerError::ConditionFailed { .. })));
        let mut cas = request(3, vec![put("/k", "2")]);
        cas.conditions.push(Condition::KeyZxid { key: "/k".into(), zxid: z });
        backend.submit(cas).await.unwrap();
    }
}
