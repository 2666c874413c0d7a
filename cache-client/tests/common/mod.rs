//! An in-memory cluster for the client tests: real `cache_server::Server`s over `MemBackend`s,
//! node 1 the master, the others followers that apply the master's entries only when a test
//! says so (replication lag is a test input), and a `MemNetwork` carrying requests and the
//! cache group's messages.

#![allow(dead_code)]

use cache_client::transport::{Handler, MemNetwork, MemTransport};
use cache_client::{Client, ClientConfig};
use cache_server::mem::{serve, MemBackend};
use cache_server::{Backend, Server, ServerConfig};
use protocol::message::data::UpdateNotice;
use protocol::message::Message;
use protocol::Zxid;
use std::sync::Arc;
use std::time::Duration;

pub struct Cluster {
    pub network: MemNetwork,
    pub servers: Vec<Arc<Server<MemBackend>>>,
    /// Zxid of the last UpdateNotice multicast to clients.
    published: Zxid,
}

pub fn address(node: u8) -> String {
    format!("n{node}")
}

pub fn handler(server: Arc<Server<MemBackend>>) -> Handler {
    Arc::new(move |message| {
        let server = Arc::clone(&server);
        Box::pin(async move { server.handle(message).await })
    })
}

impl Cluster {
    /// `nodes` nodes; node 1 is the master of epoch 1.
    pub fn new(nodes: u8) -> Cluster {
        let network = MemNetwork::new();
        let mut servers = Vec::new();
        for node in 1..=nodes {
            let backend = if node == 1 {
                MemBackend::master(node, 1)
            } else {
                MemBackend::follower(node, 1, 1)
            };
            let config = ServerConfig {
                floor_wait: Duration::from_millis(500),
                ..ServerConfig::new(address(node))
            };
            let server = serve(backend, config);
            network.add_node(address(node), handler(Arc::clone(&server)));
            servers.push(server);
        }
        Cluster { network, servers, published: Zxid::ZERO }
    }

    pub fn server(&self, node: u8) -> &Arc<Server<MemBackend>> {
        &self.servers[node as usize - 1]
    }

    pub fn master(&self) -> &Arc<Server<MemBackend>> {
        self.servers
            .iter()
            .find(|s| s.backend().status().role == protocol::message::data::Role::Master)
            .expect("a master")
    }

    /// Every node multicasts its FSLive now.
    pub fn announce(&self) {
        for server in &self.servers {
            self.network.multicast(Message::FsLive(server.fs_live()));
        }
    }

    /// Only `node` multicasts its FSLive.
    pub fn announce_one(&self, node: u8) {
        self.network.multicast(Message::FsLive(self.server(node).fs_live()));
    }

    /// Follower `node` applies every entry the master has (the hook keeps its cache exact).
    pub fn replicate_to(&self, node: u8) {
        let follower = self.server(node);
        for notice in self.master().backend().log_after(follower.backend().applied()) {
            follower.backend().apply_notice(&notice).expect("replica applies the master's log");
        }
    }

    pub fn replicate_all(&self) {
        let master = self.master().backend().node();
        for node in 1..=self.servers.len() as u8 {
            if node != master {
                self.replicate_to(node);
            }
        }
    }

    /// The master's entries not yet multicast.
    pub fn unpublished(&self) -> Vec<UpdateNotice> {
        self.master().backend().log_after(self.published)
    }

    /// Multicasts the master's new entries as UpdateNotices; returns how many.
    pub fn publish(&mut self) -> usize {
        let notices = self.unpublished();
        for notice in &notices {
            self.network.multicast(Message::UpdateNotice(notice.clone()));
        }
        if let Some(last) = notices.last() {
            self.published = last.zxid;
        }
        notices.len()
    }

    /// Marks the master's entries as multicast without delivering them (they were lost).
    pub fn lose_unpublished(&mut self) -> usize {
        let notices = self.unpublished();
        if let Some(last) = notices.last() {
            self.published = last.zxid;
        }
        notices.len()
    }

    pub fn client(&self, seed: u64) -> Client<MemTransport> {
        self.client_with(ClientConfig { rng_seed: Some(seed), ..ClientConfig::default() })
    }

    /// A client on the cluster's network. The nodes announce themselves right after, as their
    /// FSLive timers would: a client hears only what is multicast after it subscribed.
    pub fn client_with(&self, config: ClientConfig) -> Client<MemTransport> {
        let client = Client::new(self.network.transport(), config);
        self.announce();
        client
    }

    pub fn reads_to(&self, node: u8) -> u64 {
        self.network.reads_to(&address(node))
    }
}
