//! Grid RPCs between nodes (postcard bodies on the peer listener, `POST /grid/...`), and
//! [`dispatch`], which serves them; a node calls itself through `dispatch` directly.
//!
//! | route | from → to | |
//! | --- | --- | --- |
//! | `/grid/append` | primary → replica | log entries after `prev`, at `epoch` |
//! | `/grid/snapshot` | primary → replica | a partition's data in chunks, then its position |
//! | `/grid/fence` | leader → replica | promise to refuse primaries older than `epoch` |
//! | `/grid/confirm` | primary → replica | "is `epoch` still current?" (linearizable reads) |
//! | `/grid/op` | any node → primary | a guest's kv operation |
//! | `/grid/list` | any node → primary | keys of some partitions |
//! | `/grid/status` | any node → any node | this node's partitions (for `GET /v1/grid`) |

use serde::{Deserialize, Serialize};

use super::part::Consistency;
use super::plog::{Entry, encode};
use super::replica::Replicas;

#[derive(Debug, Serialize, Deserialize)]
pub struct AppendReq {
    pub p: u32,
    pub epoch: u64,
    /// (lsn, epoch) of the entry just before `entries`: the replica's last must match.
    pub prev: (u64, u64),
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendReply {
    Ok {
        last: u64,
    },
    /// The replica's log ends elsewhere.
    Mismatch {
        last: u64,
        last_epoch: u64,
    },
    /// The replica promised a newer primary.
    Fenced {
        fence: u64,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SnapshotReq {
    pub p: u32,
    pub epoch: u64,
    /// The first chunk clears the replica's copy of the partition.
    pub first: bool,
    pub rows: Vec<(Vec<u8>, Vec<u8>)>,
    /// On the last chunk: the (lsn, epoch) the data is at.
    pub done: Option<(u64, u64)>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct FenceReq {
    pub p: u32,
    pub epoch: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct FenceReply {
    pub last: u64,
    pub last_epoch: u64,
    pub fence: u64,
}

/// A guest's kv operation on one key (namespaced: `service \0 key`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum KvOp {
    Get { key: Vec<u8> },
    Put { key: Vec<u8>, value: Vec<u8> },
    Delete { key: Vec<u8> },
    Cas { key: Vec<u8>, expected: Option<Vec<u8>>, new: Vec<u8> },
}

impl KvOp {
    pub fn key(&self) -> &[u8] {
        match self {
            KvOp::Get { key } | KvOp::Put { key, .. } | KvOp::Delete { key } | KvOp::Cas { key, .. } => key,
        }
    }
    pub fn name(&self) -> &'static str {
        match self {
            KvOp::Get { .. } => "get",
            KvOp::Put { .. } => "set",
            KvOp::Delete { .. } => "delete",
            KvOp::Cas { .. } => "cas",
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct OpReq {
    pub p: u32,
    pub op: KvOp,
    pub consistency: Consistency,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    Value(Option<Vec<u8>>),
    Done,
    Swapped(bool),
}

/// Why an operation did not run (or may not have).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum OpFail {
    /// Nothing was done: this node is not the partition's primary (any more).
    #[error("{0}")]
    NotPrimary(String),
    /// The operation failed; for a write, it may or may not have been applied.
    #[error("{0}")]
    Unavailable(String),
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ListReq {
    pub parts: Vec<u32>,
    pub prefix: Vec<u8>,
    pub after: Option<Vec<u8>>,
    pub limit: u32,
}

/// One partition as this node sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartStatus {
    pub p: u32,
    pub role: String,
    pub epoch: u64,
    pub last: u64,
    /// As primary: how far each replica has acknowledged.
    pub matched: Vec<(String, u64)>,
}

/// Serve one grid RPC; `None` when the route is unknown or the body unreadable.
pub async fn dispatch(r: &std::sync::Arc<Replicas>, path: &str, body: &[u8]) -> Result<Vec<u8>, String> {
    fn read<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, String> {
        postcard::from_bytes(body).map_err(|e| format!("unreadable grid request: {e}"))
    }
    Ok(match path {
        "/grid/append" => encode(&r.on_append(read(body)?).await),
        "/grid/snapshot" => encode(&r.on_snapshot(read(body)?).await),
        "/grid/fence" => encode(&r.on_fence(read(body)?).await),
        "/grid/confirm" => {
            let req: FenceReq = read(body)?;
            encode(&r.on_confirm(req.p, req.epoch).await)
        }
        "/grid/op" => {
            let req: OpReq = read(body)?;
            encode(&r.execute(req.p, req.op, req.consistency).await)
        }
        "/grid/list" => encode(&r.on_list(read(body)?).await),
        "/grid/status" => encode(&r.status().await),
        other => return Err(format!("no grid route {other}")),
    })
}
