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
//!
//! `mod.rs` has the state and the operations (the primary's write path, reads at each
//! level); `roles.rs` turns the partition table into roles; `replicator.rs` is the
//! primary's stream to each replica; `follower.rs` the replica's side of it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::sync::watch;

use super::part::{Consistency, PartInfo, PartitionTable, majority};
use super::plog::{self, Entry, Op, PartMeta};
use super::wire::*;
use super::{Durability, KvError, Storage, Table};

mod follower;
mod replicator;
mod roles;
#[cfg(test)]
mod tests;

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

/// Read leases: each append a replica admits from a primary promises that primary not to
/// be fenced for a newer one for this long (the replica waits out the promise before it
/// answers such a fence), so a primary that heard from enough replicas within it answers
/// `quorum`/`all` reads without asking them again. Longer than `PROBE_EVERY`, so an idle
/// partition's lease does not lapse between probes; the price is that a primary change
/// waits up to this long after the old primary was last heard from.
pub const LEASE: Duration = Duration::from_secs(2);
/// What the primary takes off each lease, counted from when it sent the append the lease
/// came with (the replica counts from when it received it): room for clocks that run at
/// slightly different rates on two machines. (Leases are timed by the monotonic clock,
/// which does not run while a machine is suspended: a primary whose machine slept for
/// longer than a lease must not count on that lease, and does not know it slept. Nodes
/// are servers; a suspended node is a limit of this scheme, written in docs/RELIABILITY.md.)
const LEASE_MARGIN: Duration = Duration::from_millis(300);

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
    /// Until when each other replica promised not to follow a newer primary (see [`LEASE`]).
    pub leases: BTreeMap<String, Instant>,
}

impl Progress {
    /// Whether `n` of the replicas in `among` hold a lease for this primary that runs past now.
    fn leased<'a>(&self, among: impl IntoIterator<Item = &'a String>, n: usize) -> bool {
        let now = Instant::now();
        among.into_iter().filter(|r| self.leases.get(r.as_str()).is_some_and(|&t| t > now)).count() >= n
    }

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
    /// The partition's log write under way in the blocking pool (the primary's own, or a
    /// replica's append or snapshot chunk). Kept here, not only in its caller's future: a
    /// write whose caller went away still runs, and the next one waits for it
    /// ([`Replicas::settle`]), so the partition's writes reach the store in log order.
    inflight: Option<tokio::task::JoinHandle<super::StorageResult<()>>>,
    /// The primary's log write made at once whose group sync (`--sync batch`) is still to
    /// come: kept here for the same reason as `inflight`. The next write waits for it and
    /// reads its outcome before its own; a failed sync counts as a failed log write then
    /// (see [`Replicas::write_failed`]), even at a later epoch: after a failed fsync the
    /// entry may be gone from this node's disk, so a crash could leave its log without a
    /// position the replicas hold. That costs an election after a disk failure at most.
    syncing: Option<super::SyncWait>,
    /// As a replica: the read lease this node last gave (the primary's epoch, until when);
    /// a fence for a newer epoch waits until it ran out.
    lease: Option<(u64, Instant)>,
    /// The newest epoch a fence waiting out a lease asks for: from then on no primary of an
    /// older epoch gets a new lease (else it could hold the fence off for ever).
    fencing: u64,
    /// The epoch this node stepped down from as primary after a failed log write: it never
    /// takes that epoch up again (replicas may hold entries at positions its log lacks),
    /// and asks for a new primary instead.
    abandoned: Option<u64>,
}

struct Part {
    id: u32,
    state: tokio::sync::Mutex<State>,
    progress: watch::Sender<Progress>,
    /// As primary: the latest entries of this epoch, so replicators rarely read the log
    /// back from disk.
    tail: std::sync::Mutex<std::collections::VecDeque<Entry>>,
    /// A primary's log write failed and was not yet dealt with (see `append_local`): set
    /// by a write in the blocking pool that fails, and by a failed group sync whose caller
    /// went away; the next write deals with it first. Cleared only once dealt with, so a
    /// caller that goes away meanwhile leaves it for the next.
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
    /// When this process started: leases given by an earlier life of it are not known, so
    /// every fence waits until [`LEASE`] from here.
    started: Instant,
}

fn not_primary(p: u32) -> OpFail {
    OpFail::NotPrimary(format!("this node is not the primary of partition {p}"))
}

impl Replicas {
    /// `clustered: false` is single mode: this node is every partition's only replica.
    /// `partitions`: how many the grid has (fixed for the data dir and the cluster).
    pub fn new(storage: Arc<dyn Storage>, me: &str, clustered: bool, keep: u64, partitions: u32) -> Self {
        let parts = (0..partitions.max(1))
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
                    syncing: None,
                    lease: None,
                    fencing: 0,
                    abandoned: None,
                }),
                progress: watch::channel(Progress::default()).0,
                tail: Default::default(),
                write_failed: Default::default(),
            })
            .collect();
        let table = if clustered { PartitionTable::default() } else { PartitionTable::single(me, partitions.max(1)) };
        Replicas {
            me: me.into(),
            clustered,
            keep: keep.max(1),
            storage,
            parts,
            table: RwLock::new(Arc::new(table)),
            net: OnceLock::new(),
            rebuilt: Default::default(),
            started: Instant::now(),
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

    /// A `one` read of the stored row `row` (partition `p`'s [`plog::data_key`]) from this
    /// node's replica, if it holds one and the answer is in memory; `None`: read it the
    /// usual way. Synchronous: the common read needs no future and no blocking pool.
    pub fn read_cached(&self, p: u32, row: &[u8]) -> Result<Option<Option<Vec<u8>>>, KvError> {
        let holds = {
            let table = self.table.read().unwrap_or_else(|e| e.into_inner());
            table.parts.get(p as usize).is_some_and(|i| i.replicas.contains(&self.me))
        };
        if !holds {
            return Ok(None);
        }
        Ok(self.storage.get_cached(Table::Kv, row)?)
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

    /// How many partitions the grid has.
    pub fn count(&self) -> u32 {
        self.parts.len() as u32
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
                    leases: BTreeMap::new(),
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

    /// Wait for a write of this partition's that a caller left behind (it went away while
    /// the write ran in the blocking pool): no later write may reach the store before it.
    /// Awaited through `&mut`, so a caller that goes away here leaves it for the next.
    async fn settle(st: &mut State) {
        if let Some(prev) = st.inflight.as_mut() {
            // Its result was for the caller that went away: the state in memory never
            // counted it (a primary's failure also sets `write_failed`, read next), so
            // only its landing matters here; a failure is still worth a line in the log.
            let failed = match prev.await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(e) => Some(e.to_string()),
            };
            st.inflight = None;
            if let Some(error) = failed {
                tracing::warn!(%error, "a partition write whose caller went away failed; the next write goes on");
            }
        }
    }

    /// Run `write` in the blocking pool as the partition's write in flight (after settling
    /// an earlier one), so a caller that goes away cannot let a later write land first.
    async fn pooled(
        &self,
        st: &mut State,
        write: impl FnOnce(&dyn Storage) -> super::StorageResult<()> + Send + 'static,
    ) -> Result<(), KvError> {
        Self::settle(st).await;
        let s = self.storage.clone();
        let handle = st.inflight.insert(tokio::task::spawn_blocking(move || write(s.as_ref())));
        let written = handle.await;
        st.inflight = None;
        written.map_err(|e| KvError::Join(e.to_string())).and_then(|r| r.map_err(KvError::from))
    }

    /// Before a primary's append: earlier writes settled (a caller that went away left
    /// its write or its sync to this one), a failed log write dealt with (the position
    /// taken back from what is on disk), and room on the disk.
    async fn ready_to_append(&self, p: u32, st: &mut State) -> Result<(), KvError> {
        let part = &self.parts[p as usize];
        // Found flaky in `a_write_whose_caller_went_away_keeps_its_lsn`: an earlier write
        // whose caller went away landed after the next one and put the older value back
        // in the primary's own copy. Awaited through `&mut`, so a caller that goes away
        // here leaves it for the next.
        Self::settle(st).await;
        if let Some(wait) = st.syncing.as_mut() {
            // Also through `&mut`: the outcome is read once, by whichever write gets it.
            let synced = wait.wait().await;
            st.syncing = None;
            if let Err(e) = synced {
                tracing::warn!(partition = p, error = %e, "a log write whose caller went away was not synced");
                part.write_failed.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        if part.write_failed.load(std::sync::atomic::Ordering::SeqCst) {
            // Report what is on disk, not the entries that never got there.
            let on_disk = self.blocking(move |s| plog::load_meta(s, p)).await?;
            self.write_failed(p, st, on_disk);
            part.write_failed.store(false, std::sync::atomic::Ordering::SeqCst);
            if self.clustered {
                return Err(KvError::Unavailable(format!("partition {p}: its primary could not write its log")));
            }
        }
        // A full disk refuses the write before it takes log positions: nothing was sent
        // to a replica, so the primary keeps its role.
        self.storage.check_room()?;
        Ok(())
    }

    /// Append entries as primary (the caller holds the partition lock). The replicators
    /// start sending them while this node writes them: the primary's own copy is one of
    /// the acknowledgements, not a step before the others.
    async fn append_local(&self, p: u32, st: &mut State, epoch: u64, ops: Vec<Op>) -> Result<u64, KvError> {
        self.ready_to_append(p, st).await?;
        let part = &self.parts[p as usize];
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
        // At once when the store can take it without waiting (see `Storage::write_now`),
        // then (`--sync batch`) its group sync awaited without holding a thread: nothing is
        // left in flight for a caller that goes away but that sync, which the next write
        // waits for (`syncing`).
        let written = match self.storage.write_now(&batch) {
            Some(Ok(wait)) => {
                let synced = st.syncing.insert(wait).wait().await.map_err(KvError::from);
                st.syncing = None;
                synced
            }
            Some(Err(e)) => Err(KvError::from(e)),
            None => {
                let failed = part.write_failed.clone();
                self.pooled(st, move |s| {
                    let r = s.write(batch, Durability::Acked);
                    if r.is_err() {
                        failed.store(true, std::sync::atomic::Ordering::SeqCst);
                    }
                    r
                })
                .await
            }
        };
        if let Err(e) = written {
            // Set until dealt with below: a caller that goes away meanwhile leaves it to the
            // next write.
            part.write_failed.store(true, std::sync::atomic::Ordering::SeqCst);
            tracing::error!(partition = p, error = %e, "cannot write the partition log");
            // The batch may be in the store although its sync failed: take the position
            // from the store, never one below what it holds (positions must not be reused).
            let on_disk = match self.blocking(move |s| plog::load_meta(s, p)).await {
                Ok(m) if m.last >= durable.last => m,
                _ => meta,
            };
            self.write_failed(p, st, on_disk);
            part.write_failed.store(false, std::sync::atomic::Ordering::SeqCst);
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
        if p >= self.count() {
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
        // Enough replicas promised, recently enough, not to follow a newer primary (and
        // every in-sync one, for `all`): no newer primary can exist yet, so none can have
        // written since.
        if pr.epoch == epoch && pr.leased(&others, need) && pr.leased(must.iter().copied(), must.len()) {
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
}
