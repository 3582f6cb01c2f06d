//! Forwarding a request to another node that has instances of the service (cluster mode).
//!
//! Targets come from the cluster view (nodes gossip shows serving the service, then nodes
//! the assignment gives instances). A target that cannot be reached, or answers that it
//! is dormant or has no instance, is skipped for the next one; a request is never sent
//! twice to nodes that accepted it. Request bodies are buffered (up to the node's
//! `max_body_bytes`) so a request can be retried on the next node; responses stream
//! through.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::http::{self as h, Body};

/// Marks a request one node forwarded to another; the receiver never forwards it again.
pub const FORWARDED: &str = "x-nanogrid-forwarded";
/// A request's routing key: it is served on the node holding that key's primary (of the
/// called service's kv namespace), so processing runs next to its data.
pub const ROUTING_KEY: &str = "x-nanogrid-key";

/// The `invoke` depth of a forwarded call (only read together with [`FORWARDED`]).
pub const DEPTH: &str = "x-nanogrid-depth";

/// What ingress needs to know about the cluster.
pub trait Peers: Send + Sync {
    /// Not part of a majority: serve nothing.
    fn dormant(&self) -> bool;
    /// Ingress addresses of other serving nodes with instances of `service`, in the order
    /// to try them.
    fn holders(&self, service: &str) -> Vec<String>;
    /// The ingress address of the other node that holds `key`'s primary and runs
    /// `service`; `None` when that is this node or no such node can take it.
    fn key_holder(&self, service: &str, key: &str) -> Option<String>;
    /// [`Peers::holders`] with a routing key's holder (if any) tried first.
    fn holders_first(&self, service: &str, first: Option<String>) -> Vec<String> {
        let mut holders = self.holders(service);
        if let Some(a) = first {
            holders.retain(|h| *h != a);
            holders.insert(0, a);
        }
        holders
    }
}

#[derive(Clone)]
pub struct Forwarder {
    pub peers: Option<Arc<dyn Peers>>,
    client: Client<HttpConnector, Full<Bytes>>,
}

const FORWARD_TIMEOUT: Duration = Duration::from_secs(120);

/// Forwarding outcomes since start, for `/metrics`: answered by another node, skipped a
/// node that could not take it, or gave up.
pub static FORWARD_ANSWERED: AtomicU64 = AtomicU64::new(0);
pub static FORWARD_SKIPPED: AtomicU64 = AtomicU64::new(0);
pub static FORWARD_FAILED: AtomicU64 = AtomicU64::new(0);

fn count(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Forwarder {
    pub fn new(peers: Option<Arc<dyn Peers>>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let client = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(64).build(connector);
        Forwarder { peers, client }
    }

    /// The same client (and connection pool) without the cluster view, for `invoke` calls
    /// that already know their targets.
    pub fn without_peers(&self) -> Self {
        Forwarder { peers: None, client: self.client.clone() }
    }

    /// Send the request to the first holder that takes it.
    pub async fn forward(
        &self,
        holders: Vec<String>,
        method: &Method,
        target: &str,
        headers: &HeaderMap,
        body: Bytes,
        request_id: &str,
    ) -> http::Response<Body> {
        let mut last = String::from("no node has an instance");
        for addr in holders {
            let mut req = http::Request::builder().method(method.clone()).uri(format!("http://{addr}{target}"));
            for (k, v) in headers {
                if !matches!(k.as_str(), "host" | "connection" | "content-length" | "transfer-encoding") {
                    req = req.header(k, v);
                }
            }
            let req = req
                .header(FORWARDED, "1")
                .header("x-request-id", request_id)
                .body(Full::new(body.clone()))
                .expect("a request built from a valid one");
            let resp = match tokio::time::timeout(FORWARD_TIMEOUT, self.client.request(req)).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) if e.is_connect() => {
                    count(&FORWARD_SKIPPED);
                    tracing::debug!(%addr, error = %e, "forward target unreachable; trying the next");
                    last = format!("{addr} unreachable");
                    continue;
                }
                Ok(Err(e)) => {
                    count(&FORWARD_FAILED);
                    let msg = format!("forwarding to {addr} failed after sending: {e}");
                    return h::error(StatusCode::BAD_GATEWAY, "forward-failed", &msg, request_id);
                }
                Err(_) => {
                    count(&FORWARD_FAILED);
                    let msg = format!("{addr} did not answer within {FORWARD_TIMEOUT:?}");
                    return h::error(StatusCode::GATEWAY_TIMEOUT, "timeout", &msg, request_id);
                }
            };
            let (parts, body) = resp.into_parts();
            if parts.status == StatusCode::SERVICE_UNAVAILABLE {
                // Small platform answers: read it to see whether the node ran the request.
                let body = match body.collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(e) => {
                        count(&FORWARD_FAILED);
                        let msg = format!("reading the answer of {addr} failed: {e}");
                        return h::error(StatusCode::BAD_GATEWAY, "forward-failed", &msg, request_id);
                    }
                };
                if refused(&body) {
                    count(&FORWARD_SKIPPED);
                    last = format!("{addr} has no instance free to take it");
                    continue;
                }
                count(&FORWARD_ANSWERED);
                return relay(parts, h::full(body));
            }
            count(&FORWARD_ANSWERED);
            // Everything else streams through as it arrives.
            return relay(parts, body.map_err(|e| Box::new(e) as h::BoxError).boxed_unsync());
        }
        count(&FORWARD_FAILED);
        no_instance(&last, request_id)
    }

    /// A guest's `invoke` of a service that runs on other nodes.
    pub async fn call(
        &self,
        holders: Vec<String>,
        service: &str,
        req: crate::runtime::Request,
        request_id: &str,
        depth: u32,
    ) -> Result<crate::runtime::Response, crate::services::DispatchError> {
        use crate::services::DispatchError;
        let method = Method::from_bytes(req.method.as_bytes())
            .map_err(|_| DispatchError::Internal(format!("invalid method {:?}", req.method)))?;
        let target = format!("/{service}{}", req.path);
        let mut headers = HeaderMap::new();
        for (k, v) in &req.headers {
            if let (Ok(k), Ok(v)) = (http::HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) {
                headers.append(k, v);
            }
        }
        headers.insert(DEPTH, HeaderValue::from(depth));
        let resp = self.forward(holders, &method, &target, &headers, Bytes::from(req.body), request_id).await;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| DispatchError::Internal(e.to_string()))?.to_bytes();
        if parts.status == StatusCode::SERVICE_UNAVAILABLE && refused(&body) {
            return Err(DispatchError::NoInstance {
                service: service.to_string(),
                reason: "no node with an instance took the call".into(),
            });
        }
        let headers = parts
            .headers
            .iter()
            .filter(|(k, _)| k.as_str() != "x-request-id")
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        Ok(crate::runtime::Response { status: parts.status.as_u16(), headers, body: body.to_vec() })
    }
}

/// The answer of another node, as this node's answer. The body is relayed byte for byte,
/// so a `content-length` stays true (and spares the client chunked framing).
fn relay(parts: http::response::Parts, body: Body) -> http::Response<Body> {
    let mut out = http::Response::new(body);
    *out.status_mut() = parts.status;
    for (k, v) in &parts.headers {
        if !matches!(k.as_str(), "connection" | "transfer-encoding") {
            out.headers_mut().append(k, v.clone());
        }
    }
    out
}

/// Whether a 503 body says the node did not run the request at all.
fn refused(body: &[u8]) -> bool {
    let code = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error")?.get("code")?.as_str().map(str::to_string));
    matches!(code.as_deref(), Some("dormant" | "no-instance"))
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
