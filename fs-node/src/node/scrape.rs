//! What a node serves on its metrics address: the [`Metrics`] registry plus what the core,
//! the request server and the messaging endpoint hold at scrape time. Lives beside the node
//! so that `metrics` (the registry and the text format) knows nothing of the node.

use super::shared::Shared;
use super::NodeBackend;
use crate::metrics::{counter, gauge, labelled, render_dropped, render_endpoint};
use cache_server::Server;

/// Everything a node exposes: its registry plus what its owners hold at scrape time.
pub(crate) fn render_node(
    shared: &Shared,
    server: &Server<NodeBackend>,
    endpoint: &protocol::messaging::Endpoint,
) -> String {
    use cache_server::Backend;
    use protocol::message::data::Role;
    let mut out = String::with_capacity(8192);
    shared.metrics.render(&mut out);
    let status = *shared.status.lock().expect("status poisoned");
    let backend = server.backend().status();
    let role = |r: Role| u64::from(status.role == r);
    labelled(
        &mut out,
        "shoal_role",
        "gauge",
        "1 for this node's current role.",
        "role",
        &[
            ("looking", role(Role::Looking)),
            ("follower", role(Role::Follower)),
            ("master", role(Role::Master)),
        ],
    );
    gauge(&mut out, "shoal_epoch", "Current epoch.", u64::from(status.epoch));
    gauge(
        &mut out,
        "shoal_applied_zxid",
        "Applied zxid (epoch << 32 | counter).",
        backend.applied.0,
    );
    gauge(
        &mut out,
        "shoal_committed_zxid",
        "Committed zxid (epoch << 32 | counter).",
        status.committed.0,
    );
    gauge(&mut out, "shoal_locks", "Held locks in the applied state.", status.locks);
    gauge(&mut out, "shoal_sessions", "Open sessions in the applied state.", status.sessions);
    gauge(
        &mut out,
        "shoal_transfer_in_progress",
        "1 while a data-file transfer runs.",
        u64::from(shared.transfers.running()),
    );
    let cache = server.cache_stats();
    counter(&mut out, "shoal_cache_hits_total", "Server cache hits.", cache.hits);
    counter(&mut out, "shoal_cache_misses_total", "Server cache misses.", cache.misses);
    counter(&mut out, "shoal_cache_evictions_total", "Server cache evictions.", cache.evictions);
    let endpoint_stats = endpoint.stats();
    render_endpoint(&mut out, &endpoint_stats);
    render_dropped(&mut out, &endpoint_stats.dropped);
    out
}

/// `GET /ready`: a master is ready once elected; a follower once it has applied everything it
/// knows committed and no data-file transfer runs (it then serves reads at the committed state);
/// a node looking for a master is not.
pub(crate) fn ready_node(
    shared: &Shared,
    server: &Server<NodeBackend>,
) -> crate::metrics::Readiness {
    use cache_server::Backend;
    use protocol::message::data::Role;
    let status = *shared.status.lock().expect("status poisoned");
    let applied = server.backend().status().applied;
    match status.role {
        Role::Master => Ok(format!("master of epoch {}, applied {applied}", status.epoch)),
        Role::Looking => Err("looking for a master".into()),
        Role::Follower if shared.transfers.running() => {
            Err("receiving the data files by transfer".into())
        }
        Role::Follower if applied < status.committed => {
            Err(format!("catching up: applied {applied} of committed {}", status.committed))
        }
        Role::Follower => Ok(match status.master {
            Some(master) => format!("follower of node {master}, applied {applied}"),
            None => format!("follower, applied {applied}"),
        }),
    }
}
