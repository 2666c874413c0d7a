//! The tokio shell around the [`Core`]: one run of the node (open, serve, drain) and the tasks
//! that give the core its time, its inputs and its network.
//!
//! - **core loop** ([`drive`]): reads the clock for every input it hands the core (a message
//!   handled late must not be judged by a reading taken before it arrived), ticks the core
//!   every [`TICK_MS`], then sends what the core put in its outbox and carries out its
//!   effects.
//! - **receive** ([`super::door`]): the one door every message comes in by.
//! - **outbound**: sends in order: group messages on the reliable multicast stream, messages
//!   to one node best-effort by unicast to its configured address (the engine repairs losses),
//!   FSLive best-effort to the group. A message to one node too big for one datagram goes as
//!   a fragmented unicast request instead (see the node's Limits).
//! - the cache-server announcer (FSLive/Freeze) and load sampler; the store's background
//!   compactor (a thread).

use super::core::{Cmd, Core, Effect, Exit, Out};
use super::snapshot::SnapshotDir;
use super::start::{self, Opened, Parts};
use super::{door, transfer, NodeError, RunContext};
use super::{
    ANNOUNCE_TICK, COMPACTION_CHECK, LARGE_UNICAST_IN_FLIGHT_MAX, LARGE_UNICAST_RETRIES,
    LARGE_UNICAST_TIMEOUT, LOAD_SAMPLE_INTERVAL, OUTBOUND_HEADROOM, OUTBOUND_QUEUE_MAX,
    SHUTDOWN_SYNC_WAIT, TICK_MS,
};
use crate::config::Config;
use crate::storage::{RealFs, SyncMode};
use protocol::message::Message;
use protocol::messaging::{Endpoint, MessagingError};
use protocol::{NodeId, ProtocolError};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Semaphore};

/// Most replication messages, and most commands, the core takes in one go before it looks at
/// its other inputs again.
pub const MESSAGES_PER_ROUND_MAX: usize = 256;
pub const COMMANDS_PER_ROUND_MAX: usize = 1024;

/// The host's monotonic clock, in ms since the run started.
#[derive(Clone, Copy)]
struct Clock(Instant);

impl Clock {
    fn now_ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }
}

/// One run of the node: opens its state, serves until shutdown or a restart, then drains.
pub(super) async fn run_once(
    config: &Config,
    ctx: RunContext,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> Result<Exit, NodeError> {
    let clock = Clock(Instant::now());
    let parts = Parts {
        vfs: Arc::new(RealFs),
        metrics: ctx.metrics.clone(),
        transfers: ctx.transfers.clone(),
        now_ms: clock.now_ms(),
        sync: SyncMode::Thread,
    };
    let Opened { core, shared, server, cmds, log, store } = start::open(config, parts)?;
    // Merges reclaim overwritten values; the snapshot's hard links keep the inputs it holds.
    let compactor = crate::storage::Compactor::spawn(store, COMPACTION_CHECK);
    *ctx.current.lock().expect("current run poisoned") = Some((shared.clone(), server.clone()));
    let endpoint = ctx.endpoint.clone();
    let members: Vec<NodeId> = config.members.keys().copied().collect();

    let (out_tx, out_rx) = mpsc::channel(OUTBOUND_QUEUE_MAX);
    let (repl_tx, repl_rx) = door::replication_channel();
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(outbound(endpoint.clone(), config.members.clone(), out_rx)));
    tasks.push(tokio::spawn(door::receive(
        endpoint.clone(),
        server.clone(),
        shared.clone(),
        repl_tx,
        members,
    )));
    let announce_tx = out_tx.clone();
    let announce_metrics = ctx.metrics.clone();
    tasks.push(tokio::spawn(cache_server::server::run_announcer(
        server.clone(),
        ANNOUNCE_TICK,
        move |m| {
            let out = match m {
                Message::FsLive(_) => Out::GroupUnreliable(m),
                other => Out::Group(other),
            };
            // Never waits (the announcer is not async); past the bound the announcement is
            // dropped and counted, and the next tick announces again.
            if let Err(mpsc::error::TrySendError::Full(_)) = announce_tx.try_send(out) {
                announce_metrics.outbound_dropped.inc();
            }
        },
    )));
    tasks.push(tokio::spawn(cache_server::load::run_sampler(
        server.gauge().clone(),
        LOAD_SAMPLE_INTERVAL,
    )));

    let mut host = Host {
        core,
        clock,
        out: out_tx,
        metrics: ctx.metrics.clone(),
        snap_done: mpsc::unbounded_channel(),
    };
    let result = host.drive(repl_rx, cmds, shutdown).await;
    // Drain: whatever was written becomes durable before the run ends.
    let last = log.last_zxid();
    match tokio::time::timeout(SHUTDOWN_SYNC_WAIT, log.wait_durable_async(last)).await {
        Ok(Ok(())) => tracing::info!(%last, "log synced"),
        Ok(Err(e)) => tracing::error!("final log sync failed: {e}"),
        Err(_) => tracing::error!("final log sync did not finish within {SHUTDOWN_SYNC_WAIT:?}"),
    }
    for task in &tasks {
        task.abort();
    }
    for task in tasks {
        let _ = task.await;
    }
    *ctx.current.lock().expect("current run poisoned") = None;
    // Stopping the compactor waits for a merge in progress: not on a runtime thread.
    let _ = tokio::task::spawn_blocking(move || drop(compactor)).await;
    result
}

type SnapshotResult = Result<SnapshotDir, String>;

/// The core with what the shell gives it: a clock, the outbound queue, and the channel on
/// which snapshots finished off the core come back (unbounded, but at most one snapshot runs
/// at a time, so it holds at most one result).
struct Host {
    core: Core,
    clock: Clock,
    out: mpsc::Sender<Out>,
    metrics: Arc<crate::metrics::Metrics>,
    snap_done: (mpsc::UnboundedSender<SnapshotResult>, mpsc::UnboundedReceiver<SnapshotResult>),
}

impl Host {
    async fn drive(
        &mut self,
        mut repl_rx: mpsc::Receiver<Message>,
        mut cmd_rx: mpsc::Receiver<Cmd>,
        shutdown: &mut (impl Future<Output = ()> + Unpin),
    ) -> Result<Exit, NodeError> {
        let mut ticker = tokio::time::interval(Duration::from_millis(TICK_MS));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut durable_rx = self.core.log.log().subscribe_durable();
        loop {
            tokio::select! {
                _ = &mut *shutdown => {
                    tracing::info!("shutting down");
                    self.core.shutdown();
                    return Ok(Exit::Shutdown);
                }
                Some(done) = self.snap_done.1.recv() => self.core.snapshot_done(done)?,
                _ = ticker.tick() => self.core.tick(self.clock.now_ms())?,
                Some(message) = repl_rx.recv() => {
                    let clock = self.clock;
                    let rest = std::iter::from_fn(|| repl_rx.try_recv().ok());
                    let batch = std::iter::once(message).chain(rest).take(MESSAGES_PER_ROUND_MAX);
                    self.core.step_batch(&mut || clock.now_ms(), batch)?;
                }
                // New work waits while the outbound queue is nearly full (see OUTBOUND_HEADROOM).
                Some(cmd) = cmd_rx.recv(), if self.out.capacity() >= OUTBOUND_HEADROOM => {
                    if let Some(exit) = self.core.command(self.clock.now_ms(), cmd)? {
                        return Ok(exit);
                    }
                    for _ in 1..COMMANDS_PER_ROUND_MAX {
                        let Ok(cmd) = cmd_rx.try_recv() else { break };
                        if let Some(exit) = self.core.command(self.clock.now_ms(), cmd)? {
                            return Ok(exit);
                        }
                    }
                }
                changed = durable_rx.changed() => {
                    let failed = changed.is_err() || durable_rx.borrow().failed;
                    self.core.durable_changed(failed)?;
                }
            }
            self.core.drain()?;
            self.core.maybe_snapshot();
            self.flush();
        }
    }

    /// Sends the core's outbox and carries out its effects.
    fn flush(&mut self) {
        for out in self.core.take_outbox() {
            // Never waits (see OUTBOUND_QUEUE_MAX): a full queue loses the message as the
            // network might, and the engine repairs it.
            if let Err(mpsc::error::TrySendError::Full(_)) = self.out.try_send(out) {
                self.metrics.outbound_dropped.inc();
            }
        }
        for effect in self.core.take_effects() {
            match effect {
                Effect::FinishSnapshot { pending, previous } => {
                    let done_tx = self.snap_done.0.clone();
                    tokio::task::spawn_blocking(move || {
                        let _ = done_tx.send(pending.finish(previous.as_ref()));
                    });
                }
                Effect::Fetch { donor, base, applied } => {
                    transfer::start_fetch(&self.core.shared, donor, base, applied);
                }
            }
        }
    }
}

async fn outbound(
    endpoint: Endpoint,
    members: BTreeMap<NodeId, SocketAddr>,
    mut rx: mpsc::Receiver<Out>,
) {
    let large_permits = Arc::new(Semaphore::new(LARGE_UNICAST_IN_FLIGHT_MAX));
    while let Some(out) = rx.recv().await {
        let result = match out {
            Out::Group(message) => endpoint.multicast(message).await,
            Out::GroupUnreliable(message) => endpoint.send_unreliable(&message).await,
            Out::Node(id, message) => match members.get(&id) {
                Some(addr) => match endpoint.send_unreliable_to(*addr, &message).await {
                    // Does not fit one datagram (only requests and replies are fragmented):
                    // send it reliably as a request instead (see the module's Limits).
                    Err(MessagingError::Protocol(ProtocolError::TooLarge { len, .. })) => {
                        send_large(&endpoint, &large_permits, id, *addr, message, len);
                        Ok(())
                    }
                    other => other,
                },
                None => Ok(()),
            },
        };
        match result {
            Ok(()) => {}
            Err(MessagingError::Shutdown) => return,
            Err(e) => tracing::warn!("send failed: {e}"),
        }
    }
}

/// Sends an oversize message to node `id` as a fragmented unicast request on its own task,
/// unless [`LARGE_UNICAST_IN_FLIGHT_MAX`] are already under way (then it is dropped: the
/// engine re-sends). The reply is only an acknowledgement; its content is not used.
fn send_large(
    endpoint: &Endpoint,
    permits: &Arc<Semaphore>,
    id: NodeId,
    addr: SocketAddr,
    message: Message,
    len: usize,
) {
    let Ok(permit) = permits.clone().try_acquire_owned() else {
        tracing::debug!(to = id, len, "oversize message dropped: too many in flight");
        return;
    };
    let endpoint = endpoint.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let sent =
            endpoint.request(addr, message, LARGE_UNICAST_TIMEOUT, LARGE_UNICAST_RETRIES).await;
        if let Err(e) = sent {
            tracing::debug!(to = id, len, "oversize message not acknowledged: {e}");
        }
    });
}
