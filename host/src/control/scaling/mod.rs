//! Scaling in both dimensions, on the leader: instance counts of autoscaled services from
//! measured load (the rule is in [`crate::autoscale`]), and the node count through the
//! configured node scaler (see `nodes.rs`). Every decision is committed through
//! Raft with an [`Event`] that says why, so `GET /v1/events` shows it on every node.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

mod nodes;

use super::events::{Event, EventKind};
use super::leader::LeaderOps;
use super::types::Command;
use super::{Mode, network};
use crate::autoscale::{Autoscaler, Load, Report};
use crate::services::DispatchError;
use crate::tasks::Tasks;
use nodes::{NodePlan, NodeScaler};

/// How the leader scales.
#[derive(Debug, Clone)]
pub struct ScalingConfig {
    /// How often the leader samples load and decides (`--autoscale-window-ms`).
    pub window: Duration,
    /// Instances one node is meant to run, all services together (`--node-instances`;
    /// default 8 per core): the wanted node count is the wanted instances over this.
    pub node_instances: u32,
    /// What to run when the wanted node count changes (`--node-scaler`): an executable
    /// or an `https://` webhook. `None`: the leader only reports the count it wants.
    pub node_scaler: Option<String>,
    /// Bounds of the node count the leader asks for (`--min-nodes`, `--max-nodes`).
    pub min_nodes: usize,
    pub max_nodes: usize,
    /// How long the nodes must have been more than needed before the leader asks for
    /// fewer (`--node-idle-s`).
    pub node_idle: Duration,
}

impl Default for ScalingConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
        ScalingConfig {
            window: Duration::from_secs(1),
            node_instances: 8 * cores,
            node_scaler: None,
            min_nodes: 1,
            max_nodes: 16,
            node_idle: Duration::from_secs(300),
        }
    }
}

/// Whether `--node-scaler` names something usable (checked at start-up).
pub fn check_scaler(s: &str) -> Result<(), String> {
    NodeScaler::parse(s).map(|_| ())
}

/// The leader's scaling, an owner of its own: its loop (every `window`, on the leader:
/// sample usage, decide instance counts, then nodes) and the state it keeps between
/// windows (kept on every node, used while it leads). It reaches the cluster through
/// [`LeaderOps`] only: weakly from its loop, and passed in by the cluster's own calls
/// ([`Autoscaling::wake`], the views).
pub struct Autoscaling {
    scaler: Arc<Scaler>,
    tasks: Tasks,
}

/// What the loop and the cluster's calls share.
pub(super) struct Scaler {
    pub(super) config: ScalingConfig,
    /// The cluster, for a node scaler run that outlives a step.
    pub(super) ops: Weak<dyn LeaderOps>,
    auto: Mutex<Autoscaler>,
    pub(super) nodes: Mutex<NodePlan>,
    /// Serialises wake-ups on this node, so a burst of requests to an idle service
    /// commits one.
    wake: tokio::sync::Mutex<()>,
}

impl Autoscaling {
    /// Start the loop over `ops` (held weakly: the loop ends when the cluster is gone; a
    /// cluster still being built is fine, the first window is `window` away).
    pub fn spawn(config: ScalingConfig, ops: Weak<dyn LeaderOps>, stop: watch::Receiver<bool>) -> Self {
        let scaler = Arc::new(Scaler {
            config,
            ops,
            auto: Default::default(),
            nodes: Default::default(),
            wake: Default::default(),
        });
        let tasks = Tasks::new();
        tasks.spawn(scaler.clone().run(stop));
        Autoscaling { scaler, tasks }
    }

    /// Stop the loop and abort a node scaler run in progress (the next leader asks again).
    pub async fn shutdown(&self) {
        self.tasks.shutdown().await;
        *self.scaler.nodes.lock().unwrap_or_else(|e| e.into_inner()) = NodePlan::default();
    }

    pub fn config(&self) -> &ScalingConfig {
        &self.scaler.config
    }

    /// `service`'s load over the last window, as the leader measured it.
    pub fn load_of(&self, service: &str) -> Option<Load> {
        self.scaler.auto.lock().unwrap_or_else(|e| e.into_inner()).loads.get(service).copied()
    }

    /// A request reached `service` while no node has an instance of it: if it is
    /// autoscaled and scaled to zero, give it one (on this node if it may run here) and
    /// wait until a node serves it, at most `wait`.
    pub async fn wake(&self, ops: &dyn LeaderOps, service: &str, wait: Duration) -> Result<(), DispatchError> {
        let no = |reason: String| DispatchError::NoInstance { service: service.to_string(), reason };
        let deadline = tokio::time::Instant::now() + wait;
        let woke = tokio::time::timeout_at(deadline, self.commit_wake(ops, service))
            .await
            .map_err(|_| no("it was scaled to zero and waking it took longer than its queue timeout".into()))?;
        woke?;
        // The node that got the instance serves it: this one (the usual case) or one that
        // gossip shows serving (a node only assigned it may not have started it yet).
        let me = ops.node();
        let mut tick = Duration::from_millis(1);
        loop {
            let mine = ops.committed().state.slots(service, me) > 0;
            let ready = match mine {
                true => ops.registry().get(service).is_some_and(|s| s.gate().limit > 0),
                false => ops
                    .live()
                    .values()
                    .any(|p| p.id != me && p.mode != Mode::Dormant.as_str() && p.services.iter().any(|s| s == service)),
            };
            if ready {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(no("it was scaled to zero and no node took the new instance in time".into()));
            }
            tokio::time::sleep(tick).await;
            tick = (tick * 2).min(Duration::from_millis(50));
        }
    }

    /// Commit a `Wake` for `service` if it has no instances: on this node if it may run it
    /// here, else on a serving node its placement allows.
    async fn commit_wake(&self, ops: &dyn LeaderOps, service: &str) -> Result<(), DispatchError> {
        let no = |reason: String| DispatchError::NoInstance { service: service.to_string(), reason };
        let _one = self.scaler.wake.lock().await;
        let state = ops.committed();
        let Some(spec) = state.state.services.get(service) else {
            return Err(DispatchError::NotFound(service.to_string()));
        };
        if spec.autoscale.is_none() {
            return Err(no("none is assigned to a live node yet".into()));
        }
        if spec.instances > 0 {
            return Ok(());
        }
        let me = ops.node();
        let live = ops.live();
        let members = ops.member_names();
        let may_run = |n: &String| {
            (spec.placement.is_empty() || spec.placement.contains(n))
                && !state.state.draining.contains(n)
                && members.contains(n)
                && (n == me
                    || live
                        .get(n)
                        .is_some_and(|p| p.mode == Mode::Follower.as_str() || p.mode == Mode::Leader.as_str()))
        };
        let node = match may_run(&me.to_string()) {
            true => Some(me.to_string()),
            false => live.keys().find(|n| may_run(n)).cloned(),
        };
        let Some(node) = node else {
            return Err(no("no serving node may run it (placement, or every such node is draining)".into()));
        };
        tracing::info!(%service, %node, "waking a service scaled to zero");
        let at_ms = crate::services::now_ms();
        ops.write(Command::Wake { service: service.to_string(), node, at_ms })
            .await
            .map_err(|e| no(format!("could not give it an instance: {e}")))
    }

    /// Wanted and serving instances per service, wanted and live nodes (`/metrics`).
    pub fn figures(&self, ops: &dyn LeaderOps) -> ScalingFigures {
        let state = ops.committed();
        let live = ops.live();
        let me = ops.node();
        let wanted = state.state.services.iter().map(|(name, spec)| (name.clone(), spec.instances)).collect();
        let serving = state
            .state
            .services
            .keys()
            .map(|name| {
                let row = state.state.assignment.get(name);
                let serving = row.map_or(0, |row| {
                    row.iter()
                        .filter(|(n, _)| {
                            live.get(*n).is_some_and(|p| p.services.iter().any(|s| s == name))
                                || (*n == me && ops.registry().get(name).is_some_and(|s| s.gate().limit > 0))
                        })
                        .map(|(_, c)| c)
                        .sum()
                });
                (name.clone(), serving)
            })
            .collect();
        let nodes_wanted = self.scaler.nodes.lock().unwrap_or_else(|e| e.into_inner()).wanted;
        let nodes_serving = ops.member_names().iter().filter(|n| live.contains_key(*n)).count();
        ScalingFigures { wanted, serving, nodes_wanted, nodes_serving }
    }

    /// What the leader measured in its last window, per autoscaled service (for
    /// `GET /v1/autoscale`); `None` on other nodes.
    pub fn view(&self, ops: &dyn LeaderOps) -> Option<AutoscaleView> {
        if !ops.leading() {
            return None;
        }
        let state = ops.committed();
        let auto = self.scaler.auto.lock().unwrap_or_else(|e| e.into_inner());
        let services = state
            .state
            .services
            .iter()
            .filter_map(|(name, spec)| {
                let a = spec.autoscale.as_ref()?;
                let l = auto.loads.get(name).copied().unwrap_or_default();
                Some(AutoscaledService {
                    service: name.clone(),
                    instances: spec.instances,
                    min: a.min,
                    max: a.max,
                    target_busy: a.target_busy,
                    cooldown_s: a.cooldown_s,
                    busy: l.busy,
                    queued: l.queued,
                    wait_ms: l.wait_ms,
                    admitted_per_s: l.admitted_per_s,
                    refused_per_s: l.refused_per_s,
                    wanted: crate::autoscale::wanted(&l, a.target_busy),
                })
            })
            .collect();
        let plan = self.scaler.nodes.lock().unwrap_or_else(|e| e.into_inner());
        let config = &self.scaler.config;
        Some(AutoscaleView {
            window_ms: config.window.as_millis() as u64,
            services,
            nodes: NodesView {
                wanted: plan.wanted,
                node_instances: config.node_instances,
                draining: state.state.draining.clone(),
            },
        })
    }
}

impl Scaler {
    /// Every `window` on the leader: sample usage, decide instance counts, then nodes.
    async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let scaler = self.config.node_scaler.as_deref().map(NodeScaler::parse);
        let scaler = match scaler.transpose() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "the node scaler cannot be used; the node count will not change");
                None
            }
        };
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(self.config.window) => {}
            }
            let Some(ops) = self.ops.upgrade() else { return };
            if !ops.leading() {
                self.auto.lock().unwrap_or_else(|e| e.into_inner()).reset();
                *self.nodes.lock().unwrap_or_else(|e| e.into_inner()) = NodePlan::default();
                continue;
            }
            let reports = usage_by_node(&*ops).await;
            let now = Instant::now();
            let (loads, first) = {
                let mut auto = self.auto.lock().unwrap_or_else(|e| e.into_inner());
                let first = !auto.sampled();
                (auto.observe(now, reports), first)
            };
            if first {
                continue;
            }
            self.scale_services(&*ops, now, &loads).await;
            if let Err(e) = self.manage_nodes(&*ops, now, scaler.as_ref()).await {
                tracing::warn!(error = %e, "node scaling step failed; retrying next window");
            }
        }
    }

    /// Decide each autoscaled service's count and commit the changes.
    async fn scale_services(&self, ops: &dyn LeaderOps, now: Instant, loads: &BTreeMap<String, Load>) {
        let state = ops.committed().state.clone();
        let mut writes = Vec::new();
        {
            let mut auto = self.auto.lock().unwrap_or_else(|e| e.into_inner());
            auto.retain(|s| state.services.contains_key(s));
            for (name, spec) in &state.services {
                let Some(a) = &spec.autoscale else { continue };
                let load = loads.get(name).copied().unwrap_or_default();
                let partial =
                    state.assignment.get(name).is_some_and(|row| row.keys().any(|n| !auto.measured.contains(n)));
                let Some(d) = auto.step(now, name, a, spec.instances, &load, partial) else { continue };
                let event = Event::new(EventKind::Scale, d.reason)
                    .service(name)
                    .counts(spec.instances, d.to)
                    .input("busy", load.busy)
                    .input("busy_ratio", load.busy / f64::from(spec.instances.max(1)))
                    .input("queued", load.queued)
                    .input("wait_ms", load.wait_ms)
                    .input("admitted_per_s", load.admitted_per_s)
                    .input("refused_per_s", load.refused_per_s)
                    .input("target_busy", a.target_busy);
                writes.push(Command::Scale {
                    service: name.clone(),
                    instances: d.to,
                    from: Some(spec.instances),
                    event,
                });
            }
        }
        for w in writes {
            if let Command::Scale { service, instances, .. } = &w {
                tracing::info!(%service, instances, "autoscaling");
            }
            if let Err(e) = ops.commit(w).await {
                tracing::warn!(error = %e, "could not commit an autoscaling decision; it is made again next window");
                return;
            }
        }
    }
}

/// Each live member's usage totals (those that answered within a second), this node's own
/// included.
async fn usage_by_node(ops: &dyn LeaderOps) -> BTreeMap<String, Report> {
    let wait = Duration::from_secs(1);
    let members = ops.member_names();
    let mut out =
        super::leader::ask_live(ops.peers(), ops.node(), ops.live(), &members, &network::UsageReq, wait).await;
    out.insert(ops.node().to_string(), ops.registry().usage());
    out
}

/// Instances and nodes wanted and serving, as `/metrics` shows them.
#[derive(Debug, Clone, Default)]
pub struct ScalingFigures {
    /// Per service: the instances it should have (the autoscaler's count, or the fixed one).
    pub wanted: Vec<(String, u32)>,
    /// Per service: instances assigned to live nodes that serve it.
    pub serving: Vec<(String, u32)>,
    /// Nodes the leader wants (0 on other nodes).
    pub nodes_wanted: usize,
    /// Members gossip shows live and not removed.
    pub nodes_serving: usize,
}

/// `GET /v1/autoscale` (the leader only): what it measured in its last window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutoscaleView {
    /// The autoscaler's window, in milliseconds.
    pub window_ms: u64,
    pub services: Vec<AutoscaledService>,
    pub nodes: NodesView,
}

/// One autoscaled service: its bounds, its load over the window and the count it wants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutoscaledService {
    pub service: String,
    /// Instances it has now (across the cluster).
    pub instances: u32,
    pub min: u32,
    pub max: u32,
    pub target_busy: f64,
    pub cooldown_s: u32,
    /// Instances running, on average.
    pub busy: f64,
    /// Requests waiting for an instance, on average.
    pub queued: f64,
    /// Mean wait of the requests admitted, in milliseconds.
    pub wait_ms: f64,
    pub admitted_per_s: f64,
    pub refused_per_s: f64,
    /// The count the rule asks for now.
    pub wanted: u32,
}

/// The node plan: nodes the leader wants, instances a node takes, nodes draining.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodesView {
    pub wanted: usize,
    pub node_instances: u32,
    pub draining: Vec<String>,
}
