//! The narrow seam the leader's owners work through: the autoscaler ([`super::scaling`])
//! and the experiments ([`super::reprovision`]) read the committed state, the gossip view
//! and the Raft membership, commit commands and ask other nodes, and nothing else of the
//! cluster. [`super::Cluster`] implements it; an owner's loop holds a `Weak<dyn LeaderOps>`
//! and upgrades it for one step at a time (so it does not keep the cluster alive between
//! steps), and the cluster's own calls into an owner pass `self`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::store::Stored;
use super::{ClusterError, Command, Member, PeerInfo};
use crate::services::Registry;
use crate::transport::{PeerClient, PeerRpc};

pub trait LeaderOps: Send + Sync + 'static {
    /// This node's name.
    fn node(&self) -> &str;
    /// Whether this node leads now.
    fn leading(&self) -> bool;
    /// The control state this node has applied.
    fn committed(&self) -> Arc<Stored>;
    /// Live nodes as gossip shows them (this node included), by name.
    fn live(&self) -> BTreeMap<String, PeerInfo>;
    /// Members of the Raft configuration: (voters, learners).
    fn members(&self) -> (Vec<Member>, Vec<Member>);
    /// How many members vote (`--voters`).
    fn voters(&self) -> usize;
    /// Commit `cmd` on this node as the leader (Raft's `client_write`: it returns once the
    /// entry is committed and applied here; on another node it fails, nothing is
    /// forwarded), without the early heartbeat, the reconcile and the timeout of
    /// [`LeaderOps::write`]: what a leader's own loop does.
    fn commit(&self, cmd: Command) -> BoxFuture<'_, Result<(), ClusterError>>;
    /// Commit `cmd` from any node (forwarded to the leader) and wait until this node has
    /// applied it ([`super::Cluster::write`]).
    fn write(&self, cmd: Command) -> BoxFuture<'_, Result<(), ClusterError>>;
    /// How this node calls other nodes.
    fn peers(&self) -> &PeerClient;
    /// This node's services.
    fn registry(&self) -> &Arc<Registry>;

    /// Names of every member (voters and learners).
    fn member_names(&self) -> BTreeSet<String> {
        let (voters, learners) = self.members();
        voters.into_iter().chain(learners).map(|m| m.name).collect()
    }
}

/// Ask every other node in `live` that is one of `members` `req` (a node of another
/// cluster may gossip too, and would answer about its own): the answers that came within
/// `wait`, by node.
pub async fn ask_live<Q: PeerRpc>(
    peers: &PeerClient,
    me: &str,
    live: BTreeMap<String, PeerInfo>,
    members: &BTreeSet<String>,
    req: &Q,
    wait: Duration,
) -> BTreeMap<String, Q::Reply> {
    let others: Vec<PeerInfo> = live.into_values().filter(|p| p.id != me && members.contains(&p.id)).collect();
    let asks = others.iter().map(|p| async move { (p.id.clone(), peers.call(&p.id, &p.peer, req, wait).await.ok()) });
    futures::future::join_all(asks).await.into_iter().filter_map(|(id, r)| Some((id, r?))).collect()
}
