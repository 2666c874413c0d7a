//! The [`Backend`] trait: everything the server needs from storage and replication, and
//! nothing more. `fs-node` implements it over its storage engine and replication engine;
//! [`crate::mem::MemBackend`] implements it in memory for tests.
//!
//! # Rules every implementation keeps
//! - **Reads are snapshots.** A read returns its result together with a zxid `applied` such
//!   that the result is exactly the state after applying every committed entry up to `applied`
//!   (no torn batch, no later entry mixed in). The server reports that zxid to the client, whose
//!   floor it becomes, so reporting a zxid *below* what the read saw would break monotonic reads.
//! - **Applied only grows** (until a file-transfer install, after which the server's cache must
//!   be flushed with [`crate::Server::flush_cache`]).
//! - **`submit` acknowledges only durable, committed writes**, returns the entry's zxid, and
//!   de-duplicates by `RequestId`: a retry of a request already committed returns the first
//!   result. A follower answers `NotMaster` with the master it knows.
//! - **`linearizable_zxid`** returns, on the master inside its lease, a zxid at or above every
//!   write acknowledged so far; the server then waits for it to be applied and reads locally.
//!   Anywhere else it returns `NotMaster`.
//! - **`lock`** answers a Lock message on the master: `Renew` from the master's lease clock
//!   (`fs_node::locks::LeaseKeeper::answer_renewal`, never a log record); `Acquire`, `Release`,
//!   `OpenSession` and `CloseSession` through the log like any write (de-duplicated by
//!   `RequestId`, acknowledged once committed). The lock rules themselves live in `fs-node`
//!   (`fs_node::locks`); a backend passes the state machine's refusals through unchanged as
//!   [`ServerError::Refused`]. A follower answers `NotMaster`. A backend without a lock table
//!   keeps the default, which answers `Unavailable`.

use crate::error::ServerError;
use protocol::message::data::{DirEntry, KeyStat, RangePage, Role, UpdateRequest, Versioned};
use protocol::message::lock::{LockGrant, LockRequest};
use protocol::{NodeId, Zxid};
use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;

/// A read result and the applied zxid whose state it shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot<T> {
    pub value: T,
    pub applied: Zxid,
}

/// What FSLive and `shoal status` report about the node's place in the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendStatus {
    pub node: NodeId,
    pub role: Role,
    pub epoch: u32,
    pub master: Option<NodeId>,
    pub applied: Zxid,
    pub committed: Zxid,
    pub frozen: bool,
    /// A running file transfer, for `shoal status`.
    pub transfer: Option<String>,
}

/// Storage and replication as the server sees them. Futures are `Send` so that a server can
/// run each request on its own task.
pub trait Backend: Send + Sync + 'static {
    /// Role, epoch, master, applied and frozen flag right now (cheap, no IO).
    fn status(&self) -> BackendStatus;

    /// The zxid applied so far (cheap: called on every cached read).
    fn applied(&self) -> Zxid;

    /// The value at `key`; `None` when nothing is there. A directory is `IsADirectory`.
    fn get(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Snapshot<Option<Versioned>>, ServerError>> + Send;

    /// Whether a value or a directory is at `key`.
    fn exists(&self, key: &str)
        -> impl Future<Output = Result<Snapshot<bool>, ServerError>> + Send;

    /// Whether `key` is a directory (`false` when absent or a value).
    fn is_dir(&self, key: &str)
        -> impl Future<Output = Result<Snapshot<bool>, ServerError>> + Send;

    /// The metadata of `key` (last write's zxid, directory or not, value size, ephemeral
    /// owner); `None` when nothing is there. The root is a directory at zxid 0.
    fn stat(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Snapshot<Option<KeyStat>>, ServerError>> + Send;

    /// The direct children of directory `dir`, sorted by name, at most `limit` of them.
    /// `NotFound` when `dir` is absent, `NotADirectory` when it is a value.
    fn list(
        &self,
        dir: &str,
        limit: usize,
    ) -> impl Future<Output = Result<Snapshot<Vec<DirEntry>>, ServerError>> + Send;

    /// One page of the values below directory `dir`, recursively, in key byte order from
    /// `from` on, cut as [`protocol::range`] says (at most `limit` values, about `bytes_max`
    /// bytes, at least one value), all of one state: the page's `zxid` is the snapshot's
    /// `applied`. `NotFound` when `dir` is absent, `NotADirectory` when it is a value. The
    /// arguments were checked by [`protocol::range::validate`].
    fn range(
        &self,
        dir: &str,
        from: Option<&str>,
        limit: u32,
        bytes_max: u32,
    ) -> impl Future<Output = Result<Snapshot<RangePage>, ServerError>> + Send;

    /// Resolves once the node has applied `zxid` (returning what it has applied), or fails with
    /// `Behind` after `timeout`.
    fn wait_applied(
        &self,
        zxid: Zxid,
        timeout: Duration,
    ) -> impl Future<Output = Result<Zxid, ServerError>> + Send;

    /// Orders, replicates and applies one write (all ops atomically, only if every condition
    /// holds). Resolves with the committed entry's zxid once durable on a majority.
    fn submit(
        &self,
        request: UpdateRequest,
    ) -> impl Future<Output = Result<Zxid, ServerError>> + Send;

    /// On the master inside its lease: a zxid at or above every acknowledged write. Elsewhere
    /// `NotMaster`.
    fn linearizable_zxid(&self) -> impl Future<Output = Result<Zxid, ServerError>> + Send;

    /// Answers a Lock message (see the module rules): renewals from the master's lease clock,
    /// everything else through the log. The default is for backends with no lock table.
    fn lock(
        &self,
        request: LockRequest,
    ) -> impl Future<Output = Result<LockGrant, ServerError>> + Send {
        let _ = request;
        async { Err(ServerError::Unavailable("this backend has no lock table".to_string())) }
    }
}

/// The body of [`Backend::wait_applied`] for a backend that publishes its applied zxid in a
/// `watch` channel: resolves once the published zxid reaches `zxid`, or `Behind` (with the last
/// published zxid) after `timeout`. The backend owns the sender, so the channel closing means
/// it is being torn down: `Unavailable`.
pub async fn wait_applied_on(
    applied: &watch::Sender<Zxid>,
    zxid: Zxid,
    timeout: Duration,
) -> Result<Zxid, ServerError> {
    let mut rx = applied.subscribe();
    let reached =
        tokio::time::timeout(timeout, async { rx.wait_for(|a| *a >= zxid).await.map(|a| *a) })
            .await;
    match reached {
        Ok(Ok(applied)) => Ok(applied),
        Ok(Err(_)) => {
            Err(ServerError::Unavailable("stopping: applied zxid no longer published".into()))
        }
        Err(_) => Err(ServerError::Behind { floor: zxid, applied: *rx.borrow() }),
    }
}
