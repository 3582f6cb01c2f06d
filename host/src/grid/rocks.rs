//! [`Storage`] over RocksDB: one database per node, one column family per [`Table`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use rocksdb::{ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions};

use super::disk::{self, DiskSpace};
use super::sync::{self, GroupCommit, SyncWait, Syncer};
use super::{BatchOp, Durability, Storage, StorageError, StorageResult, SyncMode, SyncStats, Table};

pub struct RocksStorage {
    inner: Arc<Inner>,
    /// Stopped (and joined) before the last sync on drop.
    syncer: Option<Syncer>,
    /// `get_cached`'s read options (memory only), made once: a `ReadOptions` is a C++
    /// object, and making one per read cost a cached read a tenth of its time.
    cached_read: rocksdb::ReadOptions,
}

struct Inner {
    /// `None` only while the store is being opened again (see [`Inner::recover`]) or if
    /// that failed.
    db: RwLock<Option<DB>>,
    /// A write failed for want of space: RocksDB's log writer keeps such an error (every
    /// later write fails with "Writer has previous error"), and the C API has no
    /// `Resume`, so the store is closed and opened again once the disk has room.
    stuck: AtomicBool,
    dir: PathBuf,
    mode: SyncMode,
    group: Arc<GroupCommit>,
    disk: DiskSpace,
    /// Held (written) by every synced write of a `never` or `batch` store and by the
    /// syncer's once-a-second log sync of a `never` store, and tried (read) by
    /// [`Storage::write_now`]: a write on the async runtime never joins a RocksDB write
    /// group that waits for an fsync. (A `batch` store's group syncs do not hold it:
    /// RocksDB's `SyncWAL` syncs the log beside writes, it never makes one wait.)
    syncing: RwLock<()>,
}

/// Why a store was refused: it is damaged, and serving from it could lose acknowledged
/// data silently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreDamaged {
    pub dir: PathBuf,
    pub detail: String,
}

impl std::fmt::Display for StoreDamaged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the store in {} is damaged: {}", self.dir.display(), self.detail)
    }
}

fn io(e: rocksdb::Error) -> StorageError {
    StorageError::Io(e.into_string())
}

/// Room a stuck store needs before it is opened again (when `--min-free-mib` is lower).
const REOPEN_ROOM: u64 = 8 << 20;

fn cf(db: &DB, t: Table) -> StorageResult<&rocksdb::ColumnFamily> {
    db.cf_handle(t.name()).ok_or(StorageError::Closed)
}

/// `ops` as one RocksDB batch (applied all or nothing).
fn batch_of(db: &DB, ops: &[BatchOp]) -> StorageResult<WriteBatch> {
    let mut batch = WriteBatch::default();
    for op in ops {
        match op {
            BatchOp::Put(t, k, v) => batch.put_cf(cf(db, *t)?, k, v),
            BatchOp::Delete(t, k) => batch.delete_cf(cf(db, *t)?, k),
        }
    }
    Ok(batch)
}

impl Inner {
    /// Shut out [`Storage::write_now`] while this synced write runs (`never` and `batch`:
    /// with `always` nothing is written on the runtime, and synced writes must not queue
    /// behind one another). The cost: synced writes (fences, Raft, deploys) run one at a
    /// time instead of sharing an fsync when they come together.
    fn write_gate(&self) -> Option<std::sync::RwLockWriteGuard<'_, ()>> {
        (self.mode != SyncMode::Always).then(|| self.syncing.write().unwrap_or_else(|e| e.into_inner()))
    }

    /// [`Inner::write_gate`] for the once-a-second log sync, a `never` store's only.
    fn sync_gate(&self) -> Option<std::sync::RwLockWriteGuard<'_, ()>> {
        (self.mode == SyncMode::Never).then(|| self.syncing.write().unwrap_or_else(|e| e.into_inner()))
    }

    /// One group sync of the write-ahead log (the syncer thread's, for `batch` tickets):
    /// the generation of the database whose log it synced.
    fn group_sync(&self) -> sync::SyncOutcome {
        self.with_db(|db| {
            db.flush_wal(true).map_err(|e| self.write_error(e))?;
            // Read under the database's lock, which a reopening holds to move it on.
            Ok(self.group.generation())
        })
        .map_err(|e| e.to_string())
    }

    fn with_db<R>(&self, f: impl FnOnce(&DB) -> StorageResult<R>) -> StorageResult<R> {
        let db = self.db.read().unwrap_or_else(|e| e.into_inner());
        db.as_ref().map_or(Err(StorageError::Closed), f)
    }

    /// A failed write's error: the disk running out of space is [`StorageError::Full`],
    /// and leaves the store stuck until [`Inner::recover`].
    fn write_error(&self, e: rocksdb::Error) -> StorageError {
        let text = e.into_string();
        if disk::is_no_space(&text) || text.contains("has previous error") {
            if !self.stuck.swap(true, Ordering::SeqCst) {
                tracing::warn!(dir = %self.dir.display(), error = %text, "the store's disk is full; writes are refused until there is room");
            }
            self.disk.forget();
            StorageError::Full(self.disk.full(self.disk.free()))
        } else {
            StorageError::Io(text)
        }
    }

    /// A stuck store: `Err(Full)` while the disk has no room; once it has, close the
    /// database and open it again (with every check of the first open: nothing synced
    /// may be missing).
    fn recover(&self) -> StorageResult<()> {
        let free = self.disk.free();
        if free < self.disk.min_free().max(REOPEN_ROOM) {
            return Err(StorageError::Full(self.disk.full(free)));
        }
        let mut db = self.db.write().unwrap_or_else(|e| e.into_inner());
        if !self.stuck.load(Ordering::SeqCst) {
            return Ok(()); // another writer recovered it meanwhile
        }
        db.take(); // closed: RocksDB holds a lock on the directory while open
        let reopened = open_checked(&self.dir).map_err(|e| match e {
            // Opening writes too (a new MANIFEST and log): still no room, try again later.
            StorageError::Io(text) if disk::is_no_space(&text) => StorageError::Full(self.disk.full(self.disk.free())),
            StorageError::Damaged(d) => {
                tracing::error!(damage = %d, "the store could not be opened again after its disk was full; it stays closed (restart the node: it will refuse the store and say what to do)");
                StorageError::Damaged(d)
            }
            e => e,
        })?;
        *db = Some(reopened);
        // Writes waiting for a sync went to the database closed above: no sync of this one
        // covers them.
        self.group.reopened();
        self.stuck.store(false, Ordering::SeqCst);
        tracing::info!(dir = %self.dir.display(), free, "the store's disk has room again; the store is open and takes writes");
        Ok(())
    }

    /// Sync the write-ahead log and move the high-water mark up to what it covers. A full
    /// disk is not an error here (the writes that meet it report it): the mark stays where
    /// it was, a lower bound, until there is room.
    fn sync_and_mark(&self) -> Result<(), String> {
        if self.stuck.load(Ordering::SeqCst) {
            match self.recover() {
                Err(StorageError::Full(_)) => return Ok(()), // nothing new to sync
                r => r.map_err(|e| e.to_string())?,
            }
        }
        let seq = self.with_db(|db| {
            let _sync = self.sync_gate();
            let seq = db.latest_sequence_number();
            db.flush_wal(true).map_err(|e| self.write_error(e))?;
            Ok(seq)
        });
        let seq = match seq {
            Err(StorageError::Full(_)) => return Ok(()),
            r => r.map_err(|e| e.to_string())?,
        };
        let mark = sync::Mark { seq, manifest: sync::current_manifest(&self.dir) };
        match sync::write_mark(&self.dir, &mark) {
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => Ok(()),
            r => r.map_err(|e| format!("writing {}: {e}", sync::MARK_FILE)),
        }
    }
}

/// Open the database in `dir` with the checks that refuse a damaged one. Blocking.
fn open_checked(dir: &Path) -> StorageResult<DB> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    // Small defaults: a node may share its machine with many others.
    opts.set_max_background_jobs(2);
    opts.set_keep_log_file_num(4);
    // Refuse damage rather than recover to an earlier point: only a torn record at
    // the very end of the log (a write that was never acknowledged) is tolerated.
    opts.set_paranoid_checks(true);
    opts.set_wal_recovery_mode(rocksdb::DBRecoveryMode::TolerateCorruptedTailRecords);
    opts.set_track_and_verify_wals_in_manifest(true);
    let cfs = Table::ALL.iter().map(|t| {
        let mut o = Options::default();
        o.set_compression_type(rocksdb::DBCompressionType::Lz4);
        ColumnFamilyDescriptor::new(t.name(), o)
    });
    let damaged = |detail: String| {
        StorageError::Damaged(StoreDamaged {
            dir: dir.to_path_buf(),
            detail: format!("{detail}; {}", recovery_files(dir)),
        })
    };
    // Checked before RocksDB opens the store: opening starts a new MANIFEST.
    let mark = sync::read_mark(dir).map_err(&damaged)?;
    if let Some(cut) = mark.as_ref().and_then(|m| sync::manifest_cut(dir, m)) {
        return Err(damaged(cut));
    }
    let db = DB::open_cf_descriptors(&opts, dir, cfs).map_err(|e| match e.kind() {
        rocksdb::ErrorKind::Corruption => damaged(e.into_string()),
        _ => io(e),
    })?;
    let last = db.latest_sequence_number();
    if let Some(mark) = mark.map(|m| m.seq).filter(|&m| m > last) {
        return Err(damaged(format!(
            "it ends at record {last} but had record {mark} on disk ({}): records were lost \
             (a truncated or older MANIFEST, a deleted or truncated log file)",
            sync::MARK_FILE
        )));
    }
    Ok(db)
}

/// The files recovery reads (`CURRENT`, `MANIFEST-*`, `*.log`) with their sizes: where to
/// look when RocksDB names no file.
fn recovery_files(dir: &Path) -> String {
    let Ok(entries) = std::fs::read_dir(dir) else { return String::new() };
    let mut files: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let read_at_recovery = name == "CURRENT" || name.starts_with("MANIFEST-") || name.ends_with(".log");
            let len = e.metadata().ok()?.len();
            read_at_recovery.then(|| format!("{name} ({len} bytes)"))
        })
        .collect();
    files.sort();
    format!("files recovery reads: {}", files.join(", "))
}

impl RocksStorage {
    /// Open (or create) the database in `dir` with the default sync mode. Blocking.
    pub fn open(dir: &Path) -> StorageResult<Self> {
        Self::open_with(dir, SyncMode::default())
    }

    /// Open (or create) the database in `dir`. Blocking. A damaged database (a corrupt
    /// record anywhere but a torn last write, a missing log file, records lost below the
    /// high-water mark) is refused with [`StorageError::Damaged`] instead of being opened
    /// at whatever point RocksDB could recover to.
    pub fn open_with(dir: &Path, mode: SyncMode) -> StorageResult<Self> {
        Self::open_keeping(dir, mode, disk::DEFAULT_MIN_FREE)
    }

    /// [`RocksStorage::open_with`], keeping `min_free` bytes free on the store's disk:
    /// kv (`Acked`) writes are refused with [`StorageError::Full`] below that.
    pub fn open_keeping(dir: &Path, mode: SyncMode, min_free: u64) -> StorageResult<Self> {
        let db = open_checked(dir)?;
        let disk = DiskSpace::new(dir, min_free);
        let inner = Arc::new(Inner {
            db: RwLock::new(Some(db)),
            stuck: AtomicBool::new(false),
            dir: dir.to_path_buf(),
            mode,
            group: Arc::new(GroupCommit::default()),
            syncing: RwLock::new(()),
            disk,
        });
        let (ticker, syncs) = (inner.clone(), inner.clone());
        let sync = move || syncs.group_sync();
        let syncer = Syncer::spawn(dir.to_path_buf(), inner.group.clone(), sync, move || ticker.sync_and_mark())
            .map_err(|e| StorageError::Io(format!("starting the store's sync thread: {e}")))?;
        let mut cached_read = rocksdb::ReadOptions::default();
        cached_read.set_read_tier(rocksdb::ReadTier::BlockCache);
        Ok(RocksStorage { inner, syncer: Some(syncer), cached_read })
    }
}

impl Drop for RocksStorage {
    fn drop(&mut self) {
        self.syncer.take();
        if let Err(e) = self.inner.sync_and_mark() {
            tracing::error!(dir = %self.inner.dir.display(), error = %e, "last sync of the store failed");
        }
    }
}

impl Storage for RocksStorage {
    fn get(&self, table: Table, key: &[u8]) -> StorageResult<Option<Vec<u8>>> {
        self.inner.with_db(|db| db.get_cf(cf(db, table)?, key).map_err(io))
    }

    fn get_cached(&self, table: Table, key: &[u8]) -> StorageResult<Option<Option<Vec<u8>>>> {
        // Called from async code: never wait for a store being opened again.
        let Ok(db) = self.inner.db.try_read() else { return Ok(None) };
        let Some(db) = db.as_ref() else { return Ok(None) };
        match db.get_cf_opt(cf(db, table)?, key, &self.cached_read) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind() == rocksdb::ErrorKind::Incomplete => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    fn write(&self, ops: Vec<BatchOp>, durability: Durability) -> StorageResult<()> {
        let inner = &self.inner;
        if durability == Durability::Acked {
            inner.disk.check().map_err(StorageError::Full)?;
        }
        if inner.stuck.load(Ordering::SeqCst) {
            inner.recover()?;
        }
        let err = |e| inner.write_error(e);
        // What the write waits for: a group sync's ticket, taken while the database is held
        // (its generation is this database's), waited for after the lock is let go (the
        // syncer takes it too, and a store being opened again waits for it).
        let wait = inner.with_db(|db| {
            let batch = batch_of(db, &ops)?;
            match (durability, inner.mode) {
                (Durability::Acked, SyncMode::Never) => db.write_opt(batch, &WriteOptions::default()).map_err(err)?,
                (Durability::Acked, SyncMode::Batch) => {
                    db.write_opt(batch, &WriteOptions::default()).map_err(err)?;
                    return Ok(inner.group.ticket());
                }
                (Durability::Synced, _) | (Durability::Acked, SyncMode::Always) => {
                    let _sync = inner.write_gate();
                    let mut wo = WriteOptions::default();
                    wo.set_sync(true);
                    db.write_opt(batch, &wo).map_err(err)?;
                    inner.group.count_own_sync();
                }
            }
            Ok(SyncWait::done())
        })?;
        // A failed sync leaves the write's fate unknown, not refused (it is in the log).
        wait.wait_blocking()
    }

    /// With `--sync never` and `batch` (with `always` each write is a synced one), and only
    /// when nothing can make it wait: no synced write running or waiting to run (`syncing`), the
    /// store open and not stuck, room on the disk, and RocksDB not slowing writers down
    /// (`no_slowdown`: it refuses rather than waits, writing nothing). What is left is a
    /// memtable insert and an append to the log in the page cache, and, about once per
    /// write buffer, the switch to a new memtable and log file; the kernel may also
    /// throttle a page-cache write under heavy dirty-page pressure. Those are the waits
    /// this path accepts. A `batch` write then takes a ticket for the syncer's next group
    /// sync, which the caller awaits without holding a thread.
    fn write_now(&self, ops: &[BatchOp]) -> Option<StorageResult<SyncWait>> {
        let inner = &self.inner;
        if inner.mode == SyncMode::Always || inner.stuck.load(Ordering::SeqCst) || inner.disk.check().is_err() {
            return None;
        }
        let _no_sync = inner.syncing.try_read().ok()?;
        let db = inner.db.try_read().ok()?;
        let db = db.as_ref()?;
        let batch = batch_of(db, ops).ok()?;
        let mut wo = WriteOptions::default();
        wo.set_no_slowdown(true);
        match db.write_opt(batch, &wo) {
            Ok(()) if inner.mode == SyncMode::Batch => Some(Ok(inner.group.ticket())),
            Ok(()) => Some(Ok(SyncWait::done())),
            Err(e) if e.kind() == rocksdb::ErrorKind::Incomplete => None,
            Err(e) => Some(Err(inner.write_error(e))),
        }
    }

    fn sync_stats(&self) -> SyncStats {
        self.inner.group.stats()
    }

    /// Never blocks (async code asks): a stuck store with room again counts as having
    /// room, the write that follows opens it again.
    fn check_room(&self) -> StorageResult<()> {
        self.inner.disk.check().map_err(StorageError::Full)?;
        let free = self.inner.disk.free();
        if self.inner.stuck.load(Ordering::SeqCst) && free < REOPEN_ROOM {
            return Err(StorageError::Full(self.inner.disk.full(free)));
        }
        Ok(())
    }

    fn stuck(&self) -> bool {
        self.inner.stuck.load(Ordering::SeqCst)
    }

    fn disk_free(&self) -> Option<u64> {
        Some(self.inner.disk.free())
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> StorageResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let start = match after {
            Some(a) if a >= prefix => a,
            _ => prefix,
        };
        self.inner.with_db(|db| {
            let iter = db.iterator_cf(cf(db, table)?, IteratorMode::From(start, Direction::Forward));
            let mut out = Vec::new();
            for item in iter {
                let (k, v) = item.map_err(io)?;
                if !k.starts_with(prefix) {
                    break;
                }
                if after.is_some_and(|a| &*k <= a) {
                    continue;
                }
                out.push((k.into_vec(), v.into_vec()));
                if out.len() >= limit {
                    break;
                }
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_now_happens_only_where_it_cannot_wait_for_a_sync() {
        let put = |k: &[u8]| vec![BatchOp::Put(Table::Kv, k.to_vec(), b"v".to_vec())];
        let dir = tempfile::tempdir().unwrap();
        let never = RocksStorage::open_with(dir.path(), SyncMode::Never).unwrap();
        assert!(matches!(never.write_now(&put(b"a")), Some(Ok(w)) if w.is_done()));
        assert_eq!(never.get(Table::Kv, b"a").unwrap(), Some(b"v".to_vec()));
        // While a sync runs (here: one holding the gate), nothing is written at once.
        {
            let _sync = never.inner.sync_gate();
            assert!(never.write_now(&put(b"b")).is_none());
        }
        assert_eq!(never.get(Table::Kv, b"b").unwrap(), None);
        assert!(matches!(never.write_now(&put(b"b")), Some(Ok(_))));
        // A `batch` write is made at once and waits for a group sync of the syncer's.
        let dir = tempfile::tempdir().unwrap();
        let batch = RocksStorage::open_with(dir.path(), SyncMode::Batch).unwrap();
        let Some(Ok(mut wait)) = batch.write_now(&put(b"a")) else { panic!("a batch store writes at once") };
        assert_eq!(batch.get(Table::Kv, b"a").unwrap(), Some(b"v".to_vec()));
        futures::executor::block_on(wait.wait()).unwrap();
        assert_eq!(batch.sync_stats(), SyncStats { synced_writes: 1, syncs: 1 });
        // Not while a synced write (Raft, a fence) runs: it could join its write group.
        {
            let _synced = batch.inner.write_gate();
            assert!(batch.write_now(&put(b"b")).is_none());
        }
        // With `always` every acknowledged write is a synced one: never at once.
        let dir = tempfile::tempdir().unwrap();
        let always = RocksStorage::open_with(dir.path(), SyncMode::Always).unwrap();
        assert!(always.write_now(&put(b"a")).is_none());
        assert_eq!(always.get(Table::Kv, b"a").unwrap(), None);
    }

    #[test]
    fn survives_reopen_and_scans_in_order() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = RocksStorage::open(dir.path()).unwrap();
            s.write(
                vec![
                    BatchOp::Put(Table::Kv, b"a\0k2".to_vec(), b"2".to_vec()),
                    BatchOp::Put(Table::Kv, b"a\0k1".to_vec(), b"1".to_vec()),
                    BatchOp::Put(Table::Kv, b"b\0k1".to_vec(), b"x".to_vec()),
                    BatchOp::Put(Table::Services, b"a".to_vec(), b"{}".to_vec()),
                ],
                Durability::Synced,
            )
            .unwrap();
        }
        let s = RocksStorage::open(dir.path()).unwrap();
        let rows = s.scan(Table::Kv, b"a\0", None, 10).unwrap();
        assert_eq!(rows, vec![(b"a\0k1".to_vec(), b"1".to_vec()), (b"a\0k2".to_vec(), b"2".to_vec())]);
        let rows = s.scan(Table::Kv, b"a\0", Some(b"a\0k1"), 10).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(s.get(Table::Services, b"a").unwrap(), Some(b"{}".to_vec()));
        assert_eq!(s.get(Table::Components, b"a").unwrap(), None);
        // Just written, so in the memtable: answered from memory.
        assert_eq!(s.get_cached(Table::Services, b"a").unwrap(), Some(Some(b"{}".to_vec())));
    }

    fn fill(s: &RocksStorage, from: usize, n: usize) {
        for i in from..from + n {
            let k = format!("svc\0key-{i:05}").into_bytes();
            s.write(vec![BatchOp::Put(Table::Kv, k, vec![b'v'; 200])], Durability::Acked).unwrap();
        }
    }

    fn files(dir: &Path, prefix: &str, suffix: &str) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                name.starts_with(prefix) && name.ends_with(suffix)
            })
            .collect();
        out.sort();
        out
    }

    fn damage_of(dir: &Path) -> StoreDamaged {
        match RocksStorage::open(dir) {
            Err(StorageError::Damaged(d)) => d,
            Err(e) => panic!("expected the store refused as damaged, got {e}"),
            Ok(s) => {
                let rows = s.scan(Table::Kv, b"svc\0", None, 100_000).unwrap().len();
                panic!("a damaged store opened and serves {rows} rows")
            }
        }
    }

    #[test]
    fn a_flipped_byte_in_the_log_is_refused_not_skipped() {
        let dir = tempfile::tempdir().unwrap();
        fill(&RocksStorage::open(dir.path()).unwrap(), 0, 500);
        let log = files(dir.path(), "", ".log").pop().expect("a write-ahead log file");
        let mut bytes = std::fs::read(&log).unwrap();
        assert!(bytes.len() > 50_000, "the writes are in the log: {} bytes", bytes.len());
        let at = bytes.len() / 3;
        bytes[at] ^= 0x40;
        std::fs::write(&log, bytes).unwrap();
        let d = damage_of(dir.path());
        assert!(d.detail.to_lowercase().contains("corrupt") || d.detail.contains("checksum"), "{d}");
    }

    #[test]
    fn a_truncated_manifest_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = RocksStorage::open(dir.path()).unwrap();
            fill(&s, 0, 300);
            // Into table files, so the MANIFEST is what records where the rows are.
            let flush = |s: &RocksStorage| s.inner.with_db(|db| db.flush_cf(cf(db, Table::Kv)?).map_err(io)).unwrap();
            flush(&s);
            fill(&s, 300, 300);
            flush(&s);
        }
        let manifest = files(dir.path(), "MANIFEST-", "").pop().expect("a MANIFEST");
        let len = std::fs::metadata(&manifest).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&manifest).unwrap();
        f.set_len(len / 2).unwrap();
        damage_of(dir.path());
    }

    #[test]
    fn a_manifest_cut_short_is_refused_also_when_the_log_could_replay_everything() {
        let dir = tempfile::tempdir().unwrap();
        fill(&RocksStorage::open(dir.path()).unwrap(), 0, 300);
        let manifest = files(dir.path(), "MANIFEST-", "").pop().expect("a MANIFEST");
        let len = std::fs::metadata(&manifest).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&manifest).unwrap().set_len(len / 2).unwrap();
        let d = damage_of(dir.path());
        assert!(d.detail.contains("cut short"), "{d}");
    }

    #[test]
    fn a_deleted_log_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fill(&RocksStorage::open(dir.path()).unwrap(), 0, 300);
        for log in files(dir.path(), "", ".log") {
            std::fs::remove_file(log).unwrap();
        }
        let d = damage_of(dir.path());
        assert!(d.to_string().contains(&dir.path().display().to_string()), "names the directory: {d}");
    }

    #[test]
    fn every_sync_mode_keeps_what_it_acknowledged_across_reopen() {
        for mode in SyncMode::ALL {
            let dir = tempfile::tempdir().unwrap();
            {
                let s = Arc::new(RocksStorage::open_with(dir.path(), mode).unwrap());
                let writers: Vec<_> = (0..4)
                    .map(|w| {
                        let s = s.clone();
                        std::thread::spawn(move || fill(&s, w * 100, 100))
                    })
                    .collect();
                for w in writers {
                    w.join().unwrap();
                }
                let stats = s.sync_stats();
                match mode {
                    SyncMode::Never => assert_eq!(stats.synced_writes, 0, "{mode}"),
                    _ => assert_eq!(stats.synced_writes, 400, "{mode}"),
                }
            }
            let s = RocksStorage::open_with(dir.path(), mode).unwrap();
            assert_eq!(s.scan(Table::Kv, b"svc\0", None, 1000).unwrap().len(), 400, "{mode}");
            assert!(sync::read_mark(dir.path()).unwrap().unwrap().seq >= 400, "closing moved the mark ({mode})");
        }
    }
}
