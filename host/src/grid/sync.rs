//! Getting writes onto the disk: the group commit behind `--sync batch`, the sync threads
//! every store runs, and the store's high-water mark.
//!
//! **Group commit.** A `batch` writer puts its batch into RocksDB's write-ahead log
//! unsynced, takes a ticket, and waits until a sync that started after its write covers
//! it. The store's group-sync thread runs those syncs: woken by a ticket, it takes every
//! ticket waiting, syncs the log once and answers each; tickets taken meanwhile wait for
//! its next sync. So many concurrent writers share one fsync, nothing is acknowledged
//! before it is on the disk, and a writer on the async runtime waits without holding a
//! thread ([`SyncWait`], a one-shot channel the sync thread answers: only the writers a
//! sync covered are woken); a writer in the blocking pool blocks on the same channel. A
//! sync that fails fails every ticket it covered (their writes are in the log, so their
//! fate is unknown, not refused). So does one of a database opened again since the write
//! (after a full disk): each ticket carries the generation of the database its write went
//! to, and a sync answers only the tickets of the generation it synced.
//!
//! **High-water mark.** Every second (and when the store closes) the mark thread reads
//! RocksDB's last sequence number, syncs the log, then records that number in
//! `NANOGRID-SEQ` next to the database (written to a temporary file, synced, renamed). On
//! open, a database whose last sequence number is below the mark has lost records it once
//! had on disk: a truncated or rolled-back MANIFEST, a deleted log file. RocksDB's own
//! checks cannot see that kind of damage (an older MANIFEST is a valid MANIFEST), the
//! mark can.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use super::{StorageError, StorageResult, SyncStats};

/// The file holding the high-water mark, inside the database directory (RocksDB leaves
/// files it does not know alone).
pub const MARK_FILE: &str = "NANOGRID-SEQ";

/// How often the mark thread syncs the log and moves the mark.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);

/// How long a sync may wait for more writers when the one before covered several: each
/// fsync costs the machine CPU time as well as the writers' wait (docs/BENCHMARKS.md, the
/// grid section).
const GATHER: Duration = Duration::from_micros(100);

/// A ticket: the generation of the database the write went to, and where its writer hears
/// the outcome of the sync that covers it.
type Ticket = (u64, oneshot::Sender<Result<(), String>>);

/// What a group sync did: synced the log of this generation of the database, or failed.
pub type SyncOutcome = Result<u64, String>;

/// The syncer's side: writers waiting for the next sync, whether one runs, whether to stop.
#[derive(Default)]
struct Tickets {
    waiting: Vec<Ticket>,
    /// How many tickets the last sync covered.
    last_covered: usize,
    syncing: bool,
    stopped: bool,
}

/// The group-commit state of one store.
#[derive(Default)]
pub struct GroupCommit {
    tickets: Mutex<Tickets>,
    /// Wakes the syncer thread.
    wake: Condvar,
    synced_writes: AtomicU64,
    syncs: AtomicU64,
    /// Which opening of the database writes go to: moved on when the store is opened again.
    generation: AtomicU64,
}

/// What an `Acked` write made at once still waits for before it counts: nothing (`never`,
/// or a store in memory), or the group sync that covers its ticket (`batch`).
#[must_use = "the write is not on the disk until the wait ends"]
pub struct SyncWait(Option<oneshot::Receiver<Result<(), String>>>);

impl SyncWait {
    /// A write that waits for nothing.
    pub fn done() -> Self {
        SyncWait(None)
    }

    /// Whether there is nothing to wait for.
    pub fn is_done(&self) -> bool {
        self.0.is_none()
    }

    /// Wait until the write is on the disk (once: a second call finds nothing to wait
    /// for). A failed sync is [`StorageError::Unsynced`]: the write is in the log, so it
    /// may or may not be kept. Cancel-safe: the sync runs whether anyone waits or not.
    pub async fn wait(&mut self) -> StorageResult<()> {
        let Some(rx) = self.0.as_mut() else { return Ok(()) };
        let outcome = rx.await;
        self.0 = None;
        outcome.unwrap_or_else(|_| Err("the store closed before the write was synced".to_string())).map_err(|e| {
            StorageError::Unsynced(format!(
                "the write is in the store's log but its sync failed, so it may or may not be kept: {e}"
            ))
        })
    }

    /// [`SyncWait::wait`], blocking the thread (a writer in the blocking pool).
    pub fn wait_blocking(mut self) -> StorageResult<()> {
        futures::executor::block_on(self.wait())
    }
}

#[cfg(test)]
impl SyncWait {
    /// A wait the test answers through the returned sender (a store's group sync).
    pub(crate) fn answered_by() -> (oneshot::Sender<Result<(), String>>, SyncWait) {
        let (tx, rx) = oneshot::channel();
        (tx, SyncWait(Some(rx)))
    }
}

impl GroupCommit {
    /// Take a ticket for a write that has just gone into the log unsynced, and wake the
    /// syncer if it sleeps. The write is on the disk once [`SyncWait::wait`] says so. Take
    /// it while the database the write went to is still the one open (its generation).
    pub fn ticket(&self) -> SyncWait {
        let (tx, rx) = oneshot::channel();
        let generation = self.generation();
        let mut t = self.tickets.lock().unwrap_or_else(|e| e.into_inner());
        // A stopped syncer takes no tickets: the dropped sender says the store closed.
        if !t.stopped {
            t.waiting.push((generation, tx));
            if !t.syncing {
                // A running sync looks for new tickets when it ends: no wake-up then.
                self.wake.notify_one();
            }
        }
        drop(t);
        self.synced_writes.fetch_add(1, Ordering::Relaxed);
        SyncWait(Some(rx))
    }

    /// The generation of the database open now (see [`GroupCommit::reopened`]).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The database was opened again: tickets taken before wait for writes the new one's
    /// syncs do not cover, so those syncs will fail them. Call it while no write or sync
    /// can use either database.
    pub fn reopened(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
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

    /// One sync for every ticket taken so far, if there are any (the caller holds the
    /// ticket lock and gets it back): every one of them was taken after its write ended,
    /// so before the sync starts. Each hears the outcome. When the sync before covered
    /// several writes (writers arrive together) and fewer wait now, it first gathers for
    /// [`GATHER`]; a writer alone never waits for that.
    fn sync_waiting<'a>(
        &'a self,
        mut t: std::sync::MutexGuard<'a, Tickets>,
        sync: &impl Fn() -> SyncOutcome,
    ) -> std::sync::MutexGuard<'a, Tickets> {
        if t.waiting.is_empty() {
            return t;
        }
        if t.last_covered > 1 && t.waiting.len() < t.last_covered && !t.stopped {
            // `syncing` spares the writers arriving meanwhile a wake-up of this thread.
            t.syncing = true;
            t = self.wake.wait_timeout(t, GATHER).unwrap_or_else(|e| e.into_inner()).0;
        }
        let covered = std::mem::take(&mut t.waiting);
        t.last_covered = covered.len();
        t.syncing = true;
        drop(t);
        let result = sync();
        self.syncs.fetch_add(1, Ordering::Relaxed);
        for (generation, ticket) in covered {
            let outcome = match &result {
                Ok(synced) if *synced == generation => Ok(()),
                Ok(_) => {
                    Err("the store was closed and opened again (its disk was full) before the write was synced"
                        .to_string())
                }
                Err(e) => Err(e.clone()),
            };
            // A writer that went away dropped its receiver: nothing to tell.
            let _ = ticket.send(outcome);
        }
        let mut t = self.tickets.lock().unwrap_or_else(|e| e.into_inner());
        t.syncing = false;
        t
    }

    /// The group-sync thread's loop: a sync whenever tickets wait, until stopped (tickets
    /// taken before the stop are still synced). Should `sync` panic, the tickets waiting
    /// and every later one are told the store closed, rather than left waiting.
    fn run(&self, sync: impl Fn() -> SyncOutcome) {
        struct OnPanic<'a>(&'a GroupCommit);
        impl Drop for OnPanic<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    let mut t = self.0.tickets.lock().unwrap_or_else(|e| e.into_inner());
                    t.stopped = true;
                    t.waiting.clear();
                }
            }
        }
        let _guard = OnPanic(self);
        let mut t = self.tickets.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            t = self.sync_waiting(t, &sync);
            if !t.waiting.is_empty() {
                continue;
            }
            if t.stopped {
                return;
            }
            t = self.wake.wait(t).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn stop(&self) {
        self.tickets.lock().unwrap_or_else(|e| e.into_inner()).stopped = true;
        self.wake.notify_all();
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

/// The sync threads of one store: one runs the group syncs for the tickets of
/// [`GroupCommit`] (`sync` syncs the write-ahead log), the other, every [`SYNC_EVERY`],
/// `tick` (sync the log, move the mark: two file syncs and a rename, which tickets do not
/// wait behind). Dropping the handle stops both, the first after it synced every ticket
/// taken, and waits for them.
pub struct Syncer {
    group: Arc<GroupCommit>,
    thread: Option<std::thread::JoinHandle<()>>,
    ticker: Option<(Arc<StopFlag>, std::thread::JoinHandle<()>)>,
}

/// A flag a sleeping thread is woken for.
type StopFlag = (Mutex<bool>, Condvar);

impl Syncer {
    pub fn spawn(
        dir: PathBuf,
        group: Arc<GroupCommit>,
        sync: impl Fn() -> SyncOutcome + Send + 'static,
        tick: impl Fn() -> Result<(), String> + Send + 'static,
    ) -> std::io::Result<Self> {
        let runs = group.clone();
        let thread = std::thread::Builder::new().name("nanogrid-sync".into()).spawn(move || runs.run(sync))?;
        let mut syncer = Syncer { group, thread: Some(thread), ticker: None };
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = stop.clone();
        let ticker = std::thread::Builder::new().name("nanogrid-mark".into()).spawn(move || {
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
        syncer.ticker = Some((stop, ticker));
        Ok(syncer)
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        if let Some((stop, ticker)) = self.ticker.take() {
            *stop.0.lock().unwrap_or_else(|e| e.into_inner()) = true;
            stop.1.notify_all();
            let _ = ticker.join();
        }
        self.group.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A syncer over `group` whose "sync" runs `sync`; no ticks within a test.
    fn syncer(group: &Arc<GroupCommit>, sync: impl Fn() -> SyncOutcome + Send + 'static) -> Syncer {
        let group = group.clone();
        let runs = group.clone();
        let thread = std::thread::spawn(move || runs.run(sync));
        Syncer { group, thread: Some(thread), ticker: None }
    }

    #[test]
    fn concurrent_writers_share_syncs_and_none_returns_unsynced() {
        let group = Arc::new(GroupCommit::default());
        // The "disk": the highest write a sync has covered, checked by each writer.
        let on_disk = Arc::new(AtomicU64::new(0));
        let issued = Arc::new(AtomicU64::new(0));
        let (disk, written) = (on_disk.clone(), issued.clone());
        let _syncer = syncer(&group, move || {
            let upto = written.load(Ordering::SeqCst);
            std::thread::sleep(Duration::from_micros(200));
            disk.fetch_max(upto, Ordering::SeqCst);
            Ok(0)
        });
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (group, on_disk, issued) = (group.clone(), on_disk.clone(), issued.clone());
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        // The write itself: numbered before the wait, like a WAL append.
                        let mine = issued.fetch_add(1, Ordering::SeqCst) + 1;
                        group.ticket().wait_blocking().unwrap();
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn async_writers_wait_without_a_thread_and_a_failed_sync_fails_only_its_writers() {
        let group = Arc::new(GroupCommit::default());
        // The first sync fails, every later one succeeds.
        let calls = Arc::new(AtomicU64::new(0));
        let counted = calls.clone();
        let gate = Arc::new(std::sync::Barrier::new(2));
        let held = gate.clone();
        let _syncer = syncer(&group, move || {
            if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                held.wait(); // until the test took a second ticket
                return Err("disk on fire".into());
            }
            // A sync takes a while, as on a disk: tickets taken meanwhile share the next.
            std::thread::sleep(Duration::from_millis(1));
            Ok(0)
        });
        let mut first = group.ticket();
        let mut second = loop {
            // The first sync has started (and covers only the first ticket) once it waits.
            if group.tickets.lock().unwrap().syncing {
                break group.ticket();
            }
            tokio::task::yield_now().await;
        };
        gate.wait();
        let failed = first.wait().await.unwrap_err();
        assert!(matches!(&failed, StorageError::Unsynced(m) if m.contains("disk on fire")), "{failed}");
        second.wait().await.unwrap();
        // 100 waiters at once on two worker threads: they share syncs.
        let waits: Vec<_> = (0..100).map(|_| group.ticket()).collect();
        let joined = futures::future::join_all(waits.into_iter().map(|mut w| async move { w.wait().await })).await;
        assert!(joined.iter().all(|r| r.is_ok()), "{joined:?}");
        // Taken within far less than a sync's millisecond: a handful of syncs at most.
        assert!(calls.load(Ordering::SeqCst) < 20, "{} syncs for 102 tickets", calls.load(Ordering::SeqCst));
    }

    #[test]
    fn a_sync_of_a_database_opened_again_fails_the_writes_made_before() {
        let group = Arc::new(GroupCommit::default());
        let (seen, calls) = (group.clone(), Arc::new(AtomicU64::new(0)));
        let counted = calls.clone();
        let gate = Arc::new(std::sync::Barrier::new(2));
        let held = gate.clone();
        // The syncer reports the generation it synced, as the store's does.
        let _syncer = syncer(&group, move || {
            if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                held.wait(); // until the database was opened again
            }
            Ok(seen.generation())
        });
        let before = group.ticket();
        group.reopened();
        gate.wait();
        let err = before.wait_blocking().unwrap_err();
        assert!(matches!(&err, StorageError::Unsynced(m) if m.contains("opened again")), "{err}");
        // A write made to the database open now is synced by its syncs.
        group.ticket().wait_blocking().unwrap();
        assert_eq!(group.generation(), 1);
    }

    #[test]
    fn a_panicking_sync_tells_its_writers_and_later_ones_the_store_closed() {
        let group = Arc::new(GroupCommit::default());
        let _syncer = syncer(&group, || panic!("a bug in the sync"));
        let err = group.ticket().wait_blocking().unwrap_err();
        assert!(err.to_string().contains("store closed"), "{err}");
        let err = group.ticket().wait_blocking().unwrap_err();
        assert!(err.to_string().contains("store closed"), "{err}");
    }

    #[test]
    fn a_stopped_syncer_syncs_what_was_written_and_later_waits_fail() {
        let group = Arc::new(GroupCommit::default());
        let syncs = Arc::new(AtomicU64::new(0));
        let counted = syncs.clone();
        let s = syncer(&group, move || {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok(0)
        });
        let mut before = group.ticket();
        drop(s);
        futures::executor::block_on(before.wait()).unwrap();
        let err = group.ticket().wait_blocking().unwrap_err();
        assert!(err.to_string().contains("store closed"), "{err}");
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
