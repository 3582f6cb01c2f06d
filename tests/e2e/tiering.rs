//! Tiered compilation: a new component serves from Winch's baseline code at once, and
//! Cranelift's optimized code is swapped in under live traffic and cached for restarts.
//! The node's tier-up thread is held (NANOGRID_HOLD_TIER_UP names a FIFO it reads before
//! its first compile), so the baseline phase is a state the test controls, not a
//! race against the compiler.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use nanogrid::client::Client;
use nanogrid::runtime::Tier;
use serde_json::json;

use crate::support::TestNode;
use crate::tracing::attr_str;

/// The run span of `service` in trace `id` (the client's span is [`CLIENT_SPAN`]).
async fn run_span(node: &TestNode, id: &str, service: &str) -> nanogrid::trace::SpanRecord {
    crate::tracing::runs_in_trace(node, id, service, 1, CLIENT_SPAN).await.remove(0)
}

/// The `.cwasm` files of the node's own compile cache.
fn cached(node: &TestNode) -> usize {
    let dir = node.data.path().join("node/compiled");
    let Ok(engines) = std::fs::read_dir(dir) else { return 0 };
    engines
        .flatten()
        .filter_map(|e| std::fs::read_dir(e.path()).ok())
        .flat_map(|d| d.flatten())
        .filter(|f| f.path().extension().is_some_and(|x| x == "cwasm"))
        .count()
}

const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn traced(id: &str) -> Vec<(&'static str, String)> {
    vec![("traceparent", format!("00-{id}-{CLIENT_SPAN}-01"))]
}

// One scenario read top to bottom: its steps share the nodes, ids and figures of the ones before, so it stays one function though longer than 80 lines.
#[tokio::test]
async fn a_new_component_serves_baseline_code_until_the_optimized_is_swapped_in() {
    let mut node = TestNode::unstarted(false, &["--trace-sample", "1"]);
    let hold = node.data.path().join("hold-tier-up");
    let path = std::ffi::CString::new(hold.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a plain syscall on a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0, "mkfifo {}", hold.display());
    node.env.push((nanogrid::runtime::HOLD_TIER_UP_ENV.into(), hold.display().to_string()));
    node.restart();

    // Held: both serve on baseline code, a nanoservice and a wasi:http component.
    node.deploy("hello", "hello", json!({ "instances": 2 })).await;
    node.deploy("web", "http-hello", json!({})).await;
    for name in ["hello", "web"] {
        let svc = node.service(name).await;
        assert_eq!(svc.status.local.code, Some(Tier::Baseline), "{svc:?}");
    }
    let first = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = node.request_with(Method::GET, "/hello/", &traced(first)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().starts_with("hello, world!"), "{}", r.text());
    assert_eq!(attr_str(&run_span(&node, first, "hello").await, "code.tier"), Some("baseline"));
    let r = node.get("/web/x").await;
    assert_eq!(r.text(), "hello from wasi:http! you asked for GET /x\n");
    assert_eq!(node.metric("nanogrid_compiles_total", "tier=\"baseline\"").await, 2.0);
    assert_eq!(node.metric("nanogrid_compiles_total", "tier=\"optimized\"").await, 0.0);
    assert_eq!(node.metric("nanogrid_services_on_baseline_code", "").await, 2.0);
    assert_eq!(cached(&node), 0, "baseline code is never cached");

    // The sandbox's limits hold on baseline code: memory, and the deadline.
    node.deploy("m", "misbehave", json!({ "limits": { "memory_mib": 16, "timeout_ms": 300 } })).await;
    assert_eq!(node.service("m").await.status.local.code, Some(Tier::Baseline));
    let r = node.get("/m/alloc/64").await;
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.text().contains("allocation failed"), "{}", r.text());
    assert_eq!(node.get("/m/alloc/4").await.status, 200);
    let r = node.get("/m/loop").await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.error_code().as_deref(), Some("timeout"), "{}", r.text());

    // Released under load: every request answers while the code is swapped.
    let (stop, answered, failed) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (url, stop, answered, failed) =
            (format!("{}/hello/", node.ingress), stop.clone(), answered.clone(), failed.clone());
        tokio::spawn(async move {
            let client = Client::new();
            while !stop.load(Ordering::Relaxed) {
                match client.send(Method::GET, &url, &[], Bytes::new()).await {
                    Ok(r) if r.status == 200 => answered.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };
    // The tier-up thread waits in open(2) for a writer: this write releases it (a bounded
    // wait, so a thread that never reads fails the test instead of hanging it).
    let release = tokio::task::spawn_blocking(move || std::fs::write(&hold, "go"));
    tokio::time::timeout(Duration::from_secs(30), release)
        .await
        .expect("the tier-up thread reads the FIFO")
        .unwrap()
        .unwrap();
    node.wait_optimized("hello").await;
    node.wait_optimized("web").await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert!(answered.load(Ordering::Relaxed) > 0);
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no request failed across the swap");

    let second = "5bf92f3577b34da6a3ce929d0e0e4737";
    assert_eq!(node.request_with(Method::GET, "/hello/", &traced(second)).await.status, 200);
    let run = run_span(&node, second, "hello").await;
    assert!(run.attrs.get("code.tier").is_none(), "optimized runs carry no tier mark: {run:?}");
    node.wait_optimized("m").await;
    assert_eq!(node.metric("nanogrid_compiles_total", "tier=\"optimized\"").await, 3.0);
    assert_eq!(node.metric("nanogrid_services_on_baseline_code", "").await, 0.0);
    assert_eq!(cached(&node), 3, "the optimized code is cached");

    // A restart loads the optimized code from the cache: nothing is compiled again.
    let log_before = node.log().len();
    node.stop();
    node.restart_with(&["--compile", "optimized"]);
    assert_eq!(node.service("hello").await.status.local.code, Some(Tier::Optimized));
    assert!(node.get("/hello/").await.text().starts_with("hello, world!"));
    let log = node.log()[log_before..].to_string();
    assert!(!log.contains("compiled"), "nothing compiled after the restart:\n{log}");
    // `--compile optimized`: a new component waits for Cranelift and never runs baseline code.
    node.deploy("wc", "wordcount", json!({})).await;
    assert_eq!(node.service("wc").await.status.local.code, Some(Tier::Optimized));
    let log = node.log()[log_before..].to_string();
    assert_eq!(log.matches("compiled component").count(), 1, "{log}");
    assert!(!log.contains("compiled baseline code"), "{log}");
}
