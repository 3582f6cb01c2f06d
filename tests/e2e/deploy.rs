//! Deploying the samples through the admin API and the CLI, invoking, scaling, deleting.

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use serde_json::json;

use crate::support::{TestNode, assert_error, eventually, wasm_dir};

#[tokio::test]
async fn samples_answer_through_ingress() {
    let node = TestNode::start().await;
    node.deploy("hello", "hello", json!({ "instances": 2, "config": { "greeting": "hi" } })).await;
    node.deploy("counter", "counter", json!({ "instances": 2 })).await;
    node.deploy("wordcount", "wordcount", json!({})).await;
    node.deploy("gateway", "gateway", json!({ "instances": 2 })).await;

    let r = node.get("/hello/world?name=Ada").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "hi, Ada! you asked for GET /world?name=Ada\n");
    assert!(r.header("x-request-id").is_some_and(|id| id.len() == 16));
    let r = node.post("/hello/echo", "body!").await;
    assert!(r.text().contains("you sent: body!"), "{}", r.text());

    for expected in 1..=3 {
        let v = node.post("/counter/visits", "").await.json().unwrap();
        assert_eq!(v, json!({ "key": "visits", "value": expected }));
    }
    assert_eq!(node.post("/counter/visits?by=10", "").await.json().unwrap()["value"], 13);
    assert_eq!(node.get("/counter/visits").await.json().unwrap()["value"], 13);
    assert_eq!(node.get("/counter/").await.json().unwrap()["counters"], json!(["visits"]));

    let v = node.post("/wordcount/", r#"{"text": "the cat and the hat"}"#).await.json().unwrap();
    assert_eq!(v["words"], 5);
    assert_eq!(v["unique"], 4);
    assert_eq!(v["top"][0], json!(["the", 2]));
    // The guest's own error (bad input) comes back as its JSON error with its status.
    let r = node.post("/wordcount/", "not json").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code().as_deref(), Some("invalid"), "{}", r.text());

    // gateway fans out to wordcount and counter through invoke.call-all; the caller's
    // request id travels along.
    let client = nanogrid::client::Client::new();
    let url = format!("{}/gateway/", node.ingress);
    let r = client
        .send(Method::POST, &url, &[("x-request-id", "req-abc-1".into())], Bytes::from("one two two"))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-request-id"), Some("req-abc-1"));
    let v = r.json().unwrap();
    assert_eq!(v["request_id"], "req-abc-1");
    assert_eq!(v["stats"]["words"], 3);
    assert_eq!(v["stats"]["top"][0], json!(["two", 2]));
    assert_eq!(v["documents"], 1);
    assert_eq!(node.post("/gateway/", "again").await.json().unwrap()["documents"], 2);

    // The node learns the call graph: two gateway requests, each calling both services.
    let graph: nanogrid::api::GraphView = crate::support::parse(&node.admin().get("/v1/graph").await.unwrap());
    for to in ["wordcount", "counter"] {
        let e = graph.edges.iter().find(|e| e.from == "gateway" && e.to == to).unwrap_or_else(|| panic!("{graph:?}"));
        assert_eq!((e.calls, e.errors), (2, 0), "{e:?}");
        assert!(e.mean_us > 0 && e.max_us >= e.mean_us, "{e:?}");
    }
    assert_eq!(node.metric("nanogrid_calls_total", "from=\"gateway\",to=\"counter\",outcome=\"ok\"").await, 2.0);

    // invoke calls are counted on the callee.
    let counter = node.service("counter").await;
    assert_eq!(counter.status.requests.ok, 8);
}

#[tokio::test]
async fn cli_deploys_scales_lists_invokes_and_removes() {
    let node = TestNode::start().await;
    let hello = wasm_dir().join("hello.wasm");
    let hello = hello.to_str().unwrap();
    let ok = |out: &std::process::Output| {
        assert!(
            out.status.success(),
            "stdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    let out = ok(&node.cli(&["deploy", hello, "--name", "greeter", "--instances", "2", "--config", "greeting=hey"]));
    assert!(out.contains("deployed greeter"), "{out}");
    let out = ok(&node.cli(&["ls"]));
    assert!(out.lines().any(|l| l.starts_with("greeter") && l.contains(" 2 ")), "{out}");
    node.wait_optimized("greeter").await;
    let out = ok(&node.cli(&["ls"]));
    assert!(out.lines().any(|l| l.starts_with("greeter") && l.contains(" optimized ")), "{out}");
    assert_eq!(ok(&node.cli(&["invoke", "greeter", "/x?name=Bo"])), "hey, Bo! you asked for GET /x?name=Bo\n");
    let out = ok(&node.cli(&["invoke", "greeter", "x", "-d", "payload"]));
    assert!(out.contains("POST /x") && out.contains("you sent: payload"), "{out}");

    ok(&node.cli(&["scale", "greeter", "5"]));
    assert_eq!(node.service("greeter").await.spec.instances, 5);
    let bad = node.cli(&["scale", "greeter", "-1"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("between 0 and"), "{}", String::from_utf8_lossy(&bad.stderr));

    let out = ok(&node.cli(&["status"]));
    assert!(out.contains("n1") && out.contains("single") && out.contains("greeter"), "{out}");

    ok(&node.cli(&["rm", "greeter"]));
    assert!(ok(&node.cli(&["ls"])).contains("no services deployed"));
    let gone = node.cli(&["invoke", "greeter"]);
    assert_eq!(gone.status.code(), Some(22));
    assert!(String::from_utf8_lossy(&gone.stdout).contains("not-found"));

    // A wrong token is refused with a message that says what to do.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nanogrid"))
        .args(["ls", "--admin", &node.admin_url, "--token", "wrong"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unauthorized"));

    for sub in ["serve", "up", "deploy", "scale", "ls", "rm", "invoke", "status"] {
        let out = node.cli(&[sub, "--help"]);
        assert!(out.status.success() && out.stdout.len() > 100, "{sub} --help");
    }
}

#[tokio::test]
async fn scale_one_eight_zero_two() {
    let node = TestNode::start().await;
    node.deploy("m", "misbehave", json!({ "instances": 1 })).await;
    assert_eq!(node.get("/m/").await.status, 200);
    let admin = node.admin();
    for n in [8u32, 0, 2] {
        let r = admin.call_json(Method::POST, "/v1/services/m/scale", &json!({ "instances": n })).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let v = node.service("m").await;
        assert_eq!(v.spec.instances, n);
        assert_eq!(v.status.nodes[0].instances, n);
        if n == 0 {
            let r = node.get("/m/").await;
            assert_error(&r, 503, "stopped");
            assert!(r.header("retry-after").is_some());
        } else {
            // 2n requests at once: n run and n wait, so the new limit (not an earlier,
            // higher one) is in force; then all are answered.
            let reqs = futures::future::join_all((0..2 * n).map(|_| node.get("/m/sleep/1500")));
            let watch = async {
                let (want_running, want_queued) = (format!("{n}"), format!("{n}"));
                eventually("n run and n wait", Duration::from_secs(10), || async {
                    let running = node.metric("nanogrid_instances_running", "service=\"m\"").await;
                    let queued = node.metric("nanogrid_queue_depth", "service=\"m\"").await;
                    (running.to_string() == want_running && queued.to_string() == want_queued).then_some(())
                })
                .await
            };
            let (answers, ()) = tokio::join!(reqs, watch);
            for r in answers {
                assert_eq!(r.status, 200, "{}", r.text());
            }
        }
    }
    assert_eq!(node.service("m").await.spec.generation, 4);
}

#[tokio::test]
async fn delete_removes_the_service_and_keeps_its_data() {
    let node = TestNode::start().await;
    node.deploy("counter", "counter", json!({})).await;
    assert_eq!(node.post("/counter/a", "").await.json().unwrap()["value"], 1);
    let admin = node.admin();
    let r = admin.call(Method::DELETE, "/v1/services/counter", None, Bytes::new()).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let deleted: nanogrid::api::Deleted = crate::support::parse(&r);
    assert_eq!((deleted.deleted.as_str(), deleted.spec.name.as_str()), ("counter", "counter"));
    assert_error(&node.post("/counter/a", "").await, 404, "not-found");
    assert_error(&admin.get("/v1/services/counter").await.unwrap(), 404, "not-found");
    assert_error(
        &admin.call(Method::DELETE, "/v1/services/counter", None, Bytes::new()).await.unwrap(),
        404,
        "not-found",
    );
    let list: nanogrid::api::ServiceList = crate::support::parse(&admin.get("/v1/services").await.unwrap());
    assert!(list.services.is_empty(), "{list:?}");
    node.deploy("counter", "counter", json!({})).await;
    assert_eq!(node.post("/counter/a", "").await.json().unwrap()["value"], 2);
}
