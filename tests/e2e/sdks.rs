//! The Python and JavaScript SDKs of the nanoservice world: their `counter` counts
//! exactly under concurrent requests (compare-and-swap retries), and their `gateway` calls
//! the Rust `wordcount` and `counter` and answers what the Rust gateway answers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::Method;
use serde_json::{Value, json};

use crate::support::{TestNode, toolchain_wasm};

async fn deploy_wasm(node: &TestNode, name: &str, bytes: Vec<u8>, spec: Value) {
    let up = node.admin().upload(bytes).await.unwrap();
    assert_eq!(up.status, 201, "{name}: {}", up.text());
    let mut spec = spec;
    spec["component"] = crate::support::parse::<nanogrid::api::Uploaded>(&up).digest.into();
    let r = node.admin().call_json(Method::PUT, &format!("/v1/services/{name}"), &spec).await.unwrap();
    assert!(r.status == 201 || r.status == 200, "{name}: {}", r.text());
}

/// `tasks` clients each POSTing `each` increments of `key`; the number answered 200 (the
/// rest must be 503 overload refusals, nothing else).
async fn hammer(node: &Arc<TestNode>, path: String, tasks: usize, each: usize) -> u64 {
    let ok = Arc::new(AtomicU64::new(0));
    let mut joins = Vec::new();
    for _ in 0..tasks {
        let (node, ok, path) = (node.clone(), ok.clone(), path.clone());
        joins.push(tokio::spawn(async move {
            for _ in 0..each {
                let r = node.post(&path, "").await;
                match r.status.as_u16() {
                    200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    503 => {}
                    s => panic!("{path}: {s} {}", r.text()),
                }
            }
        }));
    }
    for j in joins {
        j.await.unwrap();
    }
    ok.load(Ordering::Relaxed)
}

#[tokio::test]
async fn python_and_js_counters_count_exactly_and_their_gateways_call_rust_wordcount() {
    let _cpu = crate::support::cpu_heavy().await;
    let node = Arc::new(TestNode::start().await);
    node.deploy("wordcount", "wordcount", json!({ "instances": 2 })).await;
    node.deploy("counter", "counter", json!({ "instances": 2 })).await;
    let text = "the cat and the hat";
    let rust = node.post("/wordcount/", &json!({ "text": text }).to_string()).await.json().unwrap();
    for lang in ["py", "js"] {
        let counter = format!("counter-{lang}");
        deploy_wasm(&node, &counter, toolchain_wasm(&counter), json!({ "instances": 8, "max_queue": 64 })).await;
        // 16 clients at once on 8 instances: every increment is a read and a
        // compare-and-swap, so contended ones retry; none may be lost or doubled.
        let ok = hammer(&node, format!("/{counter}/hits"), 16, 6).await;
        assert!(ok >= 48, "{counter}: most increments were served ({ok} of 96)");
        let v = node.get(&format!("/{counter}/hits")).await.json().unwrap();
        assert_eq!(v, json!({ "key": "hits", "value": ok }), "{counter}: one count per answered POST");
        let r = node.post(&format!("/{counter}/hits?by=x"), "").await;
        assert_eq!(r.status, 400, "{counter}: {}", r.text());
        assert_eq!(r.error_code().as_deref(), Some("invalid"), "{counter}");

        let gateway = format!("gateway-{lang}");
        deploy_wasm(&node, &gateway, toolchain_wasm(&gateway), json!({})).await;
        let before = node.get("/counter/gateway-docs").await.json().unwrap()["value"].as_u64().unwrap();
        let r = node.post(&format!("/{gateway}/"), text).await;
        assert_eq!(r.status, 200, "{gateway}: {}", r.text());
        let v = r.json().unwrap();
        assert_eq!(v["stats"], rust, "{gateway}: the Rust wordcount's answer");
        assert_eq!(v["documents"], before + 1, "{gateway}: the Rust counter counted it: {v}");
        assert_eq!(v["trace_id"].as_str().map(str::len), Some(32), "{gateway}: {v}");
    }
}

#[test]
fn the_python_sdk_passes_its_offline_tests() {
    let _cpu = crate::support::cpu_heavy_blocking();
    toolchain_wasm("counter-py"); // componentize-py is installed by then
    let out = std::process::Command::new("python3")
        .arg(crate::support::repo_root().join("guest-sdk-py/tests/test_sdk.py"))
        .output()
        .expect("running python3");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains("OK"), "{err}");
}
