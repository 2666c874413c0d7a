//! `shoal-fs` configuration: a TOML file, overridden by flags and `SHOAL_*` environment
//! variables, checked once at start-up.
//!
//! Precedence, highest first: command-line flag, environment variable (clap reads both, see
//! [`Args`]), the TOML file (`--config` / `SHOAL_CONFIG`), the defaults below. Validation
//! names the setting at fault and says how to fix it ([`ConfigError`]).
//!
//! ```toml
//! node_id = 1
//! data_dir = "/var/lib/shoal/1"
//! cluster_id = 7
//! cluster_key_file = "/etc/shoal/cluster.key"
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
//! transfer_rate_bytes_per_s = 33554432  # pace of a file transfer this node sends
//! # metrics_addr = "127.0.0.1:9900"
//! ```
//!
//! A single member (`N = 1`) is accepted as a **single-node dev/test mode**: no fault
//! tolerance, every write is acknowledged by the one node. Production clusters use 3, 5 or 7.

use protocol::header::{cluster_key_from_file_contents, ClusterAuth, CLUSTER_KEY_BYTES_MIN};
use protocol::limits::{KEY_BYTES_HARD_MAX, MEMBERS_MAX, VALUE_BYTES_HARD_MAX};
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
/// Timing defaults match the replication engine's (`replication::Config::new`).
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
/// Pace of a file transfer this node sends (blocks and repairs): about a quarter of a
/// 1 Gbit/s link, so loss stays low and the donor keeps serving writes.
pub const TRANSFER_RATE_BYTES_PER_S_DEFAULT: u64 = 32 * 1024 * 1024;
/// Slowest transfer pace accepted (below, a freeze would last for hours).
pub const TRANSFER_RATE_BYTES_PER_S_MIN: u64 = 64 * 1024;
/// Smallest log segment accepted (a segment must hold at least a few entries).
pub const LOG_SEGMENT_BYTES_MIN: u64 = 64 * 1024;

/// The validated configuration `shoal-fs` runs with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub node_id: NodeId,
    /// Every FS node's unicast address, by id; contains `node_id`.
    pub members: BTreeMap<NodeId, SocketAddr>,
    pub data_dir: PathBuf,
    /// Send group traffic by multicast; without it, by unicast to members and `unicast_peers`.
    pub multicast: bool,
    pub multicast_group: SocketAddrV4,
    /// Local address of the interface multicast is sent and joined on.
    pub multicast_interface: Ipv4Addr,
    pub multicast_ttl: u32,
    pub multicast_loopback: bool,
    /// With `multicast = false`: addresses beyond the members that receive group traffic.
    pub unicast_peers: Vec<SocketAddr>,
    pub cluster_key_file: PathBuf,
    /// The key itself, read from `cluster_key_file` at validation. Never printed.
    pub cluster_key: ClusterKey,
    pub cluster_id: u32,
    pub fslive_interval_ms: u64,
    pub fslive_validity_ms: u64,
    pub lock_ttl_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_ms: u64,
    pub lease_ms: u64,
    pub drift_margin_ms: u64,
    pub key_bytes_max: usize,
    pub value_bytes_max: usize,
    pub log_retention_bytes: u64,
    pub snapshot_entries: u64,
    pub snapshot_log_bytes: u64,
    pub log_segment_bytes: u64,
    pub log_retention_entries: u64,
    pub transfer_rate_bytes_per_s: u64,
    pub metrics_addr: Option<SocketAddr>,
}

/// The cluster key's bytes, with a `Debug` that does not show them.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey(pub Vec<u8>);

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClusterKey({} bytes)", self.0.len())
    }
}

/// Every setting as written in a TOML file or given as an override; `None` means "not given
/// here". Unknown keys are refused by name.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub node_id: Option<i64>,
    /// id (as a string, TOML keys are strings) → "ip:port".
    pub members: Option<BTreeMap<String, String>>,
    pub data_dir: Option<PathBuf>,
    pub multicast: Option<bool>,
    pub multicast_group: Option<String>,
    pub multicast_interface: Option<String>,
    pub multicast_ttl: Option<u32>,
    pub multicast_loopback: Option<bool>,
    pub unicast_peers: Option<Vec<String>>,
    pub cluster_key_file: Option<PathBuf>,
    pub cluster_id: Option<u32>,
    pub fslive_interval_ms: Option<u64>,
    pub fslive_validity_ms: Option<u64>,
    pub lock_ttl_ms: Option<u64>,
    pub heartbeat_interval_ms: Option<u64>,
    pub election_timeout_ms: Option<u64>,
    pub lease_ms: Option<u64>,
    pub drift_margin_ms: Option<u64>,
    pub key_bytes_max: Option<usize>,
    pub value_bytes_max: Option<usize>,
    pub log_retention_bytes: Option<u64>,
    pub snapshot_entries: Option<u64>,
    pub snapshot_log_bytes: Option<u64>,
    pub log_segment_bytes: Option<u64>,
    pub log_retention_entries: Option<u64>,
    pub transfer_rate_bytes_per_s: Option<u64>,
    pub metrics_addr: Option<String>,
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
    #[error("setting `cluster_key_file`: cannot read {path}: {source}; fix: create it (at least {min} random bytes, e.g. `head -c 32 /dev/urandom > {path}`) and make it readable by this user", min = CLUSTER_KEY_BYTES_MIN)]
    KeyFile { path: PathBuf, source: std::io::Error },
    #[error("setting `cluster_key_file`: {path} holds a {len}-byte key, shorter than {min}; fix: write at least {min} random bytes to it (and the same file to every node and client)")]
    KeyTooShort { path: PathBuf, len: usize, min: usize },
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
            ConfigError::KeyFile { .. } | ConfigError::KeyTooShort { .. } => {
                Some("cluster_key_file")
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

    /// `self` with every setting that `over` gives replaced by `over`'s.
    pub fn overridden_by(self, over: RawConfig) -> RawConfig {
        RawConfig {
            node_id: over.node_id.or(self.node_id),
            members: over.members.or(self.members),
            data_dir: over.data_dir.or(self.data_dir),
            multicast: over.multicast.or(self.multicast),
            multicast_group: over.multicast_group.or(self.multicast_group),
            multicast_interface: over.multicast_interface.or(self.multicast_interface),
            multicast_ttl: over.multicast_ttl.or(self.multicast_ttl),
            multicast_loopback: over.multicast_loopback.or(self.multicast_loopback),
            unicast_peers: over.unicast_peers.or(self.unicast_peers),
            cluster_key_file: over.cluster_key_file.or(self.cluster_key_file),
            cluster_id: over.cluster_id.or(self.cluster_id),
            fslive_interval_ms: over.fslive_interval_ms.or(self.fslive_interval_ms),
            fslive_validity_ms: over.fslive_validity_ms.or(self.fslive_validity_ms),
            lock_ttl_ms: over.lock_ttl_ms.or(self.lock_ttl_ms),
            heartbeat_interval_ms: over.heartbeat_interval_ms.or(self.heartbeat_interval_ms),
            election_timeout_ms: over.election_timeout_ms.or(self.election_timeout_ms),
            lease_ms: over.lease_ms.or(self.lease_ms),
            drift_margin_ms: over.drift_margin_ms.or(self.drift_margin_ms),
            key_bytes_max: over.key_bytes_max.or(self.key_bytes_max),
            value_bytes_max: over.value_bytes_max.or(self.value_bytes_max),
            log_retention_bytes: over.log_retention_bytes.or(self.log_retention_bytes),
            snapshot_entries: over.snapshot_entries.or(self.snapshot_entries),
            snapshot_log_bytes: over.snapshot_log_bytes.or(self.snapshot_log_bytes),
            log_segment_bytes: over.log_segment_bytes.or(self.log_segment_bytes),
            log_retention_entries: over.log_retention_entries.or(self.log_retention_entries),
            transfer_rate_bytes_per_s: over
                .transfer_rate_bytes_per_s
                .or(self.transfer_rate_bytes_per_s),
            metrics_addr: over.metrics_addr.or(self.metrics_addr),
        }
    }
}

fn invalid(
    setting: &'static str,
    value: impl ToString,
    reason: impl ToString,
    fix: impl ToString,
) -> ConfigError {
    ConfigError::Invalid {
        setting,
        value: value.to_string(),
        reason: reason.to_string(),
        fix: fix.to_string(),
    }
}

fn socket_addr(setting: &'static str, text: &str) -> Result<SocketAddr, ConfigError> {
    let addr: SocketAddr = text.parse().map_err(|_| {
        invalid(
            setting,
            text,
            "not an \"ip:port\" address",
            "write a numeric address such as \"10.0.0.1:7701\" (host names are not resolved)",
        )
    })?;
    if addr.port() == 0 {
        return Err(invalid(setting, text, "port 0", "give a fixed port"));
    }
    Ok(addr)
}

fn positive(setting: &'static str, value: u64) -> Result<u64, ConfigError> {
    if value == 0 {
        return Err(invalid(
            setting,
            value,
            "must be above zero",
            "give a positive number of milliseconds",
        ));
    }
    Ok(value)
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

    /// Fills defaults into `raw` and validates it. Reads the cluster key file.
    pub fn from_raw(raw: RawConfig) -> Result<Config, ConfigError> {
        let node_id_raw = raw.node_id.ok_or(ConfigError::Missing {
            setting: "node_id",
            fix: "set node_id (1..=7) to this node's id in [members]",
        })?;
        let node_id = NodeId::try_from(node_id_raw)
            .ok()
            .filter(|id| (1..=MEMBERS_MAX as NodeId).contains(id))
            .ok_or_else(|| {
                invalid(
                    "node_id",
                    node_id_raw,
                    format!("node ids are 1..={MEMBERS_MAX}"),
                    format!("use an id from 1 to {MEMBERS_MAX}"),
                )
            })?;

        let members_raw = raw.members.ok_or(ConfigError::Missing {
            setting: "members",
            fix:
                "list every FS node as `id = \"ip:port\"` under [members] (or --member id=ip:port)",
        })?;
        let mut members = BTreeMap::new();
        for (id_text, addr_text) in &members_raw {
            let id = id_text
                .trim()
                .parse::<NodeId>()
                .ok()
                .filter(|id| (1..=MEMBERS_MAX as NodeId).contains(id))
                .ok_or_else(|| {
                    invalid(
                        "members",
                        format!("{id_text} = {addr_text}"),
                        format!("member ids are 1..={MEMBERS_MAX}"),
                        "number the nodes 1, 2, 3, ...",
                    )
                })?;
            let addr = socket_addr("members", addr_text)?;
            if let Some((other, _)) = members.iter().find(|(_, a)| **a == addr) {
                return Err(invalid(
                    "members",
                    addr_text,
                    format!("nodes {other} and {id} share an address"),
                    "give every node its own ip:port",
                ));
            }
            members.insert(id, addr);
        }
        if !CLUSTER_SIZES.contains(&members.len()) {
            return Err(ConfigError::ClusterSize { count: members.len() });
        }
        if !members.contains_key(&node_id) {
            return Err(ConfigError::NodeNotMember {
                node_id,
                members: members.keys().copied().collect(),
            });
        }

        let data_dir = raw.data_dir.ok_or(ConfigError::Missing {
            setting: "data_dir",
            fix: "set data_dir to a directory this node owns alone (created if missing)",
        })?;
        if data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "", "empty path", "set data_dir to a directory path"));
        }
        if data_dir.exists() && !data_dir.is_dir() {
            return Err(invalid(
                "data_dir",
                data_dir.display(),
                "exists and is not a directory",
                "point data_dir at a directory, or remove the file",
            ));
        }

        let multicast_group = match raw.multicast_group {
            None => MULTICAST_GROUP_DEFAULT,
            Some(text) => {
                let group: SocketAddrV4 = text.parse().map_err(|_| {
                    invalid(
                        "multicast_group",
                        &text,
                        "not an IPv4 \"ip:port\"",
                        "e.g. \"239.255.77.1:7700\"",
                    )
                })?;
                if !group.ip().is_multicast() || group.port() == 0 {
                    return Err(invalid(
                        "multicast_group",
                        &text,
                        "not a multicast address (224.0.0.0/4) with a port",
                        "use an administratively scoped group such as \"239.255.77.1:7700\"",
                    ));
                }
                group
            }
        };
        let multicast_interface = match raw.multicast_interface {
            None => MULTICAST_INTERFACE_DEFAULT,
            Some(text) => text.parse().map_err(|_| {
                invalid("multicast_interface", &text, "not an IPv4 address", "give the local address of the interface to use, e.g. \"10.0.0.1\" or \"127.0.0.1\"")
            })?,
        };
        let multicast_ttl = raw.multicast_ttl.unwrap_or(MULTICAST_TTL_DEFAULT);
        if multicast_ttl > 255 {
            return Err(invalid(
                "multicast_ttl",
                multicast_ttl,
                "TTL is one byte",
                "use 0..=255 (1 keeps traffic on the local network)",
            ));
        }
        let unicast_peers = raw
            .unicast_peers
            .unwrap_or_default()
            .iter()
            .map(|text| socket_addr("unicast_peers", text))
            .collect::<Result<Vec<_>, _>>()?;

        let cluster_id = raw.cluster_id.ok_or(ConfigError::Missing {
            setting: "cluster_id",
            fix: "set cluster_id to a number shared by every node and client of this cluster",
        })?;
        let cluster_key_file = raw.cluster_key_file.ok_or(ConfigError::Missing {
            setting: "cluster_key_file",
            fix: "set cluster_key_file to a file of at least 16 random bytes shared by every node and client",
        })?;
        let contents = std::fs::read(&cluster_key_file)
            .map_err(|source| ConfigError::KeyFile { path: cluster_key_file.clone(), source })?;
        let key = cluster_key_from_file_contents(&contents);
        if key.len() < CLUSTER_KEY_BYTES_MIN {
            return Err(ConfigError::KeyTooShort {
                path: cluster_key_file,
                len: key.len(),
                min: CLUSTER_KEY_BYTES_MIN,
            });
        }
        let cluster_key = ClusterKey(key.to_vec());

        let fslive_interval_ms = positive(
            "fslive_interval_ms",
            raw.fslive_interval_ms.unwrap_or(FSLIVE_INTERVAL_MS_DEFAULT),
        )?;
        let fslive_validity_ms = positive(
            "fslive_validity_ms",
            raw.fslive_validity_ms.unwrap_or(FSLIVE_VALIDITY_MS_DEFAULT),
        )?;
        if fslive_validity_ms <= fslive_interval_ms {
            return Err(invalid("fslive_validity_ms", fslive_validity_ms, format!("not above fslive_interval_ms ({fslive_interval_ms}): clients would drop live nodes between two FSLive"), "make it at least twice fslive_interval_ms (default 70000 for 30000)"));
        }
        let lock_ttl_ms = positive("lock_ttl_ms", raw.lock_ttl_ms.unwrap_or(LOCK_TTL_MS_DEFAULT))?;
        let heartbeat_interval_ms = positive(
            "heartbeat_interval_ms",
            raw.heartbeat_interval_ms.unwrap_or(HEARTBEAT_INTERVAL_MS_DEFAULT),
        )?;
        let election_timeout_ms = positive(
            "election_timeout_ms",
            raw.election_timeout_ms.unwrap_or(ELECTION_TIMEOUT_MS_DEFAULT),
        )?;
        if election_timeout_ms < 2 * heartbeat_interval_ms {
            return Err(invalid("election_timeout_ms", election_timeout_ms, format!("below twice heartbeat_interval_ms ({heartbeat_interval_ms}): one late heartbeat would start an election"), "make it several heartbeat intervals (default 500 for 50)"));
        }
        let lease_ms = positive("lease_ms", raw.lease_ms.unwrap_or(LEASE_MS_DEFAULT))?;
        if lease_ms >= election_timeout_ms {
            return Err(invalid("lease_ms", lease_ms, format!("not below election_timeout_ms ({election_timeout_ms}): a new master could be elected while the old lease holds"), "keep lease_ms below election_timeout_ms (default 300 for 500)"));
        }
        let drift_margin_ms = raw.drift_margin_ms.unwrap_or(DRIFT_MARGIN_MS_DEFAULT);
        if drift_margin_ms >= lease_ms {
            return Err(invalid(
                "drift_margin_ms",
                drift_margin_ms,
                format!("not below lease_ms ({lease_ms}): the master would never hold a lease"),
                "keep it a small fraction of lease_ms (default 30 for 300)",
            ));
        }

        let key_bytes_max = raw.key_bytes_max.unwrap_or(protocol::limits::KEY_BYTES_DEFAULT);
        if key_bytes_max > KEY_BYTES_HARD_MAX {
            return Err(ConfigError::OverHardMax {
                setting: "key_bytes_max",
                value: key_bytes_max,
                max: KEY_BYTES_HARD_MAX,
            });
        }
        if key_bytes_max < 2 {
            return Err(invalid(
                "key_bytes_max",
                key_bytes_max,
                "no key fits (keys start with '/')",
                "use at least 64; the default is 4096",
            ));
        }
        let value_bytes_max = raw.value_bytes_max.unwrap_or(protocol::limits::VALUE_BYTES_DEFAULT);
        if value_bytes_max > VALUE_BYTES_HARD_MAX {
            return Err(ConfigError::OverHardMax {
                setting: "value_bytes_max",
                value: value_bytes_max,
                max: VALUE_BYTES_HARD_MAX,
            });
        }
        let log_retention_bytes = raw.log_retention_bytes.unwrap_or(LOG_RETENTION_BYTES_DEFAULT);
        let snapshot_entries = raw.snapshot_entries.unwrap_or(SNAPSHOT_ENTRIES_DEFAULT);
        if snapshot_entries == 0 {
            return Err(invalid(
                "snapshot_entries",
                snapshot_entries,
                "must be above zero",
                format!("give a number of entries (default {SNAPSHOT_ENTRIES_DEFAULT})"),
            ));
        }
        let snapshot_log_bytes = raw.snapshot_log_bytes.unwrap_or(SNAPSHOT_LOG_BYTES_DEFAULT);
        if snapshot_log_bytes == 0 {
            return Err(invalid(
                "snapshot_log_bytes",
                snapshot_log_bytes,
                "must be above zero",
                format!("give a number of bytes (default {SNAPSHOT_LOG_BYTES_DEFAULT})"),
            ));
        }
        let log_segment_bytes = raw.log_segment_bytes.unwrap_or(LOG_SEGMENT_BYTES_DEFAULT);
        if log_segment_bytes < LOG_SEGMENT_BYTES_MIN {
            return Err(invalid(
                "log_segment_bytes",
                log_segment_bytes,
                format!("below the minimum of {LOG_SEGMENT_BYTES_MIN}"),
                format!(
                    "give at least {LOG_SEGMENT_BYTES_MIN} (default {LOG_SEGMENT_BYTES_DEFAULT})"
                ),
            ));
        }
        let log_retention_entries =
            raw.log_retention_entries.unwrap_or(LOG_RETENTION_ENTRIES_DEFAULT);
        let transfer_rate_bytes_per_s =
            raw.transfer_rate_bytes_per_s.unwrap_or(TRANSFER_RATE_BYTES_PER_S_DEFAULT);
        if transfer_rate_bytes_per_s < TRANSFER_RATE_BYTES_PER_S_MIN {
            return Err(invalid(
                "transfer_rate_bytes_per_s",
                transfer_rate_bytes_per_s,
                format!("below the minimum of {TRANSFER_RATE_BYTES_PER_S_MIN}"),
                format!(
                    "give at least {TRANSFER_RATE_BYTES_PER_S_MIN} (default \
                     {TRANSFER_RATE_BYTES_PER_S_DEFAULT})"
                ),
            ));
        }
        let metrics_addr =
            raw.metrics_addr.map(|text| socket_addr("metrics_addr", &text)).transpose()?;

        Ok(Config {
            node_id,
            members,
            data_dir,
            multicast: raw.multicast.unwrap_or(true),
            multicast_group,
            multicast_interface,
            multicast_ttl,
            multicast_loopback: raw.multicast_loopback.unwrap_or(true),
            unicast_peers,
            cluster_key_file,
            cluster_key,
            cluster_id,
            fslive_interval_ms,
            fslive_validity_ms,
            lock_ttl_ms,
            heartbeat_interval_ms,
            election_timeout_ms,
            lease_ms,
            drift_margin_ms,
            key_bytes_max,
            value_bytes_max,
            log_retention_bytes,
            snapshot_entries,
            snapshot_log_bytes,
            log_segment_bytes,
            log_retention_entries,
            transfer_rate_bytes_per_s,
            metrics_addr,
        })
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
        ClusterAuth::new(self.cluster_id, &self.cluster_key.0)
    }
}

/// `shoal-fs` flags. Each also reads the `SHOAL_*` environment variable named in its help; a
/// flag wins over its variable, both win over the file.
#[derive(clap::Parser, Clone, Debug, Default, PartialEq, Eq)]
#[command(name = "shoal-fs", version, about = "Shoal file-server node")]
pub struct Args {
    /// TOML configuration file.
    #[arg(long, env = "SHOAL_CONFIG")]
    pub config: Option<PathBuf>,
    /// This node's id, 1..=7.
    #[arg(long, env = "SHOAL_NODE_ID")]
    pub node_id: Option<i64>,
    /// A member as id=ip:port; repeat for each (replaces the file's [members]).
    #[arg(long = "member", env = "SHOAL_MEMBERS", value_delimiter = ',')]
    pub members: Vec<String>,
    #[arg(long, env = "SHOAL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// true: group traffic by multicast; false: unicast to members and unicast peers.
    #[arg(long, env = "SHOAL_MULTICAST")]
    pub multicast: Option<bool>,
    #[arg(long, env = "SHOAL_MULTICAST_GROUP")]
    pub multicast_group: Option<String>,
    #[arg(long, env = "SHOAL_MULTICAST_INTERFACE")]
    pub multicast_interface: Option<String>,
    #[arg(long, env = "SHOAL_MULTICAST_TTL")]
    pub multicast_ttl: Option<u32>,
    #[arg(long, env = "SHOAL_MULTICAST_LOOPBACK")]
    pub multicast_loopback: Option<bool>,
    /// An extra ip:port receiving group traffic without multicast; repeat for each.
    #[arg(long = "unicast-peer", env = "SHOAL_UNICAST_PEERS", value_delimiter = ',')]
    pub unicast_peers: Vec<String>,
    #[arg(long, env = "SHOAL_CLUSTER_KEY_FILE")]
    pub cluster_key_file: Option<PathBuf>,
    #[arg(long, env = "SHOAL_CLUSTER_ID")]
    pub cluster_id: Option<u32>,
    #[arg(long, env = "SHOAL_FSLIVE_INTERVAL_MS")]
    pub fslive_interval_ms: Option<u64>,
    #[arg(long, env = "SHOAL_FSLIVE_VALIDITY_MS")]
    pub fslive_validity_ms: Option<u64>,
    #[arg(long, env = "SHOAL_LOCK_TTL_MS")]
    pub lock_ttl_ms: Option<u64>,
    #[arg(long, env = "SHOAL_HEARTBEAT_INTERVAL_MS")]
    pub heartbeat_interval_ms: Option<u64>,
    #[arg(long, env = "SHOAL_ELECTION_TIMEOUT_MS")]
    pub election_timeout_ms: Option<u64>,
    #[arg(long, env = "SHOAL_LEASE_MS")]
    pub lease_ms: Option<u64>,
    #[arg(long, env = "SHOAL_DRIFT_MARGIN_MS")]
    pub drift_margin_ms: Option<u64>,
    #[arg(long, env = "SHOAL_KEY_BYTES_MAX")]
    pub key_bytes_max: Option<usize>,
    #[arg(long, env = "SHOAL_VALUE_BYTES_MAX")]
    pub value_bytes_max: Option<usize>,
    #[arg(long, env = "SHOAL_LOG_RETENTION_BYTES")]
    pub log_retention_bytes: Option<u64>,
    /// A snapshot after this many applied entries.
    #[arg(long, env = "SHOAL_SNAPSHOT_ENTRIES")]
    pub snapshot_entries: Option<u64>,
    /// A snapshot after this many bytes of applied entries.
    #[arg(long, env = "SHOAL_SNAPSHOT_LOG_BYTES")]
    pub snapshot_log_bytes: Option<u64>,
    #[arg(long, env = "SHOAL_LOG_SEGMENT_BYTES")]
    pub log_segment_bytes: Option<u64>,
    /// Entries kept in the log below the latest snapshot.
    #[arg(long, env = "SHOAL_LOG_RETENTION_ENTRIES")]
    pub log_retention_entries: Option<u64>,
    /// Pace of a file transfer this node sends.
    #[arg(long, env = "SHOAL_TRANSFER_RATE_BYTES_PER_S")]
    pub transfer_rate_bytes_per_s: Option<u64>,
    #[arg(long, env = "SHOAL_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
}

impl Args {
    /// The settings these flags give, as overrides. `--member` values must be `id=ip:port`.
    pub fn overrides(&self) -> Result<RawConfig, ConfigError> {
        let members = if self.members.is_empty() {
            None
        } else {
            let mut map = BTreeMap::new();
            for item in &self.members {
                let (id, addr) = item.split_once('=').ok_or_else(|| {
                    invalid(
                        "members",
                        item,
                        "not id=ip:port",
                        "write --member 1=10.0.0.1:7701 (or SHOAL_MEMBERS=1=a:p,2=b:p)",
                    )
                })?;
                if map.insert(id.trim().to_string(), addr.trim().to_string()).is_some() {
                    return Err(invalid(
                        "members",
                        item,
                        format!("id {id} given twice"),
                        "give each id once",
                    ));
                }
            }
            Some(map)
        };
        Ok(RawConfig {
            node_id: self.node_id,
            members,
            data_dir: self.data_dir.clone(),
            multicast: self.multicast,
            multicast_group: self.multicast_group.clone(),
            multicast_interface: self.multicast_interface.clone(),
            multicast_ttl: self.multicast_ttl,
            multicast_loopback: self.multicast_loopback,
            unicast_peers: (!self.unicast_peers.is_empty()).then(|| self.unicast_peers.clone()),
            cluster_key_file: self.cluster_key_file.clone(),
            cluster_id: self.cluster_id,
            fslive_interval_ms: self.fslive_interval_ms,
            fslive_validity_ms: self.fslive_validity_ms,
            lock_ttl_ms: self.lock_ttl_ms,
            heartbeat_interval_ms: self.heartbeat_interval_ms,
            election_timeout_ms: self.election_timeout_ms,
            lease_ms: self.lease_ms,
            drift_margin_ms: self.drift_margin_ms,
            key_bytes_max: self.key_bytes_max,
            value_bytes_max: self.value_bytes_max,
            log_retention_bytes: self.log_retention_bytes,
            snapshot_entries: self.snapshot_entries,
            snapshot_log_bytes: self.snapshot_log_bytes,
            log_segment_bytes: self.log_segment_bytes,
            log_retention_entries: self.log_retention_entries,
            transfer_rate_bytes_per_s: self.transfer_rate_bytes_per_s,
            metrics_addr: self.metrics_addr.clone(),
        })
    }

    /// The whole start-up path: file named by `--config`, overridden by flags and environment,
    /// validated.
    pub fn load(&self) -> Result<Config, ConfigError> {
        Config::from_sources(self.config.as_deref(), self.overrides()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::io::Write;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef\n";

    /// A key file and a valid three-node TOML naming it, in a temporary directory.
    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("cluster.key"), KEY).unwrap();
            Fixture { dir }
        }

        fn key_path(&self) -> PathBuf {
            self.dir.path().join("cluster.key")
        }

        fn toml(&self, extra: &str, members: &str) -> String {
            format!(
                "node_id = 2\ndata_dir = {:?}\ncluster_id = 7\ncluster_key_file = {:?}\n{extra}\n[members]\n{members}\n",
                self.dir.path().join("data"),
                self.key_path(),
            )
        }

        fn write(&self, extra: &str, members: &str) -> PathBuf {
            let path = self.dir.path().join("shoal.toml");
            let mut file = std::fs::File::create(&path).unwrap();
            file.write_all(self.toml(extra, members).as_bytes()).unwrap();
            path
        }

        fn load(&self, extra: &str, members: &str) -> Result<Config, ConfigError> {
            Config::from_sources(Some(&self.write(extra, members)), RawConfig::default())
        }
    }

    const THREE: &str = "1 = \"127.0.0.1:7701\"\n2 = \"127.0.0.1:7702\"\n3 = \"127.0.0.1:7703\"";

    /// A minimal file yields the design's defaults, the members by id, and the key without
    /// its trailing newline.
    #[test]
    fn minimal_file_gets_design_defaults() {
        let fx = Fixture::new();
        let config = fx.load("", THREE).unwrap();
        assert_eq!(config.node_id, 2);
        assert_eq!(config.own_addr(), "127.0.0.1:7702".parse().unwrap());
        assert_eq!(config.members.len(), 3);
        assert_eq!(config.quorum(), 2);
        assert!(!config.is_single_node());
        assert_eq!(config.multicast_group, "239.255.77.1:7700".parse().unwrap());
        assert_eq!(config.multicast_interface, Ipv4Addr::LOCALHOST);
        assert_eq!(
            (config.multicast_ttl, config.multicast_loopback, config.multicast),
            (1, true, true)
        );
        assert_eq!((config.fslive_interval_ms, config.fslive_validity_ms), (30_000, 70_000));
        assert_eq!(config.lock_ttl_ms, 5_000);
        assert_eq!((config.key_bytes_max, config.value_bytes_max), (4096, 16 << 20));
        assert_eq!(config.cluster_key.0, &KEY[..KEY.len() - 1]);
        assert_eq!(config.cluster_auth().cluster_id, 7);
        assert_eq!(config.metrics_addr, None);
    }

    /// The key never appears in Debug output (it may end up in logs).
    #[test]
    fn debug_hides_the_key() {
        let config = Fixture::new().load("", THREE).unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        assert!(shown.contains("ClusterKey(32 bytes)"));
    }

    /// Flags override the file, setting by setting; unset flags leave the file's values.
    #[test]
    fn flags_override_file() {
        let _env = super::every_setting::ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let fx = Fixture::new();
        let path = fx.write("lock_ttl_ms = 9000\nmulticast_ttl = 3", THREE);
        let args = Args::try_parse_from([
            "shoal-fs",
            "--config",
            path.to_str().unwrap(),
            "--node-id",
            "3",
            "--multicast-ttl",
            "4",
            "--multicast-loopback",
            "false",
            "--metrics-addr",
            "127.0.0.1:9900",
        ])
        .unwrap();
        let config = args.load().unwrap();
        assert_eq!(config.node_id, 3);
        assert_eq!(config.multicast_ttl, 4);
        assert!(!config.multicast_loopback);
        assert_eq!(config.lock_ttl_ms, 9000, "file value kept when no flag");
        assert_eq!(config.metrics_addr, Some("127.0.0.1:9900".parse().unwrap()));
    }

    /// `--member` flags replace the file's member list; a malformed one names the setting.
    #[test]
    fn member_flags_replace_file_members() {
        let _env = super::every_setting::ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let fx = Fixture::new();
        let path = fx.write("", THREE);
        let args = Args::try_parse_from([
            "shoal-fs",
            "--config",
            path.to_str().unwrap(),
            "--member",
            "2=127.0.0.1:8802",
        ])
        .unwrap();
        let config = args.load().unwrap();
        assert!(config.is_single_node());
        assert_eq!(config.own_addr(), "127.0.0.1:8802".parse().unwrap());

        let bad = Args::try_parse_from(["shoal-fs", "--member", "2:127.0.0.1:8802"]).unwrap();
        assert_eq!(bad.overrides().unwrap_err().setting(), Some("members"));
    }

    /// The environment variable of a setting is read when its flag is absent.
    #[test]
    fn environment_variables_are_read() {
        let _env = super::every_setting::ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        // Only this test sets or reads SHOAL_FSLIVE_INTERVAL_MS.
        std::env::set_var("SHOAL_FSLIVE_INTERVAL_MS", "12345");
        let args = Args::try_parse_from(["shoal-fs"]).unwrap();
        std::env::remove_var("SHOAL_FSLIVE_INTERVAL_MS");
        assert_eq!(args.fslive_interval_ms, Some(12345));
        let flag = Args::try_parse_from(["shoal-fs", "--fslive-interval-ms", "7"]).unwrap();
        assert_eq!(flag.fslive_interval_ms, Some(7));
    }

    /// Node ids outside 1..=7 are refused, naming node_id.
    #[test]
    fn bad_node_id_refused() {
        let fx = Fixture::new();
        for id in ["0", "8", "-1", "300"] {
            let over = RawConfig { node_id: Some(id.parse().unwrap()), ..RawConfig::default() };
            let err = Config::from_sources(Some(&fx.write("", THREE)), over).unwrap_err();
            assert!(matches!(err, ConfigError::Invalid { setting: "node_id", .. }), "{id}: {err}");
        }
    }

    /// A node id absent from the members is refused with the listed ids and the fix.
    #[test]
    fn node_not_in_members_refused() {
        let fx = Fixture::new();
        let members = "1 = \"127.0.0.1:7701\"\n3 = \"127.0.0.1:7703\"\n4 = \"127.0.0.1:7704\"";
        let err = fx.load("", members).unwrap_err();
        assert!(
            matches!(&err, ConfigError::NodeNotMember { node_id: 2, members } if members == &[1, 3, 4])
        );
        assert!(err.to_string().contains("fix: add `2 = \"ip:port\"`"), "{err}");
    }

    /// Member counts other than 1, 3, 5, 7 are refused; 1 is the single-node dev mode.
    #[test]
    fn cluster_size_must_be_1_3_5_or_7() {
        let fx = Fixture::new();
        let two = "1 = \"127.0.0.1:7701\"\n2 = \"127.0.0.1:7702\"";
        assert!(matches!(fx.load("", two), Err(ConfigError::ClusterSize { count: 2 })));
        let four = format!("{THREE}\n4 = \"127.0.0.1:7704\"");
        assert!(matches!(fx.load("", &four), Err(ConfigError::ClusterSize { count: 4 })));
        let one = fx.load("", "2 = \"127.0.0.1:7702\"").unwrap();
        assert!(one.is_single_node());
        assert_eq!(one.quorum(), 1);
        let five: String = (1..=5).map(|i| format!("{i} = \"127.0.0.1:770{i}\"\n")).collect();
        assert_eq!(fx.load("", &five).unwrap().quorum(), 3);
    }

    /// Bad addresses are refused, each naming its setting: a member, a shared member address,
    /// a non-multicast group, an interface, a unicast peer, the metrics address.
    #[test]
    fn bad_addresses_refused() {
        let fx = Fixture::new();
        let cases = [
            (
                "",
                "1 = \"127.0.0.1:7701\"\n2 = \"localhost:7702\"\n3 = \"127.0.0.1:7703\"",
                "members",
            ),
            ("", "1 = \"127.0.0.1:7701\"\n2 = \"127.0.0.1\"\n3 = \"127.0.0.1:7703\"", "members"),
            (
                "",
                "1 = \"127.0.0.1:7701\"\n2 = \"127.0.0.1:7701\"\n3 = \"127.0.0.1:7703\"",
                "members",
            ),
            (
                "",
                "1 = \"127.0.0.1:7701\"\n9 = \"127.0.0.1:7702\"\n2 = \"127.0.0.1:7703\"",
                "members",
            ),
            ("multicast_group = \"10.0.0.1:7700\"", THREE, "multicast_group"),
            ("multicast_group = \"239.255.77.1\"", THREE, "multicast_group"),
            ("multicast_interface = \"eth0\"", THREE, "multicast_interface"),
            ("multicast_ttl = 256", THREE, "multicast_ttl"),
            ("unicast_peers = [\"127.0.0.1:7800\", \"nope\"]", THREE, "unicast_peers"),
            ("metrics_addr = \"127.0.0.1:0\"", THREE, "metrics_addr"),
        ];
        for (extra, members, setting) in cases {
            let err = fx.load(extra, members).unwrap_err();
            assert!(
                matches!(err, ConfigError::Invalid { setting: s, .. } if s == setting),
                "{extra} / {members}: {err}"
            );
        }
    }

    /// A missing or unreadable key file is refused with its path and how to make one; a short
    /// key (after trimming whitespace) is refused too.
    #[test]
    fn key_file_problems_refused() {
        let fx = Fixture::new();
        std::fs::remove_file(fx.key_path()).unwrap();
        let err = fx.load("", THREE).unwrap_err();
        assert!(matches!(err, ConfigError::KeyFile { .. }), "{err}");
        assert!(err.to_string().contains("head -c 32 /dev/urandom"), "{err}");

        std::fs::create_dir(fx.key_path()).unwrap(); // a directory is not a readable key
        assert!(matches!(fx.load("", THREE), Err(ConfigError::KeyFile { .. })));
        std::fs::remove_dir(fx.key_path()).unwrap();

        std::fs::write(fx.key_path(), b"short key      \n").unwrap();
        assert!(matches!(
            fx.load("", THREE),
            Err(ConfigError::KeyTooShort { len: 9, min: 16, .. })
        ));
    }

    /// Key and value limits above the protocol's hard maxima are refused with the maximum.
    #[test]
    fn limits_over_hard_max_refused() {
        let fx = Fixture::new();
        let err =
            fx.load(&format!("key_bytes_max = {}", KEY_BYTES_HARD_MAX + 1), THREE).unwrap_err();
        assert!(matches!(
            err,
            ConfigError::OverHardMax { setting: "key_bytes_max", max: KEY_BYTES_HARD_MAX, .. }
        ));
        let err =
            fx.load(&format!("value_bytes_max = {}", VALUE_BYTES_HARD_MAX + 1), THREE).unwrap_err();
        assert!(matches!(
            err,
            ConfigError::OverHardMax { setting: "value_bytes_max", max: VALUE_BYTES_HARD_MAX, .. }
        ));
        let at_max = fx.load(&format!("key_bytes_max = {KEY_BYTES_HARD_MAX}\nvalue_bytes_max = {VALUE_BYTES_HARD_MAX}"), THREE).unwrap();
        assert_eq!(
            (at_max.key_bytes_max, at_max.value_bytes_max),
            (KEY_BYTES_HARD_MAX, VALUE_BYTES_HARD_MAX)
        );
    }

    /// An unknown key in the file is refused, and the message names it (a typo must not be
    /// silently ignored).
    #[test]
    fn unknown_toml_key_named() {
        let fx = Fixture::new();
        let err = fx.load("lock_tll_ms = 100", THREE).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
        assert!(err.to_string().contains("lock_tll_ms"), "{err}");
    }

    /// Timing settings that contradict each other are refused, naming the later setting.
    #[test]
    fn inconsistent_timings_refused() {
        let fx = Fixture::new();
        let cases = [
            ("fslive_validity_ms = 30000", "fslive_validity_ms"),
            ("lock_ttl_ms = 0", "lock_ttl_ms"),
            ("heartbeat_interval_ms = 300", "election_timeout_ms"),
            ("lease_ms = 500", "lease_ms"),
            ("drift_margin_ms = 300", "drift_margin_ms"),
        ];
        for (extra, setting) in cases {
            let err = fx.load(extra, THREE).unwrap_err();
            assert_eq!(err.setting(), Some(setting), "{extra}: {err}");
        }
    }

    /// Snapshot, log and transfer settings: defaults when absent, taken from the file, and
    /// refused by name when they cannot work.
    #[test]
    fn snapshot_and_transfer_settings() {
        let fx = Fixture::new();
        let default = fx.load("", THREE).unwrap();
        assert_eq!(default.snapshot_entries, SNAPSHOT_ENTRIES_DEFAULT);
        assert_eq!(default.log_retention_entries, LOG_RETENTION_ENTRIES_DEFAULT);
        assert_eq!(default.transfer_rate_bytes_per_s, TRANSFER_RATE_BYTES_PER_S_DEFAULT);
        let set = fx
            .load(
                "snapshot_entries = 300\nsnapshot_log_bytes = 1000\nlog_segment_bytes = \
                 65536\nlog_retention_entries = 10\ntransfer_rate_bytes_per_s = 65536",
                THREE,
            )
            .unwrap();
        assert_eq!(
            (
                set.snapshot_entries,
                set.snapshot_log_bytes,
                set.log_segment_bytes,
                set.log_retention_entries,
                set.transfer_rate_bytes_per_s
            ),
            (300, 1000, 65536, 10, 65536)
        );
        let cases = [
            ("snapshot_entries = 0", "snapshot_entries"),
            ("snapshot_log_bytes = 0", "snapshot_log_bytes"),
            ("log_segment_bytes = 100", "log_segment_bytes"),
            ("transfer_rate_bytes_per_s = 1000", "transfer_rate_bytes_per_s"),
        ];
        for (extra, setting) in cases {
            let err = fx.load(extra, THREE).unwrap_err();
            assert_eq!(err.setting(), Some(setting), "{extra}: {err}");
        }
    }

    /// Required settings that are absent are refused by name, with what to set.
    #[test]
    fn missing_settings_named() {
        let fx = Fixture::new();
        let full = RawConfig::from_toml(&fx.toml("", THREE), Path::new("x")).unwrap();
        assert!(Config::from_raw(full.clone()).is_ok());
        type Clear = fn(&mut RawConfig);
        let cases: [(&str, Clear); 5] = [
            ("node_id", |r| r.node_id = None),
            ("members", |r| r.members = None),
            ("data_dir", |r| r.data_dir = None),
            ("cluster_id", |r| r.cluster_id = None),
            ("cluster_key_file", |r| r.cluster_key_file = None),
        ];
        for (setting, clear) in cases {
            let mut raw = full.clone();
            clear(&mut raw);
            let err = Config::from_raw(raw).unwrap_err();
            assert!(
                matches!(err, ConfigError::Missing { setting: s, .. } if s == setting),
                "{err}"
            );
        }
    }

    /// A data_dir that exists as a file is refused; a missing one is fine (created later).
    #[test]
    fn data_dir_must_not_be_a_file() {
        let fx = Fixture::new();
        std::fs::write(fx.dir.path().join("data"), b"").unwrap();
        let err = fx.load("", THREE).unwrap_err();
        assert_eq!(err.setting(), Some("data_dir"), "{err}");
    }

    /// An unreadable config file is an error naming the path.
    #[test]
    fn missing_config_file_named() {
        let err =
            Config::from_sources(Some(Path::new("/nonexistent/shoal.toml")), RawConfig::default())
                .unwrap_err();
        assert!(matches!(err, ConfigError::ReadFile { .. }));
        assert!(err.to_string().contains("/nonexistent/shoal.toml"));
    }
}

/// Tests that pin, for every setting, its flag, environment variable and TOML key, the
/// precedence between them, its place in `--help`, and that a bad value names it. The table
/// below is written out by hand on purpose: it is an independent witness of the names the
/// settings definition generates.
#[cfg(test)]
mod every_setting {
    use super::*;
    use clap::{CommandFactory, Parser};
    use std::sync::Mutex;

    /// Serialises the tests of this module that set `SHOAL_*` variables or parse flags (clap
    /// reads the environment, which is process-wide).
    pub(super) static ENV_LOCK: Mutex<()> = Mutex::new(());

    /// A value as a flag or environment variable gives it (`cli`) and as a TOML value (`toml`).
    /// `{dir}` stands for the fixture's directory.
    #[derive(Clone)]
    struct Value {
        cli: String,
        toml: String,
    }

    /// A number or boolean: the same text in both forms.
    fn plain(text: &str) -> Value {
        Value { cli: text.into(), toml: text.into() }
    }

    /// A string: quoted in TOML.
    fn quoted(text: &str) -> Value {
        Value { cli: text.into(), toml: format!("{text:?}") }
    }

    /// A list of strings: comma-separated on the command line, an array in TOML.
    fn list(items: &[&str]) -> Value {
        Value { cli: items.join(","), toml: format!("{items:?}") }
    }

    /// Members: `id=ip:port,...` on the command line, an inline table in TOML.
    fn members(items: &[(u8, &str)]) -> Value {
        let cli: Vec<String> = items.iter().map(|(id, addr)| format!("{id}={addr}")).collect();
        let toml: Vec<String> = items.iter().map(|(id, addr)| format!("{id} = {addr:?}")).collect();
        Value { cli: cli.join(","), toml: format!("{{ {} }}", toml.join(", ")) }
    }

    /// One setting: its TOML key, flag and variable; two valid values `a` and `b` that differ
    /// from each other and `a` from what the base file gives; a value refused.
    struct Case {
        key: &'static str,
        flag: &'static str,
        env: &'static str,
        a: Value,
        b: Value,
        bad: Value,
    }

    fn case(
        key: &'static str,
        flag: &'static str,
        env: &'static str,
        a: Value,
        b: Value,
        bad: Value,
    ) -> Case {
        Case { key, flag, env, a, b, bad }
    }

    fn cases() -> Vec<Case> {
        vec![
            case("node_id", "--node-id", "SHOAL_NODE_ID", plain("3"), plain("1"), plain("8")),
            case(
                "members",
                "--member",
                "SHOAL_MEMBERS",
                members(&[(2, "127.0.0.1:8802")]),
                members(&[(1, "127.0.0.1:9901"), (2, "127.0.0.1:9902"), (3, "127.0.0.1:9903")]),
                members(&[(1, "127.0.0.1:9901"), (2, "localhost:9902"), (3, "127.0.0.1:9903")]),
            ),
            case(
                "data_dir",
                "--data-dir",
                "SHOAL_DATA_DIR",
                quoted("{dir}/a"),
                quoted("{dir}/b"),
                quoted("{dir}/cluster.key"),
            ),
            case(
                "multicast",
                "--multicast",
                "SHOAL_MULTICAST",
                plain("false"),
                plain("true"),
                quoted("maybe"),
            ),
            case(
                "multicast_group",
                "--multicast-group",
                "SHOAL_MULTICAST_GROUP",
                quoted("239.1.2.3:7000"),
                quoted("239.1.2.4:7001"),
                quoted("10.0.0.1:7700"),
            ),
            case(
                "multicast_interface",
                "--multicast-interface",
                "SHOAL_MULTICAST_INTERFACE",
                quoted("127.0.0.2"),
                quoted("127.0.0.3"),
                quoted("eth0"),
            ),
            case(
                "multicast_ttl",
                "--multicast-ttl",
                "SHOAL_MULTICAST_TTL",
                plain("3"),
                plain("4"),
                plain("256"),
            ),
            case(
                "multicast_loopback",
                "--multicast-loopback",
                "SHOAL_MULTICAST_LOOPBACK",
                plain("false"),
                plain("true"),
                quoted("maybe"),
            ),
            case(
                "unicast_peers",
                "--unicast-peer",
                "SHOAL_UNICAST_PEERS",
                list(&["127.0.0.1:7800"]),
                list(&["127.0.0.1:7801", "127.0.0.1:7802"]),
                list(&["127.0.0.1:7800", "nope"]),
            ),
            case(
                "cluster_key_file",
                "--cluster-key-file",
                "SHOAL_CLUSTER_KEY_FILE",
                quoted("{dir}/a.key"),
                quoted("{dir}/b.key"),
                quoted("{dir}/missing.key"),
            ),
            case(
                "cluster_id",
                "--cluster-id",
                "SHOAL_CLUSTER_ID",
                plain("8"),
                plain("9"),
                quoted("x"),
            ),
            case(
                "fslive_interval_ms",
                "--fslive-interval-ms",
                "SHOAL_FSLIVE_INTERVAL_MS",
                plain("20000"),
                plain("25000"),
                plain("0"),
            ),
            case(
                "fslive_validity_ms",
                "--fslive-validity-ms",
                "SHOAL_FSLIVE_VALIDITY_MS",
                plain("80000"),
                plain("90000"),
                plain("30000"),
            ),
            case(
                "lock_ttl_ms",
                "--lock-ttl-ms",
                "SHOAL_LOCK_TTL_MS",
                plain("9000"),
                plain("8000"),
                plain("0"),
            ),
            case(
                "heartbeat_interval_ms",
                "--heartbeat-interval-ms",
                "SHOAL_HEARTBEAT_INTERVAL_MS",
                plain("40"),
                plain("30"),
                plain("0"),
            ),
            case(
                "election_timeout_ms",
                "--election-timeout-ms",
                "SHOAL_ELECTION_TIMEOUT_MS",
                plain("600"),
                plain("700"),
                plain("60"),
            ),
            case(
                "lease_ms",
                "--lease-ms",
                "SHOAL_LEASE_MS",
                plain("200"),
                plain("250"),
                plain("500"),
            ),
            case(
                "drift_margin_ms",
                "--drift-margin-ms",
                "SHOAL_DRIFT_MARGIN_MS",
                plain("20"),
                plain("10"),
                plain("300"),
            ),
            case(
                "key_bytes_max",
                "--key-bytes-max",
                "SHOAL_KEY_BYTES_MAX",
                plain("1024"),
                plain("2048"),
                plain("1"),
            ),
            case(
                "value_bytes_max",
                "--value-bytes-max",
                "SHOAL_VALUE_BYTES_MAX",
                plain("1000000"),
                plain("2000000"),
                plain(&(VALUE_BYTES_HARD_MAX + 1).to_string()),
            ),
            case(
                "log_retention_bytes",
                "--log-retention-bytes",
                "SHOAL_LOG_RETENTION_BYTES",
                plain("1000"),
                plain("2000"),
                quoted("lots"),
            ),
            case(
                "snapshot_entries",
                "--snapshot-entries",
                "SHOAL_SNAPSHOT_ENTRIES",
                plain("300"),
                plain("400"),
                plain("0"),
            ),
            case(
                "snapshot_log_bytes",
                "--snapshot-log-bytes",
                "SHOAL_SNAPSHOT_LOG_BYTES",
                plain("1000"),
                plain("2000"),
                plain("0"),
            ),
            case(
                "log_segment_bytes",
                "--log-segment-bytes",
                "SHOAL_LOG_SEGMENT_BYTES",
                plain("65536"),
                plain("131072"),
                plain("100"),
            ),
            case(
                "log_retention_entries",
                "--log-retention-entries",
                "SHOAL_LOG_RETENTION_ENTRIES",
                plain("10"),
                plain("20"),
                quoted("lots"),
            ),
            case(
                "transfer_rate_bytes_per_s",
                "--transfer-rate-bytes-per-s",
                "SHOAL_TRANSFER_RATE_BYTES_PER_S",
                plain("65536"),
                plain("100000"),
                plain("1000"),
            ),
            case(
                "metrics_addr",
                "--metrics-addr",
                "SHOAL_METRICS_ADDR",
                quoted("127.0.0.1:9900"),
                quoted("127.0.0.1:9901"),
                quoted("127.0.0.1:0"),
            ),
        ]
    }

    /// A directory with three key files (the base one, `a.key`, `b.key`) and a config file
    /// written per load: the base settings, with one key replaced.
    struct Fixture {
        dir: tempfile::TempDir,
    }

    /// Where a value is given.
    #[derive(Clone, Copy, Debug)]
    enum Source {
        File,
        Env,
        Flag,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            for (name, key) in [("cluster.key", "k"), ("a.key", "a"), ("b.key", "b")] {
                std::fs::write(dir.path().join(name), key.repeat(32)).unwrap();
            }
            Fixture { dir }
        }

        fn expand(&self, text: &str) -> String {
            text.replace("{dir}", self.dir.path().to_str().unwrap())
        }

        /// Loads the base file with `given` applied: each (case, value, source).
        fn load(&self, given: &[(&Case, &Value, Source)]) -> Result<Config, String> {
            let mut file: Vec<(&str, String)> = vec![
                ("node_id", "2".into()),
                ("data_dir", format!("{:?}", self.dir.path().join("data"))),
                ("cluster_id", "7".into()),
                ("cluster_key_file", format!("{:?}", self.dir.path().join("cluster.key"))),
                (
                    "members",
                    members(&[(1, "127.0.0.1:7701"), (2, "127.0.0.1:7702"), (3, "127.0.0.1:7703")])
                        .toml,
                ),
            ];
            let mut argv = vec!["shoal-fs".to_string(), "--config".into()];
            let path = self.dir.path().join("shoal.toml");
            argv.push(path.to_str().unwrap().into());
            let mut env = Vec::new();
            for (case, value, source) in given {
                match source {
                    Source::File => {
                        file.retain(|(key, _)| key != &case.key);
                        file.push((case.key, self.expand(&value.toml)));
                    }
                    Source::Env => env.push((case.env, self.expand(&value.cli))),
                    Source::Flag => {
                        argv.push(case.flag.into());
                        argv.push(self.expand(&value.cli));
                    }
                }
            }
            let text: String =
                file.iter().map(|(key, value)| format!("{key} = {value}\n")).collect();
            std::fs::write(&path, text).unwrap();
            let _guard = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            for (name, value) in &env {
                std::env::set_var(name, value);
            }
            let parsed = Args::try_parse_from(&argv);
            for (name, _) in &env {
                std::env::remove_var(name);
            }
            let args = parsed.map_err(|e| e.to_string())?;
            args.load().map_err(|e| match e.setting() {
                Some(setting) => format!("setting={setting}: {e}"),
                None => e.to_string(),
            })
        }
    }

    /// Each setting's flag, variable and TOML key set it, all three to the same configuration,
    /// and one that differs from the base file's.
    #[test]
    fn flag_env_and_file_each_set_every_setting() {
        let fx = Fixture::new();
        let base = fx.load(&[]).unwrap();
        for case in cases() {
            let by_file = fx.load(&[(&case, &case.a, Source::File)]).unwrap();
            let by_env = fx.load(&[(&case, &case.a, Source::Env)]).unwrap();
            let by_flag = fx.load(&[(&case, &case.a, Source::Flag)]).unwrap();
            assert_ne!(by_file, base, "{}: the file's value had no effect", case.key);
            assert_eq!(by_env, by_file, "{}: env and file disagree", case.key);
            assert_eq!(by_flag, by_file, "{}: flag and file disagree", case.key);
            let b = fx.load(&[(&case, &case.b, Source::File)]).unwrap();
            assert_ne!(b, by_file, "{}: a and b give the same configuration", case.key);
        }
    }

    /// Precedence, setting by setting: flag over environment over file over default.
    #[test]
    fn flag_beats_env_beats_file() {
        let fx = Fixture::new();
        for case in cases() {
            let (a, b) = (&case.a, &case.b);
            let want_b = fx.load(&[(&case, b, Source::File)]).unwrap();
            for (low, high) in [
                (Source::File, Source::Env),
                (Source::Env, Source::Flag),
                (Source::File, Source::Flag),
            ] {
                let got = fx.load(&[(&case, a, low), (&case, b, high)]).unwrap();
                assert_eq!(got, want_b, "{}: {high:?} does not win over {low:?}", case.key);
            }
            let all = fx
                .load(&[
                    (&case, a, Source::File),
                    (&case, a, Source::Env),
                    (&case, b, Source::Flag),
                ])
                .unwrap();
            assert_eq!(all, want_b, "{}: the flag does not win over env and file", case.key);
        }
    }

    /// A bad value, from any source, is refused with an error naming the setting (its key, or
    /// for a value the flag parser refuses, its flag), and nothing is created.
    #[test]
    fn bad_value_names_the_setting() {
        let fx = Fixture::new();
        for case in cases() {
            for source in [Source::File, Source::Env, Source::Flag] {
                let err = fx.load(&[(&case, &case.bad, source)]).unwrap_err();
                let named = err.contains(&format!("setting={}:", case.key))
                    || (matches!(source, Source::File) && err.contains(case.key))
                    || (!matches!(source, Source::File) && err.contains(case.flag));
                assert!(named, "{} from {source:?}: error does not name it: {err}", case.key);
                assert!(
                    !fx.dir.path().join("data").exists(),
                    "{}: a refused config created data_dir",
                    case.key
                );
            }
        }
    }

    /// `--help` lists every setting with its flag and its environment variable.
    #[test]
    fn help_lists_every_setting() {
        let help = Args::command().render_long_help().to_string();
        for case in cases() {
            assert!(help.contains(case.flag), "--help lacks {}:\n{help}", case.flag);
            assert!(
                help.contains(&format!("[env: {}=", case.env)),
                "--help lacks {}:\n{help}",
                case.env
            );
        }
        assert!(help.contains("--config") && help.contains("[env: SHOAL_CONFIG="), "{help}");
    }

    /// Every TOML key the file accepts is in the table above (a setting added without being
    /// pinned here fails), and the defaults documented at the top of the module parse.
    #[test]
    fn table_covers_every_file_key() {
        let fx = Fixture::new();
        for case in cases() {
            let text = format!("{} = {}\n", case.key, fx.expand(&case.a.toml));
            RawConfig::from_toml(&text, Path::new("x"))
                .unwrap_or_else(|e| panic!("{}: {e}", case.key));
        }
        let full = RawConfig::from_toml(
            &cases()
                .iter()
                .map(|c| format!("{} = {}\n", c.key, fx.expand(&c.a.toml)))
                .collect::<String>(),
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(full.clone().overridden_by(RawConfig::default()), full);
        assert_eq!(RawConfig::default().overridden_by(full.clone()), full);
        let debug = format!("{:?}", RawConfig::default());
        let fields = debug.matches(": None").count();
        assert_eq!(fields, cases().len(), "RawConfig has settings the table lacks: {debug}");
    }
}
