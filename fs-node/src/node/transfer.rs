//! File transfer in the node: the donor side (`RequestFile`, `Backup`), the receiver side (a
//! join or catch-up asked by the replication engine, and an unsolicited offer: a backup pushed
//! by another node), and what `shoal status` shows about them.
//!
//! A donor sends a snapshot directory (see [`super::snapshot`]): immutable hard links, the
//! tables and the manifest, so nothing has to stay frozen in the live store while it streams;
//! the snapshot is *pinned* instead (the core takes no new snapshot and releases no log while
//! a pin is held, so the receiver can catch up from the log after the snapshot's zxid). The
//! node announces Freeze while it donates, which takes it out of the clients' read rotation.
//!
//! The receiver stages into `<data>/incoming/` ([`FsSink`]: nothing is visible before every
//! whole-file MD5 matched), verifies the manifest and the tables, moves the set to
//! `snapshots/<zxid>/` and asks the core to reset its log and restart from it. A failed
//! attempt starts over with the next member as donor, at most [`FETCH_ATTEMPTS_MAX`] times
//! with back-off; after that the node restarts (a fresh engine asks again).
//!
//! # Limits
//! Blocks travel on a multicast group of their own (the node's group address, a port derived
//! from the transfer id), so file transfer needs multicast: with `multicast = false` a fetch
//! fails and is retried, and the node cannot rejoin past its peers' log retention (keep
//! `log_retention_entries` large there). One transfer is sent at a time (more receivers join
//! it); a node receives one at a time. The offer lists every file in one datagram (about
//! [`OFFER_FILES_ABOUT`] store files): the store's merges of small segments keep a snapshot far
//! below that (`StoreConfig::sealed_segments_max`); a donor whose snapshot would not fit
//! refuses with `Unavailable` and says why. The offer's MD5s come from the snapshot's manifest
//! (`describe_snapshot`), so a donor starts without reading its data once more.

use super::core::Cmd;
use super::shared::Shared;
use super::snapshot::{self, SnapshotDir};
use crate::storage::backup::{ManifestFile, MANIFEST_NAME};
use cache_server::transfer::net::{
    request_offer, run_receiver, spawn_donor, transfer_endpoint_config, DonorHandle,
};
use cache_server::transfer::{
    md5_of, offer_bytes, DonorConfig, DonorOutcome, Freezer, FrozenSet, FsSink, Progress,
    ReceiverConfig, TransferError,
};
use protocol::message::data::{ErrorCode, ReadOp, ReadReply, ReadRequest, ReadValue, WireError};
use protocol::message::transfer::{
    Backup, BackupTarget, FileOffer, RequestFile, TransFile, TransferPurpose,
};
use protocol::message::Message;
use protocol::messaging::{Endpoint, EndpointConfig};
use protocol::{NodeId, Zxid};
use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// Staging directory of incoming transfers under the data directory.
pub const INCOMING_DIR: &str = "incoming";
/// Where backups pushed by other nodes land, as `<donor>-<zxid>/`.
pub const BACKUPS_DIR: &str = "backups";
/// Backups received from other nodes that a node keeps: after a new one is complete and
/// verified, the oldest (by zxid) beyond this many are deleted, so pushed backups cannot fill
/// the disk. Copy a backup elsewhere to keep it longer.
pub const BACKUPS_KEPT: usize = 3;
/// How long `shoal status` keeps showing how the last transfer ended.
pub const ENDED_SHOWN: Duration = Duration::from_secs(60);
/// Attempts of one fetch (each with the next member as donor) before the node restarts.
pub const FETCH_ATTEMPTS_MAX: u32 = 6;
/// First pause after a failed attempt; doubles up to [`FETCH_BACKOFF_MAX`].
pub const FETCH_BACKOFF: Duration = Duration::from_millis(200);
pub const FETCH_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Wait for the donor's offer (it may take a snapshot first), and retries.
pub const OFFER_TIMEOUT: Duration = Duration::from_secs(2);
pub const OFFER_RETRIES: u32 = 3;
/// About how many store files one offer datagram lists (15-character names), for messages.
pub const OFFER_FILES_ABOUT: usize = 1_500;
/// Transfer groups use the node's group address on one of this many ports after its own.
pub const TRANSFER_PORTS: u64 = 64;

/// The node's transfers; lives as long as the process (across in-process restarts), so that
/// the status of a finished transfer survives the restart that installs it.
pub(crate) struct Transfers {
    pub data_dir: PathBuf,
    pub members: BTreeMap<NodeId, SocketAddr>,
    /// The node's endpoint configuration with an ephemeral unicast port: the base of every
    /// transfer endpoint.
    pub base: EndpointConfig,
    pub donor_config: DonorConfig,
    pub receiver_config: ReceiverConfig,
    state: Mutex<TransferState>,
    /// One donor start at a time (the first RequestFile starts it, the next ones join it).
    starting: tokio::sync::Mutex<()>,
    next_id: AtomicU64,
    /// The node's main endpoint (transfers ask and answer on it); set once it is bound.
    endpoint: std::sync::OnceLock<Endpoint>,
}

#[derive(Default)]
struct TransferState {
    donor: Option<DonorHandle>,
    /// Snapshots being sent or copied: not deleted, and no new snapshot or log release.
    pinned: Vec<Zxid>,
    receiving: bool,
    fetching: bool,
    live: Option<Live>,
    ended: Option<(String, Instant)>,
}

enum Live {
    Donor(DonorHandle),
    Receiver(watch::Receiver<Progress>),
    Copy(String),
}

impl Transfers {
    pub fn new(
        node: NodeId,
        data_dir: PathBuf,
        members: BTreeMap<NodeId, SocketAddr>,
        mut base: EndpointConfig,
        rate_bytes_per_s: u64,
    ) -> Transfers {
        base.unicast_bind = SocketAddr::new(base.unicast_bind.ip(), 0);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Transfers {
            data_dir,
            members,
            base,
            donor_config: DonorConfig { rate_bytes_per_s, ..DonorConfig::default() },
            receiver_config: ReceiverConfig::default(),
            state: Mutex::new(TransferState::default()),
            starting: tokio::sync::Mutex::new(()),
            // Unique per node and start: node id in the top byte, start time below.
            next_id: AtomicU64::new((u64::from(node) << 56) | (now_ms & ((1 << 48) - 1)) << 8),
            endpoint: std::sync::OnceLock::new(),
        }
    }

    /// The node's main endpoint, once bound (the process sets it before the first run).
    pub fn set_endpoint(&self, endpoint: Endpoint) {
        let _ = self.endpoint.set(endpoint);
    }

    /// The node's main endpoint; none in a host without a network (the simulator).
    fn endpoint(&self) -> Result<Endpoint, String> {
        self.endpoint.get().cloned().ok_or_else(|| "this node has no network endpoint".into())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TransferState> {
        self.state.lock().expect("transfer state poisoned")
    }

    /// Snapshots that must stay (being sent or copied).
    pub fn pinned(&self) -> Vec<Zxid> {
        self.lock().pinned.clone()
    }

    /// Whether a snapshot is being sent or copied (no new snapshot, no log release).
    pub fn busy(&self) -> bool {
        !self.lock().pinned.is_empty()
    }

    /// Donating: the node announces Freeze.
    pub fn donating(&self) -> bool {
        self.lock().donor.as_ref().is_some_and(|d| !d.is_finished())
    }

    /// Fetching its data files: the node has no usable data and answers reads with `Behind`.
    pub fn fetching(&self) -> bool {
        self.lock().fetching
    }

    /// A new run starts: a fetch that asked for the restart is over.
    pub fn restarted(&self) {
        self.lock().fetching = false;
    }

    /// What `shoal status` shows: the running transfer's progress, or how the last one ended
    /// (for [`ENDED_SHOWN`]).
    pub fn status(&self) -> Option<String> {
        let state = self.lock();
        match &state.live {
            Some(Live::Donor(d)) => return Some(d.progress().to_string()),
            Some(Live::Receiver(rx)) => return Some(rx.borrow().to_string()),
            Some(Live::Copy(what)) => return Some(format!("{what}: copying")),
            None => {}
        }
        state.ended.as_ref().filter(|(_, at)| at.elapsed() < ENDED_SHOWN).map(|(t, _)| t.clone())
    }

    /// A running transfer, for the metrics gauge.
    pub fn running(&self) -> bool {
        self.lock().live.is_some()
    }

    fn end(&self, text: String) {
        let mut state = self.lock();
        state.live = None;
        state.ended = Some((text, Instant::now()));
    }

    fn next_transfer(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The group a transfer uses alone: the node's group address, a port derived from the id.
    pub fn group_for(&self, transfer: u64) -> SocketAddrV4 {
        transfer_group(self.base.group, transfer)
    }
}

/// Keeps a snapshot from being deleted (and the core from taking a new one or releasing log)
/// until dropped. The core pins a snapshot before handing it to a transfer, so that no later
/// snapshot can prune it in between.
pub(crate) struct PinGuard {
    transfers: Arc<Transfers>,
    pub zxid: Zxid,
}

impl PinGuard {
    pub fn new(transfers: &Arc<Transfers>, zxid: Zxid) -> PinGuard {
        transfers.lock().pinned.push(zxid);
        PinGuard { transfers: transfers.clone(), zxid }
    }
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        let mut state = self.transfers.lock();
        if let Some(i) = state.pinned.iter().position(|z| *z == self.zxid) {
            state.pinned.remove(i);
        }
    }
}

/// The multicast group of `transfer`: `base`'s address on a port next to `base`'s.
pub fn transfer_group(base: SocketAddrV4, transfer: u64) -> SocketAddrV4 {
    let offset = 1 + (transfer % TRANSFER_PORTS) as u16;
    let port =
        if base.port() <= u16::MAX - offset { base.port() + offset } else { base.port() - offset };
    SocketAddrV4::new(*base.ip(), port)
}

/// Holds the pin on a snapshot while a donor sends it (the donor "freezes" by sending only
/// the snapshot's immutable files).
struct SnapshotFreezer {
    snap: SnapshotDir,
    files: Vec<PathBuf>,
    pin: Option<PinGuard>,
}

impl Freezer for SnapshotFreezer {
    fn freeze(&mut self) -> cache_server::transfer::Result<FrozenSet> {
        tracing::info!(zxid = %self.snap.zxid, "frozen for a transfer (snapshot pinned)");
        Ok(FrozenSet { zxid: self.snap.zxid, files: self.files.clone() })
    }

    fn describe(
        &mut self,
        set: &FrozenSet,
    ) -> cache_server::transfer::Result<Option<Vec<FileOffer>>> {
        describe_snapshot(&self.snap, &set.files).map(Some).map_err(TransferError::State)
    }

    fn unfreeze(&mut self) {
        self.pin = None;
        tracing::info!(zxid = %self.snap.zxid, "unfrozen (snapshot unpinned)");
    }
}

/// The offer's file list of a snapshot's `files` from its manifest, without reading the data:
/// the manifest's MD5s were computed when the snapshot was finished, from the very inodes the
/// snapshot links (sealed store files are never written again; compaction only unlinks them),
/// so they still describe the bytes. Each size is checked against the file, and the manifest
/// itself (not listed in itself, and small) is hashed. A file the manifest does not list, or
/// whose size differs, means the snapshot is damaged: refused rather than sent.
pub(crate) fn describe_snapshot(
    snap: &SnapshotDir,
    files: &[PathBuf],
) -> Result<Vec<FileOffer>, String> {
    let manifest = snapshot::read_manifest(&snap.path)?;
    let listed: HashMap<&str, &ManifestFile> =
        manifest.files.iter().map(|f| (f.name.as_str(), f)).collect();
    let mut out = Vec::with_capacity(files.len());
    for path in files {
        let name = path
            .file_name()
            .ok_or_else(|| format!("{} has no file name", path.display()))?
            .to_string_lossy()
            .into_owned();
        let size =
            std::fs::metadata(path).map_err(|e| format!("reading {}: {e}", path.display()))?.len();
        if name == MANIFEST_NAME {
            let bytes =
                std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
            out.push(FileOffer { name, size: bytes.len() as u64, md5: md5_of(&bytes) });
            continue;
        }
        let Some(entry) = listed.get(name.as_str()) else {
            return Err(format!("{}: not in the snapshot's manifest", path.display()));
        };
        if entry.size != size {
            return Err(format!(
                "{}: {size} bytes, the snapshot's manifest says {}; the snapshot is damaged",
                path.display(),
                entry.size
            ));
        }
        let md5 = parse_md5(&entry.md5).ok_or_else(|| {
            format!("{}: the manifest's MD5 {:?} is not 32 hex digits", path.display(), entry.md5)
        })?;
        out.push(FileOffer { name, size, md5 });
    }
    Ok(out)
}

fn parse_md5(hex: &str) -> Option<[u8; 16]> {
    if hex.len() != 32 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn refused(code: ErrorCode, message: impl Into<String>) -> WireError {
    WireError { code, message: message.into() }
}

fn reply(shared: &Shared, result: Result<(), WireError>) -> Message {
    let applied = *shared.applied.read().expect("applied lock poisoned");
    Message::ReadReply(ReadReply {
        applied,
        load: Default::default(),
        result: result.map(|()| ReadValue::Bool(true)),
    })
}

/// Asks the core for a snapshot to send (a fresh one unless one is pinned already), pinned,
/// at or above `floor` (see [`backup_floor`]; zero for a catch-up, whose receiver catches up
/// the rest from the log).
async fn snapshot_for_transfer(
    shared: &Shared,
    floor: Zxid,
) -> Result<(SnapshotDir, PinGuard), WireError> {
    let (tx, rx) = oneshot::channel();
    shared.cmds.send(Cmd::Snapshot(tx)).await.map_err(|_| stopping())?;
    let (snap, pin) = rx.await.map_err(|_| stopping())?.map_err(|e| {
        refused(
            ErrorCode::Unavailable,
            format!("no snapshot can be made on node {}: {e}", shared.node),
        )
    })?;
    if snap.zxid < floor {
        return Err(refused(
            ErrorCode::Unavailable,
            format!(
                "node {} can offer only its snapshot at {}, older than the writes acknowledged \
                 before the backup was asked for ({floor}): a transfer or snapshot holds it; try \
                 again when it ends",
                shared.node, snap.zxid
            ),
        ));
    }
    Ok((snap, pin))
}

fn stopping() -> WireError {
    refused(ErrorCode::Unavailable, "the node is stopping")
}

/// How long a backup waits for this node to apply the writes acknowledged before it.
pub const BACKUP_CATCH_UP: Duration = Duration::from_secs(5);

/// The zxid a backup must hold: every write acknowledged before the `Backup` arrived. The
/// master's linearizable zxid covers them; a follower asks the master for it with a
/// linearizable read, as a client would, and waits until it has applied that far. A backup
/// taken on a lagging follower is then never older than what clients were told is written.
async fn backup_floor(shared: &Arc<Shared>) -> Result<Zxid, WireError> {
    let unavailable = |m: String| refused(ErrorCode::Unavailable, m);
    let master = shared.status.lock().expect("status poisoned").master;
    let floor = match master {
        Some(m) if m == shared.node => {
            let (tx, rx) = oneshot::channel();
            shared.cmds.send(Cmd::Linearizable(tx)).await.map_err(|_| stopping())?;
            rx.await.map_err(|_| stopping())?.map_err(|e| {
                unavailable(format!("the master cannot say which writes are acknowledged: {e}"))
            })?
        }
        Some(m) => {
            let addr = shared.transfers.members.get(&m).copied().ok_or_else(|| {
                unavailable(format!("the master, node {m}, is not in the member list"))
            })?;
            let endpoint = shared.transfers.endpoint().map_err(unavailable)?;
            let barrier = Message::Request(ReadRequest {
                floor: Zxid::ZERO,
                linearizable: true,
                op: ReadOp::Exists { key: protocol::key::ROOT.to_string() },
            });
            match endpoint.request(addr, barrier, OFFER_TIMEOUT, OFFER_RETRIES).await {
                Ok(Message::ReadReply(ReadReply { applied, result: Ok(_), .. })) => applied,
                Ok(Message::ReadReply(ReadReply { result: Err(e), .. })) => {
                    return Err(unavailable(format!(
                        "the master, node {m}, cannot say which writes are acknowledged: {}",
                        e.message
                    )))
                }
                Ok(other) => {
                    return Err(unavailable(format!(
                        "the master, node {m}, answered the barrier with {:?}",
                        other.kind()
                    )))
                }
                Err(e) => {
                    return Err(unavailable(format!(
                        "the master, node {m}, did not answer the barrier: {e}"
                    )))
                }
            }
        }
        None => {
            return Err(unavailable(format!(
                "node {} knows no master, so it cannot tell which writes are acknowledged; try \
                 again once a master is elected",
                shared.node
            )))
        }
    };
    cache_server::backend::wait_applied_on(&shared.applied_tx, floor, BACKUP_CATCH_UP)
        .await
        .map_err(|e| {
            unavailable(format!(
                "node {} did not apply the acknowledged writes (through {floor}) within {:?}: {e}",
                shared.node, BACKUP_CATCH_UP
            ))
        })?;
    Ok(floor)
}

/// Starts a donor over a fresh snapshot, or returns the running one.
async fn donor(
    shared: &Arc<Shared>,
    what: String,
    floor: Zxid,
) -> Result<(DonorHandle, bool), WireError> {
    let transfers = &shared.transfers;
    if transfers.fetching() {
        return Err(refused(
            ErrorCode::Unavailable,
            format!("node {} is fetching its own data files; ask another node", shared.node),
        ));
    }
    let _starting = transfers.starting.lock().await;
    if let Some(d) = transfers.lock().donor.clone() {
        if !d.is_finished() {
            return Ok((d, false));
        }
    }
    let (snap, pin) = snapshot_for_transfer(shared, floor).await?;
    let files = snap.files().map_err(|e| refused(ErrorCode::Internal, e))?;
    let id = transfers.next_transfer();
    let group = transfers.group_for(id);
    let freezer = SnapshotFreezer { snap: snap.clone(), files, pin: Some(pin) };
    let (handle, task) = spawn_donor(
        transfers.donor_config.clone(),
        transfer_endpoint_config(&transfers.base, group),
        id,
        shared.node,
        freezer,
    )
    .await
    .map_err(|e| {
        shared.metrics.transfers_failed.inc();
        let (code, message) = match e {
            TransferError::OfferTooLarge { files, .. } => (
                ErrorCode::Unavailable,
                format!(
                    "node {} cannot offer its data: its snapshot has {files} files, more than one \
                 offer datagram lists (about {OFFER_FILES_ABOUT}); its compactor merges small \
                 segments until the count is under the store's sealed_segments_max, so try \
                 again later or ask another node",
                    shared.node
                ),
            ),
            e => (ErrorCode::Internal, format!("cannot start the transfer: {e}")),
        };
        tracing::warn!("{message}");
        refused(code, message)
    })?;
    shared.metrics.transfers_started.inc();
    let bytes = offer_bytes(&handle.offer());
    tracing::info!(transfer = id, %group, zxid = %snap.zxid, bytes, "donor: transfer started");
    {
        let mut state = transfers.lock();
        state.donor = Some(handle.clone());
        state.live = Some(Live::Donor(handle.clone()));
    }
    let (watched, shared2) = (handle.clone(), shared.clone());
    tokio::spawn(async move {
        let started = Instant::now();
        let outcome = task.await;
        let stats = watched.stats();
        shared2.metrics.transfer_bytes_sent.add(stats.bytes_sent);
        let secs = started.elapsed().as_secs_f64();
        let text = match outcome {
            Ok(Ok(DonorOutcome::Completed { done, dropped })) if !done.is_empty() => {
                shared2.metrics.transfers_done.inc();
                tracing::info!(transfer = id, ?done, ?dropped, secs, "donor: transfer done");
                format!("done: {what} {bytes} bytes in {secs:.1} s")
            }
            Ok(Ok(DonorOutcome::Completed { dropped, .. })) => {
                shared2.metrics.transfers_failed.inc();
                tracing::warn!(transfer = id, ?dropped, "donor: every receiver was dropped");
                format!("failed: {what}: every receiver was dropped ({dropped:?})")
            }
            Ok(Ok(DonorOutcome::Aborted { reason })) => {
                shared2.metrics.transfers_failed.inc();
                tracing::warn!(transfer = id, reason, "donor: transfer aborted");
                format!("failed: {what}: {reason}")
            }
            Ok(Err(e)) => {
                shared2.metrics.transfers_failed.inc();
                tracing::warn!(transfer = id, "donor: transfer failed: {e}");
                format!("failed: {what}: {e}")
            }
            Err(e) => {
                shared2.metrics.transfers_failed.inc();
                format!("failed: {what}: the donor task ended: {e}")
            }
        };
        shared2.transfers.lock().donor = None;
        shared2.transfers.end(text);
    });
    Ok((handle, true))
}

/// A receiver's `RequestFile`: the offer of a running or new transfer, or why not.
pub(crate) async fn on_request_file(shared: &Arc<Shared>, request: RequestFile) -> Message {
    if !shared.transfers.members.contains_key(&request.receiver) || request.receiver == shared.node
    {
        let e = refused(
            ErrorCode::BadRequest,
            format!("node {} is not another member of this cluster", request.receiver),
        );
        return reply(shared, Err(e));
    }
    let what = format!("send to node {}", request.receiver);
    match donor(shared, what, Zxid::ZERO).await {
        Ok((handle, _)) => match handle.add_receiver(&request) {
            Ok(offer) => Message::TransFile(offer),
            Err(e) => reply(shared, Err(refused(ErrorCode::Unavailable, e.to_string()))),
        },
        Err(e) => reply(shared, Err(e)),
    }
}

/// The operator's `Backup`: answered at once; the transfer or copy runs on.
pub(crate) async fn on_backup(shared: &Arc<Shared>, backup: Backup) -> Message {
    let result = match backup.target {
        BackupTarget::Node(n) => backup_to_node(shared, n).await,
        BackupTarget::Directory(dir) => backup_to_dir(shared, PathBuf::from(dir)).await,
    };
    reply(shared, result)
}

async fn backup_to_node(shared: &Arc<Shared>, target: NodeId) -> Result<(), WireError> {
    let transfers = &shared.transfers;
    let Some(addr) = transfers.members.get(&target).copied() else {
        return Err(refused(
            ErrorCode::BadRequest,
            format!(
                "node {target} is not a member of this cluster (members {:?})",
                transfers.members.keys().collect::<Vec<_>>()
            ),
        ));
    };
    if target == shared.node {
        return Err(refused(
            ErrorCode::BadRequest,
            "a node cannot back up to itself; back up to a directory or another node",
        ));
    }
    if transfers.donating() {
        return Err(refused(
            ErrorCode::Unavailable,
            format!("node {} is already sending a transfer; try again when it ends", shared.node),
        ));
    }
    let floor = backup_floor(shared).await?;
    let (handle, fresh) = donor(shared, format!("backup to node {target}"), floor).await?;
    if !fresh {
        return Err(refused(ErrorCode::Unavailable, "a transfer is already running"));
    }
    let request = RequestFile {
        receiver: target,
        applied: handle.offer().snapshot_zxid,
        purpose: TransferPurpose::Backup,
        // The receiver checks its own free space when it accepts the offer.
        free_bytes: u64::MAX,
    };
    let offer =
        handle.add_receiver(&request).map_err(|e| refused(ErrorCode::Internal, e.to_string()))?;
    let endpoint = transfers.endpoint().map_err(|e| refused(ErrorCode::Unavailable, e))?;
    tokio::spawn(async move {
        // Push the offer; the donor drops the receiver by itself if it never starts.
        match endpoint.request(addr, Message::TransFile(offer), OFFER_TIMEOUT, OFFER_RETRIES).await
        {
            Ok(Message::ReadReply(ReadReply { result: Ok(_), .. })) => {
                tracing::info!(to = target, "backup: node accepted the offer")
            }
            Ok(Message::ReadReply(ReadReply { result: Err(e), .. })) => {
                tracing::warn!(to = target, "backup: node refused the offer: {}", e.message)
            }
            Ok(other) => tracing::warn!(to = target, kind = ?other.kind(), "backup: odd answer"),
            Err(e) => tracing::warn!(to = target, "backup: offer not answered: {e}"),
        }
    });
    Ok(())
}

async fn backup_to_dir(shared: &Arc<Shared>, dir: PathBuf) -> Result<(), WireError> {
    if !dir.is_absolute() {
        return Err(refused(
            ErrorCode::BadRequest,
            format!(
                "{} is not an absolute path (it is a path on node {})",
                dir.display(),
                shared.node
            ),
        ));
    }
    if std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(refused(
            ErrorCode::BadRequest,
            format!("{} is not empty; choose an empty or new directory", dir.display()),
        ));
    }
    let floor = backup_floor(shared).await?;
    let (snap, pin) = snapshot_for_transfer(shared, floor).await?;
    let what = format!("backup to {}", dir.display());
    shared.transfers.lock().live = Some(Live::Copy(what.clone()));
    shared.metrics.transfers_started.inc();
    let shared = shared.clone();
    tokio::spawn(async move {
        let started = Instant::now();
        let (from, to) = (snap.path.clone(), dir.clone());
        let copied = tokio::task::spawn_blocking(move || snapshot::copy_verified(&from, &to))
            .await
            .unwrap_or_else(|e| Err(format!("the copy task ended: {e}")));
        drop(pin);
        let secs = started.elapsed().as_secs_f64();
        let text = match copied {
            Ok(manifest) => {
                let bytes: u64 = manifest.files.iter().map(|f| f.size).sum();
                shared.metrics.transfers_done.inc();
                tracing::info!(dir = %dir.display(), zxid = %snap.zxid, bytes, secs, "backup done");
                format!("done: {what} {bytes} bytes in {secs:.1} s")
            }
            Err(e) => {
                shared.metrics.transfers_failed.inc();
                tracing::warn!(dir = %dir.display(), "backup failed: {e}");
                format!("failed: {what}: {e}")
            }
        };
        shared.transfers.end(text);
    });
    Ok(())
}

/// An offer this node did not ask for: a backup pushed by `offer.donor`. Accepted at once
/// (or refused with the reason); the receiver runs on into `backups/<donor>-<zxid>/`.
pub(crate) async fn on_offer(shared: &Arc<Shared>, offer: TransFile) -> Message {
    let transfers = &shared.transfers;
    if !transfers.members.contains_key(&offer.donor) || offer.donor == shared.node {
        let e =
            refused(ErrorCode::BadRequest, format!("node {} is not another member", offer.donor));
        return reply(shared, Err(e));
    }
    let dest = transfers.data_dir.join(BACKUPS_DIR).join(format!(
        "{}-{}",
        offer.donor,
        snapshot::dir_name(offer.snapshot_zxid)
    ));
    {
        let mut state = transfers.lock();
        if state.receiving || state.fetching {
            let e = refused(ErrorCode::Unavailable, "this node is already receiving a transfer");
            return reply(shared, Err(e));
        }
        if dest.exists() {
            let e = refused(ErrorCode::BadRequest, format!("{} already exists", dest.display()));
            return reply(shared, Err(e));
        }
        state.receiving = true;
    }
    let what = format!("backup from node {}", offer.donor);
    let shared2 = shared.clone();
    tokio::spawn(async move {
        let started = Instant::now();
        let result = receive(&shared2, &offer, &dest).await.and_then(|()| {
            crate::storage::backup::verify(&crate::storage::RealFs, &dest)
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        let secs = started.elapsed().as_secs_f64();
        let bytes = offer_bytes(&offer);
        let text = match result {
            Ok(()) => {
                tracing::info!(dir = %dest.display(), bytes, secs, "backup received");
                match prune_backups(&dest, BACKUPS_KEPT) {
                    Ok(removed) if !removed.is_empty() => {
                        tracing::info!(?removed, kept = BACKUPS_KEPT, "older backups removed")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!("removing older backups: {e}"),
                }
                format!("done: {what} {bytes} bytes in {secs:.1} s")
            }
            Err(e) => {
                tracing::warn!("backup from node {} failed: {e}", offer.donor);
                format!("failed: {what}: {e}")
            }
        };
        shared2.transfers.lock().receiving = false;
        shared2.transfers.end(text);
    });
    reply(shared, Ok(()))
}

/// The donor and zxid of a received backup's directory name (`<donor>-<zxid>`); `None` for
/// anything else (a `.partial-*` staging directory, a stray file).
fn backup_name(name: &str) -> Option<(NodeId, Zxid)> {
    let (donor, zxid) = name.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(donor) || !digits(zxid) {
        return None;
    }
    Some((donor.parse().ok()?, Zxid(zxid.parse().ok()?)))
}

/// After the backup in `done` is complete: keeps it and the newest (by zxid) others up to
/// `keep` in all, deletes the older received backups beside it, and returns what it deleted.
/// Staging directories and anything not named `<donor>-<zxid>` are left alone.
pub fn prune_backups(done: &Path, keep: usize) -> Result<Vec<PathBuf>, String> {
    let parent = done.parent().ok_or_else(|| format!("{} has no parent", done.display()))?;
    let entries =
        std::fs::read_dir(parent).map_err(|e| format!("listing {}: {e}", parent.display()))?;
    let mut others: Vec<(Zxid, PathBuf)> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("listing {}: {e}", parent.display()))?;
        let path = entry.path();
        if path == done || !path.is_dir() {
            continue;
        }
        if let Some((_, zxid)) = backup_name(&entry.file_name().to_string_lossy()) {
            others.push((zxid, path));
        }
    }
    // Newest first; the one just done counts as one of the kept.
    others.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
    let mut removed = Vec::new();
    for (_, path) in others.into_iter().skip(keep.saturating_sub(1)) {
        std::fs::remove_dir_all(&path).map_err(|e| format!("removing {}: {e}", path.display()))?;
        removed.push(path);
    }
    if !removed.is_empty() {
        snapshot::sync_dir(parent)?;
    }
    Ok(removed)
}

/// Runs a receiver for `offer` into `dest` (staged, installed atomically). Counts it.
async fn receive(shared: &Arc<Shared>, offer: &TransFile, dest: &Path) -> Result<(), String> {
    let transfers = &shared.transfers;
    let parent = dest.parent().expect("destination has a parent");
    std::fs::create_dir_all(parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
    FsSink::clean_stale(parent).map_err(|e| e.to_string())?;
    let free = cache_server::transfer::files::free_bytes(parent).map_err(|e| e.to_string())?;
    let group: SocketAddrV4 = offer
        .group
        .parse()
        .map_err(|_| format!("the offer's group {:?} is not ip:port", offer.group))?;
    shared.metrics.transfers_started.inc();
    let (tx, rx) = watch::channel(Progress::default());
    transfers.lock().live = Some(Live::Receiver(rx));
    tracing::info!(transfer = offer.transfer, donor = offer.donor, zxid = %offer.snapshot_zxid,
        bytes = offer_bytes(offer), %group, "receiver: transfer started");
    let endpoint = Endpoint::bind(transfer_endpoint_config(&transfers.base, group))
        .await
        .map_err(|e| e.to_string())?;
    let mut sink = FsSink::new(dest);
    let config = transfers.receiver_config.clone();
    let run = run_receiver(config, shared.node, offer, free, &mut sink, &endpoint, Some(&tx)).await;
    endpoint.shutdown().await;
    match run {
        Ok(run) => {
            shared.metrics.transfers_done.inc();
            shared.metrics.transfer_bytes_received.add(offer_bytes(offer));
            tracing::info!(transfer = offer.transfer, progress = %run.progress,
                stats = ?run.stats, "receiver: transfer installed");
            Ok(())
        }
        Err(e) => {
            shared.metrics.transfers_failed.inc();
            if matches!(e, TransferError::FileMismatch { .. }) {
                tracing::error!(transfer = offer.transfer, "receiver: checksum failure: {e}");
            }
            Err(e.to_string())
        }
    }
}

/// Starts fetching the data files (the engine's `fetch_snapshot`), unless a fetch runs.
pub(crate) fn start_fetch(shared: &Arc<Shared>, first: NodeId, base: Zxid, applied: Zxid) {
    {
        let mut state = shared.transfers.lock();
        if state.fetching {
            return;
        }
        state.fetching = true;
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        let purpose =
            if applied == Zxid::ZERO { TransferPurpose::Join } else { TransferPurpose::CatchUp };
        let mut donors: Vec<NodeId> =
            shared.transfers.members.keys().copied().filter(|d| *d != shared.node).collect();
        if let Some(i) = donors.iter().position(|d| *d == first) {
            donors.rotate_left(i);
        }
        let mut backoff = FETCH_BACKOFF;
        for attempt in 0..FETCH_ATTEMPTS_MAX {
            let donor = donors[attempt as usize % donors.len()];
            let started = Instant::now();
            match fetch_from(&shared, donor, base, purpose).await {
                Ok(snap) => {
                    let secs = started.elapsed().as_secs_f64();
                    let bytes = snapshot::read_manifest(&snap.path)
                        .map(|m| m.files.iter().map(|f| f.size).sum::<u64>())
                        .unwrap_or(0);
                    shared
                        .transfers
                        .end(format!("done: fetch from node {donor} {bytes} bytes in {secs:.1} s"));
                    tracing::info!(donor, zxid = %snap.zxid, secs, "fetched the data files; restarting from them");
                    let _ = shared.cmds.send(Cmd::Installed(snap.zxid)).await;
                    return;
                }
                Err(e) => {
                    tracing::warn!(donor, attempt, "fetching the data files failed: {e}");
                    shared.transfers.end(format!("failed: fetch from node {donor}: {e}"));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(FETCH_BACKOFF_MAX);
                }
            }
        }
        tracing::error!("no donor could send the data files; restarting to ask again");
        let _ = shared.cmds.send(Cmd::Restart).await;
    });
}

async fn fetch_from(
    shared: &Arc<Shared>,
    donor: NodeId,
    base: Zxid,
    purpose: TransferPurpose,
) -> Result<SnapshotDir, String> {
    let transfers = &shared.transfers;
    let addr = transfers.members[&donor];
    let incoming = transfers.data_dir.join(INCOMING_DIR);
    std::fs::create_dir_all(&incoming)
        .map_err(|e| format!("creating {}: {e}", incoming.display()))?;
    FsSink::clean_stale(&incoming).map_err(|e| e.to_string())?;
    let free = cache_server::transfer::files::free_bytes(&incoming).map_err(|e| e.to_string())?;
    let request = RequestFile { receiver: shared.node, applied: base, purpose, free_bytes: free };
    let offer =
        match request_offer(&transfers.endpoint()?, addr, request, OFFER_TIMEOUT, OFFER_RETRIES)
            .await
        {
            Ok(offer) => offer,
            Err(TransferError::BadOffer(detail)) => {
                return Err(format!("node {donor} refused to send its files ({detail})"))
            }
            Err(TransferError::Refused { message, .. }) => {
                return Err(format!("node {donor} refused to send its files: {message}"))
            }
            Err(e) => return Err(e.to_string()),
        };
    let dest = incoming.join(format!("{}-{}", offer.donor, offer.transfer));
    if dest.exists() {
        std::fs::remove_dir_all(&dest).map_err(|e| format!("removing {}: {e}", dest.display()))?;
    }
    let received = receive(shared, &offer, &dest).await;
    let result = match received {
        Ok(()) => {
            let (dest2, data_dir) = (dest.clone(), transfers.data_dir.clone());
            tokio::task::spawn_blocking(move || install_received(&dest2, &data_dir))
                .await
                .unwrap_or_else(|e| Err(format!("the install task ended: {e}")))
        }
        Err(e) => Err(e),
    };
    if dest.exists() {
        let _ = std::fs::remove_dir_all(&dest);
    }
    result
}

/// Checks a received snapshot (every MD5 against its manifest, the tables) and moves it to
/// `snapshots/<zxid>/`.
pub fn install_received(dir: &Path, data_dir: &Path) -> Result<SnapshotDir, String> {
    let manifest =
        crate::storage::backup::verify(&crate::storage::RealFs, dir).map_err(|e| e.to_string())?;
    let zxid = Zxid(manifest.zxid);
    snapshot::check(&SnapshotDir { zxid, path: dir.to_path_buf() })?;
    let root = data_dir.join(snapshot::SNAPSHOTS_DIR);
    std::fs::create_dir_all(&root).map_err(|e| format!("creating {}: {e}", root.display()))?;
    let path = root.join(snapshot::dir_name(zxid));
    if path.exists() {
        std::fs::remove_dir_all(&path).map_err(|e| format!("removing {}: {e}", path.display()))?;
    }
    std::fs::rename(dir, &path).map_err(|e| format!("renaming {}: {e}", dir.display()))?;
    snapshot::sync_dir(&root)?;
    Ok(SnapshotDir { zxid, path })
}
