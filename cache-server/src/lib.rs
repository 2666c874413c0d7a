//! The storage host's front: answers Request / Update / Rename / Lock, keeps a server-side LRU
//! of hot values, reports the node's load in every reply and announces FSLive. It reaches
//! storage and replication only through the [`Backend`] trait that `fs-node` implements.
//!
//! # Layout
//! - [`backend`]: the [`Backend`] trait (snapshot reads, waiting for an applied zxid, submitting
//!   writes, the linearizable read path, status) and the rules every implementation keeps.
//! - [`server`]: [`Server::handle`] answers one message; writes on a follower are redirected to
//!   the master with `NotMaster` (why: see the module).
//! - [`cache`]: the server LRU, bounded by bytes and count, kept exact by following applied
//!   entries. IO-free.
//! - [`history`]: the history window of applied notices that answers history reads (watches
//!   that resume), bounded in entries and bytes. IO-free.
//! - [`load`]: CPU and memory permille from `sysinfo`, sampled off the request path, and the
//!   in-flight count.
//! - [`live`]: when to send FSLive and Freeze, and what they carry. IO-free.
//! - [`validate`]: key, value-size and batch checks before a write is ordered.
//! - [`mem`]: [`mem::MemBackend`], a complete single-node backend in memory for tests.
//! - [`conformance`]: the backend rules as a suite any implementation runs against itself
//!   (`run_all`; `run_locks` for the Lock path of a backend with a lock table).
//! - [`error`]: [`ServerError`], each variant one wire error code.
//!
//! # Wiring (done by `fs-node`)
//! Wrap the backend in a [`Server`], call [`Server::on_applied`] for every applied entry and
//! [`Server::on_notice`] for every notice an entry produced (the history window),
//! spawn [`load::run_sampler`] on [`Server::gauge`], hand each unicast request to
//! [`Server::handle`] and send back the reply, and spawn [`server::run_announcer`] with the
//! node's multicast send.

pub mod backend;
pub mod cache;
pub mod conformance;
pub mod error;
pub mod history;
pub mod live;
pub mod load;
pub mod mem;
pub mod server;
pub mod transfer;
pub mod validate;

pub use backend::{Backend, BackendStatus, Snapshot};
pub use error::ServerError;
pub use server::{Server, ServerConfig};
