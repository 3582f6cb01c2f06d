//! The Service Manager of a node: the table of deployed services, their admission gates,
//! and the path of every call (from ingress or from `invoke`) into the runtime.
//!
//! Admin changes (deploy, scale, delete) are serialised by one lock, persisted to the grid
//! before they take effect, and swap the service's [`Deployed`] atomically: a request in
//! flight keeps the version it started with.

pub mod barrier;
pub mod calls;
mod chains;
mod deploy;
mod dispatch;
pub mod gate;
mod ids;
mod invoker;
pub mod resolve;
pub mod route;
pub mod spec;
pub mod stats;
mod table;
pub mod trials;
mod units;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sha2::{Digest, Sha256};

pub use chains::{Graph, Serving};

/// The header that tells a barrier's continuation which barrier resumed it (only the
/// barrier's driver sets it; `invoke` and ingress strip it from what guests send).
pub const BARRIER_HEADER: &str = "x-nanogrid-barrier";

pub use gate::{GateError, GateSnapshot};
pub use resolve::{ResolveError, Unit};
pub use spec::{Limits, ServiceSpec};
pub use stats::{Outcome, Stats};

use crate::grid::{BatchOp, Durability, Grid, Table};
use crate::runtime::{Capabilities, ComponentInfo, ImportLimits, InspectError, Prepared, Runtime, Teardown, WarmPool};
use gate::Gate;

/// A version of a service: its spec, its own component, and how it serves requests.
pub struct Deployed {
    pub spec: ServiceSpec,
    pub unit: Arc<Unit>,
    pub serving: Serving,
    config: Arc<BTreeMap<String, String>>,
    import_limits: Arc<ImportLimits>,
    caps: Arc<Capabilities>,
    /// Idle instances kept between requests, for a spec with `reuse` (made at first use).
    /// Decided at its first request (`None`: fresh instances); a change to any service of
    /// its chain builds a new version, so the decision never goes stale.
    warm: std::sync::OnceLock<Option<Arc<WarmPool>>>,
    /// What its requests' calls carry (built at the first: it names the registry).
    site: std::sync::OnceLock<Arc<crate::runtime::CallSite>>,
}

/// The limits host imports enforce for a service.
fn import_limits(l: &Limits) -> ImportLimits {
    ImportLimits {
        max_key_bytes: l.max_kv_key_bytes,
        max_value_bytes: l.max_kv_value_bytes,
        max_fanout: l.max_fanout,
        max_call_depth: l.max_call_depth,
        max_list_keys: 1000,
    }
}

impl Deployed {
    fn new(spec: ServiceSpec, unit: Arc<Unit>, serving: Serving) -> Self {
        let import_limits = import_limits(&spec.limits);
        let g = &spec.grants;
        let caps = Capabilities {
            env: g.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            // Validated when the spec was accepted.
            sockets: g.sockets.iter().filter_map(|a| a.parse().ok()).collect(),
            files: g.files.iter().map(|(guest, host)| (host.into(), guest.clone())).collect(),
            outbound_http: Arc::new(g.outbound_http.clone()),
        };
        Deployed {
            config: Arc::new(spec.config.clone()),
            import_limits: Arc::new(import_limits),
            caps: Arc::new(caps),
            warm: std::sync::OnceLock::new(),
            site: std::sync::OnceLock::new(),
            spec,
            unit,
            serving,
        }
    }

    /// Instances of this version idle between requests (reuse), 0 without reuse.
    pub fn warm_pool_idle(&self) -> usize {
        self.warm.get().and_then(Option::as_ref).map_or(0, |p| p.idle())
    }

    /// Where this version keeps instances between requests, if its spec reuses them. A
    /// chain's providers run in the entry's instance: it is reused only when every
    /// service of the chain asks for reuse (`reuses`).
    pub fn warm_pool(&self, runtime: &Runtime, reuses: impl Fn(&str) -> bool) -> Option<&Arc<WarmPool>> {
        self.warm
            .get_or_init(|| {
                let r = self.spec.reuse.filter(|r| r.requests > 1)?;
                let chain = self.serving.graph().map_or(&[][..], |g| &g.services[..]);
                chain
                    .iter()
                    .all(|p| p.service == self.spec.name || reuses(&p.service))
                    .then(|| runtime.warm_pool(r.requests))
            })
            .as_ref()
    }

    /// Which compiler's code requests run (`None`: nothing serves here).
    pub fn tier(&self) -> Option<crate::runtime::Tier> {
        match &self.serving {
            Serving::Ready { prepared, .. } => Some(prepared.tier()),
            _ => None,
        }
    }

    /// What requests run, or why none can.
    pub fn prepared(&self) -> Result<&Arc<Prepared>, DispatchError> {
        match &self.serving {
            Serving::Ready { prepared, .. } => Ok(prepared),
            Serving::Unresolved(u) => Err(DispatchError::Unresolved {
                service: self.spec.name.clone(),
                interface: u.interface.clone(),
                reason: u.reason.clone(),
            }),
            Serving::Provider { .. } => Err(DispatchError::NoHandler {
                service: self.spec.name.clone(),
                exports: self.unit.info.typed_exports.iter().map(|e| e.name.clone()).collect::<Vec<_>>().join(", "),
            }),
        }
    }
}

/// A service by name, across its versions.
pub struct Service {
    pub name: Arc<str>,
    gate: Arc<Gate>,
    pub stats: Stats,
    /// Read on every request by both cores: an `ArcSwap` reads without writing a shared
    /// counter (a lock and an `Arc` clone each did), see [`Service::peek`].
    current: arc_swap::ArcSwap<Deployed>,
}

impl Service {
    /// Whether this is a standard wasi:http component (served with streaming bodies).
    pub fn is_http(&self) -> bool {
        crate::runtime::is_http_world(&self.peek().unit.info.world)
    }

    /// Whether its spec says calls to it may run more than once (`idempotent`): a call
    /// lost after it was sent is then sent again (a forward, a barrier call).
    pub fn idempotent(&self) -> bool {
        self.peek().spec.idempotent
    }

    /// The version serving now, to keep (across an `await`, or after a redeploy).
    pub fn current(&self) -> Arc<Deployed> {
        self.current.load_full()
    }

    /// The version serving now, for a quick look: no shared counter is written. Drop it
    /// before the next `await` (a thread holds only a few of these cheaply).
    pub fn peek(&self) -> arc_swap::Guard<Arc<Deployed>> {
        self.current.load()
    }

    pub fn gate(&self) -> GateSnapshot {
        self.gate.snapshot()
    }

    /// Install `spec`, which differs from the current one only in its count: the same
    /// unit and chain serve (nothing is loaded or built).
    fn recount(&self, spec: ServiceSpec) {
        self.current.rcu(|cur| Arc::new(Deployed::new(spec.clone(), cur.unit.clone(), cur.serving.clone())));
    }

    /// The gate's running totals, for the autoscaler.
    pub fn usage(&self) -> gate::Usage {
        self.gate.usage()
    }
}

/// Why a dispatch produced no guest response.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("no service named {0:?} is deployed")]
    NotFound(String),
    #[error("service {0:?} is stopped (instances = 0); scale it up to serve requests")]
    Stopped(String),
    #[error("service {0:?} is at capacity and its queue is full; retry later or scale it up")]
    QueueFull(String),
    #[error("service {0:?} had no free instance within {1:?}; retry later or scale it up")]
    WaitTimeout(String, Duration),
    #[error("service {service:?} trapped: {message}")]
    Trap { service: String, message: String },
    #[error("service {service:?} did not answer within {timeout:?}")]
    Timeout { service: String, timeout: Duration },
    #[error("service {service:?} failed: {message}")]
    Guest { service: String, message: String },
    #[error("service {service:?} used up its fuel budget of {fuel}")]
    OutOfFuel { service: String, fuel: u64 },
    #[error("service {service:?} returned a {size}-byte body; its limit is {limit} (limits.max_response_bytes)")]
    ResponseTooLarge { service: String, size: usize, limit: usize },
    #[error(
        "service {service:?} is not ready: nothing provides its import {interface} ({reason}); deploy a service that exports it"
    )]
    Unresolved { service: String, interface: String, reason: String },
    #[error("service {service:?} has no handler to call: it provides [{exports}] to services that import them")]
    NoHandler { service: String, exports: String },
    #[error("no live node can run service {service:?} right now ({reason}); retry shortly")]
    NoInstance { service: String, reason: String },
    /// A request a guest built (for `invoke`, `call-all` or a barrier) that HTTP cannot
    /// carry: it is the calling guest's mistake.
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Internal(String),
}

impl DispatchError {
    /// The error's code, as ingress answers it and spans record it.
    pub fn code(&self) -> &'static str {
        match self {
            DispatchError::NotFound(_) => "not-found",
            DispatchError::Stopped(_) => "stopped",
            DispatchError::QueueFull(_) | DispatchError::WaitTimeout(..) => "overloaded",
            DispatchError::Trap { .. } => "trap",
            DispatchError::Timeout { .. } => "timeout",
            DispatchError::Guest { .. } => "guest-error",
            DispatchError::OutOfFuel { .. } => "fuel-exhausted",
            DispatchError::ResponseTooLarge { .. } => "response-too-large",
            DispatchError::Unresolved { .. } => "unresolved-import",
            DispatchError::NoInstance { .. } => "no-instance",
            DispatchError::NoHandler { .. } => "no-handler",
            DispatchError::Internal(_) => "internal",
            DispatchError::BadRequest(_) => "bad-request",
        }
    }
}

/// A call run on another node: its answer and the node that gave it (none when the answer
/// is this node's error about sending it).
pub type RemoteAnswer = Result<(crate::runtime::Response, Option<Arc<str>>), DispatchError>;

/// What a deploy did: the stored spec, whether the service is new, and the imports its
/// component makes that are denied at use (no grant for them).
#[derive(Debug, Clone)]
pub struct Deploy {
    pub spec: ServiceSpec,
    pub created: bool,
    pub denied: Vec<spec::DeniedImport>,
    /// In a cluster: members that did not serve the new version yet when the deploy
    /// returned (it waits a few seconds for all of them).
    pub not_serving: Vec<String>,
}

/// Why an admin change was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    BadRequest(String),
    /// A manual count for a service whose count the autoscaler sets.
    #[error("{0}")]
    Autoscaled(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Inspect(#[from] InspectError),
    #[error("{0}")]
    Ungranted(String),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("{0}")]
    Conflict(String),
    /// The cluster could not take the change now (no quorum, no leader).
    #[error("{0}")]
    Unavailable(String),
    /// Asked of a single node what only a cluster has.
    #[error("{0}")]
    NotClustered(&'static str),
    /// Asked of a member what only the leader knows.
    #[error("{0}")]
    NotLeader(&'static str),
    #[error("{0}")]
    Internal(String),
}

/// The result of storing a component (the admin API answers it as `api::Uploaded`).
#[derive(Debug, Clone, Serialize)]
pub struct Uploaded {
    pub digest: String,
    pub size: usize,
    pub created: bool,
    #[serde(flatten)]
    pub info: ComponentInfo,
}

pub struct Registry {
    runtime: Arc<Runtime>,
    grid: Arc<Grid>,
    /// The services this node serves, and its instance slots for each.
    table: table::ServiceTable,
    /// Compiled components in use, one per digest.
    units: units::Units,
    /// Serialises admin changes (deploy, scale, delete, the Service Manager's step):
    /// each reads the table, does its I/O, then installs.
    admin: tokio::sync::Mutex<()>,
    /// How this node reaches other nodes' services (cluster mode only).
    routes: std::sync::OnceLock<route::Routes>,
    /// Who called whom through `invoke` (`GET /v1/graph`).
    pub calls: calls::CallGraph,
    /// Per-arm call samples of the re-provisioning experiments trying an instance here.
    pub trials: trials::Trials,
    /// Durable barriers this node drives (`barrier.fan-out`): bookkeeping and counters.
    pub barriers: Arc<barrier::Barriers>,
    /// Starts, drives and sweeps the barriers (and owns the drive tasks).
    barrier_engine: Arc<barrier::BarrierEngine>,
    /// Request ids for requests that came without one.
    ids: ids::RequestIds,
    tracer: std::sync::OnceLock<Arc<crate::trace::Tracer>>,
    /// Requests running on this node alone on their service (`dispatch_http`,
    /// `dispatch_to`), whatever their protocol: one over HTTP/1 with none beside it has its
    /// fresh instance torn down after its answer (`Teardown::AfterAnswer`).
    lone_running: std::sync::atomic::AtomicU32,
    /// The registry as its services' calls reach it: `invoke` calls re-enter the
    /// registry from inside a guest call, through a weak pointer to it (no cycle).
    invoker: Arc<dyn crate::runtime::Invoker>,
}

/// A request running alone on its service, counted in `Registry::lone_running` until
/// dropped; `first`: no other one was counted when it started.
pub(super) struct LoneRun {
    registry: Arc<Registry>,
    first: bool,
}

impl LoneRun {
    fn start(registry: &Arc<Registry>) -> Self {
        let before = registry.lone_running.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        LoneRun { registry: registry.clone(), first: before == 0 }
    }

    /// How a request's fresh instance is torn down, and its count while it runs (held
    /// until it ends). Counted only when `alone` on its service (`Permit::alone`): a busy
    /// service's requests never defer their teardown, and touch no counter both cores
    /// write. Deferred only when alone on the node too and over HTTP/1, whose connection
    /// task runs the request, so the teardown's task runs on its thread after the answer
    /// is written.
    pub(super) fn teardown(registry: &Arc<Registry>, alone: bool, http1: bool) -> (Option<LoneRun>, Teardown) {
        let running = alone.then(|| LoneRun::start(registry));
        let late = http1 && running.as_ref().is_some_and(|r| r.first);
        (running, if late { Teardown::AfterAnswer } else { Teardown::InPlace })
    }
}

impl Drop for LoneRun {
    fn drop(&mut self) {
        self.registry.lone_running.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn internal<E: std::fmt::Display>(e: E) -> AdminError {
    AdminError::Internal(e.to_string())
}

impl Registry {
    /// Compile counters of tiered compilation (`None` with `--compile optimized`).
    pub fn tier_stats(&self) -> Option<&crate::runtime::TierStats> {
        self.runtime.tier_stats()
    }

    /// Drop the instances reused services keep between requests (node shutdown).
    pub fn drop_idle_instances(&self) -> usize {
        self.runtime.drop_idle()
    }

    pub fn new(runtime: Arc<Runtime>, grid: Arc<Grid>) -> Arc<Self> {
        let ids = ids::RequestIds::new();
        let barriers = Arc::new(barrier::Barriers::new(ids.seed()));
        Arc::new_cyclic(|me| Registry {
            invoker: Arc::new(invoker::RegistryInvoker(me.clone())),
            barrier_engine: Arc::new(barrier::BarrierEngine::new(me.clone(), grid.clone(), barriers.clone())),
            barriers,
            runtime,
            grid,
            table: Default::default(),
            units: Default::default(),
            admin: tokio::sync::Mutex::new(()),
            routes: std::sync::OnceLock::new(),
            calls: Default::default(),
            trials: Default::default(),
            ids,
            tracer: std::sync::OnceLock::new(),
            lone_running: Default::default(),
        })
    }

    pub fn grid(&self) -> &Arc<Grid> {
        &self.grid
    }

    /// How this node traces requests (set once by the node; `None`: not traced).
    pub fn tracer(&self) -> Option<&Arc<crate::trace::Tracer>> {
        self.tracer.get()
    }

    pub fn set_tracer(&self, tracer: Arc<crate::trace::Tracer>) {
        let _ = self.tracer.set(tracer);
    }

    /// This node's spans of a trace (none for an id that is not one).
    pub fn local_trace(&self, trace_id: &str) -> Vec<crate::trace::SpanRecord> {
        match (self.tracer(), crate::trace::TraceId::parse(trace_id)) {
            (Some(t), Some(id)) => t.ring.trace(id),
            _ => Vec::new(),
        }
    }

    /// This node's summaries of its recent traces.
    pub fn local_traces(&self, q: &crate::trace::store::TraceQuery) -> Vec<crate::trace::store::TraceSummary> {
        self.tracer().map(|t| t.ring.summaries(q)).unwrap_or_default()
    }

    /// A new request id: 16 hex digits, unique per node run.
    pub fn new_request_id(&self) -> String {
        self.ids.next()
    }

    pub fn get(&self, name: &str) -> Option<Arc<Service>> {
        self.table.get(name)
    }

    /// Every service's usage totals on this node (what `/usage` answers the leader).
    pub fn usage(&self) -> BTreeMap<String, gate::Usage> {
        self.list().iter().map(|s| (s.name.to_string(), s.usage())).collect()
    }

    pub fn list(&self) -> Vec<Arc<Service>> {
        self.table.list()
    }

    /// Load every stored service (after a restart), then resolve their chains. A service
    /// whose component cannot be loaded is logged and skipped; its spec stays stored.
    pub async fn restore(self: &Arc<Self>) -> anyhow::Result<usize> {
        let rows = self.grid.blocking(|s| s.scan(Table::Services, b"", None, usize::MAX)).await?;
        let mut changes = HashMap::new();
        for (_, value) in rows {
            let spec: ServiceSpec = match serde_json::from_slice(&value) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "skipping an unreadable stored service spec");
                    continue;
                }
            };
            match self.load_unit(&spec.component).await {
                Ok(unit) => {
                    changes.insert(spec.name.clone(), Some((spec, unit)));
                }
                Err(e) => tracing::error!(service = %spec.name, error = %e, "could not restore service"),
            }
        }
        let _admin = self.admin.lock().await;
        let versions = self.rebuild(changes, true).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let n = versions.len();
        self.table.install_all(versions);
        Ok(n)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A registry over `grid` with a small runtime (no service is deployed).
    pub(crate) fn registry(grid: &Arc<crate::grid::Grid>, cache: &std::path::Path) -> Arc<Registry> {
        let runtime = crate::runtime::Runtime::new(&crate::runtime::RuntimeConfig {
            compile_cache: cache.to_path_buf(),
            pool_instances: 4,
            pool_max_memory: 1 << 20,
            fuel: false,
            outbound: None,
            tiered: false,
            fused_parts: 0.0,
        })
        .unwrap();
        Registry::new(Arc::new(runtime), grid.clone())
    }

    #[tokio::test]
    async fn a_lone_request_is_first_only_while_no_other_lone_request_runs() {
        let grid = Arc::new(crate::grid::Grid::new(Arc::new(crate::grid::MemoryStorage::default())));
        let dir = tempfile::tempdir().unwrap();
        let registry = registry(&grid, dir.path());
        let a = LoneRun::start(&registry);
        let b = LoneRun::start(&registry);
        assert!(a.first && !b.first);
        drop(a);
        // `b` still runs: a third has company, though the first has ended.
        let c = LoneRun::start(&registry);
        assert!(!c.first);
        drop((b, c));
        assert!(LoneRun::start(&registry).first, "first again once none runs");
    }

    #[tokio::test]
    async fn only_a_first_lone_request_over_http1_defers_its_teardown() {
        let grid = Arc::new(crate::grid::Grid::new(Arc::new(crate::grid::MemoryStorage::default())));
        let dir = tempfile::tempdir().unwrap();
        let registry = registry(&grid, dir.path());
        // With company on its service: not counted, in place.
        let (none, t) = LoneRun::teardown(&registry, false, true);
        assert!(none.is_none() && t == Teardown::InPlace);
        // Alone but over HTTP/2: counted (others see it), in place.
        let (h2, t) = LoneRun::teardown(&registry, true, false);
        assert!(h2.is_some() && t == Teardown::InPlace);
        // Another lone HTTP/1 request beside it has company on the node.
        let (_, t) = LoneRun::teardown(&registry, true, true);
        assert_eq!(t, Teardown::InPlace);
        drop(h2);
        let (_, t) = LoneRun::teardown(&registry, true, true);
        assert_eq!(t, Teardown::AfterAnswer);
    }
}
