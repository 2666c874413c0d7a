//! The `shoal` data commands: `get`, `put`, `rm`, `mv`, `ls`, `mkdir`, `watch` (and `lock`,
//! `unlock`, `txn`, `status`, `bench`, `backup`). The binary
//! parses flags and calls [`run`]; [`execute`] runs one command on any [`Transport`], so the
//! commands are tested on the in-memory network.
//!
//! # Exit codes
//! | code | meaning |
//! | --- | --- |
//! | 0 | done |
//! | 1 | not found (`get` of a missing key, `rm`/`mv`/`ls` of something absent) |
//! | 2 | usage error (bad flags; clap's own code) |
//! | 3 | refused input: bad key, too large, parent missing, exists, not/is a directory, not empty, condition failed |
//! | 4 | cluster unreachable: no live node, timeout, no master, or no transport |
//! | 5 | any other error |
//! | 6 | lock: held by another (`lock` without `--wait`), not free within `--wait`, lost (expired, session lost) or refused auth word |
//! | 7 | backup: the donor refused to start it |
//! | 8 | backup: started, then failed |
//! | 9 | backup: no result within `--timeout` (it may still be running) |
//!
//! `backup` is described in [`crate::backup`].
//!
//! # Locks and transactions
//! - `lock NAME [--shared] [--wait SECS] [--hold SECS]` takes the lock (waiting up to `--wait`
//!   for it to free), prints `token <zxid>` (the fencing token), holds it while renewing until
//!   `--hold` elapses (or Ctrl-C), then releases it. A killed `shoal lock` lets the lease lapse
//!   within the TTL.
//! - `unlock NAME --auth N` sends a release with auth word N from this process. Auth words are
//!   per-process secrets (never printed) and a lock belongs to the client that took it, so this
//!   only succeeds for a lock this same client holds; elsewhere the master refuses it with a
//!   clear error (exit 6) and nothing changes. The normal way to release is to end `shoal lock`.
//! - `txn [--read K]... [--write K=V]... [--wait SECS]` runs one transaction: locks every key in
//!   order, prints each read key as `K=value` (`K` alone when absent), commits the writes as one
//!   entry and prints its zxid.

use crate::client::Client;
use crate::error::ClientError;
use crate::transport::Transport;
use crate::watch::{Kinds, Target, WatchEvent};
use crate::ClientConfig;
use bytes::Bytes;
use clap::{Parser, Subcommand};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

pub mod exit {
    pub const OK: i32 = 0;
    pub const NOT_FOUND: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const REFUSED: i32 = 3;
    pub const UNREACHABLE: i32 = 4;
    pub const FAILED: i32 = 5;
    pub const LOCK: i32 = 6;
    pub const BACKUP_REFUSED: i32 = 7;
    pub const BACKUP_FAILED: i32 = 8;
    pub const BACKUP_TIMEOUT: i32 = 9;
}

#[derive(Debug, Parser)]
#[command(name = "shoal", about = "Shoal cluster client: data commands")]
pub struct Cli {
    /// The cluster file (TOML or JSON: cluster id, key, group, members); `shoal dev` writes
    /// one at shoal-dev/cluster.toml.
    #[arg(long, env = "SHOAL_CLUSTER", default_value = crate::net::CLUSTER_FILE_DEFAULT)]
    pub cluster: String,
    /// Node addresses to use before the first FSLive arrives.
    #[arg(long = "seed")]
    pub seeds: Vec<String>,
    /// How long one request waits for its reply, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub timeout_ms: u64,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand, Clone, PartialEq, Eq)]
pub enum Command {
    /// Print the value at KEY (raw bytes).
    Get { key: String },
    /// Write VALUE (or the contents of --file) at KEY.
    Put {
        key: String,
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        value: Option<String>,
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Remove KEY (a directory must be empty unless -r).
    Rm {
        key: String,
        #[arg(short, long)]
        recursive: bool,
    },
    /// Rename FROM to TO (a key or a whole directory).
    Mv { from: String, to: String },
    /// List directory DIR (directories end with '/').
    Ls { dir: String },
    /// Create directory DIR (its parent must exist).
    Mkdir { dir: String },
    /// Take lock NAME, print its fencing token, hold it (renewing), then release it.
    Lock {
        name: String,
        /// Take it shared (auth word 1) instead of exclusive.
        #[arg(long)]
        shared: bool,
        /// Wait up to this many seconds for the lock to free (default: fail at once if held).
        #[arg(long)]
        wait: Option<u64>,
        /// Hold it this many seconds (default: until Ctrl-C).
        #[arg(long)]
        hold: Option<u64>,
    },
    /// Release lock NAME held by this client with auth word N (see the module docs).
    Unlock {
        name: String,
        #[arg(long)]
        auth: i32,
    },
    /// Run one transaction: read keys, write K=V pairs, commit atomically.
    Txn {
        #[arg(long = "read")]
        reads: Vec<String>,
        /// KEY=VALUE
        #[arg(long = "write")]
        writes: Vec<String>,
        /// Seconds to wait for each contended lock.
        #[arg(long, default_value_t = 10)]
        wait: u64,
    },
    /// Print changes to PATH (with --prefix, to everything below it) as they commit.
    Watch {
        path: String,
        #[arg(long)]
        prefix: bool,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Show every node: role, epoch, zxids, load, last seen (exit 4 if none answers).
    Status {
        /// One JSON object with stable field names (see `cache_client::status`).
        #[arg(long)]
        json: bool,
    },
    /// Measure put/get/mixed/lock/txn throughput and latency, or failover and lock-failover time
    /// (see `cache_client::bench`).
    Bench(crate::bench::BenchArgs),
    /// Make a consistent backup on another node (--to-node N) or in a directory on the donor's
    /// host (--to-dir PATH), and follow it to the end (README: "Backup and restore"). Exit 7:
    /// refused, 8: failed, 9: no result within --timeout.
    Backup(crate::backup::BackupArgs),
}

/// The exit code for a failed command.
pub fn exit_code(error: &ClientError) -> i32 {
    match error {
        ClientError::NotFound { .. } => exit::NOT_FOUND,
        ClientError::BadKey(_)
        | ClientError::TooLarge { .. }
        | ClientError::ParentMissing { .. }
        | ClientError::AlreadyExists { .. }
        | ClientError::NotADirectory { .. }
        | ClientError::IsADirectory { .. }
        | ClientError::DirectoryNotEmpty { .. }
        | ClientError::ConditionFailed { .. }
        | ClientError::Undeclared { .. } => exit::REFUSED,
        ClientError::LockHeld { .. }
        | ClientError::WaitTimeout { .. }
        | ClientError::LockLost { .. }
        | ClientError::BadAuth { .. }
        | ClientError::SessionLost { .. } => exit::LOCK,
        ClientError::NotMaster { .. }
        | ClientError::Unavailable { .. }
        | ClientError::Timeout { .. }
        | ClientError::Transport(_) => exit::UNREACHABLE,
        ClientError::Server { .. } | ClientError::UnexpectedReply(_) => exit::FAILED,
    }
}

/// Runs one command, writing its output to `out`; returns the exit code.
pub async fn execute<T: Transport>(
    client: &Client<T>,
    command: &Command,
    out: &mut impl Write,
) -> Result<i32, ClientError> {
    let io = |e: std::io::Error| ClientError::Transport(format!("writing output: {e}"));
    match command {
        Command::Get { key } => match client.read(key).await? {
            Some(versioned) => {
                out.write_all(&versioned.value).map_err(io)?;
                Ok(exit::OK)
            }
            None => {
                eprintln!("shoal: {key} does not exist");
                Ok(exit::NOT_FOUND)
            }
        },
        Command::Put { key, value, file } => {
            let bytes = match (value, file) {
                (Some(v), _) => Bytes::from(v.clone()),
                (None, Some(path)) => read_file(path, client_value_max(client))?,
                (None, None) => unreachable!("clap requires a value or --file"),
            };
            let zxid = client.write(key, bytes).await?;
            writeln!(out, "{zxid}").map_err(io)?;
            Ok(exit::OK)
        }
        Command::Rm { key, recursive } => {
            client.remove(key, *recursive).await?;
            Ok(exit::OK)
        }
        Command::Mv { from, to } => {
            client.rename(from, to).await?;
            Ok(exit::OK)
        }
        Command::Ls { dir } => {
            for entry in client.list(dir).await? {
                let slash = if entry.is_dir { "/" } else { "" };
                writeln!(out, "{}{slash}", entry.name).map_err(io)?;
            }
            Ok(exit::OK)
        }
        Command::Mkdir { dir } => {
            client.mkdir(dir).await?;
            Ok(exit::OK)
        }
        Command::Lock { name, shared, wait, hold } => {
            let guard = match wait {
                Some(secs) => client.lock_wait(name, *shared, seconds(*secs)?).await?,
                None => client.lock(name, *shared).await?,
            };
            writeln!(out, "token {}", guard.token()).map_err(io)?;
            out.flush().map_err(io)?;
            let mut state = client.session_state();
            let held = async {
                match hold {
                    Some(secs) => tokio::time::sleep(seconds(*secs)?).await,
                    None => {
                        let _ = tokio::signal::ctrl_c().await;
                    }
                }
                Ok::<(), ClientError>(())
            };
            let lost = state.wait_for(|s| *s == crate::locks::SessionState::Lost);
            tokio::select! {
                done = held => done?,
                _ = lost => {
                    return Err(ClientError::LockLost {
                        detail: format!("lock {name} was lost while held (renewals failed)"),
                    })
                }
            }
            guard.release().await?;
            Ok(exit::OK)
        }
        Command::Unlock { name, auth } => {
            client.unlock_with_auth(name, *auth).await?;
            Ok(exit::OK)
        }
        Command::Txn { reads, writes, wait } => {
            let mut pairs = Vec::new();
            for pair in writes {
                let Some((key, value)) = pair.split_once('=') else {
                    return Err(ClientError::Undeclared {
                        key: pair.clone(),
                        intent: "writing (use KEY=VALUE)",
                    });
                };
                pairs.push((key.to_string(), value.to_string()));
            }
            let mut builder = client.transaction().wait(seconds(*wait)?);
            for key in reads {
                builder = builder.read(key.clone());
            }
            for (key, _) in &pairs {
                builder = builder.write(key.clone());
            }
            let mut txn = builder.begin().await?;
            for key in reads {
                match txn.read(key).await? {
                    Some(value) => {
                        write!(out, "{key}=").map_err(io)?;
                        out.write_all(&value).map_err(io)?;
                        writeln!(out).map_err(io)?;
                    }
                    None => writeln!(out, "{key}").map_err(io)?,
                }
            }
            for (key, value) in &pairs {
                txn.write(key, Bytes::from(value.clone()))?;
            }
            let zxid = txn.commit().await?;
            writeln!(out, "{zxid}").map_err(io)?;
            Ok(exit::OK)
        }
        Command::Watch { path, prefix, count } => {
            protocol::key::validate(path, client_key_max(client))?;
            let target =
                if *prefix { Target::Prefix(path.clone()) } else { Target::Path(path.clone()) };
            // A read first raises the floor to what a node has applied now, so the watch
            // reports changes from here on, not a replay of the update stream's history.
            client.exists(path).await?;
            let (id, mut events) = client.watch_channel(target, Kinds::ALL)?;
            let mut seen = 0u64;
            while count.is_none_or(|c| seen < c) {
                let Some(event) = events.recv().await else { break };
                writeln!(out, "{}", describe(&event)).map_err(io)?;
                out.flush().map_err(io)?;
                seen += 1;
            }
            client.unwatch(id);
            Ok(exit::OK)
        }
        Command::Status { json } => crate::status::execute(client, *json, out).await,
        Command::Bench(args) => {
            crate::bench::execute(std::slice::from_ref(client), args, out).await
        }
        Command::Backup(args) => Ok(backup(client, args, &BTreeMap::new(), out).await),
    }
}

/// `shoal backup` with progress on stderr; prints its one-line error there and returns the
/// exit code.
async fn backup<T: Transport>(
    client: &Client<T>,
    args: &crate::backup::BackupArgs,
    members: &BTreeMap<protocol::NodeId, String>,
    out: &mut impl Write,
) -> i32 {
    use std::io::IsTerminal;
    let mut stderr = std::io::stderr();
    let terminal = stderr.is_terminal();
    let mut progress = crate::backup::Progress::new(&mut stderr, terminal);
    match crate::backup::execute(client, args, members, out, &mut progress).await {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("shoal: {e}");
            e.exit_code()
        }
    }
}

/// A duration from a count of seconds on the command line.
fn seconds(secs: u64) -> Result<Duration, ClientError> {
    Ok(Duration::from_secs(secs))
}

fn client_value_max<T: Transport>(client: &Client<T>) -> usize {
    client.config().value_bytes_max
}

fn client_key_max<T: Transport>(client: &Client<T>) -> usize {
    client.config().key_bytes_max
}

/// Reads a file for `put --file`, refusing one over the value limit before reading it.
fn read_file(path: &PathBuf, max: usize) -> Result<Bytes, ClientError> {
    let unreadable = |e: std::io::Error| ClientError::Transport(format!("{}: {e}", path.display()));
    let len = std::fs::metadata(path).map_err(unreadable)?.len() as usize;
    if len > max {
        return Err(ClientError::TooLarge { what: "value", len, max });
    }
    Ok(Bytes::from(std::fs::read(path).map_err(unreadable)?))
}

/// One line per event: kind, key, zxid.
pub fn describe(event: &WatchEvent) -> String {
    match event {
        WatchEvent::Created { key, zxid } => format!("created {key} {zxid}"),
        WatchEvent::Removed { key, zxid } => format!("removed {key} {zxid}"),
        WatchEvent::Changed { key, zxid } => format!("changed {key} {zxid}"),
        WatchEvent::LockChanged { lock, zxid, holders } => {
            format!("lock {lock} {zxid} holders={}", holders.join(","))
        }
        WatchEvent::Missed { after } => format!("missed after {after} (events may have been lost)"),
    }
}

/// Parses nothing, connects, runs: what `main` calls. Returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("shoal: cannot start the runtime: {e}");
            return exit::FAILED;
        }
    };
    runtime.block_on(async {
        if let Command::Bench(args) = &cli.command {
            return crate::bench::run_cli(&cli, args).await;
        }
        if let Command::Backup(args) = &cli.command {
            // Flags that are wrong whatever the cluster: say so before looking for one.
            if let Err(e) = crate::backup::target(args) {
                eprintln!("shoal: {e}");
                return e.exit_code();
            }
        }
        let (transport, mut seeds) =
            match crate::net::connect(std::path::Path::new(&cli.cluster)).await {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("shoal: {e}");
                    return exit_code(&e);
                }
            };
        seeds.extend(cli.seeds.iter().cloned());
        let config = ClientConfig {
            seeds,
            request_timeout: Duration::from_millis(cli.timeout_ms),
            client_id: Some(transport.id()),
            ..ClientConfig::default()
        };
        let client = Client::new(transport, config);
        let mut stdout = std::io::stdout().lock();
        if let Command::Backup(args) = &cli.command {
            // The cluster file names every member by id, also one that is down right now.
            let members = crate::net::ClusterFile::load(std::path::Path::new(&cli.cluster))
                .map(|(file, _)| file.members)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(id, address)| Some((id.parse().ok()?, address)))
                .collect();
            return backup(&client, args, &members, &mut stdout).await;
        }
        match execute(&client, &cli.command, &mut stdout).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("shoal: {e}");
                exit_code(&e)
            }
        }
    })
}
