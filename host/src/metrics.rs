//! `GET /metrics` in Prometheus text format.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use crate::node::Node;
use crate::services::{GateSnapshot, Service, Stats as S};

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Gossip and peer-listener counters: what was refused, and whether gossip runs.
fn cluster_security(out: &mut String, c: &crate::control::Cluster) {
    use std::sync::atomic::Ordering::Relaxed;
    let g = c.gossip_stats();
    let _ = writeln!(
        out,
        "# HELP nanogrid_gossip_rejected_total Gossip datagrams dropped, by reason (forged, truncated, stale, replay, foreign-cluster, ... : only packets sealed with this cluster's key get past forged).\n# TYPE nanogrid_gossip_rejected_total counter"
    );
    for (reason, n) in g.rejected() {
        let _ = writeln!(out, "nanogrid_gossip_rejected_total{{reason=\"{reason}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP nanogrid_gossip_packets_total Sealed gossip datagrams accepted and sent.\n# TYPE nanogrid_gossip_packets_total counter"
    );
    let _ = writeln!(out, "nanogrid_gossip_packets_total{{direction=\"in\"}} {}", g.received.load(Relaxed));
    let _ = writeln!(out, "nanogrid_gossip_packets_total{{direction=\"out\"}} {}", g.sent.load(Relaxed));
    let _ = writeln!(
        out,
        "# HELP nanogrid_gossip_restarts_total Times the gossip task stopped (ended or froze) and was started again.\n# TYPE nanogrid_gossip_restarts_total counter\nnanogrid_gossip_restarts_total {}",
        g.restarts.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP nanogrid_gossip_running 1 while the gossip task runs (the node is dormant otherwise).\n# TYPE nanogrid_gossip_running gauge\nnanogrid_gossip_running {}",
        u8::from(c.gossip_running())
    );
    let _ = writeln!(
        out,
        "# HELP nanogrid_peer_refused_total Peer-listener connections and requests refused, by reason (handshake: no or untrusted client certificate, or not TLS; wrong-node: the request claims another node than its certificate).\n# TYPE nanogrid_peer_refused_total counter"
    );
    for (reason, n) in c.peer_stats.refused() {
        let _ = writeln!(out, "nanogrid_peer_refused_total{{reason=\"{reason}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP nanogrid_raft_log_appended_entries_total Control-plane (Raft) log entries this node appended since it started.\n# TYPE nanogrid_raft_log_appended_entries_total counter\nnanogrid_raft_log_appended_entries_total {}",
        c.log_growth.entries.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP nanogrid_raft_log_appended_bytes_total Bytes of those entries as stored (the log's growth before compaction).\n# TYPE nanogrid_raft_log_appended_bytes_total counter\nnanogrid_raft_log_appended_bytes_total {}",
        c.log_growth.bytes.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP nanogrid_tls_cert_expiry_seconds When this node's certificate expires (Unix time).\n# TYPE nanogrid_tls_cert_expiry_seconds gauge\nnanogrid_tls_cert_expiry_seconds {}",
        c.cert_expires
    );
}

/// Room on the data dir's disk, and whether kv writes are refused for want of it.
fn disk(out: &mut String, node: &Node) {
    let storage = node.registry.grid().storage();
    let Some(free) = storage.disk_free() else { return };
    let full = matches!(storage.check_room(), Err(crate::grid::StorageError::Full(_)));
    let stuck = storage.stuck();
    let _ = writeln!(
        out,
        "# HELP nanogrid_disk_free_bytes Free bytes on the data dir's disk.\n# TYPE nanogrid_disk_free_bytes gauge\nnanogrid_disk_free_bytes {free}\n# HELP nanogrid_disk_full 1 while kv writes are refused because the data dir's disk has less than --min-free-mib free.\n# TYPE nanogrid_disk_full gauge\nnanogrid_disk_full {}\n# HELP nanogrid_store_stuck 1 while a write has failed for want of space and the store waits for room to be opened again.\n# TYPE nanogrid_store_stuck gauge\nnanogrid_store_stuck {}",
        u8::from(full),
        u8::from(stuck)
    );
}

/// Re-provisioning experiments the control state holds, by stage (the same on every node).
fn experiments(out: &mut String, c: &crate::control::Cluster) {
    use crate::control::experiment::Stage;
    let _ = writeln!(
        out,
        "# HELP nanogrid_experiments Re-provisioning experiments held (the last 64 ended and the running ones), by stage.\n# TYPE nanogrid_experiments gauge"
    );
    let list = c.experiments();
    for stage in [Stage::Trial, Stage::Pending, Stage::Kept, Stage::RolledBack, Stage::Aborted] {
        let n = list.iter().filter(|e| e.stage == stage).count();
        let _ = writeln!(out, "nanogrid_experiments{{stage=\"{}\"}} {n}", stage.as_str());
    }
}

pub fn render(node: &Node) -> String {
    let mut out = String::new();
    let services = node.registry.list();
    let _ = writeln!(out, "# HELP nanogrid_node_info The node's id and mode.\n# TYPE nanogrid_node_info gauge");
    let _ = writeln!(
        out,
        "nanogrid_node_info{{node=\"{}\",mode=\"{}\",version=\"{}\"}} 1",
        escape(&node.config.node_id),
        node.mode().as_str(),
        env!("CARGO_PKG_VERSION")
    );
    disk(&mut out, node);
    if let Some(c) = &node.cluster {
        cluster(&mut out, node, c);
        cluster_security(&mut out, c);
        c.scaling_metrics(&mut out);
        experiments(&mut out, c);
    }
    barriers(&mut out, &node.registry.barriers);
    grid(&mut out, node);
    let _ = writeln!(
        out,
        "# HELP nanogrid_uptime_seconds Seconds since the node started.\n# TYPE nanogrid_uptime_seconds gauge"
    );
    let _ = writeln!(out, "nanogrid_uptime_seconds {:.3}", node.started.elapsed().as_secs_f64());
    requests(&mut out, &services);
    let edges = node.registry.calls.report();
    calls(&mut out, &edges);
    latency_histograms(&mut out, &services);
    barrier_waits(&mut out, &edges);
    tracing_metrics(&mut out, node);
    compiles(&mut out, node, &services);
    out
}

/// Tiered compilation: compiles by tier and their time, and services still on baseline code.
fn compiles(out: &mut String, node: &Node, services: &[Arc<crate::services::Service>]) {
    let Some(t) = node.registry.tier_stats() else { return };
    let _ = writeln!(
        out,
        "# HELP nanogrid_compiles_total Components compiled, by tier (baseline: Winch, served at once; optimized: Cranelift, swapped in when done).\n# TYPE nanogrid_compiles_total counter"
    );
    let _ = writeln!(out, "nanogrid_compiles_total{{tier=\"baseline\"}} {}", t.baseline_compiles.load(Relaxed));
    let _ = writeln!(out, "nanogrid_compiles_total{{tier=\"optimized\"}} {}", t.optimized_compiles.load(Relaxed));
    let _ = writeln!(
        out,
        "# HELP nanogrid_compile_seconds_total Time spent compiling, by tier.\n# TYPE nanogrid_compile_seconds_total counter"
    );
    let _ = writeln!(
        out,
        "nanogrid_compile_seconds_total{{tier=\"baseline\"}} {:.3}",
        t.baseline_ms.load(Relaxed) as f64 / 1e3
    );
    let _ = writeln!(
        out,
        "nanogrid_compile_seconds_total{{tier=\"optimized\"}} {:.3}",
        t.optimized_ms.load(Relaxed) as f64 / 1e3
    );
    let baseline = services.iter().filter(|s| s.current().tier() == Some(crate::runtime::Tier::Baseline)).count();
    let _ = writeln!(
        out,
        "# HELP nanogrid_tier_up_failures_total Optimized compiles that failed (the service keeps its baseline code).\n# TYPE nanogrid_tier_up_failures_total counter\nnanogrid_tier_up_failures_total {}\n# HELP nanogrid_services_on_baseline_code Services whose requests run baseline code here.\n# TYPE nanogrid_services_on_baseline_code gauge\nnanogrid_services_on_baseline_code {baseline}",
        t.failed.load(Relaxed)
    );
}

/// The cluster as this node sees it: term, members, leadership, forwarding.
fn cluster(out: &mut String, node: &Node, c: &crate::control::Cluster) {
    let s = c.status();
    let _ = writeln!(
        out,
        "# HELP nanogrid_cluster_term The Raft term this node is in.\n# TYPE nanogrid_cluster_term gauge"
    );
    let _ = writeln!(out, "nanogrid_cluster_term {}", s.term);
    let _ = writeln!(
        out,
        "# HELP nanogrid_cluster_nodes Nodes this node knows of, by whether gossip shows them live.\n# TYPE nanogrid_cluster_nodes gauge"
    );
    let live = s.nodes.iter().filter(|n| n.live).count();
    let _ = writeln!(out, "nanogrid_cluster_nodes{{live=\"true\"}} {live}");
    let _ = writeln!(out, "nanogrid_cluster_nodes{{live=\"false\"}} {}", s.nodes.len() - live);
    let _ = writeln!(
        out,
        "# HELP nanogrid_cluster_is_leader 1 on the leader.\n# TYPE nanogrid_cluster_is_leader gauge\nnanogrid_cluster_is_leader {}",
        u8::from(s.mode == "leader")
    );
    let _ = writeln!(
        out,
        "# HELP nanogrid_forwarded_total Requests and invoke calls sent to another node, by outcome (skipped: that node could not take it, the next was tried).\n# TYPE nanogrid_forwarded_total counter"
    );
    let f = &node.forwards;
    for (outcome, c) in [("answered", &f.answered), ("skipped", &f.skipped), ("failed", &f.failed)] {
        let _ = writeln!(out, "nanogrid_forwarded_total{{outcome=\"{outcome}\"}} {}", c.load(Relaxed));
    }
}

fn barriers(out: &mut String, b: &crate::services::barrier::Barriers) {
    let _ = writeln!(
        out,
        "# HELP nanogrid_barriers_total Durable barriers on this node: started, resumed (continuation answered), failed (continuation kept failing), taken_over (from a stopped driver).\n# TYPE nanogrid_barriers_total counter"
    );
    for (event, c) in
        [("started", &b.started), ("resumed", &b.resumed), ("failed", &b.failed), ("taken_over", &b.taken_over)]
    {
        let _ = writeln!(out, "nanogrid_barriers_total{{event=\"{event}\"}} {}", c.load(Relaxed));
    }
    let _ = writeln!(
        out,
        "# HELP nanogrid_barriers_driven Barriers this node is driving now.\n# TYPE nanogrid_barriers_driven gauge\nnanogrid_barriers_driven {}",
        b.active()
    );
}

/// The guests' kv operations and this node's share of the partitions.
fn grid(out: &mut String, node: &Node) {
    let grid = node.registry.grid();
    let _ = writeln!(
        out,
        "# HELP nanogrid_kv_ops_total Guest kv operations by where they ran (local: this node's replica or primary; forwarded: another node's primary).\n# TYPE nanogrid_kv_ops_total counter"
    );
    for (at, c) in [("local", &grid.kv_counts.ops[0]), ("forwarded", &grid.kv_counts.ops[1])] {
        let _ = writeln!(out, "nanogrid_kv_ops_total{{at=\"{at}\"}} {}", c.load(Relaxed));
    }
    let _ = writeln!(
        out,
        "# HELP nanogrid_kv_failed_total Guest kv operations that failed (no primary, too few replicas).\n# TYPE nanogrid_kv_failed_total counter\nnanogrid_kv_failed_total {}",
        grid.kv_counts.failed.load(Relaxed)
    );
    let table = grid.replicas().table();
    let me = &node.config.node_id;
    let primaries = table.parts.iter().filter(|p| p.primary == *me).count();
    let replicas = table.parts.iter().filter(|p| p.replicas.contains(me)).count();
    let short = table.parts.iter().filter(|p| p.isr.len() < table.replication).count();
    let _ = writeln!(
        out,
        "# HELP nanogrid_grid_partitions Partitions this node is primary or a replica of, and partitions with fewer in-sync replicas than the replication factor.\n# TYPE nanogrid_grid_partitions gauge"
    );
    let _ = writeln!(out, "nanogrid_grid_partitions{{role=\"primary\"}} {primaries}");
    let _ = writeln!(out, "nanogrid_grid_partitions{{role=\"replica\"}} {replicas}");
    let _ = writeln!(out, "nanogrid_grid_partitions{{role=\"under_replicated\"}} {short}");
}

/// Per service: calls by outcome, instance and queue gauges, time in the guest.
fn requests(out: &mut String, services: &[Arc<Service>]) {
    let _ = writeln!(
        out,
        "# HELP nanogrid_requests_total Calls into a service (ingress and invoke) by outcome.\n# TYPE nanogrid_requests_total counter"
    );
    for s in services {
        let n = escape(&s.name);
        for (outcome, c) in [
            ("ok", &s.stats.ok),
            ("guest_error", &s.stats.guest_error),
            ("trapped", &s.stats.trapped),
            ("timed_out", &s.stats.timed_out),
            ("rejected", &s.stats.rejected),
        ] {
            let _ = writeln!(out, "nanogrid_requests_total{{service=\"{n}\",outcome=\"{outcome}\"}} {}", S::get(c));
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
        let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} gauge");
        for s in services {
            let _ = writeln!(out, "{metric}{{service=\"{}\"}} {}", escape(&s.name), f(&s.gate()));
        }
    }
    let _ = writeln!(
        out,
        "# HELP nanogrid_request_duration_seconds Time in the guest, admission excluded.\n# TYPE nanogrid_request_duration_seconds summary"
    );
    for s in services {
        let n = escape(&s.name);
        let _ = writeln!(
            out,
            "nanogrid_request_duration_seconds_sum{{service=\"{n}\"}} {:.6}",
            S::get(&s.stats.duration_us_sum) as f64 / 1e6
        );
        let _ =
            writeln!(out, "nanogrid_request_duration_seconds_count{{service=\"{n}\"}} {}", S::get(&s.stats.completed));
    }
}

/// `invoke` calls between services: by outcome, how many ran on another node, their time.
fn calls(out: &mut String, edges: &[crate::services::calls::EdgeReport]) {
    let _ = writeln!(
        out,
        "# HELP nanogrid_calls_total invoke calls between services, by outcome.\n# TYPE nanogrid_calls_total counter"
    );
    for e in edges {
        let (f, t) = (escape(&e.from), escape(&e.to));
        let _ = writeln!(out, "nanogrid_calls_total{{from=\"{f}\",to=\"{t}\",outcome=\"ok\"}} {}", e.calls - e.errors);
        let _ = writeln!(out, "nanogrid_calls_total{{from=\"{f}\",to=\"{t}\",outcome=\"error\"}} {}", e.errors);
    }
    let _ = writeln!(
        out,
        "# HELP nanogrid_calls_remote_total invoke calls that ran on another node (what co-location removes).\n# TYPE nanogrid_calls_remote_total counter"
    );
    for e in edges {
        let (f, t) = (escape(&e.from), escape(&e.to));
        let _ = writeln!(out, "nanogrid_calls_remote_total{{from=\"{f}\",to=\"{t}\"}} {}", e.remote);
    }
    let _ = writeln!(
        out,
        "# HELP nanogrid_call_duration_seconds_sum Time invoke calls took, as the caller saw it.\n# TYPE nanogrid_call_duration_seconds_sum counter"
    );
    for e in edges {
        let _ = writeln!(
            out,
            "nanogrid_call_duration_seconds_sum{{from=\"{}\",to=\"{}\"}} {:.6}",
            escape(&e.from),
            escape(&e.to),
            e.total_us as f64 / 1e6
        );
    }
}

/// Which callee each barrier waited for (it answered last), the wait it caused, and every
/// edge's call durations as a histogram (its tail latency).
fn barrier_waits(out: &mut String, edges: &[crate::services::calls::EdgeReport]) {
    use crate::services::stats::LATENCY_BOUNDS_US;
    let _ = writeln!(
        out,
        "# HELP nanogrid_barrier_waited_on_total Barriers of `from` whose last answer came from `to`.\n# TYPE nanogrid_barrier_waited_on_total counter"
    );
    for e in edges.iter().filter(|e| e.barrier_last > 0) {
        let (f, t) = (escape(&e.from), escape(&e.to));
        let _ = writeln!(out, "nanogrid_barrier_waited_on_total{{from=\"{f}\",to=\"{t}\"}} {}", e.barrier_last);
    }
    let _ = writeln!(
        out,
        "# HELP nanogrid_barrier_wait_caused_seconds_total Barrier wait (fan-out to last answer) of `from` ended by `to`.\n# TYPE nanogrid_barrier_wait_caused_seconds_total counter"
    );
    for e in edges.iter().filter(|e| e.barrier_last > 0) {
        let (f, t) = (escape(&e.from), escape(&e.to));
        let secs = e.barrier_wait_ms as f64 / 1e3;
        let _ = writeln!(out, "nanogrid_barrier_wait_caused_seconds_total{{from=\"{f}\",to=\"{t}\"}} {secs:.3}");
    }
    let _ = writeln!(
        out,
        "# HELP nanogrid_call_latency_seconds invoke and barrier calls' durations, as the caller saw them.\n# TYPE nanogrid_call_latency_seconds histogram"
    );
    for e in edges.iter().filter(|e| e.calls > 0) {
        let (f, t) = (escape(&e.from), escape(&e.to));
        let mut cumulative = 0;
        for (i, c) in e.latency.iter().enumerate() {
            cumulative += c;
            let le = LATENCY_BOUNDS_US.get(i).map_or("+Inf".to_string(), |b| format!("{}", *b as f64 / 1e6));
            let _ = writeln!(
                out,
                "nanogrid_call_latency_seconds_bucket{{from=\"{f}\",to=\"{t}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "nanogrid_call_latency_seconds_sum{{from=\"{f}\",to=\"{t}\"}} {:.6}",
            e.total_us as f64 / 1e6
        );
        let _ = writeln!(out, "nanogrid_call_latency_seconds_count{{from=\"{f}\",to=\"{t}\"}} {cumulative}");
    }
}

/// Spans kept for `GET /v1/traces`, and what OTLP export sent and dropped.
fn tracing_metrics(out: &mut String, node: &Node) {
    let Some(t) = node.registry.tracer() else { return };
    let _ = writeln!(
        out,
        "# HELP nanogrid_trace_spans_kept Spans in this node's ring for GET /v1/traces.\n# TYPE nanogrid_trace_spans_kept gauge\nnanogrid_trace_spans_kept {}",
        t.ring.len()
    );
    if let Some(e) = t.exporter() {
        use std::sync::atomic::Ordering::Relaxed;
        let _ = writeln!(
            out,
            "# HELP nanogrid_otlp_spans_total Spans given to OTLP export, by outcome.\n# TYPE nanogrid_otlp_spans_total counter\nnanogrid_otlp_spans_total{{outcome=\"exported\"}} {}\nnanogrid_otlp_spans_total{{outcome=\"dropped\"}} {}",
            e.stats.exported.load(Relaxed),
            e.stats.dropped.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP nanogrid_otlp_failed_batches_total Export requests the collector did not accept.\n# TYPE nanogrid_otlp_failed_batches_total counter\nnanogrid_otlp_failed_batches_total {}",
            e.stats.failed_batches.load(Relaxed)
        );
    }
}

/// `nanogrid_request_latency_seconds`: the same durations as a histogram, so p99 can be
/// read (the summary above has only sum and count).
fn latency_histograms(out: &mut String, services: &[std::sync::Arc<crate::services::Service>]) {
    use crate::services::stats::LATENCY_BOUNDS_US;
    let _ = writeln!(
        out,
        "# HELP nanogrid_request_latency_seconds Time in the guest, admission excluded.\n# TYPE nanogrid_request_latency_seconds histogram"
    );
    for s in services {
        let n = escape(&s.name);
        let counts = s.stats.latency_counts();
        let mut cumulative = 0;
        for (i, c) in counts.iter().enumerate() {
            cumulative += c;
            let le = LATENCY_BOUNDS_US.get(i).map_or("+Inf".to_string(), |b| format!("{}", *b as f64 / 1e6));
            let _ =
                writeln!(out, "nanogrid_request_latency_seconds_bucket{{service=\"{n}\",le=\"{le}\"}} {cumulative}");
        }
        let sum = S::get(&s.stats.duration_us_sum) as f64 / 1e6;
        let _ = writeln!(out, "nanogrid_request_latency_seconds_sum{{service=\"{n}\"}} {sum:.6}");
        let _ = writeln!(out, "nanogrid_request_latency_seconds_count{{service=\"{n}\"}} {cumulative}");
    }
}
