//! The node dimension: how many nodes the leader wants, and asking an outside system for
//! them.
//!
//! The wanted count is `ceil(instances wanted by all services / --node-instances)`, at
//! least the voter count and `--min-nodes`, at most `--max-nodes`. When it is above the
//! serving members, the leader runs the node scaler with the count (again after a minute
//! if the nodes have not come). When the serving members have been more than wanted for
//! `--node-idle-s` and every member is up, the leader *drains* the last node by name (so a
//! Kubernetes StatefulSet's highest ordinal goes; never itself): placement stops giving it
//! instances and the grid moves its partition replicas to the others. Load coming back
//! undrains it. Once it holds no instance and no replica and runs no request, it is
//! removed from the cluster and kept in the `stopping` list until the scaler, run with
//! the smaller count and the node's name, succeeds (asked again every minute).
//!
//! A scaler is an executable, run as `scaler want-nodes N` with a JSON request on stdin,
//! or an `https://` URL (plain `http://` only to a loopback address) that gets the JSON as
//! a POST. The JSON: `{"want": N, "have": [names], "remove": [names], "reason": "..."}`.
//! deploy/scalers/ has ones for Kubernetes, Docker Compose and local processes.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::Scaler;
use crate::control::events::{Event, EventKind};
use crate::control::leader::LeaderOps;
use crate::control::types::Command;

/// How the leader reaches the outside system that adds and removes nodes.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeScaler {
    Exec(std::path::PathBuf),
    Webhook(String),
    /// Built in: patch a StatefulSet's replicas through the API server.
    Kubernetes(crate::control::k8s_scaler::KubeTarget),
}

/// What a scaler is told.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ScaleRequest {
    pub want: usize,
    pub have: Vec<String>,
    pub remove: Vec<String>,
    pub reason: String,
}

/// How long a scaler may run, and how long before the same count is asked for again.
const SCALER_TIMEOUT: Duration = Duration::from_secs(120);
const ASK_AGAIN: Duration = Duration::from_secs(60);

impl NodeScaler {
    /// `--node-scaler`: a URL, `kubernetes:statefulset/NAME` or the path of an executable.
    pub fn parse(s: &str) -> Result<NodeScaler, String> {
        if let Some(k) = crate::control::k8s_scaler::KubeTarget::parse(s) {
            return k.map(NodeScaler::Kubernetes);
        }
        if s.starts_with("http://") {
            let uri = s.parse::<http::Uri>().map_err(|e| format!("--node-scaler {s:?} is not a URL: {e}"))?;
            let host = uri.host().unwrap_or("").trim_start_matches('[').trim_end_matches(']');
            let userinfo = uri.authority().is_some_and(|a| a.as_str().contains('@'));
            let loopback =
                !userinfo && (host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()));
            return match loopback {
                true => Ok(NodeScaler::Webhook(s.to_string())),
                false => Err(format!("--node-scaler {s:?}: a webhook must be https:// (http:// only to loopback)")),
            };
        }
        if s.starts_with("https://") {
            return Ok(NodeScaler::Webhook(s.to_string()));
        }
        let path = std::path::PathBuf::from(s);
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(NodeScaler::Exec(path)),
            Ok(_) => Err(format!("--node-scaler {s:?} is not a file")),
            Err(e) => Err(format!("--node-scaler {s:?}: {e} (give an executable or an https:// URL)")),
        }
    }

    /// Run the scaler once; `Ok` with what it printed, `Err` with why it failed.
    pub async fn run(&self, req: &ScaleRequest) -> Result<String, String> {
        let body = serde_json::to_vec(req).map_err(|e| e.to_string())?;
        match self {
            NodeScaler::Exec(path) => run_exec(path, req.want, &body).await,
            NodeScaler::Kubernetes(target) => {
                crate::control::k8s_scaler::KubeApi::in_cluster()?.scale(target, req.want, SCALER_TIMEOUT).await
            }
            NodeScaler::Webhook(url) => {
                let client = crate::client::Client::new();
                let headers = [("content-type", "application/json".to_string())];
                let send = client.send(http::Method::POST, url, &headers, bytes::Bytes::from(body));
                let reply = tokio::time::timeout(SCALER_TIMEOUT, send)
                    .await
                    .map_err(|_| format!("{url} did not answer within {}s", SCALER_TIMEOUT.as_secs()))?
                    .map_err(|e| format!("{e:#}"))?;
                let text = String::from_utf8_lossy(&reply.body).chars().take(500).collect::<String>();
                match reply.status.is_success() {
                    true => Ok(text),
                    false => Err(format!("{url} answered {}: {text}", reply.status)),
                }
            }
        }
    }
}

async fn run_exec(path: &std::path::Path, want: usize, body: &[u8]) -> Result<String, String> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(path)
        .arg("want-nodes")
        .arg(want.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
    let stdin = child.stdin.take();
    let run = async move {
        if let Some(mut stdin) = stdin {
            // A scaler that exits without reading the request closes the pipe: its exit
            // status, not this write, says how it went.
            if let Err(e) = stdin.write_all(body).await {
                tracing::debug!(error = %e, "the node scaler did not read its request");
            }
        }
        child.wait_with_output().await
    };
    let out = tokio::time::timeout(SCALER_TIMEOUT, run)
        .await
        .map_err(|_| format!("{} ran longer than {}s and was killed", path.display(), SCALER_TIMEOUT.as_secs()))?
        .map_err(|e| e.to_string())?;
    let tail = |b: &[u8]| {
        let s = String::from_utf8_lossy(b);
        s.chars().rev().take(500).collect::<Vec<_>>().into_iter().rev().collect::<String>().trim().to_string()
    };
    match out.status.success() {
        true => Ok(tail(&out.stdout)),
        false => Err(format!("{} exited with {}: {}", path.display(), out.status, tail(&out.stderr))),
    }
}

/// The leader's node plan between windows.
#[derive(Default)]
pub struct NodePlan {
    /// The count wanted at the last window (0 before the first).
    pub wanted: usize,
    /// The last count asked of the scaler, and when.
    asked: Option<(usize, Instant)>,
    /// When the scaler was last asked to stop removed nodes.
    stop_asked: Option<Instant>,
    /// Since when the live members have been more than wanted.
    surplus_since: Option<Instant>,
    /// The scaler run in progress.
    running: Option<tokio::task::JoinHandle<()>>,
}

impl NodePlan {
    /// Whether to ask for `wanted` nodes now: a new count, or the same a minute later.
    fn ask_due(&self, wanted: usize, now: Instant) -> bool {
        self.asked.is_none_or(|(n, at)| n != wanted || now.duration_since(at) >= ASK_AGAIN)
    }

    /// Whether to ask the scaler to stop the removed nodes now (again after a minute).
    fn stop_due(&self, now: Instant) -> bool {
        self.stop_asked.is_none_or(|at| now.duration_since(at) >= ASK_AGAIN)
    }
}

impl Drop for NodePlan {
    fn drop(&mut self) {
        if let Some(h) = self.running.take() {
            h.abort();
        }
    }
}

/// The node count `instances` need, within the bounds.
pub fn nodes_for(instances: u64, per_node: u32, min: usize, max: usize) -> usize {
    let need = instances.div_ceil(u64::from(per_node.max(1))) as usize;
    need.max(min).min(max.max(min))
}

impl Scaler {
    /// One node-dimension step (see the module docs).
    pub(super) async fn manage_nodes(
        &self,
        ops: &dyn LeaderOps,
        now: Instant,
        scaler: Option<&NodeScaler>,
    ) -> anyhow::Result<()> {
        let cfg = &self.config;
        let state = ops.committed().state.clone();
        let live = ops.live();
        let (voters, learners) = ops.members();
        // Every member not removed, live or not (a restarting pod still counts).
        let members: Vec<String> =
            voters.iter().chain(&learners).map(|m| m.name.clone()).filter(|n| !state.removed.contains(n)).collect();
        let active: Vec<String> =
            members.iter().filter(|n| live.contains_key(*n) && !state.draining.contains(n)).cloned().collect();
        let instances: u64 = state.services.values().map(|s| u64::from(s.instances)).sum();
        let wanted = nodes_for(instances, cfg.node_instances, cfg.min_nodes.max(ops.voters()), cfg.max_nodes);
        let reason = format!(
            "{instances} instances wanted at {} per node need {} nodes; {} serving",
            cfg.node_instances,
            instances.div_ceil(u64::from(cfg.node_instances.max(1))),
            active.len()
        );
        let step = NodeStep { now, scaler, state: &state, members: &members, active: &active, reason, instances };
        {
            let mut plan = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
            plan.wanted = wanted;
        }
        self.node_step(ops, step, wanted, &live).await
    }

    async fn node_step(
        &self,
        ops: &dyn LeaderOps,
        s: NodeStep<'_>,
        wanted: usize,
        live: &std::collections::BTreeMap<String, crate::control::PeerInfo>,
    ) -> anyhow::Result<()> {
        let busy = {
            let plan = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
            plan.running.as_ref().is_some_and(|h| !h.is_finished())
        };
        // Removed nodes the scaler has not confirmed stopping: ask (again) until it does.
        if !s.state.stopping.is_empty() {
            let again = self.nodes.lock().unwrap_or_else(|e| e.into_inner()).stop_due(s.now);
            if again && !busy {
                let req = ScaleRequest {
                    want: s.members.len(),
                    have: s.members.to_vec(),
                    remove: s.state.stopping.clone(),
                    reason: format!("{} drained and removed: {}", s.state.stopping.join(", "), s.reason),
                };
                self.ask(ops, s.scaler, req, s.now, s.instances).await;
            }
            return Ok(());
        }
        let draining = s.state.draining.iter().find(|n| !s.state.removed.contains(n));
        if wanted > s.active.len() {
            self.nodes.lock().unwrap_or_else(|e| e.into_inner()).surplus_since = None;
            if let Some(node) = draining {
                // Load came back during a drain: keep the node.
                let event = Event::new(EventKind::Undrain, format!("needed again: {}", s.reason)).node(node);
                ops.commit(Command::Undrain { node: node.clone(), event }).await?;
                return Ok(());
            }
            let again = self.nodes.lock().unwrap_or_else(|e| e.into_inner()).ask_due(wanted, s.now);
            if again && !busy {
                let req =
                    ScaleRequest { want: wanted, have: s.members.to_vec(), remove: vec![], reason: s.reason.clone() };
                self.ask(ops, s.scaler, req, s.now, s.instances).await;
            }
            return Ok(());
        }
        // A drained node leaves once it holds no instance, no partition replica and runs
        // no request.
        if let Some(node) = draining {
            let holds_instances = s.state.assignment.values().any(|row| row.get(node).is_some_and(|c| *c > 0));
            let holds_data = s.state.grid.parts.iter().any(|p| p.primary == *node || p.replicas.contains(node));
            let running = live.get(node).is_some_and(|p| p.load > 0);
            if !(holds_instances || holds_data || running) {
                tracing::info!(%node, "drained; removing it from the cluster");
                ops.commit(Command::RemoveNode { name: node.clone(), stop: true, at_ms: crate::services::now_ms() })
                    .await?;
            }
            return Ok(());
        }
        if wanted >= s.active.len() {
            self.nodes.lock().unwrap_or_else(|e| e.into_inner()).surplus_since = None;
            return Ok(());
        }
        self.drain_surplus(ops, &s, wanted, live, busy).await
    }

    /// More nodes are active than `wanted`: once that has lasted `node_idle` with every
    /// member up and no scaler call running, drain the last node by name.
    async fn drain_surplus(
        &self,
        ops: &dyn LeaderOps,
        s: &NodeStep<'_>,
        wanted: usize,
        live: &std::collections::BTreeMap<String, crate::control::PeerInfo>,
        busy: bool,
    ) -> anyhow::Result<()> {
        let since = *self.nodes.lock().unwrap_or_else(|e| e.into_inner()).surplus_since.get_or_insert(s.now);
        // Only with every member up: a drain waits for the partitions' other replicas.
        let all_up = s.members.iter().all(|n| live.contains_key(n));
        if s.now.duration_since(since) < self.config.node_idle || busy || !all_up {
            return Ok(());
        }
        // The last by (length, name), so n10 goes before n9 and a StatefulSet's highest
        // ordinal is the one drained; never this node (it leads the drain).
        let mut names: Vec<&String> = s.active.iter().collect();
        names.sort_by_key(|n| (n.len(), (*n).clone()));
        let Some(victim) = names.last().filter(|v| ***v != ops.node()) else {
            tracing::info!("the node to drain next is the leader itself; waiting for another leader");
            return Ok(());
        };
        let idle = self.config.node_idle.as_secs();
        let event = Event::new(EventKind::Drain, format!("more nodes than needed for {idle}s: {}", s.reason))
            .node(victim)
            .counts(s.active.len() as u32, wanted as u32)
            .input("instances", s.instances as f64)
            .input("node_instances", f64::from(self.config.node_instances));
        tracing::info!(node = %victim, "draining a node the cluster no longer needs");
        ops.commit(Command::Drain { node: (*victim).clone(), event }).await?;
        self.nodes.lock().unwrap_or_else(|e| e.into_inner()).surplus_since = None;
        Ok(())
    }

    /// Record the request as an event and run the scaler (if any) in the background; when
    /// it succeeds for removed nodes, they are marked stopped.
    async fn ask(
        &self,
        ops: &dyn LeaderOps,
        scaler: Option<&NodeScaler>,
        req: ScaleRequest,
        now: Instant,
        instances: u64,
    ) {
        let from = req.have.len() as u32;
        let event = Event::new(EventKind::Nodes, req.reason.clone())
            .counts(from, req.want as u32)
            .input("instances", instances as f64)
            .input("node_instances", f64::from(self.config.node_instances));
        let event = match &req.remove[..] {
            [one] => event.node(one),
            _ => event,
        };
        tracing::info!(want = req.want, remove = ?req.remove, scaler = scaler.is_some(), "asking for another node count");
        if let Err(e) = ops.commit(Command::Note { event }).await {
            tracing::warn!(error = %e, "could not record the node count decision");
        }
        let mut plan = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        match req.remove.is_empty() {
            true => plan.asked = Some((req.want, now)),
            false => plan.stop_asked = Some(now),
        }
        let Some(scaler) = scaler.cloned() else { return };
        let cluster = self.ops.clone();
        plan.running = Some(tokio::spawn(async move {
            match scaler.run(&req).await {
                Ok(out) => {
                    tracing::info!(want = req.want, output = %out, "node scaler done");
                    let Some(ops) = cluster.upgrade() else { return };
                    for node in req.remove {
                        if let Err(e) = ops.commit(Command::Stopped { node }).await {
                            tracing::warn!(error = %e, "could not record a stopped node; the scaler is asked again");
                        }
                    }
                }
                Err(e) => tracing::error!(want = req.want, error = %e, "node scaler failed; asking again in a minute"),
            }
        }));
    }
}

/// What one node-dimension step works from.
struct NodeStep<'a> {
    now: Instant,
    scaler: Option<&'a NodeScaler>,
    state: &'a crate::control::ControlState,
    /// Members not removed (live or not), and those of them serving and not draining.
    members: &'a [String],
    active: &'a [String],
    reason: String,
    instances: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_count_follows_instances_within_bounds() {
        assert_eq!(nodes_for(0, 8, 3, 16), 3);
        assert_eq!(nodes_for(25, 8, 3, 16), 4);
        assert_eq!(nodes_for(1000, 8, 3, 16), 16);
        assert_eq!(nodes_for(5, 0, 1, 4), 4, "a zero budget counts as one per node");
    }

    #[test]
    fn scalers_parse_or_say_why_not() {
        assert_eq!(
            NodeScaler::parse("https://x.example/scale"),
            Ok(NodeScaler::Webhook("https://x.example/scale".into()))
        );
        assert!(NodeScaler::parse("http://127.0.0.1:9/s").is_ok());
        assert!(NodeScaler::parse("http://example.com/s").unwrap_err().contains("https://"));
        assert!(NodeScaler::parse("http://localhost@evil.example/s").is_err(), "userinfo is not the host");
        assert!(NodeScaler::parse("http://[::1]:9/s").is_ok());
        assert!(NodeScaler::parse("/no/such/scaler").unwrap_err().contains("/no/such/scaler"));
        assert!(NodeScaler::parse("/").unwrap_err().contains("not a file"));
    }
}
