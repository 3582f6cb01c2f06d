//! Ingress: `ANY /{service}/{rest}` → the service's handler with path `/{rest}`.
//!
//! Every request gets an id (the caller's `x-request-id` when it is sane), echoed in the
//! response and in every error body. Platform errors are JSON
//! `{"error":{"code","message","request_id"}}`; overload answers carry `Retry-After`.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tracing::Instrument;

use crate::http::{self as h, Body, BodyError};
use crate::runtime::Request as GuestRequest;
use crate::services::{DispatchError, Registry};
use crate::trace::context::TRACEPARENT_NAME;
use crate::trace::{self, Open, SpanKind};

/// The response header that tells a client its request's trace id (`nanogrid trace ID`).
pub const TRACE_ID_HEADER: &str = "x-trace-id";
static TRACE_ID_NAME: HeaderName = HeaderName::from_static(TRACE_ID_HEADER);
use crate::forward;
pub use crate::forward::{FORWARD_PREFIX, FORWARDED, ForwardCounts, Forwarder, NOT_RUN, ROUTING_KEY};
pub use crate::services::route::Peers;
use crate::services::route::{self, Policy, Route};

#[derive(Debug, Clone, Copy)]
pub struct IngressConfig {
    /// Largest request body, in bytes.
    pub max_body: usize,
    /// How fast request bodies must arrive.
    pub pace: crate::pace::Pace,
    /// The listener speaks TLS (wasi:http guests see the `https` scheme).
    pub tls: bool,
}

impl Default for IngressConfig {
    fn default() -> Self {
        IngressConfig { max_body: 8 << 20, pace: crate::pace::Pace::default(), tls: false }
    }
}

/// Split `/svc/a/b?q` into `("svc", "/a/b?q")`.
pub fn split_target(target: &str) -> Option<(&str, String)> {
    let t = target.strip_prefix('/')?;
    let end = t.find(['/', '?']).unwrap_or(t.len());
    let (service, rest) = t.split_at(end);
    if service.is_empty() {
        return None;
    }
    let rest = if rest.starts_with('/') { rest.to_string() } else { format!("/{rest}") };
    Some((service, rest))
}

pub async fn handle(
    registry: Arc<Registry>,
    cfg: IngressConfig,
    forwarder: Forwarder,
    mut req: http::Request<Incoming>,
) -> http::Response<Body> {
    let request_id = h::incoming_request_id(req.headers()).unwrap_or_else(|| registry.new_request_id());
    // Signals between nodes travel only on the peer listener; a client cannot send them.
    forward::strip_platform_headers(req.headers_mut());
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_string();
    let span = h::request_span("ingress", &request_id, req.method(), &target);
    let traced = start_trace(&registry, req.headers_mut());
    let method = req.method().clone();
    // Timed only for the debug log, which is off by default: clock reads were 2.6 % of a
    // reused `hello`'s CPU (docs/BENCHMARKS.md, "Tried for hello throughput").
    let started = tracing::enabled!(tracing::Level::DEBUG).then(std::time::Instant::now);
    async move {
        let mut resp = match &forwarder.peers {
            // Boxed, as are a wasi:http request's path (`route_http`) and a forward: each
            // is KiBs of future that every request's future would otherwise carry and
            // hyper copy into place (5.1 KiB for a nanoservice request on one node).
            Some(peers) => {
                Box::pin(route_clustered(&registry, cfg, &forwarder, &**peers, req, &request_id, &target)).await
            }
            None => route(&registry, cfg, req, &request_id, &target).await,
        };
        if let Some(started) = started {
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            tracing::debug!(status = resp.status().as_u16(), ms = format_args!("{ms:.1}"), "served");
        }
        if let Some(open) = traced {
            finish_trace(&registry, &open, &method, &target, &mut resp);
        }
        resp
    }
    .instrument(span)
    .await
}

/// The ingress span: under the client's `traceparent` when it sent a valid one (its trace
/// is kept), else the first of a new trace. The request goes on carrying it.
fn start_trace(registry: &Registry, headers: &mut http::HeaderMap) -> Option<Open> {
    let parent = trace::parent_in_map(headers);
    if parent.is_none() {
        // A tracestate belongs to the trace its traceparent names (W3C): without a valid
        // one it starts nothing.
        headers.remove(trace::context::TRACESTATE);
    }
    let open = registry.tracer()?.open(parent);
    headers.insert(TRACEPARENT_NAME.clone(), open.ctx.header_value());
    Some(open)
}

/// Tell the client its trace id (`x-trace-id`) and keep the ingress span.
fn finish_trace(
    registry: &Registry,
    open: &Open,
    method: &http::Method,
    target: &str,
    resp: &mut http::Response<Body>,
) {
    if let Ok(v) = HeaderValue::from_bytes(&open.ctx.trace_id.hex()) {
        resp.headers_mut().insert(TRACE_ID_NAME.clone(), v);
    }
    let Some(tracer) = registry.tracer().filter(|_| open.ctx.sampled) else { return };
    let service = split_target(target).map(|(s, _)| s);
    let mut span = tracer.span(open, ("ingress", service.unwrap_or("-")), SpanKind::Server, service);
    // The path without its query (which may hold secrets).
    let path = target.split('?').next().unwrap_or("/");
    span.attrs.insert("http.method", method_attr(method));
    span.attrs.insert("http.path", trace::Attr::text(path));
    span.attrs.insert("http.status", u64::from(resp.status().as_u16()));
    if resp.status().is_server_error() {
        span.error = format!("http-{}", resp.status().as_u16());
    }
    tracer.record(span);
}

/// A request method as a span attribute (the common ones without an allocation).
fn method_attr(m: &http::Method) -> trace::Attr {
    match m.as_str() {
        "GET" => "GET".into(),
        "POST" => "POST".into(),
        "PUT" => "PUT".into(),
        "DELETE" => "DELETE".into(),
        "HEAD" => "HEAD".into(),
        other => other.to_string().into(),
    }
}

/// In a cluster: where [`route::decide`] sends it (the same rule as `invoke`, without
/// spilling: a request finding every instance here busy queues here).
async fn route_clustered(
    registry: &Arc<Registry>,
    cfg: IngressConfig,
    forwarder: &Forwarder,
    peers: &dyn Peers,
    req: http::Request<Incoming>,
    request_id: &str,
    target: &str,
) -> http::Response<Body> {
    let Some((service, path)) = split_target(target).filter(|_| !peers.dormant()) else {
        if peers.dormant() {
            h::drain(req.into_body()).await;
            return forward::dormant(request_id);
        }
        return route(registry, cfg, req, request_id, target).await;
    };
    let key = req.headers().get(forward::ROUTING_KEY).and_then(|v| v.to_str().ok());
    let holders = match route::decide(registry, peers, service, key, Policy::default()).await {
        Route::Here(svc) => return serve_here(registry, cfg, req, request_id, service, path, svc, 0).await,
        Route::Forward(holders) => holders,
        Route::Dormant => {
            h::drain(req.into_body()).await;
            return forward::dormant(request_id);
        }
        Route::Nowhere(why) => {
            h::drain(req.into_body()).await;
            return forward::no_instance(&why, request_id);
        }
    };
    let svc = registry.get(service);
    let limit = cfg.max_body.min(svc.map_or(usize::MAX, |s| s.peek().spec.limits.max_request_bytes));
    let (parts, body) = req.into_parts();
    let body = match h::read_body_paced(body, limit, cfg.pace).await {
        Ok(b) => b,
        Err(BodyError::TooLarge(limit)) => {
            let msg = format!(
                "request body is larger than the {limit}-byte limit for requests this node forwards; send it to a node that runs the service (GET /v1/services/{service})"
            );
            return h::close_connection(h::error(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large", &msg, request_id));
        }
        Err(e) => return h::body_error(e, request_id),
    };
    Box::pin(forward_with_retries(
        registry,
        forwarder,
        peers,
        (service, path, target),
        holders,
        parts,
        body,
        request_id,
    ))
    .await
}

/// [`forward_attempts`] as a client span of the trace ("forward SERVICE"): the node that
/// runs it continues the trace under this span.
#[allow(clippy::too_many_arguments)]
async fn forward_with_retries(
    registry: &Arc<Registry>,
    forwarder: &Forwarder,
    peers: &dyn Peers,
    target: (&str, String, &str),
    holders: Vec<crate::transport::PeerTarget>,
    mut parts: http::request::Parts,
    body: bytes::Bytes,
    request_id: &str,
) -> http::Response<Body> {
    let hop = registry.tracer().and(trace::parent_in_map(&parts.headers)).map(|p| Open::child_of(&p));
    if let Some(v) = hop.as_ref().map(|o| o.ctx.header_value()) {
        parts.headers.insert(TRACEPARENT_NAME.clone(), v);
    }
    let service = target.0;
    let resp = forward_attempts(registry, forwarder, peers, target, holders, parts, body, request_id).await;
    if let Some(tracer) = registry.tracer()
        && let Some(open) = hop.filter(|o| o.ctx.sampled)
    {
        let mut span = tracer.span(&open, ("forward", service), SpanKind::Client, Some(service));
        span.attrs.insert("forwarded", true);
        span.attrs.insert("http.status", u64::from(resp.status().as_u16()));
        // The node that ran it, when one answered (not on this node's own errors).
        if let Some(by) = resp.extensions().get::<forward::AnsweredBy>() {
            span.attrs.insert("forward.node", trace::Attr::text(&by.0));
        }
        if resp.status().is_server_error() {
            span.error = format!("http-{}", resp.status().as_u16());
        }
        tracer.record(span);
    }
    resp
}

/// Forward a buffered request to the first holder that takes it. When none took it (it ran
/// nowhere: instances were moving, or the service was just scaled to zero), route it again
/// with a fresh view a few times, waking the service or running it here when that is
/// where its instance is now.
#[allow(clippy::too_many_arguments)]
async fn forward_attempts(
    registry: &Arc<Registry>,
    forwarder: &Forwarder,
    peers: &dyn Peers,
    (service, path, target): (&str, String, &str),
    mut holders: Vec<crate::transport::PeerTarget>,
    parts: http::request::Parts,
    body: bytes::Bytes,
    request_id: &str,
) -> http::Response<Body> {
    let mut pause = Duration::from_millis(50);
    let again = registry.get(service).is_some_and(|s| s.idempotent());
    for attempt in 0.. {
        let (m, u, hd) = (&parts.method, &parts.uri, &parts.headers);
        let why = match forwarder.forward(holders, m, target, u, hd, body.clone(), request_id, again).await {
            Ok(resp) => return resp,
            Err(why) => why,
        };
        let spec = registry.get(service).map(|s| s.current().spec.clone());
        if attempt == 3 || spec.as_ref().is_none_or(|s| s.stopped()) {
            return forward::no_instance(&why, request_id);
        }
        tokio::time::sleep(pause).await;
        pause *= 2;
        if let Some(s) = spec.filter(|s| s.instances == 0)
            && let Err(e) = peers.wake(service, Duration::from_millis(s.queue_timeout_ms)).await
        {
            return forward::no_instance(&e.to_string(), request_id);
        }
        // Woken here (or given instances here meanwhile): run it here. A wasi:http
        // service streams its body, so only a nanoservice's buffered one can be.
        if let Some(svc) = registry.get(service).filter(|s| s.gate().limit > 0 && !s.is_http()) {
            return dispatch_buffered(registry, svc, &parts, &body, path, request_id, 0).await;
        }
        holders = peers.holders_first(service, None);
    }
    unreachable!("the loop returns by its fourth attempt")
}

/// A request another node forwarded here (`/forward/{service}/...` on the peer listener,
/// from an authenticated node): run it here or answer, marked `x-nanogrid-not-run`, that
/// it was not run, so the sender tries another node. Never forwarded again.
pub async fn handle_forwarded(
    registry: Arc<Registry>,
    cfg: IngressConfig,
    peers: Arc<dyn Peers>,
    from: &str,
    mut req: http::Request<Incoming>,
) -> http::Response<Body> {
    let request_id = h::incoming_request_id(req.headers()).unwrap_or_else(|| registry.new_request_id());
    // Between the two nodes only: a guest run here sees what it would have on the first.
    req.headers_mut().remove(crate::transport::NODE_HEADER);
    req.headers_mut().remove(crate::transport::PROTOCOL_HEADER);
    // The client's Host, as the guest would have seen it on the first node.
    if let Some(host) = req.headers_mut().remove(forward::FORWARDED_HOST) {
        req.headers_mut().insert(http::header::HOST, host);
    }
    let full = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let target = full.strip_prefix(FORWARD_PREFIX).unwrap_or(full).to_string();
    let span = h::request_span("forwarded", &request_id, req.method(), &target);
    async move {
        tracing::debug!(from, "forwarded request");
        if peers.dormant() {
            h::drain(req.into_body()).await;
            return forward::not_run(forward::dormant(&request_id), "dormant");
        }
        let depth = req.headers().get(forward::DEPTH).and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(0);
        let Some((service, path)) = split_target(&target) else {
            return route(&registry, cfg, req, &request_id, &target).await;
        };
        let svc = registry.get(service);
        let local = svc.as_ref().is_some_and(|s| s.gate().limit > 0);
        let stopped = svc.as_ref().is_some_and(|s| s.peek().spec.stopped());
        if !local && !stopped {
            h::drain(req.into_body()).await;
            let r = forward::no_instance("the node it was forwarded to has none", &request_id);
            return forward::not_run(r, "no-instance");
        }
        let mut resp = serve_here(&registry, cfg, req, &request_id, service, path, svc, depth).await;
        // Only the platform says "not run": a guest's own header of that name is dropped.
        resp.headers_mut().remove(NOT_RUN);
        resp
    }
    .instrument(span)
    .await
}

async fn route(
    registry: &Arc<Registry>,
    cfg: IngressConfig,
    req: http::Request<Incoming>,
    request_id: &str,
    target: &str,
) -> http::Response<Body> {
    let Some((service, path)) = split_target(target) else {
        h::drain(req.into_body()).await;
        return h::error(StatusCode::NOT_FOUND, "not-found", "name a service in the path: /{service}/...", request_id);
    };
    let svc = registry.get(service);
    serve_here(registry, cfg, req, request_id, service, path, svc, 0).await
}

/// Run the request on this node (the service looked up by the caller); `depth` is the
/// `invoke` depth of a call forwarded from another node (0 from a client).
#[allow(clippy::too_many_arguments)]
async fn serve_here(
    registry: &Arc<Registry>,
    cfg: IngressConfig,
    mut req: http::Request<Incoming>,
    request_id: &str,
    service: &str,
    path: String,
    svc: Option<Arc<crate::services::Service>>,
    depth: u32,
) -> http::Response<Body> {
    let Some(svc) = svc else {
        h::drain(req.into_body()).await;
        let msg = format!("no service named {service:?} is deployed (see GET /v1/services on the admin API)");
        return h::error(StatusCode::NOT_FOUND, "not-found", &msg, request_id);
    };
    let service_limit = svc.peek().spec.limits.max_request_bytes;
    if svc.is_http() {
        // Streamed bodies cost no memory here, so only the service's own limit applies.
        if cfg.tls {
            req.extensions_mut().insert(crate::runtime::OverTls);
        }
        return Box::pin(route_http(registry, req, svc, path, (service_limit, cfg.pace), request_id)).await;
    }
    // Buffered bodies are also capped node-wide.
    let limit = cfg.max_body.min(service_limit);
    let (parts, body) = req.into_parts();
    let body = match h::read_body_paced(body, limit, cfg.pace).await {
        Ok(b) => b,
        Err(e) => return h::body_error(e, request_id),
    };
    dispatch_buffered(registry, svc, &parts, &body, path, request_id, depth).await
}

/// Run a nanoservice request whose body was read already.
async fn dispatch_buffered(
    registry: &Arc<Registry>,
    svc: Arc<crate::services::Service>,
    parts: &http::request::Parts,
    body: &bytes::Bytes,
    path: String,
    request_id: &str,
    depth: u32,
) -> http::Response<Body> {
    let headers = parts
        .headers
        .iter()
        .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_string(), v.to_string())))
        .collect();
    let guest_req = GuestRequest { method: parts.method.as_str().to_string(), path, headers, body: body.to_vec() };
    let http1 = parts.version < http::Version::HTTP_2;
    match registry.dispatch_to(svc, guest_req, request_id.into(), depth, http1).await {
        Ok(resp) => to_http(resp, request_id),
        Err(e) => dispatch_error(&e, request_id),
    }
}

/// A wasi:http service: the body streams in and out, nothing is buffered here.
async fn route_http(
    registry: &Arc<Registry>,
    mut req: http::Request<Incoming>,
    svc: Arc<crate::services::Service>,
    path: String,
    (limit, pace): (usize, crate::pace::Pace),
    request_id: &str,
) -> http::Response<Body> {
    let declared = req.headers().get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        h::drain(req.into_body()).await;
        let msg = format!("request body is larger than the {limit}-byte limit");
        return h::close_connection(h::error(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large", &msg, request_id));
    }
    // HTTP/2 carries the authority in the URI, not in a Host header; wasi:http wants one
    // or the other, and the URI is about to lose it.
    if !req.headers().contains_key(http::header::HOST)
        && let Some(host) = req.uri().authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        req.headers_mut().insert(http::header::HOST, host);
    }
    // The component sees the path inside the service, as nanoservices do.
    match path.parse::<http::Uri>() {
        Ok(uri) => *req.uri_mut() = uri,
        Err(e) => return h::error(StatusCode::BAD_REQUEST, "bad-request", &format!("bad path: {e}"), request_id),
    }
    // The body streams into the guest as it arrives, but must keep arriving.
    let req = req.map(|b| crate::pace::Paced::new(b, pace));
    match registry.dispatch_http(svc, req, request_id.into()).await {
        Ok(resp) => {
            let mut resp =
                resp.map(|b| http_body_util::BodyExt::map_err(b, |e| Box::new(e) as h::BoxError).boxed_unsync());
            h::set_request_id(resp.headers_mut(), request_id);
            resp
        }
        Err(e) => dispatch_error(&e, request_id),
    }
}

fn to_http(resp: crate::runtime::Response, request_id: &str) -> http::Response<Body> {
    let Ok(status) = StatusCode::from_u16(resp.status) else {
        let msg = format!("the service answered with status {}, which is not a valid HTTP status", resp.status);
        return h::error(StatusCode::INTERNAL_SERVER_ERROR, "bad-response", &msg, request_id);
    };
    let mut out = http::Response::new(h::full(resp.body));
    *out.status_mut() = status;
    let headers = out.headers_mut();
    for (k, v) in resp.headers {
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(&v)) else {
            tracing::debug!(header = %k, "dropping an invalid response header from the guest");
            continue;
        };
        // Framing is the server's business, not the guest's.
        if matches!(name.as_str(), "content-length" | "transfer-encoding" | "connection") {
            continue;
        }
        headers.append(name, value);
    }
    h::set_request_id(headers, request_id);
    out
}

pub fn dispatch_error(e: &DispatchError, request_id: &str) -> http::Response<Body> {
    let (status, retry) = match e {
        DispatchError::NotFound(_) | DispatchError::NoHandler { .. } => (StatusCode::NOT_FOUND, None),
        DispatchError::Stopped(_) | DispatchError::Unresolved { .. } => (StatusCode::SERVICE_UNAVAILABLE, Some("5")),
        DispatchError::QueueFull(_) | DispatchError::WaitTimeout(..) | DispatchError::NoInstance { .. } => {
            (StatusCode::SERVICE_UNAVAILABLE, Some("1"))
        }
        DispatchError::Timeout { .. } | DispatchError::OutOfFuel { .. } => (StatusCode::GATEWAY_TIMEOUT, None),
        DispatchError::Trap { .. }
        | DispatchError::Guest { .. }
        | DispatchError::ResponseTooLarge { .. }
        | DispatchError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, None),
        DispatchError::BadRequest(_) => (StatusCode::BAD_REQUEST, None),
    };
    let code = e.code();
    if status.is_server_error() {
        tracing::warn!(request_id, code, error = %e, "request failed");
    }
    let mut resp = h::error(status, code, &e.to_string(), request_id);
    if let Some(r) = retry {
        resp.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from_static(r));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::split_target;

    #[test]
    fn targets() {
        assert_eq!(split_target("/hello/world?x=1"), Some(("hello", "/world?x=1".to_string())));
        assert_eq!(split_target("/hello"), Some(("hello", "/".to_string())));
        assert_eq!(split_target("/hello?x"), Some(("hello", "/?x".to_string())));
        assert_eq!(split_target("/hello/"), Some(("hello", "/".to_string())));
        assert_eq!(split_target("/"), None);
        assert_eq!(split_target("//x"), None);
    }
}
