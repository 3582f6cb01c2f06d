//! The call graph this node has seen: which service called which through `invoke`, how
//! often, how many calls failed, and how long they took (the callee's answer as the
//! caller saw it, so a forwarded call includes the hop). Every call carries the caller's
//! request id; this is its aggregate, the input for finding hot chains and slow edges.
//! `remote` counts the calls that ran on another node: the traffic co-location removes.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

#[derive(Default)]
struct Edge {
    calls: AtomicU64,
    errors: AtomicU64,
    remote: AtomicU64,
    micros_sum: AtomicU64,
    micros_max: AtomicU64,
}

/// One edge as reported by `GET /v1/graph` and `/metrics`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct EdgeReport {
    pub from: String,
    pub to: String,
    pub calls: u64,
    pub errors: u64,
    /// Calls that ran on another node (older nodes do not report it).
    #[serde(default)]
    pub remote: u64,
    pub mean_us: u64,
    pub max_us: u64,
    pub total_us: u64,
}

#[derive(Default)]
pub struct CallGraph {
    edges: RwLock<HashMap<(String, String), Edge>>,
}

impl CallGraph {
    /// Count one call. Callers only record calls to deployed services, so the number of
    /// edges is bounded by the number of services squared, whatever names guests invent.
    pub fn record(&self, from: &str, to: &str, ok: bool, remote: bool, micros: u64) {
        let key = (from.to_string(), to.to_string());
        {
            let edges = self.edges.read().unwrap_or_else(|e| e.into_inner());
            if let Some(e) = edges.get(&key) {
                count(e, ok, remote, micros);
                return;
            }
        }
        let mut edges = self.edges.write().unwrap_or_else(|e| e.into_inner());
        count(edges.entry(key).or_default(), ok, remote, micros);
    }

    /// Every edge, busiest first.
    pub fn report(&self) -> Vec<EdgeReport> {
        let edges = self.edges.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<EdgeReport> = edges
            .iter()
            .map(|((from, to), e)| {
                let calls = e.calls.load(Ordering::Relaxed);
                let total = e.micros_sum.load(Ordering::Relaxed);
                EdgeReport {
                    from: from.clone(),
                    to: to.clone(),
                    calls,
                    errors: e.errors.load(Ordering::Relaxed),
                    remote: e.remote.load(Ordering::Relaxed),
                    mean_us: total.checked_div(calls).unwrap_or(0),
                    max_us: e.micros_max.load(Ordering::Relaxed),
                    total_us: total,
                }
            })
            .collect();
        out.sort_by(|a, b| b.calls.cmp(&a.calls).then_with(|| (&a.from, &a.to).cmp(&(&b.from, &b.to))));
        out
    }
}

/// Add up the reports of several nodes into one graph, busiest edge first.
pub fn merge(reports: impl IntoIterator<Item = Vec<EdgeReport>>) -> Vec<EdgeReport> {
    let mut by_edge: HashMap<(String, String), EdgeReport> = HashMap::new();
    for e in reports.into_iter().flatten() {
        let m = by_edge.entry((e.from.clone(), e.to.clone())).or_insert_with(|| EdgeReport {
            calls: 0,
            errors: 0,
            remote: 0,
            mean_us: 0,
            max_us: 0,
            total_us: 0,
            ..e.clone()
        });
        m.calls += e.calls;
        m.errors += e.errors;
        m.remote += e.remote;
        m.total_us += e.total_us;
        m.max_us = m.max_us.max(e.max_us);
        m.mean_us = m.total_us.checked_div(m.calls).unwrap_or(0);
    }
    let mut out: Vec<EdgeReport> = by_edge.into_values().collect();
    out.sort_by(|a, b| b.calls.cmp(&a.calls).then_with(|| (&a.from, &a.to).cmp(&(&b.from, &b.to))));
    out
}

fn count(e: &Edge, ok: bool, remote: bool, micros: u64) {
    e.calls.fetch_add(1, Ordering::Relaxed);
    if !ok {
        e.errors.fetch_add(1, Ordering::Relaxed);
    }
    if remote {
        e.remote.fetch_add(1, Ordering::Relaxed);
    }
    e.micros_sum.fetch_add(micros, Ordering::Relaxed);
    e.micros_max.fetch_max(micros, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_aggregate_and_sort_by_calls() {
        let g = CallGraph::default();
        g.record("a", "b", true, false, 10);
        g.record("a", "b", false, true, 30);
        g.record("a", "c", true, false, 5);
        let r = g.report();
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].from.as_str(), r[0].to.as_str()), ("a", "b"));
        assert_eq!((r[0].calls, r[0].errors, r[0].mean_us, r[0].max_us, r[0].total_us), (2, 1, 20, 30, 40));
        assert_eq!(r[0].remote, 1);
        assert_eq!((r[1].to.as_str(), r[1].calls), ("c", 1));

        let other = CallGraph::default();
        other.record("a", "c", true, true, 15);
        other.record("a", "c", true, true, 25);
        other.record("a", "c", true, false, 35);
        let m = merge([r, other.report()]);
        assert_eq!((m[0].to.as_str(), m[0].calls, m[0].mean_us, m[0].max_us, m[0].remote), ("c", 4, 20, 35, 2));
        assert_eq!((m[1].to.as_str(), m[1].calls, m[1].errors), ("b", 2, 1));
    }
}
