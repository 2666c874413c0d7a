//! File transfer end to end over real loopback multicast with the async drivers: real files
//! in a temporary directory, the donor's freeze, the seeded fault hook dropping 10 % of what
//! each receiver gets. Every test is bounded in time. Groups and ports come from a hash of the
//! test's name so that tests running at the same time never share a group.

use cache_server::transfer::files::{FrozenSet, FsSink, MemFreezer};
use cache_server::transfer::net::{
    request_offer, run_receiver, spawn_donor, spawn_donor_with, transfer_endpoint_config,
};
use cache_server::transfer::receiver::ReceiverOutcome;
use cache_server::transfer::{
    Donor, DonorConfig, DonorOutcome, FsSource, ReceiverConfig, TransferError,
};
use protocol::header::ClusterAuth;
use protocol::message::transfer::{RequestFile, TransferPurpose};
use protocol::message::Message;
use protocol::messaging::{Endpoint, EndpointConfig, FaultConfig, Incoming};
use protocol::{SenderId, Zxid};
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

const TEST_BOUND: Duration = Duration::from_secs(120);

fn auth() -> ClusterAuth {
    ClusterAuth::new(0x7A5F, b"transfer e2e key")
}

fn name_hash(name: &str) -> u32 {
    name.bytes().fold(0x811C_9DC5u32, |h, b| (h ^ b as u32).wrapping_mul(0x0100_0193))
}

fn group_for(name: &str) -> SocketAddrV4 {
    let h = name_hash(name);
    let ip = Ipv4Addr::new(239, 254, (h >> 8) as u8, (h as u8).max(2));
    SocketAddrV4::new(ip, 40_000 + (h % 20_000) as u16)
}

fn endpoint_config(group: SocketAddrV4, id: SenderId, drop_percent: u32) -> EndpointConfig {
    let mut c = transfer_endpoint_config(&EndpointConfig::new(id, 1, auth()), group);
    c.interface = Ipv4Addr::LOCALHOST;
    c.unicast_bind = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    c.fault = FaultConfig::drop_receive_percent(u64::from(group.port()) * 31 + id, drop_percent);
    c
}

/// Writes `sizes` random files into `dir`; returns their paths.
fn write_files(dir: &Path, sizes: &[usize], seed: u64) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).expect("donor dir");
    let mut rng = SmallRng::seed_from_u64(seed);
    sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let mut data = vec![0u8; n];
            rng.fill_bytes(&mut data);
            let path = dir.join(format!("{i:010}.data"));
            std::fs::write(&path, &data).expect("write donor file");
            path
        })
        .collect()
}

fn assert_same_files(files: &[PathBuf], installed: &Path) {
    for f in files {
        let name = f.file_name().expect("name");
        let got = std::fs::read(installed.join(name)).expect("installed file");
        assert!(got == std::fs::read(f).expect("donor file"), "{name:?} differs");
    }
    let count = std::fs::read_dir(installed).expect("installed dir").count();
    assert_eq!(count, files.len(), "exactly the offered files");
}

fn no_partial_left(parent: &Path) -> bool {
    std::fs::read_dir(parent)
        .expect("parent")
        .all(|e| !e.expect("entry").file_name().to_string_lossy().contains(".partial-"))
}

fn request(receiver: u8) -> RequestFile {
    RequestFile { receiver, applied: Zxid(0), purpose: TransferPurpose::Join, free_bytes: u64::MAX }
}

/// Tens of MB go to two receivers at once from one multicast stream while each loses 10 % of
/// what it receives: both install byte-identical files (every whole-file MD5 checked), leave
/// no staging behind, the donor completes and unfreezes. The offer travels as the node would
/// send it: RequestFile → TransFile over the main endpoints' unicast request/reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_receivers_with_ten_percent_loss_install_identical_files() {
    let name = "two_receivers_with_ten_percent_loss_install_identical_files";
    let dir = tempfile::tempdir().expect("tempdir");
    let sizes = [10 * 1024 * 1024, 5 * 1024 * 1024 + 5, 1_000_001, 0, 4096];
    let files = write_files(&dir.path().join("donor"), &sizes, 1);
    let freezer = MemFreezer::new(FrozenSet { zxid: Zxid(4242), files: files.clone() });
    let transfer_group = group_for(name);
    let main_group = group_for(&format!("{name} main"));

    let run = async {
        let config = DonorConfig::default();
        let (handle, donor_task) =
            spawn_donor(config, endpoint_config(transfer_group, 1, 0), 9, 1, freezer.clone())
                .await
                .expect("donor starts");
        assert!(freezer.is_frozen());
        // The donor node's main endpoint answers RequestFile with the offer.
        let donor_main = Endpoint::bind(endpoint_config(main_group, 1, 0)).await.expect("bind");
        let donor_addr = donor_main.local_addr().expect("addr");
        let answering = {
            let donor_main = donor_main.clone();
            let handle = handle.clone();
            tokio::spawn(async move {
                while let Ok(Incoming::Message(r)) = donor_main.recv().await {
                    if let (Message::RequestFile(req), Some(reply)) = (&r.message, r.request) {
                        if let Ok(offer) = handle.add_receiver(req) {
                            let _ = reply.reply(&donor_main, Message::TransFile(offer)).await;
                        }
                    }
                }
            })
        };
        let mut receivers = Vec::new();
        for id in [2u8, 3] {
            let root = dir.path().join(format!("r{id}"));
            std::fs::create_dir_all(&root).expect("receiver dir");
            receivers.push(tokio::spawn(async move {
                let main =
                    Endpoint::bind(endpoint_config(main_group, id.into(), 0)).await.expect("bind");
                let offer =
                    request_offer(&main, donor_addr, request(id), Duration::from_millis(200), 10)
                        .await
                        .expect("offer");
                assert_eq!(offer.snapshot_zxid, Zxid(4242));
                let group: SocketAddrV4 = offer.group.parse().expect("group");
                let endpoint =
                    Endpoint::bind(endpoint_config(group, id.into(), 10)).await.expect("bind");
                let mut sink = FsSink::new(root.join("data"));
                let free = sink.free_bytes().expect("free bytes");
                let run = run_receiver(
                    ReceiverConfig::default(),
                    id,
                    &offer,
                    free,
                    &mut sink,
                    &endpoint,
                    None,
                )
                .await
                .expect("installs");
                let dropped = endpoint.stats().fault_dropped_receive;
                endpoint.shutdown().await;
                main.shutdown().await;
                (root, run, dropped)
            }));
        }
        let mut results = Vec::new();
        for r in receivers {
            results.push(r.await.expect("receiver task"));
        }
        let outcome = donor_task.await.expect("donor task").expect("donor ends");
        answering.abort();
        donor_main.shutdown().await;
        (results, outcome, handle.stats())
    };
    let (results, outcome, stats) = tokio::time::timeout(TEST_BOUND, run).await.expect("bounded");
    for (root, run, dropped) in &results {
        assert!(matches!(run.outcome, ReceiverOutcome::Installed));
        assert!(*dropped > 0, "the fault hook dropped nothing");
        assert!(run.stats.repair_requests_sent > 0, "loss was repaired by requests");
        assert_same_files(&files, &root.join("data"));
        assert!(no_partial_left(root));
    }
    assert_eq!(
        outcome,
        DonorOutcome::Completed { done: vec![2, 3], dropped: vec![] },
        "donor {stats:?}"
    );
    assert!(stats.repair_blocks_sent > 0);
    assert!(!freezer.is_frozen(), "the donor unfroze");
}

/// A donor killed mid-transfer leaves the receiver with nothing installed and no staging; the
/// receiver then starts over with another donor and installs identical files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn donor_killed_mid_transfer_then_another_donor_completes() {
    let name = "donor_killed_mid_transfer_then_another_donor_completes";
    let dir = tempfile::tempdir().expect("tempdir");
    let files = write_files(&dir.path().join("donor"), &[6 * 1024 * 1024, 300_000], 2);
    let root = dir.path().join("r2");
    std::fs::create_dir_all(&root).expect("receiver dir");
    let receiver_config = ReceiverConfig { donor_timeout_ms: 1_500, ..ReceiverConfig::default() };

    let run = async {
        // First donor: slow, so it is surely mid-transfer when killed.
        let source = FsSource::open(&files).expect("open");
        let group = group_for(name);
        let slow = DonorConfig { rate_bytes_per_s: 2 * 1024 * 1024, ..DonorConfig::default() };
        let donor = Donor::new(
            slow,
            1,
            1,
            Zxid(7),
            source.describe().expect("describe"),
            group.to_string(),
            0,
        )
        .expect("donor");
        let endpoint = Endpoint::bind(endpoint_config(group, 1, 0)).await.expect("bind");
        let (handle, task) = spawn_donor_with(donor, endpoint, Box::new(source));
        let offer = handle.add_receiver(&request(2)).expect("joins");
        let receiving = Endpoint::bind(endpoint_config(group, 2, 0)).await.expect("bind");
        let (progress_tx, mut progress_rx) = tokio::sync::watch::channel(Default::default());
        let killer = tokio::spawn(async move {
            // Kill the donor once a quarter has arrived.
            progress_rx
                .wait_for(|p: &cache_server::transfer::Progress| {
                    p.done_bytes * 4 > p.total_bytes.max(1)
                })
                .await
                .expect("progress");
            task.abort();
        });
        let mut sink = FsSink::new(root.join("data"));
        let first = run_receiver(
            receiver_config.clone(),
            2,
            &offer,
            u64::MAX,
            &mut sink,
            &receiving,
            Some(&progress_tx),
        )
        .await;
        killer.await.expect("killer");
        receiving.shutdown().await;
        let err = first.expect_err("the donor died");
        assert!(matches!(err, TransferError::DonorSilent { .. }), "{err}");
        assert!(!root.join("data").exists(), "nothing installed");
        assert!(no_partial_left(&root), "staging discarded");

        // Start over with another donor, on its own group.
        let group = group_for(&format!("{name} second"));
        let source = FsSource::open(&files).expect("open");
        let donor = Donor::new(
            DonorConfig::default(),
            2,
            3,
            Zxid(7),
            source.describe().expect("describe"),
            group.to_string(),
            0,
        )
        .expect("donor");
        let endpoint = Endpoint::bind(endpoint_config(group, 3, 0)).await.expect("bind");
        let (handle, task) = spawn_donor_with(donor, endpoint, Box::new(source));
        let offer = handle.add_receiver(&request(2)).expect("joins");
        let receiving = Endpoint::bind(endpoint_config(group, 2, 10)).await.expect("bind");
        let mut sink = FsSink::new(root.join("data"));
        let second =
            run_receiver(receiver_config, 2, &offer, u64::MAX, &mut sink, &receiving, None)
                .await
                .expect("second donor completes");
        receiving.shutdown().await;
        let outcome = task.await.expect("task").expect("donor ends");
        (second, outcome, handle.stats())
    };
    let (second, outcome, stats) = tokio::time::timeout(TEST_BOUND, run).await.expect("bounded");
    assert!(matches!(second.outcome, ReceiverOutcome::Installed));
    assert_same_files(&files, &root.join("data"));
    assert!(no_partial_left(&root));
    assert_eq!(
        outcome,
        DonorOutcome::Completed { done: vec![2], dropped: vec![] },
        "donor {stats:?}, receiver {:?}",
        second.stats
    );
}

/// A receiver that crashes mid-transfer does not keep the donor frozen: the donor drops it
/// after `receiver_timeout_ms` of silence, ends the transfer and unfreezes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_crash_lets_the_donor_unfreeze_within_the_bound() {
    let name = "receiver_crash_lets_the_donor_unfreeze_within_the_bound";
    let dir = tempfile::tempdir().expect("tempdir");
    let files = write_files(&dir.path().join("donor"), &[4 * 1024 * 1024], 3);
    let freezer = MemFreezer::new(FrozenSet { zxid: Zxid(1), files: files.clone() });
    let group = group_for(name);
    let timeout_ms = 500;
    let run = async {
        let config = DonorConfig {
            rate_bytes_per_s: 1024 * 1024,
            receiver_timeout_ms: timeout_ms,
            ..DonorConfig::default()
        };
        let (handle, task) =
            spawn_donor(config, endpoint_config(group, 1, 0), 3, 1, freezer.clone())
                .await
                .expect("donor starts");
        let offer = handle.add_receiver(&request(2)).expect("joins");
        let endpoint = Endpoint::bind(endpoint_config(group, 2, 0)).await.expect("bind");
        let root = dir.path().join("r2");
        std::fs::create_dir_all(&root).expect("dir");
        let mut sink = FsSink::new(root.join("data"));
        // The receiver runs for a while, then its process "dies" (the future is dropped).
        let receiving = run_receiver(
            ReceiverConfig::default(),
            2,
            &offer,
            u64::MAX,
            &mut sink,
            &endpoint,
            None,
        );
        assert!(tokio::time::timeout(Duration::from_millis(300), receiving).await.is_err());
        endpoint.shutdown().await;
        assert!(freezer.is_frozen(), "still frozen while the receiver may come back");
        let died = std::time::Instant::now();
        let outcome = task.await.expect("task").expect("donor ends");
        (outcome, died.elapsed())
    };
    let (outcome, after) = tokio::time::timeout(TEST_BOUND, run).await.expect("bounded");
    assert!(matches!(outcome, DonorOutcome::Aborted { .. }), "{outcome:?}");
    assert!(!freezer.is_frozen(), "the donor unfroze");
    // The bound plus scheduling slack on a loaded machine.
    assert!(after < Duration::from_millis(timeout_ms + 2_000), "unfroze {after:?} after the crash");
}

/// A donor that refuses a RequestFile (a `ReadReply` carrying a `WireError`) gives the
/// receiver its code and reason, not just "answered with ReadReply", so the receiver's log and
/// status say why (e.g. an offer that would not fit one datagram).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_request_carries_the_donors_reason() {
    use protocol::message::data::{ErrorCode, ReadReply, WireError};
    let name = "refused_request_carries_the_donors_reason";
    let main_group = group_for(name);
    let run = async {
        let donor_main = Endpoint::bind(endpoint_config(main_group, 1, 0)).await.expect("bind");
        let donor_addr = donor_main.local_addr().expect("addr");
        let answering = {
            let donor_main = donor_main.clone();
            tokio::spawn(async move {
                while let Ok(Incoming::Message(r)) = donor_main.recv().await {
                    if let (Message::RequestFile(_), Some(reply)) = (&r.message, r.request) {
                        let refusal = Message::ReadReply(ReadReply {
                            applied: Zxid(7),
                            load: Default::default(),
                            result: Err(WireError {
                                code: ErrorCode::Unavailable,
                                message: "its snapshot has 2500 files".into(),
                            }),
                        });
                        let _ = reply.reply(&donor_main, refusal).await;
                    }
                }
            })
        };
        let main = Endpoint::bind(endpoint_config(main_group, 2, 0)).await.expect("bind");
        let err = request_offer(&main, donor_addr, request(2), Duration::from_millis(200), 10)
            .await
            .expect_err("refused");
        match &err {
            TransferError::Refused { code, message } => {
                assert_eq!(*code, ErrorCode::Unavailable);
                assert_eq!(message, "its snapshot has 2500 files");
            }
            other => panic!("expected a refusal, got {other}"),
        }
        assert!(err.to_string().contains("its snapshot has 2500 files"), "{err}");
        answering.abort();
        main.shutdown().await;
        donor_main.shutdown().await;
    };
    tokio::time::timeout(TEST_BOUND, run).await.expect("bounded");
}
