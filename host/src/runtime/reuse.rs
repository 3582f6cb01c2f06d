//! Opt-in instance reuse (a spec's `"reuse": {"requests": n}`): a nanoservice instance
//! serves up to n requests one after another, then is dropped. Fresh-per-request stays
//! the default; docs/SECURITY.md states what reuse gives up.
//!
//! What never carries over: everything the host keeps per request lives in the Store's
//! [`CallContext`] (request id, trace and its counters, caller depth) and is replaced
//! before each request, with the deadline, the fuel and the output tail. What does carry
//! over is the guest's own memory (statics, heap), and any resource it chose to keep.
//! An instance that trapped, ran out of time or failed is never reused.
//!
//! Idle instances hold pooling-allocator slots, so they are bounded: a node keeps at most
//! a quarter of its slots idle, drops an instance idle for [`IDLE_MAX`] (every pool is
//! swept at most every `IDLE_MAX / 2`, when any instance goes back), and when a fresh
//! instantiation (nanoservice or wasi:http) finds the pool full it drops every idle one
//! and tries once more. A chain's providers run inside its entry's instance, so a chain is
//! reused only when every service in it asks for reuse.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use wasmtime::Store;

use super::bindings::Nanoservice;
use super::output::OutputTail;
use super::state::{CallContext, StoreState};
use super::{CallError, ExecLimits};

/// An instance idle this long is dropped at the next visit to its pool.
pub const IDLE_MAX: Duration = Duration::from_secs(30);

/// One instance between requests.
pub(super) struct Warm {
    pub(super) store: Store<StoreState>,
    pub(super) instance: Nanoservice,
    pub(super) tail: OutputTail,
    /// Requests it has served.
    pub(super) served: u32,
    since: Instant,
}

impl Warm {
    pub(super) fn new(store: Store<StoreState>, instance: Nanoservice, tail: OutputTail) -> Self {
        Warm { store, instance, tail, served: 0, since: Instant::now() }
    }

    /// Make the instance the next request's: its context, deadline, fuel, a clean tail.
    pub(super) fn rebind(&mut self, call: CallContext, limits: ExecLimits, fuel: bool) -> Result<(), CallError> {
        self.tail.clear();
        let data = self.store.data_mut();
        data.outbound.trace = call.trace.clone();
        data.call = call;
        super::arm_deadline(&mut self.store, limits.timeout);
        if fuel {
            self.store.set_fuel(limits.fuel.unwrap_or(u64::MAX)).map_err(|e| CallError::Internal(e.to_string()))?;
        }
        Ok(())
    }
}

/// The idle instances of one deployed version of a service.
pub struct WarmPool {
    max_requests: u32,
    idle: Mutex<Vec<Warm>>,
    budget: Arc<IdleBudget>,
}

/// How many instances the whole node keeps idle, and the pools that hold them.
pub(super) struct IdleBudget {
    held: AtomicUsize,
    cap: usize,
    pools: Mutex<Vec<Weak<WarmPool>>>,
    /// When every pool was last swept for instances idle past [`IDLE_MAX`] (a pool whose
    /// service gets no more requests here is not visited otherwise).
    swept: Mutex<Instant>,
    /// Set at shutdown: nothing is kept idle any more (an idle instance's context holds
    /// the registry that holds its pool).
    closed: std::sync::atomic::AtomicBool,
    /// Held while idle instances are dropped for room, so a request that finds nothing
    /// left to drop retries only once another's eviction has freed its slots.
    evicting: Mutex<()>,
}

/// Whether an instantiation failed because the pooling allocator has no free slot.
pub(super) fn is_pool_full(e: &wasmtime::Error) -> bool {
    e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>().is_some()
}

impl IdleBudget {
    /// After an instantiation failed: whether to try once more, having dropped every idle
    /// instance. Yes whenever the pool was full: requests that find it full at the same
    /// moment race to evict, and the one that finds nothing left to drop retries too, once
    /// the other's eviction has returned the slots (the lock).
    pub(super) fn made_room(&self, e: &wasmtime::Error) -> bool {
        if !is_pool_full(e) {
            return false;
        }
        let _one_at_a_time = self.evicting.lock().unwrap_or_else(|e| e.into_inner());
        self.evict_all();
        true
    }

    pub(super) fn new(cap: usize) -> Arc<Self> {
        Arc::new(IdleBudget {
            held: AtomicUsize::new(0),
            cap,
            pools: Mutex::new(Vec::new()),
            swept: Mutex::new(Instant::now()),
            closed: Default::default(),
            evicting: Mutex::new(()),
        })
    }

    pub(super) fn pool(self: &Arc<Self>, max_requests: u32) -> Arc<WarmPool> {
        let pool = Arc::new(WarmPool { max_requests, idle: Mutex::new(Vec::new()), budget: self.clone() });
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools.retain(|p| p.strong_count() > 0);
        pools.push(Arc::downgrade(&pool));
        pool
    }

    fn live_pools(&self) -> Vec<Arc<WarmPool>> {
        let pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools.iter().filter_map(Weak::upgrade).collect()
    }

    /// Drop every idle instance on the node (the pooling allocator is full); how many.
    pub(super) fn evict_all(&self) -> usize {
        self.live_pools().iter().map(|p| p.clear()).sum()
    }

    /// Drop every idle instance and keep none from now on (node shutdown).
    pub(super) fn close(&self) -> usize {
        self.closed.store(true, Ordering::Relaxed);
        self.evict_all()
    }

    /// Every [`IDLE_MAX`] / 2 at most: drop instances idle past [`IDLE_MAX`] in every pool.
    fn sweep(&self) {
        {
            let mut swept = self.swept.lock().unwrap_or_else(|e| e.into_inner());
            if swept.elapsed() < IDLE_MAX / 2 {
                return;
            }
            *swept = Instant::now();
        }
        for p in self.live_pools() {
            let stale = p.expire(&mut p.lock());
            drop(stale);
        }
    }
}

impl WarmPool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Warm>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently used idle instance (its pages are the likeliest to be warm).
    pub(super) fn take(&self) -> Option<Warm> {
        let mut idle = self.lock();
        let stale = self.expire(&mut idle);
        let w = idle.pop();
        drop(idle);
        drop(stale);
        let w = w?;
        self.budget.held.fetch_sub(1, Ordering::Relaxed);
        Some(w)
    }

    /// Keep an instance that served a request well for the next one, unless it has served
    /// its count or the node keeps enough idle instances already.
    pub(super) fn put(&self, mut w: Warm) {
        w.served += 1;
        if w.served >= self.max_requests {
            return;
        }
        let b = &self.budget;
        if b.closed.load(Ordering::Relaxed) {
            return;
        }
        if b.held.fetch_add(1, Ordering::Relaxed) >= b.cap {
            b.held.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        w.since = Instant::now();
        let mut idle = self.lock();
        idle.push(w);
        let stale = self.expire(&mut idle);
        drop(idle);
        drop(stale);
        b.sweep();
    }

    /// Take out the instances idle for longer than [`IDLE_MAX`] (the oldest are at the
    /// bottom), for the caller to drop after the lock.
    fn expire(&self, idle: &mut Vec<Warm>) -> Vec<Warm> {
        let stale = idle.iter().take_while(|w| w.since.elapsed() > IDLE_MAX).count();
        if stale == 0 {
            return Vec::new();
        }
        self.budget.held.fetch_sub(stale, Ordering::Relaxed);
        idle.drain(..stale).collect()
    }

    fn clear(&self) -> usize {
        let dropped: Vec<Warm> = std::mem::take(&mut *self.lock());
        self.budget.held.fetch_sub(dropped.len(), Ordering::Relaxed);
        dropped.len()
    }

    /// Idle instances of this version.
    pub fn idle(&self) -> usize {
        self.lock().len()
    }
}

impl Drop for WarmPool {
    fn drop(&mut self) {
        let n = self.idle.get_mut().unwrap_or_else(|e| e.into_inner()).len();
        self.budget.held.fetch_sub(n, Ordering::Relaxed);
    }
}
