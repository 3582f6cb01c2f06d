//! Traces and tracing: `GET /v1/traces` ([`TraceList`]), `GET /v1/traces/{id}`
//! ([`TraceView`]) and `GET` / `PUT /v1/tracing` ([`TracingView`]).

use serde::{Deserialize, Serialize};

use crate::trace::SpanRecord;
use crate::trace::store::TraceSummary;

/// `GET /v1/traces`: recent traces, newest first, added up over every live node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceList {
    pub traces: Vec<TraceSummary>,
}

/// `GET /v1/traces/{id}`: every live node's spans of one trace, in start order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TraceView {
    pub trace_id: String,
    pub spans: Vec<SpanRecord>,
}

/// `GET /v1/tracing`: this node's tracing settings and counters; `PUT` answers the same
/// with the share it replaced (`was`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TracingView {
    pub node: String,
    /// The share of new traces this node records (0 to 1).
    pub sample: f64,
    pub ring: RingUse,
    /// The OTLP exporter's counters (`null` without `--otlp-endpoint`).
    pub otlp: Option<OtlpCounts>,
    /// In a `PUT`'s answer: the share before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub was: Option<f64>,
}

/// The ring of recent spans a node keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingUse {
    pub spans: usize,
    pub capacity: usize,
}

/// What the OTLP exporter did since the node started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtlpCounts {
    pub exported: u64,
    pub dropped: u64,
    pub failed_batches: u64,
}
