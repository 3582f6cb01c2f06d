//! Standard wasi:http components, unmodified: detection at upload, streaming bodies in
//! bounded memory, the same admission and limits as nanoservices, kv from a wasi:http
//! component, outbound requests only to granted hosts.

use bytes::Bytes;
use http::Method;
use nanogrid::client::Client;
use serde_json::json;

use nanogrid::api::{ServiceAnswer, Uploaded};

use crate::support::{TestNode, assert_error, counting_server, parse, wasm};

#[tokio::test]
async fn http_hello_runs_unmodified() {
    let node = TestNode::start().await;
    let up: Uploaded = parse(&node.admin().upload(wasm("http-hello")).await.unwrap());
    assert_eq!(up.component.world, "wasi:http/proxy");
    node.deploy("web", "http-hello", json!({ "instances": 4 })).await;
    let r = node.get("/web/some/path?x=1").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "hello from wasi:http! you asked for GET /some/path?x=1\n");
    assert_eq!(r.header("x-sample"), Some("http-hello"));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert!(r.header("x-request-id").is_some());
    assert!(node.post("/web/", "body").await.text().contains("POST /"));

    // Same admission as nanoservices.
    node.admin().call_json(Method::POST, "/v1/services/web/scale", &json!({ "instances": 0 })).await.unwrap();
    assert_error(&node.get("/web/").await, 503, "stopped");
    node.admin().call_json(Method::POST, "/v1/services/web/scale", &json!({ "instances": 2 })).await.unwrap();
    assert_eq!(node.get("/web/").await.status, 200);
    let v = node.service("web").await;
    assert_eq!(v.status.requests.ok, 3);
    assert_eq!(v.status.requests.rejected, 1);
}

#[tokio::test]
async fn wasi_http_components_can_use_kv() {
    let node = TestNode::start().await;
    node.deploy("hkv", "http-kv", json!({})).await;
    for n in 1..=3 {
        assert_eq!(node.get("/hkv/").await.text(), format!("visit {n}"));
    }
}

#[tokio::test]
async fn bodies_stream_in_bounded_memory() {
    streams_both_ways_in_bounded_memory("http-stream").await;
}

/// `guest` (the `http-stream` routes, in WASI 0.2 or 0.3) serves a 64 MiB download and takes
/// a 100 MiB upload while the node's peak memory grows by less than 40 MiB; returns the growth.
pub async fn streams_both_ways_in_bounded_memory(guest: &str) -> u64 {
    let node = TestNode::start().await;
    let limits = json!({ "max_request_bytes": 256 << 20, "max_response_bytes": 256 << 20, "timeout_ms": 60000 });
    node.deploy("stream", guest, json!({ "instances": 2, "limits": limits })).await;
    assert_eq!(node.get("/stream/1").await.body.len(), 1 << 20);
    // Tiered compilation: Cranelift compiles the component in the background after the
    // deploy; wait for it, so the window below holds the transfer and not a compile.
    node.wait_optimized("stream").await;
    let before = node.reset_peak_rss();

    let r = node.get("/stream/64").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 64 << 20);
    assert!(r.body.chunks(26).take(1000).all(|c| c == &b"abcdefghijklmnopqrstuvwxyz"[..c.len()]));

    let upload: Vec<u8> = (0..100u32 << 20).map(|i| (i % 251) as u8).collect();
    let sum: u64 = upload.iter().map(|b| u64::from(*b)).sum();
    let r = node.request_bytes(Method::POST, "/stream/", Bytes::from(upload)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json().unwrap(), json!({ "bytes": 100u64 << 20, "sum": sum }));

    let grown = node.peak_rss().saturating_sub(before);
    assert!(
        grown < 40 << 20,
        "{guest}: a 64 MiB download and a 100 MiB upload raised the node's peak memory by {} MiB",
        grown >> 20
    );
    grown
}

#[tokio::test]
async fn trap_mid_stream_is_a_broken_response_not_a_short_one() {
    trap_mid_body_breaks_the_response("http-stream").await;
}

/// The head is out before `guest` traps; the body then ends with an error, so the client
/// can tell the response is incomplete, and the node serves on.
pub async fn trap_mid_body_breaks_the_response(guest: &str) {
    let node = TestNode::start().await;
    node.deploy("stream", guest, json!({})).await;
    let r =
        Client::new().send(Method::GET, &format!("{}/stream/8?trap_after=1", node.ingress), &[], Bytes::new()).await;
    assert!(r.is_err(), "{guest}: a truncated body must not look complete: {:?}", r.map(|r| r.body.len()));
    assert_eq!(node.get("/stream/1").await.body.len(), 1 << 20, "the node serves on");
    let v = node.service("stream").await;
    assert_eq!(v.status.requests.trapped, 1, "{v:?}");
    assert_eq!(v.status.requests.ok, 1, "{v:?}");
    assert_eq!(v.status.nodes[0].running, Some(0), "{v:?}");
}

#[tokio::test]
async fn declared_oversized_bodies_get_413() {
    let node = TestNode::start().await;
    node.deploy("stream", "http-stream", json!({ "limits": { "max_request_bytes": 1024 } })).await;
    assert_error(&node.post("/stream/", &"x".repeat(4096)).await, 413, "payload-too-large");
    assert_eq!(node.post("/stream/", "small").await.json().unwrap()["bytes"], 5);
}

#[tokio::test]
async fn outbound_requests_only_to_granted_hosts() {
    let node = TestNode::start().await;
    let admin = node.admin();
    let digest = parse::<Uploaded>(&admin.upload(wasm("http-fetch")).await.unwrap()).digest;
    let strict = json!({ "component": digest, "strict_imports": true });
    let r = admin.call_json(Method::PUT, "/v1/services/fetch", &strict).await.unwrap();
    let v = assert_error(&r, 422, "ungranted-import");
    let msg = v.message.as_str();
    assert!(msg.contains("wasi:http/outgoing-handler") && msg.contains("grants.outbound_http"), "{msg}");

    let (granted, granted_hits) =
        counting_server(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\npong");
    // Without strict_imports and without a grant: deployed, every request denied at use.
    let r = admin.call_json(Method::PUT, "/v1/services/fetch", &json!({ "component": digest })).await.unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let v: ServiceAnswer = parse(&r);
    let denied = v.denied_imports();
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0].grant, "grants.outbound_http", "{denied:?}");
    assert!(denied[0].import.starts_with("wasi:http/outgoing-handler@0.2."), "{denied:?}");
    let r = node.get(&format!("/fetch/fetch/{granted}/x")).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("HttpRequestDenied"), "the guest sees the standard error: {}", r.text());
    assert_eq!(granted_hits.load(std::sync::atomic::Ordering::SeqCst), 0, "nothing left the node");

    let (other, other_hits) = counting_server(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\npong");
    let body = json!({ "component": digest, "grants": { "outbound_http": [granted] } });
    let r = admin.call_json(Method::PUT, "/v1/services/fetch", &body).await.unwrap();
    assert_eq!(r.status, 200, "a redeploy: {}", r.text());
    assert!(parse::<ServiceAnswer>(&r).denied_imports().is_empty(), "granted now: {}", r.text());

    let r = node.get(&format!("/fetch/fetch/{granted}/x")).await;
    assert_eq!((r.status.as_u16(), r.text()), (200, "pong".to_string()));
    let r = node.get(&format!("/fetch/fetch/{other}/x")).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("HttpRequestDenied"), "the guest sees a clear error: {}", r.text());
    assert_eq!(other_hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(granted_hits.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn streamed_responses_obey_the_response_limit() {
    let node = TestNode::start().await;
    node.deploy("stream", "http-stream", json!({ "limits": { "max_response_bytes": 1 << 20 } })).await;
    let r = Client::new().send(Method::GET, &format!("{}/stream/4", node.ingress), &[], Bytes::new()).await;
    assert!(r.is_err(), "a 4 MiB body past a 1 MiB limit must not arrive complete: {:?}", r.map(|r| r.body.len()));
    assert_eq!(node.get("/stream/1").await.body.len(), 1 << 20, "at the limit is fine");
}

/// A wasi:http guest that returns without setting its response, or sets an error code as
/// its response: the client gets a 500 that says which, the request counts as a guest
/// error (not as served), and a reused instance that did so is not kept.
#[tokio::test]
async fn a_guest_that_answers_nothing_or_an_error_code_counts_as_a_failed_request() {
    let node = TestNode::start().await;
    node.deploy("hkv", "http-kv", json!({ "instances": 1, "reuse": { "requests": 10 } })).await;
    let runs = |r: nanogrid::client::Reply| {
        assert_eq!(r.status, 200, "{}", r.text());
        r.text().split(' ').next().and_then(|n| n.parse::<u64>().ok()).expect("a count")
    };
    assert_eq!(runs(node.get("/hkv/whoami").await), 1);
    assert_eq!(runs(node.get("/hkv/whoami").await), 2, "the instance is reused");

    let e = assert_error(&node.get("/hkv/no-answer").await, 500, "guest-error");
    assert!(e.message.contains("returned without setting a response"), "{e:?}");
    assert_eq!(runs(node.get("/hkv/whoami").await), 1, "an instance that answered nothing is not kept");

    let e = assert_error(&node.get("/hkv/error-code").await, 500, "guest-error");
    assert!(e.message.contains("InternalError"), "{e:?}");
    assert!(e.message.contains("asked to fail"), "{e:?}");
    assert_eq!(runs(node.get("/hkv/whoami").await), 1, "an instance that answered an error code is not kept");

    let counts = node.service("hkv").await.status.requests;
    assert_eq!((counts.ok, counts.guest_error, counts.trapped), (4, 2, 0), "{counts:?}");
}
