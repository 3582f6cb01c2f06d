//! The request path: admission through the service's gate, a fresh instance, stats, and
//! `invoke` from guests (an in-process dispatch).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;

use super::gate::{self, GateError};
use super::{Deployed, DispatchError, Outcome, Registry, Service};
use crate::runtime::{
    CallContext, CallError, Completion, ExecLimits, GuestError, HyperOutgoingBody, Invoker, Request, Response,
};

impl Registry {
    fn call_context(
        self: &Arc<Self>,
        svc: &Service,
        deployed: &Deployed,
        request_id: Arc<str>,
        depth: u32,
    ) -> (CallContext, ExecLimits) {
        let limits = ExecLimits {
            max_memory: deployed.spec.limits.memory_mib as usize * (1 << 20),
            timeout: Duration::from_millis(deployed.spec.limits.timeout_ms),
            fuel: deployed.spec.limits.fuel,
        };
        let invoker: Arc<dyn Invoker> = self.clone();
        let call = CallContext {
            service: svc.name.clone(),
            request_id,
            depth,
            config: deployed.config.clone(),
            limits: deployed.import_limits.clone(),
            caps: deployed.caps.clone(),
            grid: self.grid.clone(),
            invoker,
        };
        (call, limits)
    }

    /// Instantiate a service without calling it (no admission): the per-request setup cost,
    /// for the instantiation benchmark.
    pub async fn instantiate_only(self: &Arc<Self>, name: &str) -> Result<(), DispatchError> {
        let svc = self.get(name).ok_or_else(|| DispatchError::NotFound(name.to_string()))?;
        let deployed = svc.current();
        let (call, limits) = self.call_context(&svc, &deployed, "bench".into(), 0);
        self.runtime
            .instantiate_only(deployed.prepared()?, call, limits)
            .await
            .map_err(|e| DispatchError::Internal(e.to_string()))
    }

    async fn admit(&self, svc: &Service) -> Result<gate::Permit, DispatchError> {
        let name = &*svc.name;
        let wait = Duration::from_millis(svc.current().spec.queue_timeout_ms);
        svc.gate.acquire(wait).await.map_err(|e| {
            svc.stats.record(Outcome::Rejected, 0);
            match e {
                GateError::Stopped => DispatchError::Stopped(name.to_string()),
                GateError::QueueFull => DispatchError::QueueFull(name.to_string()),
                GateError::WaitTimeout => DispatchError::WaitTimeout(name.to_string(), wait),
            }
        })
    }

    /// A single node's autoscaled service at zero: its first request gives it an instance.
    async fn wake_single(&self, svc: &Service) -> Result<(), DispatchError> {
        if self.remote.get().is_none() && svc.current().spec.autoscale.is_some() && svc.gate().limit == 0 {
            self.autoscale_to(&svc.name, 1).await.map_err(|e| DispatchError::Internal(e.to_string()))?;
        }
        Ok(())
    }

    /// Run a request on a service: admission, a fresh instance, the guest's response.
    pub async fn dispatch(
        self: &Arc<Self>,
        name: &str,
        req: Request,
        request_id: Arc<str>,
        depth: u32,
    ) -> Result<Response, DispatchError> {
        self.dispatch_routed(name, req, request_id, depth).await.0
    }

    /// A call from service `from` (an `invoke` or a barrier's call): dispatched like any
    /// request and counted as an edge of the call graph.
    pub(super) async fn call_from(
        self: &Arc<Self>,
        from: &str,
        service: &str,
        req: Request,
        request_id: Arc<str>,
        depth: u32,
    ) -> Result<Response, DispatchError> {
        crate::runtime::check_request(&req).map_err(DispatchError::BadRequest)?;
        // Only a barrier's driver marks a continuation; a guest's call cannot.
        let mut req = req;
        req.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(super::barrier::HEADER));
        let started = Instant::now();
        let (result, remote) = self.dispatch_routed(service, req, request_id, depth).await;
        // Calls to names that are not deployed are not edges (a guest could invent any
        // number of them).
        if !matches!(result, Err(DispatchError::NotFound(_))) {
            let ok = matches!(&result, Ok(r) if r.status < 500);
            self.calls.record(from, service, ok, remote, started.elapsed().as_micros() as u64);
        }
        result
    }

    /// [`Registry::dispatch`], also telling whether the request ran on another node.
    async fn dispatch_routed(
        self: &Arc<Self>,
        name: &str,
        req: Request,
        request_id: Arc<str>,
        depth: u32,
    ) -> (Result<Response, DispatchError>, bool) {
        let mut svc = self.get(name);
        if let Some(remote) = self.remote.get() {
            if remote.dormant() {
                let reason = "this node is dormant (cut off from its cluster's majority)".to_string();
                return (Err(DispatchError::NoInstance { service: name.to_string(), reason }), false);
            }
            // Scaled to zero: make an instance (here, as a rule) before routing.
            let version = svc.as_ref().map(|s| s.current());
            if let (Some(s), Some(spec)) = (&svc, version.as_ref().map(|d| &d.spec))
                && spec.autoscale.is_some()
                && s.gate().limit == 0
                && (spec.instances == 0 || !remote.has_holders(name))
            {
                if let Err(e) = remote.wake(name, Duration::from_millis(spec.queue_timeout_ms)).await {
                    return (Err(e), false);
                }
                svc = self.get(name);
            }
            // In a cluster, a service without instances here runs wherever it has some, and
            // a call finding every instance here busy goes to another node that runs it
            // (a service calling itself with one instance here would otherwise wait for
            // the instance its caller holds).
            let gate = svc.as_ref().map(|s| s.gate());
            let local = gate.as_ref().is_some_and(|g| g.limit > 0);
            let busy = gate.as_ref().is_some_and(|g| g.limit > 0 && g.running >= g.limit);
            let stopped = version.as_ref().is_some_and(|d| d.spec.stopped());
            let spill = busy && remote.runs_elsewhere(name);
            if !stopped && (!local || spill || remote.elsewhere(name, &req)) {
                return (remote.call(name, req, request_id, depth).await, true);
            }
        }
        let Some(svc) = svc else {
            return (Err(DispatchError::NotFound(name.to_string())), false);
        };
        (self.dispatch_to(svc, req, request_id, depth).await, false)
    }

    /// [`Registry::dispatch`] for a service already looked up (ingress has it in hand).
    pub async fn dispatch_to(
        self: &Arc<Self>,
        svc: Arc<Service>,
        req: Request,
        request_id: Arc<str>,
        depth: u32,
    ) -> Result<Response, DispatchError> {
        let name = &*svc.name;
        self.wake_single(&svc).await?;
        let permit = match self.admit(&svc).await {
            // This node's instances went elsewhere (a scale-down or a move) while the
            // request waited: it was not run, so it runs where they went.
            Err(DispatchError::Stopped(_)) if !svc.current().spec.stopped() && self.remote.get().is_some() => {
                // Routed again: to a node that has instances, or woken if none has.
                return Box::pin(self.dispatch_routed(name, req, request_id, depth)).await.0;
            }
            other => other?,
        };
        // Read the version after admission so a request admitted after a redeploy runs it.
        let deployed = svc.current();
        let (call, limits) = self.call_context(&svc, &deployed, request_id, depth);
        let started = Instant::now();
        let prepared = deployed.prepared()?;
        let result = self.runtime.handle(prepared, call, req, limits).await;
        drop(permit);
        let micros = started.elapsed().as_micros() as u64;
        let max_response = deployed.spec.limits.max_response_bytes;
        match result {
            Ok(resp) if resp.body.len() > max_response => {
                svc.stats.record(Outcome::GuestError, micros);
                Err(DispatchError::ResponseTooLarge {
                    service: name.to_string(),
                    size: resp.body.len(),
                    limit: max_response,
                })
            }
            Ok(resp) => {
                svc.stats.record(if resp.status >= 500 { Outcome::GuestError } else { Outcome::Ok }, micros);
                Ok(resp)
            }
            Err(e) => {
                svc.stats.record(outcome_of(&e), micros);
                Err(dispatch_error(name, e))
            }
        }
    }

    /// Run an HTTP request on a wasi:http service, streaming both bodies. The admission
    /// permit is held until the guest finishes, after the response head has gone out.
    pub async fn dispatch_http<B>(
        self: &Arc<Self>,
        svc: Arc<Service>,
        req: http::Request<B>,
        request_id: Arc<str>,
    ) -> Result<http::Response<HyperOutgoingBody>, DispatchError>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let name = &*svc.name;
        self.wake_single(&svc).await?;
        let permit = self.admit(&svc).await?;
        let deployed = svc.current();
        let prepared = deployed.prepared()?.clone();
        let (call, limits) = self.call_context(&svc, &deployed, request_id, 0);
        let max_request = deployed.spec.limits.max_request_bytes;
        // A body larger than the limit fails inside the guest as a stream error.
        let req = req.map(move |b| {
            http_body_util::BodyExt::map_err(http_body_util::Limited::new(b, max_request), |e| {
                wasmtime_wasi_http::Error::InternalError(Some(format!("request body: {e}")))
            })
        });
        let started = Instant::now();
        let stats_svc = svc.clone();
        let done: Completion = Box::new(move |result| {
            drop(permit);
            let micros = started.elapsed().as_micros() as u64;
            stats_svc.stats.record(result.as_ref().map_or_else(outcome_of, |()| Outcome::Ok), micros);
        });
        let max_response = deployed.spec.limits.max_response_bytes;
        let resp = self.runtime.handle_http(prepared, call, req, limits, done).await;
        let resp = resp.map_err(|e| dispatch_error(name, e))?;
        // A streamed body past the limit ends in an error, so the client sees a broken
        // response rather than a complete-looking short one.
        Ok(resp.map(move |b| {
            http_body_util::BodyExt::boxed_unsync(http_body_util::BodyExt::map_err(
                http_body_util::Limited::new(b, max_response),
                |e| {
                    wasmtime_wasi_http::Error::InternalError(Some(format!(
                        "response body: {e} (limits.max_response_bytes)"
                    )))
                },
            ))
        }))
    }
}

fn outcome_of(e: &CallError) -> Outcome {
    match e {
        CallError::Trap(_) | CallError::Internal(_) => Outcome::Trapped,
        CallError::Timeout(_) | CallError::OutOfFuel(_) => Outcome::TimedOut,
        CallError::Guest(_) => Outcome::GuestError,
        CallError::PoolExhausted(_) => Outcome::Rejected,
    }
}

fn dispatch_error(name: &str, e: CallError) -> DispatchError {
    let service = name.to_string();
    match e {
        CallError::Trap(message) => DispatchError::Trap { service, message },
        CallError::Timeout(timeout) => DispatchError::Timeout { service, timeout },
        CallError::OutOfFuel(fuel) => DispatchError::OutOfFuel { service, fuel },
        CallError::Guest(message) => DispatchError::Guest { service, message },
        e @ CallError::PoolExhausted(_) => DispatchError::Internal(e.to_string()),
        CallError::Internal(m) => DispatchError::Internal(m),
    }
}

impl Invoker for Registry {
    fn invoke(
        &self,
        caller: &CallContext,
        service: String,
        req: Request,
    ) -> BoxFuture<'static, Result<Response, GuestError>> {
        let Some(this) = self.me.upgrade() else {
            return futures::future::ready(Err(GuestError::Internal("the node is shutting down".into()))).boxed();
        };
        let depth = caller.depth.saturating_add(1);
        let max = caller.limits.max_call_depth;
        let request_id = caller.request_id.clone();
        let from = caller.service.clone();
        async move {
            if depth > max {
                return Err(GuestError::Denied(format!(
                    "call depth limit {max} reached calling {service:?} from {from:?}; is there a cycle of invoke calls?"
                )));
            }
            this.call_from(&from, &service, req, request_id, depth).await.map_err(|e| to_guest_error(&e))
        }
        .boxed()
    }

    fn fan_out(
        &self,
        caller: &CallContext,
        calls: Vec<(String, Request)>,
        then: Request,
    ) -> BoxFuture<'static, Result<String, GuestError>> {
        let Some(this) = self.me.upgrade() else {
            return futures::future::ready(Err(GuestError::Internal("the node is shutting down".into()))).boxed();
        };
        let caller = caller.clone();
        async move { this.barrier_start(&caller, calls, then).await }.boxed()
    }

    fn barrier_results(&self, caller: &CallContext, id: String) -> BoxFuture<'static, crate::runtime::BarrierResults> {
        let Some(this) = self.me.upgrade() else {
            return futures::future::ready(Err(GuestError::Internal("the node is shutting down".into()))).boxed();
        };
        let caller = caller.clone();
        async move { this.barrier_results(&caller, &id).await }.boxed()
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
