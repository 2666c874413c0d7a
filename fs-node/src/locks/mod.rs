//! Locks and sessions: the replicated tables (applied from the log by
//! [`StateMachine`](crate::state::StateMachine)) and the master's lease clock.
//!
//! # Layout
//! - [`table`]: [`LockTable`], every held lock with its auth word and holders.
//! - [`session`]: [`SessionTable`], open sessions, their locks and the ephemeral index.
//! - [`lease`]: [`LeaseKeeper`], the master-local lease deadlines; IO-free, `now_ms` passed in.
//!
//! # Lock rules
//! - A lock has a name (a key by `protocol::key` rules, at most `NAME_BYTES_MAX` bytes), an
//!   auth word and a list of holders (client id, host, session, fencing token).
//! - Auth word 1 is shared: any number of holders with auth 1 (up to `LOCK_HOLDERS_MAX`).
//!   An exclusive holder uses a random auth word in 2..=i32::MAX. Auth words below 1 are
//!   refused.
//! - A request with a different auth word on a held lock is refused with who holds it; it is
//!   not queued (waiters wait client-side for the `LockChanged` notice).
//! - A client that already holds a lock and acquires it again with the same auth word gets
//!   its existing token back; nothing changes.
//! - Only the holder, with the lock's auth word, can release or renew it. A refused release
//!   or renewal changes nothing.
//! - Fencing: each grant's token is the zxid of its grant, so tokens only grow per lock. A
//!   write conditioned on a token (`Condition::LockToken`) is refused unless the lock is still
//!   held with that token; `Condition::LockHeld` needs the lock held by the writing client with
//!   that auth word.
//! - A lock lives 5 s (`LeaseConfig::lock_ttl_ms`) unless renewed. Grants, releases and
//!   expiries are log records; renewals are not: they only move the master's lease deadline,
//!   which is master-local state. Because of that, a new master honours every existing lease
//!   for one full TTL from its takeover.
//! - An expiry names the grant's token, so an expiry decided for one grant never removes a
//!   later grant of the same lock to the same client.
//!
//! # Session rules
//! - A session is a lease kept alive by the same renewal message as the locks. Its id is
//!   drawn by the client; opening an id that is open is refused. Only the opening client may
//!   use (renew, close, tie locks or ephemerals to) it.
//! - When a session closes or expires, in that one log entry: its ephemeral entries are
//!   deleted (the deletes are computed from the replicated ephemeral index at apply time, so
//!   every replica deletes the same keys, and the caches get them as one `UpdateNotice`), and
//!   every lock tied to it is released (one `LockChanged` each).
//! - An expiry names the zxid of the session's open record, so it never ends a later session
//!   that reused the id.

pub mod lease;
pub mod session;
pub mod table;

pub use lease::{LeaseConfig, LeaseEvent, LeaseKeeper, LOCK_TTL_MS_DEFAULT};
pub use session::{Session, SessionTable};
pub use table::{Grant, Holder, Lock, LockTable};
