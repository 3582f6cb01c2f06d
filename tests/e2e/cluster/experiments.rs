//! Re-provisioning as an experiment: a move call traffic suggests is tried beside the old
//! arrangement, judged on both arms' latency, and kept, rolled back, or (in `propose`
//! mode) held until a person approves it. The kept case is in `colocate`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nanogrid::api::ExperimentView;
use nanogrid::control::events::EventKind;
use nanogrid::control::experiment::{Experiment, Reprovision, Stage};
use serde_json::{Value, json};

use super::driver::{Cluster, eventually};
use super::{formed, holds_for, serves};

/// Calls `path` on node `i` one after another until the returned flag is set.
fn load(c: &Arc<Cluster>, i: usize, path: &str) -> (Arc<AtomicBool>, tokio::task::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (c, s, path) = (c.clone(), stop.clone(), path.to_string());
    let task = tokio::spawn(async move {
        while !s.load(Ordering::Relaxed) {
            let _ = c.get(i, &path).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    (stop, task)
}

/// `serve` flags with a short traffic window, co-location from `rate` calls/s and
/// experiments of `window_ms` needing `min` calls per arm, plus `more`.
fn flags(rate: &str, window_ms: &str, min: &str, more: &[&'static str]) -> Vec<String> {
    let base = ["--colocate-min-rate", rate, "--traffic-window-ms", "500", "--experiment-window-ms", window_ms];
    let mut f: Vec<String> = base.iter().map(|s| s.to_string()).collect();
    f.extend(["--experiment-min-samples".to_string(), min.to_string()]);
    f.extend(more.iter().map(|s| s.to_string()));
    f
}

async fn start(flags: &[String]) -> Arc<Cluster> {
    let f: Vec<&str> = flags.iter().map(String::as_str).collect();
    Arc::new(Cluster::start_with(3, &f).await)
}

/// Until every node shows the experiment about `tail` on `here` passing `check`.
async fn every_node_shows(c: &Cluster, here: &str, what: &str, check: impl Fn(&Experiment) -> bool) {
    eventually(what, Duration::from_secs(10), || async {
        for j in 0..3 {
            if !check(&experiment(c, j, "tail", here).await?.record) {
                return None;
            }
        }
        Some(())
    })
    .await;
}

/// `nanogrid ACTION ID` (approve or reject) through node `i`: it succeeds; its output.
fn decide(c: &Cluster, i: usize, action: &str, id: &str) -> String {
    let out = c.nodes[i].node.cli(&[action, id]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{action}: {text} {}", String::from_utf8_lossy(&out.stderr));
    text
}

/// The newest experiment about `service` on `node`, as node `i` shows it.
async fn experiment(c: &Cluster, i: usize, service: &str, node: &str) -> Option<ExperimentView> {
    c.experiments(i).await?.experiments.into_iter().find(|e| e.record.service == service && e.record.node == node)
}

/// The two-stage chain `head` → `tail` deployed [`across`] nodes.
async fn chain_across(c: &Cluster) -> (usize, String, String) {
    across(
        c,
        ("tail", "chain-invoke", json!({ "stage": "2" })),
        ("head", "chain-invoke", json!({ "stage": "1", "next": "tail" })),
    )
    .await
}

/// Deploy `callee` (1 instance) and, on a node without it, `caller` (2 instances there);
/// the caller's node index and name, and where the callee first ran.
async fn across(c: &Cluster, callee: (&str, &str, Value), caller: (&str, &str, Value)) -> (usize, String, String) {
    let mut spec = json!({ "instances": 1 });
    spec["config"] = callee.2;
    c.nodes[0].node.deploy(callee.0, callee.1, spec).await;
    let first = eventually("the callee is placed", Duration::from_secs(20), || async {
        let p = c.placement(0, callee.0).await;
        (p.len() == 1).then(|| p[0].0.clone())
    })
    .await;
    let i = (0..3).find(|&i| c.nodes[i].name != first).unwrap();
    let here = c.nodes[i].name.clone();
    c.nodes[0]
        .node
        .deploy(caller.0, caller.1, json!({ "instances": 2, "placement": [here], "config": caller.2 }))
        .await;
    serves(c, i, &format!("/{}/", caller.0), Duration::from_secs(20)).await;
    (i, here, first)
}

#[tokio::test]
async fn a_move_that_does_not_speed_calls_up_is_rolled_back() {
    let _cpu = crate::support::latency_sensitive().await;
    let c = start(&flags("1", "4000", "20", &[])).await;
    formed(&c).await;
    // The callee spends 400 ms in its own sleep: the hop a move saves is a few percent.
    let (i, here, first) = across(&c, ("sleepy", "misbehave", json!({})), ("caller", "misbehave", json!({}))).await;
    let (stop, task) = load(&c, i, "/caller/call-path?to=sleepy&path=/sleep/400");
    let e = eventually("the experiment on sleepy ends", Duration::from_secs(90), || async {
        let e = experiment(&c, 0, "sleepy", &here).await?.record;
        (e.stage != Stage::Trial).then_some(e)
    })
    .await;
    eprintln!("sleepy on {here}: {}", e.verdict);
    assert_eq!(e.stage, Stage::RolledBack, "{e:#?}");
    let f = e.figures.as_ref().expect("a judged experiment has figures");
    for (arm, a) in [("old", &f.old), ("new", &f.new)] {
        assert!(a.samples >= 20, "{arm} arm: {f:#?}");
        assert!(a.p50_ms.is_some_and(|ms| ms >= 400.0), "the sleep dominates both arms: {f:#?}");
    }
    assert!(f.p50_gain.lo <= 0.05, "the gain's interval reaches below 5 %: {f:#?}");
    assert!(e.verdict.contains("not clearly better"), "{e:#?}");
    assert_eq!(e.before, [(first.clone(), 1)].into(), "{e:#?}");
    // The trial instance goes; sleepy stays where it was.
    let back = vec![(first.clone(), 1)];
    eventually("sleepy is back on its old arrangement", Duration::from_secs(20), || async {
        (c.placement(0, "sleepy").await == back).then_some(())
    })
    .await;
    // Traffic stays hot, but a rolled-back move is not tried again during its cool-down
    // (20 windows): three seconds (six traffic windows) later there is still only the one
    // experiment (an absence, so watched for a bounded time).
    holds_for(Duration::from_secs(3), || async {
        let all = c.experiments(1).await.expect("the experiments list");
        let tries = all.experiments.iter().filter(|x| x.record.service == "sleepy").count();
        assert_eq!(tries, 1, "{all:#?}");
        assert_eq!(c.placement(0, "sleepy").await, back);
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    task.await.unwrap();
    let events = c.events(2, 200).await.expect("the events list");
    let words: Vec<&str> =
        events.events.iter().filter(|e| e.kind == EventKind::Experiment).map(|e| e.reason.as_str()).collect();
    assert!(words.iter().any(|w| w.contains("started")) && words.iter().any(|w| w.contains("rolled")), "{words:?}");
}

/// Under `--reprovision propose`: a winning move of `tail` next to `head`, held for a
/// person's decision while the load runs. Returns the cluster, the experiment, tail's trial
/// node and its node before, the placement while it waits, and the load's stop flag and task.
async fn pending_move() -> (Arc<Cluster>, Experiment, (String, String), Vec<(String, u64)>, Load) {
    let c = start(&flags("5", "2000", "30", &["--reprovision", "propose"])).await;
    formed(&c).await;
    let (i, here, first) = chain_across(&c).await;
    let load = load(&c, i, "/head/");
    let e = eventually("the experiment on tail ends", Duration::from_secs(90), || async {
        let e = experiment(&c, 1, "tail", &here).await?.record;
        (e.stage != Stage::Trial).then_some(e)
    })
    .await;
    eprintln!("tail on {here}: {}", e.verdict);
    assert_eq!(e.stage, Stage::Pending, "the move wins and waits: {e:#?}");
    assert!(e.figures.as_ref().is_some_and(|f| f.won), "{e:#?}");
    // Nothing applies to all traffic yet: the old instance stays beside the trial one,
    // while the leader keeps judging windows.
    let mut seen = c.placement(0, "tail").await;
    seen.sort();
    let mut want = vec![(first.clone(), 1), (here.clone(), 1)];
    want.sort();
    assert_eq!(seen, want);
    // Experiments are Raft-replicated control state: another node shows the verdict once it
    // has applied the entry, a moment after the node that answered first.
    every_node_shows(&c, &here, "every node shows the experiment pending", |e| e.stage == Stage::Pending).await;
    (c, e, (here, first), want, load)
}

type Load = (Arc<AtomicBool>, tokio::task::JoinHandle<()>);

#[tokio::test]
async fn in_propose_mode_a_winning_move_waits_for_approval() {
    let _cpu = crate::support::latency_sensitive().await;
    let (c, e, (here, _first), want, (stop, task)) = pending_move().await;
    holds_for(Duration::from_secs(3), || async {
        let again = experiment(&c, 2, "tail", &here).await.unwrap().record;
        assert_eq!(again.stage, Stage::Pending, "{again:#?}");
        let mut still = c.placement(0, "tail").await;
        still.sort();
        assert_eq!(still, want, "no move without approval");
    })
    .await;

    // `nanogrid experiments` shows it; `nanogrid approve ID` applies it.
    let id = e.id.to_string();
    let out = c.nodes[2].node.cli(&["experiments"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains(&format!("#{id} pending")) && text.contains("p50"), "{text}");
    let text = decide(&c, 2, "approve", &id);
    assert!(text.contains(&format!("#{id} kept")) && text.contains("approved"), "{text}");
    let moved = vec![(here.clone(), 1)];
    eventually("tail moves next to head once approved", Duration::from_secs(20), || async {
        (c.placement(0, "tail").await == moved).then_some(())
    })
    .await;
    // A second approval is refused: it is no longer pending.
    let out = c.nodes[0].node.cli(&["approve", &id]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("not pending"), "{err}");
    stop.store(true, Ordering::Relaxed);
    task.await.unwrap();
}

/// `nanogrid reject ID` on a pending move: the trial instance goes, tail stays where it
/// was, and the move is not tried again at once (the cooldown).
#[tokio::test]
async fn in_propose_mode_a_rejected_move_is_rolled_back() {
    let _cpu = crate::support::latency_sensitive().await;
    let (c, e, (here, first), _, (stop, task)) = pending_move().await;
    let id = e.id.to_string();
    let text = decide(&c, 1, "reject", &id);
    assert!(text.contains(&format!("#{id} rolled-back")) && text.contains("rejected"), "{text}");
    let back = vec![(first.clone(), 1)];
    eventually("the trial instance of tail goes once rejected", Duration::from_secs(20), || async {
        (c.placement(0, "tail").await == back).then_some(())
    })
    .await;
    every_node_shows(&c, &here, "every node shows the experiment rolled back", |e| {
        e.stage == Stage::RolledBack && e.verdict.contains("rejected")
    })
    .await;
    // The load still makes tail's node hot for it, but a rejected move waits out its
    // cooldown (20 windows): no new trial, no move.
    holds_for(Duration::from_secs(4), || async {
        assert_eq!(c.placement(0, "tail").await, back, "tail stays where it was");
        let latest = experiment(&c, 0, "tail", &here).await.unwrap().record;
        assert_eq!(latest.id, e.id, "no new experiment on tail: {latest:#?}");
    })
    .await;
    // Neither decision applies twice.
    for action in ["reject", "approve"] {
        let out = c.nodes[2].node.cli(&[action, &id]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("not pending"), "{action}: {err}");
    }
    stop.store(true, Ordering::Relaxed);
    task.await.unwrap();
}

#[tokio::test]
async fn with_reprovision_off_hot_traffic_moves_nothing() {
    let c = start(&flags("5", "30000", "100", &["--reprovision", "off"])).await;
    let leader = formed(&c).await;
    let (i, here, first) = chain_across(&c).await;
    let (stop, task) = load(&c, i, "/head/");
    // The leader sees the caller's node as hot for tail...
    let li = c.index_of(&leader);
    eventually("the leader's demand names the caller's node hot for tail", Duration::from_secs(30), || async {
        let r = c.nodes[li].node.admin().get("/v1/graph").await.ok()?;
        let g: nanogrid::api::GraphView = serde_json::from_slice(&r.body).ok()?;
        g.demand?.calls.iter().any(|r| r.service == "tail" && r.node == here && r.level >= 1).then_some(())
    })
    .await;
    // ... and, over the next windows (an absence, watched for a bounded time), neither
    // tries nor makes a move.
    let there = vec![(first, 1)];
    holds_for(Duration::from_secs(3), || async {
        let v = c.experiments(li).await.expect("the experiments list");
        assert_eq!(v.mode, Reprovision::Off);
        assert!(v.experiments.is_empty(), "{v:#?}");
        assert_eq!(c.placement(0, "tail").await, there);
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    task.await.unwrap();
}
