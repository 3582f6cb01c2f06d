//! The leader's traffic sampler, an owner of its own: once per window it reads every live
//! node's call graph and turns it into demand and hot levels ([`Traffic`]), which the
//! Cluster Manager's placement and experiments read. Off when the co-location rate is 0.
//!
//! [`TrafficSampler::spawn`] starts its loop, which ends with the node's stop signal,
//! [`TrafficSampler::shutdown`], when the source is gone, or when the sampler is dropped.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::sync::watch;

use super::traffic::{Affinity, Demand, Traffic};
use crate::services::calls::EdgeReport;
use crate::tasks::Tasks;

/// What the sampler reads: whether this node leads, and each live node's own call graph.
pub trait TrafficSource: Send + Sync + 'static {
    fn leading(&self) -> bool;
    fn graphs(&self) -> BoxFuture<'_, Vec<(String, Vec<EdgeReport>)>>;
}

#[derive(Debug, Clone, Copy)]
pub struct TrafficConfig {
    /// How often to sample (the rates are measured over this window).
    pub window: Duration,
    /// Calls per second that make a node hot for a service; 0 turns sampling off.
    pub min_rate: f64,
}

/// The sampler and the task running its loop.
pub struct TrafficSampler {
    config: TrafficConfig,
    state: Arc<Mutex<Traffic>>,
    tasks: Tasks,
}

impl TrafficSampler {
    /// Start sampling `source` (held weakly: the sampler's loop ends when its source is
    /// gone; a source still being built is fine, the first sample is one window away).
    pub fn spawn(config: TrafficConfig, source: Weak<dyn TrafficSource>, stop: watch::Receiver<bool>) -> Self {
        let state: Arc<Mutex<Traffic>> = Default::default();
        let tasks = Tasks::new();
        if config.min_rate > 0.0 {
            tasks.spawn(sample_loop(config, source, state.clone(), stop));
        }
        TrafficSampler { config, state, tasks }
    }

    pub fn config(&self) -> TrafficConfig {
        self.config
    }

    /// The hot levels and the demand of the last window (empty until two samples).
    pub fn hot(&self) -> (Affinity, Vec<Demand>) {
        let t = self.state.lock().unwrap_or_else(|e| e.into_inner());
        (t.affinity.clone(), t.demand.clone())
    }

    /// The demand of the last window alone.
    pub fn demand(&self) -> Vec<Demand> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).demand.clone()
    }

    pub async fn shutdown(&self) {
        self.tasks.shutdown().await;
    }
}

async fn sample_loop(
    config: TrafficConfig,
    source: Weak<dyn TrafficSource>,
    state: Arc<Mutex<Traffic>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(config.window) => {}
        }
        let Some(source) = source.upgrade() else { return };
        if !source.leading() {
            state.lock().unwrap_or_else(|e| e.into_inner()).reset();
            continue;
        }
        let reports = source.graphs().await;
        drop(source);
        let mut t = state.lock().unwrap_or_else(|e| e.into_inner());
        let before = t.affinity.clone();
        t.observe(Instant::now(), &reports, config.min_rate);
        if t.affinity != before {
            tracing::info!(hot = ?t.affinity, "call traffic changed which nodes are hot for which services");
        }
    }
}
