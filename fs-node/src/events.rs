//! The node's log events: one line per thing an operator acts on, each with a stable `event`
//! field so that `grep 'event="election_won"'` finds it whatever the message text says. The
//! full list (with the ones other modules log) is the "Logs" table of the README.
//!
//! EngineRole changes are decided here, IO-free ([`role_events`]), and logged by [`role_changed`],
//! which the node runtime calls once per role change the engine reports.

use crate::replication::EngineRole;
use protocol::NodeId;

/// What one role change means to an operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleEvent {
    /// This node is the established master of `epoch` (a quorum holds its history; it takes
    /// writes). `event="election_won"`.
    ElectionWon { epoch: u32 },
    /// This node was the master and no longer is (it lost its quorum or saw a newer epoch).
    /// `event="master_lost"`.
    MasterLost,
    /// This node follows `master` (a new election ended with another winner, or it joined a
    /// running cluster). `event="following"`.
    Following { master: NodeId },
    /// This node looks for a master (start-up, or the master went silent). `event="looking"`.
    Looking,
}

impl RoleEvent {
    /// The stable `event` field value.
    pub fn name(self) -> &'static str {
        match self {
            RoleEvent::ElectionWon { .. } => "election_won",
            RoleEvent::MasterLost => "master_lost",
            RoleEvent::Following { .. } => "following",
            RoleEvent::Looking => "looking",
        }
    }
}

/// The events of a change to `role`, given whether this node was the established master
/// before it. A master that is leading but not yet established (still bringing a quorum up
/// to date) has won nothing yet: no event until it is.
pub fn role_events(was_master: bool, role: EngineRole) -> Vec<RoleEvent> {
    let is_master = matches!(role, EngineRole::Leading { established: true, .. });
    let mut events = Vec::with_capacity(2);
    if was_master && !is_master {
        events.push(RoleEvent::MasterLost);
    }
    match role {
        EngineRole::Leading { epoch, established: true } if !was_master => {
            events.push(RoleEvent::ElectionWon { epoch })
        }
        EngineRole::Leading { .. } => {}
        EngineRole::Following { master } => events.push(RoleEvent::Following { master }),
        EngineRole::Looking => events.push(RoleEvent::Looking),
    }
    events
}

/// Logs the events of node `node`'s change to `role` (see [`role_events`]); `epoch` is the
/// node's current epoch (for `looking`, the last one it knew).
pub fn role_changed(node: NodeId, was_master: bool, role: EngineRole, epoch: u32) {
    for event in role_events(was_master, role) {
        let name = event.name();
        match event {
            RoleEvent::ElectionWon { epoch } => {
                tracing::info!(
                    event = name,
                    node,
                    epoch,
                    "node {node} won the election: master of epoch {epoch}"
                )
            }
            RoleEvent::MasterLost => {
                tracing::warn!(event = name, node, epoch, "node {node} is no longer the master")
            }
            // No epoch: a follower learns its new master's epoch only after this change.
            RoleEvent::Following { master } => {
                tracing::info!(event = name, node, master, "node {node} follows master {master}")
            }
            RoleEvent::Looking => {
                tracing::info!(
                    event = name,
                    node,
                    last_epoch = epoch,
                    "node {node} is looking for a master (election)"
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each role change maps to the documented events: winning only once established, losing
    /// only when this node was the master, and a deposed master that follows logs both.
    #[test]
    fn role_changes_map_to_the_documented_events() {
        let won = EngineRole::Leading { epoch: 4, established: true };
        let leading = EngineRole::Leading { epoch: 4, established: false };
        let following = EngineRole::Following { master: 2 };
        assert_eq!(role_events(false, won), [RoleEvent::ElectionWon { epoch: 4 }]);
        assert_eq!(role_events(false, leading), []);
        assert_eq!(role_events(false, following), [RoleEvent::Following { master: 2 }]);
        assert_eq!(role_events(false, EngineRole::Looking), [RoleEvent::Looking]);
        assert_eq!(
            role_events(true, following),
            [RoleEvent::MasterLost, RoleEvent::Following { master: 2 }]
        );
        assert_eq!(
            role_events(true, EngineRole::Looking),
            [RoleEvent::MasterLost, RoleEvent::Looking]
        );
        assert_eq!(role_events(true, won), [], "still the master: nothing new");
        let names: Vec<&str> = [
            RoleEvent::ElectionWon { epoch: 1 },
            RoleEvent::MasterLost,
            RoleEvent::Following { master: 1 },
            RoleEvent::Looking,
        ]
        .map(RoleEvent::name)
        .to_vec();
        assert_eq!(names, ["election_won", "master_lost", "following", "looking"]);
    }
}
