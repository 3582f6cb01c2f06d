//! Durable barriers: a service fans out, finishes, and is resumed with every answer; the
//! barrier outlives the node that drove it.

use std::time::Duration;

use nanogrid::api::{BarrierList, BarrierReport, BarrierState, GraphView};
use serde_json::{Value, json};

use crate::support::{TestNode, assert_error, eventually, parse};

/// An error the guest passed on (the SDK's error shape, without the platform's request id).
fn guest_error(r: &nanogrid::client::Reply, status: u16, code: &str) {
    assert_eq!(r.status.as_u16(), status, "body: {}", r.text());
    assert_eq!(r.error_code().as_deref(), Some(code), "body: {}", r.text());
}

#[tokio::test]
async fn a_fan_out_resumes_the_service_with_every_answer() {
    let node = TestNode::start().await;
    node.deploy("wordcount", "wordcount", json!({})).await;
    node.deploy("jobs", "jobs", json!({})).await;
    node.deploy("misbehave", "misbehave", json!({})).await;

    let r = node.post("/jobs/", "the cat\nthe hat sat\n\n  \nend").await;
    assert_eq!(r.status, 202, "{}", r.text());
    let started = r.json().unwrap();
    assert_eq!(started["lines"], 3);
    let id = started["job"].as_str().unwrap().to_string();
    let done: Value = eventually("the job is done", Duration::from_secs(20), || async {
        let r = node.get(&format!("/jobs/{id}")).await;
        (r.status == 200).then(|| r.json().unwrap())
    })
    .await;
    assert_eq!((done["words"].as_u64(), done["lines"].as_u64(), done["failed"].as_u64()), (Some(6), Some(3), Some(0)));
    assert_eq!(done["top"][0], json!(["the", 2]), "{done}");

    // The admin API shows what happened, and which call the barrier waited for.
    let b: BarrierReport = parse(&node.admin().get(&format!("/v1/barriers/{id}")).await.unwrap());
    assert_eq!(b.state, BarrierState::Done, "{b:?}");
    assert_eq!(b.service, "jobs");
    assert_eq!(b.end.as_ref().and_then(|e| e.status), Some(200), "{b:?}");
    assert_eq!(b.answered, 3);
    assert!(b.calls.iter().all(|c| c.status == Some(200) && c.service == "wordcount"), "{b:?}");
    let last = b.waited_on.as_ref().expect("the call waited for").call;
    let slowest = b.calls.iter().map(|c| c.after_ms.unwrap()).max().unwrap();
    assert_eq!(b.calls[last].after_ms, Some(slowest), "{b:?}");
    // The pending index lets go of it once its end is saved (a moment after the end that
    // the report shows).
    eventually("no barrier is pending", Duration::from_secs(10), || async {
        let pending: BarrierList = parse(&node.admin().get("/v1/barriers").await.unwrap());
        pending.pending.is_empty().then_some(())
    })
    .await;
    // The CLI shows the same.
    let out = node.cli(&["barriers", &id]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("done for service jobs"), "{text}");
    assert_eq!(text.matches("wordcount").count(), 3, "{text}");
    assert_eq!(text.matches("<- waited for").count(), 1, "{text}");
    let out = node.cli(&["barriers"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no barriers running"));
    let out = node.cli(&["barriers", "nope"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no barrier \"nope\""));
    assert_eq!(node.metric("nanogrid_barriers_total", "event=\"started\"").await, 1.0);
    assert_eq!(node.metric("nanogrid_barriers_total", "event=\"resumed\"").await, 1.0);
    // The fan-out calls are edges of the call graph like `invoke` calls.
    let g: GraphView = parse(&node.admin().get("/v1/graph").await.unwrap());
    assert!(g.edges.iter().any(|e| e.from == "jobs" && e.to == "wordcount" && e.calls == 3), "{g:?}");

    // Another service cannot read it; unknown ids are named; limits hold.
    let r = node.get(&format!("/misbehave/barrier-peek/{id}")).await;
    guest_error(&r, 404, "not-found");
    assert!(r.text().contains(&id), "{}", r.text());
    let r = node.admin().get("/v1/barriers/nope").await.unwrap();
    assert_error(&r, 404, "not-found");
    let r = node.get("/misbehave/barrier/65").await;
    guest_error(&r, 403, "denied");
    assert!(r.text().contains("the limit is 64"), "{}", r.text());
    let r = node.post("/jobs/", "\n\n").await;
    guest_error(&r, 400, "invalid");
}

#[tokio::test]
async fn a_barrier_outlives_a_kill_and_resumes_after_the_restart() {
    let mut node = TestNode::start_with(false).await;
    node.deploy("misbehave", "misbehave", json!({ "instances": 4 })).await;
    let r = node.get("/misbehave/barrier/3?sleep=1500").await;
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.text();
    // Killed while all three calls sleep: none has answered.
    node.kill();
    node.restart();
    let stored =
        node.barrier_result("misbehave", &id, "the restarted node resumes the barrier", Duration::from_secs(30)).await;
    assert_eq!(stored, "3/3:state", "every call was sent again and the continuation got its state");
    // The promise is at least once: a continuation cut short by the restart may run again.
    let runs: u32 = node.get(&format!("/misbehave/kv-get/resumes-{id}")).await.text().parse().unwrap();
    assert!(runs >= 1, "the continuation ran ({runs} times)");
    let b: BarrierReport = parse(&node.admin().get(&format!("/v1/barriers/{id}")).await.unwrap());
    assert_eq!((b.state, b.takeovers), (BarrierState::Done, 1), "{b:?}");
}

/// A barrier call answered 503 runs once for a service that does not say it is
/// idempotent (the continuation gets the 503), and again until it answers for one that
/// does.
#[tokio::test]
async fn a_barrier_tries_a_failed_call_again_only_for_an_idempotent_service() {
    let node = TestNode::start().await;
    node.deploy("once", "misbehave", json!({ "instances": 4 })).await;
    node.deploy("again", "misbehave", json!({ "instances": 4, "idempotent": true })).await;
    assert!(node.service("again").await.spec.idempotent);
    assert!(!node.service("once").await.spec.idempotent);
    for (svc, stored, runs) in [("once", "0/1:state", "1"), ("again", "1/1:state", "3")] {
        // One call to itself, `GET /flaky/2`: it answers 503 twice, then 200.
        let r = node.get(&format!("/{svc}/barrier/1?path=/flaky/2")).await;
        assert_eq!(r.status, 202, "{}", r.text());
        let id = r.text();
        let got = node.barrier_result(svc, &id, "the barrier resumes its service", Duration::from_secs(30)).await;
        assert_eq!(got, stored, "{svc}: the continuation's count of answered calls");
        assert_eq!(node.get(&format!("/{svc}/kv-get/flaky-runs")).await.text(), runs, "{svc}: runs of the call");
    }
}
