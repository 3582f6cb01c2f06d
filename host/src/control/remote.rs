//! How this node reaches services on other nodes: the cluster's view of who holds what,
//! as request routing sees it ([`crate::services::route::Peers`], for ingress and
//! `invoke` alike).

use super::*;
use crate::services::route::Peers;

impl Peers for Cluster {
    fn dormant(&self) -> bool {
        self.mode() == Mode::Dormant
    }

    fn holders(&self, service: &str) -> Vec<PeerTarget> {
        Cluster::holders(self, service)
    }

    fn key_holder(&self, service: &str, key: &str) -> Option<PeerTarget> {
        Cluster::key_holder(self, service, key)
    }

    fn less_loaded_holder(&self, service: &str) -> bool {
        // Only worth a hop if some node running it is less loaded than this one (gossip
        // load: executions running there); under even saturation calls stay and queue here.
        // Members that were not removed, as `holders` takes them: a node of another
        // cluster may gossip that it runs a service of the same name. (Asked only when
        // every instance here is busy.)
        let here: u64 = self.registry.list().iter().map(|s| u64::from(s.gate().running)).sum();
        let mut members = self.member_names();
        let state = self.sm.current();
        members.retain(|n| !state.state.removed.contains(n));
        let member = |id: &str| members.contains(id);
        self.membership.live().read(|live| {
            live.values().any(|p| {
                p.id != self.name
                    && p.mode != Mode::Dormant.as_str()
                    && p.load < here
                    && p.services.iter().any(|s| s == service)
                    && member(&p.id)
            })
        })
    }

    fn trial(&self, service: &str) -> Option<(u64, crate::services::trials::Split)> {
        self.trial_here(service)
    }

    fn wake<'a>(
        &'a self,
        service: &'a str,
        wait: Duration,
    ) -> futures::future::BoxFuture<'a, Result<(), crate::services::DispatchError>> {
        Box::pin(self.autoscaling.wake(self, service, wait))
    }
}
