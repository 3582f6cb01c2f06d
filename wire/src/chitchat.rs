//! A check of chitchat's plaintext packets (chitchat 0.13's wire format) before chitchat
//! parses them.
//!
//! Sealing keeps everyone without the gossip key out; this check is for what a key
//! holder (a compromised or buggy node) could still send. chitchat applies a node delta
//! whose `max_version` is below one of its key versions and then asserts that cannot
//! happen, which ends its gossip task; it also inflates every compressed block of a
//! packet, whatever their total, and keeps a state for every node a digest names. So a
//! packet passes only if it parses completely, each node's delta is either keys (in
//! rising versions) or one max version (chitchat writes nothing else), its compressed
//! blocks together inflate to at most [`MAX_INFLATED`] bytes, and it names at most
//! [`MAX_NODES`] nodes.
//!
//! ```text
//! packet  = magic 45139 (u16 LE) · protocol version (0|1) · type · body
//! Syn     = digest · cluster id (str)          SynAck = digest · delta
//! Ack     = delta                              BadCluster = (nothing)
//! digest  = v0: count (u16) · (node id · node digest)*   v1: stream of the same
//! delta   = stream of ops: Node(id, last_gc, from_version) | KeyValue(key, value, version, status) | SetMaxVersion(v)
//! stream  = blocks: 1 compressed (u16 len · zstd) | 2 plain (u16 len · bytes), ended by 0
//! str     = u16 LE length · UTF-8       node id = str · generation (u64) · ip (4|6 · octets) · port (u16)
//! ```

const MAGIC: u16 = 45_139;
/// Most bytes all compressed blocks of one packet may inflate to (chitchat's own packets
/// are below 64 KiB in all).
pub const MAX_INFLATED: usize = 1 << 20;
const BLOCK_MAX: usize = u16::MAX as usize;
/// Most nodes one packet's digest or delta may name.
pub const MAX_NODES: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("not a chitchat packet: {0}")]
    Malformed(&'static str),
    #[error("a compressed block does not inflate")]
    Inflate,
    #[error("compressed blocks inflate to more than {MAX_INFLATED} bytes")]
    TooLarge,
    #[error("node {0:?}'s delta mixes keys and a max version (chitchat sends one or the other)")]
    Mixed(String),
    #[error("the packet names more than {MAX_NODES} nodes")]
    TooManyNodes,
    #[error("a delta names node {0:?} (one incarnation of it) twice")]
    DuplicateNode(String),
}

impl Invalid {
    /// The metric label: `malformed` for anything chitchat would not parse, `invalid` for
    /// what it would parse and then fail on.
    pub fn reason(&self) -> &'static str {
        match self {
            Invalid::Malformed(_) | Invalid::Inflate => "malformed",
            Invalid::TooLarge | Invalid::Mixed(_) | Invalid::TooManyNodes | Invalid::DuplicateNode(_) => "invalid",
        }
    }
}

/// Check one plaintext chitchat packet.
pub fn check(packet: &[u8]) -> Result<(), Invalid> {
    let mut r = Reader { buf: packet, inflated: 0 };
    if r.u16()? != MAGIC {
        return Err(Invalid::Malformed("bad magic number"));
    }
    let version = r.u8()?;
    if version > 1 {
        return Err(Invalid::Malformed("unknown protocol version"));
    }
    match r.u8()? {
        0 => {
            r.digest(version)?;
            r.str()?;
        }
        1 => {
            r.digest(version)?;
            r.delta()?;
        }
        2 => r.delta()?,
        3 => {}
        _ => return Err(Invalid::Malformed("unknown message type")),
    }
    Ok(())
}

struct Reader<'a> {
    buf: &'a [u8],
    /// Bytes inflated so far from compressed blocks of this packet.
    inflated: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Invalid> {
        if self.buf.len() < n {
            return Err(Invalid::Malformed("ends early"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, Invalid> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, Invalid> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u64(&mut self) -> Result<u64, Invalid> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }

    fn str(&mut self) -> Result<&'a str, Invalid> {
        let n = usize::from(self.u16()?);
        std::str::from_utf8(self.take(n)?).map_err(|_| Invalid::Malformed("a string is not UTF-8"))
    }

    /// A node's chitchat id: its name, and the whole encoded id (name, generation,
    /// gossip address), which is what tells two incarnations of one name apart.
    fn node_id(&mut self) -> Result<(&'a str, &'a [u8]), Invalid> {
        let start = self.buf;
        let id = self.str()?;
        self.u64()?;
        match self.u8()? {
            4 => self.take(4)?,
            6 => self.take(16)?,
            _ => return Err(Invalid::Malformed("bad IP version")),
        };
        self.u16()?;
        Ok((id, &start[..start.len() - self.buf.len()]))
    }

    fn node_digest(&mut self) -> Result<(), Invalid> {
        self.node_id()?;
        self.take(24)?; // heartbeat, last gc version, max version
        Ok(())
    }

    fn digest(&mut self, version: u8) -> Result<(), Invalid> {
        if version == 0 {
            let n = usize::from(self.u16()?);
            if n > MAX_NODES {
                return Err(Invalid::TooManyNodes);
            }
            for _ in 0..n {
                self.node_digest()?;
            }
            return Ok(());
        }
        let data = self.stream()?;
        let mut inner = Reader { buf: &data, inflated: 0 };
        let mut n = 0;
        while !inner.buf.is_empty() {
            n += 1;
            if n > MAX_NODES {
                return Err(Invalid::TooManyNodes);
            }
            inner.node_digest()?;
        }
        Ok(())
    }

    /// A block stream, inflated.
    fn stream(&mut self) -> Result<Vec<u8>, Invalid> {
        let mut out = Vec::new();
        loop {
            match self.u8()? {
                0 => return Ok(out),
                1 => {
                    let n = usize::from(self.u16()?);
                    let block = self.take(n)?;
                    let plain = zstd::bulk::decompress(block, BLOCK_MAX).map_err(|_| Invalid::Inflate)?;
                    self.inflated += plain.len();
                    if self.inflated > MAX_INFLATED {
                        return Err(Invalid::TooLarge);
                    }
                    out.extend_from_slice(&plain);
                }
                2 => {
                    let n = usize::from(self.u16()?);
                    out.extend_from_slice(self.take(n)?);
                }
                _ => return Err(Invalid::Malformed("bad block type")),
            }
        }
    }

    fn delta(&mut self) -> Result<(), Invalid> {
        let data = self.stream()?;
        let mut ops = Reader { buf: &data, inflated: 0 };
        let mut seen: Vec<&[u8]> = Vec::new();
        // The node whose ops these are, and what it has had so far.
        let mut node: Option<NodeOps> = None;
        while !ops.buf.is_empty() {
            match ops.u8()? {
                0 => {
                    let (id, whole) = ops.node_id()?;
                    ops.u64()?; // last gc version
                    ops.u64()?; // from version (excluded)
                    if seen.contains(&whole) {
                        return Err(Invalid::DuplicateNode(id.to_string()));
                    }
                    if seen.len() == MAX_NODES {
                        return Err(Invalid::TooManyNodes);
                    }
                    seen.push(whole);
                    node = Some(NodeOps { id, last_key: 0, max_set: false });
                }
                1 => {
                    let n = node.as_mut().ok_or(Invalid::Malformed("a key before any node"))?;
                    ops.str()?;
                    ops.str()?;
                    let version = ops.u64()?;
                    if ops.u8()? > 2 {
                        return Err(Invalid::Malformed("bad deletion status"));
                    }
                    if n.max_set {
                        return Err(Invalid::Mixed(n.id.to_string()));
                    }
                    // chitchat's own parser refuses versions that do not increase.
                    if version <= n.last_key {
                        return Err(Invalid::Malformed("key versions do not increase"));
                    }
                    n.last_key = version;
                }
                2 => {
                    let n = node.as_mut().ok_or(Invalid::Malformed("a max version before any node"))?;
                    ops.u64()?;
                    if n.max_set || n.last_key > 0 {
                        return Err(Invalid::Mixed(n.id.to_string()));
                    }
                    n.max_set = true;
                }
                _ => return Err(Invalid::Malformed("bad delta op")),
            }
        }
        Ok(())
    }
}

/// One node's delta so far: the last key version and whether a max version was set.
struct NodeOps<'a> {
    id: &'a str,
    last_key: u64,
    max_set: bool,
}

/// Builders of chitchat-format packets, for tests (here, in the node's tests and in the
/// end-to-end suite, which sends crafted gossip at a running cluster).
pub mod craft {
    /// A delta op, as chitchat writes it.
    pub enum Op<'a> {
        Node { id: &'a str, generation: u64, addr: std::net::SocketAddrV4, last_gc: u64, from: u64 },
        Kv { key: &'a str, value: &'a str, version: u64 },
        SetMax(u64),
    }

    fn str(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u16).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }

    fn ops(ops: &[Op]) -> Vec<u8> {
        let mut raw = Vec::new();
        for op in ops {
            match op {
                Op::Node { id, generation, addr, last_gc, from } => {
                    raw.push(0);
                    str(&mut raw, id);
                    raw.extend_from_slice(&generation.to_le_bytes());
                    raw.push(4);
                    raw.extend_from_slice(&addr.ip().octets());
                    raw.extend_from_slice(&addr.port().to_le_bytes());
                    raw.extend_from_slice(&last_gc.to_le_bytes());
                    raw.extend_from_slice(&from.to_le_bytes());
                }
                Op::Kv { key, value, version } => {
                    raw.push(1);
                    str(&mut raw, key);
                    str(&mut raw, value);
                    raw.extend_from_slice(&version.to_le_bytes());
                    raw.push(0);
                }
                Op::SetMax(v) => {
                    raw.push(2);
                    raw.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
        raw
    }

    /// An Ack message carrying `ops` in one uncompressed block.
    pub fn ack(delta: &[Op]) -> Vec<u8> {
        let raw = ops(delta);
        let mut out = super::MAGIC.to_le_bytes().to_vec();
        out.extend_from_slice(&[0, 2, 2]);
        out.extend_from_slice(&(raw.len() as u16).to_le_bytes());
        out.extend_from_slice(&raw);
        out.push(0);
        out
    }

    /// A Syn message (protocol v0) with an empty digest.
    pub fn syn(cluster_id: &str) -> Vec<u8> {
        let mut out = super::MAGIC.to_le_bytes().to_vec();
        out.extend_from_slice(&[0, 0, 0, 0]);
        str(&mut out, cluster_id);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::craft::{Op, ack, syn};
    use super::*;

    fn node(id: &str) -> Op<'_> {
        Op::Node { id, generation: 7, addr: "127.0.0.1:7002".parse().unwrap(), last_gc: 0, from: 0 }
    }

    #[test]
    fn well_formed_messages_pass() {
        assert_eq!(check(&syn("c1")), Ok(()));
        let d = ack(&[node("n1"), Op::Kv { key: "peer", value: "x", version: 1 }, node("n2"), Op::SetMax(4)]);
        assert_eq!(check(&d), Ok(()));
        let mut bad_cluster = MAGIC.to_le_bytes().to_vec();
        bad_cluster.extend_from_slice(&[0, 3]);
        assert_eq!(check(&bad_cluster), Ok(()), "BadCluster");
    }

    #[test]
    fn the_assertion_tripping_delta_is_refused() {
        // A key at version 9 and then the node's max version set to 5: chitchat would
        // apply the key and assert that max >= 9.
        let d = ack(&[node("n2"), Op::Kv { key: "peer", value: "x", version: 9 }, Op::SetMax(5)]);
        assert_eq!(check(&d), Err(Invalid::Mixed("n2".into())));
        assert_eq!(check(&d).unwrap_err().reason(), "invalid");
        // The same after a later key: max 6, keys at 9 and 6 (chitchat would assert 6 >= 9).
        let later = Op::Kv { key: "b", value: "y", version: 6 };
        let d = ack(&[node("n2"), Op::Kv { key: "a", value: "x", version: 9 }, Op::SetMax(5), later]);
        assert_eq!(check(&d), Err(Invalid::Mixed("n2".into())));
        // A max version alone (what chitchat sends for a node without keys) passes; two do not.
        assert_eq!(check(&ack(&[node("n2"), Op::SetMax(5)])), Ok(()));
        assert_eq!(check(&ack(&[node("n2"), Op::SetMax(5), Op::SetMax(7)])), Err(Invalid::Mixed("n2".into())));
    }

    #[test]
    fn malformed_input_is_refused_without_panicking() {
        let good = ack(&[node("n1"), Op::Kv { key: "k", value: "v", version: 1 }]);
        for n in 0..good.len() {
            assert!(check(&good[..n]).is_err(), "a packet cut at {n} bytes");
        }
        let dup = ack(&[node("n1"), node("n1")]);
        assert_eq!(check(&dup), Err(Invalid::DuplicateNode("n1".into())));
        // Two incarnations of one name (a restarted node) are two nodes to chitchat.
        let later = Op::Node { id: "n1", generation: 8, addr: "127.0.0.1:7002".parse().unwrap(), last_gc: 0, from: 0 };
        assert_eq!(check(&ack(&[node("n1"), later])), Ok(()));
        let backwards =
            ack(&[node("n1"), Op::Kv { key: "a", value: "", version: 3 }, Op::Kv { key: "b", value: "", version: 2 }]);
        assert_eq!(check(&backwards).unwrap_err().reason(), "malformed");
        assert_eq!(check(&ack(&[Op::SetMax(1)])).unwrap_err().reason(), "malformed");
    }

    #[test]
    fn compressed_blocks_may_not_inflate_beyond_the_bound() {
        let big = zstd::bulk::compress(&vec![0u8; BLOCK_MAX], 3).unwrap();
        let mut p = MAGIC.to_le_bytes().to_vec();
        p.extend_from_slice(&[0, 2]);
        for _ in 0..(MAX_INFLATED / BLOCK_MAX + 1) {
            p.push(1);
            p.extend_from_slice(&(big.len() as u16).to_le_bytes());
            p.extend_from_slice(&big);
        }
        p.push(0);
        assert!(p.len() < 4096, "a small packet ({} bytes)", p.len());
        assert_eq!(check(&p), Err(Invalid::TooLarge));
    }
}
