//! [`BlockingClient`]: the same API for callers without an async runtime. It owns a small tokio
//! runtime (one worker thread, which also runs the event pump between calls) and blocks on each
//! call. Do not use it from inside another tokio runtime.

use crate::client::{Batch, Client, ReadOptions};
use crate::error::ClientError;
use crate::transport::Transport;
use crate::watch::{Kinds, Target, WatchEvent, WatchId};
use crate::ClientConfig;
use bytes::Bytes;
use protocol::message::data::{DirEntry, Versioned};
use protocol::Zxid;

pub struct BlockingClient<T: Transport> {
    client: Client<T>,
    // Dropped after the client, so the pump's abort happens while the runtime is alive.
    runtime: tokio::runtime::Runtime,
}

impl<T: Transport> BlockingClient<T> {
    pub fn new(transport: T, config: ClientConfig) -> std::io::Result<BlockingClient<T>> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("shoal-client")
            .enable_all()
            .build()?;
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

    pub fn unwatch(&self, id: WatchId) -> bool {
        self.client.unwatch(id)
    }
}
