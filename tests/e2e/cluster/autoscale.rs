//! Autoscaling (issue 16) on three real nodes: instances follow a step load, an idle
//! service scales to zero and its next request wakes it, and the node count follows the
//! instances through the local node scaler (deploy/scalers/local).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nanogrid::control::events::{Event, EventKind};
use serde_json::json;

use super::driver::{Cluster, eventually};
use super::formed;

/// Flags that make the loop quick enough for a test: the leader decides every 300 ms.
const FAST: &[&str] = &["--autoscale-window-ms", "300"];

/// The committed instance count of `service` as node `i` sees it.
async fn instances(c: &Cluster, i: usize, service: &str) -> Option<u64> {
    let r = c.nodes[i].node.admin().get(&format!("/v1/services/{service}")).await.ok()?;
    let v: nanogrid::api::ServiceDetail = serde_json::from_slice(&r.body).ok()?;
    Some(v.spec.instances.into())
}

/// The cluster's events as node `i` lists them.
async fn events(c: &Cluster, i: usize) -> Vec<Event> {
    c.events(i, 1000).await.expect("the events list").events
}

/// Clients that keep `n` requests to `path` in flight, spread over the nodes' ingress,
/// until stopped; they count answers and failures (anything but 200).
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    first_failure: Arc<std::sync::Mutex<Option<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(ingress: Vec<String>, n: usize, path: &str) -> Load {
        let (stop, ok, failed) =
            (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let first_failure = Arc::new(std::sync::Mutex::new(None));
        let tasks = (0..n)
            .map(|k| {
                let url = format!("{}{path}", ingress[k % ingress.len()]);
                let (stop, ok, failed, first) = (stop.clone(), ok.clone(), failed.clone(), first_failure.clone());
                tokio::spawn(async move {
                    let http = nanogrid::client::Client::new();
                    while !stop.load(Ordering::Relaxed) {
                        match http.send(http::Method::GET, &url, &[], bytes::Bytes::new()).await {
                            Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                            other => {
                                let what = match other {
                                    Ok(r) => format!("{} {}", r.status, r.text()),
                                    Err(e) => format!("{e:#}"),
                                };
                                first.lock().unwrap().get_or_insert(what);
                                failed.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                    }
                })
            })
            .collect();
        Load { stop, ok, failed, first_failure, tasks }
    }

    async fn stop(self) -> (u64, u64, Option<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let first = self.first_failure.lock().unwrap().clone();
        (self.ok.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed), first)
    }
}

/// Watch the committed count on node 0 until `until` holds; every count seen is kept.
async fn watch_until(c: &Cluster, service: &str, seen: &mut Vec<u64>, within: Duration, until: impl Fn(u64) -> bool) {
    let deadline = Instant::now() + within;
    loop {
        if let Some(n) = instances(c, 0, service).await {
            if seen.last() != Some(&n) {
                seen.push(n);
            }
            if until(n) {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{service} counts {seen:?}: the expected one did not come within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_autoscaled_service_follows_a_step_load_within_its_bounds_and_fails_no_request() {
    let c = Cluster::start_with(3, FAST).await;
    formed(&c).await;
    let spec = json!({ "autoscale": { "min": 1, "max": 12, "target_busy": 0.5, "cooldown_s": 3 } });
    c.nodes[0].node.deploy("slow", "misbehave", spec).await;
    for i in 0..3 {
        super::serves(&c, i, "/slow/sleep/1", Duration::from_secs(20)).await;
    }
    let mut seen = vec![];
    watch_until(&c, "slow", &mut seen, Duration::from_secs(5), |n| n == 1).await;

    // Step up: 12 clients, each request holding an instance for 40 ms.
    let ingress: Vec<String> = c.nodes.iter().map(|m| m.node.ingress.clone()).collect();
    let load = Load::start(ingress, 12, "/slow/sleep/40");
    let started = Instant::now();
    watch_until(&c, "slow", &mut seen, Duration::from_secs(20), |n| n == 12).await;
    let rose_in = started.elapsed();
    // Spread over the nodes: each serves a share.
    let placed = eventually("the instances are spread over the three nodes", Duration::from_secs(10), || async {
        let p = c.placement(0, "slow").await;
        (p.len() == 3).then_some(p)
    })
    .await;
    let (ok, failed, first) = load.stop().await;
    assert_eq!(failed, 0, "no request fails while the count rises ({ok} answered; first failure: {first:?})");

    // Step down: after the cool-down the count comes back to the minimum.
    let stopped = Instant::now();
    watch_until(&c, "slow", &mut seen, Duration::from_secs(30), |n| n == 1).await;
    let fell_in = stopped.elapsed();
    assert!(seen.iter().all(|n| (1..=12).contains(n)), "never outside [1, 12]: {seen:?}");
    assert!(fell_in >= Duration::from_secs(3), "not before the 3 s cool-down: {fell_in:?}");
    // Requests still succeed after the moves.
    for i in 0..3 {
        let r = c.get(i, "/slow/sleep/1").await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }

    // Every decision is listed on every node, with its inputs.
    let ev = events(&c, 2).await;
    let slow = |e: &&Event| e.service.as_deref() == Some("slow");
    let scales: Vec<&Event> = ev.iter().filter(|e| e.kind == EventKind::Scale).filter(slow).collect();
    let up = scales.iter().find(|e| e.to > e.from).expect("a scale-up event");
    let input = |name: &str| up.inputs.get(name).copied().unwrap_or_else(|| panic!("{name} in {up:#?}"));
    let demand = input("busy") + input("queued");
    assert!(demand > 0.5 * f64::from(up.from.unwrap()), "the demand it acted on was above the target: {up:#?}");
    assert_eq!(input("target_busy"), 0.5, "{up:#?}");
    let down = scales.iter().find(|e| e.to < e.from).expect("a scale-down event");
    assert!(down.reason.contains("3s"), "the cool-down is named: {down:#?}");
    assert!(ev.iter().filter(slow).any(|e| e.kind == EventKind::Placement), "placement moves are events too");
    let cli = c.nodes[1].node.cli(&["events"]);
    let text = String::from_utf8_lossy(&cli.stdout);
    assert!(cli.status.success() && text.contains("scale") && text.contains("service=slow"), "{text}");
    // Gauges: wanted and serving instances.
    assert_eq!(c.nodes[0].node.metric("nanogrid_instances_wanted", "service=\"slow\"").await, 1.0);
    let serving = eventually("the serving gauge settles", Duration::from_secs(10), || async {
        let v = c.nodes[0].node.metric("nanogrid_instances_serving", "service=\"slow\"").await;
        (v == 1.0).then_some(v)
    })
    .await;
    println!(
        "step load: counts {seen:?}; reached 12 in {rose_in:?}, back to 1 in {fell_in:?}; {ok} requests, 0 failed; spread {placed:?}; serving {serving}"
    );
}

#[tokio::test]
async fn an_idle_service_scales_to_zero_and_its_next_request_wakes_it() {
    let c = Cluster::start_with(3, FAST).await;
    formed(&c).await;
    let spec = json!({ "autoscale": { "min": 0, "max": 4, "cooldown_s": 2 } });
    c.nodes[0].node.deploy("hello", "hello", spec).await;
    for i in 0..3 {
        super::serves(&c, i, "/hello/", Duration::from_secs(20)).await;
    }
    let mut seen = vec![];
    watch_until(&c, "hello", &mut seen, Duration::from_secs(20), |n| n == 0).await;
    eventually("no node holds an instance", Duration::from_secs(10), || async {
        c.placement(0, "hello").await.is_empty().then_some(())
    })
    .await;
    eventually("n3 has no instance of its own", Duration::from_secs(10), || async {
        (c.nodes[2].node.service("hello").await.status.local.instances == 0).then_some(())
    })
    .await;
    // A fixed service at zero is stopped; an autoscaled one at zero wakes.
    let woke = Instant::now();
    let r = c.get(2, "/hello/again").await.unwrap();
    let cold = woke.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().starts_with("hello"), "{}", r.text());
    assert_eq!(instances(&c, 2, "hello").await, Some(1), "the node that woke it applied the wake");
    let wake = eventually("node 1 lists the wake", Duration::from_secs(10), || async {
        events(&c, 0).await.into_iter().find(|e| e.kind == EventKind::Wake)
    })
    .await;
    assert_eq!((wake.service.as_deref(), wake.node.as_deref()), (Some("hello"), Some("n3")), "{wake:#?}");
    // The other nodes reach it too (by forwarding to n3).
    for i in 0..2 {
        let r = c.get(i, "/hello/").await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // Idle again: back to zero.
    watch_until(&c, "hello", &mut seen, Duration::from_secs(20), |n| n == 0).await;
    println!("scale to zero: counts {seen:?}; the waking request took {cold:?}");
}

/// The local scaler's working directory, and the nodes it started (killed on drop).
struct LocalScaler {
    dir: tempfile::TempDir,
}

impl LocalScaler {
    fn node_dir(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join("nodes").join(name)
    }

    fn pid(&self, name: &str) -> Option<i32> {
        std::fs::read_to_string(self.node_dir(name).join("pid")).ok()?.trim().parse().ok()
    }

    fn admin(&self, name: &str) -> Option<nanogrid::client::AdminClient> {
        let out = std::fs::read_to_string(self.node_dir(name).join("stdout")).ok()?;
        let addr = out.lines().find_map(|l| l.strip_prefix("admin listening on "))?;
        Some(nanogrid::client::AdminClient::new(addr, Some(crate::support::TOKEN.to_string())))
    }
}

impl Drop for LocalScaler {
    fn drop(&mut self) {
        for entry in std::fs::read_dir(self.dir.path().join("nodes")).into_iter().flatten().flatten() {
            if let Some(pid) = self.pid(&entry.file_name().to_string_lossy()) {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// Whether process `pid` runs (a zombie, exited but not reaped by whoever adopted it,
/// does not).
fn alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    matches!(state, Some(s) if s != "Z" && s != "X")
}

// One scenario read top to bottom: its steps share the nodes, ids and figures of the ones before, so it stays one function though longer than 80 lines.
#[tokio::test]
async fn the_leader_asks_the_local_scaler_for_a_fourth_node_and_drains_it_when_load_stops() {
    let scaler = LocalScaler { dir: tempfile::tempdir().unwrap() };
    let script = crate::support::repo_root().join("deploy/scalers/local");
    let script = script.to_str().unwrap().to_string();
    let dir = scaler.dir.path().to_str().unwrap().to_string();
    // Two instances per node: three nodes hold six, the load wants eight.
    let flags = [
        "--autoscale-window-ms",
        "300",
        "--node-instances",
        "2",
        "--node-scaler",
        &script,
        "--node-idle-s",
        "3",
        "--max-nodes",
        "4",
    ];
    let env = [("NANOGRID_LOCAL_DIR", dir.as_str()), ("NANOGRID_BIN", env!("CARGO_BIN_EXE_nanogrid"))];
    let c = Cluster::start_with_env(3, &flags, &env).await;
    std::os::unix::fs::symlink(c.cluster_dir(), scaler.dir.path().join("cluster")).unwrap();
    let cache = crate::support::shared_compile_cache().to_str().unwrap().to_string();
    let serve_args =
        [&flags[..], &["--seeds", c.seeds(), "--compile-cache", &cache, "--pool-instances", "200"]].concat();
    std::fs::write(scaler.dir.path().join("serve-args"), serve_args.join("\n")).unwrap();
    formed(&c).await;

    // Acknowledged writes before the fourth node comes and goes: all must be there after.
    c.nodes[0].node.deploy("kv", "kvstore", json!({ "instances": 1 })).await;
    super::serves(&c, 1, "/kv/", Duration::from_secs(20)).await;
    for k in 0..40 {
        let r = c
            .call(k % 3, http::Method::PUT, &format!("/kv/key-{k}?consistency=quorum"), &format!("v{k}"))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let spec = json!({ "autoscale": { "min": 1, "max": 8, "target_busy": 0.5, "cooldown_s": 2 } });
    c.nodes[0].node.deploy("slow", "misbehave", spec).await;
    for i in 0..3 {
        super::serves(&c, i, "/slow/sleep/1", Duration::from_secs(20)).await;
    }
    let ingress: Vec<String> = c.nodes.iter().map(|m| m.node.ingress.clone()).collect();
    let load = Load::start(ingress, 10, "/slow/sleep/40");

    // The leader asks for a fourth node; the scaler starts n4; it joins and gets instances.
    let n4 = eventually("the scaler started n4", Duration::from_secs(40), || async { scaler.pid("n4") }).await;
    let placed = eventually("slow has instances on n4", Duration::from_secs(60), || async {
        let p = c.placement(0, "slow").await;
        p.iter().any(|(n, k)| n == "n4" && *k > 0).then_some(p)
    })
    .await;
    // The leader's autoscaler shows why (`GET /v1/autoscale`, answered by the leader only).
    let mut views = Vec::new();
    for m in &c.nodes {
        let r = m.node.admin().get("/v1/autoscale").await.unwrap();
        if r.status == 200 {
            views.push(crate::support::parse::<nanogrid::api::AutoscaleView>(&r));
        } else {
            crate::support::assert_error(&r, 409, "not-leader");
        }
    }
    assert_eq!(views.len(), 1, "exactly one node leads: {views:?}");
    let slow = views[0].services.iter().find(|s| s.service == "slow").expect("slow is autoscaled");
    assert_eq!((slow.min, slow.max, slow.target_busy), (1, 8, 0.5), "{slow:?}");
    assert!(views[0].nodes.wanted >= 4, "the leader wants a fourth node: {:?}", views[0].nodes);
    let admin4 = scaler.admin("n4").expect("n4's admin address");
    let r = admin4.get("/v1/cluster").await.unwrap();
    assert!(r.text().contains("\"n4\""), "{}", r.text());
    let (ok, failed, first) = load.stop().await;
    assert_eq!(failed, 0, "no request failed while the node came ({ok} answered; first: {first:?})");

    // Load gone: instances fall, the leader drains n4, removes it, and the scaler stops it,
    // while quorum writes go on through every node; each acknowledged one must be kept.
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let writing = writing.clone();
        let ingress: Vec<String> = c.nodes.iter().map(|m| m.node.ingress.clone()).collect();
        tokio::spawn(async move {
            let http = nanogrid::client::Client::new();
            let (mut acked, mut k) = (Vec::new(), 0usize);
            while writing.load(Ordering::Relaxed) {
                let url = format!("{}/kv/during-{k}?consistency=quorum", ingress[k % ingress.len()]);
                if let Ok(r) = http.send(http::Method::PUT, &url, &[], format!("w{k}").into()).await
                    && r.status == 200
                {
                    acked.push(k);
                }
                k += 1;
            }
            acked
        })
    };
    eventually("n4 was stopped by the scaler", Duration::from_secs(90), || async { (!alive(n4)).then_some(()) }).await;
    writing.store(false, Ordering::Relaxed);
    let acked = writer.await.unwrap();
    assert!(acked.len() > 10, "writes went on during the drain ({} acknowledged)", acked.len());
    let status = c.status(0).await.unwrap();
    assert!(status.node("n4").is_none_or(|r| r.removed), "n4 is gone or marked removed: {status:?}");
    let grid = c.grid(0).await.unwrap();
    assert!(!grid.nodes.contains_key("n4"), "n4 has no share of the grid after it left: {grid:?}");
    let named: Vec<_> = grid
        .table
        .iter()
        .filter(|p| p.primary == "n4" || p.replicas.iter().chain(&p.in_sync).chain(p.lag.keys()).any(|n| n == "n4"))
        .collect();
    assert!(named.is_empty(), "no partition names n4 after it left: {named:?}");
    for k in 0..40 {
        let r = c.call(k % 3, http::Method::GET, &format!("/kv/key-{k}?consistency=quorum"), "").await.unwrap();
        assert_eq!(
            (r.status.as_u16(), r.text()),
            (200, format!("v{k}")),
            "acknowledged write key-{k} survived the node leaving"
        );
    }
    for &k in &acked {
        let r = c.call(k % 3, http::Method::GET, &format!("/kv/during-{k}?consistency=quorum"), "").await.unwrap();
        let got = (r.status.as_u16(), r.text());
        assert_eq!(got, (200, format!("w{k}")), "write during-{k} was acknowledged during the drain");
    }
    let ev = events(&c, 1).await;
    let kinds: Vec<&str> = ev.iter().map(|e| e.kind.as_str()).collect();
    for kind in ["nodes", "drain", "remove-node"] {
        assert!(kinds.contains(&kind), "a {kind} event in {kinds:?}");
    }
    let ask = ev.iter().find(|e| e.kind == EventKind::Nodes && e.to == Some(4)).expect("the leader asked for 4 nodes");
    assert!(ask.reason.contains("per node"), "{ask:#?}");
    println!(
        "node scaler: {ok} requests during the step; n4 got {placed:?}; {} quorum writes acknowledged during the drain, all read back; events {kinds:?}",
        acked.len()
    );
}
