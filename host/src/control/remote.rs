//! How this node reaches services on other nodes: `Peers` (ingress forwarding) and
//! `RemoteCalls` (the `Remote` behind cross-node `invoke`), both over the cluster's view
//! of who holds what.

use super::*;

impl crate::route::Peers for Cluster {
    fn dormant(&self) -> bool {
        self.mode() == Mode::Dormant
    }
    fn holders(&self, service: &str) -> Vec<PeerTarget> {
        Cluster::holders(self, service)
    }
    fn key_holder(&self, service: &str, key: &str) -> Option<PeerTarget> {
        Cluster::key_holder(self, service, key)
    }
    fn wake<'a>(
        &'a self,
        service: &'a str,
        wait: Duration,
    ) -> futures::future::BoxFuture<'a, Result<(), crate::services::DispatchError>> {
        Box::pin(Cluster::wake(self, service, wait))
    }
}

/// The value of a request's routing key header, if it has one.
fn routing_key(req: &crate::runtime::Request) -> Option<&str> {
    let name = crate::route::ROUTING_KEY;
    req.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// `invoke` of a service with no instance on this node: forwarded like ingress does.
pub struct RemoteCalls {
    pub cluster: std::sync::Weak<Cluster>,
    pub forwarder: crate::route::Forwarder,
}

impl crate::services::Remote for RemoteCalls {
    fn dormant(&self) -> bool {
        self.cluster.upgrade().is_none_or(|c| c.mode() == Mode::Dormant)
    }

    fn elsewhere(&self, service: &str, req: &crate::runtime::Request) -> bool {
        let Some(cluster) = self.cluster.upgrade() else { return false };
        routing_key(req).is_some_and(|k| cluster.key_holder(service, k).is_some())
    }

    fn has_holders(&self, service: &str) -> bool {
        self.cluster.upgrade().is_some_and(|c| !c.holders(service).is_empty())
    }

    fn trial(&self, service: &str) -> Option<(u64, crate::services::trials::Split)> {
        self.cluster.upgrade()?.trial_here(service)
    }

    fn wake<'a>(
        &'a self,
        service: &'a str,
        wait: Duration,
    ) -> futures::future::BoxFuture<'a, Result<(), crate::services::DispatchError>> {
        Box::pin(async move {
            let Some(cluster) = self.cluster.upgrade() else {
                return Err(crate::services::DispatchError::Internal("the node is shutting down".into()));
            };
            cluster.wake(service, wait).await
        })
    }

    fn runs_elsewhere(&self, service: &str) -> bool {
        let Some(cluster) = self.cluster.upgrade() else { return false };
        // Only worth a hop if some node running it is less loaded than this one (gossip
        // load: executions running there); under even saturation calls stay and queue here.
        let here: u64 = cluster.registry.list().iter().map(|s| u64::from(s.gate().running)).sum();
        let live = cluster.live.read().unwrap_or_else(|e| e.into_inner());
        live.values().any(|p| {
            p.id != cluster.name
                && p.mode != Mode::Dormant.as_str()
                && p.load < here
                && p.services.iter().any(|s| s == service)
        })
    }

    fn call<'a>(
        &'a self,
        service: &'a str,
        req: crate::runtime::Request,
        request_id: Arc<str>,
        depth: u32,
    ) -> futures::future::BoxFuture<'a, crate::services::RemoteAnswer> {
        Box::pin(async move {
            use crate::services::DispatchError;
            let Some(cluster) = self.cluster.upgrade() else {
                return Err(DispatchError::Internal("the node is shutting down".into()));
            };
            let first = routing_key(&req).and_then(|k| cluster.key_holder(service, k));
            let holders = crate::route::Peers::holders_first(&*cluster, service, first);
            if holders.is_empty() {
                if cluster.registry.get(service).is_none() {
                    return Err(DispatchError::NotFound(service.to_string()));
                }
                let reason = "none is assigned to a live node yet".to_string();
                return Err(DispatchError::NoInstance { service: service.to_string(), reason });
            }
            self.forwarder.call(holders, service, req, &request_id, depth).await
        })
    }
}
