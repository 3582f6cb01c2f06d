//! Data grid benchmark (issue 7): three nodes in this process on loopback, each with its
//! own RocksDB, every partition on all three. Measures, in one run and side by side:
//!
//! - the grid's kv API on one node (what a guest's kv call runs, minus the wasm
//!   boundary): set and get at `one`, `quorum`, `all`, sequential latency and throughput
//!   with 32 callers;
//! - the same through a guest: the `kvstore` sample over HTTP, sequential;
//! - raw RocksDB put/get (a single-process `RocksStorage`, same write options);
//! - one loopback grid RPC round trip (`/grid/confirm`, the smallest grid call).
//!
//! `cargo bench -p nanogrid --bench grid -- <kvstore.wasm> <BENCHMARKS.md>` (run by
//! `./dev bench grid`); rewrites the grid section of the markdown file. With
//! `GRID_BENCH_PROFILE=<seconds>` it runs only sequential quorum writes (`--sync never`) for
//! that long and prints them beside the round trip: a run to profile.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http::Method;
use nanogrid::boot::{self, NodeHandle};
use nanogrid::client::Client;
use nanogrid::control::ClusterConfig;
use nanogrid::grid::part::Consistency;
use nanogrid::grid::{BatchOp, Durability, Grid, RocksStorage, Storage, SyncMode, Table};
use nanogrid::node::NodeConfig;

#[path = "common/mod.rs"]
mod common;
use common::{Stats, stats, timed, today, write_section};

const TOKEN: &str = "grid-bench-token";
const KEYS: usize = 10_000;
const SEQ: usize = 3000;
const CALLERS: usize = 32;
const LEVELS: [Consistency; 3] = [Consistency::One, Consistency::Quorum, Consistency::All];

/// `n` (peer, gossip) address pairs. They are chosen before the nodes bind them, so they
/// come from below the kernel's ephemeral range (where outgoing connections could take
/// them meanwhile).
fn fixed_addrs(n: usize) -> Vec<(SocketAddr, SocketAddr)> {
    let base = 12000 + (std::process::id() % 400) as u16 * 20;
    let mut free = (base..base + 4000).filter(|&p| {
        std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() && std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok()
    });
    let at = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    (0..n).map(|_| (at(free.next().expect("free ports")), at(free.next().expect("free ports")))).collect()
}

fn key(i: usize) -> String {
    format!("key-{}", (i.wrapping_mul(7919)) % KEYS)
}

async fn start_cluster(dirs: &[tempfile::TempDir], sync: SyncMode) -> anyhow::Result<Vec<NodeHandle>> {
    let addrs = fixed_addrs(3);
    let seeds: Vec<String> = addrs.iter().map(|(_, g)| g.to_string()).collect();
    // The cluster's secrets, as `nanogrid cluster init` and `cluster add-node` make them.
    let secrets = dirs[0].path().join("cluster");
    nanogrid::transport::secrets::init(&secrets)?;
    let mut nodes = Vec::new();
    for (i, (peer, gossip)) in addrs.into_iter().enumerate() {
        nanogrid::transport::secrets::add_node(&secrets, &format!("n{}", i + 1), false)?;
        let mut cc = ClusterConfig::new(peer, gossip);
        cc.seeds = seeds.clone();
        cc.cluster_dir = secrets.clone();
        let cfg = NodeConfig {
            node_id: format!("n{}", i + 1),
            data_dir: dirs[i].path().to_path_buf(),
            admin_token: Some(TOKEN.into()),
            sync,
            cluster: Some(cc),
            ..NodeConfig::default()
        };
        let ingress = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        nodes.push(boot::start(cfg, ingress, admin).await?);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let c = nodes[0].node.cluster.clone().context("clustered")?;
        let report = c.grid_report().await;
        let led = nodes.iter().all(|n| n.node.cluster.as_ref().is_some_and(|c| c.status().leader.is_some()));
        if led && report.partitions == 256 && report.under_replicated == 0 && report.replication == 3 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the cluster did not settle: {report:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(nodes)
}

/// Until no replica lags (writes at `one` return before their replication is done, and
/// the next row should not pay for it).
async fn settle(cluster: &nanogrid::control::Cluster) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let report = cluster.grid_report().await;
        let lagging = report.table.iter().any(|p| p.lag.values().any(|v| *v != Some(0)));
        if !lagging {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sequential latency and 32-caller throughput of the grid API at one level; the
/// sequential calls use `keys`.
async fn grid_api(grid: &Arc<Grid>, keys: &Arc<Vec<String>>, c: Consistency, write: bool) -> (Stats, f64) {
    let value = vec![7u8; 100];
    let seq = timed(SEQ, |i| {
        let (g, v, k) = (grid.clone(), value.clone(), keys[i % keys.len()].clone());
        async move {
            if write {
                g.kv_set("bench", &k, v, c).await.expect("set");
            } else {
                g.kv_get("bench", &k, c).await.expect("get").expect("present");
            }
        }
    })
    .await;
    let t = Instant::now();
    // About 2 s of writes at the synced modes' rate: shorter runs swung the batch / never
    // ratio by a tenth between runs on this shared machine.
    let per = SEQ * 4 / CALLERS;
    let tasks: Vec<_> = (0..CALLERS)
        .map(|w| {
            let (g, v) = (grid.clone(), value.clone());
            tokio::spawn(async move {
                for i in 0..per {
                    let k = key(w * per + i);
                    if write {
                        g.kv_set("bench", &k, v.clone(), c).await.expect("set");
                    } else {
                        g.kv_get("bench", &k, c).await.expect("get");
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    (seq, (per * CALLERS) as f64 / t.elapsed().as_secs_f64())
}

/// A plain RocksDB get of each key's stored row (partition prefix, `service \0 key`) in
/// the grid's own store, each call shaped like [`grid_api`]'s (a cloned key, one future):
/// `get_cached`, RocksDB's `get_cf_opt` with read options made once (`Storage::get` makes a
/// C++ `ReadOptions` per call, which would flatter the grid's read).
async fn same_store_get(grid: &Arc<Grid>, keys: &[String]) -> Stats {
    let count = grid.replicas().count();
    let rows: Vec<Vec<u8>> = keys
        .iter()
        .map(|k| {
            let key = nanogrid::grid::kv_key("bench", k);
            nanogrid::grid::plog::data_key(nanogrid::grid::part::partition_of(&key, count), &key)
        })
        .collect();
    timed(SEQ, |i| {
        let (s, k) = (grid.storage().clone(), rows[i % rows.len()].clone());
        async move {
            assert!(matches!(s.get_cached(Table::Kv, &k).expect("get"), Some(Some(_))));
        }
    })
    .await
}

fn raw_rocksdb(dir: &std::path::Path) -> anyhow::Result<((Stats, f64), (Stats, f64))> {
    let s = RocksStorage::open(dir).map_err(|e| anyhow::anyhow!("{e}"))?;
    let value = vec![7u8; 100];
    let run = |write: bool| -> (Stats, f64) {
        let mut us = Vec::with_capacity(KEYS);
        let t = Instant::now();
        for i in 0..KEYS {
            let k = format!("bench\0{}", key(i)).into_bytes();
            let one = Instant::now();
            if write {
                s.write(vec![BatchOp::Put(Table::Kv, k, value.clone())], Durability::Acked).unwrap();
            } else {
                assert!(s.get(Table::Kv, &k).unwrap().is_some());
            }
            us.push(one.elapsed().as_secs_f64() * 1e6);
        }
        let rate = KEYS as f64 / t.elapsed().as_secs_f64();
        (stats(us), rate)
    };
    let put = run(true);
    let get = run(false);
    Ok((put, get))
}

async fn guest(ingress: &str, c: Consistency, write: bool) -> Stats {
    let http = Client::new();
    timed(SEQ / 3, |i| {
        let url = format!("{ingress}/kv/{}?consistency={}", key(i), c.as_str());
        let http = &http;
        async move {
            let (m, body) =
                if write { (Method::PUT, Bytes::from(vec![b'v'; 100])) } else { (Method::GET, Bytes::new()) };
            let r = http.send(m, &url, &[], body).await.expect("request");
            assert_eq!(r.status, 200, "{}", r.text());
        }
    })
    .await
}

/// Keys whose primary is n1.
fn keys_on_n1(grid: &Grid) -> Vec<String> {
    let table = grid.replicas().table();
    (0..KEYS)
        .map(key)
        .filter(|k| {
            let p = nanogrid::grid::part::partition_of(&nanogrid::grid::kv_key("bench", k), 256);
            table.parts[p as usize].primary == "n1"
        })
        .collect()
}

/// Writes at each level on a fresh cluster whose nodes run `--sync mode`: sequential
/// latency on the primary, 32-caller throughput on any key, and how many writes n1's
/// store acknowledged per fsync during the throughput runs.
async fn sync_rows(mode: SyncMode) -> anyhow::Result<Vec<SyncRow>> {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir()).collect::<Result<_, _>>()?;
    let nodes = start_cluster(&dirs, mode).await?;
    let n1 = nodes[0].node.clone();
    let cluster = n1.cluster.clone().context("clustered")?;
    let grid = n1.registry.grid().clone();
    let here = Arc::new(keys_on_n1(&grid));
    let all = Arc::new((0..KEYS).map(key).collect::<Vec<_>>());
    let mut rows = Vec::new();
    for c in LEVELS {
        settle(&cluster).await;
        let (seq, _) = grid_api(&grid, &here, c, true).await;
        settle(&cluster).await;
        let before = grid.storage().sync_stats();
        let (_, rate) = grid_api(&grid, &all, c, true).await;
        let after = grid.storage().sync_stats();
        let syncs = after.syncs - before.syncs;
        let per_sync =
            if syncs == 0 { 0.0 } else { (after.synced_writes - before.synced_writes) as f64 / syncs as f64 };
        rows.push((format!("`--sync {mode}`, set at {}", c.as_str()), seq, Some(rate), per_sync));
    }
    for n in nodes {
        n.shutdown().await;
    }
    Ok(rows)
}

/// A row of the sync table: operation, sequential latency, throughput, writes per fsync.
type SyncRow = (String, Stats, Option<f64>, f64);

/// Rounds of the sync table.
const SYNC_ROUNDS: usize = 3;

/// The rounds' rows averaged, row by row (every round has the same rows in order).
fn mean_rows(rounds: &[Vec<SyncRow>]) -> Vec<SyncRow> {
    let n = rounds.len() as f64;
    (0..rounds[0].len())
        .map(|i| {
            let rows: Vec<&SyncRow> = rounds.iter().map(|r| &r[i]).collect();
            let mean = |f: &dyn Fn(&SyncRow) -> f64| rows.iter().map(|r| f(r)).sum::<f64>() / n;
            let stats = Stats { p50: mean(&|r| r.1.p50), p99: mean(&|r| r.1.p99) };
            let rate = rows[0].2.map(|_| mean(&|r| r.2.unwrap_or(0.0)));
            (rows[0].0.clone(), stats, rate, mean(&|r| r.3))
        })
        .collect()
}

fn section(out: &mut String, rows: &[(String, Stats, Option<f64>)]) {
    out.push_str("| operation | p50 µs | p99 µs | ops/s (32 callers, any key) |\n| --- | ---: | ---: | ---: |\n");
    for (name, s, rate) in rows {
        let rate = rate.map_or("".to_string(), |r| format!("{r:.0}"));
        out.push_str(&format!("| {name} | {:.1} | {:.1} | {rate} |\n", s.p50, s.p99));
    }
}

/// Rows of a table: operation, latency, and throughput where measured.
type Rows = Vec<(String, Stats, Option<f64>)>;

async fn run(wasm: &str, doc: &str) -> anyhow::Result<()> {
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir()).collect::<Result<_, _>>()?;
    let nodes = start_cluster(&dirs[..3], SyncMode::Batch).await?;
    let n1 = nodes[0].node.clone();
    let cluster = n1.cluster.clone().context("clustered")?;
    let grid = n1.registry.grid().clone();

    // Fill every key once, so reads find them (and RocksDB has them cached).
    for i in 0..KEYS {
        grid.kv_set("bench", &format!("key-{i}"), vec![7u8; 100], Consistency::Quorum).await?;
    }
    let (api, rtt, get) = api_rows(&cluster, &grid, &dirs[3].path().join("raw")).await?;
    let guests = guest_rows(&n1, &cluster, wasm).await?;
    for n in nodes {
        n.shutdown().await;
    }

    // What each sync mode costs, each on its own fresh cluster, the modes alternating over
    // SYNC_ROUNDS rounds (one run per mode swung by a quarter on this shared machine).
    let mut rounds: Vec<Vec<SyncRow>> = Vec::new();
    for _ in 0..SYNC_ROUNDS {
        let mut round = Vec::new();
        for mode in SyncMode::ALL {
            round.extend(sync_rows(mode).await?);
        }
        rounds.push(round);
    }
    let out = render(&api, &guests, &rounds, rtt, get);
    println!("{out}");
    write_section(doc, "grid", &out)?;
    Ok(())
}

/// The grid's kv API on n1 at each level, raw RocksDB, and one loopback grid RPC; with
/// the RPC's and the raw get's figures apart.
async fn api_rows(
    cluster: &Arc<nanogrid::control::Cluster>,
    grid: &Arc<nanogrid::grid::Grid>,
    raw_dir: &std::path::Path,
) -> anyhow::Result<(Rows, Stats, Stats)> {
    // One grid RPC that does no work on the far side (an epoch check), over mutual TLS.
    let confirm = nanogrid::grid::wire::ConfirmReq { p: 0, epoch: u64::MAX };
    for _ in 0..200 {
        cluster.grid_rpc("n2", confirm.clone()).await?;
    }
    let rtt = timed(SEQ, |_| {
        let (c, q) = (cluster.clone(), confirm.clone());
        async move {
            c.grid_rpc("n2", q).await.expect("rpc");
        }
    })
    .await;

    // Keys whose primary is n1 (where a routing key sends their requests), and any keys
    // (two in three are sent on to their primary on another node).
    let all: Vec<String> = (0..KEYS).map(key).collect();
    let here = keys_on_n1(grid);
    let (all, here) = (Arc::new(all), Arc::new(here));
    let mut api = Vec::new();
    for write in [true, false] {
        let op = if write { "set" } else { "get" };
        for c in LEVELS {
            settle(cluster).await;
            let (s, _) = grid_api(grid, &here, c, write).await;
            api.push((format!("{op} at {}, on the primary", c.as_str()), s, None));
            settle(cluster).await;
            let (s, r) = grid_api(grid, &all, c, write).await;
            api.push((format!("{op} at {}, any key", c.as_str()), s, Some(r)));
        }
    }
    // Like with like for the `one` read: a plain RocksDB get of the same rows in n1's own
    // store (same data, same memtable), timed by the same harness, so the ratio is what
    // the grid adds to a get and not the difference between two stores' contents.
    let same = same_store_get(grid, &all).await;
    api.push(("raw RocksDB get, n1's own store, same keys, read options made once".into(), same, None));
    let raw_dir = raw_dir.to_path_buf();
    let ((put, put_rate), (get, get_rate)) = tokio::task::spawn_blocking(move || raw_rocksdb(&raw_dir)).await??;
    api.push(("raw RocksDB put".into(), put, Some(put_rate)));
    api.push(("raw RocksDB get".into(), get, Some(get_rate)));
    api.push(("one loopback grid RPC round trip".into(), rtt, None));

    Ok((api, rtt, get))
}

/// The `kvstore` sample over HTTP on every node, called through n1.
async fn guest_rows(
    n1: &Arc<nanogrid::node::Node>,
    cluster: &nanogrid::control::Cluster,
    wasm: &str,
) -> anyhow::Result<Rows> {
    let bytes = std::fs::read(wasm).with_context(|| format!("reading {wasm}"))?;
    let up = n1.registry.put_component(bytes.into()).await?;
    let req = serde_json::from_value(serde_json::json!({ "component": up.digest, "instances": 3 }))?;
    cluster.put_service("kv", req).await?;
    let ingress = format!("http://{}", n1.ingress_addr());
    let http = Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http.send(Method::GET, &format!("{ingress}/kv/"), &[], Bytes::new()).await.is_ok_and(|r| r.status == 200) {
        anyhow::ensure!(Instant::now() < deadline, "kvstore did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut guests = Vec::new();
    for write in [true, false] {
        for c in LEVELS {
            let s = guest(&ingress, c, write).await;
            guests.push((format!("{} at {}", if write { "PUT" } else { "GET" }, c.as_str()), s, None));
        }
    }

    Ok(guests)
}

/// The section's text from the measured rows.
fn render(api: &Rows, guests: &Rows, rounds: &[Vec<SyncRow>], rtt: Stats, get: Stats) -> String {
    let sync = &mean_rows(rounds)[..];
    let sync_p50 = |name: &str| sync.iter().find(|r| r.0 == name).map_or(f64::NAN, |r| r.1.p50);
    let sync_rate = |name: &str| sync.iter().find(|r| r.0 == name).and_then(|r| r.2).unwrap_or(f64::NAN);
    let (batch, never) = ("`--sync batch`, set at quorum", "`--sync never`, set at quorum");
    let verdict = |met: bool| if met { "met" } else { "not met" };

    let find = |rows: &[(String, Stats, Option<f64>)], name: &str| rows.iter().find(|r| r.0 == name).unwrap().1;
    let quorum = find(api, "set at quorum, on the primary").p50;
    let quorum_write = quorum / rtt.p50;
    let quorum_never = sync_p50(never) / rtt.p50;
    let one = find(api, "get at one, any key").p50;
    let same = find(api, "raw RocksDB get, n1's own store, same keys, read options made once").p50;
    let one_read = one / same;
    let one_fresh = one / get.p50;
    let throughput = sync_rate(batch) / sync_rate(never);
    let per_round: Vec<String> = rounds
        .iter()
        .map(|r| {
            let rate = |name: &str| r.iter().find(|x| x.0 == name).and_then(|x| x.2).unwrap_or(f64::NAN);
            format!("{:.2}", rate(batch) / rate(never))
        })
        .collect();
    let mut out = String::new();
    out.push_str("## Data grid (issues 7 and 15)\n\n");
    out.push_str(&format!(
        "Three nodes in one process on loopback (`cargo bench -p nanogrid --bench grid`, run by `./dev bench grid`), \
         every partition on all three, 100-byte values over {KEYS} keys, {SEQ} sequential calls per row; \
         throughput with {CALLERS} concurrent callers; nodes at the default `--sync batch` unless a row says \
         otherwise. Measured {}.\n\n",
        today()
    ));
    out.push_str(&format!(
        "- **quorum write p50 / one loopback RPC round trip: {quorum_write:.2}x** with `--sync batch` (target ≤ 2, \
         set before writes were synced: {}; {quorum:.1} vs {:.1} µs, the difference is the fsync on each \
         acknowledging replica; issue 20's target ≤ 1.5: {}) and **{quorum_never:.2}x** with `--sync never` (like \
         for like with that target: {}; issue 20's ≤ 1.5: {}); written on the key's primary: a write that enters \
         elsewhere pays one more round trip\n",
        verdict(quorum_write <= 2.0),
        rtt.p50,
        verdict(quorum_write <= 1.5),
        verdict(quorum_never <= 2.0),
        verdict(quorum_never <= 1.5),
    ));
    out.push_str(&format!(
        "- **`one` read p50 / raw RocksDB get p50 of the same rows in the same store: {one_read:.2}x** (target \
         ≤ 3: {}; issue 20's target ≤ 2: {}; {one:.2} vs {same:.2} µs, cached keys, served by n1's own replica; \
         the raw get with read options made once, both timed by the same harness); against a get in a fresh \
         store holding only the {KEYS} keys, read options made per get, {one_fresh:.2}x ({:.2} µs; the ratio \
         reported before 2026-12-04's second run: 3.41x on 2026-12-01 and 2.48x on 2026-12-04's first. The \
         same get in n1's store, which also holds every write of the rows above, took 1.67 µs on 2026-12-04: \
         the fresh store's smaller memtable was most of the gap)\n",
        verdict(one_read <= 3.0),
        verdict(one_read <= 2.0),
        get.p50
    ));
    let (q_read, a_read) =
        (find(api, "get at quorum, on the primary").p50, find(api, "get at all, on the primary").p50);
    out.push_str(&format!(
        "- **`quorum` read on the primary p50 / one loopback RPC round trip: {:.2}x**, `all` {:.2}x (issue 20: \
         no confirm round trip while the primary holds read leases, so below 1: {}; {q_read:.1} and {a_read:.1} \
         µs; before leases (2026-12-04's first run) a quorum read on the primary confirmed the epoch with the \
         replicas each time)\n",
        q_read / rtt.p50,
        a_read / rtt.p50,
        verdict(q_read < rtt.p50 && a_read < rtt.p50),
    ));
    out.push_str(&format!(
        "- **32-caller quorum write throughput, `batch` / `never`: {throughput:.2}x** (target ≥ 0.5, the promise \
         at most halves throughput: {}; {:.0} vs {:.0} writes/s, the mean of {SYNC_ROUNDS} alternating rounds; \
         per round {}); sequential p50 {:.0} vs {:.0} µs\n\n",
        verdict(throughput >= 0.5),
        sync_rate(batch),
        sync_rate(never),
        per_round.join(", "),
        sync_p50(batch),
        sync_p50(never),
    ));
    out.push_str(
        "The grid's kv API on node n1 (what a guest's kv call runs, without the wasm boundary), raw RocksDB in \
         the same process (its put synced like a `batch` write), and the RPC:\n\n",
    );
    section(&mut out, api);
    out.push_str("\nThrough a guest (the `kvstore` sample, one HTTP request per operation into n1, sequential):\n\n");
    section(&mut out, guests);
    out.push_str(&format!(
        "\nWhat durability costs: writes at each level with each `--sync` mode, each mode on a fresh three-node \
         cluster, the modes alternating over {SYNC_ROUNDS} rounds (each figure the rounds' mean). *Writes per \
         fsync* is n1's store during the 32-caller run: the group commit shares one fsync \
         among the writes that finished while the previous one ran (`always` asks RocksDB for a synced write \
         each time and counts one fsync per write, though RocksDB merges concurrent ones). `batch` and `always` \
         acknowledge nothing before it is on disk on every counted replica; `never` acknowledges from the page \
         cache and syncs every second (survives a crash of the process, not of the machine).\n\n",
    ));
    out.push_str(
        "| operation | p50 µs | p99 µs | ops/s (32 callers, any key) | writes per fsync |\n\
         | --- | ---: | ---: | ---: | ---: |\n",
    );
    for (name, s, rate, per) in sync {
        let rate = rate.map_or("".to_string(), |r| format!("{r:.0}"));
        let per = if *per == 0.0 { "no fsync".to_string() } else { format!("{per:.1}") };
        out.push_str(&format!("| {name} | {:.1} | {:.1} | {rate} | {per} |\n", s.p50, s.p99));
    }
    out.push_str(NOT_KEPT);
    out
}

/// How the `--sync never` quorum write came under 1.5x (kept here so the next attempt
/// starts from it).
const NOT_KEPT: &str = "\nThe quorum write with `--sync never`, 2026-12-04: `GRID_BENCH_PROFILE=25` (only sequential \
     quorum writes on the primary, for `perf record -p`) measured 252.5 µs against a 116.2 µs round trip \
     (2.17x), a third of the CPU samples the kernel switching threads (`finish_task_switch`, wake-ups). Tried \
     first and not kept: the acknowledging replica writing inline on the async runtime, 149.5 vs 130.4 µs \
     (1.15x; 1.19x in a second run), but such a write can wait in RocksDB's write group behind a synced Raft \
     write to the same store, and the runtime must never wait for an fsync. Kept: `Storage::write_now`, an \
     unsynced write made at once only when nothing can make it wait (every sync of a `--sync never` store \
     holds a gate the write only tries; RocksDB's `no_slowdown` refuses rather than stalls), else through the \
     pool as before; the primary's own log write and the replica's append use it: 126.6 vs 114.3 µs and \
     123.9 vs 120.9 µs in the profiling mode (1.11x, 1.02x). The 32-caller `never` throughput rose with it \
     (6269 writes/s in the run before, 2026-12-04), so `batch` / `never` fell below 0.5: the synced modes \
     still hopped through the pool, since their writes wait for an fsync anyway.\n\n\
     `batch` writes without the pool, 2026-12-05: a `batch` write is now made at once too and awaits its group \
     sync on a one-shot channel the store's syncer thread answers (no pool thread held per waiting write; a \
     synced Raft or fence write holds the same gate, so a write made at once never joins its write group). \
     32-caller quorum writes went from 3848 to 5246 writes/s in the next run (`never` 9163 and 10561: 0.42x -> \
     0.50x). A first version published the synced position on a `watch` channel that woke every waiting write \
     at each sync: 5143 vs 10416 (0.49x) in the run after, no better. Both runs shared only 1.4 writes per \
     fsync among 32 callers, and each fsync costs CPU as well as waiting: so a sync that follows one which \
     covered several writes first gathers for 100 µs (a writer alone never waits). 8 s runs of the profiling \
     mode (`GRID_BENCH_PROFILE=8 GRID_BENCH_PROFILE_SYNC=batch GRID_BENCH_PROFILE_CALLERS=32`), alternating: \
     4873 / 5103 / 4890 writes/s against 4377 / 4180 / 4351 without it (+14 %; 2.2 writes per fsync against \
     1.8). `perf` of that mode with it: 18 % of the samples the syncer thread in the kernel's fsync, 11 % \
     switching threads, 6 % inserting into RocksDB's memtable. Gathering for 300 µs: 3.3 writes per fsync but no more \
     throughput (5339 / 4880 against 5476 / 4270 at 100 µs), so not kept.\n";

/// `GRID_BENCH_PROFILE=<seconds>`: only quorum writes on the primary with `--sync never`,
/// one after another for that long, and the RPC round trip beside them, printed and not
/// written to the document: a run to attach `perf record -p` to.
/// `GRID_BENCH_PROFILE_SYNC` picks another sync mode, `GRID_BENCH_PROFILE_CALLERS=n` runs
/// n callers writing any key instead (throughput printed).
async fn profile(secs: u64) -> anyhow::Result<()> {
    let env = |k: &str| std::env::var(k).ok();
    let sync: SyncMode =
        env("GRID_BENCH_PROFILE_SYNC").map_or(Ok(SyncMode::Never), |s| s.parse()).map_err(anyhow::Error::msg)?;
    let callers: usize = env("GRID_BENCH_PROFILE_CALLERS").map_or(Ok(1), |s| s.parse())?;
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir()).collect::<Result<_, _>>()?;
    let nodes = start_cluster(&dirs, sync).await?;
    let cluster = nodes[0].node.cluster.clone().context("clustered")?;
    let grid = nodes[0].node.registry.grid().clone();
    let here = keys_on_n1(&grid);
    settle(&cluster).await;
    if callers > 1 {
        println!(
            "profiling: {callers} callers' quorum writes, --sync {sync}, for {secs} s (pid {})",
            std::process::id()
        );
        let end = Instant::now() + Duration::from_secs(secs);
        let tasks: Vec<_> = (0..callers)
            .map(|w| {
                let g = grid.clone();
                tokio::spawn(async move {
                    let mut n = 0usize;
                    while Instant::now() < end {
                        g.kv_set("bench", &key(w * 100_000 + n % 10_000), vec![7u8; 100], Consistency::Quorum).await?;
                        n += 1;
                    }
                    anyhow::Ok(n)
                })
            })
            .collect();
        let mut total = 0;
        for t in tasks {
            total += t.await??;
        }
        println!("{:.0} writes/s; n1's store: {:?}", total as f64 / secs as f64, grid.storage().sync_stats());
        for n in nodes {
            n.shutdown().await;
        }
        return Ok(());
    }
    println!("profiling: quorum writes on the primary for {secs} s (pid {})", std::process::id());
    let (end, mut i) = (Instant::now() + Duration::from_secs(secs), 0);
    let mut us = Vec::new();
    while Instant::now() < end {
        let t = Instant::now();
        grid.kv_set("bench", &here[i % here.len()], vec![7u8; 100], Consistency::Quorum).await?;
        us.push(t.elapsed().as_secs_f64() * 1e6);
        i += 1;
    }
    let confirm = nanogrid::grid::wire::ConfirmReq { p: 0, epoch: u64::MAX };
    let rtt = timed(SEQ, |_| {
        let (c, q) = (cluster.clone(), confirm.clone());
        async move {
            c.grid_rpc("n2", q).await.expect("rpc");
        }
    })
    .await;
    let w = stats(us);
    println!("quorum write p50 {:.1} µs, rpc p50 {:.1} µs, ratio {:.2}", w.p50, rtt.p50, w.p50 / rtt.p50);
    for n in nodes {
        n.shutdown().await;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    if let Some(secs) = std::env::var("GRID_BENCH_PROFILE").ok().and_then(|s| s.parse().ok()) {
        return tokio::runtime::Runtime::new()?.block_on(profile(secs));
    }
    common::main_with("grid", "kvstore", |wasm, doc| async move { run(&wasm, &doc).await })
}
