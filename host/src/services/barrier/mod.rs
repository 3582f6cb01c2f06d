//! Durable barriers (DESIGN.md §1, "memoization and barriers"): a service fans out calls,
//! hands its state to the platform and finishes; when every call has answered, the
//! platform sends the service its continuation request, which reads the answers.
//!
//! A barrier is one record in the grid (namespace [`NAMESPACE`], key `b/{id}`, postcard),
//! plus the index key `pending/{id}` (when it was created) while it runs and `done/{id}`
//! (when it ended) after. Writes that do not depend on each other go together (record and
//! `pending` entry; the last answers and the first attempt to resume; the end and `done`
//! entry): with synced writes each step waits for an fsync, so each round counts.
//!
//! The node that created it *drives* it: sends the calls, writes the answers into the
//! record as they arrive (within `CHECKPOINT`, 100 ms), then sends the continuation (retried on
//! failure). Every write is a compare-and-swap at quorum against the driver's own last
//! write and renews the driver's lease, so a driver that lost its barrier to another node
//! stops at its next write. Every node sweeps the pending index and takes over a barrier
//! whose lease ran out, or whose owner is an earlier run of itself (a restart), sending
//! again only the calls whose answers were not written: calls and the continuation run at
//! least once.
//!
//! [`BarrierEngine`] does the driving and the sweep; its drive tasks are its own, stopped
//! when the sweep is told to stop (node shutdown) or the engine is dropped. A stopped
//! drive is taken up again by the sweep: the barrier's state is in the grid.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::sync::watch;

use super::invoker::to_guest_error;
use super::{DispatchError, Registry, now_ms};
use crate::grid::part::Consistency;
use crate::grid::{Grid, KvError};
use crate::runtime::{CallContext, GuestError, Request, Response};
use crate::tasks::Tasks;
use record::*;

mod record;
pub mod report;
mod sweep;
#[cfg(test)]
mod tests;

/// The grid namespace of barrier records (not a valid service name, so no guest reaches it).
pub const NAMESPACE: &str = "nanogrid.barriers";
pub use super::BARRIER_HEADER as HEADER;
/// How long a driver's claim lasts without a write; it renews at a third of this.
const LEASE: Duration = Duration::from_secs(6);
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// A call or continuation that could not run (no instance, overloaded, cut off) is tried
/// again for this long before its error is taken as the answer.
const RETRY_FOR: Duration = Duration::from_secs(30);
const RESUME_ATTEMPTS: u32 = 5;
/// An answer is written into the record at most this long after it arrived, or at once
/// if it is the last: the answers of calls that end close together share one write (one
/// fsync), and a driver that stops loses at most this much of them (their calls run
/// again: at least once).
const CHECKPOINT: Duration = Duration::from_millis(100);
/// How long the sweep leaves a `pending` entry without a record alone: the record is
/// written beside it, and a quorum write may retry through a failover for several seconds
/// (the grid's 5 s acknowledgement timeout, then a forwarded call's own); long enough for
/// clocks some seconds apart, since the entry holds the creating node's time.
const UNRECORDED_GRACE: Duration = Duration::from_secs(60);
/// Ended barriers stay readable (`GET /v1/barriers/{id}`, `barrier.results`) this long.
const KEEP_ENDED: Duration = Duration::from_secs(3600);
/// All answers of one barrier together (each is also capped at the service's
/// `max_kv_value_bytes`): the record is rewritten as answers arrive.
const MAX_ANSWERS_BYTES: usize = 16 << 20;

/// This node's barrier bookkeeping and counters (the [`Registry`]'s `barriers`, shared
/// with its [`BarrierEngine`], which updates it).
pub struct Barriers {
    node: OnceLock<String>,
    run: String,
    /// Barriers this node drives now.
    active: Mutex<HashSet<String>>,
    pub started: AtomicU64,
    pub resumed: AtomicU64,
    pub failed: AtomicU64,
    pub taken_over: AtomicU64,
    /// Barriers this node saw end (done or failed), for waiting on one without polling.
    ended: watch::Sender<u64>,
}

impl Barriers {
    pub fn new(run: u64) -> Self {
        Barriers {
            node: OnceLock::new(),
            run: format!("{run:016x}"),
            active: Mutex::new(HashSet::new()),
            started: AtomicU64::new(0),
            resumed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            taken_over: AtomicU64::new(0),
            ended: watch::channel(0).0,
        }
    }

    /// Name this node (before any barrier starts); `local` otherwise.
    pub fn set_node(&self, name: &str) {
        let _ = self.node.set(name.to_string());
    }

    fn me(&self) -> String {
        format!("{}/{}", self.node.get().map_or("local", String::as_str), self.run)
    }

    /// How many barriers this node drives now.
    pub fn active(&self) -> usize {
        self.active.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Changes each time a barrier driven here ends (the value counts them).
    pub fn subscribe_ended(&self) -> watch::Receiver<u64> {
        self.ended.subscribe()
    }

    /// Mark `id` as driven here; false if it already is.
    fn claim(&self, id: &str) -> bool {
        self.active.lock().unwrap_or_else(|e| e.into_inner()).insert(id.to_string())
    }

    fn release(&self, id: &str) {
        self.active.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }
}

fn kv_error(e: KvError) -> GuestError {
    match e {
        KvError::Unavailable(m) => GuestError::Unavailable(format!("the barrier could not be stored: {m}")),
        KvError::Storage(crate::grid::StorageError::Full(full)) => {
            GuestError::Unavailable(format!("the barrier could not be stored: {full}"))
        }
        e => GuestError::Internal(format!("the barrier could not be stored: {e}")),
    }
}

/// Whether a barrier call answered `status` is tried again: only for a service whose spec
/// says calls to it may run more than once, and only for the answers a lost or refused
/// call gets: 502 (a forward that failed after sending, whose keep-alive gave up within
/// 15 s) and 503. Not 504: a guest's own deadline or fuel ran out (it would again), or a
/// forward waited out its 120 s, past the retry window anyway.
fn again(registry: &Registry, service: &str, status: u16) -> bool {
    matches!(status, 502 | 503) && registry.get(service).is_some_and(|s| s.idempotent())
}

/// Errors after which the call never ran and may run later.
fn retryable(e: &DispatchError) -> bool {
    matches!(
        e,
        DispatchError::NoInstance { .. }
            | DispatchError::QueueFull(_)
            | DispatchError::WaitTimeout(..)
            | DispatchError::Unresolved { .. }
    )
}

/// Why a driver stopped before the barrier ended.
#[derive(Debug, thiserror::Error)]
enum Stop {
    #[error("another node took the barrier over")]
    Lost,
    #[error("the grid did not take the barrier's state: {0}")]
    Grid(String),
}

/// The barrier engine: starts barriers, drives them (a task per barrier this node drives,
/// owned here) and sweeps for barriers nobody drives (`sweep.rs`). The [`Registry`] holds
/// it; it reaches the registry (to send calls and continuations) through a weak pointer,
/// and the grid directly.
pub struct BarrierEngine {
    registry: Weak<Registry>,
    grid: Arc<Grid>,
    table: Arc<Barriers>,
    /// The drive tasks: stopped by [`BarrierEngine::shutdown`] or on drop.
    drives: Tasks,
}

impl BarrierEngine {
    pub(super) fn new(registry: Weak<Registry>, grid: Arc<Grid>, table: Arc<Barriers>) -> Self {
        BarrierEngine { registry, grid, table, drives: Tasks::new() }
    }

    /// Stop driving: abort every drive task and wait for them (their barriers are taken
    /// over later, by this node's next run or another node).
    pub async fn shutdown(&self) {
        self.drives.shutdown().await;
        self.table.active.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Drive `record` (claimed in the table) in a task of this engine's.
    fn spawn_drive(self: &Arc<Self>, registry: Arc<Registry>, record: Record, stored: Vec<u8>) {
        let id = record.id.clone();
        if !self.drives.spawn(self.clone().drive(registry, record, stored)) {
            tracing::debug!(barrier = %id, "not driving a barrier: the node is shutting down");
            self.table.release(&id);
        }
    }

    /// `barrier.fan-out`: store the barrier, start driving it, return its id.
    pub(super) async fn start(
        self: &Arc<Self>,
        caller: &CallContext,
        calls: Vec<(String, Request)>,
        then: Request,
    ) -> Result<String, GuestError> {
        check_fan_out(caller, &calls, &then)?;
        let max = caller.limits.max_value_bytes;
        // The calls and the continuation run later, maybe on another node: they carry the
        // fan-out's trace context with them.
        let mut calls = calls;
        let mut then = then;
        for (_, req) in calls.iter_mut() {
            super::invoker::platform_parent(&mut req.headers, caller);
        }
        super::invoker::platform_parent(&mut then.headers, caller);
        let Some(registry) = self.registry.upgrade() else {
            return Err(GuestError::Internal("the node is shutting down".into()));
        };
        let id = registry.new_request_id();
        let created_ms = now_ms();
        let record = Record {
            id: id.clone(),
            service: caller.service.to_string(),
            request_id: caller.request_id.to_string(),
            depth: caller.depth,
            created_ms,
            calls: calls
                .into_iter()
                .map(|(service, req)| Call { service, request: to_wire_request(req), answer: None })
                .collect(),
            then: to_wire_request(then),
            owner: self.table.me(),
            lease_until_ms: created_ms + LEASE.as_millis() as u64,
            takeovers: 0,
            state: State::Waiting,
            last: None,
            max_answer: max,
        };
        let bytes = encode(&record);
        // The record and its index entry are written together (their fsyncs overlap, or
        // are one group commit): the sweep leaves an index entry without a record alone
        // for `UNRECORDED_GRACE`, so it never drops one whose record is on its way. A
        // crash between leaves a record nothing drives (its fan-out never returned an id),
        // or an index entry the sweep drops later.
        let (key, pending) = (record_key(&id), format!("pending/{id}"));
        let (stored, indexed) = futures::join!(
            self.grid.kv_compare_and_swap(NAMESPACE, &key, None, bytes.clone()),
            self.grid.kv_set(NAMESPACE, &pending, created_ms.to_string().into_bytes(), Consistency::Quorum),
        );
        let failed = match (stored, indexed) {
            (Ok(true), Ok(())) => None,
            // Another barrier's record and index entry (ids are unique: not expected).
            (Ok(false), _) => return Err(GuestError::Internal(format!("barrier id {id} is already taken; retry"))),
            (Err(e), _) | (Ok(true), Err(e)) => Some(kv_error(e)),
        };
        if let Some(e) = failed {
            // Nothing will drive it: take back what was written, the index entry first (a
            // failed write may still have landed, and the sweep finds a barrier by its
            // entry). If the entry cannot be taken back, the barrier may still run: say so.
            if self.grid.kv_delete(NAMESPACE, &pending, Consistency::Quorum).await.is_err() {
                let note = format!(
                    "; barrier {id} may still run (its index entry could not be taken back): its calls and \
                     continuation carry that id"
                );
                return Err(match e {
                    GuestError::Unavailable(m) => GuestError::Unavailable(m + &note),
                    GuestError::Internal(m) => GuestError::Internal(m + &note),
                    other => other,
                });
            }
            let _ = self.grid.kv_delete(NAMESPACE, &key, Consistency::Quorum).await;
            return Err(e);
        }
        self.table.started.fetch_add(1, Ordering::Relaxed);
        self.table.claim(&id);
        tracing::info!(barrier = %id, service = %record.service, request_id = %record.request_id, calls = record.calls.len(), "barrier started");
        self.spawn_drive(registry, record, bytes);
        Ok(id)
    }

    /// `barrier.results`: the answers of one of the caller's barriers.
    pub(super) async fn results(&self, caller: &CallContext, id: &str) -> crate::runtime::BarrierResults {
        let not_found = || GuestError::NotFound(format!("service {:?} has no barrier {id:?}", caller.service));
        if id.is_empty() || id.len() > 64 {
            return Err(not_found());
        }
        let bytes = self.grid.kv_get(NAMESPACE, &record_key(id), Consistency::Quorum).await.map_err(kv_error)?;
        let record =
            bytes.as_deref().and_then(decode).filter(|r| *r.service == *caller.service).ok_or_else(not_found)?;
        Ok(record
            .calls
            .into_iter()
            .enumerate()
            .map(|(i, c)| match c.answer {
                Some(a) => a
                    .result
                    .map(|r| Response { status: r.status, headers: r.headers, body: r.body })
                    .map_err(from_wire_error),
                None => Err(GuestError::Unavailable(format!(
                    "call {i} of barrier {id} ({}) has not answered yet",
                    c.service
                ))),
            })
            .collect())
    }

    /// Drive one barrier to its end (the registry sends its calls and continuation).
    async fn drive(self: Arc<Self>, registry: Arc<Registry>, mut record: Record, mut stored: Vec<u8>) {
        let id = record.id.clone();
        match self.drive_to_end(&registry, &mut record, &mut stored).await {
            Ok(()) => {}
            Err(e) => tracing::warn!(barrier = %id, error = %e, "stopped driving a barrier; a node will take it over"),
        }
        self.table.release(&id);
    }

    async fn drive_to_end(
        &self,
        registry: &Arc<Registry>,
        record: &mut Record,
        stored: &mut Vec<u8>,
    ) -> Result<(), Stop> {
        // The first renewal is due a third of a lease from now (an interval's immediate
        // first tick would still wait for the timer wheel, about a millisecond).
        let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + LEASE / 3, LEASE / 3);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Whether the record as stored already counts the first attempt to resume.
        let waiting = matches!(record.state, State::Waiting);
        let announced = waiting && self.gather_answers(registry, record, stored, &mut renew).await?;
        if let (true, Some(c)) = (waiting, record.last.and_then(|i| record.calls.get(i))) {
            // Who the barrier waited for: the callee that answered last, and how long.
            let waited = c.answer.as_ref().map_or(0, |a| a.after_ms);
            registry.calls.record_wait(&record.service, &c.service, waited);
        }
        if record.ended().is_none() {
            self.resume(registry, record, stored, &mut renew, announced).await?;
        }
        let id = record.id.clone();
        let ended = record.ended().unwrap_or_else(now_ms);
        // The end and the `done` index entry together (`forget_ended` drops a record only
        // once it says it ended, so an entry whose end was not saved harms nothing); the
        // `pending` entry only after the end is saved: if another node took the barrier
        // over meanwhile, its drive still needs it.
        let done = format!("done/{id}");
        let (saved, indexed) = futures::join!(
            self.save(record, stored),
            self.grid.kv_set(NAMESPACE, &done, ended.to_string().into_bytes(), Consistency::Quorum),
        );
        saved?;
        match &record.state {
            State::Done { status, .. } => {
                self.table.resumed.fetch_add(1, Ordering::Relaxed);
                tracing::info!(barrier = %id, service = %record.service, request_id = %record.request_id, status, "barrier resumed its service");
            }
            State::Failed { reason, .. } => {
                self.table.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(barrier = %id, service = %record.service, request_id = %record.request_id, reason = %reason, "barrier could not resume its service");
            }
            _ => {}
        }
        // Ended once the record says so; dropping the index entry is tidying (the sweep
        // does it for a driver that stops first). Without a `done` entry the record would
        // never be forgotten: the `pending` entry then stays, and the sweep writes `done`.
        self.table.ended.send_modify(|n| *n += 1);
        if indexed.is_ok() {
            let _ = self.grid.kv_delete(NAMESPACE, &format!("pending/{id}"), Consistency::Quorum).await;
        }
        Ok(())
    }

    /// Send the calls that have no answer yet and write their answers into the record as
    /// they arrive (within [`CHECKPOINT`]; the last ones with the first attempt to resume).
    /// Returns whether it waited for any, so the record now counts that attempt.
    async fn gather_answers(
        &self,
        registry: &Arc<Registry>,
        record: &mut Record,
        stored: &mut Vec<u8>,
        renew: &mut tokio::time::Interval,
    ) -> Result<bool, Stop> {
        let mut pending: FuturesUnordered<_> = record
            .calls
            .iter()
            .enumerate()
            .filter(|(_, c)| c.answer.is_none())
            .map(|(i, c)| {
                let (registry, call) = (registry.clone(), c.clone());
                let (from, request_id, depth) = (record.service.clone(), record.request_id.clone(), record.depth + 1);
                async move { (i, barrier_call(&registry, &from, call, request_id, depth).await) }
            })
            .collect();
        // The last answers' write will say resuming, if any answers are awaited here.
        let announced = !pending.is_empty();
        // When answers not yet written must be (see [`CHECKPOINT`]).
        let mut unsaved: Option<tokio::time::Instant> = None;
        while !pending.is_empty() {
            let checkpoint = async {
                match unsaved {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(first) = pending.next() => {
                    // Answers that are already in go into the same write.
                    let mut ready = vec![first];
                    while let Some(Some(more)) = pending.next().now_or_never() {
                        ready.push(more);
                    }
                    let after_ms = now_ms().saturating_sub(record.created_ms);
                    for (i, result) in ready {
                        let result = record.keepable(result);
                        record.calls[i].answer = Some(Answer { after_ms, result });
                        record.last = Some(i);
                    }
                    if pending.is_empty() {
                        // The last answers and the first attempt to resume in one
                        // write: one fsync fewer between the answers and the
                        // continuation. `attempts` counts attempts that may have run.
                        record.state = State::Resuming { attempts: 1 };
                        self.save(record, stored).await?;
                    } else if unsaved.is_none() {
                        unsaved = Some(tokio::time::Instant::now() + CHECKPOINT);
                    }
                }
                _ = checkpoint => {
                    self.save(record, stored).await?;
                    unsaved = None;
                }
                _ = renew.tick() => {
                    self.save(record, stored).await?;
                    unsaved = None;
                }
            }
        }
        Ok(announced)
    }

    /// Send the continuation until it answers below 500 or the attempts run out.
    /// `announced`: the record as stored already counts the first attempt made here (it
    /// went into the write of the last answers).
    async fn resume(
        &self,
        registry: &Arc<Registry>,
        record: &mut Record,
        stored: &mut Vec<u8>,
        renew: &mut tokio::time::Interval,
        mut announced: bool,
    ) -> Result<(), Stop> {
        loop {
            let attempts = match record.state {
                State::Resuming { attempts } if announced => attempts,
                State::Resuming { attempts } => attempts + 1,
                _ => 1,
            };
            if !std::mem::take(&mut announced) {
                record.state = State::Resuming { attempts };
                self.save(record, stored).await?;
            }
            let mut then = from_wire_request(record.then.clone());
            then.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(HEADER));
            then.headers.push((HEADER.to_string(), record.id.clone()));
            let service = record.service.clone();
            let run = registry.dispatch(&service, then, record.request_id.as_str().into(), record.depth);
            tokio::pin!(run);
            let result = loop {
                tokio::select! {
                    r = &mut run => break r,
                    _ = renew.tick() => self.save(record, stored).await?,
                }
            };
            let reason = match result {
                Ok(r) if r.status < 500 => {
                    record.state = State::Done { status: r.status, at_ms: now_ms() };
                    return Ok(());
                }
                Ok(r) => format!("the continuation answered {}: {}", r.status, String::from_utf8_lossy(&r.body)),
                Err(e) => format!("the continuation failed: {e}"),
            };
            if attempts >= RESUME_ATTEMPTS {
                record.state = State::Failed { reason, at_ms: now_ms() };
                return Ok(());
            }
            tracing::warn!(barrier = %record.id, attempts, reason = %reason, "barrier continuation failed; retrying");
            let wait = tokio::time::sleep(Duration::from_millis(500) * 2u32.pow(attempts - 1));
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    _ = &mut wait => break,
                    _ = renew.tick() => self.save(record, stored).await?,
                }
            }
            // Who the barrier waited for: the callee that answered last, and how long.
            if let Some(c) = record.last.and_then(|i| record.calls.get(i)) {
                let waited = c.answer.as_ref().map_or(0, |a| a.after_ms);
                registry.calls.record_wait(&record.service, &c.service, waited);
            }
        }
    }

    /// Write the record (renewing this node's lease) if it is still what this node last
    /// wrote.
    async fn save(&self, record: &mut Record, stored: &mut Vec<u8>) -> Result<(), Stop> {
        record.owner = self.table.me();
        record.lease_until_ms = now_ms() + LEASE.as_millis() as u64;
        let new = encode(record);
        let key = record_key(&record.id);
        let mut last_error = String::new();
        for _ in 0..10 {
            match self.grid.kv_compare_and_swap(NAMESPACE, &key, Some(stored.clone()), new.clone()).await {
                Ok(true) => {
                    *stored = new;
                    return Ok(());
                }
                // An earlier attempt may have landed without its answer reaching us.
                Ok(false) => {
                    let now = self.grid.kv_get(NAMESPACE, &key, Consistency::Quorum).await;
                    return match now {
                        Ok(Some(b)) if b == new => {
                            *stored = new;
                            Ok(())
                        }
                        _ => Err(Stop::Lost),
                    };
                }
                Err(e) => last_error = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(Stop::Grid(last_error))
    }
}

/// One fanned-out call, tried again while it could not run at all.
async fn barrier_call(
    registry: &Arc<Registry>,
    from: &str,
    call: Call,
    request_id: String,
    depth: u32,
) -> Result<WireResponse, WireError> {
    let give_up = Instant::now() + RETRY_FOR;
    let mut backoff = Duration::from_millis(200);
    loop {
        let req = from_wire_request(call.request.clone());
        match registry.call_from((from, "barrier-call"), &call.service, req, request_id.as_str().into(), depth).await {
            Ok(r) if again(registry, &call.service, r.status) && Instant::now() + backoff < give_up => {
                tracing::info!(service = %call.service, status = r.status, %request_id, "an idempotent service's barrier call failed; trying it again");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Ok(r) => {
                if r.status >= 500 {
                    // Not run again unless the service is idempotent and the answer one a
                    // repeat may change ([`again`]; it may have run: a forward that failed
                    // after sending answers 502 or 504): the continuation sees this answer.
                    tracing::warn!(service = %call.service, status = r.status, %request_id, "a barrier call answered with a server error");
                }
                return Ok(WireResponse { status: r.status, headers: r.headers, body: r.body });
            }
            Err(e) if retryable(&e) && Instant::now() + backoff < give_up => {
                tracing::debug!(service = %call.service, error = %e, "barrier call could not run yet; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(to_wire_error(to_guest_error(&e))),
        }
    }
}

/// Whether `caller` may fan out `calls` with `then`: within its call depth, and the
/// request bodies small enough for the barrier's record.
fn check_fan_out(caller: &CallContext, calls: &[(String, Request)], then: &Request) -> Result<(), GuestError> {
    let max_depth = caller.limits.max_call_depth;
    if caller.depth + 1 > max_depth {
        return Err(GuestError::Denied(format!(
            "call depth limit {max_depth} reached fanning out from {:?}",
            caller.service
        )));
    }
    let max = caller.limits.max_value_bytes;
    let size: usize = calls.iter().map(|(_, r)| r.body.len()).sum::<usize>() + then.body.len();
    if size > max {
        return Err(GuestError::Invalid(format!(
            "the fan-out's request bodies (calls and then) are {size} bytes in all; a barrier keeps up to limits.max_kv_value_bytes ({max}): pass keys to kv data instead"
        )));
    }
    Ok(())
}
