//! `shoal`, the command for people and scripts: the data commands, `status`, `bench`,
//! `backup` and `dev` (a local cluster). Built on the `cache-client` library's public API
//! only; kept out of that library so that an application linking it pulls in none of clap,
//! hdrhistogram, a TOML parser or child-process supervision.
//!
//! # Layout
//! Imports point down this list (a module uses only those below it, and `cache_client`):
//! - `main.rs`: the binary; parses flags and calls [`cli::run`] (or [`dev::run`] for
//!   `shoal dev`).
//! - [`cli`]: the flags ([`cli::Cli`], [`cli::Command`]), the data commands (`get`, `put`,
//!   `rm`, `mv`, `ls`, `mkdir`, `watch`, `lock`, `unlock`, `txn`) one function each,
//!   [`cli::execute`] (one command on any transport, the tests' entry) and [`cli::run`].
//! - [`backup`]: `shoal backup`: ask a donor for a backup, follow its progress.
//! - [`bench`](mod@bench): `shoal bench`: throughput and latency workloads, failover and lock-failover
//!   measurements.
//! - [`status`]: `shoal status`, one row per node, table or `--json` (its survey of every node
//!   is also how `backup` picks a donor).
//! - [`dev`]: `shoal dev`: a local cluster of `shoal-fs` child processes on loopback
//!   ([`dev::DevCluster`], which `bench` drives too).
//! - [`connect`]: the global flags as a [`connect::Connection`] that opens a socket client.
//! - [`exit`]: every exit code and the code of each client error (a leaf).
//! - [`plot`]: pictures with `plotters` (SVG or PNG by extension, an embedded font), the
//!   bench latency histogram (a leaf).

pub mod backup;
pub mod bench;
pub mod cli;
pub mod connect;
pub mod dev;
pub mod exit;
pub mod plot;
pub mod status;
