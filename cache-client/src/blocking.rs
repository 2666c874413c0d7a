//! [`BlockingClient`]: the same API for callers without an async runtime. It owns a small tokio
//! runtime (one worker thread, which also runs the event pump between calls) and blocks on each
//! call. Do not use it from inside another tokio runtime.
//!
//! Locks, sessions and transactions mirror the async API: [`BlockingClient::lock`] and
//! [`BlockingClient::lock_wait`] give a [`BlockingLockGuard`], [`BlockingClient::transaction`]
//! a [`BlockingTxnBuilder`] and then a [`BlockingTxn`]. The lock renewal runs on the client's
//! runtime, so locks stay renewed while the caller's thread does other work. Dropping a guard
//! or an unfinished transaction releases its locks as the async ones do (a release spawned on
//! the client's runtime: the guards keep a handle to it, since the caller's thread has none).

use crate::client::{Batch, Client, RangeRead, ReadOptions};
use crate::error::ClientError;
use crate::locks::{LockGuard, SessionState};
use crate::net::{ClusterFile, SocketTransport};
use crate::transport::Transport;
use crate::txn::{Txn, TxnBuilder};
use crate::watch::{Kinds, Target, WatchEvent, WatchId};
use crate::ClientConfig;
use bytes::Bytes;
use protocol::message::data::{Condition, DirEntry, KeyStat, RangePage, Versioned};
use protocol::Zxid;
use std::path::Path;
use std::time::Duration;
use tokio::runtime::Handle;

pub struct BlockingClient<T: Transport> {
    client: Client<T>,
    // Dropped after the client, so the pump's abort happens while the runtime is alive.
    runtime: tokio::runtime::Runtime,
}

/// The client's own runtime: one worker thread, which also runs the event pump.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("shoal-client")
        .enable_all()
        .build()
}

impl BlockingClient<SocketTransport> {
    /// Joins the cluster that the cluster file at `path` names (as `shoal` does): a socket
    /// transport bound on the client's own runtime (its sockets and pump live there, so no
    /// caller runtime is needed), the file's members added to `config.seeds`, and the client
    /// id `config.client_id` (random when `None`). A file that cannot be read or a group that
    /// cannot be joined is an error, and nothing is left running.
    pub fn connect(
        path: &Path,
        mut config: ClientConfig,
    ) -> Result<BlockingClient<SocketTransport>, ClientError> {
        let runtime = runtime()
            .map_err(|e| ClientError::Transport(format!("cannot start the client runtime: {e}")))?;
        let client = runtime.block_on(async {
            let (file, auth) = ClusterFile::load(path)?;
            let transport = SocketTransport::connect(&file, auth, config.client_id).await?;
            config.seeds.extend(file.seeds());
            config.client_id = Some(transport.id());
            Ok::<_, ClientError>(Client::new(transport, config))
        })?;
        Ok(BlockingClient { client, runtime })
    }
}

impl<T: Transport> BlockingClient<T> {
    pub fn new(transport: T, config: ClientConfig) -> std::io::Result<BlockingClient<T>> {
        let runtime = runtime()?;
        let client = runtime.block_on(async { Client::new(transport, config) });
        Ok(BlockingClient { client, runtime })
    }

    /// The async client inside (shares cache, floor and watches).
    pub fn client(&self) -> &Client<T> {
        &self.client
    }

    pub fn floor(&self) -> Zxid {
        self.client.floor()
    }

    pub fn read(&self, key: &str) -> Result<Option<Versioned>, ClientError> {
        self.runtime.block_on(self.client.read(key))
    }

    pub fn read_with(
        &self,
        key: &str,
        options: ReadOptions,
    ) -> Result<Option<Versioned>, ClientError> {
        self.runtime.block_on(self.client.read_with(key, options))
    }

    pub fn exists(&self, key: &str) -> Result<bool, ClientError> {
        self.runtime.block_on(self.client.exists(key))
    }

    pub fn is_dir(&self, key: &str) -> Result<bool, ClientError> {
        self.runtime.block_on(self.client.is_dir(key))
    }

    /// See [`Client::stat`].
    pub fn stat(&self, key: &str) -> Result<Option<KeyStat>, ClientError> {
        self.runtime.block_on(self.client.stat(key))
    }

    /// See [`Client::range_page`].
    pub fn range_page(
        &self,
        dir: &str,
        from: Option<&str>,
        limit: u32,
    ) -> Result<RangePage, ClientError> {
        self.runtime.block_on(self.client.range_page(dir, from, limit))
    }

    /// See [`Client::range`].
    pub fn range(
        &self,
        dir: &str,
        from: Option<&str>,
        limit: Option<usize>,
    ) -> Result<RangeRead, ClientError> {
        self.runtime.block_on(self.client.range(dir, from, limit))
    }

    /// See [`Client::range_with`].
    pub fn range_with(
        &self,
        dir: &str,
        from: Option<&str>,
        limit: Option<usize>,
        page_values: u32,
    ) -> Result<RangeRead, ClientError> {
        self.runtime.block_on(self.client.range_with(dir, from, limit, page_values))
    }

    pub fn list(&self, dir: &str) -> Result<Vec<DirEntry>, ClientError> {
        self.runtime.block_on(self.client.list(dir))
    }

    pub fn create(
        &self,
        key: &str,
        value: impl Into<Bytes>,
        ephemeral: Option<u64>,
    ) -> Result<Zxid, ClientError> {
        self.runtime.block_on(self.client.create(key, value, ephemeral))
    }

    pub fn write(&self, key: &str, value: impl Into<Bytes>) -> Result<Zxid, ClientError> {
        self.runtime.block_on(self.client.write(key, value))
    }

    pub fn mkdir(&self, key: &str) -> Result<Zxid, ClientError> {
        self.runtime.block_on(self.client.mkdir(key))
    }

    pub fn remove(&self, key: &str, recursive: bool) -> Result<Zxid, ClientError> {
        self.runtime.block_on(self.client.remove(key, recursive))
    }

    pub fn rename(&self, from: &str, to: &str) -> Result<Zxid, ClientError> {
        self.runtime.block_on(self.client.rename(from, to))
    }

    pub fn batch(&self, batch: Batch) -> Result<Zxid, ClientError> {
        self.runtime.block_on(self.client.batch(batch))
    }

    pub fn watch(
        &self,
        target: Target,
        kinds: Kinds,
        callback: impl Fn(&WatchEvent) + Send + Sync + 'static,
    ) -> Result<WatchId, ClientError> {
        self.client.watch(target, kinds, callback)
    }

    /// Resumes a watch from `from` (see [`Client::watch_from`]): every event after it once, in
    /// order, from history then live; `Compacted` when history no longer reaches back to it.
    pub fn watch_from(
        &self,
        target: Target,
        kinds: Kinds,
        from: Zxid,
        callback: impl Fn(&WatchEvent) + Send + Sync + 'static,
    ) -> Result<WatchId, ClientError> {
        self.client.watch_from(target, kinds, from, callback)
    }

    pub fn unwatch(&self, id: WatchId) -> bool {
        self.client.unwatch(id)
    }

    // ---- locks, sessions, transactions ----

    /// Takes `name` now (see [`Client::lock`]): a held lock is refused with `LockHeld`.
    pub fn lock(&self, name: &str, shared: bool) -> Result<BlockingLockGuard<T>, ClientError> {
        let guard = self.runtime.block_on(self.client.lock(name, shared))?;
        Ok(BlockingLockGuard::new(guard, self.runtime.handle()))
    }

    /// Takes `name`, waiting at most `wait` while others hold it (see [`Client::lock_wait`]).
    pub fn lock_wait(
        &self,
        name: &str,
        shared: bool,
        wait: Duration,
    ) -> Result<BlockingLockGuard<T>, ClientError> {
        let guard = self.runtime.block_on(self.client.lock_wait(name, shared, wait))?;
        Ok(BlockingLockGuard::new(guard, self.runtime.handle()))
    }

    /// Releases `name` with an auth word the caller names (see [`Client::unlock_with_auth`]).
    pub fn unlock_with_auth(&self, name: &str, auth: i32) -> Result<(), ClientError> {
        self.runtime.block_on(self.client.unlock_with_auth(name, auth))
    }

    /// The state of this client's leases (see [`Client::session_state`]).
    pub fn session_state(&self) -> tokio::sync::watch::Receiver<SessionState> {
        self.client.session_state()
    }

    /// Lock names this client holds.
    pub fn held_locks(&self) -> Vec<String> {
        self.client.held_locks()
    }

    /// This client's session id, opening one if needed (see [`Client::ensure_session`]).
    pub fn ensure_session(&self) -> Result<u64, ClientError> {
        self.runtime.block_on(self.client.ensure_session())
    }

    /// Creates `key` as an ephemeral entry of this client's session.
    pub fn create_ephemeral(
        &self,
        key: &str,
        value: impl Into<Bytes>,
    ) -> Result<Zxid, ClientError> {
        self.runtime.block_on(self.client.create_ephemeral(key, value))
    }

    /// Closes the session: its ephemeral entries are deleted and its locks released.
    pub fn close_session(&self) -> Result<(), ClientError> {
        self.runtime.block_on(self.client.close_session())
    }

    /// Starts declaring a transaction (see [`Client::transaction`]).
    pub fn transaction(&self) -> BlockingTxnBuilder<T> {
        BlockingTxnBuilder {
            builder: self.client.transaction(),
            handle: self.runtime.handle().clone(),
        }
    }
}

/// A held lock of a [`BlockingClient`]. Dropping it releases the lock (in a task on the
/// client's runtime); [`BlockingLockGuard::release`] waits for the master's answer.
pub struct BlockingLockGuard<T: Transport> {
    /// `None` once released.
    guard: Option<LockGuard<T>>,
    handle: Handle,
}

impl<T: Transport> std::fmt::Debug for BlockingLockGuard<T> {
    /// The inner guard's: never the auth word.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingLockGuard").field("guard", &self.guard).finish()
    }
}

impl<T: Transport> BlockingLockGuard<T> {
    fn new(guard: LockGuard<T>, handle: &Handle) -> BlockingLockGuard<T> {
        BlockingLockGuard { guard: Some(guard), handle: handle.clone() }
    }

    fn inner(&self) -> &LockGuard<T> {
        self.guard.as_ref().expect("a guard is only emptied by release or drop")
    }

    pub fn name(&self) -> &str {
        self.inner().name()
    }

    /// The fencing token: the zxid of the grant.
    pub fn token(&self) -> Zxid {
        self.inner().token()
    }

    pub fn is_shared(&self) -> bool {
        self.inner().is_shared()
    }

    /// Whether the client still counts on this lock (see [`LockGuard::is_held`]).
    pub fn is_held(&self) -> bool {
        self.inner().is_held()
    }

    /// The write condition "this lock is still held with this token" (fencing).
    pub fn condition(&self) -> Condition {
        self.inner().condition()
    }

    /// Releases the lock and waits for the master's answer (`LockLost` if it was lost).
    pub fn release(mut self) -> Result<(), ClientError> {
        let guard = self.guard.take().expect("a guard is only emptied by release or drop");
        self.handle.block_on(guard.release())
    }
}

impl<T: Transport> Drop for BlockingLockGuard<T> {
    fn drop(&mut self) {
        if let Some(guard) = self.guard.take() {
            // The async guard spawns its release on the current runtime: make it this one.
            let _entered = self.handle.enter();
            drop(guard);
        }
    }
}

/// Declares a blocking transaction's keys; [`BlockingTxnBuilder::begin`] takes the locks.
pub struct BlockingTxnBuilder<T: Transport> {
    builder: TxnBuilder<T>,
    handle: Handle,
}

impl<T: Transport> BlockingTxnBuilder<T> {
    pub fn read(self, key: impl Into<String>) -> Self {
        BlockingTxnBuilder { builder: self.builder.read(key), handle: self.handle }
    }

    pub fn write(self, key: impl Into<String>) -> Self {
        BlockingTxnBuilder { builder: self.builder.write(key), handle: self.handle }
    }

    /// How long to wait for each contended lock.
    pub fn wait(self, wait: Duration) -> Self {
        BlockingTxnBuilder { builder: self.builder.wait(wait), handle: self.handle }
    }

    /// Takes every lock in key order (see [`TxnBuilder::begin`]).
    pub fn begin(self) -> Result<BlockingTxn<T>, ClientError> {
        let txn = self.handle.block_on(self.builder.begin())?;
        Ok(BlockingTxn { txn: Some(txn), handle: self.handle })
    }
}

/// A running blocking transaction (see [`Txn`]). Dropping it unfinished releases its locks.
pub struct BlockingTxn<T: Transport> {
    /// `None` once committed or cancelled.
    txn: Option<Txn<T>>,
    handle: Handle,
}

impl<T: Transport> BlockingTxn<T> {
    fn inner(&self) -> &Txn<T> {
        self.txn.as_ref().expect("a transaction is only emptied by commit, cancel or drop")
    }

    fn inner_mut(&mut self) -> &mut Txn<T> {
        self.txn.as_mut().expect("a transaction is only emptied by commit, cancel or drop")
    }

    /// The fencing tokens of the transaction's locks, by key.
    pub fn tokens(&self) -> Vec<(String, Zxid)> {
        self.inner().tokens()
    }

    /// Reads `key` under its lock (or from this transaction's own buffered write).
    pub fn read(&self, key: &str) -> Result<Option<Bytes>, ClientError> {
        self.handle.block_on(self.inner().read(key))
    }

    /// Buffers a write of `value` at `key` (declared for writing).
    pub fn write(&mut self, key: &str, value: impl Into<Bytes>) -> Result<(), ClientError> {
        self.inner_mut().write(key, value)
    }

    /// Buffers a removal of `key` (declared for writing).
    pub fn remove(&mut self, key: &str) -> Result<(), ClientError> {
        self.inner_mut().remove(key)
    }

    /// Commits the buffered writes as one entry only if every lock is still held (see
    /// [`Txn::commit`]).
    pub fn commit(mut self) -> Result<Zxid, ClientError> {
        let txn = self.txn.take().expect("a transaction is only emptied by commit or cancel");
        self.handle.block_on(txn.commit())
    }

    /// Discards the buffered writes and releases the locks.
    pub fn cancel(mut self) -> Result<(), ClientError> {
        let txn = self.txn.take().expect("a transaction is only emptied by commit or cancel");
        self.handle.block_on(txn.cancel())
    }
}

impl<T: Transport> Drop for BlockingTxn<T> {
    fn drop(&mut self) {
        if let Some(txn) = self.txn.take() {
            // Its guards spawn their releases on the current runtime: make it the client's.
            let _entered = self.handle.enter();
            drop(txn);
        }
    }
}
