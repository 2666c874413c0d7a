//! Which node a request goes to. IO-free: time is passed in, the random source is seeded.
//!
//! - **Live set.** A node is live for [`RoutingConfig::live_validity`] (70 s) after its last
//!   FSLive or reply. Seeds (addresses from configuration) count as heard at start.
//! - **Reads** go to live, unfrozen nodes, preferring those known to have applied the client's
//!   floor (if none is, any of them: the node waits for the floor or answers `Behind`).
//!   Among them a node is drawn with probability proportional to its headroom,
//!   `(1000 - cpu) * (1000 - mem)` (each at least [`HEADROOM_MIN_PERMILLE`], so a loaded node
//!   still gets the odd request that refreshes its figures), then a second one the same way,
//!   and the one of the two with fewer of this client's requests in flight wins (ties: the
//!   first). Two choices keep bursts from piling onto one node between load reports.
//! - **Writes** go to the master: the live node that announced the master role with the
//!   highest epoch, or the one a `NotMaster` redirect named.

use protocol::message::data::{Load, Role};
use protocol::message::live::{Freeze, FsLive};
use protocol::{NodeId, Zxid};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::time::{Duration, Instant};

/// The design's validity of a node after its last FSLive or reply.
pub const LIVE_VALIDITY_DEFAULT: Duration = Duration::from_secs(70);

/// The least headroom a node's CPU or memory counts for, in permille.
pub const HEADROOM_MIN_PERMILLE: u16 = 20;

/// Most nodes the router tracks (cluster members plus seeds); more are ignored.
pub const NODES_MAX: usize = 64;

#[derive(Clone, Debug)]
pub struct RoutingConfig {
    pub live_validity: Duration,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig { live_validity: LIVE_VALIDITY_DEFAULT }
    }
}

/// What the client knows of one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    pub address: String,
    /// Learned from FSLive; `None` for a seed not yet heard from.
    pub node: Option<NodeId>,
    pub role: Option<Role>,
    pub epoch: u32,
    pub applied: Zxid,
    pub frozen: bool,
    pub load: Load,
    pub last_heard: Instant,
    /// This client's requests to the node that have not finished.
    pub inflight: u32,
}

impl NodeView {
    fn new(address: &str, now: Instant) -> NodeView {
        NodeView {
            address: address.to_string(),
            node: None,
            role: None,
            epoch: 0,
            applied: Zxid::ZERO,
            frozen: false,
            load: Load::default(),
            last_heard: now,
            inflight: 0,
        }
    }

    /// The routing weight: headroom of CPU times headroom of memory, in (0, 1].
    pub fn weight(&self) -> f64 {
        let headroom = |permille: u16| {
            (1000u16.saturating_sub(permille)).max(HEADROOM_MIN_PERMILLE) as f64 / 1000.0
        };
        headroom(self.load.cpu_permille) * headroom(self.load.mem_permille)
    }
}

pub struct Router {
    config: RoutingConfig,
    nodes: Vec<NodeView>,
    /// The master and the epoch it was learned in.
    master: Option<(NodeId, u32)>,
    rng: SmallRng,
}

impl Router {
    pub fn new(config: RoutingConfig, seed: u64) -> Router {
        Router { config, nodes: Vec::new(), master: None, rng: SmallRng::seed_from_u64(seed) }
    }

    pub fn nodes(&self) -> &[NodeView] {
        &self.nodes
    }

    pub fn master(&self) -> Option<NodeId> {
        self.master.map(|(id, _)| id)
    }

    fn view_mut(&mut self, address: &str, now: Instant) -> Option<&mut NodeView> {
        if let Some(i) = self.nodes.iter().position(|n| n.address == address) {
            return Some(&mut self.nodes[i]);
        }
        if self.nodes.len() >= NODES_MAX {
            return None;
        }
        self.nodes.push(NodeView::new(address, now));
        self.nodes.last_mut()
    }

    /// A configured address, live from `now` until it has been silent for the validity.
    pub fn add_seed(&mut self, address: &str, now: Instant) {
        self.view_mut(address, now);
    }

    pub fn is_live(&self, view: &NodeView, now: Instant) -> bool {
        now.saturating_duration_since(view.last_heard) <= self.config.live_validity
    }

    pub fn live(&self, now: Instant) -> impl Iterator<Item = &NodeView> {
        self.nodes.iter().filter(move |n| self.is_live(n, now))
    }

    pub fn on_fs_live(&mut self, live: &FsLive, now: Instant) {
        // One view per node id: a node that moved to a new address drops its old view.
        self.nodes.retain(|n| n.node != Some(live.node) || n.address == live.address);
        let Some(view) = self.view_mut(&live.address, now) else { return };
        view.node = Some(live.node);
        view.role = Some(live.role);
        view.epoch = live.epoch;
        view.applied = view.applied.max(live.applied);
        view.frozen = live.frozen;
        view.load = live.load;
        view.last_heard = view.last_heard.max(now);
        if live.role == Role::Master {
            if self.master.is_none_or(|(_, epoch)| live.epoch >= epoch) {
                self.master = Some((live.node, live.epoch));
            }
            return;
        }
        if self.master.is_some_and(|(id, epoch)| id == live.node && live.epoch >= epoch) {
            // Our master stepped down.
            self.master = None;
        }
        if let Some(master) = live.master {
            if self.master.is_none_or(|(_, epoch)| live.epoch > epoch) {
                self.master = Some((master, live.epoch));
            }
        }
    }

    pub fn on_freeze(&mut self, freeze: &Freeze) {
        for view in self.nodes.iter_mut().filter(|n| n.node == Some(freeze.node)) {
            view.frozen = freeze.frozen;
            view.applied = view.applied.max(freeze.applied);
        }
    }

    /// A reply from `address`: the node is live, and its load and applied zxid are current.
    pub fn on_reply(&mut self, address: &str, load: Load, applied: Zxid, now: Instant) {
        if let Some(view) = self.view_mut(address, now) {
            view.load = load;
            view.applied = view.applied.max(applied);
            view.last_heard = view.last_heard.max(now);
        }
    }

    /// A redirect named the master (or said there is none known).
    pub fn on_redirect(&mut self, master: Option<NodeId>) {
        let epoch = self.master.map_or(0, |(_, e)| e);
        self.master = master.map(|id| (id, epoch));
    }

    pub fn begin(&mut self, address: &str) {
        if let Some(view) = self.nodes.iter_mut().find(|n| n.address == address) {
            view.inflight += 1;
        }
    }

    pub fn finish(&mut self, address: &str) {
        if let Some(view) = self.nodes.iter_mut().find(|n| n.address == address) {
            view.inflight = view.inflight.saturating_sub(1);
        }
    }

    /// The master's address if the master is known and live.
    pub fn master_address(&self, now: Instant) -> Option<String> {
        let (id, _) = self.master?;
        self.live(now).find(|n| n.node == Some(id)).map(|n| n.address.clone())
    }

    /// Where to send a read for a client at `floor`, avoiding `tried`.
    pub fn pick_read(&mut self, floor: Zxid, tried: &[String], now: Instant) -> Option<String> {
        let open: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| {
                let n = &self.nodes[i];
                self.is_live(n, now) && !n.frozen && !tried.contains(&n.address)
            })
            .collect();
        let caught_up: Vec<usize> =
            open.iter().copied().filter(|&i| self.nodes[i].applied >= floor).collect();
        let candidates = if caught_up.is_empty() { open } else { caught_up };
        self.two_choices(&candidates)
    }

    /// Any live node not in `tried` (frozen ones too): for writes when the master is unknown,
    /// since any node redirects to the master it knows.
    pub fn pick_any(&mut self, tried: &[String], now: Instant) -> Option<String> {
        let candidates: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| {
                self.is_live(&self.nodes[i], now) && !tried.contains(&self.nodes[i].address)
            })
            .collect();
        self.two_choices(&candidates)
    }

    fn weighted(&mut self, candidates: &[usize]) -> usize {
        let total: f64 = candidates.iter().map(|&i| self.nodes[i].weight()).sum();
        let mut x = self.rng.gen::<f64>() * total;
        for &i in candidates {
            x -= self.nodes[i].weight();
            if x < 0.0 {
                return i;
            }
        }
        *candidates.last().expect("candidates not empty")
    }

    fn two_choices(&mut self, candidates: &[usize]) -> Option<String> {
        let first = match candidates {
            [] => return None,
            [only] => return Some(self.nodes[*only].address.clone()),
            _ => self.weighted(candidates),
        };
        let rest: Vec<usize> = candidates.iter().copied().filter(|&i| i != first).collect();
        let second = self.weighted(&rest);
        let pick =
            if self.nodes[second].inflight < self.nodes[first].inflight { second } else { first };
        Some(self.nodes[pick].address.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(node: NodeId, role: Role, cpu: u16, frozen: bool) -> FsLive {
        FsLive {
            node,
            role,
            epoch: 1,
            applied: Zxid::new(1, 10),
            frozen,
            load: Load { cpu_permille: cpu, mem_permille: 100, inflight: 0 },
            address: format!("n{node}"),
            master: Some(1),
        }
    }

    /// A node stays live for the validity after its last FSLive and leaves the set after.
    #[test]
    fn live_for_validity_after_last_heard() {
        let t0 = Instant::now();
        let mut r = Router::new(RoutingConfig::default(), 1);
        r.on_fs_live(&live(1, Role::Master, 0, false), t0);
        assert_eq!(r.live(t0 + Duration::from_secs(70)).count(), 1);
        assert_eq!(r.live(t0 + Duration::from_secs(71)).count(), 0);
        assert_eq!(r.master_address(t0), Some("n1".to_string()));
        assert_eq!(r.master_address(t0 + Duration::from_secs(71)), None);
    }

    /// Frozen nodes and tried nodes are never picked for reads; nodes behind the floor only when
    /// nothing else is open.
    #[test]
    fn frozen_tried_and_behind() {
        let t0 = Instant::now();
        let mut r = Router::new(RoutingConfig::default(), 7);
        r.on_fs_live(&live(1, Role::Master, 0, false), t0);
        r.on_fs_live(&live(2, Role::Follower, 0, true), t0);
        let mut behind = live(3, Role::Follower, 0, false);
        behind.applied = Zxid::new(1, 2);
        r.on_fs_live(&behind, t0);
        for _ in 0..200 {
            assert_eq!(r.pick_read(Zxid::new(1, 5), &[], t0).as_deref(), Some("n1"));
        }
        assert_eq!(r.pick_read(Zxid::new(1, 5), &["n1".into()], t0).as_deref(), Some("n3"));
        assert_eq!(r.pick_read(Zxid::ZERO, &["n1".into(), "n3".into()], t0), None);
    }

    /// Between two candidates, the one with fewer in-flight requests wins.
    #[test]
    fn fewer_inflight_wins() {
        let t0 = Instant::now();
        let mut r = Router::new(RoutingConfig::default(), 3);
        r.on_fs_live(&live(1, Role::Master, 0, false), t0);
        r.on_fs_live(&live(2, Role::Follower, 0, false), t0);
        for _ in 0..5 {
            r.begin("n1");
        }
        for _ in 0..100 {
            assert_eq!(r.pick_read(Zxid::ZERO, &[], t0).as_deref(), Some("n2"));
        }
    }
}
