//! Getting writes onto the disk: the group commit behind `--sync batch`, the background
//! syncer every mode runs, and the store's high-water mark.
//!
//! **Group commit.** A `batch` writer puts its batch into RocksDB's write-ahead log
//! unsynced, takes a ticket, and waits until a sync that started after its write covers
//! it. Whoever finds no sync running becomes the leader: it notes the newest ticket, syncs
//! the log once, and wakes everyone up to that ticket. Writers that arrive meanwhile wait
//! for the next sync, which one of them leads. So many concurrent writers share one fsync,
//! and nothing is acknowledged before it is on the disk.
//!
//! **High-water mark.** Every second (and when the store closes) the syncer reads RocksDB's
//! last sequence number, syncs the log, then records that number in `NANOGRID-SEQ` next to
//! the database (written to a temporary file, synced, renamed). On open, a database whose
//! last sequence number is below the mark has lost records it once had on disk: a truncated
//! or rolled-back MANIFEST, a deleted log file. RocksDB's own checks cannot see that kind of
//! damage (an older MANIFEST is a valid MANIFEST), the mark can.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::SyncStats;

/// The file holding the high-water mark, inside the database directory (RocksDB leaves
/// files it does not know alone).
pub const MARK_FILE: &str = "NANOGRID-SEQ";

/// How often the background syncer syncs the log and moves the mark.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Tickets {
    /// Tickets handed out (one per finished unsynced write that waits).
    written: u64,
    /// Every ticket up to this one is on the disk.
    synced: u64,
    syncing: bool,
}

/// The group-commit state of one store.
#[derive(Default)]
pub struct GroupCommit {
    tickets: Mutex<Tickets>,
    done: Condvar,
    synced_writes: AtomicU64,
    syncs: AtomicU64,
}

impl GroupCommit {
    /// Wait until a write that has just finished (unsynced) is on the disk; `sync` syncs
    /// the write-ahead log. Blocking. An error is the failed sync's, given to the writer
    /// that ran it; the writers it would have covered try again themselves.
    pub fn wait_synced<E>(&self, sync: impl Fn() -> Result<(), E>) -> Result<(), E> {
        let mut t = self.tickets.lock().unwrap_or_else(|e| e.into_inner());
        t.written += 1;
        let ticket = t.written;
        self.synced_writes.fetch_add(1, Ordering::Relaxed);
        loop {
            if t.synced >= ticket {
                return Ok(());
            }
            if t.syncing {
                t = self.done.wait(t).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            t.syncing = true;
            let target = t.written;
            drop(t);
            let result = sync();
            self.syncs.fetch_add(1, Ordering::Relaxed);
            t = self.tickets.lock().unwrap_or_else(|e| e.into_inner());
            t.syncing = false;
            if result.is_ok() {
                t.synced = t.synced.max(target);
            }
            self.done.notify_all();
            result?;
        }
    }

    /// Count a write that synced itself (`Synced`, or `--sync always`).
    pub fn count_own_sync(&self) {
        self.synced_writes.fetch_add(1, Ordering::Relaxed);
        self.syncs.fetch_add(1, Ordering::Relaxed);
    }

    pub fn stats(&self) -> SyncStats {
        SyncStats {
            synced_writes: self.synced_writes.load(Ordering::Relaxed),
            syncs: self.syncs.load(Ordering::Relaxed),
        }
    }
}

/// What the high-water mark records: the last sequence number known on disk, and the
/// MANIFEST that was current then with its size (RocksDB syncs every MANIFEST write).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub seq: u64,
    pub manifest: Option<(String, u64)>,
}

/// The current MANIFEST of the database in `dir` (named by `CURRENT`) and its size.
pub fn current_manifest(dir: &Path) -> Option<(String, u64)> {
    let name = std::fs::read_to_string(dir.join("CURRENT")).ok()?.trim().to_string();
    let len = std::fs::metadata(dir.join(&name)).ok()?.len();
    Some((name, len))
}

/// Read the high-water mark of the database in `dir` (`None`: no mark yet).
pub fn read_mark(dir: &Path) -> Result<Option<Mark>, String> {
    let path = dir.join(MARK_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
    };
    let bad = || format!("{} holds {:?}, not a sequence number and MANIFEST", path.display(), text.trim());
    let mut lines = text.lines();
    let seq = lines.next().and_then(|l| l.trim().parse().ok()).ok_or_else(bad)?;
    let manifest = match lines.next().map(str::split_whitespace).map(|mut w| (w.next(), w.next())) {
        None => None,
        Some((Some(name), Some(len))) => Some((name.to_string(), len.parse().map_err(|_| bad())?)),
        Some(_) => return Err(bad()),
    };
    Ok(Some(Mark { seq, manifest }))
}

/// Record the mark (temporary file, fsync, rename, fsync the dir).
pub fn write_mark(dir: &Path, mark: &Mark) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = dir.join(format!("{MARK_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    let mut text = format!("{}\n", mark.seq);
    if let Some((name, len)) = &mark.manifest {
        text.push_str(&format!("{name} {len}\n"));
    }
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(MARK_FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

/// What a mark says is missing from the database in `dir` before RocksDB opens it (which
/// starts a new MANIFEST): the MANIFEST it recorded is still current but shorter.
pub fn manifest_cut(dir: &Path, mark: &Mark) -> Option<String> {
    let (name, len) = mark.manifest.as_ref()?;
    let (current, now) = current_manifest(dir)?;
    (current == *name && now < *len)
        .then(|| format!("{name} is {now} bytes but had {len} bytes on disk: it was cut short"))
}

/// The background syncer: a thread that, every [`SYNC_EVERY`], runs `tick` (sync the log,
/// move the mark) until stopped. Dropping the handle stops it and waits for it.
pub struct Syncer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Syncer {
    pub fn spawn(dir: PathBuf, tick: impl Fn() -> Result<(), String> + Send + 'static) -> std::io::Result<Self> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = stop.clone();
        let thread = std::thread::Builder::new().name("nanogrid-sync".into()).spawn(move || {
            let (lock, cv) = &*flag;
            let mut stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                let (s, _) = cv.wait_timeout(stopped, SYNC_EVERY).unwrap_or_else(|e| e.into_inner());
                stopped = s;
                if *stopped {
                    return;
                }
                if let Err(e) = tick() {
                    tracing::error!(dir = %dir.display(), error = %e, "background sync of the store failed");
                }
            }
        })?;
        Ok(Syncer { stop, thread: Some(thread) })
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        *self.stop.0.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.stop.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_writers_share_syncs_and_none_returns_unsynced() {
        let group = Arc::new(GroupCommit::default());
        // The "disk": the highest ticket a sync has covered, checked by each writer.
        let on_disk = Arc::new(AtomicU64::new(0));
        let issued = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (group, on_disk, issued) = (group.clone(), on_disk.clone(), issued.clone());
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        // The write itself: numbered before the wait, like a WAL append.
                        let mine = issued.fetch_add(1, Ordering::SeqCst) + 1;
                        group
                            .wait_synced(|| {
                                std::thread::sleep(Duration::from_micros(200));
                                on_disk.fetch_max(issued.load(Ordering::SeqCst), Ordering::SeqCst);
                                Ok::<(), ()>(())
                            })
                            .unwrap();
                        assert!(on_disk.load(Ordering::SeqCst) >= mine, "acknowledged before its sync");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let stats = group.stats();
        assert_eq!(stats.synced_writes, 3200);
        assert!(stats.syncs < 3200 / 2, "16 writers should share syncs: {stats:?}");
    }

    #[test]
    fn a_failed_sync_fails_its_writer_and_the_next_one_retries() {
        let group = GroupCommit::default();
        assert_eq!(group.wait_synced(|| Err("disk full")), Err("disk full"));
        assert_eq!(group.wait_synced(|| Ok::<(), &str>(())), Ok(()));
        assert_eq!(group.stats().syncs, 2);
    }

    #[test]
    fn the_mark_round_trips_and_a_bad_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_mark(dir.path()), Ok(None));
        let mark = Mark { seq: 42, manifest: Some(("MANIFEST-000005".into(), 468)) };
        write_mark(dir.path(), &mark).unwrap();
        assert_eq!(read_mark(dir.path()), Ok(Some(mark)));
        // The first format (a sequence number alone) still reads.
        std::fs::write(dir.path().join(MARK_FILE), "7\n").unwrap();
        assert_eq!(read_mark(dir.path()), Ok(Some(Mark { seq: 7, manifest: None })));
        std::fs::write(dir.path().join(MARK_FILE), "x").unwrap();
        assert!(read_mark(dir.path()).unwrap_err().contains("not a sequence number"));
    }
}
