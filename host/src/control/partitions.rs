//! The leader's Partition Manager ([`PartitionManager`]): it places the grid's partitions
//! (rendezvous hashing over members), drops dead replicas from in-sync sets, promotes a
//! new primary when one is lost (after fencing a majority of the replicas, choosing the
//! most up-to-date), adds replicas on joining nodes and removes surplus ones once the new
//! ones are in sync. Also the body of `GET /v1/grid` ([`report`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::types::Command;
use super::views::{GridRow, GridShare, GridView};
use super::{Cluster, PeerInfo};
use crate::grid::part::{self, PartInfo, PartitionTable};
use crate::grid::wire::{FenceReply, FenceReq, PartStatus};

/// Replicas being added at once (each catches up from a snapshot plus the log tail).
const MAX_ADDING: usize = 64;
/// Primaries moved per step (each fails the writes in flight on its partition).
const MAX_TRANSFERS: usize = 16;
/// Manager steps between checks that named primaries are serving (about 3 s).
const STUCK_CHECK_EVERY: u64 = 10;

/// The Partition Manager's memory between steps (the partition table itself is in the
/// committed state). The [`Cluster`] holds one; its leader loop calls `step`,
/// which reaches nodes and Raft through the cluster it is given. It starts no tasks.
#[derive(Default)]
pub struct PartitionManager {
    /// Partitions fenced for a new primary the table does not name yet (leader only).
    pending: Mutex<BTreeSet<u32>>,
    /// The highest fence seen per partition (a promotion must go above it).
    floor: Mutex<BTreeMap<u32, u64>>,
    /// Partitions whose primary was not serving at the last check.
    suspects: Mutex<BTreeSet<u32>>,
    /// Steps taken (every [`STUCK_CHECK_EVERY`]th checks for stuck primaries).
    ticks: AtomicU64,
}

/// The partition table as one step found it and the next one it plans.
struct Plan {
    table: PartitionTable,
    next: PartitionTable,
    /// Partitions to promote a primary for, with the node preferred (a transfer).
    promotions: Vec<(u32, Option<String>)>,
}

impl PartitionManager {
    /// One Partition Manager step (leader only): `live` as gossip shows it, the `members`
    /// that hold partitions, and the `removed` nodes (never chosen again).
    pub(super) async fn step(
        &self,
        c: &Cluster,
        live: &BTreeMap<String, PeerInfo>,
        members: &[String],
        removed: &[String],
    ) -> anyhow::Result<()> {
        let table = c.sm.current().state.grid.clone();
        let rf = c.config.replication.clamp(1, members.len().max(1));
        if table.is_empty() {
            if members.is_empty() {
                return Ok(());
            }
            // This node's count (its data dir's): the cluster's from now on.
            let count = c.registry.grid().replicas().count();
            tracing::info!(nodes = ?members, replication = rf, partitions = count, "placing the grid's partitions");
            let first = part::initial(members, rf, count);
            c.raft.client_write(Command::GridTable { expect: table.version, table: Box::new(first) }).await?;
            return Ok(());
        }
        // A removed node may still answer (it keeps gossiping and serving its replicas
        // until it is stopped), but it is never a partition's primary or replica again:
        // choosing it would put a partition back on it at every step.
        let live: BTreeMap<String, PeerInfo> =
            live.iter().filter(|(n, _)| !removed.contains(n)).map(|(n, p)| (n.clone(), p.clone())).collect();
        if self.ticks.fetch_add(1, Ordering::Relaxed).is_multiple_of(STUCK_CHECK_EVERY) {
            self.find_stuck_primaries(c, &table, &live).await;
        }
        let mut plan = self.plan(table, members, rf, &live);
        let promoted = futures::future::join_all(
            plan.promotions
                .iter()
                .map(|(p, prefer)| self.promote(c, *p, &plan.table.parts[*p as usize], prefer.as_deref(), &live)),
        )
        .await;
        let mut fenced = BTreeSet::new();
        for ((p, _), info) in plan.promotions.iter().zip(promoted) {
            if let Some(info) = info {
                let keep = &plan.next.parts[*p as usize];
                // Keep this step's replica changes unless the primary itself moved out.
                let replicas =
                    if keep.replicas.contains(&info.primary) { keep.replicas.clone() } else { info.replicas.clone() };
                plan.next.parts[*p as usize] = PartInfo { replicas, ..info };
                fenced.insert(*p);
            }
        }
        self.commit(c, &plan, fenced).await;
        Ok(())
    }

    /// This step's replica changes, and the partitions whose primary must be chosen
    /// (lost, fenced by an earlier step, or moving to its best-ranked node).
    fn plan(&self, table: PartitionTable, members: &[String], rf: usize, live: &BTreeMap<String, PeerInfo>) -> Plan {
        let is_live = |n: &str| live.contains_key(n);
        let pending: BTreeSet<u32> = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        let mut next = table.clone();
        next.replication = rf;
        let mut promotions: Vec<(u32, Option<String>)> = Vec::new();
        let mut transfers = 0;
        let mut adding =
            table.parts.iter().filter(|i| i.replicas.iter().any(|n| !i.isr.contains(n) && is_live(n))).count();
        let rebuilding = |n: &str| live.get(n).is_some_and(|p| p.mode == super::membership::REBUILDING);
        for (p, info) in next.parts.iter_mut().enumerate() {
            let p = p as u32;
            // A node refilling a rebuilt store holds none of what its in-sync place
            // promised: it leaves every in-sync set (a primary it still is gives the
            // partition up itself) and joins again once a primary has caught it up.
            let primary = info.primary.clone();
            info.isr.retain(|n| *n == primary || !rebuilding(n));
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
        Plan { table, next, promotions }
    }

    /// Write the rows that changed; partitions `fenced` for a primary the write did not
    /// name are promoted again next step.
    async fn commit(&self, c: &Cluster, plan: &Plan, fenced: BTreeSet<u32>) {
        let Plan { table, next, .. } = plan;
        if next == table {
            return;
        }
        // Only the rows that changed go into the log.
        let changes = table.changes_to(next);
        let cmd = Command::GridChanges { expect: table.version, replication: next.replication, changes };
        let changed = match c.raft.client_write(cmd).await {
            Ok(r) => r.data.changed,
            Err(e) => {
                tracing::debug!(error = %e, "partition table write failed");
                false
            }
        };
        if !changed && !fenced.is_empty() {
            // Replicas were fenced for primaries the table does not name: redo those.
            self.pending.lock().unwrap_or_else(|e| e.into_inner()).extend(fenced);
        } else if !fenced.is_empty() {
            tracing::info!(partitions = fenced.len(), "moved partition primaries");
        }
    }

    /// Partitions whose named primary is live but not acting as primary (it was fenced by
    /// a promotion that did not complete, say under an earlier leader) two checks in a row
    /// are promoted again.
    async fn find_stuck_primaries(&self, c: &Cluster, table: &PartitionTable, live: &BTreeMap<String, PeerInfo>) {
        let mut stuck = BTreeSet::new();
        for node in live.keys() {
            let Some(statuses) = c.grid_status(node).await else { continue };
            let primary_here: BTreeSet<u32> = statuses.iter().filter(|s| s.role == "primary").map(|s| s.p).collect();
            for (p, info) in table.parts.iter().enumerate() {
                if info.primary == *node && !primary_here.contains(&(p as u32)) {
                    stuck.insert(p as u32);
                }
            }
        }
        let mut suspects = self.suspects.lock().unwrap_or_else(|e| e.into_inner());
        let again: BTreeSet<u32> = stuck.intersection(&suspects).copied().collect();
        if !again.is_empty() {
            tracing::warn!(partitions = ?again, "primaries named by the table are not serving; choosing again");
            self.pending.lock().unwrap_or_else(|e| e.into_inner()).extend(&again);
        }
        *suspects = stuck;
    }

    /// Fence a majority of the partition's replicas at a new epoch and choose the most
    /// up-to-date of them as primary (`prefer` wins ties). `None` if too few answered.
    async fn promote(
        &self,
        c: &Cluster,
        p: u32,
        info: &PartInfo,
        prefer: Option<&str>,
        live: &BTreeMap<String, PeerInfo>,
    ) -> Option<PartInfo> {
        let epoch = {
            let floors = self.floor.lock().unwrap_or_else(|e| e.into_inner());
            info.epoch.max(floors.get(&p).copied().unwrap_or(0)) + 1
        };
        let fence = |n: &String, primary_fenced: Option<u64>| {
            let (n, req) = (n.clone(), FenceReq { p, epoch, primary_fenced });
            async move { c.grid_rpc(&n, req).await.ok().map(|f| (n, f)) }
        };
        // The live primary first: once it promised the new epoch it answers no more reads
        // as primary, so the others need not wait out the read leases they gave it (a
        // planned move would otherwise leave the partition without a primary for up to
        // `LEASE`). A primary that is down or does not answer: they wait them out.
        let mut answers: Vec<(String, FenceReply)> = Vec::new();
        let mut primary_fenced = None;
        if live.contains_key(&info.primary)
            && info.replicas.contains(&info.primary)
            && let Some((n, f)) = fence(&info.primary, None).await
        {
            primary_fenced = (f.fence == epoch).then_some(info.epoch);
            answers.push((n, f));
        }
        let others = info.replicas.iter().filter(|n| live.contains_key(*n) && **n != info.primary);
        let asks = others.map(|n| fence(n, primary_fenced));
        answers.extend(futures::future::join_all(asks).await.into_iter().flatten());
        let newest = answers.iter().map(|(_, f)| f.fence).max().unwrap_or(0);
        if newest > epoch {
            self.floor.lock().unwrap_or_else(|e| e.into_inner()).insert(p, newest);
        }
        tracing::debug!(partition = p, epoch, answers = ?answers, "fence answers");
        let fenced: Vec<&(String, FenceReply)> = answers.iter().filter(|(_, f)| f.fence == epoch).collect();
        if fenced.len() < info.quorum() {
            if !fenced.is_empty() {
                // Those replicas now refuse the current primary: try again next step.
                self.pending.lock().unwrap_or_else(|e| e.into_inner()).insert(p);
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
