//! The admin API, `/v1/...` JSON over HTTP with a bearer token (DESIGN.md section 5).
//!
//! `GET /v1/health` and `GET /metrics` are open (load balancers and scrapers); everything
//! else needs `Authorization: Bearer <token>` with a token of the scope the route needs
//! ([`crate::auth`]: `read`, `deploy` or `admin`). Errors are
//! `{"error":{"code","message","request_id"}}` with the matching status.

mod experiments;
mod traces;

use std::sync::Arc;

use http::{Method, StatusCode};
use hyper::body::Incoming;
use serde_json::json;
use tracing::Instrument;

use crate::auth::Scope;
use crate::http::{self as h, Body, BodyError};
use crate::metrics;
use crate::node::Node;
use crate::services::spec::{self, ScaleRequest, ServiceRequest};
use crate::services::{AdminError, Deployed, Service, Serving};

/// The refusal of a request whose token may not use the route (401
/// without a token of the node, 403 `missing-scope` naming the scope the route needs).
fn authorize(node: &Node, req: &http::Request<Incoming>, segments: &[&str], rid: &str) -> Option<http::Response<Body>> {
    let need = crate::auth::needed(req.method(), segments);
    match node.tokens().scope_of(req.headers()) {
        None => {
            let msg = "missing or wrong bearer token; pass --token or set NANOGRID_TOKEN";
            Some(h::close_connection(err(StatusCode::UNAUTHORIZED, "unauthorized", msg, rid)))
        }
        Some(have) if have < need => {
            let msg = format!(
                "this token has the {} scope; {} {} needs the {} scope (or the admin token)",
                have.as_str(),
                req.method(),
                req.uri().path(),
                need.as_str()
            );
            Some(err(StatusCode::FORBIDDEN, "missing-scope", msg, rid))
        }
        Some(_) => None,
    }
}

pub async fn handle(node: Arc<Node>, req: http::Request<Incoming>) -> http::Response<Body> {
    let request_id = h::incoming_request_id(req.headers()).unwrap_or_else(|| node.registry.new_request_id());
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let span = h::request_span("admin", &request_id, &method, &path);
    async move {
        let resp = route(&node, req, &request_id, &path).await;
        // Admin calls are few and change what runs: always log them.
        tracing::info!(request_id, %method, path, status = resp.status().as_u16(), "admin request");
        resp
    }
    .instrument(span)
    .await
}

fn err(status: StatusCode, code: &str, message: impl AsRef<str>, rid: &str) -> http::Response<Body> {
    h::error(status, code, message.as_ref(), rid)
}

fn admin_error(e: AdminError, rid: &str) -> http::Response<Body> {
    use crate::runtime::InspectError as I;
    match &e {
        AdminError::BadRequest(m) => err(StatusCode::BAD_REQUEST, "bad-request", m, rid),
        AdminError::NotFound(m) => err(StatusCode::NOT_FOUND, "not-found", m, rid),
        AdminError::Unavailable(m) => {
            let mut r = err(StatusCode::SERVICE_UNAVAILABLE, "no-quorum", m, rid);
            r.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("2"));
            r
        }
        AdminError::Ungranted(m) => err(StatusCode::UNPROCESSABLE_ENTITY, "ungranted-import", m, rid),
        AdminError::Inspect(i) => {
            let (status, code) = match i {
                I::NotWasm(_) => (StatusCode::BAD_REQUEST, "not-wasm"),
                I::CoreModule => (StatusCode::BAD_REQUEST, "core-module"),
                I::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid-component"),
                I::NoHandler(_) => (StatusCode::UNPROCESSABLE_ENTITY, "no-handler"),
                I::UnsatisfiedImports(_) | I::LinkFailed(_) => {
                    (StatusCode::UNPROCESSABLE_ENTITY, "unsatisfied-imports")
                }
                I::Typed(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unsupported-interface"),
            };
            err(status, code, i.to_string(), rid)
        }
        AdminError::Resolve(r) => {
            use crate::services::ResolveError as R;
            let code = match r {
                R::Ambiguous { .. } => "ambiguous-binding",
                R::NotExported { .. } | R::UnknownBinding { .. } => "bad-binding",
                R::Mismatch { .. } => "interface-mismatch",
                R::Cycle(_) => "import-cycle",
                R::ProviderNeedsGrants { .. } => "provider-has-grants",
            };
            err(StatusCode::UNPROCESSABLE_ENTITY, code, r.to_string(), rid)
        }
        AdminError::Conflict(m) => err(StatusCode::CONFLICT, "in-use", m, rid),
        AdminError::Autoscaled(m) => err(StatusCode::CONFLICT, "autoscaled", m, rid),
        AdminError::Internal(m) => {
            tracing::error!(error = %m, "admin operation failed");
            err(StatusCode::INTERNAL_SERVER_ERROR, "internal", m, rid)
        }
    }
}

async fn json_body<T: serde::de::DeserializeOwned>(
    req: http::Request<Incoming>,
    rid: &str,
) -> Result<T, http::Response<Body>> {
    let bytes = match h::read_body_paced(req.into_body(), 1 << 20, crate::pace::Pace::default()).await {
        Ok(b) => b,
        Err(BodyError::TooLarge(l)) => {
            return Err(h::close_connection(err(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                format!("JSON bodies are limited to {l} bytes"),
                rid,
            )));
        }
        Err(e) => return Err(h::body_error(e, rid)),
    };
    serde_json::from_slice(&bytes)
        .map_err(|e| err(StatusCode::BAD_REQUEST, "bad-json", format!("the body is not the expected JSON: {e}"), rid))
}

async fn route(node: &Arc<Node>, req: http::Request<Incoming>, rid: &str, path: &str) -> http::Response<Body> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method().clone();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["v1", "health"]) => {
            // A dormant node serves nothing: load balancers should take it out.
            let dormant = node.mode() == crate::control::Mode::Dormant;
            let (status, word) =
                if dormant { (StatusCode::SERVICE_UNAVAILABLE, "dormant") } else { (StatusCode::OK, "ok") };
            return h::json(status, &json!({ "status": word, "node": node.config.node_id, "mode": node.mode() }), rid);
        }
        // Liveness: the process answers, whatever its mode (a dormant node is alive and
        // must not be restarted for waiting on its peers).
        (&Method::GET, ["v1", "health", "live"]) => {
            return h::json(
                StatusCode::OK,
                &json!({ "status": "alive", "node": node.config.node_id, "mode": node.mode() }),
                rid,
            );
        }
        // The web console's page and assets are open: it asks for the token itself and
        // sends it only in the Authorization header of its API calls.
        (&Method::GET | &Method::HEAD, ["ui", ..]) => {
            h::drain(req.into_body()).await;
            return crate::console::serve(path, rid);
        }
        (&Method::GET, ["metrics"]) => {
            let mut resp = http::Response::new(h::full(metrics::render(node)));
            resp.headers_mut()
                .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; version=0.0.4"));
            return resp;
        }
        _ => {}
    }
    if let Some(refused) = authorize(node, &req, &segments, rid) {
        h::drain(req.into_body()).await;
        return refused;
    }
    let scope = node.tokens().scope_of(req.headers()).unwrap_or(Scope::Read);
    if segments.starts_with(&["v1", "experiments"]) {
        return experiments::route(node, req, &segments, rid).await;
    }
    if segments == ["v1", "tracing"] {
        return traces::settings(node, req, rid).await;
    }
    if matches!(segments.as_slice(), ["v1", "traces"] | ["v1", "traces", _]) {
        return traces::route(node, req, &segments, rid).await;
    }
    let registry = &node.registry;
    match (&method, segments.as_slice()) {
        (&Method::PUT | &Method::POST, ["v1", "components"]) => {
            let bytes = match h::read_body_paced(req.into_body(), node.config.max_upload_bytes, node.config.pace).await
            {
                Ok(b) => b,
                Err(BodyError::TooLarge(l)) => {
                    let msg = format!("component uploads are limited to {l} bytes");
                    return h::close_connection(err(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large", &msg, rid));
                }
                Err(e) => return h::body_error(e, rid),
            };
            match registry.put_component(bytes).await {
                Ok(up) => h::json(if up.created { StatusCode::CREATED } else { StatusCode::OK }, &up, rid),
                Err(e) => admin_error(e, rid),
            }
        }
        (&Method::GET, ["v1", "whoami"]) => {
            h::json(StatusCode::OK, &json!({ "node": node.config.node_id, "scope": scope.as_str() }), rid)
        }
        (&Method::GET, ["v1", "services"]) => {
            let list: Vec<_> = registry.list().iter().map(|s| summary(node, s)).collect();
            h::json(StatusCode::OK, &json!({ "services": list }), rid)
        }
        (&Method::GET, ["v1", "services", name]) => match registry.get(name) {
            Some(s) => h::json(StatusCode::OK, &detail(node, &s, scope), rid),
            None => err(StatusCode::NOT_FOUND, "not-found", format!("no service named {name:?} is deployed"), rid),
        },
        (&Method::PUT, ["v1", "services", name]) => {
            let name = name.to_string();
            let body: ServiceRequest = match json_body(req, rid).await {
                Ok(b) => b,
                Err(resp) => return resp,
            };
            put_service(node, &name, body, scope, rid).await
        }
        (&Method::POST, ["v1", "services", name, "scale"]) => {
            let name = name.to_string();
            let body: ScaleRequest = match json_body(req, rid).await {
                Ok(b) => b,
                Err(resp) => return resp,
            };
            let instances = match spec::parse_instances(&body.instances) {
                Ok(n) => n,
                Err(m) => return err(StatusCode::BAD_REQUEST, "bad-request", m, rid),
            };
            let max_queue = match body.max_queue.as_ref().map(spec::parse_queue).transpose() {
                Ok(q) => q,
                Err(m) => return err(StatusCode::BAD_REQUEST, "bad-request", m, rid),
            };
            let scaled = match &node.cluster {
                Some(c) => c.scale(&name, instances, max_queue).await,
                None => registry.scale(&name, instances, max_queue).await,
            };
            match scaled {
                Ok(spec) => h::json(StatusCode::OK, &detail_or_spec(node, &spec), rid),
                Err(e) => admin_error(e, rid),
            }
        }
        (&Method::DELETE, ["v1", "services", name]) => match match &node.cluster {
            Some(c) => c.delete(name).await,
            None => registry.delete(name).await,
        } {
            Ok(spec) => h::json(StatusCode::OK, &json!({ "deleted": spec.name, "spec": spec }), rid),
            Err(e) => admin_error(e, rid),
        },
        (&Method::GET, ["v1", "cluster"]) => {
            let body = match &node.cluster {
                Some(c) => c.status(),
                None => {
                    let services: Vec<String> = registry.list().iter().map(|s| s.name.to_string()).collect();
                    json!({
                        "node": node.config.node_id,
                        "leader": node.config.node_id,
                        "term": 0,
                        "mode": "single",
                        "nodes": [{
                            "id": node.config.node_id,
                            "mode": "single",
                            "live": true,
                            "role": "single",
                            "addr": node.ingress_addr().to_string(),
                            "admin_addr": node.admin_addr().to_string(),
                            "services": services,
                        }],
                    })
                }
            };
            h::json(StatusCode::OK, &body, rid)
        }
        (&Method::GET, ["v1", "graph"]) => {
            // `?scope=node` keeps to this node; in a cluster the default adds up every live node.
            let node_only = req.uri().query().is_some_and(|q| q.split('&').any(|kv| kv == "scope=node"));
            let (edges, nodes) = match &node.cluster {
                Some(c) if !node_only => c.graph().await,
                _ => (registry.calls.report(), vec![node.config.node_id.clone()]),
            };
            // On the leader: calls per second per calling node, what co-location acts on.
            let demand = node.cluster.as_ref().and_then(|c| c.demand());
            let body = json!({ "node": node.config.node_id, "nodes": nodes, "edges": edges, "demand": demand });
            h::json(StatusCode::OK, &body, rid)
        }
        (&Method::GET, ["v1", "events"]) => {
            let q = |name: &str| {
                req.uri().query().and_then(|q| {
                    q.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse::<u64>().ok())
                })
            };
            let (after, limit) = (q("after").unwrap_or(0), q("limit").unwrap_or(100).clamp(1, 1000) as usize);
            let events = node.cluster.as_ref().map(|c| c.events(after, limit)).unwrap_or_default();
            h::json(StatusCode::OK, &json!({ "node": node.config.node_id, "events": events }), rid)
        }
        (&Method::GET, ["v1", "autoscale"]) => match node.cluster.as_ref().map(|c| c.autoscale_view()) {
            Some(Some(v)) => h::json(StatusCode::OK, &v, rid),
            Some(None) => err(
                StatusCode::CONFLICT,
                "not-leader",
                "the autoscaler runs on the leader; ask the node GET /v1/cluster names as leader",
                rid,
            ),
            None => err(
                StatusCode::CONFLICT,
                "not-clustered",
                "autoscaling runs in a cluster (start with --peer-listen)",
                rid,
            ),
        },
        (&Method::GET, ["v1", "barriers"]) => match registry.pending_barriers(1000).await {
            Ok(ids) => {
                h::json(StatusCode::OK, &json!({ "pending": ids, "driven_here": registry.barriers.active() }), rid)
            }
            Err(e) => {
                err(StatusCode::SERVICE_UNAVAILABLE, "unavailable", format!("barriers could not be listed: {e}"), rid)
            }
        },
        (&Method::GET, ["v1", "barriers", "stats"]) => {
            let edges = match &node.cluster {
                Some(c) => c.graph().await.0,
                None => registry.calls.report(),
            };
            let stats = crate::services::calls::barrier_stats(&edges);
            h::json(StatusCode::OK, &json!({ "node": node.config.node_id, "callees": stats }), rid)
        }
        (&Method::GET, ["v1", "barriers", id]) => match registry.barrier_report(id).await {
            Ok(Some(v)) => h::json(StatusCode::OK, &v, rid),
            Ok(None) => err(
                StatusCode::NOT_FOUND,
                "not-found",
                format!("no barrier {id:?} (ended barriers are kept for an hour)"),
                rid,
            ),
            Err(e) => err(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("barrier {id:?} could not be read: {e}"),
                rid,
            ),
        },
        (&Method::GET, ["v1", "grid"]) => {
            let body = match &node.cluster {
                Some(c) => c.grid_report().await,
                None => {
                    let replicas = registry.grid().replicas();
                    let me = node.config.node_id.clone();
                    let statuses = std::collections::BTreeMap::from([(me.clone(), replicas.status().await)]);
                    crate::control::grid::report(&replicas.table(), &statuses, &[me])
                }
            };
            h::json(StatusCode::OK, &body, rid)
        }
        (&Method::DELETE, ["v1", "cluster", "nodes", id]) => match &node.cluster {
            Some(c) => match c.remove_node(id).await {
                Ok(()) => h::json(StatusCode::OK, &json!({ "removed": id }), rid),
                Err(e) => admin_error(e, rid),
            },
            None => err(
                StatusCode::CONFLICT,
                "not-clustered",
                "this node runs in single mode; there is no node to remove",
                rid,
            ),
        },
        (&Method::POST, ["v1", "debug", "gossip"]) => {
            let Some(c) = node.cluster.as_ref().filter(|c| c.config.fault_injection) else {
                h::drain(req.into_body()).await;
                return err(
                    StatusCode::NOT_FOUND,
                    "no-route",
                    "fault injection is off; start the node with --fault-injection",
                    rid,
                );
            };
            let body: serde_json::Value = match json_body(req, rid).await {
                Ok(b) => b,
                Err(resp) => return resp,
            };
            // `{"fail": true}`: the gossip socket reports a fatal error at its next packet;
            // `{"stall": true}`: its next send hangs for good.
            match body.get("fault").and_then(|v| v.as_str()) {
                Some("fail") => c.faults.set_gossip_fail(),
                Some("stall") => c.faults.set_gossip_stall(),
                _ => return err(StatusCode::BAD_REQUEST, "bad-request", "give {\"fault\": \"fail\" | \"stall\"}", rid),
            }
            tracing::warn!(fault = %body["fault"], "fault injection: gossip fault armed");
            h::json(StatusCode::OK, &json!({ "armed": body["fault"] }), rid)
        }
        (
            _,
            ["v1", "components"]
            | ["v1", "services"]
            | ["v1", "services", _]
            | ["v1", "services", _, "scale"]
            | ["v1", "cluster"]
            | ["v1", "grid"]
            | ["v1", "graph"]
            | ["v1", "barriers"]
            | ["v1", "barriers", _]
            | ["v1", "events"]
            | ["v1", "autoscale"]
            | ["v1", "whoami"],
        ) => {
            h::drain(req.into_body()).await;
            err(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                format!("{method} is not supported on {path}"),
                rid,
            )
        }
        _ => {
            h::drain(req.into_body()).await;
            err(
                StatusCode::NOT_FOUND,
                "no-route",
                format!("no admin route {method} {path}; see the API list in README.md"),
                rid,
            )
        }
    }
}

/// A query string's `key=value` pairs, percent-decoded.
fn query_of(query: Option<&str>) -> std::collections::HashMap<String, String> {
    query
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (percent_decode(k), percent_decode(v)))
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn counters(s: &Service) -> serde_json::Value {
    use crate::services::Stats as S;
    json!({
        "ok": S::get(&s.stats.ok),
        "guest_error": S::get(&s.stats.guest_error),
        "trapped": S::get(&s.stats.trapped),
        "timed_out": S::get(&s.stats.timed_out),
        "rejected": S::get(&s.stats.rejected),
    })
}

/// Whether requests to the service can run now.
fn ready(d: &Deployed) -> bool {
    !d.spec.stopped() && !matches!(d.serving, Serving::Unresolved(_))
}

fn summary(node: &Node, s: &Service) -> serde_json::Value {
    let d = s.current();
    let g = s.gate();
    json!({
        "name": &*s.name,
        "component": d.spec.component,
        "instances": d.spec.instances,
        "running": g.running,
        "queued": g.queued,
        "ready": ready(&d),
        "node": node.config.node_id,
        "autoscale": d.spec.autoscale,
        // Counted on this node since it started (a reader takes differences for rates).
        "requests": counters(s),
        "latency_us": {
            "bounds": crate::services::stats::LATENCY_BOUNDS_US,
            "counts": s.stats.latency_counts(),
        },
    })
}

/// The service's detail after a change, or just the stored spec if a later change (on
/// another node of a cluster) already removed it here.
fn detail_or_spec(node: &Node, spec: &crate::services::ServiceSpec) -> serde_json::Value {
    match node.registry.get(&spec.name) {
        Some(svc) => detail(node, &svc, Scope::Deploy),
        None => json!({ "name": spec.name, "spec": spec }),
    }
}

/// Deploy or replace a service. Grants that reach the host itself (files, sockets, an
/// internal address) need the admin scope: a deploy token must not open those doors.
async fn put_service(node: &Node, name: &str, body: ServiceRequest, scope: Scope, rid: &str) -> http::Response<Body> {
    if scope < Scope::Admin
        && let Some(what) = body.grants.as_ref().and_then(crate::auth::grant_needing_admin)
    {
        let msg = format!("{what} needs the admin scope; a deploy token may grant env and outbound_http by name");
        return err(StatusCode::FORBIDDEN, "missing-scope", msg, rid);
    }
    let put = match &node.cluster {
        Some(c) => c.put_service(name, body).await,
        None => node.registry.put_service(name, body).await,
    };
    match put {
        Ok(deploy) => {
            let status = if deploy.created { StatusCode::CREATED } else { StatusCode::OK };
            let mut answer = detail_or_spec(node, &deploy.spec);
            // From the deploy itself: in a cluster this node may not run the new version yet.
            answer["denied_imports"] = json!(deploy.denied);
            h::json(status, &answer, rid)
        }
        Err(e) => admin_error(e, rid),
    }
}

/// A service as `GET /v1/services/{name}` shows it. Below the deploy scope, environment
/// and config values are hidden (they often hold secrets).
fn detail(node: &Node, s: &Service, scope: Scope) -> serde_json::Value {
    let d = s.current();
    let g = s.gate();
    let mut spec = d.spec.clone();
    if scope < Scope::Deploy {
        for v in spec.grants.env.values_mut().chain(spec.config.values_mut()) {
            *v = "(hidden: needs the deploy scope)".to_string();
        }
    }
    json!({
        "name": &*s.name,
        "spec": spec,
        "component": &d.unit.info,
        "denied_imports": d.spec.grants.denied(&d.unit.info.imports),
        "graph": d.serving.graph().map(|g| &**g),
        "unresolved": match &d.serving {
            Serving::Unresolved(u) => json!({ "interface": u.interface, "reason": u.reason }),
            _ => serde_json::Value::Null,
        },
        "status": {
            "ready": ready(&d),
            "local": {
                "node": node.config.node_id,
                "mode": node.mode(),
                "instances": g.limit,
                "max_queue": g.max_queue,
                "running": g.running,
                "queued": g.queued,
                "peak_running": g.peak_running,
            },
            "nodes": match &node.cluster {
                Some(c) => json!(c.placement_of(&s.name)),
                None => json!([{
                    "node": node.config.node_id,
                    "mode": "single",
                    "instances": g.limit,
                    "max_queue": g.max_queue,
                    "running": g.running,
                    "queued": g.queued,
                    "peak_running": g.peak_running,
                }]),
            },
            "requests": counters(s),
        },
    })
}

#[cfg(test)]
mod tests {
    use crate::auth::constant_time_eq;

    #[test]
    fn query_strings_decode() {
        let q = super::query_of(Some("service=word%20count&min_ms=5&flag&bad=%zz&plus=a+b&tail=%4"));
        assert_eq!(q["service"], "word count");
        assert_eq!(q["min_ms"], "5");
        assert_eq!(q["flag"], "");
        assert_eq!(q["bad"], "%zz");
        assert_eq!(q["plus"], "a b");
        assert_eq!(q["tail"], "%4");
        assert!(super::query_of(None).is_empty());
    }

    #[test]
    fn token_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
