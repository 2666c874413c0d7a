//! The checker of the lock workload ([`crate::jepsen_locks`]): mutual exclusion judged by
//! what the master saw, through fencing tokens. Pure: it takes the history and the final
//! per-lock logs and returns every anomaly.
//!
//! # What the system promises, and so what is checked
//! A client whose lease lapsed may still *believe* it holds a lock (that is why fencing
//! exists), so client beliefs are not evidence. The evidence is what the master committed:
//! a fenced write (conditioned on `LockToken { lock, token }`) that succeeded at zxid `z` proves
//! the master held the lock with `token` at `z`; a grant returns its token (= its zxid). From
//! that, for each lock:
//!
//! 1. **Unique tokens**: two grants never share a token.
//! 2. **Grant order**: a grant acknowledged before another was asked for has a smaller token
//!    (tokens grow in real-time order, grants are linearizable).
//! 3. **Write after grant**: a fenced write with token `t` commits at a zxid above `t`.
//! 4. **No overlapping tenure**: a successful fenced write with token `t` at zxid `z` has no
//!    known grant `g` of the same lock with `t < g < z` — the holder of `t` wrote after a newer
//!    holder was granted the lock, i.e. two tenures overlapped in the log. Known grants are the
//!    tokens of acknowledged acquires and of successful fenced writes. Equivalently: every
//!    successful fenced write was made by the holder of the newest token at its zxid.
//! 5. **Stale tokens refused**: a fenced write made with a token its own client had already
//!    released (release acknowledged) must be refused.
//! 6. **The per-lock log**: each fenced write rewrites the lock's log key with every entry read
//!    under the lock plus its own. At the end (after healing) the log must hold the entry of
//!    every successful fenced write (an overlap would let one holder overwrite another's
//!    entry), no entry of a refused write, only entries some write made, tokens never
//!    decreasing along the log, and successful writes in their zxid order.
//!
//! # Beliefs, checked apart ([`check_beliefs`])
//! The library promises more than fencing: a client whose [`cache_client::LockGuard::is_held`]
//! is true may count on the lock, because its validity ends (by the drift margin) before the
//! master's lease does, and a master grants the lock to another only after that lease ended.
//! All clients of a run share one process and so one monotonic clock, so this is checkable:
//!
//! 7. **No belief after a newer grant**: a client that saw `is_held` true for token `t` at
//!    time `b` must not do so after a grant `g > t` of the same lock was acknowledged (to
//!    anyone) before `b`. A deposed master that renews leases it no longer owns (issue 15
//!    point 5) breaks exactly this, while fencing still refuses the old holder's writes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

/// An acknowledged grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acquire {
    pub client: u64,
    pub lock: String,
    pub token: u64,
    pub call_us: u64,
    pub end_us: u64,
}

/// A client saw its guard held (`is_held` true) at `at_us`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Belief {
    pub client: u64,
    pub lock: String,
    pub token: u64,
    pub at_us: u64,
}

/// How a fenced write ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Committed at this zxid.
    Ok(u64),
    /// Refused (the lock is not held with the token): nothing changed.
    Refused,
    /// No definite answer: it may have committed or not.
    Unknown,
}

/// One fenced write of a log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FencedWrite {
    pub client: u64,
    pub lock: String,
    pub token: u64,
    /// The entry's id (unique in the run).
    pub entry: String,
    pub call_us: u64,
    pub end_us: u64,
    pub outcome: WriteOutcome,
    /// Made after its own client's release of `token` was acknowledged: must be refused.
    pub stale: bool,
}

/// One entry of a lock's log key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    pub token: u64,
    pub entry: String,
}

/// The text of a log with `entries`: `t<token>:<entry>;` each.
pub fn format_log(entries: &[LogEntry]) -> String {
    entries.iter().map(|e| format!("t{}:{};", e.token, e.entry)).collect()
}

/// Parses a log key's value; `None` when it is not a log (garbage is an anomaly).
pub fn parse_log(text: &str) -> Option<Vec<LogEntry>> {
    let mut entries = Vec::new();
    for part in text.split(';').filter(|p| !p.is_empty()) {
        let (token, entry) = part.strip_prefix('t')?.split_once(':')?;
        entries.push(LogEntry { token: token.parse().ok()?, entry: entry.to_string() });
    }
    Some(entries)
}

/// A broken promise, with what shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Anomaly {
    DuplicateToken { lock: String, token: u64, clients: (u64, u64) },
    GrantOrder { lock: String, earlier: Acquire, later: Acquire },
    WriteBeforeGrant { write: FencedWrite },
    OverlappingTenure { write: FencedWrite, newer_grant: u64 },
    StaleWriteAccepted { write: FencedWrite },
    LostFencedWrite { write: FencedWrite },
    RefusedWriteApplied { write: FencedWrite },
    UnknownEntry { lock: String, entry: String },
    LogOutOfOrder { lock: String, detail: String },
    Unparsable { lock: String, text: String },
    BeliefAfterNewerGrant { belief: Belief, grant: Acquire },
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Anomaly::DuplicateToken { lock, token, clients } => write!(
                f,
                "{lock}: token {token} granted twice (clients {} and {})",
                clients.0, clients.1
            ),
            Anomaly::GrantOrder { lock, earlier, later } => {
                write!(
                f,
                "{lock}: grant {} (c{}, acknowledged at {} µs) precedes grant {} (c{}, asked at \
                 {} µs) in real time but has a larger token",
                earlier.token, earlier.client, earlier.end_us, later.token, later.client,
                later.call_us
            )
            }
            Anomaly::WriteBeforeGrant { write } => {
                write!(
                    f,
                    "{}: fenced write {} committed at or before its token",
                    write.lock,
                    describe(write)
                )
            }
            Anomaly::OverlappingTenure { write, newer_grant } => write!(
                f,
                "{}: fenced write {} committed after a newer grant {newer_grant}: two tenures \
                 overlapped",
                write.lock,
                describe(write)
            ),
            Anomaly::StaleWriteAccepted { write } => write!(
                f,
                "{}: fenced write {} with a token its client had released was accepted",
                write.lock,
                describe(write)
            ),
            Anomaly::LostFencedWrite { write } => write!(
                f,
                "{}: the entry of acknowledged fenced write {} is missing from the final log",
                write.lock,
                describe(write)
            ),
            Anomaly::RefusedWriteApplied { write } => write!(
                f,
                "{}: the entry of refused fenced write {} is in the final log",
                write.lock,
                describe(write)
            ),
            Anomaly::UnknownEntry { lock, entry } => {
                write!(f, "{lock}: final log holds entry {entry} that no client wrote")
            }
            Anomaly::LogOutOfOrder { lock, detail } => write!(f, "{lock}: final log {detail}"),
            Anomaly::Unparsable { lock, text } => {
                write!(f, "{lock}: final log is not a log: {text:?}")
            }
            Anomaly::BeliefAfterNewerGrant { belief, grant } => write!(
                f,
                "{}: c{} believed it held token {} at {:.3} ms, after grant {} to c{} was \
                 acknowledged at {:.3} ms",
                belief.lock,
                belief.client,
                belief.token,
                belief.at_us as f64 / 1000.0,
                grant.token,
                grant.client,
                grant.end_us as f64 / 1000.0
            ),
        }
    }
}

/// One write as a history line.
pub fn describe(w: &FencedWrite) -> String {
    let outcome = match w.outcome {
        WriteOutcome::Ok(z) => format!("ok at {z}"),
        WriteOutcome::Refused => "refused".into(),
        WriteOutcome::Unknown => "unknown".into(),
    };
    format!(
        "c{} {} token {} {}{} [{:.3}..{:.3} ms] {outcome}",
        w.client,
        w.lock,
        w.token,
        w.entry,
        if w.stale { " (stale)" } else { "" },
        w.call_us as f64 / 1000.0,
        w.end_us as f64 / 1000.0
    )
}

/// Checks a lock history against the promises in the module docs. `finals` holds, per lock,
/// the final value of its log key (`None`: the key was never written); locks missing from
/// `finals` (no final read) skip the log checks.
pub fn check(
    acquires: &[Acquire],
    writes: &[FencedWrite],
    finals: &BTreeMap<String, Option<String>>,
) -> Vec<Anomaly> {
    let mut anomalies = Vec::new();
    let mut by_lock: BTreeMap<&str, Vec<&Acquire>> = BTreeMap::new();
    for a in acquires {
        by_lock.entry(&a.lock).or_default().push(a);
    }
    // 1 and 2: unique tokens, real-time order of grants.
    for (lock, grants) in &by_lock {
        let mut seen: HashMap<u64, u64> = HashMap::new();
        for a in grants {
            if let Some(other) = seen.insert(a.token, a.client) {
                anomalies.push(Anomaly::DuplicateToken {
                    lock: lock.to_string(),
                    token: a.token,
                    clients: (other, a.client),
                });
            }
        }
        let mut sorted: Vec<&Acquire> = grants.clone();
        sorted.sort_by_key(|a| a.end_us);
        // For each grant, the largest token among grants acknowledged before it was asked.
        for later in grants {
            let earlier =
                sorted.iter().take_while(|e| e.end_us < later.call_us).max_by_key(|e| e.token);
            if let Some(earlier) = earlier.filter(|e| e.token >= later.token) {
                anomalies.push(Anomaly::GrantOrder {
                    lock: lock.to_string(),
                    earlier: (*earlier).clone(),
                    later: (*later).clone(),
                });
            }
        }
    }
    // Known grants per lock: acknowledged acquires and tokens proven by successful writes.
    let mut grants: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    for a in acquires {
        grants.entry(&a.lock).or_default().insert(a.token);
    }
    for w in writes {
        if matches!(w.outcome, WriteOutcome::Ok(_)) {
            grants.entry(&w.lock).or_default().insert(w.token);
        }
    }
    // 3, 4, 5: each successful write.
    for w in writes {
        let WriteOutcome::Ok(zxid) = w.outcome else { continue };
        if zxid <= w.token {
            anomalies.push(Anomaly::WriteBeforeGrant { write: w.clone() });
        }
        let newer = grants.get(w.lock.as_str()).and_then(|g| {
            g.range(w.token.saturating_add(1)..zxid.max(w.token.saturating_add(1))).next()
        });
        if let Some(&newer_grant) = newer {
            anomalies.push(Anomaly::OverlappingTenure { write: w.clone(), newer_grant });
        }
        if w.stale {
            anomalies.push(Anomaly::StaleWriteAccepted { write: w.clone() });
        }
    }
    // 6: the final logs.
    for (lock, text) in finals {
        let entries = match text.as_deref().map(parse_log) {
            None => Vec::new(),
            Some(Some(entries)) => entries,
            Some(None) => {
                let text = text.clone().unwrap_or_default();
                anomalies.push(Anomaly::Unparsable { lock: lock.clone(), text });
                continue;
            }
        };
        check_log(lock, &entries, writes, &mut anomalies);
    }
    anomalies
}

/// Rule 7 of the module docs: every belief against the grants acknowledged before it. One
/// anomaly per belief (the earliest-acknowledged newer grant).
pub fn check_beliefs(acquires: &[Acquire], beliefs: &[Belief]) -> Vec<Anomaly> {
    let mut by_lock: BTreeMap<&str, Vec<&Acquire>> = BTreeMap::new();
    for a in acquires {
        by_lock.entry(&a.lock).or_default().push(a);
    }
    for grants in by_lock.values_mut() {
        grants.sort_by_key(|a| a.end_us);
    }
    let mut anomalies = Vec::new();
    for b in beliefs {
        let Some(grants) = by_lock.get(b.lock.as_str()) else { continue };
        let newer = grants.iter().take_while(|g| g.end_us < b.at_us).find(|g| g.token > b.token);
        if let Some(grant) = newer {
            anomalies.push(Anomaly::BeliefAfterNewerGrant {
                belief: b.clone(),
                grant: (*grant).clone(),
            });
        }
    }
    anomalies
}

fn check_log(lock: &str, entries: &[LogEntry], writes: &[FencedWrite], out: &mut Vec<Anomaly>) {
    let mine: Vec<&FencedWrite> = writes.iter().filter(|w| w.lock == lock).collect();
    let by_entry: HashMap<&str, &FencedWrite> =
        mine.iter().map(|w| (w.entry.as_str(), *w)).collect();
    let position: HashMap<&str, usize> =
        entries.iter().enumerate().map(|(i, e)| (e.entry.as_str(), i)).collect();
    if position.len() != entries.len() {
        let detail = "holds an entry twice".to_string();
        out.push(Anomaly::LogOutOfOrder { lock: lock.to_string(), detail });
    }
    for e in entries {
        match by_entry.get(e.entry.as_str()) {
            None => out.push(Anomaly::UnknownEntry { lock: lock.into(), entry: e.entry.clone() }),
            Some(w) if w.token != e.token => out.push(Anomaly::LogOutOfOrder {
                lock: lock.into(),
                detail: format!(
                    "names token {} for {}, written with {}",
                    e.token, e.entry, w.token
                ),
            }),
            Some(_) => {}
        }
    }
    for pair in entries.windows(2) {
        if pair[1].token < pair[0].token {
            out.push(Anomaly::LogOutOfOrder {
                lock: lock.into(),
                detail: format!(
                    "has token {} ({}) after token {} ({})",
                    pair[1].token, pair[1].entry, pair[0].token, pair[0].entry
                ),
            });
        }
    }
    let mut acknowledged: Vec<(u64, usize, &FencedWrite)> = Vec::new();
    for w in &mine {
        let at = position.get(w.entry.as_str()).copied();
        match (w.outcome, at) {
            (WriteOutcome::Ok(_), None) => {
                out.push(Anomaly::LostFencedWrite { write: (*w).clone() })
            }
            (WriteOutcome::Ok(z), Some(i)) => acknowledged.push((z, i, w)),
            (WriteOutcome::Refused, Some(_)) => {
                out.push(Anomaly::RefusedWriteApplied { write: (*w).clone() })
            }
            _ => {}
        }
    }
    acknowledged.sort_by_key(|(z, _, _)| *z);
    for pair in acknowledged.windows(2) {
        if pair[1].1 < pair[0].1 {
            out.push(Anomaly::LogOutOfOrder {
                lock: lock.into(),
                detail: format!(
                    "has {} (committed at {}) before {} (committed at {})",
                    pair[1].2.entry, pair[1].0, pair[0].2.entry, pair[0].0
                ),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: &str = "/lock0";

    fn acquire(client: u64, token: u64, call_us: u64, end_us: u64) -> Acquire {
        Acquire { client, lock: L.into(), token, call_us, end_us }
    }

    fn write(client: u64, token: u64, entry: &str, outcome: WriteOutcome) -> FencedWrite {
        FencedWrite {
            client,
            lock: L.into(),
            token,
            entry: entry.into(),
            call_us: 0,
            end_us: 0,
            outcome,
            stale: false,
        }
    }

    fn log(entries: &[(u64, &str)]) -> BTreeMap<String, Option<String>> {
        let entries: Vec<LogEntry> =
            entries.iter().map(|(t, e)| LogEntry { token: *t, entry: e.to_string() }).collect();
        BTreeMap::from([(L.to_string(), Some(format_log(&entries)))])
    }

    /// A well-behaved history: two tenures one after the other, each writing under its token,
    /// a stale write refused, an unknown write absent — no anomaly. The baseline that the
    /// violating histories below differ from in one point each.
    #[test]
    fn sequential_tenures_pass() {
        let acquires = [acquire(1, 10, 0, 5), acquire(2, 20, 6, 30)];
        let mut stale = write(1, 10, "c1n2", WriteOutcome::Refused);
        stale.stale = true;
        let writes = [
            write(1, 10, "c1n1", WriteOutcome::Ok(12)),
            stale,
            write(2, 20, "c2n1", WriteOutcome::Ok(21)),
            write(2, 20, "c2n2", WriteOutcome::Unknown),
        ];
        let finals = log(&[(10, "c1n1"), (20, "c2n1")]);
        assert_eq!(check(&acquires, &writes, &finals), Vec::<Anomaly>::new());
        assert_eq!(parse_log(&format_log(&parse_log("t1:a;t2:b;").unwrap())).unwrap().len(), 2);
    }

    /// Rule 7: a belief in token 10 after grant 20 was acknowledged is an anomaly; the same
    /// belief just before that acknowledgement, or in the newer token, is not.
    #[test]
    fn belief_after_a_newer_grant_is_flagged() {
        let acquires = [acquire(1, 10, 0, 5), acquire(2, 20, 6, 3_000)];
        let belief = |client, token, at_us| Belief { client, lock: L.into(), token, at_us };
        let fine = [belief(1, 10, 2_999), belief(2, 20, 3_500)];
        assert_eq!(check_beliefs(&acquires, &fine), Vec::<Anomaly>::new());
        let late = belief(1, 10, 3_001);
        assert_eq!(
            check_beliefs(&acquires, std::slice::from_ref(&late)),
            vec![Anomaly::BeliefAfterNewerGrant { belief: late, grant: acquires[1].clone() }]
        );
    }

    /// The old holder's write committed after a newer grant: overlapping tenures (4), even
    /// when the newer holder has not written yet (its acquire alone is the evidence).
    #[test]
    fn write_after_newer_grant_is_an_overlap() {
        let acquires = [acquire(1, 10, 0, 5), acquire(2, 20, 6, 30)];
        let writes = [write(1, 10, "c1n1", WriteOutcome::Ok(25))];
        let anomalies = check(&acquires, &writes, &BTreeMap::new());
        assert!(
            matches!(anomalies.as_slice(), [Anomaly::OverlappingTenure { newer_grant: 20, .. }]),
            "{anomalies:?}"
        );
    }

    /// A newer token proven only by another client's successful write counts as a grant too.
    #[test]
    fn a_newer_token_seen_only_in_a_write_is_a_grant() {
        let writes = [
            write(2, 20, "c2n1", WriteOutcome::Ok(21)),
            write(1, 10, "c1n1", WriteOutcome::Ok(22)),
        ];
        let anomalies = check(&[], &writes, &BTreeMap::new());
        assert!(
            matches!(anomalies.as_slice(), [Anomaly::OverlappingTenure { .. }]),
            "{anomalies:?}"
        );
    }

    /// Duplicate tokens, grants out of real-time order and a write at or before its own
    /// token are each flagged.
    #[test]
    fn token_rules_are_checked() {
        let dup = [acquire(1, 10, 0, 5), acquire(2, 10, 0, 6)];
        assert!(check(&dup, &[], &BTreeMap::new())
            .iter()
            .any(|a| matches!(a, Anomaly::DuplicateToken { token: 10, .. })));
        let reversed = [acquire(1, 20, 0, 5), acquire(2, 10, 6, 9)];
        assert!(check(&reversed, &[], &BTreeMap::new())
            .iter()
            .any(|a| matches!(a, Anomaly::GrantOrder { .. })));
        // Overlapping in real time: either order is fine.
        let concurrent = [acquire(1, 20, 0, 7), acquire(2, 10, 6, 9)];
        assert!(check(&concurrent, &[], &BTreeMap::new()).is_empty());
        let early = [write(1, 10, "c1n1", WriteOutcome::Ok(10))];
        assert!(matches!(
            check(&[], &early, &BTreeMap::new()).as_slice(),
            [Anomaly::WriteBeforeGrant { .. }]
        ));
    }

    /// A write with a released token that the master accepted breaks fencing (5).
    #[test]
    fn accepted_stale_write_is_flagged() {
        let mut stale = write(1, 10, "c1n2", WriteOutcome::Ok(15));
        stale.stale = true;
        let anomalies = check(&[acquire(1, 10, 0, 5)], &[stale], &BTreeMap::new());
        assert!(matches!(anomalies.as_slice(), [Anomaly::StaleWriteAccepted { .. }]));
    }

    /// The final log must hold every acknowledged entry, no refused one, nothing unknown, in
    /// token and zxid order (6).
    #[test]
    fn final_log_rules_are_checked() {
        let writes = [
            write(1, 10, "c1n1", WriteOutcome::Ok(12)),
            write(2, 20, "c2n1", WriteOutcome::Ok(21)),
            write(3, 30, "c3n1", WriteOutcome::Refused),
        ];
        let kinds = |finals| {
            check(&[], &writes, &finals)
                .into_iter()
                .map(|a| format!("{a:?}").split([' ', '{']).next().unwrap_or("").to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(kinds(log(&[(10, "c1n1"), (20, "c2n1")])), Vec::<String>::new());
        assert_eq!(kinds(log(&[(20, "c2n1")])), ["LostFencedWrite"]);
        assert_eq!(
            kinds(log(&[(10, "c1n1"), (20, "c2n1"), (30, "c3n1")])),
            ["RefusedWriteApplied"]
        );
        assert_eq!(kinds(log(&[(10, "c1n1"), (20, "c2n1"), (20, "zz")])), ["UnknownEntry"]);
        assert_eq!(kinds(log(&[(20, "c2n1"), (10, "c1n1")])), ["LogOutOfOrder", "LogOutOfOrder"]);
        let garbage = BTreeMap::from([(L.to_string(), Some("nonsense".to_string()))]);
        assert_eq!(kinds(garbage), ["Unparsable"]);
    }
}
