//! Where a request for a service runs, in a cluster: one decision for ingress and for
//! `invoke`. [`Peers`] is the cluster as routing sees it (the control plane implements
//! it), [`Forward`] sends a call to other nodes (the peer transport implements it), and
//! [`decide`] chooses between this node, other nodes, waking a service scaled to zero, or
//! nowhere. The callers differ only in the [`Policy`] they pass: `invoke` may spill a call
//! that finds every instance here busy to a less loaded node (a service calling itself
//! through its only local instance would otherwise wait for the instance its caller
//! holds), and an experiment's old arm sends calls away on purpose.

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::future::BoxFuture;

use super::{DispatchError, Registry, RemoteAnswer, Service, trials};
use crate::runtime::Request;
use crate::transport::PeerTarget;

/// A request's routing key: it is served on the node holding that key's primary (of the
/// called service's kv namespace), so processing runs next to its data.
pub const ROUTING_KEY: &str = "x-nanogrid-key";

/// The cluster as request routing sees it.
pub trait Peers: Send + Sync {
    /// Not part of a majority: serve nothing.
    fn dormant(&self) -> bool;
    /// Other serving nodes with instances of `service`, in the order to try them.
    fn holders(&self, service: &str) -> Vec<PeerTarget>;
    /// The other node that holds `key`'s primary and runs `service`; `None` when that is
    /// this node or no such node can take it.
    fn key_holder(&self, service: &str, key: &str) -> Option<PeerTarget>;
    /// Another live node that is less loaded than this one runs `service` (somewhere to
    /// send a call when every instance here is busy).
    fn less_loaded_holder(&self, service: &str) -> bool;
    /// The re-provisioning experiment trying an instance of `service` on this node, if
    /// one is on, and how it splits the calls from here to it.
    fn trial(&self, service: &str) -> Option<(u64, trials::Split)>;
    /// Give an autoscaled service that no node runs an instance (it was scaled to zero)
    /// and wait, at most `wait`, until a node serves it.
    fn wake<'a>(&'a self, service: &'a str, wait: Duration) -> BoxFuture<'a, Result<(), DispatchError>>;
    /// [`Peers::holders`] with a routing key's holder (if any) tried first.
    fn holders_first(&self, service: &str, first: Option<PeerTarget>) -> Vec<PeerTarget> {
        let mut holders = self.holders(service);
        if let Some(a) = first {
            holders.retain(|h| h.node != a.node);
            holders.insert(0, a);
        }
        holders
    }
}

/// Sends an `invoke` call to other nodes: the answer of the first of `holders` that ran it
/// and that node (none when the answer is this node's error about sending it).
pub trait Forward: Send + Sync {
    /// `call`: the request id and `invoke` depth. `again`: the service is idempotent, so a
    /// call that failed after it was sent (the holder died with it) is tried on the next
    /// holder.
    fn call<'a>(
        &'a self,
        holders: Vec<PeerTarget>,
        service: &'a str,
        req: Request,
        call: (&'a str, u32),
        again: bool,
    ) -> BoxFuture<'a, RemoteAnswer>;
}

/// How a node in a cluster reaches other nodes' services (unset on a single node). The
/// registry holds the cluster weakly: the cluster holds the registry.
pub struct Routes {
    pub peers: Weak<dyn Peers>,
    pub forward: Arc<dyn Forward>,
}

/// What a caller allows besides the common rule.
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy {
    /// A call that finds every instance here busy goes to a less loaded node that runs
    /// the service (`invoke`; ingress queues here instead).
    pub spill: bool,
    /// Run it on another node even though this one has instances (an experiment's old arm).
    pub elsewhere: bool,
}

/// Where a request goes.
pub enum Route {
    /// This node is not part of a majority: it serves nothing.
    Dormant,
    /// Run it here (`None`: no such service, the caller answers not found).
    Here(Option<Arc<Service>>),
    /// Send it to these nodes, the first that takes it.
    Forward(Vec<PeerTarget>),
    /// No node serves it now and it could not be given an instance: why.
    Nowhere(String),
}

/// The routing key a request carries, if any.
pub fn key_of(headers: &[(String, String)]) -> Option<&str> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(ROUTING_KEY)).map(|(_, v)| v.as_str())
}

/// Where a request for `service` (with routing key `key`) runs. A service scaled to zero
/// is woken first; a service with instances here runs here unless its key's data lives on
/// another node that runs it or the `policy` sends it away; otherwise it goes to the nodes
/// that serve it.
pub async fn decide(registry: &Registry, peers: &dyn Peers, service: &str, key: Option<&str>, policy: Policy) -> Route {
    if peers.dormant() {
        return Route::Dormant;
    }
    let mut svc = registry.get(service);
    if let Some(s) = &svc {
        let spec = s.current().spec.clone();
        if spec.autoscale.is_some() && s.gate().limit == 0 && (spec.instances == 0 || peers.holders(service).is_empty())
        {
            if let Err(e) = peers.wake(service, Duration::from_millis(spec.queue_timeout_ms)).await {
                return Route::Nowhere(match e {
                    DispatchError::NoInstance { reason, .. } => reason,
                    other => other.to_string(),
                });
            }
            svc = registry.get(service);
        }
    }
    let gate = svc.as_ref().map(|s| s.gate());
    let local = gate.as_ref().is_some_and(|g| g.limit > 0);
    let busy = gate.as_ref().is_some_and(|g| g.limit > 0 && g.running >= g.limit);
    // A stopped service answers here that it is stopped.
    let stopped = svc.as_ref().is_some_and(|s| s.peek().spec.stopped());
    let affinity = key.filter(|_| !stopped).and_then(|k| peers.key_holder(service, k));
    let spill = policy.spill && busy && peers.less_loaded_holder(service);
    if stopped || (local && affinity.is_none() && !spill && !policy.elsewhere) {
        return Route::Here(svc);
    }
    let holders = peers.holders_first(service, affinity);
    match (holders.is_empty(), svc) {
        (false, _) => Route::Forward(holders),
        (true, None) => Route::Here(None),
        (true, Some(_)) => Route::Nowhere("none is assigned to a live node yet".into()),
    }
}
