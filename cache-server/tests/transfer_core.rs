//! The file-transfer state machines (issue 7), IO-free: a simulated network with seeded loss
//! and corruption, simulated time in 1 ms steps, in-memory files. One test per claim.

use bytes::Bytes;
use cache_server::transfer::donor::{Donor, DonorConfig, DonorOutcome};
use cache_server::transfer::files::{FreezeGuard, FrozenSet, MemFreezer, MemSink, MemSource};
use cache_server::transfer::receiver::{BlockVerdict, Receiver, ReceiverConfig, ReceiverOutcome};
use cache_server::transfer::{md5_of, TransferError, BLOCK_BYTES};
use protocol::limits::NAK_RANGES_MAX;
use protocol::message::transfer::{
    FileTransBlock, FileTransRequest, RequestFile, TransFile, TransferPurpose,
};
use protocol::message::Message;
use protocol::Zxid;
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};

const TRANSFER: u64 = 77;
const DONOR: u8 = 1;
/// Upper bound of every simulation, in simulated ms.
const SIM_MS_MAX: u64 = 60_000;

fn data_set(seed: u64) -> MemSource {
    let mut rng = SmallRng::seed_from_u64(seed);
    // Odd sizes on purpose: an empty file, one shorter than a block, one ending mid-block.
    let sizes = [0usize, 1000, 1_500_000, 3 * BLOCK_BYTES as usize, 700_001];
    MemSource::new(
        sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let mut data = vec![0u8; n];
                rng.fill_bytes(&mut data);
                (format!("{i:010}.data"), data)
            })
            .collect(),
    )
}

fn total_bytes(source: &MemSource) -> u64 {
    source.files.iter().map(|(_, d)| d.len() as u64).sum()
}

fn request_file(receiver: u8) -> RequestFile {
    RequestFile { receiver, applied: Zxid(0), purpose: TransferPurpose::Join, free_bytes: u64::MAX }
}

fn donor(source: &MemSource, config: DonorConfig) -> Donor {
    Donor::new(
        config,
        TRANSFER,
        DONOR,
        Zxid(42),
        source.describe(),
        "239.255.77.9:7801".to_string(),
        0,
    )
    .expect("offer fits")
}

struct SimReceiver {
    id: u8,
    receiver: Receiver,
    sink: MemSink,
    /// Probability (ppm) that a datagram to or from this receiver is lost.
    loss_ppm: u32,
    /// Probability (ppm) that a block reaches it with a flipped byte (its MD5 unchanged).
    corrupt_ppm: u32,
    /// Stops sending and receiving from this time (a crash).
    dies_at_ms: Option<u64>,
    installed_at_ms: Option<u64>,
}

impl SimReceiver {
    fn alive(&self, now: u64) -> bool {
        self.dies_at_ms.is_none_or(|t| now < t)
    }
}

struct Sim {
    donor: Donor,
    source: MemSource,
    receivers: Vec<SimReceiver>,
    rng: SmallRng,
    /// The donor stops at this time (a crash).
    donor_dies_at_ms: Option<u64>,
    now: u64,
}

impl Sim {
    fn new(seed: u64, donor_config: DonorConfig) -> Sim {
        let source = data_set(seed);
        Sim {
            donor: donor(&source, donor_config),
            source,
            receivers: Vec::new(),
            rng: SmallRng::seed_from_u64(seed ^ 0xA5A5),
            donor_dies_at_ms: None,
            now: 0,
        }
    }

    fn join(&mut self, id: u8, config: ReceiverConfig, loss_ppm: u32, corrupt_ppm: u32) {
        let offer = self.donor.add_receiver(&request_file(id), self.now).expect("joins");
        let mut sink = MemSink::default();
        let receiver =
            Receiver::accept(config, id, &offer, u64::MAX, &mut sink, self.now).expect("accepts");
        self.receivers.push(SimReceiver {
            id,
            receiver,
            sink,
            loss_ppm,
            corrupt_ppm,
            dies_at_ms: None,
            installed_at_ms: None,
        });
    }

    fn donor_alive(&self) -> bool {
        self.donor_dies_at_ms.is_none_or(|t| self.now < t)
    }

    /// One simulated millisecond.
    fn step(&mut self) {
        let now = self.now;
        if self.donor_alive() {
            while let Some(message) =
                self.donor.poll_transmit(now, &mut self.source).expect("source reads")
            {
                for r in self.receivers.iter_mut().filter(|r| r.alive(now)) {
                    if self.rng.gen_range(0..1_000_000) < r.loss_ppm {
                        continue;
                    }
                    match &message {
                        Message::FileTransBlock(block) => {
                            let mut block = block.clone();
                            if self.rng.gen_range(0..1_000_000) < r.corrupt_ppm
                                && !block.data.is_empty()
                            {
                                let mut data = block.data.to_vec();
                                data[0] ^= 0x01;
                                block.data = Bytes::from(data);
                            }
                            r.receiver.on_block(&block, &mut r.sink, now);
                        }
                        Message::TransFile(offer) => r.receiver.on_offer(offer, now),
                        other => panic!("donor sent {:?}", other.kind()),
                    }
                }
            }
        }
        for r in self.receivers.iter_mut().filter(|r| r.alive(now)) {
            if let Some(request) = r.receiver.poll(now, &mut r.sink) {
                let lost = self.rng.gen_range(0..1_000_000) < r.loss_ppm;
                if !lost && self.donor_dies_at_ms.is_none_or(|t| now < t) {
                    self.donor.on_request(&request, now);
                }
            }
            if r.installed_at_ms.is_none() && r.receiver.is_installed() {
                r.installed_at_ms = Some(now);
            }
        }
        self.now += 1;
    }

    fn everyone_finished(&self) -> bool {
        let now = self.now;
        (self.donor.is_finished() || !self.donor_alive())
            && self.receivers.iter().all(|r| !r.alive(now) || r.receiver.is_finished(now))
    }

    fn run(&mut self) {
        while !self.everyone_finished() {
            assert!(self.now < SIM_MS_MAX, "simulation did not converge by {SIM_MS_MAX} ms");
            self.step();
        }
    }

    fn installed(&self, i: usize) -> Option<&Vec<(String, Vec<u8>)>> {
        self.receivers[i].sink.installed.as_ref()
    }
}

/// Two receivers take the same transfer from one multicast stream, with 10 % loss each way
/// and 1 % of blocks corrupted: both install files identical to the donor's, every whole-file
/// MD5 checked; the stream went out once (not once per receiver) and the donor completes.
#[test]
fn two_receivers_one_stream_with_loss_and_corruption_install_identical_files() {
    for seed in [1u64, 2, 3] {
        let mut sim = Sim::new(seed, DonorConfig::default());
        sim.join(2, ReceiverConfig::default(), 100_000, 10_000);
        sim.join(3, ReceiverConfig::default(), 100_000, 10_000);
        sim.run();
        for i in 0..2 {
            let id = sim.receivers[i].id;
            assert_eq!(sim.installed(i), Some(&sim.source.files), "seed {seed}: receiver {id}");
            assert!(sim.receivers[i].receiver.stats().dropped_bad_md5 > 0, "seed {seed}");
            assert!(sim.receivers[i].receiver.stats().repair_requests_sent > 0, "seed {seed}");
        }
        let stats = sim.donor.stats();
        assert_eq!(stats.stream_blocks_sent, sim.donor.total_blocks(), "seed {seed}: one pass");
        // Repairs are the lost fraction of each receiver's blocks, not a second full stream.
        assert!(
            stats.repair_blocks_sent < sim.donor.total_blocks() / 2,
            "seed {seed}: {} repairs for {} blocks",
            stats.repair_blocks_sent,
            sim.donor.total_blocks()
        );
        assert_eq!(
            sim.donor.outcome(),
            Some(&DonorOutcome::Completed { done: vec![2, 3], dropped: vec![] }),
            "seed {seed}"
        );
    }
}

/// A receiver that loses 60 % of the stream (it cannot keep up) does not stall the other:
/// its repairs take at most every other block during the pass, so the healthy receiver
/// installs within twice the stream's time, and the slow one finishes later through repairs.
#[test]
fn slow_receiver_does_not_stall_the_others() {
    let config = DonorConfig::default();
    let rate = config.rate_bytes_per_s;
    let mut sim = Sim::new(9, config);
    sim.join(2, ReceiverConfig::default(), 0, 0);
    sim.join(3, ReceiverConfig::default(), 600_000, 0);
    sim.run();
    let stream_ms = total_bytes(&sim.source) * 1000 / rate;
    let fast = sim.receivers[0].installed_at_ms.expect("fast receiver installed");
    let slow = sim.receivers[1].installed_at_ms.expect("slow receiver installed");
    assert!(
        fast <= 2 * stream_ms + 5,
        "fast receiver installed at {fast} ms, stream takes {stream_ms}"
    );
    assert!(slow > fast, "the slow one needed repairs ({slow} ms)");
    assert_eq!(sim.installed(0), Some(&sim.source.files));
    assert_eq!(sim.installed(1), Some(&sim.source.files));
    assert!(matches!(sim.donor.outcome(), Some(DonorOutcome::Completed { .. })));
}

/// A donor that dies mid-transfer leaves the receiver with nothing installed: after
/// `donor_timeout_ms` of silence it discards its staging and reports "start over".
#[test]
fn donor_silence_discards_staging_and_installs_nothing() {
    let receiver_config = ReceiverConfig::default();
    let timeout = receiver_config.donor_timeout_ms;
    let mut sim = Sim::new(4, DonorConfig::default());
    sim.join(2, receiver_config, 0, 0);
    sim.donor_dies_at_ms = Some(20);
    while !sim.receivers[0].receiver.is_finished(sim.now) {
        assert!(sim.now < SIM_MS_MAX);
        sim.step();
    }
    let r = &sim.receivers[0];
    assert!(r.receiver.stats().blocks_stored > 0, "the transfer was under way");
    assert!(
        matches!(
            r.receiver.outcome(),
            Some(ReceiverOutcome::Failed(TransferError::DonorSilent { .. }))
        ),
        "{:?}",
        r.receiver.outcome()
    );
    assert!(sim.now <= 20 + timeout + 1, "gave up at {} ms", sim.now);
    assert_eq!(r.sink.installed, None);
    assert_eq!(r.sink.discards, 1);
    assert!(r.sink.staged.is_empty(), "staging discarded");
    let message = TransferError::DonorSilent { silent_ms: timeout }.to_string();
    assert!(message.contains("start over with another donor"), "{message}");
}

/// A receiver that dies mid-transfer does not hold the donor frozen: within
/// `receiver_timeout_ms` of its last message the donor aborts, and the freeze guard unfreezes
/// exactly once.
#[test]
fn receiver_silence_aborts_the_donor_and_unfreezes_within_the_bound() {
    let config = DonorConfig::default();
    let timeout = config.receiver_timeout_ms;
    let freezer = MemFreezer::new(FrozenSet { zxid: Zxid(42), files: vec![] });
    let (guard, _set) = FreezeGuard::freeze(freezer.clone()).expect("freezes");
    assert!(freezer.is_frozen());
    let mut sim = Sim::new(5, config);
    sim.join(2, ReceiverConfig::default(), 0, 0);
    sim.receivers[0].dies_at_ms = Some(30);
    while !sim.donor.is_finished() {
        assert!(sim.now < SIM_MS_MAX);
        sim.step();
    }
    // The receiver's last keepalive or request was at most at 29 ms.
    assert!(sim.now <= 30 + timeout + 1, "donor aborted at {} ms", sim.now);
    assert!(matches!(sim.donor.outcome(), Some(DonorOutcome::Aborted { .. })));
    assert_eq!(sim.donor.stats().receivers_timed_out, 1);
    guard.unfreeze();
    assert!(!freezer.is_frozen());
    assert_eq!(freezer.unfreezes.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// The freeze guard unfreezes even when the transfer's task unwinds or is dropped.
#[test]
fn dropped_freeze_guard_unfreezes() {
    let freezer = MemFreezer::new(FrozenSet { zxid: Zxid(1), files: vec![] });
    {
        let (_guard, _) = FreezeGuard::freeze(freezer.clone()).expect("freezes");
        assert!(freezer.is_frozen());
    }
    assert!(!freezer.is_frozen());
}

fn lone_receiver(source: &MemSource) -> (Receiver, MemSink, TransFile) {
    let mut d = donor(source, DonorConfig::default());
    let offer = d.add_receiver(&request_file(2), 0).expect("joins");
    let mut sink = MemSink::default();
    let r = Receiver::accept(ReceiverConfig::default(), 2, &offer, u64::MAX, &mut sink, 0)
        .expect("accepts");
    (r, sink, offer)
}

fn block_of(source: &MemSource, file: u32, block: u64) -> FileTransBlock {
    let data = &source.files[file as usize].1;
    let start = (block * u64::from(BLOCK_BYTES)) as usize;
    let end = (start + BLOCK_BYTES as usize).min(data.len());
    let data = Bytes::copy_from_slice(&data[start..end]);
    FileTransBlock { transfer: TRANSFER, file, block, md5: md5_of(&data), data }
}

fn all_blocks(source: &MemSource) -> Vec<FileTransBlock> {
    let mut out = Vec::new();
    for (f, (_, data)) in source.files.iter().enumerate() {
        for b in 0..(data.len() as u64).div_ceil(u64::from(BLOCK_BYTES)) {
            out.push(block_of(source, f as u32, b));
        }
    }
    out
}

/// A block whose bytes do not match its MD5 is dropped and counted, never stored; a block that
/// matches its own MD5 but not the file (a faulty donor) is caught by the whole-file MD5 and
/// fetched again; either way only the right bytes are installed.
#[test]
fn corrupted_block_is_never_installed() {
    let source = data_set(6);
    let (mut r, mut sink, _) = lone_receiver(&source);
    let blocks = all_blocks(&source);
    let mut bad = blocks[3].clone();
    let mut data = bad.data.to_vec();
    data[10] ^= 0x40;
    bad.data = Bytes::from(data.clone());
    assert_eq!(r.on_block(&bad, &mut sink, 1), BlockVerdict::BadMd5);
    assert_eq!(r.stats().dropped_bad_md5, 1);
    assert_eq!(r.stats().blocks_stored, 0);
    // Self-consistent but wrong: stored, then refused by the whole-file check.
    let mut forged = blocks[3].clone();
    forged.data = Bytes::from(data);
    forged.md5 = md5_of(&forged.data);
    assert_eq!(r.on_block(&forged, &mut sink, 2), BlockVerdict::Stored);
    for b in &blocks {
        r.on_block(b, &mut sink, 3);
    }
    assert!(!r.is_installed(), "the forged block's file must not pass");
    assert_eq!(r.stats().file_md5_mismatches, 1);
    assert_eq!(sink.installed, None);
    // The file is asked for again, whole.
    let request = r.poll(200, &mut sink).expect("asks again");
    assert_eq!(request.ranges, vec![(blocks[3].file, 0, 184)]);
    for b in blocks.iter().filter(|b| b.file == blocks[3].file) {
        r.on_block(b, &mut sink, 201);
    }
    assert!(r.is_installed());
    assert_eq!(sink.installed.as_ref(), Some(&source.files));
}

/// A file that keeps failing its whole-file MD5 (here a disk that corrupts every fetch) ends
/// the transfer after `file_fetches_max` fetches with nothing installed.
#[test]
fn persistent_whole_file_mismatch_fails_with_nothing_installed() {
    let source = data_set(7);
    let (mut r, mut sink, _) = lone_receiver(&source);
    let file_blocks: Vec<_> = all_blocks(&source).into_iter().filter(|b| b.file == 1).collect();
    for fetch in 0..ReceiverConfig::default().file_fetches_max {
        sink.corrupt_next_write = true;
        for b in &file_blocks {
            r.on_block(b, &mut sink, u64::from(fetch));
        }
    }
    assert!(
        matches!(r.outcome(), Some(ReceiverOutcome::Failed(TransferError::FileMismatch { .. }))),
        "{:?}",
        r.outcome()
    );
    assert_eq!(sink.installed, None);
    assert_eq!(sink.discards, 1);
}

/// Blocks for an unknown transfer, a file or block out of range, or of the wrong size are
/// dropped and counted by reason; nothing is stored. The donor likewise drops and counts
/// requests for another transfer, from an unknown receiver, and out-of-range ranges.
#[test]
fn bad_blocks_and_requests_are_dropped_and_counted() {
    let source = data_set(8);
    let (mut r, mut sink, _) = lone_receiver(&source);
    let good = block_of(&source, 2, 0);
    let mut other = good.clone();
    other.transfer = TRANSFER + 1;
    assert_eq!(r.on_block(&other, &mut sink, 1), BlockVerdict::UnknownTransfer);
    let mut file = good.clone();
    file.file = 99;
    assert_eq!(r.on_block(&file, &mut sink, 1), BlockVerdict::FileOutOfRange);
    let mut block = good.clone();
    block.block = 1_000_000;
    assert_eq!(r.on_block(&block, &mut sink, 1), BlockVerdict::BlockOutOfRange);
    let mut short = good.clone();
    short.data = good.data.slice(..100);
    short.md5 = md5_of(&short.data);
    assert_eq!(r.on_block(&short, &mut sink, 1), BlockVerdict::WrongSize);
    let stats = r.stats();
    assert_eq!(
        (
            stats.dropped_unknown_transfer,
            stats.dropped_file_out_of_range,
            stats.dropped_block_out_of_range,
            stats.dropped_wrong_size,
            stats.blocks_stored
        ),
        (1, 1, 1, 1, 0)
    );
    assert_eq!(r.on_block(&good, &mut sink, 2), BlockVerdict::Stored);
    assert_eq!(r.on_block(&good, &mut sink, 2), BlockVerdict::Duplicate);

    let mut d = donor(&source, DonorConfig::default());
    d.add_receiver(&request_file(2), 0).expect("joins");
    let request =
        |transfer, receiver, ranges| FileTransRequest { transfer, receiver, ranges, done: false };
    d.on_request(&request(TRANSFER + 1, 2, vec![(2, 0, 1)]), 1);
    d.on_request(&request(TRANSFER, 5, vec![(2, 0, 1)]), 1);
    d.on_request(
        &request(TRANSFER, 2, vec![(99, 0, 1), (2, 0, 1_000_000), (2, u64::MAX, 2), (2, 0, 0)]),
        1,
    );
    let stats = d.stats();
    assert_eq!(
        (stats.dropped_unknown_transfer, stats.dropped_unknown_receiver, stats.ranges_out_of_range),
        (1, 1, 4)
    );
}

/// An offer larger than the receiver's free disk is refused with a reason naming both sizes,
/// before anything is staged; the donor refuses a RequestFile that says so up front. Offers
/// with unsafe or duplicate names or another block size are refused too.
#[test]
fn offers_that_do_not_fit_or_are_unsafe_are_refused() {
    let source = data_set(10);
    let total = total_bytes(&source);
    let mut d = donor(&source, DonorConfig::default());
    let mut small = request_file(2);
    small.free_bytes = total - 1;
    let refused = d.add_receiver(&small, 0).expect_err("does not fit");
    assert!(
        matches!(refused, TransferError::NoSpace { needed_bytes, free_bytes } if needed_bytes == total && free_bytes == total - 1)
    );
    let offer = d.add_receiver(&request_file(3), 0).expect("fits");
    let mut sink = MemSink::default();
    let err = Receiver::accept(ReceiverConfig::default(), 3, &offer, total - 1, &mut sink, 0)
        .expect_err("does not fit");
    let message = err.to_string();
    assert!(message.contains(&total.to_string()) && message.contains("free disk"), "{message}");
    assert!(sink.staged.is_empty(), "nothing staged for a refused offer");

    for (name, why) in [("../etc/passwd", "unsafe"), ("", "unsafe"), ("..", "unsafe")] {
        let mut bad = offer.clone();
        bad.files[1].name = name.to_string();
        let err = Receiver::accept(ReceiverConfig::default(), 3, &bad, u64::MAX, &mut sink, 0)
            .expect_err("unsafe name");
        assert!(err.to_string().contains(why), "{err}");
    }
    let mut twice = offer.clone();
    twice.files[2].name = twice.files[1].name.clone();
    assert!(Receiver::accept(ReceiverConfig::default(), 3, &twice, u64::MAX, &mut sink, 0).is_err());
    let mut other_block = offer.clone();
    other_block.block_bytes = 4096;
    assert!(Receiver::accept(ReceiverConfig::default(), 3, &other_block, u64::MAX, &mut sink, 0)
        .is_err());
}

/// A repair request never carries more than NAK_RANGES_MAX ranges (the decoder's limit), and
/// the blocks left out are asked for in the next rounds until none is missing.
#[test]
fn repair_requests_stay_within_the_range_limit_and_cover_everything() {
    let sizes = 8 * 1024 * 1024; // 1024 blocks
    let mut rng = SmallRng::seed_from_u64(11);
    let mut data = vec![0u8; sizes];
    rng.fill_bytes(&mut data);
    let source = MemSource::new(vec![("big".to_string(), data)]);
    let (mut r, mut sink, _) = lone_receiver(&source);
    let blocks = all_blocks(&source);
    // Every other block: 512 one-block holes.
    for b in blocks.iter().step_by(2) {
        r.on_block(b, &mut sink, 0);
    }
    r.on_block(blocks.last().expect("blocks"), &mut sink, 0);
    let mut now = 0;
    let mut rounds = 0;
    while !r.is_installed() {
        now += 1;
        assert!(now < 10_000, "did not converge");
        if let Some(request) = r.poll(now, &mut sink) {
            assert!(request.ranges.len() <= NAK_RANGES_MAX);
            if !request.ranges.is_empty() {
                rounds += 1;
            }
            for &(file, first, count) in &request.ranges {
                for b in first..first + u64::from(count) {
                    r.on_block(&block_of(&source, file, b), &mut sink, now);
                }
            }
        }
    }
    assert_eq!(rounds, 2, "512 holes take two requests of at most {NAK_RANGES_MAX} ranges");
    assert_eq!(sink.installed.as_ref(), Some(&source.files));
}

/// The donor keeps to its rate: over any run the bytes sent stay within rate × time plus one
/// burst, so a transfer leaves the donor bandwidth for writes.
#[test]
fn donor_paces_the_stream_at_its_rate() {
    let config = DonorConfig { rate_bytes_per_s: 4 * 1024 * 1024, ..DonorConfig::default() };
    let (rate, burst) = (config.rate_bytes_per_s, config.burst_bytes);
    let mut sim = Sim::new(12, config);
    sim.join(2, ReceiverConfig::default(), 0, 0);
    for _ in 0..300 {
        sim.step();
        let sent = sim.donor.stats().bytes_sent;
        assert!(sent <= rate * sim.now / 1000 + burst, "{sent} bytes by {} ms", sim.now);
    }
    assert!(sim.donor.stats().bytes_sent >= rate * 300 / 1000, "the stream moves at its rate");
}

/// Progress reports bytes, rate and time left, and the donor's ends at the total.
#[test]
fn progress_reports_bytes_rate_and_time_left() {
    let mut sim = Sim::new(13, DonorConfig::default());
    sim.join(2, ReceiverConfig::default(), 0, 0);
    for _ in 0..20 {
        sim.step();
    }
    let p = sim.receivers[0].receiver.progress(sim.now);
    assert!(p.done_bytes > 0 && p.done_bytes < p.total_bytes);
    assert!(p.rate_bytes_per_s > 0.0 && p.eta_ms.is_some());
    assert!(p.to_string().contains("MiB/s"), "{p}");
    sim.run();
    let p = sim.donor.progress(sim.now);
    assert_eq!(p.done_bytes, p.total_bytes);
    assert_eq!(p.eta_ms, Some(0));
}

/// A receiver that keeps asking for blocks (it loses nearly everything) is dropped once it
/// has asked for `repair_factor_max` times the data set, so it cannot keep the donor frozen.
#[test]
fn endlessly_repairing_receiver_is_dropped() {
    let source = data_set(14);
    let config = DonorConfig::default();
    let factor = config.repair_factor_max;
    let mut d = donor(&source, config);
    let mut source_reader = source.clone();
    d.add_receiver(&request_file(2), 0).expect("joins");
    let mut now = 0;
    while d.stats().stream_blocks_sent < d.total_blocks() {
        now += 1;
        while d.poll_transmit(now, &mut source_reader).expect("reads").is_some() {}
    }
    let everything: Vec<(u32, u64, u32)> = source
        .files
        .iter()
        .enumerate()
        .filter(|(_, (_, data))| !data.is_empty())
        .map(|(f, (_, data))| {
            (f as u32, 0, (data.len() as u64).div_ceil(u64::from(BLOCK_BYTES)) as u32)
        })
        .collect();
    let mut requests = 0;
    while !d.is_finished() {
        requests += 1;
        assert!(requests <= factor + 1, "still not dropped after {requests} full requests");
        let request = FileTransRequest {
            transfer: TRANSFER,
            receiver: 2,
            ranges: everything.clone(),
            done: false,
        };
        d.on_request(&request, now);
        while d.poll_transmit(now, &mut source_reader).expect("reads").is_some() {}
        now += 1000;
    }
    assert_eq!(requests, factor + 1);
    assert_eq!(d.stats().receivers_gave_up, 1);
    assert!(matches!(d.outcome(), Some(DonorOutcome::Aborted { .. })));
}

/// A receiver that stays alive but never finishes cannot hold the donor frozen past the
/// transfer's deadline (`deadline_min_ms` here, the data set being small).
#[test]
fn receiver_that_never_finishes_is_dropped_at_the_deadline() {
    let config = DonorConfig { deadline_min_ms: 2_000, ..DonorConfig::default() };
    let mut sim = Sim::new(15, config);
    // It loses every block but keeps sending keepalives and requests.
    sim.join(2, ReceiverConfig::default(), 0, 0);
    sim.receivers[0].loss_ppm = 0;
    sim.receivers[0].corrupt_ppm = 1_000_000;
    while !sim.donor.is_finished() {
        assert!(sim.now < SIM_MS_MAX);
        sim.step();
    }
    assert_eq!(sim.now, 2_001, "ended at the deadline");
    assert_eq!(sim.donor.stats().receivers_past_deadline, 1);
    assert!(matches!(sim.donor.outcome(), Some(DonorOutcome::Aborted { .. })));
    assert_eq!(sim.receivers[0].sink.installed, None);
}

/// A receiver that joins while the stream is under way takes the rest of the same stream and
/// repairs what it missed; the stream is still sent once.
#[test]
fn late_joiner_shares_the_stream_and_repairs_the_beginning() {
    let mut sim = Sim::new(16, DonorConfig::default());
    sim.join(2, ReceiverConfig::default(), 0, 0);
    for _ in 0..30 {
        sim.step();
    }
    assert!(sim.donor.stats().stream_blocks_sent > 0, "mid-stream");
    assert!(sim.donor.stats().stream_blocks_sent < sim.donor.total_blocks(), "mid-stream");
    sim.join(3, ReceiverConfig::default(), 0, 0);
    sim.run();
    assert_eq!(sim.installed(0), Some(&sim.source.files));
    assert_eq!(sim.installed(1), Some(&sim.source.files));
    assert_eq!(sim.donor.stats().stream_blocks_sent, sim.donor.total_blocks());
    assert!(sim.donor.stats().repair_blocks_sent > 0, "the beginning came as repairs");
    assert_eq!(
        sim.donor.outcome(),
        Some(&DonorOutcome::Completed { done: vec![2, 3], dropped: vec![] })
    );
}

/// Safety and liveness over many seeds: with 0–30 % loss and up to 2 % corruption per
/// receiver, three receivers always end with exactly the donor's files, and the donor always
/// completes. A failure names the seed that reproduces it.
#[test]
fn many_seeds_converge_to_identical_files() {
    for seed in 100u64..108 {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut sim = Sim::new(seed, DonorConfig::default());
        for id in 2..5u8 {
            let loss = rng.gen_range(0..=300_000);
            let corrupt = rng.gen_range(0..=20_000);
            sim.join(id, ReceiverConfig::default(), loss, corrupt);
        }
        sim.run();
        for i in 0..3 {
            assert_eq!(sim.installed(i), Some(&sim.source.files), "seed {seed}, receiver {i}");
        }
        assert_eq!(
            sim.donor.outcome(),
            Some(&DonorOutcome::Completed { done: vec![2, 3, 4], dropped: vec![] }),
            "seed {seed}"
        );
    }
}

/// Before any receiver joins, the donor only announces its offer; the stream starts with the
/// first receiver.
#[test]
fn stream_waits_for_the_first_receiver() {
    let source = data_set(17);
    let mut reader = source.clone();
    let mut d = donor(&source, DonorConfig::default());
    let mut sent = Vec::new();
    for now in 0..100 {
        while let Some(m) = d.poll_transmit(now, &mut reader).expect("reads") {
            sent.push(m.kind());
        }
    }
    assert!(
        !sent.is_empty() && sent.iter().all(|k| *k == protocol::message::MessageKind::TransFile)
    );
    d.add_receiver(&request_file(2), 100).expect("joins");
    let m = d.poll_transmit(100, &mut reader).expect("reads").expect("a block");
    assert!(matches!(m, Message::FileTransBlock(FileTransBlock { file: 1, block: 0, .. })));
}
