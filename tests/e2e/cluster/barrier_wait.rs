//! Barrier wait attribution drives re-provisioning: a fan-out whose last answer keeps
//! coming from a callee on another node gets that callee moved next to it (its call rate
//! alone is far below the co-location threshold), and one whose slowest callee is already
//! there but queues gets it one more instance; either way the barriers' wait drops.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nanogrid::api::{BarrierReport, BarrierState, BarrierStats, ServiceDetail};
use nanogrid::control::events::EventKind;
use nanogrid::control::experiment::{Change, Stage};
use serde_json::json;

use super::driver::{Cluster, eventually};
use super::formed;
use crate::support::parse;

/// Start one barrier through `fan` on node `i` and return its wait (fan-out to last
/// answer, ms) and the callee it waited on, once it has ended.
async fn one_barrier(c: &Cluster, i: usize) -> (u64, String) {
    let r = c.get(i, "/fan/barrier/1?also=slow").await.unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.text();
    let b = ended_barrier(c, i, &id).await;
    let w = b.waited_on.unwrap_or_else(|| panic!("no call waited for in barrier {id}"));
    (w.after_ms, w.service)
}

/// Barrier `id` as node `i` reports it, once it is done.
async fn ended_barrier(c: &Cluster, i: usize, id: &str) -> BarrierReport {
    eventually("the barrier ends", Duration::from_secs(20), || async {
        let r = c.nodes[i].node.admin().get(&format!("/v1/barriers/{id}")).await.ok()?;
        let v: BarrierReport = serde_json::from_slice(&r.body).ok()?;
        (v.state == BarrierState::Done).then_some(v)
    })
    .await
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test]
async fn a_callee_that_ends_the_barriers_from_another_node_is_moved_next_to_them() {
    let _cpu = crate::support::latency_sensitive().await;
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
    // Bounded in time, not in barriers: on a loaded machine a trial can lose to noise and
    // be rolled back; after its cool-down the leader tries again.
    let until = tokio::time::Instant::now() + Duration::from_secs(120);
    while tokio::time::Instant::now() < until {
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
    if !moved {
        let li = c.index_of(&leader);
        let exps = c.nodes[li].node.admin().get("/v1/experiments").await.unwrap().text();
        panic!("slow was never moved next to fan (leader {leader}); experiments: {exps}");
    }
    assert!(before.len() >= 2, "barriers waited on slow before the move: {before:?}");
    let stats: BarrierStats =
        serde_json::from_value(c.nodes[caller].node.admin().get("/v1/barriers/stats").await.unwrap().json().unwrap())
            .unwrap();
    let row = stats.callees.iter().find(|r| r.callee == "slow").expect("a row for slow");
    assert!(row.wait_share >= 0.5, "{stats:#?}");
    assert!(row.p99_ms.is_some(), "{row:#?}");
    let i = c.index_of(&leader);
    let events = c.events(i, 200).await.expect("the events list");
    let placed = events.events.iter().any(|e| e.kind == EventKind::Placement && e.service.as_deref() == Some("slow"));
    assert!(placed, "the move is an event: {events:#?}");
    let exps = c.experiments(i).await.expect("the experiments list");
    let e = &exps.experiments.iter().find(|e| e.record.service == "slow").expect("an experiment on slow").record;
    assert_eq!(e.stage, Stage::Kept, "{e:#?}");
    assert!(e.hypothesis.contains("barrier wait"), "the wait share made it hot: {e:#?}");
    // The barriers' wait dropped: the trial's arms ran interleaved in time under the same
    // load, timed in µs (a before/after comparison of whole-ms waits measures whatever
    // else the machine was doing too: on a loaded CI run both medians read 10 ms).
    let f = e.figures.as_ref().expect("a judged experiment has figures");
    let (old, new) = (f.old.p50_ms.unwrap_or(f64::INFINITY), f.new.p50_ms.expect("the new arm's p50"));
    assert!(new < old && f.p50_gain.lo > 0.0, "{f:#?}");

    // Now next to its caller: barriers still end, waiting on slow here.
    let mut after = Vec::new();
    for _ in 0..15 {
        after.push(one_barrier(&c, caller).await.0);
    }
    let (b, a) = (median(before.clone()), median(after.clone()));
    println!("barrier wait: median {b} ms while slow was remote ({before:?}), {a} ms next to fan ({after:?})");
    let m = c.nodes[caller].node.metric("nanogrid_barrier_waited_on_total", "from=\"fan\",to=\"slow\"").await;
    assert!(m >= before.len() as f64, "{m}");
}

// One scenario read top to bottom: its steps share the nodes, ids and figures of the ones before, so it stays one function though longer than 80 lines.
#[tokio::test]
async fn a_callee_that_queues_next_to_its_barriers_gets_one_more_instance_after_a_switchback_trial() {
    let _cpu = crate::support::latency_sensitive().await;
    // Only the wait share makes slow hot; trials switch the extra instance every 2 s.
    let flags = [
        "--colocate-min-rate",
        "100000",
        "--traffic-window-ms",
        "3000",
        "--experiment-window-ms",
        "12000",
        "--experiment-min-samples",
        "10",
    ];
    let c = Arc::new(Cluster::start_with(3, &flags).await);
    let leader = formed(&c).await;
    let (i, here) = (1, c.nodes[1].name.clone());
    // Both on one node: co-location has nothing to move, but slow's one instance queues.
    c.nodes[0].node.deploy("slow", "misbehave", json!({ "instances": 1, "placement": [here] })).await;
    c.nodes[0].node.deploy("fan", "misbehave", json!({ "instances": 4, "placement": [here] })).await;
    super::serves(&c, i, "/slow/", Duration::from_secs(20)).await;
    super::serves(&c, i, "/fan/", Duration::from_secs(20)).await;

    // Open-loop load in bursts: every 195 ms three barriers at once, each one call of 60 ms
    // to slow (its only callee, so it always answers last, and its call's time is the
    // barrier's wait): 92 % of one instance. A steady beat (one every 65 ms) queues only
    // by the machine's jitter, so the trial's gain depended on the machine (3.7 % on a
    // quiet one, under the 5 % rule); bursts queue by construction: with one instance the
    // calls of a burst take 60, 120 and 180 ms (p50 120), with two 60, 60 and 120 (p50 60).
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (c, stop) = (c.clone(), stop.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(195));
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                for _ in 0..3 {
                    let c = c.clone();
                    tokio::spawn(async move { c.get(i, "/fan/barrier/0?also=slow&sleep=60").await });
                }
            }
        })
    };

    let li = c.index_of(&leader);
    let e = eventually("a count trial for slow ends", Duration::from_secs(90), || async {
        let e = c.experiments(li).await?.experiments.into_iter().find(|e| e.record.service == "slow")?.record;
        (e.stage != Stage::Trial).then_some(e)
    })
    .await;
    assert_eq!(e.change, Change::AddInstance { from: 1 }, "{e:#?}");
    assert_eq!(e.node, here, "{e:#?}");
    assert!(e.hypothesis.contains("barrier wait"), "the wait share made it hot: {e:#?}");
    assert!(e.inputs.get("queued").is_some_and(|q| *q >= 0.2), "it queued: {e:#?}");
    let f = e.figures.as_ref().expect("a judged experiment has figures");
    assert!(f.old.arrangement.starts_with("1 instances"), "{f:#?}");
    assert!(f.new.arrangement.starts_with("2 instances"), "{f:#?}");
    assert!(f.old.samples + f.old.errors >= 10 && f.new.samples + f.new.errors >= 10, "{f:#?}");
    assert_eq!(e.stage, Stage::Kept, "one more instance of a queueing callee wins: {e:#?}");
    // The arms ran interleaved in time under the same load (a before/after comparison
    // would measure whatever else the machine was doing too): the barriers' wait, which
    // is this call's time, dropped with the extra instance. On a slow machine the single
    // instance's queue overflows and calls time out: they count as slower than any answer
    // (the old p50 may be "failed", null).
    let (old, new) = (f.old.p50_ms.unwrap_or(f64::INFINITY), f.new.p50_ms.expect("the new arm's p50"));
    assert!(new < old && f.p50_gain.lo > 0.05, "{f:#?}");

    // Kept: the count is 2, both on the node, and barriers still end.
    eventually("slow has two instances on its node", Duration::from_secs(20), || async {
        let p = c.placement(i, "slow").await;
        (p == vec![(here.clone(), 2)]).then_some(())
    })
    .await;
    let spec = parse::<ServiceDetail>(&c.nodes[0].node.admin().get("/v1/services/slow").await.unwrap()).spec;
    assert_eq!(spec.instances, 2, "{spec:?}");
    // Every node records the new count once it has applied it (a moment after node i).
    eventually("the new count is an event on every node", Duration::from_secs(10), || async {
        for j in 0..3 {
            let scaled = c.events(j, 500).await?.events.iter().any(|ev| {
                ev.kind == EventKind::Scale
                    && ev.service.as_deref() == Some("slow")
                    && (ev.from, ev.to) == (Some(1), Some(2))
            });
            if !scaled {
                return None;
            }
        }
        Some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    // The backlog the load left (continuations run on fan too) may refuse a new barrier
    // for a moment.
    let id = eventually("a barrier is accepted after the load", Duration::from_secs(20), || async {
        let r = c.get(i, "/fan/barrier/0?also=slow&sleep=60").await.ok()?;
        (r.status == 202).then(|| r.text())
    })
    .await;
    let b = ended_barrier(&c, i, &id).await;
    let w = b.waited_on.as_ref().unwrap_or_else(|| panic!("{b:?}"));
    assert_eq!(w.service, "slow", "{b:?}");
    println!("count trial: {}; a barrier after it waited {} ms", e.verdict, w.after_ms);
}
