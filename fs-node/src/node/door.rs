//! The one door every message comes in by: [`receive`] takes what the endpoint delivers and
//! sends each kind to its one handler.
//!
//! | message | from | handled by |
//! |---|---|---|
//! | Vote, Prepare, PrepareOk, Sync, Proposal, Accept, Heartbeat, Commit | members | the core: [`Core::step`](super::core::Core::step) (an oversize one comes as a request and is acknowledged here) |
//! | Request (get, exists, is-dir, list, status) | clients | [`Server::handle`] → [`NodeBackend`] (answered `Behind` here while the node rebuilds or fetches, except status) |
//! | Update, Rename | clients | [`Server::handle`] → [`NodeBackend::submit`](cache_server::Backend::submit) → the core ([`Cmd::Propose`](super::core::Cmd)) |
//! | Lock (lock, unlock, sessions, renew) | clients | [`Server::handle`] → [`NodeBackend::lock`](cache_server::Backend::lock) → the core ([`Cmd::Propose`](super::core::Cmd), or [`Cmd::Renew`](super::core::Cmd) answered by the lease keeper) |
//! | RequestFile | a receiving member | [`transfer::on_request_file`] (this node donates) |
//! | Backup | the CLI | [`transfer::on_backup`] |
//! | TransFile | a donor | [`transfer::on_offer`] (this node receives) |
//! | anything else (FSLive, Freeze, UpdateNotice, LockChanged, replies) | | not for a node: dropped |
//!
//! Replication messages count only from members other than this node; they wait for the core
//! in a queue of [`REPLICATION_QUEUE_MAX`], and while it is full this task takes nothing more
//! from the endpoint, so the members run out of credit (back-pressure reaches them). A request
//! from anyone is answered on its own task, at most [`REQUESTS_IN_FLIGHT_MAX`] of them holding
//! at most [`REQUEST_BYTES_IN_FLIGHT_MAX`] bytes of requests at once; past that a client request
//! is answered `Unavailable` ("node N is busy") at once, and a transfer message is dropped
//! (its requester retries), each counted in `shoal_requests_refused_busy_total`.

use super::shared::Shared;
use super::{transfer, NodeBackend};
use super::{REPLICATION_QUEUE_MAX, REQUESTS_IN_FLIGHT_MAX, REQUEST_BYTES_IN_FLIGHT_MAX};
use cache_server::Server;
use protocol::message::data::{ErrorCode, ReadOp, ReadReply, ReadValue, WireError, WriteReply};
use protocol::message::lock::LockReply;
use protocol::message::Message;
use protocol::messaging::{Endpoint, Incoming, RequestHandle};
use protocol::{NodeId, SenderId};
use std::sync::Arc;
use tokio::sync::{mpsc, Semaphore};

/// Whether a message is one of the replication engine's (the core takes these from members).
pub fn is_replication(message: &Message) -> bool {
    matches!(
        message,
        Message::Vote(_)
            | Message::Prepare(_)
            | Message::PrepareOk(_)
            | Message::Sync(_)
            | Message::Proposal(_)
            | Message::Accept(_)
            | Message::Heartbeat(_)
            | Message::Commit(_)
    )
}

/// The channel on which the receive task hands replication messages to the core, bounded by
/// [`REPLICATION_QUEUE_MAX`]: while it is full the receive task waits and takes nothing more
/// from the endpoint, so the members' credit runs out and a slow core slows them down.
pub(super) fn replication_channel() -> (mpsc::Sender<Message>, mpsc::Receiver<Message>) {
    mpsc::channel(REPLICATION_QUEUE_MAX)
}

/// The message weighed against [`REQUEST_BYTES_IN_FLIGHT_MAX`] (its encoded length, at least
/// one byte so that every request takes a permit).
fn request_weight(message: &Message) -> u32 {
    let len = message.encoded_len().unwrap_or(REQUEST_BYTES_IN_FLIGHT_MAX);
    len.clamp(1, REQUEST_BYTES_IN_FLIGHT_MAX) as u32
}

/// The answer to a client request refused because [`REQUESTS_IN_FLIGHT_MAX`] requests or
/// [`REQUEST_BYTES_IN_FLIGHT_MAX`] bytes are already being answered: `Unavailable`, in the
/// reply type of the request. `None` for the transfer messages (their requester retries).
fn busy_reply(server: &Server<NodeBackend>, shared: &Shared, message: &Message) -> Option<Message> {
    let error = WireError {
        code: ErrorCode::Unavailable,
        message: format!(
            "node {} is busy: {REQUESTS_IN_FLIGHT_MAX} requests or {REQUEST_BYTES_IN_FLIGHT_MAX} \
             bytes of requests are being answered; try again or ask another node",
            shared.node
        ),
    };
    let load = server.gauge().load();
    match message {
        Message::Request(_) => {
            let applied = *shared.applied.read().expect("applied lock poisoned");
            Some(Message::ReadReply(ReadReply { applied, load, result: Err(error) }))
        }
        Message::Update(u) => {
            Some(Message::WriteReply(WriteReply { request: u.request, load, result: Err(error) }))
        }
        Message::Rename(r) => {
            Some(Message::WriteReply(WriteReply { request: r.request, load, result: Err(error) }))
        }
        Message::Lock(l) => {
            Some(Message::LockReply(LockReply { request: l.request, load, result: Err(error) }))
        }
        _ => None,
    }
}

pub(super) async fn receive(
    endpoint: Endpoint,
    server: Arc<Server<NodeBackend>>,
    shared: Arc<Shared>,
    repl_tx: mpsc::Sender<Message>,
    members: Vec<NodeId>,
) {
    let requests = Arc::new(Semaphore::new(REQUESTS_IN_FLIGHT_MAX));
    let request_bytes = Arc::new(Semaphore::new(REQUEST_BYTES_IN_FLIGHT_MAX));
    loop {
        let received = match endpoint.recv().await {
            Ok(Incoming::Message(r)) => r,
            Ok(Incoming::Gap { sender, .. }) => {
                tracing::debug!(sender, "gap in a sender's stream (the engine repairs)");
                continue;
            }
            Err(_) => return,
        };
        let from_member = received.sender != shared.node as SenderId
            && members.iter().any(|m| *m as SenderId == received.sender);
        let replication = from_member && is_replication(&received.message);
        if let Some(handle) = received.request {
            if replication {
                // An oversize message from a member's engine (see the module's Limits): hand
                // it to the core like any other and acknowledge it so the sender stops
                // retrying. A retried request may arrive twice; the engine ignores repeats.
                if repl_tx.send(received.message).await.is_err() {
                    return;
                }
                let applied = *shared.applied.read().expect("applied lock poisoned");
                let ack = Message::ReadReply(ReadReply {
                    applied,
                    load: server.gauge().load(),
                    result: Ok(ReadValue::Bool(true)),
                });
                // One small datagram, sent here rather than on a task of its own.
                if let Err(e) = handle.reply(&endpoint, ack).await {
                    tracing::debug!("acknowledgement not sent: {e}");
                }
                continue;
            }
            let weight = request_weight(&received.message);
            let permits = requests
                .clone()
                .try_acquire_owned()
                .ok()
                .zip(request_bytes.clone().try_acquire_many_owned(weight).ok());
            let Some(permits) = permits else {
                shared.metrics.requests_refused_busy.inc();
                if let Some(reply) = busy_reply(&server, &shared, &received.message) {
                    if let Err(e) = handle.reply(&endpoint, reply).await {
                        tracing::debug!("busy reply not sent: {e}");
                    }
                }
                continue;
            };
            let (endpoint, server, shared) = (endpoint.clone(), server.clone(), shared.clone());
            tokio::spawn(async move {
                let _permits = permits;
                answer(endpoint, server, shared, handle, received.message).await;
            });
            continue;
        }
        // Waits while the core is behind: this is what stops the members' credit.
        if replication && repl_tx.send(received.message).await.is_err() {
            return;
        }
    }
}

async fn answer(
    endpoint: Endpoint,
    server: Arc<Server<NodeBackend>>,
    shared: Arc<Shared>,
    handle: RequestHandle,
    message: Message,
) {
    let reply = match message {
        Message::RequestFile(request) => Some(transfer::on_request_file(&shared, request).await),
        Message::Backup(backup) => Some(transfer::on_backup(&shared, backup).await),
        Message::TransFile(offer) => Some(transfer::on_offer(&shared, offer).await),
        Message::Request(r) if !matches!(r.op, ReadOp::Status) && shared.recovering() => {
            let applied = *shared.applied.read().expect("applied lock poisoned");
            let message = if shared.transfers.fetching() {
                format!(
                    "node {} is fetching its data files from a peer; try another node",
                    shared.node
                )
            } else {
                format!(
                    "node {} is rebuilding its state from its log ({applied} of {}); try \
                     another node",
                    shared.node, shared.recovered_commit
                )
            };
            let result = Err(WireError { code: ErrorCode::Behind, message });
            Some(Message::ReadReply(ReadReply { applied, load: server.gauge().load(), result }))
        }
        // Request, Update, Rename, Lock: the cache server's door (load and in-flight counted).
        other => server.handle(other).await,
    };
    if let Some(reply) = reply {
        if let Err(e) = handle.reply(&endpoint, reply).await {
            tracing::debug!("reply not sent: {e}");
        }
    }
}
