//! The Shoal client library: what user agents link.
//!
//! # Layout
//! - [`client`]: the async [`Client`] — `create`, `mkdir`, `remove`, `exists`, `is_dir`, `list`,
//!   `read`, `write`, `rename`, `batch`, watches — with the guarantees it keeps (read-your-writes
//!   and monotonic reads through the floor zxid, a linearizable-read option, one request id per
//!   write across retries).
//! - [`blocking`]: [`BlockingClient`], the same API for non-async callers.
//! - [`cache`]: the client LRU (bytes and count), fed by reads, kept fresh by the Update stream,
//!   flushed on a gap, with a maximum entry age. IO-free.
//! - [`routing`]: the live set from FSLive and replies, load-weighted choice refined by two
//!   random choices and in-flight counts, the master for writes. IO-free.
//! - [`watch`]: watches per path or prefix, events in zxid order, `Missed` after a flush.
//!   IO-free.
//! - [`window`]: the bound on request seqs in flight (the master's 32-result window).
//! - [`transport`]: the [`Transport`] trait the client needs from the network, and
//!   [`transport::MemNetwork`], an in-memory network for tests.
//! - [`net`]: [`net::SocketTransport`], the [`Transport`] over `protocol::messaging`, and the
//!   cluster file ([`net::ClusterFile`]) that says how to reach a cluster (JSON always, TOML
//!   with the `toml` feature).
//! - [`error`]: [`ClientError`]. A missing key on a read is `Ok(None)`, not an error.
//! - [`locks`]: named locks with fencing tokens ([`LockGuard`]), `lock_wait`, and the one
//!   background renewal of the session and every held lock; [`SessionState`] tells the
//!   application when its leases are in danger or lost. The record of what is held (the
//!   session, each lock's auth word and token, until when the leases are valid) is `leases`,
//!   which the client's state holds without depending on the lock API.
//! - `clock`: the client's one monotonic clock (tokio's, so paused-time tests control it).
//! - [`session`]: the client's session (opened on first use) and ephemeral entries.
//! - [`txn`]: transactions: declared keys, locks in one global order, reads under them, writes
//!   buffered in a local TLV log, one atomic commit conditioned on every lock.
//!
//! The `shoal` command (data commands, `status`, `bench`, `backup`, `dev`) is not part of the
//! library: it is the `shoal-cli` crate in `cache-client/cli/`, built on this API, so that an
//! application linking the library pulls in no flag parser, histogram, or child-process
//! supervision. One node's status is [`Client::status_of`].

pub mod blocking;
pub mod cache;
pub mod client;
mod clock;
pub mod error;
mod leases;
pub mod locks;
pub mod net;
pub mod routing;
pub mod session;
pub mod transport;
pub mod txn;
pub mod watch;
pub mod window;

pub use blocking::{BlockingClient, BlockingLockGuard, BlockingTxn, BlockingTxnBuilder};
pub use client::{Batch, Client, ClientStats, ReadOptions};
pub use error::ClientError;
pub use locks::{LockConfig, LockGuard, SessionState};
pub use transport::{GroupEvent, Transport, TransportError};
pub use txn::{Txn, TxnBuilder};
pub use watch::{EventKind, Kinds, Target, WatchEvent, WatchId};

use protocol::limits::{KEY_BYTES_DEFAULT, VALUE_BYTES_DEFAULT};
use protocol::SenderId;
use std::time::Duration;

/// Everything a [`Client`] is configured with. `ClientConfig::default()` fits a LAN cluster.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Node addresses to use before the first FSLive is heard.
    pub seeds: Vec<String>,
    /// How long one unicast request waits for its reply.
    pub request_timeout: Duration,
    /// Most sends of one read, and most timeouts one write tolerates.
    pub attempts_max: usize,
    /// Most rounds without a master one write or linearizable read waits out: a round asks
    /// every live node at most once (following `NotMaster` redirects), and one that finds no
    /// master is followed by a pause of `client::NO_MASTER_BACKOFF` (or ends early when a new
    /// master is announced). The default, 10, waits out about 2 s of election.
    pub redirects_max: usize,
    pub key_bytes_max: usize,
    pub value_bytes_max: usize,
    pub cache: cache::CacheConfig,
    pub routing: routing::RoutingConfig,
    /// Seeds the routing choices and the client id; random when `None`.
    pub rng_seed: Option<u64>,
    /// A fixed client id (at or above `protocol::CLIENT_ID_MIN`); random when `None`.
    pub client_id: Option<SenderId>,
    /// Lock and session leases and their renewal.
    pub locks: locks::LockConfig,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            seeds: Vec::new(),
            request_timeout: Duration::from_secs(2),
            attempts_max: 3,
            redirects_max: 10,
            key_bytes_max: KEY_BYTES_DEFAULT,
            value_bytes_max: VALUE_BYTES_DEFAULT,
            cache: cache::CacheConfig::default(),
            routing: routing::RoutingConfig::default(),
            rng_seed: None,
            client_id: None,
            locks: locks::LockConfig::default(),
        }
    }
}
