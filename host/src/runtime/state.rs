//! What each Store carries: WASI state, limits, and the context of the call it serves.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{GuestError, Request, Response};
use crate::grid::Grid;

/// Routes `invoke` calls to services. Implemented by the service registry, which owns the
/// runtime; the runtime only knows this trait.
pub trait Invoker: Send + Sync + 'static {
    fn invoke(
        &self,
        caller: &CallContext,
        service: String,
        req: Request,
    ) -> BoxFuture<'static, Result<Response, GuestError>>;

    /// Start a durable barrier over `calls` that resumes the caller with `then`; its id.
    fn fan_out(
        &self,
        caller: &CallContext,
        calls: Vec<(String, Request)>,
        then: Request,
    ) -> BoxFuture<'static, Result<String, GuestError>>;

    /// The answers collected by one of the caller's barriers.
    fn barrier_results(&self, caller: &CallContext, id: String) -> BoxFuture<'static, BarrierResults>;
}

/// What `barrier.results` returns to the guest.
pub type BarrierResults = Result<Vec<Result<Response, GuestError>>, GuestError>;

/// Per-service limits enforced inside host imports (built from the spec's `Limits`,
/// which own the defaults).
#[derive(Debug, Clone)]
pub struct ImportLimits {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    pub max_fanout: usize,
    pub max_call_depth: u32,
    pub max_list_keys: u32,
}

/// What a service was granted beyond computing: the WASI context is built from this.
#[derive(Debug, Clone, Default)]
pub struct Capabilities {
    pub env: Vec<(String, String)>,
    /// Addresses TCP connections may go to; empty means no network at all.
    pub sockets: Vec<std::net::SocketAddr>,
    /// Read-only preopens: (host dir, guest path).
    pub files: Vec<(std::path::PathBuf, String)>,
    /// `host:port`s outgoing wasi:http requests may go to.
    pub outbound_http: Arc<Vec<String>>,
}

/// Who is calling: a service's identity, settings and grants, and what its calls reach.
/// The same for every request of one deployed version, which builds it once: a request
/// clones one pointer to it instead of six (atomic counts on cache lines both cores
/// write; docs/BENCHMARKS.md, "Tried for hello throughput").
pub struct CallSite {
    pub service: Arc<str>,
    pub config: Arc<BTreeMap<String, String>>,
    pub limits: Arc<ImportLimits>,
    pub caps: Arc<Capabilities>,
    pub grid: Arc<Grid>,
    pub invoker: Arc<dyn Invoker>,
}

/// Who is calling and on whose behalf: the service ([`CallSite`], which the context
/// derefs to), the request's correlation id, and how deep in an `invoke` chain this call
/// is.
#[derive(Clone)]
pub struct CallContext {
    pub site: Arc<CallSite>,
    pub request_id: Arc<str>,
    pub depth: u32,
    /// The run's span (its calls are its children) and counters, when traced.
    pub trace: crate::trace::CallTrace,
}

impl std::ops::Deref for CallContext {
    type Target = CallSite;

    fn deref(&self) -> &CallSite {
        &self.site
    }
}

impl CallContext {
    /// This call as seen by a provider it calls into: same request, the provider's
    /// identity (its name, settings and limits; the caller's grants).
    pub fn acting_as(&self, who: &super::Identity) -> CallContext {
        let site = CallSite {
            service: who.service.clone(),
            config: who.config.clone(),
            limits: who.limits.clone(),
            caps: self.caps.clone(),
            grid: self.grid.clone(),
            invoker: self.invoker.clone(),
        };
        CallContext {
            site: Arc::new(site),
            request_id: self.request_id.clone(),
            depth: self.depth,
            trace: self.trace.clone(),
        }
    }
}

pub struct StoreState {
    pub(crate) wasi: WasiCtx,
    pub(crate) http: wasmtime_wasi_http::WasiHttpCtx,
    pub(crate) outbound: super::outbound::OutboundPolicy,
    pub(crate) table: ResourceTable,
    pub(crate) limits: StoreLimits,
    pub(crate) call: CallContext,
    /// Provider instances of a linked chain, by part index (created on first call).
    pub(crate) linked: Vec<Option<wasmtime::component::Instance>>,
    /// When each fused part's call in progress started (a timing shim's `enter`; the
    /// innermost last), as (instant, unix µs).
    pub(crate) part_starts: Vec<(std::time::Instant, u64)>,
    /// When the request it serves runs out of time (the epoch callback's test).
    pub(crate) deadline: std::time::Instant,
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// Outgoing HTTP of a wasi:http guest goes through its service's grant and the node's
/// address check ([`super::outbound::OutboundPolicy`]).
impl wasmtime_wasi_http::WasiHttpView for StoreState {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.outbound }
    }
}
