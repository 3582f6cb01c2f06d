//! The node's wasmtime engines ([`Flavor`]s): their configuration (pooling allocator,
//! epochs, fuel, resident memory; Winch's for baseline code), their linkers and compile
//! cache directories, and the Store limits that go with each tier.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, StoreLimitsBuilder};

use super::bindings::Nanoservice;
use super::state::StoreState;
use super::{RuntimeConfig, Tier, fncache, tier};

/// Per component (the pooling allocator's limits, and baseline Stores' too).
const MEMORIES_PER_COMPONENT: usize = 16;
const TABLES_PER_COMPONENT: usize = 64;
/// Elements per table (wasmtime's pool default, stated so both tiers share it).
const TABLE_ELEMENTS: usize = 20_000;

/// A fused chain's timing shims (`shim.rs`) report each part's call here: it becomes a
/// `part SERVICE.FUNCTION` span of the run, as in a linked chain. Calls beyond the
/// 64 still open, or a `leave` without its `enter`, record nothing.
fn add_timing(linker: &mut Linker<StoreState>) -> anyhow::Result<()> {
    use wasmtime::component::WasmStr;
    let mut timing = linker.instance(super::shim::TIMING)?;
    timing.func_wrap("enter", |mut store: wasmtime::StoreContextMut<'_, StoreState>, (): ()| {
        let starts = &mut store.data_mut().part_starts;
        if starts.len() < 64 {
            starts.push((std::time::Instant::now(), crate::trace::now_unix_us()));
        }
        Ok(())
    })?;
    timing.func_wrap(
        "leave",
        |mut store: wasmtime::StoreContextMut<'_, StoreState>, (service, name): (WasmStr, WasmStr)| {
            let Some((at, unix_us)) = store.data_mut().part_starts.pop() else { return Ok(()) };
            let Some(run) = store.data().call.trace.run.clone() else { return Ok(()) };
            let micros = at.elapsed().as_micros() as u64;
            let service: std::sync::Arc<str> = service.to_str(&store)?.into();
            let name: std::sync::Arc<str> = format!("part {service}.{}", name.to_str(&store)?).into();
            run.part(&name, &service, unix_us, micros);
            Ok(())
        },
    )?;
    Ok(())
}

/// One wasmtime engine, its linker and its compile cache directory. The node keeps two:
/// `plain` for every component that does not use the component model's async ABI, and
/// `concurrent` (concurrency support on, WASI 0.3 linked) for those that do. Concurrency
/// support makes every request in its engine dearer (a hello request: about 13 µs in
/// `plain`, 22 µs with it, host/examples/instantiate.rs), so only async components pay.
pub(super) struct Flavor {
    pub(super) engine: Engine,
    pub(super) linker: Linker<StoreState>,
    pub(super) cache_dir: PathBuf,
}

impl Flavor {
    pub(super) fn new(cfg: &RuntimeConfig, async_abi: bool, baseline: bool) -> anyhow::Result<Self> {
        let mut config = engine_config(cfg, async_abi, baseline);
        if !baseline {
            // Compiled functions, shared by every component of this engine (see fncache.rs).
            let functions = fncache::FunctionCache::new(fncache::BUDGET);
            config.enable_incremental_compilation(Arc::new(functions)).map_err(anyhow::Error::from)?;
        }
        let engine = Engine::new(&config).map_err(anyhow::Error::from).context("creating the wasmtime engine")?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(anyhow::Error::from)?;
        Nanoservice::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s).map_err(anyhow::Error::from)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(anyhow::Error::from)?;
        add_timing(&mut linker)?;
        if async_abi {
            // WASI 0.3 next to 0.2: same WasiCtx (grants, deny-at-use) and outbound policy.
            wasmtime_wasi::p3::add_to_linker(&mut linker).map_err(anyhow::Error::from)?;
            wasmtime_wasi_http::p3::add_to_linker(&mut linker).map_err(anyhow::Error::from)?;
        }
        let mut h = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let cache_dir = cfg.compile_cache.join(format!("{:016x}", h.finish()));
        if !baseline {
            std::fs::create_dir_all(&cache_dir)
                .with_context(|| format!("creating the compile cache {}", cache_dir.display()))?;
        }
        Ok(Flavor { engine, linker, cache_dir })
    }

    pub(super) fn cache_path(&self, digest: &str) -> PathBuf {
        tier::cache_path(&self.cache_dir, digest)
    }
}

fn engine_config(cfg: &RuntimeConfig, async_abi: bool, baseline: bool) -> Config {
    let mut pool = PoolingAllocationConfig::default();
    let n = cfg.pool_instances.max(1);
    // A fused chain is one component with a memory and a few core instances per part.
    pool.total_component_instances(n)
        .total_core_instances(n.saturating_mul(8))
        .total_memories(n.saturating_mul(4))
        .total_tables(n.saturating_mul(8))
        .total_stacks(n)
        .max_memories_per_component(MEMORIES_PER_COMPONENT as u32)
        .max_tables_per_component(TABLES_PER_COMPONENT as u32)
        .table_elements(TABLE_ELEMENTS)
        .max_core_instances_per_component(128)
        .max_memory_size(cfg.pool_max_memory)
        // Rust guests start with about 1.1 MiB of memory; keeping that resident between
        // instances halves instantiation time.
        .table_keep_resident(64 << 10);
    // Resetting a used instance slot dominates per-request cost. With Linux's
    // PAGEMAP_SCAN (6.7+) wasmtime resets only the pages a guest dirtied, so a large
    // resident window is cheap and spares page faults: 13 µs per hello request here,
    // against 35 µs with the memset-or-madvise reset (see docs/BENCHMARKS.md).
    // Probe the ioctl itself: a recent kernel can still block it (seccomp, containers).
    if PoolingAllocationConfig::is_pagemap_scan_available() {
        pool.pagemap_scan(wasmtime::Enabled::Yes).linear_memory_keep_resident(16 << 20);
    } else {
        pool.linear_memory_keep_resident(1 << 20);
    }
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .consume_fuel(cfg.fuel)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .max_wasm_stack(1 << 20)
        .async_stack_size(2 << 20)
        // Guests do not get to use more than the pool slot; smaller reservations let
        // many instances coexist in the address space.
        .memory_reservation(cfg.pool_max_memory as u64)
        .memory_guard_size(32 << 20)
        // WASI 0.3 components (`wasi:http@0.3`) use the component-model async ABI.
        .wasm_component_model_async(async_abi)
        .concurrency_support(async_abi);
    // For profiling guests: `NANOGRID_PERF_MAP=1` makes wasmtime write /tmp/perf-PID.map,
    // which `perf report` reads to name guest functions (off by default: it writes a line
    // per compiled function).
    if std::env::var_os("NANOGRID_PERF_MAP").is_some_and(|v| v == "1") {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    if baseline {
        // Baseline code serves until the optimized arrives: instances come from mmap
        // (no second pool reserved beside the Cranelift engine's).
        config.strategy(wasmtime::Strategy::Winch).allocation_strategy(InstanceAllocationStrategy::OnDemand);
    } else if cfg.tiered {
        // Cranelift then runs only on the tier-up thread, in the background: on that one
        // thread (at a lower priority, tier.rs) rather than on every core, so requests
        // and other components' baseline compiles are not held up by it.
        config.parallel_compilation(false);
    }
    config
}

/// A Store's resource limits. Baseline code's instances come from mmap, not the pool,
/// so its Stores get the pool's per-component counts as limits (optimized code is held to
/// them by the pool itself): memories and tables, and elements per table.
pub(super) fn store_limits(tier: Tier, max_memory: usize) -> wasmtime::StoreLimits {
    let limits = StoreLimitsBuilder::new().memory_size(max_memory).instances(64);
    match tier {
        Tier::Optimized => limits.build(),
        Tier::Baseline => {
            limits.memories(MEMORIES_PER_COMPONENT).tables(TABLES_PER_COMPONENT).table_elements(TABLE_ELEMENTS).build()
        }
    }
}

/// Winch's engines, or `None` (tiering off, said once) where Winch cannot make them.
pub(super) fn baseline_flavors(cfg: &RuntimeConfig) -> Option<[Flavor; 2]> {
    match (Flavor::new(cfg, false, true), Flavor::new(cfg, true, true)) {
        (Ok(plain), Ok(concurrent)) => Some([plain, concurrent]),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %format!("{e:#}"), "no baseline compiler here: every component waits for Cranelift");
            None
        }
    }
}
