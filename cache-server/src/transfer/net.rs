//! The async drivers: the donor and the receiver state machines over their own
//! [`Endpoint`], bound to the transfer's multicast group.
//!
//! Blocks and the repeated offer go to the group with [`Endpoint::send_unreliable`]; requests
//! go from a receiver to the donor's transfer endpoint with [`Endpoint::send_unreliable_to`]
//! (its address is the source of the blocks). Nothing uses the reliable stream (see the
//! module doc of [`crate::transfer`]). `RequestFile` and the `TransFile` answer travel on the
//! node's main endpoint as a unicast request/reply ([`request_offer`]).
//!
//! # Node wiring
//! - Donor: on a `RequestFile` request, if a [`DonorHandle`] is running and not finished,
//!   answer `handle.add_receiver(&request)`; otherwise [`spawn_donor`] with the node's
//!   freezer and answer the same. Await the join handle to learn the outcome; the freeze is
//!   over when it returns (the guard unfreezes even on panic or cancellation).
//! - Receiver: [`request_offer`] to the chosen donor, then [`run_receiver`] with an
//!   [`super::FsSink`] and the endpoint config of the offer's group. On `Installed`, open the
//!   store from the installed directory and catch up from `offer.snapshot_zxid`; on an error,
//!   start over with another donor.

use super::donor::{Donor, DonorConfig, DonorOutcome};
use super::files::{BlockSink, BlockSource, FreezeGuard, Freezer, FsSource};
use super::receiver::{Receiver, ReceiverConfig, ReceiverOutcome, ReceiverStats};
use super::{Progress, ReceiverStatus, Result, TransferError};
use protocol::message::transfer::{RequestFile, TransFile};
use protocol::message::Message;
use protocol::messaging::{Endpoint, EndpointConfig, Incoming};
use protocol::NodeId;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

/// Most datagrams the donor sends per lock of its state.
const SEND_BATCH_MAX: usize = 64;
/// How often the drivers log progress.
pub const PROGRESS_LOG_INTERVAL_MS: u64 = 2_000;
/// The receiver's timer tick (repair and keepalive granularity).
pub const RECEIVER_TICK_MS: u64 = 5;
/// Most received datagrams a transfer endpoint queues for the application (32 MiB of blocks);
/// beyond, they are dropped and repaired, instead of growing memory.
pub const TRANSFER_QUEUE_DATAGRAMS_MAX: usize = 4096;

/// The endpoint configuration for a transfer: the node's `base` (id, key, interface) on the
/// transfer's own `group`, with a bounded receive queue.
pub fn transfer_endpoint_config(
    base: &EndpointConfig,
    group: std::net::SocketAddrV4,
) -> EndpointConfig {
    let mut config = base.clone();
    config.group = group;
    config.members = Vec::new();
    config.core.unreliable_queue_max = TRANSFER_QUEUE_DATAGRAMS_MAX;
    config
}

struct DonorShared {
    donor: Mutex<Donor>,
    wake: Notify,
    start: Instant,
}

impl DonorShared {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, Donor> {
        self.donor.lock().expect("donor mutex poisoned")
    }
}

/// The node's view of a running donor: join more receivers, show progress.
#[derive(Clone)]
pub struct DonorHandle {
    shared: Arc<DonorShared>,
}

impl DonorHandle {
    /// Adds a receiver (from its `RequestFile`); the answer is the offer to send back.
    pub fn add_receiver(&self, request: &RequestFile) -> Result<TransFile> {
        let now = self.shared.now_ms();
        let offer = self.shared.lock().add_receiver(request, now)?;
        self.shared.wake.notify_one();
        Ok(offer)
    }

    pub fn offer(&self) -> TransFile {
        self.shared.lock().offer().clone()
    }

    pub fn is_finished(&self) -> bool {
        self.shared.lock().is_finished()
    }

    pub fn progress(&self) -> Progress {
        self.shared.lock().progress(self.shared.now_ms())
    }

    pub fn receivers(&self) -> Vec<ReceiverStatus> {
        self.shared.lock().receivers()
    }

    pub fn stats(&self) -> super::DonorStats {
        self.shared.lock().stats()
    }
}

/// Freezes through `freezer`, describes the frozen files (the freezer's own list if it has one,
/// else by hashing them), binds an endpoint on the transfer group (`endpoint.group`) and starts
/// streaming once the first receiver is added. The task returns the outcome after unfreezing.
pub async fn spawn_donor<F: Freezer + 'static>(
    config: DonorConfig,
    endpoint: EndpointConfig,
    transfer: u64,
    me: NodeId,
    freezer: F,
) -> Result<(DonorHandle, JoinHandle<Result<DonorOutcome>>)> {
    let (mut guard, set) = FreezeGuard::freeze(freezer)?;
    let source = FsSource::open(&set.files)?;
    let files = match guard.describe(&set)? {
        Some(files) => files,
        None => source.describe()?,
    };
    let group = endpoint.group.to_string();
    let donor = Donor::new(config, transfer, me, set.zxid, files, group, 0)?;
    let endpoint = Endpoint::bind(endpoint).await?;
    Ok(spawn(donor, endpoint, Box::new(source), Some(Box::new(guard))))
}

/// Runs `donor` (created at time 0) over `endpoint` (bound to the offer's group) reading from
/// `source`, until it finishes. The lower-level form of [`spawn_donor`], for any source; the
/// caller freezes and unfreezes. Aborting the task stops the donor (a crash, for tests).
pub fn spawn_donor_with(
    donor: Donor,
    endpoint: Endpoint,
    source: Box<dyn BlockSource>,
) -> (DonorHandle, JoinHandle<Result<DonorOutcome>>) {
    spawn(donor, endpoint, source, None)
}

/// `freeze` is dropped (unfreezing) when the task ends, however it ends: finished, failed,
/// aborted or panicked.
fn spawn(
    donor: Donor,
    endpoint: Endpoint,
    source: Box<dyn BlockSource>,
    freeze: Option<Box<dyn Send>>,
) -> (DonorHandle, JoinHandle<Result<DonorOutcome>>) {
    let shared = Arc::new(DonorShared {
        donor: Mutex::new(donor),
        wake: Notify::new(),
        start: Instant::now(),
    });
    let handle = DonorHandle { shared: shared.clone() };
    let task = tokio::spawn(async move {
        let result = run_donor(&shared, &endpoint, source).await;
        endpoint.shutdown().await;
        drop(freeze);
        if let Err(e) = &result {
            tracing::warn!(error = %e, "donor stopped");
        }
        result
    });
    (handle, task)
}

async fn run_donor(
    shared: &DonorShared,
    endpoint: &Endpoint,
    mut source: Box<dyn BlockSource>,
) -> Result<DonorOutcome> {
    let mut batch: Vec<Message> = Vec::with_capacity(SEND_BATCH_MAX);
    let mut next_log_ms = PROGRESS_LOG_INTERVAL_MS;
    loop {
        let now = shared.now_ms();
        let wake_at = {
            let mut donor = shared.lock();
            if let Some(outcome) = donor.outcome() {
                return Ok(outcome.clone());
            }
            while batch.len() < SEND_BATCH_MAX {
                match donor.poll_transmit(now, source.as_mut())? {
                    Some(m) => batch.push(m),
                    None => break,
                }
            }
            if now >= next_log_ms {
                next_log_ms = now + PROGRESS_LOG_INTERVAL_MS;
                tracing::info!(progress = %donor.progress(now), stats = ?donor.stats(), "donor");
            }
            donor.next_wake_ms(now)
        };
        let full = batch.len() == SEND_BATCH_MAX;
        for message in batch.drain(..) {
            endpoint.send_unreliable(&message).await?;
        }
        if full {
            continue;
        }
        let sleep = Duration::from_millis(wake_at.saturating_sub(shared.now_ms()));
        tokio::select! {
            // Requests first: `done` ends the transfer, repairs jump the queue.
            biased;
            incoming = endpoint.recv() => {
                if let Incoming::Message(received) = incoming? {
                    if let Message::FileTransRequest(request) = &received.message {
                        shared.lock().on_request(request, shared.now_ms());
                    }
                }
            }
            _ = tokio::time::sleep(sleep) => {}
            _ = shared.wake.notified() => {}
        }
    }
}

/// Asks `donor` (its main endpoint's address) for its files over the node's main endpoint.
pub async fn request_offer(
    endpoint: &Endpoint,
    donor: SocketAddr,
    request: RequestFile,
    timeout: Duration,
    retries: u32,
) -> Result<TransFile> {
    match endpoint.request(donor, Message::RequestFile(request), timeout, retries).await? {
        Message::TransFile(offer) => Ok(offer),
        // A refusal: the donor's reason, for the receiver's log and status.
        Message::ReadReply(protocol::message::data::ReadReply { result: Err(e), .. }) => {
            Err(TransferError::Refused { code: e.code, message: e.message })
        }
        other => Err(TransferError::BadOffer(format!("answered with {:?}", other.kind()))),
    }
}

/// What a receiver run ended with.
#[derive(Debug)]
pub struct ReceiverRun {
    pub outcome: ReceiverOutcome,
    pub stats: ReceiverStats,
    pub progress: Progress,
    /// From the start of the run to the install (the run itself lingers a little longer to
    /// make sure the donor hears `done`).
    pub installed_after: Duration,
}

/// Receives `offer` into `sink` over `endpoint` (bound to the offer's group) until it is
/// installed (and `done` reported) or failed. `progress`, if given, is updated every tick.
pub async fn run_receiver(
    config: ReceiverConfig,
    me: NodeId,
    offer: &TransFile,
    free_bytes: u64,
    sink: &mut dyn BlockSink,
    endpoint: &Endpoint,
    progress: Option<&watch::Sender<Progress>>,
) -> Result<ReceiverRun> {
    let start = Instant::now();
    let now_ms = || start.elapsed().as_millis() as u64;
    let mut receiver = Receiver::accept(config, me, offer, free_bytes, sink, now_ms())?;
    let mut donor: Option<SocketAddr> = None;
    let mut ticker = tokio::time::interval(Duration::from_millis(RECEIVER_TICK_MS));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_log_ms = PROGRESS_LOG_INTERVAL_MS;
    loop {
        tokio::select! {
            // What has arrived first: a receiver starved of CPU must not take its own backlog
            // for donor silence.
            biased;
            incoming = endpoint.recv() => {
                if let Incoming::Message(received) = incoming? {
                    let now = now_ms();
                    match &received.message {
                        Message::FileTransBlock(block) if block.transfer == offer.transfer => {
                            donor = received.source.or(donor);
                            receiver.on_block(block, sink, now);
                        }
                        Message::FileTransBlock(block) => {
                            receiver.on_block(block, sink, now);
                        }
                        Message::TransFile(o) => {
                            if o.transfer == offer.transfer {
                                donor = received.source.or(donor);
                            }
                            receiver.on_offer(o, now);
                        }
                        _ => {}
                    }
                }
            }
            _ = ticker.tick() => {}
        }
        let now = now_ms();
        if let Some(request) = receiver.poll(now, sink) {
            if let Some(to) = donor {
                endpoint.send_unreliable_to(to, &Message::FileTransRequest(request)).await?;
            }
        }
        if let Some(tx) = progress {
            tx.send_replace(receiver.progress(now));
        }
        if now >= next_log_ms {
            next_log_ms = now + PROGRESS_LOG_INTERVAL_MS;
            tracing::info!(progress = %receiver.progress(now), "receiver");
        }
        if receiver.is_finished(now) {
            let stats = receiver.stats();
            let progress = receiver.progress(now);
            let installed_after = Duration::from_millis(receiver.installed_at_ms().unwrap_or(now));
            let outcome = match receiver.outcome() {
                Some(ReceiverOutcome::Installed) => ReceiverOutcome::Installed,
                _ => {
                    // Move the error out: the receiver is finished.
                    let Some(ReceiverOutcome::Failed(e)) = receiver.take_outcome() else {
                        unreachable!("finished means installed or failed")
                    };
                    return Err(e);
                }
            };
            return Ok(ReceiverRun { outcome, stats, progress, installed_after });
        }
    }
}
