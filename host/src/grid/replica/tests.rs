use std::collections::HashSet;
use std::sync::Mutex;

use super::*;
use crate::grid::MemoryStorage;
use crate::grid::part::DEFAULT_PARTITIONS;

/// Three replica sets in one process, calling each other directly; a "silent" node
/// never answers (as if it hung), and control-plane reports are recorded.
#[derive(Default)]
struct Loopback {
    nodes: Mutex<HashMap<String, Arc<Replicas>>>,
    silent: Mutex<HashSet<String>>,
    reports: Mutex<Vec<String>>,
}

impl Net for Loopback {
    fn call<'a>(&'a self, node: &'a str, req: GridRequest) -> BoxFuture<'a, Result<GridReply, NetError>> {
        Box::pin(async move {
            if self.silent.lock().unwrap().contains(node) {
                return futures::future::pending().await;
            }
            let r = self.nodes.lock().unwrap().get(node).cloned();
            let r = r.ok_or(NetError::NotSent(format!("no node {node}")))?;
            Ok(r.serve(req).await)
        })
    }
    fn in_sync(&self, p: u32, epoch: u64, node: String) {
        self.reports.lock().unwrap().push(format!("in-sync {p} {epoch} {node}"));
    }
    fn out_of_sync(&self, p: u32, epoch: u64, node: String) {
        self.reports.lock().unwrap().push(format!("out-of-sync {p} {epoch} {node}"));
    }
    fn relinquish(&self, p: u32, epoch: u64) {
        self.reports.lock().unwrap().push(format!("relinquish {p} {epoch}"));
    }
}

struct Trio {
    net: Arc<Loopback>,
    nodes: Vec<Arc<Replicas>>,
}

const P: u32 = 7;

fn table(primary: &str, isr: &[&str], epoch: u64) -> PartitionTable {
    let replicas: Vec<String> = ["n1", "n2", "n3"].iter().map(|s| s.to_string()).collect();
    let part = PartInfo { primary: primary.into(), replicas, isr: isr.iter().map(|s| s.to_string()).collect(), epoch };
    PartitionTable { version: epoch, replication: 3, parts: vec![part; DEFAULT_PARTITIONS as usize] }
}

/// A store whose writes wait while `held` (to cancel a write in the middle), and fail
/// while `fail` is set (an I/O error). While `syncs` is `Some`, writes are made at once
/// and wait for a group sync the test answers through the senders kept there (`--sync
/// batch`).
#[derive(Default)]
struct Holding {
    inner: MemoryStorage,
    held: std::sync::Mutex<bool>,
    released: std::sync::Condvar,
    waiting: std::sync::atomic::AtomicUsize,
    fail: std::sync::atomic::AtomicBool,
    syncs: Mutex<Option<Vec<SyncAnswer>>>,
}

/// Where a test answers one group sync of [`Holding`].
type SyncAnswer = tokio::sync::oneshot::Sender<Result<(), String>>;

impl crate::grid::Storage for Holding {
    fn get(&self, t: Table, k: &[u8]) -> crate::grid::StorageResult<Option<Vec<u8>>> {
        self.inner.get(t, k)
    }
    fn write(&self, ops: Vec<crate::grid::BatchOp>, d: Durability) -> crate::grid::StorageResult<()> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(crate::grid::StorageError::Io("injected write failure".into()));
        }
        let mut held = self.held.lock().unwrap();
        if *held {
            self.waiting.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            while *held {
                held = self.released.wait(held).unwrap();
            }
        }
        drop(held);
        self.inner.write(ops, d)
    }
    fn write_now(&self, ops: &[crate::grid::BatchOp]) -> Option<crate::grid::StorageResult<crate::grid::SyncWait>> {
        let mut syncs = self.syncs.lock().unwrap();
        let pending = syncs.as_mut()?;
        if let Err(e) = self.inner.write(ops.to_vec(), Durability::Acked) {
            return Some(Err(e));
        }
        let (sync, wait) = crate::grid::SyncWait::answered_by();
        pending.push(sync);
        Some(Ok(wait))
    }
    fn scan(
        &self,
        t: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> crate::grid::StorageResult<Vec<(Vec<u8>, Vec<u8>)>> {
        self.inner.scan(t, prefix, after, limit)
    }
}

impl Trio {
    async fn start() -> Trio {
        Self::start_with(Arc::new(MemoryStorage::default())).await
    }

    /// The trio with `first` as n1's store.
    async fn start_with(first: Arc<dyn crate::grid::Storage>) -> Trio {
        let net = Arc::new(Loopback::default());
        let mut nodes = Vec::new();
        let mut first = Some(first);
        for name in ["n1", "n2", "n3"] {
            let storage = first.take().unwrap_or_else(|| Arc::new(MemoryStorage::default()));
            let r = Arc::new(Replicas::new(storage, name, true, 100, DEFAULT_PARTITIONS));
            r.attach(net.clone());
            net.nodes.lock().unwrap().insert(name.into(), r.clone());
            nodes.push(r);
        }
        let t = Trio { net, nodes };
        t.apply(table("n1", &["n1", "n2", "n3"], 1)).await;
        t
    }

    async fn apply(&self, table: PartitionTable) {
        for r in &self.nodes {
            r.apply_table(table.clone()).await;
        }
    }

    /// A quorum write of `value` on n1 as a task of its own, whose caller the test can
    /// make go away (`abort`).
    fn spawn_put(&self, value: &str) -> tokio::task::JoinHandle<Result<OpResult, OpFail>> {
        let (n1, op) = (self.nodes[0].clone(), KvOp::Put { key: b"s\0k".to_vec(), value: value.as_bytes().to_vec() });
        tokio::spawn(async move { n1.execute(P, op, Consistency::Quorum).await })
    }

    async fn put(&self, i: usize, value: &str, c: Consistency) -> Result<OpResult, OpFail> {
        let op = KvOp::Put { key: b"s\0k".to_vec(), value: value.as_bytes().to_vec() };
        self.nodes[i].execute(P, op, c).await
    }

    async fn get(&self, i: usize, c: Consistency) -> Result<OpResult, OpFail> {
        self.nodes[i].execute(P, KvOp::Get { key: b"s\0k".to_vec() }, c).await
    }

    async fn local(&self, i: usize) -> Option<Vec<u8>> {
        self.nodes[i].read_local(P, b"s\0k".to_vec()).await.unwrap()
    }

    /// Until `probe` holds, for at most 5 s.
    async fn until(&self, what: &str, probe: impl AsyncFn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !probe().await {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn reported(&self, what: &str) -> bool {
        self.net.reports.lock().unwrap().iter().any(|r| r == what)
    }
}

fn value(v: &str) -> Result<OpResult, OpFail> {
    Ok(OpResult::Value(Some(v.as_bytes().to_vec())))
}

#[tokio::test]
async fn writes_reach_the_replicas_and_a_silent_one_leaves_the_in_sync_set() {
    let t = Trio::start().await;
    assert_eq!(t.put(0, "a", Consistency::All).await, Ok(OpResult::Done));
    assert_eq!(t.local(1).await.as_deref(), Some(&b"a"[..]));
    assert_eq!(t.local(2).await.as_deref(), Some(&b"a"[..]));
    assert_eq!(t.put(1, "x", Consistency::Quorum).await, Err(not_primary(P)), "only the primary writes");

    // n3 hangs: quorum writes go on with n1 and n2; after the lag limit the primary
    // asks for n3 to leave the in-sync set, and then `all` needs n1 and n2 only.
    t.net.silent.lock().unwrap().insert("n3".into());
    assert_eq!(t.put(0, "b", Consistency::Quorum).await, Ok(OpResult::Done));
    assert_eq!(t.get(0, Consistency::Quorum).await, value("b"));
    tokio::time::sleep(LAG_LIMIT).await;
    t.put(0, "c", Consistency::One).await.unwrap();
    t.until("n3 is reported lagging", async || t.reported(&format!("out-of-sync {P} 1 n3"))).await;
    t.apply(table("n1", &["n1", "n2"], 1)).await;
    assert_eq!(t.put(0, "d", Consistency::All).await, Ok(OpResult::Done));

    // n3 answers again: it catches up and is reported in sync.
    t.net.silent.lock().unwrap().clear();
    t.until("n3 catches up", async || t.local(2).await.as_deref() == Some(&b"d"[..])).await;
    t.until("n3 is reported in sync", async || t.reported(&format!("in-sync {P} 1 n3"))).await;
}

#[tokio::test]
async fn a_fenced_primary_cannot_commit_and_its_unacknowledged_write_is_undone() {
    let t = Trio::start().await;
    t.put(0, "a", Consistency::Quorum).await.unwrap();
    // The leader fences n2 and n3 at epoch 2 (each first waits out the read lease it gave
    // n1): n1 can no longer reach a quorum. It hears nothing from them meanwhile.
    t.net.silent.lock().unwrap().extend(["n2".to_string(), "n3".to_string()]);
    let fence = FenceReq { p: P, epoch: 2, primary_fenced: None };
    let (f2, f3) = tokio::join!(t.nodes[1].on_fence(fence.clone()), t.nodes[2].on_fence(fence));
    assert_eq!((f2.fence, f3.fence), (2, 2));
    // It does not know yet, and its leases ran out: its read cannot be confirmed, its
    // write not acknowledged.
    let (read, write) = tokio::join!(t.get(0, Consistency::Quorum), t.put(0, "stale", Consistency::Quorum));
    assert!(matches!(read, Err(OpFail::Unavailable(_))), "cannot confirm a read: {read:?}");
    assert!(matches!(write, Err(OpFail::Unavailable(_))), "{write:?}");
    // Once a replica answers it "fenced", it refuses outright.
    t.net.silent.lock().unwrap().clear();
    t.until("n1 knows it was fenced", async || t.get(0, Consistency::Quorum).await == Err(not_primary(P))).await;
    assert_eq!(t.local(0).await.as_deref(), Some(&b"stale"[..]), "only in n1's own copy");
    // n2 becomes primary at epoch 2; n1's divergent entry is replaced by n2's state.
    t.apply(table("n2", &["n2", "n3"], 2)).await;
    assert_eq!(t.get(1, Consistency::Quorum).await, value("a"));
    assert_eq!(t.put(1, "b", Consistency::Quorum).await, Ok(OpResult::Done));
    t.until("n1 holds n2's state", async || t.local(0).await.as_deref() == Some(&b"b"[..])).await;
    assert_eq!(t.put(0, "x", Consistency::One).await, Err(not_primary(P)));
}

#[tokio::test]
async fn a_primary_with_read_leases_answers_without_asking_and_a_fence_waits_them_out() {
    let t = Trio::start().await;
    assert_eq!(t.put(0, "a", Consistency::All).await, Ok(OpResult::Done));
    // Both replicas now hang. Their acknowledgements gave n1 leases: its `quorum` and
    // `all` reads need no confirmation round trip (one would never be answered).
    t.net.silent.lock().unwrap().extend(["n2".to_string(), "n3".to_string()]);
    assert_eq!(t.get(0, Consistency::Quorum).await, value("a"));
    assert_eq!(t.get(0, Consistency::All).await, value("a"));
    // Once the leases ran out, a read must be confirmed again, and the silent replicas
    // cannot.
    tokio::time::sleep(LEASE).await;
    assert!(matches!(t.get(0, Consistency::Quorum).await, Err(OpFail::Unavailable(_))));

    // A fence for a newer primary waits out the lease the replica gave the old one, and
    // while it waits the old primary's appends (probes every second) renew nothing.
    t.net.silent.lock().unwrap().clear();
    let t0 = Instant::now();
    assert_eq!(t.put(0, "b", Consistency::All).await, Ok(OpResult::Done));
    assert_eq!(t.nodes[1].on_fence(FenceReq { p: P, epoch: 2, primary_fenced: None }).await.fence, 2);
    assert!(t0.elapsed() >= LEASE, "n2 was fenced {:?} after it gave a lease", t0.elapsed());
    let lease = t.nodes[0].parts[P as usize].progress.borrow().leases.get("n2").copied();
    assert!(lease.is_none_or(|until| until <= Instant::now()), "n1 holds a lease from n2 after its fence");
}

#[tokio::test]
async fn a_planned_move_fences_the_primary_first_and_waits_for_no_lease() {
    let t = Trio::start().await;
    // Past the wait every replica keeps after its own start.
    tokio::time::sleep(LEASE).await;
    assert_eq!(t.put(0, "a", Consistency::All).await, Ok(OpResult::Done));
    // The leader fences the primary, n1, first: it steps down at once.
    assert_eq!(t.nodes[0].on_fence(FenceReq { p: P, epoch: 2, primary_fenced: None }).await.fence, 2);
    assert_eq!(t.get(0, Consistency::Quorum).await, Err(not_primary(P)));
    // So n2 need not wait out the lease it just gave n1.
    let t0 = Instant::now();
    let f = t.nodes[1].on_fence(FenceReq { p: P, epoch: 2, primary_fenced: Some(1) }).await;
    assert_eq!(f.fence, 2);
    assert!(t0.elapsed() < LEASE / 2, "n2 waited {:?} for a lease of a fenced primary", t0.elapsed());
    // Without that word from the leader it would have waited.
    let t1 = Instant::now();
    assert_eq!(t.nodes[2].on_fence(FenceReq { p: P, epoch: 2, primary_fenced: None }).await.fence, 2);
    assert!(t1.elapsed() >= LEASE / 4, "n3 was fenced after {:?}", t1.elapsed());
}

#[tokio::test]
async fn a_primary_whose_log_write_failed_never_takes_that_epoch_up_again() {
    let store = Arc::new(Holding::default());
    let t = Trio::start_with(store.clone()).await;
    assert_eq!(t.put(0, "a", Consistency::Quorum).await, Ok(OpResult::Done));
    // n1's own log write fails after the entry went to the replicators: it steps down
    // and asks for a new primary.
    store.fail.store(true, std::sync::atomic::Ordering::SeqCst);
    let failed = t.put(0, "lost", Consistency::One).await;
    assert!(matches!(failed, Err(OpFail::Unavailable(_))), "{failed:?}");
    store.fail.store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(t.reported(&format!("relinquish {P} 1")));
    // The row changes at the same epoch (its in-sync set shrinks) before a new primary
    // is chosen: n1 must not lead epoch 1 again, whose next positions n2 and n3 may
    // hold "lost" at.
    t.apply(table("n1", &["n1", "n2"], 1)).await;
    assert_eq!(t.put(0, "b", Consistency::One).await, Err(not_primary(P)));
}

#[test]
fn all_is_never_weaker_than_quorum_when_the_in_sync_set_shrinks() {
    let pr = |matched: &[(&str, u64)], isr: &[&str]| Progress {
        epoch: 1,
        primary: true,
        last: 5,
        matched: matched.iter().map(|(n, m)| (n.to_string(), *m)).collect(),
        replicas: vec!["a".into(), "b".into(), "c".into()],
        isr: isr.iter().map(|s| s.to_string()).collect(),
        leases: BTreeMap::new(),
    };
    // The in-sync set is the primary alone: its own copy is not `all`.
    assert!(!pr(&[("a", 5)], &["a"]).acked(5, Consistency::All));
    assert!(pr(&[("a", 5), ("b", 5)], &["a"]).acked(5, Consistency::All));
    // Every in-sync replica is still needed.
    assert!(!pr(&[("a", 5), ("b", 5)], &["a", "b", "c"]).acked(5, Consistency::All));
    assert!(pr(&[("a", 5), ("b", 5)], &["a", "b", "c"]).acked(5, Consistency::Quorum));
}

#[tokio::test]
async fn a_primary_fenced_and_chosen_again_replicates_to_every_replica() {
    let t = Trio::start().await;
    t.put(0, "a", Consistency::All).await.unwrap();
    // n3 hangs: n1's replicator to n3 sits in a call that does not answer.
    t.net.silent.lock().unwrap().insert("n3".into());
    t.put(0, "b", Consistency::Quorum).await.unwrap();
    // The leader fences n2 and n3 at epoch 2, at once as it does (each waits out the read
    // lease it gave n1; one after the other, n1 could hear of the first before the write
    // below); n1 learns it from n2 and steps down.
    let fence = FenceReq { p: P, epoch: 2, primary_fenced: None };
    tokio::join!(t.nodes[1].on_fence(fence.clone()), t.nodes[2].on_fence(fence));
    // n2 has promised epoch 2 and n3 does not answer: no quorum for n1's write. Unless n1
    // already heard of the fence from n2's answer to its replicator, it finds that out
    // from this write; either way the write is refused.
    let stale = t.put(0, "stale", Consistency::Quorum).await;
    assert!(matches!(&stale, Err(OpFail::Unavailable(_))) || stale == Err(not_primary(P)), "{stale:?}");
    t.until("n1 knows it was fenced", async || t.put(0, "x", Consistency::One).await == Err(not_primary(P))).await;
    // n1, the most up to date, is chosen again at epoch 2 while its old replicator to
    // n3 is still in its call.
    t.apply(table("n1", &["n1", "n2"], 2)).await;
    assert_eq!(t.put(0, "c", Consistency::Quorum).await, Ok(OpResult::Done));
    // n3 answers again: a replicator of epoch 2 must catch it up.
    t.net.silent.lock().unwrap().clear();
    t.until("n3 catches up", async || t.local(2).await.as_deref() == Some(&b"c"[..])).await;
    t.until("n3 is reported in sync", async || t.reported(&format!("in-sync {P} 2 n3"))).await;
}

#[tokio::test]
async fn a_write_whose_caller_went_away_and_whose_sync_failed_steps_the_primary_down_at_the_next() {
    let store = Arc::new(Holding::default());
    let t = Trio::start_with(store.clone()).await;
    assert_eq!(t.put(0, "a", Consistency::Quorum).await, Ok(OpResult::Done));
    *store.syncs.lock().unwrap() = Some(Vec::new());
    let pending = || store.syncs.lock().unwrap().as_ref().map_or(0, Vec::len);
    // "b" is made at once and waits for its group sync; its caller goes away.
    let b = t.spawn_put("b");
    t.until("n1's write of b waits for its sync", async || pending() == 1).await;
    b.abort();
    assert!(b.await.unwrap_err().is_cancelled(), "the write of b was still waiting when its caller went away");
    // The next write starts before that sync fails: it must wait for its outcome first.
    let c = t.spawn_put("c");
    // c holds the partition and waits (for b's sync) before that sync fails.
    let state = &t.nodes[0].parts[P as usize].state;
    t.until("c waits in the partition", async || state.try_lock().is_err() && !c.is_finished()).await;
    // Writes from here on are synced as they are made: only b's failure can step n1 down.
    let b_sync = store.syncs.lock().unwrap().take().unwrap().remove(0);
    b_sync.send(Err("disk on fire".into())).unwrap();
    let c = c.await.unwrap();
    assert!(matches!(&c, Err(OpFail::Unavailable(m)) if m.contains("could not write its log")), "{c:?}");
    assert!(t.reported(&format!("relinquish {P} 1")));
}

#[tokio::test]
async fn a_write_whose_caller_went_away_keeps_its_lsn() {
    let store = Arc::new(Holding::default());
    let t = Trio::start_with(store.clone()).await;
    assert_eq!(t.put(0, "a", Consistency::Quorum).await, Ok(OpResult::Done));
    // "b" is sent to the replicas while n1's own write of it waits; then its caller
    // goes away (a client timing out drops the request).
    *store.held.lock().unwrap() = true;
    let b = t.spawn_put("b");
    t.until("n1's write of b waits", async || store.waiting.load(std::sync::atomic::Ordering::SeqCst) > 0).await;
    b.abort();
    assert!(b.await.unwrap_err().is_cancelled(), "the write of b was still waiting when its caller went away");
    *store.held.lock().unwrap() = false;
    store.released.notify_all();
    // The next write takes the next lsn: acknowledged by replicas that hold it, not
    // by replicas holding "b" under the same number.
    assert_eq!(t.put(0, "c", Consistency::All).await, Ok(OpResult::Done));
    for i in 0..3 {
        t.until("every replica holds c", async || t.local(i).await.as_deref() == Some(b"c".as_slice())).await;
    }
}

#[tokio::test]
async fn a_replica_whose_store_was_replaced_is_caught_up_before_it_counts_in_sync_again() {
    let t = Trio::start().await;
    assert_eq!(t.put(0, "a", Consistency::All).await, Ok(OpResult::Done));
    // n3 comes back with an empty store (rebuilt): n1's replicator still holds what the
    // old n3 acknowledged. The leader drops n3 from the in-sync set.
    let fresh = Arc::new(Replicas::new(Arc::new(MemoryStorage::default()), "n3", true, 100, DEFAULT_PARTITIONS));
    fresh.attach(t.net.clone());
    t.net.nodes.lock().unwrap().insert("n3".into(), fresh.clone());
    t.net.reports.lock().unwrap().clear();
    fresh.apply_table(table("n1", &["n1", "n2"], 1)).await;
    for r in &t.nodes[..2] {
        r.apply_table(table("n1", &["n1", "n2"], 1)).await;
    }
    let report = format!("in-sync {P} 1 n3");
    t.until("n3 is reported in sync again", async || t.reported(&report)).await;
    // Reported only after it answered that it holds the log, "a" included.
    assert_eq!(fresh.read_local(P, b"s\0k".to_vec()).await.unwrap().as_deref(), Some(&b"a"[..]));
}

#[tokio::test]
async fn an_append_whose_caller_went_away_lands_before_the_next_one() {
    // n2 as a replica of n1, its store holding writes: an append's write waits in the
    // blocking pool while the primary gives up on it (its RPC timed out) and sends the
    // entry again with the next one. Both writes are released at once; the older one must
    // not land last and put the older value and log end back. Twenty partitions: without
    // the ordering, which of two released writes lands last is a coin toss each time.
    let store = Arc::new(Holding::default());
    let r = Arc::new(Replicas::new(store.clone(), "n2", true, 100, DEFAULT_PARTITIONS));
    r.apply_table(table("n1", &["n1", "n2", "n3"], 1)).await;
    let put = |lsn: u64, v: &str| Entry { lsn, epoch: 1, op: Op::Put { key: b"s\0k".to_vec(), value: v.into() } };
    let append = |p: u32, entries: Vec<Entry>| {
        let r = r.clone();
        tokio::spawn(async move { r.on_append(AppendReq { p, epoch: 1, prev: (0, 0), entries }).await })
    };
    for p in 0..20 {
        *store.held.lock().unwrap() = true;
        let first = append(p, vec![put(1, "old")]);
        let held = p as usize + 1;
        tokio::time::timeout(Duration::from_secs(10), async {
            while store.waiting.load(std::sync::atomic::Ordering::SeqCst) < held {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the first append's write is held");
        first.abort();
        assert!(first.await.unwrap_err().is_cancelled(), "the first append was still writing when dropped");
        let next = append(p, vec![put(1, "old"), put(2, "new")]);
        tokio::task::yield_now().await;
        *store.held.lock().unwrap() = false;
        store.released.notify_all();
        assert!(matches!(next.await.unwrap(), AppendReply::Ok { last: 2, .. }), "partition {p}");
        assert_eq!(r.read_local(p, b"s\0k".to_vec()).await.unwrap().as_deref(), Some(&b"new"[..]), "partition {p}");
        assert_eq!(plog::load_meta(store.as_ref(), p).unwrap().last, 2, "partition {p}");
    }
}
