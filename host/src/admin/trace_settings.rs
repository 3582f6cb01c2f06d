//! `/v1/tracing`: this node's tracing settings and counters, and its sampling changed while
//! it runs (to trace every request while chasing a problem, then go back, without a
//! restart).
//!
//! | route | |
//! | --- | --- |
//! | `GET /v1/tracing` | `{"node", "sample", "ring": {"spans", "capacity"}, "otlp": null or {"exported", "dropped", "failed_batches"}}` |
//! | `PUT /v1/tracing` | `{"sample": 0..1}`: the share of new traces this node records from now on (admin scope); answers like GET, with `"was"` |

use std::sync::atomic::Ordering;

use http::{Method, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{err, json_body};
use crate::http::{self as h, Body};
use crate::node::Node;
use crate::trace::Tracer;

/// What `PUT /v1/tracing` takes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    sample: f64,
}

pub(super) async fn route(node: &Node, req: http::Request<Incoming>, rid: &str) -> http::Response<Body> {
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
            let mut v = view(node, &tracer);
            v["was"] = json!(was);
            h::json(StatusCode::OK, &v, rid)
        }
        m => {
            h::drain(req.into_body()).await;
            let msg = format!("{m} is not supported on /v1/tracing (GET, PUT)");
            err(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", msg, rid)
        }
    }
}

fn view(node: &Node, t: &Tracer) -> Value {
    let otlp = t.exporter().map(|e| {
        json!({
            "exported": e.stats.exported.load(Ordering::Relaxed),
            "dropped": e.stats.dropped.load(Ordering::Relaxed),
            "failed_batches": e.stats.failed_batches.load(Ordering::Relaxed),
        })
    });
    json!({
        "node": node.config.node_id,
        "sample": t.sample(),
        "ring": { "spans": t.ring.len(), "capacity": t.ring.capacity() },
        "otlp": otlp,
    })
}
