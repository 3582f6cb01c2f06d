//! Nodes of another cluster: live in gossip (they hold this cluster's gossip key) and
//! members of a Raft cluster of another formation (`formation.rs`: they gossip its id).
//! That happens when one set of nodes formed a cluster more than once (a node that
//! bootstrapped alone before it could see the others; see `--bootstrap-expect`), and the
//! parts never merge: each serves, and a write to one is never seen by the other. Routing,
//! the leader's joins and the questions a node asks the others (`ask_live`) take members
//! only, and Raft messages are fenced by formation, so what this adds is that someone is
//! told: a node judged foreign for the node's `after` in a row (15 gossip intervals, at
//! least 5 s) shows as `foreign` in `GET /v1/cluster` and `nanogrid status`, counts in
//! `nanogrid_cluster_foreign_nodes`, and is logged as an error naming the fix. A node
//! without an id, or of this node's formation but outside its configuration (a learner
//! whose admission was lost with a leader, which the leader adds again: `manager.rs`), is
//! not foreign; nor is anything while this node
//! has no id itself (a cluster formed by an earlier release).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::gossip::{JOINING, PeerInfo, REBUILDING};

/// Foreign nodes as this node has seen them, and since when.
pub struct ForeignNodes {
    seen: Mutex<Seen>,
    /// How long a node must stay foreign before it counts: a node the leader has just
    /// added is a member on its own side before this node has applied the change.
    after: Duration,
    log: crate::ratelog::RateLimited,
}

#[derive(Default)]
struct Seen {
    /// When each node judged foreign now was first judged so (in an unbroken run of ticks).
    since: BTreeMap<String, Instant>,
    /// Those foreign for `after` or longer at the last tick (what was logged).
    counted: Vec<String>,
}

/// Live nodes that publish a member's mode (leader, follower or dormant) and another
/// formation's id than `mine`, without being in `members` or `removed`. Empty unless `me`
/// is a member itself with an id.
fn candidates(
    me: &str,
    mine: Option<&str>,
    members: &BTreeSet<&str>,
    removed: &[String],
    live: &BTreeMap<String, PeerInfo>,
) -> Vec<String> {
    let Some(mine) = mine.filter(|_| members.contains(me)) else { return Vec::new() };
    live.values()
        .filter(|p| p.id != me && !members.contains(p.id.as_str()) && !removed.contains(&p.id))
        .filter(|p| p.mode != JOINING && p.mode != REBUILDING)
        .filter(|p| p.formation.as_deref().is_some_and(|theirs| theirs != mine))
        .map(|p| p.id.clone())
        .collect()
}

impl ForeignNodes {
    /// A node counts as foreign once it has been one for `after`.
    pub fn new(after: Duration) -> Self {
        ForeignNodes { seen: Mutex::default(), after, log: crate::ratelog::RateLimited::new(Duration::from_secs(60)) }
    }

    /// The tick's view: this node's formation id, `members` of its Raft configuration
    /// (voters and learners), the nodes decommissioned from it, gossip's live nodes. Logs nodes that have just
    /// become foreign (and, once a minute, that some still are) and nodes that no longer
    /// are.
    pub fn observe(
        &self,
        me: &str,
        mine: Option<&str>,
        members: &BTreeSet<&str>,
        removed: &[String],
        live: &BTreeMap<String, PeerInfo>,
        now: Instant,
    ) {
        let now_foreign = candidates(me, mine, members, removed, live);
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.since.retain(|n, _| now_foreign.contains(n));
        for n in now_foreign {
            seen.since.entry(n).or_insert(now);
        }
        let after = self.after;
        let counted: Vec<String> =
            seen.since.iter().filter(|(_, t)| now.duration_since(**t) >= after).map(|(n, _)| n.clone()).collect();
        // Logged before `current` can show them (the lock is held until then).
        let before = std::mem::replace(&mut seen.counted, counted.clone());
        let gone: Vec<&String> = before.iter().filter(|n| !counted.contains(n)).collect();
        if !gone.is_empty() {
            tracing::info!(nodes = ?gone, "nodes no longer seen as members of another cluster");
        }
        let new = counted.iter().any(|n| !before.contains(n));
        // Once a minute while some are; a node newly counted at once.
        let due = !counted.is_empty() && self.log.allow("foreign").is_some();
        if !counted.is_empty() && (new || due) {
            let modes: Vec<String> =
                counted.iter().map(|n| format!("{n} ({})", live.get(n).map_or("?", |p| p.mode.as_str()))).collect();
            tracing::error!(
                nodes = ?counted,
                "live nodes that are members of another cluster, not of this one: {}. They gossip with this \
                 cluster's key, so the nodes formed a cluster more than once, and the parts do not merge: writes \
                 to one are not seen by the other. Fix: keep one part; stop each node of the other, empty its \
                 --data-dir (its services and kv data are lost) and start it again: it joins as a new node. \
                 Start a new cluster's N nodes with --bootstrap-expect N so it forms once",
                modes.join(", ")
            );
        }
    }

    /// Nodes foreign for `after` or longer at the last tick (those it logged), by name.
    pub fn current(&self) -> Vec<String> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).counted.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINE: Option<&str> = Some("f-00000000000000aa");

    /// Live nodes: name, mode, formation id.
    fn live(nodes: &[(&str, &str, Option<&str>)]) -> BTreeMap<String, PeerInfo> {
        nodes
            .iter()
            .map(|(id, mode, formation)| {
                let info = PeerInfo {
                    id: id.to_string(),
                    mode: mode.to_string(),
                    formation: formation.map(str::to_string),
                    ..Default::default()
                };
                (id.to_string(), info)
            })
            .collect()
    }

    #[test]
    fn a_live_member_of_another_formation_counts_once_it_stays_one() {
        let members: BTreeSet<&str> = ["n1", "n2"].into();
        let removed = ["n5".to_string()];
        let other = Some("f-00000000000000bb");
        let view = live(&[
            ("n1", "leader", MINE),
            ("n2", "follower", MINE),
            ("n3", "leader", other),    // leads a cluster of its own
            ("n4", "joining", None),    // waits to be added: not foreign
            ("n5", "follower", other),  // decommissioned here: not foreign
            ("n6", "rebuilding", None), // lost its store
            ("n7", "dormant", other),   // a member of a cluster without a majority
            ("n8", "follower", MINE),   // this formation, outside the configuration
            ("n9", "follower", None),   // a cluster from before formation ids
        ]);
        let f = ForeignNodes::new(Duration::from_secs(5));
        let t0 = Instant::now();
        f.observe("n1", MINE, &members, &removed, &view, t0);
        assert_eq!(f.current(), Vec::<String>::new(), "not before `after`");
        f.observe("n1", MINE, &members, &removed, &view, t0 + Duration::from_secs(4));
        assert_eq!(f.current(), Vec::<String>::new(), "not before `after`");
        f.observe("n1", MINE, &members, &removed, &view, t0 + Duration::from_secs(5));
        assert_eq!(f.current(), ["n3", "n7"]);
        // n3 is added to this cluster: the run ends; n7 stays.
        let members: BTreeSet<&str> = ["n1", "n2", "n3"].into();
        f.observe("n1", MINE, &members, &removed, &view, t0 + Duration::from_secs(6));
        assert_eq!(f.current(), ["n7"]);
    }

    #[test]
    fn nothing_is_judged_without_an_id_or_outside_any_configuration() {
        let view = live(&[("n1", "joining", None), ("n2", "leader", Some("f-00000000000000bb"))]);
        let f = ForeignNodes::new(Duration::ZERO);
        f.observe("n1", None, &BTreeSet::new(), &[], &view, Instant::now());
        assert!(f.current().is_empty(), "n1 waits to join n2's cluster");
        let members: BTreeSet<&str> = ["n1"].into();
        f.observe("n1", None, &members, &[], &view, Instant::now());
        assert!(f.current().is_empty(), "a cluster from before formation ids judges nothing");
        f.observe("n1", MINE, &members, &[], &view, Instant::now());
        assert_eq!(f.current(), ["n2"], "once n1 is a member of a formation without n2");
    }

    #[test]
    fn a_run_broken_by_one_tick_starts_again() {
        let members: BTreeSet<&str> = ["n1"].into();
        let other = Some("f-00000000000000bb");
        let f = ForeignNodes::new(Duration::from_secs(5));
        let t0 = Instant::now();
        f.observe("n1", MINE, &members, &[], &live(&[("n2", "leader", other)]), t0);
        f.observe("n1", MINE, &members, &[], &live(&[("n2", "joining", other)]), t0 + Duration::from_secs(3));
        f.observe("n1", MINE, &members, &[], &live(&[("n2", "leader", other)]), t0 + Duration::from_secs(4));
        f.observe("n1", MINE, &members, &[], &live(&[("n2", "leader", other)]), t0 + Duration::from_secs(8));
        assert!(f.current().is_empty(), "4 s since the run began again");
        f.observe("n1", MINE, &members, &[], &live(&[("n2", "leader", other)]), t0 + Duration::from_secs(9));
        assert_eq!(f.current(), ["n2"]);
    }
}
