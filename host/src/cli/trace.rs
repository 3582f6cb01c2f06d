//! `nanogrid trace ID` (a waterfall of one trace's spans from every node), `nanogrid
//! traces` (recent traces) and `nanogrid trace-sample [R]` (a node's sampling, changed
//! while it runs).

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;

use http::Method;
use serde_json::json;

use super::ClientArgs;
use super::commands::{admin_client, check};
use crate::api::{TraceList, TraceView, TracingView};
use crate::trace::SpanRecord;

const BAR: usize = 40;

pub async fn trace(client: &ClientArgs, id: &str) -> anyhow::Result<ExitCode> {
    let c = admin_client(client);
    let t: TraceView = serde_json::from_value(check(c.get(&format!("/v1/traces/{id}")).await?)?)?;
    print!("{}", waterfall(id, &t.spans));
    Ok(ExitCode::SUCCESS)
}

pub async fn sample(client: &ClientArgs, share: Option<f64>) -> anyhow::Result<ExitCode> {
    let c = admin_client(client);
    let v: TracingView = serde_json::from_value(match share {
        Some(r) => check(c.call_json(Method::PUT, "/v1/tracing", &json!({ "sample": r })).await?)?,
        None => check(c.get("/v1/tracing").await?)?,
    })?;
    let was = v.was.map(|w| format!(" (was {w})")).unwrap_or_default();
    // As JSON writes it (1.0, not 1).
    println!("node {}: records {} of new traces{was}", v.node, json!(v.sample));
    println!("ring: {} of {} spans", v.ring.spans, v.ring.capacity);
    match v.otlp {
        Some(o) => {
            println!("otlp: {} exported, {} dropped, {} failed batches", o.exported, o.dropped, o.failed_batches)
        }
        None => println!("otlp: off (--otlp-endpoint)"),
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn traces(client: &ClientArgs, service: Option<&str>, min_ms: u64) -> anyhow::Result<ExitCode> {
    let c = admin_client(client);
    let mut path = format!("/v1/traces?min_ms={min_ms}&limit=30");
    if let Some(s) = service {
        path.push_str(&format!("&service={s}"));
    }
    let list: TraceList = serde_json::from_value(check(c.get(&path).await?)?)?;
    let traces = list.traces;
    if traces.is_empty() {
        println!("no traces (each node keeps its most recent spans; try without filters)");
    }
    println!("{:<32} {:>9} {:>5} {:<24} SERVICES", "TRACE", "MS", "SPANS", "ROOT");
    for t in traces {
        let services: Vec<&str> = t.services.iter().map(String::as_str).collect();
        println!(
            "{:<32} {:>9.2} {:>5} {:<24} {}{}",
            t.trace_id,
            t.duration_us as f64 / 1000.0,
            t.spans,
            t.root,
            services.join(","),
            if t.errors > 0 { "  (errors)" } else { "" },
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The spans as a tree by their parent links, each with a bar on a common time axis.
pub fn waterfall(id: &str, spans: &[SpanRecord]) -> String {
    let start = |s: &SpanRecord| s.start_unix_us;
    let dur = |s: &SpanRecord| s.duration_us;
    let t0 = spans.iter().map(start).min().unwrap_or(0);
    let t1 = spans.iter().map(|s| start(s) + dur(s)).max().unwrap_or(t0).max(t0 + 1);
    let ids: BTreeSet<_> = spans.iter().map(|s| s.span_id).collect();
    let mut children: BTreeMap<_, Vec<&SpanRecord>> = BTreeMap::new();
    let mut roots = Vec::new();
    for s in spans {
        match s.parent_id.filter(|p| ids.contains(p)) {
            Some(p) => children.entry(p).or_default().push(s),
            None => roots.push(s),
        }
    }
    let nodes: BTreeSet<&str> = spans.iter().map(|s| &*s.node).collect();
    let mut out = format!(
        "trace {id} · {:.2} ms · {} spans · nodes {}\n",
        (t1 - t0) as f64 / 1000.0,
        spans.len(),
        nodes.into_iter().collect::<Vec<_>>().join(", ")
    );
    out.push_str(&format!("{:<40} {:<10} {:>9} {:>9}  {}\n", "SPAN", "NODE", "START_MS", "MS", "TIME"));
    let mut stack: Vec<(&SpanRecord, usize)> = roots.into_iter().rev().map(|s| (s, 0)).collect();
    while let Some((s, depth)) = stack.pop() {
        let scale = |t: u64| ((t - t0) as f64 / (t1 - t0) as f64 * BAR as f64).round() as usize;
        let (a, b) = (scale(start(s)), scale(start(s) + dur(s)).max(scale(start(s)) + 1).min(BAR));
        let bar = format!("{}{}", " ".repeat(a.min(BAR)), "█".repeat(b.saturating_sub(a)));
        let mut name = format!("{}{}", "  ".repeat(depth), &*s.name);
        if !s.error.is_empty() {
            name.push_str(&format!(" !{}", s.error));
        }
        out.push_str(&format!(
            "{:<40} {:<10} {:>9.2} {:>9.2}  {bar}\n",
            name,
            &*s.node,
            (start(s) - t0) as f64 / 1000.0,
            dur(s) as f64 / 1000.0,
        ));
        if let Some(kids) = children.get(&s.span_id) {
            let mut kids = kids.clone();
            kids.sort_by_key(|k| std::cmp::Reverse(start(k)));
            stack.extend(kids.into_iter().map(|k| (k, depth + 1)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn the_waterfall_nests_children_under_parents_on_one_time_axis() {
        const T: &str = "0af7651916cd43dd8448eb211c80319c";
        let (a, b, c, client) = ("00000000000000a0", "00000000000000b0", "00000000000000c0", "00000000000000f0");
        let spans: Vec<crate::trace::SpanRecord> = serde_json::from_value(json!([
            {"trace_id": T, "span_id": b, "parent_id": a, "name": "run hello", "kind": "internal", "node": "n2", "start_unix_us": 1_500, "duration_us": 500},
            {"trace_id": T, "span_id": a, "parent_id": client, "name": "ingress hello", "kind": "server", "node": "n1", "start_unix_us": 1_000, "duration_us": 2_000},
            {"trace_id": T, "span_id": c, "parent_id": b, "name": "run x", "kind": "internal", "node": "n2", "start_unix_us": 1_600, "duration_us": 100, "error": "trap"},
        ]))
        .unwrap();
        let text = super::waterfall("t", &spans);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("2.00 ms · 3 spans · nodes n1, n2"), "{text}");
        assert!(lines[2].starts_with("ingress hello"), "{text}");
        assert!(lines[3].starts_with("  run hello"), "{text}");
        assert!(lines[4].starts_with("    run x !trap"), "{text}");
        // The root's bar spans the whole axis; the child starts a quarter in.
        assert!(lines[2].ends_with(&"█".repeat(40)), "{text}");
        assert!(lines[3].ends_with(&format!("{}{}", " ".repeat(10), "█".repeat(10))), "{text}");
    }
}
