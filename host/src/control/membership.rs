//! Membership (every node): the gossip view, and this node's mode derived from it and
//! from Raft. Once per tick its loop reads gossip's live nodes into [`LiveView`], decides
//! the mode (dormant unless a majority of the voters is visible), publishes mode and load,
//! lets a rebuilt store vote again once the leader has made it a learner, watches for live
//! nodes of another cluster (`foreign.rs`), and bootstraps a brand-new cluster.
//!
//! An owner of its own: [`Membership::spawn`] starts the loop, which ends with the node's
//! stop signal, [`Membership::shutdown`] (which also stops gossip), or on drop.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::Mode;
use super::contact::{Held, RaftContact};
use super::foreign::ForeignNodes;
use super::formation::Formation;
use super::gossip::{Gossip, GossipStats, KEY_FORMATION, KEY_LOAD, KEY_MODE, PeerInfo};
pub use super::gossip::{JOINING, REBUILDING};
use super::store::StateMachine;
use super::types::{Control, Member, raft_id};
use crate::services::Registry;
use crate::tasks::Tasks;

/// Live nodes as gossip last showed them (this node included): written by the mode loop
/// once per tick, read by placement, routing and the Service Manager.
#[derive(Default)]
pub struct LiveView(RwLock<BTreeMap<String, PeerInfo>>);

impl LiveView {
    /// A copy of the view.
    pub fn get(&self) -> BTreeMap<String, PeerInfo> {
        self.read(BTreeMap::clone)
    }

    /// Look at the view without copying it.
    pub fn read<R>(&self, f: impl FnOnce(&BTreeMap<String, PeerInfo>) -> R) -> R {
        f(&self.0.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn set(&self, live: BTreeMap<String, PeerInfo>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = live;
    }
}

/// Members of a Raft configuration by name: (voters, learners).
pub fn members(raft: &openraft::Raft<Control>) -> (Vec<Member>, Vec<Member>) {
    let m = raft.metrics().borrow().membership_config.clone();
    let voters: Vec<u64> = m.membership().voter_ids().collect();
    let (mut v, mut l) = (Vec::new(), Vec::new());
    for (id, member) in m.membership().nodes() {
        if voters.contains(id) { v.push(member.clone()) } else { l.push(member.clone()) }
    }
    (v, l)
}

/// How often the mode loop runs: half the gossip interval, within 20-100 ms.
pub fn tick(gossip_interval: Duration) -> Duration {
    (gossip_interval / 2).clamp(Duration::from_millis(20), Duration::from_millis(100))
}

/// A clustered node's mode: dormant unless it is a member that sees a majority of the
/// voters (itself included) through gossip; then leader or follower as Raft says. An
/// election in progress is not dormant: services keep running while a majority is there.
pub fn decide_mode(
    me: &str,
    voters: &[Member],
    learners: &[Member],
    live: &BTreeMap<String, PeerInfo>,
    leading: bool,
    removed: bool,
) -> Mode {
    let member = voters.iter().chain(learners).any(|m| m.name == me);
    if voters.is_empty() || !member || removed {
        return Mode::Dormant;
    }
    let visible = voters.iter().filter(|v| v.name == me || live.contains_key(&v.name)).count();
    if visible * 2 <= voters.len() {
        Mode::Dormant
    } else if leading {
        Mode::Leader
    } else {
        Mode::Follower
    }
}

/// How long a live node must look like a member of another cluster before it counts as
/// one: long enough for this node to apply a membership change the leader has made (the
/// added node is a member on its side first).
fn foreign_after(gossip_interval: Duration) -> Duration {
    (gossip_interval * 15).max(Duration::from_secs(5))
}

/// What membership works with.
pub struct MembershipDeps {
    /// This node's name.
    pub name: String,
    pub raft: openraft::Raft<Control>,
    pub sm: StateMachine,
    pub registry: Arc<Registry>,
    pub gossip: Arc<Gossip>,
    pub gossip_interval: Duration,
    /// How many members vote (a bootstrap takes up to this many).
    pub voters: usize,
    /// How many joining nodes must see each other before a brand-new cluster forms.
    pub bootstrap_expect: usize,
    /// This node's formation id (made when it bootstraps a cluster).
    pub formation: Arc<Formation>,
}

/// The mode loop's state, shared with [`Membership`].
struct Inner {
    name: String,
    raft: openraft::Raft<Control>,
    sm: StateMachine,
    registry: Arc<Registry>,
    gossip: Arc<Gossip>,
    gossip_interval: Duration,
    voters: usize,
    bootstrap_expect: usize,
    formation: Arc<Formation>,
    live: Arc<LiveView>,
    mode: RwLock<Mode>,
    started: Instant,
    /// Warnings about a cluster with another partition count, and why a bootstrap waits
    /// (once in a while).
    mismatch_log: crate::ratelog::RateLimited,
    /// Live nodes that are members of another cluster.
    foreign: ForeignNodes,
    /// When this node's Raft last heard from the cluster, and whether it is out of touch
    /// (`contact.rs`).
    contact: RaftContact,
}

/// This node's membership view and the task keeping it current.
pub struct Membership {
    inner: Arc<Inner>,
    tasks: Tasks,
}

impl Membership {
    pub fn spawn(deps: MembershipDeps, stop: watch::Receiver<bool>) -> Membership {
        let MembershipDeps { name, raft, sm, registry, gossip, gossip_interval, voters, bootstrap_expect, formation } =
            deps;
        let inner = Arc::new(Inner {
            name,
            raft,
            sm,
            registry,
            gossip,
            gossip_interval,
            voters,
            bootstrap_expect,
            formation,
            live: Default::default(),
            mode: RwLock::new(Mode::Dormant),
            started: Instant::now(),
            mismatch_log: crate::ratelog::RateLimited::new(Duration::from_secs(30)),
            foreign: ForeignNodes::new(foreign_after(gossip_interval)),
            contact: RaftContact::default(),
        });
        let tasks = Tasks::new();
        tasks.spawn(inner.clone().run(stop));
        Membership { inner, tasks }
    }

    /// Stop the mode loop, then gossip.
    pub async fn shutdown(&self) {
        self.tasks.shutdown().await;
        self.inner.gossip.shutdown().await;
    }

    pub fn mode(&self) -> Mode {
        *self.inner.mode.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The gossip view (shared: the Service Manager and routing read it too).
    pub fn live(&self) -> &Arc<LiveView> {
        &self.inner.live
    }

    pub fn gossip(&self) -> &Arc<Gossip> {
        &self.inner.gossip
    }

    /// Gossip counters (sealed packets dropped by reason, restarts).
    pub fn gossip_stats(&self) -> &GossipStats {
        &self.inner.gossip.stats
    }

    /// Live nodes that have been members of another cluster for a while (`foreign.rs`),
    /// by name.
    pub fn foreign(&self) -> Vec<String> {
        self.inner.foreign.current()
    }

    /// A leader's Raft message was accepted here (`peer.rs`).
    pub fn heard_from_leader(&self) {
        self.inner.contact.heard_from_leader(Instant::now());
    }

    /// Why this node is dormant though gossip shows it a majority: its Raft has been out
    /// of touch with the cluster for a while (`contact.rs`).
    pub fn out_of_touch(&self) -> Option<String> {
        self.inner.contact.lost().map(|l| l.to_string())
    }

    /// Since this node started.
    pub fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }
}

impl Inner {
    /// `mode` as gossip decided it, made dormant while this node's Raft is out of touch
    /// with the cluster (`contact.rs`); says so when that starts and ends.
    fn in_touch(&self, mode: Mode, voters: usize, elected: bool, quorum_ack: Option<Duration>) -> Mode {
        let held = match mode {
            Mode::Leader if voters >= 2 => Held::Leading,
            Mode::Follower => Held::Following { elected },
            _ => Held::Other,
        };
        let was = self.contact.lost();
        let lost = self.contact.check(Instant::now(), held, quorum_ack);
        match (was, lost) {
            (None, Some(l)) => tracing::error!("this node turns dormant: {l}"),
            (Some(_), None) if held != Held::Other => {
                tracing::info!("this node's Raft is in touch with the cluster again")
            }
            _ => {}
        }
        if lost.is_some() { Mode::Dormant } else { mode }
    }

    async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut removed_shutdown = false;
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(tick(self.gossip_interval)) => {}
            }
            // A view from gossip that is not running is frozen: serve nothing on it. (A
            // view that cannot be read within a second counts as frozen too.)
            let view = match self.gossip.running() {
                true => tokio::time::timeout(Duration::from_secs(1), self.gossip.live()).await.ok(),
                false => None,
            };
            let gossiping = view.is_some();
            let live = view.unwrap_or_default();
            self.live.set(live.clone());
            let (voters, learners) = members(&self.raft);
            let state = self.sm.current();
            let removed = state.state.removed.contains(&self.name);
            let (leading, elected, quorum_ack) = {
                let metrics = self.raft.metrics();
                let m = metrics.borrow();
                let ack = m.millis_since_quorum_ack.map(Duration::from_millis);
                (m.current_leader == Some(raft_id(&self.name)), m.current_leader.is_some(), ack)
            };
            let mode = match gossiping {
                true => decide_mode(&self.name, &voters, &learners, &live, leading, removed),
                false => Mode::Dormant,
            };
            let mode = self.in_touch(mode, voters.len(), elected, quorum_ack);
            let old = std::mem::replace(&mut *self.mode.write().unwrap_or_else(|e| e.into_inner()), mode);
            if old != mode && gossiping {
                tracing::info!(from = old.as_str(), to = mode.as_str(), "node mode changed");
            } else if old != mode {
                tracing::warn!(from = old.as_str(), "node is dormant: its gossip is not running");
            }
            if !gossiping {
                continue;
            }
            let members = voters.iter().chain(&learners).map(|m| m.name.as_str()).collect();
            let mine = self.formation.id();
            self.foreign.observe(&self.name, mine.as_deref(), &members, &state.state.removed, &live, Instant::now());
            drop(state);
            let rebuilt = self.registry.grid().replicas().is_rebuilt();
            // A rebuilt node neither campaigns nor votes (see `peer.rs`): its own vote
            // would count too.
            self.raft.runtime_config().elect(!rebuilt);
            if rebuilt && learners.iter().any(|m| m.name == self.name) && !self.in_sync_anywhere() {
                self.rebuilt_done().await;
            }
            let shown = match (rebuilt, voters.is_empty()) {
                (true, _) => REBUILDING,
                (false, true) => JOINING,
                (false, false) => mode.as_str(),
            };
            self.gossip.publish(KEY_MODE, shown).await;
            if let Some(formation) = self.formation.id() {
                self.gossip.publish(KEY_FORMATION, &formation).await;
            }
            let load: u32 = self.registry.list().iter().map(|s| s.gate().running).sum();
            self.gossip.publish(KEY_LOAD, &load.to_string()).await;
            if voters.is_empty() {
                self.partitions_differ(&live);
                self.maybe_bootstrap(&live).await;
            }
            if removed && !removed_shutdown {
                // A decommissioned node must not disturb the cluster with elections.
                tracing::warn!("this node was removed from the cluster; stopping its Raft member");
                if let Err(e) = self.raft.shutdown().await {
                    tracing::warn!(error = %e, "stopping the removed node's Raft member failed");
                }
                removed_shutdown = true;
            }
        }
    }

    /// Whether the committed partition table counts this node in sync as a backup of any
    /// partition (a rebuilt node keeps its mark until none: see `PartitionManager`).
    fn in_sync_anywhere(&self) -> bool {
        let state = self.sm.current();
        state.state.grid.parts.iter().any(|i| i.primary != self.name && i.isr.contains(&self.name))
    }

    /// The leader made this rebuilt node a learner and dropped it from every in-sync set:
    /// from here on it is a learner like any other (caught up, it is promoted again and
    /// its partitions' primaries count it in sync again), so the mark goes.
    async fn rebuilt_done(&self) {
        let grid = self.registry.grid();
        let clear = grid
            .blocking(|s| {
                use crate::grid::{BatchOp, Durability, Table};
                s.write(vec![BatchOp::Delete(Table::Meta, crate::grid::REBUILT_KEY.to_vec())], Durability::Synced)
            })
            .await;
        match clear {
            Ok(()) => {
                grid.replicas().set_rebuilt(false);
                tracing::info!("rebuilt store: this node is a learner now and votes again once promoted");
            }
            Err(e) => tracing::error!(error = %e, "could not clear the rebuilt mark"),
        }
    }

    /// While this node waits to join: say so when the cluster's nodes run another partition
    /// count (the leader will not add it).
    fn partitions_differ(&self, live: &BTreeMap<String, PeerInfo>) {
        let count = self.registry.grid().replicas().count();
        let Some(p) = live.values().find(|p| p.mode != JOINING && p.id != self.name && p.partitions != count) else {
            return;
        };
        if self.mismatch_log.allow("joining").is_some() {
            tracing::error!(
                "this node's grid has {count} partitions but the cluster's has {} (as {} says): it cannot join; \
                 restart it with --partitions {} and an empty --data-dir",
                p.partitions,
                p.id,
                p.partitions
            );
        }
    }

    /// A brand-new cluster: once gossip has settled, the node with the smallest name among
    /// nodes that are all still joining initialises Raft with up to `voters` of them, once
    /// it sees `bootstrap_expect` of them (see [`bootstrap_plan`]).
    async fn maybe_bootstrap(&self, live: &BTreeMap<String, PeerInfo>) {
        let settle = (self.gossip_interval * 10).max(Duration::from_secs(2));
        if self.started.elapsed() < settle {
            return;
        }
        let count = self.registry.grid().replicas().count();
        let members = match bootstrap_plan(&self.name, live, count, self.voters, self.bootstrap_expect) {
            Bootstrap::NotThisNode => return,
            Bootstrap::Waiting(seen) => {
                if self.mismatch_log.allow("bootstrap").is_some() {
                    tracing::info!(
                        seen = ?seen,
                        expect = self.bootstrap_expect,
                        "waiting for {} nodes to form a new cluster (--bootstrap-expect); seeing {}",
                        self.bootstrap_expect,
                        seen.len()
                    );
                }
                return;
            }
            Bootstrap::Start(members) => members,
        };
        let names: Vec<String> = members.values().map(|m| m.name.clone()).collect();
        // Its Raft messages carry the new formation's id from the first (the vote).
        match self.formation.bootstrap(self.raft.initialize(members)).await {
            Ok(formation) => tracing::info!(voters = ?names, formation, "bootstrapped a new cluster"),
            Err(e) => tracing::debug!(error = %e, "bootstrap skipped"),
        }
    }
}

/// What a joining node does about a brand-new cluster, from gossip's live view.
#[derive(Debug, PartialEq)]
enum Bootstrap {
    /// A cluster exists (its leader adds this node), or another node has a smaller name.
    NotThisNode,
    /// Fewer than `bootstrap_expect` joining nodes of this node's partition count are
    /// visible (those it sees): forming now could split the cluster, since nodes that
    /// cannot see this one yet would bootstrap their own.
    Waiting(Vec<String>),
    /// Initialise Raft with these voters.
    Start(BTreeMap<u64, Member>),
}

/// The bootstrap rule: only when every visible node is still joining, only once `expect`
/// of those with this node's partition `count` are visible (the others are told), only by
/// the smallest name, and with up to `voters` of them.
fn bootstrap_plan(me: &str, live: &BTreeMap<String, PeerInfo>, count: u32, voters: usize, expect: usize) -> Bootstrap {
    if live.values().any(|p| p.id != me && p.mode != JOINING) {
        return Bootstrap::NotThisNode;
    }
    let candidates: Vec<&PeerInfo> = live.values().filter(|p| p.partitions == count).collect();
    if candidates.len() < expect {
        return Bootstrap::Waiting(candidates.iter().map(|p| p.id.clone()).collect());
    }
    if live.keys().next().map(String::as_str) != Some(me) {
        return Bootstrap::NotThisNode;
    }
    let members = candidates
        .into_iter()
        .take(voters)
        .map(|p| (raft_id(&p.id), Member { name: p.id.clone(), peer: p.peer.clone() }))
        .collect();
    Bootstrap::Start(members)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn members(names: &[&str]) -> Vec<Member> {
        names.iter().map(|n| Member { name: n.to_string(), peer: String::new() }).collect()
    }

    fn live(names: &[&str]) -> BTreeMap<String, PeerInfo> {
        names.iter().map(|n| (n.to_string(), PeerInfo { id: n.to_string(), ..Default::default() })).collect()
    }

    /// Joining nodes of partition count 256, `other` with another count.
    fn joining(names: &[&str], other: &[&str]) -> BTreeMap<String, PeerInfo> {
        let mut view = live(names);
        for p in view.values_mut() {
            p.mode = JOINING.into();
            p.partitions = if other.contains(&p.id.as_str()) { 64 } else { 256 };
        }
        view
    }

    fn started_with(plan: Bootstrap) -> Vec<String> {
        match plan {
            Bootstrap::Start(m) => m.into_values().map(|m| m.name).collect::<BTreeSet<_>>().into_iter().collect(),
            other => panic!("no bootstrap: {other:?}"),
        }
    }

    #[test]
    fn a_new_cluster_forms_once_the_expected_nodes_see_each_other() {
        let view = joining(&["n1", "n2", "n3", "n4"], &[]);
        // The smallest name bootstraps, with up to `voters` of them.
        assert_eq!(started_with(bootstrap_plan("n1", &view, 256, 3, 3)), ["n1", "n2", "n3"]);
        assert_eq!(bootstrap_plan("n2", &view, 256, 3, 3), Bootstrap::NotThisNode);
        // Two of three expected: wait, saying whom it sees; with 1 expected a lone node starts.
        let two = joining(&["n1", "n2"], &[]);
        for me in ["n1", "n2"] {
            assert_eq!(bootstrap_plan(me, &two, 256, 3, 3), Bootstrap::Waiting(vec!["n1".into(), "n2".into()]));
        }
        assert_eq!(started_with(bootstrap_plan("n1", &joining(&["n1"], &[]), 256, 3, 1)), ["n1"]);
        // A node of another partition count does not count towards the expected nodes.
        let mixed = joining(&["n1", "n2", "n3"], &["n3"]);
        assert_eq!(bootstrap_plan("n1", &mixed, 256, 3, 3), Bootstrap::Waiting(vec!["n1".into(), "n2".into()]));
        assert_eq!(started_with(bootstrap_plan("n1", &mixed, 256, 3, 2)), ["n1", "n2"]);
        // A node that already serves: a cluster exists, its leader adds the rest.
        let mut formed = joining(&["n1", "n2", "n3"], &[]);
        formed.get_mut("n2").unwrap().mode = Mode::Leader.as_str().into();
        assert_eq!(bootstrap_plan("n1", &formed, 256, 3, 1), Bootstrap::NotThisNode);
    }

    #[test]
    fn modes_follow_the_visible_majority() {
        let v = members(&["n1", "n2", "n3"]);
        let none = members(&[]);
        // Sees all or two of three: serving.
        assert_eq!(decide_mode("n1", &v, &none, &live(&["n1", "n2", "n3"]), true, false), Mode::Leader);
        assert_eq!(decide_mode("n1", &v, &none, &live(&["n1", "n3"]), false, false), Mode::Follower);
        // Alone of three (even as Raft leader): dormant.
        assert_eq!(decide_mode("n1", &v, &none, &live(&["n1"]), true, false), Mode::Dormant);
        // Two voters: one alone is not a majority.
        let two = members(&["n1", "n2"]);
        assert_eq!(decide_mode("n1", &two, &none, &live(&["n1"]), false, false), Mode::Dormant);
        // A learner counts voters, not itself.
        let l = members(&["n4"]);
        assert_eq!(decide_mode("n4", &v, &l, &live(&["n4", "n1", "n2"]), false, false), Mode::Follower);
        assert_eq!(decide_mode("n4", &v, &l, &live(&["n4", "n1"]), false, false), Mode::Dormant);
        // Not yet a member, no cluster yet, or removed: dormant.
        assert_eq!(decide_mode("n9", &v, &none, &live(&["n1", "n2", "n3", "n9"]), false, false), Mode::Dormant);
        assert_eq!(decide_mode("n1", &none, &none, &live(&["n1"]), false, false), Mode::Dormant);
        assert_eq!(decide_mode("n1", &v, &none, &live(&["n1", "n2", "n3"]), false, true), Mode::Dormant);
    }
}
