//! Resolving a service's typed imports to the services that provide them, transitively:
//! explicit `bindings` first, else the only service exporting the interface. The result
//! is a [`Plan`] (who serves which import), or the first import nobody provides yet, or
//! a [`ResolveError`] that refuses the change.

use std::collections::HashMap;
use std::sync::Arc;

use wasmtime::component::Component;

use super::spec::{Grants, ServiceSpec};
use crate::runtime::ComponentInfo;
use crate::runtime::Edge;
use crate::runtime::typed::differences;

/// A service's own component, compiled and described.
pub struct Unit {
    pub digest: String,
    pub component: Component,
    pub info: ComponentInfo,
}

/// The services resolution may use: the deployed ones with pending changes applied.
pub trait View {
    fn member(&self, name: &str) -> Option<(&ServiceSpec, &Arc<Unit>)>;
    fn names(&self) -> Vec<String>;
}

/// The services a request to the root passes through, providers before consumers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub services: Vec<String>,
    /// `edges[i]`: the imports of `services[i]` and who serves them.
    pub edges: Vec<Vec<Edge>>,
}

/// An import no deployed service provides (yet): the service is accepted but not ready.
#[derive(Debug, Clone)]
pub struct Unresolved {
    pub interface: String,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(
        "service {service:?} imports {interface}, which several services export: [{providers}]; choose one in the spec with \"bindings\": {{\"{key}\": \"<service>\"}}"
    )]
    Ambiguous { service: String, interface: String, key: String, providers: String },
    #[error(
        "service {service:?} binds {interface} to {provider:?}, which does not export it (it exports [{exports}]); bind it to a service that does"
    )]
    NotExported { service: String, interface: String, provider: String, exports: String },
    #[error("service {provider:?} cannot provide {interface} to {service:?}: {}", diffs.join("; "))]
    Mismatch { service: String, provider: String, interface: String, diffs: Vec<String> },
    #[error(
        "typed imports form a cycle: {}; a chain of services must end in one that imports none of them",
        .0.join(" -> ")
    )]
    Cycle(Vec<String>),
    #[error(
        "service {provider:?} imports {import}, which needs grants.{grant}; a provider runs inside its consumer's sandbox and may hold no grants, so call it with invoke instead"
    )]
    ProviderNeedsGrants { provider: String, import: String, grant: String },
    #[error(
        "service {service:?} has a binding for {key}, but its component imports no such interface; its typed imports are [{imports}]"
    )]
    UnknownBinding { service: String, key: String, imports: String },
}

/// Resolve `root` (which must be in `view`).
pub fn resolve(view: &dyn View, root: &str) -> Result<Result<Plan, Unresolved>, ResolveError> {
    let mut r = Resolver { view, plan: Plan { services: vec![], edges: vec![] }, done: HashMap::new(), path: vec![] };
    Ok(r.visit(root)?.map(|_| r.plan))
}

struct Resolver<'a> {
    view: &'a dyn View,
    plan: Plan,
    done: HashMap<String, usize>,
    path: Vec<String>,
}

impl Resolver<'_> {
    fn visit(&mut self, name: &str) -> Result<Result<usize, Unresolved>, ResolveError> {
        if let Some(&i) = self.done.get(name) {
            return Ok(Ok(i));
        }
        if let Some(pos) = self.path.iter().position(|p| p == name) {
            let mut cycle = self.path[pos..].to_vec();
            cycle.push(name.to_string());
            return Err(ResolveError::Cycle(cycle));
        }
        let view = self.view;
        let Some((spec, unit)) = view.member(name) else {
            unreachable!("visit is only called for services in the view")
        };
        check_bindings(name, spec, unit)?;
        self.path.push(name.to_string());
        let mut edges = Vec::new();
        for import in &unit.info.typed_imports {
            let provider = match spec.binding_for(&import.name) {
                Some(p) => p.to_string(),
                None => {
                    let mut exporters: Vec<String> = view
                        .names()
                        .into_iter()
                        .filter(|n| n != name)
                        .filter(|n| view.member(n).is_some_and(|(_, u)| exports(u, import.key())))
                        .collect();
                    exporters.sort();
                    match exporters.len() {
                        0 => {
                            let reason = format!("no deployed service exports {}", import.key());
                            return Ok(Err(self.unresolved(&import.name, reason)));
                        }
                        1 => exporters.remove(0),
                        _ => {
                            return Err(ResolveError::Ambiguous {
                                service: name.to_string(),
                                interface: import.name.clone(),
                                key: import.key().to_string(),
                                providers: exporters.join(", "),
                            });
                        }
                    }
                }
            };
            let Some((_, punit)) = view.member(&provider) else {
                let reason = format!("it is bound to service {provider:?}, which is not deployed");
                return Ok(Err(self.unresolved(&import.name, reason)));
            };
            let Some(export) = punit.info.typed_exports.iter().find(|e| e.key() == import.key()) else {
                return Err(ResolveError::NotExported {
                    service: name.to_string(),
                    interface: import.name.clone(),
                    provider,
                    exports: punit.info.typed_exports.iter().map(|e| e.name.clone()).collect::<Vec<_>>().join(", "),
                });
            };
            let diffs = differences(import, export);
            if !diffs.is_empty() {
                return Err(ResolveError::Mismatch {
                    service: name.to_string(),
                    provider,
                    interface: import.name.clone(),
                    diffs,
                });
            }
            if let Some((import, grant)) =
                punit.info.imports.iter().find_map(|i| Grants::needed_for(i).map(|g| (i.clone(), g.to_string())))
            {
                return Err(ResolveError::ProviderNeedsGrants { provider, import, grant });
            }
            let export = export.name.clone();
            match self.visit(&provider)? {
                Ok(i) => edges.push(Edge { import: import.name.clone(), provider: i, export }),
                Err(u) => return Ok(Err(u)),
            }
        }
        self.path.pop();
        let i = self.plan.services.len();
        self.plan.services.push(name.to_string());
        self.plan.edges.push(edges);
        self.done.insert(name.to_string(), i);
        Ok(Ok(i))
    }

    /// An unresolved import, said from the root's point of view.
    fn unresolved(&self, interface: &str, reason: String) -> Unresolved {
        let reason = match self.path.as_slice() {
            [_root] => reason,
            path => format!("{reason} (needed through {})", path.join(" -> ")),
        };
        Unresolved { interface: interface.to_string(), reason }
    }
}

fn exports(unit: &Unit, key: &str) -> bool {
    unit.info.typed_exports.iter().any(|e| e.key() == key)
}

fn check_bindings(name: &str, spec: &ServiceSpec, unit: &Unit) -> Result<(), ResolveError> {
    let imports = &unit.info.typed_imports;
    for key in spec.bindings.keys() {
        if !imports.iter().any(|i| &i.name == key || i.key() == key) {
            return Err(ResolveError::UnknownBinding {
                service: name.to_string(),
                key: key.clone(),
                imports: imports.iter().map(|i| i.name.clone()).collect::<Vec<_>>().join(", "),
            });
        }
    }
    Ok(())
}
