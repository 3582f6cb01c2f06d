//! The request path: admission through the service's gate, a fresh instance, stats, and
//! `invoke` from guests (an in-process dispatch).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::gate::{self, GateError};
use super::route;
use super::trials::Split;
use super::{Deployed, DispatchError, LoneRun, Outcome, Registry, Service};
use crate::runtime::{CallContext, CallError, Completion, ExecLimits, HyperOutgoingBody, Request, Response};
use crate::trace::{self, CallTrace, Open, SpanKind};

impl Registry {
    fn call_context(
        &self,
        svc: &Service,
        deployed: &Deployed,
        request_id: Arc<str>,
        depth: u32,
        trace: crate::trace::CallTrace,
    ) -> (CallContext, ExecLimits) {
        let limits = ExecLimits {
            max_memory: deployed.spec.limits.memory_mib as usize * (1 << 20),
            timeout: Duration::from_millis(deployed.spec.limits.timeout_ms),
            fuel: deployed.spec.limits.fuel,
        };
        let call = CallContext { site: self.call_site(&svc.name, deployed), request_id, depth, trace };
        (call, limits)
    }

    /// Instantiate a service without calling it (no admission): the per-request setup cost,
    /// for the instantiation benchmark.
    pub async fn instantiate_only(self: &Arc<Self>, name: &str) -> Result<(), DispatchError> {
        let svc = self.get(name).ok_or_else(|| DispatchError::NotFound(name.to_string()))?;
        let deployed = svc.current();
        let (call, limits) = self.call_context(&svc, &deployed, "bench".into(), 0, Default::default());
        self.runtime
            .instantiate_only(deployed.prepared()?, call, limits)
            .await
            .map_err(|e| DispatchError::Internal(e.to_string()))
    }

    async fn admit(&self, svc: &Service) -> Result<gate::Permit, DispatchError> {
        let name = &*svc.name;
        let wait = Duration::from_millis(svc.peek().spec.queue_timeout_ms);
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
        if !self.clustered() && svc.peek().spec.autoscale.is_some() && svc.gate().limit == 0 {
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
        self.dispatch_routed(name, req, request_id, depth, false).await.0
    }

    /// A call from service `from` (an `invoke` or a barrier's call, `kind` says which):
    /// dispatched like any request, counted as an edge of the call graph, and traced as a
    /// client span under the `traceparent` the request carries.
    pub(super) async fn call_from(
        self: &Arc<Self>,
        (from, kind): (&str, &'static str),
        service: &str,
        req: Request,
        request_id: Arc<str>,
        depth: u32,
    ) -> Result<Response, DispatchError> {
        crate::runtime::check_request(&req).map_err(DispatchError::BadRequest)?;
        // Only a barrier's driver marks a continuation; a guest's call cannot.
        let mut req = req;
        req.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(super::BARRIER_HEADER));
        let span = self.client_span(&mut req.headers);
        let arm = self.trial_arm(service);
        let started = Instant::now();
        let old_arm = arm.is_some_and(|(_, new, split)| split == Split::Alternate && !new);
        let (result, remote) = self.dispatch_routed(service, req, request_id, depth, old_arm).await;
        // Calls to names that are not deployed are not edges (a guest could invent any
        // number of them).
        if !matches!(result, Err(DispatchError::NotFound(_))) {
            let ok = matches!(&result, Ok(r) if r.status < 500);
            let micros = started.elapsed().as_micros() as u64;
            self.calls.record(from, service, ok, remote, micros);
            if let Some((id, new, _)) = arm.filter(|&(_, new, split)| self.counts_for_arm(service, new, split, remote))
            {
                self.trials.record(id, new, ok, micros);
            }
        }
        if let Some(open) = span {
            // Built only when the span is kept (sampled).
            let attrs = || [("callee", service.to_string().into()), ("remote", remote.into()), result_attr(&result)];
            self.record_span(&open, (kind, service), SpanKind::Client, from, attrs, error_code(&result));
        }
        result
    }

    /// The experiment, arm and split of a call to `service` from here, while an
    /// experiment tries an instance of it on this node and both arms can run: for a
    /// co-location, the instance here serves and another node serves it too (`true`: the
    /// new arm, run here); for a count, this node runs either count.
    fn trial_arm(&self, service: &str) -> Option<(u64, bool, Split)> {
        let peers = self.routes.get()?.peers.upgrade()?;
        let (id, split) = peers.trial(service)?;
        let limit = self.get(service).map_or(0, |s| s.gate().limit);
        match split {
            Split::Alternate => {
                (limit > 0 && !peers.holders(service).is_empty()).then(|| (id, self.trials.next_is_new(id), split))
            }
            Split::Slots { .. } => split.arm_of(limit).map(|new| (id, new, split)),
        }
    }

    /// Whether a finished trial call measured its arm: a co-location's new-arm call that
    /// ran elsewhere after all (the trial instance was busy, or a routing key sent it to
    /// its data) measured the old arrangement; a count's call must have run here with the
    /// same count from start to end.
    fn counts_for_arm(&self, service: &str, new: bool, split: Split, remote: bool) -> bool {
        match split {
            Split::Alternate => new != remote,
            Split::Slots { .. } => {
                let limit = self.get(service).map_or(0, |s| s.gate().limit);
                !remote && split.arm_of(limit) == Some(new)
            }
        }
    }

    /// A client span under the request's `traceparent`, which now names it; `None` when
    /// tracing is off or the request carries no context.
    fn client_span(&self, headers: &mut Vec<(String, String)>) -> Option<Open> {
        self.tracer()?;
        let parent = trace::parent_in(headers.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
        let open = Open::child_of(&parent);
        trace::set_parent(headers, &open.ctx);
        Some(open)
    }

    /// Keep a finished span (when its trace is sampled).
    fn record_span<I: IntoIterator<Item = (&'static str, trace::Attr)>>(
        &self,
        open: &Open,
        name: (&'static str, &str),
        kind: SpanKind,
        service: &str,
        attrs: impl FnOnce() -> I,
        error: &'static str,
    ) {
        let Some(tracer) = self.tracer().filter(|_| open.ctx.sampled) else { return };
        let mut span = tracer.span(open, name, kind, Some(service));
        for (k, v) in attrs() {
            span.attrs.insert(k, v);
        }
        span.error = error.to_string();
        tracer.record(span);
    }

    /// The run span of a request about to run here (under the `traceparent` it carries,
    /// or the first of a new trace), which the guest's request now carries as its parent.
    fn start_run(&self, headers: &mut Vec<(String, String)>) -> CallTrace {
        let parent = trace::parent_in(headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let mut run = self.open_run(parent);
        run.state = trace::state_in(headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        if let Some(ctx) = &run.ctx {
            trace::set_parent(headers, ctx);
        }
        run
    }

    /// Whether the service `part` asks for instance reuse (a chain is reused only when
    /// every service in it does).
    fn reuses(&self, part: &str) -> bool {
        self.get(part).is_some_and(|s| s.peek().spec.reuse.is_some())
    }

    /// [`Registry::start_run`] for a wasi:http request's headers.
    fn start_http_run(&self, headers: &mut http::HeaderMap) -> CallTrace {
        let mut run = self.open_run(trace::parent_in_map(headers));
        run.state = trace::state_in_map(headers);
        if let Some(c) = run.ctx {
            headers.insert(trace::context::TRACEPARENT_NAME.clone(), c.header_value());
        }
        run
    }

    fn open_run(&self, parent: Option<trace::SpanContext>) -> CallTrace {
        let Some(tracer) = self.tracer() else { return CallTrace::default() };
        let open = tracer.open(parent);
        let run = open.ctx.sampled.then(|| Arc::new(trace::RunTrace { span: open.clone(), stats: Default::default() }));
        CallTrace { ctx: Some(open.ctx), run, state: None }
    }

    /// Record a finished run: where its time went, what it called, how it ended.
    #[allow(clippy::too_many_arguments)]
    fn finish_run(
        &self,
        name: &str,
        trace: &CallTrace,
        queue_wait: Duration,
        ran: Duration,
        (depth, fused): (u32, Option<&Arc<str>>),
        (result, error): ((&'static str, trace::Attr), &'static str),
    ) {
        let (Some(run), Some(tracer)) = (&trace.run, self.tracer()) else { return };
        let stats = run.stats.lock().unwrap_or_else(|e| e.into_inner());
        let ran_us = ran.as_micros() as u64;
        let mut span = tracer.span(&run.span, ("run", name), SpanKind::Internal, Some(name));
        let a = &mut span.attrs;
        // Exactly what follows: a hello's five stay inline.
        a.reserve(5 + 2 * stats.kv.len() + if stats.outbound.0 > 0 { 2 } else { 0 });
        a.insert("queue_wait_us", queue_wait.as_micros() as u64);
        a.insert("instantiate_us", stats.instantiate_us);
        a.insert("guest_us", ran_us.saturating_sub(stats.instantiate_us));
        a.insert("depth", u64::from(depth));
        a.insert(result.0, result.1);
        for (what, (n, us)) in &stats.kv {
            let (count, time) = trace::kv_attr_names(what);
            a.insert(count, *n);
            a.insert(time, *us);
        }
        if let Some(state) = &trace.state {
            a.insert("tracestate", trace::Attr::text(state));
        }
        if let Some(parts) = fused {
            a.insert("chain.fused", trace::Attr::Str(parts.to_string().into()));
        }
        if stats.baseline {
            a.insert("code.tier", trace::Attr::text("baseline"));
        }
        if stats.timed {
            a.insert("chain.timed", true);
        }
        if stats.outbound.0 > 0 {
            a.insert("outbound.count", stats.outbound.0);
            a.insert("outbound.us", stats.outbound.1);
        }
        let parts: Vec<_> = stats
            .parts
            .iter()
            .map(|(n, svc, start, us)| {
                let mut p = trace::Open::child_of(&run.span.ctx).close(
                    &tracer.node,
                    trace::names::name(n),
                    SpanKind::Internal,
                    Some(trace::names::name(svc)),
                );
                (p.start_unix_us, p.duration_us) = (*start, *us);
                p
            })
            .collect();
        drop(stats);
        span.error = error.to_string();
        tracer.record(span);
        for p in parts {
            tracer.record(p);
        }
    }

    /// [`Registry::dispatch`], also telling whether the request ran on another node.
    /// `elsewhere`: run it on another node even if this one has instances (an
    /// experiment's old arm).
    async fn dispatch_routed(
        self: &Arc<Self>,
        name: &str,
        mut req: Request,
        request_id: Arc<str>,
        depth: u32,
        elsewhere: bool,
    ) -> (Result<Response, DispatchError>, bool) {
        let mut svc = self.get(name);
        if let Some(routes) = self.routes.get() {
            let Some(peers) = routes.peers.upgrade() else {
                return (Err(DispatchError::Internal("the node is shutting down".into())), false);
            };
            let no_instance = |reason: String| DispatchError::NoInstance { service: name.to_string(), reason };
            let policy = route::Policy { spill: true, elsewhere };
            match route::decide(self, &*peers, name, route::key_of(&req.headers), policy).await {
                route::Route::Dormant => {
                    let reason = "this node is dormant (cut off from its cluster's majority)";
                    return (Err(no_instance(reason.into())), false);
                }
                route::Route::Nowhere(reason) => return (Err(no_instance(reason)), false),
                route::Route::Here(here) => svc = here,
                route::Route::Forward(holders) => {
                    let hop = self.client_span(&mut req.headers);
                    let again = svc.as_ref().is_some_and(|s| s.idempotent());
                    let (result, node) =
                        match routes.forward.call(holders, name, req, (&request_id, depth), again).await {
                            Ok((resp, node)) => (Ok(resp), node),
                            Err(e) => (Err(e), None),
                        };
                    if let Some(open) = hop {
                        // The node that ran it, when one answered.
                        let to = node.map(|n| ("forward.node", trace::Attr::text(&n)));
                        let attrs = || [("forwarded", true.into()), result_attr(&result)].into_iter().chain(to);
                        self.record_span(&open, ("forward", name), SpanKind::Client, name, attrs, error_code(&result));
                    }
                    return (result, true);
                }
            }
        }
        let Some(svc) = svc else {
            return (Err(DispatchError::NotFound(name.to_string())), false);
        };
        (self.dispatch_to(svc, req, request_id, depth, false).await, false)
    }

    /// [`Registry::dispatch`] for a service already looked up (ingress has it in hand).
    /// `http1`: a client's request over HTTP/1, whose fresh instance may be torn down
    /// after the answer (as in `dispatch_http`).
    pub async fn dispatch_to(
        self: &Arc<Self>,
        svc: Arc<Service>,
        mut req: Request,
        request_id: Arc<str>,
        depth: u32,
        http1: bool,
    ) -> Result<Response, DispatchError> {
        let name = &*svc.name;
        self.wake_single(&svc).await?;
        let queued = Instant::now();
        let permit = match self.admit(&svc).await {
            // This node's instances went elsewhere (a scale-down or a move) while the
            // request waited: it was not run, so it runs where they went.
            Err(DispatchError::Stopped(_)) if !svc.peek().spec.stopped() && self.clustered() => {
                // Routed again: to a node that has instances, or woken if none has.
                return Box::pin(self.dispatch_routed(name, req, request_id, depth, false)).await.0;
            }
            other => other?,
        };
        // One clock read ends the wait and starts the run.
        let started = Instant::now();
        let queue_wait = started.saturating_duration_since(queued);
        let (running, teardown) = LoneRun::teardown(self, permit.alone(), http1);
        let trace = self.start_run(&mut req.headers);
        // Read the version after admission so a request admitted after a redeploy runs it.
        let deployed = svc.current();
        let (call, limits) = self.call_context(&svc, &deployed, request_id, depth, trace.clone());
        let prepared = deployed.prepared()?;
        let result = match deployed.warm_pool(&self.runtime, |part| self.reuses(part)) {
            Some(pool) => self.runtime.handle_reused(pool, prepared, call, req, limits).await,
            None => self.runtime.handle(prepared, call, req, limits, teardown).await,
        };
        drop((permit, running));
        let ran = started.elapsed();
        let micros = ran.as_micros() as u64;
        let max_response = deployed.spec.limits.max_response_bytes;
        let out = match result {
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
        };
        let fused = deployed.serving.graph().and_then(|g| g.fused.as_ref());
        self.finish_run(name, &trace, queue_wait, ran, (depth, fused), (result_attr(&out), error_code(&out)));
        out
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
        let queued = Instant::now();
        let permit = self.admit(&svc).await?;
        let started = Instant::now();
        let queue_wait = started.saturating_duration_since(queued);
        let mut req = req;
        let version = req.version();
        let trace = self.start_http_run(req.headers_mut());
        let deployed = svc.current();
        let prepared = deployed.prepared()?.clone();
        let (call, limits) = self.call_context(&svc, &deployed, request_id, 0, trace.clone());
        let max_request = deployed.spec.limits.max_request_bytes;
        // A body larger than the limit fails inside the guest as a stream error.
        let req = req.map(move |b| {
            http_body_util::BodyExt::map_err(http_body_util::Limited::new(b, max_request), |e| {
                wasmtime_wasi_http::Error::InternalError(Some(format!("request body: {e}")))
            })
        });
        let stats_svc = svc.clone();
        let this = self.clone();
        let fused_parts = deployed.serving.graph().and_then(|g| g.fused.clone());
        let (running, teardown) = LoneRun::teardown(self, permit.alone(), version < http::Version::HTTP_2);
        let done: Completion = Box::new(move |result| {
            drop(permit);
            drop(running);
            let ran = started.elapsed();
            stats_svc.stats.record(result.as_ref().map_or_else(outcome_of, |()| Outcome::Ok), ran.as_micros() as u64);
            let end = match &result {
                Ok(()) => (("result", "ok".into()), ""),
                Err(e) => {
                    let code = dispatch_error(&stats_svc.name, e.clone()).code();
                    (("error", code.into()), code)
                }
            };
            let fused = fused_parts.as_ref();
            this.finish_run(&stats_svc.name, &trace, queue_wait, ran, (0, fused), end);
        });
        let max_response = deployed.spec.limits.max_response_bytes;
        // A wasi:http component with typed imports is a chain: reused only when every
        // service in it asks for reuse, as for invoke (the same pool either way).
        let pool = deployed.warm_pool(&self.runtime, |part| self.reuses(part));
        let resp = self.runtime.handle_http(prepared, call, req, limits, done, pool, teardown).await;
        let resp = resp.map_err(|e| dispatch_error(name, e))?;
        // A streamed body past the limit ends in an error, so the client sees a broken
        // response rather than a complete-looking short one. A body of known length
        // within it (a guest that finished before its head went out) needs no watch.
        Ok(resp.map(move |b| {
            if hyper::body::Body::size_hint(&b).exact().is_some_and(|n| n <= max_response as u64) {
                return b;
            }
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

/// A result as a span attribute: the guest's status, or the error code.
fn result_attr<E: std::borrow::Borrow<DispatchError>>(r: &Result<Response, E>) -> (&'static str, trace::Attr) {
    match r {
        Ok(resp) => ("status", u64::from(resp.status).into()),
        Err(e) => ("error", e.borrow().code().into()),
    }
}

/// The span's error: the dispatch error's code, or a 5xx the guest answered.
fn error_code(r: &Result<Response, DispatchError>) -> &'static str {
    match r {
        Ok(resp) if resp.status >= 500 => "status-5xx",
        Ok(_) => "",
        Err(e) => e.code(),
    }
}
