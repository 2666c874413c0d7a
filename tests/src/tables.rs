//! Per-fault tables across register runs: for each fault type, how many runs and windows had
//! it, how many operations completed inside its windows (all were checked), the anomalies of
//! the runs that had it, the unavailability window (the longest stretch inside a window
//! without an acknowledged write: median and max over the windows) and the acknowledged
//! operations per second while it was in force. Overlapping faults also get a row for the
//! pair ("a + b", over the union of their windows).
//!
//! A run is reduced to a [`RunStats`] as soon as it ends (histories are not kept across
//! seeds); [`table`] renders the markdown that RELIABILITY.md quotes.

use crate::jepsen::{unavailability, Outcome, RegistersOutcome};
use crate::nemesis::FaultWindow;
use crate::session::SessionEvent;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One fault window of a run, reduced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowStats {
    /// The fault type ([`fault_type`] of the label, or "a + b" for an overlapping pair).
    pub fault: String,
    pub duration_ms: u64,
    /// Operations that completed inside the window (any outcome; non-linearizable reads too).
    pub ops: usize,
    /// Of those, the ones that answered (reads, acknowledged writes, decided compare-and-sets).
    pub ops_ok: usize,
    pub longest_gap_ms: u64,
}

/// One run, reduced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunStats {
    pub name: String,
    /// Operations checked: the linearizability history and the session reads.
    pub ops_checked: usize,
    /// Violations found: linearizability (0 or 1, the checker stops at the first), session
    /// violations, final problems (lost data, divergent replicas, stale caches).
    pub anomalies: usize,
    pub windows: Vec<WindowStats>,
}

/// The fault type of a window label: hosts dropped, loss bucketed, partitions by side sizes,
/// and whether a process fault hit the master. Partitions read `minority/majority` (a `|`
/// would split a markdown cell).
pub fn fault_type(label: &str, hosts: usize) -> String {
    let words: Vec<&str> = label.split_whitespace().collect();
    let whom = if label.ends_with("(new master)") {
        " (new master)"
    } else if label.ends_with("(master)") {
        " (master)"
    } else {
        ""
    };
    match words.first().copied() {
        Some("partition") => {
            // "partition [1, 2] | rest"
            let inside = label.split_once('[').and_then(|(_, r)| r.split_once(']'));
            let size = inside.map_or(1, |(list, _)| list.split(',').count());
            format!("partition {size}/{}", hosts.saturating_sub(size))
        }
        Some("isolate") if words.get(1) == Some(&"master") => "isolate master".into(),
        Some("isolate") => "isolate".into(),
        Some("drop") => "one-way drop".into(),
        Some("link") => "link down".into(),
        Some("loss") => {
            let percent: u32 =
                words.get(1).and_then(|p| p.trim_end_matches('%').parse().ok()).unwrap_or(0);
            if percent <= 10 { "loss <=10%" } else { "loss 11-30%" }.into()
        }
        Some("kill") => format!("kill -9{whom}"),
        Some("pause") => format!("pause{whom}"),
        Some("wipe+restart") => format!("wipe+restart{whom}"),
        _ => label.to_string(),
    }
}

fn overlap(a: &FaultWindow, b: &FaultWindow) -> bool {
    a.start_ms < b.end_ms && b.start_ms < a.end_ms
}

/// Reduces a finished run.
pub fn run_stats(name: &str, hosts: usize, outcome: &RegistersOutcome) -> RunStats {
    let mut ends: Vec<(u64, bool)> =
        outcome.history.iter().map(|r| (r.end_us / 1000, r.outcome == Outcome::Ok)).collect();
    ends.extend(
        outcome
            .session_history
            .iter()
            .filter(|s| matches!(s.event, SessionEvent::Read { .. }))
            .map(|s| (s.end_us / 1000, true)),
    );
    let stats = |fault: String, w: &FaultWindow| {
        let inside = ends.iter().filter(|(t, _)| (w.start_ms..=w.end_ms).contains(t));
        let (ops, ops_ok) = inside.fold((0, 0), |(n, k), (_, ok)| (n + 1, k + usize::from(*ok)));
        let gap = unavailability(&outcome.history, std::slice::from_ref(w));
        WindowStats {
            fault,
            duration_ms: w.end_ms.saturating_sub(w.start_ms),
            ops,
            ops_ok,
            longest_gap_ms: gap.first().map_or(0, |u| u.longest_gap_ms),
        }
    };
    let mut windows: Vec<WindowStats> =
        outcome.windows.iter().map(|w| stats(fault_type(&w.label, hosts), w)).collect();
    for (i, a) in outcome.windows.iter().enumerate() {
        for b in &outcome.windows[i + 1..] {
            if overlap(a, b) {
                let mut pair = [fault_type(&a.label, hosts), fault_type(&b.label, hosts)];
                pair.sort();
                let union = FaultWindow {
                    label: pair.join(" + "),
                    start_ms: a.start_ms.min(b.start_ms),
                    end_ms: a.end_ms.max(b.end_ms),
                };
                windows.push(stats(union.label.clone(), &union));
            }
        }
    }
    let session_reads = outcome
        .session_history
        .iter()
        .filter(|s| {
            matches!(
                s.event,
                SessionEvent::Read {
                    mode: crate::session::ReadMode::Cached | crate::session::ReadMode::Node,
                    ..
                }
            )
        })
        .count();
    RunStats {
        name: name.to_string(),
        ops_checked: outcome.history.len() + session_reads,
        anomalies: usize::from(outcome.check.is_err())
            + outcome.session.violations.len()
            + outcome.final_problems.len(),
        windows,
    }
}

/// The median of `values` (the lower middle for an even count); 0 when empty.
fn median(values: &mut [u64]) -> u64 {
    values.sort_unstable();
    values.get(values.len().saturating_sub(1) / 2).copied().unwrap_or(0)
}

/// The markdown table, one row per fault type (sorted by name, pairs last), and a total line.
pub fn table(runs: &[RunStats]) -> String {
    #[derive(Default)]
    struct Row {
        runs: usize,
        windows: usize,
        ops: usize,
        ops_ok: usize,
        anomalies: usize,
        gaps: Vec<u64>,
        duration_ms: u64,
    }
    let mut rows: BTreeMap<(bool, String), Row> = BTreeMap::new();
    for run in runs {
        let mut seen = Vec::new();
        for w in &run.windows {
            let key = (w.fault.contains(" + "), w.fault.clone());
            let row = rows.entry(key.clone()).or_default();
            if !seen.contains(&key) {
                seen.push(key);
                row.runs += 1;
                row.anomalies += run.anomalies;
            }
            row.windows += 1;
            row.ops += w.ops;
            row.ops_ok += w.ops_ok;
            row.gaps.push(w.longest_gap_ms);
            row.duration_ms += w.duration_ms;
        }
    }
    let mut out = String::new();
    out.push_str(
        "| fault | runs | windows | ops checked in windows | anomalies | unavailability median (ms) | unavailability max (ms) | ops/s during fault |\n",
    );
    out.push_str("| --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for ((_, fault), mut row) in rows {
        let max = row.gaps.iter().copied().max().unwrap_or(0);
        let per_s = if row.duration_ms == 0 {
            0.0
        } else {
            row.ops_ok as f64 * 1000.0 / row.duration_ms as f64
        };
        let _ = writeln!(
            out,
            "| {fault} | {} | {} | {} | {} | {} | {max} | {per_s:.0} |",
            row.runs,
            row.windows,
            row.ops,
            row.anomalies,
            median(&mut row.gaps),
        );
    }
    let ops: usize = runs.iter().map(|r| r.ops_checked).sum();
    let anomalies: usize = runs.iter().map(|r| r.anomalies).sum();
    let _ =
        writeln!(out, "\n{} runs, {ops} operations checked, {anomalies} anomalies.", runs.len());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Labels fold into fault types: hosts dropped, loss bucketed, partitions by side sizes,
    /// master hits kept apart.
    #[test]
    fn labels_fold_into_fault_types() {
        assert_eq!(fault_type("partition [1, 2] | rest", 5), "partition 2/3");
        assert_eq!(fault_type("partition [3] | rest", 3), "partition 1/2");
        assert_eq!(fault_type("isolate master h2", 3), "isolate master");
        assert_eq!(fault_type("loss 7%", 3), "loss <=10%");
        assert_eq!(fault_type("loss 25%", 3), "loss 11-30%");
        assert_eq!(fault_type("kill -9 h1", 3), "kill -9");
        assert_eq!(fault_type("kill -9 h1 (master)", 3), "kill -9 (master)");
        assert_eq!(fault_type("pause h4 (new master)", 5), "pause (new master)");
        assert_eq!(fault_type("drop h1 -> h2", 3), "one-way drop");
    }

    /// Rows add windows and operations across runs, count a run once per fault type, take the
    /// median and max of the gaps, and rate acknowledged operations over the time in force.
    #[test]
    fn table_aggregates_runs_per_fault_type() {
        let w = |fault: &str, duration_ms, ops_ok, longest_gap_ms| WindowStats {
            fault: fault.into(),
            duration_ms,
            ops: ops_ok + 1,
            ops_ok,
            longest_gap_ms,
        };
        let runs = vec![
            RunStats {
                name: "a".into(),
                ops_checked: 100,
                anomalies: 0,
                windows: vec![w("kill -9", 1_000, 50, 100), w("kill -9", 1_000, 50, 300)],
            },
            RunStats {
                name: "b".into(),
                ops_checked: 50,
                anomalies: 1,
                windows: vec![
                    w("kill -9", 2_000, 100, 200),
                    w("kill -9 + loss <=10%", 500, 5, 500),
                ],
            },
        ];
        let t = table(&runs);
        assert!(t.contains("| kill -9 | 2 | 3 | 203 | 1 | 200 | 300 | 50 |"), "{t}");
        assert!(t.contains("| kill -9 + loss <=10% | 1 | 1 | 6 | 1 | 500 | 500 | 10 |"), "{t}");
        assert!(t.contains("2 runs, 150 operations checked, 1 anomalies."), "{t}");
        let pair = t.find("kill -9 + loss").unwrap();
        assert!(t.find("| kill -9 |").unwrap() < pair, "pairs come last");
    }
}
