//! Property tests over the admin API: whatever a client sends, the node answers with a
//! clear 4xx (or success) and never a 5xx or a crash.

use bytes::Bytes;
use http::Method;
use nanogrid::api::Uploaded;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Value, json};

use crate::support::{TestNode, parse, wasm};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("component".to_string()),
                    Just("instances".to_string()),
                    Just("limits".to_string()),
                    Just("grants".to_string()),
                    Just("config".to_string()),
                    Just("max_queue".to_string()),
                    Just("memory_mib".to_string()),
                    Just("sockets".to_string()),
                    "[a-z_]{1,8}",
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn runner(cases: u32) -> TestRunner {
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha))
}

#[test]
fn admin_api_answers_any_json_without_5xx() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let node = rt.block_on(TestNode::start());
    let admin = node.admin();
    let digest = Value::String(parse::<Uploaded>(&rt.block_on(admin.upload(wasm("hello"))).unwrap()).digest);
    let strategy = (
        "[a-zA-Z0-9._~-]{1,70}",
        json_value(),
        any::<bool>(),
        prop_oneof![Just("PUT"), Just("POST"), Just("GET"), Just("DELETE")],
    );
    runner(160)
        .run(&strategy, |(name, mut body, with_digest, method)| {
            if with_digest && let Value::Object(m) = &mut body {
                m.insert("component".into(), digest.clone());
            }
            let (path, method) = match method {
                "POST" => (format!("/v1/services/{name}/scale"), Method::POST),
                "GET" => (format!("/v1/services/{name}"), Method::GET),
                "DELETE" => (format!("/v1/services/{name}"), Method::DELETE),
                _ => (format!("/v1/services/{name}"), Method::PUT),
            };
            let r = rt
                .block_on(admin.call(method, &path, Some("application/json"), Bytes::from(body.to_string())))
                .unwrap();
            prop_assert!(r.status.as_u16() < 500, "{path} {body} -> {} {}", r.status, r.text());
            if !r.status.is_success() {
                prop_assert!(r.error_code().is_some(), "error without a code: {}", r.text());
            }
            Ok(())
        })
        .unwrap();
    // After all that, the node still deploys and serves.
    rt.block_on(async {
        node.deploy("after", "hello", json!({})).await;
        assert_eq!(node.get("/after/").await.status, 200);
    });
}

#[test]
fn upload_validator_refuses_mangled_components_cleanly() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let node = rt.block_on(TestNode::start());
    let admin = node.admin();
    let hello = wasm("hello");
    let len = hello.len();
    let strategy = prop_oneof![
        // Random bytes, sometimes with a wasm header.
        (prop::collection::vec(any::<u8>(), 0..512), any::<bool>()).prop_map(|(mut b, header)| {
            if header {
                let mut h = b"\0asm\x0d\0\x01\0".to_vec();
                h.append(&mut b);
                b = h;
            }
            b
        }),
        // A real component with a few bytes changed, or cut short.
        (prop::collection::vec((0..len, any::<u8>()), 1..4), 8..len).prop_map(move |(edits, cut)| {
            let mut b = hello.clone();
            for (i, v) in edits {
                b[i] = v;
            }
            if cut % 3 == 0 {
                b.truncate(cut);
            }
            b
        }),
    ];
    runner(48)
        .run(&strategy, |bytes| {
            let r = rt.block_on(admin.upload(bytes)).unwrap();
            prop_assert!(matches!(r.status.as_u16(), 200 | 201 | 400 | 422), "upload -> {} {}", r.status, r.text());
            Ok(())
        })
        .unwrap();
    assert_eq!(rt.block_on(admin.get("/v1/health")).unwrap().status, 200);
}
