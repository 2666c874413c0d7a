//! The client's session: a lease on the master kept alive by the same renewal message as the
//! locks ([`crate::locks`]), opened on first use (the first lock or ephemeral entry). Its id is
//! drawn at random by the client (never 0). Ephemeral entries made with
//! [`Client::create_ephemeral`] belong to it: when the session expires or is closed, the master
//! deletes them through the log, and releases every lock tied to it, in one entry.
//!
//! After a loss ([`crate::SessionState::Lost`]) the next use opens a new session; entries and
//! locks of the old one are not carried over.

use crate::client::Client;
use crate::clock::now;
use crate::error::ClientError;
use crate::transport::Transport;
use bytes::Bytes;
use protocol::message::lock::{LockGrant, LockRequestOp};
use protocol::Zxid;
use rand::Rng;

impl<T: Transport> Client<T> {
    /// This client's session id, opening a session (and starting the renewal task) if none is
    /// open.
    pub async fn ensure_session(&self) -> Result<u64, ClientError> {
        let registry = &self.inner.locks;
        if let Some(session) = registry.session() {
            return Ok(session);
        }
        let _opening = registry.opening.lock().await;
        if let Some(session) = registry.session() {
            return Ok(session);
        }
        let ttl = self.inner.config.locks.ttl;
        let ttl_ms = u32::try_from(ttl.as_millis()).unwrap_or(u32::MAX);
        let session = rand::thread_rng().gen_range(1..=u64::MAX);
        let sent = now();
        match self.lock_call(LockRequestOp::OpenSession { session, ttl_ms }).await? {
            LockGrant::SessionOpened { lease_ms } => {
                let lease_ms = lease_ms.min(u32::try_from(ttl.as_millis()).unwrap_or(u32::MAX));
                registry.session_opened(session, crate::locks::valid_until(sent, lease_ms));
                self.start_renewer();
                Ok(session)
            }
            other => Err(ClientError::UnexpectedReply(format!("{other:?} for a session open"))),
        }
    }

    /// Creates `key` as an ephemeral entry of this client's session (opened if needed): it is
    /// deleted when the session ends. Fails with `AlreadyExists` if the key is there.
    pub async fn create_ephemeral(
        &self,
        key: &str,
        value: impl Into<Bytes>,
    ) -> Result<Zxid, ClientError> {
        let session = self.ensure_session().await?;
        self.create(key, value, Some(session)).await
    }

    /// Closes the session: the master deletes its ephemeral entries and releases its locks.
    /// The client forgets them at once (guards report not held).
    pub async fn close_session(&self) -> Result<(), ClientError> {
        let registry = &self.inner.locks;
        let Some(session) = registry.session() else { return Ok(()) };
        let _gate = registry.gate.read().await;
        registry.forget_all(false);
        match self.lock_call(LockRequestOp::CloseSession { session }).await? {
            LockGrant::SessionClosed => Ok(()),
            other => Err(ClientError::UnexpectedReply(format!("{other:?} for a session close"))),
        }
    }
}
