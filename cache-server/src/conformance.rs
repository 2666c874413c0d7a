//! A conformance suite for [`Backend`] implementations: the rules of [`crate::backend`] checked
//! against a live backend. `fs-node` runs it against its storage-backed implementation (one
//! fresh master per call); [`crate::mem::MemBackend`] runs it in this crate's tests.
//! [`run_locks`] checks the Lock path of a backend with a lock table (`shoal-tests`'
//! `state_backend` runs it; MemBackend has no lock table).
//!
//! Each check returns `Err` naming the rule broken, so a failing implementation learns what to
//! fix rather than where an assert fired.

use crate::backend::Backend;
use crate::error::ServerError;
use bytes::Bytes;
use protocol::message::data::{
    Condition, ErrorCode, KeyStat, Op, RangePage, RequestId, UpdateRequest,
};
use protocol::message::lock::{LockGrant, LockRequest, LockRequestOp};
use protocol::Zxid;
use std::time::Duration;

fn put(key: &str, value: &str) -> Op {
    Op::Put {
        key: key.to_string(),
        value: Bytes::from(value.to_string()),
        create_only: false,
        ephemeral: None,
    }
}

fn mkdir(key: &str) -> Op {
    Op::Mkdir { key: key.to_string() }
}

struct Writer {
    seq: u64,
}

impl Writer {
    fn request(&mut self, ops: Vec<Op>) -> UpdateRequest {
        self.seq += 1;
        UpdateRequest {
            request: RequestId { client: 1 << 40, seq: self.seq },
            conditions: vec![],
            ops,
        }
    }
}

fn check(ok: bool, rule: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(rule.to_string())
    }
}

/// Runs every check against `backend`, which must be a fresh (empty) master.
pub async fn run_all<B: Backend>(backend: &B) -> Result<(), String> {
    let mut w = Writer { seq: 0 };
    let start = backend.applied();

    // Explicit directories; the refusal names the parent; a refused write applies nothing.
    match backend.submit(w.request(vec![put("/c/a/b", "x")])).await {
        Err(ServerError::ParentMissing { parent, .. }) if parent == "/c/a" => {}
        other => return Err(format!("a write under a missing parent gave {other:?}")),
    }
    check(backend.applied() == start, "a refused write moved the applied zxid")?;

    // A batch is atomic.
    let refused = backend.submit(w.request(vec![mkdir("/c"), put("/c/x/y", "1")])).await;
    check(refused.is_err(), "a batch with a bad op was accepted")?;
    check(!backend.exists("/c").await.map_err(|e| e.to_string())?.value, "half a batch applied")?;

    // Acknowledged writes are applied, and reads carry the applied zxid they show.
    let z1 = backend
        .submit(w.request(vec![mkdir("/c"), put("/c/k", "v1")]))
        .await
        .map_err(|e| format!("a valid write was refused: {e}"))?;
    check(z1 > start, "a write's zxid is not above the start")?;
    let got = backend.get("/c/k").await.map_err(|e| e.to_string())?;
    check(got.applied >= z1, "a read after an acknowledged write shows an older applied zxid")?;
    let value = got.value.ok_or("an acknowledged value is missing")?;
    check(value.value == "v1" && value.zxid == z1, "the value or its zxid is wrong")?;
    check(
        backend.get("/c/none").await.map_err(|e| e.to_string())?.value.is_none(),
        "a missing key is not None",
    )?;
    check(
        matches!(backend.get("/c").await, Err(ServerError::IsADirectory { .. })),
        "get of a directory is not IsADirectory",
    )?;
    check(backend.is_dir("/c").await.map_err(|e| e.to_string())?.value, "mkdir made no directory")?;

    // Retries are de-duplicated by request id.
    let retry = w.request(vec![put("/c/once", "1")]);
    let first = backend.submit(retry.clone()).await.map_err(|e| e.to_string())?;
    let second = backend.submit(retry).await.map_err(|e| e.to_string())?;
    check(first == second, "a retry with the same request id got a different zxid")?;
    check(backend.applied() == first, "a retry applied a second entry")?;

    // Conditions are checked atomically with the ops.
    let mut cas = w.request(vec![put("/c/k", "v2")]);
    cas.conditions.push(Condition::KeyZxid { key: "/c/k".into(), zxid: Zxid::ZERO });
    check(
        matches!(backend.submit(cas).await, Err(ServerError::ConditionFailed { .. })),
        "a failed condition did not refuse the write",
    )?;

    // Listing is sorted and direct children only; rename moves a subtree.
    backend
        .submit(w.request(vec![mkdir("/c/d"), put("/c/d/e", "1")]))
        .await
        .map_err(|e| e.to_string())?;
    let names: Vec<String> = backend
        .list("/c", 100)
        .await
        .map_err(|e| e.to_string())?
        .value
        .into_iter()
        .map(|e| e.name)
        .collect();
    check(names == ["d", "k", "once"], "list is not the sorted direct children")?;
    let renamed = backend
        .submit(w.request(vec![Op::Rename { from: "/c/d".into(), to: "/c/m".into() }]))
        .await
        .map_err(|e| e.to_string())?;

    // Stat: the last write's zxid (a rename's for what it moved), kind, size, owner.
    let stat = |key: &'static str| async move {
        backend.stat(key).await.map(|s| s.value).map_err(|e| e.to_string())
    };
    let moved = KeyStat { zxid: renamed, is_dir: false, size: 1, ephemeral: None };
    check(stat("/c/m/e").await? == Some(moved), "stat of a moved value is wrong")?;
    check(stat("/c/m").await?.is_some_and(|s| s.is_dir && s.size == 0), "stat of a directory")?;
    check(stat("/c/none").await?.is_none(), "stat of a missing key is not None")?;
    let root = KeyStat { zxid: Zxid::ZERO, is_dir: true, size: 0, ephemeral: None };
    check(stat("/").await? == Some(root), "the root is not a directory at zxid 0")?;
    check(
        backend.get("/c/m/e").await.map_err(|e| e.to_string())?.value.is_some()
            && !backend.exists("/c/d/e").await.map_err(|e| e.to_string())?.value,
        "rename did not move the subtree",
    )?;

    // Range: every value below the directory at any depth, in key order, paged by count
    // and bytes with the next page's start, of one state; a missing or value `dir` refused.
    let range = |dir: &'static str, from: Option<&'static str>, limit: u32, bytes_max: u32| async move {
        backend.range(dir, from, limit, bytes_max).await.map_err(|e| e.to_string())
    };
    let keys = |page: &RangePage| page.entries.iter().map(|e| e.key.clone()).collect::<Vec<_>>();
    let all = range("/c", None, 100, u32::MAX).await?;
    check(keys(&all.value) == ["/c/k", "/c/m/e", "/c/once"], "range is not every value below")?;
    check(all.value.next.is_none(), "a range read to its end names a next page")?;
    check(
        all.value.zxid == all.applied && all.applied >= renamed,
        "a range page's zxid is not its snapshot's",
    )?;
    let e = &all.value.entries[1];
    check(e.zxid == renamed && e.value == "1", "a range entry's zxid or value is wrong")?;
    let first = range("/c", None, 2, u32::MAX).await?.value;
    check(keys(&first) == ["/c/k", "/c/m/e"], "a range page is not cut at its limit")?;
    check(first.next.as_deref() == Some("/c/once"), "the next page's start is wrong")?;
    let rest = range("/c", Some("/c/once"), 2, u32::MAX).await?.value;
    check(keys(&rest) == ["/c/once"] && rest.next.is_none(), "a range from a key is wrong")?;
    let between = range("/c", Some("/c/l"), 100, u32::MAX).await?.value;
    check(keys(&between) == ["/c/m/e", "/c/once"], "a range from an absent key is wrong")?;
    let tight = range("/c", None, 100, 0).await?.value;
    check(
        keys(&tight) == ["/c/k"] && tight.next.as_deref() == Some("/c/m/e"),
        "a page over its byte budget does not hold exactly one value",
    )?;
    let root = range("/", None, 100, u32::MAX).await?.value;
    check(keys(&root) == keys(&all.value), "a range of the root is not every value")?;
    check(
        matches!(backend.range("/c/none", None, 1, 1).await, Err(ServerError::NotFound { .. })),
        "a range of a missing directory is not NotFound",
    )?;
    check(
        matches!(backend.range("/c/k", None, 1, 1).await, Err(ServerError::NotADirectory { .. })),
        "a range of a value is not NotADirectory",
    )?;

    // wait_applied: immediate when reached, Behind after the timeout when not.
    let applied = backend.applied();
    let reached = backend.wait_applied(applied, Duration::from_millis(10)).await;
    check(reached.is_ok_and(|z| z >= applied), "wait_applied of a reached zxid failed")?;
    let ahead = applied.next().ok_or("counter exhausted")?;
    check(
        matches!(
            backend.wait_applied(ahead, Duration::from_millis(10)).await,
            Err(ServerError::Behind { .. })
        ),
        "wait_applied of a future zxid did not answer Behind",
    )?;

    // The linearizable zxid on a master covers every acknowledged write.
    let lin = backend.linearizable_zxid().await.map_err(|e| e.to_string())?;
    check(lin >= backend.applied(), "the linearizable zxid is below an acknowledged write")?;
    Ok(())
}

fn lock_request(client: u64, seq: u64, op: LockRequestOp) -> LockRequest {
    LockRequest { request: RequestId { client, seq }, op }
}

fn refused_with(result: &Result<LockGrant, ServerError>, code: ErrorCode) -> bool {
    matches!(result, Err(e) if e.code() == code)
}

/// The Lock path of a backend with a lock table (`run_all` does not need one): grants carry a
/// growing fencing token, a different auth word on a held lock is refused with who holds it,
/// a wrong auth word changes nothing, renewals are answered, release frees the lock. `backend`
/// must be a fresh master.
pub async fn run_locks<B: Backend>(backend: &B) -> Result<(), String> {
    let (a, b) = ((1u64 << 40) + 1, (1u64 << 40) + 2);
    let acquire = |auth: i32| LockRequestOp::Acquire {
        lock: "/conformance-lock".into(),
        auth,
        session: 0,
        host: "conformance".into(),
    };
    let before = backend.applied();
    let first = match backend.lock(lock_request(a, 1, acquire(1234))).await {
        Ok(LockGrant::Granted { token }) => token,
        other => return Err(format!("acquiring a free lock gave {other:?}")),
    };
    check(first > before, "a grant's fencing token is not above what was applied before it")?;
    let refused = backend.lock(lock_request(b, 1, acquire(99))).await;
    check(refused_with(&refused, ErrorCode::LockHeld), "a held lock was granted to another")?;
    check(
        matches!(&refused, Err(e) if e.to_wire().message.contains("conformance")),
        "the LockHeld refusal does not name the holder's host",
    )?;
    let release = |auth: i32| LockRequestOp::Release { lock: "/conformance-lock".into(), auth };
    let wrong = backend.lock(lock_request(a, 2, release(4321))).await;
    check(refused_with(&wrong, ErrorCode::BadAuth), "a release with a wrong auth word")?;
    let renew = |auth: i32| LockRequestOp::Renew {
        session: 0,
        locks: vec![("/conformance-lock".to_string(), auth)],
    };
    let renewed = backend.lock(lock_request(a, 3, renew(1234))).await;
    check(matches!(renewed, Ok(LockGrant::Renewed { .. })), "a renewal by the holder failed")?;
    let wrong = backend.lock(lock_request(a, 4, renew(1))).await;
    check(refused_with(&wrong, ErrorCode::BadAuth), "a renewal with a wrong auth word")?;
    let released = backend.lock(lock_request(a, 5, release(1234))).await;
    check(matches!(released, Ok(LockGrant::Released)), "the holder's release failed")?;
    let second = match backend.lock(lock_request(b, 2, acquire(99))).await {
        Ok(LockGrant::Granted { token }) => token,
        other => return Err(format!("acquiring a released lock gave {other:?}")),
    };
    check(second > first, "fencing tokens did not grow")?;
    let bad_name = LockRequestOp::Acquire {
        lock: "no-slash".into(),
        auth: 5,
        session: 0,
        host: "conformance".into(),
    };
    let refused = backend.lock(lock_request(b, 3, bad_name)).await;
    check(refused_with(&refused, ErrorCode::BadKey), "a lock name outside the namespace rules")?;
    Ok(())
}
