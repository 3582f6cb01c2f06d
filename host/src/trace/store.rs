//! The recent spans a node recorded, in a bounded ring (the oldest go first), and the
//! per-trace summaries `GET /v1/traces` lists. A cluster answers a trace from every node's
//! ring ([`merge_summaries`] adds up what each saw).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::{SpanRecord, TraceId};

pub struct SpanRing {
    cap: usize,
    spans: Mutex<VecDeque<SpanRecord>>,
}

/// One trace as the nodes asked saw it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TraceSummary {
    pub trace_id: String,
    /// The first span's name (the root's when this node has it).
    pub root: String,
    pub start_unix_us: u64,
    pub duration_us: u64,
    pub spans: usize,
    pub errors: usize,
    pub services: BTreeSet<String>,
    pub nodes: BTreeSet<String>,
}

/// What `GET /v1/traces` filters on.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TraceQuery {
    pub service: Option<String>,
    pub min_ms: u64,
    pub limit: usize,
    /// Only these traces (a cluster's second round: the parts other nodes saw).
    #[serde(default)]
    pub ids: Option<BTreeSet<String>>,
}

impl SpanRing {
    pub fn new(cap: usize) -> SpanRing {
        SpanRing { cap: cap.max(1), spans: Mutex::new(VecDeque::with_capacity(cap.clamp(1, 1 << 16))) }
    }

    pub fn push(&self, span: SpanRecord) {
        let evicted = {
            let mut spans = self.spans.lock().unwrap_or_else(|e| e.into_inner());
            let evicted = if spans.len() >= self.cap { spans.pop_front() } else { None };
            spans.push_back(span);
            evicted
        };
        // Freed outside the lock: other requests' spans need not wait for it.
        drop(evicted);
    }

    /// The most spans it keeps (`--trace-ring`).
    pub fn capacity(&self) -> usize {
        self.cap
    }

    pub fn len(&self) -> usize {
        self.spans.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every span of one trace this node still has, in start order.
    pub fn trace(&self, id: TraceId) -> Vec<SpanRecord> {
        let spans = self.spans.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<SpanRecord> = spans.iter().filter(|s| s.trace_id == id).cloned().collect();
        out.sort_by_key(|s| s.start_unix_us);
        out
    }

    /// Summaries of the traces this node has spans of, newest first.
    pub fn summaries(&self, q: &TraceQuery) -> Vec<TraceSummary> {
        let by_trace: HashMap<TraceId, Vec<SpanRecord>> = {
            let spans = self.spans.lock().unwrap_or_else(|e| e.into_inner());
            let mut m: HashMap<TraceId, Vec<SpanRecord>> = HashMap::new();
            for s in spans.iter() {
                m.entry(s.trace_id).or_default().push(s.clone());
            }
            m
        };
        let all: Vec<TraceSummary> = by_trace.into_values().map(|spans| summarize(&spans)).collect();
        filter(all, q)
    }
}

fn summarize(spans: &[SpanRecord]) -> TraceSummary {
    let start = spans.iter().map(|s| s.start_unix_us).min().unwrap_or(0);
    let end = spans.iter().map(|s| s.start_unix_us + s.duration_us).max().unwrap_or(start);
    let root = spans
        .iter()
        .find(|s| s.parent_id.is_none())
        .or_else(|| spans.iter().min_by_key(|s| s.start_unix_us))
        .map(|s| s.name.to_string())
        .unwrap_or_default();
    TraceSummary {
        trace_id: spans.first().map(|s| s.trace_id.to_string()).unwrap_or_default(),
        root,
        start_unix_us: start,
        duration_us: end - start,
        spans: spans.len(),
        errors: spans.iter().filter(|s| !s.error.is_empty()).count(),
        services: spans.iter().filter_map(|s| s.service.as_deref().map(str::to_string)).collect(),
        nodes: spans.iter().map(|s| s.node.to_string()).collect(),
    }
}

fn filter(mut all: Vec<TraceSummary>, q: &TraceQuery) -> Vec<TraceSummary> {
    all.retain(|t| {
        t.duration_us >= q.min_ms.saturating_mul(1000)
            && q.service.as_ref().is_none_or(|s| t.services.contains(s))
            && q.ids.as_ref().is_none_or(|ids| ids.contains(&t.trace_id))
    });
    all.sort_by(|a, b| b.start_unix_us.cmp(&a.start_unix_us).then_with(|| a.trace_id.cmp(&b.trace_id)));
    all.truncate(q.limit.max(1));
    all
}

/// Several nodes' summaries of the same traces as one list (each node saw part of a
/// trace: its spans, start and end).
pub fn merge_summaries(lists: impl IntoIterator<Item = Vec<TraceSummary>>, q: &TraceQuery) -> Vec<TraceSummary> {
    let mut by_id: BTreeMap<String, TraceSummary> = BTreeMap::new();
    for t in lists.into_iter().flatten() {
        match by_id.get_mut(&t.trace_id) {
            None => {
                by_id.insert(t.trace_id.clone(), t);
            }
            Some(m) => {
                let end = (m.start_unix_us + m.duration_us).max(t.start_unix_us + t.duration_us);
                if t.start_unix_us < m.start_unix_us {
                    m.root = t.root.clone();
                }
                m.start_unix_us = m.start_unix_us.min(t.start_unix_us);
                m.duration_us = end - m.start_unix_us;
                m.spans += t.spans;
                m.errors += t.errors;
                m.services.extend(t.services);
                m.nodes.extend(t.nodes);
            }
        }
    }
    filter(by_id.into_values().collect(), q)
}

#[cfg(test)]
mod tests {
    use super::super::{Open, SpanContext, SpanId, SpanKind};
    use super::*;

    fn span(trace: u128, parent: Option<u64>, node: &str, service: &str, start: u64, dur: u64) -> SpanRecord {
        let ctx = SpanContext { trace_id: TraceId(trace), span_id: SpanId(parent.unwrap_or(1)), sampled: true };
        let mut s = Open::child_of(&ctx).close(
            &node.into(),
            format!("run {service}").into(),
            SpanKind::Internal,
            Some(service.into()),
        );
        s.parent_id = parent.map(SpanId);
        s.start_unix_us = start;
        s.duration_us = dur;
        s
    }

    #[test]
    fn the_ring_keeps_the_newest_spans_and_answers_by_trace() {
        let ring = SpanRing::new(3);
        for i in 0..5u64 {
            ring.push(span(1 + (i % 2) as u128, Some(i + 1), "n1", "a", 100 + i, 10));
        }
        assert_eq!(ring.len(), 3, "bounded");
        let t1 = ring.trace(TraceId(1));
        assert_eq!(t1.iter().map(|s| s.start_unix_us).collect::<Vec<_>>(), [102, 104], "oldest dropped");
    }

    #[test]
    fn summaries_filter_by_service_and_duration_and_merge_across_nodes() {
        let ring = SpanRing::new(100);
        ring.push(span(1, None, "n1", "gateway", 1_000, 5_000));
        ring.push(span(1, Some(7), "n1", "gateway", 1_100, 4_000));
        ring.push(span(2, None, "n1", "hello", 2_000, 500));
        let all = ring.summaries(&TraceQuery { limit: 10, ..Default::default() });
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].trace_id, TraceId(2).to_string(), "newest first");
        let slow = ring.summaries(&TraceQuery { min_ms: 2, limit: 10, ..Default::default() });
        assert_eq!(slow.len(), 1);
        let q = TraceQuery { service: Some("hello".into()), limit: 10, ..Default::default() };
        assert_eq!(ring.summaries(&q).len(), 1);

        // Another node ran the end of trace 1, later.
        let other = SpanRing::new(100);
        other.push(span(1, Some(9), "n2", "wordcount", 2_000, 7_000));
        let q = TraceQuery { limit: 10, ..Default::default() };
        let merged = merge_summaries([ring.summaries(&q), other.summaries(&q)], &q);
        let t1 = merged.iter().find(|t| t.trace_id == TraceId(1).to_string()).unwrap();
        assert_eq!((t1.spans, t1.start_unix_us, t1.duration_us), (3, 1_000, 8_000));
        assert_eq!(t1.nodes.len(), 2);
        assert!(t1.services.contains("wordcount"));
        assert_eq!(t1.root, "run gateway");
    }
}
