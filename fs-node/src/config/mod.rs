//! `shoal-fs` configuration: a TOML file, overridden by flags and `SHOAL_*` environment
//! variables, checked once at start-up.
//!
//! Precedence, highest first: command-line flag, environment variable (clap reads both, see
//! [`Args`]), the TOML file (`--config` / `SHOAL_CONFIG`), the defaults below. Validation
//! names the setting at fault and says how to fix it ([`ConfigError`]). `shoal-fs --help`
//! lists every setting with its flag, variable and default; [`SETTINGS`] lists their names.
//!
//! ```toml
//! node_id = 1
//! data_dir = "/var/lib/shoal/1"
//! cluster_id = 7
//! cluster_key_file = "/etc/shoal/cluster.key"
//! member_key_file = "/etc/shoal/member.key"
//!
//! [members]            # id = "ip:port" of each FS node's unicast socket; 3, 5 or 7 of them
//! 1 = "10.0.0.1:7701"
//! 2 = "10.0.0.2:7701"
//! 3 = "10.0.0.3:7701"
//!
//! # Optional, defaults shown.
//! multicast = true
//! multicast_group = "239.255.77.1:7700"
//! multicast_interface = "127.0.0.1"
//! multicast_ttl = 1
//! multicast_loopback = true
//! unicast_peers = []            # with multicast = false: extra addresses (beyond members)
//! fslive_interval_ms = 30000
//! fslive_validity_ms = 70000
//! lock_ttl_ms = 5000
//! heartbeat_interval_ms = 50
//! election_timeout_ms = 500
//! lease_ms = 300
//! drift_margin_ms = 30
//! key_bytes_max = 4096
//! value_bytes_max = 16777216
//! log_retention_bytes = 1073741824  # log kept below a snapshot: this many bytes or ...
//! snapshot_entries = 100000       # a snapshot after this many applied entries ...
//! snapshot_log_bytes = 268435456  # ... or this many entry bytes, whichever comes first
//! log_segment_bytes = 67108864    # data log segment size (retention removes whole segments)
//! log_retention_entries = 100000  # entries kept below a snapshot for lagging followers
//! history_entries = 100000       # notices kept in memory for watches that resume ...
//! history_bytes = 67108864       # ... and at most this many bytes of them
//! transfer_rate_bytes_per_s = 33554432  # pace of a file transfer this node sends
//! # metrics_addr = "127.0.0.1:9900"
//! ```
//!
//! A single member (`N = 1`) is accepted as a **single-node dev/test mode**: no fault
//! tolerance, every write is acknowledged by the one node. Production clusters use 3, 5 or 7.
//!
//! ## Layout
//!
//! - `mod.rs` (here): the settings table, the defaults, [`ConfigError`], loading.
//! - `define.rs`: the `settings!` macro that expands the table, and its helpers.
//! - `check.rs`: each setting's parse and check steps and the rules between settings.
//! - `tests.rs`, `every_setting.rs`: unit tests; the latter pins every setting's flag,
//!   variable, TOML key, precedence and refusal from a hand-written table.
//!
//! ## Adding a setting
//!
//! A setting is defined once, as an entry of the `settings!` table below:
//!
//! ```text
//! /// Doc: the Config field's doc and the flag's `--help` line.
//! lock_ttl_ms: u64 {                        // Config field name and type; the TOML key
//!     toml: u64,                            // its type in the TOML file (RawConfig)
//!     flag: Option<u64>;                    // the flag's type; `as "name"` renames the
//!                                           // flag, `, split ','` splits a list value,
//!                                           // `, from f` converts it to the TOML type
//!     env: "SHOAL_LOCK_TTL_MS",
//!     absent: default(LOCK_TTL_MS_DEFAULT), // or required("fix"), or unset(None)
//!     parse: check::same,                   // a given value: TOML type -> Config type
//!     check: check::positive_ms,            // optional: the value, given or default
//!     rule: check::some_rule(a, b),         // optional: against settings above it
//!     derive { /** doc */ name: T = expr }  // optional: a Config field computed from it
//! }                                         // (as `cluster_key` from `cluster_key_file`)
//! ```
//!
//! Validation runs entry by entry in the table's order and reports the first refusal, so a
//! `rule` may use only the settings above its entry (the compiler enforces it: a later name
//! is not yet bound).
//!
//! From it follow the [`Config`] field, the [`RawConfig`] key, the [`Args`] flag with its
//! variable and `--help` line, the merge, the validation step and the [`SETTINGS`] row. Then
//! add a row to the table in `every_setting.rs` (its tests fail until the setting is pinned
//! there), and the key to the TOML example above if it is optional.

#[macro_use]
mod define;
mod check;

pub use define::Setting;
use define::{default, required, unset};
use protocol::header::{ClusterAuth, CLUSTER_KEY_BYTES_MIN};
use protocol::NodeId;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Cluster sizes accepted. 1 is the single-node dev/test mode; the design's sizes are 3, 5, 7.
pub const CLUSTER_SIZES: [usize; 4] = [1, 3, 5, 7];

pub const MULTICAST_GROUP_DEFAULT: SocketAddrV4 =
    SocketAddrV4::new(Ipv4Addr::new(239, 255, 77, 1), 7700);
pub const MULTICAST_INTERFACE_DEFAULT: Ipv4Addr = Ipv4Addr::LOCALHOST;
pub const MULTICAST_TTL_DEFAULT: u32 = 1;
pub const FSLIVE_INTERVAL_MS_DEFAULT: u64 = 30_000;
pub const FSLIVE_VALIDITY_MS_DEFAULT: u64 = 70_000;
pub const LOCK_TTL_MS_DEFAULT: u64 = 5_000;
/// Timing defaults match the replication engine's (`replication::EngineConfig::new`).
pub const HEARTBEAT_INTERVAL_MS_DEFAULT: u64 = 50;
pub const ELECTION_TIMEOUT_MS_DEFAULT: u64 = 500;
pub const LEASE_MS_DEFAULT: u64 = 300;
pub const DRIFT_MARGIN_MS_DEFAULT: u64 = 30;
/// Data log kept behind the latest snapshot so that a lagging follower catches up from the log
/// rather than by file transfer: at most this many bytes (or `log_retention_entries` entries,
/// whichever window is smaller).
pub const LOG_RETENTION_BYTES_DEFAULT: u64 = 1 << 30;
/// A snapshot (store files + tables, see `node::snapshot`) is taken after this many applied
/// entries: the log before it can then go, and restarts replay at most this many entries.
pub const SNAPSHOT_ENTRIES_DEFAULT: u64 = 100_000;
/// ... or after this many bytes of applied entries, whichever comes first.
pub const SNAPSHOT_LOG_BYTES_DEFAULT: u64 = 256 * 1024 * 1024;
/// Data log segment size; retention deletes whole segments.
pub const LOG_SEGMENT_BYTES_DEFAULT: u64 = crate::storage::log::LOG_SEGMENT_BYTES_DEFAULT;
/// Entries kept in the log below the latest snapshot, so that a follower that fell a little
/// behind catches up from the log rather than by file transfer.
pub const LOG_RETENTION_ENTRIES_DEFAULT: u64 = crate::storage::log::LOG_RETENTION_ENTRIES_DEFAULT;
/// Notices a node keeps for watches that resume from a zxid (`shoal watch --from`): about a
/// snapshot interval's worth, so a watcher away for a while catches up from history.
pub const HISTORY_ENTRIES_DEFAULT: usize = cache_server::history::HISTORY_ENTRIES_DEFAULT;
/// ... and at most this many bytes of them, whichever bound is reached first.
pub const HISTORY_BYTES_DEFAULT: usize = cache_server::history::HISTORY_BYTES_DEFAULT;
/// Pace of a file transfer this node sends (blocks and repairs): about a quarter of a
/// 1 Gbit/s link, so loss stays low and the donor keeps serving writes.
pub const TRANSFER_RATE_BYTES_PER_S_DEFAULT: u64 = 32 * 1024 * 1024;
/// Slowest transfer pace accepted (below, a freeze would last for hours).
pub const TRANSFER_RATE_BYTES_PER_S_MIN: u64 = 64 * 1024;
/// Smallest log segment accepted (a segment must hold at least a few entries).
pub const LOG_SEGMENT_BYTES_MIN: u64 = 64 * 1024;

// The settings, in the order they are validated (the first refusal is reported). See the
// module doc for the fields of an entry.
settings! {
    /// This node's id, 1..=7.
    node_id: NodeId {
        toml: i64,
        flag: Option<i64>;
        env: "SHOAL_NODE_ID",
        absent: required("set node_id (1..=7) to this node's id in [members]"),
        parse: check::node_id,
    }
    /// Every FS node's unicast address by id, this node's among them: `[members]` in TOML,
    /// `--member id=ip:port` repeated as flags (replacing the file's).
    members: BTreeMap<NodeId, SocketAddr> {
        toml: BTreeMap<String, String>,
        flag: Vec<String> as "member", split ',', from check::members_from_flags;
        env: "SHOAL_MEMBERS",
        absent: required(
            "list every FS node as `id = \"ip:port\"` under [members] (or --member id=ip:port)"
        ),
        parse: check::members,
        rule: check::members_hold_node(node_id, &members),
    }
    /// This node's data directory, owned by it alone (created if missing).
    data_dir: PathBuf {
        toml: PathBuf,
        flag: Option<PathBuf>;
        env: "SHOAL_DATA_DIR",
        absent: required("set data_dir to a directory this node owns alone (created if missing)"),
        parse: check::same,
        check: check::data_dir,
    }
    /// Send group traffic by multicast; without it, by unicast to members and `unicast_peers`.
    multicast: bool {
        toml: bool,
        flag: Option<bool>;
        env: "SHOAL_MULTICAST",
        absent: default(true),
        parse: check::same,
    }
    /// The multicast group (IPv4 ip:port) nodes and clients meet on.
    multicast_group: SocketAddrV4 {
        toml: String,
        flag: Option<String>;
        env: "SHOAL_MULTICAST_GROUP",
        absent: default(MULTICAST_GROUP_DEFAULT),
        parse: check::multicast_group,
    }
    /// Local address of the interface multicast is sent and joined on.
    multicast_interface: Ipv4Addr {
        toml: String,
        flag: Option<String>;
        env: "SHOAL_MULTICAST_INTERFACE",
        absent: default(MULTICAST_INTERFACE_DEFAULT),
        parse: check::ipv4,
    }
    /// Multicast TTL, 0..=255 (1 keeps traffic on the local network).
    multicast_ttl: u32 {
        toml: u32,
        flag: Option<u32>;
        env: "SHOAL_MULTICAST_TTL",
        absent: default(MULTICAST_TTL_DEFAULT),
        parse: check::same,
        check: check::ttl,
    }
    /// Whether this host's own multicast is looped back to it.
    multicast_loopback: bool {
        toml: bool,
        flag: Option<bool>;
        env: "SHOAL_MULTICAST_LOOPBACK",
        absent: default(true),
        parse: check::same,
    }
    /// With `multicast = false`: addresses beyond the members that receive group traffic
    /// (`--unicast-peer ip:port` repeated).
    unicast_peers: Vec<SocketAddr> {
        toml: Vec<String>,
        flag: Vec<String> as "unicast-peer", split ',', from check::list_from_flags;
        env: "SHOAL_UNICAST_PEERS",
        absent: unset(Vec::new()),
        parse: check::socket_addrs,
    }
    /// The cluster's id, shared by every node and client of it.
    cluster_id: u32 {
        toml: u32,
        flag: Option<u32>;
        env: "SHOAL_CLUSTER_ID",
        absent: required(
            "set cluster_id to a number shared by every node and client of this cluster"
        ),
        parse: check::same,
    }
    /// A file holding the cluster key (at least 16 bytes), the same on every node and client.
    cluster_key_file: PathBuf {
        toml: PathBuf,
        flag: Option<PathBuf>;
        env: "SHOAL_CLUSTER_KEY_FILE",
        absent: required(
            "set cluster_key_file to a file of at least 16 random bytes shared by every node and client"
        ),
        parse: check::same,
        derive {
            /// The key itself, read from `cluster_key_file` at validation. Never printed.
            cluster_key: ClusterKey = check::read_cluster_key(&cluster_key_file)
        }
    }
    /// A file holding the member key (at least 16 bytes), the same on every node and on no
    /// client: every datagram nodes send each other is sealed with it, so that a client,
    /// which holds only the cluster key, can produce none (see README "Security"). Readable
    /// by its owner only (mode 0600 or stricter), and not the cluster key.
    member_key_file: PathBuf {
        toml: PathBuf,
        flag: Option<PathBuf>;
        env: "SHOAL_MEMBER_KEY_FILE",
        absent: required(
            "set member_key_file to a file of at least 16 random bytes shared by the nodes only (mode 0600)"
        ),
        parse: check::same,
        derive {
            /// The member key, read from `member_key_file` at validation. Never printed.
            member_key: ClusterKey = check::read_member_key(&member_key_file, &cluster_key)
        }
    }
    /// Interval of this node's FSLive announcements to clients.
    fslive_interval_ms: u64 {
        toml: u64,
        flag: Option<u64>;
        env: "SHOAL_FSLIVE_INTERVAL_MS",
        absent: default(FSLIVE_INTERVAL_MS_DEFAULT),
        parse: check::same,
        check: check::positive_ms,
    }
    /// How long a client counts a node live after its FSLive; above `fslive_interval_ms`.
    fslive_validity_ms: u64 {
        toml: u64,
        flag: Option<u64>;
        env: "SHOAL_FSLIVE_VALIDITY_MS",
        absent: default(FSLIVE_VALIDITY_MS_DEFAULT),
        parse: check::same,
        check: check::positive_ms,
        rule: check::validity_above_interval(fslive_validity_ms, fslive_interval_ms),
    }
    /// Time to live of a lock not renewed.
    lock_ttl_ms: u64 {
        toml: u64,
        flag: Option<u64>;
        env: "SHOAL_LOCK_TTL_MS",
        absent: default(LOCK_TTL_MS_DEFAULT),
        parse: check::same,
        check: check::positive_ms,
    }
    /// Interval of the master's heartbeats.
    heartbeat_interval_ms: u64 {
        toml: u64,
        flag: Option<u64>;
        env: "SHOAL_HEARTBEAT_INTERVAL_MS",
        absent: default(HEARTBEAT_INTERVAL_MS_DEFAULT),
        parse: check::same,
        check: check::positive_ms,
    }
    /// Silence from the master after which a follower starts an election; at least twice
    /// `heartbeat_interval_ms`.
    election_timeout_ms: u64 {
        toml: u64,
        flag: Option<u64>;
        env: "SHOAL_ELECTION_TIMEOUT_MS",
        absent: default(ELECTION_TIMEOUT_MS_DEFAULT),
        parse: check::same,
        check: check::positive_ms,
        rule: check::election_after_heartbeats(election_timeout_ms, heartbeat_interval_ms),
    }
    /// The master's read lease; below `election_timeout_ms`.
    lease_ms: u64 {
        toml: u64,
        flag: Option<u64>;
        env: "SHOAL_LEASE_MS",
        absent: default(LEASE_MS_DEFAULT),
        parse: check::same,
        check: check::positive_ms,
        rule: check::lease_below_election(lease_ms, election_timeout_ms),
    }
    /// Clock drift allowed for in the lease; below `lease_ms`.
    drift_margin_ms: u64 {
        toml: u64,
        flag: Option<u64>;
        env: "SHOAL_DRIFT_MARGIN_MS",
        absent: default(DRIFT_MARGIN_MS_DEFAULT),
        parse: check::same,
        rule: check::drift_below_lease(drift_margin_ms, lease_ms),
    }
    /// Longest key accepted, in bytes (at most the wire protocol's hard maximum).
    key_bytes_max: usize {
        toml: usize,
        flag: Option<usize>;
        env: "SHOAL_KEY_BYTES_MAX",
        absent: default(protocol::limits::KEY_BYTES_DEFAULT),
        parse: check::same,
        check: check::key_bytes_max,
    }
    /// Longest value accepted, in bytes (at most the wire protocol's hard maximum).
    value_bytes_max: usize {
        toml: usize,
        flag: Option<usize>;
        env: "SHOAL_VALUE_BYTES_MAX",
        absent: default(protocol::limits::VALUE_BYTES_DEFAULT),
        parse: check::same,
        check: check::value_bytes_max,
    }
    /// Bytes of data log kept below the latest snapshot for lagging followers.
    log_retention_bytes: u64 {
        toml: u64,
        flag: Option<u64>;
        env: "SHOAL_LOG_RETENTION_BYTES",
        absent: default(LOG_RETENTION_BYTES_DEFAULT),
        parse: check::same,
    }
    /// A snapshot after this many applied entries.
    snapshot_entries: u64 {
        toml: u64,
        flag: Option<u64>;
        env: "SHOAL_SNAPSHOT_ENTRIES",
        absent: default(SNAPSHOT_ENTRIES_DEFAULT),
        parse: check::same,
        check: check::snapshot_entries,
    }
    /// A snapshot after this many bytes of applied entries.
    snapshot_log_bytes: u64 {
        toml: u64,
        flag: Option<u64>;
        env: "SHOAL_SNAPSHOT_LOG_BYTES",
        absent: default(SNAPSHOT_LOG_BYTES_DEFAULT),
        parse: check::same,
        check: check::snapshot_log_bytes,
    }
    /// Data log segment size in bytes (retention removes whole segments).
    log_segment_bytes: u64 {
        toml: u64,
        flag: Option<u64>;
        env: "SHOAL_LOG_SEGMENT_BYTES",
        absent: default(LOG_SEGMENT_BYTES_DEFAULT),
        parse: check::same,
        check: check::log_segment_bytes,
    }
    /// Entries kept in the log below the latest snapshot.
    log_retention_entries: u64 {
        toml: u64,
        flag: Option<u64>;
        env: "SHOAL_LOG_RETENTION_ENTRIES",
        absent: default(LOG_RETENTION_ENTRIES_DEFAULT),
        parse: check::same,
    }
    /// Notices kept in memory for watches that resume (history reads); 0 keeps none.
    history_entries: usize {
        toml: usize,
        flag: Option<usize>;
        env: "SHOAL_HISTORY_ENTRIES",
        absent: default(HISTORY_ENTRIES_DEFAULT),
        parse: check::same,
    }
    /// Bytes of notices (keys and values) kept in memory for watches that resume.
    history_bytes: usize {
        toml: usize,
        flag: Option<usize>;
        env: "SHOAL_HISTORY_BYTES",
        absent: default(HISTORY_BYTES_DEFAULT),
        parse: check::same,
    }
    /// Pace of a file transfer this node sends.
    transfer_rate_bytes_per_s: u64 {
        toml: u64,
        flag: Option<u64>;
        env: "SHOAL_TRANSFER_RATE_BYTES_PER_S",
        absent: default(TRANSFER_RATE_BYTES_PER_S_DEFAULT),
        parse: check::same,
        check: check::transfer_rate,
    }
    /// Address (ip:port) to serve Prometheus metrics on; none by default.
    metrics_addr: Option<SocketAddr> {
        toml: String,
        flag: Option<String>;
        env: "SHOAL_METRICS_ADDR",
        absent: unset(None),
        parse: check::some_socket_addr,
    }
}

/// The cluster key's bytes, with a `Debug` that does not show them.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey(pub Vec<u8>);

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClusterKey({} bytes)", self.0.len())
    }
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}; fix: check the path given to --config / SHOAL_CONFIG")]
    ReadFile { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("setting `{setting}` is missing; fix: {fix}")]
    Missing { setting: &'static str, fix: &'static str },
    #[error("setting `{setting}` = {value:?} is invalid: {reason}; fix: {fix}")]
    Invalid { setting: &'static str, value: String, reason: String, fix: String },
    #[error("setting `node_id` = {node_id} is not among `members` (ids {members:?}); fix: add `{node_id} = \"ip:port\"` under [members], or set node_id to one of the listed ids")]
    NodeNotMember { node_id: NodeId, members: Vec<NodeId> },
    #[error("setting `members` lists {count} nodes; Shoal needs 3, 5 or 7 (or 1 for a single-node dev/test cluster); fix: list an odd number of FS nodes, 3, 5 or 7")]
    ClusterSize { count: usize },
    #[error("setting `{setting}`: cannot read {path}: {source}; fix: create it (at least {min} random bytes, e.g. `head -c 32 /dev/urandom > {path}`) and make it readable by this user", min = CLUSTER_KEY_BYTES_MIN)]
    KeyFile { setting: &'static str, path: PathBuf, source: std::io::Error },
    #[error("setting `{setting}`: {path} holds a {len}-byte key, shorter than {min}; fix: write at least {min} random bytes to it (and the same file to every {who})")]
    KeyTooShort { setting: &'static str, path: PathBuf, len: usize, min: usize, who: &'static str },
    #[error("setting `member_key_file`: {path} has mode {mode:04o}, so users other than its owner can read the member key and forge any node's traffic; fix: `chmod 600 {path}`")]
    KeyFileReadable { path: PathBuf, mode: u32 },
    #[error("setting `member_key_file`: {path} holds the same key as `cluster_key_file`, which every client holds, so it would keep no client out; fix: write other random bytes to it (`head -c 32 /dev/urandom > {path}`) on every node")]
    MemberKeyIsClusterKey { path: PathBuf },
    #[error("setting `{setting}` = {value} is over the hard maximum {max} the wire protocol enforces; fix: set it to at most {max}")]
    OverHardMax { setting: &'static str, value: usize, max: usize },
}

impl ConfigError {
    /// The setting at fault, when there is one (for tests and tooling).
    pub fn setting(&self) -> Option<&'static str> {
        match self {
            ConfigError::ReadFile { .. } | ConfigError::Parse { .. } => None,
            ConfigError::Missing { setting, .. }
            | ConfigError::Invalid { setting, .. }
            | ConfigError::OverHardMax { setting, .. } => Some(setting),
            ConfigError::NodeNotMember { .. } => Some("node_id"),
            ConfigError::ClusterSize { .. } => Some("members"),
            ConfigError::KeyFile { setting, .. } | ConfigError::KeyTooShort { setting, .. } => {
                Some(setting)
            }
            ConfigError::KeyFileReadable { .. } | ConfigError::MemberKeyIsClusterKey { .. } => {
                Some("member_key_file")
            }
        }
    }
}

impl RawConfig {
    /// Parses TOML text; `path` is only for the error message.
    pub fn from_toml(text: &str, path: &Path) -> Result<RawConfig, ConfigError> {
        toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })
    }

    pub fn from_file(path: &Path) -> Result<RawConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::ReadFile { path: path.to_path_buf(), source })?;
        RawConfig::from_toml(&text, path)
    }
}

impl Config {
    /// Loads the TOML `file` (if any), applies `overrides` on top, fills defaults and
    /// validates, reading the cluster key file.
    pub fn from_sources(file: Option<&Path>, overrides: RawConfig) -> Result<Config, ConfigError> {
        let base = match file {
            Some(path) => RawConfig::from_file(path)?,
            None => RawConfig::default(),
        };
        Config::from_raw(base.overridden_by(overrides))
    }

    /// This node's own unicast address.
    pub fn own_addr(&self) -> SocketAddr {
        self.members[&self.node_id]
    }

    /// Votes needed to elect or commit: n/2 + 1.
    pub fn quorum(&self) -> usize {
        self.members.len() / 2 + 1
    }

    /// Whether this is the single-node dev/test mode (no fault tolerance).
    pub fn is_single_node(&self) -> bool {
        self.members.len() == 1
    }

    /// The sealing/opening context for this cluster's datagrams.
    pub fn cluster_auth(&self) -> ClusterAuth {
        ClusterAuth::new(self.cluster_id, &self.cluster_key.0).with_member_key(
            &self.member_key.0,
            self.members.keys().map(|id| *id as protocol::SenderId),
        )
    }
}

/// Writes a key file readable by its owner only (mode 0600), as `member_key_file` must be:
/// for tools and tests that set up nodes. Replaces the file's contents when it exists (and
/// sets its mode to 0600 again).
pub fn write_owner_only_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(bytes)?;
    file.sync_all()
}

impl Args {
    /// The whole start-up path: file named by `--config`, overridden by flags and environment,
    /// validated.
    pub fn load(&self) -> Result<Config, ConfigError> {
        Config::from_sources(self.config.as_deref(), self.overrides()?)
    }
}

#[cfg(test)]
mod every_setting;
#[cfg(test)]
mod tests;
