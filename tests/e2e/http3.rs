//! WASI 0.3 `wasi:http/service` components (async, `wasi:http@0.3.0`), unmodified, next to
//! 0.2 ones: detection at upload, streaming bodies both ways in bounded memory, a trap
//! mid-body is a broken response, and `invoke` reaches them like any service.

use bytes::Bytes;
use http::Method;
use nanogrid::api::Uploaded;
use nanogrid::client::Client;
use serde_json::json;

use crate::support::{TestNode, parse, wasm};

#[tokio::test]
async fn wasi_http_03_components_serve_next_to_02_ones() {
    let node = TestNode::start().await;
    let up: Uploaded = parse(&node.admin().upload(wasm("http3-stream")).await.unwrap());
    assert_eq!(up.component.world, "wasi:http/service", "{up:?}");
    assert!(up.component.exports.iter().any(|e| e.contains("wasi:http/handler@0.3.0")), "{up:?}");
    node.deploy("p3", "http3-stream", json!({ "instances": 4 })).await;
    node.deploy("p2", "http-hello", json!({})).await;

    let r = node.get("/p3/some/path?x=1").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "hello from wasi:http 0.3! you asked for GET /some/path?x=1\n");
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert!(r.header("x-request-id").is_some());
    let r = node.get("/p2/x").await;
    assert_eq!(r.text(), "hello from wasi:http! you asked for GET /x\n", "the 0.2 component serves beside it");

    let r = node.post("/p3/", "abc").await;
    assert_eq!(r.json().unwrap(), json!({ "bytes": 3, "sum": 294 }));

    // `invoke` reaches a 0.3 component like any service (its streamed answer collected).
    node.deploy("m", "misbehave", json!({})).await;
    assert_eq!(node.get("/m/call-path?path=/1&to=p3").await.text(), "status 200");

    // Many at once, each in its own instance.
    let mut calls = Vec::new();
    for i in 0..16 {
        let url = format!("{}/p3/{}", node.ingress, i % 3);
        calls
            .push(tokio::spawn(async move { Client::new().send(Method::GET, &url, &[], Bytes::new()).await.unwrap() }));
    }
    for (i, c) in calls.into_iter().enumerate() {
        let r = c.await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), (i % 3) << 20);
    }
    let v = node.service("p3").await;
    assert_eq!(v.status.requests.ok, 19, "{v:?}");

    // An error code instead of a response: the client gets a 500 that names it, and the
    // request counts as a guest error, not as served.
    let e = crate::support::assert_error(&node.get("/p3/fail").await, 500, "guest-error");
    assert!(e.message.contains("InternalError") && e.message.contains("asked to fail"), "{e:?}");
    let r = node.service("p3").await.status.requests;
    assert_eq!((r.ok, r.guest_error), (19, 1), "{r:?}");
}

#[tokio::test]
async fn wasi_http_03_bodies_stream_in_bounded_memory() {
    let grown = crate::http::streams_both_ways_in_bounded_memory("http3-stream").await;
    eprintln!("wasi:http 0.3: 64 MiB down + 100 MiB up raised the peak RSS by {} KiB", grown >> 10);
}

#[tokio::test]
async fn wasi_http_03_trap_mid_body_is_a_broken_response() {
    crate::http::trap_mid_body_breaks_the_response("http3-stream").await;
}
