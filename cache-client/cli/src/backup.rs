//! `shoal backup`: ask one node (the donor) to make a consistent backup of its data, either
//! onto another member (`--to-node N`) or into a directory on the donor's own host
//! (`--to-dir PATH`), then follow its progress until it ends.
//!
//! # What goes over the wire
//! 1. A status request to every known node (as `shoal status`), to check the node ids given and
//!    to choose the donor.
//! 2. `Message::Backup(Backup { target })` as a unicast request to the donor. It answers at once:
//!    `ReadReply { result: Ok(ReadValue::Bool(true)) }` when the backup started, or
//!    `Err(WireError)` with its reason for refusing (unknown node, a transfer already running,
//!    no room, ...). The request is sent once (it is not idempotent); when its reply does not
//!    come, the donor's status decides: a new transfer there means the backup started.
//! 3. The donor's status every [`POLL_INTERVAL`]; its `transfer` field is the progress text
//!    while the backup runs, then `"done: ..."` or `"failed: ..."` for a while after it ends.
//!
//! # The donor
//! `--from-node D` names it. Otherwise the follower with the lowest load (the larger of its CPU
//! and memory use, then its requests in flight) that is not frozen, not busy with another
//! transfer and not the target; when there is none, the master. A backup freezes the donor's
//! data files and reads all of them from disk, so it is kept off the master, which orders every
//! write, and off the busiest node, which serves the most reads.
//!
//! # Exit codes (from the table in [`crate::exit`])
//! | code | meaning |
//! | --- | --- |
//! | 0 | the donor reported `done: ...` (printed on stdout) |
//! | 2 | bad arguments: neither or both of `--to-node` and `--to-dir`, a node that is not a member, the donor as its own target, a relative `--to-dir` |
//! | 4 | the donor (or every node) did not answer |
//! | 7 | the donor refused to start the backup (its reason is printed) |
//! | 8 | the backup started and then failed (the donor's `failed: ...` is printed) |
//! | 9 | no result within `--timeout`: the backup may still be running (see `shoal status`) |
//!
//! Progress goes to stderr: one line rewritten in place (`\r`) on a terminal, otherwise one
//! line per change.

use crate::exit;
use cache_client::Client;
use cache_client::ClientError;
use cache_client::Transport;
use clap::Args;
use protocol::message::data::{NodeStatus, Role};
use protocol::message::transfer::BackupTarget;
use protocol::NodeId;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::time::Duration;

/// How often the donor's status is asked while the backup runs.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Default of `--timeout`, in seconds: generous, a backup of a large store takes minutes.
pub const TIMEOUT_SECS_DEFAULT: u64 = 600;
/// The prefix of the donor's `transfer` text once the backup succeeded.
pub const DONE_PREFIX: &str = "done: ";
/// The prefix of the donor's `transfer` text once the backup failed.
pub const FAILED_PREFIX: &str = "failed: ";

/// `shoal backup` flags. Exactly one of `--to-node` and `--to-dir` (checked by [`target`], so
/// that a mistake prints one line).
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct BackupArgs {
    /// Copy the donor's data files to member node N, which keeps them under its data directory
    /// (`backups/<donor>-<zxid>/`), ready for `shoal-fs restore`.
    #[arg(long = "to-node", value_name = "N")]
    pub to_node: Option<NodeId>,
    /// Write the backup into directory PATH on the donor's host (an absolute path).
    #[arg(long = "to-dir", value_name = "PATH")]
    pub to_dir: Option<String>,
    /// The node that makes the backup. Default: the least loaded follower that is not frozen
    /// or busy with another transfer (and not the target), else the master — a backup freezes
    /// the donor's files and reads them all, so it is kept off the master and busy nodes.
    #[arg(long = "from-node", value_name = "D")]
    pub from_node: Option<NodeId>,
    /// Stop waiting after this many seconds (exit 9; the backup may still finish).
    #[arg(long, value_name = "SECS", default_value_t = TIMEOUT_SECS_DEFAULT)]
    pub timeout: u64,
}

/// Why `shoal backup` stopped without a result; each maps to one exit code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackupError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Unreachable(String),
    #[error("node {donor} refused the backup: {reason}")]
    Refused { donor: NodeId, reason: String },
    #[error("backup on node {donor} {text}")]
    Failed { donor: NodeId, text: String },
    #[error(
        "no result from node {donor} within {secs} s; the backup may still be running \
         (see the TRANSFER column of `shoal status`)"
    )]
    TimedOut { donor: NodeId, secs: u64 },
}

impl BackupError {
    pub fn exit_code(&self) -> i32 {
        match self {
            BackupError::Usage(_) => exit::USAGE,
            BackupError::Unreachable(_) => exit::UNREACHABLE,
            BackupError::Refused { .. } => exit::BACKUP_REFUSED,
            BackupError::Failed { .. } => exit::BACKUP_FAILED,
            BackupError::TimedOut { .. } => exit::BACKUP_TIMEOUT,
        }
    }
}

/// The target the flags name, or the one-line reason they are wrong.
pub fn target(args: &BackupArgs) -> Result<BackupTarget, BackupError> {
    match (&args.to_node, &args.to_dir) {
        (Some(n), None) => Ok(BackupTarget::Node(*n)),
        (None, Some(path)) if path.starts_with('/') => Ok(BackupTarget::Directory(path.clone())),
        (None, Some(path)) => Err(BackupError::Usage(format!(
            "--to-dir {path:?} must be an absolute path (it is a directory on the donor's host)"
        ))),
        (Some(_), Some(_)) => {
            Err(BackupError::Usage("give one of --to-node N and --to-dir PATH, not both".into()))
        }
        (None, None) => Err(BackupError::Usage(
            "say where the backup goes: --to-node N (another member) or --to-dir PATH (on the \
             donor's host)"
                .into(),
        )),
    }
}

/// The donor when none is named (see the module docs): the least loaded follower that is not
/// frozen, not running another transfer and not `exclude`; else the master, unless excluded.
pub fn choose_donor(nodes: &[NodeStatus], exclude: Option<NodeId>) -> Option<NodeId> {
    let eligible = |s: &&NodeStatus| Some(s.node) != exclude;
    let idle = |s: &&NodeStatus| !s.frozen && s.transfer.as_deref().is_none_or(is_finished);
    let follower =
        nodes.iter().filter(eligible).filter(idle).filter(|s| s.role == Role::Follower).min_by_key(
            |s| (s.load.cpu_permille.max(s.load.mem_permille), s.load.inflight, s.node),
        );
    follower
        .or_else(|| nodes.iter().filter(eligible).find(|s| s.role == Role::Master))
        .map(|s| s.node)
}

/// Whether a `transfer` text reports an ended transfer (not one under way).
pub fn is_finished(text: &str) -> bool {
    text.starts_with(DONE_PREFIX) || text.starts_with(FAILED_PREFIX)
}

/// Where progress lines go and how.
pub struct Progress<'a> {
    pub out: &'a mut (dyn Write + Send),
    /// A terminal: one line rewritten in place. Otherwise one line per change.
    pub terminal: bool,
    shown: Option<String>,
}

impl<'a> Progress<'a> {
    pub fn new(out: &'a mut (dyn Write + Send), terminal: bool) -> Progress<'a> {
        Progress { out, terminal, shown: None }
    }

    fn show(&mut self, line: &str) {
        if self.shown.as_deref() == Some(line) {
            return;
        }
        // Progress is advisory: a closed stderr must not stop the backup's supervision.
        let _ = if self.terminal {
            write!(self.out, "\r{line}\x1b[K")
        } else {
            writeln!(self.out, "{line}")
        };
        let _ = self.out.flush();
        self.shown = Some(line.to_string());
    }

    /// Ends an in-place line so that what follows starts on its own line.
    fn finish(&mut self) {
        if self.terminal && self.shown.is_some() {
            let _ = writeln!(self.out);
        }
    }
}

/// Runs `shoal backup`. `members` are the cluster file's (id → address; may be empty, then
/// the ids come from the nodes' answers and FSLive). On success the donor's `done: ...` line
/// goes to `out`; every diagnostic is the returned error's one line.
pub async fn execute<T: Transport>(
    client: &Client<T>,
    args: &BackupArgs,
    members: &BTreeMap<NodeId, String>,
    out: &mut impl Write,
    progress: &mut Progress<'_>,
) -> Result<(), BackupError> {
    let target = target(args)?;
    let answers = crate::status::survey(client).await.map_err(unreachable)?;
    client.pump();
    let mut known: BTreeSet<NodeId> = members.keys().copied().collect();
    let mut statuses: Vec<(String, NodeStatus)> = Vec::new();
    for (address, answer) in answers {
        if let Ok(status) = answer {
            known.insert(status.node);
            statuses.push((address, status));
        }
    }
    known.extend(client.node_views().iter().filter_map(|v| v.node));
    let member = |id: NodeId, flag: &str| {
        if known.contains(&id) {
            Ok(id)
        } else {
            Err(BackupError::Usage(format!(
                "{flag} {id}: no such member (members: {})",
                known.iter().map(|k| k.to_string()).collect::<Vec<_>>().join(", ")
            )))
        }
    };
    let to_node = args.to_node.map(|n| member(n, "--to-node")).transpose()?;
    let from_node = args.from_node.map(|d| member(d, "--from-node")).transpose()?;
    if from_node.is_some() && from_node == to_node {
        return Err(BackupError::Usage(
            "--from-node and --to-node name the same node; a backup goes to another member".into(),
        ));
    }
    let nodes: Vec<NodeStatus> = statuses.iter().map(|(_, s)| s.clone()).collect();
    let donor = match from_node {
        Some(d) => d,
        None => choose_donor(&nodes, to_node).ok_or_else(|| {
            BackupError::Unreachable(format!(
                "no node can make the backup: {} of {} members answered, none a follower or \
                 master that could donate",
                statuses.len(),
                known.len()
            ))
        })?,
    };
    let Some((address, before)) = statuses
        .iter()
        .find(|(_, s)| s.node == donor)
        .map(|(a, s)| (a.clone(), s.transfer.clone()))
    else {
        return Err(BackupError::Unreachable(format!(
            "node {donor} did not answer a status request; is it running?"
        )));
    };
    let mut seen = None;
    match client.start_backup(&address, target.clone()).await {
        Ok(Ok(())) => {}
        Ok(Err(refusal)) => return Err(BackupError::Refused { donor, reason: refusal.message }),
        // The request is not repeated (a second one would be refused as "already running"),
        // but its reply may be what was lost: a new transfer in the donor's status means it
        // started.
        Err(e) => match client.status_of(&address).await {
            Ok(status) if status.transfer.is_some() && status.transfer != before => {
                seen = status.transfer;
            }
            _ => {
                return Err(BackupError::Unreachable(format!(
                    "asking node {donor} ({address}): {e}"
                )))
            }
        },
    }
    let what = match &target {
        BackupTarget::Node(n) => format!("to node {n}"),
        BackupTarget::Directory(path) => format!("into {path} on node {donor}'s host"),
    };
    progress.show(&format!("backup {what} started by node {donor}"));
    let result = match seen {
        Some(text) if is_finished(&text) => ended(donor, text),
        Some(text) => {
            progress.show(&format!("node {donor}: {text}"));
            follow(client, donor, &address, before, args.timeout, progress).await
        }
        None => follow(client, donor, &address, before, args.timeout, progress).await,
    };
    progress.finish();
    let done = result?;
    // A closed stdout loses only the echo of what the node already did.
    let _ = writeln!(out, "{done}");
    Ok(())
}

/// Polls the donor's status until its transfer text ends the backup or `timeout_secs` pass.
/// A terminal text equal to the one seen before the backup started is the previous transfer's
/// (nodes keep it for a while) and is not taken as this one's end.
async fn follow<T: Transport>(
    client: &Client<T>,
    donor: NodeId,
    address: &str,
    before: Option<String>,
    timeout_secs: u64,
    progress: &mut Progress<'_>,
) -> Result<String, BackupError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout_secs);
    let mut stale = before.filter(|t| is_finished(t));
    loop {
        if tokio::time::Instant::now() >= deadline {
            return Err(BackupError::TimedOut { donor, secs: timeout_secs });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
        match client.status_of(address).await {
            Ok(status) => match status.transfer {
                Some(text) if stale.as_deref() == Some(text.as_str()) => {}
                Some(text) if is_finished(&text) => return ended(donor, text),
                Some(text) => {
                    stale = None;
                    progress.show(&format!("node {donor}: {text}"));
                }
                None => {}
            },
            // A donor busy reading its files may miss a status request: keep asking.
            Err(e) => progress.show(&format!("node {donor}: no status answer ({e}); still asking")),
        }
    }
}

/// The outcome a finished `transfer` text reports.
fn ended(donor: NodeId, text: String) -> Result<String, BackupError> {
    if text.starts_with(DONE_PREFIX) {
        Ok(text)
    } else {
        Err(BackupError::Failed { donor, text })
    }
}

fn unreachable(e: ClientError) -> BackupError {
    BackupError::Unreachable(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::message::data::Load;
    use protocol::Zxid;

    fn node(node: NodeId, role: Role, cpu: u16, mem: u16) -> NodeStatus {
        NodeStatus {
            node,
            role,
            epoch: 1,
            applied: Zxid::new(1, 1),
            committed: Zxid::new(1, 1),
            frozen: false,
            load: Load { cpu_permille: cpu, mem_permille: mem, inflight: 0 },
            master: Some(1),
            transfer: None,
        }
    }

    fn args(to_node: Option<NodeId>, to_dir: Option<&str>) -> BackupArgs {
        BackupArgs {
            to_node,
            to_dir: to_dir.map(String::from),
            from_node: None,
            timeout: TIMEOUT_SECS_DEFAULT,
        }
    }

    /// The default donor is the follower whose larger load figure is lowest; never the
    /// target, a frozen node or one already transferring; the master only when no follower
    /// qualifies; nobody when only the target (or nodes still electing) answered.
    #[test]
    fn donor_is_the_least_loaded_idle_follower_else_the_master() {
        let master = node(1, Role::Master, 0, 0);
        let busy = node(2, Role::Follower, 100, 600);
        let light = node(3, Role::Follower, 300, 300);
        let all = [master.clone(), busy.clone(), light.clone()];
        assert_eq!(choose_donor(&all, None), Some(3), "max(cpu, mem) 300 beats 600");
        assert_eq!(choose_donor(&all, Some(3)), Some(2), "the target is never its own donor");
        let mut frozen = light.clone();
        frozen.frozen = true;
        let mut transferring = busy.clone();
        transferring.transfer = Some("sending 3 files: 10%".into());
        assert_eq!(choose_donor(&[master.clone(), transferring.clone(), frozen], None), Some(1));
        let mut finished = busy.clone();
        finished.transfer = Some("done: backup to node 3 1024 bytes in 1 s".into());
        assert_eq!(choose_donor(&[master.clone(), finished], None), Some(2));
        assert_eq!(choose_donor(std::slice::from_ref(&master), Some(1)), None);
        assert_eq!(choose_donor(&[node(2, Role::Looking, 0, 0)], None), None);
    }

    /// Exactly one destination, and a directory must be absolute; each mistake is one line.
    #[test]
    fn target_needs_exactly_one_destination() {
        assert_eq!(target(&args(Some(2), None)), Ok(BackupTarget::Node(2)));
        assert_eq!(
            target(&args(None, Some("/var/backups/shoal"))),
            Ok(BackupTarget::Directory("/var/backups/shoal".into()))
        );
        for bad in [args(Some(2), Some("/x")), args(None, None), args(None, Some("rel/dir"))] {
            let e = target(&bad).unwrap_err();
            assert_eq!(e.exit_code(), exit::USAGE);
            assert!(!e.to_string().contains('\n'), "one line: {e}");
        }
    }

    /// On a terminal the line is rewritten in place and ended once; elsewhere each change is
    /// its own line and repeats are not printed.
    #[test]
    fn progress_rewrites_on_a_terminal_and_prints_changes_elsewhere() {
        let mut buf = Vec::new();
        let mut p = Progress::new(&mut buf, true);
        p.show("a");
        p.show("a");
        p.show("b");
        p.finish();
        assert_eq!(String::from_utf8(buf).unwrap(), "\ra\x1b[K\rb\x1b[K\n");
        let mut buf = Vec::new();
        let mut p = Progress::new(&mut buf, false);
        p.show("a");
        p.show("a");
        p.show("b");
        p.finish();
        assert_eq!(String::from_utf8(buf).unwrap(), "a\nb\n");
    }
}
