//! Spares: fresh instances made ahead (`--spares N`, default 2). A nanoservice that
//! does not reuse instances still gets a new instance per request, but once a request
//! follows another within [`SPARES_AFTER`](super::reuse::SPARES_AFTER), the instance
//! for the next one is made after the answer instead of before the call, and the used
//! instance is dropped then too: both leave the request's path (they are most of a fresh
//! request's cost, five times over for a fused chain of five).
//!
//! A spare has served no request: it is made with the service's context and no request's
//! (empty request id, no trace), and [`Warm::rebind`] gives it the request's before the
//! call, as for a reused instance. What it ran before the request is its own
//! instantiation (start functions), which a fresh instance runs too, so fresh-per-request
//! isolation holds: no instance serves two requests.
//!
//! Spares are idle instances: they count against the node's idle budget (a quarter of its
//! instance slots), are dropped after [`IDLE_MAX`](super::reuse::IDLE_MAX) unused or when
//! the pooling allocator is full, and are never made by evicting others. A version with
//! no requests gets none.

use std::sync::Arc;

use wasmtime::Engine;

use super::bindings::{Request, Response};
use super::output::OutputTail;
use super::reuse::{Instance, Warm, WarmPool};
use super::state::CallContext;
use super::{CallError, EPOCH_TICK, ExecLimits, Prepared, PreparedKind, Runtime, classify};

impl Runtime {
    /// [`Runtime::handle`] for a fresh-per-request nanoservice whose version keeps spares
    /// in `pool`: a spare serves the request if there is one (a new instance otherwise),
    /// and the used instance is dropped, and another spare made, after the answer.
    pub async fn handle_spared(
        self: &Arc<Self>,
        pool: &Arc<WarmPool>,
        prepared: &Arc<Prepared>,
        call: CallContext,
        req: Request,
        limits: ExecLimits,
    ) -> Result<Response, CallError> {
        let code = prepared.code();
        let PreparedKind::Nanoservice(pre) = &code.kind else {
            return Box::pin(self.handle(prepared, call, req, limits)).await;
        };
        let picked = self.pick(prepared, &call);
        if !Arc::ptr_eq(picked, prepared) {
            // Its timed composition (another component, chosen once): a fresh instance.
            return Box::pin(self.handle(picked, call, req, limits)).await;
        }
        code.note(&call);
        // What a spare made after this request starts with: the service's context, none
        // of this request's.
        let template = pool.requested().then(|| CallContext {
            request_id: Arc::from(""),
            trace: Default::default(),
            depth: 0,
            ..call.clone()
        });
        // A spare of code since swapped for optimized code is not used.
        let usable = |w: &Warm| Engine::same(w.store.engine(), &code.engine) && matches!(w.instance, Instance::Nano(_));
        let mut warm = match pool.take(usable) {
            Some(mut w) => {
                w.rebind(call, limits, self.fuel)?;
                w
            }
            None => self.fresh_warm(&code, pre, call, limits).await?,
        };
        let run = async move {
            let result = match &warm.instance {
                Instance::Nano(i) => i.nanogrid_service_handler().call_handle(&mut warm.store, &req).await,
                Instance::Http(_) => Err(wasmtime::format_err!("a wasi:http instance among a nanoservice's spares")),
            };
            (warm, result)
        };
        // A call cut off by the timeout drops its instance here.
        let (used, result) = match tokio::time::timeout(limits.timeout + super::EPOCH_TICK * 4, run).await {
            Err(_) => (None, Err(CallError::Timeout(limits.timeout))),
            Ok((warm, Ok(resp))) => (Some(warm), Ok(resp)),
            Ok((warm, Err(e))) => {
                let e = classify(e, limits, &warm.tail);
                (Some(warm), Err(e))
            }
        };
        self.after_spared(pool, prepared, used, template, limits);
        result
    }

    /// After a request: drop its instance and make a spare for the next, off the request's
    /// path (a task of their own).
    fn after_spared(
        self: &Arc<Self>,
        pool: &Arc<WarmPool>,
        prepared: &Arc<Prepared>,
        used: Option<Warm>,
        template: Option<CallContext>,
        limits: ExecLimits,
    ) {
        let refill = template.filter(|_| pool.reserve_spare());
        if used.is_none() && refill.is_none() {
            return;
        }
        let (this, pool, prepared) = (self.clone(), pool.clone(), prepared.clone());
        // Not kept: it ends by itself, within the deadline an instantiation gets.
        tokio::spawn(async move {
            drop(used);
            if let Some(call) = refill {
                let made = this.make_spare(&prepared, call, limits).await;
                pool.add_spare(made);
            }
        });
    }

    /// A new instance of the version's current code, with `call` (no request's context);
    /// `None` when it cannot be made now (a full pooling allocator: nothing is evicted
    /// for a spare).
    async fn make_spare(&self, prepared: &Prepared, call: CallContext, limits: ExecLimits) -> Option<Warm> {
        let code = prepared.code();
        let PreparedKind::Nanoservice(pre) = &code.kind else { return None };
        let tail = OutputTail::new(2048);
        let mut store = self.new_store(&code, call, limits, &tail).ok()?;
        let made = tokio::time::timeout(limits.timeout + EPOCH_TICK * 4, pre.instantiate_async(&mut store)).await;
        match made {
            Ok(Ok(instance)) => Some(Warm::new(store, Instance::Nano(instance), tail)),
            Ok(Err(e)) => {
                tracing::debug!(digest = %prepared.digest, error = %e, "no spare made");
                None
            }
            Err(_) => None,
        }
    }
}
