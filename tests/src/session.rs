//! The checker of what DESIGN.md promises for reads that are *not* linearizable: cached reads
//! (the client library's default) and reads from any node (followers included). Per client:
//!
//! - **Read-your-writes**: after a client's write of key `k` was acknowledged at zxid `z`, its
//!   reads of `k` return a value of zxid `z` or later.
//! - **Monotonic reads**: the zxid of the values one client reads of one key never decreases.
//! - **Sequential consistency through the floor**: a client that has seen zxid `F` anywhere (a
//!   value it read, a write it had acknowledged) reads of `k` a value at least as new as the
//!   newest acknowledged write of `k` at or below `F` (the node answers only once it applied
//!   `F`, and the cache only with entries valid through `F`).
//! - **Integrity**: every value read was written to that key by an operation called before the
//!   read returned (nothing from the future, nothing from another key); a value read with the
//!   zxid of an acknowledged write is that write's value.
//!
//! The floor the checker uses is what the history shows (zxids of values read and of
//! acknowledgements), a lower bound of the client's real floor (which also rises with replies'
//! applied zxids), so every violation it reports is real. Writes with an unknown outcome only
//! take part in the integrity check (their zxid is unknown). Linearizable reads are checked here
//! too: they must keep these promises as well.

use crate::linearizability::Value;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// How a read was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReadMode {
    /// `Client::read`: the client cache, filled from any node.
    Cached,
    /// Any node at the client's floor, the cache bypassed (a follower read).
    Node,
    /// Through the master inside its lease.
    Linearizable,
}

impl fmt::Display for ReadMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReadMode::Cached => "cached read",
            ReadMode::Node => "node read",
            ReadMode::Linearizable => "linearizable read",
        })
    }
}

/// What one operation did, as far as this checker cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEvent {
    /// A read that answered: the value (None: absent) and its zxid (0 when absent).
    Read { mode: ReadMode, value: Option<Value>, zxid: u64 },
    /// A write (or applied compare-and-set) of `value`: `acked` is the zxid of its
    /// acknowledgement, None when its outcome is unknown (or it was refused: then it wrote
    /// nothing, and listing it only widens the integrity check).
    Write { value: Value, acked: Option<u64> },
}

/// One operation of one client, times in µs from the start of the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionOp {
    pub client: u64,
    pub key: String,
    pub call_us: u64,
    pub end_us: u64,
    pub event: SessionEvent,
}

/// A broken promise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionViolation {
    /// The client read an older value of `key` than its own acknowledged write.
    ReadYourWrites { client: u64, key: String, at_us: u64, mode: ReadMode, read: u64, wrote: u64 },
    /// The client read an older value of `key` than it had read before.
    MonotonicReads { client: u64, key: String, at_us: u64, mode: ReadMode, read: u64, before: u64 },
    /// The client's floor covered an acknowledged write of `key` newer than what it read.
    BelowFloor {
        client: u64,
        key: String,
        at_us: u64,
        mode: ReadMode,
        read: u64,
        floor: u64,
        required: u64,
    },
    /// A value nobody wrote to `key` before the read returned, or not the value acknowledged
    /// at that zxid.
    Integrity { client: u64, key: String, at_us: u64, mode: ReadMode, detail: String },
}

impl fmt::Display for SessionViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let z = |z: &u64| format!("{}:{}", z >> 32, z & 0xffff_ffff);
        match self {
            SessionViolation::ReadYourWrites { client, key, at_us, mode, read, wrote } => write!(
                f,
                "read-your-writes: c{client} {mode} of {key} at {at_us} µs saw zxid {} after its \
                 own write at {}",
                z(read),
                z(wrote)
            ),
            SessionViolation::MonotonicReads { client, key, at_us, mode, read, before } => write!(
                f,
                "monotonic reads: c{client} {mode} of {key} at {at_us} µs saw zxid {} after \
                 having seen {}",
                z(read),
                z(before)
            ),
            SessionViolation::BelowFloor { client, key, at_us, mode, read, floor, required } => {
                write!(
                    f,
                    "below floor: c{client} {mode} of {key} at {at_us} µs saw zxid {} though \
                     its floor {} covers the acknowledged write at {}",
                    z(read),
                    z(floor),
                    z(required)
                )
            }
            SessionViolation::Integrity { client, key, at_us, mode, detail } => {
                write!(f, "integrity: c{client} {mode} of {key} at {at_us} µs: {detail}")
            }
        }
    }
}

/// The verdict on a history.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionCheck {
    /// Reads checked, per mode.
    pub reads: BTreeMap<String, usize>,
    pub violations: Vec<SessionViolation>,
}

impl SessionCheck {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    pub fn reads_checked(&self) -> usize {
        self.reads.values().sum()
    }
}

/// Checks every client's operations (each client does one operation at a time; the order of
/// one client's operations is their call order).
pub fn check(ops: &[SessionOp]) -> SessionCheck {
    // Every value written, by value: its key, when its write was called, its zxid if acked.
    let mut written: HashMap<Value, (&str, u64, Option<u64>)> = HashMap::new();
    // Acknowledged writes per key, by zxid.
    let mut acked: HashMap<&str, BTreeMap<u64, Value>> = HashMap::new();
    for op in ops {
        if let SessionEvent::Write { value, acked: zxid } = op.event {
            written.insert(value, (op.key.as_str(), op.call_us, zxid));
            if let Some(z) = zxid {
                acked.entry(op.key.as_str()).or_default().insert(z, value);
            }
        }
    }
    let mut by_client: BTreeMap<u64, Vec<&SessionOp>> = BTreeMap::new();
    for op in ops {
        by_client.entry(op.client).or_default().push(op);
    }
    let mut result = SessionCheck::default();
    for (client, mut mine) in by_client {
        mine.sort_by_key(|op| op.call_us);
        let mut floor = 0u64;
        // Per key: the newest zxid seen, and whether it was the client's own write.
        let mut last: HashMap<&str, (u64, bool)> = HashMap::new();
        for op in mine {
            let key = op.key.as_str();
            match op.event {
                SessionEvent::Write { acked: Some(z), .. } => {
                    floor = floor.max(z);
                    let entry = last.entry(key).or_insert((0, false));
                    if z >= entry.0 {
                        *entry = (z, true);
                    }
                }
                SessionEvent::Write { acked: None, .. } => {}
                SessionEvent::Read { mode, value, zxid } => {
                    *result.reads.entry(mode.to_string()).or_default() += 1;
                    let at_us = op.end_us;
                    let violation = |detail: String| SessionViolation::Integrity {
                        client,
                        key: key.to_string(),
                        at_us,
                        mode,
                        detail,
                    };
                    if let Some(v) = value {
                        match written.get(&v) {
                            None => result.violations.push(violation(format!(
                                "value {v} (zxid {zxid:#x}) was never written"
                            ))),
                            Some((k, _, _)) if *k != key => result
                                .violations
                                .push(violation(format!("value {v} was written to {k}"))),
                            Some((_, call, _)) if *call > op.end_us => result.violations.push(
                                violation(format!("value {v} was written at {call} µs, later")),
                            ),
                            Some((_, _, Some(z))) if *z != zxid => {
                                result.violations.push(violation(format!(
                                    "value {v} was acknowledged at zxid {z:#x}, read at {zxid:#x}"
                                )))
                            }
                            _ => {}
                        }
                    }
                    if let Some(expected) = acked.get(key).and_then(|a| a.get(&zxid)) {
                        if value != Some(*expected) {
                            result.violations.push(violation(format!(
                                "zxid {zxid:#x} holds {expected}, read {value:?}"
                            )));
                        }
                    }
                    let (before, own) = last.get(key).copied().unwrap_or((0, false));
                    if zxid < before {
                        let key = key.to_string();
                        result.violations.push(if own {
                            SessionViolation::ReadYourWrites {
                                client,
                                key,
                                at_us,
                                mode,
                                read: zxid,
                                wrote: before,
                            }
                        } else {
                            SessionViolation::MonotonicReads {
                                client,
                                key,
                                at_us,
                                mode,
                                read: zxid,
                                before,
                            }
                        });
                    } else {
                        let required = acked
                            .get(key)
                            .and_then(|a| a.range(..=floor).next_back())
                            .map_or(0, |(z, _)| *z);
                        if zxid < required {
                            result.violations.push(SessionViolation::BelowFloor {
                                client,
                                key: key.to_string(),
                                at_us,
                                mode,
                                read: zxid,
                                floor,
                                required,
                            });
                        }
                    }
                    floor = floor.max(zxid);
                    if zxid > before {
                        last.insert(key, (zxid, false));
                    }
                }
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(client: u64, key: &str, t: u64, value: Value, acked: Option<u64>) -> SessionOp {
        SessionOp {
            client,
            key: key.into(),
            call_us: t,
            end_us: t + 5,
            event: SessionEvent::Write { value, acked },
        }
    }

    fn read(client: u64, key: &str, t: u64, value: Option<Value>, zxid: u64) -> SessionOp {
        SessionOp {
            client,
            key: key.into(),
            call_us: t,
            end_us: t + 5,
            event: SessionEvent::Read { mode: ReadMode::Cached, value, zxid },
        }
    }

    /// A history where every client reads its own writes, never goes back, and respects its
    /// floor passes, stale reads of other clients' writes included (they are allowed).
    #[test]
    fn stale_but_session_consistent_reads_pass() {
        let ops = vec![
            write(1, "/a", 0, 10, Some(100)),
            read(1, "/a", 10, Some(10), 100),
            write(2, "/a", 20, 20, Some(200)),
            // Client 1 has not seen 200: the older value is fine.
            read(1, "/a", 30, Some(10), 100),
            read(2, "/a", 40, Some(20), 200),
            read(3, "/a", 50, None, 0),
            read(3, "/a", 60, Some(20), 200),
        ];
        let c = check(&ops);
        assert!(c.passed(), "{:?}", c.violations);
        assert_eq!(c.reads_checked(), 5);
    }

    /// Reading an older value than one's own acknowledged write is a read-your-writes
    /// violation.
    #[test]
    fn reading_before_ones_own_write_is_caught() {
        let ops = vec![
            write(2, "/a", 0, 10, Some(100)),
            write(1, "/a", 10, 20, Some(200)),
            read(1, "/a", 20, Some(10), 100),
        ];
        let c = check(&ops);
        assert!(
            matches!(
                c.violations[..],
                [SessionViolation::ReadYourWrites { read: 100, wrote: 200, .. }]
            ),
            "{:?}",
            c.violations
        );
    }

    /// Seeing a value, then an older one of the same key, is a monotonic-reads violation;
    /// a read of absence after a value too.
    #[test]
    fn going_back_in_time_is_caught() {
        let ops = vec![
            write(2, "/a", 0, 10, Some(100)),
            write(2, "/a", 10, 20, Some(200)),
            read(1, "/a", 20, Some(20), 200),
            read(1, "/a", 30, Some(10), 100),
            read(1, "/a", 40, None, 0),
        ];
        let c = check(&ops);
        assert_eq!(c.violations.len(), 2, "{:?}", c.violations);
        assert!(c.violations.iter().all(|v| matches!(v, SessionViolation::MonotonicReads { .. })));
    }

    /// A client that saw zxid 300 of another key must not read a value of `/a` older than
    /// the acknowledged write of `/a` at 200.
    #[test]
    fn a_read_below_the_floor_is_caught() {
        let ops = vec![
            write(2, "/a", 0, 10, Some(100)),
            write(2, "/a", 10, 20, Some(200)),
            write(2, "/b", 20, 30, Some(300)),
            read(1, "/b", 30, Some(30), 300),
            read(1, "/a", 40, Some(10), 100),
        ];
        let c = check(&ops);
        assert!(
            matches!(
                c.violations[..],
                [SessionViolation::BelowFloor { read: 100, floor: 300, required: 200, .. }]
            ),
            "{:?}",
            c.violations
        );
    }

    /// Values nobody wrote, written to another key, written only after the read, or not the
    /// value acknowledged at the zxid read are integrity violations; an unknown write's value
    /// may be read.
    #[test]
    fn foreign_future_and_mismatched_values_are_caught() {
        let ops = vec![
            write(2, "/a", 0, 10, Some(100)),
            write(2, "/b", 10, 20, Some(200)),
            write(2, "/a", 1_000, 30, None),
            write(2, "/a", 1_100, 40, None),
            read(1, "/a", 20, Some(99), 150),
            read(3, "/a", 30, Some(20), 200),
            read(4, "/a", 40, Some(30), 300),
            read(5, "/a", 50, Some(10), 120),
            read(6, "/a", 2_000, Some(40), 400),
        ];
        let c = check(&ops);
        assert_eq!(c.violations.len(), 4, "{:?}", c.violations);
        assert!(c.violations.iter().all(|v| matches!(v, SessionViolation::Integrity { .. })));
        assert!(c.violations.iter().all(|v| !v.to_string().contains("c6")));
    }
}
