//! The Service Manager (every node): makes this node's services match the committed
//! state (components fetched from peers by digest, specs installed, this node's instance
//! slots set) after each change the state machine applies, and says when a service
//! serves here at a generation (what a deploy waits for, `ready.rs`).
//!
//! It owns its state (the pass lock, the pass counter) and its loop: [`ServiceManager::spawn`]
//! starts the loop, which ends with the node's stop signal, [`ServiceManager::shutdown`],
//! or when the manager is dropped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::gossip::{self, Gossip};
use super::membership::LiveView;
use super::store::StateMachine;
use crate::services::{AdminError, Registry};
use crate::tasks::Tasks;
use crate::transport::PeerClient;

/// What the Service Manager works with.
pub struct ServiceManagerDeps {
    /// This node's name.
    pub name: String,
    pub sm: StateMachine,
    pub registry: Arc<Registry>,
    pub peers: PeerClient,
    pub live: Arc<LiveView>,
    pub gossip: Arc<Gossip>,
    /// The largest component fetched from a peer (the node's upload limit).
    pub max_component_bytes: usize,
}

/// The Service Manager's state, shared with its loop.
struct Inner {
    deps: ServiceManagerDeps,
    /// One pass at a time (the loop's, and a write's own pass before it answers).
    one: tokio::sync::Mutex<()>,
    /// Bumped after each pass (what readiness and the leader's placement wake on).
    passes: watch::Sender<u64>,
}

/// The Service Manager of one node and the task running its loop.
pub struct ServiceManager {
    inner: Arc<Inner>,
    tasks: Tasks,
}

/// How often a pass runs when nothing changed: it retries what could not be done (a
/// component no peer could send yet).
const RETRY: Duration = Duration::from_secs(2);

impl ServiceManager {
    /// Start the loop: a pass now, after every change the state machine applies, and
    /// every `RETRY`, until `stop` turns true.
    pub fn spawn(deps: ServiceManagerDeps, mut stop: watch::Receiver<bool>) -> ServiceManager {
        let inner = Arc::new(Inner { deps, one: Default::default(), passes: watch::Sender::new(0) });
        let tasks = Tasks::new();
        let me = inner.clone();
        tasks.spawn(async move {
            let mut changes = me.deps.sm.subscribe();
            loop {
                me.pass().await;
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = changes.changed() => {}
                    _ = tokio::time::sleep(RETRY) => {}
                }
            }
        });
        ServiceManager { inner, tasks }
    }

    /// Stop the loop (a pass in progress is aborted: the node is stopping).
    pub async fn shutdown(&self) {
        self.tasks.shutdown().await;
    }

    /// Make this node's services match the committed state now.
    pub async fn reconcile(&self) {
        self.inner.pass().await;
    }

    /// Wakes after each pass.
    pub fn passes(&self) -> watch::Receiver<u64> {
        self.inner.passes.subscribe()
    }

    /// Make sure a component is stored here, fetching it from a live peer by digest.
    pub async fn ensure_component(&self, digest: &str) -> Result<(), AdminError> {
        self.inner.ensure_component(digest).await
    }

    /// Whether this node serves `service` as committed at `generation` or later: it has
    /// applied that spec and a placement of it, and runs its own share of the instances.
    pub fn ready_here(&self, service: &str, generation: u64) -> bool {
        let d = &self.inner.deps;
        let stored = d.sm.current();
        let state = &stored.state;
        let Some(spec) = state.services.get(service).filter(|s| s.generation >= generation) else { return false };
        let placed = spec.instances == 0 || state.assignment.get(service).is_some_and(|r| r.values().any(|&n| n > 0));
        let installed = d.registry.get(service).is_some_and(|s| {
            s.current().spec.generation >= spec.generation && s.gate().limit == state.slots(service, &d.name)
        });
        placed && installed
    }

    /// Wait until [`ServiceManager::ready_here`] holds, at most `within`; whether it does.
    pub async fn await_ready_here(&self, service: &str, generation: u64, within: Duration) -> bool {
        let mut passes = self.passes();
        let ready = async {
            loop {
                passes.borrow_and_update();
                if self.ready_here(service, generation) {
                    return;
                }
                if passes.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(within, ready).await.is_ok()
    }
}

impl Inner {
    /// One pass (the Service Manager's step).
    async fn pass(&self) {
        let _one = self.one.lock().await;
        let started = std::time::Instant::now();
        let d = &self.deps;
        let stored = d.sm.current();
        let state = &stored.state;
        // Components of services already running at that digest are here: skip them.
        let missing = state
            .services
            .values()
            .filter(|spec| d.registry.get(&spec.name).is_none_or(|s| s.current().unit.digest != spec.component));
        for spec in missing {
            if let Err(e) = self.ensure_component(&spec.component).await {
                tracing::warn!(service = %spec.name, error = %e, "cannot run service here yet");
            }
        }
        let slots: HashMap<String, u32> = state.services.keys().map(|s| (s.clone(), state.slots(s, &d.name))).collect();
        let fetched = started.elapsed();
        d.registry.apply_desired(&state.services, slots).await;
        let installed = started.elapsed();
        let serving: Vec<String> =
            d.registry.list().iter().filter(|s| s.gate().limit > 0).map(|s| s.name.to_string()).collect();
        d.gossip.publish(gossip::KEY_SERVICES, &serving.join(",")).await;
        self.passes.send_modify(|n| *n += 1);
        let applied = stored.last_applied.map(|l| l.index);
        tracing::debug!(?applied, ?fetched, ?installed, took = ?started.elapsed(), "service manager pass");
    }

    async fn ensure_component(&self, digest: &str) -> Result<(), AdminError> {
        let d = &self.deps;
        if d.registry.has_component(digest).await? {
            return Ok(());
        }
        for p in d.live.get().values().filter(|p| p.id != d.name) {
            let path = format!("/components/{digest}");
            match d.peers.fetch(&p.id, &p.peer, &path, d.max_component_bytes, Duration::from_secs(30)).await {
                Ok(bytes) => {
                    let got = crate::services::digest_of(&bytes);
                    if got != digest {
                        tracing::warn!(peer = %p.id, digest, got, "peer sent a component with the wrong digest; ignored");
                        continue;
                    }
                    d.registry.put_component(bytes).await?;
                    tracing::info!(peer = %p.id, digest, "fetched component from peer");
                    return Ok(());
                }
                Err(e) => tracing::debug!(peer = %p.id, digest, error = %e, "component fetch failed"),
            }
        }
        Err(AdminError::BadRequest(format!(
            "component {digest} is not stored on this node or on any live peer; upload it first with PUT /v1/components"
        )))
    }
}
