//! Grid RPCs between nodes: the messages live in `nanogrid_wire::grid` (each request
//! tied to its reply type by `GridRpc`), postcard bodies on the peer listener's
//! `POST /grid`. [`super::replica::Replicas::serve`] serves them; a node calls itself through it
//! directly.
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
