//! The guests' kv API: each operation goes to its partition's primary, on this node or
//! over the peer RPC; reads at `one` are served by this node's replica when it has one.
//! While a partition has no reachable primary (a failover in progress) an operation that
//! surely did nothing yet is retried for up to [`ACK_TIMEOUT`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::part::{Consistency, partition_of, partition_of_kv};
use super::replica::{ACK_TIMEOUT, NetError, rpc};
use super::wire::{GridRpc, KvOp, ListReq, OpFail, OpReq, OpResult};
use super::{Grid, KvError, kv_key, plog};

/// A node's guest kv operations since start, for `/metrics`.
#[derive(Debug, Default)]
pub struct KvCounts {
    /// Served, by where they ran: `[local, forwarded]`.
    pub ops: [AtomicU64; 2],
    /// Failed (unavailable or not acknowledged in time).
    pub failed: AtomicU64,
}

impl Grid {
    pub async fn kv_get(&self, service: &str, key: &str, c: Consistency) -> Result<Option<Vec<u8>>, KvError> {
        if c == Consistency::One {
            // The stored row's key is built straight away (one allocation, no `kv_key`).
            let p = partition_of_kv(service, key, self.replicas.count());
            match self.replicas.read_cached(p, &plog::kv_data_key(p, service, key)) {
                Ok(Some(v)) => {
                    self.kv_counts.ops[0].fetch_add(1, Ordering::Relaxed);
                    return Ok(v);
                }
                Ok(None) => {}
                Err(e) => {
                    self.kv_counts.failed.fetch_add(1, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
        match self.run(KvOp::Get { key: kv_key(service, key) }, c).await? {
            OpResult::Value(v) => Ok(v),
            other => Err(KvError::Unavailable(format!("unexpected answer to a get: {other:?}"))),
        }
    }

    pub async fn kv_set(&self, service: &str, key: &str, value: Vec<u8>, c: Consistency) -> Result<(), KvError> {
        self.run(KvOp::Put { key: kv_key(service, key), value }, c).await.map(drop)
    }

    pub async fn kv_delete(&self, service: &str, key: &str, c: Consistency) -> Result<(), KvError> {
        self.run(KvOp::Delete { key: kv_key(service, key) }, c).await.map(drop)
    }

    /// Linearizable per key: decided by the primary, acknowledged at `quorum`.
    pub async fn kv_compare_and_swap(
        &self,
        service: &str,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    ) -> Result<bool, KvError> {
        match self.run(KvOp::Cas { key: kv_key(service, key), expected, new }, Consistency::Quorum).await? {
            OpResult::Swapped(b) => Ok(b),
            other => Err(KvError::Unavailable(format!("unexpected answer to a compare-and-swap: {other:?}"))),
        }
    }

    /// Keys of a service across all partitions (each read from a local replica when this
    /// node has one, else from the primary), merged in byte order.
    pub async fn kv_list_keys(
        &self,
        service: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, KvError> {
        let ns_len = kv_key(service, "").len();
        let prefix = kv_key(service, prefix);
        let after = after.map(|a| kv_key(service, a));
        let table = self.replicas.table();
        if table.is_empty() {
            return Err(KvError::Unavailable("the cluster has no partition table yet; retry shortly".into()));
        }
        let me = self.replicas.me();
        let mut by_node: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        for (p, info) in table.parts.iter().enumerate() {
            let node = if info.replicas.iter().any(|n| n == me) { me } else { info.primary.as_str() };
            by_node.entry(node).or_default().push(p as u32);
        }
        let mut keys = Vec::new();
        for (node, parts) in by_node {
            let req = ListReq { parts, prefix: prefix.clone(), after: after.clone(), limit: limit as u32 };
            let got = if node == me {
                self.replicas.on_list(req).await
            } else {
                match self.remote(node, req).await {
                    Ok(r) => r,
                    Err(e) => Err(OpFail::Unavailable(format!("listing keys on {node}: {e}"))),
                }
            };
            keys.extend(got.map_err(|e| KvError::Unavailable(e.to_string()))?);
        }
        keys.sort();
        keys.dedup();
        keys.truncate(limit);
        // Keys were written from WIT strings, so they are UTF-8.
        Ok(keys.into_iter().map(|k| String::from_utf8_lossy(&k[ns_len..]).into_owned()).collect())
    }

    async fn remote<R: GridRpc>(&self, node: &str, req: R) -> Result<R::Reply, NetError> {
        let Some(net) = self.replicas.net() else {
            return Err(NetError::NotSent("this node is not connected to a cluster".into()));
        };
        match tokio::time::timeout(ACK_TIMEOUT + Duration::from_secs(1), rpc(net.as_ref(), node, req)).await {
            Ok(r) => r,
            Err(_) => Err(NetError::Failed(format!("{node} did not answer in time"))),
        }
    }

    async fn run(&self, op: KvOp, c: Consistency) -> Result<OpResult, KvError> {
        let r = self.route(op, c).await;
        if r.is_err() {
            self.kv_counts.failed.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    async fn route(&self, op: KvOp, c: Consistency) -> Result<OpResult, KvError> {
        let p = partition_of(op.key(), self.replicas.count());
        let mut deadline = None;
        let read = matches!(op, KvOp::Get { .. });
        let me = self.replicas.me();
        loop {
            let table = self.replicas.table();
            // Where it runs (an index into `KvCounts::ops`), counted once it has run.
            let mut at = 0;
            let attempt = match table.parts.get(p as usize) {
                None => Err(OpFail::NotPrimary("the cluster has no partition table yet".into())),
                Some(info) if read && c == Consistency::One && info.replicas.iter().any(|n| n == me) => {
                    let v = self.replicas.read_local(p, op.key().to_vec()).await?;
                    self.kv_counts.ops[0].fetch_add(1, Ordering::Relaxed);
                    return Ok(OpResult::Value(v));
                }
                Some(info) if info.primary == me => self.replicas.execute(p, op.clone(), c).await,
                Some(info) => {
                    at = 1;
                    let req = OpReq { p, op: op.clone(), consistency: c };
                    match self.remote(&info.primary, req).await {
                        Ok(r) => r,
                        Err(e) if !e.sent() => {
                            Err(OpFail::NotPrimary(format!("primary {} unreachable: {e}", info.primary)))
                        }
                        Err(e) => Err(OpFail::Unavailable(format!(
                            "partition {p}: primary {} failed: {e}; a write may or may not have been applied",
                            info.primary
                        ))),
                    }
                }
            };
            match attempt {
                Ok(r) => {
                    self.kv_counts.ops[at].fetch_add(1, Ordering::Relaxed);
                    return Ok(r);
                }
                Err(e) => {
                    // Retry what surely did nothing yet (or was a read) once the table moves on.
                    let retry = read || matches!(e, OpFail::NotPrimary(_));
                    if !retry {
                        return Err(KvError::Unavailable(e.to_string()));
                    }
                    let deadline = *deadline.get_or_insert_with(|| Instant::now() + ACK_TIMEOUT);
                    if Instant::now() >= deadline {
                        return Err(KvError::Unavailable(format!(
                            "partition {p} has no primary that can serve this {} now ({e}); retry later",
                            op.name()
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::grid::MemoryStorage;

    const Q: Consistency = Consistency::Quorum;

    fn grid() -> Grid {
        Grid::new(Arc::new(MemoryStorage::default()))
    }

    #[tokio::test]
    async fn namespaces_do_not_overlap() {
        let g = grid();
        g.kv_set("a", "k", b"1".to_vec(), Q).await.unwrap();
        g.kv_set("ab", "k", b"2".to_vec(), Q).await.unwrap();
        // "a" + NUL + "../ab\0k" must not read service ab's key.
        assert_eq!(g.kv_get("a", "../ab\0k", Q).await.unwrap(), None);
        assert_eq!(g.kv_get("a", "k", Consistency::One).await.unwrap(), Some(b"1".to_vec()));
        assert_eq!(g.kv_list_keys("a", "", None, 10).await.unwrap(), vec!["k".to_string()]);
    }

    #[tokio::test]
    async fn compare_and_swap_checks_the_current_value() {
        let g = grid();
        assert!(g.kv_compare_and_swap("s", "k", None, b"1".to_vec()).await.unwrap());
        assert!(!g.kv_compare_and_swap("s", "k", None, b"2".to_vec()).await.unwrap());
        assert!(g.kv_compare_and_swap("s", "k", Some(b"1".to_vec()), b"2".to_vec()).await.unwrap());
        assert_eq!(g.kv_get("s", "k", Q).await.unwrap(), Some(b"2".to_vec()));
        g.kv_delete("s", "k", Consistency::All).await.unwrap();
        assert_eq!(g.kv_get("s", "k", Q).await.unwrap(), None);
    }

    #[tokio::test]
    async fn concurrent_cas_increments_lose_nothing() {
        let g = Arc::new(grid());
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let g = g.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..25 {
                    loop {
                        let cur = g.kv_get("s", "n", Q).await.unwrap();
                        let n: u32 = cur.as_ref().map_or(0, |v| std::str::from_utf8(v).unwrap().parse().unwrap());
                        if g.kv_compare_and_swap("s", "n", cur, (n + 1).to_string().into_bytes()).await.unwrap() {
                            break;
                        }
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(g.kv_get("s", "n", Q).await.unwrap(), Some(b"200".to_vec()));
    }

    #[tokio::test]
    async fn list_keys_pages_with_after_across_partitions() {
        let g = grid();
        for k in ["x1", "x2", "x3", "y1"] {
            g.kv_set("s", k, vec![], Q).await.unwrap();
        }
        assert_eq!(g.kv_list_keys("s", "x", None, 2).await.unwrap(), vec!["x1", "x2"]);
        assert_eq!(g.kv_list_keys("s", "x", Some("x2"), 2).await.unwrap(), vec!["x3"]);
    }
}
