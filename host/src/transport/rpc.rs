//! Typed peer calls: each request type names its route, its encoding and its reply type,
//! so a caller gets `R::Reply` or an [`RpcError`] that says whether the request may have
//! reached the peer.

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// How a request and its reply are encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Control-plane messages (openraft's types use serde features postcard lacks).
    Json,
    /// The data grid's messages: compact, kv values are bytes.
    Postcard,
}

/// A request to another node's peer listener, tied to its reply.
pub trait PeerRpc: Serialize + Send + Sync {
    /// The peer route (`POST`).
    const PATH: &'static str;
    const CODEC: Codec = Codec::Json;
    /// The largest reply read; a longer one is a [`RpcError::Decode`].
    const MAX_REPLY: usize = 16 << 20;
    type Reply: DeserializeOwned + Serialize + Send;
}

pub fn encode<T: Serialize>(codec: Codec, v: &T) -> Result<Bytes, String> {
    match codec {
        Codec::Json => serde_json::to_vec(v).map(Bytes::from).map_err(|e| e.to_string()),
        Codec::Postcard => postcard::to_allocvec(v).map(Bytes::from).map_err(|e| e.to_string()),
    }
}

pub fn decode<T: DeserializeOwned>(codec: Codec, bytes: &[u8]) -> Result<T, String> {
    match codec {
        Codec::Json => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
        Codec::Postcard => postcard::from_bytes(bytes).map_err(|e| e.to_string()),
    }
}

/// Why a peer call gave no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// Nothing reached the peer (no connection, the handshake failed, this node is cut
    /// off): retrying cannot apply anything twice.
    #[error("{node} was not reached: {reason}")]
    NotSent { node: String, reason: String },
    /// The request was sent and then the call failed (timeout, connection lost): the
    /// peer may have acted on it.
    #[error("{node} may have received the request, but the call failed: {reason}")]
    Failed { node: String, reason: String },
    /// The peer answered with an error.
    #[error("{node} refused the call ({status} {code}): {message}")]
    Refused { node: String, status: u16, code: String, message: String },
    /// The peer answered something this node cannot read (or too much of it).
    #[error("{node} sent an unreadable answer: {reason}")]
    Decode { node: String, reason: String },
}

impl RpcError {
    /// Whether the peer may have received the request.
    pub fn sent(&self) -> bool {
        !matches!(self, RpcError::NotSent { .. })
    }

    pub fn node(&self) -> &str {
        match self {
            RpcError::NotSent { node, .. }
            | RpcError::Failed { node, .. }
            | RpcError::Refused { node, .. }
            | RpcError::Decode { node, .. } => node,
        }
    }

    /// A peer's error answer, from its JSON error body when it has one.
    pub fn refused(node: &str, status: u16, body: &[u8]) -> RpcError {
        let v: Option<serde_json::Value> = serde_json::from_slice(body).ok();
        let field = |k: &str| v.as_ref().and_then(|v| v.get("error")?.get(k)?.as_str().map(str::to_string));
        RpcError::Refused {
            node: node.to_string(),
            status,
            code: field("code").unwrap_or_else(|| "unknown".into()),
            message: field("message")
                .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned()),
        }
    }
}
