//! The peer listener (`--peer-listen`): what nodes ask each other. JSON over HTTP/1, the
//! cluster's shared admin token as bearer.
//!
//! | route | |
//! | --- | --- |
//! | `POST /raft/append`, `/raft/vote`, `/raft/snapshot` | Raft RPCs |
//! | `POST /control/write` | a command forwarded to the leader → `{"index"}` |
//! | `GET /components/{digest}` | component bytes, for a node that lacks them |
//! | `GET /graph` | this node's call graph edges (for a cluster-wide `GET /v1/graph`) |
//! | `POST /grid/...` | the data grid's replication and kv routing (`grid::wire`, postcard) |

use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use hyper::body::Incoming;
use openraft::error::{ClientWriteError, RaftError};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::types::Command;
use super::{Cluster, WriteReply};
use crate::http::{self as h, Body};

pub async fn handle(cluster: Arc<Cluster>, max_body: usize, req: http::Request<Incoming>) -> http::Response<Body> {
    let rid = h::incoming_request_id(req.headers()).unwrap_or_else(|| cluster.registry.new_request_id());
    if cluster.faults.isolated() {
        h::drain(req.into_body()).await;
        return h::close_connection(h::error(StatusCode::SERVICE_UNAVAILABLE, "isolated", "fault injection", &rid));
    }
    if !crate::admin::bearer_matches(req.headers(), cluster.peers_token()) {
        h::drain(req.into_body()).await;
        let msg = "peer calls need the cluster's admin token; start every node with the same --admin-token";
        return h::close_connection(h::error(StatusCode::UNAUTHORIZED, "unauthorized", msg, &rid));
    }
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    match (&method, path.as_str()) {
        (&Method::POST, "/raft/append") => match body(req, max_body, &rid).await {
            Ok(rpc) => reply(&cluster.raft.append_entries(rpc).await, &rid),
            Err(r) => r,
        },
        (&Method::POST, "/raft/vote") => match body(req, max_body, &rid).await {
            Ok(rpc) => reply(&cluster.raft.vote(rpc).await, &rid),
            Err(r) => r,
        },
        (&Method::POST, "/raft/snapshot") => match body(req, max_body, &rid).await {
            Ok(rpc) => reply(&cluster.raft.install_snapshot(rpc).await, &rid),
            Err(r) => r,
        },
        (&Method::POST, "/control/write") => {
            let cmd: Command = match body(req, max_body, &rid).await {
                Ok(c) => c,
                Err(r) => return r,
            };
            let write = tokio::time::timeout(Duration::from_secs(5), cluster.raft.client_write(cmd)).await;
            match write {
                Ok(Ok(r)) => h::json(StatusCode::OK, &WriteReply { index: r.log_id.index }, &rid),
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                    h::error(StatusCode::MISDIRECTED_REQUEST, "not-leader", "this node is no longer the leader", &rid)
                }
                Ok(Err(e)) => h::error(StatusCode::SERVICE_UNAVAILABLE, "raft", &e.to_string(), &rid),
                Err(_) => h::error(StatusCode::SERVICE_UNAVAILABLE, "timeout", "not committed within 5 s", &rid),
            }
        }
        (&Method::POST, p) if p.starts_with("/grid/") => {
            let bytes = match h::read_body(req.into_body(), max_body).await {
                Ok(b) => b,
                Err(e) => return h::error(StatusCode::BAD_REQUEST, "bad-request", &format!("{e:?}"), &rid),
            };
            match crate::grid::wire::dispatch(cluster.registry.grid().replicas(), p, &bytes).await {
                Ok(out) => http::Response::new(h::full(bytes::Bytes::from(out))),
                Err(e) => h::error(StatusCode::BAD_REQUEST, "bad-grid-request", &e, &rid),
            }
        }
        (&Method::GET, "/graph") => reply(&cluster.registry.calls.report(), &rid),
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

async fn body<T: DeserializeOwned>(
    req: http::Request<Incoming>,
    max: usize,
    rid: &str,
) -> Result<T, http::Response<Body>> {
    let bytes = h::read_body(req.into_body(), max)
        .await
        .map_err(|e| h::error(StatusCode::BAD_REQUEST, "bad-request", &format!("{e:?}"), rid))?;
    serde_json::from_slice(&bytes).map_err(|e| h::error(StatusCode::BAD_REQUEST, "bad-json", &e.to_string(), rid))
}

fn reply<T: Serialize>(value: &T, rid: &str) -> http::Response<Body> {
    h::json(StatusCode::OK, value, rid)
}
