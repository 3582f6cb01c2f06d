//! The control plane the admin API talks to: one trait, two implementations. A single
//! node answers from its own registry ([`Single`]); a cluster member commits changes
//! through Raft and asks its peers for what they see ([`Cluster`]). The admin API holds
//! `Node::plane` and never asks which one it has. Experiments, which exist only in a
//! cluster, answer `not-clustered` on a single node; fault injection is `no-route` there.

use std::net::SocketAddr;
use std::sync::Arc;

use super::Cluster;
use super::events::Event;
use super::views::{ClusterNode, ClusterView, DemandView, GridView, NodeInstances, Role};
use crate::services::calls::EdgeReport;
use crate::services::spec::ServiceRequest;
use crate::services::{AdminError, Deploy, Registry, ServiceSpec};
use crate::trace::SpanRecord;
use crate::trace::store::{TraceQuery, TraceSummary};

#[async_trait::async_trait]
pub trait ControlPlane: Send + Sync {
    /// Deploy or replace a service.
    async fn put_service(&self, name: &str, req: ServiceRequest) -> Result<Deploy, AdminError>;
    async fn scale(&self, name: &str, instances: u32, max_queue: Option<u32>) -> Result<ServiceSpec, AdminError>;
    async fn delete(&self, name: &str) -> Result<ServiceSpec, AdminError>;
    /// Decommission a member (`DELETE /v1/cluster/nodes/{id}`).
    async fn remove_node(&self, id: &str) -> Result<(), AdminError>;
    /// `GET /v1/cluster`: the members, their modes and what they serve.
    fn status(&self) -> ClusterView;
    /// Where `service` runs, a row per node; `local` is this node's own row.
    fn placement_of(&self, service: &str, local: NodeInstances) -> Vec<NodeInstances>;
    /// Who called whom: every live node's calls added up, or this node's only; and the
    /// nodes that answered.
    async fn graph(&self, this_node_only: bool) -> (Vec<EdgeReport>, Vec<String>);
    /// What the leader acts on: calls per second per calling node.
    fn demand(&self) -> Option<DemandView>;
    /// The control plane's events after `after`, at most `limit`.
    fn events(&self, after: u64, limit: usize) -> Vec<Event>;
    /// The autoscaler's view (on the leader).
    fn autoscale_view(&self) -> Result<super::scaling::AutoscaleView, AdminError>;
    /// `GET /v1/grid`: partitions, their replicas and lag.
    async fn grid_report(&self) -> GridView;
    /// Traces, from every node that has spans of them.
    async fn traces(&self, q: &TraceQuery) -> Vec<TraceSummary>;
    /// One trace's spans, from every node that has them.
    async fn trace(&self, id: &str) -> Vec<SpanRecord>;
}

/// A node on its own: its registry is the whole truth.
pub struct Single {
    pub node_id: String,
    pub registry: Arc<Registry>,
    pub ingress_addr: SocketAddr,
    pub admin_addr: SocketAddr,
}

#[async_trait::async_trait]
impl ControlPlane for Single {
    async fn put_service(&self, name: &str, req: ServiceRequest) -> Result<Deploy, AdminError> {
        self.registry.put_service(name, req).await
    }

    async fn scale(&self, name: &str, instances: u32, max_queue: Option<u32>) -> Result<ServiceSpec, AdminError> {
        self.registry.scale(name, instances, max_queue).await
    }

    async fn delete(&self, name: &str) -> Result<ServiceSpec, AdminError> {
        self.registry.delete(name).await
    }

    async fn remove_node(&self, _id: &str) -> Result<(), AdminError> {
        Err(AdminError::NotClustered("this node runs in single mode; there is no node to remove"))
    }

    fn status(&self) -> ClusterView {
        let services: Vec<String> = self.registry.list().iter().map(|s| s.name.to_string()).collect();
        ClusterView {
            node: self.node_id.clone(),
            mode: "single".into(),
            leader: Some(self.node_id.clone()),
            nodes: vec![ClusterNode {
                id: self.node_id.clone(),
                mode: "single".into(),
                live: true,
                role: Role::Single,
                removed: false,
                addr: Some(self.ingress_addr.to_string()),
                admin_addr: Some(self.admin_addr.to_string()),
                peer_addr: None,
                load: None,
                services,
                release: Some(env!("CARGO_PKG_VERSION").to_string()),
                protocol: Some(crate::transport::PROTOCOL),
            }],
            ..Default::default()
        }
    }

    fn placement_of(&self, _service: &str, local: NodeInstances) -> Vec<NodeInstances> {
        vec![NodeInstances { mode: "single".into(), ..local }]
    }

    async fn graph(&self, _this_node_only: bool) -> (Vec<EdgeReport>, Vec<String>) {
        (self.registry.calls.report(), vec![self.node_id.clone()])
    }

    fn demand(&self) -> Option<DemandView> {
        None
    }

    fn events(&self, _after: u64, _limit: usize) -> Vec<Event> {
        Vec::new()
    }

    fn autoscale_view(&self) -> Result<super::scaling::AutoscaleView, AdminError> {
        Err(AdminError::NotClustered("autoscaling runs in a cluster (start with --peer-listen)"))
    }

    async fn grid_report(&self) -> GridView {
        let replicas = self.registry.grid().replicas();
        let statuses = std::collections::BTreeMap::from([(self.node_id.clone(), replicas.status().await)]);
        super::partitions::report(&replicas.table(), &statuses, std::slice::from_ref(&self.node_id))
    }

    async fn traces(&self, q: &TraceQuery) -> Vec<TraceSummary> {
        self.registry.local_traces(q)
    }

    async fn trace(&self, id: &str) -> Vec<SpanRecord> {
        self.registry.local_trace(id)
    }
}

#[async_trait::async_trait]
impl ControlPlane for Cluster {
    async fn put_service(&self, name: &str, req: ServiceRequest) -> Result<Deploy, AdminError> {
        Cluster::put_service(self, name, req).await
    }

    async fn scale(&self, name: &str, instances: u32, max_queue: Option<u32>) -> Result<ServiceSpec, AdminError> {
        Cluster::scale(self, name, instances, max_queue).await
    }

    async fn delete(&self, name: &str) -> Result<ServiceSpec, AdminError> {
        Cluster::delete(self, name).await
    }

    async fn remove_node(&self, id: &str) -> Result<(), AdminError> {
        Cluster::remove_node(self, id).await
    }

    fn status(&self) -> ClusterView {
        Cluster::status(self)
    }

    fn placement_of(&self, service: &str, _local: NodeInstances) -> Vec<NodeInstances> {
        Cluster::placement_of(self, service)
    }

    async fn graph(&self, this_node_only: bool) -> (Vec<EdgeReport>, Vec<String>) {
        if this_node_only {
            return (self.registry.calls.report(), vec![self.name.clone()]);
        }
        Cluster::graph(self).await
    }

    fn demand(&self) -> Option<DemandView> {
        Cluster::demand(self)
    }

    fn events(&self, after: u64, limit: usize) -> Vec<Event> {
        Cluster::events(self, after, limit)
    }

    fn autoscale_view(&self) -> Result<super::scaling::AutoscaleView, AdminError> {
        self.autoscaling.view(self).ok_or(AdminError::NotLeader(
            "the autoscaler runs on the leader; ask the node GET /v1/cluster names as leader",
        ))
    }

    async fn grid_report(&self) -> GridView {
        Cluster::grid_report(self).await
    }

    async fn traces(&self, q: &TraceQuery) -> Vec<TraceSummary> {
        Cluster::traces(self, q).await
    }

    async fn trace(&self, id: &str) -> Vec<SpanRecord> {
        Cluster::trace(self, id).await
    }
}
