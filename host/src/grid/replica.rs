//! This node's replicas of the partitions: the primary's write path and its replicators,
//! the replica side of replication (append, snapshot, fence), and reads at each level.
//!
//! The design is primary-backup with a consensus-kept configuration (PacificA, Kafka's
//! ISR): the control plane names each partition's primary and epoch; the primary orders
//! writes in its partition log and streams the log to the other replicas, which accept
//! entries only in order and only from a primary at least as new as they have promised
//! (their fence). A new primary is chosen by the leader after fencing a majority of the
//! replicas, as the one with the most up-to-date log, so every write a majority holds
//! survives; it starts its epoch with a no-op entry. Writes are acknowledged at `one`
//! (the primary's log), `quorum` (a majority of replicas) or `all` (every in-sync
//! replica). A `quorum`/`all` read (and a compare-and-swap that does not swap) returns
//! only state those replicas hold, after confirming the primary's epoch is still current.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::sync::watch;

use super::part::{Consistency, PARTITIONS, PartInfo, PartitionTable, majority};
use super::plog::{self, Entry, Op, PartMeta};
use super::wire::*;
use super::{Durability, KvError, Storage, Table};

/// How long a write waits for its acknowledgements, and a request for a primary.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(5);
const RPC_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a caught-up replicator with nothing to send checks its replica still holds
/// what it acknowledged (an empty append).
const PROBE_EVERY: Duration = Duration::from_secs(1);
const BATCH: usize = 256;
const CHUNK_BYTES: usize = 1 << 20;

/// Why a call to another node failed. [`NetError::NotSent`]: the request surely never
/// reached it (no connection), so retrying cannot apply anything twice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    #[error("{0}")]
    NotSent(String),
    #[error("{0}")]
    Failed(String),
}

impl NetError {
    pub fn sent(&self) -> bool {
        matches!(self, NetError::Failed(_))
    }
}

/// How the grid reaches other nodes and the control plane (the cluster implements it).
pub trait Net: Send + Sync + 'static {
    /// One grid request to `node` (this node included); see [`rpc`] for the typed form.
    fn call<'a>(&'a self, node: &'a str, req: GridRequest) -> BoxFuture<'a, Result<GridReply, NetError>>;
    /// Ask the control plane to count `node` in sync for partition `p` at `epoch`.
    fn in_sync(&self, p: u32, epoch: u64, node: String);
    /// Ask the control plane to drop `node` from the in-sync set of `p` at `epoch` (it has
    /// not kept up for [`LAG_LIMIT`]).
    fn out_of_sync(&self, p: u32, epoch: u64, node: String);
    /// Ask the control plane for a new primary of `p` (this node led `epoch` in an earlier
    /// life and may have lost entries its replicas have).
    fn relinquish(&self, p: u32, epoch: u64);
}

/// A typed grid call: the reply of the kind `req` asks for, or an error.
pub async fn rpc<R: GridRpc>(net: &dyn Net, node: &str, req: R) -> Result<R::Reply, NetError> {
    let reply = net.call(node, req.into()).await?;
    R::from_reply(reply).ok_or_else(|| NetError::Failed(format!("{node} answered with a reply of another kind")))
}

/// How long an in-sync replica may stay behind the primary before the primary asks for it
/// to leave the in-sync set (so `all` writes stop waiting for it).
pub const LAG_LIMIT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    None,
    Backup,
    Primary(u64),
}

/// What waiting writers and replicators watch: the primary's log end and each replica's
/// acknowledged position, for the current epoch.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    pub epoch: u64,
    pub primary: bool,
    pub last: u64,
    pub matched: BTreeMap<String, u64>,
    pub replicas: Vec<String>,
    pub isr: Vec<String>,
}

impl Progress {
    fn acked(&self, lsn: u64, c: Consistency) -> bool {
        let has = |n: &String| self.matched.get(n).is_some_and(|&m| m >= lsn);
        match c {
            Consistency::One => true,
            Consistency::Quorum => self.replicas.iter().filter(|n| has(n)).count() >= majority(self.replicas.len()),
            // Every in-sync replica, and never fewer than a quorum: with the in-sync set
            // shrunk to the primary alone, `all` would otherwise be one copy, lost with
            // the primary (what Kafka's min.insync.replicas guards against).
            Consistency::All => {
                self.isr.iter().all(has)
                    && self.replicas.iter().filter(|n| has(n)).count() >= majority(self.replicas.len())
            }
        }
    }
}

struct State {
    loaded: bool,
    meta: PartMeta,
    role: Role,
    info: PartInfo,
    replicators: HashMap<String, tokio::task::JoinHandle<()>>,
    /// The epoch this process became primary at, if it did.
    led: Option<u64>,
    /// The primary's log write under way. Kept here, not only in its caller's future:
    /// a write whose caller went away still runs, and the next one waits for it, so the
    /// partition's writes reach the store in log order.
    inflight: Option<tokio::task::JoinHandle<super::StorageResult<()>>>,
}

struct Part {
    id: u32,
    state: tokio::sync::Mutex<State>,
    progress: watch::Sender<Progress>,
    /// As primary: the latest entries of this epoch, so replicators rarely read the log
    /// back from disk.
    tail: std::sync::Mutex<std::collections::VecDeque<Entry>>,
    /// Set by a primary's log write that failed after its caller was gone (see
    /// `append_local`); the next write steps down instead.
    write_failed: Arc<std::sync::atomic::AtomicBool>,
}

/// Entries kept in memory per partition for replicators.
const TAIL: usize = 512;

pub struct Replicas {
    me: String,
    clustered: bool,
    keep: u64,
    storage: Arc<dyn Storage>,
    parts: Vec<Part>,
    table: RwLock<Arc<PartitionTable>>,
    net: OnceLock<Arc<dyn Net>>,
    /// This node's store was rebuilt empty (`--rebuild-store`): it becomes primary only
    /// of partitions a promotion fenced it for, never of one the table named before.
    rebuilt: std::sync::atomic::AtomicBool,
}

fn not_primary(p: u32) -> OpFail {
    OpFail::NotPrimary(format!("this node is not the primary of partition {p}"))
}

impl Replicas {
    /// `clustered: false` is single mode: this node is every partition's only replica.
    pub fn new(storage: Arc<dyn Storage>, me: &str, clustered: bool, keep: u64) -> Self {
        let parts = (0..PARTITIONS)
            .map(|id| Part {
                id,
                state: tokio::sync::Mutex::new(State {
                    loaded: false,
                    meta: PartMeta::default(),
                    role: Role::None,
                    info: PartInfo::default(),
                    replicators: HashMap::new(),
                    led: None,
                    inflight: None,
                }),
                progress: watch::channel(Progress::default()).0,
                tail: Default::default(),
                write_failed: Default::default(),
            })
            .collect();
        let table = if clustered { PartitionTable::default() } else { PartitionTable::single(me) };
        Replicas {
            me: me.into(),
            clustered,
            keep: keep.max(1),
            storage,
            parts,
            table: RwLock::new(Arc::new(table)),
            net: OnceLock::new(),
            rebuilt: Default::default(),
        }
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    pub fn attach(&self, net: Arc<dyn Net>) {
        let _ = self.net.set(net);
    }

    pub fn net(&self) -> Option<&Arc<dyn Net>> {
        self.net.get()
    }

    pub fn set_rebuilt(&self, rebuilt: bool) {
        self.rebuilt.store(rebuilt, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn is_rebuilt(&self) -> bool {
        self.rebuilt.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn table(&self) -> Arc<PartitionTable> {
        self.table.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Storage) -> super::StorageResult<R> + Send + 'static,
    ) -> Result<R, KvError> {
        let s = self.storage.clone();
        tokio::task::spawn_blocking(move || f(s.as_ref()))
            .await
            .map_err(|e| KvError::Join(e.to_string()))?
            .map_err(KvError::from)
    }

    /// Lock a partition, loading its durable position the first time.
    async fn lock(&self, p: u32) -> Result<tokio::sync::MutexGuard<'_, State>, KvError> {
        let part = &self.parts[p as usize];
        let mut st = part.state.lock().await;
        if !st.loaded {
            st.meta = self.blocking(move |s| plog::load_meta(s, p)).await?;
            st.loaded = true;
            if !self.clustered {
                // Single mode: the only replica, primary at whatever epoch it last knew.
                let epoch = st.meta.fence.max(st.meta.last_epoch).max(1);
                st.role = Role::Primary(epoch);
                st.info = PartInfo {
                    primary: self.me.clone(),
                    replicas: vec![self.me.clone()],
                    isr: vec![self.me.clone()],
                    epoch,
                };
                let last = st.meta.last;
                part.progress.send_replace(Progress {
                    epoch,
                    primary: true,
                    last,
                    matched: BTreeMap::from([(self.me.clone(), last)]),
                    replicas: vec![self.me.clone()],
                    isr: vec![self.me.clone()],
                });
            }
        }
        Ok(st)
    }

    /// The epoch this node is primary at, if it is (and has not promised a newer one).
    fn primary_epoch(st: &State) -> Option<u64> {
        match st.role {
            Role::Primary(e) if st.meta.fence <= e => Some(e),
            _ => None,
        }
    }

    /// Append entries as primary (the caller holds the partition lock). The replicators
    /// start sending them while this node writes them: the primary's own copy is one of
    /// the acknowledgements, not a step before the others.
    async fn append_local(&self, p: u32, st: &mut State, epoch: u64, ops: Vec<Op>) -> Result<u64, KvError> {
        let part = &self.parts[p as usize];
        // Found flaky in `a_write_whose_caller_went_away_keeps_its_lsn`: an earlier write
        // whose caller went away landed after the next one and put the older value back
        // in the primary's own copy. Awaited through `&mut`, so a caller that goes away
        // here leaves it for the next.
        if let Some(prev) = st.inflight.as_mut() {
            let _ = prev.await;
            st.inflight = None;
        }
        if part.write_failed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            // Report what is on disk, not the entries that never got there.
            let on_disk = self.blocking(move |s| plog::load_meta(s, p)).await?;
            self.write_failed(p, st, on_disk);
            if self.clustered {
                return Err(KvError::Unavailable(format!("partition {p}: its primary could not write its log")));
            }
        }
        // A full disk refuses the write before it takes log positions: nothing was sent
        // to a replica, so the primary keeps its role.
        self.storage.check_room()?;
        let mut meta = st.meta;
        let entries: Vec<Entry> = ops
            .into_iter()
            .map(|op| {
                meta.last += 1;
                Entry { lsn: meta.last, epoch, op }
            })
            .collect();
        meta.last_epoch = epoch;
        let batch = plog::append_ops(p, &entries, &meta, self.keep);
        {
            let mut tail = part.tail.lock().unwrap_or_else(|e| e.into_inner());
            tail.extend(entries);
            while tail.len() > TAIL.min(self.keep as usize) {
                tail.pop_front();
            }
        }
        part.progress.send_modify(|pr| pr.last = meta.last);
        // These lsns are taken before the write is awaited: the replicators already send
        // them, and a caller that goes away (a client timing out drops this future) must
        // not let the next write reuse them for other entries. Found by the fault
        // campaign (seed 2001): a reused lsn was "acknowledged" at once by replicas that
        // held the first entry of that number.
        let durable = st.meta;
        st.meta = meta;
        let (failed, storage) = (part.write_failed.clone(), self.storage.clone());
        let handle = st.inflight.insert(tokio::task::spawn_blocking(move || {
            let r = storage.write(batch, Durability::Acked);
            if r.is_err() {
                failed.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            r
        }));
        let written = handle.await;
        st.inflight = None;
        let written = written.map_err(|e| KvError::Join(e.to_string())).and_then(|r| r.map_err(KvError::from));
        if let Err(e) = written {
            part.write_failed.store(false, std::sync::atomic::Ordering::SeqCst);
            tracing::error!(partition = p, error = %e, "cannot write the partition log");
            // The batch may be in the store although its sync failed: take the position
            // from the store, never one below what it holds (positions must not be reused).
            let on_disk = match self.blocking(move |s| plog::load_meta(s, p)).await {
                Ok(m) if m.last >= durable.last => m,
                _ => meta,
            };
            self.write_failed(p, st, on_disk);
            return Err(e);
        }
        let me = self.me.clone();
        part.progress.send_modify(|pr| {
            pr.matched.insert(me, meta.last);
        });
        Ok(meta.last)
    }

    // ---- operations (primary, or any replica for reads at `one`) ----

    /// Run a kv operation here as the partition's primary.
    pub async fn execute(self: &Arc<Self>, p: u32, op: KvOp, c: Consistency) -> Result<OpResult, OpFail> {
        if p >= PARTITIONS {
            return Err(OpFail::Unavailable(format!("no partition {p}")));
        }
        let internal = |e: KvError| OpFail::Unavailable(e.to_string());
        let mut st = self.lock(p).await.map_err(internal)?;
        let Some(epoch) = Self::primary_epoch(&st) else {
            return Err(not_primary(p));
        };
        match op {
            KvOp::Get { key } => {
                let value = self.read_local(p, key).await.map_err(internal)?;
                let at = st.meta.last;
                drop(st);
                self.confirm(p, epoch, at, c).await?;
                Ok(OpResult::Value(value))
            }
            KvOp::Put { key, value } => {
                let lsn = self.append_local(p, &mut st, epoch, vec![Op::Put { key, value }]).await.map_err(internal)?;
                drop(st);
                self.wait_acked(p, epoch, lsn, c).await?;
                Ok(OpResult::Done)
            }
            KvOp::Delete { key } => {
                let lsn = self.append_local(p, &mut st, epoch, vec![Op::Delete { key }]).await.map_err(internal)?;
                drop(st);
                self.wait_acked(p, epoch, lsn, c).await?;
                Ok(OpResult::Done)
            }
            KvOp::Cas { key, expected, new } => {
                let current = self.read_local(p, key.clone()).await.map_err(internal)?;
                if current != expected {
                    let at = st.meta.last;
                    drop(st);
                    self.confirm(p, epoch, at, c).await?;
                    return Ok(OpResult::Swapped(false));
                }
                let lsn =
                    self.append_local(p, &mut st, epoch, vec![Op::Put { key, value: new }]).await.map_err(internal)?;
                drop(st);
                self.wait_acked(p, epoch, lsn, c).await?;
                Ok(OpResult::Swapped(true))
            }
        }
    }

    /// Read a key from this node's copy, whatever its role (reads at `one`).
    pub async fn read_local(&self, p: u32, key: Vec<u8>) -> Result<Option<Vec<u8>>, KvError> {
        let k = plog::data_key(p, &key);
        // Cached data is read right here; only a read that needs the disk is sent to the
        // blocking pool.
        if let Some(v) = self.storage.get_cached(Table::Kv, &k)? {
            return Ok(v);
        }
        self.blocking(move |s| s.get(Table::Kv, &k)).await
    }

    /// Wait until `lsn` (written at `epoch`) is acknowledged at level `c`.
    async fn wait_acked(&self, p: u32, epoch: u64, lsn: u64, c: Consistency) -> Result<(), OpFail> {
        if c == Consistency::One {
            return Ok(());
        }
        let mut rx = self.parts[p as usize].progress.subscribe();
        let wait = rx.wait_for(|pr| pr.epoch != epoch || !pr.primary || pr.acked(lsn, c));
        let lost = || {
            OpFail::Unavailable(format!(
                "partition {p} changed primary before the write reached {} replicas; it may or may not have been applied",
                c.as_str()
            ))
        };
        match tokio::time::timeout(ACK_TIMEOUT, wait).await {
            Ok(Ok(pr)) if pr.epoch == epoch && pr.primary => {
                tracing::debug!(partition = p, epoch, lsn, level = c.as_str(), matched = ?pr.matched, "write acknowledged");
                Ok(())
            }
            Ok(_) => Err(lost()),
            Err(_) => Err(OpFail::Unavailable(format!(
                "partition {p}: the write was not acknowledged by {} replicas within {ACK_TIMEOUT:?}; it may or may not have been applied",
                c.as_str()
            ))),
        }
    }

    /// Before answering a read at `quorum`/`all`: what was read (state at `at`) is held by
    /// enough replicas, and enough of them still follow this primary's epoch.
    async fn confirm(&self, p: u32, epoch: u64, at: u64, c: Consistency) -> Result<(), OpFail> {
        if c == Consistency::One {
            return Ok(());
        }
        self.wait_acked(p, epoch, at, c).await?;
        let pr = self.parts[p as usize].progress.borrow().clone();
        // A majority of the replicas must still follow this epoch (else a newer primary
        // may have written since), and for `all` every in-sync one too.
        let others: Vec<String> = pr.replicas.iter().filter(|n| **n != self.me).cloned().collect();
        let need = majority(pr.replicas.len()).saturating_sub(1);
        let must: Vec<&String> = match c {
            Consistency::All => pr.isr.iter().filter(|n| **n != self.me).collect(),
            _ => Vec::new(),
        };
        if need == 0 && must.is_empty() {
            return Ok(());
        }
        let Some(net) = self.net.get() else {
            return Err(OpFail::Unavailable("the grid is not connected to its cluster".into()));
        };
        let asks = others.iter().map(|n| async move {
            let r = tokio::time::timeout(RPC_TIMEOUT, rpc(net.as_ref(), n, ConfirmReq { p, epoch })).await;
            (n, matches!(r, Ok(Ok(true))))
        });
        let answers = futures::future::join_all(asks).await;
        let ok = answers.iter().filter(|(_, b)| *b).count();
        let isr_ok = must.iter().all(|m| answers.iter().any(|(n, b)| n == m && *b));
        if ok >= need && isr_ok {
            Ok(())
        } else {
            Err(OpFail::Unavailable(format!(
                "partition {p}: only {ok} of the {need} other replicas needed confirmed this primary; retry"
            )))
        }
    }

    // ---- the replica side ----

    /// Lock partition `p` for a primary of `epoch`, or the reply refusing it: a replica
    /// takes entries only from a primary at least as new as it promised, and a node that
    /// was primary of an older epoch steps down.
    async fn admit(&self, p: u32, epoch: u64) -> Result<tokio::sync::MutexGuard<'_, State>, AppendReply> {
        if p >= PARTITIONS {
            return Err(AppendReply::Fenced { fence: u64::MAX });
        }
        let Ok(mut st) = self.lock(p).await else {
            return Err(AppendReply::Mismatch { last: 0, last_epoch: 0 });
        };
        if epoch < st.meta.fence {
            return Err(AppendReply::Fenced { fence: st.meta.fence });
        }
        if matches!(st.role, Role::Primary(e) if e < epoch) {
            self.demote(p, &mut st, Role::Backup);
        }
        Ok(st)
    }

    pub async fn on_append(self: &Arc<Self>, req: AppendReq) -> AppendReply {
        let p = req.p;
        let mut st = match self.admit(p, req.epoch).await {
            Ok(st) => st,
            Err(refusal) => return refusal,
        };
        if (st.meta.last, st.meta.last_epoch) != req.prev {
            return AppendReply::Mismatch { last: st.meta.last, last_epoch: st.meta.last_epoch };
        }
        let consecutive = req.entries.iter().enumerate().all(|(i, e)| e.lsn == req.prev.0 + 1 + i as u64);
        if !consecutive {
            return AppendReply::Mismatch { last: st.meta.last, last_epoch: st.meta.last_epoch };
        }
        let mut meta = st.meta;
        meta.fence = meta.fence.max(req.epoch);
        if let Some(e) = req.entries.last() {
            meta.last = e.lsn;
            meta.last_epoch = e.epoch;
        }
        if meta != st.meta {
            let batch = plog::append_ops(p, &req.entries, &meta, self.keep);
            if let Err(e) = self.blocking(move |s| s.write(batch, Durability::Acked)).await {
                tracing::warn!(partition = p, error = %e, "could not apply replicated entries");
                return AppendReply::Mismatch { last: st.meta.last, last_epoch: st.meta.last_epoch };
            }
            st.meta = meta;
            tracing::debug!(partition = p, epoch = req.epoch, prev = ?req.prev, last = meta.last, "appended");
        }
        AppendReply::Ok { last: st.meta.last }
    }

    pub async fn on_snapshot(self: &Arc<Self>, req: SnapshotReq) -> AppendReply {
        let p = req.p;
        let mut st = match self.admit(p, req.epoch).await {
            Ok(st) => st,
            Err(refusal) => return refusal,
        };
        let mut meta = st.meta;
        meta.fence = meta.fence.max(req.epoch);
        if req.first {
            // Until the last chunk lands this copy is empty, also after a crash.
            meta.last = 0;
            meta.last_epoch = 0;
        }
        if let Some((last, last_epoch)) = req.done {
            meta.last = last;
            meta.last_epoch = last_epoch;
        }
        let first = req.first;
        let rows = req.rows;
        let write = self
            .blocking(move |s| {
                let mut ops = if first { plog::clear_ops(s, p)? } else { Vec::new() };
                ops.extend(rows.into_iter().map(|(k, v)| super::BatchOp::Put(Table::Kv, plog::data_key(p, &k), v)));
                ops.push(plog::meta_op(p, &meta));
                s.write(ops, Durability::Acked)
            })
            .await;
        if let Err(e) = write {
            tracing::warn!(partition = p, error = %e, "could not install a snapshot chunk");
            return AppendReply::Mismatch { last: st.meta.last, last_epoch: st.meta.last_epoch };
        }
        st.meta = meta;
        if req.done.is_some() {
            tracing::info!(partition = p, lsn = meta.last, "installed a partition snapshot");
        }
        AppendReply::Ok { last: meta.last }
    }

    pub async fn on_fence(self: &Arc<Self>, req: FenceReq) -> FenceReply {
        let p = req.p.min(PARTITIONS - 1);
        let Ok(mut st) = self.lock(p).await else {
            return FenceReply { last: 0, last_epoch: 0, fence: u64::MAX };
        };
        if req.epoch > st.meta.fence {
            let mut meta = st.meta;
            meta.fence = req.epoch;
            let op = plog::meta_op(p, &meta);
            if self.blocking(move |s| s.write(vec![op], Durability::Synced)).await.is_err() {
                return FenceReply { last: 0, last_epoch: 0, fence: u64::MAX };
            }
            st.meta = meta;
            if matches!(st.role, Role::Primary(e) if e < req.epoch) {
                self.demote(p, &mut st, Role::Backup);
            }
        }
        tracing::debug!(
            partition = p,
            epoch = req.epoch,
            last = st.meta.last,
            last_epoch = st.meta.last_epoch,
            fence = st.meta.fence,
            "fence"
        );
        FenceReply { last: st.meta.last, last_epoch: st.meta.last_epoch, fence: st.meta.fence }
    }

    pub async fn on_confirm(&self, p: u32, epoch: u64) -> bool {
        match self.lock(p.min(PARTITIONS - 1)).await {
            Ok(st) => st.meta.fence <= epoch,
            Err(_) => false,
        }
    }

    pub async fn on_list(&self, req: ListReq) -> Result<Vec<Vec<u8>>, OpFail> {
        let ListReq { parts, prefix, after, limit } = req;
        self.blocking(move |s| {
            let mut out = Vec::new();
            for p in parts.into_iter().filter(|&p| p < PARTITIONS) {
                out.extend(plog::list(s, p, &prefix, after.as_deref(), limit as usize)?);
            }
            Ok(out)
        })
        .await
        .map_err(|e| OpFail::Unavailable(e.to_string()))
    }

    pub async fn status(&self) -> Vec<PartStatus> {
        let mut out = Vec::with_capacity(self.parts.len());
        for part in &self.parts {
            let Ok(st) = self.lock(part.id).await else { continue };
            let role = match st.role {
                Role::None if st.meta.last == 0 => continue,
                Role::None => "none",
                Role::Backup => "backup",
                Role::Primary(_) => "primary",
            };
            let pr = part.progress.borrow().clone();
            let matched = if st.role == Role::Primary(pr.epoch) { pr.matched.into_iter().collect() } else { vec![] };
            out.push(PartStatus { p: part.id, role: role.into(), epoch: st.meta.fence, last: st.meta.last, matched });
        }
        out
    }

    // ---- roles from the partition table ----

    /// Take up the roles the control plane's table gives this node.
    pub async fn apply_table(self: &Arc<Self>, table: PartitionTable) {
        if table.parts.len() != PARTITIONS as usize {
            if !table.parts.is_empty() {
                tracing::error!(partitions = table.parts.len(), "partition table has the wrong size; ignored");
            }
            return;
        }
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table.clone());
        for (p, info) in table.parts.into_iter().enumerate() {
            let p = p as u32;
            let Ok(mut st) = self.lock(p).await else { continue };
            if st.info == info && st.role != Role::None {
                continue;
            }
            st.info = info.clone();
            if info.primary == self.me {
                if st.role == Role::Primary(info.epoch) {
                    self.follow_replicas(p, &mut st);
                } else if st.meta.fence > info.epoch {
                    tracing::debug!(
                        partition = p,
                        epoch = info.epoch,
                        fence = st.meta.fence,
                        "a newer primary is being chosen"
                    );
                    self.demote(p, &mut st, Role::Backup);
                } else if self.is_rebuilt() && st.meta.fence < info.epoch {
                    // The table named this node before its store was lost: the data of
                    // this epoch is on the other replicas, one of which must lead.
                    tracing::info!(partition = p, epoch = info.epoch, "store rebuilt; asking for a new primary");
                    self.demote(p, &mut st, Role::Backup);
                    if let Some(net) = self.net.get() {
                        net.relinquish(p, info.epoch);
                    }
                } else if st.meta.last_epoch == info.epoch && st.led != Some(info.epoch) {
                    // This node led this epoch before it restarted. Replicas may hold an
                    // entry it sent but never wrote itself, so it must not append at this
                    // epoch again: a new epoch (and the most up-to-date replica) it is.
                    tracing::info!(
                        partition = p,
                        epoch = info.epoch,
                        "led this epoch before a restart; asking for a new one"
                    );
                    self.demote(p, &mut st, Role::Backup);
                    if let Some(net) = self.net.get() {
                        net.relinquish(p, info.epoch);
                    }
                } else {
                    self.become_primary(p, &mut st, info.epoch).await;
                }
            } else if info.replicas.contains(&self.me) {
                self.demote(p, &mut st, Role::Backup);
            } else {
                self.demote(p, &mut st, Role::None);
            }
        }
    }

    async fn become_primary(self: &Arc<Self>, p: u32, st: &mut State, epoch: u64) {
        // Replicators of an earlier epoch may still be running (a primary that learnt it
        // was fenced only flags itself a backup; a replicator blocked in a call notices
        // when the call ends). Kept, one would stand in for its replica's replicator of
        // this epoch and then end, leaving the replica without one for good: found by the
        // fault campaign (seed 6004), a replica never caught up after its primary was
        // fenced and chosen again.
        for (_, h) in st.replicators.drain() {
            h.abort();
        }
        self.parts[p as usize].tail.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let mut meta = st.meta;
        meta.fence = epoch;
        st.meta = meta;
        st.role = Role::Primary(epoch);
        st.led = Some(epoch);
        let last = st.meta.last;
        self.parts[p as usize].progress.send_replace(Progress {
            epoch,
            primary: true,
            last,
            matched: BTreeMap::from([(self.me.clone(), last)]),
            replicas: st.info.replicas.clone(),
            isr: st.info.isr.clone(),
        });
        // A no-op entry of the new epoch: earlier entries commit with it.
        if let Err(e) = self.append_local(p, st, epoch, vec![Op::Noop]).await {
            tracing::warn!(partition = p, error = %e, "could not start an epoch");
            st.role = Role::Backup;
            return;
        }
        tracing::debug!(partition = p, epoch, lsn = st.meta.last, "primary of partition");
        self.follow_replicas(p, st);
    }

    /// Start a replicator per other replica (stop those of replicas no longer listed).
    fn follow_replicas(self: &Arc<Self>, p: u32, st: &mut State) {
        let Role::Primary(epoch) = st.role else { return };
        let wanted: Vec<String> = st.info.replicas.iter().filter(|n| **n != self.me).cloned().collect();
        st.replicators.retain(|n, h| {
            let keep = wanted.contains(n) && !h.is_finished();
            if !keep {
                h.abort();
            }
            keep
        });
        for n in wanted {
            if let std::collections::hash_map::Entry::Vacant(slot) = st.replicators.entry(n) {
                let this = self.clone();
                let target = slot.key().clone();
                slot.insert(tokio::spawn(async move { this.replicate(p, epoch, target).await }));
            }
        }
        let (replicas, isr) = (st.info.replicas.clone(), st.info.isr.clone());
        self.parts[p as usize].progress.send_modify(|pr| {
            pr.replicas = replicas;
            pr.isr = isr;
        });
    }

    /// The primary's log write failed: its log ends at `on_disk`. In a cluster it steps
    /// down (replicas may hold entries it does not, and it must not reuse their lsns);
    /// alone it is the only copy, so it stays primary and takes the positions back.
    fn write_failed(&self, p: u32, st: &mut State, on_disk: PartMeta) {
        if self.clustered {
            tracing::error!(partition = p, "stepping down as primary after a failed log write");
            self.demote(p, st, Role::Backup);
        } else {
            self.parts[p as usize].tail.lock().unwrap_or_else(|e| e.into_inner()).clear();
            self.parts[p as usize].progress.send_modify(|pr| pr.last = on_disk.last);
        }
        st.meta = on_disk;
    }

    fn demote(&self, p: u32, st: &mut State, to: Role) {
        for (_, h) in st.replicators.drain() {
            h.abort();
        }
        self.parts[p as usize].tail.lock().unwrap_or_else(|e| e.into_inner()).clear();
        st.role = to;
        let me = self.me.clone();
        self.parts[p as usize].progress.send_modify(|pr| {
            pr.primary = false;
            pr.matched.retain(|n, _| *n == me);
        });
    }

    // ---- the primary's replicator, one per other replica ----

    /// An append or snapshot chunk to a replica (both answer an [`AppendReply`]).
    async fn send<R: GridRpc<Reply = AppendReply>>(&self, node: &str, req: R) -> Result<AppendReply, String> {
        let net = self.net.get().ok_or("not connected")?;
        match tokio::time::timeout(RPC_TIMEOUT, rpc(net.as_ref(), node, req)).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {RPC_TIMEOUT:?}")),
        }
    }

    async fn replicate(self: Arc<Self>, p: u32, epoch: u64, target: String) {
        let part = &self.parts[p as usize];
        let mut rx = part.progress.subscribe();
        // What `target` is known to hold: (lsn, epoch of that entry).
        let mut acked: Option<(u64, u64)> = None;
        let mut backoff = Duration::from_millis(20);
        let mut proposed = Instant::now() - Duration::from_secs(10);
        // When `target` last held everything this primary had at the time (Kafka's
        // "last caught up"): under steady load a healthy replica keeps renewing it.
        let mut caught_up = Instant::now();
        loop {
            let pr = rx.borrow_and_update().clone();
            if pr.epoch != epoch || !pr.primary {
                return;
            }
            if acked.is_some_and(|(l, _)| l >= pr.last) {
                caught_up = Instant::now();
            } else if caught_up.elapsed() > LAG_LIMIT
                && pr.isr.contains(&target)
                && proposed.elapsed() > Duration::from_secs(1)
            {
                proposed = Instant::now();
                tracing::info!(partition = p, replica = %target, "replica is lagging; asking to drop it from the in-sync set");
                if let Some(net) = self.net.get() {
                    net.out_of_sync(p, epoch, target.clone());
                }
            }
            let reply = match acked {
                Some((l, _)) if l >= pr.last => {
                    // Caught up: say so once, then wait for more.
                    if !pr.isr.contains(&target) && proposed.elapsed() > Duration::from_secs(1) {
                        proposed = Instant::now();
                        if let Some(net) = self.net.get() {
                            net.in_sync(p, epoch, target.clone());
                        }
                    }
                    let (l, le) = acked.unwrap_or_default();
                    tokio::select! {
                        r = rx.changed() => {
                            if r.is_err() { return }
                            continue;
                        }
                        // Re-check now and then (the in-sync set may still lack it).
                        _ = tokio::time::sleep(PROBE_EVERY) => {}
                    }
                    // Idle: ask whether it still holds what it acknowledged. A replica
                    // whose store was rebuilt (or that lost unsynced writes with the
                    // machine) answers a mismatch and is caught up again.
                    let req = AppendReq { p, epoch, prev: (l, le), entries: vec![] };
                    self.send(&target, req).await.map(|r| (r, Some((l, le))))
                }
                None => {
                    let (last, last_epoch) = {
                        let st = part.state.lock().await;
                        (st.meta.last, st.meta.last_epoch)
                    };
                    let req = AppendReq { p, epoch, prev: (last, last_epoch), entries: vec![] };
                    self.send(&target, req).await.map(|r| (r, Some((last, last_epoch))))
                }
                Some((l, le)) => {
                    let cached = self.tail_from(p, l + 1);
                    let read = match cached {
                        Some(e) => Ok(e),
                        None => self.blocking(move |s| plog::read_entries(s, p, l + 1, BATCH)).await,
                    };
                    let entries = match read {
                        Ok(e) => e,
                        Err(e) => {
                            tracing::warn!(partition = p, error = %e, "cannot read the partition log");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            continue;
                        }
                    };
                    if entries.is_empty() {
                        // The log no longer reaches back that far.
                        self.send_snapshot(p, epoch, &target).await
                    } else {
                        let end = entries.last().map(|e| (e.lsn, e.epoch));
                        let req = AppendReq { p, epoch, prev: (l, le), entries };
                        self.send(&target, req).await.map(|r| (r, end))
                    }
                }
            };
            match reply {
                Ok((AppendReply::Ok { last }, Some(end))) if last == end.0 => {
                    if last >= pr.last {
                        caught_up = Instant::now();
                    }
                    acked = Some(end);
                    backoff = Duration::from_millis(20);
                    part.progress.send_modify(|pr| {
                        if pr.epoch == epoch {
                            pr.matched.insert(target.clone(), last);
                        }
                    });
                }
                Ok((AppendReply::Ok { .. }, _)) => acked = None,
                Ok((AppendReply::Mismatch { last, last_epoch }, _)) => {
                    // What it holds now, not what it once acknowledged, counts.
                    part.progress.send_modify(|pr| {
                        if pr.epoch == epoch && pr.matched.get(&target).is_some_and(|&m| m > last) {
                            pr.matched.insert(target.clone(), last);
                        }
                    });
                    let mine = self.blocking(move |s| plog::entry_epoch(s, p, last)).await.ok().flatten();
                    let my_last = part.progress.borrow().last;
                    if last <= my_last && mine == Some(last_epoch) {
                        acked = Some((last, last_epoch));
                    } else {
                        match self.send_snapshot(p, epoch, &target).await {
                            Ok((AppendReply::Ok { last }, Some(end))) if last == end.0 => {
                                acked = Some(end);
                                part.progress.send_modify(|pr| {
                                    if pr.epoch == epoch {
                                        pr.matched.insert(target.clone(), last);
                                    }
                                });
                            }
                            Ok((AppendReply::Fenced { fence }, _)) => return self.fenced(p, fence).await,
                            other => {
                                tracing::debug!(partition = p, target, ?other, "snapshot not taken");
                                tokio::time::sleep(backoff).await;
                                backoff = (backoff * 2).min(Duration::from_secs(1));
                            }
                        }
                    }
                }
                Ok((AppendReply::Fenced { fence }, _)) => return self.fenced(p, fence).await,
                Err(e) => {
                    tracing::trace!(partition = p, target, error = %e, "replication call failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// Up to [`BATCH`] entries from `from` out of the in-memory tail, if it reaches back
    /// that far.
    fn tail_from(&self, p: u32, from: u64) -> Option<Vec<Entry>> {
        let tail = self.parts[p as usize].tail.lock().unwrap_or_else(|e| e.into_inner());
        let first = tail.front()?.lsn;
        if from < first || from > tail.back()?.lsn {
            return None;
        }
        Some(tail.iter().skip((from - first) as usize).take(BATCH).cloned().collect())
    }

    /// Send the partition's data as it is now; returns the reply and the position sent.
    async fn send_snapshot(
        &self,
        p: u32,
        epoch: u64,
        target: &str,
    ) -> Result<(AppendReply, Option<(u64, u64)>), String> {
        let (rows, at) = {
            let st = self.parts[p as usize].state.lock().await;
            let rows = self.blocking(move |s| plog::data_rows(s, p)).await.map_err(|e| e.to_string())?;
            (rows, (st.meta.last, st.meta.last_epoch))
        };
        let mut chunks: Vec<Vec<(Vec<u8>, Vec<u8>)>> = vec![Vec::new()];
        let mut size = 0;
        for row in rows {
            size += row.0.len() + row.1.len() + 8;
            if size > CHUNK_BYTES && !chunks.last().is_some_and(|c| c.is_empty()) {
                chunks.push(Vec::new());
                size = row.0.len() + row.1.len() + 8;
            }
            chunks.last_mut().expect("one chunk").push(row);
        }
        let n = chunks.len();
        let mut reply = AppendReply::Mismatch { last: 0, last_epoch: 0 };
        for (i, rows) in chunks.into_iter().enumerate() {
            let req = SnapshotReq { p, epoch, first: i == 0, rows, done: (i + 1 == n).then_some(at) };
            reply = self.send(target, req).await?;
            if !matches!(reply, AppendReply::Ok { .. }) {
                return Ok((reply, None));
            }
        }
        tracing::info!(partition = p, target, lsn = at.0, "sent a partition snapshot");
        Ok((reply, Some(at)))
    }

    /// A replica has promised a newer primary: stop acting as this one.
    async fn fenced(&self, p: u32, fence: u64) {
        let Ok(mut st) = self.lock(p).await else { return };
        if fence > st.meta.fence {
            st.meta.fence = fence;
        }
        if matches!(st.role, Role::Primary(e) if e < fence) {
            tracing::info!(partition = p, fence, "a newer primary exists; this node steps down");
            // This task returns right after; the other replicators see `primary` turn
            // false at their next step (a new term as primary aborts any still running).
            st.role = Role::Backup;
            let me = self.me.clone();
            self.parts[p as usize].progress.send_modify(|pr| {
                pr.primary = false;
                pr.matched.retain(|n, _| *n == me);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Mutex;

    use super::*;
    use crate::grid::MemoryStorage;

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
                Ok(dispatch(&r, req).await)
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
        let part =
            PartInfo { primary: primary.into(), replicas, isr: isr.iter().map(|s| s.to_string()).collect(), epoch };
        PartitionTable { version: epoch, replication: 3, parts: vec![part; PARTITIONS as usize] }
    }

    /// A store whose writes wait while `held` (to cancel a write in the middle).
    #[derive(Default)]
    struct Holding {
        inner: MemoryStorage,
        held: std::sync::Mutex<bool>,
        released: std::sync::Condvar,
        waiting: std::sync::atomic::AtomicUsize,
    }

    impl crate::grid::Storage for Holding {
        fn get(&self, t: Table, k: &[u8]) -> crate::grid::StorageResult<Option<Vec<u8>>> {
            self.inner.get(t, k)
        }
        fn write(&self, ops: Vec<crate::grid::BatchOp>, d: Durability) -> crate::grid::StorageResult<()> {
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
                let r = Arc::new(Replicas::new(storage, name, true, 100));
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
        // The leader fences n2 and n3 at epoch 2: n1 can no longer reach a quorum.
        for i in [1, 2] {
            let f = t.nodes[i].on_fence(FenceReq { p: P, epoch: 2 }).await;
            assert_eq!(f.fence, 2);
        }
        // It does not know yet: its read cannot be confirmed, its write not acknowledged.
        assert!(matches!(t.get(0, Consistency::Quorum).await, Err(OpFail::Unavailable(_))), "cannot confirm a read");
        assert!(matches!(t.put(0, "stale", Consistency::Quorum).await, Err(OpFail::Unavailable(_))));
        // Now it knows (a replica answered "fenced"): it refuses outright.
        assert_eq!(t.get(0, Consistency::Quorum).await, Err(not_primary(P)));
        assert_eq!(t.local(0).await.as_deref(), Some(&b"stale"[..]), "only in n1's own copy");
        // n2 becomes primary at epoch 2; n1's divergent entry is replaced by n2's state.
        t.apply(table("n2", &["n2", "n3"], 2)).await;
        assert_eq!(t.get(1, Consistency::Quorum).await, value("a"));
        assert_eq!(t.put(1, "b", Consistency::Quorum).await, Ok(OpResult::Done));
        t.until("n1 holds n2's state", async || t.local(0).await.as_deref() == Some(&b"b"[..])).await;
        assert_eq!(t.put(0, "x", Consistency::One).await, Err(not_primary(P)));
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
        // The leader fences n2 and n3 at epoch 2; n1 learns it from n2 and steps down.
        for i in [1, 2] {
            t.nodes[i].on_fence(FenceReq { p: P, epoch: 2 }).await;
        }
        // n2 has promised epoch 2 and n3 does not answer: no quorum for n1's write.
        assert!(matches!(t.put(0, "stale", Consistency::Quorum).await, Err(OpFail::Unavailable(_))));
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
    async fn a_write_whose_caller_went_away_keeps_its_lsn() {
        let store = Arc::new(Holding::default());
        let t = Trio::start_with(store.clone()).await;
        assert_eq!(t.put(0, "a", Consistency::Quorum).await, Ok(OpResult::Done));
        // "b" is sent to the replicas while n1's own write of it waits; then its caller
        // goes away (a client timing out drops the request).
        *store.held.lock().unwrap() = true;
        let nodes = t.nodes.clone();
        let b = tokio::spawn(async move {
            let op = KvOp::Put { key: b"s\0k".to_vec(), value: b"b".to_vec() };
            nodes[0].execute(P, op, Consistency::Quorum).await
        });
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
}
