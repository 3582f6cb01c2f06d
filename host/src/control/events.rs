//! What the control plane decided and why: scaling, wake-ups, placement and node-count
//! decisions, with the figures that led to them. Events travel inside the Raft commands
//! that carry the decisions, so every node holds the same list (the last [`KEEP`]) and
//! `GET /v1/events` answers from any node.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

/// Events kept in the control state (older ones are dropped).
pub const KEEP: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// The autoscaler changed a service's instance count.
    Scale,
    /// A request reached a service scaled to zero: it got an instance on a node.
    Wake,
    /// The Cluster Manager moved instances between nodes.
    Placement,
    /// The leader asked the node scaler for another node count.
    Nodes,
    /// The leader started moving everything off a node before it goes.
    Drain,
    /// A draining node was needed again.
    Undrain,
    /// A node left the cluster.
    RemoveNode,
    /// A re-provisioning experiment started or ended.
    Experiment,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Scale => "scale",
            EventKind::Wake => "wake",
            EventKind::Placement => "placement",
            EventKind::Nodes => "nodes",
            EventKind::Drain => "drain",
            EventKind::Undrain => "undrain",
            EventKind::RemoveNode => "remove-node",
            EventKind::Experiment => "experiment",
        }
    }
}

/// One decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the cluster's event list (set when the command applies).
    #[serde(default)]
    pub seq: u64,
    /// When the deciding node proposed it (Unix milliseconds, its clock).
    pub at_ms: u64,
    pub kind: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The count before and after (instances, or nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<u32>,
    /// Why, in a sentence.
    pub reason: String,
    /// The measured figures the decision used (busy, queued, wait_ms, target, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, f64>,
}

impl Event {
    /// An event proposed now (by this node's clock).
    pub fn new(kind: EventKind, reason: impl Into<String>) -> Event {
        Event::at(kind, reason, crate::services::now_ms())
    }

    /// An event at a time the command carries (for events made while applying one, so
    /// every node records the same).
    pub fn at(kind: EventKind, reason: impl Into<String>, at_ms: u64) -> Event {
        Event {
            seq: 0,
            at_ms,
            kind,
            service: None,
            node: None,
            from: None,
            to: None,
            reason: reason.into(),
            inputs: BTreeMap::new(),
        }
    }

    pub fn service(mut self, s: &str) -> Event {
        self.service = Some(s.to_string());
        self
    }

    pub fn node(mut self, n: &str) -> Event {
        self.node = Some(n.to_string());
        self
    }

    pub fn counts(mut self, from: u32, to: u32) -> Event {
        (self.from, self.to) = (Some(from), Some(to));
        self
    }

    pub fn input(mut self, name: &str, v: f64) -> Event {
        // Rounded so the list reads well and stays small.
        self.inputs.insert(name.to_string(), (v * 1000.0).round() / 1000.0);
        self
    }
}

/// The cluster's recent decisions, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Events {
    pub next: u64,
    pub list: VecDeque<Event>,
}

impl Events {
    pub fn push(&mut self, mut e: Event) {
        self.next += 1;
        e.seq = self.next;
        self.list.push_back(e);
        while self.list.len() > KEEP {
            self.list.pop_front();
        }
    }

    /// Events after `seq`, oldest first, at most `limit`.
    pub fn after(&self, seq: u64, limit: usize) -> Vec<Event> {
        self.list.iter().filter(|e| e.seq > seq).take(limit).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_and_numbers_them() {
        let mut ev = Events::default();
        for i in 0..(KEEP as u32 + 10) {
            ev.push(Event::new(EventKind::Scale, "load").service("a").counts(i, i + 1));
        }
        assert_eq!(ev.list.len(), KEEP);
        assert_eq!(ev.list.front().unwrap().seq, 11, "the ten oldest were dropped");
        let tail = ev.after(KEEP as u64 + 8, 100);
        assert_eq!(tail.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![KEEP as u64 + 9, KEEP as u64 + 10]);
        assert_eq!(ev.after(0, 3).len(), 3);
    }
}
