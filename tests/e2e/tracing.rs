//! Tracing on one node: the trace context (and its tracestate) through call-all, barrier
//! calls and continuations; its sampling changed while it runs (`PUT /v1/tracing`), and what
//! the node then keeps.

use http::Method;
use nanogrid::api::{BarrierReport, BarrierState, TraceList, TraceView, TracingView};
use nanogrid::trace::{Attr, SpanRecord};
use serde_json::json;

use crate::support::{TestNode, assert_error, parse};

/// A span's text attribute `key`.
pub(crate) fn attr_str<'a>(s: &'a SpanRecord, key: &str) -> Option<&'a str> {
    s.attrs.get(key).and_then(Attr::as_str)
}

/// A span's integer attribute `key`.
pub(crate) fn attr_int(s: &SpanRecord, key: &str) -> Option<i64> {
    match s.attrs.get(key) {
        Some(Attr::Int(i)) => Some(*i),
        _ => None,
    }
}

#[tokio::test]
async fn sampling_changes_while_the_node_runs_and_bad_shares_are_refused() {
    let node = TestNode::start_with_args(true, &["--trace-sample", "0"]).await;
    node.deploy("hello", "hello", json!({ "instances": 1 })).await;
    let admin = node.admin();
    let id_of = |r: &nanogrid::client::Reply| r.header("x-trace-id").expect("every answer names its trace").to_string();

    // Not sampled: the trace id travels, but nothing is kept.
    let r = node.get("/hello/world").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let unsampled = id_of(&r);
    let v: TracingView = parse(&admin.get("/v1/tracing").await.unwrap());
    assert_eq!((v.sample, v.ring.spans), (0.0, 0), "{v:?}");
    assert!(v.ring.capacity > 0 && v.otlp.is_none(), "{v:?}");

    // Every request from now on.
    let put = admin.call_json(Method::PUT, "/v1/tracing", &json!({ "sample": 1 })).await.unwrap();
    assert_eq!(put.status, 200, "{}", put.text());
    let v: TracingView = parse(&put);
    assert_eq!((v.was, v.sample), (Some(0.0), 1.0), "{v:?}");
    let sampled = id_of(&node.get("/hello/world").await);
    let t = admin.get(&format!("/v1/traces/{sampled}")).await.unwrap();
    assert_eq!(t.status, 200, "{}", t.text());
    let t: TraceView = parse(&t);
    let names: Vec<&str> = t.spans.iter().map(|s| &*s.name).collect();
    assert!(names.contains(&"ingress hello") && names.contains(&"run hello"), "{names:?}");
    let gone = admin.get(&format!("/v1/traces/{unsampled}")).await.unwrap();
    assert_eq!(gone.status, 404, "the unsampled request left no span: {}", gone.text());
    let r = admin.get("/v1/traces/not-an-id").await.unwrap();
    assert!(r.status == 400 && r.text().contains("32 lower-case hex digits"), "{}", r.text());
    let r = admin.call_json(Method::POST, "/v1/traces", &json!({})).await.unwrap();
    assert_eq!(r.status, 405, "{}", r.text());
    // min_ms filters by the trace's duration; a value that is not a number is refused.
    let slow: TraceList = parse(&admin.get("/v1/traces?service=hello&min_ms=600000").await.unwrap());
    assert!(slow.traces.is_empty(), "no hello took ten minutes: {slow:?}");
    let r = admin.get("/v1/traces?min_ms=slow").await.unwrap();
    let msg = assert_error(&r, 400, "bad-request").message;
    assert!(msg.contains("min_ms=\"slow\" is not a whole number"), "{}", r.text());
    let list: TraceList = parse(&admin.get("/v1/traces?service=hello&min_ms=0").await.unwrap());
    let ids: Vec<&str> = list.traces.iter().map(|t| t.trace_id.as_str()).collect();
    assert_eq!(ids, vec![sampled.as_str()], "only the sampled request's trace is listed: {list:?}");

    // A share outside 0..1, a string, an unknown field: 400 naming what to give; unchanged.
    let bad = [
        (json!({ "sample": 1.5 }), "bad-request"),
        (json!({ "sample": -0.1 }), "bad-request"),
        (json!({ "sample": "all" }), "bad-json"),
        (json!({ "rate": 0.5 }), "bad-json"),
    ];
    for (body, code) in bad {
        let r = admin.call_json(Method::PUT, "/v1/tracing", &body).await.unwrap();
        assert_error(&r, 400, code);
    }
    let v: TracingView = parse(&admin.get("/v1/tracing").await.unwrap());
    assert_eq!(v.sample, 1.0, "{v:?}");
    let r = admin.call_json(Method::PUT, "/v1/tracing", &json!({ "sample": 1.5 })).await.unwrap();
    assert!(r.text().contains("from 0") && r.text().contains("to 1"), "{}", r.text());
    let r = admin.call_json(Method::DELETE, "/v1/tracing", &json!({})).await.unwrap();
    assert_eq!(r.status, 405, "{}", r.text());

    // The CLI: back to none, and what it shows.
    let out = node.cli(&["trace-sample", "0"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text} {}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("records 0.0 of new traces (was 1)") && text.contains("otlp: off"), "{text}");
    let out = node.cli(&["trace-sample", "2"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("from 0"), "{out:?}");
    let v: TracingView = parse(&admin.get("/v1/tracing").await.unwrap());
    assert_eq!(v.sample, 0.0, "{v:?}");
}

/// The runs of `service` in trace `id`, once there are at least `n`, after checking that
/// every span's parent is in the trace or is the client's span.
pub(crate) async fn runs_in_trace(
    node: &TestNode,
    id: &str,
    service: &str,
    n: usize,
    client_span: &str,
) -> Vec<SpanRecord> {
    let name = format!("run {service}");
    let spans = crate::support::eventually("the trace's runs", std::time::Duration::from_secs(20), || {
        let (admin, name) = (node.admin(), name.clone());
        async move {
            let r = admin.get(&format!("/v1/traces/{id}")).await.ok()?;
            let v: TraceView = serde_json::from_slice(&r.body).ok()?;
            (v.spans.iter().filter(|s| *s.name == name).count() >= n).then_some(v.spans)
        }
    })
    .await;
    let ids: Vec<String> = spans.iter().map(|s| s.span_id.to_string()).collect();
    for s in &spans {
        let parent = s.parent_id.unwrap_or_else(|| panic!("a span without a parent: {s:?}")).to_string();
        assert!(parent == client_span || ids.contains(&parent), "broken parent link: {s:?}");
    }
    spans.into_iter().filter(|s| *s.name == name).collect()
}

#[tokio::test]
async fn call_all_barrier_calls_and_continuations_stay_in_the_callers_trace_with_its_tracestate() {
    let node = TestNode::start_with_args(true, &["--trace-sample", "1"]).await;
    node.deploy("m", "misbehave", json!({ "instances": 4 })).await;
    let client_span = "00f067aa0ba902b7";
    let state = "acme=opaque-1,zeta=2";
    let headers =
        |trace: &str| vec![("traceparent", format!("00-{trace}-{client_span}-01")), ("tracestate", state.to_string())];

    // call-all: the caller's run and one run per call, all in the client's trace.
    let fan = "0af7651916cd43dd8448eb211c80319c";
    let r = node.request_with(Method::GET, "/m/fanout/2", &headers(fan)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "2 calls answered");
    let runs = runs_in_trace(&node, fan, "m", 3, client_span).await;
    assert_eq!(runs.len(), 3, "{runs:#?}");
    for run in &runs {
        assert_eq!(attr_str(run, "tracestate"), Some(state), "{run:?}");
    }

    // A barrier: its start, its two calls and the continuation, all in one trace.
    let bar = "9af7651916cd43dd8448eb211c80319d";
    let r = node.request_with(Method::GET, "/m/barrier/2", &headers(bar)).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.text();
    crate::support::eventually("the barrier ends", std::time::Duration::from_secs(20), || async {
        let r = node.admin().get(&format!("/v1/barriers/{id}")).await.ok()?;
        let v: BarrierReport = serde_json::from_slice(&r.body).ok()?;
        (v.state == BarrierState::Done).then_some(())
    })
    .await;
    let runs = runs_in_trace(&node, bar, "m", 4, client_span).await;
    assert_eq!(runs.len(), 4, "start, two calls, continuation: {runs:#?}");
    for run in &runs {
        assert_eq!(attr_str(run, "tracestate"), Some(state), "{run:?}");
        assert_eq!(attr_int(run, "status").map(|s| s < 300), Some(true), "{run:?}");
    }

    // Two tracestate headers are one list; without a valid traceparent a tracestate
    // starts nothing (W3C): the new trace carries none.
    let two = "1af7651916cd43dd8448eb211c80319e";
    let mut h = headers(two);
    h[1].1 = "acme=1".into();
    h.push(("tracestate", "zeta=2".into()));
    assert_eq!(node.request_with(Method::GET, "/m/", &h).await.status, 200);
    let runs = runs_in_trace(&node, two, "m", 1, client_span).await;
    assert_eq!(attr_str(&runs[0], "tracestate"), Some("acme=1,zeta=2"), "{:?}", runs[0]);
    let r = node.request_with(Method::GET, "/m/", &[("tracestate", state.to_string())]).await;
    let fresh = r.header("x-trace-id").expect("a new trace").to_string();
    let v: TraceView = parse(&node.admin().get(&format!("/v1/traces/{fresh}")).await.unwrap());
    let run = v.spans.iter().find(|s| &*s.name == "run m").unwrap();
    assert_eq!(run.attrs.get("tracestate"), None, "{run:?}");
}
