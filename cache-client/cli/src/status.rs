//! `shoal status`: one row per node — what the node itself answers to a status request
//! (`ReadOp::Status`), merged with what the client heard of it on the group (FSLive: when it
//! was last heard). Members come from the cluster file (the client's seeds) plus any other
//! node FSLive announced; every one is asked at once, each with the request timeout.
//!
//! # Exit code
//! 0 when at least one node answered (the table is the answer; a down node shows as
//! `unreachable`), 4 (cluster unreachable) when none did.
//!
//! # `--json`
//! One object, field names stable (new fields may be added, none renamed):
//! ```json
//! {"members": 3, "reachable": 3, "master": 1,
//!  "nodes": [{"address": "127.0.0.1:7701", "id": 1, "reachable": true, "role": "master",
//!             "epoch": 2, "applied": "2:17", "applied_zxid": 8589934609, "committed": "2:17",
//!             "committed_zxid": 8589934609, "frozen": false, "master": 1,
//!             "load": {"cpu_permille": 12, "mem_permille": 40, "inflight": 0},
//!             "last_seen_ms": 312, "transfer": null, "error": null}]}
//! ```
//! `role` is `looking`, `follower`, `master` or null (unreachable); zxids are given both as
//! `epoch:counter` text and as the 64-bit number; `last_seen_ms` is how long ago this client
//! last heard the node's FSLive (null if never); `error` says why an unreachable node did not
//! answer.

use crate::exit;
use cache_client::Client;
use cache_client::ClientError;
use cache_client::Transport;
use protocol::message::data::{NodeStatus, Role};
use protocol::NodeId;
use serde::Serialize;
use std::io::Write;
use std::time::{Duration, Instant};

/// How long status waits for the group's FSLive to name the nodes before it prints.
pub const FSLIVE_WAIT: Duration = Duration::from_millis(1_200);
/// Most nodes one status lists (a cluster has at most 7; FSLive may name a few more briefly).
pub const NODES_MAX: usize = 16;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LoadView {
    pub cpu_permille: u16,
    pub mem_permille: u16,
    pub inflight: u32,
}

/// One row of the table (see the module docs for the JSON form).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeRow {
    pub address: String,
    pub id: Option<NodeId>,
    pub reachable: bool,
    pub role: Option<&'static str>,
    pub epoch: Option<u32>,
    pub applied: Option<String>,
    pub applied_zxid: Option<u64>,
    pub committed: Option<String>,
    pub committed_zxid: Option<u64>,
    pub frozen: Option<bool>,
    pub master: Option<NodeId>,
    pub load: Option<LoadView>,
    pub last_seen_ms: Option<u64>,
    pub transfer: Option<String>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StatusReport {
    pub members: usize,
    pub reachable: usize,
    /// The node that reports itself master, if one answered.
    pub master: Option<NodeId>,
    pub nodes: Vec<NodeRow>,
}

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Looking => "looking",
        Role::Follower => "follower",
        Role::Master => "master",
    }
}

/// Builds a report from the addresses asked, their answers and what FSLive said.
pub fn report(
    answers: Vec<(String, Result<NodeStatus, ClientError>)>,
    views: &[cache_client::routing::NodeView],
    now: Instant,
) -> StatusReport {
    let mut nodes = Vec::new();
    for (address, answer) in answers {
        let view = views.iter().find(|v| v.address == address && v.node.is_some());
        let last_seen_ms =
            view.map(|v| now.saturating_duration_since(v.last_heard).as_millis() as u64);
        let row = match answer {
            Ok(s) => NodeRow {
                address,
                id: Some(s.node),
                reachable: true,
                role: Some(role_name(s.role)),
                epoch: Some(s.epoch),
                applied: Some(s.applied.to_string()),
                applied_zxid: Some(s.applied.0),
                committed: Some(s.committed.to_string()),
                committed_zxid: Some(s.committed.0),
                frozen: Some(s.frozen),
                master: s.master,
                load: Some(LoadView {
                    cpu_permille: s.load.cpu_permille,
                    mem_permille: s.load.mem_permille,
                    inflight: s.load.inflight,
                }),
                last_seen_ms,
                transfer: s.transfer,
                error: None,
            },
            Err(e) => NodeRow {
                address,
                id: view.and_then(|v| v.node),
                reachable: false,
                role: None,
                epoch: None,
                applied: None,
                applied_zxid: None,
                committed: None,
                committed_zxid: None,
                frozen: None,
                master: None,
                load: None,
                last_seen_ms,
                transfer: None,
                error: Some(e.to_string()),
            },
        };
        nodes.push(row);
    }
    nodes.sort_by(|a, b| {
        (a.id.is_none(), a.id, &a.address).cmp(&(b.id.is_none(), b.id, &b.address))
    });
    let reachable = nodes.iter().filter(|n| n.reachable).count();
    let master = nodes.iter().find(|n| n.role == Some("master")).and_then(|n| n.id);
    StatusReport { members: nodes.len(), reachable, master, nodes }
}

/// The table `shoal status` prints.
pub fn render_table(report: &StatusReport) -> String {
    let dash = || "-".to_string();
    let mut rows = vec![[
        "ID",
        "ADDRESS",
        "ROLE",
        "EPOCH",
        "APPLIED",
        "COMMITTED",
        "FROZEN",
        "LOAD",
        "LAST SEEN",
        "TRANSFER",
    ]
    .map(String::from)];
    for n in &report.nodes {
        rows.push([
            n.id.map_or_else(dash, |i| i.to_string()),
            n.address.clone(),
            if n.reachable { n.role.unwrap_or("?").to_string() } else { "unreachable".into() },
            n.epoch.map_or_else(dash, |e| e.to_string()),
            n.applied.clone().unwrap_or_else(dash),
            n.committed.clone().unwrap_or_else(dash),
            n.frozen.map_or_else(dash, |f| if f { "yes".into() } else { "no".into() }),
            n.load.as_ref().map_or_else(dash, |l| {
                format!(
                    "cpu {}% mem {}% inflight {}",
                    l.cpu_permille / 10,
                    l.mem_permille / 10,
                    l.inflight
                )
            }),
            n.last_seen_ms.map_or_else(dash, |ms| format!("{:.1}s ago", ms as f64 / 1000.0)),
            n.transfer.clone().unwrap_or_else(dash),
        ]);
    }
    let widths: Vec<usize> =
        (0..rows[0].len()).map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> =
            row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    let master = report.master.map_or_else(|| "none".to_string(), |m| m.to_string());
    out.push_str(&format!(
        "{} of {} nodes reachable; master: {master}\n",
        report.reachable, report.members
    ));
    for n in report.nodes.iter().filter(|n| !n.reachable) {
        if let Some(e) = &n.error {
            out.push_str(&format!("{}: {e}\n", n.address));
        }
    }
    out
}

/// Asks every node the client knows of (its seeds, then whatever FSLive named within
/// [`FSLIVE_WAIT`]) for its status, all at once; one answer per address, in that order.
/// `shoal status` prints them; `shoal backup` picks its donor from them.
pub async fn survey<T: Transport>(
    client: &Client<T>,
) -> Result<Vec<(String, Result<NodeStatus, ClientError>)>, ClientError> {
    // FSLive names nodes beyond the seeds and tells when each was last heard. Tokio's clock,
    // so that paused-time tests wait in simulated time.
    let deadline = tokio::time::Instant::now() + FSLIVE_WAIT;
    let mut addresses = client.config().seeds.clone();
    while tokio::time::Instant::now() < deadline {
        client.pump();
        let views = client.node_views();
        let named =
            addresses.iter().all(|a| views.iter().any(|v| &v.address == a && v.node.is_some()));
        if named && !addresses.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client.pump();
    for view in client.node_views() {
        if view.node.is_some() && !addresses.contains(&view.address) {
            addresses.push(view.address.clone());
        }
    }
    addresses.truncate(NODES_MAX);
    if addresses.is_empty() {
        return Err(ClientError::Unavailable {
            detail: "no node address known: the cluster file lists no members".into(),
        });
    }
    let mut asks = tokio::task::JoinSet::new();
    for (i, address) in addresses.iter().enumerate() {
        let (client, address) = (client.clone(), address.clone());
        asks.spawn(async move { (i, client.status_of(&address).await) });
    }
    let mut answers: Vec<(String, Result<NodeStatus, ClientError>)> = addresses
        .iter()
        .map(|a| (a.clone(), Err(ClientError::Transport("status request lost".into()))))
        .collect();
    while let Some(joined) = asks.join_next().await {
        if let Ok((i, answer)) = joined {
            answers[i].1 = answer;
        }
    }
    Ok(answers)
}

/// Asks every known node for its status and prints the table (or JSON); returns the exit code.
pub async fn execute<T: Transport>(
    client: &Client<T>,
    json: bool,
    out: &mut impl Write,
) -> Result<i32, ClientError> {
    let answers = survey(client).await?;
    client.pump();
    let report = report(answers, &client.node_views(), Instant::now());
    let io = |e: std::io::Error| ClientError::Transport(format!("writing output: {e}"));
    if json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| ClientError::Transport(format!("encoding JSON: {e}")))?;
        writeln!(out, "{text}").map_err(io)?;
    } else {
        out.write_all(render_table(&report).as_bytes()).map_err(io)?;
    }
    if report.reachable == 0 {
        eprintln!("shoal: no node answered a status request; is the cluster running?");
        return Ok(exit::UNREACHABLE);
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::message::data::Load;
    use protocol::Zxid;

    fn status(node: NodeId, role: Role) -> NodeStatus {
        NodeStatus {
            node,
            role,
            epoch: 2,
            applied: Zxid::new(2, 5),
            committed: Zxid::new(2, 5),
            frozen: false,
            load: Load { cpu_permille: 100, mem_permille: 200, inflight: 1 },
            master: Some(1),
            transfer: None,
        }
    }

    #[test]
    fn report_sorts_by_id_counts_reachable_and_keeps_the_reason_of_a_silent_node() {
        let answers = vec![
            ("b:2".to_string(), Ok(status(2, Role::Follower))),
            ("c:3".to_string(), Err(ClientError::Timeout { attempts: 1 })),
            ("a:1".to_string(), Ok(status(1, Role::Master))),
        ];
        let r = report(answers, &[], Instant::now());
        assert_eq!(r.members, 3);
        assert_eq!(r.reachable, 2);
        assert_eq!(r.master, Some(1));
        let order: Vec<&str> = r.nodes.iter().map(|n| n.address.as_str()).collect();
        assert_eq!(order, ["a:1", "b:2", "c:3"], "known ids first, the unnamed silent node last");
        assert_eq!(r.nodes[0].applied.as_deref(), Some("2:5"));
        assert_eq!(r.nodes[0].applied_zxid, Some(Zxid::new(2, 5).0));
        assert!(!r.nodes[2].reachable);
        assert!(r.nodes[2].error.is_some());
        let table = render_table(&r);
        assert!(table.contains("unreachable"), "{table}");
        assert!(table.contains("2 of 3 nodes reachable; master: 1"), "{table}");
        assert!(table.contains("cpu 10% mem 20% inflight 1"), "{table}");
    }

    #[test]
    fn json_field_names_are_the_documented_ones() {
        let r = report(vec![("a:1".into(), Ok(status(1, Role::Master)))], &[], Instant::now());
        let v = serde_json::to_value(&r).unwrap();
        for field in ["members", "reachable", "master", "nodes"] {
            assert!(v.get(field).is_some(), "{field}");
        }
        let n = &v["nodes"][0];
        for field in [
            "address",
            "id",
            "reachable",
            "role",
            "epoch",
            "applied",
            "applied_zxid",
            "committed",
            "committed_zxid",
            "frozen",
            "master",
            "load",
            "last_seen_ms",
            "transfer",
            "error",
        ] {
            assert!(n.get(field).is_some(), "{field}");
        }
        assert_eq!(n["role"], "master");
    }
}
