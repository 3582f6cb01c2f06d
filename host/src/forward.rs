//! Forwarding a request to another node that has instances of the service (cluster mode),
//! once [`crate::services::route::decide`] has chosen the nodes: ingress forwards client
//! requests with it and `invoke` calls ([`Forwarder`] is the registry's
//! [`crate::services::route::Forward`]).
//!
//! Targets come from the cluster view (nodes gossip shows serving the service, then nodes
//! the assignment gives instances). A request travels over the peer transport (mutual
//! TLS, `POST /forward/{service}/...` on the target's peer listener), so only a node of the
//! cluster can send or receive one, and the target proves its identity before any byte of
//! the request leaves. A target that cannot be reached, or answers that it did not run the
//! request (the `x-nanogrid-not-run` header, which only the platform sets), is skipped for
//! the next one; a request is never sent twice to nodes that accepted it. Request bodies
//! are buffered (up to the node's `max_body_bytes`) so a request can be retried on the
//! next node; responses stream through.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::http::{self as h, Body};
use crate::services::route::{Forward, Peers};
use crate::transport::{PeerClient, PeerTarget, RpcError};

/// Marks a request one node forwarded to another (kept for the guest's view of the
/// request; the receiver knows a forward by the route it arrived on).
pub const FORWARDED: &str = "x-nanogrid-forwarded";
pub use crate::services::route::ROUTING_KEY;
/// The `invoke` depth of a forwarded call (only read on the peer listener).
pub const DEPTH: &str = "x-nanogrid-depth";
/// Set by the receiving node, and only by it, when it did not run a forwarded request
/// (`dormant`, `no-instance`): the sender may try another node.
pub const NOT_RUN: &str = "x-nanogrid-not-run";
/// The client's `Host`, carried across (HTTP/2 between nodes has no `Host` header of its
/// own; `:authority` names the node).
pub const FORWARDED_HOST: &str = "x-nanogrid-host";
/// The peer route forwarded requests arrive on.
pub const FORWARD_PREFIX: &str = "/forward";

/// The forwarder's own headers: dropped from what it copies, then set by it.
pub const FORWARD_HEADERS: [&str; 6] =
    [FORWARDED, DEPTH, NOT_RUN, FORWARDED_HOST, crate::transport::NODE_HEADER, crate::transport::PROTOCOL_HEADER];
/// Headers a client may not send: the forwarder's, and the barrier header that marks a
/// barrier's continuation (only the barrier's driver sets it).
pub const PLATFORM_HEADERS: [&str; 7] = [
    FORWARDED,
    DEPTH,
    NOT_RUN,
    FORWARDED_HOST,
    crate::transport::NODE_HEADER,
    crate::transport::PROTOCOL_HEADER,
    crate::services::BARRIER_HEADER,
];

/// Drop the [`PLATFORM_HEADERS`] a client sent. One look at each header's name first:
/// most requests carry none of ours, and each removal hashes a name.
pub fn strip_platform_headers(headers: &mut http::HeaderMap) {
    if !headers.keys().any(|k| k.as_str().starts_with("x-nanogrid-")) {
        return;
    }
    for name in PLATFORM_HEADERS {
        headers.remove(name);
    }
}

/// Which node answered a forwarded request (an extension of the relayed response, for
/// the forward span; never a header the client sees).
#[derive(Debug, Clone)]
pub struct AnsweredBy(pub Arc<str>);

#[derive(Clone)]
pub struct Forwarder {
    pub peers: Option<Arc<dyn Peers>>,
    client: Option<PeerClient>,
    /// Shared by this forwarder's clones (ingress and `invoke` alike).
    counts: Arc<ForwardCounts>,
}

const FORWARD_TIMEOUT: Duration = Duration::from_secs(120);
/// The largest answer to an `invoke` call read from another node.
const MAX_CALL_RESPONSE: usize = 64 << 20;

/// A node's forwarding outcomes since start, for `/metrics`: answered by another node,
/// skipped a node that could not take it, or gave up.
#[derive(Debug, Default)]
pub struct ForwardCounts {
    pub answered: AtomicU64,
    pub skipped: AtomicU64,
    pub failed: AtomicU64,
    /// Failed after sending and sent to the next holder (an idempotent service).
    pub retried: AtomicU64,
}

fn count(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Forwarder {
    /// `client: None` in single mode (nothing to forward to).
    pub fn new(peers: Option<Arc<dyn Peers>>, client: Option<PeerClient>) -> Self {
        Forwarder { peers, client, counts: Arc::default() }
    }

    /// What this forwarder and its clones did.
    pub fn counts(&self) -> &Arc<ForwardCounts> {
        &self.counts
    }

    /// The same client without the cluster view, for `invoke` calls that already know
    /// their targets.
    pub fn without_peers(&self) -> Self {
        Forwarder { peers: None, client: self.client.clone(), counts: self.counts.clone() }
    }

    /// Send the request to the first holder that takes it, or say why none did (then it
    /// ran nowhere). `target` is the ingress path (`/{service}/...`); `uri` the client's
    /// request URI (its authority, over HTTP/2). `again`: the service is idempotent, so a
    /// holder that fails after the request was sent is followed by the next.
    #[allow(clippy::too_many_arguments)]
    pub async fn forward(
        &self,
        holders: Vec<PeerTarget>,
        method: &Method,
        target: &str,
        uri: &http::Uri,
        headers: &HeaderMap,
        body: Bytes,
        request_id: &str,
        again: bool,
    ) -> Result<http::Response<Body>, String> {
        let authority = uri.authority().map(|a| a.as_str());
        self.send(holders, method, target, authority, headers, body, (request_id, None), again).await
    }

    /// The answer of the first holder that ran the request (or a platform error about
    /// sending it), or why none took it. `depth` is set for `invoke` calls. A request
    /// that failed after it was sent may have run, so it is not sent again (502), unless
    /// `again`: its service is idempotent (`ServiceSpec::idempotent`), so the next holder
    /// is tried (a holder that died with the request in flight costs no error).
    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        holders: Vec<PeerTarget>,
        method: &Method,
        target: &str,
        uri_authority: Option<&str>,
        headers: &HeaderMap,
        body: Bytes,
        (request_id, depth): (&str, Option<u32>),
        again: bool,
    ) -> Result<http::Response<Body>, String> {
        let Some(client) = &self.client else {
            return Err("this node is not in a cluster".into());
        };
        let mut last = String::from("no node has an instance");
        // An HTTP/2 client names the host in the URI's authority, not in a header.
        let authority = uri_authority.and_then(|a| HeaderValue::from_str(a).ok());
        for t in holders {
            let req = forwarded_request(method, target, headers, authority.as_ref(), (request_id, depth));
            let req = match req.body(Full::new(body.clone())) {
                Ok(r) => r,
                Err(e) => {
                    let msg = format!("the request cannot be forwarded as it is: {e}");
                    return Ok(h::error(StatusCode::BAD_REQUEST, "bad-request", &msg, request_id));
                }
            };
            let started = Instant::now();
            let resp = match client.send(&t.node, &t.addr, req, FORWARD_TIMEOUT).await {
                Ok(r) => r,
                Err(e @ RpcError::NotSent { .. }) => {
                    count(&self.counts.skipped);
                    tracing::debug!(node = %t.node, addr = %t.addr, error = %e, "forward target not reached; trying the next");
                    last = format!("{} not reached", t.node);
                    continue;
                }
                Err(e) if started.elapsed() >= FORWARD_TIMEOUT => {
                    count(&self.counts.failed);
                    return Ok(h::error(StatusCode::GATEWAY_TIMEOUT, "timeout", &e.to_string(), request_id));
                }
                Err(e) if again => {
                    count(&self.counts.retried);
                    tracing::info!(node = %t.node, error = %e, request_id, "an idempotent service's forwarded request failed after sending; trying the next holder");
                    last = format!("{} failed after it was sent ({e})", t.node);
                    continue;
                }
                Err(e) => {
                    count(&self.counts.failed);
                    let msg = format!("forwarding to {} failed after sending: {e}", t.node);
                    return Ok(h::error(StatusCode::BAD_GATEWAY, "forward-failed", &msg, request_id));
                }
            };
            if let Some(why) = resp.headers().get(NOT_RUN) {
                count(&self.counts.skipped);
                last = format!("{} did not take it ({})", t.node, why.to_str().unwrap_or("?"));
                h::drain(resp.into_body()).await;
                continue;
            }
            count(&self.counts.answered);
            let (parts, body) = resp.into_parts();
            let mut out = relay(parts, body.map_err(|e| Box::new(e) as h::BoxError).boxed_unsync());
            out.extensions_mut().insert(AnsweredBy(t.node.as_str().into()));
            return Ok(out);
        }
        count(&self.counts.failed);
        Err(last)
    }

    /// A guest's `invoke` of a service that runs on other nodes: its answer and the node
    /// that gave it (none when the answer is this node's error about sending it).
    pub async fn call(
        &self,
        holders: Vec<PeerTarget>,
        service: &str,
        req: crate::runtime::Request,
        (request_id, depth): (&str, u32),
        again: bool,
    ) -> Result<(crate::runtime::Response, Option<Arc<str>>), crate::services::DispatchError> {
        use crate::services::DispatchError;
        let method = Method::from_bytes(req.method.as_bytes())
            .map_err(|_| DispatchError::Internal(format!("invalid method {:?}", req.method)))?;
        let target = format!("/{service}{}", req.path);
        if target.parse::<http::uri::PathAndQuery>().is_err() {
            return Err(DispatchError::Internal(format!("{:?} is not a valid request path", req.path)));
        }
        let mut headers = HeaderMap::new();
        for (k, v) in &req.headers {
            if let (Ok(k), Ok(v)) = (http::HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) {
                headers.append(k, v);
            }
        }
        let body = Bytes::from(req.body);
        let sent = self.send(holders, &method, &target, None, &headers, body, (request_id, Some(depth)), again).await;
        let resp = sent.map_err(|why| DispatchError::NoInstance {
            service: service.to_string(),
            reason: format!("no node with an instance took the call ({why})"),
        })?;
        let (parts, body) = resp.into_parts();
        let node = parts.extensions.get::<AnsweredBy>().map(|a| a.0.clone());
        let body = h::read_body(body, MAX_CALL_RESPONSE)
            .await
            .map_err(|e| DispatchError::Internal(format!("reading the answer of another node: {e:?}")))?;
        let headers = parts
            .headers
            .iter()
            .filter(|(k, _)| k.as_str() != "x-request-id")
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        Ok((crate::runtime::Response { status: parts.status.as_u16(), headers, body: body.to_vec() }, node))
    }
}

impl Forward for Forwarder {
    fn call<'a>(
        &'a self,
        holders: Vec<PeerTarget>,
        service: &'a str,
        req: crate::runtime::Request,
        (request_id, depth): (&'a str, u32),
        again: bool,
    ) -> futures::future::BoxFuture<'a, crate::services::RemoteAnswer> {
        Box::pin(Forwarder::call(self, holders, service, req, (request_id, depth), again))
    }
}

/// The answer of another node, as this node's answer. The body is relayed byte for byte,
/// so a `content-length` stays true (and spares the client chunked framing).
fn relay(parts: http::response::Parts, body: Body) -> http::Response<Body> {
    let mut out = http::Response::new(body);
    *out.status_mut() = parts.status;
    for (k, v) in &parts.headers {
        // The peer listener's protocol header is between the two nodes.
        if !matches!(k.as_str(), "connection" | "transfer-encoding" | crate::transport::PROTOCOL_HEADER) {
            out.headers_mut().append(k, v.clone());
        }
    }
    out
}

pub fn no_instance(why: &str, request_id: &str) -> http::Response<Body> {
    let msg = format!("no live node can serve this service right now ({why}); retry shortly");
    let mut r = h::error(StatusCode::SERVICE_UNAVAILABLE, "no-instance", &msg, request_id);
    r.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

pub fn dormant(request_id: &str) -> http::Response<Body> {
    let msg = "this node is not part of a majority of its cluster (dormant) and serves nothing; use another node";
    let mut r = h::error(StatusCode::SERVICE_UNAVAILABLE, "dormant", msg, request_id);
    r.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from_static("2"));
    r
}

/// Mark an answer to a forwarded request as "not run here" (only the platform does).
pub fn not_run(mut r: http::Response<Body>, why: &'static str) -> http::Response<Body> {
    r.headers_mut().insert(NOT_RUN, HeaderValue::from_static(why));
    r
}

/// The request a holder is sent: `target` under the forward prefix, the client's headers
/// but hop-by-hop and platform ones, marked forwarded, with the request id, the host the
/// client named (`authority` for HTTP/2, which names it there) and the `invoke` depth.
fn forwarded_request(
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    authority: Option<&HeaderValue>,
    (request_id, depth): (&str, Option<u32>),
) -> http::request::Builder {
    let mut req = http::Request::builder().method(method.clone()).uri(format!("{FORWARD_PREFIX}{target}"));
    for (k, v) in headers {
        let hop =
            matches!(k.as_str(), "host" | "connection" | "content-length" | "transfer-encoding" | "te" | "upgrade");
        if !hop && !FORWARD_HEADERS.contains(&k.as_str()) {
            req = req.header(k, v);
        }
    }
    req = req.header(FORWARDED, "1").header("x-request-id", request_id);
    if let Some(host) = headers.get(http::header::HOST).or(authority) {
        req = req.header(FORWARDED_HOST, host.clone());
    }
    if let Some(d) = depth {
        req = req.header(DEPTH, d);
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_headers_are_stripped_and_others_kept() {
        // The quick look in `strip_platform_headers` relies on the common prefix.
        assert!(PLATFORM_HEADERS.iter().all(|h| h.starts_with("x-nanogrid-")));
        let mut h = http::HeaderMap::new();
        for name in PLATFORM_HEADERS {
            h.insert(name, http::HeaderValue::from_static("1"));
        }
        h.insert(ROUTING_KEY, http::HeaderValue::from_static("k"));
        h.insert("x-other", http::HeaderValue::from_static("2"));
        strip_platform_headers(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["x-nanogrid-key", "x-other"]);
    }
}
