//! Named locks kept by the master: acquire (exclusive or shared), wait, release, fencing tokens,
//! and the one background task that renews the session and every held lock in one message.
//!
//! # Rules (the master's are in `fs_node::locks`; these are the client's side of them)
//! - An exclusive acquire draws a random auth word in 2..=i32::MAX; a shared one uses 1. The
//!   auth word is a per-process secret: it is never logged, and a [`LockGuard`] does not show
//!   it in `Debug`.
//! - Every lock is tied to this client's session ([`crate::session`]), opened on first use.
//! - The grant's fencing token (the zxid of the grant) is raised into the client's floor, so
//!   reads made under the lock see every write committed before the grant.
//! - A held lock is refused, not queued: [`Client::lock`] fails with `LockHeld` naming the
//!   holders. [`Client::lock_wait`] waits (bounded) for a `LockChanged` of that lock and tries
//!   again; this client's waiters for one name try in arrival order (a FIFO async mutex).
//! - One renewal task per client sends `Renew { session, locks }` every
//!   [`LockConfig::renew_interval`] (TTL / 3.3 by default). A success makes the leases valid
//!   until `sent + lease - margin` ([`LEASE_DRIFT_MARGIN_PERCENT`] of the lease): measured from
//!   when the renewal was *sent*, since the master extended from a later instant, and short of
//!   the whole lease for clocks that run at different rates, so the client never believes a
//!   lease the master has already expired. The master renews only inside its own master
//!   lease: a deposed master that still thinks it leads answers `Unavailable`.
//! - A renewal refused with `SessionExpired`, `LockNotHeld` or `BadAuth` means the leases are
//!   gone: every lock is marked lost and the state becomes [`SessionState::Lost`]. A renewal
//!   that cannot reach the master (dead, electing, or not yet holding its takeover) is retried
//!   every third of a renewal period, each attempt following redirects to the new master; once
//!   less than half a TTL of validity is left the state is [`SessionState::InDanger`] (a
//!   warning is logged), and when the validity runs out, `Lost`. The first renewal answered
//!   makes it `Healthy` again (logged) with the same session and locks: a master failover
//!   shorter than the validity costs nothing, because a new master gives every existing lease
//!   a full TTL from its takeover. In `InDanger` the application should hold back side effects
//!   that rely on the lock without a fencing check; after `Lost` it re-acquires.
//! - Renewals never race a release of a listed lock: acquires and releases hold a shared gate,
//!   a renewal the exclusive one (a release applied before a renewal that still lists the lock
//!   would make the master refuse the whole renewal).
//! - Shared holds are counted per client: the master knows one holder per client, so the
//!   client releases a shared lock when its last local holder lets go.
//! - Dropping a [`LockGuard`] releases the lock in a spawned task; [`LockGuard::release`]
//!   waits for the answer.

use crate::client::{Client, Inner};
use crate::clock::now;
use crate::error::ClientError;
use crate::leases::Held;
pub use crate::leases::SessionState;
use crate::transport::Transport;
use crate::watch::{EventKind, Kinds, Target};
use protocol::key;
use protocol::limits::NAME_BYTES_MAX;
use protocol::message::data::Condition;
use protocol::message::lock::{LockGrant, LockRequestOp, AUTH_SHARED};
use protocol::Zxid;
use rand::Rng;

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Default lease of locks and the session (the design's 5 s).
pub const LOCK_TTL_DEFAULT: Duration = Duration::from_secs(5);
/// Default renewal period: about TTL / 3.3, so two renewals can be lost before the lease ends.
pub const RENEW_INTERVAL_DEFAULT: Duration = Duration::from_millis(1500);
/// `lock_wait` tries again at least this often even without a `LockChanged` (the notice may
/// have been lost in a gap that the cache flush reported as `Missed`).
pub const LOCK_WAIT_RECHECK: Duration = Duration::from_secs(1);
/// The share of a granted lease the client does not count on, for clocks that run at
/// different rates (the nodes' lease keeps the same 10 %: `drift_margin_ms` 30 of `lease_ms`
/// 300). The master's lease clock starts when it handles the renewal, after the client sent
/// it; the client counts from its send time, minus this margin.
pub const LEASE_DRIFT_MARGIN_PERCENT: u32 = 10;

/// Until when a lease of `lease_ms` granted to a renewal sent at `sent` is valid for the
/// client: from the send time (the master's clock started later), minus the drift margin.
pub(crate) fn valid_until(sent: Instant, lease_ms: u32) -> Instant {
    let margin = u64::from(lease_ms) * u64::from(LEASE_DRIFT_MARGIN_PERCENT) / 100;
    sent + Duration::from_millis(u64::from(lease_ms) - margin)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockConfig {
    /// The lease the client asks for its session; the master's lock TTL should match.
    pub ttl: Duration,
    /// How often the renewal task renews the session and every held lock.
    pub renew_interval: Duration,
    /// The host name shown to clients refused by a lock this client holds.
    pub host: String,
}

impl Default for LockConfig {
    fn default() -> LockConfig {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "unknown-host".to_string());
        LockConfig { ttl: LOCK_TTL_DEFAULT, renew_interval: RENEW_INTERVAL_DEFAULT, host }
    }
}

/// Draws an exclusive auth word in 2..=i32::MAX.
fn exclusive_auth() -> i32 {
    rand::thread_rng().gen_range(AUTH_SHARED + 1..=i32::MAX)
}

/// A held lock. Dropping it releases the lock (in a spawned task); [`LockGuard::release`]
/// waits for the master's answer.
pub struct LockGuard<T: Transport> {
    client: Client<T>,
    name: String,
    token: Zxid,
    shared: bool,
    generation: u64,
    released: bool,
}

impl<T: Transport> std::fmt::Debug for LockGuard<T> {
    /// No auth word: it is the holder's secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("name", &self.name)
            .field("token", &self.token)
            .field("shared", &self.shared)
            .finish()
    }
}

impl<T: Transport> LockGuard<T> {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The fencing token: the zxid of the grant. Tokens of one lock only grow.
    pub fn token(&self) -> Zxid {
        self.token
    }

    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// Whether the client still counts on this lock: not released, not lost, and inside the
    /// validity of its last renewal.
    pub fn is_held(&self) -> bool {
        !self.released && self.client.inner.locks.holds(&self.name, self.token, self.generation)
    }

    /// The write condition "this lock is still held with this token" (fencing).
    pub fn condition(&self) -> Condition {
        Condition::LockToken { lock: self.name.clone(), token: self.token }
    }

    /// The auth word, for the few callers that must name it on the wire themselves (the
    /// `shoal` CLI). Never log it.
    pub(crate) fn auth(&self) -> Option<i32> {
        let leases = self.client.inner.locks.leases();
        leases.held.get(&self.name).filter(|h| h.token == self.token).map(|h| h.auth)
    }

    /// Marks the guard as released by a transaction commit (no release of its own).
    pub(crate) fn disarm(&mut self) {
        self.released = true;
    }

    /// Releases the lock and waits for the master's answer. A lock already lost is `LockLost`.
    pub async fn release(mut self) -> Result<(), ClientError> {
        self.released = true;
        self.client.release_lock(&self.name, self.token).await
    }
}

impl<T: Transport> Drop for LockGuard<T> {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.released = true;
        let (client, name, token) = (self.client.clone(), self.name.clone(), self.token);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if let Err(e) = client.release_lock(&name, token).await {
                    tracing::debug!(lock = %name, "release on drop failed: {e}");
                }
            });
        }
    }
}

impl<T: Transport> Client<T> {
    /// Takes `name` now: exclusive with a random auth word, or shared (auth 1). A held lock is
    /// refused with `LockHeld` naming its holders (not queued; see [`Client::lock_wait`]).
    pub async fn lock(&self, name: &str, shared: bool) -> Result<LockGuard<T>, ClientError> {
        key::validate_mutable(name, NAME_BYTES_MAX)?;
        let session = self.ensure_session().await?;
        let registry = &self.inner.locks;
        let slot = registry.slot(name);
        let _op = slot.op.lock().await;
        if shared {
            let mut leases = registry.leases();
            let generation = leases.generation;
            let valid = leases.valid_until.is_some_and(|until| now() < until);
            let held = leases.held.get_mut(name).filter(|h| h.auth == AUTH_SHARED && valid);
            if let Some(held) = held {
                held.refs += 1;
                let token = held.token;
                return Ok(self.guard(name, token, true, generation));
            }
        }
        let auth = if shared { AUTH_SHARED } else { exclusive_auth() };
        let _gate = registry.gate.read().await;
        let host = format!("{}/{:x}", self.inner.config.locks.host, self.inner.id);
        let op = LockRequestOp::Acquire { lock: name.to_string(), auth, session, host };
        match self.lock_call(op).await? {
            LockGrant::Granted { token } => {
                self.raise_floor(token);
                let mut leases = registry.leases();
                let generation = leases.generation;
                leases.held.insert(name.to_string(), Held { auth, token, refs: 1 });
                Ok(self.guard(name, token, shared, generation))
            }
            other => Err(ClientError::UnexpectedReply(format!("{other:?} for an acquire"))),
        }
    }

    fn guard(&self, name: &str, token: Zxid, shared: bool, generation: u64) -> LockGuard<T> {
        let client = self.clone();
        LockGuard { client, name: name.to_string(), token, shared, generation, released: false }
    }

    /// Like [`Client::lock`], but while the lock is held by others waits (at most `wait`) for
    /// its `LockChanged` and tries again. This client's waiters for one name try in arrival
    /// order. Gives up with `WaitTimeout`.
    pub async fn lock_wait(
        &self,
        name: &str,
        shared: bool,
        wait: Duration,
    ) -> Result<LockGuard<T>, ClientError> {
        key::validate_mutable(name, NAME_BYTES_MAX)?;
        let deadline = tokio::time::Instant::now() + wait;
        let timed_out = || ClientError::WaitTimeout { lock: name.to_string(), waited: wait };
        let slot = self.inner.locks.slot(name);
        let _turn =
            tokio::time::timeout_at(deadline, slot.queue.lock()).await.map_err(|_| timed_out())?;
        // Watch before trying, so that a release between the refusal and the wait is seen.
        let kinds = Kinds::of(&[EventKind::LockChanged]);
        let (id, mut changes) = self.watch_channel(Target::Path(name.to_string()), kinds)?;
        let result = loop {
            match self.lock(name, shared).await {
                Err(ClientError::LockHeld { .. }) => {}
                other => break other,
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break Err(timed_out());
            }
            let wake = deadline.min(now + LOCK_WAIT_RECHECK);
            let _ = tokio::time::timeout_at(wake, changes.recv()).await;
        };
        self.unwatch(id);
        result
    }

    /// Releases `name` if this client holds it with `token` (the last local holder of a
    /// shared lock releases it on the master).
    pub(crate) async fn release_lock(&self, name: &str, token: Zxid) -> Result<(), ClientError> {
        let registry = &self.inner.locks;
        let slot = registry.slot(name);
        let _op = slot.op.lock().await;
        let was_held = registry.leases().held.get(name).is_some_and(|h| h.token == token);
        let Some(auth) = registry.unref(name, token) else {
            return if was_held {
                Ok(())
            } else {
                Err(ClientError::LockLost { detail: format!("lock {name} was no longer held") })
            };
        };
        let _gate = registry.gate.read().await;
        match self.lock_call(LockRequestOp::Release { lock: name.to_string(), auth }).await? {
            LockGrant::Released => Ok(()),
            other => Err(ClientError::UnexpectedReply(format!("{other:?} for a release"))),
        }
    }

    /// Sends a release of `name` with an auth word the caller names (the `shoal unlock`
    /// command). The master refuses it unless this client holds the lock with that word.
    pub async fn unlock_with_auth(&self, name: &str, auth: i32) -> Result<(), ClientError> {
        key::validate_mutable(name, NAME_BYTES_MAX)?;
        let _gate = self.inner.locks.gate.read().await;
        match self.lock_call(LockRequestOp::Release { lock: name.to_string(), auth }).await? {
            LockGrant::Released => {
                self.inner.locks.leases().held.remove(name);
                Ok(())
            }
            other => Err(ClientError::UnexpectedReply(format!("{other:?} for a release"))),
        }
    }

    /// The state of this client's leases; changes are pushed as they happen.
    pub fn session_state(&self) -> watch::Receiver<SessionState> {
        self.inner.locks.state_tx.subscribe()
    }

    /// How much longer this client counts on its session and locks: the validity of the last
    /// renewal the master answered (its send time plus the lease, less the drift margin) minus
    /// the time since. `None` without a session; zero once it ran out (the state is then
    /// [`SessionState::Lost`]). Work protected by a lock without a fencing check should finish
    /// inside this.
    pub fn lease_left(&self) -> Option<Duration> {
        let leases = self.inner.locks.leases();
        leases.session?;
        Some(leases.valid_until.map_or(Duration::ZERO, |u| u.saturating_duration_since(now())))
    }

    /// Lock names this client holds (for status and tests).
    pub fn held_locks(&self) -> Vec<String> {
        self.inner.locks.leases().held.keys().cloned().collect()
    }

    /// Starts the renewal task if it is not running.
    pub(crate) fn start_renewer(&self) {
        let mut leases = self.inner.locks.leases();
        if leases.renewer.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        leases.renewer = Some(tokio::spawn(run_renewer(weak)));
    }
}

/// What one renewal round decided about when to run next.
async fn renew_once<T: Transport>(inner: &Inner<T>) -> Duration {
    let config = &inner.config.locks;
    let registry = &inner.locks;
    let _gate = registry.gate.write().await;
    let (session, locks, generation, counted_until) = {
        let leases = registry.leases();
        let locks: Vec<(String, i32)> =
            leases.held.iter().map(|(name, h)| (name.clone(), h.auth)).collect();
        (leases.session, locks, leases.generation, leases.valid_until)
    };
    let Some(session) = session else { return config.renew_interval };
    let sent = now();
    // One attempt, bounded by the renewal period (a late answer is worth less than a fresh
    // try) and by the validity: once it has run out the locks are lost for good, and an answer
    // that arrives later must not bring them back (`is_held` already said false).
    let left = counted_until.map_or(Duration::MAX, |u| u.saturating_duration_since(sent));
    if left.is_zero() {
        tracing::warn!("lock validity ran out before a renewal got through: locks lost");
        registry.forget_all(true);
        return config.renew_interval;
    }
    let timeout = inner.config.request_timeout.min(config.renew_interval).min(left);
    let result = inner.lock_call(LockRequestOp::Renew { session, locks }, 1, timeout).await;
    let mut leases = registry.leases();
    if leases.generation != generation {
        return config.renew_interval;
    }
    match result {
        Ok(LockGrant::Renewed { lease_ms }) => {
            let until = valid_until(sent, lease_ms);
            // The renewal covered everything held (the gate kept acquires out), so its lease is
            // the validity now, shorter or not: a master with a shorter TTL than the client's
            // configuration corrects the client here.
            leases.valid_until = Some(until);
            drop(leases);
            let recovered = registry.state_tx.send_if_modified(|s| {
                let changed = *s != SessionState::Healthy;
                *s = SessionState::Healthy;
                changed
            });
            if recovered {
                tracing::info!(session = %format_args!("{session:#x}"), "lock renewal succeeded again: session healthy, locks kept");
            }
            config.renew_interval
        }
        Err(
            ClientError::SessionLost { .. }
            | ClientError::LockLost { .. }
            | ClientError::BadAuth { .. },
        ) => {
            drop(leases);
            tracing::warn!("lock renewal refused: session and locks lost");
            registry.forget_all(true);
            config.renew_interval
        }
        other => {
            let left =
                leases.valid_until.map_or(Duration::ZERO, |u| u.saturating_duration_since(now()));
            drop(leases);
            if left.is_zero() {
                tracing::warn!("lock renewals failed for a whole lease ({other:?}): locks lost");
                registry.forget_all(true);
                return config.renew_interval;
            }
            tracing::debug!(?left, "lock renewal failed ({other:?}); trying again shortly");
            if left < config.ttl / 2 {
                let entered = registry.state_tx.send_if_modified(|s| {
                    let changed = *s == SessionState::Healthy;
                    if changed {
                        *s = SessionState::InDanger;
                    }
                    changed
                });
                if entered {
                    tracing::warn!(
                        session = %format_args!("{session:#x}"),
                        ?left,
                        "lock renewals failing ({other:?}): session in danger; locks are kept \
                         if a renewal reaches the master before the validity ends"
                    );
                }
            }
            // Try again sooner, but never past the end of the validity.
            (config.renew_interval / 3).min(left)
        }
    }
}

async fn run_renewer<T: Transport>(inner: Weak<Inner<T>>) {
    let mut pause = match inner.upgrade() {
        Some(inner) => inner.config.locks.renew_interval,
        None => return,
    };
    loop {
        tokio::time::sleep(pause).await;
        let Some(inner) = inner.upgrade() else { return };
        pause = renew_once(&inner).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The validity a renewal gives starts at its send time and leaves the drift margin
    /// unused: a client whose clock runs 10 % slow must not outlive the master's lease. (It
    /// used to be the full lease from the send time.)
    #[test]
    fn a_renewal_is_valid_for_its_lease_less_the_drift_margin() {
        let sent = Instant::now();
        assert_eq!(valid_until(sent, 5_000), sent + Duration::from_millis(4_500));
        assert_eq!(valid_until(sent, 300), sent + Duration::from_millis(270));
        assert_eq!(valid_until(sent, 0), sent);
    }
}
