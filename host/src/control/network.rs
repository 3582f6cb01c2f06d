//! Node-to-node RPC client (JSON over HTTP/1 to a peer's `--peer-listen`), Raft's network
//! on top of it, and the fault switch the scenario tests use to cut a node off.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::types::{Control, Member};
use crate::client::Client;

/// Transport-level fault injection: while `isolated`, this node sends and accepts no gossip
/// and no peer RPC, as if its network were unplugged. Only reachable through the admin API
/// of a node started with `--fault-injection`.
#[derive(Debug, Default)]
pub struct Faults {
    isolated: AtomicBool,
}

impl Faults {
    pub fn isolated(&self) -> bool {
        self.isolated.load(Ordering::Relaxed)
    }
    pub fn set_isolated(&self, on: bool) {
        self.isolated.store(on, Ordering::Relaxed);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("peer {0} is unreachable: {1}")]
    Unreachable(String, String),
    #[error("peer {addr} answered {status}: {body}")]
    Status { addr: String, status: u16, body: String },
    #[error("peer {0} sent an unreadable answer: {1}")]
    Decode(String, String),
}

/// Authenticated calls to other nodes' peer listeners.
#[derive(Clone)]
pub struct PeerClient {
    http: Client,
    token: Arc<str>,
    faults: Arc<Faults>,
}

impl PeerClient {
    pub fn new(token: &str, faults: Arc<Faults>) -> Self {
        PeerClient { http: Client::new(), token: token.into(), faults }
    }

    pub async fn call(
        &self,
        method: Method,
        addr: &str,
        path: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, PeerError> {
        if self.faults.isolated() {
            return Err(PeerError::Unreachable(addr.into(), "this node is isolated (fault injection)".into()));
        }
        let url = format!("http://{addr}{path}");
        let headers =
            [("authorization", format!("Bearer {}", self.token)), ("content-type", "application/json".into())];
        let reply = match tokio::time::timeout(timeout, self.http.send(method, &url, &headers, body)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(PeerError::Unreachable(addr.into(), format!("{e:#}"))),
            Err(_) => return Err(PeerError::Unreachable(addr.into(), format!("no answer within {timeout:?}"))),
        };
        if !reply.status.is_success() {
            return Err(PeerError::Status { addr: addr.into(), status: reply.status.as_u16(), body: reply.text() });
        }
        Ok(reply.body)
    }

    pub async fn post<Q: Serialize, A: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: &Q,
        timeout: Duration,
    ) -> Result<A, PeerError> {
        let body = Bytes::from(serde_json::to_vec(body).map_err(|e| PeerError::Decode(addr.into(), e.to_string()))?);
        let raw = self.call(Method::POST, addr, path, body, timeout).await?;
        serde_json::from_slice(&raw).map_err(|e| PeerError::Decode(addr.into(), e.to_string()))
    }
}

/// Raft's view of the network: one [`Conn`] per target node.
pub struct Network {
    pub client: PeerClient,
}

pub struct Conn {
    client: PeerClient,
    target: u64,
    addr: String,
}

impl RaftNetworkFactory<Control> for Network {
    type Network = Conn;

    async fn new_client(&mut self, target: u64, node: &Member) -> Conn {
        Conn { client: self.client.clone(), target, addr: node.peer.clone() }
    }
}

impl Conn {
    async fn rpc<Q, A, E>(
        &self,
        path: &str,
        req: &Q,
        option: &RPCOption,
    ) -> Result<A, RPCError<u64, Member, RaftError<u64, E>>>
    where
        Q: Serialize,
        A: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let answer: Result<Result<A, RaftError<u64, E>>, PeerError> =
            self.client.post(&self.addr, path, req, option.hard_ttl()).await;
        match answer {
            Ok(Ok(a)) => Ok(a),
            Ok(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            Err(e @ PeerError::Unreachable(..)) => Err(RPCError::Unreachable(Unreachable::new(&e))),
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
        self.rpc("/raft/append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<Control>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RPCError<u64, Member, RaftError<u64, InstallSnapshotError>>> {
        self.rpc("/raft/snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, Member, RaftError<u64>>> {
        self.rpc("/raft/vote", &rpc, &option).await
    }
}
