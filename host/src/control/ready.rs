//! A deploy returns when the service serves: after a change is committed, the node that
//! took it waits (bounded by [`READY_WAIT`]) until every live member has applied it, the
//! leader's placement has given the service its instances, and each node has resized its
//! own share, so a request sent through any node right after `deploy` returns is served
//! (before, a node that had not applied the change yet answered 404 and one without its
//! placement 503, for 100-900 ms: docs/BENCHMARKS.md, "Deploy latency and density").
//!
//! Each member answers [`ReadyReq`] when its Service Manager's last pass ([`super::service_manager`])
//! left it ready, or when the wait the request carries runs out.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Cluster, Mode};
use crate::services::ServiceSpec;
use crate::transport::PeerRpc;

/// How long a deploy or scale waits for the cluster to serve the change before it
/// returns anyway (the answer then names the nodes that were not ready).
pub const READY_WAIT: Duration = Duration::from_secs(5);

/// "Tell me when you serve this service at this generation (or give up after `wait_ms`)."
#[derive(Debug, Serialize, Deserialize)]
pub struct ReadyReq {
    pub service: String,
    pub generation: u64,
    pub wait_ms: u64,
}

impl PeerRpc for ReadyReq {
    const PATH: &'static str = "/ready";
    /// Whether the node was ready within the wait.
    type Reply = bool;
}

impl Cluster {
    /// Whether some live member may run `spec`'s instances (its placement, if any, names
    /// one that placement would use: a member, not removed or draining, serving): a
    /// service no node may run is not waited for. The committed spec decides (an
    /// autoscaled service keeps its committed count).
    fn placeable(&self, spec: &ServiceSpec) -> bool {
        let stored = self.sm.current();
        let state = &stored.state;
        let spec = state.services.get(&spec.name).unwrap_or(spec);
        if spec.instances == 0 || spec.placement.is_empty() {
            return true;
        }
        let members = self.member_names();
        self.live()
            .values()
            .any(|p| spec.placement.contains(&p.id) && self.may_place_on(state, p, members.contains(&p.id)))
    }

    /// After `spec` was committed: wait until every live member serves it (at most
    /// [`READY_WAIT`]). The members that did not say so in time; all of them at once when
    /// its placement names no live member (nothing would change within the wait).
    pub async fn await_serving(&self, spec: &ServiceSpec) -> Vec<String> {
        let (service, generation) = (spec.name.as_str(), spec.generation);
        let members = self.member_names();
        if !self.placeable(spec) {
            let all: Vec<String> = members.iter().cloned().collect();
            tracing::warn!(service, placement = ?spec.placement, "deployed, but no live node may run it");
            return all;
        }
        let others: Vec<_> = self
            .live()
            .into_values()
            .filter(|p| p.id != self.name && members.contains(&p.id) && p.mode != Mode::Dormant.as_str())
            .collect();
        let wait_ms = READY_WAIT.as_millis() as u64;
        let req = ReadyReq { service: service.to_string(), generation, wait_ms };
        let started = std::time::Instant::now();
        let asks = others.iter().map(|p| async {
            // The peer's own wait, plus time for the answer to arrive.
            let ok = self.peers.call(&p.id, &p.peer, &req, READY_WAIT + Duration::from_secs(1)).await;
            tracing::debug!(service, generation, node = %p.id, took = ?started.elapsed(), ?ok, "readiness answered");
            (p.id.clone(), matches!(ok, Ok(true)))
        });
        let (here, there) = tokio::join!(
            self.services.await_ready_here(service, generation, READY_WAIT),
            futures::future::join_all(asks)
        );
        let mut late: Vec<String> = there.into_iter().filter(|(_, ok)| !ok).map(|(id, _)| id).collect();
        if !here {
            late.push(self.name.clone());
        }
        if !late.is_empty() {
            tracing::warn!(service, generation, nodes = ?late, "deployed, but not serving on every node yet");
        }
        late
    }
}
