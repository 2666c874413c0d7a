//! Counters of dropped input, one per reason, shared by the socket readers and read by metrics.
//!
//! Bad datagrams are an operating condition, not a bug: they are dropped and counted, and the
//! counts say whether the cause is noise (bad magic), a neighbour on another version or cluster,
//! a wrong key or an attacker (bad MAC), or a peer's bug (malformed).

use crate::error::ProtocolError;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why an input was dropped. One counter each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than its header or its length fields say (`Incomplete`).
    Truncated,
    /// Not a Shoal datagram.
    BadMagic,
    /// Another wire version.
    WrongVersion,
    /// Another cluster id.
    WrongCluster,
    /// The tag did not verify: wrong key or tampering.
    BadMac,
    /// A kind byte this version does not define.
    UnknownKind,
    /// Authentic but undecodable: a bad field, a lying length prefix, a bad checksum.
    Malformed,
    /// Over a named size or count limit.
    TooLarge,
    /// Authentic and well formed, but the receiver's memory for reordering and reassembly
    /// (`ReceiverConfig::held_bytes_max`, across all senders) was full: not held, or shed to
    /// make room for in-order data. The sender's retransmission repairs it later.
    ReceiverFull,
    /// A datagram under a key class this receiver does not take it under: member traffic
    /// under the client key, a member-key datagram from a non-member id, a client-key
    /// datagram of a kind clients do not send, or of a class whose key it lacks.
    WrongClass,
    /// Seen before, below the replay window, or of an older incarnation than the newest.
    Replay,
}

impl DropReason {
    pub const ALL: [DropReason; 11] = [
        DropReason::Truncated,
        DropReason::BadMagic,
        DropReason::WrongVersion,
        DropReason::WrongCluster,
        DropReason::BadMac,
        DropReason::UnknownKind,
        DropReason::Malformed,
        DropReason::TooLarge,
        DropReason::ReceiverFull,
        DropReason::WrongClass,
        DropReason::Replay,
    ];

    /// A stable snake_case name, for metric labels.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::BadMagic => "bad_magic",
            DropReason::WrongVersion => "wrong_version",
            DropReason::WrongCluster => "wrong_cluster",
            DropReason::BadMac => "bad_mac",
            DropReason::UnknownKind => "unknown_kind",
            DropReason::Malformed => "malformed",
            DropReason::TooLarge => "too_large",
            DropReason::ReceiverFull => "receiver_full",
            DropReason::WrongClass => "wrong_class",
            DropReason::Replay => "replay",
        }
    }

    /// Classifies an error. Every [`ProtocolError`] maps to exactly one reason.
    pub fn of(error: &ProtocolError) -> DropReason {
        match error {
            ProtocolError::Incomplete { .. } => DropReason::Truncated,
            ProtocolError::BadMagic { .. } => DropReason::BadMagic,
            ProtocolError::UnsupportedVersion { .. } => DropReason::WrongVersion,
            ProtocolError::WrongCluster { .. } => DropReason::WrongCluster,
            ProtocolError::BadMac => DropReason::BadMac,
            ProtocolError::WrongClass { .. } => DropReason::WrongClass,
            ProtocolError::Replay { .. } => DropReason::Replay,
            ProtocolError::UnknownKind(_) => DropReason::UnknownKind,
            ProtocolError::TooLarge { .. } | ProtocolError::TooMany { .. } => DropReason::TooLarge,
            ProtocolError::Malformed { .. } | ProtocolError::BadChecksum { .. } => {
                DropReason::Malformed
            }
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Lock-free drop counters; share one behind an `Arc` between readers and the metrics endpoint.
#[derive(Debug, Default)]
pub struct DropCounters {
    counts: [AtomicU64; DropReason::ALL.len()],
}

/// A copy of the counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropSnapshot {
    pub truncated: u64,
    pub bad_magic: u64,
    pub wrong_version: u64,
    pub wrong_cluster: u64,
    pub bad_mac: u64,
    pub unknown_kind: u64,
    pub malformed: u64,
    pub too_large: u64,
    pub receiver_full: u64,
    pub wrong_class: u64,
    pub replay: u64,
}

impl DropCounters {
    pub fn new() -> DropCounters {
        DropCounters::default()
    }

    /// Counts one dropped input for `error`'s reason and returns that reason (for logging).
    pub fn record(&self, error: &ProtocolError) -> DropReason {
        let reason = DropReason::of(error);
        self.record_reason(reason);
        reason
    }

    pub fn record_reason(&self, reason: DropReason) {
        self.record_many(reason, 1);
    }

    /// Counts `n` dropped inputs for `reason` (drops the core counts itself, added in bulk).
    pub fn record_many(&self, reason: DropReason, n: u64) {
        // Relaxed: each counter is independent and only ever read as a statistic.
        self.counts[reason.index()].fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self, reason: DropReason) -> u64 {
        self.counts[reason.index()].load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> DropSnapshot {
        DropSnapshot {
            truncated: self.get(DropReason::Truncated),
            bad_magic: self.get(DropReason::BadMagic),
            wrong_version: self.get(DropReason::WrongVersion),
            wrong_cluster: self.get(DropReason::WrongCluster),
            bad_mac: self.get(DropReason::BadMac),
            unknown_kind: self.get(DropReason::UnknownKind),
            malformed: self.get(DropReason::Malformed),
            too_large: self.get(DropReason::TooLarge),
            receiver_full: self.get(DropReason::ReceiverFull),
            wrong_class: self.get(DropReason::WrongClass),
            replay: self.get(DropReason::Replay),
        }
    }
}

impl DropSnapshot {
    pub fn total(&self) -> u64 {
        self.iter().map(|(_, n)| n).sum()
    }

    /// (reason, count) pairs in [`DropReason::ALL`] order, for metrics.
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> {
        let s = *self;
        DropReason::ALL.into_iter().map(move |r| (r, s.get(r)))
    }

    pub fn get(&self, reason: DropReason) -> u64 {
        match reason {
            DropReason::Truncated => self.truncated,
            DropReason::BadMagic => self.bad_magic,
            DropReason::WrongVersion => self.wrong_version,
            DropReason::WrongCluster => self.wrong_cluster,
            DropReason::BadMac => self.bad_mac,
            DropReason::UnknownKind => self.unknown_kind,
            DropReason::Malformed => self.malformed,
            DropReason::TooLarge => self.too_large,
            DropReason::ReceiverFull => self.receiver_full,
            DropReason::WrongClass => self.wrong_class,
            DropReason::Replay => self.replay,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each error lands in its own counter, and the snapshot reports exactly what was recorded.
    #[test]
    fn errors_are_counted_by_reason() {
        let counters = DropCounters::new();
        let errors = [
            ProtocolError::Incomplete { needed: 3 },
            ProtocolError::BadMagic { found: 0 },
            ProtocolError::UnsupportedVersion { found: 2, supported: 1 },
            ProtocolError::WrongCluster { found: 1, expected: 2 },
            ProtocolError::BadMac,
            ProtocolError::UnknownKind(200),
            ProtocolError::Malformed { what: "x", detail: String::new() },
            ProtocolError::TooLarge { what: "x", len: 2, max: 1 },
        ];
        for (error, reason) in errors.iter().zip(DropReason::ALL) {
            assert_eq!(counters.record(error), reason);
        }
        counters.record(&ProtocolError::TooMany { what: "x", count: 2, max: 1 });
        counters.record(&ProtocolError::BadChecksum { stored: 1, computed: 2 });
        counters.record_many(DropReason::ReceiverFull, 3);
        counters.record(&ProtocolError::WrongClass {
            class: "client",
            sender: 2,
            detail: "x".into(),
        });
        counters.record(&ProtocolError::Replay {
            sender: 2,
            incarnation: 1,
            counter: 1,
            detail: "x".into(),
        });
        let snap = counters.snapshot();
        assert_eq!(
            snap,
            DropSnapshot {
                truncated: 1,
                bad_magic: 1,
                wrong_version: 1,
                wrong_cluster: 1,
                bad_mac: 1,
                unknown_kind: 1,
                malformed: 2,
                too_large: 2,
                receiver_full: 3,
                wrong_class: 1,
                replay: 1,
            }
        );
        assert_eq!(snap.total(), 15);
        for reason in DropReason::ALL {
            assert_eq!(snap.get(reason), counters.get(reason), "{}", reason.name());
        }
    }
}
