//! Partitions: which partition a key lives in, and the table saying where each partition's
//! replicas are. The table is kept by the control plane (Raft) in cluster mode; a single
//! node uses [`PartitionTable::single`], one replica per partition, itself.

use serde::{Deserialize, Serialize};

/// Partitions per cluster unless `--partitions` says otherwise. Fixed for the life of a
/// cluster and of a data dir (keys never re-hash).
pub const DEFAULT_PARTITIONS: u32 = 256;

/// The most partitions a grid may have (a partition's log keys hold its number in two
/// bytes; each partition costs every replica a lock, a log position and a table row).
pub const MAX_PARTITIONS: u32 = 4096;

/// Replicas per partition unless the cluster is configured otherwise.
pub const DEFAULT_REPLICATION: usize = 3;

pub use nanogrid_wire::grid::Consistency;

/// The partition of a storage key (`service \0 key`): FNV-1a, stable across builds.
pub fn partition_of(data_key: &[u8], count: u32) -> u32 {
    partition_of_parts(&[data_key], count)
}

/// [`partition_of`] of `service \0 key` without building it.
pub fn partition_of_kv(service: &str, key: &str, count: u32) -> u32 {
    partition_of_parts(&[service.as_bytes(), &[0], key.as_bytes()], count)
}

fn partition_of_parts(parts: &[&[u8]], count: u32) -> u32 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in parts.iter().flat_map(|p| p.iter()) {
        h = (h ^ u64::from(*b)).wrapping_mul(0x100000001b3);
    }
    (h % u64::from(count.max(1))) as u32
}

/// One partition's place: its primary, all replicas (the primary included), those known
/// to be in sync with the primary, and the epoch, which grows with every new primary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartInfo {
    pub primary: String,
    pub replicas: Vec<String>,
    pub isr: Vec<String>,
    pub epoch: u64,
}

/// A majority of `n` replicas.
pub fn majority(n: usize) -> usize {
    n / 2 + 1
}

impl PartInfo {
    /// Acknowledgements a `quorum` write needs: a majority of the replicas.
    pub fn quorum(&self) -> usize {
        majority(self.replicas.len())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionTable {
    /// Bumped by every change; the leader's changes are conditional on it.
    pub version: u64,
    pub replication: usize,
    pub parts: Vec<PartInfo>,
}

impl PartitionTable {
    /// A single node: it is every partition's only replica.
    pub fn single(me: &str, partitions: u32) -> Self {
        let part = PartInfo { primary: me.into(), replicas: vec![me.into()], isr: vec![me.into()], epoch: 1 };
        PartitionTable { version: 1, replication: 1, parts: vec![part; partitions as usize] }
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    pub fn count(&self) -> u32 {
        self.parts.len() as u32
    }

    /// The rows of `next` that differ from this table's (both of one partition count).
    pub fn changes_to(&self, next: &PartitionTable) -> Vec<(u32, PartInfo)> {
        next.parts
            .iter()
            .enumerate()
            .filter(|(p, info)| self.parts.get(*p) != Some(*info))
            .map(|(p, info)| (p as u32, info.clone()))
            .collect()
    }
}

/// The nodes that should hold partition `p`, best first: rendezvous hashing, so a node
/// joining or leaving moves only the partitions it gains or loses.
pub fn ranked(p: u32, nodes: &[String]) -> Vec<String> {
    let mut scored: Vec<(u64, &String)> = nodes
        .iter()
        .map(|n| {
            let mut h: u64 = 0xcbf29ce484222325 ^ u64::from(p).wrapping_mul(0x9e3779b97f4a7c15);
            for b in n.as_bytes() {
                h = (h ^ u64::from(*b)).wrapping_mul(0x100000001b3);
            }
            // Finalise (splitmix) so similar names spread well.
            h ^= h >> 33;
            h = h.wrapping_mul(0xff51afd7ed558ccd);
            h ^= h >> 33;
            (h, n)
        })
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    scored.into_iter().map(|(_, n)| n.clone()).collect()
}

/// The first table of a cluster: each partition on its `rf` best-ranked nodes, the first
/// of them primary, all in sync (there is no data yet).
pub fn initial(nodes: &[String], rf: usize, partitions: u32) -> PartitionTable {
    let rf = rf.clamp(1, nodes.len().max(1));
    let parts = (0..partitions)
        .map(|p| {
            let replicas: Vec<String> = ranked(p, nodes).into_iter().take(rf).collect();
            PartInfo { primary: replicas[0].clone(), isr: replicas.clone(), replicas, epoch: 1 }
        })
        .collect();
    PartitionTable { version: 1, replication: rf, parts }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("n{i}")).collect()
    }

    #[test]
    fn keys_spread_over_partitions() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..5000 {
            seen.insert(partition_of(format!("svc\0key-{i}").as_bytes(), DEFAULT_PARTITIONS));
        }
        assert_eq!(seen.len(), DEFAULT_PARTITIONS as usize);
        assert_eq!(partition_of(b"a\0k", 256), partition_of(b"a\0k", 256));
    }

    #[test]
    fn initial_tables_balance_replicas_and_primaries() {
        let t = initial(&names(3), 3, DEFAULT_PARTITIONS);
        assert!(t.parts.iter().all(|p| p.replicas.len() == 3 && p.isr == p.replicas));
        for n in names(3) {
            let primaries = t.parts.iter().filter(|p| p.primary == n).count();
            assert!((50..=120).contains(&primaries), "{n} is primary of {primaries}");
        }
        assert_eq!(initial(&names(2), 3, DEFAULT_PARTITIONS).replication, 2, "capped at the node count");
        // Another partition count: as many rows, primaries still spread.
        let t = initial(&names(3), 3, 64);
        assert_eq!(t.parts.len(), 64);
        for n in names(3) {
            let primaries = t.parts.iter().filter(|p| p.primary == n).count();
            assert!((10..=35).contains(&primaries), "{n} is primary of {primaries} of 64");
        }
    }

    #[test]
    fn a_joining_node_takes_about_its_share_and_nothing_else_moves() {
        let (three, four) = (names(3), names(4));
        let mut moved = 0;
        let mut gained = 0;
        for p in 0..DEFAULT_PARTITIONS {
            let before: Vec<String> = ranked(p, &three).into_iter().take(3).collect();
            let after: Vec<String> = ranked(p, &four).into_iter().take(3).collect();
            for n in &after {
                if !before.contains(n) {
                    assert_eq!(n, "n4", "only the new node gains replicas");
                    gained += 1;
                }
            }
            moved += before.iter().filter(|n| !after.contains(n)).count();
        }
        assert_eq!(moved, gained);
        // n4 should hold about 3/4 of the partitions (192 of 256).
        assert!((150..=230).contains(&gained), "n4 gained {gained}");
    }
}
