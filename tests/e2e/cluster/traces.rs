//! Distributed tracing across three nodes: a request through ingress → `gateway` → two
//! services on other nodes is one trace, kept under the client's `traceparent`, whose spans
//! come back from `GET /v1/traces/{id}` on any node with their parent links intact, and
//! reach an OTLP/HTTP receiver running in this test.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use serde_json::json;

use nanogrid::api::{TraceList, TraceView};
use nanogrid::trace::{SpanId, SpanRecord};

use super::driver::{Cluster, eventually};
use super::formed;
use crate::support::parse;
use crate::tracing::{attr_int, attr_str};

/// OTLP spans received: span id (hex) → (trace id, parent id, name, node).
type Received = Arc<Mutex<BTreeMap<String, (String, String, String, String)>>>;

/// A minimal OTLP/HTTP collector: decodes each `POST /v1/traces` and keeps the spans.
async fn otlp_receiver() -> (String, Received, Arc<Mutex<Vec<String>>>) {
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let got: Received = Default::default();
    let content_types: Arc<Mutex<Vec<String>>> = Default::default();
    let (g, ct) = (got.clone(), content_types.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let (g, ct) = (g.clone(), ct.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (g, ct) = (g.clone(), ct.clone());
                    async move {
                        assert_eq!(req.uri().path(), "/v1/traces");
                        let t = req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
                        ct.lock().unwrap().push(t.to_string());
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let msg = ExportTraceServiceRequest::decode(body.as_ref()).expect("an OTLP trace export");
                        for rs in msg.resource_spans {
                            for ss in rs.scope_spans {
                                for s in ss.spans {
                                    let node = s
                                        .attributes
                                        .iter()
                                        .find(|a| a.key == "nanogrid.node")
                                        .and_then(|a| a.value.as_ref())
                                        .map(|v| format!("{:?}", v.value))
                                        .unwrap_or_default();
                                    g.lock().unwrap().insert(
                                        hex(&s.span_id),
                                        (hex(&s.trace_id), hex(&s.parent_span_id), s.name, node),
                                    );
                                }
                            }
                        }
                        Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(Bytes::new())))
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
            });
        }
    });
    (url, got, content_types)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

// One scenario read top to bottom: its steps share the nodes, ids and figures of the ones before, so it stays one function though longer than 80 lines.
#[tokio::test]
async fn a_request_across_three_nodes_is_one_trace_with_its_spans_from_every_node_and_in_otlp() {
    let (collector, received, content_types) = otlp_receiver().await;
    let c = Cluster::start_with(3, &["--otlp-endpoint", &collector]).await;
    formed(&c).await;
    // gateway on n1 calls wordcount (only on n2) and counter (only on n3).
    c.nodes[0].node.deploy("wordcount", "wordcount", json!({ "instances": 1, "placement": ["n2"] })).await;
    c.nodes[0].node.deploy("counter", "counter", json!({ "instances": 1, "placement": ["n3"] })).await;
    c.nodes[0].node.deploy("gateway", "gateway", json!({ "instances": 1, "placement": ["n1"] })).await;
    super::placement_is(&c, 0, "counter", &[("n3", 1)]).await;
    super::placement_is(&c, 0, "wordcount", &[("n2", 1)]).await;
    super::placement_is(&c, 0, "gateway", &[("n1", 1)]).await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{client_span}-01");
    let url = format!("{}/gateway/", c.nodes[0].node.ingress);
    let http = nanogrid::client::Client::new();
    // Until every hop serves (attempts before that would add their spans to the trace).
    eventually("gateway answers through n1", Duration::from_secs(20), || {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let r = http.send(Method::POST, &url, &[], Bytes::from("warm up")).await.ok()?;
            (r.status == 200).then_some(())
        }
    })
    .await;
    // A vendor's tracestate travels with the context through every hop (W3C).
    let tracestate = "acme=t61rcWkgMzE,other=1";
    let headers = [("traceparent", traceparent), ("tracestate", tracestate.to_string())];
    let r = http.send(Method::POST, &url, &headers, Bytes::from("the cat and the hat")).await;
    let r = r.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.headers["x-trace-id"], trace_id, "the client's trace is kept");
    let body = r.json().unwrap();
    assert_eq!(body["trace_id"], trace_id, "the guest SDK sees the trace id: {body}");

    // The trace from any node: spans from all three, every parent present or the client's.
    let spans: Vec<SpanRecord> = eventually("spans from three nodes", Duration::from_secs(10), || async {
        let r = c.nodes[2].node.admin().get(&format!("/v1/traces/{trace_id}")).await.ok()?;
        let v: TraceView = serde_json::from_slice(&r.body).ok()?;
        let nodes: BTreeSet<&str> = v.spans.iter().map(|s| &*s.node).collect();
        let runs = v.spans.iter().filter(|s| s.name.starts_with("run ")).count();
        (nodes.len() == 3 && runs >= 3).then_some(v.spans)
    })
    .await;
    let span_hex = |id: Option<SpanId>| id.map(|i| i.to_string());
    let ids: BTreeSet<String> = spans.iter().map(|s| s.span_id.to_string()).collect();
    for s in &spans {
        assert_eq!(s.trace_id.to_string(), trace_id);
        let parent = span_hex(s.parent_id).unwrap_or_else(|| panic!("a span without a parent: {s:?}"));
        assert!(parent == client_span || ids.contains(&parent), "broken parent link: {s:?}");
    }
    let find = |name: &str, node: &str| {
        spans
            .iter()
            .find(|s| &*s.name == name && &*s.node == node)
            .unwrap_or_else(|| panic!("no {name} on {node}: {spans:#?}"))
    };
    let ingress = find("ingress gateway", "n1");
    assert_eq!(span_hex(ingress.parent_id).as_deref(), Some(client_span), "ingress is the client's child");
    let gw = find("run gateway", "n1");
    assert_eq!(gw.parent_id, Some(ingress.span_id));
    for (svc, node) in [("wordcount", "n2"), ("counter", "n3")] {
        let run = find(&format!("run {svc}"), node);
        // run ← (forward hop on n1) ← invoke on n1 ← run gateway
        let mut at = run;
        let mut path = vec![at.name.to_string()];
        while at.span_id != gw.span_id {
            let p = at.parent_id.unwrap();
            at = spans.iter().find(|s| s.span_id == p).unwrap_or_else(|| panic!("{path:?} ends before gateway"));
            path.push(format!("{}@{}", &*at.name, &*at.node));
        }
        assert!(path.iter().any(|p| p == &format!("invoke {svc}@n1")), "{path:?}");
        // The forward hop names the node that ran the call.
        let hop = find(&format!("forward {svc}"), "n1");
        assert_eq!(attr_str(hop, "forward.node"), Some(node), "{hop:?}");
        assert_eq!(run.parent_id, Some(hop.span_id), "{path:?}");
        for key in ["queue_wait_us", "instantiate_us", "guest_us"] {
            assert!(attr_int(run, key).is_some_and(|v| v >= 0), "{key} on run {svc}: {run:?}");
        }
        assert_eq!(attr_int(run, "status"), Some(200));
        assert_eq!(attr_str(run, "tracestate"), Some(tracestate), "the client's tracestate reached {svc} on {node}");
    }
    assert_eq!(attr_str(gw, "tracestate"), Some(tracestate), "{gw:?}");
    let counter = find("run counter", "n3");
    assert!(attr_int(counter, "kv.cas.count").unwrap() >= 1, "counter's compare-and-swap is counted: {counter:?}");

    // The list finds it by service; the CLI draws it.
    let list: TraceList = parse(&c.nodes[1].node.admin().get("/v1/traces?service=wordcount&limit=5").await.unwrap());
    let t = list.traces.iter().find(|t| t.trace_id == trace_id).unwrap_or_else(|| panic!("{list:?}"));
    assert_eq!(t.nodes.len(), 3, "{t:?}");
    let out = c.nodes[1].node.cli(&["trace", trace_id]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for line in ["ingress gateway", "run wordcount", "run counter"] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
    assert!(text.contains('█'), "a waterfall bar:\n{text}");
    println!("{text}");

    // The OTLP receiver got the same spans, as protobuf, from every node.
    eventually("the collector has every span", Duration::from_secs(10), || async {
        let got = received.lock().unwrap();
        ids.iter().all(|id| got.get(id).is_some_and(|(t, _, _, _)| t == trace_id)).then_some(())
    })
    .await;
    let got = received.lock().unwrap().clone();
    for s in &spans {
        let (_, parent, name, _) = &got[&s.span_id.to_string()];
        assert_eq!(Some(parent), span_hex(s.parent_id).as_ref());
        assert_eq!(name, &*s.name);
    }
    assert!(content_types.lock().unwrap().iter().all(|t| t == "application/x-protobuf"));
}

/// Without a `traceparent`, a request starts its own trace; an invalid one is ignored.
#[tokio::test]
async fn requests_without_a_valid_traceparent_start_new_traces() {
    let c = Cluster::start(3).await;
    formed(&c).await;
    c.nodes[0].node.deploy("hello", "hello", json!({ "instances": 1, "placement": ["n1"] })).await;
    super::placement_is(&c, 0, "hello", &[("n1", 1)]).await;
    let http = nanogrid::client::Client::new();
    let url = format!("{}/hello/", c.nodes[0].node.ingress);
    let mut seen = BTreeSet::new();
    for tp in ["", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", "nonsense"] {
        let headers: Vec<(&str, String)> = if tp.is_empty() { vec![] } else { vec![("traceparent", tp.to_string())] };
        let r = http.send(Method::GET, &url, &headers, Bytes::new()).await.unwrap();
        assert_eq!(r.status, 200);
        let id = r.headers["x-trace-id"].to_str().unwrap().to_string();
        assert_eq!(id.len(), 32);
        assert_ne!(id, "00000000000000000000000000000000");
        seen.insert(id);
    }
    assert_eq!(seen.len(), 3, "each got a new trace");
    // Through n2's ingress (hello runs only on n1): its forward span names n1.
    let r = http.send(Method::GET, &format!("{}/hello/", c.nodes[1].node.ingress), &[], Bytes::new()).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.headers["x-trace-id"].to_str().unwrap().to_string();
    let hop = eventually("the forward span on n2", Duration::from_secs(10), || async {
        let r = c.nodes[1].node.admin().get(&format!("/v1/traces/{id}")).await.ok()?;
        let v: TraceView = serde_json::from_slice(&r.body).ok()?;
        v.spans.into_iter().find(|s| &*s.name == "forward hello" && &*s.node == "n2")
    })
    .await;
    assert_eq!((attr_str(&hop, "forward.node"), attr_int(&hop, "http.status")), (Some("n1"), Some(200)), "{hop:?}");
    let missing = c.nodes[0].node.admin().get("/v1/traces/0123456789abcdef0123456789abcdef").await.unwrap();
    assert_eq!(missing.status, 404);
    let bad = c.nodes[0].node.admin().get("/v1/traces/xyz").await.unwrap();
    assert_eq!(bad.status, 400);
}
