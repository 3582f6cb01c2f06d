//! The control loops of a clustered node that are `Cluster`'s own (membership and the
//! mode, the Service Manager, the traffic sampler, the autoscaler and the experiments are
//! owners of their own: [`super::membership`], [`super::service_manager`],
//! [`super::traffic_sampler`], [`super::scaling`], [`super::reprovision`]; the last two
//! reach the cluster through [`super::leader::LeaderOps`], implemented here).
//!
//! - Cluster Manager (leader only): admit new nodes as learners, promote learners up to the
//!   voter count, drop decommissioned nodes, and keep the instance assignment spread over
//!   the serving nodes, odd instances next to their busiest callers.
//! - the grid's table: apply each committed partition table to this node's replicas.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use openraft::ChangeMembers;
use tokio::sync::watch;

use super::experiment::Change;
use super::gossip::PeerInfo;
use super::membership::{JOINING, REBUILDING};
use super::placement::{hold_until_ready, place};
use super::store::Stored;
use super::traffic::Affinity;
use super::types::{Assignment, Command, Member, raft_id};
use super::{Cluster, ClusterError, Mode};

impl Cluster {
    /// Run the control loops until `stop` turns true. The loops are this future's own
    /// tasks: they end with `stop`, and are aborted if the future is dropped first.
    pub async fn run(self: Arc<Self>, stop: watch::Receiver<bool>) {
        let mut loops = tokio::task::JoinSet::new();
        loops.spawn(self.clone().grid_loop(stop.clone()));
        loops.spawn(self.leader_loop(stop));
        while loops.join_next().await.is_some() {}
    }

    async fn leader_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        // A new service is placed as soon as this node has loaded it (after its Service
        // Manager's pass), not at the next tick: a deploy waits for its placement
        // (`ready.rs`). Other passes wait for the tick: a step at every pass (a count
        // trial switches every 2 s) made the trial in
        // `cluster::barrier_wait::..._after_a_switchback_trial` judge its arms wrongly.
        let mut passes = self.services.passes();
        let mut tick = tokio::time::interval(super::membership::tick(self.config.gossip_interval) * 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tick.tick() => {}
                pass = passes.changed() => {
                    if pass.is_err() || !self.unplaced() {
                        continue;
                    }
                }
            }
            if self.mode() != Mode::Leader {
                continue;
            }
            if let Err(e) = self.manage().await {
                tracing::debug!(error = %e, "cluster manager step failed; retrying");
            }
        }
    }

    /// Whether a service with instances that this node has loaded has no placement yet.
    fn unplaced(&self) -> bool {
        let stored = self.sm.current();
        let state = &stored.state;
        state.services.iter().any(|(name, spec)| {
            spec.instances > 0
                && !state.assignment.contains_key(name)
                && self.registry.get(name).is_some_and(|s| &s.current().spec == spec)
        })
    }

    /// Whether `node` answers at `addr` with its own certificate (a TLS handshake that
    /// verifies it): only then is the address used for membership.
    async fn proven(&self, node: &str, addr: &str) -> bool {
        match self.peers.confirm(node, addr, Duration::from_secs(2)).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(%node, %addr, error = %e, "gossip names an address for a node that did not prove it there; not using it");
                false
            }
        }
    }

    /// One Cluster Manager step; each membership change waits for the previous one.
    async fn manage(&self) -> anyhow::Result<()> {
        let (voters, learners) = self.members();
        let view = StepView { live: self.live(), stored: self.sm.current(), voters, learners };
        if self.change_members(&view).await? {
            return Ok(());
        }
        if !self.assign(&view).await? {
            return Ok(());
        }
        let StepView { live, stored, voters, learners } = &view;
        let removed = &stored.state.removed;

        // The grid's partitions live on every member that has not been removed or is
        // being drained (a drained node keeps serving its replicas until others hold them).
        let mut members: Vec<String> = voters
            .iter()
            .chain(learners)
            .map(|m| m.name.clone())
            .filter(|n| !removed.contains(n) && !stored.state.draining.contains(n))
            .collect();
        members.sort();
        self.partitions.step(self, live, &members, removed).await
    }

    /// The membership part of a step: at most one Raft membership change (true when one
    /// was made: the step ends there), and new nodes admitted as learners.
    async fn change_members(&self, view: &StepView) -> anyhow::Result<bool> {
        let StepView { live, stored, voters, learners } = view;
        let removed = &stored.state.removed;
        let is_member = |n: &str| view.is_member(n);

        // A voter whose store was rebuilt lost its vote: it becomes a learner (and is
        // promoted again below once it has caught up and stopped rebuilding).
        let rebuilding: BTreeSet<u64> = voters
            .iter()
            .filter(|m| m.name != self.name && live.get(&m.name).is_some_and(|p| p.mode == REBUILDING))
            .map(|m| raft_id(&m.name))
            .collect();
        if !rebuilding.is_empty() {
            self.raft.change_membership(ChangeMembers::RemoveVoters(rebuilding), true).await?;
            tracing::info!("made voters with rebuilt stores learners");
            return Ok(true);
        }
        if self.drop_other_formations(view).await? {
            return Ok(true);
        }
        // Promote learners while fewer than `voters` voters are kept (not decommissioned).
        // Promoting before removing keeps the live nodes a majority of every
        // configuration on the way, and the voter count never dips.
        let kept = voters.iter().filter(|m| !removed.contains(&m.name)).count();
        if kept < self.config.voters {
            // Only learners that have taken this leader's entries: one that follows another
            // formation (it refuses them) made a voter would stall every later change.
            let replication = self.raft.metrics().borrow().replication.clone().unwrap_or_default();
            let acked = |m: &Member| replication.get(&raft_id(&m.name)).is_some_and(|matched| matched.is_some());
            let ready: BTreeSet<u64> = learners
                .iter()
                .filter(|m| !removed.contains(&m.name) && !stored.state.draining.contains(&m.name))
                .filter(|m| live.get(&m.name).is_some_and(|p| p.mode == Mode::Follower.as_str()) && acked(m))
                .take(self.config.voters - kept)
                .map(|m| raft_id(&m.name))
                .collect();
            if !ready.is_empty() {
                self.raft.change_membership(ChangeMembers::AddVoterIds(ready), false).await?;
                tracing::info!("promoted learners to voters");
                return Ok(true);
            }
        }
        if let Some(name) = removed.iter().find(|n| is_member(n)) {
            let id = BTreeSet::from([raft_id(name)]);
            if voters.iter().any(|m| &m.name == name) {
                self.raft.change_membership(ChangeMembers::RemoveVoters(id.clone()), false).await?;
            }
            self.raft.change_membership(ChangeMembers::RemoveNodes(id), false).await?;
            tracing::info!(node = %name, "removed node from the cluster");
            return Ok(true);
        }
        // A member restarted with another peer address: update it so Raft reaches it, once
        // a TLS handshake there proved the address is that node's (gossip alone is not
        // enough: it could carry a wrong address).
        let mut moved: BTreeMap<u64, Member> = BTreeMap::new();
        for m in voters.iter().chain(learners) {
            let Some(p) = live.get(&m.name).filter(|p| p.peer != m.peer) else { continue };
            if self.proven(&p.id, &p.peer).await {
                moved.insert(raft_id(&m.name), Member { name: m.name.clone(), peer: p.peer.clone() });
            }
        }
        if !moved.is_empty() {
            tracing::info!(nodes = ?moved.values().map(|m| m.to_string()).collect::<Vec<_>>(), "updating member addresses");
            self.raft.change_membership(ChangeMembers::SetNodes(moved), true).await?;
            return Ok(true);
        }
        self.admit_learners(view).await?;
        Ok(false)
    }

    /// Learners that refused this leader's Raft messages as another formation's (one that
    /// saw two clusters and joined the other first) leave the configuration: they would
    /// never acknowledge an entry, and made voters they would stall every later change.
    /// Back outside it, they show as foreign. A voter that refuses is only logged: it was
    /// this formation's member, so something else is wrong.
    async fn drop_other_formations(&self, view: &StepView) -> anyhow::Result<bool> {
        let refused = self.formation.refusing();
        let names: Vec<&str> =
            view.learners.iter().filter(|m| refused.contains(&m.name)).map(|m| m.name.as_str()).collect();
        let voters: Vec<&str> =
            view.voters.iter().filter(|m| refused.contains(&m.name)).map(|m| m.name.as_str()).collect();
        if !voters.is_empty() && self.mismatch_log.allow("voter-formation").is_some() {
            tracing::error!(nodes = ?voters, "voters refuse this leader's Raft messages as another formation's");
        }
        if names.is_empty() {
            return Ok(false);
        }
        let gone: BTreeSet<u64> = names.iter().map(|n| raft_id(n)).collect();
        self.raft.change_membership(ChangeMembers::RemoveNodes(gone), false).await?;
        tracing::warn!(nodes = ?names, "removed learners that follow another formation of the cluster");
        Ok(true)
    }

    /// Nodes gossip shows joining, with this cluster's partition count and peer protocol
    /// and an address a TLS handshake proved theirs, join as learners; so do nodes that
    /// lost their admission (see [`lost_admission`]).
    /// None while nodes of another cluster are live: a node that sees both clusters would
    /// be added by both leaders, and each one's Raft messages would overrule the other's.
    async fn admit_learners(&self, view: &StepView) -> anyhow::Result<()> {
        let removed = &view.stored.state.removed;
        let count = self.registry.grid().replicas().count();
        let mine = self.formation.id();
        let lost = |p: &PeerInfo| lost_admission(p, mine.as_deref());
        let joining = view
            .live
            .values()
            .filter(|p| (p.mode == JOINING || lost(p)) && !view.is_member(&p.id) && !removed.contains(&p.id));
        // A node that refused this leader's messages recently is not taken again at once.
        let refusing = self.formation.refusing();
        let joining = joining.filter(|p| !refusing.contains(&p.id));
        let foreign = self.membership.foreign();
        if !foreign.is_empty() {
            let waiting: Vec<&str> = joining.map(|p| p.id.as_str()).collect();
            if !waiting.is_empty() && self.mismatch_log.allow("join-foreign").is_some() {
                tracing::warn!(
                    nodes = ?waiting,
                    "not adding {} to the cluster while nodes of another cluster are live ({}): it would become \
                     a member of both. Mend the split first (the error about members of another cluster says how)",
                    waiting.join(", "),
                    foreign.join(", ")
                );
            }
            return Ok(());
        }
        for p in joining {
            if p.partitions != count {
                if self.mismatch_log.allow("join").is_some() {
                    tracing::warn!(
                        node = %p.id,
                        "not adding {} to the cluster: its grid has {} partitions, the cluster's {}; restart it with \
                         --partitions {count} and an empty --data-dir",
                        p.id,
                        p.partitions,
                        count
                    );
                }
                continue;
            }
            if p.protocol != Some(crate::transport::PROTOCOL) {
                if self.mismatch_log.allow("join-protocol").is_some() {
                    let theirs = p.protocol.map_or("none".to_string(), |n| n.to_string());
                    tracing::warn!(
                        node = %p.id,
                        "not adding {} to the cluster: it runs nanogrid {} (peer protocol {theirs}), this node {} \
                         (peer protocol {}); run one nanogrid release on every node",
                        p.id,
                        if p.release.is_empty() { "of an older release" } else { &p.release },
                        env!("CARGO_PKG_VERSION"),
                        crate::transport::PROTOCOL
                    );
                }
                continue;
            }
            if !self.proven(&p.id, &p.peer).await {
                continue;
            }
            let member = Member { name: p.id.clone(), peer: p.peer.clone() };
            let again = lost(p);
            if again {
                tracing::warn!(
                    node = %p.id,
                    mode = %p.mode,
                    "{} follows this cluster but is outside its configuration (a leader that added it lost its \
                     place before the change was committed); adding it again",
                    p.id
                );
            }
            self.raft.add_learner(raft_id(&p.id), member, false).await?;
            tracing::info!(node = %p.id, again, "added node as a learner");
        }
        Ok(())
    }

    /// The placement part of a step: write the instance assignment when it should change.
    /// False when the step started an experiment instead (it places nothing then).
    async fn assign(&self, view: &StepView) -> anyhow::Result<bool> {
        let StepView { live, stored, .. } = view;
        let serving = self.placeable_nodes(&stored.state, live, |n| view.is_member(n));
        // Place only what this node has loaded at its committed version (it must know
        // whether a service keeps kv state); others keep their rows until it has.
        let loaded: BTreeMap<String, crate::services::ServiceSpec> = stored
            .state
            .services
            .iter()
            .filter(|(n, spec)| self.registry.get(n).is_some_and(|s| &s.current().spec == *spec))
            .map(|(n, spec)| (n.clone(), spec.clone()))
            .collect();
        // Traffic-driven moves go through experiments: what placement starts from and the
        // hot pairs it may act on; a step that starts an experiment places nothing.
        let step = super::reprovision::StepInputs {
            loaded: &loaded,
            serving: &serving,
            traffic: &self.traffic,
            load_of: &|service: &str| self.autoscaling.load_of(service),
            node_instances: self.config.scaling.node_instances,
        };
        let Some((start, affinity)) = self.experiments.reprovision(self, step, &stored.state).await? else {
            return Ok(false);
        };
        let mut next = place(&loaded, &serving, &start, &affinity);
        let experiments = &stored.state.experiments;
        super::experiment::add_trials(&mut next, experiments, &serving);
        let runs = |node: &str, service: &str| live.get(node).is_some_and(|p| p.services.iter().any(|s| s == service));
        hold_until_ready(&stored.state.assignment, &mut next, runs);
        for (name, row) in &stored.state.assignment {
            if !loaded.contains_key(name) {
                next.insert(name.clone(), row.clone());
            }
        }
        if next != stored.state.assignment {
            tracing::info!(nodes = ?serving, "assigning instances");
            let mut events = super::placement::moves(&stored.state.assignment, &next, &serving);
            for ev in &mut events {
                if let Some(e) = ev.service.as_deref().and_then(|s| experiments.active_for(s)) {
                    ev.reason = match (e.change, e.phase_new) {
                        (Change::Colocate, _) => {
                            format!("experiment {}: an instance on {} beside the old arrangement", e.id, e.node)
                        }
                        (Change::AddInstance { .. }, true) => format!("experiment {}: one more on {}", e.id, e.node),
                        (Change::AddInstance { .. }, false) => {
                            format!("experiment {}: back to the old count on {}", e.id, e.node)
                        }
                    };
                }
            }
            // Only the rows that changed go into the log.
            let changes = super::placement::changed_rows(&stored.state.assignment, &next);
            let base = stored.state.assign_version;
            self.raft.client_write(Command::AssignChanges { changes, events, base }).await?;
            self.announce_commit().await;
        }
        Ok(true)
    }
}

impl Cluster {
    /// Whether placement may give `p` instances: a member (`member`), not removed or
    /// draining, and serving as gossip shows it (this node always counts as serving).
    pub(super) fn may_place_on(&self, state: &super::types::ControlState, p: &PeerInfo, member: bool) -> bool {
        member
            && !state.removed.contains(&p.id)
            && !state.draining.contains(&p.id)
            && (p.id == self.name || p.mode == Mode::Follower.as_str() || p.mode == Mode::Leader.as_str())
    }

    /// The nodes placement uses, sorted: members (`is_member`) that gossip shows serving
    /// (this node counts as serving), neither removed nor draining.
    fn placeable_nodes(
        &self,
        state: &super::types::ControlState,
        live: &BTreeMap<String, PeerInfo>,
        is_member: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        let mut nodes: Vec<String> =
            live.values().filter(|p| self.may_place_on(state, p, is_member(&p.id))).map(|p| p.id.clone()).collect();
        nodes.sort();
        nodes
    }

    /// On the leader, about to commit `cmd`: a new service's spec goes into the log with
    /// its first placement, as one entry (see [`Command::Several`]), where otherwise the
    /// Cluster Manager would place it in a second commit after this node loaded it. The
    /// rule is [`place`]'s, over the nodes a step would use; a new service has no calls
    /// yet, so no affinity. Any other command (a redeploy, a scale) is returned as it is.
    pub(super) fn with_first_placement(&self, cmd: Command) -> Command {
        let Command::PutService { spec } = &cmd else { return cmd };
        let stored = self.sm.current();
        let state = &stored.state;
        if state.services.contains_key(&spec.name) || state.assignment.contains_key(&spec.name) {
            return cmd;
        }
        let members = self.member_names();
        let serving = self.placeable_nodes(state, &self.live(), |n| members.contains(n));
        let new = BTreeMap::from([(spec.name.clone(), (**spec).clone())]);
        let none = Assignment::new();
        let next = place(&new, &serving, &none, &Affinity::new());
        let Some(row) = next.get(&spec.name) else { return cmd };
        let changes = vec![(spec.name.clone(), Some(row.clone()))];
        let events = super::placement::moves(&none, &next, &serving);
        let placed = Command::AssignChanges { changes, events, base: state.assign_version };
        Command::Several { cmds: vec![cmd, placed] }
    }
}

/// Whether `p` lost its admission: it holds this node's formation id `mine` and gossips a
/// member's mode (leader, follower, dormant) or a rebuilt store's, though the caller found
/// it outside the configuration. A leader appended the change that added it as a learner
/// and replicated it there, then lost its place before the change was committed (cut off
/// from the voters, or stopped); the next leader never had the change. The node's own log
/// still names it a member, so it no longer gossips `joining`, and nothing else would
/// ever add it: it would wait outside, dormant or following no one, for good.
fn lost_admission(p: &PeerInfo, mine: Option<&str>) -> bool {
    p.mode != JOINING && mine.is_some() && p.formation.as_deref() == mine
}

impl super::leader::LeaderOps for Cluster {
    fn node(&self) -> &str {
        &self.name
    }

    fn leading(&self) -> bool {
        self.mode() == Mode::Leader
    }

    fn committed(&self) -> Arc<Stored> {
        self.sm.current()
    }

    fn live(&self) -> BTreeMap<String, PeerInfo> {
        Cluster::live(self)
    }

    fn members(&self) -> (Vec<Member>, Vec<Member>) {
        Cluster::members(self)
    }

    fn voters(&self) -> usize {
        self.config.voters
    }

    fn commit(&self, cmd: Command) -> BoxFuture<'_, Result<(), ClusterError>> {
        Box::pin(async move {
            self.raft.client_write(cmd).await.map(|_| ()).map_err(|e| ClusterError::Internal(e.to_string()))
        })
    }

    fn write(&self, cmd: Command) -> BoxFuture<'_, Result<(), ClusterError>> {
        Box::pin(Cluster::write(self, cmd))
    }

    fn peers(&self) -> &crate::transport::PeerClient {
        &self.peers
    }

    fn registry(&self) -> &Arc<crate::services::Registry> {
        &self.registry
    }

    fn member_names(&self) -> BTreeSet<String> {
        Cluster::member_names(self)
    }
}

impl super::traffic_sampler::TrafficSource for Cluster {
    fn leading(&self) -> bool {
        self.mode() == Mode::Leader
    }

    fn graphs(&self) -> futures::future::BoxFuture<'_, Vec<(String, Vec<crate::services::calls::EdgeReport>)>> {
        Box::pin(self.graph_by_node())
    }
}

/// What one Cluster Manager step reads, taken once at its start: the gossip view, the
/// committed state and Raft's configuration.
struct StepView {
    live: BTreeMap<String, PeerInfo>,
    stored: Arc<Stored>,
    voters: Vec<Member>,
    learners: Vec<Member>,
}

impl StepView {
    fn is_member(&self, node: &str) -> bool {
        self.voters.iter().chain(&self.learners).any(|m| m.name == node)
    }
}

#[cfg(test)]
mod tests {
    use super::{JOINING, PeerInfo, REBUILDING, lost_admission};

    fn peer(mode: &str, formation: Option<&str>) -> PeerInfo {
        PeerInfo { id: "n4".into(), mode: mode.into(), formation: formation.map(str::to_string), ..Default::default() }
    }

    #[test]
    fn a_node_of_this_formation_that_gossips_a_members_mode_lost_its_admission() {
        for mode in ["follower", "dormant", "leader", REBUILDING] {
            assert!(lost_admission(&peer(mode, Some("f-1")), Some("f-1")), "{mode}");
        }
        // Joining is admitted as such; another formation's node is foreign, not lost; a
        // node without an id, or a leader without one (an earlier release's cluster),
        // cannot be told from a member of some other cluster.
        assert!(!lost_admission(&peer(JOINING, Some("f-1")), Some("f-1")));
        assert!(!lost_admission(&peer("follower", Some("f-2")), Some("f-1")));
        assert!(!lost_admission(&peer("follower", None), Some("f-1")));
        assert!(!lost_admission(&peer("follower", None), None));
    }
}
