//! Traffic-driven co-location: the leader measures where calls come from and puts a
//! service's odd instances next to its busiest callers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nanogrid::api::GraphView;
use nanogrid::control::experiment::Stage;
use serde_json::json;

use super::driver::{Cluster, eventually};
use super::{formed, serves};
use crate::support::parse;

/// `from → to` as node `i` alone saw it: (calls, calls that ran on another node).
async fn edge(c: &Cluster, i: usize, from: &str, to: &str) -> (u64, u64) {
    let g: GraphView = parse(&c.nodes[i].node.admin().get("/v1/graph?scope=node").await.unwrap());
    g.edges.iter().find(|e| e.from == from && e.to == to).map_or((0, 0), |e| (e.calls, e.remote))
}

// One scenario read top to bottom: its steps share the nodes, ids and figures of the ones before, so it stays one function though longer than 80 lines.
#[tokio::test]
async fn a_hot_invoke_edge_pulls_the_callee_next_to_its_caller() {
    let _cpu = crate::support::latency_sensitive().await;
    let flags = [
        "--colocate-min-rate",
        "5",
        "--traffic-window-ms",
        "500",
        "--experiment-window-ms",
        "2000",
        "--experiment-min-samples",
        "30",
    ];
    let c = Cluster::start_with(3, &flags).await;
    let leader = formed(&c).await;
    c.nodes[0].node.deploy("tail", "chain-invoke", json!({ "instances": 1, "config": { "stage": "2" } })).await;
    let first = eventually("tail is placed", Duration::from_secs(20), || async {
        let p = c.placement(0, "tail").await;
        (p.len() == 1).then(|| p[0].0.clone())
    })
    .await;
    // The caller runs only on a node that does not have the callee.
    let caller = (0..3).find(|&i| c.nodes[i].name != first).unwrap();
    let here = c.nodes[caller].name.clone();
    let spec = json!({ "instances": 2, "placement": [here], "config": { "stage": "1", "next": "tail" } });
    c.nodes[0].node.deploy("head", "chain-invoke", spec).await;
    let body = serves(&c, caller, "/head/", Duration::from_secs(20)).await;
    assert!(body.contains("stage-2"), "{body}");
    let (_, crossed) = edge(&c, caller, "head", "tail").await;
    assert!(crossed >= 1, "before co-location head's calls to tail cross to {first}");
    let metric = c.nodes[caller].node.metric("nanogrid_calls_remote_total", "from=\"head\",to=\"tail\"").await;
    assert_eq!(metric, crossed as f64, "/metrics counts the same calls");

    // Steady traffic through the caller's node until the leader moves tail there.
    let c = Arc::new(c);
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (c, stop, sent, failed) = (c.clone(), stop.clone(), sent.clone(), failed.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let ok = matches!(c.get(caller, "/head/").await, Ok(r) if r.status == 200);
                sent.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let started = Instant::now();
    let want = vec![(here.clone(), 1)];
    eventually("tail moves next to head", Duration::from_secs(30), || async {
        (c.placement(0, "tail").await == want).then_some(())
    })
    .await;
    let moved_after = started.elapsed();
    // The leader shows the demand it acted on.
    let li = c.index_of(&leader);
    let g: GraphView = parse(&c.nodes[li].node.admin().get("/v1/graph").await.unwrap());
    let rows = g.demand.as_ref().map(|d| d.calls.as_slice()).unwrap_or_default();
    assert!(
        rows.iter().any(|r| r.service == "tail" && r.node == here && r.level >= 1),
        "the leader's demand names {here} as hot for tail: {g:?}"
    );
    // The move was an experiment the leader kept: both arms measured, the new one faster.
    // (Read on another node than the placement: it shows the verdict once it has applied it.)
    let e = eventually("the caller's node shows the experiment ended", Duration::from_secs(10), || async {
        let e = c.experiments(caller).await?.experiments.into_iter().find(|e| e.record.service == "tail")?.record;
        (e.stage != Stage::Trial).then_some(e)
    })
    .await;
    eprintln!("experiment {}: {}", e.id, e.verdict);
    assert_eq!((e.stage, e.node.as_str()), (Stage::Kept, here.as_str()), "{e:#?}");
    assert_eq!(e.before, [(first.clone(), 1)].into(), "the old arm is where tail ran: {e:#?}");
    let f = e.figures.as_ref().expect("a judged experiment has figures");
    for (arm, a) in [("old", &f.old), ("new", &f.new)] {
        assert!(a.samples >= 30, "{arm} arm: {f:#?}");
    }
    assert!(f.new.p50_ms.expect("new p50") < f.old.p50_ms.expect("old p50"), "{f:#?}");
    assert!(f.p50_gain.lo > 0.05, "{f:#?}");
    assert!(e.hypothesis.contains("calls/s"), "{e:#?}");
    // Once the new instance serves, calls stay on the node.
    eventually("tail serves on the caller's node", Duration::from_secs(20), || async {
        let v = c.nodes[caller].node.service("tail").await;
        (v.status.local.instances >= 1).then_some(())
    })
    .await;
    // The load is one request at a time: two more answers mean the one in flight when the
    // instance was seen serving has ended, and the next began after it.
    let seen = sent.load(Ordering::Relaxed);
    eventually("a request begun after the move is answered", Duration::from_secs(10), || async {
        (sent.load(Ordering::Relaxed) >= seen + 2).then_some(())
    })
    .await;
    let (calls0, remote0) = edge(&c, caller, "head", "tail").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (calls1, remote1) = edge(&c, caller, "head", "tail").await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!(
        "tail moved from {first} to {here} after {moved_after:?} of load; {sent} requests, {failed} failed; \
         last second: {} calls, {} remote",
        calls1 - calls0,
        remote1 - remote0
    );
    assert!(calls1 > calls0 + 10, "the load kept running ({calls0} → {calls1} calls)");
    assert_eq!(remote1, remote0, "no call crosses nodes once tail runs next to head");
    assert_eq!(failed, 0, "moving the instance failed no request ({sent} sent)");
}

/// A service that calls itself with one instance per node: the calls find the instance
/// here busy (the caller holds it) and run on the other nodes instead of waiting for it.
#[tokio::test]
async fn calls_that_find_every_local_instance_busy_run_on_another_node() {
    let c = Cluster::start(3).await;
    formed(&c).await;
    let spec = json!({ "instances": 3, "queue_timeout_ms": 2000 });
    c.nodes[0].node.deploy("misbehave", "misbehave", spec).await;
    for i in 0..3 {
        serves(&c, i, "/misbehave/", Duration::from_secs(20)).await;
    }
    // n1 must see through gossip that the others serve it too, and hold exactly one
    // instance itself: a placement made before every node served may have given n1 two
    // for a moment, and a call then runs next to its caller.
    eventually("n1 sees every node serving misbehave, one instance each", Duration::from_secs(20), || async {
        let v = c.nodes[0].node.service("misbehave").await;
        let nodes = &v.status.nodes;
        let spread = nodes.len() == 3 && nodes.iter().all(|n| n.serving == Some(true) && n.instances == 1);
        (spread && v.status.local.instances == 1).then_some(())
    })
    .await;
    let metric = ("nanogrid_forwarded_total", "outcome=\"answered\"");
    let before = c.nodes[0].node.metric(metric.0, metric.1).await;
    // Two calls that each sleep 300 ms, made while the request holds n1's only instance.
    let r = c.get(0, "/misbehave/fanout/2?sleep=300").await.unwrap();
    assert_eq!((r.status.as_u16(), r.text()), (200, "2 calls answered".to_string()));
    let after = c.nodes[0].node.metric(metric.0, metric.1).await;
    let local = c.nodes[0].node.service("misbehave").await.status.local;
    assert!(after >= before + 2.0, "both calls went to other nodes ({before} → {after} forwarded; n1: {local:?})");
}
