//! Service specs: what the admin API accepts and what is stored, and every check of a
//! request that needs nothing but the request ([`check_request`]), so the admin API's
//! JSON handling can be fuzzed apart from the node.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// An interface name without its version (`acme:text/tokenize@1.0.0` → `acme:text/tokenize`).
pub fn key_of(name: &str) -> &str {
    name.split_once('@').map_or(name, |(k, _)| k)
}

/// Whether `name` has the `namespace:package/interface` shape a service can export.
pub fn is_interface_name(name: &str) -> bool {
    let key = key_of(name);
    matches!(key.split_once(':'), Some((ns, rest)) if !ns.is_empty() && rest.contains('/'))
}

/// Most instances one service may ask for on one node.
pub const MAX_INSTANCES: u32 = 1000;

/// Per-service limits. Every field has a default, and `GET /v1/services/{name}` shows
/// them all, so what a service may do is never implicit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest linear memory of one instance, in MiB. Growth past it fails inside the guest.
    pub memory_mib: u32,
    /// Wall-clock deadline of one request, in milliseconds (then 504).
    pub timeout_ms: u64,
    /// Optional fuel budget per request (wasm instructions, roughly); needs a node started
    /// with `--fuel`.
    pub fuel: Option<u64>,
    /// Largest request body, in bytes (then 413).
    pub max_request_bytes: usize,
    /// Largest response body the guest may return, in bytes (then 500 response-too-large).
    pub max_response_bytes: usize,
    /// Largest kv key, in bytes.
    pub max_kv_key_bytes: usize,
    /// Largest kv value, in bytes.
    pub max_kv_value_bytes: usize,
    /// Most calls in one `invoke.call-all`.
    pub max_fanout: usize,
    /// Deepest chain of `invoke` calls starting at this service's requests.
    pub max_call_depth: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mib: 64,
            timeout_ms: 5000,
            fuel: None,
            max_request_bytes: 8 << 20,
            max_response_bytes: 8 << 20,
            max_kv_key_bytes: 1024,
            max_kv_value_bytes: 1 << 20,
            max_fanout: 64,
            max_call_depth: 8,
        }
    }
}

/// Capabilities beyond computing and the platform imports. Everything is denied unless
/// listed here: an interface a component imports without the grant for it is linked to
/// an implementation that denies at use (no preopened directories; sockets, name lookups
/// and outbound HTTP fail with the standard WASI error codes), or, with the spec's
/// `strict_imports`, the deploy is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Grants {
    /// Environment variables the guest sees (it sees none otherwise).
    pub env: BTreeMap<String, String>,
    /// `ip:port` addresses the guest may open TCP connections to; allows `wasi:sockets`.
    pub sockets: Vec<String>,
    /// Read-only directories: guest path → host directory; allows `wasi:filesystem`.
    pub files: BTreeMap<String, String>,
    /// `host:port`s the guest may call over HTTP or HTTPS; allows importing
    /// `wasi:http/outgoing-handler`. Requests elsewhere fail inside the guest with
    /// `HTTP-request-denied`.
    pub outbound_http: Vec<String>,
}

impl Grants {
    /// The grant that allows importing `name`, if it needs one.
    pub fn needed_for(import: &str) -> Option<&'static str> {
        if import.starts_with("wasi:sockets/") {
            Some("sockets")
        } else if import.starts_with("wasi:filesystem/") {
            Some("files")
        } else if import.starts_with("wasi:http/outgoing-handler") || import.starts_with("wasi:http/client@") {
            Some("outbound_http")
        } else {
            None
        }
    }

    /// The imports among `imports` this grant set leaves denied, each with the grant that
    /// would allow it.
    pub fn denied(&self, imports: &[String]) -> Vec<DeniedImport> {
        imports
            .iter()
            .filter_map(|i| {
                let grant = Self::needed_for(i)?;
                (!self.has(grant)).then(|| DeniedImport { import: i.clone(), grant: format!("grants.{grant}") })
            })
            .collect()
    }

    pub fn has(&self, grant: &str) -> bool {
        match grant {
            "sockets" => !self.sockets.is_empty(),
            "files" => !self.files.is_empty(),
            "outbound_http" => !self.outbound_http.is_empty(),
            _ => false,
        }
    }

    /// Check every entry; name the bad one.
    pub fn validate(&self) -> Result<(), String> {
        for k in self.env.keys() {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(format!("grants.env key {k:?} is not a valid variable name"));
            }
        }
        for a in &self.sockets {
            if a.parse::<std::net::SocketAddr>().is_err() {
                return Err(format!("grants.sockets entry {a:?} is not an ip:port address (e.g. \"127.0.0.1:5432\")"));
            }
        }
        for (guest, host) in &self.files {
            if !guest.starts_with('/') {
                return Err(format!("grants.files guest path {guest:?} must be absolute"));
            }
            let p = std::path::Path::new(host);
            if !p.is_absolute() || !p.is_dir() {
                return Err(format!("grants.files host path {host:?} must be an existing absolute directory"));
            }
        }
        for h in &self.outbound_http {
            let ok = h.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !ok {
                return Err(format!("grants.outbound_http entry {h:?} is not host:port"));
            }
        }
        Ok(())
    }
}

/// An interface a component imports that its service is not granted: linked, but every
/// use of it fails inside the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeniedImport {
    /// The import as the component names it, e.g. `wasi:filesystem/preopens@0.2.6`.
    pub import: String,
    /// The spec field that would allow it, e.g. `grants.files`.
    pub grant: String,
}

/// The stored, complete spec of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub name: String,
    /// Digest of the component (`sha256:<hex>`).
    pub component: String,
    /// Concurrent executions on the node; 0 means stopped.
    pub instances: u32,
    /// Requests that may wait for a slot; `None` means 4 x instances.
    #[serde(default)]
    pub max_queue: Option<u32>,
    /// How long a request may wait for a slot before it gets 503.
    pub queue_timeout_ms: u64,
    pub limits: Limits,
    #[serde(default)]
    pub grants: Grants,
    /// Refuse the deploy when the component imports an interface it has no grant for
    /// (default: link it to an implementation that denies at use).
    #[serde(default, skip_serializing_if = "is_false")]
    pub strict_imports: bool,
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Typed imports bound to the service that provides them: interface name (with or
    /// without version) to service name. Unbound imports bind to the only provider.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub bindings: BTreeMap<String, String>,
    /// Serve the chain of typed imports as one fused component (true) or as separate
    /// instances linked through the host (false).
    #[serde(default = "yes")]
    pub fuse: bool,
    /// In a cluster: the nodes this service may run on (empty: any live node).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement: Vec<String>,
    /// Instance count set by the leader from measured load, within bounds; `instances`
    /// is then the count the autoscaler last chose (`None`: `instances` is fixed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<Autoscale>,
    /// Opt-in instance reuse (`None`: a fresh instance per request, the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reuse: Option<Reuse>,
    /// Calls to this service may run more than once (at-least-once instead of
    /// at-most-once): a durable barrier's call to it that may have run but whose answer was
    /// lost (a forward that failed after sending: 502) or that it answered 502 or 503 is
    /// tried again while the barrier's retry window lasts. Default: such a call runs once
    /// and the continuation gets that answer.
    #[serde(default, skip_serializing_if = "is_false")]
    pub idempotent: bool,
    /// Bumped on every change.
    pub generation: u64,
    /// Unix time of the last change, in milliseconds.
    pub updated_at_ms: u64,
}

fn yes() -> bool {
    true
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The bounds and goal of an autoscaled service (`"autoscale": {...}` in its spec).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Autoscale {
    /// Fewest instances; 0 lets an idle service scale to zero (its next request waits
    /// for an instance).
    #[serde(default)]
    pub min: u32,
    /// Most instances across the cluster.
    pub max: u32,
    /// Wanted share of the instances busy (0.05-1.0): the count is chosen so that busy
    /// (running + queued) / instances comes near it.
    #[serde(default = "default_target_busy")]
    pub target_busy: f64,
    /// Seconds the load must stay low before the count goes down (and idle before it
    /// goes to zero).
    #[serde(default = "default_cooldown")]
    pub cooldown_s: u32,
}

/// Instance reuse (`"reuse": {"requests": n}` in a spec): an instance of the service
/// serves up to `requests` requests one after another before it is dropped, instead of
/// one. Host-side state (context, trace, kv attribution, limits) is the request's own each
/// time; the guest's own memory (statics, heap) carries over, which is the isolation given
/// up for speed (docs/SECURITY.md). Nanoservices and wasi:http 0.2 components.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reuse {
    /// Requests an instance serves before it is recycled (1 is the same as no reuse).
    pub requests: u32,
}

/// The most requests one instance may serve under [`Reuse`].
pub const MAX_REUSE_REQUESTS: u32 = 1_000_000;

impl Reuse {
    /// Check the count; name the bad value and the range.
    pub fn validate(&self) -> Result<(), String> {
        if (1..=MAX_REUSE_REQUESTS).contains(&self.requests) {
            Ok(())
        } else {
            Err(format!(
                "reuse.requests must be between 1 and {MAX_REUSE_REQUESTS}, got {}; omit \"reuse\" for a fresh instance per request",
                self.requests
            ))
        }
    }
}

fn default_target_busy() -> f64 {
    0.6
}

fn default_cooldown() -> u32 {
    30
}

impl Autoscale {
    /// Check the bounds; name the bad one and the fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.max == 0 || self.max > MAX_INSTANCES {
            return Err(format!("autoscale.max must be between 1 and {MAX_INSTANCES}, got {}", self.max));
        }
        if self.min > self.max {
            return Err(format!(
                "autoscale.min ({}) is above autoscale.max ({}); make min at most max",
                self.min, self.max
            ));
        }
        if !(0.05..=1.0).contains(&self.target_busy) {
            return Err(format!("autoscale.target_busy must be between 0.05 and 1.0, got {}", self.target_busy));
        }
        if self.cooldown_s > 86_400 {
            return Err(format!("autoscale.cooldown_s must be at most 86400, got {}", self.cooldown_s));
        }
        Ok(())
    }

    /// The count a new deploy starts at: `min`, but at least one, so a service serves
    /// at once.
    pub fn initial(&self) -> u32 {
        self.min.max(1).min(self.max)
    }

    /// `n` within the bounds.
    pub fn clamp(&self, n: u32) -> u32 {
        n.clamp(self.min, self.max)
    }
}

impl ServiceSpec {
    /// The service bound to a typed import, if the spec names one.
    pub fn binding_for(&self, import: &str) -> Option<&str> {
        let key = key_of(import);
        self.bindings.get(import).or_else(|| self.bindings.get(key)).map(String::as_str)
    }

    /// Stopped by its owner: no instances and not autoscaled (an autoscaled service at
    /// zero is idle, and its next request wakes it).
    pub fn stopped(&self) -> bool {
        self.instances == 0 && self.autoscale.is_none()
    }

    /// The queue bound in force: the explicit one, or 4 x instances.
    pub fn effective_queue(&self) -> u32 {
        self.queue_for(self.instances)
    }

    /// The queue of a node that runs `slots` of the instances (default 4 per slot; for an
    /// autoscaled service 4 per instance it may grow to, so a burst waits while the
    /// count goes up instead of being turned away).
    pub fn queue_for(&self, slots: u32) -> u32 {
        self.max_queue.unwrap_or_else(|| match &self.autoscale {
            Some(a) if slots > 0 => slots.max(a.max).saturating_mul(4),
            _ => slots.saturating_mul(4),
        })
    }
}

/// The body of `PUT /v1/services/{name}`. Unknown fields are refused so typos are caught.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceRequest {
    pub component: String,
    #[serde(default)]
    pub instances: Option<serde_json::Value>,
    #[serde(default)]
    pub max_queue: Option<serde_json::Value>,
    #[serde(default)]
    pub queue_timeout_ms: Option<u64>,
    #[serde(default)]
    pub limits: Option<Limits>,
    #[serde(default)]
    pub grants: Option<Grants>,
    /// Refuse a component that imports an interface without its grant (see
    /// [`ServiceSpec::strict_imports`]).
    #[serde(default)]
    pub strict_imports: bool,
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    #[serde(default)]
    pub bindings: BTreeMap<String, String>,
    #[serde(default)]
    pub fuse: Option<bool>,
    #[serde(default)]
    pub placement: Vec<String>,
    /// Let the leader choose the instance count from load (exclusive with `instances`).
    #[serde(default)]
    pub autoscale: Option<Autoscale>,
    /// Let an instance serve several requests in sequence (see [`Reuse`]).
    #[serde(default)]
    pub reuse: Option<Reuse>,
    /// Calls to it may be repeated (see [`ServiceSpec::idempotent`]).
    #[serde(default)]
    pub idempotent: bool,
}

/// Check the shape of `bindings` (whether they match the component is checked later).
pub fn validate_bindings(bindings: &BTreeMap<String, String>) -> Result<(), String> {
    for (iface, service) in bindings {
        if !is_interface_name(iface) {
            return Err(format!(
                "bindings key {iface:?} is not an interface name; write it as namespace:package/interface, e.g. \"acme:text/tokenize\""
            ));
        }
        validate_name(service).map_err(|e| format!("bindings[{iface:?}]: {e}"))?;
    }
    Ok(())
}

/// The body of `POST /v1/services/{name}/scale`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleRequest {
    pub instances: serde_json::Value,
    /// A new explicit queue bound; omitted keeps the current setting.
    #[serde(default)]
    pub max_queue: Option<serde_json::Value>,
}

pub const DEFAULT_QUEUE_TIMEOUT_MS: u64 = 10_000;

/// Service names are DNS labels: they appear in URLs and key namespaces.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "service name {name:?} is not valid: use 1-63 lowercase letters, digits and '-', not starting or ending with '-'"
        ))
    }
}

/// Parse an instance count from JSON, naming the problem if it is not 0..=MAX_INSTANCES.
pub fn parse_instances(v: &serde_json::Value) -> Result<u32, String> {
    match v.as_i64() {
        Some(n) if (0..=MAX_INSTANCES as i64).contains(&n) => Ok(n as u32),
        Some(n) => Err(format!("instances must be between 0 and {MAX_INSTANCES}, got {n}")),
        None => Err(format!("instances must be a whole number between 0 and {MAX_INSTANCES}, got {v}")),
    }
}

pub fn parse_queue(v: &serde_json::Value) -> Result<u32, String> {
    match v.as_i64() {
        Some(n) if (0..=100_000).contains(&n) => Ok(n as u32),
        _ => Err(format!("max_queue must be a whole number between 0 and 100000, got {v}")),
    }
}

pub fn validate_limits(l: &Limits) -> Result<(), String> {
    let check = |name: &str, v: u64, lo: u64, hi: u64| {
        if (lo..=hi).contains(&v) {
            Ok(())
        } else {
            Err(format!("limits.{name} must be between {lo} and {hi}, got {v}"))
        }
    };
    check("memory_mib", u64::from(l.memory_mib), 1, 4096)?;
    check("timeout_ms", l.timeout_ms, 1, 3_600_000)?;
    if let Some(f) = l.fuel {
        check("fuel", f, 1, u64::MAX >> 1)?;
    }
    check("max_request_bytes", l.max_request_bytes as u64, 0, 1 << 30)?;
    check("max_response_bytes", l.max_response_bytes as u64, 0, 1 << 30)?;
    check("max_kv_key_bytes", l.max_kv_key_bytes as u64, 1, 64 << 10)?;
    check("max_kv_value_bytes", l.max_kv_value_bytes as u64, 0, 64 << 20)?;
    check("max_fanout", l.max_fanout as u64, 1, 1024)?;
    check("max_call_depth", u64::from(l.max_call_depth), 1, 64)?;
    Ok(())
}

pub fn validate_digest(d: &str) -> Result<(), String> {
    let hex = d.strip_prefix("sha256:").unwrap_or("");
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(format!("component {d:?} is not a digest; use the \"sha256:…\" value PUT /v1/components returned"))
    }
}

/// What a `PUT /v1/services/{name}` request asks for, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub instances: u32,
    pub max_queue: Option<u32>,
    pub limits: Limits,
    pub grants: Grants,
}

/// Every check of a service request that needs only the request: the name, the digest,
/// counts, limits, grants, bindings and placement. The error names what is wrong.
pub fn check_request(name: &str, req: &ServiceRequest) -> Result<Checked, String> {
    validate_name(name)?;
    validate_digest(&req.component)?;
    let instances = match (&req.instances, &req.autoscale) {
        (Some(_), Some(_)) => {
            return Err(
                "instances and autoscale are exclusive: give a fixed \"instances\" count or \"autoscale\" bounds, not both"
                    .into(),
            );
        }
        (Some(v), None) => parse_instances(v)?,
        (None, Some(a)) => {
            a.validate()?;
            a.initial()
        }
        (None, None) => 1,
    };
    let max_queue = req.max_queue.as_ref().map(parse_queue).transpose()?;
    let limits = req.limits.unwrap_or_default();
    validate_limits(&limits)?;
    let grants = req.grants.clone().unwrap_or_default();
    grants.validate()?;
    validate_bindings(&req.bindings)?;
    if let Some(r) = &req.reuse {
        r.validate()?;
    }
    for n in &req.placement {
        validate_name(n).map_err(|e| format!("placement: node {e}"))?;
    }
    Ok(Checked { instances, max_queue, limits, grants })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names() {
        assert!(validate_name("hello").is_ok());
        assert!(validate_name("chain-1").is_ok());
        for bad in ["", "Hello", "a/b", "-a", "a-", "a b", "../x", &"x".repeat(64)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn instances() {
        assert_eq!(parse_instances(&json!(0)), Ok(0));
        assert_eq!(parse_instances(&json!(8)), Ok(8));
        assert!(parse_instances(&json!(-1)).unwrap_err().contains("got -1"));
        assert!(parse_instances(&json!(1_000_000)).is_err());
        assert!(parse_instances(&json!("2")).is_err());
        assert!(parse_instances(&json!(1.5)).is_err());
    }

    #[test]
    fn limits_have_defaults_and_bounds() {
        let l: Limits = serde_json::from_value(json!({ "memory_mib": 16 })).unwrap();
        assert_eq!(l.timeout_ms, 5000);
        assert!(validate_limits(&l).is_ok());
        let bad = Limits { max_fanout: 0, ..Limits::default() };
        assert!(validate_limits(&bad).unwrap_err().contains("max_fanout"));
        assert!(serde_json::from_value::<Limits>(json!({ "memory": 1 })).is_err());
    }

    #[test]
    fn grants() {
        assert_eq!(Grants::needed_for("wasi:sockets/tcp@0.2.6"), Some("sockets"));
        assert_eq!(Grants::needed_for("wasi:cli/environment@0.2.6"), None);
        let g = Grants { sockets: vec!["localhost:80".into()], ..Default::default() };
        assert!(g.validate().unwrap_err().contains("localhost:80"));
        let g = Grants { files: [("/d".to_string(), "relative".to_string())].into(), ..Default::default() };
        assert!(g.validate().is_err());
        assert!(Grants { sockets: vec!["127.0.0.1:80".into()], ..Default::default() }.validate().is_ok());
    }

    #[test]
    fn denied_imports_name_the_grant_that_allows_them() {
        let imports: Vec<String> =
            ["wasi:cli/stdout@0.2.6", "wasi:filesystem/preopens@0.2.6", "wasi:sockets/tcp@0.2.6"]
                .map(String::from)
                .into();
        let denied = Grants::default().denied(&imports);
        let names: Vec<(&str, &str)> = denied.iter().map(|d| (d.import.as_str(), d.grant.as_str())).collect();
        assert_eq!(
            names,
            [("wasi:filesystem/preopens@0.2.6", "grants.files"), ("wasi:sockets/tcp@0.2.6", "grants.sockets")]
        );
        let g = Grants { sockets: vec!["127.0.0.1:80".into()], ..Default::default() };
        assert_eq!(g.denied(&imports).len(), 1, "the granted one is not denied");
        // WASI 0.3's outbound HTTP interface is `wasi:http/client`.
        let p3: Vec<String> = ["wasi:http/client@0.3.0", "wasi:http/types@0.3.0"].map(String::from).into();
        let denied = Grants::default().denied(&p3);
        assert_eq!(denied.len(), 1);
        assert_eq!(
            (denied[0].import.as_str(), denied[0].grant.as_str()),
            ("wasi:http/client@0.3.0", "grants.outbound_http")
        );
    }

    #[test]
    fn strict_imports_is_stored_only_when_set() {
        let d = format!("sha256:{}", "a".repeat(64));
        let req: ServiceRequest = serde_json::from_value(json!({ "component": d, "strict_imports": true })).unwrap();
        assert!(req.strict_imports);
        assert!(serde_json::from_value::<ServiceRequest>(json!({ "component": d, "strict_imports": 1 })).is_err());
    }

    #[test]
    fn autoscale_is_checked_and_exclusive() {
        let req = |v: serde_json::Value| serde_json::from_value::<ServiceRequest>(v).unwrap();
        let d = format!("sha256:{}", "0".repeat(64));
        let ok = check_request("a", &req(json!({"component": d, "autoscale": {"min": 0, "max": 8}}))).unwrap();
        assert_eq!(ok.instances, 1, "an autoscaled service starts at max(min, 1)");
        let both = check_request("a", &req(json!({"component": d, "instances": 2, "autoscale": {"max": 8}})));
        assert!(both.unwrap_err().contains("exclusive"));
        let inverted = check_request("a", &req(json!({"component": d, "autoscale": {"min": 9, "max": 8}})));
        assert!(inverted.unwrap_err().contains("autoscale.min (9) is above autoscale.max (8)"));
        let busy = check_request("a", &req(json!({"component": d, "autoscale": {"max": 8, "target_busy": 2.0}})));
        assert!(busy.unwrap_err().contains("autoscale.target_busy"));
        let zero = check_request("a", &req(json!({"component": d, "autoscale": {"max": 0}})));
        assert!(zero.unwrap_err().contains("autoscale.max must be between 1"));
        assert!(
            serde_json::from_value::<ServiceRequest>(json!({"component": d, "autoscale": {"max": 2, "mx": 1}}))
                .is_err()
        );
        let a = Autoscale { min: 2, max: 5, target_busy: 0.5, cooldown_s: 1 };
        assert_eq!((a.clamp(0), a.clamp(3), a.clamp(9), a.initial()), (2, 3, 5, 2));
    }

    #[test]
    fn reuse_is_checked() {
        let d = format!("sha256:{}", "0".repeat(64));
        let req = |v: serde_json::Value| serde_json::from_value::<ServiceRequest>(v).unwrap();
        assert!(check_request("a", &req(json!({"component": d, "reuse": {"requests": 100}}))).is_ok());
        let zero = check_request("a", &req(json!({"component": d, "reuse": {"requests": 0}}))).unwrap_err();
        assert!(zero.contains("reuse.requests must be between 1 and 1000000, got 0"), "{zero}");
        assert!(serde_json::from_value::<ServiceRequest>(json!({"component": d, "reuse": {"request": 2}})).is_err());
    }

    #[test]
    fn unknown_fields_are_named() {
        let err = serde_json::from_str::<ServiceRequest>(r#"{"component":"x","instnces":2}"#).unwrap_err();
        assert!(err.to_string().contains("instnces"), "{err}");
    }
}
