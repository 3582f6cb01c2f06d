//! Placement on paper: how long the Cluster Manager's placement rule takes for many
//! services on many nodes (issue 20's scale model). `cargo run --release --example
//! placement [SERVICES] [NODES]` prints `place_ms=… replace_ms=… services=… nodes=…`:
//! `place` from nothing, and `replace` after one node died (every service re-placed
//! against the previous assignment, as the leader does at each step). Then, per partition
//! count (64 to 4096, `--partitions`), the grid's first table on NODES nodes with
//! replication 3: `partitions_N=TABLE_US:TABLE_BYTES:DEAD_ROWS:DEAD_BYTES`, the time to
//! make it, its JSON size (what one whole-table Raft entry carried), and the rows that name
//! one node, which change when it dies (in-sync set, and primary where it was one) with
//! their size (what a GridChanges entry carries for that death).

use std::collections::BTreeMap;
use std::time::Instant;

use nanogrid::control::placement::place;
use nanogrid::services::ServiceSpec;

fn spec(name: String, instances: u32) -> ServiceSpec {
    serde_json::from_value(serde_json::json!({
        "name": name, "component": format!("sha256:{}", "0".repeat(64)), "instances": instances,
        "queue_timeout_ms": 1000, "limits": nanogrid::services::Limits::default(), "generation": 1,
        "updated_at_ms": 0,
    }))
    .expect("a valid spec")
}

fn main() {
    let mut args = std::env::args().skip(1);
    let services: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let nodes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    // Counts like a real mix: most services small, some spread wide.
    let specs: BTreeMap<String, ServiceSpec> = (0..services)
        .map(|i| {
            let name = format!("svc-{i}");
            let instances = [1, 1, 2, 3, 8, 32][i % 6];
            (name.clone(), spec(name, instances))
        })
        .collect();
    let live: Vec<String> = (1..=nodes).map(|i| format!("n{i:03}")).collect();
    let none = BTreeMap::new();
    let t = Instant::now();
    let first = place(&specs, &live, &BTreeMap::new(), &none);
    let place_ms = t.elapsed().as_secs_f64() * 1e3;
    let survivors: Vec<String> = live[1..].to_vec();
    let t = Instant::now();
    let next = place(&specs, &survivors, &first, &none);
    let replace_ms = t.elapsed().as_secs_f64() * 1e3;
    let moved: u32 = specs
        .keys()
        .map(|s| {
            let (a, b) = (&first[s], &next[s]);
            b.iter().map(|(n, c)| c.saturating_sub(a.get(n).copied().unwrap_or(0))).sum::<u32>()
        })
        .sum();
    let rows: usize = first.values().map(BTreeMap::len).sum();
    let bytes = serde_json::to_vec(&first).map_or(0, |v| v.len());
    print!(
        "place_ms={place_ms:.1} replace_ms={replace_ms:.1} services={services} nodes={nodes} moved_instances={moved} assignment_rows={rows} assignment_bytes={bytes}"
    );
    for count in [64, 256, 1024, 4096] {
        print!(" partitions_{count}={}", partition_table(&live, count));
    }
    println!();
}

/// `TABLE_US:TABLE_BYTES:DEAD_ROWS:DEAD_BYTES` for a grid of `count` partitions.
fn partition_table(live: &[String], count: u32) -> String {
    let t = Instant::now();
    let table = nanogrid::grid::part::initial(live, 3, count);
    let table_us = t.elapsed().as_micros();
    let table_bytes = serde_json::to_vec(&table).map_or(0, |v| v.len());
    let dead = &live[0];
    let changed: Vec<(usize, nanogrid::grid::part::PartInfo)> = table
        .parts
        .iter()
        .enumerate()
        .filter(|(_, p)| p.replicas.contains(dead))
        .map(|(i, p)| {
            let mut p = p.clone();
            p.isr.retain(|n| n != dead);
            if &p.primary == dead {
                p.primary = p.isr[0].clone();
                p.epoch += 1;
            }
            (i, p)
        })
        .collect();
    let dead_bytes = serde_json::to_vec(&changed).map_or(0, |v| v.len());
    format!("{table_us}:{table_bytes}:{}:{dead_bytes}", changed.len())
}
