//! The recent spans a node recorded, in a bounded ring (the oldest go first), and the
//! per-trace summaries `GET /v1/traces` lists. A large ring is split into a shard per
//! core (threads take numbers in turn and share shards by them): a span's push then
//! mostly takes a lock no other core is using (one shared lock was a cache line every
//! request moved between cores). Each shard drops its own oldest spans, so the ring keeps
//! the recent spans of each shard, not strictly the newest `cap` overall, and one
//! request's spans may be dropped at slightly different times. A cluster answers a trace from every node's
//! ring ([`merge_summaries`] adds up what each saw).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

use super::{SpanRecord, TraceId};

pub struct SpanRing {
    cap: usize,
    shards: Box<[Shard]>,
}

/// One core's part of the ring, on cache lines of its own.
#[repr(align(128))]
struct Shard {
    cap: usize,
    spans: Mutex<Slots>,
}

/// A shard's spans: filled up to its cap, then each new span takes the place of the
/// oldest, written over it where it lies (a span is a few hundred bytes: taking the
/// oldest out first, as a queue's `pop_front` does, was a copy of it every request).
struct Slots {
    spans: Vec<SpanRecord>,
    /// The oldest span once the shard is full (the next to be written over).
    next: usize,
}

impl Slots {
    fn iter(&self) -> impl Iterator<Item = &SpanRecord> {
        self.spans.iter()
    }

    fn len(&self) -> usize {
        self.spans.len()
    }
}

impl Shard {
    fn spans(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.spans.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Rings smaller than this many spans per shard stay one shard (their bound is exact).
const MIN_SHARD: usize = 1024;

/// The shard this thread writes to (threads take numbers in turn).
fn this_thread() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static N: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    N.with(|n| *n)
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
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()).min(16);
        SpanRing::with_shards(cap, cores)
    }

    /// A ring of `cap` spans in up to `shards` shards.
    pub fn with_shards(cap: usize, shards: usize) -> SpanRing {
        let cap = cap.max(1);
        let n = shards.clamp(1, (cap / MIN_SHARD).max(1));
        // The first `cap % n` shards hold one more: `cap` in all, exactly.
        let shards = (0..n)
            .map(|i| {
                let each = cap / n + usize::from(i < cap % n);
                let spans = Slots { spans: Vec::with_capacity(each.min(1 << 16)), next: 0 };
                Shard { cap: each, spans: Mutex::new(spans) }
            })
            .collect();
        SpanRing { cap, shards }
    }

    pub fn push(&self, span: SpanRecord) {
        let shard = &self.shards[this_thread() % self.shards.len()];
        let mut slots = shard.spans();
        if slots.len() < shard.cap {
            slots.spans.push(span);
        } else {
            // The oldest is dropped under the lock: what it frees is a few small strings at
            // most, and the lock is this core's.
            let next = slots.next;
            slots.spans[next] = span;
            slots.next = (next + 1) % shard.cap;
        }
    }

    /// The most spans it keeps (`--trace-ring`).
    pub fn capacity(&self) -> usize {
        self.cap
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.spans().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every span of one trace this node still has, in start order.
    pub fn trace(&self, id: TraceId) -> Vec<SpanRecord> {
        let mut out: Vec<SpanRecord> = Vec::new();
        for shard in &self.shards {
            out.extend(shard.spans().iter().filter(|s| s.trace_id == id).cloned());
        }
        out.sort_by_key(|s| s.start_unix_us);
        out
    }

    /// Summaries of the traces this node has spans of, newest first.
    pub fn summaries(&self, q: &TraceQuery) -> Vec<TraceSummary> {
        let mut by_trace: HashMap<TraceId, Vec<SpanRecord>> = HashMap::new();
        for shard in &self.shards {
            for s in shard.spans().iter() {
                by_trace.entry(s.trace_id).or_default().push(s.clone());
            }
        }
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
        let starts = |t: u128| ring.trace(TraceId(t)).iter().map(|s| s.start_unix_us).collect::<Vec<_>>();
        for i in 0..5u64 {
            ring.push(span(1 + (i % 2) as u128, Some(i + 1), "n1", "a", 100 + i, 10));
        }
        assert_eq!(ring.len(), 3, "bounded");
        assert_eq!(starts(1), [102, 104], "oldest dropped");
        // Round the ring more than once: always the newest three.
        for i in 5..11u64 {
            ring.push(span(1 + (i % 2) as u128, Some(i + 1), "n1", "a", 100 + i, 10));
        }
        assert_eq!(ring.len(), 3);
        assert_eq!((starts(1), starts(2)), (vec![108, 110], vec![109]), "the newest, whatever slot they took");
    }

    #[test]
    fn a_sharded_ring_keeps_each_threads_newest_spans_and_finds_them_all() {
        let ring = std::sync::Arc::new(SpanRing::with_shards(4 * MIN_SHARD, 4));
        assert_eq!((ring.shards.len(), ring.capacity()), (4, 4 * MIN_SHARD));
        assert_eq!(SpanRing::with_shards(100, 4).shards.len(), 1, "a small ring is one shard");
        let odd = SpanRing::with_shards(4 * MIN_SHARD + 3, 4);
        assert_eq!(odd.shards.iter().map(|s| s.cap).sum::<usize>(), 4 * MIN_SHARD + 3, "exactly its capacity");
        // Four threads write a shard's worth in all (so nothing is dropped, however
        // they share shards: thread numbers are process-wide); thread t writes trace t + 1.
        let per = MIN_SHARD as u64 / 4;
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let ring = ring.clone();
                std::thread::spawn(move || {
                    for i in 0..per {
                        ring.push(span(u128::from(t) + 1, Some(i + 1), "n1", "a", i, 1));
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(ring.len(), MIN_SHARD);
        for t in 1..=4u128 {
            assert_eq!(ring.trace(TraceId(t)).len() as u64, per, "every span of trace {t}, across the shards");
        }
        let q = TraceQuery { limit: 10, ..Default::default() };
        assert_eq!(ring.summaries(&q).len(), 4);

        // One thread writes to one shard, which keeps its newest spans.
        let ring = SpanRing::with_shards(4 * MIN_SHARD, 4);
        for i in 0..3 * MIN_SHARD as u64 {
            ring.push(span(9, Some(i + 1), "n1", "a", i, 1));
        }
        let kept = ring.trace(TraceId(9));
        assert_eq!(kept.len(), MIN_SHARD);
        assert_eq!(kept.first().map(|s| s.start_unix_us), Some(2 * MIN_SHARD as u64), "the oldest went first");
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
