//! The call graph this node has seen: which service called which through `invoke`, how
//! often, how many calls failed, and how long they took (the callee's answer as the
//! caller saw it, so a forwarded call includes the hop). Every call carries the caller's
//! request id; this is its aggregate, the input for finding hot chains and slow edges.
//! `remote` counts the calls that ran on another node: the traffic co-location removes.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::stats::LATENCY_BOUNDS_US;

#[derive(Default)]
struct Edge {
    calls: AtomicU64,
    errors: AtomicU64,
    remote: AtomicU64,
    micros_sum: AtomicU64,
    micros_max: AtomicU64,
    /// Calls by duration (`stats::LATENCY_BOUNDS_US`): the edge's tail latency.
    latency: [AtomicU64; LATENCY_BOUNDS_US.len() + 1],
    /// Barriers of the caller that waited for this callee last, and how long they waited.
    barrier_last: AtomicU64,
    barrier_wait_ms: AtomicU64,
}

/// One edge as reported by `GET /v1/graph` and `/metrics`.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
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
    /// Calls by duration, not cumulative (bounds: `stats::LATENCY_BOUNDS_US`).
    #[serde(default)]
    pub latency: Vec<u64>,
    /// Barriers of `from` whose last answer was this callee's, and the wait they had in
    /// all (fan-out to last answer): the wait this callee caused.
    #[serde(default)]
    pub barrier_last: u64,
    #[serde(default)]
    pub barrier_wait_ms: u64,
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

    /// A barrier of `from` got its last answer from `to`, `waited_ms` after its fan-out.
    pub fn record_wait(&self, from: &str, to: &str, waited_ms: u64) {
        let key = (from.to_string(), to.to_string());
        let mut edges = self.edges.write().unwrap_or_else(|e| e.into_inner());
        let e = edges.entry(key).or_default();
        e.barrier_last.fetch_add(1, Ordering::Relaxed);
        e.barrier_wait_ms.fetch_add(waited_ms, Ordering::Relaxed);
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
                    latency: e.latency.iter().map(|c| c.load(Ordering::Relaxed)).collect(),
                    barrier_last: e.barrier_last.load(Ordering::Relaxed),
                    barrier_wait_ms: e.barrier_wait_ms.load(Ordering::Relaxed),
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
            from: e.from.clone(),
            to: e.to.clone(),
            ..Default::default()
        });
        m.calls += e.calls;
        m.errors += e.errors;
        m.remote += e.remote;
        m.total_us += e.total_us;
        m.max_us = m.max_us.max(e.max_us);
        m.mean_us = m.total_us.checked_div(m.calls).unwrap_or(0);
        m.barrier_last += e.barrier_last;
        m.barrier_wait_ms += e.barrier_wait_ms;
        if m.latency.len() < e.latency.len() {
            m.latency.resize(e.latency.len(), 0);
        }
        for (a, b) in m.latency.iter_mut().zip(&e.latency) {
            *a += b;
        }
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
    e.latency[LATENCY_BOUNDS_US.partition_point(|&b| b < micros)].fetch_add(1, Ordering::Relaxed);
}

/// The bound under which `q` of the calls counted in `latency` finished (µs; `None`
/// without calls, `u64::MAX` past the last bound).
pub fn quantile_us(latency: &[u64], q: f64) -> Option<u64> {
    let total: u64 = latency.iter().sum();
    if total == 0 {
        return None;
    }
    let mut seen = 0;
    for (i, c) in latency.iter().enumerate() {
        seen += c;
        if seen as f64 >= q * total as f64 {
            return Some(LATENCY_BOUNDS_US.get(i).copied().unwrap_or(u64::MAX));
        }
    }
    Some(u64::MAX)
}

/// `GET /v1/barriers/stats`: per (caller, callee) with barrier calls, the share of the
/// caller's barrier wait the callee caused (it answered last), and its tail latency.
pub fn barrier_stats(edges: &[EdgeReport]) -> Vec<CalleeWait> {
    let mut total: HashMap<&str, u64> = HashMap::new();
    for e in edges {
        *total.entry(e.from.as_str()).or_default() += e.barrier_wait_ms;
    }
    let mut out: Vec<CalleeWait> = edges
        .iter()
        .filter(|e| total.get(e.from.as_str()).is_some_and(|t| *t > 0))
        .map(|e| {
            let share = e.barrier_wait_ms as f64 / total[e.from.as_str()] as f64;
            let ms = |q| quantile_us(&e.latency, q).map(|us| us as f64 / 1000.0);
            CalleeWait {
                caller: e.from.clone(),
                callee: e.to.clone(),
                calls: e.calls,
                remote: e.remote,
                waited_on: e.barrier_last,
                wait_caused_ms: e.barrier_wait_ms,
                wait_share: (share * 1000.0).round() / 1000.0,
                p50_ms: ms(0.5),
                p99_ms: ms(0.99),
            }
        })
        .collect();
    out.sort_by(|a, b| b.wait_share.total_cmp(&a.wait_share));
    out
}

/// One callee's part in its caller's barrier waits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalleeWait {
    pub caller: String,
    pub callee: String,
    pub calls: u64,
    /// Calls answered on another node.
    pub remote: u64,
    /// Barriers in which it answered last.
    pub waited_on: u64,
    /// Milliseconds of barrier wait it caused (as the last to answer).
    pub wait_caused_ms: u64,
    /// Its share of the caller's whole barrier wait (0 to 1).
    pub wait_share: f64,
    /// Call latency percentiles (`None` without calls).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
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
        assert_eq!(m[0].latency.iter().sum::<u64>(), 4, "latency buckets add up");
    }

    #[test]
    fn barrier_waits_are_shared_among_the_callees_that_answered_last() {
        let g = CallGraph::default();
        for _ in 0..9 {
            g.record("jobs", "slow", true, true, 40_000);
            g.record("jobs", "fast", true, false, 300);
        }
        g.record("jobs", "slow", true, true, 900_000);
        g.record("jobs", "fast", true, false, 300);
        for _ in 0..3 {
            g.record_wait("jobs", "slow", 40);
        }
        g.record_wait("jobs", "fast", 40);
        let stats = barrier_stats(&g.report());
        assert_eq!(stats[0].callee, "slow");
        assert_eq!(stats[0].wait_share, 0.75);
        assert_eq!(stats[0].waited_on, 3);
        assert_eq!(stats[0].p50_ms, Some(50.0));
        assert_eq!(stats[0].p99_ms, Some(1000.0));
        assert_eq!(stats[1].wait_share, 0.25);
        assert_eq!(stats[1].p99_ms, Some(0.5));
    }
}
