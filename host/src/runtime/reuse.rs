//! Opt-in instance reuse (a spec's `"reuse": {"requests": n}`): an instance of a nanoservice
//! or a wasi:http component (0.2 or 0.3) serves up to n requests one after another, then is
//! dropped.
//! Fresh-per-request stays the default; docs/SECURITY.md states what reuse gives up.
//!
//! What never carries over: everything the host keeps per request lives in the Store's
//! [`CallContext`] (request id, trace and its counters, caller depth) and is replaced
//! before each request, with the deadline, the fuel and the output tail. What does carry
//! over is the guest's own memory (statics, heap), and any resource it chose to keep.
//! An instance that trapped, ran out of time or failed is never reused, nor a wasi:http
//! instance that kept any HTTP resource of its request past `handle` (its response body
//! would stay open while the instance waits idle; see [`keeps_http_resources`]), nor a
//! 0.3 one with a task still running shortly after its response ended (`http3.rs`).
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

use wasmtime::{Engine, Store};

use wasmtime::component::ResourceTable;
use wasmtime_wasi_http::p2::bindings::Proxy;
use wasmtime_wasi_http::p2::body::{HostFutureTrailers, HostIncomingBody, HostOutgoingBody};
use wasmtime_wasi_http::p2::types::{
    HostFutureIncomingResponse, HostIncomingRequest, HostIncomingResponse, HostOutgoingRequest, HostOutgoingResponse,
    HostResponseOutparam,
};

use super::bindings::{Nanoservice, Request, Response};
use super::output::OutputTail;
use super::state::{CallContext, StoreState};
use super::{CallError, EPOCH_TICK, ExecLimits, Prepared, PreparedKind, Runtime, Teardown, classify};

/// An instance idle this long is dropped at the next visit to its pool.
pub const IDLE_MAX: Duration = Duration::from_secs(30);

/// What a kept instance is an instance of.
pub(super) enum Instance {
    Nano(Nanoservice),
    /// A wasi:http 0.2 component.
    Http(Proxy),
    /// A wasi:http 0.3 component (`http3.rs`).
    Http3(wasmtime_wasi_http::p3::bindings::Service),
}

/// Whether a wasi:http instance still holds an HTTP resource after its request: its
/// request or its body, its response (whose body then never ends while the instance is
/// kept), trailers, or an outgoing request (0.2); a request or a response (0.3). Such an
/// instance is dropped, not kept.
pub(super) fn keeps_http_resources(table: &mut ResourceTable) -> bool {
    table.iter_mut().any(|e| {
        e.is::<wasmtime_wasi_http::p3::Request>()
            || e.is::<wasmtime_wasi_http::p3::Response>()
            || e.is::<HostIncomingRequest>()
            || e.is::<HostIncomingBody>()
            || e.is::<HostFutureTrailers>()
            || e.is::<HostResponseOutparam>()
            || e.is::<HostOutgoingResponse>()
            || e.is::<HostOutgoingBody>()
            || e.is::<HostOutgoingRequest>()
            || e.is::<HostFutureIncomingResponse>()
            || e.is::<HostIncomingResponse>()
    })
}

/// One instance between requests.
pub(super) struct Warm {
    pub(super) store: Store<StoreState>,
    pub(super) instance: Instance,
    pub(super) tail: OutputTail,
    /// Requests it has served.
    pub(super) served: u32,
    since: Instant,
}

impl Warm {
    pub(super) fn new(store: Store<StoreState>, instance: Instance, tail: OutputTail) -> Self {
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
    /// service gets no more requests here is not visited otherwise), in milliseconds
    /// since `born`.
    swept_ms: std::sync::atomic::AtomicU64,
    born: Instant,
    /// Set at shutdown: nothing is kept idle any more (an idle instance holds its Store,
    /// its slot in the pooling allocator and its context's grid until dropped).
    closed: std::sync::atomic::AtomicBool,
    /// Held while idle instances are dropped for room, so a request that finds nothing
    /// left to drop retries only once another's eviction has freed its slots.
    evicting: Mutex<()>,
}

/// A pre-instantiated component of one of the kinds a node runs: a nanoservice, a
/// wasi:http 0.2 proxy or a 0.3 service (each `bindgen!` type has its own
/// `instantiate_async`; this is the one [`IdleBudget::instantiate`] calls).
pub(super) trait Pre: Sync {
    type Instance: Send;
    fn instantiate_in(
        &self,
        store: &mut Store<StoreState>,
    ) -> impl Future<Output = wasmtime::Result<Self::Instance>> + Send;
}

impl Pre for super::bindings::NanoservicePre<StoreState> {
    type Instance = Nanoservice;
    fn instantiate_in(
        &self,
        store: &mut Store<StoreState>,
    ) -> impl Future<Output = wasmtime::Result<Self::Instance>> + Send {
        self.instantiate_async(store)
    }
}

impl Pre for wasmtime_wasi_http::p2::bindings::ProxyPre<StoreState> {
    type Instance = Proxy;
    fn instantiate_in(
        &self,
        store: &mut Store<StoreState>,
    ) -> impl Future<Output = wasmtime::Result<Self::Instance>> + Send {
        self.instantiate_async(store)
    }
}

impl Pre for wasmtime_wasi_http::p3::bindings::ServicePre<StoreState> {
    type Instance = wasmtime_wasi_http::p3::bindings::Service;
    fn instantiate_in(
        &self,
        store: &mut Store<StoreState>,
    ) -> impl Future<Output = wasmtime::Result<Self::Instance>> + Send {
        self.instantiate_async(store)
    }
}

/// Whether an instantiation failed because the pooling allocator has no free slot.
pub(super) fn is_pool_full(e: &wasmtime::Error) -> bool {
    e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>().is_some()
}

impl IdleBudget {
    /// A new instance of `pre` in `store`; if the pooling allocator was full, once more
    /// after dropping the idle instances (`made_room`). Timed in the store's trace run.
    pub(super) async fn instantiate<P: Pre>(
        &self,
        pre: &P,
        store: &mut Store<StoreState>,
    ) -> wasmtime::Result<P::Instance> {
        let t = Instant::now();
        let instance = match pre.instantiate_in(store).await {
            Err(e) if self.made_room(&e) => pre.instantiate_in(store).await?,
            other => other?,
        };
        if let Some(r) = &store.data().call.trace.run {
            r.instantiated(t.elapsed().as_micros() as u64);
        }
        Ok(instance)
    }

    /// After an instantiation failed: whether to try once more, having dropped every idle
    /// instance. Yes whenever the pool was full: requests that find it full at the same
    /// moment race to evict, and the one that finds nothing left to drop retries too, once
    /// the other's eviction has returned the slots (the lock).
    fn made_room(&self, e: &wasmtime::Error) -> bool {
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
            swept_ms: Default::default(),
            born: Instant::now(),
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
    /// Lock-free until it is time: every request's `put` asks.
    fn sweep(&self, now: Instant) {
        let at = now.saturating_duration_since(self.born).as_millis() as u64;
        let last = self.swept_ms.load(Ordering::Relaxed);
        if at < last + (IDLE_MAX / 2).as_millis() as u64 {
            return;
        }
        // One sweeper per turn: another `put` that saw the same turn leaves it.
        if self.swept_ms.compare_exchange(last, at, Ordering::Relaxed, Ordering::Relaxed).is_err() {
            return;
        }
        for p in self.live_pools() {
            let stale = p.expire(&mut p.lock(), now);
            drop(stale);
        }
    }
}

impl WarmPool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Warm>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently used idle instance (its pages are the likeliest to be warm), if
    /// it is one `usable` accepts (else it is dropped). Instances idle too long are left to
    /// the next `put`, which every request that takes one makes: no clock read here.
    pub(super) fn take(&self, usable: impl FnOnce(&Warm) -> bool) -> Option<Warm> {
        let w = self.lock().pop()?;
        self.budget.held.fetch_sub(1, Ordering::Relaxed);
        usable(&w).then_some(w)
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
        // One clock read for the instance's idle start, the expiry and the sweep's turn.
        let now = Instant::now();
        w.since = now;
        let mut idle = self.lock();
        idle.push(w);
        let stale = self.expire(&mut idle, now);
        drop(idle);
        drop(stale);
        b.sweep(now);
    }

    /// Take out the instances idle for longer than [`IDLE_MAX`] (the oldest are at the
    /// bottom), for the caller to drop after the lock.
    fn expire(&self, idle: &mut Vec<Warm>, now: Instant) -> Vec<Warm> {
        let stale = idle.iter().take_while(|w| now.saturating_duration_since(w.since) > IDLE_MAX).count();
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

impl Runtime {
    /// [`Runtime::handle`] for a service with `reuse`: an idle instance of `pool` serves
    /// the request if there is one (a fresh one otherwise), and goes back to the pool if
    /// the request ended without a trap, a timeout or a host error.
    pub async fn handle_reused(
        self: &Arc<Self>,
        pool: &Arc<WarmPool>,
        prepared: &Arc<Prepared>,
        call: CallContext,
        req: Request,
        limits: ExecLimits,
    ) -> Result<Response, CallError> {
        let code = prepared.code();
        let picked = self.pick(prepared, &call);
        if !Arc::ptr_eq(picked, prepared) {
            // Its timed composition is another component: a fresh instance of it (chosen
            // once: `handle` keeps what it is given, a timed one has no timed variant).
            // Boxed, like the other way out below: rare, and kept out of this future's size.
            return Box::pin(self.handle(picked, call, req, limits, Teardown::InPlace)).await;
        }
        let pre = match &code.kind {
            PreparedKind::Nanoservice(pre) => pre,
            PreparedKind::Http(_) | PreparedKind::Http3(_) => {
                return Box::pin(self.handle_http_collected(prepared, call, req, limits, Some(pool))).await;
            }
        };
        code.note(&call);
        // An instance of code since swapped for optimized code is not taken again.
        let usable = |w: &Warm| Engine::same(w.store.engine(), &code.engine) && matches!(w.instance, Instance::Nano(_));
        let mut warm = match pool.take(usable) {
            Some(mut w) => {
                w.rebind(call, limits, self.fuel)?;
                w
            }
            None => {
                let tail = OutputTail::new(2048);
                let mut store = self.new_store(&code, call, limits, &tail)?;
                let instance = self.idle.instantiate(pre, &mut store).await.map_err(|e| classify(e, limits, &tail))?;
                Warm::new(store, Instance::Nano(instance), tail)
            }
        };
        // The instance is moved into the call: a call cut off by the timeout drops it.
        let run = async move {
            let result = match &warm.instance {
                Instance::Nano(i) => i.nanogrid_service_handler().call_handle(&mut warm.store, &req).await,
                Instance::Http(_) | Instance::Http3(_) => {
                    Err(wasmtime::format_err!("a wasi:http instance in a nanoservice's pool"))
                }
            };
            (warm, result)
        };
        match tokio::time::timeout(limits.timeout + EPOCH_TICK * 4, run).await {
            Err(_) => Err(CallError::Timeout(limits.timeout)),
            Ok((warm, Ok(resp))) => {
                pool.put(warm);
                Ok(resp)
            }
            Ok((warm, Err(e))) => Err(classify(e, limits, &warm.tail)),
        }
    }
}
