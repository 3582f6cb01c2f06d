//! Serving a chain of services as one request: a consumer whose typed imports are
//! provided by other services' components.
//!
//! Two ways, same results:
//! - **fused**: `wac-graph` composes the parts into one component (providers instantiated
//!   once and wired to their consumers' imports), compiled once and cached under a key
//!   made of the parts' digests and the wiring. A request is one instantiation.
//! - **linked**: each part is its own instance in the request's Store. A consumer's import
//!   functions are host functions that instantiate the provider on first use and call its
//!   export with the same values. While a provider runs, the Store's call context carries
//!   the provider's identity (service name, config, kv namespace, limits).

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use wac_graph::{CompositionGraph, EncodeOptions, types::Package};
use wasmtime::component::{Component, InstancePre, Linker};

use super::state::{ImportLimits, StoreState};
use super::{Compiled, Prepared, Runtime, Tier};

/// Who a provider is while it runs.
#[derive(Clone)]
pub struct Identity {
    pub service: Arc<str>,
    pub config: Arc<BTreeMap<String, String>>,
    pub limits: Arc<ImportLimits>,
}

/// A fused chain gets a timed composition while its parts and edges (one shim memory
/// each) stay within this many of the pool's 16 memories per component.
const TIMED_MEMORIES: usize = 12;

/// What a timed composition's key adds to its chain's.
pub(super) const TIMED_SUFFIX: &str = "+timed";

/// One consumer import wired to one provider export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    /// The import's name in the consumer.
    pub import: String,
    /// Index of the provider in [`Chain::parts`].
    pub provider: usize,
    /// The export's name in the provider.
    pub export: String,
}

/// A component of a chain.
pub struct Part {
    pub service: Arc<str>,
    pub digest: String,
    pub component: Compiled,
    pub identity: Identity,
    pub edges: Vec<Edge>,
}

/// Every service a request passes through, providers before their consumers; the last
/// part is the one requests enter.
pub struct Chain {
    pub parts: Vec<Part>,
}

impl Chain {
    /// A digest of the parts and their wiring: equal keys mean equal compositions.
    pub fn key(&self) -> String {
        let mut h = Sha256::new();
        for p in &self.parts {
            h.update(p.digest.as_bytes());
            h.update([0]);
            for e in &p.edges {
                h.update(format!("{}\0{}\0{}\0", e.import, e.provider, e.export).as_bytes());
            }
            h.update([1]);
        }
        format!("sha256:{}", hex::encode(h.finalize()))
    }
}

/// Compose the parts into one component with wac-graph. `bytes[i]` is part i's component.
/// `timed`: each call from one part to another passes through a timing shim (`shim.rs`).
pub fn compose(chain: &Chain, bytes: &[Vec<u8>], timed: bool) -> anyhow::Result<Vec<u8>> {
    let mut graph = CompositionGraph::new();
    let mut instances = Vec::with_capacity(chain.parts.len());
    let mut shims = 0;
    for (i, part) in chain.parts.iter().enumerate() {
        // Package names only label parts inside the composition.
        let pkg = Package::from_bytes(&format!("nanogrid:part{i}"), None, bytes[i].clone(), graph.types_mut())
            .with_context(|| format!("reading the component of {}", part.service))?;
        let pkg = graph.register_package(pkg)?;
        let instance = graph.instantiate(pkg);
        for e in &part.edges {
            let mut export = graph.alias_instance_export(instances[e.provider], &e.export)?;
            let provider = &chain.parts[e.provider];
            if timed {
                let shim = super::shim::build(&bytes[e.provider], &e.export, &provider.service)
                    .with_context(|| format!("timing calls to {} of {}", e.export, provider.service))?;
                if let Some(shim) = shim {
                    shims += 1;
                    let pkg = Package::from_bytes(&format!("nanogrid:timing{shims}"), None, shim, graph.types_mut())?;
                    let pkg = graph.register_package(pkg)?;
                    let shim = graph.instantiate(pkg);
                    graph.set_instantiation_argument(shim, &e.export, export)?;
                    export = graph.alias_instance_export(shim, &e.export)?;
                }
            }
            graph
                .set_instantiation_argument(instance, &e.import, export)
                .with_context(|| format!("wiring {} of {}", e.import, part.service))?;
        }
        instances.push(instance);
    }
    let root = chain.parts.last().context("an empty chain")?;
    let root_instance = *instances.last().context("an empty chain")?;
    let root_code = root.component.component();
    let engine = root_code.engine();
    let names: Vec<String> = root_code.component_type().exports(engine).map(|(n, _)| n.to_string()).collect();
    for name in names {
        let export = graph.alias_instance_export(root_instance, &name)?;
        graph.export(export, &name)?;
    }
    Ok(graph.encode(EncodeOptions::default())?)
}

impl Runtime {
    /// Fuse a chain into one component (through the compile cache, so a known chain is
    /// neither composed nor compiled again). Blocking.
    /// With `--trace-fused-parts` above 0 (and a chain short enough), its timed
    /// composition is prepared too, for the requests chosen to time their parts.
    pub fn prepare_fused(
        &self,
        chain: &Chain,
        bytes: impl FnOnce() -> anyhow::Result<Vec<Vec<u8>>>,
    ) -> anyhow::Result<Arc<Prepared>> {
        let key = chain.key();
        // The parts' bytes are read once, and only if a composition is not cached.
        let (mut bytes, mut parts) = (Some(bytes), None);
        let compiled = self.load_with(&key, || compose(chain, read_once(&mut parts, &mut bytes)?, false))?;
        let prepared = self.prepare(&compiled)?;
        let edges: usize = chain.parts.iter().map(|p| p.edges.len()).sum();
        if self.fused_parts > 0.0 && chain.parts.len() + edges <= TIMED_MEMORIES {
            let timed_key = format!("{key}{TIMED_SUFFIX}");
            let timed = self
                .load_with(&timed_key, || compose(chain, read_once(&mut parts, &mut bytes)?, true))
                .and_then(|c| self.prepare(&c));
            // Timing is optional: the chain serves untimed if its timed composition fails.
            match timed {
                Ok(timed) => {
                    let _ = prepared.timed.set(timed);
                }
                Err(e) => tracing::warn!(chain = %key, error = %format!("{e:#}"), "no timed composition"),
            }
        }
        Ok(prepared)
    }

    /// Link a chain host-mediated: one instance per part, in the request's Store. Every
    /// part runs its optimized code (a request's instances share one engine), so this
    /// waits for parts still being optimized. Blocking.
    pub fn prepare_linked(&self, chain: &Chain) -> anyhow::Result<Arc<Prepared>> {
        let code = chain.parts.iter().map(|p| p.component.wait_optimized()).collect::<anyhow::Result<Vec<_>>>()?;
        let mut pres: Vec<Arc<InstancePre<StoreState>>> = Vec::with_capacity(chain.parts.len());
        let (root, providers) = chain.parts.split_last().context("an empty chain")?;
        let (root_code, provider_code) = code.split_last().context("an empty chain")?;
        // Every part is instantiated in the root's Store, so all must share its engine.
        let engine = root_code.engine();
        if let Some((other, _)) =
            providers.iter().zip(provider_code).find(|(_, c)| !wasmtime::Engine::same(c.engine(), engine))
        {
            anyhow::bail!(
                "{} and {} cannot be linked in one request: only one of them uses the component model's async ABI",
                other.service,
                root.service
            );
        }
        let base = &self.flavor_of(root_code).linker;
        let linker_for = |part: &Part, pres: &[Arc<InstancePre<StoreState>>]| -> anyhow::Result<Linker<StoreState>> {
            let mut linker = base.clone();
            for e in &part.edges {
                let provider = &chain.parts[e.provider];
                link_edge(&mut linker, e, provider, &code[e.provider], pres[e.provider].clone())
                    .with_context(|| format!("linking {} of {} to {}", e.import, part.service, provider.service))?;
            }
            Ok(linker)
        };
        for (part, c) in providers.iter().zip(provider_code) {
            let pre = linker_for(part, &pres)?.instantiate_pre(c).map_err(anyhow::Error::from)?;
            pres.push(Arc::new(pre));
        }
        let code = super::link(&linker_for(root, &pres)?, root_code, Tier::Optimized)?;
        Ok(Arc::new(Prepared::new(&chain.key(), code)))
    }
}

impl Runtime {
    /// What a request runs: a fused chain's timed composition for the share of sampled
    /// requests `fused_parts` names (when it has one), else `prepared`.
    pub(super) fn pick<'a>(&self, prepared: &'a Arc<Prepared>, call: &super::CallContext) -> &'a Arc<Prepared> {
        match prepared.timed.get() {
            Some(timed) if call.trace.run.is_some() && crate::trace::chance(self.fused_parts) => timed,
            _ => prepared,
        }
    }
}

impl Prepared {
    /// Whether this is a fused chain's timed composition.
    pub(super) fn is_timed(&self) -> bool {
        self.digest.ends_with(TIMED_SUFFIX)
    }
}

/// The parts' bytes, read by `bytes` the first time.
fn read_once<'a, F: FnOnce() -> anyhow::Result<Vec<Vec<u8>>>>(
    parts: &'a mut Option<Vec<Vec<u8>>>,
    bytes: &mut Option<F>,
) -> anyhow::Result<&'a [Vec<u8>]> {
    if parts.is_none() {
        let read = bytes.take().context("the parts' bytes are read once")?;
        *parts = Some(read()?);
    }
    Ok(parts.as_deref().unwrap_or_default())
}

/// Define every function of `edge.export` as a host function calling `provider`.
fn link_edge(
    linker: &mut Linker<StoreState>,
    edge: &Edge,
    provider: &Part,
    component: &Component,
    pre: Arc<InstancePre<StoreState>>,
) -> anyhow::Result<()> {
    use wasmtime::component::types::ComponentItem;
    let Some((ComponentItem::ComponentInstance(inst_ty), iface)) = component.get_export(None, &edge.export) else {
        anyhow::bail!("{} does not export the interface {}", provider.service, edge.export);
    };
    let funcs: Vec<String> = inst_ty
        .exports(component.engine())
        .filter(|(_, item)| matches!(item.ty, ComponentItem::ComponentFunc(_)))
        .map(|(n, _)| n.to_string())
        .collect();
    // The Store slot holding the provider's instance: one per part, shared by its consumers.
    let slot = edge.provider;
    let mut instance = linker.instance(&edge.import)?;
    for name in funcs {
        let (_, index) = component
            .get_export(Some(&iface), &name)
            .with_context(|| format!("{} has no function {name}", edge.export))?;
        let (pre, identity) = (pre.clone(), Arc::new(provider.identity.clone()));
        let part_name: Arc<str> = format!("part {}.{name}", provider.service).into();
        instance.func_new_async(&name, move |mut store, _ty, params, results| {
            let (pre, identity, part_name) = (pre.clone(), identity.clone(), part_name.clone());
            Box::new(async move {
                let run = store.data().call.trace.run.clone();
                let started = (std::time::Instant::now(), crate::trace::now_unix_us());
                let instance = match store.data().linked.get(slot).copied().flatten() {
                    Some(i) => i,
                    None => {
                        let i = pre.instantiate_async(&mut store).await?;
                        let linked = &mut store.data_mut().linked;
                        if linked.len() <= slot {
                            linked.resize(slot + 1, None);
                        }
                        linked[slot] = Some(i);
                        i
                    }
                };
                let func = instance
                    .get_func(&mut store, index)
                    .ok_or_else(|| wasmtime::format_err!("provider {} lost its export", identity.service))?;
                let callee = store.data().call.acting_as(&identity);
                let caller = std::mem::replace(&mut store.data_mut().call, callee);
                let result = func.call_async(&mut store, params, results).await;
                store.data_mut().call = caller;
                if let Some(run) = run {
                    run.part(&part_name, &identity.service, started.1, started.0.elapsed().as_micros() as u64);
                }
                result
            })
        })?;
    }
    Ok(())
}
