//! The data grid: component blobs, service specs, the control plane's log, and the
//! services' kv state, partitioned and replicated across the cluster.
//!
//! [`Storage`] is the narrow, synchronous interface the rest of the node stores through;
//! it never mentions RocksDB. [`RocksStorage`] is the real implementation (one RocksDB per
//! node, column families per kind of data) and [`MemoryStorage`] backs unit tests.
//! [`Grid`] wraps a `Storage` for async callers (every call runs on tokio's blocking
//! pool, so RocksDB never blocks an async worker) and owns the kv API the guests use:
//! keys hash to partitions ([`part`]); each partition's primary orders its writes in a
//! log ([`plog`]) that it replicates to the other replicas ([`replica`]); [`kv`] routes
//! an operation to the partition's primary, here or over the peer RPC ([`wire`]).
//!
//! In `single` mode the node is every partition's only replica: the same path, with every
//! consistency level meaning "in this node's write-ahead log".

pub mod disk;
pub mod kv;
mod memory;
pub mod part;
pub mod plog;
pub mod replica;
mod rocks;
mod sync;
pub mod wire;

use std::sync::Arc;

pub use disk::DiskFull;
pub use memory::MemoryStorage;
pub use rocks::{RocksStorage, StoreDamaged};
pub use sync::SyncWait;

/// The `Table::Meta` key present while this node's store is a rebuilt one that the
/// control plane has not yet taken back as a learner.
pub const REBUILT_KEY: &[u8] = b"rebuilt";

/// Where a record lives. Each table is a separate keyspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    /// Component bytes by digest (`sha256:<hex>`).
    Components,
    /// Service specs (JSON) by service name.
    Services,
    /// Guest kv data by partition, then `service \0 key` (`plog`).
    Kv,
    /// Each partition's replication log (`plog`).
    PartLog,
    /// Node metadata (ids, format versions).
    Meta,
    /// The control plane's Raft log, vote and applied state (`control::store`).
    Control,
}

impl Table {
    pub const ALL: [Table; 6] =
        [Table::Components, Table::Services, Table::Kv, Table::PartLog, Table::Meta, Table::Control];

    pub fn name(self) -> &'static str {
        match self {
            Table::Components => "components",
            Table::Services => "services",
            Table::Kv => "kv",
            Table::PartLog => "plog",
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
    #[error("{0}")]
    Damaged(StoreDamaged),
    /// The data dir's disk is (nearly) full: the write was refused, nothing was lost.
    #[error("{0}")]
    Full(DiskFull),
    /// The write reached the store but not the disk: it may or may not be kept.
    #[error("{0}")]
    Unsynced(String),
}

pub type StorageResult<T> = Result<T, StorageError>;

/// Whether a write must reach the disk before it returns. Admin writes (deploys, Raft,
/// fences) are always synced; kv data (`Acked`) is as durable as the node's [`SyncMode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync before returning, whatever the sync mode.
    Synced,
    /// A write a client's acknowledgement depends on: synced unless the mode is `never`.
    Acked,
}

/// How `Acked` writes reach the disk (`--sync`, `sync` in the config file).
///
/// - `always`: each write asks RocksDB for an fsync (RocksDB still merges writers that
///   arrive while one is syncing into the same write group).
/// - `batch` (default): writes go to the write-ahead log unsynced, then wait for a group
///   commit: one writer syncs the log for every write that finished before it started,
///   the others wait for that sync. Same promise as `always`: nothing is acknowledged
///   before it is on the disk.
/// - `never`: acknowledged once in the write-ahead log (it survives a crash of the
///   process, not of the machine); a background sync runs every second. A quorum
///   write then survives power loss only on replicas that synced meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    Always,
    #[default]
    Batch,
    Never,
}

impl SyncMode {
    pub const ALL: [SyncMode; 3] = [SyncMode::Always, SyncMode::Batch, SyncMode::Never];

    pub fn as_str(self) -> &'static str {
        match self {
            SyncMode::Always => "always",
            SyncMode::Batch => "batch",
            SyncMode::Never => "never",
        }
    }
}

impl std::fmt::Display for SyncMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SyncMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        SyncMode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| format!("unknown sync mode {s:?}: use always, batch or never"))
    }
}

/// What a store's write path did, for metrics and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Writes that waited for an fsync (`Synced`, and `Acked` unless the mode is `never`).
    pub synced_writes: u64,
    /// fsyncs of the write-ahead log the group commit ran (`batch`), or synced writes
    /// (`always`, where RocksDB's own write groups may merge some).
    pub syncs: u64,
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
    /// [`Storage::get`] answered from memory only (memtable, block cache): `None` when it
    /// would have to read the disk. Never blocks, so async code may call it directly.
    fn get_cached(&self, _table: Table, _key: &[u8]) -> StorageResult<Option<Option<Vec<u8>>>> {
        Ok(None)
    }
    /// Apply every op or none.
    fn write(&self, ops: Vec<BatchOp>, durability: Durability) -> StorageResult<()>;
    /// [`Storage::write`] of an `Acked` batch, done at once when nothing can make it wait
    /// (no fsync, no stall, no store being opened again); `None`, and nothing written,
    /// otherwise: the caller then writes through the blocking pool. Never blocks, so async
    /// code may call it directly (saving the pool's two thread switches). The write counts
    /// once the returned [`SyncWait`] ends (at once unless the mode syncs in groups).
    fn write_now(&self, _ops: &[BatchOp]) -> Option<StorageResult<SyncWait>> {
        None
    }
    /// What the write path did so far.
    fn sync_stats(&self) -> SyncStats {
        SyncStats::default()
    }
    /// `Err(Full)` when the disk has too little room for kv writes (see `disk.rs`): a
    /// primary asks before it takes log positions for a write.
    fn check_room(&self) -> StorageResult<()> {
        Ok(())
    }
    /// Free bytes on the store's disk, if it has one.
    fn disk_free(&self) -> Option<u64> {
        None
    }
    /// A write failed for want of space and the store waits for room to be opened again.
    fn stuck(&self) -> bool {
        false
    }
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
    /// The partition could not serve the call (no reachable primary, too few replicas).
    #[error("{0}")]
    Unavailable(String),
}

/// Partition-log entries each replica keeps (a replica further behind gets a snapshot).
pub const DEFAULT_LOG_KEEP: u64 = 1000;

/// Async access to a [`Storage`], and the kv API over this node's replicas.
pub struct Grid {
    storage: Arc<dyn Storage>,
    replicas: Arc<replica::Replicas>,
    /// The guests' kv operations through this node.
    pub kv_counts: kv::KvCounts,
}

impl Grid {
    /// A single node's grid (tests, and the control-plane store's tests).
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        Grid::open(storage, "local", false, DEFAULT_LOG_KEEP, part::DEFAULT_PARTITIONS)
    }

    /// `clustered`: the partition table comes from the control plane; otherwise this
    /// node (`me`) is every partition's only replica. `partitions`: how many the grid has.
    pub fn open(storage: Arc<dyn Storage>, me: &str, clustered: bool, keep: u64, partitions: u32) -> Self {
        let replicas = Arc::new(replica::Replicas::new(storage.clone(), me, clustered, keep, partitions));
        Grid { storage, replicas, kv_counts: Default::default() }
    }

    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    pub fn replicas(&self) -> &Arc<replica::Replicas> {
        &self.replicas
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
