//! Raft's network over the peer transport, and the typed peer calls of the control plane.
//!
//! | request | route | reply |
//! | --- | --- | --- |
//! | `Fenced<AppendEntriesRequest>` | `/raft/append` | `Result<AppendEntriesResponse, RaftError>` |
//! | `Fenced<VoteRequest>` | `/raft/vote` | `Result<VoteResponse, RaftError>` |
//! | `Fenced<InstallSnapshotRequest>` | `/raft/snapshot` | `Result<InstallSnapshotResponse, RaftError>` |
//! | [`Command`] | `/control/write` | [`WriteReply`] (on the leader only) |
//! | [`GraphReq`] | `/graph` | this node's call-graph edges |
//! | [`UsageReq`] | `/usage` | this node's per-service usage totals (for the autoscaler) |
//! | [`TraceSpansReq`] | `/trace` | this node's spans of one trace |
//! | [`TraceListReq`] | `/traces` | this node's summaries of recent traces |
//! | [`TrialReq`] | `/trial` | this node's per-arm call samples of one experiment |
//! | [`super::ready::ReadyReq`] | `/ready` | whether this node serves a service at a generation (waits, bounded) |
//!
//! Each Raft message carries the sender's formation id ([`super::formation`]).

use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::{Deserialize, Serialize};

use super::formation::{Fenced, Formation};
use super::types::{Command, Control, Member};
use crate::transport::{PeerClient, PeerRpc, RpcError};

impl PeerRpc for Fenced<AppendEntriesRequest<Control>> {
    const PATH: &'static str = "/raft/append";
    type Reply = Result<AppendEntriesResponse<u64>, RaftError<u64>>;
}

impl PeerRpc for Fenced<VoteRequest<u64>> {
    const PATH: &'static str = "/raft/vote";
    type Reply = Result<VoteResponse<u64>, RaftError<u64>>;
}

impl PeerRpc for Fenced<InstallSnapshotRequest<Control>> {
    const PATH: &'static str = "/raft/snapshot";
    const MAX_REPLY: usize = 1 << 20;
    type Reply = Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>;
}

/// The answer of the leader to a forwarded write.
#[derive(Debug, Serialize, Deserialize)]
pub struct WriteReply {
    pub index: u64,
}

impl PeerRpc for Command {
    const PATH: &'static str = "/control/write";
    type Reply = WriteReply;
}

/// "Send me your call graph."
#[derive(Debug, Serialize, Deserialize)]
pub struct GraphReq;

impl PeerRpc for GraphReq {
    const PATH: &'static str = "/graph";
    type Reply = Vec<crate::services::calls::EdgeReport>;
}

/// "Send me your services' usage totals."
#[derive(Debug, Serialize, Deserialize)]
pub struct UsageReq;

impl PeerRpc for UsageReq {
    const PATH: &'static str = "/usage";
    type Reply = crate::autoscale::Report;
}

/// "Send me your spans of this trace."
#[derive(Debug, Serialize, Deserialize)]
pub struct TraceSpansReq {
    pub trace_id: String,
}

impl PeerRpc for TraceSpansReq {
    const PATH: &'static str = "/trace";
    type Reply = Vec<crate::trace::SpanRecord>;
}

/// "Send me your summaries of recent traces matching this."
#[derive(Debug, Serialize, Deserialize)]
pub struct TraceListReq(pub crate::trace::store::TraceQuery);

impl PeerRpc for TraceListReq {
    const PATH: &'static str = "/traces";
    type Reply = Vec<crate::trace::store::TraceSummary>;
}

/// "Send me your samples of this experiment's calls."
#[derive(Debug, Serialize, Deserialize)]
pub struct TrialReq {
    pub id: u64,
    /// Durations wanted per arm (the newest; 0 for the counts alone).
    pub newest: usize,
}

impl PeerRpc for TrialReq {
    const PATH: &'static str = "/trial";
    /// At most 20,000 durations per arm; the leader asks for 2,000.
    const MAX_REPLY: usize = 1 << 20;
    type Reply = crate::services::trials::TrialSamples;
}

/// Raft's view of the network: one [`Conn`] per target node.
pub struct Network {
    pub client: PeerClient,
    pub formation: std::sync::Arc<Formation>,
}

pub struct Conn {
    client: PeerClient,
    formation: std::sync::Arc<Formation>,
    target: u64,
    member: Member,
}

impl RaftNetworkFactory<Control> for Network {
    type Network = Conn;

    async fn new_client(&mut self, target: u64, node: &Member) -> Conn {
        Conn { client: self.client.clone(), formation: self.formation.clone(), target, member: node.clone() }
    }
}

impl Conn {
    async fn rpc<Q, A, E>(&self, rpc: Q, option: &RPCOption) -> Result<A, RPCError<u64, Member, RaftError<u64, E>>>
    where
        Fenced<Q>: PeerRpc<Reply = Result<A, RaftError<u64, E>>>,
        E: std::error::Error,
    {
        let ttl = option.hard_ttl().min(Duration::from_secs(30));
        let req = Fenced { formation: self.formation.id(), rpc };
        match self.client.call(&self.member.name, &self.member.peer, &req, ttl).await {
            Ok(Ok(a)) => Ok(a),
            Ok(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            // A node of another formation: backed off from as an unreachable one (an error
            // of another kind is retried at once), and told to the leader's step.
            Err(e) if matches!(&e, RpcError::Refused { code, .. } if code == "other-formation") => {
                self.formation.note_refused(&self.member.name);
                Err(RPCError::Unreachable(Unreachable::new(&e)))
            }
            Err(e @ RpcError::NotSent { .. }) => Err(RPCError::Unreachable(Unreachable::new(&e))),
            Err(e) => Err(RPCError::Network(NetworkError::new(&e))),
        }
    }
}

impl RaftNetwork<Control> for Conn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<Control>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, Member, RaftError<u64>>> {
        self.rpc(rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<Control>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RPCError<u64, Member, RaftError<u64, InstallSnapshotError>>> {
        self.rpc(rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, Member, RaftError<u64>>> {
        self.rpc(rpc, &option).await
    }
}
