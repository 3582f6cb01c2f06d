//! `invoke`, `fan-out` and barrier results from guests: the registry as the runtime's
//! [`Invoker`], reached through a weak handle that every deployed version's
//! [`CallSite`] shares.

use std::sync::{Arc, Weak};

use futures::FutureExt;
use futures::future::BoxFuture;

use super::{DispatchError, Registry};
use crate::runtime::{CallContext, CallSite, GuestError, Invoker, Request, Response};
use crate::trace;

/// The registry as its services' calls see it. Weak: a deployed version keeps its
/// [`CallSite`], which holds this, and the registry keeps its versions; a strong pointer
/// would be a cycle that never frees the registry (and its grid).
pub(super) struct RegistryInvoker(pub(super) Weak<Registry>);

impl RegistryInvoker {
    fn registry(&self) -> Option<Arc<Registry>> {
        self.0.upgrade()
    }
}

fn shutting_down<T: Send + 'static>(e: impl FnOnce(GuestError) -> T) -> BoxFuture<'static, T> {
    futures::future::ready(e(GuestError::Internal("the node is shutting down".into()))).boxed()
}

impl Invoker for RegistryInvoker {
    fn invoke(
        &self,
        caller: &CallContext,
        service: String,
        req: Request,
    ) -> BoxFuture<'static, Result<Response, GuestError>> {
        let Some(this) = self.registry() else { return shutting_down(Err) };
        let depth = caller.depth.saturating_add(1);
        let max = caller.limits.max_call_depth;
        let request_id = caller.request_id.clone();
        let from = caller.service.clone();
        let mut req = req;
        platform_parent(&mut req.headers, caller);
        async move {
            if depth > max {
                return Err(GuestError::Denied(format!(
                    "call depth limit {max} reached calling {service:?} from {from:?}; is there a cycle of invoke calls?"
                )));
            }
            this.call_from((&from, "invoke"), &service, req, request_id, depth).await.map_err(|e| to_guest_error(&e))
        }
        .boxed()
    }

    fn fan_out(
        &self,
        caller: &CallContext,
        calls: Vec<(String, Request)>,
        then: Request,
    ) -> BoxFuture<'static, Result<String, GuestError>> {
        let Some(this) = self.registry() else { return shutting_down(Err) };
        let caller = caller.clone();
        async move { this.barrier_engine.start(&caller, calls, then).await }.boxed()
    }

    fn barrier_results(&self, caller: &CallContext, id: String) -> BoxFuture<'static, crate::runtime::BarrierResults> {
        let Some(this) = self.registry() else { return shutting_down(Err) };
        let caller = caller.clone();
        async move { this.barrier_engine.results(&caller, &id).await }.boxed()
    }
}

impl Registry {
    /// The calling side of one deployed version's requests (built at its first).
    pub(super) fn call_site(&self, name: &Arc<str>, deployed: &super::Deployed) -> Arc<CallSite> {
        deployed
            .site
            .get_or_init(|| {
                Arc::new(CallSite {
                    service: name.clone(),
                    config: deployed.config.clone(),
                    limits: deployed.import_limits.clone(),
                    caps: deployed.caps.clone(),
                    grid: self.grid.clone(),
                    invoker: self.invoker.clone(),
                })
            })
            .clone()
    }
}

/// The WIT error a calling guest sees for a failed dispatch.
pub fn to_guest_error(e: &DispatchError) -> GuestError {
    match e {
        DispatchError::NotFound(_) | DispatchError::NoHandler { .. } => GuestError::NotFound(e.to_string()),
        DispatchError::Unresolved { .. }
        | DispatchError::NoInstance { .. }
        | DispatchError::Stopped(_)
        | DispatchError::QueueFull(_)
        | DispatchError::WaitTimeout(..) => GuestError::Unavailable(e.to_string()),
        DispatchError::Timeout { .. } | DispatchError::OutOfFuel { .. } => GuestError::Timeout,
        DispatchError::ResponseTooLarge { .. } | DispatchError::Guest { .. } => GuestError::Internal(e.to_string()),
        DispatchError::Trap { .. } | DispatchError::Internal(_) => GuestError::Internal(e.to_string()),
        DispatchError::BadRequest(m) => GuestError::Invalid(m.clone()),
    }
}

/// The platform, not the guest, says where a call sits in its trace: a guest's own
/// `traceparent`/`tracestate` on a call are replaced by the calling run's context and the
/// `tracestate` its request came with.
pub(super) fn platform_parent(headers: &mut Vec<(String, String)>, caller: &CallContext) {
    headers.retain(|(k, _)| {
        !k.eq_ignore_ascii_case(trace::context::TRACEPARENT) && !k.eq_ignore_ascii_case(trace::context::TRACESTATE)
    });
    if let Some(ctx) = &caller.trace.ctx {
        trace::set_parent(headers, ctx);
        if let Some(state) = &caller.trace.state {
            headers.push((trace::context::TRACESTATE.to_string(), state.to_string()));
        }
    }
}
