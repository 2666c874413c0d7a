//! How every subcommand reaches the cluster: the cluster file (`--cluster` / `SHOAL_CLUSTER`),
//! extra seeds and the request timeout from the global flags, turned into a socket
//! [`Client`]. A leaf like [`crate::exit`].

use cache_client::net::{ClusterFile, SocketTransport};
use cache_client::{Client, ClientConfig, ClientError};
use protocol::NodeId;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The global flags that say how to reach the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    /// The cluster file.
    pub cluster: PathBuf,
    /// Node addresses to use besides the cluster file's members.
    pub seeds: Vec<String>,
    /// How long one request waits for its reply.
    pub request_timeout: Duration,
}

impl Connection {
    /// Joins the cluster as a new client (one socket endpoint).
    pub async fn client(&self) -> Result<Client<SocketTransport>, ClientError> {
        let (transport, mut seeds) = cache_client::net::connect(&self.cluster).await?;
        seeds.extend(self.seeds.iter().cloned());
        let config = ClientConfig {
            seeds,
            request_timeout: self.request_timeout,
            client_id: Some(transport.id()),
            ..ClientConfig::default()
        };
        Ok(Client::new(transport, config))
    }

    /// Every member the cluster file names (id → address), also one that is down right now;
    /// empty when the file cannot be read (the caller has reported that already).
    pub fn members(&self) -> BTreeMap<NodeId, String> {
        ClusterFile::load(&self.cluster)
            .map(|(file, _)| file.members)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(id, address)| Some((id.parse().ok()?, address)))
            .collect()
    }
}
