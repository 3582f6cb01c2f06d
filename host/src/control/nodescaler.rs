//! The node dimension: how many nodes the leader wants, and asking an outside system for
//! them.
//!
//! The wanted count is `ceil(instances wanted by all services / --node-instances)`, at
//! least the voter count and `--min-nodes`, at most `--max-nodes`. When it is above the
//! live members, the leader runs the node scaler with the count (again after a minute if
//! the nodes have not come). When the live members have been more than wanted for
//! `--node-idle-s`, the leader *drains* one node (a learner first, the last by name, so a
//! Kubernetes StatefulSet's highest ordinal goes, never itself): placement stops giving it
//! instances and the grid moves its partition replicas to the others; once it holds
//! neither, it is removed from the cluster and the scaler is run with the smaller count
//! and the node's name, to stop it.
//!
//! A scaler is an executable, run as `scaler want-nodes N` with a JSON request on stdin,
//! or an `https://` URL (plain `http://` only to a loopback address) that gets the JSON as
//! a POST. The JSON: `{"want": N, "have": [names], "remove": [names], "reason": "..."}`.
//! deploy/scalers/ has ones for Kubernetes, Docker Compose and local processes.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::Cluster;
use super::events::{Event, EventKind};
use super::types::Command;

/// How the leader reaches the outside system that adds and removes nodes.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeScaler {
    Exec(std::path::PathBuf),
    Webhook(String),
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
    /// `--node-scaler`: a URL or the path of an executable.
    pub fn parse(s: &str) -> Result<NodeScaler, String> {
        if let Some(rest) = s.strip_prefix("http://") {
            let host = rest.split(['/', ':']).next().unwrap_or("");
            let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
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
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(body).await;
    }
    let out = tokio::time::timeout(SCALER_TIMEOUT, child.wait_with_output())
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
    /// Since when the live members have been more than wanted.
    surplus_since: Option<Instant>,
    /// The scaler run in progress.
    running: Option<tokio::task::JoinHandle<()>>,
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

impl Cluster {
    /// One node-dimension step (see the module docs).
    pub(super) async fn manage_nodes(&self, now: Instant, scaler: Option<&NodeScaler>) -> anyhow::Result<()> {
        let cfg = &self.config.scaling;
        let state = self.sm.current().state.clone();
        let live = self.live();
        let (voters, learners) = self.members();
        let members: Vec<String> = voters
            .iter()
            .chain(&learners)
            .map(|m| m.name.clone())
            .filter(|n| !state.removed.contains(n) && live.contains_key(n))
            .collect();
        let active: Vec<&String> = members.iter().filter(|n| !state.draining.contains(n)).collect();
        let instances: u64 = state.services.values().map(|s| u64::from(s.instances)).sum();
        let wanted = nodes_for(instances, cfg.node_instances, cfg.min_nodes.max(self.config.voters), cfg.max_nodes);
        let reason = format!(
            "{instances} instances wanted at {} per node need {} nodes; {} live",
            cfg.node_instances,
            instances.div_ceil(u64::from(cfg.node_instances.max(1))),
            active.len()
        );
        let mut plan = std::mem::take(&mut *self.scaling.nodes.lock().unwrap_or_else(|e| e.into_inner()));
        plan.wanted = wanted;
        let busy = plan.running.as_ref().is_some_and(|h| !h.is_finished());
        let result = self.node_step(now, scaler, &mut plan, busy, &state, &members, &active, &reason, instances).await;
        *self.scaling.nodes.lock().unwrap_or_else(|e| e.into_inner()) = plan;
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn node_step(
        &self,
        now: Instant,
        scaler: Option<&NodeScaler>,
        plan: &mut NodePlan,
        busy: bool,
        state: &super::ControlState,
        members: &[String],
        active: &[&String],
        reason: &str,
        instances: u64,
    ) -> anyhow::Result<()> {
        let wanted = plan.wanted;
        // A drained node leaves once it holds no instance and no partition replica.
        if let Some(node) = state.draining.iter().find(|n| !state.removed.contains(n)) {
            let holds_instances = state.assignment.values().any(|row| row.get(node).is_some_and(|c| *c > 0));
            let holds_data = state.grid.parts.iter().any(|p| p.primary == *node || p.replicas.contains(node));
            if holds_instances || holds_data {
                return Ok(());
            }
            self.raft.client_write(Command::RemoveNode { name: node.clone() }).await?;
            let have: Vec<String> = members.iter().filter(|n| *n != node).cloned().collect();
            let req = ScaleRequest {
                want: have.len(),
                have,
                remove: vec![node.clone()],
                reason: format!("{node} was drained and removed: {reason}"),
            };
            self.ask(scaler, plan, req, now, instances).await;
            return Ok(());
        }
        if wanted > active.len() {
            plan.surplus_since = None;
            let again = plan.asked.is_none_or(|(n, at)| n != wanted || now.duration_since(at) >= ASK_AGAIN);
            if again && !busy {
                let have = members.to_vec();
                let req = ScaleRequest { want: wanted, have, remove: vec![], reason: reason.to_string() };
                self.ask(scaler, plan, req, now, instances).await;
            }
            return Ok(());
        }
        if wanted >= active.len() {
            plan.surplus_since = None;
            return Ok(());
        }
        let since = *plan.surplus_since.get_or_insert(now);
        if now.duration_since(since) < self.config.scaling.node_idle || busy {
            return Ok(());
        }
        let (_, learners) = self.members();
        let mut candidates: Vec<&String> = active.iter().copied().filter(|n| **n != self.name).collect();
        // Learners first, then the last by (length, name): n10 after n9.
        candidates.sort_by_key(|n| (learners.iter().any(|m| &m.name == *n), n.len(), (*n).clone()));
        let Some(victim) = candidates.last() else { return Ok(()) };
        let event = Event::new(
            EventKind::Drain,
            format!("more nodes than needed for {}s: {reason}", self.config.scaling.node_idle.as_secs()),
        )
        .node(victim)
        .counts(active.len() as u32, wanted as u32)
        .input("instances", instances as f64)
        .input("node_instances", f64::from(self.config.scaling.node_instances));
        tracing::info!(node = %victim, "draining a node the cluster no longer needs");
        self.raft.client_write(Command::Drain { node: (*victim).clone(), event }).await?;
        plan.surplus_since = None;
        Ok(())
    }

    /// Record the request as an event and run the scaler (if any) in the background.
    async fn ask(
        &self,
        scaler: Option<&NodeScaler>,
        plan: &mut NodePlan,
        req: ScaleRequest,
        now: Instant,
        instances: u64,
    ) {
        plan.asked = Some((req.want, now));
        let from = req.have.len() as u32;
        let event = Event::new(EventKind::Nodes, req.reason.clone())
            .counts(from, req.want as u32)
            .input("instances", instances as f64)
            .input("node_instances", f64::from(self.config.scaling.node_instances));
        let event = match &req.remove[..] {
            [one] => event.node(one),
            _ => event,
        };
        tracing::info!(want = req.want, remove = ?req.remove, scaler = scaler.is_some(), "asking for another node count");
        if let Err(e) = self.raft.client_write(Command::Note { event }).await {
            tracing::warn!(error = %e, "could not record the node count decision");
        }
        let Some(scaler) = scaler.cloned() else { return };
        plan.running = Some(tokio::spawn(async move {
            match scaler.run(&req).await {
                Ok(out) => tracing::info!(want = req.want, output = %out, "node scaler done"),
                Err(e) => tracing::error!(want = req.want, error = %e, "node scaler failed; asking again in a minute"),
            }
        }));
    }
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
        assert!(NodeScaler::parse("/no/such/scaler").unwrap_err().contains("/no/such/scaler"));
        assert!(NodeScaler::parse("/").unwrap_err().contains("not a file"));
    }
}
