//! OTLP/HTTP export (`--otlp-endpoint URL`): spans batched (up to 512, or every second) and
//! sent as protobuf `ExportTraceServiceRequest`s (the `opentelemetry-proto` messages) to
//! the collector's `/v1/traces`. Export never slows a request: spans go through a bounded
//! queue and are dropped, counted, when it is full or the collector is down.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span, status};
use prost::Message as _;
use tokio::sync::mpsc;

use super::{Attr, SpanKind, SpanRecord};

const QUEUE: usize = 16_384;
const BATCH: usize = 512;
const FLUSH_EVERY: Duration = Duration::from_secs(1);
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Default, Debug)]
pub struct ExportStats {
    pub exported: AtomicU64,
    pub dropped: AtomicU64,
    pub failed_batches: AtomicU64,
}

/// The export queue and the task that drains it (stopped when this is dropped).
pub struct Exporter {
    tx: mpsc::Sender<SpanRecord>,
    pub stats: Arc<ExportStats>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `URL` as given, with `/v1/traces` added when it names only the collector.
pub fn traces_url(endpoint: &str) -> Result<String, String> {
    let e = endpoint.trim_end_matches('/');
    let uri: http::Uri = e.parse().map_err(|err| format!("--otlp-endpoint {endpoint:?} is not a URL: {err}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(format!("--otlp-endpoint {endpoint:?}: give http(s)://host:port (OTLP/HTTP, e.g. port 4318)"));
    }
    Ok(if e.ends_with("/v1/traces") { e.to_string() } else { format!("{e}/v1/traces") })
}

impl Exporter {
    /// Start exporting to `url` (already checked by [`traces_url`]) as node `node`.
    pub fn start(url: String, node: &str) -> Exporter {
        let (tx, rx) = mpsc::channel(QUEUE);
        let stats = Arc::new(ExportStats::default());
        let task = tokio::spawn(run(url, node.to_string(), rx, stats.clone()));
        Exporter { tx, stats, task }
    }

    pub fn send(&self, span: &SpanRecord) {
        if self.tx.try_send(span.clone()).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn run(url: String, node: String, mut rx: mpsc::Receiver<SpanRecord>, stats: Arc<ExportStats>) {
    let client = crate::client::Client::new();
    let log = crate::ratelog::RateLimited::new(Duration::from_secs(30));
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let deadline = tokio::time::sleep(FLUSH_EVERY);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                got = rx.recv() => match got {
                    Some(s) => { batch.push(s); if batch.len() >= BATCH { break; } }
                    None => { flush(&client, &url, &node, &mut batch, &stats, &log).await; return; }
                },
                _ = &mut deadline => break,
            }
        }
        flush(&client, &url, &node, &mut batch, &stats, &log).await;
    }
}

async fn flush(
    client: &crate::client::Client,
    url: &str,
    node: &str,
    batch: &mut Vec<SpanRecord>,
    stats: &ExportStats,
    log: &crate::ratelog::RateLimited,
) {
    if batch.is_empty() {
        return;
    }
    let n = batch.len() as u64;
    let body = request(node, std::mem::take(batch)).encode_to_vec();
    let headers = [("content-type", "application/x-protobuf".to_string())];
    let sent = tokio::time::timeout(SEND_TIMEOUT, client.send(http::Method::POST, url, &headers, body.into())).await;
    match sent {
        Ok(Ok(r)) if r.status.is_success() => {
            stats.exported.fetch_add(n, Ordering::Relaxed);
        }
        other => {
            stats.failed_batches.fetch_add(1, Ordering::Relaxed);
            stats.dropped.fetch_add(n, Ordering::Relaxed);
            let why = match other {
                Ok(Ok(r)) => format!("answered {}", r.status),
                Ok(Err(e)) => format!("{e:#}"),
                Err(_) => format!("no answer within {}s", SEND_TIMEOUT.as_secs()),
            };
            if let Some(before) = log.allow("otlp-export") {
                tracing::warn!(url, spans = n, failed_before = before, "OTLP export failed ({why}); spans dropped");
            }
        }
    }
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue { key: key.to_string(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

/// The OTLP message for a batch of one node's spans.
pub fn request(node: &str, spans: Vec<SpanRecord>) -> ExportTraceServiceRequest {
    let resource = Resource {
        attributes: vec![
            kv("service.name", any_value::Value::StringValue("nanogrid".into())),
            kv("service.instance.id", any_value::Value::StringValue(node.to_string())),
        ],
        ..Default::default()
    };
    let spans = spans.into_iter().map(to_proto).collect();
    let scope = InstrumentationScope {
        name: "nanogrid".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource),
            scope_spans: vec![ScopeSpans { scope: Some(scope), spans, ..Default::default() }],
            ..Default::default()
        }],
    }
}

fn to_proto(s: SpanRecord) -> Span {
    let mut attributes = vec![kv("nanogrid.node", any_value::Value::StringValue(s.node.to_string()))];
    if let Some(svc) = &s.service {
        attributes.push(kv("nanogrid.service", any_value::Value::StringValue(svc.to_string())));
    }
    for (k, v) in s.attrs {
        let v = match v {
            Attr::Int(i) => any_value::Value::IntValue(i),
            Attr::Float(f) => any_value::Value::DoubleValue(f),
            Attr::Bool(b) => any_value::Value::BoolValue(b),
            Attr::Str(t) => any_value::Value::StringValue(t.into_owned()),
            Attr::Short(t) => any_value::Value::StringValue(t.as_str().to_string()),
        };
        attributes.push(kv(&k, v));
    }
    let kind = match s.kind {
        SpanKind::Server => span::SpanKind::Server,
        SpanKind::Client => span::SpanKind::Client,
        SpanKind::Internal => span::SpanKind::Internal,
    };
    let status = if s.error.is_empty() {
        Status { code: status::StatusCode::Ok as i32, ..Default::default() }
    } else {
        Status { code: status::StatusCode::Error as i32, message: s.error.clone() }
    };
    let start = s.start_unix_us.saturating_mul(1000);
    Span {
        trace_id: s.trace_id.0.to_be_bytes().to_vec(),
        span_id: s.span_id.0.to_be_bytes().to_vec(),
        parent_span_id: s.parent_id.map(|p| p.0.to_be_bytes().to_vec()).unwrap_or_default(),
        name: s.name.to_string(),
        kind: kind as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start + s.duration_us.saturating_mul(1000),
        attributes,
        status: Some(status),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Open, SpanContext, SpanId, TraceId};
    use super::*;

    #[test]
    fn endpoints_get_the_traces_path_and_bad_ones_are_named() {
        assert_eq!(traces_url("http://127.0.0.1:4318").unwrap(), "http://127.0.0.1:4318/v1/traces");
        assert_eq!(traces_url("https://c.example/v1/traces/").unwrap(), "https://c.example/v1/traces");
        assert!(traces_url("127.0.0.1:4318").unwrap_err().contains("http(s)://host:port"));
    }

    #[test]
    fn spans_encode_as_otlp_with_ids_kind_status_and_attributes() {
        let ctx = SpanContext { trace_id: TraceId(0x0102), span_id: SpanId(0x0304), sampled: true };
        let mut s =
            Open::child_of(&ctx).close(&"n2".into(), "run hello".into(), SpanKind::Internal, Some("hello".into()));
        s.error = "trap".into();
        s.attrs.insert("queue_wait_us", Attr::Int(12));
        let bytes = request("n2", vec![s.clone()]).encode_to_vec();
        let back = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
        let p = &back.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(p.trace_id, 0x0102u128.to_be_bytes().to_vec());
        assert_eq!(p.parent_span_id, 0x0304u64.to_be_bytes().to_vec());
        assert_eq!(p.span_id, s.span_id.0.to_be_bytes().to_vec());
        assert_eq!(p.kind, span::SpanKind::Internal as i32);
        assert_eq!(p.status.as_ref().unwrap().code, status::StatusCode::Error as i32);
        let attr = p.attributes.iter().find(|a| a.key == "queue_wait_us").unwrap();
        assert_eq!(attr.value.as_ref().unwrap().value, Some(any_value::Value::IntValue(12)));
        assert_eq!(p.end_time_unix_nano - p.start_time_unix_nano, s.duration_us * 1000);
    }
}
