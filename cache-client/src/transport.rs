//! What the client needs from the network, as a trait, and an in-memory implementation for
//! tests and for embedding a cluster in one process.
//!
//! A [`Transport`] sends one unicast request to a node address and waits (with a timeout) for
//! its reply, and delivers the cache group's messages — FSLive, UpdateNotice, LockChanged,
//! Freeze — plus [`GroupEvent::Gap`] when the messaging layer gives up repairing a loss. The
//! socket transport over `protocol::messaging` is [`crate::net::SocketTransport`].

use protocol::message::Message;
use protocol::SenderId;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;
use tokio::sync::mpsc;

/// Group messages buffered per subscriber before the transport reports a gap instead of
/// queueing more (a slow consumer loses messages and flushes its cache; it never stalls others).
pub const GROUP_QUEUE_MAX: usize = 4096;

/// One delivery from the cache group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupEvent {
    Message(Message),
    /// Messages from `sender` were lost and could not be repaired; what follows comes after
    /// the loss.
    Gap {
        sender: SenderId,
    },
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TransportError {
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("no route to {0}")]
    Unreachable(String),
    #[error("transport closed")]
    Closed,
}

/// The network as the client sees it. Futures are `Send` so client calls can run on any task.
pub trait Transport: Send + Sync + 'static {
    /// Sends `message` to the node at `address` and resolves with its reply, or `Timeout`.
    fn request(
        &self,
        address: &str,
        message: Message,
        timeout: Duration,
    ) -> impl Future<Output = Result<Message, TransportError>> + Send;

    /// The cache group's messages, in the order the messaging layer delivers them. Called once
    /// per client.
    fn subscribe(&self) -> mpsc::Receiver<GroupEvent>;
}

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Answers requests for one in-memory node (e.g. `cache_server::Server::handle`).
pub type Handler = Arc<dyn Fn(Message) -> BoxFuture<Option<Message>> + Send + Sync>;

struct MemNode {
    handler: Handler,
    /// Requests to a down node are never answered (they time out).
    down: bool,
    /// The next this many requests are handled but their replies lost (they time out).
    replies_to_drop: u32,
    requests: u64,
    reads: u64,
}

struct Subscriber {
    tx: mpsc::Sender<GroupEvent>,
    /// Set when a delivery was dropped because the queue was full: a Gap goes first next time.
    lost: bool,
}

#[derive(Default)]
struct Net {
    nodes: HashMap<String, MemNode>,
    subscribers: Vec<Subscriber>,
}

/// An in-memory network of nodes and subscribers. Cheap to clone; every clone is the same
/// network. Each client takes its own [`MemTransport`] from [`MemNetwork::transport`].
#[derive(Clone, Default)]
pub struct MemNetwork {
    net: Arc<Mutex<Net>>,
}

impl MemNetwork {
    pub fn new() -> MemNetwork {
        MemNetwork::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Net> {
        self.net.lock().expect("MemNetwork poisoned")
    }

    /// Adds (or replaces) the node at `address`.
    pub fn add_node(&self, address: impl Into<String>, handler: Handler) {
        let node = MemNode { handler, down: false, replies_to_drop: 0, requests: 0, reads: 0 };
        self.lock().nodes.insert(address.into(), node);
    }

    /// A down node receives requests (they are counted) but never answers.
    pub fn set_down(&self, address: &str, down: bool) {
        if let Some(node) = self.lock().nodes.get_mut(address) {
            node.down = down;
        }
    }

    /// The node at `address` handles its next `count` requests but their replies are lost:
    /// the write happens, the sender times out (the case retry de-duplication exists for).
    pub fn drop_replies(&self, address: &str, count: u32) {
        if let Some(node) = self.lock().nodes.get_mut(address) {
            node.replies_to_drop = count;
        }
    }

    /// Requests of any kind delivered to `address` so far.
    pub fn requests_to(&self, address: &str) -> u64 {
        self.lock().nodes.get(address).map_or(0, |n| n.requests)
    }

    /// Read requests (Request messages) delivered to `address` so far.
    pub fn reads_to(&self, address: &str) -> u64 {
        self.lock().nodes.get(address).map_or(0, |n| n.reads)
    }

    /// Delivers `message` to every subscriber, in the same order for all.
    pub fn multicast(&self, message: Message) {
        self.deliver(GroupEvent::Message(message));
    }

    /// Tells every subscriber that messages from `sender` were lost for good.
    pub fn inject_gap(&self, sender: SenderId) {
        self.deliver(GroupEvent::Gap { sender });
    }

    fn deliver(&self, event: GroupEvent) {
        let mut net = self.lock();
        net.subscribers.retain(|s| !s.tx.is_closed());
        for sub in &mut net.subscribers {
            if sub.lost {
                // The sender id of a queue overflow is unknown here; 0 names "the group".
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

    /// A transport on this network for one client.
    pub fn transport(&self) -> MemTransport {
        MemTransport { network: self.clone(), cut: Arc::default(), reply_delay_ms: Arc::default() }
    }
}

#[derive(Clone)]
pub struct MemTransport {
    network: MemNetwork,
    /// While set, this transport's requests go unanswered (a client cut off from the nodes).
    cut: Arc<std::sync::atomic::AtomicBool>,
    /// Milliseconds each reply spends on its way back, after the node handled the request (a
    /// slow return path: the node acted at once, the client hears late).
    reply_delay_ms: Arc<std::sync::atomic::AtomicU64>,
}

impl MemTransport {
    /// A switch that cuts this transport's requests off (they time out) while it is set; the
    /// group stream keeps flowing. Tests use it for a client partitioned from the master.
    pub fn cut_switch(&self) -> Arc<std::sync::atomic::AtomicBool> {
        Arc::clone(&self.cut)
    }

    /// A knob for the milliseconds every reply is held back after the node handled its
    /// request; a reply held past the request's timeout is a timeout.
    pub fn reply_delay_ms(&self) -> Arc<std::sync::atomic::AtomicU64> {
        Arc::clone(&self.reply_delay_ms)
    }
}

impl Transport for MemTransport {
    async fn request(
        &self,
        address: &str,
        message: Message,
        timeout: Duration,
    ) -> Result<Message, TransportError> {
        if self.cut.load(std::sync::atomic::Ordering::Relaxed) {
            tokio::time::sleep(timeout).await;
            return Err(TransportError::Timeout(timeout));
        }
        let (handler, drop_reply) = {
            let mut net = self.network.lock();
            let Some(node) = net.nodes.get_mut(address) else {
                return Err(TransportError::Unreachable(address.to_string()));
            };
            node.requests += 1;
            if matches!(message, Message::Request(_)) {
                node.reads += 1;
            }
            let drop_reply = node.replies_to_drop > 0;
            node.replies_to_drop = node.replies_to_drop.saturating_sub(1);
            ((!node.down).then(|| Arc::clone(&node.handler)), drop_reply)
        };
        let Some(handler) = handler else {
            tokio::time::sleep(timeout).await;
            return Err(TransportError::Timeout(timeout));
        };
        let start = tokio::time::Instant::now();
        match tokio::time::timeout(timeout, handler(message)).await {
            Ok(Some(_)) if drop_reply => {
                tokio::time::sleep(timeout).await;
                Err(TransportError::Timeout(timeout))
            }
            Ok(Some(reply)) => {
                let delay = Duration::from_millis(
                    self.reply_delay_ms.load(std::sync::atomic::Ordering::Relaxed),
                );
                if delay.is_zero() {
                    return Ok(reply);
                }
                if start.elapsed() + delay >= timeout {
                    tokio::time::sleep_until(start + timeout).await;
                    return Err(TransportError::Timeout(timeout));
                }
                tokio::time::sleep(delay).await;
                Ok(reply)
            }
            // A node that does not answer this kind looks like silence on a real network.
            Ok(None) | Err(_) => Err(TransportError::Timeout(timeout)),
        }
    }

    fn subscribe(&self) -> mpsc::Receiver<GroupEvent> {
        let (tx, rx) = mpsc::channel(GROUP_QUEUE_MAX);
        self.network.lock().subscribers.push(Subscriber { tx, lost: false });
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::message::live::Freeze;
    use protocol::Zxid;

    fn freeze(n: u8) -> Message {
        Message::Freeze(Freeze { node: n, frozen: true, applied: Zxid::ZERO })
    }

    /// A subscriber whose queue overflowed gets a Gap before the next message it can take.
    #[tokio::test]
    async fn overflow_becomes_gap() {
        let network = MemNetwork::new();
        let mut rx = network.transport().subscribe();
        for _ in 0..GROUP_QUEUE_MAX + 5 {
            network.multicast(freeze(1));
        }
        for _ in 0..GROUP_QUEUE_MAX {
            assert_eq!(rx.recv().await, Some(GroupEvent::Message(freeze(1))));
        }
        network.multicast(freeze(2));
        assert_eq!(rx.recv().await, Some(GroupEvent::Gap { sender: 0 }));
        assert_eq!(rx.recv().await, Some(GroupEvent::Message(freeze(2))));
    }

    /// A down node is counted but never answers: the request times out (paused time).
    #[tokio::test(start_paused = true)]
    async fn down_node_times_out() {
        let network = MemNetwork::new();
        network.add_node("a", Arc::new(|m| Box::pin(async move { Some(m) })));
        let t = network.transport();
        assert_eq!(t.request("a", freeze(1), Duration::from_secs(1)).await, Ok(freeze(1)));
        network.set_down("a", true);
        let err = t.request("a", freeze(1), Duration::from_secs(1)).await.unwrap_err();
        assert_eq!(err, TransportError::Timeout(Duration::from_secs(1)));
        assert_eq!(network.requests_to("a"), 2);
        assert!(matches!(
            t.request("b", freeze(1), Duration::from_secs(1)).await,
            Err(TransportError::Unreachable(_))
        ));
    }
}
