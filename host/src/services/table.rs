//! The service table: every service this node serves by name, and in a cluster the
//! instance slots its Service Manager gives each. A service's [`Gate`] follows its slots;
//! swapping in a new version keeps the gate, so the instance limit holds through a
//! redeploy. The table holds no I/O: the registry persists, builds and resolves, then
//! hands the results here.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::gate::Gate;
use super::stats::Stats;
use super::{Deployed, Service, ServiceSpec};

#[derive(Default)]
pub(super) struct ServiceTable {
    services: RwLock<HashMap<String, Arc<Service>>>,
    /// In a cluster, this node's instance slots per service (the Service Manager sets
    /// them from the assignment); `None` on a single node, where slots = `instances`.
    slots: RwLock<Option<HashMap<String, u32>>>,
}

impl ServiceTable {
    pub(super) fn get(&self, name: &str) -> Option<Arc<Service>> {
        self.services.read().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }

    /// Every service, by name.
    pub(super) fn list(&self) -> Vec<Arc<Service>> {
        let mut v: Vec<_> = self.services.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Each service's version serving now.
    pub(super) fn versions(&self) -> HashMap<String, Arc<Deployed>> {
        let map = self.services.read().unwrap_or_else(|e| e.into_inner());
        map.iter().map(|(n, s)| (n.clone(), s.current())).collect()
    }

    /// Instance slots this node gives a service.
    pub(super) fn slots_for(&self, spec: &ServiceSpec) -> u32 {
        match &*self.slots.read().unwrap_or_else(|e| e.into_inner()) {
            Some(map) if spec.instances > 0 => map.get(&spec.name).copied().unwrap_or(0),
            _ => spec.instances,
        }
    }

    /// The Service Manager's slots for this node (cluster mode).
    pub(super) fn set_slots(&self, slots: HashMap<String, u32>) {
        *self.slots.write().unwrap_or_else(|e| e.into_inner()) = Some(slots);
    }

    /// Swap in new versions. Each service switches atomically: a request sees either its
    /// old chain or its new one.
    pub(super) fn install_all(&self, versions: Vec<Arc<Deployed>>) {
        let mut map = self.services.write().unwrap_or_else(|e| e.into_inner());
        for deployed in versions {
            let name = deployed.spec.name.clone();
            let slots = self.slots_for(&deployed.spec);
            let queue = deployed.spec.queue_for(slots);
            if let Some(svc) = map.get(&name) {
                // Same gate across versions: the instance limit holds through a redeploy.
                svc.gate.resize(slots, queue);
                svc.current.store(deployed);
                continue;
            }
            let svc = Arc::new(Service {
                name: name.as_str().into(),
                gate: Gate::new(slots, queue),
                stats: Stats::default(),
                current: arc_swap::ArcSwap::new(deployed),
            });
            map.insert(name, svc);
        }
    }

    /// Take `name` out of the table and turn its queued requests away (those in flight
    /// finish).
    pub(super) fn remove(&self, name: &str) -> Option<Arc<Service>> {
        let svc = self.services.write().unwrap_or_else(|e| e.into_inner()).remove(name)?;
        svc.gate.resize(0, 0);
        Some(svc)
    }

    /// Resize every service's gate to its spec and this node's slots.
    pub(super) fn resize_all(&self) {
        for s in self.list() {
            let spec = &s.current().spec;
            let slots = self.slots_for(spec);
            s.gate.resize(slots, spec.queue_for(slots));
        }
    }
}
