//! Transactions: declare the keys and how each is used (read or write), take their locks in
//! one global order, read under them, buffer writes in a local TLV log, and commit the writes as
//! one Update that the master applies as one log entry only if every lock is still held.
//!
//! # Lock names
//! The lock guarding a key is named by the key path itself. So a plain `lock("/accounts/a")`
//! by any client excludes transactions on `/accounts/a`, which is what an operator expects;
//! keys longer than a lock name may be (`protocol::limits::NAME_BYTES_MAX`) cannot be used in a
//! transaction and are refused at declaration.
//!
//! # Rules
//! - Locks are taken in sorted key order (one global order, so transactions cannot deadlock),
//!   read keys shared (auth 1), written keys exclusive (a random auth). A key declared both
//!   ways is a write.
//! - Reads under the locks see every write committed before the grants (the grant's token
//!   raises the client's floor); a key this transaction already wrote reads from its buffer.
//! - A write to a key not declared for writing is refused before anything is sent.
//! - `commit` sends one Update: the buffered writes, a `LockHeld` condition for every lock
//!   (read locks too, so that what was read is still what is there), and the releases of the
//!   locks, all in one entry. If any lock was lost the master refuses the whole entry and
//!   nothing changes; the locks still held are then released.
//! - `cancel` discards the buffer and releases the locks; dropping an unfinished transaction
//!   does the same in a spawned task.
//! - Plain batches without locks commit as one entry too: [`crate::Batch`].

use crate::client::{Batch, Client};
use crate::error::ClientError;
use crate::locks::LockGuard;
use crate::transport::Transport;
use bytes::Bytes;
use protocol::key;
use protocol::limits::NAME_BYTES_MAX;
use protocol::message::data::Op;
use protocol::tlv::{self, RecordType};
use protocol::Zxid;
use std::collections::BTreeMap;
use std::time::Duration;

/// Default bound on how long `begin` waits for each contended lock.
pub const TXN_WAIT_DEFAULT: Duration = Duration::from_secs(10);

/// Most keys one transaction may declare (each lock and condition is one op of the commit).
pub const TXN_KEYS_MAX: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Intent {
    Read,
    Write,
}

/// Declares a transaction's keys; [`TxnBuilder::begin`] takes the locks.
pub struct TxnBuilder<T: Transport> {
    client: Client<T>,
    keys: BTreeMap<String, Intent>,
    wait: Duration,
}

impl<T: Transport> Client<T> {
    /// Starts declaring a transaction.
    pub fn transaction(&self) -> TxnBuilder<T> {
        TxnBuilder { client: self.clone(), keys: BTreeMap::new(), wait: TXN_WAIT_DEFAULT }
    }
}

impl<T: Transport> TxnBuilder<T> {
    pub fn read(mut self, key: impl Into<String>) -> Self {
        self.keys.entry(key.into()).or_insert(Intent::Read);
        self
    }

    pub fn write(mut self, key: impl Into<String>) -> Self {
        self.keys.insert(key.into(), Intent::Write);
        self
    }

    /// How long to wait for each contended lock (default [`TXN_WAIT_DEFAULT`]).
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// Takes every lock in key order. On any failure the locks taken so far are released.
    pub async fn begin(self) -> Result<Txn<T>, ClientError> {
        if self.keys.len() > TXN_KEYS_MAX {
            let (len, max) = (self.keys.len(), TXN_KEYS_MAX);
            return Err(ClientError::TooLarge { what: "transaction keys", len, max });
        }
        for key in self.keys.keys() {
            key::validate_mutable(key, self.client.config().key_bytes_max.min(NAME_BYTES_MAX))?;
        }
        let mut guards = Vec::with_capacity(self.keys.len());
        for (key, intent) in &self.keys {
            let shared = *intent == Intent::Read;
            guards.push(self.client.lock_wait(key, shared, self.wait).await?);
        }
        Ok(Txn {
            client: self.client,
            keys: self.keys,
            guards,
            log: Vec::new(),
            written: BTreeMap::new(),
        })
    }
}

/// A running transaction. See the module docs.
pub struct Txn<T: Transport> {
    client: Client<T>,
    keys: BTreeMap<String, Intent>,
    guards: Vec<LockGuard<T>>,
    /// The write log: one `TxnWrite` TLV record per buffered write.
    log: Vec<u8>,
    /// The latest buffered value per key (`None`: removed), for reads of own writes.
    written: BTreeMap<String, Option<Bytes>>,
}

const TAG_PUT: u8 = 0;
const TAG_DELETE: u8 = 1;

/// Appends one buffered write to the transaction log: a `TxnWrite` TLV record (zxid zero: not
/// committed) whose value is the tag (put or delete), the key length (u32 LE), the key and the
/// value. The record's CRC makes a damaged buffer an error at commit, never a wrong write.
fn encode_write(log: &mut Vec<u8>, tag: u8, key: &str, value: &[u8]) -> Result<(), ClientError> {
    let key_len = (key.len() as u32).to_le_bytes();
    let parts: [&[u8]; 4] = [&[tag], &key_len, key.as_bytes(), value];
    let len = 5 + key.len() + value.len();
    tlv::encode_parts(RecordType::TxnWrite, Zxid::ZERO, &parts, log).map_err(|_| {
        ClientError::TooLarge { what: "transaction write", len, max: tlv::RECORD_VALUE_BYTES_MAX }
    })
}

/// Decodes a whole transaction log into its ops, in order.
fn decode_log(log: &[u8]) -> Result<Vec<Op>, ClientError> {
    let mut ops = Vec::new();
    let mut rest = log;
    let corrupt = |what: String| ClientError::UnexpectedReply(format!("transaction log: {what}"));
    while !rest.is_empty() {
        let (record, used) = tlv::decode(rest).map_err(|e| corrupt(e.to_string()))?;
        rest = &rest[used..];
        let v = record.value;
        if record.kind != RecordType::TxnWrite || v.len() < 5 {
            return Err(corrupt("not a transaction write".into()));
        }
        let key_len = u32::from_le_bytes([v[1], v[2], v[3], v[4]]) as usize;
        let key_end = 5usize.checked_add(key_len).filter(|end| *end <= v.len());
        let key_end = key_end.ok_or_else(|| corrupt("key past the record".into()))?;
        let key =
            std::str::from_utf8(&v[5..key_end]).map_err(|e| corrupt(e.to_string()))?.to_string();
        ops.push(match v[0] {
            TAG_PUT => Op::Put {
                key,
                value: Bytes::copy_from_slice(&v[key_end..]),
                create_only: false,
                ephemeral: None,
            },
            TAG_DELETE => Op::Delete { key, recursive: false },
            tag => return Err(corrupt(format!("unknown tag {tag}"))),
        });
    }
    Ok(ops)
}

impl<T: Transport> Txn<T> {
    /// The fencing tokens of the transaction's locks, by key.
    pub fn tokens(&self) -> Vec<(String, Zxid)> {
        self.guards.iter().map(|g| (g.name().to_string(), g.token())).collect()
    }

    /// Reads `key` under its lock (or from this transaction's own buffered write).
    pub async fn read(&self, key: &str) -> Result<Option<Bytes>, ClientError> {
        if !self.keys.contains_key(key) {
            return Err(ClientError::Undeclared { key: key.to_string(), intent: "reading" });
        }
        if let Some(value) = self.written.get(key) {
            return Ok(value.clone());
        }
        Ok(self.client.read(key).await?.map(|v| v.value))
    }

    /// Buffers a write of `value` at `key` (declared for writing).
    pub fn write(&mut self, key: &str, value: impl Into<Bytes>) -> Result<(), ClientError> {
        let value = value.into();
        let max = self.client.config().value_bytes_max;
        if value.len() > max {
            return Err(ClientError::TooLarge { what: "value", len: value.len(), max });
        }
        self.buffer(key, TAG_PUT, &value)?;
        self.written.insert(key.to_string(), Some(value));
        Ok(())
    }

    /// Buffers a removal of `key` (declared for writing).
    pub fn remove(&mut self, key: &str) -> Result<(), ClientError> {
        self.buffer(key, TAG_DELETE, &[])?;
        self.written.insert(key.to_string(), None);
        Ok(())
    }

    fn buffer(&mut self, key: &str, tag: u8, value: &[u8]) -> Result<(), ClientError> {
        if self.keys.get(key) != Some(&Intent::Write) {
            return Err(ClientError::Undeclared { key: key.to_string(), intent: "writing" });
        }
        encode_write(&mut self.log, tag, key, value)
    }

    /// The buffered writes, decoded from the TLV log in order.
    fn ops(&self) -> Result<Vec<Op>, ClientError> {
        decode_log(&self.log)
    }

    /// Commits the buffered writes as one entry, only if every lock is still held with its
    /// auth word; the locks are released in the same entry. Refused with `LockLost` (nothing
    /// changed) if a lock was lost. A read-only transaction whose read locks other local
    /// transactions still share sends nothing and returns the client's floor.
    pub async fn commit(mut self) -> Result<Zxid, ClientError> {
        if let Some(lost) = self.guards.iter().find(|g| !g.is_held()) {
            return Err(ClientError::LockLost {
                detail: format!(
                    "lock {} of this transaction expired; nothing was sent",
                    lost.name()
                ),
            });
        }
        let mut batch = Batch::new();
        for op in self.ops()? {
            batch.push(op);
        }
        let holder = self.client.id();
        let registry = &self.client.inner.locks;
        let _gate = registry.gate.read().await;
        let mut releases = Vec::new();
        for guard in &self.guards {
            let auth = guard.auth().ok_or_else(|| ClientError::LockLost {
                detail: format!("lock {} of this transaction was lost", guard.name()),
            })?;
            batch = batch.if_held(guard.name(), auth);
            // A shared lock other local holders still use is not released by this commit.
            if let Some(auth) = registry.unref(guard.name(), guard.token()) {
                batch = batch.release(guard.name(), auth, holder);
                releases.push((guard.name().to_string(), auth));
            }
        }
        for guard in &mut self.guards {
            guard.disarm();
        }
        drop(_gate);
        if batch.is_empty() {
            // Read-only, and every lock is still shared by another local transaction: there is
            // nothing to write or release; the reads were made under locks still held.
            return Ok(self.client.floor());
        }
        match self.client.batch(batch).await {
            Ok(zxid) => Ok(zxid),
            Err(e) => {
                // Nothing committed (or, after a timeout, perhaps everything): release what may
                // still be held. A lock already gone is refused harmlessly; one whose release
                // is lost lapses within a TTL, since it is no longer renewed.
                let _gate = registry.gate.read().await;
                for (lock, auth) in releases {
                    let op = protocol::message::lock::LockRequestOp::Release { lock, auth };
                    if let Err(release) = self.client.lock_call(op).await {
                        tracing::debug!("release after a refused commit: {release}");
                    }
                }
                Err(e)
            }
        }
    }

    /// Discards the buffered writes and releases the locks.
    pub async fn cancel(mut self) -> Result<(), ClientError> {
        self.log.clear();
        self.written.clear();
        let mut first_error = None;
        for guard in std::mem::take(&mut self.guards) {
            if let Err(e) = guard.release().await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The TLV transaction log gives back exactly the writes buffered, in order (puts with
    /// binary values and deletes), and a damaged or torn log is an error, never other writes.
    #[test]
    fn log_round_trip_and_damage() {
        let mut log = Vec::new();
        encode_write(&mut log, TAG_PUT, "/a", &[0, 255, 7]).unwrap();
        encode_write(&mut log, TAG_DELETE, "/b", &[]).unwrap();
        encode_write(&mut log, TAG_PUT, "/a", b"again").unwrap();
        let put = |key: &str, value: &[u8]| Op::Put {
            key: key.into(),
            value: Bytes::copy_from_slice(value),
            create_only: false,
            ephemeral: None,
        };
        let expected = vec![
            put("/a", &[0, 255, 7]),
            Op::Delete { key: "/b".into(), recursive: false },
            put("/a", b"again"),
        ];
        assert_eq!(decode_log(&log).unwrap(), expected);
        let mut damaged = log.clone();
        damaged[20] ^= 1;
        assert!(decode_log(&damaged).is_err());
        assert!(decode_log(&log[..log.len() - 1]).is_err(), "a torn log decoded");
    }
}
