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
//! Replication messages count only from members other than this node; a request from anyone
//! is answered on its own task.

use super::shared::Shared;
use super::{transfer, NodeBackend};
use cache_server::Server;
use protocol::message::data::{ErrorCode, ReadOp, ReadReply, ReadValue, WireError};
use protocol::message::Message;
use protocol::messaging::{Endpoint, Incoming, RequestHandle};
use protocol::{NodeId, SenderId};
use std::sync::Arc;
use tokio::sync::mpsc;

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

pub(super) async fn receive(
    endpoint: Endpoint,
    server: Arc<Server<NodeBackend>>,
    shared: Arc<Shared>,
    repl_tx: mpsc::UnboundedSender<Message>,
    members: Vec<NodeId>,
) {
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
                let _ = repl_tx.send(received.message);
                let applied = *shared.applied.read().expect("applied lock poisoned");
                let ack = Message::ReadReply(ReadReply {
                    applied,
                    load: server.gauge().load(),
                    result: Ok(ReadValue::Bool(true)),
                });
                let endpoint = endpoint.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle.reply(&endpoint, ack).await {
                        tracing::debug!("acknowledgement not sent: {e}");
                    }
                });
                continue;
            }
            let (endpoint, server, shared) = (endpoint.clone(), server.clone(), shared.clone());
            tokio::spawn(answer(endpoint, server, shared, handle, received.message));
            continue;
        }
        if replication {
            let _ = repl_tx.send(received.message);
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
