//! The cluster's side of the data grid: how the grid reaches other nodes ([`GridNet`]),
//! every node taking up the roles the committed partition table gives it, and the
//! leader's Partition Manager: it places partitions (rendezvous hashing over members),
//! drops dead replicas from in-sync sets, promotes a new primary when one is lost (after
//! fencing a majority of the replicas, choosing the most up-to-date), adds replicas on
//! joining nodes and removes surplus ones once the new ones are in sync.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::watch;

use super::types::Command;
use super::views::{GridRow, GridShare, GridView};
use super::{Cluster, PeerInfo};
use crate::grid::part::{self, PartInfo, PartitionTable};
use crate::grid::replica::{Net, NetError, Replicas};
use crate::grid::wire::{FenceReply, FenceReq, GridReply, GridRequest, GridRpc, PartStatus, StatusReq};
use crate::transport::{Codec, PeerRpc, PeerTarget, RpcError};

impl PeerRpc for GridRequest {
    const PATH: &'static str = "/grid";
    const CODEC: Codec = Codec::Postcard;
    /// Replies carry kv values and key lists; snapshot chunks go the other way.
    const MAX_REPLY: usize = 64 << 20;
    type Reply = GridReply;
}

/// Serve a grid request that arrived on the peer listener.
pub async fn serve_grid(replicas: &Arc<Replicas>, req: GridRequest) -> GridReply {
    replicas.serve(req).await
}

impl From<RpcError> for NetError {
    fn from(e: RpcError) -> Self {
        match e {
            RpcError::NotSent { .. } => NetError::NotSent(e.to_string()),
            other => NetError::Failed(other.to_string()),
        }
    }
}

/// Replicas being added at once (each catches up from a snapshot plus the log tail).
const MAX_ADDING: usize = 64;
/// Primaries moved per step (each fails the writes in flight on its partition).
const MAX_TRANSFERS: usize = 16;
/// Manager steps between checks that named primaries are serving (about 3 s).
const STUCK_CHECK_EVERY: u64 = 10;
const GRID_RPC_TIMEOUT: Duration = Duration::from_secs(8);

/// The grid's view of the network: other nodes by name, and the control plane.
pub struct GridNet(pub Weak<Cluster>);

impl GridNet {
    /// Commit a primary's report in the background (it is repeated if it does not land).
    fn propose(&self, cmd: Command) {
        if let Some(c) = self.0.upgrade() {
            tokio::spawn(async move {
                if let Err(e) = c.write(cmd).await {
                    tracing::debug!(error = %e, "could not report a replica's state");
                }
            });
        }
    }
}

impl Net for GridNet {
    fn call<'a>(&'a self, node: &'a str, req: GridRequest) -> BoxFuture<'a, Result<GridReply, NetError>> {
        Box::pin(async move {
            match self.0.upgrade() {
                Some(c) => c.grid_call(node, req).await,
                None => Err(NetError::NotSent("the node is shutting down".into())),
            }
        })
    }

    fn relinquish(&self, partition: u32, epoch: u64) {
        let Some(c) = self.0.upgrade() else { return };
        tokio::spawn(async move {
            // Right after a restart the node may still be dormant: retry until the table
            // has moved on.
            for _ in 0..120 {
                let still =
                    c.sm.current()
                        .state
                        .grid
                        .parts
                        .get(partition as usize)
                        .is_some_and(|i| i.epoch == epoch && i.primary == c.name);
                if !still {
                    return;
                }
                let cmd = Command::GridRelinquish { partition, epoch, node: c.name.clone() };
                if c.write(cmd).await.is_ok() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
    }

    fn in_sync(&self, partition: u32, epoch: u64, node: String) {
        self.propose(Command::GridInSync { partition, epoch, node });
    }

    fn out_of_sync(&self, partition: u32, epoch: u64, node: String) {
        self.propose(Command::GridOutOfSync { partition, epoch, node });
    }
}

impl Cluster {
    /// A grid RPC to `node` (served in-process when it is this node).
    pub async fn grid_call(&self, node: &str, req: GridRequest) -> Result<GridReply, NetError> {
        if node == self.name {
            return Ok(self.registry.grid().replicas().serve(req).await);
        }
        let Some(addr) = self.peer_addr(node) else {
            return Err(NetError::NotSent(format!("{node} is not a live member")));
        };
        Ok(self.peers.call(node, &addr, &req, GRID_RPC_TIMEOUT).await?)
    }

    /// A typed grid RPC to `node`.
    pub async fn grid_rpc<R: GridRpc>(&self, node: &str, req: R) -> Result<R::Reply, NetError> {
        let reply = self.grid_call(node, req.into()).await?;
        R::from_reply(reply).ok_or_else(|| NetError::Failed(format!("{node} answered with a reply of another kind")))
    }

    /// A node's partitions as it reports them.
    async fn grid_status(&self, node: &str) -> Option<Vec<PartStatus>> {
        self.grid_rpc(node, StatusReq).await.ok()
    }

    /// The other node holding the primary of `key` (in `service`'s namespace), if it is
    /// serving and runs `service`.
    pub fn key_holder(&self, service: &str, key: &str) -> Option<PeerTarget> {
        let table = self.registry.grid().replicas().table();
        let p = part::partition_of(&crate::grid::kv_key(service, key), table.count().max(1));
        let primary = &table.parts.get(p as usize)?.primary;
        if *primary == self.name {
            return None;
        }
        if !self.member_names().contains(primary) || self.sm.current().state.removed.contains(primary) {
            return None;
        }
        let live = self.live.read().unwrap_or_else(|e| e.into_inner());
        let peer = live.get(primary).filter(|p| p.mode != super::Mode::Dormant.as_str())?;
        let runs = peer.services.iter().any(|s| s == service) || self.sm.current().state.slots(service, primary) > 0;
        runs.then(|| PeerTarget { node: peer.id.clone(), addr: peer.peer.clone() })
    }

    fn peer_addr(&self, node: &str) -> Option<String> {
        if let Some(p) = self.live.read().unwrap_or_else(|e| e.into_inner()).get(node) {
            return Some(p.peer.clone());
        }
        let (voters, learners) = self.members();
        voters.into_iter().chain(learners).find(|m| m.name == node).map(|m| m.peer)
    }

    /// Every node: take up the roles of each committed partition table.
    pub(super) async fn grid_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut changes = self.sm.subscribe();
        let mut applied = None;
        loop {
            let table = self.sm.current().state.grid.clone();
            if applied != Some(table.version) {
                applied = Some(table.version);
                self.registry.grid().replicas().apply_table(table).await;
            }
            tokio::select! {
                _ = stop.changed() => return,
                _ = changes.changed() => {}
            }
        }
    }

    /// One Partition Manager step (leader only).
    pub(super) async fn manage_grid(
        &self,
        live: &BTreeMap<String, PeerInfo>,
        members: &[String],
        removed: &[String],
    ) -> anyhow::Result<()> {
        let table = self.sm.current().state.grid.clone();
        let rf = self.config.replication.clamp(1, members.len().max(1));
        if table.is_empty() {
            if members.is_empty() {
                return Ok(());
            }
            // This node's count (its data dir's): the cluster's from now on.
            let count = self.registry.grid().replicas().count();
            tracing::info!(nodes = ?members, replication = rf, partitions = count, "placing the grid's partitions");
            let first = part::initial(members, rf, count);
            self.raft.client_write(Command::GridTable { expect: table.version, table: Box::new(first) }).await?;
            return Ok(());
        }
        // A removed node may still answer (it keeps gossiping and serving its replicas
        // until it is stopped), but it is never a partition's primary or replica again:
        // choosing it would put a partition back on it at every step.
        let live: BTreeMap<String, PeerInfo> =
            live.iter().filter(|(n, _)| !removed.contains(n)).map(|(n, p)| (n.clone(), p.clone())).collect();
        let live = &live;
        let is_live = |n: &str| live.contains_key(n);
        if self.grid_ticks.fetch_add(1, std::sync::atomic::Ordering::Relaxed).is_multiple_of(STUCK_CHECK_EVERY) {
            self.find_stuck_primaries(&table, live).await;
        }
        let pending: BTreeSet<u32> = std::mem::take(&mut *self.grid_pending.lock().unwrap_or_else(|e| e.into_inner()));
        let mut next = table.clone();
        next.replication = rf;
        let mut promotions: Vec<(u32, Option<String>)> = Vec::new();
        let mut transfers = 0;
        let mut adding =
            table.parts.iter().filter(|i| i.replicas.iter().any(|n| !i.isr.contains(n) && is_live(n))).count();
        for (p, info) in next.parts.iter_mut().enumerate() {
            let p = p as u32;
            if !is_live(&info.primary) || pending.contains(&p) {
                promotions.push((p, None));
                continue;
            }
            if let Some(to) = plan_replicas(p, info, members, rf, &is_live, &mut adding)
                && transfers < MAX_TRANSFERS
            {
                transfers += 1;
                promotions.push((p, Some(to)));
            }
        }
        let promoted = futures::future::join_all(
            promotions.iter().map(|(p, prefer)| self.promote(*p, &table.parts[*p as usize], prefer.as_deref(), live)),
        )
        .await;
        let mut fenced = BTreeSet::new();
        for ((p, _), info) in promotions.iter().zip(promoted) {
            if let Some(info) = info {
                let keep = &next.parts[*p as usize];
                // Keep this step's replica changes unless the primary itself moved out.
                let replicas =
                    if keep.replicas.contains(&info.primary) { keep.replicas.clone() } else { info.replicas.clone() };
                next.parts[*p as usize] = PartInfo { replicas, ..info };
                fenced.insert(*p);
            }
        }
        if next == table {
            return Ok(());
        }
        // Only the rows that changed go into the log.
        let changes = table.changes_to(&next);
        let cmd = Command::GridChanges { expect: table.version, replication: next.replication, changes };
        let changed = match self.raft.client_write(cmd).await {
            Ok(r) => r.data.changed,
            Err(e) => {
                tracing::debug!(error = %e, "partition table write failed");
                false
            }
        };
        if !changed && !fenced.is_empty() {
            // Replicas were fenced for primaries the table does not name: redo those.
            self.grid_pending.lock().unwrap_or_else(|e| e.into_inner()).extend(fenced);
        } else if !fenced.is_empty() {
            tracing::info!(partitions = fenced.len(), "moved partition primaries");
        }
        Ok(())
    }

    /// Partitions whose named primary is live but not acting as primary (it was fenced by
    /// a promotion that did not complete, say under an earlier leader) two checks in a row
    /// are promoted again.
    async fn find_stuck_primaries(&self, table: &PartitionTable, live: &BTreeMap<String, PeerInfo>) {
        let mut stuck = BTreeSet::new();
        for node in live.keys() {
            let Some(statuses) = self.grid_status(node).await else { continue };
            let primary_here: BTreeSet<u32> = statuses.iter().filter(|s| s.role == "primary").map(|s| s.p).collect();
            for (p, info) in table.parts.iter().enumerate() {
                if info.primary == *node && !primary_here.contains(&(p as u32)) {
                    stuck.insert(p as u32);
                }
            }
        }
        let mut suspects = self.grid_suspects.lock().unwrap_or_else(|e| e.into_inner());
        let again: BTreeSet<u32> = stuck.intersection(&suspects).copied().collect();
        if !again.is_empty() {
            tracing::warn!(partitions = ?again, "primaries named by the table are not serving; choosing again");
            self.grid_pending.lock().unwrap_or_else(|e| e.into_inner()).extend(&again);
        }
        *suspects = stuck;
    }

    /// Fence a majority of the partition's replicas at a new epoch and choose the most
    /// up-to-date of them as primary (`prefer` wins ties). `None` if too few answered.
    async fn promote(
        &self,
        p: u32,
        info: &PartInfo,
        prefer: Option<&str>,
        live: &BTreeMap<String, PeerInfo>,
    ) -> Option<PartInfo> {
        let epoch = {
            let floors = self.grid_floor.lock().unwrap_or_else(|e| e.into_inner());
            info.epoch.max(floors.get(&p).copied().unwrap_or(0)) + 1
        };
        let asks = info
            .replicas
            .iter()
            .filter(|n| live.contains_key(*n))
            .map(|n| async move { self.grid_rpc(n, FenceReq { p, epoch }).await.ok().map(|f| (n.clone(), f)) });
        let answers: Vec<(String, FenceReply)> = futures::future::join_all(asks).await.into_iter().flatten().collect();
        let newest = answers.iter().map(|(_, f)| f.fence).max().unwrap_or(0);
        if newest > epoch {
            self.grid_floor.lock().unwrap_or_else(|e| e.into_inner()).insert(p, newest);
        }
        tracing::debug!(partition = p, epoch, answers = ?answers, "fence answers");
        let fenced: Vec<&(String, FenceReply)> = answers.iter().filter(|(_, f)| f.fence == epoch).collect();
        if fenced.len() < info.quorum() {
            if !fenced.is_empty() {
                // Those replicas now refuse the current primary: try again next step.
                self.grid_pending.lock().unwrap_or_else(|e| e.into_inner()).insert(p);
            }
            tracing::warn!(
                partition = p,
                answered = fenced.len(),
                needed = info.quorum(),
                "cannot choose a primary: too few replicas reachable"
            );
            return None;
        }
        let best = fenced.iter().map(|(_, f)| (f.last_epoch, f.last)).max()?;
        let at_best: Vec<String> =
            fenced.iter().filter(|(_, f)| (f.last_epoch, f.last) == best).map(|(n, _)| n.clone()).collect();
        let chosen = prefer
            .filter(|n| at_best.iter().any(|b| b == n))
            .map(str::to_string)
            .or_else(|| at_best.iter().find(|n| info.isr.contains(n)).cloned())
            .unwrap_or_else(|| at_best[0].clone());
        tracing::info!(partition = p, epoch, primary = %chosen, previous = %info.primary, "new partition primary");
        Some(PartInfo { primary: chosen, replicas: info.replicas.clone(), isr: at_best, epoch })
    }

    /// `GET /v1/grid`: the table, each node's share, and each partition's log position
    /// and replica lag as its primary reports them.
    pub async fn grid_report(&self) -> GridView {
        let table = self.sm.current().state.grid.clone();
        let live: Vec<String> = self.live().keys().cloned().collect();
        let mut statuses = BTreeMap::new();
        for node in &live {
            if let Some(s) = self.grid_status(node).await {
                statuses.insert(node.clone(), s);
            }
        }
        report(&table, &statuses, &live)
    }
}

/// The body of `GET /v1/grid` from the table and the nodes' own partition status.
pub fn report(table: &PartitionTable, statuses: &BTreeMap<String, Vec<PartStatus>>, live: &[String]) -> GridView {
    let mut nodes: BTreeMap<String, GridShare> = BTreeMap::new();
    let mut parts = Vec::with_capacity(table.parts.len());
    for (p, info) in table.parts.iter().enumerate() {
        for n in &info.replicas {
            let e = nodes.entry(n.clone()).or_default();
            e.replicas += 1;
            if *n == info.primary {
                e.primaries += 1;
            }
            if info.isr.contains(n) {
                e.in_sync += 1;
            }
        }
        let own = statuses.get(&info.primary).and_then(|s| s.iter().find(|s| s.p == p as u32 && s.role == "primary"));
        let lag: BTreeMap<String, Option<u64>> = info
            .replicas
            .iter()
            .map(|n| {
                let m = own.and_then(|s| s.matched.iter().find(|(x, _)| x == n).map(|(_, m)| *m));
                (n.clone(), own.and_then(|s| m.map(|m| s.last.saturating_sub(m))))
            })
            .collect();
        parts.push(GridRow {
            partition: p,
            primary: info.primary.clone(),
            epoch: info.epoch,
            replicas: info.replicas.clone(),
            in_sync: info.isr.clone(),
            last_lsn: own.map(|s| s.last),
            lag,
        });
    }
    for (n, share) in nodes.iter_mut() {
        share.live = live.contains(n);
    }
    let degraded = table.parts.iter().filter(|i| i.isr.len() < i.replicas.len().max(table.replication)).count();
    GridView {
        version: table.version,
        partitions: table.parts.len(),
        replication: table.replication,
        under_replicated: degraded,
        nodes,
        table: parts,
    }
}

/// One step's plan for partition `p`'s replicas: add the desired ones that are missing
/// (while fewer than [`MAX_ADDING`] partitions are adding one: `adding` counts them) and
/// drop the surplus once the desired ones are in sync. Returns the node the primary should
/// move to, if any: the best-ranked one once it is in sync.
fn plan_replicas(
    p: u32,
    info: &mut PartInfo,
    members: &[String],
    rf: usize,
    is_live: &dyn Fn(&str) -> bool,
    adding: &mut usize,
) -> Option<String> {
    let primary = info.primary.clone();
    info.isr.retain(|n| is_live(n) || *n == primary);
    let desired: Vec<String> = part::ranked(p, members).into_iter().take(rf).collect();
    for n in &desired {
        if !info.replicas.contains(n) && is_live(n) && *adding < MAX_ADDING {
            info.replicas.push(n.clone());
            *adding += 1;
        }
    }
    let synced = desired.iter().all(|n| info.isr.contains(n));
    let surplus: Vec<String> = info.replicas.iter().filter(|n| !desired.contains(n)).cloned().collect();
    let mut transfer = None;
    for n in surplus {
        if n == primary {
            if synced {
                transfer = desired.first().cloned();
            }
        } else if synced {
            info.replicas.retain(|x| *x != n);
            info.isr.retain(|x| *x != n);
        }
    }
    // Give a primary back to its best-ranked node once that is in sync again.
    if let Some(best) = desired.first()
        && transfer.is_none()
        && *best != primary
        && info.isr.contains(best)
        && is_live(best)
    {
        transfer = Some(best.clone());
    }
    transfer
}
