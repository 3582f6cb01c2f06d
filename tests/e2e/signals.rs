//! Platform signals a client or a guest cannot forge, and guest requests HTTP cannot
//! carry (issues 13 and 14).

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use serde_json::json;

use crate::support::TestNode;

#[tokio::test]
async fn a_client_cannot_send_the_platforms_own_headers() {
    let node = TestNode::start().await;
    // Enough instances for a self-call chain to the depth limit (each holds one).
    node.deploy("m", "misbehave", json!({ "instances": 16 })).await;
    // A barrier continuation is what the platform sends with the barrier header; from a
    // client the header is dropped, so the guest runs as for any request.
    let headers = [
        ("x-nanogrid-barrier", "made-up-id".to_string()),
        ("x-nanogrid-depth", "4294967295".to_string()),
        ("x-nanogrid-forwarded", "1".to_string()),
        ("x-nanogrid-not-run", "dormant".to_string()),
    ];
    let url = format!("{}/m/", node.ingress);
    let r = nanogrid::client::Client::new().send(Method::GET, &url, &headers, Bytes::new()).await.unwrap();
    assert_eq!((r.status.as_u16(), r.text()), (200, "ok".to_string()));
    let r = node.get("/m/kv-get/resumes-made-up-id").await;
    assert_eq!(r.status, 404, "no continuation ran: {}", r.text());
    // A client-sent depth does not wrap the guest's call depth: a self-call chain still
    // ends at the limit, with the platform's refusal.
    let url = format!("{}/m/recurse", node.ingress);
    let r = nanogrid::client::Client::new().send(Method::GET, &url, &headers, Bytes::new()).await.unwrap();
    assert!(r.text().contains("call depth limit"), "{} {}", r.status, r.text());
}

#[tokio::test]
async fn a_guest_request_http_cannot_carry_is_invalid_and_a_barrier_with_it_completes() {
    let node = TestNode::start().await;
    node.deploy("m", "misbehave", json!({ "instances": 4 })).await;
    let r = node.get("/m/call-path?path=/a+b").await;
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(text.starts_with("error invalid: path \"/a b\" is not an HTTP path"), "{text}");
    // The same path in a barrier: both calls are answered `invalid`, and the barrier
    // still resumes the service with both answers.
    let r = node.get("/m/barrier/2?path=/a+b").await;
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.text();
    let stored = node.barrier_result("m", &id, "the barrier resumes", Duration::from_secs(20)).await;
    assert_eq!(stored, "0/2:state", "no call succeeded, both were answered");
}
