//! Barrier wait attribution drives co-location: a fan-out whose last answer keeps coming
//! from a callee on another node gets that callee moved next to it (its call rate alone is
//! far below the co-location threshold), and the barriers' wait drops.

use std::time::Duration;

use serde_json::{Value, json};

use super::driver::{Cluster, eventually};
use super::formed;

/// Start one barrier through `fan` on node `i` and return its wait (fan-out to last
/// answer, ms) and the callee it waited on, once it has ended.
async fn one_barrier(c: &Cluster, i: usize) -> (u64, String) {
    let r = c.get(i, "/fan/barrier/1?also=slow").await.unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.text();
    let b: Value = eventually("the barrier ends", Duration::from_secs(20), || async {
        let v = c.nodes[i].node.admin().get(&format!("/v1/barriers/{id}")).await.ok()?.json().ok()?;
        (v["state"] == "done").then_some(v)
    })
    .await;
    (b["waited_on"]["after_ms"].as_u64().unwrap(), b["waited_on"]["service"].as_str().unwrap().to_string())
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test]
async fn a_callee_that_ends_the_barriers_from_another_node_is_moved_next_to_them() {
    // A threshold no call rate here reaches: only the wait share can make slow hot.
    let flags = [
        "--colocate-min-rate",
        "100000",
        "--traffic-window-ms",
        "500",
        "--experiment-window-ms",
        "2000",
        "--experiment-min-samples",
        "10",
    ];
    let c = Cluster::start_with(3, &flags).await;
    let leader = formed(&c).await;
    c.nodes[0].node.deploy("slow", "misbehave", json!({ "instances": 1 })).await;
    let first = eventually("slow is placed", Duration::from_secs(20), || async {
        let p = c.placement(0, "slow").await;
        (p.len() == 1).then(|| p[0].0.clone())
    })
    .await;
    let caller = (0..3).find(|&i| c.nodes[i].name != first).unwrap();
    let here = c.nodes[caller].name.clone();
    c.nodes[0].node.deploy("fan", "misbehave", json!({ "instances": 2, "placement": [here] })).await;
    super::serves(&c, caller, "/fan/", Duration::from_secs(20)).await;

    // While slow is elsewhere its answer arrives last (its call crosses the network). The
    // move is an experiment first (an instance beside the old one, half the calls each):
    // only barriers before it count as "before".
    let mut before = Vec::new();
    let mut moved = false;
    let (old, new) = (vec![(first.clone(), 1)], vec![(here.clone(), 1)]);
    for _ in 0..300 {
        let placed = c.placement(caller, "slow").await;
        if placed == new {
            moved = true;
            break;
        }
        let (ms, on) = one_barrier(&c, caller).await;
        if on == "slow" && placed == old {
            before.push(ms);
        }
    }
    assert!(moved, "slow was never moved next to fan (leader {leader})");
    assert!(before.len() >= 2, "barriers waited on slow before the move: {before:?}");
    let stats = c.nodes[caller].node.admin().get("/v1/barriers/stats").await.unwrap().json().unwrap();
    let row = stats["callees"].as_array().unwrap().iter().find(|r| r["callee"] == "slow").cloned().unwrap();
    assert!(row["wait_share"].as_f64().unwrap() >= 0.5, "{stats}");
    assert!(row["p99_ms"].as_f64().is_some(), "{row}");
    let i = c.index_of(&leader);
    let events = c.nodes[i].node.admin().get("/v1/events?limit=200").await.unwrap().json().unwrap();
    let placed =
        events["events"].as_array().unwrap().iter().any(|e| e["kind"] == "placement" && e["service"] == "slow");
    assert!(placed, "the move is an event: {events}");
    let exps: Value = c.nodes[i].node.admin().get("/v1/experiments").await.unwrap().json().unwrap();
    let e = exps["experiments"].as_array().unwrap().iter().find(|e| e["service"] == "slow").cloned().unwrap();
    assert_eq!(e["stage"], "kept", "{e:#}");
    assert!(e["hypothesis"].as_str().unwrap().contains("barrier wait"), "the wait share made it hot: {e:#}");

    // Now next to its caller: the barriers' wait drops.
    let mut after = Vec::new();
    for _ in 0..15 {
        after.push(one_barrier(&c, caller).await.0);
    }
    let (b, a) = (median(before.clone()), median(after.clone()));
    println!("barrier wait: median {b} ms while slow was remote ({before:?}), {a} ms next to fan ({after:?})");
    assert!(a < b, "the barriers' wait did not drop: {b} ms before, {a} ms after");
    let m = c.nodes[caller].node.metric("nanogrid_barrier_waited_on_total", "from=\"fan\",to=\"slow\"").await;
    assert!(m >= before.len() as f64, "{m}");
}
