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

/// Another node and the address of its peer listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerTarget {
    pub node: String,
    pub addr: String,
}

/// Fault injection for the scenario tests (only reachable through the admin API of a node
/// started with `--fault-injection`): `isolated` drops all gossip and peer RPC, as if the
/// network were unplugged; `gossip_fail` makes the gossip socket report a fatal error and
/// `gossip_stall` makes its sends hang, so the gossip task dies or freezes.
#[derive(Debug, Default)]
pub struct Faults {
    isolated: AtomicBool,
    gossip_fail: AtomicBool,
    gossip_stall: AtomicBool,
}

impl Faults {
    pub fn isolated(&self) -> bool {
        self.isolated.load(Ordering::Relaxed)
    }
    pub fn set_isolated(&self, on: bool) {
        self.isolated.store(on, Ordering::Relaxed);
    }
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
