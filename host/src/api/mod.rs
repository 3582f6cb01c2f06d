//! Bodies of the admin API as types, shared by the server (which serialises them), the
//! CLI and the tests (which read them back), so a field's name and meaning live in one
//! place: `GET /v1/cluster`, `/v1/grid`, `/v1/health`, `/v1/services`, `/v1/events`,
//! `/v1/experiments[/{id}]`, `/v1/autoscale` and `/v1/barriers/stats` here; a service's detail, what
//! changing a service answers and what a component upload answers in [`service`]; traces and tracing settings in [`trace`];
//! the call graph, barriers, removing a member and fault injection in [`cluster`].

pub mod cluster;
pub mod service;
pub mod trace;

pub use cluster::*;
pub use service::*;
pub use trace::*;

use serde::{Deserialize, Serialize};

use crate::control::events::Event;
use crate::control::experiment::{Experiment, Reprovision};
use crate::runtime::Tier;
use crate::services::spec::{Autoscale, Reuse};

/// `GET /v1/autoscale` is the leader's autoscaler's own view.
pub use crate::control::scaling::{AutoscaleView, AutoscaledService, NodesView};
/// Cluster and grid views, a service's placement and the leader's demand are the control
/// plane's own types (it builds them); the admin API serves them as they are.
pub use crate::control::views::{
    ClusterNode, ClusterView, DemandView, GridRow, GridShare, GridView, NodeInstances, PeerSecurity, Role,
};
/// Per-callee barrier wait is the call graph's own figure.
pub use crate::services::calls::CalleeWait;

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
    /// Calls to it may run more than once (see `ServiceSpec::idempotent`).
    #[serde(default)]
    pub idempotent: bool,
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
