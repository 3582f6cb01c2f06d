//! Opt-in instance reuse (`"reuse": {"requests": n}`): one instance serves n requests in
//! sequence, then a fresh one takes over; nothing the host keeps per request (context,
//! trace, kv attribution, output) passes from one request to the next, and an instance that
//! trapped is never reused. The same for wasi:http 0.2 components, whose instance is also
//! not reused when it kept a resource of its request, and for 0.3 ones, whose instance is
//! not reused while a task of the guest's still runs after its response.

use http::Method;
use serde_json::json;

use nanogrid::api::{ServiceDetail, TraceView};

use crate::support::{TestNode, assert_error, parse};
use crate::tracing::attr_int;

/// `/whoami` on `svc`: (the guest's static run count, request id, trace id) and the trace
/// id the node answered with.
async fn whoami(node: &TestNode, svc: &str, headers: &[(&str, String)]) -> (u64, String, String, String) {
    let r = node.request_with(Method::GET, &format!("/{svc}/whoami"), headers).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    let mut f = text.split(' ');
    let runs = f.next().unwrap().parse().unwrap_or_else(|_| panic!("{text}"));
    let (rid, tid) = (f.next().unwrap().to_string(), f.next().unwrap_or("").to_string());
    (runs, rid, tid, r.header("x-trace-id").expect("every answer names its trace").to_string())
}

/// Seven `/whoami`s in sequence on `svc` (deployed with one instance and reuse 3): the
/// guest's static counts 1,2,3,1,2,3,1, each sees its own request's trace, the second's
/// client trace reaches no other, and every request has its own trace and id. Returns
/// the static counts and the trace ids.
async fn seven_in_sequence(node: &TestNode, svc: &str) -> (Vec<u64>, Vec<String>) {
    let client_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let (mut runs, mut traces, mut ids) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..7 {
        // The second request carries the client's trace; the third must not see it.
        let headers =
            if i == 1 { vec![("traceparent", format!("00-{client_trace}-00f067aa0ba902b7-01"))] } else { vec![] };
        let (n, rid, tid, answered) = whoami(node, svc, &headers).await;
        assert_eq!(tid, answered, "the guest sees its own request's trace (request {i})");
        runs.push(n);
        traces.push(tid);
        ids.push(rid);
    }
    assert_eq!(runs, [1, 2, 3, 1, 2, 3, 1], "the guest's static counts the requests of one instance");
    assert_eq!(traces[1], client_trace);
    for (what, v) in [("trace", &traces), ("request id", &ids)] {
        let mut distinct = v.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 7, "every request has its own {what}: {v:?}");
    }
    (runs, traces)
}

/// Each of `traces` (requests to `svc`) records an instantiation in its run span exactly
/// when the guest's static count (`runs`) says the request was its instance's first.
async fn made_instance_iff_first(node: &TestNode, svc: &str, runs: &[u64], traces: &[String]) {
    for (i, t) in traces.iter().enumerate() {
        let v: TraceView = parse(&node.admin().get(&format!("/v1/traces/{t}")).await.unwrap());
        let name = format!("run {svc}");
        let run = v.spans.iter().find(|s| *s.name == name).unwrap_or_else(|| panic!("no run span in {v:?}"));
        let instantiated = attr_int(run, "instantiate_us").unwrap_or(0);
        assert_eq!(instantiated > 0, runs[i] == 1, "request {i} made its instance iff it was first: {:?}", run.attrs);
    }
}

#[tokio::test]
async fn an_instance_serves_n_requests_and_nothing_of_one_request_reaches_the_next() {
    let node = TestNode::start_with_args(true, &["--trace-sample", "1"]).await;
    node.deploy("r", "misbehave", json!({ "instances": 1, "reuse": { "requests": 3 } })).await;
    node.deploy("f", "misbehave", json!({ "instances": 1 })).await;
    let spec = node.service("r").await.spec;
    assert_eq!(spec.reuse.map(|r| r.requests), Some(3), "{spec:?}");

    // One instance, requests in sequence: it serves three, then a fresh one does.
    let (runs, traces) = seven_in_sequence(&node, "r").await;

    // Each run's span counts its own kv calls and instantiation, not the instance's.
    for (i, t) in traces.iter().enumerate() {
        let v: TraceView = parse(&node.admin().get(&format!("/v1/traces/{t}")).await.unwrap());
        let run = v.spans.iter().find(|s| &*s.name == "run r").unwrap_or_else(|| panic!("no run span in {v:?}"));
        let a = &run.attrs;
        assert_eq!(attr_int(run, "kv.cas.count"), Some(1), "request {i}: {a:?}");
        let instantiated = attr_int(run, "instantiate_us").unwrap_or(0);
        if runs[i] == 1 {
            assert!(instantiated > 0, "request {i} made its instance: {a:?}");
        } else {
            assert_eq!(instantiated, 0, "request {i} reused one: {a:?}");
        }
    }

    // Without reuse, every request gets a fresh instance.
    for _ in 0..3 {
        assert_eq!(whoami(&node, "f", &[]).await.0, 1);
    }

    // The seventh request's instance is idle; a trap in it ends it, and the next request
    // gets a fresh one (and no part of the trapped request's output).
    assert_eq!(node.service("r").await.status.local.idle_instances, 1);
    let trap = node.get("/r/trap").await;
    assert_eq!(trap.status, 500, "{}", trap.text());
    assert!(trap.text().contains("misbehave was asked to trap"), "{}", trap.text());
    assert_eq!(whoami(&node, "r", &[]).await.0, 1, "a trapped instance is not reused");
    let after = node.get("/r/trap").await;
    assert_eq!(after.text().matches("misbehave was asked to trap").count(), 1, "{}", after.text());
}

#[tokio::test]
async fn out_of_range_counts_and_unknown_fields_of_reuse_are_refused() {
    let node = TestNode::start().await;
    let r = node.try_deploy("r", "misbehave", json!({ "reuse": { "requests": 0 } })).await;
    let e = assert_error(&r, 400, "bad-request");
    assert!(e.message.as_str().contains("reuse.requests must be between 1 and 1000000"), "{e}");
    let r = node.try_deploy("r", "misbehave", json!({ "reuse": { "requests": 2, "idle_s": 1 } })).await;
    assert_eq!(r.status, 400, "an unknown field is refused: {}", r.text());
    assert!(r.text().contains("idle_s"), "{}", r.text());
    // The CLI flag deploys it.
    let wasm = crate::support::wasm_dir().join("misbehave.wasm");
    let out = node.cli(&["deploy", wasm.to_str().unwrap(), "--name", "r", "--reuse", "4"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(node.service("r").await.spec.reuse.map(|r| r.requests), Some(4));
}

#[tokio::test]
async fn a_chain_is_reused_only_when_every_service_in_it_asks_for_reuse() {
    let node = TestNode::start().await;
    // c1's typed import is served by c5, inside c1's instance (fused).
    node.deploy("c5", "chain-5", json!({ "instances": 1 })).await;
    let bind = json!({ "bench:chain/stage": "c5" });
    node.deploy("c1", "chain-1", json!({ "instances": 1, "bindings": bind, "reuse": { "requests": 10 } })).await;
    let idle = |v: ServiceDetail| Some(v.status.local.idle_instances);
    for _ in 0..2 {
        let r = node.get("/c1/").await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(idle(node.service("c1").await), Some(0), "c5 did not ask for reuse: c1's chain is fresh");
    node.deploy("c5", "chain-5", json!({ "instances": 1, "reuse": { "requests": 10 } })).await;
    for _ in 0..2 {
        let r = node.get("/c1/").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.text().contains("stage-5"), "{}", r.text());
    }
    assert_eq!(idle(node.service("c1").await), Some(1), "both ask: the chain's instance is kept");
}

#[tokio::test]
async fn idle_instances_make_room_when_the_node_runs_out_of_instance_slots() {
    // 8 slots: at most 2 may be idle (a quarter).
    let node = TestNode::start_with_args(true, &["--pool-instances", "8"]).await;
    node.deploy("r", "misbehave", json!({ "instances": 2, "reuse": { "requests": 100 } })).await;
    node.deploy("w", "misbehave", json!({ "instances": 8, "max_queue": 0 })).await;
    // Only optimized code runs in the pooling allocator's slots (a new component's
    // baseline code does not), so wait for it: run alone, this test compiles misbehave.
    node.wait_optimized("r").await;
    node.wait_optimized("w").await;
    // Two at once: two instances of r, both kept idle after.
    let two: Vec<_> = (0..2).map(|_| node.get("/r/sleep/200")).collect();
    for r in futures::future::join_all(two).await {
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(node.service("r").await.status.local.idle_instances, 2);
    // Eight at once on w need every slot: the idle ones give theirs up.
    let eight: Vec<_> = (0..8).map(|_| node.get("/w/sleep/300")).collect();
    for r in futures::future::join_all(eight).await {
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(node.service("r").await.status.local.idle_instances, 0);
    // r still serves (a fresh instance).
    assert_eq!(whoami(&node, "r", &[]).await.0, 1);
}

#[tokio::test]
async fn a_wasi_http_instance_serves_n_requests_and_one_that_keeps_its_response_open_is_dropped() {
    let node = TestNode::start_with_args(true, &["--trace-sample", "1"]).await;
    node.deploy("hr", "http-kv", json!({ "instances": 1, "reuse": { "requests": 3 } })).await;
    node.deploy("hf", "http-kv", json!({ "instances": 1 })).await;
    let (runs, traces) = seven_in_sequence(&node, "hr").await;
    made_instance_iff_first(&node, "hr", &runs, &traces).await;
    for _ in 0..3 {
        assert_eq!(whoami(&node, "hf", &[]).await.0, 1, "without reuse every request is fresh");
    }
    assert_eq!(node.service("hr").await.status.local.idle_instances, 1);

    // The idle instance answers /keep but keeps its response body open: it is dropped, so
    // the body ends and the next request gets a fresh instance.
    let kept = tokio::time::timeout(std::time::Duration::from_secs(20), node.get("/hr/keep"))
        .await
        .expect("the body of /keep ends: the instance holding it open was dropped, not kept");
    assert_eq!(kept.status, 200, "{}", kept.text());
    assert_eq!(kept.text(), "kept");
    assert_eq!(node.service("hr").await.status.local.idle_instances, 0, "the instance that kept its body is gone");
    assert_eq!(whoami(&node, "hr", &[]).await.0, 1);

    // A trap ends the instance too.
    let trap = node.get("/hr/trap").await;
    assert_eq!(trap.status, 500, "{}", trap.text());
    assert!(trap.text().contains("http-kv was asked to trap"), "{}", trap.text());
    assert_eq!(whoami(&node, "hr", &[]).await.0, 1, "a trapped instance is not reused");
}

#[tokio::test]
async fn a_wasi_http_0_3_instance_serves_n_requests_and_one_with_a_task_left_running_is_dropped() {
    let node = TestNode::start_with_args(true, &["--trace-sample", "1"]).await;
    node.deploy("h3r", "http3-kv", json!({ "instances": 1, "reuse": { "requests": 3 } })).await;
    node.deploy("h3f", "http3-kv", json!({ "instances": 1 })).await;
    // Each answer's body is written by a task that ends only after the host has read its
    // trailers: the instance is idle (and kept) once that task has ended.
    let (runs, traces) = seven_in_sequence(&node, "h3r").await;
    made_instance_iff_first(&node, "h3r", &runs, &traces).await;
    for _ in 0..3 {
        assert_eq!(whoami(&node, "h3f", &[]).await.0, 1, "without reuse every request is fresh");
    }
    assert_eq!(node.service("h3f").await.status.local.idle_instances, 0);
    assert_eq!(node.service("h3r").await.status.local.idle_instances, 1);

    // The idle instance answers /linger and leaves a task running: it is dropped (the task
    // would otherwise run on under the next request's context), and the next request gets
    // a fresh instance.
    let lingered = node.get("/h3r/linger").await;
    assert_eq!(lingered.status, 200, "{}", lingered.text());
    assert_eq!(lingered.text(), "lingering");
    assert_eq!(node.service("h3r").await.status.local.idle_instances, 0, "the instance with a task left is gone");
    assert_eq!(whoami(&node, "h3r", &[]).await.0, 1);

    // A trap ends the instance too.
    let trap = node.get("/h3r/trap").await;
    assert_eq!(trap.status, 500, "{}", trap.text());
    assert!(trap.text().contains("http3-kv was asked to trap"), "{}", trap.text());
    assert_eq!(whoami(&node, "h3r", &[]).await.0, 1, "a trapped instance is not reused");
}
