//! Traffic-driven co-location: where the calls to each service come from.
//!
//! The leader samples every serving node's call graph (`GET /graph` on the peer RPC) once
//! per window and turns the growth of the counters into calls per second per (calling
//! node, callee). A node whose demand for a service reaches the configured rate is *hot*
//! for it; placement gives a service's instances to its hot nodes first, so a chain of
//! `invoke` calls runs on one node instead of crossing the network on every call.
//!
//! Demand is counted where the caller runs, whether or not the callee ran there, so moving
//! an instance does not change the measurement that moved it. Levels are powers of two
//! above the threshold, and a node that already holds the instance wins ties and one
//! level more, so two nodes with similar demand do not trade an instance back and forth.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use serde::Serialize;

use crate::services::calls::EdgeReport;

/// Per service: the level of each node's demand for it (1 = at the threshold, 2 = twice
/// it, 3 = four times, ...). Nodes below the threshold are absent.
pub type Affinity = BTreeMap<String, BTreeMap<String, u32>>;

/// Cumulative calls per (calling node, callee).
type Counts = BTreeMap<(String, String), u64>;

/// One row of `GET /v1/graph`'s `demand`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Demand {
    pub service: String,
    pub node: String,
    pub calls_per_s: f64,
    /// Calls from that node that ran elsewhere, per second.
    pub remote_per_s: f64,
    /// Of the barrier wait on that node this window, the share this callee caused (it
    /// answered last); 0 without barriers.
    pub wait_share: f64,
    /// 0 below the threshold; placement prefers higher levels.
    pub level: u32,
}

/// A callee that caused at least this share of a node's barrier wait over a window, in
/// at least [`WAIT_MIN_BARRIERS`] barriers, is hot on that node whatever its call rate:
/// bringing it next to its callers shortens every barrier it ends.
pub const WAIT_SHARE: f64 = 0.5;
pub const WAIT_MIN_BARRIERS: u64 = 2;

/// The leader's view of call traffic, refreshed once per window.
#[derive(Default)]
pub struct Traffic {
    last: Option<Sample>,
    pub demand: Vec<Demand>,
    pub affinity: Affinity,
}

struct Sample {
    at: Instant,
    nodes: BTreeSet<String>,
    calls: Counts,
    remote: Counts,
    /// Barrier waits per (node, callee that answered last): count and milliseconds.
    lasts: Counts,
    waits: Counts,
}

impl Traffic {
    /// Take a new sample (each node's own edge report) and recompute demand against the
    /// previous one. Only nodes that answered both times have demand this window (a node
    /// seen for the first time has counters from before the window).
    pub fn observe(&mut self, at: Instant, reports: &[(String, Vec<EdgeReport>)], min_rate: f64) {
        let [calls, remote, lasts, waits] = counts(reports);
        let nodes: BTreeSet<String> = reports.iter().map(|(n, _)| n.clone()).collect();
        let now = Sample { at, nodes, calls, remote, lasts, waits };
        if let Some(before) = &self.last {
            let secs = at.duration_since(before.at).as_secs_f64();
            if secs > 0.0 {
                self.demand = demand(before, &now, secs, min_rate);
                self.affinity = affinity(&self.demand);
            }
        }
        self.last = Some(now);
    }

    /// Forget everything (this node stopped leading: a later sample must not be compared
    /// with one taken long ago).
    pub fn reset(&mut self) {
        *self = Traffic::default();
    }
}

/// Sum each node's outgoing calls per callee (all callers on that node together): calls,
/// remote calls, barriers it ended, barrier wait it caused.
fn counts(reports: &[(String, Vec<EdgeReport>)]) -> [Counts; 4] {
    let mut out: [Counts; 4] = Default::default();
    for (node, edges) in reports {
        for e in edges.iter().filter(|e| e.from != e.to) {
            let key = (node.clone(), e.to.clone());
            for (c, v) in out.iter_mut().zip([e.calls, e.remote, e.barrier_last, e.barrier_wait_ms]) {
                *c.entry(key.clone()).or_default() += v;
            }
        }
    }
    out
}

/// Calls per second over the window; a counter that went down (its node restarted)
/// counts from zero.
fn demand(before: &Sample, now: &Sample, secs: f64, min_rate: f64) -> Vec<Demand> {
    let growth = |old: &Counts, new: &Counts, key: &(String, String)| {
        let (b, a) = (old.get(key).copied().unwrap_or(0), new.get(key).copied().unwrap_or(0));
        if a >= b { a - b } else { a }
    };
    // The barrier wait each node had this window, all callees together.
    let mut node_wait: BTreeMap<&str, u64> = BTreeMap::new();
    for key in now.waits.keys() {
        *node_wait.entry(key.0.as_str()).or_default() += growth(&before.waits, &now.waits, key);
    }
    let mut out: Vec<Demand> = now
        .calls
        .keys()
        .filter(|key| before.nodes.contains(&key.0))
        .filter_map(|key| {
            let rate = growth(&before.calls, &now.calls, key) as f64 / secs;
            let remote_rate = growth(&before.remote, &now.remote, key) as f64 / secs;
            let waited = growth(&before.waits, &now.waits, key);
            let total = node_wait.get(key.0.as_str()).copied().unwrap_or(0);
            let share = if total > 0 { waited as f64 / total as f64 } else { 0.0 };
            let mut level = level(rate, min_rate);
            if min_rate > 0.0 && share >= WAIT_SHARE && growth(&before.lasts, &now.lasts, key) >= WAIT_MIN_BARRIERS {
                level = level.max(1);
            }
            (rate > 0.0).then(|| Demand {
                service: key.1.clone(),
                node: key.0.clone(),
                calls_per_s: (rate * 10.0).round() / 10.0,
                remote_per_s: (remote_rate * 10.0).round() / 10.0,
                wait_share: (share * 1000.0).round() / 1000.0,
                level,
            })
        })
        .collect();
    out.sort_by(|a, b| {
        b.calls_per_s.total_cmp(&a.calls_per_s).then_with(|| (&a.service, &a.node).cmp(&(&b.service, &b.node)))
    });
    out
}

/// 0 below `min_rate` (or when co-location is off), else 1 + log2(rate / min_rate).
fn level(rate: f64, min_rate: f64) -> u32 {
    if min_rate <= 0.0 || rate < min_rate {
        return 0;
    }
    1 + (rate / min_rate).log2().floor().min(30.0) as u32
}

fn affinity(demand: &[Demand]) -> Affinity {
    let mut out = Affinity::new();
    for d in demand.iter().filter(|d| d.level > 0) {
        out.entry(d.service.clone()).or_default().insert(d.node.clone(), d.level);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn edge(from: &str, to: &str, calls: u64, remote: u64) -> EdgeReport {
        EdgeReport { from: from.into(), to: to.into(), calls, remote, ..Default::default() }
    }

    #[test]
    fn levels_double_above_the_threshold() {
        assert_eq!(level(4.9, 5.0), 0);
        assert_eq!(level(5.0, 5.0), 1);
        assert_eq!(level(9.9, 5.0), 1);
        assert_eq!(level(10.0, 5.0), 2);
        assert_eq!(level(45.0, 5.0), 4);
        assert_eq!(level(1e9, 0.0), 0, "a zero threshold turns co-location off");
    }

    #[test]
    fn demand_is_the_growth_per_second_per_calling_node() {
        let t0 = Instant::now();
        let mut t = Traffic::default();
        let first = vec![
            ("n1".to_string(), vec![edge("a", "b", 100, 100), edge("a", "a", 50, 0)]),
            ("n2".to_string(), vec![edge("a", "b", 10, 0), edge("c", "b", 5, 0)]),
            ("n3".to_string(), vec![edge("d", "b", 1000, 1000)]),
        ];
        t.observe(t0, &first, 5.0);
        assert!(t.demand.is_empty(), "one sample has no rate yet");
        let second = vec![
            // n1: 100 more calls to b in 2 s, all remote; calls to itself are not edges.
            ("n1".to_string(), vec![edge("a", "b", 200, 200), edge("a", "a", 500, 0)]),
            // n2: two callers add up to 8 calls in 2 s (below the threshold).
            ("n2".to_string(), vec![edge("a", "b", 14, 0), edge("c", "b", 9, 0)]),
            // n3 restarted: its counters start again from zero.
            ("n3".to_string(), vec![edge("d", "b", 30, 30)]),
            // n4 is new: its counters are not a rate yet.
            ("n4".to_string(), vec![edge("d", "b", 9000, 9000)]),
        ];
        t.observe(t0 + Duration::from_secs(2), &second, 5.0);
        let rows: Vec<(&str, &str, f64, f64, u32)> = t
            .demand
            .iter()
            .map(|d| (d.service.as_str(), d.node.as_str(), d.calls_per_s, d.remote_per_s, d.level))
            .collect();
        assert_eq!(rows, vec![("b", "n1", 50.0, 50.0, 4), ("b", "n3", 15.0, 15.0, 2), ("b", "n2", 4.0, 0.0, 0)]);
        assert_eq!(t.affinity["b"], BTreeMap::from([("n1".to_string(), 4), ("n3".to_string(), 2)]));

        // No growth: no demand. A node that does not answer has none either.
        t.observe(t0 + Duration::from_secs(4), &second[..1], 5.0);
        assert!(t.demand.is_empty(), "{:?}", t.demand);
        assert!(t.affinity.is_empty());
    }

    #[test]
    fn a_callee_that_ends_most_barriers_is_hot_below_the_call_rate() {
        let waits = |slow_last: u64, slow_ms: u64, fast_last: u64, fast_ms: u64, calls: u64| {
            let e = |to: &str, last, ms| EdgeReport {
                from: "jobs".into(),
                to: to.into(),
                calls,
                remote: calls,
                barrier_last: last,
                barrier_wait_ms: ms,
                ..Default::default()
            };
            vec![("n1".to_string(), vec![e("slow", slow_last, slow_ms), e("fast", fast_last, fast_ms)])]
        };
        let t0 = Instant::now();
        let mut t = Traffic::default();
        t.observe(t0, &waits(0, 0, 0, 0, 0), 1000.0);
        // 10 calls a second each (far below 1000), but slow ended 3 of 4 barriers and
        // caused 90 % of the wait.
        t.observe(t0 + Duration::from_secs(1), &waits(3, 900, 1, 100, 10), 1000.0);
        let slow = t.demand.iter().find(|d| d.service == "slow").unwrap();
        let fast = t.demand.iter().find(|d| d.service == "fast").unwrap();
        assert_eq!((slow.wait_share, slow.level), (0.9, 1));
        assert_eq!((fast.wait_share, fast.level), (0.1, 0));
        assert_eq!(t.affinity["slow"]["n1"], 1);
        // One barrier is not a pattern.
        t.observe(t0 + Duration::from_secs(2), &waits(4, 1800, 1, 100, 20), 1000.0);
        assert_eq!(t.demand.iter().find(|d| d.service == "slow").unwrap().level, 0);
        // Co-location off (threshold 0): never hot.
        t.observe(t0 + Duration::from_secs(3), &waits(9, 9000, 1, 100, 30), 0.0);
        assert!(t.affinity.is_empty());
    }
}
