//! Bodies of the whole-cluster routes beyond the members and the grid: the call graph
//! (`GET /v1/graph`), barriers (`GET /v1/barriers`; one barrier's report is the barrier
//! module's own type, re-exported), removing a member and fault injection.

use serde::{Deserialize, Serialize};

use crate::control::views::DemandView;
pub use crate::services::barrier::report::{BarrierCall, BarrierEnd, BarrierReport, BarrierState, WaitedOn};
use crate::services::calls::EdgeReport;

/// `GET /v1/graph`: who called whom, added up over the nodes that answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphView {
    /// The node that answered.
    pub node: String,
    /// The nodes whose calls are counted.
    pub nodes: Vec<String>,
    pub edges: Vec<EdgeReport>,
    /// On the leader: where calls come from (`null` on other nodes).
    pub demand: Option<DemandView>,
}

/// `GET /v1/barriers`: barriers not ended yet, and how many this node drives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BarrierList {
    /// Their ids (at most 1000).
    pub pending: Vec<String>,
    pub driven_here: usize,
}

/// `DELETE /v1/cluster/nodes/{id}`: the node decommissioned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRemoved {
    pub removed: String,
}

/// `POST /v1/debug/gossip`: the fault armed (scenario tests only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipFaultArmed {
    pub armed: GossipFault,
}

/// A fault the gossip socket can be made to have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GossipFault {
    /// Report a fatal error at the next packet.
    Fail,
    /// Hang at the next send, for good.
    Stall,
}
