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
    /// The Cluster Manager's placement as the rows that changed (`None`: the service has no
    /// row any more), applied only at `base` (the `assign_version` it was computed from).
    /// At 10,000 services the whole table is ~0.5 MB; a step moves a few rows.
    AssignChanges {
        changes: Vec<(String, Option<BTreeMap<String, u32>>)>,
        #[serde(default)]
        events: Vec<Event>,
        base: u64,
    },
    /// Several commands applied in order as one log entry: a new service's spec and its
    /// first placement (`PutService`, then `AssignChanges`), so a deploy waits for one
    /// commit instead of two. Each part applies as it would alone (the placement only at
    /// its `base`; otherwise the Cluster Manager places the service at its next step).
    Several {
        cmds: Vec<Command>,
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

pub use super::assignment::Assignment;

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
            Command::PutService { .. }
            | Command::DeleteService { .. }
            | Command::Scale { .. }
            | Command::Wake { .. } => self.apply_services(cmd),
            Command::Assign { .. } | Command::AssignChanges { .. } => self.apply_assignment(cmd),
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
            Command::Several { cmds } => cmds.iter().fold(false, |changed, cmd| self.apply(cmd).changed | changed),
        };
        Applied { changed }
    }

    /// A service's spec and count commands.
    fn apply_services(&mut self, cmd: &Command) -> bool {
        match cmd {
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
            _ => false,
        }
    }

    /// The assignment table's commands (ignored when computed from an older table).
    fn apply_assignment(&mut self, cmd: &Command) -> bool {
        match cmd {
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
            Command::AssignChanges { base, .. } if *base != self.assign_version => false,
            Command::AssignChanges { changes, events, .. } => {
                let mut changed = false;
                for (service, row) in changes {
                    changed |= match row {
                        // Rows of services deleted since the manager computed them are dropped.
                        Some(r) if self.services.contains_key(service) => {
                            self.assignment.insert(service.clone(), r.clone()).as_ref() != Some(r)
                        }
                        Some(_) => false,
                        None => self.assignment.remove(service).is_some(),
                    };
                }
                if changed {
                    self.assign_version += 1;
                    for e in events {
                        self.events.push(e.clone());
                    }
                }
                changed
            }
            _ => false,
        }
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
mod tests;
