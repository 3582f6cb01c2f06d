//! Data grid scenarios (issue 7): the `kvstore` sample on three or four real nodes, with
//! nodes killed, restarted, cut off and added while clients read and write.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use nanogrid::api::GridView;
use nanogrid::client::Client;
use nanogrid::grid::wire::{FenceReq, GridReply, GridRequest};
use serde_json::{Value, json};

use super::driver::{Cluster, eventually};
use super::linearizable::{Call, Op, Ret, check};
use super::{FORM, formed, serves};

const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Deploy `kvstore` as `kv` with an instance on every node, and wait until every node
/// serves it and every partition has its full set of in-sync replicas.
async fn kv_ready(c: &Cluster) {
    let n = c.nodes.len();
    c.nodes[0].node.deploy("kv", "kvstore", json!({ "instances": n })).await;
    for i in 0..n {
        serves(c, i, "/kv/", FORM).await;
    }
    settled(c, 0).await;
}

/// Until node `i`'s `GET /v1/grid` shows no partition short of in-sync replicas.
async fn settled(c: &Cluster, i: usize) -> GridView {
    eventually("every partition is fully in sync", Duration::from_secs(60), || async {
        let g = c.grid(i).await.ok()?;
        (g.partitions == 256 && g.under_replicated == 0).then_some(g)
    })
    .await
}

/// The node that is primary of `key` (of service `kv`), as node `i` sees the table.
async fn primary_of(c: &Cluster, i: usize, key: &str) -> String {
    let p = nanogrid::grid::part::partition_of(format!("kv\0{key}").as_bytes(), 256);
    c.grid(i).await.unwrap().table[p as usize].primary.clone()
}

/// Until node `i`'s table names a primary other than node `gone` for every partition: the
/// failover after a kill is done (failover time is a benchmark, not this file's subject).
async fn failed_over(c: &Cluster, i: usize, gone: usize) {
    let name = c.nodes[gone].name.clone();
    eventually("no partition has the killed node as primary", FORM, || async {
        let table = c.grid(i).await.ok()?.table;
        (table.len() == 256 && table.iter().all(|p| p.primary != name)).then_some(())
    })
    .await;
}

async fn send(http: &Client, url: &str, method: Method, body: &str) -> Option<(u16, String)> {
    let call = http.send(method, url, &[], Bytes::from(body.to_string()));
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(r)) => Some((r.status.as_u16(), r.text())),
        _ => None,
    }
}

/// What a client learnt from one call.
enum Outcome {
    Answer(u16, String),
    /// Surely not run: the node refused the connection, or answered `dormant` or
    /// `no-instance` (it ran nothing).
    NotRun,
    /// Failed or timed out: may or may not have run.
    Unknown,
}

fn refused(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
    })
}

async fn outcome(http: &Client, url: &str, method: Method, body: &str) -> Outcome {
    let call = http.send(method, url, &[], Bytes::from(body.to_string()));
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(r)) => {
            let text = r.text();
            let refused = r.status == 503 && (text.contains("\"dormant\"") || text.contains("\"no-instance\""));
            if refused { Outcome::NotRun } else { Outcome::Answer(r.status.as_u16(), text) }
        }
        // Refused at connect: the request never left. Anything later (a reset, a closed
        // connection) may have run.
        Ok(Err(e)) if refused(&e) => Outcome::NotRun,
        _ => Outcome::Unknown,
    }
}

/// One client: random operations on `keys` through random nodes until `stop`.
async fn client(
    id: usize,
    ingress: Vec<String>,
    keys: Vec<String>,
    stop: Arc<AtomicBool>,
    t0: Instant,
) -> Vec<(String, Op)> {
    let http = Client::new();
    let mut rng = 0x9e3779b97f4a7c15u64 ^ (id as u64 + 1).wrapping_mul(0xbf58476d1ce4e5b9);
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut ops = Vec::new();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let key = &keys[next() as usize % keys.len()];
        let base = &ingress[next() as usize % ingress.len()];
        let url = format!("{base}/kv/{key}");
        n += 1;
        let start = t0.elapsed().as_nanos() as u64;
        let (call, answer) = match next() % 3 {
            0 => {
                let v = format!("c{id}-{n}");
                (Call::Write(v.clone()), outcome(&http, &format!("{url}?consistency=quorum"), Method::PUT, &v).await)
            }
            1 => (Call::Read, outcome(&http, &format!("{url}?consistency=quorum"), Method::GET, "").await),
            _ => {
                // Swap from what this client last saw of the key, or from absent.
                let expected = ops.iter().rev().find_map(|o: &(String, Op)| match (&o.0 == key, &o.1.ret) {
                    (true, Ret::Read(v)) => Some(v.clone()),
                    _ => None,
                });
                let expected = expected.flatten();
                let new = format!("c{id}-{n}");
                let body = json!({ "expected": expected, "new": new }).to_string();
                (Call::Cas { expected, new }, outcome(&http, &format!("{url}?cas"), Method::POST, &body).await)
            }
        };
        let end = t0.elapsed().as_nanos() as u64;
        let ret = match (&call, answer) {
            (_, Outcome::NotRun) => {
                // Nothing happened: not part of the history.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            (_, Outcome::Unknown) => Ret::Unknown,
            (Call::Write(_), Outcome::Answer(200, _)) => Ret::Written,
            (Call::Read, Outcome::Answer(200, body)) => Ret::Read(Some(body)),
            (Call::Read, Outcome::Answer(404, body)) if body.contains("no key") => Ret::Read(None),
            (Call::Cas { .. }, Outcome::Answer(200, body)) => {
                match serde_json::from_str::<Value>(&body).ok().and_then(|v| v["swapped"].as_bool()) {
                    Some(b) => Ret::Swapped(b),
                    None => Ret::Unknown,
                }
            }
            // A server error may or may not have applied the call; anything else is a bug.
            (_, Outcome::Answer(status, _)) if status >= 500 => Ret::Unknown,
            (call, Outcome::Answer(status, body)) => panic!("{call:?} on {key}: unexpected {status} {body}"),
        };
        let unknown = ret == Ret::Unknown;
        ops.push((key.clone(), Op { client: id, call, ret, start, end }));
        // A bounded history: a short pause between calls, a longer one after a failure.
        let pause = if unknown { 50 } else { 5 };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    ops
}

#[tokio::test]
async fn concurrent_kv_operations_stay_linearizable_through_kills_and_cut_offs() {
    let mut c = Cluster::start_in_namespaces(3).await;
    formed(&c).await;
    kv_ready(&c).await;
    let keys: Vec<String> = (0..3).map(|i| format!("k{i}")).collect();
    let ingress: Vec<String> = c.nodes.iter().map(|m| m.node.ingress.clone()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let clients: Vec<_> =
        (0..4).map(|id| tokio::spawn(client(id, ingress.clone(), keys.clone(), stop.clone(), t0))).collect();

    // A node dies and comes back; then the primary of k0 is cut off and healed. Each
    // fault is held (the sleeps) while the clients run, and each step waits for the state
    // it needs: the restarted node serving and in sync, another primary for k0.
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.kill(1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.restart(1);
    serves(&c, 1, "/kv/", FORM).await;
    settled(&c, 0).await;
    let cut = c.index_of(&primary_of(&c, 0, "k0").await);
    let other = (0..3).find(|&i| i != cut).unwrap();
    eprintln!("cutting off {} (primary of k0)", c.nodes[cut].name);
    c.isolate(cut, true);
    eventually("another node is primary of k0", FORM, || async {
        let p = primary_of(&c, other, "k0").await;
        (c.index_of(&p) != cut).then_some(())
    })
    .await;
    // Clients work against the new primary while the old one is still cut off.
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.isolate(cut, false);
    settled(&c, 0).await;
    stop.store(true, Ordering::Relaxed);

    let mut history = Vec::new();
    for t in clients {
        history.extend(t.await.unwrap());
    }
    let ok = history.iter().filter(|(_, o)| o.ret != Ret::Unknown).count();
    let unknown = history.len() - ok;
    eprintln!("history: {} operations, {ok} completed, {unknown} of unknown outcome", history.len());
    assert!(ok >= 60, "too few operations completed ({ok}) for the check to mean much");
    assert!(unknown * 4 <= ok, "{unknown} outcomes unknown against {ok} known: the check means little");
    for key in &keys {
        let of_key: Vec<Op> = history.iter().filter(|(k, _)| k == key).map(|(_, o)| o.clone()).collect();
        let writes = of_key.iter().filter(|o| matches!(o.ret, Ret::Written | Ret::Swapped(true))).count();
        eprintln!("{key}: {} operations, {writes} acknowledged writes", of_key.len());
        if let Err(e) = check(&of_key) {
            panic!("{key}: {e}");
        }
    }
    // Afterwards the grid heals: every partition fully in sync again.
    settled(&c, 0).await;
}

/// Write `keys` through rotating nodes at alternating `quorum` and `all`.
async fn write_all(c: &Cluster, nodes: &[usize], keys: std::ops::Range<usize>, tag: &str) {
    for k in keys {
        let level = if k % 2 == 0 { "quorum" } else { "all" };
        let i = nodes[k % nodes.len()];
        let path = format!("/kv/key{k}?consistency={level}");
        let r = c.call(i, Method::PUT, &path, &format!("{tag}-{k}")).await.unwrap();
        assert_eq!(r.status, 200, "PUT key{k} at {level} via {}: {}", c.nodes[i].name, r.text());
    }
}

async fn read_all(c: &Cluster, i: usize, want: &[(usize, String)]) {
    for (k, v) in want {
        let r = c.get(i, &format!("/kv/key{k}?consistency=quorum")).await.unwrap();
        assert_eq!(r.status, 200, "key{k} via {}: {}", c.nodes[i].name, r.text());
        assert_eq!(&r.text(), v, "key{k} via {}", c.nodes[i].name);
    }
}

#[tokio::test]
async fn acknowledged_writes_survive_any_one_node_killed_and_a_full_restart() {
    // Partition logs keep 8 entries, so a node that misses more catches up from a snapshot.
    let mut c = Cluster::start_with(3, &["--grid-log-keep", "8"]).await;
    formed(&c).await;
    kv_ready(&c).await;
    write_all(&c, &[0, 1, 2], 0..60, "v0").await;
    let mut want: Vec<(usize, String)> = (0..60).map(|k| (k, format!("v0-{k}"))).collect();
    for victim in 0..3 {
        c.kill(victim);
        let alive: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
        failed_over(&c, alive[0], victim).await;
        // Every acknowledged write is there with one node gone; more writes go on.
        read_all(&c, alive[0], &want).await;
        let tag = format!("v{}", victim + 1);
        let range = victim * 20..victim * 20 + 20;
        write_all(&c, &alive, range.clone(), &tag).await;
        for k in range {
            want[k].1 = format!("{tag}-{k}");
        }
        // One key written 30 times: more than its partition's log keeps.
        for n in 0..30 {
            let r = c.call(alive[n % 2], Method::PUT, "/kv/key1000", &format!("{tag}-hot-{n}")).await.unwrap();
            assert_eq!(r.status, 200, "{}", r.text());
        }
        want.retain(|(k, _)| *k != 1000);
        want.push((1000, format!("{tag}-hot-29")));
        c.restart(victim);
        formed(&c).await;
        settled(&c, alive[0]).await;
        let log = c.nodes[victim].node.log();
        assert!(log.contains("installed a partition snapshot"), "{} caught up from a snapshot", c.nodes[victim].name);
        // Its own replica now has the latest value (a read at `one` is served locally).
        let r = c.get(victim, "/kv/key1000?consistency=one").await.unwrap();
        assert_eq!(r.text(), format!("{tag}-hot-29"), "read at one on {}", c.nodes[victim].name);
    }
    read_all(&c, 1, &want).await;
    // The whole cluster stops and starts again.
    for i in 0..3 {
        c.stop(i);
    }
    for i in 0..3 {
        c.restart(i);
    }
    formed(&c).await;
    for i in 0..3 {
        serves(&c, i, "/kv/", FORM).await;
    }
    read_all(&c, 2, &want).await;
    // `one` reads from a node's own replica agree once it is in sync.
    settled(&c, 0).await;
    for (k, v) in want.iter().take(10) {
        let r = c.get(0, &format!("/kv/key{k}?consistency=one")).await.unwrap();
        assert_eq!(&r.text(), v);
    }
}

#[tokio::test]
async fn a_fourth_node_takes_its_share_of_partitions_under_load_and_nothing_is_lost() {
    let mut c = Cluster::start(3).await;
    formed(&c).await;
    kv_ready(&c).await;
    let ingress: Vec<String> = c.nodes.iter().map(|m| m.node.ingress.clone()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<(usize, String)>>> = Arc::default();
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let (ingress, stop, acked) = (ingress.clone(), stop.clone(), acked.clone());
            tokio::spawn(async move {
                let http = Client::new();
                let mut k = w;
                let mut failed = 0;
                while !stop.load(Ordering::Relaxed) {
                    let url = format!("{}/kv/key{k}?consistency=quorum", ingress[k % ingress.len()]);
                    let v = format!("w{w}-{k}");
                    match send(&http, &url, Method::PUT, &v).await {
                        Some((200, _)) => acked.lock().unwrap().push((k, v)),
                        _ => failed += 1,
                    }
                    k += 3;
                }
                failed
            })
        })
        .collect();
    eventually("the writers are under way", Duration::from_secs(20), || async {
        (acked.lock().unwrap().len() >= 20).then_some(())
    })
    .await;
    let n4 = c.add_node_from_config().await;
    let share = eventually("n4 holds partitions and all are in sync", Duration::from_secs(90), || async {
        let g = c.grid(0).await.ok()?;
        let n4 = *g.nodes.get("n4")?;
        let full = g.table.iter().all(|p| p.replicas.len() == 3);
        (n4.replicas > 100 && n4.primaries > 20 && g.under_replicated == 0 && full).then_some(n4)
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut failed = 0;
    for w in writers {
        failed += w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    eprintln!("n4: {share:?}; {} writes acknowledged, {failed} failed during the move", acked.len());
    assert!(acked.len() >= 50, "the load was too light ({} writes)", acked.len());
    // Partitions move make-before-break: a write fails only around a primary's handover.
    assert!(failed * 20 <= acked.len(), "{failed} writes failed while n4 joined ({} acknowledged)", acked.len());
    serves(&c, n4, "/kv/", FORM).await;
    // Every acknowledged write reads back, through the new node too.
    for (i, (k, v)) in acked.iter().enumerate() {
        let r = c.get(i % 4, &format!("/kv/key{k}?consistency=quorum")).await.unwrap();
        assert_eq!(r.status, 200, "key{k}: {}", r.text());
        assert_eq!(&r.text(), v, "key{k}");
    }
}

/// `nanogrid_kv_ops_total{at=…}` on node `i`.
async fn kv_ops(c: &Cluster, i: usize, at: &str) -> u64 {
    let text = c.nodes[i].node.admin().get("/metrics").await.unwrap().text();
    let line = format!("nanogrid_kv_ops_total{{at=\"{at}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&line)).and_then(|v| v.parse().ok()).unwrap_or(0)
}

async fn forwarded_kv_ops(c: &Cluster) -> u64 {
    let mut sum = 0;
    for i in 0..c.nodes.len() {
        sum += kv_ops(c, i, "forwarded").await;
    }
    sum
}

#[tokio::test]
async fn a_routing_key_runs_the_request_next_to_its_data() {
    let c = Cluster::start(3).await;
    formed(&c).await;
    kv_ready(&c).await;
    c.nodes[0].node.deploy("mb", "misbehave", json!({ "instances": 3 })).await;
    for i in 0..3 {
        serves(&c, i, "/mb/", FORM).await;
    }
    let primary = c.index_of(&primary_of(&c, 0, "affine").await);
    let entry = (primary + 1) % 3;
    let url = format!("{}/kv/affine?consistency=quorum", c.nodes[entry].node.ingress);
    let http = Client::new();
    let key = [("x-nanogrid-key", "affine".to_string())];

    // Without a key, the entry node runs the service and sends each kv call over.
    let before = forwarded_kv_ops(&c).await;
    for n in 0..10 {
        let r = http.send(Method::PUT, &url, &[], Bytes::from(format!("plain-{n}"))).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(forwarded_kv_ops(&c).await - before, 10, "every kv call crossed to the primary");

    // With the key (header at ingress, or routing key in an `invoke`), the request runs
    // on the primary's node and its kv calls stay local.
    let (before, local_before) = (forwarded_kv_ops(&c).await, kv_ops(&c, primary, "local").await);
    for n in 0..10 {
        let r = http.send(Method::PUT, &url, &key, Bytes::from(format!("keyed-{n}"))).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let r = c.get(entry, "/mb/keyed/kv/affine").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "keyed-9");
    assert_eq!(forwarded_kv_ops(&c).await - before, 0, "no kv call crossed nodes");
    assert!(kv_ops(&c, primary, "local").await - local_before >= 11);
}

#[tokio::test]
async fn a_primary_left_fenced_by_an_unfinished_promotion_is_replaced() {
    let c = Cluster::start(3).await;
    formed(&c).await;
    kv_ready(&c).await;
    let key = "stuck";
    let p = nanogrid::grid::part::partition_of(format!("kv\0{key}").as_bytes(), 256) as usize;
    let row = c.grid(0).await.unwrap().table[p].clone();
    let (primary, epoch) = (row.primary, row.epoch);
    // What a leader that died mid-promotion leaves behind: the named primary has promised
    // a newer epoch that no table names, so it refuses to act as primary.
    // Sent as the leader would, over mutual TLS with a node certificate of the cluster.
    let leader = c.agreed_leader(&[0, 1, 2]).await.unwrap();
    let fence = GridRequest::Fence(FenceReq { p: p as u32, epoch: epoch + 1, primary_fenced: None });
    let at = c.peer_addr(c.index_of(&primary));
    let reply = c.peer_client(&leader).call(&primary, &at, &fence, Duration::from_secs(5)).await.unwrap();
    assert!(matches!(reply, GridReply::Fence(f) if f.fence == epoch + 1), "{reply:?}");
    // The leader notices the named primary is not serving and chooses again.
    eventually("the partition has a serving primary again", Duration::from_secs(30), || async {
        let r = c.call(0, Method::PUT, &format!("/kv/{key}"), "v").await.ok()?;
        (r.status == 200).then_some(())
    })
    .await;
    let row = c.grid(0).await.unwrap().table[p].clone();
    assert!(row.epoch > epoch, "{row:?}");
    assert_eq!(c.get(1, &format!("/kv/{key}")).await.unwrap().text(), "v");
}
