//! The runtime: two wasmtime [`Engine`]s per node (see `Flavor`: components using the
//! component model's async ABI, such as WASI 0.3 ones, get the one with concurrency
//! support), a compiled-component cache on disk, a pre-instantiated [`Prepared`] per
//! deployed service, and a fresh instance per request.
//!
//! - `bindings`: the `bindgen!` of the WIT contract.
//! - `imports`: host implementations of kv, invoke, log, config, context.
//! - `inspect`: upload validation (is it wasm, a component, a nanoservice, linkable?).
//! - `state`: the per-Store data and the [`Invoker`] seam to the service registry.
//! - `http`: standard `wasi:http/proxy` (WASI 0.2) components, streaming, outbound policy.
//! - `http3`: `wasi:http/service` (WASI 0.3, async) components on the same terms.
//! - `codec`: WIT values to bytes and back, for typed calls that cross nodes.
//!
//! The runtime knows nothing of HTTP servers or cluster membership: requests arrive as
//! WIT values and `invoke` goes out through the [`Invoker`] trait.

pub mod bindings;
mod chain;
pub mod codec;
mod engine;
mod fncache;
mod http;
mod http3;
mod http_body;
mod imports;
mod inspect;
pub mod outbound;
mod output;
mod reuse;
mod shim;
mod state;
mod tier;
pub mod typed;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store, Trap, UpdateDeadline};
use wasmtime_wasi::WasiCtxBuilder;

pub use bindings::{GuestError, Request, Response};
pub use chain::{Chain, Edge, Identity, Part as ChainPart};
pub use http::{Completion, OverTls, Teardown};
pub use imports::check_request;
pub use inspect::{ComponentInfo, HTTP_WORLD, HTTP3_WORLD, InspectError, PROVIDER_WORLD, is_http_world};
use outbound::OutboundPolicy;
pub use reuse::WarmPool;
pub use state::{BarrierResults, CallContext, CallSite, Capabilities, ImportLimits, Invoker};
pub use tier::{CompileMode, Compiled, HOLD_ENV as HOLD_TIER_UP_ENV, Tier, TierStats};
pub use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use bindings::NanoservicePre;
use engine::{Flavor, baseline_flavors, store_limits};
use output::OutputTail;
use state::StoreState;

/// How often the epoch ticks. Deadlines are checked (and long-running guests yield to other
/// tasks) at this granularity.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// What a load found or made: code to use, or baseline code whose optimized compile is
/// still to be queued on the tier-up thread ([`Loaded::queue`]).
enum Loaded<'a> {
    Ready(Compiled),
    Baseline(&'a tier::TierUp, tier::Unsent),
}

impl Loaded<'_> {
    fn component(&self) -> Component {
        match self {
            Loaded::Ready(c) => c.component(),
            Loaded::Baseline(_, u) => u.component(),
        }
    }

    /// The component, its optimized compile queued if it has baseline code.
    fn queue(self) -> Compiled {
        match self {
            Loaded::Ready(c) => c,
            Loaded::Baseline(tier_up, unsent) => tier_up.submit(unsent),
        }
    }
}

/// Tiered compilation's parts: Winch's engines (plain, concurrent) and the tier-up thread.
struct Tiering {
    baseline: [Flavor; 2],
    up: tier::TierUp,
}

/// How many of a trapped guest's last output lines its error carries.
const TRAP_OUTPUT_LINES: usize = 12;

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled components are cached (`<dir>/<engine hash>/<digest>.cwasm`).
    pub compile_cache: PathBuf,
    /// Instances the pooling allocator reserves room for, node-wide. A request chain holds
    /// one per service it passes through.
    pub pool_instances: u32,
    /// Largest linear memory any instance may grow to; per-service limits sit below it.
    pub pool_max_memory: usize,
    /// Meter fuel, so services may set a per-request fuel budget. Costs some speed.
    pub fuel: bool,
    /// Guests' outgoing HTTP: name pins, extra CAs (`None`: the defaults).
    pub outbound: Option<Arc<outbound::OutboundNet>>,
    /// Serve new components from Winch's baseline code while Cranelift compiles them
    /// (tier.rs); false: every component waits for Cranelift.
    pub tiered: bool,
    /// Share of sampled requests to a fused chain that run its timed composition (its
    /// parts' calls pass through timing shims, see shim.rs); 0: none is composed.
    pub fused_parts: f64,
}

/// Per-request execution limits, from the service spec.
#[derive(Debug, Clone, Copy)]
pub struct ExecLimits {
    pub max_memory: usize,
    pub timeout: Duration,
    /// Fuel budget; only honoured when the runtime meters fuel.
    pub fuel: Option<u64>,
}

/// Why a call into a guest did not produce a response.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    #[error("guest trapped: {0}")]
    Trap(String),
    #[error("guest ran past its {0:?} deadline")]
    Timeout(Duration),
    #[error("guest used up its fuel budget of {0}")]
    OutOfFuel(u64),
    #[error("{0}")]
    Guest(String),
    #[error("the node has no free instance slot: {0}")]
    PoolExhausted(String),
    #[error("{0}")]
    Internal(String),
}

/// A deployed component, linked and ready to instantiate.
/// Which world a component implements.
pub enum PreparedKind {
    /// `nanogrid:service/nanoservice`: a typed handler.
    Nanoservice(NanoservicePre<StoreState>),
    /// `wasi:http/proxy`: a standard HTTP handler with streaming bodies.
    Http(wasmtime_wasi_http::p2::bindings::ProxyPre<StoreState>),
    /// `wasi:http/service@0.3`: the WASI 0.3 (async) HTTP handler.
    Http3(wasmtime_wasi_http::p3::bindings::ServicePre<StoreState>),
}

/// A service's component, linked: what a request instantiates. Its code is swapped once,
/// from baseline to optimized, when the component was new (tier.rs).
pub struct Prepared {
    pub digest: String,
    code: arc_swap::ArcSwap<Code>,
    /// A fused chain's timed composition (its parts' calls pass through timing shims),
    /// run by the share of sampled requests `--trace-fused-parts` names.
    timed: std::sync::OnceLock<Arc<Prepared>>,
}

/// Linked code at one tier.
pub struct Code {
    pub kind: PreparedKind,
    /// The engine the component was compiled for: its Stores come from it.
    engine: Engine,
    pub tier: Tier,
}

impl Code {
    /// Mark a sampled run that starts on baseline code (its span says so).
    fn note(&self, call: &CallContext) {
        if self.tier == Tier::Baseline
            && let Some(run) = &call.trace.run
        {
            run.ran_baseline();
        }
    }
}

impl Prepared {
    fn new(digest: &str, code: Code) -> Self {
        Prepared { digest: digest.to_string(), code: arc_swap::ArcSwap::from_pointee(code), timed: Default::default() }
    }

    /// The code a request starts on (it keeps it to its end).
    pub fn code(&self) -> Arc<Code> {
        self.code.load_full()
    }

    pub fn tier(&self) -> Tier {
        self.code.load().tier
    }

    fn swap(&self, code: Code) {
        tracing::info!(digest = %self.digest, "optimized code swapped in");
        self.code.store(Arc::new(code));
    }
}

pub struct Runtime {
    plain: Flavor,
    concurrent: Flavor,
    /// With `--compile tiered` (and Winch usable here).
    tiering: Option<Tiering>,
    ticker_stop: Arc<AtomicBool>,
    fuel: bool,
    outbound: Arc<outbound::OutboundNet>,
    /// Instances kept between requests for services with `reuse` (see reuse.rs).
    idle: Arc<reuse::IdleBudget>,
    /// `RuntimeConfig::fused_parts`.
    fused_parts: f64,
}

impl Runtime {
    pub fn new(cfg: &RuntimeConfig) -> anyhow::Result<Self> {
        let plain = Flavor::new(cfg, false, false)?;
        let concurrent = Flavor::new(cfg, true, false)?;
        let tiering = match cfg.tiered.then(|| baseline_flavors(cfg)).flatten() {
            Some(baseline) => Some(Tiering {
                baseline,
                up: tier::TierUp::start([&plain, &concurrent].map(|f| tier::Target {
                    engine: f.engine.clone(),
                    linker: f.linker.clone(),
                    cache_dir: f.cache_dir.clone(),
                }))?,
            }),
            None => None,
        };
        let ticker_stop = Arc::new(AtomicBool::new(false));
        {
            let mut engines = vec![plain.engine.clone(), concurrent.engine.clone()];
            engines.extend(tiering.iter().flat_map(|t| &t.baseline).map(|f| f.engine.clone()));
            let stop = ticker_stop.clone();
            std::thread::Builder::new().name("epoch-ticker".into()).spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engines.iter().for_each(Engine::increment_epoch);
                }
            })?;
        }
        let outbound = match &cfg.outbound {
            Some(o) => o.clone(),
            None => Arc::new(outbound::OutboundNet::new(&[] as &[&str], Default::default())?),
        };
        // Idle reused instances may hold at most a quarter of the node's instance slots.
        let idle = reuse::IdleBudget::new((cfg.pool_instances / 4) as usize);
        Ok(Runtime {
            plain,
            concurrent,
            tiering,
            ticker_stop,
            fuel: cfg.fuel,
            outbound,
            idle,
            fused_parts: cfg.fused_parts,
        })
    }

    /// Compile counters of tiered compilation (`None` with it off).
    pub fn tier_stats(&self) -> Option<&TierStats> {
        self.tiering.as_ref().map(|t| &*t.up.stats)
    }

    /// Guests' outgoing HTTP settings (the node records its listeners there).
    pub fn outbound(&self) -> &Arc<outbound::OutboundNet> {
        &self.outbound
    }

    /// Whether per-request fuel budgets are enforced.
    pub fn meters_fuel(&self) -> bool {
        self.fuel
    }

    /// Validate bytes as a deployable nanoservice and compile them (through the cache).
    /// Blocking: call from a blocking thread.
    pub fn inspect(&self, digest: &str, bytes: &[u8]) -> Result<(Compiled, ComponentInfo), InspectError> {
        inspect::check_header(bytes)?;
        let loaded =
            self.load_inner(digest, || Ok(bytes.to_vec())).map_err(|e| InspectError::Invalid(format!("{e:#}")))?;
        let component = loaded.component();
        let flavor = self.flavor_of(&component);
        let mut info = inspect::describe(&flavor.engine, &flavor.linker, &component)?;
        info.min_memory_bytes = nanogrid_wire::upload::min_memory_bytes(bytes);
        // Only a component that passed inspection gets its optimized compile queued.
        let compiled = loaded.queue();
        Ok((compiled, info))
    }

    /// Compile a component, or load it from the on-disk cache. Blocking.
    pub fn load(&self, digest: &str, bytes: &[u8]) -> anyhow::Result<Compiled> {
        self.load_with(digest, || Ok(bytes.to_vec()))
    }

    /// [`Runtime::load`] for bytes that cost something to produce (a composition): they
    /// are only made when the cache has no entry for `key`. A component nothing was
    /// compiled for gets baseline code first when tiering is on (tier.rs). Blocking.
    pub fn load_with(&self, digest: &str, bytes: impl FnOnce() -> anyhow::Result<Vec<u8>>) -> anyhow::Result<Compiled> {
        Ok(self.load_inner(digest, bytes)?.queue())
    }

    fn load_inner(&self, digest: &str, bytes: impl FnOnce() -> anyhow::Result<Vec<u8>>) -> anyhow::Result<Loaded<'_>> {
        if let Some(c) = self.tiering.as_ref().and_then(|t| t.up.pending(digest)) {
            return Ok(Loaded::Ready(c));
        }
        for flavor in [&self.plain, &self.concurrent] {
            let path = flavor.cache_path(digest);
            if !path.exists() {
                continue;
            }
            // SAFETY: the cache directory belongs to this node and holds only files
            // `tier::write_cache` wrote with `Component::serialize`, keyed by an
            // engine-compatibility hash; wasmtime also checks the header before using it.
            match unsafe { Component::deserialize_file(&flavor.engine, &path) } {
                Ok(c) => return Ok(Loaded::Ready(Compiled::optimized(digest, c))),
                Err(e) => tracing::warn!(%digest, error = %e, "ignoring unusable compile cache entry"),
            }
        }
        let bytes = bytes()?;
        let concurrent = nanogrid_wire::upload::uses_async_abi(&bytes);
        let flavor = if concurrent { &self.concurrent } else { &self.plain };
        if let Some(Tiering { baseline, up }) = &self.tiering {
            let started = Instant::now();
            match Component::new(&baseline[usize::from(concurrent)].engine, &bytes) {
                Ok(c) => {
                    let ms = started.elapsed().as_millis() as u64;
                    up.stats.baseline_compiles.fetch_add(1, Ordering::Relaxed);
                    up.stats.baseline_ms.fetch_add(ms, Ordering::Relaxed);
                    tracing::info!(%digest, ms, tier = "baseline", "compiled baseline code");
                    return Ok(Loaded::Baseline(up, up.baseline(digest, c, bytes, usize::from(concurrent))));
                }
                // A proposal Winch lacks, say; an invalid component fails below as well.
                Err(e) => tracing::debug!(%digest, error = %e, "no baseline code; compiling with Cranelift now"),
            }
        }
        let started = Instant::now();
        let component = Component::new(&flavor.engine, bytes).map_err(anyhow::Error::from)?;
        tracing::info!(%digest, ms = started.elapsed().as_millis() as u64, "compiled component");
        if let Err(e) = tier::write_cache(&flavor.cache_path(digest), &component) {
            tracing::warn!(%digest, error = %e, "could not write compile cache entry");
        }
        Ok(Loaded::Ready(Compiled::optimized(digest, component)))
    }

    /// The engine (and linker) a compiled component belongs to.
    fn flavor_of(&self, component: &Component) -> &Flavor {
        let mut all = [&self.plain, &self.concurrent].into_iter().chain(self.tiering.iter().flat_map(|t| &t.baseline));
        all.find(|f| Engine::same(component.engine(), &f.engine)).unwrap_or(&self.plain)
    }

    /// Link a compiled component once; requests then only instantiate.
    pub fn prepare(&self, compiled: &Compiled) -> anyhow::Result<Arc<Prepared>> {
        compiled.prepare(|c, tier| link(&self.flavor_of(c).linker, c, tier))
    }

    fn new_store(
        &self,
        code: &Code,
        call: CallContext,
        limits: ExecLimits,
        tail: &OutputTail,
    ) -> Result<Store<StoreState>, CallError> {
        let caps = call.caps.clone();
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(tail.clone()).stderr(tail.clone()).envs(&caps.env).allow_udp(false);
        if caps.sockets.is_empty() {
            wasi.allow_tcp(false).allow_ip_name_lookup(false);
        } else {
            let allowed = caps.sockets.clone();
            wasi.allow_tcp(true).socket_addr_check(move |addr, use_| {
                use wasmtime_wasi::sockets::SocketAddrUse;
                // A grant allows connecting to the listed addresses. The implicit bind that
                // precedes a connect (wildcard address, port 0) is allowed for that; any
                // other bind, and listening, never are.
                let ok = match use_ {
                    SocketAddrUse::TcpConnect => allowed.contains(&addr),
                    SocketAddrUse::TcpBind => addr.ip().is_unspecified() && addr.port() == 0,
                    _ => false,
                };
                Box::pin(async move { ok })
            });
        }
        for (host, guest) in &caps.files {
            wasi.preopened_dir(host, guest, wasmtime_wasi::FsPerms::ReadOnly)
                .map_err(|e| CallError::Internal(format!("granted directory {}: {e}", host.display())))?;
        }
        let wasi = wasi.build();
        let state = StoreState {
            wasi,
            http: wasmtime_wasi_http::WasiHttpCtx::new(),
            outbound: OutboundPolicy {
                allowed: caps.outbound_http.clone(),
                net: self.outbound.clone(),
                trace: call.trace.clone(),
            },
            table: Default::default(),
            limits: store_limits(code.tier, limits.max_memory),
            call,
            linked: Vec::new(),
            part_starts: Vec::new(),
            deadline: Instant::now() + limits.timeout,
        };
        let mut store = Store::new(&code.engine, state);
        store.limiter(|s| &mut s.limits);
        watch_deadline(&mut store);
        store.set_epoch_deadline(1);
        if self.fuel {
            store.set_fuel(limits.fuel.unwrap_or(u64::MAX)).map_err(|e| CallError::Internal(e.to_string()))?;
        }
        Ok(store)
    }

    /// Create a Store and an instance and drop them: what each request pays before the
    /// guest runs. For the instantiation benchmark.
    pub async fn instantiate_only(
        &self,
        prepared: &Prepared,
        call: CallContext,
        limits: ExecLimits,
    ) -> Result<(), CallError> {
        let tail = OutputTail::new(256);
        let code = prepared.code();
        let mut store = self.new_store(&code, call, limits, &tail)?;
        let result = match &code.kind {
            PreparedKind::Nanoservice(pre) => pre.instantiate_async(&mut store).await.map(drop),
            PreparedKind::Http(pre) => pre.instantiate_async(&mut store).await.map(drop),
            PreparedKind::Http3(pre) => pre.instantiate_async(&mut store).await.map(drop),
        };
        result.map_err(|e| classify(e, limits, &tail))
    }

    /// Run one request in a fresh instance. A wasi:http component gets it as an HTTP
    /// request and its streamed answer is collected, so `invoke` works on both kinds.
    /// `teardown` says when a nanoservice's instance is dropped (a wasi:http one's in
    /// place here: the answer is collected first).
    pub async fn handle(
        self: &Arc<Self>,
        prepared: &Arc<Prepared>,
        call: CallContext,
        req: Request,
        limits: ExecLimits,
        teardown: Teardown,
    ) -> Result<Response, CallError> {
        let prepared = self.pick(prepared, &call);
        let code = prepared.code();
        let pre = match &code.kind {
            PreparedKind::Nanoservice(pre) => pre,
            PreparedKind::Http(_) | PreparedKind::Http3(_) => {
                return self.handle_http_collected(prepared, call, req, limits, None).await;
            }
        };
        code.note(&call);
        let tail = OutputTail::new(2048);
        let mut store = self.new_store(&code, call, limits, &tail)?;
        let traced = store.data().call.trace.run.clone();
        if prepared.is_timed()
            && let Some(run) = &traced
        {
            run.timed_parts();
        }
        let run = async {
            let instance = self.idle.instantiate(pre, &mut store).await?;
            instance.nanogrid_service_handler().call_handle(&mut store, &req).await
        };
        // The epoch deadline stops guest code; this outer timeout also bounds time spent
        // waiting in host calls (an `invoke` of a slow service, say).
        let result = match tokio::time::timeout(limits.timeout + EPOCH_TICK * 4, run).await {
            Ok(r) => r.map_err(|e| classify(e, limits, &tail)),
            Err(_) => Err(CallError::Timeout(limits.timeout)),
        };
        if teardown == Teardown::AfterAnswer {
            http::drop_later(store);
        }
        result
    }
}

/// Interrupt the guest `timeout` from now. Each epoch tick before that yields to other
/// tasks, so a busy guest cannot starve the async workers.
fn arm_deadline(store: &mut Store<StoreState>, timeout: Duration) {
    store.data_mut().deadline = Instant::now() + timeout;
    store.set_epoch_deadline(1);
}

/// A new Store's epoch callback: at every epoch tick while its guest runs, interrupt it
/// past its request's deadline (`StoreState::deadline`, which `arm_deadline` sets per
/// request), else yield to the executor. Set once per Store: a reused instance's next
/// request only moves the deadline (no closure boxed per request).
fn watch_deadline(store: &mut Store<StoreState>) {
    store.epoch_deadline_callback(|s| {
        if Instant::now() >= s.data().deadline { Ok(UpdateDeadline::Interrupt) } else { Ok(UpdateDeadline::Yield(1)) }
    });
}

impl Runtime {
    /// Drop every idle reused instance on the node (at shutdown: an idle instance's
    /// context holds the registry, which holds the instance's pool); how many.
    pub fn drop_idle(&self) -> usize {
        self.idle.close()
    }

    /// A pool of idle instances for a service that reuses each for `max_requests`.
    pub fn warm_pool(&self, max_requests: u32) -> Arc<WarmPool> {
        self.idle.pool(max_requests)
    }
}

fn classify(err: wasmtime::Error, limits: ExecLimits, tail: &OutputTail) -> CallError {
    // A wasi:http guest that returned without answering or answered an error code
    // (`http::relay_head`, `http3.rs`) says so itself.
    if let Some(e) = err.downcast_ref::<CallError>() {
        return e.clone();
    }
    if let Some(trap) = err.downcast_ref::<Trap>() {
        if *trap == Trap::Interrupt {
            return CallError::Timeout(limits.timeout);
        }
        if *trap == Trap::OutOfFuel {
            return CallError::OutOfFuel(limits.fuel.unwrap_or(u64::MAX));
        }
        let mut msg = trap.to_string();
        let out = tail.text();
        if !out.is_empty() {
            // The guest's own last words explain the trap: a Rust panic message (two lines)
            // or a Python traceback (its frames, then the exception), so keep a dozen.
            let last = out.lines().rev().take(TRAP_OUTPUT_LINES).collect::<Vec<_>>();
            msg.push_str(" (guest output: ");
            msg.push_str(&last.into_iter().rev().collect::<Vec<_>>().join(" | "));
            msg.push(')');
        }
        return CallError::Trap(msg);
    }
    if reuse::is_pool_full(&err) {
        return CallError::PoolExhausted(err.to_string());
    }
    CallError::Internal(format!("{:#}", anyhow::Error::from(err)))
}

/// Link `component` with `linker` (its engine's, perhaps with a chain's edges added).
fn link(linker: &Linker<StoreState>, component: &Component, tier: Tier) -> anyhow::Result<Code> {
    let pre = linker.instantiate_pre(component).map_err(anyhow::Error::from)?;
    let ty = component.component_type();
    let engine = component.engine();
    let nanoservice = ty.exports(engine).any(|(n, _)| n == inspect::HANDLER_EXPORT);
    let http3 = ty.exports(engine).any(|(n, _)| n.starts_with(inspect::HTTP3_EXPORT_PREFIX));
    let kind = if nanoservice {
        PreparedKind::Nanoservice(NanoservicePre::new(pre).map_err(anyhow::Error::from)?)
    } else if http3 {
        PreparedKind::Http3(wasmtime_wasi_http::p3::bindings::ServicePre::new(pre).map_err(anyhow::Error::from)?)
    } else {
        PreparedKind::Http(wasmtime_wasi_http::p2::bindings::ProxyPre::new(pre).map_err(anyhow::Error::from)?)
    };
    Ok(Code { kind, engine: engine.clone(), tier })
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}
