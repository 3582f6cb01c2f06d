//! Misbehaving guests never take the node down.

use http::Method;
use serde_json::json;

use crate::support::{TestNode, assert_error};

#[tokio::test]
async fn trap_is_a_500_with_the_message_and_request_id() {
    let node = TestNode::start().await;
    node.deploy("m", "misbehave", json!({ "instances": 2 })).await;
    let r = node.get("/m/trap").await;
    let v = assert_error(&r, 500, "trap");
    let msg = v.message.as_str();
    assert!(msg.contains("misbehave was asked to trap"), "{msg}");
    assert_eq!(Some(v.request_id.as_str()), r.header("x-request-id"));
    assert_eq!(node.get("/m/ok").await.status, 200);
    let v = node.service("m").await;
    assert_eq!(v.status.requests.trapped, 1);
    assert_eq!(v.status.requests.ok, 1);
    assert_eq!(v.status.nodes[0].running, Some(0), "the trapped instance's slot is free again");
}

#[tokio::test]
async fn runaway_loop_gets_504_and_the_node_serves_on() {
    let node = TestNode::start().await;
    node.deploy("m", "misbehave", json!({ "instances": 1, "limits": { "timeout_ms": 300 } })).await;
    let started = std::time::Instant::now();
    let (looping, ok) = tokio::join!(node.get("/m/loop"), async {
        // Deploy and call while the guest spins (its instance busy), not after a guess.
        crate::support::eventually("the loop runs", std::time::Duration::from_secs(5), || async {
            (node.metric("nanogrid_instances_running", "service=\"m\"").await >= 1.0).then_some(())
        })
        .await;
        node.deploy("other", "hello", json!({})).await;
        node.get("/other/").await
    });
    assert_error(&looping, 504, "timeout");
    assert!(started.elapsed().as_secs() < 5);
    assert_eq!(ok.status, 200, "other services answer while a guest spins");
    assert_eq!(node.get("/m/ok").await.status, 200);
}

#[tokio::test]
async fn memory_bomb_fails_inside_the_guest() {
    let node = TestNode::start().await;
    node.deploy("m", "misbehave", json!({ "limits": { "memory_mib": 16 } })).await;
    let r = node.get("/m/alloc/64").await;
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.text().contains("allocation failed"), "{}", r.text());
    assert_eq!(node.get("/m/alloc/4").await.status, 200);
}

#[tokio::test]
async fn invoke_cycles_end_at_the_depth_limit() {
    let node = TestNode::start().await;
    node.deploy("m", "misbehave", json!({ "instances": 16 })).await;
    let r = node.get("/m/recurse").await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("call depth limit"), "{}", r.text());
    assert_eq!(node.get("/m/ok").await.status, 200);
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let node = TestNode::start().await;
    node.deploy("hello", "hello", json!({})).await;
    let big = "x".repeat(9 << 20);
    assert_error(&node.request(Method::POST, "/hello/", &big).await, 413, "payload-too-large");
    assert_eq!(node.get("/hello/").await.status, 200);
}

#[tokio::test]
async fn trap_after_a_kv_write_keeps_the_completed_write() {
    let node = TestNode::start().await;
    node.deploy("m", "misbehave", json!({})).await;
    assert_eq!(node.get("/m/kv-get/before-trap").await.status, 404);
    let v = assert_error(&node.get("/m/kv-trap").await, 500, "trap");
    assert!(v.message.as_str().contains("trapped after a kv write"));
    // kv writes are not transactional with the request: a write that returned is durable,
    // whole, and visible; the trap only ends the request.
    let r = node.get("/m/kv-get/before-trap").await;
    assert_eq!((r.status.as_u16(), r.text()), (200, "written".to_string()));
    assert_eq!(node.get("/m/ok").await.status, 200);
}

#[tokio::test]
async fn call_all_runs_calls_concurrently() {
    let node = TestNode::start().await;
    node.deploy("m", "misbehave", json!({ "instances": 8 })).await;
    let r = node.get("/m/fanout/6?sleep=1000").await;
    assert_eq!(r.text(), "6 calls answered");
    // The caller plus six callees, all running at once: the calls overlapped.
    assert_eq!(node.metric("nanogrid_instances_peak_running", "service=\"m\"").await, 7.0);
}
