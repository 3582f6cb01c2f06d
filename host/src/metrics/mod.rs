//! `GET /metrics` in Prometheus text format.
//!
//! Each scrape reads the node's own counters and gauges into a [`Scrape`] of metric
//! families, which `prometheus-client` encodes from a registry made for that scrape
//! (`family.rs`): nothing is process-global, so nodes in one process (the tests) report
//! only their own.

mod family;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

pub use family::{CONTENT_TYPE, Family, Scrape, Value};

use crate::node::Node;
use crate::services::calls::EdgeReport;
use crate::services::stats::LATENCY_BOUNDS_US;
use crate::services::{GateSnapshot, Service, Stats as S};

/// The histograms' bucket bounds in seconds.
fn latency_bounds() -> Vec<f64> {
    LATENCY_BOUNDS_US.iter().map(|&b| b as f64 / 1e6).collect()
}

pub fn render(node: &Node) -> String {
    let mut out = Scrape::default();
    let services = node.registry.list();
    out.info(
        "nanogrid_node_info",
        "The node's id and mode.",
        &[("node", &node.config.node_id), ("mode", node.mode().as_str()), ("version", env!("CARGO_PKG_VERSION"))],
    );
    disk(&mut out, node);
    if let Some(c) = &node.cluster {
        cluster(&mut out, node, c);
        cluster_security(&mut out, c);
        scaling(&mut out, &c.scaling_figures());
        experiments(&mut out, c);
    }
    barriers(&mut out, &node.registry.barriers);
    grid(&mut out, node);
    // Milliseconds, as before the crate wrote the text (it writes every digit of a float).
    let uptime = node.started.elapsed().as_millis() as f64 / 1e3;
    out.gauge("nanogrid_uptime_seconds", "Seconds since the node started.").sample(&[], uptime);
    requests(&mut out, &services);
    let edges = node.registry.calls.report();
    calls(&mut out, &edges);
    latency_histograms(&mut out, &services);
    barrier_waits(&mut out, &edges);
    tracing_metrics(&mut out, node);
    compiles(&mut out, node, &services);
    out.encode()
}

/// Gossip and peer-listener counters: what was refused, and whether gossip runs.
fn cluster_security(out: &mut Scrape, c: &crate::control::Cluster) {
    let g = c.gossip_stats();
    let rejected = out.counter(
        "nanogrid_gossip_rejected_total",
        "Gossip datagrams dropped, by reason (forged, truncated, stale, replay, foreign-cluster, ... : only packets sealed with this cluster's key get past forged).",
    );
    for (reason, n) in g.rejected() {
        rejected.sample(&[("reason", reason)], n);
    }
    out.counter("nanogrid_gossip_packets_total", "Sealed gossip datagrams accepted and sent.")
        .sample(&[("direction", "in")], g.received.load(Relaxed))
        .sample(&[("direction", "out")], g.sent.load(Relaxed));
    out.counter(
        "nanogrid_gossip_restarts_total",
        "Times the gossip task stopped (ended or froze) and was started again.",
    )
    .sample(&[], g.restarts.load(Relaxed));
    out.gauge("nanogrid_gossip_running", "1 while the gossip task runs (the node is dormant otherwise).")
        .sample(&[], c.gossip_running());
    let refused = out.counter(
        "nanogrid_peer_refused_total",
        "Peer-listener connections and requests refused, by reason (handshake: no or untrusted client certificate, or not TLS; wrong-node: the request claims another node than its certificate).",
    );
    for (reason, n) in c.security.stats.refused() {
        refused.sample(&[("reason", reason)], n);
    }
    out.counter(
        "nanogrid_raft_log_appended_entries_total",
        "Control-plane (Raft) log entries this node appended since it started.",
    )
    .sample(&[], c.log_growth.entries.load(Relaxed));
    out.counter(
        "nanogrid_raft_log_appended_bytes_total",
        "Bytes of those entries as stored (the log's growth before compaction).",
    )
    .sample(&[], c.log_growth.bytes.load(Relaxed));
    out.gauge("nanogrid_tls_cert_expiry_seconds", "When this node's certificate expires (Unix time).")
        .sample(&[], c.security.cert_expires);
}

/// Room on the data dir's disk, and whether kv writes are refused for want of it.
fn disk(out: &mut Scrape, node: &Node) {
    let storage = node.registry.grid().storage();
    let Some(free) = storage.disk_free() else { return };
    let full = matches!(storage.check_room(), Err(crate::grid::StorageError::Full(_)));
    out.gauge("nanogrid_disk_free_bytes", "Free bytes on the data dir's disk.").sample(&[], free);
    out.gauge(
        "nanogrid_disk_full",
        "1 while kv writes are refused because the data dir's disk has less than --min-free-mib free.",
    )
    .sample(&[], full);
    out.gauge(
        "nanogrid_store_stuck",
        "1 while a write has failed for want of space and the store waits for room to be opened again.",
    )
    .sample(&[], storage.stuck());
}

/// Wanted and serving instances per autoscaled service, wanted and live nodes.
fn scaling(out: &mut Scrape, f: &crate::control::scaling::ScalingFigures) {
    let wanted = out.gauge(
        "nanogrid_instances_wanted",
        "Instances a service should have (the autoscaler's count, or the fixed one).",
    );
    for (name, n) in &f.wanted {
        wanted.sample(&[("service", name)], *n);
    }
    let serving = out.gauge("nanogrid_instances_serving", "Instances assigned to live nodes that serve the service.");
    for (name, n) in &f.serving {
        serving.sample(&[("service", name)], *n);
    }
    out.gauge("nanogrid_nodes_wanted", "Nodes the leader wants (0 on other nodes).").sample(&[], f.nodes_wanted);
    out.gauge("nanogrid_nodes_serving", "Members gossip shows live and not removed.").sample(&[], f.nodes_serving);
}

/// Re-provisioning experiments the control state holds, by stage (the same on every node).
fn experiments(out: &mut Scrape, c: &crate::control::Cluster) {
    use crate::control::experiment::Stage;
    let family = out.gauge(
        "nanogrid_experiments",
        "Re-provisioning experiments held (the last 64 ended and the running ones), by stage.",
    );
    let list = c.experiments();
    for stage in [Stage::Trial, Stage::Pending, Stage::Kept, Stage::RolledBack, Stage::Aborted] {
        let n = list.iter().filter(|e| e.stage == stage).count();
        family.sample(&[("stage", stage.as_str())], n);
    }
}

/// Tiered compilation: compiles by tier and their time, and services still on baseline code.
fn compiles(out: &mut Scrape, node: &Node, services: &[Arc<Service>]) {
    let Some(t) = node.registry.tier_stats() else { return };
    out.counter(
        "nanogrid_compiles_total",
        "Components compiled, by tier (baseline: Winch, served at once; optimized: Cranelift, swapped in when done).",
    )
    .sample(&[("tier", "baseline")], t.baseline_compiles.load(Relaxed))
    .sample(&[("tier", "optimized")], t.optimized_compiles.load(Relaxed));
    out.counter("nanogrid_compile_seconds_total", "Time spent compiling, by tier.")
        .sample(&[("tier", "baseline")], t.baseline_ms.load(Relaxed) as f64 / 1e3)
        .sample(&[("tier", "optimized")], t.optimized_ms.load(Relaxed) as f64 / 1e3);
    out.counter(
        "nanogrid_tier_up_failures_total",
        "Optimized compiles that failed (the service keeps its baseline code).",
    )
    .sample(&[], t.failed.load(Relaxed));
    let baseline = services.iter().filter(|s| s.current().tier() == Some(crate::runtime::Tier::Baseline)).count();
    out.gauge("nanogrid_services_on_baseline_code", "Services whose requests run baseline code here.")
        .sample(&[], baseline);
}

/// The cluster as this node sees it: term, members, leadership, forwarding.
fn cluster(out: &mut Scrape, node: &Node, c: &crate::control::Cluster) {
    let s = c.status();
    out.gauge("nanogrid_cluster_term", "The Raft term this node is in.").sample(&[], s.term);
    let live = s.nodes.iter().filter(|n| n.live).count();
    out.gauge("nanogrid_cluster_nodes", "Nodes this node knows of, by whether gossip shows them live.")
        .sample(&[("live", "true")], live)
        .sample(&[("live", "false")], s.nodes.len() - live);
    out.gauge("nanogrid_cluster_is_leader", "1 on the leader.").sample(&[], s.mode == "leader");
    let foreign = s.nodes.iter().filter(|n| n.role == crate::api::Role::Foreign).count();
    out.gauge(
        "nanogrid_cluster_foreign_nodes",
        "Live nodes that gossip with this cluster's key but are members of another cluster (it formed more than once; nanogrid status names them and the log says the fix).",
    )
    .sample(&[], foreign);
    out.gauge(
        "nanogrid_cluster_out_of_touch",
        "1 while this node is dormant because its Raft is out of touch with the cluster though gossip shows a majority (its peer connections fail; GET /v1/cluster's out_of_touch says why).",
    )
    .sample(&[], s.out_of_touch.is_some());
    let forwarded = out.counter(
        "nanogrid_forwarded_total",
        "Requests and invoke calls sent to another node, by outcome (skipped: that node could not take it, the next was tried; retried: an idempotent service's request failed after it was sent, the next was tried).",
    );
    let f = &node.forwards;
    let outcomes = [("answered", &f.answered), ("skipped", &f.skipped), ("failed", &f.failed), ("retried", &f.retried)];
    for (outcome, c) in outcomes {
        forwarded.sample(&[("outcome", outcome)], c.load(Relaxed));
    }
}

fn barriers(out: &mut Scrape, b: &crate::services::barrier::Barriers) {
    let total = out.counter(
        "nanogrid_barriers_total",
        "Durable barriers on this node: started, resumed (continuation answered), failed (continuation kept failing), taken_over (from a stopped driver).",
    );
    for (event, c) in
        [("started", &b.started), ("resumed", &b.resumed), ("failed", &b.failed), ("taken_over", &b.taken_over)]
    {
        total.sample(&[("event", event)], c.load(Relaxed));
    }
    out.gauge("nanogrid_barriers_driven", "Barriers this node is driving now.").sample(&[], b.active());
}

/// The guests' kv operations and this node's share of the partitions.
fn grid(out: &mut Scrape, node: &Node) {
    let grid = node.registry.grid();
    out.counter(
        "nanogrid_kv_ops_total",
        "Guest kv operations by where they ran (local: this node's replica or primary; forwarded: another node's primary).",
    )
    .sample(&[("at", "local")], grid.kv_counts.ops[0].load(Relaxed))
    .sample(&[("at", "forwarded")], grid.kv_counts.ops[1].load(Relaxed));
    out.counter("nanogrid_kv_failed_total", "Guest kv operations that failed (no primary, too few replicas).")
        .sample(&[], grid.kv_counts.failed.load(Relaxed));
    let table = grid.replicas().table();
    let me = &node.config.node_id;
    let primaries = table.parts.iter().filter(|p| p.primary == *me).count();
    let replicas = table.parts.iter().filter(|p| p.replicas.contains(me)).count();
    let short = table.parts.iter().filter(|p| p.isr.len() < table.replication).count();
    out.gauge(
        "nanogrid_grid_partitions",
        "Partitions this node is primary or a replica of, and partitions with fewer in-sync replicas than the replication factor.",
    )
    .sample(&[("role", "primary")], primaries)
    .sample(&[("role", "replica")], replicas)
    .sample(&[("role", "under_replicated")], short);
}

/// Per service: calls by outcome, instance and queue gauges, time in the guest.
fn requests(out: &mut Scrape, services: &[Arc<Service>]) {
    let total = out.counter("nanogrid_requests_total", "Calls into a service (ingress and invoke) by outcome.");
    for s in services {
        for (outcome, c) in [
            ("ok", &s.stats.ok),
            ("guest_error", &s.stats.guest_error),
            ("trapped", &s.stats.trapped),
            ("timed_out", &s.stats.timed_out),
            ("rejected", &s.stats.rejected),
        ] {
            total.sample(&[("service", &s.name), ("outcome", outcome)], S::get(c));
        }
    }
    type Gauge = (&'static str, &'static str, fn(&GateSnapshot) -> u32);
    let gauges: [Gauge; 5] = [
        ("nanogrid_instances", "Configured concurrent executions (instances).", |g| g.limit),
        ("nanogrid_instances_running", "Executions running now.", |g| g.running),
        ("nanogrid_instances_peak_running", "Most executions ever running at once since start.", |g| g.peak_running),
        ("nanogrid_queue_depth", "Requests waiting for an instance.", |g| g.queued),
        ("nanogrid_queue_limit", "Most requests that may wait.", |g| g.max_queue),
    ];
    for (metric, help, f) in gauges {
        let family = out.gauge(metric, help);
        for s in services {
            family.sample(&[("service", &s.name)], f(&s.gate()));
        }
    }
    // Once a summary of sum and count; the crate has no summary type, so they are two
    // untyped families of the same series (`nanogrid_request_latency_seconds` is the
    // histogram of the same durations).
    let sum = out.untyped(
        "nanogrid_request_duration_seconds_sum",
        "Time in the guest, admission excluded (total; nanogrid_request_latency_seconds has the buckets).",
    );
    for s in services {
        sum.sample(&[("service", &s.name)], S::get(&s.stats.duration_us_sum) as f64 / 1e6);
    }
    let count =
        out.untyped("nanogrid_request_duration_seconds_count", "Calls timed in nanogrid_request_duration_seconds_sum.");
    for s in services {
        count.sample(&[("service", &s.name)], S::get(&s.stats.completed));
    }
}

/// `invoke` calls between services: by outcome, how many ran on another node, their time.
fn calls(out: &mut Scrape, edges: &[EdgeReport]) {
    let total = out.counter("nanogrid_calls_total", "invoke calls between services, by outcome.");
    for e in edges {
        total
            .sample(&[("from", &e.from), ("to", &e.to), ("outcome", "ok")], e.calls - e.errors)
            .sample(&[("from", &e.from), ("to", &e.to), ("outcome", "error")], e.errors);
    }
    let remote =
        out.counter("nanogrid_calls_remote_total", "invoke calls that ran on another node (what co-location removes).");
    for e in edges {
        remote.sample(&[("from", &e.from), ("to", &e.to)], e.remote);
    }
    // A counter whose name does not end in `_total`: untyped keeps the name.
    let duration = out.untyped(
        "nanogrid_call_duration_seconds_sum",
        "Time invoke calls took, as the caller saw it (a running total).",
    );
    for e in edges {
        duration.sample(&[("from", &e.from), ("to", &e.to)], e.total_us as f64 / 1e6);
    }
}

/// Which callee each barrier waited for (it answered last), the wait it caused, and every
/// edge's call durations as a histogram (its tail latency).
fn barrier_waits(out: &mut Scrape, edges: &[EdgeReport]) {
    let waited =
        out.counter("nanogrid_barrier_waited_on_total", "Barriers of `from` whose last answer came from `to`.");
    for e in edges.iter().filter(|e| e.barrier_last > 0) {
        waited.sample(&[("from", &e.from), ("to", &e.to)], e.barrier_last);
    }
    let caused = out.counter(
        "nanogrid_barrier_wait_caused_seconds_total",
        "Barrier wait (fan-out to last answer) of `from` ended by `to`.",
    );
    for e in edges.iter().filter(|e| e.barrier_last > 0) {
        caused.sample(&[("from", &e.from), ("to", &e.to)], e.barrier_wait_ms as f64 / 1e3);
    }
    let latency =
        out.histogram("nanogrid_call_latency_seconds", "invoke and barrier calls' durations, as the caller saw them.");
    let bounds = latency_bounds();
    for e in edges.iter().filter(|e| e.calls > 0) {
        latency.histogram(&[("from", &e.from), ("to", &e.to)], &bounds, &e.latency, e.total_us as f64 / 1e6);
    }
}

/// Spans kept for `GET /v1/traces`, and what OTLP export sent and dropped.
fn tracing_metrics(out: &mut Scrape, node: &Node) {
    let Some(t) = node.registry.tracer() else { return };
    out.gauge("nanogrid_trace_spans_kept", "Spans in this node's ring for GET /v1/traces.").sample(&[], t.ring.len());
    if let Some(e) = t.exporter() {
        out.counter("nanogrid_otlp_spans_total", "Spans given to OTLP export, by outcome.")
            .sample(&[("outcome", "exported")], e.stats.exported.load(Relaxed))
            .sample(&[("outcome", "dropped")], e.stats.dropped.load(Relaxed));
        out.counter("nanogrid_otlp_failed_batches_total", "Export requests the collector did not accept.")
            .sample(&[], e.stats.failed_batches.load(Relaxed));
    }
}

/// `nanogrid_request_latency_seconds`: the same durations as a histogram, so p99 can be
/// read (the sum and count above have no buckets).
fn latency_histograms(out: &mut Scrape, services: &[Arc<Service>]) {
    let latency = out.histogram("nanogrid_request_latency_seconds", "Time in the guest, admission excluded.");
    let bounds = latency_bounds();
    for s in services {
        let sum = S::get(&s.stats.duration_us_sum) as f64 / 1e6;
        latency.histogram(&[("service", &s.name)], &bounds, &s.stats.latency_counts(), sum);
    }
}
