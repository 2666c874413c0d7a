//! [`NodeBackend`]: the cache server's view of this node. Reads go straight to the store under
//! the applied lock (a snapshot at exactly the reported zxid); writes and linearizable-read
//! barriers go to the core task, which proposes them and answers once they commit.

use super::core::{server_error, Cmd, Waiter};
use super::shared::Shared;
use crate::metrics::OpKind;
use crate::state::Command;
use crate::storage::{StorageError, StoreError};
use bytes::Bytes;
use cache_server::{Backend, BackendStatus, ServerError, Snapshot};
use protocol::key::ROOT;
use protocol::message::data::{
    DirEntry, ErrorCode, KeyStat, RangePage, UpdateRequest, Versioned, WireError,
};
use protocol::message::lock::{LockGrant, LockRequest, LockRequestOp};
use protocol::Zxid;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// The node as a [`Backend`]. Cheap to clone.
#[derive(Clone)]
pub struct NodeBackend {
    shared: Arc<Shared>,
}

impl NodeBackend {
    pub(crate) fn new(shared: Arc<Shared>) -> NodeBackend {
        NodeBackend { shared }
    }
}

fn stopping() -> ServerError {
    ServerError::Unavailable("the node is stopping".into())
}

fn store_error(e: StoreError) -> ServerError {
    match e {
        StoreError::NotFound { key } => ServerError::NotFound { key },
        StoreError::NotADirectory { key } => ServerError::NotADirectory { key },
        StoreError::IsADirectory { key } => ServerError::IsADirectory { key },
        other => ServerError::Internal(other.to_string()),
    }
}

impl Backend for NodeBackend {
    fn status(&self) -> BackendStatus {
        let status = *self.shared.status.lock().expect("status poisoned");
        BackendStatus {
            node: self.shared.node,
            role: status.role,
            epoch: status.epoch,
            master: status.master,
            applied: self.applied(),
            committed: status.committed,
            frozen: self.shared.transfers.donating(),
            transfer: self.shared.transfers.status(),
        }
    }

    fn applied(&self) -> Zxid {
        *self.shared.applied.read().expect("applied lock poisoned")
    }

    async fn get(&self, key: &str) -> Result<Snapshot<Option<Versioned>>, ServerError> {
        self.shared.metrics.op(OpKind::Get);
        let applied = self.shared.applied.read().expect("applied lock poisoned");
        if key == ROOT || self.shared.store.is_dir(key) {
            return Err(ServerError::IsADirectory { key: key.to_string() });
        }
        let value = self.shared.store.get(key).map_err(|e| ServerError::Internal(e.to_string()))?;
        Ok(Snapshot { value, applied: *applied })
    }

    async fn exists(&self, key: &str) -> Result<Snapshot<bool>, ServerError> {
        self.shared.metrics.op(OpKind::Exists);
        let applied = self.shared.applied.read().expect("applied lock poisoned");
        let value = key == ROOT || self.shared.store.exists(key);
        Ok(Snapshot { value, applied: *applied })
    }

    async fn is_dir(&self, key: &str) -> Result<Snapshot<bool>, ServerError> {
        self.shared.metrics.op(OpKind::IsDir);
        let applied = self.shared.applied.read().expect("applied lock poisoned");
        let value = key == ROOT || self.shared.store.is_dir(key);
        Ok(Snapshot { value, applied: *applied })
    }

    async fn stat(&self, key: &str) -> Result<Snapshot<Option<KeyStat>>, ServerError> {
        self.shared.metrics.op(OpKind::Stat);
        let (reply, rx) = oneshot::channel();
        let cmd = Cmd::Stat { key: key.to_string(), reply };
        self.shared.cmds.send(cmd).await.map_err(|_| stopping())?;
        rx.await.map_err(|_| stopping())
    }

    async fn list(&self, dir: &str, limit: usize) -> Result<Snapshot<Vec<DirEntry>>, ServerError> {
        self.shared.metrics.op(OpKind::List);
        let applied = self.shared.applied.read().expect("applied lock poisoned");
        let mut value: Vec<DirEntry> = self.shared.store.list(dir).map_err(store_error)?;
        value.truncate(limit);
        Ok(Snapshot { value, applied: *applied })
    }

    /// Under the applied lock throughout: no entry applies while the page is read, so it is
    /// the state at exactly the zxid it reports.
    async fn range(
        &self,
        dir: &str,
        from: Option<&str>,
        limit: u32,
        bytes_max: u32,
    ) -> Result<Snapshot<RangePage>, ServerError> {
        self.shared.metrics.op(OpKind::Range);
        let applied = self.shared.applied.read().expect("applied lock poisoned");
        let (entries, next) =
            self.shared.store.range(dir, from, limit, bytes_max).map_err(|e| match e {
                StorageError::Rejected(e) => store_error(e),
                other => ServerError::Internal(other.to_string()),
            })?;
        Ok(Snapshot { value: RangePage { entries, zxid: *applied, next }, applied: *applied })
    }

    async fn wait_applied(&self, zxid: Zxid, timeout: Duration) -> Result<Zxid, ServerError> {
        cache_server::backend::wait_applied_on(&self.shared.applied_tx, zxid, timeout).await
    }

    async fn submit(&self, request: UpdateRequest) -> Result<Zxid, ServerError> {
        self.shared.metrics.op(OpKind::Write);
        let data = Command::from_update(request).encode().map_err(encode_error)?;
        let (tx, rx) = oneshot::channel();
        let started = std::time::Instant::now();
        self.shared
            .cmds
            .send(Cmd::Propose { data: Bytes::from(data), waiter: Waiter::Write(tx) })
            .await
            .map_err(|_| stopping())?;
        let result = rx.await.map_err(|_| stopping())?;
        if result.is_ok() {
            self.shared.metrics.write_latency_us.record(started.elapsed().as_micros() as u64);
        }
        result
    }

    async fn linearizable_zxid(&self) -> Result<Zxid, ServerError> {
        self.shared.metrics.op(OpKind::Linearizable);
        let (tx, rx) = oneshot::channel();
        self.shared.cmds.send(Cmd::Linearizable(tx)).await.map_err(|_| stopping())?;
        rx.await.map_err(|_| stopping())?
    }

    /// Renewals are answered by the master's lease keeper, everything else goes through the
    /// log. The state machine's refusals keep their wire code and message.
    async fn lock(&self, request: LockRequest) -> Result<LockGrant, ServerError> {
        self.shared.metrics.op(OpKind::Lock);
        lock_command(&self.shared, request).await.map_err(ServerError::Refused)
    }
}

/// The core command for a Lock message, and where its answer comes (already answered when
/// the message is not a lock command).
pub(super) fn lock_cmd(
    lock: LockRequest,
) -> (Option<Cmd>, oneshot::Receiver<Result<LockGrant, WireError>>) {
    let (tx, rx) = oneshot::channel();
    if let LockRequestOp::Renew { session, locks } = lock.op {
        return (Some(Cmd::Renew { client: lock.request.client, session, locks, reply: tx }), rx);
    }
    let data = Command::from_lock_request(lock)
        .ok_or_else(|| WireError {
            code: ErrorCode::BadRequest,
            message: "not a lock command".into(),
        })
        .and_then(|command| {
            command
                .encode()
                .map_err(|e| WireError { code: ErrorCode::TooLarge, message: e.to_string() })
        });
    match data {
        Ok(data) => (Some(Cmd::Propose { data: Bytes::from(data), waiter: Waiter::Lock(tx) }), rx),
        Err(e) => {
            let _ = tx.send(Err(e));
            (None, rx)
        }
    }
}

async fn lock_command(shared: &Shared, lock: LockRequest) -> Result<LockGrant, WireError> {
    let closed = || WireError { code: ErrorCode::Unavailable, message: "node stopping".into() };
    let (cmd, rx) = lock_cmd(lock);
    if let Some(cmd) = cmd {
        shared.cmds.send(cmd).await.map_err(|_| closed())?;
    }
    rx.await.map_err(|_| closed())?
}

/// An encoding failure names its own cause.
pub(super) fn encode_error(e: protocol::ProtocolError) -> ServerError {
    match e {
        protocol::ProtocolError::TooLarge { what, len, max } => {
            ServerError::TooLarge { what, len, max }
        }
        other => server_error(protocol::message::data::WireError {
            code: protocol::message::data::ErrorCode::BadRequest,
            message: other.to_string(),
        }),
    }
}
