//! Sealed gossip packets.
//!
//! ```text
//! packet    = magic "NGG" 0x01 (4) · nonce (24, random) · ciphertext (plaintext + 16-byte tag)
//! plaintext = cluster id length (1) · cluster id · sender's clock, ms since the epoch (8, LE) · payload
//! ```
//!
//! XChaCha20-Poly1305 under the cluster's 32-byte gossip key, the magic as associated
//! data. Its 24-byte nonces can be drawn at random without a counter to keep. An
//! [`Opener`] accepts a packet only if it authenticates, names this cluster, was sealed
//! within `window` of this node's clock, and its nonce was not seen before within that
//! window (so a captured packet replayed later is dropped either as `stale` or as
//! `replay`).

use std::collections::{HashSet, VecDeque};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};

/// The first bytes of every sealed packet: "NGG" and the format version.
pub const MAGIC: [u8; 4] = *b"NGG\x01";
pub const NONCE_LEN: usize = 24;
pub const TAG_LEN: usize = 16;
/// Bytes a packet adds to its payload besides the cluster id.
pub const OVERHEAD: usize = MAGIC.len() + NONCE_LEN + TAG_LEN + 1 + 8;
/// Longest cluster id (its length is one byte).
pub const MAX_CLUSTER_ID: usize = 255;
/// Nonces remembered at most; beyond that, packets are dropped as `busy` rather than
/// forgetting nonces early (which would let a replay through).
const MAX_SEEN: usize = 1 << 17;

/// The cluster's gossip key. Its `Debug` never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct GossipKey([u8; 32]);

impl std::fmt::Debug for GossipKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GossipKey(..)")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("a gossip key is 64 hex digits (32 bytes); this one has {0} characters")]
    Length(usize),
    #[error("a gossip key is 64 hex digits; found {0:?}")]
    NotHex(char),
    #[error("the system's random source failed: {0}")]
    Random(String),
}

impl GossipKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        GossipKey(bytes)
    }

    /// A new random key.
    pub fn generate() -> Result<Self, KeyError> {
        let mut k = [0u8; 32];
        getrandom::fill(&mut k).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(GossipKey(k))
    }

    /// Parse the key file's text: 64 hex digits, surrounding whitespace ignored.
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        if text.len() != 64 {
            return Err(KeyError::Length(text.chars().count()));
        }
        let mut k = [0u8; 32];
        let digits: Vec<u8> = text
            .chars()
            .map(|c| c.to_digit(16).map(|d| d as u8).ok_or(KeyError::NotHex(c)))
            .collect::<Result<_, _>>()?;
        for (i, pair) in digits.chunks(2).enumerate() {
            k[i] = pair[0] << 4 | pair[1];
        }
        Ok(GossipKey(k))
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&Key::from(self.0))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("cluster id {0:?} is longer than 255 bytes")]
    ClusterId(String),
    #[error("the system's random source failed: {0}")]
    Random(String),
}

/// Seal `payload` for `cluster_id` at `now_ms` with a fresh random nonce.
pub fn seal(key: &GossipKey, cluster_id: &str, now_ms: u64, payload: &[u8]) -> Result<Vec<u8>, SealError> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|e| SealError::Random(e.to_string()))?;
    seal_with_nonce(&key.cipher(), nonce, cluster_id, now_ms, payload)
}

fn seal_with_nonce(
    cipher: &XChaCha20Poly1305,
    nonce: [u8; NONCE_LEN],
    cluster_id: &str,
    now_ms: u64,
    payload: &[u8],
) -> Result<Vec<u8>, SealError> {
    if cluster_id.len() > MAX_CLUSTER_ID {
        return Err(SealError::ClusterId(cluster_id.to_string()));
    }
    let mut plain = Vec::with_capacity(1 + cluster_id.len() + 8 + payload.len());
    plain.push(cluster_id.len() as u8);
    plain.extend_from_slice(cluster_id.as_bytes());
    plain.extend_from_slice(&now_ms.to_le_bytes());
    plain.extend_from_slice(payload);
    let sealed = cipher
        .encrypt(&XNonce::from(nonce), Payload { msg: &plain, aad: &MAGIC })
        .expect("XChaCha20-Poly1305 encrypts any message below 256 GiB");
    let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + sealed.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Why a packet was dropped. [`Reject::reason`] is the metric label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    #[error("the packet is too short to be a sealed gossip packet")]
    Truncated,
    #[error("the packet is not a nanogrid gossip packet of a version this node reads")]
    Version,
    #[error(
        "the packet does not authenticate under this cluster's gossip key (forged, corrupted, or sealed with another key)"
    )]
    Forged,
    #[error("the packet was sealed for cluster {0:?}, not this one")]
    ForeignCluster(String),
    #[error(
        "the packet's clock is {skew_ms} ms off this node's; packets more than the window off are dropped (sync the nodes' clocks, e.g. with NTP)"
    )]
    Stale { skew_ms: i64 },
    #[error("the packet was already received (a replay)")]
    Replay,
    #[error("too many packets within the replay window to remember them all")]
    Busy,
}

impl Reject {
    pub fn reason(&self) -> &'static str {
        match self {
            Reject::Truncated => "truncated",
            Reject::Version => "version",
            Reject::Forged => "forged",
            Reject::ForeignCluster(_) => "foreign-cluster",
            Reject::Stale { .. } => "stale",
            Reject::Replay => "replay",
            Reject::Busy => "busy",
        }
    }

    /// Every reason, for metrics that show zeros too.
    pub const REASONS: [&'static str; 7] =
        ["truncated", "version", "forged", "foreign-cluster", "stale", "replay", "busy"];
}

/// Opens packets for one cluster and remembers recent nonces.
pub struct Opener {
    cipher: XChaCha20Poly1305,
    cluster_id: Vec<u8>,
    window_ms: u64,
    seen: HashSet<[u8; NONCE_LEN]>,
    /// Nonces in arrival order with their arrival time, to forget them once a replay of
    /// them would be stale anyway.
    order: VecDeque<([u8; NONCE_LEN], u64)>,
}

impl Opener {
    /// `window_ms`: how far a packet's clock may be from this node's.
    pub fn new(key: GossipKey, cluster_id: &str, window_ms: u64) -> Self {
        Opener {
            cipher: key.cipher(),
            cluster_id: cluster_id.as_bytes().to_vec(),
            window_ms,
            seen: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    /// The payload of an authentic, fresh packet of this cluster.
    pub fn open(&mut self, packet: &[u8], now_ms: u64) -> Result<Vec<u8>, Reject> {
        if packet.len() < MAGIC.len() + NONCE_LEN + TAG_LEN + 1 + 8 {
            return Err(Reject::Truncated);
        }
        if packet[..MAGIC.len()] != MAGIC {
            return Err(Reject::Version);
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&packet[MAGIC.len()..MAGIC.len() + NONCE_LEN]);
        let sealed = &packet[MAGIC.len() + NONCE_LEN..];
        let plain = self
            .cipher
            .decrypt(&XNonce::from(nonce), Payload { msg: sealed, aad: &MAGIC })
            .map_err(|_| Reject::Forged)?;
        // Authentic from here on: only a holder of the key made it.
        let id_len = usize::from(*plain.first().ok_or(Reject::Truncated)?);
        if plain.len() < 1 + id_len + 8 {
            return Err(Reject::Truncated);
        }
        let id = &plain[1..1 + id_len];
        if id != self.cluster_id.as_slice() {
            return Err(Reject::ForeignCluster(String::from_utf8_lossy(id).into_owned()));
        }
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&plain[1 + id_len..1 + id_len + 8]);
        let skew = i128::from(u64::from_le_bytes(ts)) - i128::from(now_ms);
        if skew.unsigned_abs() > u128::from(self.window_ms) {
            return Err(Reject::Stale { skew_ms: skew.clamp(i64::MIN.into(), i64::MAX.into()) as i64 });
        }
        self.forget_old(now_ms);
        if self.seen.contains(&nonce) {
            return Err(Reject::Replay);
        }
        if self.seen.len() >= MAX_SEEN {
            return Err(Reject::Busy);
        }
        self.seen.insert(nonce);
        self.order.push_back((nonce, now_ms));
        Ok(plain[1 + id_len + 8..].to_vec())
    }

    /// Nonces that arrived more than two windows ago: a copy of their packet would be
    /// more than one window off now, so it is dropped as stale without them.
    fn forget_old(&mut self, now_ms: u64) {
        while let Some(&(nonce, at)) = self.order.front() {
            if at.saturating_add(self.window_ms.saturating_mul(2)) >= now_ms {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&nonce);
        }
    }

    /// Nonces remembered now (for tests and metrics).
    pub fn remembered(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> GossipKey {
        GossipKey::from_bytes([b; 32])
    }

    #[test]
    fn a_sealed_packet_opens_once_and_hides_its_payload() {
        let p = seal(&key(1), "c1", 10_000, b"the payload").unwrap();
        assert_eq!(p.len(), OVERHEAD + 2 + b"the payload".len());
        assert!(!p.windows(11).any(|w| w == b"the payload"), "payload is encrypted");
        let mut o = Opener::new(key(1), "c1", 5_000);
        assert_eq!(o.open(&p, 12_000).unwrap(), b"the payload");
        assert_eq!(o.open(&p, 12_001), Err(Reject::Replay));
    }

    #[test]
    fn every_kind_of_bad_packet_is_named() {
        let mut o = Opener::new(key(1), "c1", 5_000);
        let good = seal(&key(1), "c1", 10_000, b"x").unwrap();
        // Truncated at every length below a minimal packet, and a cut-off tag.
        for n in 0..OVERHEAD {
            assert_eq!(o.open(&good[..n], 10_000), Err(Reject::Truncated), "len {n}");
        }
        assert_eq!(o.open(&good[..good.len() - 1], 10_000), Err(Reject::Forged));
        let mut v2 = good.clone();
        v2[3] = 2;
        assert_eq!(o.open(&v2, 10_000), Err(Reject::Version));
        // Any flipped bit of nonce or ciphertext fails authentication.
        for i in MAGIC.len()..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            assert_eq!(o.open(&bad, 10_000), Err(Reject::Forged), "byte {i}");
        }
        let other_key = seal(&key(2), "c1", 10_000, b"x").unwrap();
        assert_eq!(o.open(&other_key, 10_000), Err(Reject::Forged));
        let other_cluster = seal(&key(1), "c2", 10_000, b"x").unwrap();
        assert_eq!(o.open(&other_cluster, 10_000), Err(Reject::ForeignCluster("c2".into())));
        let old = seal(&key(1), "c1", 1_000, b"x").unwrap();
        assert_eq!(o.open(&old, 10_000), Err(Reject::Stale { skew_ms: -9_000 }));
        let future = seal(&key(1), "c1", 20_000, b"x").unwrap();
        assert_eq!(o.open(&future, 10_000), Err(Reject::Stale { skew_ms: 10_000 }));
        assert!(o.open(&good, 10_000).is_ok());
        assert_eq!(o.remembered(), 1);
    }

    #[test]
    fn nonces_are_forgotten_only_once_a_replay_would_be_stale() {
        let mut o = Opener::new(key(1), "c1", 1_000);
        let p = seal(&key(1), "c1", 10_000, b"x").unwrap();
        assert!(o.open(&p, 10_000).is_ok());
        // Within the window the nonce is remembered.
        assert_eq!(o.open(&p, 11_000), Err(Reject::Replay));
        // Later, a newer packet makes the old nonce go; the old packet is stale by then.
        let q = seal(&key(1), "c1", 12_500, b"y").unwrap();
        assert!(o.open(&q, 12_500).is_ok());
        assert_eq!(o.remembered(), 1);
        assert_eq!(o.open(&p, 12_500), Err(Reject::Stale { skew_ms: -2_500 }));
    }

    #[test]
    fn keys_round_trip_through_hex_and_refuse_bad_text() {
        let k = GossipKey::generate().unwrap();
        assert_eq!(GossipKey::from_hex(&format!("  {}\n", k.to_hex())).unwrap(), k);
        assert_eq!(GossipKey::from_hex("abc"), Err(KeyError::Length(3)));
        assert_eq!(GossipKey::from_hex(&"g".repeat(64)), Err(KeyError::NotHex('g')));
        assert_eq!(format!("{k:?}"), "GossipKey(..)");
        assert_ne!(GossipKey::generate().unwrap(), k);
    }
}
