//! The peer listener's control-plane routes. Every request arrives authenticated
//! ([`crate::transport::server`]): `peer` is the node its client certificate names.
//!
//! | route | |
//! | --- | --- |
//! | `POST /raft/append`, `/raft/vote`, `/raft/snapshot` | Raft RPCs; the vote they carry must be the sender's own, and the sender of this node's formation |
//! | `POST /control/write` | a command forwarded to the leader → `{"index"}` |
//! | `GET /components/{digest}` | component bytes, for a node that lacks them |
//! | `POST /graph` | this node's call graph edges (for a cluster-wide `GET /v1/graph`) |
//! | `POST /usage` | this node's per-service usage totals (for the leader's autoscaler) |
//! | `POST /trace`, `POST /traces` | this node's spans of a trace; its recent traces (for `GET /v1/traces`) |
//! | `POST /trial` | this node's per-arm call samples of one re-provisioning experiment (for the leader) |
//! | `POST /ready` | whether this node serves a service at a generation, waiting up to a bound (for a deploy) |
//! | `POST /grid` | the data grid's replication and kv routing (`nanogrid_wire::grid`, postcard) |
//!
//! A node removed from the cluster still holds a certificate of the CA; it is refused here.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use hyper::body::Incoming;
use openraft::Vote;
use openraft::error::{ClientWriteError, RaftError};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, VoteRequest};

use super::Cluster;
use super::formation::{FenceError, Fenced};
use super::network::{GraphReq, TraceListReq, TraceSpansReq, TrialReq, UsageReq, WriteReply};
use super::ready::ReadyReq;
use super::types::{Command, Control, raft_id};
use crate::http::{self as h, Body};
use crate::transport::{Peer, PeerRpc, rpc};

/// Whether this node takes requests from `peer` now: never from a node removed from the
/// cluster (it still holds a certificate of the CA). Every peer route, forwarded requests
/// included, passes here.
pub async fn admit(
    cluster: &Cluster,
    peer: &Peer,
    req: http::Request<Incoming>,
) -> Result<http::Request<Incoming>, http::Response<Body>> {
    let refusal = if cluster.sm.current().state.removed.contains(&peer.node) {
        Some((StatusCode::FORBIDDEN, "removed", format!("node {} was removed from this cluster", peer.node)))
    } else {
        None
    };
    let Some((status, code, msg)) = refusal else { return Ok(req) };
    let rid = h::incoming_request_id(req.headers()).unwrap_or_else(|| cluster.registry.new_request_id());
    h::drain(req.into_body()).await;
    Err(h::close_connection(h::error(status, code, &msg, &rid)))
}

/// A control-plane route (the request was admitted by [`admit`]): the route table, one
/// arm per typed request, each handing its decoded request on.
pub async fn handle(
    cluster: Arc<Cluster>,
    max_body: usize,
    peer: Peer,
    req: http::Request<Incoming>,
) -> http::Response<Body> {
    let rid = h::incoming_request_id(req.headers()).unwrap_or_else(|| cluster.registry.new_request_id());
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let c = &cluster;
    match (&method, path.as_str()) {
        (&Method::POST, p) if p == <Fenced<AppendEntriesRequest<Control>> as PeerRpc>::PATH => {
            serve(req, max_body, &rid, |r| append_entries(c, &peer, r)).await
        }
        (&Method::POST, p) if p == <Fenced<VoteRequest<u64>> as PeerRpc>::PATH => {
            serve(req, max_body, &rid, |r: Fenced<VoteRequest<u64>>| async move {
                if c.registry.grid().replicas().is_rebuilt() {
                    // It may have voted in this term before its store was lost.
                    let msg = "this node's store was rebuilt: it votes again once it is a learner".to_string();
                    return Err((StatusCode::SERVICE_UNAVAILABLE, "rebuilding", msg));
                }
                let r = raft_message(c, &peer, r, |r| &r.vote).await?;
                Ok(c.raft.vote(r).await)
            })
            .await
        }
        (&Method::POST, p) if p == <Fenced<InstallSnapshotRequest<Control>> as PeerRpc>::PATH => {
            serve(req, max_body, &rid, |r| install_snapshot(c, &peer, r)).await
        }
        (&Method::POST, p) if p == <Command as PeerRpc>::PATH => {
            serve(req, max_body, &rid, |cmd: Command| async move { forwarded_write(c, cmd).await }).await
        }
        (&Method::POST, p) if p == <nanogrid_wire::grid::GridRequest as PeerRpc>::PATH => {
            serve(req, max_body, &rid, |r: nanogrid_wire::grid::GridRequest| async move {
                Ok(super::grid::serve_grid(c.registry.grid().replicas(), r).await)
            })
            .await
        }
        (&Method::POST, p) if p == <GraphReq as PeerRpc>::PATH => {
            serve(req, max_body, &rid, |_: GraphReq| async move { Ok(c.registry.calls.report()) }).await
        }
        (&Method::POST, p) if p == <UsageReq as PeerRpc>::PATH => {
            serve(req, max_body, &rid, |_: UsageReq| async move { Ok(c.registry.usage()) }).await
        }
        (&Method::POST, p) if p == <TraceSpansReq as PeerRpc>::PATH => {
            serve(req, max_body, &rid, |r: TraceSpansReq| async move { Ok(c.registry.local_trace(&r.trace_id)) }).await
        }
        (&Method::POST, p) if p == <TraceListReq as PeerRpc>::PATH => {
            serve(req, max_body, &rid, |r: TraceListReq| async move { Ok(c.registry.local_traces(&r.0)) }).await
        }
        (&Method::POST, p) if p == <TrialReq as PeerRpc>::PATH => {
            serve(req, max_body, &rid, |r: TrialReq| async move { Ok(c.registry.trials.samples(r.id, r.newest)) }).await
        }
        (&Method::POST, p) if p == <ReadyReq as PeerRpc>::PATH => {
            serve(req, max_body, &rid, |r: ReadyReq| async move {
                let wait = Duration::from_millis(r.wait_ms).min(super::ready::READY_WAIT);
                Ok(c.services.await_ready_here(&r.service, r.generation, wait).await)
            })
            .await
        }
        (&Method::GET, p) if p.starts_with("/components/") => {
            let digest = &p["/components/".len()..];
            match cluster.registry.component_bytes(digest).await {
                Ok(Some(b)) => http::Response::new(h::full(b)),
                Ok(None) => h::error(StatusCode::NOT_FOUND, "not-found", "no such component here", &rid),
                Err(e) => h::error(StatusCode::INTERNAL_SERVER_ERROR, "internal", &e.to_string(), &rid),
            }
        }
        _ => {
            h::drain(req.into_body()).await;
            h::error(StatusCode::NOT_FOUND, "no-route", &format!("no peer route {method} {path}"), &rid)
        }
    }
}

/// A refusal of a typed request: status, code, message.
type Refusal = (StatusCode, &'static str, String);

/// Decode a typed request, run `f`, encode its reply with the request's codec.
async fn serve<R, Fut>(
    req: http::Request<Incoming>,
    max: usize,
    rid: &str,
    f: impl FnOnce(R) -> Fut,
) -> http::Response<Body>
where
    R: PeerRpc + serde::de::DeserializeOwned,
    Fut: Future<Output = Result<R::Reply, Refusal>>,
{
    let bytes = match h::read_body(req.into_body(), max).await {
        Ok(b) => b,
        Err(e) => return h::error(StatusCode::BAD_REQUEST, "bad-request", &format!("{e:?}"), rid),
    };
    let r: R = match rpc::decode(R::CODEC, &bytes) {
        Ok(r) => r,
        Err(e) => return h::error(StatusCode::BAD_REQUEST, "unreadable", &format!("unreadable {}: {e}", R::PATH), rid),
    };
    match f(r).await {
        Ok(reply) => match rpc::encode(R::CODEC, &reply) {
            Ok(b) => http::Response::new(h::full(b)),
            Err(e) => h::error(StatusCode::INTERNAL_SERVER_ERROR, "internal", &e, rid),
        },
        Err((status, code, msg)) => h::error(status, code, &msg, rid),
    }
}

type AppendAnswer = Result<AppendEntriesResponse<u64>, RaftError<u64>>;
type SnapshotAnswer =
    Result<openraft::raft::InstallSnapshotResponse<u64>, RaftError<u64, openraft::error::InstallSnapshotError>>;

/// A leader's entries or heartbeat. Taken (a conflict too: the leader goes on to find where
/// the logs match), they are contact with the cluster (`contact.rs`), unless the sender
/// gossips `dormant`: a leader out of touch itself must not keep the one follower it still
/// reaches serving its stale view.
async fn append_entries(
    c: &Cluster,
    peer: &Peer,
    r: Fenced<AppendEntriesRequest<Control>>,
) -> Result<AppendAnswer, Refusal> {
    let r = raft_message(c, peer, r, |r| &r.vote).await?;
    let answer = c.raft.append_entries(r).await;
    if answer.as_ref().is_ok_and(|a| !matches!(a, AppendEntriesResponse::HigherVote(_))) {
        heard_from(c, peer);
    }
    Ok(answer)
}

/// A leader's snapshot; taken (its vote not refused), it is contact as entries are.
async fn install_snapshot(
    c: &Cluster,
    peer: &Peer,
    r: Fenced<InstallSnapshotRequest<Control>>,
) -> Result<SnapshotAnswer, Refusal> {
    let r = raft_message(c, peer, r, |r| &r.vote).await?;
    let vote = r.vote;
    let answer = c.raft.install_snapshot(r).await;
    if answer.as_ref().is_ok_and(|a| a.vote <= vote) {
        heard_from(c, peer);
    }
    Ok(answer)
}

fn heard_from(c: &Cluster, peer: &Peer) {
    let dormant =
        c.membership.live().read(|live| live.get(&peer.node).is_some_and(|p| p.mode == super::Mode::Dormant.as_str()));
    if !dormant {
        c.membership.heard_from_leader();
    }
}

/// A Raft message Raft may take: the vote it carries is the sender's own, and the sender
/// is of this node's formation (a node without one takes the sender's).
async fn raft_message<T>(
    c: &Cluster,
    peer: &Peer,
    r: Fenced<T>,
    vote: impl FnOnce(&T) -> &Vote<u64>,
) -> Result<T, Refusal> {
    sender_is(peer, vote(&r.rpc))?;
    match c.formation.admit(&peer.node, r.formation.as_deref()).await {
        Ok(()) => Ok(r.rpc),
        Err(e @ FenceError::Other { .. }) => Err((StatusCode::FORBIDDEN, "other-formation", e.to_string())),
        Err(e @ FenceError::Malformed { .. }) => Err((StatusCode::BAD_REQUEST, "bad-formation", e.to_string())),
        Err(e @ FenceError::Store(..)) => Err((StatusCode::SERVICE_UNAVAILABLE, "store", e.to_string())),
    }
}

/// Raft messages carry the vote of the node that sent them: it must be the sender's.
fn sender_is(peer: &Peer, vote: &Vote<u64>) -> Result<(), Refusal> {
    let claimed = vote.leader_id().voted_for();
    if claimed == Some(raft_id(&peer.node)) {
        return Ok(());
    }
    let msg = format!(
        "a Raft message from {} carries the vote of another node (raft id {claimed:?}); a node may only speak for itself",
        peer.node
    );
    Err((StatusCode::FORBIDDEN, "wrong-node", msg))
}

async fn forwarded_write(c: &Cluster, cmd: Command) -> Result<WriteReply, Refusal> {
    match tokio::time::timeout(Duration::from_secs(5), c.raft.client_write(c.with_first_placement(cmd))).await {
        Ok(Ok(r)) => {
            c.announce_commit().await;
            Ok(WriteReply { index: r.log_id.index })
        }
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
            Err((StatusCode::MISDIRECTED_REQUEST, "not-leader", "this node is no longer the leader".into()))
        }
        Ok(Err(e)) => Err((StatusCode::SERVICE_UNAVAILABLE, "raft", e.to_string())),
        Err(_) => Err((StatusCode::SERVICE_UNAVAILABLE, "timeout", "not committed within 5 s".into())),
    }
}
