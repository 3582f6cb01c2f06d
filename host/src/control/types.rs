//! What the control plane agrees on: the Raft type configuration, the commands in its log,
//! and the state they build (service specs, per-node instance assignment, removed nodes).

use std::collections::BTreeMap;
use std::io::Cursor;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::events::{Event, EventKind, Events};
use super::experiment::{Change, Ending, Experiment, Experiments, Stage};
use crate::grid::part::{PartInfo, PartitionTable};
use crate::services::ServiceSpec;

/// A cluster member as Raft knows it: its name (`--node-id`) and peer RPC address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    pub peer: String,
}

impl std::fmt::Display for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.name, self.peer)
    }
}

/// One change to the control state. Every node applies the same sequence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "op")]
pub enum Command {
    PutService {
        spec: Box<ServiceSpec>,
    },
    DeleteService {
        name: String,
    },
    /// The Cluster Manager's placement: service → node → instances (replaces the table).
    Assign {
        assignment: Assignment,
        /// What moved and why (none for a table that only drops rows).
        #[serde(default)]
        events: Vec<Event>,
        /// The `assign_version` the table was computed from: a table computed before a
        /// wake-up or a removal changes nothing.
        #[serde(default)]
        base: Option<u64>,
    },
    /// The autoscaler's count for an autoscaled service (only its `instances` changes),
    /// if it still has the count `from` the decision was made on.
    Scale {
        service: String,
        instances: u32,
        #[serde(default)]
        from: Option<u32>,
        event: Event,
    },
    /// A request reached an autoscaled service with no instances: one instance on
    /// `node` (if the service still has none).
    Wake {
        service: String,
        node: String,
        at_ms: u64,
    },
    /// Move everything off `node` before it leaves (the node scaler's scale-in).
    Drain {
        node: String,
        event: Event,
    },
    /// A decision that changes no state but is worth showing (the node scaler's).
    Note {
        event: Event,
    },
    /// A decommissioned node: never assigned again, never re-added as a member. `stop`:
    /// removed by the node scaler, which is asked to stop it until it reports it did.
    RemoveNode {
        name: String,
        #[serde(default)]
        stop: bool,
        /// When it was proposed (for its event).
        #[serde(default)]
        at_ms: u64,
    },
    /// The node scaler stopped a removed node.
    Stopped {
        node: String,
    },
    /// A draining node is needed again (load came back): it serves as before.
    Undrain {
        node: String,
        event: Event,
    },
    /// The Cluster Manager's partition table, applied only if the table is still at
    /// version `expect` (so a table computed from stale state changes nothing).
    GridTable {
        expect: u64,
        table: Box<PartitionTable>,
    },
    /// The Cluster Manager's changes to some partitions (each row replaced whole), applied
    /// only if the table is still at version `expect`. A step that moves one primary logs
    /// that row, not the whole table (256 rows, 20-60 KB).
    GridChanges {
        expect: u64,
        replication: usize,
        changes: Vec<(u32, PartInfo)>,
    },
    /// A partition's primary reports `node` caught up: it joins the in-sync set, if
    /// the partition is still at `epoch`.
    GridInSync {
        partition: u32,
        epoch: u64,
        node: String,
    },
    /// A partition's primary reports `node` lagging: it leaves the in-sync set, if the
    /// partition is still at `epoch`.
    GridOutOfSync {
        partition: u32,
        epoch: u64,
        node: String,
    },
    /// A restarted primary gives up `partition` at `epoch`: the leader promotes a new one.
    GridRelinquish {
        partition: u32,
        epoch: u64,
        node: String,
    },
    /// The leader starts trying a change (unless the service already has an experiment).
    ExperimentStart {
        experiment: Box<Experiment>,
    },
    /// An experiment's verdict, or its abort (`decision`: a person's approval or
    /// rejection, which applies only to a pending experiment).
    ExperimentEnd {
        end: Box<Ending>,
        #[serde(default)]
        decision: bool,
    },
    /// A count trial switches its extra instance on (`new`) or off.
    ExperimentSwitch {
        id: u64,
        new: bool,
        at_ms: u64,
    },
}

/// What applying a command returns (nothing a caller needs beyond "committed").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub changed: bool,
}

pub type Assignment = BTreeMap<String, BTreeMap<String, u32>>;

openraft::declare_raft_types!(
    /// The control plane's Raft types.
    pub Control:
        D = Command,
        R = Applied,
        NodeId = u64,
        Node = Member,
        Entry = openraft::Entry<Control>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A node's Raft id: derived from its name, so a restarted node is the same member.
pub fn raft_id(name: &str) -> u64 {
    let d = Sha256::digest(name.as_bytes());
    u64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
}

/// The replicated state every node holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ControlState {
    pub services: BTreeMap<String, ServiceSpec>,
    pub assignment: Assignment,
    pub removed: Vec<String>,
    /// Where each kv partition lives (empty until the leader first places them).
    #[serde(default)]
    pub grid: PartitionTable,
    /// Nodes being emptied before they are removed: no instances, no partitions.
    #[serde(default)]
    pub draining: Vec<String>,
    /// Bumped on every change of `assignment`.
    #[serde(default)]
    pub assign_version: u64,
    /// Nodes removed by the node scaler that it has not reported stopped yet.
    #[serde(default)]
    pub stopping: Vec<String>,
    /// The recent scaling and placement decisions.
    #[serde(default)]
    pub events: Events,
    /// Re-provisioning experiments, running and recent.
    #[serde(default)]
    pub experiments: Experiments,
}

impl ControlState {
    pub fn apply(&mut self, cmd: &Command) -> Applied {
        let changed = match cmd {
            Command::PutService { spec } => {
                let mut spec = (**spec).clone();
                // A redeploy of an autoscaled service keeps the count the autoscaler set
                // (the node that took the deploy may not have applied the latest one).
                if let (Some(a), Some(old)) = (spec.autoscale, self.services.get(&spec.name))
                    && old.autoscale.is_some()
                {
                    spec.instances = a.clamp(old.instances);
                }
                let old = self.services.insert(spec.name.clone(), spec.clone());
                old.as_ref() != Some(&spec)
            }
            Command::DeleteService { name } => {
                if self.assignment.remove(name).is_some() {
                    self.assign_version += 1;
                }
                self.services.remove(name).is_some()
            }
            Command::Assign { base: Some(b), .. } if *b != self.assign_version => false,
            Command::Assign { assignment, events, .. } => {
                // Drop rows of services deleted since the manager computed this table.
                let next: Assignment = assignment
                    .iter()
                    .filter(|(s, _)| self.services.contains_key(*s))
                    .map(|(s, m)| (s.clone(), m.clone()))
                    .collect();
                let changed = next != self.assignment;
                if changed {
                    self.assign_version += 1;
                    for e in events {
                        self.events.push(e.clone());
                    }
                }
                self.assignment = next;
                changed
            }
            Command::Scale { service, instances, from, event } => match self.services.get_mut(service) {
                Some(spec)
                    if spec.autoscale.is_some_and(|a| a.clamp(*instances) == *instances)
                        && from.is_none_or(|f| f == spec.instances) =>
                {
                    let changed = spec.instances != *instances;
                    if changed {
                        spec.instances = *instances;
                        self.events.push(event.clone());
                    }
                    changed
                }
                _ => false,
            },
            Command::Wake { service, node, at_ms } => match self.services.get_mut(service) {
                Some(spec) if spec.instances == 0 && spec.autoscale.is_some_and(|a| a.max > 0) => {
                    spec.instances = 1;
                    self.assignment.insert(service.clone(), BTreeMap::from([(node.clone(), 1)]));
                    self.assign_version += 1;
                    let reason = "a request arrived while it had no instances";
                    self.events
                        .push(Event::at(EventKind::Wake, reason, *at_ms).service(service).node(node).counts(0, 1));
                    true
                }
                _ => false,
            },
            Command::Note { event } => {
                self.events.push(event.clone());
                true
            }
            Command::GridTable { .. }
            | Command::GridChanges { .. }
            | Command::GridInSync { .. }
            | Command::GridOutOfSync { .. }
            | Command::GridRelinquish { .. } => self.apply_grid(cmd),
            Command::Drain { .. } | Command::Stopped { .. } | Command::Undrain { .. } | Command::RemoveNode { .. } => {
                self.apply_nodes(cmd)
            }
            Command::ExperimentStart { .. } | Command::ExperimentEnd { .. } | Command::ExperimentSwitch { .. } => {
                self.apply_experiments(cmd)
            }
        };
        Applied { changed }
    }

    /// The grid's partition table commands.
    fn apply_grid(&mut self, cmd: &Command) -> bool {
        match cmd {
            Command::GridTable { expect, table } => {
                if self.grid.version != *expect {
                    false
                } else {
                    self.grid = (**table).clone();
                    self.grid.version = expect + 1;
                    true
                }
            }
            Command::GridChanges { expect, replication, changes } => {
                let fits = changes.iter().all(|(p, _)| (*p as usize) < self.grid.parts.len());
                if self.grid.version != *expect || self.grid.is_empty() || !fits {
                    return false;
                }
                for (p, info) in changes {
                    self.grid.parts[*p as usize] = info.clone();
                }
                self.grid.replication = *replication;
                self.grid.version = expect + 1;
                true
            }
            Command::GridInSync { partition, epoch, node } => match self.grid.parts.get_mut(*partition as usize) {
                Some(info) if info.epoch == *epoch && info.replicas.contains(node) && !info.isr.contains(node) => {
                    info.isr.push(node.clone());
                    self.grid.version += 1;
                    true
                }
                _ => false,
            },
            Command::GridOutOfSync { partition, epoch, node } => match self.grid.parts.get_mut(*partition as usize) {
                Some(info) if info.epoch == *epoch && info.primary != *node && info.isr.contains(node) => {
                    info.isr.retain(|n| n != node);
                    self.grid.version += 1;
                    true
                }
                _ => false,
            },
            Command::GridRelinquish { partition, epoch, node } => match self.grid.parts.get_mut(*partition as usize) {
                Some(info) if info.epoch == *epoch && info.primary == *node => {
                    info.primary = String::new();
                    self.grid.version += 1;
                    true
                }
                _ => false,
            },
            // `apply` sends only the commands above here.
            _ => false,
        }
    }

    /// Membership commands: draining, stopping, removing nodes.
    fn apply_nodes(&mut self, cmd: &Command) -> bool {
        match cmd {
            Command::Drain { node, event } => {
                if self.removed.contains(node) || self.draining.contains(node) {
                    false
                } else {
                    self.draining.push(node.clone());
                    self.events.push(event.clone());
                    true
                }
            }
            Command::Stopped { node } => {
                let before = self.stopping.len();
                self.stopping.retain(|n| n != node);
                self.stopping.len() != before
            }
            Command::Undrain { node, event } => {
                let before = self.draining.len();
                self.draining.retain(|n| n != node);
                let changed = self.draining.len() != before;
                if changed {
                    self.events.push(event.clone());
                }
                changed
            }
            Command::RemoveNode { name, stop, at_ms } => {
                if self.removed.contains(name) {
                    false
                } else {
                    self.removed.push(name.clone());
                    self.draining.retain(|n| n != name);
                    if *stop {
                        self.stopping.push(name.clone());
                    }
                    for nodes in self.assignment.values_mut() {
                        nodes.remove(name);
                    }
                    self.assign_version += 1;
                    self.events.push(Event::at(EventKind::RemoveNode, "decommissioned", *at_ms).node(name));
                    true
                }
            }
            // `apply` sends only the commands above here.
            _ => false,
        }
    }

    /// Re-provisioning experiment commands.
    fn apply_experiments(&mut self, cmd: &Command) -> bool {
        match cmd {
            Command::ExperimentStart { experiment } => {
                let started = self.experiments.start((**experiment).clone());
                if let Some(id) = started {
                    let e = &self.experiments.list[&id];
                    let reason = format!("experiment {id} started: {}", e.hypothesis);
                    let mut ev =
                        Event::at(EventKind::Experiment, reason, e.started_ms).service(&e.service).node(&e.node);
                    ev.inputs = e.inputs.clone();
                    self.events.push(ev);
                }
                started.is_some()
            }
            Command::ExperimentEnd { end, decision } => match self.experiments.end(end, *decision) {
                Some(e) => {
                    let reason = format!("experiment {} {}: {}", e.id, stage_word(e.stage), e.verdict);
                    let ev = Event::at(EventKind::Experiment, reason, end.at_ms).service(&e.service).node(&e.node);
                    self.events.push(ev);
                    let (id, stage, change, service) = (e.id, e.stage, e.change, e.service.clone());
                    if let (Stage::Kept, Change::AddInstance { from }) = (stage, change) {
                        self.keep_count(id, &service, from, end.at_ms);
                    }
                    true
                }
                None => false,
            },
            Command::ExperimentSwitch { id, new, at_ms } => self.experiments.switch(*id, *new, *at_ms),
            // `apply` sends only the commands above here.
            _ => false,
        }
    }

    /// Instances of `service` assigned to `node`.
    pub fn slots(&self, service: &str, node: &str) -> u32 {
        self.assignment.get(service).and_then(|m| m.get(node)).copied().unwrap_or(0)
    }
}

impl ControlState {
    /// A kept count experiment: the service's count goes from `from` to one more (unless
    /// it changed meanwhile, which the leader would have aborted the trial for).
    fn keep_count(&mut self, id: u64, service: &str, from: u32, at_ms: u64) {
        let Some(spec) = self.services.get_mut(service).filter(|s| s.instances == from) else { return };
        spec.instances = from + 1;
        let reason = format!("experiment {id} kept one more instance");
        self.events.push(Event::at(EventKind::Scale, reason, at_ms).service(service).counts(from, from + 1));
    }
}

fn stage_word(stage: Stage) -> &'static str {
    match stage {
        Stage::Trial => "is on trial",
        Stage::Pending => "won and waits for approval",
        Stage::Kept => "kept its change",
        Stage::RolledBack => "rolled its change back",
        Stage::Aborted => "was aborted",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A service `name` with a fixed count.
    fn fixed_spec(name: &str, instances: u32) -> ServiceSpec {
        serde_json::from_value(serde_json::json!({
            "name": name, "component": format!("sha256:{}", "0".repeat(64)), "instances": instances,
            "queue_timeout_ms": 1000, "limits": crate::services::Limits::default(), "generation": 1, "updated_at_ms": 0
        }))
        .unwrap()
    }

    #[test]
    fn raft_ids_are_stable_and_distinct() {
        assert_eq!(raft_id("n1"), raft_id("n1"));
        assert_ne!(raft_id("n1"), raft_id("n2"));
    }

    #[test]
    fn delete_and_remove_clean_the_assignment() {
        let mut s = ControlState::default();
        let spec = fixed_spec("a", 2);
        assert!(s.apply(&Command::PutService { spec: Box::new(spec.clone()) }).changed);
        assert!(!s.apply(&Command::PutService { spec: Box::new(spec) }).changed);
        let table = Assignment::from([
            ("a".into(), BTreeMap::from([("n1".into(), 1), ("n2".into(), 1)])),
            ("gone".into(), BTreeMap::from([("n1".into(), 1)])),
        ]);
        assert!(!s.apply(&Command::Assign { assignment: table.clone(), events: vec![], base: Some(9) }).changed);
        assert!(s.apply(&Command::Assign { assignment: table, events: vec![], base: Some(0) }).changed);
        assert_eq!(s.assignment.len(), 1, "rows of unknown services are dropped");
        assert!(s.apply(&Command::RemoveNode { name: "n2".into(), stop: false, at_ms: 0 }).changed);
        assert_eq!(s.slots("a", "n2"), 0);
        assert_eq!(s.slots("a", "n1"), 1);
        assert!(s.apply(&Command::DeleteService { name: "a".into() }).changed);
        assert!(s.assignment.is_empty());
    }

    #[test]
    fn autoscale_counts_and_wakes_apply_only_to_autoscaled_services() {
        let mut s = ControlState::default();
        let spec: ServiceSpec = serde_json::from_value(serde_json::json!({
            "name": "a", "component": format!("sha256:{}", "0".repeat(64)), "instances": 1,
            "queue_timeout_ms": 1000, "limits": crate::services::Limits::default(), "generation": 1,
            "updated_at_ms": 0, "autoscale": {"min": 0, "max": 4},
        }))
        .unwrap();
        let fixed = ServiceSpec { name: "f".into(), autoscale: None, ..spec.clone() };
        s.apply(&Command::PutService { spec: Box::new(spec) });
        s.apply(&Command::PutService { spec: Box::new(fixed) });
        let scale_from = |svc: &str, n, from| Command::Scale {
            service: svc.into(),
            instances: n,
            from,
            event: Event::new(EventKind::Scale, "test").service(svc),
        };
        let scale = |svc: &str, n| scale_from(svc, n, None);
        assert!(!s.apply(&scale("f", 3)).changed, "a fixed service is not autoscaled");
        assert!(!s.apply(&scale("a", 5)).changed, "above max");
        assert!(s.apply(&scale("a", 0)).changed);
        assert_eq!(s.services["a"].instances, 0);
        let wake = Command::Wake { service: "a".into(), node: "n2".into(), at_ms: 1 };
        assert!(s.apply(&wake).changed);
        assert_eq!((s.services["a"].instances, s.slots("a", "n2")), (1, 1));
        assert!(!s.apply(&wake).changed, "a second wake finds an instance");
        let stale = scale_from("a", 0, Some(0));
        assert!(!s.apply(&stale).changed, "a decision made before the wake changes nothing");
        // A redeploy keeps the autoscaler's count.
        let mut again = s.services["a"].clone();
        again.instances = 1;
        s.apply(&scale_from("a", 3, Some(1)));
        s.apply(&Command::PutService { spec: Box::new(again) });
        assert_eq!(s.services["a"].instances, 3);
        let kinds: Vec<EventKind> = s.events.list.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, vec![EventKind::Scale, EventKind::Wake, EventKind::Scale]);
    }

    #[test]
    fn a_kept_count_experiment_adds_one_instance_to_the_count_it_was_tried_on() {
        let mut s = ControlState::default();
        let spec = fixed_spec("a", 2);
        s.apply(&Command::PutService { spec: Box::new(spec) });
        let trial = |from| Experiment {
            change: Change::AddInstance { from },
            ..Experiment::trial_for_test("a", "n1", &[("n1", 2)])
        };
        let end = |id, stage| Command::ExperimentEnd {
            end: Box::new(Ending { id, stage, figures: None, verdict: "v".into(), at_ms: 5 }),
            decision: false,
        };
        assert!(s.apply(&Command::ExperimentStart { experiment: Box::new(trial(2)) }).changed);
        assert!(s.apply(&Command::ExperimentSwitch { id: 1, new: true, at_ms: 3 }).changed);
        assert!(s.apply(&end(1, Stage::RolledBack)).changed);
        assert_eq!(s.services["a"].instances, 2, "rolled back: the count stays");
        s.apply(&Command::ExperimentStart { experiment: Box::new(trial(2)) });
        assert!(s.apply(&end(2, Stage::Kept)).changed);
        assert_eq!(s.services["a"].instances, 3, "kept: one more");
        let last = s.events.list.back().unwrap();
        assert_eq!((last.kind, last.from, last.to), (EventKind::Scale, Some(2), Some(3)));
        // Tried on a count that has changed since: kept changes nothing.
        s.apply(&Command::ExperimentStart { experiment: Box::new(trial(2)) });
        s.apply(&end(3, Stage::Kept));
        assert_eq!(s.services["a"].instances, 3);
    }

    #[test]
    fn grid_changes_apply_only_to_the_table_they_were_made_for() {
        let mut s = ControlState::default();
        let names = vec!["n1".to_string(), "n2".to_string()];
        let mut t = crate::grid::part::initial(&names, 2);
        t.parts[0].isr = vec![t.parts[0].primary.clone()];
        assert!(s.apply(&Command::GridTable { expect: 0, table: Box::new(t.clone()) }).changed);
        assert_eq!(s.grid.version, 1);
        assert!(!s.apply(&Command::GridTable { expect: 0, table: Box::new(t) }).changed, "stale");
        let other = s.grid.parts[0].replicas.iter().find(|n| **n != s.grid.parts[0].primary).unwrap().clone();
        let stale = Command::GridInSync { partition: 0, epoch: 9, node: other.clone() };
        assert!(!s.apply(&stale).changed);
        assert!(s.apply(&Command::GridInSync { partition: 0, epoch: 1, node: other }).changed);
        assert_eq!(s.grid.parts[0].isr.len(), 2);
        assert_eq!(s.grid.version, 2);
        let lagging = s.grid.parts[0].replicas.iter().find(|n| **n != s.grid.parts[0].primary).unwrap().clone();
        assert!(s.apply(&Command::GridOutOfSync { partition: 0, epoch: 1, node: lagging.clone() }).changed);
        assert!(!s.grid.parts[0].isr.contains(&lagging));
        assert!(s.apply(&Command::GridInSync { partition: 0, epoch: 1, node: lagging }).changed);
        // Only the named primary, at its epoch, can give a partition up.
        let primary = s.grid.parts[0].primary.clone();
        let wrong = Command::GridRelinquish { partition: 0, epoch: 1, node: "n9".into() };
        assert!(!s.apply(&wrong).changed);
        assert!(s.apply(&Command::GridRelinquish { partition: 0, epoch: 1, node: primary }).changed);
        assert_eq!(s.grid.parts[0].primary, "");

        // A step's changes as rows: applied at the version they were computed from only,
        // and only to partitions the table has.
        let mut next = s.grid.clone();
        next.parts[0] =
            PartInfo { primary: "n2".into(), replicas: vec!["n2".into()], isr: vec!["n2".into()], epoch: 2 };
        next.parts[7].isr.clear();
        let changes = s.grid.changes_to(&next);
        assert_eq!(changes.iter().map(|(p, _)| *p).collect::<Vec<_>>(), [0, 7]);
        let v = s.grid.version;
        let delta = Command::GridChanges { expect: v, replication: 2, changes: changes.clone() };
        let outside = Command::GridChanges { expect: v, replication: 2, changes: vec![(256, PartInfo::default())] };
        assert!(!s.apply(&outside).changed, "a partition the table does not have");
        assert!(!s.apply(&Command::GridChanges { expect: v - 1, replication: 2, changes }).changed, "stale");
        let full = serde_json::to_vec(&Command::GridTable { expect: v, table: Box::new(next.clone()) }).unwrap();
        let small = serde_json::to_vec(&delta).unwrap();
        assert!(small.len() * 50 < full.len(), "two rows: {} bytes, the table: {}", small.len(), full.len());
        assert!(s.apply(&delta).changed);
        next.version = v + 1;
        assert_eq!(s.grid, next, "the same table as replacing it whole");
    }
}
