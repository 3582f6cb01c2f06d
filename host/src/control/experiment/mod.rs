//! Re-provisioning as an experiment: a change the leader wants to make because of call
//! traffic (an odd instance moved next to the node whose services call it most, or whose
//! barriers wait on it; or one more instance of a callee that is already there but
//! queues) is first tried beside the old arrangement, and kept only if the calls it was
//! meant to speed up got faster.
//!
//! A *co-location* trial ([`Change::Colocate`]) keeps the service's old arrangement (arm
//! `old`) and adds one instance on the hot node (arm `new`). That node's calls to the
//! service alternate between the arms: odd calls are sent to the other nodes' instances as
//! before, even calls run on the new local one, and each call's duration is kept per arm
//! ([`crate::services::trials`]).
//!
//! A *count* trial ([`Change::AddInstance`]) cannot split calls between two arrangements
//! (the instances are one pool), so it alternates in time: the leader switches the extra
//! instance on the hot node on and off every [`phase_length`], and that node records each
//! call to the service for the arm its local instance count showed from the call's start
//! to its end (a call that saw the switch counts for neither). Kept, the service's count
//! goes up by one. After
//! the window the leader fetches both arms' samples and applies [`verdict::judge`]: kept
//! (placement then moves the odd instance to the hot node and the surplus goes), rolled
//! back (the trial instance goes, and the pair is not tried again for a while), or, with
//! `--reprovision propose`, *pending*: the trial goes on until `nanogrid approve ID` (or
//! `reject`). Experiments live in the replicated control state, so any node shows them
//! and a new leader carries on where the old one stopped.

pub mod verdict;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::assignment::Assignment;
use super::traffic::Affinity;
pub use verdict::Figures;

/// Experiments kept after they end (older ones are dropped).
pub const KEEP_ENDED: usize = 64;

/// What the leader does with the changes call traffic suggests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Reprovision {
    /// Try each change as an experiment; keep the ones that win.
    #[default]
    Auto,
    /// As `auto`, but a winning change waits for `nanogrid approve ID`.
    Propose,
    /// Make no traffic-driven change.
    Off,
}

impl Reprovision {
    pub fn as_str(self) -> &'static str {
        match self {
            Reprovision::Auto => "auto",
            Reprovision::Propose => "propose",
            Reprovision::Off => "off",
        }
    }
}

impl std::str::FromStr for Reprovision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Reprovision::Auto),
            "propose" => Ok(Reprovision::Propose),
            "off" => Ok(Reprovision::Off),
            other => Err(format!("--reprovision {other:?} is not a mode: use auto, propose or off")),
        }
    }
}

/// How experiments run (`nanogrid serve --reprovision`, `--experiment-*`).
#[derive(Debug, Clone)]
pub struct ExperimentConfig {
    pub mode: Reprovision,
    /// How long a trial runs at least before the leader judges it.
    pub window: std::time::Duration,
    /// Calls per arm the leader needs for a verdict; a trial without them after
    /// [`INCONCLUSIVE_AFTER`] windows is rolled back as inconclusive.
    pub min_samples: usize,
    /// The least relative p50 gain worth a change (0.05: 5 %).
    pub min_gain: f64,
}

impl Default for ExperimentConfig {
    fn default() -> Self {
        ExperimentConfig {
            mode: Reprovision::Auto,
            window: std::time::Duration::from_secs(30),
            min_samples: 100,
            min_gain: 0.05,
        }
    }
}

/// Windows after which a trial without enough calls ends (rolled back: no evidence).
pub const INCONCLUSIVE_AFTER: u32 = 6;
/// Windows during which a change rolled back is not tried again.
pub const COOLDOWN: u32 = 20;

/// Where an experiment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Both arrangements run; the hot node's calls alternate between them.
    Trial,
    /// Won, waiting for a person's approval (`--reprovision propose`); the trial goes on.
    Pending,
    Kept,
    RolledBack,
    /// Ended without a verdict: the service or the node went away.
    Aborted,
}

impl Stage {
    pub fn active(self) -> bool {
        matches!(self, Stage::Trial | Stage::Pending)
    }

    /// The name the API and metrics use (as serialised).
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Trial => "trial",
            Stage::Pending => "pending",
            Stage::Kept => "kept",
            Stage::RolledBack => "rolled-back",
            Stage::Aborted => "aborted",
        }
    }
}

/// What an experiment tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Change {
    /// An instance on the hot node beside the old arrangement; kept, placement moves the
    /// odd instance there.
    #[default]
    Colocate,
    /// One more instance (on the hot node) than the service's count `from`; kept, the
    /// count becomes `from + 1`.
    AddInstance { from: u32 },
}

/// How long each arm of a count trial lasts before the leader switches to the other:
/// six phases per window, at least a second (a switch takes a placement step to apply).
pub fn phase_length(window: std::time::Duration) -> std::time::Duration {
    (window / 6).max(std::time::Duration::from_secs(1))
}

/// One experiment, as the control state holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Experiment {
    /// Set when the start commits.
    #[serde(default)]
    pub id: u64,
    pub service: String,
    /// The hot node: where the new arrangement adds an instance.
    pub node: String,
    pub hypothesis: String,
    /// The service's arrangement when the trial started (node → instances): arm `old`.
    pub before: BTreeMap<String, u32>,
    pub stage: Stage,
    pub started_ms: u64,
    #[serde(default)]
    pub ended_ms: Option<u64>,
    /// The traffic that made the leader propose it (calls_per_s, remote_per_s,
    /// wait_share, level).
    #[serde(default)]
    pub inputs: BTreeMap<String, f64>,
    #[serde(default)]
    pub figures: Option<Figures>,
    /// Why it ended as it did, in a sentence.
    #[serde(default)]
    pub verdict: String,
    #[serde(default)]
    pub change: Change,
    /// A count trial's current arm (`true`: the extra instance is on) and since when.
    #[serde(default)]
    pub phase_new: bool,
    #[serde(default)]
    pub phase_ms: u64,
}

impl Experiment {
    /// The service's row with the trial's instance.
    pub fn trial_row(&self) -> BTreeMap<String, u32> {
        let mut row = self.before.clone();
        self.add_instance(&mut row);
        row
    }

    /// Add the trial's instance to `row`: one on the node if it has none (a
    /// co-location), or one more there (a count).
    fn add_instance(&self, row: &mut BTreeMap<String, u32>) {
        match self.change {
            Change::Colocate => {
                row.entry(self.node.clone()).or_insert(1);
            }
            Change::AddInstance { .. } => *row.entry(self.node.clone()).or_insert(0) += 1,
        }
    }

    /// Whether the trial's instance is on now (a co-location's always is; a count's in
    /// its `new` phases).
    pub fn trial_on(&self) -> bool {
        match self.change {
            Change::Colocate => true,
            Change::AddInstance { .. } => self.phase_new,
        }
    }
}

#[cfg(test)]
impl Experiment {
    /// A co-location trial of `service` on `node` from the arrangement `before`.
    pub(crate) fn trial_for_test(service: &str, node: &str, before: &[(&str, u32)]) -> Experiment {
        Experiment {
            id: 0,
            service: service.into(),
            node: node.into(),
            hypothesis: String::new(),
            before: before.iter().map(|(n, c)| (n.to_string(), *c)).collect(),
            stage: Stage::Trial,
            started_ms: 1,
            ended_ms: None,
            inputs: BTreeMap::new(),
            figures: None,
            verdict: String::new(),
            change: Change::Colocate,
            phase_new: false,
            phase_ms: 0,
        }
    }
}

/// The control state's experiments.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Experiments {
    pub next_id: u64,
    pub list: BTreeMap<u64, Experiment>,
}

/// How an experiment ends (a Raft command's payload).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ending {
    pub id: u64,
    pub stage: Stage,
    pub figures: Option<Figures>,
    pub verdict: String,
    pub at_ms: u64,
}

impl Experiments {
    /// Start `e` unless its service already has an active experiment; the id it got.
    pub fn start(&mut self, mut e: Experiment) -> Option<u64> {
        if self.active_for(&e.service).is_some() {
            return None;
        }
        self.next_id += 1;
        e.id = self.next_id;
        e.stage = Stage::Trial;
        self.list.insert(e.id, e);
        Some(self.next_id)
    }

    /// End an active experiment: a trial gets its verdict (or is aborted); a pending one
    /// is approved, rejected or aborted (`from_pending`: only a pending one).
    pub fn end(&mut self, end: &Ending, from_pending: bool) -> Option<&Experiment> {
        let e = self.list.get_mut(&end.id).filter(|e| e.stage.active())?;
        let allowed = match (e.stage, end.stage) {
            (Stage::Trial, s) => !from_pending && s != Stage::Trial,
            (Stage::Pending, s) => matches!(s, Stage::Kept | Stage::RolledBack | Stage::Aborted),
            _ => false,
        };
        if !allowed {
            return None;
        }
        e.stage = end.stage;
        if end.figures.is_some() {
            e.figures = end.figures.clone();
        }
        if !end.stage.active() {
            e.ended_ms = Some(end.at_ms);
        }
        e.verdict = end.verdict.clone();
        let id = end.id;
        // Drop the ones that ended first (never this one).
        let mut ended: Vec<(u64, u64)> = self
            .list
            .values()
            .filter(|e| !e.stage.active() && e.id != id)
            .map(|e| (e.ended_ms.unwrap_or(0), e.id))
            .collect();
        ended.sort();
        for (_, old) in ended.iter().take((ended.len() + 1).saturating_sub(KEEP_ENDED)) {
            self.list.remove(old);
        }
        self.list.get(&id)
    }

    /// Switch an active count trial to arm `new` (from `at_ms`); false when there is
    /// nothing to switch.
    pub fn switch(&mut self, id: u64, new: bool, at_ms: u64) -> bool {
        match self.list.get_mut(&id) {
            Some(e) if e.stage.active() && matches!(e.change, Change::AddInstance { .. }) && e.phase_new != new => {
                e.phase_new = new;
                e.phase_ms = at_ms;
                true
            }
            _ => false,
        }
    }

    pub fn active(&self) -> impl Iterator<Item = &Experiment> {
        self.list.values().filter(|e| e.stage.active())
    }

    pub fn active_for(&self, service: &str) -> Option<&Experiment> {
        self.active().find(|e| e.service == service)
    }

    /// The newest experiment about putting `service` on `node`.
    fn latest(&self, service: &str, node: &str) -> Option<&Experiment> {
        self.list.values().rev().find(|e| e.service == service && e.node == node)
    }
}

/// How traffic's hot pairs stand with the experiments.
#[derive(Debug, Default, PartialEq)]
pub struct Sorted {
    /// Pairs placement may act on: proven by a kept experiment.
    pub proven: Affinity,
    /// Pairs with no verdict yet (none, or one so old it no longer counts): each needs
    /// an experiment if acting on it would move an instance.
    pub untried: Affinity,
}

/// Sort the hot pairs: kept ones are proven; active ones are left to their trial; ones
/// rolled back or aborted less than `cooldown_ms` ago are left alone.
pub fn sort(hot: &Affinity, exps: &Experiments, now_ms: u64, cooldown_ms: u64) -> Sorted {
    let mut out = Sorted::default();
    for (service, nodes) in hot {
        for (node, &level) in nodes {
            let to = match exps.latest(service, node) {
                Some(e) if e.stage == Stage::Kept => &mut out.proven,
                Some(e) if e.stage.active() => continue,
                Some(e) if e.ended_ms.is_some_and(|t| now_ms.saturating_sub(t) < cooldown_ms) => continue,
                _ => &mut out.untried,
            };
            to.entry(service.clone()).or_default().insert(node.clone(), level);
        }
    }
    out
}

/// The assignment placement should start from: each active experiment's service at its
/// old arrangement, and a service whose trial just ended without a keep at the old
/// arrangement while it still has the trial's extra instance (so the extra goes, not
/// another one).
pub fn baseline(current: &Assignment, exps: &Experiments, now_ms: u64, cooldown_ms: u64) -> Assignment {
    let mut out = current.clone();
    let mut seen = std::collections::BTreeSet::new();
    // Only each service's newest experiment counts.
    for e in exps.list.values().rev().filter(|e| seen.insert(e.service.as_str())) {
        let Some(row) = out.get_mut(&e.service) else { continue };
        if e.stage.active() {
            *row = e.before.clone();
            continue;
        }
        let recent = e.ended_ms.is_some_and(|t| now_ms.saturating_sub(t) < cooldown_ms);
        if !matches!(e.stage, Stage::RolledBack | Stage::Aborted) || !recent {
            continue;
        }
        if *row == e.trial_row() {
            *row = e.before.clone();
        } else if !e.before.contains_key(&e.node) && row.get(&e.node).is_some_and(|&n| n > 0) {
            // The row changed meanwhile (a count, a node gone): the trial's instance on
            // the node must still not count as one that node already had.
            row.remove(&e.node);
        }
    }
    out
}

/// Add each active trial's instance that is on now to `next` (if its node may serve):
/// one on the node if it has none (a co-location), one more there (a count).
pub fn add_trials(next: &mut Assignment, exps: &Experiments, serving: &[String]) {
    for e in exps.active().filter(|e| e.trial_on()) {
        if let Some(row) = next.get_mut(&e.service)
            && serving.contains(&e.node)
        {
            e.add_instance(row);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exp(service: &str, node: &str, before: &[(&str, u32)]) -> Experiment {
        Experiment::trial_for_test(service, node, before)
    }

    fn end(id: u64, stage: Stage, at_ms: u64) -> Ending {
        Ending { id, stage, figures: None, verdict: "v".into(), at_ms }
    }

    fn hot(pairs: &[(&str, &str)]) -> Affinity {
        let mut a = Affinity::new();
        for (s, n) in pairs {
            a.entry(s.to_string()).or_default().insert(n.to_string(), 1);
        }
        a
    }

    #[test]
    fn one_active_experiment_per_service_and_only_allowed_endings() {
        let mut x = Experiments::default();
        assert_eq!(x.start(exp("tail", "n2", &[("n1", 1)])), Some(1));
        assert_eq!(x.start(exp("tail", "n3", &[("n1", 1)])), None, "tail has a trial");
        assert_eq!(x.start(exp("other", "n3", &[("n1", 1)])), Some(2));
        assert!(x.end(&end(1, Stage::Kept, 4), true).is_none(), "only a pending experiment can be approved");
        assert!(x.end(&end(1, Stage::Pending, 5), false).is_some());
        assert_eq!(x.list[&1].ended_ms, None, "pending is still active");
        assert!(x.end(&end(1, Stage::Pending, 6), false).is_none(), "pending cannot go back to pending");
        assert!(x.end(&end(1, Stage::Kept, 7), true).is_some());
        assert_eq!((x.list[&1].stage, x.list[&1].ended_ms), (Stage::Kept, Some(7)));
        assert!(x.end(&end(1, Stage::RolledBack, 8), false).is_none(), "an ended experiment stays ended");
        assert!(x.end(&end(9, Stage::Kept, 8), false).is_none(), "unknown id");
        for i in 0..(KEEP_ENDED as u64 + 5) {
            let id = x.start(exp(&format!("s{i}"), "n1", &[])).unwrap();
            x.end(&end(id, Stage::RolledBack, 9), false);
        }
        assert_eq!(x.list.values().filter(|e| !e.stage.active()).count(), KEEP_ENDED);
        assert!(x.list.contains_key(&2), "the active one is never dropped");
        // Ending the oldest experiment keeps it (the ones that ended first go).
        assert!(x.end(&end(2, Stage::RolledBack, 10), false).is_some());
        assert!(x.list.contains_key(&2));
        assert_eq!(x.list.values().filter(|e| !e.stage.active()).count(), KEEP_ENDED);
    }

    #[test]
    fn a_count_trial_adds_its_instance_only_in_its_new_phases() {
        let row = |pairs: &[(&str, u32)]| pairs.iter().map(|(n, c)| (n.to_string(), *c)).collect::<BTreeMap<_, _>>();
        let mut x = Experiments::default();
        let mut e = exp("slow", "n1", &[("n1", 2), ("n2", 1)]);
        e.change = Change::AddInstance { from: 3 };
        let id = x.start(e).unwrap();
        let serving = ["n1".to_string(), "n2".to_string()];
        let placed = || BTreeMap::from([("slow".to_string(), row(&[("n1", 2), ("n2", 1)]))]);
        let mut next = placed();
        add_trials(&mut next, &x, &serving);
        assert_eq!(next["slow"], row(&[("n1", 2), ("n2", 1)]), "it starts in the old phase");
        assert!(x.switch(id, true, 10));
        assert!(!x.switch(id, true, 11), "already on");
        assert_eq!(x.list[&id].phase_ms, 10);
        let mut next = placed();
        add_trials(&mut next, &x, &serving);
        assert_eq!(next["slow"], row(&[("n1", 3), ("n2", 1)]), "one more on n1");
        assert_eq!(x.list[&id].trial_row(), next["slow"]);
        // Rolled back while on: placement starts from the old count.
        x.end(&end(id, Stage::RolledBack, 20), false);
        assert_eq!(baseline(&next, &x, 21, 100)["slow"], row(&[("n1", 2), ("n2", 1)]));
        assert!(!x.switch(id, false, 22), "an ended trial does not switch");
        // A co-location never switches.
        let c = x.start(exp("other", "n2", &[("n1", 1)])).unwrap();
        assert!(!x.switch(c, true, 30));
    }

    #[test]
    fn hot_pairs_are_proven_untried_or_left_alone() {
        let mut x = Experiments::default();
        let kept = x.start(exp("a", "n1", &[("n2", 1)])).unwrap();
        x.end(&end(kept, Stage::Kept, 10), false);
        let back = x.start(exp("b", "n1", &[("n2", 1)])).unwrap();
        x.end(&end(back, Stage::RolledBack, 100), false);
        x.start(exp("c", "n1", &[("n2", 1)])).unwrap();
        let all = hot(&[("a", "n1"), ("b", "n1"), ("c", "n1"), ("d", "n1"), ("a", "n3")]);
        let s = sort(&all, &x, 150, 1000);
        assert_eq!(s.proven, hot(&[("a", "n1")]));
        assert_eq!(s.untried, hot(&[("d", "n1"), ("a", "n3")]), "b cools down, c is on trial");
        // After the cool-down b may be tried again.
        assert_eq!(sort(&all, &x, 1200, 1000).untried, hot(&[("b", "n1"), ("d", "n1"), ("a", "n3")]));
    }

    #[test]
    fn placement_starts_from_the_old_arrangement_and_adds_the_trial() {
        let mut x = Experiments::default();
        let row = |pairs: &[(&str, u32)]| pairs.iter().map(|(n, c)| (n.to_string(), *c)).collect::<BTreeMap<_, _>>();
        let id = x.start(exp("tail", "n2", &[("n1", 1)])).unwrap();
        let current: Assignment = BTreeMap::from([("tail".to_string(), row(&[("n1", 1), ("n2", 1)]))]);
        assert_eq!(baseline(&current, &x, 2, 100)["tail"], row(&[("n1", 1)]));
        let mut next: Assignment = BTreeMap::from([("tail".to_string(), row(&[("n1", 1)]))]);
        add_trials(&mut next, &x, &["n1".into(), "n2".into()]);
        assert_eq!(next["tail"], row(&[("n1", 1), ("n2", 1)]));
        let mut away = BTreeMap::from([("tail".to_string(), row(&[("n1", 1)]))]);
        add_trials(&mut away, &x, &["n1".into()]);
        assert_eq!(away["tail"], row(&[("n1", 1)]), "no trial instance on a node that does not serve");
        // Rolled back: start from the old arrangement while the extra is still there...
        x.end(&end(id, Stage::RolledBack, 5), false);
        assert_eq!(baseline(&current, &x, 6, 100)["tail"], row(&[("n1", 1)]));
        // ... without the trial's node if the row changed meanwhile ...
        let grown: Assignment = BTreeMap::from([("tail".to_string(), row(&[("n1", 1), ("n2", 1), ("n3", 1)]))]);
        assert_eq!(baseline(&grown, &x, 6, 100)["tail"], row(&[("n1", 1), ("n3", 1)]));
        // ... but not once placement has moved it away, nor after the cool-down.
        let later: Assignment = BTreeMap::from([("tail".to_string(), row(&[("n3", 1)]))]);
        assert_eq!(baseline(&later, &x, 6, 100)["tail"], row(&[("n3", 1)]));
        assert_eq!(baseline(&current, &x, 500, 100)["tail"], current["tail"]);
        // Kept: placement works from where things are.
        let id = x.start(exp("tail", "n2", &[("n1", 1)])).unwrap();
        x.end(&end(id, Stage::Kept, 6), false);
        assert_eq!(baseline(&current, &x, 7, 100)["tail"], current["tail"]);
    }
}
