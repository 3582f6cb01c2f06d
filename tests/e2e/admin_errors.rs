//! Every refusal of the admin API names the problem, and the node serves on afterwards.

use bytes::Bytes;
use http::Method;
use nanogrid::api::{Health, Uploaded};
use nanogrid::client::AdminClient;
use serde_json::json;

use crate::support::{TestNode, assert_error, parse};

#[tokio::test]
async fn uploads_that_cannot_be_deployed() {
    let node = TestNode::start().await;
    let admin = node.admin();

    let r = admin.upload(b"hello, not wasm".to_vec()).await.unwrap();
    assert_error(&r, 400, "not-wasm");
    assert_error(&admin.upload(Vec::new()).await.unwrap(), 400, "not-wasm");

    let r = admin.upload(wat::parse_str("(module (func (export \"f\")))").unwrap()).await.unwrap();
    let v = assert_error(&r, 400, "core-module");
    assert!(v.message.as_str().contains("wasm32-wasip2"), "{v}");

    let r = admin.upload(b"\0asm\x0d\0\x01\0garbage".to_vec()).await.unwrap();
    assert_error(&r, 400, "invalid-component");

    let other_export = r#"(component
        (core module $m (func (export "f")))
        (core instance $i (instantiate $m))
        (func $run (canon lift (core func $i "f")))
        (export "run" (func $run)))"#;
    let r = admin.upload(wat::parse_str(other_export).unwrap()).await.unwrap();
    let v = assert_error(&r, 422, "no-handler");
    let msg = v.message.as_str();
    assert!(msg.contains("[run]") && msg.contains("nanogrid:service/handler"), "{msg}");

    let bad_import = r#"(component
        (import "acme:text/tokenize@1.0.0" (instance))
        (import "wasi:keyvalue/store@0.2.0" (instance)))"#;
    let r = admin.upload(wat::parse_str(bad_import).unwrap()).await.unwrap();
    let v = assert_error(&r, 422, "unsatisfied-imports");
    let msg = v.message.as_str();
    // acme:text/tokenize could come from another service; wasi:* only from the platform.
    assert!(msg.contains("[wasi:keyvalue/store@0.2.0]") && !msg.contains("acme:text"), "{msg}");

    // Same bytes twice: stored once.
    let hello = crate::support::wasm("hello");
    let first = admin.upload(hello.clone()).await.unwrap();
    let second = admin.upload(hello).await.unwrap();
    assert_eq!(first.status, 201);
    assert_eq!(second.status, 200);
    assert_eq!(parse::<Uploaded>(&first).digest, parse::<Uploaded>(&second).digest);

    node.deploy("hello", "hello", json!({})).await;
    assert_eq!(node.get("/hello/").await.status, 200);
}

#[tokio::test]
async fn bad_specs_and_unknown_services() {
    let node = TestNode::start().await;
    let admin = node.admin();
    let digest = parse::<Uploaded>(&admin.upload(crate::support::wasm("hello")).await.unwrap()).digest;
    let put = |name: &str, body: &str| {
        let admin = admin.clone();
        let path = format!("/v1/services/{name}");
        let body = body.to_string();
        async move { admin.call(Method::PUT, &path, Some("application/json"), Bytes::from(body)).await.unwrap() }
    };

    assert_error(&put("x", "{not json").await, 400, "bad-json");
    let v = assert_error(&put("x", &format!(r#"{{"component":"{digest}","instnces":2}}"#)).await, 400, "bad-json");
    assert!(v.message.as_str().contains("instnces"), "{v}");
    for bad in ["-1", "1000000", "\"two\"", "1.5"] {
        let v = assert_error(
            &put("x", &format!(r#"{{"component":"{digest}","instances":{bad}}}"#)).await,
            400,
            "bad-request",
        );
        assert!(v.message.as_str().contains("instances"), "{v}");
    }
    let v = assert_error(&put("Bad_Name", &format!(r#"{{"component":"{digest}"}}"#)).await, 400, "bad-request");
    assert!(v.message.as_str().contains("Bad_Name"), "{v}");
    assert_error(&put("x", r#"{"component":"sha256:nothex"}"#).await, 400, "bad-request");
    let unknown = format!("sha256:{}", "0".repeat(64));
    let v = assert_error(&put("x", &format!(r#"{{"component":"{unknown}"}}"#)).await, 400, "bad-request");
    assert!(v.message.as_str().contains("upload it first"), "{v}");
    let v = assert_error(
        &put("x", &format!(r#"{{"component":"{digest}","limits":{{"memory_mib":0}}}}"#)).await,
        400,
        "bad-request",
    );
    assert!(v.message.as_str().contains("memory_mib"), "{v}");
    let list: nanogrid::api::ServiceList = parse(&admin.get("/v1/services").await.unwrap());
    assert!(list.services.is_empty(), "nothing half-created: {list:?}");

    // Unknown services, everywhere.
    assert_error(&node.get("/nosuch/x").await, 404, "not-found");
    assert_error(&node.get("/").await, 404, "not-found");
    assert_error(&admin.get("/v1/services/nosuch").await.unwrap(), 404, "not-found");
    let r = admin.call_json(Method::POST, "/v1/services/nosuch/scale", &json!({ "instances": 1 })).await.unwrap();
    assert_error(&r, 404, "not-found");
    assert_error(
        &admin.call(Method::DELETE, "/v1/services/nosuch", None, Bytes::new()).await.unwrap(),
        404,
        "not-found",
    );

    // Scale refusals leave the spec alone.
    assert_eq!(put("ok", &format!(r#"{{"component":"{digest}","instances":2}}"#)).await.status, 201);
    for bad in [json!({ "instances": -5 }), json!({ "instances": 5000 }), json!({ "instances": "3" })] {
        let r = admin.call_json(Method::POST, "/v1/services/ok/scale", &bad).await.unwrap();
        assert_error(&r, 400, "bad-request");
    }
    let r =
        admin.call(Method::POST, "/v1/services/ok/scale", Some("application/json"), Bytes::from("[]")).await.unwrap();
    assert_error(&r, 400, "bad-json");
    assert_eq!(node.service("ok").await.spec.instances, 2);

    // Routes and methods.
    assert_error(&admin.get("/v1/nothing").await.unwrap(), 404, "no-route");
    assert_error(
        &admin.call(Method::PATCH, "/v1/services/ok", None, Bytes::new()).await.unwrap(),
        405,
        "method-not-allowed",
    );
    assert_eq!(node.get("/ok/").await.status, 200);
}

#[tokio::test]
async fn admin_api_needs_the_token() {
    let node = TestNode::start().await;
    for token in [None, Some("wrong".to_string()), Some(String::new())] {
        let anon = AdminClient::new(&node.admin_url, token);
        let v = assert_error(&anon.get("/v1/services").await.unwrap(), 401, "unauthorized");
        assert!(!v.to_string().contains(crate::support::TOKEN));
        assert_error(&anon.upload(crate::support::wasm("hello")).await.unwrap(), 401, "unauthorized");
    }
    let anon = AdminClient::new(&node.admin_url, None);
    assert_eq!(parse::<Health>(&anon.get("/v1/health").await.unwrap()).status, "ok");
    assert!(anon.get("/metrics").await.unwrap().text().contains("nanogrid_node_info"));
    let cluster: nanogrid::api::ClusterView = parse(&node.admin().get("/v1/cluster").await.unwrap());
    assert_eq!(cluster.leader.as_deref(), Some("n1"), "{cluster:?}");
    assert_eq!(cluster.nodes.iter().map(|n| n.mode.as_str()).collect::<Vec<_>>(), ["single"], "{cluster:?}");
}

#[tokio::test]
async fn a_memory_limit_below_the_components_initial_memory_is_refused_at_deploy() {
    let node = TestNode::start().await;
    let up: Uploaded = parse(&node.admin().upload(crate::support::wasm("hello")).await.unwrap());
    let min = up.component.min_memory_bytes;
    assert!(min > 1 << 20 && min <= 2 << 20, "a Rust guest starts with a 1 MiB stack and its data: {up:?}");

    // Every request would fail; the deploy says so and names the smallest limit that works.
    let r = node.try_deploy("h", "hello", json!({ "limits": { "memory_mib": 1 } })).await;
    let v = assert_error(&r, 400, "bad-request");
    let msg = v.message.as_str();
    assert!(msg.contains(&format!("({min} bytes)")) && msg.contains("limits.memory_mib to at least 2"), "{msg}");
    assert_eq!(node.admin().get("/v1/services/h").await.unwrap().status, 404, "nothing was deployed");

    node.deploy("h", "hello", json!({ "limits": { "memory_mib": 2 } })).await;
    assert_eq!(node.get("/h/").await.status, 200);
}
