//! WASI 0.3 `wasi:http/service` components (`wasi:http/handler@0.3`, async), served next to
//! 0.2 ones on the same terms: a fresh instance per request unless the service asks for
//! reuse (then one request at a time per instance, as for 0.2), the service's limits and
//! grants, outbound requests through the same [`super::outbound::OutboundPolicy`].
//!
//! A 0.3 guest returns its response head from `handle` and usually keeps writing the body
//! from a task it spawned. Such tasks only run while the store's `run_concurrent` event
//! loop is driven, so the request's tokio task keeps driving it until the response body
//! has been read to its end (or the client went away), then reports the outcome.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::sync::oneshot;
use wasmtime::component::Accessor;
use wasmtime::{Engine, Store};
use wasmtime_wasi_http::Error as HttpError;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::p3::bindings::{Service, ServicePre};

use super::http::{Completion, bounded, drop_later, head_in_place, report};
use super::http_body::{GuardedBody, InPlace, Rest};
use super::reuse::{IdleBudget, Instance, Warm, WarmPool, keeps_http_resources};
use super::state::StoreState;
use super::{CallContext, CallError, ExecLimits, OutputTail, Runtime};

/// A response body that says when it is over: read to its end, failed, or dropped.
struct EndSignal {
    inner: HyperOutgoingBody,
    end: Option<oneshot::Sender<()>>,
}

impl hyper::body::Body for EndSignal {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, HttpError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.signal();
        }
        polled
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl EndSignal {
    fn signal(&mut self) {
        if let Some(end) = self.end.take() {
            let _ = end.send(());
        }
    }
}

impl Drop for EndSignal {
    fn drop(&mut self) {
        self.signal();
    }
}

type Head = Result<http::Response<HyperOutgoingBody>, CallError>;

/// How many turns of its event loop a reused instance's tasks get, once its response body
/// has ended, to finish before the instance counts as idle: the task that wrote the body
/// ends only after the host has taken its trailers, a turn or two later. A task still
/// running then (work of the guest's own past its request, such as a timer) would run on
/// under the next request's context, so its instance is dropped, which ends the task as a
/// fresh instance's end does. Counted in turns, not time: a timer armed per request cost
/// each one a wake-up of the runtime's driver (an eventfd write).
const SETTLE_TURNS: u32 = 8;

/// Whether no task of the guest's is left in the store, within [`SETTLE_TURNS`] turns of
/// its event loop (each turn runs what the guest has ready, then looks again).
async fn settled(acc: &Accessor<StoreState>) -> bool {
    let mut turns = 0;
    std::future::poll_fn(|cx| {
        if acc.poll_no_interesting_tasks(cx).is_ready() {
            return Poll::Ready(true);
        }
        if turns == SETTLE_TURNS {
            return Poll::Ready(false);
        }
        turns += 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

/// One 0.3 request's store and instance: a kept one, or a store to instantiate in.
struct Http3Run {
    store: Store<StoreState>,
    service: Option<Service>,
    tail: OutputTail,
    /// Requests the instance served before this one.
    served: u32,
}

impl Http3Run {
    /// The instance to call: the kept one, or a new one (timed in the run's trace).
    async fn instantiate(&mut self, pre: &ServicePre<StoreState>, idle: &IdleBudget) -> wasmtime::Result<Service> {
        if let Some(service) = self.service.take() {
            return Ok(service);
        }
        idle.instantiate(pre, &mut self.store).await
    }

    /// After a request that ended well with no task left: keep the instance in `pool`,
    /// unless its table still holds a request or a response (one the guest kept).
    fn keep(mut self, service: Service, pool: &WarmPool) {
        if keeps_http_resources(&mut self.store.data_mut().table) {
            tracing::debug!("a wasi:http 0.3 instance kept a request or response past its request: not reused");
            return;
        }
        let mut w = Warm::new(self.store, Instance::Http3(service), self.tail);
        w.served = self.served;
        pool.put(w);
    }
}

impl Runtime {
    /// Serve one HTTP request with a WASI 0.3 component; see [`Runtime::handle_http`]. With
    /// `pool`, an idle instance serves it if there is one, and the instance goes back to
    /// `pool` if the request ended well and, within [`SETTLE_TURNS`] of its response
    /// body's end, no task of the guest's is left running. The body runs the rest of the
    /// request from its own polls while it can ([`InPlace`]).
    #[allow(clippy::too_many_arguments)] // each is a different part of one request
    pub(super) async fn handle_http3<B>(
        self: &Arc<Self>,
        pre: ServicePre<StoreState>,
        code: &super::Code,
        call: CallContext,
        req: http::Request<B>,
        limits: ExecLimits,
        done: Completion,
        pool: Option<&Arc<WarmPool>>,
    ) -> Result<http::Response<HyperOutgoingBody>, CallError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<HttpError>,
    {
        let mut run = match self.http3_run(code, call, limits, pool) {
            Ok(run) => run,
            Err(e) => {
                done(Err(e.clone()));
                return Err(e);
            }
        };
        let (head_tx, head_rx) = oneshot::channel::<Head>();
        let (outcome_tx, outcome_rx) = oneshot::channel::<bool>();
        let idle = self.idle.clone();
        let pool = pool.cloned();
        let reusable = pool.is_some();
        let task = Box::pin(async move {
            let tail = run.tail.clone();
            let served = async {
                let service = run.instantiate(&pre, &idle).await?;
                let (request, request_io) =
                    wasmtime_wasi_http::p3::Request::from_http(&mut run.store.data_mut().outbound, req);
                let handler = &service;
                let settled = run
                    .store
                    .run_concurrent(async move |acc| -> wasmtime::Result<bool> {
                        let resp = match handler.handle(acc, request).await? {
                            Ok(resp) => resp,
                            Err(code) => {
                                // Told to the client as the answer, and as the run's outcome (a
                                // failed request in the service's stats, not a served one).
                                let e = super::http::answered_error(&code);
                                let _ = head_tx.send(Err(e.clone()));
                                return Err(wasmtime::Error::new(e));
                            }
                        };
                        let resp = acc.with(|s| resp.into_http(s, request_io))?;
                        let (end_tx, end_rx) = oneshot::channel();
                        let resp = resp.map(|inner| EndSignal { inner, end: Some(end_tx) }.boxed_unsync());
                        if head_tx.send(Ok(resp)).is_err() {
                            return Ok(false);
                        }
                        // The guest's tasks write the body: drive them until it is out, then
                        // (if the instance may be kept) give them a moment to finish.
                        let _ = end_rx.await;
                        if !reusable {
                            return Ok(false);
                        }
                        Ok(settled(acc).await)
                    })
                    .await??;
                Ok((service, settled))
            };
            match (bounded(served, limits, &tail).await, pool) {
                (Ok((service, true)), Some(pool)) => {
                    // Kept before the outcome is told: the client's next request finds it idle.
                    run.keep(service, &pool);
                    report(Ok(()), outcome_tx, done)
                }
                (result, _) => {
                    let result = report(result.map(drop), outcome_tx, done);
                    // Torn down once the answer is out: this runs from the response body's
                    // own poll (`InPlace`), before hyper writes what it took.
                    drop_later(run);
                    result
                }
            }
        });
        let (resp, rest) = head_in_place(head_rx, task, None).await?;
        let resp = resp?;
        let rest = rest.map(|r| r as Rest);
        Ok(resp.map(|body| InPlace::new(GuardedBody::new(body, outcome_rx), rest).boxed_unsync()))
    }

    /// A kept instance of `code` (from `pool`), or a new store to instantiate one in.
    fn http3_run(
        &self,
        code: &super::Code,
        call: CallContext,
        limits: ExecLimits,
        pool: Option<&Arc<WarmPool>>,
    ) -> Result<Http3Run, CallError> {
        let usable =
            |w: &Warm| Engine::same(w.store.engine(), &code.engine) && matches!(w.instance, Instance::Http3(_));
        if let Some(mut w) = pool.and_then(|p| p.take(usable)) {
            w.rebind(call, limits, self.fuel)?;
            let Warm { store, instance: Instance::Http3(service), tail, served, .. } = w else {
                return Err(CallError::Internal("another kind of instance in a wasi:http 0.3 pool".into()));
            };
            return Ok(Http3Run { store, service: Some(service), tail, served });
        }
        let tail = OutputTail::new(2048);
        let store = self.new_store(code, call, limits, &tail)?;
        Ok(Http3Run { store, service: None, tail, served: 0 })
    }
}
