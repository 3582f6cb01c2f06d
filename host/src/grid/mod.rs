//! The data grid: component blobs, service specs and per-service kv state.
//!
//! [`Storage`] is the narrow, synchronous interface the rest of the node stores through;
//! it never mentions RocksDB. [`RocksStorage`] is the real implementation (one RocksDB per
//! node, column families per kind of data) and [`MemoryStorage`] backs unit tests.
//! [`Grid`] wraps a `Storage` for async callers: every call runs on tokio's blocking pool,
//! so RocksDB never blocks an async worker, and it owns the kv namespacing and the
//! per-key locks that make compare-and-swap atomic.
//!
//! In `single` mode there is one replica, so every consistency level means "durable in this
//! node's write-ahead log".

mod memory;
mod rocks;

use std::sync::{Arc, Mutex};

pub use memory::MemoryStorage;
pub use rocks::RocksStorage;

/// Where a record lives. Each table is a separate keyspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    /// Component bytes by digest (`sha256:<hex>`).
    Components,
    /// Service specs (JSON) by service name.
    Services,
    /// Guest kv data by `service \0 key`.
    Kv,
    /// Node metadata (ids, format versions).
    Meta,
    /// The control plane's Raft log, vote and applied state (`control::store`).
    Control,
}

impl Table {
    pub const ALL: [Table; 5] = [Table::Components, Table::Services, Table::Kv, Table::Meta, Table::Control];

    pub fn name(self) -> &'static str {
        match self {
            Table::Components => "components",
            Table::Services => "services",
            Table::Kv => "kv",
            Table::Meta => "meta",
            Table::Control => "control",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage i/o failed: {0}")]
    Io(String),
    #[error("storage is closed")]
    Closed,
}

pub type StorageResult<T> = Result<T, StorageError>;

/// Whether a write must reach the disk before it returns. Admin writes (deploys) are
/// synced; kv writes are in the write-ahead log, which survives a crash of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    Synced,
    Logged,
}

/// One change in an atomic batch.
#[derive(Debug, Clone)]
pub enum BatchOp {
    Put(Table, Vec<u8>, Vec<u8>),
    Delete(Table, Vec<u8>),
}

/// A node-local ordered key-value store. Implementations are thread-safe and blocking.
pub trait Storage: Send + Sync + 'static {
    fn get(&self, table: Table, key: &[u8]) -> StorageResult<Option<Vec<u8>>>;
    /// Apply every op or none.
    fn write(&self, ops: Vec<BatchOp>, durability: Durability) -> StorageResult<()>;
    /// Up to `limit` entries whose key starts with `prefix` and is strictly greater than
    /// `after` (when given), in byte order.
    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> StorageResult<Vec<(Vec<u8>, Vec<u8>)>>;
}

/// Errors a kv call can give a guest.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("the storage task failed: {0}")]
    Join(String),
}

/// Number of lock stripes serialising writes per key; a power of two.
const STRIPES: usize = 64;

/// Async access to a [`Storage`], with per-service kv namespaces.
pub struct Grid {
    storage: Arc<dyn Storage>,
    // Writes to one key take its stripe, so compare-and-swap's read-compare-write cannot
    // interleave with another write of the same key.
    stripes: Arc<[Mutex<()>; STRIPES]>,
}

impl Grid {
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        Grid { storage, stripes: Arc::new(std::array::from_fn(|_| Mutex::new(()))) }
    }

    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// Run a blocking storage call off the async workers.
    pub async fn blocking<R, F>(&self, f: F) -> Result<R, KvError>
    where
        R: Send + 'static,
        F: FnOnce(&dyn Storage) -> StorageResult<R> + Send + 'static,
    {
        let storage = self.storage.clone();
        tokio::task::spawn_blocking(move || f(storage.as_ref()))
            .await
            .map_err(|e| KvError::Join(e.to_string()))?
            .map_err(KvError::from)
    }

    pub async fn kv_get(&self, service: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let k = kv_key(service, key);
        self.blocking(move |s| s.get(Table::Kv, &k)).await
    }

    pub async fn kv_set(&self, service: &str, key: &str, value: Vec<u8>) -> Result<(), KvError> {
        let k = kv_key(service, key);
        let stripes = self.stripes.clone();
        self.blocking(move |s| {
            let _guard = lock_stripe(&stripes, &k);
            s.write(vec![BatchOp::Put(Table::Kv, k.clone(), value)], Durability::Logged)
        })
        .await
    }

    pub async fn kv_delete(&self, service: &str, key: &str) -> Result<(), KvError> {
        let k = kv_key(service, key);
        let stripes = self.stripes.clone();
        self.blocking(move |s| {
            let _guard = lock_stripe(&stripes, &k);
            s.write(vec![BatchOp::Delete(Table::Kv, k.clone())], Durability::Logged)
        })
        .await
    }

    pub async fn kv_compare_and_swap(
        &self,
        service: &str,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    ) -> Result<bool, KvError> {
        let k = kv_key(service, key);
        let stripes = self.stripes.clone();
        self.blocking(move |s| {
            let _guard = lock_stripe(&stripes, &k);
            let current = s.get(Table::Kv, &k)?;
            if current != expected {
                return Ok(false);
            }
            s.write(vec![BatchOp::Put(Table::Kv, k.clone(), new)], Durability::Logged)?;
            Ok(true)
        })
        .await
    }

    pub async fn kv_list_keys(
        &self,
        service: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, KvError> {
        let ns_len = kv_key(service, "").len();
        let p = kv_key(service, prefix);
        let a = after.map(|a| kv_key(service, a));
        let rows = self.blocking(move |s| s.scan(Table::Kv, &p, a.as_deref(), limit)).await?;
        Ok(rows
            .into_iter()
            // Keys were written from WIT strings, so they are UTF-8.
            .map(|(k, _)| String::from_utf8_lossy(&k[ns_len..]).into_owned())
            .collect())
    }
}

/// The storage key of a guest key: the service name (which cannot contain NUL), a NUL,
/// then the guest's key bytes. No guest key can reach outside its service's prefix.
pub fn kv_key(service: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(service.len() + 1 + key.len());
    k.extend_from_slice(service.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

fn lock_stripe<'a>(stripes: &'a [Mutex<()>; STRIPES], key: &[u8]) -> std::sync::MutexGuard<'a, ()> {
    // FNV-1a: cheap and good enough to spread keys over stripes.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in key {
        h = (h ^ u64::from(*b)).wrapping_mul(0x100000001b3);
    }
    stripes[(h as usize) & (STRIPES - 1)].lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> Grid {
        Grid::new(Arc::new(MemoryStorage::default()))
    }

    #[tokio::test]
    async fn namespaces_do_not_overlap() {
        let g = grid();
        g.kv_set("a", "k", b"1".to_vec()).await.unwrap();
        g.kv_set("ab", "k", b"2".to_vec()).await.unwrap();
        // "a" + NUL + "../ab\0k" must not read service ab's key.
        assert_eq!(g.kv_get("a", "../ab\0k").await.unwrap(), None);
        assert_eq!(g.kv_get("a", "k").await.unwrap(), Some(b"1".to_vec()));
        assert_eq!(g.kv_list_keys("a", "", None, 10).await.unwrap(), vec!["k".to_string()]);
    }

    #[tokio::test]
    async fn compare_and_swap_checks_the_current_value() {
        let g = grid();
        assert!(g.kv_compare_and_swap("s", "k", None, b"1".to_vec()).await.unwrap());
        assert!(!g.kv_compare_and_swap("s", "k", None, b"2".to_vec()).await.unwrap());
        assert!(g.kv_compare_and_swap("s", "k", Some(b"1".to_vec()), b"2".to_vec()).await.unwrap());
        assert_eq!(g.kv_get("s", "k").await.unwrap(), Some(b"2".to_vec()));
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
                        let cur = g.kv_get("s", "n").await.unwrap();
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
        assert_eq!(g.kv_get("s", "n").await.unwrap(), Some(b"200".to_vec()));
    }

    #[tokio::test]
    async fn list_keys_pages_with_after() {
        let g = grid();
        for k in ["x1", "x2", "x3", "y1"] {
            g.kv_set("s", k, vec![]).await.unwrap();
        }
        assert_eq!(g.kv_list_keys("s", "x", None, 2).await.unwrap(), vec!["x1", "x2"]);
        assert_eq!(g.kv_list_keys("s", "x", Some("x2"), 2).await.unwrap(), vec!["x3"]);
    }
}
