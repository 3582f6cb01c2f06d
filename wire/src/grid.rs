//! The data grid's messages: partition-log entries (stored and replicated) and the RPCs
//! between nodes, postcard-encoded.
//!
//! Every request is one variant of [`GridRequest`] and implements [`GridRpc`], which ties
//! it to its reply type; the reply travels as a [`GridReply`] and [`GridRpc::from_reply`]
//! takes it apart, so a caller gets the reply type of the request it sent or a decode
//! error, never a value it has to interpret.
//!
//! | request | from → to | reply |
//! | --- | --- | --- |
//! | [`AppendReq`] | primary → replica | [`AppendReply`] |
//! | [`SnapshotReq`] | primary → replica | [`AppendReply`] |
//! | [`FenceReq`] | leader → replica | [`FenceReply`] |
//! | [`ConfirmReq`] | primary → replica | `bool` (is the epoch still current) |
//! | [`OpReq`] | any node → primary | `Result<OpResult, OpFail>` |
//! | [`ListReq`] | any node → primary | `Result<Vec<key>, OpFail>` |
//! | [`StatusReq`] | any node → any node | `Vec<PartStatus>` |

use serde::{Deserialize, Serialize};

/// How many replicas must have a write (or confirm a read) before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// The primary has it in its write-ahead log. A read may come from any replica.
    One,
    /// A majority of the partition's replicas.
    Quorum,
    /// Every in-sync replica.
    All,
}

impl Consistency {
    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::One => "one",
            Consistency::Quorum => "quorum",
            Consistency::All => "all",
        }
    }
}

/// One change. `key` is the namespaced key (`service \0 key`), without the partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        key: Vec<u8>,
    },
    /// Written by a new primary first, so entries of earlier epochs commit with it.
    Noop,
}

/// One entry of a partition's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub lsn: u64,
    pub epoch: u64,
    pub op: Op,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
        /// The replica gave the primary a read lease with this reply: it answers no fence
        /// for a newer primary until the lease ran out (none while such a fence waits).
        lease: bool,
    },
    /// The replica's log ends elsewhere.
    Mismatch { last: u64, last_epoch: u64 },
    /// The replica promised a newer primary.
    Fenced { fence: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotReq {
    pub p: u32,
    pub epoch: u64,
    /// The first chunk clears the replica's copy of the partition.
    pub first: bool,
    pub rows: Vec<(Vec<u8>, Vec<u8>)>,
    /// On the last chunk: the (lsn, epoch) the data is at.
    pub done: Option<(u64, u64)>,
}

/// Promise to refuse primaries older than `epoch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceReq {
    pub p: u32,
    pub epoch: u64,
    /// The table's primary, of this epoch, promised `epoch` already (the leader fenced it
    /// first): it serves no more reads as primary, so read leases given to primaries of
    /// this epoch or older need not be waited out.
    pub primary_fenced: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceReply {
    pub last: u64,
    pub last_epoch: u64,
    pub fence: u64,
}

/// "Is `epoch` still the newest primary you know of for `p`?" (linearizable reads).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfirmReq {
    pub p: u32,
    pub epoch: u64,
}

/// A guest's kv operation on one key (namespaced: `service \0 key`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListReq {
    pub parts: Vec<u32>,
    pub prefix: Vec<u8>,
    pub after: Option<Vec<u8>>,
    pub limit: u32,
}

/// "Which partitions do you hold, and how far along are they?"
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReq;

/// One partition as a node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartStatus {
    pub p: u32,
    pub role: String,
    pub epoch: u64,
    pub last: u64,
    /// As primary: how far each replica has acknowledged.
    pub matched: Vec<(String, u64)>,
}

/// Every grid request, as it travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GridRequest {
    Append(AppendReq),
    Snapshot(SnapshotReq),
    Fence(FenceReq),
    Confirm(ConfirmReq),
    Op(OpReq),
    List(ListReq),
    Status(StatusReq),
}

/// Every grid reply, as it travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GridReply {
    Append(AppendReply),
    Fence(FenceReply),
    Confirm(bool),
    Op(Result<OpResult, OpFail>),
    List(Result<Vec<Vec<u8>>, OpFail>),
    Status(Vec<PartStatus>),
}

impl GridRequest {
    /// The request's name, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            GridRequest::Append(_) => "append",
            GridRequest::Snapshot(_) => "snapshot",
            GridRequest::Fence(_) => "fence",
            GridRequest::Confirm(_) => "confirm",
            GridRequest::Op(_) => "op",
            GridRequest::List(_) => "list",
            GridRequest::Status(_) => "status",
        }
    }
}

/// A grid request and the reply it gets.
pub trait GridRpc: Into<GridRequest> + Send + 'static {
    type Reply: Send + 'static;
    /// The reply to this request, or `None` when the peer answered another kind.
    fn from_reply(reply: GridReply) -> Option<Self::Reply>;
}

macro_rules! rpc {
    ($req:ty, $variant:ident, $reply_variant:ident, $reply:ty) => {
        impl From<$req> for GridRequest {
            fn from(r: $req) -> Self {
                GridRequest::$variant(r)
            }
        }
        impl GridRpc for $req {
            type Reply = $reply;
            fn from_reply(reply: GridReply) -> Option<$reply> {
                match reply {
                    GridReply::$reply_variant(r) => Some(r),
                    _ => None,
                }
            }
        }
    };
}

rpc!(AppendReq, Append, Append, AppendReply);
rpc!(SnapshotReq, Snapshot, Append, AppendReply);
rpc!(FenceReq, Fence, Fence, FenceReply);
rpc!(ConfirmReq, Confirm, Confirm, bool);
rpc!(OpReq, Op, Op, Result<OpResult, OpFail>);
rpc!(ListReq, List, List, Result<Vec<Vec<u8>>, OpFail>);
rpc!(StatusReq, Status, Status, Vec<PartStatus>);

/// Encode a message (or a stored record).
pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).expect("encoding to a Vec cannot fail")
}

/// Decode a message; any byte string gives a value or an error, never a panic (fuzzed).
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_replies_are_tied_to_their_request() {
        let req: GridRequest = OpReq {
            p: 3,
            op: KvOp::Cas { key: b"s\0k".to_vec(), expected: None, new: b"v".to_vec() },
            consistency: Consistency::Quorum,
        }
        .into();
        assert_eq!(decode::<GridRequest>(&encode(&req)).unwrap(), req);
        assert_eq!(req.name(), "op");
        let ok = GridReply::Op(Ok(OpResult::Swapped(true)));
        assert_eq!(OpReq::from_reply(decode(&encode(&ok)).unwrap()), Some(Ok(OpResult::Swapped(true))));
        // A reply of another kind is not taken for this request's.
        assert_eq!(OpReq::from_reply(GridReply::Confirm(true)), None);
        assert_eq!(ConfirmReq::from_reply(GridReply::Confirm(false)), Some(false));
        assert_eq!(
            SnapshotReq::from_reply(GridReply::Append(AppendReply::Ok { last: 4, lease: true })),
            Some(AppendReply::Ok { last: 4, lease: true })
        );
    }

    #[test]
    fn garbage_decodes_to_an_error() {
        for bytes in [&[][..], &[7], &[0, 0xff, 0xff, 0xff, 0xff, 0x0f], &[4, 1, 2]] {
            assert!(decode::<GridRequest>(bytes).is_err(), "{bytes:?}");
        }
    }
}
