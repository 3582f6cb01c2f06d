//! The control plane's Raft storage in the node's own database (`Table::Control`): the log,
//! the vote, and the applied state with its membership, all written synced. The applied
//! state is small (specs and placement), so it is stored whole after each apply and a
//! snapshot is that same document.

use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership, Vote,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::types::{Applied, Control, ControlState, Member};
use crate::grid::{BatchOp, Durability, Grid, KvError, Table};

type Err = StorageError<u64>;

const LOG: &[u8] = b"log/";
const VOTE: &[u8] = b"m/vote";
const COMMITTED: &[u8] = b"m/committed";
const PURGED: &[u8] = b"m/purged";
const STATE: &[u8] = b"sm/state";

fn log_key(index: u64) -> Vec<u8> {
    let mut k = LOG.to_vec();
    k.extend_from_slice(&index.to_be_bytes());
    k
}

fn any(e: impl std::fmt::Display) -> AnyError {
    AnyError::error(e)
}

async fn read_json<T: for<'a> Deserialize<'a> + Send + 'static>(
    grid: &Grid,
    key: &'static [u8],
) -> Result<Option<T>, String> {
    let raw = grid.blocking(move |s| s.get(Table::Control, key)).await.map_err(|e| e.to_string())?;
    raw.map(|b| serde_json::from_slice(&b).map_err(|e| format!("stored {}: {e}", String::from_utf8_lossy(key))))
        .transpose()
}

/// A synced write of Raft state. A full disk (and the store closed while it waits for
/// room to be opened again) is waited out rather than reported: openraft treats a storage
/// error as fatal and would stop this node's control plane for good, while the disk may
/// have room again in a moment. Nothing else is written meanwhile (the caller awaits
/// this), and kv writes, refused first (`grid/disk.rs`), leave the room these small
/// records need in all but a disk filled by someone else. The node's shutdown does not
/// wait for this (`Cluster::shutdown` bounds it).
async fn write(grid: &Grid, ops: Vec<BatchOp>) -> Result<(), String> {
    let mut backoff = std::time::Duration::from_millis(50);
    let mut warned: Option<std::time::Instant> = None;
    loop {
        let attempt = ops.clone();
        match grid.blocking(move |s| s.write(attempt, Durability::Synced)).await {
            Ok(()) => return Ok(()),
            Err(KvError::Storage(e @ (crate::grid::StorageError::Full(_) | crate::grid::StorageError::Closed)))
                if !matches!(e, crate::grid::StorageError::Closed) || grid.storage().stuck() =>
            {
                let full = e;
                if warned.is_none_or(|at| at.elapsed() > std::time::Duration::from_secs(10)) {
                    tracing::warn!(%full, "a Raft write waits for room on the disk");
                    warned = Some(std::time::Instant::now());
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(1));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn put_json<T: Serialize>(key: &[u8], value: &T) -> BatchOp {
    BatchOp::Put(Table::Control, key.to_vec(), serde_json::to_vec(value).expect("control records serialise"))
}

/// The last entry's id and the purge point.
type Tail = (Option<LogId<u64>>, Option<LogId<u64>>);

/// What this node's Raft log has taken in since it started (`nanogrid_raft_log_appended_*`).
#[derive(Debug, Default)]
pub struct LogGrowth {
    pub entries: std::sync::atomic::AtomicU64,
    pub bytes: std::sync::atomic::AtomicU64,
}

/// The Raft log and vote.
#[derive(Clone)]
pub struct LogStore {
    grid: Arc<Grid>,
    // Kept in memory (read once at open).
    tail: Arc<Mutex<Tail>>,
    pub growth: Arc<LogGrowth>,
}

impl LogStore {
    pub async fn open(grid: Arc<Grid>) -> anyhow::Result<Self> {
        let purged: Option<LogId<u64>> = read_json(&grid, PURGED).await.map_err(anyhow::Error::msg)?;
        let last = grid
            .blocking(|s| s.scan(Table::Control, LOG, None, usize::MAX))
            .await?
            .last()
            .map(|(_, v)| serde_json::from_slice::<Entry<Control>>(v).map(|e| e.log_id))
            .transpose()?;
        Ok(LogStore { grid, tail: Arc::new(Mutex::new((last.or(purged), purged))), growth: Default::default() })
    }

    fn tail(&self) -> Tail {
        *self.tail.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl RaftLogReader<Control> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + std::fmt::Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<Control>>, Err> {
        let start = match range.start_bound() {
            Bound::Included(&n) => n,
            Bound::Excluded(&n) => n + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&n) => n.saturating_add(1),
            Bound::Excluded(&n) => n,
            Bound::Unbounded => u64::MAX,
        };
        if start >= end {
            return Ok(Vec::new());
        }
        let limit = usize::try_from(end - start).unwrap_or(usize::MAX);
        let after = start.checked_sub(1).map(log_key);
        let rows = self
            .grid
            .blocking(move |s| s.scan(Table::Control, LOG, after.as_deref(), limit))
            .await
            .map_err(|e| StorageIOError::read_logs(any(e)))?;
        let mut out = Vec::with_capacity(rows.len());
        for (_, v) in rows {
            let entry: Entry<Control> = serde_json::from_slice(&v).map_err(|e| StorageIOError::read_logs(any(e)))?;
            if entry.log_id.index >= end {
                break;
            }
            out.push(entry);
        }
        Ok(out)
    }
}

impl RaftLogStorage<Control> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<Control>, Err> {
        let (last, purged) = self.tail();
        Ok(LogState { last_purged_log_id: purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), Err> {
        write(&self.grid, vec![put_json(VOTE, vote)]).await.map_err(|e| StorageIOError::write_vote(any(e)).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, Err> {
        read_json(&self.grid, VOTE).await.map_err(|e| StorageIOError::read_vote(any(e)).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<(), Err> {
        write(&self.grid, vec![put_json(COMMITTED, &committed)]).await.map_err(|e| StorageIOError::write(any(e)).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, Err> {
        let c: Option<Option<LogId<u64>>> =
            read_json(&self.grid, COMMITTED).await.map_err(|e| StorageIOError::read(any(e)))?;
        Ok(c.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<Control>) -> Result<(), Err>
    where
        I: IntoIterator<Item = Entry<Control>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut ops = Vec::new();
        let mut last = None;
        let mut bytes = 0;
        for e in entries {
            let op = put_json(&log_key(e.log_id.index), &e);
            if let BatchOp::Put(_, _, v) = &op {
                bytes += v.len() as u64;
            }
            ops.push(op);
            last = Some(e.log_id);
        }
        let n = ops.len() as u64;
        let result = write(&self.grid, ops).await;
        if result.is_ok() {
            use std::sync::atomic::Ordering::Relaxed;
            self.growth.entries.fetch_add(n, Relaxed);
            self.growth.bytes.fetch_add(bytes, Relaxed);
        }
        if result.is_ok()
            && let Some(l) = last
        {
            self.tail.lock().unwrap_or_else(|e| e.into_inner()).0 = Some(l);
        }
        let io = result.clone().map_err(std::io::Error::other);
        callback.log_io_completed(io);
        result.map_err(|e| StorageIOError::write_logs(any(e)).into())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), Err> {
        // Delete every entry from log_id.index on.
        let after = log_id.index.checked_sub(1).map(log_key);
        let keys = self
            .grid
            .blocking(move |s| s.scan(Table::Control, LOG, after.as_deref(), usize::MAX))
            .await
            .map_err(|e| StorageIOError::write_logs(any(e)))?;
        let ops = keys.into_iter().map(|(k, _)| BatchOp::Delete(Table::Control, k)).collect();
        write(&self.grid, ops).await.map_err(|e| StorageIOError::write_logs(any(e)))?;
        // The entry before the cut is the new last one (or the purge point).
        let prev = match log_id.index.checked_sub(1) {
            Some(p) => self
                .grid
                .blocking(move |s| s.get(Table::Control, &log_key(p)))
                .await
                .map_err(|e| StorageIOError::read_logs(any(e)))?
                .map(|v| serde_json::from_slice::<Entry<Control>>(&v).map(|e| e.log_id))
                .transpose()
                .map_err(|e| StorageIOError::read_logs(any(e)))?,
            None => None,
        };
        let mut tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        tail.0 = prev.or(tail.1);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), Err> {
        let upto = log_id.index;
        let keys = self
            .grid
            .blocking(move |s| s.scan(Table::Control, LOG, None, usize::try_from(upto + 1).unwrap_or(usize::MAX)))
            .await
            .map_err(|e| StorageIOError::write_logs(any(e)))?;
        let mut ops: Vec<BatchOp> = keys
            .into_iter()
            .filter(|(k, _)| k.len() == LOG.len() + 8 && u64::from_be_bytes(k[LOG.len()..].try_into().unwrap()) <= upto)
            .map(|(k, _)| BatchOp::Delete(Table::Control, k))
            .collect();
        ops.push(put_json(PURGED, &log_id));
        write(&self.grid, ops).await.map_err(|e| StorageIOError::write_logs(any(e)))?;
        let mut tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        tail.1 = Some(log_id);
        if tail.0.is_none_or(|l| l.index < log_id.index) {
            tail.0 = Some(log_id);
        }
        Ok(())
    }
}

/// The applied state as stored: the control state plus what Raft needs to resume.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stored {
    pub last_applied: Option<LogId<u64>>,
    pub membership: StoredMembership<u64, Member>,
    pub state: ControlState,
}

/// The state machine. Every apply is persisted before it is published to `watch`.
#[derive(Clone)]
pub struct StateMachine {
    grid: Arc<Grid>,
    stored: Arc<Mutex<Stored>>,
    tx: Arc<watch::Sender<Arc<Stored>>>,
}

impl StateMachine {
    pub async fn open(grid: Arc<Grid>) -> anyhow::Result<Self> {
        let stored: Stored = read_json(&grid, STATE).await.map_err(anyhow::Error::msg)?.unwrap_or_default();
        let (tx, _) = watch::channel(Arc::new(stored.clone()));
        Ok(StateMachine { grid, stored: Arc::new(Mutex::new(stored)), tx: Arc::new(tx) })
    }

    /// Follow the applied state (each apply or snapshot install publishes a new value).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Stored>> {
        self.tx.subscribe()
    }

    pub fn current(&self) -> Arc<Stored> {
        self.tx.borrow().clone()
    }

    async fn save(&self, next: Stored) -> Result<(), String> {
        write(&self.grid, vec![put_json(STATE, &next)]).await?;
        *self.stored.lock().unwrap_or_else(|e| e.into_inner()) = next.clone();
        self.tx.send_replace(Arc::new(next));
        Ok(())
    }

    fn snapshot_of(stored: &Stored) -> Snapshot<Control> {
        let data = serde_json::to_vec(&stored.state).expect("control state serialises");
        let id = stored.last_applied.map_or("none".to_string(), |l| format!("{}-{}", l.leader_id, l.index));
        let meta = SnapshotMeta {
            last_log_id: stored.last_applied,
            last_membership: stored.membership.clone(),
            snapshot_id: id,
        };
        Snapshot { meta, snapshot: Box::new(Cursor::new(data)) }
    }
}

impl RaftSnapshotBuilder<Control> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<Control>, Err> {
        let stored = self.stored.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Ok(Self::snapshot_of(&stored))
    }
}

impl RaftStateMachine<Control> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId<u64>>, StoredMembership<u64, Member>), Err> {
        let s = self.stored.lock().unwrap_or_else(|e| e.into_inner());
        Ok((s.last_applied, s.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, Err>
    where
        I: IntoIterator<Item = Entry<Control>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut next = self.stored.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut out = Vec::new();
        for entry in entries {
            next.last_applied = Some(entry.log_id);
            out.push(match &entry.payload {
                EntryPayload::Blank => Applied::default(),
                EntryPayload::Normal(cmd) => next.state.apply(cmd),
                EntryPayload::Membership(m) => {
                    next.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                    Applied { changed: true }
                }
            });
        }
        self.save(next).await.map_err(|e| StorageIOError::write_state_machine(any(e)))?;
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, Err> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, Member>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), Err> {
        let state: ControlState = serde_json::from_slice(snapshot.get_ref())
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), any(e)))?;
        let next = Stored { last_applied: meta.last_log_id, membership: meta.last_membership.clone(), state };
        self.save(next).await.map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), any(e)))?;
        tracing::info!(snapshot = %meta.snapshot_id, "installed a control-plane snapshot from the leader");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<Control>>, Err> {
        let stored = self.stored.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Ok(stored.last_applied.is_some().then(|| Self::snapshot_of(&stored)))
    }
}

#[cfg(test)]
mod tests {
    use openraft::testing::{StoreBuilder, Suite};

    use super::*;
    use crate::grid::RocksStorage;

    /// Each store is a fresh RocksDB in its own temp dir (kept alive as the guard).
    struct Rocks;

    impl StoreBuilder<Control, LogStore, StateMachine, tempfile::TempDir> for Rocks {
        async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), Err> {
            let dir = tempfile::tempdir().expect("temp dir");
            let storage = RocksStorage::open(dir.path()).expect("open RocksDB");
            let grid = Arc::new(Grid::new(Arc::new(storage)));
            let log = LogStore::open(grid.clone()).await.expect("log store");
            let sm = StateMachine::open(grid).await.expect("state machine");
            Ok((dir, log, sm))
        }
    }

    #[test]
    fn passes_openraft_storage_suite_on_rocksdb() {
        Suite::test_all(Rocks).unwrap();
    }
}
