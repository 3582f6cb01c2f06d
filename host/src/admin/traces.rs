//! `/v1/traces`: recent traces and one trace's spans, from every live node; `/v1/tracing`:
//! this node's tracing settings and counters, and its sampling changed while it runs (to
//! trace every request while chasing a problem, then go back, without a restart).
//!
//! | route | |
//! | --- | --- |
//! | `GET /v1/traces?service=&min_ms=&limit=` | recent traces, newest first, added up over every live node |
//! | `GET /v1/traces/{trace-id}` | every live node's spans of one trace (404 when none has it) |
//! | `GET /v1/tracing` | `{"node", "sample", "ring": {"spans", "capacity"}, "otlp": null or {"exported", "dropped", "failed_batches"}}` |
//! | `PUT /v1/tracing` | `{"sample": 0..1}`: the share of new traces this node records from now on (admin scope); answers like GET, with `"was"` |

use std::sync::atomic::Ordering;

use super::{err, json_body, query_of};
use crate::api;
use crate::http::{self as h, Body};
use crate::node::Node;
use crate::trace::Tracer;
use http::{Method, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;

/// What `PUT /v1/tracing` takes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    sample: f64,
}

pub(super) async fn route(
    node: &Node,
    req: http::Request<Incoming>,
    segments: &[&str],
    rid: &str,
) -> http::Response<Body> {
    let method = req.method().clone();
    match (&method, segments) {
        (&Method::GET, ["v1", "traces"]) => {
            let q = query_of(req.uri().query());
            let num = |k: &str| match q.get(k) {
                None => Ok(None),
                Some(v) => v.parse::<u64>().map(Some).map_err(|_| {
                    format!(
                        "{k}={v:?} is not a whole number of {}: give e.g. {k}=100",
                        if k == "limit" { "traces" } else { "milliseconds" }
                    )
                }),
            };
            let (min_ms, limit) = match (num("min_ms"), num("limit")) {
                (Ok(m), Ok(l)) => (m.unwrap_or(0), l.unwrap_or(50)),
                (Err(e), _) | (_, Err(e)) => return err(StatusCode::BAD_REQUEST, "bad-request", e, rid),
            };
            let query = crate::trace::store::TraceQuery {
                service: q.get("service").filter(|s| !s.is_empty()).cloned(),
                min_ms,
                limit: limit.clamp(1, 1000) as usize,
                ids: None,
            };
            let traces = node.plane.traces(&query).await;
            h::json(StatusCode::OK, &api::TraceList { traces }, rid)
        }
        (&Method::GET, ["v1", "traces", id]) => {
            if crate::trace::TraceId::parse(id).is_none() {
                let msg =
                    format!("{id:?} is not a trace id: give 32 lower-case hex digits (the x-trace-id response header)");
                return err(StatusCode::BAD_REQUEST, "bad-request", msg, rid);
            }
            let spans = node.plane.trace(id).await;
            if spans.is_empty() {
                let msg = format!(
                    "no node has spans of trace {id} (each keeps a bounded ring of recent spans, --trace-ring)"
                );
                return err(StatusCode::NOT_FOUND, "not-found", msg, rid);
            }
            h::json(StatusCode::OK, &api::TraceView { trace_id: id.to_string(), spans }, rid)
        }
        // Only /v1/traces and /v1/traces/{id} come here.
        _ => {
            h::drain(req.into_body()).await;
            let msg = format!("{method} is not supported on /{} (GET)", segments.join("/"));
            err(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", msg, rid)
        }
    }
}

/// `GET` / `PUT /v1/tracing`.
pub(super) async fn settings(node: &Node, req: http::Request<Incoming>, rid: &str) -> http::Response<Body> {
    let Some(tracer) = node.registry.tracer().cloned() else {
        h::drain(req.into_body()).await;
        return err(StatusCode::CONFLICT, "tracing-off", "this node was started without a tracer", rid);
    };
    match req.method().clone() {
        Method::GET | Method::HEAD => {
            h::drain(req.into_body()).await;
            h::json(StatusCode::OK, &view(node, &tracer), rid)
        }
        Method::PUT => {
            let settings: Settings = match json_body(req, rid).await {
                Ok(s) => s,
                Err(resp) => return resp,
            };
            let Some(was) = tracer.set_sample(settings.sample) else {
                let msg = format!(
                    "sample {} is not a share: give a number from 0 (record no new trace) to 1 (every one)",
                    settings.sample
                );
                return err(StatusCode::BAD_REQUEST, "bad-request", msg, rid);
            };
            tracing::info!(was, now = settings.sample, "trace sampling changed");
            let v = api::TracingView { was: Some(was), ..view(node, &tracer) };
            h::json(StatusCode::OK, &v, rid)
        }
        m => {
            h::drain(req.into_body()).await;
            let msg = format!("{m} is not supported on /v1/tracing (GET, PUT)");
            err(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", msg, rid)
        }
    }
}

fn view(node: &Node, t: &Tracer) -> api::TracingView {
    let otlp = t.exporter().map(|e| api::OtlpCounts {
        exported: e.stats.exported.load(Ordering::Relaxed),
        dropped: e.stats.dropped.load(Ordering::Relaxed),
        failed_batches: e.stats.failed_batches.load(Ordering::Relaxed),
    });
    api::TracingView {
        node: node.config.node_id.clone(),
        sample: t.sample(),
        ring: api::RingUse { spans: t.ring.len(), capacity: t.ring.capacity() },
        otlp,
        was: None,
    }
}
