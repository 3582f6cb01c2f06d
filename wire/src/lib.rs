//! nanogrid's node-to-node formats, apart from the node so they can be fuzzed quickly:
//!
//! | module | what |
//! | --- | --- |
//! | [`seal`] | gossip packets sealed with XChaCha20-Poly1305 under the cluster's gossip key, with the cluster id and a timestamp inside; [`seal::Opener`] drops forged, truncated, replayed, stale and foreign packets |
//! | [`chitchat`] | a check of chitchat's plaintext packets before chitchat sees them (bounded decompression; no delta that would trip chitchat's own assertions) |
//! | [`grid`] | the data grid's RPC messages (postcard): partition-log entries, requests and their replies, tied by [`grid::GridRpc`] |
//! | [`spec`] | service specs and every check of a `PUT /v1/services/{name}` body that needs only the body |
//! | [`upload`] | the first checks of an uploaded component (header, layer, structure) |
//!
//! ```
//! use nanogrid_wire::seal::{GossipKey, Opener, seal};
//! let key = GossipKey::from_bytes([7; 32]);
//! let packet = seal(&key, "c1", 1_000, b"hello").unwrap();
//! let mut opener = Opener::new(key, "c1", 10_000);
//! assert_eq!(opener.open(&packet, 1_500).unwrap(), b"hello");
//! // The same packet again is a replay.
//! assert_eq!(opener.open(&packet, 1_600).unwrap_err().reason(), "replay");
//! ```

pub mod chitchat;
pub mod grid;
pub mod seal;
pub mod spec;
pub mod upload;
