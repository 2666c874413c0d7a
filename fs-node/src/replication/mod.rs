//! The IO-free replication engine: election, the prepare phase of a new master, batched and
//! pipelined proposals, commits, and the master lease.
//!
//! The engine holds no socket, file or clock (the shape of raft-rs's `RawNode`). Its inputs
//! are [`Engine::tick`] (time, passed in), [`Engine::step`] (a received message),
//! [`Engine::propose`] (a client operation, opaque bytes), [`Engine::persisted`] ("this
//! persist is durable") and [`Engine::snapshot_installed`]. Its outputs come from
//! [`Engine::ready`] as a [`Ready`]: records to persist, messages to send now, messages to send
//! only after the persist is durable, committed entries to apply in zxid order, role changes,
//! and a request to fetch data files. Reading old entries for catch-up goes through the
//! [`LogReader`] the host passes in, since the log lives on disk.
//!
//! # Layout
//! - `types`: [`EngineConfig`], [`HardState`], [`PersistOp`], [`Ready`], [`LogReader`], errors.
//! - `engine`: [`Engine`], the protocol below.
//! - `memlog`: [`MemLog`], an in-memory [`LogReader`] that applies [`PersistOp`]s; the
//!   reference of the log rules, used by the tests and the simulator.
//! - `tests`: one unit test per protocol rule, asserting the exact outputs.
//! - `model`: the bounded model check (test only).
//!
//! # Protocol (Zab's three phases, with FastLeaderElection in front)
//!
//! **Election** (FLE). A looking node votes for the best (current epoch, last zxid, id) it
//! has heard in its round, compared in that order, and rebroadcasts when its vote changes; a
//! higher round from a peer resets its tally. When n/2+1 votes (its own included) agree, the
//! winner leads and the others follow it. Rounds end after `election_timeout_ms`. The vote is
//! only a hint of who is most up to date: safety rests on the next two phases.
//!
//! **Discovery.** The winner picks an epoch above every epoch it has heard of (votes carry
//! each node's accepted epoch), promises it to itself durably, then sends Prepare. A node
//! promises (durably: [`HardState`] `accepted_epoch` and `promised_to`, before its PrepareOk
//! leaves) only an epoch above the one it promised, so two masters never share an epoch: their
//! promise quorums would intersect. PrepareOk reports the node's (current epoch, last zxid).
//! Once a quorum promised, the master checks that none of them has a newer history than its
//! own; if one does, it gives way (that history may hold committed entries it lacks) and the
//! next election favours the better vote. Otherwise its history holds every committed entry:
//! an entry committed in an earlier epoch is durable on a quorum, which meets the promising
//! quorum, and nodes that promised accept nothing from older epochs.
//!
//! **Synchronization.** The master adopts its epoch (`current_epoch`, persisted) and brings
//! each follower to its history with Sync chunks: each chunk names the zxid it follows
//! (`prev`); a follower that lacks `prev` answers with the largest zxid below it that it has
//! (a PrepareOk), so the master walks back to the common point. Two histories holding the same
//! zxid agree up to it (one master numbers an epoch; logs only lose suffixes), so the follower
//! keeps what it shares, truncates a divergent tail from the first difference, and appends the
//! rest. The last chunk is `done`: the follower drops an older-epoch tail past it (entries of
//! the master's own epoch past it are kept: a reordered, stale `done` chunk must not drop
//! them), adopts the epoch (persisted after the entries) and acks with Accept only once all
//! that is durable. A follower
//! behind the master's log retention (`prev` below the log's base) is told to fetch the data
//! files ([`Ready::fetch_snapshot`]); until file transfer exists the host may copy them by any
//! bulk means (the simulator copies the committed state directly), then calls
//! [`Engine::snapshot_installed`]. The master counts itself only once its own epoch adoption is
//! durable. It is established, and takes writes, when a quorum holds its whole history
//! durably in its epoch; that commits the history.
//!
//! **Broadcast.** Only the master orders writes; [`Engine::propose`] elsewhere returns
//! [`ProposeError::NotMaster`] with the master to forward or redirect to. Proposals are
//! batched (every operation proposed before [`Engine::ready`] goes out together, split at
//! `batch_entries_max`/`batch_bytes_max`) and pipelined (up to `inflight_entries_max`
//! uncommitted entries). The master sends proposals before its own fsync, so that followers
//! persist in parallel. Followers ack after durability (the Accept is in
//! `send_after_persist`). An entry commits once a quorum acked it durable in the current epoch;
//! commits go out as a multicast Commit (the host turns applied entries into the Update
//! notifications caches listen to) and ride on proposals and heartbeats. Every node hands out
//! committed entries in zxid order, and never beyond what it holds durably. A lost proposal
//! leaves a gap the follower ignores; the master resends from the follower's last ack when
//! acks stop advancing.
//!
//! **Lease.** Heartbeats carry `lease_ms`. A follower that received one promises no other
//! master until `lease_ms` has passed on its own clock after receiving it; a restarted node,
//! which forgot whose lease it held, promises no one for `lease_ms` after start. The master's
//! lease runs from the *send* time of a heartbeat acked by a quorum, minus `drift_margin_ms`,
//! so it ends before any follower of that quorum can promise a successor: no new master can
//! commit while an old one still answers lease reads. [`Engine::lease_read_ok`] says when the
//! master may answer a linearizable read locally; otherwise the host orders the read through
//! the log (propose an empty entry, answer once it commits). A new master waits for promises,
//! which wait for the old lease, so its takeover waits accordingly.
//!
//! **Liveness.** A follower that hears nothing from its master for `election_timeout_ms`
//! looks for a new one; a master that hears from no quorum that long steps down, as does one
//! not established that long after winning. A master bringing a looking peer back sends it
//! Prepare again. A looking peer that promised a later epoch, or the master's epoch to a rival
//! candidate (votes carry `accepted_epoch` and `promised_to`), makes the master step down, so
//! that the next epoch can win it back.
//!
//! # Lost durable state
//!
//! A node whose host found no durable replication state, or knows it may have lost some,
//! starts [`Durability::Lost`] (through [`Engine::start`]) as a *non-voter*: its Vote says
//! `fresh` and names itself (so it carries its own history); voters count no fresh vote; it
//! promises nothing (a Prepare gets its vote back, and it follows that master to be caught
//! up), sends no Accept (after a catch-up, a proposal or a heartbeat), so it counts toward no
//! commit, lease or promise quorum. Why: a commit is durable on a quorum; a node that lost it
//! and still voted could, with a lagging node, form a majority that lacks the entry, or
//! promise again an epoch it had promised. With non-voters excluded, any promise quorum (of
//! voters) still meets every commit quorum in a node that kept its disk: both have at least
//! n/2+1 members among the n - w nodes not wiped.
//!
//! It becomes a voter again in one of two ways:
//! - **Repair.** It took a master's `done` chunk (the master's whole history, which holds
//!   every committed entry), that write is durable, and it has heard, since it started, a vote
//!   from *every* other member (voters answer a fresh vote with theirs; a non-voter keeps
//!   asking), none reporting an accepted epoch above the master's. Then it persists the
//!   master's epoch as accepted and current (after the entries) and acks. Hearing every
//!   member matters because the node may have promised, before its loss, an epoch it forgot;
//!   that epoch's candidate promised it to itself durably and says so in its vote, so a master
//!   below it is not trusted to hold what that epoch committed. A master that is below some
//!   member's accepted epoch is replaced anyway (it steps down for such a peer).
//! - **Bootstrap.** It has no history and no promise, and every other member reported the
//!   same (accepted epoch 0, empty history) since it started: then nothing was ever committed.
//!   It must be *every* member, not a majority: with 3 nodes where C never started, A and B
//!   commit x and B then loses its disk; B and C are a majority of empties and would lose x.
//!   So the first election of a new cluster needs every member up.
//!
//! Limits: a cluster that lost a disk while another member is down for good stays without a
//! master for the wiped node (it cannot hear every member): an operator must bring the member
//! back or copy a voter's data directory (log and epoch state) to the wiped node before it
//! starts. A vote delayed in the network from before the non-voter's restart counts as heard;
//! real networks do not hold datagrams that long, but the protocol does not exclude it.
//!
//! # How it is checked
//! - `tests`: one unit test per rule above, asserting the exact outputs.
//! - `model`: a bounded model check of 3 engines (breadth-first to a state budget, not
//!   exhausted, plus seeded deep random walks) under loss, duplication, reordering, one crash,
//!   and each persist op becoming durable separately in any order the host contract allows:
//!   one master per epoch, one committed order everywhere, the master holds every committed
//!   entry. It proves these for the states it reached (printed), not in general.
//! - `shoal-tests` `replication_sim`: a seeded simulation of 3 and 5 nodes with partitions,
//!   crashes, disk wipes, restarts, loss and log compaction, whose client history must be
//!   linearizable and which must lose no committed entry.
//!
//! The client request table (retries that apply once) and applying entries to state belong to
//! the state-machine layer: to this engine entry data is opaque.

mod engine;
mod memlog;
#[cfg(test)]
mod model;
#[cfg(test)]
mod tests;
mod types;

pub use engine::Engine;
pub use memlog::MemLog;
pub use types::{
    Durability, EngineConfig, EngineConfigError, EngineRole, HardState, LogReader, PersistOp,
    ProposeError, Ready, RestartState, To, CLUSTER_SIZES, LEASE_HEARTBEATS_TRACKED_MAX,
};
