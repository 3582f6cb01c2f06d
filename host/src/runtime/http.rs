//! Standard `wasi:http/proxy` components, served through wasmtime-wasi-http.
//!
//! A request's body streams into the guest and the guest's response body streams out: the
//! guest runs in a task that outlives the response head, holding its admission permit
//! until it finishes. Outbound `wasi:http/outgoing-handler` requests go only to the
//! `host:port`s the service was granted, over HTTP or HTTPS, to addresses that pass
//! [`super::outbound`]'s check.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::sync::oneshot;
use wasmtime::component::Resource;
use wasmtime::{Engine, Store};
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::bindings::{Proxy, ProxyPre};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::p2::types::{HostIncomingRequest, HostResponseOutparam};
use wasmtime_wasi_http::{Error as HttpError, WasiHttpView};

use super::http_body::{self as body, GuardedBody, go_on};
use super::reuse::{IdleBudget, Instance, Warm, WarmPool, keeps_http_resources};
use super::state::StoreState;
use super::{CallContext, Code, Prepared, PreparedKind};
use super::{CallError, ExecLimits, OutputTail, Runtime, classify};

/// Marks a request that reached the node over TLS: the guest sees the `https` scheme.
#[derive(Debug, Clone, Copy)]
pub struct OverTls;

/// What happened to a wasi:http request, reported when the guest's task ends.
pub type Completion = Box<dyn FnOnce(Result<(), CallError>) + Send>;

/// When a fresh instance is torn down: a nanoservice's, or a wasi:http 0.2 request's if it
/// ends in an error or without a pool to go back to (an instance a pool turns away is
/// dropped in place).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Teardown {
    /// Where the guest's task ends: before the answer goes out if the guest finished
    /// first. The cheapest under load.
    InPlace,
    /// Once the answer is out (see `drop_later`): a nanoservice's always; a wasi:http
    /// guest's if its task ended in place, before its head went out, else where the task
    /// ends (one that ran on in a task of its own). For an HTTP/1 request alone on its
    /// service and on the node (the caller decides). Measured with one client on this
    /// 2-core VM, the p50 of a fresh `http-hello` fell from 105-117 µs to 34-35 µs (the
    /// VM's halt polling off, which this also hid), a fresh `hello`'s from 30-31 µs to
    /// 28-29 µs and a fused chain of five's from 61-63 µs to 58-59 µs (polling on), while
    /// deferring every teardown at 32 connections gained nothing and may cost a few
    /// percent (docs/BENCHMARKS.md, "Tried for hello throughput").
    /// The request's admission permit is released before the deferred teardown: the
    /// instance's pool slots stay taken until the task that drops it runs.
    AfterAnswer,
}

impl Runtime {
    /// Serve one HTTP request with a `wasi:http` component (WASI 0.2 or 0.3). The response
    /// head is returned as soon as the guest sets it; the body streams while the guest keeps
    /// running. `done` is called when the guest finishes. With `pool` (the service reuses
    /// instances), an idle instance serves the request if there is one, and the instance
    /// goes back to `pool` when it ends well; `teardown` says when a 0.2 one that ends in
    /// an error, or without a pool, is dropped.
    #[allow(clippy::too_many_arguments)] // each is a different part of one request
    pub async fn handle_http<B>(
        self: &Arc<Self>,
        prepared: Arc<Prepared>,
        call: CallContext,
        req: http::Request<B>,
        limits: ExecLimits,
        done: Completion,
        pool: Option<&Arc<WarmPool>>,
        teardown: Teardown,
    ) -> Result<http::Response<HyperOutgoingBody>, CallError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<HttpError>,
    {
        let picked = self.pick(&prepared, &call).clone();
        // A timed composition (a sampled request of a fused chain) gets a fresh instance:
        // the pool keeps instances of the untimed one.
        let pool = pool.filter(|_| Arc::ptr_eq(&picked, &prepared));
        let code = picked.code();
        code.note(&call);
        let pre = match &code.kind {
            PreparedKind::Http(pre) => pre.clone(),
            PreparedKind::Http3(pre) => {
                return self.handle_http3(pre.clone(), &code, call, req, limits, done, pool).await;
            }
            PreparedKind::Nanoservice(_) => {
                let e = CallError::Internal("not a wasi:http component".into());
                done(Err(e.clone()));
                return Err(e);
            }
        };
        let (mut run, incoming, out, set) = match self.http_run(&code, call, req, limits, pool) {
            Ok(started) => started,
            Err(e) => {
                done(Err(e.clone()));
                return Err(e);
            }
        };
        let (outcome_tx, outcome_rx) = oneshot::channel::<bool>();
        let (head_tx, rx) = oneshot::channel::<Head>();
        let idle = self.idle.clone();
        let pool = pool.cloned();
        let detached = Arc::new(AtomicBool::new(false));
        let ran_on = detached.clone();
        // Boxed where it is made: the futures that await this one stay small.
        let task = Box::pin(async move {
            let tail = run.tail.clone();
            let handled = async {
                let proxy = run.instantiate(&pre, &idle).await?;
                let call = proxy.wasi_http_incoming_handler().call_handle(&mut run.store, incoming, out);
                relay_head(call, set, head_tx).await?;
                Ok::<_, wasmtime::Error>(proxy)
            };
            match (bounded(handled, limits, &tail).await, pool) {
                (Ok(proxy), Some(pool)) => {
                    // Kept before the outcome is told: the client's next request finds it idle.
                    run.keep(proxy, &pool);
                    report(Ok(()), outcome_tx, done)
                }
                (result, _) => {
                    let result = report(result.map(drop), outcome_tx, done);
                    // A task that ran on by itself is past the answer, and a task spawned
                    // from it would go to another thread.
                    if teardown == Teardown::AfterAnswer && !ran_on.load(Ordering::SeqCst) {
                        drop_later(run);
                    }
                    result
                }
            }
        });
        let mut outcome_rx = outcome_rx;
        match until_head(rx, task, Some(detached)).await? {
            (Ok(resp), true) => {
                let ok = outcome_rx.try_recv() == Ok(true);
                Ok(resp.map(|body| body::finished(body, ok)))
            }
            (Ok(resp), false) => Ok(resp.map(|body| GuardedBody::new(body, outcome_rx).boxed_unsync())),
            (Err(code), _) => Err(answered_error(&code)),
        }
    }
}

type Head = Result<http::Response<HyperOutgoingBody>, ErrorCode>;

impl Runtime {
    /// Everything before a wasi:http 0.2 guest runs: a kept instance of `code` (from `pool`)
    /// or a new store, and the request and its response slot in the store's table. A kept
    /// instance goes back to `pool` if the request cannot be given to it.
    #[allow(clippy::type_complexity)]
    fn http_run<B>(
        &self,
        code: &Code,
        call: CallContext,
        req: http::Request<B>,
        limits: ExecLimits,
        pool: Option<&Arc<WarmPool>>,
    ) -> Result<
        (HttpRun, Resource<HostIncomingRequest>, Resource<HostResponseOutparam>, oneshot::Receiver<Head>),
        CallError,
    >
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<HttpError>,
    {
        let usable = |w: &Warm| Engine::same(w.store.engine(), &code.engine) && matches!(w.instance, Instance::Http(_));
        let mut run = match pool.and_then(|p| p.take(usable)) {
            Some(mut w) => {
                w.rebind(call, limits, self.fuel)?;
                let Warm { store, instance: Instance::Http(proxy), tail, served, .. } = w else {
                    return Err(CallError::Internal("a nanoservice instance in a wasi:http pool".into()));
                };
                HttpRun { store, proxy: Some(proxy), tail, served }
            }
            None => {
                let tail = OutputTail::new(2048);
                let store = self.new_store(code, call, limits, &tail)?;
                HttpRun { store, proxy: None, tail, served: 0 }
            }
        };
        let (tx, rx) = oneshot::channel();
        let data = run.store.data_mut();
        let scheme = if req.extensions().get::<OverTls>().is_some() { Scheme::Https } else { Scheme::Http };
        let given = data.http().new_incoming_request(scheme, req).and_then(|incoming| {
            let out = data.http().new_response_outparam(tx)?;
            Ok((incoming, out))
        });
        match given {
            Ok((incoming, out)) => Ok((run, incoming, out, rx)),
            Err(e) => {
                if let (Some(pool), Some(proxy)) = (pool, run.proxy.take()) {
                    run.keep(proxy, pool);
                }
                Err(CallError::Internal(format!("the request cannot be given to the component: {e}")))
            }
        }
    }
}

/// One wasi:http 0.2 request's store and instance: a kept one, or a store to instantiate in.
struct HttpRun {
    store: Store<StoreState>,
    proxy: Option<Proxy>,
    tail: OutputTail,
    /// Requests the instance served before this one.
    served: u32,
}

impl HttpRun {
    /// The instance to call: the kept one, or a new one (timed in the run's trace).
    async fn instantiate(&mut self, pre: &ProxyPre<StoreState>, idle: &IdleBudget) -> wasmtime::Result<Proxy> {
        if let Some(proxy) = self.proxy.take() {
            return Ok(proxy);
        }
        idle.instantiate(pre, &mut self.store).await
    }

    /// After a request that ended well: keep the instance in `pool`, unless it still holds
    /// an HTTP resource of the request.
    fn keep(mut self, proxy: Proxy, pool: &WarmPool) {
        if keeps_http_resources(&mut self.store.data_mut().table) {
            tracing::debug!("a wasi:http instance kept a resource of its request past handle: not reused");
            return;
        }
        let mut w = Warm::new(self.store, Instance::Http(proxy), self.tail);
        w.served = self.served;
        pool.put(w);
    }
}

/// Run a wasi:http 0.2 guest's `handle` (`call`), passing the response head it sets (on
/// `set`) on to `head` as soon as it is set. A guest that returns without setting one (it
/// dropped or kept its `response-outparam`) ends with an error, so its request is counted
/// as failed, not as served, and its instance is not kept.
async fn relay_head(
    call: impl Future<Output = wasmtime::Result<()>>,
    mut set: oneshot::Receiver<Head>,
    head: oneshot::Sender<Head>,
) -> wasmtime::Result<()> {
    let mut head = Some(head);
    let mut failed = None;
    let mut pass_on = |h: Head, head: &mut Option<oneshot::Sender<Head>>| {
        if let Err(code) = &h {
            failed = Some(answered_error(code));
        }
        if let Some(tx) = head.take() {
            let _ = tx.send(h);
        }
    };
    let mut call = std::pin::pin!(call);
    let mut waiting = true;
    let ended = std::future::poll_fn(|cx| {
        // The call first: a head set in this poll is passed on in this poll.
        let ended = call.as_mut().poll(cx);
        if waiting && let Poll::Ready(h) = Pin::new(&mut set).poll(cx) {
            waiting = false;
            if let Ok(h) = h {
                pass_on(h, &mut head);
            }
        }
        ended
    })
    .await;
    ended?;
    if waiting && let Ok(h) = set.try_recv() {
        pass_on(h, &mut head);
    }
    match (head, failed) {
        (Some(_), _) => Err(wasmtime::Error::new(CallError::Guest(NO_RESPONSE.into()))),
        (None, Some(e)) => Err(wasmtime::Error::new(e)),
        (None, None) => Ok(()),
    }
}

/// A guest that set an error code as its response (a WASI 0.2 or 0.3 one).
pub(super) fn answered_error(code: &impl std::fmt::Debug) -> CallError {
    CallError::Guest(format!("the component answered with an error: {code:?}"))
}

const NO_RESPONSE: &str = "the component returned without setting a response";

/// `run` within the service's deadline, its error classified.
pub(super) async fn bounded<T>(
    run: impl Future<Output = wasmtime::Result<T>>,
    limits: ExecLimits,
    tail: &OutputTail,
) -> Result<T, CallError> {
    match tokio::time::timeout(limits.timeout + super::EPOCH_TICK * 4, run).await {
        Ok(r) => r.map_err(|e| classify(e, limits, tail)),
        Err(_) => Err(CallError::Timeout(limits.timeout)),
    }
}

/// Tell how a wasi:http request ended: to `outcome` (the response body's end) and `done`,
/// which holds the admission permit and stats, so they are released only when the guest is
/// done.
pub(super) fn report(
    result: Result<(), CallError>,
    outcome: oneshot::Sender<bool>,
    done: Completion,
) -> Result<(), CallError> {
    let _ = outcome.send(result.is_ok());
    done(result.clone());
    result
}

/// Drop `x` once the current task next waits, not now: a request's fresh instance is torn
/// down (its linear memory reset, its pool slots given back) after its answer has gone
/// out, on the same thread. tokio runs a task spawned from one of its workers next on that
/// worker (its next-to-run slot, which other workers do not steal from) without waking
/// another thread. Outside a runtime (or in one shutting down) `x` is dropped at once (or
/// with the runtime).
pub(super) fn drop_later<T: Send + 'static>(x: T) {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => drop(rt.spawn(async move { drop(x) })),
        Err(_) => drop(x),
    }
}

/// A guest's whole request, run in place until its response head is out. A guest that
/// finishes first (a small body, written at once) never needs a task of its own; one still
/// writing its body when the head comes out, or whose caller went away, finishes in one
/// (and `detached`, if given, is set first).
struct GuestRun<F: Future<Output = Result<(), CallError>> + Send + 'static> {
    task: Option<Pin<Box<F>>>,
    detached: Option<Arc<AtomicBool>>,
}

impl<F: Future<Output = Result<(), CallError>> + Send + 'static> Drop for GuestRun<F> {
    fn drop(&mut self) {
        // Not a future that panicked: it cannot be polled again.
        if std::thread::panicking() {
            return;
        }
        if let Some(rest) = self.task.take() {
            go_on(rest, self.detached.take());
        }
    }
}

/// Drive `task` until `head` (the response head it sets) arrives, and say whether the task
/// has ended by then; what went wrong if it ends without one. `detached` is set if the
/// task goes on in a task of its own.
pub(super) async fn until_head<H, F>(
    head: oneshot::Receiver<H>,
    task: Pin<Box<F>>,
    detached: Option<Arc<AtomicBool>>,
) -> Result<(H, bool), CallError>
where
    F: Future<Output = Result<(), CallError>> + Send + 'static,
{
    let (h, rest) = head_in_place(head, task, detached.clone()).await?;
    let ended = rest.is_none();
    if let Some(rest) = rest {
        go_on(rest, detached);
    }
    Ok((h, ended))
}

/// [`until_head`], but the task, if it has not ended, is given back to run on (if this
/// future is dropped before the head, the task goes on in a task of its own).
pub(super) async fn head_in_place<H, F>(
    mut head: oneshot::Receiver<H>,
    task: Pin<Box<F>>,
    detached: Option<Arc<AtomicBool>>,
) -> Result<(H, Option<Pin<Box<F>>>), CallError>
where
    F: Future<Output = Result<(), CallError>> + Send + 'static,
{
    let mut run = GuestRun { task: Some(task), detached };
    let first = std::future::poll_fn(|cx| {
        if let Some(task) = run.task.as_mut()
            && let Poll::Ready(ended) = task.as_mut().poll(cx)
        {
            run.task = None;
            return Poll::Ready(Err(ended));
        }
        Pin::new(&mut head).poll(cx).map(Ok)
    })
    .await;
    match first {
        // The head is out and the guest may still be writing the body.
        Ok(Ok(h)) => Ok((h, run.task.take())),
        // The guest dropped its response without setting it: its end says why.
        Ok(Err(_)) => {
            let ended =
                std::future::poll_fn(|cx| run.task.as_mut().map_or(Poll::Ready(Ok(())), |t| t.as_mut().poll(cx)));
            let ended = ended.await;
            run.task = None;
            Err(no_head(ended))
        }
        Err(ended) => head.try_recv().map(|h| (h, None)).map_err(|_| no_head(ended)),
    }
}

/// Why a guest produced no response head, from how its request ended.
fn no_head(ended: Result<(), CallError>) -> CallError {
    match ended {
        Ok(()) => CallError::Guest(NO_RESPONSE.into()),
        Err(e) => e,
    }
}

impl Runtime {
    /// A WIT request into a wasi:http component, its streamed response collected (at most
    /// `max_body` bytes). This is how `invoke` reaches wasi:http services.
    pub(super) async fn handle_http_collected(
        self: &Arc<Self>,
        prepared: &Arc<Prepared>,
        call: CallContext,
        req: super::Request,
        limits: ExecLimits,
        pool: Option<&Arc<WarmPool>>,
    ) -> Result<super::Response, CallError> {
        let mut builder = http::Request::builder().method(req.method.as_str()).uri(req.path.as_str());
        for (k, v) in &req.headers {
            builder = builder.header(k, v);
        }
        // wasi:http needs an authority; an invoke names a service, not a host.
        if !req.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            builder = builder.header(http::header::HOST, &*call.service);
        }
        let body = http_body_util::Full::new(Bytes::from(req.body));
        let request = builder
            .body(body)
            .map_err(|e| CallError::Guest(format!("invalid request for a wasi:http service: {e}")))?;
        let done = Box::new(|_| ());
        let resp = self.handle_http(prepared.clone(), call, request, limits, done, pool, Teardown::InPlace).await?;
        let (parts, body) = resp.into_parts();
        let max = limits.max_memory;
        let bytes = http_body_util::Limited::new(body, max)
            .collect()
            .await
            .map_err(|e| CallError::Guest(format!("reading the component's response body: {e}")))?
            .to_bytes();
        let headers = parts
            .headers
            .iter()
            .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_string(), v.to_string())))
            .collect();
        Ok(super::Response { status: parts.status.as_u16(), headers, body: bytes.to_vec() })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use crate::tasks::tests::Flag;

    #[tokio::test]
    async fn drop_later_waits_until_the_task_yields() {
        let dropped = Arc::new(AtomicBool::new(false));
        super::drop_later(Flag(dropped.clone()));
        assert!(!dropped.load(Ordering::SeqCst), "not dropped while this task still runs");
        tokio::task::yield_now().await;
        assert!(dropped.load(Ordering::SeqCst), "dropped once this task let others run");
    }

    #[test]
    fn drop_later_outside_a_runtime_drops_at_once() {
        let dropped = Arc::new(AtomicBool::new(false));
        super::drop_later(Flag(dropped.clone()));
        assert!(dropped.load(Ordering::SeqCst));
    }
}
