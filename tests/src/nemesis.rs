//! Faults on a [`Network`]: network faults through `nft` rules inside each host's own
//! namespace (never the root namespace's ruleset) and `ip link` on the bridge side, process
//! faults through signals to [`Node`]s; and a [`Schedule`] of them drawn from a seed.
//!
//! Every host namespace has at most one table, `inet shoal_nemesis`, with one `input` chain,
//! rewritten atomically from a model ([`HostRules`]) on every change, so faults compose
//! (a partition during packet loss) and healing is exact. Loopback traffic is never touched.
//!
//! A schedule ([`Schedule::generate`]) runs its faults one after another (each healed before the
//! next starts); an overlapping schedule ([`Schedule::generate_overlapping`]) also draws pairs of
//! faults in force at once (loss during a partition, a kill during an isolation, two nodes
//! killed together). Both are bounded in time and count, printable, and the same for the same
//! seed, host count and bounds. Running one records when each fault really started and ended
//! ([`FaultWindow`]) for the report. Ending one fault heals only that fault: the nft model is
//! recomputed from the faults still in force.

use crate::netns::{nft_script, NetnsError, Network, Node};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// The nft table the nemesis owns in every host namespace.
pub const NFT_TABLE: &str = "shoal_nemesis";
/// How often a running schedule checks its stop flag while it waits.
pub const STOP_POLL_MS: u64 = 20;

/// One fault. Hosts are 1-based, like node ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Two sides: `minority` and every other host; each drops what comes from the other.
    Partition { minority: Vec<usize> },
    /// One host cut off in both directions (pick the master's host for "isolated master").
    Isolate { host: usize },
    /// `to` drops what comes from `from`; the other direction works.
    OneWay { from: usize, to: usize },
    /// The bridge-side end of `host`'s link is down.
    LinkDown { host: usize },
    /// Every host drops `percent` % of the packets it receives, at random.
    Loss { percent: u8 },
    /// SIGKILL at the start; started again at the end.
    Kill { host: usize },
    /// SIGSTOP at the start; SIGCONT at the end.
    Pause { host: usize },
    /// SIGKILL at the start; at the end its data directory is wiped and it starts again.
    WipeRestart { host: usize },
}

/// The kinds of [`Fault`], to choose which a schedule may draw.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    Partition,
    Isolate,
    OneWay,
    LinkDown,
    Loss,
    Kill,
    Pause,
    WipeRestart,
}

impl FaultKind {
    /// Faults of the network only: no process is touched.
    pub const NETWORK: [FaultKind; 5] = [
        FaultKind::Partition,
        FaultKind::Isolate,
        FaultKind::OneWay,
        FaultKind::LinkDown,
        FaultKind::Loss,
    ];
    pub const ALL: [FaultKind; 8] = [
        FaultKind::Partition,
        FaultKind::Isolate,
        FaultKind::OneWay,
        FaultKind::LinkDown,
        FaultKind::Loss,
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::WipeRestart,
    ];
}

impl Fault {
    /// A short label for schedules and reports.
    pub fn label(&self) -> String {
        match self {
            Fault::Partition { minority } => format!("partition {minority:?} | rest"),
            Fault::Isolate { host } => format!("isolate h{host}"),
            Fault::OneWay { from, to: 0 } => format!("drop h{from} -> clients"),
            Fault::OneWay { from, to } => format!("drop h{from} -> h{to}"),
            Fault::LinkDown { host } => format!("link down h{host}"),
            Fault::Loss { percent } => format!("loss {percent}%"),
            Fault::Kill { host } => format!("kill -9 h{host}"),
            Fault::Pause { host } => format!("pause h{host}"),
            Fault::WipeRestart { host } => format!("wipe+restart h{host}"),
        }
    }

    /// True for faults that stop or restart a process (a restarted sender begins a new
    /// incarnation, so its old stream may end in a gap).
    pub fn touches_processes(&self) -> bool {
        matches!(self, Fault::Kill { .. } | Fault::Pause { .. } | Fault::WipeRestart { .. })
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

/// What a schedule may contain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleBounds {
    pub faults_max: usize,
    /// No fault starts or lasts past this, from the start of the run.
    pub run_ms: u64,
    pub fault_ms_min: u64,
    pub fault_ms_max: u64,
    /// Healthy time before each fault.
    pub quiet_ms_min: u64,
    pub quiet_ms_max: u64,
    /// Loss faults draw their percentage from 1..=this.
    pub loss_percent_max: u8,
}

impl Default for ScheduleBounds {
    /// About 20 s of faults: a CI-sized run.
    fn default() -> ScheduleBounds {
        ScheduleBounds {
            faults_max: 6,
            run_ms: 20_000,
            fault_ms_min: 1_000,
            fault_ms_max: 4_000,
            quiet_ms_min: 500,
            quiet_ms_max: 2_000,
            loss_percent_max: 30,
        }
    }
}

/// Where a run's faults come from: drawn from the seed over the chosen kinds, or one of the
/// aimed scenarios of issue 15 (their process faults hit the current master).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Scenario {
    #[default]
    Drawn,
    /// [`Schedule::notice_loss_then_kill`].
    NoticeLossThenKill,
    /// [`Schedule::master_stalls`].
    MasterStalls,
}

impl Scenario {
    /// A name for reports (`None` for drawn faults).
    pub fn name(self) -> Option<&'static str> {
        match self {
            Scenario::Drawn => None,
            Scenario::NoticeLossThenKill => Some("notice-loss"),
            Scenario::MasterStalls => Some("master-stalls"),
        }
    }

    /// The scenario's schedule; `None` for [`Scenario::Drawn`] (the caller draws).
    pub fn schedule(self, seed: u64, hosts: usize, bounds: &ScheduleBounds) -> Option<Schedule> {
        match self {
            Scenario::Drawn => None,
            Scenario::NoticeLossThenKill => {
                Some(Schedule::notice_loss_then_kill(seed, hosts, bounds))
            }
            Scenario::MasterStalls => Some(Schedule::master_stalls(seed, hosts, bounds)),
        }
    }

    /// Whether its process faults are aimed at the current master.
    pub fn aims_at_master(self) -> bool {
        self != Scenario::Drawn
    }
}

/// The faults of an aimed scenario ([`Scenario`]): the clients stop hearing the current
/// master; a kill during that drop hits the muted master; a pause hits the current master.
/// `None`: the fault is not the scenario's (or no master is known yet), resolve as usual.
pub fn aim_scenario(
    scenario: Scenario,
    fault: &Fault,
    master: usize,
    muted: Option<usize>,
) -> Option<(Fault, String)> {
    if !scenario.aims_at_master() {
        return None;
    }
    match fault {
        Fault::OneWay { to: 0, .. } if master != 0 => Some((
            Fault::OneWay { from: master, to: 0 },
            format!("drop master h{master} -> clients"),
        )),
        Fault::Kill { .. } => {
            let host = muted.or((master != 0).then_some(master))?;
            let what = if muted.is_some() { "master, its notices lost" } else { "master" };
            Some((Fault::Kill { host }, format!("kill -9 h{host} ({what})")))
        }
        Fault::Pause { .. } if master != 0 => {
            Some((Fault::Pause { host: master }, format!("pause h{master} (master)")))
        }
        _ => None,
    }
}

/// One fault of a schedule and when it is meant to happen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduledFault {
    pub at_ms: u64,
    pub duration_ms: u64,
    pub fault: Fault,
}

/// Faults drawn from a seed: same seed, hosts and bounds, same schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub seed: u64,
    pub hosts: usize,
    pub faults: Vec<ScheduledFault>,
}

impl Schedule {
    /// Draws up to `bounds.faults_max` faults of the given kinds, one after another with quiet
    /// time between, all ending by `bounds.run_ms`.
    pub fn generate(
        seed: u64,
        hosts: usize,
        bounds: &ScheduleBounds,
        kinds: &[FaultKind],
    ) -> Schedule {
        assert!(hosts >= 1, "a schedule needs a host");
        assert!(
            bounds.fault_ms_min <= bounds.fault_ms_max
                && bounds.quiet_ms_min <= bounds.quiet_ms_max
        );
        let mut rng = StdRng::seed_from_u64(seed);
        let mut faults = Vec::new();
        let mut now_ms = 0u64;
        // Kinds that need two hosts are left out of a one-host network.
        let usable: Vec<FaultKind> = kinds
            .iter()
            .copied()
            .filter(|k| hosts >= 2 || !matches!(k, FaultKind::Partition | FaultKind::OneWay))
            .collect();
        while faults.len() < bounds.faults_max && !usable.is_empty() {
            let quiet = rng.gen_range(bounds.quiet_ms_min..=bounds.quiet_ms_max);
            let duration = rng.gen_range(bounds.fault_ms_min..=bounds.fault_ms_max);
            let at_ms = now_ms + quiet;
            if at_ms + duration > bounds.run_ms {
                break;
            }
            let fault = draw_fault(&mut rng, hosts, bounds, &usable);
            faults.push(ScheduledFault { at_ms, duration_ms: duration, fault });
            now_ms = at_ms + duration;
        }
        Schedule { seed, hosts, faults }
    }

    /// Like [`Schedule::generate`], but each step is, with a chance of
    /// [`OVERLAP_PERCENT`] %, a pair of faults in force at once: a first fault, and a second
    /// one that starts inside it (between a quarter and three quarters of its duration) and
    /// may outlast it. Pairs never put two process faults on one host, and a wiped restart is
    /// paired only with loss or a one-way drop (a lost disk is a failure beyond the model
    /// already; see [`compatible`]). Faults stay within `bounds` (count, durations, run time);
    /// a step starts after the quiet time that follows the previous step's last end.
    pub fn generate_overlapping(
        seed: u64,
        hosts: usize,
        bounds: &ScheduleBounds,
        kinds: &[FaultKind],
    ) -> Schedule {
        assert!(hosts >= 1, "a schedule needs a host");
        assert!(
            bounds.fault_ms_min <= bounds.fault_ms_max
                && bounds.quiet_ms_min <= bounds.quiet_ms_max
        );
        let mut rng = StdRng::seed_from_u64(seed);
        let mut faults: Vec<ScheduledFault> = Vec::new();
        let mut now_ms = 0u64;
        let usable: Vec<FaultKind> = kinds
            .iter()
            .copied()
            .filter(|k| hosts >= 2 || !matches!(k, FaultKind::Partition | FaultKind::OneWay))
            .collect();
        while faults.len() < bounds.faults_max && !usable.is_empty() {
            let quiet = rng.gen_range(bounds.quiet_ms_min..=bounds.quiet_ms_max);
            let duration = rng.gen_range(bounds.fault_ms_min..=bounds.fault_ms_max);
            let at_ms = now_ms + quiet;
            if at_ms + duration > bounds.run_ms {
                break;
            }
            let first = draw_fault(&mut rng, hosts, bounds, &usable);
            let mut step_end = at_ms + duration;
            let pair =
                faults.len() + 2 <= bounds.faults_max && rng.gen_range(0..100) < OVERLAP_PERCENT;
            faults.push(ScheduledFault { at_ms, duration_ms: duration, fault: first.clone() });
            if pair {
                let offset = rng.gen_range(duration / 4..=duration * 3 / 4);
                let second_at = at_ms + offset;
                let second_ms = rng.gen_range(bounds.fault_ms_min..=bounds.fault_ms_max);
                // A bounded number of draws for a fault that may share the time with the
                // first; none fits: the step stays single.
                let second = (0..PAIR_DRAWS_MAX)
                    .map(|_| draw_fault(&mut rng, hosts, bounds, &usable))
                    .find(|f| compatible(&first, f));
                if let Some(second) = second {
                    if second_at + second_ms <= bounds.run_ms {
                        faults.push(ScheduledFault {
                            at_ms: second_at,
                            duration_ms: second_ms,
                            fault: second,
                        });
                        step_end = step_end.max(second_at + second_ms);
                    }
                }
            }
            now_ms = step_end;
        }
        Schedule { seed, hosts, faults }
    }

    /// The scenario of issue 15 point 1: in each step the client namespace stops hearing
    /// host `h` (a one-way drop `h -> clients`: its Update notices, FSLive and replies are
    /// lost), and while that lasts, `h` is killed (from a quarter to a half into the drop,
    /// while the workload's proposals are in flight) and restarted after a fault duration.
    /// `h` is host 1 here; the runner aims both at the current master (see
    /// `jepsen::run_schedule`). Faults stay within `bounds`; each step counts two faults.
    pub fn notice_loss_then_kill(seed: u64, hosts: usize, bounds: &ScheduleBounds) -> Schedule {
        assert!(hosts >= 1, "a schedule needs a host");
        let mut rng = StdRng::seed_from_u64(seed);
        let mut faults = Vec::new();
        let mut now_ms = 0u64;
        while faults.len() + 2 <= bounds.faults_max {
            let quiet = rng.gen_range(bounds.quiet_ms_min..=bounds.quiet_ms_max);
            let drop_ms = rng.gen_range(bounds.fault_ms_min..=bounds.fault_ms_max);
            let at_ms = now_ms + quiet;
            let kill_at = at_ms + rng.gen_range(drop_ms / 4..=drop_ms / 2);
            let kill_ms = rng.gen_range(bounds.fault_ms_min..=bounds.fault_ms_max);
            let end = (at_ms + drop_ms).max(kill_at + kill_ms);
            if end > bounds.run_ms {
                break;
            }
            faults.push(ScheduledFault {
                at_ms,
                duration_ms: drop_ms,
                fault: Fault::OneWay { from: 1, to: 0 },
            });
            faults.push(ScheduledFault {
                at_ms: kill_at,
                duration_ms: kill_ms,
                fault: Fault::Kill { host: 1 },
            });
            now_ms = end;
        }
        Schedule { seed, hosts, faults }
    }

    /// The scenario of issue 15 point 5: SIGSTOP of host 1 (the runner aims it at the current
    /// master) for a fault duration, then SIGCONT: a master stalled long enough to be deposed
    /// comes back and answers what queued meanwhile.
    pub fn master_stalls(seed: u64, hosts: usize, bounds: &ScheduleBounds) -> Schedule {
        let mut schedule = Schedule::generate(seed, hosts, bounds, &[FaultKind::Pause]);
        for f in &mut schedule.faults {
            f.fault = Fault::Pause { host: 1 };
        }
        schedule
    }

    /// When the last fault ends.
    pub fn end_ms(&self) -> u64 {
        self.faults.iter().map(|f| f.at_ms + f.duration_ms).max().unwrap_or(0)
    }

    /// Every begin and end of the schedule in time order; at the same instant ends come
    /// first (a fault that ends as another begins is healed before the next is applied).
    pub fn timeline(&self) -> Vec<Event> {
        let mut events: Vec<Event> = Vec::new();
        for (i, s) in self.faults.iter().enumerate() {
            events.push(Event { at_ms: s.at_ms, begin: true, fault: i });
            events.push(Event { at_ms: s.at_ms + s.duration_ms, begin: false, fault: i });
        }
        events.sort_unstable();
        events
    }

    /// True when some faults are in force at the same time.
    pub fn overlaps(&self) -> bool {
        self.faults.iter().enumerate().any(|(i, a)| {
            self.faults[i + 1..]
                .iter()
                .any(|b| a.at_ms < b.at_ms + b.duration_ms && b.at_ms < a.at_ms + a.duration_ms)
        })
    }
}

/// Turns a scheduled fault, when it is due, into the fault to apply and its label; it gets
/// the labels of the faults in force.
pub type Resolve<'a> = dyn FnMut(&ScheduledFault, &[String]) -> (Fault, String) + 'a;

/// The share of the steps of an overlapping schedule that are pairs of faults, in percent.
pub const OVERLAP_PERCENT: u32 = 70;
/// Draws for a second fault compatible with the first before a step stays single.
pub const PAIR_DRAWS_MAX: usize = 8;

/// One fault of a kind from `usable`, its hosts drawn from `rng`.
fn draw_fault(
    rng: &mut StdRng,
    hosts: usize,
    bounds: &ScheduleBounds,
    usable: &[FaultKind],
) -> Fault {
    let kind = usable[rng.gen_range(0..usable.len())];
    let host = rng.gen_range(1..=hosts);
    match kind {
        FaultKind::Partition => {
            // A minority: fewer than half of the hosts, at least one.
            let size = rng.gen_range(1..=((hosts - 1) / 2).max(1));
            let mut all: Vec<usize> = (1..=hosts).collect();
            let mut minority = Vec::new();
            for _ in 0..size {
                minority.push(all.remove(rng.gen_range(0..all.len())));
            }
            minority.sort_unstable();
            Fault::Partition { minority }
        }
        FaultKind::Isolate => Fault::Isolate { host },
        FaultKind::OneWay => {
            let mut to = rng.gen_range(1..hosts);
            if to >= host {
                to += 1;
            }
            Fault::OneWay { from: host, to }
        }
        FaultKind::LinkDown => Fault::LinkDown { host },
        FaultKind::Loss => {
            Fault::Loss { percent: rng.gen_range(1..=bounds.loss_percent_max.max(1)) }
        }
        FaultKind::Kill => Fault::Kill { host },
        FaultKind::Pause => Fault::Pause { host },
        FaultKind::WipeRestart => Fault::WipeRestart { host },
    }
}

/// The process host of a process fault.
fn process_host(fault: &Fault) -> Option<usize> {
    match fault {
        Fault::Kill { host } | Fault::Pause { host } | Fault::WipeRestart { host } => Some(*host),
        _ => None,
    }
}

/// Whether `second` may be in force while `first` is: two process faults need two hosts, and
/// the two are not the same fault. A wiped restart shares its time only with packet loss and
/// one-way drops: a node that lost its disk is a failure beyond the model already (its votes
/// and promises are forgotten), so nothing may cut other nodes off or stop them meanwhile —
/// a majority that holds the data must stay together.
pub fn compatible(first: &Fault, second: &Fault) -> bool {
    if first == second {
        return false;
    }
    let wipe = |f: &Fault| matches!(f, Fault::WipeRestart { .. });
    let mild = |f: &Fault| matches!(f, Fault::Loss { .. } | Fault::OneWay { .. });
    if (wipe(first) && !mild(second)) || (wipe(second) && !mild(first)) {
        return false;
    }
    match (process_host(first), process_host(second)) {
        (Some(a), Some(b)) => {
            a != b
                && !matches!(first, Fault::WipeRestart { .. })
                && !matches!(second, Fault::WipeRestart { .. })
        }
        _ => true,
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "schedule seed={} hosts={} faults={}",
            self.seed,
            self.hosts,
            self.faults.len()
        )?;
        for s in &self.faults {
            writeln!(f, "  {:>6} ms +{:>5} ms  {}", s.at_ms, s.duration_ms, s.fault)?;
        }
        Ok(())
    }
}

/// A begin or an end of fault number `fault` of a schedule, `at_ms` from the start. Sorted by
/// time, then ends (`begin: false`) before begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Event {
    pub at_ms: u64,
    pub begin: bool,
    pub fault: usize,
}

/// When a fault really was in force, in ms from the start of the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultWindow {
    pub label: String,
    pub start_ms: u64,
    pub end_ms: u64,
}

/// The nft model of one host: whose packets it drops, and how much random loss.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostRules {
    pub blocked_from: BTreeSet<Ipv4Addr>,
    pub loss_percent: u8,
}

impl HostRules {
    /// The nft script that replaces the host's table with these rules, in one transaction
    /// ("table; delete table" makes it idempotent whether or not the table exists).
    pub fn nft_script(&self) -> String {
        let mut script = format!("table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n");
        if self.blocked_from.is_empty() && self.loss_percent == 0 {
            return script;
        }
        script.push_str(&format!(
            "table inet {NFT_TABLE} {{\n  chain input {{\n    type filter hook input priority -10; policy accept;\n    iif \"lo\" accept\n"
        ));
        if !self.blocked_from.is_empty() {
            let list: Vec<String> = self.blocked_from.iter().map(Ipv4Addr::to_string).collect();
            script.push_str(&format!("    ip saddr {{ {} }} drop\n", list.join(", ")));
        }
        match self.loss_percent {
            0 => {}
            // numgen's values are 0..=99: "< 100" is out of its range, so total loss is a
            // plain drop.
            100.. => script.push_str("    drop\n"),
            p => script.push_str(&format!("    numgen random mod 100 < {p} drop\n")),
        }
        script.push_str("  }\n}\n");
        script
    }
}

/// Applies and heals faults on one network and its nodes. Hosts are 1..=N; index 0 names the
/// client namespace, which the primitives ([`Nemesis::drop_from`], [`Nemesis::set_link`])
/// accept too, so that a test can cut clients off; drawn faults and partitions involve hosts
/// only.
pub struct Nemesis<'a> {
    network: &'a Network,
    /// Rules of the client at position 0, of host i at position i.
    rules: Vec<HostRules>,
    links_down: BTreeSet<usize>,
    /// Network faults put in force by [`Nemesis::begin`] and not ended yet.
    active: Vec<Fault>,
}

impl<'a> Nemesis<'a> {
    pub fn new(network: &'a Network) -> Nemesis<'a> {
        Nemesis {
            network,
            rules: vec![HostRules::default(); network.hosts().len() + 1],
            links_down: BTreeSet::new(),
            active: Vec::new(),
        }
    }

    /// The current nft model of host `index` (0: the client).
    pub fn rules(&self, index: usize) -> Option<&HostRules> {
        self.rules.get(index)
    }

    fn address(&self, index: usize) -> Result<Ipv4Addr, NetnsError> {
        Ok(self.network.host_or_client(index)?.address)
    }

    fn update(
        &mut self,
        index: usize,
        change: impl FnOnce(&mut HostRules),
    ) -> Result<(), NetnsError> {
        let host = self.network.host_or_client(index)?;
        let rules = &mut self.rules[index];
        change(rules);
        nft_script(&host.namespace, &rules.nft_script())
    }

    /// Host `to` drops every packet from the hosts in `from` (one way; 0 is the client).
    pub fn drop_from(&mut self, to: usize, from: &[usize]) -> Result<(), NetnsError> {
        let addresses = from.iter().map(|h| self.address(*h)).collect::<Result<Vec<_>, _>>()?;
        self.update(to, |r| r.blocked_from.extend(addresses))
    }

    /// Cuts every host in `side` off from every host not in it, both ways.
    pub fn partition(&mut self, side: &[usize]) -> Result<(), NetnsError> {
        let other: Vec<usize> =
            (1..=self.network.hosts().len()).filter(|h| !side.contains(h)).collect();
        for &h in side {
            self.drop_from(h, &other)?;
        }
        for &h in &other {
            self.drop_from(h, side)?;
        }
        Ok(())
    }

    /// Every host drops `percent` % of what it receives (0 heals).
    pub fn set_loss_everywhere(&mut self, percent: u8) -> Result<(), NetnsError> {
        for index in 1..=self.network.hosts().len() {
            self.update(index, |r| r.loss_percent = percent.min(100))?;
        }
        Ok(())
    }

    /// Takes the bridge side of `host`'s link down or up.
    pub fn set_link(&mut self, host: usize, up: bool) -> Result<(), NetnsError> {
        self.network.set_link(host, up)?;
        if up {
            self.links_down.remove(&host);
        } else {
            self.links_down.insert(host);
        }
        Ok(())
    }

    /// Removes every nft rule and brings every link up (processes are not touched).
    pub fn heal_network(&mut self) -> Result<(), NetnsError> {
        self.active.clear();
        for index in 0..=self.network.hosts().len() {
            if self.rules[index] == HostRules::default() {
                continue;
            }
            self.update(index, |r| *r = HostRules::default())?;
        }
        for host in std::mem::take(&mut self.links_down) {
            self.network.set_link(host, true)?;
        }
        Ok(())
    }

    /// Heals the network, resumes paused nodes and starts nodes that are not running.
    pub fn heal_all(&mut self, nodes: &mut [Node]) -> Result<(), NetnsError> {
        self.heal_network()?;
        for node in nodes.iter_mut() {
            if node.is_paused() {
                node.resume();
            }
            if !node.is_running() {
                node.start()?;
            }
        }
        Ok(())
    }

    /// The network faults in force (begun and not ended).
    pub fn active(&self) -> &[Fault] {
        &self.active
    }

    /// Puts `fault` in force (on top of the faults already in force; a network fault
    /// recomputes the rules from every network fault in force, so that, say, two losses
    /// keep the higher).
    pub fn begin(&mut self, fault: &Fault, nodes: &mut [Node]) -> Result<(), NetnsError> {
        match fault {
            Fault::Kill { host } | Fault::WipeRestart { host } => node_on(nodes, *host)?.kill(),
            Fault::Pause { host } => {
                node_on(nodes, *host)?.pause();
                Ok(())
            }
            _ => {
                self.active.push(fault.clone());
                self.reapply()
            }
        }
    }

    /// Ends `fault`. A network fault heals only itself: the rules and links are recomputed
    /// from the network faults still in force (rules set by hand through the primitives are
    /// healed with it).
    pub fn end(&mut self, fault: &Fault, nodes: &mut [Node]) -> Result<(), NetnsError> {
        match fault {
            Fault::Kill { host } => node_on(nodes, *host)?.start().map(|_| ()),
            Fault::WipeRestart { host } => node_on(nodes, *host)?.restart(true).map(|_| ()),
            Fault::Pause { host } => {
                node_on(nodes, *host)?.resume();
                Ok(())
            }
            _ => {
                if let Some(i) = self.active.iter().position(|f| f == fault) {
                    self.active.remove(i);
                }
                self.reapply()
            }
        }
    }

    /// Rewrites every host's rules and link state that differ from what the network faults in
    /// force give.
    fn reapply(&mut self) -> Result<(), NetnsError> {
        let hosts = self.network.hosts().len();
        let addresses = (0..=hosts).map(|i| self.address(i)).collect::<Result<Vec<_>, _>>()?;
        let (rules, links_down) = model_of(&self.active, hosts, &addresses);
        for (index, wanted) in rules.into_iter().enumerate() {
            if self.rules[index] != wanted {
                self.update(index, |r| *r = wanted)?;
            }
        }
        for host in self.links_down.clone() {
            if !links_down.contains(&host) {
                self.set_link(host, true)?;
            }
        }
        for host in links_down {
            if !self.links_down.contains(&host) {
                self.set_link(host, false)?;
            }
        }
        Ok(())
    }

    /// Runs `schedule` from `run_start` and returns when each fault was in force (in the order
    /// they started). Overlapping faults are in force together. Stops early (healing what is in
    /// force) when `stop()` turns true. Ends with the network healed and every process running.
    pub fn run_schedule(
        &mut self,
        schedule: &Schedule,
        nodes: &mut [Node],
        run_start: Instant,
        stop: &dyn Fn() -> bool,
    ) -> Result<Vec<FaultWindow>, NetnsError> {
        self.run_schedule_with(schedule, nodes, run_start, stop, &mut |s, _| {
            (s.fault.clone(), s.fault.label())
        })
    }

    /// [`Nemesis::run_schedule`] with `resolve`, which turns each scheduled fault, when it is
    /// due, into the fault to apply and its label (e.g. aim an isolation at the current
    /// master); it also gets the labels of the faults in force at that moment.
    pub fn run_schedule_with(
        &mut self,
        schedule: &Schedule,
        nodes: &mut [Node],
        run_start: Instant,
        stop: &dyn Fn() -> bool,
        resolve: &mut Resolve<'_>,
    ) -> Result<Vec<FaultWindow>, NetnsError> {
        let since = |t: Instant| t.duration_since(run_start).as_millis() as u64;
        let mut in_force: Vec<Option<(Fault, String, u64)>> = vec![None; schedule.faults.len()];
        let mut windows: Vec<(usize, FaultWindow)> = Vec::new();
        for Event { at_ms, begin, fault: i } in schedule.timeline() {
            if !wait_until(run_start + Duration::from_millis(at_ms), stop) {
                break;
            }
            if begin {
                let labels: Vec<String> =
                    in_force.iter().flatten().map(|(_, label, _)| label.clone()).collect();
                let (fault, label) = resolve(&schedule.faults[i], &labels);
                let start_ms = since(Instant::now());
                self.begin(&fault, nodes)?;
                in_force[i] = Some((fault, label, start_ms));
            } else if let Some((fault, label, start_ms)) = in_force[i].take() {
                self.end(&fault, nodes)?;
                windows.push((i, FaultWindow { label, start_ms, end_ms: since(Instant::now()) }));
            }
        }
        // Interrupted: what is still in force ends now.
        for (i, entry) in in_force.iter_mut().enumerate() {
            if let Some((fault, label, start_ms)) = entry.take() {
                self.end(&fault, nodes)?;
                windows.push((i, FaultWindow { label, start_ms, end_ms: since(Instant::now()) }));
            }
        }
        self.heal_all(nodes)?;
        windows.sort_by_key(|(i, _)| *i);
        Ok(windows.into_iter().map(|(_, w)| w).collect())
    }
}

/// The nft rules (client at 0, host i at i) and the links down that the network faults in
/// `active` give on a network of `hosts` hosts whose addresses are `addresses` (client at 0).
/// Loss is the highest loss in force.
pub fn model_of(
    active: &[Fault],
    hosts: usize,
    addresses: &[Ipv4Addr],
) -> (Vec<HostRules>, BTreeSet<usize>) {
    let mut rules = vec![HostRules::default(); hosts + 1];
    let mut links_down = BTreeSet::new();
    let cut = |side: &[usize], rules: &mut [HostRules]| {
        let other: Vec<usize> = (1..=hosts).filter(|h| !side.contains(h)).collect();
        for &h in side {
            rules[h].blocked_from.extend(other.iter().map(|o| addresses[*o]));
        }
        for &h in &other {
            rules[h].blocked_from.extend(side.iter().map(|s| addresses[*s]));
        }
    };
    for fault in active {
        match fault {
            Fault::Partition { minority } => cut(minority, &mut rules),
            Fault::Isolate { host } => cut(&[*host], &mut rules),
            Fault::OneWay { from, to } => {
                rules[*to].blocked_from.insert(addresses[*from]);
            }
            Fault::LinkDown { host } => {
                links_down.insert(*host);
            }
            Fault::Loss { percent } => {
                for r in rules.iter_mut().skip(1) {
                    r.loss_percent = r.loss_percent.max((*percent).min(100));
                }
            }
            Fault::Kill { .. } | Fault::Pause { .. } | Fault::WipeRestart { .. } => {}
        }
    }
    (rules, links_down)
}

fn node_on(nodes: &mut [Node], host: usize) -> Result<&mut Node, NetnsError> {
    nodes.iter_mut().find(|n| n.host.index == host).ok_or(NetnsError::NoSuchHost(host))
}

/// Sleeps until `deadline` in short steps; false when `stop()` turned true first.
pub fn wait_until(deadline: Instant, stop: &dyn Fn() -> bool) -> bool {
    loop {
        if stop() {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(STOP_POLL_MS)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same seed gives the same schedule; another seed gives another one; every fault
    /// stays inside the bounds and faults do not overlap.
    #[test]
    fn schedules_are_reproducible_from_the_seed_and_bounded() {
        let bounds = ScheduleBounds::default();
        let a = Schedule::generate(42, 3, &bounds, &FaultKind::ALL);
        let b = Schedule::generate(42, 3, &bounds, &FaultKind::ALL);
        assert_eq!(a, b);
        assert_eq!(a.to_string(), b.to_string());
        let differs = (43..53).any(|s| Schedule::generate(s, 3, &bounds, &FaultKind::ALL) != a);
        assert!(differs, "ten other seeds all gave the same schedule");
        for seed in 0..200 {
            let s = Schedule::generate(seed, 5, &bounds, &FaultKind::ALL);
            assert!(!s.faults.is_empty() && s.faults.len() <= bounds.faults_max);
            let mut previous_end = 0;
            for f in &s.faults {
                assert!(f.at_ms >= previous_end + bounds.quiet_ms_min, "overlap in seed {seed}");
                assert!((bounds.fault_ms_min..=bounds.fault_ms_max).contains(&f.duration_ms));
                previous_end = f.at_ms + f.duration_ms;
                match &f.fault {
                    Fault::Partition { minority } => {
                        assert!(!minority.is_empty() && minority.len() <= 2, "not a minority");
                    }
                    Fault::OneWay { from, to } => assert_ne!(from, to),
                    Fault::Loss { percent } => {
                        assert!((1..=bounds.loss_percent_max).contains(percent))
                    }
                    _ => {}
                }
            }
            assert!(s.end_ms() <= bounds.run_ms);
        }
    }

    /// Overlapping schedules are reproducible, bounded like sequential ones, really overlap in
    /// most seeds, and never pair two process faults on one host or a wipe with another
    /// process fault.
    #[test]
    fn overlapping_schedules_are_reproducible_bounded_and_overlap() {
        let bounds = ScheduleBounds::default();
        let a = Schedule::generate_overlapping(7, 5, &bounds, &FaultKind::ALL);
        assert_eq!(a, Schedule::generate_overlapping(7, 5, &bounds, &FaultKind::ALL));
        let mut overlapping = 0;
        for seed in 0..200 {
            let s = Schedule::generate_overlapping(seed, 5, &bounds, &FaultKind::ALL);
            assert!(!s.faults.is_empty() && s.faults.len() <= bounds.faults_max);
            assert!(s.end_ms() <= bounds.run_ms, "seed {seed} runs past the bound");
            overlapping += usize::from(s.overlaps());
            for (i, f) in s.faults.iter().enumerate() {
                assert!((bounds.fault_ms_min..=bounds.fault_ms_max).contains(&f.duration_ms));
                for g in &s.faults[i + 1..] {
                    let together =
                        f.at_ms < g.at_ms + g.duration_ms && g.at_ms < f.at_ms + f.duration_ms;
                    if together {
                        assert!(compatible(&f.fault, &g.fault), "seed {seed}: {f:?} with {g:?}");
                    }
                }
            }
        }
        assert!(overlapping > 150, "only {overlapping} of 200 schedules overlap");
        // Two kills at once happen (two nodes down together).
        let double_kill = (0..200).any(|seed| {
            let s = Schedule::generate_overlapping(seed, 5, &bounds, &[FaultKind::Kill]);
            s.overlaps()
        });
        assert!(double_kill);
        assert!(!compatible(&Fault::Kill { host: 1 }, &Fault::Pause { host: 1 }));
        assert!(!compatible(&Fault::WipeRestart { host: 1 }, &Fault::Kill { host: 2 }));
        assert!(compatible(&Fault::Isolate { host: 1 }, &Fault::Pause { host: 2 }));
        let wipe = Fault::WipeRestart { host: 1 };
        assert!(!compatible(&wipe, &Fault::Partition { minority: vec![2, 3] }));
        assert!(!compatible(&Fault::Isolate { host: 2 }, &wipe));
        assert!(!compatible(&wipe, &Fault::LinkDown { host: 3 }));
        assert!(compatible(&wipe, &Fault::Loss { percent: 10 }));
        assert!(compatible(&Fault::OneWay { from: 2, to: 3 }, &wipe));
    }

    /// The timeline interleaves overlapping faults: the second begins inside the first, and at
    /// one instant an end comes before a begin.
    #[test]
    fn timeline_interleaves_overlapping_faults_ends_first() {
        let f = |at_ms, duration_ms, fault| ScheduledFault { at_ms, duration_ms, fault };
        let s = Schedule {
            seed: 0,
            hosts: 3,
            faults: vec![
                f(100, 400, Fault::Isolate { host: 1 }),
                f(300, 500, Fault::Loss { percent: 5 }),
                f(800, 100, Fault::Kill { host: 2 }),
            ],
        };
        let order: Vec<(u64, bool, usize)> =
            s.timeline().iter().map(|e| (e.at_ms, e.begin, e.fault)).collect();
        assert_eq!(
            order,
            vec![
                (100, true, 0),
                (300, true, 1),
                (500, false, 0),
                (800, false, 1),
                (800, true, 2),
                (900, false, 2)
            ]
        );
        assert!(s.overlaps());
        assert_eq!(s.end_ms(), 900);
    }

    /// The notice-loss scenario: each kill falls inside its drop, seeded, within bounds; the
    /// drop cuts only what the clients hear from the host.
    #[test]
    fn the_notice_loss_scenario_kills_inside_each_drop_within_bounds() {
        let bounds = ScheduleBounds { faults_max: 6, ..ScheduleBounds::default() };
        let schedule = Schedule::notice_loss_then_kill(3, 3, &bounds);
        assert_eq!(schedule, Schedule::notice_loss_then_kill(3, 3, &bounds), "seeded");
        assert!(schedule.faults.len() >= 2 && schedule.faults.len() <= 6, "{schedule}");
        for pair in schedule.faults.chunks(2) {
            let (drop, kill) = (&pair[0], &pair[1]);
            assert_eq!(drop.fault, Fault::OneWay { from: 1, to: 0 });
            assert_eq!(kill.fault, Fault::Kill { host: 1 });
            assert!(kill.at_ms > drop.at_ms && kill.at_ms < drop.at_ms + drop.duration_ms);
        }
        assert!(schedule.end_ms() <= bounds.run_ms);
        let addresses: Vec<Ipv4Addr> =
            (0..=3u8).map(|i| Ipv4Addr::new(198, 18, 77, if i == 0 { 200 } else { i })).collect();
        let (rules, _) = model_of(&[Fault::OneWay { from: 2, to: 0 }], 3, &addresses);
        assert_eq!(rules[0].blocked_from, BTreeSet::from([addresses[2]]), "clients drop h2");
        assert!(rules[1..].iter().all(|r| r.blocked_from.is_empty()), "members still hear h2");
    }

    /// The model of several network faults is their union (the highest loss); ending one
    /// leaves exactly the others' rules.
    #[test]
    fn model_of_overlapping_faults_is_their_union_and_ending_one_keeps_the_other() {
        let addresses: Vec<Ipv4Addr> =
            (0..=5u8).map(|i| Ipv4Addr::new(198, 18, 77, if i == 0 { 200 } else { i })).collect();
        let partition = Fault::Partition { minority: vec![1, 2] };
        let loss = Fault::Loss { percent: 20 };
        let down = Fault::LinkDown { host: 4 };
        let (rules, links) = model_of(
            &[partition.clone(), loss.clone(), Fault::Loss { percent: 5 }, down],
            5,
            &addresses,
        );
        assert_eq!(links, BTreeSet::from([4]));
        assert_eq!(rules[0], HostRules::default(), "the client is never cut by a drawn fault");
        assert_eq!(rules[1].loss_percent, 20);
        assert_eq!(
            rules[1].blocked_from,
            BTreeSet::from([addresses[3], addresses[4], addresses[5]])
        );
        assert_eq!(rules[3].blocked_from, BTreeSet::from([addresses[1], addresses[2]]));
        // The loss ends: the partition stays, with no loss.
        let (rules, links) = model_of(&[partition], 5, &addresses);
        assert!(links.is_empty());
        assert!(rules.iter().all(|r| r.loss_percent == 0));
        assert_eq!(rules[4].blocked_from, BTreeSet::from([addresses[1], addresses[2]]));
        let (rules, _) = model_of(&[loss], 5, &addresses);
        assert!(rules[1..].iter().all(|r| r.blocked_from.is_empty() && r.loss_percent == 20));
    }

    /// Network-only schedules never touch a process.
    #[test]
    fn network_kinds_draw_no_process_fault() {
        for seed in 0..100 {
            let s = Schedule::generate(seed, 3, &ScheduleBounds::default(), &FaultKind::NETWORK);
            assert!(s.faults.iter().all(|f| !f.fault.touches_processes()));
        }
    }

    /// The nft script drops the blocked sources and the loss share, keeps loopback, and an
    /// empty model only deletes the table.
    #[test]
    fn nft_script_renders_the_model() {
        let empty = HostRules::default().nft_script();
        assert_eq!(empty, format!("table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n"));
        let rules = HostRules {
            blocked_from: [Ipv4Addr::new(198, 18, 77, 2), Ipv4Addr::new(198, 18, 77, 3)].into(),
            loss_percent: 10,
        };
        let script = rules.nft_script();
        assert!(script.contains("iif \"lo\" accept"));
        assert!(script.contains("ip saddr { 198.18.77.2, 198.18.77.3 } drop"));
        assert!(script.contains("numgen random mod 100 < 10 drop"));
        let total = HostRules { loss_percent: 100, ..HostRules::default() }.nft_script();
        assert!(total.contains("    drop\n") && !total.contains("numgen"));
    }
}
