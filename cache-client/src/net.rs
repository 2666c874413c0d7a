//! The socket [`Transport`]: unicast requests and the cache group over
//! `protocol::messaging::Endpoint`, and the cluster file that says how to reach a cluster.
//!
//! # Cluster file
//! TOML (or JSON, by extension `.json`), written by `shoal dev` or by hand. TOML needs the
//! crate's `toml` feature (the `shoal` CLI has it on); without it [`ClusterFile::load`] and
//! [`ClusterFile::save`] refuse any path not ending in `.json`, saying so, and touch nothing.
//! ```toml
//! cluster_id = 7
//! key_file = "cluster.key"        # relative to this file's directory; or `key = "..."`
//! group = "239.255.77.1:7700"
//! interface = "127.0.0.1"
//! loopback = true
//! [members]                       # node id = unicast "ip:port"
//! 1 = "127.0.0.1:7701"
//! 2 = "127.0.0.1:7702"
//! 3 = "127.0.0.1:7703"
//! ```
//! The members become the client's seeds; the rest of the live set comes from FSLive.
//!
//! # Group stream
//! The client's endpoint joins the group like a node but is not a member (it grants no credit).
//! FSLive, UpdateNotice, LockChanged and Freeze go to every subscriber; replication traffic is
//! dropped here. A gap in a member's reliable stream becomes [`GroupEvent::Gap`], and so does an
//! overflow of a subscriber's queue (sender 0), so a cache never trusts a stream with holes.
//!
//! Only members speak on the group stream: a message counts only when its sender id is one of
//! the cluster file's members and, where the file gives the member's address as an IP
//! address, the messaging layer saw the sender at that address; UpdateNotice and LockChanged
//! must also come on the sender's reliable stream. Everything else is dropped and counted
//! ([`SocketTransport::foreign_dropped`]). This keeps a client (or any other holder of the
//! cluster key) from feeding caches its own notices by accident or by a plain forgery; it is
//! not a cryptographic separation (a key holder can still forge a member's id and address:
//! that needs member credentials, issue 16).

use crate::error::ClientError;
use crate::transport::{GroupEvent, Transport, TransportError, GROUP_QUEUE_MAX};
use protocol::header::{cluster_key_from_file_contents, ClusterAuth};
use protocol::message::Message;
use protocol::messaging::{Endpoint, EndpointConfig, Incoming, MessagingError, Received};
use protocol::{SenderId, CLIENT_ID_MIN};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Where `shoal` looks for the cluster file when neither `--cluster` nor `SHOAL_CLUSTER` is
/// given (what `shoal dev` writes).
pub const CLUSTER_FILE_DEFAULT: &str = "shoal-dev/cluster.toml";

/// How to reach a cluster (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    pub cluster_id: u32,
    /// Path of the key file, relative to the cluster file's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// The key inline (instead of `key_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub group: String,
    #[serde(default = "default_interface")]
    pub interface: String,
    #[serde(default = "default_true")]
    pub loopback: bool,
    /// Node id (as a string) → unicast "ip:port".
    pub members: BTreeMap<String, String>,
}

fn default_interface() -> String {
    "0.0.0.0".into()
}

fn default_true() -> bool {
    true
}

fn bad(path: &Path, detail: impl std::fmt::Display) -> ClientError {
    ClientError::Unavailable { detail: format!("cluster file {}: {detail}", path.display()) }
}

impl ClusterFile {
    /// Reads and checks a cluster file, and its key.
    pub fn load(path: &Path) -> Result<(ClusterFile, ClusterAuth), ClientError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            bad(
                path,
                format!(
                    "{e}; start a local cluster with `shoal dev`, or name the file with \
                     --cluster FILE / SHOAL_CLUSTER"
                ),
            )
        })?;
        let file: ClusterFile = if is_json(path) {
            serde_json::from_str(&text).map_err(|e| bad(path, e))?
        } else {
            from_toml(&text).map_err(|e| bad(path, e))?
        };
        let key: Vec<u8> = match (&file.key, &file.key_file) {
            (Some(k), _) => k.as_bytes().to_vec(),
            (None, Some(kf)) => {
                let kf = path.parent().unwrap_or(Path::new(".")).join(kf);
                let bytes = std::fs::read(&kf)
                    .map_err(|e| bad(path, format!("key file {}: {e}", kf.display())))?;
                cluster_key_from_file_contents(&bytes).to_vec()
            }
            (None, None) => return Err(bad(path, "neither `key` nor `key_file` is set")),
        };
        file.group_addr().map_err(|e| bad(path, e))?;
        file.interface_addr().map_err(|e| bad(path, e))?;
        let auth = ClusterAuth::new(file.cluster_id, &key);
        Ok((file, auth))
    }

    /// Writes the file as JSON when `path` ends in `.json` (as [`ClusterFile::load`] reads
    /// it), otherwise as TOML.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let text = if is_json(path) {
            serde_json::to_string_pretty(self).map_err(std::io::Error::other)?
        } else {
            to_toml(self).map_err(std::io::Error::other)?
        };
        std::fs::write(path, text)
    }

    pub fn group_addr(&self) -> Result<SocketAddrV4, String> {
        self.group.parse().map_err(|e| format!("group {:?}: {e}", self.group))
    }

    pub fn interface_addr(&self) -> Result<Ipv4Addr, String> {
        self.interface.parse().map_err(|e| format!("interface {:?}: {e}", self.interface))
    }

    /// The members' unicast addresses (the client's seeds).
    pub fn seeds(&self) -> Vec<String> {
        self.members.values().cloned().collect()
    }
}

fn is_json(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "json")
}

/// Why a TOML cluster file cannot be read or written without the `toml` feature.
#[cfg(not(feature = "toml"))]
const TOML_OFF: &str = "TOML cluster files need cache-client's `toml` feature; use a `.json` \
                        cluster file or build with `--features toml`";

fn from_toml(text: &str) -> Result<ClusterFile, String> {
    #[cfg(feature = "toml")]
    return toml::from_str(text).map_err(|e| e.to_string());
    #[cfg(not(feature = "toml"))]
    {
        let _ = text;
        Err(TOML_OFF.into())
    }
}

fn to_toml(file: &ClusterFile) -> Result<String, String> {
    #[cfg(feature = "toml")]
    return toml::to_string(file).map_err(|e| e.to_string());
    #[cfg(not(feature = "toml"))]
    {
        let _ = file;
        Err(TOML_OFF.into())
    }
}

/// Who may speak on the group stream (see the module docs).
#[derive(Clone, Debug, Default)]
struct Admission {
    /// Member id → its unicast address when the cluster file names one as `ip:port` (a
    /// hostname or an unspecified IP leaves only the id check).
    members: BTreeMap<SenderId, Option<SocketAddr>>,
}

impl Admission {
    fn from_cluster(cluster: &ClusterFile) -> Admission {
        let members = cluster
            .members
            .iter()
            .filter_map(|(id, addr)| {
                let id = id.parse::<SenderId>().ok()?;
                let addr = addr.parse::<SocketAddr>().ok().filter(|a| !a.ip().is_unspecified());
                Some((id, addr))
            })
            .collect();
        Admission { members }
    }

    fn is_member(&self, sender: SenderId) -> bool {
        self.members.contains_key(&sender)
    }

    /// Whether `received` counts: a member's, from its address when known, notices on the
    /// reliable stream.
    fn admits(&self, received: &Received) -> bool {
        let Some(known) = self.members.get(&received.sender) else { return false };
        if known.is_some_and(|addr| received.source != Some(addr)) {
            return false;
        }
        let notice = matches!(received.message, Message::UpdateNotice(_) | Message::LockChanged(_));
        received.reliable || !notice
    }
}

struct Subscriber {
    tx: mpsc::Sender<GroupEvent>,
    lost: bool,
}

type Subscribers = Arc<Mutex<Vec<Subscriber>>>;

/// The socket transport. Dropping it stops its endpoint.
pub struct SocketTransport {
    endpoint: Endpoint,
    subscribers: Subscribers,
    /// Group messages dropped because they did not come from a member (see the module docs).
    foreign: Arc<AtomicU64>,
    pump: JoinHandle<()>,
}

impl std::fmt::Debug for SocketTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketTransport").field("id", &self.endpoint.id()).finish()
    }
}

impl Drop for SocketTransport {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

impl SocketTransport {
    /// Joins the cluster's group as client `id` (at or above `CLIENT_ID_MIN`; random when
    /// `None`). Must run inside a tokio runtime.
    pub async fn connect(
        cluster: &ClusterFile,
        auth: ClusterAuth,
        id: Option<SenderId>,
    ) -> Result<SocketTransport, ClientError> {
        let id = id.unwrap_or_else(|| {
            rand::Rng::gen_range(&mut rand::thread_rng(), CLIENT_ID_MIN..=u64::MAX)
        });
        let unreachable = |e: String| ClientError::Unavailable { detail: e };
        // Distinct per start, so that nodes tell a new client from a replay, and so that this
        // start seals under a subkey no earlier start used (WIRE.md §1.3).
        let incarnation = protocol::header::fresh_incarnation(0);
        let mut config = EndpointConfig::new(id, incarnation, auth);
        config.group = cluster.group_addr().map_err(unreachable)?;
        config.interface = cluster.interface_addr().map_err(unreachable)?;
        config.loopback = cluster.loopback;
        if !config.interface.is_unspecified() {
            config.unicast_bind = SocketAddr::from((config.interface, 0));
        }
        let admission = Admission::from_cluster(cluster);
        let endpoint = Endpoint::bind(config)
            .await
            .map_err(|e| unreachable(format!("cannot join the cluster group: {e}")))?;
        let subscribers: Subscribers = Arc::default();
        let foreign = Arc::new(AtomicU64::new(0));
        let pump =
            tokio::spawn(pump(endpoint.clone(), subscribers.clone(), admission, foreign.clone()));
        Ok(SocketTransport { endpoint, subscribers, foreign, pump })
    }

    /// How many group messages (FSLive, UpdateNotice, LockChanged, Freeze) were dropped
    /// because they did not come from a member at its address.
    pub fn foreign_dropped(&self) -> u64 {
        self.foreign.load(Ordering::Relaxed)
    }

    /// This client's sender id.
    pub fn id(&self) -> SenderId {
        self.endpoint.id()
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }
}

fn deliver(subscribers: &Subscribers, event: GroupEvent) {
    let mut subs = subscribers.lock().expect("subscribers poisoned");
    subs.retain(|s| !s.tx.is_closed());
    for sub in subs.iter_mut() {
        if sub.lost {
            if sub.tx.try_send(GroupEvent::Gap { sender: 0 }).is_err() {
                continue;
            }
            sub.lost = false;
        }
        if sub.tx.try_send(event.clone()).is_err() {
            sub.lost = true;
        }
    }
}

async fn pump(
    endpoint: Endpoint,
    subscribers: Subscribers,
    admission: Admission,
    foreign: Arc<AtomicU64>,
) {
    loop {
        match endpoint.recv().await {
            Ok(Incoming::Message(received)) => {
                if matches!(
                    received.message,
                    Message::FsLive(_)
                        | Message::UpdateNotice(_)
                        | Message::LockChanged(_)
                        | Message::Freeze(_)
                ) {
                    if admission.admits(&received) {
                        deliver(&subscribers, GroupEvent::Message(received.message));
                    } else {
                        foreign.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Ok(Incoming::Gap { sender, .. }) => {
                if admission.is_member(sender) {
                    deliver(&subscribers, GroupEvent::Gap { sender });
                }
            }
            Err(_) => return,
        }
    }
}

impl Transport for SocketTransport {
    async fn request(
        &self,
        address: &str,
        message: Message,
        timeout: Duration,
    ) -> Result<Message, TransportError> {
        let to: SocketAddr =
            address.parse().map_err(|_| TransportError::Unreachable(address.to_string()))?;
        match self.endpoint.request(to, message, timeout, 0).await {
            Ok(reply) => Ok(reply),
            Err(MessagingError::Timeout { .. }) => Err(TransportError::Timeout(timeout)),
            Err(MessagingError::Shutdown) => Err(TransportError::Closed),
            Err(e) => Err(TransportError::Unreachable(format!("{address}: {e}"))),
        }
    }

    fn subscribe(&self) -> mpsc::Receiver<GroupEvent> {
        let (tx, rx) = mpsc::channel(GROUP_QUEUE_MAX);
        self.subscribers.lock().expect("subscribers poisoned").push(Subscriber { tx, lost: false });
        rx
    }
}

/// Loads the cluster file at `path` and joins the cluster: a transport and the seeds to give
/// the client.
pub async fn connect(path: &Path) -> Result<(SocketTransport, Vec<String>), ClientError> {
    let (file, auth) = ClusterFile::load(path)?;
    let transport = SocketTransport::connect(&file, auth, None).await?;
    Ok((transport, file.seeds()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ClusterFile {
        ClusterFile {
            cluster_id: 7,
            key_file: None,
            key: Some("secret".into()),
            group: "239.255.77.1:7700".into(),
            interface: "127.0.0.1".into(),
            loopback: true,
            members: BTreeMap::from([("1".into(), "127.0.0.1:7701".into())]),
        }
    }

    fn notice(counter: u32) -> Message {
        use protocol::message::data::UpdateNotice;
        let zxid = protocol::Zxid::new(1, counter);
        Message::UpdateNotice(UpdateNotice { zxid, prev: protocol::Zxid::ZERO, ops: vec![] })
    }

    /// An endpoint on loopback that sends its group traffic to `to` only.
    async fn sender(id: SenderId, incarnation: u64, to: SocketAddr) -> Endpoint {
        let mut config = EndpointConfig::new(id, incarnation, ClusterAuth::new(7, b"secret"));
        config.interface = Ipv4Addr::LOCALHOST;
        config.unicast_bind = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        config.peers = Some(vec![to]);
        Endpoint::bind(config).await.expect("bind a loopback sender")
    }

    /// Issue 15.2: a notice from a sender that holds the cluster key but is not a member, or
    /// that claims a member's id from another address, never reaches a subscriber (it is
    /// counted); the member's own notice from its address does.
    #[tokio::test]
    async fn only_members_notices_from_their_addresses_are_delivered() {
        // The real member 1, bound first so that the cluster file names its address.
        let member_config = {
            let mut c = EndpointConfig::new(1, 5, ClusterAuth::new(7, b"secret"));
            c.interface = Ipv4Addr::LOCALHOST;
            c.unicast_bind = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
            c
        };
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let group_port = probe.local_addr().unwrap().port();
        drop(probe);
        let placeholder = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let member_addr = placeholder.local_addr().unwrap();
        drop(placeholder);
        let mut file = sample();
        file.group = format!("239.255.77.9:{group_port}");
        file.members = BTreeMap::from([("1".into(), member_addr.to_string())]);
        let auth = ClusterAuth::new(file.cluster_id, b"secret");
        let transport =
            SocketTransport::connect(&file, auth, Some(CLIENT_ID_MIN + 15)).await.unwrap();
        let mut rx = transport.subscribe();
        let client = transport.endpoint().local_addr().unwrap();

        let outsider = sender(99, 1, client).await;
        outsider.multicast(notice(99)).await.unwrap();
        let spoof = sender(1, 1, client).await;
        spoof.multicast(notice(98)).await.unwrap();
        // Both are dropped and counted (bounded wait: 100 × 10 ms).
        for _ in 0..100 {
            if let Ok(event) = rx.try_recv() {
                panic!("a foreign notice reached the subscriber: {event:?}");
            }
            if transport.foreign_dropped() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(transport.foreign_dropped(), 2, "the foreign notices were not counted");
        outsider.shutdown().await;
        spoof.shutdown().await;

        let mut config = member_config;
        config.unicast_bind = member_addr;
        config.peers = Some(vec![client]);
        let member = Endpoint::bind(config).await.expect("bind the member");
        member.multicast(notice(1)).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        member.shutdown().await;
        match got {
            Ok(Some(GroupEvent::Message(Message::UpdateNotice(n)))) => {
                assert_eq!(n.zxid, protocol::Zxid::new(1, 1));
            }
            other => panic!("the member's notice was not delivered: {other:?}"),
        }
    }

    /// The admission rule on its own: members only, from their addresses where the file names
    /// them, notices only from the reliable stream.
    #[test]
    fn admission_takes_members_at_their_addresses() {
        let mut file = sample();
        file.members = BTreeMap::from([
            ("1".into(), "127.0.0.1:7701".into()),
            ("2".into(), "node2.example:7702".into()),
            ("x".into(), "127.0.0.1:7709".into()),
        ]);
        let admission = Admission::from_cluster(&file);
        let at = |sender, source: &str, reliable, message| Received {
            sender,
            source: source.parse().ok(),
            reliable,
            message,
            request: None,
        };
        let live = || {
            Message::Freeze(protocol::message::live::Freeze {
                node: 1,
                frozen: true,
                applied: protocol::Zxid::ZERO,
            })
        };
        assert!(admission.admits(&at(1, "127.0.0.1:7701", true, notice(1))));
        assert!(!admission.admits(&at(1, "127.0.0.1:9999", true, notice(1))), "wrong address");
        assert!(!admission.admits(&at(1, "", true, notice(1))), "address unknown");
        assert!(!admission.admits(&at(3, "127.0.0.1:7701", true, notice(1))), "not a member");
        assert!(admission.admits(&at(2, "10.0.0.2:7702", true, notice(1))), "hostname: id only");
        assert!(!admission.admits(&at(1, "127.0.0.1:7701", false, notice(1))), "best-effort");
        assert!(admission.admits(&at(1, "127.0.0.1:7701", false, live())));
        assert!(admission.is_member(2) && !admission.is_member(3));
    }

    /// A `.json` cluster file is written as JSON, so that `load` (which reads `.json` paths as
    /// JSON) reads back what `save` wrote.
    #[test]
    fn a_json_cluster_file_reads_back_what_was_saved() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.json");
        sample().save(&path).unwrap();
        let (file, _) = ClusterFile::load(&path).expect("the saved file loads");
        assert_eq!(file, sample());
    }

    #[cfg(feature = "toml")]
    #[test]
    fn a_toml_cluster_file_reads_back_what_was_saved() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.toml");
        sample().save(&path).unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().contains("cluster_id = 7"));
        let (file, _) = ClusterFile::load(&path).expect("the saved file loads");
        assert_eq!(file, sample());
    }

    /// Without the `toml` feature a TOML path is refused with the reason, and nothing is
    /// written.
    #[cfg(not(feature = "toml"))]
    #[test]
    fn without_the_toml_feature_a_toml_cluster_file_is_refused_and_nothing_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.toml");
        let error = sample().save(&path).unwrap_err();
        assert!(error.to_string().contains("`toml` feature"), "{error}");
        assert!(!path.exists(), "a refused save wrote {}", path.display());
        std::fs::write(&path, "cluster_id = 7\n").unwrap();
        let error = ClusterFile::load(&path).unwrap_err().to_string();
        assert!(error.contains("`toml` feature"), "{error}");
        assert!(error.contains(&path.display().to_string()), "{error}");
    }
}
