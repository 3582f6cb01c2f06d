//! The admin API, `/v1/...` JSON over HTTP with a bearer token (DESIGN.md section 5).
//!
//! `GET /v1/health` and `GET /metrics` are open (load balancers and scrapers); everything
//! else needs `Authorization: Bearer <token>` with a token of the scope the route needs
//! ([`crate::auth`]: `read`, `deploy` or `admin`). Errors are
//! `{"error":{"code","message","request_id"}}` with the matching status.

mod cluster_api;
mod experiments;
mod service_api;
mod traces;

use std::sync::Arc;

use http::{Method, StatusCode};
use hyper::body::Incoming;
use tracing::Instrument;

use crate::auth::Scope;
use crate::http::{self as h, Body, BodyError};
use crate::metrics;
use crate::node::Node;
use crate::services::AdminError;

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
        AdminError::NotClustered(m) => err(StatusCode::CONFLICT, "not-clustered", *m, rid),
        AdminError::NotLeader(m) => err(StatusCode::CONFLICT, "not-leader", *m, rid),
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
            let health = crate::api::Health {
                status: word.into(),
                node: node.config.node_id.clone(),
                mode: node.mode().as_str().into(),
            };
            return h::json(status, &health, rid);
        }
        // Liveness: the process answers, whatever its mode (a dormant node is alive and
        // must not be restarted for waiting on its peers).
        (&Method::GET, ["v1", "health", "live"]) => {
            let health = crate::api::Health {
                status: "alive".into(),
                node: node.config.node_id.clone(),
                mode: node.mode().as_str().into(),
            };
            return h::json(StatusCode::OK, &health, rid);
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
                .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(metrics::CONTENT_TYPE));
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
    match segments.as_slice() {
        ["v1", "components"] | ["v1", "services", ..] | ["v1", "whoami"] => {
            service_api::route(node, req, &segments, scope, rid).await
        }
        ["v1", "cluster" | "graph" | "events" | "autoscale" | "barriers" | "grid" | "debug", ..] => {
            cluster_api::route(node, req, &segments, rid).await
        }
        _ => unmatched(req, false, rid).await,
    }
}

/// The answer for a request no route took: 405 on a known path (`known`), else 404.
async fn unmatched(req: http::Request<Incoming>, known: bool, rid: &str) -> http::Response<Body> {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    h::drain(req.into_body()).await;
    if known {
        let msg = format!("{method} is not supported on {path}");
        return err(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", msg, rid);
    }
    let msg = format!("no admin route {method} {path}; see the API list in README.md");
    err(StatusCode::NOT_FOUND, "no-route", msg, rid)
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
