//! The metric families of one scrape, encoded by `prometheus-client`.
//!
//! A node's numbers live in its own atomics and structures; a scrape reads them into
//! [`Family`] values (each a [`Collector`] of constant samples) and registers them, in the
//! order they were read, with a [`Registry`] made for this scrape alone. The crate's
//! Prometheus text encoder (exposition format 0.0.4) writes the text and escapes label
//! values and help.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    CounterValueEncoder, DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeMetric, GaugeValueEncoder,
    NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// The `Content-Type` of what [`Scrape::encode`] writes.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// A sample's labels, written in this order.
type Labels = Vec<(&'static str, String)>;

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|&(k, v)| (k, v.to_owned())).collect()
}

/// A sample's value: counts as integers, times and other fractions as floats.
#[derive(Debug, Clone, Copy)]
pub enum Value {
    Int(u64),
    Signed(i64),
    Float(f64),
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Int(v)
    }
}

impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Int(v.into())
    }
}

impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Value::Int(v as u64)
    }
}

/// 1 for true, 0 for false.
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Int(v.into())
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Signed(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}

impl EncodeCounterValue for Value {
    fn encode(&self, encoder: &mut CounterValueEncoder) -> fmt::Result {
        match self {
            Value::Int(v) => EncodeCounterValue::encode(v, encoder),
            // A counter does not go below zero.
            Value::Signed(v) => EncodeCounterValue::encode(&v.max(&0).unsigned_abs(), encoder),
            Value::Float(v) => EncodeCounterValue::encode(v, encoder),
        }
    }
}

impl EncodeGaugeValue for Value {
    fn encode(&self, encoder: &mut GaugeValueEncoder) -> fmt::Result {
        match self {
            Value::Int(v) => EncodeGaugeValue::encode(v, encoder),
            Value::Signed(v) => EncodeGaugeValue::encode(v, encoder),
            Value::Float(v) => EncodeGaugeValue::encode(v, encoder),
        }
    }
}

/// One histogram's buckets as (upper bound, count at or under it and over the bound
/// before: not cumulative), with its sum and count.
#[derive(Debug)]
struct Histogram {
    buckets: Vec<(f64, u64)>,
    sum: f64,
    count: u64,
}

#[derive(Debug)]
enum Samples {
    /// Counter, gauge or untyped samples.
    Values(Vec<(Labels, Value)>),
    Histograms(Vec<(Labels, Histogram)>),
    /// An info metric's one sample (value 1).
    Info(Labels),
}

/// One metric family: its name as the crate registers it (a counter's without `_total`,
/// an info's without `_info`: the encoder appends them), help, type and samples.
#[derive(Debug)]
pub struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    samples: Samples,
}

impl Family {
    /// Add a counter, gauge or untyped sample.
    pub fn sample(&mut self, pairs: &[(&'static str, &str)], value: impl Into<Value>) -> &mut Self {
        match &mut self.samples {
            Samples::Values(v) => v.push((labels(pairs), value.into())),
            _ => debug_assert!(false, "{} takes no plain samples", self.name),
        }
        self
    }

    /// Add a histogram sample: `counts[i]` falls in the bucket up to `bounds[i]` (the
    /// counts past the bounds, in `+Inf`), `sum` is the observations' total.
    pub fn histogram(&mut self, pairs: &[(&'static str, &str)], bounds: &[f64], counts: &[u64], sum: f64) -> &mut Self {
        let buckets: Vec<(f64, u64)> =
            counts.iter().enumerate().map(|(i, &c)| (bounds.get(i).copied().unwrap_or(f64::INFINITY), c)).collect();
        let count = counts.iter().sum();
        match &mut self.samples {
            Samples::Histograms(h) => h.push((labels(pairs), Histogram { buckets, sum, count })),
            _ => debug_assert!(false, "{} is not a histogram", self.name),
        }
        self
    }
}

impl Collector for Family {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let mut metric = encoder.encode_descriptor(self.name, self.help, None, self.kind)?;
        match &self.samples {
            Samples::Info(labels) => metric.encode_info(labels),
            Samples::Values(samples) => {
                for (labels, value) in samples {
                    let mut sample = metric.encode_family(labels)?;
                    match self.kind {
                        MetricType::Counter => ConstCounter::new(*value).encode(sample)?,
                        MetricType::Gauge => ConstGauge::new(*value).encode(sample)?,
                        // Untyped: the value under the family's own name.
                        _ => sample.encode_gauge(value)?,
                    }
                }
                Ok(())
            }
            Samples::Histograms(samples) => {
                for (labels, h) in samples {
                    metric.encode_family(labels)?.encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None)?;
                }
                Ok(())
            }
        }
    }
}

/// The families of one scrape, in the order they are written.
#[derive(Debug, Default)]
pub struct Scrape {
    families: Vec<Family>,
}

impl Scrape {
    fn family(&mut self, name: &'static str, help: &'static str, kind: MetricType, samples: Samples) -> &mut Family {
        self.families.push(Family { name, help, kind, samples });
        self.families.last_mut().expect("just pushed")
    }

    /// A counter family; `name` is the exported one, ending in `_total`.
    pub fn counter(&mut self, name: &'static str, help: &'static str) -> &mut Family {
        let Some(base) = name.strip_suffix("_total") else { panic!("counter {name} does not end in _total") };
        self.family(base, help, MetricType::Counter, Samples::Values(Vec::new()))
    }

    pub fn gauge(&mut self, name: &'static str, help: &'static str) -> &mut Family {
        self.family(name, help, MetricType::Gauge, Samples::Values(Vec::new()))
    }

    /// An untyped family: for series whose exported name no typed family can give (a
    /// summary's `_sum` and `_count` alone, a counter not ending in `_total`).
    pub fn untyped(&mut self, name: &'static str, help: &'static str) -> &mut Family {
        self.family(name, help, MetricType::Unknown, Samples::Values(Vec::new()))
    }

    /// A histogram family (`_bucket`, `_sum` and `_count` series under `name`).
    pub fn histogram(&mut self, name: &'static str, help: &'static str) -> &mut Family {
        self.family(name, help, MetricType::Histogram, Samples::Histograms(Vec::new()))
    }

    /// An info metric (exported as a gauge of value 1); `name` ends in `_info`.
    pub fn info(&mut self, name: &'static str, help: &'static str, pairs: &[(&'static str, &str)]) {
        let Some(base) = name.strip_suffix("_info") else { panic!("info {name} does not end in _info") };
        self.family(base, help, MetricType::Info, Samples::Info(labels(pairs)));
    }

    /// A registry for this scrape alone, each family a collector of its own.
    pub fn registry(self) -> Registry {
        let mut registry = Registry::default();
        for family in self.families {
            registry.register_collector(Box::new(family));
        }
        registry
    }

    /// The Prometheus text (format 0.0.4, [`CONTENT_TYPE`]) of these families.
    pub fn encode(self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry())
            .expect("encoding into a String does not fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exposition format is pinned: these lines are what tests, benches, dashboards
    /// and the docs read.
    #[test]
    fn families_encode_as_prometheus_text() {
        let mut s = Scrape::default();
        s.info("nanogrid_node_info", "The node's id and mode.", &[("node", "n\"1"), ("mode", "leader")]);
        s.counter("nanogrid_requests_total", "Calls into a service (ingress and invoke) by outcome.")
            .sample(&[("service", "hello"), ("outcome", "ok")], 7u64)
            .sample(&[("service", "hello"), ("outcome", "rejected")], 0u64);
        s.gauge("nanogrid_disk_full", "1 while kv writes are refused.").sample(&[], true);
        s.gauge("nanogrid_uptime_seconds", "Seconds since the node started.").sample(&[], 1.5);
        s.untyped("nanogrid_call_duration_seconds_sum", "Time invoke calls took.")
            .sample(&[("from", "a"), ("to", "b")], 0.25);
        s.histogram("nanogrid_request_latency_seconds", "Time in the guest, admission excluded.").histogram(
            &[("service", "hello")],
            &[0.0001, 0.00025, 1.0, 2.5],
            &[1, 0, 2, 0, 4],
            3.5,
        );
        let text = s.encode();
        let expected = "\
# HELP nanogrid_node_info The node's id and mode.
# TYPE nanogrid_node_info gauge
nanogrid_node_info{node=\"n\\\"1\",mode=\"leader\"} 1
# HELP nanogrid_requests_total Calls into a service (ingress and invoke) by outcome.
# TYPE nanogrid_requests_total counter
nanogrid_requests_total{service=\"hello\",outcome=\"ok\"} 7
nanogrid_requests_total{service=\"hello\",outcome=\"rejected\"} 0
# HELP nanogrid_disk_full 1 while kv writes are refused.
# TYPE nanogrid_disk_full gauge
nanogrid_disk_full 1
# HELP nanogrid_uptime_seconds Seconds since the node started.
# TYPE nanogrid_uptime_seconds gauge
nanogrid_uptime_seconds 1.5
# HELP nanogrid_call_duration_seconds_sum Time invoke calls took.
# TYPE nanogrid_call_duration_seconds_sum untyped
nanogrid_call_duration_seconds_sum{from=\"a\",to=\"b\"} 0.25
# HELP nanogrid_request_latency_seconds Time in the guest, admission excluded.
# TYPE nanogrid_request_latency_seconds histogram
nanogrid_request_latency_seconds_bucket{service=\"hello\",le=\"0.0001\"} 1
nanogrid_request_latency_seconds_bucket{service=\"hello\",le=\"0.00025\"} 1
nanogrid_request_latency_seconds_bucket{service=\"hello\",le=\"1\"} 3
nanogrid_request_latency_seconds_bucket{service=\"hello\",le=\"2.5\"} 3
nanogrid_request_latency_seconds_bucket{service=\"hello\",le=\"+Inf\"} 7
nanogrid_request_latency_seconds_sum{service=\"hello\"} 3.5
nanogrid_request_latency_seconds_count{service=\"hello\"} 7
";
        assert_eq!(text, expected);
    }

    /// Every bound the services' and calls' histograms use keeps the `le` label it had
    /// when the text was written by hand (`{}` of the seconds: no exponent, no `.0`).
    #[test]
    fn latency_bounds_keep_their_le_labels() {
        use crate::services::stats::LATENCY_BOUNDS_US;
        let bounds: Vec<f64> = LATENCY_BOUNDS_US.iter().map(|&b| b as f64 / 1e6).collect();
        let counts = vec![0; bounds.len() + 1];
        let mut s = Scrape::default();
        s.histogram("h", "h").histogram(&[], &bounds, &counts, 0.0);
        let text = s.encode();
        for b in &bounds {
            assert!(text.contains(&format!("h_bucket{{le=\"{b}\"}} 0\n")), "{b} in\n{text}");
        }
    }
}
