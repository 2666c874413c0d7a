//! The `shoal` command line: the flags ([`Cli`], [`Command`]), the data commands (`get`,
//! `put`, `rm`, `mv`, `ls`, `mkdir`, `watch`, `lock`, `unlock`, `txn`), and the dispatch to
//! `status`, `bench` and `backup` in their own modules. The binary parses flags and calls
//! [`run`]; [`execute`] runs one command on any [`Transport`], so the commands are tested on
//! the in-memory network. Every exit code is in [`crate::exit`].
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

use crate::connect::Connection;
use crate::{backup, bench, exit, status};
use bytes::Bytes;
use cache_client::client::{Batch, ReadOptions};
use cache_client::locks::SessionState;
use cache_client::watch::{Kinds, Target, WatchEvent};
use cache_client::{Client, ClientError, Transport};
use clap::{Parser, Subcommand};
use protocol::{NodeId, Zxid};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(name = "shoal", about = "Shoal cluster client: data commands")]
pub struct Cli {
    /// The cluster file (TOML or JSON: cluster id, key, group, members); `shoal dev` writes
    /// one at shoal-dev/cluster.toml.
    #[arg(long, env = "SHOAL_CLUSTER", default_value = cache_client::net::CLUSTER_FILE_DEFAULT)]
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
    /// Print the value at KEY (raw bytes); with --prefix, every value below directory KEY
    /// (recursively, in key order) as `key<TAB>value` lines, values escaped (see
    /// [`escape_value`]), and the zxid of the state read on stderr.
    Get {
        key: String,
        /// Read through the master inside its lease (linearizable; skips the cache).
        #[arg(long, conflicts_with = "prefix")]
        linearizable: bool,
        /// KEY is a directory: print every value below it, at any depth (a range read).
        #[arg(long)]
        prefix: bool,
        /// With --prefix: print at most N values (pages are followed up to N; default all).
        #[arg(long, requires = "prefix", value_name = "N",
              value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
        /// With --prefix: start at this key (inclusive; it must lie below KEY).
        #[arg(long, requires = "prefix", value_name = "KEY")]
        from: Option<String>,
        /// With --prefix: one JSON object (see [`describe_range`]).
        #[arg(long, requires = "prefix")]
        json: bool,
    },
    /// Write VALUE (any bytes; or the contents of --file) at KEY; prints the write's zxid.
    Put {
        key: String,
        #[arg(required_unless_present = "file", conflicts_with = "file", value_parser = clap::value_parser!(OsString))]
        value: Option<OsString>,
        #[arg(long)]
        file: Option<PathBuf>,
        /// Compare-and-set: write only if KEY's last change has this zxid (exit 3 otherwise).
        #[arg(long, conflicts_with = "if_absent", value_name = "ZXID")]
        if_zxid: Option<Zxid>,
        /// Write only if nothing is at KEY (exit 3 otherwise).
        #[arg(long)]
        if_absent: bool,
    },
    /// Remove KEY (a directory must be empty unless -r).
    Rm {
        key: String,
        #[arg(short, long)]
        recursive: bool,
        /// Remove only if KEY's last change has this zxid (exit 3 otherwise).
        #[arg(long, value_name = "ZXID")]
        if_zxid: Option<Zxid>,
    },
    /// Exit 0 and print `value` or `directory` when something is at KEY; exit 1 otherwise.
    Exists { key: String },
    /// Print KEY's metadata: value or directory, the zxid of its last change (what --if-zxid
    /// compares with), its size in bytes, and its ephemeral owner (a session id, or none);
    /// exit 1 when nothing is there.
    Stat {
        key: String,
        /// One JSON object: {"key", "is_dir", "zxid", "size", "ephemeral_owner"}.
        #[arg(long)]
        json: bool,
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
    /// Print changes to PATH (with --prefix, to everything below it) as they commit, one line
    /// each ending with its zxid; --from ZXID resumes after that zxid (exit 10 when the
    /// cluster's history no longer reaches back to it).
    Watch {
        path: String,
        #[arg(long)]
        prefix: bool,
        /// Resume: every change after this zxid (EPOCH:COUNTER, as printed), then live.
        #[arg(long, value_parser = parse_zxid)]
        from: Option<Zxid>,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Show every node: role, epoch, zxids, load, last seen (exit 4 if none answers).
    Status {
        /// One JSON object with stable field names (see `shoal_cli::status`).
        #[arg(long)]
        json: bool,
    },
    /// Measure put/get/mixed/lock/txn throughput and latency, or failover and lock-failover time
    /// (see `shoal_cli::bench`).
    Bench(bench::BenchArgs),
    /// Make a consistent backup on another node (--to-node N) or in a directory on the donor's
    /// host (--to-dir PATH), and follow it to the end (README: "Backup and restore"). Exit 7:
    /// refused, 8: failed, 9: no result within --timeout.
    Backup(backup::BackupArgs),
}

impl Cli {
    /// How to reach the cluster, from the global flags.
    pub fn connection(&self) -> Connection {
        Connection {
            cluster: PathBuf::from(&self.cluster),
            seeds: self.seeds.clone(),
            request_timeout: Duration::from_millis(self.timeout_ms),
        }
    }
}

/// Runs one command, writing its output to `out`; returns the exit code.
pub async fn execute<T: Transport>(
    client: &Client<T>,
    command: &Command,
    out: &mut impl Write,
) -> Result<i32, ClientError> {
    match command {
        Command::Get { key, prefix: true, limit, from, json, .. } => {
            get_prefix(client, key, from.as_deref(), *limit, *json, out).await
        }
        Command::Get { key, linearizable, .. } => get(client, key, *linearizable, out).await,
        Command::Put { key, value, file, if_zxid, if_absent } => {
            let condition = match (if_zxid, if_absent) {
                (Some(z), _) => Some(*z),
                (None, true) => Some(Zxid::ZERO),
                (None, false) => None,
            };
            put(client, key, value, file, condition, out).await
        }
        Command::Rm { key, recursive, if_zxid: None } => done(client.remove(key, *recursive).await),
        Command::Rm { key, recursive, if_zxid: Some(z) } => {
            done(client.batch(Batch::new().if_zxid(key, *z).remove(key, *recursive)).await)
        }
        Command::Exists { key } => exists(client, key, out).await,
        Command::Stat { key, json } => stat(client, key, *json, out).await,
        Command::Mv { from, to } => done(client.rename(from, to).await),
        Command::Ls { dir } => ls(client, dir, out).await,
        Command::Mkdir { dir } => done(client.mkdir(dir).await),
        Command::Lock { name, shared, wait, hold } => {
            lock(client, name, *shared, *wait, *hold, out).await
        }
        Command::Unlock { name, auth } => done(client.unlock_with_auth(name, *auth).await),
        Command::Txn { reads, writes, wait } => txn(client, reads, writes, *wait, out).await,
        Command::Watch { path, prefix, from, count } => {
            watch(client, path, *prefix, *from, *count, out).await
        }
        Command::Status { json } => status::execute(client, *json, out).await,
        Command::Bench(args) => bench::execute(std::slice::from_ref(client), args, out).await,
        Command::Backup(args) => Ok(run_backup(client, args, &BTreeMap::new(), out).await),
    }
}

/// Exit 0 for a command that prints nothing.
fn done<V>(result: Result<V, ClientError>) -> Result<i32, ClientError> {
    result.map(|_| exit::OK)
}

/// A failure to write the command's output.
fn output_error(e: std::io::Error) -> ClientError {
    ClientError::Transport(format!("writing output: {e}"))
}

/// `get KEY`: the raw value, or exit 1 when there is none.
async fn get<T: Transport>(
    client: &Client<T>,
    key: &str,
    linearizable: bool,
    out: &mut impl Write,
) -> Result<i32, ClientError> {
    let options = if linearizable { ReadOptions::linearizable() } else { ReadOptions::default() };
    match client.read_with(key, options).await? {
        Some(versioned) => {
            out.write_all(&versioned.value).map_err(output_error)?;
            Ok(exit::OK)
        }
        None => {
            eprintln!("shoal: {key} does not exist");
            Ok(exit::NOT_FOUND)
        }
    }
}

/// `get --prefix DIR [--limit N] [--from KEY] [--json]`: the values below DIR, one
/// `key<TAB>value` line each (or one JSON object), and on stderr the zxid of the state read
/// (and where to go on when --limit stopped it). Exit 1 when DIR does not exist.
async fn get_prefix<T: Transport>(
    client: &Client<T>,
    dir: &str,
    from: Option<&str>,
    limit: Option<u64>,
    json: bool,
    out: &mut impl Write,
) -> Result<i32, ClientError> {
    let limit = limit.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    let read = client.range(dir, from, limit).await?;
    if json {
        writeln!(out, "{}", describe_range(dir, &read)).map_err(output_error)?;
    } else {
        for entry in &read.entries {
            writeln!(out, "{}\t{}", entry.key, escape_value(&entry.value)).map_err(output_error)?;
        }
    }
    match read.snapshot {
        Some(z) => eprintln!("zxid {z}"),
        None => eprintln!(
            "zxid {} (not one snapshot: the range kept changing while it was read page by page; \
             each page is one state, later pages later states)",
            read.zxid
        ),
    }
    if let Some(next) = &read.next {
        eprintln!("more values follow: go on with --from {next}");
    }
    Ok(exit::OK)
}

/// What `shoal get --prefix --json` prints: `{"dir", "zxid", "snapshot", "next",
/// "entries": [{"key", "zxid", "value"} ...]}`. `zxid` is the state read (the last page's),
/// `snapshot` whether every entry is of that one state, `next` the key to go on from when
/// --limit stopped the read (else null). A value that is UTF-8 is the string `value`; one that
/// is not is `value_base64` instead (standard alphabet, padded).
pub fn describe_range(dir: &str, read: &cache_client::client::RangeRead) -> String {
    let entries: Vec<serde_json::Value> = read
        .entries
        .iter()
        .map(|e| match std::str::from_utf8(&e.value) {
            Ok(text) => serde_json::json!({ "key": e.key, "zxid": e.zxid.to_string(), "value": text }),
            Err(_) => serde_json::json!({
                "key": e.key,
                "zxid": e.zxid.to_string(),
                "value_base64": base64(&e.value),
            }),
        })
        .collect();
    serde_json::json!({
        "dir": dir,
        "zxid": read.zxid.to_string(),
        "snapshot": read.snapshot.is_some(),
        "next": read.next,
        "entries": entries,
    })
    .to_string()
}

/// A value as `get --prefix` prints it on one line: UTF-8 text as it is, except `\` as `\\`,
/// tab, newline and carriage return as `\t`, `\n`, `\r`, and every other control character
/// and every byte that is not UTF-8 as `\xNN`.
pub fn escape_value(value: &[u8]) -> String {
    let mut out = String::with_capacity(value.len());
    for chunk in value.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        out.push_str(&format!("\\x{b:02x}"));
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Standard base64 (RFC 4648 alphabet, `=` padding).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] =
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let b = [group[0], *group.get(1).unwrap_or(&0), *group.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= group.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `exists KEY`: `value` or `directory` and exit 0, or exit 1 when nothing is there.
async fn exists<T: Transport>(
    client: &Client<T>,
    key: &str,
    out: &mut impl Write,
) -> Result<i32, ClientError> {
    // One read: what is there and whether it is a directory, at one zxid.
    let Some(stat) = client.stat(key).await? else {
        eprintln!("shoal: {key} does not exist");
        return Ok(exit::NOT_FOUND);
    };
    let what = if stat.is_dir { "directory" } else { "value" };
    writeln!(out, "{what}").map_err(output_error)?;
    Ok(exit::OK)
}

/// `stat KEY [--json]`: the key's metadata, one `name: value` line each (or one JSON object);
/// exit 1 when nothing is there.
async fn stat<T: Transport>(
    client: &Client<T>,
    key: &str,
    json: bool,
    out: &mut impl Write,
) -> Result<i32, ClientError> {
    let Some(stat) = client.stat(key).await? else {
        eprintln!("shoal: {key} does not exist");
        return Ok(exit::NOT_FOUND);
    };
    writeln!(out, "{}", describe_stat(key, &stat, json)).map_err(output_error)?;
    Ok(exit::OK)
}

/// What `shoal stat` prints for `stat` of `key`.
pub fn describe_stat(key: &str, stat: &protocol::message::data::KeyStat, json: bool) -> String {
    if json {
        let value = serde_json::json!({
            "key": key,
            "is_dir": stat.is_dir,
            "zxid": stat.zxid.to_string(),
            "size": stat.size,
            "ephemeral_owner": stat.ephemeral,
        });
        return value.to_string();
    }
    let owner = stat.ephemeral.map_or("none".to_string(), |s| format!("session {s}"));
    format!(
        "key: {key}\ntype: {}\nzxid: {}\nsize: {}\nephemeral: {owner}",
        if stat.is_dir { "directory" } else { "value" },
        stat.zxid,
        stat.size,
    )
}

/// `put KEY (VALUE | --file PATH) [--if-zxid Z | --if-absent]`: prints the write's zxid.
/// `condition`: the zxid KEY must have (`Zxid::ZERO`: KEY must be absent).
async fn put<T: Transport>(
    client: &Client<T>,
    key: &str,
    value: &Option<OsString>,
    file: &Option<PathBuf>,
    condition: Option<Zxid>,
    out: &mut impl Write,
) -> Result<i32, ClientError> {
    let bytes = match (value, file) {
        (Some(v), _) => Bytes::from(std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str()).to_vec()),
        (None, Some(path)) => read_file(path, client.config().value_bytes_max)?,
        (None, None) => unreachable!("clap requires a value or --file"),
    };
    let zxid = match condition {
        None => client.write(key, bytes).await?,
        Some(z) => client.batch(Batch::new().if_zxid(key, z).write(key, bytes)).await?,
    };
    writeln!(out, "{zxid}").map_err(output_error)?;
    Ok(exit::OK)
}

/// `ls DIR`: one entry a line, directories ending in `/`.
async fn ls<T: Transport>(
    client: &Client<T>,
    dir: &str,
    out: &mut impl Write,
) -> Result<i32, ClientError> {
    for entry in client.list(dir).await? {
        let slash = if entry.is_dir { "/" } else { "" };
        writeln!(out, "{}{slash}", entry.name).map_err(output_error)?;
    }
    Ok(exit::OK)
}

/// `lock NAME`: take it, print its fencing token, hold it (see [`hold`]), release it.
async fn lock<T: Transport>(
    client: &Client<T>,
    name: &str,
    shared: bool,
    wait: Option<u64>,
    hold_secs: Option<u64>,
    out: &mut impl Write,
) -> Result<i32, ClientError> {
    let guard = match wait {
        Some(secs) => client.lock_wait(name, shared, Duration::from_secs(secs)).await?,
        None => client.lock(name, shared).await?,
    };
    writeln!(out, "token {}", guard.token()).map_err(output_error)?;
    out.flush().map_err(output_error)?;
    hold(client, name, hold_secs).await?;
    guard.release().await?;
    Ok(exit::OK)
}

/// Waits `secs` seconds (or for Ctrl-C when `None`) while the client renews the lock; fails
/// as soon as the session, and with it the lock, is lost.
async fn hold<T: Transport>(
    client: &Client<T>,
    name: &str,
    secs: Option<u64>,
) -> Result<(), ClientError> {
    let mut state = client.session_state();
    let held = async {
        match secs {
            Some(secs) => tokio::time::sleep(Duration::from_secs(secs)).await,
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    let lost = state.wait_for(|s| *s == SessionState::Lost);
    tokio::select! {
        _ = held => Ok(()),
        _ = lost => Err(ClientError::LockLost {
            detail: format!("lock {name} was lost while held (renewals failed)"),
        }),
    }
}

/// `txn`: lock every declared key in order, print each read key (`K=value`, or `K` when
/// absent), commit the writes as one entry and print its zxid.
async fn txn<T: Transport>(
    client: &Client<T>,
    reads: &[String],
    writes: &[String],
    wait_secs: u64,
    out: &mut impl Write,
) -> Result<i32, ClientError> {
    let pairs = key_value_pairs(writes)?;
    let mut builder = client.transaction().wait(Duration::from_secs(wait_secs));
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
                write!(out, "{key}=").map_err(output_error)?;
                out.write_all(&value).map_err(output_error)?;
                writeln!(out).map_err(output_error)?;
            }
            None => writeln!(out, "{key}").map_err(output_error)?,
        }
    }
    for (key, value) in &pairs {
        txn.write(key, Bytes::from(value.clone()))?;
    }
    let zxid = txn.commit().await?;
    writeln!(out, "{zxid}").map_err(output_error)?;
    Ok(exit::OK)
}

/// The `--write K=V` pairs of `txn`, refusing one without `=` before anything is sent.
fn key_value_pairs(writes: &[String]) -> Result<Vec<(String, String)>, ClientError> {
    writes
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) => Ok((key.to_string(), value.to_string())),
            None => Err(ClientError::Undeclared {
                key: pair.clone(),
                intent: "writing (use KEY=VALUE)",
            }),
        })
        .collect()
}

/// `watch PATH [--prefix] [--from ZXID] [--count N]`: one line per event (see [`describe`]),
/// from now on, or after `--from`. A compacted history ends it with
/// [`ClientError::Compacted`] (exit 10), naming the zxid to re-read from.
async fn watch<T: Transport>(
    client: &Client<T>,
    path: &str,
    prefix: bool,
    from: Option<Zxid>,
    count: Option<u64>,
    out: &mut impl Write,
) -> Result<i32, ClientError> {
    protocol::key::validate(path, client.config().key_bytes_max)?;
    let target = if prefix { Target::Prefix(path.into()) } else { Target::Path(path.into()) };
    let (id, mut events) = match from {
        Some(from) => client.watch_channel_from(target, Kinds::ALL, from)?,
        None => {
            // A read first raises the floor to what a node has applied now, so the watch
            // reports changes from here on.
            client.exists(path).await?;
            client.watch_channel(target, Kinds::ALL)?
        }
    };
    let mut seen = 0u64;
    while count.is_none_or(|c| seen < c) {
        let Some(event) = events.recv().await else { break };
        if let WatchEvent::Compacted { after, oldest } = event {
            client.unwatch(id);
            let detail = protocol::history::compacted_sentence(after, oldest);
            return Err(ClientError::Compacted { oldest, detail });
        }
        writeln!(out, "{}", describe(&event)).map_err(output_error)?;
        out.flush().map_err(output_error)?;
        seen += 1;
    }
    client.unwatch(id);
    Ok(exit::OK)
}

/// `shoal backup` with progress on stderr; prints its one-line error there and returns the
/// exit code.
async fn run_backup<T: Transport>(
    client: &Client<T>,
    args: &backup::BackupArgs,
    members: &BTreeMap<NodeId, String>,
    out: &mut impl Write,
) -> i32 {
    use std::io::IsTerminal;
    let mut stderr = std::io::stderr();
    let terminal = stderr.is_terminal();
    let mut progress = backup::Progress::new(&mut stderr, terminal);
    match backup::execute(client, args, members, out, &mut progress).await {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("shoal: {e}");
            e.exit_code()
        }
    }
}

/// Reads a file for `put --file`, refusing one over the value limit before reading it.
fn read_file(path: &Path, max: usize) -> Result<Bytes, ClientError> {
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
        WatchEvent::Compacted { after, oldest } => {
            protocol::history::compacted_sentence(*after, *oldest)
        }
    }
}

/// `--from`: a zxid as shoal prints it (`EPOCH:COUNTER`) or its 64-bit number.
fn parse_zxid(text: &str) -> Result<Zxid, String> {
    text.parse()
}

/// Parses nothing, connects, runs: what `main` calls. Returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(dispatch(&cli)),
        Err(e) => {
            eprintln!("shoal: cannot start the runtime: {e}");
            exit::FAILED
        }
    }
}

/// `bench` and `backup` connect in their own way; every other command runs on one client.
async fn dispatch(cli: &Cli) -> i32 {
    let connection = cli.connection();
    match &cli.command {
        Command::Bench(args) => bench::run_cli(&connection, args).await,
        Command::Backup(args) => backup_from_cli(&connection, args).await,
        command => {
            let client = match connection.client().await {
                Ok(client) => client,
                Err(e) => return failed(&e),
            };
            match execute(&client, command, &mut std::io::stdout().lock()).await {
                Ok(code) => code,
                Err(e) => failed(&e),
            }
        }
    }
}

/// `shoal backup` from the command line: flags first, then the cluster, with the cluster
/// file's members (it names every member by id, also one that is down right now).
async fn backup_from_cli(connection: &Connection, args: &backup::BackupArgs) -> i32 {
    // Flags that are wrong whatever the cluster: say so before looking for one.
    if let Err(e) = backup::target(args) {
        eprintln!("shoal: {e}");
        return e.exit_code();
    }
    let client = match connection.client().await {
        Ok(client) => client,
        Err(e) => return failed(&e),
    };
    run_backup(&client, args, &connection.members(), &mut std::io::stdout().lock()).await
}

/// Prints a failed command's error and returns its exit code.
fn failed(error: &ClientError) -> i32 {
    eprintln!("shoal: {error}");
    exit::code_of(error)
}
