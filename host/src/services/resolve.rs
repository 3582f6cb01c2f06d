//! Resolving a service's typed imports to the services that provide them, transitively:
//! explicit `bindings` first, else the only service exporting the interface. The result
//! is a [`Plan`] (who serves which import), or the first import nobody provides yet, or
//! a [`ResolveError`] that refuses the change.

use std::collections::HashMap;
use std::sync::Arc;

use super::spec::{Grants, ServiceSpec};
use crate::runtime::Edge;
use crate::runtime::typed::{Interface, differences};
use crate::runtime::{Compiled, ComponentInfo};

/// A service's own component, compiled and described.
pub struct Unit {
    pub digest: String,
    pub component: Compiled,
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
        "service {provider:?} imports {import}, and a provider runs inside its consumer's sandbox: {root:?} holds grants.{grant}, which would reach {provider:?} too; call {provider:?} with invoke instead, or drop the grant"
    )]
    ProviderNeedsGrants { root: String, provider: String, import: String, grant: String },
    #[error(
        "service {service:?} has a binding for {key}, but its component imports no such interface; its typed imports are [{imports}]"
    )]
    UnknownBinding { service: String, key: String, imports: String },
}

/// Resolve `root` (which must be in `view`).
pub fn resolve(view: &dyn View, root: &str) -> Result<Result<Plan, Unresolved>, ResolveError> {
    let grants = view.member(root).map(|(s, _)| s.grants.clone()).unwrap_or_default();
    let mut r = Resolver {
        view,
        root: (root, grants),
        plan: Plan { services: vec![], edges: vec![] },
        done: HashMap::new(),
        path: vec![],
    };
    Ok(r.visit(root)?.map(|_| r.plan))
}

struct Resolver<'a> {
    view: &'a dyn View,
    /// The chain's root and its grants: the sandbox every provider of the chain runs in.
    root: (&'a str, Grants),
    plan: Plan,
    done: HashMap<String, usize>,
    path: Vec<String>,
}

impl Resolver<'_> {
    /// The one service other than `name` that exports what `import` needs (an import with
    /// no binding is served by it); none is unresolved, several are ambiguous.
    fn sole_exporter(&self, name: &str, import: &Interface) -> Result<Result<String, Unresolved>, ResolveError> {
        let view = self.view;
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
                Ok(Err(self.unresolved(&import.name, reason)))
            }
            1 => Ok(Ok(exporters.remove(0))),
            _ => Err(ResolveError::Ambiguous {
                service: name.to_string(),
                interface: import.name.clone(),
                key: import.key().to_string(),
                providers: exporters.join(", "),
            }),
        }
    }

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
                None => match self.sole_exporter(name, import)? {
                    Ok(p) => p,
                    Err(u) => return Ok(Err(u)),
                },
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
            // A provider's ungranted imports are denied at use, like any service's; but it
            // runs in the root's sandbox, so a grant the root holds would reach it.
            if let Some((import, grant)) =
                punit.info.imports.iter().find_map(|i| {
                    Grants::needed_for(i).filter(|g| self.root.1.has(g)).map(|g| (i.clone(), g.to_string()))
                })
            {
                let root = self.root.0.to_string();
                return Err(ResolveError::ProviderNeedsGrants { root, provider, import, grant });
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::runtime::typed::Interface;

    /// A table of services for resolution; components are empty (only their descriptions
    /// matter here).
    struct Table(BTreeMap<String, (ServiceSpec, Arc<Unit>)>);

    impl View for Table {
        fn member(&self, name: &str) -> Option<(&ServiceSpec, &Arc<Unit>)> {
            self.0.get(name).map(|(s, u)| (s, u))
        }
        fn names(&self) -> Vec<String> {
            self.0.keys().cloned().collect()
        }
    }

    fn service(name: &str, grants: serde_json::Value, info: ComponentInfo) -> (String, (ServiceSpec, Arc<Unit>)) {
        let spec: ServiceSpec = serde_json::from_value(serde_json::json!({
            "name": name, "component": format!("sha256:{}", "0".repeat(64)), "instances": 1,
            "queue_timeout_ms": 1000, "limits": crate::services::spec::Limits::default(), "generation": 1,
            "updated_at_ms": 0, "grants": grants,
        }))
        .unwrap();
        let engine = wasmtime::Engine::default();
        let component = Compiled::optimized("", wasmtime::component::Component::new(&engine, "(component)").unwrap());
        (name.to_string(), (spec, Arc::new(Unit { digest: String::new(), component, info })))
    }

    fn info(imports: &[&str], typed_imports: &[&str], typed_exports: &[&str]) -> ComponentInfo {
        let iface = |n: &&str| Interface { name: n.to_string(), funcs: vec![] };
        ComponentInfo {
            world: String::new(),
            imports: imports.iter().chain(typed_imports).map(|s| s.to_string()).collect(),
            exports: typed_exports.iter().map(|s| s.to_string()).collect(),
            typed_imports: typed_imports.iter().map(iface).collect(),
            typed_exports: typed_exports.iter().map(iface).collect(),
            min_memory_bytes: 0,
        }
    }

    #[test]
    fn a_provider_importing_files_joins_a_chain_only_when_the_root_grants_none() {
        let tool = "acme:text/tool@0.1.0";
        let provider = service("tool", serde_json::json!({}), info(&["wasi:filesystem/preopens@0.2.6"], &[], &[tool]));
        let plain = Table([service("app", serde_json::json!({}), info(&[], &[tool], &[])), provider.clone()].into());
        let plan = resolve(&plain, "app").unwrap().unwrap();
        assert_eq!(plan.services, ["tool", "app"], "the provider's file imports are denied at use");

        let dir = std::env::temp_dir().to_string_lossy().into_owned();
        let granted = service("app", serde_json::json!({ "files": { "/data": dir } }), info(&[], &[tool], &[]));
        let err = resolve(&Table([granted, provider].into()), "app").unwrap_err();
        assert!(
            matches!(&err, ResolveError::ProviderNeedsGrants { root, provider, grant, .. }
                if root == "app" && provider == "tool" && grant == "files"),
            "{err}"
        );
        assert!(err.to_string().contains("call \"tool\" with invoke instead"), "{err}");
    }
}
