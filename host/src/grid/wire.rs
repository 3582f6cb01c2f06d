//! Grid RPCs between nodes: the messages live in `nanogrid_wire::grid` (each request
//! tied to its reply type by `GridRpc`), postcard bodies on the peer listener's
//! `POST /grid`. [`dispatch`] serves them; a node calls itself through it directly.
//!
//! | request | from → to | |
//! | --- | --- | --- |
//! | `AppendReq` | primary → replica | log entries after `prev`, at `epoch` |
//! | `SnapshotReq` | primary → replica | a partition's data in chunks, then its position |
//! | `FenceReq` | leader → replica | promise to refuse primaries older than `epoch` |
//! | `ConfirmReq` | primary → replica | "is `epoch` still current?" (linearizable reads) |
//! | `OpReq` | any node → primary | a guest's kv operation |
//! | `ListReq` | any node → primary | keys of some partitions |
//! | `StatusReq` | any node → any node | this node's partitions (for `GET /v1/grid`) |

pub use nanogrid_wire::grid::{
    AppendReply, AppendReq, ConfirmReq, FenceReply, FenceReq, GridReply, GridRequest, GridRpc, KvOp, ListReq, OpFail,
    OpReq, OpResult, PartStatus, SnapshotReq, StatusReq,
};

use super::replica::Replicas;

/// Serve one grid request on this node.
pub async fn dispatch(r: &std::sync::Arc<Replicas>, req: GridRequest) -> GridReply {
    match req {
        GridRequest::Append(a) => GridReply::Append(r.on_append(a).await),
        GridRequest::Snapshot(s) => GridReply::Append(r.on_snapshot(s).await),
        GridRequest::Fence(f) => GridReply::Fence(r.on_fence(f).await),
        GridRequest::Confirm(c) => GridReply::Confirm(r.on_confirm(c.p, c.epoch).await),
        GridRequest::Op(o) => GridReply::Op(r.execute(o.p, o.op, o.consistency).await),
        GridRequest::List(l) => GridReply::List(r.on_list(l).await),
        GridRequest::Status(_) => GridReply::Status(r.status().await),
    }
}
