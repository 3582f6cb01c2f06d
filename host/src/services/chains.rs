//! Keeping every service's chain current. After any admin change the services it can
//! affect are resolved again against a snapshot with the change applied, and what serves
//! each of them is built before anything is installed: one component, a fused chain, or
//! a linked one. A service whose chain did not change keeps what it had.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;

use super::resolve::{self, Plan, Unit, Unresolved, View};
use super::spec::ServiceSpec;
use super::{AdminError, Deployed, Registry, internal};
use crate::runtime::{Chain, ChainPart, Identity, PROVIDER_WORLD, Prepared};

/// How a version of a service serves requests.
#[derive(Clone)]
pub enum Serving {
    /// Requests run `prepared`; `graph` is set when it is a chain of services.
    Ready { prepared: Arc<Prepared>, graph: Option<Arc<Graph>> },
    /// A typed import has no provider yet: requests get 503 `unresolved-import`.
    Unresolved(Unresolved),
    /// The component only provides interfaces; it is called through other services.
    Provider { graph: Option<Arc<Graph>> },
}

impl Serving {
    pub fn graph(&self) -> Option<&Arc<Graph>> {
        match self {
            Serving::Ready { graph, .. } | Serving::Provider { graph } => graph.as_ref(),
            Serving::Unresolved(_) => None,
        }
    }
}

/// A chain as users see it in `GET /v1/services/{name}`.
#[derive(Debug, Serialize)]
pub struct Graph {
    /// `fused` (one component) or `linked` (one instance per service, host-mediated).
    pub mode: &'static str,
    /// Why the chain is linked rather than fused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Digest of the parts and their wiring (the fused component's cache key).
    pub digest: String,
    pub services: Vec<GraphNode>,
    pub edges: Vec<GraphEdge>,
    #[serde(skip)]
    plan: Plan,
    /// A fused chain's services, comma-separated (its run spans' `chain.fused`: its parts
    /// call each other inside one component, where the host cannot time them).
    #[serde(skip)]
    pub fused: Option<Arc<str>>,
}

#[derive(Debug, Serialize)]
pub struct GraphNode {
    pub service: String,
    pub component: String,
}

#[derive(Debug, Serialize)]
pub struct GraphEdge {
    pub from: String,
    pub import: String,
    pub to: String,
}

impl Graph {
    fn new(mode: &'static str, reason: Option<String>, chain: &Chain, plan: &Plan) -> Graph {
        let services = chain
            .parts
            .iter()
            .map(|p| GraphNode { service: p.service.to_string(), component: p.digest.clone() })
            .collect();
        let edges = chain
            .parts
            .iter()
            .flat_map(|p| {
                p.edges.iter().map(|e| GraphEdge {
                    from: p.service.to_string(),
                    import: e.import.clone(),
                    to: chain.parts[e.provider].service.to_string(),
                })
            })
            .collect();
        let fused = (mode == "fused").then(|| {
            let names: Vec<&str> = chain.parts.iter().map(|p| &*p.service).collect();
            names.join(",").into()
        });
        Graph { mode, reason, digest: chain.key(), services, edges, plan: plan.clone(), fused }
    }

    /// Whether `service` is part of this chain.
    pub fn uses(&self, service: &str) -> bool {
        self.plan.services.iter().any(|s| s == service)
    }
}

/// A new version of a service, or `None` for its removal.
pub(super) type Change = Option<(ServiceSpec, Arc<Unit>)>;

/// The service table with pending changes applied, without copying it: the deployed
/// versions as they are (an `Arc` each) and the changes beside them. (Copying every spec
/// made each deploy cost about 1 µs per deployed service: 12 ms at 10,000.)
struct Snapshot<'a> {
    current: HashMap<String, Arc<Deployed>>,
    changes: &'a HashMap<String, Change>,
}

impl Snapshot<'_> {
    /// A member resolution already found (the plan names only members).
    fn get(&self, name: &str) -> (&ServiceSpec, &Arc<Unit>) {
        self.member(name).unwrap_or_else(|| unreachable!("{name} is in the plan, so in the snapshot"))
    }
}

impl View for Snapshot<'_> {
    fn member(&self, name: &str) -> Option<(&ServiceSpec, &Arc<Unit>)> {
        match self.changes.get(name) {
            Some(change) => change.as_ref().map(|(s, u)| (s, u)),
            None => self.current.get(name).map(|d| (&d.spec, &d.unit)),
        }
    }

    fn names(&self) -> Vec<String> {
        let kept = self.current.keys().filter(|n| !self.changes.contains_key(*n));
        let changed = self.changes.iter().filter(|(_, c)| c.is_some()).map(|(n, _)| n);
        kept.chain(changed).cloned().collect()
    }
}

/// A platform import whose state belongs to the calling service: a provider using one
/// keeps its own identity only when linked.
fn stateful_import(imports: &[String]) -> Option<&String> {
    imports.iter().find(|i| {
        ["nanogrid:service/kv@", "nanogrid:service/config@", "nanogrid:service/invoke@", "nanogrid:service/barrier@"]
            .iter()
            .any(|p| i.starts_with(p))
    })
}

pub(super) fn identity_of(spec: &ServiceSpec) -> Identity {
    Identity {
        service: spec.name.as_str().into(),
        config: Arc::new(spec.config.clone()),
        limits: Arc::new(super::import_limits(&spec.limits)),
    }
}

impl Registry {
    /// Apply `changes` to a snapshot of the deployed services and return the new version
    /// of every service that changes as a result. Nothing is installed here. With
    /// `lenient` (restoring after a restart) a service that no longer resolves is kept as
    /// not ready; otherwise the change is refused.
    pub(super) async fn rebuild(
        &self,
        changes: HashMap<String, Change>,
        lenient: bool,
    ) -> Result<Vec<Arc<Deployed>>, AdminError> {
        let current: HashMap<String, Arc<Deployed>> = self.table.versions();
        let snapshot = Snapshot { current, changes: &changes };
        // Only changed services and chains (whose parts may have changed) need a look.
        let mut names = snapshot.names();
        names.retain(|n| changes.contains_key(n) || !snapshot.get(n).1.info.typed_imports.is_empty());
        names.sort();
        let mut out = Vec::new();
        for name in names {
            let (spec, unit) = snapshot.get(&name);
            let changed = changes.contains_key(&name);
            let resolution = match resolve::resolve(&snapshot, &name) {
                Ok(r) => r,
                Err(e) if lenient => {
                    tracing::error!(service = %name, error = %e, "stored service does not resolve");
                    Err(Unresolved { interface: "(see reason)".into(), reason: e.to_string() })
                }
                Err(e) => return Err(e.into()),
            };
            let old = snapshot.current.get(&name);
            if !changed {
                match (&resolution, old.and_then(|d| d.serving.graph())) {
                    // Same chain, no changed part: keep what serves it.
                    (Ok(plan), Some(g))
                        if g.plan == *plan && !plan.services.iter().any(|s| changes.contains_key(s)) =>
                    {
                        continue;
                    }
                    (Err(u), _) if !lenient && old.is_some_and(|d| !matches!(d.serving, Serving::Unresolved(_))) => {
                        return Err(AdminError::Conflict(format!(
                            "this change would leave service {name:?} without a provider for {}: {}; \
                             deploy a replacement provider first or change {name:?}'s bindings",
                            u.interface, u.reason
                        )));
                    }
                    _ => {}
                }
            }
            let serving = self.serve(&snapshot, &name, resolution).await?;
            out.push(Arc::new(Deployed::new(spec.clone(), unit.clone(), serving)));
        }
        Ok(out)
    }

    /// Build what serves `name` under `resolution`.
    async fn serve(
        &self,
        snapshot: &Snapshot<'_>,
        name: &str,
        resolution: Result<Plan, Unresolved>,
    ) -> Result<Serving, AdminError> {
        let plan = match resolution {
            Ok(p) => p,
            Err(u) => return Ok(Serving::Unresolved(u)),
        };
        let (spec, unit) = snapshot.get(name);
        let provider_only = unit.info.world == PROVIDER_WORLD;
        let runtime = self.runtime.clone();
        if plan.services.len() == 1 {
            if provider_only {
                return Ok(Serving::Provider { graph: None });
            }
            let unit = unit.clone();
            let prepared = tokio::task::spawn_blocking(move || runtime.prepare(&unit.component))
                .await
                .map_err(internal)?
                .map_err(|e| AdminError::Internal(format!("{e:#}")))?;
            return Ok(Serving::Ready { prepared, graph: None });
        }
        let parts = plan
            .services
            .iter()
            .zip(&plan.edges)
            .map(|(s, edges)| {
                let (pspec, punit) = snapshot.get(s);
                ChainPart {
                    service: s.as_str().into(),
                    digest: punit.digest.clone(),
                    component: punit.component.clone(),
                    identity: identity_of(pspec),
                    edges: edges.clone(),
                }
            })
            .collect();
        let chain = Chain { parts };
        let reason = if spec.fuse {
            plan.services[..plan.services.len() - 1].iter().find_map(|s| {
                let import = stateful_import(&snapshot.get(s).1.info.imports)?;
                Some(format!("{s} imports {import}, whose state is per service; linked, it keeps its own"))
            })
        } else {
            Some("the spec sets \"fuse\": false".to_string())
        };
        let graph = Arc::new(Graph::new(if reason.is_none() { "fused" } else { "linked" }, reason, &chain, &plan));
        if provider_only {
            return Ok(Serving::Provider { graph: Some(graph) });
        }
        let prepared = if graph.reason.is_none() {
            let mut bytes = Vec::with_capacity(chain.parts.len());
            for p in &chain.parts {
                let b = self.component_bytes(&p.digest).await?;
                bytes.push(b.ok_or_else(|| AdminError::Internal(format!("component {} is missing", p.digest)))?);
            }
            tokio::task::spawn_blocking(move || runtime.prepare_fused(&chain, move || Ok(bytes))).await
        } else {
            tokio::task::spawn_blocking(move || runtime.prepare_linked(&chain)).await
        };
        let prepared = prepared.map_err(internal)?.map_err(|e| AdminError::Internal(format!("{e:#}")))?;
        tracing::info!(service = name, mode = graph.mode, parts = plan.services.len(), "chain prepared");
        Ok(Serving::Ready { prepared, graph: Some(graph) })
    }
}
