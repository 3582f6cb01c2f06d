//! Read-only views of the cluster for the admin API (their types, re-exported by
//! [`crate::api`], and how they are built): `GET /v1/cluster`, `GET /v1/grid`, a service's
//! placement, the cluster-wide call graph and the leader's measured demand.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Cluster, Mode, PeerInfo, network};
use serde::{Deserialize, Serialize};

impl Cluster {
    /// `GET /v1/cluster`.
    pub fn status(&self) -> ClusterView {
        let metrics = self.raft.metrics().borrow().clone();
        let leader = metrics
            .current_leader
            .and_then(|id| metrics.membership_config.membership().get_node(&id).map(|m| m.name.clone()));
        let (voters, learners) = self.members();
        let live = self.live();
        let foreign = self.membership.foreign();
        let state = self.sm.current();
        let mut names: Vec<String> = voters.iter().chain(&learners).map(|m| m.name.clone()).collect();
        names.extend(live.keys().cloned());
        names.extend(state.state.removed.iter().cloned());
        names.sort();
        names.dedup();
        let nodes: Vec<ClusterNode> = names
            .iter()
            .map(|n| {
                let p = live.get(n);
                // Membership first: a decommissioned node is "removed" once it has left it.
                let role = if voters.iter().any(|m| &m.name == n) {
                    Role::Voter
                } else if learners.iter().any(|m| &m.name == n) {
                    Role::Learner
                } else if state.state.removed.contains(n) {
                    Role::Removed
                } else if foreign.contains(n) {
                    Role::Foreign
                } else {
                    Role::Joining
                };
                let mode = self.mode_of(n, p);
                let services: Vec<String> = state
                    .state
                    .assignment
                    .iter()
                    .filter(|(_, m)| m.get(n).is_some_and(|&c| c > 0))
                    .map(|(s, _)| s.clone())
                    .collect();
                ClusterNode {
                    id: n.clone(),
                    mode,
                    live: p.is_some(),
                    role,
                    removed: state.state.removed.contains(n),
                    addr: p.map(|p| p.addr.clone()),
                    admin_addr: p.map(|p| p.admin_addr.clone()),
                    peer_addr: p.map(|p| p.peer.clone()),
                    load: p.map(|p| p.load),
                    services,
                    release: p.map(|p| p.release.clone()).filter(|r| !r.is_empty()),
                    protocol: p.and_then(|p| p.protocol),
                }
            })
            .collect();
        ClusterView {
            node: self.name.clone(),
            mode: self.mode().as_str().to_string(),
            leader,
            term: metrics.current_term,
            last_applied: metrics.last_applied.map(|l| l.index),
            snapshot_index: metrics.snapshot.map(|l| l.index),
            purged_index: metrics.purged.map(|l| l.index),
            voters_target: self.config.voters,
            joint: metrics.membership_config.membership().get_joint_config().len() > 1,
            nodes,
            // How this node authenticates its peers (cluster identity, docs/SECURITY.md).
            security: Some(PeerSecurity {
                cluster_id: self.security.cluster_id.clone(),
                peer_tls: self.security.tls.is_some(),
                certificate_expires: self.security.cert_expires,
                gossip_running: self.gossip_running(),
            }),
            formation: self.formation.id(),
            out_of_touch: self.membership.out_of_touch(),
        }
    }

    /// The call graph of every live node added up, and the nodes that answered.
    pub async fn graph(&self) -> (Vec<crate::services::calls::EdgeReport>, Vec<String>) {
        let reports = self.graph_by_node().await;
        let nodes = reports.iter().map(|(n, _)| n.clone()).collect();
        (crate::services::calls::merge(reports.into_iter().map(|(_, e)| e)), nodes)
    }

    /// Each live node's own call graph (those that answered within a second), by name.
    pub async fn graph_by_node(&self) -> Vec<(String, Vec<crate::services::calls::EdgeReport>)> {
        let mut reports = self.ask_live(&network::GraphReq).await;
        reports.insert(self.name.clone(), self.registry.calls.report());
        reports.into_iter().collect()
    }

    /// Ask every other live member `req`: the answers that came within a second, by node.
    pub(super) async fn ask_live<Q: crate::transport::PeerRpc>(&self, req: &Q) -> BTreeMap<String, Q::Reply> {
        let members = self.member_names();
        super::leader::ask_live(&self.peers, &self.name, self.live(), &members, req, Duration::from_secs(1)).await
    }

    /// Every live node's spans of one trace, in start order (a span seen twice once).
    pub async fn trace(&self, trace_id: &str) -> Vec<crate::trace::SpanRecord> {
        let req = super::network::TraceSpansReq { trace_id: trace_id.to_string() };
        let mut spans = self.registry.local_trace(trace_id);
        spans.extend(self.ask_live(&req).await.into_values().flatten());
        spans.sort_by_key(|s| (s.start_unix_us, s.span_id));
        spans.dedup_by_key(|s| s.span_id);
        spans
    }

    /// Recent traces as every live node saw them, added up. Two rounds: which traces
    /// reached the service anywhere, then every node's part of those (a node that ran
    /// only another service of the trace would not match the first question).
    pub async fn traces(&self, q: &crate::trace::store::TraceQuery) -> Vec<crate::trace::store::TraceSummary> {
        use crate::trace::store::{TraceQuery, merge_summaries};
        let ask = |q: TraceQuery| async move {
            let mut lists: Vec<_> =
                self.ask_live(&super::network::TraceListReq(q.clone())).await.into_values().collect();
            lists.push(self.registry.local_traces(&q));
            lists
        };
        let first = TraceQuery { service: q.service.clone(), min_ms: 0, limit: 1000, ids: None };
        let candidates = merge_summaries(ask(first.clone()).await, &first);
        let ids = candidates.into_iter().map(|t| t.trace_id).collect::<std::collections::BTreeSet<_>>();
        let second = TraceQuery { service: None, min_ms: 0, limit: ids.len().max(1), ids: Some(ids) };
        merge_summaries(ask(second).await, q)
    }

    /// The cluster's recent decisions after `seq` (every node holds the same list).
    pub fn events(&self, after: u64, limit: usize) -> Vec<super::events::Event> {
        self.sm.current().state.events.after(after, limit)
    }

    /// Wanted and serving instances per service, wanted and live nodes (`/metrics`).
    pub fn scaling_figures(&self) -> super::scaling::ScalingFigures {
        self.autoscaling.figures(self)
    }

    /// Every experiment the control state holds, newest first.
    pub fn experiments(&self) -> Vec<super::experiment::Experiment> {
        self.experiments.list(self)
    }

    /// A person's decision on a pending experiment (see [`super::reprovision::Experiments::decide`]).
    pub async fn decide(
        &self,
        id: u64,
        approve: bool,
    ) -> Result<super::experiment::Experiment, crate::services::AdminError> {
        self.experiments.decide(self, id, approve).await
    }

    /// A running trial's calls so far per arm (old, new), from its node.
    pub async fn trial_counts(&self, e: &super::experiment::Experiment) -> Option<(usize, usize)> {
        self.experiments.trial_counts(self, e).await
    }

    /// Where calls come from, as the leader measured them over its last window (`None` on
    /// other nodes: ask the leader).
    pub fn demand(&self) -> Option<DemandView> {
        (self.mode() == Mode::Leader).then(|| {
            let config = self.traffic.config();
            DemandView {
                window_ms: config.window.as_millis() as u64,
                min_rate: config.min_rate,
                calls: self.traffic.demand(),
            }
        })
    }

    /// A node's mode: this node's own, others' as gossip last showed them.
    fn mode_of(&self, node: &str, gossip: Option<&PeerInfo>) -> String {
        if node == self.name {
            return self.mode().as_str().to_string();
        }
        gossip.map_or("unreachable".to_string(), |p| p.mode.clone())
    }

    /// Per-node instances of one service (for `GET /v1/services/{name}`).
    pub fn placement_of(&self, service: &str) -> Vec<NodeInstances> {
        let live = self.live();
        let state = self.sm.current();
        state
            .state
            .assignment
            .get(service)
            .map(|row| {
                row.iter()
                    .map(|(n, c)| {
                        let p = live.get(n);
                        NodeInstances {
                            node: n.clone(),
                            instances: *c,
                            mode: self.mode_of(n, p),
                            live: Some(p.is_some()),
                            serving: Some(p.is_some_and(|p| p.services.iter().any(|s| s == service))),
                            max_queue: None,
                            running: None,
                            queued: None,
                            peak_running: None,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

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
    /// Which formation of the cluster this node's Raft state belongs to (`None` until it
    /// bootstraps or joins one; a single node has none): every member of one cluster
    /// shows the same.
    #[serde(default)]
    pub formation: Option<String>,
    /// Why this node is dormant though gossip shows it a majority of the voters: its Raft
    /// has been out of touch with the cluster for a while (the peer port blocked while
    /// the gossip port is not); `None` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_of_touch: Option<String>,
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
    /// The nanogrid release it runs and the peer protocol it speaks, as it gossips them
    /// (`None` while gossip has not heard from it, or from a node that does not say).
    #[serde(default)]
    pub release: Option<String>,
    #[serde(default)]
    pub protocol: Option<u32>,
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
    /// Seen through gossip as a member of another cluster (one formed apart from this one,
    /// which it will not merge with): see `nanogrid status`.
    Foreign,
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
            Role::Foreign => "foreign",
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

/// The leader's measure of call demand over its last window: what co-location acts on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DemandView {
    pub window_ms: u64,
    /// Calls per second from a node that make a callee hot there.
    pub min_rate: f64,
    pub calls: Vec<super::traffic::Demand>,
}

/// One node's row in `GET /v1/services/{name}`'s `status.nodes`. In a cluster: the
/// instances placed there, whether gossip hears from it and whether it serves the service;
/// on a single node: this node's gate (`max_queue`, `running`, `queued`, `peak_running`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInstances {
    pub node: String,
    pub instances: u32,
    /// The node's mode, as gossip shows it in a cluster (`unreachable` when unheard).
    pub mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queue: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_running: Option<u32>,
}
