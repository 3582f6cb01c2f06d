//! The admin routes of components and services: upload, deploy, list, show, scale,
//! delete (`/v1/components`, `/v1/services[/{name}[/scale]]`, `/v1/whoami`).

use super::{admin_error, err, json_body, unmatched};
use crate::api;
use crate::auth::Scope;
use crate::http::{self as h, Body, BodyError};
use crate::node::Node;
use crate::services::spec::{self, ScaleRequest, ServiceRequest};
use crate::services::{Deployed, Service, Serving};
use http::{Method, StatusCode};
use hyper::body::Incoming;

pub(super) async fn route(
    node: &Node,
    req: http::Request<Incoming>,
    segments: &[&str],
    scope: Scope,
    rid: &str,
) -> http::Response<Body> {
    let registry = &node.registry;
    let method = req.method().clone();
    match (&method, segments) {
        (&Method::PUT | &Method::POST, ["v1", "components"]) => upload(node, req, rid).await,
        (&Method::GET, ["v1", "whoami"]) => {
            h::json(StatusCode::OK, &api::Whoami { node: node.config.node_id.clone(), scope }, rid)
        }
        (&Method::GET, ["v1", "services"]) => {
            let services = registry.list().iter().map(|s| summary(node, s)).collect();
            h::json(StatusCode::OK, &api::ServiceList { services }, rid)
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
            scale(node, &name, req, rid).await
        }
        (&Method::DELETE, ["v1", "services", name]) => match node.plane.delete(name).await {
            Ok(spec) => h::json(StatusCode::OK, &api::Deleted { deleted: spec.name.clone(), spec }, rid),
            Err(e) => admin_error(e, rid),
        },
        (
            _,
            ["v1", "components"]
            | ["v1", "services"]
            | ["v1", "services", _]
            | ["v1", "services", _, "scale"]
            | ["v1", "whoami"],
        ) => unmatched(req, true, rid).await,
        _ => unmatched(req, false, rid).await,
    }
}

/// `PUT /v1/components`: store a component (its digest names it).
async fn upload(node: &Node, req: http::Request<Incoming>, rid: &str) -> http::Response<Body> {
    let bytes = match h::read_body_paced(req.into_body(), node.config.max_upload_bytes, node.config.pace).await {
        Ok(b) => b,
        Err(BodyError::TooLarge(l)) => {
            let msg = format!("component uploads are limited to {l} bytes");
            return h::close_connection(err(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large", &msg, rid));
        }
        Err(e) => return h::body_error(e, rid),
    };
    match node.registry.put_component(bytes).await {
        Ok(up) => {
            let status = if up.created { StatusCode::CREATED } else { StatusCode::OK };
            h::json(status, &api::Uploaded::from(&up), rid)
        }
        Err(e) => admin_error(e, rid),
    }
}

/// `POST /v1/services/{name}/scale`.
async fn scale(node: &Node, name: &str, req: http::Request<Incoming>, rid: &str) -> http::Response<Body> {
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
    match node.plane.scale(name, instances, max_queue).await {
        Ok(spec) => h::json(StatusCode::OK, &detail_or_spec(node, &spec), rid),
        Err(e) => admin_error(e, rid),
    }
}

fn counters(s: &Service) -> api::RequestCounts {
    use crate::services::Stats as S;
    api::RequestCounts {
        ok: S::get(&s.stats.ok),
        guest_error: S::get(&s.stats.guest_error),
        trapped: S::get(&s.stats.trapped),
        timed_out: S::get(&s.stats.timed_out),
        rejected: S::get(&s.stats.rejected),
    }
}

/// Whether requests to the service can run now.
fn ready(d: &Deployed) -> bool {
    !d.spec.stopped() && !matches!(d.serving, Serving::Unresolved(_))
}

fn summary(node: &Node, s: &Service) -> api::ServiceSummary {
    let d = s.current();
    let g = s.gate();
    api::ServiceSummary {
        name: s.name.to_string(),
        component: d.spec.component.clone(),
        instances: d.spec.instances,
        running: g.running,
        queued: g.queued,
        ready: ready(&d),
        node: node.config.node_id.clone(),
        autoscale: d.spec.autoscale,
        reuse: d.spec.reuse,
        idempotent: d.spec.idempotent,
        idle_instances: d.warm_pool_idle(),
        code: d.tier(),
        requests: counters(s),
        latency_us: api::LatencyCounts {
            bounds: crate::services::stats::LATENCY_BOUNDS_US.to_vec(),
            counts: s.stats.latency_counts(),
        },
    }
}

/// The service's detail after a change, or just the stored spec if a later change (on
/// another node of a cluster) already removed it here.
fn detail_or_spec(node: &Node, spec: &crate::services::ServiceSpec) -> api::ServiceAnswer {
    match node.registry.get(&spec.name) {
        Some(svc) => api::ServiceAnswer::Detail(Box::new(detail(node, &svc, Scope::Deploy))),
        None => api::ServiceAnswer::Spec(Box::new(api::SpecAnswer {
            name: spec.name.clone(),
            spec: spec.clone(),
            denied_imports: None,
            not_serving_yet: Vec::new(),
        })),
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
    match node.plane.put_service(name, body).await {
        Ok(deploy) => {
            let status = if deploy.created { StatusCode::CREATED } else { StatusCode::OK };
            let mut answer = detail_or_spec(node, &deploy.spec);
            // From the deploy itself: in a cluster this node may not run the new version yet.
            match &mut answer {
                api::ServiceAnswer::Detail(d) => {
                    d.denied_imports = deploy.denied;
                    d.not_serving_yet = deploy.not_serving;
                }
                api::ServiceAnswer::Spec(s) => {
                    s.denied_imports = Some(deploy.denied);
                    s.not_serving_yet = deploy.not_serving;
                }
            }
            h::json(status, &answer, rid)
        }
        Err(e) => admin_error(e, rid),
    }
}

/// A service as `GET /v1/services/{name}` shows it. Below the deploy scope, environment
/// and config values are hidden (they often hold secrets).
fn detail(node: &Node, s: &Service, scope: Scope) -> api::ServiceDetail {
    let d = s.current();
    let g = s.gate();
    let mut spec = d.spec.clone();
    if scope < Scope::Deploy {
        for v in spec.grants.env.values_mut().chain(spec.config.values_mut()) {
            *v = "(hidden: needs the deploy scope)".to_string();
        }
    }
    let here = api::NodeInstances {
        node: node.config.node_id.clone(),
        instances: g.limit,
        mode: node.mode().as_str().to_string(),
        live: None,
        serving: None,
        max_queue: Some(g.max_queue),
        running: Some(g.running),
        queued: Some(g.queued),
        peak_running: Some(g.peak_running),
    };
    api::ServiceDetail {
        name: s.name.to_string(),
        spec,
        component: (&d.unit.info).into(),
        denied_imports: d.spec.grants.denied(&d.unit.info.imports),
        graph: d.serving.graph().map(|g| (&**g).into()),
        unresolved: match &d.serving {
            Serving::Unresolved(u) => {
                Some(api::UnresolvedImport { interface: u.interface.clone(), reason: u.reason.clone() })
            }
            _ => None,
        },
        status: api::ServiceStatus {
            ready: ready(&d),
            local: api::LocalStatus {
                node: node.config.node_id.clone(),
                mode: node.mode(),
                instances: g.limit,
                max_queue: g.max_queue,
                running: g.running,
                queued: g.queued,
                peak_running: g.peak_running,
                idle_instances: d.warm_pool_idle(),
                code: d.tier(),
            },
            nodes: node.plane.placement_of(&s.name, here),
            requests: counters(s),
        },
        not_serving_yet: Vec::new(),
    }
}
