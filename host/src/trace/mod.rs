//! Distributed tracing: every request carries a W3C `traceparent` from hop to hop (ingress,
//! the service's run, `invoke` and `call-all`, barrier calls and continuations, forwarding
//! between nodes), and each node records the spans it ran ([`SpanRecord`]) into a bounded
//! ring ([`store::SpanRing`]) and, with `--otlp-endpoint`, exports them over OTLP/HTTP
//! ([`otlp`]).
//!
//! The context travels in the request's own `traceparent` header, which the platform
//! rewrites at each hop (a guest cannot choose its parent), so forwarding and stored
//! barrier requests carry it with nothing else to change. A run's counters (kv calls by
//! consistency, outbound HTTP, instantiation) are gathered by a [`RunTrace`] the imports
//! reach through the call's context.

pub mod context;
pub mod names;
pub mod otlp;
pub mod store;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use context::{SpanContext, SpanId, TraceId};
pub use names::Name;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpanKind {
    /// A request received (ingress).
    Server,
    /// A call made: `invoke`, a barrier's call, a forwarding hop.
    Client,
    /// Work inside a node: a service's run.
    Internal,
}

/// An attribute value, as users and OTLP see it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Attr {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(Cow<'static, str>),
    /// A short text kept inline ([`Attr::text`]): a request's path, say, without an
    /// allocation that would live in the ring for thousands of requests.
    #[serde(skip_deserializing)]
    Short(Short),
}

impl Attr {
    /// `s` as a value: inline when it is short, else copied.
    pub fn text(s: &str) -> Attr {
        Short::new(s).map_or_else(|| Attr::Str(Cow::Owned(s.to_string())), Attr::Short)
    }

    /// The text of a string value (either kind).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Attr::Str(s) => Some(s),
            Attr::Short(s) => Some(s.as_str()),
            _ => None,
        }
    }
}

/// Texts compare by content, whichever way they are kept.
impl PartialEq for Attr {
    fn eq(&self, other: &Attr) -> bool {
        match (self, other) {
            (Attr::Int(a), Attr::Int(b)) => a == b,
            (Attr::Float(a), Attr::Float(b)) => a == b,
            (Attr::Bool(a), Attr::Bool(b)) => a == b,
            _ => self.as_str().is_some() && self.as_str() == other.as_str(),
        }
    }
}

/// Up to [`Short::CAP`] bytes of text, inline (an `Attr` stays 32 bytes).
#[derive(Clone, Copy)]
pub struct Short {
    len: u8,
    bytes: [u8; Short::CAP],
}

impl Short {
    pub const CAP: usize = 30;

    pub fn new(s: &str) -> Option<Short> {
        let mut bytes = [0; Short::CAP];
        bytes.get_mut(..s.len())?.copy_from_slice(s.as_bytes());
        Some(Short { len: s.len() as u8, bytes })
    }

    pub fn as_str(&self) -> &str {
        // Built from a whole `&str` only.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl std::fmt::Debug for Short {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Serialize for Short {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl From<u64> for Attr {
    fn from(v: u64) -> Attr {
        Attr::Int(v.min(i64::MAX as u64) as i64)
    }
}

impl From<&'static str> for Attr {
    fn from(v: &'static str) -> Attr {
        Attr::Str(Cow::Borrowed(v))
    }
}

impl From<String> for Attr {
    fn from(v: String) -> Attr {
        match Short::new(&v) {
            Some(s) => Attr::Short(s),
            None => Attr::Str(Cow::Owned(v)),
        }
    }
}

impl From<bool> for Attr {
    fn from(v: bool) -> Attr {
        Attr::Bool(v)
    }
}

/// A span's attributes in the order they were set. A span has a handful, nearly all
/// with fixed names and values that need no allocation, kept inline: a span sits in the
/// ring for thousands of requests, and every allocation that outlives its request costs
/// a cache miss when it is made and again when it is freed (tracing's cost is per span,
/// on every request).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Attrs(smallvec::SmallVec<[(Cow<'static, str>, Attr); 6]>);

impl Attrs {
    /// Set `key` (replacing an earlier value).
    pub fn insert(&mut self, key: impl Into<Cow<'static, str>>, value: impl Into<Attr>) {
        let key = key.into();
        let value = value.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key, value)),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Attr> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn reserve(&mut self, n: usize) {
        self.0.reserve(n);
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Attr)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v))
    }
}

impl std::ops::Index<&str> for Attrs {
    type Output = Attr;
    fn index(&self, key: &str) -> &Attr {
        self.get(key).unwrap_or_else(|| panic!("no attribute {key:?}"))
    }
}

impl IntoIterator for Attrs {
    type Item = (Cow<'static, str>, Attr);
    type IntoIter = smallvec::IntoIter<[(Cow<'static, str>, Attr); 6]>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl Serialize for Attrs {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k.as_ref(), v)))
    }
}

impl<'de> Deserialize<'de> for Attrs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Attrs, D::Error> {
        let m = BTreeMap::<String, Attr>::deserialize(d)?;
        Ok(Attrs(m.into_iter().map(|(k, v)| (Cow::Owned(k), v)).collect()))
    }
}

/// One finished span, as a node keeps it and `GET /v1/traces/{id}` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SpanRecord {
    #[serde(with = "hex_trace")]
    pub trace_id: TraceId,
    #[serde(with = "hex_span")]
    pub span_id: SpanId,
    #[serde(with = "hex_parent", default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<SpanId>,
    /// Interned, as are the service and node names ([`names`]).
    pub name: Name,
    pub kind: SpanKind,
    /// This node's name.
    pub node: Name,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<Name>,
    pub start_unix_us: u64,
    pub duration_us: u64,
    /// Empty when it went well; else the error code (`trap`, `timeout`, `http-503`, ...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    #[serde(default, skip_serializing_if = "Attrs::is_empty")]
    pub attrs: Attrs,
}

pub fn now_unix_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// A span being timed: its context, parent and start.
#[derive(Clone, Debug)]
pub struct Open {
    pub ctx: SpanContext,
    pub parent: Option<SpanId>,
    pub started: Instant,
    pub start_unix_us: u64,
}

impl Open {
    /// A new span under `parent`'s (a child of the span that carried the request here).
    pub fn child_of(parent: &SpanContext) -> Open {
        Open {
            ctx: parent.child(),
            parent: Some(parent.span_id),
            started: Instant::now(),
            start_unix_us: now_unix_us(),
        }
    }

    /// The first span of a trace.
    pub fn root(ctx: SpanContext) -> Open {
        Open { ctx, parent: None, started: Instant::now(), start_unix_us: now_unix_us() }
    }

    pub fn close(&self, node: &Name, name: Name, kind: SpanKind, service: Option<Name>) -> SpanRecord {
        SpanRecord {
            trace_id: self.ctx.trace_id,
            span_id: self.ctx.span_id,
            parent_id: self.parent,
            name,
            kind,
            node: node.clone(),
            service,
            start_unix_us: self.start_unix_us,
            duration_us: self.started.elapsed().as_micros() as u64,
            error: String::new(),
            attrs: Attrs::default(),
        }
    }
}

/// The attribute names of a run's kv calls of one kind (`one`, `quorum`, ...): count and
/// time. Fixed names need no allocation; another kind gets built ones.
pub fn kv_attr_names(what: &str) -> (Cow<'static, str>, Cow<'static, str>) {
    match what {
        "one" => ("kv.one.count".into(), "kv.one.us".into()),
        "quorum" => ("kv.quorum.count".into(), "kv.quorum.us".into()),
        "all" => ("kv.all.count".into(), "kv.all.us".into()),
        "cas" => ("kv.cas.count".into(), "kv.cas.us".into()),
        "list" => ("kv.list.count".into(), "kv.list.us".into()),
        other => (format!("kv.{other}.count").into(), format!("kv.{other}.us").into()),
    }
}

/// What one run of a service did, gathered while it runs (the imports add to it).
#[derive(Default, Debug)]
pub struct RunStats {
    /// kv calls by consistency (`one`, `quorum`, `all`, `cas`, `list`): count and time.
    pub kv: BTreeMap<&'static str, (u64, u64)>,
    pub outbound: (u64, u64),
    pub instantiate_us: u64,
    /// Calls into a chain's providers (typed composition, linked or a fused chain's timed
    /// composition): name, provider service, start, duration; child spans of the run.
    pub parts: Vec<(Arc<str>, Arc<str>, u64, u64)>,
    /// The guest ran baseline code (tiered compilation: optimized code not swapped in yet).
    pub baseline: bool,
    /// The run was a fused chain's timed composition (its span says so: timing costs).
    pub timed: bool,
}

/// A sampled run: its span context (what its calls are children of) and its counters.
#[derive(Debug)]
pub struct RunTrace {
    pub span: Open,
    pub stats: Mutex<RunStats>,
}

impl RunTrace {
    pub fn kv(&self, what: &'static str, micros: u64) {
        let mut s = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        let e = s.kv.entry(what).or_default();
        e.0 += 1;
        e.1 += micros;
    }

    pub fn outbound(&self, micros: u64) {
        let mut s = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        s.outbound.0 += 1;
        s.outbound.1 += micros;
    }

    pub fn part(&self, name: &Arc<str>, service: &Arc<str>, start_unix_us: u64, micros: u64) {
        let mut s = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        // A guest calling a provider in a loop must not grow the span without bound.
        if s.parts.len() < 256 {
            s.parts.push((name.clone(), service.clone(), start_unix_us, micros));
        }
    }

    pub fn instantiated(&self, micros: u64) {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).instantiate_us += micros;
    }

    pub fn ran_baseline(&self) {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).baseline = true;
    }

    pub fn timed_parts(&self) {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).timed = true;
    }
}

/// What a call carries for tracing: the span its own calls become children of (also when
/// not sampled, so the trace id travels on), and the run being recorded, if sampled.
#[derive(Clone, Default, Debug)]
pub struct CallTrace {
    pub ctx: Option<SpanContext>,
    pub run: Option<Arc<RunTrace>>,
    /// The request's W3C `tracestate` (vendors' entries), passed on unchanged with the
    /// context on every call the run makes.
    pub state: Option<Arc<str>>,
}

impl CallTrace {
    pub fn trace_id(&self) -> Option<TraceId> {
        self.ctx.map(|c| c.trace_id)
    }
}

/// How this node traces: who it is, how much it samples, where spans go.
pub struct Tracer {
    pub node: Name,
    /// The share of new traces recorded (a request that arrives with a `traceparent`
    /// follows its sampled flag), as `f64` bits: `PUT /v1/tracing` changes it while the
    /// node runs.
    sample: AtomicU64,
    pub ring: store::SpanRing,
    export: Option<otlp::Exporter>,
}

impl Tracer {
    pub fn new(node: &str, sample: f64, ring_spans: usize, export: Option<otlp::Exporter>) -> Tracer {
        Tracer {
            node: names::name(node),
            sample: AtomicU64::new(sample.clamp(0.0, 1.0).to_bits()),
            ring: store::SpanRing::new(ring_spans),
            export,
        }
    }

    /// The finished span `open` on this node, named `"{prefix} {subject}"` (`run hello`,
    /// `invoke hello`), of `service`. Names are interned ([`names`]): no allocation, no
    /// lock and no shared counter per span.
    pub fn span(
        &self,
        open: &Open,
        (prefix, subject): (&'static str, &str),
        kind: SpanKind,
        service: Option<&str>,
    ) -> SpanRecord {
        let (name, subject_name) = names::span_name(prefix, subject);
        let service = match service {
            Some(s) if s == subject => Some(subject_name),
            Some(s) => Some(names::name(s)),
            None => None,
        };
        open.close(&self.node, name, kind, service)
    }

    /// The context a request continues: the caller's, or a new trace (sampled at the
    /// configured rate).
    pub fn continue_or_start(&self, parent: Option<SpanContext>) -> SpanContext {
        match parent {
            Some(p) => p,
            None => {
                let share = self.sample();
                let sampled = share >= 1.0 || (share > 0.0 && rand_unit() < share);
                SpanContext { trace_id: TraceId::random(), span_id: SpanId::random(), sampled }
            }
        }
    }

    /// A span under `parent` (the hop that carried the request here), or the first span
    /// of a new trace.
    pub fn open(&self, parent: Option<SpanContext>) -> Open {
        match parent {
            Some(p) => Open::child_of(&p),
            None => Open::root(self.continue_or_start(None)),
        }
    }

    /// The share of new traces recorded.
    pub fn sample(&self) -> f64 {
        f64::from_bits(self.sample.load(Ordering::Relaxed))
    }

    /// Record this share of new traces from now on (0 to 1; `None` when it is not one).
    pub fn set_sample(&self, share: f64) -> Option<f64> {
        (0.0..=1.0).contains(&share).then(|| f64::from_bits(self.sample.swap(share.to_bits(), Ordering::Relaxed)))
    }

    /// Keep a finished span (in the ring, and for export).
    pub fn record(&self, span: SpanRecord) {
        if let Some(e) = &self.export {
            e.send(&span);
        }
        self.ring.push(span);
    }

    pub fn exporter(&self) -> Option<&otlp::Exporter> {
        self.export.as_ref()
    }
}

fn rand_unit() -> f64 {
    (SpanId::random().0 >> 11) as f64 / (1u64 << 53) as f64
}

/// True with probability `share` (0 never, 1 always).
pub fn chance(share: f64) -> bool {
    share >= 1.0 || (share > 0.0 && rand_unit() < share)
}

/// The `traceparent` among a request's headers, if a valid one is there.
pub fn parent_in<'a>(headers: impl IntoIterator<Item = (&'a str, &'a str)>) -> Option<SpanContext> {
    headers
        .into_iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(context::TRACEPARENT))
        .and_then(|(_, v)| SpanContext::parse(v))
}

/// The `traceparent` of an HTTP request, if a valid one is there.
pub fn parent_in_map(headers: &http::HeaderMap) -> Option<SpanContext> {
    headers.get(context::TRACEPARENT).and_then(|v| v.to_str().ok()).and_then(SpanContext::parse)
}

/// The `tracestate` among a request's headers (several are one list, W3C), if it is one a
/// hop may pass on: at most 512 characters (W3C's limit for what must be propagated),
/// printable ASCII, not blank.
pub fn state_in<'a>(headers: impl IntoIterator<Item = (&'a str, &'a str)>) -> Option<Arc<str>> {
    let parts: Vec<&str> =
        headers.into_iter().filter(|(k, _)| k.eq_ignore_ascii_case(context::TRACESTATE)).map(|(_, v)| v).collect();
    valid_state(&parts.join(","))
}

/// [`state_in`] for an HTTP request's headers.
pub fn state_in_map(headers: &http::HeaderMap) -> Option<Arc<str>> {
    let parts: Option<Vec<&str>> = headers.get_all(context::TRACESTATE).iter().map(|v| v.to_str().ok()).collect();
    valid_state(&parts?.join(","))
}

fn valid_state(v: &str) -> Option<Arc<str>> {
    let v = v.trim();
    let ok = !v.is_empty() && v.len() <= 512 && v.bytes().all(|b| (0x20..=0x7e).contains(&b));
    ok.then(|| Arc::from(v))
}

/// Set (or replace) `traceparent` in a guest request's headers.
pub fn set_parent(headers: &mut Vec<(String, String)>, ctx: &SpanContext) {
    headers.retain(|(k, _)| !k.eq_ignore_ascii_case(context::TRACEPARENT));
    headers.push((context::TRACEPARENT.to_string(), ctx.header()));
}

macro_rules! hex_serde {
    ($name:ident, $ty:ty, $parse:path) => {
        mod $name {
            use serde::{Deserialize, Deserializer, Serializer};
            pub fn serialize<S: Serializer>(v: &$ty, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(v)
            }
            pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                let s = String::deserialize(d)?;
                $parse(&s).ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not a trace or span id")))
            }
        }
    };
}
hex_serde!(hex_trace, super::TraceId, super::TraceId::parse);
hex_serde!(hex_span, super::SpanId, super::SpanId::parse);

mod hex_parent {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &Option<super::SpanId>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(id) => s.collect_str(id),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<super::SpanId>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| super::SpanId::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not a span id"))))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_record_round_trips_through_json_with_hex_ids() {
        let ctx = SpanContext { trace_id: TraceId(0xabc), span_id: SpanId(0x12), sampled: true };
        let mut s =
            Open::child_of(&ctx).close(&"n1".into(), "run hello".into(), SpanKind::Internal, Some("hello".into()));
        s.attrs.insert("kv.quorum.count", 3u64);
        s.attrs.insert("result", "ok");
        s.attrs.insert("result", "ok again".to_string());
        assert_eq!(s.attrs.iter().count(), 2, "a name set twice is there once");
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["trace_id"], "00000000000000000000000000000abc");
        assert_eq!(json["parent_id"], "0000000000000012");
        assert_eq!(json["attrs"]["kv.quorum.count"], 3);
        let back: SpanRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back.parent_id, Some(SpanId(0x12)));
        assert_eq!(back.attrs["kv.quorum.count"], Attr::Int(3));
        assert_eq!(back.attrs["result"], Attr::from("ok again"));
        // Short texts are kept inline and read back as strings; long ones are copied.
        let path = Attr::text("/hello/world");
        assert!(matches!(path, Attr::Short(_)) && path.as_str() == Some("/hello/world"));
        assert_eq!(serde_json::to_value(&path).unwrap(), "/hello/world");
        assert_eq!(path, Attr::from("/hello/world"), "texts compare by content");
        let long = "/x".repeat(Short::CAP);
        assert!(matches!(Attr::text(&long), Attr::Str(_)) && Attr::text(&long).as_str() == Some(&*long));
        assert_ne!(Attr::Int(1), Attr::Bool(true));
        assert_eq!(std::mem::size_of::<Attr>(), 32, "an attribute costs no more than before");
        assert_eq!(&*back.node, "n1");
    }

    #[test]
    fn new_traces_are_sampled_at_the_configured_rate_and_parents_decide_for_theirs() {
        let t = Tracer::new("n1", 0.25, 16, None);
        let n = 20_000;
        let sampled = (0..n).filter(|_| t.continue_or_start(None).sampled).count();
        let share = sampled as f64 / n as f64;
        assert!((0.22..0.28).contains(&share), "{share}");
        let parent = SpanContext { trace_id: TraceId(7), span_id: SpanId(9), sampled: false };
        assert_eq!(t.continue_or_start(Some(parent)), parent);
        assert!(!Tracer::new("n1", 0.0, 16, None).continue_or_start(None).sampled);
        assert!(Tracer::new("n1", 1.0, 16, None).continue_or_start(None).sampled);
        // Changed while the node runs.
        let t = Tracer::new("n1", 0.0, 16, None);
        assert_eq!(t.set_sample(1.0), Some(0.0));
        assert!(t.continue_or_start(None).sampled && t.sample() == 1.0);
        assert_eq!((t.set_sample(1.5), t.set_sample(f64::NAN)), (None, None));
        assert_eq!(t.sample(), 1.0);
    }

    #[test]
    fn spans_carry_interned_names() {
        let t = Tracer::new("n1", 1.0, 16, None);
        let open = Open::root(t.continue_or_start(None));
        let a = t.span(&open, ("run", "hello"), SpanKind::Internal, Some("hello"));
        let b = t.span(&open, ("run", "hello"), SpanKind::Internal, Some("hello"));
        assert_eq!((&*a.name, a.service.as_deref(), &*a.node), ("run hello", Some("hello"), "n1"));
        let (Name::Interned(an), Name::Interned(bn)) = (&a.name, &b.name) else { panic!("not interned") };
        assert!(std::ptr::eq(*an, *bn));
        assert!(matches!(a.service, Some(Name::Interned(_))) && matches!(a.node, Name::Interned(_)));
        let c = t.span(&open, ("invoke", "hello"), SpanKind::Client, Some("caller"));
        assert_eq!((&*c.name, c.service.as_deref()), ("invoke hello", Some("caller")));
    }

    #[test]
    fn the_platform_sets_the_parent_a_guest_request_carries() {
        let mut headers = vec![("TraceParent".to_string(), "00-guest-chosen".to_string()), ("a".into(), "b".into())];
        let ctx = SpanContext { trace_id: TraceId(1), span_id: SpanId(2), sampled: true };
        set_parent(&mut headers, &ctx);
        assert_eq!(headers.len(), 2);
        assert_eq!(parent_in(headers.iter().map(|(k, v)| (k.as_str(), v.as_str()))), Some(ctx));
    }
}
