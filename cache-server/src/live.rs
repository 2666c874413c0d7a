//! FSLive and Freeze announcements: what to send and when. IO-free: the caller passes the time
//! and the node's status, and sends what [`LiveAnnouncer::tick`] returns.
//!
//! FSLive goes out every interval (30 s by default), and at once when the role, master, epoch or
//! frozen flag changes, so that clients do not route on a stale picture for a whole interval. A
//! change of the frozen flag also produces a Freeze message.

use crate::backend::BackendStatus;
use protocol::message::data::Load;
use protocol::message::live::{Freeze, FsLive};
use protocol::message::Message;
use std::time::{Duration, Instant};

/// The design's FSLive interval.
pub const FS_LIVE_INTERVAL_DEFAULT: Duration = Duration::from_secs(30);

/// Builds this node's FSLive from its status, load and unicast address.
pub fn fs_live(status: &BackendStatus, load: Load, address: &str) -> FsLive {
    FsLive {
        node: status.node,
        role: status.role,
        epoch: status.epoch,
        applied: status.applied,
        frozen: status.frozen,
        load,
        address: address.to_string(),
        master: status.master,
    }
}

/// What an announcement depends on beside time: a change of any of these is announced at once.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Announced {
    role: protocol::message::data::Role,
    epoch: u32,
    master: Option<protocol::NodeId>,
    frozen: bool,
}

pub struct LiveAnnouncer {
    interval: Duration,
    address: String,
    next_due: Option<Instant>,
    last: Option<Announced>,
}

impl LiveAnnouncer {
    pub fn new(interval: Duration, address: impl Into<String>) -> LiveAnnouncer {
        assert!(!interval.is_zero(), "FSLive interval must be positive");
        LiveAnnouncer { interval, address: address.into(), next_due: None, last: None }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// When the next periodic FSLive is due (`None` before the first tick).
    pub fn next_due(&self) -> Option<Instant> {
        self.next_due
    }

    /// The messages to send now: FSLive when due or when the node's place changed, preceded by
    /// a Freeze when the frozen flag flipped.
    pub fn tick(&mut self, now: Instant, status: &BackendStatus, load: Load) -> Vec<Message> {
        let current = Announced {
            role: status.role,
            epoch: status.epoch,
            master: status.master,
            frozen: status.frozen,
        };
        let changed = self.last.as_ref() != Some(&current);
        let due = self.next_due.is_none_or(|due| now >= due);
        let mut out = Vec::new();
        if let Some(last) = &self.last {
            if last.frozen != current.frozen {
                out.push(Message::Freeze(Freeze {
                    node: status.node,
                    frozen: current.frozen,
                    applied: status.applied,
                }));
            }
        }
        if changed || due {
            out.push(Message::FsLive(fs_live(status, load, &self.address)));
            self.next_due = Some(now + self.interval);
            self.last = Some(current);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::message::data::Role;
    use protocol::Zxid;

    fn status(frozen: bool) -> BackendStatus {
        BackendStatus {
            node: 2,
            role: Role::Follower,
            epoch: 1,
            master: Some(1),
            applied: Zxid::new(1, 5),
            committed: Zxid::new(1, 5),
            frozen,
            transfer: None,
        }
    }

    /// FSLive goes out at start, then once per interval, and at once (with a Freeze) when the
    /// node freezes.
    #[test]
    fn periodic_and_on_change() {
        let t0 = Instant::now();
        let mut live = LiveAnnouncer::new(Duration::from_secs(30), "127.0.0.1:7701");
        let first = live.tick(t0, &status(false), Load::default());
        assert!(
            matches!(&first[..], [Message::FsLive(l)] if l.address == "127.0.0.1:7701" && l.applied == Zxid::new(1, 5))
        );
        assert!(live
            .tick(t0 + Duration::from_secs(29), &status(false), Load::default())
            .is_empty());
        assert_eq!(
            live.tick(t0 + Duration::from_secs(30), &status(false), Load::default()).len(),
            1
        );
        let frozen = live.tick(t0 + Duration::from_secs(31), &status(true), Load::default());
        assert!(
            matches!(&frozen[..], [Message::Freeze(f), Message::FsLive(l)] if f.frozen && l.frozen)
        );
        assert!(live.tick(t0 + Duration::from_secs(32), &status(true), Load::default()).is_empty());
    }
}
