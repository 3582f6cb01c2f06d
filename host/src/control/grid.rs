//! The cluster's side of the data grid: how the grid reaches other nodes ([`GridNet`]),
//! grid RPCs to nodes, and every node taking up the roles the committed partition table
//! gives it. The leader's Partition Manager is in `partitions.rs`.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::watch;

use super::Cluster;
use super::types::Command;
use super::views::GridView;
use crate::grid::part;
use crate::grid::replica::{Net, NetError, Replicas};
use crate::grid::wire::{GridReply, GridRequest, GridRpc, PartStatus, StatusReq};
use crate::tasks::Tasks;
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

const GRID_RPC_TIMEOUT: Duration = Duration::from_secs(8);

/// The grid's view of the network: other nodes by name, and the control plane. The
/// reports it commits in the background (a replica's state, a primary handing its
/// partition back) are its own tasks, stopped by [`GridNet::shutdown`] (the cluster's).
pub struct GridNet {
    cluster: Weak<Cluster>,
    tasks: Tasks,
}

impl GridNet {
    pub fn new(cluster: Weak<Cluster>) -> Self {
        GridNet { cluster, tasks: Tasks::new() }
    }

    /// Stop the reports under way (a report not made is made again: a primary reports
    /// its replicas' state until it lands, a node relinquishes again at its next start).
    pub async fn shutdown(&self) {
        self.tasks.shutdown().await;
    }

    /// Commit a primary's report in the background (it is repeated if it does not land).
    fn propose(&self, cmd: Command) {
        if let Some(c) = self.cluster.upgrade() {
            self.tasks.spawn(async move {
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
            match self.cluster.upgrade() {
                Some(c) => c.grid_call(node, req).await,
                None => Err(NetError::NotSent("the node is shutting down".into())),
            }
        })
    }

    fn relinquish(&self, partition: u32, epoch: u64) {
        let Some(c) = self.cluster.upgrade() else { return };
        self.tasks.spawn(async move {
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
        // A node refilling a rebuilt store joins no in-sync set until it has stopped
        // rebuilding: the leader drops it from every one meanwhile (`PartitionManager`).
        if self.cluster.upgrade().is_some_and(|c| c.rebuilding(&node)) {
            return;
        }
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
    pub(super) async fn grid_status(&self, node: &str) -> Option<Vec<PartStatus>> {
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
        self.membership.live().read(|live| {
            let peer = live.get(primary).filter(|p| p.mode != super::Mode::Dormant.as_str())?;
            let runs =
                peer.services.iter().any(|s| s == service) || self.sm.current().state.slots(service, primary) > 0;
            runs.then(|| PeerTarget { node: peer.id.clone(), addr: peer.peer.clone() })
        })
    }

    /// Whether `node` says (in gossip) that it is refilling a rebuilt store.
    pub(super) fn rebuilding(&self, node: &str) -> bool {
        self.membership.live().read(|live| live.get(node).is_some_and(|p| p.mode == super::membership::REBUILDING))
    }

    fn peer_addr(&self, node: &str) -> Option<String> {
        if let Some(peer) = self.membership.live().read(|live| live.get(node).map(|p| p.peer.clone())) {
            return Some(peer);
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
        super::partitions::report(&table, &statuses, &live)
    }
}
