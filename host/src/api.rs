//! Bodies of the admin API as types, shared by the server (which serialises them), the
//! CLI and the tests (which read them back), so a field's name and meaning live in one
//! place: `GET /v1/cluster`, `/v1/grid`, `/v1/health`, `/v1/services`, `/v1/events`,
//! `/v1/experiments[/{id}]` and `/v1/barriers/stats`. A service's detail, traces and a
//! barrier's report still build `serde_json::Value`s.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::control::events::Event;
use crate::control::experiment::{Experiment, Reprovision};
use crate::runtime::Tier;
use crate::services::spec::{Autoscale, Reuse};

/// `GET /v1/cluster`: this node's view of the members, their modes and what they serve.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    /// The node that answered.
    pub node: String,
    /// Its mode: `single`, `dormant`, `follower` or `leader`.
    pub mode: String,
    pub leader: Option<String>,
    pub term: u64,
    pub last_applied: Option<u64>,
    /// Log entries up to here are only in the snapshot: a node further behind is sent it.
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    /// Voters the cluster keeps (0 on a single node).
    pub voters_target: usize,
    /// A membership change is half done (joint configuration) on this node.
    pub joint: bool,
    pub nodes: Vec<ClusterNode>,
    /// How this node authenticates its peers (none on a single node).
    pub security: Option<PeerSecurity>,
}

impl ClusterView {
    /// The entry for node `id`, if this view has one.
    pub fn node(&self, id: &str) -> Option<&ClusterNode> {
        self.nodes.iter().find(|n| n.id == id)
    }
}

/// One node in [`ClusterView`]: a member, a live non-member, or a removed node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNode {
    pub id: String,
    /// Its mode as gossip shows it (`leader`, `follower`, `dormant`, `joining`,
    /// `rebuilding`), `unreachable` when gossip has not heard from it, `single` alone.
    pub mode: String,
    pub live: bool,
    pub role: Role,
    #[serde(default)]
    pub removed: bool,
    pub addr: Option<String>,
    pub admin_addr: Option<String>,
    #[serde(default)]
    pub peer_addr: Option<String>,
    /// Executions running there, as it gossips them.
    #[serde(default)]
    pub load: Option<u64>,
    /// Services placed there.
    pub services: Vec<String>,
}

/// A node's part in the cluster's Raft configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Voter,
    Learner,
    /// Seen through gossip, not (yet) a member.
    Joining,
    /// Decommissioned.
    Removed,
    /// A node without a cluster.
    Single,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Voter => "voter",
            Role::Learner => "learner",
            Role::Joining => "joining",
            Role::Removed => "removed",
            Role::Single => "single",
        }
    }

    /// A member of the Raft configuration (voting or not).
    pub fn is_member(self) -> bool {
        matches!(self, Role::Voter | Role::Learner)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerSecurity {
    pub cluster_id: String,
    pub peer_tls: bool,
    /// When this node's certificate expires (Unix seconds; 0 when unknown).
    pub certificate_expires: i64,
    pub gossip_running: bool,
}

/// `GET /v1/grid`: the partition table with each node's share and each partition's lag.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GridView {
    pub version: u64,
    pub partitions: usize,
    pub replication: usize,
    /// Partitions with fewer in-sync replicas than they should have.
    pub under_replicated: usize,
    pub nodes: BTreeMap<String, GridShare>,
    pub table: Vec<GridRow>,
}

/// One node's share of the grid.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GridShare {
    pub primaries: usize,
    pub replicas: usize,
    pub in_sync: usize,
    pub live: bool,
}

/// One partition of the grid.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GridRow {
    pub partition: usize,
    pub primary: String,
    pub epoch: u64,
    pub replicas: Vec<String>,
    pub in_sync: Vec<String>,
    /// The primary's last log position, when it answered.
    pub last_lsn: Option<u64>,
    /// Entries each replica is behind the primary (none when unknown).
    pub lag: BTreeMap<String, Option<u64>>,
}

/// `GET /v1/health` and `GET /v1/health/live`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `ok`, `dormant` (503: it serves nothing) or `alive` (liveness).
    pub status: String,
    pub node: String,
    pub mode: String,
}

/// `GET /v1/services`: every service deployed, as this node serves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceList {
    pub services: Vec<ServiceSummary>,
}

/// One service in [`ServiceList`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceSummary {
    pub name: String,
    /// The component's digest.
    pub component: String,
    /// The spec's instance count (cluster-wide in a cluster).
    pub instances: u32,
    /// Executions running and requests waiting on this node.
    pub running: u32,
    pub queued: u32,
    /// Requests can run now (not stopped, every typed import resolved).
    pub ready: bool,
    /// The node that answered.
    pub node: String,
    pub autoscale: Option<Autoscale>,
    pub reuse: Option<Reuse>,
    /// Instances kept between requests (a spec with `reuse`).
    pub idle_instances: usize,
    /// Which compiler's code serves here (`None`: nothing serves it on this node):
    /// `baseline` until the optimized code is swapped in (tiered compilation).
    pub code: Option<Tier>,
    /// Counted on this node since it started (a reader takes differences for rates).
    pub requests: RequestCounts,
    pub latency_us: LatencyCounts,
}

/// A service's requests on one node, by outcome, since the node started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCounts {
    pub ok: u64,
    pub guest_error: u64,
    pub trapped: u64,
    pub timed_out: u64,
    /// Refused at admission (stopped, queue full or waited too long).
    pub rejected: u64,
}

/// Request durations as a histogram: `counts[i]` requests took at most `bounds[i]` µs
/// (and more than the bound before); the last count is the rest. Not cumulative.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencyCounts {
    pub bounds: Vec<u64>,
    pub counts: Vec<u64>,
}

/// `GET /v1/events`: the control plane's decisions, oldest first (the same on every node).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventList {
    pub node: String,
    pub events: Vec<Event>,
}

/// `GET /v1/experiments`: the re-provisioning experiments, newest first, with the rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentList {
    pub node: String,
    pub mode: Reprovision,
    /// How long a trial runs at least.
    pub window_ms: u64,
    /// Calls per arm a verdict needs.
    pub min_samples: usize,
    /// Relative p50 gain a change must show to be kept.
    pub min_gain: f64,
    /// The verdict rule in words.
    pub rule: String,
    pub experiments: Vec<ExperimentView>,
}

/// One experiment (`GET /v1/experiments/{id}`, and the answer to approve / reject): the
/// record, and for a running trial when its window ends and each arm's calls so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentView {
    #[serde(flatten)]
    pub record: Experiment,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_ends_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub so_far: Option<ArmCalls>,
}

/// Calls each arm of a running trial has had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArmCalls {
    pub old: usize,
    pub new: usize,
}

/// `GET /v1/barriers/stats`: per caller and callee with barrier calls, who kept the
/// barriers waiting; the largest share first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BarrierStats {
    pub node: String,
    pub callees: Vec<CalleeWait>,
}

/// One callee's part in its caller's barrier waits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalleeWait {
    pub caller: String,
    pub callee: String,
    pub calls: u64,
    /// Calls answered on another node.
    pub remote: u64,
    /// Barriers in which it answered last.
    pub waited_on: u64,
    /// Milliseconds of barrier wait it caused (as the last to answer).
    pub wait_caused_ms: u64,
    /// Its share of the caller's whole barrier wait (0 to 1).
    pub wait_share: f64,
    /// Call latency percentiles (`None` without calls).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}
