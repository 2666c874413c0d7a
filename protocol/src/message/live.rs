//! FSLive (FS → group every 30 s) and Freeze (FS → group).

use crate::message::data::{Load, Role};
use crate::{NodeId, Zxid};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsLive {
    pub node: NodeId,
    pub role: super::data::Role,
    pub epoch: u32,
    pub applied: Zxid,
    pub frozen: bool,
    pub load: Load,
    /// Where to send unicast requests, "ip:port".
    pub address: String,
    /// The master this node follows, if any.
    pub master: Option<NodeId>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Freeze {
    pub node: NodeId,
    pub frozen: bool,
    /// Applied zxid at the moment of (un)freezing.
    pub applied: Zxid,
}

impl FsLive {
    pub fn is_master(&self) -> bool {
        self.role == Role::Master
    }
}
