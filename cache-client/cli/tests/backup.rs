//! `shoal backup` against fake nodes on the in-memory network that answer the wire contract
//! (a status request, and a `Backup` request answered `Bool(true)` or a refusal, then progress
//! in `NodeStatus::transfer`): the donor it picks, what it prints, and every exit code —
//! done, refused, failed, timed out, bad arguments, donor down. Time is paused, so the
//! 500 ms polls and the timeouts cost nothing.

use cache_client::transport::{MemNetwork, MemTransport};
use cache_client::{Client, ClientConfig};
use clap::Parser;
use protocol::message::data::{
    ErrorCode, Load, NodeStatus, ReadOp, ReadReply, ReadValue, Role, WireError,
};
use protocol::message::transfer::BackupTarget;
use protocol::message::Message;
use protocol::{NodeId, Zxid};
use shoal_cli::backup::{self, BackupError, Progress};
use shoal_cli::cli::{Cli, Command};
use shoal_cli::exit;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a fake node does with a Backup request.
#[derive(Clone)]
enum OnBackup {
    /// Start: later status answers show these transfer texts in turn (the last one stays).
    Start(Vec<&'static str>),
    /// Start, but the reply is lost (the requester times out).
    StartReplyLost(Vec<&'static str>),
    Refuse(&'static str),
}

struct FakeState {
    status: NodeStatus,
    on_backup: OnBackup,
    script: VecDeque<&'static str>,
    backups: Vec<BackupTarget>,
}

#[derive(Clone)]
struct FakeNode(Arc<Mutex<FakeState>>);

impl FakeNode {
    fn new(node: NodeId, role: Role, cpu_permille: u16, on_backup: OnBackup) -> FakeNode {
        FakeNode(Arc::new(Mutex::new(FakeState {
            status: NodeStatus {
                node,
                role,
                epoch: 1,
                applied: Zxid::new(1, 9),
                committed: Zxid::new(1, 9),
                frozen: false,
                load: Load { cpu_permille, mem_permille: 0, inflight: 0 },
                master: Some(1),
                transfer: None,
            },
            on_backup,
            script: VecDeque::new(),
            backups: Vec::new(),
        })))
    }

    fn backups(&self) -> Vec<BackupTarget> {
        self.0.lock().unwrap().backups.clone()
    }

    fn set_transfer(&self, text: Option<String>) {
        self.0.lock().unwrap().status.transfer = text;
    }

    fn answer(&self, message: Message) -> Option<Message> {
        let mut st = self.0.lock().unwrap();
        let result = match message {
            Message::Request(r) if r.op == ReadOp::Status => {
                if st.script.len() > 1 {
                    let next = st.script.pop_front().expect("non-empty");
                    st.status.transfer = Some(next.to_string());
                } else if let Some(last) = st.script.front() {
                    st.status.transfer = Some(last.to_string());
                }
                Ok(ReadValue::Status(st.status.clone()))
            }
            Message::Backup(b) => {
                st.backups.push(b.target);
                match st.on_backup.clone() {
                    OnBackup::Start(script) => {
                        st.script = script.into_iter().collect();
                        Ok(ReadValue::Bool(true))
                    }
                    OnBackup::StartReplyLost(script) => {
                        st.script = script.into_iter().collect();
                        return None;
                    }
                    OnBackup::Refuse(reason) => {
                        Err(WireError { code: ErrorCode::Unavailable, message: reason.into() })
                    }
                }
            }
            _ => return None,
        };
        let load = st.status.load;
        Some(Message::ReadReply(ReadReply { applied: st.status.applied, load, result }))
    }
}

fn address(node: NodeId) -> String {
    format!("n{node}")
}

struct Fixture {
    network: MemNetwork,
    nodes: BTreeMap<NodeId, FakeNode>,
}

impl Fixture {
    /// Node 1 the master; nodes 2 and 3 followers with CPU loads 500‰ and 100‰.
    fn new(on_backup: [OnBackup; 3]) -> Fixture {
        let network = MemNetwork::new();
        let mut nodes = BTreeMap::new();
        let [b1, b2, b3] = on_backup;
        for (id, role, cpu, on) in
            [(1, Role::Master, 0, b1), (2, Role::Follower, 500, b2), (3, Role::Follower, 100, b3)]
        {
            let fake = FakeNode::new(id, role, cpu, on);
            let answering = fake.clone();
            network.add_node(
                address(id),
                Arc::new(move |m| {
                    let reply = answering.answer(m);
                    Box::pin(async move { reply })
                }),
            );
            nodes.insert(id, fake);
        }
        Fixture { network, nodes }
    }

    fn client(&self) -> Client<MemTransport> {
        let config = ClientConfig {
            seeds: self.nodes.keys().map(|id| address(*id)).collect(),
            request_timeout: Duration::from_secs(1),
            rng_seed: Some(7),
            ..ClientConfig::default()
        };
        Client::new(self.network.transport(), config)
    }

    fn members(&self) -> BTreeMap<NodeId, String> {
        self.nodes.keys().map(|id| (*id, address(*id))).collect()
    }

    /// Runs `shoal backup ARGS`; returns (exit code, stdout, progress lines, error line).
    async fn run(&self, args: &[&str]) -> (i32, String, String, String) {
        let mut argv = vec!["shoal", "backup"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).expect("valid flags");
        let Command::Backup(args) = cli.command else { panic!("not a backup command") };
        let client = self.client();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut progress = Progress::new(&mut err, false);
        let result =
            backup::execute(&client, &args, &self.members(), &mut out, &mut progress).await;
        let (code, line) = match result {
            Ok(()) => (exit::OK, String::new()),
            Err(e) => (e.exit_code(), e.to_string()),
        };
        (code, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap(), line)
    }
}

fn idle() -> OnBackup {
    OnBackup::Refuse("this node was not expected to be asked")
}

/// Claim: with no --from-node, `--to-node 3` goes to the least loaded follower that is not the
/// target (node 2, although node 3 is lighter), exactly one Backup request is sent, each
/// progress text is shown once, and the donor's `done: ...` line is printed with exit 0.
#[tokio::test(start_paused = true)]
async fn backup_to_a_node_runs_on_the_least_loaded_other_follower_and_prints_done() {
    let done = "done: backup to node 3 2048 bytes in 1 s";
    let f = Fixture::new([
        idle(),
        OnBackup::Start(vec!["sending 2 files: 10%", "sending 2 files: 10%", "sending: 60%", done]),
        idle(),
    ]);
    let (code, out, progress, error) = f.run(&["--to-node", "3"]).await;
    assert_eq!(code, exit::OK, "{error}");
    assert_eq!(out, format!("{done}\n"));
    assert_eq!(f.nodes[&2].backups(), vec![BackupTarget::Node(3)]);
    assert!(f.nodes[&1].backups().is_empty() && f.nodes[&3].backups().is_empty());
    assert_eq!(
        progress,
        "backup to node 3 started by node 2\nnode 2: sending 2 files: 10%\nnode 2: sending: 60%\n"
    );
}

/// Claim: with no target excluded the lightest follower (node 3) donates, and `--to-dir` sends
/// the path as given.
#[tokio::test(start_paused = true)]
async fn backup_to_a_directory_uses_the_lightest_follower() {
    let f = Fixture::new([idle(), idle(), OnBackup::Start(vec!["done: /srv/b 10 bytes in 0 s"])]);
    let (code, out, _, error) = f.run(&["--to-dir", "/srv/b"]).await;
    assert_eq!(code, exit::OK, "{error}");
    assert_eq!(out, "done: /srv/b 10 bytes in 0 s\n");
    assert_eq!(f.nodes[&3].backups(), vec![BackupTarget::Directory("/srv/b".into())]);
}

/// Claim: a refusal is printed with the donor's reason and exits 7; nothing is polled for.
#[tokio::test(start_paused = true)]
async fn a_refused_backup_prints_the_reason_and_exits_7() {
    let f = Fixture::new([OnBackup::Refuse("a transfer is already running"), idle(), idle()]);
    let (code, out, _, error) = f.run(&["--from-node", "1", "--to-dir", "/b"]).await;
    assert_eq!(code, exit::BACKUP_REFUSED);
    assert_eq!(error, "node 1 refused the backup: a transfer is already running");
    assert!(out.is_empty());
}

/// Claim: a backup that reports `failed: ...` exits 8 with that text.
#[tokio::test(start_paused = true)]
async fn a_failed_backup_exits_8_with_the_donors_text() {
    let f = Fixture::new([
        idle(),
        OnBackup::Start(vec!["sending: 5%", "failed: node 3 has no room (needs 9 GiB)"]),
        idle(),
    ]);
    let (code, out, _, error) = f.run(&["--from-node", "2", "--to-node", "3"]).await;
    assert_eq!(code, exit::BACKUP_FAILED);
    assert_eq!(error, "backup on node 2 failed: node 3 has no room (needs 9 GiB)");
    assert!(out.is_empty());
}

/// Claim: a backup that never ends stops being followed after --timeout (exit 9), no sooner.
#[tokio::test(start_paused = true)]
async fn a_backup_with_no_result_times_out_with_exit_9() {
    let f = Fixture::new([idle(), OnBackup::Start(vec!["sending: 1%"]), idle()]);
    let started = tokio::time::Instant::now();
    let (code, _, _, error) = f.run(&["--to-node", "3", "--timeout", "5"]).await;
    assert_eq!(code, exit::BACKUP_TIMEOUT, "{error}");
    assert!(error.contains("within 5 s"), "{error}");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(5), "gave up after {waited:?}");
    assert!(waited < Duration::from_secs(9), "kept waiting for {waited:?}");
}

/// Claim: the `done:` a node still shows from its previous transfer is not taken for the end
/// of this one; the new result is.
#[tokio::test(start_paused = true)]
async fn the_previous_transfers_result_is_not_taken_for_this_ones() {
    let old = "done: backup to node 3 5 bytes in 0 s";
    let f = Fixture::new([
        idle(),
        OnBackup::Start(vec![old, old, "sending: 50%", "done: backup to node 3 6 bytes in 1 s"]),
        idle(),
    ]);
    f.nodes[&2].set_transfer(Some(old.into()));
    let (code, out, _, error) = f.run(&["--to-node", "3"]).await;
    assert_eq!(code, exit::OK, "{error}");
    assert_eq!(out, "done: backup to node 3 6 bytes in 1 s\n");
}

/// Claim: when the donor starts the backup but its answer is lost, the backup is followed
/// anyway (the donor's status shows the new transfer) and not sent a second time.
#[tokio::test(start_paused = true)]
async fn a_lost_start_reply_is_recovered_from_the_donors_status() {
    let f = Fixture::new([
        idle(),
        OnBackup::StartReplyLost(vec!["sending: 40%", "done: backup to node 3 7 bytes in 2 s"]),
        idle(),
    ]);
    let (code, out, progress, error) = f.run(&["--to-node", "3"]).await;
    assert_eq!(code, exit::OK, "{error}");
    assert_eq!(out, "done: backup to node 3 7 bytes in 2 s\n");
    assert!(progress.contains("node 2: sending: 40%"), "{progress}");
    assert_eq!(f.nodes[&2].backups(), vec![BackupTarget::Node(3)], "sent exactly once");
}

/// Claim: a lost reply with no sign of a transfer at the donor is reported as unreachable.
#[tokio::test(start_paused = true)]
async fn a_lost_start_reply_with_no_transfer_at_the_donor_exits_4() {
    let f = Fixture::new([idle(), OnBackup::StartReplyLost(vec![]), idle()]);
    let (code, _, _, error) = f.run(&["--to-node", "3"]).await;
    assert_eq!(code, exit::UNREACHABLE, "{error}");
    assert!(error.starts_with("asking node 2 (n2): "), "{error}");
}

/// Claim: bad arguments print one line, exit 2 and send no Backup request: neither or both
/// destinations, a relative directory, a node that is not a member, a node as its own donor.
#[tokio::test(start_paused = true)]
async fn bad_arguments_exit_2_with_one_line_and_send_nothing() {
    let f = Fixture::new([idle(), idle(), idle()]);
    for args in [
        &["--to-node", "2", "--to-dir", "/b"][..],
        &[][..],
        &["--to-dir", "relative/dir"][..],
        &["--to-node", "7"][..],
        &["--from-node", "9", "--to-dir", "/b"][..],
        &["--from-node", "2", "--to-node", "2"][..],
    ] {
        let (code, out, _, error) = f.run(args).await;
        assert_eq!(code, exit::USAGE, "{args:?}: {error}");
        assert!(!error.is_empty() && !error.contains('\n'), "{args:?}: one line: {error:?}");
        assert!(out.is_empty());
    }
    let (_, _, _, error) = f.run(&["--to-node", "7"]).await;
    assert_eq!(error, "--to-node 7: no such member (members: 1, 2, 3)");
    assert!(f.nodes.values().all(|n| n.backups().is_empty()));
}

/// Claim: a named donor that does not answer is reported as unreachable (exit 4), and so is a
/// cluster where no node answers.
#[tokio::test(start_paused = true)]
async fn a_silent_donor_or_cluster_exits_4() {
    let f = Fixture::new([idle(), idle(), idle()]);
    f.network.set_down(&address(2), true);
    let (code, _, _, error) = f.run(&["--from-node", "2", "--to-node", "3"]).await;
    assert_eq!(code, exit::UNREACHABLE, "{error}");
    assert_eq!(error, "node 2 did not answer a status request; is it running?");
    for id in [1, 3] {
        f.network.set_down(&address(id), true);
    }
    let (code, _, _, error) = f.run(&["--to-dir", "/b"]).await;
    assert_eq!(code, exit::UNREACHABLE, "{error}");
    assert!(f.nodes.values().all(|n| n.backups().is_empty()));
}

/// The error type's exit codes are the documented ones.
#[test]
fn backup_errors_map_to_the_documented_exit_codes() {
    let cases = [
        (BackupError::Usage("x".into()), 2),
        (BackupError::Unreachable("x".into()), 4),
        (BackupError::Refused { donor: 1, reason: "x".into() }, 7),
        (BackupError::Failed { donor: 1, text: "failed: x".into() }, 8),
        (BackupError::TimedOut { donor: 1, secs: 1 }, 9),
    ];
    for (error, code) in cases {
        assert_eq!(error.exit_code(), code, "{error:?}");
    }
}
