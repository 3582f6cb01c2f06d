//! How nodes reach each other: the cluster's secrets ([`secrets`]), mutual TLS
//! ([`tls`]), typed peer calls ([`rpc`]) over HTTP/2 connections kept per peer
//! ([`client`]), and the peer listener's accept loop ([`server`]), which authenticates
//! every connection before any route sees a request.
//!
//! A peer is always dialed as a node id *and* an address ([`PeerTarget`]): the address may
//! come from gossip, but the TLS handshake succeeds only if the far end holds that node's
//! certificate, so a wrong or forged address gets nothing. No bearer token crosses
//! between nodes.

pub mod client;
pub mod rpc;
pub mod secrets;
pub mod server;
pub mod tls;

use std::sync::atomic::{AtomicBool, Ordering};

pub use client::PeerClient;
pub use rpc::{Codec, PeerRpc, RpcError};
pub use server::Peer;

/// The header a peer request names its sender in; it must match the node id of the
/// client certificate (and is all there is in plaintext benchmark mode).
pub const NODE_HEADER: &str = "x-nanogrid-node";

/// The header every peer request and answer names the peer protocol it speaks in.
pub const PROTOCOL_HEADER: &str = "x-nanogrid-peer-protocol";

/// The peer protocol this build speaks: the shape of every message between nodes (Raft,
/// the grid, barriers, forwarded requests). Bumped with any change a node of the previous
/// protocol could misread (postcard messages carry no field names, so a changed one can
/// decode as something else). A node refuses a request of another protocol, or without
/// one (a build from before the header, whose messages may differ too), with
/// `protocol-mismatch`; a caller treats such an answer the same way. Nodes of one cluster
/// run one protocol: upgrade them together.
pub const PROTOCOL: u32 = 2;

/// Whether a peer message's `PROTOCOL_HEADER` (if any) names this build's protocol; if
/// not, what to tell the operator about the sender.
pub fn protocol_mismatch(value: Option<&http::HeaderValue>) -> Option<String> {
    let theirs = value.map(|v| v.to_str().unwrap_or("?"));
    match theirs {
        Some(p) if p.parse::<u32>() == Ok(PROTOCOL) => None,
        Some(p) => Some(format!(
            "it speaks peer protocol {p} and this node (nanogrid {}) speaks {PROTOCOL}; run one nanogrid release on every node of a cluster",
            env!("CARGO_PKG_VERSION")
        )),
        None => Some(format!(
            "it names no peer protocol (a nanogrid build from before peer protocol versions) and this node (nanogrid {}) speaks {PROTOCOL}; run one nanogrid release on every node of a cluster",
            env!("CARGO_PKG_VERSION")
        )),
    }
}

/// Another node and the address of its peer listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerTarget {
    pub node: String,
    pub addr: String,
}

/// Faults of the gossip task itself, for the test that checks it is restarted (only
/// reachable through the admin API of a node started with `--fault-injection`):
/// `gossip_fail` makes the gossip socket report a fatal error and `gossip_stall` makes its
/// sends hang, so the task dies or freezes. Network faults (cut-offs, partitions) are
/// real dropped packets in network namespaces (the scenario driver, `./dev chaos`), not
/// switches in the node.
#[derive(Debug, Default)]
pub struct Faults {
    gossip_fail: AtomicBool,
    gossip_stall: AtomicBool,
}

impl Faults {
    /// Take a pending gossip failure (it fires once).
    pub fn take_gossip_fail(&self) -> bool {
        self.gossip_fail.swap(false, Ordering::Relaxed)
    }
    pub fn set_gossip_fail(&self) {
        self.gossip_fail.store(true, Ordering::Relaxed);
    }
    /// Take a pending gossip stall (it fires once: the socket that takes it hangs).
    pub fn take_gossip_stall(&self) -> bool {
        self.gossip_stall.swap(false, Ordering::Relaxed)
    }
    pub fn set_gossip_stall(&self) {
        self.gossip_stall.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_builds_peer_protocol_passes() {
        assert_eq!(protocol_mismatch(Some(&http::HeaderValue::from(PROTOCOL))), None);
        let other = protocol_mismatch(Some(&http::HeaderValue::from(PROTOCOL + 1))).unwrap();
        assert!(other.contains(&format!("speaks peer protocol {}", PROTOCOL + 1)), "{other}");
        let none = protocol_mismatch(None).unwrap();
        assert!(none.contains("names no peer protocol"), "{none}");
    }
}
