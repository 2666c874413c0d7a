//! The messaging workload on network-namespace hosts: one `shoal-echo` process per host
//! multicasts numbered messages; every process prints what it delivered; the checker reads
//! those lines and judges them.
//!
//! Claims checked ([`check`]):
//! - always: per receiver start and per sender incarnation, deliveries come in order, each
//!   message at most once, and a skipped sequence number only right after a reported gap;
//!   the content is the sender's (the claimed sender is the stream's sender);
//! - at the end, for every sender's last incarnation: every receiver's last start delivered it
//!   up to its last message (a late joiner may start later, but may not stop early);
//! - `strict` (no process was killed, paused or restarted): every receiver delivered every
//!   message of every other sender exactly once, and no gap was reported at all.

use crate::nemesis::{FaultKind, FaultWindow, Nemesis, Schedule, ScheduleBounds};
use crate::netns::{Line, NetnsError, Network, Node, NodeSpec};
use crate::report::{self, OpOutcome, Sample, Summary};
use bytes::Bytes;
use protocol::message::transfer::FileTransBlock;
use protocol::message::Message;
use protocol::SenderId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Microseconds since the unix epoch: every namespace shares the machine's clock, so times
/// from different processes compare.
pub fn unix_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// One line of `shoal-echo` output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "e", rename_all = "snake_case")]
pub enum Event {
    Ready {
        id: SenderId,
        incarnation: u64,
        address: String,
        t_us: u64,
    },
    /// `multicast` returned for message `seq`, after `wait_us` (credit waits show here).
    Sent {
        seq: u64,
        sent_us: u64,
        wait_us: u64,
    },
    /// Everything was sent; `stable`: delivered at every live member too.
    Done {
        stable: bool,
        t_us: u64,
    },
    Deliver {
        from: SenderId,
        sender_claimed: SenderId,
        incarnation: u64,
        seq: u64,
        sent_us: u64,
        t_us: u64,
    },
    Gap {
        from: SenderId,
        incarnation: u64,
        first_missing: u64,
        resumed_at: Option<u64>,
        t_us: u64,
    },
    Stats {
        datagrams_sent: u64,
        datagrams_received: u64,
        retransmits: u64,
        naks_sent: u64,
        gaps: u64,
    },
}

/// Message `seq` of `sender`'s incarnation: a FileTransBlock whose fields carry the numbers
/// and whose data starts with the send time (then `bytes` in all of recognisable filler).
pub fn echo_message(
    sender: SenderId,
    incarnation: u64,
    seq: u64,
    sent_us: u64,
    bytes: usize,
) -> Message {
    let mut data = sent_us.to_be_bytes().to_vec();
    data.extend((data.len()..bytes.max(8)).map(|i| (i as u64 ^ seq) as u8));
    Message::FileTransBlock(FileTransBlock {
        transfer: sender,
        file: incarnation as u32, // start numbers (1, 2, ...) of the harness
        block: seq,
        md5: [0; 16],
        data: Bytes::from(data),
    })
}

/// (sender, incarnation, seq, sent_us) of an [`echo_message`], if it is one and intact.
pub fn parse_message(message: &Message) -> Option<(SenderId, u64, u64, u64)> {
    let Message::FileTransBlock(b) = message else { return None };
    let sent_us = u64::from_be_bytes(b.data.get(..8)?.try_into().ok()?);
    let filler_ok =
        b.data.iter().enumerate().skip(8).all(|(i, v)| *v == (i as u64 ^ b.block) as u8);
    filler_ok.then_some((b.transfer, u64::from(b.file), b.block, sent_us))
}

/// The workload's knobs.
#[derive(Clone, Debug)]
pub struct EchoConfig {
    pub count: u64,
    pub interval_ms: u64,
    pub payload_bytes: usize,
    pub large_every: u64,
    pub large_bytes: usize,
    /// Hard bound on each process's life.
    pub lifetime_ms: u64,
    /// How long after creation the processes begin to send (all at once).
    pub start_delay_ms: u64,
    /// NAK rounds before a receiver declares a hole lost (None: the layer's default, 40
    /// rounds of 30 ms).
    pub nak_rounds_max: Option<u32>,
}

impl Default for EchoConfig {
    fn default() -> EchoConfig {
        EchoConfig {
            count: 300,
            interval_ms: 10,
            payload_bytes: 200,
            large_every: 50,
            large_bytes: 100_000,
            lifetime_ms: 120_000,
            start_delay_ms: 1_000,
            nak_rounds_max: None,
        }
    }
}

/// Creates (not yet started) one `shoal-echo` node per host of `network`, all members.
pub fn echo_nodes(network: &Network, program: &Path, config: &EchoConfig) -> Vec<Node> {
    let members: Vec<String> = network.hosts().iter().map(|h| h.index.to_string()).collect();
    let start_at_unix_ms = unix_us() / 1000 + config.start_delay_ms;
    network
        .hosts()
        .iter()
        .map(|host| {
            let mut args = vec![
                format!("--id={}", host.index),
                format!("--members={}", members.join(",")),
                format!("--bind={}", host.address),
                format!("--count={}", config.count),
                format!("--interval-ms={}", config.interval_ms),
                format!("--payload-bytes={}", config.payload_bytes),
                format!("--large-every={}", config.large_every),
                format!("--large-bytes={}", config.large_bytes),
                format!("--start-at-unix-ms={start_at_unix_ms}"),
                format!("--lifetime-ms={}", config.lifetime_ms),
            ];
            if let Some(rounds) = config.nak_rounds_max {
                args.push(format!("--nak-rounds-max={rounds}"));
            }
            Node::new(
                host.clone(),
                NodeSpec { program: program.to_path_buf(), args, data_dir: None },
            )
        })
        .collect()
}

/// The events of one process start.
#[derive(Clone, Debug, Default)]
pub struct StartEvents {
    pub events: Vec<Event>,
    pub malformed_lines: usize,
}

/// Events per node id, per start (1, 2, ...).
pub type Histories = BTreeMap<SenderId, BTreeMap<u64, StartEvents>>;

/// Parses the output lines of every node.
pub fn parse_nodes(nodes: &[Node]) -> Histories {
    nodes.iter().map(|n| (n.host.index as SenderId, parse_lines(&n.lines()))).collect()
}

fn parse_lines(lines: &[Line]) -> BTreeMap<u64, StartEvents> {
    let mut out: BTreeMap<u64, StartEvents> = BTreeMap::new();
    for line in lines {
        let entry = out.entry(line.start).or_default();
        match serde_json::from_str::<Event>(&line.text) {
            Ok(e) => entry.events.push(e),
            Err(_) => entry.malformed_lines += 1,
        }
    }
    out
}

/// The last start of each node and the last incarnation of each sender that said Ready.
fn last_starts(histories: &Histories) -> BTreeMap<SenderId, u64> {
    histories
        .iter()
        .filter_map(|(id, starts)| starts.keys().next_back().map(|s| (*id, *s)))
        .collect()
}

/// True when every node's last start has finished sending, and has delivered the last
/// message of every other node's last incarnation.
pub fn converged(histories: &Histories, count: u64) -> bool {
    // A node that has printed nothing yet is not converged (and "all of nothing" is not done).
    if histories.is_empty() || histories.values().any(BTreeMap::is_empty) {
        return false;
    }
    let last = last_starts(histories);
    last.iter().all(|(id, start)| {
        let events = &histories[id][start].events;
        let done = events.iter().any(|e| matches!(e, Event::Done { .. }));
        done && last.iter().filter(|(other, _)| *other != id).all(|(other, other_start)| {
            events.iter().any(|e| {
                matches!(e, Event::Deliver { from, incarnation, seq, .. }
                    if from == other && incarnation == other_start && *seq + 1 == count)
            })
        })
    })
}

/// [`converged`], incrementally: each [`Convergence::update`] reads only the lines added
/// since the last one, so polling a long soak stays cheap.
#[derive(Debug, Default)]
pub struct Convergence {
    count: u64,
    cursors: BTreeMap<SenderId, usize>,
    last_start: BTreeMap<SenderId, u64>,
    done: BTreeSet<(SenderId, u64)>,
    /// (receiver, its start, sender, sender's incarnation) that delivered the last message.
    reached_end: BTreeSet<(SenderId, u64, SenderId, u64)>,
}

impl Convergence {
    pub fn new(count: u64) -> Convergence {
        Convergence { count, ..Convergence::default() }
    }

    /// Reads the new lines of `nodes`; true when converged (as [`converged`] defines it).
    pub fn update(&mut self, nodes: &[Node]) -> bool {
        for node in nodes {
            let id = node.host.index as SenderId;
            let cursor = self.cursors.entry(id).or_insert(0);
            let new = node.lines_from(*cursor);
            *cursor += new.len();
            for line in new {
                let last = self.last_start.entry(id).or_insert(line.start);
                *last = (*last).max(line.start);
                match serde_json::from_str::<Event>(&line.text) {
                    Ok(Event::Done { .. }) => {
                        self.done.insert((id, line.start));
                    }
                    Ok(Event::Deliver { from, incarnation, seq, .. }) if seq + 1 == self.count => {
                        self.reached_end.insert((id, line.start, from, incarnation));
                    }
                    _ => {}
                }
            }
        }
        nodes.len() == self.last_start.len()
            && !self.last_start.is_empty()
            && self.last_start.iter().all(|(id, start)| {
                self.done.contains(&(*id, *start))
                    && self.last_start.iter().filter(|(other, _)| *other != id).all(
                        |(other, other_start)| {
                            self.reached_end.contains(&(*id, *start, *other, *other_start))
                        },
                    )
            })
    }
}

/// Polls the nodes' output until converged or `deadline`, or `stop()`; true if converged.
pub fn wait_converged(
    nodes: &[Node],
    count: u64,
    deadline: Instant,
    stop: &dyn Fn() -> bool,
) -> bool {
    let mut convergence = Convergence::new(count);
    loop {
        if convergence.update(nodes) {
            return true;
        }
        if stop() || Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Stops every node with SIGTERM (so each prints its counters).
pub fn stop_nodes(nodes: &mut [Node]) -> Result<(), NetnsError> {
    for node in nodes.iter_mut() {
        node.terminate(Duration::from_millis(crate::netns::TERMINATE_GRACE_MS))?;
    }
    Ok(())
}

/// What the checker found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    pub deliveries: u64,
    pub gaps: u64,
    pub retransmits: u64,
    pub naks_sent: u64,
    /// Violations of the claims; empty means the run passed.
    pub violations: Vec<String>,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Judges the histories (see the module docs for the claims).
pub fn check(histories: &Histories, count: u64, strict: bool) -> CheckReport {
    let mut report = CheckReport::default();
    let last = last_starts(histories);
    for (receiver, starts) in histories {
        if starts.is_empty() {
            report.violations.push(format!("h{receiver} printed nothing"));
        }
        for (start, events) in starts {
            if events.malformed_lines > 0 {
                report.violations.push(format!(
                    "h{receiver} start {start}: {} malformed lines",
                    events.malformed_lines
                ));
            }
            // Next expected seq per (sender, incarnation), and whether a gap was just reported.
            let mut next: BTreeMap<(SenderId, u64), u64> = BTreeMap::new();
            let mut gap_pending: BTreeSet<(SenderId, u64)> = BTreeSet::new();
            for e in &events.events {
                match e {
                    Event::Deliver { from, sender_claimed, incarnation, seq, .. } => {
                        report.deliveries += 1;
                        if from != sender_claimed {
                            report.violations.push(format!(
                                "h{receiver}/{start}: message of h{sender_claimed} delivered as h{from}'s"
                            ));
                        }
                        let key = (*from, *incarnation);
                        match next.get(&key) {
                            // The first delivery of a stream: a late joiner may begin anywhere.
                            None if *seq != 0 && strict => report.violations.push(format!(
                                "h{receiver}/{start}: h{from}/{incarnation} began at #{seq}, not #0"
                            )),
                            None => {}
                            Some(expected) if seq < expected => report.violations.push(format!(
                                "h{receiver}/{start}: h{from}/{incarnation} #{seq} again or out of order (expected #{expected})"
                            )),
                            Some(expected) if seq > expected && !gap_pending.contains(&key) => {
                                report.violations.push(format!(
                                    "h{receiver}/{start}: h{from}/{incarnation} skipped #{expected}..#{} with no gap reported",
                                    seq - 1
                                ))
                            }
                            Some(_) => {}
                        }
                        gap_pending.remove(&key);
                        next.insert(key, seq + 1);
                    }
                    Event::Gap { from, incarnation, first_missing, .. } => {
                        report.gaps += 1;
                        if strict {
                            report.violations.push(format!(
                                "h{receiver}/{start}: gap in h{from}/{incarnation} at datagram {first_missing}"
                            ));
                        }
                        gap_pending.insert((*from, *incarnation));
                    }
                    Event::Stats { retransmits, naks_sent, .. } => {
                        report.retransmits += retransmits;
                        report.naks_sent += naks_sent;
                    }
                    _ => {}
                }
            }
            // Completeness: the last start of every receiver reached the end of every other
            // sender's last incarnation (strict: of every start of every sender, from #0).
            if last.get(receiver) != Some(start) {
                continue;
            }
            for (sender, sender_last) in &last {
                if sender == receiver {
                    continue;
                }
                let incarnations: Vec<u64> = if strict {
                    histories[sender].keys().copied().collect()
                } else {
                    vec![*sender_last]
                };
                for incarnation in incarnations {
                    let reached = next.get(&(*sender, incarnation)).copied().unwrap_or(0);
                    if reached != count {
                        report.violations.push(format!(
                            "h{receiver}/{start}: h{sender}/{incarnation} delivered up to #{reached} of {count}"
                        ));
                    }
                }
            }
        }
    }
    report
}

/// The history for the report: one sample per delivery (latency: send to delivery) and per
/// multicast call (latency: how long it waited for credit), at ms since `run_start_unix_us`.
pub fn history(histories: &Histories, run_start_unix_us: u64) -> Vec<Sample> {
    let at_ms = |t_us: u64| t_us.saturating_sub(run_start_unix_us) / 1000;
    let mut samples = Vec::new();
    for (node, starts) in histories {
        for events in starts.values() {
            for e in &events.events {
                match e {
                    Event::Deliver { from, sent_us, t_us, .. } => samples.push(Sample {
                        at_ms: at_ms(*t_us),
                        op: format!("deliver h{from}->h{node}"),
                        latency_us: t_us.saturating_sub(*sent_us),
                        outcome: OpOutcome::Ok,
                    }),
                    Event::Sent { sent_us, wait_us, .. } => samples.push(Sample {
                        at_ms: at_ms(sent_us + wait_us),
                        op: format!("multicast h{node}"),
                        latency_us: *wait_us,
                        outcome: OpOutcome::Ok,
                    }),
                    Event::Gap { t_us, .. } => samples.push(Sample {
                        at_ms: at_ms(*t_us),
                        op: format!("gap at h{node}"),
                        latency_us: 0,
                        outcome: OpOutcome::Failed,
                    }),
                    _ => {}
                }
            }
        }
    }
    samples.sort_by_key(|s| s.at_ms);
    samples
}

/// One seeded run of the messaging workload under a nemesis schedule.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub seed: u64,
    pub hosts: usize,
    pub bounds: ScheduleBounds,
    pub kinds: Vec<FaultKind>,
    pub echo: EchoConfig,
    /// After the schedule, how long the endpoints get to converge.
    pub converge_ms: u64,
    /// Judge strictly (every message exactly once, no gap) instead of "no duplicate, no
    /// reorder, skips only after reported gaps, streams complete at the end".
    pub strict: bool,
    /// Where the report (SVG and summary) goes.
    pub out_dir: PathBuf,
}

impl RunOptions {
    /// A CI-sized run: 3 hosts, network faults for about 12 s, layer defaults.
    pub fn new(seed: u64) -> RunOptions {
        RunOptions {
            seed,
            hosts: 3,
            bounds: ScheduleBounds { run_ms: 12_000, ..ScheduleBounds::default() },
            kinds: FaultKind::NETWORK.to_vec(),
            echo: EchoConfig::default(),
            converge_ms: 40_000,
            strict: false,
            out_dir: PathBuf::from("target/jepsen"),
        }
    }
}

/// What a run produced.
#[derive(Debug)]
pub struct RunOutcome {
    pub schedule: Schedule,
    pub windows: Vec<FaultWindow>,
    pub converged: bool,
    pub check: CheckReport,
    pub summary: Summary,
    pub svg: PathBuf,
    /// True when `stop()` ended the run early.
    pub interrupted: bool,
}

impl RunOutcome {
    pub fn passed(&self) -> bool {
        self.converged && self.check.ok() && !self.interrupted
    }
}

/// Builds the network, starts one `program` (shoal-echo) per host, sends so that the sending
/// spans the schedule, runs the schedule, waits for convergence, stops the endpoints, checks
/// what they delivered and writes the report. `stop()` (e.g. set by SIGINT) ends it early;
/// everything is torn down on every path.
pub fn run_messaging(
    options: &RunOptions,
    program: &Path,
    stop: &dyn Fn() -> bool,
) -> Result<RunOutcome, NetnsError> {
    let schedule = Schedule::generate(options.seed, options.hosts, &options.bounds, &options.kinds);
    println!("{schedule}");
    let network = Network::create(options.hosts)?;
    let mut echo = options.echo.clone();
    // Keep sending until a little after the last fault, so every fault meets traffic.
    echo.count = echo.count.max((options.bounds.run_ms + 2_000) / echo.interval_ms.max(1));
    echo.lifetime_ms = echo.start_delay_ms + options.bounds.run_ms + options.converge_ms + 30_000;
    let mut nodes = echo_nodes(&network, program, &echo);
    for node in nodes.iter_mut() {
        node.start()?;
    }
    let run_start = Instant::now();
    let run_start_unix_us = unix_us();
    let mut nemesis = Nemesis::new(&network);
    let windows = nemesis.run_schedule(&schedule, &mut nodes, run_start, stop)?;
    let deadline = Instant::now() + Duration::from_millis(options.converge_ms);
    let converged = wait_converged(&nodes, echo.count, deadline, stop);
    let interrupted = stop();
    stop_nodes(&mut nodes)?;
    let histories = parse_nodes(&nodes);
    let mut check = check(&histories, echo.count, options.strict);
    if !converged {
        check
            .violations
            .push(format!("not converged within {} ms after the schedule", options.converge_ms));
    }
    let samples = history(&histories, run_start_unix_us);
    let name = format!("messaging-seed{}-n{}", options.seed, options.hosts);
    let title = format!(
        "messaging, {} hosts, seed {}: {} deliveries, {} gaps, {}",
        options.hosts,
        options.seed,
        check.deliveries,
        check.gaps,
        if check.ok() && converged { "PASS" } else { "FAIL" }
    );
    let (svg, summary) = report::write(&options.out_dir, &name, &title, &samples, &windows)?;
    drop(nodes);
    drop(network);
    Ok(RunOutcome { schedule, windows, converged, check, summary, svg, interrupted })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deliver(from: SenderId, incarnation: u64, seq: u64) -> Event {
        Event::Deliver { from, sender_claimed: from, incarnation, seq, sent_us: 0, t_us: 0 }
    }

    fn histories(per_node: Vec<(SenderId, Vec<Event>)>) -> Histories {
        per_node
            .into_iter()
            .map(|(id, events)| {
                (id, BTreeMap::from([(1, StartEvents { events, malformed_lines: 0 })]))
            })
            .collect()
    }

    /// A node that printed nothing blocks convergence and fails the check.
    #[test]
    fn silent_node_is_neither_converged_nor_ok() {
        let mut h = histories(vec![(1, vec![Event::Done { stable: true, t_us: 0 }])]);
        h.insert(2, BTreeMap::new());
        assert!(!converged(&h, 0));
        assert!(!converged(&Histories::new(), 0));
        assert!(check(&h, 0, false).violations.iter().any(|v| v.contains("h2 printed nothing")));
    }

    /// The incremental tracker agrees with [`converged`] at every step of a growing output,
    /// including a restart that begins a new start.
    #[test]
    fn incremental_convergence_agrees_with_the_full_parse() {
        let node = |index: usize| {
            let host = crate::netns::Host {
                index,
                namespace: format!("unused-{index}"),
                address: std::net::Ipv4Addr::LOCALHOST,
                bridge_port: String::new(),
            };
            Node::new(host, NodeSpec { program: "/bin/false".into(), args: vec![], data_dir: None })
        };
        let nodes = [node(1), node(2)];
        let line = |start: u64, e: Event| Line { start, text: serde_json::to_string(&e).unwrap() };
        let done = Event::Done { stable: true, t_us: 0 };
        let script: Vec<(usize, Line)> = vec![
            (0, line(1, deliver(2, 1, 0))),
            (1, line(1, deliver(1, 1, 0))),
            (0, line(1, deliver(2, 1, 1))),
            (0, line(1, done.clone())),
            (1, line(1, deliver(1, 1, 1))),
            // Node 2 restarts: its new start must finish again, and node 1 must reach the end
            // of node 2's new incarnation.
            (1, line(2, deliver(1, 1, 1))),
            (1, line(2, done.clone())),
            (0, line(1, deliver(2, 2, 0))),
            (0, line(1, deliver(2, 2, 1))),
        ];
        let mut tracker = Convergence::new(2);
        let mut seen = Vec::new();
        for (i, l) in script {
            nodes[i].line_buffer().lock().unwrap().push(l);
            let full = converged(&parse_nodes(&nodes), 2);
            assert_eq!(tracker.update(&nodes), full);
            seen.push(full);
        }
        assert!(!seen[3] && seen.last() == Some(&true));
        assert!(
            seen.iter().filter(|c| **c).count() < seen.len(),
            "always converged proves nothing"
        );
    }

    /// A complete, ordered history of two nodes passes the strict check.
    #[test]
    fn complete_history_passes() {
        let done = Event::Done { stable: true, t_us: 0 };
        let h = histories(vec![
            (1, vec![deliver(2, 1, 0), deliver(2, 1, 1), done.clone()]),
            (2, vec![deliver(1, 1, 0), deliver(1, 1, 1), done]),
        ]);
        assert!(converged(&h, 2));
        let report = check(&h, 2, true);
        assert!(report.ok(), "{:?}", report.violations);
        assert_eq!(report.deliveries, 4);
    }

    /// Duplicates, reordering, silent skips and missing tails are each caught.
    #[test]
    fn checker_catches_duplicates_reorders_skips_and_losses() {
        let cases = [
            (vec![deliver(2, 1, 0), deliver(2, 1, 0), deliver(2, 1, 1), deliver(2, 1, 2)], "again"),
            (vec![deliver(2, 1, 0), deliver(2, 1, 2), deliver(2, 1, 1)], "skipped"),
            (vec![deliver(2, 1, 0), deliver(2, 1, 1)], "up to #2 of 3"),
        ];
        for (events, expected) in cases {
            let h = histories(vec![
                (1, events),
                (2, vec![deliver(1, 1, 0), deliver(1, 1, 1), deliver(1, 1, 2)]),
            ]);
            let report = check(&h, 3, false);
            assert!(
                report.violations.iter().any(|v| v.contains(expected)),
                "{expected}: {:?}",
                report.violations
            );
        }
    }

    /// A skip right after a reported gap is allowed unless strict.
    #[test]
    fn reported_gap_excuses_a_skip_only_when_not_strict() {
        let gap =
            Event::Gap { from: 2, incarnation: 1, first_missing: 2, resumed_at: Some(5), t_us: 0 };
        let h = histories(vec![
            (1, vec![deliver(2, 1, 0), gap, deliver(2, 1, 2)]),
            (2, vec![deliver(1, 1, 0), deliver(1, 1, 1), deliver(1, 1, 2)]),
        ]);
        assert!(check(&h, 3, false).ok());
        assert!(!check(&h, 3, true).ok());
    }

    #[test]
    fn echo_messages_round_trip_and_detect_corruption() {
        let m = echo_message(3, 2, 17, 123_456, 300);
        assert_eq!(parse_message(&m), Some((3, 2, 17, 123_456)));
        let Message::FileTransBlock(mut b) = m else { unreachable!() };
        let mut data = b.data.to_vec();
        data[100] ^= 1;
        b.data = Bytes::from(data);
        assert_eq!(parse_message(&Message::FileTransBlock(b)), None);
    }
}
