//! The leader's half of experiments ([`Experiments`]): start one when acting on call
//! traffic would move an instance, judge each trial once its window has passed, and the
//! views and decisions the admin API offers. Every node's half is
//! [`Cluster::trial_here`].

use std::collections::BTreeMap;
use std::sync::Weak;
use std::time::Duration;

use tokio::sync::watch;

use super::experiment::verdict::{self, Figures};
use super::experiment::{
    self, COOLDOWN, Change, Ending, Experiment, ExperimentConfig, INCONCLUSIVE_AFTER, Reprovision, Stage,
};
use super::leader::LeaderOps;
use crate::autoscale::Load;
use crate::control::Cluster;
use crate::control::network::TrialReq;
use crate::control::placement::place;
use crate::control::traffic::{Affinity, Demand};
use crate::control::types::{Assignment, Command, ControlState};
use crate::services::trials::{Split, TrialSamples};
use crate::services::{AdminError, ServiceSpec, now_ms};
use crate::tasks::Tasks;

impl Cluster {
    /// The experiment trying an instance of `service` on this node, if one is on, and how
    /// it splits this node's calls.
    pub fn trial_here(&self, service: &str) -> Option<(u64, Split)> {
        let stored = self.sm.current();
        let e = stored.state.experiments.active_for(service).filter(|e| e.node == self.name)?;
        let split = match e.change {
            Change::Colocate => Split::Alternate,
            Change::AddInstance { .. } => Split::Slots { old: e.before.get(&e.node).copied().unwrap_or(0) },
        };
        Some((e.id, split))
    }
}

/// The leader's experiments, an owner of its own: its loop (switch count trials' arms,
/// judge each trial once its window has passed; on the leader, whatever the mode, so a
/// leader with re-provisioning off still ends what another started) and the decisions
/// the Cluster Manager's placement and the admin API ask of it. It reaches the cluster
/// through [`LeaderOps`] only: weakly from its loop, passed in by the cluster's calls.
pub struct Experiments {
    config: ExperimentConfig,
    tasks: Tasks,
}

/// What a placement step hands to [`Experiments::reprovision`] besides the state.
pub(super) struct StepInputs<'a> {
    /// Services this node has loaded at their committed version.
    pub loaded: &'a BTreeMap<String, ServiceSpec>,
    /// The nodes placement uses.
    pub serving: &'a [String],
    /// The traffic sampler (its hot levels and demand are read only when re-provisioning
    /// is on).
    pub traffic: &'a super::traffic_sampler::TrafficSampler,
    /// A service's load over the autoscaler's last window.
    pub load_of: &'a (dyn Fn(&str) -> Option<Load> + Sync),
    /// Instances one node is meant to run (`--node-instances`).
    pub node_instances: u32,
}

impl Experiments {
    /// Start the loop over `ops` (held weakly: the loop ends when the cluster is gone).
    pub fn spawn(config: ExperimentConfig, ops: Weak<dyn LeaderOps>, stop: watch::Receiver<bool>) -> Self {
        let tasks = Tasks::new();
        tasks.spawn(judge_loop(config.clone(), ops, stop));
        Experiments { config, tasks }
    }

    pub async fn shutdown(&self) {
        self.tasks.shutdown().await;
    }

    /// What placement starts from (each service on trial at its old arrangement) and the
    /// hot pairs it may act on. `None`: this step started an experiment instead (placement
    /// runs again on the next step, with it committed).
    pub(super) async fn reprovision(
        &self,
        ops: &dyn LeaderOps,
        step: StepInputs<'_>,
        state: &ControlState,
    ) -> anyhow::Result<Option<(Assignment, Affinity)>> {
        let cfg = &self.config;
        let StepInputs { loaded, serving, traffic, .. } = &step;
        let exps = &state.experiments;
        let cooldown = (cfg.window * COOLDOWN).as_millis() as u64;
        let current = experiment::baseline(&state.assignment, exps, now_ms(), cooldown);
        if cfg.mode == Reprovision::Off {
            return Ok(Some((current, Affinity::new())));
        }
        let (hot, demand) = traffic.hot();
        let sorted = experiment::sort(&hot, exps, now_ms(), cooldown);
        let mut affinity = sorted.proven;
        let base = place(loaded, serving, &current, &affinity);
        for (service, nodes) in &sorted.untried {
            for (node, &level) in nodes {
                let mut with = affinity.clone();
                with.entry(service.clone()).or_default().insert(node.clone(), level);
                let before = base.get(service).cloned().unwrap_or_default();
                if place(loaded, serving, &current, &with).get(service) == base.get(service) {
                    // Acting on it moves nothing: the service is there already. If its
                    // calls queue, one more instance is worth a try.
                    affinity = with;
                    let Some(e) = count_proposal(service, node, &before, &step, &demand, state) else {
                        continue;
                    };
                    tracing::info!(%service, %node, hypothesis = %e.hypothesis, "starting a count experiment");
                    ops.write(Command::ExperimentStart { experiment: Box::new(e) }).await?;
                    return Ok(None);
                }
                let elsewhere = before.keys().any(|n| n != node);
                if exps.active_for(service).is_some() || !serving.contains(node) || !elsewhere {
                    continue;
                }
                let e = proposal(service, node, before, &demand, Change::Colocate, String::new());
                tracing::info!(%service, %node, hypothesis = %e.hypothesis, "starting a re-provisioning experiment");
                ops.write(Command::ExperimentStart { experiment: Box::new(e) }).await?;
                return Ok(None);
            }
        }
        Ok(Some((current, affinity)))
    }

    /// A running trial's calls so far per arm (old, new), from its node.
    pub async fn trial_counts(&self, ops: &dyn LeaderOps, e: &Experiment) -> Option<(usize, usize)> {
        let s = trial_samples(ops, e, 0, Duration::from_secs(1)).await?;
        Some(((s.old.answered + s.old.errors) as usize, (s.new.answered + s.new.errors) as usize))
    }

    /// Every experiment the control state holds, newest first.
    pub fn list(&self, ops: &dyn LeaderOps) -> Vec<Experiment> {
        ops.committed().state.experiments.list.values().rev().cloned().collect()
    }

    /// A person's decision on a pending experiment: approve applies its change to all
    /// traffic, reject rolls it back.
    pub async fn decide(&self, ops: &dyn LeaderOps, id: u64, approve: bool) -> Result<Experiment, AdminError> {
        let Some(e) = ops.committed().state.experiments.list.get(&id).cloned() else {
            return Err(AdminError::NotFound(format!("no experiment {id}: see GET /v1/experiments")));
        };
        if e.stage != Stage::Pending {
            let what = if approve { "approved" } else { "rejected" };
            return Err(AdminError::Conflict(format!(
                "experiment {id} is {}, not pending: only a trial that won under --reprovision propose can be {what}",
                e.stage.as_str()
            )));
        }
        let (stage, verdict) = match approve {
            true => (Stage::Kept, "approved: the change now applies to all traffic"),
            false => (Stage::RolledBack, "rejected: the change was rolled back"),
        };
        let end = Ending { id, stage, figures: None, verdict: verdict.into(), at_ms: now_ms() };
        ops.write(Command::ExperimentEnd { end: Box::new(end), decision: true }).await?;
        let now = ops.committed().state.experiments.list.get(&id).cloned();
        match now {
            Some(e) if e.stage == stage => Ok(e),
            Some(e) => Err(AdminError::Conflict(format!("experiment {id} is {} now", e.stage.as_str()))),
            None => Err(AdminError::NotFound(format!("no experiment {id}"))),
        }
    }
}

/// Switch count trials' arms and judge trials while this node leads, until `stop`.
async fn judge_loop(cfg: ExperimentConfig, ops: Weak<dyn LeaderOps>, mut stop: watch::Receiver<bool>) {
    // Often enough to switch count trials' phases on time.
    let every = (experiment::phase_length(cfg.window) / 4).clamp(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let Some(ops) = ops.upgrade() else { return };
        if !ops.leading() {
            continue;
        }
        let stored = ops.committed();
        for e in stored.state.experiments.active() {
            switch_phase(&cfg, &*ops, e).await;
            if let Some(end) = judge(&cfg, &*ops, e, &stored.state).await
                && let Err(err) = ops.write(Command::ExperimentEnd { end: Box::new(end), decision: false }).await
            {
                tracing::debug!(id = e.id, error = %err, "could not record an experiment's end; retrying");
            }
        }
    }
}

/// A count trial whose phase has lasted [`experiment::phase_length`] switches to the
/// other arm (it starts with the old count).
async fn switch_phase(cfg: &ExperimentConfig, ops: &dyn LeaderOps, e: &Experiment) {
    if !matches!(e.change, Change::AddInstance { .. }) {
        return;
    }
    let at_ms = now_ms();
    let since = e.phase_ms.max(e.started_ms);
    if at_ms.saturating_sub(since) < experiment::phase_length(cfg.window).as_millis() as u64 {
        return;
    }
    let cmd = Command::ExperimentSwitch { id: e.id, new: !e.phase_new, at_ms };
    if let Err(err) = ops.write(cmd).await {
        tracing::debug!(id = e.id, error = %err, "could not switch a count trial's arm; retrying");
    }
}

/// The experiment that tries one more instance of `service` on `node`, where it runs
/// already, if its calls queue: it is not autoscaled (the autoscaler owns such counts), no
/// experiment is on for it, and the node has room under its budget.
fn count_proposal(
    service: &str,
    node: &str,
    before: &BTreeMap<String, u32>,
    step: &StepInputs<'_>,
    demand: &[Demand],
    state: &ControlState,
) -> Option<Experiment> {
    let spec = step.loaded.get(service).filter(|s| s.autoscale.is_none())?;
    let here = before.get(node).copied().unwrap_or(0);
    let room = here >= 1 && here < step.node_instances;
    if !room || !step.serving.iter().any(|n| n == node) || state.experiments.active_for(service).is_some() {
        return None;
    }
    let load = (step.load_of)(service)?;
    if load.queued < QUEUED_MIN {
        return None;
    }
    let mut e = proposal(
        service,
        node,
        before.clone(),
        demand,
        Change::AddInstance { from: spec.instances },
        format!("{:.1} of its requests wait for an instance on average ({:.1} ms each)", load.queued, load.wait_ms),
    );
    e.inputs.insert("queued".into(), load.queued);
    e.inputs.insert("wait_ms".into(), load.wait_ms);
    Some(e)
}

/// How `e` ends now, if it does.
async fn judge(cfg: &ExperimentConfig, ops: &dyn LeaderOps, e: &Experiment, state: &ControlState) -> Option<Ending> {
    let at_ms = now_ms();
    let abort = |why: &str| Some(Ending { id: e.id, stage: Stage::Aborted, figures: None, verdict: why.into(), at_ms });
    if !state.services.contains_key(&e.service) {
        return abort("the service was deleted");
    }
    if !ops.live().contains_key(&e.node) || state.removed.contains(&e.node) {
        return abort("the node it tried an instance on left");
    }
    if cfg.mode == Reprovision::Off {
        return abort("re-provisioning is off on the leader (--reprovision off)");
    }
    let count = state.services.get(&e.service).map_or(0, |s| s.instances);
    if let Change::AddInstance { from } = e.change
        && count != from
    {
        return abort(&format!("the service's count changed during the trial ({from} → {count})"));
    }
    let age = Duration::from_millis(at_ms.saturating_sub(e.started_ms));
    if e.stage != Stage::Trial || age < cfg.window {
        return None;
    }
    let Some(samples) = trial_samples(ops, e, verdict::MAX_SAMPLES, Duration::from_secs(5)).await else {
        // The trial's node does not answer: give up once a verdict is overdue.
        return (age >= cfg.window * INCONCLUSIVE_AFTER)
            .then(|| abort("the trial's samples could not be fetched from its node"))
            .flatten();
    };
    // Failed calls are samples too: the verdict counts them as slower than any answer.
    let calls = |a: &verdict::ArmSamples| (a.answered + a.errors) as usize;
    let (n_old, n_new) = (calls(&samples.old), calls(&samples.new));
    let enough = n_old >= cfg.min_samples && n_new >= cfg.min_samples;
    if !enough && age < cfg.window * INCONCLUSIVE_AFTER {
        return None;
    }
    let figures = if n_old > 0 && n_new > 0 {
        let labels = match e.change {
            Change::Colocate => {
                (format!("instances elsewhere ({})", show_row(&e.before)), format!("an instance on {}", e.node))
            }
            Change::AddInstance { from } => (
                format!("{from} instances ({})", show_row(&e.before)),
                format!("{} instances (one more on {})", from + 1, e.node),
            ),
        };
        let (min_gain, id) = (cfg.min_gain, e.id);
        let old_new = (samples.old, samples.new);
        let judged = tokio::task::spawn_blocking(move || verdict::judge(&old_new.0, &old_new.1, labels, min_gain, id));
        Some(judged.await.ok()?)
    } else {
        None
    };
    let won = enough && figures.as_ref().is_some_and(|f| f.won);
    let stage = match (won, cfg.mode) {
        (true, Reprovision::Propose) => Stage::Pending,
        (true, _) => Stage::Kept,
        (false, _) => Stage::RolledBack,
    };
    let verdict = describe(e, figures.as_ref(), enough, (n_old, n_new), cfg.min_samples);
    Some(Ending { id: e.id, stage, figures, verdict, at_ms })
}

/// The trial node's samples of `e` (this node's own when it is that node).
async fn trial_samples(ops: &dyn LeaderOps, e: &Experiment, newest: usize, wait: Duration) -> Option<TrialSamples> {
    if e.node == ops.node() {
        return Some(ops.registry().trials.samples(e.id, newest));
    }
    let peer = ops.live().get(&e.node)?.peer.clone();
    match ops.peers().call(&e.node, &peer, &TrialReq { id: e.id, newest }, wait).await {
        Ok(s) => Some(s),
        Err(err) => {
            tracing::debug!(id = e.id, node = %e.node, error = %err, "could not fetch an experiment's samples");
            None
        }
    }
}

/// A service's calls queue enough for one more instance to be worth a try: this many
/// requests waiting on average over the last window, all nodes together.
const QUEUED_MIN: f64 = 0.2;

/// The experiment that would test `change` for `service` on `node` (`queueing`: why
/// its calls wait, for a count).
fn proposal(
    service: &str,
    node: &str,
    before: BTreeMap<String, u32>,
    demand: &[Demand],
    change: Change,
    queueing: String,
) -> Experiment {
    let d = demand.iter().find(|d| d.service == service && d.node == node);
    let mut inputs = BTreeMap::new();
    let why = match d {
        Some(d) => {
            inputs.insert("calls_per_s".to_string(), d.calls_per_s);
            inputs.insert("remote_per_s".to_string(), d.remote_per_s);
            inputs.insert("wait_share".to_string(), d.wait_share);
            inputs.insert("level".to_string(), f64::from(d.level));
            if d.wait_share >= crate::control::traffic::WAIT_SHARE {
                format!("it caused {:.0} % of the barrier wait there", d.wait_share * 100.0)
            } else {
                format!("{} calls/s come from there, {} of them crossing nodes", d.calls_per_s, d.remote_per_s)
            }
        }
        None => "it is hot there".to_string(),
    };
    let hypothesis = match change {
        Change::Colocate => format!(
            "calls from {node} to {service} get faster with an instance of {service} on {node} (now on {}): {why}",
            show_row(&before)
        ),
        Change::AddInstance { from } => format!(
            "calls from {node} to {service} get faster with {} instances of {service} instead of {from} (one more on \
             {node}; now on {}): {queueing}, and {why}",
            from + 1,
            show_row(&before)
        ),
    };
    Experiment {
        id: 0,
        service: service.into(),
        node: node.into(),
        hypothesis,
        before,
        stage: Stage::Trial,
        started_ms: now_ms(),
        ended_ms: None,
        inputs,
        figures: None,
        verdict: String::new(),
        change,
        phase_new: false,
        phase_ms: 0,
    }
}

/// The verdict in a sentence.
fn describe(e: &Experiment, f: Option<&Figures>, enough: bool, (n_old, n_new): (usize, usize), min: usize) -> String {
    let Some(f) = f.filter(|_| enough) else {
        return format!(
            "inconclusive: {n_old} calls on the old arrangement and {n_new} on the new, fewer than the {min} each a \
             verdict needs; rolled back"
        );
    };
    let pct = |x: f64| x * 100.0;
    let ms = |x: Option<f64>| x.map_or_else(|| "failed".to_string(), |ms| format!("{ms} ms"));
    let figures = format!(
        "p50 {} → {} (gain {:.1} %, 95 % interval {:.1} … {:.1} %), p99 {} → {} (gain {:.1} %, {:.1} … {:.1} %)",
        ms(f.old.p50_ms),
        ms(f.new.p50_ms),
        pct(f.p50_gain.estimate),
        pct(f.p50_gain.lo),
        pct(f.p50_gain.hi),
        ms(f.old.p99_ms),
        ms(f.new.p99_ms),
        pct(f.p99_gain.estimate),
        pct(f.p99_gain.lo),
        pct(f.p99_gain.hi),
    );
    let outcome = if f.won { "better" } else { "not clearly better" };
    format!("calls from {} to {}: {figures}; {outcome}", e.node, e.service)
}

fn show_row(row: &BTreeMap<String, u32>) -> String {
    if row.is_empty() {
        return "no node".into();
    }
    row.iter().map(|(n, c)| format!("{n}×{c}")).collect::<Vec<_>>().join(", ")
}
