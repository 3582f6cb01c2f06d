//! Tiered compilation. A component nothing was compiled for is compiled first by Winch,
//! wasmtime's baseline compiler (one pass, no optimisation: about 3x faster than
//! Cranelift on `hello`, 3-5x on the 12-19 MB Python and JavaScript components), so the
//! upload returns and the service serves at once. Cranelift then compiles it on the
//! tier-up thread; the optimized code goes to the compile cache, and every service
//! prepared from the baseline code is linked again and switches between two requests
//! (a request runs to its end on the code it started with).
//!
//! The baseline code is never cached: a restart before the tier-up compiles again. A
//! component Winch cannot compile (a proposal it lacks, such as GC or tail calls) is
//! compiled by Cranelift at once, as without tiering. A linked chain runs its parts in
//! one Store, so it waits for every part's optimized code (see `Compiled::wait_optimized`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak, mpsc};
use std::time::Instant;

use serde::Serialize;
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use super::state::StoreState;
use super::{Code, Prepared};

/// Which compiler's code a component runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tier {
    /// Winch's: compiled quickly, runs slower; Cranelift's is on its way.
    Baseline,
    /// Cranelift's.
    Optimized,
}

/// How a node compiles components nothing was compiled for (`--compile`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompileMode {
    /// Baseline code first, optimized code swapped in when Cranelift is done.
    #[default]
    Tiered,
    /// Wait for Cranelift: the first request runs optimized code.
    Optimized,
}

impl std::str::FromStr for CompileMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tiered" => Ok(CompileMode::Tiered),
            "optimized" => Ok(CompileMode::Optimized),
            _ => Err(format!("unknown compile mode {s:?}: use tiered or optimized")),
        }
    }
}

/// A compiled component, at its current tier. Clones share it.
#[derive(Clone)]
pub struct Compiled(Arc<Inner>);

struct Inner {
    digest: String,
    state: Mutex<State>,
    settled: Condvar,
}

struct State {
    component: Component,
    tier: Tier,
    /// The optimized compile is still to come.
    pending: bool,
    /// Why the optimized compile failed (the baseline code then stays).
    failure: Option<String>,
    /// Services prepared from the baseline code, linked again when the optimized arrives.
    watchers: Vec<Weak<Prepared>>,
}

impl Compiled {
    /// Optimized code (compiled now, or from the cache).
    pub fn optimized(digest: &str, component: Component) -> Self {
        Self::with(digest, component, Tier::Optimized)
    }

    fn baseline(digest: &str, component: Component) -> Self {
        Self::with(digest, component, Tier::Baseline)
    }

    fn with(digest: &str, component: Component, tier: Tier) -> Self {
        let state = State { component, tier, pending: tier == Tier::Baseline, failure: None, watchers: Vec::new() };
        Compiled(Arc::new(Inner { digest: digest.to_string(), state: Mutex::new(state), settled: Condvar::new() }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The code as it is now.
    pub fn component(&self) -> Component {
        self.lock().component.clone()
    }

    /// The optimized code, waiting while Cranelift compiles it. Blocking.
    pub fn wait_optimized(&self) -> anyhow::Result<Component> {
        let mut state = self.lock();
        while state.pending {
            state = self.0.settled.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        match &state.failure {
            Some(why) => anyhow::bail!("the optimized compile of {} failed: {why}", self.0.digest),
            None => Ok(state.component.clone()),
        }
    }

    /// Link the current code with `link`; a service prepared from baseline code is
    /// linked again (by the tier-up thread) when the optimized code arrives.
    pub(super) fn prepare(
        &self,
        link: impl FnOnce(&Component, Tier) -> anyhow::Result<Code>,
    ) -> anyhow::Result<Arc<Prepared>> {
        let mut state = self.lock();
        let prepared = Arc::new(Prepared::new(&self.0.digest, link(&state.component, state.tier)?));
        if state.pending {
            state.watchers.retain(|w| w.strong_count() > 0);
            state.watchers.push(Arc::downgrade(&prepared));
        }
        Ok(prepared)
    }

    /// The optimized compile ended: swap its code in everywhere (or keep the baseline).
    fn settle(&self, result: anyhow::Result<Component>, linker: &Linker<StoreState>) {
        let (optimized, watchers) = {
            let mut state = self.lock();
            state.pending = false;
            let optimized = match result {
                Ok(c) => {
                    state.component = c.clone();
                    state.tier = Tier::Optimized;
                    Some(c)
                }
                Err(e) => {
                    state.failure = Some(format!("{e:#}"));
                    None
                }
            };
            (optimized, std::mem::take(&mut state.watchers))
        };
        self.0.settled.notify_all();
        let Some(component) = optimized else { return };
        for prepared in watchers.iter().filter_map(Weak::upgrade) {
            match super::link(linker, &component, Tier::Optimized) {
                Ok(code) => prepared.swap(code),
                Err(e) => tracing::warn!(digest = %prepared.digest, error = %format!("{e:#}"),
                    "linking the optimized code failed; the service keeps its baseline code"),
            }
        }
    }
}

/// Where optimized code is compiled for: one of the runtime's two Cranelift engines.
pub(super) struct Target {
    pub engine: Engine,
    pub linker: Linker<StoreState>,
    pub cache_dir: PathBuf,
}

struct Job {
    compiled: Compiled,
    bytes: Vec<u8>,
    /// Index into the targets: 0 plain, 1 concurrent.
    target: usize,
}

/// Counters for /metrics.
#[derive(Default)]
pub struct TierStats {
    pub baseline_compiles: AtomicU64,
    pub optimized_compiles: AtomicU64,
    pub failed: AtomicU64,
    pub baseline_ms: AtomicU64,
    pub optimized_ms: AtomicU64,
}

/// The tier-up thread and the components waiting for it. Dropping it stops the thread
/// before its next compile (the ones still queued settle with an error: their services
/// keep baseline code, which a node shutting down no longer serves anyway).
pub(super) struct TierUp {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    shared: Arc<Shared>,
    pub stats: Arc<TierStats>,
}

/// What the tier-up thread and the submitting threads share.
struct Shared {
    /// Components with baseline code whose optimized compile is queued or running, by
    /// digest: a second load (the deploy after the upload) shares them.
    pending: Mutex<HashMap<String, Compiled>>,
    /// Jobs sent and not yet taken by the thread.
    queued: AtomicUsize,
    stop: AtomicBool,
    targets: [Target; 2],
    stats: Arc<TierStats>,
}

/// A baseline compile whose optimized one is not queued yet ([`TierUp::submit`]):
/// uploads queue it only once the component passed inspection.
pub(super) struct Unsent(Job);

impl Unsent {
    pub(super) fn component(&self) -> Component {
        self.0.compiled.component()
    }
}

/// Environment variable naming a FIFO: the tier-up thread opens it for reading before its
/// first compile, so it waits until someone writes to it (and closes it). For tests that
/// must see baseline code serve; unset in production.
pub const HOLD_ENV: &str = "NANOGRID_HOLD_TIER_UP";

/// Optimized compiles queued at most; beyond, the submitting thread compiles itself
/// (backpressure on uploads instead of a queue, and its memory, without bound).
const MAX_QUEUED: usize = 8;

impl TierUp {
    pub(super) fn start(targets: [Target; 2]) -> anyhow::Result<TierUp> {
        let (tx, rx) = mpsc::channel::<Job>();
        let stats = Arc::new(TierStats::default());
        let shared = Arc::new(Shared {
            pending: Mutex::default(),
            queued: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            targets,
            stats: stats.clone(),
        });
        let mut hold = std::env::var_os(HOLD_ENV).map(PathBuf::from);
        let s = shared.clone();
        std::thread::Builder::new().name("tier-up".into()).spawn(move || {
            lower_priority();
            while let Ok(job) = rx.recv() {
                s.queued.fetch_sub(1, Ordering::Relaxed);
                if let Some(fifo) = hold.take() {
                    // Blocks until the test writes; what it reads does not matter.
                    let _ = std::fs::read(&fifo);
                }
                if s.stop.load(Ordering::Relaxed) {
                    s.finish(job, Err(anyhow::anyhow!("the node is shutting down")));
                } else {
                    s.run(job);
                }
            }
        })?;
        Ok(TierUp { jobs: Mutex::new(Some(tx)), shared, stats })
    }

    /// A component whose optimized compile is still to come.
    pub(super) fn pending(&self, digest: &str) -> Option<Compiled> {
        self.shared.lock_pending().get(digest).cloned()
    }

    /// Serve `component` (Winch's code for `bytes`) now; Cranelift's once submitted.
    pub(super) fn baseline(&self, digest: &str, component: Component, bytes: Vec<u8>, target: usize) -> Unsent {
        Unsent(Job { compiled: Compiled::baseline(digest, component), bytes, target })
    }

    /// Queue the optimized compile (or, with the queue full or the thread gone, run it
    /// on the calling thread: a blocking one). Returns the component.
    pub(super) fn submit(&self, Unsent(job): Unsent) -> Compiled {
        let compiled = job.compiled.clone();
        let s = &self.shared;
        if s.queued.load(Ordering::Relaxed) >= MAX_QUEUED {
            s.run(job);
            return compiled;
        }
        s.lock_pending().insert(compiled.0.digest.clone(), compiled.clone());
        s.queued.fetch_add(1, Ordering::Relaxed);
        let sent = match self.jobs.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            Some(tx) => tx.send(job).map_err(|e| e.0),
            None => Err(job),
        };
        if let Err(job) = sent {
            s.queued.fetch_sub(1, Ordering::Relaxed);
            s.run(job);
        }
        compiled
    }
}

impl Shared {
    fn lock_pending(&self) -> MutexGuard<'_, HashMap<String, Compiled>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Compile the optimized code and swap it in. A panic inside the compiler settles the
    /// job with an error (its services keep their baseline code; nothing waits forever).
    fn run(&self, job: Job) {
        let target = &self.targets[job.target];
        let digest = &job.compiled.0.digest;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            optimize(digest, &job.bytes, target, &self.stats)
        }))
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the optimizing compiler panicked")));
        self.finish(job, result);
    }

    fn finish(&self, job: Job, result: anyhow::Result<Component>) {
        job.compiled.settle(result, &self.targets[job.target].linker);
        let mut pending = self.lock_pending();
        // Only this job's entry: a concurrent load of the same digest may have put its own.
        if pending.get(&job.compiled.0.digest).is_some_and(|c| Arc::ptr_eq(&c.0, &job.compiled.0)) {
            pending.remove(&job.compiled.0.digest);
        }
    }
}

impl Drop for TierUp {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        // The thread settles what is queued, then ends when its channel is empty and closed.
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// Cranelift's code for `bytes` (from the cache when another load got there first),
/// written to the cache.
fn optimize(digest: &str, bytes: &[u8], target: &Target, stats: &TierStats) -> anyhow::Result<Component> {
    let cache = cache_path(&target.cache_dir, digest);
    if cache.exists() {
        // SAFETY: as in Runtime::load_with: only this node writes its cache directory.
        if let Ok(c) = unsafe { Component::deserialize_file(&target.engine, &cache) } {
            return Ok(c);
        }
    }
    let started = Instant::now();
    let component = Component::new(&target.engine, bytes).map_err(anyhow::Error::from);
    let ms = started.elapsed().as_millis() as u64;
    match &component {
        Ok(c) => {
            stats.optimized_compiles.fetch_add(1, Ordering::Relaxed);
            stats.optimized_ms.fetch_add(ms, Ordering::Relaxed);
            tracing::info!(%digest, ms, tier = "optimized", "compiled component");
            if let Err(e) = write_cache(&cache, c) {
                tracing::warn!(%digest, error = %e, "could not write compile cache entry");
            }
        }
        Err(e) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%digest, error = %format!("{e:#}"), "Cranelift could not compile what Winch did; the baseline code stays");
        }
    }
    component
}

/// Give the calling thread a nice value of 10: the scheduler prefers the node's other
/// threads (requests, baseline compiles) when the cores are busy. Best effort.
fn lower_priority() {
    // SAFETY: plain syscalls on the calling thread (on Linux a thread id names one thread
    // for setpriority).
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10) };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "the tier-up thread keeps its priority");
    }
}

/// A digest's entry in a compile cache directory.
pub(super) fn cache_path(dir: &Path, digest: &str) -> PathBuf {
    let name = digest.strip_prefix("sha256:").unwrap_or(digest);
    dir.join(format!("{name}.cwasm"))
}

/// Write a compiled component to the cache, then rename, so a crash never leaves a torn
/// entry under the final name.
pub(super) fn write_cache(path: &Path, component: &Component) -> anyhow::Result<()> {
    let bytes = component.serialize().map_err(anyhow::Error::from)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
