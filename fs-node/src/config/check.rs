//! What a setting's value must be: the `parse` step of each setting (a given value, from its
//! TOML form to its [`Config`](super::Config) form), its `check` (on the value, given or
//! default), and the `rule`s between settings. Each refusal names the setting and says how to
//! fix it; the first refusal, in the order of the settings table, is the one reported.

use super::ClusterKey;
use super::{ConfigError, LOG_SEGMENT_BYTES_DEFAULT, LOG_SEGMENT_BYTES_MIN};
use super::{CLUSTER_SIZES, TRANSFER_RATE_BYTES_PER_S_DEFAULT, TRANSFER_RATE_BYTES_PER_S_MIN};
use super::{SNAPSHOT_ENTRIES_DEFAULT, SNAPSHOT_LOG_BYTES_DEFAULT};
use protocol::header::{cluster_key_from_file_contents, CLUSTER_KEY_BYTES_MIN};
use protocol::limits::{KEY_BYTES_HARD_MAX, MEMBERS_MAX, VALUE_BYTES_HARD_MAX};
use protocol::NodeId;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};

/// Result of a parse or check step.
type Checked<T> = Result<T, ConfigError>;

pub(super) fn invalid(
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

// ---- parse: a given value, from its TOML type to its Config type ----

/// The value as given (its TOML type is its Config type).
pub(super) fn same<T>(_setting: &'static str, value: T) -> Checked<T> {
    Ok(value)
}

pub(super) fn socket_addr(setting: &'static str, text: &str) -> Checked<SocketAddr> {
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

pub(super) fn some_socket_addr(setting: &'static str, text: String) -> Checked<Option<SocketAddr>> {
    socket_addr(setting, &text).map(Some)
}

pub(super) fn socket_addrs(setting: &'static str, texts: Vec<String>) -> Checked<Vec<SocketAddr>> {
    texts.iter().map(|text| socket_addr(setting, text)).collect()
}

pub(super) fn node_id(setting: &'static str, raw: i64) -> Checked<NodeId> {
    NodeId::try_from(raw).ok().filter(|id| (1..=MEMBERS_MAX as NodeId).contains(id)).ok_or_else(
        || {
            invalid(
                setting,
                raw,
                format!("node ids are 1..={MEMBERS_MAX}"),
                format!("use an id from 1 to {MEMBERS_MAX}"),
            )
        },
    )
}

/// `id = "ip:port"` pairs: ids 1..=7, numeric addresses with a port, no address twice.
pub(super) fn members(
    setting: &'static str,
    raw: BTreeMap<String, String>,
) -> Checked<BTreeMap<NodeId, SocketAddr>> {
    let mut members = BTreeMap::new();
    for (id_text, addr_text) in &raw {
        let id = id_text
            .trim()
            .parse::<NodeId>()
            .ok()
            .filter(|id| (1..=MEMBERS_MAX as NodeId).contains(id))
            .ok_or_else(|| {
                invalid(
                    setting,
                    format!("{id_text} = {addr_text}"),
                    format!("member ids are 1..={MEMBERS_MAX}"),
                    "number the nodes 1, 2, 3, ...",
                )
            })?;
        let addr = socket_addr(setting, addr_text)?;
        if let Some((other, _)) = members.iter().find(|(_, a)| **a == addr) {
            return Err(invalid(
                setting,
                addr_text,
                format!("nodes {other} and {id} share an address"),
                "give every node its own ip:port",
            ));
        }
        members.insert(id, addr);
    }
    Ok(members)
}

pub(super) fn multicast_group(setting: &'static str, text: String) -> Checked<SocketAddrV4> {
    let group: SocketAddrV4 = text.parse().map_err(|_| {
        invalid(setting, &text, "not an IPv4 \"ip:port\"", "e.g. \"239.255.77.1:7700\"")
    })?;
    if !group.ip().is_multicast() || group.port() == 0 {
        return Err(invalid(
            setting,
            &text,
            "not a multicast address (224.0.0.0/4) with a port",
            "use an administratively scoped group such as \"239.255.77.1:7700\"",
        ));
    }
    Ok(group)
}

pub(super) fn ipv4(setting: &'static str, text: String) -> Checked<Ipv4Addr> {
    text.parse().map_err(|_| {
        invalid(
            setting,
            &text,
            "not an IPv4 address",
            "give the local address of the interface to use, e.g. \"10.0.0.1\" or \"127.0.0.1\"",
        )
    })
}

// ---- check: a value (given or default) on its own ----

pub(super) fn data_dir(setting: &'static str, dir: &Path) -> Checked<()> {
    if dir.as_os_str().is_empty() {
        return Err(invalid(setting, "", "empty path", "set data_dir to a directory path"));
    }
    if dir.exists() && !dir.is_dir() {
        return Err(invalid(
            setting,
            dir.display(),
            "exists and is not a directory",
            "point data_dir at a directory, or remove the file",
        ));
    }
    Ok(())
}

pub(super) fn ttl(setting: &'static str, ttl: &u32) -> Checked<()> {
    if *ttl > 255 {
        return Err(invalid(
            setting,
            ttl,
            "TTL is one byte",
            "use 0..=255 (1 keeps traffic on the local network)",
        ));
    }
    Ok(())
}

/// A duration that must be above zero.
pub(super) fn positive_ms(setting: &'static str, value: &u64) -> Checked<()> {
    above_zero(setting, *value, "give a positive number of milliseconds".into())
}

pub(super) fn key_bytes_max(setting: &'static str, value: &usize) -> Checked<()> {
    at_most_hard_max(setting, *value, KEY_BYTES_HARD_MAX)?;
    if *value < 2 {
        return Err(invalid(
            setting,
            value,
            "no key fits (keys start with '/')",
            "use at least 64; the default is 4096",
        ));
    }
    Ok(())
}

pub(super) fn value_bytes_max(setting: &'static str, value: &usize) -> Checked<()> {
    at_most_hard_max(setting, *value, VALUE_BYTES_HARD_MAX)
}

fn at_most_hard_max(setting: &'static str, value: usize, max: usize) -> Checked<()> {
    if value > max {
        return Err(ConfigError::OverHardMax { setting, value, max });
    }
    Ok(())
}

pub(super) fn snapshot_entries(setting: &'static str, value: &u64) -> Checked<()> {
    above_zero(
        setting,
        *value,
        format!("give a number of entries (default {SNAPSHOT_ENTRIES_DEFAULT})"),
    )
}

pub(super) fn snapshot_log_bytes(setting: &'static str, value: &u64) -> Checked<()> {
    above_zero(
        setting,
        *value,
        format!("give a number of bytes (default {SNAPSHOT_LOG_BYTES_DEFAULT})"),
    )
}

fn above_zero(setting: &'static str, value: u64, fix: String) -> Checked<()> {
    if value == 0 {
        return Err(invalid(setting, value, "must be above zero", fix));
    }
    Ok(())
}

pub(super) fn log_segment_bytes(setting: &'static str, value: &u64) -> Checked<()> {
    at_least(setting, *value, LOG_SEGMENT_BYTES_MIN, LOG_SEGMENT_BYTES_DEFAULT)
}

pub(super) fn transfer_rate(setting: &'static str, value: &u64) -> Checked<()> {
    at_least(setting, *value, TRANSFER_RATE_BYTES_PER_S_MIN, TRANSFER_RATE_BYTES_PER_S_DEFAULT)
}

fn at_least(setting: &'static str, value: u64, min: u64, default: u64) -> Checked<()> {
    if value < min {
        return Err(invalid(
            setting,
            value,
            format!("below the minimum of {min}"),
            format!("give at least {min} (default {default})"),
        ));
    }
    Ok(())
}

// ---- rules between settings, named by the later one ----

/// 1, 3, 5 or 7 members, among them this node.
pub(super) fn members_hold_node(
    node_id: NodeId,
    members: &BTreeMap<NodeId, SocketAddr>,
) -> Checked<()> {
    if !CLUSTER_SIZES.contains(&members.len()) {
        return Err(ConfigError::ClusterSize { count: members.len() });
    }
    if !members.contains_key(&node_id) {
        return Err(ConfigError::NodeNotMember {
            node_id,
            members: members.keys().copied().collect(),
        });
    }
    Ok(())
}

pub(super) fn validity_above_interval(validity_ms: u64, interval_ms: u64) -> Checked<()> {
    if validity_ms <= interval_ms {
        return Err(invalid(
            "fslive_validity_ms",
            validity_ms,
            format!(
                "not above fslive_interval_ms ({interval_ms}): clients would drop live nodes \
                 between two FSLive"
            ),
            "make it at least twice fslive_interval_ms (default 70000 for 30000)",
        ));
    }
    Ok(())
}

pub(super) fn election_after_heartbeats(election_ms: u64, heartbeat_ms: u64) -> Checked<()> {
    if election_ms < 2 * heartbeat_ms {
        return Err(invalid(
            "election_timeout_ms",
            election_ms,
            format!(
                "below twice heartbeat_interval_ms ({heartbeat_ms}): one late heartbeat would \
                 start an election"
            ),
            "make it several heartbeat intervals (default 500 for 50)",
        ));
    }
    Ok(())
}

pub(super) fn lease_below_election(lease_ms: u64, election_ms: u64) -> Checked<()> {
    if lease_ms >= election_ms {
        return Err(invalid(
            "lease_ms",
            lease_ms,
            format!(
                "not below election_timeout_ms ({election_ms}): a new master could be elected \
                 while the old lease holds"
            ),
            "keep lease_ms below election_timeout_ms (default 300 for 500)",
        ));
    }
    Ok(())
}

pub(super) fn drift_below_lease(drift_ms: u64, lease_ms: u64) -> Checked<()> {
    if drift_ms >= lease_ms {
        return Err(invalid(
            "drift_margin_ms",
            drift_ms,
            format!("not below lease_ms ({lease_ms}): the master would never hold a lease"),
            "keep it a small fraction of lease_ms (default 30 for 300)",
        ));
    }
    Ok(())
}

/// The key in `path`, trimmed of surrounding whitespace, at least the protocol's minimum.
pub(super) fn read_cluster_key(path: &Path) -> Checked<ClusterKey> {
    read_key("cluster_key_file", "node and client", path)
}

/// The member key in `path`: as [`read_cluster_key`], and besides readable by its owner only
/// and not the cluster key (which every client holds).
pub(super) fn read_member_key(path: &Path, cluster_key: &ClusterKey) -> Checked<ClusterKey> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|source| ConfigError::KeyFile {
            setting: "member_key_file",
            path: path.to_path_buf(),
            source,
        })?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(ConfigError::KeyFileReadable { path: path.to_path_buf(), mode });
        }
    }
    let key = read_key("member_key_file", "node (and to no client)", path)?;
    if key.0 == cluster_key.0 {
        return Err(ConfigError::MemberKeyIsClusterKey { path: path.to_path_buf() });
    }
    Ok(key)
}

fn read_key(setting: &'static str, who: &'static str, path: &Path) -> Checked<ClusterKey> {
    let contents = std::fs::read(path).map_err(|source| ConfigError::KeyFile {
        setting,
        path: path.to_path_buf(),
        source,
    })?;
    let key = cluster_key_from_file_contents(&contents);
    if key.len() < CLUSTER_KEY_BYTES_MIN {
        return Err(ConfigError::KeyTooShort {
            setting,
            path: PathBuf::from(path),
            len: key.len(),
            min: CLUSTER_KEY_BYTES_MIN,
            who,
        });
    }
    Ok(ClusterKey(key.to_vec()))
}

// ---- flags: a flag's values to the setting's TOML form ----

/// `--member id=ip:port` (repeated, or comma-separated in `SHOAL_MEMBERS`) as the `[members]`
/// table; none given: not set here.
pub(super) fn members_from_flags(items: &[String]) -> Checked<Option<BTreeMap<String, String>>> {
    if items.is_empty() {
        return Ok(None);
    }
    let mut map = BTreeMap::new();
    for item in items {
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
    Ok(Some(map))
}

/// A repeated flag's values; none given: not set here.
pub(super) fn list_from_flags(items: &[String]) -> Checked<Option<Vec<String>>> {
    Ok((!items.is_empty()).then(|| items.to_vec()))
}

/// A single flag's value as given.
pub(super) fn from_flag<T: Clone>(value: &Option<T>) -> Checked<Option<T>> {
    Ok(value.clone())
}
