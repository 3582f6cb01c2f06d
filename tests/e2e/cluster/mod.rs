//! Cluster scenarios (issues 6 and 7, and traffic-driven co-location): three or four real
//! node processes on loopback, driven by [`driver::Cluster`]. Every wait is bounded; the
//! figures a scenario measures (election time, error window) are asserted against the
//! issue's bounds and printed.

mod autoscale;
mod barrier_wait;
mod barriers;
mod bootstrap;
mod colocate;
mod console;
mod driver;
mod experiments;
mod forwarding;
mod grid;
#[path = "../../../chaos/src/linearizable.rs"]
mod linearizable;
mod partitions;
mod peer_cut;
mod powerloss;
mod security;
mod store;
mod traces;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::Method;
use serde_json::json;

use nanogrid::api::{GridView, Health, Role, ServiceDetail, Uploaded};

use crate::support::assert_error;
use driver::{Cluster, eventually};

const FORM: Duration = Duration::from_secs(30);

async fn formed(c: &Cluster) -> String {
    let all: Vec<usize> = (0..c.nodes.len()).collect();
    eventually("the cluster has one agreed leader", FORM, || c.agreed_leader(&all)).await
}

/// Check `what` on every poll (every 100 ms) for `window`: an absence is watched for a
/// bounded time, and a change at any moment of it fails.
pub(super) async fn holds_for<F, Fut>(window: Duration, mut what: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let until = tokio::time::Instant::now() + window;
    while tokio::time::Instant::now() < until {
        what().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Until node `i` answers `path` with 200; returns the body.
async fn serves(c: &Cluster, i: usize, path: &str, within: Duration) -> String {
    let what = format!("{} serves {path}", c.nodes[i].name);
    eventually(&what, within, || async move {
        let r = c.get(i, path).await.ok()?;
        (r.status == 200).then(|| r.text())
    })
    .await
}

async fn placement_is(c: &Cluster, i: usize, service: &str, want: &[(&str, u64)]) {
    let want: Vec<(String, u64)> = want.iter().map(|(n, k)| (n.to_string(), *k)).collect();
    let what = format!("{service} is placed as {want:?}");
    eventually(&what, Duration::from_secs(20), || {
        let want = want.clone();
        async move { (c.placement(i, service).await == want).then_some(()) }
    })
    .await;
}

// One scenario read top to bottom: its steps share the nodes, ids and figures of the ones before, so it stays one function though longer than 80 lines.
#[tokio::test]
async fn three_nodes_form_a_cluster_and_serve_a_deploy_from_every_node() {
    let c = Cluster::start(3).await;
    let leader = formed(&c).await;
    let status = c.status(0).await.unwrap();
    assert_eq!(status.nodes.len(), 3, "{status:?}");
    assert!(status.nodes.iter().all(|n| n.role == Role::Voter && n.live), "{status:?}");
    assert!(status.term >= 1);

    // Deploy through node 1 only; nodes 2 and 3 fetch the component from a peer by digest.
    c.nodes[0].node.deploy("hello", "hello", json!({ "instances": 3 })).await;
    placement_is(&c, 2, "hello", &[("n1", 1), ("n2", 1), ("n3", 1)]).await;
    for i in [1, 2] {
        let body = serves(&c, i, "/hello/x?name=grid", Duration::from_secs(10)).await;
        assert_eq!(body, "hello, grid! you asked for GET /x?name=grid\n");
        let local = c.nodes[i].node.service("hello").await.status.local;
        assert_eq!(local.instances, 1, "{local:?}");
        assert!(c.nodes[i].node.log().contains("fetched component from peer"), "node {i} fetched by digest");
    }

    // A deploy returns when the service serves: right after it, every node answers (the
    // digest is known everywhere now). Before, nodes answered 404 or 503 for 0.1-0.9 s.
    let answer = c.nodes[0].node.deploy("greet", "hello", json!({ "instances": 1 })).await;
    assert!(answer.not_serving_yet().is_empty(), "{answer:?}");
    for i in 0..3 {
        let r = c.get(i, "/greet/now").await.unwrap();
        assert_eq!(r.status, 200, "{} right after the deploy returned: {}", c.nodes[i].name, r.text());
    }

    // A service whose placement names no live node is not waited for: the answer comes
    // without the ready wait (5 s) and names every node as not serving it.
    let t = std::time::Instant::now();
    let answer = c.nodes[0].node.deploy("nowhere", "hello", json!({ "instances": 1, "placement": ["n9"] })).await;
    let waited = t.elapsed();
    assert_eq!(answer.not_serving_yet(), ["n1", "n2", "n3"], "{answer:?}");
    assert!(waited < Duration::from_secs(4), "an unplaceable deploy waited {waited:?}");

    // Admin writes through a follower are forwarded to the leader; reads anywhere agree.
    let follower = (0..3).find(|&i| c.nodes[i].name != leader).unwrap();
    let r = c.nodes[follower].node.cli(&["scale", "hello", "6"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    for i in 0..3 {
        placement_is(&c, i, "hello", &[("n1", 2), ("n2", 2), ("n3", 2)]).await;
    }

    // One instance in the cluster: every node still answers, two of them by forwarding.
    c.nodes[0].node.cli(&["scale", "hello", "1"]);
    let row = eventually("hello has one instance", Duration::from_secs(20), || async {
        let p = c.placement(1, "hello").await;
        (p.len() == 1 && p[0].1 == 1).then_some(p)
    })
    .await;
    let holder = c.index_of(&row[0].0);
    for i in 0..3 {
        serves(&c, i, "/hello/", Duration::from_secs(10)).await;
        let r = c.call(i, Method::POST, "/hello/f", "payload").await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.text().ends_with("you sent: payload\n"), "{}", r.text());
        assert!(r.header("x-request-id").is_some());
    }
    let ok = c.nodes[holder].node.service("hello").await.status.requests.ok;
    assert!(ok >= 3, "the holder ran the forwarded requests (ok = {ok})");
    let other = (0..3).find(|&i| i != holder).unwrap();
    let answered = c.nodes[other].node.metric("nanogrid_forwarded_total", "outcome=\"answered\"").await;
    assert!(answered >= 2.0, "forwards are counted ({answered})");

    // Static placement: only the named node runs it.
    c.nodes[2].node.deploy("pinned", "hello", json!({ "instances": 2, "placement": ["n2"] })).await;
    placement_is(&c, 0, "pinned", &[("n2", 2)]).await;
    serves(&c, 0, "/pinned/", Duration::from_secs(10)).await;

    // invoke crosses nodes: gateway on n1 fans out to wordcount on n2 and counter on n3,
    // called through n3's ingress; the request id travels along every hop.
    c.nodes[0].node.deploy("wordcount", "wordcount", json!({ "placement": ["n2"] })).await;
    c.nodes[0].node.deploy("counter", "counter", json!({ "placement": ["n3"] })).await;
    c.nodes[0].node.deploy("gateway", "gateway", json!({ "placement": ["n1"] })).await;
    placement_is(&c, 2, "gateway", &[("n1", 1)]).await;
    placement_is(&c, 2, "counter", &[("n3", 1)]).await;
    placement_is(&c, 2, "wordcount", &[("n2", 1)]).await;
    let url = format!("{}/gateway/", c.nodes[2].node.ingress);
    let v = eventually("gateway answers across nodes", Duration::from_secs(15), || {
        let url = url.clone();
        async move {
            let r = nanogrid::client::Client::new()
                .send(Method::POST, &url, &[("x-request-id", "req-xnode-1".into())], "one two two".into())
                .await
                .ok()?;
            (r.status == 200).then(|| r.json().unwrap())
        }
    })
    .await;
    assert_eq!(v["request_id"], "req-xnode-1");
    assert_eq!(v["stats"]["words"], 3);
    let docs = v["documents"].as_i64().unwrap();
    let again = eventually("gateway answers through n2", Duration::from_secs(10), || async {
        let r = c.call(1, Method::POST, "/gateway/", "x").await.ok()?;
        (r.status == 200).then(|| r.json().unwrap())
    })
    .await;
    assert!(again["documents"].as_i64().unwrap() > docs, "the count went on from {docs}: {again}");
    let ran = c.nodes[2].node.service("counter").await.status.requests.ok;
    assert!(ran >= 2, "counter ran on n3 (ok = {ran})");
    // The call graph: n1, where gateway runs, saw its calls to the other nodes' services;
    // asked on n2, the graph adds up every live node.
    let graph = |i: usize, path: &'static str| {
        let admin = c.nodes[i].node.admin();
        async move { crate::support::parse::<nanogrid::api::GraphView>(&admin.get(path).await.unwrap()) }
    };
    let edge =
        |g: &nanogrid::api::GraphView, to: &str| g.edges.iter().find(|e| e.from == "gateway" && e.to == to).cloned();
    let on_n1 = graph(0, "/v1/graph?scope=node").await;
    let local = edge(&on_n1, "counter").unwrap_or_else(|| panic!("{on_n1:?}"));
    let all = graph(1, "/v1/graph").await;
    assert_eq!(all.nodes, ["n1", "n2", "n3"], "{all:?}");
    assert_eq!(edge(&all, "counter").unwrap().calls, local.calls, "only n1 calls counter: {all:?}");
    let on_n2 = graph(1, "/v1/graph?scope=node").await;
    assert!(edge(&on_n2, "counter").is_none(), "n2 itself made no gateway calls: {on_n2:?}");

    // A service with kv state spreads like any other: its keys live in the grid, so a
    // counter counts right whichever node runs the call, and the grid shows every
    // partition on three in-sync replicas.
    c.nodes[1].node.deploy("tally", "counter", json!({ "instances": 3 })).await;
    // Every node the calls go through must know the placement (not only n1).
    for i in 0..3 {
        placement_is(&c, i, "tally", &[("n1", 1), ("n2", 1), ("n3", 1)]).await;
    }
    for n in 1..=6 {
        let r = c.call(n % 3, Method::POST, "/tally/k", "").await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json().unwrap()["value"], n as i64, "call {n} through node {}", n % 3);
    }
    let grid = eventually("every partition has three in-sync replicas", FORM, || async {
        let g = c.grid(2).await.ok()?;
        (g.partitions == 256 && g.under_replicated == 0).then_some(g)
    })
    .await;
    for n in ["n1", "n2", "n3"] {
        let share = grid.nodes.get(n).unwrap_or_else(|| panic!("{n} has no share of the grid: {grid:?}"));
        assert_eq!(share.replicas, 256, "{n}: {share:?}");
        assert!(share.primaries > 40, "{n}: {share:?}");
    }

    // A wasi:http download on n1 streams through n3 without being held in n3's memory,
    // and a body cut short upstream is cut short for the client too.
    let limits = json!({ "max_response_bytes": 256 << 20, "timeout_ms": 60000 });
    c.nodes[0].node.deploy("stream", "http-stream", json!({ "placement": ["n1"], "limits": limits })).await;
    placement_is(&c, 2, "stream", &[("n1", 1)]).await;
    serves(&c, 2, "/stream/1", Duration::from_secs(10)).await;
    // No compile still running on n3 (tiered compilation swaps optimized code in after a
    // deploy): the window below measures the forwarded transfer only.
    let n3 = &c.nodes[2].node;
    eventually("n3 runs no baseline code", Duration::from_secs(120), || async {
        (n3.metric("nanogrid_services_on_baseline_code", "").await == 0.0).then_some(())
    })
    .await;
    let before = c.nodes[2].node.reset_peak_rss();
    let r = c.get(2, "/stream/64").await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 64 << 20);
    assert_eq!(&r.body[..4], b"abcd");
    let grew = c.nodes[2].node.peak_rss().saturating_sub(before);
    assert!(grew < 32 << 20, "forwarding node's peak RSS grew {} MiB for a 64 MiB body", grew >> 20);
    assert!(c.get(2, "/stream/8?trap_after=1").await.is_err(), "a truncated body must not look complete");

    // `nanogrid status` shows the same as a table.
    let out = c.nodes[1].node.cli(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains(&format!("leader: {leader}")), "{text}");
    assert!(text.contains("grid: 256 partitions, replication 3, 0 under-replicated"), "{text}");
    let release = env!("CARGO_PKG_VERSION");
    for n in ["n1", "n2", "n3"] {
        let row = |l: &&str| l.starts_with(n) && l.contains("voter") && l.contains("/256") && l.contains(release);
        assert!(text.lines().any(|l| row(&l)), "{text}");
    }
    // Each node's release and peer protocol, as gossip shows them.
    let view = c.status(1).await.unwrap();
    for n in ["n1", "n2", "n3"] {
        let node = view.node(n).unwrap_or_else(|| panic!("{n} missing: {view:?}"));
        assert_eq!(node.release.as_deref(), Some(release), "{n}: {node:?}");
        assert_eq!(node.protocol, Some(nanogrid::transport::PROTOCOL), "{n}: {node:?}");
    }
}

#[tokio::test]
async fn killing_the_leader_elects_another_and_services_keep_answering() {
    let c = Cluster::start(3).await;
    let old = formed(&c).await;
    let dead = c.index_of(&old);
    c.nodes[0].node.deploy("hello", "hello", json!({ "instances": 3 })).await;
    placement_is(&c, 0, "hello", &[("n1", 1), ("n2", 1), ("n3", 1)]).await;
    let survivors: Vec<usize> = (0..3).filter(|&i| i != dead).collect();
    for &i in &survivors {
        serves(&c, i, "/hello/", Duration::from_secs(10)).await;
    }
    // `pair` runs on the leader and one survivor only: the other survivor forwards, and
    // once the leader is gone its first pick may be unreachable, so it must try the next.
    let (keeper, forwarder) = (survivors[0], survivors[1]);
    let pair = [c.nodes[dead].name.as_str(), c.nodes[keeper].name.as_str()];
    c.nodes[0].node.deploy("pair", "hello", json!({ "instances": 2, "placement": pair })).await;
    let mut want = vec![(pair[0], 1), (pair[1], 1)];
    want.sort();
    placement_is(&c, 0, "pair", &want).await;
    serves(&c, forwarder, "/pair/", Duration::from_secs(10)).await;

    // Load through both survivors while the leader dies.
    let failures: Arc<Mutex<Vec<Instant>>> = Default::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Requests answered 200 by each survivor's loop, so the kill waits until both run.
    let served: Arc<[std::sync::atomic::AtomicU64; 2]> = Arc::default();
    let c = Arc::new(tokio::sync::RwLock::new(c));
    let mut loops = Vec::new();
    for (l, &i) in survivors.iter().enumerate() {
        let (c, failures, stop, served) = (c.clone(), failures.clone(), stop.clone(), served.clone());
        loops.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for path in ["/hello/", "/pair/"] {
                    let ok = matches!(c.read().await.get(i, path).await, Ok(r) if r.status == 200);
                    if ok {
                        served[l].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    } else {
                        failures.lock().unwrap().push(Instant::now());
                    }
                    n += 1;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            n
        }));
    }
    eventually("both survivors' load loops are under way", Duration::from_secs(10), || async {
        served.iter().all(|s| s.load(std::sync::atomic::Ordering::Relaxed) >= 10).then_some(())
    })
    .await;
    let killed = Instant::now();
    c.write().await.kill(dead);
    let new = eventually("a new leader is elected", Duration::from_secs(10), || async {
        c.read().await.agreed_leader(&survivors).await.filter(|l| *l != old)
    })
    .await;
    let election = killed.elapsed();
    // The dead node's share moves to the survivors.
    let survivors_only = eventually("the dead node's instances are reassigned", Duration::from_secs(20), || async {
        let p = c.read().await.placement(survivors[0], "hello").await;
        (p.iter().all(|(n, _)| *n != old) && p.iter().map(|(_, k)| k).sum::<u64>() == 3).then_some(p)
    })
    .await;
    let reassigned = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for l in loops {
        total += l.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    let window = match (failures.first(), failures.last()) {
        (Some(a), Some(b)) => *b - *a,
        _ => Duration::ZERO,
    };
    eprintln!(
        "leader {old} killed: {new} elected after {election:?}; {} of {total} requests failed, error window {window:?}; placement {survivors_only:?}",
        failures.len()
    );
    assert!(total > 50, "the load loops ran ({total} requests)");
    assert!(window <= Duration::from_secs(3), "error window {window:?} is over 3 s");
    // The window is bounded in time and in size: failures only after the kill, none once
    // the survivors serve everything, and few of the requests.
    assert!(failures.iter().all(|t| *t >= killed), "a request failed before the kill");
    assert!(failures.iter().all(|t| *t <= reassigned), "requests failed after the reassignment");
    assert!(failures.len() as u64 * 10 <= total, "{} of {total} requests failed", failures.len());

    // The new leader takes writes.
    let c = c.read().await;
    c.nodes[survivors[1]].node.deploy("after", "hello", json!({ "instances": 2 })).await;
    serves(&c, survivors[0], "/after/", Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_node_cut_off_goes_dormant_and_catches_up_when_healed() {
    let c = Cluster::start_in_namespaces(3).await;
    let leader = formed(&c).await;
    c.nodes[0].node.deploy("hello", "hello", json!({ "instances": 3 })).await;
    // Cut off the leader itself: the other two must elect a new one.
    let cut = c.index_of(&leader);
    let rest: Vec<usize> = (0..3).filter(|&i| i != cut).collect();
    serves(&c, cut, "/hello/", Duration::from_secs(10)).await;

    let t = Instant::now();
    c.isolate(cut, true);
    eventually("the cut-off node turns dormant", Duration::from_secs(15), || async {
        (c.mode(cut).await.as_deref() == Some("dormant")).then_some(())
    })
    .await;
    eprintln!("cut-off node dormant after {:?}", t.elapsed());
    let r = c.get(cut, "/hello/").await.unwrap();
    assert_error(&r, 503, "dormant");
    assert!(r.header("retry-after").is_some());
    // Health checks take it out of a load balancer; metrics say why.
    let health = c.nodes[cut].node.admin().get("/v1/health").await.unwrap();
    assert_eq!(health.status, 503, "{}", health.text());
    assert_eq!(crate::support::parse::<Health>(&health).mode, "dormant");
    let metrics = c.nodes[cut].node.admin().get("/metrics").await.unwrap().text();
    assert!(metrics.contains("mode=\"dormant\""), "{metrics}");
    assert!(metrics.contains("nanogrid_cluster_nodes{live=\"false\"} 2"), "{metrics}");
    // Writes on the dormant node are refused, not lost.
    let up = c.nodes[cut].node.admin().upload(crate::support::wasm("hello")).await.unwrap();
    let digest = crate::support::parse::<Uploaded>(&up).digest;
    let r = c.nodes[cut]
        .node
        .admin()
        .call_json(Method::PUT, "/v1/services/nope", &json!({ "component": digest }))
        .await
        .unwrap();
    assert_error(&r, 503, "no-quorum");

    // The majority keeps working: a new leader, service answers, a deploy commits.
    eventually("the other two agree on a new leader", Duration::from_secs(15), || async {
        c.agreed_leader(&rest).await.filter(|l| *l != leader)
    })
    .await;
    for &i in &rest {
        serves(&c, i, "/hello/", Duration::from_secs(10)).await;
    }
    c.nodes[rest[0]].node.deploy("late", "hello", json!({ "instances": 3, "config": { "greeting": "late" } })).await;
    serves(&c, rest[1], "/late/", Duration::from_secs(10)).await;
    assert!(c.get(cut, "/late/").await.unwrap().status == 503);

    // Heal: it rejoins without help and serves what was deployed while it was away.
    c.isolate(cut, false);
    let body = serves(&c, cut, "/late/?name=back", Duration::from_secs(20)).await;
    assert!(body.starts_with("late, back!"), "{body}");
    eventually("all three agree on a leader again", FORM, || c.agreed_leader(&[0, 1, 2])).await;
    eventually("the healed node gets instances again", Duration::from_secs(20), || async {
        // Not known here yet (404) is a state to wait out, not a failure.
        let r = c.nodes[cut].node.admin().get("/v1/services/late").await.ok()?;
        let v: ServiceDetail = serde_json::from_slice(&r.body).ok().filter(|_| r.status == 200)?;
        (v.status.local.instances >= 1).then_some(())
    })
    .await;
}

#[tokio::test]
async fn restarting_every_node_brings_the_cluster_back_with_its_services() {
    let mut c = Cluster::start(3).await;
    formed(&c).await;
    c.nodes[1].node.deploy("hello", "hello", json!({ "instances": 3 })).await;
    c.nodes[2].node.deploy("greet", "hello", json!({ "instances": 2, "config": { "greeting": "hi" } })).await;
    placement_is(&c, 0, "hello", &[("n1", 1), ("n2", 1), ("n3", 1)]).await;
    // With two of three gone, the last one has no majority: it stops serving.
    c.stop(0);
    c.stop(1);
    eventually("the last node turns dormant", Duration::from_secs(15), || async {
        (c.mode(2).await.as_deref() == Some("dormant")).then_some(())
    })
    .await;
    assert_error(&c.get(2, "/hello/").await.unwrap(), 503, "dormant");
    c.stop(2);
    for i in 0..3 {
        c.restart(i);
    }
    formed(&c).await;
    for i in 0..3 {
        serves(&c, i, "/hello/", Duration::from_secs(20)).await;
        let body = serves(&c, i, "/greet/", Duration::from_secs(20)).await;
        assert!(body.starts_with("hi, world!"), "{body}");
    }
    let list: nanogrid::api::ServiceList =
        serde_json::from_value(c.nodes[0].node.admin().get("/v1/services").await.unwrap().json().unwrap()).unwrap();
    assert_eq!(list.services.len(), 2, "{list:?}");
}

#[tokio::test]
async fn a_new_node_joins_as_learner_gets_instances_and_can_be_decommissioned() {
    let mut c = Cluster::start(3).await;
    formed(&c).await;
    c.nodes[0].node.deploy("hello", "hello", json!({ "instances": 8 })).await;
    eventually("8 instances over 3 nodes", Duration::from_secs(20), || async {
        let p = c.placement(0, "hello").await;
        (p.len() == 3 && p.iter().map(|(_, k)| k).sum::<u64>() == 8).then_some(())
    })
    .await;

    let n4 = c.add_node_from_config().await;
    placement_is(&c, 0, "hello", &[("n1", 2), ("n2", 2), ("n3", 2), ("n4", 2)]).await;
    let status = c.status(0).await.unwrap();
    assert_eq!(status.node("n4").map(|n| n.role), Some(Role::Learner), "voters stay at 3: {status:?}");
    serves(&c, n4, "/hello/", Duration::from_secs(10)).await;

    // It holds kv partitions too.
    let grid_share = |g: &GridView| g.nodes.get("n4").map_or(0, |n4| n4.replicas);
    eventually("n4 holds grid partitions", FORM, || async {
        let g = c.grid(0).await.ok()?;
        (grid_share(&g) > 0 && g.under_replicated == 0).then_some(())
    })
    .await;

    // Decommission it: its share moves back, it stops serving, it is never re-added.
    let out = c.nodes[1].node.cli(&["remove-node", "n4"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    eventually("n4's share moves to the others", Duration::from_secs(20), || async {
        let p = c.placement(0, "hello").await;
        (p.len() == 3 && p.iter().all(|(n, _)| n != "n4") && p.iter().map(|(_, k)| k).sum::<u64>() == 8).then_some(())
    })
    .await;
    eventually("n4 is dormant", Duration::from_secs(15), || async {
        (c.mode(n4).await.as_deref() == Some("dormant")).then_some(())
    })
    .await;
    assert_error(&c.get(n4, "/hello/").await.unwrap(), 503, "dormant");
    eventually("n4's partitions move back, fully in sync", FORM, || async {
        let g = c.grid(0).await.ok()?;
        (grid_share(&g) == 0 && g.under_replicated == 0).then_some(())
    })
    .await;
    let r =
        c.nodes[0].node.admin().call(Method::DELETE, "/v1/cluster/nodes/n9", None, Default::default()).await.unwrap();
    assert_error(&r, 404, "not-found");
    // The admin token opens nothing on the peer listener: it speaks only mutual TLS.
    let peer = format!("127.0.0.1:{}", c.nodes[0].peer);
    let req =
        format!("GET /components/x HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\r\n", crate::support::TOKEN);
    let got = crate::support::raw_exchange(&peer, req.as_bytes());
    assert!(!got.starts_with(b"HTTP/"), "a cleartext request with the admin token was answered: {got:?}");
}

#[tokio::test]
async fn a_cluster_grows_from_one_node_to_three_voters() {
    // One node with cluster flags bootstraps alone and leads; later nodes join as learners
    // and are promoted until there are three voters.
    let mut c = Cluster::start(1).await;
    formed(&c).await;
    c.nodes[0].node.deploy("hello", "hello", json!({ "instances": 3 })).await;
    placement_is(&c, 0, "hello", &[("n1", 3)]).await;
    // kv written while n1 is the only replica is still there at three.
    c.nodes[0].node.deploy("tally", "counter", json!({ "instances": 1 })).await;
    serves(&c, 0, "/tally/", FORM).await;
    assert_eq!(c.call(0, Method::POST, "/tally/k?by=5", "").await.unwrap().status, 200);
    c.add_node_from_config().await;
    c.add_node_from_config().await;
    eventually("three voters", FORM, || async {
        let s = c.status(0).await?;
        (s.nodes.iter().filter(|n| n.role == Role::Voter).count() == 3).then_some(())
    })
    .await;
    formed(&c).await;
    placement_is(&c, 0, "hello", &[("n1", 1), ("n2", 1), ("n3", 1)]).await;
    for i in 0..3 {
        serves(&c, i, "/hello/", Duration::from_secs(10)).await;
    }
    eventually("every partition on three in-sync replicas", FORM, || async {
        let g = c.grid(2).await.ok()?;
        (g.replication == 3 && g.under_replicated == 0).then_some(())
    })
    .await;
    let r = c.call(2, Method::GET, "/tally/k", "").await.unwrap();
    assert_eq!(r.json().unwrap()["value"], 5, "{}", r.text());
}

#[tokio::test]
async fn a_node_far_behind_catches_up_from_a_snapshot() {
    // Snapshots every 10 entries, and only 10 kept behind one: a node that misses more
    // must be sent the leader's snapshot.
    let mut c = Cluster::start_with(3, &["--raft-snapshot-every", "10"]).await;
    let leader = formed(&c).await;
    let away = (0..3).find(|&i| c.nodes[i].name != leader).unwrap();
    let via = (0..3).find(|&i| i != away).unwrap();
    c.nodes[via].node.deploy("hello", "hello", json!({ "instances": 3 })).await;
    let behind = c.status(away).await.unwrap().last_applied.unwrap_or(0);
    c.stop(away);
    // Write until the leader has dropped from its log what the stopped node lacks (it
    // postpones that while a replication to the stopped node is in flight).
    let lead = (0..3).find(|&i| c.nodes[i].name == leader).unwrap();
    let mut writes = 0;
    loop {
        let out = c.nodes[via].node.cli(&["scale", "hello", &(2 + writes % 4).to_string()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        writes += 1;
        let purged = c.status(lead).await.unwrap().purged_index.unwrap_or(0);
        if writes >= 30 && purged > behind + 5 {
            break;
        }
        assert!(writes < 300, "the leader never purged its log past {behind} (purged {purged})");
    }
    c.nodes[via].node.deploy("late", "hello", json!({ "instances": 2, "config": { "greeting": "late" } })).await;
    let want =
        crate::support::parse::<ServiceDetail>(&c.nodes[via].node.admin().get("/v1/services/hello").await.unwrap())
            .spec;
    c.restart(away);
    let body = serves(&c, away, "/late/", Duration::from_secs(30)).await;
    assert!(body.starts_with("late, world!"), "{body}");
    eventually("the returning node has the latest spec", Duration::from_secs(20), || async {
        let r = c.nodes[away].node.admin().get("/v1/services/hello").await.ok()?;
        let v: ServiceDetail = serde_json::from_slice(&r.body).ok()?;
        (v.spec.instances == want.instances && v.spec.generation == want.generation).then_some(())
    })
    .await;
    let log = c.nodes[away].node.log();
    assert!(log.contains("installed a control-plane snapshot"), "caught up from a snapshot");
}

#[tokio::test]
async fn a_dead_voter_is_decommissioned_and_a_learner_takes_its_vote() {
    let mut c = Cluster::start(3).await;
    let leader = formed(&c).await;
    c.add_node_from_config().await;
    eventually("n4 is a learner", FORM, || async { (c.role(0, "n4").await? == Role::Learner).then_some(()) }).await;
    // A follower dies for good; decommission it through a live node.
    let dead = (0..3).find(|&i| c.nodes[i].name != leader).unwrap();
    let dead_name = c.nodes[dead].name.clone();
    c.kill(dead);
    let live: Vec<usize> = (0..4).filter(|&i| i != dead).collect();
    let out = c.nodes[live[0]].node.cli(&["remove-node", &dead_name]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Done when every live node has applied the same final (not joint) configuration:
    // n4 a voter, the dead node out of it.
    let status = eventually("n4 is promoted to voter in the dead node's place", FORM, || async {
        let mut applied = std::collections::BTreeSet::new();
        let mut last = None;
        for &i in &live {
            let s = c.status(i).await?;
            let voters = s.nodes.iter().filter(|n| n.role == Role::Voter).count();
            let done = s.node("n4").map(|n| n.role) == Some(Role::Voter)
                && voters == 3
                && s.node(&dead_name).map(|n| n.role) == Some(Role::Removed)
                && !s.joint;
            if !done {
                return None;
            }
            applied.insert(s.last_applied?);
            last = Some(s);
        }
        (applied.len() == 1).then_some(last).flatten()
    })
    .await;
    eprintln!("after decommissioning {dead_name}: {status:?}");
    // The three live voters tolerate one more failure: kill the leader too.
    let leader_idx = c.index_of(&leader);
    c.kill(leader_idx);
    let rest: Vec<usize> = live.iter().copied().filter(|&i| i != leader_idx).collect();
    eventually("the two remaining voters elect a leader", FORM, || c.agreed_leader(&rest)).await;
    c.nodes[rest[0]].node.deploy("still", "hello", json!({ "instances": 2 })).await;
    serves(&c, rest[1], "/still/", Duration::from_secs(10)).await;
}
