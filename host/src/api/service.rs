//! A service's bodies: `GET /v1/services/{name}` ([`ServiceDetail`]), what a deploy or a
//! scale answers ([`ServiceAnswer`]), `DELETE /v1/services/{name}` ([`Deleted`]),
//! `GET /v1/whoami` ([`Whoami`]) and what a component upload answers ([`Uploaded`]).

use serde::{Deserialize, Serialize};

use super::RequestCounts;
use crate::auth::Scope;
use crate::control::Mode;
use crate::control::views::NodeInstances;
use crate::runtime::ComponentInfo;
use crate::runtime::Tier;
use crate::services::spec::DeniedImport;
use crate::services::{Graph, ServiceSpec};

/// `GET /v1/services/{name}`: a service's spec, its component and how this node serves
/// it. Below the deploy scope the spec's environment and config values are hidden.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceDetail {
    pub name: String,
    pub spec: ServiceSpec,
    pub component: ComponentView,
    /// Imports the spec's grants leave denied (each use fails inside the guest). In a
    /// deploy's answer: those the deploy itself reported.
    pub denied_imports: Vec<DeniedImport>,
    /// The chain of typed imports it serves through (`null` without one).
    pub graph: Option<ChainGraph>,
    /// Why requests cannot run yet (`null` when every typed import is resolved).
    pub unresolved: Option<UnresolvedImport>,
    pub status: ServiceStatus,
    /// Only in a deploy's answer, in a cluster: members that did not serve the new
    /// version yet when the deploy returned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_serving_yet: Vec<String>,
}

/// What a deploy (`PUT /v1/services/{name}`) or a scale (`POST .../scale`) answers: the
/// service's detail, or only the stored spec when a later change (on another node of a
/// cluster) already removed the service here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ServiceAnswer {
    Detail(Box<ServiceDetail>),
    Spec(Box<SpecAnswer>),
}

impl ServiceAnswer {
    /// The service's detail, unless it was already removed here.
    pub fn detail(&self) -> Option<&ServiceDetail> {
        match self {
            ServiceAnswer::Detail(d) => Some(d),
            ServiceAnswer::Spec(_) => None,
        }
    }

    pub fn spec(&self) -> &ServiceSpec {
        match self {
            ServiceAnswer::Detail(d) => &d.spec,
            ServiceAnswer::Spec(s) => &s.spec,
        }
    }

    /// The imports left denied (a scale's answer without the detail has none).
    pub fn denied_imports(&self) -> &[DeniedImport] {
        match self {
            ServiceAnswer::Detail(d) => &d.denied_imports,
            ServiceAnswer::Spec(s) => s.denied_imports.as_deref().unwrap_or_default(),
        }
    }

    pub fn not_serving_yet(&self) -> &[String] {
        match self {
            ServiceAnswer::Detail(d) => &d.not_serving_yet,
            ServiceAnswer::Spec(s) => &s.not_serving_yet,
        }
    }
}

/// [`ServiceAnswer`] for a service no longer deployed on the node that answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpecAnswer {
    pub name: String,
    pub spec: ServiceSpec,
    /// Present in a deploy's answer only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denied_imports: Option<Vec<DeniedImport>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_serving_yet: Vec<String>,
}

/// `DELETE /v1/services/{name}`: the spec the service had.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deleted {
    /// The service's name.
    pub deleted: String,
    pub spec: ServiceSpec,
}

/// `GET /v1/whoami`: the node that answered and what the caller's token allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Whoami {
    pub node: String,
    pub scope: Scope,
}

/// A component as the detail shows it (the upload's answer has the same fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentView {
    pub world: String,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    /// Interfaces other services must provide (bound at deploy); absent when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub typed_imports: Vec<InterfaceView>,
    /// Interfaces this component provides to other services; absent when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub typed_exports: Vec<InterfaceView>,
    /// Linear memory an instance has before it runs.
    pub min_memory_bytes: u64,
}

impl From<&ComponentInfo> for ComponentView {
    fn from(c: &ComponentInfo) -> ComponentView {
        let typed = |is: &[crate::runtime::typed::Interface]| {
            is.iter()
                .map(|i| InterfaceView {
                    name: i.name.clone(),
                    functions: i.funcs.iter().map(ToString::to_string).collect(),
                })
                .collect()
        };
        ComponentView {
            world: c.world.clone(),
            imports: c.imports.clone(),
            exports: c.exports.clone(),
            typed_imports: typed(&c.typed_imports),
            typed_exports: typed(&c.typed_exports),
            min_memory_bytes: c.min_memory_bytes,
        }
    }
}

/// `PUT` / `POST /v1/components`: the stored component (201 when this upload stored it,
/// 200 when it was there already) and what it is. The registry's own result
/// ([`crate::services::Uploaded`]) keeps the typed interfaces as signatures; their WIT text
/// does not read back into one, so the answer carries the [`ComponentView`] (same JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uploaded {
    pub digest: String,
    pub size: usize,
    /// This upload stored it (false: the same bytes were stored before).
    pub created: bool,
    #[serde(flatten)]
    pub component: ComponentView,
}

impl From<&crate::services::Uploaded> for Uploaded {
    fn from(u: &crate::services::Uploaded) -> Uploaded {
        Uploaded { digest: u.digest.clone(), size: u.size, created: u.created, component: (&u.info).into() }
    }
}

/// A typed interface: its full name (version included) and WIT function signatures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceView {
    pub name: String,
    pub functions: Vec<String>,
}

/// A chain of services bound through typed imports, as it serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainGraph {
    pub mode: ChainMode,
    /// Why the chain is linked rather than fused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Digest of the parts and their wiring (the fused component's cache key).
    pub digest: String,
    pub services: Vec<ChainPart>,
    pub edges: Vec<ChainEdge>,
}

impl From<&Graph> for ChainGraph {
    fn from(g: &Graph) -> ChainGraph {
        ChainGraph {
            mode: if g.mode == "fused" { ChainMode::Fused } else { ChainMode::Linked },
            reason: g.reason.clone(),
            digest: g.digest.clone(),
            services: g
                .services
                .iter()
                .map(|s| ChainPart { service: s.service.clone(), component: s.component.clone() })
                .collect(),
            edges: g
                .edges
                .iter()
                .map(|e| ChainEdge { from: e.from.clone(), import: e.import.clone(), to: e.to.clone() })
                .collect(),
        }
    }
}

/// How a chain runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChainMode {
    /// Composed into one component.
    Fused,
    /// One instance per service, calls mediated by the host.
    Linked,
}

/// One service of a chain and its component's digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainPart {
    pub service: String,
    pub component: String,
}

/// `from`'s typed import `import`, bound to the service `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainEdge {
    pub from: String,
    pub import: String,
    pub to: String,
}

/// A typed import no service provides (yet), and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnresolvedImport {
    pub interface: String,
    pub reason: String,
}

/// How a service runs: here, and on each node it is placed on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// Requests can run now (not stopped, every typed import resolved).
    pub ready: bool,
    pub local: LocalStatus,
    /// A row per node the service is placed on (on a single node: this one).
    pub nodes: Vec<NodeInstances>,
    /// Counted on this node since it started.
    pub requests: RequestCounts,
}

/// The service on the node that answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalStatus {
    pub node: String,
    pub mode: Mode,
    /// Concurrent executions allowed here.
    pub instances: u32,
    pub max_queue: u32,
    pub running: u32,
    pub queued: u32,
    pub peak_running: u32,
    /// Instances kept between requests (a spec with `reuse`).
    pub idle_instances: usize,
    /// `baseline` (Winch) until the optimized code (Cranelift) is swapped in; `null`
    /// when nothing serves it here.
    pub code: Option<Tier>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec() -> ServiceSpec {
        serde_json::from_value(json!({
            "name": "hello", "component": format!("sha256:{}", "0".repeat(64)), "instances": 2,
            "queue_timeout_ms": 1000, "limits": crate::services::Limits::default(), "generation": 3, "updated_at_ms": 0
        }))
        .unwrap()
    }

    fn detail() -> ServiceDetail {
        let row = NodeInstances {
            node: "n1".into(),
            instances: 2,
            mode: "leader".into(),
            live: Some(true),
            serving: Some(true),
            max_queue: None,
            running: None,
            queued: None,
            peak_running: None,
        };
        ServiceDetail {
            name: "hello".into(),
            spec: spec(),
            component: ComponentView {
                world: "wasi:http/proxy".into(),
                imports: vec![],
                exports: vec![],
                typed_imports: vec![],
                typed_exports: vec![],
                min_memory_bytes: 0,
            },
            denied_imports: vec![],
            graph: None,
            unresolved: None,
            status: ServiceStatus {
                ready: true,
                local: LocalStatus {
                    node: "n1".into(),
                    mode: Mode::Leader,
                    instances: 2,
                    max_queue: 8,
                    running: 0,
                    queued: 0,
                    peak_running: 1,
                    idle_instances: 0,
                    code: None,
                },
                nodes: vec![row],
                requests: RequestCounts::default(),
            },
            not_serving_yet: vec![],
        }
    }

    #[test]
    fn a_detail_keeps_its_null_parts_and_reads_back_as_a_detail() {
        let v = serde_json::to_value(ServiceAnswer::Detail(Box::new(detail()))).unwrap();
        assert!(v["graph"].is_null() && v["unresolved"].is_null() && v["status"]["local"]["code"].is_null());
        assert!(v.get("graph").is_some() && v.get("unresolved").is_some(), "{v}");
        assert!(v.get("not_serving_yet").is_none(), "{v}");
        assert_eq!(v["status"]["local"]["mode"], "leader");
        let row = v["status"]["nodes"][0].as_object().unwrap();
        let keys: Vec<&str> = row.keys().map(String::as_str).collect();
        assert_eq!(keys, ["instances", "live", "mode", "node", "serving"], "{v}");
        let back: ServiceAnswer = serde_json::from_value(v).unwrap();
        assert_eq!(back.detail(), Some(&detail()));
    }

    #[test]
    fn an_upload_answers_as_the_registry_stored_it_and_reads_back() {
        use crate::runtime::codec::WitType;
        use crate::runtime::typed::{FuncSig, Interface};
        let tokenize = FuncSig {
            name: "tokenize".into(),
            params: vec![("text".into(), WitType::String)],
            results: vec![WitType::List(Box::new(WitType::String))],
        };
        let info = ComponentInfo {
            world: "provider".into(),
            imports: vec![],
            exports: vec!["acme:text/tokenize@0.1.0".into()],
            typed_imports: vec![],
            typed_exports: vec![Interface { name: "acme:text/tokenize@0.1.0".into(), funcs: vec![tokenize] }],
            min_memory_bytes: 65536,
        };
        let stored =
            crate::services::Uploaded { digest: format!("sha256:{}", "0".repeat(64)), size: 42, created: true, info };
        let answer = Uploaded::from(&stored);
        let v = serde_json::to_value(&answer).unwrap();
        assert_eq!(v, serde_json::to_value(&stored).unwrap(), "the same JSON as the registry's result");
        assert!(v.get("typed_imports").is_none(), "{v}");
        assert_eq!(v["typed_exports"][0]["functions"][0], "tokenize: func(text: string) -> list<string>", "{v}");
        let back: Uploaded = serde_json::from_value(v).unwrap();
        assert_eq!(back, answer);
    }

    #[test]
    fn a_service_removed_here_answers_its_spec_alone() {
        let scaled = ServiceAnswer::Spec(Box::new(SpecAnswer {
            name: "hello".into(),
            spec: spec(),
            denied_imports: None,
            not_serving_yet: vec![],
        }));
        let v = serde_json::to_value(&scaled).unwrap();
        assert_eq!(v.as_object().unwrap().keys().collect::<Vec<_>>(), ["name", "spec"], "{v}");
        let back: ServiceAnswer = serde_json::from_value(v).unwrap();
        assert_eq!((back.detail(), back.spec().generation), (None, 3));
        let deployed = ServiceAnswer::Spec(Box::new(SpecAnswer {
            denied_imports: Some(vec![]),
            not_serving_yet: vec!["n2".into()],
            ..match scaled {
                ServiceAnswer::Spec(s) => *s,
                ServiceAnswer::Detail(_) => unreachable!(),
            }
        }));
        let v = serde_json::to_value(&deployed).unwrap();
        assert_eq!((&v["denied_imports"], &v["not_serving_yet"]), (&json!([]), &json!(["n2"])), "{v}");
    }
}
